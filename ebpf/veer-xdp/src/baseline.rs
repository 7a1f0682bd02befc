//! Minimal XDP programs: the baseline that benchmarks compare veer against,
//! and the `XDP_PASS` program a veth peer needs so that frames sent to it
//! with `XDP_TX`/`XDP_REDIRECT` in native mode are delivered (veth drops them
//! otherwise).
#![no_std]
#![no_main]

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

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

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
