//! Per-CPU counters: no atomics needed, userspace sums the CPUs.

use aya_ebpf::{macros::map, maps::PerCpuArray};
use veer_abi::{Counters, GlobalCounter, MAX_BACKENDS, MAX_SERVICES};

/// Packets, bytes and new flows per service id.
#[map]
static SERVICE_STATS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(MAX_SERVICES, 0);

/// Packets, bytes and new flows per backend id.
#[map]
static BACKEND_STATS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(MAX_BACKENDS, 0);

/// One counter per [`GlobalCounter`]: drops by reason, table events, paths taken.
#[map]
static GLOBAL_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(GlobalCounter::COUNT, 0);

/// Adds one to a global counter.
#[inline(always)]
pub fn count(counter: GlobalCounter) {
    if let Some(p) = GLOBAL_STATS.get_ptr_mut(counter as u32) {
        unsafe { *p += 1 };
    }
}

#[inline(always)]
fn add(c: Option<*mut Counters>, bytes: u64, new_flow: bool) {
    if let Some(c) = c {
        let c = unsafe { &mut *c };
        c.packets += 1;
        c.bytes += bytes;
        if new_flow {
            c.new_flows += 1;
        }
    }
}

/// Accounts one forwarded packet to its service and backend.
#[inline(always)]
pub fn forwarded(service: u32, backend: u32, bytes: u64, new_flow: bool) {
    add(SERVICE_STATS.get_ptr_mut(service), bytes, new_flow);
    add(BACKEND_STATS.get_ptr_mut(backend), bytes, new_flow);
}
