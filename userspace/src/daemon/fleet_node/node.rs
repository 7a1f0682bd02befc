//! [`FleetNode`]: this node's session, view, operator changes and fence.

use std::collections::{BTreeMap, BTreeSet};

use tokio::sync::oneshot;

use tracing::{debug, info, warn};

use super::{answers::Answers, fence::Fence, incoming::Incoming, unpublished::Unpublished, verdicts::Verdicts};
use crate::daemon::{model::Services, observe::History};
use crate::{
    config::{Config, EtcdConfig},
    fleet::{self, keys::Keys, ops, FleetCmd, FleetEvent, FleetHandle, FleetView, PublishOutcome},
    overrides::Overrides,
    wire::Response,
};

/// This node's part in the fleet: its session with etcd, the fleet's view,
/// its operator changes on their way to etcd, leadership and the fence.
pub struct FleetNode {
    pub(super) cfg: EtcdConfig,
    pub(super) keys: Keys,
    pub(super) handle: FleetHandle,
    pub(super) view: FleetView,
    /// A session is up: the view is current.
    pub(super) connected: bool,
    /// A session has been up since veerd started.
    pub(super) synced_once: bool,
    pub(super) endpoint: String,
    pub(super) last_error: Option<String>,
    pub(super) client: Option<etcd_client::Client>,
    pub(super) leader: Option<fleet::Fence>,
    /// The verdicts last handed to the session.
    pub(super) verdicts: Verdicts,
    pub(super) pending: Unpublished,
    /// Callers waiting for their changes to commit.
    pub(super) answers: Answers,
    /// The fleet's entries as checked, and those said to be invalid.
    pub(super) incoming: Incoming,
    pub(super) fence: Fence,
    /// What this node last told the fleet it runs of the fleet's config.
    pub(super) running: Option<crate::fleet::config::RunningRecord>,
    /// Config pushes taken so far (each answer waits on its own tag).
    pub(super) pushes: u64,
}

impl FleetNode {
    /// Starts the etcd session.
    pub fn start(cfg: EtcdConfig) -> (Self, tokio::sync::mpsc::UnboundedReceiver<FleetEvent>) {
        let (handle, events) = fleet::spawn(cfg.clone());
        let rt = Self {
            keys: Keys::new(&cfg.prefix),
            fence: Fence::new(cfg.fence_after),
            cfg,
            handle,
            view: FleetView::default(),
            connected: false,
            synced_once: false,
            endpoint: String::new(),
            last_error: None,
            client: None,
            leader: None,
            verdicts: Verdicts::default(),
            pending: Unpublished::default(),
            answers: Answers::default(),
            incoming: Incoming::default(),
            running: None,
            pushes: 0,
        };
        (rt, events)
    }

    /// This node runs the fleet's restarts and hooks.
    pub fn is_leader(&self) -> bool {
        self.leader.is_some()
    }

    /// The VIPs this node withdrew: its path to their backends is broken.
    pub fn fenced_vips(&self) -> &BTreeSet<std::net::IpAddr> {
        self.fence.fenced()
    }

    /// The operator changes as the fleet holds them, with this node's
    /// unpublished ones on top.
    fn desired_kvs(&self) -> BTreeMap<String, String> {
        let mut kvs: BTreeMap<String, String> =
            self.view.ops().iter().map(|(k, (v, _))| (k.clone(), v.clone())).collect();
        self.pending.overlay(&mut kvs);
        kvs
    }

    /// Sends every pending change not in flight.
    fn send_pending(&mut self) {
        if !self.connected {
            return;
        }
        let writes = self.pending.unsent();
        if writes.is_empty() {
        } else if crate::failpoint::hit("fleet-publish-late") {
            // Fault tests: another node's change can commit first. Halfway
            // to the caller's answer deadline (three timeouts), so that
            // neither the other node nor this publish runs against it.
            self.handle.send_later(FleetCmd::Publish(writes), self.cfg.timeout * 3 / 2);
        } else {
            // One transaction per key: a race lost on one drops no other.
            for w in writes {
                self.handle.send(FleetCmd::Publish(vec![w]));
            }
        }
    }

    /// The fleet part of `veerctl status`.
    pub fn status(&self) -> crate::wire::FleetStatus {
        crate::wire::FleetStatus {
            node: self.cfg.node.clone(),
            etcd: if self.connected { format!("connected to {}", self.endpoint) } else { "unreachable".into() },
            error: (!self.connected).then(|| self.last_error.clone()).flatten(),
            revision: self.view.revision,
            nodes: self.view.nodes().iter().cloned().collect(),
            leader: self.leader.is_some(),
            fenced: !self.fence.fenced().is_empty(),
            fenced_vips: self.fence.fenced().iter().map(|v| v.to_string()).collect(),
            unpublished: self.pending.len(),
            verdict_flips: self.verdicts.flips(),
            config: self.config_status(),
        }
    }
}

/// What the daemon must do after a fleet event.
#[derive(Debug, Default)]
pub struct FollowUp {
    /// Apply the fleet's operator changes ([`FleetNode::wanted_overrides`]).
    pub ops: bool,
    /// Move the fleet verdicts on ([`FleetNode::apply_verdicts`]).
    pub verdicts: bool,
    /// Leadership changed: every backend's restarts follow.
    pub leadership: bool,
    /// The fleet config's current revision may differ from what runs.
    pub config: bool,
}

impl FleetNode {
    /// Takes what the etcd session reports; `overrides` are this node's
    /// runtime changes (a fleet's first node seeds it with them).
    pub fn on_event(&mut self, ev: FleetEvent, overrides: &Overrides) -> FollowUp {
        match ev {
            FleetEvent::Synced { changes, revision, client, endpoint } => {
                let mut view = FleetView::default();
                for c in &changes {
                    view.apply(&self.keys, c);
                }
                view.revision = revision;
                self.view = view;
                info!(%endpoint, revision, nodes = ?self.view.nodes(), "fleet: in session with etcd; fleet view current");
                // The first node of a fleet seeds it with its own changes.
                if !self.synced_once && self.view.ops().is_empty() {
                    self.pending.seed(ops::to_kvs(overrides));
                }
                self.synced_once = true;
                self.connected = true;
                self.last_error = None;
                self.endpoint = endpoint;
                self.client = Some(*client);
                self.pending.resend_all();
                self.send_pending();
                FollowUp { ops: true, verdicts: true, leadership: false, config: true }
            }
            FleetEvent::Changed { changes, revision } => {
                let mut touched = fleet::view::Touched::default();
                for c in &changes {
                    touched |= self.view.apply(&self.keys, c);
                }
                self.view.revision = revision;
                FollowUp { ops: touched.ops, verdicts: touched.verdicts, leadership: false, config: touched.config }
            }
            FleetEvent::Lost(e) => {
                self.lost(e);
                FollowUp::default()
            }
            FleetEvent::Leader(l) => {
                self.leadership(l);
                FollowUp { leadership: true, ..Default::default() }
            }
            FleetEvent::Published { keys, outcome } => {
                self.pending.published(&keys, &outcome);
                let pending = &self.pending;
                self.answers.published(&keys, &outcome, |k| pending.contains(k));
                self.send_pending();
                FollowUp { ops: !matches!(outcome, PublishOutcome::Committed { .. }), ..Default::default() }
            }
        }
    }

    fn lost(&mut self, e: String) {
        if self.connected {
            warn!(error = %e, "fleet: etcd unreachable: the fleet view is frozen and nothing is withdrawn (fail static)");
        } else if self.last_error.is_none() {
            // The first failure since veerd started (a wrong certificate,
            // a refused user, etcd down): said once, retried quietly.
            warn!(error = %e, "fleet: cannot open a session with etcd; retrying");
        } else {
            debug!(error = %e, "fleet: etcd still unreachable");
        }
        self.connected = false;
        self.last_error = Some(e);
        self.client = None;
        self.fence.forget();
    }

    fn leadership(&mut self, l: Option<fleet::Fence>) {
        let was = self.leader.is_some();
        self.leader = l;
        match (was, self.leader.is_some()) {
            (false, true) => {
                info!(node = %self.cfg.node, "fleet: this node is the leader: it runs the fleet's restarts and hooks")
            }
            (true, false) => warn!(node = %self.cfg.node, "fleet: no longer the leader"),
            _ => {}
        }
    }

    /// After a local operator change: publishes what differs from the
    /// fleet's valid entries (an invalid one is never compared: a local
    /// value replaces it, and no value leaves it alone). Returns the keys
    /// published.
    pub fn publish(&mut self, overrides: &Overrides, file: &Config) -> Vec<String> {
        let local = ops::to_kvs(overrides);
        let checked = self.incoming.check(&self.desired_kvs(), file);
        warn_invalid(checked.new_invalid);
        let desired = ops::to_kvs(&checked.overrides);
        let keys: BTreeSet<String> = local.keys().chain(desired.keys()).cloned().collect();
        let mut published = Vec::new();
        for k in keys {
            let want = local.get(&k);
            if want == desired.get(&k) {
                continue;
            }
            let base = self.view.ops().get(&k).map_or(0, |(_, rev)| *rev);
            self.pending.set(k.clone(), want.cloned(), base);
            published.push(k);
        }
        self.send_pending();
        published
    }

    /// Answers `reply` once the change `keys` hold has committed to etcd,
    /// or lost a race, or (no session commits it within three request
    /// deadlines) is known to wait.
    pub fn answer_after_commit(&mut self, keys: Vec<String>, msg: String, reply: oneshot::Sender<Response>) {
        self.answers.wait(keys, msg, self.cfg.timeout * 3, reply);
    }

    /// The runtime overrides as the fleet holds them (its valid entries,
    /// this node's own drain kept), if they differ from `current`.
    pub fn wanted_overrides(&mut self, current: &Overrides, file: &Config) -> Option<Overrides> {
        let (wanted, invalid) = self.incoming.wanted(&self.desired_kvs(), current, file);
        warn_invalid(invalid);
        wanted
    }
}

impl FleetNode {
    /// Hands the session this node's verdicts that changed.
    pub fn report_verdicts(&mut self, services: &Services) {
        self.verdicts.report(&self.handle, services);
    }

    /// Moves every backend's fleet verdict on from the view (see [`Verdicts::apply`]).
    pub fn apply_verdicts(&mut self, services: &mut Services, history: &mut History) -> Vec<(usize, u32)> {
        self.verdicts.apply(&self.view, services, history)
    }

    /// Fences or unfences this node's VIPs; true if that changed. Callers
    /// whose change waited too long hear why.
    pub fn check_fence(&mut self, services: &Services) -> bool {
        let why = match (&self.last_error, self.connected) {
            (Some(e), false) => format!("etcd unreachable: {e}"),
            _ => "etcd did not answer in time".to_string(),
        };
        self.answers.expire(std::time::Instant::now(), &why);
        self.fence.check(self.connected, services)
    }
}

/// Says each newly seen invalid entry of the fleet's, once.
fn warn_invalid(invalid: Vec<String>) {
    for entry in invalid {
        warn!(%entry, "fleet: an operator change in etcd is unreadable or breaks the config's rules; ignored");
    }
}
