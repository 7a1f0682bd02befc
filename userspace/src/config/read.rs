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

/// What `veerd check` reports: the config, or every problem found in it,
/// in file order (a TOML or type error stops the reading, so it comes
/// alone; the rules and the files the config names are all checked).
pub fn check(path: &Path) -> Result<Config, Vec<ConfigError>> {
    let src = std::fs::read_to_string(path).map_err(|e| vec![ConfigError::io(path, e)])?;
    let cfg: Config = toml::from_str(&src).map_err(|e| vec![ConfigError::syntax(path, &src, &e)])?;
    let mut errors = validate::validate_all(&cfg, &src, path);
    if errors.is_empty() {
        errors = validate::validate_files(&cfg, &src, path);
    }
    errors.sort_by_key(|e| e.line);
    if errors.is_empty() {
        Ok(cfg)
    } else {
        Err(errors)
    }
}

/// Parses and validates config text; `path` is only used in messages.
pub fn parse(src: &str, path: &Path) -> Result<Config, ConfigError> {
    let cfg: Config = toml::from_str(src).map_err(|e| ConfigError::syntax(path, src, &e))?;
    validate::validate(&cfg, src, path)?;
    Ok(cfg)
}

/// The config a fleet node runs: its own `[daemon]` and `[fleet]` from
/// `local`, and the fleet's `[[service]]` tables from `text` (a fleet
/// config revision, named `name` in messages), validated together. The
/// fleet's text may hold nothing but `[[service]]` tables.
pub fn with_fleet_services(local: &Config, text: &str, name: &str) -> Result<Config, ConfigError> {
    let path = Path::new(name);
    let table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::syntax(path, text, &e))?;
    if let Some(other) = table.keys().find(|k| *k != "service") {
        return Err(ConfigError {
            file: name.to_string(),
            line: None,
            field: other.clone(),
            message: "a fleet's config holds [[service]] tables only; [daemon] and [fleet] stay in each node's file"
                .into(),
        });
    }
    let pushed: Config = toml::from_str(text).map_err(|e| ConfigError::syntax(path, text, &e))?;
    let allowed = local.fleet.as_ref().and_then(|f| f.etcd.as_ref()).is_some_and(|e| e.pushed_commands);
    if !allowed {
        if let Some(field) = pushed.services.iter().find_map(|s| commands_in(s.get_ref())) {
            return Err(ConfigError {
                file: name.to_string(),
                line: None,
                field,
                message: "a command in the fleet's config: this node runs none (a writer of etcd would run it on \
                          every node); set fleet.etcd.pushed_commands = true on the nodes that may"
                    .into(),
            });
        }
    }
    let cfg = Config { daemon: local.daemon.clone(), fleet: local.fleet.clone(), services: pushed.services };
    validate::validate(&cfg, text, path)?;
    Ok(cfg)
}

/// The first field of `s` that holds a command veerd would run, if any:
/// an exec check, update, restart, replace and scale hooks.
fn commands_in(s: &super::ServiceConfig) -> Option<String> {
    let p = format!("service[{}]", s.name);
    if s.health.kind == super::health::CheckKind::Exec {
        return Some(format!("{p}.health.command"));
    }
    if !s.update.is_empty() {
        return Some(format!("{p}.update"));
    }
    if s.scale.as_ref().is_some_and(|x| !x.out.is_empty() || !x.in_.is_empty()) {
        return Some(format!("{p}.scale"));
    }
    if s.replace.is_some() {
        return Some(format!("{p}.replace.command"));
    }
    s.backends.iter().map(|b| b.get_ref()).find_map(|b| {
        let q = format!("{p}.backend[{}]", b.name);
        if b.restart.is_some() {
            Some(format!("{q}.restart"))
        } else if !b.update.is_empty() {
            Some(format!("{q}.update"))
        } else if b.health.as_ref().is_some_and(|h| h.command.is_some()) {
            Some(format!("{q}.health.command"))
        } else {
            None
        }
    })
}
