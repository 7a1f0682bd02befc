//! The daemon's event loop: [`Daemon`] owns every subsystem, starts them,
//! and routes each event to the one it concerns (see `route.rs`,
//! `route_fleet.rs` and `change.rs` for what each event sets off).

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result};
use tokio::{
    signal::unix::{signal, Signal, SignalKind},
    sync::mpsc,
};
use tracing::{info, warn};

use super::{
    boot,
    control::{self, api::Call},
    desired::Desired,
    fleet_node::{self, Announcer, FleetNode},
    model::Services,
    observe::{self, tables::SharedUsage},
    publish::Publisher,
    recovery::{HookDone, Recovery},
    tracker::{self, HealthTracker},
};
use crate::{
    config::{Config, DaemonConfig},
    fleet::FleetEvent,
    health::CheckReport,
    net,
};

/// The running daemon: its subsystems, and the loop that routes events to them.
pub struct Daemon {
    /// The config file and the runtime changes on top of it.
    pub(super) desired: Desired,
    /// Every service and backend as it runs.
    pub(super) services: Services,
    /// Writes the model to the dataplane.
    pub(super) publisher: Publisher,
    /// Health checks and what they say.
    pub(super) tracker: HealthTracker,
    /// Restarts, replacements, scaling.
    pub(super) recovery: Recovery,
    /// This node's part in the fleet, with `[fleet.etcd]`.
    pub(super) fleet: Option<FleetNode>,
    /// The VIPs announced to the routers, with `[fleet]`.
    pub(super) announcer: Announcer,
    /// The other nodes' NAT flows, with `[fleet.nat_sync]`.
    pub(super) nat_copies: Option<super::nat::NatCopies>,
    /// MAC of the one attached interface (zero with several): the source MAC
    /// of frames to backends with a configured MAC.
    pub(super) single_iface_mac: [u8; 6],
    /// Occupancy of the connection tables, refreshed in the background.
    pub(super) table_usage: SharedUsage,
    /// The channels the loop reads, until it runs.
    inbox: Option<Inbox>,
    _lock: std::fs::File,
}

/// The receiving ends the loop reads (besides the checkers' reports).
struct Inbox {
    samples: mpsc::Receiver<crate::health::ProbeSample>,
    agents: mpsc::UnboundedReceiver<crate::health::agent::AgentReport>,
    hooks: mpsc::UnboundedReceiver<HookDone>,
    fleet: Option<mpsc::UnboundedReceiver<FleetEvent>>,
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
        let lock = boot::lock(&cfg.daemon)?;
        boot::hook_identity(&cfg.daemon)?;
        let (dp, adoption) = boot::load_dataplane(&cfg)?;
        let written =
            adoption.as_ref().map(|a| a.backends.values().map(|(id, b)| (*id, *b)).collect()).unwrap_or_default();
        let (cfg, fleet_config) = boot::cached_fleet_config(cfg);
        let overrides = boot::load_overrides(&cfg.daemon.state_path(), &cfg, reset_runtime)?;
        let (tracker, health) = HealthTracker::new();
        let (recovery, hooks) = Recovery::new();
        let (fleet, fleet_rx) = match cfg.fleet.as_ref().and_then(|f| f.etcd.clone()) {
            Some(e) => {
                info!(node = %e.node, endpoints = ?e.endpoints, "fleet: sharing state through etcd");
                let (f, rx) = FleetNode::start(e);
                (Some(f), Some(rx))
            }
            None => (None, None),
        };
        let mut d = Daemon {
            desired: Desired {
                path: cfg_path.to_path_buf(),
                file: cfg.clone(),
                overrides,
                ids: Default::default(),
                reloads: [0; 2],
                fleet_config,
            },
            services: Services::default(),
            publisher: Publisher::new(dp, written, cfg.fleet.is_some()),
            tracker,
            recovery,
            fleet,
            announcer: Announcer::default(),
            nat_copies: None,
            single_iface_mac: match cfg.daemon.interfaces.as_slice() {
                [one] => net::iface_mac(one).unwrap_or([0; 6]),
                _ => [0; 6],
            },
            table_usage: Default::default(),
            inbox: Some(Inbox { samples: health.samples, agents: health.agents, hooks, fleet: fleet_rx }),
            _lock: lock,
        };
        d.publisher.set_fleet_snat(super::nat::FleetSnat::of(&cfg));
        d.apply(cfg.clone(), adoption)?;
        d.publisher.clear_suspicions(&d.services);
        d.publisher.attach(&cfg.daemon)?;
        d.after_config_change();
        // Attached: the VIPs with a backend may be announced.
        d.sync_announcements();
        // What it runs of the fleet's config, for the first session to say.
        d.fleet_report_running(None);
        Ok((d, health.reports))
    }

    /// The dataplane (read access for status and tests).
    pub fn dataplane(&self) -> &crate::dataplane::Dataplane {
        self.publisher.dp()
    }

    /// Runs until SIGTERM or SIGINT. The dataplane stays pinned and keeps
    /// forwarding after it returns.
    pub async fn run(mut self, events: mpsc::UnboundedReceiver<CheckReport>) -> Result<()> {
        let daemon = self.desired.file.daemon.clone();
        let (call_tx, calls) = mpsc::channel(16);
        // The metrics endpoint's own channel, which the loop serves last.
        let (scrape_tx, scrapes) = mpsc::channel(1);
        let servers = Servers::start(&daemon, call_tx, scrape_tx, &self.table_usage).await?;
        let inbox = self.inbox.take().context("daemon already ran")?;
        let timers = Timers::new(&daemon.pin_dir())?;
        let nat_flows = self.start_nat_sync().await?;
        info!(socket = %servers.socket.display(), "veerd ready");
        if let Err(e) = control::notify::notify("READY=1") {
            warn!(error = %e, "telling the service manager we are ready failed");
        }
        self.event_loop(events, Calls { api: calls, scrapes }, inbox, timers, nat_flows).await;
        servers.stop();
        info!(
            pins = %daemon.pin_dir().display(),
            "veerd stopping; the dataplane keeps forwarding with the last state (`veerd uninstall` removes it)"
        );
        Ok(())
    }

    /// Routes every event to its subsystem until a signal stops it.
    ///
    /// In a fixed order of priority (`biased`): signals, then timers (the
    /// fence check among them), then health and the fleet, then queued ring
    /// rebuilds, then the API, and metrics last: no flood of callers delays
    /// a stop, a reload, a fence or a verdict.
    async fn event_loop(
        &mut self,
        mut events: mpsc::UnboundedReceiver<CheckReport>,
        mut calls: Calls,
        inbox: Inbox,
        mut t: Timers,
        nat_flows: Option<mpsc::Receiver<Vec<crate::dataplane::nat_sync::NatFlow>>>,
    ) {
        let Inbox { mut samples, mut agents, mut hooks, fleet } = inbox;
        // Without etcd, a channel that never speaks.
        let (_no_fleet, idle) = mpsc::unbounded_channel();
        let mut fleet_events = fleet.unwrap_or(idle);
        let in_fleet = self.fleet.is_some();
        // Without [fleet.nat_sync], a channel that never speaks.
        let (_no_sync, idle_sync) = mpsc::channel(1);
        let mut nat_flows = nat_flows.unwrap_or(idle_sync);
        loop {
            tokio::select! {
                biased;
                _ = t.term.recv() => break,
                _ = t.int.recv() => break,
                _ = t.hup.recv() => { info!("SIGHUP: reloading {}", self.desired.path.display()); let _ = self.reload(); }
                _ = t.fence.tick(), if in_fleet => self.check_fence(),
                _ = t.second.tick() => self.tick(),
                _ = t.ramp.tick(), if self.services.ramping() => self.step_ramps(),
                // Health reports before ring rebuilds: a queued rebuild never delays a state word.
                Some(report) = events.recv() => {
                    // Take every report already queued: one ring rebuild per service.
                    let mut batch = vec![report];
                    while let Ok(r) = events.try_recv() {
                        batch.push(r);
                    }
                    self.on_reports(batch);
                }
                Some(signals) = t.passive.recv() => self.on_passive(signals),
                Some(p) = samples.recv() => self.tracker.sample(p),
                Some(report) = agents.recv() => self.on_agent(report),
                Some(done) = hooks.recv() => self.on_hook_done(done),
                Some(ev) = fleet_events.recv() => self.on_fleet(ev),
                () = std::future::ready(()), if self.publisher.rings_queued() => self.publisher.sync_next_ring(&mut self.services),
                Some((req, caller, reply)) = calls.api.recv() => self.answer(req, caller, reply),
                // Below the rings and the API: a burst of copies delays neither.
                Some(flows) = nat_flows.recv() => self.on_nat_flows(flows),
                Some((req, caller, reply)) = calls.scrapes.recv() => self.answer(req, caller, reply),
            }
            // A service that ran out of backends (or has some again) changes what is announced.
            if self.publisher.take_starved_change() {
                self.sync_announcements();
            }
        }
    }
}

/// The callers' requests: the API's, and the metrics endpoint's.
struct Calls {
    api: mpsc::Receiver<Call>,
    scrapes: mpsc::Receiver<Call>,
}

/// The API socket and the metrics endpoint.
struct Servers {
    socket: PathBuf,
    api: tokio::task::JoinHandle<()>,
    metrics: Option<tokio::task::JoinHandle<()>>,
}

impl Servers {
    /// Listens on the API socket and, if configured, the metrics address
    /// (whose table occupancy is then walked into `usage`).
    async fn start(
        daemon: &DaemonConfig,
        calls: mpsc::Sender<Call>,
        scrapes: mpsc::Sender<Call>,
        usage: &SharedUsage,
    ) -> Result<Self> {
        let socket = daemon.socket_path();
        let access =
            control::api::ApiAccess { group: daemon.api_group.clone(), admin_group: daemon.api_admin_group.clone() };
        let api = control::api::listen(&socket, &access, calls)
            .with_context(|| format!("listening on {}", socket.display()))?;
        let metrics = match daemon.metrics {
            Some(addr) => {
                observe::tables::watch_table_usage(daemon.pin_dir(), usage.clone());
                let h = observe::metrics::serve(addr, scrapes)
                    .await
                    .with_context(|| format!("metrics endpoint on {addr}"))?;
                info!(%addr, "metrics at http://{addr}/metrics");
                Some(h)
            }
            None => None,
        };
        Ok(Self { socket, api, metrics })
    }

    fn stop(self) {
        self.api.abort();
        if let Some(m) = self.metrics {
            m.abort();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Signals, timers and the dataplane's passive signals, for the loop.
struct Timers {
    passive: mpsc::Receiver<Vec<crate::dataplane::passive::PassiveSignal>>,
    hup: Signal,
    term: Signal,
    int: Signal,
    /// Every second: retries, next hops, hooks, announcements.
    second: tokio::time::Interval,
    /// Slow-start steps are a tenth of `slow_start`; this finds them.
    ramp: tokio::time::Interval,
    /// The fleet's fence check.
    fence: tokio::time::Interval,
}

impl Timers {
    fn new(pins: &Path) -> Result<Self> {
        let skipping = |period| {
            let mut i = tokio::time::interval(period);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            i
        };
        Ok(Self {
            passive: tracker::passive::watch(pins),
            hup: signal(SignalKind::hangup())?,
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            second: tokio::time::interval(Duration::from_secs(1)),
            ramp: skipping(Duration::from_millis(100)),
            fence: skipping(fleet_node::FENCE_PERIOD),
        })
    }
}
