//! Fleet: announcing this node's VIPs. veerd keeps a host route per VIP on
//! `lo` in `[fleet] announce_table` (protocol 118); the routing daemon
//! (BIRD) learns that table and exports it to the router, whose ECMP route
//! then includes this node. A VIP is announced while a service on it has a
//! backend to send to and an operator has not drained the node; veerd
//! stopping withdraws nothing (the dataplane keeps forwarding).

use std::{collections::BTreeSet, net::IpAddr};

use tracing::{info, warn};

use super::Daemon;
use crate::net;

impl Daemon {
    /// The VIPs this node should announce now.
    fn wanted_vips(&self) -> BTreeSet<IpAddr> {
        if self.overrides.node_drained || self.fleet.as_ref().is_some_and(|f| f.fenced()) {
            return BTreeSet::new();
        }
        self.services.iter().filter(|s| !s.starved && s.published.is_some()).map(|s| s.cfg.vip).collect()
    }

    /// Brings the announcement table in line: announces what is wanted,
    /// withdraws the rest of veerd's routes there (including those a
    /// previous veerd left). A failure is logged and retried next second.
    pub(super) fn sync_announcements(&mut self) {
        let Some(table) = self.cfg.fleet.as_ref().and_then(|f| f.announce_table) else { return };
        let wanted = self.wanted_vips();
        let present: BTreeSet<IpAddr> = match net::announced_vips(table) {
            Ok(v) => v.into_iter().collect(),
            Err(e) => {
                warn!(table, error = %e, "reading the announcement table failed; retrying");
                return;
            }
        };
        for vip in wanted.difference(&present) {
            match net::announce_vip(*vip, table) {
                Ok(()) => info!(%vip, table, "announcing VIP"),
                Err(e) => warn!(%vip, table, error = %e, "announcing a VIP failed; retrying"),
            }
        }
        for vip in present.difference(&wanted) {
            let why = if self.overrides.node_drained {
                "node drained"
            } else if self.fleet.as_ref().is_some_and(|f| f.fenced()) {
                "fenced: this node's path to the backends is broken"
            } else {
                "no backend to send to"
            };
            match net::withdraw_vip(*vip, table) {
                Ok(()) => warn!(%vip, table, reason = why, "withdrawing VIP"),
                Err(e) => warn!(%vip, table, error = %e, "withdrawing a VIP failed; retrying"),
            }
        }
        self.announced = wanted;
    }

    /// `veerctl node drain|undrain`: kept in the runtime state.
    pub(super) fn set_node_drained(&mut self, drained: bool) -> String {
        self.overrides.node_drained = drained;
        self.save_overrides();
        self.sync_announcements();
        if drained {
            "node drained: its VIPs are withdrawn (flows move to the other nodes)".into()
        } else {
            "node undrained: its VIPs are announced again".into()
        }
    }
}
