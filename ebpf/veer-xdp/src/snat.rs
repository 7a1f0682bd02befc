//! SNAT endpoints and the return mappings of NAT flows.
//!
//! A NAT flow leaves veer from one of its backend's SNAT addresses and a
//! port of the configured range. `NAT_REV` maps the tuple of the backend's
//! answers back to the flow; it is created when the endpoint is allocated,
//! so no live endpoint is ever handed out twice, and removed when the flow
//! ends or moves. The connection table keeps each flow's endpoint
//! ([`Slot`]); the NAT rewrite itself is in `nat`.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, PerCpuArray},
};
use veer_abi::{
    Backend, ConnEntry, FlowKey, NatConfig, NatKey, NatMapping, ProxiedClient, ProxiedSyn, CONN_F_TS,
    DEFAULT_NAT_TABLE_SIZE, MAX_SNAT_ADDRS, NAT_F_ANSWERED, NAT_F_PROXIED, NAT_F_RESCUED,
};

use crate::{
    backends::backend,
    headers::field::{set_words16, words16},
    store,
};

/// NAT flows by the tuple of the backend's answers. Not LRU: a live mapping
/// is never evicted to make room; veerd removes the idle ones, and a full
/// table refuses new NAT flows (counted as exhaustion).
#[map]
pub static NAT_REV: HashMap<NatKey, NatMapping> = HashMap::with_max_entries(DEFAULT_NAT_TABLE_SIZE, 0);

/// The SNAT addresses (16-byte form); each backend uses a run of them.
#[map]
static SNAT_ADDRS: Array<[u8; 16]> = Array::with_max_entries(MAX_SNAT_ADDRS, 0);

/// The SNAT port range.
#[map]
static NAT_CONFIG: Array<NatConfig> = Array::with_max_entries(1, 0);

/// The SYN about to be mapped on this CPU, if veer's SYN proxy made it
/// (see `nat::syn_cookie`), and its client (`names::PROXIED_NEXT`).
#[map]
static PROXIED_NEXT: PerCpuArray<ProxiedSyn> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU room for a mapping's key being looked up (`answered`).
#[map]
static KEY_SCRATCH: PerCpuArray<NatKey> = PerCpuArray::with_max_entries(1, 0);

/// A NAT flow's SNAT endpoint: port, and index of the address in
/// `SNAT_ADDRS`; and the shift of its TCP timestamps (`nat::timestamps`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Slot {
    /// The SNAT port; 0 for none.
    pub port: u16,
    /// The SNAT address's index in `SNAT_ADDRS`.
    pub addr: u16,
    /// Added to the client's timestamps, when `ts` is not 0.
    pub ts_off: u32,
    /// Whether the flow's timestamps are shifted.
    pub ts: u32,
}

impl Slot {
    /// No SNAT endpoint (DSR).
    pub const NONE: Slot = Slot { port: 0, addr: 0, ts_off: 0, ts: 0 };

    /// The endpoint a table entry holds.
    #[inline(always)]
    pub fn of(e: &ConnEntry) -> Slot {
        let ts = (e.flags & CONN_F_TS != 0) as u32;
        Slot { port: e.nat_port, addr: e.nat_addr, ts_off: e.ts_off, ts }
    }
}

/// The NAT settings (port range, SYN cookies); `None` before veerd wrote them.
#[inline(always)]
pub fn config() -> Option<&'static NatConfig> {
    NAT_CONFIG.get(0)
}

/// The address at `index` of `SNAT_ADDRS` (a SNAT address, or a tunnel's
/// outer source), in place: a copy of it is a `memmove` call.
#[inline(always)]
pub fn address(index: u16) -> Option<&'static [u8; 16]> {
    SNAT_ADDRS.get(index as u32)
}

/// The port a NAT flow reaches backend `b` on: its own, or the VIP's.
#[inline(always)]
pub fn backend_port(key: &FlowKey, b: &Backend) -> u16 {
    if b.port != 0 {
        b.port
    } else {
        key.dport
    }
}

/// Marks the SYN of `key` about to reach the NAT program (same CPU, same
/// packet) as made by veer's SYN proxy for `client`: its mapping is proxied.
#[inline(always)]
pub fn proxy_next(key: &FlowKey, client: &ProxiedClient) {
    if let Some(p) = PROXIED_NEXT.get_ptr_mut(0) {
        // SAFETY: this CPU's value; nothing else runs on it meanwhile.
        // Field by field (a whole value is a `memmove` call).
        unsafe {
            store::copy(&mut (*p).key, key);
            store::copy(&mut (*p).client, client);
            ((*p).armed, (*p).claimed) = (1, 0);
        }
    }
}

/// Whether the NAT program's SYN of `key` is the one [`proxy_next`]
/// marked. Called once for every SYN the NAT program sees, so that a mark
/// never outlives its packet (even one that gets no mapping).
#[inline(never)]
pub fn claim_proxied(key: &FlowKey) -> bool {
    let Some(p) = PROXIED_NEXT.get_ptr_mut(0) else { return false };
    // SAFETY: this CPU's value.
    let p = unsafe { &mut *p };
    let mine = p.armed != 0 && same_flow(&p.key, key);
    p.armed = 0;
    p.claimed = mine as u32;
    mine
}

/// The NAT program's current SYN got no mapping (it went on a live flow's):
/// its claim, if any, goes.
#[inline(always)]
pub fn unclaim() {
    if let Some(p) = PROXIED_NEXT.get_ptr_mut(0) {
        // SAFETY: this CPU's value.
        unsafe { (*p).claimed = 0 };
    }
}

/// Whether the NAT program's current SYN is one veer's SYN proxy made
/// (after [`claim_proxied`]).
#[inline(always)]
pub fn claimed() -> bool {
    PROXIED_NEXT.get(0).is_some_and(|p| p.claimed != 0)
}

/// Makes `m` (of `key`) proxied if the NAT program's SYN is the one
/// [`claim_proxied`] claimed (taken once).
#[inline(always)]
pub(crate) fn take_proxied(key: &FlowKey, m: &mut NatMapping) {
    let Some(p) = PROXIED_NEXT.get_ptr_mut(0) else { return };
    // SAFETY: this CPU's value.
    let p = unsafe { &mut *p };
    if p.claimed == 0 || !same_flow(&p.key, key) {
        return;
    }
    p.claimed = 0;
    m.flags = NAT_F_PROXIED;
    m.cookie = p.client.cookie;
    m.client_isn = p.client.isn;
    m.client_mss = p.client.mss;
    m.client_window = p.client.window;
    // SAFETY: a helper without arguments.
    m.syn_sent_ns = unsafe { aya_ebpf::helpers::bpf_ktime_get_coarse_ns() };
}

/// Whether two flow keys are equal.
#[inline(always)]
pub fn same_flow(a: &FlowKey, b: &FlowKey) -> bool {
    // Word by word, in registers: a byte-array comparison would be a call
    // to `bcmp`, and whole copies would take the caller's stack.
    let (a, b) = (a as *const FlowKey as *const u64, b as *const FlowKey as *const u64);
    for i in 0..5 {
        // SAFETY: a FlowKey is 40 bytes; unaligned reads within both.
        if unsafe { core::ptr::read_unaligned(a.add(i)) != core::ptr::read_unaligned(b.add(i)) } {
            return false;
        }
    }
    true
}

/// Removes the return mapping of `key`'s entry `e` (a connection that
/// ended, or moved to another backend before it was established: a late
/// answer of the old backend then finds no mapping and is not passed on).
/// A call of its own, off the NAT program's full stack.
#[inline(never)]
pub fn release(key: &FlowKey, e: &ConnEntry) {
    if e.nat_port == 0 {
        return;
    }
    // Built here, not through `mapping_key`: its `Option<NatKey>` costs
    // stack on the NAT program's deepest call chain (veer_nat -> reopen ->
    // release), which the verifier then refuses.
    let (Some(b), Some(snat)) = (backend(e.backend), address(e.nat_addr)) else { return };
    let rkey = NatKey::new(words16(&b.addr), words16(snat), backend_port(key, b), e.nat_port, key.proto);
    // Only its own: the entry may be older than a reuse of its endpoint.
    // SAFETY: read in place, at once.
    if unsafe { NAT_REV.get(&rkey) }.is_some_and(|m| same_flow(&m.flow, key)) {
        let _ = NAT_REV.remove(&rkey);
    }
}

/// The `NAT_REV` key of the mapping flow `key`'s table entry `e` holds.
#[inline(always)]
pub fn mapping_key(key: &FlowKey, e: &ConnEntry) -> Option<NatKey> {
    if e.nat_port == 0 {
        return None;
    }
    let (b, snat) = (backend(e.backend)?, address(e.nat_addr)?);
    Some(NatKey::new(words16(&b.addr), words16(snat), backend_port(key, b), e.nat_port, key.proto))
}

/// Whether the backend of flow `key` (table entry `e`) answered its SYN:
/// its SYN-ACK came back through veer (see `nat::proof`). A call of its
/// own, its key in per-CPU scratch: the NAT program's stack has no room.
#[inline(never)]
pub fn answered(key: &FlowKey, e: &ConnEntry) -> bool {
    let (Some(b), Some(snat), Some(slot)) =
        (backend(e.backend), SNAT_ADDRS.get(e.nat_addr as u32), KEY_SCRATCH.get_ptr_mut(0))
    else {
        return false;
    };
    if e.nat_port == 0 {
        return false;
    }
    // SAFETY: this CPU's scratch value; nothing else runs on it meanwhile.
    // Filled field by field: a whole key built first would sit on the stack.
    let slot = unsafe { &mut *slot };
    set_words16(&mut slot.backend, words16(&b.addr));
    set_words16(&mut slot.snat, words16(snat));
    slot.backend_port = backend_port(key, b);
    slot.snat_port = e.nat_port;
    slot.set_proto(key.proto);
    // SAFETY: read in place, at once.
    unsafe { NAT_REV.get(slot) }.is_some_and(|m| m.flags & NAT_F_ANSWERED != 0)
}

/// The 8-aligned word of mapping `m` whose high half (little-endian) is
/// `flags` (the low half is `seq_delta`): BPF has 64-bit atomics from its
/// first instruction set, 32-bit ones only with ALU32.
#[inline(always)]
fn flags_word(m: *mut NatMapping) -> *mut u64 {
    const _: () = assert!(
        cfg!(target_endian = "little")
            && core::mem::offset_of!(NatMapping, flags) == core::mem::offset_of!(NatMapping, seq_delta) + 4
            && core::mem::offset_of!(NatMapping, seq_delta) % 8 == 0
            && core::mem::align_of::<NatMapping>() == 8
    );
    // SAFETY: a live map value's field; only its address is taken.
    (unsafe { core::ptr::addr_of_mut!((*m).seq_delta) }) as *mut u64
}

/// Sets `bits` in mapping `m`'s flags in one atomic instruction and
/// returns the flags before (see [`claim_rescue`]).
#[inline(always)]
pub fn fetch_or_flags(m: *mut NatMapping, bits: u32) -> u32 {
    (crate::atomic::fetch_or(flags_word(m), (bits as u64) << 32) >> 32) as u32
}

/// Marks mapping `m` rescued ([`NAT_F_RESCUED`]) unless its backend's
/// SYN-ACK came ([`NAT_F_ANSWERED`]), in one compare-and-swap: whether it
/// did. The SYN-ACK sets its bit with [`fetch_or_flags`] and yields if it
/// finds this one, so of a rescue and a SYN-ACK crossing on two CPUs
/// exactly one goes on, and a rescue that loses leaves no mark.
#[inline(always)]
pub fn claim_rescue(m: *mut NatMapping) -> bool {
    let word = flags_word(m);
    // SAFETY: a live map value's word, read once; the swap checks it.
    let mut seen = unsafe { core::ptr::read_volatile(word) };
    // Other bits change rarely (a SYN-ACK's timestamps mark): a few tries.
    for _ in 0..4 {
        if (seen >> 32) as u32 & NAT_F_ANSWERED != 0 {
            return false;
        }
        let before = crate::atomic::cmpxchg(word, seen, seen | (NAT_F_RESCUED as u64) << 32);
        if before == seen {
            return true;
        }
        seen = before;
    }
    false
}

/// Whether a packet that is not for a VIP goes to a SNAT port (and so may
/// be a backend's answer to a NAT flow).
#[inline(always)]
pub fn is_return_port(key: &FlowKey) -> bool {
    NAT_CONFIG.get(0).is_some_and(|c| c.port_min != 0 && key.dport >= c.port_min && key.dport <= c.port_max)
}

/// The `NAT_REV` key of a packet from a backend to a SNAT address (`key` as
/// parsed: backend -> SNAT port), or of the flow an ICMP error quotes.
#[inline(always)]
pub fn return_key(k: &FlowKey) -> NatKey {
    NatKey::of_answer(k)
}
