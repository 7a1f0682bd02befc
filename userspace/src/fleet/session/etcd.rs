//! What every call to etcd is held to: a deadline ([`within`]), and etcd's
//! limit on a transaction's operations ([`TXN_OPS`]).

use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::time::timeout;

/// etcd refuses transactions of more than 128 operations (its default).
pub(super) const TXN_OPS: usize = 100;

/// Runs `f` under the configured deadline.
pub(super) async fn within<T, E: Into<anyhow::Error>>(
    t: Duration,
    what: &str,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T> {
    match timeout(t, f).await {
        Ok(r) => r.map_err(Into::into).with_context(|| what.to_string()),
        Err(_) => bail!("{what}: no answer within {t:?}"),
    }
}
