//! Each CPU's way to each tunnelled backend, by backend id: the interface,
//! MACs and MTU that `bpf_fib_lookup` gave for the backend's outer header,
//! and what of that header stays the same from packet to packet. A flow's
//! packets all go to one backend, so one array slot answers them without
//! building, hashing and comparing the lookup's 64-byte question
//! ([`fib::route`]'s cache) or looking up the outer source. Kept
//! [`fib::KEPT_TICKS`]: a changed route, neighbour or tunnel source reaches the
//! tunnels at most that much later.

use aya_ebpf::{helpers::bpf_jiffies64, macros::map, maps::PerCpuArray, programs::XdpContext};
use veer_abi::{csum, is_ipv4_mapped, Backend, ENCAP_GUE, MAX_BACKENDS};

use super::outer;
use crate::{
    access::callee_ctx,
    fib,
    headers::{
        eth::{ETH_P_IP, ETH_P_IPV6},
        field::{set_words16, words16},
    },
    snat,
    verdict::Drop,
};

/// The way out to one backend, and what it was found for.
#[repr(C)]
pub struct TunnelRoute {
    /// The backend's address (as words), and its outer source's index in
    /// `SNAT_ADDRS`, encapsulation and GUE port, as they were.
    addr: [u32; 4],
    snat: u16,
    encap: u16,
    port: u16,
    /// Whether the outer header is IPv4, and GUE.
    pub outer_v4: bool,
    pub gue: bool,
    /// The interface the packet that asked came in on.
    ingress: u32,
    /// The interface out.
    pub ifindex: u32,
    /// The route's MTU (0: the kernel did not say).
    pub mtu: u32,
    /// The checksum sum of what stays of the outer header: an IPv4
    /// header's fixed fields ([`outer::fixed_sum4`]), or IPv6's addresses
    /// (for GUE's UDP checksum).
    pub sum: u32,
    /// The outer source address (16-byte form).
    pub src: [u8; 16],
    /// The frame's Ethernet header on the way out (next hop's MAC, the
    /// interface's, the outer EtherType), as half-words to store.
    pub eth: [u16; 7],
    /// The tick ([`bpf_jiffies64`]) from which the answer is asked again.
    expires: u64,
}

/// Each CPU's routes to the tunnelled backends, by backend id.
#[map]
static TUNNEL_ROUTES: PerCpuArray<TunnelRoute> = PerCpuArray::with_max_entries(MAX_BACKENDS, 0);

/// A backend's address in place as four words (a map value's first field:
/// 8-aligned).
#[inline(always)]
fn words(a: &[u8; 16]) -> &[u32; 4] {
    // SAFETY: 16 bytes, 4-aligned (above).
    unsafe { &*(a as *const [u8; 16] as *const [u32; 4]) }
}

/// Whether `r` was made for backend `b` as it is, from this interface.
#[inline(always)]
fn made_for(r: &TunnelRoute, b: &Backend, ingress: u32) -> bool {
    let a = words(&b.addr);
    let diff = (r.addr[0] ^ a[0]) | (r.addr[1] ^ a[1]) | (r.addr[2] ^ a[2]) | (r.addr[3] ^ a[3]);
    let meta = ((r.snat ^ b.snat) | (r.encap ^ b.encap) | (r.port ^ b.port)) as u32;
    diff | meta | (r.ingress ^ ingress) == 0
}

/// The way to backend `id`, `b`: this CPU's kept answer, or the kernel's, kept.
#[inline(always)]
pub fn get(ctx: &XdpContext, id: u32, b: &Backend) -> Result<&'static TunnelRoute, Drop> {
    let r = TUNNEL_ROUTES.get_ptr_mut(id).ok_or(Drop::BadBackend)?;
    let ingress = unsafe { (*ctx.ctx).ingress_ifindex };
    // SAFETY: this CPU's slot, in place (read here, written only by `ask`).
    if made_for(unsafe { &*r }, b, ingress) && unsafe { (*r).expires } > unsafe { bpf_jiffies64() } {
        return Ok(unsafe { &*r });
    }
    match ask(ctx, r, b) {
        ASKED => Ok(unsafe { &*r }),
        NO_NEIGHBOUR => Err(Drop::NoNeighbour),
        NO_SOURCE => Err(Drop::BadBackend),
        _ => Err(Drop::NoRoute),
    }
}

const ASKED: u32 = 0;
const NO_ROUTE: u32 = 1;
const NO_NEIGHBOUR: u32 = 2;
const NO_SOURCE: u32 = 3;

/// Asks the kernel ([`fib::route_uncached`]) the way to `b` and keeps it in
/// slot `r`. A call of its own, with a small frame: the deepest chain of
/// calls (entry, established flow, tunnel, too-big answer) has little room
/// left.
#[inline(never)]
fn ask(ctx: &XdpContext, r: *mut TunnelRoute, b: &Backend) -> u32 {
    let ctx = callee_ctx(ctx);
    // SAFETY: this CPU's slot, in place.
    let r = unsafe { &mut *r };
    r.expires = 0;
    let Some(src) = snat::address(b.snat) else { return NO_SOURCE };
    let v4 = is_ipv4_mapped(&b.addr);
    // What the answer is for, first: past the helper's call only `r` is
    // needed, which keeps this frame small.
    let a = words(&b.addr);
    (r.addr[0], r.addr[1], r.addr[2], r.addr[3]) = (a[0], a[1], a[2], a[3]);
    (r.snat, r.encap, r.port) = (b.snat, b.encap, b.port);
    r.outer_v4 = v4;
    r.gue = b.encap == ENCAP_GUE;
    set_words16(&mut r.src, words16(src));
    r.ingress = unsafe { (*ctx.ctx).ingress_ifindex };
    let (asked, answer) = fib::route_uncached(&ctx, v4, src, &b.addr);
    r.mtu = match answer {
        Ok(mtu) => mtu,
        Err(Drop::NoNeighbour) => return NO_NEIGHBOUR,
        Err(_) => return NO_ROUTE,
    };
    // SAFETY: the 14 bytes of the slot's Ethernet header.
    let eth = unsafe { &mut *(r.eth.as_mut_ptr() as *mut [u8; 14]) };
    let (dmac, rest) = eth.split_at_mut(6);
    let (smac, ether_type) = rest.split_at_mut(6);
    // SAFETY: six bytes each.
    let (dmac, smac) =
        unsafe { (&mut *(dmac.as_mut_ptr() as *mut [u8; 6]), &mut *(smac.as_mut_ptr() as *mut [u8; 6])) };
    // Not kept (nor used) if a run that interrupted this one asked its own
    // question meanwhile: the scratch would hold that answer.
    if !fib::copy_answer(asked, &mut r.ifindex, smac, dmac) {
        return NO_ROUTE;
    }
    ether_type.copy_from_slice(&if v4 { ETH_P_IP } else { ETH_P_IPV6 }.to_be_bytes());
    // From the slot, not the arguments: fewer values live, fewer spills.
    // SAFETY: the backend's address as kept, 16 bytes.
    let dst = unsafe { &*(r.addr.as_ptr() as *const [u8; 16]) };
    r.sum = if r.outer_v4 { outer::fixed_sum4(&r.src, dst) } else { csum::sum16(&r.src) + csum::sum16(dst) };
    r.expires = unsafe { bpf_jiffies64() } + fib::KEPT_TICKS;
    ASKED
}
