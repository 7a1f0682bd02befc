//! Spoofed SYNs on the 5-tuples of live connections, through the real XDP
//! program (BPF_PROG_TEST_RUN). Such a SYN goes to the connection's own
//! backend, whose TCP answers it with a challenge ACK (RFC 5961), and takes
//! nothing from the flow: not its backend after a ring change (DSR), not
//! its NAT mapping (not even after a spoofed RST). After the connection's
//! close (DSR: the client's FIN; NAT: both sides'), a SYN on the same
//! 5-tuple opens a new connection as before. Needs root.

use std::net::SocketAddr;

use veer::dataplane::{MapReader, Protocol};
use veer_abi::{GlobalCounter, Scheduler};
use veer_tests::{
    frame::{
        self,
        flags::{ACK, FIN_ACK, RST, SYN, SYN_ACK},
        tcp_segment, L4, SYN_OPTIONS,
    },
    lab::{Lab, NatLab},
    seen::inspect,
};

const XDP_REDIRECT: u32 = 4;

#[test]
fn a_spoofed_syn_on_a_live_dsr_flow_keeps_it_on_its_backend_after_a_ring_change() {
    let mut lab = Lab::new("10.0.0.100", Protocol::Tcp, Scheduler::Maglev, &[1, 1, 1]);
    let ports: Vec<u16> = (30000..30200).collect();
    let mut first = Vec::new();
    for &p in &ports {
        let b = lab.send(&lab.syn(p)).1.expect("SYN sent to a backend");
        assert_eq!(lab.send(&lab.ack(p)).1, Some(b), "port {p}: the ACK follows its SYN");
        first.push(b);
    }
    // A fourth backend: about a quarter of the ring moves to it.
    let mut members = Vec::new();
    for id in 0..4 {
        let (b, m) = Lab::backend(id, 1);
        lab.dp.set_backend(id, &b).unwrap();
        members.push(m);
    }
    lab.dp.publish_pool(&lab.key, 65537, &members).unwrap();

    for (&p, &b) in ports.iter().zip(&first) {
        let spoofed = frame::tcp_segment(lab.client(p), lab.vip_addr(), SYN, 424_242, 0, &SYN_OPTIONS);
        assert_eq!(lab.send(&spoofed).1, Some(b), "port {p}: the SYN goes to the connection's backend");
        assert_eq!(lab.send(&lab.ack(p)).1, Some(b), "port {p}: the connection keeps its backend");
    }
    assert_eq!(lab.counter(GlobalCounter::SynOnLive), ports.len() as u64);

    // After its FIN, a SYN on the same 5-tuple is a new connection, placed
    // by the new ring.
    let mut moved = 0;
    for (&p, &b) in ports.iter().zip(&first) {
        lab.send(&frame::packet(lab.client(p), lab.vip_addr(), L4::Tcp(FIN_ACK), b""));
        let now = lab.send(&lab.syn(p)).1.expect("SYN sent to a backend");
        moved += usize::from(now == 3);
        assert!(now == 3 || now == b, "port {p}: to its ring's backend, not {now}");
    }
    assert!(moved > 0, "some connection of {} opens on the new backend", ports.len());
    assert_eq!(lab.counter(GlobalCounter::ConnReused), ports.len() as u64);
}

#[test]
fn a_spoofed_syn_on_a_live_nat_flow_keeps_its_mapping() {
    let mut lab = NatLab::new("atksyn", false, Protocol::Tcp, 3);
    let client = SocketAddr::new(lab.client, 40000);
    let (_, out) = lab.run(&tcp_segment(client, lab.vip, SYN, 100, 0, &SYN_OPTIONS));
    let syn = inspect(&out);
    lab.run(&tcp_segment(syn.dst, syn.src, SYN_ACK, 5000, 101, &[2, 4, 5, 180]));
    lab.run(&tcp_segment(client, lab.vip, ACK, 101, 5001, &[]));

    let (action, out) = lab.run(&tcp_segment(client, lab.vip, SYN, 777_777, 0, &SYN_OPTIONS));
    let spoofed = inspect(&out);
    assert_eq!(action, XDP_REDIRECT);
    assert_eq!((spoofed.src, spoofed.dst), (syn.src, syn.dst), "through the flow's own mapping");
    assert_eq!(lab.dp.nat_mappings().unwrap().len(), 1, "the mapping is kept, no other made");
    assert_eq!(lab.counter(GlobalCounter::SynOnLive), 1);
    // The backend's challenge ACK, and its data, still reach the client.
    let (action, out) = lab.run(&tcp_segment(syn.dst, syn.src, ACK, 5001, 101, &[]));
    assert_eq!((action, inspect(&out).dst), (XDP_REDIRECT, client), "the answer goes back");

    // A spoofed RST first changes nothing: only the backend's FIN or RST
    // (with the client's) ends a NAT connection for a SYN.
    lab.run(&tcp_segment(client, lab.vip, RST, 31_337, 0, &[]));
    let (_, out) = lab.run(&tcp_segment(client, lab.vip, SYN, 888_888, 0, &SYN_OPTIONS));
    assert_eq!((inspect(&out).src, inspect(&out).dst), (syn.src, syn.dst), "after a spoofed RST too");
    assert_eq!(lab.dp.nat_mappings().unwrap().len(), 1);
    assert_eq!(lab.counter(GlobalCounter::SynOnLive), 2);

    // A client that reset its connection and reuses the port a second later
    // opens a new connection, scheduled afresh (passive redispatch and all).
    let other = SocketAddr::new(lab.client, 40002);
    let (_, out) = lab.run(&tcp_segment(other, lab.vip, SYN, 100, 0, &SYN_OPTIONS));
    let first = inspect(&out);
    lab.run(&tcp_segment(first.dst, first.src, SYN_ACK, 5000, 101, &[2, 4, 5, 180]));
    lab.run(&tcp_segment(other, lab.vip, ACK, 101, 5001, &[]));
    lab.run(&tcp_segment(other, lab.vip, RST, 101, 0, &[]));
    let key = veer::dataplane::flow_key(other, lab.vip, Protocol::Tcp);
    assert!(lab.dp.age_conn(&key, std::time::Duration::from_secs(2)).unwrap());
    lab.run(&tcp_segment(other, lab.vip, SYN, 7_000, 0, &SYN_OPTIONS));
    assert_eq!(lab.counter(GlobalCounter::ConnReused), 1, "a new connection");
    assert_eq!(lab.counter(GlobalCounter::SynOnLive), 2);

    // After both sides' FINs, a SYN is a new connection with its own mapping.
    lab.run(&tcp_segment(client, lab.vip, FIN_ACK, 101, 5001, &[]));
    lab.run(&tcp_segment(syn.dst, syn.src, FIN_ACK, 5001, 102, &[]));
    let (action, out) = lab.run(&tcp_segment(client, lab.vip, SYN, 900_000, 0, &SYN_OPTIONS));
    assert_eq!(action, XDP_REDIRECT);
    assert_eq!(lab.counter(GlobalCounter::ConnReused), 2);
    let mappings = lab.dp.nat_mappings().unwrap();
    assert_eq!(mappings.len(), 2, "the old mapping went with its connection: {mappings:?}");
    assert_eq!(inspect(&out).src.ip(), lab.snat);
}

/// A service that turns from DSR to NAT (a reload): a SYN on the 5-tuple of
/// one of its DSR flows finds no NAT mapping there, so it opens a new NAT
/// connection, not one through a mapping that does not exist.
#[test]
fn a_flow_from_before_a_service_turned_to_nat_is_no_live_nat_flow() {
    let mut lab = NatLab::new("atkturn", false, Protocol::Tcp, 3);
    let key = veer::dataplane::service_key(lab.vip.ip(), 80, Protocol::Tcp);
    let spec = |flags| veer::dataplane::ServiceSpec {
        id: 1,
        scheduler: Scheduler::Maglev,
        flags,
        fallback_backend: veer_abi::NO_BACKEND,
        persistence_s: 0,
    };
    lab.dp.upsert_service(&key, spec(0)).unwrap();
    let client = SocketAddr::new(lab.client, 40001);
    lab.run(&tcp_segment(client, lab.vip, SYN, 100, 0, &SYN_OPTIONS));
    lab.run(&tcp_segment(client, lab.vip, ACK, 101, 5001, &[]));
    lab.run(&tcp_segment(client, lab.vip, FIN_ACK, 101, 5001, &[]));
    assert!(lab.dp.nat_mappings().unwrap().is_empty(), "DSR maps nothing");

    lab.dp.upsert_service(&key, spec(veer_abi::SERVICE_F_NAT)).unwrap();
    let (action, out) = lab.run(&tcp_segment(client, lab.vip, SYN, 900, 0, &SYN_OPTIONS));
    assert_eq!(action, XDP_REDIRECT);
    let seen = inspect(&out);
    assert_eq!(seen.src.ip(), lab.snat, "from the SNAT address");
    assert_eq!(lab.dp.nat_mappings().unwrap().len(), 1, "a new NAT connection, with its mapping");
    assert_eq!(lab.counter(GlobalCounter::SynOnLive), 0);
}
