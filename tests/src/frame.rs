//! Crafted Ethernet frames for `BPF_PROG_TEST_RUN`.

use std::net::{IpAddr, SocketAddr};

/// MAC the crafted frames are sent to (the load balancer).
pub const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfe];
/// MAC the crafted frames come from (the client or router).
pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

/// Transport of a crafted frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4 {
    /// TCP with the given flags byte (0x02 = SYN).
    Tcp(u8),
    /// UDP.
    Udp,
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in data.chunks(2) {
        sum += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A frame from `src` to `dst` over `l4` carrying `payload`. Both addresses
/// must be of one family. Headers are valid (lengths, IPv4 checksum).
pub fn packet(src: SocketAddr, dst: SocketAddr, l4: L4, payload: &[u8]) -> Vec<u8> {
    let mut seg = Vec::new();
    seg.extend_from_slice(&src.port().to_be_bytes());
    seg.extend_from_slice(&dst.port().to_be_bytes());
    let proto = match l4 {
        L4::Tcp(flags) => {
            seg.extend_from_slice(&1u32.to_be_bytes()); // seq
            seg.extend_from_slice(&0u32.to_be_bytes()); // ack
            seg.extend_from_slice(&[0x50, flags]); // data offset 5
            seg.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]); // window, csum, urg
            6
        }
        L4::Udp => {
            seg.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
            seg.extend_from_slice(&[0, 0]);
            17
        }
    };
    seg.extend_from_slice(payload);
    ip_frame(src.ip(), dst.ip(), proto, &seg)
}

/// A TCP SYN from `src` to `dst`.
pub fn tcp_syn(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    packet(src, dst, L4::Tcp(0x02), &[])
}

/// A TCP segment with a valid checksum: `flags`, `seq`, `ack` and the
/// `options` (a multiple of 4 bytes), no payload.
pub fn tcp_segment(src: SocketAddr, dst: SocketAddr, flags: u8, seq: u32, ack: u32, options: &[u8]) -> Vec<u8> {
    tcp_data(src, dst, (flags, seq, ack), options, &[])
}

/// [`tcp_segment`] carrying `payload`; `head` is (flags, seq, ack).
pub fn tcp_data(src: SocketAddr, dst: SocketAddr, head: (u8, u32, u32), options: &[u8], payload: &[u8]) -> Vec<u8> {
    let (flags, seq, ack) = head;
    assert_eq!(options.len() % 4, 0, "TCP options pad to 4 bytes");
    let mut seg = Vec::new();
    seg.extend_from_slice(&src.port().to_be_bytes());
    seg.extend_from_slice(&dst.port().to_be_bytes());
    seg.extend_from_slice(&seq.to_be_bytes());
    seg.extend_from_slice(&ack.to_be_bytes());
    seg.extend_from_slice(&[(((20 + options.len()) / 4) << 4) as u8, flags]);
    seg.extend_from_slice(&[0x72, 0x10, 0, 0, 0, 0]); // window 29200, checksum, urg
    seg.extend_from_slice(options);
    seg.extend_from_slice(payload);
    let mut pseudo = match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut p = s.octets().to_vec();
            p.extend_from_slice(&d.octets());
            p.extend_from_slice(&[0, 6]);
            p.extend_from_slice(&(seg.len() as u16).to_be_bytes());
            p
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut p = s.octets().to_vec();
            p.extend_from_slice(&d.octets());
            p.extend_from_slice(&(seg.len() as u32).to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, 6]);
            p
        }
        _ => panic!("mixed address families: {src} -> {dst}"),
    };
    pseudo.extend_from_slice(&seg);
    let c = checksum(&pseudo);
    seg[16..18].copy_from_slice(&c.to_be_bytes());
    ip_frame(src.ip(), dst.ip(), 6, &seg)
}

/// TCP flag bytes as frames carry them.
pub mod flags {
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// ACK.
    pub const ACK: u8 = 0x10;
    /// PSH and ACK.
    pub const PSH_ACK: u8 = 0x18;
    /// SYN and ACK.
    pub const SYN_ACK: u8 = 0x12;
    /// RST.
    pub const RST: u8 = 0x04;
    /// FIN and ACK.
    pub const FIN_ACK: u8 = 0x11;
}

/// The options of a Linux client's SYN: MSS 1460, SACK permitted,
/// timestamps, window scale 7.
pub const SYN_OPTIONS: [u8; 20] = [2, 4, 5, 180, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7];

/// A UDP datagram from `src` to `dst`.
pub fn udp(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
    packet(src, dst, L4::Udp, payload)
}

/// An ARP request (who-has), which is never for a VIP.
pub fn arp_request() -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&CLIENT_MAC);
    f.extend_from_slice(&[10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 10, 0, 0, 2]);
    f
}

/// An ICMP error from `router` to `to` quoting `quoted` (an Ethernet frame, as
/// built by [`packet`]; its IP packet is quoted, cut to `quote_len` bytes).
/// IPv4: destination unreachable, fragmentation needed (type 3, code 4),
/// next-hop MTU 1400. IPv6: packet too big (type 2), MTU 1400.
pub fn icmp_error(router: IpAddr, to: IpAddr, quoted: &[u8], quote_len: usize) -> Vec<u8> {
    let head = match to {
        IpAddr::V4(_) => [3, 4, 0, 0, 0, 0, 0x05, 0x78],
        IpAddr::V6(_) => [2, 0, 0, 0, 0, 0, 0x05, 0x78],
    };
    icmp_message(router, to, head, quoted, quote_len)
}

/// A port unreachable from `host` to `to` quoting `quoted` (ICMP type 3
/// code 3; ICMPv6 type 1 code 4), as a host with nothing on the port sends.
pub fn port_unreachable(host: IpAddr, to: IpAddr, quoted: &[u8]) -> Vec<u8> {
    let head = if to.is_ipv4() { [3, 3, 0, 0, 0, 0, 0, 0] } else { [1, 4, 0, 0, 0, 0, 0, 0] };
    icmp_message(host, to, head, quoted, quoted.len() - 14)
}

/// An ICMP error with header `head` (type, code, checksum, rest).
fn icmp_message(router: IpAddr, to: IpAddr, head: [u8; 8], quoted: &[u8], quote_len: usize) -> Vec<u8> {
    let inner = &quoted[14..(14 + quote_len).min(quoted.len())];
    let mut msg = head.to_vec();
    msg.extend_from_slice(inner);
    let c = match (router, to) {
        (IpAddr::V6(r), IpAddr::V6(t)) => {
            // ICMPv6 covers a pseudo-header too.
            let mut all = r.octets().to_vec();
            all.extend_from_slice(&t.octets());
            all.extend_from_slice(&(msg.len() as u32).to_be_bytes());
            all.extend_from_slice(&[0, 0, 0, 58]);
            all.extend_from_slice(&msg);
            checksum(&all)
        }
        _ => checksum(&msg),
    };
    msg[2..4].copy_from_slice(&c.to_be_bytes());
    ip_frame(router, to, if to.is_ipv4() { 1 } else { 58 }, &msg)
}

/// An ICMP echo request (IPv4) or ICMPv6 echo request from `src` to `dst`.
pub fn echo_request(src: IpAddr, dst: IpAddr) -> Vec<u8> {
    let msg = if dst.is_ipv4() { vec![8, 0, 0, 0, 0, 1, 0, 1] } else { vec![128, 0, 0, 0, 0, 1, 0, 1] };
    ip_frame(src, dst, if dst.is_ipv4() { 1 } else { 58 }, &msg)
}

/// `f` (an IPv4 frame) with its IP header checksum made right again.
pub fn with_ipv4_checksum(mut f: Vec<u8>) -> Vec<u8> {
    let ihl = (f[14] & 0x0f) as usize * 4;
    f[24..26].copy_from_slice(&[0, 0]);
    let c = checksum(&f[14..14 + ihl]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f
}

/// An Ethernet frame carrying an IP packet with protocol `proto` and `payload`.
fn ip_frame(src: IpAddr, dst: IpAddr, proto: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&LB_MAC);
    f.extend_from_slice(&CLIENT_MAC);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            f.extend_from_slice(&[0x08, 0x00]);
            let mut ip = vec![0x45, 0];
            ip.extend_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
            ip.extend_from_slice(&[0, 1, 0x40, 0, 64, proto, 0, 0]); // id, DF, ttl
            ip.extend_from_slice(&s.octets());
            ip.extend_from_slice(&d.octets());
            let c = checksum(&ip);
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            f.extend_from_slice(&ip);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
            f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
            f.extend_from_slice(&[proto, 64]);
            f.extend_from_slice(&s.octets());
            f.extend_from_slice(&d.octets());
        }
        _ => panic!("mixed address families: {src} -> {dst}"),
    }
    f.extend_from_slice(payload);
    f
}
