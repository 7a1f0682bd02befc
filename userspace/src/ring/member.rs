//! A backend as the ring builders see it, and a table's digest by identity.

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

/// A stable identity for a backend address, for Maglev placement.
pub fn identity_of(addr: std::net::IpAddr) -> u64 {
    veer_abi::hash::bytes_hash64(&crate::addr::to_abi(addr), 0x6964)
}
