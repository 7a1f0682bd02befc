//! Client persistence (IPVS `persistence_timeout`, Cilium's session
//! affinity), for services flagged `SERVICE_F_PERSIST`: a client's new flow
//! goes to the backend its last flow of the service went to, if that was
//! within the service's `PERSISTENCE` seconds and
//! the backend still takes new flows. Kept in `AFFINITY`, an LRU keyed by
//! service and client address; refreshed by every new flow of the client
//! and, about every 100 ms, by its established flows' packets.
//!
//! Calls of their own, with the key off the stack where it is written:
//! the programs' stacks have no room for it.

use aya_ebpf::{
    helpers::bpf_ktime_get_coarse_ns,
    macros::map,
    maps::{Array, LruHashMap, PerCpuArray},
};
use veer_abi::{
    Affinity, AffinityKey, BackendState, Service, DEFAULT_AFFINITY_TABLE_SIZE, MAX_SERVICES, NO_BACKEND,
    SERVICE_F_PERSIST,
};

use crate::{backends::owned_backend, passive};

/// Each client's backend per service with persistence. One LRU for all
/// CPUs: a client's flows arrive on any of them.
#[map]
static AFFINITY: LruHashMap<AffinityKey, Affinity> = LruHashMap::with_max_entries(DEFAULT_AFFINITY_TABLE_SIZE, 0);

/// Per-CPU room for an affinity's key and value, off the stack (the
/// programs that write one have little of it left).
#[map]
static AFFINITY_SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// Per service id: its persistence in seconds.
#[map]
static PERSISTENCE: Array<u32> = Array::with_max_entries(MAX_SERVICES, 0);

/// [`remember`]'s key and value, in per-CPU memory.
struct Scratch {
    key: AffinityKey,
    value: Affinity,
}

/// The backend `client`'s flows of `svc` stick to, or [`NO_BACKEND`]: none
/// within the persistence time, or it takes no new flows (down, draining,
/// suspect), or it is `avoid` (it just failed this flow).
#[inline(never)]
pub fn remembered(svc: &Service, client: &[u8; 16], avoid: u32) -> u32 {
    let Some(&secs) = PERSISTENCE.get(svc.id) else {
        return NO_BACKEND;
    };
    let key = AffinityKey { service: svc.id, client: *client };
    // SAFETY: copied out at once.
    let Some(a) = (unsafe { AFFINITY.get(&key) }).copied() else {
        return NO_BACKEND;
    };
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if now.wrapping_sub(a.last_seen_ns) > secs as u64 * 1_000_000_000 || a.backend == avoid {
        return NO_BACKEND;
    }
    match owned_backend(svc, a.backend) {
        Some(b) if BackendState::from_u32(b.state).takes_new_flows() && !passive::is_suspect(a.backend) => a.backend,
        _ => NO_BACKEND,
    }
}

/// Remembers that a flow of `client` to `svc` went to `backend` now. A
/// call of its own: a flow's persistence is refreshed at most every 100 ms,
/// and the entry program's hot path keeps its stack and registers.
#[inline(never)]
pub fn remember(svc: &Service, client: &[u8; 16], backend: u32) {
    let Some(s) = AFFINITY_SCRATCH.get_ptr_mut(0) else { return };
    // SAFETY: per-CPU memory no other program on this CPU uses meanwhile.
    let s = unsafe { &mut *s };
    s.key = AffinityKey { service: svc.id, client: *client };
    s.value = Affinity { backend, _pad: 0, last_seen_ns: unsafe { bpf_ktime_get_coarse_ns() } };
    let _ = AFFINITY.insert(&s.key, &s.value, 0);
}

/// Whether `svc` keeps clients on their backends.
#[inline(always)]
pub fn persists(svc: &Service) -> bool {
    svc.flags & SERVICE_F_PERSIST != 0
}
