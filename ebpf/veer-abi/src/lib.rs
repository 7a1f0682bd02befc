//! The ABI between veer's XDP program and userspace.
//!
//! Every BPF map key and value is defined here, once, as `#[repr(C)]` plain
//! data with explicit padding, so that the kernel side (`veer-xdp`, built for
//! `bpfel-unknown-none`) and userspace (`veer`, with the `user` feature that
//! implements [`aya::Pod`]) agree byte for byte. The hash functions that pick a
//! backend live here too, so that `veerctl which` and the unit tests compute
//! exactly what the dataplane computes.
//!
//! Addresses are 16 bytes; IPv4 is stored IPv4-mapped (`::ffff:a.b.c.d`).
//! Ports are in host byte order.
#![cfg_attr(not(test), no_std)]
#![deny(missing_docs)]

pub mod csum;
pub mod hash;
pub mod maps;

pub use maps::*;

/// Version of the map layout. Bump it whenever a key, value, map or map size
/// default changes: pins are kept per version, so a daemon never adopts maps
/// of another layout.
pub const ABI_VERSION: u32 = 15;

/// Largest Maglev table (and round-robin sequence) a service may use: a prime.
pub const MAX_RING_SIZE: usize = 65537;
/// Default Maglev table size: a prime, large enough for ~100 backends.
pub const DEFAULT_RING_SIZE: u32 = 65537;
/// Default capacity of the service table (services are numbered `0..MAX_SERVICES`).
pub const MAX_SERVICES: u32 = 64;
/// Capacity of the backend table (backends are numbered `0..MAX_BACKENDS`).
pub const MAX_BACKENDS: u32 = 4096;
/// Default capacity of the connection table.
pub const DEFAULT_CONN_TABLE_SIZE: u32 = 262_144;
/// Default capacity of the new-flow table (flows seen once).
pub const DEFAULT_NEW_FLOW_TABLE_SIZE: u32 = 65_536;
/// Default capacity of the NAT return table.
pub const DEFAULT_NAT_TABLE_SIZE: u32 = 262_144;
/// Most SNAT addresses (indexes into `SNAT_ADDRS`).
pub const MAX_SNAT_ADDRS: u32 = 64;
/// SNAT ports a new NAT flow tries before it is dropped as exhausted.
pub const NAT_PORT_TRIES: u32 = 16;
/// How long a backend the dataplane found failing stays suspect (gets no
/// new flows) unless veerd clears it sooner: veerd probes it at once, and
/// either confirms it down or clears it.
pub const SUSPECT_HOLD_NS: u64 = 5_000_000_000;
/// Size of the passive-events ring buffer, in bytes.
pub const PASSIVE_EVENTS_BYTES: u32 = 64 * 1024;
/// Socket marks of VIP-path health checks: `VIP_PATH_MARK | backend id`.
/// The high half says "VIP path"; the low half which backend's MAC the
/// probe's frames are sent to (see `VIP_PATH_PROGRAM`).
pub const VIP_PATH_MARK: u32 = 0x7665_0000;
/// The mask that selects [`VIP_PATH_MARK`] (a policy-routing rule's too).
pub const VIP_PATH_MASK: u32 = 0xffff_0000;
/// The routing table VIP-path probes are routed by.
pub const VIP_PATH_TABLE: u32 = 0x7665;
/// Most VIPs one backend's agent serves.
pub const MAX_AGENT_VIPS: u32 = 256;
/// Capacity of the devmap used to redirect to other interfaces.
pub const MAX_TX_PORTS: u32 = 64;
/// How many ring slots the dataplane tries, from the hashed one on, before it
/// gives up on finding an `up` backend for a new flow. Covers the window between
/// a backend going down (one state-word write) and its ring being rebuilt.
pub const RING_PROBES: u32 = 8;
/// Backend id meaning "none" (for example, no fallback backend).
pub const NO_BACKEND: u32 = u32::MAX;

/// IANA protocol number of TCP.
pub const IPPROTO_TCP: u8 = 6;
/// IANA protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;
/// IANA protocol number of ICMP.
pub const IPPROTO_ICMP: u8 = 1;
/// IANA protocol number of ICMPv6.
pub const IPPROTO_ICMPV6: u8 = 58;
/// IP protocol of IPv4 inside IP (IPIP).
pub const IPPROTO_IPIP: u8 = 4;
/// IP protocol of IPv6 inside IP.
pub const IPPROTO_IPV6: u8 = 41;

/// Maps a 4-byte IPv4 address to the 16-byte form used in every key.
#[inline(always)]
pub const fn ipv4_mapped(a: [u8; 4]) -> [u8; 16] {
    // Built a word at a time: in BPF code, the zero run of a byte-array
    // literal becomes a call to a byte-loop `memset`.
    let w = [0, 0, u32::from_ne_bytes([0, 0, 0xff, 0xff]), u32::from_ne_bytes(a)];
    // SAFETY: 16 bytes of integers either way.
    unsafe { core::mem::transmute::<[u32; 4], [u8; 16]>(w) }
}

/// Whether a 16-byte address is an IPv4-mapped IPv4 address.
#[inline(always)]
pub const fn is_ipv4_mapped(a: &[u8; 16]) -> bool {
    a[0] == 0
        && a[1] == 0
        && a[2] == 0
        && a[3] == 0
        && a[4] == 0
        && a[5] == 0
        && a[6] == 0
        && a[7] == 0
        && a[8] == 0
        && a[9] == 0
        && a[10] == 0xff
        && a[11] == 0xff
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_mapped_address_built_by_words_is_the_rfc_4291_form() {
        let a = super::ipv4_mapped([192, 0, 2, 7]);
        assert_eq!(a, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 7]);
        assert!(super::is_ipv4_mapped(&a));
        assert_eq!(std::net::Ipv6Addr::from(a).to_ipv4_mapped(), Some(std::net::Ipv4Addr::new(192, 0, 2, 7)));
    }
}
