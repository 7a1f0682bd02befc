//! The leader's restart attempts. Each attempt is recorded in
//! `P/restarts/<service>/<backend>` before it runs, in a transaction that
//! commits only while this node's leadership lasts ([`Fence`]) and no one
//! else recorded an attempt since it read the record: an attempt runs once
//! per fleet, even across a leader change. A new leader continues from the
//! record: the next attempt waits until the last one finished, or (its
//! leader died mid-run) until its deadline, so attempts never overlap.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use etcd_client::Client;
use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

use super::fence::Fence;
use crate::{config::RestartConfig, hooks::restart};

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
        match super::claim::read(&mut self.client, &self.key).await? {
            None => Ok(None),
            Some((v, rev)) => Ok(Some((serde_json::from_slice(&v).context("an unreadable restart record")?, rev))),
        }
    }

    /// Writes `rec` if the record is still at `rev` and the leadership holds.
    async fn write(&mut self, rec: &RestartRecord, rev: i64) -> Result<Option<i64>> {
        super::claim::claim(&mut self.client, &self.fence, &self.key, rev, serde_json::to_vec(rec)?).await
    }

    async fn step(&mut self) -> Result<Step> {
        let current = self.read().await?;
        let n = current.as_ref().map_or(1, |(r, _)| r.attempt + 1);
        if n > self.cfg.max_attempts {
            return Ok(Step::GaveUp(n - 1));
        }
        let wait = restart::wait_before(&self.cfg, n);
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
        restart::run_attempt(&service, &backend, &self.address, &self.cfg, n, &env).await;
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
}
