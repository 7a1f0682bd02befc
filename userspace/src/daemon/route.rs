//! Routing: what each event of the daemon's loop sets off, subsystem by
//! subsystem. A health verdict goes tracker -> writer (state word at once,
//! ring queued) -> recovery, and never back.

use serde_json::json;
use tokio::sync::oneshot;
use tracing::{error, info};

use super::{
    control::{
        access::Caller,
        api::{Request, Response},
    },
    event_loop::Daemon,
    observe::{metrics::MetricsView, status::StatusView},
    publish::RingLog,
    recovery::{self, Coordination, HookDone, Standalone},
};
use crate::{
    dataplane::passive::PassiveSignal,
    health::{agent::AgentReport, CheckReport, HealthEvent},
    overrides::Admin,
};

impl Daemon {
    /// Applies what the checkers reported together: flips (one ring
    /// rebuild per service), then cleared suspicions.
    pub(super) fn on_reports(&mut self, reports: Vec<CheckReport>) {
        let (mut flips, mut cleared) = (Vec::new(), Vec::new());
        for r in reports {
            match r {
                CheckReport::Flip(ev) => flips.push(ev),
                CheckReport::SuspectCleared { backend, generation, reason } => {
                    cleared.push((backend, generation, reason))
                }
            }
        }
        let any_up = flips.iter().any(|e| e.up);
        if !flips.is_empty() {
            self.on_flips(flips);
        }
        for (backend, generation, reason) in cleared {
            let clear = |id| self.publisher.clear_suspect(id);
            self.tracker.suspect_cleared(&self.services, backend, generation, &reason, clear);
        }
        if any_up {
            self.publisher.resolve_nexthops(&mut self.services);
        }
    }

    /// Applies health flips that arrived together. Every state word is
    /// written first (a failed backend stops getting packets with that one
    /// write); the rings follow through the queue, so when many backends
    /// fail at once no state word waits behind a ring rebuild.
    fn on_flips(&mut self, events: Vec<HealthEvent>) {
        let flips = self.tracker.apply_flips(&mut self.services, events);
        for f in &flips.flipped {
            let (i, id) = (f.service, f.id);
            if f.up {
                // Back from down: whatever the dataplane suspected is answered.
                let _ = self.publisher.clear_suspect(id);
                if let Some(b) = self.services[i].backend_mut(id) {
                    recovery::stop(b);
                }
            }
            self.publisher.reason(id, f.reason.clone());
            self.follow_recovery(i, id);
            if let Err(e) = self.publisher.write_entries(&self.services[i]) {
                error!(service = %self.services[i].cfg.name, error = %format!("{e:#}"), "writing the dataplane failed");
            }
            f.log_down(&self.services);
        }
        // A substitute that came up retires the backend it replaces.
        for f in flips.flipped.iter().filter(|f| f.up) {
            self.retire_replaced(f.service, f.id);
        }
        for &(i, _) in &flips.touched {
            self.publisher.queue_ring(self.services[i].key);
        }
        for f in flips.flipped.into_iter().filter(|f| f.up) {
            let s = &self.services[f.service];
            let backend = s.backend(f.id).map_or_else(|| "?".to_string(), |b| b.cfg.name.clone());
            let log = RingLog::Up { service: s.cfg.name.clone(), backend, reason: f.reason };
            self.publisher.log_when_in(s.key, log);
        }
        self.fleet_report_verdicts();
        self.check_fence();
        for (i, backups_before) in flips.touched {
            let s = &self.services[i];
            let (service, after) = (s.cfg.name.clone(), s.backups_active());
            if after != backups_before {
                let log = if after {
                    RingLog::BackupsPromoted { service, min_healthy: s.cfg.min_healthy }
                } else {
                    RingLog::BackupsStandby { service }
                };
                self.publisher.log_when_in(s.key, log);
            }
        }
    }

    /// An agent's answer applies at once (state word); the ring follows.
    pub(super) fn on_agent(&mut self, r: AgentReport) {
        let backend = r.backend;
        let Some((i, reason)) = self.tracker.on_agent(&mut self.services, r) else { return };
        self.publisher.reason(backend, reason);
        if let Err(e) = self.publisher.write_entries(&self.services[i]) {
            error!(service = %self.services[i].cfg.name, error = %format!("{e:#}"), "writing the dataplane failed");
        }
        self.publisher.queue_ring(self.services[i].key);
    }

    /// The dataplane suspects backends: the tracker probes them now.
    pub(super) fn on_passive(&mut self, signals: Vec<PassiveSignal>) {
        self.tracker.on_passive(&self.services, signals);
    }

    /// Runs backend `id`'s restarts exactly while they are wanted.
    pub(super) fn follow_recovery(&mut self, i: usize, id: u32) {
        let co: &dyn Coordination = match &self.fleet {
            Some(f) => f,
            None => &Standalone,
        };
        self.recovery.follow(&mut self.services, i, id, co);
    }

    /// `id` of service `i` came up: if it is a substitute, the backend it
    /// replaces is retired.
    fn retire_replaced(&mut self, i: usize, id: u32) {
        let Some(dead) = self.recovery.retires(&self.services, i, id) else { return };
        let service = self.services[i].cfg.name.clone();
        let substitute = self.services[i].backend(id).map(|b| b.cfg.name.clone()).unwrap_or_default();
        match self.remove_backend(&service, &dead) {
            Ok(_) => {
                info!(%service, backend = %dead, %substitute, "backend replaced: its substitute passed its checks, the dead backend is retired")
            }
            Err(e) => error!(%service, backend = %dead, error = %e, "retiring the replaced backend failed"),
        }
    }

    /// A replace hook finished: its substitute is added (and waited for),
    /// or the attempt failed.
    pub(super) fn on_hook_done(&mut self, done: HookDone) {
        let Some(p) = self.recovery.hook_done(&mut self.services, done) else { return };
        let added = match &p.result {
            Ok(b) => self.add_backend(&p.service, b.clone()).map(drop).map_err(|e| e.to_string()),
            Err(_) => Ok(()),
        };
        self.recovery.provisioned(&mut self.services, p, added);
    }

    /// Every second: dataplane retries, next hops, scaling and replace
    /// hooks, announcements.
    pub(super) fn tick(&mut self) {
        self.publisher.retry_stale(&mut self.services);
        self.publisher.resolve_nexthops(&mut self.services);
        let co: &dyn Coordination = match &self.fleet {
            Some(f) => f,
            None => &Standalone,
        };
        self.recovery.scale_tick(&self.services, self.publisher.dp(), co);
        let expired = self.recovery.replace_tick(&mut self.services, co);
        for e in expired {
            if let Err(err) = self.remove_backend(&e.service, &e.substitute) {
                error!(service = %e.service, backend = %e.substitute, error = %err, "removing the substitute failed");
            }
            self.recovery.expired(&mut self.services, e);
        }
        self.sync_announcements();
    }

    /// Moves every slow-start ramp to its current step: a service whose
    /// ring weights changed gets its ring rebuilt; a finished ramp ends.
    pub(super) fn step_ramps(&mut self) {
        let now = std::time::Instant::now();
        for s in self.services.iter_mut().filter(|s| s.backends.iter().any(|b| b.ramp.is_some())) {
            if let Err(e) = self.publisher.sync(s) {
                error!(service = %s.cfg.name, error = %format!("{e:#}"), "writing the dataplane failed");
            }
            super::tracker::end_ramps(s, now);
        }
    }

    /// Answers one API request: at once, or (a change in a fleet) once
    /// etcd has committed it.
    pub(super) fn answer(&mut self, req: Request, caller: Caller, reply: oneshot::Sender<Response>) {
        match self.handle(req, caller) {
            Answer::Now(r) => drop(reply.send(r)),
            Answer::AfterCommit { keys, msg } => match self.fleet.as_mut() {
                Some(f) => f.answer_after_commit(keys, msg, reply),
                None => drop(reply.send(Response::ok(json!(msg)))),
            },
        }
    }

    fn handle(&mut self, req: Request, caller: Caller) -> Answer {
        let r = match req {
            Request::Status => return Answer::Now(to_response("status", self.status())),
            Request::Metrics => return Answer::Now(Response::ok(json!(self.render_metrics()))),
            Request::Reload { dry_run: true } => {
                return Answer::Now(self.reload_plan().map_or_else(Response::err, |m| Response::ok(json!(m))));
            }
            Request::Reload { dry_run: false } => {
                info!(caller = %caller, "reload requested through the API");
                return Answer::Now(self.reload().map_or_else(Response::err, |m| Response::ok(json!(m))));
            }
            Request::Events { since, service, backend } => {
                let log = self.publisher.history().query(since.unwrap_or(0), service.as_deref(), backend.as_deref());
                return Answer::Now(to_response("events", log));
            }
            Request::Drain { service, backend } => self.set_admin(&service, &backend, Admin::Draining),
            Request::Enable { service, backend } => self.set_admin(&service, &backend, Admin::Enabled),
            Request::Disable { service, backend } => self.set_admin(&service, &backend, Admin::Disabled),
            Request::Weight { service, backend, weight } => self.set_weight(&service, &backend, weight),
            Request::AddBackend { service, name, address, weight, mac, backup } => {
                let b = crate::overrides::AddedBackend { name, address, weight: weight.unwrap_or(1), backup, mac };
                self.add_backend(&service, b)
            }
            Request::RemoveBackend { service, backend } => self.remove_backend(&service, &backend),
            Request::Health { service, backend, mode } => self.set_health(&service, &backend, mode),
            Request::Reset { service, backend } => self.reset(service.as_deref(), backend.as_deref()),
            Request::NodeDrain => Ok(self.set_node_drained(true)),
            Request::NodeUndrain => Ok(self.set_node_drained(false)),
            Request::ConfigPush { text, note } => {
                info!(caller = %caller, bytes = text.len(), "fleet config push requested through the API");
                return self.config_push(text, note);
            }
            Request::ConfigRollback { revision } => {
                info!(caller = %caller, revision, "fleet config rollback requested through the API");
                return self.config_rollback(revision);
            }
            Request::ConfigHistory => return Answer::Now(self.config_read(None)),
            Request::ConfigShow { revision } => return Answer::Now(self.config_read(Some(revision))),
        };
        match r {
            Ok(msg) => {
                info!(caller = %caller, "{msg}");
                // The change reaches the other nodes through etcd.
                let keys = self.fleet_publish();
                if keys.is_empty() {
                    Answer::Now(Response::ok(json!(msg)))
                } else {
                    Answer::AfterCommit { keys, msg }
                }
            }
            Err(e) => Answer::Now(Response::err(e)),
        }
    }

    /// The running state.
    pub fn status(&self) -> crate::wire::Status {
        StatusView {
            config_path: &self.desired.path,
            cfg: &self.desired.file,
            overrides: &self.desired.overrides,
            announced: self.announcer.announced(),
            fleet: self.fleet.as_ref().map(|f| f.status()),
        }
        .status(&self.services)
    }

    /// The daemon's metrics in Prometheus text format.
    fn render_metrics(&self) -> String {
        MetricsView {
            services: &self.services,
            dp: self.publisher.dp(),
            health: &self.tracker.counters,
            recovery: &self.recovery.counters,
            reloads: self.desired.reloads,
            tables: self.table_usage.lock().ok().and_then(|u| *u),
            fleet: self.fleet.as_ref().map(|f| {
                let s = f.status();
                crate::daemon::observe::node_metrics::FleetRow {
                    etcd_connected: s.etcd.starts_with("connected"),
                    leader: s.leader,
                    fenced: s.fenced,
                    drained: self.desired.overrides.node_drained,
                    announced: self.announcer.announced().len(),
                    fenced_vips: s.fenced_vips,
                    config_current: s.config.current,
                    config_running: s.config.running,
                    config_refused: s.config.refused.is_some(),
                    node: s.node,
                }
            }),
            nat_sync: self.nat_copies.as_ref().map(|c| c.row()),
        }
        .render()
    }
}

/// When a request is answered.
pub(super) enum Answer {
    /// Now.
    Now(Response),
    /// Once etcd has committed `keys` (operator changes under `P/ops/`).
    AfterCommit {
        /// The keys the change published.
        keys: Vec<String>,
        /// What it did.
        msg: String,
    },
}

/// `value` as an API answer.
fn to_response(what: &str, value: impl serde::Serialize) -> Response {
    match serde_json::to_value(value) {
        Ok(v) => Response::ok(v),
        Err(e) => Response::err(format!("{what}: {e}")),
    }
}
