//! Passive detection on the daemon's side: the dataplane's signals arrive
//! through its ring buffer (no polling), the suspect's checker probes at
//! once, and its verdict either takes the backend down (as any flip) or
//! clears the dataplane's suspicion.

use std::path::Path;

use anyhow::Context;

use tokio::{io::unix::AsyncFd, sync::mpsc};
use tracing::{info, warn};

use super::Daemon;
use crate::dataplane::passive::{PassiveEvents, PassiveSignal};

/// Reads the pinned `PASSIVE_EVENTS` on a task of its own and hands each
/// batch of signals to the daemon's loop. Without it (an old kernel, a
/// broken pin) passive detection still moves connections in the dataplane;
/// only the immediate probe is lost, which is logged.
pub(super) fn watch(pin_dir: &Path) -> mpsc::Receiver<Vec<PassiveSignal>> {
    let (tx, rx) = mpsc::channel(64);
    let events = PassiveEvents::open(pin_dir).map_err(anyhow::Error::from).and_then(|e| {
        // SAFETY: the ring buffer owns its descriptor, and the AsyncFd owns the ring buffer.
        unsafe { AsyncFd::register(e) }.map_err(|e| e.into_parts().1).context("polling PASSIVE_EVENTS")
    });
    match events {
        Ok(mut fd) => {
            tokio::spawn(async move {
                loop {
                    match PassiveEvents::next_batch(&mut fd).await {
                        Ok(batch) => {
                            if tx.send(batch).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => return warn!(error = %e, "reading the dataplane's passive signals failed"),
                    }
                }
            });
        }
        Err(e) => {
            warn!(error = %format!("{e:#}"), "cannot read the dataplane's passive signals; suspects are not probed at once")
        }
    }
    rx
}

impl Daemon {
    /// Backends the dataplane began to suspect: count, log, probe now.
    pub(super) fn on_passive(&mut self, signals: Vec<PassiveSignal>) {
        for s in signals {
            *self.metrics.passive.entry((s.backend, s.kind)).or_default() += 1;
            let Some(i) = self.service_of(s.backend) else { continue };
            let svc = &self.services[i];
            let Some(b) = svc.backend(s.backend) else { continue };
            warn!(
                service = %svc.cfg.name, backend = %b.cfg.name, signal = s.kind.name(),
                "backend SUSPECT: the dataplane moved a connection off it and sends it no new flows; probing it now"
            );
            if let Some(c) = &b.checker {
                c.suspect();
            }
        }
    }

    /// A suspect passed its immediate probe: it takes new flows again.
    pub(super) fn on_suspect_cleared(&mut self, backend: u32, generation: u64, reason: &str) {
        let Some(i) = self.service_of(backend) else { return };
        let svc = &self.services[i];
        let Some(b) = svc.backend(backend).filter(|b| b.generation == generation) else { return };
        let (svc_name, name) = (svc.cfg.name.clone(), b.cfg.name.clone());
        *self.metrics.suspects_cleared.entry(backend).or_default() += 1;
        match self.dp.clear_suspect(backend) {
            Ok(()) => {
                info!(service = %svc_name, backend = %name, %reason, "suspicion cleared: backend takes new flows again")
            }
            Err(e) => {
                warn!(service = %svc_name, backend = %name, error = %e, "clearing a suspicion failed; it lapses on its own")
            }
        }
    }
}
