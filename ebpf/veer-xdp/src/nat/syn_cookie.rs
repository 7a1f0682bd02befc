//! SYN cookies for NAT services: a flood of spoofed SYNs takes no SNAT port.
//!
//! While a CPU opens more new NAT connections in a second than the
//! configured threshold (or always, by configuration), veer answers a SYN
//! itself with a SYN-ACK whose sequence number is a SYN cookie (the
//! kernel's own, `bpf_tcp_raw_gen_syncookie_*`, Linux 6.0+), and keeps
//! nothing. Only an ACK that carries a valid cookie shows a client at its
//! address: [`accept`] turns that frame into the client's SYN, which the NAT
//! program maps and sends like any other. The backend's SYN-ACK gives the
//! difference between its sequence numbers and the cookie ([`splice`]);
//! every later packet of the flow is shifted by it, in both directions
//! ([`program`], [`return_program`]: programs of their own, for stack).
//!
//! The cookie SYN-ACK offers a zero window, so the client sends nothing
//! before the backend is reached. The splice opens the window with a
//! one-byte segment just below it (a keepalive probe, as the kernel's own),
//! which the client acknowledges at once; that acknowledgment completes the
//! backend's handshake. A cookie carries only the MSS: these connections
//! have no window scaling, SACK or timestamps, as with the kernel's cookies.

use aya_ebpf::{
    helpers::{
        bpf_csum_diff, bpf_ktime_get_coarse_ns, bpf_tcp_raw_check_syncookie_ipv4, bpf_tcp_raw_check_syncookie_ipv6,
        bpf_tcp_raw_gen_syncookie_ipv4, bpf_tcp_raw_gen_syncookie_ipv6, bpf_xdp_adjust_head, bpf_xdp_load_bytes,
        bpf_xdp_store_bytes,
    },
    macros::map,
    maps::PerCpuArray,
    programs::XdpContext,
};
use veer_abi::{
    csum, is_ipv4_mapped, Backend, ConnEntry, FlowKey, GlobalCounter, NatMapping, CONN_F_PROXIED, IPPROTO_TCP,
    NAT_F_SPLICED,
    SYN_COOKIES_ALWAYS, SYN_COOKIES_AUTO, SYN_COOKIE_HOLD_NS,
};

use super::rewrite::rewrite;
use crate::{
    access::{callee_ctx, mut_ptr_at, opaque, ptr_at},
    backends::backend,
    conntrack::{CONNS, NEW_CONNS},
    fib,
    headers::{
        eth::{EthHdr, ETH_P_IP, ETH_P_IPV6},
        ipv4::Ipv4Hdr,
        ipv6::Ipv6Hdr,
        l4::{TcpHdr, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    },
    parse::VipPacket,
    snat::{self, backend_port, return_key, snat_addr, Slot, NAT_REV},
    stats,
    verdict::Drop,
};

/// The MSS values a kernel cookie can carry (`msstab` in
/// net/ipv4/syncookies.c and net/ipv6/syncookies.c), most common first.
const MSS_V4: [u16; 4] = [1460, 1440, 1300, 536];
/// IPv6 of [`MSS_V4`].
const MSS_V6: [u16; 4] = [1440, 1420, 8940, 1220];

/// Per-CPU room for headers: the helpers' inputs and the packet being built.
#[repr(C)]
pub struct Scratch {
    /// The packet's IP header, as the cookie helpers read it.
    ip: [u8; 40],
    /// The packet's TCP header, or a SYN made up to decode a cookie's MSS.
    th: [u8; 60],
    /// An IPv4 packet being built.
    out4: Out<Ipv4Hdr>,
    /// An IPv6 packet being built.
    out6: Out<Ipv6Hdr>,
    /// The TCP pseudo-header being summed.
    pseudo: [u8; 40],
}

/// IP and TCP headers as veer sends them (a MSS option, or one byte of data).
#[repr(C)]
struct Out<Ip> {
    ip: Ip,
    tcp: TcpHdr,
    /// The MSS option, or the probe's byte and three zeros.
    tail: [u8; 4],
}

/// A CPU's count of new NAT connections in the current second, and until
/// when it answers with cookies.
#[repr(C)]
struct Window {
    start_ns: u64,
    until_ns: u64,
    count: u32,
    _pad: u32,
}

#[map]
static COOKIE_SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);
#[map]
static COOKIE_WINDOW: PerCpuArray<Window> = PerCpuArray::with_max_entries(1, 0);
/// 1 while a backend's packet [`return_program`] shifted is on its way back
/// to `veer_nat_return` (a tail call: same CPU, nothing runs in between).
#[map]
static SHIFTED: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// A segment veer writes itself.
struct Segment {
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    /// The MSS option's value (a SYN, a SYN-ACK), [`PROBE`] for one byte of
    /// data instead, or [`BARE`] for neither.
    mss: u16,
}

/// `Segment::mss`: a one-byte probe, no option.
const PROBE: u16 = 0;
/// `Segment::mss`: no option, no data (a RST).
const BARE: u16 = 1;

/// `veer_nat_cookie`: a NAT service's SYN under a flood gets a cookie; a
/// TCP packet for no NAT flow is an ACK with a valid cookie (the frame
/// becomes its SYN and goes to the NAT program), or is refused: answered
/// with a RST, as the kernel answers a segment for no socket, or dropped
/// under a flood (so as not to reflect it).
///
/// A client's packet of a connection veer opened comes here too, to have
/// its acknowledgment shifted ([`client_packet`]).
#[inline(always)]
pub fn program(ctx: &XdpContext) -> Result<u32, Drop> {
    let Some(pkt) = crate::parse::flow_of_outlined(ctx)? else { return Ok(crate::verdict::pass()) };
    let flags = pkt.tcp_flags();
    if pkt.key.proto != IPPROTO_TCP || pkt.is_icmp_error() {
        return Ok(crate::verdict::pass());
    }
    if flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
        return answer(ctx, &pkt);
    }
    if let Some(e) = proxied_entry(&pkt.key) {
        return client_packet(ctx, &pkt, &e);
    }
    if accept(ctx, &pkt)? {
        return crate::jumps::jump(ctx, veer_abi::JUMP_NAT);
    }
    if flags & TCP_RST != 0 || under_flood() {
        return Err(Drop::BadCookie);
    }
    refuse(ctx, &pkt)
}

/// The table entry of a connection veer's SYN proxy opened.
#[inline(always)]
fn proxied_entry(key: &FlowKey) -> Option<ConnEntry> {
    // SAFETY: copied out at once.
    let e = unsafe { CONNS.get(key).or_else(|| NEW_CONNS.get(key)) }.copied()?;
    (e.flags & CONN_F_PROXIED != 0).then_some(e)
}

/// A client's packet of a connection veer opened (counted already): its
/// acknowledgment shifted, then rewritten and sent like any NAT packet.
#[inline(never)]
fn client_packet(ctx: &XdpContext, pkt: &VipPacket, e: &ConnEntry) -> Result<u32, Drop> {
    let ctx = &callee_ctx(ctx);
    let b = backend(e.backend).ok_or(Drop::BadBackend)?;
    let slot = Slot { port: e.nat_port, addr: e.nat_addr };
    shift_ack(ctx, pkt, b, &slot)?;
    let snat = snat_addr(slot.addr).ok_or(Drop::BadBackend)?;
    let v4 = is_ipv4_mapped(&pkt.key.dst);
    rewrite(ctx, pkt, v4, &snat, &b.addr, slot.port, backend_port(&pkt.key, b))?;
    fib::send(ctx, v4, &snat, &b.addr)
}

/// `veer_nat_cookie_return`: a backend's packet to a connection veer's SYN
/// proxy opened. Its SYN-ACK is spliced ([`splice`]). After that, its
/// sequence number shifts into the client's space; a RST before it goes on
/// at the sequence number the client expects; anything else before it is
/// dropped. A shifted packet goes back to `veer_nat_return`, marked
/// ([`take_shifted`]), for the rewrite every answer gets.
#[inline(always)]
pub fn return_program(ctx: &XdpContext) -> Result<u32, Drop> {
    let Some(pkt) = crate::parse::flow_of_outlined(ctx)? else { return Ok(crate::verdict::pass()) };
    if pkt.key.proto != IPPROTO_TCP || pkt.is_icmp_error() {
        return Ok(crate::verdict::pass());
    }
    let Some(m) = NAT_REV.get_ptr_mut(&return_key(&pkt.key)) else { return Ok(crate::verdict::pass()) };
    // SAFETY: a live map value, read in place.
    let (flags, delta) = unsafe { ((*m).flags, (*m).seq_delta) };
    let tcp = pkt.tcp_flags();
    if flags & NAT_F_SPLICED != 0 {
        add_to(ctx, pkt.l4 as usize, 4, 0u32.wrapping_sub(delta))?;
    } else if tcp & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_SYN | TCP_ACK {
        return splice(ctx, &pkt, m);
    } else if tcp & TCP_RST != 0 {
        reset_to_client(ctx, &pkt, delta)?;
    } else {
        return Err(Drop::ProxyWaiting);
    }
    set_shifted(1);
    let r = crate::jumps::jump(ctx, veer_abi::JUMP_NAT_RETURN);
    // Only a failed jump comes back: the mark must not outlive this packet.
    set_shifted(0);
    r
}

#[inline(always)]
fn set_shifted(v: u32) {
    if let Some(p) = SHIFTED.get_ptr_mut(0) {
        // SAFETY: this CPU's value.
        unsafe { *p = v };
    }
}

/// Whether this run of `veer_nat_return` carries a packet [`return_program`]
/// shifted; taken (cleared) by every run, so a mark never outlives its packet.
#[inline(always)]
pub fn take_shifted() -> bool {
    let Some(p) = SHIFTED.get_ptr_mut(0) else { return false };
    // SAFETY: this CPU's value.
    unsafe { core::mem::replace(&mut *p, 0) != 0 }
}

/// Answers a segment for no flow with a RST (RFC 9293 3.10.7.1: from its
/// acknowledgment number, or acknowledging it when it had none).
#[inline(never)]
fn refuse(ctx: &XdpContext, pkt: &VipPacket) -> Result<u32, Drop> {
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

/// Whether the SYN of a new NAT connection (`key`) is answered with a
/// cookie; counts it toward the CPU's threshold. veer's own SYN, made from
/// a cookie ACK, is not.
#[inline(never)]
pub fn wanted(key: &FlowKey) -> bool {
    let Some(cfg) = snat::config() else { return false };
    if snat::proxied_next(key) {
        return false;
    }
    match cfg.syn_cookies {
        SYN_COOKIES_ALWAYS => true,
        SYN_COOKIES_AUTO => {
            let Some(w) = COOKIE_WINDOW.get_ptr_mut(0) else { return false };
            // SAFETY: this CPU's value; nothing else runs on it meanwhile.
            let w = unsafe { &mut *w };
            let now = unsafe { bpf_ktime_get_coarse_ns() };
            if now < w.until_ns {
                return true;
            }
            if now.wrapping_sub(w.start_ns) > 1_000_000_000 {
                w.start_ns = now;
                w.count = 0;
            }
            w.count += 1;
            if w.count > cfg.syn_cookie_threshold {
                w.until_ns = now + SYN_COOKIE_HOLD_NS;
                return true;
            }
            false
        }
        _ => false,
    }
}

/// Whether this CPU answers SYNs with cookies now: an ACK for no flow and
/// without a valid cookie is then dropped, not given a SNAT port.
#[inline(always)]
fn under_flood() -> bool {
    let Some(cfg) = snat::config() else { return false };
    if cfg.syn_cookies == SYN_COOKIES_ALWAYS {
        return true;
    }
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    cfg.syn_cookies == SYN_COOKIES_AUTO && COOKIE_WINDOW.get(0).is_some_and(|w| now < w.until_ns)
}

/// Whether cookies are on at all (an ACK for no flow may carry one).
#[inline(always)]
pub fn enabled() -> bool {
    snat::config().is_some_and(|c| c.syn_cookies == SYN_COOKIES_AUTO || c.syn_cookies == SYN_COOKIES_ALWAYS)
}

/// Answers a client's SYN (`pkt`) with a cookie SYN-ACK, in place.
#[inline(never)]
fn answer(ctx: &XdpContext, pkt: &VipPacket) -> Result<u32, Drop> {
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
fn accept(ctx: &XdpContext, pkt: &VipPacket) -> Result<bool, Drop> {
    let ctx = &callee_ctx(ctx);
    if pkt.key.proto != IPPROTO_TCP || pkt.tcp_flags() & (TCP_SYN | TCP_RST | TCP_FIN | TCP_ACK) != TCP_ACK {
        return Ok(false);
    }
    let v4 = is_ipv4_mapped(&pkt.key.dst);
    let s = scratch()?;
    load_headers(ctx, pkt, v4, s)?;
    let (ip, th) = (s.ip.as_mut_ptr(), s.th.as_mut_ptr());
    // SAFETY: as in `answer`.
    let r = unsafe {
        if v4 {
            bpf_tcp_raw_check_syncookie_ipv4(ip as *mut _, th as *mut _)
        } else {
            bpf_tcp_raw_check_syncookie_ipv6(ip as *mut _, th as *mut _)
        }
    };
    if r != 0 {
        return Ok(false);
    }
    let isn = u32::from_be_bytes([s.th[4], s.th[5], s.th[6], s.th[7]]).wrapping_sub(1);
    let cookie = u32::from_be_bytes([s.th[8], s.th[9], s.th[10], s.th[11]]).wrapping_sub(1);
    let window = u16::from_be_bytes([s.th[14], s.th[15]]);
    let mss = decode_mss(s, v4, isn, cookie);
    let k = &pkt.key;
    let seg = Segment { sport: k.sport, dport: k.dport, seq: isn, ack: 0, flags: TCP_SYN, window, mss };
    emit(ctx, s, v4, &k.src, &k.dst, &seg)?;
    snat::proxy_next(k, cookie);
    stats::count(GlobalCounter::SynCookiesValid);
    Ok(true)
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

/// The backend's SYN-ACK (`pkt`) to a connection veer opened (`m`): the
/// sequence difference is kept, and the frame becomes the probe that opens
/// the client's window (see the module's text).
#[inline(never)]
fn splice(ctx: &XdpContext, pkt: &VipPacket, m: *mut NatMapping) -> Result<u32, Drop> {
    let ctx = &callee_ctx(ctx);
    let l4 = pkt.l4 as usize;
    if l4 > EthHdr::LEN + 60 {
        return Err(Drop::Malformed);
    }
    let tcp = unsafe { &*ptr_at::<TcpHdr>(ctx, l4)? };
    let (isn, ack, window) = (u32::from_be_bytes(tcp.seq), u32::from_be_bytes(tcp.ack), u16::from_be_bytes(tcp.window));
    // SAFETY: a live map value; a racing update at worst splices twice alike.
    let m = unsafe { &mut *m };
    let cookie = m.seq_delta;
    m.seq_delta = isn.wrapping_sub(cookie);
    m.flags |= NAT_F_SPLICED;
    let f = m.flow;
    let v4 = is_ipv4_mapped(&f.dst);
    let seg = Segment { sport: f.dport, dport: f.sport, seq: cookie, ack, flags: TCP_ACK, window, mss: PROBE };
    emit(ctx, scratch()?, v4, &f.dst, &f.src, &seg)?;
    stats::count(GlobalCounter::SynProxySpliced);
    fib::send(ctx, v4, &f.dst, &f.src)
}

/// A client's packet of a connection veer opened, toward backend `b` on
/// SNAT endpoint `slot`: its acknowledgment moved into the backend's
/// sequence space; dropped while the backend has not answered.
#[inline(never)]
fn shift_ack(ctx: &XdpContext, pkt: &VipPacket, b: &Backend, slot: &Slot) -> Result<(), Drop> {
    let ctx = &callee_ctx(ctx);
    let k = &pkt.key;
    let key = veer_abi::NatKey {
        backend: b.addr,
        snat: snat_addr(slot.addr).ok_or(Drop::BadBackend)?,
        backend_port: backend_port(k, b),
        snat_port: slot.port,
        proto: k.proto,
        _pad: [0; 3],
    };
    // SAFETY: copied out at once.
    let m = unsafe { NAT_REV.get(&key) }.ok_or(Drop::ProxyWaiting)?;
    let (flags, delta) = (m.flags, m.seq_delta);
    if flags & NAT_F_SPLICED == 0 {
        return Err(Drop::ProxyWaiting);
    }
    if pkt.tcp_flags() & TCP_ACK != 0 {
        add_to(ctx, pkt.l4 as usize, 8, delta)?;
    }
    Ok(())
}

/// A backend's RST before veer's handshake with it completed (and not a
/// refusal veer resends): it goes on to the client at the sequence number
/// the client expects (`cookie` + 1).
#[inline(always)]
fn reset_to_client(ctx: &XdpContext, pkt: &VipPacket, cookie: u32) -> Result<(), Drop> {
    let l4 = pkt.l4 as usize;
    if l4 > EthHdr::LEN + 60 {
        return Err(Drop::Malformed);
    }
    let tcp = unsafe { &*ptr_at::<TcpHdr>(ctx, l4)? };
    let delta = cookie.wrapping_add(1).wrapping_sub(u32::from_be_bytes(tcp.seq));
    add_to(ctx, l4, 4, delta)
}

/// Adds `delta` to the TCP sequence (`at` 4) or acknowledgment (`at` 8)
/// number, and updates the checksum.
#[inline(always)]
fn add_to(ctx: &XdpContext, l4: usize, at: usize, delta: u32) -> Result<(), Drop> {
    if l4 > EthHdr::LEN + 60 {
        return Err(Drop::Malformed);
    }
    let tcp = unsafe { &mut *mut_ptr_at::<TcpHdr>(ctx, l4)? };
    let field = if at == 4 { &mut tcp.seq } else { &mut tcp.ack };
    let old = *field;
    let new = u32::from_be_bytes(old).wrapping_add(delta).to_be_bytes();
    *field = new;
    tcp.check = csum::update(u16::from_be_bytes(tcp.check), &old, &new).to_be_bytes();
    Ok(())
}

#[inline(always)]
fn scratch() -> Result<&'static mut Scratch, Drop> {
    let s = COOKIE_SCRATCH.get_ptr_mut(0).ok_or(Drop::Malformed)?;
    // SAFETY: this CPU's value; nothing else runs on it meanwhile.
    Ok(unsafe { &mut *s })
}

/// Copies the packet's IP header and TCP header into `s`; the TCP header's
/// length (20 to 60).
#[inline(always)]
fn load_headers(ctx: &XdpContext, pkt: &VipPacket, v4: bool, s: &mut Scratch) -> Result<u32, Drop> {
    let l4 = pkt.l4 as usize;
    if l4 > EthHdr::LEN + 60 {
        return Err(Drop::Malformed);
    }
    // Through a volatile read: LLVM would otherwise read the length from the
    // packet again after the check, and the verifier lose its bounds.
    // The options' length, bounded where the verifier sees it, then the
    // header's (20 to 60).
    let options = opaque((unsafe { (*ptr_at::<TcpHdr>(ctx, l4)?).header_len() } as u32).wrapping_sub(20));
    if options > 40 {
        return Err(Drop::Malformed);
    }
    let th_len = options as usize + 20;
    let ip_len = if v4 { Ipv4Hdr::LEN } else { Ipv6Hdr::LEN };
    // SAFETY: lengths within both buffers; the helper checks the frame's.
    let r = unsafe {
        bpf_xdp_load_bytes(ctx.ctx, EthHdr::LEN as u32, s.ip.as_mut_ptr() as *mut _, ip_len as u32)
            | bpf_xdp_load_bytes(ctx.ctx, l4 as u32, s.th.as_mut_ptr() as *mut _, th_len as u32)
    };
    if r != 0 {
        return Err(Drop::Truncated);
    }
    Ok(th_len as u32)
}

/// Makes the frame the packet `seg` from `src` to `dst`: resized, IP and
/// TCP headers written whole with their checksums (the MAC addresses are
/// set on the way out).
#[inline(always)]
fn emit(ctx: &XdpContext, s: &mut Scratch, v4: bool, src: &[u8; 16], dst: &[u8; 16], seg: &Segment) -> Result<(), Drop> {
    let tcp_len = match seg.mss {
        PROBE => 21,
        BARE => 20,
        _ => 24,
    };
    let ip_len = if v4 { Ipv4Hdr::LEN } else { Ipv6Hdr::LEN };
    // The checksums are summed by `bpf_csum_diff` over the scratch: summed
    // here word by word, the addresses' words would all be spilled to the stack.
    let pseudo = if v4 {
        let ip = &mut s.out4.ip;
        ip.version_ihl = 0x45;
        ip.tos = 0;
        ip.tot_len = ((ip_len + tcp_len) as u16).to_be_bytes();
        ip.id = [0; 2];
        ip.frag_off = [0x40, 0];
        ip.ttl = 64;
        ip.proto = IPPROTO_TCP;
        ip.check = [0; 2];
        ip.src.copy_from_slice(&src[12..]);
        ip.dst.copy_from_slice(&dst[12..]);
        let sum = csum_of(ip as *mut Ipv4Hdr as *mut u8, 20, 0);
        ip.check = csum_finish(sum).to_ne_bytes();
        s.pseudo[..4].copy_from_slice(&src[12..]);
        s.pseudo[4..8].copy_from_slice(&dst[12..]);
        s.pseudo[8..12].copy_from_slice(&[0, IPPROTO_TCP, 0, tcp_len as u8]);
        csum_of(s.pseudo.as_mut_ptr(), 12, 0)
    } else {
        let ip = &mut s.out6.ip;
        ip.vtc_flow = [0x60, 0, 0, 0];
        ip.payload_len = (tcp_len as u16).to_be_bytes();
        ip.next_header = IPPROTO_TCP;
        ip.hop_limit = 64;
        ip.src = *src;
        ip.dst = *dst;
        s.pseudo[..16].copy_from_slice(src);
        s.pseudo[16..32].copy_from_slice(dst);
        s.pseudo[32..40].copy_from_slice(&[0, 0, 0, tcp_len as u8, 0, 0, 0, IPPROTO_TCP]);
        csum_of(s.pseudo.as_mut_ptr(), 40, 0)
    };
    if v4 {
        write_tcp(&mut s.out4.tcp, &mut s.out4.tail, seg, pseudo);
    } else {
        write_tcp(&mut s.out6.tcp, &mut s.out6.tail, seg, pseudo);
    }
    let len = (EthHdr::LEN + ip_len + tcp_len) as i32;
    // Resized at the head: every XDP mode guarantees headroom (256 bytes).
    let frame = opaque((ctx.data_end() - ctx.data()) as u32) as i32;
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, frame - len) } != 0 {
        return Err(Drop::Truncated);
    }
    let eth = unsafe { &mut *mut_ptr_at::<EthHdr>(ctx, 0)? };
    eth.ether_type = if v4 { ETH_P_IP } else { ETH_P_IPV6 }.to_be_bytes();
    // SAFETY: constant lengths within the scratch value.
    let r = unsafe {
        match (v4, seg.mss) {
            (true, PROBE) => store(ctx, &s.out4, 20 + 21),
            (true, BARE) => store(ctx, &s.out4, 20 + 20),
            (true, _) => store(ctx, &s.out4, 20 + 24),
            (false, PROBE) => store(ctx, &s.out6, 40 + 21),
            (false, BARE) => store(ctx, &s.out6, 40 + 20),
            (false, _) => store(ctx, &s.out6, 40 + 24),
        }
    };
    if r != 0 {
        return Err(Drop::Truncated);
    }
    Ok(())
}

/// The one's-complement sum of `len` bytes (a multiple of 4) at `p` (in
/// the scratch), added to `seed`.
#[inline(always)]
fn csum_of(p: *mut u8, len: u32, seed: u32) -> u32 {
    // SAFETY: `p` points at `len` bytes of this CPU's scratch.
    unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, p as *mut _, len, seed) as u32 }
}

/// The checksum field of a sum from [`csum_of`], in memory order: the
/// helper sums the bytes as they lie in memory, so the folded sum is
/// stored as is (`to_ne_bytes`), not byte-swapped.
#[inline(always)]
fn csum_finish(sum: u32) -> u16 {
    let s = (sum & 0xffff) + (sum >> 16);
    !(((s & 0xffff) + (s >> 16)) as u16)
}

/// Stores the first `len` bytes of `out` after the Ethernet header.
#[inline(always)]
unsafe fn store<T>(ctx: &XdpContext, out: &T, len: u32) -> i64 {
    bpf_xdp_store_bytes(ctx.ctx, EthHdr::LEN as u32, out as *const T as *mut _, len)
}

/// Writes `seg`'s TCP header (and its MSS option or probe byte), its
/// checksum from the pseudo-header's sum `pseudo`.
#[inline(always)]
fn write_tcp(tcp: &mut TcpHdr, tail: &mut [u8; 4], seg: &Segment, pseudo: u32) {
    tcp.sport = seg.sport.to_be_bytes();
    tcp.dport = seg.dport.to_be_bytes();
    tcp.seq = seg.seq.to_be_bytes();
    tcp.ack = seg.ack.to_be_bytes();
    let words = if seg.mss > BARE { 6 } else { 5 };
    tcp.doff_flags = [words << 4, seg.flags];
    tcp.window = seg.window.to_be_bytes();
    tcp.check = [0; 2];
    tcp.urg = [0; 2];
    *tail = if seg.mss > BARE {
        let m = seg.mss.to_be_bytes();
        [2, 4, m[0], m[1]]
    } else {
        // The probe's byte (below the window, so the client drops it), or
        // nothing: zeros add nothing to the checksum.
        [0; 4]
    };
    // The header and its tail are contiguous (`Out`): 24 bytes.
    let sum = csum_of(tcp as *mut TcpHdr as *mut u8, 24, pseudo);
    tcp.check = csum_finish(sum).to_ne_bytes();
}
