//! ICMP errors about a VIP flow, sent on to the flow's backend.
//!
//! With DSR the backend answers the client from the VIP, so a router's
//! "fragmentation needed" (ICMPv6 "packet too big", "unreachable") about such
//! an answer is addressed to the VIP and reaches the load balancer, not the
//! backend whose TCP stack needs it. Left to the local stack, path MTU
//! discovery breaks. The quoted packet is the backend's answer; turned around,
//! it is the flow's key, which finds the flow's backend as its packets would
//! (the connection table, else the hash a first packet would get). An ICMP
//! error never creates or refreshes an entry. (`parse` finds the flow an
//! error quotes.)

use aya_ebpf::programs::XdpContext;
use veer_abi::{FlowKey, GlobalCounter, Service};

use crate::{
    conntrack, forward,
    scheduler::{self, Purpose},
    stats,
    verdict::Drop,
};

/// Sends an ICMP error about `key` to the backend that has (or would get) the flow.
#[inline(always)]
pub fn to_flow_backend(ctx: &XdpContext, svc: &Service, key: &FlowKey) -> Result<u32, Drop> {
    // Matched, not chained through closures: a closure returning the pair
    // would be a function of its own, and its BTF (an enum with a niche)
    // is one the kernel refuses.
    let (id, b) = match conntrack::peek(svc, key) {
        Some(f) => (f.id, f.backend),
        None => scheduler::pick(svc, key, Purpose::Recompute, veer_abi::NO_BACKEND).ok_or(Drop::IcmpNoFlow)?,
    };
    stats::count(GlobalCounter::IcmpToBackend);
    forward::to_backend(ctx, id, b, key)
}
