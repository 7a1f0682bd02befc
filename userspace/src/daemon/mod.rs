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
pub mod model;
pub mod recovery;

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
    config::{self, AttachModeConfig, BackendConfig, Config, Fallback, InitialState, ServiceConfig},
    dataplane::{self, pin, service_key, to_abi, AttachMode, Dataplane, DataplaneOptions, MapReader, ServiceSpec},
    health::{spawn_checker, CheckSpec, HealthEvent, Probe},
    net::{self, Neighbour},
};
use model::{Admin, BackendRt, ServiceRt};

/// What a restarted daemon finds in the pinned maps.
#[derive(Debug, Default)]
struct Adoption {
    services: HashMap<ServiceKey, u32>,
    backends: HashMap<(u32, [u8; 16]), (u32, Backend)>,
}

impl Adoption {
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
    events: mpsc::UnboundedSender<HealthEvent>,
    next_generation: u64,
    tx_ports: HashSet<u32>,
    /// Backend entries as last written (skip writes that change nothing).
    written: HashMap<u32, Backend>,
    _lock: std::fs::File,
}

fn lowest_free(used: &HashSet<u32>) -> u32 {
    (0..).find(|i| !used.contains(i)).unwrap_or(u32::MAX)
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

impl Daemon {
    /// Loads (or adopts) the dataplane, applies `cfg` and attaches. Health
    /// events arrive on the returned receiver, to be handed to [`Daemon::run`].
    pub fn start(cfg_path: &Path, cfg: Config) -> Result<(Self, mpsc::UnboundedReceiver<HealthEvent>)> {
        let lock = lock(&cfg.daemon.name)?;
        pin::ensure_bpffs(&cfg.daemon.bpffs)?;
        let pin_dir = cfg.daemon.pin_dir();
        let opts =
            DataplaneOptions { conn_table_size: cfg.daemon.conn_table_size, max_services: cfg.daemon.max_services };
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
        let mut d = Daemon {
            cfg_path: cfg_path.to_path_buf(),
            cfg: cfg.clone(),
            dp,
            services: Vec::new(),
            events: tx,
            next_generation: 1,
            tx_ports: HashSet::new(),
            written,
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
        b.checker = Some(spawn_checker(spec, self.events.clone(), None));
    }

    /// Makes the runtime and the dataplane match `cfg`, keeping ids, health,
    /// operator state and flows of everything that stays.
    fn apply(&mut self, cfg: Config, adoption: Option<Adoption>) -> Result<()> {
        let adoption = adoption.unwrap_or_default();
        let mut old: HashMap<ServiceKey, ServiceRt> =
            std::mem::take(&mut self.services).into_iter().map(|s| (s.key, s)).collect();

        // Ids that stay (from the running state or the pins) are reserved before new ones are handed out.
        let mut svc_ids: HashSet<u32> = HashSet::new();
        let mut be_ids: HashSet<u32> = HashSet::new();
        let wanted: Vec<(ServiceKey, &ServiceConfig)> = cfg
            .services
            .iter()
            .map(|s| (service_key(s.get_ref().vip, s.get_ref().port, s.get_ref().protocol), s.get_ref()))
            .collect();
        for (key, s) in &wanted {
            let sid = old.get(key).map(|o| o.id).or_else(|| adoption.services.get(key).copied());
            if let Some(sid) = sid {
                svc_ids.insert(sid);
                for b in &s.backends {
                    let b = b.get_ref();
                    let kept = old
                        .get(key)
                        .and_then(|o| o.backends.iter().find(|x| x.cfg.address == b.address).map(|x| x.id))
                        .or_else(|| adoption.backends.get(&(sid, to_abi(b.address))).map(|(id, _)| *id));
                    if let Some(id) = kept {
                        be_ids.insert(id);
                    }
                }
            }
        }

        let mut next = Vec::with_capacity(wanted.len());
        for (key, scfg) in wanted {
            let mut prev = old.remove(&key);
            let sid = match prev.as_ref().map(|p| p.id).or_else(|| adoption.services.get(&key).copied()) {
                Some(id) => id,
                None => {
                    let id = lowest_free(&svc_ids);
                    svc_ids.insert(id);
                    id
                }
            };
            let health_changed = prev.as_ref().is_some_and(|p| p.cfg.health != scfg.health || p.cfg.port != scfg.port);
            let mut old_backends: Vec<BackendRt> =
                prev.as_mut().map(|p| std::mem::take(&mut p.backends)).unwrap_or_default();
            let mut backends = Vec::with_capacity(scfg.backends.len());
            for bcfg in scfg.backends.iter().map(|b| b.get_ref().clone()) {
                let mut b = if let Some(pos) = old_backends.iter().position(|x| x.cfg.address == bcfg.address) {
                    let mut b = old_backends.swap_remove(pos);
                    if b.cfg.mac != bcfg.mac {
                        b.nexthop = None;
                    }
                    b.cfg = bcfg;
                    b
                } else {
                    self.new_backend(sid, bcfg, scfg, &adoption, &mut be_ids)
                };
                if let Some(mac) = b.cfg.mac.as_deref().and_then(config::parse_mac) {
                    b.nexthop = Some(Neighbour { mac, ifindex: 0 });
                }
                if b.checker.is_none() || health_changed {
                    self.spawn_check(scfg, &mut b);
                }
                backends.push(b);
            }
            for gone in old_backends {
                info!(service = %scfg.name, backend = %gone.cfg.name, "backend removed by config");
                self.clear_backend(gone.id)?;
            }
            let mut svc_cfg = scfg.clone();
            svc_cfg.backends.clear();
            let is_new = prev.is_none();
            let published = prev.and_then(|p| p.published);
            let svc = ServiceRt { cfg: svc_cfg, key, id: sid, backends, published, starved: false };
            if is_new {
                info!(service = %svc.cfg.name, vip = %dataplane::display_service(&key), id = sid, "service configured");
            }
            next.push(svc);
        }
        for (_, gone) in old {
            info!(service = %gone.cfg.name, "service removed by config");
            self.dp.remove_service(&gone.key)?;
            for b in &gone.backends {
                self.clear_backend(b.id)?;
            }
        }
        // Pinned state this config no longer mentions.
        for (key, _) in adoption.services.iter().filter(|(k, _)| !next.iter().any(|s| s.key == **k)) {
            info!(vip = %dataplane::display_service(key), "removing pinned service absent from the config");
            self.dp.remove_service(key)?;
        }
        for (id, _) in adoption.backends.values().filter(|(id, _)| !be_ids.contains(id)) {
            self.clear_backend(*id)?;
        }
        self.services = next;
        self.cfg = cfg;
        for i in 0..self.services.len() {
            self.publish_service(i)?;
        }
        Ok(())
    }

    fn new_backend(
        &mut self,
        sid: u32,
        cfg: BackendConfig,
        scfg: &ServiceConfig,
        adoption: &Adoption,
        be_ids: &mut HashSet<u32>,
    ) -> BackendRt {
        let adopted = adoption.backends.get(&(sid, to_abi(cfg.address)));
        let (id, healthy, admin, nexthop, src_mac) = match adopted {
            Some((id, e)) => {
                let state = BackendState::from_u32(e.state);
                let admin = match state {
                    BackendState::Draining => Admin::Draining,
                    BackendState::Disabled => Admin::Disabled,
                    _ => Admin::Enabled,
                };
                let healthy = match state {
                    BackendState::Up | BackendState::Draining => true,
                    BackendState::Down => false,
                    BackendState::Disabled => scfg.health.initial == InitialState::Up,
                };
                let nexthop = (e.mac != [0; 6]).then_some(Neighbour { mac: e.mac, ifindex: e.ifindex });
                (*id, healthy, admin, nexthop, e.src_mac)
            }
            None => {
                let id = lowest_free(be_ids);
                be_ids.insert(id);
                (id, scfg.health.initial == InitialState::Up, Admin::Enabled, None, [0; 6])
            }
        };
        if adopted.is_none() {
            info!(service = %scfg.name, backend = %cfg.name, address = %cfg.address, id, "backend configured");
        }
        BackendRt { cfg, id, healthy, admin, nexthop, src_mac, checker: None, generation: 0, recovery: None }
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

    /// Brings one service's backend entries and ring in line with the model.
    fn sync_service(&mut self, i: usize) -> Result<()> {
        let sid = self.services[i].id;
        // Entries first: a backend that failed stops getting packets with this
        // one write, before any ring work.
        let entries: Vec<(u32, Backend)> =
            self.services[i].backends.iter().map(|b| (b.id, backend_entry(sid, b))).collect();
        for (id, e) in entries {
            if self.written.get(&id) != Some(&e) {
                self.dp.set_backend(id, &e)?;
                self.written.insert(id, e);
            }
        }
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

    fn on_health(&mut self, ev: HealthEvent) {
        let Some(i) = self.services.iter().position(|s| s.backends.iter().any(|b| b.id == ev.backend)) else {
            return;
        };
        let svc_name = self.services[i].cfg.name.clone();
        let backups_before = self.services[i].backups_active();
        let Some(b) = self.services[i].backend_mut(ev.backend) else { return };
        if b.generation != ev.generation || b.healthy == ev.up {
            return;
        }
        b.healthy = ev.up;
        let name = b.cfg.name.clone();
        if ev.up {
            info!(service = %svc_name, backend = %name, reason = %ev.reason, "backend UP");
            if let Some(r) = b.recovery.take() {
                r.abort();
            }
        } else {
            warn!(service = %svc_name, backend = %name, reason = %ev.reason, "backend DOWN: no more packets to it");
            if let (Some(r), None) = (b.cfg.restart.clone(), &b.recovery) {
                let addr = b.cfg.address.to_string();
                b.recovery = Some(tokio::spawn(recovery::restart_loop(svc_name.clone(), name.clone(), addr, r)));
            }
        }
        if let Err(e) = self.sync_service(i) {
            error!(service = %svc_name, error = %format!("{e:#}"), "writing the dataplane failed");
        }
        let backups_after = self.services[i].backups_active();
        if backups_after != backups_before {
            let min = self.services[i].cfg.min_healthy;
            if backups_after {
                warn!(service = %svc_name, min_healthy = min, "fewer primaries up than min_healthy: backups promoted");
            } else {
                info!(service = %svc_name, "enough primaries up again: backups back on standby");
            }
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
            if let Err(e) = self.sync_service(i) {
                error!(error = %format!("{e:#}"), "writing the dataplane failed");
            }
        }
    }

    /// Re-reads the config file; a bad file changes nothing.
    pub fn reload(&mut self) -> Result<String, String> {
        let new = match config::load(&self.cfg_path) {
            Ok(c) => c,
            Err(e) => {
                error!(error = %e, "reload rejected: the config is invalid; the running config stays");
                return Err(e.to_string());
            }
        };
        if new.daemon != self.cfg.daemon {
            let e = "[daemon] settings changed: restart veerd to apply them (nothing was changed)".to_string();
            error!(error = %e, "reload rejected");
            return Err(e);
        }
        match self.apply(new, None) {
            Ok(()) => {
                self.resolve_nexthops();
                let n = self.services.len();
                info!(services = n, "config reloaded");
                Ok(format!("reloaded: {n} services"))
            }
            Err(e) => {
                error!(error = %format!("{e:#}"), "applying the reloaded config failed part way");
                Err(format!("{e:#}"))
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
                    "backends": s.backends.iter().map(|b| json!({
                        "name": b.cfg.name,
                        "address": b.cfg.address.to_string(),
                        "id": b.id,
                        "weight": b.cfg.weight,
                        "healthy": b.healthy,
                        "admin": b.admin,
                        "state": format!("{:?}", b.effective()).to_lowercase(),
                        "in_ring": ring.contains(&b.id),
                        "backup": b.cfg.backup,
                        "mac": b.nexthop.map(|n| fmt_mac(&n.mac)),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        json!({ "config": self.cfg_path.display().to_string(), "pins": self.cfg.daemon.pin_dir().display().to_string(), "services": services })
    }

    fn handle(&mut self, req: api::Request) -> api::Response {
        match req {
            api::Request::Status => api::Response::ok(self.status()),
            api::Request::Reload => match self.reload() {
                Ok(msg) => api::Response::ok(json!(msg)),
                Err(e) => api::Response::err(e),
            },
        }
    }

    /// Runs until SIGTERM or SIGINT. The dataplane stays pinned and keeps
    /// forwarding after it returns.
    pub async fn run(mut self, mut events: mpsc::UnboundedReceiver<HealthEvent>) -> Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let sock = self.cfg.daemon.socket_path();
        let (call_tx, mut calls) = mpsc::channel(16);
        let api = api::listen(&sock, call_tx).with_context(|| format!("listening on {}", sock.display()))?;
        let mut hup = signal(SignalKind::hangup())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        info!(socket = %sock.display(), "veerd ready");
        loop {
            tokio::select! {
                Some(ev) = events.recv() => {
                    let up = ev.up;
                    self.on_health(ev);
                    if up { self.resolve_nexthops(); }
                }
                Some((req, reply)) = calls.recv() => { let _ = reply.send(self.handle(req)); }
                _ = hup.recv() => { info!("SIGHUP: reloading {}", self.cfg_path.display()); let _ = self.reload(); }
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = tick.tick() => self.resolve_nexthops(),
            }
        }
        api.abort();
        let _ = std::fs::remove_file(&sock);
        info!(
            pins = %self.cfg.daemon.pin_dir().display(),
            "veerd stopping; the dataplane keeps forwarding with the last state (`veerd uninstall` removes it)"
        );
        Ok(())
    }
}

fn fmt_mac(m: &[u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// Removes everything an instance installed: pinned links (detaching the
/// program), pinned maps, the API socket.
pub fn uninstall(cfg: &Config) -> Result<Vec<PathBuf>> {
    pin::ensure_bpffs(&cfg.daemon.bpffs)?;
    let mut removed = pin::uninstall(&cfg.daemon.pin_dir())?;
    let sock = cfg.daemon.socket_path();
    if std::fs::remove_file(&sock).is_ok() {
        removed.push(sock);
    }
    Ok(removed)
}
