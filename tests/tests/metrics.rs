//! The daemon's `/metrics`, `/live` and `/ready` in the lab: a scrape before and after a
//! failover shows the failover counted, its detection time observed, and the packets moving
//! from the failed element to its successor.

use std::{path::Path, time::Duration};

use vnfpool_tests::{
    daemon::{Daemon, Places, role},
    lab::{Lab, TCP_PORT, UDP_PORT},
    scrape::{self, METRICS, metrics},
    traffic::{around, gap, probe_until},
};

const BIN: &str = env!("CARGO_BIN_EXE_vnfpool-under-test");

fn value(m: &std::collections::BTreeMap<String, f64>, series: &str) -> f64 {
    m.get(series).copied().unwrap_or(0.0)
}

#[test]
fn a_failover_moves_the_counters_the_histogram_and_the_packets() {
    let mut lab = Lab::new(3);
    let places = Places::new();
    let text = format!(
        "{}pools:\n  - name: dns\n    vip: {}\n    ports: [{UDP_PORT}]\n    protocol: udp\n    redundancy: {{ model: active-standby, preempt: false }}\n    health: {{ check: tcp, port: {TCP_PORT}, interval: 10ms, timeout: 50ms, rise: 2, fall: 3 }}\n{}",
        places.daemon_section(&lab),
        lab.vip,
        Places::elements(&lab, &[300, 200, 100]),
    );
    std::fs::write(places.config(), text).expect("config");
    let mut daemon = Daemon::start_with(Path::new(BIN), &lab, &places, &["--log-format", "json"]);
    daemon.wait_until("e1 active", Duration::from_secs(10), |s| {
        role(s, "dns", "e1") == Some("active")
    });
    assert_eq!(scrape::get(&lab.host, METRICS, "/live").map(|r| r.0), Ok(200));
    // The pool is live (e1 is active in the status), so the daemon is ready.
    assert_eq!(scrape::get(&lab.host, METRICS, "/ready").map(|r| r.0), Ok(200));
    assert_eq!(scrape::get(&lab.host, METRICS, "/nothing").map(|r| r.0), Ok(404));

    let sock = lab.udp_sockets(1, UDP_PORT).pop().expect("a socket");
    let answers = probe_until(&sock, Duration::from_secs(2), |a| a.len() >= 50);
    assert!(answers.iter().all(|(_, e)| e == "e1"), "{answers:?}");
    let before = metrics(&lab.host);
    let e1 = r#"vnfpool_element_packets_total{pool="dns",element="e1"}"#;
    let e2 = r#"vnfpool_element_packets_total{pool="dns",element="e2"}"#;
    let failovers = r#"vnfpool_failovers_total{pool="dns",reason="probe_failure"}"#;
    let detections = r#"vnfpool_failover_detection_seconds_count{pool="dns"}"#;
    let detection_sum = r#"vnfpool_failover_detection_seconds_sum{pool="dns"}"#;
    assert!(value(&before, e1) >= 50.0, "e1 carried the requests: {before:?}");
    assert_eq!(value(&before, e2), 0.0);
    assert_eq!(value(&before, failovers), 0.0);
    assert_eq!(
        value(
            &before,
            r#"vnfpool_element_role{pool="dns",element="e1",state="active"}"#
        ),
        1.0
    );
    assert!(
        value(
            &before,
            r#"vnfpool_probes_total{pool="dns",element="e2",result="ok"}"#
        ) > 0.0
    );
    assert_eq!(value(&before, "vnfpool_flow_table_capacity"), 65536.0);
    assert!(
        value(&before, "vnfpool_flow_table_entries") >= 1.0,
        "our flow is in the table"
    );

    let answers = around(&sock, "e2", || lab.stop_services(0));
    let g = gap(&answers, "e1", "e2");
    daemon.wait_until("e2 active", Duration::from_secs(2), |s| {
        role(s, "dns", "e2") == Some("active")
    });
    let after = metrics(&lab.host);
    println!(
        "failover gap {:.1} ms; metrics after:\n{after:#?}",
        g.as_secs_f64() * 1e3
    );
    assert_eq!(value(&after, failovers), 1.0, "one failover counted");
    assert_eq!(value(&after, detections), value(&before, detections) + 1.0);
    let detection = value(&after, detection_sum) - value(&before, detection_sum);
    assert!(detection > 0.0 && detection < 0.2, "detection {detection} s");
    let e2_packets = value(&after, e2);
    let answered_by_e2 = answers.iter().filter(|(_, e)| e == "e2").count() as f64;
    assert!(
        e2_packets >= answered_by_e2,
        "e2 counted {e2_packets}, answered {answered_by_e2}"
    );
    assert!(value(&after, e1) >= value(&before, e1));
    assert_eq!(
        value(
            &after,
            r#"vnfpool_element_role{pool="dns",element="e2",state="active"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &after,
            r#"vnfpool_element_health{pool="dns",element="e1",state="down"}"#
        ),
        1.0
    );
    assert!(value(&after, r#"vnfpool_vip_packets_total{pool="dns"}"#) >= value(&before, e1) + answered_by_e2);

    // Logs: one JSON object per line; the failover is one event with everything about it.
    let log = daemon.log_text();
    let events: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let failover = events
        .iter()
        .find(|e| e["message"] == "failover")
        .unwrap_or_else(|| panic!("no failover event in\n{log}"));
    assert_eq!(failover["pool"], "dns");
    assert_eq!(failover["element"], "e1");
    assert_eq!(failover["reason"], "ProbeFailure");
    assert!(
        failover["detection_ms"].as_f64().is_some_and(|ms| ms > 0.0),
        "{failover}"
    );
    assert!(
        failover["switch_us"].as_f64().is_some_and(|us| us > 0.0),
        "{failover}"
    );
}
