//! The connection tables, a pair per address family: the kernel hashes a
//! key's every byte on each lookup, and an IPv4 flow's key is 16 bytes in
//! the IPv4 tables against 40 in a shared one.
//!
//! [`CONNS`] and [`NEW_CONNS`] take a flow's [`ConnKey`] and go to its
//! family's map, each by name: a map chosen at run time is no map to the
//! verifier. A flow is in the IPv4 maps exactly when [`FlowKey::v4_key`]
//! gives a key.

use aya_ebpf::{
    macros::map,
    maps::{LruHashMap, PerCpuArray},
};
use veer_abi::{ConnEntry, FlowKey, FlowKey4, DEFAULT_CONN_TABLE_SIZE, DEFAULT_NEW_FLOW_TABLE_SIZE};

/// Map flag: per-CPU LRU lists over one shared hash table (`BPF_F_NO_COMMON_LRU`).
pub const BPF_F_NO_COMMON_LRU: u32 = 1 << 1;

// Global tables, not per-CPU: a flow whose packets arrive on several CPUs
// (RSS changes, veth, round robin) must find its entry on each, or
// round-robin flows would be split across backends. Per-CPU LRU lists keep
// eviction free of a global lock, which is what per-CPU tables buy.

/// Established IPv4 flows.
#[map]
static CONNS4: LruHashMap<FlowKey4, ConnEntry> =
    LruHashMap::with_max_entries(DEFAULT_CONN_TABLE_SIZE, BPF_F_NO_COMMON_LRU);

/// Established IPv6 flows.
#[map(name = "CONNS")]
static CONNS6: LruHashMap<FlowKey, ConnEntry> =
    LruHashMap::with_max_entries(DEFAULT_CONN_TABLE_SIZE, BPF_F_NO_COMMON_LRU);

/// IPv4 flows seen once.
#[map]
static NEW_CONNS4: LruHashMap<FlowKey4, ConnEntry> =
    LruHashMap::with_max_entries(DEFAULT_NEW_FLOW_TABLE_SIZE, BPF_F_NO_COMMON_LRU);

/// IPv6 flows seen once.
#[map(name = "NEW_CONNS")]
static NEW_CONNS6: LruHashMap<FlowKey, ConnEntry> =
    LruHashMap::with_max_entries(DEFAULT_NEW_FLOW_TABLE_SIZE, BPF_F_NO_COMMON_LRU);

/// One kind of connection table, over both families' maps.
#[derive(Clone, Copy)]
pub enum ConnTable {
    /// Flows that have shown more than one packet.
    Established,
    /// Flows seen once (a TCP SYN, a first datagram), apart from the
    /// established ones: a flood of first packets (spoofed SYNs) churns
    /// only these, and an established flow is never evicted to make room.
    New,
}

/// The established flows: a flow's second packet moves its entry here.
pub const CONNS: ConnTable = ConnTable::Established;

/// The flows seen once.
pub const NEW_CONNS: ConnTable = ConnTable::New;

/// A flow's key as its family's maps hold it: found once per function
/// that works on the tables (a family test at each call would be a branch
/// the verifier walks both ways each time, and its paths multiply). The
/// IPv4 form's pointer is the family: a test of it is a test of the very
/// pointer then passed, so no walk of the verifier's pairs a family with
/// the other's key.
#[derive(Clone, Copy)]
pub struct ConnKey<'a> {
    /// In this CPU's room (a raw pointer: the next key built there writes
    /// it, and a nested run on this CPU could too, see [`ROOMS`]).
    k4: Option<*const FlowKey4>,
    k6: &'a FlowKey,
}

/// Which of a CPU's two [`ROOMS`] a [`ConnKey`] builds its IPv4 form in:
/// a packet's flow, or the flow of a NAT mapping looked at while the
/// packet's may be live.
#[derive(Clone, Copy)]
#[repr(u32)]
pub enum Room {
    /// The packet's own flow.
    Packet = 0,
    /// A NAT mapping's flow (port search, ICMP, SYN stash).
    Mapping = 1,
}

/// Per CPU, room for the IPv4 form of two flows' keys, off the stack: the
/// NAT program's deepest call chain is at the 512-byte limit. Like every
/// per-CPU scratch value (`ALLOC_SCRATCH`, `RR_CURSORS`), it assumes no
/// other run of the programs interrupts this one on its CPU: true of
/// packets and of test runs with live frames (bottom halves off), not of
/// a test run without them, veerd's SYN-rescue fallback on a kernel that
/// refuses live frames.
#[map]
static ROOMS: PerCpuArray<FlowKey4> = PerCpuArray::with_max_entries(2, 0);

impl<'a> ConnKey<'a> {
    /// `key`'s place in the tables, its IPv4 form built in this CPU's
    /// `room` (until the next key built there).
    #[inline(always)]
    pub fn of(key: &'a FlowKey, room: Room) -> Self {
        if !key.is_v4() {
            return Self { k4: None, k6: key };
        }
        // Never `None` (an array's slots always exist); the IPv6 maps,
        // where no IPv4 flow is, would then answer.
        let k4 = ROOMS.get_ptr_mut(room as u32).map(|r| {
            // SAFETY: this CPU's value; nothing else runs on it meanwhile.
            unsafe { r.write(key.v4_words()) };
            r as *const FlowKey4
        });
        Self { k4, k6: key }
    }
}

/// The calls below go to the family's map with the key it holds; each
/// folds to a single map call once `self` is a constant.
macro_rules! by_family {
    ($table:expr, $key:expr, |$map:ident, $k:ident| $call:expr) => {
        match ($table, $key.k4) {
            (ConnTable::Established, Some(k)) => {
                // SAFETY: this CPU's room, written by `ConnKey::of`.
                let ($map, $k) = (&CONNS4, unsafe { &*k });
                $call
            }
            (ConnTable::Established, None) => {
                let ($map, $k) = (&CONNS6, $key.k6);
                $call
            }
            (ConnTable::New, Some(k)) => {
                // SAFETY: as above.
                let ($map, $k) = (&NEW_CONNS4, unsafe { &*k });
                $call
            }
            (ConnTable::New, None) => {
                let ($map, $k) = (&NEW_CONNS6, $key.k6);
                $call
            }
        }
    };
}

impl ConnTable {
    /// The entry of `key`'s flow, in place.
    #[inline(always)]
    pub fn get_ptr_mut(self, key: &ConnKey) -> Option<*mut ConnEntry> {
        by_family!(self, key, |m, k| m.get_ptr_mut(k))
    }

    /// The entry of `key`'s flow.
    ///
    /// # Safety
    ///
    /// As `LruHashMap::get`: a concurrent eviction may reuse the value.
    #[inline(always)]
    pub unsafe fn get(self, key: &ConnKey) -> Option<&'static ConnEntry> {
        // SAFETY: the caller takes the eviction caveat.
        by_family!(self, key, |m, k| unsafe { m.get(k) })
    }

    /// Inserts or replaces `key`'s entry (`flags` as `bpf_map_update_elem`'s).
    #[inline(always)]
    pub fn insert(self, key: &ConnKey, entry: &ConnEntry, flags: u64) -> Result<(), i32> {
        by_family!(self, key, |m, k| m.insert(k, entry, flags))
    }

    /// Removes `key`'s entry.
    #[inline(always)]
    pub fn remove(self, key: &ConnKey) -> Result<(), i32> {
        by_family!(self, key, |m, k| m.remove(k))
    }
}
