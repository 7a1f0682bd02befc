//! veer's XDP dataplane.
//!
//! Per packet, top to bottom:
//! parse ([`parse`]) -> service lookup -> connection tables ([`conntrack`]) ->
//! scheduler for new or orphaned flows ([`scheduler`]) -> counters ([`stats`])
//! -> DSR rewrite and send ([`forward`]). An ICMP error about a VIP flow
//! goes to that flow's backend ([`icmp`]).
#![no_std]
#![no_main]

mod access;
mod conntrack;
mod forward;
mod headers;
mod icmp;
mod maps;
mod parse;
mod scheduler;
mod stats;
mod verdict;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use veer_abi::{GlobalCounter, ServiceKey, NO_BACKEND, SERVICE_F_FALLBACK_PASS};

use crate::{
    conntrack::Pinned,
    maps::SERVICES,
    scheduler::{owned_backend, Purpose},
    verdict::Drop,
};

#[xdp]
pub fn veer_xdp(ctx: XdpContext) -> u32 {
    match balance(&ctx) {
        Ok(action) => action,
        Err(reason) => {
            stats::count(reason.counter());
            xdp_action::XDP_DROP
        }
    }
}

#[inline(always)]
fn balance(ctx: &XdpContext) -> Result<u32, Drop> {
    let Some(pkt) = parse::flow_of(ctx)? else {
        return Ok(pass());
    };
    let key = pkt.key;
    let skey = ServiceKey { addr: key.dst, port: key.dport, proto: key.proto, _pad: 0 };
    // SAFETY: userspace replaces service values whole; we copy it out at once.
    let Some(svc) = (unsafe { SERVICES.get(&skey) }).copied() else {
        return Ok(pass());
    };
    if pkt.is_icmp_error() {
        return icmp::to_flow_backend(ctx, &svc, &key);
    }
    let bytes = (ctx.data_end() - ctx.data()) as u64;

    let stale = if conntrack::opens_connection(pkt.tcp_flags()) {
        if let Some((id, b)) = conntrack::reopen(&svc, &key) {
            // A retransmitted SYN: same backend as the first.
            stats::forwarded(svc.id, id, bytes, false);
            return forward::to_backend(ctx, b);
        }
        false
    } else {
        match conntrack::established(&svc, &key, pkt.tcp_flags()) {
            Pinned::Hit(id, b) => {
                stats::forwarded(svc.id, id, bytes, false);
                return forward::to_backend(ctx, b);
            }
            Pinned::Stale => true,
            Pinned::Missing => {
                if let Some((id, b)) = conntrack::promote(&svc, &key, pkt.tcp_flags()) {
                    stats::forwarded(svc.id, id, bytes, false);
                    return forward::to_backend(ctx, b);
                }
                if key.proto == veer_abi::IPPROTO_TCP {
                    stats::count(GlobalCounter::ConnLost);
                }
                false
            }
        }
    };
    match scheduler::pick(&svc, &key, Purpose::NewFlow) {
        Some((id, b)) => {
            if stale {
                conntrack::repin(&svc, &key, id);
            } else {
                conntrack::pin_new(&svc, &key, id);
            }
            stats::forwarded(svc.id, id, bytes, true);
            forward::to_backend(ctx, b)
        }
        None => no_backend(ctx, &svc, bytes),
    }
}

/// No backend can take the flow: the service's fallback decides. Flows sent to
/// the fallback backend are not pinned, so they return as soon as one is up.
#[inline(always)]
fn no_backend(ctx: &XdpContext, svc: &veer_abi::Service, bytes: u64) -> Result<u32, Drop> {
    if svc.fallback_backend != NO_BACKEND {
        let b = owned_backend(svc, svc.fallback_backend).ok_or(Drop::BadBackend)?;
        stats::count(GlobalCounter::FallbackBackend);
        stats::forwarded(svc.id, svc.fallback_backend, bytes, false);
        return forward::to_backend(ctx, b);
    }
    if svc.flags & SERVICE_F_FALLBACK_PASS != 0 {
        stats::count(GlobalCounter::FallbackPassed);
        return Ok(xdp_action::XDP_PASS);
    }
    Err(Drop::NoBackend)
}

#[inline(always)]
fn pass() -> u32 {
    stats::count(GlobalCounter::Passed);
    xdp_action::XDP_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
