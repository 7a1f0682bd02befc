//! Runtime changes made through the API (drain, disable, weight, added and
//! removed backends), kept apart from the config file and persisted, so that
//! they survive a daemon restart and `veerctl` can show where the running
//! state differs from the file.
//!
//! The state file is data, never code: an added backend is an
//! [`AddedBackend`], which has no field for a command, and a file whose
//! entries break the config's rules is refused as a whole.

mod added;

pub use added::AddedBackend;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

use serde::{Deserialize, Serialize};

use crate::config::Config;

/// Operator intent for a backend (set through the API; the config starts it enabled).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Admin {
    /// Takes traffic when healthy.
    Enabled,
    /// Keeps its flows, gets no new ones.
    Draining,
    /// Gets nothing.
    Disabled,
}

impl Admin {
    /// Lowercase name, as serialized.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Enabled => "enabled",
            Self::Draining => "draining",
            Self::Disabled => "disabled",
        }
    }
}

/// A backend's health as the operator fixed it: its checks (and agent
/// checks) stop, and veer takes it as up or down until set back to auto
/// (HAProxy's `disable health` and `set server health`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum HealthMode {
    /// Checked, as configured.
    Auto,
    /// Not checked; up.
    Up,
    /// Not checked; down (its flows move; no restart command runs).
    Down,
}

impl HealthMode {
    /// Lowercase name, as serialized.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Up => "up",
            Self::Down => "down",
        }
    }
}

/// `service/backend`, the key of per-backend overrides.
pub fn key(service: &str, backend: &str) -> String {
    format!("{service}/{backend}")
}

/// Everything the API changed relative to the config file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Overrides {
    /// Operator state other than `enabled`, by `service/backend`.
    pub admin: BTreeMap<String, Admin>,
    /// Weights that differ from the file, by `service/backend`.
    pub weight: BTreeMap<String, u32>,
    /// Backends added at runtime, by service.
    pub added: BTreeMap<String, Vec<AddedBackend>>,
    /// Backends of the file removed at runtime, `service/backend`.
    pub removed: BTreeSet<String>,
    /// Health fixed by the operator (never `auto`), by `service/backend`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub health: BTreeMap<String, HealthMode>,
    /// Fleet: the node is drained (`veerctl node drain`): it announces no VIP.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub node_drained: bool,
}

impl Overrides {
    /// Reads the state file; a missing file means no overrides. Unknown
    /// fields are refused, and so is an added backend that breaks a rule of
    /// the config (checked against its service's VIP in `file`).
    pub fn load(path: &Path, file: &Config) -> anyhow::Result<Self> {
        let o: Self = match std::fs::read_to_string(path) {
            Ok(s) => serde_json::from_str(&s).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(anyhow::anyhow!("{}: {e}", path.display())),
        };
        o.check_added(file).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(o)
    }

    /// Every added backend of a service in `file` against the config's
    /// rules. Entries of services `file` does not have are dropped later by
    /// [`apply`](Self::apply), so they pass here.
    pub fn check_added(&self, file: &Config) -> Result<(), String> {
        for (k, w) in &self.weight {
            crate::config::rules::check_weight(*w).map_err(|e| format!("weight of {k}: {e}"))?;
        }
        match self.clone().drop_invalid_added(file).into_iter().next() {
            Some(why) => Err(why),
            None => Ok(()),
        }
    }

    /// Drops the added backends that break a rule of the config (see
    /// [`check_added`](Self::check_added)) and says why for each.
    pub fn drop_invalid_added(&mut self, file: &Config) -> Vec<String> {
        let mut dropped = Vec::new();
        for (svc, backends) in self.added.iter_mut() {
            let Some(s) = file.services.iter().map(|s| s.get_ref()).find(|s| &s.name == svc) else {
                continue;
            };
            backends.retain(|b| match b.check(s.vip, s.forwarding.tunnelled()) {
                Ok(()) => true,
                Err(e) => {
                    dropped.push(format!("added backend {svc}/{}: {e}", b.name));
                    false
                }
            });
        }
        self.added.retain(|_, v| !v.is_empty());
        dropped
    }

    /// Writes the state file atomically and durably: a temp file, synced,
    /// renamed over the old one, then the directory synced. A crash at any
    /// point leaves the old file or the new one, never a torn one.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        use std::io::Write as _;
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    }

    /// How `service/backend` runs differently from `file`, if it does
    /// ("added at runtime", "draining", "weight 7 (config 1)").
    pub fn note(&self, file: &Config, service: &str, backend: &str) -> Option<String> {
        let k = key(service, backend);
        let mut notes = Vec::new();
        if self.added.get(service).is_some_and(|v| v.iter().any(|b| b.name == backend)) {
            notes.push("added at runtime".to_string());
        }
        if let Some(a) = self.admin.get(&k) {
            notes.push(a.name().to_string());
        }
        if let Some(h) = self.health.get(&k) {
            notes.push(format!("health forced {} (unchecked)", h.name()));
        }
        if let Some(w) = self.weight.get(&k) {
            notes.push(match file.backend(service, backend) {
                Some(b) => format!("weight {w} (config {})", b.weight),
                None => format!("weight {w}"),
            });
        }
        (!notes.is_empty()).then(|| notes.join(", "))
    }

    /// What changed from `old` to `new` in the file but does not run,
    /// because a runtime change wins over the file: a new weight under a
    /// runtime weight, any change to (or the return of) a backend removed
    /// at runtime. One line each, naming the `veerctl reset` that applies it.
    pub fn shadowed(&self, old: &Config, new: &Config) -> Vec<String> {
        let mut out = Vec::new();
        let mut say = |k: &str, what: String| {
            let (s, b) = k.split_once('/').unwrap_or((k, ""));
            out.push(format!("{k}: {what}; `veerctl reset {s} {b}` applies the file"));
        };
        for (k, w) in &self.weight {
            let (s, b) = k.split_once('/').unwrap_or((k, ""));
            let (was, is) = (old.backend(s, b).map(|x| x.weight), new.backend(s, b).map(|x| x.weight));
            if let (Some(was), Some(is)) = (was, is) {
                if was != is {
                    say(k, format!("the file's weight {was} -> {is} is shadowed by the runtime weight {w}"));
                }
            }
        }
        for k in &self.removed {
            let (s, b) = k.split_once('/').unwrap_or((k, ""));
            if new.backend(s, b).is_some() && old.backend(s, b) != new.backend(s, b) {
                say(k, "changed in the file, but removed at runtime".into());
            }
        }
        out
    }

    /// Whether nothing is overridden.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The config as it runs: the file plus added, minus removed backends,
    /// with overridden weights. Overrides naming nothing that exists are dropped.
    pub fn apply(&mut self, file: &Config) -> Config {
        let mut cfg = file.clone();
        let mut live = BTreeSet::new();
        for s in cfg.services.iter_mut() {
            let s = s.get_mut();
            let name = s.name.clone();
            s.backends.retain(|b| !self.removed.contains(&key(&name, &b.get_ref().name)));
            for b in self.added.get(&name).into_iter().flatten() {
                if !s.backends.iter().any(|x| x.get_ref().name == b.name || x.get_ref().address == b.address) {
                    s.backends.push(toml::Spanned::new(0..0, b.to_config()));
                }
            }
            for b in s.backends.iter_mut() {
                let b = b.get_mut();
                if let Some(w) = self.weight.get(&key(&name, &b.name)) {
                    b.weight = *w;
                }
                live.insert(key(&name, &b.name));
            }
        }
        let names: BTreeSet<String> = file.services.iter().map(|s| s.get_ref().name.clone()).collect();
        self.added.retain(|svc, v| names.contains(svc) && !v.is_empty());
        self.admin.retain(|k, _| live.contains(k));
        self.weight.retain(|k, _| live.contains(k));
        self.health.retain(|k, _| live.contains(k));
        let file_keys: BTreeSet<String> = file
            .services
            .iter()
            .flat_map(|s| {
                s.get_ref().backends.iter().map(|b| key(&s.get_ref().name, &b.get_ref().name)).collect::<Vec<_>>()
            })
            .collect();
        self.removed.retain(|k| file_keys.contains(k));
        cfg
    }
}
