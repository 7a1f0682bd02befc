//! [`Ctx`]: what every `veerctl` command starts from: the config, the
//! runtime changes, the pins and veerd's API socket.
//!
//! A config file that does not load does not lock the operator out:
//! commands that only ask veerd still find its socket (`--socket`,
//! `VEER_SOCKET`, or the `[daemon]` lines of the file that do parse).

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result};
use serde::Deserialize;
use serde_json::Value;

use crate::{
    config::{self, Config, DaemonConfig},
    dataplane::PinnedMaps,
    overrides::Overrides,
    wire::{self, Request, Response, Status},
};

/// What every command needs: the instance's config and where things are.
pub struct Ctx {
    /// The config file.
    pub config_path: PathBuf,
    /// The config file as written.
    pub file: Config,
    /// The config as running: file plus runtime changes.
    pub effective: Config,
    /// The runtime changes.
    pub overrides: Overrides,
    /// Print JSON instead of tables.
    pub json: bool,
    /// veerd's API socket.
    pub socket: PathBuf,
    /// Why the config file did not load (then `file` holds only its
    /// `[daemon]` settings that could be read, and no services).
    pub config_error: Option<String>,
}

/// `[daemon]` keys read from a file that does not load as a whole: where
/// veerd's socket, pins and runtime state are, and who may use the API.
const LOCATOR_KEYS: [&str; 6] = ["name", "api_socket", "bpffs", "state_file", "api_group", "api_admin_group"];

impl Ctx {
    /// Loads the config and veerd's runtime-state file. `socket` (from
    /// `--socket` or `VEER_SOCKET`) overrides the config's. A file that
    /// does not load is kept as [`Ctx::config_error`], not returned.
    pub fn load(config_path: PathBuf, socket: Option<PathBuf>, json: bool) -> Result<Self> {
        let (file, config_error) = match config::load(&config_path) {
            Ok(f) => (f, None),
            Err(e) => {
                (Config { daemon: daemon_lines(&config_path), services: Vec::new(), fleet: None }, Some(e.to_string()))
            }
        };
        // A fleet node runs the fleet's services when it keeps a revision.
        let file = match config::kept::with_kept(&file) {
            Ok(Some((running, _, _))) => running,
            _ => file,
        };
        let socket = socket.unwrap_or_else(|| file.daemon.socket_path());
        let mut overrides = Overrides::load(&file.daemon.state_path(), &file).unwrap_or_default();
        let effective = overrides.apply(&file);
        Ok(Self { config_path, file, effective, overrides, json, socket, config_error })
    }

    /// Fails, naming the file's problem, when the config did not load: for
    /// commands that need its services and backends.
    pub fn require_config(&self) -> Result<()> {
        match &self.config_error {
            None => Ok(()),
            Some(e) => anyhow::bail!(
                "{e}\n(this command needs the config; those that only ask veerd work without it: status, drain, \
                 enable, disable, weight, add-backend, remove-backend, reload, node, events)"
            ),
        }
    }

    /// The pinned maps (fails clearly when the dataplane is not installed).
    pub fn pins(&self) -> Result<PinnedMaps> {
        let dir = self.file.daemon.pin_dir();
        if !dir.exists() {
            anyhow::bail!(
                "no dataplane pinned at {} (is veerd running with {}?)",
                dir.display(),
                self.config_path.display()
            );
        }
        PinnedMaps::open(&dir).with_context(|| format!("opening the pins in {}", dir.display()))
    }

    /// Sends a request to veerd.
    pub fn call(&self, req: Request) -> Result<Response> {
        let sock = &self.socket;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let r = rt.block_on(async { tokio::time::timeout(Duration::from_secs(30), wire::call(sock, &req)).await });
        match r {
            Err(_) => anyhow::bail!("veerd did not answer within 30 s on {}", sock.display()),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::PermissionDenied => anyhow::bail!(
                "permission denied on {}: only root{} may control veerd",
                sock.display(),
                match (&self.file.daemon.api_group, &self.file.daemon.api_admin_group) {
                    (Some(g), _) => format!(" and members of group {g} (to read)"),
                    (None, Some(g)) => format!(" and members of group {g}"),
                    (None, None) => String::new(),
                }
            ),
            Ok(Err(e)) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) => {
                anyhow::bail!("veerd is not running (no socket at {}): {e}", sock.display())
            }
            Ok(Err(e)) => Err(e).with_context(|| format!("talking to veerd on {}", sock.display())),
            Ok(Ok(r)) => Ok(r),
        }
    }

    /// Sends a request and turns a refusal into an error.
    pub fn call_ok(&self, req: Request) -> Result<Value> {
        let r = self.call(req)?;
        if r.ok {
            Ok(r.result.unwrap_or(Value::Null))
        } else {
            anyhow::bail!("{}", r.error.unwrap_or_else(|| "refused".into()))
        }
    }

    /// veerd's status, if it answers.
    pub fn daemon_status(&self) -> Option<Status> {
        self.call(Request::Status).ok().and_then(|r| r.status().ok())
    }

    /// Prints `v` as JSON, or `text` otherwise.
    pub fn emit(&self, v: &Value, text: impl FnOnce() -> String) {
        if self.json {
            println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
        } else {
            print!("{}", text());
        }
    }
}

/// The `[daemon]` settings of [`LOCATOR_KEYS`] from a file that does not
/// load: each line of its `[daemon]` table parsed on its own, so a mistake
/// elsewhere (or in another daemon key) does not hide them. Defaults for
/// what cannot be read.
fn daemon_lines(path: &Path) -> DaemonConfig {
    let Ok(text) = std::fs::read_to_string(path) else { return DaemonConfig::default() };
    let mut table = toml::Table::new();
    let mut in_daemon = false;
    for line in text.lines().map(str::trim) {
        if let Some(header) = line.strip_prefix('[') {
            in_daemon = header.split(']').next().map(str::trim) == Some("daemon");
        } else if in_daemon {
            if let Ok(kv) = line.parse::<toml::Table>() {
                table.extend(kv.into_iter().filter(|(k, _)| LOCATOR_KEYS.contains(&k.as_str())));
            }
        }
    }
    DaemonConfig::deserialize(toml::Value::Table(table)).unwrap_or_default()
}
