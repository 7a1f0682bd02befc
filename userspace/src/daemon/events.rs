//! Health flips: state words first, then rings; the fail-open guard and the
//! restart loops follow them.

use std::collections::HashSet;

use tracing::{error, info, warn};

use super::{guard, model::Admin, recovery, Daemon};
use crate::health::{CheckReport, HealthEvent};

/// A change a ring rebuild brings, logged once the ring is in: only then
/// does it hold for new flows.
pub(super) enum RingLog {
    /// A backend came up.
    Up { service: String, backend: String, reason: String },
    /// Backups were promoted (fewer primaries up than `min_healthy`).
    BackupsPromoted { service: String, min_healthy: u32 },
    /// Backups went back on standby.
    BackupsStandby { service: String },
}

impl RingLog {
    pub(super) fn emit(&self) {
        match self {
            RingLog::Up { service, backend, reason } => info!(%service, %backend, %reason, "backend UP"),
            RingLog::BackupsPromoted { service, min_healthy } => {
                warn!(%service, min_healthy, "fewer primaries up than min_healthy: backups promoted")
            }
            RingLog::BackupsStandby { service } => {
                info!(%service, "enough primaries up again: backups back on standby")
            }
        }
    }
}

impl Daemon {
    /// Applies what the checkers reported together: flips (one ring
    /// rebuild per service), then cleared suspicions.
    pub(super) fn on_reports(&mut self, reports: Vec<CheckReport>) {
        let mut flips = Vec::new();
        let mut cleared = Vec::new();
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
            self.on_health(flips);
        }
        for (backend, generation, reason) in cleared {
            self.on_suspect_cleared(backend, generation, &reason);
        }
        if any_up {
            self.resolve_nexthops();
        }
    }

    /// Applies health flips that arrived together. Every state word is
    /// written first (a failed backend stops getting packets with that one
    /// write), then each touched service's ring is rebuilt once: when many
    /// backends fail at once, no state word waits behind a ring rebuild.
    pub(super) fn on_health(&mut self, events: Vec<HealthEvent>) {
        let mut touched: Vec<(usize, bool)> = Vec::new();
        let mut up_ids: Vec<(usize, u32)> = Vec::new();
        let mut ups = Vec::new();
        for ev in events {
            let Some(i) = self.service_of(ev.backend) else {
                continue;
            };
            if !touched.iter().any(|(t, _)| *t == i) {
                touched.push((i, self.services[i].backups_active()));
            }
            let svc_name = self.services[i].cfg.name.clone();
            let slow_start = self.services[i].cfg.slow_start;
            let Some(b) = self.services[i].backend_mut(ev.backend) else { continue };
            if b.generation != ev.generation || b.healthy == ev.up {
                continue;
            }
            b.healthy = ev.up;
            let name = b.cfg.name.clone();
            let id = b.id;
            // Slow start: back up after having been up (or added to the
            // running service), its weight ramps; down, a ramp ends.
            b.ramp = None;
            b.down_since = if ev.up { None } else { b.down_since.or(Some(std::time::Instant::now())) };
            if ev.up {
                if b.ramp_next_up && !slow_start.is_zero() {
                    b.ramp = Some(super::slow_start::Ramp::new(std::time::Instant::now(), slow_start));
                    info!(service = %svc_name, backend = %name, over = ?slow_start, "slow start: weight ramps up");
                }
                b.ramp_next_up = true;
            }
            if ev.up {
                *self.metrics.recoveries.entry(id).or_default() += 1;
                // Back from down: whatever the dataplane suspected is answered.
                let _ = self.dp.clear_suspect(id);
                if let Some(r) = b.recovery.take() {
                    r.abort();
                }
            } else {
                *self.metrics.failovers.entry(id).or_default() += 1;
            }
            self.state_reasons.insert(id, ev.reason.clone());
            let held = self.guard_fail_open(i, id, ev.up);
            self.follow_recovery(i, id);
            if let Err(e) = self.write_entries(i) {
                error!(service = %svc_name, error = %format!("{e:#}"), "writing the dataplane failed");
            }
            if ev.up {
                up_ids.push((i, id));
                // Logged once the ring holds it: UP means new flows reach it.
                ups.push((i, svc_name, name, ev.reason));
            } else if held {
                error!(service = %svc_name, backend = %name, reason = %ev.reason, "backend failing, but HELD IN by the fail-open guard");
            } else {
                warn!(service = %svc_name, backend = %name, reason = %ev.reason, "backend DOWN: no more packets to it");
            }
        }
        // A substitute that came up retires the backend it replaces (after
        // the state words: indexes of services do not change here).
        for (i, id) in up_ids {
            self.on_substitute_up(i, id);
        }
        // The rings follow in the run loop, one service per turn while no
        // event waits: flips that keep arriving (a start, a correlated
        // failure) cost each service one rebuild per pass of the queue, not
        // one per flip, and no state word waits behind a rebuild.
        for &(i, _) in &touched {
            self.queue_ring(i);
        }
        for (i, service_name, backend, reason) in ups {
            let service = self.services[i].key;
            self.pending_logs.push((service, RingLog::Up { service: service_name, backend, reason }));
        }
        self.fleet_report_verdicts();
        self.check_fence();
        for (i, backups_before) in touched {
            let s = &self.services[i];
            let backups_after = s.backups_active();
            if backups_after != backups_before {
                let service = s.cfg.name.clone();
                let log = if backups_after {
                    RingLog::BackupsPromoted { service, min_healthy: s.cfg.min_healthy }
                } else {
                    RingLog::BackupsStandby { service }
                };
                self.pending_logs.push((s.key, log));
            }
        }
    }

    /// An agent answered (or stopped answering): its verdict applies at
    /// once (state word), the ring follows.
    pub(super) fn on_agent(&mut self, r: crate::health::agent::AgentReport) {
        let Some(i) = self.service_of(r.backend) else { return };
        let service = self.services[i].cfg.name.clone();
        let Some(b) = self.services[i].backend_mut(r.backend) else { return };
        if b.generation != r.generation {
            return;
        }
        match r.verdict {
            Ok(v) => {
                if v == b.agent_verdict && b.agent_error.is_none() {
                    return;
                }
                info!(%service, backend = %b.cfg.name, agent = %v.describe(), "agent check");
                b.agent_verdict = v;
                b.agent_error = None;
                let reason = format!("agent: {}", v.describe());
                self.state_reasons.insert(r.backend, reason);
            }
            Err(e) => {
                // Its last verdict stays: an agent that cannot be asked
                // changes nothing (the health check judges the backend).
                warn!(%service, backend = %b.cfg.name, error = %e, "agent check failed; keeping its last answer");
                b.agent_error = Some(e);
                return;
            }
        }
        if let Err(e) = self.write_entries(i) {
            error!(%service, error = %format!("{e:#}"), "writing the dataplane failed");
        }
        self.queue_ring(i);
    }

    /// Queues service `i`'s ring for [`Daemon::sync_next_ring`] (once).
    pub(super) fn queue_ring(&mut self, i: usize) {
        let key = self.services[i].key;
        if !self.ring_queue.contains(&key) {
            self.ring_queue.push_back(key);
        }
    }

    /// Whether a slow-start ramp runs.
    pub(super) fn ramping(&self) -> bool {
        self.services.iter().any(|s| s.backends.iter().any(|b| b.ramp.is_some()))
    }

    /// Moves every slow-start ramp to its current step: a service whose
    /// ring weights changed gets its ring rebuilt; a finished ramp ends.
    pub(super) fn step_ramps(&mut self) {
        let now = std::time::Instant::now();
        for i in 0..self.services.len() {
            if !self.services[i].backends.iter().any(|b| b.ramp.is_some()) {
                continue;
            }
            if let Err(e) = self.sync_service(i) {
                error!(service = %self.services[i].cfg.name, error = %format!("{e:#}"), "writing the dataplane failed");
            }
            let s = &mut self.services[i];
            for b in &mut s.backends {
                if b.ramp.is_some_and(|r| r.done(now)) {
                    b.ramp = None;
                    info!(service = %s.cfg.name, backend = %b.cfg.name, weight = b.cfg.weight, "slow start over: full weight");
                }
            }
        }
    }

    /// Rebuilds the ring of the service longest in the queue (if it still
    /// exists) and logs what that changed (backends up, backups promoted or
    /// back on standby).
    pub(super) fn sync_next_ring(&mut self) {
        let Some(key) = self.ring_queue.pop_front() else { return };
        if let Some(i) = self.services.iter().position(|s| s.key == key) {
            if let Err(e) = self.sync_service(i) {
                error!(service = %self.services[i].cfg.name, error = %format!("{e:#}"), "writing the dataplane failed");
            }
        }
        for (_, log) in self.pending_logs.extract_if(.., |(k, _)| *k == key) {
            log.emit();
        }
    }

    /// Feeds a health flip of backend `id` to service `i`'s fail-open guard
    /// and holds or releases backends as it says. Returns whether `id` is held.
    pub(super) fn guard_fail_open(&mut self, i: usize, id: u32, up: bool) -> bool {
        let s = &mut self.services[i];
        let (share, window, total) = (s.cfg.fail_open, s.cfg.health.detection_window(), s.backends.len());
        let failing = s.backends.iter().filter(|b| !b.healthy).count();
        let verdict = if up {
            s.fail_open.recovered(id, failing, share, total)
        } else {
            s.fail_open.failed(id, std::time::Instant::now(), window, share, total)
        };
        match verdict {
            guard::Guard::Tripped => {
                let recent: HashSet<u32> = s.fail_open.recent().collect();
                for b in s.backends.iter_mut().filter(|b| recent.contains(&b.id)) {
                    b.held = true;
                }
                self.metrics.fail_open_trips += 1;
                error!(
                    service = %s.cfg.name, failing, total, share, window = ?window,
                    "FAIL-OPEN: more than the fail_open share of backends failed within one detection window; \
                     keeping the last healthy set (is the balancer's own path broken?)"
                );
            }
            guard::Guard::Released => {
                for b in &mut s.backends {
                    b.held = false;
                }
                info!(service = %s.cfg.name, failing, total, "fail-open guard released: failed backends now go down");
            }
            guard::Guard::Same => {}
        }
        let tripped = s.fail_open.tripped();
        let Some(b) = s.backend_mut(id) else { return false };
        if up {
            b.held = false;
        } else if tripped {
            b.held = true;
        }
        b.held
    }

    /// Runs a backend's restart loop exactly while it is down, enabled by the
    /// operator (not drained, disabled or under a rollout) and has a restart
    /// command.
    pub(super) fn follow_recovery(&mut self, i: usize, id: u32) {
        // In a fleet with etcd, the leader restarts on the fleet's verdict.
        if self.fleet.is_some() {
            let job = self.fleet_restart_job(i, id);
            let Some(b) = self.services[i].backend_mut(id) else { return };
            match (job, b.recovery.as_ref().is_some_and(|r| !r.is_finished())) {
                (Some(job), false) => b.recovery = Some(tokio::spawn(job.run())),
                (None, true) => {
                    if let Some(r) = b.recovery.take() {
                        r.abort();
                    }
                }
                _ => {}
            }
            return;
        }
        let svc_name = self.services[i].cfg.name.clone();
        let attempts = self.metrics.restarts.entry(id).or_default().clone();
        let Some(b) = self.services[i].backend_mut(id) else { return };
        let wanted = !b.healthy && b.admin == Admin::Enabled && b.cfg.restart.is_some();
        match (&b.recovery, wanted, b.cfg.restart.clone()) {
            (None, true, Some(r)) => {
                let addr = b.cfg.address.to_string();
                let name = b.cfg.name.clone();
                b.recovery = Some(tokio::spawn(recovery::restart_loop(svc_name, name, addr, r, attempts)));
            }
            (Some(_), false, _) => {
                if let Some(r) = b.recovery.take() {
                    r.abort();
                }
            }
            _ => {}
        }
    }
}
