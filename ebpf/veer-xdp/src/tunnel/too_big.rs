//! A packet too big for its tunnel becomes, in place, the ICMP error that
//! tells its client the size that fits: IPv4 "fragmentation needed"
//! (RFC 1191), IPv6 "packet too big" (RFC 8201), from the VIP, quoting the
//! packet's IP header and first 8 bytes (its ports and sequence number),
//! sent back the way it came. The client's path MTU then converges.

use aya_ebpf::{
    bindings::xdp_action,
    helpers::{bpf_csum_diff, bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use veer_abi::{csum, GlobalCounter, IPPROTO_ICMP, IPPROTO_ICMPV6};

use crate::{
    access::{callee_ctx, mut_ptr_at, ptr_at},
    headers::{
        eth::EthHdr,
        field::{mac, set_mac, set_word, set_words16, word, words16},
        icmp::IcmpHdr,
        ipv4::Ipv4Hdr,
        ipv6::Ipv6Hdr,
    },
    stats,
    verdict::Drop,
};

const ICMP_FRAG_NEEDED: [u8; 2] = [3, 4];
const ICMPV6_PKT_TOOBIG: [u8; 2] = [2, 0];
/// The smallest MTU an IPv6 link may have.
const IPV6_MIN_MTU: u32 = 1280;
/// Bytes of the packet's payload quoted after its IP header.
const QUOTED: usize = 8;

/// Answers the frame's sender that packets up to `mtu` bytes fit. Returns
/// the XDP action; a drop is counted here. A call of its own, off the
/// stack of the tunnel's common path.
#[inline(never)]
pub fn answer(ctx: &XdpContext, v4: bool, mtu: u32) -> u32 {
    let ctx = callee_ctx(ctx);
    // An IPv6 path must carry 1,280 bytes: an answer below it would be
    // taken as 1,280, which still does not fit.
    let r = if v4 {
        answer4(&ctx, mtu)
    } else if mtu < IPV6_MIN_MTU {
        Err(Drop::TooBig)
    } else {
        answer6(&ctx, mtu)
    };
    r.unwrap_or_else(|reason| {
        stats::count(reason.counter());
        xdp_action::XDP_DROP
    })
}

/// The new headers go in front; the old Ethernet header moves there, its
/// addresses swapped; the frame is cut after the quote.
#[inline(always)]
fn reframe(ctx: &XdpContext, room: usize, keep: usize) -> Result<(), Drop> {
    let len = ctx.data_end() - ctx.data();
    if len < EthHdr::LEN + keep || unsafe { bpf_xdp_adjust_head(ctx.ctx, -(room as i32)) } != 0 {
        return Err(Drop::TooBig);
    }
    let old = unsafe { &*ptr_at::<EthHdr>(ctx, room)? };
    let (dst, src, kind) = (mac(&old.src), mac(&old.dst), old.ether_type);
    let eth = unsafe { &mut *mut_ptr_at::<EthHdr>(ctx, 0)? };
    set_mac(&mut eth.dst, dst);
    set_mac(&mut eth.src, src);
    eth.ether_type = kind;
    let cut = (len - EthHdr::LEN - keep) as i32;
    if unsafe { bpf_xdp_adjust_tail(ctx.ctx, -cut) } != 0 {
        return Err(Drop::TooBig);
    }
    Ok(())
}

/// The checksum of `len` bytes at `at` in the frame plus `seed`, as stored
/// (`bpf_csum_diff` sums in the machine's byte order).
#[inline(always)]
fn checksum(ctx: &XdpContext, at: usize, len: u32, seed: u32) -> Result<[u8; 2], Drop> {
    let p = ptr_at::<u8>(ctx, at)?;
    if ctx.data() + at + len as usize > ctx.data_end() {
        return Err(Drop::Truncated);
    }
    // SAFETY: `len` bytes of the frame, bounds-checked above.
    let sum = unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, p as *mut _, len, seed) } as u32;
    Ok((!csum::fold(sum)).to_ne_bytes())
}

#[inline(always)]
fn answer4(ctx: &XdpContext, mtu: u32) -> Result<u32, Drop> {
    const ROOM: usize = Ipv4Hdr::LEN + IcmpHdr::LEN;
    const QUOTE: usize = Ipv4Hdr::LEN + QUOTED;
    // Options would shift the quote: such packets are not answered; nor
    // is an ICMP error (RFC 1122: never an error about an error).
    let old = unsafe { &*ptr_at::<Ipv4Hdr>(ctx, EthHdr::LEN)? };
    if old.header_len() != Ipv4Hdr::LEN {
        return Err(Drop::TooBig);
    }
    if old.proto == IPPROTO_ICMP && unsafe { (*ptr_at::<IcmpHdr>(ctx, EthHdr::LEN + Ipv4Hdr::LEN)?).is_v4_error() } {
        return Err(Drop::TooBig);
    }
    reframe(ctx, ROOM, QUOTE)?;
    // The quoted header (the packet's own) gives the addresses, swapped.
    let quoted = unsafe { &*ptr_at::<Ipv4Hdr>(ctx, EthHdr::LEN + ROOM)? };
    let ip = unsafe { &mut *mut_ptr_at::<Ipv4Hdr>(ctx, EthHdr::LEN)? };
    ip.version_ihl = 0x45;
    ip.tos = 0xc0;
    ip.tot_len = ((ROOM + QUOTE) as u16).to_be_bytes();
    ip.id = [0; 2];
    ip.frag_off = [0; 2];
    ip.ttl = 64;
    ip.proto = IPPROTO_ICMP;
    ip.check = [0; 2];
    set_word(&mut ip.src, word(&quoted.dst));
    set_word(&mut ip.dst, word(&quoted.src));
    ip.check = checksum(ctx, EthHdr::LEN, Ipv4Hdr::LEN as u32, 0)?;
    let at = EthHdr::LEN + Ipv4Hdr::LEN;
    let icmp = unsafe { &mut *mut_ptr_at::<IcmpHdr>(ctx, at)? };
    [icmp.kind, icmp.code] = ICMP_FRAG_NEEDED;
    icmp.check = [0; 2];
    let m = (mtu as u16).to_be_bytes();
    icmp.rest = [0, 0, m[0], m[1]];
    icmp.check = checksum(ctx, at, (IcmpHdr::LEN + QUOTE) as u32, 0)?;
    stats::count(GlobalCounter::TooBigAnswered);
    Ok(xdp_action::XDP_TX)
}

#[inline(always)]
fn answer6(ctx: &XdpContext, mtu: u32) -> Result<u32, Drop> {
    const ROOM: usize = Ipv6Hdr::LEN + IcmpHdr::LEN;
    const QUOTE: usize = Ipv6Hdr::LEN + QUOTED;
    const MESSAGE: usize = IcmpHdr::LEN + QUOTE;
    // Never an error about an error (RFC 4443).
    if unsafe { (*ptr_at::<Ipv6Hdr>(ctx, EthHdr::LEN)?).next_header } == IPPROTO_ICMPV6
        && unsafe { (*ptr_at::<IcmpHdr>(ctx, EthHdr::LEN + Ipv6Hdr::LEN)?).kind } < 128
    {
        return Err(Drop::TooBig);
    }
    reframe(ctx, ROOM, QUOTE)?;
    let quoted = unsafe { &*ptr_at::<Ipv6Hdr>(ctx, EthHdr::LEN + ROOM)? };
    let ip = unsafe { &mut *mut_ptr_at::<Ipv6Hdr>(ctx, EthHdr::LEN)? };
    ip.vtc_flow = [0x60, 0, 0, 0];
    ip.payload_len = (MESSAGE as u16).to_be_bytes();
    ip.next_header = IPPROTO_ICMPV6;
    ip.hop_limit = 64;
    set_words16(&mut ip.src, words16(&quoted.dst));
    set_words16(&mut ip.dst, words16(&quoted.src));
    let at = EthHdr::LEN + Ipv6Hdr::LEN;
    let icmp = unsafe { &mut *mut_ptr_at::<IcmpHdr>(ctx, at)? };
    [icmp.kind, icmp.code] = ICMPV6_PKT_TOOBIG;
    icmp.check = [0; 2];
    icmp.rest = mtu.to_be_bytes();
    // The pseudo header: the addresses (in the new header), the length and
    // next header words, as the helper would load them.
    let words = u32::from_ne_bytes([0, 0, 0, MESSAGE as u8]) + u32::from_ne_bytes([0, 0, 0, IPPROTO_ICMPV6]);
    let addrs = checksum(ctx, EthHdr::LEN + 8, 32, words)?;
    let seed = (!u16::from_ne_bytes(addrs)) as u32;
    icmp.check = checksum(ctx, at, MESSAGE as u32, seed)?;
    stats::count(GlobalCounter::TooBigAnswered);
    Ok(xdp_action::XDP_TX)
}
