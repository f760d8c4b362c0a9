//! vnfpool's Pool Manager: pure decision logic (`model`) and the one module that touches BPF
//! (`dataplane`).
#![deny(unsafe_code)]

pub mod app;
pub mod cli;
pub mod config;
pub mod control;
pub mod dataplane;
pub mod entry;
pub mod health;
pub mod model;
pub mod resolve;
pub mod store;
pub mod telemetry;
