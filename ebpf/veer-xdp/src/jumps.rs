//! The programs the entry program continues in (tail calls).
//!
//! A NAT service's packets other than most established flows' (those the
//! entry program sends itself), and NAT answers, run in programs of their
//! own: each program has a 512-byte stack of its own.
//! veerd fills the jump table with this object's programs at load time.

use aya_ebpf::{macros::map, maps::ProgramArray, programs::XdpContext};
use veer_abi::{
    is_ipv4_mapped, FlowKey, JUMP_NAT_ICMP_BACKEND4, JUMP_NAT_ICMP_BACKEND6, JUMP_NAT_ICMP_CLIENT4,
    JUMP_NAT_ICMP_CLIENT6, JUMP_SLOTS,
};

use crate::verdict::Drop;

/// The programs `veer_xdp` continues in, by `JUMP_*` slot.
#[map]
static JUMPS: ProgramArray = ProgramArray::with_max_entries(JUMP_SLOTS, 0);

/// Continues in the program at `index`; returns only when the slot is empty.
#[inline(always)]
pub fn jump(ctx: &XdpContext, index: u32) -> Result<u32, Drop> {
    // SAFETY: the jump table holds programs of this object, loaded by veerd.
    unsafe { JUMPS.tail_call(ctx, index) };
    // Only reached when the slot is empty.
    Err(Drop::TailCall)
}

/// The slot for an ICMP error about the NAT flow `key` (the flow it
/// quotes), toward its backend or its client.
#[inline(always)]
pub fn icmp_slot(key: &FlowKey, to_backend: bool) -> u32 {
    let v4 = is_ipv4_mapped(&key.dst);
    match (to_backend, v4) {
        (false, true) => JUMP_NAT_ICMP_CLIENT4,
        (false, false) => JUMP_NAT_ICMP_CLIENT6,
        (true, true) => JUMP_NAT_ICMP_BACKEND4,
        (true, false) => JUMP_NAT_ICMP_BACKEND6,
    }
}
