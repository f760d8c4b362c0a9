//! The flow table as flow sync between cluster nodes sees it: [`FlowEvents`] reads the entries
//! the program records (`VNF_FLOW_EVENTS`), [`AyaFlowTable`] writes peers' entries into
//! `VNF_FLOWS` and reads entries back for refreshes and full dumps.
//!
//! # Writing into a table the program writes too
//! A peer's entry goes where the program would put it ([`place`]): its fingerprint's way if the
//! bucket has it, else the first empty way, else the clock's victim, then the hand moves on.
//! Every store is one aligned 64-bit atomic store into the shared mapping, so a packet sees
//! a way's old entry or its new one, never a mix; used ways stay a prefix of the bucket because
//! an empty way is only ever written when it is the first empty one. A store racing with the
//! program's store into the same way keeps one of the two entries, as two CPUs' stores do
//! (`vnfpool_common::flow`): a flow whose entry is lost so is picked again by its next packet.

use std::os::fd::AsFd as _;

use aya::{
    Ebpf,
    maps::{Array, Map, MapData, MapError, RingBuf},
};
use vnfpool_common::{
    flow::{self, FlowBucket, FlowCtl, FlowEvent, NO_POOL, WAYS, Way},
    maps,
};

use super::{DataplaneError, FlowTable, Inserted, Result, mmap::MappedArray};

/// What [`place`] did with one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placed {
    /// The bucket had the flow on the same element: its stamp refreshed (when it changed).
    Refreshed,
    /// The bucket had the flow on another element: the entry now names the peer's.
    Replaced,
    /// The bucket had the flow on another element, used more recently than the peer's: kept.
    Kept,
    /// Stored in the first empty way.
    Added,
    /// Stored over the bucket's victim (a full bucket).
    Evicted,
}

/// Eight 64-bit ways read and written one atomic word at a time.
pub trait Ways {
    fn load(&self, way: usize) -> u64;
    fn store(&self, way: usize, entry: u64);
}

/// Puts the entry of fingerprint `fp` for `element`, last used `age` stamp units before `now`,
/// into `bucket` by the program's rules (`steer` in `vnfpool-ebpf`). A peer's entry for a flow
/// the bucket has on another element replaces that element (keeping the way and, in way 0, the
/// hand) when the peer used the flow at least as recently as this node, and is ignored
/// otherwise: a late refresh never undoes a newer pick. A stamp only ever moves forward.
pub fn place(bucket: &impl Ways, fp: u64, element: u32, now: u64, age: u64) -> Placed {
    let seen = FlowBucket {
        ways: std::array::from_fn(|w| bucket.load(w)),
    };
    let stamp = now.wrapping_sub(age) & 0xff;
    let entry = flow::entry(fp, stamp, element);
    match seen.find(fp) {
        Way::Hit(way, old) if flow::entry_element(old) == element => {
            if flow::age(flow::entry_stamp(old), now) > age {
                bucket.store(way, flow::restamp(old, stamp));
            }
            Placed::Refreshed
        }
        Way::Hit(_, old) if flow::age(flow::entry_stamp(old), now) < age => Placed::Kept,
        Way::Hit(way, old) => {
            bucket.store(way, flow::with_hand(entry, flow::hand(old)));
            Placed::Replaced
        }
        Way::Empty(way) => {
            bucket.store(way, entry);
            Placed::Added
        }
        Way::Full => {
            let way = seen.victim(now);
            bucket.store(way, entry);
            // Way 0 read again: it may be the way just written.
            let way0 = bucket.load(0);
            bucket.store(0, flow::with_hand(way0, way + 1));
            Placed::Evicted
        }
    }
}

/// Why a peer's entry was not written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// Its pool index is out of range.
    Pool,
    /// Its element index is out of range.
    Element,
    /// Its hash lacks bits this table's bucket index needs (a scan of a smaller table).
    Unplaceable,
}

/// Checks a peer's entry against the table's limits.
pub fn check(event: &FlowEvent, bucket_mask: u32) -> Result<(), Invalid> {
    if u32::from(event.pool) >= maps::MAX_POOLS && event.pool != NO_POOL {
        return Err(Invalid::Pool);
    }
    if u32::from(event.element) >= maps::MAX_ELEMENTS {
        return Err(Invalid::Element);
    }
    if !flow::placeable(event, bucket_mask) {
        return Err(Invalid::Unplaceable);
    }
    Ok(())
}

// === impl AyaFlowTable ===

/// `VNF_FLOWS` through a shared mapping, and `VNF_FLOW_CTL` for the current stamp.
pub struct AyaFlowTable {
    flows: MappedArray<FlowBucket>,
    ctl: Array<MapData, FlowCtl>,
    mask: u32,
}

struct MappedBucket<'a> {
    flows: &'a MappedArray<FlowBucket>,
    index: u32,
}

impl Ways for MappedBucket<'_> {
    fn load(&self, way: usize) -> u64 {
        self.flows.load_word(self.index, way)
    }
    fn store(&self, way: usize, entry: u64) {
        self.flows.store_word(self.index, way, entry);
    }
}

impl AyaFlowTable {
    pub(super) fn new(ebpf: &Ebpf, buckets: u32) -> Result<Self> {
        let flows = match ebpf.map(maps::FLOWS) {
            Some(Map::Array(data)) => {
                MappedArray::new(data.fd(), buckets).map_err(|source| DataplaneError::Mmap {
                    name: maps::FLOWS,
                    source,
                })?
            }
            _ => return Err(missing(maps::FLOWS)),
        };
        let ctl = Array::try_from(Map::Array(own(ebpf, maps::FLOW_CTL)?)).map_err(|source| {
            DataplaneError::Map {
                name: maps::FLOW_CTL,
                source,
            }
        })?;
        Ok(Self {
            flows,
            ctl,
            mask: buckets - 1,
        })
    }

    /// The program's current stamp: entries written now carry it. It is the stamp of the
    /// program's last new flow (user space has no jiffies), so on a node that has recorded no
    /// flow for a while, peers' entries are written older than they are: evicted sooner, never
    /// kept longer, and left out of refreshes until the node records a flow again.
    fn now(&self) -> Result<u64> {
        self.ctl
            .get(&0, 0)
            .map(|c| u64::from(c.stamp))
            .map_err(|source| DataplaneError::Map {
                name: maps::FLOW_CTL,
                source,
            })
    }
}

impl FlowTable for AyaFlowTable {
    fn insert(&self, events: &[FlowEvent]) -> Result<Inserted> {
        let now = self.now()?;
        let mut done = Inserted::default();
        for e in events {
            match check(e, self.mask) {
                Err(Invalid::Pool) => done.bad_pool += 1,
                Err(Invalid::Element) => done.bad_element += 1,
                Err(Invalid::Unplaceable) => done.unplaceable += 1,
                Ok(()) => {
                    let bucket = MappedBucket {
                        flows: &self.flows,
                        index: flow::bucket(e.hash, self.mask),
                    };
                    match place(
                        &bucket,
                        flow::fingerprint(e.hash),
                        u32::from(e.element),
                        now,
                        u64::from(e.age),
                    ) {
                        Placed::Refreshed => done.refreshed += 1,
                        Placed::Replaced => done.replaced += 1,
                        Placed::Kept => done.kept += 1,
                        Placed::Added => done.added += 1,
                        Placed::Evicted => done.evicted += 1,
                    }
                }
            }
        }
        Ok(done)
    }

    fn scan(&self, from: u32, count: u32, recent_only: bool, out: &mut Vec<FlowEvent>) -> Result<u32> {
        let now = self.now()?;
        let buckets = self.mask + 1;
        let end = from.saturating_add(count).min(buckets);
        for index in from.min(end)..end {
            for way in 0..WAYS {
                let entry = self.flows.load_word(index, way);
                if entry == 0 {
                    // Used ways are a prefix of the bucket.
                    break;
                }
                if recent_only && flow::age(flow::entry_stamp(entry), now) >= flow::RECENT {
                    continue;
                }
                out.push(flow::from_entry(entry, index, self.mask, now, NO_POOL));
            }
        }
        Ok(if end >= buckets { 0 } else { end })
    }

    fn buckets(&self) -> u32 {
        self.mask + 1
    }
}

// === impl FlowEvents ===

/// The reader of `VNF_FLOW_EVENTS` (one per ring: the kernel has one consumer position).
pub struct FlowEvents {
    ring: RingBuf<MapData>,
    poll: std::time::Duration,
}

impl FlowEvents {
    pub(super) fn new(ebpf: &Ebpf) -> Result<Self> {
        let ring = RingBuf::try_from(Map::RingBuf(own(ebpf, maps::FLOW_EVENTS)?)).map_err(|source| {
            DataplaneError::Map {
                name: maps::FLOW_EVENTS,
                source,
            }
        })?;
        Ok(Self { ring, poll: POLL_MIN })
    }

    /// Moves up to `max` events that are in the ring now into `out`, without waiting; how many.
    pub fn drain(&mut self, out: &mut Vec<FlowEvent>, max: usize) -> usize {
        let mut n = 0;
        while n < max {
            let Some(item) = self.ring.next() else { break };
            // Records of another size are not ours (none are written): skipped.
            if let Ok(bytes) = <[u8; size_of::<FlowEvent>()]>::try_from(&*item) {
                out.push(event_from_bytes(bytes));
                n += 1;
            }
        }
        n
    }

    /// Waits until the ring has events, then moves up to `max` of them into `out`; how many
    /// (at least one). Cancel-safe: nothing is taken from the ring across an await.
    ///
    /// The program submits without waking the reader (a wake-up check costs it 26 ns per new
    /// flow), so this polls: every [`POLL_MIN`] while events come, backing off to [`POLL_MAX`]
    /// while none do.
    pub async fn read(&mut self, out: &mut Vec<FlowEvent>, max: usize) -> std::io::Result<usize> {
        loop {
            let n = self.drain(out, max);
            if n > 0 {
                self.poll = POLL_MIN;
                return Ok(n);
            }
            tokio::time::sleep(self.poll).await;
            self.poll = (self.poll * 2).min(POLL_MAX);
        }
    }
}

/// Poll period of [`FlowEvents::read`] while events come: the flow-sync batching deadline.
pub const POLL_MIN: std::time::Duration = std::time::Duration::from_millis(1);
/// Poll period of [`FlowEvents::read`] after a quiet while.
pub const POLL_MAX: std::time::Duration = std::time::Duration::from_millis(8);

fn event_from_bytes(b: [u8; 16]) -> FlowEvent {
    FlowEvent {
        hash: u64::from_ne_bytes(b[0..8].try_into().expect("8 bytes")),
        pool: u16::from_ne_bytes([b[8], b[9]]),
        element: u16::from_ne_bytes([b[10], b[11]]),
        exact_bits: b[12],
        age: b[13],
        _pad: [0; 2],
    }
}

fn missing(name: &'static str) -> DataplaneError {
    DataplaneError::Map {
        name,
        source: MapError::InvalidName {
            name: name.to_owned(),
        },
    }
}

/// A map of `ebpf` on a descriptor of its own, for a handle that outlives borrows of `ebpf`.
fn own(ebpf: &Ebpf, name: &'static str) -> Result<MapData> {
    let Some(Map::Array(data) | Map::RingBuf(data)) = ebpf.map(name) else {
        return Err(missing(name));
    };
    let fd = data
        .fd()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|source| DataplaneError::Dup { name, source })?;
    MapData::from_fd(fd).map_err(|source| DataplaneError::Map { name, source })
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    struct Plain([Cell<u64>; WAYS]);
    impl Ways for Plain {
        fn load(&self, way: usize) -> u64 {
            self.0[way].get()
        }
        fn store(&self, way: usize, entry: u64) {
            self.0[way].set(entry);
        }
    }
    fn plain(ways: [u64; WAYS]) -> Plain {
        Plain(ways.map(Cell::new))
    }
    fn ways(b: &Plain) -> [u64; WAYS] {
        std::array::from_fn(|w| b.0[w].get())
    }
    fn fp(n: u64) -> u64 {
        flow::fingerprint(n << 40)
    }

    #[test]
    fn a_peer_entry_fills_the_first_empty_way() {
        let b = plain([flow::entry(fp(1), 3, 7), 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(place(&b, fp(2), 9, 4, 0), Placed::Added);
        assert_eq!(
            ways(&b)[..3],
            [flow::entry(fp(1), 3, 7), flow::entry(fp(2), 4, 9), 0]
        );
    }

    #[test]
    fn a_known_flow_keeps_its_way_and_takes_the_peer_element() {
        let way0 = flow::with_hand(flow::entry(fp(1), 3, 7), 5);
        let b = plain([way0, flow::entry(fp(2), 3, 8), 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            place(&b, fp(1), 7, 3, 0),
            Placed::Refreshed,
            "same element, same stamp"
        );
        assert_eq!(ways(&b)[0], way0, "nothing written");
        assert_eq!(place(&b, fp(1), 7, 6, 4), Placed::Refreshed);
        assert_eq!(
            ways(&b)[0],
            way0,
            "used at 2 by the peer, 3 here: the stamp stays"
        );
        assert_eq!(place(&b, fp(1), 7, 6, 1), Placed::Refreshed);
        assert_eq!(ways(&b)[0], flow::restamp(way0, 5), "restamped to 5, hand kept");
        assert_eq!(
            place(&b, fp(1), 2, 6, 2),
            Placed::Kept,
            "ours (5) is newer than 4"
        );
        assert_eq!(ways(&b)[0], flow::restamp(way0, 5));
        assert_eq!(place(&b, fp(1), 2, 6, 1), Placed::Replaced, "as recent as ours");
        assert_eq!(
            ways(&b)[0],
            flow::with_hand(flow::entry(fp(1), 5, 2), 5),
            "hand kept"
        );
        assert_eq!(ways(&b)[2], 0, "no second entry");
    }

    #[test]
    fn a_full_bucket_gives_up_its_victim_and_moves_the_hand() {
        let full: [u64; WAYS] = std::array::from_fn(|w| flow::entry(fp(w as u64 + 1), 10, 0));
        let b = plain(full);
        assert_eq!(place(&b, fp(99), 4, 10, 0), Placed::Evicted);
        let after = ways(&b);
        assert_eq!(
            after[0],
            flow::with_hand(flow::entry(fp(99), 10, 4), 1),
            "the hand's way (0), hand moved to 1"
        );
        assert_eq!(after[1..], full[1..]);
        assert_eq!(place(&b, fp(100), 4, 10, 0), Placed::Evicted);
        assert_eq!(ways(&b)[1], flow::entry(fp(100), 10, 4));
        assert_eq!(flow::hand(ways(&b)[0]), 2);
    }

    #[test]
    fn out_of_range_entries_are_refused() {
        let ok = FlowEvent {
            hash: 1,
            pool: 0,
            element: 0,
            exact_bits: 64,
            age: 0,
            _pad: [0; 2],
        };
        assert_eq!(check(&ok, 1023), Ok(()));
        assert_eq!(check(&FlowEvent { pool: NO_POOL, ..ok }, 1023), Ok(()));
        assert_eq!(
            check(
                &FlowEvent {
                    pool: maps::MAX_POOLS as u16,
                    ..ok
                },
                1023
            ),
            Err(Invalid::Pool)
        );
        assert_eq!(
            check(
                &FlowEvent {
                    element: maps::MAX_ELEMENTS as u16,
                    ..ok
                },
                1023
            ),
            Err(Invalid::Element)
        );
        assert_eq!(
            check(&FlowEvent { exact_bits: 9, ..ok }, 1023),
            Err(Invalid::Unplaceable)
        );
    }
}
