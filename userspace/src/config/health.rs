//! `[service.health]` and `[service.agent]`: how veerd decides a backend is up.

use std::time::Duration;

use serde::Deserialize;

use super::duration;

/// Kind of active health check.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    /// A TCP connect.
    #[default]
    Tcp,
    /// An HTTP/1.1 GET expecting a status.
    Http,
    /// The same over TLS (`tls_server_name`, `tls_ca`).
    Https,
    /// A UDP datagram expecting a reply.
    Udp,
    /// A command's exit status (no shell).
    Exec,
    /// No checks: backends are always up.
    None,
}

/// A backend's state before its first checks complete.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum InitialState {
    /// Down until `rise` checks pass (the safe default).
    #[default]
    Down,
    /// Up until `fall` checks fail.
    Up,
}

/// `[service.health]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// `tcp`, `http`, `udp`, `exec` or `none`.
    pub kind: CheckKind,
    /// Time between checks.
    #[serde(with = "duration")]
    pub interval: Duration,
    /// Time between checks while a state is changing (some but not enough
    /// successes or failures in a row). Defaults to interval / 4.
    #[serde(with = "duration::option")]
    pub fast_interval: Option<Duration>,
    /// Per-check timeout; shorter than `interval`.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// Successes in a row that bring a backend up.
    pub rise: u32,
    /// Failures in a row that take a backend down.
    pub fall: u32,
    /// State before the first checks.
    pub initial: InitialState,
    /// Port to check (default: the service port).
    pub port: Option<u16>,
    /// `http`, `https`: request path.
    pub path: String,
    /// `http`, `https`: expected status code.
    pub expect_status: u16,
    /// `https`: the name sent as SNI and, with `tls_ca`, verified (default:
    /// the backend's address).
    pub tls_server_name: Option<String>,
    /// `https`: PEM CA bundle the backend's certificate must chain to
    /// (default: the certificate is not verified, as HAProxy's `check-ssl
    /// verify none`).
    pub tls_ca: Option<std::path::PathBuf>,
    /// `udp`: payload to send.
    pub payload: String,
    /// `udp`: the reply must contain this (any reply if unset).
    pub expect: Option<String>,
    /// `exec`: program and arguments; `{address}` and `{port}` are replaced.
    pub command: Vec<String>,
    /// Passive detection from the traffic itself.
    pub passive: PassiveConfig,
    /// DSR, `tcp` and `http` checks: probe `VIP:port` through the backend's
    /// MAC, as clients' packets go, instead of the backend's own address. A
    /// backend that lost the VIP from its loopback then fails its checks.
    pub vip_path: bool,
}

/// `[service.health.passive]`: failures the dataplane sees in the traffic.
///
/// A client's retransmitted SYN (the backend never answered), or with NAT a
/// backend's RST to a SYN (nothing listens), moves that connection to
/// another backend at once and makes the first one suspect: it gets no new
/// flows while others can take them. veerd then probes it out of its
/// interval: `confirm` failures in a row (the first at once, the next at
/// `fast_interval`) take it down; a success clears the suspicion.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PassiveConfig {
    /// On by default; off behaves as active checks alone.
    pub enabled: bool,
    /// Failed probes in a row that confirm a suspect down (at least 1).
    pub confirm: u32,
}

impl Default for PassiveConfig {
    fn default() -> Self {
        Self { enabled: true, confirm: 1 }
    }
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            kind: CheckKind::Tcp,
            interval: Duration::from_secs(1),
            fast_interval: None,
            timeout: Duration::from_millis(500),
            rise: 2,
            fall: 3,
            initial: InitialState::Down,
            port: None,
            path: "/".into(),
            expect_status: 200,
            tls_server_name: None,
            tls_ca: None,
            payload: String::new(),
            expect: None,
            command: Vec::new(),
            passive: PassiveConfig::default(),
            vip_path: false,
        }
    }
}

impl HealthConfig {
    /// The interval used while a state is changing.
    pub fn fast(&self) -> Duration {
        self.fast_interval.unwrap_or(self.interval / 4).max(Duration::from_millis(1))
    }

    /// How far apart the detections of backends that failed at the same
    /// moment can be: one interval (where each checker's cycle stands), then
    /// `fall` fast checks, the last one timing out.
    pub fn detection_window(&self) -> Duration {
        // Saturating: extreme but accepted settings must not panic veerd.
        self.interval.saturating_add(self.fast().saturating_mul(self.fall)).saturating_add(self.timeout)
    }
}

/// `[service.agent]`: HAProxy's `agent-check`. Every backend runs a small
/// TCP service on `port` that answers one line: a weight percentage
/// (`75%`), `drain`, `down`, `up`, or several (`up 50%`).
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The agent's TCP port on each backend's address.
    pub port: u16,
    /// How often it is asked.
    #[serde(default = "default_agent_interval", with = "duration")]
    pub interval: Duration,
    /// How long an answer may take.
    #[serde(default = "default_agent_timeout", with = "duration")]
    pub timeout: Duration,
}

fn default_agent_interval() -> Duration {
    Duration::from_secs(2)
}
fn default_agent_timeout() -> Duration {
    Duration::from_secs(1)
}
