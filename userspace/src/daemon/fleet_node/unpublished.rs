//! This node's operator changes on their way to etcd: each key's wanted
//! value, the revision it was based on, and what is in flight.

use std::collections::BTreeMap;

use tracing::warn;

use crate::fleet::{OpWrite, PublishOutcome};

/// An operator change made here, not yet committed to etcd.
#[derive(Debug, Clone)]
struct Pending {
    /// The value wanted (`None`: the key goes).
    value: Option<String>,
    /// The key's revision the change was made on.
    base_rev: i64,
    /// The value in flight, if a publish is.
    sent: Option<Option<String>>,
}

/// The changes not yet committed, by key (relative to `P/ops/`).
#[derive(Debug, Default)]
pub struct Unpublished {
    changes: BTreeMap<String, Pending>,
}

impl Unpublished {
    /// How many keys wait.
    pub fn len(&self) -> usize {
        self.changes.len()
    }

    /// Whether `key` waits.
    pub fn contains(&self, key: &str) -> bool {
        self.changes.contains_key(key)
    }

    /// Wants `value` for `key` (made on its revision `base_rev`, unless
    /// a change of it already waits).
    pub fn set(&mut self, key: String, value: Option<String>, base_rev: i64) {
        self.changes.entry(key).or_insert(Pending { value: None, base_rev, sent: None }).value = value;
    }

    /// Seeds an empty fleet with `kvs` (keys that do not wait already).
    pub fn seed(&mut self, kvs: BTreeMap<String, String>) {
        for (k, v) in kvs {
            self.changes.entry(k).or_insert(Pending { value: Some(v), base_rev: 0, sent: None });
        }
    }

    /// `kvs` with the waiting changes on top.
    pub fn overlay(&self, kvs: &mut BTreeMap<String, String>) {
        for (k, p) in &self.changes {
            match &p.value {
                Some(v) => kvs.insert(k.clone(), v.clone()),
                None => kvs.remove(k),
            };
        }
    }

    /// A new session: nothing is in flight any more.
    pub fn resend_all(&mut self) {
        for p in self.changes.values_mut() {
            p.sent = None;
        }
    }

    /// The changes not in flight, now marked in flight.
    pub fn unsent(&mut self) -> Vec<OpWrite> {
        let mut writes = Vec::new();
        for (k, p) in self.changes.iter_mut().filter(|(_, p)| p.sent.is_none()) {
            p.sent = Some(p.value.clone());
            writes.push(OpWrite { key: k.clone(), value: p.value.clone(), base_rev: p.base_rev });
        }
        writes
    }

    /// A publish ended: committed changes leave, lost races give way to
    /// the fleet's value, failed ones wait for the next session.
    pub fn published(&mut self, keys: &[String], outcome: &PublishOutcome) {
        for k in keys {
            let Some(p) = self.changes.get_mut(k) else { continue };
            let sent = p.sent.take();
            match outcome {
                PublishOutcome::Committed { .. } if sent.as_ref() == Some(&p.value) => drop(self.changes.remove(k)),
                // Changed again while in flight: on top of what committed.
                PublishOutcome::Committed { revision } => p.base_rev = *revision,
                PublishOutcome::Conflict { .. } => {
                    warn!(key = %k, "fleet: an operator change lost a race (another node changed it first); the fleet's value applies");
                    self.changes.remove(k);
                }
                // Kept, sent again by the next session.
                PublishOutcome::Failed(_) => {}
            }
        }
    }
}
