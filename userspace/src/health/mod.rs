//! Detecting failures: active probes, hysteresis, and the task that runs them.
//!
//! A [`Probe`] asks one backend one question. [`Hysteresis`] turns a stream of
//! answers into up/down with `rise`/`fall`. [`spawn_checker`] runs both on a
//! tokio task per backend, at `interval`, or `fast_interval` while a state is
//! changing, and reports each flip (with its reason) once. A [`Checker`] told
//! that the dataplane suspects its backend probes at once, out of its
//! interval, and either confirms the backend down or clears the suspicion.

pub mod agent;
mod hysteresis;
mod probe;
mod tls;
#[cfg(test)]
mod tls_tests;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    sync::{mpsc, Notify},
    task::JoinHandle,
};

pub use hysteresis::Hysteresis;
pub use probe::{Probe, ProbeError};

use crate::config::HealthConfig;

/// A backend's health flipped.
#[derive(Debug, Clone)]
pub struct HealthEvent {
    /// Backend id.
    pub backend: u32,
    /// Checker generation (events of replaced checkers are ignored).
    pub generation: u64,
    /// New state.
    pub up: bool,
    /// Why: the last probe's result and the streak.
    pub reason: String,
}

/// What a checker reports.
#[derive(Debug, Clone)]
pub enum CheckReport {
    /// The backend's health flipped.
    Flip(HealthEvent),
    /// A suspect's immediate probe passed: the dataplane's suspicion was wrong.
    SuspectCleared {
        /// Backend id.
        backend: u32,
        /// Checker generation.
        generation: u64,
        /// Why.
        reason: String,
    },
}

/// A running checker.
#[derive(Debug)]
pub struct Checker {
    task: JoinHandle<()>,
    suspect: Arc<Notify>,
}

impl Checker {
    /// The dataplane suspects the backend: probe it now.
    pub fn suspect(&self) {
        self.suspect.notify_one();
    }

    /// Stops the checker.
    pub fn abort(&self) {
        self.task.abort();
    }
}

/// One probe's result, for latency metrics.
#[derive(Debug, Clone, Copy)]
pub struct ProbeSample {
    /// Backend id.
    pub backend: u32,
    /// Whether it passed.
    pub ok: bool,
    /// How long it took.
    pub latency: Duration,
    /// It could not be made here (see [`ProbeError::is_local`]): no verdict.
    pub local_error: bool,
}

/// What a checker needs to know.
#[derive(Debug, Clone)]
pub struct CheckSpec {
    /// Backend id, echoed in events.
    pub backend: u32,
    /// Generation, echoed in events.
    pub generation: u64,
    /// Where to probe.
    pub target: SocketAddr,
    /// The probe's socket mark (VIP-path checks), if any.
    pub mark: Option<u32>,
    /// What to ask.
    pub probe: Probe,
    /// Timing and hysteresis.
    pub health: HealthConfig,
    /// State to start from (the configured initial state, or the state an
    /// adopted dataplane already has).
    pub initially_up: bool,
}

/// Runs a backend's checks until aborted; flips and cleared suspicions go
/// to `reports`, every probe result to `samples` (dropped when that channel
/// is full).
pub fn spawn_checker(
    spec: CheckSpec,
    reports: mpsc::UnboundedSender<CheckReport>,
    samples: Option<mpsc::Sender<ProbeSample>>,
) -> Checker {
    let suspect = Arc::new(Notify::new());
    let nudge = suspect.clone();
    let task = tokio::spawn(async move {
        let h = &spec.health;
        let mut state = Hysteresis::new(h.rise, h.fall, spec.initially_up);
        let mut local_errors: u64 = 0;
        // Failed probes of a suspicion so far, while one is being checked.
        let mut suspicion: Option<u32> = None;
        // Jitter the first probe so checkers started together do not fire together.
        let jitter = h.interval.mul_f64(fastrand::f64());
        tokio::select! {
            _ = tokio::time::sleep(jitter) => {}
            _ = nudge.notified() => suspicion = Some(0),
        }
        loop {
            let started = tokio::time::Instant::now();
            let result = spec.probe.run_marked(spec.target, h.timeout, spec.mark).await;
            let latency = started.elapsed();
            let local_error = result.as_ref().is_err_and(ProbeError::is_local);
            if let Some(tx) = &samples {
                let _ = tx.try_send(ProbeSample { backend: spec.backend, ok: result.is_ok(), latency, local_error });
            }
            let report = if let (true, Err(e)) = (local_error, &result) {
                // The state holds: a fault of this host is no verdict on the backend.
                local_errors += 1;
                if local_errors.is_power_of_two() {
                    tracing::error!(target = %spec.target, error = %e, count = local_errors, "health check could not run; backend state held");
                }
                None
            } else if let Some(failed) = suspicion.filter(|_| state.is_up()) {
                judge_suspicion(&spec, &mut state, &mut suspicion, failed, &result)
            } else {
                suspicion = None;
                record_streak(&spec, &mut state, &result)
            };
            if let Some(r) = report {
                if reports.send(r).is_err() {
                    return;
                }
            }
            let period = if state.changing() || suspicion.is_some() { h.fast() } else { h.interval };
            tokio::select! {
                _ = tokio::time::sleep_until(started + period) => {}
                _ = nudge.notified() => {
                    if state.is_up() && suspicion.is_none() {
                        suspicion = Some(0);
                    }
                }
            }
        }
    });
    Checker { task, suspect }
}

/// An ordinary probe counted in the `rise`/`fall` streak: a flip when it
/// completes one.
fn record_streak(spec: &CheckSpec, state: &mut Hysteresis, result: &Result<(), ProbeError>) -> Option<CheckReport> {
    let h = &spec.health;
    state.record(result.is_ok()).map(|up| {
        let reason = match result {
            Ok(()) => format!("{} consecutive successful checks", h.rise),
            Err(e) => format!("{} consecutive failed checks, last: {e}", h.fall),
        };
        CheckReport::Flip(HealthEvent { backend: spec.backend, generation: spec.generation, up, reason })
    })
}

/// One probe of a suspect (up) backend: `confirm` failures in a row take it
/// down at once, a success clears the suspicion.
fn judge_suspicion(
    spec: &CheckSpec,
    state: &mut Hysteresis,
    suspicion: &mut Option<u32>,
    failed: u32,
    result: &Result<(), ProbeError>,
) -> Option<CheckReport> {
    let confirm = spec.health.passive.confirm.max(1);
    match result {
        Ok(()) => {
            *suspicion = None;
            state.record(true);
            Some(CheckReport::SuspectCleared {
                backend: spec.backend,
                generation: spec.generation,
                reason: "an immediate probe passed".into(),
            })
        }
        Err(e) if failed + 1 >= confirm => {
            *suspicion = None;
            state.set(false);
            let reason = format!("the dataplane suspected it and {confirm} immediate probe(s) failed, last: {e}");
            Some(CheckReport::Flip(HealthEvent {
                backend: spec.backend,
                generation: spec.generation,
                up: false,
                reason,
            }))
        }
        Err(_) => {
            *suspicion = Some(failed + 1);
            None
        }
    }
}
