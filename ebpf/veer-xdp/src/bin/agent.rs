//! `veer-agent`: the optional XDP program for DSR backends.
//!
//! A SYN for one of this host's VIPs that no socket would take (its server
//! died, or never started) is answered by the kernel with RST, straight to
//! the client, past the load balancer. The agent sends it back to the
//! balancer instead, MAC addresses swapped (`XDP_TX`); the balancer knows a
//! bounced SYN by its source MAC (the backend it sent the SYN to), holds the
//! backend suspect and forwards the SYN to another one. The lookup is the
//! kernel's own (`bpf_skc_lookup_tcp`, Linux 5.2+): a listener, even on
//! `0.0.0.0` with `SO_REUSEPORT`, or a connection in progress keeps the SYN.
//!
//! Any other segment (not a RST) for a VIP that no connection owns is
//! bounced the same way: no socket, or only a listener, which owns no
//! established flow (unless the segment is the ACK of one of its SYN
//! cookies). veer sends it to the backend its previous ring gives: the
//! flow lost its entry at the balancer after a ring change, and this
//! backend was never its own (see `second_chance` in veer-xdp).
//!
//! Behind routers (`forwarding = "ipip"` or `"gue"`), packets arrive inside
//! a tunnel. The agent takes a VIP packet out of it (`bpf_xdp_adjust_head`:
//! no `ipip` or `fou` module needed) and passes the inner packet to the
//! kernel; one it bounces goes back inside the same tunnel, outer addresses
//! swapped, to the balancer's tunnel source. Only packets from a balancer's
//! tunnel source (`--from`) whose inner destination is one of the agent's
//! VIPs are taken out.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{bpf_sock_tuple, xdp_action, BPF_F_CURRENT_NETNS},
    helpers::{bpf_sk_release, bpf_skc_lookup_tcp, bpf_tcp_check_syncookie, bpf_xdp_adjust_head},
    macros::{map, xdp},
    maps::{Array, HashMap, PerCpuArray},
    programs::XdpContext,
};
use veer_abi::{
    ipv4_mapped, AgentConfig, AgentCounter, AGENT_DECAP_GUE, AGENT_DECAP_IPIP, IPPROTO_TCP, IPPROTO_UDP,
    MAX_AGENT_PEERS, MAX_AGENT_VIPS,
};

/// The VIPs this backend serves (16-byte form; IPv4-mapped), written by
/// `veerctl agent install`.
#[map]
static AGENT_VIPS: HashMap<[u8; 16], u32> = HashMap::with_max_entries(MAX_AGENT_VIPS, 0);

/// Counters, by [`AgentCounter`].
#[map]
static AGENT_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(AgentCounter::COUNT, 0);

/// The tunnels it takes VIP packets out of.
#[map]
static AGENT_CONFIG: Array<AgentConfig> = Array::with_max_entries(1, 0);

/// The balancers' tunnel sources: tunnel packets from anyone else are left
/// to the kernel, untouched.
#[map]
static AGENT_PEERS: HashMap<[u8; 16], u32> = HashMap::with_max_entries(MAX_AGENT_PEERS, 0);

const ETH_LEN: usize = 14;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;
/// `TCP_LISTEN` of the kernel's `sk_state`.
const TCP_LISTEN: u32 = 10;

/// What [`unowned`] found.
const KEPT_SYN: u32 = 0;
/// A SYN no socket takes.
const BOUNCE_SYN: u32 = 1;
/// Another segment no connection owns.
const BOUNCE_SEGMENT: u32 = 2;
/// Not for a VIP, not TCP, a RST, or owned: left to the kernel, uncounted.
const LEAVE: u32 = 3;

/// `struct bpf_sock_tuple`'s IPv4 member.
#[repr(C)]
struct Tuple4 {
    saddr: [u8; 4],
    daddr: [u8; 4],
    sport: [u8; 2],
    dport: [u8; 2],
}

/// `struct bpf_sock_tuple`'s IPv6 member.
#[repr(C)]
struct Tuple6 {
    saddr: [u8; 16],
    daddr: [u8; 16],
    sport: [u8; 2],
    dport: [u8; 2],
}

/// The whole frame has `len` bytes from `offset` on.
#[inline(always)]
fn at<T>(ctx: &XdpContext, offset: usize) -> Option<*mut T> {
    if ctx.data() + offset + core::mem::size_of::<T>() > ctx.data_end() {
        return None;
    }
    Some((ctx.data() + offset) as *mut T)
}

#[inline(always)]
fn count(c: AgentCounter) {
    if let Some(p) = AGENT_STATS.get_ptr_mut(c as u32) {
        unsafe { *p += 1 };
    }
}

/// Bounces the segment in `ctx` if it is for a VIP and nothing owns it;
/// takes a VIP packet out of its tunnel.
#[xdp]
pub fn veer_agent(ctx: XdpContext) -> u32 {
    let tunnel = tunnelled(&ctx);
    let (base, ethertype) = match &tunnel {
        Some(t) => (ETH_LEN + t.overhead, t.inner),
        None => match at::<[u8; 2]>(&ctx, 12) {
            Some(p) => (ETH_LEN, unsafe { *p }),
            None => return xdp_action::XDP_PASS,
        },
    };
    let found = unowned(&ctx, base, ethertype).unwrap_or(LEAVE);
    match found {
        BOUNCE_SYN | BOUNCE_SEGMENT => {
            // Back inside the tunnel it came in, to the balancer.
            if let Some(t) = &tunnel {
                swap_outer(&ctx, t.v4);
            }
            // SAFETY: the Ethernet header was bounds-checked by `unowned`.
            if let Some(eth) = at::<[[u8; 6]; 2]>(&ctx, 0) {
                unsafe {
                    let [dst, src] = *eth;
                    *eth = [src, dst];
                }
                count(if found == BOUNCE_SYN { AgentCounter::Bounced } else { AgentCounter::Unowned });
                return xdp_action::XDP_TX;
            }
            xdp_action::XDP_PASS
        }
        _ => {
            if found == KEPT_SYN {
                count(AgentCounter::Kept);
            }
            if let Some(t) = &tunnel {
                take_out(&ctx, t);
            }
            xdp_action::XDP_PASS
        }
    }
}

/// A VIP packet inside a tunnel.
struct Tunnel {
    /// Outer header bytes (IP, and UDP for GUE).
    overhead: usize,
    /// The inner packet's EtherType.
    inner: [u8; 2],
    /// The outer header is IPv4.
    v4: bool,
}

/// The tunnel the frame's VIP packet is in, if it is in one the agent
/// takes packets out of.
#[inline(always)]
fn tunnelled(ctx: &XdpContext) -> Option<Tunnel> {
    let cfg = AGENT_CONFIG.get(0)?;
    if cfg.decap == 0 {
        return None;
    }
    let (v4, proto, ip_len) = match unsafe { *at::<[u8; 2]>(ctx, 12)? } {
        [0x08, 0x00] => {
            let ip = unsafe { &*at::<[u8; 20]>(ctx, ETH_LEN)? };
            // Options, or a fragment: not ours to take apart.
            if ip[0] != 0x45 || u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 {
                return None;
            }
            AGENT_PEERS.get_ptr(&ipv4_mapped([ip[12], ip[13], ip[14], ip[15]]))?;
            (true, ip[9], 20)
        }
        [0x86, 0xdd] => {
            let ip = unsafe { &*at::<[u8; 40]>(ctx, ETH_LEN)? };
            // Looked up in place (a zeroed copy is a byte-loop `memset` call).
            let src: &[u8; 16] = ip[8..24].try_into().ok()?;
            AGENT_PEERS.get_ptr(src)?;
            (false, ip[6], 40)
        }
        _ => return None,
    };
    let (overhead, inner) = match proto {
        4 if cfg.decap & AGENT_DECAP_IPIP != 0 => (ip_len, [0x08, 0x00]),
        41 if cfg.decap & AGENT_DECAP_IPIP != 0 => (ip_len, [0x86, 0xdd]),
        IPPROTO_UDP if cfg.decap & AGENT_DECAP_GUE != 0 => {
            let udp = unsafe { &*at::<[u8; 8]>(ctx, ETH_LEN + ip_len)? };
            if u16::from_be_bytes([udp[2], udp[3]]) != cfg.gue_port {
                return None;
            }
            let version = unsafe { *at::<u8>(ctx, ETH_LEN + ip_len + 8)? } >> 4;
            (ip_len + 8, if version == 4 { [0x08, 0x00] } else { [0x86, 0xdd] })
        }
        _ => return None,
    };
    let base = ETH_LEN + overhead;
    let vip = if inner == [0x08, 0x00] {
        let ip = unsafe { &*at::<[u8; 20]>(ctx, base)? };
        ipv4_mapped([ip[16], ip[17], ip[18], ip[19]])
    } else {
        let ip = unsafe { &*at::<[u8; 40]>(ctx, base)? };
        let mut dst = [0u8; 16];
        dst.copy_from_slice(&ip[24..40]);
        dst
    };
    AGENT_VIPS.get_ptr(&vip)?;
    Some(Tunnel { overhead, inner, v4 })
}

/// Swaps the outer header's addresses: the packet goes back to the
/// balancer's tunnel source, from this host. The checksums stay right
/// (a sum does not depend on the order of its words).
#[inline(always)]
fn swap_outer(ctx: &XdpContext, v4: bool) {
    if v4 {
        if let Some(a) = at::<[[u8; 4]; 2]>(ctx, ETH_LEN + 12) {
            unsafe {
                let [src, dst] = *a;
                *a = [dst, src];
            }
        }
    } else if let Some(a) = at::<[[u8; 16]; 2]>(ctx, ETH_LEN + 8) {
        unsafe {
            let [src, dst] = *a;
            *a = [dst, src];
        }
    }
}

/// Takes the outer headers off: the frame becomes the inner packet, to
/// this host's MAC as it came. A router's congestion mark on the outer
/// header goes onto the inner one (RFC 6040), where the transport sees it.
#[inline(always)]
fn take_out(ctx: &XdpContext, t: &Tunnel) {
    let Some(eth) = at::<[[u8; 6]; 2]>(ctx, 0) else { return };
    let macs = unsafe { *eth };
    if outer_ecn(ctx, t.v4) == Some(ECN_CE) {
        mark_ce(ctx, ETH_LEN + t.overhead, t.inner == [0x08, 0x00]);
    }
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, t.overhead as i32) } != 0 {
        return;
    }
    if let Some(eth) = at::<([[u8; 6]; 2], [u8; 2])>(ctx, 0) {
        unsafe { *eth = (macs, t.inner) };
        count(AgentCounter::Decapsulated);
    }
}

/// ECN's "congestion experienced" codepoint.
const ECN_CE: u8 = 3;

/// The outer header's ECN bits.
#[inline(always)]
fn outer_ecn(ctx: &XdpContext, v4: bool) -> Option<u8> {
    let b = unsafe { *at::<[u8; 2]>(ctx, ETH_LEN)? };
    Some(if v4 { b[1] & 3 } else { (b[1] >> 4) & 3 })
}

/// Marks the inner IP header at `at` "congestion experienced" if it is
/// ECN-capable (IPv4: its checksum updated for the changed word).
#[inline(always)]
fn mark_ce(ctx: &XdpContext, at: usize, v4: bool) {
    let Some(h) = self::at::<[u8; 12]>(ctx, at) else { return };
    // SAFETY: bounds-checked by `at`.
    let h = unsafe { &mut *h };
    if v4 {
        if h[1] & 3 == 0 || h[1] & 3 == ECN_CE {
            return;
        }
        let old = u16::from_be_bytes([h[0], h[1]]);
        h[1] |= ECN_CE;
        let new = u16::from_be_bytes([h[0], h[1]]);
        // RFC 1624: HC' = ~(~HC + ~m + m').
        let sum = (!u16::from_be_bytes([h[10], h[11]])) as u32 + (!old) as u32 + new as u32;
        let sum = (sum & 0xffff) + (sum >> 16);
        h[10..12].copy_from_slice(&(!(((sum & 0xffff) + (sum >> 16)) as u16)).to_be_bytes());
    } else if (h[1] >> 4) & 3 != 0 {
        h[1] |= ECN_CE << 4;
    }
}

/// [`KEPT_SYN`], [`BOUNCE_SYN`], [`BOUNCE_SEGMENT`] or [`LEAVE`] (`None`:
/// not a TCP segment for a VIP).
#[inline(always)]
fn unowned(ctx: &XdpContext, base: usize, ethertype: [u8; 2]) -> Option<u32> {
    match ethertype {
        [0x08, 0x00] => {
            let ip = at::<[u8; 20]>(ctx, base)?;
            let ip = unsafe { &*ip };
            let ihl = ((ip[0] & 0x0f) as usize) * 4;
            // Not TCP, a fragment, or options past the bounds we check.
            if ip[9] != IPPROTO_TCP || u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 || !(20..=60).contains(&ihl) {
                return None;
            }
            let dst = [ip[16], ip[17], ip[18], ip[19]];
            AGENT_VIPS.get_ptr(&ipv4_mapped(dst))?;
            let th = at::<[u8; 20]>(ctx, base + ihl)?;
            let tcp = unsafe { &*th };
            let mut t = Tuple4 {
                saddr: [ip[12], ip[13], ip[14], ip[15]],
                daddr: dst,
                sport: [tcp[0], tcp[1]],
                dport: [tcp[2], tcp[3]],
            };
            let seg = Segment { flags: tcp[13], ip: ip as *const _ as *mut u8, ip_len: 20, th: th as *mut u8 };
            Some(judge(ctx, &mut t as *mut Tuple4 as *mut bpf_sock_tuple, core::mem::size_of::<Tuple4>(), &seg))
        }
        [0x86, 0xdd] => {
            let ip = unsafe { &*at::<[u8; 40]>(ctx, base)? };
            // Extension headers are not walked: such SYNs are left alone.
            if ip[6] != IPPROTO_TCP {
                return None;
            }
            let mut dst = [0u8; 16];
            dst.copy_from_slice(&ip[24..40]);
            AGENT_VIPS.get_ptr(&dst)?;
            let th = at::<[u8; 20]>(ctx, base + 40)?;
            let tcp = unsafe { &*th };
            let mut src = [0u8; 16];
            src.copy_from_slice(&ip[8..24]);
            let mut t = Tuple6 { saddr: src, daddr: dst, sport: [tcp[0], tcp[1]], dport: [tcp[2], tcp[3]] };
            let seg = Segment { flags: tcp[13], ip: ip as *const _ as *mut u8, ip_len: 40, th: th as *mut u8 };
            Some(judge(ctx, &mut t as *mut Tuple6 as *mut bpf_sock_tuple, core::mem::size_of::<Tuple6>(), &seg))
        }
        _ => None,
    }
}

/// A TCP segment's flags and headers, in the packet.
struct Segment {
    flags: u8,
    ip: *mut u8,
    ip_len: u32,
    th: *mut u8,
}

/// What the sockets of this network namespace say about a segment of the
/// tuple: a SYN is kept by any socket, another segment by a connection (a
/// listener only by the ACK of one of its cookies); a RST is never bounced.
#[inline(always)]
fn judge(ctx: &XdpContext, tuple: *mut bpf_sock_tuple, size: usize, seg: &Segment) -> u32 {
    let syn = seg.flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
    if !syn && seg.flags & (TCP_SYN | TCP_RST) != 0 {
        return LEAVE;
    }
    // SAFETY: `tuple` points at `size` initialised bytes on our stack.
    let sk = unsafe { bpf_skc_lookup_tcp(ctx.ctx as *mut _, tuple, size as u32, BPF_F_CURRENT_NETNS as u64, 0) };
    if sk.is_null() {
        return if syn { BOUNCE_SYN } else { BOUNCE_SEGMENT };
    }
    let owned = syn || unsafe { (*sk).state } != TCP_LISTEN || {
        // SAFETY: a listener the lookup acquired; the headers are in the
        // packet (bounds-checked by the caller).
        unsafe { bpf_tcp_check_syncookie(sk as *mut _, seg.ip as *mut _, seg.ip_len, seg.th as *mut _, 20) == 0 }
    };
    // SAFETY: a socket the lookup acquired; released once.
    unsafe { bpf_sk_release(sk as *mut _) };
    match (syn, owned) {
        (true, _) => KEPT_SYN,
        (false, true) => LEAVE,
        (false, false) => BOUNCE_SEGMENT,
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
