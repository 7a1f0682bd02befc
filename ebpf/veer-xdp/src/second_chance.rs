//! A DSR flow's second chance (as in glb-director): a packet that the
//! backend it was sent to bounces back, because no socket there owns it.
//!
//! An established flow that lost its entry (evicted, expired) is scheduled
//! on the live ring; after a ring change that may be another backend than
//! the one holding the connection. That backend's agent (`veer-agent`)
//! sends the packet back, MACs swapped; veer then tries the backend the
//! previous ring gives (`scheduler::previous`) and re-pins the flow there.
//! A flow gets one second chance: bounced again, or with nowhere else to
//! go, the packet is dropped, so two backends never pass it back and forth.
//!
//! A program of its own (tail-called from `veer_xdp`, see [`jumps`](crate::jumps)):
//! bounced packets are rare, and the entry program's stack has no room.

use aya_ebpf::{macros::xdp, programs::XdpContext};
use veer_abi::{GlobalCounter, CONN_F_COUNTED, CONN_F_SECOND_CHANCE, NO_BACKEND};

use crate::{
    active,
    backends::owned_backend,
    conntrack::{bounceable, ConnKey, Room, CONNS, NEW_CONNS},
    forward, parse, scheduler, services, stats,
    verdict::{verdict, Drop},
};

/// A DSR packet its flow's backend bounced back (tail-called from
/// `veer_xdp`).
#[xdp]
pub fn veer_second_chance(ctx: XdpContext) -> u32 {
    verdict(program(&ctx))
}

/// A DSR TCP packet (no SYN, no RST) that came back from the MAC of the backend
/// its flow's entry names: sent to the backend the previous ring gives,
/// which the entry then names (marked), or dropped.
#[inline(always)]
pub fn program(ctx: &XdpContext) -> Result<u32, Drop> {
    let pkt = parse::flow_of_outlined(ctx)?.ok_or(Drop::SecondChance)?;
    let key = &pkt.key;
    if pkt.is_icmp_error() || !bounceable(key.proto, pkt.tcp_flags()) {
        return Err(Drop::SecondChance);
    }
    let svc = services::lookup(key).ok_or(Drop::SecondChance)?;
    let k = &ConnKey::of(key, Room::Packet);
    let e = match CONNS.get_ptr_mut(k) {
        Some(e) => e,
        None => NEW_CONNS.get_ptr_mut(k).ok_or(Drop::SecondChance)?,
    };
    // SAFETY: a preallocated LRU value (see `conntrack::established`).
    let e = unsafe { &mut *e };
    let bouncer = e.backend;
    let from = owned_backend(&svc, bouncer).ok_or(Drop::SecondChance)?;
    // Once only, and only for a packet its backend sent back.
    if e.service != svc.id || e.flags & CONN_F_SECOND_CHANCE != 0 || !forward::sent_back_by(ctx, &from.mac) {
        return Err(Drop::SecondChance);
    }
    let prev = scheduler::previous(&svc, key);
    if prev == NO_BACKEND || prev == bouncer {
        return Err(Drop::SecondChance);
    }
    let b = owned_backend(&svc, prev).ok_or(Drop::SecondChance)?;
    // Counted active on the backend that holds it.
    if e.flags & CONN_F_COUNTED != 0 {
        active::apply(&active::Change { backend: bouncer, from_ns: e.last_seen_ns, to_ns: 0 });
        active::opened(prev, e.last_seen_ns);
    }
    e.backend = prev;
    e.flags |= CONN_F_SECOND_CHANCE;
    stats::count(GlobalCounter::SecondChance);
    stats::forwarded(svc.id, prev, (ctx.data_end() - ctx.data()) as u64, false);
    forward::to_backend(ctx, prev, b, key)
}
