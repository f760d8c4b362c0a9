//! Inputs that decide (probe reports, link events, heartbeats, timers) and the effects of the
//! decisions: map writes, failover records, policy violations, state saves, snapshots.

use std::{
    collections::BTreeSet,
    sync::{Arc, PoisonError},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tokio::time::Instant;
use tracing::{error, info, warn};
use vnfpool_common::{
    addr,
    vip::{PROTO_TCP, PROTO_UDP},
};

use super::{
    Controller,
    persist::Persisted,
    reconcile::Switched,
    snapshot::{FailoverStatus, PathStatus, PoolView, Snapshot, pool_status, summary},
};
use crate::{
    dataplane::{self, Applied, Dataplane, DataplaneError, PoolPlan, Vip},
    health::{ElementRef, ProbeReport, ProbeTarget, link::LinkEvent},
    heartbeat::{Liveness, PathChange, udp::HeartbeatEvent},
    model::{
        failover::{Effect, Event, FailoverRecord, PoolState},
        health::{Health, Now},
        plan::{self, Mapping, PlanError},
        roles::Role,
        spec::Protocol,
    },
    store,
};

/// Failovers kept per pool for `vnfpool status`.
const STATUS_HISTORY: usize = 16;

/// Why a mapping was not written.
#[derive(Debug, thiserror::Error)]
pub(super) enum RemapError {
    #[error("planning the mapping")]
    Plan(#[from] PlanError),
    #[error("data plane")]
    Dataplane(#[from] DataplaneError),
}

impl<D: Dataplane> Controller<D> {
    /// An accepted heartbeat: a silent or new element is up at once; its silence will be
    /// judged one miss limit after its last heartbeat.
    pub(super) fn heartbeat(&mut self, event: HeartbeatEvent) {
        let Some(&(p, e)) = self.agents.get(&event.id) else {
            return;
        };
        if let Some(path) = event.path_up {
            self.path_changed(p, e, PathChange { path, up: true });
        }
        let miss = self.pools[p].spec.heartbeat.miss_limit();
        self.misses
            .watch(event.id, event.received + miss + Duration::from_micros(1));
        if self.pools[p].state.elements()[e].health() != Health::Up {
            self.step(p, Event::Heartbeat { element: e }, self.now());
        }
    }

    /// Judges the self-registered elements whose miss limit may have passed.
    fn judge_silence(&mut self, now: Now) {
        for id in self.misses.due(now) {
            let Some(&(p, e)) = self.agents.get(&id) else {
                continue;
            };
            let miss = self.pools[p].spec.heartbeat.miss_limit();
            let (liveness, (paths_down, next_path)) = {
                let mut verifier = self.verifier.lock().unwrap_or_else(PoisonError::into_inner);
                (
                    verifier.liveness(id, miss, now),
                    verifier.judge_paths(id, miss, now),
                )
            };
            for change in paths_down {
                self.path_changed(p, e, change);
            }
            let next_element = match liveness {
                Some(Liveness::Live { last }) => Some(last + miss + Duration::from_micros(1)),
                Some(Liveness::Pending) => Some(now + miss),
                Some(Liveness::Failed { silent_since })
                    if self.pools[p].state.elements()[e].health() != Health::Down =>
                {
                    self.step(
                        p,
                        Event::HeartbeatMissed {
                            element: e,
                            silent_since,
                        },
                        now,
                    );
                    None
                }
                None | Some(Liveness::Failed { .. }) => None,
            };
            // One judgement per element is queued: the earlier of its own silence and its
            // paths' (a first copy from an address that is no path refreshes the element
            // alone, so either may come first).
            if let Some(at) = next_element.into_iter().chain(next_path).min() {
                self.misses.watch(id, at);
            }
        }
    }

    /// A heartbeat path of element `e` of pool `p` went silent or came back: logged,
    /// published to operators, shown in the status and the metrics.
    fn path_changed(&mut self, p: usize, e: usize, change: PathChange) {
        let (pool, element) = (&self.pools[p].spec.name, &self.pools[p].spec.elements[e].name);
        let path = change.path.to_string();
        if change.up {
            info!(%pool, %element, %path, "heartbeat path up");
        } else {
            warn!(%pool, %element, %path, "heartbeat path down: silent for longer than the miss limit");
        }
        self.events.heartbeat_path(pool, element, &path, change.up);
        self.dirty = true;
    }

    /// Follows the running pools' self-registered elements: their positions, and a judgement
    /// of the silence of each one not yet watched a miss limit from `now`. A judgement already
    /// queued stays (a registration must not postpone the failure of another element); one of
    /// an element that left finds no position and is dropped when due.
    pub(super) fn sync_agents(&mut self, now: Now) {
        self.agents.clear();
        for (pool, added) in &self.added.pools {
            let Some(p) = self.pool_named(pool) else {
                continue;
            };
            let spec = &self.pools[p].spec;
            for a in &added.elements {
                let (Some(agent), Some(e)) = (&a.agent, spec.elements.iter().position(|e| e.name == a.name))
                else {
                    continue;
                };
                if spec.elements[e].origin.is_agent() {
                    self.agents.insert(agent.id, (p, e));
                    self.misses.watch(agent.id, now + spec.heartbeat.miss_limit());
                }
            }
        }
    }

    /// What the probers probe: every element of every pool but the self-registered ones
    /// (heartbeats judge those), each with its incarnation.
    pub(super) fn probe_targets(&self) -> Vec<ProbeTarget> {
        self.pools
            .iter()
            .flat_map(|pool| {
                pool.spec
                    .elements
                    .iter()
                    .zip(pool.slots.iter().zip(&pool.generations))
                    .filter(|(e, _)| !e.origin.is_agent())
                    .map(|(e, (&slot, &generation))| {
                        let element = ElementRef {
                            pool: pool.index,
                            slot,
                            generation,
                        };
                        ProbeTarget::new(element, &pool.spec.health, e)
                    })
            })
            .collect()
    }

    /// The pool and element positions of `element`, if it is still that incarnation.
    fn locate(&self, element: ElementRef) -> Option<(usize, usize)> {
        let &p = self.by_index.get(&element.pool)?;
        let pool = &self.pools[p];
        let e = pool.slots.iter().position(|&s| s == element.slot)?;
        (pool.generations[e] == element.generation).then_some((p, e))
    }

    pub(super) fn probe(&mut self, report: &ProbeReport) {
        let Some((p, e)) = self.locate(report.element) else {
            // Probed before a reload removed or changed the element.
            return;
        };
        let spec = &self.pools[p].spec;
        if report.outcome.local {
            // This host could not make the probe: no verdict on the element.
            let n = self.metrics.probe_local_error(&spec.name, &spec.elements[e].name);
            // The first, then every power of two: a descriptor flood must not flood the log.
            if n.is_power_of_two() {
                warn!(
                    pool = %spec.name,
                    element = %spec.elements[e].name,
                    detail = report.outcome.detail.as_deref().unwrap_or(""),
                    count = n,
                    "a probe failed on this host (not counted against the element)"
                );
            }
            return;
        }
        self.metrics.probe(
            &spec.name,
            &spec.elements[e].name,
            report.outcome.ok,
            report.outcome.latency,
        );
        self.step(
            p,
            Event::Probe {
                element: e,
                ok: report.outcome.ok,
            },
            self.now(),
        );
    }

    pub(super) fn link_event(&mut self, event: &LinkEvent) {
        let now = self.now();
        let hits: Vec<(usize, usize)> = self
            .pools
            .iter()
            .enumerate()
            .flat_map(|(p, pool)| {
                pool.resolved
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| r.ifindex == event.ifindex)
                    .map(move |(e, _)| (p, e))
            })
            .collect();
        for (p, e) in hits {
            let ev = if event.up {
                Event::LinkUp { element: e }
            } else {
                Event::LinkDown { element: e }
            };
            info!(interface = %event.name, up = event.up, pool = %self.pools[p].spec.name, "link change");
            self.step(p, ev, now);
        }
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.pools
            .iter()
            .filter_map(|p| {
                if p.live {
                    p.state.next_deadline()
                } else {
                    Some(p.live_after)
                }
            })
            .chain(self.misses.next())
            .chain(self.cluster_deadline())
            .min()
            // A deadline beyond what the clock can hold (a state saved by an older version) is
            // no deadline.
            .and_then(|d| self.epoch.checked_add(d))
    }

    pub(super) fn tick(&mut self) {
        let now = self.now();
        self.judge_silence(now);
        for p in 0..self.pools.len() {
            if !self.pools[p].live && now >= self.pools[p].live_after {
                if self.cluster.is_some() {
                    self.first_round_over(p, now);
                } else {
                    self.go_live(p, now);
                }
            } else if (self.pools[p].live || self.cluster.is_some())
                && self.pools[p].state.next_deadline().is_some_and(|d| d <= now)
            {
                self.step(p, Event::Tick, now);
            }
        }
        self.cluster_tick(now);
    }

    /// The pool's first mapping: from now on its elements carry flows. Taken once every
    /// element's health is decided, or when the first round is over (undecided elements are
    /// not used until they rise).
    fn go_live(&mut self, p: usize, now: Now) {
        self.dirty = true;
        self.pools[p].state.mark_carrying();
        if self.write_first(p, now) {
            let pool = &self.pools[p];
            let active: Vec<&str> = pool
                .state
                .elements()
                .iter()
                .filter(|e| e.role() == Role::Active)
                .map(crate::model::failover::ElementState::name)
                .collect();
            info!(pool = %pool.spec.name, ?active, "pool live");
            self.check_ready();
        }
        self.save();
    }

    /// Writes the pool's mapping and VIPs; whether it is live now.
    pub(super) fn write_first(&mut self, p: usize, now: Now) -> bool {
        match self.remap(p, now) {
            Ok(_) => true,
            Err(e) => {
                error!(pool = %self.pools[p].spec.name, error = %e, "first mapping not written; retrying on the next event");
                false
            }
        }
    }

    /// Steps pool `p`'s own state; `None` (logged) when the step is refused.
    pub(super) fn step_state(&mut self, p: usize, event: Event, now: Now) -> Option<Vec<Effect>> {
        let pool = &mut self.pools[p];
        pool.state
            .step(&pool.spec, event, now)
            .inspect_err(|e| error!(error = %e, "decision refused"))
            .ok()
    }

    /// One decision and its effects. Errors are logged: a failed write keeps the last good
    /// mapping in the data plane (fail static), and the next event retries.
    pub(super) fn step(&mut self, p: usize, event: Event, now: Now) {
        if self.cluster.is_some() {
            return self.local_step(p, event, now);
        }
        let decided = Instant::now();
        let Some(effects) = self.step_state(p, event, now) else {
            return;
        };
        // A step without effects changed no role or health: nothing for readers.
        let changed = !effects.is_empty();
        if changed {
            self.dirty = true;
        }
        if !self.pools[p].live {
            // Before the first mapping: decisions accumulate; the pool goes live once settled.
            if self.pools[p].state.is_settled() {
                self.go_live(p, now);
            }
            return;
        }
        let mut switch = None;
        let mut persist = false;
        for effect in effects {
            match effect {
                Effect::Remap => match self.remap(p, now) {
                    Ok(_) => switch = Some(decided.elapsed()),
                    Err(e) => {
                        error!(pool = %self.pools[p].spec.name, error = %e, "mapping not written; the previous one stays");
                    }
                },
                Effect::Record(record) => self.record_failover(p, record, switch.unwrap_or_default()),
                Effect::PolicyViolation(b) => {
                    let pool = &mut self.pools[p];
                    pool.violations += 1;
                    self.metrics.violation(&pool.spec.name);
                    self.events.policy_violation(
                        &pool.spec.name,
                        &b.active,
                        b.backup.as_deref().unwrap_or_default(),
                        &b.risk.shared,
                    );
                    warn!(pool = %pool.spec.name, active = %b.active, backup = %b.explain(), "policy_violation: the backup shares a risk with its active");
                }
                Effect::Persist => persist = true,
            }
        }
        if persist {
            self.save();
        }
        if changed {
            let pool = &self.pools[p];
            self.events.pool(&summary(&pool.spec, &pool.state));
        }
    }

    /// A failover decided for pool `p` and switched in `switch`: logged, counted, sent to the
    /// SCE's event stream and kept for `vnfpool status`.
    pub(super) fn record_failover(&mut self, p: usize, record: FailoverRecord, switch: Duration) {
        info!(
            pool = %record.pool,
            element = %record.element,
            reason = ?record.reason,
            from = ?record.from,
            to = ?record.to,
            replaced_by = ?record.replaced_by,
            detection_ms = record.detection.as_secs_f64() * 1e3,
            switch_us = switch.as_secs_f64() * 1e6,
            "failover"
        );
        self.metrics
            .failover(&record.pool, record.reason.name(), record.detection, switch);
        let at = SystemTime::now();
        self.events.failover(&serde_json::json!({
            "pool": record.pool,
            "element": record.element,
            "reason": record.reason.name(),
            "replaced_by": record.replaced_by,
            "detection_ms": record.detection.as_secs_f64() * 1e3,
            "switch_us": switch.as_secs_f64() * 1e6,
            "decided_at": humantime::format_rfc3339_nanos(at.checked_sub(switch).unwrap_or(at)).to_string(),
        }));
        let pool = &mut self.pools[p];
        pool.recent.push_back(Switched { record, switch, at });
        while pool.recent.len() > STATUS_HISTORY {
            pool.recent.pop_front();
        }
    }

    /// The pool's whole data-plane state as one value.
    pub(super) fn pool_plan(&self, p: usize) -> Result<PoolPlan, PlanError> {
        let pool = &self.pools[p];
        let roles = self.mapped_roles(p);
        let mapping = to_dataplane(plan::plan_roles(&pool.spec, &roles, &pool.resolved)?, &pool.slots);
        let addr = addr::from_ip(pool.spec.vip);
        let proto = match pool.spec.protocol {
            Protocol::Tcp => PROTO_TCP,
            Protocol::Udp => PROTO_UDP,
        };
        Ok(PoolPlan {
            pool: pool.index,
            vips: pool
                .spec
                .ports
                .iter()
                .map(|&port| Vip { addr, port, proto })
                .collect(),
            mapping,
            tx_ports: pool
                .resolved
                .iter()
                .map(|r| r.ifindex)
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
        })
    }

    /// Writes the pool's mapping and VIPs; the pool is live from then on.
    pub(super) fn remap(&mut self, p: usize, _now: Now) -> Result<Applied, RemapError> {
        let plan = self.pool_plan(p)?;
        let applied = self.dp.apply_pool(&plan)?;
        let pool = &mut self.pools[p];
        pool.live = true;
        info!(
            pool = %pool.spec.name,
            generation = applied.generation,
            prepare_us = applied.prepare.as_secs_f64() * 1e6,
            switch_us = applied.switch.as_secs_f64() * 1e6,
            "mapping switched"
        );
        Ok(applied)
    }

    /// Queues the state for the writer (see [`super::persist`]).
    pub(super) fn save(&self) {
        let mut added = self.added.clone();
        {
            // Each registration's last accepted sequence number as of now.
            let verifier = self.verifier.lock().unwrap_or_else(PoisonError::into_inner);
            for e in added.pools.values_mut().flat_map(|p| &mut p.elements) {
                if let Some(agent) = &mut e.agent
                    && let Some(seq) = verifier.last_seq(agent.id)
                {
                    agent.last_seq = Some(seq);
                }
            }
        }
        self.saver.save(store::encode(&Persisted::of(
            &self.pools,
            added,
            self.flow_hash_key,
            self.now(),
        )));
    }

    /// Ready once every pool is live (its mapping is in the data plane after the first round
    /// of health checks, or was adopted): `/ready` answers 200 from then on.
    pub(super) fn check_ready(&mut self) {
        if !self.readiness.is_ready() && self.pools.iter().all(|p| p.live) {
            self.readiness.set();
            self.dirty = true;
            info!(pools = self.pools.len(), "ready: every pool is live");
            if let Err(e) = self.dp.settled() {
                error!(error = %e, "what no pool uses not taken out of the data plane");
            }
            crate::systemd::notify_ready(&format!("{} pools live", self.pools.len()));
        }
    }

    /// Publishes what readers see now.
    pub(super) fn publish(&mut self) {
        self.dirty = false;
        // A cluster node shows its own health with the roles it maps: the decision's.
        let shown: Vec<std::borrow::Cow<'_, PoolState>> = (0..self.pools.len())
            .map(|p| {
                let state = &self.pools[p].state;
                if self.cluster.is_none() {
                    return std::borrow::Cow::Borrowed(state);
                }
                let mut state = state.clone();
                state.adopt_roles(&self.mapped_roles(p));
                std::borrow::Cow::Owned(state)
            })
            .collect();
        let mut pools: Vec<PoolView> = self
            .pools
            .iter()
            .zip(&shown)
            .map(|(p, state)| PoolView {
                index: p.index,
                slots: p.slots.clone(),
                weights: p.spec.elements.iter().map(|e| e.weight).collect(),
                status: pool_status(
                    &p.spec,
                    state,
                    p.recent
                        .iter()
                        .map(|s| FailoverStatus {
                            element: s.record.element.clone(),
                            reason: format!("{:?}", s.record.reason),
                            detection: s.record.detection,
                            switch: s.switch,
                            at_unix: s.at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64(),
                        })
                        .collect(),
                    p.violations,
                ),
            })
            .collect();
        {
            let verifier = self.verifier.lock().unwrap_or_else(PoisonError::into_inner);
            for (&id, &(p, e)) in &self.agents {
                if let Some(status) = pools[p].status.elements.get_mut(e) {
                    status.paths = verifier
                        .paths(id)
                        .into_iter()
                        .map(|c| PathStatus {
                            address: c.path.to_string(),
                            up: c.up,
                        })
                        .collect();
                }
            }
        }
        let summaries: Vec<_> = self
            .pools
            .iter()
            .zip(&shown)
            .map(|(p, state)| summary(&p.spec, state))
            .collect();
        let summaries_json: Arc<str> = serde_json::to_string(&summaries)
            .expect("summaries serialize")
            .into();
        self.snapshot.send_replace(Arc::new(Snapshot {
            pools,
            summaries,
            summaries_json,
            ready: self.readiness.is_ready(),
            cluster: self.cluster_status(),
        }));
    }
}

/// `items`, indexed by position in the pool, placed at their data-plane indices `slots` in a
/// table of `len` (default values where no element is).
fn by_slot<T: Default + Clone>(items: Vec<T>, slots: &[u32], len: usize) -> Vec<T> {
    let mut table = vec![T::default(); len];
    for (item, &slot) in items.into_iter().zip(slots) {
        table[slot as usize] = item;
    }
    table
}

/// The plan's mapping (indexed by position in the pool) in data-plane element indices.
fn to_dataplane(m: Mapping, slots: &[u32]) -> dataplane::Mapping {
    let len = slots.iter().max().map_or(0, |&m| m as usize + 1);
    let elements = by_slot(m.elements, slots, len);
    // An L2 DSR pool has no tunnel table at all.
    let tunnels = if m.tunnels.is_empty() {
        Vec::new()
    } else {
        by_slot(m.tunnels, slots, len)
    };
    let ring = m
        .ring
        .into_iter()
        .map(|pos| slots[usize::from(pos)] as u16)
        .collect();
    dataplane::Mapping {
        ring,
        elements,
        tunnels,
    }
}
