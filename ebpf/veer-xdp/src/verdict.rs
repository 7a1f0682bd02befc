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
    /// A header runs past the frame or its IP length.
    Truncated,
    /// A header field is invalid (version, length, offsets).
    Malformed,
    /// An IP fragment: no ports to balance by.
    Fragment,
    /// An IPv6 extension header, not walked.
    Ipv6ExtHeader,
    /// No backend can take the flow, and the service has no fallback.
    NoBackend,
    /// A backend (or its SNAT address) missing from the tables.
    BadBackend,
    /// `XDP_REDIRECT` to the backend's interface failed.
    Redirect,
    /// An ICMP error about a flow no backend has.
    IcmpNoFlow,
    /// No SNAT endpoint free for a new NAT flow.
    NatExhausted,
    /// NAT: the next hop's MAC is not resolved yet.
    NoNeighbour,
    /// NAT: no route to the packet's new destination.
    NoRoute,
    /// A tail call's slot is empty (veerd has not filled the jump table).
    TailCall,
    /// A SYN the backend's agent bounced twice.
    Bounced,
    /// An ACK for no NAT flow whose SYN cookie is not valid (under a flood).
    BadCookie,
    /// A client's packet while veer still opens its connection to the backend.
    ProxyWaiting,
    /// A NAT packet whose TTL (hop limit) ran out.
    TtlExpired,
    /// A DSR packet bounced by its flow's backend with nowhere else to go.
    SecondChance,
    /// A SYN-ACK to a connection veer's SYN proxy opened that does not
    /// acknowledge veer's SYN.
    ForeignSynAck,
    /// veerd's rescue of a SYN that no longer needs one (answered, moved
    /// on): a refusal made up by veerd never reaches a client.
    StaleRescue,
    /// Too big for its tunnel's path once encapsulated, with no ICMP error
    /// allowed (IPv4 without Don't Fragment), or no room for the header.
    TooBig,
    /// Out of a tunnel to the balancer, and not what an agent bounces (TCP
    /// for a service that is not NAT's): not forwarded.
    NotABounce,
}

impl Drop {
    /// The global counter of this reason.
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
            Drop::BadCookie => GlobalCounter::DropBadCookie,
            Drop::ProxyWaiting => GlobalCounter::DropProxyWaiting,
            Drop::TtlExpired => GlobalCounter::DropTtlExpired,
            Drop::SecondChance => GlobalCounter::DropSecondChance,
            Drop::ForeignSynAck => GlobalCounter::DropForeignSynAck,
            Drop::StaleRescue => GlobalCounter::DropStaleRescue,
            Drop::TooBig => GlobalCounter::DropTooBig,
            Drop::NotABounce => GlobalCounter::DropNotABounce,
        }
    }
}

/// A program's result as an XDP action: a drop is counted by its reason.
#[inline(always)]
pub fn verdict(r: Result<u32, Drop>) -> u32 {
    match r {
        Ok(action) => action,
        Err(reason) => {
            crate::stats::count(reason.counter());
            aya_ebpf::bindings::xdp_action::XDP_DROP
        }
    }
}
