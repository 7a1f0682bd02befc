//! Verdicts: this node's out to etcd, the fleet's in to ring membership.

use std::collections::BTreeMap;

use tracing::{info, warn};

use crate::{
    daemon::{
        model::{BackendRt, Services},
        observe::History,
    },
    fleet::{FleetCmd, FleetHandle, FleetView},
};

/// The verdicts this node last reported, and how often the fleet's flipped.
#[derive(Debug, Default)]
pub struct Verdicts {
    reported: BTreeMap<(String, String), bool>,
    flips: u64,
}

impl Verdicts {
    /// Fleet verdict changes since start.
    pub fn flips(&self) -> u64 {
        self.flips
    }

    /// Hands the session this node's verdicts that changed, and forgets
    /// backends that are gone.
    pub fn report(&mut self, handle: &FleetHandle, services: &Services) {
        let now: BTreeMap<(String, String), bool> = services
            .iter()
            .flat_map(|s| s.backends.iter().map(|b| ((s.cfg.name.clone(), b.cfg.name.clone()), b.healthy)))
            .collect();
        for (k, up) in &now {
            if self.reported.get(k) != Some(up) {
                handle.send(FleetCmd::Verdict { service: k.0.clone(), backend: k.1.clone(), up: *up });
            }
        }
        for k in self.reported.keys().filter(|k| !now.contains_key(*k)) {
            handle.send(FleetCmd::Forget { service: k.0.clone(), backend: k.1.clone() });
        }
        self.reported = now;
    }

    /// Moves every backend's fleet verdict on from the view, recording each
    /// flip in `history`. Returns the backends whose verdict changed (their
    /// rings and restarts follow).
    pub fn apply(&mut self, view: &FleetView, services: &mut Services, history: &mut History) -> Vec<(usize, u32)> {
        let mut changed = Vec::new();
        for (i, s) in services.iter_mut().enumerate() {
            for b in &mut s.backends {
                if self.move_verdict(view, &s.cfg.name, b, history) {
                    changed.push((i, b.id));
                }
            }
        }
        changed
    }

    /// Moves `b`'s fleet verdict on; true if it changed.
    fn move_verdict(&mut self, view: &FleetView, service: &str, b: &mut BackendRt, history: &mut History) -> bool {
        let t = view.tally(service, &b.cfg.name);
        let next = t.verdict(b.fleet_up);
        if next == b.fleet_up {
            return false;
        }
        let prev = b.fleet_up;
        b.fleet_up = next;
        let (Some(p), Some(n)) = (prev, next) else { return true };
        self.flips += 1;
        let (from, to) = if p { ("up", "down") } else { ("down", "up") };
        let reason = format!("fleet verdict: {} of {} live nodes see it {to}", if n { t.up } else { t.down }, t.live);
        if n {
            info!(%service, backend = %b.cfg.name, %reason, "fleet verdict: UP");
        } else {
            warn!(%service, backend = %b.cfg.name, %reason, "fleet verdict: DOWN");
        }
        history.record(service, &b.cfg.name, &format!("fleet {from}"), &format!("fleet {to}"), &reason);
        true
    }
}
