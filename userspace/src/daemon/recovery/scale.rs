//! Load-driven scaling hooks: when the load per healthy backend stays above
//! (or below) a threshold for a window, run the service's out (or in)
//! command, then wait out a cooldown.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use tracing::{info, warn};

use veer_abi::BackendState;

use super::coordination::{Coordination, Gate};
use crate::{
    config::{ScaleConfig, ScaleMetric},
    daemon::{model::Services, observe::RecoveryCounters},
    dataplane::{self, Dataplane, MapReader},
    runner::{self, CommandSpec, Output},
};

/// A flow idle this long no longer counts as active (scaling by flows).
const FLOW_IDLE: Duration = Duration::from_secs(30);

/// Which way to scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Add capacity.
    Out,
    /// Remove capacity.
    In,
}

impl Direction {
    /// `out` or `in`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Out => "out",
            Self::In => "in",
        }
    }
}

/// Per-service tracking of the load condition.
#[derive(Debug, Default)]
pub struct ScaleState {
    above_since: Option<Instant>,
    below_since: Option<Instant>,
    last_fired: Option<Instant>,
    last_packets: Option<(Instant, u64)>,
}

impl ScaleState {
    /// Turns a packet counter reading into packets per second since the last one.
    pub fn pps(&mut self, now: Instant, packets: u64) -> Option<f64> {
        let prev = self.last_packets.replace((now, packets));
        let (t, p) = prev?;
        let dt = now.duration_since(t).as_secs_f64();
        (dt > 0.0).then(|| packets.saturating_sub(p) as f64 / dt)
    }

    /// Feeds one load sample (per healthy backend); returns a hook to fire.
    pub fn observe(&mut self, cfg: &ScaleConfig, now: Instant, load: f64) -> Option<Direction> {
        let above = cfg.above.is_some_and(|a| load > a);
        let below = cfg.below.is_some_and(|b| load < b);
        self.above_since = if above { self.above_since.or(Some(now)) } else { None };
        self.below_since = if below { self.below_since.or(Some(now)) } else { None };
        if self.last_fired.is_some_and(|t| now.duration_since(t) < cfg.cooldown) {
            return None;
        }
        let held = |since: Option<Instant>| since.is_some_and(|s| now.duration_since(s) >= cfg.window);
        let dir = if held(self.above_since) {
            Direction::Out
        } else if held(self.below_since) {
            Direction::In
        } else {
            return None;
        };
        self.last_fired = Some(now);
        self.above_since = None;
        self.below_since = None;
        Some(dir)
    }
}

/// Runs a hook in the background, logging its output. In a fleet with
/// etcd (`gate`), only if the leader's claim on it commits, and no sooner
/// than the cooldown after the fleet's last scaling of the service.
fn fire(
    service: &str,
    cfg: &ScaleConfig,
    dir: Direction,
    load: f64,
    healthy: usize,
    gate: Option<crate::fleet::claim::ActionGate>,
) {
    let argv = match dir {
        Direction::Out => cfg.out.clone(),
        Direction::In => cfg.in_.clone(),
    };
    let metric = match cfg.metric {
        ScaleMetric::Pps => "pps",
        ScaleMetric::Flows => "flows",
    };
    info!(%service, direction = %dir.as_str(), load, healthy, metric = %metric, command = ?argv, "scaling hook fired");
    let service = service.to_string();
    let env = vec![
        ("VEER_SERVICE", service.clone()),
        ("VEER_DIRECTION", dir.as_str().to_string()),
        ("VEER_LOAD", format!("{load:.3}")),
        ("VEER_HEALTHY", healthy.to_string()),
        ("VEER_METRIC", metric.to_string()),
    ];
    let cooldown = cfg.cooldown;
    tokio::spawn(async move {
        if let Some(mut gate) = gate {
            match gate.claim(None, cooldown).await {
                Ok(Ok(_)) => {}
                Ok(Err(why)) => return info!(%service, %why, "scaling hook not run: the fleet's last scaling stands"),
                Err(e) => return warn!(%service, error = %format!("{e:#}"), "scaling hook not run: etcd failed"),
            }
        }
        let label = format!("{service} scale-{}", dir.as_str());
        let spec = CommandSpec {
            argv: &argv,
            vars: &[],
            env: &env,
            timeout: Duration::from_secs(300),
            label: &label,
            output: Output::Log,
            reap_group: false,
        };
        match runner::run(&spec).await {
            Ok(o) if o.status.success() => {}
            Ok(o) => warn!(%service, status = %runner::describe(&o.status), "scaling hook failed"),
            Err(e) => warn!(%service, error = %e, "scaling hook could not run"),
        }
    });
}

/// Every service's scaling window.
#[derive(Debug, Default)]
pub struct Scaler {
    states: HashMap<String, ScaleState>,
}

impl Scaler {
    /// Feeds each service's load to its scaling hooks, counting the hooks
    /// fired in `counters`.
    pub fn tick(
        &mut self,
        counters: &mut RecoveryCounters,
        services: &Services,
        dp: &Dataplane,
        co: &dyn Coordination,
    ) {
        // In a fleet with etcd, only the leader scales.
        if !co.leads() {
            return;
        }
        let now = Instant::now();
        let by_flows = services.iter().any(|s| s.cfg.scale.as_ref().is_some_and(|c| c.metric == ScaleMetric::Flows));
        let flows = if by_flows { dp.flows().ok() } else { None };
        let active: HashMap<u32, usize> =
            flows.as_deref().map(|f| dataplane::active_per_backend(f, FLOW_IDLE)).unwrap_or_default();
        for s in services.iter() {
            let Some(cfg) = &s.cfg.scale else { continue };
            let healthy = s.backends.iter().filter(|b| b.effective() == BackendState::Up).count();
            let st = self.states.entry(s.cfg.name.clone()).or_default();
            let total = match cfg.metric {
                ScaleMetric::Pps => match st.pps(now, dp.service_counters(s.id).map_or(0, |c| c.packets)) {
                    Some(p) => p,
                    None => continue,
                },
                ScaleMetric::Flows => {
                    s.backends.iter().map(|b| active.get(&b.id).copied().unwrap_or(0)).sum::<usize>() as f64
                }
            };
            let load = total / healthy.max(1) as f64;
            let Some(dir) = st.observe(cfg, now, load) else { continue };
            let gate = match co.gate(&format!("scale/{}", s.cfg.name)) {
                Gate::Open => None,
                Gate::Claim(g) => Some(*g),
                // In a fleet but out of session: fail static, no hook.
                Gate::Shut => continue,
            };
            *counters.scale_hooks.entry((s.cfg.name.clone(), dir.as_str())).or_default() += 1;
            fire(&s.cfg.name, cfg, dir, load, healthy, gate);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ScaleConfig {
        ScaleConfig {
            metric: ScaleMetric::Flows,
            above: Some(10.0),
            below: Some(2.0),
            window: Duration::from_secs(5),
            cooldown: Duration::from_secs(60),
            out: vec!["true".into()],
            in_: vec!["true".into()],
        }
    }

    #[test]
    fn fires_after_the_window_then_cools_down() {
        let c = cfg();
        let mut s = ScaleState::default();
        let t = Instant::now();
        assert_eq!(s.observe(&c, t, 20.0), None);
        assert_eq!(s.observe(&c, t + Duration::from_secs(4), 20.0), None);
        assert_eq!(s.observe(&c, t + Duration::from_secs(5), 20.0), Some(Direction::Out));
        // Cooldown: the condition holds, nothing fires.
        assert_eq!(s.observe(&c, t + Duration::from_secs(30), 20.0), None);
        assert_eq!(s.observe(&c, t + Duration::from_secs(66), 20.0), Some(Direction::Out));
    }

    #[test]
    fn a_dip_resets_the_window_and_low_load_scales_in() {
        let c = cfg();
        let mut s = ScaleState::default();
        let t = Instant::now();
        s.observe(&c, t, 20.0);
        s.observe(&c, t + Duration::from_secs(3), 5.0);
        assert_eq!(s.observe(&c, t + Duration::from_secs(6), 20.0), None, "window restarted");
        assert_eq!(s.observe(&c, t + Duration::from_secs(7), 1.0), None);
        assert_eq!(s.observe(&c, t + Duration::from_secs(12), 1.0), Some(Direction::In));
    }

    #[test]
    fn pps_from_counter_deltas() {
        let mut s = ScaleState::default();
        let t = Instant::now();
        assert_eq!(s.pps(t, 100), None);
        assert_eq!(s.pps(t + Duration::from_secs(2), 300), Some(100.0));
    }
}
