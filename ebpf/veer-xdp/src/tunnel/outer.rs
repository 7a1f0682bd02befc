//! The outer headers of a tunnel (IPIP, GUE), filled the same way for
//! the clients' packets (XDP) and for VIP-path probes (TC).

use veer_abi::{csum, IPPROTO_IPIP, IPPROTO_IPV6, IPPROTO_UDP};

use crate::headers::{
    field::{last_word, set_words16, words16},
    ipv4::Ipv4Hdr,
    ipv6::Ipv6Hdr,
};

/// TTL (hop limit) of an outer header.
const OUTER_TTL: u8 = 64;
/// Don't Fragment, in the IPv4 header's flags word.
const IP_DF: u8 = 0x40;

/// The outer header's protocol: UDP for GUE, else the inner packet's family.
#[inline(always)]
pub fn proto(gue: bool, inner_v4: bool) -> u8 {
    match (gue, inner_v4) {
        (true, _) => IPPROTO_UDP,
        (false, true) => IPPROTO_IPIP,
        (false, false) => IPPROTO_IPV6,
    }
}

/// Fills an outer IPv4 header, its checksum too (Don't Fragment set: a
/// router on the way answers with "fragmentation needed" rather than
/// splitting the tunnel).
#[inline(always)]
pub fn fill4(ip: &mut Ipv4Hdr, tos: u8, total: u16, proto: u8, src: &[u8; 16], dst: &[u8; 16]) {
    fill4_summed(ip, (tos, total, proto), src, dst, fixed_sum4(src, dst));
}

/// The checksum sum of an outer IPv4 header's fields that stay the same
/// from packet to packet (version and length, Don't Fragment, TTL,
/// addresses): [`fill4_summed`] adds the others.
#[inline(always)]
pub fn fixed_sum4(src: &[u8; 16], dst: &[u8; 16]) -> u32 {
    let half = |a: &[u8; 16], i: usize| u16::from_be_bytes([a[i], a[i + 1]]) as u32;
    0x4500
        + ((IP_DF as u32) << 8)
        + ((OUTER_TTL as u32) << 8)
        + half(src, 12)
        + half(src, 14)
        + half(dst, 12)
        + half(dst, 14)
}

/// [`fill4`] with the fixed fields' sum `fixed` ([`fixed_sum4`]) known;
/// `(tos, total, proto)` vary.
#[inline(always)]
pub fn fill4_summed(ip: &mut Ipv4Hdr, (tos, total, proto): (u8, u16, u8), src: &[u8; 16], dst: &[u8; 16], fixed: u32) {
    let (len, check) =
        (total.to_be_bytes(), csum::finish(fixed + tos as u32 + total as u32 + proto as u32).to_be_bytes());
    // By words (see `fill6`): in the frame at any address, on the TC
    // probe's stack 8-aligned; the addresses' last words from map values.
    let w = ip as *mut Ipv4Hdr as *mut u32;
    // SAFETY: five words in the 20-byte header.
    unsafe {
        *w = u32::from_ne_bytes([0x45, tos, len[0], len[1]]);
        *w.add(1) = u32::from_ne_bytes([0, 0, IP_DF, 0]);
        *w.add(2) = u32::from_ne_bytes([OUTER_TTL, proto, check[0], check[1]]);
        *w.add(3) = last_word(src);
        *w.add(4) = last_word(dst);
    }
}

/// Fills an outer IPv6 header; its flow label carries `label` (20 bits).
#[inline(always)]
pub fn fill6(ip: &mut Ipv6Hdr, tos: u8, payload: u16, proto: u8, label: u32, (src, dst): (&[u8; 16], &[u8; 16])) {
    let label = label & 0x000f_ffff;
    let vtc_flow = (0x6000_0000 | (tos as u32) << 20 | label).to_be_bytes();
    let len = payload.to_be_bytes();
    let w = ip as *mut Ipv6Hdr as *mut u32;
    // SAFETY: the header's first two words (see below on words).
    unsafe {
        *w = u32::from_ne_bytes(vtc_flow);
        *w.add(1) = u32::from_ne_bytes([len[0], len[1], proto, OUTER_TTL]);
    }
    // By words, as C dataplanes write `s6_addr32`: the addresses are map
    // values (4-aligned); in a frame the stores may be unaligned, which
    // x86-64 and arm64 (and their verifier without strict alignment) take
    // at any address; on the TC probe's stack the header is 8-aligned.
    // `write_unaligned` would be split into byte stores by LLVM.
    set_words16(&mut ip.src, words16(src));
    set_words16(&mut ip.dst, words16(dst));
}
