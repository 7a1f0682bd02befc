//! Attaching the program to the configured interfaces.

use anyhow::{Context, Result};
use tracing::{info, warn};

use super::Publisher;
use crate::{
    config::{AttachModeConfig, DaemonConfig},
    daemon::model::Services,
    dataplane::AttachMode,
    net,
};

impl Publisher {
    /// Attaches to every configured interface through pinned links (an
    /// adopted link gets the new program atomically).
    pub fn attach(&mut self, daemon: &DaemonConfig) -> Result<()> {
        let mode = match daemon.attach_mode {
            AttachModeConfig::Driver => AttachMode::Driver,
            AttachModeConfig::Skb => AttachMode::Skb,
        };
        let pin_dir = daemon.pin_dir();
        for iface in &daemon.interfaces {
            let adopted =
                self.dp.attach_pinned(iface, mode, &pin_dir).with_context(|| format!("attaching to {iface}"))?;
            // NAT may route a packet out of any of them.
            if let Ok(ifindex) = net::ifindex(iface) {
                if self.tx_ports.insert(ifindex) {
                    if let Err(e) = self.dp.add_tx_port(ifindex) {
                        warn!(%iface, error = %e, "cannot add the interface to the devmap");
                    }
                }
            }
            if adopted {
                info!(%iface, "adopted the pinned XDP link; program replaced atomically");
            } else {
                info!(%iface, ?mode, "XDP program attached and its link pinned");
            }
        }
        Ok(())
    }

    /// Clears every suspicion a previous daemon left: a suspicion is a
    /// question for this daemon's probes, and one left behind would hold a
    /// backend out with nobody to clear it.
    pub fn clear_suspicions(&mut self, services: &Services) {
        for (_, id) in services.backend_ids() {
            if let Err(e) = self.dp.clear_suspect(id) {
                warn!(id, error = %e, "clearing a stale suspicion failed; it lapses on its own");
            }
        }
    }
}
