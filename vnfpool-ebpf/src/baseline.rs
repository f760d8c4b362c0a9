//! Reference programs for `cargo xtask bench`: the cost floor that vnfpool's figures are
//! measured against, run on the same frames in the same process.
#![no_std]
#![no_main]

use aya_ebpf::{
    Global, bindings::xdp_action, helpers::generated::bpf_redirect, macros::xdp, programs::XdpContext,
};

/// The interface `baseline_redirect` sends every frame to; written by the loader.
#[unsafe(no_mangle)]
static REDIRECT_IFINDEX: Global<u32> = Global::new(0);

/// Passes every frame: the floor for traffic vnfpool passes.
#[xdp]
pub fn baseline_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Sends every frame back out: the floor for traffic vnfpool transmits.
#[xdp]
pub fn baseline_tx(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_TX
}

/// Redirects every frame to `REDIRECT_IFINDEX`: the floor for traffic vnfpool redirects to an
/// element (the forwarding-rate benchmark, through real interfaces).
#[xdp]
pub fn baseline_redirect(_ctx: XdpContext) -> u32 {
    // SAFETY: a helper call with plain integer arguments.
    unsafe { bpf_redirect(REDIRECT_IFINDEX.load(), 0) as u32 }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
