//! Changes to the desired state: the config file (start, reload) and the
//! operator's runtime overrides (API commands, the fleet's). Each is
//! planned whole ([`plan::plan`] decides everything that can refuse it),
//! then carried into the model and written.

use std::collections::HashMap;

use tracing::{error, info, warn};
use veer_abi::{BackendState, ServiceKey};

use super::{
    boot::Adoption,
    control::{commands, commands::Refusal, ApplyError, CommandError},
    event_loop::Daemon,
    model::{plan, BackendRt, ServiceRt},
};
use crate::{
    config::{self, BackendConfig, Config, InitialState, ServiceConfig},
    dataplane::{self, service_key, to_abi},
    net::Neighbour,
    overrides::{self, AddedBackend, Admin, HealthMode, Overrides},
};

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
    /// All or nothing: the plan decides everything that can refuse the
    /// change before anything is touched; a refused change leaves the
    /// running state, the checkers and the dataplane as they were. A
    /// dataplane write that fails after that leaves the model applied and
    /// the dataplane retried every second until it matches.
    pub(super) fn apply(&mut self, file: Config, adoption: Option<Adoption>) -> Result<(), ApplyError> {
        let adoption = adoption.unwrap_or_default();
        self.desired.overrides.check_added(&file).map_err(|e| ApplyError::Refused(Refusal::Added(e)))?;
        let mut overrides = self.desired.overrides.clone();
        let cfg = overrides.apply(&file);
        let wanted: Vec<(ServiceKey, &ServiceConfig)> = cfg
            .services
            .iter()
            .map(|s| (service_key(s.get_ref().vip, s.get_ref().port, s.get_ref().protocol), s.get_ref()))
            .collect();
        let now = std::time::Instant::now();
        let plan = self.plan(&wanted, &adoption, now)?;
        // Nothing below refuses the change.
        if overrides != self.desired.overrides {
            info!("runtime changes naming backends no longer configured were dropped");
            self.desired.overrides = overrides;
            self.save_overrides();
        }
        let mut old: HashMap<ServiceKey, ServiceRt> =
            std::mem::take(&mut *self.services).into_iter().map(|s| (s.key, s)).collect();
        let mut next = Vec::with_capacity(wanted.len());
        for ((key, scfg), planned) in wanted.into_iter().zip(&plan.services) {
            let prev = old.remove(&key);
            next.push(self.next_service(key, scfg, planned, prev, &adoption));
        }
        drop(old); // what the plan dropped: its checkers and restart loops stop
        self.desired.ids.release(plan.freed_backends.iter().copied(), now);
        self.desired.ids.taken(plan.services.iter().flat_map(|s| s.backends.iter().map(|b| b.id)));
        *self.services = next;
        self.desired.file = file;
        let written = self.publisher.write_plan(&plan, &mut self.services).map_err(ApplyError::Write);
        // New backends get the fleet's verdict, gone ones leave it.
        self.fleet_report_verdicts();
        self.fleet_apply_verdicts();
        written
    }

    /// The ids of `wanted`, or why it does not fit.
    fn plan(
        &self,
        wanted: &[(ServiceKey, &ServiceConfig)],
        adoption: &Adoption,
        now: std::time::Instant,
    ) -> Result<plan::Plan, plan::PlanError> {
        let wanted: Vec<plan::Wanted> = wanted
            .iter()
            .map(|(key, s)| plan::Wanted {
                key: *key,
                backends: s.backends.iter().map(|b| b.get_ref().address).collect(),
            })
            .collect();
        let running: Vec<plan::Running> = self.services.iter().map(ServiceRt::running).collect();
        let dp = self.publisher.dp();
        plan::plan(&running, &adoption.pinned(), &wanted, dp.max_services(), dp.max_backends(), &self.desired.ids, now)
    }

    /// Applies a change to the runtime overrides: `change` edits a copy,
    /// which is kept (and persisted) only if the change applies.
    pub(super) fn apply_overrides(&mut self, change: impl FnOnce(&mut Overrides)) -> Result<(), ApplyError> {
        let before = self.desired.overrides.clone();
        change(&mut self.desired.overrides);
        let r = self.apply(self.desired.file.clone(), None);
        match &r {
            Err(ApplyError::Refused(_)) => self.desired.overrides = before,
            // A failed write is applied all the same: the dataplane catches up.
            Ok(()) | Err(ApplyError::Write(_)) => self.save_overrides(),
        }
        r
    }

    /// The runtime of one planned service: what carries on from `prev`, and
    /// new backends (adopted from the pins, or fresh) with their checkers.
    fn next_service(
        &mut self,
        key: ServiceKey,
        scfg: &ServiceConfig,
        planned: &plan::PlannedService,
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
            // A backend's own check settings changed: its checker starts again.
            let mut check_changed = false;
            let b = match old_backends.iter().position(|x| x.cfg.address == bcfg.address) {
                Some(pos) => {
                    let old = old_backends.swap_remove(pos);
                    check_changed = (&old.cfg.health, old.cfg.port) != (&bcfg.health, bcfg.port);
                    carry_backend(old, bcfg)
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
            backends.push(self.ready_backend(scfg, b, health_changed || check_changed));
        }
        for gone in &old_backends {
            info!(service = %scfg.name, backend = %gone.cfg.name, "backend removed by config");
            self.publisher.record_removed(&scfg.name, gone);
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

    /// Backend `b` of `scfg` made ready to run: its configured MAC, its
    /// operator state, and its checker (started again if `restart_check`).
    fn ready_backend(&mut self, scfg: &ServiceConfig, mut b: BackendRt, restart_check: bool) -> BackendRt {
        if let Some(mac) = b.cfg.mac.as_deref().and_then(config::parse_mac) {
            b.nexthop = Some(Neighbour { mac, ifindex: 0 });
            // Sent back out of the interface it came in on: with one
            // interface, that one's MAC is the source.
            if b.src_mac == [0; 6] {
                b.src_mac = self.single_iface_mac;
            }
        }
        // The runtime state file is authoritative for operator state.
        let k = overrides::key(&scfg.name, &b.cfg.name);
        b.admin = self.desired.overrides.admin.get(&k).copied().unwrap_or(Admin::Enabled);
        b.forced = self.desired.overrides.health.get(&k).copied();
        match b.forced {
            Some(mode) => {
                self.tracker.stop_check(&mut b);
                b.set_healthy(mode == HealthMode::Up);
            }
            None if b.checker.is_none() || restart_check => self.tracker.spawn_check(scfg, &mut b),
            None => {}
        }
        b
    }

    /// Re-reads the config file; a bad file changes nothing.
    pub fn reload(&mut self) -> Result<String, String> {
        let refused = |d: &mut Self, e: String, what: &str| {
            d.desired.reloads[1] += 1;
            error!(error = %e, "{what}");
            Err(e)
        };
        let new = match config::load(&self.desired.path)
            .map_err(|e| e.to_string())
            .and_then(|c| self.under_fleet_config(c))
        {
            Ok(c) => c,
            Err(e) => return refused(self, e, "reload rejected: the config is invalid; the running config stays"),
        };
        let restart = config::diff::settings_changes(&self.desired.file, &new).restart;
        if !restart.is_empty() {
            let e = format!("restart veerd to apply {} (nothing was changed)", restart.join(", "));
            return refused(self, e, "reload rejected");
        }
        let shadowed = self.desired.overrides.shadowed(&self.desired.file, &new);
        let r = match self.apply(new, None) {
            Err(e @ ApplyError::Refused(_)) => {
                return refused(self, e.to_string(), "reload rejected; the running config stays");
            }
            r => r,
        };
        self.desired.reloads[0] += 1;
        self.after_config_change();
        // A revision this node refused may fit now; the file may match the
        // fleet's services, or no longer.
        self.fleet_apply_config();
        if let Err(e) = r {
            error!(error = %e, "config reloaded, but the dataplane write failed");
            return Err(e.to_string());
        }
        let n = self.services.len();
        info!(services = n, "config reloaded");
        let mut msg = format!("reloaded: {n} services");
        for line in &shadowed {
            warn!("runtime change wins over the file: {line}");
            msg += &format!("\nruntime change wins: {line}");
        }
        Ok(msg)
    }

    /// What a reload of the config file would change, changing nothing
    /// (`veerctl reload --dry-run`); or why it would be refused.
    pub fn reload_plan(&self) -> Result<String, String> {
        let refused = |e: &dyn std::fmt::Display| format!("the reload would be refused: {e}");
        let new = config::load(&self.desired.path).map_err(|e| refused(&e))?;
        let new = self.under_fleet_config(new).map_err(|e| refused(&e))?;
        let lines = self.dry_run(&new).map_err(|e| refused(&e))?;
        Ok(if lines.is_empty() { "nothing to change".to_string() } else { lines.join("\n") })
    }

    /// What running `new` would change, changing nothing; or why it would
    /// be refused.
    pub(super) fn dry_run(&self, new: &Config) -> Result<Vec<String>, String> {
        let restart = config::diff::settings_changes(&self.desired.file, new).restart;
        if !restart.is_empty() {
            return Err(format!("restart veerd to apply {}", restart.join(", ")));
        }
        self.desired.overrides.check_added(new)?;
        let next = self.desired.overrides.clone().apply(new);
        let wanted: Vec<(ServiceKey, &ServiceConfig)> = next
            .services
            .iter()
            .map(|s| (service_key(s.get_ref().vip, s.get_ref().port, s.get_ref().protocol), s.get_ref()))
            .collect();
        self.plan(&wanted, &Adoption::default(), std::time::Instant::now()).map_err(|e| e.to_string())?;
        let mut lines = config::diff::changes(&self.desired.overrides.clone().apply(&self.desired.file), &next);
        let shadowed = self.desired.overrides.shadowed(&self.desired.file, new);
        lines.extend(shadowed.iter().map(|l| format!("runtime change wins: {l}")));
        Ok(lines)
    }

    /// What follows a new config, at start and at every reload: NAT (port
    /// range, forwarding, expiry), the VIP-path checks' routes, next hops.
    pub(super) fn after_config_change(&mut self) {
        let daemon = &self.desired.file.daemon;
        self.publisher.sync_nat(&self.services, daemon);
        self.publisher.setup_vip_paths(&self.services, &daemon.interfaces);
        self.publisher.resolve_nexthops(&mut self.services);
    }

    /// Persists the runtime overrides (an error is logged: the change stays live).
    pub(super) fn save_overrides(&self) {
        if let Err(e) = self.desired.overrides.save(&self.desired.file.daemon.state_path()) {
            error!(error = %e, "saving runtime state failed: changes will not survive a restart");
        }
    }

    /// `drain`, `enable`, `disable`: the state word changes at once.
    pub(super) fn set_admin(&mut self, service: &str, backend: &str, admin: Admin) -> Result<String, CommandError> {
        let (i, j) = self.services.find(service, backend)?;
        commands::set_admin(&mut self.desired.overrides, service, backend, admin);
        self.save_overrides();
        self.services[i].backends[j].admin = admin;
        let id = self.services[i].backends[j].id;
        self.publisher.reason(id, format!("operator: {}", admin.name()));
        self.follow_recovery(i, id);
        self.publisher.sync(&mut self.services[i]).map_err(CommandError::Dataplane)?;
        Ok(format!("{service}/{backend}: {}", admin.name()))
    }

    /// `health`: checks stop and the backend is taken as up or down, or
    /// (auto) its checks start again from that state.
    pub(super) fn set_health(
        &mut self,
        service: &str,
        backend: &str,
        mode: HealthMode,
    ) -> Result<String, CommandError> {
        let (i, j) = self.services.find(service, backend)?;
        let id = self.services[i].backends[j].id;
        self.publisher.reason(id, format!("operator: health {}", mode.name()));
        self.apply_overrides(|o| commands::set_health(o, service, backend, mode))?;
        if let Ok((i, _)) = self.services.find(service, backend) {
            self.follow_recovery(i, id);
        }
        Ok(format!("{service}/{backend}: health {}", mode.name()))
    }

    /// `weight`: the ring follows at once.
    pub(super) fn set_weight(&mut self, service: &str, backend: &str, weight: u32) -> Result<String, CommandError> {
        let mut o = self.desired.overrides.clone();
        commands::set_weight(&mut o, &self.desired.file, service, backend, weight)?;
        let (i, j) = self.services.find(service, backend)?;
        self.desired.overrides = o;
        self.save_overrides();
        self.services[i].backends[j].cfg.weight = weight;
        self.publisher.sync(&mut self.services[i]).map_err(CommandError::Dataplane)?;
        Ok(format!("{service}/{backend}: weight {weight}"))
    }

    /// `add-backend` (and a replace hook's substitute).
    pub(super) fn add_backend(&mut self, service: &str, b: AddedBackend) -> Result<String, CommandError> {
        commands::check_new_backend(&self.services, service, &b)?;
        let (name, addr) = (b.name.clone(), b.address);
        self.apply_overrides(|o| commands::add_backend(o, service, b))?;
        self.publisher.resolve_nexthops(&mut self.services);
        Ok(format!("{service}/{name}: added ({addr})"))
    }

    /// `remove-backend` (and a replaced backend's retirement).
    pub(super) fn remove_backend(&mut self, service: &str, backend: &str) -> Result<String, CommandError> {
        self.services.find(service, backend)?;
        self.apply_overrides(|o| commands::remove_backend(o, service, backend))?;
        Ok(format!("{service}/{backend}: removed"))
    }

    /// `reset`: the runtime changes in scope go, and the file runs as written.
    pub(super) fn reset(&mut self, service: Option<&str>, backend: Option<&str>) -> Result<String, CommandError> {
        let scope = commands::ResetScope::new(service, backend)?;
        if let Some(s) = scope.service() {
            self.services.named(s)?;
        }
        let mut dropped = Vec::new();
        self.apply_overrides(|o| dropped = commands::reset(o, &scope))?;
        self.publisher.resolve_nexthops(&mut self.services);
        Ok(match dropped.is_empty() {
            true => format!("{scope}: no runtime changes"),
            false => format!("{scope}: dropped {}", dropped.join(", ")),
        })
    }

    /// `veerctl node drain|undrain`: kept in the runtime state.
    pub(super) fn set_node_drained(&mut self, drained: bool) -> String {
        self.desired.overrides.node_drained = drained;
        self.save_overrides();
        self.sync_announcements();
        if drained {
            "node drained: its VIPs are withdrawn (flows move to the other nodes)".into()
        } else {
            "node undrained: its VIPs are announced again".into()
        }
    }
}

/// Running backend `b` under its new config `cfg` (a new MAC is resolved again).
fn carry_backend(mut b: BackendRt, cfg: BackendConfig) -> BackendRt {
    if b.cfg.mac != cfg.mac {
        b.nexthop = None;
    }
    b.cfg = cfg;
    b
}
