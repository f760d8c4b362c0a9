//! A flood of the daemon's heartbeat port from a lab's client: what an attacker on the client
//! network can send, as fast as one thread can, bounded in time and count. The datagrams look
//! like heartbeats of the elements the daemon numbers first (ids are handed out in order), signed
//! with a wrong key: each one that reaches the receiver costs it a full MAC check.
//!
//! [`FloodLab`] is what the flood test and the heartbeat benchmark run it against: a daemon
//! whose pool has one element from the file and two self-registered ones whose agents send
//! heartbeats every [`INTERVAL_MS`].

use std::{
    collections::BTreeMap,
    net::{SocketAddr, UdpSocket},
    path::Path,
    time::{Duration, Instant, SystemTime},
};

use vnfpool_daemon::heartbeat::{self, Key};

use crate::{
    daemon::{Daemon, Places, role},
    lab::{Lab, TCP_PORT, UDP_PORT},
    registration::{Agent, HEARTBEAT_PORT, Parties, gateway},
    scrape,
};

/// The pool's heartbeat interval and misses: a self-registered element is failed after 15 ms
/// of silence.
pub const INTERVAL_MS: u32 = 3;
pub const MISSES: u32 = 5;
/// Agents sending heartbeats.
pub const AGENTS: usize = 2;

/// No flood sends more than this many datagrams, whatever its duration.
pub const MAX_DATAGRAMS: u64 = 50_000_000;

/// What a flood sent.
#[derive(Debug, Clone, Copy)]
pub struct Flood {
    /// Datagrams the kernel took from the sender.
    pub sent: u64,
    /// How long it ran.
    pub elapsed: Duration,
}

impl Flood {
    /// Datagrams per second.
    #[must_use]
    #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
    pub fn rate(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64()
    }
}

/// Floods `to` from the lab's client namespace for `duration` (at most [`MAX_DATAGRAMS`]).
#[must_use]
pub fn heartbeat_port(lab: &Lab, to: SocketAddr, duration: Duration) -> Flood {
    let from = SocketAddr::new(lab.client_addr.into(), 0);
    lab.client.run(move || {
        // The attacker's CPU is not the daemon's: on a lab machine of two CPUs the sender
        // yields to everything else (the program's work runs in softirq context regardless).
        rustix::process::setpriority_process(None, 19).expect("lowering the flood's priority");
        let socket = UdpSocket::bind(from).expect("binding the flood's socket");
        socket.connect(to).expect("connecting the flood's socket");
        let now = heartbeat::unix_ns(SystemTime::now());
        let wrong = Key::from_bytes([0x5a; 32]);
        let junk: Vec<[u8; heartbeat::LEN]> = (1..=8)
            .map(|id| heartbeat::encode(id, now, now, &wrong))
            .collect();
        let start = Instant::now();
        let mut sent = 0u64;
        while sent < MAX_DATAGRAMS {
            // The clock is read once per 1,024 datagrams.
            if sent.is_multiple_of(1024) && start.elapsed() >= duration {
                break;
            }
            // A full queue (ENOBUFS) or an ICMP error of an earlier datagram: go on.
            if socket.send(&junk[(sent % 8) as usize]).is_ok() {
                sent += 1;
            }
        }
        Flood {
            sent,
            elapsed: start.elapsed(),
        }
    })
}

/// A daemon with [`AGENTS`] self-registered elements, every element active.
pub struct FloodLab {
    // Dropped in this order: agents, daemon, lab, files.
    pub agents: Vec<Agent>,
    pub daemon: Daemon,
    pub lab: Lab,
    pub parties: Parties,
    pub places: Places,
}

/// What happened while [`FloodLab::measure`] ran.
#[derive(Debug, Clone, Copy)]
pub struct Measured {
    /// The flood (nothing sent when it was not flooded).
    pub flood: Flood,
    /// Datagrams the program dropped as not from a registered element.
    pub refused: f64,
    /// Heartbeats the daemon accepted.
    pub accepted: f64,
    /// Datagrams the verifier rejected (flood datagrams that reached the socket).
    pub rejected: f64,
    /// Heartbeats the agents sent in the time, about.
    pub expected: f64,
    /// Failovers.
    pub failovers: f64,
}

impl FloodLab {
    /// Starts it with the daemon binary `bin`; returns once every element is active.
    #[must_use]
    pub fn start(bin: &Path) -> Self {
        let (places, parties) = (Places::new(), Parties::new());
        let lab = Lab::new(1 + AGENTS);
        let text = format!(
            "{}{}pools:\n  - name: dns\n    vip: {}\n    ports: [{UDP_PORT}]\n    protocol: udp\n    ring_size: 251\n    redundancy: {{ model: active-active }}\n    health: {{ check: tcp, port: {TCP_PORT}, interval: 10ms, timeout: 50ms, rise: 2, fall: 3 }}\n    heartbeat: {{ interval: {INTERVAL_MS}ms, misses: {MISSES} }}\n{}",
            places.daemon_section(&lab),
            parties.api_section(&lab, &places),
            lab.vip,
            Places::elements(&lab, &[100]),
        );
        std::fs::write(places.config(), text).expect("config");
        let mut daemon = Daemon::start_with(bin, &lab, &places, &["--log-format", "json"]);
        let mut agents: Vec<Agent> = (1..=AGENTS)
            .map(|i| Agent::start(bin, &lab, i, &places, &parties, "dns", ""))
            .collect();
        for agent in &mut agents {
            agent.wait_registered(Duration::from_secs(10));
        }
        let names: Vec<String> = lab.elements.iter().map(|e| e.name.clone()).collect();
        daemon.wait_until("every element active", Duration::from_secs(10), |s| {
            names.iter().all(|e| role(s, "dns", e) == Some("active"))
        });
        Self {
            agents,
            daemon,
            lab,
            parties,
            places,
        }
    }

    /// Floods the heartbeat port at the host's address on the client's link (where the program
    /// runs) for `duration`, or, without `flood`, only waits as long; what the daemon counted
    /// meanwhile.
    #[must_use]
    #[expect(clippy::cast_precision_loss, reason = "a handful of agents")]
    pub fn measure(&self, duration: Duration, flood: bool) -> Measured {
        let before = scrape::metrics(&self.lab.host);
        let sent = if flood {
            let target = SocketAddr::new(gateway(self.lab.client_addr).into(), HEARTBEAT_PORT);
            heartbeat_port(&self.lab, target, duration)
        } else {
            let start = Instant::now();
            #[expect(
                clippy::disallowed_methods,
                reason = "the quiet baseline lasts as long as a flood"
            )]
            std::thread::sleep(duration);
            Flood {
                sent: 0,
                elapsed: start.elapsed(),
            }
        };
        let after = scrape::metrics(&self.lab.host);
        let delta = |family: &str, label: &str| sum(&after, family, label) - sum(&before, family, label);
        let accepted = delta("vnfpool_heartbeats_total", "result=\"accepted\"");
        Measured {
            flood: sent,
            refused: delta("vnfpool_dataplane_reason_packets_total", "heartbeat_refused"),
            accepted,
            rejected: delta("vnfpool_heartbeats_total", "") - accepted,
            expected: AGENTS as f64 * sent.elapsed.as_secs_f64() * 1e3 / f64::from(INTERVAL_MS),
            failovers: delta("vnfpool_failovers_total", ""),
        }
    }

    /// The daemon's and the agents' logs.
    #[must_use]
    pub fn logs(&self) -> String {
        let mut all = self.daemon.log_text();
        for agent in &self.agents {
            all.push('\n');
            all.push_str(&agent.log_text());
        }
        all
    }
}

/// The sum of every sample of `family` (a metric name without labels) whose series contains
/// `label` (empty: all).
fn sum(samples: &BTreeMap<String, f64>, family: &str, label: &str) -> f64 {
    samples
        .iter()
        .filter(|(series, _)| series.split('{').next() == Some(family) && series.contains(label))
        .map(|(_, v)| v)
        .sum()
}
