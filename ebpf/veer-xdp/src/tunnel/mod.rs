//! DSR across routers: the packet goes to its backend's address inside an
//! outer IP header (IPIP) or an outer IP and UDP header (GUE variant 1: the
//! inner packet straight after UDP), routed as NAT's packets are ([`fib`]).
//! The backend takes the outer header off and answers the client directly.
//! The inner packet is not touched.
//!
//! A packet that would no longer fit the route's MTU is answered to its
//! client with ICMP "fragmentation needed" / "packet too big" ([`too_big`]).
//! A packet a backend's agent sends back through the tunnel comes out of it
//! in [`returned`].

mod outer;
pub mod probe;
pub mod returned;
mod too_big;

use aya_ebpf::{
    bindings::xdp_action,
    helpers::{bpf_csum_diff, bpf_xdp_adjust_head},
    programs::XdpContext,
};
use veer_abi::{
    csum, is_ipv4_mapped, Backend, FlowKey, GlobalCounter, ENCAP_GUE, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP,
};

use crate::{
    access::{callee_ctx, mut_ptr_at, ptr_at},
    fib,
    headers::{
        eth::{EthHdr, ETH_P_IP, ETH_P_IPV6},
        ipv4::Ipv4Hdr,
        ipv6::Ipv6Hdr,
        l4::UdpHdr,
    },
    snat, stats,
    verdict::Drop,
};

/// Don't Fragment, in the IPv4 header's flags word.
const IP_DF: u8 = 0x40;

/// The flow's hash for its outer header (GUE's source port, IPv6's flow
/// label): the same for each of the flow's packets, spread across flows, so
/// that routers' ECMP spreads the flows.
#[inline(always)]
pub fn entropy(key: &FlowKey) -> u32 {
    // SAFETY: FlowKey is 40 bytes, 4-aligned.
    let w = unsafe { &*(key as *const FlowKey as *const [u32; 10]) };
    let x = (w[0] ^ w[1] ^ w[2] ^ w[3] ^ w[7].rotate_left(11) ^ w[8].rotate_left(5)).wrapping_mul(0x9e37_79b1);
    x ^ (x >> 15)
}

/// Sends the frame to backend `b` through its tunnel; `hash` is the flow's
/// [`entropy`]. Returns the XDP action; a drop is counted here. A call of
/// its own: its headers' registers stay off its callers' stacks.
#[inline(never)]
pub fn send(ctx: &XdpContext, b: &Backend, hash: u32) -> u32 {
    let ctx = callee_ctx(ctx);
    match encapsulate(&ctx, b, hash) {
        Ok(action) => action,
        Err(reason) => {
            stats::count(reason.counter());
            xdp_action::XDP_DROP
        }
    }
}

/// The inner packet's family, DSCP/ECN byte, and whether it may be
/// fragmented (an IPv4 packet without Don't Fragment).
#[inline(always)]
fn inner(ctx: &XdpContext) -> Result<(bool, u8, bool), Drop> {
    let eth = unsafe { &*ptr_at::<EthHdr>(ctx, 0)? };
    match eth.ether_type() {
        ETH_P_IP => {
            let ip = unsafe { &*ptr_at::<Ipv4Hdr>(ctx, EthHdr::LEN)? };
            Ok((true, ip.tos, ip.frag_off[0] & IP_DF == 0))
        }
        ETH_P_IPV6 => {
            let ip = unsafe { &*ptr_at::<Ipv6Hdr>(ctx, EthHdr::LEN)? };
            Ok((false, (ip.vtc_flow[0] << 4) | (ip.vtc_flow[1] >> 4), false))
        }
        _ => Err(Drop::Malformed),
    }
}

#[inline(always)]
fn encapsulate(ctx: &XdpContext, b: &Backend, hash: u32) -> Result<u32, Drop> {
    let (inner_v4, tos, fragmentable) = inner(ctx)?;
    let inner_len = ctx.data_end() - ctx.data() - EthHdr::LEN;
    let outer_v4 = is_ipv4_mapped(&b.addr);
    let gue = b.encap == ENCAP_GUE;
    let ip_len = if outer_v4 { Ipv4Hdr::LEN } else { Ipv6Hdr::LEN };
    let overhead = ip_len + if gue { UdpHdr::LEN } else { 0 };
    let src = snat::address(b.snat).ok_or(Drop::BadBackend)?;
    let mtu = fib::route(ctx, outer_v4, src, &b.addr)? as usize;
    if mtu != 0 && inner_len + overhead > mtu {
        if fragmentable {
            return Err(Drop::TooBig);
        }
        return Ok(too_big::answer(ctx, inner_v4, (mtu - overhead) as u32));
    }
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(overhead as i32)) } != 0 {
        return Err(Drop::TooBig);
    }
    let eth = unsafe { &mut *mut_ptr_at::<EthHdr>(ctx, 0)? };
    eth.ether_type = if outer_v4 { ETH_P_IP } else { ETH_P_IPV6 }.to_be_bytes();
    let proto = outer::proto(gue, inner_v4);
    let outer_len = inner_len + overhead;
    if outer_v4 {
        let ip = unsafe { &mut *mut_ptr_at::<Ipv4Hdr>(ctx, EthHdr::LEN)? };
        outer::fill4(ip, tos, outer_len as u16, proto, src, &b.addr);
    } else {
        let ip = unsafe { &mut *mut_ptr_at::<Ipv6Hdr>(ctx, EthHdr::LEN)? };
        outer::fill6(ip, tos, (outer_len - Ipv6Hdr::LEN) as u16, proto, hash, (src, &b.addr));
    }
    if gue {
        let udp = unsafe { &mut *mut_ptr_at::<UdpHdr>(ctx, EthHdr::LEN + ip_len)? };
        // Ephemeral ports: the upper half of the range.
        udp.sport = (0x8000 | (hash as u16)).to_be_bytes();
        udp.dport = b.port.to_be_bytes();
        udp.len = ((inner_len + UdpHdr::LEN) as u16).to_be_bytes();
        // Zero over IPv4 (RFC 768); over IPv6 it must be set (RFC 8200).
        udp.check = [0; 2];
        if !outer_v4 {
            let check = gue6_check(ctx, inner_v4) as u16;
            let udp = unsafe { &mut *mut_ptr_at::<UdpHdr>(ctx, EthHdr::LEN + ip_len)? };
            udp.check = check.to_ne_bytes();
        }
    }
    stats::count(GlobalCounter::Encapsulated);
    fib::out(ctx)
}

/// An outer IPv6 GUE packet's UDP checksum as stored, or zero where it
/// cannot be had cheaply.
///
/// The payload is not read: its inner TCP, UDP or ICMPv6 checksum is valid,
/// so the inner segment sums to the complement of the inner pseudo header,
/// and the payload to the inner IP header's sum plus that (the way Linux's
/// local checksum offload sums a tunnel). An inner ICMPv4 message sums to
/// zero, and so does an inner IPv4 header with a valid checksum. An inner
/// IPv4 UDP datagram without a checksum (or any other protocol) leaves the
/// checksum zero, as RFC 6935 allows a tunnel. A call of its own: off the
/// stack of the common path.
#[inline(never)]
fn gue6_check(ctx: &XdpContext, inner_v4: bool) -> u32 {
    let ctx = callee_ctx(ctx);
    match gue6_sum(&ctx, inner_v4) {
        Ok(0) | Err(_) => 0,
        Ok(sum) => match !csum::fold(sum) {
            0 => 0xffff,
            c => c as u32,
        },
    }
}

/// `bpf_csum_diff`'s sum of `len` bytes at `at` in the frame, plus `seed`
/// (in the machine's byte order, as are all the sums below).
#[inline(always)]
fn sum_at(ctx: &XdpContext, at: usize, len: u32, seed: u32) -> Result<u32, Drop> {
    let p = ptr_at::<u8>(ctx, at)?;
    if ctx.data() + at + len as usize > ctx.data_end() {
        return Err(Drop::Truncated);
    }
    // SAFETY: `len` bytes of the frame, bounds-checked above.
    Ok(unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, p as *mut _, len, seed) } as u32)
}

/// A 32-bit word of the frame's bytes `b`, as the helper loads it.
#[inline(always)]
fn word(b: [u8; 4]) -> u32 {
    u32::from_ne_bytes(b)
}

/// [`gue6_check`]'s sum (0: none to be had).
#[inline(always)]
fn gue6_sum(ctx: &XdpContext, inner_v4: bool) -> Result<u32, Drop> {
    let udp_at = EthHdr::LEN + Ipv6Hdr::LEN;
    let inner_at = udp_at + UdpHdr::LEN;
    let udp = unsafe { &*ptr_at::<UdpHdr>(ctx, udp_at)? };
    // Outer pseudo header (addresses, UDP length, next header) and the UDP
    // header, its checksum still zero.
    let pseudo = word([0, 0, udp.len[0], udp.len[1]]) as u64 + word([0, 0, 0, IPPROTO_UDP]) as u64;
    let mut sum = sum_at(ctx, EthHdr::LEN + 8, 32, 0)? as u64 + sum_at(ctx, udp_at, 8, 0)? as u64 + pseudo;
    if inner_v4 {
        let ip = unsafe { &*ptr_at::<Ipv4Hdr>(ctx, inner_at)? };
        match ip.proto {
            1 => return Ok(fold64(sum)),
            IPPROTO_TCP => {}
            IPPROTO_UDP if ip.header_len() == Ipv4Hdr::LEN => {
                let inner_udp = unsafe { &*ptr_at::<UdpHdr>(ctx, inner_at + Ipv4Hdr::LEN)? };
                if inner_udp.check == [0; 2] {
                    return Ok(0);
                }
            }
            _ => return Ok(0),
        }
        let len = (ip.total_len() - ip.header_len()) as u16;
        let l = len.to_be_bytes();
        let inner_pseudo = sum_at(ctx, inner_at + 12, 8, word([0, ip.proto, l[0], l[1]]))?;
        sum += (!csum::fold(inner_pseudo)) as u64;
    } else {
        let ip = unsafe { &*ptr_at::<Ipv6Hdr>(ctx, inner_at)? };
        let nh = ip.next_header;
        if !matches!(nh, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_ICMPV6) {
            return Ok(0);
        }
        let l = ip.payload_len;
        // Two words of the helper's byte order: their sum may carry.
        let seed = fold64(word([0, 0, l[0], l[1]]) as u64 + word([0, 0, 0, nh]) as u64);
        let inner_pseudo = sum_at(ctx, inner_at + 8, 32, seed)?;
        sum += sum_at(ctx, inner_at, Ipv6Hdr::LEN as u32, 0)? as u64 + (!csum::fold(inner_pseudo)) as u64;
    }
    Ok(fold64(sum))
}

/// A 64-bit sum of 32-bit words, folded to 32 bits (its 16-bit fold is
/// the same).
#[inline(always)]
fn fold64(s: u64) -> u32 {
    let s = (s & 0xffff_ffff) + (s >> 32);
    ((s & 0xffff_ffff) + (s >> 32)) as u32
}
