//! The fleet's config in etcd: pushed through any node, run by all three;
//! a bad one refused with no node changed; a rollback; a node restarted
//! while etcd is away starts on the fleet's revision. Three veer nodes,
//! each with BIRD and an etcd member, behind a router, in front of three
//! backends. Needs root, bird2 and etcd-server.

use std::time::{Duration, Instant};

use veer::wire::{FleetConfigStatus, Status};
use veer_tests::{
    daemon::{scratch, veerctl, veerctl_json, wait_until, Veerd, EVENT_WAIT},
    fleet::{Fleet, FleetBed, NodeOpts},
    topology::VIP,
};

fn status(f: &Fleet, i: usize) -> Status {
    f.nodes[i].veerd.status().unwrap_or_else(|e| panic!("status of node {}: {e:#}", i + 1))
}

fn config_of(f: &Fleet, i: usize) -> FleetConfigStatus {
    status(f, i).fleet.expect("no fleet state: is [fleet.etcd] configured?").config
}

/// The web service over `backends` (name, address, weight).
fn web(backends: &[(&str, String, u32)]) -> String {
    let mut s = format!(
        "[[service]]\nname = \"web\"\nvip = \"{VIP}\"\nport = 80\n\n[service.health]\nkind = \"tcp\"\n\
         interval = \"100ms\"\ntimeout = \"80ms\"\nrise = 2\nfall = 3\n"
    );
    for (name, address, weight) in backends {
        s += &format!("\n[[service.backend]]\nname = \"{name}\"\naddress = \"{address}\"\nweight = {weight}\n");
    }
    s
}

/// (name, weight) of every backend of web on node `i`.
fn weights(f: &Fleet, i: usize) -> Vec<(String, u32)> {
    status(f, i).services[0].backends.iter().map(|b| (b.name.clone(), b.weight)).collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

#[test]
fn a_pushed_config_reaches_every_node_a_bad_one_none_and_a_rollback_restores_an_earlier_one() {
    veer_tests::require_root();
    let dir = scratch("fleet-config");
    let bed = FleetBed::create("veer-fc", 3, 3, &dir).expect("fleet testbed").with_etcd("veer-fc").expect("etcd");
    let opts = NodeOpts { etcd_prefix: Some("/veer-fc"), ..Default::default() };
    let mut fleet = bed.start_fleet_with("t-fc", &dir, &opts).expect("fleet");
    let all = [0, 1, 2];
    wait_until(Duration::from_secs(30), "every node in session", || {
        all.iter().all(|&i| status(&fleet, i).fleet.is_some_and(|f| f.etcd.starts_with("connected")))
    })
    .unwrap();
    let (b1, b2) = (bed.backends[0].ip.to_string(), bed.backends[1].ip.to_string());
    let file = dir.join("fleet.toml");
    let file_arg = file.to_str().unwrap();

    // 20 pushes, through each node in turn: web over b1 and b2 only, b2's
    // weight the push's number. Timed until all three run it.
    let mut ms = Vec::new();
    for k in 1..=20u64 {
        std::fs::write(&file, web(&[("b1", b1.clone(), 1), ("b2", b2.clone(), k as u32)])).unwrap();
        let node = &fleet.nodes[k as usize % 3];
        let t = Instant::now();
        let (ok, out, err) = veerctl(&node.config, &["config", "push", file_arg]);
        assert!(ok && out.contains(&format!("revision {k}")) && out.contains("committed"), "push {k}: {out} {err}");
        wait_until(EVENT_WAIT, &format!("every node to run revision {k}"), || {
            all.iter().all(|&i| config_of(&fleet, i).running == k)
        })
        .unwrap_or_else(|e| panic!("{e}: {:?}", all.map(|i| config_of(&fleet, i))));
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(f64::total_cmp);
    println!(
        "config push reaching every node (20 pushes): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms (target p99 <= 1 s)",
        percentile(&ms, 50.0),
        percentile(&ms, 99.0),
        ms[ms.len() - 1]
    );
    for i in all {
        assert_eq!(weights(&fleet, i), [("b1".to_string(), 1), ("b2".to_string(), 20)], "node {}", i + 1);
        let c = config_of(&fleet, i);
        assert!(c.local_file_differs && c.refused.is_none() && c.nodes.len() == 3, "node {}: {c:?}", i + 1);
    }
    let (code, doc) = veer_tests::daemon::veerctl_status(&fleet.nodes[0].config);
    assert!(code <= 1, "veerctl status exit {code}: {doc}");
    let (_, text, _) = veerctl(&fleet.nodes[0].config, &["status"]);
    assert!(text.contains("fleet config: revision 20; every node runs it"), "{text}");

    // Bad configs: refused by the node that takes them; nothing stored, no
    // node changed.
    let bad = [
        (web(&[("b1", b1.clone(), 1), ("b1", b2.clone(), 1)]), "two backends named b1"),
        (format!("[daemon]\nname = \"x\"\n\n{}", web(&[("b1", b1.clone(), 1)])), "a [daemon] table"),
        ("[[service]\nname = ".to_string(), "a syntax error"),
        (
            web(&[("b1", b1.clone(), 1)]).replace("kind = \"tcp\"", "kind = \"exec\"\ncommand = [\"/bin/true\"]"),
            "an exec check",
        ),
    ];
    for (text, what) in bad {
        std::fs::write(&file, text).unwrap();
        let (ok, _, err) = veerctl(&fleet.nodes[1].config, &["config", "push", file_arg]);
        assert!(!ok && err.contains("refused, nothing pushed"), "{what}: {err}");
        println!("a bad config ({what}) refused: {}", err.trim());
    }
    for i in all {
        let c = config_of(&fleet, i);
        assert!(c.current == 20 && c.running == 20, "node {}: {c:?}", i + 1);
        assert_eq!(weights(&fleet, i)[1], ("b2".to_string(), 20));
    }

    // A rollback to revision 1: revision 21 holds its text.
    let (ok, out, err) = veerctl(&fleet.nodes[2].config, &["config", "rollback", "1"]);
    assert!(ok && out.contains("revision 21"), "{out} {err}");
    wait_until(EVENT_WAIT, "every node to run revision 21", || all.iter().all(|&i| config_of(&fleet, i).running == 21))
        .unwrap();
    for i in all {
        assert_eq!(weights(&fleet, i), [("b1".to_string(), 1), ("b2".to_string(), 1)], "node {}", i + 1);
    }
    let history = veerctl_json(&fleet.nodes[0].config, &["config", "history"]);
    let last = history["revisions"].as_array().and_then(|r| r.last()).cloned().unwrap_or_default();
    assert!(last["revision"] == 21 && last["note"] == "rollback to 1" && last["current"] == true, "{history}");
    let shown = veerctl(&fleet.nodes[0].config, &["config", "show", "20"]).1;
    assert!(shown.contains("weight = 20"), "{shown}");

    // lb3 restarts while cut off etcd: it starts on the fleet's revision 21
    // (kept on disk), not on its own file's three backends.
    bed.isolate_ctl(2, true).unwrap();
    let n3 = &mut fleet.nodes[2];
    n3.veerd.kill();
    let (sock, log) = (dir.join("t-fc3.sock"), dir.join("t-fc3.log"));
    n3.veerd = Veerd::start(&n3.config, bed.lbs[2].ns.name(), &sock, &log).expect("lb3's veerd again");
    assert_eq!(weights(&fleet, 2), [("b1".to_string(), 1), ("b2".to_string(), 1)]);
    assert_eq!(config_of(&fleet, 2).running, 21);
    bed.isolate_ctl(2, false).unwrap();
    drop(fleet);
}
