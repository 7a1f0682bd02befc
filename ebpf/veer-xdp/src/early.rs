//! An established flow's packet, sent before the service table is asked.
//!
//! Most packets belong to flows already in `CONNS`, whose entry names their
//! service: found by index in `SERVICE_SLOTS`, it spares the hash of the
//! service key on every packet. A DSR flow's packet is sent from here, and
//! so is a NAT flow's client packet ([`nat::forward`]): a tail call to the
//! NAT program would cost more than all of its rewrite. Only a flow veer's
//! SYN proxy opened goes on to the NAT program, handed over ([`handoff`]).
//! Inline in the entry program: as a call of its own, its return cost
//! about 7 ns of the 90 an established packet took (the return thunk of
//! AMD's SRSO mitigation, which BPF-to-BPF calls pay as well).

use aya_ebpf::programs::XdpContext;
use veer_abi::{CONN_F_PROXIED, SERVICE_F_NAT};

use crate::{
    affinity,
    conntrack::{self, Early},
    forward, handoff, nat,
    parse::VipPacket,
    stats,
    verdict::verdict,
};

/// [`send`] found no entry: schedule the flow (its promotion is next).
pub const MISSING: u32 = 0x100;
/// [`send`] found an entry the full path must judge (the flow moves, or
/// its service changed).
pub const UNSURE: u32 = 0x101;
/// [`send`] found a NAT flow the NAT program sends (see [`handoff`]).
pub const NAT: u32 = 0x102;

/// Sends a non-opening packet of an established flow. Returns the XDP
/// action taken, or [`MISSING`], [`UNSURE`] or [`NAT`] for the caller to go on.
#[inline(always)]
pub fn send(ctx: &XdpContext, pkt: &VipPacket) -> u32 {
    let key = &pkt.key;
    match conntrack::established_early(ctx, key, pkt.tcp_flags()) {
        Early::Hit(svc, f, moved) => {
            // A client's live flow keeps its persistence fresh.
            if moved && affinity::persists(svc) {
                affinity::remember(svc, &key.src, f.id);
            }
            let nat = svc.flags & SERVICE_F_NAT != 0;
            if nat && f.flags & CONN_F_PROXIED != 0 {
                // Its acknowledgments shift, in the cookie program, which
                // the NAT program tail-calls for it.
                handoff::give(pkt, svc, &f);
                return NAT;
            }
            stats::forwarded(svc.id, f.id, (ctx.data_end() - ctx.data()) as u64, false);
            let sent = if nat { nat::forward(ctx, pkt, &f) } else { forward::to_backend(ctx, f.id, f.backend, key) };
            verdict(sent)
        }
        Early::Missing => MISSING,
        Early::Unsure => UNSURE,
    }
}
