//! A fleet's NAT flows: each NAT flow promoted to the connection table
//! (its client proved it) is reported to veerd in `NAT_SYNC`, which sends
//! it to the fleet's other nodes, so that they carry the flow on, both
//! ways, if this node dies. Off (one load of the NAT settings) unless
//! veerd turned it on.

use aya_ebpf::{macros::map, maps::RingBuf};
use veer_abi::{ConnEntry, FlowKey, GlobalCounter, NatSyncEvent, NAT_SYNC_BYTES};

use crate::{snat, stats};

/// NAT flows just promoted, for veerd.
#[map]
static NAT_SYNC: RingBuf = RingBuf::with_byte_size(NAT_SYNC_BYTES, 0);

/// Reports flow `key`, just promoted with `entry`, if it is a NAT flow and
/// the fleet shares NAT flows.
#[inline(never)]
pub fn promoted(key: &FlowKey, entry: &ConnEntry) {
    if entry.nat_port == 0 || snat::config().is_none_or(|c| c.sync == 0) {
        return;
    }
    if NAT_SYNC.output::<NatSyncEvent>(&NatSyncEvent { key: *key, entry: *entry }, 0).is_err() {
        stats::count(GlobalCounter::NatSyncLost);
    }
}
