//! The controller as a node of a cluster (see [`crate::cluster`]): its own probes make its
//! verdicts, which it reports; the verdicts of all nodes drive the pool's cluster-wide state;
//! the pool's leader decides from that state, and every node maps the pool from the newest
//! decision. Without a `cluster:` section none of this runs.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, SystemTime},
};

use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn};

use super::{
    Controller,
    changes::{Adopted, Answer, Change, Prepared},
    commands::{AddElement, LevelAnswer, Refusal, RemoveElement, Reply, SetRedundancy},
};
use crate::{
    cluster::{ClusterInput, ClusterOutput, Decision, Drain, Intent, Member, Verdicts, merge},
    dataplane::Dataplane,
    model::{
        failover::{Effect, Event, FailoverRecord, PoolState},
        health::{Health, Now},
        roles::Role,
        spec::PoolSpec,
    },
    registry::AddedElement,
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
    /// Levels asked of this node, by pool, with the actives each asked: answered once the
    /// level comes back from the store and is applied here.
    level_replies: HashMap<String, Vec<(u32, Reply<LevelAnswer>)>>,
    /// Elements added or removed at this node's asking, by pool and element: answered once
    /// the store's change is applied here.
    element_replies: HashMap<(String, String), Adopted>,
    /// The high half of the registration ids this node hands out ([`crate::cluster::node_id`]).
    id_base: u64,
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
        let id_base = crate::cluster::node_id(&link.node) & 0xffff_ffff_0000_0000;
        Self {
            node: link.node,
            out: link.out,
            connected: false,
            member: false,
            members: Vec::new(),
            pools: HashMap::new(),
            level_replies: HashMap::new(),
            element_replies: HashMap::new(),
            id_base,
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
                    for ((pool, element), waiting) in c.element_replies.drain() {
                        waiting.refuse(Refusal::Failed(format!(
                            "{pool}/{element}: this node's session with the cluster's store ended before the change came back; it applies once the node is back (vnfpool status shows the pool)"
                        )));
                    }
                    for (pool, replies) in c.level_replies.drain() {
                        for (active, reply) in replies {
                            let _ = reply.send(Err(Refusal::Failed(format!(
                                "pool {pool}: this node's session with the cluster's store ended before the level of {active} actives came back; it applies once the node is back (vnfpool status shows the pool's level)"
                            ))));
                        }
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
            ClusterInput::Intent {
                pool,
                intent: Intent::Drain { element, drain },
            } => self.cluster_drained(&pool, &element, drain, now),
            ClusterInput::Intent {
                pool,
                intent: Intent::Level { active },
            } => self.cluster_leveled(pool, active),
            ClusterInput::Intent {
                pool,
                intent: Intent::Element { name, element },
            } => self.cluster_element(pool, name, element.map(|e| *e)),
            ClusterInput::Elements(present) => {
                let gone: Vec<(String, String)> = self
                    .added
                    .pools
                    .iter()
                    .flat_map(|(pool, p)| p.elements.iter().map(move |e| (pool.clone(), e.name.clone())))
                    .filter(|k| !present.contains(k))
                    .collect();
                for (pool, name) in gone {
                    info!(%pool, element = %name, "removed from the cluster while this node was away");
                    self.cluster_element(pool, name, None);
                }
            }
        }
    }

    /// A drain (`Some`) or an undrain asked of this node:
    /// written to the store for every node, the pool's leader deciding the roles it leads to.
    /// Refused while this node is out of the store: it would apply only once the node is back.
    pub(super) fn cluster_drain(
        &mut self,
        pool: &str,
        element: &str,
        drain: Option<Drain>,
    ) -> Result<String, Refusal> {
        let p = self.pool_named(pool).ok_or_else(|| Refusal::NoPool {
            pool: pool.to_owned(),
        })?;
        if !self.pools[p].spec.elements.iter().any(|e| e.name == element) {
            return Err(Refusal::NoElement {
                pool: pool.to_owned(),
                element: element.to_owned(),
            });
        }
        let Some(c) = &self.cluster else {
            unreachable!("asked of a cluster node only")
        };
        if !c.connected {
            return Err(Refusal::Failed(format!(
                "{pool}/{element}: this node is out of its session with the cluster's store, which holds drains; ask another node or try again"
            )));
        }
        let _ = c.out.send(ClusterOutput::Intent {
            pool: pool.to_owned(),
            intent: Intent::Drain {
                element: element.to_owned(),
                drain,
            },
        });
        let what = if drain.is_some() { "drain" } else { "undrain" };
        Ok(format!(
            "{pool}/{element}: {what} sent to the cluster; the pool's leader applies it (vnfpool status shows the role)"
        ))
    }

    /// An SCE's redundancy level asked of this node: checked here, then written to the store
    /// for every node; answered once it comes back from the store and is applied here.
    pub(super) fn cluster_level(&mut self, level: SetRedundancy) {
        let SetRedundancy { pool, active, reply } = level;
        match self.prepare_level(&pool, active) {
            Err(why) => return drop(reply.send(Err(why))),
            Ok(Prepared::Done(Answer::Level(answer))) => return drop(reply.send(Ok(answer))),
            Ok(Prepared::Done(_)) => unreachable!("a level answers with a level"),
            Ok(Prepared::Change(_)) => {}
        }
        let Some(c) = &mut self.cluster else {
            unreachable!("asked of a cluster node only")
        };
        if !c.connected {
            return drop(reply.send(Err(Refusal::Failed(format!(
                "pool {pool}: this node is out of its session with the cluster's store, which holds redundancy levels; ask another node or try again"
            )))));
        }
        let _ = c.out.send(ClusterOutput::Intent {
            pool: pool.clone(),
            intent: Intent::Level { active },
        });
        c.level_replies.entry(pool).or_default().push((active, reply));
    }

    /// The registration id for a node's `n`th registration: unique across the cluster's nodes
    /// (their ids differ in the high half), `n` itself on a node on its own.
    pub(super) fn registration_id(&self, n: u64) -> u64 {
        self.cluster.as_ref().map_or(n, |c| c.id_base | (n & 0xffff_ffff))
    }

    /// An element added at run time, asked of this node: checked here (a registration gets
    /// its id and key here), then written to the store for every node; answered once the
    /// store's change is applied here.
    pub(super) fn cluster_add(&mut self, add: AddElement) {
        let AddElement {
            pool,
            element,
            body,
            origin,
            subject,
            reply,
        } = add;
        let pending = match self.prepare_add(&pool, &element, &body, origin, subject.as_deref()) {
            Err(why) => return drop(reply.send(Err(why))),
            Ok(Prepared::Done(Answer::Added(answer))) => return drop(reply.send(Ok(answer))),
            Ok(Prepared::Done(_)) => unreachable!("an addition answers with an element"),
            Ok(Prepared::Change(pending)) => pending,
        };
        let Some(new) = pending
            .added
            .pools
            .get(&pool)
            .and_then(|p| p.elements.iter().find(|e| e.name == element))
            .cloned()
        else {
            unreachable!("a prepared addition holds the element")
        };
        // The id is handed out now, whether or not the store takes the element.
        if self.added.next_id != pending.added.next_id {
            self.added.next_id = pending.added.next_id;
            self.dirty = true;
            self.save();
        }
        self.ask_cluster(pool, element, Some(new), Adopted::Add(reply));
    }

    /// The removal of an element added at run time, asked of this node: checked here, then
    /// written to the store for every node; answered once applied here.
    pub(super) fn cluster_remove(&mut self, remove: RemoveElement) {
        let RemoveElement {
            pool,
            element,
            subject,
            reply,
        } = remove;
        match self.prepare_remove(&pool, &element, subject.as_deref()) {
            Err(why) => drop(reply.send(Err(why))),
            Ok(Prepared::Done(_)) => unreachable!("a removal always changes something"),
            Ok(Prepared::Change(_)) => self.ask_cluster(pool, element, None, Adopted::Remove(reply)),
        }
    }

    /// Writes `element` of `pool` (`None`: its removal) to the store, `waiting` for it to come
    /// back; refused while this node is out of the store.
    fn ask_cluster(&mut self, pool: String, element: String, new: Option<AddedElement>, waiting: Adopted) {
        let Some(c) = &mut self.cluster else {
            unreachable!("asked of a cluster node only")
        };
        if !c.connected {
            return waiting.refuse(Refusal::Failed(format!(
                "{pool}/{element}: this node is out of its session with the cluster's store, which holds the elements added at run time; ask another node or try again"
            )));
        }
        let _ = c.out.send(ClusterOutput::Intent {
            pool: pool.clone(),
            intent: Intent::Element {
                name: element.clone(),
                element: new.map(Box::new),
            },
        });
        c.element_replies.insert((pool, element), waiting);
    }

    /// An element added, changed or removed at run time, from the store: this node's run-time
    /// elements follow, which answers the request that asked for it if it was asked here.
    fn cluster_element(&mut self, pool: String, name: String, element: Option<AddedElement>) {
        let waiting = self
            .cluster
            .as_mut()
            .and_then(|c| c.element_replies.remove(&(pool.clone(), name.clone())))
            .unwrap_or(Adopted::Nobody);
        let mut added = self.added.clone();
        match element {
            Some(e) => {
                let elements = &mut added.pools.entry(pool.clone()).or_default().elements;
                match elements.iter().position(|x| x.name == name) {
                    Some(i) => elements[i] = e,
                    None => elements.push(e),
                }
            }
            None => {
                if let Some(p) = added.pools.get_mut(&pool) {
                    p.elements.retain(|x| x.name != name);
                }
            }
        }
        self.try_change(Change::Adopt {
            pool,
            element: name,
            added: Box::new(added),
            reply: waiting,
        });
    }

    /// A redundancy level from the store: applied here as a change of the pool's level, which
    /// answers the request that asked for it if it was asked of this node.
    fn cluster_leveled(&mut self, pool: String, active: u32) {
        let reply = self
            .cluster
            .as_mut()
            .and_then(|c| c.level_replies.get_mut(&pool))
            .and_then(|replies| {
                let i = replies.iter().position(|(a, _)| *a == active)?;
                Some(replies.remove(i).1)
            })
            .unwrap_or_else(|| oneshot::channel().0);
        info!(%pool, active, "redundancy level from the cluster");
        self.try_change(Change::Level(SetRedundancy { pool, active, reply }));
    }

    /// A drain or undrain from the store: steps the pool's cluster-wide state, which its
    /// leader decides from.
    fn cluster_drained(&mut self, pool: &str, element: &str, drain: Option<Drain>, now: Now) {
        let Some(p) = self.pool_named(pool) else { return };
        let spec = &self.pools[p].spec;
        let Some(e) = spec.elements.iter().position(|x| x.name == element) else {
            warn!(%pool, %element, "a drain names an element this node's configuration lacks: the nodes' configurations differ");
            return;
        };
        let event = match drain {
            Some(d) => Event::Drain {
                element: e,
                deadline: d.remaining(unix_ms()).unwrap_or(super::changes::FOREVER),
            },
            None => Event::Undrain { element: e },
        };
        info!(%pool, %element, ?drain, "drain from the cluster");
        self.cluster_step(p, event, now);
    }

    /// Pool `p`'s configuration changed (a reload, a level): its cluster-wide state follows
    /// it, and its leader decides again.
    pub(super) fn cluster_changed(&mut self, p: usize, now: Now) {
        self.cluster_step(p, Event::Tick, now);
    }

    /// Steps pool `p`'s cluster-wide state with `event`; its leader decides from the result.
    fn cluster_step(&mut self, p: usize, event: Event, now: Now) {
        let Some(c) = &mut self.cluster else { return };
        let spec = &self.pools[p].spec;
        let leads = c.leads(&spec.name);
        let cp = c.pools.entry(spec.name.clone()).or_default();
        let decided = std::time::Instant::now();
        let records = match cluster_state(&mut cp.state, spec).step(spec, event, now) {
            Ok(effects) => failovers(effects).collect(),
            Err(e) => {
                error!(error = %e, "cluster decision refused");
                Vec::new()
            }
        };
        self.decide_and_record(p, now, leads, records, decided);
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
            let Some(c) = &self.cluster else { return };
            let due = c
                .pools
                .get(&self.pools[p].spec.name)
                .and_then(|cp| cp.state.as_ref()?.next_deadline())
                .is_some_and(|d| d <= now);
            if due {
                self.cluster_step(p, Event::Tick, now);
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

/// A drain asked now, ending after `deadline` (`None`: when undrained).
pub(super) fn drain_from_now(deadline: Option<Duration>) -> Drain {
    Drain {
        until_unix_ms: deadline
            .map(|d| unix_ms().saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))),
    }
}

/// Milliseconds since the Unix epoch, now.
fn unix_ms() -> u64 {
    crate::heartbeat::unix_ns(SystemTime::now()) / 1_000_000
}

/// The failovers among `effects`.
fn failovers(effects: Vec<Effect>) -> impl Iterator<Item = FailoverRecord> {
    effects.into_iter().filter_map(|effect| match effect {
        Effect::Record(record) => Some(record),
        _ => None,
    })
}
