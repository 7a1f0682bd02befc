//! Internet checksums (RFC 1071), updated incrementally (RFC 1624): when
//! NAT rewrites addresses and ports, the IPv4 header checksum and the TCP or
//! UDP checksum (whose pseudo-header covers the addresses) are adjusted for
//! the changed words instead of being recomputed over the whole packet.

/// A one's-complement sum of 16-bit words folded to 16 bits.
#[inline(always)]
pub fn fold(s: u32) -> u16 {
    let s = (s & 0xffff) + (s >> 16);
    ((s & 0xffff) + (s >> 16)) as u16
}

/// The checksum `check` (as carried, host order of the big-endian field)
/// after the bytes `old` were replaced by `new` (an even number of bytes,
/// 16-bit aligned within the checksummed data).
#[inline(always)]
pub fn update<const N: usize>(check: u16, old: &[u8; N], new: &[u8; N]) -> u16 {
    let mut s = (!check) as u32;
    let mut i = 0;
    while i + 1 < N {
        s += (!u16::from_be_bytes([old[i], old[i + 1]])) as u32;
        s += u16::from_be_bytes([new[i], new[i + 1]]) as u32;
        i += 2;
    }
    !fold(s)
}

/// [`update`] for data given as 32-bit big-endian values
/// (`u32::from_be_bytes` of each four bytes, 16-bit aligned within the
/// checksummed data): what the XDP program has with one load and one byte
/// swap per word, where byte arrays cost four loads and shifts.
#[inline(always)]
pub fn update32<const N: usize>(check: u16, old: &[u32; N], new: &[u32; N]) -> u16 {
    let mut s = (!check) as u64;
    let mut i = 0;
    while i < N {
        // A 32-bit word counts as its two halves: 2^16 is 1 modulo 0xffff.
        s += (!old[i]) as u64 + new[i] as u64;
        i += 1;
    }
    let s = (s & 0xffff_ffff) + (s >> 32);
    !fold(((s & 0xffff_ffff) + (s >> 32)) as u32)
}

/// The one's-complement sum of `data` as 16-bit big-endian words (odd
/// lengths padded with a zero byte), not yet folded: add sums, then
/// [`finish`] them. For building headers in the dataplane.
#[inline(always)]
pub fn sum16<const N: usize>(data: &[u8; N]) -> u32 {
    let mut s = 0u32;
    let mut i = 0;
    while i < N {
        let lo = if i + 1 < N { data[i + 1] } else { 0 };
        s += u16::from_be_bytes([data[i], lo]) as u32;
        i += 2;
    }
    s
}

/// The checksum field for the words summed into `sum` (see [`sum16`]).
#[inline(always)]
pub fn finish(sum: u32) -> u16 {
    !fold(sum)
}

/// What a whole IPv6 packet sums to (header and payload, as [`sum16`]),
/// from its first eight bytes alone, when its next header is TCP, UDP or
/// ICMPv6 with a valid checksum: the segment then sums to the negated
/// pseudo header, whose addresses, length and next header cancel the
/// header's own (what Linux's local checksum offload does for a tunnel).
/// The bytes come as two big-endian values (`u32::from_be_bytes` of bytes
/// 0-3 and 4-7): one load each in the XDP program.
#[inline(always)]
pub fn ipv6_packet_sum(w0: u32, w1: u32) -> u32 {
    let nh = (w1 >> 8) & 0xff;
    (w0 >> 16) + (w0 & 0xffff) + (w1 & 0xffff) + (0xffff - nh)
}

/// What a whole IPv4 packet sums to (as [`ipv6_packet_sum`]) when its
/// header checksum is valid and its TCP or UDP segment of `l4_len` bytes
/// carries a valid checksum: the header sums to zero, the segment to the
/// negated pseudo header (addresses, protocol, length).
#[inline(always)]
pub fn ipv4_packet_sum(src: &[u8; 4], dst: &[u8; 4], proto: u8, l4_len: u16) -> u32 {
    (!fold(sum16(src) + sum16(dst) + proto as u32 + l4_len as u32)) as u32
}

/// The full checksum of `data` (odd lengths padded with a zero byte), for
/// tests and for building packets.
pub fn checksum(data: &[u8]) -> u16 {
    let mut s: u64 = 0;
    for c in data.chunks(2) {
        s += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u64;
    }
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_by_words_equal_updates_by_bytes() {
        // A fixed LCG: the same cases on every run, edge values included.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (x >> 32) as u32
        };
        let edges = [0u32, u32::MAX, 0xffff_0000, 0x0000_ffff, 0x8000_8000];
        for case in 0..20_000 {
            let pick = |v: u32, n: usize| if case % 7 == 0 { edges[n % edges.len()] } else { v };
            let (old, new): ([u32; 5], [u32; 5]) = (
                core::array::from_fn(|i| pick(next(), i + case)),
                core::array::from_fn(|i| pick(next(), i + case + 2)),
            );
            let check = if case % 5 == 0 { [0u16, 0xffff][case % 2] } else { next() as u16 };
            let bytes = |w: &[u32; 5]| -> [u8; 20] { core::array::from_fn(|i| w[i / 4].to_be_bytes()[i % 4]) };
            assert_eq!(update32(check, &old, &new), update(check, &bytes(&old), &bytes(&new)), "case {case}");
        }
    }

    #[test]
    fn sums_finish_to_the_full_checksum() {
        let data: [u8; 7] = [0x45, 0, 0, 40, 0xff, 1, 0x40];
        assert_eq!(finish(sum16(&data)), checksum(&data));
        let (a, b) = ([1u8, 2, 3, 4], [0xff, 0xfe, 9, 8]);
        let both: [u8; 8] = [1, 2, 3, 4, 0xff, 0xfe, 9, 8];
        assert_eq!(finish(sum16(&a) + sum16(&b)), checksum(&both), "sums add before the fold");
    }

    /// An IPv4 or IPv6 packet with a TCP segment of `payload`, checksums
    /// valid, and the packet's bytes.
    fn tcp_packet(v6: bool, payload: &[u8]) -> Vec<u8> {
        let mut seg = vec![0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x10, 0xff, 0xff, 0, 0, 0, 0];
        seg.extend_from_slice(payload);
        let len = seg.len() as u16;
        let (src, dst): (&[u8], &[u8]) = if v6 {
            (
                &[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7],
                &[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0xab, 0xcd, 0, 1],
            )
        } else {
            (&[192, 0, 2, 7], &[10, 0, 0, 100])
        };
        let mut pseudo = [src, dst].concat();
        pseudo.extend_from_slice(&[0, 6]);
        pseudo.extend_from_slice(&len.to_be_bytes());
        pseudo.extend_from_slice(&seg);
        let c = checksum(&pseudo);
        seg[16..18].copy_from_slice(&c.to_be_bytes());
        let mut hdr = if v6 {
            let mut h = vec![0x6b, 0x8f, 0xed, 0xcb];
            h.extend_from_slice(&len.to_be_bytes());
            h.extend_from_slice(&[6, 61]);
            h
        } else {
            let mut h = vec![0x45, 0xb8];
            h.extend_from_slice(&(len + 20).to_be_bytes());
            h.extend_from_slice(&[0x12, 0x34, 0x40, 0, 61, 6, 0, 0]);
            h
        };
        hdr.extend_from_slice(src);
        hdr.extend_from_slice(dst);
        if !v6 {
            let c = checksum(&hdr);
            hdr[10..12].copy_from_slice(&c.to_be_bytes());
        }
        [hdr, seg].concat()
    }

    #[test]
    fn a_packet_sums_from_its_header_alone() {
        // Lengths chosen for carries (the sums of 0x01fa-long payloads
        // once lost one elsewhere) and odd lengths.
        for n in [0usize, 1, 7, 64, 0x01fa - 40, 0x01fa - 20, 1400] {
            let payload: Vec<u8> = (0..n).map(|i| (i * 37 + 11) as u8).collect();
            let p6 = tcp_packet(true, &payload);
            let w = |i: usize| u32::from_be_bytes(p6[i..i + 4].try_into().unwrap());
            assert_eq!(fold(ipv6_packet_sum(w(0), w(4))), fold(sum16_all(&p6)), "IPv6, {n} bytes");
            let p4 = tcp_packet(false, &payload);
            let (src, dst): ([u8; 4], [u8; 4]) = (p4[12..16].try_into().unwrap(), p4[16..20].try_into().unwrap());
            let sum = ipv4_packet_sum(&src, &dst, 6, (p4.len() - 20) as u16);
            assert_eq!(finish(sum), finish(sum16_all(&p4)), "IPv4, {n} bytes");
        }
    }

    /// [`sum16`] over a slice.
    fn sum16_all(data: &[u8]) -> u32 {
        let s: u64 = data.chunks(2).map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u64).sum();
        let s = (s & 0xffff_ffff) + (s >> 32);
        ((s & 0xffff) + (s >> 16)) as u32
    }

    #[test]
    fn an_update_equals_a_recomputation() {
        let mut data: [u8; 20] = [0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 192, 0, 2, 7];
        let c = checksum(&data);
        data[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(checksum(&data), 0, "a header with its checksum sums to zero");
        let old: [u8; 4] = data[12..16].try_into().unwrap();
        let new = [172, 16, 255, 254];
        data[12..16].copy_from_slice(&new);
        let updated = update(c, &old, &new);
        data[10..12].copy_from_slice(&[0, 0]);
        assert_eq!(updated, checksum(&data));
        let old16 = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];
        let new16 = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let mut a = [0u8; 32];
        a[..16].copy_from_slice(&old16);
        a[16..].copy_from_slice(&[7; 16]);
        let ca = checksum(&a);
        a[..16].copy_from_slice(&new16);
        assert_eq!(update(ca, &old16, &new16), checksum(&a));
    }
}
