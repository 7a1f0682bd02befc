//! A fleet sharing state through etcd: three veer nodes, each with BIRD and
//! an etcd member (on a control network of their own), behind a router with
//! ECMP, in front of three backends with real servers. Needs root, bird2 and
//! etcd-server.

use std::{
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

use veer::wire::{FleetStatus, Request, Status};
use veer_tests::{
    daemon::{scratch, wait_until, BackendProc, EVENT_WAIT},
    fleet::{Fleet, FleetBed, NodeOpts, VIP2},
    server::Session,
    topology::VIP,
};

fn status(f: &Fleet, i: usize) -> Status {
    f.nodes[i].veerd.status().unwrap_or_else(|e| panic!("status of node {}: {e:#}", i + 1))
}

fn fleet_of(s: &Status) -> FleetStatus {
    s.fleet.clone().expect("veerd reports no fleet state: is [fleet.etcd] configured?")
}

/// Waits until every node in `live` sees `live.len()` live nodes, every
/// backend up by the fleet's verdict and in its ring, and one leader.
fn wait_fleet_ready(f: &Fleet, live: &[usize]) {
    wait_until(Duration::from_secs(30), "every node in session, every backend up by the fleet's verdict", || {
        live.iter().all(|&i| {
            let s = status(f, i);
            let fl = fleet_of(&s);
            fl.etcd.starts_with("connected")
                && fl.nodes.len() == live.len()
                && s.services[0].backends.iter().all(|b| b.fleet.as_deref() == Some("up") && b.in_ring)
        }) && live.iter().filter(|&&i| fleet_of(&status(f, i)).leader).count() == 1
    })
    .unwrap_or_else(|e| {
        let views: Vec<_> = live.iter().map(|&i| fleet_of(&status(f, i))).collect();
        panic!("{e}: {views:#?}")
    });
}

fn backend<'a>(s: &'a Status, name: &str) -> &'a veer::wire::BackendStatus {
    s.backend("web", name).unwrap_or_else(|| panic!("no backend {name}"))
}

fn digests(f: &Fleet, live: &[usize]) -> Vec<String> {
    live.iter().map(|&i| status(f, i).services[0].table_digest.clone()).collect()
}

/// Milliseconds, sorted; the p-th percentile (nearest rank).
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

/// The restart command's log: (what, attempt, node, ms) per line.
fn restart_log(path: &Path) -> Vec<(String, u32, String, u64)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((f.first()?.to_string(), f.get(1)?.parse().ok()?, f.get(2)?.to_string(), f.get(3)?.parse().ok()?))
        })
        .collect()
}

#[test]
fn drains_reach_every_node_and_a_dead_backend_is_restarted_once_per_attempt_across_a_leader_change() {
    veer_tests::require_root();
    let dir = scratch("fleet-etcd");
    let bed = FleetBed::create("veer-fe", 3, 3, &dir).expect("fleet testbed").with_etcd("veer-fe").expect("etcd");
    // b1's restart command: logs each attempt, takes 3 s (the test has that
    // long to see attempt 1 start and kill the leader while it runs, on a
    // busy machine too), and revives the server from the second attempt on.
    let log = dir.join("restarts.log");
    let pidfile = dir.join("b1.pid");
    let server =
        BackendProc::hook_command(&bed.backends[0].ns, "b1", SocketAddr::new([0, 0, 0, 0].into(), 80), &pidfile);
    let script = dir.join("restart-b1.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nlog={log}\necho \"start $VEER_ATTEMPT $VEER_NODE $(date +%s%3N)\" >> $log\nsleep 3\n\
             echo \"end $VEER_ATTEMPT $VEER_NODE $(date +%s%3N)\" >> $log\n[ \"$VEER_ATTEMPT\" -ge 2 ] || exit 1\n\
             exec {} >/dev/null 2>&1\n",
            server.iter().map(|a| format!("'{a}'")).collect::<Vec<_>>().join(" "),
            log = log.display()
        ),
    )
    .unwrap();
    let restart = format!(
        "restart = {{ command = [\"/bin/sh\", \"{}\"], backoff = \"300ms\", max_attempts = 4, timeout = \"8s\" }}\n",
        script.display()
    );
    let extra = |k: usize| if k == 0 { restart.clone() } else { String::new() };
    let opts = NodeOpts { etcd_prefix: Some("/veer-fe"), backend_extra: Some(&extra), ..Default::default() };
    let mut fleet = bed.start_fleet_with("t-fe", &dir, &opts).expect("fleet");
    wait_fleet_ready(&fleet, &[0, 1, 2]);
    let d = digests(&fleet, &[0, 1, 2]);
    assert!(d.iter().all(|x| *x == d[0]), "the nodes' tables differ: {d:?}");

    // A drain (and its undo) made on any node reaches every other node.
    let mut lags = Vec::new();
    for round in 0..10 {
        let origin = round % 3;
        for (req, want) in [
            (Request::Drain { service: "web".into(), backend: "b2".into() }, "draining"),
            (Request::Enable { service: "web".into(), backend: "b2".into() }, "up"),
        ] {
            let t = Instant::now();
            let r = fleet.nodes[origin].veerd.api(req).unwrap();
            assert!(r.ok, "{r:?}");
            let mut seen: Vec<Option<f64>> = vec![None; 3];
            seen[origin] = Some(0.0);
            wait_until(EVENT_WAIT, &format!("b2 {want} on every node (round {round})"), || {
                for (k, s) in seen.iter_mut().enumerate() {
                    if s.is_none() && backend(&status(&fleet, k), "b2").state == want {
                        *s = Some(t.elapsed().as_secs_f64() * 1e3);
                    }
                }
                seen.iter().all(Option::is_some)
            })
            .unwrap();
            lags.extend(seen.iter().enumerate().filter(|(k, _)| *k != origin).filter_map(|(_, s)| *s));
        }
    }
    // A node that applied a drain from the fleet says so in its history.
    let r = fleet.nodes[1]
        .veerd
        .api(Request::Events { since: None, service: Some("web".into()), backend: Some("b2".into()) })
        .unwrap();
    let events: veer::wire::EventLog = serde_json::from_value(r.result.clone().expect("events")).expect("an event log");
    let drained = events.events.iter().find(|e| e.to == "draining").expect("b2's drain in lb2's history");
    assert_eq!(drained.reason, "operator (fleet): draining", "{:?}", events.events);
    lags.sort_by(f64::total_cmp);
    println!(
        "drain/enable reaching the other nodes ({} samples): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms (target p99 < 500 ms)",
        lags.len(),
        percentile(&lags, 50.0),
        percentile(&lags, 99.0),
        lags[lags.len() - 1]
    );

    // b1 dies: every node fails it over, the fleet verdict flips once, and
    // only the leader runs the restart command.
    let flips_before: Vec<u64> = (0..3).map(|i| fleet_of(&status(&fleet, i)).verdict_flips).collect();
    fleet.servers[0].kill().unwrap();
    wait_until(EVENT_WAIT, "b1 down on every node and by the fleet's verdict", || {
        (0..3).all(|i| {
            let s = status(&fleet, i);
            let b = backend(&s, "b1");
            b.state == "down" && b.fleet.as_deref() == Some("down") && !b.in_ring
        })
    })
    .unwrap();
    wait_until(EVENT_WAIT, "the first restart attempt", || restart_log(&log).iter().any(|l| l.0 == "start")).unwrap();
    let leader = (0..3).find(|&i| fleet_of(&status(&fleet, i)).leader).expect("a leader");
    let first = restart_log(&log);
    assert_eq!(first[0].2, fleet_of(&status(&fleet, leader)).node, "the restart ran on a node that is not the leader");

    // The leader dies while its attempt runs: another node takes over
    // within the lease's TTL and a second, and continues with attempt 2 only
    // once attempt 1 is over.
    let t = Instant::now();
    assert!(
        !restart_log(&log).iter().any(|l| l.0 == "end"),
        "attempt 1 was over before the leader could be killed: {:?}",
        restart_log(&log)
    );
    fleet.nodes[leader].veerd.kill();
    let rest: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    wait_until(EVENT_WAIT, "a new leader", || rest.iter().any(|&i| fleet_of(&status(&fleet, i)).leader)).unwrap();
    let handover = t.elapsed();
    println!(
        "leader {} killed: a new leader in {:.2} s (lease TTL 2 s; target TTL + 1 s, measured by \
         `cargo xtask bench -- --only fleet`)",
        leader + 1,
        handover.as_secs_f64()
    );
    // Taken over when the dead leader's lease expires, not at some much
    // later timeout (etcd's own, a session's): far below 5 x the TTL even on
    // a busy machine.
    assert!(handover < Duration::from_secs(10), "no new leader within 5 x the lease TTL: {handover:?}");
    wait_until(EVENT_WAIT, "b1 back up by the fleet's verdict", || {
        rest.iter().all(|&i| {
            let s = status(&fleet, i);
            let b = backend(&s, "b1");
            b.state == "up" && b.fleet.as_deref() == Some("up") && b.in_ring
        })
    })
    .unwrap();
    let lines = restart_log(&log);
    let starts: Vec<_> = lines.iter().filter(|l| l.0 == "start").collect();
    println!("restart log: {lines:?}");
    assert_eq!(starts.iter().map(|l| l.1).collect::<Vec<_>>(), [1, 2], "each attempt runs once across the fleet");
    let end1 = lines.iter().find(|l| l.0 == "end" && l.1 == 1).expect("attempt 1 ended");
    assert!(starts[1].3 >= end1.3, "attempt 2 started before attempt 1 ended: {lines:?}");
    for &i in &rest {
        let flips = fleet_of(&status(&fleet, i)).verdict_flips - flips_before[i];
        assert_eq!(flips, 2, "node {}: the fleet verdict on b1 flipped {flips} times (down once, up once)", i + 1);
    }
    let d = digests(&fleet, &rest);
    assert!(d.iter().all(|x| *x == d[0]), "the surviving nodes' tables differ: {d:?}");
    drop(fleet);
}

/// Pings every session; returns the failures.
fn ping_all(sessions: &mut [Session], what: &str) -> Vec<String> {
    let mut failed = Vec::new();
    for (k, s) in sessions.iter_mut().enumerate() {
        if let Err(e) = s.ping(&format!("{what} {k}")) {
            failed.push(format!("{k} on {}: {e:#}", s.name));
        }
    }
    failed
}

#[test]
fn a_node_cut_from_the_backends_fences_itself_an_isolated_node_fails_static_and_a_dead_etcd_member_changes_nothing() {
    veer_tests::require_root();
    let dir = scratch("fleet-part");
    let mut bed = FleetBed::create("veer-fp", 3, 3, &dir).expect("fleet testbed").with_etcd("veer-fp").expect("etcd");
    // A second service on a VIP of its own, over b3 alone; lb2's first
    // operator change leaves for etcd 1.5 s late (a race it will lose).
    let api = format!(
        "\n[[service]]\nname = \"api\"\nvip = \"{VIP2}\"\nport = 80\n\n[service.health]\nkind = \"tcp\"\n\
         interval = \"100ms\"\ntimeout = \"80ms\"\nrise = 2\nfall = 3\n\n[[service.backend]]\nname = \"b3\"\n\
         address = \"{}\"\n",
        bed.backends[2].ip
    );
    let opts = NodeOpts {
        etcd_prefix: Some("/veer-fp"),
        extra: Some(&api),
        failpoints: &[(1, "fleet-publish-late")],
        ..Default::default()
    };
    let fleet = bed.start_fleet_with("t-fp", &dir, &opts).expect("fleet");
    let all = [0, 1, 2];
    wait_fleet_ready(&fleet, &all);
    wait_until(Duration::from_secs(30), "ECMP routes over the three nodes", || {
        bed.next_hops().len() == 3 && bed.next_hops_of(VIP2).len() == 3
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}", bed.router.ns.exec(&["ip", "route"])));
    let mut sessions: Vec<Session> = bed.open_sessions(60).unwrap();
    let flips = |f: &Fleet| -> Vec<u64> { all.iter().map(|&i| fleet_of(&status(f, i)).verdict_flips).collect() };
    let flips_before = flips(&fleet);

    // lb3 loses its path to b1 and b2, nothing else: the fleet verdict
    // stays (two of three nodes see them up); lb3 withdraws web's VIP, whose
    // backends it mostly cannot reach, and keeps api's (b3 alone).
    let t = Instant::now();
    bed.cut_from(2, &[0, 1], true).unwrap();
    wait_until(EVENT_WAIT, "lb3 to withdraw web's VIP", || bed.next_hops().len() == 2).unwrap();
    let withdrawn = t.elapsed();
    let lb3 = fleet_of(&status(&fleet, 2));
    assert!(lb3.fenced && lb3.fenced_vips == [VIP.to_string()], "lb3 withdrew without saying which VIP: {lb3:?}");
    let failed = ping_all(&mut sessions, "lb3 cut from the backends");
    println!(
        "lb3 cut from b1 and b2: web's VIP withdrawn {:.2} s after the cut (target about 2 s); {} of 60 connections failed",
        withdrawn.as_secs_f64(),
        failed.len()
    );
    assert_eq!(bed.next_hops_of(VIP2).len(), 3, "lb3 withdrew api's VIP too, whose backend it reaches");
    assert!(status(&fleet, 2).announced.contains(&VIP2.to_string()), "lb3 no longer announces api's VIP");
    assert_eq!(flips(&fleet), flips_before, "one node's broken path changed the fleet verdict");
    for &i in &[0, 1] {
        let s = status(&fleet, i);
        assert!(s.services[0].backends.iter().all(|b| b.fleet.as_deref() == Some("up") && b.in_ring), "{s:#?}");
    }
    let t = Instant::now();
    bed.cut_backends(2, false).unwrap();
    wait_until(Duration::from_secs(30), "lb3 to announce again", || bed.next_hops().len() == 3).unwrap();
    println!("lb3 healed: announced again {:.1} s later", t.elapsed().as_secs_f64());
    assert!(!fleet_of(&status(&fleet, 2)).fenced);
    wait_fleet_ready(&fleet, &all);

    // lb3 and its etcd member are cut off the control network: lb3 keeps
    // forwarding on its last state (fail static) while the others drain b2.
    bed.isolate_ctl(2, true).unwrap();
    wait_until(EVENT_WAIT, "lb3 to lose etcd", || fleet_of(&status(&fleet, 2)).etcd == "unreachable").unwrap();
    let r = fleet.nodes[0].veerd.api(Request::Drain { service: "web".into(), backend: "b2".into() }).unwrap();
    assert!(r.ok, "{r:?}");
    wait_until(EVENT_WAIT, "the drain on lb1 and lb2", || {
        [0, 1].iter().all(|&i| backend(&status(&fleet, i), "b2").state == "draining")
    })
    .unwrap();
    let failed = ping_all(&mut sessions, "lb3 isolated");
    assert!(failed.is_empty(), "connections failed while lb3 was cut off etcd: {failed:?}");
    assert_eq!(bed.next_hops().len(), 3, "lb3 withdrew because etcd was unreachable");
    assert_eq!(backend(&status(&fleet, 2), "b2").state, "up", "lb3 cannot have heard of the drain");
    let t = Instant::now();
    bed.isolate_ctl(2, false).unwrap();
    wait_until(EVENT_WAIT, "lb3's table to match the others'", || {
        let d = digests(&fleet, &all);
        d.iter().all(|x| *x == d[0]) && backend(&status(&fleet, 2), "b2").state == "draining"
    })
    .unwrap();
    println!(
        "lb3 back on the control network: its digest matches {:.2} s later (target 1 s)",
        t.elapsed().as_secs_f64()
    );
    assert!(fleet.nodes[2].veerd.api(Request::Enable { service: "web".into(), backend: "b2".into() }).unwrap().ok);
    wait_fleet_ready(&fleet, &all);

    // A lost race: lb2 drains b1, but its change leaves for etcd 1.5 s late
    // (the failure point); meanwhile lb1 disables b1. lb2's caller hears the
    // conflict with the value that won, and lb2 takes the fleet's value.
    let lb2_sock = dir.join("t-fp2.sock");
    let drain_b1 = Request::Drain { service: "web".into(), backend: "b1".into() };
    let lost = std::thread::scope(|sc| {
        let racer = sc.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(veer::wire::call(&lb2_sock, &drain_b1))
        });
        wait_until(EVENT_WAIT, "lb2's drain in flight", || fleet_of(&status(&fleet, 1)).unpublished == 1).unwrap();
        let r = fleet.nodes[0].veerd.api(Request::Disable { service: "web".into(), backend: "b1".into() }).unwrap();
        assert!(r.ok && r.result.as_ref().is_some_and(|v| v.to_string().contains("committed")), "{r:?}");
        racer.join().expect("the racing caller").expect("lb2's API")
    });
    let e = lost.error.clone().unwrap_or_default();
    assert!(!lost.ok && e.starts_with("conflict") && e.contains("admin/web/b1 = disabled"), "{lost:?}");
    wait_until(EVENT_WAIT, "every node to hold the winning value", || {
        all.iter().all(|&i| backend(&status(&fleet, i), "b1").state == "disabled")
    })
    .unwrap();
    println!("a lost race: lb2's caller heard {e:?}");
    assert!(fleet.nodes[0].veerd.api(Request::Enable { service: "web".into(), backend: "b1".into() }).unwrap().ok);
    wait_fleet_ready(&fleet, &all);

    // One of the three etcd members dies: traffic carries on, and a change
    // made on that member's node still commits and reaches every node.
    bed.etcd[1].kill();
    let failed = ping_all(&mut sessions, "an etcd member dead");
    assert!(failed.is_empty(), "connections failed after an etcd member died: {failed:?}");
    let t = Instant::now();
    let r = fleet.nodes[1].veerd.api(Request::Drain { service: "web".into(), backend: "b3".into() }).unwrap();
    assert!(r.ok, "{r:?}");
    wait_until(EVENT_WAIT, "a drain made on lb2 to reach every node", || {
        all.iter().all(|&i| backend(&status(&fleet, i), "b3").state == "draining")
    })
    .unwrap();
    println!("lb2's etcd member killed: lb2's drain reached every node in {:.2} s", t.elapsed().as_secs_f64());
    let failed = ping_all(&mut sessions, "after the drain");
    assert!(failed.is_empty(), "connections failed: {failed:?}");
    drop(fleet);
}
