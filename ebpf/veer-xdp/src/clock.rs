//! The coarse clock (`CLOCK_MONOTONIC_COARSE`) for the established flows'
//! idle clock: each CPU keeps the last reading with the kernel tick it was
//! read in (`bpf_jiffies64`, which the verifier turns into one load on
//! x86-64, Linux 5.7+), and reads the clock again only when the tick moved.
//! The coarse clock only moves at a tick, so a reading is what
//! `bpf_ktime_get_coarse_ns` gives, or one tick behind: the kernel counts
//! the tick before it updates the clock, and a CPU that reads in between
//! keeps the older reading until the next tick (after a long idle, the
//! older reading can be that much older). Readings are therefore not in
//! order across CPUs: compare them saturating. Fine for idle refreshes
//! counted in tenths of seconds; new flows and failure signals read the
//! clock itself. The helper's call into the timekeeping code cost about a
//! twentieth of an established flow's packet (a per-CPU array lookup is
//! inlined from Linux 6.10 on; before, it is a call as well).

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

/// The coarse clock in nanoseconds (as `bpf_ktime_get_coarse_ns`).
/// Inline: a BPF-to-BPF call's return goes through the kernel's return
/// thunk on CPUs with return-stack mitigations (AMD's SRSO), about 6 ns of
/// an established packet's 90 on the bench's EPYC VM.
#[inline(always)]
pub fn coarse_ns() -> u64 {
    let tick = unsafe { bpf_jiffies64() };
    let Some(r) = CLOCK.get_ptr_mut(0) else { return unsafe { bpf_ktime_get_coarse_ns() } };
    // SAFETY: this CPU's reading, in place.
    let r = unsafe { &mut *r };
    if r.tick != tick {
        r.ns = unsafe { bpf_ktime_get_coarse_ns() };
        r.tick = tick;
    }
    r.ns
}
