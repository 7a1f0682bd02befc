//! Opening a session: the node's lease, its keys under it, the first read
//! of the fleet's state and the watch that follows it.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use etcd_client::{
    Client, GetOptions, KeyValue, LeaseKeepAliveStream, LeaseKeeper, PutOptions, Txn, TxnOp, WatchOptions, WatchStream,
};
use tokio::sync::mpsc;

use super::{
    connect::{explain, options},
    etcd::{within, TXN_OPS},
    messages::FleetEvent,
    verdicts::{word, Verdicts},
};
use crate::{
    config::EtcdConfig,
    fleet::{config::ConfigKey, keys::Keys, view::Change},
};

/// A session's hold on etcd: the node's lease and its renewal streams.
pub(super) struct NodeLease {
    /// The lease id the node's keys are put under.
    pub(super) id: i64,
    /// Its time to live, in seconds.
    pub(super) ttl: i64,
    keeper: LeaseKeeper,
    renewals: LeaseKeepAliveStream,
}

impl NodeLease {
    /// One renewal; an expired lease ends the session (its keys are gone).
    pub(super) async fn renew(&mut self, t: Duration) -> Result<()> {
        within(t, "renewing the lease", self.keeper.keep_alive()).await?;
        let m = within(t, "renewing the lease", self.renewals.message()).await?.context("the renewal stream ended")?;
        if m.ttl() <= 0 {
            bail!("the node's lease expired");
        }
        Ok(())
    }
}

/// How often a connecting node tries every endpoint again while earlier
/// tries still wait: a try sent while the network was cut waits out a SYN
/// retransmission (1 s), so a healed member is found within this instead.
const RETRY_EVERY: Duration = Duration::from_millis(250);

/// The head start of the first endpoint (the node's own member, by
/// convention): a node stays on it while it answers.
const FIRST_HEAD_START: Duration = Duration::from_millis(100);

/// Connects to whichever endpoint answers first (a member with a leader:
/// `require_leader` refuses the rest), trying all of them at once (the
/// first with a head start) and again every [`RETRY_EVERY`], for
/// `cfg.timeout` at most; then grants the node's
/// lease and writes its liveness key and its verdicts under it. A refusal
/// (certificates, user, permissions) says what to check.
pub(super) async fn open(cfg: &EtcdConfig, keys: &Keys, verdicts: &Verdicts) -> Result<(Client, NodeLease, String)> {
    let (mut client, endpoint) = first_answer(cfg, keys).await.map_err(|e| explain(cfg, e))?;
    let lease = write_node(cfg, &mut client, keys, verdicts).await.map_err(|e| explain(cfg, e))?;
    Ok((client, lease, endpoint))
}

/// The first endpoint to answer a read, with its client.
async fn first_answer(cfg: &EtcdConfig, keys: &Keys) -> Result<(Client, String)> {
    let opts = options(cfg)?;
    let t = cfg.timeout;
    let node_key = keys.node(&cfg.node);
    let mut tries = tokio::task::JoinSet::new();
    let mut again = tokio::time::interval(RETRY_EVERY);
    let round = tokio::time::sleep(t);
    tokio::pin!(round);
    let mut last: Option<anyhow::Error> = None;
    loop {
        tokio::select! {
            _ = again.tick() => {
                for (k, endpoint) in cfg.endpoints.iter().enumerate() {
                    let (endpoint, opts, key) = (endpoint.clone(), opts.clone(), node_key.clone());
                    tries.spawn(async move {
                        if k > 0 {
                            tokio::time::sleep(FIRST_HEAD_START).await;
                        }
                        let mut c = within(t, "connecting", Client::connect([endpoint.as_str()], Some(opts))).await?;
                        within(t, "reading the node's key", c.get(key, None)).await?;
                        Ok::<_, anyhow::Error>((c, endpoint))
                    });
                }
            }
            Some(done) = tries.join_next() => match done {
                Ok(Ok(won)) => return Ok(won),
                Ok(Err(e)) => last = Some(e),
                Err(e) => last = Some(anyhow::anyhow!("a connection task failed: {e}")),
            },
            () = &mut round => {
                let e = last.unwrap_or_else(|| anyhow::anyhow!("no endpoint answered within {t:?}"));
                return Err(e.context(format!("no etcd endpoint answered ({})", cfg.endpoints.join(", "))));
            }
        }
    }
}

/// Grants the node's lease and writes its liveness key and verdicts under it.
async fn write_node(cfg: &EtcdConfig, client: &mut Client, keys: &Keys, verdicts: &Verdicts) -> Result<NodeLease> {
    let t = cfg.timeout;
    let ttl = cfg.lease_ttl.as_secs().max(2) as i64;
    let lease = within(t, "granting the node's lease", client.lease_grant(ttl, None)).await?.id();
    let (keeper, renewals) = within(t, "renewing the lease", client.lease_keep_alive(lease)).await?;
    let with_lease = || Some(PutOptions::new().with_lease(lease));
    let mut writes = vec![TxnOp::put(keys.node(&cfg.node), cfg.node.as_str(), with_lease())];
    writes.extend(
        verdicts
            .by_backend
            .iter()
            .map(|((s, b), up)| TxnOp::put(keys.verdict(s, b, &cfg.node), word(*up), with_lease())),
    );
    if let Some(r) = &verdicts.running {
        writes.push(TxnOp::put(keys.config(&ConfigKey::Running(&cfg.node)), r.as_str(), with_lease()));
    }
    for chunk in writes.chunks(TXN_OPS) {
        within(t, "writing the node's verdicts", client.txn(Txn::new().and_then(chunk.to_vec()))).await?;
    }
    Ok(NodeLease { id: lease, ttl, keeper, renewals })
}

/// Reads the fleet's state, hands it to veerd ([`FleetEvent::Synced`]) and
/// watches it from the next revision on.
pub(super) async fn sync(
    t: Duration,
    client: &mut Client,
    keys: &Keys,
    endpoint: &str,
    events: &mpsc::UnboundedSender<FleetEvent>,
) -> Result<WatchStream> {
    let snap =
        within(t, "reading the fleet's state", client.get(keys.root(), Some(GetOptions::new().with_prefix()))).await?;
    let revision = snap.header().map_or(0, |h| h.revision());
    let changes = snap.kvs().iter().map(put_of).collect();
    let watch_opts = WatchOptions::new().with_prefix().with_start_revision(revision + 1).with_progress_notify();
    let watch = within(t, "watching the fleet's state", client.watch(keys.root(), Some(watch_opts))).await?;
    let _ = events.send(FleetEvent::Synced {
        changes,
        revision,
        client: Box::new(client.clone()),
        endpoint: endpoint.into(),
    });
    Ok(watch)
}

/// A key's value as a change.
pub(super) fn put_of(kv: &KeyValue) -> Change {
    Change::Put {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: String::from_utf8_lossy(kv.value()).into_owned(),
        mod_rev: kv.mod_revision(),
    }
}
