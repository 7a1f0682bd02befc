//! Self-fencing: a node that sees most of the backends the fleet sees up
//! as down (its own path is broken) withdraws its VIPs until it agrees.

use std::time::{Duration, Instant};

use tracing::{error, info};

use super::FleetNode;
use crate::daemon::model::Services;

/// How often [`FleetNode::check_fence`] runs.
pub const FENCE_PERIOD: Duration = Duration::from_millis(100);

impl FleetNode {
    /// Fences this node while, for `fence_after`, it sees most of the
    /// backends the fleet sees up as down; unfences once it agrees again.
    /// Frozen while etcd is unreachable. True if the fence changed (the
    /// announcements follow).
    pub fn check_fence(&mut self, services: &Services) -> bool {
        if !self.connected {
            self.disagree_since = None;
            return false;
        }
        let (mut fleet_up, mut local_down) = (0usize, 0usize);
        for b in services.iter().flat_map(|s| &s.backends) {
            if b.fleet_up == Some(true) {
                fleet_up += 1;
                local_down += usize::from(!b.healthy);
            }
        }
        let disagree = fleet_up > 0 && local_down * 2 > fleet_up;
        match (disagree, self.fenced) {
            (true, false) => {
                let since = *self.disagree_since.get_or_insert_with(Instant::now);
                if since.elapsed() < self.cfg.fence_after {
                    return false;
                }
                self.fenced = true;
                error!(local_down, fleet_up, after = ?self.cfg.fence_after,
                    "fleet: FENCED: this node sees most backends down that the fleet sees up (its own path is broken); withdrawing its VIPs");
                true
            }
            (false, true) => {
                self.fenced = false;
                self.disagree_since = None;
                info!("fleet: this node agrees with the fleet again: announcing its VIPs");
                true
            }
            (false, false) => {
                self.disagree_since = None;
                false
            }
            (true, true) => false,
        }
    }
}
