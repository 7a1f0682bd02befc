//! Single maps opened from their pins, for the writers that work beside a
//! running dataplane (NAT expiry, the fleet's flow sync, SYN rescue).

use std::path::Path;

use super::{DataplaneError, Result};

/// The hash or LRU hash map pinned as `dir/name`, writable.
pub(super) fn pinned_hash<K: aya::Pod, V: aya::Pod>(
    dir: &Path,
    name: &'static str,
) -> Result<aya::maps::HashMap<aya::maps::MapData, K, V>> {
    use aya::maps::{HashMap, Map, MapData};
    let data = MapData::from_pin(dir.join(name)).map_err(DataplaneError::map(name, "opening the pin"))?;
    let map = Map::from_map_data(data).map_err(DataplaneError::map(name, "identifying"))?;
    HashMap::try_from(map).map_err(DataplaneError::map(name, "typing"))
}
