//! Recovery: a backend's restart command, run while it is down, with
//! exponential backoff and a cap on attempts. Its output goes to the logs.

use tracing::{error, info, warn};

use crate::{
    config::RestartConfig,
    runner::{self, CommandSpec, Output},
};

/// Runs the restart command until the task is aborted (the backend came up)
/// or `max_attempts` runs have not helped.
pub async fn restart_loop(
    service: String,
    backend: String,
    address: String,
    cfg: RestartConfig,
    attempts: std::sync::Arc<std::sync::atomic::AtomicU64>,
) {
    for attempt in 1..=cfg.max_attempts {
        tokio::time::sleep(wait_before(&cfg, attempt)).await;
        attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        run_attempt(&service, &backend, &address, &cfg, attempt, &[]).await;
    }
    // Wait out the last backoff so the last attempt had its chance too.
    tokio::time::sleep(wait_before(&cfg, cfg.max_attempts.saturating_add(1))).await;
    error!(%service, %backend, attempts = cfg.max_attempts, "backend still down after every restart attempt; giving up until it recovers");
}

/// The wait before attempt `attempt` (1, 2, ...) of an outage.
pub fn wait_before(cfg: &RestartConfig, attempt: u32) -> std::time::Duration {
    super::backoff::backoff(cfg.backoff, cfg.max_backoff, attempt)
}

/// Runs the restart command once, attempt `attempt` (`VEER_ATTEMPT`), with
/// `env` added to its environment; logs how it went.
pub async fn run_attempt(
    service: &str,
    backend: &str,
    address: &str,
    cfg: &RestartConfig,
    attempt: u32,
    env: &[(&str, String)],
) {
    let vars = [("address", address.to_string()), ("name", backend.to_string())];
    let label = format!("{service}/{backend} restart");
    let mut all_env = vec![
        ("VEER_SERVICE", service.to_string()),
        ("VEER_BACKEND", backend.to_string()),
        ("VEER_ATTEMPT", attempt.to_string()),
    ];
    all_env.extend(env.iter().cloned());
    info!(%service, %backend, attempt, max = cfg.max_attempts, command = ?runner::expand(&cfg.command, &vars), "running restart command");
    let spec = CommandSpec {
        argv: &cfg.command,
        vars: &vars,
        env: &all_env,
        timeout: cfg.timeout,
        label: &label,
        output: Output::Log,
        // A restart command may leave the server it started running.
        reap_group: false,
    };
    match runner::run(&spec).await {
        Ok(o) if o.status.success() => info!(%service, %backend, attempt, "restart command succeeded"),
        Ok(o) => warn!(%service, %backend, attempt, status = %runner::describe(&o.status), "restart command failed"),
        Err(e) => warn!(%service, %backend, attempt, error = %e, "restart command could not run"),
    }
}
