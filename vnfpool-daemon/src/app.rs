//! The Pool Manager: configuration → resolution → data plane → probes → decisions → map writes.
//!
//! One task (the controller) owns the pool states and the data plane; probes, the link watcher
//! and the control socket feed it through channels. Decisions are the pure
//! [`PoolState::step`]; the controller only carries out their effects, in order: write the
//! mapping (the failover's critical path), log the failover, persist the state.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::{mpsc, watch},
    time::Instant,
};
use tracing::{error, info, warn};
use vnfpool_common::{
    addr,
    element::Element,
    maps, stats,
    vip::{PROTO_TCP, PROTO_UDP},
};

use crate::{
    api::{self, EventLog},
    config::{self, ConfigErrors},
    control::{self, BudgetStatus, ElementStatus, FailoverStatus, PoolStatus, Request, Response, Status},
    dataplane::{self, AyaDataplane, DataplaneError, LoadOptions},
    health::{
        ProbeReport, ProbeTarget,
        link::{self, LinkEvent},
        spawn_probers,
    },
    heartbeat::{self, ElementId, Key, Liveness, Verifier, udp::HeartbeatEvent},
    metrics::{self, ElementSample, FlowCounter, Metrics, Readiness},
    model::{
        failover::{Effect, Event, FailoverRecord, PoolState},
        health::{Health, Now},
        placement::Backup,
        plan::{self, Mapping, Resolved},
        roles::Role,
        spec::{Origin, PoolSpec, Protocol, RedundancySpec, Spec},
    },
    registry::{self, Added, AddedElement, Misses},
    resolve::{self, ResolveError},
    store::{Store, StoreError},
    timer::PreciseTimer,
};

/// A drain without a deadline lasts this long (until undrained, in practice).
const FOREVER: Duration = Duration::from_hours(87600);
/// Failovers kept per pool for `vnfpool status`.
const STATUS_HISTORY: usize = 16;
/// Receive buffer of the heartbeat socket: room for tens of thousands of heartbeats while the
/// receiving task waits for a CPU (see `heartbeat::udp`).
const HEARTBEAT_RCVBUF: usize = 4 << 20;
/// Accepted heartbeats queued for the controller; beyond, they are counted and dropped (the
/// verifier has recorded them: only an element's first heartbeat after silence matters here).
const HEARTBEAT_QUEUE: usize = 4096;

/// Why the daemon stopped.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The configuration is wrong (exit status 2).
    #[error("{0}")]
    Config(ConfigErrors),
    /// An element cannot be reached the way L2 direct server return needs (exit status 2).
    #[error(
        "{at}pool {pool}, element {element} ({address}): {source}; expected an element on a directly connected network"
    )]
    Resolve {
        /// `file:line:column: ` of the element's address, when known.
        at: String,
        pool: String,
        element: String,
        address: IpAddr,
        #[source]
        source: Box<ResolveError>,
    },
    #[error("data plane")]
    Dataplane(#[from] DataplaneError),
    #[error("state store")]
    Store(#[from] StoreError),
    #[error("control socket")]
    Control(#[from] control::ControlError),
    #[error("{what}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("pool {pool}: more than {max} {what}")]
    Capacity {
        pool: String,
        what: &'static str,
        max: u32,
    },
    #[error("planning the mapping")]
    Plan(#[from] plan::PlanError),
    #[error("the API (api: in the configuration)")]
    Api(#[from] api::SetupError),
}

impl AppError {
    /// Whether the error is the operator's input (exit status 2) rather than the system's.
    #[must_use]
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            Self::Config(_) | Self::Resolve { .. } | Self::Capacity { .. } | Self::Api(_)
        )
    }
}

/// What survives a restart, in the state directory.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Persisted {
    /// Wall clock at the save, for rebasing the states' instants.
    saved_unix: Duration,
    /// The controller's clock at the save.
    saved_now: Now,
    pools: BTreeMap<String, PersistedPool>,
    /// Elements added at run time (registrations and their keys included) and the SCE's
    /// redundancy requests.
    #[serde(default)]
    added: Added,
}

#[derive(Debug, Serialize, Deserialize)]
struct PersistedPool {
    /// Data-plane pool index (stable across reloads and restarts).
    index: u32,
    /// Data-plane element index by element name (stable likewise: flow-table entries name it).
    slots: BTreeMap<String, u32>,
    state: PoolState,
}

/// A failover as `status` shows it: the decision's record plus the measured switch.
#[derive(Debug, Clone)]
struct Switched {
    record: FailoverRecord,
    switch: Duration,
    at: SystemTime,
}

/// One pool at run time.
struct PoolRt {
    spec: PoolSpec,
    index: u32,
    /// Data-plane element index of each element, by position in `spec.elements`.
    slots: Vec<u32>,
    resolved: Vec<Resolved>,
    state: PoolState,
    /// Whether this process has written the pool's VIPs and a mapping yet.
    live: bool,
    /// Until the pool is live: when to go live even if some element's health is still
    /// undecided (the first health round has had time to finish).
    live_after: Now,
    recent: VecDeque<Switched>,
    /// Policy violations raised since start.
    violations: u64,
}

/// The controller's state.
struct App {
    config_path: PathBuf,
    /// The configuration file as last loaded.
    file_spec: Spec,
    /// What runs: the file's configuration with `added` merged in.
    spec: Spec,
    added: Added,
    /// Keys, sequence numbers and last heartbeats of self-registered elements; shared with
    /// the heartbeat receiver.
    verifier: Arc<Mutex<Verifier>>,
    /// Each running self-registered element's pool and position.
    agents: HashMap<ElementId, (usize, usize)>,
    misses: Misses,
    /// `GET /v1/pools`'s answer, until a pool changes (see [`App::pools_changed`]).
    summaries_json: Option<String>,
    dp: AyaDataplane,
    store: Store,
    epoch: Instant,
    pools: Vec<PoolRt>,
    /// Stops the current probers (replaced on reload).
    probers: watch::Sender<bool>,
    reports: mpsc::Sender<ProbeReport>,
    metrics: Metrics,
    readiness: Readiness,
    events: EventLog,
}

/// Runs the daemon until SIGTERM or SIGINT. The data plane stays attached and pinned when it
/// returns (or crashes): only probing and decisions stop.
///
/// # Errors
/// When the configuration cannot be carried out (see [`AppError::is_config`]) or a system call
/// the daemon cannot do without fails at start-up.
#[expect(
    clippy::too_many_lines,
    reason = "the start-up sequence reads best in one place, in order"
)]
pub async fn run(config_path: PathBuf, file_spec: Spec) -> Result<(), AppError> {
    let epoch = Instant::now();
    let metrics_listener = metrics::bind(file_spec.daemon.metrics)
        .await
        .map_err(|source| AppError::Io {
            what: "binding the metrics listener (daemon.metrics)",
            source,
        })?;
    let store = Store::open(&file_spec.daemon.state_dir)?;
    let persisted: Persisted = match store.load() {
        Ok(p) => p.unwrap_or_default(),
        Err(e) => {
            warn!(error = %e, "ignoring the saved pool state; starting from probes");
            Persisted::default()
        }
    };
    let (spec, left_out) = registry::merge(&file_spec, &persisted.added);
    for why in left_out {
        warn!(%why, "an element added at run time no longer fits; left out");
    }
    let resolved = resolve_all(&spec, &config_path, &[]).await?;

    let opts = LoadOptions {
        pin_dir: Some(spec.daemon.pin_dir.clone()),
        flow_table_size: spec.daemon.flow_table_size,
        ..LoadOptions::default()
    };
    let mut dp = AyaDataplane::load(&opts)?;
    for interface in &spec.daemon.interfaces {
        match dp.attach(interface, spec.daemon.xdp_mode)? {
            None => info!(%interface, "adopted the pinned XDP attachment"),
            Some(mode) => {
                if mode == "generic" && spec.daemon.xdp_mode == crate::model::spec::XdpMode::Auto {
                    warn!(%interface, "native XDP unavailable; attached in generic mode (slower)");
                }
                info!(%interface, mode, "attached");
            }
        }
    }
    for ifindex in resolved
        .iter()
        .flatten()
        .map(|r| r.ifindex)
        .collect::<BTreeSet<_>>()
    {
        dp.add_tx_port(ifindex)?;
    }

    let now = epoch.elapsed();
    let rebase = persisted_rebase(&persisted, now);
    let adopted = dp.adopted();
    let mut taken_pools: BTreeSet<u32> = BTreeSet::new();
    let mut pools = Vec::with_capacity(spec.pools.len());
    for (pool_spec, resolved) in spec.pools.iter().zip(resolved) {
        let saved = persisted.pools.get(&pool_spec.name);
        let index = saved.map(|p| p.index).filter(|i| !taken_pools.contains(i));
        let index = match index {
            Some(i) => i,
            None => free_index(&taken_pools, maps::MAX_POOLS, &pool_spec.name, "pools")?,
        };
        taken_pools.insert(index);
        let empty = BTreeMap::new();
        let slots = assign_slots(pool_spec, saved.map_or(&empty, |p| &p.slots))?;
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
        pools.push(PoolRt {
            live_after: now + first_round(pool_spec),
            spec: pool_spec.clone(),
            index,
            slots,
            resolved,
            state,
            live: false,
            recent: VecDeque::new(),
            violations: 0,
        });
    }

    let app_flow_capacity = spec.daemon.flow_table_size;
    let (reports_tx, mut reports) = mpsc::channel(1024);
    let (probers, _) = watch::channel(false);
    let verifier = Verifier::restore(
        heartbeat::DEFAULT_WINDOW,
        persisted.added.agents().map(|a| heartbeat::Registration {
            id: a.id,
            key: a.key.clone(),
            last_seq: a.last_seq,
        }),
        now,
    );
    let mut app = App {
        config_path,
        file_spec,
        spec,
        added: persisted.added,
        verifier: Arc::new(Mutex::new(verifier)),
        agents: HashMap::new(),
        misses: Misses::default(),
        summaries_json: None,
        dp,
        store,
        epoch,
        pools,
        probers,
        reports: reports_tx,
        metrics: Metrics::new(app_flow_capacity),
        readiness: Readiness::default(),
        events: EventLog::new(),
    };

    // A restart under a saved state with adopted maps: the roles are known, write the same
    // mapping again at once (flows stay in the adopted flow table). Otherwise wait for probes.
    for i in 0..app.pools.len() {
        if adopted && app.pools[i].state.is_carrying() {
            app.remap(i, now)?;
        }
    }
    app.sync_agents(now);
    app.start_probers();
    let (heartbeats_tx, mut heartbeats) = mpsc::channel(HEARTBEAT_QUEUE);
    if let Some(api_spec) = &app.spec.api {
        let socket = heartbeat_socket(api_spec.heartbeat_listen)?;
        info!(listen = %api_spec.heartbeat_listen, "heartbeats of self-registered elements received");
        let verifier = Arc::clone(&app.verifier);
        tokio::spawn(async move {
            if let Err(e) = heartbeat::udp::serve(socket, verifier, epoch, heartbeats_tx).await {
                error!(error = %e, "heartbeat receiver stopped; self-registered elements will be failed");
            }
        });
    } else {
        drop(heartbeats_tx);
    }

    let (links_tx, mut links) = mpsc::channel(256);
    tokio::spawn(async move {
        if let Err(e) = link::watch_links(links_tx).await {
            error!(error = %e, "link watcher stopped; link failures are detected by probes only");
        }
    });
    app.initial_link_states().await;

    let listener = control::bind(&app.spec.daemon.socket)?;
    let (commands_tx, mut commands) = mpsc::channel(64);
    let flows = match FlowCounter::open(&app.spec.daemon.pin_dir) {
        Ok(flows) => Some(Arc::new(flows)),
        Err(e) => {
            warn!(error = %e, "flow-table occupancy not exported");
            None
        }
    };
    tokio::spawn(metrics::serve(
        metrics_listener,
        app.metrics.clone(),
        app.readiness.clone(),
        commands_tx.clone(),
        flows,
    ));
    if let Some(api_spec) = &app.spec.api {
        let tls = api::tls_config(api_spec)?;
        let listener = tokio::net::TcpListener::bind(api_spec.listen)
            .await
            .map_err(|source| AppError::Io {
                what: "binding the API listener (api.listen)",
                source,
            })?;
        let clients: std::collections::HashMap<String, api::Role> = api_spec
            .clients
            .iter()
            .map(|c| (c.subject.clone(), c.role))
            .collect();
        let state = api::ApiState {
            commands: commands_tx.clone(),
            events: app.events.clone(),
        };
        info!(listen = %api_spec.listen, "API listening (HTTPS, client certificates required)");
        tokio::spawn(api::serve(
            listener,
            tls,
            clients,
            state,
            api::Timeouts::default(),
        ));
    }
    tokio::spawn(control::serve(listener, commands_tx));
    app.check_ready();

    let signal_err = |source| AppError::Io {
        what: "installing signal handlers",
        source,
    };
    let mut sigterm = signal(SignalKind::terminate()).map_err(signal_err)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(signal_err)?;
    let mut sighup = signal(SignalKind::hangup()).map_err(signal_err)?;
    let timer = PreciseTimer::new().map_err(|source| AppError::Io {
        what: "creating the controller's timer (timerfd)",
        source,
    })?;
    info!(pools = app.pools.len(), socket = %app.spec.daemon.socket.display(), "vnfpool running");

    loop {
        let deadline = app.next_deadline();
        tokio::select! {
            biased;
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
            Some(event) = links.recv() => app.link_event(&event),
            Some(event) = heartbeats.recv() => app.heartbeat(event),
            Some(report) = reports.recv() => app.probe(&report),
            Some(cmd) = commands.recv() => {
                let response = app.command(cmd.request).await;
                let _ = cmd.reply.send(response);
            }
            _ = sighup.recv() => {
                match app.reload().await {
                    Ok(message) => info!(%message, "reloaded on SIGHUP"),
                    Err(message) => error!(%message, "reload refused; the running configuration stays"),
                }
            }
            () = sleep_until(&timer, deadline) => app.tick(),
        }
    }
    crate::systemd::notify_stopping();
    let _ = app.probers.send(true);
    // The registrations' sequence numbers as of now: a heartbeat sent before the stop is not
    // accepted after the restart.
    if let Err(e) = app.save() {
        error!(error = %e, "pool state not saved");
    }
    info!("stopping; the data plane stays attached and keeps forwarding");
    Ok(())
}

async fn sleep_until(timer: &PreciseTimer, deadline: Option<Instant>) {
    match deadline {
        Some(d) => {
            if let Err(e) = timer.sleep_until(d.into_std()).await {
                // Never seen; fall back to the runtime's millisecond timer.
                warn!(error = %e, "precise timer failed");
                tokio::time::sleep_until(d).await;
            }
        }
        None => std::future::pending().await,
    }
}

/// `(from, to)` for [`PoolState::rebase`]: the saved clock advanced by the wall-clock time
/// since the save becomes the current clock.
fn persisted_rebase(p: &Persisted, now: Now) -> Option<(Now, Now)> {
    let wall = SystemTime::now().duration_since(UNIX_EPOCH).ok()?;
    let since = wall.checked_sub(p.saved_unix)?;
    Some((p.saved_now + since, now))
}

/// Time for every element of a pool to have its health decided once: enough probes for the
/// longer of a rise or a fall run, each up to its timeout, plus slack for scheduling.
fn first_round(spec: &PoolSpec) -> Duration {
    let h = &spec.health;
    (h.interval + h.timeout) * (h.rise.max(h.fall) + 1) + Duration::from_millis(100)
}

fn free_index(taken: &BTreeSet<u32>, max: u32, pool: &str, what: &'static str) -> Result<u32, AppError> {
    (0..max)
        .find(|i| !taken.contains(i))
        .ok_or_else(|| AppError::Capacity {
            pool: pool.to_owned(),
            what,
            max,
        })
}

/// Data-plane element indices for `spec`'s elements: the saved one by name when there is one,
/// else the lowest free.
fn assign_slots(spec: &PoolSpec, saved: &BTreeMap<String, u32>) -> Result<Vec<u32>, AppError> {
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

/// The heartbeat listener's socket, with a receive buffer of [`HEARTBEAT_RCVBUF`] (or what
/// `net.core.rmem_max` allows).
fn heartbeat_socket(addr: SocketAddr) -> Result<tokio::net::UdpSocket, AppError> {
    let io = |what| move |source| AppError::Io { what, source };
    let socket = std::net::UdpSocket::bind(addr)
        .map_err(io("binding the heartbeat listener (api.heartbeat_listen)"))?;
    socket
        .set_nonblocking(true)
        .map_err(io("making the heartbeat socket non-blocking"))?;
    if let Err(e) = rustix::net::sockopt::set_socket_recv_buffer_size(&socket, HEARTBEAT_RCVBUF) {
        warn!(error = %e, "heartbeat socket keeps the default receive buffer; heartbeats may be dropped under load");
    }
    tokio::net::UdpSocket::from_std(socket).map_err(io("registering the heartbeat socket"))
}

/// Resolves every element of `spec`; an element of `known` (same pool, name, address, interface
/// and MAC) keeps what it resolved to, so a change resolves only what is new.
async fn resolve_all(
    spec: &Spec,
    config_path: &std::path::Path,
    known: &[PoolRt],
) -> Result<Vec<Vec<Resolved>>, AppError> {
    let mut all = Vec::with_capacity(spec.pools.len());
    for pool in &spec.pools {
        let mut resolved = Vec::with_capacity(pool.elements.len());
        let old = known.iter().find(|p| p.spec.name == pool.name);
        for e in &pool.elements {
            let same = old.and_then(|p| {
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
            });
            if let Some(r) = same {
                resolved.push(r);
                continue;
            }
            let r = resolve::resolve(e.address, e.interface.as_deref(), e.mac)
                .await
                .map_err(|source| AppError::Resolve {
                    // The file is read for the position only when there is an error to place:
                    // every registration resolves, and needs no file.
                    at: std::fs::read_to_string(config_path)
                        .ok()
                        .and_then(|text| config::element_address_position(&text, &pool.name, &e.name))
                        .map(|p| format!("{}:{p}: ", config_path.display()))
                        .unwrap_or_default(),
                    pool: pool.name.clone(),
                    element: e.name.clone(),
                    address: e.address,
                    source: Box::new(source),
                })?;
            resolved.push(Resolved {
                ifindex: r.ifindex,
                dst_mac: r.dst_mac,
                src_mac: r.src_mac,
            });
        }
        all.push(resolved);
    }
    Ok(all)
}

fn proto(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => PROTO_TCP,
        Protocol::Udp => PROTO_UDP,
    }
}

/// The plan's mapping (indexed by position in the pool) in data-plane element indices.
fn to_dataplane(m: Mapping, slots: &[u32]) -> dataplane::Mapping {
    let len = slots.iter().max().map_or(0, |&m| m as usize + 1);
    let mut elements = vec![Element::default(); len];
    for (e, &slot) in m.elements.into_iter().zip(slots) {
        elements[slot as usize] = e;
    }
    let ring = m
        .ring
        .into_iter()
        .map(|pos| slots[usize::from(pos)] as u16)
        .collect();
    dataplane::Mapping { ring, elements }
}

// === impl App ===

impl App {
    fn now(&self) -> Now {
        self.epoch.elapsed()
    }

    fn start_probers(&mut self) {
        let (stop, stopped) = watch::channel(false);
        let _ = std::mem::replace(&mut self.probers, stop).send(true);
        let targets = ProbeTarget::for_pools(&self.pools.iter().map(|p| p.spec.clone()).collect::<Vec<_>>());
        // The tasks run until told to stop; their handles are not needed.
        drop(spawn_probers(targets, self.reports.clone(), stopped));
    }

    async fn initial_link_states(&mut self) {
        let mut down = Vec::new();
        for (p, pool) in self.pools.iter().enumerate() {
            for (e, r) in pool.resolved.iter().enumerate() {
                if matches!(link::link_state(r.ifindex).await, Ok(false)) {
                    down.push((p, e));
                }
            }
        }
        for (p, e) in down {
            self.step(p, Event::LinkDown { element: e }, self.now());
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
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
            .min()
            .map(|d| self.epoch + d)
    }

    /// An accepted heartbeat: a silent or new element is up at once; its silence will be
    /// judged one miss limit after its last heartbeat.
    fn heartbeat(&mut self, event: HeartbeatEvent) {
        let Some(&(p, e)) = self.agents.get(&event.id) else {
            return;
        };
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
            let liveness = self
                .verifier
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .liveness(id, miss, now);
            match liveness {
                Some(Liveness::Live { last }) => {
                    self.misses.watch(id, last + miss + Duration::from_micros(1));
                }
                Some(Liveness::Pending) => self.misses.watch(id, now + miss),
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
                }
                None | Some(Liveness::Failed { .. }) => {}
            }
        }
    }

    /// Follows the running pools' self-registered elements: their positions, and a judgement
    /// of the silence of each one not yet watched a miss limit from `now`. A judgement already
    /// queued stays (a registration must not postpone the failure of another element); one of
    /// an element that left finds no position and is dropped when due.
    fn sync_agents(&mut self, now: Now) {
        self.agents.clear();
        for (pool, added) in &self.added.pools {
            let Some(p) = self.pools.iter().position(|p| &p.spec.name == pool) else {
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

    fn probe(&mut self, report: &ProbeReport) {
        if report.pool < self.pools.len() && report.element < self.pools[report.pool].spec.elements.len() {
            let spec = &self.pools[report.pool].spec;
            self.metrics.probe(
                &spec.name,
                &spec.elements[report.element].name,
                report.outcome.ok,
                report.outcome.latency,
            );
            self.step(
                report.pool,
                Event::Probe {
                    element: report.element,
                    ok: report.outcome.ok,
                },
                self.now(),
            );
        }
    }

    fn link_event(&mut self, event: &LinkEvent) {
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

    fn tick(&mut self) {
        let now = self.now();
        self.judge_silence(now);
        for p in 0..self.pools.len() {
            if !self.pools[p].live {
                if now >= self.pools[p].live_after {
                    self.go_live(p, now);
                }
            } else if self.pools[p].state.next_deadline().is_some_and(|d| d <= now) {
                self.step(p, Event::Tick, now);
            }
        }
    }

    /// The pool's first mapping: from now on its elements carry flows. Taken once every
    /// element's health is decided, or when the first round is over (undecided elements are
    /// not used until they rise).
    fn go_live(&mut self, p: usize, now: Now) {
        self.pools_changed();
        self.pools[p].state.mark_carrying();
        match self.remap(p, now) {
            Ok(()) => {
                let pool = &self.pools[p];
                let active: Vec<&str> = pool
                    .state
                    .elements()
                    .iter()
                    .filter(|e| e.role() == Role::Active)
                    .map(super::model::failover::ElementState::name)
                    .collect();
                info!(pool = %pool.spec.name, ?active, "pool live");
                self.check_ready();
            }
            Err(e) => {
                error!(pool = %self.pools[p].spec.name, error = %e, "first mapping not written; retrying on the next event");
            }
        }
        if let Err(e) = self.save() {
            error!(error = %e, "pool state not saved");
        }
    }

    /// One decision and its effects. Errors are logged: a failed write keeps the last good
    /// mapping in the data plane (fail static), and the next event retries.
    fn step(&mut self, p: usize, event: Event, now: Now) {
        let decided = Instant::now();
        let pool = &mut self.pools[p];
        let effects = match pool.state.step(&pool.spec, event, now) {
            Ok(effects) => effects,
            Err(e) => {
                error!(error = %e, "decision refused");
                return;
            }
        };
        // A step without effects changed no role or health: no summary to compare.
        let changed = !effects.is_empty();
        if changed {
            self.pools_changed();
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
                    Ok(()) => switch = Some(decided.elapsed()),
                    Err(e) => {
                        error!(pool = %self.pools[p].spec.name, error = %e, "mapping not written; the previous one stays");
                    }
                },
                Effect::Record(record) => {
                    let switch = switch.unwrap_or_default();
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
                    self.events.failover(&serde_json::json!({
                        "pool": record.pool,
                        "element": record.element,
                        "reason": record.reason.name(),
                        "replaced_by": record.replaced_by,
                        "detection_ms": record.detection.as_secs_f64() * 1e3,
                        "switch_us": switch.as_secs_f64() * 1e6,
                    }));
                    let pool = &mut self.pools[p];
                    pool.recent.push_back(Switched {
                        record,
                        switch,
                        at: SystemTime::now(),
                    });
                    while pool.recent.len() > STATUS_HISTORY {
                        pool.recent.pop_front();
                    }
                }
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
        if persist && let Err(e) = self.save() {
            error!(error = %e, "pool state not saved");
        }
        if changed {
            let pool = &self.pools[p];
            self.events.pool(&api::summary(&pool.spec, &pool.state));
        }
    }

    /// Writes the pool's mapping (and, the first time, its VIPs).
    fn remap(&mut self, p: usize, _now: Now) -> Result<(), AppError> {
        let pool = &self.pools[p];
        let mapping = to_dataplane(plan::plan(&pool.spec, &pool.state, &pool.resolved)?, &pool.slots);
        let applied = self.dp.apply(pool.index, &mapping)?;
        let pool = &mut self.pools[p];
        if !pool.live {
            let vip = addr::from_ip(pool.spec.vip);
            for &port in &pool.spec.ports {
                self.dp
                    .add_vip(pool.index, vip, port, proto(pool.spec.protocol))?;
            }
            pool.live = true;
        }
        info!(
            pool = %pool.spec.name,
            generation = applied.generation,
            prepare_us = applied.prepare.as_secs_f64() * 1e6,
            switch_us = applied.switch.as_secs_f64() * 1e6,
            "mapping switched"
        );
        Ok(())
    }

    fn save(&self) -> Result<(), StoreError> {
        let persisted = Persisted {
            saved_unix: SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default(),
            saved_now: self.now(),
            pools: self
                .pools
                .iter()
                .map(|p| {
                    let slots = p
                        .spec
                        .elements
                        .iter()
                        .zip(&p.slots)
                        .map(|(e, &s)| (e.name.clone(), s))
                        .collect();
                    (
                        p.spec.name.clone(),
                        PersistedPool {
                            index: p.index,
                            slots,
                            state: p.state.clone(),
                        },
                    )
                })
                .collect(),
            added: self.added_with_sequences(),
        };
        self.store.save(&persisted)
    }

    /// `added` with each registration's last accepted sequence number as of now.
    fn added_with_sequences(&self) -> Added {
        let mut added = self.added.clone();
        let verifier = self.verifier.lock().unwrap_or_else(PoisonError::into_inner);
        for e in added.pools.values_mut().flat_map(|p| &mut p.elements) {
            if let Some(agent) = &mut e.agent
                && let Some(seq) = verifier.last_seq(agent.id)
            {
                agent.last_seq = Some(seq);
            }
        }
        added
    }

    async fn command(&mut self, request: Request) -> Response {
        match request {
            Request::Status => Response::Status(self.status()),
            Request::Drain {
                pool,
                element,
                deadline,
            } => self.admin(&pool, &element, |e| Event::Drain {
                element: e,
                deadline: deadline.unwrap_or(FOREVER),
            }),
            Request::Undrain { pool, element } => {
                self.admin(&pool, &element, |e| Event::Undrain { element: e })
            }
            Request::Reload => match self.reload().await {
                Ok(message) => Response::Ok { message },
                Err(message) => Response::Error { message },
            },
            Request::Summaries => Response::Summaries {
                pools: self.summaries(),
            },
            Request::SummariesJson => {
                if self.summaries_json.is_none() {
                    let json = serde_json::to_string(&self.summaries()).expect("summaries serialize");
                    self.summaries_json = Some(json);
                }
                Response::SummariesJson {
                    json: self.summaries_json.clone().unwrap_or_default(),
                }
            }
            Request::SampleMetrics => {
                self.sample_metrics();
                Response::Ok {
                    message: "sampled".to_owned(),
                }
            }
            Request::AddElement {
                pool,
                element,
                body,
                origin,
                subject,
            } => self
                .add_element(&pool, &element, body, origin, subject)
                .await
                .unwrap_or_else(|(status, message)| Response::Refused { status, message }),
            Request::RemoveElement {
                pool,
                element,
                subject,
            } => self
                .remove_element(&pool, &element, subject.as_deref())
                .await
                .unwrap_or_else(|(status, message)| Response::Refused { status, message }),
            Request::SetRedundancy { pool, active } => self
                .set_redundancy(&pool, active)
                .await
                .unwrap_or_else(|(status, message)| Response::Refused { status, message }),
        }
    }

    fn summaries(&self) -> Vec<api::PoolSummary> {
        self.pools
            .iter()
            .map(|p| api::summary(&p.spec, &p.state))
            .collect()
    }

    /// A pool's roles, health or configuration may have changed: what was encoded for the SCE
    /// is stale.
    fn pools_changed(&mut self) {
        self.summaries_json = None;
    }

    fn pool_index(&self, pool: &str) -> Result<usize, Refusal> {
        self.pools
            .iter()
            .position(|p| p.spec.name == pool)
            .ok_or_else(|| (404, format!("no pool {pool}")))
    }

    /// See [`Request::AddElement`].
    async fn add_element(
        &mut self,
        pool: &str,
        element: &str,
        body: serde_json::Value,
        origin: Origin,
        subject: Option<String>,
    ) -> Result<Response, Refusal> {
        let p = self.pool_index(pool)?;
        let mut added = self.added.clone();
        let extra = added.pools.entry(pool.to_owned()).or_default();
        let existing = extra.elements.iter().position(|e| e.name == element);
        let created = match existing {
            None => {
                if self.pools[p].spec.elements.iter().any(|e| e.name == element) {
                    return Err((
                        409,
                        format!(
                            "pool {pool}: element {element} is in the configuration file; change it there"
                        ),
                    ));
                }
                let agent = match origin {
                    Origin::Agent => {
                        let key = Key::generate().map_err(|e| (500, e.to_string()))?;
                        added.next_id += 1;
                        Some(registry::Agent {
                            id: added.next_id,
                            key,
                            subject: subject.clone().unwrap_or_default(),
                            last_seq: None,
                        })
                    }
                    Origin::File | Origin::Operator => None,
                };
                let new = AddedElement {
                    name: element.to_owned(),
                    origin,
                    body,
                    agent,
                };
                registry::check(&self.pools[p].spec, &new)
                    .map_err(|why| (422, format!("pool {pool}: {why}")))?;
                let extra = added.pools.entry(pool.to_owned()).or_default();
                extra.elements.push(new);
                true
            }
            Some(i) => {
                let old = &extra.elements[i];
                if old.origin != origin {
                    return Err((
                        409,
                        format!(
                            "pool {pool}: element {element} was added by {}",
                            origin_name(old.origin)
                        ),
                    ));
                }
                if let Some(agent) = &old.agent
                    && subject.as_deref() != Some(agent.subject.as_str())
                {
                    return Err((
                        403,
                        format!("pool {pool}: element {element} was registered by another client"),
                    ));
                }
                if old.body == body {
                    false
                } else {
                    let mut others = self.pools[p].spec.clone();
                    others.elements.retain(|e| e.name != element);
                    let new = AddedElement { body, ..old.clone() };
                    registry::check(&others, &new).map_err(|why| (422, format!("pool {pool}: {why}")))?;
                    extra.elements[i] = new;
                    true
                }
            }
        };
        let agent = added.pools[pool]
            .elements
            .iter()
            .find(|e| e.name == element)
            .and_then(|e| e.agent.clone());
        if created {
            self.apply_added(added).await.map_err(|why| (422, why))?;
            if let Some(agent) = &agent {
                let mut verifier = self.verifier.lock().unwrap_or_else(PoisonError::into_inner);
                if !verifier.contains(agent.id) {
                    verifier.register(agent.id, agent.key.clone(), self.now());
                }
            }
            info!(%pool, %element, origin = origin_name(origin), "element added");
        }
        Ok(Response::Added(api::ElementAdded {
            pool: pool.to_owned(),
            element: element.to_owned(),
            created,
            registration: agent.map(|a| self.registration_info(p, &a)),
        }))
    }

    /// What a self-registered element of pool `p` needs to send its heartbeats.
    fn registration_info(&self, p: usize, agent: &registry::Agent) -> api::RegistrationInfo {
        let heartbeat = &self.pools[p].spec.heartbeat;
        let listen = self.spec.api.as_ref().map(|api| api.heartbeat_listen);
        api::RegistrationInfo {
            id: agent.id,
            key: agent.key.to_hex(),
            heartbeat_port: listen.map_or(0, |l| l.port()),
            heartbeat_address: listen
                .map(|l| l.ip())
                .filter(|ip| !ip.is_unspecified())
                .map(|ip| ip.to_string()),
            interval_us: u64::try_from(heartbeat.interval.as_micros()).unwrap_or(u64::MAX),
            misses: heartbeat.misses,
        }
    }

    /// See [`Request::RemoveElement`].
    async fn remove_element(
        &mut self,
        pool: &str,
        element: &str,
        subject: Option<&str>,
    ) -> Result<Response, Refusal> {
        let p = self.pool_index(pool)?;
        let mut added = self.added.clone();
        let Some(i) = added
            .pools
            .get(pool)
            .and_then(|x| x.elements.iter().position(|e| e.name == element))
        else {
            return Err(if self.pools[p].spec.elements.iter().any(|e| e.name == element) {
                (
                    409,
                    format!("pool {pool}: element {element} is in the configuration file; remove it there"),
                )
            } else {
                (404, format!("pool {pool} has no element {element}"))
            });
        };
        let extra = added.pools.get_mut(pool).expect("found above");
        let agent = extra.elements[i].agent.clone();
        if let Some(subject) = subject
            && agent.as_ref().is_none_or(|a| a.subject != subject)
        {
            return Err((
                403,
                format!("pool {pool}: element {element} is not the caller's registration"),
            ));
        }
        extra.elements.remove(i);
        self.apply_added(added).await.map_err(|why| (500, why))?;
        if let Some(agent) = agent {
            self.verifier
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(agent.id);
        }
        info!(%pool, %element, "element removed");
        Ok(Response::Ok {
            message: format!("{pool}/{element}: removed"),
        })
    }

    /// See [`Request::SetRedundancy`].
    async fn set_redundancy(&mut self, pool: &str, active: u32) -> Result<Response, Refusal> {
        let p = self.pool_index(pool)?;
        let mut base = self.pools[p].spec.clone();
        if let Some(file) = self.file_spec.pools.iter().find(|f| f.name == pool) {
            base.redundancy = file.redundancy;
        }
        registry::with_actives(&base, active).map_err(|why| (409, format!("pool {pool}: {why}")))?;
        let mut added = self.added.clone();
        added.pools.entry(pool.to_owned()).or_default().active = Some(active);
        if added != self.added {
            self.apply_added(added).await.map_err(|why| (500, why))?;
        }
        let pool_rt = &self.pools[p];
        let summary = api::summary(&pool_rt.spec, &pool_rt.state);
        let c = &summary.capacity;
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
                .filter(|e| e.health() == Health::Up && e.admin() == crate::model::failover::Admin::Normal)
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
        Ok(Response::Level(api::LevelAnswer {
            pool: pool.to_owned(),
            active,
            met: c.redundancy_met,
            actives: c.actives,
            standbys: c.standbys,
            message,
        }))
    }

    /// Runs `added` merged into the file's configuration; on error nothing changes.
    async fn apply_added(&mut self, added: Added) -> Result<(), String> {
        let (spec, left_out) = registry::merge(&self.file_spec, &added);
        for why in left_out {
            warn!(%why, "an element added at run time no longer fits; left out");
        }
        let old = std::mem::replace(&mut self.added, added);
        if let Err(e) = self.apply_spec(spec).await {
            self.added = old;
            return Err(e);
        }
        Ok(())
    }

    fn admin(&mut self, pool: &str, element: &str, event: impl Fn(usize) -> Event) -> Response {
        let Some(p) = self.pools.iter().position(|p| p.spec.name == pool) else {
            return Response::Error {
                message: format!("no pool {pool}"),
            };
        };
        let Some(e) = self.pools[p].state.position(element) else {
            return Response::Error {
                message: format!("pool {pool} has no element {element}"),
            };
        };
        self.step(p, event(e), self.now());
        let role = self.pools[p].state.elements()[e].role();
        Response::Ok {
            message: format!("{pool}/{element}: {}", role_name(role)),
        }
    }

    /// The pools of `spec` at run time, keeping the indices, slots, state and history of the
    /// pools that stay.
    fn plan_reload(&self, spec: &Spec, resolved: Vec<Vec<Resolved>>) -> Result<Vec<PoolRt>, String> {
        let old: HashMap<String, usize> = self
            .pools
            .iter()
            .enumerate()
            .map(|(i, p)| (p.spec.name.clone(), i))
            .collect();
        let kept: BTreeSet<u32> = spec
            .pools
            .iter()
            .filter_map(|p| old.get(&p.name))
            .map(|&i| self.pools[i].index)
            .collect();
        let mut taken = kept.clone();
        let mut next = Vec::with_capacity(spec.pools.len());
        for (pool_spec, resolved) in spec.pools.iter().zip(resolved) {
            let prev = old.get(&pool_spec.name).map(|&i| &self.pools[i]);
            let index = if let Some(p) = prev {
                p.index
            } else {
                let i = free_index(&taken, maps::MAX_POOLS, &pool_spec.name, "pools")
                    .map_err(|e| e.to_string())?;
                taken.insert(i);
                i
            };
            let saved: BTreeMap<String, u32> = prev
                .map(|p| {
                    p.spec
                        .elements
                        .iter()
                        .zip(&p.slots)
                        .map(|(e, &s)| (e.name.clone(), s))
                        .collect()
                })
                .unwrap_or_default();
            let slots = assign_slots(pool_spec, &saved).map_err(|e| e.to_string())?;
            let mut state = prev.map_or_else(|| PoolState::new(pool_spec), |p| p.state.clone());
            state.reconcile(pool_spec);
            let recent = prev.map(|p| p.recent.clone()).unwrap_or_default();
            let live = prev.is_some_and(|p| {
                p.live
                    && p.spec.vip == pool_spec.vip
                    && p.spec.ports == pool_spec.ports
                    && p.spec.protocol == pool_spec.protocol
            });
            next.push(PoolRt {
                live_after: self.now() + first_round(pool_spec),
                spec: pool_spec.clone(),
                index,
                slots,
                resolved,
                state,
                live,
                recent,
                violations: prev.map_or(0, |p| p.violations),
            });
        }
        Ok(next)
    }

    /// Re-reads the configuration and applies the difference; on any error nothing changes.
    async fn reload(&mut self) -> Result<String, String> {
        let file_spec = config::load(&self.config_path).map_err(|e| e.to_string())?;
        if file_spec.daemon != self.spec.daemon {
            return Err("the daemon section changed; it takes effect on restart only".to_owned());
        }
        let (spec, left_out) = registry::merge(&file_spec, &self.added);
        for why in left_out {
            warn!(%why, "an element added at run time no longer fits; left out");
        }
        let message = self.apply_spec(spec).await?;
        self.file_spec = file_spec;
        Ok(message)
    }

    /// Runs `spec` in place of the running configuration, keeping what stays (indices, slots,
    /// state, flows); on any error nothing changes.
    async fn apply_spec(&mut self, spec: Spec) -> Result<String, String> {
        let resolved = resolve_all(&spec, &self.config_path, &self.pools)
            .await
            .map_err(|e| format!("{:#}", anyhow::Error::from(e)))?;
        // Plan everything before writing anything.
        let next = self.plan_reload(&spec, resolved)?;
        // Withdraw the VIPs of removed or re-addressed pools, and clear removed pools.
        for pool in &self.pools {
            let still = next.iter().find(|n| n.spec.name == pool.spec.name);
            if pool.live && still.is_none_or(|n| !n.live) {
                let vip = addr::from_ip(pool.spec.vip);
                for &port in &pool.spec.ports {
                    self.dp
                        .remove_vip(vip, port, proto(pool.spec.protocol))
                        .map_err(|e| e.to_string())?;
                }
            }
            if still.is_none() {
                self.dp
                    .apply(
                        pool.index,
                        &dataplane::Mapping {
                            ring: Vec::new(),
                            elements: Vec::new(),
                        },
                    )
                    .map_err(|e| e.to_string())?;
            }
        }
        for ifindex in next
            .iter()
            .flat_map(|p| p.resolved.iter().map(|r| r.ifindex))
            .collect::<BTreeSet<_>>()
        {
            self.dp.add_tx_port(ifindex).map_err(|e| e.to_string())?;
        }
        let changed: Vec<bool> = next
            .iter()
            .map(|n| {
                self.pools
                    .iter()
                    .find(|o| o.spec.name == n.spec.name)
                    .is_none_or(|o| o.spec != n.spec)
            })
            .collect();
        let probes_before = probe_key(&self.pools);
        self.pools = next;
        self.pools_changed();
        self.metrics.forget_elements();
        self.spec = spec;
        let now = self.now();
        self.sync_agents(now);
        for (p, changed) in changed.into_iter().enumerate() {
            if changed {
                self.step(p, Event::Tick, now);
                if self.pools[p].live
                    && let Err(e) = self.remap(p, now)
                {
                    error!(pool = %self.pools[p].spec.name, error = %e, "mapping not written after reload");
                }
            }
        }
        if probe_key(&self.pools) != probes_before {
            self.start_probers();
        }
        if let Err(e) = self.save() {
            error!(error = %e, "pool state not saved");
        }
        Ok(format!("reloaded {} pools", self.pools.len()))
    }

    /// Copies roles, health and the data plane's counters into the metrics.
    fn sample_metrics(&self) {
        for p in &self.pools {
            let counters = self.dp.pool_counters(p.index).unwrap_or_default();
            let samples: Vec<ElementSample<'_>> = p
                .spec
                .elements
                .iter()
                .zip(p.state.elements())
                .zip(&p.slots)
                .map(|((e, s), &slot)| ElementSample {
                    name: &e.name,
                    role: role_name(s.role()),
                    health: health_name(s.health()),
                    weight: e.weight,
                    counters: counters.element(slot),
                })
                .collect();
            self.metrics.sample_pool(&p.spec.name, counters.vip, &samples);
        }
        let reasons: Vec<(stats::Reason, stats::Counters)> = stats::Reason::ALL
            .iter()
            .map(|&r| {
                (
                    r,
                    self.dp.counters(maps::REASON_STATS, r as u32).unwrap_or_default(),
                )
            })
            .collect();
        self.metrics.sample_reasons(&reasons);
        self.metrics.sample_heartbeats(
            &self
                .verifier
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .counters(),
        );
    }

    /// Ready once every pool is live (its mapping is in the data plane after the first round
    /// of health checks, or was adopted): `/ready` answers 200 from then on.
    fn check_ready(&self) {
        if !self.readiness.is_ready() && self.pools.iter().all(|p| p.live) {
            self.readiness.set();
            info!(pools = self.pools.len(), "ready: every pool is live");
            crate::systemd::notify_ready(&format!("{} pools live", self.pools.len()));
        }
    }

    fn status(&self) -> Status {
        let pools = self
            .pools
            .iter()
            .map(|p| {
                let counters = self.dp.pool_counters(p.index).unwrap_or_default();
                let vip_counters = counters.vip;
                let elements = p
                    .spec
                    .elements
                    .iter()
                    .zip(p.state.elements())
                    .zip(&p.slots)
                    .map(|((e, s), &slot)| {
                        let backup = p.state.backups().iter().find(|b| b.active == e.name);
                        let c = counters.element(slot);
                        ElementStatus {
                            name: e.name.clone(),
                            address: e.address.to_string(),
                            role: role_name(s.role()).to_owned(),
                            health: health_name(s.health()).to_owned(),
                            packets: c.packets,
                            bytes: c.bytes,
                            backup: backup.map(Backup::explain),
                            policy_violation: backup.is_some_and(Backup::is_violation),
                        }
                    })
                    .collect();
                PoolStatus {
                    name: p.spec.name.clone(),
                    vip: p.spec.vip.to_string(),
                    ports: p.spec.ports.clone(),
                    protocol: match p.spec.protocol {
                        Protocol::Tcp => "tcp",
                        Protocol::Udp => "udp",
                    }
                    .to_owned(),
                    model: match p.spec.redundancy {
                        RedundancySpec::ActiveStandby { .. } => "active-standby".to_owned(),
                        RedundancySpec::NPlusM { active, .. } => format!("n+m (N={active})"),
                        RedundancySpec::ActiveActive => "active-active".to_owned(),
                    },
                    generation: self.dp.live(p.index).generation,
                    packets: vip_counters.packets,
                    bytes: vip_counters.bytes,
                    elements,
                    failovers: p
                        .recent
                        .iter()
                        .map(|s| FailoverStatus {
                            element: s.record.element.clone(),
                            reason: format!("{:?}", s.record.reason),
                            detection: s.record.detection,
                            switch: s.switch,
                            at_unix: s.at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64(),
                        })
                        .collect(),
                    budget: p.spec.budget.map(|b| BudgetStatus {
                        detect: b.detect,
                        switch: b.switch,
                        worst_detection: p.spec.health.worst_detection(),
                    }),
                    policy_violations: p.violations,
                }
            })
            .collect();
        Status {
            pools,
            heartbeats: self.spec.api.as_ref().map(|_| {
                self.verifier
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .counters()
            }),
        }
    }
}

/// A refused request: the HTTP status that says why, and the message.
type Refusal = (u16, String);

fn origin_name(origin: Origin) -> &'static str {
    match origin {
        Origin::File => "the configuration file",
        Origin::Operator => "an operator",
        Origin::Agent => "its own registration",
    }
}

/// A pool's health check and its probed elements: position, name, address.
type ProbeSet = (crate::model::spec::HealthSpec, Vec<(usize, String, IpAddr)>);

/// What the probers probe: each pool's health check and its probed elements, in order (the
/// probers report by position). Probers restart only when this changes, so that elements
/// registering and leaving do not reset the probe clocks of the others.
fn probe_key(pools: &[PoolRt]) -> Vec<ProbeSet> {
    pools
        .iter()
        .map(|p| {
            let probed = p
                .spec
                .elements
                .iter()
                .enumerate()
                .filter(|(_, e)| !e.origin.is_agent())
                .map(|(i, e)| (i, e.name.clone(), e.address))
                .collect();
            (p.spec.health.clone(), probed)
        })
        .collect()
}

fn health_name(health: Health) -> &'static str {
    match health {
        Health::Up => "up",
        Health::Down => "down",
        Health::Unknown => "unknown",
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Active => "active",
        Role::Standby => "standby",
        Role::Draining => "draining",
        Role::Out => "out",
    }
}

/// `vnfpool status` as a table.
#[must_use]
pub fn render_status(status: &Status) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for p in &status.pools {
        let ports: Vec<String> = p.ports.iter().map(u16::to_string).collect();
        let _ = writeln!(
            out,
            "pool {}  {}:{}/{}  {}  generation {}  {} packets",
            p.name,
            p.vip,
            ports.join(","),
            p.protocol,
            p.model,
            p.generation,
            p.packets
        );
        let _ = writeln!(
            out,
            "  {:<16} {:<40} {:<9} {:<8} {:>12}",
            "ELEMENT", "ADDRESS", "ROLE", "HEALTH", "PACKETS"
        );
        for e in &p.elements {
            let _ = writeln!(
                out,
                "  {:<16} {:<40} {:<9} {:<8} {:>12}",
                e.name, e.address, e.role, e.health, e.packets
            );
        }
        for e in &p.elements {
            if let Some(backup) = &e.backup {
                let flag = if e.policy_violation {
                    "  POLICY VIOLATION"
                } else {
                    ""
                };
                let _ = writeln!(out, "  backup of {}: {backup}{flag}", e.name);
            }
        }
        if p.policy_violations > 0 {
            let _ = writeln!(out, "  policy violations since start: {}", p.policy_violations);
        }
        if let Some(b) = &p.budget {
            let _ = writeln!(
                out,
                "  budget: detect {:?} (worst case of the health settings {:?}), switch {:?}",
                b.detect, b.worst_detection, b.switch
            );
        }
        for f in p.failovers.iter().rev().take(5) {
            let _ = writeln!(
                out,
                "  failover: {} {} detection {:.1} ms, decision to switch {:.3} ms",
                f.element,
                f.reason,
                f.detection.as_secs_f64() * 1e3,
                f.switch.as_secs_f64() * 1e3
            );
        }
        out.push('\n');
    }
    if let Some(h) = &status.heartbeats {
        let rejected: Vec<String> = heartbeat::Rejected::ALL
            .iter()
            .filter(|&&kind| h.rejected(kind) > 0)
            .map(|&kind| format!("{} {}", kind.name(), h.rejected(kind)))
            .collect();
        let _ = writeln!(
            out,
            "heartbeats: {} accepted, {} rejected{}",
            h.accepted,
            h.rejected_total(),
            if rejected.is_empty() {
                String::new()
            } else {
                format!(" ({})", rejected.join(", "))
            }
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_says_how_many_heartbeats_were_accepted_and_why_others_were_not() {
        let mut status = Status::default();
        assert_eq!(render_status(&status), "", "no API, no heartbeat line");
        status.heartbeats = Some(heartbeat::Counters {
            accepted: 12,
            bad_mac: 2,
            old_sequence: 1,
            ..heartbeat::Counters::default()
        });
        assert_eq!(
            render_status(&status),
            "heartbeats: 12 accepted, 3 rejected (bad_mac 2, old_sequence 1)\n"
        );
    }
}
