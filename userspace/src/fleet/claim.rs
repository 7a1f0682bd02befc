//! One-per-fleet actions: a record per action, written only by a leader
//! whose leadership still holds ([`Fence`]) and only if no one wrote it
//! since it was read. A deposed leader (one that has not yet heard it lost
//! the election) cannot run an action; two leaders in turn cannot both run
//! the same one.

use std::time::Duration;

use anyhow::{Context, Result};
use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};

use super::fence::Fence;

/// Deadline of each etcd request here.
const DEADLINE: Duration = Duration::from_secs(2);

/// The record at `key` and its mod revision, if there is one.
pub async fn read(client: &mut Client, key: &str) -> Result<Option<(Vec<u8>, i64)>> {
    let r = tokio::time::timeout(DEADLINE, client.get(key, None))
        .await
        .with_context(|| format!("reading {key}: no answer"))?
        .with_context(|| format!("reading {key}"))?;
    Ok(r.kvs().first().map(|kv| (kv.value().to_vec(), kv.mod_revision())))
}

/// Writes `value` at `key` if `fence` holds and the record is still at
/// `seen_rev` (0: there was none). Returns the revision written, or `None`
/// when another leader was first or the leadership is gone.
pub async fn claim(
    client: &mut Client,
    fence: &Fence,
    key: &str,
    seen_rev: i64,
    value: Vec<u8>,
) -> Result<Option<i64>> {
    let txn = Txn::new()
        .when([fence.compare(), Compare::mod_revision(key, CompareOp::Equal, seen_rev)])
        .and_then([TxnOp::put(key, value, None)]);
    let r = tokio::time::timeout(DEADLINE, client.txn(txn))
        .await
        .with_context(|| format!("claiming {key}: no answer"))?
        .with_context(|| format!("claiming {key}"))?;
    Ok(r.succeeded().then(|| r.header().map_or(0, |h| h.revision())))
}

/// Deletes the record at `key` if `fence` holds.
pub async fn release(client: &mut Client, fence: &Fence, key: &str) -> Result<()> {
    let txn = Txn::new().when([fence.compare()]).and_then([TxnOp::delete(key, None)]);
    tokio::time::timeout(DEADLINE, client.txn(txn))
        .await
        .with_context(|| format!("releasing {key}: no answer"))?
        .with_context(|| format!("releasing {key}"))?;
    Ok(())
}

/// The record of a one-per-fleet action: the last run.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ActionRecord {
    /// Its number (a replace hook's attempt; counts up for scale hooks).
    pub seq: u64,
    /// The node that ran it.
    pub node: String,
    /// When (ms since the epoch).
    pub at_ms: u64,
}

/// A leader's claim on one kind of action (`P/actions/...`).
pub struct ActionGate {
    /// The session's client.
    pub client: Client,
    /// The leadership.
    pub fence: Fence,
    /// The action's record.
    pub key: String,
    /// This node.
    pub node: String,
}

impl ActionGate {
    /// Claims the run of action `seq` (`None`: the one after the last),
    /// no sooner than `spacing` after the last run. `Ok(Err(why))` when it
    /// is not this node's to run: it already ran, too recently, or another
    /// leader was first.
    pub async fn claim(&mut self, seq: Option<u64>, spacing: Duration) -> Result<Result<u64, String>> {
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let (last, rev) = match read(&mut self.client, &self.key).await? {
            Some((v, rev)) => {
                (Some(serde_json::from_slice::<ActionRecord>(&v).context("an unreadable action record")?), rev)
            }
            None => (None, 0),
        };
        if let Some(l) = &last {
            if seq.is_some_and(|s| s <= l.seq) {
                return Ok(Err(format!("run {} already ran on {}", l.seq, l.node)));
            }
            if now < l.at_ms + spacing.as_millis() as u64 {
                return Ok(Err(format!("{} ran it {} ms ago", l.node, now.saturating_sub(l.at_ms))));
            }
        }
        let seq = seq.unwrap_or_else(|| last.as_ref().map_or(1, |l| l.seq + 1));
        let rec = ActionRecord { seq, node: self.node.clone(), at_ms: now };
        match claim(&mut self.client, &self.fence, &self.key, rev, serde_json::to_vec(&rec)?).await? {
            Some(_) => Ok(Ok(seq)),
            None => Ok(Err("another leader was first, or this node's leadership is gone".into())),
        }
    }
}
