//! Who may run a recovery action: this node alone, or the fleet's leader
//! once per fleet. Recovery asks through [`Coordination`]; the daemon's
//! fleet node answers in a fleet, [`Standalone`] otherwise.

use std::sync::{atomic::AtomicU64, Arc};

use crate::{
    daemon::model::{BackendRt, ServiceRt},
    fleet::{claim::ActionGate, restart::RestartJob},
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
