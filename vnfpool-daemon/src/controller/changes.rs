//! Commands. Drains take effect at once. A configuration change (reload, element added or
//! removed, redundancy level) is checked against the running state; when it names addresses
//! that are not resolved yet, a task resolves them and the change comes back as an input, is
//! checked again against the state of that moment (other changes may have been carried out
//! meanwhile) and is carried out: reconciled into a plan and applied. Changes do not wait for
//! each other's resolutions, and the loop goes on deciding failovers throughout.

use std::{
    sync::{Arc, PoisonError},
    time::Duration,
};

use tracing::{debug, error, info, warn};

use super::{
    Controller,
    commands::{
        AddElement, Command, ElementAdded, LevelAnswer, Refusal, RegistrationInfo, RemoveElement, Reply,
        SetRedundancy,
    },
    reconcile::{self, ReloadPlan},
    snapshot::{role_name, summary},
    work::{self, Address, ResolveFailure},
};
use crate::{
    dataplane::{Dataplane, HeartbeatGuard},
    heartbeat::Key,
    model::{
        failover::{Admin, Event},
        health::Health,
        plan::Resolved,
        spec::{Origin, Spec},
    },
    registry::{self, Added, AddedElement},
};

/// A drain without a deadline lasts this long (until undrained, in practice), and none lasts
/// longer.
pub(super) const FOREVER: std::time::Duration = std::time::Duration::from_hours(87_600);

/// The results of the controller's own tasks.
#[derive(Debug)]
pub(super) enum Internal {
    /// The configuration file, read for a reload.
    Loaded {
        result: Result<Box<work::Loaded>, String>,
        reply: Reply<String>,
    },
    /// The addresses a change needed, resolved (or why not).
    Resolved {
        change: Change,
        result: Result<Vec<(Address, Resolved)>, ResolveFailure>,
    },
}

/// Resolutions of changes in progress are kept this long for the change to pick them up.
const RESOLVED_FOR: Duration = Duration::from_secs(10);

/// A configuration change asked for, with where its answer goes.
#[derive(Debug)]
pub(super) enum Change {
    Reload {
        file: Box<work::Loaded>,
        reply: Reply<String>,
    },
    Add(AddElement),
    Remove(RemoveElement),
    Level(SetRedundancy),
    /// A cluster node's run-time elements as the cluster's store has them now: `element` of
    /// `pool` was added, changed or removed, on this node or another one.
    Adopt {
        pool: String,
        element: String,
        added: Box<Added>,
        reply: Adopted,
    },
}

/// Who waits for an [`Change::Adopt`]: the request asked of this node that it carries out, if
/// any.
#[derive(Debug)]
pub(super) enum Adopted {
    Add(Reply<ElementAdded>),
    Remove(Reply<String>),
    Nobody,
}

impl Adopted {
    /// Answers whoever waits with `why`.
    pub(super) fn refuse(self, why: Refusal) {
        match self {
            Self::Add(reply) => drop(reply.send(Err(why))),
            Self::Remove(reply) => drop(reply.send(Err(why))),
            Self::Nobody => {}
        }
    }
}

impl Change {
    fn refuse(self, why: Refusal) {
        match self {
            Self::Reload { reply, .. } | Self::Remove(RemoveElement { reply, .. }) => {
                drop(reply.send(Err(why)));
            }
            Self::Add(AddElement { reply, .. }) => drop(reply.send(Err(why))),
            Self::Level(SetRedundancy { reply, .. }) => drop(reply.send(Err(why))),
            Self::Adopt {
                reply: Adopted::Nobody,
                pool,
                element,
                ..
            } => {
                warn!(%pool, %element, error = %why, "an element from the cluster was not taken");
            }
            Self::Adopt { reply, .. } => reply.refuse(why),
        }
    }

    /// The refusal when its addresses cannot be resolved.
    fn unresolved(self, why: &ResolveFailure) {
        let message = why.to_string();
        let why = match &self {
            Self::Reload { .. } => Refusal::Config(message),
            Self::Add(_) => Refusal::Invalid(message),
            Self::Remove(_) | Self::Level(_) | Self::Adopt { .. } => Refusal::Failed(message),
        };
        self.refuse(why);
    }
}

/// A configuration change, checked, ready to be carried out once its addresses are known.
pub(super) struct Pending {
    file_spec: Spec,
    pub(super) added: Added,
    spec: Spec,
}

/// What a change answers.
pub(super) enum Answer {
    Text(String),
    Added(ElementAdded),
    Level(LevelAnswer),
}

impl Change {
    fn answer(self, answer: Answer) {
        match (self, answer) {
            (Self::Reload { reply, .. } | Self::Remove(RemoveElement { reply, .. }), Answer::Text(t)) => {
                drop(reply.send(Ok(t)));
            }
            (
                Self::Add(AddElement { reply, .. })
                | Self::Adopt {
                    reply: Adopted::Add(reply),
                    ..
                },
                Answer::Added(a),
            ) => drop(reply.send(Ok(a))),
            (
                Self::Adopt {
                    reply: Adopted::Remove(reply),
                    ..
                },
                Answer::Text(t),
            ) => drop(reply.send(Ok(t))),
            (Self::Level(SetRedundancy { reply, .. }), Answer::Level(l)) => drop(reply.send(Ok(l))),
            (
                Self::Adopt {
                    reply: Adopted::Nobody,
                    ..
                },
                _,
            ) => {}
            (change, _) => unreachable!("an answer of another kind for {change:?}"),
        }
    }
}

/// What a checked change leads to.
pub(super) enum Prepared {
    /// Nothing to change: the answer.
    Done(Answer),
    /// A change to carry out.
    Change(Box<Pending>),
}

fn origin_name(origin: Origin) -> &'static str {
    match origin {
        Origin::File => "the configuration file",
        Origin::Operator => "an operator",
        Origin::Agent => "its own registration",
    }
}

impl<D: Dataplane> Controller<D> {
    pub(super) fn command(&mut self, cmd: Command) {
        let change = match cmd {
            Command::Drain {
                pool,
                element,
                deadline,
                reply,
            } => {
                // Clamped here, at input: a deadline of `500000000000y` would overflow the
                // clock's arithmetic, and a state saved with it would crash every restart.
                let deadline = deadline.map_or(FOREVER, |d| d.min(FOREVER));
                let answer = if self.cluster.is_some() {
                    let deadline = (deadline < FOREVER).then_some(deadline);
                    self.cluster_drain(&pool, &element, Some(super::cluster::drain_from_now(deadline)))
                } else {
                    self.admin(&pool, &element, |e| Event::Drain { element: e, deadline })
                };
                return drop(reply.send(answer));
            }
            Command::Undrain { pool, element, reply } => {
                let answer = if self.cluster.is_some() {
                    self.cluster_drain(&pool, &element, None)
                } else {
                    self.admin(&pool, &element, |e| Event::Undrain { element: e })
                };
                return drop(reply.send(answer));
            }
            Command::Reload { reply } => {
                let (path, done) = (self.config_path.clone(), self.internal.0.clone());
                let renewal = self.renewal.clone();
                self.work.spawn(async move {
                    let result = work::load_config(&path, renewal).await.map(Box::new);
                    let _ = done.send(Internal::Loaded { result, reply });
                });
                return;
            }
            Command::AddElement(add) if self.cluster.is_some() => return self.cluster_add(add),
            Command::AddElement(add) => Change::Add(add),
            Command::RemoveElement(remove) if self.cluster.is_some() => return self.cluster_remove(remove),
            Command::RemoveElement(remove) => Change::Remove(remove),
            Command::SetRedundancy(level) if self.cluster.is_some() => return self.cluster_level(level),
            Command::SetRedundancy(level) => Change::Level(level),
        };
        self.try_change(change);
    }

    fn admin(
        &mut self,
        pool: &str,
        element: &str,
        event: impl Fn(usize) -> Event,
    ) -> Result<String, Refusal> {
        let p = self.pool_position(pool)?;
        let e = self.pools[p]
            .state
            .position(element)
            .ok_or_else(|| Refusal::NoElement {
                pool: pool.to_owned(),
                element: element.to_owned(),
            })?;
        self.step(p, event(e), self.now());
        let role = self.pools[p].state.elements()[e].role();
        Ok(format!("{pool}/{element}: {}", role_name(role)))
    }

    fn pool_position(&self, pool: &str) -> Result<usize, Refusal> {
        self.pool_named(pool).ok_or_else(|| Refusal::NoPool {
            pool: pool.to_owned(),
        })
    }

    pub(super) fn internal(&mut self, done: Internal) {
        match done {
            Internal::Loaded { result, reply } => match result {
                Err(message) => drop(reply.send(Err(Refusal::Config(message)))),
                Ok(file) => self.try_change(Change::Reload { file, reply }),
            },
            Internal::Resolved { change, result } => {
                self.metrics.resolving(-1);
                match result {
                    Err(why) => change.unresolved(&why),
                    Ok(resolved) => {
                        let now = self.epoch.elapsed();
                        self.resolutions
                            .retain(|_, (_, at)| now.saturating_sub(*at) < RESOLVED_FOR);
                        self.resolutions
                            .extend(resolved.into_iter().map(|(address, r)| (address, (r, now))));
                        self.try_change(change);
                    }
                }
            }
        }
    }

    /// Checks `change` against the state of now and carries it out, or first resolves the
    /// addresses it needs in a task (it then comes back here, to be checked again).
    pub(super) fn try_change(&mut self, change: Change) {
        let pending = match self.prepare(&change) {
            Err(why) => return change.refuse(why),
            Ok(Prepared::Done(answer)) => return change.answer(answer),
            Ok(Prepared::Change(pending)) => pending,
        };
        let mut known = reconcile::known_resolutions(&self.pools, &pending.spec);
        let mut missing = Vec::new();
        for (pool, known) in pending.spec.pools.iter().zip(&mut known) {
            for (e, known) in pool.elements.iter().zip(known) {
                if known.is_none() {
                    let address = work::address_of(pool, e);
                    match self.resolutions.get(&address) {
                        Some((r, _)) => *known = Some(*r),
                        None => missing.push(address),
                    }
                }
            }
        }
        if missing.is_empty() {
            let resolved = known
                .into_iter()
                .map(|pool| pool.into_iter().map(Option::unwrap_or_default).collect())
                .collect();
            let answer = self.carry_out(*pending, resolved, &change);
            return match answer {
                Ok(answer) => change.answer(answer),
                Err(why) => change.refuse(why),
            };
        }
        let (resolver, path, done) = (
            Arc::clone(&self.resolver),
            self.config_path.clone(),
            self.internal.0.clone(),
        );
        let spec = Arc::new(pending.spec);
        self.metrics.resolving(1);
        self.work.spawn(async move {
            let result = work::resolve_addresses(resolver, spec, missing, path).await;
            let _ = done.send(Internal::Resolved { change, result });
        });
    }

    /// Runs `pending` in place of the running configuration, keeping what stays (indices,
    /// slots, state, flows); refused, nothing changes.
    fn carry_out(
        &mut self,
        pending: Pending,
        resolved: Vec<Vec<Resolved>>,
        change: &Change,
    ) -> Result<Answer, Refusal> {
        let now = self.now();
        let ReloadPlan {
            pools,
            withdraw,
            changed,
        } = reconcile::reconcile(&self.pools, &pending.spec, resolved, now, &mut self.generations)
            .map_err(|e| Refusal::Config(e.to_string()))?;
        for index in withdraw {
            if let Err(e) = self.dp.remove_pool(index) {
                error!(pool = index, error = %e, "pool not taken out of the data plane");
            }
        }
        let targets_before = self.probe_targets();
        self.pools = pools;
        self.index_pools();
        self.spec = pending.spec;
        self.file_spec = pending.file_spec;
        self.added = pending.added;
        self.metrics.forget_elements();
        self.dirty = true;
        self.sync_agents(now);
        for p in changed {
            self.step(p, Event::Tick, now);
            self.cluster_changed(p, now);
            if self.pools[p].live
                && let Err(e) = self.remap(p, now)
            {
                error!(pool = %self.pools[p].spec.name, error = %e, "mapping not written after reload");
            }
        }
        let targets = self.probe_targets();
        if targets != targets_before {
            self.probers.start(targets);
        }
        self.save();
        self.check_ready();
        Ok(self.finish(change))
    }

    /// The answer to a change just carried out, and what follows from it.
    fn finish(&mut self, change: &Change) -> Answer {
        match change {
            Change::Reload { file, .. } => {
                // A pool's heartbeat miss limit may have changed.
                self.sync_verifier();
                // Certificates and CRLs read again: new handshakes use them, and a client
                // revoked since is not served on the connection it had.
                if let Some(install) = &file.renewed {
                    (install.0)();
                }
                let message = format!("reloaded {} pools", self.pools.len());
                info!(%message, "reloaded");
                Answer::Text(message)
            }
            Change::Add(AddElement {
                pool,
                element,
                origin,
                ..
            }) => {
                self.sync_verifier();
                info!(%pool, %element, origin = origin_name(*origin), "element added");
                self.added_answer(pool, element, true)
            }
            Change::Remove(RemoveElement { pool, element, .. }) => {
                self.sync_verifier();
                info!(%pool, %element, "element removed");
                Answer::Text(format!("{pool}/{element}: removed"))
            }
            Change::Adopt {
                pool, element, reply, ..
            } => {
                self.sync_verifier();
                info!(%pool, %element, "run-time elements from the cluster");
                match reply {
                    Adopted::Add(_) => self.added_answer(pool, element, true),
                    Adopted::Remove(_) | Adopted::Nobody => {
                        Answer::Text(format!("{pool}/{element}: removed"))
                    }
                }
            }
            Change::Level(SetRedundancy { pool, active, .. }) => match self.level_answer(pool, *active) {
                Ok(answer) => Answer::Level(answer),
                Err(why) => unreachable!("the pool was just checked: {why}"),
            },
        }
    }

    /// The answer to an element's addition.
    fn added_answer(&self, pool: &str, element: &str, created: bool) -> Answer {
        Answer::Added(ElementAdded {
            pool: pool.to_owned(),
            element: element.to_owned(),
            created,
            registration: self
                .agent(pool, element)
                .and_then(|a| self.registration_info(pool, &a)),
        })
    }

    /// The heartbeat verifier knows the keys of the registrations there are, and no others
    /// (a removed element's heartbeats must not count for anything), each with its pool's miss
    /// limit (how old a heartbeat may be).
    pub(super) fn sync_verifier(&mut self) {
        let now = self.now();
        let mut verifier = self.verifier.lock().unwrap_or_else(PoisonError::into_inner);
        let mut running: std::collections::HashMap<u64, (&Key, std::time::Duration, &[std::net::IpAddr])> =
            std::collections::HashMap::new();
        for (pool, added) in &self.added.pools {
            let p = self.pool_named(pool);
            let miss_limit = p.map_or_else(
                || crate::model::spec::HeartbeatSpec::DEFAULT.miss_limit(),
                |p| self.pools[p].spec.heartbeat.miss_limit(),
            );
            for (name, agent) in added
                .elements
                .iter()
                .filter_map(|e| e.agent.as_ref().map(|a| (&e.name, a)))
            {
                let paths = p
                    .and_then(|p| self.pools[p].spec.elements.iter().find(|e| e.name == *name))
                    .map_or(&[][..], |e| &e.heartbeat_paths[..]);
                running.insert(agent.id, (&agent.key, miss_limit, paths));
            }
        }
        let gone: Vec<u64> = verifier.ids().filter(|id| !running.contains_key(id)).collect();
        for id in gone {
            verifier.remove(id);
        }
        for (&id, &(key, miss_limit, paths)) in &running {
            if !verifier.contains(id) {
                verifier.register(id, key.clone(), now);
            }
            verifier.set_miss_limit(id, miss_limit);
            verifier.set_paths(id, paths, now);
        }
        drop(verifier);
        self.sync_guard();
    }

    /// The data plane lets heartbeats reach the listener from the running self-registered
    /// elements' addresses only (issue 14, item 3). A write that fails leaves the guard as it
    /// was (fail static) and is tried again at the next change.
    pub(super) fn sync_guard(&mut self) {
        let guard = HeartbeatGuard::new(
            self.spec.api.as_ref().map(|api| api.heartbeat_listen),
            &self.local_addresses,
            self.agents.values().flat_map(|&(p, e)| {
                let element = &self.pools[p].spec.elements[e];
                // An element that names its paths sends from those; its own address may be
                // one of them.
                if element.heartbeat_paths.is_empty() {
                    std::slice::from_ref(&element.address).iter().copied()
                } else {
                    element.heartbeat_paths.iter().copied()
                }
            }),
        );
        if self.guard.as_ref() == Some(&guard) {
            return;
        }
        match self.dp.heartbeat_guard(&guard) {
            Ok(()) => {
                debug!(
                    destinations = guard.listen.len(),
                    peers = guard.peers.len(),
                    "heartbeat guard written"
                );
                self.guard = Some(guard);
            }
            Err(e) => error!(error = %crate::telemetry::error_chain(&e), "heartbeat guard not written"),
        }
    }

    /// The registration of `element` in `pool`, if it registered itself.
    fn agent(&self, pool: &str, element: &str) -> Option<registry::Agent> {
        self.added
            .pools
            .get(pool)?
            .elements
            .iter()
            .find(|e| e.name == element)?
            .agent
            .clone()
    }

    /// What a self-registered element of `pool` needs to send its heartbeats.
    fn registration_info(&self, pool: &str, agent: &registry::Agent) -> Option<RegistrationInfo> {
        let heartbeat = &self.pools.iter().find(|p| p.spec.name == pool)?.spec.heartbeat;
        let listen = self.spec.api.as_ref().map(|api| api.heartbeat_listen);
        Some(RegistrationInfo {
            id: agent.id,
            key: agent.key.to_hex(),
            heartbeat_port: listen.map_or(0, |l| l.port()),
            heartbeat_address: listen
                .map(|l| l.ip())
                .filter(|ip| !ip.is_unspecified())
                .map(|ip| ip.to_string()),
            interval_us: u64::try_from(heartbeat.interval.as_micros()).unwrap_or(u64::MAX),
            misses: heartbeat.misses,
        })
    }

    /// A change of `added` alone (the file stays).
    fn with_added(&self, added: Added) -> Prepared {
        Prepared::Change(Box::new(Pending {
            spec: merged(&self.file_spec, &added),
            file_spec: self.file_spec.clone(),
            added,
        }))
    }

    /// Checks `change` against the running state: what it would run, or its answer when it
    /// changes nothing.
    fn prepare(&self, change: &Change) -> Result<Prepared, Refusal> {
        match change {
            Change::Reload { file, .. } => {
                let file_spec = &file.spec;
                if file_spec.daemon != self.spec.daemon {
                    return Err(Refusal::Config(format!(
                        "{}the daemon section changed; it takes effect on restart only",
                        file.daemon_at
                    )));
                }
                // Client subjects and roles, certificates and listeners are set up once: a
                // reload that changed them would leave removed subjects their roles and hand
                // agents a heartbeat address nothing listens on.
                if file_spec.api != self.file_spec.api {
                    return Err(Refusal::Config(format!(
                        "{}the api section changed (clients, certificates or listeners); it takes effect on restart only",
                        file.api_at
                    )));
                }
                // The node's name, its etcd and its flow-sync socket are the cluster's view
                // of it: they change with a restart, which other nodes see as one.
                if file_spec.cluster != self.file_spec.cluster {
                    return Err(Refusal::Config(format!(
                        "{}the cluster section changed; it takes effect on restart only",
                        file.cluster_at
                    )));
                }
                Ok(Prepared::Change(Box::new(Pending {
                    spec: merged(file_spec, &self.added),
                    file_spec: file_spec.clone(),
                    added: self.added.clone(),
                })))
            }
            Change::Add(a) => self.prepare_add(&a.pool, &a.element, &a.body, a.origin, a.subject.as_deref()),
            Change::Remove(r) => self.prepare_remove(&r.pool, &r.element, r.subject.as_deref()),
            Change::Level(l) => self.prepare_level(&l.pool, l.active),
            Change::Adopt {
                pool,
                element,
                added,
                reply,
            } => {
                if **added != self.added {
                    return Ok(self.with_added((**added).clone()));
                }
                Ok(Prepared::Done(match reply {
                    Adopted::Add(_) => self.added_answer(pool, element, false),
                    Adopted::Remove(_) | Adopted::Nobody => {
                        Answer::Text(format!("{pool}/{element}: removed"))
                    }
                }))
            }
        }
    }

    /// See [`Command::AddElement`].
    pub(super) fn prepare_add(
        &self,
        pool: &str,
        element: &str,
        body: &serde_json::Value,
        origin: Origin,
        subject: Option<&str>,
    ) -> Result<Prepared, Refusal> {
        let p = self.pool_position(pool)?;
        let (pool_owned, element_owned) = (pool.to_owned(), element.to_owned());
        let mut added = self.added.clone();
        let extra = added.pools.entry(pool_owned.clone()).or_default();
        match extra.elements.iter().position(|e| e.name == element) {
            None => {
                if self.pools[p].spec.elements.iter().any(|e| e.name == element) {
                    return Err(Refusal::InFile {
                        pool: pool_owned,
                        element: element_owned,
                        verb: "change",
                    });
                }
                let agent = match origin {
                    Origin::Agent => {
                        let key = Key::generate().map_err(|e| Refusal::Failed(e.to_string()))?;
                        added.next_id += 1;
                        Some(registry::Agent {
                            id: self.registration_id(added.next_id),
                            key,
                            subject: subject.unwrap_or_default().to_owned(),
                            last_seq: None,
                        })
                    }
                    Origin::File | Origin::Operator => None,
                };
                let new = AddedElement {
                    name: element_owned,
                    origin,
                    body: body.clone(),
                    agent,
                };
                let spec = registry::check(&self.pools[p].spec, &new)
                    .map_err(|why| Refusal::Invalid(format!("pool {pool}: {why}")))?;
                self.admit(subject, pool, &spec, None)?;
                added.pools.entry(pool_owned).or_default().elements.push(new);
                Ok(self.with_added(added))
            }
            Some(i) => {
                let old = &extra.elements[i];
                if old.origin != origin {
                    let by = origin_name(old.origin);
                    return Err(Refusal::AddedBy {
                        pool: pool_owned,
                        element: element_owned,
                        by,
                    });
                }
                if let Some(agent) = &old.agent
                    && subject != Some(agent.subject.as_str())
                {
                    let why = "was registered by another client";
                    return Err(Refusal::NotYours {
                        pool: pool_owned,
                        element: element_owned,
                        why,
                    });
                }
                if old.body == *body {
                    let registration = old.agent.as_ref().and_then(|a| self.registration_info(pool, a));
                    return Ok(Prepared::Done(Answer::Added(ElementAdded {
                        pool: pool_owned,
                        element: element_owned,
                        created: false,
                        registration,
                    })));
                }
                let mut others = self.pools[p].spec.clone();
                others.elements.retain(|e| e.name != element);
                let new = AddedElement {
                    body: body.clone(),
                    ..old.clone()
                };
                let spec = registry::check(&others, &new)
                    .map_err(|why| Refusal::Invalid(format!("pool {pool}: {why}")))?;
                self.admit(subject, pool, &spec, Some(element))?;
                extra.elements[i] = new;
                Ok(self.with_added(added))
            }
        }
    }

    /// Whether `subject` (an `element` client; `None`: an operator, who may add anything
    /// the pool's rules allow) may register `spec` in `pool`, by its grant in `api.clients`;
    /// `replacing` is the name of its registration in `pool` that `spec` changes.
    fn admit(
        &self,
        subject: Option<&str>,
        pool: &str,
        spec: &crate::model::spec::ElementSpec,
        replacing: Option<&str>,
    ) -> Result<(), Refusal> {
        let Some(subject) = subject else {
            return Ok(());
        };
        let ungranted = crate::model::spec::Grant::default();
        let grant = self
            .spec
            .api
            .as_ref()
            .and_then(|api| api.clients.iter().find(|c| c.subject == subject))
            .map_or(&ungranted, |c| &c.grant);
        let held = self
            .added
            .pools
            .iter()
            .flat_map(|(p, added)| added.elements.iter().map(move |e| (p, e)))
            .filter(|(p, e)| {
                e.agent.as_ref().is_some_and(|a| a.subject == subject)
                    && !(p.as_str() == pool && Some(e.name.as_str()) == replacing)
            })
            .count();
        registry::admit(subject, grant, pool, spec, held).map_err(Refusal::Forbidden)
    }

    /// See [`Command::RemoveElement`].
    pub(super) fn prepare_remove(
        &self,
        pool: &str,
        element: &str,
        subject: Option<&str>,
    ) -> Result<Prepared, Refusal> {
        let p = self.pool_position(pool)?;
        let (pool_owned, element_owned) = (pool.to_owned(), element.to_owned());
        let mut added = self.added.clone();
        let Some(i) = added
            .pools
            .get(pool)
            .and_then(|x| x.elements.iter().position(|e| e.name == element))
        else {
            return Err(if self.pools[p].spec.elements.iter().any(|e| e.name == element) {
                Refusal::InFile {
                    pool: pool_owned,
                    element: element_owned,
                    verb: "remove",
                }
            } else {
                Refusal::NoElement {
                    pool: pool_owned,
                    element: element_owned,
                }
            });
        };
        let extra = added.pools.get_mut(pool).expect("found above");
        if let Some(subject) = subject
            && extra.elements[i]
                .agent
                .as_ref()
                .is_none_or(|a| a.subject != subject)
        {
            let why = "is not the caller's registration";
            return Err(Refusal::NotYours {
                pool: pool_owned,
                element: element_owned,
                why,
            });
        }
        extra.elements.remove(i);
        Ok(self.with_added(added))
    }

    /// See [`Command::SetRedundancy`].
    pub(super) fn prepare_level(&self, pool: &str, active: u32) -> Result<Prepared, Refusal> {
        let p = self.pool_position(pool)?;
        let mut base = self.pools[p].spec.clone();
        if let Some(file) = self.file_spec.pools.iter().find(|f| f.name == pool) {
            base.redundancy = file.redundancy;
        }
        registry::with_actives(&base, active).map_err(|why| Refusal::Conflict {
            pool: pool.to_owned(),
            why: why.to_string(),
        })?;
        let mut added = self.added.clone();
        added.pools.entry(pool.to_owned()).or_default().active = Some(active);
        if added == self.added {
            return self
                .level_answer(pool, active)
                .map(|a| Prepared::Done(Answer::Level(a)));
        }
        Ok(self.with_added(added))
    }

    fn level_answer(&self, pool: &str, active: u32) -> Result<LevelAnswer, Refusal> {
        let p = self.pool_position(pool)?;
        let pool_rt = &self.pools[p];
        let c = summary(&pool_rt.spec, &pool_rt.state).capacity;
        let message = if c.redundancy_met {
            format!(
                "pool {pool}: {active} actives requested and met ({} actives, {} standbys)",
                c.actives, c.standbys
            )
        } else {
            let usable = pool_rt
                .state
                .elements()
                .iter()
                .filter(|e| e.health() == Health::Up && e.admin() == Admin::Normal)
                .count();
            format!(
                "pool {pool}: {active} actives requested, not met now: {} actives and {} standbys of {} configured; {usable} of {} elements are usable",
                c.actives,
                c.standbys,
                c.configured_standbys,
                pool_rt.spec.elements.len()
            )
        };
        info!(%pool, active, met = c.redundancy_met, "redundancy level requested");
        Ok(LevelAnswer {
            pool: pool.to_owned(),
            active,
            met: c.redundancy_met,
            actives: c.actives,
            standbys: c.standbys,
            message,
        })
    }
}

/// `added` merged into the file's configuration; what no longer fits is left out, and said.
pub fn merged(file_spec: &Spec, added: &Added) -> Spec {
    let (spec, left_out) = registry::merge(file_spec, added);
    for why in left_out {
        warn!(%why, "an element added at run time no longer fits; left out");
    }
    spec
}
