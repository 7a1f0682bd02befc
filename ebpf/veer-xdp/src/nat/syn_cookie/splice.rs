//! A connection veer opened, once its backend answers: the backend's
//! SYN-ACK spliced to the client, and the sequence numbers shifted between
//! the two for the life of the connection.

use aya_ebpf::{helpers::bpf_ktime_get_coarse_ns, programs::XdpContext};
use veer_abi::{
    csum, is_ipv4_mapped, ConnEntry, GlobalCounter, NatMapping, NAT_F_ANSWERED, NAT_F_RESCUED, NAT_F_SPLICED,
    PROXY_SYN_RESEND_NS,
};

use super::segment::{emit, scratch, Segment, PROBE};
use crate::{
    access::{callee_ctx, mut_ptr_at, ptr_at},
    backends::backend,
    fib,
    headers::{
        eth::EthHdr,
        l4::{TcpHdr, TCP_ACK, TCP_SYN},
    },
    nat::rewrite::rewrite,
    parse::VipPacket,
    snat::{self, backend_port, fetch_or_flags, mapping_key, Slot, NAT_REV},
    stats,
    verdict::Drop,
};

/// A client's packet of a connection veer opened (counted already): its
/// acknowledgment shifted, then rewritten and sent like any NAT packet;
/// [`UNANSWERED`] while the backend has not answered (see [`resend_syn`]).
#[inline(never)]
pub(super) fn client_packet(ctx: &XdpContext, pkt: &VipPacket, e: &ConnEntry) -> Result<u32, Drop> {
    let ctx = &callee_ctx(ctx);
    let b = backend(e.backend).ok_or(Drop::BadBackend)?;
    let slot = Slot::of(e);
    if !shift_ack(ctx, pkt, e)? {
        return Ok(UNANSWERED);
    }
    // The map's own value (see `nat::forward`).
    let snat = snat::address(slot.addr).ok_or(Drop::BadBackend)?;
    let v4 = is_ipv4_mapped(&pkt.key.dst);
    rewrite(ctx, pkt, v4, snat, &b.addr, slot.port, backend_port(&pkt.key, b))?;
    fib::send(ctx, v4, snat, &b.addr)
}

/// [`client_packet`]: the backend has not answered veer's SYN yet.
pub(super) const UNANSWERED: u32 = u32::MAX;

/// A client's packet of a connection veer opened (table entry `e`): its
/// acknowledgment moved into the backend's sequence space. `false` while
/// the backend has not answered.
#[inline(never)]
fn shift_ack(ctx: &XdpContext, pkt: &VipPacket, e: &ConnEntry) -> Result<bool, Drop> {
    let ctx = &callee_ctx(ctx);
    let key = mapping_key(&pkt.key, e).ok_or(Drop::BadBackend)?;
    // SAFETY: copied out at once.
    let m = unsafe { NAT_REV.get(&key) }.ok_or(Drop::ProxyWaiting)?;
    let (flags, delta) = (m.flags, m.seq_delta);
    if flags & NAT_F_SPLICED == 0 {
        return Ok(false);
    }
    if pkt.tcp_flags() & TCP_ACK != 0 {
        add_to(ctx, pkt.l4 as usize, 8, delta)?;
    }
    Ok(true)
}

/// The backend's SYN-ACK (`pkt`) to a connection veer opened (`m`): the
/// sequence difference is kept, and the frame becomes the probe that opens
/// the client's window (see the module's text).
#[inline(never)]
pub(super) fn splice(ctx: &XdpContext, pkt: &VipPacket, m: *mut NatMapping) -> Result<u32, Drop> {
    let ctx = &callee_ctx(ctx);
    let l4 = pkt.l4 as usize;
    if l4 > EthHdr::LEN + 60 {
        return Err(Drop::Malformed);
    }
    let tcp = unsafe { &*ptr_at::<TcpHdr>(ctx, l4)? };
    let (isn, ack, window) = (u32::from_be_bytes(tcp.seq), u32::from_be_bytes(tcp.ack), u16::from_be_bytes(tcp.window));
    // SAFETY: a live map value. Racing CPUs splice alike: the cookie and
    // the client's number do not change.
    let m = unsafe { &mut *m };
    // Only the backend saw veer's SYN, whose number this acknowledges.
    if ack != m.client_isn.wrapping_add(1) {
        return Err(Drop::ForeignSynAck);
    }
    // Another CPU spliced meanwhile: the first SYN-ACK's numbers stand.
    if m.flags & NAT_F_SPLICED != 0 {
        return Err(Drop::ProxyWaiting);
    }
    let cookie = m.cookie;
    m.seq_delta = isn.wrapping_sub(cookie);
    m.backend_isn = isn;
    // Spliced and answered, unless a rescue came first (`syn_stash::resend`).
    if fetch_or_flags(m, NAT_F_SPLICED | NAT_F_ANSWERED) & NAT_F_RESCUED != 0 {
        return Ok(moved_on());
    }
    let f = m.flow;
    let v4 = is_ipv4_mapped(&f.dst);
    let seg = Segment { sport: f.dport, dport: f.sport, seq: cookie, ack, flags: TCP_ACK, window, mss: PROBE };
    emit(ctx, scratch()?, v4, &f.dst, &f.src, &seg)?;
    stats::count(GlobalCounter::SynProxySpliced);
    fib::send(ctx, v4, &f.dst, &f.src)
}

/// veer's SYN of the client's (`pkt`) connection (table entry `e`), made
/// again in the frame and sent, if the last went at least
/// `PROXY_SYN_RESEND_NS` ago (it was lost, or the backend's SYN-ACK was):
/// the client's zero-window probes drive the resends. Else the client's
/// packet is dropped.
#[inline(never)]
pub(super) fn resend_syn(ctx: &XdpContext, pkt: &VipPacket, e: &ConnEntry) -> Result<u32, Drop> {
    let ctx = &callee_ctx(ctx);
    let key = mapping_key(&pkt.key, e).ok_or(Drop::BadBackend)?;
    let m = NAT_REV.get_ptr_mut(&key).ok_or(Drop::ProxyWaiting)?;
    // SAFETY: a live map value, read and written in place; two CPUs racing
    // here at worst both resend.
    let m = unsafe { &mut *m };
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    // Signed: a time ahead of the clock (tests hold resends so) is not due.
    if (now.wrapping_sub(m.syn_sent_ns) as i64) < PROXY_SYN_RESEND_NS as i64 {
        return Err(Drop::ProxyWaiting);
    }
    m.syn_sent_ns = now;
    let f = m.flow;
    // The mapping's key is veer's side of the connection: SNAT endpoint to backend.
    let seg = Segment {
        sport: key.snat_port,
        dport: key.backend_port,
        seq: m.client_isn,
        ack: 0,
        flags: TCP_SYN,
        window: m.client_window,
        // Never one of `emit`'s markers (a cookie's MSS is 536 or more).
        mss: m.client_mss.max(536),
    };
    let v4 = is_ipv4_mapped(&f.dst);
    emit(ctx, scratch()?, v4, &key.snat, &key.backend, &seg)?;
    stats::count(GlobalCounter::ProxySynResent);
    fib::send(ctx, v4, &key.snat, &key.backend)
}

/// A backend's RST before veer's handshake with it completed (and not a
/// refusal veer resends): it goes on to the client at the sequence number
/// the client expects (`cookie` + 1).
#[inline(always)]
pub(super) fn reset_to_client(ctx: &XdpContext, pkt: &VipPacket, cookie: u32) -> Result<(), Drop> {
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
pub(super) fn add_to(ctx: &XdpContext, l4: usize, at: usize, delta: u32) -> Result<(), Drop> {
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

/// A backend's SYN-ACK to a flow a rescue moved to another backend as it
/// came: to the local stack, as a late answer that finds no mapping goes
/// (its RST ends the backend's half-open connection), never to the client.
#[inline(always)]
pub(super) fn moved_on() -> u32 {
    stats::count(GlobalCounter::NatAnswerMoved);
    crate::verdict::pass()
}
