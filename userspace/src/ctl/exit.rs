//! Exit statuses that are no errors.

/// A command that ran and reports through its exit status, not an error:
/// `veerctl status` for monitoring (1 degraded, 2 a service that serves no
/// one). `veerctl` prints nothing more and exits with it.
#[derive(Debug, thiserror::Error)]
#[error("exit status {0}")]
pub struct ExitStatus(pub u8);
