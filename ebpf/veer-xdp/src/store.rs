//! Stores a word at a time, where LLVM would otherwise call a byte loop.
//!
//! bpf-linker has LLVM expand `memcpy` in order but gives it no inline
//! expansion of `memset` or `memmove`: a struct literal with a run of zero
//! fields (four stores or sixteen bytes, by LLVM's store merging), a
//! `[0; N]` array or a copy between two map values becomes a call to a
//! byte-at-a-time subprogram, 40 bytes of zeros some 160 instructions and a
//! BPF-to-BPF call. Volatile stores are never merged.

use core::{marker::PhantomData, mem::size_of};

/// Stores words over a `T`, one volatile store each, at the caller's
/// word indexes (no array of them built first: it would sit on the stack).
/// An index past the `T` stores nothing (the indexes are constants, so the
/// check folds away).
pub struct Words<T>(*mut u32, PhantomData<T>);

impl<T> Words<T> {
    /// Stores over the `T` at `dst`.
    ///
    /// # Safety
    /// `dst` is valid for writes of a `T`, 4-aligned, and `T` is all
    /// integers; every word the caller means to set is set with [`put`]
    /// before the `T` is read.
    ///
    /// [`put`]: Words::put
    #[inline(always)]
    pub unsafe fn over(dst: *mut T) -> Self {
        Self(dst as *mut u32, PhantomData)
    }

    /// Stores `v` as the `i`th word.
    #[inline(always)]
    pub fn put(&self, i: usize, v: u32) {
        if i < size_of::<T>() / 4 {
            // SAFETY: within the `T`, per `over`.
            unsafe { core::ptr::write_volatile(self.0.add(i), v) };
        }
    }
}

/// Copies a `T` word by word between two map values (a plain copy is a
/// `memmove` call). `T` is a whole number of words of integers; map values
/// are 4-aligned. A 16-byte address anywhere: `headers::field::words16`
/// and `set_words16`.
#[inline(always)]
pub fn copy<T: Copy>(dst: &mut T, src: &T) {
    const { assert!(size_of::<T>().is_multiple_of(4)) };
    let (d, s) = (dst as *mut T as *mut u32, src as *const T as *const u32);
    let mut i = 0;
    while i < size_of::<T>() / 4 {
        // SAFETY: within both, 4-aligned (see above).
        unsafe { core::ptr::write_volatile(d.add(i), *s.add(i)) };
        i += 1;
    }
}

/// A copy of a map value `T` on the stack, word by word (a plain copy of
/// one whose source LLVM cannot tell apart from the stack is a `memmove`
/// call). `T` as for [`copy`].
#[inline(always)]
pub fn copied<T: Copy>(src: &T) -> T {
    let mut out = core::mem::MaybeUninit::<T>::uninit();
    // SAFETY: `copy`'s word loop writes every byte of `out`.
    copy(unsafe { &mut *out.as_mut_ptr() }, src);
    // SAFETY: every word written above.
    unsafe { out.assume_init() }
}
