//! The Pool Manager under control-plane load (DESIGN invariant 7): while 50 registrations
//! wait for addresses that never resolve, `/metrics` is scraped 200 times a second and the
//! configuration is reloaded every 100 ms, the active element's service stops. The failover
//! gap the client sees stays within interval × fall + 20 ms, and a drain deadline fires within
//! 20 ms of its time.

use std::{
    sync::atomic::Ordering,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use vnfpool_daemon::control::Request;
use vnfpool_tests::{
    daemon::{Daemon, Places, role},
    lab::{Lab, TCP_PORT, UDP_PORT},
    load::{Load, REGISTRATIONS},
    registration::Parties,
    traffic::{around, gap_within, probe_until},
};

const BIN: &str = env!("CARGO_BIN_EXE_vnfpool-under-test");
const INTERVAL_MS: u64 = 10;
const FALL: u64 = 3;
const DRAIN: Duration = Duration::from_millis(300);
const SLACK: Duration = Duration::from_millis(20);

#[test]
fn failover_and_drain_deadlines_keep_time_under_control_plane_load() {
    let mut lab = Lab::new(3);
    let places = Places::new();
    let parties = Parties::new();
    let config = format!(
        "{}{}pools:\n  - name: dns\n    vip: {}\n    ports: [{UDP_PORT}]\n    protocol: udp\n    redundancy: {{ model: active-standby, preempt: false }}\n    health: {{ check: tcp, port: {TCP_PORT}, interval: {INTERVAL_MS}ms, timeout: 50ms, rise: 2, fall: {FALL} }}\n{}",
        places.daemon_section(&lab),
        parties.api_section(&lab, &places),
        lab.vip,
        Places::elements(&lab, &[300, 200, 100]),
    );
    std::fs::write(places.config(), config).expect("config");
    let mut daemon = Daemon::start(std::path::Path::new(BIN), &lab, &places);
    daemon.wait_until("e1 active", Duration::from_secs(10), |s| {
        role(s, "dns", "e1") == Some("active") && role(s, "dns", "e3") == Some("standby")
    });
    let sock = lab.udp_sockets(1, UDP_PORT).pop().expect("a socket");
    let warm = probe_until(&sock, Duration::from_secs(2), |a| a.len() >= 20);
    assert!(warm.iter().all(|(_, e)| e == "e1"), "all traffic on e1: {warm:?}");

    let load = Load::start(&lab, &parties, &places.socket());
    load.wait_until_on(&lab);

    let answers = around(&sock, "e2", || lab.stop_services(0));
    gap_within(
        &answers,
        "e1",
        "e2",
        Duration::from_millis(INTERVAL_MS * FALL) + SLACK,
        "service stop under load",
        || format!("{}\n{}", load.counts.summary(), daemon.log_text()),
    );

    // Drain e2, the active now: its deadline must fire on time under the same load.
    let sent = SystemTime::now();
    let answer = daemon.request(&Request::Drain {
        pool: "dns".to_owned(),
        element: "e2".to_owned(),
        deadline: Some(DRAIN),
    });
    let answered = SystemTime::now();
    assert!(
        matches!(answer, vnfpool_daemon::control::Response::Ok { .. }),
        "{answer:?}"
    );
    let s = daemon.wait_until("e2 out at its deadline", Duration::from_secs(3), |s| {
        s.pools[0]
            .failovers
            .iter()
            .any(|f| f.element == "e2" && f.reason == "DrainDeadline")
    });
    let fired = s.pools[0]
        .failovers
        .iter()
        .find(|f| f.element == "e2" && f.reason == "DrainDeadline")
        .expect("recorded")
        .at_unix;
    let unix = |t: SystemTime| t.duration_since(UNIX_EPOCH).expect("after 1970").as_secs_f64();
    let (earliest, latest) = (unix(sent + DRAIN), unix(answered + DRAIN + SLACK));
    assert!(
        fired >= earliest - 0.001 && fired <= latest,
        "the deadline fired {:.1} ms after the drain was sent (deadline {DRAIN:?}, slack {SLACK:?}); {}",
        (fired - unix(sent)) * 1e3,
        load.counts.summary()
    );
    // Every registration was refused once its neighbour timeout ran out: they were in flight
    // through both measurements.
    load.wait_until_answered();
    assert_eq!(
        load.counts.registrations_refused.load(Ordering::Relaxed),
        REGISTRATIONS as u64,
        "{}",
        load.counts.summary()
    );
    println!("under load: {}", load.counts.summary());
}
