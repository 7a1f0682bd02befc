//! Detecting failures: active probes, hysteresis, and the task that runs them.
//!
//! A [`Probe`] asks one backend one question. [`Hysteresis`] turns a stream of
//! answers into up/down with `rise`/`fall`. [`spawn_checker`] runs both on a
//! tokio task per backend, at `interval`, or `fast_interval` while a state is
//! changing, and reports each flip (with its reason) once.

mod hysteresis;
mod probe;

use std::{net::SocketAddr, time::Duration};

use tokio::{sync::mpsc, task::JoinHandle};

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
    /// What to ask.
    pub probe: Probe,
    /// Timing and hysteresis.
    pub health: HealthConfig,
    /// State to start from (the configured initial state, or the state an
    /// adopted dataplane already has).
    pub initially_up: bool,
}

/// Runs a backend's checks until aborted; flips go to `events`, every probe
/// result to `samples` (dropped when that channel is full).
pub fn spawn_checker(
    spec: CheckSpec,
    events: mpsc::UnboundedSender<HealthEvent>,
    samples: Option<mpsc::Sender<ProbeSample>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let h = &spec.health;
        let mut state = Hysteresis::new(h.rise, h.fall, spec.initially_up);
        let mut local_errors: u64 = 0;
        // Jitter the first probe so checkers started together do not fire together.
        let jitter = h.interval.mul_f64(fastrand::f64());
        tokio::time::sleep(jitter).await;
        loop {
            let started = tokio::time::Instant::now();
            let result = spec.probe.run(spec.target, h.timeout).await;
            let latency = started.elapsed();
            let local_error = result.as_ref().is_err_and(ProbeError::is_local);
            if let Some(tx) = &samples {
                let _ = tx.try_send(ProbeSample { backend: spec.backend, ok: result.is_ok(), latency, local_error });
            }
            if let (true, Err(e)) = (local_error, &result) {
                // The state holds: a fault of this host is no verdict on the backend.
                local_errors += 1;
                if local_errors.is_power_of_two() {
                    tracing::error!(target = %spec.target, error = %e, count = local_errors, "health check could not run; backend state held");
                }
            } else if let Some(up) = state.record(result.is_ok()) {
                let why = match &result {
                    Ok(()) => format!("{} consecutive successful checks", h.rise),
                    Err(e) => format!("{} consecutive failed checks, last: {e}", h.fall),
                };
                let ev = HealthEvent { backend: spec.backend, generation: spec.generation, up, reason: why };
                if events.send(ev).is_err() {
                    return;
                }
            }
            let period = if state.changing() { h.fast() } else { h.interval };
            tokio::time::sleep_until(started + period).await;
        }
    })
}
