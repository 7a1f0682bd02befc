//! Self-fencing, VIP by VIP: a node that sees most of a service's
//! backends the fleet sees up as down (its own path to them is broken)
//! withdraws that service's VIP until it agrees again. Its other VIPs stay
//! announced.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    time::{Duration, Instant},
};

use tracing::{error, info};

use crate::daemon::model::{ServiceRt, Services};

/// How often [`Fence::check`] runs.
pub const FENCE_PERIOD: Duration = Duration::from_millis(100);

/// The VIPs this node withdrew, and since when it disagrees on the others.
#[derive(Debug)]
pub struct Fence {
    fenced: BTreeSet<IpAddr>,
    disagree_since: BTreeMap<IpAddr, Instant>,
    after: Duration,
}

/// Whether this node sees most of the backends of `s` that the fleet sees
/// up as down: (disagrees, backends down here, backends up for the fleet).
fn disagrees(s: &ServiceRt) -> (bool, usize, usize) {
    let (mut fleet_up, mut local_down) = (0usize, 0usize);
    for b in s.backends.iter().filter(|b| b.fleet_up == Some(true)) {
        fleet_up += 1;
        local_down += usize::from(!b.healthy);
    }
    (fleet_up > 0 && local_down * 2 > fleet_up, local_down, fleet_up)
}

impl Fence {
    /// A fence that goes up after `after` of disagreement.
    pub fn new(after: Duration) -> Self {
        Self { fenced: BTreeSet::new(), disagree_since: BTreeMap::new(), after }
    }

    /// The VIPs this node withdrew.
    pub fn fenced(&self) -> &BTreeSet<IpAddr> {
        &self.fenced
    }

    /// Forgets every disagreement (etcd went away: the view is frozen).
    pub fn forget(&mut self) {
        self.disagree_since.clear();
    }

    /// Fences each VIP one of whose services this node, for `fence_after`,
    /// sees mostly down where the fleet sees it up; unfences it once it
    /// agrees again. Frozen while etcd is unreachable. True if a VIP's
    /// fence changed (the announcements follow).
    pub fn check(&mut self, connected: bool, services: &Services) -> bool {
        if !connected {
            self.disagree_since.clear();
            return false;
        }
        let mut vips: BTreeMap<IpAddr, Option<(usize, usize, String)>> = BTreeMap::new();
        for s in services.iter() {
            let (disagree, down, up) = disagrees(s);
            let v = vips.entry(s.cfg.vip).or_default();
            if disagree && v.is_none() {
                *v = Some((down, up, s.cfg.name.clone()));
            }
        }
        let mut changed = false;
        for (vip, disagree) in &vips {
            changed |= self.check_vip(*vip, disagree.as_ref());
        }
        // A VIP no service has any more is no longer fenced.
        let gone: Vec<IpAddr> = self.fenced.iter().filter(|v| !vips.contains_key(v)).copied().collect();
        for vip in gone {
            self.fenced.remove(&vip);
            changed = true;
        }
        self.disagree_since.retain(|v, _| vips.contains_key(v));
        changed
    }

    /// One VIP: `disagree` names the service this node cannot serve, with
    /// its backends down here and up for the fleet.
    fn check_vip(&mut self, vip: IpAddr, disagree: Option<&(usize, usize, String)>) -> bool {
        match (disagree, self.fenced.contains(&vip)) {
            (Some((local_down, fleet_up, service)), false) => {
                let since = *self.disagree_since.entry(vip).or_insert_with(Instant::now);
                if since.elapsed() < self.after {
                    return false;
                }
                self.fenced.insert(vip);
                error!(%vip, %service, local_down, fleet_up, after = ?self.after,
                    "fleet: FENCED: this node sees most of the service's backends down that the fleet sees up (its own path is broken); withdrawing the VIP");
                true
            }
            (None, true) => {
                self.fenced.remove(&vip);
                self.disagree_since.remove(&vip);
                info!(%vip, "fleet: this node agrees with the fleet again on the VIP's services: announcing it");
                true
            }
            (None, false) => {
                self.disagree_since.remove(&vip);
                false
            }
            (Some(_), true) => false,
        }
    }
}
