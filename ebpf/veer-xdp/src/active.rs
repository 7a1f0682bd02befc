//! Active flows per backend, kept by the dataplane (see
//! [`veer_abi::ActiveFlows`]), and the least-flows choice between two
//! candidates that uses them.
//!
//! A flow counts from its promotion into `CONNS` until its first FIN or RST,
//! in the epoch of its last packet. No table walk: a flow that goes quiet
//! falls out with its epoch.

use aya_ebpf::{
    helpers::{bpf_get_prandom_u32, bpf_ktime_get_coarse_ns},
    macros::map,
    maps::Array,
};
use veer_abi::{ActiveFlows, Backend, BackendState, Service, ACTIVE_EPOCH_NS, MAX_BACKENDS, MAX_RING_SIZE, NO_BACKEND};

use crate::{access::opaque, backends::owned_backend, passive};

/// Per backend: its established flows, in the last two epochs.
#[map]
static ACTIVE_FLOWS: Array<ActiveFlows> = Array::with_max_entries(MAX_BACKENDS, 0);

#[inline(always)]
fn epoch(ns: u64) -> u64 {
    ns / ACTIVE_EPOCH_NS
}

/// Adds `delta` to backend `id`'s count in epoch `e`. A stale slot is reset
/// before an increment, and a decrement for an epoch whose slot moved on is
/// dropped (that flow was already forgotten).
#[inline(always)]
fn add(id: u32, e: u64, delta: i64) {
    let Some(a) = ACTIVE_FLOWS.get_ptr_mut(id) else { return };
    // SAFETY: an array value; concurrent writers race only on a stale
    // slot's reset, which at worst loses a count there.
    let a: &mut ActiveFlows = unsafe { &mut *a };
    let s = (e & 1) as usize;
    if a.epoch[s] != e {
        if delta < 0 {
            return;
        }
        a.epoch[s] = e;
        a.count[s] = 0;
    }
    crate::atomic::add(&mut a.count[s] as *mut i64, delta);
}

/// A flow of backend `id` became established at `now_ns`.
#[inline(always)]
pub fn opened(id: u32, now_ns: u64) {
    add(id, epoch(now_ns), 1);
}

/// What a packet changes in its flow's count: it moved from the epoch of
/// `from_ns` to that of `to_ns`, or (`to_ns` 0) the flow ended. `backend`
/// [`NO_BACKEND`] for nothing.
#[derive(Clone, Copy)]
pub struct Change {
    /// The flow's backend.
    pub backend: u32,
    /// The time of the flow's last counted packet.
    pub from_ns: u64,
    /// The time of this packet; 0 when the flow ended.
    pub to_ns: u64,
}

impl Change {
    /// No change.
    pub const NONE: Change = Change { backend: NO_BACKEND, from_ns: 0, to_ns: 0 };
}

/// Applies a change, if there is one: the test inline, where nearly every
/// packet ends (a call's return costs 6-7 ns under AMD's SRSO mitigation),
/// the change a call of its own (rare: once per flow and epoch, and at its
/// end).
#[inline(always)]
pub fn apply(c: &Change) {
    if c.backend != NO_BACKEND {
        apply_change(c);
    }
}

#[inline(never)]
fn apply_change(c: &Change) {
    let from = epoch(c.from_ns);
    if c.to_ns == 0 {
        add(c.backend, from, -1);
        return;
    }
    let to = epoch(c.to_ns);
    if from != to {
        add(c.backend, from, -1);
        add(c.backend, to, 1);
    }
}

/// Backend `id`'s active flows now.
#[inline(always)]
fn active(id: u32, now_epoch: u64) -> u64 {
    ACTIVE_FLOWS.get(id).map_or(0, |a| a.active(now_epoch))
}

/// Least flows: `first` (the flow's slot in the weighted table) against a
/// random slot's backend; the one with fewer active flows per unit of
/// weight wins, `first` on a tie or when the other may not take the flow.
/// Two random choices keep the spread close to the least loaded at O(1).
#[inline(always)]
pub fn choose(
    svc: &Service,
    ring: &[u32; MAX_RING_SIZE],
    len: u32,
    avoid: u32,
    first: (u32, &'static Backend),
) -> (u32, &'static Backend) {
    // SAFETY: a helper without arguments.
    let r = unsafe { bpf_get_prandom_u32() } % len;
    let slot = opaque(r) as usize;
    if slot >= MAX_RING_SIZE {
        return first;
    }
    let id = ring[slot];
    if id == first.0 || id == avoid {
        return first;
    }
    let Some(b) = owned_backend(svc, id) else { return first };
    if !BackendState::from_u32(b.state).takes_new_flows() || passive::is_suspect(id) {
        return first;
    }
    // SAFETY: a helper without arguments.
    let now = epoch(unsafe { bpf_ktime_get_coarse_ns() });
    // a/wa < f/wf  <=>  a*wf < f*wa (weights are at least 1).
    let (fa, ba) = (active(first.0, now), active(id, now));
    if ba * (first.1.weight.max(1) as u64) < fa * (b.weight.max(1) as u64) {
        (id, b)
    } else {
        first
    }
}
