//! Publishing operator changes: one transaction, each key compared to the
//! revision its change was made on; on a lost race, the winning values.

use std::time::Duration;

use anyhow::Result;
use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp, TxnOpResponse};
use tokio::sync::mpsc;

use super::{
    etcd::within,
    messages::{FleetEvent, OpWrite, PublishOutcome},
};
use crate::fleet::keys::Keys;

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

/// The value a read in a transaction found (`None`: no such key).
fn value_of(resp: &TxnOpResponse) -> Option<String> {
    match resp {
        TxnOpResponse::Get(g) => g.kvs().first().map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
        _ => None,
    }
}
