//! ICMP errors about NAT flows, translated so that path MTU discovery (and
//! unreachables) work through NAT in both directions.
//!
//! - An error about a packet toward a backend reaches veer's SNAT address,
//!   quoting `SNAT:port -> backend`. It goes on to the client, quoting what
//!   the client sent (`client -> VIP`).
//! - An error about an answer toward a client reaches the VIP, quoting
//!   `VIP -> client`. It goes on to the backend, quoting what the backend
//!   sent (`backend -> SNAT:port`).
//!
//! The quoted addresses and ports change (and, for a connection veer's SYN
//! proxy opened, the quoted sequence number toward the backend), with the quoted IPv4 header
//! checksum, the quoted TCP or UDP checksum when the quote holds it, the
//! ICMP checksum (which covers all of that, and for ICMPv6 the outer
//! addresses too), and the outer destination and IPv4 checksum. Each
//! direction and family runs in a program of its own, with a lean parser and
//! its working state in a per-CPU map: the BPF stack is 512 bytes.

use aya_ebpf::{macros::map, maps::PerCpuArray, programs::XdpContext};
use veer_abi::{
    csum, ipv4_mapped, GlobalCounter, NatKey, NatMapping, PassiveKind, ServiceKey, CONN_F_PROXIED, IPPROTO_ICMP,
    IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, NAT_F_SPLICED, SERVICE_F_PASSIVE,
};

use crate::{
    access::{mut_ptr_at, opaque, ptr_at},
    conntrack::{self, ConnKey, Room, CONNS, NEW_CONNS},
    fib,
    headers::{
        eth::{EthHdr, ETH_P_IP, ETH_P_IPV6},
        field::{set_words16, words16},
        icmp::IcmpHdr,
        ipv4::Ipv4Hdr,
        ipv6::Ipv6Hdr,
    },
    parse::{self, VipPacket},
    passive,
    services::SERVICES,
    snat::{address, backend_port, return_key, NAT_REV},
    stats,
    verdict::{pass, Drop},
};

/// Per-CPU room for an ICMP translation's target, off the stack.
#[map]
static ICMP_SCRATCH: PerCpuArray<Target> = PerCpuArray::with_max_entries(1, 0);

/// Where the translated error goes, and what its quote becomes.
#[repr(C)]
struct Target {
    /// The error's new destination.
    to: [u8; 16],
    /// The quote's new source and destination addresses.
    src: [u8; 16],
    dst: [u8; 16],
    /// The quoted IPv6 addresses before the rewrite.
    old_src: [u8; 16],
    old_dst: [u8; 16],
    /// The quoted ports before and after.
    old_ports: [u8; 4],
    new_ports: [u8; 4],
    /// The flow the error is about (a map key must not live on the stack here).
    key: veer_abi::FlowKey,
    /// A mapping's return key, likewise.
    rkey: veer_abi::NatKey,
    /// The quote's new source and destination ports.
    sport: u16,
    dport: u16,
    /// Added to the quoted TCP sequence number: a connection veer's SYN
    /// proxy opened quotes the client's sequence space, which its backend's
    /// TCP checks the error against in its own (see `syn_cookie`).
    seq_add: u32,
    /// The quoted sequence number before and after.
    old_seq: [u8; 4],
    new_seq: [u8; 4],
}

/// The programs `veer_nat_icmp_*`: an ICMP error of family `V4` about a NAT
/// flow, on to its backend (`TO_BACKEND`) or its client.
#[inline(always)]
pub fn translate_error<const TO_BACKEND: bool, const V4: bool>(ctx: &XdpContext) -> Result<u32, Drop> {
    let Some(pkt) = parse::<V4>(ctx)? else {
        return Ok(pass());
    };
    if TO_BACKEND {
        to_backend::<V4>(ctx, &pkt)
    } else {
        to_client::<V4>(ctx, &pkt)
    }
}

/// Only ICMP errors of one family, and only as far as their quote.
#[inline(always)]
fn parse<const V4: bool>(ctx: &XdpContext) -> Result<Option<VipPacket>, Drop> {
    let eth = unsafe { &*ptr_at::<EthHdr>(ctx, 0)? };
    if V4 {
        if eth.ether_type() != ETH_P_IP {
            return Ok(None);
        }
        let ip = unsafe { &*ptr_at::<Ipv4Hdr>(ctx, EthHdr::LEN)? };
        if ip.version() != 4 || ip.header_len() < 20 || ip.proto != IPPROTO_ICMP || ip.is_fragment() {
            return Ok(None);
        }
        parse::quoted_v4(ctx, EthHdr::LEN + ip.header_len(), EthHdr::LEN + ip.total_len(), &ip.dst)
    } else {
        if eth.ether_type() != ETH_P_IPV6 {
            return Ok(None);
        }
        let ip = unsafe { &*ptr_at::<Ipv6Hdr>(ctx, EthHdr::LEN)? };
        if ip.next_header != IPPROTO_ICMPV6 {
            return Ok(None);
        }
        parse::quoted_v6(ctx, EthHdr::LEN + Ipv6Hdr::LEN, EthHdr::LEN + Ipv6Hdr::LEN + ip.payload_len(), &ip.dst)
    }
}

/// Whether the ICMP message at `o` is a port unreachable sent by `host`
/// itself (the backend: no router sends these).
#[inline(always)]
fn port_unreachable_from<const V4: bool>(ctx: &XdpContext, o: usize, host: &[u8; 16]) -> Result<bool, Drop> {
    let h = unsafe { *ptr_at::<[u8; 2]>(ctx, o)? };
    // The source address is bounds-checked on its own, at an offset LLVM
    // cannot see through: it would drop the check as implied by the ICMP
    // header's, which the verifier does not carry over to this pointer.
    if V4 {
        if h != [3, 3] {
            return Ok(false);
        }
        let from = unsafe { *ptr_at::<[u8; 4]>(ctx, opaque(EthHdr::LEN as u32 + 12) as usize)? };
        Ok(from == [host[12], host[13], host[14], host[15]])
    } else {
        if h != [1, 4] {
            return Ok(false);
        }
        let from = unsafe { &*ptr_at::<[u8; 16]>(ctx, opaque(EthHdr::LEN as u32 + 8) as usize)? };
        Ok(from == host)
    }
}

/// A NAT backend answered a UDP flow's datagram with ICMP port unreachable
/// (`m`, found by `rkey`): with passive detection on, the backend becomes
/// suspect and the flow forgets it (table entries and mapping), so that the
/// client's next datagram goes to another backend. Returns whether the ICMP
/// message is to be withheld. A call of its own, off the ICMP program's
/// stack.
#[inline(never)]
fn udp_unreachable(m: &NatMapping, rkey: &NatKey) -> bool {
    let skey = ServiceKey { addr: m.flow.dst, port: m.flow.dport, proto: m.flow.proto, _pad: 0 };
    // SAFETY: copied out at once.
    let Some(flags) = (unsafe { SERVICES.get(&skey) }).map(|s| s.flags) else { return false };
    if flags & SERVICE_F_PASSIVE == 0 {
        return false;
    }
    passive::suspect(m.backend, PassiveKind::Unreachable);
    passive::moved_off(m.backend);
    let k = &ConnKey::of(&m.flow, Room::Mapping);
    let _ = NEW_CONNS.remove(k);
    let _ = CONNS.remove(k);
    // Last: `m` lives in this map.
    let _ = NAT_REV.remove(rkey);
    true
}

#[inline(always)]
fn scratch() -> Result<&'static mut Target, Drop> {
    // SAFETY: this CPU's slot; nothing else runs on it meanwhile.
    Ok(unsafe { &mut *ICMP_SCRATCH.get_ptr_mut(0).ok_or(Drop::IcmpNoFlow)? })
}

/// An error that reached a SNAT address: on to the client.
#[inline(always)]
fn to_client<const V4: bool>(ctx: &XdpContext, pkt: &VipPacket) -> Result<u32, Drop> {
    let k = &pkt.key;
    // The quote, turned around, is the mapping's return tuple.
    let Some(m) = NAT_REV.get_ptr(&return_key(k)) else { return Ok(pass()) };
    if k.proto == IPPROTO_UDP && port_unreachable_from::<V4>(ctx, pkt.l4 as usize, &k.src)? {
        let t = scratch()?;
        t.rkey = return_key(k);
        // SAFETY: a live map value.
        if udp_unreachable(unsafe { &*m }, &t.rkey) {
            return Ok(aya_ebpf::bindings::xdp_action::XDP_DROP);
        }
    }
    let t = scratch()?;
    // SAFETY: a live map value, read field by field.
    unsafe {
        set_words16(&mut t.to, words16(&(*m).flow.src));
        set_words16(&mut t.src, words16(&(*m).flow.src));
        t.sport = (*m).flow.sport;
        set_words16(&mut t.dst, words16(&(*m).flow.dst));
        t.dport = (*m).flow.dport;
    }
    t.seq_add = 0;
    stats::count(GlobalCounter::NatIcmpToClient);
    translate::<V4>(ctx, pkt.l4 as usize, t)
}

/// An error that reached the VIP of a NAT service: on to the flow's backend.
#[inline(always)]
fn to_backend<const V4: bool>(ctx: &XdpContext, pkt: &VipPacket) -> Result<u32, Drop> {
    let k = &pkt.key;
    let skey = ServiceKey { addr: k.dst, port: k.dport, proto: k.proto, _pad: 0 };
    let Some(svc) = SERVICES.get_ptr(&skey) else { return Ok(pass()) };
    let t = scratch()?;
    t.key = *k;
    // The flow's place as its own packets would find it (service, owner, state).
    // SAFETY: a live map value; userspace replaces services whole.
    let Some(f) = conntrack::peek(unsafe { &*svc }, &t.key) else { return Ok(pass()) };
    // A NAT port marks a NAT flow.
    if f.nat.port == 0 {
        return Ok(pass());
    }
    set_words16(&mut t.to, words16(&f.backend.addr));
    set_words16(&mut t.src, words16(&f.backend.addr));
    t.sport = backend_port(k, f.backend);
    set_words16(&mut t.dst, words16(address(f.nat.addr).ok_or(Drop::IcmpNoFlow)?));
    t.dport = f.nat.port;
    t.seq_add = 0;
    if f.flags & CONN_F_PROXIED != 0 {
        t.rkey = NatKey::new(words16(&t.src), words16(&t.dst), t.sport, t.dport, IPPROTO_TCP);
        // SAFETY: copied out at once.
        let m = unsafe { NAT_REV.get(&t.rkey) }.ok_or(Drop::IcmpNoFlow)?;
        // Not spliced yet: the backend has sent nothing the error could quote.
        if m.flags & NAT_F_SPLICED == 0 {
            return Err(Drop::IcmpNoFlow);
        }
        t.seq_add = m.seq_delta;
    }
    stats::count(GlobalCounter::IcmpToBackend);
    translate::<V4>(ctx, pkt.l4 as usize, t)
}

#[inline(always)]
fn translate<const V4: bool>(ctx: &XdpContext, o: usize, t: &mut Target) -> Result<u32, Drop> {
    if o > EthHdr::LEN + 60 {
        return Err(Drop::Malformed);
    }
    let at = o + IcmpHdr::LEN;
    let mut ic = u16::from_be_bytes(unsafe { (*mut_ptr_at::<IcmpHdr>(ctx, o)?).check });
    let from = if V4 {
        ic = translate_v4(ctx, at, t, ic)?;
        outer_v4(ctx, t)?
    } else {
        ic = translate_v6(ctx, at, t, ic)?;
        outer_v6(ctx, t)?
    };
    unsafe { (*mut_ptr_at::<IcmpHdr>(ctx, o)?).check = ic.to_be_bytes() };
    fib::send(ctx, V4, &from, &t.to)
}

/// The outer IPv4 header: a new destination (ICMPv4's checksum leaves it out).
/// Returns the outer source (who reported the error).
#[inline(always)]
fn outer_v4(ctx: &XdpContext, t: &Target) -> Result<[u8; 16], Drop> {
    let outer = unsafe { &mut *mut_ptr_at::<Ipv4Hdr>(ctx, EthHdr::LEN)? };
    let to = [t.to[12], t.to[13], t.to[14], t.to[15]];
    outer.check = csum::update(u16::from_be_bytes(outer.check), &outer.dst, &to).to_be_bytes();
    outer.dst = to;
    Ok(ipv4_mapped(outer.src))
}

#[inline(always)]
fn outer_v6(ctx: &XdpContext, t: &Target) -> Result<[u8; 16], Drop> {
    let outer = unsafe { &mut *mut_ptr_at::<Ipv6Hdr>(ctx, EthHdr::LEN)? };
    outer.dst = t.to;
    Ok(outer.src)
}

/// The quoted IPv4 packet; returns the ICMP checksum updated for it.
#[inline(always)]
fn translate_v4(ctx: &XdpContext, at: usize, t: &mut Target, mut ic: u16) -> Result<u16, Drop> {
    let inner = unsafe { &mut *mut_ptr_at::<Ipv4Hdr>(ctx, at)? };
    let ns = [t.src[12], t.src[13], t.src[14], t.src[15]];
    let nd = [t.dst[12], t.dst[13], t.dst[14], t.dst[15]];
    let (os, od) = (inner.src, inner.dst);
    let old_check = inner.check;
    let c = csum::update(csum::update(u16::from_be_bytes(old_check), &os, &ns), &od, &nd).to_be_bytes();
    ic = csum::update(csum::update(ic, &os, &ns), &od, &nd);
    ic = csum::update(ic, &old_check, &c);
    inner.src = ns;
    inner.dst = nd;
    inner.check = c;
    let hl = inner.header_len();
    if !(20..=60).contains(&hl) {
        return Err(Drop::Malformed);
    }
    let proto = inner.proto;
    let ic = quoted_ports(ctx, at + hl, t, ic)?;
    let Some(mut c) = quoted_check(ctx, at + hl, proto)? else { return Ok(ic) };
    let c_old = c;
    c = csum::update(csum::update(c, &os, &ns), &od, &nd);
    c = csum::update(csum::update(c, &t.old_ports, &t.new_ports), &t.old_seq, &t.new_seq);
    finish_check(ctx, at + hl, proto, ic, c_old, c)
}

/// The quoted IPv6 packet (its addresses are in the ICMPv6 checksum, as is
/// the outer destination, rewritten next).
#[inline(always)]
fn translate_v6(ctx: &XdpContext, at: usize, t: &mut Target, mut ic: u16) -> Result<u16, Drop> {
    let outer = unsafe { &*ptr_at::<Ipv6Hdr>(ctx, EthHdr::LEN)? };
    ic = update16(ic, &outer.dst, &t.to);
    let inner = unsafe { &mut *mut_ptr_at::<Ipv6Hdr>(ctx, at)? };
    ic = update16(update16(ic, &inner.src, &t.src), &inner.dst, &t.dst);
    set_words16(&mut t.old_src, words16(&inner.src));
    set_words16(&mut t.old_dst, words16(&inner.dst));
    set_words16(&mut inner.src, words16(&t.src));
    set_words16(&mut inner.dst, words16(&t.dst));
    let proto = inner.next_header;
    let ic = quoted_ports(ctx, at + Ipv6Hdr::LEN, t, ic)?;
    let Some(mut c) = quoted_check(ctx, at + Ipv6Hdr::LEN, proto)? else { return Ok(ic) };
    let c_old = c;
    c = update16(update16(c, &t.old_src, &t.src), &t.old_dst, &t.dst);
    c = csum::update(csum::update(c, &t.old_ports, &t.new_ports), &t.old_seq, &t.new_seq);
    finish_check(ctx, at + Ipv6Hdr::LEN, proto, ic, c_old, c)
}

/// `csum::update` over 16-byte addresses, as a BPF-to-BPF call: unrolled
/// inline, its temporaries overflow these programs' stack.
#[inline(never)]
fn update16(c: u16, old: &[u8; 16], new: &[u8; 16]) -> u16 {
    csum::update(c, old, new)
}

/// Rewrites the quoted ports, and the sequence number if it shifts
/// (keeping old and new in the scratch target for the quoted checksum);
/// returns the ICMP checksum updated for them.
#[inline(always)]
fn quoted_ports(ctx: &XdpContext, l4: usize, t: &mut Target, ic: u16) -> Result<u16, Drop> {
    let ports = unsafe { &mut *mut_ptr_at::<[u8; 4]>(ctx, l4)? };
    t.old_ports = *ports;
    let (sp, dp) = (t.sport.to_be_bytes(), t.dport.to_be_bytes());
    t.new_ports = [sp[0], sp[1], dp[0], dp[1]];
    *ports = t.new_ports;
    let ic = csum::update(ic, &t.old_ports, &t.new_ports);
    t.old_seq = [0; 4];
    t.new_seq = [0; 4];
    if t.seq_add == 0 {
        return Ok(ic);
    }
    // Every quote holds the first 8 bytes of the segment: ports and sequence number.
    let seq = unsafe { &mut *mut_ptr_at::<[u8; 4]>(ctx, l4 + 4)? };
    t.old_seq = *seq;
    t.new_seq = u32::from_be_bytes(t.old_seq).wrapping_add(t.seq_add).to_be_bytes();
    *seq = t.new_seq;
    Ok(csum::update(ic, &t.old_seq, &t.new_seq))
}

/// Offset of the quoted TCP or UDP checksum.
#[inline(always)]
fn check_at(l4: usize, proto: u8) -> Option<usize> {
    match proto {
        IPPROTO_TCP => Some(l4 + 16),
        IPPROTO_UDP => Some(l4 + 6),
        _ => None,
    }
}

/// The quoted segment's checksum, if the quote holds one (and it is in use).
#[inline(always)]
fn quoted_check(ctx: &XdpContext, l4: usize, proto: u8) -> Result<Option<u16>, Drop> {
    let Some(at) = check_at(l4, proto) else { return Ok(None) };
    // The quote may stop short of the segment's checksum.
    let Ok(check) = ptr_at::<[u8; 2]>(ctx, at) else { return Ok(None) };
    let c = u16::from_be_bytes(unsafe { *check });
    if proto == IPPROTO_UDP && c == 0 {
        return Ok(None);
    }
    Ok(Some(c))
}

/// Writes the quoted segment's new checksum; returns the ICMP checksum updated for it.
#[inline(always)]
fn finish_check(ctx: &XdpContext, l4: usize, proto: u8, ic: u16, old: u16, new: u16) -> Result<u16, Drop> {
    let at = check_at(l4, proto).ok_or(Drop::Malformed)?;
    unsafe { *mut_ptr_at::<[u8; 2]>(ctx, at)? = new.to_be_bytes() };
    Ok(csum::update(ic, &old.to_be_bytes(), &new.to_be_bytes()))
}
