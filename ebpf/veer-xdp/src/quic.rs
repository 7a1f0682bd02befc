//! QUIC connection-ID routing (the IETF QUIC-LB draft's plaintext
//! algorithm). A server puts its server ID in the connection IDs it hands
//! out: after the first octet (config rotation in its top three bits, 0
//! here), [`QUIC_SERVER_ID_LEN`] bytes. A short-header packet carries the
//! server's connection ID first: its server ID names the backend, whatever
//! 5-tuple the packet comes from (a client's NAT rebinding, a migration).
//! Long-header packets (the handshake, whose first connection ID the client
//! chose) are balanced by their 5-tuple, as any UDP flow.

use aya_ebpf::programs::XdpContext;
use veer_abi::{Backend, BackendState, GlobalCounter, Service, QUIC_SERVER_ID_LEN};

use crate::{
    access::ptr_at,
    backends::owned_backend,
    forward,
    headers::{eth::EthHdr, l4::UdpHdr},
    parse::VipPacket,
    stats,
    verdict::Drop,
};

/// QUIC's header form bit: set in a long header.
const LONG_HEADER: u8 = 0x80;
/// The config rotation bits of a connection ID's first octet.
const CONFIG_ROTATION: u8 = 0xe0;

/// Sends a QUIC short-header packet to the backend its connection ID
/// names, if it names one of `svc`'s that keeps its flows.
#[inline(always)]
pub fn send(ctx: &XdpContext, svc: &Service, pkt: &VipPacket) -> Option<Result<u32, Drop>> {
    let (id, b) = server(ctx, svc, pkt)?;
    stats::count(GlobalCounter::QuicRouted);
    stats::forwarded(svc.id, id, (ctx.data_end() - ctx.data()) as u64, false);
    Some(forward::to_backend(ctx, id, b, &pkt.key))
}

/// The backend whose server ID the UDP datagram's QUIC short header
/// carries, if it is `svc`'s and keeps its flows.
#[inline(always)]
fn server(ctx: &XdpContext, svc: &Service, pkt: &VipPacket) -> Option<(u32, &'static Backend)> {
    // Bounded here, where the verifier sees it (the offset came through
    // memory): an Ethernet and a full IPv4 header with options at most.
    let l4 = pkt.l4 as usize;
    if l4 > EthHdr::LEN + 60 {
        return None;
    }
    let at = l4 + UdpHdr::LEN;
    // The first byte, the connection ID's first octet, the server ID.
    let head = unsafe { &*ptr_at::<[u8; 2 + QUIC_SERVER_ID_LEN]>(ctx, at).ok()? };
    if head[0] & LONG_HEADER != 0 || head[1] & CONFIG_ROTATION != 0 {
        return None;
    }
    let sid = u16::from_be_bytes([head[2], head[3]]);
    let id = (sid as u32).checked_sub(1)?;
    let b = owned_backend(svc, id)?;
    BackendState::from_u32(b.state).keeps_flows().then_some((id, b))
}
