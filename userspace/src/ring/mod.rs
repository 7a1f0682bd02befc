//! Ring builders: the tables the XDP schedulers index.
//!
//! A ring is a list of backend ids. `maglev` and `source-hash` services use a
//! [`maglev`] table (a prime number of slots); `round-robin` services use a
//! [`round_robin`] weighted sequence. Both are built here, in userspace, and
//! switched into the dataplane with one map write.

pub mod maglev;
mod member;
pub mod round_robin;
mod size;

pub use member::{identity_of, table_digest, RingMember};
pub use size::{check_ring_size, is_prime, RingError};

/// Share of the ring each backend id holds, as `(id, slots)` sorted by id.
pub fn shares(ring: &[u32]) -> Vec<(u32, usize)> {
    let mut m = std::collections::BTreeMap::new();
    for &id in ring {
        *m.entry(id).or_insert(0usize) += 1;
    }
    m.into_iter().collect()
}
