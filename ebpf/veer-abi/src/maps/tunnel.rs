//! Tunnels (IPIP, GUE): the balancer's ends of them, and how a tunnelled
//! backend is known when its agent sends a packet back through one.

/// Entries of `TUNNEL_SOURCES`: the balancer's tunnel source addresses.
pub const MAX_TUNNEL_SOURCES: u32 = 64;

/// Value of `TUNNEL_CONFIG` (one entry).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TunnelConfig {
    /// The UDP port GUE packets sent back by backends' agents arrive on
    /// (the GUE services' port); 0: none are expected.
    pub gue_port: u16,
    /// Always zero.
    pub _pad: u16,
    /// The secret [`tunnel_mac`] mixes in (veerd's, random): no one can
    /// pick an address whose tunnel MAC is a backend's.
    pub mac_key: u32,
}

/// The Ethernet source a packet that tunnelled backend `addr` (16-byte
/// form) sent back is given once out of its tunnel, and the `mac` of that
/// backend's entry: the dataplane then knows the bounce by its source MAC,
/// as it knows one from a backend on its own segment. Keyed by
/// [`TunnelConfig::mac_key`]. Locally administered, never sent on a wire (a
/// tunnelled backend's frames go to the router's MAC).
#[inline(always)]
pub fn tunnel_mac(addr: &[u8; 16], key: u32) -> [u8; 6] {
    let w = |i: usize| u32::from_be_bytes([addr[i], addr[i + 1], addr[i + 2], addr[i + 3]]);
    let h = (w(0) ^ w(4) ^ key).wrapping_mul(0x9e37_79b1) ^ w(8).rotate_left(7);
    let h = (h.wrapping_mul(0x85eb_ca6b) ^ w(12) ^ key.rotate_left(16)).wrapping_mul(0xc2b2_ae35);
    let h = (h ^ (h >> 16)).to_be_bytes();
    [0x0e, 0x76, h[0], h[1], h[2], h[3]]
}

// Layout guards: the XDP object and userspace must agree on these sizes.
const _: () = assert!(core::mem::size_of::<TunnelConfig>() == 8);

#[cfg(test)]
mod tests {
    use super::tunnel_mac;
    use crate::ipv4_mapped;

    #[test]
    fn tunnel_macs_are_local_unicast_and_differ() {
        let a = tunnel_mac(&ipv4_mapped([10, 9, 0, 10]), 7);
        let b = tunnel_mac(&ipv4_mapped([10, 9, 0, 11]), 7);
        assert_eq!(a[0] & 0x03, 0x02, "locally administered, unicast");
        assert_ne!(a, b);
        assert_ne!(a, tunnel_mac(&ipv4_mapped([10, 9, 0, 10]), 8), "the key changes it");
        let mut seen = std::collections::HashSet::new();
        for i in 0..=255u8 {
            for j in 0..16u8 {
                assert!(seen.insert(tunnel_mac(&ipv4_mapped([10, j, 0, i]), 7)), "10.{j}.0.{i} collides");
            }
        }
    }
}
