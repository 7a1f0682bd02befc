//! `[[service.backend]]`: one real server, and the command that restarts it.

use std::{net::IpAddr, time::Duration};

use serde::Deserialize;

use super::{duration, HealthConfig};

/// A `[[service.backend]]`.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// Unique within its service.
    pub name: String,
    /// Address (health checks go here; the next hop is its MAC).
    pub address: IpAddr,
    /// Relative weight, 1 to 65535.
    #[serde(default = "one")]
    pub weight: u32,
    /// Takes traffic only while fewer than `min_healthy` primaries are up.
    #[serde(default)]
    pub backup: bool,
    /// Only ever used as the service's `fallback_backend`.
    #[serde(default)]
    pub sorry: bool,
    /// Next-hop MAC; looked up in the neighbour table when unset.
    #[serde(default)]
    pub mac: Option<String>,
    /// Recovery: a command to run when the backend goes down.
    #[serde(default)]
    pub restart: Option<RestartConfig>,
    /// Update command for this backend (overrides the service's `update`).
    #[serde(default)]
    pub update: Vec<String>,
    /// NAT: the port this backend listens on (default: the service's);
    /// its checks go there too unless `health.port` says otherwise.
    #[serde(default)]
    pub port: Option<u16>,
    /// `[service.backend.health]`: what this backend's check asks, where it
    /// differs from the service's (timing and rise/fall stay the service's).
    #[serde(default)]
    pub health: Option<HealthOverride>,
}

/// `restart = { command = [...], ... }`.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RestartConfig {
    /// Program and arguments (no shell); `{address}` and `{name}` are replaced.
    pub command: Vec<String>,
    /// Wait before the first attempt; doubles after each.
    #[serde(default = "default_backoff", with = "duration")]
    pub backoff: Duration,
    /// Cap on the wait between attempts.
    #[serde(default = "default_max_backoff", with = "duration")]
    pub max_backoff: Duration,
    /// Attempts before giving up (until the backend is up again).
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Time limit for one run of the command.
    #[serde(default = "default_restart_timeout", with = "duration")]
    pub timeout: Duration,
}

impl BackendConfig {
    /// A backend added at runtime: only what `add-backend` takes.
    pub fn runtime(name: String, address: IpAddr, weight: u32, mac: Option<String>, backup: bool) -> Self {
        Self {
            name,
            address,
            weight,
            backup,
            sorry: false,
            mac,
            restart: None,
            update: Vec::new(),
            port: None,
            health: None,
        }
    }

    /// The check this backend gets: the service's `h` with this backend's
    /// overrides, on port: its override, the service's `health.port`, the
    /// backend's `port`, else `service_port`.
    pub fn health_for(&self, h: &HealthConfig, service_port: u16) -> HealthConfig {
        let mut h = h.clone();
        let o = self.health.clone().unwrap_or_default();
        h.port = Some(o.port.or(h.port).or(self.port).unwrap_or(service_port));
        h.path = o.path.unwrap_or(h.path);
        h.expect_status = o.expect_status.unwrap_or(h.expect_status);
        h.tls_server_name = o.tls_server_name.or(h.tls_server_name);
        h.payload = o.payload.unwrap_or(h.payload);
        h.expect = o.expect.or(h.expect);
        h.command = o.command.unwrap_or(h.command);
        h
    }
}

/// `[service.backend.health]`: the parts of a check that may differ per
/// backend. Unset keys are the service's.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HealthOverride {
    /// Port to check.
    pub port: Option<u16>,
    /// `http`, `https`: request path.
    pub path: Option<String>,
    /// `http`, `https`: expected status.
    pub expect_status: Option<u16>,
    /// `https`: SNI and verified name.
    pub tls_server_name: Option<String>,
    /// `udp`: datagram to send.
    pub payload: Option<String>,
    /// `udp`: what the reply must contain.
    pub expect: Option<String>,
    /// `exec`: program and arguments.
    pub command: Option<Vec<String>>,
}

/// Also `[service.replace]`'s first wait: both back off the same way.
pub(super) fn default_backoff() -> Duration {
    Duration::from_millis(500)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(30)
}
fn default_attempts() -> u32 {
    5
}
fn default_restart_timeout() -> Duration {
    Duration::from_secs(30)
}
/// A backend's weight, and also a service's `min_healthy`.
pub(super) fn one() -> u32 {
    1
}
