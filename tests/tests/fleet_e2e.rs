//! Fleet mode on its own nodes: two veerd nodes (each its own testbed, the
//! same backends by address) build the same Maglev tables whatever their
//! backend ids and histories, so a flow reaches the same backend on either
//! node. Needs root.

use std::{net::IpAddr, time::Duration};

use veer::dataplane::{from_abi, service_key, MapReader, Protocol};
use veer_abi::hash::flow_hash;
use veer_tests::{
    daemon::{veerctl, veerctl_json},
    deployment::{Deployment, PORT},
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
    veerctl_json(&s.cfg, &["status"])["services"][0]["table_digest"].as_str().unwrap().to_string()
}

/// The backend (by address) node `s` sends each of `n` sampled 5-tuples to.
fn choices(s: &Deployment, n: u32) -> Vec<IpAddr> {
    let pins = s.pins();
    let key = service_key(s.vip().ip(), PORT, Protocol::Tcp);
    let ring = pins.ring(&key).unwrap();
    let table = pins.backend_table().unwrap();
    (0..n)
        .map(|i| {
            let src =
                std::net::SocketAddr::new(IpAddr::from([198, 18, (i >> 8) as u8, i as u8]), 1024 + (i % 50_000) as u16);
            let id =
                ring[(flow_hash(&veer::dataplane::flow_key(src, s.vip(), Protocol::Tcp)) % ring.len() as u32) as usize];
            from_abi(&table.iter().find(|(x, _)| *x == id).unwrap().1.addr)
        })
        .collect()
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
    da.wait_log("backend DOWN", Duration::from_secs(5)).unwrap();
    veer_tests::daemon::wait_until(Duration::from_secs(5), "A's table without b2", || digest(&a) != digest(&b))
        .unwrap();
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
