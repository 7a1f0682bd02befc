//! A NAT backend host cut off under load (its link down: no refusal, no
//! ICMP, nothing), with health checks far too slow to notice in time: every
//! SYN veer sent it goes to another backend within tens of milliseconds,
//! before the client's own retransmission (1 s). Real TCP in namespaces, the
//! client kernel's own counters. Needs root.

use std::time::{Duration, Instant};

use veer::dataplane::MapReader;
use veer_abi::GlobalCounter;
use veer_tests::{
    daemon::{ClientLoad, EVENT_WAIT},
    deployment::{Deployment, INTERVAL_MS},
};

fn deployment(tag: &str, rescue: &str) -> Deployment {
    let s = Deployment::new(tag, 3);
    s.strip_vips();
    let daemon = format!("syn_cookies = \"off\"\nsyn_rescue = \"{rescue}\"\n");
    // Checks every 2 s: they notice the cut host only seconds later.
    let text = s
        .config_with(65537, &[1, 1, 1], &daemon, "", |_| String::new())
        .replace("ring_size = 65537", "ring_size = 65537\nforwarding = \"nat\"")
        .replace(&format!("interval = \"{INTERVAL_MS}ms\""), "interval = \"2s\"")
        .replace("fast_interval = \"20ms\"", "fast_interval = \"2s\"")
        .replace("timeout = \"40ms\"", "timeout = \"1s\"");
    s.write(&text);
    s
}

#[test]
fn a_nat_backend_host_cut_off_costs_no_client_a_retransmission() {
    let s = deployment("natrescue", "auto");
    let d = s.start();
    d.wait_up_in_ring("web", &["b1", "b2", "b3"]).unwrap_or_else(|e| panic!("{e:#}"));
    let client = &s.tb.client.ns;
    let load = ClientLoad::open_loop(client, s.vip(), 200, Duration::from_secs(3)).unwrap();
    load.wait_more(100, EVENT_WAIT).unwrap();
    let retrans0 = client.tcp_ext("TCPSynRetrans").unwrap();

    // The host goes: its link is down, so nothing it sends or answers.
    s.tb.backends[1].ns.exec(&["ip", "link", "set", "eth0", "down"]).unwrap();
    let cut = Instant::now();
    load.wait_more(300, EVENT_WAIT).unwrap();
    let samples = load.stop();

    let after: Vec<_> = samples.iter().filter(|x| x.start > cut).collect();
    let failed: Vec<_> = after.iter().filter(|x| x.result.is_err()).collect();
    assert!(failed.is_empty(), "{} of {} connections after the cut failed: {:?}", failed.len(), after.len(), failed[0]);
    let slowest = after.iter().map(|x| x.end - x.start).max().unwrap();
    let pins = s.pins();
    let rescued = pins.global_counter(GlobalCounter::SynRescued).unwrap();
    assert!(rescued > 0, "SYNs sent to the cut host were rescued");
    assert_eq!(
        client.tcp_ext("TCPSynRetrans").unwrap() - retrans0,
        0,
        "no client had to send its SYN again ({rescued} rescued; slowest connection {slowest:?})"
    );
    println!("{} connections after the cut, {rescued} rescued, slowest {slowest:?}", after.len());
}
