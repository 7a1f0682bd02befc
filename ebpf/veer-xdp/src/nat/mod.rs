//! Full NAT: backends that need no setup.
//!
//! A client's flow to a VIP leaves veer from a SNAT address and port toward
//! the backend's own address; the backend answers that address, so its
//! answers come back through veer. `NAT_REV` finds the flow by the answer's
//! tuple, and the answer leaves toward the client from the VIP. Addresses and
//! ports change in place; the IPv4 header checksum and the TCP or UDP
//! checksum (its pseudo-header covers the addresses) are updated
//! incrementally. The next hop comes from the kernel's routing table.
//!
//! The SNAT endpoints and return mappings are `snat`'s; ICMP errors about
//! NAT flows are translated in [`icmp`]; a backend's refusal of a SYN is
//! undone by [`syn_stash`].

pub mod icmp;
pub mod syn_stash;

use aya_ebpf::programs::XdpContext;
use veer_abi::{
    csum, is_ipv4_mapped, Backend, FlowKey, GlobalCounter, IPPROTO_TCP, IPPROTO_UDP, JUMP_NAT, JUMP_NAT_RETURN,
};

use crate::{
    access::mut_ptr_at,
    conntrack::{self, CONNS},
    fib,
    headers::{
        eth::EthHdr,
        ipv4::Ipv4Hdr,
        ipv6::Ipv6Hdr,
        l4::{TcpHdr, UdpHdr, TCP_FIN, TCP_RST},
    },
    jumps::{icmp_slot, jump},
    parse,
    parse::VipPacket,
    snat::{self, backend_port, return_key, snat_addr, Slot, NAT_REV},
    stats,
    verdict::{pass, Drop},
};

/// A packet to no VIP: maybe a backend's answer to a NAT flow (or an ICMP
/// error about one), on to the program that sends it back; else the kernel's.
#[inline(always)]
pub fn not_for_a_vip(ctx: &XdpContext, pkt: &VipPacket) -> Result<u32, Drop> {
    if snat::is_return_port(&pkt.key) {
        return jump(ctx, if pkt.is_icmp_error() { icmp_slot(&pkt.key, false) } else { JUMP_NAT_RETURN });
    }
    Ok(pass())
}

/// A NAT service's packet, seen by the entry program: on to the NAT
/// program, or for an ICMP error to the one that translates it.
#[inline(always)]
pub fn hand_over(ctx: &XdpContext, pkt: &VipPacket) -> Result<u32, Drop> {
    jump(ctx, if pkt.is_icmp_error() { icmp_slot(&pkt.key, true) } else { JUMP_NAT })
}

/// `veer_nat_return`: a backend's answer to a NAT flow, back to its client;
/// a refused SYN, resent, goes to the NAT program again.
#[inline(always)]
pub fn answer(ctx: &XdpContext) -> Result<u32, Drop> {
    match parse::flow_of(ctx)? {
        Some(pkt) if !pkt.is_icmp_error() => match reverse(ctx, &pkt)? {
            Returned::Done(action) => Ok(action),
            Returned::Resend => jump(ctx, JUMP_NAT),
        },
        _ => Ok(pass()),
    }
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
        snat::release(key, &e);
    }
}

/// What became of a packet to a SNAT port.
enum Returned {
    /// Sent on, or passed to the kernel: this XDP action.
    Done(u32),
    /// It was a backend's refusal of a SYN; the frame is that SYN again,
    /// for the NAT program to schedule elsewhere (see `syn_stash`).
    Resend,
}

/// A packet to a SNAT port: if it answers a NAT flow, rewritten back (from
/// the VIP, to the client) and sent; otherwise passed to the kernel untouched.
#[inline(always)]
fn reverse(ctx: &XdpContext, pkt: &VipPacket) -> Result<Returned, Drop> {
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
