//! `veer-agent` on a DSR backend: a tiny XDP program that sends a SYN for
//! one of the backend's VIPs back to the balancer when no socket would take
//! it (see `ebpf/veer-xdp/src/bin/agent.rs`). Installed per interface and
//! network namespace, pinned under
//! [`AGENT_PINS`]`/netns-<cookie>/<interface>/`, so that it outlives
//! `veerctl` and backends in several namespaces (containers) of one host each
//! get their own.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

use aya::{
    maps::{HashMap, MapData, PerCpuArray},
    programs::{links::FdLink, Xdp},
    EbpfLoader,
};
use veer_abi::{agent_names as names, AgentConfig, AgentCounter, MAX_AGENT_PEERS, MAX_AGENT_VIPS};

use super::{pin, to_abi, AttachMode, DataplaneError, Result};

/// The agent object, embedded at build time.
pub static AGENT_OBJECT: &[u8] = aya::include_bytes_aligned!(env!("VEER_AGENT_OBJ"));

/// Where agents are pinned: one directory per network namespace, one per
/// interface in it.
pub const AGENT_PINS: &str = "/sys/fs/bpf/veer-agent";

/// The pinned link's file name.
const LINK: &str = "link";

/// The pin directory of `iface` in the calling thread's namespace. Keyed by
/// the namespace's cookie: a name can be reused by a later namespace.
fn dir(root: &Path, iface: &str) -> Result<PathBuf> {
    let cookie = crate::net::netns_cookie()
        .map_err(|e| DataplaneError::Unsupported(format!("reading the network namespace's cookie (5.14+): {e}")))?;
    Ok(root.join(format!("netns-{cookie}")).join(iface))
}

/// Where a pinned agent link is attached: `Some(0)` once its interface is
/// gone, `None` when nothing is pinned there.
fn attached_ifindex(link: &Path) -> Option<u32> {
    let fd = super::syscall::obj_get(link).ok()?;
    super::syscall::xdp_link_ifindex(fd).ok()
}

/// What an installed agent reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AgentStatus {
    /// The interface.
    pub interface: String,
    /// The network namespace's cookie (see [`crate::net::netns_cookie`]).
    pub netns_cookie: u64,
    /// The namespace's name under /run/netns ("host" for the init one), when
    /// it has one.
    pub netns: Option<String>,
    /// The pin directory.
    pub pins: PathBuf,
    /// The interface index the program is attached to; 0 when the kernel
    /// detached it (its interface or namespace is gone).
    pub attached_ifindex: u32,
    /// The VIPs it serves.
    pub vips: Vec<IpAddr>,
    /// SYNs sent back to the balancer.
    pub bounced: u64,
    /// SYNs for a VIP that a socket took.
    pub kept: u64,
    /// Other segments no connection owned, sent back to the balancer (for
    /// their flow's second chance).
    pub unowned: u64,
    /// The tunnels it takes VIP packets out of (`ipip`, `gue`).
    pub decap: Vec<String>,
    /// The balancers' tunnel sources it takes them from.
    pub from: Vec<IpAddr>,
    /// GUE's port, when it takes packets out of GUE.
    pub gue_port: Option<u16>,
    /// VIP packets taken out of their tunnel.
    pub decapsulated: u64,
}

/// What [`install`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Installed {
    /// Attached where there was none.
    Attached,
    /// Attached anew in place of pins whose program was attached nowhere, or
    /// to another interface (a recreated device), or was an agent from
    /// before tunnels.
    ReplacedStale,
    /// Already attached here: only the VIPs were set.
    VipsUpdated,
}

/// The tunnels an agent takes VIP packets out of, and from whom.
#[derive(Debug, Clone, Default)]
pub struct Tunnels {
    /// Which tunnels, and GUE's port.
    pub decap: AgentConfig,
    /// The balancers' tunnel sources: the only outer sources taken.
    pub from: Vec<IpAddr>,
}

/// Installs the agent on `iface` in the calling thread's namespace for
/// `vips`, taking packets out of `tunnels`, or, when it is attached there
/// already, sets its VIPs and tunnels to these. First removes pins left by
/// interfaces and namespaces that are gone.
pub fn install(root: &Path, iface: &str, vips: &[IpAddr], mode: AttachMode, tunnels: &Tunnels) -> Result<Installed> {
    if vips.is_empty() || vips.len() > MAX_AGENT_VIPS as usize {
        return Err(DataplaneError::Unsupported(format!(
            "an agent serves 1 to {MAX_AGENT_VIPS} VIPs, not {}",
            vips.len()
        )));
    }
    if (tunnels.decap.decap != 0) == tunnels.from.is_empty() || tunnels.from.len() > MAX_AGENT_PEERS as usize {
        return Err(DataplaneError::Unsupported(format!(
            "taking packets out of tunnels needs the balancers' tunnel sources (1 to {MAX_AGENT_PEERS} --from), \
             and --from needs --decap"
        )));
    }
    let ifindex = crate::net::ifindex(iface)
        .map_err(|e| DataplaneError::Unsupported(format!("no interface {iface} in this network namespace: {e}")))?;
    pin::ensure_bpffs(Path::new("/sys/fs/bpf"))?;
    remove_detached(root)?;
    let d = dir(root, iface)?;
    let link = d.join(LINK);
    // An agent from before tunnels has no tunnel pins, and its program
    // reads none: it is replaced, not updated.
    let current = d.join(names::PEERS).exists();
    let outcome = match attached_ifindex(&link) {
        Some(i) if i == ifindex && current => Installed::VipsUpdated,
        None if !link.exists() => Installed::Attached,
        _ => {
            uninstall_dir(&d)?;
            Installed::ReplacedStale
        }
    };
    std::fs::create_dir_all(&d).map_err(|source| pin::PinError::Io { what: "creating", path: d.clone(), source })?;
    let mut loader = EbpfLoader::new();
    loader
        .map_pin_path(names::VIPS, d.join(names::VIPS))
        .map_pin_path(names::STATS, d.join(names::STATS))
        .map_pin_path(names::CONFIG, d.join(names::CONFIG))
        .map_pin_path(names::PEERS, d.join(names::PEERS));
    let mut ebpf = loader.load(AGENT_OBJECT).map_err(|e| DataplaneError::Load(Box::new(e)))?;
    if outcome != Installed::VipsUpdated {
        let prog = load_program(&mut ebpf)?;
        let id = prog
            .attach(iface, mode.into())
            .map_err(DataplaneError::program(format!("attaching veer_agent to {iface} in {mode:?} mode")))?;
        let l = prog.take_link(id).map_err(DataplaneError::program("taking the link"))?;
        let fd = FdLink::try_from(l).map_err(|e| DataplaneError::Link {
            what: format!("link on {iface} is not a bpf_link (kernel too old for XDP links: 5.9+)"),
            source: Box::new(e),
        })?;
        fd.pin(&link).map_err(|e| DataplaneError::PinLink { path: link.clone(), source: Box::new(e) })?;
    }
    set_addresses(&mut ebpf, names::VIPS, vips)?;
    set_addresses(&mut ebpf, names::PEERS, &tunnels.from)?;
    set_config(&mut ebpf, tunnels.decap)?;
    Ok(outcome)
}

/// Sets the tunnels the agent takes packets out of.
fn set_config(ebpf: &mut aya::Ebpf, decap: AgentConfig) -> Result<()> {
    let map = ebpf.map_mut(names::CONFIG).ok_or(DataplaneError::Missing { kind: "map", name: names::CONFIG })?;
    let mut m: aya::maps::Array<&mut MapData, AgentConfig> =
        aya::maps::Array::try_from(map).map_err(DataplaneError::map(names::CONFIG, "opening"))?;
    m.set(0, decap, 0).map_err(DataplaneError::map(names::CONFIG, "writing"))
}

/// Removes every agent's pins under `root` whose link the kernel detached:
/// its interface was deleted, or its namespace with it. Returns their
/// directories.
pub fn remove_detached(root: &Path) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for d in pin_dirs(root) {
        if attached_ifindex(&d.join(LINK)) == Some(0) {
            uninstall_dir(&d)?;
            removed.push(d);
        }
    }
    Ok(removed)
}

/// Every agent pin directory under `root`: `netns-*/IFACE`, and the
/// `IFACE` directories of older veers (keyed by interface alone).
fn pin_dirs(root: &Path) -> Vec<PathBuf> {
    let subdirs = |d: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(d).map(|e| e.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect()).unwrap_or_default()
    };
    let mut out = Vec::new();
    for d in subdirs(root) {
        if d.join(LINK).exists() {
            out.push(d);
        } else if d.file_name().is_some_and(|n| n.to_string_lossy().starts_with("netns-")) {
            out.extend(subdirs(&d).into_iter().filter(|p| p.join(LINK).exists()));
        }
    }
    out.sort();
    out
}

/// Detaches an agent's link at once and removes its pins.
fn uninstall_dir(d: &Path) -> Result<Vec<PathBuf>> {
    if let Ok(fd) = super::syscall::obj_get(&d.join(LINK)) {
        // Detached already when its interface went away.
        let _ = super::syscall::link_detach(fd);
    }
    Ok(pin::uninstall(d)?)
}

/// The agent program of a loaded object, loaded into the kernel.
fn load_program(ebpf: &mut aya::Ebpf) -> Result<&mut Xdp> {
    let prog: &mut Xdp = ebpf
        .program_mut(names::PROGRAM)
        .ok_or(DataplaneError::Missing { kind: "program", name: names::PROGRAM })?
        .try_into()
        .map_err(DataplaneError::program("veer_agent is not XDP"))?;
    super::load::retrying_eagain(|| prog.load())
        .map_err(DataplaneError::program("loading veer_agent into the kernel (verifier)"))?;
    Ok(prog)
}

/// Makes the agent's address set `name` (its VIPs, its peers) exactly `addrs`.
fn set_addresses(ebpf: &mut aya::Ebpf, name: &'static str, addrs: &[IpAddr]) -> Result<()> {
    let map = ebpf.map_mut(name).ok_or(DataplaneError::Missing { kind: "map", name })?;
    let mut m: HashMap<&mut MapData, [u8; 16], u32> =
        HashMap::try_from(map).map_err(DataplaneError::map(name, "opening"))?;
    let wanted: Vec<[u8; 16]> = addrs.iter().map(|v| to_abi(*v)).collect();
    let stale: Vec<[u8; 16]> = m.keys().filter_map(|k| k.ok()).filter(|k| !wanted.contains(k)).collect();
    for k in &wanted {
        m.insert(k, 1, 0).map_err(DataplaneError::map(name, "writing an address"))?;
    }
    for k in &stale {
        let _ = m.remove(k);
    }
    Ok(())
}

/// Detaches the agent from `iface` in the calling thread's namespace and
/// removes its pins (or those of an older veer, keyed by `iface` alone).
pub fn uninstall(root: &Path, iface: &str) -> Result<Vec<PathBuf>> {
    let d = dir(root, iface)?;
    let legacy = root.join(iface);
    if !d.exists() && legacy.join(LINK).exists() {
        return uninstall_dir(&legacy);
    }
    uninstall_dir(&d)
}

/// The agent installed on `iface` in the calling thread's namespace.
pub fn status(root: &Path, iface: &str) -> Result<AgentStatus> {
    let d = dir(root, iface)?;
    if !d.join(LINK).exists() {
        return Err(DataplaneError::NotAttached(format!(
            "{iface} in this network namespace (no agent pinned at {})",
            d.display()
        )));
    }
    let names = crate::net::netns_names();
    status_at(&d, &names)
}

/// Every agent pinned under `root`, in any namespace, with where it is
/// really attached.
pub fn list(root: &Path) -> Result<Vec<AgentStatus>> {
    let names = crate::net::netns_names();
    pin_dirs(root).iter().map(|d| status_at(d, &names)).collect()
}

/// The agent pinned in `d`, from its pins.
fn status_at(d: &Path, netns_names: &std::collections::HashMap<u64, String>) -> Result<AgentStatus> {
    let open = |name: &'static str| {
        MapData::from_pin(d.join(name))
            .map_err(DataplaneError::map(name, format!("opening the pin in {}", d.display())))
    };
    let vips: HashMap<MapData, [u8; 16], u32> = HashMap::try_from(aya::maps::Map::HashMap(open(names::VIPS)?))
        .map_err(DataplaneError::map(names::VIPS, "opening"))?;
    let stats: PerCpuArray<MapData, u64> = PerCpuArray::try_from(aya::maps::Map::PerCpuArray(open(names::STATS)?))
        .map_err(DataplaneError::map(names::STATS, "opening"))?;
    let counter = |c: AgentCounter| -> Result<u64> {
        Ok(stats.get(&(c as u32), 0).map_err(DataplaneError::map(names::STATS, "reading"))?.iter().sum())
    };
    // Pinned by agents since tunnels: none before (no tunnels then).
    let config = open(names::CONFIG)
        .ok()
        .and_then(|m| aya::maps::Array::<MapData, AgentConfig>::try_from(aya::maps::Map::Array(m)).ok())
        .and_then(|a| a.get(&0, 0).ok())
        .unwrap_or_default();
    let netns_cookie = d
        .parent()
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_string_lossy().strip_prefix("netns-").and_then(|c| c.parse().ok()))
        .unwrap_or(0);
    Ok(AgentStatus {
        interface: d.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        netns_cookie,
        netns: netns_names.get(&netns_cookie).cloned(),
        pins: d.to_path_buf(),
        attached_ifindex: attached_ifindex(&d.join(LINK)).unwrap_or(0),
        vips: vips.keys().filter_map(|k| k.ok()).map(|k| super::from_abi(&k)).collect(),
        bounced: counter(AgentCounter::Bounced)?,
        kept: counter(AgentCounter::Kept)?,
        // An agent pinned before these counters existed has no slot for them.
        unowned: counter(AgentCounter::Unowned).unwrap_or(0),
        decapsulated: counter(AgentCounter::Decapsulated).unwrap_or(0),
        decap: decap_names(config.decap),
        from: open(names::PEERS)
            .ok()
            .and_then(|m| HashMap::<MapData, [u8; 16], u32>::try_from(aya::maps::Map::HashMap(m)).ok())
            .map(|m| m.keys().filter_map(|k| k.ok()).map(|k| super::from_abi(&k)).collect())
            .unwrap_or_default(),
        gue_port: (config.decap & veer_abi::AGENT_DECAP_GUE != 0).then_some(config.gue_port),
    })
}

/// The tunnel names of an [`AgentConfig::decap`].
fn decap_names(decap: u16) -> Vec<String> {
    [(veer_abi::AGENT_DECAP_IPIP, "ipip"), (veer_abi::AGENT_DECAP_GUE, "gue")]
        .into_iter()
        .filter(|(bit, _)| decap & bit != 0)
        .map(|(_, n)| n.to_string())
        .collect()
}

/// The agent loaded without pins or attachment, for `BPF_PROG_TEST_RUN`.
#[cfg(feature = "testing")]
pub struct AgentProgram {
    ebpf: aya::Ebpf,
}

#[cfg(feature = "testing")]
impl AgentProgram {
    /// Loads the agent serving `vips`.
    pub fn load(vips: &[IpAddr]) -> Result<Self> {
        Self::load_with(vips, &Tunnels::default())
    }

    /// Loads the agent serving `vips`, taking packets out of `tunnels`.
    pub fn load_with(vips: &[IpAddr], tunnels: &Tunnels) -> Result<Self> {
        let mut ebpf = aya::Ebpf::load(AGENT_OBJECT).map_err(|e| DataplaneError::Load(Box::new(e)))?;
        load_program(&mut ebpf)?;
        set_addresses(&mut ebpf, names::VIPS, vips)?;
        set_addresses(&mut ebpf, names::PEERS, &tunnels.from)?;
        set_config(&mut ebpf, tunnels.decap)?;
        Ok(Self { ebpf })
    }

    /// Runs the agent on a frame (in the calling thread's network namespace,
    /// whose sockets its lookup sees).
    pub fn test_run(&self, frame: &[u8]) -> Result<super::TestRunOutput> {
        let prog: &Xdp = self
            .ebpf
            .program(names::PROGRAM)
            .ok_or(DataplaneError::Missing { kind: "program", name: names::PROGRAM })?
            .try_into()
            .map_err(DataplaneError::program("veer_agent is not XDP"))?;
        super::run_frame(prog, frame, 1)
    }

    /// One of the agent's counters, summed over the CPUs.
    pub fn counter(&self, c: AgentCounter) -> Result<u64> {
        let map = self.ebpf.map(names::STATS).ok_or(DataplaneError::Missing { kind: "map", name: names::STATS })?;
        let stats: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(map).map_err(DataplaneError::map(names::STATS, "opening"))?;
        Ok(stats.get(&(c as u32), 0).map_err(DataplaneError::map(names::STATS, "reading"))?.iter().sum())
    }
}
