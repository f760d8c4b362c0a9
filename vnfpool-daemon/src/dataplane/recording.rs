//! [`RecordingDataplane`]: a [`Dataplane`] that records what the controller asks, for tests that
//! need no kernel. Clones share one record, so a test keeps a clone and reads it while the
//! controller owns another.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, PoisonError},
};

use vnfpool_common::pool::PoolSel;

use super::{
    Applied, CounterSnapshot, Dataplane, DataplaneError, DataplaneReader, HeartbeatGuard, PoolPlan, Result,
};

/// One call the controller made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Apply(PoolPlan),
    Remove(u32),
}

#[derive(Debug, Default)]
struct Record {
    changes: Vec<Change>,
    live: BTreeMap<u32, (PoolPlan, u32)>,
    guard: HeartbeatGuard,
    fail_next: Option<String>,
}

/// See the module documentation.
#[derive(Debug, Clone, Default)]
pub struct RecordingDataplane(Arc<Mutex<Record>>);

impl RecordingDataplane {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn record(&self) -> std::sync::MutexGuard<'_, Record> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every call so far, and forgets them.
    #[must_use]
    pub fn take(&self) -> Vec<Change> {
        std::mem::take(&mut self.record().changes)
    }

    /// The plan live for `pool`, if any.
    #[must_use]
    pub fn live(&self, pool: u32) -> Option<PoolPlan> {
        self.record().live.get(&pool).map(|(p, _)| p.clone())
    }

    /// The heartbeat guard as last set.
    #[must_use]
    pub fn guard(&self) -> HeartbeatGuard {
        self.record().guard.clone()
    }

    /// Makes the next call fail with `why`, changing nothing (to test fail-static).
    pub fn fail_next(&self, why: &str) {
        self.record().fail_next = Some(why.to_owned());
    }

    fn check(record: &mut Record, pool: u32) -> Result<()> {
        match record.fail_next.take() {
            Some(what) => Err(DataplaneError::InvalidMapping { pool, what }),
            None => Ok(()),
        }
    }
}

impl Dataplane for RecordingDataplane {
    fn apply_pool(&mut self, plan: &PoolPlan) -> Result<Applied> {
        let mut record = self.record();
        Self::check(&mut record, plan.pool)?;
        record.changes.push(Change::Apply(plan.clone()));
        let generation = record.live.get(&plan.pool).map_or(0, |(_, g)| *g) + 1;
        record.live.insert(plan.pool, (plan.clone(), generation));
        Ok(Applied {
            generation,
            ..Applied::default()
        })
    }

    fn remove_pool(&mut self, pool: u32) -> Result<()> {
        let mut record = self.record();
        Self::check(&mut record, pool)?;
        record.changes.push(Change::Remove(pool));
        record.live.remove(&pool);
        Ok(())
    }

    fn heartbeat_guard(&mut self, guard: &HeartbeatGuard) -> Result<()> {
        self.record().guard = guard.clone();
        Ok(())
    }

    fn reader(&self) -> Arc<dyn DataplaneReader> {
        Arc::new(self.clone())
    }
}

impl DataplaneReader for RecordingDataplane {
    fn read(&self, pools: &[u32]) -> Result<CounterSnapshot> {
        let record = self.record();
        let mut out = CounterSnapshot::default();
        for &pool in pools {
            let generation = record.live.get(&pool).map_or(0, |(_, g)| *g);
            out.pools.insert(
                pool,
                (
                    vnfpool_common::stats::PoolCounters::default(),
                    PoolSel {
                        slot: generation & 1,
                        generation,
                    },
                ),
            );
        }
        Ok(out)
    }
}
