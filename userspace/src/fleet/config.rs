//! The fleet's config in etcd, versioned: the `[[service]]` tables every
//! node runs (the rest of a node's file, `[daemon]` and `[fleet]`, stays
//! its own).
//!
//! | key | value | lease |
//! | --- | --- | --- |
//! | `P/config/current` | the revision every node runs ([`ConfigRecord`], JSON) | none |
//! | `P/config/history/<revision>` | every revision kept ([`HISTORY_KEPT`]) | none |
//! | `P/config/running/<node>` | what the node runs ([`RunningRecord`], JSON) | the node's |
//!
//! A push is one transaction: `current` compared to the revision the
//! pushing node last saw, the new record written to `current` and to the
//! history, the oldest history entry beyond [`HISTORY_KEPT`] deleted.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// History entries kept in etcd.
pub const HISTORY_KEPT: u64 = 50;

/// One revision of the fleet's config.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigRecord {
    /// 1 for the first push, one more for each.
    pub revision: u64,
    /// The `[[service]]` tables, as pushed (TOML).
    pub text: String,
    /// The node whose API took the push.
    pub by: String,
    /// When, in seconds since the Unix epoch.
    pub at: u64,
    /// Why, if said (`rollback to 3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// What a node runs, as it reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningRecord {
    /// The fleet revision it runs (0: its own file's services, no fleet
    /// revision yet).
    pub revision: u64,
    /// Why it refused the fleet's current revision, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// Its own file's services differ from the fleet's (ignored).
    #[serde(default)]
    pub local_file_differs: bool,
}

/// A key under `P/config/`.
#[derive(Debug, PartialEq, Eq)]
pub enum ConfigKey<'a> {
    /// `current`.
    Current,
    /// `history/<revision>`.
    History(u64),
    /// `running/<node>`.
    Running(&'a str),
}

impl<'a> ConfigKey<'a> {
    /// Parses a key relative to `P/config/`.
    pub fn parse(rel: &'a str) -> Option<Self> {
        match rel.split_once('/') {
            None if rel == "current" => Some(Self::Current),
            Some(("history", n)) => n.parse().ok().map(Self::History),
            Some(("running", node)) if !node.is_empty() && !node.contains('/') => Some(Self::Running(node)),
            _ => None,
        }
    }

    /// The key relative to `P/config/`.
    pub fn rel(&self) -> String {
        match self {
            Self::Current => "current".into(),
            // Zero-padded: etcd lists keys in byte order.
            Self::History(n) => format!("history/{n:010}"),
            Self::Running(node) => format!("running/{node}"),
        }
    }
}

/// The fleet's config as this node last saw it.
#[derive(Clone, Debug, Default)]
pub struct FleetConfigs {
    /// The current revision, and the etcd revision that wrote it (what a
    /// push compares to).
    pub current: Option<(ConfigRecord, i64)>,
    /// Every revision kept, by revision.
    pub history: BTreeMap<u64, ConfigRecord>,
    /// What each live node runs.
    pub running: BTreeMap<String, RunningRecord>,
}

impl FleetConfigs {
    /// Applies a put (`Some(value)`, written at `mod_rev`) or a delete of
    /// `key`. An unreadable value is dropped (said by the caller); true if
    /// the current revision changed.
    pub fn apply(&mut self, key: ConfigKey, value: Option<&str>, mod_rev: i64) -> Result<bool, String> {
        match key {
            ConfigKey::Current => {
                let before = self.current.as_ref().map(|(r, _)| r.revision);
                self.current = value.map(|v| read(v).map(|r| (r, mod_rev))).transpose()?;
                Ok(self.current.as_ref().map(|(r, _)| r.revision) != before)
            }
            ConfigKey::History(n) => {
                match value {
                    Some(v) => drop(self.history.insert(n, read(v)?)),
                    None => drop(self.history.remove(&n)),
                }
                Ok(false)
            }
            ConfigKey::Running(node) => {
                match value {
                    Some(v) => drop(self.running.insert(node.to_string(), read(v)?)),
                    None => drop(self.running.remove(node)),
                }
                Ok(false)
            }
        }
    }

    /// The next record for `text`: one revision past the current.
    pub fn next(&self, text: String, by: &str, note: Option<String>) -> ConfigRecord {
        let at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let revision = self.current.as_ref().map_or(0, |(r, _)| r.revision) + 1;
        ConfigRecord { revision, text, by: by.to_string(), at, note }
    }
}

fn read<T: for<'de> Deserialize<'de>>(v: &str) -> Result<T, String> {
    serde_json::from_str(v).map_err(|e| format!("unreadable: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_records_read_back() {
        for k in [ConfigKey::Current, ConfigKey::History(7), ConfigKey::Running("lb1")] {
            assert_eq!(ConfigKey::parse(&k.rel()), Some(k));
        }
        assert_eq!(ConfigKey::History(12).rel(), "history/0000000012");
        assert_eq!(ConfigKey::parse("running/a/b"), None);
        assert_eq!(ConfigKey::parse("history/x"), None);

        let mut c = FleetConfigs::default();
        let r1 = c.next("[[service]]".into(), "lb1", None);
        assert_eq!(r1.revision, 1);
        let json = serde_json::to_string(&r1).unwrap();
        assert_eq!(c.apply(ConfigKey::Current, Some(&json), 40), Ok(true));
        assert_eq!(c.apply(ConfigKey::Current, Some(&json), 40), Ok(false), "same revision again");
        assert_eq!(c.next(String::new(), "lb2", None).revision, 2);
        assert!(c.apply(ConfigKey::Running("lb1"), Some("{"), 41).is_err());
        assert_eq!(c.apply(ConfigKey::Current, None, 0), Ok(true));
    }
}
