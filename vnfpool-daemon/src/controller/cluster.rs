//! The controller as a node of a cluster (see [`crate::cluster`]): its own probes make its
//! verdicts, which it reports; the verdicts of all nodes drive the pool's cluster-wide state;
//! the pool's leader decides from that state, and every node maps the pool from the newest
//! decision. Without a `cluster:` section none of this runs.

use std::collections::{BTreeMap, HashMap};

use tokio::sync::mpsc;
use tracing::{error, info, warn};

use super::Controller;
use crate::{
    cluster::{ClusterInput, ClusterOutput, Decision, Member, Verdicts, merge},
    dataplane::Dataplane,
    model::{
        failover::{Effect, Event, FailoverRecord, PoolState},
        health::{Health, Now},
        roles::Role,
        spec::PoolSpec,
    },
};

/// How the controller reaches the cluster.
pub struct ClusterLink {
    /// This node's name.
    pub node: String,
    /// Writes for the store ([`crate::cluster::run`] carries them out).
    pub out: mpsc::UnboundedSender<ClusterOutput>,
}

/// The cluster as this node knows it.
pub(super) struct ClusterRt {
    node: String,
    out: mpsc::UnboundedSender<ClusterOutput>,
    /// In a session with the store: leads nothing otherwise.
    connected: bool,
    /// Joined, and the lease not known lost since.
    member: bool,
    members: Vec<Member>,
    pools: HashMap<String, ClusterPool>,
}

/// One pool, cluster-wide.
#[derive(Default)]
struct ClusterPool {
    leader: Option<String>,
    /// The newest decision, mapped.
    applied: Option<Decision>,
    /// Driven by the merged verdicts; the leader decides from it.
    state: Option<PoolState>,
    /// Each node's verdicts, this node's included.
    verdicts: BTreeMap<String, Verdicts>,
}

impl ClusterRt {
    pub(super) fn new(link: ClusterLink) -> Self {
        Self {
            node: link.node,
            out: link.out,
            connected: false,
            member: false,
            members: Vec::new(),
            pools: HashMap::new(),
        }
    }

    fn leads(&self, pool: &str) -> bool {
        self.connected
            && self
                .pools
                .get(pool)
                .is_some_and(|p| p.leader.as_deref() == Some(self.node.as_str()))
    }
}

/// What status shows of the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClusterStatus {
    pub node: String,
    /// In a session with the store now.
    pub connected: bool,
    /// A member: joined, and its lease not known lost since (it announces its VIPs).
    pub member: bool,
    pub members: Vec<String>,
    pub pools: Vec<ClusterPoolStatus>,
}

/// One pool's leader and the decision this node applied.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClusterPoolStatus {
    pub pool: String,
    pub leader: Option<String>,
    /// Generation of the decision applied here (0: none yet).
    pub generation: u64,
    pub decided_by: Option<String>,
    /// Each node's verdicts on the elements, as this node last heard them.
    pub verdicts: BTreeMap<String, Verdicts>,
}

impl<D: Dataplane> Controller<D> {
    /// The roles to map pool `p` with: a cluster node's from the decision it applied (every
    /// element out before the first), else the pool state's own.
    pub(super) fn mapped_roles(&self, p: usize) -> Vec<Role> {
        let pool = &self.pools[p];
        match &self.cluster {
            None => pool.state.roles(),
            Some(c) => c
                .pools
                .get(&pool.spec.name)
                .and_then(|cp| cp.applied.as_ref())
                .map_or_else(
                    || vec![Role::Out; pool.spec.elements.len()],
                    |d| d.roles_for(&pool.spec),
                ),
        }
    }

    /// A step of the node's own view of pool `p` (its probes, links, heartbeats): the verdicts
    /// it reports. Its roles map nothing; the cluster's decision does.
    pub(super) fn local_step(&mut self, p: usize, event: Event, now: Now) {
        let Some(effects) = self.step_state(p, event, now) else {
            return;
        };
        // A step without effects changed no health (a change of health asks for a save): most
        // probe reports. Nothing to report, merge or decide for them.
        if effects.is_empty() {
            return;
        }
        self.dirty = true;
        self.report_verdicts(p);
        let pool = &self.pools[p];
        if !pool.live && !pool.state.is_carrying() && pool.state.is_settled() {
            // Every element judged here: the first round is over early.
            self.first_round_over(p, now);
        }
        self.reconsider(p, now);
        if effects.contains(&Effect::Persist) {
            self.save();
        }
    }

    /// The first round of pool `p` is over: from now on the leader may decide with elements
    /// still unknown (they are out until some node sees them up).
    pub(super) fn first_round_over(&mut self, p: usize, now: Now) {
        self.pools[p].state.mark_carrying();
        // No deadline of its own any more: the pool goes live with the first decision.
        self.pools[p].live_after = Now::MAX;
        self.maybe_decide(p, now);
    }

    /// Reports this node's verdicts on pool `p` when they changed.
    fn report_verdicts(&mut self, p: usize) {
        let Some(c) = &mut self.cluster else { return };
        let pool = &self.pools[p];
        let verdicts: Verdicts = pool
            .spec
            .elements
            .iter()
            .zip(pool.state.elements())
            .map(|(e, s)| (e.name.clone(), s.health()))
            .collect();
        let cp = c.pools.entry(pool.spec.name.clone()).or_default();
        if cp.verdicts.get(&c.node) == Some(&verdicts) {
            return;
        }
        cp.verdicts.insert(c.node.clone(), verdicts.clone());
        let _ = c.out.send(ClusterOutput::Verdicts {
            pool: pool.spec.name.clone(),
            verdicts,
        });
    }

    /// Brings pool `p`'s cluster-wide state up to the merged verdicts, then decides if this node
    /// leads the pool and the roles changed.
    fn reconsider(&mut self, p: usize, now: Now) {
        let Some(c) = &mut self.cluster else { return };
        let spec = &self.pools[p].spec;
        let leads = c.leads(&spec.name);
        let cp = c.pools.entry(spec.name.clone()).or_default();
        let state = cluster_state(&mut cp.state, spec);
        let nodes: Vec<&Verdicts> = cp.verdicts.values().collect();
        let merged = merge(spec, &nodes);
        let decided = std::time::Instant::now();
        let mut records = Vec::new();
        for (e, &health) in merged.iter().enumerate() {
            if health == Health::Unknown || state.elements()[e].health() == health {
                continue;
            }
            let verdict = Event::Verdict {
                element: e,
                health,
                since: now,
            };
            match state.step(spec, verdict, now) {
                Ok(effects) => records.extend(failovers(effects)),
                Err(e) => error!(error = %e, "cluster decision refused"),
            }
        }
        self.decide_and_record(p, now, leads, records, decided);
    }

    /// Decides pool `p` if due, then, on its leader, records the failovers of the decision.
    fn decide_and_record(
        &mut self,
        p: usize,
        now: Now,
        leads: bool,
        records: Vec<FailoverRecord>,
        decided: std::time::Instant,
    ) {
        self.maybe_decide(p, now);
        if leads {
            let switch = decided.elapsed();
            for record in records {
                self.record_failover(p, record, switch);
            }
        }
    }

    /// Decides pool `p` if this node leads it and its cluster-wide roles differ from the
    /// decision applied (or none was, and the first round is over or every element is known).
    fn maybe_decide(&mut self, p: usize, now: Now) {
        let Some(c) = &mut self.cluster else { return };
        let pool = &self.pools[p];
        if !c.leads(&pool.spec.name) {
            return;
        }
        let node = c.node.clone();
        let cp = c.pools.entry(pool.spec.name.clone()).or_default();
        let state = cluster_state(&mut cp.state, &pool.spec);
        let roles: BTreeMap<String, Role> = pool
            .spec
            .elements
            .iter()
            .zip(state.roles())
            .map(|(e, r)| (e.name.clone(), r))
            .collect();
        let generation = match &cp.applied {
            Some(d) if d.roles == roles => return,
            Some(d) => d.generation + 1,
            None if state.is_settled() || pool.state.is_carrying() || now >= pool.live_after => 1,
            None => return,
        };
        state.mark_carrying();
        let decision = Decision {
            pool: pool.spec.name.clone(),
            generation,
            leader: node,
            roles,
        };
        let _ = c.out.send(ClusterOutput::Decide(decision.clone()));
        self.apply_decision(p, decision);
    }

    /// Maps pool `p` from `decision`.
    fn apply_decision(&mut self, p: usize, decision: Decision) {
        let Some(c) = &mut self.cluster else { return };
        let spec = &self.pools[p].spec;
        let unknown: Vec<&str> = decision.unknown(spec).collect();
        if !unknown.is_empty() {
            warn!(pool = %spec.name, ?unknown, leader = %decision.leader, "the leader's decision names elements this node's configuration lacks: the nodes' configurations differ");
        }
        info!(pool = %spec.name, generation = decision.generation, leader = %decision.leader, "decision applied");
        c.pools.entry(spec.name.clone()).or_default().applied = Some(decision);
        self.dirty = true;
        let now = self.now();
        match self.remap(p, now) {
            Ok(_) => self.check_ready(),
            Err(e) => {
                error!(pool = %self.pools[p].spec.name, error = %e, "mapping not written; the previous one stays");
            }
        }
    }

    /// Something the cluster said.
    pub(super) fn cluster_input(&mut self, input: ClusterInput) {
        let now = self.now();
        let Some(c) = &mut self.cluster else { return };
        self.dirty = true;
        match input {
            ClusterInput::LeaseLost => c.member = false,
            ClusterInput::Connected(connected) => {
                c.connected = connected;
                c.member |= connected;
                if !connected {
                    // Its leaderships end with its lease; until it is back it leads nothing.
                    for cp in c.pools.values_mut() {
                        cp.leader = None;
                    }
                }
            }
            ClusterInput::Members(members) => c.members = members,
            ClusterInput::Leader { pool, node } => {
                let Some(p) = self.pool_named(&pool) else { return };
                let Some(c) = &mut self.cluster else { return };
                let takes_over = node.as_deref() == Some(c.node.as_str());
                let spec = &self.pools[p].spec;
                let cp = c.pools.entry(pool).or_default();
                cp.leader = node;
                if takes_over {
                    info!(pool = %spec.name, "this node leads the pool");
                    // From the last leader's roles: the takeover itself changes nothing.
                    if let Some(d) = &cp.applied {
                        let roles = d.roles_for(spec);
                        cluster_state(&mut cp.state, spec).adopt_roles(&roles);
                    }
                    self.reconsider(p, now);
                }
            }
            ClusterInput::Decision(decision) => {
                let Some(p) = self.pool_named(&decision.pool) else {
                    return;
                };
                let Some(c) = &mut self.cluster else { return };
                let cp = c.pools.entry(decision.pool.clone()).or_default();
                if decision.supersedes(cp.applied.as_ref()) {
                    self.apply_decision(p, decision);
                }
            }
            ClusterInput::Verdicts { pool, node, verdicts } => {
                let Some(p) = self.pool_named(&pool) else { return };
                let Some(c) = &mut self.cluster else { return };
                if node == c.node {
                    // This node's own, as it wrote them: it knows better now.
                    return;
                }
                let cp = c.pools.entry(pool).or_default();
                match verdicts {
                    Some(v) => cp.verdicts.insert(node, v),
                    None => cp.verdicts.remove(&node),
                };
                self.reconsider(p, now);
            }
        }
    }

    /// The earliest deadline of the pools' cluster-wide states (fail-back periods, drains).
    pub(super) fn cluster_deadline(&self) -> Option<Now> {
        let c = self.cluster.as_ref()?;
        c.pools
            .values()
            .filter_map(|cp| cp.state.as_ref()?.next_deadline())
            .min()
    }

    /// Fires the cluster-wide states' deadlines up to `now`.
    pub(super) fn cluster_tick(&mut self, now: Now) {
        for p in 0..self.pools.len() {
            let Some(c) = &mut self.cluster else { return };
            let spec = &self.pools[p].spec;
            let leads = c.leads(&spec.name);
            let Some(state) = c.pools.get_mut(&spec.name).and_then(|cp| cp.state.as_mut()) else {
                continue;
            };
            if state.next_deadline().is_some_and(|d| d <= now) {
                let decided = std::time::Instant::now();
                let records = match state.step(spec, Event::Tick, now) {
                    Ok(effects) => failovers(effects).collect(),
                    Err(e) => {
                        error!(error = %e, "cluster decision refused");
                        Vec::new()
                    }
                };
                self.decide_and_record(p, now, leads, records, decided);
            }
        }
    }

    /// What status shows of the cluster; `None` on a node on its own.
    pub(super) fn cluster_status(&self) -> Option<ClusterStatus> {
        let c = self.cluster.as_ref()?;
        Some(ClusterStatus {
            node: c.node.clone(),
            connected: c.connected,
            member: c.member,
            members: c.members.iter().map(|m| m.node.clone()).collect(),
            pools: self
                .pools
                .iter()
                .map(|p| {
                    let cp = c.pools.get(&p.spec.name);
                    let applied = cp.and_then(|cp| cp.applied.as_ref());
                    ClusterPoolStatus {
                        pool: p.spec.name.clone(),
                        leader: cp.and_then(|cp| cp.leader.clone()),
                        generation: applied.map_or(0, |d| d.generation),
                        decided_by: applied.map(|d| d.leader.clone()),
                        verdicts: cp.map(|cp| cp.verdicts.clone()).unwrap_or_default(),
                    }
                })
                .collect(),
        })
    }
}

/// The pool's cluster-wide state, made for `spec` on first use and kept in step with it.
fn cluster_state<'s>(state: &'s mut Option<PoolState>, spec: &PoolSpec) -> &'s mut PoolState {
    let state = state.get_or_insert_with(|| PoolState::new(spec));
    state.reconcile(spec);
    state
}

/// The failovers among `effects`.
fn failovers(effects: Vec<Effect>) -> impl Iterator<Item = FailoverRecord> {
    effects.into_iter().filter_map(|effect| match effect {
        Effect::Record(record) => Some(record),
        _ => None,
    })
}
