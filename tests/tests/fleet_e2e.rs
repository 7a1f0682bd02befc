//! Fleet mode on its own nodes: two veerd nodes (each its own testbed, the
//! same backends by address) build the same Maglev tables whatever their
//! backend ids and histories, so a flow reaches the same backend on either
//! node. Needs root.

use std::net::IpAddr;

use veer_tests::{
    daemon::{veerctl, veerctl_status, wait_until, EVENT_WAIT},
    deployment::Deployment,
};

/// A node's config: `[fleet]`, its backends listed in `order`.
fn node_config(s: &Deployment, order: &[usize]) -> String {
    let text = s.config(65537, &[1, 2, 1], |_| String::new());
    let mut parts: Vec<&str> = text.split("\n[[service.backend]]").collect();
    let head = parts.remove(0);
    let mut out = format!("[fleet]\n\n{head}");
    for &i in order {
        out += "\n[[service.backend]]";
        out += parts[i];
    }
    out
}

fn digest(s: &Deployment) -> String {
    // Whatever the status's exit code (a backend may be down meanwhile).
    let (_, st) = veerctl_status(&s.cfg);
    st["services"][0]["table_digest"].as_str().unwrap().to_string()
}

/// The backend (by address) node `s` sends each of `n` sampled 5-tuples to.
fn choices(s: &Deployment, n: u32) -> Vec<IpAddr> {
    veer_tests::fleet::table_choices(&s.pins(), s.vip(), n).unwrap()
}

#[test]
fn fleet_nodes_build_the_same_tables_whatever_their_ids_and_histories() {
    let a = Deployment::new("fa", 3);
    let b = Deployment::new("fb", 3);
    a.write(&node_config(&a, &[0, 1, 2]));
    b.write(&node_config(&b, &[2, 0, 1]));
    let mut da = a.start();
    let db = b.start();
    da.wait_up_in_ring("web", &["b1", "b2", "b3"]).unwrap();
    db.wait_up_in_ring("web", &["b1", "b2", "b3"]).unwrap();
    let id = |d: &veer_tests::daemon::Veerd, n: &str| d.status().unwrap().backend("web", n).unwrap().id;
    assert_ne!(id(&da, "b1"), id(&db, "b1"), "the nodes number their backends differently");
    assert_eq!(digest(&a), digest(&b), "the same table by identity");
    let (ca, cb) = (choices(&a, 100_000), choices(&b, 100_000));
    assert_eq!(ca.iter().zip(&cb).filter(|(x, y)| x != y).count(), 0, "every sampled 5-tuple agrees");
    let distinct: std::collections::HashSet<_> = ca.iter().collect();
    assert_eq!(distinct.len(), 3, "and they spread over the three");

    // Node A alone sees b2 fail and come back: a history-dependent rebuild
    // would leave its table different from B's; fleet mode builds it fresh.
    a.backends[1].kill().unwrap();
    da.wait_event(&["backend DOWN", "backend=b2"]).unwrap();
    veer_tests::daemon::wait_until(EVENT_WAIT, "A's table without b2", || digest(&a) != digest(&b)).unwrap();
    a.backends[1].restart().unwrap();
    da.wait_up_in_ring("web", &["b2"]).unwrap();
    assert_eq!(digest(&a), digest(&b), "back to the same table");
    assert_eq!(choices(&a, 100_000), choices(&b, 100_000));

    // What fleet mode cannot agree on is refused.
    let rr = node_config(&a, &[0, 1, 2]).replace("ring_size = 65537", "ring_size = 65537\nscheduler = \"round-robin\"");
    a.write(&rr);
    let (ok, _, err) = veerctl(&a.cfg, &["reload"]);
    assert!(!ok && err.contains("fleet mode"), "{err}");
}

/// The VIP routes veerd keeps in table 200 of the node's namespace.
fn table_200(s: &Deployment) -> String {
    s.tb.lb.ns.exec(&["ip", "route", "show", "table", "200"]).unwrap()
}

#[test]
fn a_node_announces_a_vip_while_it_has_a_backend_and_is_not_drained() {
    let s = Deployment::new("fan", 2);
    // The fail-open guard off: both servers are killed at once below.
    let text = s
        .config(65537, &[1, 1], |_| String::new())
        .replace("[daemon]", "[fleet]\nannounce_table = 200\n\n[daemon]")
        .replace("ring_size = 65537", "ring_size = 65537\nfail_open = 1");
    s.write(&text);
    // Another's route in the same table: veerd leaves it alone.
    s.tb.lb.ns.exec(&["ip", "route", "add", "192.0.2.0/24", "dev", "lo", "table", "200"]).unwrap();
    let vip = s.vip().ip().to_string();
    let announced = |s: &Deployment| table_200(s).lines().any(|l| l.starts_with(&vip) && l.contains("proto 118"));
    let wait = |what: &str, want: bool| {
        wait_until(EVENT_WAIT, what, || announced(&s) == want).unwrap_or_else(|e| panic!("{e}: {}", table_200(&s)));
    };
    let mut d = s.start();
    d.wait_up_in_ring("web", &["b1", "b2"]).unwrap();
    wait("the VIP announced", true);
    let st = veer_tests::daemon::veerctl(&s.cfg, &["status"]).1;
    assert!(st.contains(&format!("fleet node: announcing {vip}")), "{st}");

    // No backend left: withdrawn; one back: announced.
    for b in &s.backends {
        b.kill().unwrap();
    }
    wait("the VIP withdrawn with no backend", false);
    s.backends[0].restart().unwrap();
    wait("the VIP announced again", true);

    // An operator drains the node: withdrawn at once, and across a restart.
    let (ok, _, err) = veerctl(&s.cfg, &["node", "drain"]);
    assert!(ok, "{err}");
    assert!(!announced(&s), "withdrawn when the command returns: {}", table_200(&s));
    d.kill();
    let d = s.start();
    d.wait_up_in_ring("web", &["b1"]).unwrap();
    // veerd syncs its announcements every second: let it run 100 checks of
    // its two backends (over 2 s of its own time, however slowly they came)
    // rather than a time a busy machine can leave it no share of.
    d.wait_checks(100).unwrap();
    assert!(!announced(&s), "still drained after a restart: {}", table_200(&s));
    assert!(veerctl(&s.cfg, &["status"]).1.contains("DRAINED"));
    assert!(veerctl(&s.cfg, &["node", "undrain"]).0);
    assert!(announced(&s), "announced when the command returns");

    // veerd stopping withdraws nothing: the dataplane keeps forwarding.
    drop(d);
    assert!(announced(&s), "{}", table_200(&s));
    assert!(table_200(&s).contains("192.0.2.0/24"), "the other route stays: {}", table_200(&s));
}
