//! Shared mappings of the mmap-able arrays (`BPF_F_MMAPABLE`).
//!
//! aya 0.14 has neither batch updates nor array mmap; writing a 65537-position Maglev table
//! one `bpf(BPF_MAP_UPDATE_ELEM)` at a time takes tens of milliseconds, a shared mapping takes
//! tens of microseconds. This module is the only `unsafe` of the daemon, and what it relies on
//! is stated at each block.
#![expect(unsafe_code, reason = "mmap of BPF arrays; see the module docs")]

use std::{
    os::fd::{AsFd, AsRawFd},
    sync::atomic::{AtomicU64, Ordering},
};

use aya::Pod;
use memmap2::{MmapOptions, MmapRaw};

/// One mmap-able BPF array, seen as `entries` values of `T`.
///
/// The kernel lays array values out at a stride of `size_of::<T>()` rounded up to 8
/// ([`kernel/bpf/arraymap.c` `array_map_alloc`](https://github.com/torvalds/linux/blob/v6.12/kernel/bpf/arraymap.c#L91)).
pub struct MappedArray<T> {
    map: MmapRaw,
    entries: u32,
    stride: usize,
    _marker: std::marker::PhantomData<T>,
}

impl<T: Pod> MappedArray<T> {
    /// Maps the array behind `fd`, which has `entries` values.
    pub fn new(fd: impl AsFd, entries: u32) -> std::io::Result<Self> {
        let stride = size_of::<T>().next_multiple_of(8);
        let len = stride * entries as usize;
        let map = MmapOptions::new().len(len).map_raw(fd.as_fd().as_raw_fd())?;
        Ok(Self {
            map,
            entries,
            stride,
            _marker: std::marker::PhantomData,
        })
    }

    /// Number of values.
    #[must_use]
    pub fn len(&self) -> u32 {
        self.entries
    }

    /// Whether the array has no values.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    fn slot(&self, index: u32) -> *mut u8 {
        assert!(
            index < self.entries,
            "index {index} out of {} entries",
            self.entries
        );
        // SAFETY: index < entries, so the offset lies inside the mapping of stride * entries bytes.
        unsafe { self.map.as_mut_ptr().add(index as usize * self.stride) }
    }

    /// Writes a value that no BPF program can be reading (a spare slot's entry).
    pub fn write(&mut self, index: u32, value: &T) {
        let dst = self.slot(index).cast::<T>();
        // SAFETY: `slot` checked bounds; entries are 8-aligned (page-aligned base, stride a
        // multiple of 8 and align_of::<T>() <= 8 by the ABI assertions). The caller writes
        // only entries that no running program reads (spare slots after a grace period), so
        // this plain write races with nothing.
        unsafe { dst.write(*value) }
    }

    /// Writes consecutive values starting at `first`.
    pub fn write_all(&mut self, first: u32, values: &[T]) {
        let count = u32::try_from(values.len()).expect("fewer than 2^32 values");
        assert!(
            first.checked_add(count).is_some_and(|end| end <= self.entries),
            "range out of bounds"
        );
        if self.stride == size_of::<T>() {
            let dst = self.slot(first).cast::<T>();
            // SAFETY: bounds checked above; the stride equals the size, so the values are
            // contiguous in the mapping exactly as in the slice; same race argument as `write`.
            unsafe { std::ptr::copy_nonoverlapping(values.as_ptr(), dst, values.len()) }
        } else {
            for (i, v) in (first..).zip(values) {
                self.write(i, v);
            }
        }
    }

    /// Reads a value (for inspection; may race with a concurrent writer of the same entry).
    #[must_use]
    pub fn read(&self, index: u32) -> T {
        let src = self.slot(index).cast::<T>();
        // SAFETY: bounds and alignment as in `write`; a volatile read of plain-old-data.
        unsafe { src.read_volatile() }
    }
}

impl<T: Pod> MappedArray<T> {
    /// Writes `part` at byte `offset` of entry `index`, leaving the rest of the entry alone
    /// (one slot's shape inside a pool entry); same race argument as `write`.
    pub fn write_part<U: Pod>(&mut self, index: u32, offset: usize, part: &U) {
        assert!(
            offset + size_of::<U>() <= size_of::<T>(),
            "part outside the entry"
        );
        // SAFETY: inside the entry (asserted) hence inside the mapping.
        let dst = unsafe { self.slot(index).add(offset) };
        assert!(dst.align_offset(align_of::<U>()) == 0, "part misaligned");
        // SAFETY: in bounds and aligned (asserted above); U is plain old data.
        unsafe { dst.cast::<U>().write(*part) }
    }

    /// Stores the 8-byte `value` over the first 8 bytes of entry `index` with one atomic
    /// store: the switch of a live mapping.
    pub fn store_atomic<U: Pod>(&self, index: u32, value: &U) {
        const { assert!(size_of::<U>() == 8) };
        let mut word = [0u8; 8];
        // SAFETY: U is Pod and exactly 8 bytes (asserted above).
        unsafe {
            std::ptr::copy_nonoverlapping(std::ptr::from_ref(value).cast::<u8>(), word.as_mut_ptr(), 8);
        };
        // SAFETY: the entry is 8 bytes at an 8-aligned address inside the mapping (see `write`),
        // which is what AtomicU64 requires; the kernel side reads it with plain loads, which on
        // every architecture BPF runs on see either the old or the new aligned word.
        let ptr = self.slot(index);
        assert!(
            ptr.align_offset(align_of::<AtomicU64>()) == 0,
            "entry {index} not 8-aligned"
        );
        #[expect(clippy::cast_ptr_alignment, reason = "alignment asserted just above")]
        let atomic = unsafe { &*ptr.cast::<AtomicU64>() };
        atomic.store(u64::from_ne_bytes(word), Ordering::Release);
    }
}

impl<T: Pod> MappedArray<T> {
    fn word(&self, index: u32, word: usize) -> &AtomicU64 {
        assert!((word + 1) * 8 <= size_of::<T>(), "word {word} outside the entry");
        // SAFETY: inside the entry (asserted) hence inside the mapping.
        let ptr = unsafe { self.slot(index).add(word * 8) };
        assert!(
            ptr.align_offset(align_of::<AtomicU64>()) == 0,
            "word {word} of entry {index} not 8-aligned"
        );
        // SAFETY: an 8-aligned 8-byte word inside the mapping, which lives as long as `self`;
        // the program accesses it with aligned 8-byte loads and stores only (the flow table's
        // ways), so atomic accesses from this side never tear and are never torn.
        #[expect(clippy::cast_ptr_alignment, reason = "alignment asserted just above")]
        unsafe {
            &*ptr.cast::<AtomicU64>()
        }
    }

    /// The 64-bit word `word` of entry `index`, with one atomic load (an entry that the program
    /// writes concurrently, word by word).
    #[must_use]
    pub fn load_word(&self, index: u32, word: usize) -> u64 {
        self.word(index, word).load(Ordering::Relaxed)
    }

    /// Stores `value` into the 64-bit word `word` of entry `index` with one atomic store: a
    /// concurrent reader sees the old word or the new one.
    pub fn store_word(&self, index: u32, word: usize, value: u64) {
        self.word(index, word).store(value, Ordering::Release);
    }
}

// SAFETY: the mapping is plain shared memory; access is coordinated by the single writer.
unsafe impl<T> Send for MappedArray<T> {}
// SAFETY: what `&self` allows is volatile reads and atomic word accesses (`read`,
// `store_atomic`, `load_word`, `store_word`), which the kernel's own concurrent accesses
// already have to tolerate; plain writes need `&mut self`.
unsafe impl<T> Sync for MappedArray<T> {}
