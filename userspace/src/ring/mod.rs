//! Ring builders: the tables the XDP schedulers index.
//!
//! A ring is a list of backend ids. `maglev` and `source-hash` services use a
//! [`maglev`] table (a prime number of slots); `round-robin` services use a
//! [`round_robin`] weighted sequence. Both are built here, in userspace, and
//! switched into the dataplane with one map write.

pub mod maglev;
pub mod round_robin;

use veer_abi::MAX_RING_SIZE;

/// A backend as a ring builder sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingMember {
    /// The id written into the ring (index into the backend table).
    pub id: u32,
    /// Stable identity (e.g. a hash of the backend's address): places the
    /// backend in the Maglev table independently of its id or list position.
    pub identity: u64,
    /// Relative weight; 0 members are left out.
    pub weight: u32,
}

/// A digest of a table by its backends' identities, not their ids (which
/// differ between nodes): nodes whose tables send every slot to the same
/// backend have the same digest. `identity` maps an id to its identity (0
/// for an id it does not know).
pub fn table_digest(slots: &[u32], identity: impl Fn(u32) -> u64) -> u64 {
    let bytes: Vec<u8> = slots.iter().flat_map(|&id| identity(id).to_le_bytes()).collect();
    veer_abi::hash::bytes_hash64(&bytes, 0x7461_626c)
}

/// Why a ring could not be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RingError {
    /// Maglev needs a prime table size.
    #[error("ring size {0} is not a prime")]
    NotPrime(u32),
    /// Too small or too large.
    #[error("ring size {size} out of range: must be at least {min} and at most {max}")]
    SizeOutOfRange {
        /// Requested size.
        size: u32,
        /// Smallest allowed.
        min: u32,
        /// Largest allowed.
        max: u32,
    },
    /// More backends than slots.
    #[error("{members} backends do not fit a ring of {size} slots")]
    TooManyMembers {
        /// Members with a non-zero weight.
        members: usize,
        /// Slots.
        size: u32,
    },
    /// Two members share an identity, so they would share a permutation.
    #[error("backends {0} and {1} have the same identity")]
    DuplicateIdentity(u32, u32),
}

/// Whether `n` is prime (trial division; ring sizes are at most 65537).
pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    if n.is_multiple_of(2) {
        return n == 2;
    }
    let mut d = 3u32;
    while d.saturating_mul(d) <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 2;
    }
    true
}

/// Checks a Maglev table size: a prime from 7 to [`MAX_RING_SIZE`].
pub fn check_ring_size(size: u32) -> Result<(), RingError> {
    let max = MAX_RING_SIZE as u32;
    if !(7..=max).contains(&size) {
        return Err(RingError::SizeOutOfRange { size, min: 7, max });
    }
    if !is_prime(size) {
        return Err(RingError::NotPrime(size));
    }
    Ok(())
}

/// Share of the ring each backend id holds, as `(id, slots)` sorted by id.
pub fn shares(ring: &[u32]) -> Vec<(u32, usize)> {
    let mut m = std::collections::BTreeMap::new();
    for &id in ring {
        *m.entry(id).or_insert(0usize) += 1;
    }
    m.into_iter().collect()
}

/// A stable identity for a backend address, for Maglev placement.
pub fn identity_of(addr: std::net::IpAddr) -> u64 {
    veer_abi::hash::bytes_hash64(&crate::addr::to_abi(addr), 0x6964)
}
