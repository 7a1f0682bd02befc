//! The running state as the API reports it ([`crate::wire::Status`]).

use std::{collections::HashSet, time::Instant};

use crate::{
    config::{fmt_mac, Config},
    daemon::model::{BackendRt, ServiceRt, Services},
    overrides::Overrides,
    wire::{BackendStatus, FleetStatus, ServiceStatus, Status},
};

/// What the status is built from besides the services.
pub struct StatusView<'a> {
    /// The config file's path.
    pub config_path: &'a std::path::Path,
    /// The config as applied.
    pub cfg: &'a Config,
    /// The runtime changes on top of it.
    pub overrides: &'a Overrides,
    /// The VIPs announced (fleet).
    pub announced: Vec<String>,
    /// The fleet's part, with etcd.
    pub fleet: Option<FleetStatus>,
}

impl StatusView<'_> {
    /// The running state of `services`.
    pub fn status(self, services: &Services) -> Status {
        Status {
            config: self.config_path.display().to_string(),
            pins: self.cfg.daemon.pin_dir().display().to_string(),
            services: services.iter().map(|s| self.service(s)).collect(),
            removed: self.overrides.removed.clone(),
            announced: self.announced,
            node_drained: self.overrides.node_drained,
            fleet: self.fleet,
        }
    }

    fn service(&self, s: &ServiceRt) -> ServiceStatus {
        let ring: HashSet<u32> = s.published.iter().flatten().map(|m| m.id).collect();
        ServiceStatus {
            name: s.cfg.name.clone(),
            vip: s.cfg.vip.to_string(),
            port: s.cfg.port,
            protocol: s.cfg.protocol.to_string(),
            id: s.id,
            starved: s.starved,
            fail_open: s.fail_open.tripped(),
            table_digest: format!("{:016x}", s.table_digest),
            backends: s.backends.iter().map(|b| self.backend(s, b, ring.contains(&b.id))).collect(),
        }
    }

    fn backend(&self, s: &ServiceRt, b: &BackendRt, in_ring: bool) -> BackendStatus {
        let now = Instant::now();
        BackendStatus {
            name: b.cfg.name.clone(),
            address: b.cfg.address.to_string(),
            id: b.id,
            weight: b.cfg.weight,
            healthy: b.healthy,
            held: b.held,
            admin: b.admin,
            state: b.effective().name().to_string(),
            in_ring,
            fleet: b.fleet_up.map(|up| if up { "up" } else { "down" }.to_string()),
            backup: b.cfg.backup,
            mac: b.nexthop.map(|n| fmt_mac(&n.mac)),
            runtime: self.overrides.note(self.cfg, &s.cfg.name, &b.cfg.name),
            slow_start: b.ramp.map(|r| r.percent(now)),
            replace: b.replace.as_ref().map(|r| r.describe(now)),
            agent: s.cfg.agent.as_ref().map(|_| agent_note(b)),
        }
    }
}

/// What its agent last said, for status.
fn agent_note(b: &BackendRt) -> String {
    let v = b.agent_verdict.describe();
    match (&b.agent_error, v.is_empty()) {
        (Some(e), true) => format!("no answer: {e}"),
        (Some(e), false) => format!("{v} (last answer; now: {e})"),
        (None, true) => "no answer yet".into(),
        (None, false) => v,
    }
}
