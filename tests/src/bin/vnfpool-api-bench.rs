//! HTTPS API requests per second: `GET /v1/pools` as the SCE asks it, answered by the real
//! daemon in the lab with as many pools as it accepts, over mutual TLS with certificates made at
//! run time (rcgen). Run through `cargo xtask bench`; figures go to BENCHMARKS.md.
//!
//! Keep-alive connections (1, 4 and 16 at once) each send one request after another for a fixed
//! time; the runs are repeated in turns with a baseline: a server of its own (a process in the
//! same namespace, this binary with `baseline-server`) with the daemon's TLS configuration
//! (`api::tls_config`: the same certificates, rustls with ring) and hyper's HTTP/1.1 server set
//! up as the daemon's, answering every request with the bytes the daemon answered, but without
//! axum, the role check, the controller and the JSON encoding. For context, the same with a new
//! TLS connection per request, as `api::client::Client` makes them. Every answer must be a 200
//! listing every pool; a run with any other answer fails the benchmark.
//!
//! `vnfpool-api-bench baseline-server LISTEN CERT KEY CLIENT_CA BODY` is that baseline server.

use std::{
    convert::Infallible,
    fmt::Write as _,
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::{
    Request, Response, StatusCode,
    body::Incoming,
    client::conn::http1::SendRequest,
    header::{CONTENT_TYPE, HOST},
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, task::JoinSet};
use tokio_rustls::{TlsAcceptor, rustls::ServerConfig};
use vnfpool_common::maps;
use vnfpool_daemon::{
    api::{self, PoolHealth, PoolSummary, client::Client},
    model::spec::ApiSpec,
};
use vnfpool_tests::{
    daemon::{Daemon, Places},
    lab::{Lab, TCP_PORT},
    pki::{Ca, server_files},
};

/// Pools configured (issue 5 asks for 100; the daemon accepts up to `MAX_POOLS`).
const POOLS: usize = 100;
const _: () = assert!(POOLS <= maps::MAX_POOLS as usize);
/// Pool `i` listens on the lab's VIP, port `FIRST_PORT + i`.
const FIRST_PORT: u16 = 10_000;
/// Maglev table size of every pool: the ring arena holds 15 pools of the default size (65537)
/// in both slots, not 100 (the configuration would be refused).
const RING_SIZE: u32 = 4093;
/// Both servers listen in the lab's host namespace.
const API: &str = "127.0.0.1:9443";
const BASELINE: &str = "127.0.0.1:9444";
const PATH: &str = "/v1/pools";
/// Keep-alive connections sending at once.
const CONNECTIONS: [usize; 3] = [1, 4, 16];
const RUNS: usize = 7;
const RUN: Duration = Duration::from_secs(1);
/// Clients sending at once, each making a new connection per request.
const FRESH_CLIENTS: usize = 4;
const FRESH_RUNS: usize = 5;
/// How every pool summary starts in the compact JSON the daemon writes.
const POOL_MARK: &[u8] = br#"{"name":""#;

/// The daemon's configuration: the API for the SCE, and `POOLS` pools on the lab's three
/// elements, probed once a second (192 TCP probes a second, about 1% of a core: the daemon's
/// time goes to the API).
fn config(lab: &Lab, places: &Places, (cert, key, client_ca): (&Path, &Path, &Path)) -> String {
    let mut yaml = format!(
        "{}api:\n  listen: {API}\n  cert: {}\n  key: {}\n  client_ca: {}\n  clients:\n    - {{ subject: \"CN=orchestrator\", role: sce }}\npools:\n",
        places.daemon_section(lab),
        cert.display(),
        key.display(),
        client_ca.display(),
    );
    let elements = Places::elements(lab, &[300, 200, 100]);
    for i in 0..POOLS {
        write!(
            yaml,
            "  - name: p{i:03}\n    vip: {}\n    ports: [{}]\n    protocol: tcp\n    ring_size: {RING_SIZE}\n    redundancy: {{ model: active-standby, preempt: false }}\n    health: {{ check: tcp, port: {TCP_PORT}, interval: 1s, timeout: 500ms, rise: 1, fall: 3 }}\n{elements}",
            lab.vip,
            FIRST_PORT + i as u16,
        )
        .expect("writing to a String");
    }
    yaml
}

/// Whether an answer is what the SCE should get: a 200 listing every pool. Counting the pools'
/// first bytes keeps the client's share of the CPU small; the first answer of each server is
/// parsed in full ([`first_body`]).
fn check(status: StatusCode, body: &[u8]) -> Result<(), String> {
    if status != StatusCode::OK {
        return Err(format!("{status}: {}", String::from_utf8_lossy(body)));
    }
    let pools = body.windows(POOL_MARK.len()).filter(|w| *w == POOL_MARK).count();
    if pools == POOLS {
        Ok(())
    } else {
        Err(format!("{pools} pools listed, not {POOLS}"))
    }
}

/// The first answer of a server, checked in full: every pool, each one up.
async fn first_body(client: &Client) -> String {
    let (status, body) = client.call("GET", PATH, "").await.expect("GET /v1/pools");
    assert_eq!(status, StatusCode::OK, "{body}");
    let pools: Vec<PoolSummary> = serde_json::from_str(&body).expect("a list of pools");
    assert_eq!(pools.len(), POOLS, "{body}");
    assert!(pools.iter().all(|p| p.state == PoolHealth::Up), "{body}");
    assert_eq!(check(status, body.as_bytes()), Ok(()));
    body
}

// === the load ===

/// One client's way of sending requests.
enum Conn {
    /// A TLS connection kept open, one request after another.
    KeepAlive(SendRequest<Empty<Bytes>>),
    /// A new TLS connection per request (`api::client::Client::call`).
    Fresh(Client),
}

impl Conn {
    async fn keep_alive(client: &Client) -> Self {
        let tls = client.connect().await.expect("a TLS connection");
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .expect("HTTP/1.1 over TLS");
        tokio::spawn(conn);
        Self::KeepAlive(sender)
    }

    async fn get_pools(&mut self) -> Result<(), String> {
        match self {
            Self::KeepAlive(sender) => {
                sender.ready().await.map_err(|e| format!("connection: {e}"))?;
                let request = Request::get(PATH)
                    .header(HOST, "vnfpool")
                    .body(Empty::new())
                    .expect("a request");
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
                check(status, &body)
            }
            Self::Fresh(client) => {
                let (status, body) = client.call("GET", PATH, "").await?;
                check(status, body.as_bytes())
            }
        }
    }
}

/// A server under load: how to reach it, and its process (for its CPU time).
struct Target {
    client: Client,
    pid: u32,
}

/// All runs of one server at one level of concurrency.
#[derive(Default)]
struct Samples {
    rates: Vec<f64>,
    cpu_per_request: Vec<Duration>,
    latencies: Vec<Duration>,
    errors: Vec<String>,
}

impl Samples {
    fn median_rate(&self) -> f64 {
        let mut r = self.rates.clone();
        r.sort_by(f64::total_cmp);
        r[r.len() / 2]
    }

    fn median_cpu(&self) -> Duration {
        let mut c = self.cpu_per_request.clone();
        c.sort();
        c[c.len() / 2]
    }

    /// The latency below which `percent` of all requests of all runs completed.
    fn latency(&mut self, percent: usize) -> Duration {
        self.latencies.sort();
        let n = self.latencies.len();
        self.latencies[(n * percent).div_ceil(100).clamp(1, n) - 1]
    }
}

/// One run: every connection sends requests, one after another, for `RUN`. A connection stops
/// at its first error (its connection may be gone); the errors fail the benchmark later.
async fn run(conns: Vec<Conn>, pid: u32, samples: &mut Samples) -> Vec<Conn> {
    let cpu = vnfpool_tests::cpu::of_process(pid);
    let start = Instant::now();
    let end = start + RUN;
    let mut tasks = JoinSet::new();
    for mut conn in conns {
        tasks.spawn(async move {
            let (mut latencies, mut error) = (Vec::new(), None);
            while Instant::now() < end {
                let sent = Instant::now();
                match conn.get_pools().await {
                    Ok(()) => latencies.push(sent.elapsed()),
                    Err(e) => {
                        error = Some(e);
                        break;
                    }
                }
            }
            (conn, latencies, error)
        });
    }
    let mut back = Vec::new();
    let mut requests = 0;
    while let Some(done) = tasks.join_next().await {
        let (conn, latencies, error) = done.expect("a client's task");
        back.push(conn);
        requests += latencies.len();
        samples.latencies.extend(latencies);
        samples.errors.extend(error);
    }
    let (elapsed, cpu) = (
        start.elapsed(),
        vnfpool_tests::cpu::of_process(pid).saturating_sub(cpu),
    );
    let requests = u32::try_from(requests).expect("fewer than 2^32 requests");
    samples.rates.push(f64::from(requests) / elapsed.as_secs_f64());
    samples.cpu_per_request.push(cpu / requests.max(1));
    back
}

/// `runs` runs against each server in turns (the order alternating, so that drift hits both
/// alike), each with `clients` clients.
async fn measure(targets: [&Target; 2], clients: usize, keep_alive: bool, runs: usize) -> [Samples; 2] {
    let mut conns: [Vec<Conn>; 2] = [Vec::new(), Vec::new()];
    for (t, c) in targets.iter().zip(&mut conns) {
        for _ in 0..clients {
            c.push(if keep_alive {
                Conn::keep_alive(&t.client).await
            } else {
                Conn::Fresh(t.client.clone())
            });
        }
    }
    let mut samples = [Samples::default(), Samples::default()];
    for r in 0..runs {
        let order = if r % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            conns[i] = run(std::mem::take(&mut conns[i]), targets[i].pid, &mut samples[i]).await;
        }
    }
    samples
}

fn thousands(n: f64) -> String {
    let digits = format!("{n:.0}");
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn us(d: Duration) -> String {
    format!("{} µs", thousands(d.as_secs_f64() * 1e6))
}

/// Prints one table row; fails instead if any answer was wrong.
fn row(connections: &str, [mut vnfpool, mut baseline]: [Samples; 2]) {
    for (server, s) in [("vnfpool", &vnfpool), ("baseline", &baseline)] {
        assert!(
            s.errors.is_empty(),
            "{connections}: {} failed requests to the {server} server, the first: {}",
            s.errors.len(),
            s.errors[0]
        );
    }
    let rate = vnfpool.median_rate();
    let base = baseline.median_rate();
    println!(
        "| {connections} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2} |",
        thousands(rate),
        us(vnfpool.latency(50)),
        us(vnfpool.latency(99)),
        us(vnfpool.median_cpu()),
        thousands(base),
        us(baseline.latency(50)),
        us(baseline.latency(99)),
        us(baseline.median_cpu()),
        rate / base,
    );
}

// === the baseline server ===

/// The baseline server process, killed on drop.
struct Baseline(Child);

impl Baseline {
    /// Starts `this binary baseline-server …` in the lab's host namespace and returns once it
    /// listens (it says so on its standard output).
    fn start(lab: &Lab, args: &[&Path]) -> Self {
        let mut child = Command::new("nsenter")
            .arg(format!("--net={}", lab.host.path().display()))
            .arg(std::env::current_exe().expect("current exe"))
            .arg("baseline-server")
            .arg(BASELINE)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting the baseline server");
        let stdout = child.stdout.take().expect("piped stdout");
        let baseline = Self(child);
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("reading the baseline server's output");
        assert_eq!(line.trim(), "listening", "the baseline server did not start");
        baseline
    }
}

impl Drop for Baseline {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `baseline-server LISTEN CERT KEY CLIENT_CA BODY`: the daemon's TLS configuration and HTTP/1.1
/// server settings, every request answered with the bytes of `BODY`, on a multi-threaded
/// runtime as the daemon's.
fn baseline_server(args: &[String]) {
    // Gone with the benchmark, however that ends.
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .expect("PR_SET_PDEATHSIG");
    let [listen, cert, key, client_ca, body] = args else {
        panic!("usage: vnfpool-api-bench baseline-server LISTEN CERT KEY CLIENT_CA BODY, not {args:?}");
    };
    let spec = ApiSpec {
        listen: listen.parse().expect("LISTEN: an address and port"),
        cert: cert.into(),
        key: key.into(),
        client_ca: client_ca.into(),
        crls: Vec::new(),
        clients: Vec::new(),
        heartbeat_listen: "127.0.0.1:0".parse().expect("an address"),
        heartbeat_clock_skew: vnfpool_daemon::heartbeat::DEFAULT_SKEW,
        // The baseline listens with plain TCP (below).
        mptcp: false,
        issuers: Vec::new(),
    };
    let tls = api::tls_config(&spec).expect("the TLS configuration");
    let body = Bytes::from(std::fs::read(body).expect("reading BODY"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let listener = TcpListener::bind(spec.listen).await.expect("binding LISTEN");
        println!("listening");
        serve_fixed(listener, tls, body).await;
    });
}

/// What `api::serve` does per connection (handshake with a timeout, the client's subject read
/// from its certificate, HTTP/1.1 with a header timeout), with one fixed answer for every
/// request instead of the router.
async fn serve_fixed(listener: TcpListener, tls: Arc<ServerConfig>, body: Bytes) {
    let acceptor = TlsAcceptor::from(tls);
    let timeouts = api::Timeouts::default();
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let (acceptor, body) = (acceptor.clone(), body.clone());
        tokio::spawn(async move {
            let Ok(Ok(tls)) = tokio::time::timeout(timeouts.handshake, acceptor.accept(tcp)).await else {
                return;
            };
            let subject = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| api::subject(c));
            std::hint::black_box(subject);
            let service = hyper::service::service_fn(move |_: Request<Incoming>| {
                let response = Response::builder()
                    .header(CONTENT_TYPE, "application/json")
                    .body(Full::new(body.clone()));
                async move { Ok::<_, Infallible>(response.expect("a response")) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(timeouts.headers)
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

// === main ===

fn bench() {
    let started = Instant::now();
    let daemon_bin = vnfpool_tests::sibling_binary("vnfpool-under-test");
    let lab = Lab::new(3);
    let places = Places::new();
    let ca = Ca::new("vnfpool bench");
    let (cert, key, client_ca) = server_files(&ca, &places.scratch.path, &["127.0.0.1"]);
    std::fs::write(places.config(), config(&lab, &places, (&cert, &key, &client_ca))).expect("config");
    let mut daemon = Daemon::start(&daemon_bin, &lab, &places);
    // Every pool's mapping written and every element active or standby: the answers no longer
    // change while the load runs.
    daemon.wait_until(
        "every pool live with its active and standbys",
        Duration::from_secs(20),
        |s| {
            s.pools.len() == POOLS
                && s.pools.iter().all(|p| {
                    p.generation > 0
                        && p.elements
                            .iter()
                            .all(|e| e.role == "active" || e.role == "standby")
                })
        },
    );

    let (sce_cert, sce_key) = ca.issue("orchestrator", &[]);
    let client = |addr: &str| {
        Client::new(
            addr.parse().expect("an address"),
            &ca.pem(),
            Some((&sce_cert, &sce_key)),
        )
        .expect("a client")
    };
    let vnfpool = Target {
        client: client(API),
        pid: daemon.pid(),
    };
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    };
    let body = lab.host.run(|| runtime().block_on(first_body(&vnfpool.client)));
    let body_path = places.scratch.path.join("pools.json");
    std::fs::write(&body_path, &body).expect("writing the daemon's answer");
    let baseline_server = Baseline::start(&lab, &[&cert, &key, &client_ca, &body_path]);
    let baseline = Target {
        client: client(BASELINE),
        pid: baseline_server.0.id(),
    };

    println!(
        "GET {PATH} with {POOLS} pools (an answer of {} bytes), role sce, mutual TLS; median of {RUNS} runs of {RUN:?} each, in turns with the baseline\n",
        body.len()
    );
    println!(
        "| connections | vnfpool req/s | p50 | p99 | daemon CPU per request | baseline req/s | p50 | p99 | baseline CPU per request | req/s vs baseline |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    lab.host.run(|| {
        runtime().block_on(async {
            assert_eq!(
                first_body(&baseline.client).await,
                body,
                "the baseline answers the daemon's bytes"
            );
            for clients in CONNECTIONS {
                let samples = measure([&vnfpool, &baseline], clients, true, RUNS).await;
                row(&format!("{clients}, kept open"), samples);
            }
            let samples = measure([&vnfpool, &baseline], FRESH_CLIENTS, false, FRESH_RUNS).await;
            row(
                &format!("{FRESH_CLIENTS}, a new one per request ({FRESH_RUNS} runs)"),
                samples,
            );
        });
    });
    drop(baseline_server);
    drop(daemon);
    println!("\n(the whole benchmark took {:.0?})", started.elapsed());
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("baseline-server") {
        baseline_server(&args[1..]);
    } else {
        bench();
    }
}
