//! Passive detection on the daemon's side: the dataplane's signals arrive
//! through its ring buffer (no polling), the suspect's checker probes at
//! once, and its verdict either takes the backend down (as any flip) or
//! clears the dataplane's suspicion.

use std::path::Path;

use anyhow::Context;

use tokio::{io::unix::AsyncFd, sync::mpsc};
use tracing::warn;

use crate::dataplane::passive::{PassiveEvents, PassiveSignal};

/// Reads the pinned `PASSIVE_EVENTS` on a task of its own and hands each
/// batch of signals to the daemon's loop. Without it (an old kernel, a
/// broken pin) passive detection still moves connections in the dataplane;
/// only the immediate probe is lost, which is logged.
pub fn watch(pin_dir: &Path) -> mpsc::Receiver<Vec<PassiveSignal>> {
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
