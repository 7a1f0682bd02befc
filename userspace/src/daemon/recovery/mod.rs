//! Recovery: what veerd does about a backend that stays down. Its restart
//! command (a loop with backoff while it is down), its service's replace
//! hook (a substitute, once it has been down long enough), and the
//! service's load-driven scaling hooks. The commands themselves are
//! [`crate::hooks`]'; who may run them (this node alone, or the fleet's
//! leader once per fleet) is asked through [`Coordination`], so recovery
//! knows nothing of the fleet's machinery.

mod replace;
mod scale;

use std::{
    collections::HashMap,
    sync::{atomic::AtomicU64, Arc},
};

use tokio::sync::mpsc;

pub use replace::{Expired, HookDone, Provisioned};
pub use scale::ScaleState;

use super::{
    model::{BackendRt, ServiceRt, Services},
    observe::RecoveryCounters,
};
use crate::{
    fleet::{claim::ActionGate, restart::RestartJob},
    hooks,
    overrides::Admin,
};

/// May a once-per-fleet action run here?
pub enum Gate {
    /// Yes: there is no fleet.
    Open,
    /// If this claim commits (the fleet's leader, in session).
    Claim(Box<ActionGate>),
    /// No: in a fleet but not its leader in session (fail static).
    Shut,
}

/// Who restarts a backend.
pub enum Restarts {
    /// This node's own loop, on its own probes.
    Local,
    /// The fleet's leader, on the fleet's verdict: the job, if this node
    /// should run it now.
    Fleet(Option<Box<RestartJob>>),
}

/// How recovery actions are coordinated: by this node alone
/// ([`Standalone`]), or once per fleet (the daemon's fleet node).
pub trait Coordination {
    /// Whether this node runs the hooks: always alone; the leader in a fleet.
    fn leads(&self) -> bool;
    /// The gate action `what` passes before it runs.
    fn gate(&self, what: &str) -> Gate;
    /// Who restarts backend `b` of service `s` (`attempts` counts runs here).
    fn restarts(&self, s: &ServiceRt, b: &BackendRt, attempts: Arc<AtomicU64>) -> Restarts;
}

/// A node on its own: it runs every action itself.
pub struct Standalone;

impl Coordination for Standalone {
    fn leads(&self) -> bool {
        true
    }

    fn gate(&self, _: &str) -> Gate {
        Gate::Open
    }

    fn restarts(&self, _: &ServiceRt, _: &BackendRt, _: Arc<AtomicU64>) -> Restarts {
        Restarts::Local
    }
}

/// Recovery's state: the replace hooks' channel and the scaling windows.
pub struct Recovery {
    hooks: mpsc::UnboundedSender<HookDone>,
    scale: HashMap<String, ScaleState>,
    /// What it counts.
    pub counters: RecoveryCounters,
}

impl Recovery {
    /// Recovery with nothing running, and the channel finished hooks come back on.
    pub fn new() -> (Self, mpsc::UnboundedReceiver<HookDone>) {
        let (hooks, rx) = mpsc::unbounded_channel();
        (Self { hooks, scale: HashMap::new(), counters: RecoveryCounters::default() }, rx)
    }

    /// Runs backend `id`'s restarts exactly while they are wanted: alone,
    /// while it is down, enabled by the operator (not drained, disabled or
    /// under a rollout) and has a restart command; in a fleet, as the
    /// fleet's leader says.
    pub fn follow(&mut self, services: &mut Services, i: usize, id: u32, co: &dyn Coordination) {
        let attempts = self.counters.restarts_of(id);
        let s = &services[i];
        let Some(b) = s.backend(id) else { return };
        let restarts = co.restarts(s, b, attempts.clone());
        let service = s.cfg.name.clone();
        let Some(b) = services[i].backend_mut(id) else { return };
        let running = b.recovery.as_ref().is_some_and(|r| !r.is_finished());
        match restarts {
            Restarts::Fleet(Some(job)) if !running => b.recovery = Some(tokio::spawn(job.run())),
            Restarts::Fleet(None) if running => stop(b),
            Restarts::Fleet(_) => {}
            Restarts::Local => follow_locally(service, b, attempts),
        }
    }
}

/// The local restart loop of `b`: started while wanted, stopped when not.
fn follow_locally(service: String, b: &mut BackendRt, attempts: Arc<AtomicU64>) {
    let wanted = !b.healthy && b.admin == Admin::Enabled && b.cfg.restart.is_some();
    match (&b.recovery, wanted, b.cfg.restart.clone()) {
        (None, true, Some(r)) => {
            let (name, addr) = (b.cfg.name.clone(), b.cfg.address.to_string());
            b.recovery = Some(tokio::spawn(hooks::restart::restart_loop(service, name, addr, r, attempts)));
        }
        (Some(_), false, _) => stop(b),
        _ => {}
    }
}

/// Stops `b`'s restarts (it came up).
pub fn stop(b: &mut BackendRt) {
    if let Some(r) = b.recovery.take() {
        r.abort();
    }
}
