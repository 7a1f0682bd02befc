//! Minimal XDP programs: the baseline that benchmarks compare veer against,
//! and the `XDP_PASS` program a veth peer needs so that frames sent to it
//! with `XDP_TX`/`XDP_REDIRECT` in native mode are delivered (veth drops them
//! otherwise).
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{Array, LruHashMap},
    programs::XdpContext,
};
use veer_abi::{csum::update32, hash::flow_hash, FlowKey, MinimalDsr, IPPROTO_TCP};

/// `veer_dsr`'s VIP and backend.
#[map]
static MINIMAL_DSR: Array<MinimalDsr> = Array::with_max_entries(1, 0);

/// Passes every frame to the kernel.
#[xdp]
pub fn veer_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Sends every frame back out with its MAC addresses swapped.
#[xdp]
pub fn veer_tx(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    if start + 12 > ctx.data_end() {
        return xdp_action::XDP_DROP;
    }
    let eth = start as *mut [u8; 6];
    // SAFETY: 12 bytes checked above.
    unsafe {
        let dst = *eth;
        *eth = *eth.add(1);
        *eth.add(1) = dst;
    }
    xdp_action::XDP_TX
}

/// The least a DSR balancer does: an IPv4 packet to the VIP goes back out
/// to the one backend's MAC; anything else is the kernel's.
#[xdp]
pub fn veer_dsr(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    // Ethernet (14) and the IPv4 header up to its destination (20).
    if start + 34 > ctx.data_end() {
        return xdp_action::XDP_PASS;
    }
    let Some(cfg) = MINIMAL_DSR.get(0) else {
        return xdp_action::XDP_PASS;
    };
    let frame = start as *mut u8;
    // SAFETY: 34 bytes checked above.
    unsafe {
        if *frame.add(12) != 0x08 || *frame.add(13) != 0x00 || *(frame.add(30) as *const [u8; 4]) != cfg.vip {
            return xdp_action::XDP_PASS;
        }
        // Byte by byte, volatile: as array copies, LLVM calls a byte-loop
        // `memmove`, which would slow this baseline down.
        for i in 0..6 {
            core::ptr::write_volatile(frame.add(6 + i), *frame.add(i));
            core::ptr::write_volatile(frame.add(i), cfg.backend_mac[i]);
        }
    }
    xdp_action::XDP_TX
}

/// Flows of `veer_floor`, keyed as veer keys them (40 bytes, both
/// families), with their backend's MAC; per-CPU LRU lists as veer's tables.
/// The bench sizes it as its new-flow table (`Baseline::load_sized`).
#[map]
static FLOOR_FLOWS: LruHashMap<FlowKey, [u8; 8]> = LruHashMap::with_max_entries(1024, 1 << 1);

/// Flows of `veer_floor_short`: IPv4 keys of 16 bytes (addresses, ports, protocol).
#[map]
static FLOOR_FLOWS4: LruHashMap<[u32; 4], [u8; 8]> = LruHashMap::with_max_entries(1024, 1 << 1);

/// The floor's ring (a Maglev ring's length) and backends' MACs.
#[map]
static FLOOR_RING: Array<u32> = Array::with_max_entries(65537, 0);
#[map]
static FLOOR_BACKENDS: Array<[u8; 8]> = Array::with_max_entries(16, 0);

/// The least a connection-tracking DSR balancer does, as a floor for veer's
/// per-packet rows: the bounds and header checks a safe parse needs (IPv4
/// or IPv6, no fragment, TCP), one lookup of the flow's key and, for a flow
/// not there, a ring slot by veer's flow hash, its backend's entry and an
/// insert; then the backend's MAC, and `XDP_TX`. No service table, no
/// health state, no counters, no clock. Anything else is passed. (The bench
/// leaves the ring and the backends zero: every flow goes to backend 0,
/// at the same cost.)
#[xdp]
pub fn veer_floor(ctx: XdpContext) -> u32 {
    floor::<false>(&ctx)
}

/// [`veer_floor`] with an IPv4 flow keyed by 16 bytes instead of 40.
#[xdp]
pub fn veer_floor_short(ctx: XdpContext) -> u32 {
    floor::<true>(&ctx)
}

/// A frame whose first `need` bytes are checked present: loads of any
/// width at any offset within them (one load each, as veer's parse makes).
#[derive(Clone, Copy)]
struct Frame {
    start: *mut u8,
    /// The whole frame's length.
    len: usize,
}

impl Frame {
    /// The frame of `ctx`, if it holds `need` bytes.
    #[inline(always)]
    fn of(ctx: &XdpContext, need: usize) -> Option<Self> {
        let (start, end) = (ctx.data(), ctx.data_end());
        (start + need <= end).then_some(Frame { start: start as *mut u8, len: end - start })
    }

    // SAFETY (the three loads): callers read within the `need` bytes of `of`.
    #[inline(always)]
    fn u8(self, i: usize) -> u8 {
        unsafe { *self.start.add(i) }
    }

    #[inline(always)]
    fn be16(self, i: usize) -> u16 {
        u16::from_be(unsafe { *(self.start.add(i) as *const u16) })
    }

    #[inline(always)]
    fn word(self, i: usize) -> u32 {
        unsafe { *(self.start.add(i) as *const u32) }
    }
}

#[inline(always)]
fn floor<const SHORT: bool>(ctx: &XdpContext) -> u32 {
    // Ethernet and the larger IP header, the TCP header's first 20 bytes.
    let Some(f) = Frame::of(ctx, 14 + 40 + 20) else { return xdp_action::XDP_PASS };
    let frame = f.start;
    let (key, l4) = match f.be16(12) {
        0x0800 => {
            let (vihl, total) = (f.u8(14), f.be16(16) as usize);
            let ihl = ((vihl & 0xf) as usize) * 4;
            if vihl >> 4 != 4 || ihl < 20 || total < ihl || 14 + total > f.len {
                return xdp_action::XDP_PASS;
            }
            if f.be16(20) & 0x3fff != 0 || f.u8(23) != IPPROTO_TCP || ihl != 20 {
                return xdp_action::XDP_PASS;
            }
            (FlowKey::v4_wire(f.word(26), f.word(30), f.word(34), IPPROTO_TCP), 34)
        }
        0x86dd => {
            if f.u8(14) >> 4 != 6 || 54 + f.be16(18) as usize > f.len || f.u8(20) != IPPROTO_TCP {
                return xdp_action::XDP_PASS;
            }
            let w = |i: usize| [f.word(i), f.word(i + 4), f.word(i + 8), f.word(i + 12)];
            (FlowKey::v6_wire(w(22), w(38), f.word(54), IPPROTO_TCP), 54)
        }
        _ => return xdp_action::XDP_PASS,
    };
    // The TCP header's length, within the IP packet (`end` checked above
    // holds it whole: the parse checked the IP length against the frame).
    let tcp_len = ((f.u8(l4 + 12) >> 4) as usize) * 4;
    let ip_end = if l4 == 34 { 14 + f.be16(16) as usize } else { 54 + f.be16(18) as usize };
    if tcp_len < 20 || l4 + tcp_len > ip_end {
        return xdp_action::XDP_PASS;
    }
    let mac = if SHORT && l4 == 34 {
        let short = [f.word(26), f.word(30), f.word(34), IPPROTO_TCP as u32];
        floor_backend(&FLOOR_FLOWS4, &short, &key)
    } else {
        floor_backend(&FLOOR_FLOWS, &key, &key)
    };
    let Some(mac) = mac else { return xdp_action::XDP_PASS };
    // SAFETY: 12 bytes of Ethernet addresses, checked above.
    unsafe {
        let eth = frame as *mut [u8; 6];
        *eth.add(1) = *eth;
        *(frame as *mut u32) = *(mac.as_ptr() as *const u32);
        *(frame.add(4) as *mut u16) = *(mac.as_ptr().add(4) as *const u16);
    }
    xdp_action::XDP_TX
}

/// A `veer_floor_nat` flow: the client's packet's new source, destination
/// and ports (as the frame holds them), and the next hop's MAC.
#[derive(Clone, Copy)]
#[repr(C)]
struct FloorNat {
    words: [u32; 3],
    mac: [u8; 8],
}

/// Flows of `veer_floor_nat`, and their answers' mappings (keyed by the
/// backend's packet: backend -> SNAT address and port).
#[map]
static FLOOR_NAT: LruHashMap<FlowKey, FloorNat> = LruHashMap::with_max_entries(1024, 1 << 1);
#[map]
static FLOOR_NAT_REV: LruHashMap<FlowKey, FloorNat> = LruHashMap::with_max_entries(1024, 1 << 1);

/// The least a NAT balancer does for an IPv4 TCP packet, as a floor for
/// veer's NAT rows: `veer_floor`'s parse and lookup, and then source,
/// destination, ports and both checksums rewritten (incrementally, by
/// words), one off the TTL, the next hop's MAC from the entry. A new flow also inserts the
/// answers' mapping; its SNAT port comes from the flow's hash, unchecked.
/// No route lookup: the next hop is in the entry, as if never changed.
#[xdp]
pub fn veer_floor_nat(ctx: XdpContext) -> u32 {
    let Some(f) = Frame::of(&ctx, 14 + 20 + 20) else { return xdp_action::XDP_PASS };
    let frame = f.start;
    let (vihl, total) = (f.u8(14), f.be16(16) as usize);
    if f.be16(12) != 0x0800 || vihl != 0x45 || total < 40 || 14 + total > f.len {
        return xdp_action::XDP_PASS;
    }
    let tcp_len = ((f.u8(46) >> 4) as usize) * 4;
    if f.be16(20) & 0x3fff != 0 || f.u8(23) != IPPROTO_TCP || tcp_len < 20 || 34 + tcp_len > 14 + total || f.u8(22) <= 1
    {
        return xdp_action::XDP_PASS;
    }
    let old = [f.word(26), f.word(30), f.word(34)];
    let key = FlowKey::v4_wire(old[0], old[1], old[2], IPPROTO_TCP);
    let nat = match FLOOR_NAT.get_ptr(&key) {
        Some(n) => unsafe { *n },
        None => {
            let Some(n) = floor_nat_new(&key, &old) else { return xdp_action::XDP_PASS };
            n
        }
    };
    let be = |w: [u32; 3]| [u32::from_be(w[0]), u32::from_be(w[1]), u32::from_be(w[2])];
    let (old_be, new_be) = (be(old), be(nat.words));
    // SAFETY: the IPv4 header's checksum (24) and addresses (26..34), the
    // TCP header's ports (34..38) and checksum (50), in bounds above.
    unsafe {
        // One off the TTL, which shares a 16-bit word with the protocol.
        let ttl_proto = f.be16(22) as u32;
        *frame.add(22) -= 1;
        let ip_check = frame.add(24) as *mut u16;
        let sums = [old_be[0], old_be[1], ttl_proto];
        let news = [new_be[0], new_be[1], ttl_proto - 0x100];
        *ip_check = update32(u16::from_be(*ip_check), &sums, &news).to_be();
        let tcp_check = frame.add(50) as *mut u16;
        *tcp_check = update32(u16::from_be(*tcp_check), &old_be, &new_be).to_be();
        for (i, w) in nat.words.iter().enumerate() {
            *(frame.add(26 + 4 * i) as *mut u32) = *w;
        }
        let eth = frame as *mut [u8; 6];
        *eth.add(1) = *eth;
        *(frame as *mut u32) = *(nat.mac.as_ptr() as *const u32);
        *(frame.add(4) as *mut u16) = *(nat.mac.as_ptr().add(4) as *const u16);
    }
    xdp_action::XDP_TX
}

/// A new `veer_floor_nat` flow: its backend by the ring, a SNAT port by
/// its hash, and both mappings inserted.
#[inline(always)]
fn floor_nat_new(key: &FlowKey, old: &[u32; 3]) -> Option<FloorNat> {
    let h = flow_hash(key);
    let backend = *FLOOR_RING.get(h % 65537)?;
    let mac = *FLOOR_BACKENDS.get(backend & 15)?;
    // 10.0.9.1 from port 10000 + the hash's low bits, to 10.0.8.<backend>:80.
    let (snat, dst) =
        (u32::from_be_bytes([10, 0, 9, 1]).to_be(), u32::from_be_bytes([10, 0, 8, (backend & 15) as u8]).to_be());
    let ports = ((10_000 + (h & 0x7fff)) as u16).to_be() as u32 | ((80u16.to_be() as u32) << 16);
    let nat = FloorNat { words: [snat, dst, ports], mac };
    FLOOR_NAT.insert(key, &nat, 0).ok()?;
    let answer = FlowKey::v4_wire(dst, snat, ports.rotate_left(16), IPPROTO_TCP);
    let back = FloorNat { words: [old[1], old[0], old[2].rotate_left(16)], mac };
    FLOOR_NAT_REV.insert(&answer, &back, 0).ok()?;
    Some(nat)
}

/// The flow's backend MAC in `table`, or a new entry from the ring's slot.
#[inline(always)]
fn floor_backend<K>(table: &LruHashMap<K, [u8; 8]>, k: &K, key: &FlowKey) -> Option<[u8; 8]> {
    if let Some(mac) = table.get_ptr(k) {
        return Some(unsafe { *mac });
    }
    let backend = *FLOOR_RING.get(flow_hash(key) % 65537)?;
    let mac = *FLOOR_BACKENDS.get(backend & 15)?;
    table.insert(k, &mac, 0).ok()?;
    Some(mac)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
