//! The fleet's state as this node last saw it, and the fleet verdict.
//!
//! Every node applies the same stream of etcd changes in revision order, so
//! nodes that have seen the same revision compute the same verdicts, and
//! build the same rings.

use std::collections::{BTreeMap, BTreeSet};

use tracing::warn;

use super::{
    config::FleetConfigs,
    keys::{Key, Keys},
};

/// One change from etcd (a snapshot is a run of puts).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// `key` now holds `value`, as of `mod_rev`.
    Put {
        /// The full key.
        key: String,
        /// Its value.
        value: String,
        /// The revision that wrote it.
        mod_rev: i64,
    },
    /// `key` was deleted (or its lease lapsed).
    Delete {
        /// The full key.
        key: String,
    },
}

/// What a [`Change`] touched.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Touched {
    /// Nodes or verdicts: fleet verdicts may change.
    pub verdicts: bool,
    /// Operator changes.
    pub ops: bool,
    /// The fleet config's current revision.
    pub config: bool,
}

impl std::ops::BitOrAssign for Touched {
    fn bitor_assign(&mut self, o: Self) {
        self.verdicts |= o.verdicts;
        self.ops |= o.ops;
        self.config |= o.config;
    }
}

/// Live nodes' verdicts on one backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Live nodes that see it up.
    pub up: usize,
    /// Live nodes that see it down.
    pub down: usize,
    /// Live nodes.
    pub live: usize,
}

impl Tally {
    /// The fleet verdict after `prev`: down once more than half of the live
    /// nodes see it down, up once more than half see it up, otherwise
    /// unchanged. The dead band between is the hysteresis: one node that
    /// disagrees (its own path is broken, it just started) changes nothing,
    /// and a 2-node fleet changes only when both agree. `None` until a
    /// majority has spoken.
    pub fn verdict(self, prev: Option<bool>) -> Option<bool> {
        if self.down * 2 > self.live {
            Some(false)
        } else if self.up * 2 > self.live {
            Some(true)
        } else {
            prev
        }
    }
}

/// The fleet's shared state, from one session's snapshot and watch.
#[derive(Clone, Debug, Default)]
pub struct FleetView {
    /// The revision last applied.
    pub revision: i64,
    nodes: BTreeSet<String>,
    /// (service, backend) -> node -> up.
    verdicts: BTreeMap<(String, String), BTreeMap<String, bool>>,
    /// Operator changes by relative key: (value, mod revision).
    ops: BTreeMap<String, (String, i64)>,
    /// The fleet's config.
    configs: FleetConfigs,
}

impl FleetView {
    /// Applies one change.
    pub fn apply(&mut self, keys: &Keys, change: &Change) -> Touched {
        let (key, value) = match change {
            Change::Put { key, value, .. } => (key.as_str(), Some(value.as_str())),
            Change::Delete { key } => (key.as_str(), None),
        };
        match keys.parse(key) {
            Key::Node(n) => {
                match value {
                    Some(_) => self.nodes.insert(n.to_string()),
                    None => self.nodes.remove(n),
                };
                Touched { verdicts: true, ..Touched::default() }
            }
            Key::Verdict { service, backend, node } => {
                let k = (service.to_string(), backend.to_string());
                match value {
                    Some(v) => {
                        self.verdicts.entry(k).or_default().insert(node.to_string(), v == "up");
                    }
                    None => {
                        if let Some(m) = self.verdicts.get_mut(&k) {
                            m.remove(node);
                            if m.is_empty() {
                                self.verdicts.remove(&k);
                            }
                        }
                    }
                }
                Touched { verdicts: true, ..Touched::default() }
            }
            Key::Op(rel) => {
                match change {
                    Change::Put { value, mod_rev, .. } => {
                        drop(self.ops.insert(rel.to_string(), (value.clone(), *mod_rev)))
                    }
                    Change::Delete { .. } => drop(self.ops.remove(rel)),
                }
                Touched { ops: true, ..Touched::default() }
            }
            Key::Config(k) => {
                let mod_rev = match change {
                    Change::Put { mod_rev, .. } => *mod_rev,
                    Change::Delete { .. } => 0,
                };
                match self.configs.apply(k, value, mod_rev) {
                    Ok(config) => Touched { config, ..Touched::default() },
                    Err(e) => {
                        warn!(%key, error = %e, "fleet: a config record in etcd is unreadable; ignored");
                        Touched::default()
                    }
                }
            }
            Key::Other => Touched::default(),
        }
    }

    /// The live nodes' verdicts on `service/backend`.
    pub fn tally(&self, service: &str, backend: &str) -> Tally {
        let live = self.nodes.len();
        let mut t = Tally { live, ..Tally::default() };
        if let Some(m) = self.verdicts.get(&(service.to_string(), backend.to_string())) {
            for (node, up) in m {
                if !self.nodes.contains(node) {
                    continue;
                }
                if *up {
                    t.up += 1;
                } else {
                    t.down += 1;
                }
            }
        }
        t
    }

    /// The live nodes.
    pub fn nodes(&self) -> &BTreeSet<String> {
        &self.nodes
    }

    /// Operator changes by relative key, with the revision that wrote each.
    pub fn ops(&self) -> &BTreeMap<String, (String, i64)> {
        &self.ops
    }

    /// The fleet's config: current revision, history, what nodes run.
    pub fn configs(&self) -> &FleetConfigs {
        &self.configs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: String, value: &str, rev: i64) -> Change {
        Change::Put { key, value: value.into(), mod_rev: rev }
    }

    #[test]
    fn the_fleet_verdict_needs_a_majority_of_live_nodes_and_keeps_its_value_in_between() {
        let t = |up, down, live| Tally { up, down, live };
        assert_eq!(t(0, 0, 3).verdict(None), None, "no verdict until a majority speaks");
        assert_eq!(t(2, 0, 3).verdict(None), Some(true));
        assert_eq!(t(2, 1, 3).verdict(Some(true)), Some(true), "one node disagreeing changes nothing");
        assert_eq!(t(1, 2, 3).verdict(Some(true)), Some(false));
        assert_eq!(t(1, 1, 2).verdict(Some(true)), Some(true), "a 2-node tie keeps the verdict");
        assert_eq!(t(1, 1, 2).verdict(Some(false)), Some(false));
        assert_eq!(t(0, 2, 2).verdict(Some(true)), Some(false));
        assert_eq!(t(1, 1, 3).verdict(Some(false)), Some(false), "a node not yet reporting: no majority");
        assert_eq!(t(1, 0, 1).verdict(Some(false)), Some(true), "a fleet of one follows its node");
    }

    #[test]
    fn only_live_nodes_count_and_their_verdicts_follow_puts_and_deletes() {
        let k = Keys::new("/v");
        let mut v = FleetView::default();
        for n in ["a", "b", "c"] {
            v.apply(&k, &put(k.node(n), n, 1));
        }
        v.apply(&k, &put(k.verdict("web", "b1", "a"), "down", 2));
        v.apply(&k, &put(k.verdict("web", "b1", "b"), "down", 3));
        v.apply(&k, &put(k.verdict("web", "b1", "c"), "up", 4));
        assert_eq!(v.tally("web", "b1"), Tally { up: 1, down: 2, live: 3 });
        // b's lease lapsed: its node key goes, its verdict no longer counts.
        let touched = v.apply(&k, &Change::Delete { key: k.node("b") });
        assert!(touched.verdicts);
        assert_eq!(v.tally("web", "b1"), Tally { up: 1, down: 1, live: 2 });
        v.apply(&k, &Change::Delete { key: k.verdict("web", "b1", "a") });
        assert_eq!(v.tally("web", "b1"), Tally { up: 1, down: 0, live: 2 });
        let touched = v.apply(&k, &put(k.op("admin/web/b1"), "draining", 9));
        assert_eq!(touched, Touched { ops: true, ..Touched::default() });
        assert_eq!(v.ops().get("admin/web/b1"), Some(&("draining".to_string(), 9)));
        v.apply(&k, &Change::Delete { key: k.op("admin/web/b1") });
        assert!(v.ops().is_empty());
    }
}
