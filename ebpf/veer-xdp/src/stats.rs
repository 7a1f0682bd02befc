//! Per-CPU counters: no atomics needed, userspace sums the CPUs.

use veer_abi::{Counters, GlobalCounter};

use crate::maps::{BACKEND_STATS, GLOBAL_STATS, SERVICE_STATS};

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
