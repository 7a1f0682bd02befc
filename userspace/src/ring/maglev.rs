//! Weighted Maglev consistent hashing (Eisenbud et al., NSDI 2016), with
//! minimal-disruption rebuilds.
//!
//! Each backend has its own permutation of the table's slots (an offset and a
//! skip derived from its identity) and, taking turns, claims the next free
//! slot along it. Two changes to the paper's populate step:
//!
//! * **Exact quotas.** A backend claims exactly its weight's share of the
//!   table (largest-remainder rounding), so shares are within one slot of the
//!   weights, not merely close.
//! * **Rebuild from the live table.** [`MaglevRing::rebuild`] keeps every slot
//!   whose owner stays and is within its quota; only slots of removed backends
//!   and a shrunk backend's least-preferred slots (latest in its permutation)
//!   are claimed again. Removing 1 of N backends moves exactly its ~1/N of
//!   flows (the paper's populate moves ~1.5/N at N=100, M=65537); adding one
//!   moves ~1/(N+1). The price: the table depends on history, not only on the
//!   current set. [`MaglevRing::build`] (no history) is deterministic.

use std::collections::HashMap;

use veer_abi::hash::bytes_hash64;

use super::{
    member::RingMember,
    size::{check_ring_size, RingError},
};

/// Slot value of an empty table (only returned when no member has weight).
pub const EMPTY: u32 = u32::MAX;

/// A built Maglev table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaglevRing {
    slots: Vec<u32>,
}

/// One backend's permutation of the slots: `offset + k * skip (mod m)`.
struct Permutation {
    offset: u64,
    skip: u64,
    /// `skip^-1 mod m`: turns a slot back into its position `k`.
    skip_inv: u64,
}

fn mod_pow(mut b: u64, mut e: u64, m: u64) -> u64 {
    let mut r = 1u64;
    b %= m;
    while e > 0 {
        if e & 1 == 1 {
            r = r * b % m;
        }
        b = b * b % m;
        e >>= 1;
    }
    r
}

impl Permutation {
    fn new(identity: u64, m: u64) -> Self {
        let key = identity.to_le_bytes();
        let offset = bytes_hash64(&key, 0x6f66_6673) % m;
        let skip = bytes_hash64(&key, 0x736b_6970) % (m - 1) + 1;
        // m is prime: Fermat's little theorem gives the inverse.
        Self { offset, skip, skip_inv: mod_pow(skip, m - 2, m) }
    }

    fn slot(&self, k: u64, m: u64) -> usize {
        ((self.offset + k * self.skip) % m) as usize
    }

    /// Position of `slot` in this permutation: lower is more preferred.
    fn rank(&self, slot: usize, m: u64) -> u64 {
        ((slot as u64 + m - self.offset) % m) * self.skip_inv % m
    }
}

/// Slots per member: `m * w / W`, rounded by largest remainder (ties: lower index).
fn quotas(weights: &[u64], m: u64) -> Vec<usize> {
    let total: u64 = weights.iter().sum();
    let mut q: Vec<usize> = weights.iter().map(|w| (m * w / total) as usize).collect();
    let mut left = m as usize - q.iter().sum::<usize>();
    let mut by_rem: Vec<usize> = (0..weights.len()).collect();
    by_rem.sort_by_key(|&i| std::cmp::Reverse(m * weights[i] % total));
    for &i in &by_rem {
        if left == 0 {
            break;
        }
        q[i] += 1;
        left -= 1;
    }
    q
}

/// Each live member's position in `live`, by backend id; two members with
/// one identity are an error (they would take the same slots).
fn index_by_id(live: &[&RingMember]) -> Result<HashMap<u32, usize>, RingError> {
    let mut by_identity = HashMap::with_capacity(live.len());
    let mut by_id = HashMap::with_capacity(live.len());
    for (i, b) in live.iter().enumerate() {
        if let Some(other) = by_identity.insert(b.identity, b.id) {
            return Err(RingError::DuplicateIdentity(other, b.id));
        }
        by_id.insert(b.id, i);
    }
    Ok(by_id)
}

/// Fills the empty slots: members take turns, each the next free slot of its
/// permutation, until each has its quota (`count` holds what they have).
fn fill(slots: &mut [u32], live: &[&RingMember], perms: &[Permutation], quota: &[usize], count: &mut [usize], m: u64) {
    let mut filled: usize = count.iter().sum();
    let mut next = vec![0u64; live.len()];
    while filled < slots.len() {
        for i in 0..live.len() {
            if count[i] >= quota[i] {
                continue;
            }
            // Skip is in 1..m and m is prime, so the walk visits every slot;
            // quotas sum to m, so a free slot exists while count < quota.
            loop {
                let c = perms[i].slot(next[i], m);
                next[i] += 1;
                if slots[c] == EMPTY {
                    slots[c] = live[i].id;
                    count[i] += 1;
                    filled += 1;
                    break;
                }
            }
        }
    }
}

impl MaglevRing {
    /// Builds a table of `size` slots (a prime) over `members`, from scratch.
    ///
    /// Members with weight 0 get no slots; with no weighted member at all, every
    /// slot is [`EMPTY`] and [`MaglevRing::is_empty`] is true.
    pub fn build(members: &[RingMember], size: u32) -> Result<Self, RingError> {
        Self::rebuild(None, members, size)
    }

    /// Builds a table over `members`, moving as few slots of `previous` (the
    /// live table, slots by backend id) as the new quotas allow. A `previous`
    /// of another size is ignored.
    pub fn rebuild(previous: Option<&[u32]>, members: &[RingMember], size: u32) -> Result<Self, RingError> {
        check_ring_size(size)?;
        let live: Vec<&RingMember> = members.iter().filter(|m| m.weight > 0).collect();
        if live.len() > size as usize {
            return Err(RingError::TooManyMembers { members: live.len(), size });
        }
        let m = size as u64;
        let mut slots = vec![EMPTY; size as usize];
        if live.is_empty() {
            return Ok(Self { slots });
        }
        let by_id = index_by_id(&live)?;
        let perms: Vec<Permutation> = live.iter().map(|b| Permutation::new(b.identity, m)).collect();
        let quota = quotas(&live.iter().map(|b| b.weight as u64).collect::<Vec<_>>(), m);
        let mut count = vec![0usize; live.len()];

        if let Some(prev) = previous.filter(|p| p.len() == slots.len()) {
            let mut owned: Vec<Vec<usize>> = vec![Vec::new(); live.len()];
            for (s, id) in prev.iter().enumerate() {
                if let Some(&i) = by_id.get(id) {
                    owned[i].push(s);
                }
            }
            for (i, mut mine) in owned.into_iter().enumerate() {
                if mine.len() > quota[i] {
                    mine.sort_by_key(|&s| perms[i].rank(s, m));
                    mine.truncate(quota[i]);
                }
                for &s in &mine {
                    slots[s] = live[i].id;
                }
                count[i] = mine.len();
            }
        }

        fill(&mut slots, &live, &perms, &quota, &mut count, m);
        Ok(Self { slots })
    }

    /// The slots, each a backend id.
    pub fn slots(&self) -> &[u32] {
        &self.slots
    }

    /// Whether the table has no backend at all.
    pub fn is_empty(&self) -> bool {
        self.slots.first().is_none_or(|&s| s == EMPTY)
    }

    /// The backend id for a hash, as the dataplane picks it (before probing).
    pub fn lookup(&self, hash: u32) -> u32 {
        self.slots[(hash % self.slots.len() as u32) as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::shares;

    fn members(n: u32, weight: impl Fn(u32) -> u32) -> Vec<RingMember> {
        (0..n)
            .map(|i| RingMember {
                id: i,
                identity: bytes_hash64(format!("10.0.{}.{}", i / 250, i % 250).as_bytes(), 1),
                weight: weight(i),
            })
            .collect()
    }

    /// Flow hashes as the dataplane computes them, from real 5-tuples.
    fn sample_hashes(count: u32) -> Vec<u32> {
        (0..count)
            .map(|i| {
                let key = veer_abi::FlowKey {
                    src: veer_abi::ipv4_mapped([10, (i >> 16) as u8, (i >> 8) as u8, i as u8]),
                    dst: veer_abi::ipv4_mapped([192, 0, 2, 1]),
                    sport: 1024 + (i % 50000) as u16,
                    dport: 443,
                    proto: veer_abi::IPPROTO_TCP,
                    _pad: [0; 3],
                };
                veer_abi::hash::flow_hash(&key)
            })
            .collect()
    }

    #[test]
    fn shares_follow_weights_within_one_percent() {
        const M: u32 = 65537;
        // Weights 1..=4: each backend's share within 1% (relative) of its weight's share.
        let bs = members(100, |i| 1 + i % 4);
        let ring = MaglevRing::build(&bs, M).unwrap();
        let total_w: u32 = bs.iter().map(|b| b.weight).sum();
        let got = shares(ring.slots());
        assert_eq!(got.len(), 100, "every backend holds slots");
        for (id, slots) in got {
            let want = bs[id as usize].weight as f64 / total_w as f64;
            let have = slots as f64 / M as f64;
            let rel = (have - want).abs() / want;
            assert!(rel <= 0.01, "backend {id}: share {have:.5} vs weight share {want:.5} ({:.2}% off)", rel * 100.0);
        }
    }

    #[test]
    fn equal_weights_share_evenly() {
        let bs = members(100, |_| 1);
        let ring = MaglevRing::build(&bs, 65537).unwrap();
        let s = shares(ring.slots());
        let (min, max) = (s.iter().map(|x| x.1).min().unwrap(), s.iter().map(|x| x.1).max().unwrap());
        assert!(max - min <= 1, "min {min} max {max}");
    }

    #[test]
    fn removing_one_of_100_moves_at_most_1_1_over_n() {
        const N: u32 = 100;
        let bs = members(N, |_| 1);
        let before = MaglevRing::build(&bs, 65537).unwrap();
        let removed = 37;
        let rest: Vec<_> = bs.iter().copied().filter(|b| b.id != removed).collect();
        let after = MaglevRing::rebuild(Some(before.slots()), &rest, 65537).unwrap();
        let hashes = sample_hashes(1_000_000);
        let moved = hashes.iter().filter(|&&h| before.lookup(h) != after.lookup(h)).count();
        let frac = moved as f64 / hashes.len() as f64;
        let bound = 1.1 / N as f64;
        assert!(frac <= bound, "moved {frac:.5} of flows, bound {bound:.5}");
        assert!(after.slots().iter().all(|&s| s != removed));
        // From scratch (no history) the table is plain Maglev: balanced, but it moves more.
        let scratch = MaglevRing::build(&rest, 65537).unwrap();
        let moved_scratch = hashes.iter().filter(|&&h| before.lookup(h) != scratch.lookup(h)).count();
        assert!(moved_scratch >= moved, "history must not move more than a fresh build");
    }

    #[test]
    fn adding_one_to_100_moves_at_most_1_1_over_n_plus_1() {
        let bs = members(101, |_| 1);
        let before = MaglevRing::build(&bs[..100], 65537).unwrap();
        let after = MaglevRing::rebuild(Some(before.slots()), &bs, 65537).unwrap();
        let hashes = sample_hashes(1_000_000);
        let moved = hashes.iter().filter(|&&h| before.lookup(h) != after.lookup(h)).count();
        let frac = moved as f64 / hashes.len() as f64;
        assert!(frac <= 1.1 / 101.0, "moved {frac:.5}");
    }

    #[test]
    fn rebuild_with_same_members_changes_nothing() {
        let bs = members(50, |i| 1 + i % 5);
        let a = MaglevRing::build(&bs, 65537).unwrap();
        let b = MaglevRing::rebuild(Some(a.slots()), &bs, 65537).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn a_backend_that_leaves_and_returns_gets_its_share_back() {
        let bs = members(3, |i| i + 1);
        let all = MaglevRing::build(&bs, 65537).unwrap();
        let without: Vec<_> = bs.iter().copied().filter(|b| b.id != 1).collect();
        let gone = MaglevRing::rebuild(Some(all.slots()), &without, 65537).unwrap();
        let back = MaglevRing::rebuild(Some(gone.slots()), &bs, 65537).unwrap();
        let s = shares(back.slots());
        assert_eq!(s, shares(all.slots()), "shares after return");
        // Flows hash over the whole table: the returning backend's slots must
        // not cluster (a share of slots is a share of flows).
        let hashes = sample_hashes(100_000);
        let to_b1 = hashes.iter().filter(|&&h| back.lookup(h) == 1).count() as f64 / 1e5;
        assert!((to_b1 - 2.0 / 6.0).abs() < 0.01, "b1 gets {to_b1:.3} of flows");
    }

    #[test]
    fn weight_change_moves_only_the_difference() {
        let mut bs = members(10, |_| 10);
        let a = MaglevRing::build(&bs, 65537).unwrap();
        bs[3].weight = 5;
        let b = MaglevRing::rebuild(Some(a.slots()), &bs, 65537).unwrap();
        let changed = a.slots().iter().zip(b.slots()).filter(|(x, y)| x != y).count();
        // Backend 3 drops from 1/10 to 5/95 of the table; only those slots move.
        let expect = 65537.0 * (0.1 - 5.0 / 95.0);
        assert!((changed as f64 - expect).abs() < 10.0, "changed {changed}, expected ~{expect:.0}");
    }

    #[test]
    fn build_is_deterministic_and_order_independent() {
        let bs = members(10, |i| 1 + i % 3);
        let mut rev = bs.clone();
        rev.reverse();
        let a = MaglevRing::build(&bs, 251).unwrap();
        let b = MaglevRing::build(&bs, 251).unwrap();
        assert_eq!(a, b);
        // Order changes turn order within a round, which may swap contested
        // slots; the overwhelming majority must agree.
        let c = MaglevRing::build(&rev, 251).unwrap();
        let same = a.slots().iter().zip(c.slots()).filter(|(x, y)| x == y).count();
        assert!(same * 10 >= 251 * 8, "only {same}/251 slots agree");
    }

    #[test]
    fn rejects_bad_sizes_and_duplicates() {
        let bs = members(3, |_| 1);
        assert_eq!(MaglevRing::build(&bs, 100), Err(RingError::NotPrime(100)));
        assert!(matches!(MaglevRing::build(&bs, 65539), Err(RingError::SizeOutOfRange { .. })));
        assert!(matches!(MaglevRing::build(&bs, 5), Err(RingError::SizeOutOfRange { .. })));
        let dup = [bs[0], RingMember { id: 9, ..bs[0] }];
        assert_eq!(MaglevRing::build(&dup, 7), Err(RingError::DuplicateIdentity(0, 9)));
        let many = members(11, |_| 1);
        assert!(matches!(MaglevRing::build(&many, 7), Err(RingError::TooManyMembers { .. })));
    }

    #[test]
    fn zero_weight_and_empty() {
        let bs = members(3, |i| if i == 1 { 0 } else { 1 });
        let r = MaglevRing::build(&bs, 13).unwrap();
        assert!(r.slots().iter().all(|&s| s == 0 || s == 2));
        let none = MaglevRing::build(&[], 13).unwrap();
        assert!(none.is_empty());
    }
}
