//! Pool state and the failover state machine: events in (probe outcomes, link events, operator
//! drains, timer ticks), effects out (remap, record, persist). Time is always a parameter.

use std::{
    collections::{HashMap, VecDeque},
    time::Duration,
};

use serde::{Deserialize, Serialize};

use super::{
    health::{self, Cause, Health, HealthChange, HealthCounter, Now},
    placement::{self, Backup},
    roles::{self, DrainView, ElementView, Role},
    spec::PoolSpec,
};

/// Failover records kept in the pool state (the oldest go first).
pub const HISTORY_LEN: usize = 64;

/// How long a replaced active keeps its existing flows when a better element preempts it, unless
/// the pool state says otherwise.
pub const DEFAULT_FAILBACK_DRAIN: Duration = Duration::from_secs(30);

/// Why [`PoolState::step`] refused an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    #[error("pool {pool}: no element at index {element} (the pool has {count})")]
    UnknownElement {
        pool: String,
        element: usize,
        count: usize,
    },
    #[error("pool {pool}: the state holds {state} elements and the spec {spec}; reconcile first")]
    SpecMismatch { pool: String, state: usize, spec: usize },
}

pub type Result<T, E = StepError> = std::result::Result<T, E>;

/// Something that happened to a pool. `element` is the element's index in `PoolSpec::elements`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A probe of the element finished: `ok` when the check passed.
    Probe { element: usize, ok: bool },
    /// The element-facing link went down: the element is down at once.
    LinkDown { element: usize },
    /// The link came back: probes must still rise before the element is up.
    LinkUp { element: usize },
    /// A verified heartbeat of a self-registered element arrived: it is up at once.
    Heartbeat { element: usize },
    /// A self-registered element has sent no verified heartbeat since `silent_since`, for
    /// longer than the pool's miss limit: it is down at once.
    HeartbeatMissed { element: usize, silent_since: Now },
    /// An operator drain: no new flows at once; existing flows may stay for `deadline` from now.
    Drain { element: usize, deadline: Duration },
    /// Ends an operator drain; the element is again subject to health and redundancy.
    Undrain { element: usize },
    /// The cluster's verdict on the element (see `crate::cluster`): `health` at once, from
    /// evidence dating from `since`; `Unknown` changes nothing.
    Verdict {
        element: usize,
        health: Health,
        since: Now,
    },
    /// Time passed: deadlines up to `now` fire. See [`PoolState::next_deadline`].
    Tick,
}

impl Event {
    fn element(self) -> Option<usize> {
        match self {
            Self::Probe { element, .. }
            | Self::LinkDown { element }
            | Self::LinkUp { element }
            | Self::Heartbeat { element }
            | Self::HeartbeatMissed { element, .. }
            | Self::Drain { element, .. }
            | Self::Undrain { element }
            | Self::Verdict { element, .. } => Some(element),
            Self::Tick => None,
        }
    }
}

/// What the controller must do after a step, in this order. The remap comes first because the
/// data-plane switch is on the failover's critical path; persisting can follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// The data-plane state of some element changed: write the mapping from [`super::plan::plan`].
    Remap,
    /// An element stopped taking new flows, or lost its existing ones.
    Record(FailoverRecord),
    /// A live element's backup shares a risk with it because no risk-free standby exists (or
    /// the standbys' capacity went to other actives): raised once per active and backup.
    PolicyViolation(Backup),
    /// The pool state changed in a way that must survive a restart: save it. Probe counts alone
    /// do not ask for it: a restored state restarts its runs, which delays a decision by at most
    /// `rise` or `fall` probes and never changes a role by itself.
    Persist,
}

/// Why an element lost flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// `fall` consecutive probes failed.
    ProbeFailure,
    /// Its link went down.
    LinkDown,
    /// A self-registered element sent no heartbeat for its miss limit.
    HeartbeatMiss,
    /// The cluster's nodes judged it down (none of them reaches it).
    ClusterVerdict,
    /// An operator drained it: new flows go elsewhere, existing ones stay until the deadline.
    Drained,
    /// The operator drain reached its deadline: the remaining flows move.
    DrainDeadline,
    /// A better element took over its new flows (preemption, or a smaller active set).
    Preempted,
    /// The fail-back period after a preemption ended: the remaining flows move.
    FailbackEnded,
}

impl Reason {
    /// Stable name for metrics and logs.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::ProbeFailure => "probe_failure",
            Self::LinkDown => "link_down",
            Self::HeartbeatMiss => "heartbeat_miss",
            Self::ClusterVerdict => "cluster_verdict",
            Self::Drained => "drained",
            Self::DrainDeadline => "drain_deadline",
            Self::Preempted => "preempted",
            Self::FailbackEnded => "failback_ended",
        }
    }
}

/// One failover, as kept in the pool's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailoverRecord {
    pub pool: String,
    /// The element that lost flows.
    pub element: String,
    pub reason: Reason,
    /// Its role before and after the decision.
    pub from: Role,
    pub to: Role,
    /// Elements that became active in the same decision.
    pub replaced_by: Vec<String>,
    /// When the decision was taken.
    pub decided_at: Now,
    /// From the evidence (first failed probe of the run that crossed `fall`, or the link event)
    /// to the decision; zero for operator actions and deadlines.
    pub detection: Duration,
}

/// An operator's hold on an element.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Admin {
    #[default]
    Normal,
    /// Drained: no new flows; existing flows until `until`, then out until undrained.
    Draining { until: Now },
}

/// The state of one element of a pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElementState {
    name: String,
    health: HealthCounter,
    admin: Admin,
    role: Role,
    /// Set while the element keeps existing flows after being replaced while healthy.
    failback_until: Option<Now>,
    /// The failed active this element took over from as its backup; kept while it is active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stand_in: Option<String>,
}

impl ElementState {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            health: HealthCounter::new(),
            admin: Admin::Normal,
            role: Role::Out,
            failback_until: None,
            stand_in: None,
        }
    }

    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    #[must_use]
    pub fn health(&self) -> Health {
        self.health.health()
    }

    #[must_use]
    pub fn counter(&self) -> &HealthCounter {
        &self.health
    }

    #[must_use]
    pub fn admin(&self) -> Admin {
        self.admin
    }

    #[must_use]
    pub fn role(&self) -> Role {
        self.role
    }

    #[must_use]
    pub fn failback_until(&self) -> Option<Now> {
        self.failback_until
    }

    fn view(&self, now: Now) -> ElementView {
        ElementView {
            health: self.health.health(),
            drain: match self.admin {
                Admin::Normal => DrainView::None,
                Admin::Draining { until } if now < until => DrainView::Running,
                Admin::Draining { .. } => DrainView::Done,
            },
            failback: self.failback_until.is_some_and(|until| now < until),
            stand_in: None,
        }
    }
}

fn default_failback() -> Duration {
    DEFAULT_FAILBACK_DRAIN
}

/// Everything the Pool Manager knows about one pool that is not configuration: health, operator
/// drains, roles (hence backup status: the standbys), fail-back periods and recent failovers.
/// Serializable, so the daemon can persist it and restore it after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolState {
    /// How long a preempted active keeps its existing flows.
    #[serde(default = "default_failback")]
    pub failback_drain: Duration,
    elements: Vec<ElementState>,
    history: VecDeque<FailoverRecord>,
    /// Whether a mapping of this pool has reached the data plane, so that elements may carry
    /// flows. Until then nothing carries anything: an active replaced by a better element that
    /// rose later needs no fail-back drain, and no role change is a failover.
    #[serde(default)]
    carrying: bool,
    /// The backup of every active, as of the last role change (see [`placement`]).
    #[serde(default)]
    backups: Vec<Backup>,
    /// The [`Self::candidates`] `backups` were chosen from; `None` until the first placement.
    #[serde(default)]
    placed: Option<(Vec<usize>, Vec<usize>)>,
    /// Whether the roles are what the last full step decided, with nothing changed since but
    /// the clock: then an observation that changes no health changes no role either, until
    /// the next deadline ([`Self::step`]'s fast path). Not persisted, not compared.
    #[serde(skip)]
    decided: Decided,
}

/// [`PoolState::decided`]: a cache's validity, equal whatever its value, so that two states
/// compare by what they hold.
#[derive(Debug, Clone, Copy, Default)]
struct Decided(bool);

impl PartialEq for Decided {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Decided {}

impl PoolState {
    /// A fresh state for `spec`: every element unknown and out, until probes decide.
    #[must_use]
    pub fn new(spec: &PoolSpec) -> Self {
        Self {
            failback_drain: DEFAULT_FAILBACK_DRAIN,
            elements: spec.elements.iter().map(|e| ElementState::new(&e.name)).collect(),
            history: VecDeque::new(),
            carrying: false,
            backups: Vec::new(),
            placed: None,
            decided: Decided(false),
        }
    }

    #[must_use]
    pub fn with_failback_drain(self, failback_drain: Duration) -> Self {
        Self {
            failback_drain,
            ..self
        }
    }

    /// Per element, in the order of `PoolSpec::elements`.
    #[must_use]
    pub fn elements(&self) -> &[ElementState] {
        &self.elements
    }

    #[must_use]
    pub fn roles(&self) -> Vec<Role> {
        self.elements.iter().map(|e| e.role).collect()
    }

    /// Index of the element called `name`.
    #[must_use]
    pub fn position(&self, name: &str) -> Option<usize> {
        self.elements.iter().position(|e| e.name == name)
    }

    /// The backup of every active (in element order), as of the last role change or tick.
    #[must_use]
    pub fn backups(&self) -> &[Backup] {
        &self.backups
    }

    /// The last [`HISTORY_LEN`] failovers, oldest first.
    #[must_use]
    pub fn history(&self) -> &VecDeque<FailoverRecord> {
        &self.history
    }

    /// Records that the pool's mapping is about to reach the data plane: from now on elements
    /// carry flows, replaced actives drain for the fail-back period and lost roles are failovers.
    pub fn mark_carrying(&mut self) {
        self.carrying = true;
        self.decided = Decided(false);
    }

    /// Whether [`Self::mark_carrying`] was called (for this state or the one it was restored from).
    #[must_use]
    pub fn is_carrying(&self) -> bool {
        self.carrying
    }

    /// Whether the health of every element is decided. Until then the pool may lack actives
    /// that it will have once the first probes have risen.
    #[must_use]
    pub fn is_settled(&self) -> bool {
        self.elements.iter().all(|e| e.health() != Health::Unknown)
    }

    /// The earliest pending deadline (operator drain or fail-back period): the controller sends
    /// [`Event::Tick`] then. `None` when nothing is pending.
    #[must_use]
    pub fn next_deadline(&self) -> Option<Now> {
        self.elements
            .iter()
            .filter_map(|e| match (e.role, e.admin) {
                (Role::Draining, Admin::Draining { until }) => Some(until),
                _ => e.failback_until,
            })
            .min()
    }

    /// Follows a changed element list (a reload, or a state restored under another
    /// configuration): elements are matched by name, new ones start unknown and out, removed ones
    /// are forgotten. Returns whether the list changed, in which case the indices moved and the
    /// controller must write a new mapping; then send [`Event::Tick`] to decide roles.
    pub fn reconcile(&mut self, spec: &PoolSpec) -> bool {
        let same = self.elements.len() == spec.elements.len()
            && self
                .elements
                .iter()
                .zip(&spec.elements)
                .all(|(s, e)| s.name == e.name);
        if same {
            return false;
        }
        self.decided = Decided(false);
        let mut old: HashMap<String, ElementState> =
            self.elements.drain(..).map(|e| (e.name.clone(), e)).collect();
        self.elements = spec
            .elements
            .iter()
            .map(|e| old.remove(&e.name).unwrap_or_else(|| ElementState::new(&e.name)))
            .collect();
        true
    }

    /// Moves every stored instant so that `from` (a time of the epoch the state was saved
    /// under) becomes `to` (the same moment in the current epoch), saturating at the epoch.
    /// For a restore after a restart: `from` is the save time plus the wall-clock time elapsed
    /// since, `to` the current `now`.
    pub fn rebase(&mut self, from: Now, to: Now) {
        self.decided = Decided(false);
        for e in &mut self.elements {
            e.health.rebase(from, to);
            if let Admin::Draining { until } = &mut e.admin {
                *until = health::rebase(*until, from, to);
            }
            e.failback_until = e.failback_until.map(|t| health::rebase(t, from, to));
        }
        for r in &mut self.history {
            r.decided_at = health::rebase(r.decided_at, from, to);
        }
    }

    /// Takes `roles` (by position) as the elements' own: a cluster node taking over a pool's
    /// leadership starts from the last leader's decision, so that the takeover itself changes
    /// no role. Backups are chosen again on the next step; health and drains stay.
    pub fn adopt_roles(&mut self, roles: &[Role]) {
        for (e, &role) in self.elements.iter_mut().zip(roles) {
            e.role = role;
        }
        self.placed = None;
        self.carrying = true;
        self.decided = Decided(false);
    }

    /// Applies `event` at `now` and decides the roles again.
    ///
    /// # Errors
    /// [`StepError::SpecMismatch`] when the state does not hold one entry per element of `spec`
    /// (see [`PoolState::reconcile`]); [`StepError::UnknownElement`] when the event names an
    /// element the pool does not have. The state is unchanged in both cases.
    pub fn step(&mut self, spec: &PoolSpec, event: Event, now: Now) -> Result<Vec<Effect>> {
        let count = self.elements.len();
        if count != spec.elements.len() {
            return Err(StepError::SpecMismatch {
                pool: spec.name.clone(),
                state: count,
                spec: spec.elements.len(),
            });
        }
        if let Some(element) = event.element().filter(|&i| i >= count) {
            return Err(StepError::UnknownElement {
                pool: spec.name.clone(),
                element,
                count,
            });
        }

        let mut persist = false;
        let mut change: Option<(usize, HealthChange)> = None;
        match event {
            Event::Probe { element, ok } => {
                change = self.elements[element]
                    .health
                    .observe(&spec.health, ok, now)
                    .map(|c| (element, c));
            }
            Event::LinkDown { element } => {
                let counter = &mut self.elements[element].health;
                persist = !counter.is_link_down();
                change = counter.link_down(now).map(|c| (element, c));
            }
            Event::LinkUp { element } => persist = self.elements[element].health.link_up(),
            Event::Heartbeat { element } => {
                change = self.elements[element].health.heartbeat(now).map(|c| (element, c));
            }
            Event::HeartbeatMissed {
                element,
                silent_since,
            } => {
                change = self.elements[element]
                    .health
                    .heartbeat_missed(silent_since)
                    .map(|c| (element, c));
            }
            Event::Verdict {
                element,
                health,
                since,
            } => {
                change = self.elements[element]
                    .health
                    .verdict(health, since)
                    .map(|c| (element, c));
            }
            Event::Drain { element, deadline } => persist = self.drain(element, Some(deadline), now),
            Event::Undrain { element } => persist = self.drain(element, None, now),
            Event::Tick => {}
        }
        persist |= change.is_some();
        // The fast path of the many probes and heartbeats that change nothing: the roles were
        // decided on the same views (health unchanged, no drain or fail-back deadline passed),
        // so deciding again would give the same roles, backups and effects: none.
        if !persist
            && self.decided.0
            && matches!(event, Event::Probe { .. } | Event::Heartbeat { .. })
            && self.next_deadline().is_none_or(|d| d > now)
        {
            return Ok(Vec::new());
        }

        // The event itself changes health and drains, never roles.
        let before = self.roles();
        self.reassign(spec, now);
        self.decided = Decided(true);
        let after = self.roles();
        // Placement is decided again when the actives or the candidates change, and on ticks
        // (which follow reloads): not on every probe.
        let violations = if self.placed != Some(self.candidates()) || event == Event::Tick {
            self.place(spec)
        } else {
            Vec::new()
        };

        let mut effects = Vec::new();
        if before
            .iter()
            .zip(&after)
            .any(|(b, a)| b.dataplane_state() != a.dataplane_state())
        {
            effects.push(Effect::Remap);
        }
        let records = if self.carrying {
            self.records(spec, &before, change, now)
        } else {
            Vec::new()
        };
        for record in records {
            if self.history.len() == HISTORY_LEN {
                self.history.pop_front();
            }
            self.history.push_back(record.clone());
            effects.push(Effect::Record(record));
            persist = true;
        }
        effects.extend(violations.into_iter().map(Effect::PolicyViolation));
        if persist || before != after {
            effects.push(Effect::Persist);
        }
        Ok(effects)
    }

    /// An operator drain with its `deadline` from `now`, or its end (`None`); whether the
    /// state changed.
    fn drain(&mut self, element: usize, deadline: Option<Duration>, now: Now) -> bool {
        let e = &mut self.elements[element];
        match (deadline, e.admin) {
            (Some(deadline), _) => {
                e.admin = Admin::Draining {
                    until: now.saturating_add(deadline),
                };
                e.failback_until = None;
                true
            }
            (None, Admin::Draining { until }) => {
                e.admin = Admin::Normal;
                // Flows kept by the drain were promised until its deadline: if the element
                // does not become active again, they keep that promise as a fail-back period.
                if e.role == Role::Draining && now < until {
                    e.failback_until = Some(until);
                }
                true
            }
            (None, Admin::Normal) => false,
        }
    }

    /// Chooses the backup of every active among the eligible others and returns the
    /// violations that were not there before.
    fn place(&mut self, spec: &PoolSpec) -> Vec<Backup> {
        let (actives, standbys) = self.candidates();
        let backups = placement::choose(spec, &actives, &standbys);
        self.placed = Some((actives, standbys));
        let fresh = backups
            .iter()
            .filter(|b| {
                b.is_violation()
                    && !self
                        .backups
                        .iter()
                        .any(|old| old.is_violation() && old.active == b.active && old.backup == b.backup)
            })
            .cloned()
            .collect();
        self.backups = backups;
        fresh
    }

    /// The actives, and the elements that may back them up: healthy, not drained, not active.
    fn candidates(&self) -> (Vec<usize>, Vec<usize>) {
        let mut actives = Vec::new();
        let mut standbys = Vec::new();
        for (i, e) in self.elements.iter().enumerate() {
            if e.role == Role::Active {
                actives.push(i);
            } else if e.health() == Health::Up && e.admin == Admin::Normal {
                standbys.push(i);
            }
        }
        (actives, standbys)
    }

    /// The views of every element at `now`, stand-ins holding the priority of the active they
    /// replace while it is not eligible.
    fn views(&self, spec: &PoolSpec, now: Now) -> Vec<ElementView> {
        let mut views: Vec<ElementView> = self.elements.iter().map(|e| e.view(now)).collect();
        for (i, e) in self.elements.iter().enumerate() {
            let Some(x) = e.stand_in.as_deref().and_then(|name| self.position(name)) else {
                continue;
            };
            if !views[x].eligible() {
                views[i].stand_in = Some(spec.elements[x].priority);
            }
        }
        views
    }

    /// An active that loses its place hands it to its backup: the backup stands in for it.
    fn hand_over(&mut self, views: &[ElementView]) {
        for x in 0..self.elements.len() {
            if self.elements[x].role != Role::Active || views[x].eligible() {
                continue;
            }
            let name = &self.elements[x].name;
            let Some(b) = self
                .backups
                .iter()
                .find(|b| &b.active == name)
                .and_then(|b| b.backup.as_deref())
                .and_then(|backup| self.position(backup))
            else {
                continue;
            };
            let taker = &self.elements[b];
            if views[b].eligible() && taker.role != Role::Active && taker.stand_in.is_none() {
                self.elements[b].stand_in = Some(name.clone());
            }
        }
    }

    /// One record per element that lost flows between `before` and the current roles: an
    /// active that no longer takes new flows, or a draining element that lost its existing ones.
    fn records(
        &self,
        spec: &PoolSpec,
        before: &[Role],
        change: Option<(usize, HealthChange)>,
        now: Now,
    ) -> Vec<FailoverRecord> {
        let replaced_by: Vec<String> = self
            .elements
            .iter()
            .zip(before)
            .filter(|&(e, &was)| e.role == Role::Active && was != Role::Active)
            .map(|(e, _)| e.name.clone())
            .collect();
        let mut records = Vec::new();
        for (i, (e, &was)) in self.elements.iter().zip(before).enumerate() {
            let lost = match (was, e.role) {
                (Role::Active, Role::Active) => false,
                (Role::Active, _) => true,
                (Role::Draining, to) => !to.keeps_flows(),
                _ => false,
            };
            if !lost {
                continue;
            }
            let (reason, since) = match change {
                Some((j, c)) if j == i && c.to == Health::Down => {
                    let reason = match c.cause {
                        Cause::LinkDown => Reason::LinkDown,
                        Cause::HeartbeatMiss => Reason::HeartbeatMiss,
                        Cause::Cluster => Reason::ClusterVerdict,
                        _ => Reason::ProbeFailure,
                    };
                    (reason, c.since)
                }
                _ => {
                    let drained = matches!(e.admin, Admin::Draining { .. });
                    let reason = match (was, drained) {
                        (Role::Active, true) => Reason::Drained,
                        (Role::Active, false) => Reason::Preempted,
                        (_, true) => Reason::DrainDeadline,
                        (_, false) => Reason::FailbackEnded,
                    };
                    (reason, now)
                }
            };
            records.push(FailoverRecord {
                pool: spec.name.clone(),
                element: e.name.clone(),
                reason,
                from: was,
                to: e.role,
                replaced_by: replaced_by.clone(),
                decided_at: now,
                detection: now.saturating_sub(since),
            });
        }
        records
    }

    /// Decides roles until they are a fixed point: a replaced active starts its fail-back period
    /// in the first round, and with a zero period ends it in the second.
    fn reassign(&mut self, spec: &PoolSpec, now: Now) {
        let failback_until = now.saturating_add(self.failback_drain);
        for _ in 0..4 {
            self.hand_over(&self.elements.iter().map(|e| e.view(now)).collect::<Vec<_>>());
            let view = self.views(spec, now);
            let current = self.roles();
            // Before anything carries flows, the current actives hold nothing to protect: pick
            // the best elements afresh, as if none were active.
            let held: Vec<Role> = if self.carrying {
                current.clone()
            } else {
                current
                    .iter()
                    .map(|&r| if r == Role::Out { r } else { Role::Standby })
                    .collect()
            };
            let next = roles::assign(spec, &view, &held);
            for (e, &role) in self.elements.iter_mut().zip(&next) {
                e.role = role;
                if role != Role::Active {
                    e.stand_in = None;
                }
                if role == Role::Draining && e.admin == Admin::Normal {
                    e.failback_until.get_or_insert(failback_until);
                } else {
                    e.failback_until = None;
                }
            }
            if next == current {
                return;
            }
        }
        debug_assert!(false, "roles did not settle in four rounds");
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use vnfpool_common::element::{STATE_DRAINING, STATE_UP};

    use super::*;
    use crate::model::{
        plan::{Mapping, Resolved, plan},
        spec::RedundancySpec,
        testutil::{AA, AS_PREEMPT, AS_STICKY, n_plus_m, pool},
    };

    fn secs(s: u64) -> Now {
        Duration::from_secs(s)
    }

    #[test]
    fn before_the_first_mapping_a_later_rising_better_element_just_takes_the_role() {
        // Elements rise one by one at start-up, worst first: until the mapping reaches the data
        // plane nothing carries flows, so nobody drains and nothing is a failover.
        let spec = pool(AS_PREEMPT, &[("e1", 300, 1), ("e2", 200, 1), ("e3", 100, 1)]);
        let mut state = PoolState::new(&spec);
        let mut effects = Vec::new();
        for (t, element) in [2, 1, 0].into_iter().enumerate() {
            for k in 0..u64::from(spec.health.rise) {
                let now = secs(10 * t as u64 + k);
                effects.extend(
                    state
                        .step(&spec, Event::Probe { element, ok: true }, now)
                        .expect("step"),
                );
            }
        }
        assert_eq!(state.roles(), vec![Role::Active, Role::Standby, Role::Standby]);
        assert!(
            !effects.iter().any(|e| matches!(e, Effect::Record(_))),
            "no failover before carrying: {effects:?}"
        );
        assert!(state.history().is_empty());
        // Once carrying, the same preemption drains the replaced active.
        state.mark_carrying();
        let mut effects = state
            .step(&spec, Event::LinkDown { element: 0 }, secs(100))
            .expect("step");
        effects.extend(state.step(&spec, Event::Tick, secs(100)).expect("step"));
        assert_eq!(state.roles()[1], Role::Active);
        assert!(
            effects
                .iter()
                .any(|e| matches!(e, Effect::Record(r) if r.element == "e1")),
            "{effects:?}"
        );
    }

    /// A pool, its state and a clock.
    struct Sim {
        spec: PoolSpec,
        state: PoolState,
        now: Now,
    }

    impl Sim {
        fn new(redundancy: RedundancySpec, elements: &[(&str, u32, u32)]) -> Self {
            let spec = pool(redundancy, elements);
            // A pool whose mapping is in the data plane (the case the daemon runs in after start-up).
            let mut state = PoolState::new(&spec);
            state.mark_carrying();
            Self {
                spec,
                state,
                now: Duration::ZERO,
            }
        }

        #[track_caller]
        fn at(&mut self, now: Now, event: Event) -> Vec<Effect> {
            self.now = now;
            self.state
                .step(&self.spec, event, now)
                .unwrap_or_else(|e| panic!("step {event:?} at {now:?}: {e}"))
        }

        /// `rise` good probes of each element, one second apart, from `from`.
        fn rise(&mut self, from: u64, elements: &[usize]) {
            for k in 0..u64::from(self.spec.health.rise) {
                for &element in elements {
                    self.at(secs(from + k), Event::Probe { element, ok: true });
                }
            }
        }

        /// `fall` failed probes of `element`, one second apart, from `from`; the effects of the
        /// last one.
        fn fall(&mut self, from: u64, element: usize) -> Vec<Effect> {
            let fall = u64::from(self.spec.health.fall);
            for k in 0..fall - 1 {
                let effects = self.at(secs(from + k), Event::Probe { element, ok: false });
                assert!(effects.is_empty(), "before fall: {effects:?}");
            }
            self.at(secs(from + fall - 1), Event::Probe { element, ok: false })
        }

        /// Roles as letters: `A`ctive, `S`tandby, d`R`aining, `O`ut.
        fn roles(&self) -> String {
            self.state
                .roles()
                .iter()
                .map(|r| match r {
                    Role::Active => "A",
                    Role::Standby => "S",
                    Role::Draining => "R",
                    Role::Out => "O",
                })
                .collect::<Vec<_>>()
                .join(" ")
        }

        fn record(&self, element: &str, reason: Reason, from: Role, to: Role, by: &[&str]) -> FailoverRecord {
            FailoverRecord {
                pool: "p".to_owned(),
                element: element.to_owned(),
                reason,
                from,
                to,
                replaced_by: by.iter().map(|&s| s.to_owned()).collect(),
                decided_at: self.now,
                detection: Duration::ZERO,
            }
        }
    }

    const PAIR: &[(&str, u32, u32)] = &[("a", 200, 1), ("b", 100, 1)];
    const THREE: &[(&str, u32, u32)] = &[("a", 300, 1), ("b", 200, 1), ("c", 100, 1)];
    const FOUR: &[(&str, u32, u32)] = &[("a", 400, 1), ("b", 300, 1), ("c", 200, 1), ("d", 100, 1)];

    #[test]
    fn elements_are_unknown_and_out_until_probes_rise() {
        let mut sim = Sim::new(AS_PREEMPT, PAIR);
        assert!(!sim.state.is_settled());
        assert_eq!(sim.roles(), "O O");
        assert_eq!(sim.at(secs(0), Event::Probe { element: 0, ok: true }), []);
        assert_eq!(
            sim.at(secs(1), Event::Probe { element: 0, ok: true }),
            [Effect::Remap, Effect::Persist]
        );
        assert_eq!(sim.roles(), "A O");
        sim.rise(2, &[1]);
        assert_eq!(sim.roles(), "A S");
        assert!(sim.state.is_settled());
    }

    #[test]
    fn a_probe_that_changes_no_health_decides_nothing_until_a_deadline_passes() {
        let mut sim = Sim::new(AS_PREEMPT, PAIR);
        sim.rise(0, &[0, 1]);
        assert!(sim.state.decided.0, "a full step decided the roles");
        assert_eq!(sim.at(secs(5), Event::Probe { element: 0, ok: true }), []);
        assert!(sim.state.decided.0);
        sim.at(
            secs(6),
            Event::Drain {
                element: 0,
                deadline: secs(10),
            },
        );
        assert_eq!(sim.roles(), "R A");
        assert_eq!(sim.at(secs(7), Event::Probe { element: 0, ok: true }), []);
        assert_eq!(sim.roles(), "R A");
        // Past the deadline (its tick not yet sent), a probe that changes no health still ends
        // the drain.
        let effects = sim.at(secs(16), Event::Probe { element: 1, ok: true });
        assert!(effects.contains(&Effect::Remap), "{effects:?}");
        assert_eq!(sim.roles(), "O A");
        // A restored or reconciled state decides in full first.
        sim.state.rebase(secs(16), secs(16));
        assert!(!sim.state.decided.0);
    }

    #[test]
    fn active_standby_1_1_fails_over_on_probes() {
        let mut sim = Sim::new(AS_PREEMPT, PAIR);
        sim.rise(0, &[0, 1]);
        assert_eq!(sim.roles(), "A S");
        let effects = sim.fall(10, 0);
        let record = FailoverRecord {
            detection: secs(2),
            ..sim.record("a", Reason::ProbeFailure, Role::Active, Role::Out, &["b"])
        };
        assert_eq!(
            effects,
            [Effect::Remap, Effect::Record(record.clone()), Effect::Persist]
        );
        assert_eq!(sim.roles(), "O A");
        assert_eq!(sim.state.history().iter().collect::<Vec<_>>(), [&record]);
    }

    #[test]
    fn detection_time_runs_from_the_first_failed_probe_of_the_run() {
        for (interval_ms, fall) in [(10, 1), (10, 3), (100, 3), (1_000, 5), (250, 2)] {
            let interval = Duration::from_millis(interval_ms);
            let mut sim = Sim::new(AA, PAIR);
            sim.spec.health.interval = interval;
            sim.spec.health.fall = fall;
            sim.rise(0, &[0, 1]);
            let mut t = secs(10);
            // An earlier run of failures, broken by a success, does not count.
            for _ in 1..fall {
                sim.at(
                    t,
                    Event::Probe {
                        element: 0,
                        ok: false,
                    },
                );
                t += interval;
            }
            sim.at(t, Event::Probe { element: 0, ok: true });
            let mut first = None;
            let mut records = Vec::new();
            for _ in 0..fall {
                t += interval;
                first.get_or_insert(t);
                for effect in sim.at(
                    t,
                    Event::Probe {
                        element: 0,
                        ok: false,
                    },
                ) {
                    if let Effect::Record(r) = effect {
                        records.push(r);
                    }
                }
            }
            let first = first.expect("fall >= 1");
            assert_eq!(records.len(), 1, "{interval_ms} ms x {fall}");
            assert_eq!(records[0].decided_at, t);
            assert_eq!(
                records[0].detection,
                t.saturating_sub(first),
                "{interval_ms} ms x {fall}"
            );
            assert_eq!(records[0].detection, interval * (fall - 1));
        }
    }

    #[test]
    fn link_down_fails_over_at_once_and_link_up_waits_for_probes() {
        let mut sim = Sim::new(AS_PREEMPT, PAIR);
        sim.rise(0, &[0, 1]);
        let effects = sim.at(secs(10), Event::LinkDown { element: 0 });
        let record = sim.record("a", Reason::LinkDown, Role::Active, Role::Out, &["b"]);
        assert_eq!(effects, [Effect::Remap, Effect::Record(record), Effect::Persist]);
        // Repeated: nothing new.
        assert_eq!(sim.at(secs(10), Event::LinkDown { element: 0 }), []);
        // A late probe result from before the link went down does not count.
        assert_eq!(sim.at(secs(11), Event::Probe { element: 0, ok: true }), []);
        assert_eq!(sim.at(secs(11), Event::Probe { element: 0, ok: true }), []);
        assert_eq!(sim.at(secs(12), Event::LinkUp { element: 0 }), [Effect::Persist]);
        assert_eq!(sim.roles(), "O A");
        assert_eq!(sim.at(secs(13), Event::Probe { element: 0, ok: true }), []);
        let effects = sim.at(secs(14), Event::Probe { element: 0, ok: true });
        assert_eq!(sim.roles(), "A R", "preempts once risen");
        assert_eq!(effects[0], Effect::Remap);
    }

    #[test]
    fn preempting_element_takes_new_flows_and_the_old_active_drains_for_the_failback_period() {
        for failback in [DEFAULT_FAILBACK_DRAIN, secs(5)] {
            let mut sim = Sim::new(AS_PREEMPT, PAIR);
            if failback != DEFAULT_FAILBACK_DRAIN {
                sim.state = sim.state.clone().with_failback_drain(failback);
            }
            sim.rise(0, &[0, 1]);
            sim.at(secs(10), Event::LinkDown { element: 0 });
            sim.at(secs(20), Event::LinkUp { element: 0 });
            sim.at(secs(21), Event::Probe { element: 0, ok: true });
            let effects = sim.at(secs(22), Event::Probe { element: 0, ok: true });
            let record = sim.record("b", Reason::Preempted, Role::Active, Role::Draining, &["a"]);
            assert_eq!(effects, [Effect::Remap, Effect::Record(record), Effect::Persist]);
            assert_eq!(sim.roles(), "A R");
            let end = secs(22) + failback;
            assert_eq!(sim.state.next_deadline(), Some(end));
            let just_before = end
                .checked_sub(Duration::from_millis(1))
                .expect("after the epoch");
            assert_eq!(sim.at(just_before, Event::Tick), []);
            assert_eq!(sim.roles(), "A R");
            let effects = sim.at(end, Event::Tick);
            let record = sim.record("b", Reason::FailbackEnded, Role::Draining, Role::Standby, &[]);
            assert_eq!(effects, [Effect::Remap, Effect::Record(record), Effect::Persist]);
            assert_eq!(sim.roles(), "A S");
            assert_eq!(sim.state.next_deadline(), None);
        }
    }

    #[test]
    fn failback_drained_element_takes_over_again_if_the_new_active_fails() {
        let mut sim = Sim::new(AS_PREEMPT, PAIR);
        sim.rise(0, &[0, 1]);
        sim.at(secs(10), Event::LinkDown { element: 0 });
        sim.at(secs(11), Event::LinkUp { element: 0 });
        sim.rise(12, &[0]);
        assert_eq!(sim.roles(), "A R");
        sim.at(secs(15), Event::LinkDown { element: 0 });
        assert_eq!(sim.roles(), "O A");
        assert_eq!(sim.state.next_deadline(), None, "fail-back cancelled");
    }

    #[test]
    fn zero_failback_period_makes_the_old_active_standby_at_once() {
        let mut sim = Sim::new(AS_PREEMPT, PAIR);
        sim.state.failback_drain = Duration::ZERO;
        sim.rise(0, &[0, 1]);
        sim.at(secs(10), Event::LinkDown { element: 0 });
        sim.at(secs(11), Event::LinkUp { element: 0 });
        sim.at(secs(12), Event::Probe { element: 0, ok: true });
        let effects = sim.at(secs(13), Event::Probe { element: 0, ok: true });
        let record = sim.record("b", Reason::Preempted, Role::Active, Role::Standby, &["a"]);
        assert_eq!(effects, [Effect::Remap, Effect::Record(record), Effect::Persist]);
        assert_eq!(sim.roles(), "A S");
        assert_eq!(sim.state.next_deadline(), None);
    }

    #[test]
    fn without_preemption_a_returning_element_stays_standby_until_the_active_fails() {
        let mut sim = Sim::new(AS_STICKY, PAIR);
        sim.rise(0, &[0, 1]);
        sim.at(secs(10), Event::LinkDown { element: 0 });
        sim.at(secs(11), Event::LinkUp { element: 0 });
        sim.at(secs(12), Event::Probe { element: 0, ok: true });
        // Out -> Standby changes nothing in the data plane.
        assert_eq!(
            sim.at(secs(13), Event::Probe { element: 0, ok: true }),
            [Effect::Persist]
        );
        assert_eq!(sim.roles(), "S A");
        for t in 14..100 {
            assert_eq!(sim.at(secs(t), Event::Probe { element: 0, ok: true }), []);
        }
        let effects = sim.fall(100, 1);
        assert_eq!(sim.roles(), "A O");
        assert!(matches!(&effects[1], Effect::Record(r) if r.replaced_by == ["a"]));
    }

    /// Places each element on a host (`h…`) and a site, with the given site costs.
    fn place(sim: &mut Sim, hosts: &[(&str, &str)], costs: &[(&str, &str, u32)]) {
        for (e, &(host, site)) in sim.spec.elements.iter_mut().zip(hosts) {
            e.failure_domains = [("host".to_owned(), host.to_owned())].into();
            e.site = Some(site.to_owned());
        }
        let mut placement = crate::model::spec::PlacementSpec::default();
        for &(from, to, c) in costs {
            placement
                .costs
                .entry(from.to_owned())
                .or_default()
                .insert(to.to_owned(), c);
        }
        sim.spec.placement = std::sync::Arc::new(placement);
    }

    fn backup_of(sim: &Sim, active: &str) -> Option<String> {
        sim.state
            .backups()
            .iter()
            .find(|b| b.active == active)
            .and_then(|b| b.backup.clone())
    }

    #[test]
    fn a_heartbeat_brings_an_element_up_at_once_and_silence_fails_it_dated_from_its_last_heartbeat() {
        // e1 is probed (low priority); e2 registered itself (preferred): one heartbeat makes it
        // active, and the miss decision dates the failure from its silence.
        let mut sim = Sim::new(AS_PREEMPT, &[("e1", 100, 1), ("e2", 200, 1)]);
        sim.rise(0, &[0]);
        assert_eq!(sim.state.roles(), vec![Role::Active, Role::Out]);
        let effects = sim.at(secs(10), Event::Heartbeat { element: 1 });
        assert!(effects.contains(&Effect::Remap), "{effects:?}");
        assert_eq!(sim.state.roles()[1], Role::Active);
        assert_eq!(sim.state.elements()[1].health(), Health::Up);
        // More heartbeats change nothing and ask for nothing.
        assert!(sim.at(secs(11), Event::Heartbeat { element: 1 }).is_empty());
        let effects = sim.at(
            secs(20),
            Event::HeartbeatMissed {
                element: 1,
                silent_since: secs(17),
            },
        );
        assert_eq!(sim.state.roles()[0], Role::Active);
        let record = effects
            .iter()
            .find_map(|e| match e {
                Effect::Record(r) if r.element == "e2" => Some(r),
                _ => None,
            })
            .expect("a failover record");
        assert_eq!(record.reason, Reason::HeartbeatMiss);
        assert_eq!(record.detection, secs(3));
        // A missed decision on an element already down changes nothing.
        let again = sim.at(
            secs(21),
            Event::HeartbeatMissed {
                element: 1,
                silent_since: secs(17),
            },
        );
        assert!(
            !again
                .iter()
                .any(|e| matches!(e, Effect::Record(_) | Effect::Remap)),
            "{again:?}"
        );
        // While its link is down, a heartbeat (one in flight) does not bring it back.
        sim.at(secs(22), Event::LinkDown { element: 1 });
        sim.at(secs(23), Event::Heartbeat { element: 1 });
        assert_eq!(sim.state.elements()[1].health(), Health::Down);
    }

    #[test]
    fn the_backup_of_a_failed_active_takes_over_and_gives_back_on_preemption() {
        // a and b share host h1: c, on h2, backs a up although b has the higher priority.
        let mut sim = Sim::new(AS_PREEMPT, THREE);
        place(&mut sim, &[("h1", "s1"), ("h1", "s1"), ("h2", "s1")], &[]);
        sim.rise(0, &[0, 1, 2]);
        assert_eq!(sim.roles(), "A S S");
        assert_eq!(backup_of(&sim, "a").as_deref(), Some("c"));
        let effects = sim.fall(10, 0);
        assert_eq!(sim.roles(), "O S A", "the backup, not the next by priority");
        assert!(matches!(&effects[1], Effect::Record(r) if r.replaced_by == ["c"]));
        // c stands in for a: b, healthy and of higher priority, does not preempt it.
        for t in 20..30 {
            sim.at(secs(t), Event::Probe { element: 1, ok: true });
        }
        sim.at(secs(30), Event::Tick);
        assert_eq!(sim.roles(), "O S A");
        assert_eq!(backup_of(&sim, "c").as_deref(), Some("b"));
        // a returns and takes its place back; c keeps its flows for the fail-back period.
        sim.rise(40, &[0]);
        assert_eq!(sim.roles(), "A S R");
    }

    #[test]
    fn without_preemption_the_backup_keeps_the_place() {
        let mut sim = Sim::new(AS_STICKY, THREE);
        place(&mut sim, &[("h1", "s1"), ("h1", "s1"), ("h2", "s1")], &[]);
        sim.rise(0, &[0, 1, 2]);
        sim.fall(10, 0);
        assert_eq!(sim.roles(), "O S A");
        sim.rise(20, &[0]);
        assert_eq!(sim.roles(), "S S A");
    }

    #[test]
    fn n_plus_m_promotes_each_failed_actives_own_backup() {
        // Actives a (h1) and b (h2); standbys c (h1) and d (h2): a's backup is d, b's is c.
        let four = &[("a", 400, 1), ("b", 300, 1), ("c", 200, 1), ("d", 100, 1)];
        let mut sim = Sim::new(n_plus_m(2, true), four);
        place(
            &mut sim,
            &[("h1", "s1"), ("h2", "s1"), ("h1", "s1"), ("h2", "s1")],
            &[],
        );
        sim.rise(0, &[0, 1, 2, 3]);
        assert_eq!(sim.roles(), "A A S S");
        assert_eq!(backup_of(&sim, "a").as_deref(), Some("d"));
        assert_eq!(backup_of(&sim, "b").as_deref(), Some("c"));
        sim.at(secs(10), Event::LinkDown { element: 0 });
        assert_eq!(sim.roles(), "O A S A");
    }

    #[test]
    fn a_topology_change_moves_only_backup_roles_and_a_violation_is_raised_once() {
        let mut sim = Sim::new(AS_PREEMPT, THREE);
        place(
            &mut sim,
            &[("h1", "s1"), ("h2", "s2"), ("h3", "s3")],
            &[("s1", "s2", 5), ("s1", "s3", 1)],
        );
        sim.rise(0, &[0, 1, 2]);
        assert_eq!(backup_of(&sim, "a").as_deref(), Some("c"));
        assert_eq!(sim.state.backups()[0].explain(), "c: no shared risk, site cost 1");
        // The costs change (a reload): the same roles, no remap, another backup.
        place(
            &mut sim,
            &[("h1", "s1"), ("h2", "s2"), ("h3", "s3")],
            &[("s1", "s2", 1), ("s1", "s3", 5)],
        );
        let effects = sim.at(secs(10), Event::Tick);
        assert!(!effects.contains(&Effect::Remap), "{effects:?}");
        assert_eq!(sim.roles(), "A S S");
        assert_eq!(backup_of(&sim, "a").as_deref(), Some("b"));
        // Everything on one host: b is the least bad and a violation, raised once.
        place(
            &mut sim,
            &[("h1", "s1"), ("h1", "s2"), ("h1", "s3")],
            &[("s1", "s2", 1), ("s1", "s3", 5)],
        );
        let effects = sim.at(secs(11), Event::Tick);
        assert!(
            matches!(effects.as_slice(), [Effect::PolicyViolation(b)] if b.backup.as_deref() == Some("b")),
            "{effects:?}"
        );
        assert_eq!(sim.at(secs(12), Event::Tick), []);
    }

    #[test]
    fn active_standby_1_n_follows_priority_and_breaks_ties_by_name() {
        let mut sim = Sim::new(AS_PREEMPT, THREE);
        sim.rise(0, &[0, 1, 2]);
        assert_eq!(sim.roles(), "A S S");
        sim.fall(10, 0);
        assert_eq!(sim.roles(), "O A S");
        sim.fall(20, 1);
        assert_eq!(sim.roles(), "O O A");
        sim.fall(30, 2);
        assert_eq!(sim.roles(), "O O O");

        let tied = &[("c", 100, 1), ("a", 100, 1), ("b", 100, 1)];
        let mut sim = Sim::new(AS_PREEMPT, tied);
        // The best first: otherwise the first to rise is active until the best preempts it.
        sim.rise(0, &[1, 0, 2]);
        assert_eq!(sim.roles(), "S A S");
        sim.at(secs(10), Event::LinkDown { element: 1 });
        assert_eq!(sim.roles(), "S O A");
    }

    #[test]
    fn standby_failure_does_not_remap() {
        let mut sim = Sim::new(AS_PREEMPT, THREE);
        sim.rise(0, &[0, 1, 2]);
        assert_eq!(sim.fall(10, 2), [Effect::Persist]);
        assert_eq!(sim.roles(), "A S O");
        assert!(sim.state.history().is_empty());
    }

    #[test]
    fn n_plus_m_promotes_the_best_standby_in_the_same_step() {
        let mut sim = Sim::new(n_plus_m(2, true), FOUR);
        sim.rise(0, &[0, 1, 2, 3]);
        assert_eq!(sim.roles(), "A A S S");
        let effects = sim.fall(10, 0);
        let record = FailoverRecord {
            detection: secs(2),
            ..sim.record("a", Reason::ProbeFailure, Role::Active, Role::Out, &["c"])
        };
        assert_eq!(effects, [Effect::Remap, Effect::Record(record), Effect::Persist]);
        assert_eq!(sim.roles(), "O A A S");
        sim.at(secs(20), Event::LinkDown { element: 2 });
        assert_eq!(sim.roles(), "O A O A");
        // Fewer healthy than N: every healthy element is active.
        sim.at(secs(21), Event::LinkDown { element: 3 });
        assert_eq!(sim.roles(), "O A O O");
        // Without preemption, returning elements refill free places by priority.
        let mut sim = Sim::new(n_plus_m(2, false), FOUR);
        sim.rise(0, &[2, 3]);
        assert_eq!(sim.roles(), "O O A A");
        sim.rise(5, &[0, 1]);
        assert_eq!(sim.roles(), "S S A A");
        sim.at(secs(10), Event::LinkDown { element: 3 });
        assert_eq!(sim.roles(), "A S A O");
    }

    #[test]
    fn active_active_uses_every_healthy_undrained_element() {
        let mut sim = Sim::new(AA, FOUR);
        sim.rise(0, &[0, 1, 2, 3]);
        assert_eq!(sim.roles(), "A A A A");
        let effects = sim.fall(10, 1);
        assert!(matches!(&effects[1], Effect::Record(r) if r.replaced_by.is_empty()));
        assert_eq!(sim.roles(), "A O A A");
        sim.at(
            secs(20),
            Event::Drain {
                element: 3,
                deadline: secs(60),
            },
        );
        assert_eq!(sim.roles(), "A O A R");
        sim.rise(30, &[1]);
        assert_eq!(sim.roles(), "A A A R");
    }

    #[test]
    fn drain_keeps_flows_until_the_deadline_then_out_until_undrained() {
        let mut sim = Sim::new(AA, THREE);
        sim.rise(0, &[0, 1, 2]);
        let effects = sim.at(
            secs(10),
            Event::Drain {
                element: 1,
                deadline: secs(30),
            },
        );
        let record = sim.record("b", Reason::Drained, Role::Active, Role::Draining, &[]);
        assert_eq!(effects, [Effect::Remap, Effect::Record(record), Effect::Persist]);
        assert_eq!(sim.roles(), "A R A");
        assert_eq!(sim.state.next_deadline(), Some(secs(40)));
        // Drain is not failure: probes keep counting, failures still take it out.
        assert_eq!(sim.at(secs(20), Event::Probe { element: 1, ok: true }), []);
        assert_eq!(sim.at(secs(39), Event::Tick), []);
        let effects = sim.at(secs(40), Event::Tick);
        let record = sim.record("b", Reason::DrainDeadline, Role::Draining, Role::Out, &[]);
        assert_eq!(effects, [Effect::Remap, Effect::Record(record), Effect::Persist]);
        assert_eq!(sim.roles(), "A O A");
        assert_eq!(sim.state.next_deadline(), None);
        assert_eq!(sim.at(secs(41), Event::Tick), []);
        assert_eq!(
            sim.at(secs(50), Event::Undrain { element: 1 }),
            [Effect::Remap, Effect::Persist]
        );
        assert_eq!(sim.roles(), "A A A");
        // Undraining an element that is not drained changes nothing.
        assert_eq!(sim.at(secs(51), Event::Undrain { element: 1 }), []);

        // Undrained while down: out until probes rise.
        sim.at(
            secs(60),
            Event::Drain {
                element: 2,
                deadline: secs(5),
            },
        );
        sim.at(secs(61), Event::LinkDown { element: 2 });
        assert_eq!(sim.roles(), "A A O");
        sim.at(secs(62), Event::LinkUp { element: 2 });
        assert_eq!(sim.at(secs(70), Event::Undrain { element: 2 }), [Effect::Persist]);
        assert_eq!(sim.roles(), "A A O");
        sim.rise(71, &[2]);
        assert_eq!(sim.roles(), "A A A");
    }

    #[test]
    fn draining_the_active_hands_new_flows_to_the_standby() {
        let mut sim = Sim::new(AS_STICKY, PAIR);
        sim.rise(0, &[0, 1]);
        let effects = sim.at(
            secs(10),
            Event::Drain {
                element: 0,
                deadline: secs(30),
            },
        );
        let record = sim.record("a", Reason::Drained, Role::Active, Role::Draining, &["b"]);
        assert_eq!(effects, [Effect::Remap, Effect::Record(record), Effect::Persist]);
        assert_eq!(sim.roles(), "R A");
        // Undrained before its deadline: b stays active (no preemption) and a keeps its flows
        // until the drain's deadline, as promised, then stands by.
        assert_eq!(sim.at(secs(20), Event::Undrain { element: 0 }), [Effect::Persist]);
        assert_eq!(sim.roles(), "R A");
        assert_eq!(sim.state.next_deadline(), Some(secs(40)));
        sim.at(secs(40), Event::Tick);
        assert_eq!(sim.roles(), "S A");
    }

    #[test]
    fn drain_with_zero_deadline_is_out_at_once() {
        let mut sim = Sim::new(AA, PAIR);
        sim.rise(0, &[0, 1]);
        let effects = sim.at(
            secs(10),
            Event::Drain {
                element: 0,
                deadline: Duration::ZERO,
            },
        );
        let record = sim.record("a", Reason::Drained, Role::Active, Role::Out, &[]);
        assert_eq!(effects, [Effect::Remap, Effect::Record(record), Effect::Persist]);
    }

    #[test]
    fn bad_events_are_errors_and_change_nothing() {
        let mut sim = Sim::new(AA, PAIR);
        sim.rise(0, &[0, 1]);
        let saved = sim.state.clone();
        for event in [
            Event::Probe {
                element: 2,
                ok: false,
            },
            Event::LinkDown { element: 7 },
            Event::LinkUp { element: usize::MAX },
            Event::Drain {
                element: 2,
                deadline: secs(1),
            },
            Event::Undrain { element: 2 },
        ] {
            let err = sim
                .state
                .step(&sim.spec, event, secs(5))
                .expect_err("unknown element");
            assert!(
                matches!(err, StepError::UnknownElement { count: 2, .. }),
                "{event:?}: {err}"
            );
            assert_eq!(sim.state, saved);
        }
        let bigger = pool(AA, THREE);
        assert_eq!(
            sim.state.step(&bigger, Event::Tick, secs(5)),
            Err(StepError::SpecMismatch {
                pool: "p".to_owned(),
                state: 2,
                spec: 3
            })
        );
        assert_eq!(
            StepError::UnknownElement {
                pool: "p".to_owned(),
                element: 2,
                count: 2
            }
            .to_string(),
            "pool p: no element at index 2 (the pool has 2)"
        );
    }

    #[test]
    fn history_keeps_the_last_records() {
        let mut sim = Sim::new(AS_PREEMPT, PAIR);
        sim.state.failback_drain = Duration::ZERO;
        sim.rise(0, &[0, 1]);
        for k in 0..50 {
            let t = 10 + k * 10;
            sim.at(secs(t), Event::LinkDown { element: 0 });
            sim.at(secs(t + 1), Event::LinkUp { element: 0 });
            sim.rise(t + 2, &[0]);
        }
        // Each round: a link-down, then a preemption.
        assert_eq!(sim.state.history().len(), HISTORY_LEN);
        let last = sim.state.history().back().expect("records");
        assert_eq!((last.element.as_str(), last.reason), ("b", Reason::Preempted));
        assert_eq!(last.decided_at, secs(10 + 49 * 10 + 3));
    }

    #[test]
    fn restored_state_keeps_roles_without_flapping() {
        let mut sim = Sim::new(AS_PREEMPT, THREE);
        sim.rise(0, &[0, 1, 2]);
        sim.at(secs(10), Event::LinkDown { element: 0 });
        sim.at(secs(11), Event::LinkUp { element: 0 });
        sim.rise(12, &[0]);
        sim.at(
            secs(15),
            Event::Drain {
                element: 2,
                deadline: secs(100),
            },
        );
        assert_eq!(sim.roles(), "A R R");
        let json = serde_json::to_string(&sim.state).expect("serializing the pool state");
        let mut restored: PoolState = serde_json::from_str(&json).expect("deserializing the pool state");
        assert_eq!(restored, sim.state);
        assert_eq!(restored.step(&sim.spec, Event::Tick, secs(16)), Ok(vec![]));
        assert_eq!(restored.roles(), sim.state.roles());
        for t in 17..20 {
            for element in 0..3 {
                let effects = restored
                    .step(&sim.spec, Event::Probe { element, ok: true }, secs(t))
                    .expect("probe");
                assert_eq!(effects, []);
            }
        }
        // The saved form names roles and reasons as the API does.
        assert!(json.contains("\"role\":\"draining\""), "{json}");
        assert!(json.contains("\"reason\":\"link-down\""), "{json}");
    }

    #[test]
    fn rebase_moves_deadlines_to_the_new_epoch() {
        let mut sim = Sim::new(AS_PREEMPT, PAIR);
        sim.rise(0, &[0, 1]);
        sim.at(
            secs(1_000),
            Event::Drain {
                element: 1,
                deadline: secs(60),
            },
        );
        sim.at(secs(1_001), Event::LinkDown { element: 0 });
        sim.at(secs(1_002), Event::LinkUp { element: 0 });
        sim.rise(1_003, &[0]);
        assert_eq!(sim.roles(), "A R");
        let mut state = sim.state.clone();
        // Saved at 1_005; the daemon restarts 10 s later with a new epoch, at now = 3 s.
        state.rebase(secs(1_015), secs(3));
        assert_eq!(state.next_deadline(), Some(secs(1_060 - 1_012)));
        assert_eq!(state.history().back().map(|r| r.decided_at), Some(secs(0)));
        assert_eq!(state.step(&sim.spec, Event::Tick, secs(47)), Ok(vec![]));
        let effects = state.step(&sim.spec, Event::Tick, secs(48)).expect("tick");
        assert_eq!(effects.first(), Some(&Effect::Remap));
        assert_eq!(state.roles(), [Role::Active, Role::Out]);
    }

    #[test]
    fn reconcile_matches_elements_by_name() {
        let mut sim = Sim::new(AS_PREEMPT, THREE);
        sim.rise(0, &[0, 1, 2]);
        assert!(!sim.state.reconcile(&sim.spec));
        let spec = pool(AS_PREEMPT, &[("c", 100, 1), ("new", 400, 1), ("a", 300, 1)]);
        assert!(sim.state.reconcile(&spec));
        assert_eq!(sim.state.position("a"), Some(2));
        assert_eq!(sim.state.position("b"), None);
        sim.spec = spec;
        assert_eq!(sim.roles(), "S O A");
        assert_eq!(sim.at(secs(10), Event::Tick), []);
        sim.rise(11, &[1]);
        assert_eq!(sim.roles(), "S A R");
    }

    // === properties ===

    fn redundancy() -> impl Strategy<Value = RedundancySpec> {
        prop_oneof![
            any::<bool>().prop_map(|preempt| RedundancySpec::ActiveStandby { preempt }),
            (1u32..4, any::<bool>()).prop_map(|(active, preempt)| RedundancySpec::NPlusM { active, preempt }),
            Just(RedundancySpec::ActiveActive),
        ]
    }

    /// An event on element `e % n`, with `dt` milliseconds before it.
    fn event() -> impl Strategy<Value = (u64, usize, u8, u64)> {
        (0u64..1_500, 0usize..5, 0u8..16, 0u64..5_000)
    }

    fn make_event((_, e, kind, ms): (u64, usize, u8, u64), n: usize) -> Event {
        let element = e % n;
        match kind {
            0..=5 => Event::Probe { element, ok: true },
            6..=9 => Event::Probe { element, ok: false },
            10 => Event::LinkDown { element },
            11 => Event::LinkUp { element },
            12 => Event::Drain {
                element,
                deadline: Duration::from_millis(ms),
            },
            13 => Event::Undrain { element },
            _ => Event::Tick,
        }
    }

    const NAMES: [&str; 5] = ["a", "b", "c", "d", "e"];

    fn resolved(n: usize) -> Vec<Resolved> {
        (0..n)
            .map(|i| Resolved {
                ifindex: 2,
                dst_mac: [2, 0, 0, 0, 0, i as u8],
                src_mac: [2, 0, 0, 0, 1, 0],
                path: None,
            })
            .collect()
    }

    fn limit(redundancy: RedundancySpec) -> usize {
        match redundancy {
            RedundancySpec::ActiveStandby { .. } => 1,
            RedundancySpec::NPlusM { active, .. } => active as usize,
            RedundancySpec::ActiveActive => usize::MAX,
        }
    }

    fn sticky(redundancy: RedundancySpec) -> bool {
        matches!(
            redundancy,
            RedundancySpec::ActiveActive
                | RedundancySpec::ActiveStandby { preempt: false }
                | RedundancySpec::NPlusM { preempt: false, .. }
        )
    }

    /// The pool of a generated case: elements (priority, weight) named from [`NAMES`], each on
    /// the host of `hosts` at its position (shared hosts make backups differ from the next by
    /// priority: stand-ins happen).
    fn generated_pool(
        redundancy: RedundancySpec,
        elements: &[(u32, u32)],
        rise: u32,
        fall: u32,
        hosts: &[u8],
    ) -> PoolSpec {
        let named: Vec<(&str, u32, u32)> = elements
            .iter()
            .zip(NAMES)
            .map(|(&(p, w), name)| (name, p, w))
            .collect();
        let mut spec = pool(redundancy, &named);
        for (e, host) in spec.elements.iter_mut().zip(hosts) {
            e.failure_domains = [("host".to_owned(), format!("h{host}"))].into();
        }
        spec.health.rise = rise;
        spec.health.fall = fall;
        spec
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

        /// The fast path (an observation that changes no health decides nothing) gives the
        /// same states and effects as deciding again after every event.
        #[test]
        fn the_fast_path_decides_as_a_full_step_would(
            redundancy in redundancy(),
            elements in prop::collection::vec((0u32..3, 1u32..4), 1..=5),
            rise in 1u32..4,
            fall in 1u32..4,
            failback_ms in prop_oneof![Just(0u64), 1u64..5_000],
            events in prop::collection::vec(event(), 0..80),
            hosts in prop::collection::vec(0u8..3, 5),
        ) {
            let spec = generated_pool(redundancy, &elements, rise, fall, &hosts);
            let mut fast = PoolState::new(&spec).with_failback_drain(Duration::from_millis(failback_ms));
            fast.mark_carrying();
            let mut full = fast.clone();
            let mut now = Duration::ZERO;
            for raw in events {
                now += Duration::from_millis(raw.0);
                let event = make_event(raw, elements.len());
                full.decided = Decided(false);
                let by_fast = fast.step(&spec, event, now).expect("step");
                let by_full = full.step(&spec, event, now).expect("step");
                prop_assert_eq!(&by_fast, &by_full, "{:?}", event);
                prop_assert_eq!(&fast, &full, "{:?}", event);
                prop_assert_eq!(fast.backups(), full.backups());
            }
        }

        #[test]
        fn any_event_sequence_keeps_the_invariants(
            redundancy in redundancy(),
            elements in prop::collection::vec((0u32..3, 1u32..4), 1..=5),
            rise in 1u32..4,
            fall in 1u32..4,
            failback_ms in prop_oneof![Just(0u64), 1u64..5_000],
            events in prop::collection::vec(event(), 0..80),
            hosts in prop::collection::vec(0u8..3, 5),
        ) {
            let spec = generated_pool(redundancy, &elements, rise, fall, &hosts);
            let n = elements.len();
            let resolved = resolved(n);
            let mut state = PoolState::new(&spec).with_failback_drain(Duration::from_millis(failback_ms));
            state.mark_carrying();
            let mut now = Duration::ZERO;
            let mut old_plan: Mapping = plan(&spec, &state, &resolved).expect("plan");
            for raw in events {
                now += Duration::from_millis(raw.0);
                let event = make_event(raw, n);
                let old = state.clone();
                let effects = state.step(&spec, event, now).expect("step");
                let new_plan = plan(&spec, &state, &resolved).expect("plan");

                let states = |m: &Mapping| m.elements.iter().map(|e| e.state).collect::<Vec<_>>();
                // Remap exactly when the data plane must change.
                let remap = effects.contains(&Effect::Remap);
                prop_assert_eq!(remap, states(&old_plan) != states(&new_plan), "{:?}", event);
                if !remap {
                    prop_assert_eq!(&old_plan.ring, &new_plan.ring);
                }
                if old.roles() != state.roles() {
                    prop_assert_eq!(effects.last(), Some(&Effect::Persist));
                }

                let mut eligible = 0;
                for (i, e) in state.elements().iter().enumerate() {
                    // (1) Only an up element carries flows.
                    if e.health() != Health::Up {
                        prop_assert!(!e.role().keeps_flows(), "{} {:?}", i, e);
                    }
                    // (2) Only actives are in the table; a draining element keeps its state.
                    let in_ring = new_plan.ring.contains(&(i as u16));
                    prop_assert_eq!(in_ring, e.role() == Role::Active, "{}", i);
                    if e.role() == Role::Draining {
                        prop_assert_eq!(new_plan.elements[i].state, STATE_DRAINING);
                    }
                    // (3) Flows of healthy elements never move: an active that stays up and
                    // undrained keeps its flows (and stays up unless preempted).
                    let was = &old.elements()[i];
                    if was.role() == Role::Active
                        && was.health() == Health::Up
                        && e.health() == Health::Up
                        && e.admin() == Admin::Normal
                    {
                        if sticky(redundancy) {
                            prop_assert_eq!(new_plan.elements[i].state, STATE_UP, "{} {:?}", i, event);
                        } else if failback_ms > 0 {
                            prop_assert!(new_plan.elements[i].keeps_flows(), "{} {:?}", i, event);
                        }
                    }
                    // A draining element keeps its flows until its deadline, whatever else happens.
                    if was.role() == Role::Draining && e.health() == Health::Up {
                        // The latest promise: a new drain's deadline, the drain an undrain
                        // ended, or the running fail-back period.
                        let until = match (was.admin(), e.admin()) {
                            (_, Admin::Draining { until }) | (Admin::Draining { until }, Admin::Normal) => Some(until),
                            (Admin::Normal, Admin::Normal) => was.failback_until(),
                        };
                        if until.is_some_and(|u| now < u) {
                            prop_assert!(e.role().keeps_flows(), "{} {:?}", i, event);
                        }
                    }
                    let view = e.view(now);
                    eligible += usize::from(view.eligible());
                }
                // (4), (5) At most one active (active-standby), N (n+m): exactly as many as
                // there are eligible elements, up to that.
                let actives = state.roles().iter().filter(|&&r| r == Role::Active).count();
                prop_assert_eq!(actives, limit(redundancy).min(eligible));

                // Nothing happens between events but deadlines.
                if let Some(deadline) = state.next_deadline() {
                    prop_assert!(deadline > now);
                }
                let mut idle = state.clone();
                prop_assert_eq!(idle.step(&spec, Event::Tick, now).expect("tick"), vec![]);

                prop_assert!(state.history().len() <= HISTORY_LEN);
                for effect in &effects {
                    if let Effect::Record(r) = effect {
                        prop_assert!(r.from.keeps_flows());
                        prop_assert_eq!(r.decided_at, now);
                    }
                }
                old_plan = new_plan;
            }

            // (6) A restored state is the same state: same roles, and no flapping.
            let json = serde_json::to_string(&state).expect("serializing");
            let mut restored: PoolState = serde_json::from_str(&json).expect("deserializing");
            prop_assert_eq!(&restored, &state);
            prop_assert_eq!(restored.step(&spec, Event::Tick, now).expect("tick"), vec![]);
            prop_assert_eq!(restored.roles(), state.roles());
        }
    }
}
