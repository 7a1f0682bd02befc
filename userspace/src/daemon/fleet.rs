//! Fleet state through etcd, on the daemon's side: this node's verdicts
//! out, the fleet's verdicts and operator changes in, leadership, and
//! self-fencing. The etcd session itself is [`crate::fleet::session`].
//!
//! - Ring membership follows the fleet verdict ([`BackendRt::ring_state`]);
//!   the state word follows this node's probes, at once.
//! - A `veerctl` change applies here at once and is published key by key
//!   with compare-and-swap; every node applies what the watch brings. A
//!   change that loses a race is dropped here: the fleet's value applies.
//! - With etcd unreachable the view freezes: rings, announcements and the
//!   fence stay as they are (fail static); changes made meanwhile are
//!   published when it returns.
//! - A node that sees most of the backends the fleet sees up as down (its
//!   own path is broken) for `fence_after` withdraws its VIPs, and
//!   announces them again once it agrees.
//!
//! [`BackendRt::ring_state`]: super::model::BackendRt::ring_state

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use tracing::{debug, error, info, warn};

use super::{model::Admin, ApplyError, Daemon};
use crate::{
    config::EtcdConfig,
    fleet::{self, keys::Keys, ops, FleetCmd, FleetEvent, FleetHandle, FleetView, OpWrite, PublishOutcome},
    overrides::{key, Overrides},
};

/// An operator change made here, not yet committed to etcd.
#[derive(Debug, Clone)]
struct Pending {
    /// The value wanted (`None`: the key goes).
    value: Option<String>,
    /// The key's revision the change was made on.
    base_rev: i64,
    /// The value in flight, if a publish is.
    sent: Option<Option<String>>,
}

/// The daemon's fleet state.
pub(super) struct FleetRt {
    cfg: EtcdConfig,
    keys: Keys,
    handle: FleetHandle,
    view: FleetView,
    /// A session is up: the view is current.
    connected: bool,
    /// A session has been up since veerd started.
    synced_once: bool,
    endpoint: String,
    last_error: Option<String>,
    client: Option<etcd_client::Client>,
    leader: Option<fleet::Fence>,
    /// The verdicts last handed to the session.
    reported: BTreeMap<(String, String), bool>,
    pending: BTreeMap<String, Pending>,
    disagree_since: Option<Instant>,
    fenced: bool,
    /// Fleet verdict changes since start.
    flips: u64,
}

impl FleetRt {
    /// Starts the etcd session.
    pub(super) fn start(cfg: EtcdConfig) -> (Self, tokio::sync::mpsc::UnboundedReceiver<FleetEvent>) {
        let (handle, events) = fleet::spawn(cfg.clone());
        let rt = Self {
            keys: Keys::new(&cfg.prefix),
            cfg,
            handle,
            view: FleetView::default(),
            connected: false,
            synced_once: false,
            endpoint: String::new(),
            last_error: None,
            client: None,
            leader: None,
            reported: BTreeMap::new(),
            pending: BTreeMap::new(),
            disagree_since: None,
            fenced: false,
            flips: 0,
        };
        (rt, events)
    }

    /// This node runs the fleet's restarts and hooks.
    pub(super) fn is_leader(&self) -> bool {
        self.leader.is_some()
    }

    /// This node withdrew its VIPs: its path to the backends is broken.
    pub(super) fn fenced(&self) -> bool {
        self.fenced
    }

    /// The operator changes as the fleet holds them, with this node's
    /// unpublished ones on top.
    fn desired_kvs(&self) -> BTreeMap<String, String> {
        let mut kvs: BTreeMap<String, String> =
            self.view.ops().iter().map(|(k, (v, _))| (k.clone(), v.clone())).collect();
        for (k, p) in &self.pending {
            match &p.value {
                Some(v) => kvs.insert(k.clone(), v.clone()),
                None => kvs.remove(k),
            };
        }
        kvs
    }

    /// Sends every pending change not in flight.
    fn send_pending(&mut self) {
        if !self.connected {
            return;
        }
        let mut writes = Vec::new();
        for (k, p) in self.pending.iter_mut().filter(|(_, p)| p.sent.is_none()) {
            p.sent = Some(p.value.clone());
            writes.push(OpWrite { key: k.clone(), value: p.value.clone(), base_rev: p.base_rev });
        }
        if !writes.is_empty() {
            self.handle.send(FleetCmd::Publish(writes));
        }
    }

    /// The gate for a one-per-fleet action (`what` under `P/actions/`):
    /// `None` while this node is not the leader in session.
    pub(super) fn action_gate(&self, what: &str) -> Option<fleet::claim::ActionGate> {
        Some(fleet::claim::ActionGate {
            client: self.client.clone()?,
            fence: self.leader.clone()?,
            key: self.keys.action(what),
            node: self.cfg.node.clone(),
        })
    }

    /// The fleet part of `veerctl status`.
    pub(super) fn status(&self) -> crate::wire::FleetStatus {
        crate::wire::FleetStatus {
            node: self.cfg.node.clone(),
            etcd: if self.connected { format!("connected to {}", self.endpoint) } else { "unreachable".into() },
            error: (!self.connected).then(|| self.last_error.clone()).flatten(),
            revision: self.view.revision,
            nodes: self.view.nodes().iter().cloned().collect(),
            leader: self.leader.is_some(),
            fenced: self.fenced,
            unpublished: self.pending.len(),
            verdict_flips: self.flips,
        }
    }
}

impl Daemon {
    /// Handles what the etcd session reports.
    pub(super) fn on_fleet(&mut self, ev: FleetEvent) {
        let Some(f) = self.fleet.as_mut() else { return };
        match ev {
            FleetEvent::Synced { changes, revision, client, endpoint } => {
                let mut view = FleetView::default();
                for c in &changes {
                    view.apply(&f.keys, c);
                }
                view.revision = revision;
                f.view = view;
                info!(%endpoint, revision, nodes = ?f.view.nodes(), "fleet: in session with etcd; fleet view current");
                // The first node of a fleet seeds it with its own changes.
                if !f.synced_once && f.view.ops().is_empty() {
                    for (k, v) in ops::to_kvs(&self.overrides) {
                        f.pending.entry(k).or_insert(Pending { value: Some(v), base_rev: 0, sent: None });
                    }
                }
                f.synced_once = true;
                f.connected = true;
                f.last_error = None;
                f.endpoint = endpoint;
                f.client = Some(*client);
                for p in f.pending.values_mut() {
                    p.sent = None;
                }
                f.send_pending();
                self.fleet_apply_ops();
                self.fleet_apply_verdicts();
            }
            FleetEvent::Changed { changes, revision } => {
                let mut touched = fleet::view::Touched::default();
                for c in &changes {
                    touched |= f.view.apply(&f.keys, c);
                }
                f.view.revision = revision;
                if touched.ops {
                    self.fleet_apply_ops();
                }
                if touched.verdicts {
                    self.fleet_apply_verdicts();
                }
            }
            FleetEvent::Lost(e) => {
                if f.connected {
                    warn!(error = %e, "fleet: etcd unreachable: the fleet view is frozen and nothing is withdrawn (fail static)");
                } else {
                    debug!(error = %e, "fleet: etcd still unreachable");
                }
                f.connected = false;
                f.last_error = Some(e);
                f.client = None;
                f.disagree_since = None;
            }
            FleetEvent::Leader(l) => {
                let was = f.leader.is_some();
                f.leader = l;
                match (was, f.leader.is_some()) {
                    (false, true) => {
                        info!(node = %f.cfg.node, "fleet: this node is the leader: it runs the fleet's restarts and hooks")
                    }
                    (true, false) => warn!(node = %f.cfg.node, "fleet: no longer the leader"),
                    _ => {}
                }
                self.fleet_follow_leadership();
            }
            FleetEvent::Published { keys, outcome } => {
                let revision = f.view.revision;
                for k in keys {
                    let Some(p) = f.pending.get_mut(&k) else { continue };
                    let sent = p.sent.take();
                    match &outcome {
                        PublishOutcome::Committed if sent.as_ref() == Some(&p.value) => drop(f.pending.remove(&k)),
                        // Changed again while in flight: on top of ours.
                        PublishOutcome::Committed => p.base_rev = revision.max(p.base_rev),
                        PublishOutcome::Conflict => {
                            warn!(key = %k, "fleet: an operator change lost a race (another node changed it first); the fleet's value applies");
                            f.pending.remove(&k);
                        }
                        // Kept, sent again by the next session.
                        PublishOutcome::Failed(_) => {}
                    }
                }
                if outcome != PublishOutcome::Committed {
                    self.fleet_apply_ops();
                }
                if let Some(f) = self.fleet.as_mut() {
                    f.send_pending();
                }
            }
        }
    }

    /// After a local operator change: publish what differs from the fleet.
    pub(super) fn fleet_publish(&mut self) {
        let Some(f) = self.fleet.as_mut() else { return };
        let local = ops::to_kvs(&self.overrides);
        let desired = f.desired_kvs();
        let keys: Vec<String> = local.keys().chain(desired.keys()).cloned().collect();
        for k in keys {
            let want = local.get(&k);
            if want == desired.get(&k) {
                continue;
            }
            let base = f.view.ops().get(&k).map_or(0, |(_, rev)| *rev);
            let p = f.pending.entry(k).or_insert(Pending { value: None, base_rev: base, sent: None });
            p.value = want.cloned();
        }
        f.send_pending();
    }

    /// Brings the runtime overrides in line with the fleet's. Each backend
    /// whose operator state the fleet changes gets its reason for the
    /// history before the state word is written, and its restart follows.
    fn fleet_apply_ops(&mut self) {
        let Some(f) = self.fleet.as_ref() else { return };
        let kvs = f.desired_kvs();
        let (mut wanted, bad) = ops::from_kvs(kvs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        for b in bad {
            warn!(entry = %b, "fleet: an operator change in etcd is unreadable; ignored");
        }
        wanted.node_drained = self.overrides.node_drained;
        if ops::to_kvs(&wanted) == ops::to_kvs(&self.overrides) {
            return;
        }
        let mut admin_changed = Vec::new();
        for s in &self.services {
            for b in &s.backends {
                let admin = wanted.admin.get(&key(&s.cfg.name, &b.cfg.name)).copied().unwrap_or(Admin::Enabled);
                if admin != b.admin {
                    self.state_reasons.insert(b.id, format!("operator (fleet): {}", admin.name()));
                    admin_changed.push(b.id);
                }
            }
        }
        match self.apply_overrides(|o: &mut Overrides| *o = wanted) {
            Ok(()) => info!("fleet: operator changes from the fleet applied"),
            Err(e @ ApplyError::Refused(_)) => {
                for id in &admin_changed {
                    self.state_reasons.remove(id);
                }
                return error!(error = %e, "fleet: the fleet's operator changes do not fit this node; it keeps its own");
            }
            Err(e @ ApplyError::Write(_)) => {
                warn!(error = %e, "fleet: operator changes from the fleet applied; writing the dataplane failed (retried)")
            }
        }
        for id in admin_changed {
            if let Some(i) = self.service_of(id) {
                self.follow_recovery(i, id);
            }
        }
    }

    /// Hands the session this node's verdicts that changed, and forgets
    /// backends that are gone.
    pub(super) fn fleet_report_verdicts(&mut self) {
        let Some(f) = self.fleet.as_mut() else { return };
        let now: BTreeMap<(String, String), bool> = self
            .services
            .iter()
            .flat_map(|s| s.backends.iter().map(|b| ((s.cfg.name.clone(), b.cfg.name.clone()), b.healthy)))
            .collect();
        for (k, up) in &now {
            if f.reported.get(k) != Some(up) {
                f.handle.send(FleetCmd::Verdict { service: k.0.clone(), backend: k.1.clone(), up: *up });
            }
        }
        for k in f.reported.keys().filter(|k| !now.contains_key(*k)) {
            f.handle.send(FleetCmd::Forget { service: k.0.clone(), backend: k.1.clone() });
        }
        f.reported = now;
    }

    /// Moves every backend's fleet verdict on from the view; a service
    /// whose ring membership that changes has its ring queued.
    pub(super) fn fleet_apply_verdicts(&mut self) {
        let Some(f) = self.fleet.as_mut() else { return };
        let mut changed = Vec::new();
        for (i, s) in self.services.iter_mut().enumerate() {
            for b in &mut s.backends {
                let t = f.view.tally(&s.cfg.name, &b.cfg.name);
                let next = t.verdict(b.fleet_up);
                if next == b.fleet_up {
                    continue;
                }
                let prev = b.fleet_up;
                b.fleet_up = next;
                changed.push((i, b.id));
                if let (Some(p), Some(n)) = (prev, next) {
                    f.flips += 1;
                    let (from, to) = if p { ("up", "down") } else { ("down", "up") };
                    let reason = format!(
                        "fleet verdict: {} of {} live nodes see it {to}",
                        if n { t.up } else { t.down },
                        t.live
                    );
                    if n {
                        info!(service = %s.cfg.name, backend = %b.cfg.name, %reason, "fleet verdict: UP");
                    } else {
                        warn!(service = %s.cfg.name, backend = %b.cfg.name, %reason, "fleet verdict: DOWN");
                    }
                    self.history.record(
                        &s.cfg.name,
                        &b.cfg.name,
                        &format!("fleet {from}"),
                        &format!("fleet {to}"),
                        &reason,
                    );
                }
            }
        }
        for (i, id) in changed {
            self.queue_ring(i);
            self.follow_recovery(i, id);
            self.fleet_clear_restart(i, id);
        }
        self.check_fence();
    }

    /// Starts or stops the leader's work after a leadership change.
    fn fleet_follow_leadership(&mut self) {
        let ids: Vec<(usize, u32)> =
            self.services.iter().enumerate().flat_map(|(i, s)| s.backends.iter().map(move |b| (i, b.id))).collect();
        for (i, id) in ids {
            self.follow_recovery(i, id);
            self.fleet_clear_restart(i, id);
        }
    }

    /// The leader ends the restart record of a backend the fleet sees up.
    fn fleet_clear_restart(&mut self, i: usize, id: u32) {
        let Some(f) = self.fleet.as_ref() else { return };
        let (Some(fence), Some(client)) = (f.leader.clone(), f.client.clone()) else { return };
        let s = &self.services[i];
        let Some(b) = s.backend(id) else { return };
        if b.fleet_up != Some(true) || (b.cfg.restart.is_none() && s.cfg.replace.is_none()) {
            return;
        }
        // The outage is over: its restart and replace records go.
        let keys = [
            f.keys.restart(&s.cfg.name, &b.cfg.name),
            f.keys.action(&format!("replace/{}/{}", s.cfg.name, b.cfg.name)),
        ];
        tokio::spawn(async move {
            let mut client = client;
            for key in keys {
                if let Err(e) = fleet::claim::release(&mut client, &fence, &key).await {
                    debug!(error = %format!("{e:#}"), "fleet: clearing an outage's record failed; the next leader clears it");
                }
            }
        });
    }

    /// The fleet restart job for backend `id` of service `i`, if this node
    /// should run one now: leader, in session, the fleet sees it down, the
    /// operator has it enabled, it has a restart command.
    pub(super) fn fleet_restart_job(&mut self, i: usize, id: u32) -> Option<fleet::restart::RestartJob> {
        let f = self.fleet.as_ref()?;
        let s = &self.services[i];
        let b = s.backend(id)?;
        let wanted = b.fleet_up == Some(false) && b.admin == Admin::Enabled;
        let (fence, client, cfg) = (f.leader.clone()?, f.client.clone()?, b.cfg.restart.clone()?);
        wanted.then(|| fleet::restart::RestartJob {
            client,
            fence,
            key: f.keys.restart(&s.cfg.name, &b.cfg.name),
            node: f.cfg.node.clone(),
            service: s.cfg.name.clone(),
            backend: b.cfg.name.clone(),
            address: b.cfg.address.to_string(),
            cfg,
            attempts: self.metrics.restarts.entry(id).or_default().clone(),
        })
    }

    /// Fences this node (withdraws its VIPs) while, for `fence_after`, it
    /// sees most of the backends the fleet sees up as down; unfences once
    /// it agrees again. Frozen while etcd is unreachable.
    pub(super) fn check_fence(&mut self) {
        let Some(f) = self.fleet.as_mut() else { return };
        if !f.connected {
            f.disagree_since = None;
            return;
        }
        let (mut fleet_up, mut local_down) = (0usize, 0usize);
        for b in self.services.iter().flat_map(|s| &s.backends) {
            if b.fleet_up == Some(true) {
                fleet_up += 1;
                local_down += usize::from(!b.healthy);
            }
        }
        let disagree = fleet_up > 0 && local_down * 2 > fleet_up;
        let changed = match (disagree, f.fenced) {
            (true, false) => {
                let since = *f.disagree_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= f.cfg.fence_after {
                    f.fenced = true;
                    error!(local_down, fleet_up, after = ?f.cfg.fence_after,
                        "fleet: FENCED: this node sees most backends down that the fleet sees up (its own path is broken); withdrawing its VIPs");
                    true
                } else {
                    false
                }
            }
            (false, true) => {
                f.fenced = false;
                f.disagree_since = None;
                info!("fleet: this node agrees with the fleet again: announcing its VIPs");
                true
            }
            (false, false) => {
                f.disagree_since = None;
                false
            }
            (true, true) => false,
        };
        if changed {
            self.sync_announcements();
        }
    }

    /// How often [`Daemon::check_fence`] runs.
    pub(super) fn fence_period() -> Duration {
        Duration::from_millis(100)
    }
}
