//! The hashes that map a flow onto a ring slot.
//!
//! Murmur3's 32-bit mixing over whole words: cheap in BPF (no loops over bytes,
//! no tables), good avalanche, and identical on both sides of the ABI.

use crate::maps::FlowKey;

const C1: u32 = 0xcc9e_2d51;
const C2: u32 = 0x1b87_3593;

#[inline(always)]
const fn mix(h: u32, k: u32) -> u32 {
    let k = k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
    (h ^ k).rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64)
}

/// Murmur3's finaliser: every input bit affects every output bit.
#[inline(always)]
pub const fn fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

#[inline(always)]
const fn word(a: &[u8; 16], i: usize) -> u32 {
    u32::from_le_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]])
}

#[inline(always)]
const fn mix_addr(h: u32, a: &[u8; 16]) -> u32 {
    mix(mix(mix(mix(h, word(a, 0)), word(a, 4)), word(a, 8)), word(a, 12))
}

/// Hash of a flow's 5-tuple (the `maglev` scheduler's ring index, modulo the ring length).
#[inline(always)]
pub const fn flow_hash(key: &FlowKey) -> u32 {
    let h = mix_addr(0x7665_6572, &key.src); // seed: "veer"
    let h = mix_addr(h, &key.dst);
    let h = mix(h, ((key.sport as u32) << 16) | key.dport as u32);
    let h = mix(h, key.proto as u32);
    fmix32(h ^ 37)
}

/// Hash of a client address alone (the `source-hash` scheduler's ring index).
#[inline(always)]
pub const fn source_hash(addr: &[u8; 16]) -> u32 {
    fmix32(mix_addr(0x7665_6572, addr) ^ 16)
}

/// 64-bit hash of arbitrary bytes with a seed, for userspace only (Maglev
/// permutations). FNV-1a folded through a 64-bit finaliser.
pub fn bytes_hash64(bytes: &[u8], seed: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(sport: u16) -> FlowKey {
        FlowKey {
            src: crate::ipv4_mapped([10, 0, 0, 1]),
            dst: crate::ipv4_mapped([10, 0, 0, 100]),
            sport,
            dport: 80,
            proto: crate::IPPROTO_TCP,
            _pad: [0; 3],
        }
    }

    #[test]
    fn flow_hash_depends_on_every_field() {
        let base = key(1000);
        let h = flow_hash(&base);
        let mut k = base;
        k.sport = 1001;
        assert_ne!(flow_hash(&k), h);
        k = base;
        k.dport = 81;
        assert_ne!(flow_hash(&k), h);
        k = base;
        k.proto = crate::IPPROTO_UDP;
        assert_ne!(flow_hash(&k), h);
        k = base;
        k.src[15] = 2;
        assert_ne!(flow_hash(&k), h);
        k = base;
        k.dst[0] = 1;
        assert_ne!(flow_hash(&k), h);
    }

    #[test]
    fn flow_hash_spreads_ports_evenly() {
        // 64k consecutive source ports into 16 buckets; chi-square with 15
        // degrees of freedom stays under 37.7 (p = 0.001) for a uniform hash.
        let mut buckets = [0u32; 16];
        for p in 0..=u16::MAX {
            buckets[(flow_hash(&key(p)) % 16) as usize] += 1;
        }
        let even = 65536.0 / 16.0;
        let chi2: f64 = buckets.iter().map(|&b| (b as f64 - even).powi(2) / even).sum();
        assert!(chi2 < 37.7, "chi-square {chi2:.1}, buckets {buckets:?}");
    }
}
