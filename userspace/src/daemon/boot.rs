//! Starting up: the instance lock, the dataplane (adopting what a previous
//! veerd pinned), the runtime overrides; and `veerd uninstall`.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use tracing::{info, warn};
use veer_abi::{Backend, ServiceKey};

use super::model::plan;
use crate::{
    account,
    config::{Config, DaemonConfig},
    dataplane::{self, pin, Dataplane, DataplaneOptions, MapReader},
    overrides::Overrides,
    runner,
};

/// What a restarted daemon finds in the pinned maps.
#[derive(Debug, Default)]
pub(super) struct Adoption {
    pub(super) services: HashMap<ServiceKey, u32>,
    pub(super) backends: HashMap<(u32, [u8; 16]), (u32, Backend)>,
}

impl Adoption {
    /// The ids, for the planner.
    pub(super) fn pinned(&self) -> plan::Pinned {
        plan::Pinned {
            services: self.services.clone(),
            backends: self
                .backends
                .iter()
                .map(|((sid, addr), (id, _))| ((*sid, dataplane::from_abi(addr)), *id))
                .collect(),
        }
    }

    pub(super) fn read(dp: &Dataplane) -> Result<Self> {
        let services = dp.services()?.into_iter().map(|(k, s)| (k, s.id)).collect();
        let backends = dp.backend_table()?.into_iter().map(|(id, b)| ((b.service, b.addr), (id, b))).collect();
        Ok(Self { services, backends })
    }
}

pub(super) fn lock(d: &crate::config::DaemonConfig) -> Result<std::fs::File> {
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
pub(super) fn load_dataplane(cfg: &Config) -> Result<(Dataplane, Option<Adoption>)> {
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
/// Makes every command veerd runs run as `[daemon] hook_user`/`hook_group`
/// (see [`runner`](crate::runner)); refuses to start when veerd could not
/// switch to them, rather than fail each command later.
pub(super) fn hook_identity(d: &DaemonConfig) -> Result<()> {
    let id = d.hook_identity().context("daemon.hook_user / hook_group")?;
    let root = nix::unistd::geteuid().is_root();
    if id.uid.is_some() && !root && !account::has_capability(account::CAP_SETUID) {
        bail!("daemon.hook_user needs CAP_SETUID (and CAP_SETGID): add them to the unit's AmbientCapabilities");
    }
    if id.uid.is_some() && !root && !account::has_capability(account::CAP_KILL) {
        bail!("daemon.hook_user needs CAP_KILL, to stop a command at its timeout: add it to the unit's AmbientCapabilities");
    }
    if id.gid.is_some() && !root && !account::has_capability(account::CAP_SETGID) {
        bail!("daemon.hook_group needs CAP_SETGID: add it to the unit's AmbientCapabilities");
    }
    if let Some(uid) = id.uid {
        info!(uid, gid = ?id.gid, "commands (checks, restart, replace and scale hooks) run as the hook user");
    }
    runner::set_identity(id);
    Ok(())
}

pub(super) fn load_overrides(state: &Path, file: &Config, reset: bool) -> Result<Overrides> {
    if reset {
        match std::fs::remove_file(state) {
            Ok(()) => warn!(file = %state.display(), "--reset-runtime: runtime changes discarded"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", state.display())),
        }
        return Ok(Overrides::default());
    }
    let overrides = Overrides::load(state, file).with_context(|| {
        format!(
            "the runtime-state file {} is unreadable or breaks the config's rules, so the drains, disables, weights and added \
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
        info!(
            table,
            asked,
            entries = got,
            possible_cpus = cpus,
            per_cpu = got / cpus,
            "{table} table size, per address family"
        );
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
    let mut removed = pin::uninstall_every_layout(&cfg.daemon.pin_dir())?;
    let sock = cfg.daemon.socket_path();
    if std::fs::remove_file(&sock).is_ok() {
        removed.push(sock);
    }
    Ok(removed)
}

/// Keeps the fleet config revision this node runs, for its next start (an
/// error is logged: the node then starts on its own file until etcd answers).
pub(super) fn save_fleet_config(daemon: &DaemonConfig, revision: u64, text: &str) {
    if let Err(e) = crate::config::kept::save(daemon, revision, text) {
        warn!(path = %crate::config::kept::path(daemon).display(), error = %e, "fleet: keeping the fleet config for the next start failed");
    }
}

/// `cfg` with the fleet config revision this node last ran (a node that
/// starts while etcd is away runs the fleet's services, not its own
/// file's), and that revision; `cfg` alone outside a fleet with etcd, or
/// with no usable copy.
pub(super) fn cached_fleet_config(cfg: Config) -> (Config, Option<(u64, String)>) {
    match crate::config::kept::with_kept(&cfg) {
        Ok(None) => (cfg, None),
        Ok(Some((c, revision, text))) => {
            info!(revision, "fleet: starting on the fleet config revision this node last ran");
            (c, Some((revision, text)))
        }
        Err(e) => {
            warn!(error = %e, "fleet: the kept fleet config is unusable; starting on this node's file");
            (cfg, None)
        }
    }
}
