//! The HTTPS API for the Service Control Entity and operators (draft 5.3, 5.4, 7): axum on
//! hyper, rustls with mutual TLS. A client's certificate subject gives its role; the `sce`
//! role sees pools, their state and capacity and never an element's name, address or role.
//!
//! The API owns no pool state: it reads the controller's published snapshot, sends changes
//! to the controller as typed commands, and maps the controller's refusals to HTTP statuses
//! (the controller knows nothing of HTTP). Events come from the [`EventLog`] the controller
//! writes.

pub mod client;
pub mod dn;

use std::{collections::HashMap, convert::Infallible, path::Path, sync::Arc, time::Duration};

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
    pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, pem::PemObject as _},
    server::WebPkiClientVerifier,
};
use serde::Deserialize;
use tokio::{
    net::TcpListener,
    sync::{Semaphore, mpsc, oneshot},
};
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::BroadcastStream;
use tracing::{debug, info};
use utoipa::{OpenApi, ToSchema};

use self::dn::Dn;
use crate::{
    controller::{
        commands::{self, AddElement, Command, Refusal, RefusalKind, RemoveElement, Reply, SetRedundancy},
        snapshot::{Status, Views},
    },
    events,
    model::spec::ApiSpec,
};
pub use crate::{
    controller::{
        commands::{ElementAdded, LevelAnswer, RegistrationInfo},
        snapshot::{Capacity, PoolHealth, PoolSummary, summary},
    },
    events::EventLog,
    model::spec::ApiRole as Role,
};

/// Largest request body accepted (413 beyond).
pub const BODY_LIMIT: usize = 64 * 1024;

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
    #[error("{what} {}", path.display())]
    Read {
        what: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("certificate revocation list {}: {why}", path.display())]
    Crl { path: std::path::PathBuf, why: String },
}

/// The server's TLS configuration: its certificate, and client certificates required and
/// checked against `client_ca` and the revocation lists `crls`.
///
/// # Errors
/// When a file cannot be read or parsed, or the key does not fit the certificate.
pub fn tls_config(spec: &ApiSpec) -> Result<Arc<ServerConfig>, SetupError> {
    read_tls(spec).map(|files| files.config)
}

/// What the API's TLS was built from, and what it is.
#[derive(Clone)]
pub struct TlsFiles {
    config: Arc<ServerConfig>,
    /// The client CAs and the CRLs (DER): what decides whether a client is trusted.
    trust: Vec<Vec<u8>>,
}

/// Reads the API's certificate, key, client CAs and CRLs (see [`tls_config`]).
///
/// # Errors
/// When a file cannot be read or parsed, or the key does not fit the certificate.
pub fn read_tls(spec: &ApiSpec) -> Result<TlsFiles, SetupError> {
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
    let mut trust: Vec<Vec<u8>> = cas.iter().map(|ca| ca.to_vec()).collect();
    for ca in cas {
        roots.add(ca).map_err(|e| SetupError::Tls {
            what: "adding a client CA certificate",
            source: Box::new(e),
        })?;
    }
    let roots = Arc::new(roots);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut crls = Vec::new();
    for path in &spec.crls {
        let these = read_crls(path)?;
        // Each file on its own first, so that a bad one is named.
        WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), Arc::clone(&provider))
            .with_crls(these.iter().cloned())
            .build()
            .map_err(|e| SetupError::Crl {
                path: path.clone(),
                why: e.to_string(),
            })?;
        trust.extend(these.iter().map(|crl| crl.to_vec()));
        crls.extend(these);
    }
    // Revocation is checked for the client's own certificate; a CA with no list among `crls`
    // revokes nothing (its clients are not refused for want of one).
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, Arc::clone(&provider))
        .with_crls(crls)
        .only_check_end_entity_revocation()
        .allow_unknown_revocation_status()
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
    Ok(TlsFiles {
        config: Arc::new(config),
        trust,
    })
}

/// The CRLs of one file, PEM (one or more `X509 CRL` blocks) or DER (one).
fn read_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, SetupError> {
    let bytes = std::fs::read(path).map_err(|source| SetupError::Read {
        what: "reading the certificate revocation list",
        path: path.to_owned(),
        source,
    })?;
    if !bytes.starts_with(b"-----") && bytes.first() == Some(&0x30) {
        return Ok(vec![CertificateRevocationListDer::from(bytes)]);
    }
    let crls: Vec<_> = CertificateRevocationListDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|source| SetupError::Pem {
            what: "reading the certificate revocation list",
            path: path.to_owned(),
            source,
        })?;
    if crls.is_empty() {
        return Err(SetupError::Crl {
            path: path.to_owned(),
            why: "no `X509 CRL` block, and not DER".to_owned(),
        });
    }
    Ok(crls)
}

/// The API's TLS, which a reload may replace: new handshakes use the newest, and when what
/// decides trust changed (client CAs, CRLs), connections made before are ended, so that a
/// revoked client is not served on a connection it already had.
#[derive(Clone)]
pub struct Tls(Arc<TlsState>);

struct TlsState {
    current: std::sync::RwLock<TlsFiles>,
    /// Bumped when trust changes; every connection watches it.
    renewed: tokio::sync::watch::Sender<u64>,
}

impl Tls {
    #[must_use]
    pub fn new(files: TlsFiles) -> Self {
        Self(Arc::new(TlsState {
            current: std::sync::RwLock::new(files),
            renewed: tokio::sync::watch::Sender::new(0),
        }))
    }

    /// Makes `files` the TLS of new handshakes; whether trust changed (connections made
    /// before are then ended).
    pub fn install(&self, files: TlsFiles) -> bool {
        let mut current = self
            .0
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let changed = current.trust != files.trust;
        *current = files;
        drop(current);
        if changed {
            self.0.renewed.send_modify(|n| *n += 1);
            info!("API: client CAs or revocation lists changed; connections made before end");
        }
        changed
    }

    fn acceptor(&self) -> TlsAcceptor {
        let current = self
            .0
            .current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        TlsAcceptor::from(Arc::clone(&current.config))
    }
}

impl From<Arc<ServerConfig>> for Tls {
    fn from(config: Arc<ServerConfig>) -> Self {
        Self::new(TlsFiles {
            config,
            trust: Vec::new(),
        })
    }
}

/// Who is calling: the certificate's subject and, when the configuration maps it, its role.
#[derive(Debug, Clone)]
pub struct Peer {
    pub subject: String,
    pub role: Option<Role>,
}

/// The subject of a DER certificate as its [`Dn`] writes it (`CN=…, O=…`, every value escaped
/// as RFC 4514 says): a value such as `ops, O=acme` reads `CN=ops\, O=acme` and can never pass
/// for two attributes. `None` when a value is not a string.
#[must_use]
pub fn subject(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Dn::of(cert.subject()).map(|dn| dn.to_string())
}

/// The issuer of a DER certificate, written as [`subject`] writes subjects.
#[must_use]
pub fn issuer(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Dn::of(cert.issuer()).map(|dn| dn.to_string())
}

/// `name` as [`subject`] would write a certificate's that has the same attributes (see
/// [`Dn::parse`]); `None` when it is not a distinguished name.
#[must_use]
pub fn canonical_name(name: &str) -> Option<String> {
    Dn::parse(name).ok().map(|dn| dn.to_string())
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
    pub views: Views,
    /// Room for SSE event streams ([`EVENT_STREAMS`] at once).
    pub streams: EventStreams,
    /// Roles pinned to one issuer (`api.issuers`).
    pub issuers: Arc<Vec<(Role, String)>>,
    /// Whether the pool state is on disk: a change is answered once it is, so that what an
    /// answer announces (a registration and its key, a level, a drain) survives a crash.
    pub saved: crate::controller::work::Saved,
}

/// The role of a client certificate whose subject maps to `role`: none when `role` is pinned
/// to an issuer other than the certificate's.
fn pinned_role(role: Option<Role>, issuer: Option<&str>, issuers: &[(Role, String)]) -> Option<Role> {
    let role = role?;
    match issuers.iter().find(|(r, _)| *r == role) {
        Some((_, pinned)) => (issuer == Some(pinned.as_str())).then_some(role),
        None => Some(role),
    }
}

/// How long a request under way may take to finish when trust changed under its connection.
const RENEWED_GRACE: Duration = Duration::from_secs(1);

/// SSE event streams open at once; past this, `GET /v1/events` answers 503.
pub const EVENT_STREAMS: usize = 256;
/// Connections whose TLS handshake is under way at once: a new one past this ends the oldest,
/// so that whoever opens connections and says nothing cannot keep a real client out (an
/// unauthenticated connection holds nothing for long).
pub const PENDING_HANDSHAKES: usize = 128;

/// The room for SSE event streams.
#[derive(Clone, Debug)]
pub struct EventStreams(Arc<Semaphore>);

impl Default for EventStreams {
    fn default() -> Self {
        Self(Arc::new(Semaphore::new(EVENT_STREAMS)))
    }
}

/// Serves the API on `listener` until the process ends: TLS with client certificates, then
/// HTTP/1.1 with the caller's [`Peer`] attached to each request.
pub async fn serve(
    listener: TcpListener,
    tls: Tls,
    clients: HashMap<String, Role, impl std::hash::BuildHasher + Send + Sync + 'static>,
    state: ApiState,
    timeouts: Timeouts,
) {
    // Names are compared as certificates' are written, whatever their spacing and case.
    let canonical = |name: &str| {
        canonical_name(name).or_else(|| {
            tracing::warn!(name, "not a distinguished name; it matches no certificate");
            None
        })
    };
    let clients: Arc<HashMap<String, Role>> = Arc::new(
        clients
            .iter()
            .filter_map(|(subject, &role)| Some((canonical(subject)?, role)))
            .collect(),
    );
    let issuers: Arc<Vec<(Role, String)>> = Arc::new(
        state
            .issuers
            .iter()
            .filter_map(|(role, issuer)| Some((*role, canonical(issuer)?)))
            .collect(),
    );
    let app = router(state);
    // Every socket: those handshaking (at most PENDING_HANDSHAKES, by eviction) and those
    // served after it (at most API_CONNECTIONS).
    let mut gate = crate::listen::Gate::new("api", PENDING_HANDSHAKES + crate::listen::API_CONNECTIONS);
    let served = Arc::new(Semaphore::new(crate::listen::API_CONNECTIONS));
    // One sender per handshake under way, oldest first; a handshake that ended dropped its
    // receiver.
    let mut pending: std::collections::VecDeque<oneshot::Sender<()>> = std::collections::VecDeque::new();
    let mut evicted = 0u64;
    loop {
        let ((tcp, addr), permit) = gate.accept(|| listener.accept()).await;
        make_room(&mut pending, &mut evicted);
        let (evict, evicted_rx) = oneshot::channel();
        pending.push_back(evict);
        let mut renewed = tls.0.renewed.subscribe();
        let (acceptor, clients, app, served, issuers) = (
            tls.acceptor(),
            Arc::clone(&clients),
            app.clone(),
            Arc::clone(&served),
            Arc::clone(&issuers),
        );
        tokio::spawn(async move {
            let _permit = permit;
            let handshake = tokio::time::timeout(timeouts.handshake, acceptor.accept(tcp));
            let tls = tokio::select! {
                done = handshake => match done {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        info!(%addr, error = %e, "API: TLS handshake refused");
                        return;
                    }
                    Err(_) => {
                        info!(%addr, "API: TLS handshake timed out");
                        return;
                    }
                },
                _ = evicted_rx => {
                    debug!(%addr, "API: TLS handshake ended to make room for a newer one");
                    return;
                }
            };
            let Ok(_served) = served.try_acquire_owned() else {
                info!(%addr, max = crate::listen::API_CONNECTIONS, "API: connections at their cap; closed");
                return;
            };
            let leaf = tls.get_ref().1.peer_certificates().and_then(|c| c.first());
            let subject = leaf.and_then(|c| subject(c)).unwrap_or_default();
            let issuer = leaf.and_then(|c| issuer(c));
            let peer = Peer {
                role: pinned_role(clients.get(&subject).copied(), issuer.as_deref(), &issuers),
                subject,
            };
            // The transport is looked up (a getsockopt) only when the event is enabled.
            debug!(
                %addr,
                subject = %peer.subject,
                transport = crate::mptcp::of(tls.get_ref().0).name(),
                "API: connection"
            );
            let service = hyper_util::service::TowerToHyperService::new(app.layer(Extension(peer)));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(timeouts.headers)
                .serve_connection(TokioIo::new(tls), service);
            let mut conn = std::pin::pin!(conn);
            let ended = tokio::select! {
                ended = conn.as_mut() => ended,
                Ok(()) = renewed.changed() => {
                    // Trust changed: the request under way may finish, briefly; an event
                    // stream, which never does, is cut.
                    conn.as_mut().graceful_shutdown();
                    tokio::time::timeout(RENEWED_GRACE, conn).await.unwrap_or(Ok(()))
                }
            };
            if let Err(e) = ended {
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

/// Forgets the handshakes that ended and, with [`PENDING_HANDSHAKES`] still under way, ends the
/// oldest for a new one (counted in `evicted`, logged at powers of two).
fn make_room(pending: &mut std::collections::VecDeque<oneshot::Sender<()>>, evicted: &mut u64) {
    pending.retain(|handshake| !handshake.is_closed());
    if pending.len() >= PENDING_HANDSHAKES
        && let Some(oldest) = pending.pop_front()
    {
        let _ = oldest.send(());
        *evicted += 1;
        if evicted.is_power_of_two() {
            info!(
                evicted = *evicted,
                "API: {PENDING_HANDSHAKES} TLS handshakes under way; the oldest ended for a new one"
            );
        }
    }
}

/// Sends a command to the controller and waits for its answer; a refusal becomes the HTTP
/// status that says why.
async fn ask<T>(state: &ApiState, command: impl FnOnce(Reply<T>) -> Command) -> Result<T, ApiError> {
    commands::ask(&state.commands, command)
        .await
        .map_err(|why| refused(&why))
}

/// [`ask`] for a change: answered once the state that holds it is on disk (503 when it could
/// not be written: the change holds until the daemon stops, but would not survive a crash).
async fn ask_saved<T>(state: &ApiState, command: impl FnOnce(Reply<T>) -> Command) -> Result<T, ApiError> {
    let answer = ask(state, command).await?;
    state
        .saved
        .wait()
        .await
        .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    Ok(answer)
}

fn refused(why: &Refusal) -> ApiError {
    let status = match why.kind() {
        RefusalKind::NotFound => StatusCode::NOT_FOUND,
        RefusalKind::Forbidden => StatusCode::FORBIDDEN,
        RefusalKind::Conflict => StatusCode::CONFLICT,
        RefusalKind::Invalid => StatusCode::UNPROCESSABLE_ENTITY,
        RefusalKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        RefusalKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError(status, why.to_string())
}

fn message(message: &str) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "message": message }))
}

/// Every pool: state and capacity.
#[utoipa::path(get, path = "/v1/pools", responses((status = 200, body = [PoolSummary])), tag = "sce")]
async fn list_pools(
    State(state): State<ApiState>,
    Extension(peer): Extension<Peer>,
) -> Result<impl IntoResponse, ApiError> {
    allow(&peer, &[Role::Sce, Role::Operator])?;
    // Encoded once per change by the controller.
    let json = state.views.current().summaries_json.to_string();
    Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], json))
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
    state
        .views
        .current()
        .summaries
        .iter()
        .find(|p| p.name == name)
        .cloned()
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
    let views = state.views.clone();
    tokio::task::spawn_blocking(move || views.status())
        .await
        .map(Json)
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// A drain request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DrainBody {
    /// Longest the element's existing flows may stay, in milliseconds; none: until undrained.
    pub deadline_ms: Option<u64>,
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
    let deadline = body.deadline_ms.map(Duration::from_millis);
    ask_saved(&state, |reply| Command::Drain {
        pool,
        element,
        deadline,
        reply,
    })
    .await
    .map(|m| message(&m))
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
    /// 0..=4294967295, default 100; higher wins the active role. A registration's is at
    /// most its pool's `registration.max_priority`.
    pub priority: Option<u32>,
    /// 1..=1000, default 1; share of new flows when active. A registration's is at most its
    /// pool's `registration.max_weight`.
    pub weight: Option<u32>,
    /// Failure-domain kind → value, like `{"host": "h1"}`.
    pub failure_domains: Option<std::collections::BTreeMap<String, String>>,
    /// Shared-risk link groups.
    pub srlg: Option<Vec<String>>,
    /// A site of the placement topology.
    pub site: Option<String>,
    /// The element's MAC, when not to be resolved from the neighbour table. Operators only: a
    /// registration naming it is refused (422).
    pub mac: Option<String>,
    /// The egress interface, when not to be resolved from the routing table. Operators only.
    pub interface: Option<String>,
    /// Registrations only: the source addresses the element sends each heartbeat from, one
    /// per path (1..=8, the element address's family). The daemon follows each path and fails
    /// the element only when all are silent.
    pub heartbeat_paths: Option<Vec<String>>,
    /// Pools with `forwarding: vxlan` only, required there: the MAC of the element's VXLAN
    /// device, where the inner frames go. A registration may name its own.
    pub vxlan_mac: Option<String>,
}

/// A redundancy request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedundancyBody {
    /// Actives wanted (N); the pool's other elements are its standbys.
    pub active: u32,
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
    let added = ask_saved(&state, |reply| {
        Command::AddElement(AddElement {
            pool,
            element,
            body,
            origin,
            subject,
            reply,
        })
    })
    .await?;
    let status = if added.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(added)))
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
    ask_saved(&state, |reply| {
        Command::RemoveElement(RemoveElement {
            pool,
            element,
            subject,
            reply,
        })
    })
    .await
    .map(|m| message(&m))
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
    let active = body.active;
    ask_saved(&state, |reply| {
        Command::SetRedundancy(SetRedundancy { pool, active, reply })
    })
    .await
    .map(Json)
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
    ask_saved(&state, |reply| Command::Undrain { pool, element, reply })
        .await
        .map(|m| message(&m))
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
    let Ok(slot) = Arc::clone(&state.streams.0).try_acquire_owned() else {
        return Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{EVENT_STREAMS} event streams are open; try again later"),
        ));
    };
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
    // The stream holds its slot until the client goes.
    let stream = stream::iter(gap.into_iter().chain(missed))
        .chain(live)
        .map(move |event| {
            let _slot = &slot;
            Ok(event)
        });
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
