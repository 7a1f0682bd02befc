//! The connection tables as userspace sees them: each one a pair of maps,
//! IPv4 flows keyed by [`FlowKey4`] (16 bytes: the kernel hashes every
//! byte of a key on each lookup), IPv6 flows by [`FlowKey`]. Callers name
//! flows by their full [`FlowKey`] and the family's map is chosen here.

use std::{borrow::Borrow, path::Path};

use aya::maps::{HashMap, MapData, MapError};
use veer_abi::{names, ConnEntry, FlowKey, FlowKey4};

use super::{pinned::pinned_hash, DataplaneError, Result};

/// The two connection tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnTable {
    /// Flows that have shown more than one packet.
    Established,
    /// Flows seen once.
    New,
}

impl ConnTable {
    /// The name of the IPv4 map and of the IPv6 map.
    pub fn map_names(self) -> [&'static str; 2] {
        match self {
            Self::Established => [names::CONNS4, names::CONNS],
            Self::New => [names::NEW_CONNS4, names::NEW_CONNS],
        }
    }

    /// The name of the map that holds (or would hold) `key`'s flow.
    pub fn map_name(self, key: &FlowKey) -> &'static str {
        self.map_names()[usize::from(!key.is_v4())]
    }
}

/// A connection table's two maps, owned (from their pins) or borrowed
/// (from a loaded dataplane).
pub(super) struct FamilyMaps<T> {
    /// IPv4 flows.
    pub v4: HashMap<T, FlowKey4, ConnEntry>,
    /// IPv6 flows.
    pub v6: HashMap<T, FlowKey, ConnEntry>,
}

impl<T: Borrow<MapData>> FamilyMaps<T> {
    /// `key`'s entry in its family's map; `Ok(None)` if it has none.
    pub fn get(&self, key: &FlowKey) -> std::result::Result<Option<ConnEntry>, MapError> {
        let got = match key.v4_key() {
            Some(k) => self.v4.get(&k, 0),
            None => self.v6.get(key, 0),
        };
        match got {
            Ok(e) => Ok(Some(e)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every entry, both families, under full keys (entries evicted during
    /// the walk are skipped).
    pub fn entries(&self) -> Vec<(FlowKey, ConnEntry)> {
        let v4 = self.v4.iter().filter_map(|r| r.ok()).map(|(k, e)| (k.flow(), e));
        v4.chain(self.v6.iter().filter_map(|r| r.ok())).collect()
    }
}

/// A connection table's maps, opened from their pins.
pub struct PinnedConnTable {
    table: ConnTable,
    maps: FamilyMaps<MapData>,
}

impl PinnedConnTable {
    /// Opens `table`'s maps pinned in `dir`.
    pub fn open(dir: &Path, table: ConnTable) -> Result<Self> {
        let [v4, v6] = table.map_names();
        Ok(Self { table, maps: FamilyMaps { v4: pinned_hash(dir, v4)?, v6: pinned_hash(dir, v6)? } })
    }

    /// `key`'s entry, if the table holds it (a failed read counts as none).
    pub fn get(&self, key: &FlowKey) -> Option<ConnEntry> {
        self.maps.get(key).ok().flatten()
    }

    /// Inserts or replaces `key`'s entry.
    pub fn insert(&mut self, key: &FlowKey, entry: ConnEntry, what: &'static str) -> Result<()> {
        let name = self.table.map_name(key);
        match key.v4_key() {
            Some(k) => self.maps.v4.insert(k, entry, 0),
            None => self.maps.v6.insert(key, entry, 0),
        }
        .map_err(DataplaneError::map(name, what))
    }

    /// Removes `key`'s entry; whether there was one.
    pub fn remove(&mut self, key: &FlowKey) -> bool {
        match key.v4_key() {
            Some(k) => self.maps.v4.remove(&k),
            None => self.maps.v6.remove(key),
        }
        .is_ok()
    }

    /// Every entry, both families (see [`FamilyMaps::entries`]).
    pub fn entries(&self) -> Vec<(FlowKey, ConnEntry)> {
        self.maps.entries()
    }
}
