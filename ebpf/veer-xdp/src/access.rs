//! The one bounds-checked way to reach into a packet.

use core::mem::size_of;

use aya_ebpf::programs::XdpContext;

use crate::verdict::Drop;

/// Pointer to a `T` at `offset` bytes into the frame, if the whole `T` is inside it.
///
/// The comparison against `data_end` is what the verifier needs to allow the
/// access; every header read in veer goes through here or [`mut_ptr_at`].
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Result<*const T, Drop> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + size_of::<T>() > end {
        return Err(Drop::Truncated);
    }
    Ok((start + offset) as *const T)
}

/// Mutable variant of [`ptr_at`].
#[inline(always)]
pub fn mut_ptr_at<T>(ctx: &XdpContext, offset: usize) -> Result<*mut T, Drop> {
    Ok(ptr_at::<T>(ctx, offset)? as *mut T)
}

/// Hides `x` from LLVM's range analysis, so that a following bounds check is
/// kept in the object for the verifier to see (it cannot follow `x % len`).
#[inline(always)]
pub fn opaque(x: u32) -> u32 {
    // SAFETY: a volatile read of a local.
    unsafe { core::ptr::read_volatile(&x) }
}

/// The context as a called (not inlined) function must use it. Read
/// through a volatile load, the context pointer stays one: otherwise LLVM
/// hands the callee the frame's start and end as arguments, and the
/// verifier refuses arithmetic on the end ("pointer arithmetic on pkt_end").
#[inline(always)]
pub fn callee_ctx(ctx: &XdpContext) -> XdpContext {
    // SAFETY: a volatile read of a valid reference.
    XdpContext::new(unsafe { core::ptr::read_volatile(&ctx.ctx) })
}
