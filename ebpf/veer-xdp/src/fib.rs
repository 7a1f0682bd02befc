//! The kernel's routing table, for NAT: which interface and which next-hop
//! MAC a rewritten packet leaves by (`bpf_fib_lookup`), so that a backend or
//! a client may sit behind a router.

use aya_ebpf::{bindings::xdp_action, helpers::bpf_fib_lookup, macros::map, maps::PerCpuArray, programs::XdpContext};
use veer_abi::GlobalCounter;

use crate::{
    access::mut_ptr_at,
    forward::TX_PORTS,
    headers::eth::{copy_mac, EthHdr},
    stats,
    verdict::Drop,
};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const FIB_SUCCESS: i64 = 0;
const FIB_NO_NEIGH: i64 = 7;

/// `struct bpf_fib_lookup` with its unions flattened to bytes (64 bytes).
#[repr(C)]
struct FibParams {
    family: u8,
    l4_protocol: u8,
    sport: u16,
    dport: u16,
    tot_len: u16,
    ifindex: u32,
    flowinfo: u32,
    src: [u8; 16],
    dst: [u8; 16],
    vlan: u32,
    smac: [u8; 6],
    dmac: [u8; 6],
}

/// Per-CPU room for a `bpf_fib_lookup`'s parameters, off the stack.
#[map]
static FIB_SCRATCH: PerCpuArray<FibParams> = PerCpuArray::with_max_entries(1, 0);

/// Routes the (already rewritten) packet from `src` to `dst` (16-byte forms;
/// IPv4-mapped for IPv4) and sends it: `XDP_TX` out of the ingress interface,
/// or `XDP_REDIRECT` to another one.
#[inline(always)]
pub fn send(ctx: &XdpContext, v4: bool, src: &[u8; 16], dst: &[u8; 16]) -> Result<u32, Drop> {
    let ingress = unsafe { (*ctx.ctx).ingress_ifindex };
    // In a per-CPU map, not on the stack: the NAT program's stack is full.
    let p = unsafe { &mut *FIB_SCRATCH.get_ptr_mut(0).ok_or(Drop::NoRoute)? };
    p.family = if v4 { AF_INET } else { AF_INET6 };
    p.l4_protocol = 0;
    p.sport = 0;
    p.dport = 0;
    p.tot_len = 0;
    p.ifindex = ingress;
    p.flowinfo = 0;
    p.src = [0; 16];
    p.dst = [0; 16];
    p.vlan = 0;
    if v4 {
        p.src[..4].copy_from_slice(&src[12..]);
        p.dst[..4].copy_from_slice(&dst[12..]);
    } else {
        p.src = *src;
        p.dst = *dst;
    }
    // SAFETY: p is a bpf_fib_lookup as the helper expects, on our stack.
    let r = unsafe {
        bpf_fib_lookup(ctx.ctx as *mut _, p as *mut FibParams as *mut _, core::mem::size_of::<FibParams>() as i32, 0)
    };
    match r {
        FIB_SUCCESS => {}
        FIB_NO_NEIGH => return Err(Drop::NoNeighbour),
        _ => return Err(Drop::NoRoute),
    }
    let eth = unsafe { &mut *mut_ptr_at::<EthHdr>(ctx, 0)? };
    copy_mac(&mut eth.src, &p.smac);
    copy_mac(&mut eth.dst, &p.dmac);
    if p.ifindex == ingress {
        stats::count(GlobalCounter::Transmitted);
        return Ok(xdp_action::XDP_TX);
    }
    let action = TX_PORTS.redirect(p.ifindex, 0).map_err(|_| Drop::Redirect)?;
    stats::count(GlobalCounter::Redirected);
    Ok(action)
}
