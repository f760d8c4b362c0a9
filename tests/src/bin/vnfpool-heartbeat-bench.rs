//! Heartbeats verified per second on one core, printed as tables. Run through `cargo xtask
//! bench`; figures are recorded in BENCHMARKS.md.
//!
//! 1. `Verifier::verify` alone over pre-encoded heartbeats of 1,000 registered elements (a fresh
//!    verifier per sample, so that every heartbeat is accepted), against the HMAC-SHA256 of the
//!    same signed bytes computed alone with the element's keyed state (the cryptography any
//!    verification must do), measured in turns in the same run.
//! 2. End to end on loopback: a sender thread signs and sends heartbeats of 1,000 elements as
//!    fast as it can; `heartbeat::udp::Receiver` on a single-threaded runtime verifies them and
//!    a consumer task on the same thread counts its events. Baseline: the same batched receive
//!    loop that only counts datagrams, measured in turns with it. Besides the rates, the CPU time
//!    of the receiving thread gives what one fully busy core would verify.
//! 3. A flood of the heartbeat port in a lab (`vnfpool_tests::flood`): the daemon with two
//!    self-registered elements sending heartbeats every 3 ms, while the client floods the port
//!    as fast as one thread can. Baseline: the same time without the flood, in turns. What the
//!    program dropped, what reached the verifier, the heartbeats accepted and the failovers.

use std::{
    hint::black_box,
    io::IoSlice,
    net::{Ipv4Addr, SocketAddr, UdpSocket as StdUdpSocket},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    thread,
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, Result};
use hmac::{Hmac, KeyInit as _, Mac as _};
use rustix::{
    net::{MMsgHdr, SendAncillaryBuffer, SendFlags, sendmmsg},
    time::{ClockId, clock_gettime},
};
use sha2::Sha256;
use tokio::{net::UdpSocket, sync::mpsc};
use vnfpool_daemon::heartbeat::{
    Clocks, DEFAULT_SKEW, Key, LEN, Signer, Verifier,
    udp::{BATCH, BUF, Receiver, receive_many},
    unix_ns,
};

const ELEMENTS: u64 = 1_000;
/// Element ids: registration ids need not be small or dense.
const FIRST_ID: u64 = 0x5eed_0000_0000;
/// Heartbeats per element per sample of the pure measurement.
const ROUNDS: u64 = 100;
const SAMPLES: usize = 15;
const E2E_SAMPLES: usize = 7;
const E2E_WARMUP: Duration = Duration::from_millis(200);
const E2E_SAMPLE: Duration = Duration::from_secs(1);
const TARGET: f64 = 100_000.0;
/// Samples of the flood measurement, each flooded and quiet in turns.
const FLOOD_SAMPLES: usize = 3;
const FLOOD_SAMPLE: Duration = Duration::from_secs(3);
/// Datagrams per `sendmmsg` call of the sender.
const SEND_BATCH: usize = 64;
/// `SO_RCVBUF` of both receiving sockets (the kernel caps it at `net.core.rmem_max`): room for
/// the bursts that arrive while the receiving thread waits for a CPU.
const RECEIVE_BUFFER: usize = 4 << 20;
/// Bytes covered by the tag (see the wire format).
const SIGNED: usize = 25;

type HmacSha256 = Hmac<Sha256>;

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

#[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
fn per_second(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

fn verdict(rate: f64) -> &'static str {
    if rate >= TARGET { "ok" } else { "missed" }
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let t = clock_gettime(ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap_or(0),
        u32::try_from(t.tv_nsec).unwrap_or(0),
    )
}

struct Pool {
    keys: Vec<Key>,
    signers: Vec<Signer>,
    verifier: Verifier,
}

fn pool() -> Result<Pool> {
    let keys = (0..ELEMENTS)
        .map(|_| Key::generate())
        .collect::<Result<Vec<_>, _>>()
        .context("generating keys")?;
    let signers = keys
        .iter()
        .zip(FIRST_ID..)
        .map(|(key, id)| Signer::new(id, key))
        .collect();
    let mut verifier = Verifier::new(DEFAULT_SKEW);
    for (key, id) in keys.iter().zip(FIRST_ID..) {
        verifier.register(id, key.clone(), Duration::ZERO);
    }
    Ok(Pool {
        keys,
        signers,
        verifier,
    })
}

struct Pure {
    verify: f64,
    hmac: f64,
    hmac_with_key: f64,
}

/// `Verifier::verify` over pre-encoded heartbeats against HMAC-SHA256 alone, in turns.
fn pure(pool: &Pool) -> Pure {
    let now = unix_ns(SystemTime::now());
    let datagrams: Vec<[u8; LEN]> = (1..=ROUNDS)
        .flat_map(|seq| pool.signers.iter().map(move |s| s.sign(seq, now)))
        .collect();
    let clocks = Clocks {
        wall: now,
        mono: Duration::ZERO,
    };
    let macs: Vec<HmacSha256> = pool
        .keys
        .iter()
        .map(|k| HmacSha256::new_from_slice(k.as_bytes()).expect("any key length"))
        .collect();
    let n = datagrams.len() as u64;
    let (mut verify, mut hmac, mut hmac_with_key) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..SAMPLES {
        let mut verifier = pool.verifier.clone();
        let start = Instant::now();
        let accepted = datagrams
            .iter()
            .filter(|d| verifier.verify(black_box(&d[..]), clocks).is_ok())
            .count();
        verify.push(per_second(n, start.elapsed()));
        assert_eq!(accepted as u64, n, "every pre-encoded heartbeat is accepted");

        let start = Instant::now();
        for (d, mac) in datagrams.iter().zip(macs.iter().cycle()) {
            let tag = mac.clone().chain_update(&black_box(d)[..SIGNED]).finalize();
            black_box(tag);
        }
        hmac.push(per_second(n, start.elapsed()));

        let start = Instant::now();
        for (d, key) in datagrams.iter().zip(pool.keys.iter().cycle()) {
            let tag = HmacSha256::new_from_slice(black_box(key.as_bytes()))
                .expect("any key length")
                .chain_update(&black_box(d)[..SIGNED])
                .finalize();
            black_box(tag);
        }
        hmac_with_key.push(per_second(n, start.elapsed()));
    }
    Pure {
        verify: median(verify),
        hmac: median(hmac),
        hmac_with_key: median(hmac_with_key),
    }
}

/// Where the sender thread sends: to the verifying receiver, to the counting baseline, or stop.
const TO_VERIFIER: usize = 0;
const TO_BASELINE: usize = 1;
const STOP: usize = 2;

/// One sample of the end-to-end run.
#[derive(Default, Clone, Copy)]
struct Sample {
    sent: f64,
    received: f64,
    accepted: f64,
    events: f64,
    busy: f64,
    per_core: f64,
}

fn medians(samples: &[Sample]) -> Sample {
    let m = |f: fn(&Sample) -> f64| median(samples.iter().map(f).collect());
    Sample {
        sent: m(|s| s.sent),
        received: m(|s| s.received),
        accepted: m(|s| s.accepted),
        events: m(|s| s.events),
        busy: m(|s| s.busy),
        per_core: m(|s| s.per_core),
    }
}

/// Signs and sends heartbeats of every element, round after round, to the socket `target`
/// names, until it says [`STOP`]. Each round is signed into one buffer and sent [`SEND_BATCH`]
/// datagrams per `sendmmsg` call, so that the sender's system calls do not limit the rate.
fn blast(signers: &[Signer], sockets: &[StdUdpSocket; 2], target: &AtomicUsize, sent: &AtomicU64) {
    let mut round = vec![[0_u8; LEN]; signers.len()];
    let mut controls: Vec<SendAncillaryBuffer> =
        (0..SEND_BATCH).map(|_| SendAncillaryBuffer::default()).collect();
    let mut seq = 0;
    loop {
        let to = target.load(Ordering::Relaxed);
        if to == STOP {
            return;
        }
        seq += 1;
        let now = unix_ns(SystemTime::now());
        for (datagram, signer) in round.iter_mut().zip(signers) {
            *datagram = signer.sign(seq, now);
        }
        let mut count = 0;
        for chunk in round.chunks(SEND_BATCH) {
            let iovs: Vec<[IoSlice<'_>; 1]> = chunk.iter().map(|d| [IoSlice::new(d)]).collect();
            let mut msgs: Vec<MMsgHdr<'_>> = iovs
                .iter()
                .zip(controls.iter_mut())
                .map(|(iov, control)| MMsgHdr::new(iov, control))
                .collect();
            let mut at = 0;
            while at < msgs.len() {
                match sendmmsg(&sockets[to], &mut msgs[at..], SendFlags::empty()) {
                    Ok(n) => at += n,
                    Err(_) => break,
                }
            }
            count += at as u64;
        }
        sent.fetch_add(count, Ordering::Relaxed);
    }
}

/// The baseline receiver: the same batched, non-blocking receive loop as the verifying one
/// (`recvmmsg`), counting datagrams and nothing else.
async fn count_only(socket: UdpSocket, received: Arc<AtomicU64>) -> std::io::Result<()> {
    let mut bufs = [[0_u8; BUF]; BATCH];
    let mut lens = [0_usize; BATCH];
    let mut from = [None; BATCH];
    loop {
        socket.readable().await?;
        match socket.try_io(tokio::io::Interest::READABLE, || {
            receive_many(&socket, &mut bufs, &mut lens, &mut from)
        }) {
            Ok(n) => {
                black_box(&bufs[..n]);
                received.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}

struct EndToEnd {
    verified: Sample,
    baseline: Sample,
    rejected: u64,
    events_dropped: u64,
}

#[expect(
    clippy::too_many_lines,
    reason = "one measurement: set-up, samples in turns, tear-down"
)]
fn end_to_end(pool: &Pool) -> Result<EndToEnd> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("runtime")?;
    runtime.block_on(async {
        let localhost = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let verified_socket = UdpSocket::bind(localhost).await.context("binding")?;
        let baseline_socket = UdpSocket::bind(localhost).await.context("binding")?;
        for socket in [&verified_socket, &baseline_socket] {
            socket2::SockRef::from(socket)
                .set_recv_buffer_size(RECEIVE_BUFFER)
                .context("setting the receive buffer")?;
        }
        let baseline_addr = baseline_socket.local_addr()?;
        let verifier = Arc::new(Mutex::new(pool.verifier.clone()));
        let receiver = Receiver::new(
            verified_socket,
            Arc::clone(&verifier),
            tokio::time::Instant::now(),
        );
        let verified_addr = receiver.local_addr()?;
        let stats = receiver.stats();
        let (tx, mut rx) = mpsc::channel(65_536);
        let serving = tokio::spawn(async move { receiver.serve(&tx).await });
        let events = Arc::new(AtomicU64::new(0));
        let consumer = tokio::spawn({
            let events = Arc::clone(&events);
            async move {
                let mut batch = Vec::with_capacity(1024);
                while rx.recv_many(&mut batch, 1024).await > 0 {
                    events.fetch_add(batch.len() as u64, Ordering::Relaxed);
                    batch.clear();
                }
            }
        });
        let counted = Arc::new(AtomicU64::new(0));
        let counting = tokio::spawn(count_only(baseline_socket, Arc::clone(&counted)));

        let target = Arc::new(AtomicUsize::new(TO_VERIFIER));
        let sent = Arc::new(AtomicU64::new(0));
        let sockets = [verified_addr, baseline_addr].map(|to| {
            let s = StdUdpSocket::bind(localhost).expect("binding the sender");
            s.connect(to).expect("connecting the sender");
            s
        });
        let sender = thread::spawn({
            let signers = pool.signers.clone();
            let (target, sent) = (Arc::clone(&target), Arc::clone(&sent));
            move || blast(&signers, &sockets, &target, &sent)
        });

        let accepted = || verifier.lock().expect("verifier").counters().accepted;
        let mut with_verifier = Vec::new();
        let mut counting_only = Vec::new();
        for _ in 0..E2E_SAMPLES {
            for to in [TO_VERIFIER, TO_BASELINE] {
                target.store(to, Ordering::Relaxed);
                tokio::time::sleep(E2E_WARMUP).await;
                let read = || {
                    (
                        Instant::now(),
                        thread_cpu(),
                        sent.load(Ordering::Relaxed),
                        stats.datagrams() + counted.load(Ordering::Relaxed),
                        accepted(),
                        events.load(Ordering::Relaxed),
                    )
                };
                let (t0, cpu0, sent0, recv0, acc0, ev0) = read();
                tokio::time::sleep(E2E_SAMPLE).await;
                let (t1, cpu1, sent1, recv1, acc1, ev1) = read();
                let wall = t1 - t0;
                let cpu = cpu1.saturating_sub(cpu0);
                let processed = if to == TO_VERIFIER {
                    acc1 - acc0
                } else {
                    recv1 - recv0
                };
                let sample = Sample {
                    sent: per_second(sent1 - sent0, wall),
                    received: per_second(recv1 - recv0, wall),
                    accepted: per_second(acc1 - acc0, wall),
                    events: per_second(ev1 - ev0, wall),
                    busy: cpu.as_secs_f64() / wall.as_secs_f64(),
                    per_core: per_second(processed, cpu),
                };
                if to == TO_VERIFIER {
                    with_verifier.push(sample);
                } else {
                    counting_only.push(sample);
                }
            }
        }
        target.store(STOP, Ordering::Relaxed);
        tokio::task::spawn_blocking(move || sender.join())
            .await
            .context("joining the sender")?
            .map_err(|_| anyhow::anyhow!("the sender thread panicked"))?;
        serving.abort();
        counting.abort();
        let _ = consumer.await;
        let counters = verifier.lock().expect("verifier").counters();
        Ok(EndToEnd {
            verified: medians(&with_verifier),
            baseline: medians(&counting_only),
            rejected: counters.rejected_total(),
            events_dropped: stats.events_dropped(),
        })
    })
}

fn main() -> Result<()> {
    let pool = pool()?;
    let pure = pure(&pool);
    let ns = |rate: f64| 1e9 / rate;
    println!(
        "heartbeat verification, {ELEMENTS} registered elements, {} pre-encoded heartbeats per sample, median of {SAMPLES}\n",
        ELEMENTS * ROUNDS
    );
    println!("| measure | heartbeats/s | ns each | time vs HMAC alone | target |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| `Verifier::verify` (lookup, HMAC check, sequence, window, counters) | {:.0} | {:.0} | {:.2} | 100,000/s {} |",
        pure.verify,
        ns(pure.verify),
        pure.hmac / pure.verify,
        verdict(pure.verify)
    );
    println!(
        "| baseline: HMAC-SHA256 of the 25 signed bytes, keyed state precomputed | {:.0} | {:.0} | 1.00 | |",
        pure.hmac,
        ns(pure.hmac)
    );
    println!(
        "| for reference: HMAC-SHA256 keyed from the raw key each time | {:.0} | {:.0} | {:.2} | |",
        pure.hmac_with_key,
        ns(pure.hmac_with_key),
        pure.hmac / pure.hmac_with_key
    );

    let e2e = end_to_end(&pool)?;
    let (v, b) = (e2e.verified, e2e.baseline);
    println!(
        "\nend to end on 127.0.0.1: one sender thread, the receiver on a single-threaded runtime, {} s per sample, median of {E2E_SAMPLES}\n",
        E2E_SAMPLE.as_secs_f64()
    );
    println!(
        "| receiver | sent/s | received/s | accepted/s | receiving thread busy | per busy core-second | vs baseline | target (accepted/s) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| `heartbeat::udp::Receiver` (verify, record, event) | {:.0} | {:.0} | {:.0} | {:.0}% | {:.0} | {:.2} | 100,000/s {} |",
        v.sent,
        v.received,
        v.accepted,
        v.busy * 100.0,
        v.per_core,
        v.per_core / b.per_core,
        verdict(v.accepted)
    );
    println!(
        "| baseline: the same batched receive loop, counting only | {:.0} | {:.0} | | {:.0}% | {:.0} | 1.00 | |",
        b.sent,
        b.received,
        b.busy * 100.0,
        b.per_core
    );
    println!(
        "\nevents/s reported {:.0}; events dropped (channel full) {}; heartbeats rejected {} (all were valid)",
        v.events, e2e.events_dropped, e2e.rejected
    );
    flood_table();
    Ok(())
}

/// Section 3: the heartbeat port flooded from the lab's client, against the same time quiet.
fn flood_table() {
    use vnfpool_tests::flood::{AGENTS, FloodLab, INTERVAL_MS, MISSES};
    let lab = FloodLab::start(&vnfpool_tests::sibling_binary("vnfpool-under-test"));
    let (mut flooded, mut quiet) = (Vec::new(), Vec::new());
    for _ in 0..FLOOD_SAMPLES {
        flooded.push(lab.measure(FLOOD_SAMPLE, true));
        quiet.push(lab.measure(FLOOD_SAMPLE, false));
    }
    let per_s = |v: f64, m: &vnfpool_tests::flood::Measured| v / m.flood.elapsed.as_secs_f64();
    let row = |label: &str, samples: &[vnfpool_tests::flood::Measured], baseline: f64| {
        let offered = median(samples.iter().map(|m| m.flood.rate()).collect());
        let refused = median(samples.iter().map(|m| per_s(m.refused, m)).collect());
        let reached = median(samples.iter().map(|m| per_s(m.rejected, m)).collect());
        let accepted = median(samples.iter().map(|m| m.accepted / m.expected).collect());
        let failovers: f64 = samples.iter().map(|m| m.failovers).sum();
        println!(
            "| {label} | {offered:.0} | {refused:.0} | {reached:.0} | {:.1}% | {:.3} | {failovers} |",
            accepted * 100.0,
            if baseline > 0.0 { accepted / baseline } else { 1.0 }
        );
    };
    println!(
        "\nthe heartbeat port flooded from the lab's client ({AGENTS} agents, a heartbeat every {INTERVAL_MS} ms, {MISSES} misses allowed), {} s per sample, flooded and quiet in turns, median of {FLOOD_SAMPLES}\n",
        FLOOD_SAMPLE.as_secs_f64()
    );
    println!(
        "| run | flood offered/s | dropped by the program/s | reached the verifier/s | heartbeats accepted (of sent) | vs quiet | failovers (all samples) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let baseline = median(quiet.iter().map(|m| m.accepted / m.expected).collect());
    row("flood of well-formed heartbeats, wrong key", &flooded, baseline);
    row("baseline: quiet", &quiet, 0.0);
}
