//! The flow-affinity table (`VNF_FLOWS`) and the flow hash.
//!
//! # Layout: an 8-way set-associative table of 64-byte buckets
//! The table is an mmap-able `ARRAY` of [`FlowBucket`]s (mmap-able so that the kernel
//! page-aligns its values: a plain array's would straddle two lines), each one cache line
//! holding eight 64-bit entries. A flow lives in bucket `hash64 & (buckets - 1)`, in any of its
//! eight ways; an entry packs a 43-bit fingerprint of the flow, the bucket's 3-bit clock hand
//! (way 0 only), an 8-bit coarse timestamp and the 10-bit element index ([`entry`]). A lookup
//! reads one cache line and compares at most eight words; an insert writes one word (two into
//! a full bucket: the way, then the hand) with aligned 64-bit stores, so concurrent CPUs never
//! see a torn entry and no lock is taken.
//!
//! Ways fill from the lowest and are only ever overwritten (nothing clears an entry), so a
//! bucket's used ways are a prefix of it and the first empty way is their count.
//!
//! Replacement approximates least-recently-used within the bucket with a clock (second
//! chance), at a granularity of `2^`[`STAMP_SHIFT`] jiffies (4.1 s at HZ=250): a hit refreshes
//! its entry's stamp when it has changed, and a new flow takes an empty way, else the first way
//! from the bucket's hand on that has not been used for [`RECENT`] units, else the hand's way;
//! the hand then moves past it ([`FlowBucket::victim`]). So a flow used in the last 4.1 s is
//! never replaced while its bucket holds one idle for more than 8.2 s, and among idle flows the
//! one written longest ago goes first. The exact oldest way cost 20–30 ns more per new flow
//! into a full table: comparing eight stamps mispredicts once the bucket arrives
//! (docs/decisions/2026-11-28-full-bucket-clock.md).
//! The kernel's `LRU_HASH` approximates recency too (reference bits, per-CPU lists), with two
//! spin locks, a free-list pop and cold list nodes per insert (several hundred nanoseconds on a
//! 1M-entry table); this layout costs one cache line.
//!
//! Two CPUs storing into the same way at the same instant keep one of the two entries (a new
//! flow into a full bucket stores twice: its way, then the hand in way 0); a flow whose entry
//! is lost so takes the same element from the Maglev table on its next packet (unless the
//! table changed in between) and is recorded again.

use crate::{abi_type, addr::Addr};

/// A client flow to one pool: the input of the flow hash (it is not stored). 24 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    /// Client (source) address.
    pub src: Addr,
    /// Client (source) port, network byte order.
    pub sport_be: u16,
    /// VIP (destination) port, network byte order.
    pub dport_be: u16,
    /// Pool index.
    pub pool: u16,
    /// L4 protocol.
    pub proto: u8,
    /// Always 0.
    pub _pad: u8,
}
abi_type!(FlowKey, 24);

/// Entries per bucket.
pub const WAYS: usize = 8;

/// Value of `VNF_FLOWS`: one bucket, one cache line. 64 bytes.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowBucket {
    /// Packed entries ([`entry`]); 0 is an empty way.
    pub ways: [u64; WAYS],
}
abi_type!(FlowBucket, 64);

/// Where a flow's fingerprint is in a bucket, or where a new flow would go ([`FlowBucket::find`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Way {
    /// The flow's entry, in this way.
    Hit(usize, u64),
    /// Not there; this way is the first empty one.
    Empty(usize),
    /// Not there, and every way is used: a new flow takes [`FlowBucket::victim`].
    Full,
}

impl FlowBucket {
    /// Looks for fingerprint `fp` in the bucket.
    ///
    /// Used ways are a prefix of the bucket (module docs), so the first empty way is the count
    /// of used ones: counted without a branch, as where the prefix ends differs from bucket to
    /// bucket and a loop that stopped there would mispredict its exit on most new flows.
    #[inline(always)]
    #[must_use]
    pub fn find(&self, fp: u64) -> Way {
        let mut used = 0;
        let mut way = 0;
        while way < WAYS {
            let entry = self.ways[way];
            // An empty way never matches: fingerprints have their top bit set.
            if entry_fingerprint(entry) == fp {
                return Way::Hit(way, entry);
            }
            // Every entry has its top bit set (the fingerprint's), an empty way none.
            used += (entry >> 63) as usize;
            way += 1;
        }
        if used < WAYS { Way::Empty(used) } else { Way::Full }
    }

    /// The way a new flow takes in a full bucket at time `now` (a stamp): from the clock hand
    /// ([`hand`]) on, the first way not used for [`RECENT`] stamp units, else the hand's way.
    ///
    /// The hand rotates over the ways as they are replaced, so it names the way written longest
    /// ago; a way used since gets a second chance. The choice depends on the bucket's data only
    /// through the hand and one way's stamp, whose comparison is almost always "not recent":
    /// nothing to mispredict once the bucket's cache miss resolves.
    #[inline(always)]
    #[must_use]
    pub fn victim(&self, now: u64) -> usize {
        let hand = hand(self.ways[0]);
        let mut i = 0;
        while i < WAYS {
            let way = (hand + i) & (WAYS - 1);
            if age(entry_stamp(self.ways[way]), now) >= RECENT {
                return way;
            }
            i += 1;
        }
        hand
    }
}

/// Value of `VNF_FLOW_CTL` (one entry): what a packet needs to use the flow table. 40 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowCtl {
    /// Buckets in `VNF_FLOWS` minus one (they are a power of two). Written by the loader
    /// before the program is attached, never after.
    pub bucket_mask: u32,
    /// The current stamp ([`stamp`]), refreshed by packets that insert a flow and read by
    /// those that hit one, so that hits need no clock read. Written by the program.
    pub stamp: u32,
    /// How the table's entries are packed and placed ([`ENTRY_LAYOUT`] of the build that
    /// created it).
    /// Written by the loader with the mask; a daemon refuses to adopt a table packed another
    /// way, whose entries it would no longer match.
    pub entry_layout: u32,
    /// [`EVENTS_ON`] when the program emits a [`FlowEvent`] on `VNF_FLOW_EVENTS` for every flow
    /// it records; 0 (the loader's value) when it emits none. Written by the daemon (flow sync
    /// between cluster nodes); read by packets that record a flow, in the line they read anyway.
    pub events: u32,
    /// The secret key of the flow hash ([`hash64`]), so that no one outside can compute which
    /// flows share a bucket. Written by the loader with the mask (a table's entries are only
    /// found with the key they were recorded with), never after.
    pub hash_key: HashKey,
    /// The flood guard: the most flows one CPU records in one stamp unit ([`FlowGuard`]); 0
    /// records every flow. Written by the loader.
    pub new_flows_per_unit: u32,
    /// Always 0.
    pub _pad: u32,
}
abi_type!(FlowCtl, 40);

/// Value of `VNF_FLOW_GUARD` (one entry, per CPU): how many flows this CPU recorded in stamp
/// unit `unit`. 8 bytes.
///
/// Past [`FlowCtl::new_flows_per_unit`] in a unit, a new flow is still forwarded to the element
/// its Maglev position names, but not recorded: a flood of new flows (spoofed SYNs, random UDP
/// sources) then cannot push the established flows out of the table. The budget is counted in
/// stamp units because that is the table's own clock: a flow not used for [`RECENT`] units is
/// what an insert may replace, so what protects live flows is a bound on inserts per unit,
/// whatever the kernel's HZ.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowGuard {
    /// The stamp unit counted ([`stamp`]).
    pub unit: u32,
    /// Flows recorded by this CPU in `unit`.
    pub recorded: u32,
}
abi_type!(FlowGuard, 8);

/// The default flood guard ([`FlowCtl::new_flows_per_unit`]) of a table of `buckets` buckets
/// for `cpus` CPUs: one insert per bucket per unit, shared out between the CPUs.
/// Over the [`RECENT`] window that is at most two inserts per bucket on average (of eight ways),
/// so established flows keep their ways under any flood; it is also about what a table of that
/// size can hold without replacing flows in use.
#[must_use]
pub const fn default_guard(buckets: u32, cpus: u32) -> u32 {
    let per_cpu = buckets / if cpus == 0 { 1 } else { cpus };
    if per_cpu == 0 { 1 } else { per_cpu }
}

/// Whether a CPU whose guard is `guard` may record one more flow at stamp `now` under
/// `budget` ([`FlowCtl::new_flows_per_unit`], 0: no limit); counts it if so.
#[inline(always)]
pub fn guard_admits(guard: &mut FlowGuard, now: u64, budget: u32) -> bool {
    if budget == 0 {
        return true;
    }
    let unit = now as u32;
    if guard.unit != unit {
        guard.unit = unit;
        guard.recorded = 0;
    }
    if guard.recorded >= budget {
        return false;
    }
    guard.recorded += 1;
    true
}

/// [`FlowCtl::events`] value that turns flow events on.
pub const EVENTS_ON: u32 = 1;

/// One record of `VNF_FLOW_EVENTS`, and of the flow-sync wire format: a flow entry as a peer
/// node needs it to hold the same entry. 16 bytes.
///
/// A peer puts the entry in bucket `hash & its_mask`, with fingerprint [`fingerprint`]`(hash)`,
/// in whatever way its own bucket has free ([`FlowBucket::find`], [`FlowBucket::victim`]): the
/// way is not part of the record, so tables of different occupancy (or size) agree on it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FlowEvent {
    /// The flow's [`hash64`]. In an event from the program every bit is exact; in one read back
    /// from a table ([`from_entry`]) only what places the entry is: the low
    /// [`Self::exact_bits`] bits (the bucket) and the [`fingerprint`] (bits [`FP_SHIFT`] up to
    /// 62); the bits in between are 0.
    pub hash: u64,
    /// Pool index (below [`crate::maps::MAX_POOLS`]).
    pub pool: u16,
    /// Element index (below [`crate::maps::MAX_ELEMENTS`]).
    pub element: u16,
    /// How many low bits of `hash` are exact besides the fingerprint's: 64 from the program, the
    /// bucket index's width from a table scan (64 when that reaches [`FP_SHIFT`]). A table whose
    /// bucket index is wider cannot place the entry ([`placeable`]).
    pub exact_bits: u8,
    /// Stamp units since the flow was last used on the sender ([`age`]): 0 from the program.
    /// A peer stamps its entry that much in the past, so re-sending an entry never makes it
    /// look more recent than it is.
    pub age: u8,
    /// Always 0.
    pub _pad: [u8; 2],
}
abi_type!(FlowEvent, 16);

/// The entry `entry` found in bucket `bucket` of a table with `bucket_mask` at stamp `now`, as
/// an event of pool `pool` (the table does not hold pools: the caller knows it or sends
/// [`NO_POOL`]).
#[must_use]
pub const fn from_entry(entry: u64, bucket: u32, bucket_mask: u32, now: u64, pool: u16) -> FlowEvent {
    let width = 32 - bucket_mask.leading_zeros();
    FlowEvent {
        // The fingerprint's marker bit lands on bit 63, which `fingerprint` sets anyway.
        hash: (entry_fingerprint(entry) << FP_SHIFT) | (bucket & bucket_mask) as u64,
        pool,
        element: entry_element(entry) as u16,
        exact_bits: if width >= FP_SHIFT { 64 } else { width as u8 },
        age: age(entry_stamp(entry), now) as u8,
        _pad: [0; 2],
    }
}

/// [`FlowEvent::pool`] of an entry read back from a table, which does not record pools.
pub const NO_POOL: u16 = u16::MAX;

/// Whether a table whose bucket mask is `bucket_mask` can place `event` in the bucket the
/// flow's own hash names (see [`FlowEvent::exact_bits`]).
#[must_use]
pub const fn placeable(event: &FlowEvent, bucket_mask: u32) -> bool {
    32 - bucket_mask.leading_zeros() <= event.exact_bits as u32
}

/// The packing of [`entry`] and the flow hash that places entries: raised whenever a field
/// moves or changes width, or [`hash64`] changes (2: the hash takes an IPv4 flow's 11 bytes).
pub const ENTRY_LAYOUT: u32 = 2;

/// Bits of an entry holding the element index.
pub const ELEMENT_BITS: u32 = 10;
/// Bits of an entry holding the coarse timestamp.
pub const STAMP_BITS: u32 = 8;
/// A stamp counts units of `2^STAMP_SHIFT` jiffies: 4.1 s at HZ=250 (1.0 s at HZ=1000, 10.2 s
/// at HZ=100); it wraps after 256 units. Jiffies because the verifier turns `bpf_jiffies64`
/// into one load, where a nanosecond clock is a helper call (about 10 ns per new flow).
pub const STAMP_SHIFT: u32 = 10;
/// Bits of way 0's entry holding the bucket's clock hand ([`FlowBucket::victim`]); zero in the
/// other ways.
pub const HAND_BITS: u32 = 3;
const HAND_SHIFT: u32 = ELEMENT_BITS + STAMP_BITS;
const HAND_MASK: u64 = ((1 << HAND_BITS) - 1) << HAND_SHIFT;
/// The lowest bit of a flow hash that the fingerprint keeps (the bits below pick the bucket).
pub const FP_SHIFT: u32 = HAND_SHIFT + HAND_BITS;
/// Stamp units within which an entry counts as recently used (4.1 to 8.2 s at HZ=250): a full
/// bucket replaces another way first.
pub const RECENT: u64 = 2;

const _: () = assert!(1 << HAND_BITS == WAYS);
const ELEMENT_MASK: u64 = (1 << ELEMENT_BITS) - 1;
const STAMP_MASK: u64 = (1 << STAMP_BITS) - 1;

const _: () = assert!(1 << ELEMENT_BITS == crate::maps::MAX_ELEMENTS);

/// The fingerprint of a flow as stored in its entry (never 0, so an entry is never 0).
#[inline(always)]
#[must_use]
pub const fn fingerprint(hash: u64) -> u64 {
    (hash >> FP_SHIFT) | (1 << (63 - FP_SHIFT))
}

/// Packs an entry.
#[inline(always)]
#[must_use]
pub const fn entry(fingerprint: u64, stamp: u64, element: u32) -> u64 {
    (fingerprint << FP_SHIFT) | ((stamp & STAMP_MASK) << ELEMENT_BITS) | (element as u64 & ELEMENT_MASK)
}

/// The fingerprint part of an entry.
#[inline(always)]
#[must_use]
pub const fn entry_fingerprint(entry: u64) -> u64 {
    entry >> FP_SHIFT
}

/// The element index of an entry.
#[inline(always)]
#[must_use]
pub const fn entry_element(entry: u64) -> u32 {
    (entry & ELEMENT_MASK) as u32
}

/// The clock hand held in way 0's entry `entry`.
#[inline(always)]
#[must_use]
pub const fn hand(way0: u64) -> usize {
    ((way0 & HAND_MASK) >> HAND_SHIFT) as usize
}

/// `entry` with its hand bits set to `hand` (for way 0).
#[inline(always)]
#[must_use]
pub const fn with_hand(entry: u64, hand: usize) -> u64 {
    (entry & !HAND_MASK) | (((hand & (WAYS - 1)) as u64) << HAND_SHIFT)
}

/// `entry` stamped `stamp`, its fingerprint, element and hand kept.
#[inline(always)]
#[must_use]
pub const fn restamp(entry: u64, stamp: u64) -> u64 {
    (entry & !(STAMP_MASK << ELEMENT_BITS)) | ((stamp & STAMP_MASK) << ELEMENT_BITS)
}

/// The stamp of an entry.
#[inline(always)]
#[must_use]
pub const fn entry_stamp(entry: u64) -> u64 {
    (entry >> ELEMENT_BITS) & STAMP_MASK
}

/// The stamp for a time in jiffies.
#[inline(always)]
#[must_use]
pub const fn stamp(jiffies: u64) -> u64 {
    (jiffies >> STAMP_SHIFT) & STAMP_MASK
}

/// Age of a stamp at `now` (a stamp), in stamp units, modulo the wrap.
#[inline(always)]
#[must_use]
pub const fn age(stamp: u64, now: u64) -> u64 {
    now.wrapping_sub(stamp) & STAMP_MASK
}

/// Buckets of a table of `entries` flows: a power of two, at least one.
#[must_use]
pub const fn buckets(entries: u32) -> u32 {
    let b = entries.div_ceil(WAYS as u32);
    if b <= 1 { 1 } else { b.next_power_of_two() }
}

/// The bucket of a flow in a table whose bucket count minus one is `bucket_mask`.
#[inline(always)]
#[must_use]
pub const fn bucket(hash: u64, bucket_mask: u32) -> u32 {
    (hash as u32) & bucket_mask
}

/// The flow hash's secret: the 128-bit key of `SipHash` as two little-endian words.
pub type HashKey = [u64; 2];

#[inline(always)]
const fn sip_round(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13) ^ v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16) ^ v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21) ^ v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17) ^ v[2];
    v[2] = v[2].rotate_left(32);
}

/// 64-bit hash of a flow: `SipHash-1-3` under `secret` of the flow's [`hash_input`], as the
/// kernel keys its own flow hashes. Without a secret anyone could compute tuples that land in
/// one victim's bucket and evict its flow with eight packets. Nodes behind ECMP share the key
/// (derived from the cluster's secret), which is what lets them agree on a flow's element
/// without sharing flow tables. The key's secrecy matters here, not a margin against
/// cryptanalysis (the kernel's flow hashes make the same choice).
///
/// Every new flow waits for this hash before its bucket's cache miss can start, so its rounds
/// are counted: an IPv4 flow's 11 bytes take two compression rounds, an IPv6 flow's 23 bytes
/// three (the 24 bytes of [`FlowKey`] would take four: a whole block for the length), then the
/// three finalization rounds. That is 5 or 6 rounds instead of 7
/// (docs/decisions/2026-12-07-flow-hash-input-and-early-element-read.md).
#[inline(always)]
#[must_use]
pub const fn hash64(key: &FlowKey, secret: &HashKey) -> u64 {
    let mut v = [
        secret[0] ^ 0x736f_6d65_7073_6575,
        secret[1] ^ 0x646f_7261_6e64_6f6d,
        secret[0] ^ 0x6c79_6765_6e65_7261,
        secret[1] ^ 0x7465_6462_7974_6573,
    ];
    // The input's little-endian words (see `hash_input`); an IPv4 flow's first word is its
    // IPv6 flow's second, so one sequence of rounds serves both, the first one skipped.
    let src = &key.src;
    let ports = (key.sport_be as u64) | ((key.dport_be as u64) << 16);
    let (second, last) = if is_v4(src) {
        (
            (src[3] as u64) | (ports << 32),
            (key.pool as u64) | ((key.proto as u64) << 16) | (V4_INPUT_LEN << 56),
        )
    } else {
        compress(&mut v, (src[0] as u64) | ((src[1] as u64) << 32));
        (
            (src[2] as u64) | ((src[3] as u64) << 32),
            ports | ((key.pool as u64) << 32) | ((key.proto as u64) << 48) | (V6_INPUT_LEN << 56),
        )
    };
    compress(&mut v, second);
    compress(&mut v, last);
    v[2] ^= 0xff;
    sip_round(&mut v);
    sip_round(&mut v);
    sip_round(&mut v);
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

/// Bytes of an IPv4 flow's [`hash_input`].
const V4_INPUT_LEN: u64 = 11;
/// Bytes of an IPv6 flow's [`hash_input`].
const V6_INPUT_LEN: u64 = 23;

/// Whether `addr` is an IPv4 address (mapped, as the maps store it).
#[inline(always)]
const fn is_v4(addr: &crate::addr::Addr) -> bool {
    addr[0] == 0 && addr[1] == 0 && addr[2] == crate::addr::v4_mapped_marker()
}

/// One `SipHash` compression of message word `m`.
#[inline(always)]
const fn compress(v: &mut [u64; 4], m: u64) {
    v[3] ^= m;
    sip_round(v);
    v[0] ^= m;
}

/// The bytes [`hash64`] hashes for a flow, at most 23 of them in a buffer of 24: the client
/// address (4 bytes for IPv4, 16 for IPv6), the client port, the VIP port, the pool and the
/// protocol, each field as the little-endian bytes of its value in the key (an address's words
/// and the ports hold network-order bytes, read natively on the little-endian hosts vnfpool
/// runs on: x86-64, arm64). A key has one input and different keys have different ones (an
/// address is IPv4 or not, and the two lengths differ). For tests and tools: [`hash64`] builds
/// the same words without it.
#[must_use]
pub fn hash_input(key: &FlowKey) -> ([u8; 24], usize) {
    let mut b = [0; 24];
    let mut n = 0;
    let words: &[u32] = if is_v4(&key.src) { &key.src[3..] } else { &key.src };
    for w in words {
        b[n..n + 4].copy_from_slice(&w.to_le_bytes());
        n += 4;
    }
    for part in [key.sport_be, key.dport_be, key.pool] {
        b[n..n + 2].copy_from_slice(&part.to_le_bytes());
        n += 2;
    }
    b[n] = key.proto;
    (b, n + 1)
}

/// The 32-bit hash that picks a flow's Maglev position ([`crate::ring::position`]): the high
/// half of [`hash64`] (the low half picks the flow-table bucket).
#[inline(always)]
#[must_use]
pub const fn hash(key: &FlowKey, secret: &HashKey) -> u32 {
    (hash64(key, secret) >> 32) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(entries: &[(u64, u64, u32)]) -> FlowBucket {
        let mut b = FlowBucket::default();
        for (way, &(fp, stamp, element)) in entries.iter().enumerate() {
            b.ways[way] = entry(fp, stamp, element);
        }
        b
    }

    /// An IPv4 client's TCP flow to port 443 of pool 3.
    fn web_flow() -> FlowKey {
        FlowKey {
            src: crate::addr::from_v4([10, 0, 0, 2]),
            sport_be: 40000u16.to_be(),
            dport_be: 443u16.to_be(),
            pool: 3,
            proto: 6,
            _pad: 0,
        }
    }

    #[test]
    fn the_flow_hash_is_siphash_1_3_of_the_flows_input_under_the_secret() {
        use core::hash::Hasher as _;
        let keys = [
            FlowKey::default(),
            FlowKey {
                src: [0x0102_0304, 0x0506_0708, 0x090a_0b0c, 0x0d0e_0f10],
                sport_be: 0x1112,
                dport_be: 0x1314,
                pool: 0x1516,
                proto: 17,
                _pad: 0,
            },
            web_flow(),
        ];
        for secret in [
            [0, 0],
            [0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908],
            [u64::MAX, 1],
        ] {
            for k in &keys {
                let mut reference = siphasher::sip::SipHasher13::new_with_keys(secret[0], secret[1]);
                let (input, len) = hash_input(k);
                reference.write(&input[..len]);
                assert_eq!(hash64(k, &secret), reference.finish(), "{k:?} under {secret:x?}");
            }
        }
    }

    #[test]
    fn an_ipv4_flows_input_is_its_11_bytes_and_an_ipv6_flows_its_23() {
        let v4 = web_flow();
        let (b, n) = hash_input(&v4);
        assert_eq!(&b[..n], &[10, 0, 0, 2, 0x9c, 0x40, 0x01, 0xbb, 3, 0, 6]);
        let v6 = FlowKey {
            src: crate::addr::from_v6([0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]),
            ..v4
        };
        let (b, n) = hash_input(&v6);
        assert_eq!(n, 23);
        assert_eq!(&b[..4], &[0xfd, 0, 0, 1]);
        assert_eq!(&b[16..n], &[0x9c, 0x40, 0x01, 0xbb, 3, 0, 6]);
        // The same IPv4 address written out as an IPv6 one is an IPv6 input no longer.
        let unmapped = FlowKey {
            src: [0, 0, 0, v4.src[3]],
            ..v4
        };
        assert_eq!(hash_input(&unmapped).1, 23);
        assert_ne!(hash64(&unmapped, &[1, 2]), hash64(&v4, &[1, 2]));
    }

    #[test]
    fn the_flow_hash_depends_on_the_secret() {
        let k = FlowKey {
            src: crate::addr::from_v4([10, 0, 0, 2]),
            ..FlowKey::default()
        };
        assert_ne!(hash64(&k, &[1, 2]), hash64(&k, &[1, 3]));
        assert_ne!(hash64(&k, &[1, 2]), hash64(&k, &[2, 2]));
    }

    #[test]
    fn the_guard_counts_per_unit_and_stops_at_its_budget() {
        let mut g = FlowGuard::default();
        for _ in 0..3 {
            assert!(guard_admits(&mut g, 5, 3));
        }
        assert!(!guard_admits(&mut g, 5, 3), "the fourth flow of unit 5");
        assert!(guard_admits(&mut g, 6, 3), "a new unit, a new budget");
        assert_eq!(g, FlowGuard { unit: 6, recorded: 1 });
        let mut off = FlowGuard::default();
        for _ in 0..1000 {
            assert!(guard_admits(&mut off, 5, 0), "budget 0: no limit");
        }
    }

    #[test]
    fn the_default_guard_is_a_table_of_buckets_per_unit_shared_by_the_cpus() {
        let table = buckets(1 << 20);
        assert_eq!(default_guard(table, 2), (1 << 17) / 2);
        assert_eq!(default_guard(table, 0), 1 << 17);
        assert_eq!(
            default_guard(buckets(8), 64),
            1,
            "never 0, which would mean no guard"
        );
    }

    #[test]
    fn entries_round_trip_and_are_never_zero() {
        for (h, stamp, element) in [
            (0u64, 0u64, 0u32),
            (u64::MAX, 255, 1023),
            (0x1234_5678_9abc_def0, 17, 5),
        ] {
            let fp = fingerprint(h);
            let e = entry(fp, stamp, element);
            assert_eq!(e >> 63, 1, "the top bit marks a used way");
            assert_eq!(
                (entry_fingerprint(e), entry_stamp(e), entry_element(e)),
                (fp, stamp, element)
            );
        }
    }

    #[test]
    fn find_matches_the_fingerprint_only() {
        let b = bucket(&[(fingerprint(1 << 40), 3, 7), (fingerprint(2 << 40), 3, 9)]);
        assert_eq!(
            b.find(fingerprint(2 << 40)),
            Way::Hit(1, entry(fingerprint(2 << 40), 3, 9))
        );
        assert_eq!(
            b.find(fingerprint(3 << 40)),
            Way::Empty(2),
            "a miss names the first empty way"
        );
        // An empty way never matches: fingerprints have their top bit set.
        assert_eq!(FlowBucket::default().find(fingerprint(0)), Way::Empty(0));
    }

    #[test]
    fn the_first_empty_way_is_the_count_of_used_ones() {
        for used in 0..WAYS {
            let mut b = with_stamps([0; WAYS]);
            b.ways[used..].fill(0);
            assert_eq!(b.find(fingerprint(99 << 40)), Way::Empty(used));
        }
    }

    /// A full bucket whose way `w` holds flow `w + 1` (fingerprint `(w + 1) << 40`), stamped
    /// `stamps[w]`, of element 0.
    fn with_stamps(stamps: [u64; WAYS]) -> FlowBucket {
        bucket(&core::array::from_fn::<_, WAYS, _>(|way| {
            (fingerprint((way as u64 + 1) << 40), stamps[way], 0)
        }))
    }

    #[test]
    fn a_full_bucket_is_told_apart_from_one_with_room() {
        let miss = fingerprint(99 << 40);
        let mut room = with_stamps([3; WAYS]);
        room.ways[5..].fill(0);
        assert_eq!(room.find(miss), Way::Empty(5));
        assert_eq!(with_stamps([3; WAYS]).find(miss), Way::Full);
        assert_eq!(
            with_stamps([3; WAYS]).find(fingerprint(8 << 40)),
            Way::Hit(7, entry(fingerprint(8 << 40), 3, 0)),
            "the last way is looked at"
        );
    }

    #[test]
    fn a_full_bucket_gives_up_the_first_idle_way_from_its_hand() {
        let at = |stamps: [u64; WAYS], hand: usize| {
            let mut b = with_stamps(stamps);
            b.ways[0] = with_hand(b.ways[0], hand);
            b
        };
        assert_eq!(at([10; WAYS], 0).victim(10), 0, "all recent: the hand's way");
        assert_eq!(at([10; WAYS], 5).victim(11), 5, "used one unit ago is recent");
        assert_eq!(at([10; WAYS], 5).victim(12), 5, "all idle: the hand's way");
        assert_eq!(
            at([10, 10, 12, 12, 3, 3, 12, 12], 2).victim(12),
            4,
            "recent ways get a second chance"
        );
        assert_eq!(
            at([3, 12, 12, 12, 12, 12, 12, 12], 6).victim(12),
            0,
            "the hand wraps"
        );
        assert_eq!(
            at([12, 12, 12, 12, 12, 12, 12, 3], 6).victim(12),
            7,
            "the first idle way, not the oldest (way 7 before way 0 here)"
        );
        // Across the wrap: at now = 1, stamp 255 is 2 units old.
        assert_eq!(at([1, 255, 1, 1, 1, 1, 1, 1], 0).victim(1), 1);
    }

    #[test]
    fn the_hand_and_the_stamp_change_nothing_else() {
        let fp = fingerprint(0x1234_5678_9abc_def0);
        let e = entry(fp, 7, 42);
        let handed = with_hand(e, 5);
        assert_eq!(hand(handed), 5);
        assert_eq!(
            (
                entry_fingerprint(handed),
                entry_stamp(handed),
                entry_element(handed)
            ),
            (fp, 7, 42)
        );
        let restamped = restamp(handed, 9);
        assert_eq!(
            (hand(restamped), entry_stamp(restamped), entry_element(restamped)),
            (5, 9, 42)
        );
        assert_eq!(hand(with_hand(e, WAYS)), 0, "the hand counts modulo the ways");
        let mut b = FlowBucket::default();
        b.ways[0] = handed;
        assert_eq!(b.find(fp), Way::Hit(0, handed), "way 0 matches whatever its hand");
    }

    #[test]
    fn an_entry_read_back_lands_where_the_flow_would() {
        for h in [0u64, u64::MAX, 0x1234_5678_9abc_def0, 0x8000_0000_0001_ffff] {
            for mask in [0u32, 7, (1 << 17) - 1, (1 << 21) - 1, u32::MAX >> 1] {
                let e = from_entry(entry(fingerprint(h), 9, 77), super::bucket(h, mask), mask, 12, 3);
                assert_eq!(
                    (
                        fingerprint(e.hash),
                        super::bucket(e.hash, mask),
                        e.element,
                        e.pool
                    ),
                    (fingerprint(h), super::bucket(h, mask), 77, 3),
                    "hash {h:#x} mask {mask:#x}"
                );
                assert!(placeable(&e, mask), "placeable in a table of the same size");
                assert_eq!(e.age, 3, "used at stamp 9, read at 12");
            }
        }
        let e = from_entry(entry(fingerprint(5), 0, 1), 5, 7, 0, 0);
        assert_eq!(e.exact_bits, 3);
        assert!(placeable(&e, 1), "a smaller table can place it");
        assert!(!placeable(&e, 15), "a larger one cannot: bit 3 is unknown");
        assert_eq!(
            from_entry(entry(fingerprint(5), 0, 1), 5, (1 << 21) - 1, 0, 0).exact_bits,
            64
        );
    }

    #[test]
    fn buckets_are_a_power_of_two_holding_at_least_the_entries() {
        for (entries, want) in [
            (0, 1),
            (1, 1),
            (8, 1),
            (9, 2),
            (8192, 1024),
            (1 << 20, 1 << 17),
            (1_000_000, 1 << 17),
        ] {
            assert_eq!(buckets(entries), want, "{entries} entries");
        }
    }
}
