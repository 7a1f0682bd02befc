//! Balancing by load with real servers and real connections: least-flows
//! steers new connections away from a backend that holds more of them.
//! Needs root.

use std::time::Duration;

use veer_tests::{
    daemon::{veerctl, wait_until, ClientLoad},
    deployment::Deployment,
    server::Session,
};

#[test]
fn least_flows_sends_new_connections_to_the_backend_holding_fewer() {
    let s = Deployment::new("lf", 2);
    let text = s
        .config(65537, &[1, 1], |_| String::new())
        .replace("ring_size = 65537", "ring_size = 65537\nscheduler = \"least-flows\"");
    s.write(&text);
    let d = s.start();
    wait_until(Duration::from_secs(15), "both up", || {
        ["b1", "b2"].iter().all(|n| d.backend_state("web", n).is_ok_and(|x| x == "up"))
    })
    .unwrap();
    // 40 long-lived connections on b1 (b2 drained meanwhile).
    assert!(veerctl(&s.cfg, &["drain", "web", "b2"]).0);
    let held: Vec<Session> =
        s.tb.client
            .ns
            .run(|| (0..40).map(|_| Session::open(s.vip(), Duration::from_secs(2))).collect::<Result<Vec<_>, _>>())
            .unwrap()
            .unwrap();
    assert!(held.iter().all(|x| x.name == "b1"));
    let pins = s.pins();
    let b1 = veer::dataplane::MapReader::backend_table(&pins)
        .unwrap()
        .into_iter()
        .find(|(_, b)| b.addr == veer::dataplane::to_abi(s.tb.backends[0].addr()))
        .unwrap()
        .0;
    assert_eq!(veer::dataplane::MapReader::active_flows(&pins, b1).unwrap(), 40, "the dataplane counts them");
    assert!(veerctl(&s.cfg, &["enable", "web", "b2"]).0);

    // Short connections: b2 holds fewer, so it gets a flow whenever it is
    // one of the two choices: about 3 in 4 (Maglev alone: 1 in 2).
    let load = ClientLoad::start(&s.tb.client.ns, s.vip(), Duration::from_secs(2)).unwrap();
    load.wait_more(300, Duration::from_secs(30)).unwrap();
    let samples = load.stop();
    let ok: Vec<&str> = samples.iter().filter_map(|x| x.result.as_deref().ok()).collect();
    assert_eq!(ok.len(), samples.len(), "connections failed");
    let to_b2 = ok.iter().filter(|n| **n == "b2").count() as f64 / ok.len() as f64;
    println!("b2 took {:.1}% of {} new connections", to_b2 * 100.0, ok.len());
    assert!(to_b2 > 0.62, "b2 took {:.0}% of {} new connections (expected about 75%)", to_b2 * 100.0, ok.len());
    drop(held);
}
