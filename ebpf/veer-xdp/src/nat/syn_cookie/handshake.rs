//! The handshake veer answers itself: the cookie SYN-ACK to a SYN, the ACK
//! whose cookie shows a client at its address, and the RST for a segment
//! of no connection.

use aya_ebpf::{
    helpers::{
        bpf_tcp_raw_check_syncookie_ipv4, bpf_tcp_raw_check_syncookie_ipv6, bpf_tcp_raw_gen_syncookie_ipv4,
        bpf_tcp_raw_gen_syncookie_ipv6,
    },
    programs::XdpContext,
};
use veer_abi::{is_ipv4_mapped, GlobalCounter, IPPROTO_TCP};

use super::segment::{emit, load_headers, scratch, Scratch, Segment, BARE};
use crate::{
    access::{callee_ctx, ptr_at},
    fib,
    headers::{
        eth::EthHdr,
        l4::{TcpHdr, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    },
    parse::VipPacket,
    snat, stats,
    verdict::Drop,
};

/// The MSS values a kernel cookie can carry (`msstab` in
/// net/ipv4/syncookies.c and net/ipv6/syncookies.c), most common first.
const MSS_V4: [u16; 4] = [1460, 1440, 1300, 536];
/// IPv6 of [`MSS_V4`].
const MSS_V6: [u16; 4] = [1440, 1420, 8940, 1220];

/// Answers a segment for no flow with a RST (RFC 9293 3.10.7.1: from its
/// acknowledgment number, or acknowledging it when it had none).
#[inline(never)]
pub(super) fn refuse(ctx: &XdpContext, pkt: &VipPacket) -> Result<u32, Drop> {
    let ctx = &callee_ctx(ctx);
    let l4 = pkt.l4 as usize;
    if l4 > EthHdr::LEN + 60 {
        return Err(Drop::Malformed);
    }
    let tcp = unsafe { &*ptr_at::<TcpHdr>(ctx, l4)? };
    let (seq, ack) = (u32::from_be_bytes(tcp.seq), u32::from_be_bytes(tcp.ack));
    let k = &pkt.key;
    let seg = if pkt.tcp_flags() & TCP_ACK != 0 {
        Segment { sport: k.dport, dport: k.sport, seq: ack, ack: 0, flags: TCP_RST, window: 0, mss: BARE }
    } else {
        Segment { sport: k.dport, dport: k.sport, seq: 0, ack: seq, flags: TCP_RST | TCP_ACK, window: 0, mss: BARE }
    };
    let v4 = is_ipv4_mapped(&k.dst);
    emit(ctx, scratch()?, v4, &k.dst, &k.src, &seg)?;
    stats::count(GlobalCounter::DropBadCookie);
    fib::send(ctx, v4, &k.dst, &k.src)
}

/// Answers a client's SYN (`pkt`) with a cookie SYN-ACK, in place.
#[inline(never)]
pub(super) fn answer(ctx: &XdpContext, pkt: &VipPacket) -> Result<u32, Drop> {
    let ctx = &callee_ctx(ctx);
    let v4 = is_ipv4_mapped(&pkt.key.dst);
    let s = scratch()?;
    let th_len = load_headers(ctx, pkt, v4, s)?;
    let (ip, th) = (s.ip.as_mut_ptr(), s.th.as_mut_ptr());
    // SAFETY: both point into this CPU's scratch, as long as the helper reads.
    let r = unsafe {
        if v4 {
            bpf_tcp_raw_gen_syncookie_ipv4(ip as *mut _, th as *mut _, th_len)
        } else {
            bpf_tcp_raw_gen_syncookie_ipv6(ip as *mut _, th as *mut _, th_len)
        }
    };
    if r < 0 {
        return Err(Drop::Malformed);
    }
    let isn = u32::from_be_bytes([s.th[4], s.th[5], s.th[6], s.th[7]]);
    let k = &pkt.key;
    let seg = Segment {
        sport: k.dport,
        dport: k.sport,
        seq: r as u32,
        ack: isn.wrapping_add(1),
        flags: TCP_SYN | TCP_ACK,
        window: 0,
        mss: (r >> 32) as u16,
    };
    emit(ctx, s, v4, &k.dst, &k.src, &seg)?;
    stats::count(GlobalCounter::SynCookiesSent);
    fib::send(ctx, v4, &k.dst, &k.src)
}

/// A TCP packet for no known NAT flow (`pkt`): with a valid cookie, the
/// frame becomes the client's SYN (`true`: the caller hands it to the NAT
/// program).
#[inline(never)]
pub(super) fn accept(ctx: &XdpContext, pkt: &VipPacket) -> Result<bool, Drop> {
    let ctx = &callee_ctx(ctx);
    if pkt.key.proto != IPPROTO_TCP || pkt.tcp_flags() & (TCP_SYN | TCP_RST | TCP_FIN | TCP_ACK) != TCP_ACK {
        return Ok(false);
    }
    let v4 = is_ipv4_mapped(&pkt.key.dst);
    let s = scratch()?;
    load_headers(ctx, pkt, v4, s)?;
    if !cookie_valid(s, v4) {
        // The client's ACK was lost: what comes next is a zero-window probe
        // (the cookie SYN-ACK offered no window), sent one below the ACK's
        // sequence number (RFC 9293 3.8.6.1). Judged as that ACK.
        let seq = u32::from_be_bytes([s.th[4], s.th[5], s.th[6], s.th[7]]).wrapping_add(1);
        s.th[4..8].copy_from_slice(&seq.to_be_bytes());
        if !cookie_valid(s, v4) {
            return Ok(false);
        }
    }
    let isn = u32::from_be_bytes([s.th[4], s.th[5], s.th[6], s.th[7]]).wrapping_sub(1);
    let cookie = u32::from_be_bytes([s.th[8], s.th[9], s.th[10], s.th[11]]).wrapping_sub(1);
    let window = u16::from_be_bytes([s.th[14], s.th[15]]);
    let mss = decode_mss(s, v4, isn, cookie);
    let k = &pkt.key;
    let seg = Segment { sport: k.sport, dport: k.dport, seq: isn, ack: 0, flags: TCP_SYN, window, mss };
    emit(ctx, s, v4, &k.src, &k.dst, &seg)?;
    snat::proxy_next(k, &veer_abi::ProxiedClient { cookie, isn, mss, window });
    stats::count(GlobalCounter::SynCookiesValid);
    Ok(true)
}

/// Whether the ACK in the scratch acknowledges a valid cookie.
#[inline(always)]
fn cookie_valid(s: &mut Scratch, v4: bool) -> bool {
    let (ip, th) = (s.ip.as_mut_ptr(), s.th.as_mut_ptr());
    // SAFETY: as in `answer`.
    let r = unsafe {
        if v4 {
            bpf_tcp_raw_check_syncookie_ipv4(ip as *mut _, th as *mut _)
        } else {
            bpf_tcp_raw_check_syncookie_ipv6(ip as *mut _, th as *mut _)
        }
    };
    r == 0
}

/// The MSS a cookie carries. The helpers only say whether a cookie is
/// valid, so each MSS it can carry is tried: the one whose cookie, made
/// again for the same SYN, is this one. A cookie made in the previous
/// minute matches none, and gets the smallest.
#[inline(always)]
fn decode_mss(s: &mut Scratch, v4: bool, isn: u32, cookie: u32) -> u16 {
    let table = if v4 { &MSS_V4 } else { &MSS_V6 };
    // A SYN with the ACK's ports: sequence number, a 24-byte header, the MSS option.
    s.th[4..8].copy_from_slice(&isn.to_be_bytes());
    s.th[8..12].copy_from_slice(&[0; 4]);
    s.th[12] = 6 << 4;
    s.th[13] = TCP_SYN;
    s.th[20] = 2;
    s.th[21] = 4;
    for mss in table {
        s.th[22..24].copy_from_slice(&mss.to_be_bytes());
        let (ip, th) = (s.ip.as_mut_ptr(), s.th.as_mut_ptr());
        // SAFETY: as in `answer`.
        let r = unsafe {
            if v4 {
                bpf_tcp_raw_gen_syncookie_ipv4(ip as *mut _, th as *mut _, 24)
            } else {
                bpf_tcp_raw_gen_syncookie_ipv6(ip as *mut _, th as *mut _, 24)
            }
        };
        if r >= 0 && r as u32 == cookie {
            return *mss;
        }
    }
    table[3]
}
