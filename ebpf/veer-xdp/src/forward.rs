//! DSR forwarding: only the Ethernet header changes.
//!
//! The backend holds the VIP on its loopback and answers the client directly,
//! so the IP packet goes out as it came in, addressed to the backend's MAC.

use aya_ebpf::{bindings::xdp_action, macros::map, maps::DevMapHash, programs::XdpContext};
use veer_abi::{Backend, GlobalCounter, MAX_TX_PORTS};

use crate::{
    access::{mut_ptr_at, ptr_at},
    headers::eth::{copy_mac, EthHdr},
    stats,
    verdict::Drop,
};

/// The interfaces a frame may leave by other than the one it came in on
/// (`XDP_REDIRECT`), by ifindex; veerd adds the backends' and routes'.
#[map]
pub static TX_PORTS: DevMapHash = DevMapHash::with_max_entries(MAX_TX_PORTS, 0);

/// Rewrites the frame towards `backend` and returns the XDP action that sends it.
#[inline(always)]
pub fn to_backend(ctx: &XdpContext, backend: &Backend) -> Result<u32, Drop> {
    let eth = unsafe { &mut *mut_ptr_at::<EthHdr>(ctx, 0)? };
    let ingress = unsafe { (*ctx.ctx).ingress_ifindex };
    if backend.ifindex == 0 || backend.ifindex == ingress {
        // Back out of the interface it came in on, from that interface's own
        // MAC (the frame may have been sent to a multicast or another MAC).
        if backend.src_mac != [0; 6] {
            copy_mac(&mut eth.src, &backend.src_mac);
        } else if eth.dst[0] & 1 == 0 {
            let dst = eth.dst;
            copy_mac(&mut eth.src, &dst);
        } else {
            // The interface's MAC unknown, and the frame was sent to a group
            // address, which is never a valid source.
            return Err(Drop::Malformed);
        }
        copy_mac(&mut eth.dst, &backend.mac);
        stats::count(GlobalCounter::Transmitted);
        return Ok(xdp_action::XDP_TX);
    }
    copy_mac(&mut eth.src, &backend.src_mac);
    copy_mac(&mut eth.dst, &backend.mac);
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
        Ok(eth) => unsafe { (*eth).src == *mac },
        Err(_) => false,
    }
}
