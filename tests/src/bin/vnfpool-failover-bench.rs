//! Failover as a client sees it, with the real daemon in the lab: the gap in answers to a UDP
//! request sent every millisecond, over repeated failovers of each kind (service stop, idle and
//! under control-plane load, link down, freeze of a probed element; link down and freeze of the host of an element that
//! registered itself and sends heartbeats every 3 ms), and the requests lost on fail-back and on
//! drain (what probing costs is `vnfpool-probe-bench`'s). Run through `cargo xtask bench`
//! (release build); figures go to BENCHMARKS.md. Every gap is also written to `failover-gaps.csv` and plotted in
//! `failover-gaps.svg`, in the repository's `docs/` or in the directory given as the only
//! argument.

use std::{
    fmt::Write as _,
    net::UdpSocket,
    path::{Path, PathBuf},
    time::Duration,
};

use vnfpool_daemon::control::{Request, Response};
use vnfpool_tests::{
    daemon::{Daemon, Places, role},
    lab::Lab,
    load::Load,
    plot::{Reference, Strip, write_failover_gaps_svg},
    registration::{Agent, Parties},
    service::ServiceProc,
    traffic::{around, exchange, gap},
};

const ROUNDS: usize = 20;
const PORT: u16 = 5354;
const INTERVAL_MS: u64 = 10;
const FALL: u64 = 3;
/// The target for the median gap of each kind of failure of a probed element.
const TARGET_MS: f64 = 35.0;
/// Heartbeats of a self-registered element: every 3 ms, failed after 3 missed.
const HEARTBEAT_MS: u64 = 3;
const MISSES: u64 = 3;
/// The target for the median gap when a self-registered element's host fails.
const AGENT_TARGET_MS: f64 = 12.0;
/// keepalived (VRRP version 3, 10 ms advertisements) in the same kind of lab (BENCHMARKS.md).
const KEEPALIVED_MS: f64 = 41.0;

#[derive(Clone, Copy, Debug)]
enum Kind {
    ServiceStop,
    /// The same while 50 registrations wait for addresses that never resolve, `/metrics` is
    /// scraped 200 times a second and the configuration reloaded every 100 ms
    /// (`vnfpool_tests::load`).
    ServiceStopUnderLoad,
    LinkDown,
    Freeze,
    /// The link of a self-registered element's host goes down (the link watcher sees it).
    AgentLinkDown,
    /// A self-registered element's host freezes: its agent and its service stop (only the
    /// silence of its heartbeats tells).
    AgentFreeze,
}

impl Kind {
    /// The health check that sees this failure: only a request/response check sees a freeze;
    /// a self-registered element has its heartbeats.
    fn check(self) -> &'static str {
        match self {
            Kind::ServiceStop | Kind::ServiceStopUnderLoad | Kind::LinkDown => "tcp",
            Kind::Freeze => "udp",
            Kind::AgentLinkDown | Kind::AgentFreeze => "heartbeat",
        }
    }

    fn is_agent(self) -> bool {
        matches!(self, Kind::AgentLinkDown | Kind::AgentFreeze)
    }

    fn target_ms(self) -> f64 {
        if self.is_agent() {
            AGENT_TARGET_MS
        } else {
            TARGET_MS
        }
    }
}

/// The pool; `check` is `tcp` (sees a stopped service or a dead link at once: RST or no route)
/// or `udp` (a request/response check, the only kind that sees a frozen process).
fn config(lab: &Lab, places: &Places, check: &str) -> String {
    let extra = if check == "udp" { ", payload: \"ping\"" } else { "" };
    format!(
        "{}pools:\n  - name: dns\n    vip: {}\n    ports: [{PORT}]\n    protocol: udp\n    redundancy: {{ model: active-standby, preempt: true }}\n    health: {{ check: {check}, port: {PORT}{extra}, interval: {INTERVAL_MS}ms, timeout: 50ms, rise: 2, fall: {FALL} }}\n{}",
        places.daemon_section(lab),
        lab.vip,
        Places::elements(lab, &[300, 200, 100]),
    )
}

/// The pool with e1 left out, to register itself (priority 300, so it is the active) with
/// heartbeats every [`HEARTBEAT_MS`], [`MISSES`] allowed; e2 and e3 probed over TCP as usual.
fn agent_config(lab: &Lab, places: &Places, parties: &Parties) -> String {
    format!(
        "{}{}pools:\n  - name: dns\n    vip: {}\n    ports: [{PORT}]\n    protocol: udp\n    redundancy: {{ model: active-standby, preempt: true }}\n    health: {{ check: tcp, port: {PORT}, interval: {INTERVAL_MS}ms, timeout: 50ms, rise: 2, fall: {FALL} }}\n    heartbeat: {{ interval: {HEARTBEAT_MS}ms, misses: {MISSES} }}\n    registration: {{ max_priority: 300 }}\n{}",
        places.daemon_section(lab),
        parties.api_section(lab, places),
        lab.vip,
        Places::some_elements(lab, &[(1, 200, ""), (2, 100, "")]),
    )
}

/// Stops (or continues) every process of `pids` at once, as a host that freezes (or thaws):
/// signals from this process, microseconds apart, not one `kill` command after another.
fn freeze(pids: &[u32], stop: bool) {
    use rustix::process::{Pid, Signal, kill_process};
    let signal = if stop { Signal::STOP } else { Signal::CONT };
    for &pid in pids {
        kill_process(Pid::from_raw(pid.cast_signed()).expect("a pid"), signal).expect("signal");
    }
}

fn client(lab: &Lab) -> UdpSocket {
    lab.in_client(|| {
        let s = UdpSocket::bind((lab.client_addr, 0)).expect("bind");
        s.connect((lab.vip, PORT)).expect("connect");
        s
    })
}

struct Round {
    gap: Duration,
    failback_lost: usize,
}

fn rounds(kind: Kind, daemon_bin: &Path, service_bin: &Path) -> Vec<Round> {
    let lab = Lab::new(3);
    let places = Places::new();
    let mut services: Vec<ServiceProc> = (0..3)
        .map(|i| ServiceProc::start(service_bin, &lab, i, PORT))
        .collect();
    let parties = Parties::new();
    let text = match kind {
        _ if kind.is_agent() => agent_config(&lab, &places, &parties),
        // The same pool, with the API that the registrations of the load call.
        Kind::ServiceStopUnderLoad => config(&lab, &places, kind.check()).replacen(
            "pools:\n",
            &format!("{}pools:\n", parties.api_section(&lab, &places)),
            1,
        ),
        _ => config(&lab, &places, kind.check()),
    };
    std::fs::write(places.config(), text).expect("config");
    let mut daemon = Daemon::start(daemon_bin, &lab, &places);
    let agent = kind.is_agent().then(|| {
        let mut agent = Agent::start(daemon_bin, &lab, 0, &places, &parties, "dns", "\"priority\": 300");
        agent.wait_registered(Duration::from_secs(10));
        agent
    });
    let link = lab.elements[0].host_link.name.clone();
    let mut out = Vec::new();
    for _ in 0..ROUNDS {
        daemon.wait_until("e1 active", Duration::from_secs(10), |s| {
            role(s, "dns", "e1") == Some("active")
        });
        // A new flow each round: it lands on e1, the active.
        let sock = client(&lab);
        let load = matches!(kind, Kind::ServiceStopUnderLoad).then(|| {
            let load = Load::start(&lab, &parties, &places.socket());
            load.wait_until_on(&lab);
            load
        });
        let answers = around(&sock, "e2", || match kind {
            Kind::ServiceStop | Kind::ServiceStopUnderLoad => {
                drop(std::mem::replace(&mut services[0], ServiceProc::dead()));
            }
            Kind::LinkDown | Kind::AgentLinkDown => lab.host.ip(&["link", "set", "dev", &link, "down"]),
            Kind::Freeze => services[0].signal("-STOP"),
            Kind::AgentFreeze => freeze(
                &[services[0].pid(), agent.as_ref().expect("an agent").pid()],
                true,
            ),
        });
        let g = gap(&answers, "e1", "e2");
        drop(load);
        // Fail-back: e1 returns and takes over new flows; this flow must lose nothing.
        let restore = || match kind {
            Kind::ServiceStop | Kind::ServiceStopUnderLoad => {}
            Kind::LinkDown | Kind::AgentLinkDown => lab.host.ip(&["link", "set", "dev", &link, "up"]),
            Kind::Freeze => services[0].signal("-CONT"),
            Kind::AgentFreeze => freeze(
                &[services[0].pid(), agent.as_ref().expect("an agent").pid()],
                false,
            ),
        };
        let (sent, got) = std::thread::scope(|s| {
            let traffic = s.spawn(|| exchange(&sock, Duration::from_millis(800)));
            restore();
            traffic.join().expect("traffic")
        });
        if matches!(kind, Kind::ServiceStop | Kind::ServiceStopUnderLoad) {
            services[0] = ServiceProc::start(service_bin, &lab, 0, PORT);
        }
        let answered: usize = got.values().sum();
        out.push(Round {
            gap: g,
            failback_lost: sent.saturating_sub(answered),
        });
    }
    out
}

fn drain_lost(daemon_bin: &Path, service_bin: &Path) -> usize {
    let lab = Lab::new(3);
    let places = Places::new();
    let _services: Vec<ServiceProc> = (0..3)
        .map(|i| ServiceProc::start(service_bin, &lab, i, PORT))
        .collect();
    std::fs::write(places.config(), config(&lab, &places, "tcp")).expect("config");
    let mut daemon = Daemon::start(daemon_bin, &lab, &places);
    daemon.wait_until("e1 active", Duration::from_secs(10), |s| {
        role(s, "dns", "e1") == Some("active")
    });
    let sock = client(&lab);
    let (sent, got) = std::thread::scope(|s| {
        let traffic = s.spawn(|| exchange(&sock, Duration::from_millis(1000)));
        let answer = daemon.request(&Request::Drain {
            pool: "dns".into(),
            element: "e1".into(),
            deadline: None,
        });
        assert!(matches!(answer, Response::Ok { .. }), "{answer:?}");
        traffic.join().expect("traffic")
    });
    sent - got.values().sum::<usize>()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Where the raw gaps and their plot go: the only argument, or the repository's `docs/`.
fn out_dir() -> PathBuf {
    std::env::args_os().nth(1).map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs"),
        PathBuf::from,
    )
}

/// Every failover's gap, one line each, and their plot.
fn write_gaps(dir: &Path, all: &[(Kind, Vec<Round>)]) {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    let mut csv = String::from("failure,check,round,gap_ms,failback_lost\n");
    for (kind, rs) in all {
        for (i, r) in rs.iter().enumerate() {
            writeln!(
                csv,
                "{kind:?},{},{},{:.3},{}",
                kind.check(),
                i + 1,
                ms(r.gap),
                r.failback_lost
            )
            .expect("writing to a String");
        }
    }
    let csv_path = dir.join("failover-gaps.csv");
    std::fs::write(&csv_path, csv).unwrap_or_else(|e| panic!("writing {}: {e}", csv_path.display()));

    let labels: Vec<String> = all
        .iter()
        .map(|(kind, _)| format!("{kind:?}, {} check", kind.check()))
        .collect();
    let gaps: Vec<Vec<f64>> = all
        .iter()
        .map(|(_, rs)| rs.iter().map(|r| ms(r.gap)).collect())
        .collect();
    let strips: Vec<Strip<'_>> = labels
        .iter()
        .zip(&gaps)
        .map(|(label, gaps_ms)| Strip { label, gaps_ms })
        .collect();
    let references = [
        Reference {
            label: "keepalived VRRPv3 at 10 ms, median on link down",
            ms: KEEPALIVED_MS,
        },
        Reference {
            label: "target median",
            ms: TARGET_MS,
        },
        Reference {
            label: "target median, heartbeats every 3 ms",
            ms: AGENT_TARGET_MS,
        },
    ];
    let svg_path = dir.join("failover-gaps.svg");
    write_failover_gaps_svg(
        &svg_path,
        &format!(
            "Failover gap seen by a client (request every 1 ms; probes every {INTERVAL_MS} ms, fall {FALL})"
        ),
        &strips,
        &references,
    )
    .unwrap_or_else(|e| panic!("writing {}: {e}", svg_path.display()));
    println!(
        "\nevery gap: {}, plotted in {}",
        csv_path.display(),
        svg_path.display()
    );
}

fn main() {
    let daemon_bin = vnfpool_tests::sibling_binary("vnfpool-under-test");
    let service_bin = vnfpool_tests::sibling_binary("vnfpool-lab-service");
    let out = out_dir();
    println!(
        "failover as a client sees it: UDP request every 1 ms, probes every {INTERVAL_MS} ms, fall {FALL} (heartbeats every {HEARTBEAT_MS} ms, {MISSES} missed, for the self-registered element), {ROUNDS} failovers per kind\n"
    );
    println!(
        "| failure | check | median gap | p99 gap | max gap | target (median) | requests lost on fail-back |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|");
    let mut all = Vec::new();
    for kind in [
        Kind::ServiceStop,
        Kind::ServiceStopUnderLoad,
        Kind::LinkDown,
        Kind::Freeze,
        Kind::AgentLinkDown,
        Kind::AgentFreeze,
    ] {
        let rs = rounds(kind, &daemon_bin, &service_bin);
        let mut gaps: Vec<Duration> = rs.iter().map(|r| r.gap).collect();
        gaps.sort();
        let p99 = gaps[((gaps.len() * 99).div_ceil(100)).saturating_sub(1)];
        let lost: usize = rs.iter().map(|r| r.failback_lost).sum();
        let median = gaps[gaps.len() / 2];
        let target = kind.target_ms();
        println!(
            "| {kind:?} | {} | {:.1} ms | {:.1} ms | {:.1} ms | < {target} ms {} | {lost} |",
            kind.check(),
            ms(median),
            ms(p99),
            ms(*gaps.last().expect("rounds")),
            if ms(median) < target { "ok" } else { "MISSED" }
        );
        all.push((kind, rs));
    }
    write_gaps(&out, &all);
    println!(
        "\nrequests lost while the active is drained (1 s of traffic): {}",
        drain_lost(&daemon_bin, &service_bin)
    );
}
