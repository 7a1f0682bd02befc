//! TCP and UDP: only what balancing needs (ports, TCP header length).

/// The fixed part of a TCP header.
#[repr(C)]
pub struct TcpHdr {
    /// Source port.
    pub sport: [u8; 2],
    /// Destination port.
    pub dport: [u8; 2],
    /// Sequence number.
    pub seq: [u8; 4],
    /// Acknowledgment number.
    pub ack: [u8; 4],
    /// Data offset (high nibble of the first byte) and flags.
    pub doff_flags: [u8; 2],
    /// Receive window.
    pub window: [u8; 2],
    /// Checksum (pseudo-header, header, payload).
    pub check: [u8; 2],
    /// Urgent pointer.
    pub urg: [u8; 2],
}

/// TCP flag bits (second byte of `doff_flags`): FIN.
pub const TCP_FIN: u8 = 0x01;
/// TCP flag: SYN.
pub const TCP_SYN: u8 = 0x02;
/// TCP flag: RST.
pub const TCP_RST: u8 = 0x04;
/// TCP flag: ACK.
pub const TCP_ACK: u8 = 0x10;

impl TcpHdr {
    /// The flag bits (`TCP_*`).
    #[inline(always)]
    pub fn flags(&self) -> u8 {
        self.doff_flags[1]
    }

    /// Header length in bytes (data offset x 4); at least 20 when valid.
    #[inline(always)]
    pub fn header_len(&self) -> usize {
        ((self.doff_flags[0] >> 4) as usize) * 4
    }
}

/// A UDP header.
#[repr(C)]
pub struct UdpHdr {
    /// Source port.
    pub sport: [u8; 2],
    /// Destination port.
    pub dport: [u8; 2],
    /// Length of header and payload.
    pub len: [u8; 2],
    /// Checksum (pseudo-header, header, payload).
    pub check: [u8; 2],
}

impl UdpHdr {
    /// Header length in bytes.
    pub const LEN: usize = 8;

    /// Length of header and payload in bytes.
    #[inline(always)]
    pub fn len(&self) -> usize {
        super::field::be16(&self.len) as usize
    }
}
