//! NAT through the real XDP program (BPF_PROG_TEST_RUN), both directions,
//! IPv4 and IPv6, TCP and UDP. Every rewritten frame's checksums are checked
//! by a full recomputation here, independent of the program's incremental
//! updates. The runs happen inside a namespace whose routes and neighbours
//! the program's `bpf_fib_lookup` consults. Needs root.

use std::net::{IpAddr, SocketAddr};

use veer::dataplane::{flow_key, to_abi, Dataplane, DataplaneOptions, MapReader, Protocol, ServiceSpec, XDP_OBJECT};
use veer_abi::{csum::checksum, Backend, BackendState, GlobalCounter, NatConfig, Scheduler, NO_BACKEND};
use veer_tests::{
    frame::{self, L4},
    netns::Netns,
    require_root,
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_REDIRECT: u32 = 4;
const PORTS: (u16, u16) = (20000, 20003);
const DUMMY_MAC: [u8; 6] = [0x02, 0xd0, 0, 0, 0, 0x01];

fn backend_mac(i: usize) -> [u8; 6] {
    [0x02, 0xbe, 0, 0, 0, i as u8]
}

/// A dataplane with one NAT service, inside a namespace whose interface
/// `d0` routes to the backends and the client.
struct NatLab {
    ns: Netns,
    dp: Dataplane,
    vip: SocketAddr,
    client: IpAddr,
    snat: IpAddr,
    backends: Vec<IpAddr>,
}

impl NatLab {
    fn new(tag: &str, v6: bool, proto: Protocol, n: usize) -> Self {
        require_root();
        let ns = Netns::create(&format!("veer-natlab-{tag}")).expect("netns");
        let (vip, client, snat): (IpAddr, IpAddr, IpAddr) = if v6 {
            ("2001:db8:100::1".parse().unwrap(), "2001:db8::7".parse().unwrap(), "2001:db8:1::1".parse().unwrap())
        } else {
            ("10.0.0.100".parse().unwrap(), "192.0.2.7".parse().unwrap(), "10.1.0.1".parse().unwrap())
        };
        let backends: Vec<IpAddr> = (0..n)
            .map(|i| if v6 { format!("2001:db8:1::{}", i + 10) } else { format!("10.1.0.{}", i + 10) }.parse().unwrap())
            .collect();
        let mac = veer::config::fmt_mac(&DUMMY_MAC);
        // No dummy interfaces in this kernel: a veth pair, both ends in the namespace.
        ns.exec(&["ip", "link", "add", "d0", "address", &mac, "type", "veth", "peer", "name", "d0p"]).unwrap();
        ns.exec(&["ip", "link", "set", "d0p", "up"]).unwrap();
        ns.exec(&["ip", "link", "set", "d0", "up"]).unwrap();
        // NAT routes like a router: the kernel's FIB lookup wants forwarding on.
        ns.sysctl("net.ipv4.ip_forward", "1").unwrap();
        ns.sysctl("net.ipv6.conf.all.forwarding", "1").unwrap();
        let (plen, cnet) = if v6 { ("64", "2001:db8::1/64") } else { ("24", "192.0.2.1/24") };
        let fam = if v6 { "-6" } else { "-4" };
        ns.exec(&["ip", fam, "addr", "add", &format!("{snat}/{plen}"), "dev", "d0", "nodad"]).unwrap();
        ns.exec(&["ip", fam, "addr", "add", cnet, "dev", "d0", "nodad"]).unwrap();
        let neigh = |addr: IpAddr, m: [u8; 6]| {
            let m = veer::config::fmt_mac(&m);
            ns.exec(&["ip", "neigh", "replace", &addr.to_string(), "lladdr", &m, "dev", "d0", "nud", "permanent"])
                .unwrap();
        };
        for (i, b) in backends.iter().enumerate() {
            neigh(*b, backend_mac(i));
        }
        neigh(client, frame::CLIENT_MAC);
        let opts = DataplaneOptions {
            conn_table_size: 4096,
            new_flow_table_size: 1024,
            max_services: 4,
            ..Default::default()
        };
        let mut dp = Dataplane::load_with(XDP_OBJECT, &opts).expect("load");
        let key = veer::dataplane::service_key(vip, 80, proto);
        let spec = ServiceSpec {
            id: 1,
            scheduler: Scheduler::Maglev,
            flags: veer_abi::SERVICE_F_NAT,
            fallback_backend: NO_BACKEND,
        };
        dp.upsert_service(&key, spec).unwrap();
        let mut members = Vec::new();
        for (i, addr) in backends.iter().enumerate() {
            let b = Backend {
                addr: to_abi(*addr),
                mac: [0; 6],
                src_mac: [0; 6],
                ifindex: 0,
                weight: 1,
                state: BackendState::Up as u32,
                service: 1,
                port: 8080,
                snat: 0,
            };
            dp.set_backend(i as u32, &b).unwrap();
            members.push(veer::ring::RingMember { id: i as u32, identity: veer::ring::identity_of(*addr), weight: 1 });
        }
        dp.publish_pool(&key, 65537, &members).unwrap();
        dp.set_snat_addr(0, snat).unwrap();
        dp.set_nat_config(NatConfig { port_min: PORTS.0, port_max: PORTS.1 }).unwrap();
        let d0 = ns.run(|| veer::net::ifindex("d0")).unwrap().unwrap();
        dp.add_tx_port(d0).unwrap();
        NatLab { ns, dp, vip: SocketAddr::new(vip, 80), client, snat, backends }
    }

    fn run(&self, f: &[u8]) -> (u32, Vec<u8>) {
        let out = self.ns.run(|| self.dp.test_run(f, 1)).unwrap().expect("test run");
        (out.action, out.frame)
    }

    fn counter(&self, c: GlobalCounter) -> u64 {
        self.dp.global_counter(c).unwrap()
    }
}

/// The frame's IP addresses, ports, protocol and L4 offset, and whether both
/// checksums are right, recomputed from scratch.
struct Seen {
    src: SocketAddr,
    dst: SocketAddr,
    checksums_ok: bool,
}

fn inspect(f: &[u8]) -> Seen {
    let v4 = f[12..14] == [0x08, 0x00];
    let (src, dst, proto, l4, l3_ok, pseudo) = if v4 {
        let ihl = (f[14] & 0x0f) as usize * 4;
        let hdr = &f[14..14 + ihl];
        let src = IpAddr::from(<[u8; 4]>::try_from(&f[26..30]).unwrap());
        let dst = IpAddr::from(<[u8; 4]>::try_from(&f[30..34]).unwrap());
        let len = f.len() - 14 - ihl;
        let mut pseudo = f[26..34].to_vec();
        pseudo.extend_from_slice(&[0, f[23]]);
        pseudo.extend_from_slice(&(len as u16).to_be_bytes());
        (src, dst, f[23], 14 + ihl, checksum(hdr) == 0, pseudo)
    } else {
        let src = IpAddr::from(<[u8; 16]>::try_from(&f[22..38]).unwrap());
        let dst = IpAddr::from(<[u8; 16]>::try_from(&f[38..54]).unwrap());
        let len = f.len() - 54;
        let mut pseudo = f[22..54].to_vec();
        pseudo.extend_from_slice(&(len as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, f[20]]);
        (src, dst, f[20], 54, true, pseudo)
    };
    let seg = &f[l4..];
    let l4_ok = {
        let mut all = pseudo.clone();
        all.extend_from_slice(seg);
        // UDP over IPv4 may carry no checksum.
        (proto == 17 && v4 && seg[6..8] == [0, 0]) || checksum(&all) == 0
    };
    Seen {
        src: SocketAddr::new(src, u16::from_be_bytes([seg[0], seg[1]])),
        dst: SocketAddr::new(dst, u16::from_be_bytes([seg[2], seg[3]])),
        checksums_ok: l3_ok && l4_ok,
    }
}

/// A frame with valid checksums (the crafted frames carry a zero L4 checksum).
fn with_checksums(mut f: Vec<u8>) -> Vec<u8> {
    let v4 = f[12..14] == [0x08, 0x00];
    let (l4, proto) = if v4 { (14 + (f[14] & 0x0f) as usize * 4, f[23]) } else { (54, f[20]) };
    let at = l4 + if proto == 6 { 16 } else { 6 };
    f[at..at + 2].copy_from_slice(&[0, 0]);
    let mut pseudo = if v4 {
        let mut p = f[26..34].to_vec();
        p.extend_from_slice(&[0, proto]);
        p.extend_from_slice(&((f.len() - l4) as u16).to_be_bytes());
        p
    } else {
        let mut p = f[22..54].to_vec();
        p.extend_from_slice(&((f.len() - l4) as u32).to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, proto]);
        p
    };
    pseudo.extend_from_slice(&f[l4..]);
    let mut c = checksum(&pseudo);
    if c == 0 && proto == 17 {
        c = 0xffff;
    }
    f[at..at + 2].copy_from_slice(&c.to_be_bytes());
    f
}

fn l4(proto: Protocol, flags: u8) -> L4 {
    match proto {
        Protocol::Tcp => L4::Tcp(flags),
        Protocol::Udp => L4::Udp,
    }
}

fn both_directions(tag: &str, v6: bool, proto: Protocol) {
    let lab = NatLab::new(tag, v6, proto, 3);
    let client = SocketAddr::new(lab.client, 40000);
    let req = with_checksums(frame::packet(client, lab.vip, l4(proto, 0x02), b"hello, backend"));
    let (action, out) = lab.run(&req);
    let counters: Vec<_> = lab.dp.global_counters().unwrap().into_iter().filter(|(_, v)| *v > 0).collect();
    assert_eq!(action, XDP_REDIRECT, "{tag}: forwarded out of d0; counters {counters:?}");
    let seen = inspect(&out);
    assert!(seen.checksums_ok, "{tag}: forward checksums");
    assert_eq!(seen.src.ip(), lab.snat, "{tag}: from the SNAT address");
    assert!((PORTS.0..=PORTS.1).contains(&seen.src.port()), "{tag}: SNAT port {}", seen.src.port());
    let b = lab.backends.iter().position(|a| *a == seen.dst.ip()).expect("to a backend");
    assert_eq!(seen.dst.port(), 8080, "{tag}: to the backend's port");
    assert_eq!(out[..6], backend_mac(b), "{tag}: next hop from the neighbour table");
    assert_eq!(out[6..12], DUMMY_MAC, "{tag}: from the egress interface's MAC");
    assert_eq!(out[out.len() - 14..], *b"hello, backend", "{tag}: payload untouched");

    // The backend answers its SNAT peer; veer turns it back toward the client.
    let answer = with_checksums(frame::packet(seen.dst, seen.src, l4(proto, 0x12), b"hello, client"));
    let (action, back) = lab.run(&answer);
    assert_eq!(action, XDP_REDIRECT, "{tag}: answer forwarded");
    let back_seen = inspect(&back);
    assert!(back_seen.checksums_ok, "{tag}: return checksums");
    assert_eq!((back_seen.src, back_seen.dst), (lab.vip, client), "{tag}: from the VIP to the client");
    assert_eq!(back[..6], frame::CLIENT_MAC);
    assert_eq!(lab.counter(GlobalCounter::NatReturned), 1);

    // The flow keeps its backend and SNAT port.
    let (_, again) = lab.run(&with_checksums(frame::packet(client, lab.vip, l4(proto, 0x10), b"more")));
    assert_eq!((inspect(&again).src, inspect(&again).dst), (seen.src, seen.dst), "{tag}: same mapping");
}

#[test]
fn ipv4_tcp_both_directions() {
    both_directions("v4t", false, Protocol::Tcp);
}

#[test]
fn ipv4_udp_both_directions() {
    both_directions("v4u", false, Protocol::Udp);
}

#[test]
fn ipv6_tcp_both_directions() {
    both_directions("v6t", true, Protocol::Tcp);
}

#[test]
fn ipv6_udp_both_directions() {
    both_directions("v6u", true, Protocol::Udp);
}

#[test]
fn snat_ports_never_collide_and_exhaustion_drops_only_new_flows() {
    let lab = NatLab::new("exh", false, Protocol::Tcp, 1);
    let mut ports = std::collections::BTreeSet::new();
    let span = PORTS.1 - PORTS.0 + 1;
    for i in 0..span {
        let c = SocketAddr::new(lab.client, 41000 + i);
        let (action, out) = lab.run(&with_checksums(frame::tcp_syn(c, lab.vip)));
        assert_eq!(action, XDP_REDIRECT);
        assert!(ports.insert(inspect(&out).src.port()), "SNAT port reused for flow {i}");
    }
    assert_eq!(lab.dp.nat_mappings().unwrap().len(), span as usize);
    // The pool is used up: a new flow is dropped and counted...
    let late = SocketAddr::new(lab.client, 42000);
    assert_eq!(lab.run(&with_checksums(frame::tcp_syn(late, lab.vip))).0, XDP_DROP);
    assert_eq!(lab.counter(GlobalCounter::DropNatExhausted), 1);
    // ...while the flows that have a mapping go on.
    let c = SocketAddr::new(lab.client, 41000);
    let (action, _) = lab.run(&with_checksums(frame::packet(c, lab.vip, L4::Tcp(0x10), b"x")));
    assert_eq!(action, XDP_REDIRECT);
}

#[test]
fn an_answer_with_no_mapping_is_passed_untouched() {
    let lab = NatLab::new("miss", false, Protocol::Tcp, 1);
    let stray = with_checksums(frame::packet(
        SocketAddr::new(lab.backends[0], 8080),
        SocketAddr::new(lab.snat, PORTS.0 + 1),
        L4::Tcp(0x12),
        b"",
    ));
    let (action, out) = lab.run(&stray);
    assert_eq!((action, &out), (XDP_PASS, &stray));
    assert_eq!(lab.counter(GlobalCounter::NatReturnMiss), 1);
}

#[test]
fn a_nat_flow_of_a_backend_set_down_moves_with_a_new_mapping() {
    let mut lab = NatLab::new("down", false, Protocol::Tcp, 3);
    let c = SocketAddr::new(lab.client, 43000);
    let (_, first) = lab.run(&with_checksums(frame::tcp_syn(c, lab.vip)));
    lab.run(&with_checksums(frame::packet(c, lab.vip, L4::Tcp(0x10), b"")));
    let before = inspect(&first);
    let b = lab.backends.iter().position(|a| *a == before.dst.ip()).unwrap() as u32;
    lab.dp.set_backend_state(b, BackendState::Down).unwrap();
    let (action, moved) = lab.run(&with_checksums(frame::packet(c, lab.vip, L4::Tcp(0x10), b"")));
    assert_eq!(action, XDP_REDIRECT);
    let after = inspect(&moved);
    assert!(after.checksums_ok);
    assert_ne!(after.dst.ip(), before.dst.ip(), "the flow must leave the down backend");
    let entry = lab.dp.flow(&flow_key(c, lab.vip, Protocol::Tcp)).unwrap().expect("entry");
    assert_eq!(entry.nat_port, after.src.port(), "the table holds the new mapping");
}
