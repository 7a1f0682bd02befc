//! The leader's restart attempts. Each attempt is recorded in
//! `P/restarts/<service>/<backend>` before it runs, in a transaction that
//! commits only while this node's leadership lasts ([`Fence`]) and no one
//! else recorded an attempt since it read the record: an attempt runs once
//! per fleet, even across a leader change. A new leader continues from the
//! record: the next attempt waits until the last one finished, or (its
//! leader died mid-run) until its deadline, so attempts never overlap.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};
use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

use super::Fence;
use crate::config::RestartConfig;

/// Deadline of each etcd request here.
const ETCD_DEADLINE: Duration = Duration::from_secs(2);

/// The last attempt of the current outage, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartRecord {
    /// 1 for the first attempt of an outage.
    pub attempt: u32,
    /// The node that ran it.
    pub node: String,
    /// When it started (ms since the epoch).
    pub started_ms: u64,
    /// When it is over at the latest: its start plus the command's timeout.
    pub deadline_ms: u64,
    /// When it finished, once it has.
    pub finished_ms: Option<u64>,
}

impl RestartRecord {
    /// When the attempt after this one may start: `backoff` after this one
    /// ended (or its deadline passed, if its leader died before saying).
    pub fn next_at(&self, backoff: Duration) -> u64 {
        self.finished_ms.unwrap_or(self.deadline_ms) + backoff.as_millis() as u64
    }
}

/// The wait before attempt `n` (1-based): `backoff` doubled per attempt, up to `max_backoff`.
pub fn backoff(cfg: &RestartConfig, n: u32) -> Duration {
    let doublings = n.saturating_sub(1).min(20);
    (cfg.backoff * 2u32.pow(doublings)).min(cfg.max_backoff)
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// One backend's restarts, run by the leader while the fleet sees it down.
pub struct RestartJob {
    /// The session's client.
    pub client: Client,
    /// The leadership the attempts are fenced by.
    pub fence: Fence,
    /// `P/restarts/<service>/<backend>`.
    pub key: String,
    /// This node.
    pub node: String,
    /// The service.
    pub service: String,
    /// The backend.
    pub backend: String,
    /// Its address (`{address}` in the command).
    pub address: String,
    /// The restart settings.
    pub cfg: RestartConfig,
    /// Attempts run here (the daemon's metric).
    pub attempts: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl RestartJob {
    /// Runs attempts until `max_attempts` are recorded; aborted when the
    /// backend comes up or the leadership goes.
    pub async fn run(mut self) {
        let (service, backend) = (self.service.clone(), self.backend.clone());
        loop {
            match self.step().await {
                Ok(Step::Ran | Step::Raced) => {}
                Ok(Step::GaveUp(n)) => {
                    error!(%service, %backend, attempts = n, "backend still down after every restart attempt of the fleet; giving up until it recovers");
                    return;
                }
                Err(e) => {
                    warn!(%service, %backend, error = %format!("{e:#}"), "fleet restart: etcd failed; trying again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    async fn read(&mut self) -> Result<Option<(RestartRecord, i64)>> {
        let r = tokio::time::timeout(ETCD_DEADLINE, self.client.get(self.key.as_str(), None))
            .await
            .context("reading the restart record: no answer")?
            .context("reading the restart record")?;
        match r.kvs().first() {
            None => Ok(None),
            Some(kv) => {
                let rec = serde_json::from_slice(kv.value()).context("an unreadable restart record")?;
                Ok(Some((rec, kv.mod_revision())))
            }
        }
    }

    /// Writes `rec` if the record is still at `rev` and the leadership holds.
    async fn write(&mut self, rec: &RestartRecord, rev: i64) -> Result<Option<i64>> {
        let txn = Txn::new()
            .when([self.fence.compare(), Compare::mod_revision(self.key.as_str(), CompareOp::Equal, rev)])
            .and_then([TxnOp::put(self.key.as_str(), serde_json::to_vec(rec)?, None)]);
        let r = tokio::time::timeout(ETCD_DEADLINE, self.client.txn(txn))
            .await
            .context("recording a restart attempt: no answer")?
            .context("recording a restart attempt")?;
        Ok(r.succeeded().then(|| r.header().map_or(0, |h| h.revision())))
    }

    async fn step(&mut self) -> Result<Step> {
        let current = self.read().await?;
        let n = current.as_ref().map_or(1, |(r, _)| r.attempt + 1);
        if n > self.cfg.max_attempts {
            return Ok(Step::GaveUp(n - 1));
        }
        let wait = backoff(&self.cfg, n);
        let at = current.as_ref().map_or(now_ms() + wait.as_millis() as u64, |(r, _)| r.next_at(wait));
        tokio::time::sleep(Duration::from_millis(at.saturating_sub(now_ms()))).await;
        let started = now_ms();
        let mut rec = RestartRecord {
            attempt: n,
            node: self.node.clone(),
            started_ms: started,
            deadline_ms: started + self.cfg.timeout.as_millis() as u64,
            finished_ms: None,
        };
        let Some(rev) = self.write(&rec, current.map_or(0, |(_, rev)| rev)).await? else {
            // Someone recorded an attempt first (a leader before us), or the
            // leadership went: read again.
            tokio::time::sleep(Duration::from_millis(200)).await;
            return Ok(Step::Raced);
        };
        let (service, backend) = (self.service.clone(), self.backend.clone());
        info!(%service, %backend, attempt = n, "fleet leader: attempt recorded; running it");
        self.attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let env = [("VEER_NODE", self.node.clone())];
        crate::daemon::recovery::run_attempt(&service, &backend, &self.address, &self.cfg, n, &env).await;
        rec.finished_ms = Some(now_ms());
        if self.write(&rec, rev).await?.is_none() {
            warn!(%service, %backend, attempt = n, "the restart record changed under the attempt (leadership lost?)");
        }
        Ok(Step::Ran)
    }
}

enum Step {
    Ran,
    Raced,
    GaveUp(u32),
}

/// Ends an outage's record (the backend is up again), fenced like the
/// attempts so a deposed leader cannot erase its successor's.
pub async fn clear(mut client: Client, fence: Fence, key: String) -> Result<()> {
    let txn = Txn::new().when([fence.compare()]).and_then([TxnOp::delete(key.as_str(), None)]);
    tokio::time::timeout(ETCD_DEADLINE, client.txn(txn))
        .await
        .context("clearing a restart record: no answer")?
        .context("clearing a restart record")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_attempt_waits_for_the_last_to_end_or_its_deadline() {
        let mut r =
            RestartRecord { attempt: 1, node: "a".into(), started_ms: 1000, deadline_ms: 6000, finished_ms: None };
        assert_eq!(r.next_at(Duration::from_millis(500)), 6500, "its leader died mid-run: wait out its deadline");
        r.finished_ms = Some(2000);
        assert_eq!(r.next_at(Duration::from_millis(500)), 2500);
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let cfg = RestartConfig {
            command: vec!["true".into()],
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(5),
            max_attempts: 9,
            timeout: Duration::from_secs(1),
        };
        let b: Vec<u64> = (1..=5).map(|n| backoff(&cfg, n).as_secs()).collect();
        assert_eq!(b, [1, 2, 4, 5, 5]);
    }
}
