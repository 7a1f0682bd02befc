//! Recovery: what veerd does about a backend that stays down. Its restart
//! command (a loop with backoff while it is down), its service's replace
//! hook (a substitute, once it has been down long enough), and the
//! service's load-driven scaling hooks. The commands themselves are
//! [`crate::hooks`]'; who may run them (this node alone, or the fleet's
//! leader once per fleet) is asked through [`Coordination`], so recovery
//! knows nothing of the fleet's machinery.

mod coordination;
mod replace;
mod scale;

use std::sync::{atomic::AtomicU64, Arc};

use tokio::sync::mpsc;

pub use coordination::{Coordination, Gate, Restarts, Standalone};
pub use replace::{Expired, HookDone, Provisioned};
pub use scale::ScaleState;

use replace::Replacer;
use scale::Scaler;

use super::{
    model::{BackendRt, Services},
    observe::RecoveryCounters,
};
use crate::{dataplane::Dataplane, hooks, overrides::Admin};

/// Recovery's state: the replace hooks' channel and the scaling windows.
pub struct Recovery {
    replacer: Replacer,
    scaler: Scaler,
    /// What it counts.
    pub counters: RecoveryCounters,
}

impl Recovery {
    /// Recovery with nothing running, and the channel finished hooks come back on.
    pub fn new() -> (Self, mpsc::UnboundedReceiver<HookDone>) {
        let (replacer, rx) = Replacer::new();
        (Self { replacer, scaler: Scaler::default(), counters: RecoveryCounters::default() }, rx)
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

impl Recovery {
    /// Every second: starts the replace hooks that are due. Returns the
    /// substitutes that did not come up in time, for the daemon to remove.
    pub fn replace_tick(&mut self, services: &mut Services, co: &dyn Coordination) -> Vec<Expired> {
        self.replacer.tick(services, co)
    }

    /// A hook finished: its substitute, for the daemon to add.
    pub fn hook_done(&mut self, services: &mut Services, done: HookDone) -> Option<Provisioned> {
        replace::hook_done(services, done)
    }

    /// The daemon added the substitute (or could not).
    pub fn provisioned(&mut self, services: &mut Services, p: Provisioned, added: Result<(), String>) {
        replace::provisioned(&mut self.counters, services, p, added);
    }

    /// The daemon removed a substitute that did not come up in time.
    pub fn expired(&mut self, services: &mut Services, e: Expired) {
        replace::expired(&mut self.counters, services, e);
    }

    /// Backend `id` of service `i` came up: the backend it replaces, if any.
    pub fn retires(&mut self, services: &Services, i: usize, id: u32) -> Option<String> {
        replace::retires(&mut self.counters, services, i, id)
    }

    /// Feeds each service's load to its scaling hooks.
    pub fn scale_tick(&mut self, services: &Services, dp: &Dataplane, co: &dyn Coordination) {
        self.scaler.tick(&mut self.counters, services, dp, co);
    }
}

/// The local restart loop of `b`: started while wanted, stopped when not.
fn follow_locally(service: String, b: &mut BackendRt, attempts: Arc<AtomicU64>) {
    // A health the operator forced down is not a failure to recover from.
    let wanted = !b.healthy && b.admin == Admin::Enabled && b.forced.is_none() && b.cfg.restart.is_some();
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
