//! Recovery: a backend's restart command, run while it is down, with
//! exponential backoff and a cap on attempts. Its output goes to the logs.

use std::{process::Stdio, time::Duration};

use tokio::{io::AsyncBufReadExt, process::Command};
use tracing::{error, info, warn};

use crate::config::RestartConfig;

/// Runs the restart command until the task is aborted (the backend came up)
/// or `max_attempts` runs have not helped.
pub async fn restart_loop(
    service: String,
    backend: String,
    address: String,
    cfg: RestartConfig,
    attempts: std::sync::Arc<std::sync::atomic::AtomicU64>,
) {
    let argv: Vec<String> =
        cfg.command.iter().map(|a| a.replace("{address}", &address).replace("{name}", &backend)).collect();
    let mut wait = cfg.backoff;
    for attempt in 1..=cfg.max_attempts {
        tokio::time::sleep(wait).await;
        info!(%service, %backend, attempt, max = cfg.max_attempts, command = ?argv, "running restart command");
        attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match run_logged(&argv, &[], cfg.timeout, &service, &backend).await {
            Ok(status) if status.success() => info!(%service, %backend, attempt, "restart command succeeded"),
            Ok(status) => warn!(%service, %backend, attempt, %status, "restart command failed"),
            Err(e) => warn!(%service, %backend, attempt, error = %e, "restart command could not run"),
        }
        wait = (wait * 2).min(cfg.max_backoff);
    }
    // Wait out the last backoff so the last attempt had its chance too.
    tokio::time::sleep(wait).await;
    error!(%service, %backend, attempts = cfg.max_attempts, "backend still down after every restart attempt; giving up until it recovers");
}

/// Runs a command (no shell) with extra environment, logging its output
/// lines under `service`/`backend`, killed after `limit`.
pub async fn run_logged(
    argv: &[String],
    env: &[(&str, String)],
    limit: Duration,
    service: &str,
    backend: &str,
) -> std::io::Result<std::process::ExitStatus> {
    let (prog, args) = argv.split_first().ok_or_else(|| std::io::Error::other("empty command"))?;
    let mut child = Command::new(prog)
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let out = child.stdout.take().map(tokio::io::BufReader::new);
    let err = child.stderr.take().map(tokio::io::BufReader::new);
    let log_lines = async {
        tokio::join!(log_stream(out, service, backend, false), log_stream(err, service, backend, true));
    };
    let done = tokio::time::timeout(limit, async {
        log_lines.await;
        child.wait().await
    })
    .await;
    match done {
        Ok(r) => r,
        Err(_) => {
            let _ = child.start_kill();
            Err(std::io::Error::other(format!("timed out after {limit:?}; killed")))
        }
    }
}

/// Logs each line of a child's output (stderr as warnings).
async fn log_stream<R: tokio::io::AsyncBufRead + Unpin>(r: Option<R>, service: &str, backend: &str, is_err: bool) {
    let Some(mut r) = r else { return };
    let mut line = String::new();
    while r.read_line(&mut line).await.unwrap_or(0) > 0 {
        if is_err {
            warn!(%service, %backend, stream = "stderr", "{}", line.trim_end());
        } else {
            info!(%service, %backend, stream = "stdout", "{}", line.trim_end());
        }
        line.clear();
    }
}
