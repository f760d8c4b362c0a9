//! Commands. Drains take effect at once; configuration changes (reload, elements added and
//! removed, redundancy levels) are taken one at a time: checked against the running state,
//! resolved in a task, reconciled into a plan and carried out when the resolution comes back.
//! Meanwhile the loop goes on deciding failovers.

use std::{
    path::PathBuf,
    sync::{Arc, PoisonError},
};

use tracing::{error, info, warn};

use super::{
    Controller,
    commands::{Command, ElementAdded, LevelAnswer, Refusal, RegistrationInfo, Reply},
    reconcile::{self, ReloadPlan},
    snapshot::{role_name, summary},
    work::{self, ResolveFailure},
};
use crate::{
    dataplane::Dataplane,
    heartbeat::Key,
    model::{
        failover::{Admin, Event},
        health::Health,
        plan::Resolved,
        spec::{Origin, Spec},
    },
    registry::{self, Added, AddedElement},
};

/// A drain without a deadline lasts this long (until undrained, in practice).
const FOREVER: std::time::Duration = std::time::Duration::from_hours(87_600);

/// The results of the controller's own tasks.
#[derive(Debug)]
pub(super) enum Internal {
    /// The configuration file, read for a reload.
    Loaded {
        result: Result<Box<Spec>, String>,
        reply: Reply<String>,
    },
    /// The addresses of the change in progress.
    Resolved {
        result: Result<Vec<Vec<Resolved>>, ResolveFailure>,
    },
}

/// The change in progress.
pub(super) enum Busy {
    /// Reading the configuration file.
    Loading,
    /// Resolving the addresses of this change.
    Resolving(Box<Pending>),
}

/// A configuration change, checked, waiting for its addresses.
pub(super) struct Pending {
    file_spec: Spec,
    added: Added,
    spec: Spec,
    finish: Finish,
}

/// What to do and answer once a change is carried out.
enum Finish {
    Reload(Reply<String>),
    Add {
        pool: String,
        element: String,
        origin: Origin,
        agent: Option<registry::Agent>,
        reply: Reply<ElementAdded>,
    },
    Remove {
        pool: String,
        element: String,
        agent: Option<registry::Agent>,
        reply: Reply<String>,
    },
    Level {
        pool: String,
        active: u32,
        reply: Reply<LevelAnswer>,
    },
}

impl Finish {
    fn refuse(self, why: &ResolveFailure) {
        let message = why.to_string();
        match self {
            Self::Reload(reply) => drop(reply.send(Err(Refusal::Config(message)))),
            Self::Add { reply, .. } => drop(reply.send(Err(Refusal::Invalid(message)))),
            Self::Remove { reply, .. } => drop(reply.send(Err(Refusal::Failed(message)))),
            Self::Level { reply, .. } => drop(reply.send(Err(Refusal::Failed(message)))),
        }
    }

    fn refuse_with(self, why: Refusal) {
        match self {
            Self::Reload(reply) | Self::Remove { reply, .. } => drop(reply.send(Err(why))),
            Self::Add { reply, .. } => drop(reply.send(Err(why))),
            Self::Level { reply, .. } => drop(reply.send(Err(why))),
        }
    }
}

/// Answers `cmd` with `why`.
pub(super) fn refuse(cmd: Command, why: Refusal) {
    match cmd {
        Command::Drain { reply, .. }
        | Command::Undrain { reply, .. }
        | Command::Reload { reply }
        | Command::RemoveElement { reply, .. } => drop(reply.send(Err(why))),
        Command::AddElement { reply, .. } => drop(reply.send(Err(why))),
        Command::SetRedundancy { reply, .. } => drop(reply.send(Err(why))),
    }
}

/// A command's reply with its answer, or with why it is refused.
type Answer<T> = (Reply<T>, T);
type Refused<T> = (Reply<T>, Refusal);

/// What a checked command leads to.
enum Prepared<T> {
    /// Nothing to change: the answer.
    Done(T),
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
        match cmd {
            Command::Drain {
                pool,
                element,
                deadline,
                reply,
            } => {
                let answer = self.admin(&pool, &element, |e| Event::Drain {
                    element: e,
                    deadline: deadline.unwrap_or(FOREVER),
                });
                let _ = reply.send(answer);
            }
            Command::Undrain { pool, element, reply } => {
                let _ = reply.send(self.admin(&pool, &element, |e| Event::Undrain { element: e }));
            }
            other => {
                self.queue.push_back(other);
                self.next_change();
            }
        }
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
        self.pools
            .iter()
            .position(|p| p.spec.name == pool)
            .ok_or_else(|| Refusal::NoPool {
                pool: pool.to_owned(),
            })
    }

    /// Starts the next queued change, unless one is in progress.
    fn next_change(&mut self) {
        while self.busy.is_none() {
            let Some(cmd) = self.queue.pop_front() else {
                return;
            };
            self.start_change(cmd);
        }
    }

    fn start_change(&mut self, cmd: Command) {
        match cmd {
            Command::Reload { reply } => {
                self.busy = Some(Busy::Loading);
                let (path, done) = (self.config_path.clone(), self.internal.0.clone());
                tokio::spawn(async move {
                    let result = work::load_config(&path).await.map(Box::new);
                    let _ = done.send(Internal::Loaded { result, reply });
                });
            }
            Command::AddElement {
                pool,
                element,
                body,
                origin,
                subject,
                reply,
            } => match self.prepare_add(pool, element, body, origin, subject, reply) {
                Ok(Prepared::Change(pending)) => self.resolve(*pending),
                Ok(Prepared::Done((reply, answer))) => drop(reply.send(Ok(answer))),
                Err((reply, why)) => drop(reply.send(Err(why))),
            },
            Command::RemoveElement {
                pool,
                element,
                subject,
                reply,
            } => match self.prepare_remove(pool, element, subject.as_deref(), reply) {
                Ok(pending) => self.resolve(pending),
                Err((reply, why)) => drop(reply.send(Err(why))),
            },
            Command::SetRedundancy { pool, active, reply } => match self.prepare_level(pool, active, reply) {
                Ok(Prepared::Change(pending)) => self.resolve(*pending),
                Ok(Prepared::Done(finish)) => self.finish(finish),
                Err((reply, why)) => drop(reply.send(Err(why))),
            },
            cmd @ (Command::Drain { .. } | Command::Undrain { .. }) => self.command(cmd),
        }
    }

    /// Resolves the addresses `pending` needs and does not know yet, in a task.
    fn resolve(&mut self, pending: Pending) {
        let known = reconcile::known_resolutions(&self.pools, &pending.spec);
        let spec = Arc::new(pending.spec.clone());
        let (resolver, path, done): (_, PathBuf, _) = (
            Arc::clone(&self.resolver),
            self.config_path.clone(),
            self.internal.0.clone(),
        );
        self.busy = Some(Busy::Resolving(Box::new(pending)));
        tokio::spawn(async move {
            let result = work::resolve_missing(resolver, spec, known, path).await;
            let _ = done.send(Internal::Resolved { result });
        });
    }

    pub(super) fn internal(&mut self, done: Internal) {
        match done {
            Internal::Loaded { result, reply } => {
                self.busy = None;
                match result {
                    Err(message) => drop(reply.send(Err(Refusal::Config(message)))),
                    Ok(file_spec) if file_spec.daemon != self.spec.daemon => {
                        drop(reply.send(Err(Refusal::Config(
                            "the daemon section changed; it takes effect on restart only".to_owned(),
                        ))))
                    }
                    Ok(file_spec) => {
                        let spec = merged(&file_spec, &self.added);
                        self.resolve(Pending {
                            file_spec: *file_spec,
                            added: self.added.clone(),
                            spec,
                            finish: Finish::Reload(reply),
                        });
                    }
                }
            }
            Internal::Resolved { result } => {
                let Some(Busy::Resolving(pending)) = self.busy.take() else {
                    unreachable!("a resolution comes back only for the change in progress");
                };
                match result {
                    Err(why) => pending.finish.refuse(&why),
                    Ok(resolved) => self.carry_out(*pending, resolved),
                }
            }
        }
        self.next_change();
    }

    /// Runs `pending` in place of the running configuration, keeping what stays (indices,
    /// slots, state, flows); refused, nothing changes.
    fn carry_out(&mut self, pending: Pending, resolved: Vec<Vec<Resolved>>) {
        let now = self.now();
        let plan =
            match reconcile::reconcile(&self.pools, &pending.spec, resolved, now, &mut self.generations) {
                Ok(plan) => plan,
                Err(e) => return pending.finish.refuse_with(Refusal::Config(e.to_string())),
            };
        let ReloadPlan {
            pools,
            withdraw,
            changed,
        } = plan;
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
        self.finish(pending.finish);
    }

    /// Answers a change carried out (or that needed none).
    fn finish(&mut self, finish: Finish) {
        match finish {
            Finish::Reload(reply) => {
                let message = format!("reloaded {} pools", self.pools.len());
                info!(%message, "reloaded");
                let _ = reply.send(Ok(message));
            }
            Finish::Add {
                pool,
                element,
                origin,
                agent,
                reply,
            } => {
                if let Some(agent) = &agent {
                    let mut verifier = self.verifier.lock().unwrap_or_else(PoisonError::into_inner);
                    if !verifier.contains(agent.id) {
                        verifier.register(agent.id, agent.key.clone(), self.now());
                    }
                }
                info!(%pool, %element, origin = origin_name(origin), "element added");
                let registration = agent.and_then(|a| self.registration_info(&pool, &a));
                let _ = reply.send(Ok(ElementAdded {
                    pool,
                    element,
                    created: true,
                    registration,
                }));
            }
            Finish::Remove {
                pool,
                element,
                agent,
                reply,
            } => {
                if let Some(agent) = agent {
                    self.verifier
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(agent.id);
                }
                info!(%pool, %element, "element removed");
                let _ = reply.send(Ok(format!("{pool}/{element}: removed")));
            }
            Finish::Level { pool, active, reply } => {
                let _ = reply.send(self.level_answer(&pool, active));
            }
        }
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
    fn with_added(&self, added: Added, finish: Finish) -> Pending {
        Pending {
            spec: merged(&self.file_spec, &added),
            file_spec: self.file_spec.clone(),
            added,
            finish,
        }
    }

    /// See [`Command::AddElement`].
    fn prepare_add(
        &self,
        pool: String,
        element: String,
        body: serde_json::Value,
        origin: Origin,
        subject: Option<String>,
        reply: Reply<ElementAdded>,
    ) -> Result<Prepared<Answer<ElementAdded>>, Refused<ElementAdded>> {
        let p = match self.pool_position(&pool) {
            Ok(p) => p,
            Err(why) => return Err((reply, why)),
        };
        let mut added = self.added.clone();
        let extra = added.pools.entry(pool.clone()).or_default();
        let refuse = |reply, why| Err((reply, why));
        match extra.elements.iter().position(|e| e.name == element) {
            None => {
                if self.pools[p].spec.elements.iter().any(|e| e.name == element) {
                    return refuse(
                        reply,
                        Refusal::InFile {
                            pool,
                            element,
                            verb: "change",
                        },
                    );
                }
                let agent = match origin {
                    Origin::Agent => {
                        let key = match Key::generate() {
                            Ok(key) => key,
                            Err(e) => return refuse(reply, Refusal::Failed(e.to_string())),
                        };
                        added.next_id += 1;
                        Some(registry::Agent {
                            id: added.next_id,
                            key,
                            subject: subject.unwrap_or_default(),
                            last_seq: None,
                        })
                    }
                    Origin::File | Origin::Operator => None,
                };
                let new = AddedElement {
                    name: element.clone(),
                    origin,
                    body,
                    agent: agent.clone(),
                };
                if let Err(why) = registry::check(&self.pools[p].spec, &new) {
                    return refuse(reply, Refusal::Invalid(format!("pool {pool}: {why}")));
                }
                added.pools.entry(pool.clone()).or_default().elements.push(new);
                let finish = Finish::Add {
                    pool,
                    element,
                    origin,
                    agent,
                    reply,
                };
                Ok(Prepared::Change(Box::new(self.with_added(added, finish))))
            }
            Some(i) => {
                let old = &extra.elements[i];
                if old.origin != origin {
                    let by = origin_name(old.origin);
                    return refuse(reply, Refusal::AddedBy { pool, element, by });
                }
                if let Some(agent) = &old.agent
                    && subject.as_deref() != Some(agent.subject.as_str())
                {
                    let why = "was registered by another client";
                    return refuse(reply, Refusal::NotYours { pool, element, why });
                }
                let agent = old.agent.clone();
                if old.body == body {
                    let registration = agent.and_then(|a| self.registration_info(&pool, &a));
                    return Ok(Prepared::Done((
                        reply,
                        ElementAdded {
                            pool,
                            element,
                            created: false,
                            registration,
                        },
                    )));
                }
                let mut others = self.pools[p].spec.clone();
                others.elements.retain(|e| e.name != element);
                let new = AddedElement { body, ..old.clone() };
                if let Err(why) = registry::check(&others, &new) {
                    return refuse(reply, Refusal::Invalid(format!("pool {pool}: {why}")));
                }
                extra.elements[i] = new;
                let finish = Finish::Add {
                    pool,
                    element,
                    origin,
                    agent,
                    reply,
                };
                Ok(Prepared::Change(Box::new(self.with_added(added, finish))))
            }
        }
    }

    /// See [`Command::RemoveElement`].
    fn prepare_remove(
        &self,
        pool: String,
        element: String,
        subject: Option<&str>,
        reply: Reply<String>,
    ) -> Result<Pending, Refused<String>> {
        let p = match self.pool_position(&pool) {
            Ok(p) => p,
            Err(why) => return Err((reply, why)),
        };
        let mut added = self.added.clone();
        let Some(i) = added
            .pools
            .get(&pool)
            .and_then(|x| x.elements.iter().position(|e| e.name == element))
        else {
            let why = if self.pools[p].spec.elements.iter().any(|e| e.name == element) {
                Refusal::InFile {
                    pool,
                    element,
                    verb: "remove",
                }
            } else {
                Refusal::NoElement { pool, element }
            };
            return Err((reply, why));
        };
        let extra = added.pools.get_mut(&pool).expect("found above");
        let agent = extra.elements[i].agent.clone();
        if let Some(subject) = subject
            && agent.as_ref().is_none_or(|a| a.subject != subject)
        {
            let why = "is not the caller's registration";
            return Err((reply, Refusal::NotYours { pool, element, why }));
        }
        extra.elements.remove(i);
        let finish = Finish::Remove {
            pool,
            element,
            agent,
            reply,
        };
        Ok(self.with_added(added, finish))
    }

    /// See [`Command::SetRedundancy`].
    fn prepare_level(
        &self,
        pool: String,
        active: u32,
        reply: Reply<LevelAnswer>,
    ) -> Result<Prepared<Finish>, Refused<LevelAnswer>> {
        let p = match self.pool_position(&pool) {
            Ok(p) => p,
            Err(why) => return Err((reply, why)),
        };
        let mut base = self.pools[p].spec.clone();
        if let Some(file) = self.file_spec.pools.iter().find(|f| f.name == pool) {
            base.redundancy = file.redundancy;
        }
        if let Err(why) = registry::with_actives(&base, active) {
            let why = why.to_string();
            return Err((reply, Refusal::Conflict { pool, why }));
        }
        let mut added = self.added.clone();
        added.pools.entry(pool.clone()).or_default().active = Some(active);
        let changed = added != self.added;
        let finish = Finish::Level { pool, active, reply };
        Ok(if changed {
            Prepared::Change(Box::new(self.with_added(added, finish)))
        } else {
            Prepared::Done(finish)
        })
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
