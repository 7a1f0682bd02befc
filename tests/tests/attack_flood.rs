//! veer under a spoofed SYN flood: a NAT service keeps serving legitimate
//! clients while an off-path attacker sends SYNs from random sources as
//! fast as one core can, and the spoofed sources end up holding (almost)
//! no SNAT port. IPv4 and IPv6. Needs root.

use std::{net::SocketAddr, time::Duration};

use veer::dataplane::MapReader;
use veer_abi::GlobalCounter;
use veer_tests::{
    daemon::{wait_until, ClientLoad, Veerd, EVENT_WAIT},
    deployment::Deployment,
    flood::{spoofed_mappings, SynFlood},
};

/// Spoofed SYNs the test sends (the README's figure uses 10^6: `cargo xtask bench`).
const FLOOD: u64 = 200_000;
/// The default `syn_cookie_threshold`: new NAT connections a CPU opens in a
/// second before it answers SYNs with cookies.
const THRESHOLD: usize = 1000;
/// Two expiry passes (5 s apart) and the 3 s a half-open flow may idle under a flood, with room.
const RELEASE_WAIT: Duration = Duration::from_secs(30);

/// A NAT deployment (backends without the VIP), `daemon_extra` in `[daemon]`, running.
fn nat_deployment(tag: &str, daemon_extra: &str) -> (Deployment, Veerd) {
    let s = Deployment::new(tag, 3);
    s.strip_vips();
    let text = s
        .config(65537, &[1, 1, 1], |_| String::new())
        .replace("ring_size = 65537", "ring_size = 65537\nforwarding = \"nat\"")
        .replace("[daemon]\n", &format!("[daemon]\n{daemon_extra}\n"));
    s.write(&text);
    let d = s.start();
    d.wait_up_in_ring("web", &["b1", "b2", "b3"]).unwrap_or_else(|e| panic!("{e:#}"));
    (s, d)
}

#[test]
fn a_nat_service_keeps_serving_new_connections_under_a_spoofed_syn_flood() {
    let (s, _d) = nat_deployment("hsynflood", "");
    flood_under_load(&s, s.vip());
}

/// The same over IPv6: a NAT service on an IPv6 VIP, toward the backends'
/// IPv6 addresses, flooded from spoofed IPv6 sources.
#[test]
fn ipv6_a_nat_service_keeps_serving_new_connections_under_a_spoofed_syn_flood() {
    let s = Deployment::new("hsynflood6", 3);
    s.strip_vips();
    let _servers6 = s.serve_ipv6().expect("IPv6 servers");
    let text = s
        .config(65537, &[1, 1, 1], |_| String::new())
        .replace("ring_size = 65537", "ring_size = 65537\nforwarding = \"nat\"");
    s.write(&s.to_ipv6(&text));
    let d = s.start();
    d.wait_up_in_ring("web", &["b1", "b2", "b3"]).unwrap_or_else(|e| panic!("{e:#}"));
    flood_under_load(&s, s.vip6());
}

/// Legitimate clients open 200 connections a second to `vip` (each given
/// 1 s) while [`FLOOD`] spoofed SYNs arrive: none fails, and the spoofed
/// sources hold no SNAT port for long.
fn flood_under_load(s: &Deployment, vip: SocketAddr) {
    let load = ClientLoad::open_loop(&s.tb.client.ns, vip, 200, Duration::from_secs(1)).expect("client load");
    load.wait_more(50, EVENT_WAIT).unwrap_or_else(|e| panic!("before the flood: {e:#}"));
    let flood = SynFlood::start(&s.tb.client.ns, s.flood_path(), vip, 0, FLOOD).expect("flood");
    let sent = flood.wait(Duration::from_secs(120)).unwrap_or_else(|e| panic!("{e:#}"));
    // And after it: the pool is not left empty.
    load.wait_more(200, EVENT_WAIT).unwrap_or_else(|e| panic!("after the flood: {e:#}"));
    let samples = load.stop();

    let failed: Vec<_> = samples.iter().filter(|x| x.result.is_err()).collect();
    let slowest = samples.iter().map(|x| x.end - x.start).max().unwrap_or_default();
    let pins = s.pins();
    let counters = pins.global_counters().expect("counters");
    let count = |c: GlobalCounter| counters.iter().find(|(k, _)| *k == c).map_or(0, |(_, v)| *v);
    println!(
        "{sent} spoofed SYNs; {} legitimate connections, {} failed, slowest {slowest:?}; cookies sent {}, valid {}",
        samples.len(),
        failed.len(),
        count(GlobalCounter::SynCookiesSent),
        count(GlobalCounter::SynCookiesValid),
    );
    assert!(
        failed.is_empty(),
        "{} of {} legitimate connections failed under the flood: {:?}",
        failed.len(),
        samples.len(),
        failed.first().map(|x| &x.result)
    );
    assert!(count(GlobalCounter::SynCookiesSent) > 0, "the flood was answered with cookies");

    // Only SYNs a CPU saw before it switched to cookies took a port, and
    // the expiry lets go of them while cookies are being sent.
    let spoofed = || spoofed_mappings(&pins).expect("NAT mappings");
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let held = spoofed();
    println!("SNAT ports held by spoofed sources right after the flood: {held}");
    assert!(
        held <= THRESHOLD * cpus,
        "{held} SNAT ports held by spoofed sources (at most {THRESHOLD} per CPU before cookies)"
    );
    wait_until(RELEASE_WAIT, "no SNAT port held by a spoofed source", || spoofed() == 0)
        .unwrap_or_else(|e| panic!("{e:#}"));
}

/// A flood too slow for the per-CPU rate threshold still cannot fill the
/// SNAT ports: once half-open NAT flows pass `syn_cookie_half_open`, veerd
/// turns cookies on for every CPU and lets the half-open flows go.
#[test]
fn a_slow_flood_under_the_rate_threshold_turns_cookies_on_by_the_half_open_count() {
    let (s, _d) = nat_deployment("hslowflood", "syn_cookie_half_open = 300");
    let load = ClientLoad::open_loop(&s.tb.client.ns, s.vip(), 100, Duration::from_secs(1)).expect("client load");
    // 400 spoofed SYNs a second: well under 1000 per CPU.
    let flood = SynFlood::start(&s.tb.client.ns, s.flood_path(), s.vip(), 400, 0).expect("flood");
    let pins = s.pins();
    let cookies = || pins.global_counter(GlobalCounter::SynCookiesSent).expect("counters");
    wait_until(Duration::from_secs(40), "SYN cookies on, by the half-open count", || cookies() > 0)
        .unwrap_or_else(|e| panic!("{e:#}; {} spoofed SYNs sent", flood.sent()));
    // While it goes on, the spoofed sources let go of their ports.
    wait_until(RELEASE_WAIT, "spoofed SNAT ports down to what one expiry pass lets in", || {
        spoofed_mappings(&pins).expect("NAT mappings") < 300
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    let sent = flood.stop().expect("flood");
    load.wait_more(100, EVENT_WAIT).unwrap_or_else(|e| panic!("{e:#}"));
    let samples = load.stop();
    let failed: Vec<_> = samples.iter().filter(|x| x.result.is_err()).collect();
    println!("{sent} spoofed SYNs at 400/s; {} legitimate connections, {} failed", samples.len(), failed.len());
    assert!(failed.is_empty(), "{} of {} failed: {:?}", failed.len(), samples.len(), failed.first().map(|x| &x.result));
}
