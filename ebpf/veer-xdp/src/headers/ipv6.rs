//! IPv6 (RFC 8200).

/// Next-header values that are extension headers veer does not walk.
pub const NEXTHDR_HOP: u8 = 0;
pub const NEXTHDR_ROUTING: u8 = 43;
pub const NEXTHDR_FRAGMENT: u8 = 44;
pub const NEXTHDR_AUTH: u8 = 51;
pub const NEXTHDR_DEST: u8 = 60;

/// The fixed IPv6 header.
#[repr(C)]
pub struct Ipv6Hdr {
    pub vtc_flow: [u8; 4],
    pub payload_len: [u8; 2],
    pub next_header: u8,
    pub hop_limit: u8,
    pub src: [u8; 16],
    pub dst: [u8; 16],
}

impl Ipv6Hdr {
    pub const LEN: usize = 40;

    #[inline(always)]
    pub fn version(&self) -> u8 {
        self.vtc_flow[0] >> 4
    }

    #[inline(always)]
    pub fn payload_len(&self) -> usize {
        u16::from_be_bytes(self.payload_len) as usize
    }
}
