//! A NAT flow earns its place in the connection table: the client's packet
//! that promotes it out of the new-flow table must acknowledge the
//! backend's SYN-ACK, whose sequence number only a client that received it
//! knows. A spoofed SYN followed by a spoofed ACK therefore never reaches
//! the connection table, where it could evict established flows.

use aya_ebpf::programs::XdpContext;
use veer_abi::{GlobalCounter, NatMapping, IPPROTO_TCP, NAT_F_ANSWERED, NAT_F_PROXIED, NAT_F_RESCUED, NAT_F_SPLICED};

use crate::{
    access::{callee_ctx, ptr_at},
    conntrack::{ConnKey, Room, NEW_CONNS},
    headers::{
        eth::EthHdr,
        l4::{TcpHdr, TCP_ACK, TCP_RST},
    },
    parse::VipPacket,
    snat::{fetch_or_flags, mapping_key, NAT_REV},
    stats,
    verdict::Drop,
};

/// A backend's SYN-ACK (`pkt`, of mapping `m`) on its way back: its
/// sequence number is kept for [`proven`]. `false`: a rescue has moved the
/// flow to another backend meanwhile; the SYN-ACK must not reach the client.
#[inline(always)]
pub fn note_answer(ctx: &XdpContext, pkt: &VipPacket, m: *mut NatMapping) -> Result<bool, Drop> {
    let l4 = pkt.l4 as usize;
    if l4 > EthHdr::LEN + 60 {
        return Err(Drop::Malformed);
    }
    let tcp = ptr_at::<TcpHdr>(ctx, l4)?;
    // SAFETY: bounds checked by `ptr_at`; a live map value, written in
    // place. The latest SYN-ACK's number: a client that reset its attempt
    // and tried again on the same mapping gets a new one (a forged SYN-ACK
    // can at most keep a flow half-open, where it is still forwarded).
    unsafe { (*m).backend_isn = u32::from_be_bytes((*tcp).seq) };
    // Answered, unless a rescue came first (`syn_stash::resend`).
    if fetch_or_flags(m, NAT_F_ANSWERED) & NAT_F_RESCUED != 0 {
        return Ok(false);
    }
    // SAFETY: a live map value's key, read in place.
    super::syn_stash::answered(unsafe { &(*m).flow });
    Ok(true)
}

/// Whether the client's packet `pkt` may promote its half-open NAT flow:
/// it acknowledges the backend's SYN-ACK exactly (or the flow needs no
/// proof: not TCP, a RST, no half-open entry or mapping, or opened by the
/// SYN proxy, whose cookie was the proof, once its backend answered).
/// Counted when it may not.
#[inline(never)]
pub fn proven(ctx: &XdpContext, pkt: &VipPacket) -> bool {
    let ctx = &callee_ctx(ctx);
    let k = &pkt.key;
    if k.proto != IPPROTO_TCP || pkt.tcp_flags() & TCP_RST != 0 {
        return true;
    }
    // SAFETY: copied out at once.
    let Some(e) = (unsafe { NEW_CONNS.get(&ConnKey::of(k, Room::Packet)) }).copied() else { return true };
    let Some(key) = mapping_key(k, &e) else { return true };
    // SAFETY: copied out at once.
    let Some(m) = (unsafe { NAT_REV.get(&key) }).copied() else { return true };
    if m.flags & NAT_F_PROXIED != 0 {
        // The cookie proved the client; the flow is promoted once the
        // backend answered too.
        return m.flags & NAT_F_SPLICED != 0;
    }
    let l4 = pkt.l4 as usize;
    if l4 > EthHdr::LEN + 60 {
        return false;
    }
    let Ok(tcp) = ptr_at::<TcpHdr>(ctx, l4) else { return false };
    // SAFETY: bounds checked by `ptr_at`.
    let ack = u32::from_be_bytes(unsafe { (*tcp).ack });
    let ok = m.flags & NAT_F_ANSWERED != 0 && pkt.tcp_flags() & TCP_ACK != 0 && ack == m.backend_isn.wrapping_add(1);
    if !ok {
        stats::count(GlobalCounter::NatUnprovenAck);
    }
    ok
}
