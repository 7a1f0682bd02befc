//! IPv4 (RFC 791).

/// The fixed part of an IPv4 header.
#[repr(C)]
pub struct Ipv4Hdr {
    pub version_ihl: u8,
    pub tos: u8,
    pub tot_len: [u8; 2],
    pub id: [u8; 2],
    pub frag_off: [u8; 2],
    pub ttl: u8,
    pub proto: u8,
    pub check: [u8; 2],
    pub src: [u8; 4],
    pub dst: [u8; 4],
}

impl Ipv4Hdr {
    #[inline(always)]
    pub fn version(&self) -> u8 {
        self.version_ihl >> 4
    }

    /// Header length in bytes (IHL x 4): 20 to 60.
    #[inline(always)]
    pub fn header_len(&self) -> usize {
        ((self.version_ihl & 0x0f) as usize) * 4
    }

    #[inline(always)]
    pub fn total_len(&self) -> usize {
        u16::from_be_bytes(self.tot_len) as usize
    }

    /// Either More Fragments or a non-zero offset: this is a fragment.
    #[inline(always)]
    pub fn is_fragment(&self) -> bool {
        u16::from_be_bytes(self.frag_off) & 0x3fff != 0
    }
}
