//! Pure decision logic: values in, values out; no I/O, no clock, no BPF.

pub mod failover;
pub mod health;
pub mod maglev;
pub mod placement;
pub mod plan;
pub mod roles;
pub mod spec;
#[cfg(test)]
pub(crate) mod testutil;
