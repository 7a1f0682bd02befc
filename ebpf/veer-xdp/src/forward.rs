//! DSR forwarding: only the Ethernet header changes, or (a routed backend)
//! the packet goes inside a tunnel header ([`tunnel`]).
//!
//! The backend holds the VIP on its loopback and answers the client directly,
//! so the IP packet goes out as it came in, addressed to the backend's MAC.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use veer_abi::{Backend, FlowKey, GlobalCounter, ENCAP_NONE};

use crate::{
    access::{mut_ptr_at, ptr_at},
    fib::TX_PORTS,
    headers::{
        eth::EthHdr,
        field::{self, mac, set_mac},
    },
    stats, tunnel,
    verdict::Drop,
};

/// Rewrites the frame of flow `key` towards backend `id`, `backend`, and
/// returns the XDP action that sends it.
#[inline(always)]
pub fn to_backend(ctx: &XdpContext, id: u32, backend: &Backend, key: &FlowKey) -> Result<u32, Drop> {
    if backend.encap != ENCAP_NONE {
        return Ok(tunnel::send(ctx, id, backend, key));
    }
    let eth = unsafe { &mut *mut_ptr_at::<EthHdr>(ctx, 0)? };
    let ingress = unsafe { (*ctx.ctx).ingress_ifindex };
    // Both MACs by words: byte by byte, a MAC copy is twelve instructions.
    let to = mac(&backend.mac);
    if backend.ifindex == 0 || backend.ifindex == ingress {
        // Back out of the interface it came in on, from that interface's own
        // MAC (the frame may have been sent to a multicast or another MAC).
        let own = mac(&backend.src_mac);
        if own != (0, 0) {
            set_mac(&mut eth.src, own);
        } else if eth.dst[0] & 1 == 0 {
            set_mac(&mut eth.src, mac(&eth.dst));
        } else {
            // The interface's MAC unknown, and the frame was sent to a group
            // address, which is never a valid source.
            return Err(Drop::Malformed);
        }
        set_mac(&mut eth.dst, to);
        stats::count(GlobalCounter::Transmitted);
        return Ok(xdp_action::XDP_TX);
    }
    set_mac(&mut eth.src, mac(&backend.src_mac));
    set_mac(&mut eth.dst, to);
    let action = TX_PORTS.redirect(backend.ifindex, 0).map_err(|_| Drop::Redirect)?;
    stats::count(GlobalCounter::Redirected);
    Ok(action)
}

/// Whether the frame comes from `mac`: a packet sent to that backend and
/// bounced back by its agent (no socket there owns it), MACs swapped.
#[inline(always)]
pub fn sent_back_by(ctx: &XdpContext, mac: &[u8; 6]) -> bool {
    match ptr_at::<EthHdr>(ctx, 0) {
        // SAFETY: bounds-checked by `ptr_at`.
        Ok(eth) => field::mac(unsafe { &(*eth).src }) == field::mac(mac),
        Err(_) => false,
    }
}
