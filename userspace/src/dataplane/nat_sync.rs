//! A fleet's NAT flows on the dataplane's side: the flows this node just
//! promoted (`NAT_SYNC`, a ring buffer), each with what another node needs
//! to carry it on ([`NatFlow`]: its backend's address and port, its SNAT
//! endpoint, its return mapping); and the copies other nodes send, written
//! into this node's tables ([`NatSyncWriter`]).

use std::{os::fd::AsRawFd, path::Path};

use aya::maps::{Array, HashMap, Map, MapData, RingBuf};
use tokio::io::unix::AsyncFd;
use veer_abi::{names, Backend, ConnEntry, FlowKey, NatKey, NatMapping, NatSyncEvent, CONN_F_COUNTED};

use super::{
    conn_table::{ConnTable, PinnedConnTable},
    pinned::pinned_hash,
    DataplaneError, Result,
};

/// A NAT flow as the fleet shares it: no node-local ids (backends and
/// services are numbered per node), addresses instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NatFlow {
    /// The flow as the client sent it (client -> VIP: the VIP names its service).
    pub key: FlowKey,
    /// Its backend's address.
    pub backend: [u8; 16],
    /// The port it reaches the backend on.
    pub backend_port: u16,
    /// Its SNAT address (the node that mapped it owns it).
    pub snat: [u8; 16],
    /// Its SNAT port.
    pub snat_port: u16,
    /// Its connection-table flags (`CONN_F_*`).
    pub conn_flags: u32,
    /// Its timestamp shift (with `CONN_F_TS`).
    pub ts_off: u32,
    /// How long ago its owner last saw a packet of it (ms; 0 when just
    /// promoted): the copy ages from there.
    pub idle_ms: u32,
    /// Its return mapping (ids and the proxy's send time left at zero).
    pub mapping: NatMapping,
}

impl NatFlow {
    /// Its return mapping's key.
    pub fn return_key(&self) -> NatKey {
        NatKey {
            backend: self.backend,
            snat: self.snat,
            backend_port: self.backend_port,
            snat_port: self.snat_port,
            proto: self.key.proto,
            _pad: [0; 3],
        }
    }
}

fn array<V: aya::Pod>(dir: &Path, name: &'static str) -> Result<Array<MapData, V>> {
    let data = MapData::from_pin(dir.join(name)).map_err(DataplaneError::map(name, "opening the pin"))?;
    let map = Map::from_map_data(data).map_err(DataplaneError::map(name, "identifying"))?;
    Array::try_from(map).map_err(DataplaneError::map(name, "typing"))
}

/// The reader of `NAT_SYNC`, with the tables that complete each record.
pub struct NatSyncEvents {
    ring: RingBuf<MapData>,
    conns: PinnedConnTable,
    backends: Array<MapData, Backend>,
    snat: Array<MapData, [u8; 16]>,
    rev: HashMap<MapData, NatKey, NatMapping>,
}

impl NatSyncEvents {
    /// Opens the ring buffer and tables pinned in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        let data = MapData::from_pin(dir.join(names::NAT_SYNC))
            .map_err(DataplaneError::map(names::NAT_SYNC, "opening the pin"))?;
        let ring = RingBuf::try_from(Map::RingBuf(data)).map_err(DataplaneError::map(names::NAT_SYNC, "opening"))?;
        Ok(Self {
            ring,
            conns: PinnedConnTable::open(dir, ConnTable::Established)?,
            backends: array(dir, names::BACKENDS)?,
            snat: array(dir, names::SNAT_ADDRS)?,
            rev: pinned_hash(dir, names::NAT_REV)?,
        })
    }

    /// Waits for flows and returns them (on tokio).
    pub async fn next_batch(fd: &mut AsyncFd<Self>) -> std::io::Result<Vec<NatFlow>> {
        super::ring_reader::next_batch(fd).await
    }
}

impl super::ring_reader::Drain for NatSyncEvents {
    type Item = NatFlow;

    /// Every flow waiting now, completed (a flow whose mapping is already
    /// gone is skipped).
    fn drain(&mut self) -> Vec<NatFlow> {
        let mut events = Vec::new();
        while let Some(item) = self.ring.next() {
            if item.len() >= size_of::<NatSyncEvent>() {
                // SAFETY: the length is checked; NatSyncEvent is plain data of any bit pattern.
                events.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<NatSyncEvent>()) });
            }
        }
        events.iter().filter_map(|e| self.complete(e, 0)).collect()
    }
}

impl NatSyncEvents {
    /// Every established flow of this node's, on one of the SNAT addresses
    /// `own`, as of `now_ns` (the owner's periodic refresh: a copy's age
    /// follows its flow's, and a closed flow's copy learns it closed).
    pub fn own_flows(&self, own: &[[u8; 16]], now_ns: u64) -> Vec<NatFlow> {
        self.conns
            .entries()
            .into_iter()
            .filter(|(_, e)| e.nat_port != 0)
            .filter(|(_, e)| self.snat.get(&(e.nat_addr as u32), 0).is_ok_and(|a| own.contains(&a)))
            .filter_map(|(key, entry)| {
                let idle = (now_ns.saturating_sub(entry.last_seen_ns) / 1_000_000).min(u32::MAX as u64) as u32;
                self.complete(&NatSyncEvent { key, entry }, idle)
            })
            .collect()
    }

    fn complete(&self, e: &NatSyncEvent, idle_ms: u32) -> Option<NatFlow> {
        let b = self.backends.get(&e.entry.backend, 0).ok()?;
        let snat = self.snat.get(&(e.entry.nat_addr as u32), 0).ok()?;
        let backend_port = if b.port != 0 { b.port } else { e.key.dport };
        let mut f = NatFlow {
            key: e.key,
            backend: b.addr,
            backend_port,
            snat,
            snat_port: e.entry.nat_port,
            conn_flags: e.entry.flags,
            ts_off: e.entry.ts_off,
            idle_ms,
            mapping: NatMapping::new(e.key, 0, 0),
        };
        let m = self.rev.get(&f.return_key(), 0).ok().filter(|m| m.flow == e.key)?;
        f.mapping = NatMapping { backend: 0, service: 0, syn_sent_ns: 0, ..m };
        Some(f)
    }
}

impl AsRawFd for NatSyncEvents {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.ring.as_raw_fd()
    }
}

/// Writes other nodes' flows into this node's tables.
pub struct NatSyncWriter {
    conns: PinnedConnTable,
    rev: HashMap<MapData, NatKey, NatMapping>,
}

/// What became of a flow given to [`NatSyncWriter::insert`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inserted {
    /// Its copy is in the tables.
    New,
    /// This node carries the client's flow itself: left alone.
    Known,
}

impl NatSyncWriter {
    /// Opens the tables pinned in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        Ok(Self { conns: PinnedConnTable::open(dir, ConnTable::Established)?, rev: pinned_hash(dir, names::NAT_REV)? })
    }

    /// Writes flow `f` as this node numbers things (`service`, `backend`,
    /// `snat_index` in `SNAT_ADDRS`), last seen at `now_ns`: its return
    /// mapping, then its connection-table entry. A flow this node carries
    /// from a SNAT address of its own is left alone; an older copy is
    /// replaced: the owner reused the port (or the client its own), and
    /// the latest word from the owner is the truth.
    pub fn insert(
        &mut self,
        f: &NatFlow,
        service: u32,
        backend: u32,
        snat_index: u16,
        now_ns: u64,
    ) -> Result<Inserted> {
        if self.conns.get(&f.key).is_some_and(|e| e.nat_port == 0 || e.nat_addr != snat_index) {
            return Ok(Inserted::Known);
        }
        let rk = f.return_key();
        // The return key names the owner's address: what is there is an
        // older copy; its flow's entry goes with it.
        if let Ok(old) = self.rev.get(&rk, 0) {
            if old.flow != f.key
                && self.conns.get(&old.flow).is_some_and(|e| e.nat_addr == snat_index && e.nat_port == f.snat_port)
            {
                self.conns.remove(&old.flow);
            }
        }
        let mapping = NatMapping { backend, service, ..f.mapping };
        self.rev.insert(rk, mapping, 0).map_err(DataplaneError::map(names::NAT_REV, "writing a fleet node's flow"))?;
        let entry = ConnEntry {
            backend,
            service,
            last_seen_ns: now_ns.saturating_sub(f.idle_ms as u64 * 1_000_000),
            // Not counted among this node's active flows until it carries it.
            flags: f.conn_flags & !CONN_F_COUNTED,
            nat_port: f.snat_port,
            nat_addr: snat_index,
            ts_off: f.ts_off,
            _pad: 0,
        };
        self.conns.insert(&f.key, entry, "writing a fleet node's flow")?;
        Ok(Inserted::New)
    }
}
