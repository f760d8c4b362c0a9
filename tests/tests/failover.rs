//! The Pool Manager as a process, in the lab: it probes the elements, elects the active, and
//! fails over when the active's service stops or its link goes down. Each case measures the
//! gap a client sees (UDP request every millisecond through the VIP) and checks it against
//! interval x fall + 50 ms.

use std::{
    fmt::Write as _,
    net::UdpSocket,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use vnfpool_common::tunnel::{ENCAP_GUE, ENCAP_IPIP, ENCAP_VXLAN};
use vnfpool_tests::{
    daemon::{Daemon, Places, role},
    lab::{Lab, TCP_PORT, UDP_PORT, text_of},
    service::ServiceProc,
    traffic::{around, around_away, exchange, gap_away, gap_within, owners, probe_until},
};

const BIN: &str = env!("CARGO_BIN_EXE_vnfpool-under-test");
const INTERVAL_MS: u64 = 10;
const FALL: u64 = 3;

/// A UDP pool on the lab's VIP, active-standby by priority (e1 > e2 > e3), probed over TCP.
fn config(lab: &Lab, places: &Places, preempt: bool) -> String {
    pool(lab, places, preempt, "", &Places::elements(lab, &[300, 200, 100]))
}

/// [`config`] with `more` pool keys and these `elements`.
fn pool(lab: &Lab, places: &Places, preempt: bool, more: &str, elements: &str) -> String {
    format!(
        "{}pools:\n  - name: dns\n    vip: {}\n    ports: [{UDP_PORT}]\n    protocol: udp\n{more}    redundancy: {{ model: active-standby, preempt: {preempt} }}\n    health: {{ check: tcp, port: {TCP_PORT}, interval: {INTERVAL_MS}ms, timeout: 50ms, rise: 2, fall: {FALL} }}\n{elements}",
        places.daemon_section(lab),
        lab.vip,
    )
}

fn ready(lab: &Lab, places: &Places) -> (Daemon, UdpSocket, Vec<(Instant, String)>) {
    ready_with(lab, places, &config(lab, places, true))
}

fn ready_with(lab: &Lab, places: &Places, config: &str) -> (Daemon, UdpSocket, Vec<(Instant, String)>) {
    std::fs::write(places.config(), config).expect("config");
    let mut daemon = Daemon::start(std::path::Path::new(BIN), lab, places);
    daemon.wait_until("e1 active, e2 and e3 standby", Duration::from_secs(10), |s| {
        role(s, "dns", "e1") == Some("active")
            && role(s, "dns", "e2") == Some("standby")
            && role(s, "dns", "e3") == Some("standby")
    });
    let sock = lab.udp_sockets(1, UDP_PORT).pop().expect("a socket");
    let answers = probe_until(&sock, Duration::from_secs(2), |a| a.len() >= 20);
    assert!(
        answers.len() >= 20 && answers.iter().all(|(_, e)| e == "e1"),
        "all traffic on e1: {answers:?}"
    );
    (daemon, sock, answers)
}

fn bound() -> Duration {
    Duration::from_millis(INTERVAL_MS * FALL + 50)
}

#[test]
fn failover_when_the_active_service_stops() {
    let mut lab = Lab::new(3);
    let places = Places::new();
    let (mut daemon, sock, _) = ready(&lab, &places);
    let answers = around(&sock, "e2", || lab.stop_services(0));
    gap_within(&answers, "e1", "e2", bound(), "service stop", || {
        daemon.log_text()
    });
    let s = daemon.wait_until("e2 active", Duration::from_secs(2), |s| {
        role(s, "dns", "e2") == Some("active")
    });
    if std::env::var_os("VNFPOOL_TEST_LOG").is_some() {
        println!("{}", daemon.log_text());
    }
    let f = &s.pools[0].failovers;
    assert!(f.iter().any(|f| f.element == "e1"), "failover recorded: {f:?}");

    // e1 returns: with preemption it takes over new flows; our flow stays on e2 (fail-back
    // drain keeps e2's flows), so the client sees no loss.
    lab.start_services(0);
    daemon.wait_until("e1 active again, e2 draining", Duration::from_secs(3), |s| {
        role(s, "dns", "e1") == Some("active") && role(s, "dns", "e2") == Some("draining")
    });
    let after = probe_until(&sock, Duration::from_millis(300), |_| false);
    assert!(
        after.len() > 200 && after.iter().all(|(_, e)| e == "e2"),
        "the flow stays on e2 while it drains: {} answers",
        after.len()
    );
}

/// The same failover with the elements on other subnets behind a router, reached through IPIP
/// and GUE tunnels: the daemon finds each element's next hop (the router's MAC), this host's
/// source address and the path's MTU in the routing table, as nothing in the file names them.
#[test]
fn failover_through_tunnels_to_elements_on_another_subnet() {
    for (encap, keys) in [
        (ENCAP_IPIP, "    forwarding: ipip\n"),
        (ENCAP_GUE, "    forwarding: gue\n    gue_port: 6080\n"),
        (ENCAP_VXLAN, "    forwarding: vxlan\n    vxlan_vni: 4242\n"),
    ] {
        let mut lab = Lab::routed(3, encap, Path::new(BIN));
        let places = Places::new();
        let mut elements = String::from("    elements:\n");
        for (e, priority) in lab.elements.iter().zip([300, 200, 100]) {
            let vxlan = e
                .vxlan_mac
                .map(|m| format!(", vxlan_mac: \"{}\"", text_of(m)))
                .unwrap_or_default();
            writeln!(
                elements,
                "      - {{ name: {}, address: {}, priority: {priority}{vxlan} }}",
                e.name, e.addr
            )
            .expect("writing to a String");
        }
        let (mut daemon, sock, _) = ready_with(&lab, &places, &pool(&lab, &places, true, keys, &elements));
        let answers = around(&sock, "e2", || lab.stop_services(0));
        gap_within(&answers, "e1", "e2", bound(), keys.trim(), || daemon.log_text());
        daemon.wait_until("e2 active", Duration::from_secs(2), |s| {
            role(s, "dns", "e2") == Some("active")
        });
        assert!(
            lab.decapsulated(1) > 0,
            "{}: e2's packets came through its tunnel",
            keys.trim()
        );
    }
}

#[test]
fn failover_when_the_active_link_goes_down() {
    let lab = Lab::new(3);
    let places = Places::new();
    let (mut daemon, sock, _) = ready(&lab, &places);
    let link = lab.elements[0].host_link.name.clone();
    let answers = around(&sock, "e2", || {
        lab.host.ip(&["link", "set", "dev", &link, "down"])
    });
    gap_within(&answers, "e1", "e2", bound(), "link down", || daemon.log_text());
    let s = daemon.wait_until("e2 active", Duration::from_secs(2), |s| {
        role(s, "dns", "e2") == Some("active")
    });
    assert!(
        s.pools[0]
            .failovers
            .iter()
            .any(|f| f.element == "e1" && f.reason.contains("Link")),
        "{:?}",
        s.pools[0].failovers
    );
}

#[test]
fn a_bad_configuration_is_refused_with_status_2_and_nothing_attached() {
    let lab = Lab::new(1);
    let places = Places::new();
    let bad = config(&lab, &places, true).replace("rise: 2", "rise: 0");
    std::fs::write(places.config(), bad).expect("config");
    let validate = Command::new(BIN)
        .arg("validate")
        .arg(places.config())
        .output()
        .expect("validate");
    assert_eq!(validate.status.code(), Some(2), "validate: {validate:?}");
    let msg = String::from_utf8_lossy(&validate.stderr);
    assert!(
        msg.contains("pools.yaml:") && msg.contains("rise"),
        "says where and what: {msg}"
    );

    let run = vnfpool_tests::daemon::command(Path::new(BIN), &lab, &places)
        .output()
        .expect("daemon");
    assert_eq!(run.status.code(), Some(2), "daemon: {run:?}");
    let pins: Vec<_> = std::fs::read_dir(places.pins.path()).expect("pin dir").collect();
    assert!(pins.is_empty(), "nothing pinned: {pins:?}");
    let xdp = lab
        .host
        .ip_output(&["-d", "link", "show", "dev", &lab.ingress.name]);
    assert!(!xdp.contains("xdp"), "nothing attached:\n{xdp}");

    // An element the host has no route to: found only by asking the kernel, still reported
    // with its place in the file, and still exit status 2 with nothing attached.
    let unroutable = format!(
        "{}pools:\n  - name: dns\n    vip: {}\n    ports: [{UDP_PORT}]\n    protocol: udp\n    redundancy: {{ model: active-active }}\n    health: {{ check: tcp, port: {TCP_PORT}, interval: 10ms, timeout: 50ms, rise: 2, fall: 3 }}\n    elements:\n      - {{ name: far, address: 10.99.99.2 }}\n",
        places.daemon_section(&lab),
        lab.vip
    );
    std::fs::write(places.config(), unroutable).expect("config");
    let run = vnfpool_tests::daemon::command(Path::new(BIN), &lab, &places)
        .output()
        .expect("daemon");
    let msg = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "daemon: {msg}");
    assert!(
        msg.contains("pools.yaml:16:") && msg.contains("no route"),
        "says where and what: {msg}"
    );
    let xdp = lab
        .host
        .ip_output(&["-d", "link", "show", "dev", &lab.ingress.name]);
    assert!(!xdp.contains("xdp"), "nothing attached:\n{xdp}");
}

#[test]
fn a_killed_and_restarted_daemon_loses_no_packet_of_established_flows() {
    let lab = Lab::new(3);
    let places = Places::new();
    let (daemon, sock, _) = ready(&lab, &places);
    let generation = daemon.status().expect("status").pools[0].generation;
    let status = daemon.kill();
    assert!(!status.success(), "killed");

    // No daemon: the pinned data plane keeps forwarding.
    let (sent, got) = exchange(&sock, Duration::from_millis(300));
    assert_eq!(
        got.get("e1").copied(),
        Some(sent),
        "with the daemon dead: {sent} sent, answers {got:?}"
    );

    // Restarted: it adopts the pins and the saved state, and the flow never notices.
    let restarted = std::thread::scope(|s| {
        let traffic = s.spawn(|| exchange(&sock, Duration::from_millis(1500)));
        let mut d = Daemon::start(std::path::Path::new(BIN), &lab, &places);
        let st = d.wait_until("e1 active after the restart", Duration::from_secs(5), |s| {
            role(s, "dns", "e1") == Some("active")
        });
        let (sent, got) = traffic.join().expect("traffic thread");
        assert_eq!(
            got.get("e1").copied(),
            Some(sent),
            "across the restart: {sent} sent, answers {got:?}\n{}",
            d.log_text()
        );
        (d, st)
    });
    let (daemon, status) = restarted;
    assert!(
        status.pools[0].generation > generation,
        "the restarted daemon wrote its mapping on top of the adopted one"
    );
    assert!(
        daemon.log_text().contains("adopted the pinned XDP attachment"),
        "{}",
        daemon.log_text()
    );
}

#[test]
fn a_drained_active_keeps_its_flows_until_the_deadline() {
    let lab = Lab::new(3);
    let places = Places::new();
    let (mut daemon, sock, _) = ready(&lab, &places);
    // Taken before the request, so that it is no later than the daemon's start of the deadline.
    let drained = Instant::now();
    let answer = daemon.request(&vnfpool_daemon::control::Request::Drain {
        pool: "dns".into(),
        element: "e1".into(),
        deadline: Some(Duration::from_millis(600)),
    });
    assert!(
        matches!(answer, vnfpool_daemon::control::Response::Ok { .. }),
        "{answer:?}"
    );
    // New flows go to e2 at once; the existing flow stays on e1 with no loss.
    let fresh = lab.udp_sockets(20, UDP_PORT);
    for s in &fresh {
        s.send(b"ping").expect("send");
        let mut buf = [0u8; 16];
        let n = s.recv(&mut buf).expect("answer");
        assert_eq!(&buf[..n], b"e2", "a new flow while e1 drains");
    }
    let (sent, got) = exchange(&sock, Duration::from_millis(200));
    assert_eq!(
        got.get("e1").copied(),
        Some(sent),
        "the old flow stays on e1: {got:?}"
    );
    // After the deadline it moves.
    daemon.wait_until("e1 out after its deadline", Duration::from_secs(3), |s| {
        role(s, "dns", "e1") == Some("out")
    });
    assert!(
        drained.elapsed() >= Duration::from_millis(600),
        "not before the deadline"
    );
    let (_, got) = exchange(&sock, Duration::from_millis(50));
    assert!(
        got.contains_key("e2") && !got.contains_key("e1"),
        "after the deadline: {got:?}"
    );
}

/// A UDP pool with `redundancy` over the lab elements listed in `members` (by index).
fn pool_config(lab: &Lab, places: &Places, redundancy: &str, members: &[usize]) -> String {
    let all = Places::elements(lab, &[300, 200, 100]);
    let mut lines = all.lines();
    let mut elements = format!("{}\n", lines.next().expect("header"));
    for (i, line) in lines.enumerate() {
        if members.contains(&i) {
            elements += line;
            elements.push('\n');
        }
    }
    format!(
        "{}pools:\n  - name: dns\n    vip: {}\n    ports: [{UDP_PORT}]\n    protocol: udp\n    redundancy: {redundancy}\n    health: {{ check: tcp, port: {TCP_PORT}, interval: {INTERVAL_MS}ms, timeout: 50ms, rise: 2, fall: {FALL} }}\n{elements}",
        places.daemon_section(lab),
        lab.vip,
    )
}

#[test]
fn reload_adding_an_element_moves_no_existing_flow() {
    let lab = Lab::new(3);
    let places = Places::new();
    std::fs::write(
        places.config(),
        pool_config(&lab, &places, "{ model: active-active }", &[0, 1]),
    )
    .expect("config");
    let mut daemon = Daemon::start(std::path::Path::new(BIN), &lab, &places);
    daemon.wait_until("e1 and e2 active", Duration::from_secs(10), |s| {
        role(s, "dns", "e1") == Some("active") && role(s, "dns", "e2") == Some("active")
    });
    let old = lab.udp_sockets(60, UDP_PORT);
    let before = owners(&old);
    assert!(
        before.iter().any(|e| e == "e1") && before.iter().any(|e| e == "e2"),
        "{before:?}"
    );

    std::fs::write(
        places.config(),
        pool_config(&lab, &places, "{ model: active-active }", &[0, 1, 2]),
    )
    .expect("config");
    let answer = daemon.request(&vnfpool_daemon::control::Request::Reload);
    assert!(
        matches!(answer, vnfpool_daemon::control::Response::Ok { .. }),
        "{answer:?}\n{}",
        daemon.log_text()
    );
    daemon.wait_until("e3 active", Duration::from_secs(5), |s| {
        role(s, "dns", "e3") == Some("active")
    });
    assert_eq!(
        owners(&old),
        before,
        "existing flows kept their elements across the reload"
    );
    let new = owners(&lab.udp_sockets(60, UDP_PORT));
    assert!(
        new.iter().any(|e| e == "e3"),
        "new flows reach the added element: {new:?}"
    );

    // A bad file is refused and changes nothing.
    std::fs::write(places.config(), "pools: [").expect("config");
    let answer = daemon.request(&vnfpool_daemon::control::Request::Reload);
    assert!(
        matches!(answer, vnfpool_daemon::control::Response::Error { ref message } if message.contains("pools.yaml")),
        "{answer:?}"
    );
    assert_eq!(owners(&old), before, "flows unchanged after a refused reload");
    assert_eq!(
        role(&daemon.status().expect("status"), "dns", "e3"),
        Some("active")
    );

    // SIGHUP reloads too: e3 leaves the pool; flows of e1 and e2 stay where they were.
    std::fs::write(
        places.config(),
        pool_config(&lab, &places, "{ model: active-active }", &[0, 1]),
    )
    .expect("config");
    let hup = Command::new("kill")
        .args(["-HUP", &daemon.pid().to_string()])
        .status()
        .expect("kill");
    assert!(hup.success());
    daemon.wait_until("e3 gone after SIGHUP", Duration::from_secs(5), |s| {
        role(s, "dns", "e3").is_none()
    });
    for (now, was) in owners(&old).iter().zip(&before) {
        assert_eq!(now, was, "a flow of e1 or e2 moved when e3 left");
    }
}

#[test]
fn n_plus_m_promotes_a_standby_in_the_same_decision() {
    let mut lab = Lab::new(3);
    let places = Places::new();
    std::fs::write(
        places.config(),
        pool_config(&lab, &places, "{ model: n+m, active: 2 }", &[0, 1, 2]),
    )
    .expect("config");
    let mut daemon = Daemon::start(std::path::Path::new(BIN), &lab, &places);
    daemon.wait_until("e1, e2 active; e3 standby", Duration::from_secs(10), |s| {
        role(s, "dns", "e1") == Some("active")
            && role(s, "dns", "e2") == Some("active")
            && role(s, "dns", "e3") == Some("standby")
    });
    let socks = lab.udp_sockets(40, UDP_PORT);
    let before = owners(&socks);
    assert!(
        !before.iter().any(|e| e == "e3"),
        "the standby carries nothing: {before:?}"
    );
    let on_e1 = before.iter().position(|e| e == "e1").expect("a flow on e1");
    let answers = around_away(&socks[on_e1], "e1", || lab.stop_services(0));
    let g = gap_away(&answers, "e1");
    println!(
        "n+m, active's service stopped: client-visible gap {:.1} ms (bound {:?})",
        g.as_secs_f64() * 1e3,
        bound()
    );
    assert!(
        g <= bound(),
        "gap {g:?} over {:?}\n{}",
        bound(),
        daemon.log_text()
    );
    let s = daemon.wait_until("e3 promoted", Duration::from_secs(3), |s| {
        role(s, "dns", "e3") == Some("active")
    });
    assert_eq!(role(&s, "dns", "e2"), Some("active"));
    let record = s.pools[0]
        .failovers
        .iter()
        .find(|f| f.element == "e1")
        .expect("e1's failover recorded");
    assert!(record.reason.contains("Probe"), "{record:?}");
    let after = owners(&socks);
    for (b, a) in before.iter().zip(&after) {
        if b == "e2" {
            assert_eq!(a, "e2", "a flow of the healthy active moved");
        } else {
            assert_ne!(a, "e1", "a flow stayed on the failed element");
        }
    }
}

#[test]
fn failover_when_the_active_is_frozen() {
    const PORT: u16 = 5354;
    let lab = Lab::new(3);
    let places = Places::new();
    let services: Vec<ServiceProc> = (0..3)
        .map(|i| {
            ServiceProc::start(
                Path::new(env!("CARGO_BIN_EXE_vnfpool-lab-service")),
                &lab,
                i,
                PORT,
            )
        })
        .collect();
    // A frozen process still completes TCP handshakes in the kernel: only a request/response
    // check sees a freeze.
    let yaml = format!(
        "{}pools:\n  - name: dns\n    vip: {}\n    ports: [{PORT}]\n    protocol: udp\n    redundancy: {{ model: active-standby, preempt: true }}\n    health: {{ check: udp, port: {PORT}, payload: \"ping\", interval: {INTERVAL_MS}ms, timeout: 50ms, rise: 2, fall: {FALL} }}\n{}",
        places.daemon_section(&lab),
        lab.vip,
        Places::elements(&lab, &[300, 200, 100]),
    );
    std::fs::write(places.config(), yaml).expect("config");
    let mut daemon = Daemon::start(std::path::Path::new(BIN), &lab, &places);
    daemon.wait_until("e1 active", Duration::from_secs(10), |s| {
        role(s, "dns", "e1") == Some("active")
    });
    let sock = UdpSocket::bind((lab.client_addr, 0)).ok();
    // The client socket lives in the client namespace.
    let sock = sock.map_or_else(
        || {
            lab.in_client(|| {
                let s = UdpSocket::bind((lab.client_addr, 0)).expect("bind");
                s.connect((lab.vip, PORT)).expect("connect");
                s
            })
        },
        |s| s,
    );
    let first = probe_until(&sock, Duration::from_secs(2), |a| a.len() >= 20);
    assert!(first.iter().all(|(_, e)| e == "e1"), "{first:?}");
    let answers = around(&sock, "e2", || services[0].signal("-STOP"));
    gap_within(&answers, "e1", "e2", bound(), "freeze", || daemon.log_text());
    services[0].signal("-CONT");
}

/// The backup of an element, as `vnfpool status` explains it.
fn backup<'a>(s: &'a vnfpool_daemon::control::Status, element: &str) -> Option<&'a str> {
    s.pools[0]
        .elements
        .iter()
        .find(|e| e.name == element)?
        .backup
        .as_deref()
}

#[test]
fn the_active_fails_over_to_its_risk_free_backup_not_the_next_by_priority() {
    // e2 shares e1's host: e3, though of lower priority, backs e1 up and takes over.
    let mut lab = Lab::new(3);
    let places = Places::new();
    let elements = Places::placed_elements(
        &lab,
        &[
            (300, "failure_domains: { host: h1 }, site: s1"),
            (200, "failure_domains: { host: h1 }, site: s1"),
            (100, "failure_domains: { host: h2 }, site: s2"),
        ],
    );
    let text = format!(
        "{}placement:\n  weights: {{ host: 100 }}\n  topology: {{ s1: {{ s2: 3 }}, s2: {{}} }}\npools:\n  - name: dns\n    vip: {}\n    ports: [{UDP_PORT}]\n    protocol: udp\n    redundancy: {{ model: active-standby, preempt: true }}\n    health: {{ check: tcp, port: {TCP_PORT}, interval: {INTERVAL_MS}ms, timeout: 50ms, rise: 2, fall: {FALL} }}\n{elements}",
        places.daemon_section(&lab),
        lab.vip,
    );
    std::fs::write(places.config(), text).expect("config");
    let mut daemon = Daemon::start(Path::new(BIN), &lab, &places);
    let s = daemon.wait_until("e1 active, backed up by e3", Duration::from_secs(10), |s| {
        role(s, "dns", "e1") == Some("active") && backup(s, "e1").is_some_and(|b| b.starts_with("e3"))
    });
    assert_eq!(backup(&s, "e1"), Some("e3: no shared risk, site cost 3"));
    let sock = lab.udp_sockets(1, UDP_PORT).pop().expect("a socket");
    let answers = around(&sock, "e3", || lab.stop_services(0));
    gap_within(&answers, "e1", "e3", bound(), "backup by placement", || {
        daemon.log_text()
    });
    assert!(
        !answers.iter().any(|(_, e)| e == "e2"),
        "nothing went to e2, which shares e1's host"
    );
    let s = daemon.wait_until("e3 active", Duration::from_secs(2), |s| {
        role(s, "dns", "e3") == Some("active")
    });
    assert_eq!(
        role(&s, "dns", "e2"),
        Some("standby"),
        "e2 does not preempt the stand-in"
    );
    // e3 on site s2 has no known cost to s1: its backup e2 is risk-free at an unknown cost.
    assert_eq!(backup(&s, "e3"), Some("e2: no shared risk, site cost unknown"));
}
