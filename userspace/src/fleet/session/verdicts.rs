//! This node's verdicts on its backends, as the session keeps them across
//! sessions and writes them to etcd.

use std::collections::BTreeMap;

/// This node's verdicts, written again by every session.
pub(super) type Verdicts = BTreeMap<(String, String), bool>;

/// A verdict as written to etcd.
pub(super) fn word(up: bool) -> &'static str {
    if up {
        "up"
    } else {
        "down"
    }
}
