//! Health tracking: a checker (and an agent, if the service has one) per
//! backend, the dataplane's passive signals, and what their verdicts do to
//! the model: health, the fail-open guard, slow start. A verdict goes
//! probe -> tracker -> the daemon's writer (state word first, then the ring
//! queue) and never comes back; the tracker writes no dataplane state but
//! the suspicion it answered.

mod flips;
pub mod passive;

use std::{net::SocketAddr, time::Instant};

use tokio::sync::mpsc;
use tracing::{info, warn};

pub use flips::{Flipped, Flips};

use crate::health::HealthEvent;

use super::{
    model::{BackendRt, ServiceRt, Services},
    observe::HealthCounters,
};
use crate::{
    config::ServiceConfig,
    dataplane::passive::PassiveSignal,
    health::{
        agent::{self, AgentReport},
        spawn_checker, CheckReport, CheckSpec, Probe, ProbeSample,
    },
};

/// The receiving ends of the tracker's channels, for the daemon's loop.
pub struct Inbox {
    /// Checkers' flips and cleared suspicions.
    pub reports: mpsc::UnboundedReceiver<CheckReport>,
    /// Every probe's latency (or local error), for the metrics.
    pub samples: mpsc::Receiver<ProbeSample>,
    /// Agents' answers.
    pub agents: mpsc::UnboundedReceiver<AgentReport>,
}

/// Runs the checkers and agents, and turns what they say into health.
pub struct HealthTracker {
    reports: mpsc::UnboundedSender<CheckReport>,
    samples: mpsc::Sender<ProbeSample>,
    agents: mpsc::UnboundedSender<AgentReport>,
    next_generation: u64,
    /// What it counts.
    pub counters: HealthCounters,
}

impl HealthTracker {
    /// A tracker with no checker yet, and its inbox.
    pub fn new() -> (Self, Inbox) {
        let (reports, reports_rx) = mpsc::unbounded_channel();
        let (samples, samples_rx) = mpsc::channel(1024);
        let (agents, agents_rx) = mpsc::unbounded_channel();
        let t = Self { reports, samples, agents, next_generation: 1, counters: HealthCounters::default() };
        (t, Inbox { reports: reports_rx, samples: samples_rx, agents: agents_rx })
    }

    /// (Re)starts backend `b`'s checker and agent under a new generation:
    /// what the old ones still report is ignored.
    pub fn spawn_check(&mut self, svc: &ServiceConfig, b: &mut BackendRt) {
        if let Some(c) = b.checker.take() {
            c.abort();
        }
        let generation = self.next_generation;
        self.next_generation += 1;
        b.generation = generation;
        let health = b.cfg.health_for(&svc.health, svc.port);
        let port = health.port.unwrap_or(svc.port);
        // A VIP-path check asks the VIP, through this backend's MAC.
        let (addr, mark) =
            if svc.health.vip_path { (svc.vip, Some(veer_abi::VIP_PATH_MARK | b.id)) } else { (b.cfg.address, None) };
        let spec = CheckSpec {
            backend: b.id,
            generation,
            target: SocketAddr::new(addr, port),
            mark,
            probe: Probe::from_config(&health),
            health,
            initially_up: b.healthy,
        };
        b.checker = Some(spawn_checker(spec, self.reports.clone(), Some(self.samples.clone())));
        if let Some(a) = b.agent.take() {
            a.abort();
        }
        if let Some(a) = &svc.agent {
            let target = SocketAddr::new(b.cfg.address, a.port);
            b.agent = Some(agent::spawn_agent(b.id, generation, target, a.interval, a.timeout, self.agents.clone()));
        } else {
            b.agent_verdict = Default::default();
            b.agent_error = None;
        }
    }

    /// Stops backend `b`'s checker and agent (its health is fixed by the
    /// operator); a new generation makes what they still report stale.
    pub fn stop_check(&mut self, b: &mut BackendRt) {
        if let Some(c) = b.checker.take() {
            c.abort();
        }
        if let Some(a) = b.agent.take() {
            a.abort();
        }
        b.agent_verdict = Default::default();
        b.agent_error = None;
        b.generation = self.next_generation;
        self.next_generation += 1;
    }

    /// Takes flips that arrived together into the model (see [`flips::apply`]).
    pub fn apply_flips(&mut self, services: &mut Services, events: Vec<HealthEvent>) -> Flips {
        flips::apply(&mut self.counters, services, events)
    }

    /// Counts one probe's latency, or its local error.
    pub fn sample(&mut self, p: ProbeSample) {
        if p.local_error {
            *self.counters.local_errors.entry(p.backend).or_default() += 1;
        } else {
            self.counters.latency.entry(p.backend).or_default().observe(p.latency);
        }
    }

    /// An agent answered (or stopped answering). Returns the service whose
    /// entries must be written (and ring queued), with the history's reason.
    pub fn on_agent(&mut self, services: &mut Services, r: AgentReport) -> Option<(usize, String)> {
        let i = services.of(r.backend)?;
        let service = services[i].cfg.name.clone();
        let b = services[i].backend_mut(r.backend)?;
        if b.generation != r.generation {
            return None;
        }
        match r.verdict {
            Ok(v) if v == b.agent_verdict && b.agent_error.is_none() => None,
            Ok(v) => {
                info!(%service, backend = %b.cfg.name, agent = %v.describe(), "agent check");
                b.agent_verdict = v;
                b.agent_error = None;
                Some((i, format!("agent: {}", v.describe())))
            }
            Err(e) => {
                // Its last verdict stays: an agent that cannot be asked
                // changes nothing (the health check judges the backend).
                warn!(%service, backend = %b.cfg.name, error = %e, "agent check failed; keeping its last answer");
                b.agent_error = Some(e);
                None
            }
        }
    }

    /// Backends the dataplane began to suspect: count, log, probe now.
    pub fn on_passive(&mut self, services: &Services, signals: Vec<PassiveSignal>) {
        for s in signals {
            *self.counters.passive.entry((s.backend, s.kind)).or_default() += 1;
            let Some(i) = services.of(s.backend) else { continue };
            let svc = &services[i];
            let Some(b) = svc.backend(s.backend) else { continue };
            warn!(
                service = %svc.cfg.name, backend = %b.cfg.name, signal = s.kind.name(),
                "backend SUSPECT: the dataplane moved a connection off it and sends it no new flows; probing it now"
            );
            if let Some(c) = &b.checker {
                c.suspect();
            }
        }
    }

    /// A suspect passed its immediate probe: it takes new flows again.
    /// `clear` lifts the dataplane's suspicion.
    pub fn suspect_cleared<E: std::fmt::Display>(
        &mut self,
        services: &Services,
        backend: u32,
        generation: u64,
        reason: &str,
        clear: impl FnOnce(u32) -> Result<(), E>,
    ) {
        let Some(i) = services.of(backend) else { return };
        let svc = &services[i];
        let Some(b) = svc.backend(backend).filter(|b| b.generation == generation) else { return };
        *self.counters.suspects_cleared.entry(backend).or_default() += 1;
        let (service, name) = (&svc.cfg.name, &b.cfg.name);
        match clear(backend) {
            Ok(()) => info!(%service, backend = %name, %reason, "suspicion cleared: backend takes new flows again"),
            Err(e) => {
                warn!(%service, backend = %name, error = %e, "clearing a suspicion failed; it lapses on its own")
            }
        }
    }
}

/// Ends the slow-start ramps of service `s` that are over at `now`.
pub fn end_ramps(s: &mut ServiceRt, now: Instant) {
    for b in &mut s.backends {
        if b.ramp.is_some_and(|r| r.done(now)) {
            b.ramp = None;
            info!(service = %s.cfg.name, backend = %b.cfg.name, weight = b.cfg.weight, "slow start over: full weight");
        }
    }
}
