//! veer's testbed: network namespaces joined by a bridge, real TCP servers in
//! them, crafted frames for `BPF_PROG_TEST_RUN`, and helpers to run code
//! inside a namespace. Used by the integration tests and the demo; everything
//! here needs root.
#![deny(missing_docs)]

pub mod bench;
pub mod control_scale;
pub mod daemon;
pub mod deployment;
pub mod etcd;
pub mod fleet;
pub mod flood;
pub mod frame;
pub mod lab;
pub mod launcher;
pub mod mass_failure;
pub mod netns;
pub mod pairs;
pub mod quic;
pub mod routed;
pub mod seen;
pub mod server;
pub mod topology;
pub mod tunnel_lab;

/// Fails clearly when not root: these tests load BPF programs and make namespaces.
pub fn require_root() {
    assert!(
        unsafe { libc::geteuid() } == 0,
        "this test needs root (BPF, network namespaces); run it through `sudo cargo xtask test`"
    );
}
