//! `veerd`: owns the config, watches every backend, drives the dataplane.
//!
//! One task owns all state (this module's [`Daemon`]); health checkers,
//! restart loops, the API and signals talk to it through channels. Every
//! change goes through one path, [`Daemon::sync_service`]: backend entries
//! first (a failed backend's state word flips at once), then the ring
//! (rebuilt from the live one, so only what must move moves).
//!
//! Maps and links are pinned: when veerd stops, even by SIGKILL, the
//! dataplane keeps forwarding with the last state; a new veerd adopts the
//! pins, ids and backend states, and reconciles instead of starting over.

mod announce;
pub mod api;
mod apply;
mod commands;
mod events;
mod fleet;
pub mod guard;
pub mod history;
pub mod metrics;
pub mod model;
mod nat;
mod nexthop;
pub mod notify;
mod passive;
pub mod prometheus;
pub mod reconcile;
pub mod recovery;
pub mod replace;
pub mod scale;
pub mod slow_start;
mod status;
mod vip_path;

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use tokio::sync::mpsc;
use tracing::{error, info, warn};
use veer_abi::{Backend, ServiceKey, NO_BACKEND, SERVICE_F_FALLBACK_PASS};

pub use apply::ApplyError;
use metrics::DaemonMetrics;
use model::{BackendRt, ServiceRt};

use crate::{
    config::{AttachModeConfig, Config, Fallback, Forwarding, ServiceConfig},
    dataplane::{self, pin, to_abi, AttachMode, Dataplane, DataplaneOptions, MapReader, ServiceSpec},
    health::{agent, spawn_checker, CheckReport, CheckSpec, Probe, ProbeSample},
    net,
    overrides::Overrides,
};

/// A flow idle this long no longer counts as active (scaling by flows).
const FLOW_IDLE: Duration = Duration::from_secs(30);

/// What a restarted daemon finds in the pinned maps.
#[derive(Debug, Default)]
struct Adoption {
    services: HashMap<ServiceKey, u32>,
    backends: HashMap<(u32, [u8; 16]), (u32, Backend)>,
}

impl Adoption {
    /// The ids, for the planner.
    fn pinned(&self) -> reconcile::Pinned {
        reconcile::Pinned {
            services: self.services.clone(),
            backends: self
                .backends
                .iter()
                .map(|((sid, addr), (id, _))| ((*sid, dataplane::from_abi(addr)), *id))
                .collect(),
        }
    }

    fn read(dp: &Dataplane) -> Result<Self> {
        let services = dp.services()?.into_iter().map(|(k, s)| (k, s.id)).collect();
        let backends = dp.backend_table()?.into_iter().map(|(id, b)| ((b.service, b.addr), (id, b))).collect();
        Ok(Self { services, backends })
    }
}

/// The running daemon.
pub struct Daemon {
    cfg_path: PathBuf,
    cfg: Config,
    dp: Dataplane,
    services: Vec<ServiceRt>,
    events: mpsc::UnboundedSender<CheckReport>,
    next_generation: u64,
    tx_ports: HashSet<u32>,
    /// Backend entries as last written (skip writes that change nothing).
    written: HashMap<u32, Backend>,
    /// Runtime changes on top of the file.
    overrides: Overrides,
    metrics: DaemonMetrics,
    scale: HashMap<String, scale::ScaleState>,
    samples: mpsc::Sender<ProbeSample>,
    samples_rx: Option<mpsc::Receiver<ProbeSample>>,
    /// Agent-check answers, for the run loop.
    agent_tx: mpsc::UnboundedSender<agent::AgentReport>,
    agent_rx: Option<mpsc::UnboundedReceiver<agent::AgentReport>>,
    /// Finished replace hooks, for the run loop.
    replace_tx: mpsc::UnboundedSender<replace::HookDone>,
    replace_rx: Option<mpsc::UnboundedReceiver<replace::HookDone>>,
    /// MAC of the one attached interface (zero with several): the source MAC
    /// of frames to backends with a configured MAC.
    single_iface_mac: [u8; 6],
    /// Backend ids recently freed (held back before reuse).
    id_pool: reconcile::IdPool,
    /// A dataplane write failed: rewrite everything at the next tick.
    dataplane_stale: bool,
    /// SNAT addresses written to the dataplane.
    snat: nat::SnatTable,
    /// The VIP-path TC program is attached to the interfaces.
    vip_path_attached: bool,
    /// Services whose rings health flips changed, rebuilt one per loop turn
    /// when no event waits (see [`Daemon::sync_next_ring`]).
    ring_queue: std::collections::VecDeque<veer_abi::ServiceKey>,
    /// Fleet: the VIPs announced at the last sync.
    announced: std::collections::BTreeSet<std::net::IpAddr>,
    /// The last state changes of every backend (`veerctl events`).
    history: history::History,
    /// Why each backend's state is about to change, for the history (taken
    /// when the state word is written; a change with none was a reload's or
    /// a next hop's).
    state_reasons: HashMap<u32, String>,
    /// What the queued rings will change, logged once they are in.
    pending_logs: Vec<(veer_abi::ServiceKey, events::RingLog)>,
    /// Fleet state through etcd (`[fleet.etcd]`).
    fleet: Option<fleet::FleetRt>,
    fleet_rx: Option<mpsc::UnboundedReceiver<crate::fleet::FleetEvent>>,
    /// Occupancy of the connection tables, refreshed in the background.
    table_usage: std::sync::Arc<std::sync::Mutex<Option<dataplane::TableUsage>>>,
    _lock: std::fs::File,
}

fn backend_entry(svc_id: u32, b: &BackendRt) -> Backend {
    Backend {
        addr: to_abi(b.cfg.address),
        mac: b.nexthop.map_or([0; 6], |n| n.mac),
        src_mac: b.src_mac,
        ifindex: b.nexthop.map_or(0, |n| n.ifindex),
        weight: b.cfg.weight,
        state: b.effective() as u32,
        service: svc_id,
        port: 0,
        snat: b.snat.map_or(0, |r| r.first),
        snat_count: b.snat.map_or(0, |r| r.count),
        _pad: 0,
    }
}

fn lock(d: &crate::config::DaemonConfig) -> Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let path = d.lock_path();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: flock on a file we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        bail!("another veerd instance {:?} is running (lock {} is held)", d.name, path.display());
    }
    Ok(f)
}

/// Loads the dataplane, adopting what a previous veerd pinned.
fn load_dataplane(cfg: &Config) -> Result<(Dataplane, Option<Adoption>)> {
    pin::ensure_bpffs(&cfg.daemon.bpffs)?;
    let pin_dir = cfg.daemon.pin_dir();
    let opts = DataplaneOptions {
        conn_table_size: cfg.daemon.conn_table_size,
        new_flow_table_size: cfg.daemon.new_flow_table_size,
        max_services: cfg.daemon.max_services,
        max_backends: cfg.daemon.max_backends,
        nat_table_size: cfg.daemon.nat_table_size,
    };
    log_table_sizes(&opts);
    let (dp, adopted) = Dataplane::load_pinned(&pin_dir, &opts)
        .with_context(|| format!("loading the dataplane pinned at {}", pin_dir.display()))?;
    let adoption = if adopted { Some(Adoption::read(&dp)?) } else { None };
    match &adoption {
        Some(a) => info!(
            pins = %pin_dir.display(),
            services = a.services.len(),
            backends = a.backends.len(),
            "adopting the pinned dataplane: existing flows, counters and backend states are kept"
        ),
        None => info!(pins = %pin_dir.display(), "no pinned dataplane: starting a fresh one"),
    }
    Ok((dp, adoption))
}

/// The runtime overrides: from the state file, or none with `reset`. An
/// unreadable file stops the start rather than silently undoing drains.
fn load_overrides(state: &Path, reset: bool) -> Result<Overrides> {
    if reset {
        match std::fs::remove_file(state) {
            Ok(()) => warn!(file = %state.display(), "--reset-runtime: runtime changes discarded"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", state.display())),
        }
        return Ok(Overrides::default());
    }
    let overrides = Overrides::load(state).with_context(|| {
        format!(
            "the runtime-state file {} is unreadable, so the drains, disables, weights and added \
             backends it records cannot be restored: repair it, or start with `veerd run --reset-runtime` \
             to discard them",
            state.display()
        )
    })?;
    if !overrides.is_empty() {
        info!(file = %state.display(), "runtime changes restored");
    }
    Ok(overrides)
}

/// Says what the kernel makes of the connection-table sizes: per-CPU LRU
/// lists round them to a multiple of the possible CPUs, and each CPU evicts
/// from its own share.
fn log_table_sizes(opts: &DataplaneOptions) {
    let cpus = match dataplane::possible_cpus() {
        Ok(n) => n,
        Err(e) => return warn!(error = %e, "cannot read the possible CPUs"),
    };
    for (table, asked) in [("connection", opts.conn_table_size), ("new-flow", opts.new_flow_table_size)] {
        let got = dataplane::lru_capacity(asked, cpus);
        info!(table, asked, entries = got, possible_cpus = cpus, per_cpu = got / cpus, "{table} table size");
    }
}

impl Daemon {
    /// Loads (or adopts) the dataplane, applies `cfg` and attaches. Health
    /// events arrive on the returned receiver, to be handed to [`Daemon::run`].
    ///
    /// A runtime-state file that cannot be read stops the start (its drains
    /// and disables would otherwise be silently undone), unless
    /// `reset_runtime`, which discards it.
    pub fn start(
        cfg_path: &Path,
        cfg: Config,
        reset_runtime: bool,
    ) -> Result<(Self, mpsc::UnboundedReceiver<CheckReport>)> {
        let lock = lock(&cfg.daemon)?;
        let (dp, adoption) = load_dataplane(&cfg)?;
        let written =
            adoption.as_ref().map(|a| a.backends.values().map(|(id, b)| (*id, *b)).collect()).unwrap_or_default();
        let (tx, rx) = mpsc::unbounded_channel();
        let overrides = load_overrides(&cfg.daemon.state_path(), reset_runtime)?;
        let (samples, samples_rx) = mpsc::channel(1024);
        let (replace_tx, replace_rx) = mpsc::unbounded_channel();
        let (agent_tx, agent_rx) = mpsc::unbounded_channel();
        let (fleet, fleet_rx) = match cfg.fleet.as_ref().and_then(|f| f.etcd.clone()) {
            Some(e) => {
                info!(node = %e.node, endpoints = ?e.endpoints, "fleet: sharing state through etcd");
                let (f, rx) = fleet::FleetRt::start(e);
                (Some(f), Some(rx))
            }
            None => (None, None),
        };
        let mut d = Daemon {
            cfg_path: cfg_path.to_path_buf(),
            cfg: cfg.clone(),
            dp,
            services: Vec::new(),
            events: tx,
            next_generation: 1,
            tx_ports: HashSet::new(),
            written,
            overrides,
            metrics: DaemonMetrics::default(),
            scale: HashMap::new(),
            samples,
            samples_rx: Some(samples_rx),
            replace_tx,
            replace_rx: Some(replace_rx),
            agent_tx,
            agent_rx: Some(agent_rx),
            id_pool: reconcile::IdPool::default(),
            dataplane_stale: false,
            table_usage: Default::default(),
            fleet,
            fleet_rx,
            snat: Default::default(),
            vip_path_attached: false,
            ring_queue: Default::default(),
            history: Default::default(),
            announced: Default::default(),
            state_reasons: HashMap::new(),
            pending_logs: Vec::new(),
            single_iface_mac: match cfg.daemon.interfaces.as_slice() {
                [one] => net::iface_mac(one).unwrap_or([0; 6]),
                _ => [0; 6],
            },
            _lock: lock,
        };
        d.apply(cfg.clone(), adoption)?;
        // A suspicion is a question for this daemon's probes; one left by a
        // previous daemon would hold a backend out with nobody to clear it.
        let ids: Vec<u32> = d.services.iter().flat_map(|s| s.backends.iter().map(|b| b.id)).collect();
        for id in ids {
            if let Err(e) = d.dp.clear_suspect(id) {
                warn!(id, error = %e, "clearing a stale suspicion failed; it lapses on its own");
            }
        }
        d.write_nat_config();
        d.attach()?;
        d.setup_vip_paths();
        d.resolve_nexthops();
        // Attached: the VIPs with a backend may be announced.
        d.sync_announcements();
        Ok((d, rx))
    }

    /// Attaches to every configured interface through pinned links (an
    /// adopted link gets the new program atomically).
    fn attach(&mut self) -> Result<()> {
        let mode = match self.cfg.daemon.attach_mode {
            AttachModeConfig::Driver => AttachMode::Driver,
            AttachModeConfig::Skb => AttachMode::Skb,
        };
        let pin_dir = self.cfg.daemon.pin_dir();
        for iface in &self.cfg.daemon.interfaces {
            let adopted =
                self.dp.attach_pinned(iface, mode, &pin_dir).with_context(|| format!("attaching to {iface}"))?;
            // NAT may route a packet out of any of them.
            if let Ok(ifindex) = net::ifindex(iface) {
                if self.tx_ports.insert(ifindex) {
                    if let Err(e) = self.dp.add_tx_port(ifindex) {
                        warn!(%iface, error = %e, "cannot add the interface to the devmap");
                    }
                }
            }
            if adopted {
                info!(%iface, "adopted the pinned XDP link; program replaced atomically");
            } else {
                info!(%iface, ?mode, "XDP program attached and its link pinned");
            }
        }
        Ok(())
    }

    /// Index of the service that has backend `id`.
    fn service_of(&self, id: u32) -> Option<usize> {
        self.services.iter().position(|s| s.backend(id).is_some())
    }

    /// The dataplane (read access for status and tests).
    pub fn dataplane(&self) -> &Dataplane {
        &self.dp
    }

    fn spawn_check(&mut self, svc: &ServiceConfig, b: &mut BackendRt) {
        if let Some(c) = b.checker.take() {
            c.abort();
        }
        let generation = self.next_generation;
        self.next_generation += 1;
        b.generation = generation;
        let port = svc.health.port.unwrap_or(svc.port);
        // A VIP-path check asks the VIP, through this backend's MAC.
        let (addr, mark) =
            if svc.health.vip_path { (svc.vip, Some(veer_abi::VIP_PATH_MARK | b.id)) } else { (b.cfg.address, None) };
        let spec = CheckSpec {
            backend: b.id,
            generation,
            target: SocketAddr::new(addr, port),
            mark,
            probe: Probe::from_config(&svc.health),
            health: svc.health.clone(),
            initially_up: b.healthy,
        };
        b.checker = Some(spawn_checker(spec, self.events.clone(), Some(self.samples.clone())));
        if let Some(a) = b.agent.take() {
            a.abort();
        }
        if let Some(a) = &svc.agent {
            let target = SocketAddr::new(b.cfg.address, a.port);
            b.agent = Some(agent::spawn_agent(b.id, generation, target, a.interval, a.timeout, self.agent_tx.clone()));
        } else {
            b.agent_verdict = Default::default();
            b.agent_error = None;
        }
    }

    fn clear_backend(&mut self, id: u32) -> Result<()> {
        self.written.remove(&id);
        self.dp.clear_backend(id).context("clearing a backend entry")?;
        Ok(())
    }

    /// Writes a service, its backend entries and (if its members changed) its ring.
    fn publish_service(&mut self, i: usize) -> Result<()> {
        self.assign_snat(i);
        let s = &self.services[i];
        let fallback_backend = s
            .cfg
            .fallback_backend
            .as_ref()
            .and_then(|n| s.backends.iter().find(|b| &b.cfg.name == n))
            // Not used until it can be sent to.
            .filter(|b| b.reachable())
            .map_or(NO_BACKEND, |b| b.id);
        let mut flags = if s.cfg.fallback == Fallback::Pass { SERVICE_F_FALLBACK_PASS } else { 0 };
        if s.cfg.forwarding == Forwarding::Nat {
            flags |= veer_abi::SERVICE_F_NAT;
        }
        if s.cfg.health.passive.enabled {
            flags |= veer_abi::SERVICE_F_PASSIVE;
        }
        let persistence_s = s.cfg.persistence.as_secs_f64().ceil() as u32;
        let spec = ServiceSpec { id: s.id, scheduler: s.cfg.scheduler.into(), flags, fallback_backend, persistence_s };
        let key = s.key;
        if self.dp.service(&key)?.map(|v| (v.id, v.scheduler, v.flags, v.fallback_backend))
            != Some((spec.id, spec.scheduler as u8, spec.service_flags(), spec.fallback_backend))
            || self.dp.persistence(spec.id)? != spec.persistence_s
        {
            self.dp.upsert_service(&key, spec)?;
            // A new or re-keyed service has no ring yet.
            self.services[i].published = None;
        }
        self.sync_service(i)
    }

    /// Writes one service's backend entries that changed, and records each
    /// state-word change in the history.
    fn write_entries(&mut self, i: usize) -> Result<()> {
        let sid = self.services[i].id;
        let entries: Vec<(u32, Backend)> =
            self.services[i].backends.iter().map(|b| (b.id, backend_entry(sid, b))).collect();
        for (id, e) in entries {
            if self.written.get(&id) == Some(&e) {
                continue;
            }
            let before = self.written.get(&id).map(|w| w.state);
            self.dp.set_backend(id, &e)?;
            self.written.insert(id, e);
            if before != Some(e.state) {
                let from = before.map_or("new", history::state_name);
                let to = history::state_name(e.state);
                let reason = self.state_reasons.remove(&id).unwrap_or_else(|| {
                    if before.is_none() {
                        "added".into()
                    } else {
                        "reload or next-hop change".into()
                    }
                });
                let s = &self.services[i];
                let name = s.backend(id).map_or("?", |b| b.cfg.name.as_str());
                self.history.record(&s.cfg.name, name, from, to, &reason);
            }
        }
        Ok(())
    }

    /// Brings one service's backend entries and ring in line with the model.
    fn sync_service(&mut self, i: usize) -> Result<()> {
        // Entries first: a backend that failed stops getting packets with this
        // one write, before any ring work.
        self.write_entries(i)?;
        let s = &self.services[i];
        let members = s.ring_members();
        if s.published.as_ref() != Some(&members) {
            self.dp.set_fresh_rings(self.cfg.fleet.is_some());
            let slots = self.dp.publish_pool(&s.key, s.cfg.ring_size, &members)?;
            let identities: HashMap<u32, u64> = members.iter().map(|m| (m.id, m.identity)).collect();
            let s = &mut self.services[i];
            s.table_digest = crate::ring::table_digest(&slots, |id| identities.get(&id).copied().unwrap_or(0));
            s.published = Some(members.clone());
            info!(service = %s.cfg.name, members = members.len(), slots = slots.len(), "ring switched in");
        }
        let s = &mut self.services[i];
        let starved = members.is_empty();
        let starved_changed = starved != s.starved;
        if starved_changed {
            s.starved = starved;
            if starved {
                let fallback = match (&s.cfg.fallback_backend, s.cfg.fallback) {
                    (Some(b), _) => format!("sorry backend {b}"),
                    (None, Fallback::Pass) => "pass to the local stack".into(),
                    (None, Fallback::Drop) => "drop".into(),
                };
                error!(service = %s.cfg.name, %fallback, "NO HEALTHY BACKEND: new flows now fall back");
            } else {
                info!(service = %s.cfg.name, "service has healthy backends again");
            }
            // A VIP's announcement follows whether it has a backend.
            self.sync_announcements();
        }
        Ok(())
    }

    /// Runs until SIGTERM or SIGINT. The dataplane stays pinned and keeps
    /// forwarding after it returns.
    pub async fn run(mut self, mut events: mpsc::UnboundedReceiver<CheckReport>) -> Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let sock = self.cfg.daemon.socket_path();
        let (call_tx, mut calls) = mpsc::channel(16);
        let api = api::listen(&sock, self.cfg.daemon.api_group.as_deref(), call_tx.clone())
            .with_context(|| format!("listening on {}", sock.display()))?;
        if self.cfg.daemon.metrics.is_some() {
            metrics::watch_table_usage(self.cfg.daemon.pin_dir(), self.table_usage.clone());
        }
        if self.services.iter().any(|s| s.cfg.forwarding == Forwarding::Nat) {
            nat::spawn_expiry(self.cfg.daemon.pin_dir());
        }
        let metrics_srv = match self.cfg.daemon.metrics {
            Some(addr) => {
                let h = metrics::serve(addr, call_tx).await.with_context(|| format!("metrics endpoint on {addr}"))?;
                info!(%addr, "metrics at http://{addr}/metrics");
                Some(h)
            }
            None => None,
        };
        let mut samples = self.samples_rx.take().context("daemon already ran")?;
        let mut hooks = self.replace_rx.take().context("daemon already ran")?;
        let mut agents = self.agent_rx.take().context("daemon already ran")?;
        let mut passive = passive::watch(&self.cfg.daemon.pin_dir());
        // Without etcd, a channel that never speaks.
        let (_no_fleet, idle) = mpsc::unbounded_channel();
        let mut fleet_events = self.fleet_rx.take().unwrap_or(idle);
        let in_fleet = self.fleet.is_some();
        let mut fence_tick = tokio::time::interval(Self::fence_period());
        fence_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut hup = signal(SignalKind::hangup())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        // Slow-start steps are a tenth of `slow_start`; this finds them.
        let mut ramp_tick = tokio::time::interval(Duration::from_millis(100));
        ramp_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        info!(socket = %sock.display(), "veerd ready");
        if let Err(e) = notify::notify("READY=1") {
            warn!(error = %e, "telling the service manager we are ready failed");
        }
        loop {
            tokio::select! {
                // Events first: a queued ring rebuild never delays a state word.
                biased;
                Some(report) = events.recv() => {
                    // Take every report already queued: one ring rebuild per service.
                    let mut batch = vec![report];
                    while let Ok(r) = events.try_recv() {
                        batch.push(r);
                    }
                    self.on_reports(batch);
                }
                Some(signals) = passive.recv() => self.on_passive(signals),
                Some((req, reply)) = calls.recv() => { let _ = reply.send(self.handle(req)); }
                Some(p) = samples.recv() => {
                    if p.local_error {
                        *self.metrics.local_errors.entry(p.backend).or_default() += 1;
                    } else {
                        self.metrics.latency.entry(p.backend).or_default().observe(p.latency);
                    }
                }
                _ = hup.recv() => { info!("SIGHUP: reloading {}", self.cfg_path.display()); let _ = self.reload(); }
                _ = term.recv() => break,
                _ = int.recv() => break,
                Some(done) = hooks.recv() => self.on_hook_done(done),
                Some(report) = agents.recv() => self.on_agent(report),
                Some(ev) = fleet_events.recv() => self.on_fleet(ev),
                _ = fence_tick.tick(), if in_fleet => self.check_fence(),
                _ = tick.tick() => {
                    self.retry_stale_dataplane();
                    self.resolve_nexthops();
                    self.scale_tick();
                    self.replace_tick();
                    self.sync_announcements();
                }
                _ = ramp_tick.tick(), if self.ramping() => self.step_ramps(),
                () = std::future::ready(()), if !self.ring_queue.is_empty() => self.sync_next_ring(),
            }
        }
        api.abort();
        if let Some(m) = metrics_srv {
            m.abort();
        }
        let _ = std::fs::remove_file(&sock);
        info!(
            pins = %self.cfg.daemon.pin_dir().display(),
            "veerd stopping; the dataplane keeps forwarding with the last state (`veerd uninstall` removes it)"
        );
        Ok(())
    }
}

/// Removes everything an instance installed: pinned links (detaching the
/// program), pinned maps, the API socket. Refused while the instance's veerd
/// runs (it holds the instance lock) unless `force`.
pub fn uninstall(cfg: &Config, force: bool) -> Result<Vec<PathBuf>> {
    let _lock = match lock(&cfg.daemon) {
        Ok(l) => Some(l),
        Err(e) if force => {
            warn!(error = %format!("{e:#}"), "--force: uninstalling under a running veerd");
            None
        }
        Err(e) => {
            return Err(e.context(
                "veerd is running for this instance: stop it first (the dataplane keeps forwarding without it), \
                 or pass --force to remove it from under the running daemon",
            ))
        }
    };
    pin::ensure_bpffs(&cfg.daemon.bpffs)?;
    let mut removed = pin::uninstall(&cfg.daemon.pin_dir())?;
    let sock = cfg.daemon.socket_path();
    if std::fs::remove_file(&sock).is_ok() {
        removed.push(sock);
    }
    Ok(removed)
}
