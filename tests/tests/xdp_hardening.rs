//! The dataplane under hostile or unlucky input, through the real XDP
//! program (BPF_PROG_TEST_RUN): SYN floods, reused backend ids, ICMP errors
//! about VIP flows, source MACs. Needs root.

use std::net::{IpAddr, SocketAddr};

use veer::dataplane::{flow_key, MapReader, Protocol};
use veer_abi::{Backend, BackendState, GlobalCounter, Scheduler};
use veer_tests::{
    frame::{self, L4},
    lab::{backend_mac, Lab, XDP_DROP, XDP_PASS, XDP_TX},
};

/// Opens `n` connections (SYN, then the handshake's ACK) and returns each
/// client port with its backend.
fn establish(lab: &Lab, ports: std::ops::Range<u16>) -> Vec<(u16, u32)> {
    ports
        .map(|p| {
            let b = lab.send(&lab.syn(p)).1.expect("SYN forwarded");
            assert_eq!(lab.send(&lab.ack(p)).1, Some(b), "the ACK follows its SYN");
            (p, b)
        })
        .collect()
}

/// 10x as many spoofed SYNs as there are established flows, from random
/// sources, more than the connection table holds.
fn flood(lab: &Lab, n: usize) {
    let vip = lab.vip_addr();
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..n {
        let src = SocketAddr::new(IpAddr::from(rng.u32(..).to_be_bytes()), rng.u16(1024..));
        lab.dp.test_run(&frame::tcp_syn(src, vip), 1).expect("test run");
    }
}

fn assert_all_kept(lab: &Lab, flows: &[(u16, u32)], what: &str) {
    let moved: Vec<_> = flows.iter().filter(|(p, b)| lab.send(&lab.ack(*p)).1 != Some(*b)).map(|(p, _)| *p).collect();
    assert!(moved.is_empty(), "{what}: {} of {} established flows moved: ports {moved:?}", moved.len(), flows.len());
}

const ESTABLISHED: u16 = 1000;
const CONN_TABLE: u32 = 4096;

fn flood_lab(scheduler: Scheduler) -> Lab {
    Lab::with_tables("10.0.0.100", Protocol::Tcp, scheduler, &[1, 1, 1], CONN_TABLE, 1024)
}

#[test]
fn a_syn_flood_does_not_move_established_round_robin_flows() {
    let lab = flood_lab(Scheduler::RoundRobin);
    let flows = establish(&lab, 20000..20000 + ESTABLISHED);
    flood(&lab, 10 * ESTABLISHED as usize);
    assert!(lab.counter(GlobalCounter::NewFlowInserted) >= 10 * ESTABLISHED as u64);
    assert_all_kept(&lab, &flows, "round robin after a SYN flood");
    let usage = lab.dp.table_usage().unwrap();
    assert_eq!(usage.conns_evicted, 0, "{usage:?}");
    assert_eq!(usage.conns, ESTABLISHED as u64, "only the established flows hold connection-table entries");
}

#[test]
fn a_syn_flood_after_a_ring_change_does_not_move_established_maglev_flows() {
    let mut lab = flood_lab(Scheduler::Maglev);
    let flows = establish(&lab, 20000..20000 + ESTABLISHED);
    // A fourth backend joins: about a quarter of the flows now hash to it,
    // so any of those that lost its entry would move.
    let mut members: Vec<_> = (0..3).map(|i| Lab::backend(i, 1).1).collect();
    let (b, m) = Lab::backend(3, 1);
    lab.dp.set_backend(3, &b).unwrap();
    members.push(m);
    lab.dp.publish_pool(&lab.key, 65537, &members).unwrap();
    flood(&lab, 10 * ESTABLISHED as usize);
    assert_all_kept(&lab, &flows, "Maglev after a ring change and a SYN flood");
}

#[test]
fn a_syn_flood_does_not_move_flows_of_a_draining_backend() {
    let mut lab = flood_lab(Scheduler::Maglev);
    let flows = establish(&lab, 20000..20000 + ESTABLISHED);
    lab.dp.set_backend_state(0, BackendState::Draining).unwrap();
    flood(&lab, 10 * ESTABLISHED as usize);
    assert!(flows.iter().any(|(_, b)| *b == 0), "some flows were on the drained backend");
    assert_all_kept(&lab, &flows, "draining backend after a SYN flood");
}

#[test]
fn a_retransmitted_syn_keeps_its_backend() {
    let mut lab = Lab::new("10.0.0.100", Protocol::Tcp, Scheduler::RoundRobin, &[1, 1, 1]);
    let first = lab.send(&lab.syn(4000)).1.unwrap();
    // Other connections advance the round-robin cursor meanwhile.
    for p in 4001..4005 {
        lab.send(&lab.syn(p));
    }
    assert_eq!(lab.send(&lab.syn(4000)).1, Some(first), "the retransmission must reach the same backend");
    // Unless that backend can no longer take new flows.
    lab.dp.set_backend_state(first, BackendState::Down).unwrap();
    let again = lab.send(&lab.syn(4000)).1.unwrap();
    assert_ne!(again, first);
}

#[test]
fn a_flow_never_follows_a_reused_backend_id_into_another_service() {
    let mut lab = Lab::new("10.0.0.100", Protocol::Tcp, Scheduler::Maglev, &[1, 1, 1]);
    let flows = establish(&lab, 3000..3020);
    let (_, a) = flows[0];
    // Backend `a` is removed, and its id handed to a backend of service 2.
    let other = Backend { mac: [0x02, 0xee, 0, 0, 0, 0xee], service: 2, ..Lab::backend(a, 1).0 };
    lab.dp.set_backend(a, &other).unwrap();
    for (p, b) in &flows {
        let (action, to, _) = lab.send(&lab.ack(*p));
        assert_eq!(action, XDP_TX);
        let to = to.expect("sent to one of service 1's backends");
        if *b == a {
            assert_ne!(to, a, "port {p}: a flow of service 1 followed id {a} into service 2");
        } else {
            assert_eq!(to, *b, "port {p}: flows on other backends stay");
        }
    }
}

#[test]
fn an_ipv6_packet_with_an_ipv4_mapped_address_is_no_ipv4_flow() {
    let lab = Lab::new("10.0.0.100", Protocol::Tcp, Scheduler::Maglev, &[1, 1]);
    let before = lab.counter(GlobalCounter::DropMalformed);
    // To the IPv4 VIP in its mapped form: veer's own key for that service.
    let mapped_vip: SocketAddr = "[::ffff:10.0.0.100]:80".parse().unwrap();
    let syn = frame::tcp_syn("[2001:db8::7]:40000".parse().unwrap(), mapped_vip);
    assert_eq!(lab.send(&syn).0, XDP_DROP, "an IPv6 SYN to the mapped VIP");
    assert_eq!(lab.counter(GlobalCounter::DropMalformed), before + 1);
    // From a mapped client, posing as an IPv4 client's established flow.
    let b = lab.send(&lab.syn(40000)).1.expect("the IPv4 SYN is forwarded");
    assert_eq!(lab.send(&lab.ack(40000)).1, Some(b));
    let posing = frame::packet("[::ffff:192.0.2.7]:40000".parse().unwrap(), mapped_vip, L4::Tcp(0x10), &[0; 8]);
    assert_eq!(lab.send(&posing).0, XDP_DROP, "an IPv6 ACK from and to mapped addresses");
    // A mapped address that is no VIP's is the kernel's, as any other.
    let other = frame::tcp_syn("[2001:db8::7]:40000".parse().unwrap(), "[::ffff:10.9.9.9]:80".parse().unwrap());
    assert_eq!(lab.send(&other).0, XDP_PASS);
}

#[test]
fn xdp_tx_sends_from_the_interface_mac() {
    let mut lab = Lab::new("10.0.0.100", Protocol::Tcp, Scheduler::Maglev, &[1]);
    let iface_mac = [0x02, 0x1f, 0, 0, 0, 0x42];
    let b = Backend { src_mac: iface_mac, ..Lab::backend(0, 1).0 };
    lab.dp.set_backend(0, &b).unwrap();
    // Sent to a MAC that is not the interface's (e.g. a virtual router MAC).
    let mut syn = lab.syn(5000);
    syn[..6].copy_from_slice(&[0x00, 0x00, 0x5e, 0x00, 0x01, 0x01]);
    let out = lab.dp.test_run(&syn, 1).unwrap();
    assert_eq!(out.action, XDP_TX);
    assert_eq!(out.frame[6..12], iface_mac, "source MAC must be the interface's own");
    assert_eq!(out.frame[..6], backend_mac(0));
}

#[test]
fn a_frame_to_a_group_address_is_never_sent_from_it() {
    // The interface's own MAC unknown (0): the frame's destination stands in,
    // unless it is a broadcast or multicast address.
    let lab = Lab::new("10.0.0.100", Protocol::Tcp, Scheduler::Maglev, &[1]);
    let mut syn = lab.syn(5001);
    let unicast = [0x02, 0x1f, 0, 0, 0, 0x43];
    syn[..6].copy_from_slice(&unicast);
    let out = lab.dp.test_run(&syn, 1).unwrap();
    assert_eq!((out.action, &out.frame[6..12]), (XDP_TX, &unicast[..]), "from the MAC it was sent to");
    for group in [[0xff; 6], [0x01, 0x00, 0x5e, 0x00, 0x00, 0x01], [0x33, 0x33, 0, 0, 0, 1]] {
        let mut syn = lab.syn(5002);
        syn[..6].copy_from_slice(&group);
        assert_eq!(lab.dp.test_run(&syn, 1).unwrap().action, XDP_DROP, "sent to {group:02x?}");
    }
}

/// The backend's reply to client port `port`, as a router on the way back quotes it.
fn reply(lab: &Lab, port: u16) -> Vec<u8> {
    frame::packet(lab.vip_addr(), lab.client(port), L4::Tcp(0x10), &[0; 32])
}

fn router(lab: &Lab) -> IpAddr {
    if lab.vip.is_ipv4() {
        "192.0.2.254".parse().unwrap()
    } else {
        "2001:db8::fe".parse().unwrap()
    }
}

fn icmp_errors_reach_the_flows_backend(vip: &str, quote_len: usize) {
    let lab = Lab::new(vip, Protocol::Tcp, Scheduler::Maglev, &[1, 1, 1, 1]);
    let flows = establish(&lab, 6000..6040);
    for (p, b) in &flows {
        let msg = frame::icmp_error(router(&lab), lab.vip, &reply(&lab, *p), quote_len);
        for _ in 0..10 {
            let (action, to, out) = lab.send(&msg);
            assert_eq!(action, XDP_TX, "port {p}");
            assert_eq!(to, Some(*b), "port {p}: the ICMP error must reach the flow's backend");
            assert_eq!(out[12..], msg[12..], "only the Ethernet header changes");
        }
    }
    assert_eq!(lab.counter(GlobalCounter::IcmpToBackend), 10 * flows.len() as u64);
    // A flow the tables do not hold: the backend its first packet would get,
    // and no entry is created for it.
    let msg = frame::icmp_error(router(&lab), lab.vip, &reply(&lab, 7000), quote_len);
    let to = lab.send(&msg).1;
    let key = flow_key(lab.client(7000), lab.vip_addr(), Protocol::Tcp);
    assert_eq!(lab.dp.flow(&key).unwrap(), None, "an ICMP error never creates a flow");
    assert_eq!(lab.dp.new_flow(&key).unwrap(), None, "an ICMP error never creates a flow");
    assert_eq!(lab.send(&lab.syn(7000)).1, to, "same backend as the flow's first packet");
}

#[test]
fn ipv4_frag_needed_reaches_the_flows_backend() {
    icmp_errors_reach_the_flows_backend("10.0.0.100", 28);
}

#[test]
fn ipv6_packet_too_big_reaches_the_flows_backend() {
    icmp_errors_reach_the_flows_backend("2001:db8::100", 48);
}

#[test]
fn other_icmp_to_a_vip_is_the_kernels() {
    for vip in ["10.0.0.100", "2001:db8::100"] {
        let lab = Lab::new(vip, Protocol::Tcp, Scheduler::Maglev, &[1, 1]);
        let echo = frame::echo_request(router(&lab), lab.vip);
        // An error about a packet the VIP did not send (another source).
        let other = if lab.vip.is_ipv4() { "10.0.0.99:80" } else { "[2001:db8::99]:80" };
        let foreign = frame::packet(other.parse().unwrap(), lab.client(1), L4::Tcp(0x10), &[0; 8]);
        let foreign = frame::icmp_error(router(&lab), lab.vip, &foreign, 64);
        for f in [echo, foreign] {
            let out = lab.dp.test_run(&f, 1).unwrap();
            assert_eq!((out.action, &out.frame), (XDP_PASS, &f), "{vip}: passed untouched");
        }
        assert_eq!(lab.counter(GlobalCounter::IcmpToBackend), 0);
    }
}

#[test]
fn an_icmp_error_for_an_unknown_round_robin_flow_is_dropped() {
    let lab = Lab::new("10.0.0.100", Protocol::Tcp, Scheduler::RoundRobin, &[1, 1]);
    let msg = frame::icmp_error(router(&lab), lab.vip, &reply(&lab, 8000), 28);
    assert_eq!(lab.send(&msg).0, XDP_DROP, "round robin cannot recompute a flow's backend");
    assert_eq!(lab.counter(GlobalCounter::DropIcmpNoFlow), 1);
    // Once the flow exists, its errors reach it.
    let b = establish(&lab, 8000..8001)[0].1;
    assert_eq!(lab.send(&msg).1, Some(b));
}
