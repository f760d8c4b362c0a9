//! Flow sync's throughput and lag from one node to another, printed as a table. Run through
//! `cargo xtask bench`; figures are in BENCHMARKS.md.
//!
//! Node A's flow sync reads new-flow records from a channel (standing in for the program's ring
//! buffer, whose cost per flow is measured in `tests/tests/flow_events_cost.rs`) offered
//! at a fixed rate, batches them, tags them with HMAC-SHA256 and sends them over loopback UDP to
//! node B's flow sync, which checks each datagram and hands the records to a table that notes
//! when each one arrived. Each record carries its offer time, so the lag is offer to arrival:
//! batching, tagging, the socket and the check. Baseline, in the same run: the same number of
//! full datagrams (83 records, 1,400 bytes) sent as fast as one task can over a plain loopback
//! UDP pair (no batching task, no tag, no check): the floor the node's sockets allow.

use std::{
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::sync::{mpsc, watch};
use vnfpool_common::flow::FlowEvent;
use vnfpool_daemon::{
    dataplane::{FlowTable, Inserted, Result as DpResult},
    flowsync::{FlowSync, FlowSyncConfig},
};

/// Offered rates, new flows per second.
const RATES: [u64; 5] = [250_000, 500_000, 1_000_000, 2_000_000, 4_000_000];
/// How long each rate is offered.
const SPAN: Duration = Duration::from_millis(500);
/// Runs per rate; the table shows the median run (by delivered rate).
const RUNS: usize = 5;
/// How often the offering task wakes (it offers `rate × TICK` records each time).
const TICK: Duration = Duration::from_millis(1);
/// Records per full datagram, as flow sync packs them.
const PER_DATAGRAM: usize = 83;
const DATAGRAM: usize = 1400;

/// A table that notes when each record arrived (its `hash` holds its offer time, in ns since
/// `epoch`).
struct Arrivals {
    epoch: Instant,
    lags_ns: Mutex<Vec<u64>>,
    count: AtomicU64,
}

impl FlowTable for Arrivals {
    fn insert(&self, events: &[FlowEvent]) -> DpResult<Inserted> {
        let now = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let mut lags = self.lags_ns.lock().expect("lock");
        lags.extend(events.iter().map(|e| now.saturating_sub(e.hash)));
        self.count.fetch_add(events.len() as u64, Ordering::Relaxed);
        Ok(Inserted {
            added: events.len() as u64,
            ..Inserted::default()
        })
    }

    fn scan(&self, _from: u32, _count: u32, _recent_only: bool, _out: &mut Vec<FlowEvent>) -> DpResult<u32> {
        Ok(0)
    }

    fn buckets(&self) -> u32 {
        1 << 17
    }
}

/// One run's outcome.
#[derive(Clone, Copy)]
struct Run {
    offered: u64,
    delivered: u64,
    /// Delivered records per second of the span.
    rate: f64,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

fn percentile(sorted: &[u64], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "an index into a vector of at most a few million lags"
    )]
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    Duration::from_nanos(sorted[i])
}

async fn run(rate: u64) -> Run {
    let key = vec![7u8; 32];
    let epoch = Instant::now();
    let receiver_table = Arc::new(Arrivals {
        epoch,
        lags_ns: Mutex::new(Vec::with_capacity(usize::try_from(rate).unwrap_or(0))),
        count: AtomicU64::new(0),
    });
    let idle = Arc::new(Arrivals {
        epoch,
        lags_ns: Mutex::new(Vec::new()),
        count: AtomicU64::new(0),
    });
    let any = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let (_, no_peers) = watch::channel(Vec::new());
    let (_b_events_tx, b_events) = mpsc::channel::<FlowEvent>(1);
    let b = FlowSync::start(
        FlowSyncConfig::new(any, key.clone(), 2),
        b_events,
        receiver_table.clone(),
        no_peers,
    )
    .await
    .expect("node B's flow sync");
    let (_, peers) = watch::channel(vec![b.local_addr()]);
    let (events_tx, events) = mpsc::channel::<FlowEvent>(1 << 20);
    let a = FlowSync::start(FlowSyncConfig::new(any, key, 1), events, idle, peers)
        .await
        .expect("node A's flow sync");

    let per_tick = usize::try_from(rate / 1000).unwrap_or(0).max(1);
    let ticks = u32::try_from(SPAN.as_millis()).unwrap_or(0);
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let start = Instant::now();
    let mut offered = 0u64;
    for _ in 0..ticks {
        interval.tick().await;
        let now = u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        for i in 0..per_tick {
            let event = FlowEvent {
                hash: now,
                pool: 0,
                element: u16::try_from(i % 3).unwrap_or(0),
                exact_bits: 64,
                ..FlowEvent::default()
            };
            if events_tx.try_send(event).is_ok() {
                offered += 1;
            }
        }
    }
    let offering = start.elapsed();
    // What is still in flight arrives within a few flush periods; wait for it, bounded.
    let deadline = Instant::now() + Duration::from_secs(1);
    while receiver_table.count.load(Ordering::Relaxed) < offered && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let delivered = receiver_table.count.load(Ordering::Relaxed);
    drop((a, b));
    let mut lags = std::mem::take(&mut *receiver_table.lags_ns.lock().expect("lock"));
    lags.sort_unstable();
    #[expect(clippy::cast_precision_loss, reason = "record counts below 2^52")]
    let rate = delivered as f64 / offering.as_secs_f64();
    Run {
        offered,
        delivered,
        rate,
        p50: percentile(&lags, 0.50),
        p99: percentile(&lags, 0.99),
        max: percentile(&lags, 1.0),
    }
}

/// Records per second one task sends as full datagrams over a plain loopback UDP pair.
fn baseline(records: u64) -> f64 {
    let rx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let tx = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    tx.connect(rx.local_addr().expect("addr")).expect("connect");
    rx.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let datagrams = records.div_ceil(PER_DATAGRAM as u64);
    let buf = [0x5a_u8; DATAGRAM];
    let reader = std::thread::spawn(move || {
        let mut got = 0u64;
        let mut b = [0u8; 2048];
        while rx.recv(&mut b).is_ok() {
            got += 1;
        }
        got
    });
    let start = Instant::now();
    for _ in 0..datagrams {
        let _ = tx.send(&buf);
    }
    let took = start.elapsed();
    let got = reader.join().expect("reader");
    #[expect(clippy::cast_precision_loss, reason = "record counts below 2^52")]
    let rate = (got * PER_DATAGRAM as u64) as f64 / took.as_secs_f64();
    rate
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    println!(
        "flow sync, node A to node B over loopback UDP (HMAC-SHA256, 83 records a datagram), {} ms per rate, median of {RUNS} runs\n",
        SPAN.as_millis()
    );
    // The floor: full datagrams over a plain loopback pair, as fast as one task sends them.
    let mut floors: Vec<f64> = (0..RUNS).map(|_| baseline(2_000_000)).collect();
    floors.sort_by(f64::total_cmp);
    let floor = floors[RUNS / 2];
    println!(
        "| offered flows/s | delivered flows/s | delivered / offered | lag p50 | lag p99 | lag max | delivered / plain UDP floor |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for rate in RATES {
        let mut runs = Vec::with_capacity(RUNS);
        for _ in 0..RUNS {
            runs.push(run(rate).await);
        }
        runs.sort_by(|a, b| a.rate.total_cmp(&b.rate));
        let m = runs[RUNS / 2];
        #[expect(clippy::cast_precision_loss, reason = "record counts below 2^52")]
        let share = m.delivered as f64 / m.offered.max(1) as f64;
        println!(
            "| {rate} | {:.0} | {:.3} | {} | {} | {} | {:.3} |",
            m.rate,
            share,
            ms(m.p50),
            ms(m.p99),
            ms(m.max),
            m.rate / floor,
        );
    }
    println!(
        "\nbaseline, same run: plain loopback UDP, full {DATAGRAM}-byte datagrams ({PER_DATAGRAM} records) from one task, no batching task, tag or check: {floor:.0} flows/s"
    );
    println!("\ntargets: at least 1,000,000 new flows/s replicated per node; lag p99 under 50 ms");
}
