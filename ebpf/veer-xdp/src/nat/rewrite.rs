//! The NAT rewrite: addresses and ports changed in place, checksums
//! updated incrementally.

use aya_ebpf::programs::XdpContext;
use veer_abi::{csum, IPPROTO_TCP, IPPROTO_UDP};

use crate::{
    access::mut_ptr_at,
    headers::{
        eth::EthHdr,
        field::{be16, last_word, set_be16, set_word, set_words16, word, words16},
        ipv4::Ipv4Hdr,
        ipv6::Ipv6Hdr,
        l4::{TcpHdr, UdpHdr},
    },
    parse::VipPacket,
    verdict::Drop,
};

/// Sets the packet's addresses and ports to `src`:`sport` -> `dst`:`dport`,
/// updating its checksums, and takes one off its TTL or hop limit, as a
/// router does (a packet whose TTL runs out is dropped, counted, with no
/// ICMP time-exceeded sent back).
#[inline(always)]
pub fn rewrite(
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
    // Words as big-endian values (one load and one swap each: see
    // `csum::update32`); the ports as the L4 header's first word.
    let be = |a: &[u8; 4]| u32::from_be(word(a));
    let old_ports = (k.sport as u32) << 16 | k.dport as u32;
    let new_ports = (sport as u32) << 16 | dport as u32;
    let mut l4sum = L4Sum::read(ctx, k.proto, l4)?;
    if v4 {
        let ip = unsafe { &mut *mut_ptr_at::<Ipv4Hdr>(ctx, EthHdr::LEN)? };
        if ip.ttl <= 1 {
            return Err(Drop::TtlExpired);
        }
        let old = [be(&ip.src), be(&ip.dst)];
        let new = [u32::from_be(last_word(src)), u32::from_be(last_word(dst))];
        let mut c = be16(&ip.check);
        // TTL and protocol make one 16-bit word of the header.
        let ttl_proto = [ip.ttl, ip.proto];
        ip.ttl -= 1;
        c = csum::update(c, &ttl_proto, &[ip.ttl, ip.proto]);
        c = csum::update32(c, &old, &new);
        set_be16(&mut ip.check, c);
        set_word(&mut ip.src, new[0].to_be());
        set_word(&mut ip.dst, new[1].to_be());
        l4sum.update(&[old[0], old[1], old_ports], &[new[0], new[1], new_ports]);
    } else {
        let ip = unsafe { &mut *mut_ptr_at::<Ipv6Hdr>(ctx, EthHdr::LEN)? };
        if ip.hop_limit <= 1 {
            return Err(Drop::TtlExpired);
        }
        ip.hop_limit -= 1;
        let (os, od, ns, nd) = (words16(&ip.src), words16(&ip.dst), words16(src), words16(dst));
        let b = u32::from_be;
        l4sum.update(
            &[b(os[0]), b(os[1]), b(os[2]), b(os[3]), b(od[0]), b(od[1]), b(od[2]), b(od[3]), old_ports],
            &[b(ns[0]), b(ns[1]), b(ns[2]), b(ns[3]), b(nd[0]), b(nd[1]), b(nd[2]), b(nd[3]), new_ports],
        );
        set_words16(&mut ip.src, ns);
        set_words16(&mut ip.dst, nd);
    }
    // Both headers start with the source and destination ports.
    let ports = unsafe { &mut *mut_ptr_at::<[u8; 4]>(ctx, l4)? };
    set_word(ports, new_ports.to_be());
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
    fn update<const N: usize>(&mut self, old: &[u32; N], new: &[u32; N]) {
        if !self.none {
            self.check = csum::update32(self.check, old, new);
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
