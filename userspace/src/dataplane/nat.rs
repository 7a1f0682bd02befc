//! NAT mappings over time: a mapping lives while its flow does. The
//! dataplane creates a mapping with the flow's first packet; this removes
//! the mappings (and connection entries) of flows that ended or went idle,
//! so that their SNAT ports can be used again.

use std::{path::Path, time::Duration};

use aya::maps::{HashMap, Map, MapData};
use veer_abi::{names, ConnEntry, NatKey, NatMapping, CONN_F_CLOSING, IPPROTO_TCP};

use super::{
    conn_table::{ConnTable, PinnedConnTable},
    pinned::pinned_hash,
    DataplaneError, Result,
};

/// How long a NAT flow may stay idle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NatTimeouts {
    /// An established TCP flow.
    pub tcp: Duration,
    /// A TCP flow after FIN or RST. As long as TIME_WAIT: the backend may
    /// hold the old connection's 4-tuple that long, and a new SYN reusing it
    /// can be refused (PAWS).
    pub tcp_closing: Duration,
    /// A TCP flow whose client sent nothing after its SYN.
    pub tcp_half_open: Duration,
    /// A UDP flow.
    pub udp: Duration,
}

impl Default for NatTimeouts {
    fn default() -> Self {
        Self {
            tcp: Duration::from_secs(900),
            tcp_closing: Duration::from_secs(60),
            tcp_half_open: Duration::from_secs(60),
            udp: Duration::from_secs(120),
        }
    }
}

impl NatTimeouts {
    /// While SYNs are answered with cookies (a flood): half-open flows go
    /// after 3 s. The SYNs a CPU mapped before it switched to cookies are
    /// then mostly spoofed, and a real client whose handshake stalled
    /// resends its SYN (after 1 s, then 3 s) and is mapped again.
    pub fn under_syn_flood() -> Self {
        Self { tcp_half_open: Duration::from_secs(3), ..Self::default() }
    }
}

/// Where a mapping's flow stands in the connection tables.
#[derive(Clone, Copy, Debug)]
pub enum FlowState {
    /// In the connection table.
    Established(ConnEntry),
    /// Only in the new-flow table (one packet seen).
    New(ConnEntry),
    /// In neither.
    Gone,
}

/// Whether the flow's table `entry` holds mapping `m` (keyed by `k`);
/// `addrs` is `SNAT_ADDRS`. The SNAT address counts, not only the port: with
/// several addresses, one port is in use on each.
pub fn holds(entry: &ConnEntry, k: &NatKey, m: &NatMapping, addrs: &[[u8; 16]]) -> bool {
    entry.nat_port == k.snat_port
        && entry.backend == m.backend
        && addrs.get(entry.nat_addr as usize).is_some_and(|a| *a == k.snat)
}

/// Whether mapping `m` (keyed by `k`) has expired at `now_ns`.
pub fn expired(k: &NatKey, m: &NatMapping, state: FlowState, addrs: &[[u8; 16]], now_ns: u64, t: &NatTimeouts) -> bool {
    let (entry, promoted) = match state {
        FlowState::Gone => return true,
        FlowState::Established(e) => (e, true),
        FlowState::New(e) => (e, false),
    };
    // The table entry now belongs to another mapping (the flow moved).
    if !holds(&entry, k, m, addrs) {
        return true;
    }
    let idle = Duration::from_nanos(now_ns.saturating_sub(entry.last_seen_ns));
    let limit = match (k.proto == IPPROTO_TCP, promoted, entry.flags & CONN_F_CLOSING != 0) {
        (true, true, false) => t.tcp,
        (true, false, false) => t.tcp_half_open,
        (true, ..) => t.tcp_closing,
        (false, ..) => t.udp,
    };
    idle > limit
}

/// What one expiry pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Expiry {
    /// Mappings kept.
    pub kept: usize,
    /// Mappings removed.
    pub removed: usize,
    /// Of those kept, TCP flows whose client has not completed its handshake.
    pub half_open: usize,
}

/// `SNAT_ADDRS` of the pinned dataplane in `dir`, by index.
fn snat_addrs(dir: &Path) -> Result<Vec<[u8; 16]>> {
    let data = MapData::from_pin(dir.join(names::SNAT_ADDRS))
        .map_err(DataplaneError::map(names::SNAT_ADDRS, "opening the pin"))?;
    let map = Map::from_map_data(data).map_err(DataplaneError::map(names::SNAT_ADDRS, "identifying"))?;
    let a: aya::maps::Array<MapData, [u8; 16]> =
        aya::maps::Array::try_from(map).map_err(DataplaneError::map(names::SNAT_ADDRS, "typing"))?;
    (0..a.len()).map(|i| a.get(&i, 0).map_err(DataplaneError::map(names::SNAT_ADDRS, "reading"))).collect()
}

/// Makes every CPU of the pinned dataplane in `dir` answer NAT SYNs with
/// cookies until `until_ns` (monotonic), in `"auto"` mode.
pub fn declare_syn_flood(dir: &Path, until_ns: u64) -> Result<()> {
    let data = MapData::from_pin(dir.join(names::SYN_FLOOD))
        .map_err(DataplaneError::map(names::SYN_FLOOD, "opening the pin"))?;
    let map = Map::from_map_data(data).map_err(DataplaneError::map(names::SYN_FLOOD, "identifying"))?;
    let mut a: aya::maps::Array<MapData, u64> =
        aya::maps::Array::try_from(map).map_err(DataplaneError::map(names::SYN_FLOOD, "typing"))?;
    a.set(0, until_ns, 0).map_err(DataplaneError::map(names::SYN_FLOOD, "writing"))
}

/// Removes the mappings of the pinned dataplane in `dir` whose flows ended
/// or idled out, with their connection-table entries.
pub fn expire(dir: &Path, now_ns: u64, t: &NatTimeouts) -> Result<Expiry> {
    let mut rev: HashMap<MapData, NatKey, NatMapping> = pinned_hash(dir, names::NAT_REV)?;
    let mut conns = PinnedConnTable::open(dir, ConnTable::Established)?;
    let mut fresh = PinnedConnTable::open(dir, ConnTable::New)?;
    let all: Vec<(NatKey, NatMapping)> = rev.iter().filter_map(|r| r.ok()).collect();
    let addrs = snat_addrs(dir)?;
    let mut out = Expiry::default();
    for (k, m) in all {
        let state = match conns.get(&m.flow) {
            Some(e) => FlowState::Established(e),
            None => fresh.get(&m.flow).map_or(FlowState::Gone, FlowState::New),
        };
        if !expired(&k, &m, state, &addrs, now_ns, t) {
            out.kept += 1;
            if k.proto == IPPROTO_TCP && matches!(state, FlowState::New(e) if e.flags & CONN_F_CLOSING == 0) {
                out.half_open += 1;
            }
            continue;
        }
        // Read again: since the snapshot, the dataplane may have given the
        // endpoint to a new flow (a closed flow's port taken over), whose
        // mapping this one must not remove.
        if rev.get(&k, 0).is_ok_and(|now| now.flow != m.flow) {
            out.kept += 1;
            continue;
        }
        let _ = rev.remove(&k);
        // The flow's entry too, unless it already holds another mapping.
        if let FlowState::Established(e) | FlowState::New(e) = state {
            if holds(&e, &k, &m, &addrs) {
                let _ = conns.remove(&m.flow);
                let _ = fresh.remove(&m.flow);
            }
        }
        out.removed += 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use veer_abi::FlowKey;

    fn key(proto: u8, port: u16) -> NatKey {
        NatKey { backend: [1; 16], snat: [2; 16], backend_port: 80, snat_port: port, proto, _pad: [0; 3] }
    }

    fn mapping() -> NatMapping {
        let flow = FlowKey { src: [3; 16], dst: [4; 16], sport: 5000, dport: 80, proto: IPPROTO_TCP, _pad: [0; 3] };
        NatMapping::new(flow, 7, 1)
    }

    fn entry(port: u16, last_seen_s: u64, flags: u32) -> ConnEntry {
        ConnEntry {
            backend: 7,
            service: 1,
            last_seen_ns: last_seen_s * 1_000_000_000,
            flags,
            nat_port: port,
            nat_addr: 0,
            ts_off: 0,
            _pad: 0,
        }
    }

    const S: u64 = 1_000_000_000;
    /// `SNAT_ADDRS`: the keys' address at index 0.
    const ADDRS: [[u8; 16]; 2] = [[2; 16], [9; 16]];

    fn expired(k: &NatKey, m: &NatMapping, state: FlowState, now_ns: u64, t: &NatTimeouts) -> bool {
        super::expired(k, m, state, &ADDRS, now_ns, t)
    }

    #[test]
    fn the_same_port_on_another_snat_address_is_another_mapping() {
        let t = NatTimeouts::default();
        let (k, m) = (key(IPPROTO_TCP, 20000), mapping());
        let other_address = ConnEntry { nat_addr: 1, ..entry(20000, 100, 0) };
        assert!(
            expired(&k, &m, FlowState::Established(other_address), 100 * S, &t),
            "the flow holds port 20000 on address 1"
        );
        assert!(!super::holds(&other_address, &k, &m, &ADDRS));
        assert!(super::holds(&entry(20000, 100, 0), &k, &m, &ADDRS));
    }

    #[test]
    fn a_mapping_lives_as_long_as_its_flow() {
        let t = NatTimeouts::default();
        let (k, m) = (key(IPPROTO_TCP, 20000), mapping());
        assert!(expired(&k, &m, FlowState::Gone, 0, &t), "no flow, no mapping");
        let live = FlowState::Established(entry(20000, 100, 0));
        assert!(!expired(&k, &m, live, 200 * S, &t), "an established flow idle 100 s stays");
        assert!(expired(&k, &m, live, 1100 * S, &t), "idle over 900 s goes");
        let closing = FlowState::Established(entry(20000, 100, CONN_F_CLOSING));
        assert!(!expired(&k, &m, closing, 150 * S, &t), "after FIN, kept for TIME_WAIT");
        assert!(expired(&k, &m, closing, 161 * S, &t), "after FIN, 60 s");
        let syn_only = FlowState::New(entry(20000, 100, 0));
        assert!(!expired(&k, &m, syn_only, 150 * S, &t));
        assert!(expired(&k, &m, syn_only, 161 * S, &t), "a SYN never answered, 60 s");
        let flood = NatTimeouts::under_syn_flood();
        assert!(!expired(&k, &m, syn_only, 102 * S, &flood));
        assert!(expired(&k, &m, syn_only, 104 * S, &flood), "under a SYN flood, a half-open flow 3 s");
        assert!(!expired(&k, &m, live, 200 * S, &flood), "established flows are not touched");
        let moved = FlowState::Established(entry(20001, 100, 0));
        assert!(expired(&k, &m, moved, 100 * S, &t), "the flow holds another mapping now");
        let udp = key(17, 20000);
        assert!(!expired(&udp, &m, FlowState::Established(entry(20000, 100, 0)), 200 * S, &t));
        assert!(expired(&udp, &m, FlowState::Established(entry(20000, 100, 0)), 221 * S, &t), "UDP, 120 s");
    }
}
