//! NAT's programs for SYN cookies and ICMP errors (tail-called; each has a
//! stack of its own). `veer_nat` and `veer_nat_return` are in the crate root.

use aya_ebpf::{macros::xdp, programs::XdpContext};

use crate::verdict::verdict;

/// A NAT service's SYN answered with a cookie, or a TCP packet for no NAT
/// flow (tail-called from `veer_nat`; see [`super::syn_cookie`]).
#[xdp]
pub fn veer_nat_cookie(ctx: XdpContext) -> u32 {
    verdict(super::syn_cookie::program(&ctx))
}

/// A backend's packet to a NAT connection veer's SYN proxy opened
/// (tail-called from `veer_nat_return`).
#[xdp]
pub fn veer_nat_cookie_return(ctx: XdpContext) -> u32 {
    verdict(super::syn_cookie::return_program(&ctx))
}

/// An ICMP error about a NAT packet toward a backend, on to the client
/// (tail-called; one program per direction and family keeps each within
/// its stack).
#[xdp]
pub fn veer_nat_icmp_client4(ctx: XdpContext) -> u32 {
    verdict(super::icmp::translate_error::<false, true>(&ctx))
}

/// IPv6 of [`veer_nat_icmp_client4`].
#[xdp]
pub fn veer_nat_icmp_client6(ctx: XdpContext) -> u32 {
    verdict(super::icmp::translate_error::<false, false>(&ctx))
}

/// An ICMP error about a NAT answer toward a client, on to the backend.
#[xdp]
pub fn veer_nat_icmp_backend4(ctx: XdpContext) -> u32 {
    verdict(super::icmp::translate_error::<true, true>(&ctx))
}

/// IPv6 of [`veer_nat_icmp_backend4`].
#[xdp]
pub fn veer_nat_icmp_backend6(ctx: XdpContext) -> u32 {
    verdict(super::icmp::translate_error::<true, false>(&ctx))
}
