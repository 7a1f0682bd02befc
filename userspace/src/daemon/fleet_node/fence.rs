//! Self-fencing: a node that sees most of the backends the fleet sees up
//! as down (its own path is broken) withdraws its VIPs until it agrees.

use std::time::{Duration, Instant};

use tracing::{error, info};

use crate::daemon::model::Services;

/// How often [`Fence::check`] runs.
pub const FENCE_PERIOD: Duration = Duration::from_millis(100);

/// Whether this node withdrew its VIPs, and since when it disagrees.
#[derive(Debug)]
pub struct Fence {
    fenced: bool,
    disagree_since: Option<Instant>,
    after: Duration,
}

impl Fence {
    /// A fence that goes up after `after` of disagreement.
    pub fn new(after: Duration) -> Self {
        Self { fenced: false, disagree_since: None, after }
    }

    /// Whether this node withdrew its VIPs.
    pub fn fenced(&self) -> bool {
        self.fenced
    }

    /// Forgets a disagreement (etcd went away: the view is frozen).
    pub fn forget(&mut self) {
        self.disagree_since = None;
    }

    /// Fences this node while, for `fence_after`, it sees most of the
    /// backends the fleet sees up as down; unfences once it agrees again.
    /// Frozen while etcd is unreachable. True if the fence changed (the
    /// announcements follow).
    pub fn check(&mut self, connected: bool, services: &Services) -> bool {
        if !connected {
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
                if since.elapsed() < self.after {
                    return false;
                }
                self.fenced = true;
                error!(local_down, fleet_up, after = ?self.after,
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
