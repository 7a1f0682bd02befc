//! veerd's configuration: a TOML file, parsed strictly and validated whole
//! before anything uses it.
//!
//! Every error names the file, the line and the field. Unknown fields are
//! errors, not warnings: a typo must not silently fall back to a default.

mod backend;
mod daemon;
pub mod diff;
mod duration;
mod error;
mod file;
mod fleet;
mod health;
mod hooks;
pub mod kept;
mod read;
pub mod rules;
mod service;
mod validate;

pub use backend::{BackendConfig, HealthOverride, RestartConfig};
pub use daemon::{AttachModeConfig, DaemonConfig, PortRange, SynCookies, SynRescue};
pub use error::ConfigError;
pub use file::Config;
pub use fleet::{EtcdConfig, FleetConfig, NatSyncConfig, NatSyncPeer};
pub use health::{AgentConfig, CheckKind, HealthConfig, InitialState, PassiveConfig};
pub use hooks::{ReplaceConfig, ScaleConfig, ScaleMetric};
pub use read::{check, load, load_for_veerd, parse, with_fleet_services};
pub use rules::{fmt_mac, parse_mac};
pub use service::{Fallback, Forwarding, SchedulerConfig, ServiceConfig};

#[cfg(test)]
mod check_tests;
#[cfg(test)]
mod fleet_tests;
#[cfg(test)]
mod tests;
