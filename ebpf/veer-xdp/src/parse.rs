//! Ethernet -> IPv4/IPv6 -> TCP/UDP, down to the flow's 5-tuple.
//!
//! A well-formed TCP or UDP packet yields its 5-tuple, and the service lookup
//! decides whether it is for a VIP: one hash lookup on the hot path. Only a
//! packet that is cut short or invalid past its IP header asks the VIP table
//! whether it was addressed to a VIP: then it is an `Err(Drop)` (counted,
//! dropped, never forwarded); otherwise it is `Ok(None)`, passed on untouched.
//! A frame too short to hold an IP header cannot be told apart: it is passed.
//! In the entry program, a packet whose destination the VIP filter clears is
//! passed as soon as that is read ([`vip_flow_of`]), unless veer waits for
//! answers to other addresses (NAT, GUE).
//!
//! An ICMP error (frag needed, packet too big, unreachable) yields the flow
//! it quotes, turned around to the client's direction (see `icmp` and `nat::icmp`).

use aya_ebpf::programs::XdpContext;
use veer_abi::{ipv4_mapped, FlowKey, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP};

use crate::{
    access::ptr_at,
    headers::{
        eth::{EthHdr, ETH_P_IP, ETH_P_IPV6},
        field::{last_word, word, words16},
        icmp::IcmpHdr,
        ipv4::Ipv4Hdr,
        ipv6::{Ipv6Hdr, NEXTHDR_AUTH, NEXTHDR_DEST, NEXTHDR_FRAGMENT, NEXTHDR_HOP, NEXTHDR_ROUTING},
        l4::{TcpHdr, UdpHdr},
    },
    verdict::Drop,
    vip_filter::{self, is_vip, Judged},
};

/// A packet for a VIP: its 5-tuple and, for TCP, its flags (0 for UDP).
/// For an ICMP error, the 5-tuple of the flow it quotes, as the client sends it.
///
/// No `bool` and no padding: a niche or an undefined byte in the `Result`
/// payload makes LLVM move undefined registers, which the verifier rejects
/// ("!read_ok"; see `verdict::Drop`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct VipPacket {
    /// The 5-tuple, in the client's direction.
    pub key: FlowKey,
    /// TCP flags in the low byte; [`VipPacket::ICMP_ERROR`] for an ICMP error.
    pub bits: u32,
    /// Offset of the TCP or UDP header in the frame (of the ICMP header for
    /// an ICMP error).
    pub l4: u32,
}

impl VipPacket {
    /// `bits`: this is an ICMP error about the flow in `key`.
    pub const ICMP_ERROR: u32 = 1 << 8;
    /// `bits`: the VIP filter cleared the destination ([`vip_flow_of`]
    /// only): no VIP, but maybe an answer veer waits for.
    pub const NOT_VIP: u32 = 1 << 9;

    /// Whether the VIP filter showed the destination is no VIP.
    #[inline(always)]
    pub fn is_not_vip(&self) -> bool {
        self.bits & Self::NOT_VIP != 0
    }

    /// The TCP flags (0 for UDP and ICMP errors).
    #[inline(always)]
    pub fn tcp_flags(&self) -> u8 {
        self.bits as u8
    }

    /// Whether this is an ICMP error about the flow in `key`.
    #[inline(always)]
    pub fn is_icmp_error(&self) -> bool {
        self.bits & Self::ICMP_ERROR != 0
    }
}

/// The packet's 5-tuple if it is addressed to a VIP, or `None` for any other packet.
#[inline(always)]
pub fn flow_of(ctx: &XdpContext) -> Result<Option<VipPacket>, Drop> {
    parse(ctx, false)
}

/// [`flow_of`] for the entry program: `None` as soon as the destination
/// shows the packet is surely none of veer's, and [`VipPacket::NOT_VIP`]
/// marked if it is no VIP ([`vip_filter::judge`]).
#[inline(always)]
pub fn vip_flow_of(ctx: &XdpContext) -> Result<Option<VipPacket>, Drop> {
    parse(ctx, true)
}

#[inline(always)]
fn parse(ctx: &XdpContext, early_pass: bool) -> Result<Option<VipPacket>, Drop> {
    // A runt frame cannot be for a VIP: leave it to the kernel.
    let Ok(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return Ok(None);
    };
    match unsafe { (*eth).ether_type() } {
        ETH_P_IP => ipv4(ctx, early_pass),
        ETH_P_IPV6 => ipv6(ctx, early_pass),
        _ => Ok(None),
    }
}

/// [`flow_of`] in a call of its own, for the NAT program: the parse's
/// spills then leave the stack before the NAT rewrite's calls need it.
#[inline(never)]
pub fn flow_of_outlined(ctx: &XdpContext) -> Result<Option<VipPacket>, Drop> {
    flow_of(&crate::access::callee_ctx(ctx))
}

#[inline(always)]
fn frame_len(ctx: &XdpContext) -> usize {
    ctx.data_end() - ctx.data()
}

/// A problem past the IP header drops the packet only if it was for a VIP
/// (`dst` gives its destination, made only then).
#[inline(always)]
fn for_vip_only(r: Result<Option<VipPacket>, Drop>, dst: impl Fn() -> [u8; 16]) -> Result<Option<VipPacket>, Drop> {
    match r {
        Err(reason) if is_vip(&dst()) => Err(reason),
        Err(_) => Ok(None),
        ok => ok,
    }
}

#[inline(always)]
fn ipv4(ctx: &XdpContext, early_pass: bool) -> Result<Option<VipPacket>, Drop> {
    let Ok(ip) = ptr_at::<Ipv4Hdr>(ctx, EthHdr::LEN) else {
        return Ok(None);
    };
    let ip = unsafe { &*ip };
    let judged = if early_pass { vip_filter::judge(word(&ip.dst)) } else { Judged::MaybeVip };
    if judged == Judged::Pass {
        return Ok(None);
    }
    marked(for_vip_only(ipv4_l4(ctx, ip), || ipv4_mapped(ip.dst)), judged)
}

#[inline(always)]
fn ipv4_l4(ctx: &XdpContext, ip: &Ipv4Hdr) -> Result<Option<VipPacket>, Drop> {
    if ip.version() != 4 || ip.header_len() < 20 {
        return Err(Drop::Malformed);
    }
    let total = ip.total_len();
    if total < ip.header_len() {
        return Err(Drop::Malformed);
    }
    if EthHdr::LEN + total > frame_len(ctx) {
        return Err(Drop::Truncated);
    }
    if ip.is_fragment() {
        return Err(Drop::Fragment);
    }
    let l4 = EthHdr::LEN + ip.header_len();
    if ip.proto == IPPROTO_ICMP {
        return quoted_v4(ctx, l4, EthHdr::LEN + total, &ip.dst);
    }
    let Some((ports, tcp_flags)) = ports(ctx, ip.proto, l4, EthHdr::LEN + total)? else {
        return Ok(None);
    };
    let key = FlowKey::v4_wire(word(&ip.src), word(&ip.dst), ports, ip.proto);
    Ok(Some(VipPacket { key, bits: tcp_flags as u32, l4: l4 as u32 }))
}

#[inline(always)]
fn ipv6(ctx: &XdpContext, early_pass: bool) -> Result<Option<VipPacket>, Drop> {
    let Ok(ip) = ptr_at::<Ipv6Hdr>(ctx, EthHdr::LEN) else {
        return Ok(None);
    };
    let ip = unsafe { &*ip };
    let judged = if early_pass { vip_filter::judge(last_word(&ip.dst)) } else { Judged::MaybeVip };
    if judged == Judged::Pass {
        return Ok(None);
    }
    marked(for_vip_only(ipv6_l4(ctx, ip), || ip.dst), judged)
}

/// Whether an IPv6 address in the frame is IPv4-mapped (`::ffff:a.b.c.d`):
/// `veer_abi::is_ipv4_mapped` by three word loads, where that one's byte
/// compares would be twelve loads of packet memory.
#[inline(always)]
fn is_mapped(addr: &[u8; 16]) -> bool {
    let w = words16(addr);
    w[0] == 0 && w[1] == 0 && w[2] == u32::from_ne_bytes([0, 0, 0xff, 0xff])
}

/// The parse's result with what the VIP filter said of its destination.
#[inline(always)]
fn marked(r: Result<Option<VipPacket>, Drop>, judged: Judged) -> Result<Option<VipPacket>, Drop> {
    match r {
        Ok(Some(mut pkt)) if judged == Judged::NotVip => {
            pkt.bits |= VipPacket::NOT_VIP;
            Ok(Some(pkt))
        }
        r => r,
    }
}

#[inline(always)]
fn ipv6_l4(ctx: &XdpContext, ip: &Ipv6Hdr) -> Result<Option<VipPacket>, Drop> {
    if ip.version() != 6 {
        return Err(Drop::Malformed);
    }
    // IPv4-mapped addresses never appear on the wire (RFC 4291), and veer
    // keys IPv4 flows and services by them: such a packet would pass for an
    // IPv4 flow (and NAT would write IPv4 fields into its IPv6 header).
    if is_mapped(&ip.src) || is_mapped(&ip.dst) {
        return Err(Drop::Malformed);
    }
    let end = EthHdr::LEN + Ipv6Hdr::LEN + ip.payload_len();
    if end > frame_len(ctx) {
        return Err(Drop::Truncated);
    }
    let proto = ip.next_header;
    match proto {
        NEXTHDR_FRAGMENT => return Err(Drop::Fragment),
        NEXTHDR_HOP | NEXTHDR_ROUTING | NEXTHDR_AUTH | NEXTHDR_DEST => return Err(Drop::Ipv6ExtHeader),
        IPPROTO_ICMPV6 => return quoted_v6(ctx, EthHdr::LEN + Ipv6Hdr::LEN, end, &ip.dst),
        _ => {}
    }
    let Some((ports, tcp_flags)) = ports(ctx, proto, EthHdr::LEN + Ipv6Hdr::LEN, end)? else {
        return Ok(None);
    };
    let key = FlowKey::v6_wire(words16(&ip.src), words16(&ip.dst), ports, proto);
    Ok(Some(VipPacket { key, bits: tcp_flags as u32, l4: (EthHdr::LEN + Ipv6Hdr::LEN) as u32 }))
}

/// The ports word (source and destination port as on the wire, one load;
/// see [`FlowKey::v4_wire`]) and TCP flags of a TCP or UDP header at `l4`,
/// which must end by `ip_end`; `None` for other protocols.
#[inline(always)]
fn ports(ctx: &XdpContext, proto: u8, l4: usize, ip_end: usize) -> Result<Option<(u32, u8)>, Drop> {
    match proto {
        IPPROTO_TCP => {
            let tcp = unsafe { &*ptr_at::<TcpHdr>(ctx, l4)? };
            let len = tcp.header_len();
            if len < 20 {
                return Err(Drop::Malformed);
            }
            if l4 + len > ip_end {
                return Err(Drop::Truncated);
            }
            Ok(Some((ports_word(tcp as *const TcpHdr), tcp.flags())))
        }
        IPPROTO_UDP => {
            let udp = unsafe { &*ptr_at::<UdpHdr>(ctx, l4)? };
            if l4 + UdpHdr::LEN > ip_end {
                return Err(Drop::Truncated);
            }
            if udp.len() < UdpHdr::LEN {
                return Err(Drop::Malformed);
            }
            Ok(Some((ports_word(udp as *const UdpHdr), 0)))
        }
        _ => Ok(None),
    }
}

/// The first word of a TCP or UDP header (`T`, at least 4 bytes): both ports.
#[inline(always)]
fn ports_word<T>(l4: *const T) -> u32 {
    // SAFETY: the caller's header is in the frame and starts with the two
    // ports; one load (see `headers::word`).
    word(unsafe { &*(l4 as *const [u8; 4]) })
}

/// The ports of a quoted TCP or UDP header at `at` (the first 8 bytes, which
/// every ICMP error quotes), or `None` for other protocols.
#[inline(always)]
fn quoted_ports(ctx: &XdpContext, proto: u8, at: usize, ip_end: usize) -> Result<Option<(u16, u16)>, Drop> {
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
        return Ok(None);
    }
    let l4 = unsafe { &*ptr_at::<UdpHdr>(ctx, at)? };
    if at + UdpHdr::LEN > ip_end {
        return Err(Drop::Truncated);
    }
    Ok(Some((u16::from_be_bytes(l4.sport), u16::from_be_bytes(l4.dport))))
}

/// An IPv4 ICMP message at `l4`, addressed to `vip`: the flow it quotes, if
/// it is an error about a packet `vip` sent.
#[inline(always)]
pub fn quoted_v4(ctx: &XdpContext, l4: usize, ip_end: usize, vip: &[u8; 4]) -> Result<Option<VipPacket>, Drop> {
    let icmp = unsafe { &*ptr_at::<IcmpHdr>(ctx, l4)? };
    if !icmp.is_v4_error() {
        return Ok(None);
    }
    let at = l4 + IcmpHdr::LEN;
    let inner = unsafe { &*ptr_at::<Ipv4Hdr>(ctx, at)? };
    if inner.version() != 4 || inner.header_len() < 20 {
        return Err(Drop::Malformed);
    }
    if inner.src != *vip {
        return Ok(None);
    }
    let Some((vport, cport)) = quoted_ports(ctx, inner.proto, at + inner.header_len(), ip_end)? else {
        return Ok(None);
    };
    let key = FlowKey::v4(inner.dst, inner.src, cport, vport, inner.proto);
    Ok(Some(VipPacket { key, bits: VipPacket::ICMP_ERROR, l4: l4 as u32 }))
}

/// An ICMPv6 message at `l4`, addressed to `vip`: the flow it quotes, if it
/// is an error about a packet `vip` sent (with no extension headers).
#[inline(always)]
pub fn quoted_v6(ctx: &XdpContext, l4: usize, ip_end: usize, vip: &[u8; 16]) -> Result<Option<VipPacket>, Drop> {
    let icmp = unsafe { &*ptr_at::<IcmpHdr>(ctx, l4)? };
    if !icmp.is_v6_error() {
        return Ok(None);
    }
    let at = l4 + IcmpHdr::LEN;
    let inner = unsafe { &*ptr_at::<Ipv6Hdr>(ctx, at)? };
    if inner.version() != 6 {
        return Err(Drop::Malformed);
    }
    if inner.src != *vip {
        return Ok(None);
    }
    let Some((vport, cport)) = quoted_ports(ctx, inner.next_header, at + Ipv6Hdr::LEN, ip_end)? else {
        return Ok(None);
    };
    let key = FlowKey::v6(&inner.dst, &inner.src, cport, vport, inner.next_header);
    Ok(Some(VipPacket { key, bits: VipPacket::ICMP_ERROR, l4: l4 as u32 }))
}
