//! Wire formats, one module per header. Multi-byte fields are big-endian byte arrays.

pub mod eth;
pub mod field;
pub mod icmp;
pub mod ipv4;
pub mod ipv6;
pub mod l4;
