//! The [`Dataplane`] handle: the loaded XDP object and what this process
//! attached with it. Loading, attaching and every table write are methods
//! defined next to what they touch (`load`, `pin`, `service`, `rings`, ...).

use std::{collections::HashMap as StdHashMap, time::Duration};

use aya::{maps::Map, programs::Xdp, Ebpf};
use veer_abi::PROGRAM_NAME;

use super::{
    error::{DataplaneError, Result},
    read::MapReader,
};

/// The loaded XDP dataplane.
pub struct Dataplane {
    pub(super) ebpf: Ebpf,
    pub(super) max_services: u32,
    pub(super) max_backends: u32,
    pub(super) attached: StdHashMap<String, aya::programs::xdp::XdpLinkId>,
    /// Pinned links this process attached or adopted, held open while it runs.
    pub(super) held_links: Vec<aya::programs::links::FdLink>,
    /// Maglev tables built fresh from members sorted by identity, never from
    /// the live table (fleet mode: every node builds the same table).
    pub(super) fresh_rings: bool,
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
