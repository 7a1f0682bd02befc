//! End to end through real interfaces: a client, the load balancer and three
//! backends in namespaces on a bridge, real TCP servers, veer's XDP program
//! attached in driver mode on the LB. Needs root.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc, Arc,
    },
    time::Duration,
};

use veer::dataplane::{service_key, MapReader, Protocol};
use veer_abi::BackendState;
use veer_tests::{
    require_root,
    server::{fetch_name, NameServer},
    topology::{Testbed, VIP},
};

const PORT: u16 = 8080;
const TIMEOUT: Duration = Duration::from_secs(3);

#[test]
fn connections_follow_weights_and_a_backend_set_down_gets_no_new_ones() {
    require_root();
    let weights = [1u32, 2, 3];
    let tb = Testbed::create("veer-e2e", 3).expect("testbed");
    let vip = SocketAddr::new(IpAddr::V4(VIP), PORT);
    let _servers: Vec<NameServer> =
        tb.backends.iter().map(|b| NameServer::start(&b.ns, vip, &b.name).expect("server")).collect();

    let mut dp = tb.balance(PORT, Protocol::Tcp, &weights, 65536).expect("dataplane attached in driver mode");
    let key = service_key(vip.ip(), PORT, Protocol::Tcp);

    // 1. Spread: 600 connections, shares near 1/6, 2/6, 3/6.
    const N: usize = 600;
    let names = tb.client.ns.run(|| (0..N).map(|_| fetch_name(vip, TIMEOUT)).collect::<Result<Vec<_>, _>>()).unwrap();
    let names = names.expect("every connection through the LB must succeed");
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for n in names {
        *count.entry(n).or_default() += 1;
    }
    println!("spread over weights {weights:?}: {count:?}");
    let total_w: u32 = weights.iter().sum();
    for (i, b) in tb.backends.iter().enumerate() {
        let share = *count.get(&b.name).unwrap_or(&0) as f64 / N as f64;
        let want = weights[i] as f64 / total_w as f64;
        // 600 samples: one standard deviation is ~0.02; allow 0.07.
        assert!((share - want).abs() < 0.07, "{}: share {share:.3}, weight share {want:.3}", b.name);
        // The dataplane saw each of those connections as one new flow.
        let c = dp.backend_counters(i as u32).unwrap();
        assert_eq!(c.new_flows as usize, *count.get(&b.name).unwrap_or(&0), "{} new flows", b.name);
    }

    // 2. Set b2 down while a client connects in a loop.
    let stop = Arc::new(AtomicBool::new(false));
    let seq = Arc::new(AtomicU64::new(0));
    let (tx, rx) = mpsc::channel();
    let (stop2, seq2) = (stop.clone(), seq.clone());
    let client = tb
        .client
        .ns
        .spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                let n = seq2.fetch_add(1, Ordering::SeqCst);
                if tx.send((n, fetch_name(vip, TIMEOUT).map_err(|e| e.to_string()))).is_err() {
                    break;
                }
            }
        })
        .unwrap();
    let recv = |n: usize| -> Vec<(u64, Result<String, String>)> {
        (0..n).map(|_| rx.recv_timeout(veer_tests::daemon::EVENT_WAIT).expect("client loop stalled")).collect()
    };
    let mut results = recv(100);
    dp.set_backend_state(1, BackendState::Down).unwrap();
    // Every connection numbered from here on started after the state write.
    let after_down = seq.load(Ordering::SeqCst);
    results.extend(recv(150));
    // Then what the daemon does next: rebuild the ring without it, switch halves.
    dp.publish_pool(&key, 65537, &tb.members(&weights, Some(1))).unwrap();
    let after_ring = seq.load(Ordering::SeqCst);
    results.extend(recv(150));
    stop.store(true, Ordering::Relaxed);
    drop(rx);
    client.join().unwrap().unwrap();

    let in_flight_failures = results.iter().filter(|(n, r)| *n < after_down && r.is_err()).count();
    let mut late: BTreeMap<String, usize> = BTreeMap::new();
    for (n, r) in results.iter().filter(|(n, _)| *n >= after_down) {
        let name = r.as_ref().unwrap_or_else(|e| panic!("connection {n} after b2 went down failed: {e}"));
        *late.entry(name.clone()).or_default() += 1;
    }
    println!(
        "after b2 down: {late:?} ({} connections; ring switched at #{after_ring}; {in_flight_failures} in-flight failures)",
        late.values().sum::<usize>()
    );
    assert!(!late.contains_key("b2"), "b2 got new connections after it was set down: {late:?}");
    assert!(late.get("b1").copied().unwrap_or(0) > 0 && late.get("b3").copied().unwrap_or(0) > 0, "{late:?}");
    assert_eq!(dp.ring(&key).unwrap().iter().filter(|&&id| id == 1).count(), 0, "b2 left in the live ring");
}
