//! ICMP errors about a VIP flow, sent on to the flow's backend.
//!
//! With DSR the backend answers the client from the VIP, so a router's
//! "fragmentation needed" (ICMPv6 "packet too big", "unreachable") about such
//! an answer is addressed to the VIP and reaches the load balancer, not the
//! backend whose TCP stack needs it. Left to the local stack, path MTU
//! discovery breaks. The quoted packet is the backend's answer; turned around,
//! it is the flow's key, which finds the flow's backend as its packets would
//! (the connection table, else the hash a first packet would get). An ICMP
//! error never creates or refreshes an entry.

use aya_ebpf::programs::XdpContext;
use veer_abi::{ipv4_mapped, FlowKey, GlobalCounter, Service, IPPROTO_TCP, IPPROTO_UDP};

use crate::{
    access::ptr_at,
    conntrack, forward,
    headers::{icmp::IcmpHdr, ipv4::Ipv4Hdr, ipv6::Ipv6Hdr, l4::UdpHdr},
    parse::VipPacket,
    scheduler::{self, Purpose},
    stats,
    verdict::Drop,
};

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
    let key = FlowKey {
        src: ipv4_mapped(inner.dst),
        dst: ipv4_mapped(inner.src),
        sport: cport,
        dport: vport,
        proto: inner.proto,
        _pad: [0; 3],
    };
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
    let key = FlowKey { src: inner.dst, dst: inner.src, sport: cport, dport: vport, proto: inner.next_header, _pad: [0; 3] };
    Ok(Some(VipPacket { key, bits: VipPacket::ICMP_ERROR, l4: l4 as u32 }))
}

/// Sends an ICMP error about `key` to the backend that has (or would get) the flow.
#[inline(always)]
pub fn to_flow_backend(ctx: &XdpContext, svc: &Service, key: &FlowKey) -> Result<u32, Drop> {
    let b = conntrack::peek(svc, key)
        .map(|f| f.backend)
        .or_else(|| scheduler::pick(svc, key, Purpose::Recompute, veer_abi::NO_BACKEND).map(|(_, b)| b))
        .ok_or(Drop::IcmpNoFlow)?;
    stats::count(GlobalCounter::IcmpToBackend);
    forward::to_backend(ctx, b)
}
