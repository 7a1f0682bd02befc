//! A service's `replace` hook: run for a backend whose node is gone, it
//! provisions a substitute and prints it as one JSON line.

use std::{net::IpAddr, time::Duration};

use serde::Deserialize;

use crate::{
    config::ReplaceConfig,
    runner::{self, CommandSpec, Output},
};

/// What the hook prints on stdout (its last non-empty line), as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Substitute {
    /// The substitute's address.
    pub address: IpAddr,
    /// Its name (default: the dead backend's with `-r<attempt>`).
    #[serde(default)]
    pub name: Option<String>,
    /// Its weight (default: the dead backend's).
    #[serde(default)]
    pub weight: Option<u32>,
    /// Its next-hop MAC (default: the neighbour table).
    #[serde(default)]
    pub mac: Option<String>,
    /// Its port: the service's (a backend serves the service's port).
    #[serde(default)]
    pub port: Option<u16>,
}

/// Why an attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplaceError {
    /// The hook did not run, or not to the end.
    #[error("the hook could not run: {0}")]
    Run(#[from] runner::RunError),
    /// It exited with an error.
    #[error("the hook failed ({status}){stderr}")]
    Failed {
        /// `exit 3`, `signal 9`.
        status: String,
        /// Its last stderr line, if any, prefixed with ": ".
        stderr: String,
    },
    /// It printed no substitute.
    #[error("the hook printed no substitute (want a JSON line like {{\"address\": \"10.0.0.9\"}}): {0}")]
    Output(String),
    /// veerd refused the substitute.
    #[error("the substitute was refused: {0}")]
    Refused(String),
    /// It did not pass its checks in time.
    #[error("the substitute {name} was not up within {within:?}")]
    NotUp {
        /// Its name.
        name: String,
        /// `up_within`.
        within: Duration,
    },
}

/// Parses the hook's stdout: its last non-empty line.
pub fn parse_substitute(stdout: &[String]) -> Result<Substitute, ReplaceError> {
    let line = stdout.iter().rev().find(|l| !l.trim().is_empty()).ok_or_else(|| ReplaceError::Output("none".into()))?;
    serde_json::from_str(line.trim()).map_err(|e| ReplaceError::Output(format!("{line:?}: {e}")))
}

/// Runs the hook once for `service`/`backend` (at `address`).
pub async fn run_hook(
    service: &str,
    backend: &str,
    address: &str,
    cfg: &ReplaceConfig,
) -> Result<Substitute, ReplaceError> {
    let vars = [("address", address.to_string()), ("name", backend.to_string()), ("service", service.to_string())];
    let env = [
        ("VEER_SERVICE", service.to_string()),
        ("VEER_BACKEND", backend.to_string()),
        ("VEER_ADDRESS", address.to_string()),
    ];
    let label = format!("{service}/{backend} replace");
    let spec = CommandSpec {
        argv: &cfg.command,
        vars: &vars,
        env: &env,
        timeout: cfg.timeout,
        label: &label,
        output: Output::Capture,
        // The hook starts the substitute: whatever it leaves running stays.
        reap_group: false,
    };
    let out = runner::run(&spec).await?;
    if !out.status.success() {
        return Err(ReplaceError::Failed {
            status: runner::describe(&out.status),
            stderr: out.stderr.last().map(|l| format!(": {l}")).unwrap_or_default(),
        });
    }
    parse_substitute(&out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_json_line_is_the_substitute() {
        let out = vec!["creating namespace".into(), r#"{"address": "10.0.0.9", "name": "b1-new"}"#.into(), "".into()];
        let s = parse_substitute(&out).unwrap();
        assert_eq!((s.address.to_string(), s.name.as_deref()), ("10.0.0.9".into(), Some("b1-new")));
        assert!(parse_substitute(&["no json".into()]).is_err());
        assert!(parse_substitute(&[]).is_err());
        assert!(parse_substitute(&[r#"{"address": "10.0.0.9", "bogus": 1}"#.into()]).is_err());
        assert_eq!(parse_substitute(&[r#"{"address": "::1", "port": 80}"#.into()]).unwrap().port, Some(80));
    }
}
