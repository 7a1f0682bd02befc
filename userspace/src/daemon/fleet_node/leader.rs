//! The leader's part: restarts, their records, one-per-fleet hooks.

use std::sync::{atomic::AtomicU64, Arc};

use tracing::debug;

use super::node::FleetNode;
use crate::{
    daemon::{
        model::{BackendRt, ServiceRt, Services},
        recovery::{Coordination, Gate, Restarts},
    },
    fleet,
    overrides::Admin,
};

impl FleetNode {
    /// The gate for a one-per-fleet action (`what` under `P/actions/`):
    /// `None` while this node is not the leader in session.
    pub fn action_gate(&self, what: &str) -> Option<fleet::claim::ActionGate> {
        Some(fleet::claim::ActionGate {
            client: self.client.clone()?,
            fence: self.leader.clone()?,
            key: self.keys.action(what),
            node: self.cfg.node.clone(),
        })
    }

    /// The restart job for backend `b` of `s`, if this node should run one
    /// now: leader, in session, the fleet sees it down, the operator has it
    /// enabled, it has a restart command.
    fn restart_job(
        &self,
        s: &ServiceRt,
        b: &BackendRt,
        attempts: Arc<AtomicU64>,
    ) -> Option<fleet::restart::RestartJob> {
        let wanted = b.fleet_up == Some(false) && b.admin == Admin::Enabled;
        let (fence, client, cfg) = (self.leader.clone()?, self.client.clone()?, b.cfg.restart.clone()?);
        wanted.then(|| fleet::restart::RestartJob {
            client,
            fence,
            key: self.keys.restart(&s.cfg.name, &b.cfg.name),
            node: self.cfg.node.clone(),
            service: s.cfg.name.clone(),
            backend: b.cfg.name.clone(),
            address: b.cfg.address.to_string(),
            cfg,
            attempts,
        })
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

impl Coordination for FleetNode {
    fn leads(&self) -> bool {
        self.is_leader()
    }

    fn gate(&self, what: &str) -> Gate {
        self.action_gate(what).map_or(Gate::Shut, |g| Gate::Claim(Box::new(g)))
    }

    fn restarts(&self, s: &ServiceRt, b: &BackendRt, attempts: Arc<AtomicU64>) -> Restarts {
        Restarts::Fleet(self.restart_job(s, b, attempts).map(Box::new))
    }
}
