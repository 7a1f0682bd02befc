//! DSR across a router (`forwarding = "ipip"` and `"gue"`), end to end: a
//! real veerd, backends one routed hop away behind a 1,400-byte link with
//! veer-agent taking packets out of the tunnel, the client on a subnet of
//! its own. Answers go backend -> router -> client (the balancer's
//! interface sees only the client's side); a 1 MiB upload completes through
//! the smaller hop (veer answers "too big" and the client's path MTU
//! converges); a server killed under load costs no connection (the agent
//! bounces its SYNs back through the tunnel). Needs root.

use std::{
    collections::HashSet,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::{Duration, Instant},
};

use veer_abi::GlobalCounter;
use veer_tests::{
    daemon::{scratch, wait_until, BackendProc, ClientLoad, Uninstall, Veerd, EVENT_WAIT},
    netns::in_netns,
    require_root,
    routed::{RoutedTestbed, BULK_PORT},
    server::fetch_name,
    topology::{VIP, VIP6},
};

const MIB: usize = 1 << 20;

/// The testbed, its backends' servers and agents, and veerd.
struct Routed {
    veerd: Veerd,
    _servers: Vec<BackendProc>,
    agents: PathBuf,
    dir: PathBuf,
    // Dropped last: pins, then namespaces.
    _uninstall: Uninstall,
    tb: RoutedTestbed,
}

impl Drop for Routed {
    fn drop(&mut self) {
        self.veerd.kill();
        for b in &self.tb.backends {
            let _ = in_netns(b.ns.name(), || veer::dataplane::agent::uninstall(&self.agents, "eth0"));
        }
        let _ = std::fs::remove_dir_all(&self.agents);
    }
}

fn setup(tag: &str, forwarding: &str) -> Routed {
    setup_with(tag, forwarding, false)
}

/// [`setup`], with VIP-path checks (`vip_path`) on every service.
fn setup_with(tag: &str, forwarding: &str, vip_path: bool) -> Routed {
    require_root();
    let dir = scratch(tag);
    let uninstall = Uninstall::instance(&format!("t-{tag}"));
    let tb = RoutedTestbed::create(&format!("veer-{tag}"), 3).expect("routed testbed");
    let servers = tb
        .backends
        .iter()
        .map(|b| BackendProc::start(&b.ns, &b.name, "[::]:80".parse().unwrap(), &dir).expect("backend"))
        .collect();
    for b in &tb.backends {
        veer_tests::routed::bulk_server(&b.ns, &b.name);
    }
    let agents = PathBuf::from(format!("/sys/fs/bpf/veer-test-agent-{tag}"));
    tb.install_agents(&agents, forwarding).unwrap();
    let cfg = dir.join("veer.toml");
    let mut text = tb.config(&format!("t-{tag}"), forwarding, &dir);
    if vip_path {
        text = text.replace("kind = \"tcp\"\n", "kind = \"tcp\"\nvip_path = true\n");
    }
    std::fs::write(&cfg, text).unwrap();
    let veerd = Veerd::start(&cfg, tb.lb.ns.name(), &dir.join("veerd.sock"), &dir.join("veerd.log")).unwrap();
    let names: Vec<&str> = tb.backends.iter().map(|b| b.name.as_str()).collect();
    for svc in ["web", "web6", "bulk", "bulk6"] {
        veerd.wait_up_in_ring(svc, &names).unwrap();
    }
    Routed { veerd, _servers: servers, agents, dir, _uninstall: uninstall, tb }
}

fn lb_counter(r: &Routed, c: GlobalCounter) -> u64 {
    use veer::dataplane::MapReader;
    let pins = veer::dataplane::PinnedMaps::open(&r.pin_dir()).unwrap();
    pins.global_counter(c).unwrap()
}

impl Routed {
    fn pin_dir(&self) -> PathBuf {
        veer::config::load(&self.dir.join("veer.toml")).expect("config").daemon.pin_dir()
    }
}

/// Every request answered, IPv4 and IPv6, by every backend; a 1 MiB
/// download that does not cross the balancer; a 1 MiB upload through the
/// 1,400-byte hop.
fn serves_through_the_tunnel(tag: &str, forwarding: &str) {
    let r = setup(tag, forwarding);
    let client = &r.tb.client.ns;
    for vip in [IpAddr::from(VIP), IpAddr::from(VIP6)] {
        let addr = SocketAddr::new(vip, 80);
        let names: HashSet<String> =
            client.run(|| (0..60).map(|_| fetch_name(addr, Duration::from_secs(3)).unwrap()).collect()).unwrap();
        assert_eq!(names.len(), 3, "{tag}: {vip}: every backend answered: {names:?}");
        let bulk_addr = SocketAddr::new(vip, BULK_PORT);
        // Down: the answers go backend -> router -> client.
        let before = r.tb.lb_rx_bytes().unwrap();
        let (_, got, back) = client.run(|| veer_tests::routed::bulk(bulk_addr, 0, MIB)).unwrap().unwrap();
        let crossed = r.tb.lb_rx_bytes().unwrap() - before;
        assert_eq!((got, back), (0, MIB), "{tag}: {vip}: 1 MiB down");
        assert!(crossed < (MIB / 4) as u64, "{tag}: {vip}: {crossed} bytes reached the balancer for a 1 MiB answer");
        // Up: through the smaller hop once the client's path MTU converged.
        let too_big = lb_counter(&r, GlobalCounter::TooBigAnswered);
        let t0 = Instant::now();
        let (name, got, _) = client.run(|| veer_tests::routed::bulk(bulk_addr, MIB, 0)).unwrap().unwrap();
        assert_eq!(got, MIB, "{tag}: {vip}: {name} got the whole upload");
        assert!(lb_counter(&r, GlobalCounter::TooBigAnswered) > too_big, "{tag}: {vip}: veer said too big");
        println!("{tag}: {vip}: 1 MiB up in {:?}; {crossed} bytes crossed the balancer for 1 MiB down", t0.elapsed());
    }
    assert!(lb_counter(&r, GlobalCounter::Encapsulated) > 0);
}

#[test]
fn ipip_serves_ipv4_and_ipv6_across_a_router() {
    serves_through_the_tunnel("rt-ipip", "ipip");
}

#[test]
fn gue_serves_ipv4_and_ipv6_across_a_router() {
    serves_through_the_tunnel("rt-gue", "gue");
}

/// A server killed under 500 new connections a second: none fails; its
/// agent sent the SYNs back through the tunnel, and veer sent them on.
fn killed_behind_the_tunnel(tag: &str, forwarding: &str) {
    let mut r = setup(tag, forwarding);
    let load =
        ClientLoad::open_loop(&r.tb.client.ns, SocketAddr::new(VIP.into(), 80), 500, Duration::from_secs(2)).unwrap();
    load.wait_more(300, EVENT_WAIT).unwrap();
    r._servers[1].kill().unwrap();
    // From when its listener is gone: a SYN that reached it before then
    // was taken, and reset as the process went.
    let b2 = SocketAddr::new(r.tb.backends[1].ip.into(), 80);
    veer_tests::topology::wait_refused(&r.tb.client.ns, b2).unwrap();
    let t0 = Instant::now();
    r.veerd.wait_event(&["backend DOWN", "b2"]).unwrap();
    load.wait_more(300, EVENT_WAIT).unwrap();
    let samples = load.stop();
    let failed: Vec<_> = samples.iter().filter(|s| s.start >= t0 && s.result.is_err()).collect();
    let after = samples.iter().filter(|s| s.start >= t0).count();
    assert!(failed.is_empty(), "{tag}: {} of {after} failed after the kill: {:?}", failed.len(), failed[0].result);
    let b2 =
        in_netns(r.tb.backends[1].ns.name(), || veer::dataplane::agent::status(&r.agents, "eth0")).unwrap().unwrap();
    assert!(b2.bounced >= 1, "{tag}: b2's agent bounced SYNs: {b2:?}");
    assert!(lb_counter(&r, GlobalCounter::Decapsulated) >= 1, "{tag}: the balancer took the bounces out");
    println!("{tag}: {after} connections after the kill, 0 failed, {} bounced", b2.bounced);
}

#[test]
fn a_killed_server_behind_ipip_costs_no_connection() {
    killed_behind_the_tunnel("rk-ipip", "ipip");
}

#[test]
fn a_killed_server_behind_gue_costs_no_connection() {
    killed_behind_the_tunnel("rk-gue", "gue");
}

/// A VIP-path check goes through the tunnel: it passes while the backend
/// takes packets out of it, and fails the backend whose agent is gone
/// (the kernel here has no `ipip` or `fou` to do it instead), while its
/// plain TCP check would still pass.
fn vip_path_through_the_tunnel(tag: &str, forwarding: &str) {
    let r = setup_with(tag, forwarding, true);
    // The balancer forgets its neighbours (entries expire; XDP's route
    // lookups never refresh one): the probes have the kernel resolve their
    // next hop again, and no backend goes down for it.
    r.tb.lb.ns.exec(&["ip", "neigh", "flush", "all"]).unwrap();
    for (family, gw) in [("-4", "10.80.0.1"), ("-6", "fd80::1")] {
        wait_until(EVENT_WAIT, &format!("{tag}: the probes to resolve the gateway {gw} again"), || {
            r.tb.lb.ns.exec(&["ip", family, "neigh", "show", gw]).unwrap_or_default().contains("lladdr")
        })
        .unwrap_or_else(|e| panic!("{e}: {}", r.tb.lb.ns.exec(&["ip", "neigh", "show"]).unwrap_or_default()));
    }
    for svc in ["web", "web6"] {
        for b in ["b1", "b2", "b3"] {
            assert_eq!(r.veerd.backend_state(svc, b).unwrap(), "up", "{tag}: {svc}/{b} after the flush");
        }
    }
    let b2 = r.tb.backends[1].ns.name().to_string();
    in_netns(&b2, || veer::dataplane::agent::uninstall(&r.agents, "eth0")).unwrap().unwrap();
    for svc in ["web", "web6"] {
        // Each service's checks fail b2 on their own schedule: waited for
        // one by one (the first "backend DOWN" may be another service's).
        wait_until(EVENT_WAIT, &format!("{tag}: {svc}/b2 down"), || {
            r.veerd.backend_state(svc, "b2").is_ok_and(|s| s == "down")
        })
        .unwrap();
        for b in ["b1", "b3"] {
            assert_eq!(r.veerd.backend_state(svc, b).unwrap(), "up", "{tag}: {svc}/{b}");
        }
    }
    let names: HashSet<String> = r
        .tb
        .client
        .ns
        .run(|| (0..30).map(|_| fetch_name(SocketAddr::new(VIP.into(), 80), Duration::from_secs(3)).unwrap()).collect())
        .unwrap();
    assert!(!names.contains("b2") && names.len() == 2, "{tag}: served without b2: {names:?}");
}

#[test]
fn a_vip_path_check_through_gue_fails_a_backend_without_its_agent() {
    vip_path_through_the_tunnel("rv-gue", "gue");
}

#[test]
fn a_vip_path_check_through_ipip_fails_a_backend_without_its_agent() {
    vip_path_through_the_tunnel("rv-ipip", "ipip");
}
