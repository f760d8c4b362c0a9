//! The kernel/user ABI of vnfpool.
//!
//! Every BPF map key and value that the XDP program (`vnfpool-ebpf`) and the Pool Manager
//! (`vnfpool-daemon`) share is defined here once, with its map name, capacity and layout. The
//! two sides never re-declare a layout: the eBPF crate builds this crate without features, the
//! user side with `user`, which adds the `aya::Pod` impls.
//!
//! # Layout rules
//! - Every type is `#[repr(C)]`, made of fixed-width integers and byte arrays only, with any
//!   padding spelled out as a zeroed `_pad` field (uninitialised padding in a hash key breaks
//!   lookups). A `const` assertion pins each size.
//! - Fields that hold network-order data say so in their name (`_be`) or doc.
//! - IPv4 addresses are stored IPv4-mapped (`::ffff:a.b.c.d`), so one key type serves both
//!   families; see [`addr`].
//!
//! # The mapping and its atomic switch
//! A pool's *mapping* is its Maglev table plus its element table. Each pool owns two
//! *slots*, each holding one complete mapping; [`pool::PoolSel`] names the live one. The
//! Pool Manager writes the spare slot, then flips the selector with one aligned store: a
//! packet reads the selector once, then only that slot, so it sees the old mapping or the new
//! one, never a mix. The writer does not touch a retired slot again until an RCU grace period
//! has passed since the flip, so no packet still running on the old slot can see it being
//! rewritten (XDP programs run inside an RCU read-side section).
#![no_std]
#![deny(missing_docs)]
#![expect(
    clippy::inline_always,
    reason = "the XDP program calls these helpers on its fast path, where every call must be inlined"
)]
#![expect(
    clippy::pub_underscore_fields,
    reason = "explicit padding fields are public so that both sides can build the values with literals"
)]

pub mod addr;
pub mod decap;
pub mod element;
pub mod flow;
pub mod maps;
pub mod pool;
pub mod ring;
pub mod stats;
pub mod tunnel;
pub mod vip;

/// Declares that a map type is plain old data for aya, with its size checked at compile time.
macro_rules! abi_type {
    ($ty:ty, $size:expr) => {
        const _: () = assert!(::core::mem::size_of::<$ty>() == $size && ::core::mem::align_of::<$ty>() <= 8);
        // SAFETY: the type is `#[repr(C)]`, made only of integers and byte arrays, and its
        // size assertion above proves it has no implicit padding.
        #[cfg(feature = "user")]
        unsafe impl aya::Pod for $ty {}
    };
}
pub(crate) use abi_type;
