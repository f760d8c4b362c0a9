//! The daemon's wiring: build everything from the configuration, spawn the tasks around the
//! [`Controller`], and drain on SIGTERM or SIGINT. Decisions live in `controller`; this module
//! only connects channels.
//!
//! Two runtimes: the failover runtime runs the controller and what feeds its decisions
//! (probers, heartbeat receiver, link watcher) on threads of its own; the daemon's main
//! runtime runs everything else (API and TLS, control socket, metrics, resolutions, state
//! writes). However busy the main one is, a probe result and the failover it decides never
//! queue behind its tasks.

mod cluster;
mod error;
mod failover;

use std::{
    collections::BTreeSet,
    net::IpAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
};

use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
    task::JoinHandle,
    time::Instant,
};
use tracing::{error, info, warn};

pub use self::error::AppError;
use self::failover::Failover;
use crate::{
    api, control,
    controller::{
        Controller, Deps, Inputs, Start,
        commands::{self, Command},
        persist::Persisted,
        reconcile,
        snapshot::Views,
        work::{self, NetResolver, Saver, TaskProbers},
    },
    dataplane::{AyaDataplane, FlowHashKey, LoadOptions},
    events::EventLog,
    health::link,
    heartbeat::{self, Verifier},
    metrics::{self, Metrics, Readiness},
    model::spec::Spec,
    store::Store,
    timer::PreciseTimer,
};

/// Accepted heartbeats queued for the controller; beyond, they are counted and dropped (the
/// verifier has recorded them: only an element's first heartbeat after silence matters here).
const HEARTBEAT_QUEUE: usize = 4096;

/// Runs the daemon until SIGTERM or SIGINT. The data plane stays attached and pinned when it
/// returns (or crashes): only probing and decisions stop.
///
/// # Errors
/// When the configuration cannot be carried out (see [`AppError::is_config`]) or a system call
/// the daemon cannot do without fails at start-up.
pub async fn run(config_path: PathBuf, file_spec: Spec, options: Options) -> Result<(), AppError> {
    let built = build(config_path, file_spec, options).await?;
    drain(spawn(built)?).await
}

/// The daemon's command-line switches (`vnfpool daemon --help`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Move an unreadable state file aside instead of refusing to start.
    pub move_aside_bad_state: bool,
    /// Load the XDP program with its drop log on, and read it into the log.
    pub xdp_log: bool,
}

/// What [`build`] makes and [`spawn`] starts.
struct Built {
    failover: Failover,
    controller: Controller<AyaDataplane>,
    views: Views,
    probes: mpsc::Receiver<crate::health::ProbeReport>,
    cluster_inputs: mpsc::Receiver<crate::cluster::ClusterInput>,
    flows: Option<crate::flowsync::FlowSync>,
    writer: JoinHandle<()>,
    metrics_listener: tokio::net::TcpListener,
    metrics: Metrics,
    readiness: Readiness,
    events: EventLog,
    verifier: Arc<Mutex<Verifier>>,
    spec: Spec,
    epoch: Instant,
    api_tls: Option<api::Tls>,
    /// Whether the pool state is on disk (the API answers changes once it is).
    saved: crate::controller::work::Saved,
}

/// Everything up to the first input: the saved state, the resolved elements, the data plane
/// loaded or adopted and attached, and the controller.
async fn build(config_path: PathBuf, file_spec: Spec, options: Options) -> Result<Built, AppError> {
    let epoch = Instant::now();
    let failover = Failover::start()?;
    let metrics_listener = metrics::bind(file_spec.daemon.metrics)
        .await
        .map_err(io("binding the metrics listener (daemon.metrics)"))?;
    // Read before the data plane is touched: certificates that do not load stop the start.
    let api_tls = file_spec
        .api
        .as_ref()
        .map(api::read_tls)
        .transpose()?
        .map(api::Tls::new);
    let store = Store::open(&file_spec.daemon.state_dir)?;
    let persisted = load_state(&store, options.move_aside_bad_state)?;
    let spec = crate::controller::merged(&file_spec, &persisted.added);
    let net = Arc::new(NetResolver);
    let known = reconcile::known_resolutions(&[], &spec);
    let resolved =
        work::resolve_missing(net.clone(), Arc::new(spec.clone()), known, config_path.clone()).await?;

    let opts = LoadOptions {
        pin_dir: Some(spec.daemon.pin_dir.clone()),
        flow_table_size: spec.daemon.flow_table_size,
        flow_hash_key: flow_hash_key(&spec, &persisted)?,
        xdp_log: options.xdp_log,
        ..LoadOptions::default()
    };
    let mut dp = AyaDataplane::load(&opts)?;
    attach(&mut dp, &spec.daemon, options.xdp_log)?;
    let down = links_down(&resolved).await;
    let adopted = dp.adopted();
    let now = epoch.elapsed();
    let mut generations = 0;
    let pools = persisted.restore(&spec, resolved, now, &mut generations)?;
    let verifier = Arc::new(Mutex::new(Verifier::restore(
        spec.api
            .as_ref()
            .map_or(heartbeat::DEFAULT_SKEW, |api| api.heartbeat_clock_skew),
        persisted.added.agents().map(|a| heartbeat::Registration {
            id: a.id,
            key: a.key.clone(),
            last_seq: a.last_seq,
        }),
        now,
    )));
    let (probes_tx, probes) = mpsc::channel(1024);
    let (saver, writer) = Saver::spawn(store);
    let on_disk = saver.saved();
    let (events, metrics, readiness) = (
        EventLog::new(),
        Metrics::new(spec.daemon.flow_table_size),
        Readiness::default(),
    );
    let dp_key = dp.flow_hash_key();
    let joined = cluster::join(&spec, &mut dp).await?;
    let deps = Deps {
        renewal: api_tls.clone().map(renewal),
        cluster: joined.link,
        dataplane: dp,
        resolver: net,
        probers: Box::new(TaskProbers::new(probes_tx, failover.probes().clone())),
        saver,
        metrics: metrics.clone(),
        events: events.clone(),
        readiness: readiness.clone(),
        verifier: Arc::clone(&verifier),
        work: tokio::runtime::Handle::current(),
    };
    let start = Start {
        config_path,
        file_spec,
        spec: spec.clone(),
        added: persisted.added,
        pools,
        generations,
        epoch,
        adopted,
        flow_hash_key: Some(dp_key),
    };
    let (mut controller, mut views) = Controller::new(deps, start);
    views.flow_sync = joined.flows.as_ref().map(crate::flowsync::FlowSync::stats);
    controller.start(&down);
    Ok(Built {
        failover,
        controller,
        views,
        probes,
        cluster_inputs: joined.inputs,
        flows: joined.flows,
        writer,
        metrics_listener,
        metrics,
        readiness,
        events,
        verifier,
        spec,
        epoch,
        api_tls,
        saved: on_disk,
    })
}

/// What a reload renews of the API: its certificate, key, client CAs and CRLs, read again;
/// installed once the reload is carried out.
fn renewal(tls: api::Tls) -> crate::controller::work::Renewal {
    Arc::new(move |spec: &Spec| {
        let Some(api_spec) = &spec.api else {
            return Ok(None);
        };
        let files = api::read_tls(api_spec).map_err(|e| crate::telemetry::error_chain(&e))?;
        let tls = tls.clone();
        Ok(Some(crate::controller::work::Install(Box::new(move || {
            tls.install(files.clone());
        }))))
    })
}

/// Attaches the program to every interface of `daemon.interfaces`, or adopts its pinned
/// attachment there; with `xdp_log`, reads the drop log of every program attached.
fn attach(
    dp: &mut AyaDataplane,
    daemon: &crate::model::spec::DaemonSpec,
    xdp_log: bool,
) -> Result<(), AppError> {
    for interface in &daemon.interfaces {
        match dp.attach(interface, daemon.xdp_mode)? {
            None => info!(%interface, "adopted the pinned XDP attachment"),
            Some(mode) => {
                if mode == "generic" && daemon.xdp_mode == crate::model::spec::XdpMode::Auto {
                    warn!(%interface, "native XDP unavailable; attached in generic mode (slower)");
                }
                info!(%interface, mode, "attached");
            }
        }
    }
    if xdp_log {
        read_xdp_log(dp);
    }
    Ok(())
}

/// Binds the API's listener (MPTCP where asked for and offered, else TCP) and serves it.
fn serve_api(
    api_spec: &crate::model::spec::ApiSpec,
    tls: api::Tls,
    state: api::ApiState,
) -> Result<(), AppError> {
    let (listener, transport) = crate::mptcp::listen(api_spec.listen, api_spec.mptcp)
        .map_err(io("binding the API listener (api.listen)"))?;
    if api_spec.mptcp && transport == crate::mptcp::Transport::Tcp {
        warn!(
            "api.mptcp: this kernel offers no MPTCP (net.mptcp.enabled = 0, or built without it); the API listens on TCP"
        );
    }
    let clients: std::collections::HashMap<String, api::Role> = api_spec
        .clients
        .iter()
        .map(|c| (c.subject.clone(), c.role))
        .collect();
    info!(
        listen = %api_spec.listen,
        transport = transport.name(),
        "API listening (HTTPS, client certificates required)"
    );
    tokio::spawn(api::serve(
        listener,
        tls,
        clients,
        state,
        api::Timeouts::default(),
    ));
    Ok(())
}

/// Reads the drop log of every program attached into the log. A program adopted from an earlier
/// run logs only if that run loaded it with `--xdp-log`; reading stays best effort (the log is
/// a debugging aid, the data plane does not depend on it).
fn read_xdp_log(dp: &AyaDataplane) {
    if dp.adopted() {
        warn!(
            "--xdp-log: the XDP program attached by an earlier run is kept; its drop log is on only if that run had --xdp-log (detach it and remove the pins to load this one)"
        );
    }
    for id in dp.attached_programs() {
        match crate::dataplane::xdp_log::spawn(id) {
            Ok(_) => info!(program = id, "reading the XDP drop log"),
            Err(e) => warn!("--xdp-log: {}", crate::telemetry::error_chain(&e)),
        }
    }
}

/// The flow hash's key: a cluster's nodes hash flows alike (their key comes from the cluster's
/// secret); a node on its own keeps the key of its saved state, or makes one.
fn flow_hash_key(spec: &Spec, persisted: &Persisted) -> Result<FlowHashKey, AppError> {
    Ok(match &spec.cluster {
        Some(c) => FlowHashKey::Required(cluster::flow_hash_key(c)?),
        None => persisted
            .flow_hash_key
            .map_or_else(FlowHashKey::random, FlowHashKey::Preferred),
    })
}

/// The saved state. One that cannot be read is never silently replaced: it holds registrations
/// and their keys, drains, the SCE's levels and the slot numbers that adopted flows name.
fn load_state(store: &Store, move_aside_bad_state: bool) -> Result<Persisted, AppError> {
    match store.load() {
        Ok(p) => Ok(p.unwrap_or_default()),
        Err(e) if move_aside_bad_state => {
            let aside = store.move_aside()?;
            warn!(error = %e, aside = %aside.display(), "state file moved aside; starting from probes");
            Ok(Persisted::default())
        }
        Err(error) => Err(AppError::BadState { error }),
    }
}

/// The elements whose links are down at start (pool and element positions): failed at once
/// rather than after a probe round.
async fn links_down(resolved: &[Vec<crate::model::plan::Resolved>]) -> Vec<(usize, usize)> {
    let mut down = Vec::new();
    for (p, pool) in resolved.iter().enumerate() {
        for (e, r) in pool.iter().enumerate() {
            if matches!(link::link_state(r.ifindex).await, Ok(false)) {
                down.push((p, e));
            }
        }
    }
    down
}

/// This host's addresses, followed by a task when the heartbeat listener is on a wildcard
/// address (the data plane guards it at each of them); never changing otherwise.
fn watch_local_addresses(b: &Built) -> tokio::sync::watch::Receiver<BTreeSet<IpAddr>> {
    let (tx, rx) = tokio::sync::watch::channel(BTreeSet::new());
    if b.spec
        .api
        .as_ref()
        .is_some_and(|a| a.heartbeat_listen.ip().is_unspecified())
    {
        b.failover.spawn(async move {
            if let Err(e) = crate::local::watch_addresses(tx).await {
                error!(error = %crate::telemetry::error_chain(&e), "address watcher stopped; heartbeats to new addresses are not guarded");
            }
        });
    }
    rx
}

/// Starts the tasks around the controller: heartbeat receiver, link watcher, control socket,
/// metrics listener, API, and SIGHUP.
fn spawn(b: Built) -> Result<Running, AppError> {
    let (heartbeats_tx, heartbeats) = mpsc::channel(HEARTBEAT_QUEUE);
    if let Some(api_spec) = &b.spec.api {
        let socket = heartbeat::udp::bind(api_spec.heartbeat_listen)
            .map_err(io("binding the heartbeat listener (api.heartbeat_listen)"))?;
        info!(listen = %api_spec.heartbeat_listen, "heartbeats of self-registered elements received");
        let (verifier, epoch) = (Arc::clone(&b.verifier), b.epoch);
        // Registered with the failover runtime's reactor, and served there.
        let socket = {
            let _failover = b.failover.enter();
            tokio::net::UdpSocket::from_std(socket).map_err(io("registering the heartbeat socket"))?
        };
        b.failover.spawn(async move {
            if let Err(e) = heartbeat::udp::serve(socket, verifier, epoch, heartbeats_tx).await {
                error!(error = %e, "heartbeat receiver stopped; self-registered elements will be failed");
            }
        });
    }
    let local_addresses = watch_local_addresses(&b);
    let (links_tx, links) = mpsc::channel(256);
    b.failover.spawn(async move {
        if let Err(e) = link::watch_links(links_tx).await {
            error!(error = %e, "link watcher stopped; link failures are detected by probes only");
        }
    });
    let listener = control::bind(&b.spec.daemon.socket)?;
    let (commands_tx, commands) = mpsc::channel::<Command>(64);
    let views = b.views.clone();
    let scrape: metrics::Scrape = Arc::new(move |m: &Metrics| views.scrape(m));
    tokio::spawn(metrics::serve(b.metrics_listener, b.metrics, b.readiness, scrape));
    if let Some(api_spec) = &b.spec.api {
        let state = api::ApiState {
            commands: commands_tx.clone(),
            events: b.events,
            views: b.views.clone(),
            streams: api::EventStreams::default(),
            issuers: Arc::new(api_spec.issuers.clone()),
            saved: b.saved.clone(),
        };
        let tls = b.api_tls.expect("read at build when the API is configured");
        serve_api(api_spec, tls, state)?;
    }
    let snapshots = b.views.snapshot.clone();
    tokio::spawn(control::serve(
        listener,
        commands_tx.clone(),
        b.views,
        b.saved.clone(),
    ));
    let mut sighup = signal(SignalKind::hangup()).map_err(io("installing signal handlers"))?;
    tokio::spawn(async move {
        while sighup.recv().await.is_some() {
            match commands::ask(&commands_tx, |reply| Command::Reload { reply }).await {
                Ok(message) => info!(%message, "reloaded on SIGHUP"),
                Err(why) => error!(%why, "reload refused; the running configuration stays"),
            }
        }
    });
    info!(pools = b.controller.pools().len(), socket = %b.spec.daemon.socket.display(), "vnfpool running");
    let inputs = Inputs {
        probes: b.probes,
        links,
        heartbeats,
        commands,
        cluster: b.cluster_inputs,
        local_addresses,
    };
    let announcer = match &b.spec.cluster {
        Some(c) => {
            let (stop, stopped) = tokio::sync::oneshot::channel();
            Some((stop, cluster::announce(c, snapshots, stopped)?))
        }
        None => None,
    };
    Ok(Running {
        failover: b.failover,
        controller: b.controller,
        inputs,
        writer: b.writer,
        flows: b.flows,
        announcer,
    })
}

/// What [`drain`] runs until the end.
struct Running {
    failover: Failover,
    controller: Controller<AyaDataplane>,
    inputs: Inputs,
    writer: JoinHandle<()>,
    /// Flow sync, stopped when this goes (cluster nodes only).
    flows: Option<crate::flowsync::FlowSync>,
    /// The VIP announcer and its stop (cluster nodes only).
    announcer: Option<(tokio::sync::oneshot::Sender<()>, JoinHandle<()>)>,
}

/// Runs the controller on the failover runtime until SIGTERM or SIGINT, then waits for the
/// last state save.
async fn drain(r: Running) -> Result<(), AppError> {
    let mut sigterm = signal(SignalKind::terminate()).map_err(io("installing signal handlers"))?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(io("installing signal handlers"))?;
    let timer = {
        let _failover = r.failover.enter();
        PreciseTimer::new().map_err(io("creating the controller's timer (timerfd)"))?
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        let _ = stopped.await;
    };
    let mut controller = r
        .failover
        .spawn(r.controller.run(r.inputs, shutdown, Some(timer)));
    // The controller ends only when told to; if it ends otherwise (a panic), the daemon exits
    // with an error so that its supervisor restarts it, rather than living on undecided.
    let early = tokio::select! {
        _ = sigterm.recv() => None,
        _ = sigint.recv() => None,
        ended = &mut controller => Some(ended),
    };
    match early {
        None => {
            let _ = stop.send(());
            if let Err(e) = controller.await {
                error!(error = %e, "the controller failed while stopping");
            }
        }
        Some(ended) => {
            let why = ended
                .err()
                .map_or_else(|| "it returned".to_owned(), |e| e.to_string());
            error!(%why, "the controller stopped; exiting so that the daemon is restarted");
            return Err(AppError::Controller(why));
        }
    }
    crate::systemd::notify_stopping();
    // Out of the cluster: the router moves this node's flows to the others (which hold them,
    // from flow sync), and the session task leaves (the controller's link is gone).
    if let Some((stop, task)) = r.announcer {
        let _ = stop.send(());
        if let Err(e) = task.await {
            error!(error = %e, "VIP announcer failed");
        }
    }
    drop(r.flows);
    // The controller is gone with its saver: the writer ends after the last document.
    if let Err(e) = r.writer.await {
        error!(error = %e, "pool state writer failed");
    }
    // Probers, the heartbeat receiver and the link watcher go with their runtime (`Failover`'s
    // drop).
    info!("stopping; the data plane stays attached and keeps forwarding");
    Ok(())
}

pub(crate) fn io(what: &'static str) -> impl Fn(std::io::Error) -> AppError {
    move |source| AppError::Io { what, source }
}
