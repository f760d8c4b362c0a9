//! [`AyaReader`]: the counters, live selectors and flow-table occupancy, read through map file
//! descriptors of its own so that any task can read them while the controller writes.

use std::os::fd::AsFd as _;

use aya::{
    Ebpf,
    maps::{Array, Map, MapData, MapError, PerCpuArray},
};
use vnfpool_common::{
    flow::FlowBucket,
    maps,
    pool::Pool,
    stats::{Counters, PoolCounters, Reason},
};

use super::{CounterSnapshot, DataplaneError, DataplaneReader, Result};

/// Buckets read one by one per scrape at most (16,384 buckets: 131,072 flows, a few ms); a
/// larger table is sampled every k-th bucket and the count scaled up.
pub const EXACT_BUCKETS: u32 = 16_384;

/// See the module documentation.
pub struct AyaReader {
    pool_stats: Result<PerCpuArray<MapData, PoolCounters>>,
    reason_stats: Result<PerCpuArray<MapData, Counters>>,
    pools: Result<Array<MapData, Pool>>,
    flows: Result<Array<MapData, FlowBucket>>,
    buckets: u32,
}

impl AyaReader {
    pub(super) fn new(ebpf: &Ebpf, buckets: u32) -> Self {
        Self {
            pool_stats: own(ebpf, maps::POOL_STATS, Map::PerCpuArray),
            reason_stats: own(ebpf, maps::REASON_STATS, Map::PerCpuArray),
            pools: own(ebpf, maps::POOLS, Map::Array),
            flows: own(ebpf, maps::FLOWS, Map::Array),
            buckets,
        }
    }

    fn flow_count(flows: &Array<MapData, FlowBucket>, buckets: u32) -> u64 {
        let stride = buckets.div_ceil(EXACT_BUCKETS).max(1);
        let mut used = 0u64;
        let mut read = 0u64;
        for bucket in (0..buckets).step_by(stride as usize) {
            if let Ok(b) = flows.get(&bucket, 0) {
                used += b.ways.iter().filter(|&&w| w != 0).count() as u64;
                read += 1;
            }
        }
        if read == 0 {
            return 0;
        }
        used * u64::from(buckets) / read
    }
}

/// A map of `ebpf` on a descriptor of its own, as the typed map `T`.
fn own<T>(ebpf: &Ebpf, name: &'static str, kind: fn(MapData) -> Map) -> Result<T>
where
    T: TryFrom<Map, Error = MapError>,
{
    let err = |source| DataplaneError::Map { name, source };
    let data = ebpf.map(name).and_then(|m| match m {
        Map::Array(d) | Map::PerCpuArray(d) => Some(d),
        _ => None,
    });
    let data = data.ok_or_else(|| {
        err(MapError::InvalidName {
            name: name.to_owned(),
        })
    })?;
    let fd = data
        .fd()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|source| DataplaneError::Dup { name, source })?;
    T::try_from(kind(MapData::from_fd(fd).map_err(err)?)).map_err(err)
}

fn ok<T>(r: &Result<T>) -> Result<&T> {
    r.as_ref()
        .map_err(|e| DataplaneError::Unreadable { what: e.to_string() })
}

impl DataplaneReader for AyaReader {
    fn read(&self, pools: &[u32]) -> Result<CounterSnapshot> {
        let pool_stats = ok(&self.pool_stats)?;
        let selectors = ok(&self.pools)?;
        let mut out = CounterSnapshot::default();
        for &pool in pools {
            let counters = pool_stats
                .get(&pool, 0)
                .map_err(|source| DataplaneError::Map {
                    name: maps::POOL_STATS,
                    source,
                })?
                .iter()
                .fold(PoolCounters::default(), PoolCounters::plus);
            let sel = selectors
                .get(&pool, 0)
                .map_err(|source| DataplaneError::Map {
                    name: maps::POOLS,
                    source,
                })?
                .sel;
            out.pools.insert(pool, (counters, sel));
        }
        let reasons = ok(&self.reason_stats)?;
        out.reasons = Reason::ALL
            .iter()
            .map(|&r| {
                let c = reasons
                    .get(&(r as u32), 0)
                    .map(|v| v.iter().fold(Counters::default(), |acc, c| acc.plus(*c)))
                    .unwrap_or_default();
                (r, c)
            })
            .collect();
        out.flows = self
            .flows
            .as_ref()
            .ok()
            .map(|f| Self::flow_count(f, self.buckets));
        Ok(out)
    }
}
