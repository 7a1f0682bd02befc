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
mod error;
mod layout;
mod load;
pub mod nat;
pub mod passive;
pub mod pin;
mod read;
mod rings;
mod service;
mod syscall;
#[cfg(feature = "testing")]
mod testing;

use std::{collections::HashMap as StdHashMap, time::Duration};

use aya::{maps::Map, programs::Xdp, Ebpf};
use veer_abi::{MAX_RING_SIZE, PROGRAM_NAME};

// The address and key conversions live below the dataplane; re-exported for
// callers that think of them as dataplane types.
pub use crate::addr::{display_service, flow_key, from_abi, service_key, to_abi, Protocol};
pub use crate::ring::identity_of;
pub use error::DataplaneError;
pub use layout::{lru_capacity, possible_cpus, DataplaneOptions, POSSIBLE_CPUS};
pub(crate) use layout::{map_layout, MapLayout};
pub use load::AttachMode;
pub use read::{active_per_backend, is_active, monotonic_ns, MapReader, PinnedMaps, TableUsage};
pub use service::ServiceSpec;
#[cfg(feature = "testing")]
pub use testing::{run_frame, Baseline, TestRunOutput, BASELINE_OBJECT};

/// Result of dataplane operations.
pub type Result<T, E = DataplaneError> = std::result::Result<T, E>;

/// The XDP object veer was built with.
pub static XDP_OBJECT: &[u8] = aya::include_bytes_aligned!(env!("VEER_XDP_OBJ"));

type Ring = [u32; MAX_RING_SIZE];

/// The loaded XDP dataplane.
pub struct Dataplane {
    ebpf: Ebpf,
    max_services: u32,
    max_backends: u32,
    attached: StdHashMap<String, aya::programs::xdp::XdpLinkId>,
    /// Pinned links this process attached or adopted, held open while it runs.
    held_links: Vec<aya::programs::links::FdLink>,
    /// Maglev tables built fresh from members sorted by identity, never from
    /// the live table (fleet mode: every node builds the same table).
    fresh_rings: bool,
}

impl MapReader for Dataplane {
    fn map(&self, name: &'static str) -> Result<&Map> {
        self.ebpf.map(name).ok_or(DataplaneError::Missing { kind: "map", name })
    }
}

impl Dataplane {
    /// Service capacity chosen at load time.
    pub fn max_services(&self) -> u32 {
        self.max_services
    }

    /// Backends the tables hold (ids `0..max_backends`).
    pub fn max_backends(&self) -> u32 {
        self.max_backends
    }

    /// Time the XDP program has run and how many times, since stats were
    /// enabled (`aya::sys::enable_stats`, kernel 5.8+; zero otherwise).
    pub fn run_stats(&self) -> Result<(Duration, u64)> {
        let info = self.xdp_ref()?.info().map_err(DataplaneError::program("reading program info"))?;
        Ok((info.run_time(), info.run_count()))
    }

    /// The entry program, to read (its info, a test run).
    pub(crate) fn xdp_ref(&self) -> Result<&Xdp> {
        let p =
            self.ebpf.program(PROGRAM_NAME).ok_or(DataplaneError::Missing { kind: "program", name: PROGRAM_NAME })?;
        p.try_into().map_err(DataplaneError::program("program veer_xdp is not XDP"))
    }
}
