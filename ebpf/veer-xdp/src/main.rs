//! veer's XDP dataplane.
//!
//! Per packet, top to bottom:
//! parse ([`parse`]) -> no VIP's? pass ([`vip_filter`]) -> an established
//! flow's entry, its service by index ([`conntrack::established_early`]) ->
//! service lookup -> connection tables ([`conntrack`]) ->
//! scheduler for new or orphaned flows ([`scheduler`]) -> counters ([`stats`])
//! -> DSR rewrite and send ([`forward`]), or NAT rewrite and route ([`nat`],
//! [`fib`]). An ICMP error about a VIP flow goes to that flow's backend
//! ([`icmp`]); a backend's answer to a NAT flow goes back to its client.
//!
//! Failures seen in the traffic ([`passive`]): a SYN retransmitted or
//! bounced (veer-agent) moves to another backend, a NAT backend's refusal
//! becomes the client's SYN again ([`syn_stash`]); the backend is held
//! suspect and veerd is told. A TC egress program ([`vip_path`]) sends
//! VIP-path health checks to their backend's MAC.
#![no_std]
#![no_main]
// `active`'s atomic add is BPF assembly.
#![feature(asm_experimental_arch)]

mod access;
mod active;
mod affinity;
mod conntrack;
mod early;
mod forward;
mod fib;
mod headers;
mod icmp;
mod maps;
mod nat;
mod nat_icmp;
mod parse;
mod scheduler;
mod passive;
mod stats;
mod syn_stash;
mod verdict;
mod vip_filter;
mod vip_path;

use aya_ebpf::{
    bindings::xdp_action,
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use veer_abi::{
    GlobalCounter, ServiceKey, JUMP_NAT, JUMP_NAT_RETURN, NO_BACKEND, SERVICE_F_FALLBACK_PASS, SERVICE_F_NAT,
    SERVICE_F_PASSIVE,
};

use crate::{
    conntrack::{Flow, Pinned, Reopened},
    nat::Slot,
    maps::{JUMPS, SERVICES},
    scheduler::{owned_backend, Purpose},
    verdict::{pass, Drop},
};

/// The entry program, attached to the interfaces. NAT services and NAT
/// answers continue in their own programs (tail calls): each program has a
/// 512-byte stack of its own, and the DSR path carries no NAT code.
#[xdp]
pub fn veer_xdp(ctx: XdpContext) -> u32 {
    verdict(balance::<false>(&ctx))
}

/// A NAT service's packets (tail-called from `veer_xdp`).
#[xdp]
pub fn veer_nat(ctx: XdpContext) -> u32 {
    verdict(balance::<true>(&ctx))
}

/// A backend's answer to a NAT flow (tail-called from `veer_xdp`).
#[xdp]
pub fn veer_nat_return(ctx: XdpContext) -> u32 {
    verdict(nat_return(&ctx))
}

/// An ICMP error about a NAT packet toward a backend, on to the client
/// (tail-called; one program per direction and family keeps each within
/// its stack).
#[xdp]
pub fn veer_nat_icmp_client4(ctx: XdpContext) -> u32 {
    verdict(nat_icmp::<false, true>(&ctx))
}

/// IPv6 of [`veer_nat_icmp_client4`].
#[xdp]
pub fn veer_nat_icmp_client6(ctx: XdpContext) -> u32 {
    verdict(nat_icmp::<false, false>(&ctx))
}

/// An ICMP error about a NAT answer toward a client, on to the backend.
#[xdp]
pub fn veer_nat_icmp_backend4(ctx: XdpContext) -> u32 {
    verdict(nat_icmp::<true, true>(&ctx))
}

/// IPv6 of [`veer_nat_icmp_backend4`].
#[xdp]
pub fn veer_nat_icmp_backend6(ctx: XdpContext) -> u32 {
    verdict(nat_icmp::<true, false>(&ctx))
}

/// TC egress: a VIP-path health check to its backend's MAC (see [`vip_path`]).
#[classifier]
pub fn veer_vip_path(ctx: TcContext) -> i32 {
    vip_path::readdress(&ctx)
}

#[inline(always)]
fn nat_icmp<const TO_BACKEND: bool, const V4: bool>(ctx: &XdpContext) -> Result<u32, Drop> {
    let Some(pkt) = nat_icmp::parse::<V4>(ctx)? else {
        return Ok(pass());
    };
    if TO_BACKEND {
        nat_icmp::to_backend::<V4>(ctx, &pkt)
    } else {
        nat_icmp::to_client::<V4>(ctx, &pkt)
    }
}

/// The `JUMPS` slot for an ICMP error about a NAT flow.
#[inline(always)]
fn icmp_slot(pkt: &parse::VipPacket, to_backend: bool) -> u32 {
    let v4 = veer_abi::is_ipv4_mapped(&pkt.key.dst);
    match (to_backend, v4) {
        (false, true) => veer_abi::JUMP_NAT_ICMP_CLIENT4,
        (false, false) => veer_abi::JUMP_NAT_ICMP_CLIENT6,
        (true, true) => veer_abi::JUMP_NAT_ICMP_BACKEND4,
        (true, false) => veer_abi::JUMP_NAT_ICMP_BACKEND6,
    }
}

#[inline(always)]
fn verdict(r: Result<u32, Drop>) -> u32 {
    match r {
        Ok(action) => action,
        Err(reason) => {
            stats::count(reason.counter());
            xdp_action::XDP_DROP
        }
    }
}

#[inline(always)]
fn nat_return(ctx: &XdpContext) -> Result<u32, Drop> {
    match parse::flow_of(ctx)? {
        Some(pkt) if !pkt.is_icmp_error() => match nat::reverse(ctx, &pkt)? {
            nat::Returned::Done(action) => Ok(action),
            nat::Returned::Resend => jump(ctx, JUMP_NAT),
        },
        _ => Ok(pass()),
    }
}

#[inline(always)]
fn jump(ctx: &XdpContext, index: u32) -> Result<u32, Drop> {
    // SAFETY: the jump table holds programs of this object, loaded by veerd.
    unsafe { JUMPS.tail_call(ctx, index) };
    // Only reached when the slot is empty.
    Err(Drop::TailCall)
}

#[inline(always)]
fn balance<const NAT: bool>(ctx: &XdpContext) -> Result<u32, Drop> {
    let parsed = if NAT { parse::flow_of_outlined(ctx) } else { parse::flow_of(ctx) };
    let Some(pkt) = parsed? else {
        return Ok(pass());
    };
    let key = &pkt.key;
    // The NAT program's packets were looked at here already, by the entry program.
    if !NAT && !vip_filter::may_be_vip(&key.dst) {
        return not_for_a_vip(ctx, &pkt);
    }
    let mut missing = false;
    if !NAT && !pkt.is_icmp_error() && !conntrack::opens_connection(pkt.tcp_flags()) {
        match early::send(ctx, key, pkt.bits) {
            early::MISSING => missing = true,
            early::UNSURE => {}
            early::NAT => return jump(ctx, JUMP_NAT),
            action => {
                if action & early::ACCOUNT != 0 {
                    active::apply_pending();
                }
                return Ok(action & !early::ACCOUNT);
            }
        }
    }
    let skey = ServiceKey { addr: key.dst, port: key.dport, proto: key.proto, _pad: 0 };
    // SAFETY: userspace replaces service values whole; we copy it out at once.
    let Some(svc) = (unsafe { SERVICES.get(&skey) }).copied() else {
        return if NAT { Ok(pass()) } else { not_for_a_vip(ctx, &pkt) };
    };
    if !NAT && svc.flags & SERVICE_F_NAT != 0 {
        return jump(ctx, if pkt.is_icmp_error() { icmp_slot(&pkt, true) } else { JUMP_NAT });
    }
    if pkt.is_icmp_error() {
        // Errors about NAT flows went to `nat_icmp`'s programs above.
        if NAT || svc.flags & SERVICE_F_NAT != 0 {
            return Ok(pass());
        }
        return icmp::to_flow_backend(ctx, &svc, key);
    }

    let opening = conntrack::opens_connection(pkt.tcp_flags());
    // The backend that just failed this connection, and the resends it has had.
    let (mut avoid, mut carried) = (NO_BACKEND, 0);
    let stale = if opening {
        if NAT {
            nat::release_stale(key);
        }
        // A DSR backend's agent bounces a SYN from that backend's MAC.
        let src_mac = if NAT { [0; 6] } else { unsafe { (*access::ptr_at::<headers::eth::EthHdr>(ctx, 0)?).src } };
        match conntrack::reopen::<NAT>(&svc, key, &src_mac) {
            Reopened::Same(f) => {
                stats::forwarded(svc.id, f.id, frame_bytes(ctx), false);
                return deliver::<NAT>(ctx, &pkt, &f);
            }
            Reopened::Failed { avoid: failed, resends } => (avoid, carried) = (failed, resends),
            Reopened::BouncedTwice => return Err(Drop::Bounced),
            Reopened::Fresh => {}
        }
        false
    } else {
        // `missing`: the early lookup found no entry; do not look again.
        let pinned = if missing { Pinned::Missing } else { conntrack::established(&svc, key, pkt.tcp_flags()) };
        match pinned {
            Pinned::Hit(f) => {
                stats::forwarded(svc.id, f.id, frame_bytes(ctx), false);
                return deliver::<NAT>(ctx, &pkt, &f);
            }
            Pinned::Stale => true,
            Pinned::Missing => {
                if let Some(f) = conntrack::promote(&svc, key, pkt.tcp_flags()) {
                    stats::forwarded(svc.id, f.id, frame_bytes(ctx), false);
                    return deliver::<NAT>(ctx, &pkt, &f);
                }
                if key.proto == veer_abi::IPPROTO_TCP {
                    stats::count(GlobalCounter::ConnLost);
                }
                false
            }
        }
    };
    let picked = match scheduler::pick(&svc, key, Purpose::NewFlow, avoid) {
        // NAT pins its fallback flows like any other: their answers need a
        // mapping, and a NAT flow cannot change backends mid-connection.
        None if NAT && svc.fallback_backend != NO_BACKEND => {
            stats::count(GlobalCounter::FallbackBackend);
            owned_backend(&svc, svc.fallback_backend).map(|b| (svc.fallback_backend, b))
        }
        p => p,
    };
    match picked {
        Some((id, b)) => {
            if affinity::persists(&svc) {
                affinity::remember(&svc, &key.src, id);
            }
            let nat = if NAT { nat::allocate(&svc, key, id, b)? } else { Slot::NONE };
            if stale {
                conntrack::repin(&svc, key, id, nat);
            } else {
                conntrack::pin_new(&svc, key, id, nat, carried);
            }
            if NAT && opening && svc.flags & SERVICE_F_PASSIVE != 0 {
                syn_stash::keep(ctx, &pkt)?;
            }
            stats::forwarded(svc.id, id, frame_bytes(ctx), true);
            deliver::<NAT>(ctx, &pkt, &Flow { id, backend: b, nat })
        }
        None => no_backend::<NAT>(ctx, &svc),
    }
}

/// A packet to no VIP: maybe a backend's answer to a NAT flow (or an ICMP
/// error about one), else the kernel's.
#[inline(always)]
fn not_for_a_vip(ctx: &XdpContext, pkt: &parse::VipPacket) -> Result<u32, Drop> {
    if nat::is_return_port(pkt) {
        return jump(ctx, if pkt.is_icmp_error() { icmp_slot(pkt, false) } else { JUMP_NAT_RETURN });
    }
    Ok(pass())
}

/// The frame's length, for the byte counters: read where it is counted, not
/// kept live across the whole path (a register the entry program's stack
/// has no room to spill).
#[inline(always)]
fn frame_bytes(ctx: &XdpContext) -> u64 {
    (ctx.data_end() - ctx.data()) as u64
}

/// Sends a packet of `f`: DSR (the Ethernet header) or NAT (addresses and ports).
#[inline(always)]
fn deliver<const NAT: bool>(ctx: &XdpContext, pkt: &parse::VipPacket, f: &Flow) -> Result<u32, Drop> {
    if NAT {
        nat::forward(ctx, pkt, f.backend, &f.nat)
    } else {
        forward::to_backend(ctx, f.backend)
    }
}

/// No backend can take the flow: the service's fallback decides. DSR flows
/// sent to the fallback backend are not pinned, so they return as soon as
/// one is up (NAT's were scheduled on it above).
#[inline(always)]
fn no_backend<const NAT: bool>(ctx: &XdpContext, svc: &veer_abi::Service) -> Result<u32, Drop> {
    if !NAT && svc.fallback_backend != NO_BACKEND {
        let b = owned_backend(svc, svc.fallback_backend).ok_or(Drop::BadBackend)?;
        stats::count(GlobalCounter::FallbackBackend);
        stats::forwarded(svc.id, svc.fallback_backend, frame_bytes(ctx), false);
        return forward::to_backend(ctx, b);
    }
    if svc.flags & SERVICE_F_FALLBACK_PASS != 0 {
        stats::count(GlobalCounter::FallbackPassed);
        return Ok(xdp_action::XDP_PASS);
    }
    Err(Drop::NoBackend)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
