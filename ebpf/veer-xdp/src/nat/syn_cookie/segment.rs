//! The segments veer writes itself (a SYN-ACK, a SYN, a probe, a RST):
//! built whole in a per-CPU scratch, checksummed by `bpf_csum_diff`, and
//! stored over the frame.

use aya_ebpf::{
    helpers::{bpf_csum_diff, bpf_xdp_adjust_head, bpf_xdp_load_bytes, bpf_xdp_store_bytes},
    macros::map,
    maps::PerCpuArray,
    programs::XdpContext,
};
use veer_abi::IPPROTO_TCP;

use crate::{
    access::{mut_ptr_at, opaque, ptr_at},
    headers::{
        eth::{EthHdr, ETH_P_IP, ETH_P_IPV6},
        ipv4::Ipv4Hdr,
        ipv6::Ipv6Hdr,
        l4::TcpHdr,
    },
    parse::VipPacket,
    verdict::Drop,
};

/// Per-CPU room for headers: the helpers' inputs and the packet being built.
#[repr(C)]
pub(super) struct Scratch {
    /// The packet's IP header, as the cookie helpers read it.
    pub(super) ip: [u8; 40],
    /// The packet's TCP header, or a SYN made up to decode a cookie's MSS.
    pub(super) th: [u8; 60],
    /// An IPv4 packet being built.
    out4: Out<Ipv4Hdr>,
    /// An IPv6 packet being built.
    out6: Out<Ipv6Hdr>,
    /// The TCP pseudo-header being summed.
    pseudo: [u8; 40],
}

/// IP and TCP headers as veer sends them (a MSS option, or one byte of data).
#[repr(C)]
struct Out<Ip> {
    ip: Ip,
    tcp: TcpHdr,
    /// The MSS option, or the probe's byte and three zeros.
    tail: [u8; 4],
}

#[map]
static COOKIE_SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// A segment veer writes itself.
pub(super) struct Segment {
    pub(super) sport: u16,
    pub(super) dport: u16,
    pub(super) seq: u32,
    pub(super) ack: u32,
    pub(super) flags: u8,
    pub(super) window: u16,
    /// The MSS option's value (a SYN, a SYN-ACK), [`PROBE`] for one byte of
    /// data instead, or [`BARE`] for neither.
    pub(super) mss: u16,
}

/// `Segment::mss`: a one-byte probe, no option.
pub(super) const PROBE: u16 = 0;
/// `Segment::mss`: no option, no data (a RST).
pub(super) const BARE: u16 = 1;

#[inline(always)]
pub(super) fn scratch() -> Result<&'static mut Scratch, Drop> {
    let s = COOKIE_SCRATCH.get_ptr_mut(0).ok_or(Drop::Malformed)?;
    // SAFETY: this CPU's value; nothing else runs on it meanwhile.
    Ok(unsafe { &mut *s })
}

/// Copies the packet's IP header and TCP header into `s`; the TCP header's
/// length (20 to 60).
#[inline(always)]
pub(super) fn load_headers(ctx: &XdpContext, pkt: &VipPacket, v4: bool, s: &mut Scratch) -> Result<u32, Drop> {
    let l4 = pkt.l4 as usize;
    if l4 > EthHdr::LEN + 60 {
        return Err(Drop::Malformed);
    }
    // Through a volatile read: LLVM would otherwise read the length from the
    // packet again after the check, and the verifier lose its bounds.
    // The options' length, bounded where the verifier sees it, then the
    // header's (20 to 60).
    let options = opaque((unsafe { (*ptr_at::<TcpHdr>(ctx, l4)?).header_len() } as u32).wrapping_sub(20));
    if options > 40 {
        return Err(Drop::Malformed);
    }
    let th_len = options as usize + 20;
    let ip_len = if v4 { Ipv4Hdr::LEN } else { Ipv6Hdr::LEN };
    // SAFETY: lengths within both buffers; the helper checks the frame's.
    let r = unsafe {
        bpf_xdp_load_bytes(ctx.ctx, EthHdr::LEN as u32, s.ip.as_mut_ptr() as *mut _, ip_len as u32)
            | bpf_xdp_load_bytes(ctx.ctx, l4 as u32, s.th.as_mut_ptr() as *mut _, th_len as u32)
    };
    if r != 0 {
        return Err(Drop::Truncated);
    }
    Ok(th_len as u32)
}

/// Makes the frame the packet `seg` from `src` to `dst`: resized, IP and
/// TCP headers written whole with their checksums (the MAC addresses are
/// set on the way out).
#[inline(always)]
pub(super) fn emit(
    ctx: &XdpContext,
    s: &mut Scratch,
    v4: bool,
    src: &[u8; 16],
    dst: &[u8; 16],
    seg: &Segment,
) -> Result<(), Drop> {
    let tcp_len = match seg.mss {
        PROBE => 21,
        BARE => 20,
        _ => 24,
    };
    let ip_len = if v4 { Ipv4Hdr::LEN } else { Ipv6Hdr::LEN };
    let pseudo = ip_header(s, v4, src, dst, tcp_len);
    if v4 {
        write_tcp(&mut s.out4.tcp, &mut s.out4.tail, seg, pseudo);
    } else {
        write_tcp(&mut s.out6.tcp, &mut s.out6.tail, seg, pseudo);
    }
    let len = (EthHdr::LEN + ip_len + tcp_len) as i32;
    // Resized at the head: every XDP mode guarantees headroom (256 bytes).
    let frame = opaque((ctx.data_end() - ctx.data()) as u32) as i32;
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, frame - len) } != 0 {
        return Err(Drop::Truncated);
    }
    let eth = unsafe { &mut *mut_ptr_at::<EthHdr>(ctx, 0)? };
    eth.ether_type = if v4 { ETH_P_IP } else { ETH_P_IPV6 }.to_be_bytes();
    // SAFETY: constant lengths within the scratch value.
    let r = unsafe {
        match (v4, seg.mss) {
            (true, PROBE) => store(ctx, &s.out4, 20 + 21),
            (true, BARE) => store(ctx, &s.out4, 20 + 20),
            (true, _) => store(ctx, &s.out4, 20 + 24),
            (false, PROBE) => store(ctx, &s.out6, 40 + 21),
            (false, BARE) => store(ctx, &s.out6, 40 + 20),
            (false, _) => store(ctx, &s.out6, 40 + 24),
        }
    };
    if r != 0 {
        return Err(Drop::Truncated);
    }
    Ok(())
}

/// Writes the IP header of a `tcp_len`-byte segment from `src` to `dst` into
/// the scratch; the sum of the segment's pseudo-header. The checksums are
/// summed by `bpf_csum_diff` over the scratch: summed here word by word,
/// the addresses' words would all be spilled to the stack.
#[inline(always)]
fn ip_header(s: &mut Scratch, v4: bool, src: &[u8; 16], dst: &[u8; 16], tcp_len: usize) -> u32 {
    if v4 {
        let ip = &mut s.out4.ip;
        ip.version_ihl = 0x45;
        ip.tos = 0;
        ip.tot_len = ((Ipv4Hdr::LEN + tcp_len) as u16).to_be_bytes();
        ip.id = [0; 2];
        ip.frag_off = [0x40, 0];
        ip.ttl = 64;
        ip.proto = IPPROTO_TCP;
        ip.check = [0; 2];
        ip.src.copy_from_slice(&src[12..]);
        ip.dst.copy_from_slice(&dst[12..]);
        let sum = csum_of(ip as *mut Ipv4Hdr as *mut u8, 20, 0);
        ip.check = csum_finish(sum).to_ne_bytes();
        s.pseudo[..4].copy_from_slice(&src[12..]);
        s.pseudo[4..8].copy_from_slice(&dst[12..]);
        s.pseudo[8..12].copy_from_slice(&[0, IPPROTO_TCP, 0, tcp_len as u8]);
        csum_of(s.pseudo.as_mut_ptr(), 12, 0)
    } else {
        let ip = &mut s.out6.ip;
        ip.vtc_flow = [0x60, 0, 0, 0];
        ip.payload_len = (tcp_len as u16).to_be_bytes();
        ip.next_header = IPPROTO_TCP;
        ip.hop_limit = 64;
        ip.src = *src;
        ip.dst = *dst;
        s.pseudo[..16].copy_from_slice(src);
        s.pseudo[16..32].copy_from_slice(dst);
        s.pseudo[32..40].copy_from_slice(&[0, 0, 0, tcp_len as u8, 0, 0, 0, IPPROTO_TCP]);
        csum_of(s.pseudo.as_mut_ptr(), 40, 0)
    }
}

/// The one's-complement sum of `len` bytes (a multiple of 4) at `p` (in
/// the scratch), added to `seed`.
#[inline(always)]
fn csum_of(p: *mut u8, len: u32, seed: u32) -> u32 {
    // SAFETY: `p` points at `len` bytes of this CPU's scratch.
    unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, p as *mut _, len, seed) as u32 }
}

/// The checksum field of a sum from [`csum_of`], in memory order: the
/// helper sums the bytes as they lie in memory, so the folded sum is
/// stored as is (`to_ne_bytes`), not byte-swapped.
#[inline(always)]
fn csum_finish(sum: u32) -> u16 {
    let s = (sum & 0xffff) + (sum >> 16);
    !(((s & 0xffff) + (s >> 16)) as u16)
}

/// Stores the first `len` bytes of `out` after the Ethernet header.
#[inline(always)]
unsafe fn store<T>(ctx: &XdpContext, out: &T, len: u32) -> i64 {
    bpf_xdp_store_bytes(ctx.ctx, EthHdr::LEN as u32, out as *const T as *mut _, len)
}

/// Writes `seg`'s TCP header (and its MSS option or probe byte), its
/// checksum from the pseudo-header's sum `pseudo`.
#[inline(always)]
fn write_tcp(tcp: &mut TcpHdr, tail: &mut [u8; 4], seg: &Segment, pseudo: u32) {
    tcp.sport = seg.sport.to_be_bytes();
    tcp.dport = seg.dport.to_be_bytes();
    tcp.seq = seg.seq.to_be_bytes();
    tcp.ack = seg.ack.to_be_bytes();
    let words = if seg.mss > BARE { 6 } else { 5 };
    tcp.doff_flags = [words << 4, seg.flags];
    tcp.window = seg.window.to_be_bytes();
    // Volatile stores: as `[0; 2]`s or plain stores, LLVM merges them into
    // a call to a byte-loop `memset` (see `store`).
    // SAFETY: two fields of the header, bounds-checked by the caller.
    unsafe {
        core::ptr::write_volatile(tcp.check.as_mut_ptr() as *mut u16, 0);
        core::ptr::write_volatile(tcp.urg.as_mut_ptr() as *mut u16, 0);
    }
    *tail = if seg.mss > BARE {
        let m = seg.mss.to_be_bytes();
        [2, 4, m[0], m[1]]
    } else {
        // The probe's byte (below the window, so the client drops it), or
        // nothing: zeros add nothing to the checksum.
        [0; 4]
    };
    // The header and its tail are contiguous (`Out`): 24 bytes.
    let sum = csum_of(tcp as *mut TcpHdr as *mut u8, 24, pseudo);
    tcp.check = csum_finish(sum).to_ne_bytes();
}
