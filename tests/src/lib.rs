//! Helpers for vnfpool's tests: frames built in code, the program under `BPF_PROG_TEST_RUN`,
//! and network-namespace labs whose every object is removed on drop.

#![expect(
    clippy::missing_panics_doc,
    clippy::missing_errors_doc,
    reason = "test support: helpers fail by panicking with context (STYLE rule 15)"
)]

pub mod bird;
pub mod cluster_lab;
pub mod cpu;
pub mod daemon;
pub mod demo;
pub mod encap;
pub mod etcd;
pub mod flood;
pub mod harness;
pub mod lab;
pub mod load;
pub mod netns;
pub mod packet;
pub mod pins;
pub mod pki;
pub mod plot;
pub mod registration;
pub mod scrape;
pub mod service;
pub mod tmux;
pub mod traffic;
pub mod unit;
pub mod unprivileged;

/// The path of `name`, another binary of this crate built beside the running one (the
/// benchmarks run the daemon and the element services as processes of their own).
#[must_use]
pub fn sibling_binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let path = exe.with_file_name(name);
    assert!(
        path.exists(),
        "{} missing: build the workspace's binaries first (cargo xtask bench does)",
        path.display()
    );
    path
}
