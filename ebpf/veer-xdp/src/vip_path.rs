//! VIP-path health checks (DSR): a probe to `VIP:port`, sent the way real
//! traffic goes, to one backend's MAC (or, behind a router, inside its
//! tunnel: [`tunnel::probe`]).
//!
//! veerd marks each probe's socket with `VIP_PATH_MARK | backend id` and
//! routes marked packets for the VIP out of the backends' interface (a
//! policy rule and table). This TC egress program then sets the frame's
//! destination MAC to that backend's, as `forward` does for client packets.
//! A backend that lost the VIP from its loopback drops the probe (or
//! resets it) and fails its check, instead of passing while it drops the
//! clients' traffic.

use aya_ebpf::programs::TcContext;
use veer_abi::{VIP_PATH_MARK, VIP_PATH_MASK};

use crate::{backends::backend, tunnel};

const TC_ACT_OK: i32 = 0;
const TC_ACT_SHOT: i32 = 2;

/// Readdresses a marked probe frame; any other frame leaves untouched.
#[inline(always)]
pub fn readdress(ctx: &TcContext) -> i32 {
    let mark = unsafe { (*ctx.skb.skb).mark };
    if mark & VIP_PATH_MASK != VIP_PATH_MARK {
        return TC_ACT_OK;
    }
    let Some(b) = backend(mark & !VIP_PATH_MASK) else { return TC_ACT_SHOT };
    // Behind a router: inside the tunnel, as the clients' packets go.
    if b.encap != veer_abi::ENCAP_NONE {
        return tunnel::probe::encapsulate(ctx, b);
    }
    if b.mac == [0; 6] {
        // Not resolved yet: the probe fails, as it should.
        return TC_ACT_SHOT;
    }
    if ctx.store(0, &b.mac, 0).is_err() {
        return TC_ACT_SHOT;
    }
    if b.src_mac != [0; 6] && ctx.store(6, &b.src_mac, 0).is_err() {
        return TC_ACT_SHOT;
    }
    TC_ACT_OK
}
