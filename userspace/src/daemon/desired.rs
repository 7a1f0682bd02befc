//! What veerd is asked to run.

use crate::{config::Config, daemon::model::plan, overrides::Overrides};

/// What veerd is asked to run: the config file and the runtime changes on
/// top of it.
pub struct Desired {
    /// The config file's path (reloads read it again).
    pub path: std::path::PathBuf,
    /// The file as last applied.
    pub file: Config,
    /// Runtime changes on top of the file, persisted in the state file.
    pub overrides: Overrides,
    /// Backend ids recently freed (held back before reuse).
    pub ids: plan::IdPool,
    /// Reloads applied and refused.
    pub reloads: [u64; 2],
    /// The fleet config revision this node runs (its `[[service]]` tables
    /// replace the file's), and its text.
    pub fleet_config: Option<(u64, String)>,
}
