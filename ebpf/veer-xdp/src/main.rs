//! veer's XDP dataplane.
//!
//! Per packet, top to bottom ([`balance`]):
//! parse ([`parse`]) -> no VIP's? pass ([`vip_filter`]) -> an established
//! flow's entry, its service by index ([`early`]) -> service lookup
//! ([`services`]) -> connection tables ([`conntrack`], a SYN's earlier
//! attempt in [`reopen`]) -> scheduler for new or orphaned flows
//! ([`scheduler`], with [`affinity`] and [`active`]) -> counters
//! ([`stats`]) -> DSR rewrite and send ([`forward`], routed backends
//! through a [`tunnel`]), or NAT rewrite and route ([`nat`], [`snat`],
//! [`fib`]). An established flow's packet is sent by [`early`], NAT's
//! client packets too; a NAT service's other packets (handed over parsed,
//! [`handoff`]) and NAT answers run in programs of their own ([`jumps`]).
//! An ICMP error about a
//! VIP flow goes to that flow's backend ([`icmp`]); a backend's answer to a
//! NAT flow goes back to its client.
//!
//! Failures seen in the traffic ([`passive`]): a SYN retransmitted or
//! bounced (veer-agent) moves to another backend, a NAT backend's refusal
//! becomes the client's SYN again ([`nat::syn_stash`]); the backend is held
//! suspect and veerd is told. A DSR packet of an established flow that its
//! backend's agent bounces (no socket there owns it, after a ring change)
//! goes to the previous ring's backend ([`second_chance`]). A TC egress
//! program ([`vip_path`]) sends VIP-path health checks to their backend's MAC.
//!
//! Each module declares the maps and per-CPU scratch it uses.
#![no_std]
#![no_main]
// `active`'s atomic add is BPF assembly.
#![feature(asm_experimental_arch)]

// Layers, bottom up: a module imports only from the groups above its own
// (no circles: scripts/module-graph.py). Wire formats, counters, and
// the tables userspace writes; the clock; atomic instructions; word stores:
mod atomic;
mod backends;
mod clock;
mod headers;
mod services;
mod stats;
mod store;
mod vip_filter;
// Verdicts; suspect backends.
mod passive;
mod verdict;
// Bounds-checked packet access; the tail-call table; client persistence.
mod access;
mod affinity;
mod jumps;
// Parsing; active flows; SNAT endpoints (and the fleet's NAT flows);
// routing; DSR sending (tunnels).
mod active;
mod fib;
mod forward;
mod nat_sync;
mod parse;
mod snat;
mod tunnel;
// The connection tables; the schedulers.
mod conntrack;
mod scheduler;
// NAT's data path.
mod nat;
// Established flows' shortcut and handoff; ICMP errors; checks; second chances.
mod early;
mod handoff;
mod icmp;
mod quic;
mod reopen;
mod second_chance;
mod vip_path;

use aya_ebpf::{
    bindings::xdp_action,
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use veer_abi::{
    FlowKey, GlobalCounter, Service, CONN_F_PROXIED, JUMP_NAT_COOKIE, JUMP_SECOND_CHANCE, NO_BACKEND,
    SERVICE_F_FALLBACK_PASS, SERVICE_F_NAT, SERVICE_F_PASSIVE, SERVICE_F_QUIC,
};

use crate::{
    backends::owned_backend,
    conntrack::{Flow, Pinned},
    parse::VipPacket,
    reopen::Reopened,
    scheduler::Purpose,
    snat::Slot,
    verdict::{pass, verdict, Drop},
};

/// The entry program, attached to the interfaces (NAT goes on in [`jumps`]).
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
    verdict(nat::answer(&ctx))
}

/// A packet a tunnelled backend's agent sent back (tail-called from
/// `veer_xdp`): out of its tunnel, then balanced as the entry program does
/// (see [`tunnel::returned`]).
#[xdp]
pub fn veer_tunnel_return(ctx: XdpContext) -> u32 {
    if !tunnel::returned::take_out(&ctx) {
        return pass();
    }
    // What the agent sends back: TCP for a DSR service. Anything else out
    // of a tunnel is no bounce, and is not the kernel's to route either.
    match parse::flow_of(&ctx) {
        Ok(Some(pkt)) if tunnel::returned::is_bounce(&pkt) => verdict(balance::<false>(&ctx)),
        _ => verdict(Err(Drop::NotABounce)),
    }
}

/// TC egress: a VIP-path health check to its backend's MAC (see [`vip_path`]).
#[classifier]
pub fn veer_vip_path(ctx: TcContext) -> i32 {
    vip_path::readdress(&ctx)
}

/// One packet, in the entry program (`NAT` false) or the NAT program: up to
/// its service; [`flow`] goes on from there.
#[inline(always)]
fn balance<const NAT: bool>(ctx: &XdpContext) -> Result<u32, Drop> {
    // The NAT program's packet as the entry program parsed and placed it ([`handoff`]).
    let (svc, pkt, missing) = match if NAT { handoff::take() } else { None } {
        Some((svc, pkt, kind, generation)) => {
            if let Some(f) = if kind == handoff::FLOW { handoff::flow(&svc, generation) } else { None } {
                return pinned::<NAT>(ctx, &svc, &pkt, &f);
            }
            (svc, pkt, false)
        }
        None => {
            let parsed = if NAT { parse::flow_of_outlined(ctx) } else { parse::vip_flow_of(ctx) };
            let Some(pkt) = parsed? else {
                return if NAT { Ok(pass()) } else { tunnel::returned::ipip(ctx) };
            };
            // The NAT program's packets were looked at here already, by the entry program.
            if !NAT && pkt.is_not_vip() {
                return nat::not_for_a_vip(ctx, &pkt);
            }
            let mut missing = false;
            if !NAT && !pkt.is_icmp_error() && !conntrack::opens_connection(pkt.tcp_flags()) {
                match early::send(ctx, &pkt) {
                    early::MISSING => missing = true,
                    early::UNSURE => {}
                    early::NAT => return handoff::jump_nat(ctx),
                    action => return Ok(action),
                }
            }
            let Some(svc) = services::lookup(&pkt.key) else {
                return if NAT { Ok(pass()) } else { nat::not_for_a_vip(ctx, &pkt) };
            };
            if !NAT && svc.flags & SERVICE_F_NAT != 0 {
                // On to the NAT program, parsed and placed, or an ICMP error
                // to the program that translates it.
                if pkt.is_icmp_error() {
                    return jumps::jump(ctx, jumps::icmp_slot(&pkt.key, true));
                }
                return handoff::packet(ctx, &pkt, &svc);
            }
            if pkt.is_icmp_error() {
                // Errors about NAT flows went to `nat::icmp`'s programs above.
                if NAT || svc.flags & SERVICE_F_NAT != 0 {
                    return Ok(pass());
                }
                return icmp::to_flow_backend(ctx, &svc, &pkt.key);
            }
            (svc, pkt, missing)
        }
    };
    flow::<NAT>(ctx, &svc, &pkt, missing)
}

/// The packet's flow in the connection tables: sent on if pinned to a
/// backend that keeps it, else [`schedule`]d. `missing`: the early lookup
/// found no entry; do not look again.
#[inline(always)]
fn flow<const NAT: bool>(ctx: &XdpContext, svc: &Service, pkt: &VipPacket, missing: bool) -> Result<u32, Drop> {
    let key = &pkt.key;
    // A QUIC connection's packets go where its connection ID says.
    if !NAT && svc.flags & SERVICE_F_QUIC != 0 && key.proto == veer_abi::IPPROTO_UDP {
        if let Some(sent) = quic::send(ctx, svc, pkt) {
            return sent;
        }
    }
    let opening = conntrack::opens_connection(pkt.tcp_flags());
    // The backend that just failed this connection, and the resends it has had.
    let (mut avoid, mut carried) = (NO_BACKEND, 0);
    let stale = if opening {
        if NAT {
            snat::claim_proxied(key);
        }
        // A DSR backend's agent bounces a SYN from that backend's MAC.
        let src_mac = if NAT { [0; 6] } else { unsafe { (*access::ptr_at::<headers::eth::EthHdr>(ctx, 0)?).src } };
        match reopen::reopen::<NAT>(svc, key, &src_mac) {
            Reopened::Same(f) => {
                if NAT {
                    snat::unclaim();
                }
                return pinned::<NAT>(ctx, svc, pkt, &f);
            }
            Reopened::Failed { avoid: failed, resends } => (avoid, carried) = (failed, resends),
            Reopened::BouncedTwice => return Err(Drop::Bounced),
            Reopened::Fresh => {}
        }
        false
    } else {
        let found = if missing { Pinned::Missing } else { conntrack::established(svc, key, pkt.tcp_flags()) };
        match found {
            Pinned::Hit(f) => return pinned::<NAT>(ctx, svc, pkt, &f),
            Pinned::Stale => true,
            Pinned::Missing => {
                // A NAT flow is promoted only by a client that saw the
                // backend's SYN-ACK; another packet goes on, half-open.
                if NAT && !nat::proof::proven(ctx, pkt) {
                    if let Some(f) = conntrack::half_open(svc, key, pkt.tcp_flags()) {
                        return pinned::<NAT>(ctx, svc, pkt, &f);
                    }
                }
                if let Some(f) = conntrack::promote(svc, key, pkt.tcp_flags()) {
                    return pinned::<NAT>(ctx, svc, pkt, &f);
                }
                // Maybe a client's ACK to a cookie. With cookies on, no
                // other TCP packet for no NAT flow gets a SNAT port.
                if NAT && key.proto == veer_abi::IPPROTO_TCP && nat::syn_cookie::enabled() {
                    return jumps::jump(ctx, JUMP_NAT_COOKIE);
                }
                if key.proto == veer_abi::IPPROTO_TCP {
                    stats::count(GlobalCounter::ConnLost);
                }
                false
            }
        }
    };
    schedule::<NAT>(ctx, svc, pkt, Pick { opening, avoid, carried, stale })
}

/// What [`schedule`] is to do with a flow the tables did not place.
struct Pick {
    /// The packet opens a connection (a SYN).
    opening: bool,
    /// The backend that just failed this flow, or [`NO_BACKEND`].
    avoid: u32,
    /// Flags carried over from the flow's earlier attempt (its resends).
    carried: u32,
    /// The flow has a `CONNS` entry, to be re-pinned in place.
    stale: bool,
}

/// A new (or orphaned) flow: a backend from the scheduler, pinned in the
/// tables, and the packet sent to it; the service's fallback if none.
#[inline(always)]
fn schedule<const NAT: bool>(ctx: &XdpContext, svc: &Service, pkt: &VipPacket, p: Pick) -> Result<u32, Drop> {
    let key = &pkt.key;
    let picked = match scheduler::pick(svc, key, Purpose::NewFlow, p.avoid) {
        // NAT pins its fallback flows like any other: their answers need a
        // mapping, and a NAT flow cannot change backends mid-connection.
        None if NAT && svc.fallback_backend != NO_BACKEND => {
            stats::count(GlobalCounter::FallbackBackend);
            owned_backend(svc, svc.fallback_backend).map(|b| (svc.fallback_backend, b))
        }
        picked => picked,
    };
    let Some((id, b)) = picked else {
        return no_backend::<NAT>(ctx, svc, key);
    };
    // Under a SYN flood a new NAT connection (one a backend can take) is
    // answered with a cookie, and takes no SNAT port until the client
    // proves itself.
    if NAT && p.opening && p.avoid == NO_BACKEND && nat::syn_cookie::wanted() {
        return jumps::jump(ctx, JUMP_NAT_COOKIE);
    }
    if affinity::persists(svc) {
        affinity::remember(svc, &key.src, id);
    }
    // A SYN's timestamps go onto veer's clock (`nat::timestamps`).
    if NAT {
        let ts = if p.opening && key.proto == veer_abi::IPPROTO_TCP {
            nat::timestamps::offset_for_syn(ctx, pkt.l4 as usize)
        } else {
            0
        };
        nat::ports::shift_timestamps(ts);
    }
    let nat = if NAT { nat::ports::allocate(svc, key, id, b)? } else { Slot::NONE };
    // Opened by veer's SYN proxy (`nat::syn_cookie`): sequence numbers shift.
    let flags = if NAT && nat::ports::allocated_proxied() { CONN_F_PROXIED } else { 0 };
    if p.stale {
        conntrack::repin(svc, key, id, nat);
    } else {
        conntrack::pin_new(svc, key, id, nat, p.carried | flags);
    }
    if NAT && p.opening && svc.flags & SERVICE_F_PASSIVE != 0 {
        nat::syn_stash::keep(ctx, pkt)?;
    }
    // An orphaned flow's packet back from the backend its first pass went to.
    if bounced::<NAT>(ctx, pkt, &b.mac) {
        return jumps::jump(ctx, JUMP_SECOND_CHANCE);
    }
    stats::forwarded(svc.id, id, frame_bytes(ctx), true);
    deliver::<NAT>(ctx, pkt, &Flow { id, backend: b, nat, flags })
}

/// A packet of a flow the tables hold: counted and sent; bounced back by
/// that backend, given its [`second_chance`].
#[inline(always)]
fn pinned<const NAT: bool>(ctx: &XdpContext, svc: &Service, pkt: &VipPacket, f: &Flow) -> Result<u32, Drop> {
    if bounced::<NAT>(ctx, pkt, &f.backend.mac) {
        return jumps::jump(ctx, JUMP_SECOND_CHANCE);
    }
    stats::forwarded(svc.id, f.id, frame_bytes(ctx), false);
    deliver::<NAT>(ctx, pkt, f)
}

/// A DSR TCP packet (no SYN, no RST) sent back from `mac` (the backend
/// its flow is pinned to) by that backend's agent: its [`second_chance`].
#[inline(always)]
fn bounced<const NAT: bool>(ctx: &XdpContext, pkt: &VipPacket, mac: &[u8; 6]) -> bool {
    !NAT && conntrack::bounceable(pkt.key.proto, pkt.tcp_flags()) && forward::sent_back_by(ctx, mac)
}

/// Sends a packet of `f`: DSR (the Ethernet header) or NAT (addresses and ports).
#[inline(always)]
fn deliver<const NAT: bool>(ctx: &XdpContext, pkt: &VipPacket, f: &Flow) -> Result<u32, Drop> {
    if NAT {
        nat::forward(ctx, pkt, f)
    } else {
        forward::to_backend(ctx, f.id, f.backend, &pkt.key)
    }
}

/// No backend can take the flow: the service's fallback decides. DSR flows
/// sent to the fallback backend are not pinned, so they return as soon as
/// one is up (NAT's were scheduled on it above).
#[inline(always)]
fn no_backend<const NAT: bool>(ctx: &XdpContext, svc: &Service, key: &FlowKey) -> Result<u32, Drop> {
    if !NAT && svc.fallback_backend != NO_BACKEND {
        let b = owned_backend(svc, svc.fallback_backend).ok_or(Drop::BadBackend)?;
        stats::count(GlobalCounter::FallbackBackend);
        stats::forwarded(svc.id, svc.fallback_backend, frame_bytes(ctx), false);
        return forward::to_backend(ctx, svc.fallback_backend, b, key);
    }
    if svc.flags & SERVICE_F_FALLBACK_PASS != 0 {
        stats::count(GlobalCounter::FallbackPassed);
        return Ok(xdp_action::XDP_PASS);
    }
    Err(Drop::NoBackend)
}

/// The frame's length, for the byte counters: read where it is counted, not
/// kept live across the path (the entry program's stack has no room to spill it).
#[inline(always)]
fn frame_bytes(ctx: &XdpContext) -> u64 {
    (ctx.data_end() - ctx.data()) as u64
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
