//! Ethernet II.

/// EtherType of IPv4.
pub const ETH_P_IP: u16 = 0x0800;
/// EtherType of IPv6.
pub const ETH_P_IPV6: u16 = 0x86dd;

/// An Ethernet II header.
#[repr(C)]
pub struct EthHdr {
    /// Destination MAC.
    pub dst: [u8; 6],
    /// Source MAC.
    pub src: [u8; 6],
    /// EtherType, big-endian.
    pub ether_type: [u8; 2],
}

impl EthHdr {
    /// Header length in bytes.
    pub const LEN: usize = 14;

    /// The EtherType ([`ETH_P_IP`], [`ETH_P_IPV6`], ...).
    #[inline(always)]
    pub fn ether_type(&self) -> u16 {
        super::field::be16(&self.ether_type)
    }
}

/// Copies a MAC address. As a plain assignment LLVM emits a `memmove`
/// call, which the BPF backend leaves as a call to a byte loop; volatile
/// byte stores stay six inline stores.
#[inline(always)]
pub fn copy_mac(to: &mut [u8; 6], from: &[u8; 6]) {
    for i in 0..6 {
        // SAFETY: `i` is within both arrays.
        unsafe { core::ptr::write_volatile(to.as_mut_ptr().add(i), *from.as_ptr().add(i)) };
    }
}
