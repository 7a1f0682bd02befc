//! Passive failure detection: the dataplane suspects a backend from the
//! traffic itself, before any health check fires.
//!
//! A suspect backend gets no new flows while another backend can take them;
//! it keeps the flows it has. The suspicion lapses after `SUSPECT_HOLD_NS`
//! unless veerd, told through `PASSIVE_EVENTS`, clears it or sets the
//! backend down first.

use aya_ebpf::{
    helpers::bpf_ktime_get_coarse_ns,
    macros::map,
    maps::{Array, PerCpuArray, RingBuf},
};
use veer_abi::{
    ConnEntry, FlowKey, GlobalCounter, PassiveCounters, PassiveEvent, PassiveKind, MAX_BACKENDS, PASSIVE_EVENTS_BYTES,
    SUSPECT_HOLD_NS,
};

use crate::{snat, stats};

/// Per backend: until when the dataplane holds it suspect.
#[map]
static SUSPECTS: Array<u64> = Array::with_max_entries(MAX_BACKENDS, 0);

/// Backends that just became suspect, for veerd.
#[map]
static PASSIVE_EVENTS: RingBuf = RingBuf::with_byte_size(PASSIVE_EVENTS_BYTES, 0);

/// Per backend: passive signals against it, connections moved off it.
#[map]
static PASSIVE_STATS: PerCpuArray<PassiveCounters> = PerCpuArray::with_max_entries(MAX_BACKENDS, 0);

/// Counts the signal and holds `backend` suspect. Only a backend that was
/// not already suspect is reported, so a flood of signals is one event.
#[inline(never)]
pub fn suspect(backend: u32, kind: PassiveKind) {
    suspect_inline(backend, kind);
}

/// [`suspect`], inline: for `conntrack::reopen`, itself a call, whose own
/// calls would take the entry program's chain of frames past 512 bytes.
#[inline(always)]
pub fn suspect_inline(backend: u32, kind: PassiveKind) {
    stats::count(match kind {
        PassiveKind::SynRetransmit => GlobalCounter::PassiveSynRetransmit,
        PassiveKind::Refused => GlobalCounter::PassiveRefused,
        PassiveKind::Bounced => GlobalCounter::PassiveBounced,
        PassiveKind::Unreachable => GlobalCounter::PassiveUnreachable,
    });
    if let Some(c) = PASSIVE_STATS.get_ptr_mut(backend) {
        // SAFETY: this CPU's value; nothing else writes it meanwhile.
        let c = unsafe { &mut *c };
        match kind {
            PassiveKind::SynRetransmit => c.syn_retransmit += 1,
            PassiveKind::Refused => c.refused += 1,
            PassiveKind::Bounced => c.bounced += 1,
            PassiveKind::Unreachable => c.unreachable += 1,
        }
    }
    let Some(until) = SUSPECTS.get_ptr_mut(backend) else { return };
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    // SAFETY: an array value; racing writers all store a deadline near now.
    let was = unsafe { *until };
    unsafe { *until = now + SUSPECT_HOLD_NS };
    if was <= now {
        let _ = PASSIVE_EVENTS.output::<PassiveEvent>(PassiveEvent { backend, kind: kind as u32 }, 0);
    }
}

/// Whether `backend` is held suspect. The clock is read only for a
/// backend that has been suspected at all.
#[inline(always)]
pub fn is_suspect(backend: u32) -> bool {
    match SUSPECTS.get(backend) {
        Some(&until) if until != 0 => until > unsafe { bpf_ktime_get_coarse_ns() },
        _ => false,
    }
}

/// Counts a connection moved off `backend` before it was established.
#[inline(always)]
pub fn moved_off(backend: u32) {
    stats::count(GlobalCounter::Redispatched);
    if let Some(c) = PASSIVE_STATS.get_ptr_mut(backend) {
        // SAFETY: as in `suspect`.
        unsafe { (*c).redispatched += 1 };
    }
}

/// A SYN for a flow whose SYN came less than this long ago is a duplicate,
/// not a retransmission: clients resend after their initial RTO (1 s in
/// Linux, RFC 6298's), and copies sent at once cost an attacker nothing.
pub const SYN_RETRANSMIT_MIN_NS: u64 = 200_000_000;

/// Whether a SYN for the flow whose `NEW_CONNS` entry is at `p` shows its
/// backend failed it, with evidence an off-path attacker cannot forge
/// cheaply: a retransmission (none comes sooner than
/// [`SYN_RETRANSMIT_MIN_NS`]; a copy sent at once is a duplicate) of a SYN
/// the backend never answered (with NAT its SYN-ACK would have come back
/// through veer). A call of its own, off the NAT program's stack.
#[inline(never)]
pub fn unanswered<const NAT: bool>(key: &FlowKey, p: *const ConnEntry) -> bool {
    // SAFETY: a preallocated LRU value (see `conntrack::established`), read in place.
    let e = unsafe { &*p };
    let age = unsafe { bpf_ktime_get_coarse_ns() }.wrapping_sub(e.last_seen_ns);
    age >= SYN_RETRANSMIT_MIN_NS && !(NAT && snat::answered(key, e))
}
