//! The vnfpool XDP program is the `vnfpool` binary of this crate (`src/main.rs`); this empty
//! library exists so that cargo's build graph can name the crate as a build dependency.
#![no_std]
