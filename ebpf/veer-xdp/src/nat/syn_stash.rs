//! Resending a NAT flow's SYN to another backend when the first refuses it.
//!
//! A NAT backend with nothing listening answers a SYN with RST, and that RST
//! comes back through veer. Passed on, it fails the client's connection.
//! Instead veer keeps each NAT flow's SYN as the client sent it (`keep`);
//! a RST that acknowledges exactly that SYN (`resend`) is turned back into
//! it, in place, and handed to the NAT program again, which sees its flow
//! marked refused and schedules it on another backend. The client never
//! sees the refusal, and waits for no retransmission.

use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_xdp_adjust_head, bpf_xdp_load_bytes, bpf_xdp_store_bytes},
    macros::map,
    maps::{LruHashMap, PerCpuArray},
    programs::XdpContext,
};
use veer_abi::{
    is_ipv4_mapped, FlowKey, GlobalCounter, NatMapping, PassiveKind, PendingSyn, SynStash, CONN_F_REFUSED,
    CONN_F_RESENDS_SHIFT, DEFAULT_NEW_FLOW_TABLE_SIZE, MAX_SYN_RESENDS, NAT_F_ANSWERED, NAT_F_PROXIED,
    PENDING_SYNS_SIZE, SYN_RESCUE_MARK, SYN_STASH_BYTES,
};

use crate::{
    access::{mut_ptr_at, ptr_at},
    conntrack::{ConnKey, Room, BPF_F_NO_COMMON_LRU, NEW_CONNS},
    headers::{
        eth::{EthHdr, ETH_P_IP, ETH_P_IPV6},
        ipv4::Ipv4Hdr,
        ipv6::Ipv6Hdr,
        l4::{TcpHdr, TCP_ACK, TCP_RST},
    },
    parse::VipPacket,
    passive,
    snat::claim_rescue,
    stats, store,
    verdict::Drop,
};

use super::ports;

/// NAT flows' SYNs, kept until the handshake completes (or the LRU evicts
/// them), to resend one to another backend. Sized like `NEW_CONNS`.
#[map]
static SYN_STASH: LruHashMap<FlowKey, SynStash> =
    LruHashMap::with_max_entries(DEFAULT_NEW_FLOW_TABLE_SIZE, BPF_F_NO_COMMON_LRU);

/// NAT SYNs sent and not yet seen answered, for veerd: one left unanswered
/// too long (a backend host cut off sends no refusal) is resent elsewhere
/// by veerd, through a refusal it makes up (see `resend`).
#[map]
static PENDING_SYNS: LruHashMap<FlowKey, PendingSyn> =
    LruHashMap::with_max_entries(PENDING_SYNS_SIZE, BPF_F_NO_COMMON_LRU);

/// Per-CPU room for a pending SYN's entry, off the stack.
#[map]
static PENDING_SCRATCH: PerCpuArray<PendingSyn> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU room for a SYN being kept, off the stack.
#[map]
static STASH_SCRATCH: PerCpuArray<SynStash> = PerCpuArray::with_max_entries(1, 0);

/// Keeps a NAT flow's SYN (`pkt`, not yet rewritten). A SYN carrying data
/// (TCP Fast Open) or too long to keep is not kept; its flow falls back on
/// the client's own retransmission. A call of its own, off the NAT
/// program's full stack.
#[inline(never)]
pub fn keep(ctx: &XdpContext, pkt: &VipPacket) -> Result<(), Drop> {
    let ctx = &crate::access::callee_ctx(ctx);
    let l4 = pkt.l4 as usize;
    if l4 > EthHdr::LEN + 60 {
        return Err(Drop::Malformed);
    }
    let ip_len = if is_ipv4_mapped(&pkt.key.dst) {
        unsafe { (*ptr_at::<Ipv4Hdr>(ctx, EthHdr::LEN)?).total_len() }
    } else {
        Ipv6Hdr::LEN + unsafe { (*ptr_at::<Ipv6Hdr>(ctx, EthHdr::LEN)?).payload_len() }
    };
    let tcp = unsafe { &*ptr_at::<TcpHdr>(ctx, l4)? };
    if ip_len != l4 - EthHdr::LEN + tcp.header_len() || ip_len > SYN_STASH_BYTES || ip_len == 0 {
        return Ok(());
    }
    let seq = u32::from_be_bytes(tcp.seq);
    let Some(s) = STASH_SCRATCH.get_ptr_mut(0) else { return Ok(()) };
    // SAFETY: this CPU's scratch value; nothing else runs on it meanwhile.
    let s = unsafe { &mut *s };
    let r = unsafe { bpf_xdp_load_bytes(ctx.ctx, EthHdr::LEN as u32, s.bytes.as_mut_ptr() as *mut _, ip_len as u32) };
    if r != 0 {
        return Ok(());
    }
    s.len = ip_len as u32;
    s.seq = seq;
    let _ = SYN_STASH.insert(&pkt.key, &*s, 0);
    // Watched until answered: the mapping just made for it says where to.
    let (Some(p), Some(a)) = (PENDING_SCRATCH.get_ptr_mut(0), ports::last()) else { return Ok(()) };
    // SAFETY: this CPU's scratch value; nothing else runs on it meanwhile.
    let p = unsafe { &mut *p };
    store::copy(&mut p.key, &a.key);
    p.backend = a.mapping.backend;
    p.seq = seq;
    // SAFETY: a helper without arguments.
    p.sent_ns = unsafe { bpf_ktime_get_ns() };
    p.answered_ns = 0;
    let _ = PENDING_SYNS.insert(&pkt.key, &*p, 0);
    Ok(())
}

/// The backend's SYN-ACK of `flow` came back: its pending SYN is answered
/// (veerd takes its round trip for the backend's rescue timeout). A call of
/// its own, off the return programs' stacks.
#[inline(never)]
pub fn answered(flow: &FlowKey) {
    if let Some(p) = PENDING_SYNS.get_ptr_mut(flow) {
        // SAFETY: a preallocated LRU value, written in place.
        unsafe {
            if (*p).answered_ns == 0 {
                (*p).answered_ns = bpf_ktime_get_ns();
            }
        }
    }
}

/// A RST from a NAT backend (`pkt`, matching `m`): if it refuses the
/// flow's kept SYN, the frame becomes that SYN again and `true` is
/// returned, for the caller to hand it to the NAT program. Anything else
/// (an established flow, a RST that acknowledges another sequence number,
/// a flow already resent `MAX_SYN_RESENDS` times) returns `false`, and
/// the RST goes on to the client as any answer does.
#[inline(always)]
pub fn resend(ctx: &XdpContext, pkt: &VipPacket, mapping: *mut NatMapping) -> Result<bool, Drop> {
    if pkt.tcp_flags() & (TCP_RST | TCP_ACK) != TCP_RST | TCP_ACK {
        return Ok(false);
    }
    // SAFETY: a live map value, read in place.
    let m = unsafe { &*mapping };
    let tcp = unsafe { &*ptr_at::<TcpHdr>(ctx, pkt.l4 as usize)? };
    // veerd's rescue of an unanswered SYN, or a real refusal. A rescue
    // that comes too late (the backend answered meanwhile, or the flow has
    // moved on) is dropped: passed on, it would refuse the client's
    // connection, or mark a live one closed.
    let rescue = u16::from_be_bytes(tcp.urg) == SYN_RESCUE_MARK;
    let declined = if rescue { Err(Drop::StaleRescue) } else { Ok(false) };
    if rescue && m.flags & NAT_F_ANSWERED != 0 {
        return declined;
    }
    // Only a flow still in its handshake is in `NEW_CONNS`.
    let Some(entry) = NEW_CONNS.get_ptr_mut(&ConnKey::of(&m.flow, Room::Mapping)) else { return declined };
    // SAFETY: a preallocated LRU value (see `conntrack::established`).
    let entry = unsafe { &mut *entry };
    let resends = (entry.flags >> CONN_F_RESENDS_SHIFT) & 0xff;
    if entry.backend != m.backend || resends >= MAX_SYN_RESENDS {
        return declined;
    }
    let Some(syn) = (unsafe { SYN_STASH.get(&m.flow) }) else { return declined };
    // A refusal answers a segment without ACK: its sequence number is zero
    // and it acknowledges the SYN exactly (RFC 9293, 3.10.7.1). Anything
    // else (a stale or forged RST, or the reset of a connection the
    // backend had accepted before its server died) is no refusal.
    if tcp.seq != [0; 4] || u32::from_be_bytes(tcp.ack) != syn.seq.wrapping_add(1) {
        return declined;
    }
    let len = syn.len as usize;
    if len == 0 || len > SYN_STASH_BYTES {
        return declined;
    }
    // Resized at the head: every XDP mode guarantees headroom (256 bytes),
    // while a locally made RST often has no tailroom to grow into.
    let delta = (EthHdr::LEN + len) as i32 - (ctx.data_end() - ctx.data()) as i32;
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -delta) } != 0 {
        return declined;
    }
    // From here on the frame is the client's SYN (the MAC addresses are
    // set on the way out).
    let r = unsafe { bpf_xdp_store_bytes(ctx.ctx, EthHdr::LEN as u32, syn.bytes.as_ptr() as *mut _, len as u32) };
    if r != 0 {
        return Err(Drop::Malformed);
    }
    let eth = unsafe { &mut *mut_ptr_at::<EthHdr>(ctx, 0)? };
    eth.ether_type = if is_ipv4_mapped(&m.flow.dst) { ETH_P_IP } else { ETH_P_IPV6 }.to_be_bytes();
    // The backend's SYN-ACK may be crossing on another CPU: only the first
    // of the two to mark the mapping goes on (`proof::note_answer`), so no
    // client gets one backend's SYN-ACK for a connection sent to another.
    if rescue && !claim_rescue(mapping) {
        return declined;
    }
    entry.flags = (entry.flags | CONN_F_REFUSED) + (1 << CONN_F_RESENDS_SHIFT);
    resent(mapping, rescue);
    Ok(true)
}

/// The SYN of `m` is resent: a proxied flow's next mapping is proxied alike,
/// and its backend is suspect, for a refusal or (`rescue`) for no answer.
#[inline(always)]
fn resent(mapping: *mut NatMapping, rescue: bool) {
    // SAFETY: a live map value, borrowed anew after `resend`'s atomic write.
    let m = unsafe { &*mapping };
    if m.flags & NAT_F_PROXIED != 0 {
        let client =
            veer_abi::ProxiedClient { cookie: m.cookie, isn: m.client_isn, mss: m.client_mss, window: m.client_window };
        crate::snat::proxy_next(&m.flow, &client);
    }
    if rescue {
        stats::count(GlobalCounter::SynRescued);
        passive::suspect(m.backend, PassiveKind::SynRetransmit);
    } else {
        passive::suspect(m.backend, PassiveKind::Refused);
    }
}
