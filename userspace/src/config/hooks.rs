//! Commands veerd runs for a service: load-driven scaling hooks and the hook
//! that replaces a backend whose node is gone.

use std::time::Duration;

use serde::Deserialize;

use super::{backend::default_backoff, duration};

/// What load a scaling hook looks at.
#[derive(Debug, Clone, Copy, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ScaleMetric {
    /// Packets per second per healthy backend.
    Pps,
    /// Active connection-table flows per healthy backend.
    Flows,
}

/// `[service.scale]`: hooks fired when the load per healthy backend stays
/// above (or below) a threshold for a window.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ScaleConfig {
    /// `pps` or `flows`.
    pub metric: ScaleMetric,
    /// Scale out while the load per healthy backend is above this.
    pub above: Option<f64>,
    /// Scale in while the load per healthy backend is below this.
    pub below: Option<f64>,
    /// How long the condition must hold.
    #[serde(default = "default_window", with = "duration")]
    pub window: Duration,
    /// Minimum time between two hooks of this service.
    #[serde(default = "default_cooldown", with = "duration")]
    pub cooldown: Duration,
    /// Scale-out command (argument list; env has VEER_SERVICE, VEER_LOAD, ...).
    #[serde(default)]
    pub out: Vec<String>,
    /// Scale-in command.
    #[serde(default, rename = "in")]
    pub in_: Vec<String>,
}

fn default_window() -> Duration {
    Duration::from_secs(30)
}
fn default_cooldown() -> Duration {
    Duration::from_secs(300)
}

/// `[service.replace]`: when a backend has been down `after`, or its restart
/// command gave up, `command` provisions a substitute and prints it on
/// stdout as JSON: `{"address": "10.0.0.9"}`, optionally with `"name"`,
/// `"weight"` and `"mac"`. veerd adds it, and once it passes its checks
/// retires the dead backend (both persisted as runtime changes).
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReplaceConfig {
    /// Program and arguments (no shell); `{address}`, `{name}` and
    /// `{service}` are replaced with the dead backend's.
    pub command: Vec<String>,
    /// Down this long (checks failing, not drained or disabled) before the
    /// hook runs, unless the restart command gives up first.
    #[serde(default = "default_replace_after", with = "duration")]
    pub after: Duration,
    /// Time limit for one run of the hook.
    #[serde(default = "default_replace_timeout", with = "duration")]
    pub timeout: Duration,
    /// The substitute must pass its checks within this long, or it is
    /// removed and the hook runs again.
    #[serde(default = "default_replace_up_within", with = "duration")]
    pub up_within: Duration,
    /// Wait after a failed attempt; doubles after each.
    #[serde(default = "default_backoff", with = "duration")]
    pub backoff: Duration,
    /// Cap on the wait between attempts.
    #[serde(default = "default_replace_max_backoff", with = "duration")]
    pub max_backoff: Duration,
}

fn default_replace_after() -> Duration {
    Duration::from_secs(60)
}
fn default_replace_timeout() -> Duration {
    Duration::from_secs(120)
}
fn default_replace_up_within() -> Duration {
    Duration::from_secs(60)
}
fn default_replace_max_backoff() -> Duration {
    Duration::from_secs(300)
}
