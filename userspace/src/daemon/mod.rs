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

pub mod api;
pub mod guard;
pub mod metrics;
pub mod model;
pub mod overrides;
pub mod reconcile;
pub mod recovery;
pub mod scale;

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use serde_json::json;
use tokio::sync::mpsc;
use tracing::{error, info, warn};
use veer_abi::{Backend, BackendState, ServiceKey, NO_BACKEND, SERVICE_F_FALLBACK_PASS};

use crate::{
    config::{
        self, fmt_mac, AttachModeConfig, BackendConfig, Config, Fallback, InitialState, ScaleMetric, ServiceConfig,
    },
    dataplane::{self, pin, service_key, to_abi, AttachMode, Dataplane, DataplaneOptions, MapReader, ServiceSpec},
    health::{spawn_checker, CheckSpec, HealthEvent, Probe, ProbeSample},
    net::{self, Neighbour},
};
use metrics::DaemonMetrics;
use model::{Admin, BackendRt, ServiceRt};
use overrides::Overrides;

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

/// Why a change was not (wholly) applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Refused before anything was touched: the running state is unchanged.
    #[error("refused, nothing changed: {0}")]
    Refused(#[from] reconcile::PlanError),
    /// Applied, but writing the dataplane failed; it is retried every second.
    #[error("{0:#}")]
    Write(anyhow::Error),
}

/// The running daemon.
pub struct Daemon {
    cfg_path: PathBuf,
    cfg: Config,
    dp: Dataplane,
    services: Vec<ServiceRt>,
    events: mpsc::UnboundedSender<HealthEvent>,
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
    /// MAC of the one attached interface (zero with several): the source MAC
    /// of frames to backends with a configured MAC.
    single_iface_mac: [u8; 6],
    /// Backend ids recently freed (held back before reuse).
    id_pool: reconcile::IdPool,
    /// A dataplane write failed: rewrite everything at the next tick.
    dataplane_stale: bool,
    /// Occupancy of the connection tables, refreshed in the background.
    table_usage: std::sync::Arc<std::sync::Mutex<Option<dataplane::TableUsage>>>,
    _lock: std::fs::File,
}

/// A backend that was not running: adopted from the pins (health, next hop
/// and all) if it is there, or fresh.
fn new_backend(sid: u32, id: u32, cfg: BackendConfig, scfg: &ServiceConfig, adoption: &Adoption) -> BackendRt {
    let adopted = adoption.backends.get(&(sid, to_abi(cfg.address))).filter(|(pinned_id, _)| *pinned_id == id);
    let (healthy, nexthop, src_mac) = match adopted {
        Some((_, e)) => {
            let healthy = match BackendState::from_u32(e.state) {
                BackendState::Up | BackendState::Draining => true,
                BackendState::Down => false,
                BackendState::Disabled => scfg.health.initial == InitialState::Up,
            };
            let nexthop = (e.mac != [0; 6]).then_some(Neighbour { mac: e.mac, ifindex: e.ifindex });
            (healthy, nexthop, e.src_mac)
        }
        None => {
            info!(service = %scfg.name, backend = %cfg.name, address = %cfg.address, id, "backend configured");
            (scfg.health.initial == InitialState::Up, None, [0; 6])
        }
    };
    // Operator state comes from the runtime state file: `apply` sets it.
    BackendRt {
        cfg,
        id,
        healthy,
        held: false,
        admin: Admin::Enabled,
        nexthop,
        src_mac,
        checker: None,
        generation: 0,
        recovery: None,
    }
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
    }
}

fn lock(name: &str) -> Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    std::fs::create_dir_all("/run/veer").context("creating /run/veer")?;
    let path = format!("/run/veer/{name}.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {path}"))?;
    // SAFETY: flock on a file we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        bail!("another veerd instance {name:?} is running (lock {path} is held)");
    }
    Ok(f)
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
    ) -> Result<(Self, mpsc::UnboundedReceiver<HealthEvent>)> {
        let lock = lock(&cfg.daemon.name)?;
        pin::ensure_bpffs(&cfg.daemon.bpffs)?;
        let pin_dir = cfg.daemon.pin_dir();
        let opts = DataplaneOptions {
            conn_table_size: cfg.daemon.conn_table_size,
            new_flow_table_size: cfg.daemon.new_flow_table_size,
            max_services: cfg.daemon.max_services,
            max_backends: cfg.daemon.max_backends,
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
        let written =
            adoption.as_ref().map(|a| a.backends.values().map(|(id, b)| (*id, *b)).collect()).unwrap_or_default();
        let (tx, rx) = mpsc::unbounded_channel();
        let state = cfg.daemon.state_path();
        let overrides = if reset_runtime {
            match std::fs::remove_file(&state) {
                Ok(()) => warn!(file = %state.display(), "--reset-runtime: runtime changes discarded"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("removing {}", state.display())),
            }
            Overrides::default()
        } else {
            Overrides::load(&state).with_context(|| {
                format!(
                    "the runtime-state file {} is unreadable, so the drains, disables, weights and added \
                     backends it records cannot be restored: repair it, or start with `veerd run --reset-runtime` \
                     to discard them",
                    state.display()
                )
            })?
        };
        if !overrides.is_empty() {
            info!(file = %state.display(), "runtime changes restored");
        }
        let (samples, samples_rx) = mpsc::channel(1024);
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
            id_pool: reconcile::IdPool::default(),
            dataplane_stale: false,
            table_usage: Default::default(),
            single_iface_mac: match cfg.daemon.interfaces.as_slice() {
                [one] => net::iface_mac(one).unwrap_or([0; 6]),
                _ => [0; 6],
            },
            _lock: lock,
        };
        d.apply(cfg.clone(), adoption)?;
        let mode = match cfg.daemon.attach_mode {
            AttachModeConfig::Driver => AttachMode::Driver,
            AttachModeConfig::Skb => AttachMode::Skb,
        };
        for iface in &cfg.daemon.interfaces {
            let adopted = d.dp.attach_pinned(iface, mode, &pin_dir).with_context(|| format!("attaching to {iface}"))?;
            if adopted {
                info!(%iface, "adopted the pinned XDP link; program replaced atomically");
            } else {
                info!(%iface, ?mode, "XDP program attached and its link pinned");
            }
        }
        d.resolve_nexthops();
        Ok((d, rx))
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
        let spec = CheckSpec {
            backend: b.id,
            generation,
            target: SocketAddr::new(b.cfg.address, svc.health.port.unwrap_or(svc.port)),
            probe: Probe::from_config(&svc.health),
            health: svc.health.clone(),
            initially_up: b.healthy,
        };
        b.checker = Some(spawn_checker(spec, self.events.clone(), Some(self.samples.clone())));
    }

    /// Makes the runtime and the dataplane match `file` (plus the runtime
    /// overrides), keeping ids, health, operator state and flows of
    /// everything that stays.
    ///
    /// All or nothing: the plan ([`reconcile::plan`]) decides everything that
    /// can refuse the change before anything is touched; a refused change
    /// leaves the running state, the checkers and the dataplane as they were.
    /// A dataplane write that fails after that (the kernel refusing a map
    /// update) leaves the model applied and the dataplane retried every
    /// second until it matches.
    fn apply(&mut self, file: Config, adoption: Option<Adoption>) -> Result<(), ApplyError> {
        let adoption = adoption.unwrap_or_default();
        let mut overrides = self.overrides.clone();
        let cfg = overrides.apply(&file);
        let wanted: Vec<(ServiceKey, &ServiceConfig)> = cfg
            .services
            .iter()
            .map(|s| (service_key(s.get_ref().vip, s.get_ref().port, s.get_ref().protocol), s.get_ref()))
            .collect();
        let now = std::time::Instant::now();
        let plan = reconcile::plan(
            &self.services.iter().map(ServiceRt::running).collect::<Vec<_>>(),
            &adoption.pinned(),
            &wanted
                .iter()
                .map(|(key, s)| reconcile::Wanted {
                    key: *key,
                    backends: s.backends.iter().map(|b| b.get_ref().address).collect(),
                })
                .collect::<Vec<_>>(),
            self.dp.max_services(),
            self.dp.max_backends(),
            &self.id_pool,
            now,
        )?;

        // Nothing below refuses the change.
        if overrides != self.overrides {
            info!("runtime changes naming backends no longer configured were dropped");
            self.overrides = overrides;
            self.save_overrides();
        }
        let mut old: HashMap<ServiceKey, ServiceRt> =
            std::mem::take(&mut self.services).into_iter().map(|s| (s.key, s)).collect();
        let mut next = Vec::with_capacity(wanted.len());
        for ((key, scfg), planned) in wanted.into_iter().zip(&plan.services) {
            let prev = old.remove(&key);
            next.push(self.next_service(key, scfg, planned, prev, &adoption));
        }
        drop(old); // what the plan dropped: its checkers and restart loops stop
        self.id_pool.release(plan.freed_backends.iter().copied(), now);
        self.id_pool.taken(plan.services.iter().flat_map(|s| s.backends.iter().map(|b| b.id)));
        self.services = next;
        self.cfg = file;
        self.write_plan(&plan).map_err(ApplyError::Write)
    }

    /// Applies a change to the runtime overrides: `change` edits a copy, which
    /// is kept (and persisted) only if the change applies.
    fn apply_overrides(&mut self, change: impl FnOnce(&mut Overrides)) -> Result<(), String> {
        let before = self.overrides.clone();
        change(&mut self.overrides);
        match self.apply(self.cfg.clone(), None) {
            Ok(()) => {
                self.save_overrides();
                Ok(())
            }
            Err(e @ ApplyError::Refused(_)) => {
                self.overrides = before;
                Err(e.to_string())
            }
            Err(e @ ApplyError::Write(_)) => {
                // Applied: the dataplane catches up on its own.
                self.save_overrides();
                Err(e.to_string())
            }
        }
    }

    /// The runtime of one planned service: what carries on from `prev`, and
    /// new backends (adopted from the pins, or fresh) with their checkers.
    fn next_service(
        &mut self,
        key: ServiceKey,
        scfg: &ServiceConfig,
        planned: &reconcile::PlannedService,
        prev: Option<ServiceRt>,
        adoption: &Adoption,
    ) -> ServiceRt {
        let sid = planned.id;
        let health_changed = prev.as_ref().is_some_and(|p| p.cfg.health != scfg.health || p.cfg.port != scfg.port);
        let (mut old_backends, published, prev_ring, fail_open) = match prev {
            Some(mut p) => (
                std::mem::take(&mut p.backends),
                p.published.take(),
                Some(p.cfg.ring_size),
                std::mem::take(&mut p.fail_open),
            ),
            None => (Vec::new(), None, None, Default::default()),
        };
        let mut backends = Vec::with_capacity(scfg.backends.len());
        for (bcfg, pb) in scfg.backends.iter().map(|b| b.get_ref().clone()).zip(&planned.backends) {
            let mut b = match old_backends.iter().position(|x| x.cfg.address == bcfg.address) {
                Some(pos) => {
                    let mut b = old_backends.swap_remove(pos);
                    if b.cfg.mac != bcfg.mac {
                        b.nexthop = None;
                    }
                    b.cfg = bcfg;
                    b
                }
                None => new_backend(sid, pb.id, bcfg, scfg, adoption),
            };
            if let Some(mac) = b.cfg.mac.as_deref().and_then(config::parse_mac) {
                b.nexthop = Some(Neighbour { mac, ifindex: 0 });
                // Sent back out of the interface it came in on: with one
                // interface, that one's MAC is the source.
                if b.src_mac == [0; 6] {
                    b.src_mac = self.single_iface_mac;
                }
            }
            // The runtime state file is authoritative for operator state.
            b.admin =
                self.overrides.admin.get(&overrides::key(&scfg.name, &b.cfg.name)).copied().unwrap_or(Admin::Enabled);
            if b.checker.is_none() || health_changed {
                self.spawn_check(scfg, &mut b);
            }
            backends.push(b);
        }
        for gone in &old_backends {
            info!(service = %scfg.name, backend = %gone.cfg.name, "backend removed by config");
        }
        let mut svc_cfg = scfg.clone();
        svc_cfg.backends.clear();
        if prev_ring.is_none() {
            info!(service = %svc_cfg.name, vip = %dataplane::display_service(&key), id = sid, "service configured");
        }
        // A new ring size needs a new ring now, not at the next membership
        // change (often a failover, when a fresh build would remap most flows).
        let published = published.filter(|_| prev_ring == Some(scfg.ring_size));
        ServiceRt { cfg: svc_cfg, key, id: sid, backends, published, starved: false, fail_open }
    }

    /// Writes what a plan changed: removed services and freed backends out,
    /// then every service published. A failed write marks the dataplane for
    /// a retry and is returned.
    fn write_plan(&mut self, plan: &reconcile::Plan) -> Result<()> {
        let mut first_error: Option<anyhow::Error> = None;
        for key in &plan.removed_services {
            info!(vip = %dataplane::display_service(key), "service removed");
            match self.dp.remove_service(key) {
                Ok(_) | Err(dataplane::DataplaneError::UnknownService(_)) => {}
                Err(e) => {
                    first_error.get_or_insert(e.into());
                }
            }
        }
        for id in &plan.freed_backends {
            if let Err(e) = self.clear_backend(*id) {
                first_error.get_or_insert(e);
            }
        }
        for i in 0..self.services.len() {
            let r = if crate::failpoint::hit("publish-service") {
                Err(anyhow::anyhow!("injected failure (VEER_FAILPOINTS)"))
            } else {
                self.publish_service(i)
            };
            if let Err(e) = r {
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            None => Ok(()),
            Some(e) => {
                self.mark_dataplane_stale();
                Err(e.context("writing the dataplane; the change is applied and the write is retried every second"))
            }
        }
    }

    /// Forgets what was written, so that the next sync rewrites everything.
    fn mark_dataplane_stale(&mut self) {
        self.dataplane_stale = true;
        self.written.clear();
        for s in &mut self.services {
            s.published = None;
        }
    }

    /// Retries the dataplane writes of a change that failed part way.
    fn retry_stale_dataplane(&mut self) {
        if !self.dataplane_stale {
            return;
        }
        for i in 0..self.services.len() {
            if let Err(e) = self.publish_service(i) {
                error!(error = %format!("{e:#}"), "dataplane still not written; retrying in a second");
                return;
            }
        }
        self.dataplane_stale = false;
        info!("dataplane written: it matches the running state again");
    }

    fn clear_backend(&mut self, id: u32) -> Result<()> {
        self.written.remove(&id);
        self.dp.clear_backend(id).context("clearing a backend entry")?;
        Ok(())
    }

    /// Writes a service, its backend entries and (if its members changed) its ring.
    fn publish_service(&mut self, i: usize) -> Result<()> {
        let s = &self.services[i];
        let fallback_backend = s
            .cfg
            .fallback_backend
            .as_ref()
            .and_then(|n| s.backends.iter().find(|b| &b.cfg.name == n))
            // Without a next-hop MAC it cannot be sent to: not used until resolved.
            .filter(|b| b.nexthop.is_some())
            .map_or(NO_BACKEND, |b| b.id);
        let flags = if s.cfg.fallback == Fallback::Pass { SERVICE_F_FALLBACK_PASS } else { 0 };
        let spec = ServiceSpec { id: s.id, scheduler: s.cfg.scheduler.into(), flags, fallback_backend };
        let key = s.key;
        if self.dp.service(&key)?.map(|v| (v.id, v.scheduler, v.flags, v.fallback_backend))
            != Some((spec.id, spec.scheduler as u8, spec.flags, spec.fallback_backend))
        {
            self.dp.upsert_service(&key, spec)?;
            // A new or re-keyed service has no ring yet.
            self.services[i].published = None;
        }
        self.sync_service(i)
    }

    /// Writes one service's backend entries that changed.
    fn write_entries(&mut self, i: usize) -> Result<()> {
        let sid = self.services[i].id;
        let entries: Vec<(u32, Backend)> =
            self.services[i].backends.iter().map(|b| (b.id, backend_entry(sid, b))).collect();
        for (id, e) in entries {
            if self.written.get(&id) != Some(&e) {
                self.dp.set_backend(id, &e)?;
                self.written.insert(id, e);
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
            let slots = self.dp.publish_pool(&s.key, s.cfg.ring_size, &members)?;
            let s = &mut self.services[i];
            s.published = Some(members.clone());
            info!(service = %s.cfg.name, members = members.len(), slots = slots.len(), "ring switched in");
        }
        let s = &mut self.services[i];
        let starved = members.is_empty();
        if starved != s.starved {
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
        }
        Ok(())
    }

    /// Applies health flips that arrived together. Every state word is
    /// written first (a failed backend stops getting packets with that one
    /// write), then each touched service's ring is rebuilt once: when many
    /// backends fail at once, no state word waits behind a ring rebuild.
    fn on_health(&mut self, events: Vec<HealthEvent>) {
        let mut touched: Vec<(usize, bool)> = Vec::new();
        let mut ups = Vec::new();
        for ev in events {
            let Some(i) = self.services.iter().position(|s| s.backends.iter().any(|b| b.id == ev.backend)) else {
                continue;
            };
            if !touched.iter().any(|(t, _)| *t == i) {
                touched.push((i, self.services[i].backups_active()));
            }
            let svc_name = self.services[i].cfg.name.clone();
            let Some(b) = self.services[i].backend_mut(ev.backend) else { continue };
            if b.generation != ev.generation || b.healthy == ev.up {
                continue;
            }
            b.healthy = ev.up;
            let name = b.cfg.name.clone();
            let id = b.id;
            if ev.up {
                *self.metrics.recoveries.entry(id).or_default() += 1;
                if let Some(r) = b.recovery.take() {
                    r.abort();
                }
            } else {
                *self.metrics.failovers.entry(id).or_default() += 1;
            }
            let held = self.guard_fail_open(i, id, ev.up);
            self.follow_recovery(i, id);
            if let Err(e) = self.write_entries(i) {
                error!(service = %svc_name, error = %format!("{e:#}"), "writing the dataplane failed");
            }
            if ev.up {
                // Logged once the ring holds it: UP means new flows reach it.
                ups.push((svc_name, name, ev.reason));
            } else if held {
                error!(service = %svc_name, backend = %name, reason = %ev.reason, "backend failing, but HELD IN by the fail-open guard");
            } else {
                warn!(service = %svc_name, backend = %name, reason = %ev.reason, "backend DOWN: no more packets to it");
            }
        }
        for &(i, _) in &touched {
            if let Err(e) = self.sync_service(i) {
                error!(service = %self.services[i].cfg.name, error = %format!("{e:#}"), "writing the dataplane failed");
            }
        }
        for (svc, backend, reason) in ups {
            info!(service = %svc, backend = %backend, reason = %reason, "backend UP");
        }
        for (i, backups_before) in touched {
            let s = &self.services[i];
            let backups_after = s.backups_active();
            if backups_after != backups_before {
                if backups_after {
                    warn!(service = %s.cfg.name, min_healthy = s.cfg.min_healthy, "fewer primaries up than min_healthy: backups promoted");
                } else {
                    info!(service = %s.cfg.name, "enough primaries up again: backups back on standby");
                }
            }
        }
    }

    /// Feeds a health flip of backend `id` to service `i`'s fail-open guard
    /// and holds or releases backends as it says. Returns whether `id` is held.
    fn guard_fail_open(&mut self, i: usize, id: u32, up: bool) -> bool {
        let s = &mut self.services[i];
        let (share, window, total) = (s.cfg.fail_open, s.cfg.health.detection_window(), s.backends.len());
        let failing = s.backends.iter().filter(|b| !b.healthy).count();
        let verdict = if up {
            s.fail_open.recovered(id, failing, share, total)
        } else {
            s.fail_open.failed(id, std::time::Instant::now(), window, share, total)
        };
        match verdict {
            guard::Guard::Tripped => {
                let recent: HashSet<u32> = s.fail_open.recent().collect();
                for b in s.backends.iter_mut().filter(|b| recent.contains(&b.id)) {
                    b.held = true;
                }
                self.metrics.fail_open_trips += 1;
                error!(
                    service = %s.cfg.name, failing, total, share, window = ?window,
                    "FAIL-OPEN: more than the fail_open share of backends failed within one detection window; \
                     keeping the last healthy set (is the balancer's own path broken?)"
                );
            }
            guard::Guard::Released => {
                for b in &mut s.backends {
                    b.held = false;
                }
                info!(service = %s.cfg.name, failing, total, "fail-open guard released: failed backends now go down");
            }
            guard::Guard::Same => {}
        }
        let tripped = s.fail_open.tripped();
        let Some(b) = s.backend_mut(id) else { return false };
        if up {
            b.held = false;
        } else if tripped {
            b.held = true;
        }
        b.held
    }

    /// Runs a backend's restart loop exactly while it is down, enabled by the
    /// operator (not drained, disabled or under a rollout) and has a restart
    /// command.
    fn follow_recovery(&mut self, i: usize, id: u32) {
        let svc_name = self.services[i].cfg.name.clone();
        let attempts = self.metrics.restarts.entry(id).or_default().clone();
        let Some(b) = self.services[i].backend_mut(id) else { return };
        let wanted = !b.healthy && b.admin == Admin::Enabled && b.cfg.restart.is_some();
        match (&b.recovery, wanted, b.cfg.restart.clone()) {
            (None, true, Some(r)) => {
                let addr = b.cfg.address.to_string();
                let name = b.cfg.name.clone();
                b.recovery = Some(tokio::spawn(recovery::restart_loop(svc_name, name, addr, r, attempts)));
            }
            (Some(_), false, _) => {
                if let Some(r) = b.recovery.take() {
                    r.abort();
                }
            }
            _ => {}
        }
    }

    /// Resolves next-hop MACs that are not configured, and follows changes.
    fn resolve_nexthops(&mut self) {
        let needs = |v4: bool| {
            self.services.iter().flat_map(|s| &s.backends).any(|b| b.cfg.mac.is_none() && b.cfg.address.is_ipv4() == v4)
        };
        let mut tables = HashMap::new();
        for v4 in [true, false] {
            if needs(v4) {
                match net::neighbour_table(v4) {
                    Ok(t) => {
                        tables.insert(v4, t);
                    }
                    Err(e) => warn!(error = %e, "reading the neighbour table failed"),
                }
            }
        }
        let mut changed = Vec::new();
        let mut new_ports = Vec::new();
        for (i, s) in self.services.iter_mut().enumerate() {
            for b in s.backends.iter_mut().filter(|b| b.cfg.mac.is_none()) {
                let found = tables.get(&b.cfg.address.is_ipv4()).and_then(|t| t.get(&b.cfg.address)).copied();
                match found {
                    Some(n) if b.nexthop != Some(n) => {
                        let ifname = net::ifname(n.ifindex).unwrap_or_default();
                        b.src_mac = net::iface_mac(&ifname).unwrap_or([0; 6]);
                        info!(service = %s.cfg.name, backend = %b.cfg.name, mac = %fmt_mac(&n.mac), iface = %ifname, "next hop resolved");
                        b.nexthop = Some(n);
                        new_ports.push(n.ifindex);
                        changed.push(i);
                    }
                    Some(_) => {}
                    None => net::poke(b.cfg.address),
                }
            }
        }
        for p in new_ports {
            if self.tx_ports.insert(p) {
                if let Err(e) = self.dp.add_tx_port(p) {
                    warn!(ifindex = p, error = %e, "cannot add egress interface to the devmap");
                }
            }
        }
        changed.dedup();
        for i in changed {
            // publish, not only sync: a sorry backend becomes usable once resolved.
            if let Err(e) = self.publish_service(i) {
                error!(error = %format!("{e:#}"), "writing the dataplane failed");
            }
        }
    }

    /// Re-reads the config file; a bad file changes nothing.
    pub fn reload(&mut self) -> Result<String, String> {
        let new = match config::load(&self.cfg_path) {
            Ok(c) => c,
            Err(e) => {
                self.metrics.reloads[1] += 1;
                error!(error = %e, "reload rejected: the config is invalid; the running config stays");
                return Err(e.to_string());
            }
        };
        if new.daemon != self.cfg.daemon {
            self.metrics.reloads[1] += 1;
            let e = "[daemon] settings changed: restart veerd to apply them (nothing was changed)".to_string();
            error!(error = %e, "reload rejected");
            return Err(e);
        }
        match self.apply(new, None) {
            Ok(()) => {
                self.metrics.reloads[0] += 1;
                self.resolve_nexthops();
                let n = self.services.len();
                info!(services = n, "config reloaded");
                Ok(format!("reloaded: {n} services"))
            }
            Err(e @ ApplyError::Refused(_)) => {
                self.metrics.reloads[1] += 1;
                error!(error = %e, "reload rejected; the running config stays");
                Err(e.to_string())
            }
            Err(e @ ApplyError::Write(_)) => {
                self.metrics.reloads[0] += 1;
                error!(error = %e, "config reloaded, but the dataplane write failed");
                Err(e.to_string())
            }
        }
    }

    /// The running state as JSON.
    pub fn status(&self) -> serde_json::Value {
        let services: Vec<_> = self
            .services
            .iter()
            .map(|s| {
                let ring: HashSet<u32> = s.published.iter().flatten().map(|m| m.id).collect();
                json!({
                    "name": s.cfg.name,
                    "vip": s.cfg.vip.to_string(),
                    "port": s.cfg.port,
                    "protocol": s.cfg.protocol.to_string(),
                    "id": s.id,
                    "starved": s.starved,
                    "fail_open": s.fail_open.tripped(),
                    "backends": s.backends.iter().map(|b| json!({
                        "name": b.cfg.name,
                        "address": b.cfg.address.to_string(),
                        "id": b.id,
                        "weight": b.cfg.weight,
                        "healthy": b.healthy,
                        "held": b.held,
                        "admin": b.admin,
                        "state": b.effective().name(),
                        "in_ring": ring.contains(&b.id),
                        "backup": b.cfg.backup,
                        "mac": b.nexthop.map(|n| fmt_mac(&n.mac)),
                        "runtime": self.overrides.note(&self.cfg, &s.cfg.name, &b.cfg.name),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        json!({
            "config": self.cfg_path.display().to_string(),
            "pins": self.cfg.daemon.pin_dir().display().to_string(),
            "services": services,
            "removed": self.overrides.removed,
        })
    }

    fn handle(&mut self, req: api::Request) -> api::Response {
        use api::Request as R;
        let r = match req {
            R::Status => return api::Response::ok(self.status()),
            R::Metrics => return api::Response::ok(json!(self.render_metrics())),
            R::Reload => return self.reload().map_or_else(api::Response::err, |m| api::Response::ok(json!(m))),
            R::Drain { service, backend } => self.set_admin(&service, &backend, Admin::Draining),
            R::Enable { service, backend } => self.set_admin(&service, &backend, Admin::Enabled),
            R::Disable { service, backend } => self.set_admin(&service, &backend, Admin::Disabled),
            R::Weight { service, backend, weight } => self.set_weight(&service, &backend, weight),
            R::AddBackend { service, name, address, weight, mac, backup } => {
                self.add_backend(&service, BackendConfig::runtime(name, address, weight.unwrap_or(1), mac, backup))
            }
            R::RemoveBackend { service, backend } => self.remove_backend(&service, &backend),
        };
        match r {
            Ok(msg) => {
                info!("{msg}");
                api::Response::ok(json!(msg))
            }
            Err(e) => api::Response::err(e),
        }
    }

    fn save_overrides(&self) {
        if let Err(e) = self.overrides.save(&self.cfg.daemon.state_path()) {
            error!(error = %e, "saving runtime state failed: changes will not survive a restart");
        }
    }

    fn find(&self, service: &str, backend: &str) -> Result<(usize, usize), String> {
        let i = self.services.iter().position(|s| s.cfg.name == service).ok_or_else(|| {
            let names: Vec<&str> = self.services.iter().map(|s| s.cfg.name.as_str()).collect();
            format!("no service named {service:?} (services: {})", names.join(", "))
        })?;
        let j = self.services[i].backends.iter().position(|b| b.cfg.name == backend).ok_or_else(|| {
            let names: Vec<&str> = self.services[i].backends.iter().map(|b| b.cfg.name.as_str()).collect();
            format!("no backend named {backend:?} in service {service} (backends: {})", names.join(", "))
        })?;
        Ok((i, j))
    }

    fn set_admin(&mut self, service: &str, backend: &str, admin: Admin) -> Result<String, String> {
        let (i, j) = self.find(service, backend)?;
        let k = overrides::key(service, backend);
        if admin == Admin::Enabled {
            self.overrides.admin.remove(&k);
        } else {
            self.overrides.admin.insert(k, admin);
        }
        self.save_overrides();
        self.services[i].backends[j].admin = admin;
        let id = self.services[i].backends[j].id;
        self.follow_recovery(i, id);
        self.sync_service(i).map_err(|e| format!("{e:#}"))?;
        Ok(format!("{service}/{backend}: {}", admin.name()))
    }

    fn set_weight(&mut self, service: &str, backend: &str, weight: u32) -> Result<String, String> {
        if !(1..=65535).contains(&weight) {
            return Err(format!("weight {weight} out of range: 1 to 65535 (drain a backend to stop new flows)"));
        }
        let (i, j) = self.find(service, backend)?;
        let file_weight = self.cfg.backend(service, backend).map(|b| b.weight);
        let k = overrides::key(service, backend);
        if file_weight == Some(weight) {
            self.overrides.weight.remove(&k);
        } else {
            self.overrides.weight.insert(k, weight);
        }
        // An added backend's weight lives in its added entry.
        if let Some(b) = self.overrides.added.get_mut(service).and_then(|v| v.iter_mut().find(|b| b.name == backend)) {
            b.weight = weight;
            self.overrides.weight.remove(&overrides::key(service, backend));
        }
        self.save_overrides();
        self.services[i].backends[j].cfg.weight = weight;
        self.sync_service(i).map_err(|e| format!("{e:#}"))?;
        Ok(format!("{service}/{backend}: weight {weight}"))
    }

    fn add_backend(&mut self, service: &str, b: BackendConfig) -> Result<String, String> {
        let i = self
            .services
            .iter()
            .position(|s| s.cfg.name == service)
            .ok_or_else(|| format!("no service named {service:?}"))?;
        let s = &self.services[i];
        if b.name.is_empty() || b.name.contains('/') {
            return Err(format!("invalid backend name {:?}", b.name));
        }
        if s.backends.iter().any(|x| x.cfg.name == b.name) {
            return Err(format!("service {service} already has a backend named {:?}", b.name));
        }
        if let Some(x) = s.backends.iter().find(|x| x.cfg.address == b.address) {
            return Err(format!("address {} is already backend {} of service {service}", b.address, x.cfg.name));
        }
        if !(1..=65535).contains(&b.weight) {
            return Err(format!("weight {} out of range: 1 to 65535", b.weight));
        }
        if let Some(m) = &b.mac {
            if config::parse_mac(m).is_none() {
                return Err(format!("{m:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"));
            }
        }
        let name = b.name.clone();
        let addr = b.address;
        self.apply_overrides(|o| {
            o.removed.remove(&overrides::key(service, &name));
            o.added.entry(service.to_string()).or_default().push(b);
        })?;
        self.resolve_nexthops();
        Ok(format!("{service}/{name}: added ({addr})"))
    }

    fn remove_backend(&mut self, service: &str, backend: &str) -> Result<String, String> {
        self.find(service, backend)?;
        self.apply_overrides(|o| {
            let was_added = o.added.get_mut(service).is_some_and(|v| {
                let n = v.len();
                v.retain(|b| b.name != backend);
                v.len() != n
            });
            o.added.retain(|_, v| !v.is_empty());
            if !was_added {
                o.removed.insert(overrides::key(service, backend));
            }
            o.admin.remove(&overrides::key(service, backend));
            o.weight.remove(&overrides::key(service, backend));
        })?;
        Ok(format!("{service}/{backend}: removed"))
    }

    /// The daemon's metrics in Prometheus text format.
    fn render_metrics(&self) -> String {
        use metrics::label;
        use std::fmt::Write as _;
        let mut o = String::new();
        let _ = writeln!(o, "# HELP veer_service_packets_total Packets forwarded for a service.\n# TYPE veer_service_packets_total counter");
        let mut svc_lines = (String::new(), String::new(), String::new());
        let mut be = (String::new(), String::new(), String::new(), String::new(), String::new(), String::new());
        let (mut lat, mut fo, mut rec, mut rs) = (String::new(), String::new(), String::new(), String::new());
        let mut local = String::new();
        let mut fail_open = String::new();
        for s in &self.services {
            let sl = format!("service=\"{}\"", label(&s.cfg.name));
            let c = self.dp.service_counters(s.id).unwrap_or_default();
            let _ = writeln!(o, "veer_service_packets_total{{{sl}}} {}", c.packets);
            let _ = writeln!(svc_lines.0, "veer_service_bytes_total{{{sl}}} {}", c.bytes);
            let _ = writeln!(svc_lines.1, "veer_service_new_flows_total{{{sl}}} {}", c.new_flows);
            let healthy = s.backends.iter().filter(|b| b.effective() == BackendState::Up).count();
            let _ = writeln!(svc_lines.2, "veer_service_healthy_backends{{{sl}}} {healthy}");
            let _ = writeln!(fail_open, "veer_service_fail_open{{{sl}}} {}", u8::from(s.fail_open.tripped()));
            for b in &s.backends {
                let bl = format!("{sl},backend=\"{}\"", label(&b.cfg.name));
                let c = self.dp.backend_counters(b.id).unwrap_or_default();
                let _ = writeln!(be.0, "veer_backend_packets_total{{{bl}}} {}", c.packets);
                let _ = writeln!(be.1, "veer_backend_bytes_total{{{bl}}} {}", c.bytes);
                let _ = writeln!(be.2, "veer_backend_new_flows_total{{{bl}}} {}", c.new_flows);
                let _ = writeln!(be.3, "veer_backend_up{{{bl}}} {}", u8::from(b.effective() == BackendState::Up));
                let state = b.effective();
                for st in [BackendState::Up, BackendState::Down, BackendState::Draining, BackendState::Disabled] {
                    let _ =
                        writeln!(be.4, "veer_backend_state{{{bl},state=\"{}\"}} {}", st.name(), u8::from(state == st));
                }
                let _ = writeln!(be.5, "veer_backend_weight{{{bl}}} {}", b.cfg.weight);
                let h = self.metrics.latency.get(&b.id).cloned().unwrap_or_default();
                metrics::write_histogram(&mut lat, "veer_health_check_duration_seconds", &bl, &h);
                let _ = writeln!(
                    fo,
                    "veer_failovers_total{{{bl}}} {}",
                    self.metrics.failovers.get(&b.id).copied().unwrap_or(0)
                );
                let _ = writeln!(
                    rec,
                    "veer_recoveries_total{{{bl}}} {}",
                    self.metrics.recoveries.get(&b.id).copied().unwrap_or(0)
                );
                let n = self.metrics.restarts.get(&b.id).map_or(0, |a| a.load(std::sync::atomic::Ordering::Relaxed));
                let _ = writeln!(rs, "veer_restart_attempts_total{{{bl}}} {n}");
                let n = self.metrics.local_errors.get(&b.id).copied().unwrap_or(0);
                let _ = writeln!(local, "veer_health_check_local_errors_total{{{bl}}} {n}");
            }
        }
        let sections: [(&str, &str, &str, &str); 16] = [
            ("veer_service_bytes_total", "counter", "Bytes forwarded for a service.", &svc_lines.0),
            ("veer_service_new_flows_total", "counter", "Flows scheduled for a service.", &svc_lines.1),
            ("veer_service_healthy_backends", "gauge", "Backends up in a service.", &svc_lines.2),
            (
                "veer_service_fail_open",
                "gauge",
                "1 while the fail-open guard holds failed backends in (too many failed at once).",
                &fail_open,
            ),
            ("veer_backend_packets_total", "counter", "Packets forwarded to a backend.", &be.0),
            ("veer_backend_bytes_total", "counter", "Bytes forwarded to a backend.", &be.1),
            ("veer_backend_new_flows_total", "counter", "Flows scheduled on a backend.", &be.2),
            ("veer_backend_up", "gauge", "1 when the backend takes new flows.", &be.3),
            ("veer_backend_state", "gauge", "The backend's state word.", &be.4),
            ("veer_backend_weight", "gauge", "The backend's weight.", &be.5),
            ("veer_health_check_duration_seconds", "histogram", "Health-check probe latency.", &lat),
            ("veer_failovers_total", "counter", "Times a backend went down.", &fo),
            ("veer_recoveries_total", "counter", "Times a backend came back up.", &rec),
            ("veer_restart_attempts_total", "counter", "Restart command runs.", &rs),
            (
                "veer_health_check_local_errors_total",
                "counter",
                "Checks that could not run here (no file descriptors, memory...): no verdict, state held.",
                &local,
            ),
            ("veer_dataplane_packets_total", "counter", "Global dataplane counters.", ""),
        ];
        for (name, kind, help, body) in sections {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
            o.push_str(body);
            if name == "veer_dataplane_packets_total" {
                for (c, v) in self.dp.global_counters().unwrap_or_default() {
                    let _ = writeln!(o, "veer_dataplane_packets_total{{counter=\"{}\"}} {v}", c.name());
                }
            }
        }
        if let Some(u) = self.table_usage.lock().ok().and_then(|u| *u) {
            metrics::write_table_usage(&mut o, &u);
        }
        let _ =
            writeln!(o, "# HELP veer_scale_hooks_total Scaling hooks fired.\n# TYPE veer_scale_hooks_total counter");
        for ((svc, dir), n) in &self.metrics.scale_hooks {
            let _ = writeln!(o, "veer_scale_hooks_total{{service=\"{}\",direction=\"{dir}\"}} {n}", label(svc));
        }
        let _ = writeln!(
            o,
            "# HELP veer_fail_open_trips_total Times a fail-open guard tripped.\n# TYPE veer_fail_open_trips_total counter\nveer_fail_open_trips_total {}",
            self.metrics.fail_open_trips
        );
        let _ = writeln!(o, "# HELP veer_reloads_total Config reloads.\n# TYPE veer_reloads_total counter");
        let _ = writeln!(o, "veer_reloads_total{{result=\"applied\"}} {}", self.metrics.reloads[0]);
        let _ = writeln!(o, "veer_reloads_total{{result=\"refused\"}} {}", self.metrics.reloads[1]);
        o
    }

    /// Feeds each service's load to its scaling hooks.
    fn scale_tick(&mut self) {
        let now = std::time::Instant::now();
        let flows =
            if self.services.iter().any(|s| s.cfg.scale.as_ref().is_some_and(|c| c.metric == ScaleMetric::Flows)) {
                self.dp.flows().ok()
            } else {
                None
            };
        let active: HashMap<u32, usize> =
            flows.as_deref().map(|f| dataplane::active_per_backend(f, FLOW_IDLE)).unwrap_or_default();
        for s in &self.services {
            let Some(cfg) = &s.cfg.scale else { continue };
            let healthy = s.backends.iter().filter(|b| b.effective() == BackendState::Up).count();
            let st = self.scale.entry(s.cfg.name.clone()).or_default();
            let total = match cfg.metric {
                ScaleMetric::Pps => match st.pps(now, self.dp.service_counters(s.id).map_or(0, |c| c.packets)) {
                    Some(p) => p,
                    None => continue,
                },
                ScaleMetric::Flows => {
                    s.backends.iter().map(|b| active.get(&b.id).copied().unwrap_or(0)).sum::<usize>() as f64
                }
            };
            let load = total / healthy.max(1) as f64;
            if let Some(dir) = st.observe(cfg, now, load) {
                *self.metrics.scale_hooks.entry((s.cfg.name.clone(), dir.as_str())).or_default() += 1;
                scale::fire(&s.cfg.name, cfg, dir, load, healthy);
            }
        }
    }

    /// Runs until SIGTERM or SIGINT. The dataplane stays pinned and keeps
    /// forwarding after it returns.
    pub async fn run(mut self, mut events: mpsc::UnboundedReceiver<HealthEvent>) -> Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let sock = self.cfg.daemon.socket_path();
        let (call_tx, mut calls) = mpsc::channel(16);
        let api = api::listen(&sock, self.cfg.daemon.api_group.as_deref(), call_tx.clone())
            .with_context(|| format!("listening on {}", sock.display()))?;
        if self.cfg.daemon.metrics.is_some() {
            metrics::watch_table_usage(self.cfg.daemon.pin_dir(), self.table_usage.clone());
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
        let mut hup = signal(SignalKind::hangup())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        info!(socket = %sock.display(), "veerd ready");
        loop {
            tokio::select! {
                Some(ev) = events.recv() => {
                    // Take every flip already queued: one ring rebuild per service.
                    let mut batch = vec![ev];
                    while let Ok(ev) = events.try_recv() {
                        batch.push(ev);
                    }
                    let any_up = batch.iter().any(|e| e.up);
                    self.on_health(batch);
                    if any_up { self.resolve_nexthops(); }
                }
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
                _ = tick.tick() => { self.retry_stale_dataplane(); self.resolve_nexthops(); self.scale_tick(); }
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
    let _lock = match lock(&cfg.daemon.name) {
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
