//! Replacing a backend whose node is gone: the service's `replace` hook
//! provisions a substitute, veerd adds it, waits for it to pass its checks,
//! then retires the dead backend. Both changes are runtime changes, kept
//! like `add-backend` and `remove-backend` (the daemon makes them). A
//! failed attempt is retried with backoff; one attempt per backend at a time.

use std::time::Instant;

use tracing::{error, info, warn};

use tokio::sync::mpsc;

use super::coordination::{Coordination, Gate};
use crate::{
    config::ReplaceConfig,
    daemon::{
        model::{BackendRt, ReplaceState, Services},
        observe::RecoveryCounters,
    },
    hooks::{
        self,
        replace::{run_hook, ReplaceError, Substitute},
    },
    overrides::AddedBackend,
    overrides::Admin,
};

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

/// A substitute the hook provisioned, for the daemon to add.
#[derive(Debug)]
pub struct Provisioned {
    /// Service name.
    pub service: String,
    /// The dead backend's name.
    pub backend: String,
    /// The attempt.
    pub attempt: u32,
    /// The substitute as a backend, or why there is none.
    pub result: Result<AddedBackend, String>,
}

/// A substitute that did not pass its checks in time, for the daemon to remove.
#[derive(Debug)]
pub struct Expired {
    /// Service name.
    pub service: String,
    /// The dead backend's name.
    pub dead: String,
    /// The substitute's name.
    pub substitute: String,
    /// The attempt that made it.
    pub attempt: u32,
}

/// Runs the replace hooks; they report back on its channel.
pub struct Replacer {
    hooks: mpsc::UnboundedSender<HookDone>,
}

impl Replacer {
    /// A replacer, and the channel finished hooks come back on.
    pub fn new() -> (Self, mpsc::UnboundedReceiver<HookDone>) {
        let (hooks, rx) = mpsc::unbounded_channel();
        (Self { hooks }, rx)
    }

    /// Every second: starts the hooks that are due and retries after
    /// backoff. Returns the substitutes that did not come up in time.
    pub fn tick(&mut self, services: &mut Services, co: &dyn Coordination) -> Vec<Expired> {
        // In a fleet with etcd, only the leader replaces.
        if !co.leads() {
            return Vec::new();
        }
        let now = Instant::now();
        let mut expired = Vec::new();
        for s in services.iter_mut() {
            let Some(cfg) = s.cfg.replace.clone() else { continue };
            let service = s.cfg.name.clone();
            let substitutes: Vec<String> = s
                .backends
                .iter()
                .filter_map(|b| match &b.replace {
                    Some(ReplaceState::Waiting { substitute, .. }) => Some(substitute.clone()),
                    _ => None,
                })
                .collect();
            for b in &mut s.backends {
                let due = next_attempt(&service, b, &cfg, &substitutes, now, &mut expired);
                if let Some(attempt) = due {
                    self.start_hook(&service, b, &cfg, attempt, co);
                }
            }
        }
        expired
    }

    /// Runs attempt `attempt` of `b`'s replace hook on a task of its own.
    fn start_hook(&self, service: &str, b: &mut BackendRt, cfg: &ReplaceConfig, attempt: u32, co: &dyn Coordination) {
        let gate = match co.gate(&format!("replace/{service}/{}", b.cfg.name)) {
            Gate::Open => None,
            Gate::Claim(g) => Some(*g),
            // In a fleet but out of session: fail static, no hook.
            Gate::Shut => return,
        };
        let (tx, cfg) = (self.hooks.clone(), cfg.clone());
        let (svc, name, address) = (service.to_string(), b.cfg.name.clone(), b.cfg.address.to_string());
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

/// A hook finished: its substitute, as a backend to add, or why the
/// attempt failed. `None` if the hook's backend or attempt is gone.
pub fn hook_done(services: &mut Services, done: HookDone) -> Option<Provisioned> {
    let HookDone { service, backend, attempt, result } = done;
    let i = services.named(&service).ok()?;
    let s = &services[i];
    let port = s.cfg.port;
    s.cfg.replace.as_ref()?;
    let b = s.backends.iter().find(|b| b.cfg.name == backend)?;
    if !matches!(&b.replace, Some(ReplaceState::Running { attempt: a, .. }) if *a == attempt) {
        return None;
    }
    let (weight, backup) = (b.cfg.weight, b.cfg.backup);
    let result = result.and_then(|sub| {
        if let Some(p) = sub.port.filter(|p| *p != port) {
            return Err(ReplaceError::Refused(format!("port {p} is not the service's {port}")).to_string());
        }
        let name = sub.name.clone().unwrap_or_else(|| format!("{backend}-r{attempt}"));
        Ok(AddedBackend { name, address: sub.address, weight: sub.weight.unwrap_or(weight), backup, mac: sub.mac })
    });
    Some(Provisioned { service, backend, attempt, result })
}

/// The daemon added the substitute (or could not): wait for it to pass
/// its checks, or retry after backoff.
pub fn provisioned(
    counters: &mut RecoveryCounters,
    services: &mut Services,
    p: Provisioned,
    added: Result<(), String>,
) {
    let Some(cfg) = services.named(&p.service).ok().and_then(|i| services[i].cfg.replace.clone()) else { return };
    let sub = p.result.and_then(|b| added.map(|()| b));
    match sub {
        Ok(b) => {
            info!(service = %p.service, backend = %p.backend, substitute = %b.name, address = %b.address, attempt = p.attempt, "replace hook provisioned a substitute; waiting for it to pass its checks");
            if let Ok((i, j)) = services.find(&p.service, &p.backend) {
                services[i].backends[j].replace = Some(ReplaceState::Waiting {
                    substitute: b.name,
                    deadline: Instant::now() + cfg.up_within,
                    attempt: p.attempt,
                });
            }
        }
        Err(e) => failed(counters, services, &p.service, &p.backend, p.attempt, e, &cfg),
    }
}

/// The daemon removed (or failed to remove) a substitute that did not
/// come up in time: the attempt failed.
pub fn expired(counters: &mut RecoveryCounters, services: &mut Services, e: Expired) {
    let Some(cfg) = services.named(&e.service).ok().and_then(|i| services[i].cfg.replace.clone()) else { return };
    let err = ReplaceError::NotUp { name: e.substitute, within: cfg.up_within };
    failed(counters, services, &e.service, &e.dead, e.attempt, err.to_string(), &cfg);
}

/// Attempt `attempt` of `service`/`backend`'s replacement failed: the next
/// runs after backoff.
fn failed(
    counters: &mut RecoveryCounters,
    services: &mut Services,
    service: &str,
    backend: &str,
    attempt: u32,
    error: String,
    cfg: &ReplaceConfig,
) {
    counters.replacements[1] += 1;
    let wait = hooks::backoff(cfg.backoff, cfg.max_backoff, attempt);
    warn!(%service, %backend, attempt, %error, retry_in = ?wait, "replace attempt failed");
    if let Ok((i, j)) = services.find(service, backend) {
        services[i].backends[j].replace = Some(ReplaceState::Backoff { until: Instant::now() + wait, attempt, error });
    }
}

/// Backend `id` of service `i` came up: if it is a substitute, the name
/// of the backend it replaces, which the daemon retires.
pub fn retires(counters: &mut RecoveryCounters, services: &Services, i: usize, id: u32) -> Option<String> {
    let name = &services[i].backend(id)?.cfg.name;
    let dead = services[i].backends.iter().find_map(|b| match &b.replace {
        Some(ReplaceState::Waiting { substitute, .. }) if substitute == name => Some(b.cfg.name.clone()),
        _ => None,
    })?;
    counters.replacements[0] += 1;
    Some(dead)
}

/// The attempt of `b`'s replacement due now, if one is; a substitute that
/// is late goes to `expired`.
fn next_attempt(
    service: &str,
    b: &mut BackendRt,
    cfg: &ReplaceConfig,
    substitutes: &[String],
    now: Instant,
    expired: &mut Vec<Expired>,
) -> Option<u32> {
    if b.healthy || b.admin != Admin::Enabled {
        // Back, or taken out by an operator: no replacement.
        if b.replace.take().is_some() {
            info!(%service, backend = %b.cfg.name, "replacement cancelled: the backend is back or taken out");
        }
        return None;
    }
    match &b.replace {
        // A substitute is not replaced in turn, nor a backend whose health
        // the operator forced.
        None if substitutes.contains(&b.cfg.name) || b.forced.is_some() => None,
        None => {
            let gave_up = b.cfg.restart.is_some() && b.recovery.as_ref().is_some_and(|h| h.is_finished());
            let long = b.down_since.is_some_and(|t| now.duration_since(t) >= cfg.after);
            (gave_up || long).then_some(1)
        }
        Some(ReplaceState::Backoff { until, attempt, .. }) if now >= *until => Some(attempt + 1),
        Some(ReplaceState::Waiting { substitute, deadline, attempt }) if now >= *deadline => {
            let e = ReplaceError::NotUp { name: substitute.clone(), within: cfg.up_within };
            error!(%service, backend = %b.cfg.name, error = %e, "replacement failed; removing the substitute");
            expired.push(Expired {
                service: service.to_string(),
                dead: b.cfg.name.clone(),
                substitute: substitute.clone(),
                attempt: *attempt,
            });
            None
        }
        _ => None,
    }
}
