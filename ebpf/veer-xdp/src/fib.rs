//! The kernel's routing table, for NAT and tunnels: which interface and
//! which next-hop MAC a rewritten packet leaves by (`bpf_fib_lookup`), so
//! that a backend or a client may sit behind a router; and the interfaces a
//! frame may be redirected to. Each CPU keeps the answers a moment
//! ([`KEPT_TICKS`]): a lookup walks the routing and neighbour tables, and
//! a flow's packets all ask the same question.

use core::mem::MaybeUninit;

use aya_ebpf::{
    bindings::{bpf_redir_neigh, xdp_action},
    helpers::{bpf_fib_lookup, bpf_jiffies64},
    macros::map,
    maps::{DevMapHash, PerCpuArray},
    programs::XdpContext,
};
use veer_abi::{GlobalCounter, MAX_TX_PORTS};

use crate::{
    access::{callee_ctx, mut_ptr_at},
    headers::{
        eth::{copy_mac, EthHdr},
        field::words16,
    },
    stats, store,
    verdict::Drop,
};

/// The interfaces a frame may leave by other than the one it came in on
/// (`XDP_REDIRECT`), by ifindex; veerd adds the backends' and routes'.
#[map]
pub static TX_PORTS: DevMapHash = DevMapHash::with_max_entries(MAX_TX_PORTS, 0);

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const FIB_SUCCESS: i64 = 0;
const FIB_NO_NEIGH: i64 = 7;

/// `struct bpf_fib_lookup` with its unions flattened to bytes (64 bytes).
#[repr(C, align(4))]
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

/// A `bpf_fib_lookup`'s parameters, and which question they are.
#[repr(C, align(4))]
struct FibScratch {
    params: FibParams,
    /// Counts the questions asked on this CPU: a packet that interrupted
    /// one between its question and the helper's answer (a test run with
    /// bottom halves on) shows by a changed count.
    asked: u32,
}

/// Per-CPU room for a `bpf_fib_lookup`'s parameters, off the stack.
#[map]
static FIB_SCRATCH: PerCpuArray<FibScratch> = PerCpuArray::with_max_entries(1, 0);

/// How many kernel ticks (jiffies) a route the kernel gave is used without
/// asking again: a route or neighbour change reaches NAT and tunnel traffic
/// at most this much later (5 ms at HZ=1000, 50 ms at HZ=100; a balancer
/// with a static next hop never sees one). Ticks, not nanoseconds: the
/// verifier inlines `bpf_jiffies64` into one load (x86-64, Linux 5.7+),
/// where a clock helper is a call into the timekeeping code, which cost
/// NAT's packets 50-170 ns each on the bench's VM (one noisy ablation).
pub const KEPT_TICKS: u64 = 5;

/// Slots of each CPU's route cache (a power of two).
const ROUTE_CACHE_SLOTS: u32 = 256;

/// A route the kernel gave: for the lookup's first twelve words as asked
/// (family, ingress interface, source, destination), the way out.
#[repr(C)]
struct CachedRoute {
    asked: [u32; 12],
    ifindex: u32,
    smac: [u8; 6],
    dmac: [u8; 6],
    /// The route's MTU (the helper's `mtu_result`).
    mtu: u16,
    /// The tick ([`bpf_jiffies64`]) from which the question is asked again.
    expires: u64,
}

/// Each CPU's recent routes, by a hash of the question (direct-mapped: a
/// colliding question replaces the slot's).
#[map]
static ROUTE_CACHE: PerCpuArray<CachedRoute> = PerCpuArray::with_max_entries(ROUTE_CACHE_SLOTS, 0);

/// Routes the (already rewritten) packet from `src` to `dst` (16-byte forms;
/// IPv4-mapped for IPv4) and sends it: `XDP_TX` out of the ingress interface,
/// or `XDP_REDIRECT` to another one.
#[inline(always)]
pub fn send(ctx: &XdpContext, v4: bool, src: &[u8; 16], dst: &[u8; 16]) -> Result<u32, Drop> {
    route(ctx, v4, src, dst)?;
    out(ctx)
}

/// Asks the way from `src` to `dst` (as [`send`]); [`out`] then takes it.
/// Returns the route's MTU (its `mtu` metric, or the interface's; 0 if
/// the kernel did not say).
#[inline(always)]
pub fn route(ctx: &XdpContext, v4: bool, src: &[u8; 16], dst: &[u8; 16]) -> Result<u32, Drop> {
    let p = question(ctx, v4, src, dst)?;
    answered(lookup(ctx), p)
}

/// [`route`] without this CPU's route cache, for a caller that keeps the
/// answers itself: the question's number (see [`copy_answer`]) and the
/// route's MTU.
#[inline(always)]
pub fn route_uncached(ctx: &XdpContext, v4: bool, src: &[u8; 16], dst: &[u8; 16]) -> (u32, Result<u32, Drop>) {
    let p = match question(ctx, v4, src, dst) {
        Ok(p) => p,
        Err(e) => return (0, Err(e)),
    };
    let asked = asked();
    // SAFETY: p is a bpf_fib_lookup as the helper expects, in this CPU's scratch.
    let r = unsafe { bpf_fib_lookup(ctx.ctx as *mut _, p as *mut _, core::mem::size_of::<FibParams>() as i32, 0) };
    (asked, answered(r as u32, p))
}

/// The question from `src` to `dst`, asked into this CPU's scratch (in a
/// per-CPU map, not on the stack: the NAT program's stack is full).
#[inline(always)]
fn question(ctx: &XdpContext, v4: bool, src: &[u8; 16], dst: &[u8; 16]) -> Result<*mut FibParams, Drop> {
    let ingress = unsafe { (*ctx.ctx).ingress_ifindex };
    let s = unsafe { &mut *FIB_SCRATCH.get_ptr_mut(0).ok_or(Drop::NoRoute)? };
    s.asked = s.asked.wrapping_add(1);
    let p = &mut s.params;
    // SAFETY: the parameters' first 13 words, all of them set.
    put_question(unsafe { &store::Words::over(p as *mut FibParams) }, v4, ingress, src, dst);
    Ok(p)
}

/// Puts a question in the parameters' first 13 words: the family (the
/// other input fields zero), the interface, and the addresses (an IPv4
/// address in the first word, the rest zero). Word by word: as fields, the
/// zero runs were two calls to a byte-loop `memset`, 47 bytes of them. The
/// helper's answer goes in the MACs after them.
#[inline(always)]
fn put_question(w: &store::Words<FibParams>, v4: bool, ifindex: u32, src: &[u8; 16], dst: &[u8; 16]) {
    w.put(0, u32::from_ne_bytes([if v4 { AF_INET } else { AF_INET6 }, 0, 0, 0]));
    w.put(1, 0);
    w.put(2, ifindex);
    w.put(3, 0);
    let (a, b) = (words16(src), words16(dst));
    if v4 {
        w.put(4, a[3]);
        w.put(8, b[3]);
        for i in [5, 6, 7, 9, 10, 11] {
            w.put(i, 0);
        }
    } else {
        for (i, v) in [(4, a[0]), (5, a[1]), (6, a[2]), (7, a[3]), (8, b[0]), (9, b[1]), (10, b[2]), (11, b[3])] {
            w.put(i, v);
        }
    }
    w.put(12, 0);
}

// The words `put_question` sets, where the helper reads them.
const _: () = {
    use core::mem::offset_of;
    assert!(offset_of!(FibParams, ifindex) == 2 * 4);
    assert!(offset_of!(FibParams, flowinfo) == 3 * 4);
    assert!(offset_of!(FibParams, src) == 4 * 4);
    assert!(offset_of!(FibParams, dst) == 8 * 4);
    assert!(offset_of!(FibParams, vlan) == 12 * 4);
    assert!(offset_of!(FibParams, smac) == 13 * 4);
};
const _: () = assert!(core::mem::size_of::<FibParams>() == 16 * 4);
const _: () = assert!(core::mem::size_of::<bpf_redir_neigh>() == 5 * 4);

/// The route's MTU for the helper's answer `r` to the question at `p`.
#[inline(always)]
fn answered(r: u32, p: *mut FibParams) -> Result<u32, Drop> {
    match r {
        // With `tot_len` 0 the helper's MTU check passes, and it answers
        // the MTU in the same field.
        FIB_SUCCESS_U32 => Ok(unsafe { (*p).tot_len } as u32),
        FIB_NO_NEIGH_U32 => Err(Drop::NoNeighbour),
        _ => Err(Drop::NoRoute),
    }
}

/// Sends the frame the way [`route`] found: its MACs set, `XDP_TX` out of
/// the ingress interface or `XDP_REDIRECT` to another one.
#[inline(always)]
pub fn out(ctx: &XdpContext) -> Result<u32, Drop> {
    let p = unsafe { &(*FIB_SCRATCH.get_ptr(0).ok_or(Drop::NoRoute)?).params };
    let eth = unsafe { &mut *mut_ptr_at::<EthHdr>(ctx, 0)? };
    copy_mac(&mut eth.src, &p.smac);
    copy_mac(&mut eth.dst, &p.dmac);
    leave(ctx, p.ifindex)
}

/// Which question this CPU asked last (see `FibScratch::asked`).
#[inline(always)]
fn asked() -> u32 {
    FIB_SCRATCH.get_ptr(0).map_or(0, |s| unsafe { (*s).asked })
}

/// Copies the interface and MACs the question numbered `asked` got: false
/// if there is no answer, or another packet on this CPU asked since (a run
/// that interrupted this one).
#[inline(always)]
pub fn copy_answer(asked: u32, ifindex: &mut u32, smac: &mut [u8; 6], dmac: &mut [u8; 6]) -> bool {
    let Some(s) = FIB_SCRATCH.get_ptr(0) else { return false };
    // SAFETY: this CPU's scratch, in place.
    if unsafe { (*s).asked } != asked {
        return false;
    }
    let p = unsafe { &(*s).params };
    *ifindex = p.ifindex;
    copy_mac(smac, &p.smac);
    copy_mac(dmac, &p.dmac);
    true
}

/// Sends the frame, its MACs already set, out of `ifindex`: `XDP_TX` if
/// that is the ingress interface, else `XDP_REDIRECT`.
#[inline(always)]
pub fn leave(ctx: &XdpContext, ifindex: u32) -> Result<u32, Drop> {
    let ingress = unsafe { (*ctx.ctx).ingress_ifindex };
    if ifindex == ingress {
        stats::count(GlobalCounter::Transmitted);
        return Ok(xdp_action::XDP_TX);
    }
    let action = TX_PORTS.redirect(ifindex, 0).map_err(|_| Drop::Redirect)?;
    stats::count(GlobalCounter::Redirected);
    Ok(action)
}

const FIB_SUCCESS_U32: u32 = FIB_SUCCESS as u32;
const FIB_NO_NEIGH_U32: u32 = FIB_NO_NEIGH as u32;

/// The answer to the question in `FIB_SCRATCH`, from this CPU's cache or
/// the kernel: `FIB_SUCCESS` with the interface and MACs in the scratch,
/// or the helper's failure. A call of its own: inlined at each of its
/// callers, it would take more stack than the NAT programs have.
#[inline(never)]
fn lookup(ctx: &XdpContext) -> u32 {
    let ctx = callee_ctx(ctx);
    let Some(s) = FIB_SCRATCH.get_ptr_mut(0) else { return u32::MAX };
    // SAFETY: this CPU's scratch, in place.
    let (p, asked) = unsafe { (&mut (*s).params as *mut FibParams, (*s).asked) };
    // The question as words: FibParams is 64 bytes of integers, 4-aligned
    // (a map value). Read through the raw pointer, as the helper writes.
    let w = p as *const [u32; 13];
    let now = unsafe { bpf_jiffies64() };
    // SAFETY: this CPU's scratch. Ingress, then both addresses: an IPv4
    // address is in the first word of its sixteen bytes, an IPv6 one's
    // last word varies most.
    let slot =
        unsafe { (*w)[2] ^ (*w)[4] ^ (*w)[7] ^ ((*w)[8] ^ (*w)[11]).rotate_left(16) }.wrapping_mul(0x9e37_79b1) >> 24;
    let cached = ROUTE_CACHE.get_ptr_mut(slot & (ROUTE_CACHE_SLOTS - 1));
    if let Some(c) = cached {
        // SAFETY: this CPU's slot and scratch, in place. The question is
        // kept before the helper overwrites the ingress word with its answer.
        unsafe {
            if (*c).expires > now && same_question(&(*c).asked, &*w) {
                (*p).ifindex = (*c).ifindex;
                (*p).tot_len = (*c).mtu;
                copy_mac(&mut (*p).smac, &(*c).smac);
                copy_mac(&mut (*p).dmac, &(*c).dmac);
                return FIB_SUCCESS_U32;
            }
            (*c).expires = 0;
            for (kept, asked) in (*c).asked.iter_mut().zip((*w).iter()) {
                *kept = *asked;
            }
        }
    }
    // SAFETY: p is a bpf_fib_lookup as the helper expects, in this CPU's scratch.
    let r = unsafe { bpf_fib_lookup(ctx.ctx as *mut _, p as *mut _, core::mem::size_of::<FibParams>() as i32, 0) };
    if r != FIB_SUCCESS {
        return r as u32;
    }
    if let Some(c) = cached {
        // SAFETY: this CPU's slot and scratch, in place. Kept only if no
        // other question was asked meanwhile: a packet that interrupted
        // this one on the same CPU (a test run with bottom halves on) may
        // have asked and been answered in between. (The addresses cannot
        // tell: the helper puts a gateway's in place of the destination.)
        unsafe {
            if (*s).asked == asked {
                (*c).ifindex = (*p).ifindex;
                (*c).mtu = (*p).tot_len;
                copy_mac(&mut (*c).smac, &(*p).smac);
                copy_mac(&mut (*c).dmac, &(*p).dmac);
                (*c).expires = now + KEPT_TICKS;
            }
        }
    }
    FIB_SUCCESS_U32
}

/// Whether a cached question is this one (twelve words, compared alike).
#[inline(always)]
fn same_question(a: &[u32; 12], b: &[u32; 13]) -> bool {
    a.iter().zip(b).fold(0, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// The way a socket buffer (TC) leaves ([`route_skb`]).
pub struct SkbWay {
    /// The interface.
    pub ifindex: u32,
    /// Its MAC (zero while `unresolved`).
    pub smac: [u8; 6],
    /// The next hop's MAC (zero while `unresolved`).
    pub dmac: [u8; 6],
    /// The next hop has no valid neighbour entry: its address, as
    /// `bpf_redirect_neigh` takes it, for the kernel to resolve.
    pub unresolved: Option<bpf_redir_neigh>,
}

/// The way a socket buffer (TC) from `src` to `dst` leaves, its next hop
/// resolved or not. Uncached: for health checks' probes.
#[inline(always)]
pub fn route_skb(ctx: &aya_ebpf::programs::TcContext, v4: bool, src: &[u8; 16], dst: &[u8; 16]) -> Option<SkbWay> {
    let mut p = MaybeUninit::<FibParams>::uninit();
    // SAFETY: all 16 words set (the helper takes initialized memory).
    let w = unsafe { store::Words::over(p.as_mut_ptr()) };
    put_question(&w, v4, unsafe { (*ctx.skb.skb).ifindex }, src, dst);
    for i in 13..16 {
        w.put(i, 0);
    }
    // SAFETY: every word set above. In place: a moved copy's zero words
    // would be a `memset` call again.
    let p = unsafe { p.assume_init_mut() };
    // SAFETY: a bpf_fib_lookup on this program's stack.
    let r = unsafe { bpf_fib_lookup(ctx.skb.skb as *mut _, p as *mut FibParams as *mut _, 64, 0) };
    let unresolved = match r {
        FIB_SUCCESS => None,
        // The lookup has put the next hop (the gateway, or `dst` on link)
        // in the destination, and its interface in `ifindex`.
        FIB_NO_NEIGH => {
            let d = words16(&p.dst);
            let mut nh = MaybeUninit::<bpf_redir_neigh>::uninit();
            // SAFETY: the family and the four words of the address union,
            // all set: a union literal's zero tail is a `memset` call.
            let w = unsafe { store::Words::over(nh.as_mut_ptr()) };
            w.put(0, p.family as u32);
            // By the answer's family: an IPv4 route may have an IPv6 gateway.
            if p.family == AF_INET {
                w.put(1, d[0]);
                for i in 2..5 {
                    w.put(i, 0);
                }
            } else {
                for (i, v) in [(1, d[0]), (2, d[1]), (3, d[2]), (4, d[3])] {
                    w.put(i, v);
                }
            }
            // SAFETY: every word set above.
            Some(unsafe { nh.assume_init() })
        }
        _ => return None,
    };
    Some(SkbWay { ifindex: p.ifindex, smac: p.smac, dmac: p.dmac, unresolved })
}
