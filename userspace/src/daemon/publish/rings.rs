//! The ring queue: services whose rings health flips changed, rebuilt one
//! per turn of the daemon's loop while no event waits, and what each
//! rebuild brings, logged once the ring is in (only then does it hold for
//! new flows). Flips that keep arriving (a start, a correlated failure)
//! cost each service one rebuild per pass of the queue, not one per flip.

use std::collections::VecDeque;

use tracing::{info, warn};
use veer_abi::ServiceKey;

/// A change a ring rebuild brings, logged once the ring is in.
#[derive(Debug)]
pub enum RingLog {
    /// A backend came up.
    Up {
        /// Its service.
        service: String,
        /// It.
        backend: String,
        /// Why, from its checker.
        reason: String,
    },
    /// Backups were promoted (fewer primaries up than `min_healthy`).
    BackupsPromoted {
        /// The service.
        service: String,
        /// Its `min_healthy`.
        min_healthy: u32,
    },
    /// Backups went back on standby.
    BackupsStandby {
        /// The service.
        service: String,
    },
}

impl RingLog {
    fn emit(&self) {
        match self {
            RingLog::Up { service, backend, reason } => info!(%service, %backend, %reason, "backend UP"),
            RingLog::BackupsPromoted { service, min_healthy } => {
                warn!(%service, min_healthy, "fewer primaries up than min_healthy: backups promoted")
            }
            RingLog::BackupsStandby { service } => {
                info!(%service, "enough primaries up again: backups back on standby")
            }
        }
    }
}

/// Rings waiting for a rebuild, and what they will change.
#[derive(Debug, Default)]
pub struct RingQueue {
    queue: VecDeque<ServiceKey>,
    logs: Vec<(ServiceKey, RingLog)>,
}

impl RingQueue {
    /// Queues the ring of the service keyed `key` (once).
    pub fn push(&mut self, key: ServiceKey) {
        if !self.queue.contains(&key) {
            self.queue.push_back(key);
        }
    }

    /// Logs `log` once the ring of the service keyed `key` is in.
    pub fn log_when_in(&mut self, key: ServiceKey, log: RingLog) {
        self.logs.push((key, log));
    }

    /// Whether a ring waits.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The service longest in the queue.
    pub fn pop(&mut self) -> Option<ServiceKey> {
        self.queue.pop_front()
    }

    /// Logs what the ring of the service keyed `key` changed: it is in.
    pub fn emit(&mut self, key: ServiceKey) {
        for (_, log) in self.logs.extract_if(.., |(k, _)| *k == key) {
            log.emit();
        }
    }
}
