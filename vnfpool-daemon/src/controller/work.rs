//! The controller's slow work, done off its loop: address resolution, reading the
//! configuration file, starting probers, and writing the state file. Each runs in a task of its
//! own whose result comes back to the loop as an input; the resolver and the probers are traits
//! so that the controller's tests replace them.

use std::{
    future::Future,
    net::IpAddr,
    path::{Path, PathBuf},
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
};
use tracing::error;

use crate::{
    config,
    health::{ProbeReport, ProbeTarget, spawn_probers},
    model::{plan::Resolved, spec::Spec},
    resolve::{self, ResolveError},
    store::Store,
};

/// A boxed future, for the traits below.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Finds where packets for an element go (egress interface, MACs; for a tunnelled pool,
/// `routed`, the next hop's MAC and the tunnel's path).
pub trait Resolver: Send + Sync + 'static {
    fn resolve(
        &self,
        address: IpAddr,
        interface: Option<String>,
        mac: Option<[u8; 6]>,
        routed: bool,
    ) -> BoxFuture<Result<Resolved, ResolveError>>;
}

/// The host's routing and neighbour tables (netlink; up to 1 s for an address that does not
/// answer ARP or neighbour discovery).
pub struct NetResolver;

impl Resolver for NetResolver {
    fn resolve(
        &self,
        address: IpAddr,
        interface: Option<String>,
        mac: Option<[u8; 6]>,
        routed: bool,
    ) -> BoxFuture<Result<Resolved, ResolveError>> {
        Box::pin(async move {
            let r = resolve::resolve(address, interface.as_deref(), mac, routed).await?;
            Ok(Resolved {
                ifindex: r.ifindex,
                dst_mac: r.dst_mac,
                src_mac: r.src_mac,
                path: r.path.map(|p| crate::model::plan::TunnelPath {
                    source: p.source,
                    mtu: p.mtu,
                }),
            })
        })
    }
}

/// An element that cannot be reached the way its pool's forwarding needs.
#[derive(Debug, thiserror::Error)]
#[error("{at}pool {pool}, element {element} ({address}): {source}; expected {expected}")]
pub struct ResolveFailure {
    /// `file:line:column: ` of the element's address, when known.
    pub at: String,
    pub pool: String,
    pub element: String,
    pub address: IpAddr,
    /// What the pool's forwarding needs of the element.
    pub expected: &'static str,
    #[source]
    pub source: Box<ResolveError>,
}

/// What resolution takes: an element's address, interface and MAC as configured, and whether
/// its pool reaches it through a tunnel (routed).
pub type Address = (IpAddr, Option<String>, Option<[u8; 6]>, bool);

/// The [`Address`] of element `e` of `pool`.
#[must_use]
pub fn address_of(pool: &crate::model::spec::PoolSpec, e: &crate::model::spec::ElementSpec) -> Address {
    (e.address, e.interface.clone(), e.mac, pool.forwarding.tunnelled())
}

/// Resolves `addresses`, all at once. On failure the error names the first element of `spec`
/// with that address; the configuration file is read only then, to place it.
pub async fn resolve_addresses(
    resolver: Arc<dyn Resolver>,
    spec: Arc<Spec>,
    addresses: Vec<Address>,
    config_path: PathBuf,
) -> Result<Vec<(Address, Resolved)>, ResolveFailure> {
    let jobs = addresses.into_iter().map(|address| {
        let r = resolver.resolve(address.0, address.1.clone(), address.2, address.3);
        async move { (address, r.await) }
    });
    let mut out = Vec::new();
    for (address, result) in futures_util::future::join_all(jobs).await {
        match result {
            Ok(r) => out.push((address, r)),
            Err(source) => {
                let (pool, element) = spec
                    .pools
                    .iter()
                    .find_map(|p| {
                        let e = p.elements.iter().find(|e| e.address == address.0)?;
                        Some((p.name.clone(), e.name.clone()))
                    })
                    .unwrap_or_default();
                return Err(ResolveFailure {
                    expected: if address.3 {
                        "an element the routing table reaches from an address of this host"
                    } else {
                        "an element on a directly connected network"
                    },
                    at: std::fs::read_to_string(&config_path)
                        .ok()
                        .and_then(|text| config::element_address_position(&text, &pool, &element))
                        .map(|at| format!("{}:{at}: ", config_path.display()))
                        .unwrap_or_default(),
                    pool,
                    element,
                    address: address.0,
                    source: Box::new(source),
                });
            }
        }
    }
    Ok(out)
}

/// Resolves the elements of `spec` that `known` lacks (see [`resolve_addresses`]).
pub async fn resolve_missing(
    resolver: Arc<dyn Resolver>,
    spec: Arc<Spec>,
    known: Vec<Vec<Option<Resolved>>>,
    config_path: PathBuf,
) -> Result<Vec<Vec<Resolved>>, ResolveFailure> {
    let wanted = |p: usize, e: usize| address_of(&spec.pools[p], &spec.pools[p].elements[e]);
    let mut missing = Vec::new();
    for (p, pool) in known.iter().enumerate() {
        for (e, known) in pool.iter().enumerate() {
            if known.is_none() && !missing.contains(&wanted(p, e)) {
                missing.push(wanted(p, e));
            }
        }
    }
    let found = resolve_addresses(resolver, Arc::clone(&spec), missing, config_path).await?;
    Ok(known
        .iter()
        .enumerate()
        .map(|(p, pool)| {
            pool.iter()
                .enumerate()
                .map(|(e, known)| {
                    known.unwrap_or_else(|| {
                        let address = wanted(p, e);
                        found
                            .iter()
                            .find(|(a, _)| *a == address)
                            .map(|(_, r)| *r)
                            .unwrap_or_default()
                    })
                })
                .collect()
        })
        .collect())
}

/// A configuration file, read and checked, with where its sections start (for messages that
/// refuse a change of a section that applies on restart only).
#[derive(Debug)]
pub struct Loaded {
    pub spec: Spec,
    /// `file:line:column: ` of the `daemon:` section, or empty.
    pub daemon_at: String,
    /// `file:line:column: ` of the `api:` section, or empty.
    pub api_at: String,
    /// `file:line:column: ` of the `cluster:` section, or empty.
    pub cluster_at: String,
    /// What the reload renews outside the controller, read for this file (see [`Renewal`]).
    pub renewed: Option<Install>,
}

/// What a reload renews outside the controller (the API's certificates and CRLs, which the
/// controller knows nothing of): called with the new configuration in the reload's work task,
/// it reads what that names (an error, in words, refuses the reload), and what it returns is
/// called once the reload has been carried out.
pub type Renewal = Arc<dyn Fn(&Spec) -> Result<Option<Install>, String> + Send + Sync>;

/// The second half of a [`Renewal`]: makes what was read current.
pub struct Install(pub Box<dyn Fn() + Send + Sync>);

impl std::fmt::Debug for Install {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Install")
    }
}

/// Reads and checks the configuration file on a blocking thread, and what `renewal` reads for
/// it (an error there is placed at the `api:` section, whose files it reads).
pub async fn load_config(path: &Path, renewal: Option<Renewal>) -> Result<Loaded, String> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let spec = config::load(&path).map_err(|e| e.to_string())?;
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let at = |section| {
            config::section_position(&text, section)
                .map(|p| format!("{}:{p}: ", path.display()))
                .unwrap_or_default()
        };
        let renewed = match &renewal {
            Some(renew) => renew(&spec).map_err(|why| format!("{}{why}", at("api")))?,
            None => None,
        };
        Ok(Loaded {
            daemon_at: at("daemon"),
            api_at: at("api"),
            cluster_at: at("cluster"),
            spec,
            renewed,
        })
    })
    .await
    .unwrap_or_else(|e| Err(format!("reading the configuration: {e}")))
}

/// Starts the probers of a probe set, replacing the previous ones.
pub trait Probers: Send + 'static {
    fn start(&mut self, targets: Vec<ProbeTarget>);
}

/// One task per element (see `health::schedule`) on `runtime`, reporting on a channel.
pub struct TaskProbers {
    stop: watch::Sender<bool>,
    reports: mpsc::Sender<ProbeReport>,
    runtime: tokio::runtime::Handle,
}

impl TaskProbers {
    #[must_use]
    pub fn new(reports: mpsc::Sender<ProbeReport>, runtime: tokio::runtime::Handle) -> Self {
        Self {
            stop: watch::channel(false).0,
            reports,
            runtime,
        }
    }
}

impl Probers for TaskProbers {
    fn start(&mut self, targets: Vec<ProbeTarget>) {
        let (stop, stopped) = watch::channel(false);
        let _ = std::mem::replace(&mut self.stop, stop).send(true);
        let _runtime = self.runtime.enter();
        // The tasks run until told to stop; their handles are not needed.
        drop(spawn_probers(targets, self.reports.clone(), stopped));
    }
}

impl Drop for TaskProbers {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Hands state documents to a writer task: the controller encodes (microseconds) and goes on;
/// the task writes, syncs and renames (milliseconds). Saves made while one is written coalesce
/// into the newest. Each save is numbered; [`Saved`] tells when a save and those before it are
/// on disk, so that an answer can wait for what it announces to survive a crash.
pub struct Saver {
    documents: watch::Sender<Option<(u64, Arc<Vec<u8>>)>>,
    /// The number of the newest save queued.
    queued: Arc<AtomicU64>,
    written: watch::Receiver<Written>,
}

/// The newest save the writer finished, and whether it reached the disk.
#[derive(Debug, Clone, Copy, Default)]
struct Written {
    number: u64,
    ok: bool,
}

/// Waits for the saves queued so far to be written (see [`Saver`]).
#[derive(Clone)]
pub struct Saved {
    queued: Arc<AtomicU64>,
    written: watch::Receiver<Written>,
}

/// Why a change was not known to be saved.
#[derive(Debug, thiserror::Error)]
pub enum NotSaved {
    /// The writer failed to write it (its error is logged).
    #[error("the pool state could not be written to disk (see the daemon's log)")]
    Failed,
    /// The writer is gone (the daemon is stopping).
    #[error("the daemon is stopping; the pool state may not have been written")]
    Stopping,
}

impl Saver {
    /// A saver and its writer task, which ends after writing the last document once the saver
    /// is dropped.
    #[must_use]
    pub fn spawn(store: Store) -> (Self, JoinHandle<()>) {
        let (tx, mut rx) = watch::channel::<Option<(u64, Arc<Vec<u8>>)>>(None);
        let (written_tx, written) = watch::channel(Written::default());
        let writer = tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let Some((number, bytes)) = rx.borrow_and_update().clone() else {
                    continue;
                };
                let store = store.clone();
                let result = tokio::task::spawn_blocking(move || store.save_bytes(&bytes)).await;
                let ok = match result {
                    Ok(Ok(())) => true,
                    Ok(Err(e)) => {
                        error!(error = %e, "pool state not saved");
                        false
                    }
                    Err(e) => {
                        error!(error = %e, "pool state writer failed");
                        false
                    }
                };
                written_tx.send_replace(Written { number, ok });
            }
        });
        let saver = Self {
            documents: tx,
            queued: Arc::new(AtomicU64::new(0)),
            written,
        };
        (saver, writer)
    }

    /// Queues `document` to be written.
    pub fn save(&self, document: Vec<u8>) {
        let number = self.queued.fetch_add(1, Ordering::AcqRel) + 1;
        self.documents.send_replace(Some((number, Arc::new(document))));
    }

    /// A handle that waits for the saves queued so far.
    #[must_use]
    pub fn saved(&self) -> Saved {
        Saved {
            queued: Arc::clone(&self.queued),
            written: self.written.clone(),
        }
    }
}

impl Saved {
    /// Waits until every save queued before this call is on disk (a later one written covers
    /// an earlier one: each document is the whole state).
    ///
    /// # Errors
    /// When the write that covers them failed, or the writer is gone.
    pub async fn wait(&self) -> Result<(), NotSaved> {
        let want = self.queued.load(Ordering::Acquire);
        if want == 0 {
            return Ok(());
        }
        let mut written = self.written.clone();
        let done = written
            .wait_for(|w| w.number >= want)
            .await
            .map_err(|_| NotSaved::Stopping)?;
        if done.ok { Ok(()) } else { Err(NotSaved::Failed) }
    }
}
