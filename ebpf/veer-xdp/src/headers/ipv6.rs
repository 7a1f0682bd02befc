//! IPv6 (RFC 8200).

/// Next-header values that are extension headers veer does not walk: hop-by-hop options.
pub const NEXTHDR_HOP: u8 = 0;
/// Routing header.
pub const NEXTHDR_ROUTING: u8 = 43;
/// Fragment header.
pub const NEXTHDR_FRAGMENT: u8 = 44;
/// Authentication header.
pub const NEXTHDR_AUTH: u8 = 51;
/// Destination options.
pub const NEXTHDR_DEST: u8 = 60;

/// The fixed IPv6 header.
#[repr(C)]
pub struct Ipv6Hdr {
    /// Version, traffic class and flow label.
    pub vtc_flow: [u8; 4],
    /// Length after this header.
    pub payload_len: [u8; 2],
    /// The next header's protocol.
    pub next_header: u8,
    /// Hop limit.
    pub hop_limit: u8,
    /// Source address.
    pub src: [u8; 16],
    /// Destination address.
    pub dst: [u8; 16],
}

impl Ipv6Hdr {
    /// Header length in bytes.
    pub const LEN: usize = 40;

    /// IP version: 6 when valid.
    #[inline(always)]
    pub fn version(&self) -> u8 {
        self.vtc_flow[0] >> 4
    }

    /// Length after this header in bytes.
    #[inline(always)]
    pub fn payload_len(&self) -> usize {
        super::field::be16(&self.payload_len) as usize
    }
}
