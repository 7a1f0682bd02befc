//! A packet a tunnelled backend's agent sent back through its tunnel (a SYN
//! no socket there takes, a segment no connection owns): the outer headers
//! come off, and the Ethernet source becomes the backend's tunnel MAC
//! (`veer_abi::tunnel_mac` of the outer source, the `mac` of its entry).
//! The entry program's code then knows the bounce as it knows one from a
//! backend on its own segment: by the source MAC of the backend the flow
//! was sent to. Only packets to one of the balancer's tunnel sources are
//! taken out.

use aya_ebpf::{
    helpers::bpf_xdp_adjust_head,
    macros::map,
    maps::{Array, HashMap},
    programs::XdpContext,
};
use veer_abi::{
    tunnel_mac, GlobalCounter, TunnelConfig, IPPROTO_IPIP, IPPROTO_IPV6, IPPROTO_TCP, IPPROTO_UDP, JUMP_TUNNEL_RETURN,
    MAX_TUNNEL_SOURCES, SERVICE_F_NAT,
};

use crate::{
    access::{mut_ptr_at, ptr_at},
    headers::{
        eth::{EthHdr, ETH_P_IP, ETH_P_IPV6},
        ipv4::Ipv4Hdr,
        ipv6::Ipv6Hdr,
        l4::UdpHdr,
    },
    jumps::jump,
    parse::VipPacket,
    services, stats,
    verdict::{pass, Drop},
};

/// The balancer's tunnel sources (16-byte form; IPv4-mapped), written by veerd.
#[map]
static TUNNEL_SOURCES: HashMap<[u8; 16], u32> = HashMap::with_max_entries(MAX_TUNNEL_SOURCES, 0);

/// The GUE port bounces arrive on.
#[map]
static TUNNEL_CONFIG: Array<TunnelConfig> = Array::with_max_entries(1, 0);

/// A frame the parse took for no flow: an IP-in-IP packet goes on to
/// `veer_tunnel_return`; anything else to the kernel.
#[inline(always)]
pub fn ipip(ctx: &XdpContext) -> Result<u32, Drop> {
    let Ok(eth) = ptr_at::<EthHdr>(ctx, 0) else { return Ok(pass()) };
    let proto_at = match unsafe { (*eth).ether_type() } {
        ETH_P_IP => EthHdr::LEN + 9,
        ETH_P_IPV6 => EthHdr::LEN + 6,
        _ => return Ok(pass()),
    };
    match ptr_at::<u8>(ctx, proto_at).map(|p| unsafe { *p }) {
        Ok(IPPROTO_IPIP | IPPROTO_IPV6) => jump(ctx, JUMP_TUNNEL_RETURN),
        _ => Ok(pass()),
    }
}

/// Whether a packet taken out of a tunnel is what an agent bounces: TCP
/// (not an ICMP error) to a service that is not NAT's.
#[inline(always)]
pub fn is_bounce(pkt: &VipPacket) -> bool {
    let k = &pkt.key;
    k.proto == IPPROTO_TCP && !pkt.is_icmp_error() && services::lookup(k).is_some_and(|s| s.flags & SERVICE_F_NAT == 0)
}

/// Whether a UDP datagram (for no VIP) to `dport` may be GUE sent back.
#[inline(always)]
pub fn is_gue_port(dport: u16) -> bool {
    TUNNEL_CONFIG.get(0).is_some_and(|c| c.gue_port != 0 && c.gue_port == dport)
}

/// 16 bytes built a word at a time (a byte-array literal's zero run would
/// be a `memset` call in BPF code).
#[repr(C, align(4))]
struct Addr([u32; 4]);

impl Addr {
    #[inline(always)]
    fn v4(a: [u8; 4]) -> Self {
        Self([0, 0, u32::from_ne_bytes([0, 0, 0xff, 0xff]), u32::from_ne_bytes(a)])
    }

    #[inline(always)]
    fn bytes(&self) -> &[u8; 16] {
        // SAFETY: 16 bytes, any alignment suffices for u8.
        unsafe { &*(self.0.as_ptr() as *const [u8; 16]) }
    }
}

/// Takes the outer headers off a packet sent back to one of the balancer's
/// tunnel sources: `true` if it was one (the frame is now the inner packet,
/// from the backend's tunnel MAC), `false` if it is not, or is not whole
/// (left as it is, for the kernel).
#[inline(always)]
pub fn take_out(ctx: &XdpContext) -> bool {
    taken_out(ctx).unwrap_or(false)
}

#[inline(always)]
fn taken_out(ctx: &XdpContext) -> Result<bool, Drop> {
    let eth = unsafe { &*ptr_at::<EthHdr>(ctx, 0)? };
    let to = eth.dst;
    let (proto, ip_len, src, dst) = match eth.ether_type() {
        ETH_P_IP => {
            let ip = unsafe { &*ptr_at::<Ipv4Hdr>(ctx, EthHdr::LEN)? };
            if ip.header_len() != Ipv4Hdr::LEN || ip.is_fragment() {
                return Ok(false);
            }
            (ip.proto, Ipv4Hdr::LEN, Addr::v4(ip.src), Addr::v4(ip.dst))
        }
        ETH_P_IPV6 => {
            let ip = unsafe { &*ptr_at::<Ipv6Hdr>(ctx, EthHdr::LEN)? };
            let w = |a: &[u8; 16]| {
                let word = |i: usize| u32::from_ne_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]]);
                Addr([word(0), word(4), word(8), word(12)])
            };
            (ip.next_header, Ipv6Hdr::LEN, w(&ip.src), w(&ip.dst))
        }
        _ => return Ok(false),
    };
    if TUNNEL_SOURCES.get_ptr(dst.bytes()).is_none() {
        return Ok(false);
    }
    let overhead = match proto {
        IPPROTO_IPIP | IPPROTO_IPV6 => ip_len,
        IPPROTO_UDP => {
            let udp = unsafe { &*ptr_at::<UdpHdr>(ctx, EthHdr::LEN + ip_len)? };
            if !is_gue_port(u16::from_be_bytes(udp.dport)) {
                return Ok(false);
            }
            ip_len + UdpHdr::LEN
        }
        _ => return Ok(false),
    };
    // The inner packet's family: IPIP says it in the protocol, GUE in the
    // version nibble.
    let version = unsafe { *ptr_at::<u8>(ctx, EthHdr::LEN + overhead)? } >> 4;
    let inner = match (proto, version) {
        (IPPROTO_IPIP, _) | (IPPROTO_UDP, 4) => ETH_P_IP,
        (IPPROTO_IPV6, _) | (IPPROTO_UDP, 6) => ETH_P_IPV6,
        _ => return Ok(false),
    };
    let key = TUNNEL_CONFIG.get(0).map_or(0, |c| c.mac_key);
    let from = tunnel_mac(src.bytes(), key);
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, overhead as i32) } != 0 {
        return Ok(false);
    }
    let eth = unsafe { &mut *mut_ptr_at::<EthHdr>(ctx, 0)? };
    eth.dst = to;
    eth.src = from;
    eth.ether_type = inner.to_be_bytes();
    stats::count(GlobalCounter::Decapsulated);
    Ok(true)
}
