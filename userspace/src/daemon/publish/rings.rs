//! The ring queue: services whose rings health flips changed, rebuilt one
//! per turn of the daemon's loop while no event waits, and what each
//! rebuild brings, logged once the ring is in (only then does it hold for
//! new flows). Flips that keep arriving (a start, a correlated failure)
//! cost each service one rebuild per pass of the queue, not one per flip.

use std::collections::VecDeque;

use tracing::{error, info, warn};
use veer_abi::ServiceKey;

use super::Publisher;
use crate::daemon::model::Services;

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
pub(super) struct RingQueue {
    queue: VecDeque<ServiceKey>,
    logs: Vec<(ServiceKey, RingLog)>,
}

impl Publisher {
    /// Queues the ring of the service keyed `key` (once).
    pub fn queue_ring(&mut self, key: ServiceKey) {
        if !self.rings.queue.contains(&key) {
            self.rings.queue.push_back(key);
        }
    }

    /// Logs `log` once the ring of the service keyed `key` is in.
    pub fn log_when_in(&mut self, key: ServiceKey, log: RingLog) {
        self.rings.logs.push((key, log));
    }

    /// Whether a ring waits.
    pub fn rings_queued(&self) -> bool {
        !self.rings.queue.is_empty()
    }

    /// Rebuilds the ring of the service longest in the queue (if it still
    /// exists) and logs what that changed.
    pub fn sync_next_ring(&mut self, services: &mut Services) {
        let Some(key) = self.rings.queue.pop_front() else { return };
        if let Some(s) = services.iter_mut().find(|s| s.key == key) {
            if let Err(e) = self.sync(s) {
                error!(service = %s.cfg.name, error = %format!("{e:#}"), "writing the dataplane failed");
            }
        }
        for (_, log) in self.rings.logs.extract_if(.., |(k, _)| *k == key) {
            log.emit();
        }
    }
}
