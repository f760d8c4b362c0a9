//! Weighted Maglev lookup table (Eisenbud et al., "Maglev: A Fast and Reliable Software Network
//! Load Balancer", NSDI 2016).
//!
//! Every backend walks its own permutation of the table positions,
//! `(offset + j * skip) mod size`, and the backends take turns claiming the next position on
//! their walk that nobody holds yet. Turns are handed out in proportion to weight: the next
//! turn goes to the backend whose `(claimed + 1) / weight` is smallest, ties to the heavier
//! backend, then to the lower key. With equal weights this is the paper's round-robin in key
//! order. Each backend ends with at least `floor(size * weight / total)` entries and at most
//! `(size + n) * weight / total` (`n` backends in the ring, `total` their summed weight).
//!
//! The table is a pure function of the set of `(key, weight)` pairs and the size, so every node
//! holding the same pool computes the same table. For that reason [`name_key`] and the
//! permutation hashes below are a cross-node, cross-release contract and must never change.

use std::{
    cmp::{Ordering, Reverse},
    fmt,
};

/// Smallest allowed table size (a prime).
pub const MIN_RING_SIZE: u32 = 251;
/// Largest allowed table size (a prime).
pub const MAX_RING_SIZE: u32 = 1_048_573;
/// Table size used when none is configured (a prime, 2^16 + 1).
pub const DEFAULT_RING_SIZE: u32 = 65_537;

/// One element as the ring sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backend {
    /// Stable identity of the element, e.g. `name_key("e1")`. The ring is a pure function of the
    /// set of (key, weight): two nodes with the same pool build the same ring.
    pub key: u64,
    /// What the ring stores for this backend: the element's index in its pool (< 1024).
    pub index: u16,
    /// Relative share of the table; 0 means "not in the ring".
    pub weight: u32,
}

/// Why a table cannot be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingError {
    /// The table size is not a prime, so some permutations would not cover the table.
    NotPrime {
        /// Requested table size.
        size: u32,
    },
    /// The table size is below [`MIN_RING_SIZE`].
    TooSmall {
        /// Requested table size.
        size: u32,
        /// Smallest allowed size.
        min: u32,
    },
    /// The table size is above [`MAX_RING_SIZE`].
    TooLarge {
        /// Requested table size.
        size: u32,
        /// Largest allowed size.
        max: u32,
    },
    /// Two backends share a key.
    DuplicateKey {
        /// The shared key.
        key: u64,
    },
    /// More weighted backends than table entries.
    TooManyBackends {
        /// Number of backends with weight > 0.
        count: usize,
        /// Requested table size.
        size: u32,
    },
}

impl fmt::Display for RingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::NotPrime { size } => write!(f, "ring size {size} is not prime"),
            Self::TooSmall { size, min } => {
                write!(f, "ring size {size} is below the minimum of {min}")
            }
            Self::TooLarge { size, max } => {
                write!(f, "ring size {size} is above the maximum of {max}")
            }
            Self::DuplicateKey { key } => write!(f, "two backends share the key {key:#018x}"),
            Self::TooManyBackends { count, size } => write!(
                f,
                "{count} weighted backends do not fit in a ring of {size} entries"
            ),
        }
    }
}

impl std::error::Error for RingError {}

/// Stable 64-bit key for an element name: FNV-1a 64 over the UTF-8 bytes of `name`
/// (offset basis `0xcbf29ce484222325`, prime `0x100000001b3`).
///
/// Part of the ring's cross-node and cross-release contract: never change it.
#[must_use]
pub fn name_key(name: &str) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    name.bytes().fold(OFFSET_BASIS, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    })
}

/// Checks that `size` is within [`MIN_RING_SIZE`]..=[`MAX_RING_SIZE`] and prime.
///
/// # Errors
/// [`RingError::TooSmall`] or [`RingError::TooLarge`] when out of bounds (checked first), else
/// [`RingError::NotPrime`].
pub fn validate_size(size: u32) -> Result<(), RingError> {
    if size < MIN_RING_SIZE {
        return Err(RingError::TooSmall {
            size,
            min: MIN_RING_SIZE,
        });
    }
    if size > MAX_RING_SIZE {
        return Err(RingError::TooLarge {
            size,
            max: MAX_RING_SIZE,
        });
    }
    if !is_prime(size) {
        return Err(RingError::NotPrime { size });
    }
    Ok(())
}

/// Whether `n` is prime (deterministic trial division).
#[must_use]
pub fn is_prime(n: u32) -> bool {
    if n < 4 {
        return n >= 2;
    }
    if n.is_multiple_of(2) || n.is_multiple_of(3) {
        return false;
    }
    // Every prime above 3 is 6k ± 1.
    let mut d: u32 = 5;
    while u64::from(d) * u64::from(d) <= u64::from(n) {
        if n.is_multiple_of(d) || n.is_multiple_of(d + 2) {
            return false;
        }
        d += 6;
    }
    true
}

/// Seeds for the two permutation hashes; distinct so `offset` and `skip` are independent.
const OFFSET_SEED: u64 = 0x9e37_79b9_7f4a_7c15;
const SKIP_SEED: u64 = 0xc2b2_ae3d_27d4_eb4f;

/// The `SplitMix64` finalizer: spreads every key bit over the whole word, which raw FNV output on
/// short, similar names does not.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `hash mod m`, reduced from the high half of the hash.
fn reduce(hash: u64, m: u32) -> u32 {
    let high = (hash >> 32) as u32;
    high % m
}

/// `(offset, skip)` of the permutation of `key` over a table of prime `size`:
/// `offset < size`, `1 <= skip < size`.
fn permutation(key: u64, size: u32) -> (u32, u32) {
    let offset = reduce(mix(key ^ OFFSET_SEED), size);
    let skip = reduce(mix(key ^ SKIP_SEED), size - 1) + 1;
    (offset, skip)
}

/// Which table positions are held: one bit each, so the whole set stays in L1 cache.
struct Taken(Vec<u64>);

impl Taken {
    fn new(size: u32) -> Self {
        Self(vec![0; size.div_ceil(64) as usize])
    }

    /// Marks `pos` as held; false if it already was.
    fn take(&mut self, pos: u32) -> bool {
        let word = &mut self.0[(pos / 64) as usize];
        let bit = 1u64 << (pos % 64);
        // Store only on success: an unconditional store would chain every probe through memory.
        if *word & bit == 0 {
            *word |= bit;
            true
        } else {
            false
        }
    }
}

/// A backend's position in its permutation.
struct Walk {
    next: u32,
    skip: u32,
}

impl Walk {
    /// Claims the first free position from `next` on. Because `size` is prime and
    /// `0 < skip < size`, the walk visits every position, so it ends whenever one is free.
    fn claim(&mut self, taken: &mut Taken, size: u32) -> u32 {
        loop {
            let pos = self.next;
            // Incremental `(offset + j * skip) mod size`: both terms are < size ≤ 2^20.
            self.next += self.skip;
            if self.next >= size {
                self.next -= size;
            }
            if taken.take(pos) {
                return pos;
            }
        }
    }
}

/// The backends sharing one weight. Equal-weight backends always have their turns at the same
/// virtual times, so they are scheduled as one unit taking a round (a turn each, in key order).
struct Group {
    weight: u64,
    /// Ring positions `first..end` of the members.
    first: usize,
    end: usize,
    /// Rounds taken so far; the next is due at virtual time `(rounds + 1) / weight`.
    rounds: u64,
    /// `(rounds + 1) * total = bucket * weight + rem`, kept by adding
    /// `total = step * weight + step_rem` once per round instead of dividing.
    bucket: u64,
    rem: u64,
    step: u64,
    step_rem: u64,
    /// Next group in the same calendar bucket.
    link: u32,
}

impl Group {
    fn advance(&mut self) {
        self.rounds += 1;
        self.bucket += self.step;
        self.rem += self.step_rem;
        if self.rem >= self.weight {
            self.rem -= self.weight;
            self.bucket += 1;
        }
    }

    /// Earlier virtual time first, then the heavier group (groups are laid out heaviest first).
    fn due_before(&self, other: &Self) -> Ordering {
        // rounds <= size <= 2^20 and weight < 2^32, so the products stay below 2^53.
        ((self.rounds + 1) * other.weight)
            .cmp(&((other.rounds + 1) * self.weight))
            .then(self.first.cmp(&other.first))
    }
}

/// End of a calendar bucket's list.
const NO_GROUP: u32 = u32::MAX;

/// Builds the table: `size` entries, each a backend `index`. Empty when no backend has
/// weight > 0. Independent of the order of `backends`.
///
/// # Errors
/// In this order: the size errors of [`validate_size`]; [`RingError::DuplicateKey`] when two
/// backends (weighted or not) share a key; [`RingError::TooManyBackends`] when more backends
/// have weight > 0 than the table has entries.
pub fn build(backends: &[Backend], size: u32) -> Result<Vec<u16>, RingError> {
    validate_size(size)?;
    let mut ring: Vec<Backend> = backends.to_vec();
    ring.sort_unstable_by_key(|b| b.key);
    if let Some(key) = ring.windows(2).find_map(|pair| match pair {
        [a, b] if a.key == b.key => Some(a.key),
        _ => None,
    }) {
        return Err(RingError::DuplicateKey { key });
    }
    ring.retain(|b| b.weight > 0);
    if ring.len() > size as usize {
        return Err(RingError::TooManyBackends {
            count: ring.len(),
            size,
        });
    }
    match ring.as_slice() {
        [] => return Ok(Vec::new()),
        // Every position is the one backend's: no permutation needed (an active-standby
        // pool's table, on the failover's critical path).
        [only] => return Ok(vec![only.index; size as usize]),
        _ => {}
    }

    // Heaviest first, key order within a weight: each group is a contiguous run.
    ring.sort_unstable_by_key(|b| (Reverse(b.weight), b.key));
    // At most 2^20 backends of weight < 2^32: no overflow.
    let total: u64 = ring.iter().map(|b| u64::from(b.weight)).sum();
    let mut groups: Vec<Group> = Vec::new();
    let mut first = 0;
    for run in ring.chunk_by(|a, b| a.weight == b.weight) {
        let weight = u64::from(run[0].weight);
        let (step, step_rem) = (total / weight, total % weight);
        let end = first + run.len();
        groups.push(Group {
            weight,
            first,
            end,
            rounds: 0,
            bucket: step,
            rem: step_rem,
            step,
            step_rem,
            link: NO_GROUP,
        });
        first = end;
    }
    let mut walks: Vec<Walk> = ring
        .iter()
        .map(|b| {
            let (offset, skip) = permutation(b.key, size);
            Walk { next: offset, skip }
        })
        .collect();

    // Rounds are taken in order of virtual time, through a calendar of buckets of width
    // 1 / total: a group's next round lies in bucket floor((rounds + 1) * total / weight),
    // always a later bucket than its current one since weight <= total. No round past bucket
    // size + n is ever needed: when a round at time t is taken, every backend already holds
    // at least t * weight - 1 positions, and those add up to less than size, so
    // t * total < size + n.
    let horizon = size as usize + ring.len();
    let mut calendar = vec![NO_GROUP; horizon + 1];
    let schedule = |g: u32, group: &mut Group, calendar: &mut [u32]| {
        if let Ok(bucket) = usize::try_from(group.bucket)
            && bucket <= horizon
        {
            group.link = calendar[bucket];
            calendar[bucket] = g;
        }
    };
    for (g, group) in (0u32..).zip(&mut groups) {
        schedule(g, group, &mut calendar);
    }

    let mut table = vec![0u16; size as usize];
    let mut taken = Taken::new(size);
    // One position per turn, so exactly `size` turns fill the table.
    let mut left = size;
    let mut due: Vec<u32> = Vec::new();
    'fill: for bucket in 0..=horizon {
        due.clear();
        let mut g = calendar[bucket];
        while g != NO_GROUP {
            due.push(g);
            g = groups[g as usize].link;
        }
        due.sort_unstable_by(|&a, &b| groups[a as usize].due_before(&groups[b as usize]));
        for &g in &due {
            let group = &mut groups[g as usize];
            for member in group.first..group.end {
                let pos = walks[member].claim(&mut taken, size);
                table[pos as usize] = ring[member].index;
                left -= 1;
                if left == 0 {
                    break 'fill;
                }
            }
            group.advance();
            schedule(g, group, &mut calendar);
        }
    }
    debug_assert_eq!(left, 0, "the calendar horizon cut off a needed round");
    Ok(table)
}

/// How many positions differ between two tables; positions present in only one table (sizes
/// differ, e.g. empty versus full) all count as moved.
#[must_use]
pub fn moved(old: &[u16], new: &[u16]) -> usize {
    let differing = old.iter().zip(new).filter(|(a, b)| a != b).count();
    differing + old.len().abs_diff(new.len())
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    const M: u32 = DEFAULT_RING_SIZE;

    fn backend(name: &str, index: u16, weight: u32) -> Backend {
        Backend {
            key: name_key(name),
            index,
            weight,
        }
    }

    /// Backends `{prefix}0..` with the given weights, index = position.
    fn pool(prefix: &str, weights: &[u32]) -> Vec<Backend> {
        (0u16..)
            .zip(weights)
            .map(|(i, &w)| backend(&format!("{prefix}{i}"), i, w))
            .collect()
    }

    fn equal(n: u16) -> Vec<Backend> {
        pool("e", &vec![1; usize::from(n)])
    }

    fn counts(table: &[u16], len: usize) -> Vec<u64> {
        let mut counts = vec![0u64; len];
        for &i in table {
            counts[usize::from(i)] += 1;
        }
        counts
    }

    fn frac(count: usize, size: u32) -> f64 {
        f64::from(u32::try_from(count).unwrap()) / f64::from(size)
    }

    /// Deterministic Fisher–Yates driven by a small LCG.
    fn shuffled<T: Clone>(items: &[T], seed: u64) -> Vec<T> {
        let mut out = items.to_vec();
        let mut state = seed;
        for i in (1..out.len()).rev() {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let j = usize::try_from((state >> 33) % (i as u64 + 1)).unwrap();
            out.swap(i, j);
        }
        out
    }

    #[test]
    fn name_key_is_fnv1a_64() {
        for (name, want) in [
            ("", 0xcbf2_9ce4_8422_2325),
            ("a", 0xaf63_dc4c_8601_ec8c),
            ("foobar", 0x8594_4171_f739_67e8),
        ] {
            assert_eq!(name_key(name), want, "{name:?}");
        }
        assert_ne!(name_key("e1"), name_key("e2"));
    }

    /// Nodes on different releases must agree on the ring, so any change to the key hash, the
    /// permutation hashes or the turn order shows up here.
    #[test]
    fn layout_is_pinned() {
        let backends: Vec<Backend> = [("e0", 3), ("e1", 1), ("e2", 2)]
            .into_iter()
            .zip(0u16..)
            .map(|((name, weight), index)| backend(name, index, weight))
            .collect();
        let small = build(&backends, MIN_RING_SIZE).unwrap();
        assert_eq!(
            small[..32],
            [
                0, 0, 2, 1, 1, 2, 2, 0, 1, 0, 2, 0, 0, 0, 0, 1, 2, 2, 2, 0, 0, 1, 2, 0, 0, 1, 0, 1, 2, 1, 2,
                0
            ]
        );
        let table = build(&backends, M).unwrap();
        assert_eq!(table[..16], [2, 1, 1, 0, 2, 2, 0, 0, 2, 0, 1, 0, 0, 1, 0, 2]);
        let digest = table.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &i| {
            (h ^ u64::from(i)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        assert_eq!(digest, 0x069d_068e_d8b9_54df);
    }

    #[test]
    fn validate_size_cases() {
        let small = |size| {
            Err(RingError::TooSmall {
                size,
                min: MIN_RING_SIZE,
            })
        };
        let large = |size| {
            Err(RingError::TooLarge {
                size,
                max: MAX_RING_SIZE,
            })
        };
        for (size, want) in [
            (65_537, Ok(())),
            (MIN_RING_SIZE, Ok(())),
            (MAX_RING_SIZE, Ok(())),
            (65_536, Err(RingError::NotPrime { size: 65_536 })),
            (1_000_000, Err(RingError::NotPrime { size: 1_000_000 })),
            (257 * 263, Err(RingError::NotPrime { size: 257 * 263 })),
            (250, small(250)),
            (241, small(241)),
            (0, small(0)),
            (1_048_583, large(1_048_583)),
            (u32::MAX, large(u32::MAX)),
        ] {
            assert_eq!(validate_size(size), want, "size {size}");
        }
    }

    #[test]
    fn is_prime_table() {
        for (n, want) in [
            (0, false),
            (1, false),
            (2, true),
            (3, true),
            (4, false),
            (5, true),
            (9, false),
            (25, false),
            (49, false),
            (97, true),
            (121, false),
            (251, true),
            (65_537, true),
            (65_535, false),
            (1_048_573, true),
            (1_048_575, false),
            (4_294_967_291, true),
            (4_294_967_295, false),
            (65_521 * 65_519, false),
        ] {
            assert_eq!(is_prime(n), want, "{n}");
        }
        // Cross-check against a sieve for every small n.
        let limit = 10_000usize;
        let mut sieve = vec![true; limit];
        sieve[0] = false;
        sieve[1] = false;
        for i in 2..limit {
            if sieve[i] {
                for j in (i * i..limit).step_by(i) {
                    sieve[j] = false;
                }
            }
        }
        for (n, &prime) in (0u32..).zip(&sieve) {
            assert_eq!(is_prime(n), prime, "{n}");
        }
    }

    #[test]
    fn errors_display_their_fields() {
        for (err, needle) in [
            (RingError::NotPrime { size: 65_536 }, "65536"),
            (RingError::TooSmall { size: 7, min: 251 }, "251"),
            (
                RingError::TooLarge {
                    size: 9,
                    max: 1_048_573,
                },
                "1048573",
            ),
            (RingError::DuplicateKey { key: 0xab }, "0x00000000000000ab"),
            (
                RingError::TooManyBackends {
                    count: 300,
                    size: 251,
                },
                "300",
            ),
        ] {
            assert!(err.to_string().contains(needle), "{err}");
        }
    }

    #[test]
    fn permutation_covers_the_table() {
        for size in [MIN_RING_SIZE, 257, 65_537] {
            for key in [0, 1, u64::MAX, name_key("e0"), name_key("e1")] {
                let (offset, skip) = permutation(key, size);
                assert!(offset < size && (1..size).contains(&skip), "{key} {size}");
                let mut seen = vec![false; size as usize];
                let mut taken = Taken::new(size);
                let mut walk = Walk { next: offset, skip };
                for j in 0..u64::from(size) {
                    // Nothing else is taken, so each claim is the next step of the walk.
                    let pos = walk.claim(&mut taken, size);
                    let want = (u64::from(offset) + j * u64::from(skip)) % u64::from(size);
                    assert_eq!(u64::from(pos), want, "{key} {size} j={j}");
                    seen[pos as usize] = true;
                }
                assert!(seen.iter().all(|&s| s), "walk of {key} missed a position");
            }
        }
    }

    #[test]
    fn entries_are_valid_indexes() {
        for (weights, size) in [
            (vec![1, 1, 1], MIN_RING_SIZE),
            (vec![3, 0, 7, 1, 1], 257),
            (vec![1; 100], M),
            (vec![1; 251], MIN_RING_SIZE),
        ] {
            let backends = pool("e", &weights);
            let table = build(&backends, size).unwrap();
            assert_eq!(table.len(), size as usize);
            let live: Vec<u16> = backends
                .iter()
                .filter(|b| b.weight > 0)
                .map(|b| b.index)
                .collect();
            assert!(table.iter().all(|i| live.contains(i)), "{weights:?}");
        }
    }

    #[test]
    fn a_full_ring_gives_each_backend_one_entry() {
        let table = build(&equal(251), MIN_RING_SIZE).unwrap();
        assert!(counts(&table, 251).iter().all(|&c| c == 1));
    }

    #[test]
    fn empty_when_nothing_is_weighted() {
        for backends in [vec![], pool("e", &[0]), pool("e", &[0, 0, 0])] {
            assert_eq!(build(&backends, M), Ok(vec![]));
        }
        assert_eq!(moved(&[], &build(&equal(1), MIN_RING_SIZE).unwrap()), 251);
    }

    #[test]
    fn zero_weight_backends_are_ignored() {
        let backends = pool("e", &[2, 0, 1, 0, 3]);
        let table = build(&backends, M).unwrap();
        assert!(table.iter().all(|&i| i != 1 && i != 3));
        let weighted: Vec<Backend> = backends.iter().copied().filter(|b| b.weight > 0).collect();
        assert_eq!(build(&weighted, M).unwrap(), table);
    }

    #[test]
    fn a_single_backend_fills_everything() {
        for size in [MIN_RING_SIZE, M] {
            let table = build(&[backend("only", 7, 3)], size).unwrap();
            assert_eq!(table.len(), size as usize);
            assert!(table.iter().all(|&i| i == 7));
        }
    }

    #[test]
    fn independent_of_input_order() {
        for weights in [vec![1; 10], vec![1, 2, 3, 4, 5, 6, 0, 8], vec![100, 1, 1, 7, 7]] {
            let backends = pool("vnf-", &weights);
            let table = build(&backends, M).unwrap();
            for seed in 1..=5 {
                assert_eq!(build(&shuffled(&backends, seed), M).unwrap(), table, "{seed}");
            }
            let reversed: Vec<Backend> = backends.iter().rev().copied().collect();
            assert_eq!(build(&reversed, M).unwrap(), table);
        }
    }

    #[test]
    fn scaling_all_weights_changes_nothing() {
        let base = build(&pool("e", &[1, 2, 3]), M).unwrap();
        assert_eq!(build(&pool("e", &[3, 6, 9]), M).unwrap(), base);
        assert_eq!(build(&pool("e", &[1_000, 2_000, 3_000]), M).unwrap(), base);
    }

    /// The paper's unweighted loop, written independently with `(offset + j * skip) mod M`.
    fn reference_maglev(keys_and_indexes: &[(u64, u16)], size: u32) -> Vec<u16> {
        let mut sorted = keys_and_indexes.to_vec();
        sorted.sort_unstable();
        let m = u64::from(size);
        let perms: Vec<(u64, u64)> = sorted
            .iter()
            .map(|&(key, _)| {
                let (o, s) = permutation(key, size);
                (u64::from(o), u64::from(s))
            })
            .collect();
        let mut next = vec![0u64; sorted.len()];
        let mut entry: Vec<Option<u16>> = vec![None; size as usize];
        let mut filled = 0;
        'fill: loop {
            for (i, &(_, index)) in sorted.iter().enumerate() {
                let (offset, skip) = perms[i];
                let mut c = (offset + next[i] * skip) % m;
                while entry[usize::try_from(c).unwrap()].is_some() {
                    next[i] += 1;
                    c = (offset + next[i] * skip) % m;
                }
                entry[usize::try_from(c).unwrap()] = Some(index);
                next[i] += 1;
                filled += 1;
                if filled == size {
                    break 'fill;
                }
            }
        }
        entry.into_iter().map(Option::unwrap).collect()
    }

    #[test]
    fn equal_weights_match_the_paper() {
        for (n, size) in [
            (1u16, MIN_RING_SIZE),
            (3, MIN_RING_SIZE),
            (7, 257),
            (10, M),
            (100, M),
        ] {
            let backends = equal(n);
            let pairs: Vec<(u64, u16)> = backends.iter().map(|b| (b.key, b.index)).collect();
            assert_eq!(
                build(&backends, size).unwrap(),
                reference_maglev(&pairs, size),
                "{n}"
            );
            // Any common weight is the same ring.
            let heavy: Vec<Backend> = backends.iter().map(|b| Backend { weight: 42, ..*b }).collect();
            assert_eq!(
                build(&heavy, size).unwrap(),
                reference_maglev(&pairs, size),
                "{n}"
            );
        }
    }

    /// The scheduling rule spelled out one turn at a time: the backend due first (smallest
    /// `(claimed + 1) / weight`, then heavier, then lower key) takes its next free position.
    fn reference_weighted(backends: &[Backend], size: u32) -> Vec<u16> {
        let ring: Vec<Backend> = backends.iter().copied().filter(|b| b.weight > 0).collect();
        let m = u64::from(size);
        let mut next = vec![0u64; ring.len()];
        let mut claimed = vec![0u128; ring.len()];
        let mut entry: Vec<Option<u16>> = vec![None; size as usize];
        for _ in 0..size {
            let i = (0..ring.len())
                .min_by(|&a, &b| {
                    let (wa, wb) = (u128::from(ring[a].weight), u128::from(ring[b].weight));
                    ((claimed[a] + 1) * wb)
                        .cmp(&((claimed[b] + 1) * wa))
                        .then(wb.cmp(&wa))
                        .then(ring[a].key.cmp(&ring[b].key))
                })
                .unwrap();
            let (offset, skip) = permutation(ring[i].key, size);
            loop {
                let c = (u64::from(offset) + next[i] * u64::from(skip)) % m;
                next[i] += 1;
                let slot = &mut entry[usize::try_from(c).unwrap()];
                if slot.is_none() {
                    *slot = Some(ring[i].index);
                    break;
                }
            }
            claimed[i] += 1;
        }
        entry.into_iter().map(Option::unwrap).collect()
    }

    #[test]
    fn weighted_turns_match_the_rule() {
        for (weights, size) in [
            (vec![1, 2, 3], MIN_RING_SIZE),
            (vec![1, 2, 3], M),
            (vec![5, 1], 257),
            (vec![100, 1, 1], M),
            (vec![2, 2, 1, 1, 3, 3, 0, 6], 1_009),
            (vec![u32::MAX, 1, 7, 7, 3], 257),
            (vec![3, 5, 7, 5, 3], 65_521),
            ((1..=40).collect(), 4_099),
            ((0..60).map(|i| i % 4 + 1).collect(), 8_191),
            (vec![1; 251], MIN_RING_SIZE),
            ((1..=251).collect(), MIN_RING_SIZE),
        ] {
            let backends = pool("w", &weights);
            assert_eq!(
                build(&backends, size).unwrap(),
                reference_weighted(&backends, size),
                "{weights:?} size {size}"
            );
        }
    }

    #[test]
    fn shares_follow_weights() {
        let cases: Vec<(Vec<u32>, u32)> = vec![
            (vec![1, 1, 1], M),
            (vec![1, 2, 3], M),
            (vec![5, 1], M),
            (vec![100, 1, 1], M),
            (vec![1_000, 999], M),
            (vec![7, 0, 13, 1, 1, 40], M),
            (vec![u32::MAX, u32::MAX - 1, 1], M),
            ((1..=100).collect(), M),
            (vec![1, 2, 3], MAX_RING_SIZE),
            (vec![2, 1], MIN_RING_SIZE),
        ];
        for (weights, size) in cases {
            let n = weights.len();
            let table = build(&pool("e", &weights), size).unwrap();
            let counts = counts(&table, n);
            let total: u128 = weights.iter().map(|&w| u128::from(w)).sum();
            let live = weights.iter().filter(|&&w| w > 0).count() as u128;
            let mut worst_pp = 0f64;
            for (i, (&w, &c)) in weights.iter().zip(&counts).enumerate() {
                let (w, c, m) = (u128::from(w), u128::from(c), u128::from(size));
                // At least the exact share rounded down, at most n * weight / total above it.
                assert!(c >= m * w / total, "{weights:?} #{i}: {c}");
                assert!(c <= (m + live) * w / total, "{weights:?} #{i}: {c}");
                let share = f64::from(u32::try_from(c).unwrap()) / f64::from(size);
                let want = f64::from(weights[i]) / weights.iter().map(|&w| f64::from(w)).sum::<f64>();
                worst_pp = worst_pp.max((share - want).abs() * 100.0);
            }
            assert!(worst_pp < 0.5, "{weights:?}: {worst_pp} pp");
            println!(
                "size {size} weights {:?}: worst share error {worst_pp:.4} pp",
                &weights[..n.min(6)]
            );
        }
    }

    #[test]
    fn removing_one_backend_disrupts_little() {
        let mut worst = (0f64, 0u16);
        let mut worst_churn = 0f64;
        for prefix in ["e", "vnf-", "node"] {
            for n in 2..=10u16 {
                let backends = pool(prefix, &vec![1; usize::from(n)]);
                let old = build(&backends, M).unwrap();
                for gone in 0..n {
                    let rest: Vec<Backend> = backends.iter().copied().filter(|b| b.index != gone).collect();
                    let new = build(&rest, M).unwrap();
                    let orphaned = old.iter().filter(|&&i| i == gone).count();
                    let shuffled = old
                        .iter()
                        .zip(&new)
                        .filter(|&(&o, &nw)| o != gone && o != nw)
                        .count();
                    // Survivor-to-survivor moves are counted too, not only the orphans.
                    assert_eq!(moved(&old, &new), orphaned + shuffled);
                    worst_churn = worst_churn.max(frac(shuffled, M));
                    let f = frac(moved(&old, &new), M);
                    let excess = f - 1.0 / f64::from(n);
                    assert!(excess <= 0.01, "{prefix} n={n} remove {gone}: moved {f:.4}");
                    if excess > worst.0 {
                        worst = (excess, n);
                    }
                }
            }
        }
        println!(
            "remove one: worst moved - 1/N = {:.4}% (N={}), worst survivor churn {:.4}%",
            worst.0 * 100.0,
            worst.1,
            worst_churn * 100.0
        );
    }

    #[test]
    fn adding_one_backend_disrupts_little() {
        let mut worst = (0f64, 0u16);
        for prefix in ["e", "vnf-", "node"] {
            for n in 2..=10u16 {
                let grown = pool(prefix, &vec![1; usize::from(n) + 1]);
                let old = build(&grown[..usize::from(n)], M).unwrap();
                let new = build(&grown, M).unwrap();
                let f = frac(moved(&old, &new), M);
                let excess = f - 1.0 / f64::from(n + 1);
                assert!(excess <= 0.01, "{prefix} n={n}: moved {f:.4}");
                if excess > worst.0 {
                    worst = (excess, n);
                }
            }
        }
        println!(
            "add one: worst moved - 1/(N+1) = {:.4}% (N={})",
            worst.0 * 100.0,
            worst.1
        );
    }

    #[test]
    fn orphaned_positions_go_to_survivors() {
        for weights in [vec![1; 5], vec![1, 2, 3, 4], vec![100, 1, 1]] {
            let backends = pool("e", &weights);
            let old = build(&backends, M).unwrap();
            for gone in backends.iter().map(|b| b.index) {
                let rest: Vec<Backend> = backends.iter().copied().filter(|b| b.index != gone).collect();
                let survivors: Vec<u16> = rest.iter().map(|b| b.index).collect();
                let new = build(&rest, M).unwrap();
                for (&o, &nw) in old.iter().zip(&new) {
                    if o == gone {
                        assert!(survivors.contains(&nw), "{weights:?} gone {gone} -> {nw}");
                    }
                }
                assert!(!new.contains(&gone));
            }
        }
    }

    #[test]
    fn duplicate_keys_are_rejected() {
        let mut backends = equal(4);
        backends.push(Backend {
            index: 9,
            ..backends[2]
        });
        let key = backends[2].key;
        assert_eq!(build(&backends, M), Err(RingError::DuplicateKey { key }));
        // Even when one copy is not in the ring.
        backends[4].weight = 0;
        assert_eq!(build(&backends, M), Err(RingError::DuplicateKey { key }));
    }

    #[test]
    fn more_backends_than_entries_are_rejected() {
        assert_eq!(
            build(&equal(252), MIN_RING_SIZE),
            Err(RingError::TooManyBackends {
                count: 252,
                size: MIN_RING_SIZE
            })
        );
        // Unweighted backends do not count.
        let mut backends = equal(252);
        backends[0].weight = 0;
        assert!(build(&backends, MIN_RING_SIZE).is_ok());
    }

    #[test]
    fn invalid_sizes_are_rejected_before_anything_else() {
        assert_eq!(build(&[], 65_536), Err(RingError::NotPrime { size: 65_536 }));
        assert_eq!(
            build(&equal(3), 250),
            Err(RingError::TooSmall {
                size: 250,
                min: MIN_RING_SIZE
            })
        );
    }

    #[test]
    fn moved_counts_differences() {
        for (old, new, want) in [
            (&[][..], &[][..], 0),
            (&[1, 2, 3][..], &[1, 2, 3][..], 0),
            (&[1, 2, 3][..], &[1, 5, 3][..], 1),
            (&[1, 2, 3][..], &[3, 2, 1][..], 2),
            (&[1, 2, 3][..], &[][..], 3),
            (&[1, 2][..], &[1, 2, 4][..], 1),
        ] {
            assert_eq!(moved(old, new), want, "{old:?} -> {new:?}");
        }
    }

    #[test]
    fn build_is_fast() {
        for weights in [vec![1; 100], (1..=100).collect::<Vec<u32>>()] {
            let backends = pool("e", &weights);
            let mut best = f64::INFINITY;
            for _ in 0..20 {
                let start = Instant::now();
                let table = build(&backends, M).unwrap();
                best = best.min(start.elapsed().as_secs_f64() * 1e3);
                assert_eq!(table.len(), M as usize);
            }
            println!(
                "build {M} x 100, weights {}..={}: best of 20 {best:.3} ms",
                weights[0], weights[99]
            );
            #[cfg(not(debug_assertions))]
            assert!(best < 50.0, "{best} ms");
        }
    }
}
