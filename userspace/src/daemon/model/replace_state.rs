//! Where a backend's replacement stands (see the daemon's recovery).

use std::time::Instant;

/// Where a backend's replacement stands.
#[derive(Debug)]
pub enum ReplaceState {
    /// The hook runs (attempt `attempt`).
    Running {
        /// The task running it.
        task: tokio::task::JoinHandle<()>,
        /// 1, 2, ...
        attempt: u32,
    },
    /// The substitute was added; it must pass its checks by `deadline`.
    Waiting {
        /// Its name.
        substitute: String,
        /// When it is given up.
        deadline: Instant,
        /// The attempt that made it.
        attempt: u32,
    },
    /// Attempt `attempt` failed; the next runs at `until`.
    Backoff {
        /// When the next attempt may run.
        until: Instant,
        /// The failed attempt.
        attempt: u32,
        /// Why it failed.
        error: String,
    },
}

impl ReplaceState {
    /// For status and `veerctl backends`.
    pub fn describe(&self, now: Instant) -> String {
        match self {
            ReplaceState::Running { attempt, .. } => format!("replacing (attempt {attempt}: hook running)"),
            ReplaceState::Waiting { substitute, attempt, .. } => {
                format!("replacing (attempt {attempt}: waiting for {substitute} to pass its checks)")
            }
            ReplaceState::Backoff { until, attempt, error } => format!(
                "replacing (attempt {attempt} failed: {error}; next in {:.0?})",
                until.saturating_duration_since(now)
            ),
        }
    }

    /// The number of the attempt it is at (or last made).
    pub fn attempt(&self) -> u32 {
        match self {
            ReplaceState::Running { attempt, .. }
            | ReplaceState::Waiting { attempt, .. }
            | ReplaceState::Backoff { attempt, .. } => *attempt,
        }
    }
}

impl Drop for ReplaceState {
    fn drop(&mut self) {
        if let ReplaceState::Running { task, .. } = self {
            task.abort();
        }
    }
}
