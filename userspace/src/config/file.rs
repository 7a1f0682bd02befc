//! The config file as a whole: [`Config`], the tables its sections fill.

use serde::Deserialize;
use toml::Spanned;

use super::{backend::BackendConfig, daemon::DaemonConfig, fleet::FleetConfig, service::ServiceConfig};

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
