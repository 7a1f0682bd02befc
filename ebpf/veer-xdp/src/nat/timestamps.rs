//! TCP timestamps of NAT flows, put on veer's clock.
//!
//! Many clients share one SNAT address, so a SNAT 4-tuple that a closed
//! flow leaves behind is soon taken by another client, whose timestamp clock
//! has nothing to do with the first one's. The backend may still hold the
//! old connection in TIME_WAIT, and accepts a new SYN on it only if its
//! timestamp is newer (PAWS, RFC 7323). veer therefore shifts each flow's
//! timestamps by a per-flow offset chosen at its SYN, so that the backend
//! sees values of veer's own clock (about a microsecond a tick) rising on
//! every tuple; the echoes coming back are shifted back, so the client sees
//! its own values. Clients' clocks tick at most every millisecond (RFC 7323
//! asks 1 ms to 1 s), so a flow's shifted values never overtake veer's clock,
//! and a tuple can be taken again a moment after its flow closed.

use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_xdp_load_bytes, bpf_xdp_store_bytes},
    macros::map,
    maps::PerCpuArray,
    programs::XdpContext,
};
use veer_abi::csum;

use crate::{
    access::{callee_ctx, mut_ptr_at, opaque, ptr_at},
    clock,
    headers::{eth::EthHdr, l4::TcpHdr},
    verdict::Drop,
};

/// TCP option kinds and the timestamps option's length.
const OPT_END: u8 = 0;
const OPT_NOP: u8 = 1;
const OPT_TIMESTAMPS: u8 = 8;
const TIMESTAMPS_LEN: u8 = 10;

/// A TCP header's fixed part; its options' most.
const FIXED: usize = 20;
const MAX_OPTIONS: usize = 40;
/// Options looked at in a client's segment before giving up on its
/// timestamps: every option walked multiplies what the verifier checks at
/// each call site. Linux's SYN has them third (MSS, SACK permitted,
/// timestamps), or fourth without SACK (MSS, NOP, NOP, timestamps); every
/// other segment first. A SYN with them further on (BSD and macOS put them
/// sixth) gets no shift at all, so every segment of its flow is alike: the
/// flow then keeps its port for the 60 s linger.
const OPTIONS_WALKED: usize = 4;
/// The same in a backend's answer, looked at once per packet in the return
/// program: a SYN-ACK's timestamps come fifth from a FreeBSD backend (MSS,
/// NOP, window scale, SACK permitted, timestamps), and a timestamp not
/// shifted back there would make the client refuse the SYN-ACK.
const ANSWER_OPTIONS_WALKED: usize = 7;

/// This CPU's copy of the current packet's TCP options (indexes are masked
/// to 6 bits, and LLVM may read a few bytes at once from there: 128 bytes
/// keep every such read inside). Parsed here rather than in the packet:
/// packet pointers at variable offsets lose the verifier.
#[map]
static OPTIONS: PerCpuArray<[u8; 128]> = PerCpuArray::with_max_entries(1, 0);

/// [`find`] in a backend's answer, as a call of its own.
#[inline(never)]
fn find_apart(ctx: &XdpContext, l4: usize) -> usize {
    find::<ANSWER_OPTIONS_WALKED>(&callee_ctx(ctx), l4)
}

/// veer's timestamp clock: nanoseconds / 1024.
#[inline(always)]
pub fn clock() -> u32 {
    // SAFETY: a helper without arguments.
    (unsafe { bpf_ktime_get_ns() } >> 10) as u32
}

/// Offset from the TCP header at `l4` of its timestamps option's TSval,
/// among its first `WALK` options; 0 when it has none. Leaves the options
/// in `OPTIONS` for [`shift`].
#[inline(always)]
fn find<const WALK: usize>(ctx: &XdpContext, l4: usize) -> usize {
    if l4 > EthHdr::LEN + 60 {
        return 0;
    }
    let Ok(tcp) = ptr_at::<TcpHdr>(ctx, l4) else { return 0 };
    // SAFETY: bounds checked by `ptr_at`. Opaque: LLVM would read the
    // length again after the check, and the verifier lose its bounds.
    let options = opaque((((unsafe { (*tcp).doff_flags[0] } >> 4) as u32) * 4).wrapping_sub(FIXED as u32)) as usize;
    // Two comparisons, not a range's `contains`: LLVM turns that into one
    // on `options - 12`, from which the verifier learns nothing of `options`.
    #[allow(clippy::manual_range_contains)]
    if options < 12 || options > MAX_OPTIONS {
        return 0;
    }
    let Some(buf) = OPTIONS.get_ptr_mut(0) else { return 0 };
    // SAFETY: `options` bytes fit the value; the helper checks the frame.
    if unsafe { bpf_xdp_load_bytes(ctx.ctx, (l4 + FIXED) as u32, buf as *mut _, options as u32) } != 0 {
        return 0;
    }
    // SAFETY: this CPU's value; nothing else runs on it meanwhile.
    let b = unsafe { &*buf };
    // The usual place first: NOP, NOP, timestamps (every packet but a SYN).
    if b[0] == OPT_NOP && b[1] == OPT_NOP && b[2] == OPT_TIMESTAMPS && b[3] == TIMESTAMPS_LEN {
        return FIXED + 4;
    }
    let mut at = 0usize;
    for _ in 0..WALK {
        if at >= options {
            break;
        }
        let kind = b[at & 63];
        if kind == OPT_END {
            break;
        }
        let len = if kind == OPT_NOP { 1 } else { b[(at + 1) & 63] as usize };
        if kind == OPT_TIMESTAMPS && len == TIMESTAMPS_LEN as usize && at + 10 <= options {
            return FIXED + at + 2;
        }
        if len == 0 || (len == 1 && kind != OPT_NOP) {
            break;
        }
        at += len;
    }
    0
}

/// Adds `delta` to the 4-byte value at `at` (from the TCP header at `l4`;
/// `find` found it and left the options in `OPTIONS`), updating the TCP
/// checksum. A value at an odd offset is summed with its neighbours, as the
/// checksum adds 16-bit words from the header's start (a header's length is
/// a multiple of four, so an odd value has a byte after it in the header).
/// In registers and the per-CPU copy, not in arrays: the frame is on the
/// return program's deepest call chain.
#[inline(always)]
fn shift(ctx: &XdpContext, l4: usize, at: usize, delta: u32) -> Result<u32, Drop> {
    #[allow(clippy::manual_range_contains)] // see `find`
    if l4 > EthHdr::LEN + 60 || at < FIXED + 1 || at > FIXED + MAX_OPTIONS - 5 {
        return Err(Drop::Malformed);
    }
    let buf = OPTIONS.get_ptr_mut(0).ok_or(Drop::Malformed)?;
    // SAFETY: this CPU's value; nothing else runs on it meanwhile.
    let b = unsafe { &mut *buf };
    let odd = at & 1;
    // Opaque: LLVM would fold the subtraction into the accesses' offsets.
    let first = opaque((at - FIXED - odd) as u32) as usize & 63;
    let word = |b: &[u8; 128], k: usize| u16::from_be_bytes([b[(first + k) & 63], b[(first + k + 1) & 63]]) as u32;
    // The old words (three for an odd offset), summed negated.
    let len = 4 + 2 * odd;
    let mut sum = (!word(b, 0) & 0xffff) + (!word(b, 2) & 0xffff);
    if odd != 0 {
        sum += !word(b, 4) & 0xffff;
    }
    let i = (first + odd) & 63;
    let value = u32::from_be_bytes([b[i], b[(i + 1) & 63], b[(i + 2) & 63], b[(i + 3) & 63]]).wrapping_add(delta);
    let v = value.to_be_bytes();
    b[i] = v[0];
    b[(i + 1) & 63] = v[1];
    b[(i + 2) & 63] = v[2];
    b[(i + 3) & 63] = v[3];
    sum += word(b, 0) + word(b, 2);
    if odd != 0 {
        sum += word(b, 4);
    }
    let tcp = mut_ptr_at::<TcpHdr>(ctx, l4)?;
    // SAFETY: bounds checked by `mut_ptr_at`.
    sum += (!u16::from_be_bytes(unsafe { (*tcp).check })) as u32;
    let check = !csum::fold(sum);
    let from = (l4 + FIXED + first) as u32;
    // SAFETY: `len` bytes of this CPU's value; the helper checks the frame.
    if unsafe { bpf_xdp_store_bytes(ctx.ctx, from, b.as_mut_ptr().add(first) as *mut _, len as u32) } != 0 {
        return Err(Drop::Truncated);
    }
    // SAFETY: bounds checked by `mut_ptr_at` (the store did not move the frame).
    let tcp = mut_ptr_at::<TcpHdr>(ctx, l4)?;
    unsafe { (*tcp).check = check.to_be_bytes() };
    Ok(value)
}

/// A client's SYN: the offset that puts its TSval on veer's clock (bit 32
/// set), or 0 when it carries no timestamps. A call of its own, as the
/// others here: a frame for their buffers, off the NAT program's.
#[inline(never)]
pub fn offset_for_syn(ctx: &XdpContext, l4: usize) -> u64 {
    let ctx = &callee_ctx(ctx);
    let at = find::<OPTIONS_WALKED>(ctx, l4);
    #[allow(clippy::manual_range_contains)] // see `find`
    if at < FIXED + 2 || at > FIXED + MAX_OPTIONS - 4 {
        return 0;
    }
    let Some(b) = OPTIONS.get(0) else { return 0 };
    // Opaque: LLVM would fold the subtraction into the access's offset.
    let i = opaque((at - FIXED) as u32) as usize;
    let tsval = u32::from_be_bytes([b[i & 63], b[(i + 1) & 63], b[(i + 2) & 63], b[(i + 3) & 63]]);
    1 << 32 | clock().wrapping_sub(tsval) as u64
}

/// NOP, NOP, timestamps kind and length, as one big-endian word.
const USUAL: u32 = u32::from_be_bytes([OPT_NOP, OPT_NOP, OPT_TIMESTAMPS, TIMESTAMPS_LEN]);

/// Adds `delta` to the word at `I` of the usual options `o`; the TCP
/// checksum `check` after it.
#[inline(always)]
fn add_at<const I: usize>(o: &mut [u8; 12], delta: u32, check: u16) -> u16 {
    let old = [o[I], o[I + 1], o[I + 2], o[I + 3]];
    let new = u32::from_be_bytes(old).wrapping_add(delta).to_be_bytes();
    o[I] = new[0];
    o[I + 1] = new[1];
    o[I + 2] = new[2];
    o[I + 3] = new[3];
    csum::update(check, &old, &new)
}

/// [`in_place`]: shifted.
const SHIFTED: u32 = 0;
/// [`in_place`]: not the usual layout; the options need walking.
const UNUSUAL: u32 = 1;
/// [`in_place`]: the frame is too short for its own header.
const BROKEN: u32 = 2;

/// [`in_place`] as a call of its own, with a frame small enough for the
/// return program's chain.
#[inline(never)]
fn in_place_apart(ctx: &XdpContext, l4: usize, at: usize, delta: u32) -> u32 {
    in_place(&callee_ctx(ctx), l4, at, delta)
}

/// The usual layout (NOP, NOP, timestamps first: every segment but a SYN
/// of Linux, BSD, macOS and Windows), shifted in place: the value at `at`
/// (24 TSval, 28 TSecr) plus `delta`, no copy, no helper.
#[inline(always)]
fn in_place(ctx: &XdpContext, l4: usize, at: usize, delta: u32) -> u32 {
    if l4 > EthHdr::LEN + 60 {
        return BROKEN;
    }
    let Ok(tcp) = mut_ptr_at::<TcpHdr>(ctx, l4) else { return BROKEN };
    let Ok(o) = mut_ptr_at::<[u8; 12]>(ctx, l4 + FIXED) else { return UNUSUAL };
    // SAFETY: both bounds checked by `mut_ptr_at`.
    let (tcp, o) = unsafe { (&mut *tcp, &mut *o) };
    if tcp.doff_flags[0] >> 4 < 8 || u32::from_be_bytes([o[0], o[1], o[2], o[3]]) != USUAL {
        return UNUSUAL;
    }
    let check = u16::from_be_bytes(tcp.check);
    tcp.check = if at == FIXED + 4 { add_at::<4>(o, delta, check) } else { add_at::<8>(o, delta, check) }.to_be_bytes();
    SHIFTED
}

/// A shifted timestamp more than this ahead of veer's clock (ticks, about
/// half a second) is one a client pushed forward (or a clock faster than
/// veer's, or a flow so old that the 32-bit values wrapped): a port taken
/// over a second after such a flow's last packet could carry an older
/// timestamp than the backend's TIME_WAIT socket kept.
const AHEAD_TICKS: i32 = 1 << 19;

/// Whether shifted timestamp `v` runs ahead of veer's clock: the coarse
/// one, as this CPU last read it ([`clock::coarse_ns`]: a tick or two
/// behind the fine one, against half a second of slack, for no call into
/// the timekeeping code on every segment). A reading older still (after
/// a long idle) errs the safe way: a flow seen ahead only keeps its port.
#[inline(always)]
fn ahead(v: u32) -> bool {
    let now = (clock::coarse_ns() >> 10) as u32;
    v.wrapping_sub(now) as i32 > AHEAD_TICKS
}

/// [`to_backend`], [`to_client`]: the frame could not be changed.
pub const TS_BROKEN: u32 = 0;
/// [`to_backend`], [`to_client`]: the packet carries no timestamps.
pub const TS_NONE: u32 = 1;
/// [`to_backend`], [`to_client`]: shifted.
pub const TS_SHIFTED: u32 = 2;
/// [`to_backend`]: shifted, and ahead of veer's clock: its flow must not
/// give its port over.
pub const TS_AHEAD: u32 = 3;

/// A client's packet toward its backend: TSval + `off`; one of `TS_*`.
#[inline(never)]
pub fn to_backend(ctx: &XdpContext, l4: usize, off: u32) -> u32 {
    let ctx = &callee_ctx(ctx);
    let v = match in_place(ctx, l4, FIXED + 4, off) {
        SHIFTED => match ptr_at::<[u8; 4]>(ctx, l4 + FIXED + 4) {
            // SAFETY: bounds checked by `ptr_at`.
            Ok(p) => u32::from_be_bytes(unsafe { *p }),
            Err(_) => return TS_BROKEN,
        },
        BROKEN => return TS_BROKEN,
        _ => match find::<OPTIONS_WALKED>(ctx, l4) {
            0 => return TS_NONE,
            at => match shift(ctx, l4, at, off) {
                Ok(v) => v,
                Err(_) => return TS_BROKEN,
            },
        },
    };
    if ahead(v) {
        TS_AHEAD
    } else {
        TS_SHIFTED
    }
}

/// A backend's packet toward the client: TSecr - `off`; one of `TS_*`. As
/// [`to_backend`], but inlined, with only the steps calls of their own: the
/// return program's frame leaves no room for a deeper one.
#[inline(always)]
pub fn to_client(ctx: &XdpContext, l4: usize, off: u32) -> u32 {
    match in_place_apart(ctx, l4, FIXED + 8, off.wrapping_neg()) {
        SHIFTED => return TS_SHIFTED,
        BROKEN => return TS_BROKEN,
        _ => {}
    }
    match find_apart(ctx, l4) {
        0 => TS_NONE,
        at if shift(ctx, l4, at + 4, off.wrapping_neg()).is_ok() => TS_SHIFTED,
        _ => TS_BROKEN,
    }
}
