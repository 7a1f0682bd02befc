//! `veer-agent` on a DSR backend: a tiny XDP program that sends a SYN for
//! one of the backend's VIPs back to the balancer when no socket would take
//! it (see `ebpf/veer-xdp/src/bin/agent.rs`). Installed per interface, pinned
//! under [`AGENT_PINS`]`/<interface>/`, so that it outlives `veerctl`.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

use aya::{
    maps::{HashMap, MapData, PerCpuArray},
    programs::{links::FdLink, Xdp},
    EbpfLoader,
};
use veer_abi::{agent_names as names, AgentCounter, MAX_AGENT_VIPS};

use super::{pin, to_abi, AttachMode, DataplaneError, Result};

/// The agent object, embedded at build time.
pub static AGENT_OBJECT: &[u8] = aya::include_bytes_aligned!(env!("VEER_AGENT_OBJ"));

/// Where agents are pinned, one directory per interface.
pub const AGENT_PINS: &str = "/sys/fs/bpf/veer-agent";

fn dir(root: &Path, iface: &str) -> PathBuf {
    root.join(iface)
}

/// What an installed agent reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AgentStatus {
    /// The interface.
    pub interface: String,
    /// The VIPs it serves.
    pub vips: Vec<IpAddr>,
    /// SYNs sent back to the balancer.
    pub bounced: u64,
    /// SYNs for a VIP that a socket took.
    pub kept: u64,
    /// Other segments no connection owned, sent back to the balancer (for
    /// their flow's second chance).
    pub unowned: u64,
}

/// Installs the agent on `iface` (in the calling thread's namespace) for
/// `vips`, or, when it is installed already, sets its VIPs to `vips`.
/// Returns whether it was newly attached.
pub fn install(root: &Path, iface: &str, vips: &[IpAddr], mode: AttachMode) -> Result<bool> {
    if vips.is_empty() || vips.len() > MAX_AGENT_VIPS as usize {
        return Err(DataplaneError::Unsupported(format!(
            "an agent serves 1 to {MAX_AGENT_VIPS} VIPs, not {}",
            vips.len()
        )));
    }
    pin::ensure_bpffs(Path::new("/sys/fs/bpf"))?;
    let d = dir(root, iface);
    std::fs::create_dir_all(&d).map_err(|source| pin::PinError::Io { what: "creating", path: d.clone(), source })?;
    let link = d.join("link");
    let fresh = !link.exists();
    let mut loader = EbpfLoader::new();
    loader.map_pin_path(names::VIPS, d.join(names::VIPS)).map_pin_path(names::STATS, d.join(names::STATS));
    let mut ebpf = loader.load(AGENT_OBJECT).map_err(|e| DataplaneError::Load(Box::new(e)))?;
    if fresh {
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
    set_vips(&mut ebpf, vips)?;
    Ok(fresh)
}

/// The agent program of a loaded object, loaded into the kernel.
fn load_program(ebpf: &mut aya::Ebpf) -> Result<&mut Xdp> {
    let prog: &mut Xdp = ebpf
        .program_mut(names::PROGRAM)
        .ok_or(DataplaneError::Missing { kind: "program", name: names::PROGRAM })?
        .try_into()
        .map_err(DataplaneError::program("veer_agent is not XDP"))?;
    prog.load().map_err(DataplaneError::program("loading veer_agent into the kernel (verifier)"))?;
    Ok(prog)
}

/// Makes the agent's VIPs exactly `vips`.
fn set_vips(ebpf: &mut aya::Ebpf, vips: &[IpAddr]) -> Result<()> {
    let map = ebpf.map_mut(names::VIPS).ok_or(DataplaneError::Missing { kind: "map", name: names::VIPS })?;
    let mut m: HashMap<&mut MapData, [u8; 16], u32> =
        HashMap::try_from(map).map_err(DataplaneError::map(names::VIPS, "opening"))?;
    let wanted: Vec<[u8; 16]> = vips.iter().map(|v| to_abi(*v)).collect();
    let stale: Vec<[u8; 16]> = m.keys().filter_map(|k| k.ok()).filter(|k| !wanted.contains(k)).collect();
    for k in &wanted {
        m.insert(k, 1, 0).map_err(DataplaneError::map(names::VIPS, "writing a VIP"))?;
    }
    for k in &stale {
        let _ = m.remove(k);
    }
    Ok(())
}

/// Detaches the agent from `iface` and removes its pins.
pub fn uninstall(root: &Path, iface: &str) -> Result<Vec<PathBuf>> {
    Ok(pin::uninstall(&dir(root, iface))?)
}

/// The agent installed on `iface`, from its pins.
pub fn status(root: &Path, iface: &str) -> Result<AgentStatus> {
    let d = dir(root, iface);
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
    Ok(AgentStatus {
        interface: iface.to_string(),
        vips: vips.keys().filter_map(|k| k.ok()).map(|k| super::from_abi(&k)).collect(),
        bounced: counter(AgentCounter::Bounced)?,
        kept: counter(AgentCounter::Kept)?,
        // An agent pinned before this counter existed has no slot for it.
        unowned: counter(AgentCounter::Unowned).unwrap_or(0),
    })
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
        let mut ebpf = aya::Ebpf::load(AGENT_OBJECT).map_err(|e| DataplaneError::Load(Box::new(e)))?;
        load_program(&mut ebpf)?;
        set_vips(&mut ebpf, vips)?;
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
