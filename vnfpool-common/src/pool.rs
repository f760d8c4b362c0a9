//! The slot selector (`VNF_POOLS`) and the per-slot metadata (`VNF_SLOTS`).

use crate::abi_type;

/// Value of `VNF_POOLS`, indexed by pool: which slot is live. 8 bytes, written by the daemon
/// with one aligned 64-bit atomic store through the map's shared mapping: that store is the
/// switch from one mapping to the next.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PoolSel {
    /// Live slot, 0 or 1.
    pub slot: u32,
    /// Generation of the live mapping: increases by one per switch (for inspection and tests).
    pub generation: u32,
}
abi_type!(PoolSel, 8);

/// Value of `VNF_SLOTS`, indexed by [`slot_index`]: the shape of one slot's mapping. 16 bytes,
/// written only while the slot is spare.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SlotMeta {
    /// First [`crate::ring::RingChunk`] of this slot's Maglev table in `VNF_RING`.
    pub ring_offset: u32,
    /// Positions in the Maglev table (a prime); 0 means the pool has no usable element.
    pub ring_size: u32,
    /// Elements present in this slot's element table.
    pub elements: u32,
    /// Generation of the mapping held in this slot.
    pub generation: u32,
}
abi_type!(SlotMeta, 16);

/// Index of a pool's slot in `VNF_SLOTS`.
#[inline(always)]
#[must_use]
pub const fn slot_index(pool: u32, slot: u32) -> u32 {
    pool * crate::maps::SLOTS_PER_POOL + (slot & 1)
}
