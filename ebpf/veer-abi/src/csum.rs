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
    fn sums_finish_to_the_full_checksum() {
        let data: [u8; 7] = [0x45, 0, 0, 40, 0xff, 1, 0x40];
        assert_eq!(finish(sum16(&data)), checksum(&data));
        let (a, b) = ([1u8, 2, 3, 4], [0xff, 0xfe, 9, 8]);
        let both: [u8; 8] = [1, 2, 3, 4, 0xff, 0xfe, 9, 8];
        assert_eq!(finish(sum16(&a) + sum16(&b)), checksum(&both), "sums add before the fold");
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
