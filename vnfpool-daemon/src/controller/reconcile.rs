//! The pools at run time, and reload as a pure function: (running pools, new configuration,
//! resolved addresses) → the next pools and what to take out of the data plane. Data-plane
//! indices are allocated here: a pool keeps its index and an element its slot while its name
//! stays, because flow-table entries name them.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    time::{Duration, SystemTime},
};

use vnfpool_common::maps;

use crate::model::{
    failover::{FailoverRecord, PoolState},
    health::Now,
    plan::Resolved,
    spec::{PoolSpec, Spec},
};

/// A failover as `status` shows it: the decision's record plus the measured switch.
#[derive(Debug, Clone)]
pub struct Switched {
    pub record: FailoverRecord,
    pub switch: Duration,
    pub at: SystemTime,
}

/// One pool at run time.
#[derive(Debug, Clone)]
pub struct PoolRt {
    pub spec: PoolSpec,
    /// Data-plane pool index.
    pub index: u32,
    /// Data-plane element index of each element, by position in `spec.elements`.
    pub slots: Vec<u32>,
    /// Generation of each element, by position: a new one whenever the element is added or its
    /// configuration changes, so that a probe report about an older incarnation is dropped.
    pub generations: Vec<u64>,
    pub resolved: Vec<Resolved>,
    pub state: PoolState,
    /// Whether this process has written the pool's VIPs and a mapping yet.
    pub live: bool,
    /// Until the pool is live: when to go live even if some element's health is still
    /// undecided (the first health round has had time to finish).
    pub live_after: Now,
    pub recent: VecDeque<Switched>,
    /// Policy violations raised since start.
    pub violations: u64,
}

/// A capacity of the data plane is exhausted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pool {pool}: more than {max} {what}")]
pub struct CapacityError {
    pub pool: String,
    pub what: &'static str,
    pub max: u32,
}

/// What a reload does.
#[derive(Debug)]
pub struct ReloadPlan {
    /// The pools from now on, in the configuration's order.
    pub pools: Vec<PoolRt>,
    /// Data-plane indices of pools to take out of the data plane now (VIPs withdrawn, mapping
    /// cleared): pools that are gone, and pools whose address, ports or protocol changed (they
    /// go live again under the new ones after a first health round).
    pub withdraw: Vec<u32>,
    /// Positions in `pools` of the pools whose configuration changed (or that are new).
    pub changed: Vec<usize>,
}

/// The next element generation.
pub fn next_generation(counter: &mut u64) -> u64 {
    *counter += 1;
    *counter
}

/// Time for every element of a pool to have its health decided once: enough probes for the
/// longer of a rise or a fall run, each up to its timeout, plus slack for scheduling.
#[must_use]
pub fn first_round(spec: &PoolSpec) -> Duration {
    let h = &spec.health;
    (h.interval + h.timeout) * (h.rise.max(h.fall) + 1) + Duration::from_millis(100)
}

/// The lowest index below `max` not in `taken`.
pub fn free_index(
    taken: &BTreeSet<u32>,
    max: u32,
    pool: &str,
    what: &'static str,
) -> Result<u32, CapacityError> {
    (0..max)
        .find(|i| !taken.contains(i))
        .ok_or_else(|| CapacityError {
            pool: pool.to_owned(),
            what,
            max,
        })
}

/// Data-plane element indices for `spec`'s elements: the saved one by name when there is one,
/// else the lowest free.
pub fn assign_slots(spec: &PoolSpec, saved: &BTreeMap<String, u32>) -> Result<Vec<u32>, CapacityError> {
    let names: BTreeSet<&str> = spec.elements.iter().map(|e| e.name.as_str()).collect();
    let mut taken: BTreeSet<u32> = saved
        .iter()
        .filter(|(name, _)| names.contains(name.as_str()))
        .map(|(_, &i)| i)
        .collect();
    spec.elements
        .iter()
        .map(|e| {
            if let Some(&i) = saved.get(&e.name) {
                Ok(i)
            } else {
                let i = free_index(&taken, maps::MAX_ELEMENTS, &spec.name, "elements")?;
                taken.insert(i);
                Ok(i)
            }
        })
        .collect()
}

impl PoolRt {
    /// A pool not live yet, going live at the latest after its first round of health checks.
    #[must_use]
    pub fn new(
        spec: &PoolSpec,
        index: u32,
        slots: Vec<u32>,
        resolved: Vec<Resolved>,
        state: PoolState,
        now: Now,
    ) -> Self {
        Self {
            live_after: now + first_round(spec),
            spec: spec.clone(),
            index,
            slots,
            generations: Vec::new(),
            resolved,
            state,
            live: false,
            recent: VecDeque::new(),
            violations: 0,
        }
    }

    /// The slot of each element by name.
    #[must_use]
    pub fn slots_by_name(&self) -> BTreeMap<String, u32> {
        self.spec
            .elements
            .iter()
            .zip(&self.slots)
            .map(|(e, &s)| (e.name.clone(), s))
            .collect()
    }

    /// Whether the pool routes the same address, ports and protocol as `spec`.
    fn same_vips(&self, spec: &PoolSpec) -> bool {
        self.spec.vip == spec.vip && self.spec.ports == spec.ports && self.spec.protocol == spec.protocol
    }
}

/// What each element of `spec` resolved to when it runs already with the same address,
/// interface and MAC, in a pool that reaches it the same way, through a tunnel or not (`None`:
/// to be resolved).
#[must_use]
pub fn known_resolutions(running: &[PoolRt], spec: &Spec) -> Vec<Vec<Option<Resolved>>> {
    spec.pools
        .iter()
        .map(|pool| {
            let old = running.iter().find(|p| p.spec.name == pool.name);
            pool.elements
                .iter()
                .map(|e| {
                    old.filter(|p| p.spec.forwarding.tunnelled() == pool.forwarding.tunnelled())
                        .and_then(|p| {
                            p.spec
                                .elements
                                .iter()
                                .position(|o| {
                                    o.name == e.name
                                        && o.address == e.address
                                        && o.interface == e.interface
                                        && o.mac == e.mac
                                })
                                .map(|i| p.resolved[i])
                        })
                })
                .collect()
        })
        .collect()
}

/// The pools of `spec` at run time, keeping the indices, slots, state, generations and
/// history of the pools and elements that stay. `next` hands out element generations. Nothing is reused that a packet may still be reading: a removed pool's index
/// is not given to a new pool in the same reload.
pub fn reconcile(
    running: &[PoolRt],
    spec: &Spec,
    resolved: Vec<Vec<Resolved>>,
    now: Now,
    next: &mut u64,
) -> Result<ReloadPlan, CapacityError> {
    let old: HashMap<&str, &PoolRt> = running.iter().map(|p| (p.spec.name.as_str(), p)).collect();
    let mut taken: BTreeSet<u32> = running.iter().map(|p| p.index).collect();
    let mut pools = Vec::with_capacity(spec.pools.len());
    let mut changed = Vec::new();
    let mut withdraw = Vec::new();
    for (pool_spec, resolved) in spec.pools.iter().zip(resolved) {
        let prev = old.get(pool_spec.name.as_str()).copied();
        let index = if let Some(p) = prev {
            p.index
        } else {
            let i = free_index(&taken, maps::MAX_POOLS, &pool_spec.name, "pools")?;
            taken.insert(i);
            i
        };
        let slots = assign_slots(pool_spec, &prev.map(PoolRt::slots_by_name).unwrap_or_default())?;
        let generations = pool_spec
            .elements
            .iter()
            .zip(&resolved)
            .map(|(e, r)| {
                prev.and_then(|p| {
                    let i = p.spec.elements.iter().position(|o| o.name == e.name)?;
                    (p.spec.elements[i] == *e && p.resolved[i] == *r).then(|| p.generations[i])
                })
                .unwrap_or_else(|| next_generation(next))
            })
            .collect();
        let mut state = prev.map_or_else(|| PoolState::new(pool_spec), |p| p.state.clone());
        state.reconcile(pool_spec);
        if prev.is_some_and(|p| p.live && !p.same_vips(pool_spec)) {
            withdraw.push(index);
        }
        if prev.is_none_or(|p| p.spec != *pool_spec) {
            changed.push(pools.len());
        }
        pools.push(PoolRt {
            generations,
            live: prev.is_some_and(|p| p.live && p.same_vips(pool_spec)),
            recent: prev.map(|p| p.recent.clone()).unwrap_or_default(),
            violations: prev.map_or(0, |p| p.violations),
            ..PoolRt::new(pool_spec, index, slots, resolved, state, now)
        });
    }
    withdraw.extend(
        running
            .iter()
            .filter(|p| !spec.pools.iter().any(|s| s.name == p.spec.name))
            .map(|p| p.index),
    );
    Ok(ReloadPlan {
        pools,
        withdraw,
        changed,
    })
}
