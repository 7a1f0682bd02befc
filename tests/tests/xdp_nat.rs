//! NAT through the real XDP program (BPF_PROG_TEST_RUN), both directions,
//! IPv4 and IPv6, TCP and UDP. Every rewritten frame's checksums are checked
//! by a full recomputation here, independent of the program's incremental
//! updates. The runs happen inside a namespace whose routes and neighbours
//! the program's `bpf_fib_lookup` consults. Needs root.

use std::net::{IpAddr, SocketAddr};

use veer::dataplane::{flow_key, MapReader, Protocol};
use veer_abi::{csum::checksum, BackendState, GlobalCounter};
use veer_tests::{
    frame::{self, L4},
    lab::{nat_backend_mac as backend_mac, NatLab, NAT_PORTS as PORTS, NAT_SRC_MAC as DUMMY_MAC},
    seen::{inspect, with_checksums, Seen},
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_REDIRECT: u32 = 4;

/// A TCP handshake through veer as a real client and backend make it: the
/// client's SYN, the backend's SYN-ACK, the client's ACK of it (which
/// promotes the flow). What the SYN became (SNAT -> backend).
fn handshake(lab: &NatLab, c: SocketAddr) -> Seen {
    let (_, syn) = lab.run(&frame::tcp_segment(c, lab.vip, 0x02, 100, 0, &frame::SYN_OPTIONS));
    let seen = inspect(&syn);
    lab.run(&frame::tcp_segment(seen.dst, seen.src, 0x12, 5000, 101, &[2, 4, 5, 180]));
    lab.run(&frame::tcp_segment(c, lab.vip, 0x10, 101, 5001, &[]));
    seen
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
    let ttl_at = if v6 { 14 + 7 } else { 14 + 8 };
    assert_eq!(out[ttl_at], 63, "{tag}: one hop taken off the TTL (hop limit)");

    // The backend answers its SNAT peer; veer turns it back toward the client.
    let answer = with_checksums(frame::packet(seen.dst, seen.src, l4(proto, 0x12), b"hello, client"));
    let (action, back) = lab.run(&answer);
    assert_eq!(action, XDP_REDIRECT, "{tag}: answer forwarded");
    let back_seen = inspect(&back);
    assert!(back_seen.checksums_ok, "{tag}: return checksums");
    assert_eq!((back_seen.src, back_seen.dst), (lab.vip, client), "{tag}: from the VIP to the client");
    assert_eq!(back[..6], frame::CLIENT_MAC);
    assert_eq!(back[ttl_at], 63, "{tag}: one hop taken off on the way back too");
    let mut last_hop = answer.clone();
    last_hop[ttl_at] = 1;
    let last_hop = if v6 { last_hop } else { frame::with_ipv4_checksum(last_hop) };
    assert_eq!(lab.run(&last_hop).0, XDP_DROP, "{tag}: a packet whose TTL runs out is not routed");
    assert_eq!(lab.counter(GlobalCounter::DropTtlExpired), 1);
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
    let before = handshake(&lab, c);
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

/// The parts of a translated ICMP error: outer addresses, the quoted
/// packet's, and whether every checksum holds (outer IPv4 header, ICMP,
/// quoted IPv4 header, quoted segment), each recomputed from scratch.
struct SeenError {
    from: IpAddr,
    to: IpAddr,
    quoted: Seen,
    icmp_ok: bool,
}

fn inspect_error(f: &[u8]) -> SeenError {
    let v4 = f[12..14] == [0x08, 0x00];
    let (from, to, msg_at, outer_ok) = if v4 {
        let from = IpAddr::from(<[u8; 4]>::try_from(&f[26..30]).unwrap());
        let to = IpAddr::from(<[u8; 4]>::try_from(&f[30..34]).unwrap());
        (from, to, 34, checksum(&f[14..34]) == 0)
    } else {
        let from = IpAddr::from(<[u8; 16]>::try_from(&f[22..38]).unwrap());
        let to = IpAddr::from(<[u8; 16]>::try_from(&f[38..54]).unwrap());
        (from, to, 54, true)
    };
    let msg = &f[msg_at..];
    let icmp_ok = if v4 {
        checksum(msg) == 0
    } else {
        let mut all = f[22..54].to_vec();
        all.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        all.extend_from_slice(&[0, 0, 0, 58]);
        all.extend_from_slice(msg);
        checksum(&all) == 0
    };
    // The quote (whole here) read as a frame of its own.
    let mut quote = f[..14].to_vec();
    quote.extend_from_slice(&msg[8..]);
    SeenError { from, to, quoted: inspect(&quote), icmp_ok: outer_ok && icmp_ok }
}

/// A router on the client's side of a [`NatLab`], which reports ICMP errors.
fn router(v6: bool) -> IpAddr {
    if v6 { "2001:db8::fe" } else { "192.0.2.254" }.parse().unwrap()
}

/// Path MTU discovery through NAT: a router's "too big" about a packet
/// toward a backend reaches the client quoting what the client sent, and one
/// about an answer toward the client reaches the backend quoting what the
/// backend sent.
fn icmp_errors_translated(tag: &str, v6: bool, proto: Protocol) {
    let lab = NatLab::new(tag, v6, proto, 3);
    let router = router(v6);
    let client = SocketAddr::new(lab.client, 40000);
    let req = with_checksums(frame::packet(client, lab.vip, l4(proto, 0x02), b"hello, backend"));
    let (_, out) = lab.run(&req);
    let mapped = inspect(&out);

    // Toward the backend: the error reaches the SNAT address.
    let err = frame::icmp_error(router, mapped.src.ip(), &out, out.len() - 14);
    let (action, fwd) = lab.run(&err);
    assert_eq!(action, XDP_REDIRECT, "{tag}: the error about the forward packet goes on");
    let seen = inspect_error(&fwd);
    assert_eq!((seen.from, seen.to), (router, lab.client), "{tag}: from the router to the client");
    assert_eq!((seen.quoted.src, seen.quoted.dst), (client, lab.vip), "{tag}: quoting what the client sent");
    assert!(seen.icmp_ok && seen.quoted.checksums_ok, "{tag}: checksums of the error to the client");
    assert_eq!(fwd[..6], frame::CLIENT_MAC, "{tag}: next hop toward the client");
    assert_eq!(lab.counter(GlobalCounter::NatIcmpToClient), 1, "{tag}: counted toward the client");
    assert_eq!(lab.counter(GlobalCounter::IcmpToBackend), 0, "{tag}");

    // Toward the client: the error reaches the VIP.
    let answer = with_checksums(frame::packet(mapped.dst, mapped.src, l4(proto, 0x12), b"hello, client"));
    let (_, back) = lab.run(&answer);
    let err = frame::icmp_error(router, lab.vip.ip(), &back, back.len() - 14);
    let (action, rev) = lab.run(&err);
    assert_eq!(action, XDP_REDIRECT, "{tag}: the error about the answer goes on");
    let seen = inspect_error(&rev);
    assert_eq!((seen.from, seen.to), (router, mapped.dst.ip()), "{tag}: from the router to the backend");
    assert_eq!((seen.quoted.src, seen.quoted.dst), (mapped.dst, mapped.src), "{tag}: quoting what the backend sent");
    assert!(seen.icmp_ok && seen.quoted.checksums_ok, "{tag}: checksums of the error to the backend");
    let b = lab.backends.iter().position(|a| *a == mapped.dst.ip()).unwrap();
    assert_eq!(rev[..6], backend_mac(b), "{tag}: next hop toward the backend");
    assert_eq!(lab.counter(GlobalCounter::IcmpToBackend), 1, "{tag}: counted toward the backend");
    assert_eq!(lab.counter(GlobalCounter::NatIcmpToClient), 1, "{tag}");
}

#[test]
fn ipv4_tcp_icmp_errors_are_translated() {
    icmp_errors_translated("i4t", false, Protocol::Tcp);
}

#[test]
fn ipv4_udp_icmp_errors_are_translated() {
    icmp_errors_translated("i4u", false, Protocol::Udp);
}

#[test]
fn ipv6_tcp_icmp_errors_are_translated() {
    icmp_errors_translated("i6t", true, Protocol::Tcp);
}

#[test]
fn ipv6_udp_icmp_errors_are_translated() {
    icmp_errors_translated("i6u", true, Protocol::Udp);
}

#[test]
fn an_icmp_error_about_no_nat_flow_is_passed_untouched() {
    let lab = NatLab::new("imiss", false, Protocol::Tcp, 1);
    let router = router(false);
    let stray =
        with_checksums(frame::tcp_syn(SocketAddr::new(lab.snat, PORTS.0 + 2), SocketAddr::new(lab.backends[0], 8080)));
    let to_snat = frame::icmp_error(router, lab.snat, &stray, 28);
    assert_eq!(lab.run(&to_snat), (XDP_PASS, to_snat.clone()), "no mapping: the local stack's");
    let reply = with_checksums(frame::tcp_syn(lab.vip, SocketAddr::new(lab.client, 44000)));
    let to_vip = frame::icmp_error(router, lab.vip.ip(), &reply, 28);
    assert_eq!(lab.run(&to_vip), (XDP_PASS, to_vip.clone()), "no flow: the local stack's");
}

#[test]
fn an_icmp_error_with_a_short_quote_is_translated_too() {
    // Routers may quote only the IPv4 header and 8 bytes: no TCP checksum to fix.
    let lab = NatLab::new("ishort", false, Protocol::Tcp, 1);
    let router = router(false);
    let client = SocketAddr::new(lab.client, 40001);
    let (_, out) = lab.run(&with_checksums(frame::tcp_syn(client, lab.vip)));
    let err = frame::icmp_error(router, inspect(&out).src.ip(), &out, 28);
    let (action, fwd) = lab.run(&err);
    assert_eq!(action, XDP_REDIRECT);
    let seen = inspect_error(&fwd);
    assert!(seen.icmp_ok, "outer and ICMP checksums");
    assert_eq!(checksum(&fwd[42..62]), 0, "quoted IPv4 header checksum");
    assert_eq!((seen.to, seen.quoted.src, seen.quoted.dst), (lab.client, client, lab.vip));
}

/// An established NAT flow's packets are found once, by the entry
/// program, and sent on by the NAT program with what it found: to the same
/// backend and SNAT port every time, counted active on that backend until
/// the client's FIN, which ends the count.
#[test]
fn an_established_nat_flow_keeps_its_mapping_and_its_fin_ends_its_active_count() {
    let lab = NatLab::new("estab", false, Protocol::Tcp, 3);
    let c = SocketAddr::new(lab.client, 46000);
    let mapped = handshake(&lab, c);
    let b = lab.backends.iter().position(|a| *a == mapped.dst.ip()).expect("a backend") as u32;
    assert_eq!(lab.dp.active_flows(b).unwrap(), 1, "established: counted on its backend");
    for seq in [101u32, 200, 300] {
        let (action, out) = lab.run(&frame::tcp_data(c, lab.vip, (0x18, seq, 5001), &[], b"data"));
        assert_eq!(action, XDP_REDIRECT);
        let seen = inspect(&out);
        assert!(seen.checksums_ok);
        assert_eq!((seen.src, seen.dst), (mapped.src, mapped.dst), "the same SNAT endpoint and backend");
    }
    let (action, _) = lab.run(&frame::tcp_segment(c, lab.vip, 0x11, 304, 5001, &[]));
    assert_eq!(action, XDP_REDIRECT, "the FIN goes on to the backend");
    let key = flow_key(c, lab.vip, Protocol::Tcp);
    assert_ne!(lab.dp.flow(&key).unwrap().expect("a table entry").flags & veer_abi::CONN_F_CLOSING, 0);
    assert_eq!(lab.dp.active_flows(b).unwrap(), 0, "closed: no longer active");
}

#[test]
fn a_backends_fin_marks_the_nat_flow_closing() {
    // So its mapping expires after TIME_WAIT, as after the client's FIN.
    let lab = NatLab::new("bfin", false, Protocol::Tcp, 1);
    let c = SocketAddr::new(lab.client, 45000);
    let mapped = handshake(&lab, c);
    let key = flow_key(c, lab.vip, Protocol::Tcp);
    let flags = |lab: &NatLab| lab.dp.flow(&key).unwrap().expect("a table entry").flags;
    assert_eq!(flags(&lab) & veer_abi::CONN_F_CLOSING, 0, "open");
    let fin = with_checksums(frame::packet(mapped.dst, mapped.src, L4::Tcp(0x11), b""));
    assert_eq!(lab.run(&fin).0, XDP_REDIRECT, "the FIN goes on to the client");
    assert_ne!(flags(&lab) & veer_abi::CONN_F_CLOSING, 0, "closing after the backend's FIN");
}

#[test]
fn an_icmp_error_about_a_flow_whose_backend_is_down_stays_local() {
    // The flow is leaving that backend (as its own packets would find), so
    // its errors are not sent there.
    let mut lab = NatLab::new("idown", false, Protocol::Tcp, 2);
    let router = router(false);
    let c = SocketAddr::new(lab.client, 46000);
    let (_, out) = lab.run(&with_checksums(frame::tcp_syn(c, lab.vip)));
    lab.run(&with_checksums(frame::packet(c, lab.vip, L4::Tcp(0x10), b"")));
    let mapped = inspect(&out);
    let answer = with_checksums(frame::packet(mapped.dst, mapped.src, L4::Tcp(0x12), b""));
    let (_, back) = lab.run(&answer);
    let err = frame::icmp_error(router, lab.vip.ip(), &back, back.len() - 14);
    assert_eq!(lab.run(&err).0, XDP_REDIRECT, "sent on while the backend is up");
    let b = lab.backends.iter().position(|a| *a == mapped.dst.ip()).unwrap() as u32;
    lab.dp.set_backend_state(b, BackendState::Down).unwrap();
    assert_eq!(lab.run(&err), (XDP_PASS, err.clone()), "passed untouched once it is down");
}

/// An IPv4 TCP lab whose one backend has two SNAT addresses; the second.
fn two_snat_addresses(tag: &str) -> (NatLab, IpAddr) {
    let mut lab = NatLab::new(tag, false, Protocol::Tcp, 1);
    let second: IpAddr = "10.1.0.2".parse().unwrap();
    lab.dp.set_snat_addr(1, second).unwrap();
    let b = veer_abi::Backend { snat_count: 2, ..lab.dp.backend(0).unwrap() };
    lab.dp.set_backend(0, &b).unwrap();
    (lab, second)
}

#[test]
fn a_backend_with_two_snat_addresses_takes_twice_the_flows_and_answers_reach_both() {
    let (lab, second) = two_snat_addresses("snat2");
    let span = (PORTS.1 - PORTS.0 + 1) as usize;
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..2 * span {
        let c = SocketAddr::new(lab.client, 41000 + i as u16);
        let (action, out) = lab.run(&with_checksums(frame::tcp_syn(c, lab.vip)));
        assert_eq!(action, XDP_REDIRECT, "flow {i} of {}", 2 * span);
        let s = inspect(&out);
        assert!(s.checksums_ok);
        assert!(seen.insert(s.src), "SNAT endpoint {} reused", s.src);
        // The backend's answer to either address goes back to its client.
        let answer = with_checksums(frame::packet(s.dst, s.src, L4::Tcp(0x12), b""));
        let (action, back) = lab.run(&answer);
        assert_eq!(action, XDP_REDIRECT);
        assert_eq!(inspect(&back).dst, c, "answer to {} back to its client", s.src);
    }
    let addrs: std::collections::BTreeSet<IpAddr> = seen.iter().map(|s| s.ip()).collect();
    assert_eq!(addrs, [lab.snat, second].into_iter().collect(), "both SNAT addresses used");
    // Both address' ports are used up now.
    let late = SocketAddr::new(lab.client, 42000);
    assert_eq!(lab.run(&with_checksums(frame::tcp_syn(late, lab.vip))).0, XDP_DROP);
}

#[test]
fn with_no_backend_up_a_nat_flow_goes_to_the_sorry_backend_and_comes_back() {
    let mut lab = NatLab::new("sorry", false, Protocol::Tcp, 2);
    // Backend 1 is the sorry backend: not in the ring, the fallback.
    let key = veer::dataplane::service_key(lab.vip.ip(), 80, Protocol::Tcp);
    let spec = veer::dataplane::ServiceSpec {
        id: 1,
        scheduler: veer_abi::Scheduler::Maglev,
        flags: veer_abi::SERVICE_F_NAT,
        fallback_backend: 1,
        persistence_s: 0,
    };
    lab.dp.upsert_service(&key, spec).unwrap();
    let only0 = [veer::ring::RingMember { id: 0, identity: veer::ring::identity_of(lab.backends[0]), weight: 1 }];
    lab.dp.publish_pool(&key, 65537, &only0).unwrap();
    lab.dp.set_backend_state(0, BackendState::Down).unwrap();
    let c = SocketAddr::new(lab.client, 44000);
    let (action, out) = lab.run(&with_checksums(frame::tcp_syn(c, lab.vip)));
    assert_eq!(action, XDP_REDIRECT);
    let s = inspect(&out);
    assert!(s.checksums_ok);
    assert_eq!(s.dst.ip(), lab.backends[1], "to the sorry backend, through NAT");
    assert_eq!(s.src.ip(), lab.snat);
    assert_eq!(lab.counter(GlobalCounter::FallbackBackend), 1);
    let answer = with_checksums(frame::packet(s.dst, s.src, L4::Tcp(0x12), b""));
    let (action, back) = lab.run(&answer);
    assert_eq!(action, XDP_REDIRECT);
    assert_eq!((inspect(&back).src, inspect(&back).dst), (lab.vip, c), "its answer back to the client");
    // The flow stays there (pinned: a NAT flow cannot change backends).
    let (_, again) = lab.run(&with_checksums(frame::packet(c, lab.vip, L4::Tcp(0x10), b"x")));
    assert_eq!(inspect(&again).dst, s.dst);
}

/// A spoofed SYN+ACK pair must not reach the connection table, where it
/// could evict established flows: only a client that saw the backend's
/// SYN-ACK (its ACK acknowledges the backend's sequence number) promotes a
/// NAT flow. Other packets are still forwarded, half-open.
#[test]
fn only_an_ack_of_the_backends_syn_ack_promotes_a_nat_flow() {
    let lab = NatLab::new("proof", false, Protocol::Tcp, 2);
    let client = SocketAddr::new(lab.client, 40100);
    let key = flow_key(client, lab.vip, Protocol::Tcp);
    let (_, syn) = lab.run(&frame::tcp_segment(client, lab.vip, 0x02, 1000, 0, &frame::SYN_OPTIONS));
    let seen = inspect(&syn);
    let (backend, snat) = (seen.dst, seen.src);

    // A spoofer's ACK, sent blind right after its SYN.
    let (action, out) = lab.run(&frame::tcp_segment(client, lab.vip, 0x10, 1001, 12345, &[]));
    assert_eq!((action, inspect(&out).dst), (XDP_REDIRECT, backend), "forwarded on its half-open entry");
    assert!(lab.dp.flow(&key).unwrap().is_none(), "a blind ACK promotes nothing");
    assert!(lab.dp.new_flow(&key).unwrap().is_some(), "the flow stays half-open");
    assert_eq!(lab.counter(GlobalCounter::NatUnprovenAck), 1);

    // The backend answers; a guess still fails, the real acknowledgment promotes.
    let (action, back) = lab.run(&frame::tcp_segment(backend, snat, 0x12, 7000, 1001, &[2, 4, 5, 180]));
    assert_eq!((action, inspect(&back).dst), (XDP_REDIRECT, client), "the SYN-ACK reaches the client");
    lab.run(&frame::tcp_segment(client, lab.vip, 0x10, 1001, 7002, &[]));
    assert!(lab.dp.flow(&key).unwrap().is_none(), "an acknowledgment off by one promotes nothing");
    assert_eq!(lab.counter(GlobalCounter::NatUnprovenAck), 2);
    let (action, out) = lab.run(&frame::tcp_segment(client, lab.vip, 0x10, 1001, 7001, &[]));
    assert_eq!((action, inspect(&out).dst), (XDP_REDIRECT, backend));
    assert!(lab.dp.flow(&key).unwrap().is_some(), "the client's ACK of the SYN-ACK promotes the flow");
    assert_eq!(lab.counter(GlobalCounter::NatUnprovenAck), 2);
}

/// Established flows from both of a backend's SNAT addresses, interleaved,
/// each leave by its own source's route (a policy rule sends the second
/// address's packets through a router), though each CPU keeps one next hop
/// per backend; and a changed neighbour reaches both within the ticks an
/// answer is kept.
#[test]
fn established_flows_from_two_snat_addresses_follow_their_routes() {
    use std::time::Duration;
    let (lab, second) = two_snat_addresses("nexthop");
    let neigh = |addr: &str, mac: [u8; 6]| {
        let mac = veer::config::fmt_mac(&mac);
        lab.ns.exec(&["ip", "neigh", "replace", addr, "lladdr", &mac, "dev", "d0", "nud", "permanent"]).unwrap();
    };
    let (router, router_mac) = ("192.0.2.99", [0x02, 0xaa, 0, 0, 0, 0x99]);
    neigh(router, router_mac);
    lab.ns.exec(&["ip", "route", "add", "10.1.0.0/24", "via", router, "dev", "d0", "table", "100"]).unwrap();
    lab.ns.exec(&["ip", "rule", "add", "from", "10.1.0.2", "lookup", "100"]).unwrap();
    // One established flow from each SNAT address.
    let mut flows = std::collections::BTreeMap::new();
    for port in 41000..41200 {
        let c = SocketAddr::new(lab.client, port);
        let seen = handshake(&lab, c);
        flows.entry(seen.src.ip()).or_insert((c, seen.src));
        if flows.len() == 2 {
            break;
        }
    }
    assert_eq!(flows.len(), 2, "200 flows all took one SNAT address: {flows:?}");
    // A client's data segment: (SNAT endpoint, next hop's MAC, source MAC) it left with.
    let sent = |c: SocketAddr| {
        let data = with_checksums(frame::tcp_data(c, lab.vip, (0x10, 101, 5001), &[], b"data"));
        let (action, out) = lab.run(&data);
        assert_eq!(action, XDP_REDIRECT, "{c}'s data forwarded out of d0");
        let s = inspect(&out);
        assert!(s.checksums_ok, "{c}: checksums");
        assert_eq!(s.dst, SocketAddr::new(lab.backends[0], 8080), "{c}: to its backend");
        (s.src, <[u8; 6]>::try_from(&out[..6]).unwrap(), <[u8; 6]>::try_from(&out[6..12]).unwrap())
    };
    let hop = |snat: &SocketAddr, direct: [u8; 6], routed: [u8; 6]| if snat.ip() == second { routed } else { direct };
    for round in 0..3 {
        for (c, snat) in flows.values() {
            let want = (*snat, hop(snat, backend_mac(0), router_mac), DUMMY_MAC);
            assert_eq!(sent(*c), want, "round {round}: {c}'s segment");
        }
    }
    let (moved, router_moved) = ([0x02, 0xbe, 0xee, 0, 0, 0], [0x02, 0xaa, 0xee, 0, 0, 0x99]);
    neigh(&lab.backends[0].to_string(), moved);
    neigh(router, router_moved);
    // Each CPU keeps its answer at most 5 ticks (50 ms at HZ=100, the
    // least a kernel has): four times that later, every CPU has asked again.
    std::thread::sleep(Duration::from_millis(200));
    for (c, snat) in flows.values() {
        for _ in 0..10 {
            let want = (*snat, hop(snat, moved, router_moved), DUMMY_MAC);
            assert_eq!(sent(*c), want, "{c}'s segment 200 ms after the change");
        }
    }
}

/// An established NAT flow's client packets are rewritten and sent by the
/// entry program itself: with no NAT program in the tail-call table they
/// still reach their backend, while a new flow's SYN, which only the NAT
/// program places, is dropped for the empty slot.
#[test]
fn an_established_nat_flow_is_sent_by_the_entry_program() {
    let mut lab = NatLab::new("entrysend", false, Protocol::Tcp, 3);
    let c = SocketAddr::new(lab.client, 40000);
    let seen = handshake(&lab, c);
    lab.dp.clear_jump(veer_abi::JUMP_NAT).unwrap();
    let data = with_checksums(frame::tcp_data(c, lab.vip, (0x10, 101, 5001), &[], b"data"));
    let (action, out) = lab.run(&data);
    assert_eq!(action, XDP_REDIRECT, "the established flow's segment forwarded");
    let s = inspect(&out);
    assert!(s.checksums_ok);
    assert_eq!((s.src, s.dst), (seen.src, seen.dst), "on the flow's mapping");
    let b = lab.backends.iter().position(|a| *a == s.dst.ip()).expect("to a backend");
    assert_eq!(out[..6], backend_mac(b));
    let (action, _) = lab.run(&with_checksums(frame::tcp_syn(SocketAddr::new(lab.client, 40001), lab.vip)));
    assert_eq!(action, XDP_DROP, "a new flow needs the NAT program");
    assert_eq!(lab.counter(GlobalCounter::DropTailCall), 1);
}

/// A live NAT flow keeps its client's persistence fresh, as a DSR flow
/// does: a packet of it after the idle clock moved renews the client's
/// entry, so the client's next flow, 59 s after that packet and 118 s
/// after its first flow's SYN, still goes to its backend (60 s
/// persistence), on a 5-tuple the ring gives to another backend.
#[test]
fn a_live_nat_flow_keeps_its_clients_persistence_fresh() {
    use std::time::Duration;
    use veer::dataplane::{service_key, ServiceSpec};
    let mut lab = NatLab::new("persist", false, Protocol::Tcp, 3);
    let key = service_key(lab.vip.ip(), 80, Protocol::Tcp);
    let spec = ServiceSpec {
        id: 1,
        scheduler: veer_abi::Scheduler::Maglev,
        flags: veer_abi::SERVICE_F_NAT,
        fallback_backend: veer_abi::NO_BACKEND,
        persistence_s: 60,
    };
    lab.dp.upsert_service(&key, spec).unwrap();
    let c = SocketAddr::new(lab.client, 40000);
    let first = handshake(&lab, c).dst.ip();
    let ring = lab.dp.ring(&key).unwrap();
    let on_ring = |p: u16| {
        let k = flow_key(SocketAddr::new(lab.client, p), lab.vip, Protocol::Tcp);
        lab.backends[ring[(veer_abi::hash::flow_hash(&k) % ring.len() as u32) as usize] as usize]
    };
    let day59 = Duration::from_secs(59);
    assert!(lab.dp.age_affinity(1, lab.client, day59).unwrap(), "the client's entry");
    assert!(lab.dp.age_conn(&flow_key(c, lab.vip, Protocol::Tcp), Duration::from_secs(1)).unwrap());
    let data = with_checksums(frame::tcp_data(c, lab.vip, (0x10, 101, 5001), &[], b"data"));
    assert_eq!(lab.run(&data).0, XDP_REDIRECT, "the flow's segment forwarded");
    assert!(lab.dp.age_affinity(1, lab.client, day59).unwrap());
    let port = (41000..41200).find(|&p| on_ring(p) != first).unwrap();
    let (action, out) = lab.run(&with_checksums(frame::tcp_syn(SocketAddr::new(lab.client, port), lab.vip)));
    assert_eq!(action, XDP_REDIRECT);
    assert_eq!(inspect(&out).dst.ip(), first, "the client's next flow stays on its backend");
}
