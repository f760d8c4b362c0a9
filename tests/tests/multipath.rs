//! Heartbeats over several paths (issue 19, items 1 and 3): the host of a self-registered
//! element has two links to the vnfpool host, and its agent sends every heartbeat over both.
//! Losing one link fails nothing and raises `path_down` (and `path_up` when it is back) in the
//! log, the status, the metrics and the operator's event stream; losing both fails the element
//! within the pool's budget.

use std::{path::Path, time::Duration};

use vnfpool_daemon::{api::client::Client, control::Status, entry::render_status};
use vnfpool_tests::{
    daemon::{Daemon, Places, role},
    lab::{Lab, TCP_PORT, UDP_PORT},
    netns::VethPair,
    registration::{API_PORT, Agent, HEARTBEAT_PORT, Parties, gateway},
    scrape::metrics,
};

const BIN: &str = env!("CARGO_BIN_EXE_vnfpool-under-test");
/// The pool's heartbeat interval and misses: a path or an element is silent after 150 ms (as in
/// `agent.rs`: four such tests run at once on two CPUs, and a path that misses by scheduling
/// would fail the test).
const INTERVAL_MS: u64 = 50;
const MISSES: u32 = 3;
/// The pool's detection budget: the miss time, the daemon's judgement and two CPUs shared with
/// other tests.
const DETECT_MS: u64 = 200;
/// Its switch budget: a mapping switch takes well under a millisecond idle, a few under load.
const SWITCH_MS: u64 = 20;
/// Link B between e3's host and the vnfpool host: e3's end and the host's.
const B_ELEMENT: &str = "10.77.3.2";
const B_HOST: &str = "10.77.3.1";

/// e3's heartbeat paths as the status shows them: (address, up).
fn paths(status: &Status) -> Vec<(String, bool)> {
    status.pools[0]
        .elements
        .iter()
        .find(|e| e.name == "e3")
        .map(|e| e.paths.iter().map(|p| (p.address.clone(), p.up)).collect())
        .unwrap_or_default()
}

fn failovers_of(status: &Status, element: &str) -> usize {
    status.pools[0]
        .failovers
        .iter()
        .filter(|f| f.element == element)
        .count()
}

#[test]
fn one_lost_path_is_an_event_and_no_failover_and_both_lost_fail_the_element_within_the_budget() {
    let (places, parties) = (Places::new(), Parties::new());
    let lab = Lab::new(3);
    let e3 = &lab.elements[2];
    let b = VethPair::new(&e3.netns, &lab.host);
    e3.netns
        .ip(&["addr", "add", &format!("{B_ELEMENT}/24"), "dev", &b.a.name]);
    lab.host
        .ip(&["addr", "add", &format!("{B_HOST}/24"), "dev", &b.b.name]);
    let text = format!(
        "{}{}pools:\n  - name: dns\n    vip: {}\n    ports: [{UDP_PORT}]\n    protocol: udp\n    ring_size: 251\n    redundancy: {{ model: active-standby, preempt: true }}\n    health: {{ check: tcp, port: {TCP_PORT}, interval: 10ms, timeout: 50ms, rise: 2, fall: 3 }}\n    heartbeat: {{ interval: {INTERVAL_MS}ms, misses: {MISSES} }}\n    budget: {{ detect: {DETECT_MS}ms, switch: {SWITCH_MS}ms }}\n    registration: {{ max_priority: 300 }}\n{}",
        places.daemon_section(&lab),
        parties.api_section(&lab, &places),
        lab.vip,
        Places::elements(&lab, &[100, 50]),
    );
    std::fs::write(places.config(), text).expect("config");
    let mut daemon = Daemon::start(Path::new(BIN), &lab, &places);
    daemon.wait_until("e1 active", Duration::from_secs(10), |s| {
        role(s, "dns", "e1") == Some("active")
    });

    // e3 registers with the highest priority and two paths: A (its lab link, to the host's
    // address there) and B.
    let a_element = e3.addr.to_string();
    let mut agent = Agent::start_with(
        Path::new(BIN),
        &lab,
        2,
        &places,
        &parties,
        "dns",
        "\"priority\": 300",
        &format!(
            "paths:\n  - from: {a_element}\n  - from: {}\n    to: {B_HOST}:{HEARTBEAT_PORT}\n",
            b.a.name
        ),
    );
    agent.wait_registered(Duration::from_secs(10));
    let both_up = vec![(a_element.clone(), true), (B_ELEMENT.to_owned(), true)];
    daemon.wait_until("e3 active, heard over both paths", Duration::from_secs(10), |s| {
        role(s, "dns", "e3") == Some("active")
            && paths(s) == both_up
            && s.heartbeats.is_some_and(|h| h.duplicate > 0)
    });

    // Link B is cut: B goes down, e3 stays the active.
    e3.netns.ip(&["link", "set", "dev", &b.a.name, "down"]);
    let b_down = vec![(a_element.clone(), true), (B_ELEMENT.to_owned(), false)];
    let status = daemon.wait_until("path B down", Duration::from_secs(5), |s| paths(s) == b_down);
    assert_eq!(
        role(&status, "dns", "e3"),
        Some("active"),
        "{}",
        daemon.log_text()
    );
    // A few miss times more: still no failover.
    let since = std::time::Instant::now();
    while since.elapsed() < Duration::from_millis(INTERVAL_MS * u64::from(MISSES) * 4) {
        let s = daemon.status().expect("status");
        assert_eq!(role(&s, "dns", "e3"), Some("active"), "{}", daemon.log_text());
        assert_eq!(failovers_of(&s, "e3"), 0, "{:?}", s.pools[0].failovers);
        std::thread::sleep(Duration::from_millis(INTERVAL_MS));
    }
    let samples = metrics(&lab.host);
    let series =
        |path: &str| format!("vnfpool_heartbeat_path_up{{pool=\"dns\",element=\"e3\",path=\"{path}\"}}");
    assert_eq!(samples.get(&series(B_ELEMENT)), Some(&0.0), "{samples:#?}");
    assert_eq!(samples.get(&series(&a_element)), Some(&1.0), "{samples:#?}");
    let text = render_status(&daemon.status().expect("status"));
    assert!(
        text.contains(&format!(
            "heartbeat paths of e3: {a_element} up, {B_ELEMENT} DOWN"
        )),
        "{text}"
    );

    // Back: B is up again with its next heartbeat.
    e3.netns.ip(&["link", "set", "dev", &b.a.name, "up"]);
    daemon.wait_until("path B up again", Duration::from_secs(5), |s| paths(s) == both_up);

    // The operator's event stream tells both, naming the element and the path.
    let (identity, ca_pem) = (parties.ca.issue("ops", &[]), parties.ca.pem());
    let events = lab.host.run(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let client = Client::new(
            std::net::SocketAddr::from(([127, 0, 0, 1], API_PORT)),
            &ca_pem,
            Some((&identity.0, &identity.1)),
        )
        .expect("client");
        runtime.block_on(client.follow(None, Duration::from_secs(5), |events| {
            events.iter().any(|e| e.kind == "path_up")
        }))
    });
    let events = events.expect("the operator's event stream");
    let path_events: Vec<(&str, serde_json::Value)> = events
        .iter()
        .filter(|e| e.kind.starts_with("path_"))
        .map(|e| (e.kind.as_str(), serde_json::from_str(&e.data).expect("JSON")))
        .collect();
    let about_b = serde_json::json!({ "pool": "dns", "element": "e3", "path": B_ELEMENT });
    assert_eq!(
        path_events,
        [("path_down", about_b.clone()), ("path_up", about_b)],
        "{events:?}"
    );

    // Both paths lost: e3 fails, e1 takes over, within the pool's budget. A is lost beyond
    // what the vnfpool host sees (its end of the link stays up; a link that goes down there
    // fails the element at once, as `LinkDown`): e3's host no longer routes to the host's
    // address on it.
    e3.netns.ip(&["link", "set", "dev", &b.a.name, "down"]);
    e3.netns
        .ip(&["route", "add", "prohibit", &format!("{}/32", gateway(e3.addr))]);
    let status = daemon.wait_until("e1 active again", Duration::from_secs(5), |s| {
        role(s, "dns", "e1") == Some("active") && failovers_of(s, "e3") == 1
    });
    let failover = status.pools[0]
        .failovers
        .iter()
        .find(|f| f.element == "e3")
        .expect("e3's failover");
    assert_eq!(failover.reason, "HeartbeatMiss", "{failover:?}");
    assert!(
        failover.detection <= Duration::from_millis(DETECT_MS),
        "detected after {:?}, over the budget of {DETECT_MS} ms",
        failover.detection
    );
    assert!(
        failover.switch <= Duration::from_millis(SWITCH_MS),
        "switched {:?} after the decision, over the budget of {SWITCH_MS} ms",
        failover.switch
    );
    assert_eq!(
        paths(&status),
        [(a_element, false), (B_ELEMENT.to_owned(), false)],
        "every path of a failed element is down"
    );
    drop(agent);
}
