//! An established flow's packet, sent before the service table is asked.
//!
//! Most packets belong to flows already in `CONNS`, whose entry names their
//! service: found by index in `SERVICE_SLOTS`, it spares the hash of the
//! service key. Inline in the entry program: as a call of its own, its
//! return cost about 7 ns of the 90 an established packet took (the return
//! thunk of AMD's SRSO mitigation, which BPF-to-BPF calls pay as well).

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use veer_abi::{FlowKey, SERVICE_F_NAT};

use crate::{
    affinity,
    conntrack::{self, Early},
    forward, handoff, stats,
};

/// [`send`] found no entry: schedule the flow (its promotion is next).
pub const MISSING: u32 = 0x100;
/// [`send`] found an entry the full path must judge (the flow moves, or
/// its service changed).
pub const UNSURE: u32 = 0x101;
/// [`send`] found a NAT flow: the NAT program sends it (see [`handoff`]).
pub const NAT: u32 = 0x102;
/// Or-ed into [`send`]'s action: an active-flow change waits for
/// `active::apply_pending`.
pub const ACCOUNT: u32 = 0x1000;

/// Sends a non-opening packet of an established DSR flow. Returns the XDP
/// action taken, or [`MISSING`], [`UNSURE`] or [`NAT`] for the caller to go on.
#[inline(always)]
pub fn send(ctx: &XdpContext, key: &FlowKey, tcp_flags: u32) -> u32 {
    match conntrack::established_early(ctx, key, tcp_flags as u8) {
        Early::Hit(svc, f, moved, pending) => {
            if svc.flags & SERVICE_F_NAT != 0 {
                // The NAT program takes the flow from here, unlooked-up.
                handoff::give(key, svc.id, &f);
                return if pending { NAT | ACCOUNT } else { NAT };
            }
            // A client's live flow keeps its persistence fresh.
            if moved && affinity::persists(svc) {
                affinity::remember(svc, &key.src, f.id);
            }
            stats::forwarded(svc.id, f.id, (ctx.data_end() - ctx.data()) as u64, false);
            let action = match forward::to_backend(ctx, f.id, f.backend, key) {
                Ok(action) => action,
                Err(reason) => {
                    stats::count(reason.counter());
                    xdp_action::XDP_DROP
                }
            };
            if pending {
                action | ACCOUNT
            } else {
                action
            }
        }
        Early::Missing => MISSING,
        Early::Unsure => UNSURE,
    }
}
