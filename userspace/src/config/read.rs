//! Reading a config: the TOML parsed strictly, then validated whole before
//! anything uses it.

use std::path::Path;

use super::{error::ConfigError, file::Config, validate};

/// Reads, parses and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let src = std::fs::read_to_string(path).map_err(|e| ConfigError::io(path, e))?;
    parse(&src, path)
}

/// [`load`], then checks the files the config names as veerd will open
/// them (the fleet's TLS certificates, key and password file): for `veerd
/// check` and `veerd run`. Each error names the field and the file.
pub fn load_for_veerd(path: &Path) -> Result<Config, ConfigError> {
    let src = std::fs::read_to_string(path).map_err(|e| ConfigError::io(path, e))?;
    let cfg = parse(&src, path)?;
    match validate::validate_files(&cfg, &src, path).into_iter().next() {
        Some(e) => Err(e),
        None => Ok(cfg),
    }
}

/// Parses and validates config text; `path` is only used in messages.
pub fn parse(src: &str, path: &Path) -> Result<Config, ConfigError> {
    let cfg: Config = toml::from_str(src).map_err(|e| ConfigError::syntax(path, src, &e))?;
    validate::validate(&cfg, src, path)?;
    Ok(cfg)
}
