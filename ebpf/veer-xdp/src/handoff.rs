//! A NAT service's packet, parsed and placed by the entry program, handed
//! to the NAT program it tail-calls.
//!
//! The entry program has parsed the packet and found its service, and for
//! a flow in `CONNS` its entry (refreshed). Without this, the NAT program
//! would parse the packet again and hash the service key, and for a flow
//! in `CONNS` the 40-byte flow key, for the same answers. What is handed
//! over: a new flow's packet (a SYN, a first datagram, a flow not in
//! `CONNS`), or a packet of an established flow veer's SYN proxy opened
//! (its sequence numbers shift, in NAT's own programs). Every other
//! established NAT flow's client packet the entry program sends itself
//! ([`crate::early`]).
//!
//! A tail call keeps the CPU (XDP runs with migration off), so a per-CPU
//! slot written just before the jump is read by the same packet's NAT
//! program. The slot is disarmed when read and when the jump fails, and
//! names the frame it was armed for: a packet that ran on this CPU in
//! between (a test run with bottom halves on) finds it disarmed or not its
//! own, and the NAT program then parses the packet itself, as it does when
//! reached another way (a refused SYN resent by the answer program).

use aya_ebpf::{macros::map, maps::PerCpuArray, programs::XdpContext};
use veer_abi::{ConnEntry, Service, CONN_F_TS, JUMP_NAT};

use crate::{
    conntrack::{keeper, Flow},
    jumps::jump,
    parse::VipPacket,
    services::SERVICE_SLOTS,
    verdict::Drop,
};

/// [`Handoff::armed`]: nothing handed over.
const DISARMED: u32 = 0;
/// A packet of a flow not in `CONNS` (as far as the entry program looked).
pub const PACKET: u32 = 1;
/// A packet the entry program found no `CONNS` entry for: not looked up again.
pub const MISSING: u32 = 2;
/// A packet of an established flow: [`Handoff::entry`] holds its entry.
pub const FLOW: u32 = 3;

/// What the entry program found for the packet, and whether it is armed.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Handoff {
    /// The frame's start, as the entry program saw it.
    frame: u64,
    packet: VipPacket,
    service: u32,
    armed: u32,
    entry: ConnEntry,
}

/// One slot per CPU.
#[map]
static NAT_HANDOFF: PerCpuArray<Handoff> = PerCpuArray::with_max_entries(1, 0);

/// Arms this CPU's slot with `pkt`, of service `service`, as `armed`.
#[inline(always)]
fn arm(ctx: &XdpContext, pkt: &VipPacket, service: u32, armed: u32) -> Option<&'static mut Handoff> {
    let h = NAT_HANDOFF.get_ptr_mut(0)?;
    // SAFETY: this CPU's slot, read back by the same packet's next program.
    let h = unsafe { &mut *h };
    h.frame = ctx.data() as u64;
    h.packet = *pkt;
    h.service = service;
    h.armed = armed;
    Some(h)
}

/// Hands a packet of a flow not in `CONNS` over to the NAT program (`missing`:
/// the entry program looked, and found none).
#[inline(always)]
pub fn packet(ctx: &XdpContext, pkt: &VipPacket, service: u32, missing: bool) -> Result<u32, Drop> {
    arm(ctx, pkt, service, if missing { MISSING } else { PACKET });
    jump_nat(ctx)
}

/// Arms this CPU's slot for `pkt`, pinned to `f` in service `service`,
/// about to jump to the NAT program ([`jump_nat`]).
#[inline(always)]
pub fn give(ctx: &XdpContext, pkt: &VipPacket, service: u32, f: &Flow) {
    if let Some(h) = arm(ctx, pkt, service, FLOW) {
        let ts = if f.nat.ts != 0 { CONN_F_TS } else { 0 };
        h.entry = ConnEntry {
            backend: f.id,
            service,
            last_seen_ns: 0,
            flags: f.flags | ts,
            nat_port: f.nat.port,
            nat_addr: f.nat.addr,
            ts_off: f.nat.ts_off,
            _pad: 0,
        };
    }
}

/// Jumps to the NAT program with the slot armed; disarms it if the jump
/// fails (no NAT program in the table).
#[inline(always)]
pub fn jump_nat(ctx: &XdpContext) -> Result<u32, Drop> {
    let r = jump(ctx, JUMP_NAT);
    if let Some(h) = NAT_HANDOFF.get_ptr_mut(0) {
        // SAFETY: this CPU's slot.
        unsafe { (*h).armed = DISARMED };
    }
    r
}

/// What the entry program handed over for this packet, if anything: its
/// service (if the slot still holds it), the packet, and how it was armed
/// ([`PACKET`], [`MISSING`], [`FLOW`]). Disarms the slot.
#[inline(always)]
pub fn take(ctx: &XdpContext) -> Option<(&'static Service, VipPacket, u32)> {
    let h = NAT_HANDOFF.get_ptr_mut(0)?;
    // SAFETY: this CPU's slot (see `arm`).
    let h = unsafe { &mut *h };
    let armed = h.armed;
    h.armed = DISARMED;
    if armed == DISARMED || h.frame != ctx.data() as u64 {
        return None;
    }
    let pkt = h.packet;
    let slot = SERVICE_SLOTS.get(h.service)?;
    // The service changed since the entry program looked: the packet is parsed again.
    if !slot.serves(&pkt.key) {
        return None;
    }
    Some((&slot.service, pkt, armed))
}

/// The flow the entry program handed over with its packet ([`FLOW`]), if
/// its backend may still keep it.
#[inline(always)]
pub fn flow(svc: &Service) -> Option<Flow> {
    let h = NAT_HANDOFF.get(0)?;
    keeper(svc, &h.entry)
}
