//! A cluster of vnfpool nodes behind ECMP (configured by `cluster:`; without it a node works on
//! its own, exactly as before).
//!
//! # Who decides
//! Every pool has one leader among the nodes, elected on the node's lease in the store (etcd v3
//! through [`etcd::Etcd`]; [`Coordinator`] is the seam another store, such as Kubernetes
//! Leases, would plug into). The leader decides the pool's roles and writes each decision with
//! a generation ([`decision::Decision`]); every node, the leader too, maps the pool from the
//! newest decision it has seen, with the same atomic switch as a node on its own. The Maglev
//! table is a pure function of the active elements' names and weights and the table size, so
//! every node builds the same bytes from the same decision.
//!
//! # Who probes
//! Every node probes every element (and receives heartbeats from the elements that send them
//! to it), and writes its verdicts (up, down, unknown per element) under its lease. The leader
//! decides from the verdicts of all live nodes together ([`decision::merge`]): an element is up
//! while any node sees it up, so a partition between one node and one element does not fail
//! that element for the cluster; it is down when no node sees it up. A node's verdicts vanish
//! with its lease.
//!
//! # What operators and the SCE ask
//! A drain, a redundancy level or an element added at run time (an operator's, or one that
//! registered itself, with its heartbeat key) asked of any node is an [`Intent`]: written to
//! the store without a lease (it outlives every node), applied by every node from its watch,
//! and turned into roles by the pool's leader. A node out of the store refuses them rather
//! than apply them later by surprise.
//!
//! # When the store is away
//! A node that loses the store keeps forwarding with the last decision it applied and keeps
//! probing; it decides nothing and applies nothing new until it is back, then takes the
//! newest decision and reports its verdicts again. Its leaderships end with its lease (another
//! node leads within the lease TTL); the data plane never stops. It stays a member, and keeps
//! announcing its VIPs, until the store says its lease ended: a store that is down for every
//! node must not take every route away.
//!
//! # The controller seam
//! The controller sees the cluster as inputs ([`ClusterInput`]) and asks it for writes
//! ([`ClusterOutput`]) over channels; [`run`] is the task between those channels and a
//! [`Coordinator`], reconnecting with back-off.

pub mod decision;
pub mod etcd;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::{info, warn};

pub use self::decision::{Decision, Drain, Intent, Verdicts, merge};

/// A node's id: the first eight bytes of the SHA-256 of its name, the same on every start
/// (flow sync's sender id; the high half prefixes the registration ids the node hands out, so
/// that no two nodes hand out the same).
#[must_use]
pub fn node_id(name: &str) -> u64 {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(name.as_bytes());
    u64::from_be_bytes(digest[..8].try_into().expect("eight bytes"))
}

/// A member of the cluster, as it registers itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub node: String,
    /// Where its peers send flow-sync datagrams.
    pub flow_sync: SocketAddr,
}

/// What the cluster tells the controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterInput {
    /// Whether this node is in a session with the store now (its lease kept alive, its watch
    /// running). While it is not, it leads nothing; it is still a member until its lease is
    /// known lost ([`Self::LeaseLost`]).
    Connected(bool),
    /// The store let this node's lease end: it is no member until its next session starts.
    LeaseLost,
    /// The members, this node included.
    Members(Vec<Member>),
    /// The pool's leader (`None`: none right now).
    Leader { pool: String, node: Option<String> },
    /// A decision written by a pool's leader.
    Decision(Decision),
    /// A node's verdicts on a pool's elements (`None`: withdrawn, the node left).
    Verdicts {
        pool: String,
        node: String,
        verdicts: Option<Verdicts>,
    },
    /// An intent for a pool, asked of any node.
    Intent { pool: String, intent: Intent },
    /// At the start of a session: every element added at run time the store holds, by pool
    /// and name (a node drops those it holds that were removed while it was away).
    Elements(BTreeSet<(String, String)>),
}

/// What the controller asks the cluster to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterOutput {
    /// This node's verdicts on a pool's elements.
    Verdicts { pool: String, verdicts: Verdicts },
    /// A decision of a pool this node leads.
    Decide(Decision),
    /// An intent for a pool asked of this node, for every node.
    Intent { pool: String, intent: Intent },
}

/// A change seen in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    /// A member's record written (`Some`) or gone with its lease (`None`).
    Member {
        node: String,
        member: Option<Member>,
    },
    Leader {
        pool: String,
        node: Option<String>,
    },
    Decision(Decision),
    Verdicts {
        pool: String,
        node: String,
        verdicts: Option<Verdicts>,
    },
    Intent {
        pool: String,
        intent: Intent,
    },
}

/// Why a coordinator call failed.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error("the store: {0}")]
    Store(String),
    #[error("the lease expired")]
    LeaseLost,
    #[error("a value under {key} is not what vnfpool writes: {error}")]
    Malformed { key: String, error: String },
}

/// The store the cluster shares: a lease per node, a leader per pool, decisions, verdicts.
/// One session at a time; [`run`] starts a new one after an error.
pub trait Coordinator: Send + Sync + 'static {
    /// A changes stream ([`Self::watch`]).
    type Changes: Send;

    /// Starts a session: this node's lease granted and its member record written.
    fn join(&self, me: &Member) -> impl Future<Output = Result<(), CoordinatorError>> + Send;
    /// Keeps the lease alive; returns [`CoordinatorError::LeaseLost`] when the store says the
    /// lease ended, another error when the store cannot be reached for longer than it lasts.
    fn keep_alive(&self) -> impl Future<Output = CoordinatorError> + Send;
    /// What the store holds now (members, leaders, decisions, verdicts), and the changes after.
    fn watch(&self) -> impl Future<Output = Result<(Vec<Update>, Self::Changes), CoordinatorError>> + Send;
    /// The next changes; an error ends the session.
    fn changes(
        &self,
        changes: &mut Self::Changes,
    ) -> impl Future<Output = Result<Vec<Update>, CoordinatorError>> + Send;
    /// Becomes the pool's leader unless it has one; the leader either way.
    fn campaign(&self, pool: &str) -> impl Future<Output = Result<String, CoordinatorError>> + Send;
    /// Writes `decision` if this node still leads its pool; whether it did.
    fn decide(&self, decision: &Decision) -> impl Future<Output = Result<bool, CoordinatorError>> + Send;
    /// Writes an intent for a pool (replacing the one of the same subject), for every node
    /// and outliving them.
    fn intend(
        &self,
        pool: &str,
        intent: &Intent,
    ) -> impl Future<Output = Result<(), CoordinatorError>> + Send;
    /// Writes this node's verdicts on a pool (gone with the lease).
    fn report(
        &self,
        pool: &str,
        verdicts: &Verdicts,
    ) -> impl Future<Output = Result<(), CoordinatorError>> + Send;
    /// Ends the session at once (the lease revoked: leaderships move without waiting for the
    /// TTL). Best effort.
    fn leave(&self) -> impl Future<Output = ()> + Send;
}

/// Back-off between sessions.
const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// Runs sessions of `coordinator` for `me` until `outputs` closes (the controller ended); then
/// leaves. `pools`: the pools to campaign for.
pub async fn run<C: Coordinator>(
    coordinator: C,
    me: Member,
    pools: Vec<String>,
    mut outputs: mpsc::UnboundedReceiver<ClusterOutput>,
    inputs: mpsc::Sender<ClusterInput>,
) {
    let mut owed = Owed::default();
    let mut retry = RETRY_MIN;
    loop {
        let ended = session(&coordinator, &me, &pools, &mut outputs, &inputs, &mut owed).await;
        if inputs.send(ClusterInput::Connected(false)).await.is_err() {
            break;
        }
        if let Ended::Failed {
            error: CoordinatorError::LeaseLost,
            ..
        } = &ended
            && inputs.send(ClusterInput::LeaseLost).await.is_err()
        {
            break;
        }
        match ended {
            Ended::Closed => break,
            Ended::Failed { error, joined } => {
                if joined {
                    retry = RETRY_MIN;
                }
                warn!(error = %error, retry_ms = retry.as_millis(), "cluster session ended; this node leads nothing until it is back");
            }
        }
        // Decisions asked for meanwhile are dropped (the leader decides again once back);
        // verdicts and drains wait for the next session.
        let sleep = tokio::time::sleep(retry);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => break,
                out = outputs.recv() => {
                    let Some(out) = out else {
                        coordinator.leave().await;
                        return;
                    };
                    owed.keep(out);
                }
            }
        }
        retry = (retry * 2).min(RETRY_MAX);
    }
    coordinator.leave().await;
}

/// What this node has to write at the start of every session: its latest verdicts per pool
/// (they went with its last lease), and the intents asked of it that no session wrote yet.
#[derive(Default)]
struct Owed {
    verdicts: BTreeMap<String, Verdicts>,
    /// By pool and subject ([`Intent::subject`]).
    intents: BTreeMap<(String, String), Intent>,
}

impl Owed {
    /// Keeps what `out` asks for the next session (a decision is dropped: the leader decides
    /// again once back).
    fn keep(&mut self, out: ClusterOutput) {
        match out {
            ClusterOutput::Verdicts { pool, verdicts } => {
                self.verdicts.insert(pool, verdicts);
            }
            ClusterOutput::Decide(_) => {}
            ClusterOutput::Intent { pool, intent } => {
                self.intents.insert((pool, intent.subject()), intent);
            }
        }
    }

    /// Writes everything owed (at the start of a session).
    async fn write<C: Coordinator>(&mut self, c: &C) -> Result<(), CoordinatorError> {
        for (pool, verdicts) in &self.verdicts {
            c.report(pool, verdicts).await?;
        }
        self.write_intents(c).await
    }

    /// Writes the intents owed; those written are owed no more.
    async fn write_intents<C: Coordinator>(&mut self, c: &C) -> Result<(), CoordinatorError> {
        while let Some(((pool, subject), intent)) = self.intents.pop_first() {
            if let Err(e) = c.intend(&pool, &intent).await {
                self.intents.insert((pool, subject), intent);
                return Err(e);
            }
        }
        Ok(())
    }
}

enum Ended {
    /// The controller is gone.
    Closed,
    Failed {
        error: CoordinatorError,
        joined: bool,
    },
}

/// The elements added at run time among `updates`, by pool and name.
fn run_time_elements(updates: &[Update]) -> BTreeSet<(String, String)> {
    updates
        .iter()
        .filter_map(|u| match u {
            Update::Intent {
                pool,
                intent:
                    Intent::Element {
                        name,
                        element: Some(_),
                    },
            } => Some((pool.clone(), name.clone())),
            _ => None,
        })
        .collect()
}

/// Starts a session: joined, watching, what is owed written; what the store holds now and
/// the changes after.
async fn open<C: Coordinator>(
    c: &C,
    me: &Member,
    inputs: &mpsc::Sender<ClusterInput>,
    owed: &mut Owed,
) -> Result<(Vec<Update>, C::Changes), Ended> {
    let failed = |error| Ended::Failed { error, joined: false };
    c.join(me).await.map_err(failed)?;
    let (initial, changes) = c.watch().await.map_err(failed)?;
    let failed = |error| Ended::Failed { error, joined: true };
    info!(node = %me.node, "joined the cluster");
    let closed = |_| Ended::Closed;
    inputs.send(ClusterInput::Connected(true)).await.map_err(closed)?;
    owed.write(c).await.map_err(failed)?;
    inputs
        .send(ClusterInput::Elements(run_time_elements(&initial)))
        .await
        .map_err(closed)?;
    Ok((initial, changes))
}

async fn session<C: Coordinator>(
    c: &C,
    me: &Member,
    pools: &[String],
    outputs: &mut mpsc::UnboundedReceiver<ClusterOutput>,
    inputs: &mpsc::Sender<ClusterInput>,
    owed: &mut Owed,
) -> Ended {
    let (initial, mut changes) = match open(c, me, inputs, owed).await {
        Ok(opened) => opened,
        Err(ended) => return ended,
    };
    let failed = |error| Ended::Failed { error, joined: true };
    let mut members: BTreeMap<String, Member> = BTreeMap::new();
    let mut leaderless: BTreeSet<String> = pools.iter().cloned().collect();
    let mut pending = initial;
    let keep_alive = c.keep_alive();
    tokio::pin!(keep_alive);
    loop {
        let mut members_changed = false;
        for update in pending.drain(..) {
            let input = match update {
                Update::Member { node, member } => {
                    match member {
                        Some(m) => members.insert(node, m),
                        None => members.remove(&node),
                    };
                    members_changed = true;
                    continue;
                }
                Update::Leader { pool, node } => {
                    match node.as_deref() {
                        None if pools.contains(&pool) => {
                            leaderless.insert(pool.clone());
                        }
                        // Campaigned for all the same when the session starts (every pool
                        // is): the key may be bound to the lease of an earlier session, which
                        // nothing keeps alive any more (etcd restarted, say); the campaign
                        // binds it to this session's.
                        Some(n) if n == me.node => {}
                        _ => {
                            leaderless.remove(&pool);
                        }
                    }
                    ClusterInput::Leader { pool, node }
                }
                Update::Decision(d) => ClusterInput::Decision(d),
                Update::Verdicts { pool, node, verdicts } => ClusterInput::Verdicts { pool, node, verdicts },
                Update::Intent { pool, intent } => ClusterInput::Intent { pool, intent },
            };
            if inputs.send(input).await.is_err() {
                return Ended::Closed;
            }
        }
        if members_changed
            && inputs
                .send(ClusterInput::Members(members.values().cloned().collect()))
                .await
                .is_err()
        {
            return Ended::Closed;
        }
        // Campaign for the pools without a leader; the watch reports the winner too.
        for pool in std::mem::take(&mut leaderless) {
            match c.campaign(&pool).await {
                Ok(leader) => pending.push(Update::Leader {
                    pool,
                    node: Some(leader),
                }),
                Err(e) => return failed(e),
            }
        }
        if !pending.is_empty() {
            continue;
        }
        tokio::select! {
            error = &mut keep_alive => return failed(error),
            seen = c.changes(&mut changes) => match seen {
                Ok(updates) => pending = updates,
                Err(e) => return failed(e),
            },
            out = outputs.recv() => match out {
                None => return Ended::Closed,
                Some(ClusterOutput::Decide(d)) => match c.decide(&d).await {
                    Ok(true) => {}
                    Ok(false) => warn!(pool = %d.pool, generation = d.generation, "decision not written: this node no longer leads the pool"),
                    Err(e) => return failed(e),
                },
                Some(ClusterOutput::Verdicts { pool, verdicts }) => {
                    let written = c.report(&pool, &verdicts).await;
                    owed.verdicts.insert(pool, verdicts);
                    if let Err(e) = written {
                        return failed(e);
                    }
                }
                Some(intent @ ClusterOutput::Intent { .. }) => {
                    owed.keep(intent);
                    if let Err(e) = owed.write_intents(c).await {
                        return failed(e);
                    }
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::node_id;

    #[test]
    fn node_ids_are_stable_and_differ() {
        assert_eq!(node_id("lb-1"), node_id("lb-1"));
        assert_ne!(node_id("lb-1") >> 32, node_id("lb-2") >> 32);
    }
}
