//! The XDP dataplane, from userspace: load, attach, write tables, read counters.
//!
//! [`Dataplane`] owns the loaded object. Every write it makes is one the XDP
//! program sees atomically: a backend's state is one word, a service value is
//! swapped whole, and a ring is written into the inactive half before one
//! service write switches to it.
//!
//! Needs root (or CAP_BPF + CAP_NET_ADMIN) and a kernel with BTF and bounded
//! loops (5.3+); tested on 6.18. Attaching acts in the network namespace of
//! the calling thread.
//!
//! This file is the index. [`Dataplane`] itself is in `handle`; loading and
//! attaching in `load`, pinned state in [`pin`], the maps' sizes in `layout`,
//! table writes in `service`, `backend` and `rings`, reads (also from the
//! pins alone, [`PinnedMaps`]) in `read`, and errors in `error`.

// Defined before the modules so that they can use it.
/// Opens map `$name` of `$self`'s object as a `$kind`, or returns the error.
macro_rules! map_mut {
    ($self:expr, $kind:ident, $name:expr) => {
        $kind::try_from($self.ebpf.map_mut($name).ok_or(DataplaneError::Missing { kind: "map", name: $name })?)
            .map_err(DataplaneError::map($name, "opening"))?
    };
}

pub mod agent;
mod backend;
mod conn_table;
mod error;
mod handle;
mod layout;
mod load;
pub mod nat;
pub mod nat_sync;
pub mod passive;
pub mod pin;
mod pinned;
mod read;
pub mod rescue;
mod ring_reader;
mod rings;
mod service;
mod syscall;
#[cfg(feature = "testing")]
mod testing;
mod tunnel;

// The address and key conversions live below the dataplane; re-exported for
// callers that think of them as dataplane types.
pub use crate::addr::{display_service, flow_key, from_abi, service_key, to_abi, Protocol};
pub use crate::ring::identity_of;
pub use conn_table::{ConnTable, PinnedConnTable};
pub use error::{DataplaneError, Result};
pub use handle::Dataplane;
pub use layout::{lru_capacity, possible_cpus, DataplaneOptions, POSSIBLE_CPUS};
pub(crate) use layout::{map_layout, MapLayout};
pub use load::{AttachMode, XDP_OBJECT};
pub use read::{active_per_backend, is_active, monotonic_ns, MapReader, PinnedMaps, TableUsage};
pub use service::ServiceSpec;
#[cfg(feature = "testing")]
pub use testing::{run_frame, Baseline, TestRunOutput, VerifierWalk, BASELINE_OBJECT};
