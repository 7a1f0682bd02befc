//! What this node says under its lease (its verdicts on its backends, the
//! fleet config it runs), as the session keeps it across sessions and
//! writes it to etcd.

use std::collections::BTreeMap;

/// What this node says, written again by every session.
#[derive(Debug, Default)]
pub(super) struct Verdicts {
    /// (service, backend) -> up.
    pub(super) by_backend: BTreeMap<(String, String), bool>,
    /// The fleet config it runs ([`crate::fleet::config::RunningRecord`], JSON).
    pub(super) running: Option<String>,
}

/// A verdict as written to etcd.
pub(super) fn word(up: bool) -> &'static str {
    if up {
        "up"
    } else {
        "down"
    }
}
