//! The backend table: every service's backends, by id.
//!
//! Userspace writes a backend whole (address, MACs, interface, weight,
//! state word); the dataplane only reads it. An id is an index, so a lookup
//! is an array load.

use aya_ebpf::{macros::map, maps::Array};
use veer_abi::{Backend, Service, MAX_BACKENDS};

/// Backends by id.
#[map]
static BACKENDS: Array<Backend> = Array::with_max_entries(MAX_BACKENDS, 0);

/// The backend with this id, if the id is in the table.
#[inline(always)]
pub fn backend(id: u32) -> Option<&'static Backend> {
    BACKENDS.get(id)
}

/// The backend with this id, if it belongs to `svc`. A freed id handed to
/// another service must not pull this service's flows along with it.
#[inline(always)]
pub fn owned_backend(svc: &Service, id: u32) -> Option<&'static Backend> {
    owned_by(svc.id, id)
}

/// [`owned_backend`] by the service's id alone.
#[inline(always)]
pub fn owned_by(service: u32, id: u32) -> Option<&'static Backend> {
    backend(id).filter(|b| b.service == service)
}
