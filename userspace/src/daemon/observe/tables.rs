//! Connection-table occupancy, walked off the daemon's loop.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use tracing::warn;

use crate::dataplane::{MapReader, PinnedMaps, TableUsage};

/// How often the connection tables are walked for their occupancy.
pub const TABLE_USAGE_PERIOD: Duration = Duration::from_secs(10);

/// The last walk's result, shared with the thread that walks.
pub type SharedUsage = Arc<Mutex<Option<TableUsage>>>;

/// Walks the pinned connection tables every [`TABLE_USAGE_PERIOD`] on a
/// thread of its own (a walk is a syscall per entry: never on the daemon's
/// loop), keeping the last result in `into`.
pub fn watch_table_usage(pins: std::path::PathBuf, into: SharedUsage) {
    let spawned = std::thread::Builder::new().name("veer-table-usage".into()).spawn(move || loop {
        match PinnedMaps::open(&pins).and_then(|p| p.table_usage()) {
            Ok(u) => {
                if let Ok(mut slot) = into.lock() {
                    *slot = Some(u);
                }
            }
            Err(e) => warn!(error = %e, "reading connection-table occupancy failed"),
        }
        std::thread::sleep(TABLE_USAGE_PERIOD);
    });
    if let Err(e) = spawned {
        warn!(error = %e, "cannot start the table-occupancy thread");
    }
}
