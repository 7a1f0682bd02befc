//! The wire contract between veerd and its clients (`veerctl`, tests,
//! scripts): JSON lines over the API's Unix socket.
//!
//! One request per line, one response per line:
//! `{"cmd":"status"}` -> `{"ok":true,"result":{...}}`,
//! `{"cmd":"reload"}` -> `{"ok":false,"error":"t.toml:9: ..."}`.
//! A status result is a [`Status`].

use std::path::Path;

use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::UnixStream,
};

/// Longest request line veerd reads (a pushed fleet config is the
/// largest request).
pub const MAX_REQUEST: usize = 1024 * 1024;

/// A request to the daemon.
///
/// Also the `veerctl` subcommands that are one request and nothing more
/// (`reload`, `enable`, `disable`, `weight`, `add-backend`,
/// `remove-backend`): their arguments are these fields, their help these
/// docs. Variants `veerctl` builds itself, because its command does more
/// than send one request (`status`, `drain`, `events`, `node`), or does not
/// offer (`metrics`) are skipped there.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, clap::Subcommand)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Request {
    /// The running state.
    #[command(skip)]
    Status,
    /// Stop new flows to a backend; its existing flows stay.
    #[command(skip)]
    Drain {
        /// Service name.
        #[arg(add = clap_complete::ArgValueCandidates::new(crate::complete::service_names))]
        service: String,
        /// Backend name.
        #[arg(add = clap_complete::ArgValueCandidates::new(crate::complete::backend_names))]
        backend: String,
    },
    /// Undo drain or disable (`undrain` says the same).
    #[command(visible_alias = "undrain")]
    Enable {
        /// Service name.
        #[arg(add = clap_complete::ArgValueCandidates::new(crate::complete::service_names))]
        service: String,
        /// Backend name.
        #[arg(add = clap_complete::ArgValueCandidates::new(crate::complete::backend_names))]
        backend: String,
    },
    /// Take a backend out: its flows move at once.
    Disable {
        /// Service name.
        #[arg(add = clap_complete::ArgValueCandidates::new(crate::complete::service_names))]
        service: String,
        /// Backend name.
        #[arg(add = clap_complete::ArgValueCandidates::new(crate::complete::backend_names))]
        backend: String,
    },
    /// Set a backend's weight.
    Weight {
        /// Service name.
        #[arg(add = clap_complete::ArgValueCandidates::new(crate::complete::service_names))]
        service: String,
        /// Backend name.
        #[arg(add = clap_complete::ArgValueCandidates::new(crate::complete::backend_names))]
        backend: String,
        /// 1 to 65535.
        weight: u32,
    },
    /// Add a backend to a service.
    AddBackend {
        /// Service name.
        #[arg(add = clap_complete::ArgValueCandidates::new(crate::complete::service_names))]
        service: String,
        /// New backend's name.
        name: String,
        /// Its address.
        #[arg(value_parser = parse_address)]
        address: std::net::IpAddr,
        /// Its weight.
        #[serde(default)]
        #[arg(long)]
        weight: Option<u32>,
        /// Its next-hop MAC (default: neighbour table).
        #[serde(default)]
        #[arg(long)]
        mac: Option<String>,
        /// Make it a backup.
        #[serde(default)]
        #[arg(long)]
        backup: bool,
    },
    /// Remove a backend from a service.
    RemoveBackend {
        /// Service name.
        #[arg(add = clap_complete::ArgValueCandidates::new(crate::complete::service_names))]
        service: String,
        /// Backend name.
        #[arg(add = clap_complete::ArgValueCandidates::new(crate::complete::backend_names))]
        backend: String,
    },
    /// Fix a backend's health: `up` or `down` stop its checks (and agent
    /// checks) and take it as that; `auto` checks it again.
    Health {
        /// Service name.
        #[arg(add = clap_complete::ArgValueCandidates::new(crate::complete::service_names))]
        service: String,
        /// Backend name.
        #[arg(add = clap_complete::ArgValueCandidates::new(crate::complete::backend_names))]
        backend: String,
        /// auto, up or down.
        mode: crate::overrides::HealthMode,
    },
    /// Drop runtime changes (drains, disables, weights, added and removed
    /// backends): all of them, one service's, or one backend's. The file
    /// then runs as written. A fleet node's drain stays (`node undrain`).
    Reset {
        /// Only this service's changes.
        #[serde(default)]
        #[arg(add = clap_complete::ArgValueCandidates::new(crate::complete::service_names))]
        service: Option<String>,
        /// Only this backend's (of SERVICE).
        #[serde(default)]
        #[arg(add = clap_complete::ArgValueCandidates::new(crate::complete::backend_names))]
        backend: Option<String>,
    },
    /// Re-read the config file (a bad one changes nothing).
    // After the backend commands: the order `veerctl --help` lists them in.
    Reload {
        /// Only say what the file would change (services and backends
        /// added, removed or changed, tables rebuilt), or why it would be
        /// refused; change nothing.
        #[serde(default)]
        #[arg(long)]
        dry_run: bool,
    },
    /// Prometheus text exposition of the daemon's metrics.
    #[command(skip)]
    Metrics,
    /// Fleet: stop announcing this node's VIPs (flows move to other nodes).
    #[command(skip)]
    NodeDrain,
    /// Fleet: announce this node's VIPs again.
    #[command(skip)]
    NodeUndrain,
    /// Fleet: a config file's `[[service]]` tables as the fleet's next
    /// config revision, checked against this node's own settings first;
    /// answered once etcd committed it (every node then runs it).
    #[command(skip)]
    ConfigPush {
        /// The file's text.
        text: String,
        /// Why, for the history.
        #[serde(default)]
        note: Option<String>,
    },
    /// Fleet: the config revisions kept (a list of [`ConfigRevision`]).
    #[command(skip)]
    ConfigHistory,
    /// Fleet: one config revision's record, text included (default: the current one).
    #[command(skip)]
    ConfigShow {
        /// The revision.
        #[serde(default)]
        revision: Option<u64>,
    },
    /// Fleet: push an earlier revision's text again, as a new revision.
    #[command(skip)]
    ConfigRollback {
        /// The revision to go back to.
        revision: u64,
    },
    /// Backends' state changes, oldest first (an [`EventLog`]).
    #[command(skip)]
    Events {
        /// Only changes after this sequence number (to follow).
        #[serde(default)]
        since: Option<u64>,
        /// Only this service's.
        #[serde(default)]
        service: Option<String>,
        /// Only this backend's (of any service, or of `service`).
        #[serde(default)]
        backend: Option<String>,
    },
}

impl Request {
    /// Whether the request only reads (status, metrics, events): what an API
    /// caller without admin rights may send.
    pub fn reads_only(&self) -> bool {
        matches!(
            self,
            Self::Status | Self::Metrics | Self::Events { .. } | Self::ConfigHistory | Self::ConfigShow { .. }
        )
    }

    /// The command's name on the wire (`add-backend`).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Status => "status",
            Self::Drain { .. } => "drain",
            Self::Enable { .. } => "enable",
            Self::Disable { .. } => "disable",
            Self::Weight { .. } => "weight",
            Self::AddBackend { .. } => "add-backend",
            Self::RemoveBackend { .. } => "remove-backend",
            Self::Reset { .. } => "reset",
            Self::Health { .. } => "health",
            Self::Reload { .. } => "reload",
            Self::Metrics => "metrics",
            Self::NodeDrain => "node-drain",
            Self::NodeUndrain => "node-undrain",
            Self::Events { .. } => "events",
            Self::ConfigPush { .. } => "config-push",
            Self::ConfigHistory => "config-history",
            Self::ConfigShow { .. } => "config-show",
            Self::ConfigRollback { .. } => "config-rollback",
        }
    }
}

/// An address argument that is not an IP address.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{text:?} is not an IP address")]
pub struct BadAddress {
    /// What was given.
    pub text: String,
    /// Why it does not parse.
    #[source]
    pub source: std::net::AddrParseError,
}

/// Parses an IP address argument (`veerctl add-backend`'s).
pub fn parse_address(text: &str) -> Result<std::net::IpAddr, BadAddress> {
    text.parse().map_err(|source| BadAddress { text: text.into(), source })
}

/// One change of a backend's state word.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateChange {
    /// Order among all changes since veerd started (1, 2, ...).
    pub seq: u64,
    /// When (RFC 3339, UTC, milliseconds).
    pub time: String,
    /// Service name.
    pub service: String,
    /// Backend name.
    pub backend: String,
    /// State before: `up`, `down`, `draining`, `disabled`, or `new`.
    pub from: String,
    /// State after (as `from`), or `removed`.
    pub to: String,
    /// Why: the health checker's streak, an operator command, a reload.
    pub reason: String,
    /// The failing probe's error, when a health check took it down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One revision of the fleet's config, as `config-history` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigRevision {
    /// The revision.
    pub revision: u64,
    /// The node that took the push.
    pub by: String,
    /// When (seconds since the Unix epoch).
    pub at: u64,
    /// Why, if said.
    #[serde(default)]
    pub note: Option<String>,
    /// It is the fleet's current revision.
    pub current: bool,
}

/// The result of an `events` request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventLog {
    /// The changes asked for, oldest first.
    pub events: Vec<StateChange>,
    /// The newest sequence number veerd has given (pass it as `since` to follow).
    pub last_seq: u64,
}

/// The daemon's answer.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Response {
    /// Whether the request succeeded.
    pub ok: bool,
    /// Its result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Response {
    /// A success.
    pub fn ok(result: serde_json::Value) -> Self {
        Self { ok: true, result: Some(result), error: None }
    }

    /// A failure.
    pub fn err(e: impl std::fmt::Display) -> Self {
        Self { ok: false, result: None, error: Some(e.to_string()) }
    }
}

impl Response {
    /// The result as a [`Status`] (of a `status` request).
    pub fn status(self) -> Result<Status, String> {
        if !self.ok {
            return Err(self.error.unwrap_or_else(|| "request failed".into()));
        }
        serde_json::from_value(self.result.unwrap_or_default()).map_err(|e| format!("not a status: {e}"))
    }
}

/// Client side: sends one request and waits for its response.
pub async fn call(path: &Path, req: &Request) -> std::io::Result<Response> {
    let stream = UnixStream::connect(path).await?;
    let (r, mut w) = stream.into_split();
    let mut line = serde_json::to_string(req).map_err(std::io::Error::other)?;
    line.push('\n');
    w.write_all(line.as_bytes()).await?;
    let mut lines = BufReader::new(r).lines();
    let resp = lines.next_line().await?.ok_or_else(|| std::io::Error::other("daemon closed the connection"))?;
    serde_json::from_str(&resp).map_err(std::io::Error::other)
}

mod status;

pub use status::{BackendStatus, FleetConfigStatus, FleetStatus, NodeConfig, ServiceStatus, Status};

#[cfg(test)]
mod tests;
