//! IPv4 (RFC 791).

/// The fixed part of an IPv4 header.
#[repr(C)]
pub struct Ipv4Hdr {
    /// Version (high nibble) and header length in words (low nibble).
    pub version_ihl: u8,
    /// DSCP and ECN.
    pub tos: u8,
    /// Length of the whole packet.
    pub tot_len: [u8; 2],
    /// Identification (fragments).
    pub id: [u8; 2],
    /// Flags and fragment offset.
    pub frag_off: [u8; 2],
    /// Time to live.
    pub ttl: u8,
    /// The payload's protocol.
    pub proto: u8,
    /// Header checksum.
    pub check: [u8; 2],
    /// Source address.
    pub src: [u8; 4],
    /// Destination address.
    pub dst: [u8; 4],
}

impl Ipv4Hdr {
    /// Length of a header without options.
    pub const LEN: usize = 20;

    /// IP version: 4 when valid.
    #[inline(always)]
    pub fn version(&self) -> u8 {
        self.version_ihl >> 4
    }

    /// Header length in bytes (IHL x 4): 20 to 60.
    #[inline(always)]
    pub fn header_len(&self) -> usize {
        ((self.version_ihl & 0x0f) as usize) * 4
    }

    /// Length of the whole packet in bytes.
    #[inline(always)]
    pub fn total_len(&self) -> usize {
        super::field::be16(&self.tot_len) as usize
    }

    /// Either More Fragments or a non-zero offset: this is a fragment.
    #[inline(always)]
    pub fn is_fragment(&self) -> bool {
        super::field::be16(&self.frag_off) & 0x3fff != 0
    }
}
