//! The running state as the API reports it ([`crate::wire::Status`]).

use std::collections::HashSet;

use super::Daemon;
use crate::config::fmt_mac;

impl Daemon {
    /// The running state.
    pub fn status(&self) -> crate::wire::Status {
        use crate::wire::{BackendStatus, ServiceStatus, Status};
        let services = self
            .services
            .iter()
            .map(|s| {
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
                    backends: s
                        .backends
                        .iter()
                        .map(|b| BackendStatus {
                            name: b.cfg.name.clone(),
                            address: b.cfg.address.to_string(),
                            id: b.id,
                            weight: b.cfg.weight,
                            healthy: b.healthy,
                            held: b.held,
                            admin: b.admin,
                            state: b.effective().name().to_string(),
                            in_ring: ring.contains(&b.id),
                            fleet: b.fleet_up.map(|up| if up { "up" } else { "down" }.to_string()),
                            backup: b.cfg.backup,
                            mac: b.nexthop.map(|n| fmt_mac(&n.mac)),
                            runtime: self.overrides.note(&self.cfg, &s.cfg.name, &b.cfg.name),
                            slow_start: b.ramp.map(|r| r.percent(std::time::Instant::now())),
                            replace: b.replace.as_ref().map(|r| r.describe(std::time::Instant::now())),
                            agent: s.cfg.agent.as_ref().map(|_| {
                                let v = b.agent_verdict.describe();
                                match (&b.agent_error, v.is_empty()) {
                                    (Some(e), true) => format!("no answer: {e}"),
                                    (Some(e), false) => format!("{v} (last answer; now: {e})"),
                                    (None, true) => "no answer yet".into(),
                                    (None, false) => v,
                                }
                            }),
                        })
                        .collect(),
                }
            })
            .collect();
        Status {
            config: self.cfg_path.display().to_string(),
            pins: self.cfg.daemon.pin_dir().display().to_string(),
            services,
            removed: self.overrides.removed.clone(),
            announced: self.announced.iter().map(|v| v.to_string()).collect(),
            node_drained: self.overrides.node_drained,
            fleet: self.fleet.as_ref().map(|f| f.status()),
        }
    }
}
