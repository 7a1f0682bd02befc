//! NAT flows' TCP timestamps on veer's clock, and closed flows' SNAT ports
//! taken over, through the real XDP program (BPF_PROG_TEST_RUN). Every
//! rewritten frame's checksums are recomputed here. Needs root.

use std::{net::SocketAddr, time::Duration};

use veer::dataplane::{flow_key, Protocol};
use veer_abi::{GlobalCounter, NatConfig};
use veer_tests::{
    frame,
    lab::NatLab,
    seen::{inspect, Seen},
};

const XDP_DROP: u32 = 1;
const XDP_REDIRECT: u32 = 4;
const SYN: u8 = 0x02;
const SYN_ACK: u8 = 0x12;
const ACK: u8 = 0x10;
const FIN_ACK: u8 = 0x11;

/// NOP, NOP, timestamps: the options of every segment but a SYN.
fn ts(tsval: u32, tsecr: u32) -> Vec<u8> {
    let mut o = vec![1, 1, 8, 10];
    o.extend_from_slice(&tsval.to_be_bytes());
    o.extend_from_slice(&tsecr.to_be_bytes());
    o
}

/// The timestamps option moved to an odd offset: NOP, timestamps, NOP.
fn ts_odd(tsval: u32, tsecr: u32) -> Vec<u8> {
    let mut o = vec![1, 8, 10];
    o.extend_from_slice(&tsval.to_be_bytes());
    o.extend_from_slice(&tsecr.to_be_bytes());
    o.push(1);
    o
}

/// A SYN's options (MSS, SACK permitted, timestamps, NOP, window scale).
fn syn_options(tsval: u32) -> Vec<u8> {
    let mut o = frame::SYN_OPTIONS.to_vec();
    o[8..12].copy_from_slice(&tsval.to_be_bytes());
    o
}

/// The (TSval, TSecr) of a frame's TCP options at `at` (from the TCP header).
fn timestamps(f: &[u8], at: usize) -> (u32, u32) {
    let l4 = if f[12..14] == [0x08, 0x00] { 14 + (f[14] & 0x0f) as usize * 4 } else { 54 };
    let t = &f[l4 + at..];
    (u32::from_be_bytes(t[..4].try_into().unwrap()), u32::from_be_bytes(t[4..8].try_into().unwrap()))
}

fn send(lab: &NatLab, f: Vec<u8>, what: &str) -> Vec<u8> {
    let (action, out) = lab.run(&f);
    assert_eq!(action, XDP_REDIRECT, "{what}: forwarded");
    assert!(inspect(&out).checksums_ok, "{what}: checksums");
    out
}

fn timestamps_on_veers_clock(tag: &str, v6: bool) {
    let lab = NatLab::new(tag, v6, Protocol::Tcp, 2);
    let c = SocketAddr::new(lab.client, 40000);
    let out = send(&lab, frame::tcp_segment(c, lab.vip, SYN, 100, 0, &syn_options(7)), "SYN");
    let s: Seen = inspect(&out);
    let (shifted, _) = timestamps(&out, 28);
    let off = shifted.wrapping_sub(7);
    assert_ne!(off, 0, "{tag}: the SYN's TSval goes onto veer's clock");
    let mut rest = out.clone();
    let l4 = out.len() - 40;
    rest[l4 + 28..l4 + 32].copy_from_slice(&7u32.to_be_bytes());
    assert_eq!(&rest[l4 + 20..], &syn_options(7)[..], "{tag}: the other options untouched");

    // The backend echoes veer's value; the client gets its own back.
    let back = send(&lab, frame::tcp_segment(s.dst, s.src, SYN_ACK, 5000, 101, &ts(900, shifted)), "SYN-ACK");
    assert_eq!(timestamps(&back, 24), (900, 7), "{tag}: the backend's TSval as it is, the client's echo its own");
    // Later segments, either direction, at the usual and at an odd offset.
    let out = send(&lab, frame::tcp_segment(c, lab.vip, ACK, 101, 5001, &ts(9, 900)), "ACK");
    assert_eq!(timestamps(&out, 24), (9u32.wrapping_add(off), 900), "{tag}: client -> backend");
    let out = send(&lab, frame::tcp_data(c, lab.vip, (0x18, 101, 5001), &ts_odd(11, 901), b"GET /"), "data");
    assert_eq!(timestamps(&out, 23), (11u32.wrapping_add(off), 901), "{tag}: an odd offset");
    let back =
        send(&lab, frame::tcp_segment(s.dst, s.src, ACK, 5001, 106, &ts_odd(902, 11u32.wrapping_add(off))), "ack");
    assert_eq!(timestamps(&back, 23), (902, 11), "{tag}: an odd offset back");

    // A client without timestamps: nothing to shift, nothing shifted.
    let c2 = SocketAddr::new(lab.client, 40001);
    let out = send(&lab, frame::tcp_segment(c2, lab.vip, SYN, 100, 0, &[2, 4, 5, 180]), "bare SYN");
    let s2 = inspect(&out);
    let back = send(&lab, frame::tcp_segment(s2.dst, s2.src, SYN_ACK, 1, 101, &ts(900, 55)), "bare SYN-ACK");
    assert_eq!(timestamps(&back, 24), (900, 55), "{tag}: a flow without timestamps keeps the echo as sent");
}

#[test]
fn ipv4_timestamps_go_onto_veers_clock_and_back() {
    timestamps_on_veers_clock("ts4", false);
}

#[test]
fn ipv6_timestamps_go_onto_veers_clock_and_back() {
    timestamps_on_veers_clock("ts6", true);
}

/// Keeps the thread (and the lab's runs, on threads it spawns) on CPU 0,
/// which takes over the even ports.
fn stay_on_cpu0() {
    // SAFETY: a zeroed cpu_set_t with one bit set, for this thread (0).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        assert_eq!(libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set), 0);
    }
}

/// A lab whose only SNAT port is one CPU 0 takes over (a multiple of the
/// CPU count).
fn one_port_lab(tag: &str) -> (NatLab, u16) {
    stay_on_cpu0();
    let mut lab = NatLab::new(tag, false, Protocol::Tcp, 1);
    let cpus = veer::dataplane::possible_cpus().unwrap() as u16;
    let port = 20000 - 20000 % cpus;
    lab.dp.set_nat_config(NatConfig { port_min: port, port_max: port, ..Default::default() }).unwrap();
    (lab, port)
}

/// A whole connection on the one SNAT port, closed by both sides; the
/// backend's address and port as seen.
fn open_and_close(lab: &NatLab, c: SocketAddr, syn_opts: &[u8], with_ts: bool) -> Seen {
    let out = send(lab, frame::tcp_segment(c, lab.vip, SYN, 100, 0, syn_opts), "SYN");
    let s = inspect(&out);
    let (o_c, o_b) = if with_ts { (ts(20, 900), ts(900, 20)) } else { (vec![], vec![]) };
    send(lab, frame::tcp_segment(s.dst, s.src, SYN_ACK, 5000, 101, &o_b), "SYN-ACK");
    send(lab, frame::tcp_segment(c, lab.vip, ACK, 101, 5001, &o_c), "ACK");
    send(lab, frame::tcp_segment(s.dst, s.src, FIN_ACK, 5001, 101, &o_b), "backend's FIN");
    send(lab, frame::tcp_segment(c, lab.vip, FIN_ACK, 101, 5002, &o_c), "client's FIN");
    s
}

#[test]
fn a_closed_flows_snat_port_is_taken_over_with_timestamps_once_its_last_packets_went_by() {
    let (mut lab, port) = one_port_lab("tover");
    let a = SocketAddr::new(lab.client, 40000);
    let first = open_and_close(&lab, a, &syn_options(7), true);
    assert_eq!(first.src.port(), port);

    // Just closed: its last packets may still come; the port stays its own.
    let b = SocketAddr::new(lab.client, 40001);
    let syn_b = frame::tcp_segment(b, lab.vip, SYN, 300, 0, &syn_options(3));
    assert_eq!(lab.run(&syn_b).0, XDP_DROP, "the only port is held a while after the close");
    assert_eq!(lab.counter(GlobalCounter::DropNatExhausted), 1);

    // A second later it goes to the new flow, from the same SNAT endpoint,
    // with a timestamp above all the old flow's.
    assert!(lab.dp.age_conn(&flow_key(a, lab.vip, Protocol::Tcp), Duration::from_secs(2)).unwrap());
    let out = send(&lab, syn_b.clone(), "the new flow's SYN");
    let s = inspect(&out);
    assert_eq!((s.src, s.dst), (first.src, first.dst), "the same 4-tuple toward the backend");
    assert_eq!(lab.counter(GlobalCounter::NatTakenOver), 1);
    // Its answers reach the new client; a late packet of the old one no longer
    // uses the tuple.
    let back =
        send(&lab, frame::tcp_segment(s.dst, s.src, SYN_ACK, 7000, 301, &ts(950, timestamps(&out, 28).0)), "SYN-ACK");
    assert_eq!(inspect(&back).dst, b, "answers go to the new flow's client");
    assert_eq!(timestamps(&back, 24).1, 3, "with its own echo");
    let late = frame::tcp_segment(a, lab.vip, ACK, 102, 5002, &ts(21, 900));
    assert_eq!(lab.run(&late).0, XDP_DROP, "the old flow's late ACK finds no endpoint");
}

#[test]
fn a_closed_flow_without_timestamps_keeps_its_snat_port() {
    let (mut lab, _) = one_port_lab("tkeep");
    let a = SocketAddr::new(lab.client, 40000);
    open_and_close(&lab, a, &[2, 4, 5, 180], false);
    assert!(lab.dp.age_conn(&flow_key(a, lab.vip, Protocol::Tcp), Duration::from_secs(2)).unwrap());
    // The backend's TIME_WAIT socket could refuse a SYN whose timestamp or
    // sequence number is older: the port waits for veerd's expiry.
    let b = SocketAddr::new(lab.client, 40001);
    let syn_b = frame::tcp_segment(b, lab.vip, SYN, 300, 0, &syn_options(3));
    assert_eq!(lab.run(&syn_b).0, XDP_DROP);
    assert_eq!(lab.counter(GlobalCounter::NatTakenOver), 0);
}

#[test]
fn a_live_flows_snat_port_is_never_taken_over() {
    let (mut lab, _) = one_port_lab("tlive");
    let a = SocketAddr::new(lab.client, 40000);
    let out = send(&lab, frame::tcp_segment(a, lab.vip, SYN, 100, 0, &syn_options(7)), "SYN");
    let s = inspect(&out);
    send(&lab, frame::tcp_segment(s.dst, s.src, SYN_ACK, 5000, 101, &ts(900, timestamps(&out, 28).0)), "SYN-ACK");
    send(&lab, frame::tcp_segment(a, lab.vip, ACK, 101, 5001, &ts(8, 900)), "ACK");
    // Only the client closes (a FIN anyone could forge): still live, however old.
    send(&lab, frame::tcp_segment(a, lab.vip, FIN_ACK, 101, 5001, &ts(9, 900)), "client's FIN");
    assert!(lab.dp.age_conn(&flow_key(a, lab.vip, Protocol::Tcp), Duration::from_secs(60)).unwrap());
    let b = SocketAddr::new(lab.client, 40001);
    assert_eq!(lab.run(&frame::tcp_segment(b, lab.vip, SYN, 300, 0, &syn_options(3))).0, XDP_DROP);
    assert_eq!(lab.counter(GlobalCounter::NatTakenOver), 0);
    let more = frame::tcp_segment(s.dst, s.src, ACK, 5001, 102, &ts(901, 9));
    assert_eq!(lab.run(&more).0, XDP_REDIRECT, "the backend's side still reaches its client");
}

#[test]
fn a_new_flow_without_timestamps_takes_over_nothing() {
    let (mut lab, _) = one_port_lab("tbare");
    let a = SocketAddr::new(lab.client, 40000);
    open_and_close(&lab, a, &syn_options(7), true);
    assert!(lab.dp.age_conn(&flow_key(a, lab.vip, Protocol::Tcp), Duration::from_secs(2)).unwrap());
    // Without a timestamp, the backend's TIME_WAIT socket takes its SYN only
    // if its sequence number happens to be higher: no takeover.
    let b = SocketAddr::new(lab.client, 40001);
    assert_eq!(lab.run(&frame::tcp_segment(b, lab.vip, SYN, 300, 0, &[2, 4, 5, 180])).0, XDP_DROP);
    assert_eq!(lab.counter(GlobalCounter::NatTakenOver), 0);
    // With one, it may.
    let c = SocketAddr::new(lab.client, 40002);
    send(&lab, frame::tcp_segment(c, lab.vip, SYN, 300, 0, &syn_options(3)), "a SYN with timestamps");
    assert_eq!(lab.counter(GlobalCounter::NatTakenOver), 1);
}

#[test]
fn a_backend_answering_without_timestamps_gives_no_port_to_take_over() {
    let (mut lab, _) = one_port_lab("tnots");
    let a = SocketAddr::new(lab.client, 40000);
    // The client offers timestamps, the backend (tcp_timestamps=0, or a
    // stack that judges TIME_WAIT by sequence numbers) answers without.
    let out = send(&lab, frame::tcp_segment(a, lab.vip, SYN, 100, 0, &syn_options(7)), "SYN");
    let s = inspect(&out);
    send(&lab, frame::tcp_segment(s.dst, s.src, SYN_ACK, 5000, 101, &[2, 4, 5, 180]), "SYN-ACK without timestamps");
    send(&lab, frame::tcp_segment(a, lab.vip, ACK, 101, 5001, &[]), "ACK");
    send(&lab, frame::tcp_segment(s.dst, s.src, FIN_ACK, 5001, 101, &[]), "backend's FIN");
    send(&lab, frame::tcp_segment(a, lab.vip, FIN_ACK, 101, 5002, &[]), "client's FIN");
    assert!(lab.dp.age_conn(&flow_key(a, lab.vip, Protocol::Tcp), Duration::from_secs(2)).unwrap());
    let b = SocketAddr::new(lab.client, 40001);
    assert_eq!(lab.run(&frame::tcp_segment(b, lab.vip, SYN, 300, 0, &syn_options(3))).0, XDP_DROP);
    assert_eq!(lab.counter(GlobalCounter::NatTakenOver), 0);
}

#[test]
fn a_syn_with_timestamps_further_on_is_left_alone_and_so_is_its_flow() {
    let lab = NatLab::new("tbsd", false, Protocol::Tcp, 1);
    let c = SocketAddr::new(lab.client, 40000);
    // macOS: MSS, NOP, window scale, NOP, NOP, timestamps, SACK permitted, EOL.
    let mut opts = vec![2, 4, 5, 180, 1, 3, 3, 6, 1, 1, 8, 10];
    opts.extend_from_slice(&77u32.to_be_bytes());
    opts.extend_from_slice(&[0, 0, 0, 0, 4, 2, 0, 0]);
    let out = send(&lab, frame::tcp_segment(c, lab.vip, SYN, 100, 0, &opts), "SYN");
    assert_eq!(timestamps(&out, 32).0, 77, "the SYN keeps its TSval");
    let s = inspect(&out);
    let back = send(&lab, frame::tcp_segment(s.dst, s.src, SYN_ACK, 5000, 101, &ts(900, 77)), "SYN-ACK");
    assert_eq!(timestamps(&back, 24), (900, 77), "and its echo comes back as sent");
    let out = send(&lab, frame::tcp_segment(c, lab.vip, ACK, 101, 5001, &ts(78, 900)), "ACK");
    assert_eq!(timestamps(&out, 24), (78, 900), "every segment of the flow alike");
}

#[test]
fn a_flow_whose_timestamps_ran_ahead_of_veers_clock_keeps_its_port() {
    let (mut lab, _) = one_port_lab("tahead");
    let a = SocketAddr::new(lab.client, 40000);
    let out = send(&lab, frame::tcp_segment(a, lab.vip, SYN, 100, 0, &syn_options(7)), "SYN");
    let s = inspect(&out);
    let shifted = timestamps(&out, 28).0;
    send(&lab, frame::tcp_segment(s.dst, s.src, SYN_ACK, 5000, 101, &ts(900, shifted)), "SYN-ACK");
    // The client pushes its clock a day forward: the backend's TIME_WAIT
    // socket would keep that, and refuse the next flow's SYN on this port.
    let pushed = 7u32.wrapping_add(1 << 30);
    send(&lab, frame::tcp_segment(a, lab.vip, ACK, 101, 5001, &ts(pushed, 900)), "ACK from the future");
    send(&lab, frame::tcp_segment(s.dst, s.src, FIN_ACK, 5001, 101, &ts(901, pushed)), "backend's FIN");
    send(&lab, frame::tcp_segment(a, lab.vip, FIN_ACK, 101, 5002, &ts(pushed, 901)), "client's FIN");
    assert!(lab.dp.age_conn(&flow_key(a, lab.vip, Protocol::Tcp), Duration::from_secs(2)).unwrap());
    let b = SocketAddr::new(lab.client, 40001);
    assert_eq!(lab.run(&frame::tcp_segment(b, lab.vip, SYN, 300, 0, &syn_options(3))).0, XDP_DROP);
    assert_eq!(lab.counter(GlobalCounter::NatTakenOver), 0, "its port waits for the expiry");
}
