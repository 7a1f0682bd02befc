//! Shell completion of service and backend names: the shell asks veerctl
//! (`COMPLETE=bash veerctl ...`), which reads them from the instance's
//! config file and runtime state. Nothing is printed when that file cannot
//! be read: completion never fails a command line.

use std::path::PathBuf;

use clap_complete::CompletionCandidate;

use crate::{config, overrides::Overrides};

/// The config file the command line being completed names (`-c`,
/// `--config`), else `VEER_CONFIG`, else the default.
fn config_path() -> PathBuf {
    let args: Vec<String> = std::env::args().collect();
    let named = args.windows(2).rev().find_map(|w| match w[0].as_str() {
        "-c" | "--config" => Some(w[1].clone()),
        _ => w[1].strip_prefix("--config=").map(String::from),
    });
    named
        .or_else(|| std::env::var("VEER_CONFIG").ok())
        .map_or_else(|| PathBuf::from("/etc/veer/veer.toml"), PathBuf::from)
}

/// The running services with their backends (file plus runtime changes).
fn services() -> Vec<(String, Vec<String>)> {
    let Ok(file) = config::load(&config_path()) else { return Vec::new() };
    let mut o = Overrides::load(&file.daemon.state_path(), &file).unwrap_or_default();
    o.apply(&file)
        .services
        .iter()
        .map(|s| s.get_ref())
        .map(|s| (s.name.clone(), s.backends.iter().map(|b| b.get_ref().name.clone()).collect()))
        .collect()
}

/// Service names, each with its backends as help.
pub fn service_names() -> Vec<CompletionCandidate> {
    services().into_iter().map(|(s, bs)| CompletionCandidate::new(s).help(Some(bs.join(", ").into()))).collect()
}

/// Backend names of every service, each with its service as help.
pub fn backend_names() -> Vec<CompletionCandidate> {
    services()
        .into_iter()
        .flat_map(|(s, bs)| bs.into_iter().map(move |b| CompletionCandidate::new(b).help(Some(s.clone().into()))))
        .collect()
}
