//! What the daemon's subsystems count, each in its own struct, for
//! `/metrics`.

use std::{
    collections::HashMap,
    sync::{atomic::AtomicU64, Arc},
};

use super::histogram::Histogram;

/// Health tracking's counters, by backend id.
#[derive(Debug, Default)]
pub struct HealthCounters {
    /// Health-check latency.
    pub latency: HashMap<u32, Histogram>,
    /// Up -> down transitions.
    pub failovers: HashMap<u32, u64>,
    /// Down -> up transitions.
    pub recoveries: HashMap<u32, u64>,
    /// Checks that failed locally (no verdict), by backend.
    pub local_errors: HashMap<u32, u64>,
    /// Passive failure signals from the dataplane, by (backend, kind).
    pub passive: HashMap<(u32, veer_abi::PassiveKind), u64>,
    /// Suspicions an immediate probe cleared, by backend.
    pub suspects_cleared: HashMap<u32, u64>,
    /// Times a service's fail-open guard tripped.
    pub fail_open_trips: u64,
}

/// Recovery's counters.
#[derive(Debug, Default)]
pub struct RecoveryCounters {
    /// Restart command runs, by backend id (shared with the restart tasks).
    pub restarts: HashMap<u32, Arc<AtomicU64>>,
    /// Scaling hooks fired, by (service, direction).
    pub scale_hooks: HashMap<(String, &'static str), u64>,
    /// Backends replaced by a substitute, and replace attempts that failed.
    pub replacements: [u64; 2],
}

impl RecoveryCounters {
    /// Backend `id`'s restart counter, to hand to a restart task.
    pub fn restarts_of(&mut self, id: u32) -> Arc<AtomicU64> {
        self.restarts.entry(id).or_default().clone()
    }
}
