//! Fleet: announcing this node's VIPs. veerd keeps a host route per VIP on
//! `lo` in `[fleet] announce_table` (protocol 118); the routing daemon
//! (BIRD) learns that table and exports it to the router, whose ECMP route
//! then includes this node. A VIP is announced while a service on it has a
//! backend to send to, an operator has not drained the node, and the node
//! has not fenced the VIP; veerd stopping withdraws nothing (the dataplane
//! keeps forwarding).

use std::{collections::BTreeSet, net::IpAddr};

use tracing::{info, warn};

use crate::{daemon::model::ServiceRt, net};

/// What keeps this node from announcing VIPs that have a backend.
#[derive(Debug, Clone, Copy)]
pub struct Silence<'a> {
    /// An operator drained the node: it announces nothing.
    pub drained: bool,
    /// The VIPs it fenced: its path to their backends is broken.
    pub fenced: &'a BTreeSet<IpAddr>,
}

/// The VIPs this node announces, as last brought in line.
#[derive(Debug, Default)]
pub struct Announcer {
    announced: BTreeSet<IpAddr>,
}

/// The VIPs this node should announce now.
fn wanted_vips(services: &[ServiceRt], silence: Silence) -> BTreeSet<IpAddr> {
    if silence.drained {
        return BTreeSet::new();
    }
    services
        .iter()
        .filter(|s| !s.starved && s.published.is_some() && !silence.fenced.contains(&s.cfg.vip))
        .map(|s| s.cfg.vip)
        .collect()
}

impl Announcer {
    /// The VIPs announced.
    pub fn announced(&self) -> Vec<String> {
        self.announced.iter().map(|v| v.to_string()).collect()
    }

    /// Brings the announcement table in line: announces what is wanted,
    /// withdraws the rest of veerd's routes there (including those a
    /// previous veerd left). A failure is logged and retried next second.
    pub fn sync(&mut self, table: Option<u32>, services: &[ServiceRt], silence: Silence) {
        let Some(table) = table else { return };
        let wanted = wanted_vips(services, silence);
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
            let why = if silence.drained {
                "node drained"
            } else if silence.fenced.contains(vip) {
                "fenced: this node's path to the VIP's backends is broken"
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
}
