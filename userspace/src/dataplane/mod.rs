//! The XDP dataplane, from userspace: load, attach, write tables, read counters.
//!
//! [`Dataplane`] owns the loaded object. Every write it makes is one the XDP
//! program sees atomically: a backend's state is one word, a service value is
//! swapped whole, and a ring is written into the inactive half before one
//! service write switches to it.
//!
//! Needs root (or CAP_BPF + CAP_NET_ADMIN) and a kernel with BTF and bounded
//! loops (5.3+); tested on 6.18. Attaching acts in the network namespace of
//! the calling thread.

pub mod agent;
mod error;
pub mod nat;
pub mod passive;
pub mod pin;
mod read;
mod syscall;
#[cfg(feature = "testing")]
mod testing;

use std::{collections::HashMap as StdHashMap, time::Duration};

use aya::{
    maps::{Array, DevMapHash, HashMap, Map, MapData},
    programs::{Xdp, XdpMode},
    Ebpf, EbpfLoader,
};
use veer_abi::{
    names, Backend, BackendState, Scheduler, Service, ServiceKey, ServiceSlot, VipFilter, DEFAULT_CONN_TABLE_SIZE,
    DEFAULT_NAT_TABLE_SIZE, DEFAULT_NEW_FLOW_TABLE_SIZE, JUMP_NAT, JUMP_NAT_RETURN, MAX_BACKENDS, MAX_RING_SIZE,
    MAX_SERVICES, NAT_PROGRAM, NAT_RETURN_PROGRAM, PROGRAM_NAME,
};

// The address and key conversions live below the dataplane; re-exported for
// callers that think of them as dataplane types.
pub use crate::addr::{display_service, flow_key, from_abi, service_key, to_abi, Protocol};
pub use crate::ring::identity_of;
pub use error::DataplaneError;
pub use read::{active_per_backend, is_active, monotonic_ns, MapReader, PinnedMaps, TableUsage};
#[cfg(feature = "testing")]
pub use testing::{run_frame, Baseline, TestRunOutput, BASELINE_OBJECT};

use crate::ring::{maglev::MaglevRing, round_robin, RingMember};

/// Result of dataplane operations.
pub type Result<T, E = DataplaneError> = std::result::Result<T, E>;

/// The XDP object veer was built with.
pub static XDP_OBJECT: &[u8] = aya::include_bytes_aligned!(env!("VEER_XDP_OBJ"));

type Ring = [u32; MAX_RING_SIZE];

/// How the program is attached to an interface.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AttachMode {
    /// Native XDP in the driver (the default; fastest).
    #[default]
    Driver,
    /// Generic XDP on the skb (any interface; slower).
    Skb,
}

impl From<AttachMode> for XdpMode {
    fn from(m: AttachMode) -> Self {
        match m {
            AttachMode::Driver => XdpMode::Driver,
            AttachMode::Skb => XdpMode::Skb,
        }
    }
}

/// Sizes fixed at load time.
#[derive(Clone, Copy, Debug)]
pub struct DataplaneOptions {
    /// Entries asked for the connection table (see [`lru_capacity`] for what
    /// the kernel gives).
    pub conn_table_size: u32,
    /// Entries asked for the new-flow table (flows seen once).
    pub new_flow_table_size: u32,
    /// Services the tables can hold (ids `0..max_services`). Each costs two
    /// rings of `MAX_RING_SIZE` slots (512 KiB).
    pub max_services: u32,
    /// Backends the tables can hold (ids `0..max_backends`).
    pub max_backends: u32,
    /// NAT flows the return table can hold.
    pub nat_table_size: u32,
}

impl Default for DataplaneOptions {
    fn default() -> Self {
        Self {
            conn_table_size: DEFAULT_CONN_TABLE_SIZE,
            new_flow_table_size: DEFAULT_NEW_FLOW_TABLE_SIZE,
            max_services: MAX_SERVICES,
            max_backends: MAX_BACKENDS,
            nat_table_size: DEFAULT_NAT_TABLE_SIZE,
        }
    }
}

/// The capacity the kernel gives an LRU hash with per-CPU LRU lists
/// (`BPF_F_NO_COMMON_LRU`) when `requested` entries are asked for: a multiple
/// of the number of possible CPUs, rounded up (down where rounding up would
/// overflow), so that every CPU's list gets an equal share. Mirrors
/// `htab_map_alloc` in kernel/bpf/hashtab.c (every kernel since 4.10).
pub fn lru_capacity(requested: u32, possible_cpus: u32) -> u32 {
    let n = possible_cpus.max(1);
    match requested.div_ceil(n).checked_mul(n) {
        Some(up) => up,
        None => requested / n * n,
    }
}

/// Where the kernel lists the possible CPUs.
pub const POSSIBLE_CPUS: &str = "/sys/devices/system/cpu/possible";

/// Number of possible CPUs (not only online ones): what the kernel sizes
/// per-CPU maps and per-CPU LRU lists by.
pub fn possible_cpus() -> std::io::Result<u32> {
    aya::util::nr_cpus().map(|n| n as u32).map_err(|(_, e)| e)
}

/// One map as this build creates it. The single source of map sizes: used
/// to size the maps at load time and to check pinned maps before reuse.
pub(crate) struct MapLayout {
    pub name: &'static str,
    pub key_size: u32,
    /// Accepted value sizes (the first is what this build creates).
    pub value_sizes: &'static [u32],
    /// Entries asked for at creation.
    pub max_entries: u32,
    /// An LRU hash with per-CPU lists: the kernel rounds `max_entries` (see [`lru_capacity`]).
    pub per_cpu_lru: bool,
}

impl MapLayout {
    /// The `max_entries` the kernel reports for this map once created.
    pub fn kernel_max_entries(&self, possible_cpus: u32) -> u32 {
        if self.per_cpu_lru {
            lru_capacity(self.max_entries, possible_cpus)
        } else {
            self.max_entries
        }
    }
}

#[cfg(test)]
mod layout_tests {
    use super::lru_capacity;

    #[test]
    fn lru_capacity_rounds_to_a_multiple_of_the_cpus() {
        assert_eq!(lru_capacity(65535, 2), 65536);
        assert_eq!(lru_capacity(262_144, 6), 262_146);
        assert_eq!(lru_capacity(262_144, 96), 262_176);
        assert_eq!(lru_capacity(262_144, 64), 262_144);
        assert_eq!(lru_capacity(1000, 1), 1000);
        assert_eq!(lru_capacity(u32::MAX, 6), u32::MAX / 6 * 6, "rounds down where up would overflow");
    }
}

/// Loads the programs the entry program tail-calls and puts them in `JUMPS`
/// (replacing what a previous daemon put there, when the map is adopted).
fn load_continuations(ebpf: &mut Ebpf) -> Result<()> {
    use aya::maps::ProgramArray;
    let mut fds = Vec::new();
    let programs =
        [(JUMP_NAT, NAT_PROGRAM), (JUMP_NAT_RETURN, NAT_RETURN_PROGRAM)].into_iter().chain(veer_abi::NAT_ICMP_PROGRAMS);
    for (slot, name) in programs {
        let p: &mut Xdp = ebpf
            .program_mut(name)
            .ok_or(DataplaneError::Missing { kind: "program", name })?
            .try_into()
            .map_err(DataplaneError::program(format!("program {name} is not XDP")))?;
        p.load().map_err(DataplaneError::program(format!("loading {name} into the kernel (verifier)")))?;
        let fd = p.fd().map_err(DataplaneError::program(format!("{name}'s descriptor")))?.try_clone().map_err(|e| {
            DataplaneError::Program { what: format!("{name}'s descriptor"), source: Box::new(e.into()) }
        })?;
        fds.push((slot, fd));
    }
    let map = ebpf.map_mut(names::JUMPS).ok_or(DataplaneError::Missing { kind: "map", name: names::JUMPS })?;
    let mut jumps = ProgramArray::try_from(map).map_err(DataplaneError::map(names::JUMPS, "opening"))?;
    for (slot, fd) in &fds {
        jumps.set(*slot, fd, 0).map_err(DataplaneError::map(names::JUMPS, format!("setting slot {slot}")))?;
    }
    Ok(())
}

/// Every map of the XDP object, sized for `opts`.
pub(crate) fn map_layout(opts: &DataplaneOptions) -> Vec<MapLayout> {
    use core::mem::size_of;
    use veer_abi::{
        ConnEntry, Counters, FlowKey, GlobalCounter, NatConfig, NatKey, NatMapping, JUMP_SLOTS, MAX_SNAT_ADDRS,
        MAX_TX_PORTS,
    };
    const fn sz<T>() -> u32 {
        size_of::<T>() as u32
    }
    let svc = opts.max_services;
    let m = |name, key_size, value_sizes, max_entries| MapLayout {
        name,
        key_size,
        value_sizes,
        max_entries,
        per_cpu_lru: name == names::CONNS || name == names::NEW_CONNS || name == names::SYN_STASH,
    };
    vec![
        m(names::SERVICES, sz::<ServiceKey>(), &[size_of::<Service>() as u32], svc),
        m(names::VIPS, 16, &[4], svc),
        m(names::SERVICE_SLOTS, 4, &[size_of::<veer_abi::ServiceSlot>() as u32], svc),
        m(names::VIP_FILTER, 4, &[size_of::<veer_abi::VipFilter>() as u32], 1),
        m(names::PERSISTENCE, 4, &[4], svc),
        m(names::ACTIVE_FLOWS, 4, &[size_of::<veer_abi::ActiveFlows>() as u32], opts.max_backends),
        m(
            names::AFFINITY,
            sz::<veer_abi::AffinityKey>(),
            &[size_of::<veer_abi::Affinity>() as u32],
            veer_abi::DEFAULT_AFFINITY_TABLE_SIZE,
        ),
        m(names::BACKENDS, 4, &[size_of::<Backend>() as u32], opts.max_backends),
        m(names::RINGS, 4, &[size_of::<Ring>() as u32], svc * 2),
        m(names::CONNS, sz::<FlowKey>(), &[size_of::<ConnEntry>() as u32], opts.conn_table_size),
        m(names::NEW_CONNS, sz::<FlowKey>(), &[size_of::<ConnEntry>() as u32], opts.new_flow_table_size),
        m(names::RR_CURSORS, 4, &[4], svc),
        m(names::SERVICE_STATS, 4, &[size_of::<Counters>() as u32], svc),
        m(names::BACKEND_STATS, 4, &[size_of::<Counters>() as u32], opts.max_backends),
        m(names::GLOBAL_STATS, 4, &[8], GlobalCounter::COUNT),
        // A devmap value is the ifindex, optionally followed by a program fd.
        m(names::TX_PORTS, 4, &[4, 8], MAX_TX_PORTS),
        m(names::NAT_REV, sz::<NatKey>(), &[size_of::<NatMapping>() as u32], opts.nat_table_size),
        m(names::SNAT_ADDRS, 4, &[16], MAX_SNAT_ADDRS),
        m(names::NAT_CONFIG, 4, &[size_of::<NatConfig>() as u32], 1),
        m(names::JUMPS, 4, &[4], JUMP_SLOTS),
        m(names::SUSPECTS, 4, &[8], opts.max_backends),
        // A ring buffer has no keys or values; its size is in bytes.
        m(names::PASSIVE_EVENTS, 0, &[0], veer_abi::PASSIVE_EVENTS_BYTES),
        m(names::SYN_STASH, sz::<FlowKey>(), &[size_of::<veer_abi::SynStash>() as u32], opts.new_flow_table_size),
        m(names::PASSIVE_STATS, 4, &[size_of::<veer_abi::PassiveCounters>() as u32], opts.max_backends),
    ]
}

/// What a service is, apart from its ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceSpec {
    /// Id (`< max_services`): indexes the ring, cursor and stats maps.
    pub id: u32,
    /// How new flows pick a backend.
    pub scheduler: Scheduler,
    /// `SERVICE_F_*` flags.
    pub flags: u8,
    /// Backend for when none is up, or `NO_BACKEND`.
    pub fallback_backend: u32,
    /// Client persistence in seconds (0: off): a client's new flows go to
    /// the backend of its last flow within this long, while it is up.
    pub persistence_s: u32,
}

impl ServiceSpec {
    /// The `flags` the service table holds: the spec's, with
    /// `SERVICE_F_PERSIST` following `persistence_s`.
    pub fn service_flags(&self) -> u8 {
        let persist = if self.persistence_s != 0 { veer_abi::SERVICE_F_PERSIST } else { 0 };
        (self.flags & !veer_abi::SERVICE_F_PERSIST) | persist
    }
}

/// The loaded XDP dataplane.
pub struct Dataplane {
    ebpf: Ebpf,
    max_services: u32,
    max_backends: u32,
    attached: StdHashMap<String, aya::programs::xdp::XdpLinkId>,
    /// Pinned links this process attached or adopted, held open while it runs.
    held_links: Vec<aya::programs::links::FdLink>,
    /// Maglev tables built fresh from members sorted by identity, never from
    /// the live table (fleet mode: every node builds the same table).
    fresh_rings: bool,
}

macro_rules! map_mut {
    ($self:expr, $kind:ident, $name:expr) => {
        $kind::try_from($self.ebpf.map_mut($name).ok_or(DataplaneError::Missing { kind: "map", name: $name })?)
            .map_err(DataplaneError::map($name, "opening"))?
    };
}

impl MapReader for Dataplane {
    fn map(&self, name: &'static str) -> Result<&Map> {
        self.ebpf.map(name).ok_or(DataplaneError::Missing { kind: "map", name })
    }
}

impl Dataplane {
    /// Loads the embedded XDP object with default sizes (not yet attached).
    pub fn load() -> Result<Self> {
        Self::load_with(XDP_OBJECT, &DataplaneOptions::default())
    }

    /// Loads an XDP object with the given sizes (not yet attached).
    pub fn load_with(object: &[u8], opts: &DataplaneOptions) -> Result<Self> {
        let mut loader = EbpfLoader::new();
        Self::load_object(&mut loader, object, opts)
    }

    fn load_object(loader: &mut EbpfLoader<'_>, object: &[u8], opts: &DataplaneOptions) -> Result<Self> {
        let svc = opts.max_services;
        for m in map_layout(opts) {
            loader.map_max_entries(m.name, m.max_entries);
        }
        let mut ebpf = loader.load(object).map_err(|e| DataplaneError::Load(Box::new(e)))?;
        let prog = Self::xdp(&mut ebpf)?;
        prog.load().map_err(DataplaneError::program("loading the XDP program into the kernel (verifier)"))?;
        load_continuations(&mut ebpf)?;
        Ok(Self {
            ebpf,
            max_services: svc,
            max_backends: opts.max_backends,
            attached: StdHashMap::new(),
            held_links: Vec::new(),
            fresh_rings: false,
        })
    }

    fn xdp(ebpf: &mut Ebpf) -> Result<&mut Xdp> {
        let p =
            ebpf.program_mut(PROGRAM_NAME).ok_or(DataplaneError::Missing { kind: "program", name: PROGRAM_NAME })?;
        p.try_into().map_err(DataplaneError::program("program veer_xdp is not XDP"))
    }

    /// Attaches the VIP-path TC egress program to `iface` (TCX, Linux 6.6+;
    /// it detaches when this dataplane is dropped: VIP-path checks run only
    /// while veerd does).
    pub fn attach_vip_path(&mut self, iface: &str) -> Result<()> {
        use aya::programs::{tc::TcAttachType, SchedClassifier};
        let name = veer_abi::VIP_PATH_PROGRAM;
        let prog: &mut SchedClassifier = self
            .ebpf
            .program_mut(name)
            .ok_or(DataplaneError::Missing { kind: "program", name })?
            .try_into()
            .map_err(DataplaneError::program("veer_vip_path is not a TC program"))?;
        if prog.fd().is_err() {
            prog.load().map_err(DataplaneError::program("loading veer_vip_path into the kernel (verifier)"))?;
        }
        prog.attach(iface, TcAttachType::Egress)
            .map_err(DataplaneError::program(format!("attaching veer_vip_path to {iface}'s egress")))?;
        Ok(())
    }

    /// Attaches to `iface` (in the calling thread's network namespace).
    pub fn attach(&mut self, iface: &str, mode: AttachMode) -> Result<()> {
        let prog = Self::xdp(&mut self.ebpf)?;
        let id = prog
            .attach(iface, mode.into())
            .map_err(DataplaneError::program(format!("attaching to {iface} in {mode:?} mode")))?;
        self.attached.insert(iface.to_string(), id);
        Ok(())
    }

    /// Detaches from `iface`.
    pub fn detach(&mut self, iface: &str) -> Result<()> {
        let id = self.attached.remove(iface).ok_or_else(|| DataplaneError::NotAttached(iface.into()))?;
        Self::xdp(&mut self.ebpf)?.detach(id).map_err(DataplaneError::program(format!("detaching from {iface}")))
    }

    /// Interfaces the program is attached to by this handle.
    pub fn attached(&self) -> impl Iterator<Item = &str> {
        self.attached.keys().map(String::as_str)
    }

    /// Service capacity chosen at load time.
    pub fn max_services(&self) -> u32 {
        self.max_services
    }

    /// Allows redirecting to interface `ifindex` (backends behind another NIC).
    pub fn add_tx_port(&mut self, ifindex: u32) -> Result<()> {
        let mut m: DevMapHash<&mut MapData> = map_mut!(self, DevMapHash, names::TX_PORTS);
        let what = format!("adding ifindex {ifindex}");
        m.insert(ifindex, ifindex, None, 0).map_err(|e| match e {
            aya::maps::xdp::XdpMapError::MapError(e) => DataplaneError::map(names::TX_PORTS, what)(e),
            other => DataplaneError::Unsupported(format!("{what}: {other}")),
        })
    }

    /// Sets SNAT address `index` (what NAT uses as the source toward backends
    /// whose entry names that index).
    pub fn set_snat_addr(&mut self, index: u16, addr: std::net::IpAddr) -> Result<()> {
        let mut m: Array<&mut MapData, [u8; 16]> = map_mut!(self, Array, names::SNAT_ADDRS);
        m.set(index as u32, to_abi(addr), 0).map_err(DataplaneError::map(names::SNAT_ADDRS, format!("writing {index}")))
    }

    /// Sets the SNAT port range (`port_min` 0 turns NAT's return path off).
    pub fn set_nat_config(&mut self, cfg: veer_abi::NatConfig) -> Result<()> {
        let mut m: Array<&mut MapData, veer_abi::NatConfig> = map_mut!(self, Array, names::NAT_CONFIG);
        m.set(0, cfg, 0).map_err(DataplaneError::map(names::NAT_CONFIG, "writing"))
    }

    /// Adds or updates a service, keeping its live ring if it exists.
    pub fn upsert_service(&mut self, key: &ServiceKey, spec: ServiceSpec) -> Result<()> {
        if spec.id >= self.max_services {
            return Err(DataplaneError::IdOutOfRange { what: "service", id: spec.id, capacity: self.max_services });
        }
        let existing = self.service(key)?;
        let (ring_len, ring_half) = match existing {
            Some(s) if s.id == spec.id => (s.ring_len, s.ring_half),
            _ => (0, 0),
        };
        // The persistence is written before the flag (a flagged service
        // must find its time).
        {
            let mut m: Array<&mut MapData, u32> = map_mut!(self, Array, names::PERSISTENCE);
            m.set(spec.id, spec.persistence_s, 0).map_err(DataplaneError::map(
                names::PERSISTENCE,
                format!("writing the persistence of {}", display_service(key)),
            ))?;
        }
        let value = Service {
            id: spec.id,
            ring_len,
            fallback_backend: spec.fallback_backend,
            scheduler: spec.scheduler as u8,
            flags: spec.service_flags(),
            ring_half,
            _pad: 0,
        };
        if existing.is_none() {
            self.adjust_vip(&key.addr, 1)?;
        }
        if let Some(old) = existing.filter(|s| s.id != spec.id) {
            self.clear_slot(old.id, key)?;
        }
        self.write_service(key, value, "writing")
    }

    /// Writes a service's value: its slot first, then the service table,
    /// so an established flow never finds a slot older than the service.
    fn write_service(&mut self, key: &ServiceKey, value: Service, what: &str) -> Result<()> {
        {
            let mut slots: Array<&mut MapData, ServiceSlot> = map_mut!(self, Array, names::SERVICE_SLOTS);
            slots.set(value.id, ServiceSlot { key: *key, service: value }, 0).map_err(DataplaneError::map(
                names::SERVICE_SLOTS,
                format!("{what} the slot of {}", display_service(key)),
            ))?;
        }
        let mut m: HashMap<&mut MapData, ServiceKey, Service> = map_mut!(self, HashMap, names::SERVICES);
        m.insert(key, value, 0)
            .map_err(DataplaneError::map(names::SERVICES, format!("{what} {}", display_service(key))))
    }

    /// Frees slot `id` if it still holds `key`'s service.
    fn clear_slot(&mut self, id: u32, key: &ServiceKey) -> Result<()> {
        let mut slots: Array<&mut MapData, ServiceSlot> = map_mut!(self, Array, names::SERVICE_SLOTS);
        let what = || format!("freeing the slot of {}", display_service(key));
        let slot = slots.get(&id, 0).map_err(DataplaneError::map(names::SERVICE_SLOTS, what()))?;
        if slot.key != *key {
            return Ok(());
        }
        let free = ServiceSlot {
            key: ServiceKey { addr: [0; 16], port: 0, proto: 0, _pad: 0 },
            service: Service { id: 0, ring_len: 0, fallback_backend: 0, scheduler: 0, flags: 0, ring_half: 0, _pad: 0 },
        };
        slots.set(id, free, 0).map_err(DataplaneError::map(names::SERVICE_SLOTS, what()))
    }

    /// Rewrites `VIP_FILTER` from the VIP table.
    fn refresh_vip_filter(&mut self) -> Result<()> {
        let mut filter = VipFilter::default();
        {
            let vips: HashMap<&MapData, [u8; 16], u32> =
                HashMap::try_from(self.map(names::VIPS)?).map_err(DataplaneError::map(names::VIPS, "opening"))?;
            for addr in vips.keys() {
                filter.insert(&addr.map_err(DataplaneError::map(names::VIPS, "listing"))?);
            }
        }
        let mut m: Array<&mut MapData, VipFilter> = map_mut!(self, Array, names::VIP_FILTER);
        m.set(0, filter, 0).map_err(DataplaneError::map(names::VIP_FILTER, "writing"))
    }

    fn adjust_vip(&mut self, addr: &[u8; 16], delta: i32) -> Result<()> {
        let mut m: HashMap<&mut MapData, [u8; 16], u32> = map_mut!(self, HashMap, names::VIPS);
        let n = m.get(addr, 0).unwrap_or(0).saturating_add_signed(delta);
        let what = format!("updating VIP {}", from_abi(addr));
        if n == 0 {
            match m.remove(addr) {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => return Err(DataplaneError::map(names::VIPS, what)(e)),
            }
        } else {
            m.insert(addr, n, 0).map_err(DataplaneError::map(names::VIPS, what))?;
        }
        // A new VIP's bit is set before its service is written; a removed
        // one's cleared after (a stale set bit only costs a lookup).
        self.refresh_vip_filter()
    }

    /// Removes a service. Its flows stop matching at once; their connection
    /// table entries age out of the LRU.
    pub fn remove_service(&mut self, key: &ServiceKey) -> Result<()> {
        let Some(old) = self.service(key)? else {
            return Err(DataplaneError::UnknownService(display_service(key)));
        };
        {
            let mut m: HashMap<&mut MapData, ServiceKey, Service> = map_mut!(self, HashMap, names::SERVICES);
            m.remove(key)
                .map_err(DataplaneError::map(names::SERVICES, format!("removing {}", display_service(key))))?;
        }
        self.clear_slot(old.id, key)?;
        self.adjust_vip(&key.addr, -1)
    }

    /// Backends the tables hold (ids `0..max_backends`).
    pub fn max_backends(&self) -> u32 {
        self.max_backends
    }

    /// Writes backend `id` whole.
    pub fn set_backend(&mut self, id: u32, backend: &Backend) -> Result<()> {
        if id >= self.max_backends {
            return Err(DataplaneError::IdOutOfRange { what: "backend", id, capacity: self.max_backends });
        }
        let mut m: Array<&mut MapData, Backend> = map_mut!(self, Array, names::BACKENDS);
        m.set(id, backend, 0).map_err(DataplaneError::map(names::BACKENDS, format!("writing backend {id}")))
    }

    /// Frees backend `id`: zeroed, it reads as down, and flows pinned to it move.
    pub fn clear_backend(&mut self, id: u32) -> Result<()> {
        let zero = Backend {
            addr: [0; 16],
            mac: [0; 6],
            src_mac: [0; 6],
            ifindex: 0,
            weight: 0,
            state: 0,
            service: 0,
            port: 0,
            snat: 0,
            snat_count: 0,
            _pad: 0,
        };
        self.set_backend(id, &zero)
    }

    /// Flips backend `id`'s state word: the next packet sees it.
    pub fn set_backend_state(&mut self, id: u32, state: BackendState) -> Result<()> {
        let mut b = self.backend(id)?;
        b.state = state as u32;
        self.set_backend(id, &b)
    }

    /// Publishes a ring for `key`: written into the inactive half, then switched
    /// in by one write of the service value. An empty ring means "no backend".
    pub fn publish_ring(&mut self, key: &ServiceKey, slots: &[u32]) -> Result<()> {
        let mut svc = self.service(key)?.ok_or_else(|| DataplaneError::UnknownService(display_service(key)))?;
        if slots.len() > MAX_RING_SIZE {
            return Err(crate::ring::RingError::SizeOutOfRange {
                size: slots.len() as u32,
                min: 1,
                max: MAX_RING_SIZE as u32,
            }
            .into());
        }
        let next_half = (svc.ring_half ^ 1) & 1;
        let mut ring: Box<Ring> = vec![0u32; MAX_RING_SIZE]
            .into_boxed_slice()
            .try_into()
            .map_err(|_| crate::ring::RingError::TooManyMembers { members: 0, size: 0 })?;
        ring[..slots.len()].copy_from_slice(slots);
        {
            let mut rings: Array<&mut MapData, Ring> = map_mut!(self, Array, names::RINGS);
            // By reference: passing the 256 KiB array by value would copy it to the stack.
            #[allow(clippy::needless_borrows_for_generic_args)]
            rings
                .set(svc.id * 2 + next_half as u32, &*ring, 0)
                .map_err(DataplaneError::map(names::RINGS, format!("writing ring of {}", display_service(key))))?;
        }
        svc.ring_half = next_half;
        svc.ring_len = slots.len() as u32;
        self.write_service(key, svc, "switching the ring of")
    }

    /// Fleet mode: Maglev tables are built fresh from their members sorted
    /// by identity (deterministic across nodes), not rebuilt from the live
    /// table (minimal disruption, but history-dependent).
    pub fn set_fresh_rings(&mut self, fresh: bool) {
        self.fresh_rings = fresh;
    }

    /// Builds the ring the service's scheduler needs from `members` and
    /// publishes it; returns the slots. `ring_size` (a prime) applies to Maglev.
    pub fn publish_pool(&mut self, key: &ServiceKey, ring_size: u32, members: &[RingMember]) -> Result<Vec<u32>> {
        let svc = self.service(key)?.ok_or_else(|| DataplaneError::UnknownService(display_service(key)))?;
        let slots = match Scheduler::from_u8(svc.scheduler) {
            Some(Scheduler::RoundRobin) => round_robin::sequence(members),
            _ if self.fresh_rings => {
                let mut sorted = members.to_vec();
                sorted.sort_by_key(|m| m.identity);
                let ring = MaglevRing::build(&sorted, ring_size)?;
                if ring.is_empty() {
                    Vec::new()
                } else {
                    ring.slots().to_vec()
                }
            }
            _ => {
                // Rebuild from the live table so only the slots that must move do.
                let live = if svc.ring_len == ring_size { Some(self.ring(key)?) } else { None };
                let ring = MaglevRing::rebuild(live.as_deref(), members, ring_size)?;
                if ring.is_empty() {
                    Vec::new()
                } else {
                    ring.slots().to_vec()
                }
            }
        };
        self.publish_ring(key, &slots)?;
        Ok(slots)
    }

    /// Time the XDP program has run and how many times, since stats were
    /// enabled (`aya::sys::enable_stats`, kernel 5.8+; zero otherwise).
    pub fn run_stats(&self) -> Result<(Duration, u64)> {
        let info = self.xdp_ref()?.info().map_err(DataplaneError::program("reading program info"))?;
        Ok((info.run_time(), info.run_count()))
    }

    pub(crate) fn xdp_ref(&self) -> Result<&Xdp> {
        let p =
            self.ebpf.program(PROGRAM_NAME).ok_or(DataplaneError::Missing { kind: "program", name: PROGRAM_NAME })?;
        p.try_into().map_err(DataplaneError::program("program veer_xdp is not XDP"))
    }
}
