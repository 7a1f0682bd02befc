//! Applying a config: the planned change, written to the runtime and the
//! dataplane (see [`super::reconcile`] for how it is planned).

use std::collections::HashMap;

use anyhow::Result;
use tracing::{error, info};
use veer_abi::{BackendState, ServiceKey};

use super::{
    model::{Admin, BackendRt, ServiceRt},
    reconcile, Adoption, Daemon,
};
use crate::{
    config::{self, BackendConfig, Config, InitialState, ServiceConfig},
    dataplane::{self, service_key, to_abi},
    net::Neighbour,
    overrides::{self, Overrides},
};

/// Why a change was not (wholly) applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Refused before anything was touched: the running state is unchanged.
    #[error("refused, nothing changed: {0}")]
    Refused(#[from] reconcile::PlanError),
    /// Applied, but writing the dataplane failed; it is retried every second.
    #[error("{0:#}")]
    Write(anyhow::Error),
}

/// A backend that was not running: adopted from the pins (health, next hop
/// and all) if it is there, or fresh.
fn new_backend(sid: u32, id: u32, cfg: BackendConfig, scfg: &ServiceConfig, adoption: &Adoption) -> BackendRt {
    let adopted = adoption.backends.get(&(sid, to_abi(cfg.address))).filter(|(pinned_id, _)| *pinned_id == id);
    let (healthy, nexthop, src_mac) = match adopted {
        Some((_, e)) => {
            let healthy = match BackendState::from_u32(e.state) {
                BackendState::Up | BackendState::Draining => true,
                BackendState::Down => false,
                BackendState::Disabled => scfg.health.initial == InitialState::Up,
            };
            let nexthop = (e.mac != [0; 6]).then_some(Neighbour { mac: e.mac, ifindex: e.ifindex });
            (healthy, nexthop, e.src_mac)
        }
        None => {
            info!(service = %scfg.name, backend = %cfg.name, address = %cfg.address, id, "backend configured");
            (scfg.health.initial == InitialState::Up, None, [0; 6])
        }
    };
    // Operator state comes from the runtime state file: `apply` sets it.
    BackendRt::new(cfg, id, healthy, nexthop, src_mac)
}

impl Daemon {
    /// Makes the runtime and the dataplane match `file` (plus the runtime
    /// overrides), keeping ids, health, operator state and flows of
    /// everything that stays.
    ///
    /// All or nothing: the plan ([`reconcile::plan`]) decides everything that
    /// can refuse the change before anything is touched; a refused change
    /// leaves the running state, the checkers and the dataplane as they were.
    /// A dataplane write that fails after that (the kernel refusing a map
    /// update) leaves the model applied and the dataplane retried every
    /// second until it matches.
    pub(super) fn apply(&mut self, file: Config, adoption: Option<Adoption>) -> Result<(), ApplyError> {
        let adoption = adoption.unwrap_or_default();
        let mut overrides = self.overrides.clone();
        let cfg = overrides.apply(&file);
        let wanted: Vec<(ServiceKey, &ServiceConfig)> = cfg
            .services
            .iter()
            .map(|s| (service_key(s.get_ref().vip, s.get_ref().port, s.get_ref().protocol), s.get_ref()))
            .collect();
        let now = std::time::Instant::now();
        let plan = reconcile::plan(
            &self.services.iter().map(ServiceRt::running).collect::<Vec<_>>(),
            &adoption.pinned(),
            &wanted
                .iter()
                .map(|(key, s)| reconcile::Wanted {
                    key: *key,
                    backends: s.backends.iter().map(|b| b.get_ref().address).collect(),
                })
                .collect::<Vec<_>>(),
            self.dp.max_services(),
            self.dp.max_backends(),
            &self.id_pool,
            now,
        )?;

        // Nothing below refuses the change.
        if overrides != self.overrides {
            info!("runtime changes naming backends no longer configured were dropped");
            self.overrides = overrides;
            self.save_overrides();
        }
        let mut old: HashMap<ServiceKey, ServiceRt> =
            std::mem::take(&mut self.services).into_iter().map(|s| (s.key, s)).collect();
        let mut next = Vec::with_capacity(wanted.len());
        for ((key, scfg), planned) in wanted.into_iter().zip(&plan.services) {
            let prev = old.remove(&key);
            next.push(self.next_service(key, scfg, planned, prev, &adoption));
        }
        drop(old); // what the plan dropped: its checkers and restart loops stop
        self.id_pool.release(plan.freed_backends.iter().copied(), now);
        self.id_pool.taken(plan.services.iter().flat_map(|s| s.backends.iter().map(|b| b.id)));
        self.services = next;
        self.cfg = file;
        let written = self.write_plan(&plan).map_err(ApplyError::Write);
        // New backends get the fleet's verdict, gone ones leave it.
        self.fleet_report_verdicts();
        self.fleet_apply_verdicts();
        written
    }

    /// Applies a change to the runtime overrides: `change` edits a copy, which
    /// is kept (and persisted) only if the change applies.
    pub(super) fn apply_overrides(&mut self, change: impl FnOnce(&mut Overrides)) -> Result<(), ApplyError> {
        let before = self.overrides.clone();
        change(&mut self.overrides);
        match self.apply(self.cfg.clone(), None) {
            Ok(()) => {
                self.save_overrides();
                Ok(())
            }
            Err(e @ ApplyError::Refused(_)) => {
                self.overrides = before;
                Err(e)
            }
            Err(e @ ApplyError::Write(_)) => {
                // Applied: the dataplane catches up on its own.
                self.save_overrides();
                Err(e)
            }
        }
    }

    /// The runtime of one planned service: what carries on from `prev`, and
    /// new backends (adopted from the pins, or fresh) with their checkers.
    pub(super) fn next_service(
        &mut self,
        key: ServiceKey,
        scfg: &ServiceConfig,
        planned: &reconcile::PlannedService,
        prev: Option<ServiceRt>,
        adoption: &Adoption,
    ) -> ServiceRt {
        let sid = planned.id;
        // The checkers (health and agent) start again when their settings change.
        let health_changed = prev
            .as_ref()
            .is_some_and(|p| p.cfg.health != scfg.health || p.cfg.port != scfg.port || p.cfg.agent != scfg.agent);
        let (mut old_backends, published, table_digest, prev_ring, fail_open) = match prev {
            Some(mut p) => (
                std::mem::take(&mut p.backends),
                p.published.take(),
                p.table_digest,
                Some(p.cfg.ring_size),
                std::mem::take(&mut p.fail_open),
            ),
            None => (Vec::new(), None, 0, None, Default::default()),
        };
        let mut backends = Vec::with_capacity(scfg.backends.len());
        for (bcfg, pb) in scfg.backends.iter().map(|b| b.get_ref().clone()).zip(&planned.backends) {
            let mut b = match old_backends.iter().position(|x| x.cfg.address == bcfg.address) {
                Some(pos) => {
                    let mut b = old_backends.swap_remove(pos);
                    if b.cfg.mac != bcfg.mac {
                        b.nexthop = None;
                    }
                    b.cfg = bcfg;
                    b
                }
                None => {
                    let mut b = new_backend(sid, pb.id, bcfg, scfg, adoption);
                    // Slow start for a backend that joins a running service,
                    // or was up under the previous veerd; not for a service's
                    // first start, when every backend comes up together.
                    b.ramp_next_up = prev_ring.is_some() || b.healthy;
                    b
                }
            };
            if let Some(mac) = b.cfg.mac.as_deref().and_then(config::parse_mac) {
                b.nexthop = Some(Neighbour { mac, ifindex: 0 });
                // Sent back out of the interface it came in on: with one
                // interface, that one's MAC is the source.
                if b.src_mac == [0; 6] {
                    b.src_mac = self.single_iface_mac;
                }
            }
            // The runtime state file is authoritative for operator state.
            b.admin =
                self.overrides.admin.get(&overrides::key(&scfg.name, &b.cfg.name)).copied().unwrap_or(Admin::Enabled);
            if b.checker.is_none() || health_changed {
                self.spawn_check(scfg, &mut b);
            }
            backends.push(b);
        }
        for gone in &old_backends {
            info!(service = %scfg.name, backend = %gone.cfg.name, "backend removed by config");
            let from = self.written.get(&gone.id).map_or("new", |w| super::history::state_name(w.state));
            self.history.record(&scfg.name, &gone.cfg.name, from, "removed", "removed by config or operator");
        }
        let mut svc_cfg = scfg.clone();
        svc_cfg.backends.clear();
        if prev_ring.is_none() {
            info!(service = %svc_cfg.name, vip = %dataplane::display_service(&key), id = sid, "service configured");
        }
        // A new ring size needs a new ring now, not at the next membership
        // change (often a failover, when a fresh build would remap most flows).
        let published = published.filter(|_| prev_ring == Some(scfg.ring_size));
        ServiceRt { cfg: svc_cfg, key, id: sid, backends, published, table_digest, starved: false, fail_open }
    }

    /// Writes what a plan changed: removed services and freed backends out,
    /// then every service published. A failed write marks the dataplane for
    /// a retry and is returned.
    pub(super) fn write_plan(&mut self, plan: &reconcile::Plan) -> Result<()> {
        let mut first_error: Option<anyhow::Error> = None;
        for key in &plan.removed_services {
            info!(vip = %dataplane::display_service(key), "service removed");
            match self.dp.remove_service(key) {
                Ok(_) | Err(dataplane::DataplaneError::UnknownService(_)) => {}
                Err(e) => {
                    first_error.get_or_insert(e.into());
                }
            }
        }
        for id in &plan.freed_backends {
            if let Err(e) = self.clear_backend(*id) {
                first_error.get_or_insert(e);
            }
        }
        for i in 0..self.services.len() {
            let r = if crate::failpoint::hit("publish-service") {
                Err(anyhow::anyhow!("injected failure (VEER_FAILPOINTS)"))
            } else {
                self.publish_service(i)
            };
            if let Err(e) = r {
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            None => Ok(()),
            Some(e) => {
                self.mark_dataplane_stale();
                Err(e.context("writing the dataplane; the change is applied and the write is retried every second"))
            }
        }
    }

    /// Forgets what was written, so that the next sync rewrites everything.
    pub(super) fn mark_dataplane_stale(&mut self) {
        self.dataplane_stale = true;
        self.written.clear();
        for s in &mut self.services {
            s.published = None;
        }
    }

    /// Retries the dataplane writes of a change that failed part way.
    pub(super) fn retry_stale_dataplane(&mut self) {
        if !self.dataplane_stale {
            return;
        }
        for i in 0..self.services.len() {
            if let Err(e) = self.publish_service(i) {
                error!(error = %format!("{e:#}"), "dataplane still not written; retrying in a second");
                return;
            }
        }
        self.dataplane_stale = false;
        info!("dataplane written: it matches the running state again");
    }

    /// Re-reads the config file; a bad file changes nothing.
    pub fn reload(&mut self) -> Result<String, String> {
        let new = match config::load(&self.cfg_path) {
            Ok(c) => c,
            Err(e) => {
                self.metrics.reloads[1] += 1;
                error!(error = %e, "reload rejected: the config is invalid; the running config stays");
                return Err(e.to_string());
            }
        };
        if new.daemon != self.cfg.daemon {
            self.metrics.reloads[1] += 1;
            let e = "[daemon] settings changed: restart veerd to apply them (nothing was changed)".to_string();
            error!(error = %e, "reload rejected");
            return Err(e);
        }
        match self.apply(new, None) {
            Ok(()) => {
                self.metrics.reloads[0] += 1;
                self.write_nat_config();
                self.setup_vip_paths();
                self.resolve_nexthops();
                let n = self.services.len();
                info!(services = n, "config reloaded");
                Ok(format!("reloaded: {n} services"))
            }
            Err(e @ ApplyError::Refused(_)) => {
                self.metrics.reloads[1] += 1;
                error!(error = %e, "reload rejected; the running config stays");
                Err(e.to_string())
            }
            Err(e @ ApplyError::Write(_)) => {
                self.metrics.reloads[0] += 1;
                error!(error = %e, "config reloaded, but the dataplane write failed");
                Err(e.to_string())
            }
        }
    }
}
