//! Passive failure detection: the dataplane suspects a backend from the
//! traffic itself, before any health check fires.
//!
//! A suspect backend gets no new flows while another backend can take them;
//! it keeps the flows it has. The suspicion lapses after `SUSPECT_HOLD_NS`
//! unless veerd, told through `PASSIVE_EVENTS`, clears it or sets the
//! backend down first.

use aya_ebpf::helpers::bpf_ktime_get_coarse_ns;
use veer_abi::{
    GlobalCounter, NatKey, NatMapping, PassiveEvent, PassiveKind, ServiceKey, SERVICE_F_PASSIVE, SUSPECT_HOLD_NS,
};

use crate::{
    maps::{CONNS, NAT_REV, NEW_CONNS, PASSIVE_EVENTS, PASSIVE_STATS, SERVICES, SUSPECTS},
    stats,
};

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

/// A NAT backend answered a UDP flow's datagram with ICMP port unreachable
/// (`m`, found by `rkey`): with passive detection on, the backend becomes
/// suspect and the flow forgets it (table entries and mapping), so that the
/// client's next datagram goes to another backend. Returns whether the ICMP
/// message is to be withheld. A call of its own, off the ICMP program's
/// stack.
#[inline(never)]
pub fn udp_unreachable(m: &NatMapping, rkey: &NatKey) -> bool {
    let skey = ServiceKey { addr: m.flow.dst, port: m.flow.dport, proto: m.flow.proto, _pad: 0 };
    // SAFETY: copied out at once.
    let Some(flags) = (unsafe { SERVICES.get(&skey) }).map(|s| s.flags) else { return false };
    if flags & SERVICE_F_PASSIVE == 0 {
        return false;
    }
    suspect(m.backend, PassiveKind::Unreachable);
    moved_off(m.backend);
    let _ = NEW_CONNS.remove(&m.flow);
    let _ = CONNS.remove(&m.flow);
    // Last: `m` lives in this map.
    let _ = NAT_REV.remove(rkey);
    true
}
