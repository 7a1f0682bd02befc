//! Test and benchmark helpers (feature `testing`): running the program on
//! crafted frames with `BPF_PROG_TEST_RUN`, and the minimal baseline programs
//! (`veer_pass` for veth peers, `veer_tx` as the benchmark baseline).

use std::time::Duration;

use aya::{
    programs::{TestRun, TestRunOptions, Xdp},
    Ebpf,
};

use super::{AttachMode, Dataplane, DataplaneError, Result};

/// Minimal `veer_pass` / `veer_tx` programs (veth peers, benchmark
/// baseline), `veer_dsr` (throughput ceiling), the floors (`veer_floor`).
pub static BASELINE_OBJECT: &[u8] = aya::include_bytes_aligned!(env!("VEER_BASELINE_OBJ"));

/// Output of one run of the program on a crafted frame.
#[derive(Clone, Debug)]
pub struct TestRunOutput {
    /// XDP action (`XDP_PASS` = 2, `XDP_TX` = 3, ...).
    pub action: u32,
    /// The frame as the program left it.
    pub frame: Vec<u8>,
    /// Mean time per run, as the kernel measured it.
    pub duration: Duration,
}

/// What the verifier did with one loaded program.
#[derive(Clone, Debug)]
pub struct VerifierWalk {
    /// The program's name.
    pub name: String,
    /// Instructions the verifier walked (every path, every loop turn) to
    /// accept it; the kernel refuses a program past 1,000,000
    /// (`BPF_COMPLEXITY_LIMIT_INSNS`). `None` before Linux 5.16.
    pub walked: Option<u32>,
    /// Instructions in the program after the verifier's rewrites.
    pub translated: u32,
}

impl Dataplane {
    /// The verifier's walk of each loaded program of the XDP object (the
    /// VIP-path programs load only when a VIP-path check starts).
    pub fn verifier_walks(&self) -> Result<Vec<VerifierWalk>> {
        let mut walks = Vec::new();
        for (name, p) in self.ebpf.programs() {
            let info = match p.info() {
                Ok(info) => info,
                Err(aya::programs::ProgramError::NotLoaded) => continue,
                Err(e) => return Err(DataplaneError::program(format!("reading {name}'s info"))(e)),
            };
            walks.push(VerifierWalk {
                name: name.to_string(),
                walked: info.verified_instruction_count(),
                translated: info.size_translated().map_or(0, |b| b / 8),
            });
        }
        Ok(walks)
    }

    /// Runs the program on a crafted frame with `BPF_PROG_TEST_RUN` (`repeat`
    /// times; maps are updated as by real traffic).
    pub fn test_run(&self, frame: &[u8], repeat: u32) -> Result<TestRunOutput> {
        run_frame(self.xdp_ref()?, frame, repeat)
    }

    /// Runs one frame once as if it had come in on interface `ifindex`
    /// (routes answered through it leave by `XDP_TX`, as on a one-armed
    /// balancer); nothing is sent.
    pub fn test_run_from(&self, frame: &[u8], ifindex: u32) -> Result<TestRunOutput> {
        let prog = self.xdp_ref()?;
        let fd = prog.fd().map_err(DataplaneError::program("the XDP program's descriptor"))?;
        let mut out = vec![0u8; frame.len() + 256];
        let (action, len, ns) = super::syscall::xdp_run_timed(fd, frame, ifindex, &mut out).map_err(|io_error| {
            let e = aya::sys::SyscallError { call: "bpf_prog_test_run", io_error };
            DataplaneError::program("BPF_PROG_TEST_RUN")(aya::programs::ProgramError::SyscallError(e))
        })?;
        out.truncate(len);
        Ok(TestRunOutput { action, frame: out, duration: Duration::from_nanos(ns as u64) })
    }

    /// The NAT SYNs the dataplane watches for veerd's rescue
    /// (`PENDING_SYNS`), by flow.
    pub fn pending_syns(&self) -> Result<Vec<(veer_abi::FlowKey, veer_abi::PendingSyn)>> {
        use veer_abi::{names, FlowKey, PendingSyn};
        let name = names::PENDING_SYNS;
        let map = self.ebpf.map(name).ok_or(DataplaneError::Missing { kind: "map", name })?;
        let m: aya::maps::HashMap<&aya::maps::MapData, FlowKey, PendingSyn> =
            aya::maps::HashMap::try_from(map).map_err(DataplaneError::map(name, "opening"))?;
        Ok(m.iter().filter_map(|e| e.ok()).collect())
    }

    /// Moves `client`'s persistence entry for service `service` `by` into
    /// the past (tests of its expiry); false if it has none.
    pub fn age_affinity(&mut self, service: u32, client: std::net::IpAddr, by: Duration) -> Result<bool> {
        use veer_abi::{names, Affinity, AffinityKey};
        let name = names::AFFINITY;
        let map = self.ebpf.map_mut(name).ok_or(DataplaneError::Missing { kind: "map", name })?;
        let mut m: aya::maps::HashMap<&mut aya::maps::MapData, AffinityKey, Affinity> =
            aya::maps::HashMap::try_from(map).map_err(DataplaneError::map(name, "opening"))?;
        let key = AffinityKey { service, client: super::to_abi(client) };
        let Ok(mut a) = m.get(&key, 0) else { return Ok(false) };
        a.last_seen_ns = a.last_seen_ns.saturating_sub(by.as_nanos() as u64);
        m.insert(key, a, 0).map_err(DataplaneError::map(name, "writing"))?;
        Ok(true)
    }

    /// Moves flow `key`'s new-flow-table entry `by` into the past, as if its
    /// SYN had come that long ago (tests of SYN retransmission); false if it
    /// has none.
    pub fn age_new_flow(&mut self, key: &veer_abi::FlowKey, by: Duration) -> Result<bool> {
        self.age_entry(super::ConnTable::New, key, by)
    }

    /// Moves flow `key`'s connection-table entry `by` into the past, as if
    /// its last packet had come that long ago; false if it has none.
    pub fn age_conn(&mut self, key: &veer_abi::FlowKey, by: Duration) -> Result<bool> {
        self.age_entry(super::ConnTable::Established, key, by)
    }

    fn age_entry(&mut self, table: super::ConnTable, key: &veer_abi::FlowKey, by: Duration) -> Result<bool> {
        let name = table.map_name(key);
        let map = self.ebpf.map_mut(name).ok_or(DataplaneError::Missing { kind: "map", name })?;
        match key.v4_key() {
            Some(k) => age(map, name, &k, by),
            None => age(map, name, key, by),
        }
    }

    /// Empties slot `slot` of the tail-call table (`JUMPS`): what the
    /// entry program does without that program.
    pub fn clear_jump(&mut self, slot: u32) -> Result<()> {
        let name = veer_abi::names::JUMPS;
        let map = self.ebpf.map_mut(name).ok_or(DataplaneError::Missing { kind: "map", name })?;
        let mut jumps = aya::maps::ProgramArray::try_from(map).map_err(DataplaneError::map(name, "opening"))?;
        jumps.clear_index(&slot).map_err(DataplaneError::map(name, "clearing"))
    }

    /// Sets the time veer last sent its proxied SYN for flow `key` to
    /// `to(the time now in the mapping)`: 0 makes a resend due, a time ahead
    /// of the clock holds it; false if the flow has no mapping.
    pub fn set_proxied_syn_sent(&mut self, key: &veer_abi::FlowKey, to: impl FnOnce(u64) -> u64) -> Result<bool> {
        self.edit_nat_mapping(key, |m| m.syn_sent_ns = to(m.syn_sent_ns))
    }

    /// Changes flow `key`'s NAT mapping in place with `edit`: a state the
    /// tests cannot wait for (a time, or a mark another CPU sets
    /// mid-packet); false if the flow has no mapping.
    pub fn edit_nat_mapping(
        &mut self,
        key: &veer_abi::FlowKey,
        edit: impl FnOnce(&mut veer_abi::NatMapping),
    ) -> Result<bool> {
        use veer_abi::{names, NatKey, NatMapping};
        let name = names::NAT_REV;
        let map = self.ebpf.map_mut(name).ok_or(DataplaneError::Missing { kind: "map", name })?;
        let mut m: aya::maps::HashMap<&mut aya::maps::MapData, NatKey, NatMapping> =
            aya::maps::HashMap::try_from(map).map_err(DataplaneError::map(name, "opening"))?;
        let found = m.iter().filter_map(|r| r.ok()).find(|(_, v)| v.flow == *key);
        let Some((k, mut v)) = found else { return Ok(false) };
        edit(&mut v);
        m.insert(k, v, 0).map_err(DataplaneError::map(name, "writing"))?;
        Ok(true)
    }
}

/// Moves the entry of `key` in connection-table map `map` (called `name`)
/// `by` into the past; false if it has none.
fn age<K: aya::Pod>(map: &mut aya::maps::Map, name: &'static str, key: &K, by: Duration) -> Result<bool> {
    let mut m: aya::maps::HashMap<&mut aya::maps::MapData, K, veer_abi::ConnEntry> =
        aya::maps::HashMap::try_from(map).map_err(DataplaneError::map(name, "opening"))?;
    let Ok(mut e) = m.get(key, 0) else { return Ok(false) };
    e.last_seen_ns = e.last_seen_ns.saturating_sub(by.as_nanos() as u64);
    m.insert(key, e, 0).map_err(DataplaneError::map(name, "writing"))?;
    Ok(true)
}

/// Runs any loaded XDP program on a frame with `BPF_PROG_TEST_RUN`.
pub fn run_frame(prog: &Xdp, frame: &[u8], repeat: u32) -> Result<TestRunOutput> {
    let mut out = vec![0u8; frame.len() + 256];
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(frame);
    opts.data_out = Some(&mut out);
    opts.repeat = repeat.max(1);
    let r = prog.test_run(opts).map_err(DataplaneError::program("BPF_PROG_TEST_RUN"))?;
    out.truncate(r.data_size_out as usize);
    Ok(TestRunOutput { action: r.return_value, frame: out, duration: r.duration })
}

/// The baseline object's programs, loaded: the minimal `veer_pass`,
/// `veer_tx` and `veer_dsr`, and the floors of a connection-tracking
/// balancer (`veer_floor`, `veer_floor_short`, `veer_floor_nat`).
pub struct Baseline {
    ebpf: Ebpf,
}

impl Baseline {
    /// Loads the baseline programs (the floors' flow tables at the object's
    /// small size).
    pub fn load() -> Result<Self> {
        Self::load_sized(None)
    }

    /// [`Baseline::load`], the floors' flow tables (`FLOOR_FLOWS`,
    /// `FLOOR_FLOWS4`, `FLOOR_NAT`, `FLOOR_NAT_REV`) sized to hold
    /// `floor_flows` entries.
    pub fn load_sized(floor_flows: Option<u32>) -> Result<Self> {
        let mut loader = aya::EbpfLoader::new();
        if let Some(n) = floor_flows {
            for map in ["FLOOR_FLOWS", "FLOOR_FLOWS4", "FLOOR_NAT", "FLOOR_NAT_REV"] {
                loader.map_max_entries(map, n);
            }
        }
        let mut ebpf = loader.load(BASELINE_OBJECT).map_err(|e| DataplaneError::Load(Box::new(e)))?;
        for name in ["veer_pass", "veer_tx", "veer_dsr", "veer_floor", "veer_floor_short", "veer_floor_nat"] {
            let p: &mut Xdp = ebpf
                .program_mut(name)
                .ok_or(DataplaneError::Missing { kind: "program", name: "a baseline program" })?
                .try_into()
                .map_err(DataplaneError::program("baseline program is not XDP"))?;
            super::load::retrying_eagain(|| p.load()).map_err(DataplaneError::program(format!("loading {name}")))?;
        }
        Ok(Self { ebpf })
    }

    /// Attaches `veer_dsr`, the throughput ceiling, to `iface` (calling
    /// thread's namespace) in driver mode: packets to `vip` go to
    /// `backend_mac`. Detached when `self` is dropped.
    pub fn attach_dsr(&mut self, iface: &str, vip: std::net::Ipv4Addr, backend_mac: [u8; 6]) -> Result<()> {
        let map =
            self.ebpf.map_mut("MINIMAL_DSR").ok_or(DataplaneError::Missing { kind: "map", name: "MINIMAL_DSR" })?;
        let mut cfg: aya::maps::Array<&mut aya::maps::MapData, veer_abi::MinimalDsr> =
            aya::maps::Array::try_from(map).map_err(DataplaneError::map("MINIMAL_DSR", "opening"))?;
        cfg.set(0, veer_abi::MinimalDsr { vip: vip.octets(), backend_mac, _pad: [0; 2] }, 0)
            .map_err(DataplaneError::map("MINIMAL_DSR", "writing"))?;
        self.program("veer_dsr")?
            .attach(iface, AttachMode::Driver.into())
            .map_err(DataplaneError::program(format!("attaching veer_dsr to {iface}")))?;
        Ok(())
    }

    /// Run time and count of a baseline program (with `BPF_ENABLE_STATS` on).
    pub fn run_stats(&mut self, name: &'static str) -> Result<(std::time::Duration, u64)> {
        let info = self.program(name)?.info().map_err(DataplaneError::program("reading program info"))?;
        Ok((info.run_time(), info.run_count()))
    }

    /// A loaded program, shared: several can be held at once (see [`Baseline::program`]).
    pub fn loaded(&self, name: &'static str) -> Result<&Xdp> {
        self.ebpf
            .program(name)
            .ok_or(DataplaneError::Missing { kind: "program", name })?
            .try_into()
            .map_err(DataplaneError::program("baseline program is not XDP"))
    }

    /// A baseline program by name (`veer_pass`, `veer_tx`, `veer_dsr`, and
    /// the floors `veer_floor`, `veer_floor_short` and `veer_floor_nat`).
    pub fn program(&mut self, name: &'static str) -> Result<&mut Xdp> {
        self.ebpf
            .program_mut(name)
            .ok_or(DataplaneError::Missing { kind: "program", name })?
            .try_into()
            .map_err(DataplaneError::program("baseline program is not XDP"))
    }

    /// Attaches `veer_pass` to `iface` (calling thread's namespace). Needed on
    /// the veth peer of an interface that forwards with XDP_TX in driver mode.
    /// With `pin`, the link is pinned there and outlives this process.
    pub fn attach_pass(&mut self, iface: &str, mode: AttachMode, pin: Option<&std::path::Path>) -> Result<()> {
        let prog = self.program("veer_pass")?;
        let id = prog
            .attach(iface, mode.into())
            .map_err(DataplaneError::program(format!("attaching veer_pass to {iface}")))?;
        if let Some(path) = pin {
            let link = prog.take_link(id).map_err(DataplaneError::program("taking the link"))?;
            let fd = aya::programs::links::FdLink::try_from(link).map_err(|e| DataplaneError::Link {
                what: format!("link on {iface} is not a bpf_link"),
                source: Box::new(e),
            })?;
            fd.pin(path).map_err(|e| DataplaneError::PinLink { path: path.to_path_buf(), source: Box::new(e) })?;
        }
        Ok(())
    }
}
