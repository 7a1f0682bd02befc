//! Keeping each flow on its backend.

use aya_ebpf::helpers::bpf_ktime_get_ns;
use veer_abi::{Backend, BackendState, ConnEntry, FlowKey, Service, CONN_F_CLOSING};

use crate::{
    headers::l4::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    maps::CONNS,
    scheduler::backend,
};

/// A TCP SYN without ACK opens a new connection, even on a 5-tuple still in
/// the table (clients reuse ports): it is scheduled afresh, so it never
/// follows a finished connection to a draining or stale backend.
#[inline(always)]
pub fn opens_connection(tcp_flags: u8) -> bool {
    tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN
}

/// The backend an existing flow is pinned to, if it may keep the flow
/// (`up` or `draining`). Refreshes the entry's last-seen time.
///
/// A flow whose backend is down or disabled, or whose key now belongs to a
/// different service, gets `None`: the caller schedules it again and
/// [`pin`] overwrites the entry.
#[inline(always)]
pub fn lookup(svc: &Service, key: &FlowKey, tcp_flags: u8) -> Option<(u32, &'static Backend)> {
    let entry = CONNS.get_ptr_mut(key)?;
    // SAFETY: the LRU map is preallocated; a concurrent eviction can at worst
    // make us read another live entry, which the checks below then reject.
    let entry = unsafe { &mut *entry };
    if entry.service != svc.id {
        return None;
    }
    let id = entry.backend;
    let b = backend(id)?;
    if !BackendState::from_u32(b.state).keeps_flows() {
        return None;
    }
    let now = unsafe { bpf_ktime_get_ns() };
    // Writing the shared line on every packet bounces it between CPUs; a
    // coarse clock is all idle detection needs.
    if now.wrapping_sub(entry.last_seen_ns) > 100_000_000 {
        entry.last_seen_ns = now;
    }
    if tcp_flags & (TCP_FIN | TCP_RST) != 0 && entry.flags & CONN_F_CLOSING == 0 {
        entry.flags |= CONN_F_CLOSING;
    }
    Some((id, b))
}

/// Pins a flow to a backend (insert or overwrite).
#[inline(always)]
pub fn pin(svc: &Service, key: &FlowKey, backend: u32) {
    let entry = ConnEntry { backend, service: svc.id, last_seen_ns: unsafe { bpf_ktime_get_ns() }, flags: 0, _pad: 0 };
    // A full table evicts its least recently used entry; failure here only
    // costs the flow its pin, and Maglev/source-hash reschedule it the same.
    let _ = CONNS.insert(key, &entry, 0);
}
