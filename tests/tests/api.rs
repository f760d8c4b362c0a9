//! The API over real TLS on loopback, with certificates made in the test (rcgen), against a
//! stand-in controller that records what it was asked.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use hyper::StatusCode;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpListener,
    sync::mpsc,
};
use vnfpool_daemon::{
    api::{
        ApiState, BODY_LIMIT, Capacity, EventLog, PoolHealth, PoolSummary, Role, Timeouts,
        client::{Client, SseEvent},
        openapi, serve, tls_config,
    },
    controller::{
        commands::{AddElement, Command, Refusal, RemoveElement, SetRedundancy},
        snapshot::{Snapshot, Views},
        work::Saver,
    },
    dataplane::recording::RecordingDataplane,
    events,
    model::spec::{ApiClient, ApiSpec, Grant},
    store::Store,
};
use vnfpool_tests::{daemon::Scratch, pki::Ca};

/// What the stand-in controller was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Asked {
    Drain {
        pool: String,
        element: String,
        deadline: Option<Duration>,
    },
    Other,
}

/// A running API with a stand-in controller.
struct Api {
    addr: SocketAddr,
    /// Signs the server's certificate and the clients'.
    ca: Ca,
    /// Another CA the server trusts for clients, to which no role is pinned but `sce`'s.
    other: Ca,
    events: EventLog,
    /// What the controller was asked, in order.
    asked: Arc<Mutex<Vec<Asked>>>,
    /// The server's TLS, which a test may renew, and the configuration it was read from.
    tls: vnfpool_daemon::api::Tls,
    spec: ApiSpec,
    dir: Scratch,
}

impl Api {
    /// A client presenting `identity`.
    fn client(&self, identity: Option<&vnfpool_tests::pki::Identity>) -> Client {
        Client::new(
            self.addr,
            &self.ca.pem(),
            identity.map(|(c, k)| (c.as_str(), k.as_str())),
        )
        .expect("client")
    }

    /// A client with a certificate for `CN=cn` from the API's CA.
    fn as_cn(&self, cn: &str) -> Client {
        self.client(Some(&self.ca.issue(cn, &[])))
    }
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

/// What the controller would answer: every command logged in `log`, drains and the like done,
/// additions and redundancy requests refused for want of the pool.
async fn controller(mut rx: mpsc::Receiver<Command>, log: Arc<Mutex<Vec<Asked>>>) {
    while let Some(cmd) = rx.recv().await {
        let done = Ok("done".to_owned());
        match cmd {
            Command::Drain {
                pool,
                element,
                deadline,
                reply,
            } => {
                log.lock().expect("log").push(Asked::Drain {
                    pool,
                    element,
                    deadline,
                });
                let _ = reply.send(done);
            }
            Command::Undrain { reply, .. }
            | Command::Reload { reply }
            | Command::RemoveElement(RemoveElement { reply, .. }) => {
                log.lock().expect("log").push(Asked::Other);
                let _ = reply.send(done);
            }
            Command::AddElement(AddElement { pool, reply, .. }) => {
                log.lock().expect("log").push(Asked::Other);
                let _ = reply.send(Err(Refusal::NoPool { pool }));
            }
            Command::SetRedundancy(SetRedundancy { pool, reply, .. }) => {
                log.lock().expect("log").push(Asked::Other);
                let _ = reply.send(Err(Refusal::NoPool { pool }));
            }
        }
    }
}

/// Adds `ca` to the client CA bundle at `path`.
fn trust_too(path: &std::path::Path, ca: &Ca) {
    let mut bundle = std::fs::read_to_string(path).expect("client CA file");
    bundle.push_str(&ca.pem());
    std::fs::write(path, bundle).expect("client CA bundle");
}

async fn start(headers_timeout: Duration) -> Api {
    let ca = Ca::new("vnfpool test clients");
    let other = Ca::new("vnfpool other clients");
    let dir = Scratch::new();
    let (cert, key, client_ca) = vnfpool_tests::pki::server_files(&ca, &dir.path, &["127.0.0.1"]);
    trust_too(&client_ca, &other);
    let spec = ApiSpec {
        listen: "127.0.0.1:0".parse().expect("addr"),
        cert,
        key,
        client_ca,
        crls: Vec::new(),
        clients: vec![
            ApiClient {
                subject: "CN=orchestrator".to_owned(),
                role: Role::Sce,
                grant: Grant::default(),
            },
            ApiClient {
                subject: "CN=ops".to_owned(),
                role: Role::Operator,
                grant: Grant::default(),
            },
            ApiClient {
                // Written otherwise than certificates are: matched on its attributes.
                subject: "cn = admin,o=acme".to_owned(),
                role: Role::Operator,
                grant: Grant::default(),
            },
        ],
        heartbeat_listen: "127.0.0.1:0".parse().expect("addr"),
        heartbeat_clock_skew: vnfpool_daemon::heartbeat::DEFAULT_SKEW,
        mptcp: true,
        issuers: vec![(Role::Sce, "CN=vnfpool test clients".to_owned())],
    };
    let tls = vnfpool_daemon::api::Tls::from(tls_config(&spec).expect("TLS config"));
    let listener = TcpListener::bind(spec.listen).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (commands, rx) = mpsc::channel::<Command>(16);
    let asked = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&asked);
    tokio::spawn(controller(rx, log));
    // What the controller would have published: one pool.
    let summaries = vec![pool_summary("dns", 1)];
    let (_, snapshot) = tokio::sync::watch::channel(Arc::new(Snapshot {
        summaries_json: serde_json::to_string(&summaries).expect("JSON").into(),
        summaries,
        ..Snapshot::default()
    }));
    let views = Views {
        snapshot,
        reader: Arc::new(RecordingDataplane::new()),
        heartbeats: None,
        flow_sync: None,
    };
    let events = EventLog::new();
    let (saver, _writer) = Saver::spawn(Store::open(&dir.path.join("state")).expect("state directory"));
    let clients: HashMap<String, Role> = spec.clients.iter().map(|c| (c.subject.clone(), c.role)).collect();
    let state = ApiState {
        commands,
        events: events.clone(),
        views,
        streams: vnfpool_daemon::api::EventStreams::default(),
        issuers: Arc::new(spec.issuers.clone()),
        // The stand-in controller saves nothing, so changes are answered at once.
        saved: saver.saved(),
    };
    let timeouts = Timeouts {
        handshake: Duration::from_secs(2),
        headers: headers_timeout,
    };
    tokio::spawn(serve(listener, tls.clone(), clients, state, timeouts));
    Api {
        addr,
        ca,
        other,
        events,
        asked,
        tls,
        spec,
        dir,
    }
}

/// `GET /v1/events` (after `last` when given) until `count` events arrived.
async fn follow(client: &Client, last: Option<u64>, count: usize) -> Vec<SseEvent> {
    client
        .follow(last, Duration::from_secs(5), |e| e.len() >= count)
        .await
        .expect("events")
}

#[tokio::test]
async fn the_sce_reads_pools_and_operators_drain_while_bad_requests_change_nothing() {
    let api = start(Duration::from_secs(5)).await;
    let sce = api.as_cn("orchestrator");
    let ops = api.as_cn("ops");

    let (status, body) = sce.call("GET", "/v1/pools", "").await.expect("GET /v1/pools");
    assert_eq!(status, StatusCode::OK, "{body}");
    let pools: Vec<PoolSummary> = serde_json::from_str(&body).expect("pools");
    assert_eq!(pools, [pool_summary("dns", 1)]);
    let (status, _) = sce.call("GET", "/v1/pools/dns", "").await.expect("GET one");
    assert_eq!(status, StatusCode::OK);
    let (status, body) = sce.call("GET", "/v1/pools/nope", "").await.expect("GET missing");
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::NOT_FOUND, r#"{"error":"no pool nope"}"#)
    );

    // The SCE may not call operator endpoints; nothing reaches the controller.
    let before = api.asked.lock().expect("log").len();
    for (method, path) in [("GET", "/v1/status"), ("POST", "/v1/pools/dns/elements/e1/drain")] {
        let (status, body) = sce.call(method, path, "{}").await.expect("answer");
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
        assert!(body.contains("may not call"), "{body}");
    }
    // Malformed JSON and an oversized body: clear errors, nothing asked.
    let (status, body) = ops
        .call("POST", "/v1/pools/dns/elements/e1/drain", "{deadline_ms: 5")
        .await
        .expect("answer");
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("error"), "{body}");
    let (status, body) = ops
        .call("POST", "/v1/pools/dns/elements/e1/drain", r#"{"deadline": 5}"#)
        .await
        .expect("answer");
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let big = format!(r#"{{"deadline_ms": 1, "pad": "{}"}}"#, "x".repeat(BODY_LIMIT));
    let (status, _) = ops
        .call("POST", "/v1/pools/dns/elements/e1/drain", &big)
        .await
        .expect("answer");
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        api.asked.lock().expect("log").len(),
        before,
        "no bad request reached the controller"
    );

    // A good drain does.
    let (status, body) = ops
        .call(
            "POST",
            "/v1/pools/dns/elements/e1/drain",
            r#"{"deadline_ms": 2000}"#,
        )
        .await
        .expect("drain");
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        api.asked.lock().expect("log").last(),
        Some(&Asked::Drain {
            pool: "dns".to_owned(),
            element: "e1".to_owned(),
            deadline: Some(Duration::from_secs(2)),
        })
    );
}

#[tokio::test]
async fn clients_without_a_trusted_certificate_or_a_role_are_refused_and_others_still_served() {
    let api = start(Duration::from_secs(5)).await;
    let none = api.client(None);
    let err = none
        .call("GET", "/v1/pools", "")
        .await
        .expect_err("no client certificate");
    assert!(!err.is_empty());
    let stranger = Ca::new("someone else");
    let untrusted = api.client(Some(&stranger.issue("orchestrator", &[])));
    untrusted
        .call("GET", "/v1/pools", "")
        .await
        .expect_err("a certificate from an untrusted CA");
    let unmapped = api.as_cn("intruder");
    let (status, body) = unmapped.call("GET", "/v1/pools", "").await.expect("answer");
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("CN=intruder"), "{body}");
    let sce = api.as_cn("orchestrator");
    assert_eq!(
        sce.call("GET", "/v1/pools", "").await.map(|r| r.0),
        Ok(StatusCode::OK)
    );
}

/// A role pinned to an issuer is given only to certificates of that CA: `CN=orchestrator` from
/// another trusted CA gets no role, while roles not pinned are given whatever trusted CA
/// signed the certificate.
#[tokio::test]
async fn a_role_pinned_to_an_issuer_is_not_given_by_another_trusted_ca() {
    let api = start(Duration::from_secs(5)).await;
    let forged = api.client(Some(&api.other.issue("orchestrator", &[])));
    let (status, body) = forged.call("GET", "/v1/pools", "").await.expect("answer");
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let ops = api.client(Some(&api.other.issue("ops", &[])));
    assert_eq!(
        ops.call("GET", "/v1/pools", "").await.map(|r| r.0),
        Ok(StatusCode::OK),
        "operator is not pinned"
    );
    assert_eq!(
        api.as_cn("orchestrator")
            .call("GET", "/v1/pools", "")
            .await
            .map(|r| r.0),
        Ok(StatusCode::OK),
        "the pinned CA's sce"
    );
}

#[tokio::test]
async fn a_common_name_that_spells_another_subject_gets_no_role() {
    let api = start(Duration::from_secs(5)).await;
    // One attribute, CN = "admin, O=acme": it once read as `CN=admin, O=acme`, a configured
    // operator.
    let crafted = api.as_cn("admin, O=acme");
    let (status, body) = crafted.call("GET", "/v1/status", "").await.expect("answer");
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains(r"CN=admin\\, O=acme"), "{body}");
    let (status, _) = api
        .as_cn("ops")
        .call("GET", "/v1/status", "")
        .await
        .expect("answer");
    assert_eq!(status, StatusCode::OK, "a plain operator still is one");
    // The two attributes CN=admin and O=acme are the configured `cn = admin,o=acme`.
    let identity = api.ca.issue_named(
        &[
            (rcgen::DnType::CommonName, "admin"),
            (rcgen::DnType::OrganizationName, "acme"),
        ],
        &[],
    );
    let (status, body) = api
        .client(Some(&identity))
        .call("GET", "/v1/status", "")
        .await
        .expect("answer");
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn a_slow_client_is_cut_off_after_the_header_timeout() {
    let api = start(Duration::from_millis(300)).await;
    let sce = api.as_cn("orchestrator");
    let mut tls = sce.connect().await.expect("TLS");
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
        sce.call("GET", "/v1/pools", "").await.map(|r| r.0),
        Ok(StatusCode::OK)
    );
}

#[tokio::test]
async fn events_resume_after_last_event_id_and_the_sce_never_sees_an_element() {
    let api = start(Duration::from_secs(5)).await;
    let sce = api.as_cn("orchestrator");
    let ops = api.as_cn("ops");
    api.events.pool(&pool_summary("dns", 1));
    api.events
        .failover(&serde_json::json!({ "pool": "dns", "element": "e1" }));
    api.events.pool(&pool_summary("dns", 0));
    api.events
        .policy_violation("dns", "e2", "e3", &["host h1".to_owned()]);
    // The same summary again is no event.
    api.events.pool(&pool_summary("dns", 0));

    let seen = follow(&sce, None, 3).await;
    let kinds: Vec<&str> = seen.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["pool", "pool", "policy_violation"]);
    let ids: Vec<u64> = seen.iter().map(|e| e.id.parse().expect("id")).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    for e in &seen {
        for name in ["e1", "e2", "e3", "host"] {
            assert!(!e.data.contains(name), "the SCE saw {name}: {e:?}");
        }
    }
    let all = follow(&ops, None, 4).await;
    assert!(
        all.iter().any(|e| e.kind == "failover" && e.data.contains("e1")),
        "{all:?}"
    );

    // Resuming after the first event gives the rest, then what comes next, live. The streams
    // of the clients above end once the server sees them gone; the new one is then the only
    // follower, and the next event is pushed once it follows.
    tokio::time::timeout(Duration::from_secs(5), async {
        while api.events.followers() > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("the finished streams end");
    let pushing = async {
        while api.events.followers() == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        api.events.pool(&pool_summary("dns", 1));
    };
    let (rest, ()) = tokio::join!(follow(&sce, Some(ids[0]), 3), pushing);
    let rest_ids: Vec<u64> = rest.iter().map(|e| e.id.parse().expect("id")).collect();
    assert_eq!(rest_ids[..2], ids[1..]);
    assert!(rest_ids[2] > ids[2]);

    // Too far behind: a gap event first.
    for i in 0..events::WINDOW as u32 + 10 {
        api.events.pool(&pool_summary("dns", i % 2));
    }
    let behind = follow(&sce, Some(1), 2).await;
    assert_eq!(behind[0].kind, "gap", "{behind:?}");
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
        "docs/openapi.json is stale: run VNFPOOL_BLESS=1 cargo test -p vnfpool-tests --test api openapi"
    );
    for path in ["/v1/pools", "/v1/pools/{name}", "/v1/events", "/v1/status"] {
        assert!(generated.contains(path), "{path}");
    }
}

/// A client revoked by a CRL the server reads again is refused from then on, and an event
/// stream it had open is ended; other clients go on.
#[tokio::test]
async fn a_client_revoked_by_a_renewed_crl_is_refused_and_its_stream_ended() {
    let api = start(Duration::from_secs(5)).await;
    let ops = api.as_cn("ops");
    assert_eq!(
        ops.call("GET", "/v1/status", "").await.map(|r| r.0),
        Ok(StatusCode::OK)
    );
    // An event stream of ops, open (it has seen an event) before the CRL changes.
    let (open_tx, open_rx) = tokio::sync::oneshot::channel();
    let mut open_tx = Some(open_tx);
    let stream = tokio::spawn(async move {
        ops.follow(None, Duration::from_secs(30), |events| {
            if !events.is_empty()
                && let Some(tx) = open_tx.take()
            {
                let _ = tx.send(());
            }
            false
        })
        .await
    });
    api.events.pool(&pool_summary("dns", 1));
    open_rx.await.expect("the stream saw its first event");

    let crl = api.dir.path.join("clients.crl");
    std::fs::write(&crl, api.ca.crl(&["ops"])).expect("CRL");
    let spec = ApiSpec {
        crls: vec![crl],
        ..api.spec.clone()
    };
    let files = vnfpool_daemon::api::read_tls(&spec).expect("TLS with the CRL");
    let renewed = std::time::Instant::now();
    assert!(api.tls.install(files), "the CRL changed what is trusted");
    let ended = tokio::time::timeout(Duration::from_secs(5), stream)
        .await
        .expect("the stream ends")
        .expect("task");
    assert!(ended.is_err(), "{ended:?}");
    assert!(
        renewed.elapsed() < Duration::from_secs(3),
        "{:?}",
        renewed.elapsed()
    );

    let refused = api.as_cn("ops").call("GET", "/v1/status", "").await;
    assert!(
        refused.is_err(),
        "a revoked client is refused at the handshake: {refused:?}"
    );
    assert_eq!(
        api.as_cn("orchestrator")
            .call("GET", "/v1/pools", "")
            .await
            .map(|r| r.0),
        Ok(StatusCode::OK),
        "another client goes on"
    );
    // The same files again change nothing: no connection is ended for it.
    let same = vnfpool_daemon::api::read_tls(&spec).expect("again");
    assert!(!api.tls.install(same));
}
