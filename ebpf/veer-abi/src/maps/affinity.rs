//! Client persistence (`AFFINITY`).

/// Key of `AFFINITY`: a client of a service.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AffinityKey {
    /// The service's id.
    pub service: u32,
    /// The client's address (IPv4-mapped for IPv4).
    pub client: [u8; 16],
}

/// Value of `AFFINITY`: the backend a client's flows of a service go to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Affinity {
    /// Backend id.
    pub backend: u32,
    /// Always zero.
    pub _pad: u32,
    /// When a new flow of the client last went there (`bpf_ktime_get_coarse_ns`).
    pub last_seen_ns: u64,
}

/// Default capacity of `AFFINITY` (clients remembered, all services together).
pub const DEFAULT_AFFINITY_TABLE_SIZE: u32 = 65536;

// Layout guards: the XDP object and userspace must agree on these sizes.
const _: () = assert!(core::mem::size_of::<AffinityKey>() == 20);
const _: () = assert!(core::mem::size_of::<Affinity>() == 16);
