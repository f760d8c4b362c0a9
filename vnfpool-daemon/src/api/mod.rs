//! The HTTPS API for the Service Control Entity and operators (draft 5.3, 5.4, 7): axum on
//! hyper, rustls with mutual TLS. A client's certificate subject gives its role; the `sce`
//! role sees pools, their state and capacity and never an element's name, address or role.
//!
//! The API owns no pool state: it asks the controller over the same command channel as the
//! local socket, and reads the [`events::EventLog`] the controller writes.

pub mod client;
pub mod events;

use std::{collections::HashMap, convert::Infallible, net::IpAddr, path::Path, sync::Arc, time::Duration};

use axum::{
    Extension, Json, Router,
    extract::{DefaultBodyLimit, Path as UrlPath, State, rejection::JsonRejection},
    http::{HeaderMap, StatusCode},
    response::{
        IntoResponse, Response as HttpResponse,
        sse::{Event as SseEvent, KeepAlive, Sse},
    },
    routing::{get, post, put},
};
use futures_util::{Stream, StreamExt as _, stream};
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::{
    RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
    server::WebPkiClientVerifier,
};
use serde::{Deserialize, Serialize};
use tokio::{
    net::TcpListener,
    sync::{mpsc, oneshot},
};
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::BroadcastStream;
use tracing::{debug, info};
use utoipa::{OpenApi, ToSchema};

pub use self::events::EventLog;
pub use crate::model::spec::ApiRole as Role;
use crate::{
    control::{Command, Request, Response, Status},
    model::{
        failover::PoolState,
        roles::Role as ElementRole,
        spec::{ApiSpec, PoolSpec, Protocol, RedundancySpec},
    },
};

/// Largest request body accepted (413 beyond).
pub const BODY_LIMIT: usize = 64 * 1024;

/// How a pool fares, as the SCE sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PoolHealth {
    /// Its configured redundancy is met.
    Up,
    /// It carries traffic with fewer actives or standbys than configured.
    Degraded,
    /// No element takes new flows.
    Down,
}

/// A pool's capacity, without element identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Capacity {
    /// Sum of the weights of the active elements.
    pub active_weight: u64,
    pub actives: u32,
    pub standbys: u32,
    /// Actives the configuration asks for (N).
    pub configured_actives: u32,
    /// Standbys the configuration implies (M: the other elements).
    pub configured_standbys: u32,
    /// Actives and standbys are at least as many as configured.
    pub redundancy_met: bool,
}

/// A pool as the SCE sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PoolSummary {
    pub name: String,
    #[schema(value_type = String)]
    pub vip: IpAddr,
    pub ports: Vec<u16>,
    /// `tcp` or `udp`.
    pub protocol: String,
    pub state: PoolHealth,
    pub capacity: Capacity,
}

/// The SCE's view of one pool: a pure function of its configuration and state.
#[must_use]
pub fn summary(spec: &PoolSpec, state: &PoolState) -> PoolSummary {
    let count = u32::try_from(spec.elements.len()).unwrap_or(u32::MAX);
    let configured_actives = match spec.redundancy {
        RedundancySpec::ActiveStandby { .. } => 1,
        RedundancySpec::NPlusM { active, .. } => active,
        RedundancySpec::ActiveActive => count,
    }
    .min(count);
    let (mut actives, mut standbys, mut active_weight) = (0u32, 0u32, 0u64);
    for (e, s) in spec.elements.iter().zip(state.elements()) {
        match s.role() {
            ElementRole::Active => {
                actives += 1;
                active_weight += u64::from(e.weight);
            }
            ElementRole::Standby => standbys += 1,
            ElementRole::Draining | ElementRole::Out => {}
        }
    }
    let configured_standbys = count - configured_actives;
    let redundancy_met = actives >= configured_actives && standbys >= configured_standbys;
    PoolSummary {
        name: spec.name.clone(),
        vip: spec.vip,
        ports: spec.ports.clone(),
        protocol: match spec.protocol {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
        .to_owned(),
        state: if actives == 0 {
            PoolHealth::Down
        } else if redundancy_met {
            PoolHealth::Up
        } else {
            PoolHealth::Degraded
        },
        capacity: Capacity {
            active_weight,
            actives,
            standbys,
            configured_actives,
            configured_standbys,
            redundancy_met,
        },
    }
}

/// Why the API cannot start.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{what} {}", path.display())]
    Pem {
        what: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("{what}")]
    Tls {
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The server's TLS configuration: its certificate, and client certificates required and
/// checked against `client_ca`.
///
/// # Errors
/// When a file cannot be read or parsed, or the key does not fit the certificate.
pub fn tls_config(spec: &ApiSpec) -> Result<Arc<ServerConfig>, SetupError> {
    fn pem(what: &'static str, path: &Path) -> impl FnOnce(rustls::pki_types::pem::Error) -> SetupError {
        let path = path.to_owned();
        move |source| SetupError::Pem { what, path, source }
    }
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&spec.cert)
        .and_then(Iterator::collect)
        .map_err(pem("reading the certificate chain", &spec.cert))?;
    let key = PrivateKeyDer::from_pem_file(&spec.key).map_err(pem("reading the private key", &spec.key))?;
    let mut roots = RootCertStore::empty();
    let cas: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&spec.client_ca)
        .and_then(Iterator::collect)
        .map_err(pem("reading the client CA certificates", &spec.client_ca))?;
    for ca in cas {
        roots.add(ca).map_err(|e| SetupError::Tls {
            what: "adding a client CA certificate",
            source: Box::new(e),
        })?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
        .build()
        .map_err(|e| SetupError::Tls {
            what: "building the client certificate verifier",
            source: Box::new(e),
        })?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_client_cert_verifier(verifier).with_single_cert(certs, key))
        .map_err(|e: rustls::Error| SetupError::Tls {
            what: "the server certificate and key",
            source: Box::new(e),
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Who is calling: the certificate's subject and, when the configuration maps it, its role.
#[derive(Debug, Clone)]
pub struct Peer {
    pub subject: String,
    pub role: Option<Role>,
}

/// The subject of a DER certificate, as `CN=…, O=…`.
#[must_use]
pub fn subject(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(cert.subject().to_string())
}

/// Limits against slow or idle clients.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// TLS handshake.
    pub handshake: Duration,
    /// A request's headers.
    pub headers: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            handshake: Duration::from_secs(5),
            headers: Duration::from_secs(5),
        }
    }
}

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub commands: mpsc::Sender<Command>,
    pub events: EventLog,
}

/// Serves the API on `listener` until the process ends: TLS with client certificates, then
/// HTTP/1.1 with the caller's [`Peer`] attached to each request.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    clients: HashMap<String, Role, impl std::hash::BuildHasher + Send + Sync + 'static>,
    state: ApiState,
    timeouts: Timeouts,
) {
    let acceptor = TlsAcceptor::from(tls);
    let clients = Arc::new(clients);
    let app = router(state);
    loop {
        let Ok((tcp, addr)) = listener.accept().await else {
            continue;
        };
        let (acceptor, clients, app) = (acceptor.clone(), Arc::clone(&clients), app.clone());
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(timeouts.handshake, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    info!(%addr, error = %e, "API: TLS handshake refused");
                    return;
                }
                Err(_) => {
                    info!(%addr, "API: TLS handshake timed out");
                    return;
                }
            };
            let subject = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| subject(c))
                .unwrap_or_default();
            let peer = Peer {
                role: clients.get(&subject).copied(),
                subject,
            };
            let service = hyper_util::service::TowerToHyperService::new(app.layer(Extension(peer)));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(timeouts.headers)
                .serve_connection(TokioIo::new(tls), service);
            if let Err(e) = conn.await {
                debug!(%addr, error = %e, "API connection ended");
            }
        });
    }
}

/// The routes, with the body limit.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/v1/pools", get(list_pools))
        .route("/v1/pools/{name}", get(get_pool))
        .route("/v1/events", get(events))
        .route("/v1/status", get(status))
        .route("/v1/pools/{pool}/redundancy", put(set_redundancy))
        .route(
            "/v1/pools/{pool}/elements/{element}",
            put(add_element).delete(remove_element),
        )
        .route("/v1/pools/{pool}/elements/{element}/drain", post(drain))
        .route("/v1/pools/{pool}/elements/{element}/undrain", post(undrain))
        .route("/v1/openapi.json", get(openapi_json))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// An error answer: a status and one JSON object `{"error": "..."}`.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> HttpResponse {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

/// The caller's role, if it is one of `allowed`.
fn allow(peer: &Peer, allowed: &[Role]) -> Result<Role, ApiError> {
    match peer.role {
        Some(role) if allowed.contains(&role) => Ok(role),
        Some(role) => Err(ApiError(
            StatusCode::FORBIDDEN,
            format!("the {role:?} role may not call this endpoint"),
        )),
        None => Err(ApiError(
            StatusCode::FORBIDDEN,
            format!(
                "certificate subject `{}` has no role in the configuration",
                peer.subject
            ),
        )),
    }
}

async fn ask(state: &ApiState, request: Request) -> Result<Response, ApiError> {
    let (reply, answer) = oneshot::channel();
    let unavailable = || {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "the controller is not answering".to_owned(),
        )
    };
    state
        .commands
        .send(Command { request, reply })
        .await
        .map_err(|_| unavailable())?;
    answer.await.map_err(|_| unavailable())
}

async fn summaries(state: &ApiState) -> Result<Vec<PoolSummary>, ApiError> {
    match ask(state, Request::Summaries).await? {
        Response::Summaries { pools } => Ok(pools),
        other => Err(ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("unexpected answer {other:?}"),
        )),
    }
}

/// Every pool: state and capacity.
#[utoipa::path(get, path = "/v1/pools", responses((status = 200, body = [PoolSummary])), tag = "sce")]
async fn list_pools(
    State(state): State<ApiState>,
    Extension(peer): Extension<Peer>,
) -> Result<impl IntoResponse, ApiError> {
    allow(&peer, &[Role::Sce, Role::Operator])?;
    // The controller keeps the encoded answer until a pool changes.
    match ask(&state, Request::SummariesJson).await? {
        Response::SummariesJson { json } => {
            Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], json))
        }
        other => Err(unexpected(&other)),
    }
}

/// One pool.
#[utoipa::path(get, path = "/v1/pools/{name}", params(("name" = String, Path)),
    responses((status = 200, body = PoolSummary), (status = 404)), tag = "sce")]
async fn get_pool(
    State(state): State<ApiState>,
    Extension(peer): Extension<Peer>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<PoolSummary>, ApiError> {
    allow(&peer, &[Role::Sce, Role::Operator])?;
    summaries(&state)
        .await?
        .into_iter()
        .find(|p| p.name == name)
        .map(Json)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no pool {name}")))
}

/// Everything about every pool, elements included.
#[utoipa::path(get, path = "/v1/status", responses((status = 200)), tag = "operator")]
async fn status(
    State(state): State<ApiState>,
    Extension(peer): Extension<Peer>,
) -> Result<Json<Status>, ApiError> {
    allow(&peer, &[Role::Operator])?;
    match ask(&state, Request::Status).await? {
        Response::Status(s) => Ok(Json(s)),
        other => Err(ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("unexpected answer {other:?}"),
        )),
    }
}

/// A drain request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DrainBody {
    /// Longest the element's existing flows may stay, in milliseconds; none: until undrained.
    pub deadline_ms: Option<u64>,
}

fn done(response: Response) -> Result<Json<serde_json::Value>, ApiError> {
    match response {
        Response::Ok { message } => Ok(Json(serde_json::json!({ "message": message }))),
        Response::Error { message } => Err(ApiError(StatusCode::NOT_FOUND, message)),
        Response::Refused { status, message } => Err(refused(status, message)),
        other => Err(ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("unexpected answer {other:?}"),
        )),
    }
}

/// No new flows to the element; its flows stay until they end or the deadline.
#[utoipa::path(post, path = "/v1/pools/{pool}/elements/{element}/drain",
    params(("pool" = String, Path), ("element" = String, Path)), request_body = DrainBody,
    responses((status = 200), (status = 400), (status = 403), (status = 404), (status = 413)), tag = "operator")]
async fn drain(
    State(state): State<ApiState>,
    Extension(peer): Extension<Peer>,
    UrlPath((pool, element)): UrlPath<(String, String)>,
    body: Result<Json<DrainBody>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    allow(&peer, &[Role::Operator])?;
    let Json(body) = body.map_err(|e| ApiError(e.status(), e.body_text()))?;
    let request = Request::Drain {
        pool,
        element,
        deadline: body.deadline_ms.map(Duration::from_millis),
    };
    done(ask(&state, request).await?)
}

fn refused(status: u16, message: String) -> ApiError {
    ApiError(
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        message,
    )
}

fn unexpected(other: &Response) -> ApiError {
    ApiError(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("unexpected answer {other:?}"),
    )
}

/// An element to add, with the keys of an element of the configuration file (its name is the
/// path's). Only `address` is required.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(
    dead_code,
    reason = "documents the body; the body is checked by the configuration's rules"
)]
pub struct ElementBody {
    /// Same family as the pool's VIP, not the VIP, unique in the pool.
    pub address: String,
    /// 0..=4294967295, default 100; higher wins the active role.
    pub priority: Option<u32>,
    /// 1..=1000, default 1; share of new flows when active.
    pub weight: Option<u32>,
    /// Failure-domain kind → value, like `{"host": "h1"}`.
    pub failure_domains: Option<std::collections::BTreeMap<String, String>>,
    /// Shared-risk link groups.
    pub srlg: Option<Vec<String>>,
    /// A site of the placement topology.
    pub site: Option<String>,
    /// The element's MAC, when not to be resolved from the neighbour table.
    pub mac: Option<String>,
    /// The egress interface, when not to be resolved from the routing table.
    pub interface: Option<String>,
}

/// Where and how a self-registered element sends its heartbeats (the wire format is in the
/// `heartbeat` module's documentation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RegistrationInfo {
    /// The element's id, the first field of each heartbeat.
    pub id: u64,
    /// The element's HMAC-SHA256 key, 64 hexadecimal digits. Secret.
    pub key: String,
    /// UDP port of the daemon's heartbeat listener.
    pub heartbeat_port: u16,
    /// Its address when it listens on one; otherwise send to the address the API was reached at.
    pub heartbeat_address: Option<String>,
    /// Time between two heartbeats, in microseconds.
    pub interval_us: u64,
    /// Intervals the element may miss before it is failed.
    pub misses: u32,
}

/// The answer to adding an element.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ElementAdded {
    pub pool: String,
    pub element: String,
    /// Whether this request added or changed it (`false`: it was there as asked).
    pub created: bool,
    /// For an element that registered itself (role `element`).
    pub registration: Option<RegistrationInfo>,
}

/// A redundancy request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedundancyBody {
    /// Actives wanted (N); the pool's other elements are its standbys.
    pub active: u32,
}

/// The answer to a redundancy request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LevelAnswer {
    pub pool: String,
    /// Actives requested, now the pool's level.
    pub active: u32,
    /// Whether the pool meets its level now (actives and standbys).
    pub met: bool,
    pub actives: u32,
    pub standbys: u32,
    pub message: String,
}

/// Adds an element (role `operator`: probed by the pool's health check) or registers the
/// caller's own (role `element`: alive while its heartbeats arrive; the answer carries its
/// heartbeat key). Idempotent: the same request again changes nothing and answers the same.
#[utoipa::path(put, path = "/v1/pools/{pool}/elements/{element}",
    params(("pool" = String, Path), ("element" = String, Path)), request_body = ElementBody,
    responses((status = 200, body = ElementAdded), (status = 201, body = ElementAdded), (status = 400),
        (status = 403), (status = 404), (status = 409), (status = 413), (status = 422)), tag = "element")]
async fn add_element(
    State(state): State<ApiState>,
    Extension(peer): Extension<Peer>,
    UrlPath((pool, element)): UrlPath<(String, String)>,
    body: Result<Json<serde_json::Value>, JsonRejection>,
) -> Result<(StatusCode, Json<ElementAdded>), ApiError> {
    let role = allow(&peer, &[Role::Operator, Role::Element])?;
    let Json(body) = body.map_err(|e| ApiError(e.status(), e.body_text()))?;
    if !body.is_object() {
        return Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            "the body must be a JSON object like {\"address\": \"10.0.0.5\"}".to_owned(),
        ));
    }
    let (origin, subject) = match role {
        Role::Element => (crate::model::spec::Origin::Agent, Some(peer.subject)),
        _ => (crate::model::spec::Origin::Operator, None),
    };
    let request = Request::AddElement {
        pool,
        element,
        body,
        origin,
        subject,
    };
    match ask(&state, request).await? {
        Response::Added(added) => {
            let status = if added.created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok((status, Json(added)))
        }
        Response::Refused { status, message } => Err(refused(status, message)),
        other => Err(unexpected(&other)),
    }
}

/// Removes an element added at run time (role `operator`), or deregisters the caller's own
/// (role `element`). Its flows move at once.
#[utoipa::path(delete, path = "/v1/pools/{pool}/elements/{element}",
    params(("pool" = String, Path), ("element" = String, Path)),
    responses((status = 200), (status = 403), (status = 404), (status = 409)), tag = "element")]
async fn remove_element(
    State(state): State<ApiState>,
    Extension(peer): Extension<Peer>,
    UrlPath((pool, element)): UrlPath<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let role = allow(&peer, &[Role::Operator, Role::Element])?;
    let subject = (role == Role::Element).then_some(peer.subject);
    done(
        ask(
            &state,
            Request::RemoveElement {
                pool,
                element,
                subject,
            },
        )
        .await?,
    )
}

/// Requests a redundancy level: N actives. The answer says whether the pool meets it now;
/// 409 when it cannot (an active-active pool, or fewer elements than N), and nothing changes.
#[utoipa::path(put, path = "/v1/pools/{pool}/redundancy", params(("pool" = String, Path)),
    request_body = RedundancyBody,
    responses((status = 200, body = LevelAnswer), (status = 400), (status = 403), (status = 404), (status = 409),
        (status = 422)), tag = "sce")]
async fn set_redundancy(
    State(state): State<ApiState>,
    Extension(peer): Extension<Peer>,
    UrlPath(pool): UrlPath<String>,
    body: Result<Json<RedundancyBody>, JsonRejection>,
) -> Result<Json<LevelAnswer>, ApiError> {
    allow(&peer, &[Role::Sce, Role::Operator])?;
    let Json(body) = body.map_err(|e| ApiError(e.status(), e.body_text()))?;
    match ask(
        &state,
        Request::SetRedundancy {
            pool,
            active: body.active,
        },
    )
    .await?
    {
        Response::Level(answer) => Ok(Json(answer)),
        Response::Refused { status, message } => Err(refused(status, message)),
        other => Err(unexpected(&other)),
    }
}

/// Ends a drain.
#[utoipa::path(post, path = "/v1/pools/{pool}/elements/{element}/undrain",
    params(("pool" = String, Path), ("element" = String, Path)),
    responses((status = 200), (status = 403), (status = 404)), tag = "operator")]
async fn undrain(
    State(state): State<ApiState>,
    Extension(peer): Extension<Peer>,
    UrlPath((pool, element)): UrlPath<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    allow(&peer, &[Role::Operator])?;
    done(ask(&state, Request::Undrain { pool, element }).await?)
}

/// Server-Sent Events: state and capacity changes, policy violations (and, for operators,
/// failovers), with increasing ids. `Last-Event-ID` resumes; a `gap` event says that events
/// were missed beyond the kept window.
#[utoipa::path(get, path = "/v1/events", responses((status = 200, content_type = "text/event-stream")), tag = "sce")]
async fn events(
    State(state): State<ApiState>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let role = allow(&peer, &[Role::Sce, Role::Operator])?;
    let last: u64 = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let resume = state.events.resume(last);
    let newest = resume.missed.last().map_or(last, |e| e.id);
    let gap = resume.gap.then(|| {
        SseEvent::default()
            .event("gap")
            .data(format!("events after {last} are no longer kept"))
    });
    let missed: Vec<SseEvent> = resume.missed.iter().filter_map(|e| render(e, role)).collect();
    let live = BroadcastStream::new(resume.live).filter_map(move |e| {
        std::future::ready(match e {
            Ok(e) if e.id > newest => render(&e, role),
            Ok(_) => None,
            Err(_) => Some(
                SseEvent::default()
                    .event("gap")
                    .data("this client fell behind; reconnect with Last-Event-ID"),
            ),
        })
    });
    let stream = stream::iter(gap.into_iter().chain(missed)).chain(live).map(Ok);
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

fn render(e: &events::Event, role: Role) -> Option<SseEvent> {
    let data = e.for_role(role)?;
    Some(
        SseEvent::default()
            .id(e.id.to_string())
            .event(e.kind)
            .data(data.to_string()),
    )
}

/// The `OpenAPI` document of this API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "vnfpool",
        description = "Pool Manager API: pools for the Service Control Entity, elements for operators"
    ),
    paths(
        list_pools,
        get_pool,
        set_redundancy,
        status,
        add_element,
        remove_element,
        drain,
        undrain,
        events
    ),
    components(schemas(
        PoolSummary,
        Capacity,
        PoolHealth,
        DrainBody,
        ElementBody,
        ElementAdded,
        RegistrationInfo,
        RedundancyBody,
        LevelAnswer
    ))
)]
pub struct ApiDoc;

/// The `OpenAPI` document as pretty JSON (what `docs/openapi.json` holds).
#[must_use]
pub fn openapi() -> String {
    ApiDoc::openapi().to_pretty_json().unwrap_or_default()
}

async fn openapi_json() -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        openapi(),
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_summary_counts_capacity_without_naming_elements() {
        use crate::model::{
            failover::Event,
            testutil::{n_plus_m, pool},
        };
        let spec = pool(n_plus_m(2, false), &[("a", 300, 2), ("b", 200, 3), ("c", 100, 1)]);
        let mut state = PoolState::new(&spec);
        let at = Duration::ZERO;
        for _ in 0..spec.health.rise {
            for e in 0..3 {
                state
                    .step(&spec, Event::Probe { element: e, ok: true }, at)
                    .expect("step");
            }
        }
        let s = summary(&spec, &state);
        assert_eq!(
            (
                s.state,
                s.capacity.actives,
                s.capacity.standbys,
                s.capacity.active_weight
            ),
            (PoolHealth::Up, 2, 1, 5)
        );
        assert!(s.capacity.redundancy_met);
        state
            .step(&spec, Event::LinkDown { element: 0 }, at)
            .expect("step");
        let s = summary(&spec, &state);
        assert_eq!(
            (s.state, s.capacity.actives, s.capacity.standbys),
            (PoolHealth::Degraded, 2, 0)
        );
        let json = serde_json::to_string(&s).expect("json");
        assert!(!json.contains("\"a\"") && !json.contains("\"b\""), "{json}");
    }
}
