//! Pure decision logic: values in, values out; no I/O, no clock, no BPF.

pub mod maglev;
pub mod spec;
