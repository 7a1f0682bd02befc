//! Atomic read-modify-writes on map values, as BPF instructions: the BPF
//! target has none in `core::sync::atomic`. Each is one `BPF_ATOMIC`
//! instruction, which the x86-64 JIT turns into a `lock`-prefixed one (a
//! full barrier).

/// `*p += d`, the old value unread (`BPF_ADD`, Linux 5.12+ as `BPF_ATOMIC`;
/// clang's `__sync_fetch_and_add` with its result unused).
#[inline(always)]
pub fn add(p: *mut i64, d: i64) {
    // SAFETY: the caller's `p` is an aligned i64 in a map value the
    // verifier checked.
    unsafe {
        core::arch::asm!(
            "lock *(u64 *)({p} + 0) += {d}",
            p = in(reg) p,
            d = in(reg) d,
            options(nostack),
        )
    };
}

/// `*p |= v`, returning the value before (`BPF_OR | BPF_FETCH`, Linux 5.12+).
#[inline(always)]
pub fn fetch_or(p: *mut u64, v: u64) -> u64 {
    let mut r = v;
    // SAFETY: the caller's `p` is an aligned u64 in a map value the
    // verifier checked.
    unsafe {
        core::arch::asm!(
            "{r} = atomic_fetch_or((u64 *)({p} + 0), {r})",
            p = in(reg) p,
            r = inout(reg) r,
            options(nostack),
        )
    };
    r
}

/// If `*p` is `expected`, sets it to `new`; returns the value before,
/// either way (`BPF_CMPXCHG`, Linux 5.12+).
#[inline(always)]
pub fn cmpxchg(p: *mut u64, expected: u64, new: u64) -> u64 {
    let mut r0 = expected;
    // SAFETY: as in [`fetch_or`]; the instruction compares with r0 and
    // returns the old value there.
    unsafe {
        core::arch::asm!(
            "r0 = cmpxchg_64({p} + 0, r0, {new})",
            p = in(reg) p,
            new = in(reg) new,
            inout("r0") r0,
            options(nostack),
        )
    };
    r0
}
