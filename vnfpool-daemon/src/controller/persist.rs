//! What survives a restart (the state file's schema), and the pools restored from it.
//!
//! Saves are made on the controller's loop only as far as encoding the document (tens of
//! microseconds for a few pools); writing, syncing and renaming it (a few milliseconds, more on
//! a busy disk) happen in the writer task of [`super::work::Saver`], and saves made meanwhile
//! coalesce. A decision is thus written a few milliseconds after its map switch at most, never
//! before it, and a failover never waits for a disk (docs/decisions/2026-12-06-state-saves.md).

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

use super::reconcile::{CapacityError, PoolRt, assign_slots, free_index, next_generation};
use crate::{
    model::{failover::PoolState, health::Now, plan::Resolved, spec::Spec},
    registry::Added,
};

/// The state file's document.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Persisted {
    /// Wall clock at the save, for rebasing the states' instants.
    pub saved_unix: Duration,
    /// The controller's clock at the save.
    pub saved_now: Now,
    pub pools: BTreeMap<String, PersistedPool>,
    /// Elements added at run time (registrations and their keys included) and the SCE's
    /// redundancy requests.
    #[serde(default)]
    pub added: Added,
    /// The flow hash's secret key: a restart after the pins are gone (a reboot) hashes flows as
    /// before, so connections that outlive the data plane keep their Maglev position.
    #[serde(default)]
    pub flow_hash_key: Option<vnfpool_common::flow::HashKey>,
}

/// One pool's saved state.
#[derive(Debug, Serialize, Deserialize)]
pub struct PersistedPool {
    /// Data-plane pool index (stable across reloads and restarts).
    pub index: u32,
    /// Data-plane element index by element name (stable likewise: flow-table entries name it).
    pub slots: BTreeMap<String, u32>,
    pub state: PoolState,
}

impl Persisted {
    /// The document for `pools` and `added` as of `now`.
    #[must_use]
    pub fn of(
        pools: &[PoolRt],
        added: Added,
        flow_hash_key: Option<vnfpool_common::flow::HashKey>,
        now: Now,
    ) -> Self {
        Self {
            saved_unix: SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default(),
            saved_now: now,
            pools: pools
                .iter()
                .map(|p| {
                    (
                        p.spec.name.clone(),
                        PersistedPool {
                            index: p.index,
                            slots: p.slots_by_name(),
                            state: p.state.clone(),
                        },
                    )
                })
                .collect(),
            added,
            flow_hash_key,
        }
    }

    /// `(from, to)` for [`PoolState::rebase`]: the saved clock advanced by the wall-clock time
    /// since the save becomes the current clock.
    fn rebase(&self, now: Now) -> Option<(Now, Now)> {
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).ok()?;
        let since = wall.checked_sub(self.saved_unix)?;
        Some((self.saved_now + since, now))
    }

    /// The pools of `spec` at start-up: the saved index, slots and state of each pool saved,
    /// rebased to `now`; fresh ones otherwise. `next` hands out element generations.
    pub fn restore(
        &self,
        spec: &Spec,
        resolved: Vec<Vec<Resolved>>,
        now: Now,
        next: &mut u64,
    ) -> Result<Vec<PoolRt>, CapacityError> {
        let rebase = self.rebase(now);
        let mut taken: BTreeSet<u32> = BTreeSet::new();
        let mut pools = Vec::with_capacity(spec.pools.len());
        for (pool_spec, resolved) in spec.pools.iter().zip(resolved) {
            let saved = self.pools.get(&pool_spec.name);
            let index = match saved.map(|p| p.index).filter(|i| !taken.contains(i)) {
                Some(i) => i,
                None => free_index(&taken, vnfpool_common::maps::MAX_POOLS, &pool_spec.name, "pools")?,
            };
            taken.insert(index);
            let slots = assign_slots(pool_spec, &saved.map(|p| p.slots.clone()).unwrap_or_default())?;
            let state = match saved {
                Some(p) => {
                    let mut state = p.state.clone();
                    if let Some((from, to)) = rebase {
                        state.rebase(from, to);
                    }
                    state.reconcile(pool_spec);
                    state
                }
                None => PoolState::new(pool_spec),
            };
            let generations = pool_spec.elements.iter().map(|_| next_generation(next)).collect();
            pools.push(PoolRt {
                generations,
                ..PoolRt::new(pool_spec, index, slots, resolved, state, now)
            });
        }
        Ok(pools)
    }
}
