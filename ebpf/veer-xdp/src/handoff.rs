//! A NAT service's packet, parsed and placed by the entry program, handed
//! to the NAT program it tail-calls.
//!
//! The entry program has parsed the packet and found its service, and for
//! a flow in `CONNS` its entry (refreshed). Without this, the NAT program
//! would parse the packet again and hash the service key, and for a flow
//! in `CONNS` the flow key, for the same answers. What is handed
//! over: any packet of a NAT service but an established flow's and an ICMP
//! error (a SYN, a first datagram, a half-open flow's packet, a flow the
//! early lookup left to the full path) with the service as the entry
//! program copied it from the service table, or a packet of an
//! established flow veer's SYN proxy opened, with its entry (its sequence
//! numbers shift in the cookie program, which the NAT program
//! tail-calls). Every other established NAT flow's client packet the entry
//! program sends itself ([`crate::early`]). The NAT program looks the
//! flow up in the tables itself: another CPU may have promoted it since.
//!
//! A tail call keeps the CPU (XDP runs with migration off), so a per-CPU
//! slot written just before the jump is read by the same packet's NAT
//! program. A run on this CPU can only be interrupted by another that runs
//! to its end (a test run with bottom halves on), and every run leaves the
//! slot disarmed; each arming takes a new generation, so one that
//! interrupted this packet's arming or reading shows, and the NAT program
//! then parses the packet itself, as it does when reached another way (a
//! refused SYN resent by the answer program, a SYN the cookie program
//! rebuilt).

use aya_ebpf::{macros::map, maps::PerCpuArray, programs::XdpContext};
use veer_abi::{ConnEntry, Service, JUMP_NAT};

use crate::{
    conntrack::{entry, keeper, Flow},
    jumps::jump,
    parse::VipPacket,
    verdict::Drop,
};

/// [`Handoff::kind`]: a packet with its service.
pub const PACKET: u32 = 1;
/// [`Handoff::kind`]: a packet of an established flow, with its entry.
pub const FLOW: u32 = 2;

/// What the entry program found for the packet, and whether it is armed.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Handoff {
    /// The generation of the last arming (never 0).
    generation: u32,
    /// The generation this slot was armed with for the packet; 0: disarmed.
    armed: u32,
    /// [`PACKET`] or [`FLOW`].
    kind: u32,
    _pad: u32,
    service: Service,
    packet: VipPacket,
    entry: ConnEntry,
}

/// One slot per CPU.
#[map]
static NAT_HANDOFF: PerCpuArray<Handoff> = PerCpuArray::with_max_entries(1, 0);

/// Arms this CPU's slot with `pkt` of `service`, as `kind`; `fill` writes
/// the rest before the slot is armed.
#[inline(always)]
fn arm(pkt: &VipPacket, service: &Service, kind: u32, fill: impl FnOnce(&mut Handoff)) {
    let Some(h) = NAT_HANDOFF.get_ptr_mut(0) else { return };
    // SAFETY: this CPU's slot, read back by the same packet's next program.
    let h = unsafe { &mut *h };
    let generation = h.generation.wrapping_add(1).max(1);
    h.generation = generation;
    h.kind = kind;
    h.service = *service;
    h.packet = *pkt;
    fill(h);
    h.armed = generation;
}

/// Hands a packet of service `svc` (as the entry program copied it from
/// the service table) over to the NAT program.
#[inline(always)]
pub fn packet(ctx: &XdpContext, pkt: &VipPacket, svc: &Service) -> Result<u32, Drop> {
    arm(pkt, svc, PACKET, |_| {});
    jump_nat(ctx)
}

/// Arms this CPU's slot for `pkt`, pinned to `f` in service `svc`, about
/// to jump to the NAT program ([`jump_nat`]).
#[inline(always)]
pub fn give(pkt: &VipPacket, svc: &Service, f: &Flow) {
    arm(pkt, svc, FLOW, |h| h.entry = entry(svc.id, f.id, &f.nat, f.flags, 0));
}

/// Jumps to the NAT program with the slot armed; disarms it if the jump
/// fails (no NAT program in the table).
#[inline(always)]
pub fn jump_nat(ctx: &XdpContext) -> Result<u32, Drop> {
    let r = jump(ctx, JUMP_NAT);
    if let Some(h) = NAT_HANDOFF.get_ptr_mut(0) {
        // SAFETY: this CPU's slot.
        unsafe { (*h).armed = 0 };
    }
    r
}

/// What the entry program handed over for this packet, if anything: its
/// service, the packet, and how it was armed ([`PACKET`], [`FLOW`]), with
/// the generation [`flow`] checks. Disarms the slot.
#[inline(always)]
pub fn take() -> Option<(Service, VipPacket, u32, u32)> {
    let h = NAT_HANDOFF.get_ptr_mut(0)?;
    // SAFETY: this CPU's slot (see `arm`).
    let h = unsafe { &mut *h };
    let armed = h.armed;
    if armed == 0 {
        return None;
    }
    let (svc, pkt, kind) = (h.service, h.packet, h.kind);
    // Armed anew while this was read: not this packet's.
    let whole = h.generation == armed;
    h.armed = 0;
    whole.then_some((svc, pkt, kind, armed))
}

/// The flow the entry program handed over with its packet ([`FLOW`],
/// taken as `generation`), if its backend may still keep it in `svc`.
#[inline(always)]
pub fn flow(svc: &Service, generation: u32) -> Option<Flow> {
    let h = NAT_HANDOFF.get(0)?;
    let entry = h.entry;
    // The slot armed for another packet since `take`: not this one's entry.
    if h.generation != generation {
        return None;
    }
    keeper(svc, &entry)
}
