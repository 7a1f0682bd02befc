//! The NAT rewrite: addresses and ports changed in place, checksums
//! updated incrementally.

use aya_ebpf::programs::XdpContext;
use veer_abi::{csum, IPPROTO_TCP, IPPROTO_UDP};

use crate::{
    access::mut_ptr_at,
    headers::{
        eth::EthHdr,
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
    let ports_old = [k.sport.to_be_bytes(), k.dport.to_be_bytes()];
    let ports_new = [sport.to_be_bytes(), dport.to_be_bytes()];
    let old_ports: [u8; 4] = [ports_old[0][0], ports_old[0][1], ports_old[1][0], ports_old[1][1]];
    let new_ports: [u8; 4] = [ports_new[0][0], ports_new[0][1], ports_new[1][0], ports_new[1][1]];
    let mut l4sum = L4Sum::read(ctx, k.proto, l4)?;
    if v4 {
        let ip = unsafe { &mut *mut_ptr_at::<Ipv4Hdr>(ctx, EthHdr::LEN)? };
        if ip.ttl <= 1 {
            return Err(Drop::TtlExpired);
        }
        let (os, od) = (ip.src, ip.dst);
        let (ns, nd) = ([src[12], src[13], src[14], src[15]], [dst[12], dst[13], dst[14], dst[15]]);
        let mut c = u16::from_be_bytes(ip.check);
        // TTL and protocol make one 16-bit word of the header.
        let ttl_proto = [ip.ttl, ip.proto];
        ip.ttl -= 1;
        c = csum::update(c, &ttl_proto, &[ip.ttl, ip.proto]);
        c = csum::update(c, &os, &ns);
        c = csum::update(c, &od, &nd);
        ip.check = c.to_be_bytes();
        ip.src = ns;
        ip.dst = nd;
        l4sum.update(&os, &ns);
        l4sum.update(&od, &nd);
    } else {
        let ip = unsafe { &mut *mut_ptr_at::<Ipv6Hdr>(ctx, EthHdr::LEN)? };
        if ip.hop_limit <= 1 {
            return Err(Drop::TtlExpired);
        }
        ip.hop_limit -= 1;
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
