//! Each CPU's next hop toward each NAT backend, by backend id: the
//! interface and MACs that `bpf_fib_lookup` gave for the backend's address
//! from one of its SNAT addresses, kept [`fib::KEPT_TICKS`]. A flow's
//! packets all go to one backend, so one array slot answers them, without
//! building, hashing and comparing the lookup's 64-byte question
//! ([`fib::route`]'s cache). A packet from another interface, or a flow
//! from another of the backend's SNAT addresses, than the live slot was
//! asked for goes by that cache (the source matters only to policy
//! routing, but veer does not assume there is none).

use aya_ebpf::{helpers::bpf_jiffies64, macros::map, maps::PerCpuArray, programs::XdpContext};
use veer_abi::{Backend, MAX_BACKENDS};

use crate::{
    access::{callee_ctx, mut_ptr_at},
    fib,
    headers::{
        eth::EthHdr,
        field::{mac, set_mac, words16},
    },
    verdict::Drop,
};

/// The way out to one backend, and what it was asked for.
#[repr(C)]
struct NextHop {
    /// The backend's address (as words), the SNAT address's index, and
    /// the interface the packet that asked came in on.
    addr: [u32; 4],
    snat: u32,
    ingress: u32,
    /// The interface out.
    ifindex: u32,
    /// The next hop's MAC, then the interface's.
    dmac: [u8; 6],
    smac: [u8; 6],
    /// The tick ([`bpf_jiffies64`]) from which the question is asked again.
    expires: u64,
}

/// Each CPU's next hops, by backend id.
#[map]
static NAT_NEXT_HOPS: PerCpuArray<NextHop> = PerCpuArray::with_max_entries(MAX_BACKENDS, 0);

/// Whether `h` was asked for backend `b` from SNAT address `snat`, from
/// this interface.
#[inline(always)]
fn made_for(h: &NextHop, b: &Backend, snat: u16, ingress: u32) -> bool {
    let a = words16(&b.addr);
    let diff = (h.addr[0] ^ a[0]) | (h.addr[1] ^ a[1]) | (h.addr[2] ^ a[2]) | (h.addr[3] ^ a[3]);
    diff | (h.snat ^ snat as u32) | (h.ingress ^ ingress) == 0
}

/// Sends the rewritten packet of a flow from SNAT address `snat` (at
/// `index` of `SNAT_ADDRS`) to backend `id`, `b`: its MACs set, out of the
/// way this CPU keeps for the backend, or the kernel's, kept.
#[inline(always)]
pub fn send(ctx: &XdpContext, id: u32, b: &Backend, index: u16, snat: &[u8; 16], v4: bool) -> Result<u32, Drop> {
    let h = NAT_NEXT_HOPS.get_ptr_mut(id).ok_or(Drop::BadBackend)?;
    let ingress = unsafe { (*ctx.ctx).ingress_ifindex };
    let now = unsafe { bpf_jiffies64() };
    // SAFETY: this CPU's slot, in place (written only by `ask`).
    let live = unsafe { (*h).expires } > now;
    if !(live && made_for(unsafe { &*h }, b, index, ingress)) {
        if live {
            return fib::send(ctx, v4, snat, &b.addr);
        }
        ask(ctx, h, b, index, v4)?;
    }
    let eth = unsafe { &mut *mut_ptr_at::<EthHdr>(ctx, 0)? };
    // SAFETY: this CPU's slot, in place.
    let h = unsafe { &*h };
    set_mac(&mut eth.dst, mac(&h.dmac));
    set_mac(&mut eth.src, mac(&h.smac));
    fib::leave(ctx, h.ifindex)
}

/// Asks the kernel ([`fib::route_uncached`]) the way to `b` from SNAT
/// address `index` and keeps it in slot `h`. A call of its own: rare, and
/// its frame off the caller's.
#[inline(never)]
fn ask(ctx: &XdpContext, h: *mut NextHop, b: &Backend, index: u16, v4: bool) -> Result<(), Drop> {
    let ctx = callee_ctx(ctx);
    // SAFETY: this CPU's slot, in place.
    let h = unsafe { &mut *h };
    h.expires = 0;
    let src = crate::snat::address(index).ok_or(Drop::BadBackend)?;
    let (asked, answer) = fib::route_uncached(&ctx, v4, src, &b.addr);
    answer?;
    // Not kept (nor used) if a run that interrupted this one asked its own
    // question meanwhile: the scratch would hold that answer.
    if !fib::copy_answer(asked, &mut h.ifindex, &mut h.smac, &mut h.dmac) {
        return Err(Drop::NoRoute);
    }
    h.addr = words16(&b.addr);
    h.snat = index as u32;
    h.ingress = unsafe { (*ctx.ctx).ingress_ifindex };
    h.expires = unsafe { bpf_jiffies64() } + fib::KEPT_TICKS;
    Ok(())
}
