//! Attaching the program to the configured interfaces.

use anyhow::{Context, Result};
use tracing::{info, warn};

use std::collections::HashSet;

use crate::{
    config::{AttachModeConfig, DaemonConfig},
    dataplane::{AttachMode, Dataplane},
    net,
};

/// Attaches to every configured interface through pinned links (an
/// adopted link gets the new program atomically).
pub fn attach(dp: &mut Dataplane, tx_ports: &mut HashSet<u32>, daemon: &DaemonConfig) -> Result<()> {
    let mode = match daemon.attach_mode {
        AttachModeConfig::Driver => AttachMode::Driver,
        AttachModeConfig::Skb => AttachMode::Skb,
    };
    let pin_dir = daemon.pin_dir();
    for iface in &daemon.interfaces {
        let adopted = dp.attach_pinned(iface, mode, &pin_dir).with_context(|| format!("attaching to {iface}"))?;
        // NAT may route a packet out of any of them.
        if let Ok(ifindex) = net::ifindex(iface) {
            if tx_ports.insert(ifindex) {
                if let Err(e) = dp.add_tx_port(ifindex) {
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
