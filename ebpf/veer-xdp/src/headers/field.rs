//! Reads of a multi-byte field with one load. Headers sit at any offset in
//! the frame, and through `read_unaligned` LLVM's BPF backend splits such a
//! load into byte loads and shifts; x86-64 and arm64 load at any address,
//! and their verifier (without strict alignment) takes such packet loads, as
//! C dataplanes rely on when they read `iph->saddr`.

/// A big-endian 16-bit field, read with one load.
#[inline(always)]
pub fn be16(field: &[u8; 2]) -> u16 {
    // SAFETY: two bytes in the frame, bounds-checked by the caller's header
    // pointer; see above on alignment.
    u16::from_be(unsafe { *(field.as_ptr() as *const u16) })
}

/// A 4-byte field, read with one load, in memory order (`u32::from_ne_bytes`
/// of its bytes).
#[inline(always)]
pub fn word(field: &[u8; 4]) -> u32 {
    // SAFETY: as in [`be16`].
    unsafe { *(field.as_ptr() as *const u32) }
}

/// A 16-byte address, read as four loads, in memory order.
#[inline(always)]
pub fn words16(field: &[u8; 16]) -> [u32; 4] {
    let p = field.as_ptr() as *const u32;
    // SAFETY: four words in 16 bytes; as in [`be16`].
    unsafe { [*p, *p.add(1), *p.add(2), *p.add(3)] }
}

/// The last word of a 16-byte address (an IPv4 address in the mapped
/// form), with one load, in memory order.
#[inline(always)]
pub fn last_word(field: &[u8; 16]) -> u32 {
    words16(field)[3]
}

/// A MAC address in the frame or a map value (not on the stack, whose
/// accesses the verifier wants aligned), read as a word and a half-word.
#[inline(always)]
pub fn mac(field: &[u8; 6]) -> (u32, u16) {
    let p = field.as_ptr();
    // SAFETY: six bytes; as in [`be16`].
    unsafe { (*(p as *const u32), *(p.add(4) as *const u16)) }
}

/// Writes a MAC address read by [`mac`], with two stores (in the frame or a
/// map value, as [`mac`]).
#[inline(always)]
pub fn set_mac(field: &mut [u8; 6], (word, half): (u32, u16)) {
    let p = field.as_mut_ptr();
    // SAFETY: six bytes; as in [`be16`].
    unsafe {
        *(p as *mut u32) = word;
        *(p.add(4) as *mut u16) = half;
    }
}

/// Writes a big-endian 16-bit field with one store.
#[inline(always)]
pub fn set_be16(field: &mut [u8; 2], v: u16) {
    // SAFETY: as in [`be16`].
    unsafe { *(field.as_mut_ptr() as *mut u16) = v.to_be() };
}

/// Writes a 4-byte field with one store (`word` in memory order, as [`word`] reads it).
#[inline(always)]
pub fn set_word(field: &mut [u8; 4], word: u32) {
    // SAFETY: as in [`be16`].
    unsafe { *(field.as_mut_ptr() as *mut u32) = word };
}

/// Writes a 16-byte address read by [`words16`], with four stores.
#[inline(always)]
pub fn set_words16(field: &mut [u8; 16], words: [u32; 4]) {
    let p = field.as_mut_ptr() as *mut u32;
    // SAFETY: four words in 16 bytes; as in [`be16`].
    unsafe {
        for (i, w) in words.iter().enumerate() {
            *p.add(i) = *w;
        }
    }
}
