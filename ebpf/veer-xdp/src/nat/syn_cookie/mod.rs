//! SYN cookies for NAT services: a flood of spoofed SYNs takes no SNAT port.
//!
//! While a CPU opens more new NAT connections in a second than the
//! configured threshold (or always, by configuration), veer answers a SYN
//! itself with a SYN-ACK whose sequence number is a SYN cookie (the
//! kernel's own, `bpf_tcp_raw_gen_syncookie_*`, Linux 6.0+), and keeps
//! nothing. Only an ACK that carries a valid cookie shows a client at its
//! address: [`handshake::accept`] turns that frame into the client's SYN, which the NAT
//! program maps and sends like any other. The backend's SYN-ACK gives the
//! difference between its sequence numbers and the cookie ([`splice::splice`]);
//! every later packet of the flow is shifted by it, in both directions
//! ([`program`], [`return_program`]: programs of their own, for stack).
//!
//! The cookie SYN-ACK offers a zero window, so the client sends nothing
//! before the backend is reached. The splice opens the window with a
//! one-byte segment just below it (a keepalive probe, as the kernel's own),
//! which the client acknowledges at once; that acknowledgment completes the
//! backend's handshake. A cookie carries only the MSS: these connections
//! have no window scaling, SACK or timestamps, as with the kernel's cookies.
//!
//! Here: when cookies are used and the two programs; [`handshake`]: the
//! cookie SYN-ACK, the ACK that proves a client, the RST for a stray
//! segment; [`splice`]: the backend's SYN-ACK and the sequence shifts;
//! [`segment`]: the segments veer writes itself.

pub mod handshake;
pub mod segment;
pub mod splice;

use aya_ebpf::{
    helpers::bpf_ktime_get_coarse_ns,
    macros::map,
    maps::{Array, PerCpuArray},
    programs::XdpContext,
};
use veer_abi::{
    ConnEntry, FlowKey, CONN_F_PROXIED, IPPROTO_TCP, NAT_F_PROXIED, NAT_F_SPLICED, SYN_COOKIES_ALWAYS,
    SYN_COOKIES_AUTO, SYN_COOKIE_HOLD_NS,
};

use handshake::{accept, answer, refuse};
use splice::{add_to, client_packet, resend_syn, reset_to_client, UNANSWERED};

use crate::{
    conntrack::{ConnKey, Room, CONNS, NEW_CONNS},
    headers::l4::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    snat::{self, return_key, NAT_REV},
    store,
    verdict::Drop,
};

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
static COOKIE_WINDOW: PerCpuArray<Window> = PerCpuArray::with_max_entries(1, 0);
/// Until when every CPU answers with cookies (veerd sets it while half-open
/// NAT flows pile up; see `names::SYN_FLOOD`).
#[map]
static SYN_FLOOD: Array<u64> = Array::with_max_entries(1, 0);
/// 1 while a backend's packet [`return_program`] shifted is on its way back
/// to `veer_nat_return` (a tail call: same CPU, nothing runs in between;
/// `names::SHIFTED`).
#[map]
static SHIFTED: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// `veer_nat_cookie`: a NAT service's SYN under a flood gets a cookie; a
/// TCP packet for no NAT flow is an ACK with a valid cookie (the frame
/// becomes its SYN and goes to the NAT program), or is refused: answered
/// with a RST, as the kernel answers a segment for no socket, or dropped
/// under a flood (so as not to reflect it).
///
/// A client's packet of a connection veer opened comes here too, to have
/// its acknowledgment shifted ([`client_packet`]), or, while the backend
/// has not answered, to send veer's SYN again ([`resend_syn`]).
#[inline(always)]
pub fn program(ctx: &XdpContext) -> Result<u32, Drop> {
    let Some(pkt) = crate::parse::flow_of_outlined(ctx)? else { return Ok(crate::verdict::pass()) };
    let flags = pkt.tcp_flags();
    if pkt.key.proto != IPPROTO_TCP || pkt.is_icmp_error() {
        return Ok(crate::verdict::pass());
    }
    if flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
        // With RST or FIN it is no handshake a client starts: no cookie.
        if flags & (TCP_RST | TCP_FIN) != 0 {
            return Err(Drop::Malformed);
        }
        return answer(ctx, &pkt);
    }
    if let Some(e) = proxied_entry(&pkt.key) {
        return match client_packet(ctx, &pkt, &e)? {
            // A client that gave up (RST, FIN) asks for no SYN.
            UNANSWERED if flags & (TCP_RST | TCP_FIN) != 0 => Err(Drop::ProxyWaiting),
            UNANSWERED => resend_syn(ctx, &pkt, &e),
            action => Ok(action),
        };
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
    let k = &ConnKey::of(key, Room::Packet);
    let e = unsafe { CONNS.get(k).or_else(|| NEW_CONNS.get(k)) }?;
    (e.flags & CONN_F_PROXIED != 0).then(|| store::copied(e))
}

/// `veer_nat_cookie_return`: a backend's packet to a connection veer's SYN
/// proxy opened, or any NAT backend's SYN-ACK (its sequence number kept,
/// see `nat::proof`). A proxied connection's SYN-ACK is spliced ([`splice`]). After that, its
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
    let (flags, delta, cookie) = unsafe { ((*m).flags, (*m).seq_delta, (*m).cookie) };
    let tcp = pkt.tcp_flags();
    if flags & NAT_F_PROXIED == 0 {
        // Any other mapping's SYN-ACK: its number kept, nothing shifted.
        if !crate::nat::proof::note_answer(ctx, &pkt, m)? {
            return Ok(splice::moved_on());
        }
    } else if flags & NAT_F_SPLICED != 0 {
        add_to(ctx, pkt.l4 as usize, 4, 0u32.wrapping_sub(delta))?;
    } else if tcp & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_SYN | TCP_ACK {
        return splice::splice(ctx, &pkt, m);
    } else if tcp & TCP_RST != 0 {
        reset_to_client(ctx, &pkt, cookie)?;
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

/// Whether the SYN of a new NAT connection (one a backend can take: with
/// none, no client is let into a connection that cannot open) is answered
/// with a cookie; counts it toward the CPU's threshold. veer's own SYN,
/// made from a cookie ACK, is not.
#[inline(never)]
pub fn wanted() -> bool {
    let Some(cfg) = snat::config() else { return false };
    if snat::claimed() {
        return false;
    }
    match cfg.syn_cookies {
        SYN_COOKIES_ALWAYS => true,
        SYN_COOKIES_AUTO => {
            let Some(w) = COOKIE_WINDOW.get_ptr_mut(0) else { return false };
            // SAFETY: this CPU's value; nothing else runs on it meanwhile.
            let w = unsafe { &mut *w };
            let now = unsafe { bpf_ktime_get_coarse_ns() };
            if now < w.until_ns || flood_declared(now) {
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
    cfg.syn_cookies == SYN_COOKIES_AUTO
        && (COOKIE_WINDOW.get(0).is_some_and(|w| now < w.until_ns) || flood_declared(now))
}

/// Whether veerd declared a flood that is still on at `now`.
#[inline(always)]
fn flood_declared(now: u64) -> bool {
    SYN_FLOOD.get(0).is_some_and(|until| now < *until)
}

/// Whether cookies are on at all (an ACK for no flow may carry one).
#[inline(always)]
pub fn enabled() -> bool {
    snat::config().is_some_and(|c| c.syn_cookies == SYN_COOKIES_AUTO || c.syn_cookies == SYN_COOKIES_ALWAYS)
}
