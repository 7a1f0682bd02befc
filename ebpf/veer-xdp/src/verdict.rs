//! What the program decides for a packet, and why it drops one.

use veer_abi::GlobalCounter;

/// Why a packet for a VIP was dropped; each reason has its global counter.
#[derive(Clone, Copy)]
pub enum Drop {
    Truncated,
    Malformed,
    Fragment,
    Ipv6ExtHeader,
    NoBackend,
    BadBackend,
    Redirect,
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
        }
    }
}
