//! `[[service]]`: a virtual service, how it schedules and forwards, and what
//! it does with no backend up.

use std::{net::IpAddr, time::Duration};

use serde::Deserialize;
use toml::Spanned;

use super::{
    backend::{self, BackendConfig},
    duration,
    health::{AgentConfig, HealthConfig},
    hooks::{ReplaceConfig, ScaleConfig},
};
use crate::addr::Protocol;

/// Scheduler as configured.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SchedulerConfig {
    /// Weighted Maglev.
    Maglev,
    /// Weighted round robin.
    RoundRobin,
    /// Client-address affinity.
    SourceHash,
    /// Weighted least flows (two choices over the Maglev table).
    LeastFlows,
}

impl From<SchedulerConfig> for veer_abi::Scheduler {
    fn from(s: SchedulerConfig) -> Self {
        match s {
            SchedulerConfig::Maglev => Self::Maglev,
            SchedulerConfig::RoundRobin => Self::RoundRobin,
            SchedulerConfig::SourceHash => Self::SourceHash,
            SchedulerConfig::LeastFlows => Self::LeastFlows,
        }
    }
}

/// Forwarding mode.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Forwarding {
    /// Direct server return: rewrite MACs; backends hold the VIP and answer
    /// clients directly.
    #[default]
    Dsr,
    /// Full NAT: backends need no setup; they see veer's SNAT address as the
    /// client, and their answers return through veer.
    Nat,
    /// Direct server return across routers: each packet goes to its
    /// backend's address inside an IP-in-IP header; the backend (its agent,
    /// or the kernel's `ipip` device) takes it out and answers the client
    /// directly.
    Ipip,
    /// As [`Forwarding::Ipip`], inside UDP (GUE variant 1) to `gue_port`:
    /// the UDP source port carries the flow's hash, so routers' ECMP
    /// spreads the flows.
    Gue,
}

impl Forwarding {
    /// Packets reach the backends through a tunnel (IPIP or GUE).
    pub fn tunnelled(self) -> bool {
        matches!(self, Self::Ipip | Self::Gue)
    }

    /// The backends' `encap` word in the dataplane.
    pub fn encap(self) -> u16 {
        match self {
            Self::Dsr | Self::Nat => veer_abi::ENCAP_NONE,
            Self::Ipip => veer_abi::ENCAP_IPIP,
            Self::Gue => veer_abi::ENCAP_GUE,
        }
    }
}

/// What happens to new flows when no backend is up.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Fallback {
    /// Drop them (and count).
    #[default]
    Drop,
    /// Hand them to the load balancer's own stack.
    Pass,
}

/// A `[[service]]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Unique name.
    pub name: String,
    /// Virtual IP.
    pub vip: IpAddr,
    /// Port.
    pub port: u16,
    /// `tcp` or `udp`.
    #[serde(default = "default_protocol", deserialize_with = "de_protocol")]
    pub protocol: Protocol,
    /// `maglev`, `round-robin`, `source-hash` or `least-flows`.
    #[serde(default = "default_scheduler")]
    pub scheduler: SchedulerConfig,
    /// Maglev table size: a prime up to 65537.
    #[serde(default = "default_ring_size")]
    pub ring_size: u32,
    /// `dsr` (the default), `nat`, `ipip` or `gue`.
    #[serde(default)]
    pub forwarding: Forwarding,
    /// IPIP and GUE: the balancer's address the tunnel starts from (its
    /// outer source), one per address family of the backends. Default: the
    /// address the kernel picks toward each backend.
    #[serde(default)]
    pub tunnel_source: Vec<IpAddr>,
    /// GUE: the UDP port the backends take the tunnel on (default 6080).
    #[serde(default)]
    pub gue_port: Option<u16>,
    /// QUIC connection-ID routing (UDP): a short-header packet goes to the
    /// backend whose server ID its connection ID carries, whatever its
    /// client address and port (see `veerctl backends` for the IDs).
    #[serde(default)]
    pub quic: bool,
    /// NAT: source addresses toward the backends (one per address family is
    /// used). Default: the address the kernel picks toward each backend.
    #[serde(default)]
    pub snat: Vec<IpAddr>,
    /// Backups get traffic only while fewer primaries than this are up.
    #[serde(default = "backend::one")]
    pub min_healthy: u32,
    /// With no backend up: `drop` or `pass` (unless `fallback_backend` is set).
    #[serde(default)]
    pub fallback: Fallback,
    /// Name of a `sorry = true` backend that takes traffic when no other is up.
    #[serde(default)]
    pub fallback_backend: Option<String>,
    /// Fail-open guard: when more than this share of the service's backends
    /// fail within one detection window (as when the balancer's own path
    /// breaks, not the backends), keep sending to the last healthy set
    /// instead of taking them out. `1` turns the guard off.
    #[serde(default = "default_fail_open")]
    pub fail_open: f64,
    /// Slow start: a backend that comes back up, or is added while the
    /// service runs, gets its weight ramped over this long (in ten steps)
    /// instead of its full share at once. `0s` (the default) turns it off.
    #[serde(default, with = "duration")]
    pub slow_start: Duration,
    /// Client persistence (whole seconds; `0s`, the default, is off): a
    /// client whose last flow went to a backend within this long gets its
    /// new flows there too while that backend takes new flows, across
    /// membership changes.
    #[serde(default, with = "duration")]
    pub persistence: Duration,
    /// Health checking.
    #[serde(default)]
    pub health: HealthConfig,
    /// Update command for rolling updates (`veerctl rollout`); `{name}` and
    /// `{address}` are replaced. A backend's own `update` wins.
    #[serde(default)]
    pub update: Vec<String>,
    /// Load-driven scaling hooks.
    #[serde(default)]
    pub scale: Option<ScaleConfig>,
    /// The agent check: each backend's agent says its weight and state
    /// (see [`AgentConfig`]).
    #[serde(default)]
    pub agent: Option<AgentConfig>,
    /// Replacing a backend whose node is gone: a hook that provisions a
    /// substitute (see [`ReplaceConfig`]).
    #[serde(default)]
    pub replace: Option<ReplaceConfig>,
    /// The backends, `[[service.backend]]`.
    #[serde(default, rename = "backend")]
    pub backends: Vec<Spanned<BackendConfig>>,
}

impl ServiceConfig {
    /// GUE's port: `gue_port`, or the default.
    pub fn gue_port(&self) -> u16 {
        self.gue_port.unwrap_or(veer_abi::DEFAULT_GUE_PORT)
    }
}

fn default_fail_open() -> f64 {
    0.5
}

fn default_protocol() -> Protocol {
    Protocol::Tcp
}
fn default_scheduler() -> SchedulerConfig {
    SchedulerConfig::Maglev
}
fn default_ring_size() -> u32 {
    veer_abi::DEFAULT_RING_SIZE
}
fn de_protocol<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Protocol, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(serde::de::Error::custom)
}
