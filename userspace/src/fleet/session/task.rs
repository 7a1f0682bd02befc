//! The session task: [`spawn`] starts it; it runs one session after
//! another, each on the next endpoint, and carries out veerd's commands.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use etcd_client::{CampaignResponse, Client, EventType, PutOptions, WatchResponse};
use tokio::{
    sync::mpsc,
    task::{JoinError, JoinHandle},
    time::timeout,
};

use super::{
    etcd::within,
    messages::{FleetCmd, FleetEvent, PublishOutcome},
    open::{open, put_of, sync},
    publish::{publish, push_config},
    verdicts::{word, Verdicts},
};
use crate::{
    config::EtcdConfig,
    fleet::{config::ConfigKey, fence::Fence, keys::Keys, view::Change},
};

/// The running session task; dropping it stops the task (the lease then
/// lapses on its own).
pub struct FleetHandle {
    cmds: mpsc::UnboundedSender<FleetCmd>,
    task: JoinHandle<()>,
}

impl FleetHandle {
    /// Queues a command (dropped only if the task is gone).
    pub fn send(&self, cmd: FleetCmd) {
        let _ = self.cmds.send(cmd);
    }

    /// Queues a command `after` from now (fault tests).
    pub fn send_later(&self, cmd: FleetCmd, after: Duration) {
        let cmds = self.cmds.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let _ = cmds.send(cmd);
        });
    }
}

impl Drop for FleetHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the session task for `cfg`.
pub fn spawn(cfg: EtcdConfig) -> (FleetHandle, mpsc::UnboundedReceiver<FleetEvent>) {
    let (cmds, cmd_rx) = mpsc::unbounded_channel();
    let (events, event_rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(run(cfg, cmd_rx, events));
    (FleetHandle { cmds, task }, event_rx)
}

async fn run(cfg: EtcdConfig, mut cmds: mpsc::UnboundedReceiver<FleetCmd>, events: mpsc::UnboundedSender<FleetEvent>) {
    let mut verdicts = Verdicts::default();
    loop {
        let e = session(&cfg, &mut cmds, &events, &mut verdicts).await;
        let _ = events.send(FleetEvent::Leader(None));
        let _ = events.send(FleetEvent::Lost(format!("{:#}", e.err().unwrap_or_else(|| anyhow::anyhow!("ended")))));
        // Between sessions: verdicts are kept for the next, publishes
        // refused. Short: connecting already waits for an answer.
        let pause = tokio::time::sleep(Duration::from_millis(50));
        tokio::pin!(pause);
        loop {
            tokio::select! {
                () = &mut pause => break,
                c = cmds.recv() => match c {
                    None => return,
                    Some(c) => offline(c, &mut verdicts, &events),
                },
            }
        }
    }
}

/// A command while no session runs.
fn offline(c: FleetCmd, verdicts: &mut Verdicts, events: &mpsc::UnboundedSender<FleetEvent>) {
    match c {
        FleetCmd::Verdict { service, backend, up } => drop(verdicts.by_backend.insert((service, backend), up)),
        FleetCmd::Forget { service, backend } => drop(verdicts.by_backend.remove(&(service, backend))),
        FleetCmd::Running(r) => verdicts.running = Some(r),
        FleetCmd::Publish(w) => {
            let _ = events.send(FleetEvent::Published {
                keys: w.into_iter().map(|w| w.key).collect(),
                outcome: PublishOutcome::Failed("etcd unreachable".into()),
            });
        }
        FleetCmd::PushConfig { tag, .. } => {
            let _ = events.send(FleetEvent::Published {
                keys: vec![tag],
                outcome: PublishOutcome::Failed("etcd unreachable".into()),
            });
        }
    }
}

/// One watch message: its changes go to veerd; an ended or cancelled watch
/// ends the session.
fn watched(
    m: std::result::Result<Option<WatchResponse>, etcd_client::Error>,
    events: &mpsc::UnboundedSender<FleetEvent>,
) -> Result<()> {
    let m = match m {
        Ok(Some(m)) => m,
        Ok(None) => bail!("the watch ended"),
        Err(e) => return Err(anyhow::Error::from(e).context("watching")),
    };
    if m.canceled() {
        bail!("the watch was cancelled: {}", m.cancel_reason());
    }
    let revision = m.header().map_or(0, |h| h.revision());
    let changes: Vec<Change> = m
        .events()
        .iter()
        .filter_map(|e| {
            let kv = e.kv()?;
            Some(match e.event_type() {
                EventType::Put => put_of(kv),
                EventType::Delete => Change::Delete { key: String::from_utf8_lossy(kv.key()).into_owned() },
            })
        })
        .collect();
    if !changes.is_empty() {
        let _ = events.send(FleetEvent::Changed { changes, revision });
    }
    Ok(())
}

/// The campaign's end: this node leads, fenced by its leader key.
fn elected(
    r: std::result::Result<std::result::Result<CampaignResponse, etcd_client::Error>, JoinError>,
) -> Result<Fence> {
    match r {
        Ok(Ok(resp)) => match resp.leader() {
            Some(l) => Ok(Fence { key: l.key().to_vec(), rev: l.rev() }),
            None => bail!("the election answered without a leader key"),
        },
        Ok(Err(e)) => Err(anyhow::Error::from(e).context("campaigning for leadership")),
        Err(e) => bail!("the campaign task failed: {e}"),
    }
}

async fn session(
    cfg: &EtcdConfig,
    cmds: &mut mpsc::UnboundedReceiver<FleetCmd>,
    events: &mpsc::UnboundedSender<FleetEvent>,
    verdicts: &mut Verdicts,
) -> Result<()> {
    let t = cfg.timeout;
    let keys = Keys::new(&cfg.prefix);
    let (mut client, mut lease, endpoint) = open(cfg, &keys, verdicts).await?;
    let mut watch = sync(t, &mut client, &keys, &endpoint, events).await?;
    let mut campaign = tokio::spawn({
        let (mut c, name, node, id) = (client.clone(), keys.election(), cfg.node.clone(), lease.id);
        async move { c.campaign(name, node, id).await }
    });
    let mut campaigning = true;
    let mut renew = tokio::time::interval(Duration::from_secs(lease.ttl as u64) / 3);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let result = loop {
        tokio::select! {
            _ = renew.tick() => {
                if let Err(e) = lease.renew(t).await { break Err(e) }
            }
            m = watch.message() => {
                if let Err(e) = watched(m, events) { break Err(e) }
            }
            r = &mut campaign, if campaigning => {
                campaigning = false;
                match elected(r) {
                    Ok(fence) => { let _ = events.send(FleetEvent::Leader(Some(fence))); }
                    Err(e) => break Err(e),
                }
            }
            c = cmds.recv() => {
                let Some(c) = c else { break Ok(()) };
                if let Err(e) = command(&mut client, &keys, cfg, lease.id, c, verdicts, events).await {
                    break Err(e);
                }
            }
        }
    };
    campaign.abort();
    let result = result.with_context(|| format!("in session with {endpoint}"));
    // Best effort: let the other nodes see this one go now, not at the TTL.
    let _ = timeout(Duration::from_millis(200), client.lease_revoke(lease.id)).await;
    result
}

async fn command(
    client: &mut Client,
    keys: &Keys,
    cfg: &EtcdConfig,
    lease: i64,
    c: FleetCmd,
    verdicts: &mut Verdicts,
    events: &mpsc::UnboundedSender<FleetEvent>,
) -> Result<()> {
    let t = cfg.timeout;
    match c {
        FleetCmd::Verdict { service, backend, up } => {
            let key = keys.verdict(&service, &backend, &cfg.node);
            verdicts.by_backend.insert((service, backend), up);
            within(t, "writing a verdict", client.put(key, word(up), Some(PutOptions::new().with_lease(lease))))
                .await?;
        }
        FleetCmd::Forget { service, backend } => {
            verdicts.by_backend.remove(&(service.clone(), backend.clone()));
            within(t, "deleting a verdict", client.delete(keys.verdict(&service, &backend, &cfg.node), None)).await?;
        }
        FleetCmd::Publish(writes) => publish(client, keys, t, writes, events).await?,
        FleetCmd::Running(r) => {
            let key = keys.config(&ConfigKey::Running(&cfg.node));
            within(
                t,
                "writing the config this node runs",
                client.put(key, r.as_str(), Some(PutOptions::new().with_lease(lease))),
            )
            .await?;
            verdicts.running = Some(r);
        }
        FleetCmd::PushConfig { record, base_rev, tag } => {
            push_config(client, keys, t, (record, base_rev, tag), events).await?
        }
    }
    Ok(())
}
