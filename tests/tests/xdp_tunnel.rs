//! IPIP and GUE through the real XDP program (BPF_PROG_TEST_RUN): every
//! pairing of inner and outer family, the outer headers and checksums
//! recomputed here, the inner packet byte for byte as the client sent it,
//! the flow's entropy in GUE's source port and IPv6's flow label, and the
//! ICMP errors for packets too big for the tunnel's path. The runs happen
//! in a namespace whose routes the program's `bpf_fib_lookup` consults.
//! Needs root.

use std::{collections::HashSet, net::SocketAddr};

use veer_abi::{csum::checksum, GlobalCounter, DEFAULT_GUE_PORT, ENCAP_GUE, ENCAP_IPIP};
use veer_tests::{
    frame::{self, L4},
    seen::with_checksums,
    tunnel_lab::{TunnelLab, D0_MAC, PATH_MTU, ROUTER_MAC},
};

const XDP_DROP: u32 = 1;
const XDP_TX: u32 = 3;
const XDP_REDIRECT: u32 = 4;

/// An encapsulated frame's outer headers, as read here.
struct Outer {
    v4: bool,
    src: Vec<u8>,
    dst: Vec<u8>,
    proto: u8,
    /// GUE's UDP source port; IPv6's flow label otherwise.
    entropy: u32,
    /// Where the inner packet starts.
    inner: usize,
}

/// Reads and checks `out`'s outer headers (lengths, IPv4 header checksum,
/// DF, TTL, GUE's UDP length and checksum).
fn outer(tag: &str, out: &[u8], gue: bool) -> Outer {
    assert_eq!(out[..6], ROUTER_MAC, "{tag}: to the router's MAC (bpf_fib_lookup)");
    assert_eq!(out[6..12], D0_MAC, "{tag}: from the egress interface's MAC");
    let v4 = out[12..14] == [0x08, 0x00];
    let (ip_len, proto, src, dst, label) = if v4 {
        let ip = &out[14..34];
        assert_eq!(ip[0], 0x45, "{tag}: outer IPv4, no options");
        assert_eq!(u16::from_be_bytes([ip[2], ip[3]]) as usize, out.len() - 14, "{tag}: outer total length");
        assert_eq!(ip[6] & 0x40, 0x40, "{tag}: outer Don't Fragment");
        assert_eq!(ip[8], 64, "{tag}: outer TTL");
        assert_eq!(checksum(ip), 0, "{tag}: outer IPv4 header checksum");
        (20, ip[9], ip[12..16].to_vec(), ip[16..20].to_vec(), 0)
    } else {
        assert_eq!(out[12..14], [0x86, 0xdd], "{tag}: outer IPv6");
        let ip = &out[14..54];
        assert_eq!(ip[0] >> 4, 6);
        assert_eq!(u16::from_be_bytes([ip[4], ip[5]]) as usize, out.len() - 54, "{tag}: outer payload length");
        assert_eq!(ip[7], 64, "{tag}: outer hop limit");
        let label = u32::from_be_bytes([0, ip[1] & 0x0f, ip[2], ip[3]]);
        (40, ip[6], ip[8..24].to_vec(), ip[24..40].to_vec(), label)
    };
    if !gue {
        return Outer { v4, src, dst, proto, entropy: label, inner: 14 + ip_len };
    }
    assert_eq!(proto, 17, "{tag}: GUE is UDP");
    let udp = &out[14 + ip_len..14 + ip_len + 8];
    let sport = u16::from_be_bytes([udp[0], udp[1]]);
    assert!(sport >= 0x8000, "{tag}: source port {sport} in the upper half");
    assert_eq!(u16::from_be_bytes([udp[2], udp[3]]), DEFAULT_GUE_PORT, "{tag}: to the GUE port");
    assert_eq!(u16::from_be_bytes([udp[4], udp[5]]) as usize, out.len() - 14 - ip_len, "{tag}: UDP length");
    if v4 {
        assert_eq!(udp[6..8], [0, 0], "{tag}: no UDP checksum over IPv4");
    } else {
        // A full recomputation: pseudo header, UDP header, payload.
        let mut p = out[22..54].to_vec();
        p.extend_from_slice(&((out.len() - 54) as u32).to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 17]);
        p.extend_from_slice(&out[54..]);
        assert_ne!(udp[6..8], [0, 0], "{tag}: a UDP checksum over IPv6");
        assert_eq!(checksum(&p), 0, "{tag}: outer UDP checksum");
    }
    Outer { v4, src, dst, proto, entropy: sport as u32, inner: 14 + ip_len + 8 }
}

fn octets(a: std::net::IpAddr) -> Vec<u8> {
    match a {
        std::net::IpAddr::V4(a) => a.octets().to_vec(),
        std::net::IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// A connection's packets (SYN, the ACK, data) all reach one backend
/// through the tunnel, the inner packet untouched.
fn tunnelled(tag: &str, vip_v6: bool, outer_v6: bool, encap: u16) {
    let gue = encap == ENCAP_GUE;
    let lab = TunnelLab::new(tag, vip_v6, outer_v6, (encap, DEFAULT_GUE_PORT), 3);
    let client: SocketAddr = if vip_v6 { "[2001:db8::7]:40000" } else { "192.0.2.7:40000" }.parse().unwrap();
    let packets = [
        with_checksums(frame::packet(client, lab.vip, L4::Tcp(0x02), b"")),
        with_checksums(frame::packet(client, lab.vip, L4::Tcp(0x10), b"")),
        with_checksums(frame::packet(client, lab.vip, L4::Tcp(0x18), b"GET / HTTP/1.1\r\n\r\n")),
        // An IPv6 payload length of 0x01fa: the inner pseudo header's two
        // words carry when summed (GUE over IPv6's checksum).
        with_checksums(frame::packet(client, lab.vip, L4::Tcp(0x18), &[7; 486])),
    ];
    let mut first: Option<(Vec<u8>, u32)> = None;
    for (i, p) in packets.iter().enumerate() {
        let (action, out) = lab.run(p);
        assert_eq!(action, XDP_REDIRECT, "{tag}: packet {i} routed out of d0");
        let o = outer(tag, &out, gue);
        assert_eq!(o.v4, !outer_v6, "{tag}: outer family");
        assert_eq!(o.src, octets(lab.source), "{tag}: from the tunnel source");
        assert!(lab.backends.iter().any(|b| octets(*b) == o.dst), "{tag}: to a backend");
        let want = if gue {
            17
        } else if vip_v6 {
            41
        } else {
            4
        };
        assert_eq!(o.proto, want, "{tag}: outer protocol");
        assert_eq!(out[o.inner..], p[14..], "{tag}: packet {i}: the inner packet as the client sent it");
        match &first {
            None => first = Some((o.dst, o.entropy)),
            Some(f) => assert_eq!(*f, (o.dst, o.entropy), "{tag}: packet {i}: same backend, same entropy"),
        }
    }
    assert_eq!(lab.counter(GlobalCounter::Encapsulated), 4, "{tag}");
}

#[test]
fn ipip_ipv4_in_ipv4() {
    tunnelled("ipip44", false, false, ENCAP_IPIP);
}

#[test]
fn ipip_ipv6_in_ipv6() {
    tunnelled("ipip66", true, true, ENCAP_IPIP);
}

#[test]
fn ipip_ipv6_in_ipv4() {
    tunnelled("ipip64", true, false, ENCAP_IPIP);
}

#[test]
fn ipip_ipv4_in_ipv6() {
    tunnelled("ipip46", false, true, ENCAP_IPIP);
}

#[test]
fn gue_ipv4_in_ipv4() {
    tunnelled("gue44", false, false, ENCAP_GUE);
}

#[test]
fn gue_ipv6_in_ipv6() {
    tunnelled("gue66", true, true, ENCAP_GUE);
}

#[test]
fn gue_ipv6_in_ipv4() {
    tunnelled("gue64", true, false, ENCAP_GUE);
}

#[test]
fn gue_ipv4_in_ipv6() {
    tunnelled("gue46", false, true, ENCAP_GUE);
}

/// Flows spread over GUE source ports (IPv4) and IPv6 flow labels.
#[test]
fn flows_spread_over_entropy() {
    for (tag, outer_v6, encap) in [("spread-gue", false, ENCAP_GUE), ("spread-label", true, ENCAP_IPIP)] {
        let lab = TunnelLab::new(tag, false, outer_v6, (encap, DEFAULT_GUE_PORT), 3);
        let mut seen = HashSet::new();
        for port in 0..64u16 {
            let client = SocketAddr::new("192.0.2.7".parse().unwrap(), 40000 + port);
            let (_, out) = lab.run(&with_checksums(frame::packet(client, lab.vip, L4::Tcp(0x02), b"")));
            seen.insert(outer(tag, &out, encap == ENCAP_GUE).entropy);
        }
        assert!(seen.len() >= 48, "{tag}: 64 flows, only {} distinct values", seen.len());
    }
}

/// The largest packet that fits the path once encapsulated is sent; one
/// byte more is answered to the client with the MTU that fits.
fn too_big(tag: &str, vip_v6: bool, outer_v6: bool, encap: u16) {
    let lab = TunnelLab::new(tag, vip_v6, outer_v6, (encap, DEFAULT_GUE_PORT), 2);
    let client: SocketAddr = if vip_v6 { "[2001:db8::7]:40000" } else { "192.0.2.7:40000" }.parse().unwrap();
    let overhead = if outer_v6 { 40 } else { 20 } + if encap == ENCAP_GUE { 8 } else { 0 };
    let fits = PATH_MTU - overhead;
    let header = if vip_v6 { 40 + 20 } else { 20 + 20 };
    let sized = |n: usize| with_checksums(frame::packet(client, lab.vip, L4::Tcp(0x18), &vec![0x5a; n - header]));
    let (action, _) = lab.run(&sized(fits));
    assert_eq!(action, XDP_REDIRECT, "{tag}: {fits} bytes fit");
    let big = sized(fits + 1);
    let (action, out) = lab.run(&big);
    assert_eq!(action, XDP_TX, "{tag}: answered back the way it came");
    assert_eq!(out[..6], big[6..12], "{tag}: to the sender's MAC");
    assert_eq!(out[6..12], big[..6], "{tag}: from the MAC it was sent to");
    if vip_v6 {
        assert_eq!(out.len(), 14 + 40 + 8 + 48, "{tag}: IPv6 header and 8 bytes quoted");
        assert_eq!(out[20], 58, "{tag}: ICMPv6");
        assert_eq!(out[22..38], big[38..54], "{tag}: from the VIP");
        assert_eq!(out[38..54], big[22..38], "{tag}: to the client");
        assert_eq!(out[54..56], [2, 0], "{tag}: packet too big");
        assert_eq!(u32::from_be_bytes(out[58..62].try_into().unwrap()) as usize, fits, "{tag}: the MTU that fits");
        assert_eq!(out[62..], big[14..62], "{tag}: the quote");
        let mut p = out[22..54].to_vec();
        p.extend_from_slice(&56u32.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 58]);
        p.extend_from_slice(&out[54..]);
        assert_eq!(checksum(&p), 0, "{tag}: ICMPv6 checksum");
    } else {
        assert_eq!(out.len(), 14 + 20 + 8 + 28, "{tag}: IPv4 header and 8 bytes quoted");
        assert_eq!(checksum(&out[14..34]), 0, "{tag}: IPv4 header checksum");
        assert_eq!(out[23], 1, "{tag}: ICMP");
        assert_eq!(out[26..30], big[30..34], "{tag}: from the VIP");
        assert_eq!(out[30..34], big[26..30], "{tag}: to the client");
        assert_eq!(out[34..36], [3, 4], "{tag}: fragmentation needed");
        assert_eq!(u16::from_be_bytes([out[40], out[41]]) as usize, fits, "{tag}: the MTU that fits");
        assert_eq!(out[42..], big[14..42], "{tag}: the quote");
        assert_eq!(checksum(&out[34..]), 0, "{tag}: ICMP checksum");
        // Without Don't Fragment no error may be sent: dropped, counted.
        let mut may_fragment = big.clone();
        may_fragment[20] = 0;
        let (action, _) = lab.run(&frame::with_ipv4_checksum(may_fragment));
        assert_eq!(action, XDP_DROP, "{tag}: fragmentable and too big");
        assert_eq!(lab.counter(GlobalCounter::DropTooBig), 1, "{tag}");
    }
    assert_eq!(lab.counter(GlobalCounter::TooBigAnswered), 1, "{tag}");
}

#[test]
fn too_big_ipv4_over_ipip() {
    too_big("big-ipip44", false, false, ENCAP_IPIP);
}

#[test]
fn too_big_ipv4_over_gue6() {
    too_big("big-gue46", false, true, ENCAP_GUE);
}

#[test]
fn too_big_ipv6_over_gue() {
    too_big("big-gue66", true, true, ENCAP_GUE);
}

#[test]
fn too_big_ipv6_over_ipip4() {
    too_big("big-ipip64", true, false, ENCAP_IPIP);
}
