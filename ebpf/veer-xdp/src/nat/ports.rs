//! SNAT endpoints for new NAT flows: a port and address toward the
//! backend, free, or taken over from a closed flow whose timestamps were on
//! veer's clock (see `timestamps`). The return mapping is created with the
//! endpoint, so no live one is ever handed out twice.

use core::mem::{offset_of, size_of};

use aya_ebpf::{
    helpers::{bpf_get_prandom_u32, bpf_get_smp_processor_id},
    macros::map,
    maps::PerCpuArray,
};
use veer_abi::{
    Backend, ConnEntry, FlowKey, GlobalCounter, NatKey, NatMapping, Service, CONN_F_CLOSING, CONN_F_PEER_CLOSED,
    CONN_F_TS_AHEAD, NAT_F_PROXIED, NAT_F_TS, NAT_F_TS_ANSWERED, NAT_PORT_TRIES, NAT_REUSE_AFTER_CLOSE_NS,
};

use crate::{
    access::opaque,
    conntrack::{ConnKey, Room, CONNS, NEW_CONNS},
    headers::field::{set_words16, words16},
    snat::{address, backend_port, config, take_proxied, Slot, NAT_REV},
    stats, store,
    verdict::Drop,
};

/// Per-CPU room for a new mapping's key and value, off the stack.
#[map]
static ALLOC_SCRATCH: PerCpuArray<AllocScratch> = PerCpuArray::with_max_entries(1, 0);

/// `bpf_map_update_elem` flag: only create.
const BPF_NOEXIST: u64 = 1;

/// Room for a new mapping's key and value (`ALLOC_SCRATCH`), and for
/// `allocate`'s loop bounds (spilled around its calls, they would not fit).
pub struct AllocScratch {
    /// The mapping's key.
    pub key: NatKey,
    /// The mapping.
    pub mapping: NatMapping,
    /// The next mapping's timestamp shift: bit 32 set, the offset below.
    ts: u64,
    /// The port range's start and size.
    min: u32,
    span: u32,
    /// The backend's SNAT addresses: first index and count.
    first_addr: u32,
    addrs: u32,
    /// The random start in ports and addresses.
    port0: u32,
    addr0: u32,
    /// The SNAT address index of the last try.
    index: u16,
}

/// The mapping [`allocate`] made last on this CPU, with its key.
#[inline(always)]
pub fn last() -> Option<&'static AllocScratch> {
    ALLOC_SCRATCH.get(0)
}

/// The SYN about to be mapped on this CPU carries timestamps, to shift by
/// the low half of `ts` when bit 32 is set (see `nat::timestamps`);
/// [`allocate`] takes it (a BPF call has no room for another argument).
#[inline(always)]
pub fn shift_timestamps(ts: u64) {
    if let Some(s) = ALLOC_SCRATCH.get_ptr_mut(0) {
        // SAFETY: this CPU's scratch value; nothing else runs on it meanwhile.
        unsafe { (*s).ts = ts };
    }
}

/// A SNAT address and port toward backend `id` for a new flow: from a
/// random start, at most `NAT_PORT_TRIES` tries ([`try_endpoint`]). A port
/// is free when no mapping holds it, or when its flow closed a while ago
/// with timestamps on. Its return entry is created here, so no live mapping
/// is ever handed out twice. The SYN's timestamp shift, if any, was left by
/// [`shift_timestamps`]. A call of its own: its keys would not fit on the
/// NAT program's stack.
#[inline(never)]
pub fn allocate(svc: &Service, key: &FlowKey, id: u32, b: &Backend) -> Result<Slot, Drop> {
    // The key, the value and the loop's bounds live in per-CPU scratch: on
    // the stack (spilled around the calls) they would not fit beside the
    // NAT program's own frame.
    let scratch = unsafe { &mut *ALLOC_SCRATCH.get_ptr_mut(0).ok_or(Drop::NatExhausted)? };
    let ts = core::mem::take(&mut scratch.ts);
    let cfg = config().ok_or(Drop::NatExhausted)?;
    let (min, max) = (cfg.port_min as u32, cfg.port_max as u32);
    if min == 0 || max < min {
        return Err(Drop::NatExhausted);
    }
    scratch.span = max - min + 1;
    scratch.addrs = (b.snat_count as u32).max(1);
    scratch.min = min;
    scratch.first_addr = b.snat as u32;
    // A random start: a client reusing its port must not land on the
    // mappings its earlier connections left behind.
    let r = unsafe { bpf_get_prandom_u32() };
    let (Some(port0), Some(addr0)) = (r.checked_rem(scratch.span), (r >> 16).checked_rem(scratch.addrs)) else {
        return Err(Drop::NatExhausted);
    };
    scratch.port0 = port0;
    scratch.addr0 = addr0;
    fresh_mapping(&mut scratch.mapping, key, id, svc.id);
    take_proxied(key, &mut scratch.mapping);
    if ts != 0 && scratch.mapping.flags & NAT_F_PROXIED == 0 {
        scratch.mapping.flags |= NAT_F_TS;
        scratch.mapping.ts_off = ts as u32;
    }
    scratch.key.backend = b.addr;
    scratch.key.backend_port = backend_port(key, b);
    scratch.key.set_proto(key.proto);
    for i in 0..NAT_PORT_TRIES {
        match try_endpoint(i) {
            TRIED_TAKEN => continue,
            TRIED_NO_ADDRESS => break,
            tried => {
                stats::count(GlobalCounter::NatMapped);
                if tried == TRIED_TAKEN_OVER {
                    stats::count(GlobalCounter::NatTakenOver);
                }
                let (k, m) = (&scratch.key, &scratch.mapping);
                let ts = (m.flags & NAT_F_TS != 0) as u32;
                return Ok(Slot { port: k.snat_port, addr: scratch.index, ts_off: m.ts_off, ts });
            }
        }
    }
    Err(Drop::NatExhausted)
}

/// [`try_endpoint`]: the endpoint is held by a live flow.
const TRIED_TAKEN: u32 = 0;
/// [`try_endpoint`]: the new flow's mapping holds it now.
const TRIED_MAPPED: u32 = 1;
/// [`try_endpoint`]: the new flow's mapping holds it now, taken over.
const TRIED_TAKEN_OVER: u32 = 2;
/// [`try_endpoint`]: no SNAT address at that index.
const TRIED_NO_ADDRESS: u32 = 3;

/// Try `i` of [`allocate`] for the new mapping in this CPU's
/// `ALLOC_SCRATCH`: a SNAT port and address, free, or held by a closed flow
/// it may take over ([`take_over`]). Each port on every one of the
/// backend's SNAT addresses before the next port. A call of its own:
/// `allocate`'s loop then keeps its registers, and both frames fit on the
/// NAT program's deepest call chain.
#[inline(never)]
fn try_endpoint(i: u32) -> u32 {
    let Some(s) = ALLOC_SCRATCH.get_ptr_mut(0) else { return TRIED_NO_ADDRESS };
    // SAFETY: this CPU's scratch value; nothing else runs on it meanwhile.
    let s = unsafe { &mut *s };
    // Wraps around the ranges (which may be smaller than the tries).
    let step = i.checked_div(s.addrs).unwrap_or(i);
    let (Some(off), Some(a)) = ((s.port0 + step).checked_rem(s.span), (s.addr0 + i).checked_rem(s.addrs)) else {
        return TRIED_NO_ADDRESS;
    };
    let port = (s.min + opaque(off)) as u16;
    let index = (s.first_addr as u16).wrapping_add(opaque(a) as u16);
    let Some(snat) = address(index) else { return TRIED_NO_ADDRESS };
    set_words16(&mut s.key.snat, words16(snat));
    s.key.snat_port = port;
    s.index = index;
    if NAT_REV.insert(&s.key, &s.mapping, BPF_NOEXIST).is_ok() {
        return TRIED_MAPPED;
    }
    // Only a SYN with timestamps (shifted onto veer's clock) is sure to be
    // taken by the backend's TIME_WAIT socket on the tuple: without them,
    // its sequence number decides, by chance.
    if s.mapping.flags & NAT_F_TS == 0 {
        return TRIED_TAKEN;
    }
    // This CPU takes over only ports of its own residue modulo the CPU
    // count: the one at or below this port, so that every try has one
    // whatever the number of CPUs.
    let Some(cfg) = config() else { return TRIED_TAKEN };
    // SAFETY: a helper without arguments.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let Some(back) = (port as u32).wrapping_add(cfg.cpus).wrapping_sub(cpu).checked_rem(cfg.cpus) else {
        return TRIED_TAKEN;
    };
    let own = port as u32 - back.min(port as u32);
    if own < s.min {
        return TRIED_TAKEN;
    }
    s.key.snat_port = own as u16;
    if !take_over(&s.key, index) {
        return TRIED_TAKEN;
    }
    // Removed, then created anew: should veerd's expiry have removed it and
    // another CPU made a fresh mapping there meanwhile, this one fails.
    let _ = NAT_REV.remove(&s.key);
    if NAT_REV.insert(&s.key, &s.mapping, BPF_NOEXIST).is_ok() {
        return TRIED_TAKEN_OVER;
    }
    TRIED_TAKEN
}

/// Whether this CPU may give the SNAT endpoint of mapping `key` (address
/// `index`) to a new flow with timestamps: the old flow used them too (so the backend's
/// TIME_WAIT socket on the tuple takes a newer SYN, see `nat::timestamps`)
/// and both sides closed it [`NAT_REUSE_AFTER_CLOSE_NS`] ago, or no table
/// holds it any more. Its table entry goes, so a late packet of the old
/// flow cannot use the tuple. Each CPU takes over only ports of its own
/// residue class modulo the CPU count, so two never take the same mapping
/// at once.
#[inline(always)]
fn take_over(key: &NatKey, index: u16) -> bool {
    let Some(cfg) = config() else { return false };
    // SAFETY: a helper without arguments.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    if (key.snat_port as u32).checked_rem(cfg.cpus) != Some(cpu) {
        return false;
    }
    // SAFETY: a live map value, read in place.
    let Some(m) = (unsafe { NAT_REV.get(key) }) else { return false };
    if m.flags & (NAT_F_TS | NAT_F_TS_ANSWERED) != NAT_F_TS | NAT_F_TS_ANSWERED {
        return false;
    }
    let k = &ConnKey::of(&m.flow, Room::Mapping);
    let held = |e: &ConnEntry| e.nat_port == key.snat_port && e.nat_addr == index && e.backend == m.backend;
    // SAFETY: read in place, at once.
    if unsafe { NEW_CONNS.get(k) }.is_some_and(&held) {
        return false;
    }
    // SAFETY: read in place, at once.
    if let Some(e) = unsafe { CONNS.get(k) } {
        if held(e) {
            let closed = CONN_F_CLOSING | CONN_F_PEER_CLOSED;
            // SAFETY: a helper without arguments.
            let now = unsafe { aya_ebpf::helpers::bpf_ktime_get_coarse_ns() };
            if e.flags & closed != closed
                || e.flags & CONN_F_TS_AHEAD != 0
                || now.saturating_sub(e.last_seen_ns) < NAT_REUSE_AFTER_CLOSE_NS
            {
                return false;
            }
            let _ = CONNS.remove(k);
        }
    }
    true
}

/// Makes `m` the mapping of a new flow `flow` to backend `backend` of
/// `service`, field by field: a whole value built first would sit on the
/// stack.
#[inline(always)]
fn fresh_mapping(m: &mut NatMapping, flow: &FlowKey, backend: u32, service: u32) {
    m.flow = *flow;
    // The rest word by word (its zeros as fields: a byte-loop `memset`).
    // SAFETY: the words from `backend` to the end, all integers, all set.
    let w = unsafe { store::Words::over(core::ptr::addr_of_mut!(m.backend) as *mut [u32; MAPPING_REST]) };
    w.put(0, backend);
    w.put(1, service);
    for i in 2..MAPPING_REST {
        w.put(i, 0);
    }
}

/// The words of a `NatMapping` after its flow key.
const MAPPING_REST: usize = (size_of::<NatMapping>() - offset_of!(NatMapping, backend)) / 4;

/// Whether the mapping [`allocate`] made last on this CPU is proxied.
#[inline(always)]
pub fn allocated_proxied() -> bool {
    ALLOC_SCRATCH.get(0).is_some_and(|s| s.mapping.flags & NAT_F_PROXIED != 0)
}
