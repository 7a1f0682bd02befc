//! [`Ctx`]: what every `veerctl` command starts from: the config, the
//! runtime changes, the pins and veerd's API socket.

use std::{path::PathBuf, time::Duration};

use anyhow::{Context, Result};
use serde_json::Value;

use crate::{
    config::{self, Config},
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
}

impl Ctx {
    /// Loads the config and veerd's runtime-state file.
    pub fn load(config_path: PathBuf, json: bool) -> Result<Self> {
        let file = config::load(&config_path).map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut overrides = Overrides::load(&file.daemon.state_path(), &file).unwrap_or_default();
        let effective = overrides.apply(&file);
        Ok(Self { config_path, file, effective, overrides, json })
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
        let sock = self.file.daemon.socket_path();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let r = rt.block_on(async { tokio::time::timeout(Duration::from_secs(30), wire::call(&sock, &req)).await });
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
