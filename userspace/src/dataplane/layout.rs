//! The maps' sizes: what the loader asks the kernel for and what a pinned
//! map must match before a restarted daemon reuses it.

use veer_abi::{
    names, Backend, Service, ServiceKey, DEFAULT_CONN_TABLE_SIZE, DEFAULT_NAT_TABLE_SIZE, DEFAULT_NEW_FLOW_TABLE_SIZE,
    MAX_BACKENDS, MAX_RING_SIZE, MAX_SERVICES,
};

/// One ring, as the `RINGS` map holds it (two per service: live and standby).
pub(super) type Ring = [u32; MAX_RING_SIZE];

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

/// The LRU maps with per-CPU lists (`BPF_F_NO_COMMON_LRU`), whose capacity
/// the kernel rounds (see [`lru_capacity`]).
const PER_CPU_LRU: [&str; 6] =
    [names::CONNS4, names::CONNS, names::NEW_CONNS4, names::NEW_CONNS, names::SYN_STASH, names::PENDING_SYNS];

/// One map's layout.
fn layout(name: &'static str, key_size: u32, value_sizes: &'static [u32], max_entries: u32) -> MapLayout {
    MapLayout { name, key_size, value_sizes, max_entries, per_cpu_lru: PER_CPU_LRU.contains(&name) }
}

/// Every map of the XDP object, sized for `opts`.
pub(crate) fn map_layout(opts: &DataplaneOptions) -> Vec<MapLayout> {
    use core::mem::size_of;
    use veer_abi::{
        ConnEntry, Counters, FlowKey, FlowKey4, GlobalCounter, NatConfig, NatKey, NatMapping, JUMP_SLOTS,
        MAX_SNAT_ADDRS, MAX_TX_PORTS,
    };
    const fn sz<T>() -> u32 {
        size_of::<T>() as u32
    }
    let svc = opts.max_services;
    let m = layout;
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
        // A flow's family's table holds it: each holds the configured size.
        m(names::CONNS4, sz::<FlowKey4>(), &[size_of::<ConnEntry>() as u32], opts.conn_table_size),
        m(names::CONNS, sz::<FlowKey>(), &[size_of::<ConnEntry>() as u32], opts.conn_table_size),
        m(names::NEW_CONNS4, sz::<FlowKey4>(), &[size_of::<ConnEntry>() as u32], opts.new_flow_table_size),
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
        m(names::SYN_FLOOD, 4, &[8], 1),
        m(names::PROXIED_NEXT, 4, &[size_of::<veer_abi::ProxiedSyn>() as u32], 1),
        m(names::SHIFTED, 4, &[4], 1),
        m(names::JUMPS, 4, &[4], JUMP_SLOTS),
        m(names::SUSPECTS, 4, &[8], opts.max_backends),
        // A ring buffer has no keys or values; its size is in bytes.
        m(names::PASSIVE_EVENTS, 0, &[0], veer_abi::PASSIVE_EVENTS_BYTES),
        m(names::NAT_SYNC, 0, &[0], veer_abi::NAT_SYNC_BYTES),
        m(names::SYN_STASH, sz::<FlowKey>(), &[size_of::<veer_abi::SynStash>() as u32], opts.new_flow_table_size),
        m(
            names::PENDING_SYNS,
            sz::<FlowKey>(),
            &[size_of::<veer_abi::PendingSyn>() as u32],
            veer_abi::PENDING_SYNS_SIZE,
        ),
        m(names::PASSIVE_STATS, 4, &[size_of::<veer_abi::PassiveCounters>() as u32], opts.max_backends),
        m(names::TUNNEL_SOURCES, 16, &[4], veer_abi::MAX_TUNNEL_SOURCES),
        m(names::TUNNEL_CONFIG, 4, &[size_of::<veer_abi::TunnelConfig>() as u32], 1),
    ]
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
