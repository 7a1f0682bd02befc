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
mod route;
mod too_big;

use aya_ebpf::{bindings::xdp_action, helpers::bpf_xdp_adjust_head, programs::XdpContext};
use veer_abi::{csum, Backend, FlowKey, GlobalCounter, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP};

use crate::{
    access::{mut_ptr_at, ptr_at},
    fib,
    headers::{
        eth::{EthHdr, ETH_P_IP, ETH_P_IPV6},
        field::word,
        ipv4::Ipv4Hdr,
        ipv6::Ipv6Hdr,
        l4::UdpHdr,
    },
    stats,
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

/// Sends the frame of flow `key` to backend `id`, `b`, through its tunnel.
/// Returns the XDP action; a drop is counted here. Inline: a BPF-to-BPF
/// call's return costs 6-7 ns on CPUs with AMD's SRSO mitigation, a twentieth
/// of a tunnelled packet.
#[inline(always)]
pub fn send(ctx: &XdpContext, id: u32, b: &Backend, key: &FlowKey) -> u32 {
    match encapsulate(ctx, id, b, key) {
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
fn encapsulate(ctx: &XdpContext, id: u32, b: &Backend, key: &FlowKey) -> Result<u32, Drop> {
    let (inner_v4, tos, fragmentable) = inner(ctx)?;
    let inner_len = ctx.data_end() - ctx.data() - EthHdr::LEN;
    let way = route::get(ctx, id, b)?;
    let (outer_v4, gue) = (way.outer_v4, way.gue);
    let ip_len = if outer_v4 { Ipv4Hdr::LEN } else { Ipv6Hdr::LEN };
    let overhead = ip_len + if gue { UdpHdr::LEN } else { 0 };
    let mtu = way.mtu as usize;
    if mtu != 0 && inner_len + overhead > mtu {
        if fragmentable {
            return Err(Drop::TooBig);
        }
        return Ok(too_big::answer(ctx, inner_v4, (mtu - overhead) as u32));
    }
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(overhead as i32)) } != 0 {
        return Err(Drop::TooBig);
    }
    // The Ethernet header as kept, by half-words (plain stores, as C
    // dataplanes write header words): x86-64 and arm64, and their verifier
    // without strict alignment, take them at any address; frames start at
    // an even one in every driver seen, which a strict-alignment CPU needs.
    let to = mut_ptr_at::<EthHdr>(ctx, 0)? as *mut u16;
    for (i, half) in way.eth.iter().enumerate() {
        // SAFETY: the 14 bytes of the frame's Ethernet header, bounds-checked above.
        unsafe { *to.add(i) = *half };
    }
    let proto = outer::proto(gue, inner_v4);
    // Only GUE's source port and IPv6's flow label carry it.
    let hash = if gue || !outer_v4 { entropy(key) } else { 0 };
    let outer_len = inner_len + overhead;
    if outer_v4 {
        let ip = unsafe { &mut *mut_ptr_at::<Ipv4Hdr>(ctx, EthHdr::LEN)? };
        outer::fill4_summed(ip, (tos, outer_len as u16, proto), &way.src, &b.addr, way.sum);
    } else {
        let ip = unsafe { &mut *mut_ptr_at::<Ipv6Hdr>(ctx, EthHdr::LEN)? };
        outer::fill6(ip, tos, (outer_len - Ipv6Hdr::LEN) as u16, proto, hash, (&way.src, &b.addr));
    }
    if gue {
        // Ephemeral ports: the upper half of the range.
        let ports = (0x8000 | (hash as u16), b.port);
        let len = (inner_len + UdpHdr::LEN) as u16;
        // Zero over IPv4 (RFC 768); over IPv6 it must be set (RFC 8200).
        let check = if outer_v4 {
            0
        } else {
            let header = ports.0 as u32 + ports.1 as u32 + len as u32;
            gue6_check(ctx, inner_v4, way.sum + header + len as u32)?
        };
        let udp = mut_ptr_at::<UdpHdr>(ctx, EthHdr::LEN + ip_len)? as *mut u32;
        let (s, d, l, c) = (ports.0.to_be_bytes(), ports.1.to_be_bytes(), len.to_be_bytes(), check.to_be_bytes());
        // SAFETY: the 8-byte UDP header, bounds-checked; two words, as the
        // Ethernet header's half-words above.
        unsafe {
            *udp = u32::from_ne_bytes([s[0], s[1], d[0], d[1]]);
            *udp.add(1) = u32::from_ne_bytes([l[0], l[1], c[0], c[1]]);
        }
    }
    stats::count(GlobalCounter::Encapsulated);
    fib::leave(ctx, way.ifindex)
}

/// An outer IPv6 GUE packet's UDP checksum field, or zero where it cannot
/// be had cheaply; `outer` is the sum of the outer pseudo header's
/// addresses and length and of the UDP header's words (its checksum zero).
///
/// The payload is not read: its inner TCP, UDP or ICMPv6 checksum is valid,
/// so the inner packet sums to what its header alone says
/// ([`csum::ipv6_packet_sum`], [`csum::ipv4_packet_sum`]; the way Linux's
/// local checksum offload sums a tunnel). An inner ICMPv4 message sums to
/// zero, and so does an inner IPv4 header with a valid checksum. An inner
/// UDP datagram without a checksum (or any other protocol) leaves the
/// checksum zero, as RFC 6935 allows a tunnel.
#[inline(always)]
fn gue6_check(ctx: &XdpContext, inner_v4: bool, outer: u32) -> Result<u16, Drop> {
    let inner_at = EthHdr::LEN + Ipv6Hdr::LEN + UdpHdr::LEN;
    let inner = if inner_v4 {
        let ip = unsafe { &*ptr_at::<Ipv4Hdr>(ctx, inner_at)? };
        let l4_len = ip.total_len().saturating_sub(ip.header_len()) as u16;
        match ip.proto {
            1 => 0,
            IPPROTO_TCP => csum::ipv4_packet_sum(&ip.src, &ip.dst, ip.proto, l4_len),
            IPPROTO_UDP if ip.header_len() == Ipv4Hdr::LEN => {
                let inner_udp = unsafe { &*ptr_at::<UdpHdr>(ctx, inner_at + Ipv4Hdr::LEN)? };
                if inner_udp.check == [0; 2] {
                    return Ok(0);
                }
                csum::ipv4_packet_sum(&ip.src, &ip.dst, ip.proto, l4_len)
            }
            _ => return Ok(0),
        }
    } else {
        let head = unsafe { &*ptr_at::<[[u8; 4]; 2]>(ctx, inner_at)? };
        let (w0, w1) = (u32::from_be(word(&head[0])), u32::from_be(word(&head[1])));
        let nh = (w1 >> 8) as u8;
        if !matches!(nh, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_ICMPV6) {
            return Ok(0);
        }
        if nh == IPPROTO_UDP {
            // A zero UDP checksum is invalid over IPv6, but is no sum to build on.
            let inner_udp = unsafe { &*ptr_at::<UdpHdr>(ctx, inner_at + Ipv6Hdr::LEN)? };
            if inner_udp.check == [0; 2] {
                return Ok(0);
            }
        }
        csum::ipv6_packet_sum(w0, w1)
    };
    Ok(match csum::finish(outer + IPPROTO_UDP as u32 + inner) {
        0 => 0xffff,
        c => c,
    })
}
