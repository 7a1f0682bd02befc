//! What the program decides for a packet, and why it drops one.

use aya_ebpf::bindings::xdp_action;
use veer_abi::GlobalCounter;

use crate::stats;

/// Not veer's to handle: the local stack's, counted as passed.
#[inline(always)]
pub fn pass() -> u32 {
    stats::count(GlobalCounter::Passed);
    xdp_action::XDP_PASS
}

/// Why a packet for a VIP was dropped; each reason has its global counter.
///
/// `repr(u32)`: as wide as an XDP action, so `Result<u32, Drop>` has one fully
/// defined payload. A narrower enum leaves half of it undefined on `Ok`, LLVM
/// then reads that undefined register, and the verifier rejects the load
/// ("R9 !read_ok").
#[derive(Clone, Copy)]
#[repr(u32)]
pub enum Drop {
    Truncated,
    Malformed,
    Fragment,
    Ipv6ExtHeader,
    NoBackend,
    BadBackend,
    Redirect,
    IcmpNoFlow,
    NatExhausted,
    NoNeighbour,
    NoRoute,
    TailCall,
    Bounced,
}

impl Drop {
    #[inline(always)]
    pub fn counter(self) -> GlobalCounter {
        match self {
            Drop::Truncated => GlobalCounter::DropTruncated,
            Drop::Malformed => GlobalCounter::DropMalformed,
            Drop::Fragment => GlobalCounter::DropFragment,
            Drop::Ipv6ExtHeader => GlobalCounter::DropIpv6ExtHeader,
            Drop::NoBackend => GlobalCounter::DropNoBackend,
            Drop::BadBackend => GlobalCounter::DropBadBackend,
            Drop::Redirect => GlobalCounter::DropRedirect,
            Drop::IcmpNoFlow => GlobalCounter::DropIcmpNoFlow,
            Drop::NatExhausted => GlobalCounter::DropNatExhausted,
            Drop::NoNeighbour => GlobalCounter::DropNoNeighbour,
            Drop::NoRoute => GlobalCounter::DropNoRoute,
            Drop::TailCall => GlobalCounter::DropTailCall,
            Drop::Bounced => GlobalCounter::DropBounced,
        }
    }
}
