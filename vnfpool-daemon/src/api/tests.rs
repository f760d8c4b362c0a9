//! The API over real TLS on loopback, with certificates made in the test (rcgen), against a
//! stand-in controller that records what it was asked.

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Request as HttpRequest, StatusCode};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, Certificate, CertificateParams, DnType, IsCa, KeyPair};
use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject as _},
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};
use tokio_rustls::TlsConnector;

use super::*;
use crate::model::spec::ApiClient;

struct Ca {
    cert: Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        Self {
            cert: params.self_signed(&key).expect("CA"),
            key,
        }
    }

    /// A certificate for `cn` (and `sans`), and its key, as PEM.
    fn issue(&self, cn: &str, sans: &[&str]) -> (String, String) {
        let key = KeyPair::generate().expect("key");
        let mut params =
            CertificateParams::new(sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.signed_by(&key, &self.cert, &self.key).expect("signing");
        (cert.pem(), key.serialize_pem())
    }
}

/// A directory removed on drop.
struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running API with a stand-in controller.
struct Api {
    addr: SocketAddr,
    ca: Ca,
    events: EventLog,
    /// What the controller was asked, in order.
    asked: Arc<Mutex<Vec<Request>>>,
    _dir: Dir,
}

fn pool_summary(name: &str, actives: u32) -> PoolSummary {
    PoolSummary {
        name: name.to_owned(),
        vip: "192.0.2.1".parse().expect("vip"),
        ports: vec![53],
        protocol: "udp".to_owned(),
        state: if actives == 0 {
            PoolHealth::Down
        } else {
            PoolHealth::Up
        },
        capacity: Capacity {
            active_weight: u64::from(actives),
            actives,
            standbys: 1,
            configured_actives: 1,
            configured_standbys: 1,
            redundancy_met: actives == 1,
        },
    }
}

async fn start(headers_timeout: Duration) -> Api {
    let ca = Ca::new("vnfpool test clients");
    let dir = Dir(std::env::temp_dir().join(format!("vnfpool-api-{}-{}", std::process::id(), rand_suffix())));
    std::fs::create_dir_all(&dir.0).expect("temp dir");
    let (cert, key) = ca.issue("vnfpool", &["127.0.0.1"]);
    let write = |name: &str, text: &str| {
        let path = dir.0.join(name);
        std::fs::write(&path, text).expect("writing a PEM");
        path
    };
    let spec = ApiSpec {
        listen: "127.0.0.1:0".parse().expect("addr"),
        cert: write("server.crt", &cert),
        key: write("server.key", &key),
        client_ca: write("ca.crt", &ca.cert.pem()),
        clients: vec![
            ApiClient {
                subject: "CN=orchestrator".to_owned(),
                role: Role::Sce,
            },
            ApiClient {
                subject: "CN=ops".to_owned(),
                role: Role::Operator,
            },
        ],
    };
    let tls = tls_config(&spec).expect("TLS config");
    let listener = TcpListener::bind(spec.listen).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (commands, mut rx) = mpsc::channel::<Command>(16);
    let asked = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&asked);
    tokio::spawn(async move {
        while let Some(cmd) = rx.recv().await {
            log.lock().expect("log").push(cmd.request.clone());
            let answer = match cmd.request {
                Request::Summaries => Response::Summaries {
                    pools: vec![pool_summary("dns", 1)],
                },
                Request::Status => Response::Status(Status::default()),
                _ => Response::Ok {
                    message: "done".to_owned(),
                },
            };
            let _ = cmd.reply.send(answer);
        }
    });
    let events = EventLog::new();
    let clients: HashMap<String, Role> = spec.clients.iter().map(|c| (c.subject.clone(), c.role)).collect();
    let state = ApiState {
        commands,
        events: events.clone(),
    };
    let timeouts = Timeouts {
        handshake: Duration::from_secs(2),
        headers: headers_timeout,
    };
    tokio::spawn(serve(listener, tls, clients, state, timeouts));
    Api {
        addr,
        ca,
        events,
        asked,
        _dir: dir,
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u8(0);
    h.finish()
}

/// A client certificate (PEM cert and key), or none.
type Identity = Option<(String, String)>;

async fn connect(
    api: &Api,
    identity: &Identity,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let mut roots = RootCertStore::empty();
    roots.add(api.ca.cert.der().clone()).expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let config = match identity {
        Some((cert, key)) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert.as_bytes())
                .collect::<Result<_, _>>()
                .expect("cert");
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key");
            builder.with_client_auth_cert(certs, key).expect("client auth")
        }
        None => builder.with_no_client_auth(),
    };
    let tcp = TcpStream::connect(api.addr).await?;
    let name = ServerName::IpAddress(api.addr.ip().into());
    TlsConnector::from(Arc::new(config)).connect(name, tcp).await
}

/// One request; the status and the body, or the error that ended the exchange.
async fn call(
    api: &Api,
    identity: &Identity,
    method: &str,
    path: &str,
    body: &str,
) -> Result<(StatusCode, String), String> {
    let tls = connect(api, identity).await.map_err(|e| format!("TLS: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    tokio::spawn(conn);
    let request = HttpRequest::builder()
        .method(method)
        .uri(path)
        .header("host", "vnfpool")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("request");
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// `GET /v1/events` (with `Last-Event-ID: last` when given) until `count` events arrived.
async fn follow(
    api: &Api,
    identity: &Identity,
    last: Option<u64>,
    count: usize,
) -> Vec<(String, String, String)> {
    let tls = connect(api, identity).await.expect("TLS");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("HTTP");
    tokio::spawn(conn);
    let mut request = HttpRequest::builder().uri("/v1/events").header("host", "vnfpool");
    if let Some(last) = last {
        request = request.header("last-event-id", last.to_string());
    }
    let response = sender
        .send_request(request.body(Full::new(Bytes::new())).expect("request"))
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut text = String::new();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while events.len() < count {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .unwrap_or_else(|_| panic!("{count} events expected, got {events:?} and {text:?}"))
            .expect("stream ended")
            .expect("frame");
        if let Ok(data) = frame.into_data() {
            text.push_str(&String::from_utf8_lossy(&data));
        }
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
                    .unwrap_or_default()
            };
            if !field("event:").is_empty() {
                events.push((field("id:"), field("event:"), field("data:")));
            }
        }
    }
    events
}

#[tokio::test]
async fn the_sce_reads_pools_and_operators_drain_while_bad_requests_change_nothing() {
    let api = start(Duration::from_secs(5)).await;
    let sce = Some(api.ca.issue("orchestrator", &[]));
    let ops = Some(api.ca.issue("ops", &[]));

    let (status, body) = call(&api, &sce, "GET", "/v1/pools", "")
        .await
        .expect("GET /v1/pools");
    assert_eq!(status, StatusCode::OK, "{body}");
    let pools: Vec<PoolSummary> = serde_json::from_str(&body).expect("pools");
    assert_eq!(pools, [pool_summary("dns", 1)]);
    let (status, _) = call(&api, &sce, "GET", "/v1/pools/dns", "")
        .await
        .expect("GET one");
    assert_eq!(status, StatusCode::OK);
    let (status, body) = call(&api, &sce, "GET", "/v1/pools/nope", "")
        .await
        .expect("GET missing");
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::NOT_FOUND, r#"{"error":"no pool nope"}"#)
    );

    // The SCE may not call operator endpoints; nothing reaches the controller.
    let before = api.asked.lock().expect("log").len();
    for (method, path) in [("GET", "/v1/status"), ("POST", "/v1/pools/dns/elements/e1/drain")] {
        let (status, body) = call(&api, &sce, method, path, "{}").await.expect("answer");
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
        assert!(body.contains("may not call"), "{body}");
    }
    // Malformed JSON and an oversized body: clear errors, nothing asked.
    let (status, body) = call(
        &api,
        &ops,
        "POST",
        "/v1/pools/dns/elements/e1/drain",
        "{deadline_ms: 5",
    )
    .await
    .expect("answer");
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("error"), "{body}");
    let (status, body) = call(
        &api,
        &ops,
        "POST",
        "/v1/pools/dns/elements/e1/drain",
        r#"{"deadline": 5}"#,
    )
    .await
    .expect("answer");
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let big = format!(r#"{{"deadline_ms": 1, "pad": "{}"}}"#, "x".repeat(BODY_LIMIT));
    let (status, _) = call(&api, &ops, "POST", "/v1/pools/dns/elements/e1/drain", &big)
        .await
        .expect("answer");
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        api.asked.lock().expect("log").len(),
        before,
        "no bad request reached the controller"
    );

    // A good drain does.
    let (status, body) = call(
        &api,
        &ops,
        "POST",
        "/v1/pools/dns/elements/e1/drain",
        r#"{"deadline_ms": 2000}"#,
    )
    .await
    .expect("drain");
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        api.asked.lock().expect("log").last(),
        Some(&Request::Drain {
            pool: "dns".to_owned(),
            element: "e1".to_owned(),
            deadline: Some(Duration::from_secs(2)),
        })
    );
}

#[tokio::test]
async fn clients_without_a_trusted_certificate_or_a_role_are_refused_and_others_still_served() {
    let api = start(Duration::from_secs(5)).await;
    let none: Identity = None;
    let err = call(&api, &none, "GET", "/v1/pools", "")
        .await
        .expect_err("no client certificate");
    assert!(!err.is_empty());
    let stranger = Ca::new("someone else");
    let untrusted = Some(stranger.issue("orchestrator", &[]));
    call(&api, &untrusted, "GET", "/v1/pools", "")
        .await
        .expect_err("a certificate from an untrusted CA");
    let unmapped = Some(api.ca.issue("intruder", &[]));
    let (status, body) = call(&api, &unmapped, "GET", "/v1/pools", "")
        .await
        .expect("answer");
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("CN=intruder"), "{body}");
    let sce = Some(api.ca.issue("orchestrator", &[]));
    assert_eq!(
        call(&api, &sce, "GET", "/v1/pools", "").await.map(|r| r.0),
        Ok(StatusCode::OK)
    );
}

#[tokio::test]
async fn a_slow_client_is_cut_off_after_the_header_timeout() {
    let api = start(Duration::from_millis(300)).await;
    let sce = Some(api.ca.issue("orchestrator", &[]));
    let mut tls = connect(&api, &sce).await.expect("TLS");
    tls.write_all(b"GET /v1/pools HTTP/1.1\r\nHost: vnfpool\r\n")
        .await
        .expect("half a request");
    let started = tokio::time::Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the server kept a slow client for 5 s");
    assert!(started.elapsed() < Duration::from_secs(2));
    // The server still serves others.
    assert_eq!(
        call(&api, &sce, "GET", "/v1/pools", "").await.map(|r| r.0),
        Ok(StatusCode::OK)
    );
}

#[tokio::test]
async fn events_resume_after_last_event_id_and_the_sce_never_sees_an_element() {
    let api = start(Duration::from_secs(5)).await;
    let sce = Some(api.ca.issue("orchestrator", &[]));
    let ops = Some(api.ca.issue("ops", &[]));
    api.events.pool(&pool_summary("dns", 1));
    api.events
        .failover(&serde_json::json!({ "pool": "dns", "element": "e1" }));
    api.events.pool(&pool_summary("dns", 0));
    api.events
        .policy_violation("dns", "e2", "e3", &["host h1".to_owned()]);
    // The same summary again is no event.
    api.events.pool(&pool_summary("dns", 0));

    let seen = follow(&api, &sce, None, 3).await;
    let kinds: Vec<&str> = seen.iter().map(|(_, k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["pool", "pool", "policy_violation"]);
    let ids: Vec<u64> = seen.iter().map(|(id, _, _)| id.parse().expect("id")).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    for (_, _, data) in &seen {
        for name in ["e1", "e2", "e3", "host"] {
            assert!(!data.contains(name), "the SCE saw {name}: {data}");
        }
    }
    let all = follow(&api, &ops, None, 4).await;
    assert!(
        all.iter().any(|(_, k, d)| k == "failover" && d.contains("e1")),
        "{all:?}"
    );

    // Resuming after the first event gives the rest, then what comes next, live.
    let followers = api.events.followers();
    let pushing = async {
        while api.events.followers() == followers {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        api.events.pool(&pool_summary("dns", 1));
    };
    let (rest, ()) = tokio::join!(follow(&api, &sce, Some(ids[0]), 3), pushing);
    let rest_ids: Vec<u64> = rest.iter().map(|(id, _, _)| id.parse().expect("id")).collect();
    assert_eq!(rest_ids[..2], ids[1..]);
    assert!(rest_ids[2] > ids[2]);

    // Too far behind: a gap event first.
    for i in 0..events::WINDOW as u32 + 10 {
        api.events.pool(&pool_summary("dns", i % 2));
    }
    let behind = follow(&api, &sce, Some(1), 2).await;
    assert_eq!(behind[0].1, "gap", "{behind:?}");
}

#[test]
fn the_checked_in_openapi_document_is_the_generated_one() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json");
    let generated = openapi();
    if std::env::var_os("VNFPOOL_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("writing docs/openapi.json");
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "docs/openapi.json is stale: run VNFPOOL_BLESS=1 cargo test -p vnfpool-daemon --lib openapi"
    );
    for path in ["/v1/pools", "/v1/pools/{name}", "/v1/events", "/v1/status"] {
        assert!(generated.contains(path), "{path}");
    }
}

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
