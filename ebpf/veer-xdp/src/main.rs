//! veer's XDP dataplane.
//!
//! Per packet, top to bottom:
//! parse ([`parse`]) -> service lookup -> connection table ([`conntrack`]) ->
//! scheduler for new or orphaned flows ([`scheduler`]) -> counters ([`stats`])
//! -> DSR rewrite and send ([`forward`]).
#![no_std]
#![no_main]

mod access;
mod conntrack;
mod forward;
mod headers;
mod maps;
mod parse;
mod scheduler;
mod stats;
mod verdict;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use veer_abi::{GlobalCounter, ServiceKey, NO_BACKEND, SERVICE_F_FALLBACK_PASS};

use crate::{maps::SERVICES, scheduler::backend, verdict::Drop};

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
    let bytes = (ctx.data_end() - ctx.data()) as u64;

    if !conntrack::opens_connection(pkt.tcp_flags) {
        if let Some((id, b)) = conntrack::lookup(&svc, &key, pkt.tcp_flags) {
            stats::forwarded(svc.id, id, bytes, false);
            return forward::to_backend(ctx, b);
        }
    }
    match scheduler::pick(&svc, &key) {
        Some((id, b)) => {
            conntrack::pin(&svc, &key, id);
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
        let b = backend(svc.fallback_backend).ok_or(Drop::BadBackend)?;
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
