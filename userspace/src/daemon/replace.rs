//! Replacing a backend whose node is gone: the service's `replace` hook
//! provisions a substitute, veerd adds it, waits for it to pass its checks,
//! then retires the dead backend. Both changes are runtime changes, kept
//! like `add-backend` and `remove-backend`. A failed attempt is retried with
//! backoff; one attempt per backend at a time.

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use serde::Deserialize;

use crate::{
    config::ReplaceConfig,
    runner::{self, CommandSpec, Output},
};

/// What the hook prints on stdout (its last non-empty line), as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Substitute {
    /// The substitute's address.
    pub address: IpAddr,
    /// Its name (default: the dead backend's with `-r<attempt>`).
    #[serde(default)]
    pub name: Option<String>,
    /// Its weight (default: the dead backend's).
    #[serde(default)]
    pub weight: Option<u32>,
    /// Its next-hop MAC (default: the neighbour table).
    #[serde(default)]
    pub mac: Option<String>,
    /// Its port: the service's (a backend serves the service's port).
    #[serde(default)]
    pub port: Option<u16>,
}

/// Why an attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplaceError {
    /// The hook did not run, or not to the end.
    #[error("the hook could not run: {0}")]
    Run(#[from] runner::RunError),
    /// It exited with an error.
    #[error("the hook failed ({status}){stderr}")]
    Failed {
        /// `exit 3`, `signal 9`.
        status: String,
        /// Its last stderr line, if any, prefixed with ": ".
        stderr: String,
    },
    /// It printed no substitute.
    #[error("the hook printed no substitute (want a JSON line like {{\"address\": \"10.0.0.9\"}}): {0}")]
    Output(String),
    /// veerd refused the substitute.
    #[error("the substitute was refused: {0}")]
    Refused(String),
    /// It did not pass its checks in time.
    #[error("the substitute {name} was not up within {within:?}")]
    NotUp {
        /// Its name.
        name: String,
        /// `up_within`.
        within: Duration,
    },
}

/// Parses the hook's stdout: its last non-empty line.
pub fn parse_substitute(stdout: &[String]) -> Result<Substitute, ReplaceError> {
    let line = stdout.iter().rev().find(|l| !l.trim().is_empty()).ok_or_else(|| ReplaceError::Output("none".into()))?;
    serde_json::from_str(line.trim()).map_err(|e| ReplaceError::Output(format!("{line:?}: {e}")))
}

/// Runs the hook once for `service`/`backend` (at `address`).
pub async fn run_hook(
    service: &str,
    backend: &str,
    address: &str,
    cfg: &ReplaceConfig,
) -> Result<Substitute, ReplaceError> {
    let vars = [("address", address.to_string()), ("name", backend.to_string()), ("service", service.to_string())];
    let env = [
        ("VEER_SERVICE", service.to_string()),
        ("VEER_BACKEND", backend.to_string()),
        ("VEER_ADDRESS", address.to_string()),
    ];
    let label = format!("{service}/{backend} replace");
    let spec = CommandSpec {
        argv: &cfg.command,
        vars: &vars,
        env: &env,
        timeout: cfg.timeout,
        label: &label,
        output: Output::Capture,
        // The hook starts the substitute: whatever it leaves running stays.
        reap_group: false,
    };
    let out = runner::run(&spec).await?;
    if !out.status.success() {
        return Err(ReplaceError::Failed {
            status: runner::describe(&out.status),
            stderr: out.stderr.last().map(|l| format!(": {l}")).unwrap_or_default(),
        });
    }
    parse_substitute(&out.stdout)
}

/// Where a backend's replacement stands.
#[derive(Debug)]
pub enum ReplaceState {
    /// The hook runs (attempt `attempt`).
    Running {
        /// The task running it.
        task: tokio::task::JoinHandle<()>,
        /// 1, 2, ...
        attempt: u32,
    },
    /// The substitute was added; it must pass its checks by `deadline`.
    Waiting {
        /// Its name.
        substitute: String,
        /// When it is given up.
        deadline: Instant,
        /// The attempt that made it.
        attempt: u32,
    },
    /// Attempt `attempt` failed; the next runs at `until`.
    Backoff {
        /// When the next attempt may run.
        until: Instant,
        /// The failed attempt.
        attempt: u32,
        /// Why it failed.
        error: String,
    },
}

impl ReplaceState {
    /// For status and `veerctl backends`.
    pub fn describe(&self, now: Instant) -> String {
        match self {
            ReplaceState::Running { attempt, .. } => format!("replacing (attempt {attempt}: hook running)"),
            ReplaceState::Waiting { substitute, attempt, .. } => {
                format!("replacing (attempt {attempt}: waiting for {substitute} to pass its checks)")
            }
            ReplaceState::Backoff { until, attempt, error } => format!(
                "replacing (attempt {attempt} failed: {error}; next in {:.0?})",
                until.saturating_duration_since(now)
            ),
        }
    }

    /// The number of the attempt it is at (or last made).
    pub fn attempt(&self) -> u32 {
        match self {
            ReplaceState::Running { attempt, .. }
            | ReplaceState::Waiting { attempt, .. }
            | ReplaceState::Backoff { attempt, .. } => *attempt,
        }
    }
}

impl Drop for ReplaceState {
    fn drop(&mut self) {
        if let ReplaceState::Running { task, .. } = self {
            task.abort();
        }
    }
}

/// The wait after failed attempt `attempt` (1, 2, ...).
pub fn backoff(cfg: &ReplaceConfig, attempt: u32) -> Duration {
    cfg.backoff.saturating_mul(1u32 << attempt.saturating_sub(1).min(16)).min(cfg.max_backoff)
}

/// A finished hook run, for the daemon's loop.
#[derive(Debug)]
pub struct HookDone {
    /// Service name.
    pub service: String,
    /// The dead backend's name.
    pub backend: String,
    /// The attempt.
    pub attempt: u32,
    /// The substitute, or why there is none.
    pub result: Result<Substitute, String>,
}

// ---- veerd's side: when hooks run, and what their substitutes become.

use tracing::{error, info, warn};

use super::{model::Admin, Daemon};

impl Daemon {
    /// Every second: starts the hooks that are due, retries after backoff,
    /// and gives up substitutes that did not come up in time.
    pub(super) fn replace_tick(&mut self) {
        // In a fleet with etcd, only the leader replaces.
        if self.fleet.as_ref().is_some_and(|f| !f.is_leader()) {
            return;
        }
        let now = Instant::now();
        for i in 0..self.services.len() {
            let Some(cfg) = self.services[i].cfg.replace.clone() else { continue };
            let service = self.services[i].cfg.name.clone();
            let substitutes: Vec<String> = self.services[i]
                .backends
                .iter()
                .filter_map(|b| match &b.replace {
                    Some(ReplaceState::Waiting { substitute, .. }) => Some(substitute.clone()),
                    _ => None,
                })
                .collect();
            let mut give_up: Vec<(String, String, u32)> = Vec::new();
            for b in &mut self.services[i].backends {
                if b.healthy || b.admin != Admin::Enabled {
                    // Back, or taken out by an operator: no replacement.
                    if b.replace.take().is_some() {
                        info!(%service, backend = %b.cfg.name, "replacement cancelled: the backend is back or taken out");
                    }
                    continue;
                }
                let next = match &b.replace {
                    None if substitutes.contains(&b.cfg.name) => None,
                    None => {
                        let gave_up = b.cfg.restart.is_some() && b.recovery.as_ref().is_some_and(|h| h.is_finished());
                        let long = b.down_since.is_some_and(|t| now.duration_since(t) >= cfg.after);
                        (gave_up || long).then_some(1)
                    }
                    Some(ReplaceState::Backoff { until, attempt, .. }) if now >= *until => Some(attempt + 1),
                    Some(ReplaceState::Waiting { substitute, deadline, attempt }) if now >= *deadline => {
                        give_up.push((b.cfg.name.clone(), substitute.clone(), *attempt));
                        None
                    }
                    _ => None,
                };
                if let Some(attempt) = next {
                    let gate = match self
                        .fleet
                        .as_ref()
                        .map(|f| f.action_gate(&format!("replace/{service}/{}", b.cfg.name)))
                    {
                        None => None,
                        Some(Some(g)) => Some(g),
                        // In a fleet but out of session: fail static, no hook.
                        Some(None) => continue,
                    };
                    let (tx, cfg) = (self.replace_tx.clone(), cfg.clone());
                    let (svc, name, address) = (service.clone(), b.cfg.name.clone(), b.cfg.address.to_string());
                    warn!(service = %svc, backend = %name, attempt, command = ?cfg.command, "backend down too long: running the replace hook");
                    let task = tokio::spawn(async move {
                        // In a fleet: attempt N runs once, by a leader whose claim commits.
                        let claimed = match gate {
                            None => Ok(()),
                            Some(mut g) => match g.claim(Some(u64::from(attempt)), std::time::Duration::ZERO).await {
                                Ok(r) => r.map(drop).map_err(|why| format!("not run here: {why}")),
                                Err(e) => Err(format!("not run: etcd failed: {e:#}")),
                            },
                        };
                        let result = match claimed {
                            Ok(()) => run_hook(&svc, &name, &address, &cfg).await.map_err(|e| e.to_string()),
                            Err(e) => Err(e),
                        };
                        let _ = tx.send(HookDone { service: svc, backend: name, attempt, result });
                    });
                    b.replace = Some(ReplaceState::Running { task, attempt });
                }
            }
            for (dead, substitute, attempt) in give_up {
                let e = ReplaceError::NotUp { name: substitute.clone(), within: cfg.up_within };
                error!(%service, backend = %dead, error = %e, "replacement failed; removing the substitute");
                if let Err(e) = self.remove_backend(&service, &substitute) {
                    error!(%service, backend = %substitute, error = %e, "removing the substitute failed");
                }
                self.replace_failed(&service, &dead, attempt, e.to_string(), &cfg);
            }
        }
    }

    /// A hook finished: its substitute is added (and waited for), or the
    /// attempt failed.
    pub(super) fn on_hook_done(&mut self, done: HookDone) {
        let HookDone { service, backend, attempt, result } = done;
        let Some(i) = self.services.iter().position(|s| s.cfg.name == service) else { return };
        let Some(cfg) = self.services[i].cfg.replace.clone() else { return };
        let port = self.services[i].cfg.port;
        let Some(b) = self.services[i].backends.iter().find(|b| b.cfg.name == backend) else { return };
        if !matches!(&b.replace, Some(ReplaceState::Running { attempt: a, .. }) if *a == attempt) {
            return;
        }
        let (weight, backup) = (b.cfg.weight, b.cfg.backup);
        let sub = match result {
            Ok(s) if s.port.is_some_and(|p| p != port) => {
                Err(ReplaceError::Refused(format!("port {} is not the service's {port}", s.port.unwrap_or(0)))
                    .to_string())
            }
            r => r,
        };
        let added = sub.and_then(|s| {
            let name = s.name.clone().unwrap_or_else(|| format!("{backend}-r{attempt}"));
            let cfg = crate::config::BackendConfig::runtime(
                name.clone(),
                s.address,
                s.weight.unwrap_or(weight),
                s.mac,
                backup,
            );
            self.add_backend(&service, cfg)
                .map(|_| (name, s.address))
                .map_err(|e| ReplaceError::Refused(e.to_string()).to_string())
        });
        match added {
            Ok((name, address)) => {
                info!(%service, backend = %backend, substitute = %name, %address, attempt, "replace hook provisioned a substitute; waiting for it to pass its checks");
                if let Some(b) = self.services[i].backends.iter_mut().find(|b| b.cfg.name == backend) {
                    b.replace = Some(ReplaceState::Waiting {
                        substitute: name,
                        deadline: Instant::now() + cfg.up_within,
                        attempt,
                    });
                }
            }
            Err(e) => self.replace_failed(&service, &backend, attempt, e, &cfg),
        }
    }

    fn replace_failed(&mut self, service: &str, backend: &str, attempt: u32, error: String, cfg: &ReplaceConfig) {
        self.metrics.replacements[1] += 1;
        let wait = backoff(cfg, attempt);
        warn!(%service, %backend, attempt, %error, retry_in = ?wait, "replace attempt failed");
        let Some(s) = self.services.iter_mut().find(|s| s.cfg.name == service) else { return };
        if let Some(b) = s.backends.iter_mut().find(|b| b.cfg.name == backend) {
            b.replace = Some(ReplaceState::Backoff { until: Instant::now() + wait, attempt, error });
        }
    }

    /// `id` of service `i` came up: if it is a substitute, the backend it
    /// replaces is retired.
    pub(super) fn on_substitute_up(&mut self, i: usize, id: u32) {
        let Some(name) = self.services[i].backend(id).map(|b| b.cfg.name.clone()) else { return };
        let dead = self.services[i].backends.iter().find_map(|b| match &b.replace {
            Some(ReplaceState::Waiting { substitute, .. }) if *substitute == name => Some(b.cfg.name.clone()),
            _ => None,
        });
        let Some(dead) = dead else { return };
        let service = self.services[i].cfg.name.clone();
        self.metrics.replacements[0] += 1;
        match self.remove_backend(&service, &dead) {
            Ok(_) => {
                info!(%service, backend = %dead, substitute = %name, "backend replaced: its substitute passed its checks, the dead backend is retired")
            }
            Err(e) => error!(%service, backend = %dead, error = %e, "retiring the replaced backend failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_json_line_is_the_substitute() {
        let out = vec!["creating namespace".into(), r#"{"address": "10.0.0.9", "name": "b1-new"}"#.into(), "".into()];
        let s = parse_substitute(&out).unwrap();
        assert_eq!((s.address.to_string(), s.name.as_deref()), ("10.0.0.9".into(), Some("b1-new")));
        assert!(parse_substitute(&["no json".into()]).is_err());
        assert!(parse_substitute(&[]).is_err());
        assert!(parse_substitute(&[r#"{"address": "10.0.0.9", "bogus": 1}"#.into()]).is_err());
        assert_eq!(parse_substitute(&[r#"{"address": "::1", "port": 80}"#.into()]).unwrap().port, Some(80));
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let cfg = ReplaceConfig {
            command: vec!["x".into()],
            after: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            up_within: Duration::from_secs(1),
            backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(10),
        };
        let waits: Vec<u64> = (1..=5).map(|a| backoff(&cfg, a).as_secs()).collect();
        assert_eq!(waits, [2, 4, 8, 10, 10]);
    }
}
