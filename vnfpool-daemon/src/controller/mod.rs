//! The controller: one task that owns the pools' state and the data plane, and turns inputs
//! (probe reports, link events, heartbeats, commands, the results of its own slow work) into
//! decisions ([`crate::model::failover::PoolState::step`]) and their effects, in order: write
//! the mapping (the failover's critical path), log and count the failover, queue the state
//! save, publish a snapshot for readers.
//!
//! By job:
//! - `events.rs`: inputs that decide (probes, links, heartbeats, timers) and carrying out the
//!   effects;
//! - `changes.rs`: commands, and configuration changes (reload, elements added and removed,
//!   redundancy levels): checked, resolved in tasks (changes never wait for each other's
//!   resolutions), checked again and carried out through [`reconcile`];
//! - [`reconcile`]: the pools at run time and reload as a pure function;
//! - [`snapshot`]: what status, metrics and the SCE read, without asking the controller;
//! - [`persist`]: the state file's schema; [`work`]: the slow work done off the loop.
//!
//! Nothing slow runs on the loop (DESIGN invariant 7): resolution and reading the
//! configuration file run in tasks whose results come back as inputs, state files are written
//! by a task of their own, and the data plane never waits for a grace period here. Due timers
//! are served before anything queued.

mod changes;
mod cluster;
pub mod commands;
mod events;
pub mod persist;
pub mod reconcile;
pub mod snapshot;
pub mod work;

#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
};

use tokio::{
    sync::{mpsc, watch},
    time::Instant,
};
use tracing::warn;

use self::{
    changes::Internal,
    cluster::ClusterRt,
    commands::Command,
    reconcile::PoolRt,
    snapshot::{Snapshot, Views},
    work::{Probers, Resolver, Saver},
};
pub use self::{
    changes::merged,
    cluster::{ClusterLink, ClusterPoolStatus, ClusterStatus},
};
use crate::{
    cluster::ClusterInput,
    dataplane::{Dataplane, HeartbeatGuard},
    events::EventLog,
    health::{ProbeReport, link::LinkEvent},
    heartbeat::{ElementId, Verifier, udp::HeartbeatEvent},
    metrics::{Metrics, Readiness},
    model::{health::Now, spec::Spec},
    registry::{Added, Misses},
    timer::PreciseTimer,
};

/// What the controller works with: the data plane and the I/O around it.
pub struct Deps<D> {
    pub dataplane: D,
    pub resolver: Arc<dyn Resolver>,
    pub probers: Box<dyn Probers>,
    pub saver: Saver,
    pub metrics: Metrics,
    pub events: EventLog,
    pub readiness: Readiness,
    /// Keys, sequence numbers and last heartbeats of self-registered elements; shared with
    /// the heartbeat receiver.
    pub verifier: Arc<Mutex<Verifier>>,
    /// Where the slow work runs (resolutions, reading the configuration file): a runtime other
    /// than the controller's, in the daemon, so that it never takes the controller's threads.
    pub work: tokio::runtime::Handle,
    /// The cluster this node belongs to (`cluster:`); `None`: a node on its own.
    pub cluster: Option<ClusterLink>,
    /// What a reload renews outside the controller (the API's TLS); `None`: nothing.
    pub renewal: Option<work::Renewal>,
}

/// Where the controller starts from.
pub struct Start {
    pub config_path: PathBuf,
    /// The configuration file as loaded.
    pub file_spec: Spec,
    /// What runs: the file's configuration with `added` merged in.
    pub spec: Spec,
    pub added: Added,
    /// The pools, restored ([`persist::Persisted::restore`]).
    pub pools: Vec<PoolRt>,
    /// Element generations handed out so far.
    pub generations: u64,
    /// The controller's clock starts here (`Now` is the time since).
    pub epoch: Instant,
    /// The data plane's maps were adopted from a previous run.
    pub adopted: bool,
    /// The key the data plane hashes flows with, saved with the state.
    pub flow_hash_key: Option<vnfpool_common::flow::HashKey>,
}

/// What the controller listens to.
pub struct Inputs {
    pub probes: mpsc::Receiver<ProbeReport>,
    pub links: mpsc::Receiver<LinkEvent>,
    pub heartbeats: mpsc::Receiver<HeartbeatEvent>,
    pub commands: mpsc::Receiver<Command>,
    /// What the cluster says (never anything on a node on its own).
    pub cluster: mpsc::Receiver<ClusterInput>,
    /// This host's addresses ([`crate::local::watch_addresses`]): where a heartbeat listener
    /// on a wildcard address is guarded.
    pub local_addresses: watch::Receiver<BTreeSet<IpAddr>>,
}

/// See the module documentation.
pub struct Controller<D: Dataplane> {
    config_path: PathBuf,
    file_spec: Spec,
    spec: Spec,
    added: Added,
    pools: Vec<PoolRt>,
    /// Position in `pools` by data-plane pool index.
    by_index: HashMap<u32, usize>,
    generations: u64,
    epoch: Instant,
    adopted: bool,
    flow_hash_key: Option<vnfpool_common::flow::HashKey>,
    dp: D,
    resolver: Arc<dyn Resolver>,
    probers: Box<dyn Probers>,
    saver: Saver,
    metrics: Metrics,
    events: EventLog,
    readiness: Readiness,
    verifier: Arc<Mutex<Verifier>>,
    work: tokio::runtime::Handle,
    /// Each running self-registered element's pool and position.
    agents: HashMap<ElementId, (usize, usize)>,
    misses: Misses,
    /// Addresses resolved for changes in progress, and when.
    resolutions: HashMap<work::Address, (crate::model::plan::Resolved, Now)>,
    internal: (mpsc::UnboundedSender<Internal>, mpsc::UnboundedReceiver<Internal>),
    snapshot: watch::Sender<Arc<Snapshot>>,
    /// Something readers see changed since the last snapshot.
    dirty: bool,
    cluster: Option<ClusterRt>,
    renewal: Option<work::Renewal>,
    /// This host's addresses, as last reported.
    local_addresses: BTreeSet<IpAddr>,
    /// The heartbeat guard written to the data plane; `None` before the first write (which
    /// also clears what adopted maps hold from a run that had another).
    guard: Option<HeartbeatGuard>,
}

impl<D: Dataplane> Controller<D> {
    /// A controller, and the views readers use.
    pub fn new(deps: Deps<D>, start: Start) -> (Self, Views) {
        let (snapshot, snapshot_rx) = watch::channel(Arc::new(Snapshot::default()));
        let views = Views {
            snapshot: snapshot_rx,
            reader: deps.dataplane.reader(),
            heartbeats: start.spec.api.as_ref().map(|_| Arc::clone(&deps.verifier)),
            flow_sync: None,
        };
        let mut controller = Self {
            config_path: start.config_path,
            file_spec: start.file_spec,
            spec: start.spec,
            added: start.added,
            by_index: HashMap::new(),
            pools: start.pools,
            generations: start.generations,
            epoch: start.epoch,
            adopted: start.adopted,
            flow_hash_key: start.flow_hash_key,
            dp: deps.dataplane,
            resolver: deps.resolver,
            probers: deps.probers,
            saver: deps.saver,
            metrics: deps.metrics,
            events: deps.events,
            readiness: deps.readiness,
            verifier: deps.verifier,
            work: deps.work,
            agents: HashMap::new(),
            misses: Misses::default(),
            resolutions: HashMap::new(),
            internal: mpsc::unbounded_channel(),
            snapshot,
            dirty: true,
            cluster: deps.cluster.map(ClusterRt::new),
            renewal: deps.renewal,
            local_addresses: BTreeSet::new(),
            guard: None,
        };
        controller.index_pools();
        (controller, views)
    }

    fn now(&self) -> Now {
        self.epoch.elapsed()
    }

    /// The position of the pool named `pool`.
    fn pool_named(&self, pool: &str) -> Option<usize> {
        self.pools.iter().position(|p| p.spec.name == pool)
    }

    fn index_pools(&mut self) {
        self.by_index = self.pools.iter().enumerate().map(|(i, p)| (p.index, i)).collect();
    }

    /// The pools as they run (for tests and the daemon's last words).
    #[must_use]
    pub fn pools(&self) -> &[PoolRt] {
        &self.pools
    }

    /// Everything up to the first input: the mappings of an adopted data plane written again
    /// at once (flows stay in the adopted flow table), probers started, the links found down
    /// at start applied (`down`: pool and element positions).
    pub fn start(&mut self, down: &[(usize, usize)]) {
        let now = self.now();
        for p in 0..self.pools.len() {
            // A cluster node keeps the adopted maps as they are until the first decision.
            if self.adopted && self.cluster.is_none() && self.pools[p].state.is_carrying() {
                self.write_first(p, now);
            }
        }
        self.sync_agents(now);
        self.sync_verifier();
        self.probers.start(self.probe_targets());
        for &(p, e) in down {
            self.step(p, crate::model::failover::Event::LinkDown { element: e }, now);
        }
        self.check_ready();
        self.publish();
    }

    /// Serves `inputs` until `shutdown` resolves, then saves the state (with the registrations'
    /// sequence numbers as of now, so that a heartbeat sent before the stop is not accepted
    /// after the restart). `timer` gives microsecond deadlines; without it the runtime's
    /// millisecond timer is used (and tokio's paused clock works).
    pub async fn run(
        mut self,
        mut inputs: Inputs,
        shutdown: impl Future<Output = ()>,
        timer: Option<PreciseTimer>,
    ) {
        tokio::pin!(shutdown);
        // Probe reports are taken as many as are waiting at a time: one turn of this loop for a
        // pool's worth of reports that arrive together.
        let mut reports = Vec::with_capacity(PROBE_BATCH);
        loop {
            let deadline = self.next_deadline();
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                () = sleep_until(timer.as_ref(), deadline) => self.tick(),
                Some(event) = inputs.links.recv() => self.link_event(&event),
                Some(event) = inputs.heartbeats.recv() => self.heartbeat(event),
                1.. = inputs.probes.recv_many(&mut reports, PROBE_BATCH) => {
                    for report in reports.drain(..) {
                        self.probe(&report);
                    }
                }
                Some(input) = inputs.cluster.recv() => self.cluster_input(input),
                Ok(()) = inputs.local_addresses.changed() => {
                    self.local_addresses.clone_from(&inputs.local_addresses.borrow_and_update());
                    self.sync_guard();
                }
                Some(done) = self.internal.1.recv() => self.internal(done),
                Some(command) = inputs.commands.recv() => self.command(command),
            }
            if self.dirty {
                self.publish();
            }
        }
        self.stop();
    }

    fn stop(&mut self) {
        self.probers.start(Vec::new());
        self.save();
    }
}

/// The most probe reports the controller takes in one turn.
const PROBE_BATCH: usize = 64;

async fn sleep_until(timer: Option<&PreciseTimer>, deadline: Option<Instant>) {
    match (deadline, timer) {
        (Some(d), Some(timer)) => {
            if let Err(e) = timer.sleep_until(d.into_std()).await {
                // Never seen; fall back to the runtime's millisecond timer.
                warn!(error = %e, "precise timer failed");
                tokio::time::sleep_until(d).await;
            }
        }
        (Some(d), None) => tokio::time::sleep_until(d).await,
        (None, _) => std::future::pending().await,
    }
}
