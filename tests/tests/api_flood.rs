//! The daemon under a descriptor flood on its API (issue #14 item 2): 2,000 connections that
//! never start TLS and 200 SSE event streams held open fail no element, leave a legitimate
//! client its answer within a second, and add little to the daemon's memory. The daemon is
//! started with the usual soft limit of 1,024 descriptors, which it raises.

use std::{
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};
use vnfpool_daemon::api::client::Client;
use vnfpool_tests::{
    daemon::{Daemon, Places, command_via, role},
    lab::{Lab, TCP_PORT, UDP_PORT},
    registration::{API_PORT, Parties},
};

const BIN: &str = env!("CARGO_BIN_EXE_vnfpool-under-test");
const IDLE: usize = 2_000;
const STREAMS: usize = 200;
/// What the flood may add to the daemon's resident memory.
const MEMORY_BOUND: u64 = 64 << 20;

/// The daemon's resident memory, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib << 10
}

/// Opens an SSE stream on `client` and reads its response head: the status line.
async fn open_stream(client: &Client) -> (tokio_rustls::client::TlsStream<TcpStream>, String) {
    let mut tls = client.connect().await.expect("TLS");
    tls.write_all(b"GET /v1/events HTTP/1.1\r\nhost: vnfpool\r\n\r\n")
        .await
        .expect("request");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tls.read_exact(&mut byte).await.expect("response head");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let status = head.lines().next().unwrap_or_default().to_owned();
    (tls, status)
}

#[test]
fn idle_connections_and_event_streams_starve_no_one() {
    let places = Places::new();
    let parties = Parties::new();
    let lab = Lab::new(2);
    let text = format!(
        "{}{}pools:\n  - name: dns\n    vip: {}\n    ports: [{UDP_PORT}]\n    protocol: udp\n    ring_size: 251\n    redundancy: {{ model: active-active }}\n    health: {{ check: tcp, port: {TCP_PORT}, interval: 10ms, timeout: 50ms, rise: 2, fall: 3 }}\n{}",
        places.daemon_section(&lab),
        parties.api_section(&lab, &places),
        lab.vip,
        Places::elements(&lab, &[100, 100]),
    );
    std::fs::write(places.config(), text).expect("config");
    let wrapper = ["prlimit", "--nofile=1024:", "--"].map(str::to_owned);
    let mut daemon = Daemon::spawn(command_via(&wrapper, Path::new(BIN), &lab, &places), &places);
    let both = |s: &vnfpool_daemon::control::Status| {
        role(s, "dns", "e1") == Some("active") && role(s, "dns", "e2") == Some("active")
    };
    daemon.wait_until("e1 and e2 active", Duration::from_secs(10), both);
    let before = rss(daemon.pid());

    let (cert, key) = parties.ca.issue("orchestrator", &[]);
    let ca_pem = parties.ca.pem();
    let (elapsed, answer, statuses) = lab.host.run(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let addr = SocketAddr::from(([127, 0, 0, 1], API_PORT));
            let client = Client::new(addr, &ca_pem, Some((&cert, &key))).expect("client");
            let mut idle = Vec::with_capacity(IDLE);
            for _ in 0..IDLE {
                idle.push(TcpStream::connect(addr).await.expect("connect"));
            }
            let mut streams = Vec::with_capacity(STREAMS);
            let mut statuses = Vec::with_capacity(STREAMS);
            for _ in 0..STREAMS {
                let (stream, status) = open_stream(&client).await;
                streams.push(stream);
                statuses.push(status);
            }
            let started = Instant::now();
            let answer = client.call("GET", "/v1/pools", "").await;
            let elapsed = started.elapsed();
            // Held to the end: the flood lasts through the legitimate call.
            drop((idle, streams));
            (elapsed, answer, statuses)
        })
    });
    let after = rss(daemon.pid());

    assert!(
        statuses.iter().all(|s| s.contains(" 200 ")),
        "every stream opened: {:?}",
        statuses.iter().find(|s| !s.contains(" 200 "))
    );
    let (status, _) = answer.expect("the legitimate call");
    assert_eq!(status.as_u16(), 200);
    println!(
        "{IDLE} idle connections and {STREAMS} event streams: a call answered in {elapsed:?}; resident memory {} -> {} MiB",
        before >> 20,
        after >> 20
    );
    assert!(elapsed < Duration::from_secs(1), "answered in {elapsed:?}");
    assert!(
        after.saturating_sub(before) < MEMORY_BOUND,
        "resident memory grew from {before} to {after} bytes"
    );
    let status = daemon.status().expect("status");
    assert!(both(&status), "no element failed: {:?}", status.pools[0].elements);
    assert!(
        status.pools[0].failovers.is_empty(),
        "{:?}",
        status.pools[0].failovers
    );
}
