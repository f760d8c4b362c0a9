//! Helpers for vnfpool's tests: frames built in code, the program under BPF_PROG_TEST_RUN,
//! and network-namespace labs whose every object is removed on drop.

pub mod harness;
pub mod lab;
pub mod netns;
pub mod packet;
pub mod pins;
