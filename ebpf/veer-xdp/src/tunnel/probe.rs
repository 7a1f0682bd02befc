//! A VIP-path health check's probe to a tunnelled backend (TC egress):
//! the probe goes inside the tunnel, as the clients' packets do, so a
//! backend that lost its way out of the tunnel (its agent gone, no
//! `ipip`/`fou`) fails its check.

use aya_ebpf::{
    bindings::{bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_ENCAP_L3_IPV4, BPF_F_ADJ_ROOM_ENCAP_L3_IPV6},
    bindings::{BPF_F_ADJ_ROOM_ENCAP_L4_UDP, TC_ACT_REDIRECT},
    helpers::{bpf_redirect, bpf_redirect_neigh},
    programs::TcContext,
};
use veer_abi::{is_ipv4_mapped, Backend, ENCAP_GUE};

use super::outer;
use crate::{
    fib,
    headers::{eth::EthHdr, ipv4::Ipv4Hdr, ipv6::Ipv6Hdr, l4::UdpHdr},
    snat,
};

const TC_ACT_OK: i32 = 0;
const TC_ACT_SHOT: i32 = 2;

/// Puts the probe in `ctx` inside `b`'s tunnel and sends it toward `b`'s
/// address. The outer UDP checksum of GUE over IPv6 is left zero (RFC
/// 6935): the probe's own checksum may still be the NIC's to fill in.
#[inline(always)]
pub fn encapsulate(ctx: &TcContext, b: &Backend) -> i32 {
    encapsulated(ctx, b).unwrap_or(TC_ACT_SHOT)
}

#[inline(always)]
fn encapsulated(ctx: &TcContext, b: &Backend) -> Option<i32> {
    let inner_v4 = ctx.load::<[u8; 2]>(12).ok()? == [0x08, 0x00];
    let inner_len = (ctx.len() as usize).checked_sub(EthHdr::LEN)?;
    let outer_v4 = is_ipv4_mapped(&b.addr);
    let gue = b.encap == ENCAP_GUE;
    let ip_len = if outer_v4 { Ipv4Hdr::LEN } else { Ipv6Hdr::LEN };
    let overhead = ip_len + if gue { UdpHdr::LEN } else { 0 };
    let src = snat::address(b.snat)?;
    let way = fib::route_skb(ctx, outer_v4, src, &b.addr)?;
    let l3 = if outer_v4 { BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 } else { BPF_F_ADJ_ROOM_ENCAP_L3_IPV6 };
    let flags = l3 | if gue { BPF_F_ADJ_ROOM_ENCAP_L4_UDP } else { 0 };
    ctx.adjust_room(overhead as i32, BPF_ADJ_ROOM_MAC, flags as u64).ok()?;
    let proto = outer::proto(gue, inner_v4);
    let total = inner_len + overhead;
    // Built here, then stored: a socket buffer is written through helpers.
    if outer_v4 {
        // SAFETY: a header of byte arrays; every field is written below.
        // 8-aligned on the stack: `outer::fill4` and `fill6` store by
        // words, and the verifier wants stack words aligned.
        let mut ip: Aligned<Ipv4Hdr> = unsafe { core::mem::zeroed() };
        outer::fill4(&mut ip.0, 0, total as u16, proto, src, &b.addr);
        ctx.store(EthHdr::LEN, &ip.0, 0).ok()?;
    } else {
        // SAFETY: as above.
        let mut ip: Aligned<Ipv6Hdr> = unsafe { core::mem::zeroed() };
        outer::fill6(&mut ip.0, 0, (total - Ipv6Hdr::LEN) as u16, proto, 0, (src, &b.addr));
        ctx.store(EthHdr::LEN, &ip.0, 0).ok()?;
    }
    if gue {
        let mut udp = [0u8; UdpHdr::LEN];
        udp[0..2].copy_from_slice(&0xc000u16.to_be_bytes());
        udp[2..4].copy_from_slice(&b.port.to_be_bytes());
        udp[4..6].copy_from_slice(&((inner_len + UdpHdr::LEN) as u16).to_be_bytes());
        ctx.store(EthHdr::LEN + ip_len, &udp, 0).ok()?;
    }
    leave(ctx, &way, outer_v4)
}

/// Sends the encapsulated probe by `way`, its Ethernet header written.
#[inline(always)]
fn leave(ctx: &TcContext, way: &fib::SkbWay, outer_v4: bool) -> Option<i32> {
    let mut eth = [0u8; EthHdr::LEN];
    eth[..6].copy_from_slice(&way.dmac);
    eth[6..12].copy_from_slice(&way.smac);
    eth[12..].copy_from_slice(if outer_v4 { &[0x08, 0x00] } else { &[0x86, 0xdd] });
    ctx.store(0, &eth, 0).ok()?;
    // A redirected probe passes this interface's (or another's) egress
    // again: unmarked, it is not put in a tunnel twice.
    ctx.skb.set_mark(0);
    if let Some(nh) = way.unresolved {
        // No neighbour entry for the next hop yet (nothing else sent there,
        // or it expired: XDP's lookups never refresh one): the kernel
        // resolves it and sends the probe then, MACs filled in. Dropped,
        // the probe would never make the kernel ask, and the backend
        // would stay down.
        let size = core::mem::size_of::<aya_ebpf::bindings::bpf_redir_neigh>() as i32;
        // SAFETY: the next hop's address on this program's stack, read by the helper.
        let r = unsafe { bpf_redirect_neigh(way.ifindex, &nh as *const _ as *mut _, size, 0) };
        return Some(r as i32);
    }
    let ifindex = way.ifindex;
    if ifindex == unsafe { (*ctx.skb.skb).ifindex } {
        return Some(TC_ACT_OK);
    }
    // SAFETY: a plain redirect to the routed interface.
    unsafe { bpf_redirect(ifindex, 0) };
    Some(TC_ACT_REDIRECT)
}

/// A header kept 8-aligned on the stack.
#[repr(C, align(8))]
struct Aligned<T>(T);
