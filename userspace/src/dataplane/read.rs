//! Reading the dataplane's maps: one set of readers for a loaded
//! [`Dataplane`](super::Dataplane) and for [`PinnedMaps`] (the pins alone,
//! which is how `veerctl` inspects a running system even with veerd stopped).

use std::{collections::HashMap as StdHashMap, path::Path};

use aya::maps::{Array, HashMap, Map, MapData, PerCpuArray};
use veer_abi::{
    names, Backend, ConnEntry, Counters, FlowKey, FlowKey4, GlobalCounter, Service, ServiceKey, MAX_RING_SIZE,
};

use super::{
    conn_table::{ConnTable, FamilyMaps},
    display_service, syscall, DataplaneError, Result,
};

macro_rules! typed {
    ($self:expr, $kind:ident, $name:expr) => {
        $kind::try_from($self.map($name)?).map_err(DataplaneError::map($name, "opening"))?
    };
}

/// Read access to the maps, by name.
pub trait MapReader {
    /// The map called `name`.
    fn map(&self, name: &'static str) -> Result<&Map>;

    /// The service value for `key`, if any.
    fn service(&self, key: &ServiceKey) -> Result<Option<Service>> {
        let m: HashMap<&MapData, ServiceKey, Service> = typed!(self, HashMap, names::SERVICES);
        match m.get(key, 0) {
            Ok(s) => Ok(Some(s)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(DataplaneError::map(names::SERVICES, "reading")(e)),
        }
    }

    /// Every service.
    fn services(&self) -> Result<Vec<(ServiceKey, Service)>> {
        let m: HashMap<&MapData, ServiceKey, Service> = typed!(self, HashMap, names::SERVICES);
        m.iter().collect::<Result<_, _>>().map_err(DataplaneError::map(names::SERVICES, "listing"))
    }

    /// Backend `id` as the dataplane sees it.
    fn backend(&self, id: u32) -> Result<Backend> {
        let m: Array<&MapData, Backend> = typed!(self, Array, names::BACKENDS);
        m.get(&id, 0).map_err(DataplaneError::map(names::BACKENDS, format!("reading backend {id}")))
    }

    /// Service `id`'s persistence in seconds (0: off).
    fn persistence(&self, id: u32) -> Result<u32> {
        let m: Array<&MapData, u32> = typed!(self, Array, names::PERSISTENCE);
        m.get(&id, 0).map_err(DataplaneError::map(names::PERSISTENCE, format!("reading service {id}")))
    }

    /// NAT's settings as the dataplane runs them: the SNAT port range (0
    /// while no service uses NAT) and the SYN-cookie settings.
    fn nat_config(&self) -> Result<veer_abi::NatConfig> {
        let m: Array<&MapData, veer_abi::NatConfig> = typed!(self, Array, names::NAT_CONFIG);
        m.get(&0, 0).map_err(DataplaneError::map(names::NAT_CONFIG, "reading"))
    }

    /// Backend `id`'s established flows as the dataplane counts them (see
    /// [`veer_abi::ActiveFlows`]).
    fn active_flows(&self, id: u32) -> Result<u64> {
        let m: Array<&MapData, veer_abi::ActiveFlows> = typed!(self, Array, names::ACTIVE_FLOWS);
        let a = m.get(&id, 0).map_err(DataplaneError::map(names::ACTIVE_FLOWS, format!("reading backend {id}")))?;
        Ok(a.active(monotonic_ns() / veer_abi::ACTIVE_EPOCH_NS))
    }

    /// Every backend entry in use (address not all zero), by id.
    fn backend_table(&self) -> Result<Vec<(u32, Backend)>> {
        let m: Array<&MapData, Backend> = typed!(self, Array, names::BACKENDS);
        let mut out = Vec::new();
        for id in 0..m.len() {
            let b = m.get(&id, 0).map_err(DataplaneError::map(names::BACKENDS, format!("reading backend {id}")))?;
            if b.addr != [0; 16] {
                out.push((id, b));
            }
        }
        Ok(out)
    }

    /// The live ring of a service.
    fn ring(&self, key: &ServiceKey) -> Result<Vec<u32>> {
        let svc = self.service(key)?.ok_or_else(|| DataplaneError::UnknownService(display_service(key)))?;
        let Map::Array(data) = self.map(names::RINGS)? else {
            return Err(DataplaneError::Missing { kind: "map", name: names::RINGS });
        };
        // Read straight into the heap: a ring is 256 KiB.
        let mut ring = vec![0u32; MAX_RING_SIZE];
        syscall::lookup_into(data.fd(), svc.id * 2 + (svc.ring_half & 1) as u32, &mut ring).map_err(|e| {
            DataplaneError::map(names::RINGS, "reading")(aya::maps::MapError::SyscallError(aya::sys::SyscallError {
                call: "bpf_map_lookup_elem",
                io_error: e,
            }))
        })?;
        ring.truncate((svc.ring_len as usize).min(MAX_RING_SIZE));
        Ok(ring)
    }

    /// Counters of service `id`, summed over CPUs.
    fn service_counters(&self, id: u32) -> Result<Counters> {
        sum_counters(self, names::SERVICE_STATS, id)
    }

    /// Counters of backend `id`, summed over CPUs.
    fn backend_counters(&self, id: u32) -> Result<Counters> {
        sum_counters(self, names::BACKEND_STATS, id)
    }

    /// Every global counter, summed over CPUs.
    fn global_counters(&self) -> Result<Vec<(GlobalCounter, u64)>> {
        let m: PerCpuArray<&MapData, u64> = typed!(self, PerCpuArray, names::GLOBAL_STATS);
        GlobalCounter::ALL
            .iter()
            .map(|&c| {
                let v = m.get(&(c as u32), 0).map_err(DataplaneError::map(names::GLOBAL_STATS, "reading"))?;
                Ok((c, v.iter().sum()))
            })
            .collect()
    }

    /// Until when (`CLOCK_MONOTONIC` ns) the dataplane holds backend `id`
    /// suspect; 0 when it never has. Compare with [`monotonic_ns`](super::monotonic_ns).
    fn suspect_until(&self, id: u32) -> Result<u64> {
        let m: Array<&MapData, u64> = typed!(self, Array, names::SUSPECTS);
        m.get(&id, 0).map_err(DataplaneError::map(names::SUSPECTS, format!("reading backend {id}")))
    }

    /// Passive signals against backend `id` and connections moved off it,
    /// summed over CPUs.
    fn passive_counters(&self, id: u32) -> Result<veer_abi::PassiveCounters> {
        let m: PerCpuArray<&MapData, veer_abi::PassiveCounters> = typed!(self, PerCpuArray, names::PASSIVE_STATS);
        let v = m.get(&id, 0).map_err(DataplaneError::map(names::PASSIVE_STATS, format!("reading backend {id}")))?;
        Ok(v.iter().fold(veer_abi::PassiveCounters::default(), |a, c| veer_abi::PassiveCounters {
            syn_retransmit: a.syn_retransmit + c.syn_retransmit,
            refused: a.refused + c.refused,
            bounced: a.bounced + c.bounced,
            unreachable: a.unreachable + c.unreachable,
            redispatched: a.redispatched + c.redispatched,
        }))
    }

    /// Whether the dataplane holds backend `id` suspect now.
    fn is_suspect(&self, id: u32) -> Result<bool> {
        Ok(self.suspect_until(id)? > super::monotonic_ns())
    }

    /// One global counter, summed over CPUs.
    fn global_counter(&self, c: GlobalCounter) -> Result<u64> {
        Ok(self.global_counters()?.into_iter().find(|(k, _)| *k == c).map_or(0, |(_, v)| v))
    }

    /// The connection table, both families.
    fn flows(&self) -> Result<Vec<(FlowKey, ConnEntry)>> {
        Ok(family_maps(self, ConnTable::Established)?.entries())
    }

    /// The SNAT addresses, by index.
    fn snat_addrs(&self) -> Result<Vec<std::net::IpAddr>> {
        let m: Array<&MapData, [u8; 16]> = typed!(self, Array, names::SNAT_ADDRS);
        (0..m.len())
            .map(|i| {
                m.get(&i, 0).map(|a| super::from_abi(&a)).map_err(DataplaneError::map(names::SNAT_ADDRS, "reading"))
            })
            .collect()
    }

    /// Every NAT mapping, by its return tuple.
    fn nat_mappings(&self) -> Result<Vec<(veer_abi::NatKey, veer_abi::NatMapping)>> {
        let m: HashMap<&MapData, veer_abi::NatKey, veer_abi::NatMapping> = typed!(self, HashMap, names::NAT_REV);
        Ok(m.iter().filter_map(|r| r.ok()).collect())
    }

    /// How full the connection tables are (walks them: one syscall per entry).
    fn table_usage(&self) -> Result<TableUsage> {
        let (conns_v4, conns_capacity) = table_entries::<FlowKey4, _>(self, names::CONNS4)?;
        let (conns_v6, _) = table_entries::<FlowKey, _>(self, names::CONNS)?;
        let (new_flows_v4, new_flows_capacity) = table_entries::<FlowKey4, _>(self, names::NEW_CONNS4)?;
        let (new_flows_v6, _) = table_entries::<FlowKey, _>(self, names::NEW_CONNS)?;
        let (conns, new_flows) = (conns_v4 + conns_v6, new_flows_v4 + new_flows_v6);
        let (nat_mappings, nat_capacity) = {
            let data = match self.map(names::NAT_REV)? {
                Map::HashMap(d) => d,
                _ => return Err(DataplaneError::Missing { kind: "hash map", name: names::NAT_REV }),
            };
            let capacity = data.info().map_err(DataplaneError::map(names::NAT_REV, "inspecting"))?.max_entries();
            let m: HashMap<&MapData, veer_abi::NatKey, veer_abi::NatMapping> = typed!(self, HashMap, names::NAT_REV);
            (m.keys().filter(|k| k.is_ok()).count() as u64, capacity)
        };
        let g = self.global_counters()?;
        let get = |c: GlobalCounter| g.iter().find(|(k, _)| *k == c).map_or(0, |(_, v)| *v);
        Ok(TableUsage {
            conns,
            conns_v4,
            conns_v6,
            conns_capacity,
            nat_mappings,
            nat_capacity,
            new_flows,
            new_flows_v4,
            new_flows_v6,
            new_flows_capacity,
            possible_cpus: super::possible_cpus().unwrap_or(1),
            // Entries leave CONNS only by LRU eviction or a SYN reusing their
            // 5-tuple (counted): whatever else was inserted and is gone was evicted.
            conns_evicted: get(GlobalCounter::ConnInserted)
                .saturating_sub(get(GlobalCounter::ConnReused))
                .saturating_sub(conns),
        })
    }

    /// The connection-table entry of one flow.
    fn flow(&self, key: &FlowKey) -> Result<Option<ConnEntry>> {
        flow_in(self, ConnTable::Established, key)
    }

    /// The new-flow-table entry of one flow (seen once so far).
    fn new_flow(&self, key: &FlowKey) -> Result<Option<ConnEntry>> {
        flow_in(self, ConnTable::New, key)
    }
}

/// Occupancy of the connection tables.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TableUsage {
    /// Entries in the connection table (both families).
    pub conns: u64,
    /// Of which IPv4 flows.
    pub conns_v4: u64,
    /// Of which IPv6 flows.
    pub conns_v6: u64,
    /// Each family's capacity as the kernel sized it.
    pub conns_capacity: u32,
    /// Entries in the new-flow table (both families).
    pub new_flows: u64,
    /// Of which IPv4 flows.
    pub new_flows_v4: u64,
    /// Of which IPv6 flows.
    pub new_flows_v6: u64,
    /// Each family's capacity as the kernel sized it.
    pub new_flows_capacity: u32,
    /// Possible CPUs: each has an LRU list of `capacity / possible_cpus`
    /// entries and evicts from it when a flow first seen there needs room.
    pub possible_cpus: u32,
    /// Connection-table entries evicted since the table was created.
    pub conns_evicted: u64,
    /// NAT mappings live.
    pub nat_mappings: u64,
    /// NAT mappings the table holds.
    pub nat_capacity: u32,
}

/// One connection table's entries and capacity.
fn table_entries<K: aya::Pod, R: MapReader + ?Sized>(r: &R, name: &'static str) -> Result<(u64, u32)> {
    let data = match r.map(name)? {
        Map::LruHashMap(d) | Map::HashMap(d) => d,
        _ => return Err(DataplaneError::Missing { kind: "LRU hash map", name }),
    };
    let capacity = data.info().map_err(DataplaneError::map(name, "inspecting"))?.max_entries();
    let m: HashMap<&MapData, K, ConnEntry> = typed!(r, HashMap, name);
    Ok((m.keys().filter(|k| k.is_ok()).count() as u64, capacity))
}

/// `key`'s entry in the connection table `table` (its family's map).
fn flow_in<R: MapReader + ?Sized>(r: &R, table: ConnTable, key: &FlowKey) -> Result<Option<ConnEntry>> {
    family_maps(r, table)?.get(key).map_err(DataplaneError::map(table.map_name(key), "reading"))
}

/// Connection table `table`'s two maps.
fn family_maps<R: MapReader + ?Sized>(r: &R, table: ConnTable) -> Result<FamilyMaps<&MapData>> {
    let [n4, n6] = table.map_names();
    Ok(FamilyMaps { v4: typed!(r, HashMap, n4), v6: typed!(r, HashMap, n6) })
}

fn sum_counters<R: MapReader + ?Sized>(r: &R, name: &'static str, id: u32) -> Result<Counters> {
    let m: PerCpuArray<&MapData, Counters> = typed!(r, PerCpuArray, name);
    let v = m.get(&id, 0).map_err(DataplaneError::map(name, format!("reading counters of {id}")))?;
    Ok(v.iter().fold(Counters::default(), |a, c| Counters {
        packets: a.packets + c.packets,
        bytes: a.bytes + c.bytes,
        new_flows: a.new_flows + c.new_flows,
    }))
}

/// The maps of a pinned dataplane, opened read-only from bpffs.
pub struct PinnedMaps {
    maps: StdHashMap<&'static str, Map>,
}

impl PinnedMaps {
    /// Opens every map pinned in `dir` (a daemon's versioned pin directory).
    pub fn open(dir: &Path) -> Result<Self> {
        let mut maps = StdHashMap::new();
        // Names only: the sizes are the pins' own.
        for name in super::map_layout(&super::DataplaneOptions::default()).into_iter().map(|m| m.name) {
            let data = MapData::from_pin(dir.join(name))
                .map_err(DataplaneError::map(name, format!("opening the pin in {}", dir.display())))?;
            let map = Map::from_map_data(data).map_err(DataplaneError::map(name, "identifying"))?;
            maps.insert(name, map);
        }
        Ok(Self { maps })
    }
}

impl MapReader for PinnedMaps {
    fn map(&self, name: &'static str) -> Result<&Map> {
        self.maps.get(name).ok_or(DataplaneError::Missing { kind: "map", name })
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds: the clock of `ConnEntry::last_seen_ns`.
pub fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map_or(0, |t| (t.tv_sec() as u64).saturating_mul(1_000_000_000).saturating_add(t.tv_nsec() as u64))
}

/// Whether a connection-table entry is an active flow: not closing (no FIN or
/// RST seen) and seen within `idle`.
pub fn is_active(e: &ConnEntry, now_ns: u64, idle: std::time::Duration) -> bool {
    e.flags & veer_abi::CONN_F_CLOSING == 0 && now_ns.saturating_sub(e.last_seen_ns) <= idle.as_nanos() as u64
}

/// Active flows per backend id.
pub fn active_per_backend(flows: &[(FlowKey, ConnEntry)], idle: std::time::Duration) -> StdHashMap<u32, usize> {
    let now = monotonic_ns();
    let mut m = StdHashMap::new();
    for (_, e) in flows.iter().filter(|(_, e)| is_active(e, now, idle)) {
        *m.entry(e.backend).or_insert(0) += 1;
    }
    m
}
