//! Ring sizes: Maglev wants a prime, within the dataplane's bounds.

use veer_abi::MAX_RING_SIZE;

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
