//! veerd's configuration: a TOML file, parsed strictly and validated whole
//! before anything uses it.
//!
//! Every error names the file, the line and the field. Unknown fields are
//! errors, not warnings: a typo must not silently fall back to a default.

mod backend;
mod daemon;
mod duration;
mod error;
mod fleet;
mod health;
mod hooks;
pub mod rules;
mod service;
mod validate;

use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

pub use backend::{BackendConfig, RestartConfig};
pub use daemon::{AttachModeConfig, DaemonConfig, PortRange};
pub use error::ConfigError;
pub use fleet::{EtcdConfig, FleetConfig};
pub use health::{AgentConfig, CheckKind, HealthConfig, InitialState, PassiveConfig};
pub use hooks::{ReplaceConfig, ScaleConfig, ScaleMetric};
pub use service::{Fallback, Forwarding, SchedulerConfig, ServiceConfig};

/// The whole file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Daemon-wide settings.
    #[serde(default)]
    pub daemon: DaemonConfig,
    /// The virtual services, `[[service]]` tables.
    #[serde(default, rename = "service")]
    pub services: Vec<Spanned<ServiceConfig>>,
    /// `[fleet]`: this veerd is one of several balancers serving the same
    /// VIPs (behind ECMP), so every node must send a flow to the same backend.
    #[serde(default)]
    pub fleet: Option<FleetConfig>,
}

impl Config {
    /// Backend `backend` of service `service`, as configured.
    pub fn backend(&self, service: &str, backend: &str) -> Option<&BackendConfig> {
        let s = self.services.iter().map(|s| s.get_ref()).find(|s| s.name == service)?;
        s.backends.iter().map(|b| b.get_ref()).find(|b| b.name == backend)
    }
}

/// A parsed MAC address.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    s.parse::<rules::Mac>().ok().map(|m| m.0)
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn fmt_mac(m: &[u8; 6]) -> String {
    rules::Mac(*m).to_string()
}

/// Reads, parses and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let src = std::fs::read_to_string(path).map_err(|e| ConfigError::io(path, e))?;
    parse(&src, path)
}

/// Parses and validates config text; `path` is only used in messages.
pub fn parse(src: &str, path: &Path) -> Result<Config, ConfigError> {
    let cfg: Config = toml::from_str(src).map_err(|e| ConfigError::syntax(path, src, &e))?;
    validate::validate(&cfg, src, path)?;
    Ok(cfg)
}

#[cfg(test)]
mod tests;
