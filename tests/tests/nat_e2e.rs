//! NAT end to end: backends with no VIP and default sysctls, real TCP and
//! UDP servers, thousands of connections through veer, a backend killed
//! under traffic. Needs root.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpStream, UdpSocket},
    time::Duration,
};

use anyhow::Context;

use veer::dataplane::MapReader;
use veer_abi::GlobalCounter;
use veer_tests::{
    daemon::{BackendProc, ClientLoad, Veerd, EVENT_WAIT},
    deployment::{Deployment, INTERVAL_MS, PORT},
    netns::Netns,
    topology::{RoutedHost, LB_IP, ROUTED_NET, VIP},
};

fn wait_all_up(d: &Veerd, svc: &str, names: &[&str]) {
    d.wait_up_in_ring(svc, names).unwrap_or_else(|e| panic!("{e:#}"));
}

/// A deployment whose backends know nothing of the VIP.
fn nat_deployment(tag: &str) -> Deployment {
    let s = Deployment::new(tag, 3);
    s.strip_vips();
    let udp = format!(
        r#"
[[service]]
name = "echo"
vip = "{VIP}"
port = {PORT}
protocol = "udp"
forwarding = "nat"

[service.health]
kind = "udp"
payload = "ping"
interval = "{INTERVAL_MS}ms"
timeout = "40ms"

{}
"#,
        s.tb.backends
            .iter()
            .map(|b| format!("[[service.backend]]\nname = \"{}\"\naddress = \"{}\"\n", b.name, b.ip))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let text = s
        .config(65537, &[1, 2, 1], |_| String::new())
        .replace("ring_size = 65537", "ring_size = 65537\nforwarding = \"nat\"")
        + &udp;
    s.write(&text);
    s
}

/// veerd turned forwarding on for NAT on the interface it is attached to
/// (`eth0`), and nowhere else: the namespace's global switches stay off.
fn assert_forwarding_only_on_the_attached_interface(lb: &Netns) {
    let sysctl =
        |key: &str| lb.exec(&["cat", &format!("/proc/sys/net/{key}")]).expect("read a sysctl").trim().to_string();
    assert_eq!(sysctl("ipv4/ip_forward"), "0", "veerd turned on IPv4 forwarding for every interface");
    assert_eq!(sysctl("ipv6/conf/all/forwarding"), "0", "veerd turned on IPv6 forwarding for every interface");
    assert_eq!(sysctl("ipv4/conf/eth0/forwarding"), "1", "NAT needs forwarding on the attached interface");
    assert_eq!(sysctl("ipv6/conf/eth0/forwarding"), "1", "NAT needs forwarding on the attached interface");
    assert_eq!(sysctl("ipv4/conf/lo/forwarding"), "0", "an interface veerd is not attached to forwards");
}

#[test]
fn nat_serves_backends_that_have_no_vip_spread_by_weight_and_survives_a_kill() {
    let s = nat_deployment("hnate2e");
    let mut d = s.start();
    wait_all_up(&d, "web", &["b1", "b2", "b3"]);
    wait_all_up(&d, "echo", &["b1", "b2", "b3"]);

    let load = ClientLoad::start(&s.tb.client.ns, s.vip(), Duration::from_secs(2)).unwrap();
    load.wait_more(3000, 4 * EVENT_WAIT).unwrap();
    assert_forwarding_only_on_the_attached_interface(&s.tb.lb.ns);
    let before = load.snapshot();
    let failed: Vec<_> = before.iter().filter(|x| x.result.is_err()).collect();
    assert!(failed.is_empty(), "{} of {} connections failed: {:?}", failed.len(), before.len(), failed[0].result);
    let mut per: BTreeMap<String, usize> = BTreeMap::new();
    for x in &before {
        *per.entry(x.result.clone().unwrap()).or_default() += 1;
    }
    let share = |n: &str| per.get(n).copied().unwrap_or(0) as f64 / before.len() as f64;
    println!("{} connections: {per:?}", before.len());
    assert!((share("b2") - 0.5).abs() < 0.1, "weights 1:2:1 gave {per:?}");
    assert!(share("b1") > 0.15 && share("b3") > 0.15, "{per:?}");

    // UDP through NAT: each datagram answered by a backend.
    let replies =
        s.tb.client
            .ns
            .run(|| {
                let mut got = 0;
                for i in 0..100 {
                    let s2 = UdpSocket::bind("0.0.0.0:0").unwrap();
                    s2.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
                    s2.send_to(format!("q{i}").as_bytes(), SocketAddr::new(VIP.into(), PORT)).unwrap();
                    let mut buf = [0u8; 64];
                    if let Ok((n, from)) = s2.recv_from(&mut buf) {
                        let text = String::from_utf8_lossy(&buf[..n]).to_string();
                        if from == SocketAddr::new(VIP.into(), PORT)
                            && text.starts_with('b')
                            && text.ends_with(&format!("q{i}"))
                        {
                            got += 1;
                        }
                    }
                }
                got
            })
            .unwrap();
    assert_eq!(replies, 100, "UDP answers through NAT, from the VIP");

    // A backend killed under traffic: failures only while it is being
    // detected, i.e. none among the connections started once its state word
    // was seen to leave up (how long detection takes is the bench's figure).
    s.backends[1].kill().unwrap();
    let out = s.wait_out(1);
    d.wait_event(&["backend DOWN", "backend=b2"]).unwrap();
    load.wait_more(1000, 2 * EVENT_WAIT).unwrap();
    let samples = load.stop();
    let late: Vec<_> = samples.iter().filter(|x| x.result.is_err() && x.start > out).collect();
    assert!(late.is_empty(), "{} connections failed after b2 was down: {:?}", late.len(), late.first());
    assert!(!samples.iter().any(|x| x.start > out && x.result.as_deref() == Ok("b2")), "b2 served after it was down");

    let pins = s.pins();
    assert!(pins.global_counter(GlobalCounter::NatMapped).unwrap() >= 4000);
    assert!(pins.global_counter(GlobalCounter::NatReturned).unwrap() > 0);
    let (ok, flows, _) = veer_tests::daemon::veerctl(&s.cfg, &["flows", "--all", "--limit", "5"]);
    assert!(ok && flows.contains("10.77.0.2:"), "veerctl flows shows the SNAT side: {flows}");
    let rows = veer_tests::daemon::veerctl_json(&s.cfg, &["flows", "--all", "--limit", "1"]);
    let client = rows[0]["client"].as_str().expect("a flow").to_string();
    let vip = s.vip().to_string();
    let (ok, why, _) = veer_tests::daemon::veerctl(&s.cfg, &["which", "tcp", &client, &vip]);
    assert!(ok && why.contains("NAT: the backend sees it from 10.77.0.2:"), "veerctl which: {why}");
    let (ok, stats, _) = veer_tests::daemon::veerctl(&s.cfg, &["stats"]);
    let line = stats.lines().find(|l| l.starts_with("NAT mappings:")).unwrap_or_default().to_string();
    let live: u64 = line.split_whitespace().nth(2).and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!(ok && live > 0, "veerctl stats shows the mappings: {line}");
}

/// A NAT deployment whose web service has b1 on the bridge and rb1 behind
/// a router, both up.
fn routed_deployment(tag: &str) -> (Deployment, veer_tests::topology::RoutedHost, BackendProc, Veerd) {
    let s = nat_deployment(tag);
    let routed = s.tb.routed_backend(&format!("veer-{tag}"), "rb1").unwrap();
    let server =
        BackendProc::start(&routed.host.ns, "rb1", SocketAddr::new([0, 0, 0, 0].into(), PORT), &s.dir).unwrap();
    let text = s
        .config(65537, &[1], |_| String::new())
        .replace("ring_size = 65537", "ring_size = 65537\nforwarding = \"nat\"")
        + &format!("\n[[service.backend]]\nname = \"rb1\"\naddress = \"{}\"\n", routed.host.ip);
    s.write(&text);
    let d = s.start();
    wait_all_up(&d, "web", &["b1", "rb1"]);
    (s, routed, server, d)
}

#[test]
fn a_nat_backend_one_routed_hop_away_is_served() {
    let (s, routed, _server, d) = routed_deployment("hnatrt");
    let load = ClientLoad::start(&s.tb.client.ns, s.vip(), Duration::from_secs(2)).unwrap();
    load.wait_more(500, EVENT_WAIT).unwrap();
    let samples = load.stop();
    let failed = samples.iter().filter(|x| x.result.is_err()).count();
    let routed_served = samples.iter().filter(|x| x.result.as_deref() == Ok("rb1")).count();
    assert_eq!(failed, 0, "connections failed through the router");
    assert!(routed_served > samples.len() / 4, "rb1 served {routed_served} of {}", samples.len());
    drop(d);
    drop(routed);
}

/// Echoes 1 MiB through the VIP from `ns`, on a connection to `backend`
/// (found by trying client ports: consistent hashing), or to any backend.
/// Returns the backend's name and the length of the echo.
fn echo_a_mebibyte(ns: &Netns, vip: SocketAddr, backend: Option<&str>) -> anyhow::Result<(String, usize)> {
    ns.run(|| -> anyhow::Result<(String, usize)> {
        for _ in 0..64 {
            let c = TcpStream::connect_timeout(&vip, EVENT_WAIT)?;
            c.set_read_timeout(Some(Duration::from_secs(10)))?;
            let mut r = BufReader::new(c.try_clone()?);
            (&c).write_all(b"upload\n")?;
            let mut name = String::new();
            r.read_line(&mut name)?;
            let name = name.trim_end().to_string();
            if backend.is_some_and(|b| b != name) {
                continue;
            }
            let line = "x".repeat(1 << 20) + "\n";
            let writer = {
                let c = c.try_clone()?;
                std::thread::spawn(move || (&c).write_all(line.as_bytes()))
            };
            let mut back = String::new();
            r.read_line(&mut back).context("the echo (stalled: a path MTU black hole?)")?;
            writer.join().expect("writer")?;
            return Ok((name, back.trim_end().len()));
        }
        anyhow::bail!("{backend:?} never answered")
    })?
}

/// The route `ns` uses toward `to`, with its MTU if one was learned.
fn route(ns: &Netns, to: &str) -> String {
    ns.exec(&["ip", "-4", "route", "get", to]).unwrap_or_else(|e| format!("{e:#}"))
}

/// Gives the router a 1400-byte route toward its own subnet. A route MTU,
/// not a link MTU: a veth whose ends disagree drops what is too big without
/// an error.
fn narrow_the_routed_hop(routed: &RoutedHost) {
    routed
        .router
        .exec(&["ip", "route", "replace", ROUTED_NET, "dev", "eth1", "src", "10.78.0.1", "mtu", "1400"])
        .unwrap();
}

/// Path MTU discovery through NAT, upload: the router's route to rb1 carries
/// 1400 bytes, rb1's link 1500 (so it offers a 1460-byte MSS). The upload
/// only gets through if the router's "fragmentation needed", sent to veer's
/// SNAT address, is translated and reaches the client.
#[test]
fn a_large_upload_crosses_a_lower_mtu_hop_through_nat() {
    let (s, routed, _server, d) = routed_deployment("hnatmtu");
    narrow_the_routed_hop(&routed);
    let vip = s.vip();
    let (_, echoed) = echo_a_mebibyte(&s.tb.client.ns, vip, Some("rb1")).unwrap_or_else(|e| {
        let (_, stats, _) = veer_tests::daemon::veerctl(&s.cfg, &["stats"]);
        panic!("{e:#}\nveerctl stats:\n{stats}\nclient: {}", route(&s.tb.client.ns, &vip.ip().to_string()))
    });
    assert_eq!(echoed, 1 << 20, "the whole upload echoed");
    let learned = route(&s.tb.client.ns, &vip.ip().to_string());
    assert!(learned.contains("mtu 1400"), "the client learned the path MTU: {learned}");
    assert!(s.pins().global_counter(GlobalCounter::NatIcmpToClient).unwrap() > 0, "errors translated");
    drop(d);
    drop(routed);
}

/// Path MTU discovery through NAT, download: the client sits behind the
/// router, whose route to it carries 1400 bytes. The backends' answers only
/// get through if the router's "fragmentation needed", sent to the VIP, is
/// translated and reaches the backend that sent them.
#[test]
fn a_large_download_crosses_a_lower_mtu_hop_through_nat() {
    let s = nat_deployment("hnatdl");
    let routed = s.tb.routed_backend("veer-hnatdl", "rc1").unwrap();
    // The routed host is a client here: the router sends the VIP to veer.
    routed.router.exec(&["ip", "route", "add", &format!("{VIP}/32"), "via", &LB_IP.to_string()]).unwrap();
    narrow_the_routed_hop(&routed);
    let d = s.start();
    wait_all_up(&d, "web", &["b1", "b2", "b3"]);
    let (name, echoed) = echo_a_mebibyte(&routed.host.ns, s.vip(), None).unwrap_or_else(|e| {
        let (_, stats, _) = veer_tests::daemon::veerctl(&s.cfg, &["stats"]);
        panic!("{e:#}\nveerctl stats:\n{stats}")
    });
    assert_eq!(echoed, 1 << 20, "the whole echo downloaded");
    let b = s.tb.backends.iter().find(|b| b.name == name).expect("a known backend");
    let learned = route(&b.ns, &LB_IP.to_string());
    assert!(learned.contains("mtu 1400"), "{name} learned the path MTU toward the SNAT address: {learned}");
    assert!(s.pins().global_counter(GlobalCounter::IcmpToBackend).unwrap() > 0, "errors translated");
    drop(d);
    drop(routed);
}

#[test]
fn a_nat_service_with_two_snat_addresses_uses_both() {
    let s = Deployment::new("hnat2", 3);
    s.strip_vips();
    // A second address on the balancer's interface: the backends reach it as
    // they reach the first.
    s.tb.lb.ns.exec(&["ip", "addr", "add", "10.77.0.102/24", "dev", "eth0"]).unwrap();
    let text = s.config(65537, &[1, 1, 1], |_| String::new()).replace(
        "ring_size = 65537",
        &format!("ring_size = 65537\nforwarding = \"nat\"\nsnat = [\"{LB_IP}\", \"10.77.0.102\"]"),
    );
    s.write(&text);
    let d = s.start();
    wait_all_up(&d, "web", &["b1", "b2", "b3"]);
    let load = ClientLoad::start(&s.tb.client.ns, s.vip(), Duration::from_secs(2)).unwrap();
    load.wait_more(1000, 2 * EVENT_WAIT).unwrap();
    let samples = load.stop();
    let failed: Vec<_> = samples.iter().filter(|x| x.result.is_err()).collect();
    assert!(failed.is_empty(), "{} of {} failed: {:?}", failed.len(), samples.len(), failed[0].result);
    let rows = veer_tests::daemon::veerctl_json(&s.cfg, &["flows", "--all", "--limit", "100000"]);
    let snat: std::collections::BTreeSet<String> = rows
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["snat"].as_str().and_then(|a| a.rsplit_once(':')).map(|(ip, _)| ip.to_string()))
        .collect();
    assert_eq!(snat, [LB_IP.to_string(), "10.77.0.102".to_string()].into_iter().collect(), "mappings from both");
}

/// A NAT backend with a port of its own: connections to VIP:80 reach its
/// server on 8080 (nothing listens on its port 80), the answers come back
/// from VIP:80, and its checks ask 8080.
#[test]
fn a_nat_backend_with_its_own_port_serves_the_vips_port() {
    let s = Deployment::new("natport", 2);
    s.strip_vips();
    let text = s
        .config(65537, &[1, 1], |i| if i == 0 { "port = 8080\n".into() } else { String::new() })
        .replace("ring_size = 65537", "ring_size = 65537\nforwarding = \"nat\"");
    s.write(&text);
    s.backends[0].kill().unwrap();
    let b1 = &s.tb.backends[0];
    let _moved = BackendProc::start(&b1.ns, "b1-on-8080", SocketAddr::new(b1.ip.into(), 8080), &s.dir).unwrap();
    let d = s.start();
    wait_all_up(&d, "web", &["b1", "b2"]);
    let names: Vec<String> =
        s.tb.client
            .ns
            .run(|| {
                (0..40)
                    .map(|_| veer_tests::server::fetch_name(s.vip(), Duration::from_secs(2)))
                    .collect::<anyhow::Result<Vec<String>>>()
            })
            .unwrap()
            .unwrap_or_else(|e| panic!("a connection through the VIP failed: {e:#}"));
    assert!(names.iter().any(|n| n == "b1-on-8080"), "b1's share reaches its own port: {names:?}");
    assert!(names.iter().all(|n| n == "b1-on-8080" || n == "b2"), "{names:?}");
}
