//! The pool table (`VNF_POOLS`): per pool, which slot is live and the shape of each slot.

use crate::{abi_type, addr::Addr};

/// Which slot of a pool is live: the first 8 bytes of [`Pool`], written by the daemon with one
/// aligned 64-bit atomic store through the map's shared mapping. That store is the switch from
/// one mapping to the next.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PoolSel {
    /// Live slot, 0 or 1.
    pub slot: u32,
    /// Generation of the live mapping: increases by one per switch (for inspection and tests).
    pub generation: u32,
}
abi_type!(PoolSel, 8);

/// The shape of one slot's mapping. 16 bytes, written only while the slot is spare.
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

/// Value of `VNF_POOLS`, indexed by pool. 64 bytes, one cache line (the mmap-able array's values
/// start on a page boundary): a packet learns that it is for the pool's VIP, the live slot and
/// its table in one read.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Pool {
    /// The live slot.
    pub sel: PoolSel,
    /// The shape of slot 0 and of slot 1.
    pub slots: [SlotMeta; 2],
    /// First chunk of the pool's region of `VNF_RING` (slot `s` starts at
    /// `ring_region + s * ring_region_chunks`). Read by the daemon only, to adopt the maps
    /// after a restart.
    pub ring_region: u32,
    /// Chunks per slot in the pool's region; 0 before the pool's first mapping.
    pub ring_region_chunks: u32,
    /// The pool's VIP address, compared with a packet's destination when its pre-filter entry
    /// names the pool ([`crate::vip::filter_entry`]). Written before any pre-filter entry names
    /// the pool, and not changed until a grace period after none does.
    pub vip: Addr,
}
abi_type!(Pool, 64);

impl Pool {
    /// Byte offset of `ring_region` (followed by `ring_region_chunks`) in the value.
    pub const REGION_OFFSET: usize = size_of::<PoolSel>() + 2 * size_of::<SlotMeta>();
    /// Byte offset of `vip` in the value.
    pub const VIP_OFFSET: usize = Self::REGION_OFFSET + 2 * size_of::<u32>();

    /// Byte offset of `slots[slot]` in the value.
    #[must_use]
    pub const fn slot_offset(slot: u32) -> usize {
        size_of::<PoolSel>() + (slot as usize & 1) * size_of::<SlotMeta>()
    }
}

/// Index of a pool's slot: the element table of slot `s` of pool `p` starts at
/// `slot_index(p, s) * MAX_ELEMENTS`.
#[inline(always)]
#[must_use]
pub const fn slot_index(pool: u32, slot: u32) -> u32 {
    pool * crate::maps::SLOTS_PER_POOL + (slot & 1)
}
