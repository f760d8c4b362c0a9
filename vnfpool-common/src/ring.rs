//! The Maglev table arena (`VNF_RING`).
//!
//! Each pool slot's table occupies `ceil(ring_size / 4)` consecutive chunks starting at its
//! [`crate::pool::SlotMeta::ring_offset`]; position `p` is lane `p % 4` of chunk
//! `ring_offset + p / 4`. Four `u16` lanes per chunk fill the 8 bytes that an array entry
//! takes anyway, so a 65537-entry table costs 128 KiB.

use crate::abi_type;

/// Positions per chunk.
pub const LANES: u32 = 4;

/// Value of `VNF_RING`: four table positions, each an element index. 8 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RingChunk {
    /// Element indices of four consecutive positions.
    pub elements: [u16; 4],
}
abi_type!(RingChunk, 8);

/// Chunks needed by a table of `ring_size` positions.
#[inline(always)]
#[must_use]
pub const fn chunks(ring_size: u32) -> u32 {
    ring_size.div_ceil(LANES)
}

/// Position of a flow in a table of `ring_size` positions: maps the 32-bit flow hash onto
/// `0..ring_size` with a multiply and a shift (no division on the fast path).
#[inline(always)]
#[must_use]
pub const fn position(hash: u32, ring_size: u32) -> u32 {
    ((hash as u64 * ring_size as u64) >> 32) as u32
}
