//! The connection tables as userspace sees them: each one a pair of maps,
//! IPv4 flows keyed by [`FlowKey4`] (16 bytes: the kernel hashes every
//! byte of a key on each lookup), IPv6 flows by [`FlowKey`]. Callers name
//! flows by their full [`FlowKey`] and the family's map is chosen here.

use std::path::Path;

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
        self.map_names()[usize::from(key.v4_key().is_none())]
    }
}

/// A connection table's maps, opened from their pins.
pub struct PinnedConnTable {
    table: ConnTable,
    v4: HashMap<MapData, FlowKey4, ConnEntry>,
    v6: HashMap<MapData, FlowKey, ConnEntry>,
}

impl PinnedConnTable {
    /// Opens `table`'s maps pinned in `dir`.
    pub fn open(dir: &Path, table: ConnTable) -> Result<Self> {
        let [v4, v6] = table.map_names();
        Ok(Self { table, v4: pinned_hash(dir, v4)?, v6: pinned_hash(dir, v6)? })
    }

    /// `key`'s entry, if the table holds it.
    pub fn get(&self, key: &FlowKey) -> Option<ConnEntry> {
        match key.v4_key() {
            Some(k) => self.v4.get(&k, 0).ok(),
            None => self.v6.get(key, 0).ok(),
        }
    }

    /// Inserts or replaces `key`'s entry.
    pub fn insert(&mut self, key: &FlowKey, entry: ConnEntry, what: &'static str) -> Result<()> {
        let name = self.table.map_name(key);
        match key.v4_key() {
            Some(k) => self.v4.insert(k, entry, 0),
            None => self.v6.insert(key, entry, 0),
        }
        .map_err(DataplaneError::map(name, what))
    }

    /// Removes `key`'s entry; whether there was one.
    pub fn remove(&mut self, key: &FlowKey) -> bool {
        match key.v4_key() {
            Some(k) => self.v4.remove(&k),
            None => self.v6.remove(key),
        }
        .is_ok()
    }

    /// Every entry, both families (entries evicted during the walk are
    /// skipped).
    pub fn entries(&self) -> Vec<(FlowKey, ConnEntry)> {
        let v4 = self.v4.iter().filter_map(|r| r.ok()).map(|(k, e)| (k.flow(), e));
        v4.chain(self.v6.iter().filter_map(|r| r.ok())).collect()
    }
}

/// `key`'s entry in the map `m` of its family, for readers holding the
/// map by reference; `Ok(None)` if it has none.
pub(super) fn lookup(
    v4: &HashMap<&MapData, FlowKey4, ConnEntry>,
    v6: &HashMap<&MapData, FlowKey, ConnEntry>,
    key: &FlowKey,
) -> std::result::Result<Option<ConnEntry>, MapError> {
    let got = match key.v4_key() {
        Some(k) => v4.get(&k, 0),
        None => v6.get(key, 0),
    };
    match got {
        Ok(e) => Ok(Some(e)),
        Err(MapError::KeyNotFound) => Ok(None),
        Err(e) => Err(e),
    }
}
