//! An established NAT flow that veer's SYN proxy opened, found by the
//! entry program, handed to the NAT program it tail-calls (its sequence
//! numbers shift, in programs of NAT's own). Every other established NAT
//! flow's client packet the entry program sends itself ([`crate::early`]).
//!
//! The entry program's early lookup (`conntrack::established_early`)
//! already found the flow's entry, its service by index, and refreshed
//! the entry. Without this, the NAT program would hash the service key and
//! the 40-byte flow key again, for the same answers. A tail call keeps the
//! CPU (XDP runs with migration off), so a per-CPU slot written just
//! before the jump is read by the same packet's NAT program. The slot is
//! disarmed when read and when the jump fails; only a non-opening packet
//! takes it, and only with the same flow key (a SYN is always scheduled
//! by the full path).

use aya_ebpf::{macros::map, maps::PerCpuArray, programs::XdpContext};
use veer_abi::{ConnEntry, FlowKey, Service, CONN_F_TS, JUMP_NAT};

use crate::{
    conntrack::{keeper, opens_connection, Flow},
    jumps::jump,
    parse::VipPacket,
    services::SERVICE_SLOTS,
    verdict::Drop,
};

/// What the entry program found: the flow, its entry as refreshed, armed.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Handoff {
    key: FlowKey,
    entry: ConnEntry,
    armed: u32,
    _pad: u32,
}

/// One slot per CPU.
#[map]
static NAT_HANDOFF: PerCpuArray<Handoff> = PerCpuArray::with_max_entries(1, 0);

/// Arms this CPU's slot for `key`'s packet, pinned to `f` in service
/// `service`, about to jump to the NAT program.
#[inline(always)]
pub fn give(key: &FlowKey, service: u32, f: &Flow) {
    if let Some(h) = NAT_HANDOFF.get_ptr_mut(0) {
        let ts = if f.nat.ts != 0 { CONN_F_TS } else { 0 };
        // SAFETY: this CPU's slot, read back by the same packet's next program.
        unsafe {
            (*h).key = *key;
            (*h).entry = ConnEntry {
                backend: f.id,
                service,
                last_seen_ns: 0,
                flags: f.flags | ts,
                nat_port: f.nat.port,
                nat_addr: f.nat.addr,
                ts_off: f.nat.ts_off,
                _pad: 0,
            };
            (*h).armed = 1;
        }
    }
}

/// Jumps to the NAT program with the slot [`give`] armed; disarms it if
/// the jump fails (no NAT program in the table).
#[inline(always)]
pub fn jump_nat(ctx: &XdpContext) -> Result<u32, Drop> {
    let r = jump(ctx, JUMP_NAT);
    if let Some(h) = NAT_HANDOFF.get_ptr_mut(0) {
        // SAFETY: this CPU's slot.
        unsafe { (*h).armed = 0 };
    }
    r
}

/// The flow of `pkt` and its service, if the entry program handed them
/// over for this packet (and the backend may still keep the flow);
/// disarms the slot either way. Never for a SYN or an ICMP error.
#[inline(always)]
pub fn take(pkt: &VipPacket) -> Option<(&'static Service, Flow)> {
    if pkt.is_icmp_error() || opens_connection(pkt.tcp_flags()) {
        return None;
    }
    let key = &pkt.key;
    let h = NAT_HANDOFF.get_ptr_mut(0)?;
    // SAFETY: this CPU's slot (see `give`).
    let h = unsafe { &mut *h };
    if h.armed == 0 {
        return None;
    }
    h.armed = 0;
    if !same(&h.key, key) {
        return None;
    }
    let slot = SERVICE_SLOTS.get(h.entry.service)?;
    if !slot.serves(key) {
        return None;
    }
    keeper(&slot.service, &h.entry).map(|f| (&slot.service, f))
}

/// Two flow keys compared a word at a time.
#[inline(always)]
fn same(a: &FlowKey, b: &FlowKey) -> bool {
    // SAFETY: FlowKey is 40 bytes of plain integers, padding zeroed, 4-aligned.
    let (a, b) = unsafe { (&*(a as *const FlowKey as *const [u32; 10]), &*(b as *const FlowKey as *const [u32; 10])) };
    a.iter().zip(b).fold(0, |diff, (x, y)| diff | (x ^ y)) == 0
}
