//! Prometheus metrics (`prometheus-client`, the `OpenMetrics` text format) and the HTTP listener that
//! serves them with `/live` and `/ready`.
//!
//! Events (probes, failovers, policy violations) are recorded by the controller as they
//! happen; values that live elsewhere (roles and health from the controller's published
//! snapshot, the data plane's per-CPU counters and flow-table occupancy) are copied into the
//! families by the scrape itself, on a blocking thread of the listener's: a scrape never
//! enters the controller's queue.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    extract::State,
    http::{Method, StatusCode, header},
    response::{IntoResponse as _, Response},
    routing::get,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram, info::Info},
    registry::Registry,
};
use tokio::net::TcpListener;
use tracing::debug;
use vnfpool_common::stats::{Counters, Reason};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    pool: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    node: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ElementLabels {
    pool: String,
    element: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    pool: String,
    element: String,
    state: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProbeLabels {
    pool: String,
    element: String,
    result: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PathLabels {
    pool: String,
    element: String,
    path: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    pool: String,
    reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DataplaneReasonLabels {
    reason: String,
    action: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RecordLabels {
    /// `sent`, `received`, `stored` or `refused`.
    records: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LagLabels {
    /// `last` or `max`.
    lag: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn probe_histogram() -> Histogram {
    // 100 µs .. ~3.3 s.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        1e-4, 2.0, 16,
    ))
}

fn detection_histogram() -> Histogram {
    // 1 ms .. ~8 s.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        1e-3, 2.0, 14,
    ))
}

fn switch_histogram() -> Histogram {
    // 10 µs .. ~0.3 s.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        1e-5, 2.0, 16,
    ))
}

/// Every metric of the daemon. Cloning shares the values.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    role: Family<StateLabels, Gauge>,
    health: Family<StateLabels, Gauge>,
    probe_duration: Histograms<ElementLabels>,
    probes: Family<ProbeLabels, Counter>,
    failovers: Family<ReasonLabels, Counter>,
    detection: Histograms<PoolLabels>,
    switch: Histograms<PoolLabels>,
    violations: Family<PoolLabels, Counter>,
    vip_packets: Family<PoolLabels, Counter>,
    vip_bytes: Family<PoolLabels, Counter>,
    element_packets: Family<ElementLabels, Counter>,
    element_bytes: Family<ElementLabels, Counter>,
    reason_packets: Family<DataplaneReasonLabels, Counter>,
    reason_bytes: Family<DataplaneReasonLabels, Counter>,
    actives: Family<PoolLabels, Gauge>,
    standbys: Family<PoolLabels, Gauge>,
    active_weight: Family<PoolLabels, Gauge>,
    flow_entries: Gauge,
    changes_resolving: Gauge,
    flow_capacity: Gauge,
    heartbeats: Family<ResultLabels, Counter>,
    heartbeat_path_up: Family<PathLabels, Gauge>,
    /// Cluster nodes only (`cluster:`): series appear once the node has a cluster status.
    cluster_connected: Family<NodeLabels, Gauge>,
    cluster_members: Family<NodeLabels, Gauge>,
    cluster_leader: Family<PoolLabels, Gauge>,
    cluster_generation: Family<PoolLabels, Gauge>,
    flow_sync_records: Family<RecordLabels, Counter>,
    flow_sync_rejected: Family<ReasonLabel, Counter>,
    flow_sync_lag: Family<LagLabels, Gauge<f64, AtomicU64>>,
}

/// One element's state as a scrape copies it in.
pub struct ElementSample<'a> {
    pub name: &'a str,
    /// `active`, `standby`, `draining` or `out`.
    pub role: &'a str,
    /// `up`, `down` or `unknown`.
    pub health: &'a str,
    pub weight: u32,
    pub counters: Counters,
    /// Its heartbeat paths (a self-registered element that registered some): address, up.
    pub paths: &'a [crate::controller::snapshot::PathStatus],
}

/// Every role and health value, so that each element has one series per value (1 for the
/// current one, 0 for the others) and a change never leaves a stale 1 behind.
const ROLES: [&str; 4] = ["active", "standby", "draining", "out"];
const HEALTHS: [&str; 3] = ["up", "down", "unknown"];

fn element(pool: &str, element: &str) -> ElementLabels {
    ElementLabels {
        pool: pool.to_owned(),
        element: element.to_owned(),
    }
}

fn pool(pool: &str) -> PoolLabels {
    PoolLabels {
        pool: pool.to_owned(),
    }
}

/// Sets a counter to `value`: the data plane's per-CPU counters are already cumulative.
fn store(counter: &Counter, value: u64) {
    counter.inner().store(value, Ordering::Relaxed);
}

impl Metrics {
    /// The metrics of a daemon with a flow table of `flow_capacity` flows.
    #[must_use]
    pub fn new(flow_capacity: u32) -> Self {
        let mut registry = Registry::default();
        let m = Self {
            registry: Arc::default(),
            role: Family::default(),
            health: Family::default(),
            probe_duration: Family::new_with_constructor(probe_histogram),
            probes: Family::default(),
            failovers: Family::default(),
            detection: Family::new_with_constructor(detection_histogram),
            switch: Family::new_with_constructor(switch_histogram),
            violations: Family::default(),
            vip_packets: Family::default(),
            vip_bytes: Family::default(),
            element_packets: Family::default(),
            element_bytes: Family::default(),
            reason_packets: Family::default(),
            reason_bytes: Family::default(),
            actives: Family::default(),
            standbys: Family::default(),
            active_weight: Family::default(),
            flow_entries: Gauge::default(),
            changes_resolving: Gauge::default(),
            flow_capacity: Gauge::default(),
            heartbeats: Family::default(),
            heartbeat_path_up: Family::default(),
            cluster_connected: Family::default(),
            cluster_members: Family::default(),
            cluster_leader: Family::default(),
            cluster_generation: Family::default(),
            flow_sync_records: Family::default(),
            flow_sync_rejected: Family::default(),
            flow_sync_lag: Family::default(),
        };
        m.flow_capacity.set(i64::from(flow_capacity));
        m.register(&mut registry);
        m.register_sampled(&mut registry);
        Self {
            registry: Arc::new(registry),
            ..m
        }
    }

    /// Registers the families events fill in.
    fn register(&self, r: &mut Registry) {
        r.register(
            "vnfpool_build",
            "Version of the running daemon",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_owned(),
            }),
        );
        r.register(
            "vnfpool_element_role",
            "Role of each element: 1 for the current one",
            self.role.clone(),
        );
        r.register(
            "vnfpool_element_health",
            "Health of each element: 1 for the current one",
            self.health.clone(),
        );
        r.register(
            "vnfpool_probe_duration_seconds",
            "Time from the start of a health probe to its answer or failure",
            self.probe_duration.clone(),
        );
        r.register(
            "vnfpool_probes",
            "Health probes by result (ok or failed)",
            self.probes.clone(),
        );
        r.register(
            "vnfpool_failovers",
            "Elements that lost flows (new ones or all), by reason",
            self.failovers.clone(),
        );
        r.register(
            "vnfpool_failover_detection_seconds",
            "From the first evidence of a failure to the failover decision",
            self.detection.clone(),
        );
        r.register(
            "vnfpool_failover_switch_seconds",
            "From the failover decision to the data plane switched",
            self.switch.clone(),
        );
        r.register(
            "vnfpool_policy_violations",
            "Backups chosen although they share a risk with their active element",
            self.violations.clone(),
        );
    }

    /// Registers the families a scrape fills in.
    fn register_sampled(&self, r: &mut Registry) {
        r.register(
            "vnfpool_cluster_connected",
            "1 while this node is in a session with the cluster's store (cluster nodes only)",
            self.cluster_connected.clone(),
        );
        r.register(
            "vnfpool_cluster_members",
            "Members of the cluster this node sees, itself included (cluster nodes only)",
            self.cluster_members.clone(),
        );
        r.register(
            "vnfpool_cluster_leader",
            "1 for the pools this node leads (cluster nodes only)",
            self.cluster_leader.clone(),
        );
        r.register(
            "vnfpool_flow_sync_records",
            "Flow-table entries sent to peers, received, stored and refused (cluster nodes only)",
            self.flow_sync_records.clone(),
        );
        r.register(
            "vnfpool_flow_sync_rejected",
            "Flow-sync datagrams rejected, by reason (cluster nodes only)",
            self.flow_sync_rejected.clone(),
        );
        r.register(
            "vnfpool_flow_sync_lag_seconds",
            "From a peer's send to this node's receipt of a flow-sync datagram: the last and the largest (cluster nodes only; by the two nodes' wall clocks)",
            self.flow_sync_lag.clone(),
        );
        r.register(
            "vnfpool_cluster_decision_generation",
            "Generation of the leader's decision this node maps the pool from (cluster nodes only)",
            self.cluster_generation.clone(),
        );
        r.register(
            "vnfpool_vip_packets",
            "Packets to the pool's VIPs seen by the data plane",
            self.vip_packets.clone(),
        );
        r.register(
            "vnfpool_vip_bytes",
            "Bytes to the pool's VIPs seen by the data plane",
            self.vip_bytes.clone(),
        );
        r.register(
            "vnfpool_element_packets",
            "Packets the data plane sent to each element",
            self.element_packets.clone(),
        );
        r.register(
            "vnfpool_element_bytes",
            "Bytes the data plane sent to each element",
            self.element_bytes.clone(),
        );
        r.register(
            "vnfpool_dataplane_reason_packets",
            "Packets the data plane did not forward normally, by reason and action (drop, pass, forward)",
            self.reason_packets.clone(),
        );
        r.register(
            "vnfpool_dataplane_reason_bytes",
            "Bytes the data plane did not forward normally, by reason and action (drop, pass, forward)",
            self.reason_bytes.clone(),
        );
        r.register(
            "vnfpool_heartbeats",
            "Heartbeat datagrams of self-registered elements, by result: accepted, or why rejected",
            self.heartbeats.clone(),
        );
        r.register(
            "vnfpool_heartbeat_path_up",
            "1 while a self-registered element's heartbeat path delivers within the miss limit, 0 once it went silent",
            self.heartbeat_path_up.clone(),
        );
        r.register(
            "vnfpool_pool_active_elements",
            "Elements taking new flows",
            self.actives.clone(),
        );
        r.register(
            "vnfpool_pool_standby_elements",
            "Healthy elements ready to take over",
            self.standbys.clone(),
        );
        r.register(
            "vnfpool_pool_active_weight",
            "Sum of the weights of the active elements (capacity)",
            self.active_weight.clone(),
        );
        r.register(
            "vnfpool_flow_table_entries",
            "Flows in the flow table (counted over a sample of its buckets when it is large)",
            self.flow_entries.clone(),
        );
        r.register(
            "vnfpool_flow_table_capacity",
            "Flows the flow table holds",
            self.flow_capacity.clone(),
        );
        r.register(
            "vnfpool_changes_resolving",
            "Configuration changes (reloads, registrations) waiting for their addresses to resolve",
            self.changes_resolving.clone(),
        );
    }

    /// A probe of `element` finished.
    pub fn probe(&self, pool_name: &str, element_name: &str, ok: bool, latency: Duration) {
        let labels = element(pool_name, element_name);
        self.probe_duration
            .get_or_create(&labels)
            .observe(latency.as_secs_f64());
        self.probes
            .get_or_create(&ProbeLabels {
                pool: labels.pool,
                element: labels.element,
                result: if ok { "ok" } else { "failed" }.to_owned(),
            })
            .inc();
    }

    /// A probe of `element` that this host could not make (`result="local_error"`, no verdict);
    /// how many so far.
    #[must_use]
    pub fn probe_local_error(&self, pool_name: &str, element_name: &str) -> u64 {
        let labels = element(pool_name, element_name);
        self.probes
            .get_or_create(&ProbeLabels {
                pool: labels.pool,
                element: labels.element,
                result: "local_error".to_owned(),
            })
            .inc()
            + 1
    }

    /// A failover was decided (`detection`) and switched (`switch`).
    pub fn failover(&self, pool_name: &str, reason: &str, detection: Duration, switch: Duration) {
        self.failovers
            .get_or_create(&ReasonLabels {
                pool: pool_name.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
        self.detection
            .get_or_create(&pool(pool_name))
            .observe(detection.as_secs_f64());
        self.switch
            .get_or_create(&pool(pool_name))
            .observe(switch.as_secs_f64());
    }

    /// A policy violation was raised.
    pub fn violation(&self, pool_name: &str) {
        self.violations.get_or_create(&pool(pool_name)).inc();
    }

    /// Forgets the per-element series (a reload may have removed elements); the next scrape
    /// fills them again. Event counters and histograms are kept.
    pub fn forget_elements(&self) {
        self.role.clear();
        self.health.clear();
        self.element_packets.clear();
        self.element_bytes.clear();
        self.heartbeat_path_up.clear();
    }

    /// Copies one pool's current state in, for a scrape.
    pub fn sample_pool(&self, pool_name: &str, vip: Counters, elements: &[ElementSample<'_>]) {
        store(&self.vip_packets.get_or_create(&pool(pool_name)), vip.packets);
        store(&self.vip_bytes.get_or_create(&pool(pool_name)), vip.bytes);
        let (mut actives, mut standbys, mut weight) = (0, 0, 0);
        for e in elements {
            for role in ROLES {
                let labels = StateLabels {
                    pool: pool_name.to_owned(),
                    element: e.name.to_owned(),
                    state: role.to_owned(),
                };
                self.role.get_or_create(&labels).set(i64::from(e.role == role));
            }
            for health in HEALTHS {
                let labels = StateLabels {
                    pool: pool_name.to_owned(),
                    element: e.name.to_owned(),
                    state: health.to_owned(),
                };
                self.health
                    .get_or_create(&labels)
                    .set(i64::from(e.health == health));
            }
            for path in e.paths {
                let labels = PathLabels {
                    pool: pool_name.to_owned(),
                    element: e.name.to_owned(),
                    path: path.address.clone(),
                };
                self.heartbeat_path_up
                    .get_or_create(&labels)
                    .set(i64::from(path.up));
            }
            store(
                &self.element_packets.get_or_create(&element(pool_name, e.name)),
                e.counters.packets,
            );
            store(
                &self.element_bytes.get_or_create(&element(pool_name, e.name)),
                e.counters.bytes,
            );
            match e.role {
                "active" => {
                    actives += 1;
                    weight += i64::from(e.weight);
                }
                "standby" => standbys += 1,
                _ => {}
            }
        }
        self.actives.get_or_create(&pool(pool_name)).set(actives);
        self.standbys.get_or_create(&pool(pool_name)).set(standbys);
        self.active_weight.get_or_create(&pool(pool_name)).set(weight);
    }

    /// Copies the data plane's per-reason counters in, for a scrape.
    pub fn sample_reasons(&self, counters: &[(Reason, Counters)]) {
        for &(reason, c) in counters {
            let action = match reason {
                Reason::Malformed => "pass",
                Reason::TooBig => "answer",
                Reason::IcmpForwarded | Reason::FlowEventLost | Reason::FlowNotRecorded => "forward",
                Reason::NoElement
                | Reason::Fragment
                | Reason::IcmpNoFlow
                | Reason::NoTxPort
                | Reason::HeartbeatRefused
                | Reason::EncapFailed => "drop",
            };
            let labels = DataplaneReasonLabels {
                reason: reason.name().to_owned(),
                action: action.to_owned(),
            };
            store(&self.reason_packets.get_or_create(&labels), c.packets);
            store(&self.reason_bytes.get_or_create(&labels), c.bytes);
        }
    }

    /// Copies the heartbeat verifier's counters in, for a scrape.
    pub fn sample_heartbeats(&self, counters: &crate::heartbeat::Counters) {
        let labels = |result: &str| ResultLabels {
            result: result.to_owned(),
        };
        store(
            &self.heartbeats.get_or_create(&labels("accepted")),
            counters.accepted,
        );
        store(
            &self.heartbeats.get_or_create(&labels("duplicate")),
            counters.duplicate,
        );
        for kind in crate::heartbeat::Rejected::ALL {
            store(
                &self.heartbeats.get_or_create(&labels(kind.name())),
                counters.rejected(kind),
            );
        }
    }

    /// A configuration change started (`1`) or ended (`-1`) resolving its addresses.
    pub fn resolving(&self, by: i64) {
        self.changes_resolving.inc_by(by);
    }

    /// The cluster as this node sees it.
    pub fn sample_cluster(&self, c: &crate::controller::ClusterStatus) {
        let node = NodeLabels { node: c.node.clone() };
        self.cluster_connected
            .get_or_create(&node)
            .set(i64::from(c.connected));
        self.cluster_members
            .get_or_create(&node)
            .set(i64::try_from(c.members.len()).unwrap_or(i64::MAX));
        for p in &c.pools {
            let labels = pool(&p.pool);
            self.cluster_leader
                .get_or_create(&labels)
                .set(i64::from(p.leader.as_deref() == Some(c.node.as_str())));
            self.cluster_generation
                .get_or_create(&labels)
                .set(i64::try_from(p.generation).unwrap_or(i64::MAX));
        }
    }

    /// Flow sync's counters.
    pub fn sample_flow_sync(&self, s: &crate::flowsync::StatsSnapshot) {
        for (records, value) in [
            ("sent", s.records_sent),
            ("received", s.records_received),
            ("stored", s.records_stored),
            ("refused", s.records_refused),
        ] {
            let labels = RecordLabels {
                records: records.to_owned(),
            };
            store(&self.flow_sync_records.get_or_create(&labels), value);
        }
        for (kind, &value) in crate::flowsync::Rejected::ALL.iter().zip(&s.rejected) {
            let labels = ReasonLabel {
                reason: kind.name().to_owned(),
            };
            store(&self.flow_sync_rejected.get_or_create(&labels), value);
        }
        for (lag, ns) in [("last", s.lag_last_ns), ("max", s.lag_max_ns)] {
            let labels = LagLabels { lag: lag.to_owned() };
            self.flow_sync_lag
                .get_or_create(&labels)
                .set(Duration::from_nanos(ns).as_secs_f64());
        }
    }

    /// The flow table's occupancy, as last counted.
    pub fn sample_flows(&self, flows: u64) {
        self.flow_entries.set(i64::try_from(flows).unwrap_or(i64::MAX));
    }

    /// The exposition text.
    #[must_use]
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// Whether the daemon is ready: its data plane is adopted or written and the first round of
/// health checks is over. Set by the controller, read by `/ready`.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicU64>);

impl Readiness {
    pub fn set(&self) {
        self.0.store(1, Ordering::Release);
    }

    #[must_use]
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire) == 1
    }
}

/// Binds the metrics listener (before anything else is started, so a taken port is an error
/// at start-up).
///
/// # Errors
/// When the address cannot be bound.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Reads the daemon's state into the metrics and encodes them (see
/// `controller::snapshot::Views::scrape`); may block briefly.
pub type Scrape = Arc<dyn Fn(&Metrics) -> String + Send + Sync>;

/// Serves `/metrics`, `/live` and `/ready` on `listener` until the process ends. A scrape
/// reads the controller's published snapshot and the data plane's counters on a blocking
/// thread; it never asks the controller.
pub async fn serve(listener: TcpListener, metrics: Metrics, readiness: Readiness, scrape: Scrape) {
    let app = router(Arc::new(Served {
        metrics,
        readiness,
        scrape,
    }));
    let mut gate = crate::listen::Gate::new("metrics", crate::listen::METRICS_CONNECTIONS);
    loop {
        let ((stream, peer), permit) = gate.accept(|| listener.accept()).await;
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(5))
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                debug!(%peer, error = %e, "metrics connection ended");
            }
        });
    }
}

/// The listener's routes: GET only, anything else named.
fn router(served: Arc<Served>) -> Router {
    let only_get = || async { text(StatusCode::METHOD_NOT_ALLOWED, PLAIN, "only GET\n".to_owned()) };
    Router::new()
        .route(
            "/live",
            get(|| async { text(StatusCode::OK, PLAIN, "live\n".to_owned()) }).fallback(only_get),
        )
        .route("/ready", get(ready).fallback(only_get))
        .route("/metrics", get(scrape).fallback(only_get))
        .fallback(|method: Method| async move {
            if method == Method::GET {
                text(
                    StatusCode::NOT_FOUND,
                    PLAIN,
                    "try /metrics, /live or /ready\n".to_owned(),
                )
            } else {
                text(StatusCode::METHOD_NOT_ALLOWED, PLAIN, "only GET\n".to_owned())
            }
        })
        .with_state(served)
}

struct Served {
    metrics: Metrics,
    readiness: Readiness,
    scrape: Scrape,
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, content_type)], body).into_response()
}

const PLAIN: &str = "text/plain; charset=utf-8";
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

async fn ready(State(served): State<Arc<Served>>) -> Response {
    if served.readiness.is_ready() {
        text(StatusCode::OK, PLAIN, "ready\n".to_owned())
    } else {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            PLAIN,
            "not ready: the data plane or the first health round is not done\n".to_owned(),
        )
    }
}

async fn scrape(State(served): State<Arc<Served>>) -> Response {
    let (metrics, scrape) = (served.metrics.clone(), Arc::clone(&served.scrape));
    match tokio::task::spawn_blocking(move || scrape(&metrics)).await {
        Ok(body) => text(StatusCode::OK, OPENMETRICS, body),
        Err(_) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            PLAIN,
            "reading the state failed\n".to_owned(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `method path` through the listener's routes: status, content type, body.
    async fn ask(readiness: &Readiness, method: &str, path: &str) -> (u16, String, String) {
        use tower::ServiceExt as _;
        let app = router(Arc::new(Served {
            metrics: Metrics::new(16),
            readiness: readiness.clone(),
            scrape: Arc::new(Metrics::encode),
        }));
        let request = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .body(axum::body::Body::empty())
            .expect("a request");
        let response = app.oneshot(request).await.expect("answered");
        let status = response.status().as_u16();
        let kind = response.headers()[header::CONTENT_TYPE]
            .to_str()
            .expect("ASCII")
            .to_owned();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("a body");
        (status, kind, String::from_utf8(body.to_vec()).expect("UTF-8"))
    }

    #[tokio::test]
    async fn the_listener_answers_get_only_and_names_what_it_serves() {
        let readiness = Readiness::default();
        let plain = PLAIN.to_owned();
        assert_eq!(
            ask(&readiness, "GET", "/live").await,
            (200, plain.clone(), "live\n".to_owned())
        );
        let (status, _, body) = ask(&readiness, "GET", "/ready").await;
        assert_eq!((status, body.starts_with("not ready")), (503, true));
        readiness.set();
        assert_eq!(
            ask(&readiness, "GET", "/ready").await,
            (200, plain.clone(), "ready\n".to_owned())
        );
        let (status, kind, body) = ask(&readiness, "GET", "/metrics").await;
        assert_eq!((status, kind.as_str()), (200, OPENMETRICS));
        assert!(
            body.contains("vnfpool_build_info") && body.ends_with("# EOF\n"),
            "{body}"
        );
        let only_get = (405, plain.clone(), "only GET\n".to_owned());
        assert_eq!(ask(&readiness, "POST", "/metrics").await, only_get);
        assert_eq!(ask(&readiness, "DELETE", "/elsewhere").await, only_get);
        assert_eq!(
            ask(&readiness, "GET", "/elsewhere").await,
            (404, plain, "try /metrics, /live or /ready\n".to_owned())
        );
    }

    #[test]
    fn names_and_labels_follow_the_conventions() {
        let m = Metrics::new(1024);
        m.probe("web", "e1", true, Duration::from_millis(2));
        m.failover(
            "web",
            "probe-failure",
            Duration::from_millis(30),
            Duration::from_micros(900),
        );
        m.violation("web");
        m.sample_pool(
            "web",
            Counters {
                packets: 7,
                bytes: 700,
            },
            &[ElementSample {
                name: "e1",
                role: "active",
                health: "up",
                weight: 3,
                counters: Counters {
                    packets: 5,
                    bytes: 500,
                },
                paths: &[],
            }],
        );
        m.sample_reasons(&[(
            Reason::NoElement,
            Counters {
                packets: 2,
                bytes: 120,
            },
        )]);
        let text = m.encode();
        for line in [
            "vnfpool_build_info{version=\"",
            "vnfpool_element_role{pool=\"web\",element=\"e1\",state=\"active\"} 1",
            "vnfpool_element_role{pool=\"web\",element=\"e1\",state=\"standby\"} 0",
            "vnfpool_element_health{pool=\"web\",element=\"e1\",state=\"up\"} 1",
            "vnfpool_probe_duration_seconds_count{pool=\"web\",element=\"e1\"} 1",
            "vnfpool_probes_total{pool=\"web\",element=\"e1\",result=\"ok\"} 1",
            "vnfpool_failovers_total{pool=\"web\",reason=\"probe-failure\"} 1",
            "vnfpool_failover_detection_seconds_count{pool=\"web\"} 1",
            "vnfpool_failover_switch_seconds_sum{pool=\"web\"} 0.0009",
            "vnfpool_policy_violations_total{pool=\"web\"} 1",
            "vnfpool_vip_packets_total{pool=\"web\"} 7",
            "vnfpool_element_bytes_total{pool=\"web\",element=\"e1\"} 500",
            "vnfpool_dataplane_reason_packets_total{reason=\"no_element\",action=\"drop\"} 2",
            "vnfpool_pool_active_weight{pool=\"web\"} 3",
            "vnfpool_flow_table_capacity 1024",
            "# EOF",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        // The per-CPU counters are cumulative: a later sample replaces, never adds.
        m.sample_pool(
            "web",
            Counters {
                packets: 9,
                bytes: 900,
            },
            &[],
        );
        assert!(m.encode().contains("vnfpool_vip_packets_total{pool=\"web\"} 9"));
    }
}
