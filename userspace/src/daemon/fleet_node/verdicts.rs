//! Verdicts: this node's out to etcd, the fleet's in to ring membership.

use std::collections::BTreeMap;

use tracing::{debug, info, warn};

use super::FleetNode;
use crate::{
    daemon::{
        model::{BackendRt, Services},
        observe::History,
    },
    fleet::{self, FleetCmd},
};

impl FleetNode {
    /// Hands the session this node's verdicts that changed, and forgets
    /// backends that are gone.
    pub fn report_verdicts(&mut self, services: &Services) {
        let now: BTreeMap<(String, String), bool> = services
            .iter()
            .flat_map(|s| s.backends.iter().map(|b| ((s.cfg.name.clone(), b.cfg.name.clone()), b.healthy)))
            .collect();
        for (k, up) in &now {
            if self.reported.get(k) != Some(up) {
                self.handle.send(FleetCmd::Verdict { service: k.0.clone(), backend: k.1.clone(), up: *up });
            }
        }
        for k in self.reported.keys().filter(|k| !now.contains_key(*k)) {
            self.handle.send(FleetCmd::Forget { service: k.0.clone(), backend: k.1.clone() });
        }
        self.reported = now;
    }

    /// Moves every backend's fleet verdict on from the view, recording each
    /// flip in `history`. Returns the backends whose verdict changed (their
    /// rings and restarts follow).
    pub fn apply_verdicts(&mut self, services: &mut Services, history: &mut History) -> Vec<(usize, u32)> {
        let mut changed = Vec::new();
        for (i, s) in services.iter_mut().enumerate() {
            for b in &mut s.backends {
                if self.move_verdict(&s.cfg.name, b, history) {
                    changed.push((i, b.id));
                }
            }
        }
        changed
    }

    /// Moves `b`'s fleet verdict on; true if it changed.
    fn move_verdict(&mut self, service: &str, b: &mut BackendRt, history: &mut History) -> bool {
        let t = self.view.tally(service, &b.cfg.name);
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

    /// The leader ends the restart and replace records of backend `id` of
    /// service `i` once the fleet sees it up.
    pub fn clear_restart(&self, services: &Services, i: usize, id: u32) {
        let (Some(fence), Some(client)) = (self.leader.clone(), self.client.clone()) else { return };
        let s = &services[i];
        let Some(b) = s.backend(id) else { return };
        if b.fleet_up != Some(true) || (b.cfg.restart.is_none() && s.cfg.replace.is_none()) {
            return;
        }
        // The outage is over: its restart and replace records go.
        let keys = [
            self.keys.restart(&s.cfg.name, &b.cfg.name),
            self.keys.action(&format!("replace/{}/{}", s.cfg.name, b.cfg.name)),
        ];
        tokio::spawn(async move {
            let mut client = client;
            for key in keys {
                if let Err(e) = fleet::claim::release(&mut client, &fence, &key).await {
                    debug!(error = %format!("{e:#}"), "fleet: clearing an outage's record failed; the next leader clears it");
                }
            }
        });
    }
}
