//! The coarse clock (`CLOCK_MONOTONIC_COARSE`) as the per-packet paths read
//! it: each CPU keeps the last reading with the kernel tick it was read in
//! (`bpf_jiffies64`, which the verifier turns into one load on x86-64,
//! Linux 5.7+), and reads the clock again only when the tick moved. The
//! coarse clock only moves at a tick, so a reading is the same as
//! `bpf_ktime_get_coarse_ns` gives, or (read between the tick's jiffies
//! and clock updates) one tick behind until the next tick; idle timeouts
//! are counted in tenths of seconds. The helper's call into the
//! timekeeping code cost about a fifth of an established flow's packet.

use aya_ebpf::{
    helpers::{bpf_jiffies64, bpf_ktime_get_coarse_ns},
    macros::map,
    maps::PerCpuArray,
};

/// A reading of the coarse clock, and the tick it was read in.
#[repr(C)]
struct Reading {
    tick: u64,
    ns: u64,
}

/// Each CPU's last reading.
#[map]
static CLOCK: PerCpuArray<Reading> = PerCpuArray::with_max_entries(1, 0);

/// The coarse clock in nanoseconds (as `bpf_ktime_get_coarse_ns`). A call
/// of its own: its map key stays off its callers' full stacks.
#[inline(never)]
pub fn coarse_ns() -> u64 {
    let tick = unsafe { bpf_jiffies64() };
    let Some(r) = CLOCK.get_ptr_mut(0) else { return unsafe { bpf_ktime_get_coarse_ns() } };
    // SAFETY: this CPU's reading, in place.
    let r = unsafe { &mut *r };
    if r.tick != tick || r.ns == 0 {
        r.ns = unsafe { bpf_ktime_get_coarse_ns() };
        r.tick = tick;
    }
    r.ns
}
