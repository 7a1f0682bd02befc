//! Minimal XDP programs: the baseline that benchmarks compare veer against,
//! and the `XDP_PASS` program a veth peer needs so that frames sent to it
//! with `XDP_TX`/`XDP_REDIRECT` in native mode are delivered (veth drops them
//! otherwise).
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::Array,
    programs::XdpContext,
};
use veer_abi::MinimalDsr;

/// `veer_dsr`'s VIP and backend.
#[map]
static MINIMAL_DSR: Array<MinimalDsr> = Array::with_max_entries(1, 0);

/// Passes every frame to the kernel.
#[xdp]
pub fn veer_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Sends every frame back out with its MAC addresses swapped.
#[xdp]
pub fn veer_tx(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    if start + 12 > ctx.data_end() {
        return xdp_action::XDP_DROP;
    }
    let eth = start as *mut [u8; 6];
    // SAFETY: 12 bytes checked above.
    unsafe {
        let dst = *eth;
        *eth = *eth.add(1);
        *eth.add(1) = dst;
    }
    xdp_action::XDP_TX
}

/// The least a DSR balancer does: an IPv4 packet to the VIP goes back out
/// to the one backend's MAC; anything else is the kernel's.
#[xdp]
pub fn veer_dsr(ctx: XdpContext) -> u32 {
    let start = ctx.data();
    // Ethernet (14) and the IPv4 header up to its destination (20).
    if start + 34 > ctx.data_end() {
        return xdp_action::XDP_PASS;
    }
    let Some(cfg) = MINIMAL_DSR.get(0) else {
        return xdp_action::XDP_PASS;
    };
    let frame = start as *mut u8;
    // SAFETY: 34 bytes checked above.
    unsafe {
        if *frame.add(12) != 0x08 || *frame.add(13) != 0x00 || *(frame.add(30) as *const [u8; 4]) != cfg.vip {
            return xdp_action::XDP_PASS;
        }
        let eth = frame as *mut [u8; 6];
        *eth.add(1) = *eth;
        *eth = cfg.backend_mac;
    }
    xdp_action::XDP_TX
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
