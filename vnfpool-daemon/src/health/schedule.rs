//! The probe schedule: one task per element, probes started on a fixed clock.
//!
//! Each element's task starts a probe every `interval` (`tokio::time::interval`, missed ticks
//! skipped) and keeps at most one probe in flight. The elements of a pool are spread over the
//! interval in groups (see [`phases`]); every element's first probe goes at once. A probe runs
//! concurrently with the clock, so a slow probe does not shift the next start.
//!
//! **A tick that finds the previous probe still running is reported as a failure**
//! ([`ProbeError::Overrun`], `at` = that tick), and no second probe is started. The previous
//! probe still reports its own outcome when it ends (bounded by `timeout`). This keeps one report
//! per interval whatever the timeout, so `fall` consecutive failures take `interval × fall` to
//! accumulate, as `HealthSpec::worst_detection` and DESIGN.md ("Detection time = interval x
//! fall") count them. Skipping the tick instead would let a hung element (say a frozen one behind
//! an HTTP check with a 1 s timeout and a 10 ms interval) take `timeout × fall` to detect. The
//! price: with `timeout > interval`, an element that answers slower than `interval` gets a
//! failure for each interval it overran, followed by the success of the slow probe.
//!
//! A probe ending at the very instant of a tick is taken first, so that a probe as long as the
//! interval is not an overrun.
//!
//! **A probe much later than the element usually answers is reported as a failure at once**
//! ([`ProbeError::Late`]), once per probe, without waiting for the next tick: when it has run
//! for [`LATE_FACTOR`] times the element's smoothed latency of successful probes (at least
//! [`MIN_LATE`], at most half the interval and never beyond `timeout`). A frozen element is
//! silent, and this is what tells it from a slow one one interval earlier: the `fall` failures
//! of a silent element then accumulate within `interval × (fall − 1)` of its first unanswered
//! probe. A slow element is not failed by it: its late probe still reports its success, which
//! ends the run of failures, and its smoothed latency grows to the new level within a few
//! probes. Until an element has answered once, only ticks count.

use std::{collections::HashMap, future::Future, net::IpAddr, pin::Pin, sync::Arc, time::Duration};

use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
    time::{self, Instant, MissedTickBehavior},
};

use super::{ElementRef, Outcome, ProbeError, check, error_chain};
use crate::model::spec::{CheckSpec, ElementSpec, HealthSpec};

/// `tokio::time::interval` panics on a zero period; config validation already requires 1 ms.
const MIN_INTERVAL: Duration = Duration::from_millis(1);
/// The probes of a pool start in groups this far apart (see [`phases`]).
pub const PHASE_STEP: Duration = Duration::from_millis(1);
/// A probe is late after this many times the element's smoothed latency…
pub const LATE_FACTOR: u32 = 4;
/// …and never before this long.
pub const MIN_LATE: Duration = Duration::from_millis(2);

/// What to probe, for one element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeTarget {
    /// Which element, in which incarnation: reports carry it back.
    pub element: ElementRef,
    pub name: String,
    pub address: IpAddr,
    pub check: CheckSpec,
    pub interval: Duration,
    pub timeout: Duration,
}

impl ProbeTarget {
    #[must_use]
    pub fn new(element: ElementRef, health: &HealthSpec, spec: &ElementSpec) -> Self {
        Self {
            element,
            name: spec.name.clone(),
            address: spec.address,
            check: health.check.clone(),
            interval: health.interval,
            timeout: health.timeout,
        }
    }
}

/// One probe's outcome, or one overrun tick's failure (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeReport {
    pub element: ElementRef,
    pub outcome: Outcome,
    /// When the probe started (for an overrun, the tick that found the previous one running).
    pub at: Instant,
}

type ProbeFuture = Pin<Box<dyn Future<Output = Outcome> + Send>>;
type ProbeFn = dyn Fn(Arc<ProbeTarget>) -> ProbeFuture + Send + Sync;

/// Spawns one prober task per target on the current runtime; each sends its reports on `tx`.
///
/// The tasks stop when `shutdown` becomes `true`, when its sender is dropped, or when `tx`'s
/// receiver is dropped; a probe in flight is then dropped (an exec child is killed). A full
/// channel holds the task back (no report is dropped) while still honouring `shutdown`.
#[must_use = "the tasks run until shutdown; keep the handles to wait for them"]
#[expect(
    clippy::needless_pass_by_value,
    reason = "owning them leaves the copies with the tasks only: the report channel closes when the last prober ends"
)]
pub fn spawn_probers(
    targets: Vec<ProbeTarget>,
    tx: mpsc::Sender<ProbeReport>,
    shutdown: watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    let probe: Arc<ProbeFn> = Arc::new(|target: Arc<ProbeTarget>| -> ProbeFuture {
        Box::pin(async move { check(&target.check, target.address, &target.name, target.timeout).await })
    });
    spawn_with(targets, &tx, &shutdown, &probe)
}

fn spawn_with(
    targets: Vec<ProbeTarget>,
    tx: &mpsc::Sender<ProbeReport>,
    shutdown: &watch::Receiver<bool>,
    probe: &Arc<ProbeFn>,
) -> Vec<JoinHandle<()>> {
    let start = Instant::now();
    let phases = phases(&targets);
    targets
        .into_iter()
        .zip(phases)
        .map(|(target, phase)| {
            tokio::spawn(run(
                Arc::new(target),
                start + phase,
                Arc::clone(probe),
                tx.clone(),
                shutdown.clone(),
            ))
        })
        .collect()
}

/// When each target's probe clock starts, after the probers start (a first probe goes at once
/// before it, see [`run`]): the elements of a pool spread evenly over its interval, in groups
/// [`PHASE_STEP`] apart (the k-th of n in group ⌊k·g/n⌋ of g = interval / step, at most n), so
/// that a pool's probes and their reports do not all come at the same instant, while those of
/// a group still share the wake-ups of the runtime and the controller.
fn phases(targets: &[ProbeTarget]) -> Vec<Duration> {
    let mut per_pool: HashMap<u32, u32> = HashMap::new();
    for t in targets {
        *per_pool.entry(t.element.pool).or_default() += 1;
    }
    let mut seen: HashMap<u32, u32> = HashMap::new();
    targets
        .iter()
        .map(|t| {
            let n = per_pool[&t.element.pool];
            let groups = u32::try_from(t.interval.as_nanos() / PHASE_STEP.as_nanos())
                .unwrap_or(u32::MAX)
                .clamp(1, n);
            let k = seen.entry(t.element.pool).or_default();
            let group =
                u32::try_from(u64::from(*k) * u64::from(groups) / u64::from(n)).expect("below groups");
            *k += 1;
            t.interval * group / groups
        })
        .collect()
}

struct InFlight {
    probe: ProbeFuture,
    started: Instant,
    /// When this probe counts as late (`None`: it never does, or it already did).
    late_at: Option<Instant>,
}

/// When a probe started at `started` becomes late, given the element's smoothed latency.
fn late_at(started: Instant, srtt: Option<Duration>, target: &ProbeTarget) -> Option<Instant> {
    let srtt = srtt?;
    let limit = (target.interval / 2).min(target.timeout);
    let after = (srtt * LATE_FACTOR).max(MIN_LATE);
    (after < limit).then(|| started + after)
}

/// Sleeps until `late` (when the in-flight probe becomes late, and how long it will have run
/// by then); never completes when `None`.
async fn until_late(late: Option<(Instant, Duration)>) -> Duration {
    match late {
        Some((at, running)) => {
            time::sleep_until(at).await;
            running
        }
        None => std::future::pending().await,
    }
}

async fn run(
    target: Arc<ProbeTarget>,
    first: Instant,
    probe: Arc<ProbeFn>,
    tx: mpsc::Sender<ProbeReport>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ticker = time::interval_at(first, target.interval.max(MIN_INTERVAL));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    // The first probe of every element goes at once, whatever its phase: the first round
    // decides every element's health as early as before the spread.
    let now = Instant::now();
    let mut in_flight: Option<InFlight> = (first > now).then(|| InFlight {
        probe: probe(Arc::clone(&target)),
        started: now,
        late_at: None,
    });
    // Smoothed latency of successful probes (an EWMA with weight 1/8, as TCP's SRTT).
    let mut srtt: Option<Duration> = None;
    loop {
        let late = in_flight
            .as_ref()
            .and_then(|f| f.late_at.map(|at| (at, at - f.started)));
        let (outcome, at) = tokio::select! {
            biased;
            _ = shutdown.wait_for(|&stop| stop) => return,
            finished = finish(&mut in_flight) => {
                if finished.0.ok {
                    let sample = finished.0.latency;
                    srtt = Some(srtt.map_or(sample, |s| s.saturating_sub(s / 8) + sample / 8));
                }
                finished
            }
            _ = ticker.tick() => {
                let now = Instant::now();
                if let Some(InFlight { started, .. }) = &in_flight {
                    let running = now - *started;
                    (Outcome::failure(running, error_chain(&ProbeError::Overrun { running })), now)
                } else {
                    let late_at = late_at(now, srtt, &target);
                    in_flight = Some(InFlight { probe: probe(Arc::clone(&target)), started: now, late_at });
                    continue;
                }
            }
            running = until_late(late) => {
                if let Some(f) = &mut in_flight {
                    f.late_at = None;
                }
                let expected = srtt.unwrap_or_default();
                (Outcome::failure(running, error_chain(&ProbeError::Late { running, expected })), Instant::now())
            }
        };
        let report = ProbeReport {
            element: target.element,
            outcome,
            at,
        };
        let sent = tokio::select! {
            biased;
            _ = shutdown.wait_for(|&stop| stop) => false,
            sent = tx.send(report) => sent.is_ok(),
        };
        if !sent {
            return;
        }
    }
}

/// Completes with the in-flight probe's outcome and start time, leaving `None`; never completes
/// when nothing is in flight.
async fn finish(in_flight: &mut Option<InFlight>) -> (Outcome, Instant) {
    let Some(InFlight { probe, started, .. }) = in_flight else {
        return std::future::pending().await;
    };
    let outcome = probe.as_mut().await;
    let started = *started;
    *in_flight = None;
    (outcome, started)
}

#[cfg(test)]
mod tests {
    use std::{
        net::Ipv4Addr,
        sync::atomic::{AtomicUsize, Ordering},
    };

    use tokio::net::TcpListener;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn target(interval: Duration, timeout: Duration, check: CheckSpec) -> ProbeTarget {
        ProbeTarget {
            element: ElementRef {
                pool: 3,
                slot: 7,
                generation: 1,
            },
            name: "e7".to_owned(),
            address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            check,
            interval,
            timeout,
        }
    }

    /// A probe that takes `latencies[i]` (the last one repeating) for its i-th run and succeeds.
    fn fake(latencies: &'static [u64]) -> Arc<ProbeFn> {
        let runs = Arc::new(AtomicUsize::new(0));
        Arc::new(move |_target: Arc<ProbeTarget>| -> ProbeFuture {
            let run = runs.fetch_add(1, Ordering::Relaxed);
            let latency = MS * u32::try_from(latencies[run.min(latencies.len() - 1)]).expect("small");
            Box::pin(async move {
                time::sleep(latency).await;
                Outcome::success(latency)
            })
        })
    }

    struct Probers {
        rx: mpsc::Receiver<ProbeReport>,
        stop: watch::Sender<bool>,
        tasks: Vec<JoinHandle<()>>,
        start: Instant,
    }

    fn start(target: ProbeTarget, probe: &Arc<ProbeFn>, capacity: usize) -> Probers {
        let (tx, rx) = mpsc::channel(capacity);
        let (stop, shutdown) = watch::channel(false);
        let start = Instant::now();
        let tasks = spawn_with(vec![target], &tx, &shutdown, probe);
        Probers {
            rx,
            stop,
            tasks,
            start,
        }
    }

    impl Probers {
        /// The next `n` reports as (ms after start, ok, latency ms).
        async fn next(&mut self, n: usize) -> Vec<(u128, bool, u128)> {
            let mut reports = Vec::new();
            for _ in 0..n {
                let report = self.rx.recv().await.expect("a report");
                assert_eq!((report.element.pool, report.element.slot), (3, 7));
                reports.push((
                    (report.at - self.start).as_millis(),
                    report.outcome.ok,
                    report.outcome.latency.as_millis(),
                ));
            }
            reports
        }

        async fn stop(self) {
            self.stop.send(true).expect("the probers listen");
            for task in self.tasks {
                time::timeout(Duration::from_secs(1), task)
                    .await
                    .expect("the prober stops at once")
                    .expect("the prober did not panic");
            }
        }
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn probes_start_on_a_fixed_schedule() {
        let mut probers = start(
            target(10 * MS, 5 * MS, CheckSpec::Tcp { port: 1 }),
            &fake(&[3]),
            16,
        );

        let reports = probers.next(10).await;

        let expected: Vec<_> = (0..10).map(|k| (k * 10, true, 3)).collect();
        assert_eq!(reports, expected);
        probers.stop().await;
    }

    #[test]
    fn a_pools_probes_start_in_groups_a_millisecond_apart() {
        let pool = |n: u32, interval: Duration| -> Vec<ProbeTarget> {
            (0..n)
                .map(|slot| ProbeTarget {
                    element: ElementRef {
                        pool: 1,
                        slot,
                        generation: 1,
                    },
                    ..target(interval, interval, CheckSpec::Tcp { port: 1 })
                })
                .collect()
        };
        let groups = |targets: &[ProbeTarget]| {
            let mut count = std::collections::BTreeMap::new();
            for phase in phases(targets) {
                *count.entry(phase.as_micros()).or_insert(0) += 1;
            }
            count.into_iter().collect::<Vec<_>>()
        };
        // 100 elements every 10 ms: ten groups of ten, 1 ms apart.
        let expected: Vec<(u128, i32)> = (0..10).map(|g| (g * 1000, 10)).collect();
        assert_eq!(groups(&pool(100, 10 * MS)), expected);
        // Fewer elements than milliseconds: each alone, evenly spread.
        assert_eq!(
            groups(&pool(4, 100 * MS)),
            [(0, 1), (25_000, 1), (50_000, 1), (75_000, 1)]
        );
        // An interval of 1 ms: one group.
        assert_eq!(groups(&pool(5, MS)), [(0, 5)]);
        // 1,000 elements every 100 ms: a hundred groups of ten.
        let phases = groups(&pool(1000, 100 * MS));
        assert_eq!(phases.len(), 100);
        assert!(phases.iter().all(|&(_, n)| n == 10), "{phases:?}");
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn the_elements_of_a_pool_are_spread_over_the_interval() {
        let (tx, mut rx) = mpsc::channel(64);
        let (stop, shutdown) = watch::channel(false);
        let start = Instant::now();
        // Four elements of pool 3 and one of pool 4, every 20 ms (the runtime's timer counts
        // whole milliseconds).
        let targets: Vec<ProbeTarget> = (0..5)
            .map(|slot| ProbeTarget {
                element: ElementRef {
                    pool: if slot < 4 { 3 } else { 4 },
                    slot,
                    generation: 1,
                },
                ..target(20 * MS, 5 * MS, CheckSpec::Tcp { port: 1 })
            })
            .collect();
        let tasks = spawn_with(targets, &tx, &shutdown, &fake(&[1]));
        let mut starts = Vec::new();
        for _ in 0..10 {
            let report = rx.recv().await.expect("a report");
            starts.push((report.element.slot, (report.at - start).as_micros()));
        }
        starts.sort_unstable();
        assert_eq!(
            starts,
            [
                // Every first probe at once, then each on its phase.
                (0, 0),
                (0, 20_000),
                (1, 0),
                (1, 5_000),
                (2, 0),
                (2, 10_000),
                (3, 0),
                (3, 15_000),
                (4, 0),
                (4, 20_000)
            ]
        );
        stop.send(true).expect("the probers listen");
        for task in tasks {
            task.await.expect("the prober did not panic");
        }
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_slow_probe_does_not_shift_the_schedule() {
        // 7 ms, then 9 ms, then 2 ms: starts stay on the 10 ms grid.
        let mut probers = start(
            target(10 * MS, 9 * MS, CheckSpec::Tcp { port: 1 }),
            &fake(&[7, 9, 2]),
            16,
        );

        let reports = probers.next(4).await;

        assert_eq!(
            reports,
            [(0, true, 7), (10, true, 9), (20, true, 2), (30, true, 2)]
        );
        probers.stop().await;
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_probe_ending_on_the_tick_is_not_an_overrun() {
        let mut probers = start(
            target(10 * MS, 10 * MS, CheckSpec::Tcp { port: 1 }),
            &fake(&[10]),
            16,
        );

        let reports = probers.next(5).await;

        let expected: Vec<_> = (0..5).map(|k| (k * 10, true, 10)).collect();
        assert_eq!(reports, expected);
        probers.stop().await;
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_tick_finding_the_previous_probe_running_reports_a_failure() {
        let mut probers = start(
            target(10 * MS, 100 * MS, CheckSpec::Tcp { port: 1 }),
            &fake(&[25]),
            16,
        );

        let reports = probers.next(6).await;

        // The probe started at 0 overruns the ticks at 10 and 20 and then reports its own
        // success; the next one starts at the tick of 30.
        assert_eq!(
            reports,
            [
                (10, false, 10),
                (20, false, 20),
                (0, true, 25),
                (40, false, 10),
                (50, false, 20),
                (30, true, 25)
            ]
        );
        probers.stop().await;
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_silent_element_is_late_long_before_the_next_tick() {
        // Answers in 1 ms three times, then never (a freeze): the fourth probe (at 30) is late
        // at 34 (4 x 1 ms), then the ticks of 40 and 50 find it still running.
        let mut probers = start(
            target(10 * MS, 100 * MS, CheckSpec::Tcp { port: 1 }),
            &fake(&[1, 1, 1, 1000]),
            16,
        );

        let reports = probers.next(6).await;

        assert_eq!(
            reports,
            [
                (0, true, 1),
                (10, true, 1),
                (20, true, 1),
                (34, false, 4),
                (40, false, 10),
                (50, false, 20)
            ]
        );
        probers.stop().await;
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_slow_answer_ends_the_run_its_lateness_started() {
        // A 6 ms answer after 1 ms ones is late at 4 ms, then reports its success; the smoothed
        // latency grows (to 1.6 ms), so 6 ms answers are no longer late (4 x 1.6 > half the
        // interval: only ticks count).
        let mut probers = start(
            target(10 * MS, 100 * MS, CheckSpec::Tcp { port: 1 }),
            &fake(&[1, 1, 6]),
            16,
        );

        let reports = probers.next(5).await;

        assert_eq!(
            reports,
            [
                (0, true, 1),
                (10, true, 1),
                (24, false, 4),
                (20, true, 6),
                (30, true, 6)
            ]
        );
        probers.stop().await;
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn overrun_detail_says_why() {
        let mut probers = start(
            target(10 * MS, 100 * MS, CheckSpec::Tcp { port: 1 }),
            &fake(&[15]),
            16,
        );

        let report = probers.rx.recv().await.expect("a report");

        assert_eq!(
            report.outcome.detail.as_deref(),
            Some("the previous probe is still running after 10ms")
        );
        probers.stop().await;
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn shutdown_stops_a_prober_in_a_probe_or_blocked_on_a_full_channel() {
        // In a probe: it would take an hour.
        let probers = start(
            target(10 * MS, 100 * MS, CheckSpec::Tcp { port: 1 }),
            &fake(&[3_600_000]),
            16,
        );
        time::sleep(5 * MS).await;
        probers.stop().await;

        // Blocked on send: nobody reads the one-slot channel.
        let probers = start(
            target(10 * MS, 5 * MS, CheckSpec::Tcp { port: 1 }),
            &fake(&[1]),
            1,
        );
        time::sleep(100 * MS).await;
        probers.stop().await;
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn dropping_the_shutdown_sender_or_the_receiver_stops_the_prober() {
        let Probers {
            rx: _rx,
            stop,
            mut tasks,
            ..
        } = start(
            target(10 * MS, 5 * MS, CheckSpec::Tcp { port: 1 }),
            &fake(&[1]),
            16,
        );
        drop(stop);
        time::timeout(Duration::from_secs(1), tasks.remove(0))
            .await
            .expect("stops")
            .expect("no panic");

        let Probers {
            rx,
            stop: _stop,
            mut tasks,
            ..
        } = start(
            target(10 * MS, 5 * MS, CheckSpec::Tcp { port: 1 }),
            &fake(&[1]),
            16,
        );
        drop(rx);
        time::timeout(Duration::from_secs(1), tasks.remove(0))
            .await
            .expect("stops")
            .expect("no panic");
    }

    /// Real sockets and real time: a TCP server probed every 10 ms for about 200 ms, then
    /// stopped. Bounds are loose because the machine may be busy; the paused-clock tests above
    /// pin the exact schedule.
    #[tokio::test(flavor = "current_thread")]
    async fn probes_a_real_server_every_10_ms_and_see_it_stop() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("binding a listener");
        let port = listener.local_addr().expect("listener address").port();
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                drop(stream);
            }
        });
        let (tx, mut rx) = mpsc::channel(64);
        let (stop, shutdown) = watch::channel(false);
        let started = Instant::now();
        let tasks = spawn_probers(
            vec![target(10 * MS, 50 * MS, CheckSpec::Tcp { port })],
            tx,
            shutdown,
        );

        let mut up = Vec::new();
        while let Ok(Some(report)) = time::timeout_at(started + 200 * MS, rx.recv()).await {
            up.push(report);
        }
        server.abort();
        let _ = server.await;
        let stopped = Instant::now();
        let mut down = Vec::new();
        while let Ok(Some(report)) = time::timeout_at(stopped + 100 * MS, rx.recv()).await {
            down.push(report);
        }
        stop.send(true).expect("the probers listen");
        for task in tasks {
            task.await.expect("the prober did not panic");
        }

        // A busy machine starts some probes late (the next one still starts on the grid, so a
        // short gap follows a long one): check the rate, and that nothing stalled.
        assert!((10..=21).contains(&up.len()), "{} reports in 200 ms", up.len());
        assert!(up.iter().all(|report| report.outcome.ok), "{up:#?}");
        let gaps: Vec<Duration> = up.windows(2).map(|pair| pair[1].at - pair[0].at).collect();
        assert!(gaps.iter().all(|gap| *gap < 100 * MS), "gaps {gaps:?}");
        let mean = gaps.iter().sum::<Duration>() / u32::try_from(gaps.len()).expect("few gaps");
        assert!(
            (8 * MS..=16 * MS).contains(&mean),
            "mean gap {mean:?} in {gaps:?}"
        );

        let after: Vec<_> = down.iter().filter(|report| report.at > stopped).collect();
        assert!(
            after.len() >= 3,
            "{} reports in the 100 ms after the stop",
            after.len()
        );
        assert!(after.iter().all(|report| !report.outcome.ok), "{after:#?}");
        let detail = after[0]
            .outcome
            .detail
            .as_deref()
            .expect("a failure has a detail");
        assert!(detail.contains("Connection refused"), "{detail}");
    }
}
