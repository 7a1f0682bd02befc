//! TCP and UDP: only what balancing needs (ports, TCP header length).

/// The fixed part of a TCP header.
#[repr(C)]
pub struct TcpHdr {
    pub sport: [u8; 2],
    pub dport: [u8; 2],
    pub seq: [u8; 4],
    pub ack: [u8; 4],
    pub doff_flags: [u8; 2],
    pub window: [u8; 2],
    pub check: [u8; 2],
    pub urg: [u8; 2],
}

/// TCP flag bits (second byte of `doff_flags`).
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

impl TcpHdr {
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
    pub sport: [u8; 2],
    pub dport: [u8; 2],
    pub len: [u8; 2],
    pub check: [u8; 2],
}

impl UdpHdr {
    pub const LEN: usize = 8;

    #[inline(always)]
    pub fn len(&self) -> usize {
        u16::from_be_bytes(self.len) as usize
    }
}
