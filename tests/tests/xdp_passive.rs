//! Passive failure detection through the real XDP program
//! (BPF_PROG_TEST_RUN): a retransmitted SYN moves to another backend, a NAT
//! backend's RST to a SYN is withheld and the SYN resent elsewhere, and
//! either makes the failing backend suspect, reported once through the
//! ring buffer. Needs root.

use std::net::SocketAddr;

use veer::dataplane::{passive::PassiveEvents, passive::PassiveSignal, MapReader, Protocol};
use veer_abi::{GlobalCounter, PassiveKind, Scheduler, SERVICE_F_PASSIVE};
use veer_tests::{
    frame::{self, SYN_OPTIONS},
    lab::{Lab, NatLab, XDP_TX},
};

const XDP_REDIRECT: u32 = 4;
const TCP_SYN: u8 = 0x02;
const TCP_RST_ACK: u8 = 0x14;
const TCP_SYN_ACK: u8 = 0x12;

fn passive_lab(weights: &[u32]) -> Lab {
    let mut lab = Lab::new("10.0.0.100", Protocol::Tcp, Scheduler::Maglev, weights);
    lab.set_flags(Scheduler::Maglev, SERVICE_F_PASSIVE);
    lab
}

#[test]
fn a_retransmitted_syn_goes_to_another_backend_and_its_first_backend_becomes_suspect() {
    let mut lab = passive_lab(&[1, 1, 1]);
    let mut events = PassiveEvents::take(&mut lab.dp).unwrap();
    let (action, first, _) = lab.send(&lab.syn(40000));
    assert_eq!(action, XDP_TX);
    let first = first.unwrap();
    assert!(!lab.dp.is_suspect(first).unwrap(), "one SYN is no signal");
    // A copy sent at once is a duplicate, not a retransmission: no signal.
    assert_eq!(lab.send(&lab.syn(40000)).1, Some(first), "a duplicate SYN keeps its backend");
    assert!(!lab.dp.is_suspect(first).unwrap(), "a duplicate SYN is no signal");

    lab.syn_retransmission_due(40000);
    let (action, second, _) = lab.send(&lab.syn(40000));
    assert_eq!(action, XDP_TX);
    let second = second.unwrap();
    assert_ne!(second, first, "the retransmission must try another backend");
    assert!(lab.dp.is_suspect(first).unwrap());
    assert_eq!(lab.counter(GlobalCounter::PassiveSynRetransmit), 1);
    assert_eq!(lab.counter(GlobalCounter::Redispatched), 1);
    assert_eq!(events.drain(), vec![PassiveSignal { backend: first, kind: PassiveKind::SynRetransmit }]);

    // The handshake completes on the second backend.
    assert_eq!(lab.send(&lab.ack(40000)).1, Some(second));
    // New connections avoid the suspect while others can take them.
    for port in 41000..41100 {
        let (_, b, _) = lab.send(&lab.syn(port));
        assert_ne!(b, Some(first), "client port {port} went to the suspect backend");
    }
    // veerd clears a suspect whose probe passed: it takes new flows again.
    lab.dp.clear_suspect(first).unwrap();
    assert!(!lab.dp.is_suspect(first).unwrap());
    assert!((42000..42100).any(|p| lab.send(&lab.syn(p)).1 == Some(first)));
}

#[test]
fn without_passive_detection_a_retransmitted_syn_keeps_its_backend() {
    let lab = Lab::new("10.0.0.100", Protocol::Tcp, Scheduler::Maglev, &[1, 1, 1]);
    let (_, first, _) = lab.send(&lab.syn(40000));
    let (_, second, _) = lab.send(&lab.syn(40000));
    assert_eq!(first, second);
    assert!(!lab.dp.is_suspect(first.unwrap()).unwrap());
    assert_eq!(lab.counter(GlobalCounter::PassiveSynRetransmit), 0);
    assert_eq!(lab.counter(GlobalCounter::Redispatched), 0);
}

#[test]
fn a_lone_backend_still_gets_the_retransmission() {
    let mut lab = passive_lab(&[1]);
    let mut events = PassiveEvents::take(&mut lab.dp).unwrap();
    assert_eq!(lab.send(&lab.syn(40000)).1, Some(0));
    lab.syn_retransmission_due(40000);
    assert_eq!(lab.send(&lab.syn(40000)).1, Some(0), "with nowhere else to go, the SYN is not dropped");
    assert!(lab.dp.is_suspect(0).unwrap());
    assert_eq!(lab.send(&lab.syn(40001)).1, Some(0), "a suspect takes new flows when it is the only one");
    // More signals against a suspect are counted, not reported again.
    lab.syn_retransmission_due(40000);
    assert_eq!(lab.send(&lab.syn(40000)).1, Some(0));
    assert_eq!(lab.counter(GlobalCounter::PassiveSynRetransmit), 2);
    assert_eq!(events.drain(), vec![PassiveSignal { backend: 0, kind: PassiveKind::SynRetransmit }]);
}

/// Where a NAT frame goes: (destination address, destination port, source port).
fn dst_of(f: &[u8]) -> (std::net::IpAddr, u16, u16) {
    let v4 = f[12..14] == [0x08, 0x00];
    let (dst, l4): (std::net::IpAddr, usize) = if v4 {
        (<[u8; 4]>::try_from(&f[30..34]).unwrap().into(), 14 + (f[14] & 0x0f) as usize * 4)
    } else {
        (<[u8; 16]>::try_from(&f[38..54]).unwrap().into(), 54)
    };
    (dst, u16::from_be_bytes([f[l4 + 2], f[l4 + 3]]), u16::from_be_bytes([f[l4], f[l4 + 1]]))
}

/// The TCP header of a frame (from its ports on).
fn tcp_of(f: &[u8]) -> &[u8] {
    let l4 = if f[12..14] == [0x08, 0x00] { 14 + (f[14] & 0x0f) as usize * 4 } else { 54 };
    &f[l4..]
}

/// Whether the IP and TCP checksums of a frame hold (recomputed here).
fn checksums_ok(f: &[u8]) -> bool {
    let v4 = f[12..14] == [0x08, 0x00];
    let sum = |d: &[u8]| veer_abi::csum::checksum(d) == 0;
    let seg = tcp_of(f);
    let mut pseudo = if v4 {
        let mut p = f[26..34].to_vec();
        p.extend_from_slice(&[0, 6]);
        p.extend_from_slice(&(seg.len() as u16).to_be_bytes());
        p
    } else {
        let mut p = f[22..54].to_vec();
        p.extend_from_slice(&(seg.len() as u32).to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 6]);
        p
    };
    pseudo.extend_from_slice(seg);
    (!v4 || sum(&f[14..34])) && sum(&pseudo)
}

fn refused_syn_is_resent(tag: &str, v6: bool) {
    let mut lab = NatLab::with_flags(tag, v6, Protocol::Tcp, 3, SERVICE_F_PASSIVE);
    let mut events = PassiveEvents::take(&mut lab.dp).unwrap();
    let client = SocketAddr::new(lab.client, 40000);
    let syn = frame::tcp_segment(client, lab.vip, TCP_SYN, 1000, 0, &SYN_OPTIONS);
    let (action, out) = lab.run(&syn);
    assert_eq!(action, XDP_REDIRECT, "{tag}");
    let (a_addr, _, a_port) = dst_of(&out);
    let a = lab.backends.iter().position(|b| *b == a_addr).unwrap() as u32;

    // Backend A has nothing listening: RST, ACK acknowledging the SYN.
    let rst =
        frame::tcp_segment(SocketAddr::new(a_addr, 8080), SocketAddr::new(lab.snat, a_port), TCP_RST_ACK, 0, 1001, &[]);
    let (action, resent) = lab.run(&rst);
    assert_eq!(action, XDP_REDIRECT, "{tag}: the refusal becomes a SYN to another backend");
    let (b_addr, b_dport, b_port) = dst_of(&resent);
    assert_ne!(b_addr, a_addr, "{tag}: not back to the refusing backend");
    assert!(lab.backends.contains(&b_addr));
    assert_eq!(b_dport, 8080);
    assert!(checksums_ok(&resent), "{tag}: the resent SYN's checksums");
    let tcp = tcp_of(&resent);
    assert_eq!(tcp[13], TCP_SYN, "{tag}: a SYN");
    assert_eq!(u32::from_be_bytes(tcp[4..8].try_into().unwrap()), 1000, "{tag}: the client's sequence number");
    // The client's options, its timestamp put on veer's clock (nat::timestamps).
    assert_eq!((&tcp[20..28], &tcp[32..40]), (&SYN_OPTIONS[..8], &SYN_OPTIONS[12..]), "{tag}: the client's options");
    assert_ne!(tcp[28..32], SYN_OPTIONS[8..12], "{tag}: its TSval shifted");
    assert_eq!(resent.len(), syn.len(), "{tag}: the client's SYN, whole");
    assert!(lab.dp.is_suspect(a).unwrap());
    assert_eq!(lab.counter(GlobalCounter::PassiveRefused), 1);
    assert_eq!(lab.counter(GlobalCounter::Redispatched), 1);
    assert_eq!(events.drain(), vec![PassiveSignal { backend: a, kind: PassiveKind::Refused }]);
    // A's mapping is gone: a late answer from A finds none.
    assert!(lab
        .dp
        .nat_mappings()
        .unwrap()
        .iter()
        .all(|(k, _)| k.snat_port != a_port || k.backend != veer::dataplane::to_abi(a_addr)));

    // New connections avoid the suspect.
    lab.dp.set_nat_config(veer_abi::NatConfig { port_min: 20000, port_max: 29999, ..Default::default() }).unwrap();
    for port in 41000..41060 {
        let c = SocketAddr::new(lab.client, port);
        let (_, out) = lab.run(&frame::tcp_segment(c, lab.vip, TCP_SYN, 1, 0, &SYN_OPTIONS));
        assert_ne!(dst_of(&out).0, a_addr, "{tag}: client port {port} went to the suspect");
    }

    // B accepts: its SYN-ACK reaches the client from the VIP.
    let synack = frame::tcp_segment(
        SocketAddr::new(b_addr, 8080),
        SocketAddr::new(lab.snat, b_port),
        TCP_SYN_ACK,
        7000,
        1001,
        &[],
    );
    let (action, back) = lab.run(&synack);
    assert_eq!(action, XDP_REDIRECT);
    assert_eq!(dst_of(&back), (lab.client, 40000, 80), "{tag}: to the client, from the VIP");
}

#[test]
fn ipv4_a_nat_backends_refusal_is_withheld_and_the_syn_resent_elsewhere() {
    refused_syn_is_resent("rs4", false);
}

#[test]
fn ipv6_a_nat_backends_refusal_is_withheld_and_the_syn_resent_elsewhere() {
    refused_syn_is_resent("rs6", true);
}

#[test]
fn a_rst_that_does_not_acknowledge_the_syn_is_no_signal() {
    let lab = NatLab::with_flags("spoof", false, Protocol::Tcp, 3, SERVICE_F_PASSIVE);
    let client = SocketAddr::new(lab.client, 40000);
    let (_, out) = lab.run(&frame::tcp_segment(client, lab.vip, TCP_SYN, 1000, 0, &SYN_OPTIONS));
    let (a_addr, _, a_port) = dst_of(&out);
    let a = lab.backends.iter().position(|b| *b == a_addr).unwrap() as u32;
    let forged =
        frame::tcp_segment(SocketAddr::new(a_addr, 8080), SocketAddr::new(lab.snat, a_port), TCP_RST_ACK, 0, 5555, &[]);
    let (action, back) = lab.run(&forged);
    assert_eq!(action, XDP_REDIRECT);
    assert_eq!(dst_of(&back), (lab.client, 40000, 80), "passed on to the client, whose stack judges it");
    assert!(!lab.dp.is_suspect(a).unwrap());
    // Nor is the reset of a connection the backend had accepted (its server
    // died with it in the accept queue): it carries the backend's sequence.
    let accepted = frame::tcp_segment(
        SocketAddr::new(a_addr, 8080),
        SocketAddr::new(lab.snat, a_port),
        TCP_RST_ACK,
        7001,
        1001,
        &[],
    );
    assert_eq!(dst_of(&lab.run(&accepted).1), (lab.client, 40000, 80));
    assert!(!lab.dp.is_suspect(a).unwrap());
    assert_eq!(lab.counter(GlobalCounter::PassiveRefused), 0);
    assert_eq!(lab.counter(GlobalCounter::Redispatched), 0);
}

#[test]
fn a_syn_refused_by_every_backend_is_resent_at_most_twice() {
    let lab = NatLab::with_flags("twice", false, Protocol::Tcp, 3, SERVICE_F_PASSIVE);
    let client = SocketAddr::new(lab.client, 40000);
    let (_, mut out) = lab.run(&frame::tcp_segment(client, lab.vip, TCP_SYN, 1000, 0, &SYN_OPTIONS));
    let mut tried = vec![];
    for _ in 0..3 {
        let (addr, _, port) = dst_of(&out);
        tried.push(addr);
        let rst =
            frame::tcp_segment(SocketAddr::new(addr, 8080), SocketAddr::new(lab.snat, port), TCP_RST_ACK, 0, 1001, &[]);
        out = lab.run(&rst).1;
    }
    tried.sort();
    tried.dedup();
    assert_eq!(tried.len(), 3, "each backend tried once: {tried:?}");
    assert_eq!(dst_of(&out), (lab.client, 40000, 80), "the third refusal reaches the client");
    assert_eq!(tcp_of(&out)[13], TCP_RST_ACK);
    assert_eq!(lab.counter(GlobalCounter::PassiveRefused), 2);
}

#[test]
fn without_passive_detection_a_nat_refusal_reaches_the_client() {
    let lab = NatLab::new("nopassive", false, Protocol::Tcp, 3);
    let client = SocketAddr::new(lab.client, 40000);
    let (_, out) = lab.run(&frame::tcp_segment(client, lab.vip, TCP_SYN, 1000, 0, &SYN_OPTIONS));
    let (a_addr, _, a_port) = dst_of(&out);
    let rst =
        frame::tcp_segment(SocketAddr::new(a_addr, 8080), SocketAddr::new(lab.snat, a_port), TCP_RST_ACK, 0, 1001, &[]);
    let (_, back) = lab.run(&rst);
    assert_eq!(dst_of(&back), (lab.client, 40000, 80));
    assert_eq!(lab.counter(GlobalCounter::PassiveRefused), 0);
}

#[test]
fn a_syn_bounced_by_a_dsr_backends_agent_goes_to_another_backend_once() {
    let mut lab = Lab::new("10.0.0.100", Protocol::Tcp, Scheduler::Maglev, &[1, 1, 1]);
    let mut events = PassiveEvents::take(&mut lab.dp).unwrap();
    let (_, first, _) = lab.send(&lab.syn(40000));
    let first = first.unwrap();
    // The agent swaps the MAC addresses: the SYN comes back from `first`.
    let mut bounced = lab.syn(40000);
    bounced[6..12].copy_from_slice(&veer_tests::lab::backend_mac(first));
    let (action, second, _) = lab.send(&bounced);
    assert_eq!(action, XDP_TX);
    let second = second.unwrap();
    assert_ne!(second, first, "a bounced SYN goes elsewhere, passive detection on or off");
    assert!(lab.dp.is_suspect(first).unwrap());
    assert_eq!(lab.counter(GlobalCounter::PassiveBounced), 1);
    assert_eq!(events.drain(), vec![PassiveSignal { backend: first, kind: PassiveKind::Bounced }]);
    // Bounced again, by the second backend: dropped, not passed back and forth.
    bounced[6..12].copy_from_slice(&veer_tests::lab::backend_mac(second));
    let (action, _, _) = lab.send(&bounced);
    assert_eq!(action, veer_tests::lab::XDP_DROP);
    assert_eq!(lab.counter(GlobalCounter::DropBounced), 1);
}

#[test]
fn the_agent_bounces_a_syn_for_a_vip_only_when_no_socket_takes_it() {
    use veer::dataplane::agent::AgentProgram;
    let ns = veer_tests::netns::Netns::create("veer-agentlab").unwrap();
    ns.exec(&["ip", "link", "set", "lo", "up"]).unwrap();
    let vip: std::net::IpAddr = "10.77.1.1".parse().unwrap();
    let client = SocketAddr::new("10.77.0.1".parse().unwrap(), 40000);
    ns.run(|| {
        let agent = AgentProgram::load(&[vip]).unwrap();
        // A server on 0.0.0.0:8080, as most are.
        let _listener = std::net::TcpListener::bind("0.0.0.0:8080").unwrap();
        let syn = |dst: SocketAddr, flags: u8| frame::tcp_segment(client, dst, flags, 1000, 0, &SYN_OPTIONS);
        let served = syn(SocketAddr::new(vip, 8080), TCP_SYN);
        let out = agent.test_run(&served).unwrap();
        assert_eq!((out.action, &out.frame), (veer_tests::lab::XDP_PASS, &served), "a listener takes it");

        let unserved = syn(SocketAddr::new(vip, 8081), TCP_SYN);
        let out = agent.test_run(&unserved).unwrap();
        assert_eq!(out.action, XDP_TX, "nothing listens: back to the balancer");
        assert_eq!(out.frame[..6], unserved[6..12], "to the MAC it came from");
        assert_eq!(out.frame[6..12], unserved[..6]);
        assert_eq!(out.frame[12..], unserved[12..], "the SYN itself untouched");

        let not_vip = syn(SocketAddr::new("10.77.0.12".parse().unwrap(), 8081), TCP_SYN);
        assert_eq!(
            agent.test_run(&not_vip).unwrap().action,
            veer_tests::lab::XDP_PASS,
            "not a VIP: the kernel resets it"
        );
        // Another segment nothing owns is bounced too, for its flow's second
        // chance (see xdp_second_chance.rs); a RST never is.
        let ack = syn(SocketAddr::new(vip, 8081), 0x10);
        assert_eq!(agent.test_run(&ack).unwrap().action, XDP_TX, "no connection owns it");
        let rst = syn(SocketAddr::new(vip, 8081), 0x04);
        assert_eq!(agent.test_run(&rst).unwrap().action, veer_tests::lab::XDP_PASS, "a RST");
    })
    .unwrap();
}

fn udp_unreachable_moves_the_flow(tag: &str, v6: bool) {
    let mut lab = NatLab::with_flags(tag, v6, Protocol::Udp, 3, SERVICE_F_PASSIVE);
    let mut events = PassiveEvents::take(&mut lab.dp).unwrap();
    lab.dp.set_nat_config(veer_abi::NatConfig { port_min: 20000, port_max: 29999, ..Default::default() }).unwrap();
    let client = SocketAddr::new(lab.client, 40000);
    let query = frame::udp(client, lab.vip, b"question");
    let (action, sent) = lab.run(&query);
    assert_eq!(action, XDP_REDIRECT, "{tag}");
    let (a_addr, _, _) = dst_of(&sent);
    let a = lab.backends.iter().position(|b| *b == a_addr).unwrap() as u32;
    // Nothing listens on A: its host answers port unreachable, quoting what veer sent.
    let icmp = frame::port_unreachable(a_addr, lab.snat, &sent);
    let (action, _) = lab.run(&icmp);
    assert_eq!(action, veer_tests::lab::XDP_DROP, "{tag}: withheld from the client");
    assert!(lab.dp.is_suspect(a).unwrap(), "{tag}");
    assert_eq!(lab.counter(GlobalCounter::PassiveUnreachable), 1);
    assert_eq!(events.drain(), vec![PassiveSignal { backend: a, kind: PassiveKind::Unreachable }]);
    assert_eq!(lab.dp.passive_counters(a).unwrap().unreachable, 1);
    // The client asks again on the same flow: another backend answers it.
    let (action, again) = lab.run(&query);
    assert_eq!(action, XDP_REDIRECT);
    assert_ne!(dst_of(&again).0, a_addr, "{tag}: the flow left the unreachable backend");
}

#[test]
fn ipv4_a_nat_backends_port_unreachable_moves_the_udp_flow() {
    udp_unreachable_moves_the_flow("pu4", false);
}

#[test]
fn ipv6_a_nat_backends_port_unreachable_moves_the_udp_flow() {
    udp_unreachable_moves_the_flow("pu6", true);
}

#[test]
fn a_client_that_resets_its_own_attempt_retries_on_the_same_backend_and_port() {
    let mut lab = NatLab::with_flags("creset", false, Protocol::Tcp, 3, SERVICE_F_PASSIVE);
    let client = SocketAddr::new(lab.client, 40000);
    let syn = frame::tcp_segment(client, lab.vip, TCP_SYN, 1000, 0, &SYN_OPTIONS);
    let (_, first) = lab.run(&syn);
    let (a_addr, _, a_port) = dst_of(&first);
    let a = lab.backends.iter().position(|b| *b == a_addr).unwrap() as u32;
    // The backend's answer was a challenge ACK from an old TIME_WAIT: the
    // client resets, which clears that state at the backend.
    let rst = frame::tcp_segment(client, lab.vip, 0x04, 5555, 0, &[]);
    let (action, out) = lab.run(&rst);
    assert_eq!(action, XDP_REDIRECT);
    assert_eq!(dst_of(&out), (a_addr, 8080, a_port), "the RST goes to the backend, on the attempt's mapping");
    // Its next SYN is a fresh try there, not a failure of the backend.
    let (_, again) = lab.run(&syn);
    assert_eq!(dst_of(&again), (a_addr, 8080, a_port), "same backend, same SNAT port");
    assert!(!lab.dp.is_suspect(a).unwrap());
    assert_eq!(lab.counter(GlobalCounter::PassiveSynRetransmit), 0);
    // A retransmission after that is one again.
    lab.syn_retransmission_due(client);
    let (_, moved) = lab.run(&syn);
    assert_ne!(dst_of(&moved).0, a_addr);
    assert!(lab.dp.is_suspect(a).unwrap());
}

/// A NAT backend whose SYN-ACK came back through veer is alive: a SYN
/// resent after it (the client's ACK was lost, or an attacker replays the
/// SYN) marks nothing and stays on that backend and SNAT port.
#[test]
fn a_syn_whose_nat_backend_answered_is_no_signal() {
    let mut lab = NatLab::with_flags("answered", false, Protocol::Tcp, 3, SERVICE_F_PASSIVE);
    let client = SocketAddr::new(lab.client, 40000);
    let syn = frame::tcp_segment(client, lab.vip, TCP_SYN, 1000, 0, &SYN_OPTIONS);
    let (_, first) = lab.run(&syn);
    let (a_addr, _, a_port) = dst_of(&first);
    let a = lab.backends.iter().position(|b| *b == a_addr).unwrap() as u32;
    let synack = frame::tcp_segment(
        SocketAddr::new(a_addr, 8080),
        SocketAddr::new(lab.snat, a_port),
        TCP_SYN_ACK,
        7000,
        1001,
        &[],
    );
    assert_eq!(lab.run(&synack).0, XDP_REDIRECT);
    lab.syn_retransmission_due(client);
    let (_, again) = lab.run(&syn);
    assert_eq!(dst_of(&again), (a_addr, 8080, a_port), "same backend, same SNAT port");
    assert!(!lab.dp.is_suspect(a).unwrap(), "a backend that answered is not suspect");
    assert_eq!(lab.counter(GlobalCounter::PassiveSynRetransmit), 0);
}
