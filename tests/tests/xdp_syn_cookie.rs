//! NAT's SYN proxy through the real XDP program (BPF_PROG_TEST_RUN): a SYN
//! answered with a kernel SYN cookie takes no SNAT port; only an ACK with a
//! valid cookie opens the mapping; the backend's SYN-ACK is spliced and every
//! later packet's sequence numbers shift, both ways. IPv4 and IPv6. Every
//! frame's checksums are recomputed here from scratch. Needs root.

use std::net::{IpAddr, SocketAddr};

use veer::dataplane::{MapReader, Protocol};
use veer_abi::{csum::checksum, GlobalCounter, NatConfig, SYN_COOKIES_ALWAYS, SYN_COOKIES_AUTO};
use veer_tests::{
    frame::{
        self,
        flags::{ACK, FIN_ACK, PSH_ACK, RST, SYN, SYN_ACK},
        tcp_data, tcp_segment, SYN_OPTIONS,
    },
    lab::{NatLab, NAT_PORTS, XDP_DROP},
    seen::{inspect, Seen, TcpSeen},
};

const XDP_REDIRECT: u32 = 4;
/// The backend's MSS option (1460).
const MSS_1460: [u8; 4] = [2, 4, 5, 180];

fn lab(tag: &str, v6: bool, mode: u32, threshold: u32) -> NatLab {
    lab_with(tag, v6, mode, threshold, 0)
}

fn lab_with(tag: &str, v6: bool, mode: u32, threshold: u32, flags: u8) -> NatLab {
    let mut lab = NatLab::with_flags(tag, v6, Protocol::Tcp, 2, flags);
    let cfg = NatConfig {
        port_min: NAT_PORTS.0,
        port_max: NAT_PORTS.1,
        syn_cookies: mode,
        syn_cookie_threshold: threshold,
        cpus: 0,
        sync: 0,
    };
    lab.dp.set_nat_config(cfg).expect("NAT config");
    lab
}

/// Runs `f` through the program: the action and what the sent frame carries.
fn send(lab: &NatLab, f: Vec<u8>, what: &str) -> (u32, Seen) {
    let (action, out) = lab.run(&f);
    let seen = inspect(&out);
    assert!(seen.checksums_ok, "{what}: checksums of the frame sent ({seen:?})");
    (action, seen)
}

fn tcp(s: &Seen) -> &TcpSeen {
    s.tcp.as_ref().expect("a TCP segment")
}

fn counters(lab: &NatLab) -> Vec<(GlobalCounter, u64)> {
    lab.dp.global_counters().unwrap().into_iter().filter(|(_, v)| *v > 0).collect()
}

/// A client's cookie handshake with veer (`isn`: its initial sequence
/// number): the cookie, and veer's SYN to a backend that its ACK became.
fn open_through_cookie(lab: &NatLab, client: SocketAddr, isn: u32) -> (u32, Seen) {
    let (_, synack) = send(lab, tcp_segment(client, lab.vip, SYN, isn, 0, &SYN_OPTIONS), "cookie SYN-ACK");
    let cookie = tcp(&synack).seq;
    let (_, syn) = send(lab, tcp_segment(client, lab.vip, ACK, isn + 1, cookie + 1, &[]), "SYN to backend");
    (cookie, syn)
}

/// The whole life of a proxied connection: the cookie handshake, the
/// backend's handshake, data both ways, and the close.
fn handshake_and_data(tag: &str, v6: bool) {
    let mut lab = lab(tag, v6, SYN_COOKIES_ALWAYS, 0);
    let client = SocketAddr::new(lab.client, 40000);
    let isn = 1_000_000u32;

    // The SYN is answered by veer itself, and takes nothing.
    let (action, synack) = send(&lab, tcp_segment(client, lab.vip, SYN, isn, 0, &SYN_OPTIONS), "cookie SYN-ACK");
    assert_eq!(action, XDP_REDIRECT, "{tag}: the SYN-ACK goes back out; {:?}", counters(&lab));
    assert_eq!((synack.src, synack.dst), (lab.vip, client), "{tag}: from the VIP to the client");
    let t = tcp(&synack);
    assert_eq!((t.flags, t.ack, t.window), (SYN_ACK, isn + 1, 0), "{tag}: a SYN-ACK with a zero window");
    let mss = t.mss().expect("the SYN-ACK carries a MSS");
    assert!((536..=1460).contains(&mss), "{tag}: MSS {mss} from the cookie's table");
    let cookie = t.seq;
    assert!(lab.dp.nat_mappings().unwrap().is_empty(), "{tag}: a SYN takes no SNAT port");
    assert_eq!(lab.counter(GlobalCounter::SynCookiesSent), 1);

    // Its ACK shows a client at that address: the backend gets the SYN.
    let (action, syn) = send(&lab, tcp_segment(client, lab.vip, ACK, isn + 1, cookie + 1, &[]), "SYN to backend");
    assert_eq!(action, XDP_REDIRECT, "{tag}: the ACK's SYN goes to a backend; {:?}", counters(&lab));
    assert_eq!(syn.src.ip(), lab.snat, "{tag}: from the SNAT address");
    assert!(lab.backends.contains(&syn.dst.ip()) && syn.dst.port() == 8080, "{tag}: to a backend");
    let t = tcp(&syn);
    assert_eq!((t.flags, t.seq, t.mss()), (SYN, isn, Some(mss)), "{tag}: the client's ISN and the cookie's MSS");
    assert_eq!(lab.dp.nat_mappings().unwrap().len(), 1, "{tag}: one mapping, opened by the valid ACK");
    assert_eq!(lab.counter(GlobalCounter::SynCookiesValid), 1);
    let (backend, snat) = (syn.dst, syn.src);

    // The client's packets wait (dropped) until the backend answers.
    lab.proxied_syn(client, false);
    let early = tcp_data(client, lab.vip, (PSH_ACK, isn + 1, cookie + 1), &[], b"early");
    assert_eq!(lab.run(&early).0, XDP_DROP, "{tag}: nothing reaches the backend before its SYN-ACK");

    // The backend's SYN-ACK becomes a one-byte probe that opens the window.
    let bisn = 3_000_000_000u32;
    let (action, probe) = send(&lab, tcp_segment(backend, snat, SYN_ACK, bisn, isn + 1, &MSS_1460), "probe");
    assert_eq!(action, XDP_REDIRECT, "{tag}: the probe goes to the client; {:?}", counters(&lab));
    assert_eq!((probe.src, probe.dst), (lab.vip, client), "{tag}: the probe from the VIP");
    let t = tcp(&probe);
    assert_eq!((t.flags, t.seq, t.ack), (ACK, cookie, isn + 1), "{tag}: just below the client's window");
    assert_eq!(t.payload.len(), 1, "{tag}: one byte");
    assert!(t.window > 0, "{tag}: the window opens");
    assert_eq!(lab.counter(GlobalCounter::SynProxySpliced), 1);

    // The client's acknowledgments move into the backend's sequence space...
    let (action, ack) = send(&lab, tcp_segment(client, lab.vip, ACK, isn + 1, cookie + 1, &[]), "client ACK");
    assert_eq!(action, XDP_REDIRECT);
    assert_eq!((ack.src, ack.dst), (snat, backend), "{tag}: the same mapping");
    assert_eq!(
        (tcp(&ack).seq, tcp(&ack).ack),
        (isn + 1, bisn.wrapping_add(1)),
        "{tag}: completes the backend's handshake"
    );
    let req = tcp_data(client, lab.vip, (PSH_ACK, isn + 1, cookie + 1), &[], b"GET / HTTP/1.0\r\n\r\n");
    let (_, fwd) = send(&lab, req, "client data");
    assert_eq!((tcp(&fwd).ack, &tcp(&fwd).payload[..]), (bisn.wrapping_add(1), &b"GET / HTTP/1.0\r\n\r\n"[..]));

    // ...and the backend's sequence numbers into the client's.
    let answer = tcp_data(backend, snat, (PSH_ACK, bisn.wrapping_add(1), isn + 19), &[], b"HTTP/1.0 200 OK\r\n");
    let (action, back) = send(&lab, answer.clone(), "backend data");
    assert_eq!(action, XDP_REDIRECT);
    assert_eq!((back.src, back.dst), (lab.vip, client), "{tag}: back from the VIP");
    let t = tcp(&back);
    assert_eq!((t.seq, t.ack, &t.payload[..]), (cookie + 1, isn + 19, &b"HTTP/1.0 200 OK\r\n"[..]), "{tag}: shifted");
    quoted_to_backend(&lab, v6, answer, (backend, snat), bisn.wrapping_add(1));
    let fin = tcp_segment(backend, snat, FIN_ACK, bisn.wrapping_add(18), isn + 19, &[]);
    let (_, fin) = send(&lab, fin, "backend FIN");
    assert_eq!((tcp(&fin).flags, tcp(&fin).seq), (FIN_ACK, cookie + 18), "{tag}: the FIN shifts too");
}

/// A router's "too big" about the backend's `answer` (as veer sent it on
/// to the client) reaches the backend quoting what the backend sent: its
/// own addresses (`from`) and its own sequence number (`seq`), which its
/// TCP checks the error against.
fn quoted_to_backend(lab: &NatLab, v6: bool, answer: Vec<u8>, from: (SocketAddr, SocketAddr), seq: u32) {
    let (_, back) = lab.run(&answer);
    let router: IpAddr = if v6 { "2001:db8::fe" } else { "192.0.2.254" }.parse().unwrap();
    let (action, out) = lab.run(&frame::icmp_error(router, lab.vip.ip(), &back, back.len() - 14));
    assert_eq!(action, XDP_REDIRECT, "the error goes on to the backend; {:?}", counters(lab));
    let msg_at = 14 + if v6 { 40 } else { 20 };
    let mut summed = Vec::new();
    if v6 {
        summed.extend_from_slice(&out[22..54]);
        summed.extend_from_slice(&((out.len() - msg_at) as u32).to_be_bytes());
        summed.extend_from_slice(&[0, 0, 0, 58]);
    }
    summed.extend_from_slice(&out[msg_at..]);
    assert_eq!(checksum(&summed), 0, "the ICMP checksum");
    let mut quoted = out[..14].to_vec();
    quoted.extend_from_slice(&out[msg_at + 8..]);
    let q = inspect(&quoted);
    assert!(q.checksums_ok, "the quote's checksums: {q:?}");
    assert_eq!((q.src, q.dst, tcp(&q).seq), (from.0, from.1, seq), "quoting the backend's own packet");
}

#[test]
fn ipv4_a_cookie_handshake_opens_the_mapping_and_sequence_numbers_shift() {
    handshake_and_data("ck4", false);
}

#[test]
fn ipv6_a_cookie_handshake_opens_the_mapping_and_sequence_numbers_shift() {
    handshake_and_data("ck6", true);
}

#[test]
fn an_ack_with_a_wrong_cookie_takes_no_port() {
    // Under a flood (always), it is dropped: a RST would be reflected.
    let flood = lab("ckbad", false, SYN_COOKIES_ALWAYS, 0);
    let client = SocketAddr::new(flood.client, 40001);
    let (_, synack) = send(&flood, tcp_segment(client, flood.vip, SYN, 7, 0, &SYN_OPTIONS), "cookie SYN-ACK");
    // A SYN with RST (or FIN) starts no handshake: no cookie for it.
    let odd = tcp_segment(SocketAddr::new(flood.client, 40009), flood.vip, SYN | RST, 9, 0, &SYN_OPTIONS);
    assert_eq!(flood.run(&odd).0, XDP_DROP);
    assert_eq!(flood.counter(GlobalCounter::SynCookiesSent), 1, "only the real SYN's");
    let wrong = tcp(&synack).seq.wrapping_add(1 << 20);
    assert_eq!(flood.run(&tcp_segment(client, flood.vip, ACK, 8, wrong, &[])).0, XDP_DROP);
    assert!(flood.dp.nat_mappings().unwrap().is_empty(), "no SNAT port for a wrong cookie");
    assert_eq!(flood.counter(GlobalCounter::DropBadCookie), 1);
    drop(flood);

    // Without a flood, answered as a host with no such connection does.
    let calm = lab("ckrst", false, SYN_COOKIES_AUTO, 1000);
    let stray = SocketAddr::new(calm.client, 40002);
    let (action, rst) = send(&calm, tcp_segment(stray, calm.vip, ACK, 8, 12345, &[]), "RST");
    assert_eq!(action, XDP_REDIRECT);
    assert_eq!((rst.src, rst.dst), (calm.vip, stray));
    assert_eq!((tcp(&rst).flags, tcp(&rst).seq), (RST, 12345), "a RST from the ACK's acknowledgment");
    assert!(calm.dp.nat_mappings().unwrap().is_empty());
}

#[test]
fn auto_answers_with_cookies_past_the_threshold_only() {
    let lab = lab("ckauto", false, SYN_COOKIES_AUTO, 3);
    // The threshold is per CPU: every run on one CPU.
    let run = |f: Vec<u8>| {
        lab.ns
            .run(|| {
                let mut cpus = nix::sched::CpuSet::new();
                cpus.set(0).expect("CPU 0");
                nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &cpus).expect("pinning to CPU 0");
                lab.dp.test_run(&f, 1)
            })
            .unwrap()
            .expect("test run")
    };
    for port in 41000..41003 {
        let out = run(tcp_segment(SocketAddr::new(lab.client, port), lab.vip, SYN, 1, 0, &SYN_OPTIONS));
        let seen = inspect(&out.frame);
        assert_eq!(seen.src.ip(), lab.snat, "SYN {port}: under the threshold it goes to a backend at once");
    }
    let out = run(tcp_segment(SocketAddr::new(lab.client, 41003), lab.vip, SYN, 1, 0, &SYN_OPTIONS));
    let seen = inspect(&out.frame);
    assert_eq!((seen.src, tcp(&seen).flags), (lab.vip, SYN_ACK), "past the threshold: a cookie SYN-ACK");
    assert_eq!(lab.dp.nat_mappings().unwrap().len(), 3, "the fourth SYN took no port");
    // An established flow goes on meanwhile.
    let out = run(frame::packet(SocketAddr::new(lab.client, 41000), lab.vip, frame::L4::Tcp(ACK), b""));
    assert_eq!((out.action, inspect(&out.frame).src.ip()), (XDP_REDIRECT, lab.snat), "a mapped flow is not touched");
}

#[test]
fn a_proxied_syn_refused_by_a_backend_is_resent_to_another_and_spliced_there() {
    // Passive checking on: a refused SYN is resent to another backend.
    let lab = lab_with("ckref", false, SYN_COOKIES_ALWAYS, 0, veer_abi::SERVICE_F_PASSIVE);
    let client = SocketAddr::new(lab.client, 40003);
    let (cookie, syn) = open_through_cookie(&lab, client, 500);
    // The backend refuses: veer tries another (the same resend as without cookies)...
    let (action, again) = send(&lab, tcp_segment(syn.dst, syn.src, RST | ACK, 0, 501, &[]), "resent SYN");
    assert_eq!(action, XDP_REDIRECT, "{:?}", counters(&lab));
    assert_eq!(tcp(&again).flags, SYN, "the refused SYN is sent again: {again:?} {:?}", counters(&lab));
    assert_ne!(again.dst, syn.dst, "to the other backend");
    // ...and when that one answers, the splice works as usual.
    let (_, probe) = send(&lab, tcp_segment(again.dst, again.src, SYN_ACK, 77, 501, &MSS_1460), "probe");
    assert_eq!((probe.dst, tcp(&probe).seq), (client, cookie));
}

#[test]
fn a_backends_reset_before_its_syn_ack_reaches_the_client_in_its_sequence_space() {
    let lab = lab("ckrst2", false, SYN_COOKIES_ALWAYS, 0);
    let client = SocketAddr::new(lab.client, 40004);
    let (cookie, syn) = open_through_cookie(&lab, client, 900);
    let (action, rst) = send(&lab, tcp_segment(syn.dst, syn.src, RST | ACK, 0, 901, &[]), "RST to client");
    assert_eq!(action, XDP_REDIRECT, "{:?}", counters(&lab));
    assert_eq!((rst.src, rst.dst), (lab.vip, client));
    let t = tcp(&rst);
    assert_eq!((t.flags, t.seq), (RST | ACK, cookie + 1), "at the sequence number the client expects");
}

/// The cookie SYN-ACK offers no window, so a client whose ACK was lost
/// sends nothing more but zero-window probes, one below that ACK's
/// sequence number: one of them opens the connection as the ACK would have.
#[test]
fn a_zero_window_probe_stands_in_for_a_lost_ack() {
    let lab = lab("ckprobe", false, SYN_COOKIES_ALWAYS, 0);
    let client = SocketAddr::new(lab.client, 40005);
    let (_, synack) = send(&lab, tcp_segment(client, lab.vip, SYN, 3000, 0, &SYN_OPTIONS), "cookie SYN-ACK");
    let cookie = tcp(&synack).seq;
    let (action, syn) = send(&lab, tcp_segment(client, lab.vip, ACK, 3000, cookie + 1, &[]), "SYN from a probe");
    assert_eq!(action, XDP_REDIRECT, "{:?}", counters(&lab));
    assert_eq!((syn.src.ip(), tcp(&syn).flags, tcp(&syn).seq), (lab.snat, SYN, 3000), "the client's own ISN");
    // Any other sequence number is no proof.
    let stray = SocketAddr::new(lab.client, 40006);
    let (_, synack) = send(&lab, tcp_segment(stray, lab.vip, SYN, 5000, 0, &SYN_OPTIONS), "cookie SYN-ACK");
    let wrong = tcp_segment(stray, lab.vip, ACK, 4998, tcp(&synack).seq + 1, &[]);
    assert_eq!(lab.run(&wrong).0, XDP_DROP);
}

/// veer's SYN to the backend, or the backend's SYN-ACK, was lost: the
/// client, in a zero window, sends only probes, and a probe that comes once
/// the SYN has gone unanswered long enough sends it again. Only a SYN-ACK
/// that acknowledges veer's SYN splices: a forged one is dropped.
#[test]
fn a_lost_proxied_syn_is_resent_on_a_probe_and_only_its_own_syn_ack_splices() {
    let mut lab = lab("cklost", false, SYN_COOKIES_ALWAYS, 0);
    let client = SocketAddr::new(lab.client, 40007);
    let isn = 7000u32;
    let (cookie, syn) = open_through_cookie(&lab, client, isn);
    let probe = tcp_segment(client, lab.vip, ACK, isn, cookie + 1, &[]);
    lab.proxied_syn(client, false);
    assert_eq!(lab.run(&probe).0, XDP_DROP, "a probe soon after veer's SYN waits");
    assert_eq!(lab.counter(GlobalCounter::ProxySynResent), 0);

    lab.proxied_syn(client, true);
    let (action, again) = send(&lab, probe.clone(), "resent SYN");
    assert_eq!(action, XDP_REDIRECT, "{:?}", counters(&lab));
    assert_eq!((again.src, again.dst), (syn.src, syn.dst), "the same SNAT endpoint and backend");
    let (t, first) = (tcp(&again), tcp(&syn));
    assert_eq!((t.flags, t.seq, t.ack, t.mss()), (SYN, isn, 0, first.mss()), "veer's SYN again: {again:?}");
    assert_eq!(lab.counter(GlobalCounter::ProxySynResent), 1);
    assert_eq!(lab.dp.nat_mappings().unwrap().len(), 1, "no second mapping");

    // A SYN-ACK that does not acknowledge veer's SYN splices nothing...
    let (backend, snat) = (syn.dst, syn.src);
    let forged = tcp_segment(backend, snat, SYN_ACK, 123_456, isn + 2, &MSS_1460);
    assert_eq!(lab.run(&forged).0, XDP_DROP);
    assert_eq!(lab.counter(GlobalCounter::DropForeignSynAck), 1);
    assert_eq!(lab.counter(GlobalCounter::SynProxySpliced), 0);
    // ...the backend's own does.
    let bisn = 4_000_000_000u32;
    let (action, opened) = send(&lab, tcp_segment(backend, snat, SYN_ACK, bisn, isn + 1, &MSS_1460), "probe");
    assert_eq!((action, opened.dst, tcp(&opened).seq), (XDP_REDIRECT, client, cookie));
    // Spliced once: its retransmission is shifted like any answer, not spliced again.
    let (_, dup) = send(&lab, tcp_segment(backend, snat, SYN_ACK, bisn, isn + 1, &MSS_1460), "SYN-ACK again");
    assert_eq!((dup.dst, tcp(&dup).seq), (client, cookie), "in the client's sequence space");
    assert_eq!(lab.counter(GlobalCounter::SynProxySpliced), 1);
    let (_, ack) = send(&lab, tcp_segment(client, lab.vip, ACK, isn + 1, cookie + 1, &[]), "client ACK");
    assert_eq!((ack.dst, tcp(&ack).ack), (backend, bisn.wrapping_add(1)), "completes the backend's handshake");

    // A client that gives up (RST) before the backend answered asks for no SYN.
    let quitter = SocketAddr::new(lab.client, 40011);
    open_through_cookie(&lab, quitter, 50);
    lab.proxied_syn(quitter, true);
    assert_eq!(lab.run(&tcp_segment(quitter, lab.vip, RST, 51, 0, &[])).0, XDP_DROP);
    assert_eq!(lab.counter(GlobalCounter::ProxySynResent), 1, "no SYN for a client that reset");
}

/// With no backend to take it, a SYN gets no cookie: a client let in would
/// hold a connection that can never open.
#[test]
fn no_cookie_while_no_backend_can_take_the_connection() {
    let mut lab = lab("cknone", false, SYN_COOKIES_ALWAYS, 0);
    for id in 0..2 {
        lab.dp.set_backend_state(id, veer_abi::BackendState::Down).unwrap();
    }
    let client = SocketAddr::new(lab.client, 40010);
    assert_eq!(lab.run(&tcp_segment(client, lab.vip, SYN, 1, 0, &SYN_OPTIONS)).0, XDP_DROP);
    assert_eq!(lab.counter(GlobalCounter::SynCookiesSent), 0, "{:?}", counters(&lab));
    assert_eq!(lab.counter(GlobalCounter::DropNoBackend), 1);
}
