//! The baseline object the benchmarks compare veer against.

/// Value of the baseline object's `MINIMAL_DSR` map: the one VIP and the one
/// backend of `veer_dsr`, the benchmarks' throughput ceiling (a DSR
/// forwarder with no table, no hashing and no counters).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MinimalDsr {
    /// The VIP (IPv4).
    pub vip: [u8; 4],
    /// The backend's MAC.
    pub backend_mac: [u8; 6],
    /// Always zero.
    pub _pad: [u8; 2],
}
