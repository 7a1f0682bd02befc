//! ICMP (RFC 792) and ICMPv6 (RFC 4443): the fixed header of an error message.

/// IPv4 ICMP error types that quote the offending packet and concern a flow:
/// destination unreachable.
pub const ICMP_DEST_UNREACH: u8 = 3;
/// IPv4 ICMP: time exceeded.
pub const ICMP_TIME_EXCEEDED: u8 = 11;
/// IPv4 ICMP: parameter problem.
pub const ICMP_PARAMETERPROB: u8 = 12;

/// ICMPv6 error types (1: unreachable, 2: packet too big, 3: time exceeded,
/// 4: parameter problem): every type below 128.
pub const ICMPV6_ERROR_MAX: u8 = 4;

/// The first 8 bytes of an ICMP or ICMPv6 message; an error's quoted packet follows.
#[repr(C)]
pub struct IcmpHdr {
    /// Type.
    pub kind: u8,
    /// Code within the type.
    pub code: u8,
    /// Checksum.
    pub check: [u8; 2],
    /// Type-specific (the MTU of "packet too big", ...).
    pub rest: [u8; 4],
}

impl IcmpHdr {
    /// Header length in bytes.
    pub const LEN: usize = 8;

    /// Whether this IPv4 ICMP message is an error that quotes a packet.
    #[inline(always)]
    pub fn is_v4_error(&self) -> bool {
        matches!(self.kind, ICMP_DEST_UNREACH | ICMP_TIME_EXCEEDED | ICMP_PARAMETERPROB)
    }

    /// Whether this ICMPv6 message is an error that quotes a packet.
    #[inline(always)]
    pub fn is_v6_error(&self) -> bool {
        self.kind >= 1 && self.kind <= ICMPV6_ERROR_MAX
    }
}
