//! Picking a backend for a new flow: Maglev, weighted round robin, source hash.
//!
//! All three read the service's live ring half, built in userspace: a Maglev
//! table for `maglev` and `source-hash`, the weighted sequence for
//! `round-robin`. They differ only in where they start in it.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::bpf_loop,
    macros::map,
    maps::{Array, PerCpuArray},
};
use veer_abi::{
    hash::{flow_hash, source_hash},
    Backend, BackendState, FlowKey, Scheduler, Service, MAX_RING_SIZE, MAX_SERVICES, NO_BACKEND, RING_PROBES,
};

use crate::{
    access::opaque,
    active, affinity,
    backends::{owned_backend, owned_by},
    passive,
};

/// Two halves per service: the live one and the one being rebuilt. One ring
/// is one map value, so userspace writes a whole half with a single syscall.
#[map]
static RINGS: Array<[u32; MAX_RING_SIZE]> = Array::with_max_entries(MAX_SERVICES * 2, 0);

/// Per service and CPU: round robin's next slot.
#[map]
static RR_CURSORS: PerCpuArray<u32> = PerCpuArray::with_max_entries(MAX_SERVICES, 0);

/// Whether a new flow is being scheduled (round robin advances its cursor),
/// or an existing flow's backend is being recomputed (only hashes can).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A flow's first packet: any scheduler, persistence, suspects skipped.
    NewFlow,
    /// An existing flow's backend, recomputed (ICMP errors): hashes only.
    Recompute,
    /// An existing flow's backend in the previous ring: hashes, and least
    /// flows' first choice.
    Previous,
}

/// Where the service's scheduler starts in its ring for `key` (before the
/// modulo), or `None` when it cannot place the flow.
#[inline(always)]
fn start(svc: &Service, key: &FlowKey, purpose: Purpose) -> Option<u32> {
    Some(match Scheduler::from_u8(svc.scheduler)? {
        Scheduler::Maglev => flow_hash(key),
        // The second choice is random: only a new flow can be placed.
        Scheduler::LeastFlows if purpose == Purpose::Recompute => return None,
        Scheduler::LeastFlows => flow_hash(key),
        Scheduler::SourceHash => source_hash(&key.src),
        Scheduler::RoundRobin if purpose != Purpose::NewFlow => return None,
        Scheduler::RoundRobin => {
            let cursor = RR_CURSORS.get_ptr_mut(svc.id)?;
            // SAFETY: per-CPU value, no other writer on this CPU while we run.
            unsafe {
                let c = *cursor;
                *cursor = c.wrapping_add(1);
                c
            }
        }
    })
}

/// A backend that may take a new flow, with its id.
///
/// Starts at the scheduler's slot and walks on for up to `RING_PROBES` slots,
/// so that a backend that just went down (one state-word write) is skipped
/// before its ring has been rebuilt without it. The walk is deterministic, so
/// all packets of one flow (or one client, for source hash) agree.
///
/// A new flow goes to its client's persistent backend first, if any.
/// A new flow also walks past `avoid` (the backend that just failed this
/// flow) and past suspect backends. When the walk finds nothing better, a
/// suspect is taken, and failing that `avoid` itself: a service whose only
/// backend failed once still tries it.
#[inline(always)]
pub fn pick(svc: &Service, key: &FlowKey, purpose: Purpose, avoid: u32) -> Option<(u32, &'static Backend)> {
    // A client with a recent flow on a backend that takes new flows stays
    // there (see `affinity`, which checks the backend).
    if purpose == Purpose::NewFlow && affinity::persists(svc) {
        let sticky = affinity::remembered(svc, &key.src, avoid);
        if let Some(b) = owned_backend(svc, sticky) {
            return Some((sticky, b));
        }
    }
    let len = svc.ring_len;
    if len == 0 || len as usize > MAX_RING_SIZE {
        return None;
    }
    let ring_index = svc.id.wrapping_mul(2).wrapping_add((svc.ring_half & 1) as u32);
    let ring = RINGS.get(ring_index)?;
    let start = start(svc, key, purpose)? % len;
    // The first probe here: it is nearly always the answer, and a walk
    // costs a helper call (on every spoofed SYN of a flood, too).
    let slot = opaque(start) as usize;
    // Never (`start < len <= MAX_RING_SIZE`): for the verifier.
    if slot >= MAX_RING_SIZE {
        return None;
    }
    let first = ring[slot];
    if let Probe::Take(b) = probe_one(svc.id, first, avoid, purpose == Purpose::NewFlow) {
        return Some(chosen(svc, ring, len, avoid, (first, b)));
    }
    let w = WALK.get_ptr_mut(0)?;
    // SAFETY: this CPU's scratch value; nothing else runs on it meanwhile.
    // Written and read through the pointer only: `probe` writes it too.
    unsafe {
        w.write(Walk {
            ring: ring_index,
            start,
            len,
            service: svc.id,
            avoid,
            new_flow: (purpose == Purpose::NewFlow) as u32,
            found: NO_BACKEND,
            fallback: NO_BACKEND,
            last: NO_BACKEND,
            _pad: 0,
        })
    };
    // SAFETY: `probe` is a BPF callback; it takes no context pointer.
    unsafe { bpf_loop(RING_PROBES, probe as *mut c_void, core::ptr::null_mut(), 0) };
    // SAFETY: as above; read after the walk wrote it.
    let (found, fallback, last) = unsafe { ((*w).found, (*w).fallback, (*w).last) };
    if let Some(b) = owned_backend(svc, found) {
        return Some(chosen(svc, ring, len, avoid, (found, b)));
    }
    let id = if fallback != NO_BACKEND { fallback } else { last };
    owned_backend(svc, id).map(|b| (id, b))
}

/// The walk's first taker, or least flows' choice starting from it.
#[inline(always)]
fn chosen(
    svc: &Service,
    ring: &[u32; MAX_RING_SIZE],
    len: u32,
    avoid: u32,
    first: (u32, &'static Backend),
) -> (u32, &'static Backend) {
    if svc.scheduler == Scheduler::LeastFlows as u8 {
        return active::choose(svc, ring, len, avoid, first);
    }
    first
}

/// What one probe of the walk makes of backend `id`.
enum Probe {
    /// It takes the flow.
    Take(&'static Backend),
    /// It is `avoid`, and takes new flows.
    Avoided,
    /// It takes new flows but is suspect (new flows only).
    Suspect,
    /// Not the service's, or takes no new flows.
    Skip,
}

/// Probes backend `id` of service `service` for a flow avoiding `avoid`.
#[inline(always)]
fn probe_one(service: u32, id: u32, avoid: u32, new_flow: bool) -> Probe {
    let Some(b) = owned_by(service, id) else { return Probe::Skip };
    if !BackendState::from_u32(b.state).takes_new_flows() {
        return Probe::Skip;
    }
    if id == avoid {
        return Probe::Avoided;
    }
    if new_flow && passive::is_suspect(id) {
        return Probe::Suspect;
    }
    Probe::Take(b)
}

/// [`pick`]'s walk over its ring, in this CPU's scratch: what it goes on
/// from, and what it found.
#[repr(C)]
struct Walk {
    ring: u32,
    start: u32,
    len: u32,
    service: u32,
    avoid: u32,
    new_flow: u32,
    /// The first backend that takes the flow.
    found: u32,
    /// The first suspect one.
    fallback: u32,
    /// `avoid`, if it takes new flows.
    last: u32,
    _pad: u32,
}

/// [`pick`]'s walk: one per CPU.
#[map]
static WALK: PerCpuArray<Walk> = PerCpuArray::with_max_entries(1, 0);

/// Probe `i` of [`pick`]'s walk, as `bpf_loop`'s body: the verifier walks
/// it once, not once per probe and per outcome of the probes before it
/// (the ring walk was most of the NAT program's verification). Ids, not
/// `Option`s of references: the verifier rejects the undefined register
/// LLVM reads for a `None` (R2 !read_ok). Stops the walk (1) at a backend
/// that takes the flow.
#[inline(never)]
extern "C" fn probe(i: u64, _: *mut c_void) -> i64 {
    let Some(w) = WALK.get_ptr_mut(0) else { return 1 };
    // SAFETY: as in `pick`.
    let w = unsafe { &mut *w };
    let Some(ring) = RINGS.get(w.ring) else { return 1 };
    let mut slot = w.start.wrapping_add(i as u32);
    if slot >= w.len {
        slot = slot.wrapping_sub(w.len);
    }
    let slot = opaque(slot) as usize;
    // Never (`start < len <= MAX_RING_SIZE`): for the verifier.
    if slot >= MAX_RING_SIZE {
        return 1;
    }
    let id = ring[slot];
    match probe_one(w.service, id, w.avoid, w.new_flow != 0) {
        Probe::Take(_) => {
            w.found = id;
            1
        }
        Probe::Avoided => {
            w.last = id;
            0
        }
        Probe::Suspect => {
            if w.fallback == NO_BACKEND {
                w.fallback = id;
            }
            0
        }
        Probe::Skip => 0,
    }
}

/// The backend the service's previous ring gives `key` (the half that was
/// live before the last publish, see `Service::ring_prev`), if it may keep
/// a flow: the flow's own slot, not the walk past it (a backend down when
/// that ring was live was skipped there only until its rebuild). [`NO_BACKEND`]
/// when there is no previous ring, or the scheduler cannot recompute a
/// flow's backend (round robin). Least flows' first choice stands for its pick.
#[inline(always)]
pub fn previous(svc: &Service, key: &FlowKey) -> u32 {
    let len = svc.ring_len;
    if svc.ring_prev == 0 || len == 0 || len as usize > MAX_RING_SIZE {
        return NO_BACKEND;
    }
    let Some(ring) = RINGS.get(svc.id.wrapping_mul(2).wrapping_add((!svc.ring_half & 1) as u32)) else {
        return NO_BACKEND;
    };
    let Some(start) = start(svc, key, Purpose::Previous) else { return NO_BACKEND };
    let slot = opaque(start % len) as usize;
    if slot >= MAX_RING_SIZE {
        return NO_BACKEND;
    }
    let id = ring[slot];
    match owned_backend(svc, id) {
        Some(b) if BackendState::from_u32(b.state).keeps_flows() => id,
        _ => NO_BACKEND,
    }
}
