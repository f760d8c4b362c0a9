//! Latency of the pool's control messages (draft 5.4; issue 19, item 4), as their parties see
//! them, against the real daemon in the lab: p50 and p99 of each, idle and under the
//! control-plane load of the failover benchmark (`vnfpool_tests::load`: 50 registrations
//! waiting on addresses that never resolve, 200 scrapes and 10 reloads a second). Run through
//! `cargo xtask bench`; figures go to BENCHMARKS.md.
//!
//! - heartbeat sent → liveness updated: a heartbeat of a registered element gone silent, sent
//!   from its namespace, until the SCE's event stream receives the `pool` event that counts
//!   it active again: the heartbeat verified, the decision, the mapping switched, the event.
//! - failure decided → event delivered: e1's link goes down (a failover decided at once, in both
//!   pools) and an
//!   operator's event stream receives the `failover` event: from its `decided_at` to its
//!   arrival, on the same clock.
//! - registration request → first flow steered: e3 registers into the active-active pool `dns`
//!   over a new TLS connection, as its agent does, and sends heartbeats from the answer on; from
//!   the request to the answer of the first new flow that e3 serves (a new flow every 0.25 ms:
//!   the resolution; a third of them are e3's once it is in the table).
//! - SCE redundancy request → applied: `PUT /v1/pools/web/redundancy`, 2 and 1 actives in turn,
//!   over a new TLS connection as the SCE's client makes them, to its answer: the daemon
//!   answers once the mapping is switched and the state is on disk.

use std::{
    net::{SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant, SystemTime},
};

use vnfpool_daemon::{
    api::{ElementAdded, client::Client},
    heartbeat::{self, Key},
};
use vnfpool_tests::{
    daemon::{Daemon, Places, role},
    lab::{Lab, TCP_PORT, UDP_PORT},
    load::Load,
    registration::{API_PORT, HEARTBEAT_PORT, Parties, element_body, gateway},
};

/// Samples of each message in each condition.
const SAMPLES: usize = 40;
/// The pool's heartbeat interval and misses (a silent element fails after 30 ms).
const INTERVAL_MS: u64 = 10;
const MISSES: u32 = 3;
/// New flows the registration row may use: about 100 per sample (a mapping switch may wait a
/// grace period of the previous one, up to 15 ms).
const FLOWS: usize = 15_000;
/// Time between two new flows of the registration row.
const FLOW_EVERY: Duration = Duration::from_micros(250);
/// Longest wait for any one step.
const STEP: Duration = Duration::from_secs(5);

fn api() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], API_PORT))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// The lab, its daemon and the parties of its API.
struct Rig {
    lab: Lab,
    places: Places,
    parties: Parties,
    daemon: Daemon,
    /// e3's heartbeat socket: in its namespace, from its address to its gateway's listener.
    heartbeats: UdpSocket,
    /// The client's sockets, one new flow each, used in order.
    flows: Vec<UdpSocket>,
    next_flow: usize,
}

impl Rig {
    fn new(daemon_bin: &Path) -> Self {
        let (places, parties) = (Places::new(), Parties::new());
        let lab = Lab::new(3);
        let text = format!(
            "{}{}pools:\n  - name: dns\n    vip: {vip}\n    ports: [{UDP_PORT}]\n    protocol: udp\n    ring_size: 251\n    redundancy: {{ model: active-active }}\n    health: {{ check: tcp, port: {TCP_PORT}, interval: 10ms, timeout: 50ms, rise: 2, fall: 3 }}\n    heartbeat: {{ interval: {INTERVAL_MS}ms, misses: {MISSES} }}\n{elements}  - name: web\n    vip: {vip}\n    ports: [{TCP_PORT}]\n    protocol: tcp\n    ring_size: 251\n    redundancy: {{ model: active-standby, preempt: true }}\n    health: {{ check: tcp, port: {TCP_PORT}, interval: 10ms, timeout: 50ms, rise: 2, fall: 3 }}\n{elements}",
            places.daemon_section(&lab),
            parties.api_section(&lab, &places),
            vip = lab.vip,
            elements = Places::elements(&lab, &[100, 50]),
        );
        std::fs::write(places.config(), text).expect("config");
        let mut daemon = Daemon::start(daemon_bin, &lab, &places);
        daemon.wait_until("e1 active", STEP, |s| role(s, "web", "e1") == Some("active"));
        let e3 = &lab.elements[2];
        let (from, to) = (
            SocketAddr::from((e3.addr, 0)),
            SocketAddr::from((gateway(e3.addr), HEARTBEAT_PORT)),
        );
        let heartbeats = e3.netns.run(move || {
            let s = UdpSocket::bind(from).expect("bind");
            s.connect(to).expect("connect");
            s
        });
        let flows = lab.udp_sockets(FLOWS, UDP_PORT);
        Self {
            lab,
            places,
            parties,
            daemon,
            heartbeats,
            flows,
            next_flow: 0,
        }
    }

    fn socket(&self) -> PathBuf {
        self.places.socket()
    }

    /// A client of the API as `cn`, for a thread in the lab's host namespace.
    fn client(&self, cn: &str) -> impl FnOnce() -> Client + Send + use<> {
        let (cert, key) = self.parties.ca.issue(cn, &[]);
        let ca = self.parties.ca.pem();
        move || Client::new(api(), &ca, Some((&cert, &key))).expect("client")
    }

    fn wait_active(&mut self, pool: &str, element: &str) {
        self.daemon
            .wait_until(&format!("{element} active in {pool}"), STEP, |s| {
                role(s, pool, element) == Some("active")
            });
    }

    /// e3's heartbeat with sequence number `seq`, stamped now.
    fn heartbeat(&self, id: u64, key: &Key, seq: u64) {
        let now = heartbeat::unix_ns(SystemTime::now());
        self.heartbeats
            .send(&heartbeat::encode(id, seq, now, key))
            .expect("a heartbeat sent");
    }
}

/// Registers lab element 2 as e3 into `dns` as `client`; its id and key.
async fn register(client: &Client, body: &str) -> (u64, Key) {
    let (status, text) = client
        .call("PUT", "/v1/pools/dns/elements/e3", body)
        .await
        .expect("PUT e3");
    assert_eq!(status.as_u16(), 201, "{text}");
    let added: ElementAdded = serde_json::from_str(&text).expect("a registration");
    let registration = added.registration.expect("a registration");
    (registration.id, Key::from_hex(&registration.key).expect("key"))
}

async fn deregister(client: &Client) {
    let (status, text) = client
        .call("DELETE", "/v1/pools/dns/elements/e3", "")
        .await
        .expect("DELETE e3");
    assert!(status.is_success(), "{text}");
}

/// The id of the newest event the daemon keeps, as an operator's stream starts with them.
fn newest_event(rig: &Rig) -> u64 {
    let client = rig.client("ops");
    rig.lab.host.run(move || {
        let events = runtime()
            .block_on(client().follow(None, STEP, |events| !events.is_empty()))
            .expect("the kept events");
        events.iter().filter_map(|e| e.id.parse().ok()).max().unwrap_or(0)
    })
}

/// A heartbeat of a silent element → the SCE's `pool` event that counts it active again: the
/// heartbeat verified, the element up, the mapping switched, the event on its way. e3 is
/// registered into the active-active `dns` and left silent between samples, so that each
/// heartbeat brings it back.
fn heartbeat_row(rig: &mut Rig) -> Vec<Duration> {
    let body = element_body(&rig.lab, 2, "");
    let client = rig.client("agent-e3");
    let (id, key) = rig
        .lab
        .host
        .run(move || runtime().block_on(register(&client(), &body)));
    let after = newest_event(rig);
    let client = rig.client("orchestrator");
    let (ready_tx, ready) = mpsc::channel();
    let (arrived_tx, arrived) = mpsc::channel();
    let done = Arc::new(AtomicBool::new(false));
    let finished = Arc::clone(&done);
    let follower = rig.lab.host.spawn("pool event follower", move |_| {
        let (rt, client) = (runtime(), client());
        let (mut read, mut actives) = (0, None);
        let mut ready_tx = Some(ready_tx);
        let _ = rt.block_on(client.follow(Some(after), Duration::from_secs(120), |events| {
            if let Some(tx) = ready_tx.take() {
                let _ = tx.send(());
            }
            let now = Instant::now();
            // The events that count e3 active again: dns going to three actives from fewer (the
            // load's registrations raise pool events of their own).
            for now_actives in events[read..]
                .iter()
                .filter(|e| e.kind == "pool")
                .filter_map(|e| dns_actives(&e.data))
            {
                if actives != Some(3) && now_actives == 3 {
                    let _ = arrived_tx.send(now);
                }
                actives = Some(now_actives);
            }
            read = events.len();
            finished.load(Ordering::Relaxed)
        }));
    });
    ready.recv_timeout(STEP).expect("the event stream open");
    let mut latencies = Vec::new();
    for seq in 1..=SAMPLES as u64 {
        rig.daemon.wait_until("e3 silent", STEP, |s| {
            role(s, "dns", "e3").is_some_and(|r| r != "active")
        });
        while arrived.try_recv().is_ok() {}
        let sent = Instant::now();
        rig.heartbeat(id, &key, seq);
        let back = arrived
            .recv_timeout(STEP)
            .expect("the pool event counting e3 again");
        latencies.push(back.duration_since(sent));
    }
    // The deregistration's pool event lets the follower see that it is done.
    done.store(true, Ordering::Relaxed);
    let client = rig.client("agent-e3");
    rig.lab
        .host
        .run(move || runtime().block_on(deregister(&client())));
    drop(follower);
    rig.daemon
        .wait_until("e3 gone", STEP, |s| role(s, "dns", "e3").is_none());
    latencies
}

/// The actives an SCE's `pool` event gives `dns`, if it is about `dns`.
fn dns_actives(data: &str) -> Option<u64> {
    let summary: serde_json::Value = serde_json::from_str(data).ok()?;
    (summary["name"] == "dns").then(|| summary["capacity"]["actives"].as_u64())?
}

/// Failure decided → the operator's event stream has it.
fn event_row(rig: &mut Rig) -> Vec<Duration> {
    let client = rig.client("ops");
    let (ready_tx, ready) = mpsc::channel();
    let (done_tx, done) = mpsc::channel();
    let started = SystemTime::now();
    let follower = rig.lab.host.spawn("event follower", move |_| {
        let rt = runtime();
        let client = client();
        let (mut read, mut latencies) = (0, Vec::new());
        let mut ready_tx = Some(ready_tx);
        let result = rt.block_on(client.follow(None, Duration::from_secs(120), |events| {
            if let Some(tx) = ready_tx.take() {
                let _ = tx.send(());
            }
            let now = SystemTime::now();
            for event in &events[read..] {
                if let Some(decided) = link_down_decided(&event.data).filter(|&d| d >= started) {
                    latencies.push(now.duration_since(decided).unwrap_or_default());
                }
            }
            read = events.len();
            latencies.len() >= SAMPLES
        }));
        let _ = done_tx.send(result.map(|_| latencies));
    });
    ready.recv_timeout(STEP).expect("the event stream open");
    let link = rig.lab.elements[0].host_link.name.clone();
    for _ in 0..SAMPLES {
        rig.lab.host.ip(&["link", "set", "dev", &link, "down"]);
        rig.wait_active("web", "e2");
        rig.lab.host.ip(&["link", "set", "dev", &link, "up"]);
        rig.wait_active("web", "e1");
    }
    let latencies = done
        .recv_timeout(Duration::from_secs(10))
        .expect("the follower's events")
        .expect("the event stream");
    drop(follower);
    latencies
}

/// When the failover of an event's `data` was decided, if it is a `link_down` one. (The stream
/// starts with the events kept from earlier rounds: the caller keeps this round's.)
fn link_down_decided(data: &str) -> Option<SystemTime> {
    let event: serde_json::Value = serde_json::from_str(data).ok()?;
    if event["reason"] != "link_down" {
        return None;
    }
    humantime::parse_rfc3339(event["decided_at"].as_str()?).ok()
}

/// Registration request → the first new flow e3 answers.
fn registration_row(rig: &mut Rig) -> Vec<Duration> {
    let mut latencies = Vec::new();
    for _ in 0..SAMPLES {
        let body = element_body(&rig.lab, 2, "");
        let client = rig.client("agent-e3");
        let (sent, (id, key)) = rig.lab.host.run(move || {
            let (rt, client) = (runtime(), client());
            let sent = Instant::now();
            (sent, rt.block_on(register(&client, &body)))
        });
        // Heartbeats go on every interval, as the agent's would, until e3 serves a new flow;
        // a new flow every 0.25 ms (the row's resolution).
        let (mut seq, mut beat) = (0, sent);
        let mut buf = [0u8; 64];
        let mut answers = 0;
        let mut paced = Instant::now();
        loop {
            if seq == 0 || beat.elapsed() >= Duration::from_millis(INTERVAL_MS) {
                seq += 1;
                beat = Instant::now();
                rig.heartbeat(id, &key, seq);
            }
            let Some(flow) = rig.flows.get(rig.next_flow) else {
                panic!("no new flows left ({answers} answered by others in this sample)");
            };
            rig.next_flow += 1;
            flow.send(b"ping").expect("a request");
            let n = flow.recv(&mut buf).expect("an answer");
            if &buf[..n] == b"e3" {
                latencies.push(sent.elapsed());
                break;
            }
            answers += 1;
            assert!(sent.elapsed() < STEP, "no flow reached e3 in {answers} new flows");
            paced += FLOW_EVERY;
            if let Some(wait) = paced.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let client = rig.client("agent-e3");
        rig.lab
            .host
            .run(move || runtime().block_on(deregister(&client())));
        rig.daemon
            .wait_until("e3 gone", STEP, |s| role(s, "dns", "e3").is_none());
    }
    latencies
}

/// Redundancy request → answered, applied.
fn redundancy_row(rig: &Rig) -> Vec<Duration> {
    let client = rig.client("orchestrator");
    rig.lab.host.run(move || {
        let (rt, client) = (runtime(), client());
        (0..SAMPLES)
            .map(|i| {
                let body = format!("{{\"active\": {}}}", if i % 2 == 0 { 2 } else { 1 });
                let sent = Instant::now();
                let (status, text) = rt
                    .block_on(client.call("PUT", "/v1/pools/web/redundancy", &body))
                    .expect("PUT redundancy");
                let took = sent.elapsed();
                assert_eq!(status.as_u16(), 200, "{text}");
                took
            })
            .collect()
    })
}

/// The `q` quantile of `samples` (nearest rank).
fn quantile(samples: &mut [Duration], q: f64) -> Duration {
    samples.sort();
    let rank = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len());
    samples[rank - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Every row, in one condition: (name, samples).
fn rows(rig: &mut Rig) -> Vec<(&'static str, Vec<Duration>)> {
    let registration = registration_row(rig);
    let redundancy = redundancy_row(rig);
    let events = event_row(rig);
    let heartbeats = heartbeat_row(rig);
    vec![
        (
            "heartbeat of a silent element → liveness updated, seen in the SCE's pool event",
            heartbeats,
        ),
        ("failure decided → event delivered to an SSE client", events),
        (
            "registration request → the element's first flow steered",
            registration,
        ),
        ("SCE redundancy request → applied (answered)", redundancy),
    ]
}

fn main() {
    let daemon_bin = vnfpool_tests::sibling_binary("vnfpool-under-test");
    println!(
        "control-message latency: the real daemon in the lab, heartbeats every {INTERVAL_MS} ms, {SAMPLES} samples of each message, idle and under control-plane load\n"
    );
    let mut rig = Rig::new(&daemon_bin);
    let idle = rows(&mut rig);
    let load = Load::start(&rig.lab, &rig.parties, &rig.socket());
    load.wait_until_on(&rig.lab);
    let loaded = rows(&mut rig);
    let summary = load.counts.summary();
    drop(load);
    println!("| control message | idle p50 | idle p99 | under load p50 | under load p99 |");
    println!("|---|---:|---:|---:|---:|");
    for ((name, mut i), (_, mut l)) in idle.into_iter().zip(loaded) {
        assert!(!i.is_empty() && !l.is_empty(), "{name}: no samples");
        println!(
            "| {name} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms |",
            ms(quantile(&mut i, 0.5)),
            ms(quantile(&mut i, 0.99)),
            ms(quantile(&mut l, 0.5)),
            ms(quantile(&mut l, 0.99)),
        );
    }
    println!("\nload during the second run: {summary}");
}
