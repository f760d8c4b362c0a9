//! vnfpool's Pool Manager: pure decision logic (`model`) and the one module that touches BPF
//! (`dataplane`).
#![deny(unsafe_code)]
#![expect(
    clippy::missing_errors_doc,
    clippy::missing_panics_doc,
    reason = "an application library: each module's error enum documents its cases once; panics \
              are invariant checks, not inputs"
)]

pub mod agent;
pub mod announce;
pub mod api;
pub mod app;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod control;
pub mod controller;
pub mod dataplane;
pub mod decap;
pub mod entry;
pub mod events;
pub mod flowsync;
pub mod health;
pub mod heartbeat;
pub mod listen;
pub mod local;
pub mod manual;
pub mod metrics;
pub mod model;
pub mod mptcp;
pub mod registry;
pub mod resolve;
pub mod store;
pub mod systemd;
pub mod telemetry;
pub mod timer;
pub mod watch;
