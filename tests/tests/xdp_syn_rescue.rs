//! The dataplane's half of the NAT SYN rescue, through the real XDP
//! program (BPF_PROG_TEST_RUN): a sent SYN is watched until its SYN-ACK
//! comes back, and the refusal veerd makes up for one left unanswered
//! resends the client's SYN to another backend, counted as a rescue. Needs
//! root.

use std::net::SocketAddr;

use veer::dataplane::{flow_key, rescue::refusal_frame, Protocol};
use veer_abi::{GlobalCounter, NAT_F_RESCUED, SERVICE_F_PASSIVE};
use veer_tests::{frame, lab::NatLab, seen::inspect};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_REDIRECT: u32 = 4;

fn rescue(tag: &str, v6: bool) {
    let lab = NatLab::with_flags(tag, v6, Protocol::Tcp, 3, SERVICE_F_PASSIVE);
    let client = SocketAddr::new(lab.client, 40000);
    let (action, out) = lab.run(&frame::tcp_segment(client, lab.vip, 0x02, 1000, 0, &frame::SYN_OPTIONS));
    assert_eq!(action, XDP_REDIRECT, "{tag}");
    let first = inspect(&out);
    let key = flow_key(client, lab.vip, Protocol::Tcp);
    let pending = lab.dp.pending_syns().unwrap();
    assert_eq!(pending.len(), 1, "{tag}: the SYN is watched");
    let (k, p) = pending[0];
    assert_eq!(k, key);
    assert_eq!((p.seq, p.answered_ns), (1000, 0), "{tag}: unanswered, with the client's sequence number");
    assert_eq!(veer::dataplane::from_abi(&p.key.backend), first.dst.ip(), "{tag}: toward its backend");
    assert_eq!(p.key.snat_port, first.src.port());

    // veerd's made-up refusal: the SYN goes to another backend, as the
    // client sent it, and the first is suspect for no answer.
    let (action, resent) = lab.run(&refusal_frame(&p));
    assert_eq!(action, XDP_REDIRECT, "{tag}: the rescue is sent on");
    let second = inspect(&resent);
    assert!(second.checksums_ok, "{tag}");
    assert_ne!(second.dst.ip(), first.dst.ip(), "{tag}: to another backend");
    assert_eq!(lab.counter(GlobalCounter::SynRescued), 1);
    assert_eq!(lab.counter(GlobalCounter::PassiveRefused), 0, "{tag}: no refusal counted");
    assert_eq!(lab.counter(GlobalCounter::PassiveSynRetransmit), 1, "{tag}: suspect for no answer");

    // The new backend answers: watched until then, answered now.
    let pending = lab.dp.pending_syns().unwrap();
    let (_, p2) = pending.iter().find(|(k, _)| *k == key).copied().unwrap();
    assert_eq!(veer::dataplane::from_abi(&p2.key.backend), second.dst.ip(), "{tag}: watched toward the new backend");
    assert_eq!(p2.answered_ns, 0);
    let syn_ack = frame::tcp_segment(second.dst, second.src, 0x12, 5000, 1001, &[2, 4, 5, 180]);
    assert_eq!(lab.run(&syn_ack).0, XDP_REDIRECT, "{tag}: the new backend's SYN-ACK goes to the client");
    let pending = lab.dp.pending_syns().unwrap();
    let (_, p3) = pending.iter().find(|(k, _)| *k == key).copied().unwrap();
    assert!(p3.answered_ns >= p3.sent_ns && p3.answered_ns != 0, "{tag}: its answer's time kept for the round trip");

    // A rescue that comes after the answer is dropped: the client's
    // connection is not refused, its flow not marked closed.
    assert_eq!(lab.run(&refusal_frame(&p2)).0, XDP_DROP, "{tag}: a late rescue goes nowhere");
    assert_eq!(lab.counter(GlobalCounter::DropStaleRescue), 1);
    assert_eq!(lab.counter(GlobalCounter::SynRescued), 1);
    // It leaves no mark: the backend's retransmitted SYN-ACK (its first
    // one, or the client's ACK, lost) still reaches the client.
    assert_eq!(lab.run(&syn_ack).0, XDP_REDIRECT, "{tag}: a late rescue diverts no later SYN-ACK");
    assert_eq!(lab.counter(GlobalCounter::NatAnswerMoved), 0, "{tag}");

    // The first backend's late SYN-ACK finds no mapping: not the client's.
    let late = frame::tcp_segment(first.dst, first.src, 0x12, 7000, 1001, &[2, 4, 5, 180]);
    assert_ne!(lab.run(&late).0, XDP_REDIRECT, "{tag}: a late answer of the first backend does not reach the client");
}

#[test]
fn ipv4_an_unanswered_syn_is_rescued_to_another_backend() {
    rescue("rsc4", false);
}

#[test]
fn ipv6_an_unanswered_syn_is_rescued_to_another_backend() {
    rescue("rsc6", true);
}

/// A rescue and the first backend's SYN-ACK crossing on two CPUs: the
/// rescue has marked the mapping (its one atomic instruction) and its NAT
/// program has not yet released it when the SYN-ACK comes. The SYN-ACK is
/// then the local stack's (whose RST ends the backend's half-open side),
/// not the client's: the client would otherwise take the first backend's
/// SYN-ACK and send its data to the second, which resets it.
fn crossing(tag: &str, v6: bool) {
    let mut lab = NatLab::with_flags(tag, v6, Protocol::Tcp, 3, SERVICE_F_PASSIVE);
    let client = SocketAddr::new(lab.client, 40001);
    let (action, out) = lab.run(&frame::tcp_segment(client, lab.vip, 0x02, 1000, 0, &frame::SYN_OPTIONS));
    assert_eq!(action, XDP_REDIRECT, "{tag}");
    let first = inspect(&out);
    let key = flow_key(client, lab.vip, Protocol::Tcp);
    assert!(lab.dp.edit_nat_mapping(&key, |m| m.flags |= NAT_F_RESCUED).unwrap(), "{tag}: a mapping");
    let answer = frame::tcp_segment(first.dst, first.src, 0x12, 5000, 1001, &[2, 4, 5, 180]);
    assert_eq!(lab.run(&answer).0, XDP_PASS, "{tag}: the SYN-ACK of a rescued flow is not sent to the client");
    assert_eq!(lab.counter(GlobalCounter::NatAnswerMoved), 1, "{tag}");
    let pending = lab.dp.pending_syns().unwrap();
    let (_, p) = pending.iter().find(|(k, _)| *k == key).copied().unwrap();
    assert_eq!(p.answered_ns, 0, "{tag}: not taken for the backend's round trip");
}

#[test]
fn ipv4_a_syn_ack_crossing_a_rescue_does_not_reach_the_client() {
    crossing("rsx4", false);
}

#[test]
fn ipv6_a_syn_ack_crossing_a_rescue_does_not_reach_the_client() {
    crossing("rsx6", true);
}
