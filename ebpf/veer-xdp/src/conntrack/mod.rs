//! Keeping each flow on its backend, in two tables.
//!
//! A flow's first packet (a TCP SYN, a first datagram) is pinned in
//! `NEW_CONNS`; its second packet promotes the entry into `CONNS`. A flood of
//! first packets (spoofed SYNs) therefore churns only `NEW_CONNS`, and an
//! established flow's entry is never evicted to make room for one. Each
//! table is a pair of maps, one per address family ([`table`]).

mod table;

use aya_ebpf::{helpers::bpf_ktime_get_coarse_ns, programs::XdpContext};
pub use table::{ConnKey, Room, BPF_F_NO_COMMON_LRU, CONNS, NEW_CONNS};
use veer_abi::{
    Backend, BackendState, ConnEntry, FlowKey, GlobalCounter, Service, CONN_F_CLIENT_RESET, CONN_F_CLOSING,
    CONN_F_COUNTED, CONN_F_PEER_CLOSED, CONN_F_TS, CONN_F_TS_AHEAD, IPPROTO_TCP,
};

use crate::{
    active,
    backends::owned_backend,
    clock, forward,
    headers::l4::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    nat_sync,
    services::SERVICE_SLOTS,
    snat::Slot,
    stats,
};

/// A flow's place: its backend, and for NAT its SNAT endpoint.
pub struct Flow {
    /// The backend's id.
    pub id: u32,
    /// The backend.
    pub backend: &'static Backend,
    /// The SNAT endpoint; [`Slot::NONE`] for DSR.
    pub nat: Slot,
    /// The entry's `CONN_F_*` bits.
    pub flags: u32,
}

/// A TCP SYN without ACK opens a connection (see `reopen` for one on a
/// 5-tuple the tables hold).
#[inline(always)]
pub fn opens_connection(tcp_flags: u8) -> bool {
    tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN
}

/// A segment a DSR backend's agent may send back for its flow's second
/// chance: TCP, neither SYN (those have their own path) nor RST (never
/// bounced).
#[inline(always)]
pub fn bounceable(proto: u8, tcp_flags: u8) -> bool {
    proto == IPPROTO_TCP && tcp_flags & (TCP_SYN | TCP_RST) == 0
}

/// What the connection table says about a packet's flow.
pub enum Pinned {
    /// Pinned to a backend that may keep it.
    Hit(Flow),
    /// Pinned to a backend that is down, disabled, or no longer the
    /// service's: the flow must move (and stays in `CONNS`).
    Stale,
    /// Not in `CONNS`.
    Missing,
}

/// The flow `entry` holds, if its backend may keep a flow of `svc`.
#[inline(always)]
pub fn keeper(svc: &Service, entry: &ConnEntry) -> Option<Flow> {
    if entry.service != svc.id {
        return None;
    }
    let b = owned_backend(svc, entry.backend)?;
    BackendState::from_u32(b.state).keeps_flows().then_some(Flow {
        id: entry.backend,
        backend: b,
        nat: Slot::of(entry),
        flags: entry.flags,
    })
}

/// Refreshes an entry: whether its idle clock moved (at most about every
/// 100 ms), and what that changes in its backend's active-flow count.
#[inline(always)]
fn touch(entry: &mut ConnEntry, tcp_flags: u8) -> (bool, active::Change) {
    // The coarse clock (CLOCK_MONOTONIC_COARSE, Linux 5.11+): a tick's
    // precision is plenty for idle timeouts, and each CPU reads it once a
    // tick ([`clock`]).
    let now = clock::coarse_ns();
    let mut change = active::Change::NONE;
    if tcp_flags & (TCP_FIN | TCP_RST) != 0 {
        change = set_closing(entry);
    }
    // Writing the shared line on every packet bounces it between CPUs; a
    // coarse clock is all idle detection needs.
    // Saturating: another CPU's reading may be a tick newer than this one's
    // ([`clock`]); `last_seen_ns` never goes back.
    let moved = now.saturating_sub(entry.last_seen_ns) > 100_000_000;
    if moved {
        if entry.flags & CONN_F_COUNTED != 0 {
            change = active::Change { backend: entry.backend, from_ns: entry.last_seen_ns, to_ns: now };
        }
        entry.last_seen_ns = now;
    }
    (moved, change)
}

/// The flow is ending (a FIN or RST): its NAT mapping, if any, then expires
/// after TIME_WAIT, not after the idle timeout; it no longer counts active.
#[inline(always)]
fn set_closing(entry: &mut ConnEntry) -> active::Change {
    // Written once: the shared line is not dirtied again by every FIN.
    if entry.flags & CONN_F_CLOSING != 0 {
        return active::Change::NONE;
    }
    let change = if entry.flags & CONN_F_COUNTED != 0 {
        active::Change { backend: entry.backend, from_ns: entry.last_seen_ns, to_ns: 0 }
    } else {
        active::Change::NONE
    };
    entry.flags = (entry.flags | CONN_F_CLOSING) & !CONN_F_COUNTED;
    change
}

/// A NAT backend's FIN or RST ends `flow` as the client's does, and marks
/// the backend's side closed (`CONN_F_PEER_CLOSED`). A call of
/// its own: inline, the lookup's temporaries overflow the return program's
/// stack.
#[inline(never)]
pub fn mark_closing(flow: &FlowKey) {
    let Some(e) = CONNS.get_ptr_mut(&ConnKey::of(flow, Room::Packet)) else { return };
    // SAFETY: a preallocated LRU value; a racing eviction at worst marks
    // another live flow closing, which only shortens its mapping's idle wait.
    let change = set_closing(unsafe { &mut *e });
    // SAFETY: as above.
    unsafe { (*e).flags |= CONN_F_PEER_CLOSED };
    active::apply(&change);
}

/// A NAT flow's shifted timestamps ran ahead of veer's clock
/// (`nat::timestamps`): its SNAT port is never taken over. Rare: a call of
/// its own.
#[inline(never)]
pub fn mark_ts_ahead(flow: &FlowKey) {
    let k = &ConnKey::of(flow, Room::Packet);
    // Each table by name: a map chosen at run time is no map to the verifier.
    if let Some(e) = NEW_CONNS.get_ptr_mut(k) {
        // SAFETY: a preallocated LRU value, written in place.
        unsafe { (*e).flags |= CONN_F_TS_AHEAD };
    }
    if let Some(e) = CONNS.get_ptr_mut(k) {
        // SAFETY: as above.
        unsafe { (*e).flags |= CONN_F_TS_AHEAD };
    }
}

/// What `CONNS` says about a packet before the service table is asked.
pub enum Early {
    /// Pinned to a backend that may keep it, in this service; whether the
    /// entry's idle clock moved (a persistence refresh is due).
    Hit(&'static Service, Flow, bool),
    /// Not in `CONNS`.
    Missing,
    /// In `CONNS`, but the flow must move, or its entry names a service
    /// that no longer serves this VIP, or its backend bounced the packet:
    /// the full path decides.
    Unsure,
}

/// Looks a non-opening packet's flow up in `CONNS` before its service: an
/// established flow's entry names its service, found by index in
/// `SERVICE_SLOTS` (whose key must still be the packet's), which saves
/// hashing the service key on every packet. Refreshes the entry on a hit.
#[inline(always)]
pub fn established_early(ctx: &XdpContext, key: &FlowKey, tcp_flags: u8) -> Early {
    let Some(entry) = CONNS.get_ptr_mut(&ConnKey::of(key, Room::Packet)) else {
        return Early::Missing;
    };
    // SAFETY: as in `established`.
    let entry = unsafe { &mut *entry };
    let Some(slot) = SERVICE_SLOTS.get(entry.service) else {
        return Early::Unsure;
    };
    if !slot.serves(key) {
        return Early::Unsure;
    }
    match keeper(&slot.service, entry) {
        // Bounced by its backend's agent: the full path gives it its second chance.
        Some(f) if bounceable(key.proto, tcp_flags) && forward::sent_back_by(ctx, &f.backend.mac) => Early::Unsure,
        Some(f) => {
            let (moved, change) = touch(entry, tcp_flags);
            active::apply(&change);
            Early::Hit(&slot.service, f, moved)
        }
        None => Early::Unsure,
    }
}

/// Looks a non-opening packet's flow up in `CONNS`, refreshing its entry.
#[inline(always)]
pub fn established(svc: &Service, key: &FlowKey, tcp_flags: u8) -> Pinned {
    let Some(entry) = CONNS.get_ptr_mut(&ConnKey::of(key, Room::Packet)) else {
        return Pinned::Missing;
    };
    // SAFETY: the LRU map is preallocated; a concurrent eviction can at worst
    // make us read another live entry, which `keeper` then rejects.
    let entry = unsafe { &mut *entry };
    match keeper(svc, entry) {
        Some(f) => {
            let (_, change) = touch(entry, tcp_flags);
            active::apply(&change);
            Pinned::Hit(f)
        }
        None => {
            // It leaves its backend: no longer counted there (`repin`
            // counts it on the next).
            if entry.flags & CONN_F_COUNTED != 0 {
                active::apply(&active::Change { backend: entry.backend, from_ns: entry.last_seen_ns, to_ns: 0 });
                entry.flags &= !CONN_F_COUNTED;
            }
            Pinned::Stale
        }
    }
}

/// A flow's second packet: moves its `NEW_CONNS` entry into `CONNS`. A
/// RST is no second packet: the client gave up this attempt, which stays
/// in `NEW_CONNS`, marked, for its next SYN (see `reopen`).
#[inline(always)]
pub fn promote(svc: &Service, key: &FlowKey, tcp_flags: u8) -> Option<Flow> {
    let k = &ConnKey::of(key, Room::Packet);
    if tcp_flags & TCP_RST != 0 {
        let e = NEW_CONNS.get_ptr_mut(k)?;
        // SAFETY: a preallocated LRU value (see `established`).
        let e = unsafe { &mut *e };
        let hit = keeper(svc, e)?;
        e.flags |= CONN_F_CLIENT_RESET;
        return Some(hit);
    }
    // SAFETY: copied out at once (see `established`).
    let mut entry = *unsafe { NEW_CONNS.get(k) }?;
    let hit = keeper(svc, &entry)?;
    // Not counted yet: nothing to change.
    let _ = touch(&mut entry, tcp_flags);
    // Counted from here (not from its SYN: a flood of them adds nothing).
    let counts = entry.flags & CONN_F_CLOSING == 0;
    if counts {
        entry.flags |= CONN_F_COUNTED;
    }
    if insert_established(k, &entry) {
        if counts {
            active::opened(entry.backend, entry.last_seen_ns);
        }
        nat_sync::promoted(key, &entry);
    }
    let _ = NEW_CONNS.remove(k);
    Some(hit)
}

/// A half-open flow's packet that may not promote it (see `nat::proof`):
/// sent on its `NEW_CONNS` entry, which stays where it is, kept fresh.
#[inline(always)]
pub fn half_open(svc: &Service, key: &FlowKey, tcp_flags: u8) -> Option<Flow> {
    let e = NEW_CONNS.get_ptr_mut(&ConnKey::of(key, Room::Packet))?;
    // SAFETY: a preallocated LRU value (see `established`).
    let e = unsafe { &mut *e };
    let hit = keeper(svc, e)?;
    // Not counted active yet: nothing to change.
    let _ = touch(e, tcp_flags);
    Some(hit)
}

#[inline(always)]
fn entry_for(svc: &Service, backend: u32, nat: Slot, flags: u32) -> ConnEntry {
    // The clock itself, not `clock`'s reading (a new flow's first packet:
    // rare enough, and never a tick old).
    entry(svc.id, backend, &nat, flags, unsafe { bpf_ktime_get_coarse_ns() })
}

/// The table entry of a flow of service `service` pinned to `backend` with
/// SNAT endpoint `nat` (its timestamp flag set from `nat`), last seen at
/// `last_seen_ns`. Built from words: a literal whose NAT fields are zero
/// is a byte-loop `memset` call (see `store`).
#[inline(always)]
pub fn entry(service: u32, backend: u32, nat: &Slot, flags: u32, last_seen_ns: u64) -> ConnEntry {
    let flags = (flags & !CONN_F_TS) | if nat.ts != 0 { CONN_F_TS } else { 0 };
    let words = ConnEntry::words(backend, service, last_seen_ns, flags, nat.port, nat.addr, nat.ts_off);
    // SAFETY: a `ConnEntry` is eight words of integers.
    unsafe { core::mem::transmute::<[u32; 8], ConnEntry>(words) }
}

/// Inserts into `CONNS`; whether that worked.
#[inline(always)]
fn insert_established(key: &ConnKey, entry: &ConnEntry) -> bool {
    match CONNS.insert(key, entry, 0) {
        Ok(()) => {
            stats::count(GlobalCounter::ConnInserted);
            true
        }
        Err(_) => {
            stats::count(GlobalCounter::ConnInsertFailed);
            false
        }
    }
}

/// Pins a flow's first packet (into `NEW_CONNS`), with `flags` carried
/// over from an earlier attempt.
#[inline(always)]
pub fn pin_new(svc: &Service, key: &FlowKey, backend: u32, nat: Slot, flags: u32) {
    match NEW_CONNS.insert(&ConnKey::of(key, Room::Packet), &entry_for(svc, backend, nat, flags), 0) {
        Ok(()) => stats::count(GlobalCounter::NewFlowInserted),
        Err(_) => stats::count(GlobalCounter::ConnInsertFailed),
    }
}

/// Re-pins an established flow whose backend can no longer keep it (its
/// `CONNS` entry is overwritten in place).
#[inline(always)]
pub fn repin(svc: &Service, key: &FlowKey, backend: u32, nat: Slot) {
    let entry = entry_for(svc, backend, nat, CONN_F_COUNTED);
    if CONNS.insert(&ConnKey::of(key, Room::Packet), &entry, 0).is_err() {
        stats::count(GlobalCounter::ConnInsertFailed);
    } else {
        active::opened(backend, entry.last_seen_ns);
    }
}

/// The backend an ICMP error about this flow belongs to, without touching
/// either table.
#[inline(always)]
pub fn peek(svc: &Service, key: &FlowKey) -> Option<Flow> {
    let k = &ConnKey::of(key, Room::Packet);
    // SAFETY: copied out at once (see `established`).
    if let Some(e) = unsafe { CONNS.get(k) } {
        let e = *e;
        return keeper(svc, &e);
    }
    let e = *unsafe { NEW_CONNS.get(k) }?;
    keeper(svc, &e)
}
