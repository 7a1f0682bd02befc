//! Publishing operator changes and config revisions: one transaction, each
//! key compared to the revision its change was made on; on a lost race,
//! the winning values.

use std::time::Duration;

use anyhow::Result;
use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp, TxnOpResponse};
use tokio::sync::mpsc;

use super::{
    etcd::within,
    messages::{FleetEvent, OpWrite, PublishOutcome},
};
use crate::fleet::{
    config::{ConfigKey, ConfigRecord, HISTORY_KEPT},
    keys::Keys,
};

/// Writes `writes` all or none and tells veerd what became of them. An
/// error (no answer) ends the session; the changes wait for the next.
pub(super) async fn publish(
    client: &mut Client,
    keys: &Keys,
    t: Duration,
    writes: Vec<OpWrite>,
    events: &mpsc::UnboundedSender<FleetEvent>,
) -> Result<()> {
    let compares: Vec<Compare> =
        writes.iter().map(|w| Compare::mod_revision(keys.op(&w.key), CompareOp::Equal, w.base_rev)).collect();
    let ops: Vec<TxnOp> = writes
        .iter()
        .map(|w| match &w.value {
            Some(v) => TxnOp::put(keys.op(&w.key), v.as_str(), None),
            None => TxnOp::delete(keys.op(&w.key), None),
        })
        .collect();
    // On a lost race, the same transaction reads what won.
    let reads: Vec<TxnOp> = writes.iter().map(|w| TxnOp::get(keys.op(&w.key), None)).collect();
    let names: Vec<String> = writes.into_iter().map(|w| w.key).collect();
    let txn = Txn::new().when(compares).and_then(ops).or_else(reads);
    match within(t, "publishing an operator change", client.txn(txn)).await {
        Ok(r) if r.succeeded() => {
            let revision = r.header().map_or(0, |h| h.revision());
            let _ = events.send(FleetEvent::Published { keys: names, outcome: PublishOutcome::Committed { revision } });
        }
        Ok(r) => {
            let won = names.iter().zip(r.op_responses()).map(|(k, resp)| (k.clone(), value_of(&resp))).collect();
            let _ = events.send(FleetEvent::Published { keys: names, outcome: PublishOutcome::Conflict { won } });
        }
        Err(e) => {
            let outcome = PublishOutcome::Failed(format!("{e:#}"));
            let _ = events.send(FleetEvent::Published { keys: names, outcome });
            return Err(e);
        }
    }
    Ok(())
}

/// Writes `record` as the fleet config's current revision and into the
/// history (dropping the entry [`HISTORY_KEPT`] revisions older), if the
/// current one is still the one written at `base_rev`; tells veerd as a
/// publish of its `tag` (a lost race names the revision that won).
pub(super) async fn push_config(
    client: &mut Client,
    keys: &Keys,
    t: Duration,
    (record, base_rev, tag): (ConfigRecord, i64, String),
    events: &mpsc::UnboundedSender<FleetEvent>,
) -> Result<()> {
    let current = keys.config(&ConfigKey::Current);
    let json = serde_json::to_string(&record)?;
    let mut ops = vec![
        TxnOp::put(current.as_str(), json.as_str(), None),
        TxnOp::put(keys.config(&ConfigKey::History(record.revision)), json.as_str(), None),
    ];
    if record.revision > HISTORY_KEPT {
        ops.push(TxnOp::delete(keys.config(&ConfigKey::History(record.revision - HISTORY_KEPT)), None));
    }
    let txn = Txn::new()
        .when([Compare::mod_revision(current.as_str(), CompareOp::Equal, base_rev)])
        .and_then(ops)
        .or_else([TxnOp::get(current.as_str(), None)]);
    let keys_of = || vec![tag.clone()];
    match within(t, "pushing the fleet's config", client.txn(txn)).await {
        Ok(r) if r.succeeded() => {
            let revision = r.header().map_or(0, |h| h.revision());
            let _ =
                events.send(FleetEvent::Published { keys: keys_of(), outcome: PublishOutcome::Committed { revision } });
        }
        Ok(r) => {
            let won =
                r.op_responses().first().and_then(value_of).map(|v| match serde_json::from_str::<ConfigRecord>(&v) {
                    Ok(w) => format!("revision {} pushed by {}", w.revision, w.by),
                    Err(_) => "an unreadable record".to_string(),
                });
            let outcome = PublishOutcome::Conflict { won: vec![(tag.clone(), won)] };
            let _ = events.send(FleetEvent::Published { keys: keys_of(), outcome });
        }
        Err(e) => {
            let outcome = PublishOutcome::Failed(format!("{e:#}"));
            let _ = events.send(FleetEvent::Published { keys: keys_of(), outcome });
            return Err(e);
        }
    }
    Ok(())
}

/// The value a read in a transaction found (`None`: no such key).
fn value_of(resp: &TxnOpResponse) -> Option<String> {
    match resp {
        TxnOpResponse::Get(g) => g.kvs().first().map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
        _ => None,
    }
}
