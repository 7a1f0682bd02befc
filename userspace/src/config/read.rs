//! Reading a config: the TOML parsed strictly, then validated whole before
//! anything uses it.

use std::path::Path;

use super::{error::ConfigError, file::Config, validate};

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
