//! Control-plane load on a lab daemon, all at once: registrations whose addresses never
//! resolve (each waits out the one-second neighbour timeout), a `/metrics` scrape loop, and a
//! reload loop on the control socket. What the failover tests and benchmark run a failover
//! under; every loop is bounded and stops when the load is dropped.

use std::{
    net::SocketAddr,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use vnfpool_daemon::{
    api::client::Client,
    control::{self, Request, Response},
};

use crate::{
    lab::Lab,
    netns::{Background, Stop},
    registration::{API_PORT, Parties},
    scrape,
};

/// Registrations sent at once.
pub const REGISTRATIONS: usize = 50;
/// Time between two scrapes (200 per second).
pub const SCRAPE_EVERY: Duration = Duration::from_millis(5);
/// Time between two reloads.
pub const RELOAD_EVERY: Duration = Duration::from_millis(100);
/// No loop runs longer than this, whatever happens to the test.
const LONGEST: Duration = Duration::from_mins(1);

/// What the load did.
#[derive(Debug, Default)]
pub struct Counts {
    pub scrapes_ok: AtomicU64,
    pub scrapes_failed: AtomicU64,
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
    /// Registrations answered…
    pub registrations_answered: AtomicU64,
    /// …of which refused as unprocessable (422: their addresses do not resolve).
    pub registrations_refused: AtomicU64,
}

impl Counts {
    fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// One line for a report.
    #[must_use]
    pub fn summary(&self) -> String {
        format!(
            "{} scrapes ({} failed), {} reloads ({} failed), {} of {REGISTRATIONS} registrations answered ({} refused)",
            self.scrapes_ok.load(Ordering::Relaxed),
            self.scrapes_failed.load(Ordering::Relaxed),
            self.reloads_ok.load(Ordering::Relaxed),
            self.reloads_failed.load(Ordering::Relaxed),
            self.registrations_answered.load(Ordering::Relaxed),
            self.registrations_refused.load(Ordering::Relaxed),
        )
    }
}

/// The load, running; dropping it stops every loop.
pub struct Load {
    pub counts: Arc<Counts>,
    _threads: Vec<Background>,
}

/// A loop's clock: each round starts `every` after the previous one was due (not after it
/// ended), so the rate holds whatever a round costs. `false` once `stop` says so or the loop
/// has run too long.
struct Every {
    period: Duration,
    next: Instant,
    started: Instant,
}

impl Every {
    fn new(period: Duration) -> Self {
        let now = Instant::now();
        Self {
            period,
            next: now,
            started: now,
        }
    }

    #[expect(
        clippy::disallowed_methods,
        reason = "paces load on a real daemon in real time"
    )]
    fn tick(&mut self, stop: &Stop) -> bool {
        self.next += self.period;
        if let Some(wait) = self.next.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
        !stop.stopped() && self.started.elapsed() < LONGEST
    }
}

impl Load {
    /// Starts the load on the daemon of `lab` whose control socket is `socket` and whose API
    /// trusts `parties` (`CN=agent-e1` registers: an element role). The registrations use
    /// addresses on e1's link that nothing answers.
    #[must_use]
    pub fn start(lab: &Lab, parties: &Parties, socket: &Path) -> Self {
        let counts = Arc::new(Counts::default());
        let mut threads = Vec::new();

        let c = Arc::clone(&counts);
        threads.push(lab.host.spawn("scrape loop", move |stop| {
            let addr: SocketAddr = scrape::METRICS.parse().expect("address");
            let mut every = Every::new(SCRAPE_EVERY);
            while every.tick(stop) {
                match scrape::get_here(addr, "/metrics") {
                    Ok((200, _)) => Counts::add(&c.scrapes_ok),
                    _ => Counts::add(&c.scrapes_failed),
                }
            }
        }));

        let (c, socket) = (Arc::clone(&counts), socket.to_owned());
        threads.push(lab.host.spawn("reload loop", move |stop| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let mut every = Every::new(RELOAD_EVERY);
            while every.tick(stop) {
                match rt.block_on(control::request(&socket, &Request::Reload)) {
                    Ok(Response::Ok { .. }) => Counts::add(&c.reloads_ok),
                    _ => Counts::add(&c.reloads_failed),
                }
            }
        }));

        let (cert, key) = parties.ca.issue("agent-e1", &[]);
        let ca = parties.ca.pem();
        let [a, b, x, _] = lab.elements[0].addr.octets();
        let c = Arc::clone(&counts);
        threads.push(lab.host.spawn("registrations", move |_| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let client = Client::new(
                SocketAddr::from(([127, 0, 0, 1], API_PORT)),
                &ca,
                Some((&cert, &key)),
            )
            .expect("client");
            let calls = (0..REGISTRATIONS).map(|i| {
                let body = format!("{{\"address\": \"{a}.{b}.{x}.{}\"}}", 100 + i);
                let path = format!("/v1/pools/dns/elements/silent{i}");
                let (client, c) = (&client, &c);
                async move {
                    if let Ok((status, _)) = client.call("PUT", &path, &body).await {
                        Counts::add(&c.registrations_answered);
                        if status.as_u16() == 422 {
                            Counts::add(&c.registrations_refused);
                        }
                    }
                }
            });
            rt.block_on(async {
                let _ = tokio::time::timeout(LONGEST, futures_util::future::join_all(calls)).await;
            });
        }));
        Self {
            counts,
            _threads: threads,
        }
    }

    /// Waits until every registration is answered (each after its one-second neighbour
    /// timeout).
    #[expect(clippy::disallowed_methods, reason = "polls a real daemon in real time")]
    pub fn wait_until_answered(&self) {
        let waited = Instant::now();
        while self.counts.registrations_answered.load(Ordering::Relaxed) < REGISTRATIONS as u64 {
            assert!(
                waited.elapsed() < Duration::from_secs(20),
                "registrations unanswered: {}",
                self.counts.summary()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the load is on: every registration waits for its address (the daemon's
    /// `vnfpool_changes_resolving`), and scrapes and reloads are answered.
    #[expect(clippy::disallowed_methods, reason = "polls a real daemon in real time")]
    pub fn wait_until_on(&self, lab: &Lab) {
        let on = Instant::now();
        loop {
            let resolving = scrape::metrics(&lab.host)
                .get("vnfpool_changes_resolving")
                .copied()
                .unwrap_or_default();
            if resolving >= f64::from(u32::try_from(REGISTRATIONS).expect("small"))
                && self.counts.reloads_ok.load(Ordering::Relaxed) >= 1
                && self.counts.scrapes_ok.load(Ordering::Relaxed) >= 10
            {
                return;
            }
            assert!(
                on.elapsed() < Duration::from_secs(10),
                "load never started ({resolving} resolving): {}",
                self.counts.summary()
            );
            thread::sleep(Duration::from_millis(5));
        }
    }
}
