//! Full NAT: backends that need no setup.
//!
//! A client's flow to a VIP leaves veer from a SNAT address and port toward
//! the backend's own address; the backend answers that address, so its
//! answers come back through veer. `NAT_REV` finds the flow by the answer's
//! tuple, and the answer leaves toward the client from the VIP. Addresses and
//! ports change in place; the IPv4 header checksum and the TCP or UDP
//! checksum (its pseudo-header covers the addresses) are updated
//! incrementally. The next hop comes from the kernel's routing table.

use aya_ebpf::{helpers::bpf_get_prandom_u32, programs::XdpContext};
use veer_abi::{
    csum, is_ipv4_mapped, Backend, ConnEntry, FlowKey, GlobalCounter, NatKey, NatMapping, Service, IPPROTO_TCP,
    IPPROTO_UDP, NAT_PORT_TRIES,
};

use crate::{
    access::{mut_ptr_at, opaque},
    conntrack, fib,
    headers::{
        eth::EthHdr,
        ipv4::Ipv4Hdr,
        ipv6::Ipv6Hdr,
        l4::{TcpHdr, UdpHdr, TCP_FIN, TCP_RST},
    },
    maps::{ALLOC_SCRATCH, CONNS, NAT_CONFIG, NAT_REV, SNAT_ADDRS},
    scheduler::backend,
    parse::VipPacket,
    stats, syn_stash,
    verdict::{pass, Drop},
};

/// `bpf_map_update_elem` flag: only create.
const BPF_NOEXIST: u64 = 1;

/// Room for a new mapping's key and value (`ALLOC_SCRATCH`).
pub struct AllocScratch {
    key: NatKey,
    mapping: NatMapping,
}

/// A NAT flow's SNAT endpoint: port, and index of the address in `SNAT_ADDRS`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Slot {
    pub port: u16,
    pub addr: u16,
}

impl Slot {
    /// No SNAT endpoint (DSR).
    pub const NONE: Slot = Slot { port: 0, addr: 0 };
}

/// The SNAT address at `index` in `SNAT_ADDRS`.
#[inline(always)]
pub fn snat_addr(index: u16) -> Option<[u8; 16]> {
    SNAT_ADDRS.get(index as u32).copied()
}

#[inline(always)]
pub fn backend_port(key: &FlowKey, b: &Backend) -> u16 {
    if b.port != 0 {
        b.port
    } else {
        key.dport
    }
}

/// A SNAT address and port toward backend `id` for a new flow: from a
/// random start, at most `NAT_PORT_TRIES` tries, each port on every one of
/// the backend's SNAT addresses before the next port. Its return entry is created here, so no
/// live mapping is ever handed out twice. A call of its own: its keys would
/// not fit on the NAT program's stack.
#[inline(never)]
pub fn allocate(svc: &Service, key: &FlowKey, id: u32, b: &Backend) -> Result<Slot, Drop> {
    let cfg = NAT_CONFIG.get(0).ok_or(Drop::NatExhausted)?;
    let (min, max) = (cfg.port_min as u32, cfg.port_max as u32);
    if min == 0 || max < min {
        return Err(Drop::NatExhausted);
    }
    let span = max - min + 1;
    let addrs = (b.snat_count as u32).max(1);
    // A random start: a client reusing its port must not land on the
    // mappings its earlier connections left behind.
    let r = unsafe { bpf_get_prandom_u32() };
    let (Some(port0), Some(addr0)) = (r.checked_rem(span), (r >> 16).checked_rem(addrs)) else {
        return Err(Drop::NatExhausted);
    };
    // The key and value are built in per-CPU scratch: on the stack they
    // would not fit beside the NAT program's own frame.
    let scratch = unsafe { &mut *ALLOC_SCRATCH.get_ptr_mut(0).ok_or(Drop::NatExhausted)? };
    scratch.mapping = NatMapping { flow: *key, backend: id, service: svc.id };
    scratch.key = NatKey {
        backend: b.addr,
        snat: [0; 16],
        backend_port: backend_port(key, b),
        snat_port: 0,
        proto: key.proto,
        _pad: [0; 3],
    };
    for i in 0..NAT_PORT_TRIES {
        // Wraps around the ranges (which may be smaller than the tries).
        let step = i.checked_div(addrs).unwrap_or(i);
        let (Some(off), Some(a)) = ((port0 + step).checked_rem(span), (addr0 + i).checked_rem(addrs)) else { break };
        let port = (min + opaque(off)) as u16;
        let index = b.snat.wrapping_add(opaque(a) as u16);
        let Some(snat) = snat_addr(index) else { break };
        scratch.key.snat = snat;
        scratch.key.snat_port = port;
        if NAT_REV.insert(&scratch.key, &scratch.mapping, BPF_NOEXIST).is_ok() {
            stats::count(GlobalCounter::NatMapped);
            return Ok(Slot { port, addr: index });
        }
    }
    Err(Drop::NatExhausted)
}

/// The client's packet, rewritten toward its backend and sent.
#[inline(always)]
pub fn forward(ctx: &XdpContext, pkt: &VipPacket, b: &Backend, slot: &Slot) -> Result<u32, Drop> {
    let snat = snat_addr(slot.addr).ok_or(Drop::BadBackend)?;
    let v4 = is_ipv4_mapped(&pkt.key.dst);
    rewrite(ctx, pkt, v4, &snat, &b.addr, slot.port, backend_port(&pkt.key, b))?;
    fib::send(ctx, v4, &snat, &b.addr)
}

/// A SYN reusing the 5-tuple of a finished flow: that flow's mapping goes
/// now, so its SNAT port is free at once (its table entry goes next).
#[inline(always)]
pub fn release_stale(key: &FlowKey) {
    // SAFETY: copied out at once.
    if let Some(e) = (unsafe { CONNS.get(key) }).copied() {
        release(key, &e);
    }
}

/// Removes the return mapping of `key`'s entry `e` (a connection that
/// ended, or moved to another backend before it was established: a late
/// answer of the old backend then finds no mapping and is not passed on).
/// A call of its own, off the NAT program's full stack.
#[inline(never)]
pub fn release(key: &FlowKey, e: &ConnEntry) {
    if e.nat_port == 0 {
        return;
    }
    let (Some(b), Some(snat)) = (backend(e.backend), snat_addr(e.nat_addr)) else { return };
    let rkey = NatKey {
        backend: b.addr,
        snat,
        backend_port: backend_port(key, b),
        snat_port: e.nat_port,
        proto: key.proto,
        _pad: [0; 3],
    };
    let _ = NAT_REV.remove(&rkey);
}

/// Whether a packet that is not for a VIP goes to a SNAT port (and so may
/// be a backend's answer to a NAT flow).
#[inline(always)]
pub fn is_return_port(pkt: &VipPacket) -> bool {
    NAT_CONFIG
        .get(0)
        .is_some_and(|c| c.port_min != 0 && pkt.key.dport >= c.port_min && pkt.key.dport <= c.port_max)
}

/// What became of a packet to a SNAT port.
pub enum Returned {
    /// Sent on, or passed to the kernel: this XDP action.
    Done(u32),
    /// It was a backend's refusal of a SYN; the frame is that SYN again,
    /// for the NAT program to schedule elsewhere (see `syn_stash`).
    Resend,
}

/// A packet to a SNAT port: if it answers a NAT flow, rewritten back (from
/// the VIP, to the client) and sent; otherwise passed to the kernel untouched.
#[inline(always)]
pub fn reverse(ctx: &XdpContext, pkt: &VipPacket) -> Result<Returned, Drop> {
    let k = &pkt.key;
    let Some(m) = NAT_REV.get_ptr(&return_key(k)) else {
        stats::count(GlobalCounter::NatReturnMiss);
        return Ok(Returned::Done(pass()));
    };
    if pkt.tcp_flags() & (TCP_FIN | TCP_RST) != 0 {
        // SAFETY: a live map value, read in place.
        if pkt.tcp_flags() & TCP_RST != 0 && syn_stash::resend(ctx, pkt, unsafe { &*m })? {
            return Ok(Returned::Resend);
        }
        // SAFETY: a live map value, used as the lookup's key in place.
        conntrack::mark_closing(unsafe { &(*m).flow });
    }
    // SAFETY: copied out at once.
    let f = unsafe { (*m).flow };
    let v4 = is_ipv4_mapped(&f.dst);
    rewrite(ctx, pkt, v4, &f.dst, &f.src, f.dport, f.sport)?;
    stats::count(GlobalCounter::NatReturned);
    Ok(Returned::Done(fib::send(ctx, v4, &f.dst, &f.src)?))
}

/// The `NAT_REV` key of a packet from a backend to a SNAT address (`key` as
/// parsed: backend -> SNAT port), or of the flow an ICMP error quotes.
#[inline(always)]
pub fn return_key(k: &FlowKey) -> NatKey {
    NatKey { backend: k.src, snat: k.dst, backend_port: k.sport, snat_port: k.dport, proto: k.proto, _pad: [0; 3] }
}

/// Sets the packet's addresses and ports to `src`:`sport` -> `dst`:`dport`,
/// updating its checksums.
#[inline(always)]
fn rewrite(
    ctx: &XdpContext,
    pkt: &VipPacket,
    v4: bool,
    src: &[u8; 16],
    dst: &[u8; 16],
    sport: u16,
    dport: u16,
) -> Result<(), Drop> {
    // Bounded here, where the verifier can see it (the offset came from the
    // parse step through memory): an Ethernet, a full IPv4 header with options.
    let l4 = pkt.l4 as usize;
    if l4 > EthHdr::LEN + 60 {
        return Err(Drop::Malformed);
    }
    let k = &pkt.key;
    let ports_old = [k.sport.to_be_bytes(), k.dport.to_be_bytes()];
    let ports_new = [sport.to_be_bytes(), dport.to_be_bytes()];
    let old_ports: [u8; 4] = [ports_old[0][0], ports_old[0][1], ports_old[1][0], ports_old[1][1]];
    let new_ports: [u8; 4] = [ports_new[0][0], ports_new[0][1], ports_new[1][0], ports_new[1][1]];
    let mut l4sum = L4Sum::read(ctx, k.proto, l4)?;
    if v4 {
        let ip = unsafe { &mut *mut_ptr_at::<Ipv4Hdr>(ctx, EthHdr::LEN)? };
        let (os, od) = (ip.src, ip.dst);
        let (ns, nd) = ([src[12], src[13], src[14], src[15]], [dst[12], dst[13], dst[14], dst[15]]);
        let mut c = u16::from_be_bytes(ip.check);
        c = csum::update(c, &os, &ns);
        c = csum::update(c, &od, &nd);
        ip.check = c.to_be_bytes();
        ip.src = ns;
        ip.dst = nd;
        l4sum.update(&os, &ns);
        l4sum.update(&od, &nd);
    } else {
        let ip = unsafe { &mut *mut_ptr_at::<Ipv6Hdr>(ctx, EthHdr::LEN)? };
        l4sum.update(&ip.src, src);
        l4sum.update(&ip.dst, dst);
        ip.src = *src;
        ip.dst = *dst;
    }
    l4sum.update(&old_ports, &new_ports);
    // Both headers start with the source and destination ports.
    let ports = unsafe { &mut *mut_ptr_at::<[u8; 4]>(ctx, l4)? };
    *ports = new_ports;
    l4sum.write(ctx, l4)
}

/// The TCP or UDP checksum being updated.
struct L4Sum {
    check: u16,
    /// A UDP-over-IPv4 datagram without a checksum keeps none.
    none: bool,
    udp: bool,
}

impl L4Sum {
    #[inline(always)]
    fn read(ctx: &XdpContext, proto: u8, l4: usize) -> Result<Self, Drop> {
        match proto {
            IPPROTO_TCP => {
                let tcp = unsafe { &*mut_ptr_at::<TcpHdr>(ctx, l4)? };
                Ok(Self { check: u16::from_be_bytes(tcp.check), none: false, udp: false })
            }
            IPPROTO_UDP => {
                let udp = unsafe { &*mut_ptr_at::<UdpHdr>(ctx, l4)? };
                let check = u16::from_be_bytes(udp.check);
                Ok(Self { check, none: check == 0, udp: true })
            }
            _ => Err(Drop::Malformed),
        }
    }

    #[inline(always)]
    fn update<const N: usize>(&mut self, old: &[u8; N], new: &[u8; N]) {
        if !self.none {
            self.check = csum::update(self.check, old, new);
        }
    }

    #[inline(always)]
    fn write(&self, ctx: &XdpContext, l4: usize) -> Result<(), Drop> {
        if self.udp {
            if !self.none {
                // In UDP a computed zero is sent as all ones (zero means none).
                let c = if self.check == 0 { 0xffff } else { self.check };
                unsafe { (*mut_ptr_at::<UdpHdr>(ctx, l4)?).check = c.to_be_bytes() };
            }
        } else {
            unsafe { (*mut_ptr_at::<TcpHdr>(ctx, l4)?).check = self.check.to_be_bytes() };
        }
        Ok(())
    }
}
