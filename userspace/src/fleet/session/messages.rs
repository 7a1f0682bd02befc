//! What veerd and the session task say to each other: [`FleetCmd`]s in,
//! [`FleetEvent`]s out.

use etcd_client::Client;

use crate::fleet::{config::ConfigRecord, fence::Fence, view::Change};

/// What veerd asks of the session.
#[derive(Debug)]
pub enum FleetCmd {
    /// This node's verdict on a backend (kept, and written again by every
    /// new session).
    Verdict {
        /// The service.
        service: String,
        /// The backend.
        backend: String,
        /// Whether this node's probes see it up.
        up: bool,
    },
    /// The backend is gone from this node's config: its verdict goes.
    Forget {
        /// The service.
        service: String,
        /// The backend.
        backend: String,
    },
    /// Operator changes, all or none, each only if its key is still at the
    /// revision the change was based on.
    Publish(Vec<OpWrite>),
    /// What this node runs of the fleet's config ([`RunningRecord`], JSON;
    /// kept, and written again by every new session).
    ///
    /// [`RunningRecord`]: crate::fleet::config::RunningRecord
    Running(String),
    /// A new revision of the fleet's config, only if the current one is
    /// still the one written at `base_rev` (0: none). Reported as a
    /// [`FleetEvent::Published`] of [`CONFIG_KEY`].
    PushConfig {
        /// The record.
        record: ConfigRecord,
        /// The etcd revision that wrote the current record.
        base_rev: i64,
        /// What its [`FleetEvent::Published`] names it (starts with
        /// [`CONFIG_KEY`]; one per push, so two pushes are told apart).
        tag: String,
    },
}

/// What a config push's tag starts with (see [`FleetCmd::PushConfig`]).
pub const CONFIG_KEY: &str = "config/current";

/// One operator change to publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpWrite {
    /// Key relative to `P/ops/` ([`crate::fleet::ops`]).
    pub key: String,
    /// The new value; `None` deletes.
    pub value: Option<String>,
    /// The key's mod revision the change was made on (0: it did not exist).
    pub base_rev: i64,
}

/// What the session tells veerd.
pub enum FleetEvent {
    /// A session began: the fleet's whole state at `revision`.
    Synced {
        /// Every key under the prefix, as puts.
        changes: Vec<Change>,
        /// The snapshot's revision.
        revision: i64,
        /// The session's client (for the leader's fenced writes).
        client: Box<Client>,
        /// The endpoint it uses.
        endpoint: String,
    },
    /// Changes after the last revision seen, in order.
    Changed {
        /// The changes.
        changes: Vec<Change>,
        /// The revision they bring the view to.
        revision: i64,
    },
    /// The session ended: the view is frozen until the next [`FleetEvent::Synced`].
    Lost(String),
    /// This node became leader (`Some`), or no longer is.
    Leader(Option<Fence>),
    /// What became of a [`FleetCmd::Publish`].
    Published {
        /// Its keys.
        keys: Vec<String>,
        /// Committed, lost a race, or not written.
        outcome: PublishOutcome,
    },
}

/// What became of a [`FleetCmd::Publish`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PublishOutcome {
    /// Every write committed.
    Committed {
        /// The etcd revision of the commit (each key's new mod revision).
        revision: i64,
    },
    /// Another node changed one of the keys first: nothing was written.
    Conflict {
        /// Each key with the value that won (`None`: the key is absent).
        won: Vec<(String, Option<String>)>,
    },
    /// Nothing was written: no session, or etcd did not answer (the next
    /// session sends it again).
    Failed(String),
}
