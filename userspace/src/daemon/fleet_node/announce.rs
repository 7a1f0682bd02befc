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

/// The kernel route metric of the other nodes' SNAT addresses: the
/// routing daemon makes these routes longer (BIRD: `if krt_metric >= 100
/// then bgp_path.prepend(...)`), so the router uses them only once the
/// owner's own route is gone.
pub const BACKUP_METRIC: u32 = 100;

/// What keeps this node from announcing VIPs that have a backend.
#[derive(Debug, Clone, Copy)]
pub struct Silence<'a> {
    /// An operator drained the node: it announces no VIP.
    pub drained: bool,
    /// The VIPs it fenced: its path to their backends is broken.
    pub fenced: &'a BTreeSet<IpAddr>,
}

/// SNAT addresses to announce whatever the silence: this node's, and the
/// other nodes' as a backup.
#[derive(Debug, Clone, Copy, Default)]
pub struct SnatRoutes<'a> {
    /// This node's.
    pub own: &'a [IpAddr],
    /// The other nodes'.
    pub backup: &'a [IpAddr],
}

/// The VIPs this node announces, as last brought in line.
#[derive(Debug, Default)]
pub struct Announcer {
    announced: BTreeSet<(IpAddr, u32)>,
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
    /// The addresses announced (VIPs; SNAT addresses, the other nodes'
    /// marked as a backup).
    pub fn announced(&self) -> Vec<String> {
        self.announced
            .iter()
            .map(|(v, m)| if *m == BACKUP_METRIC { format!("{v} (backup)") } else { v.to_string() })
            .collect()
    }

    /// Brings the announcement table in line: announces what is wanted,
    /// withdraws the rest of veerd's routes there (including those a
    /// previous veerd left). A failure is logged and retried next second.
    pub fn sync(&mut self, table: Option<u32>, services: &[ServiceRt], silence: Silence, snat: SnatRoutes) {
        let Some(table) = table else { return };
        let mut wanted: BTreeSet<(IpAddr, u32)> = wanted_vips(services, silence).into_iter().map(|v| (v, 0)).collect();
        wanted.extend(snat.own.iter().map(|a| (*a, 0)));
        wanted.extend(snat.backup.iter().map(|a| (*a, BACKUP_METRIC)));
        let present: BTreeSet<(IpAddr, u32)> = match net::announced_vips(table) {
            Ok(v) => v.into_iter().collect(),
            Err(e) => {
                warn!(table, error = %e, "reading the announcement table failed; retrying");
                return;
            }
        };
        for (vip, metric) in wanted.difference(&present) {
            match net::announce_vip(*vip, table, *metric) {
                Ok(()) => info!(%vip, table, metric, "announcing VIP"),
                Err(e) => warn!(%vip, table, error = %e, "announcing a VIP failed; retrying"),
            }
        }
        for (vip, metric) in present.difference(&wanted) {
            let why = if silence.drained {
                "node drained"
            } else if silence.fenced.contains(vip) {
                "fenced: this node's path to the VIP's backends is broken"
            } else {
                "no backend to send to"
            };
            match net::withdraw_vip(*vip, table, *metric) {
                Ok(()) => warn!(%vip, table, reason = why, "withdrawing VIP"),
                Err(e) => warn!(%vip, table, error = %e, "withdrawing a VIP failed; retrying"),
            }
        }
        self.announced = wanted;
    }
}
