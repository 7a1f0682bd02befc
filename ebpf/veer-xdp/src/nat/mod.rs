//! Full NAT: backends that need no setup.
//!
//! A client's flow to a VIP leaves veer from a SNAT address and port toward
//! the backend's own address; the backend answers that address, so its
//! answers come back through veer. `NAT_REV` finds the flow by the answer's
//! tuple, and the answer leaves toward the client from the VIP. Addresses and
//! ports change in place; the IPv4 header checksum and the TCP or UDP
//! checksum (its pseudo-header covers the addresses) are updated
//! incrementally. The next hop comes from the kernel's routing table, kept
//! by each CPU: per backend toward backends ([`next_hop`]), by the whole
//! question toward clients (`fib`'s cache).
//!
//! The return mappings are `snat`'s, new flows' endpoints [`ports`]'s;
//! timestamps go onto veer's clock ([`timestamps`]); ICMP errors about
//! NAT flows are translated in [`icmp`]; a backend's refusal of a SYN is
//! undone by [`syn_stash`]; a flow is promoted to the connection table only
//! by a client that saw the backend's SYN-ACK ([`proof`]); SYN floods are
//! answered with cookies ([`syn_cookie`]).

pub mod icmp;
pub mod next_hop;
pub mod ports;
pub mod programs;
pub mod proof;
pub mod rewrite;
pub mod syn_cookie;
pub mod syn_stash;
pub mod timestamps;

use aya_ebpf::programs::XdpContext;
use veer_abi::{
    is_ipv4_mapped, GlobalCounter, CONN_F_PROXIED, JUMP_NAT, JUMP_NAT_COOKIE, JUMP_NAT_COOKIE_RETURN, JUMP_NAT_RETURN,
    NAT_F_PROXIED, NAT_F_TS, NAT_F_TS_ANSWERED,
};

use rewrite::rewrite;

use crate::{
    conntrack::{self, Flow},
    fib,
    headers::l4::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    jumps::{icmp_slot, jump},
    parse,
    parse::VipPacket,
    snat::{self, backend_port, return_key, NAT_REV},
    stats, tunnel,
    verdict::{pass, Drop},
};

/// A packet to no VIP: maybe a backend's answer to a NAT flow (or an ICMP
/// error about one), on to the program that sends it back; else the kernel's.
#[inline(always)]
pub fn not_for_a_vip(ctx: &XdpContext, pkt: &VipPacket) -> Result<u32, Drop> {
    if snat::is_return_port(&pkt.key) {
        return jump(ctx, if pkt.is_icmp_error() { icmp_slot(&pkt.key, false) } else { JUMP_NAT_RETURN });
    }
    // Maybe GUE a tunnelled backend's agent sent back.
    if pkt.key.proto == veer_abi::IPPROTO_UDP && tunnel::returned::is_gue_port(pkt.key.dport) {
        return jump(ctx, veer_abi::JUMP_TUNNEL_RETURN);
    }
    Ok(pass())
}

/// `veer_nat_return`: a backend's answer to a NAT flow, back to its client;
/// a refused SYN, resent, goes to the NAT program again.
#[inline(always)]
pub fn answer(ctx: &XdpContext) -> Result<u32, Drop> {
    let shifted = syn_cookie::take_shifted();
    match parse::flow_of(ctx)? {
        Some(pkt) if !pkt.is_icmp_error() => match reverse(ctx, &pkt, shifted)? {
            RESEND => jump(ctx, JUMP_NAT),
            PROXIED => jump(ctx, JUMP_NAT_COOKIE_RETURN),
            action => Ok(action),
        },
        _ => Ok(pass()),
    }
}

/// The client's packet of flow `f`, rewritten toward its backend and sent.
#[inline(always)]
pub fn forward(ctx: &XdpContext, pkt: &VipPacket, f: &Flow) -> Result<u32, Drop> {
    let (b, slot) = (f.backend, &f.nat);
    if f.flags & CONN_F_PROXIED != 0 && pkt.tcp_flags() & TCP_SYN == 0 {
        // Its acknowledgments shift (in a program of its own, off this stack).
        return jump(ctx, JUMP_NAT_COOKIE);
    }
    // The map's own value: the rewrite reads it by words, which the
    // verifier takes at any address only outside the stack.
    let snat = snat::address(slot.addr).ok_or(Drop::BadBackend)?;
    if slot.ts != 0 {
        match timestamps::to_backend(ctx, pkt.l4 as usize, slot.ts_off) {
            timestamps::TS_BROKEN => return Err(Drop::Truncated),
            timestamps::TS_AHEAD => conntrack::mark_ts_ahead(&pkt.key),
            _ => {}
        }
    }
    let v4 = is_ipv4_mapped(&pkt.key.dst);
    rewrite(ctx, pkt, v4, snat, &b.addr, slot.port, backend_port(&pkt.key, b))?;
    next_hop::send(ctx, f.id, b, slot.addr, snat, v4)
}

/// What became of a packet to a SNAT port (`reverse`): an XDP action, or
/// one of these. A plain number, not an enum: an enum's undefined payload
/// bytes make LLVM move undefined registers, which the verifier refuses.
type Returned = u32;

/// `Returned`: it was a backend's refusal of a SYN; the frame is that SYN
/// again, for the NAT program to schedule elsewhere (see `syn_stash`).
const RESEND: Returned = u32::MAX;
/// `Returned`: it belongs to a connection veer's SYN proxy opened, whose
/// sequence numbers shift first (see `syn_cookie`), or it is a SYN-ACK,
/// whose sequence number is kept first (see `proof`).
const PROXIED: Returned = u32::MAX - 1;

/// A packet to a SNAT port: if it answers a NAT flow, rewritten back (from
/// the VIP, to the client) and sent; otherwise passed to the kernel untouched.
#[inline(always)]
fn reverse(ctx: &XdpContext, pkt: &VipPacket, shifted: bool) -> Result<Returned, Drop> {
    let k = &pkt.key;
    let Some(m) = NAT_REV.get_ptr_mut(&return_key(k)) else {
        stats::count(GlobalCounter::NatReturnMiss);
        return Ok(pass());
    };
    if pkt.tcp_flags() & (TCP_FIN | TCP_RST) != 0 {
        if pkt.tcp_flags() & TCP_RST != 0 && syn_stash::resend(ctx, pkt, m)? {
            return Ok(RESEND);
        }
        // SAFETY: a live map value, used as the lookup's key in place.
        conntrack::mark_closing(unsafe { &(*m).flow });
    }
    // A connection veer's SYN proxy opened shifts its sequence numbers
    // first; any SYN-ACK has its number kept (`proof`). Both in the
    // cookie-return program, which sends the packet back here, marked.
    let syn_ack = pkt.tcp_flags() & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK;
    // SAFETY: a live map value, read in place.
    if (unsafe { (*m).flags } & NAT_F_PROXIED != 0 || syn_ack) && !shifted {
        return Ok(PROXIED);
    }
    // SAFETY: read in place.
    if unsafe { (*m).flags } & NAT_F_TS != 0 {
        // SAFETY: as above.
        match timestamps::to_client(ctx, pkt.l4 as usize, unsafe { (*m).ts_off }) {
            timestamps::TS_BROKEN => return Err(Drop::Truncated),
            // Atomic, as the flags' other writers (`snat::claim_rescue`).
            timestamps::TS_SHIFTED if syn_ack => {
                snat::fetch_or_flags(m, NAT_F_TS_ANSWERED);
            }
            _ => {}
        }
    }
    // SAFETY: copied out at once.
    let f = unsafe { (*m).flow };
    let v4 = is_ipv4_mapped(&f.dst);
    rewrite(ctx, pkt, v4, &f.dst, &f.src, f.dport, f.sport)?;
    stats::count(GlobalCounter::NatReturned);
    fib::send(ctx, v4, &f.dst, &f.src)
}
