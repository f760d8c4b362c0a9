//! Elements that register themselves (issue 5): `vnfpool agent` beside a lab element registers
//! it over the API and sends heartbeats; the element takes traffic within one heartbeat
//! interval of registering and loses it within the miss time after its agent is killed;
//! registrations survive a restart of the daemon; forged, replayed and unregistered heartbeats
//! are counted and change nothing; operators add and remove elements, the SCE asks for a
//! redundancy level.

use std::{
    net::UdpSocket,
    path::Path,
    time::{Duration, SystemTime},
};

use vnfpool_daemon::{
    api::{ElementAdded, RegistrationInfo},
    control::Status,
    heartbeat::{self, Key},
};
use vnfpool_tests::{
    daemon::{Daemon, Places, role},
    lab::{Lab, TCP_PORT, UDP_PORT},
    registration::{Agent, HEARTBEAT_PORT, Parties, element_body, log_time, new_flows_until},
};

const BIN: &str = env!("CARGO_BIN_EXE_vnfpool-under-test");
/// The lab pool's heartbeat interval and misses: the miss time is 150 ms.
const INTERVAL: Duration = Duration::from_millis(50);
const MISSES: u32 = 3;
/// Beyond the miss time: a heartbeat sent just before the kill and received after it (the
/// miss time counts from its receipt), the daemon's decision and switch, and the client's
/// cadence (a request every millisecond), with four such tests running at once on two CPUs.
const SLACK: Duration = Duration::from_millis(20);

/// A lab of three elements, a UDP pool `dns` in active-standby with preemption of which e1
/// (priority 100) and e2 (50) are in the file, probed over TCP; e3 may register itself, with
/// a priority up to 300.
fn setup(places: &Places, parties: &Parties) -> Lab {
    let lab = Lab::new(3);
    let text = format!(
        "{}{}pools:\n  - name: dns\n    vip: {}\n    ports: [{UDP_PORT}]\n    protocol: udp\n    ring_size: 251\n    redundancy: {{ model: active-standby, preempt: true }}\n    health: {{ check: tcp, port: {TCP_PORT}, interval: 10ms, timeout: 50ms, rise: 2, fall: 3 }}\n    heartbeat: {{ interval: {}ms, misses: {MISSES} }}\n    registration: {{ max_priority: 300 }}\n{}",
        places.daemon_section(&lab),
        parties.api_section(&lab, places),
        lab.vip,
        INTERVAL.as_millis(),
        Places::elements(&lab, &[100, 50]),
    );
    std::fs::write(places.config(), text).expect("config");
    lab
}

/// [`setup`], and the daemon started with `args` once e1 is the active.
fn running(places: &Places, parties: &Parties, args: &[&str]) -> (Lab, Daemon) {
    let lab = setup(places, parties);
    let mut daemon = Daemon::start_with(Path::new(BIN), &lab, places, args);
    daemon.wait_until("e1 active", Duration::from_secs(10), |s| {
        role(s, "dns", "e1") == Some("active")
    });
    (lab, daemon)
}

fn has(status: &Status, element: &str) -> bool {
    status.pools[0].elements.iter().any(|e| e.name == element)
}

fn health<'a>(status: &'a Status, element: &str) -> Option<&'a str> {
    status.pools[0]
        .elements
        .iter()
        .find(|e| e.name == element)
        .map(|e| e.health.as_str())
}

/// The agent of e3, which joins `dns` with the highest priority (300).
fn e3_agent(lab: &Lab, places: &Places, parties: &Parties) -> Agent {
    Agent::start(
        Path::new(BIN),
        lab,
        2,
        places,
        parties,
        "dns",
        "\"priority\": 300",
    )
}

/// Registers lab element 2 as e3 with the `agent-e3` certificate, as its agent would; the
/// registration the daemon answers (201) with.
fn register_e3(lab: &Lab, parties: &Parties) -> RegistrationInfo {
    let (status, body) = parties.call(
        lab,
        "agent-e3",
        "PUT",
        "/v1/pools/dns/elements/e3",
        &element_body(lab, 2, "\"priority\": 300"),
    );
    assert_eq!(status, 201, "{body}");
    let added: ElementAdded = serde_json::from_str(&body).expect("answer");
    added.registration.expect("a registration")
}

/// Client sockets for `n` new flows to the pool.
fn flows(lab: &Lab, n: usize) -> Vec<UdpSocket> {
    lab.udp_sockets(n, UDP_PORT)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[test]
fn an_agent_registered_element_takes_traffic_at_once_and_loses_it_within_the_miss_time() {
    let (places, parties) = (Places::new(), Parties::new());
    let (lab, mut daemon) = running(&places, &parties, &["--log-format", "json"]);
    let socks = flows(&lab, 2000);

    // e3's agent registers it with the highest priority: every new flow goes to e3 from its
    // first heartbeat on. New flows start once the agent says it registered (the lag is
    // measured from the daemon's record of the registration, which is earlier: an upper bound).
    let mut agent = e3_agent(&lab, &places, &parties);
    agent.wait_registered(Duration::from_secs(10));
    let answers = new_flows_until(&socks[..1000], Duration::from_secs(10), |a| {
        a.last().is_some_and(|(_, e)| e == "e3")
    });
    let first_e3 = answers
        .last()
        .filter(|(_, e)| e == "e3")
        .unwrap_or_else(|| panic!("e3 never answered\n{}\n{}", agent.log_text(), daemon.log_text()));
    let registered =
        log_time(&daemon.log_text(), "element added").expect("the daemon logged the registration");
    let lag = first_e3.0.duration_since(registered).unwrap_or_default();
    println!("first answer from e3 {:.1} ms after its registration", ms(lag));
    assert!(
        lag <= INTERVAL,
        "e3 took traffic {lag:?} after registering, more than one heartbeat interval\n{}",
        daemon.log_text()
    );
    let status = daemon.wait_until("e3 active", Duration::from_secs(1), |s| {
        role(s, "dns", "e3") == Some("active")
    });
    assert_eq!(health(&status, "e3"), Some("up"));

    // The element's host fails: its agent dies without a word. Within the miss time new flows
    // go to e1 again, and the failover says why.
    let killed = agent.kill();
    let answers = new_flows_until(&socks[1000..], Duration::from_secs(5), |a| {
        a.len() >= 5 && a[a.len() - 5..].iter().all(|(_, e)| e == "e1")
    });
    let last_e3 = answers
        .iter()
        .rev()
        .find(|(_, e)| e == "e3")
        .map_or(killed, |(t, _)| *t);
    let kept = last_e3.duration_since(killed).unwrap_or_default();
    println!(
        "e3 answered new flows for {:.1} ms after its agent was killed (miss time {:?})",
        ms(kept),
        INTERVAL * MISSES
    );
    assert!(
        kept <= INTERVAL * MISSES + SLACK,
        "e3 kept new flows {kept:?} after its agent died\n{}",
        daemon.log_text()
    );
    assert_eq!(answers.last().map(|(_, e)| e.as_str()), Some("e1"));
    let status = daemon.wait_until("e3 down", Duration::from_secs(1), |s| {
        health(s, "e3") == Some("down")
    });
    assert_eq!(role(&status, "dns", "e1"), Some("active"));
    assert!(
        daemon
            .log_text()
            .lines()
            .any(|l| l.contains("\"failover\"") && l.contains("HeartbeatMiss") && l.contains("\"e3\"")),
        "no heartbeat_miss failover logged\n{}",
        daemon.log_text()
    );

    // A new agent for the same element registers it again: the same registration (idempotent),
    // and e3 is back. SIGTERM deregisters it explicitly: it leaves the pool at once.
    let mut agent = e3_agent(&lab, &places, &parties);
    agent.wait_registered(Duration::from_secs(10));
    assert!(
        agent.log_text().contains("\"created\":false"),
        "the second registration was not the same one\n{}",
        agent.log_text()
    );
    daemon.wait_until("e3 active again", Duration::from_secs(2), |s| {
        role(s, "dns", "e3") == Some("active")
    });
    let status = agent.terminate(Duration::from_secs(5));
    assert!(status.success(), "agent exit {status}\n{}", agent.log_text());
    assert!(agent.log_text().contains("deregistered"), "{}", agent.log_text());
    let status = daemon.status().expect("status");
    assert!(!has(&status, "e3"), "e3 still in the pool after deregistering");
    assert_eq!(role(&status, "dns", "e1"), Some("active"));
}

#[test]
fn registrations_and_keys_survive_a_restart_and_the_next_heartbeat_is_accepted() {
    let (places, parties) = (Places::new(), Parties::new());
    let lab = setup(&places, &parties);
    let daemon = Daemon::start(Path::new(BIN), &lab, &places);
    let mut agent = e3_agent(&lab, &places, &parties);
    agent.wait_registered(Duration::from_secs(10));
    let mut daemon = daemon;
    daemon.wait_until("e3 active", Duration::from_secs(5), |s| {
        role(s, "dns", "e3") == Some("active")
    });

    // A crash: nothing is saved on the way out. The agent keeps sending with the key it has.
    let _ = daemon.kill();
    let mut daemon = Daemon::start(Path::new(BIN), &lab, &places);
    let status = daemon.wait_until(
        "heartbeats accepted after the restart",
        Duration::from_secs(5),
        |s| s.heartbeats.is_some_and(|h| h.accepted > 0),
    );
    assert!(has(&status, "e3"), "the registration was lost");
    // Past the miss time after the restart, e3 is still up and active: its heartbeats count.
    let restarted = std::time::Instant::now();
    let status = daemon.wait_until("one miss time after the restart", Duration::from_secs(5), |s| {
        restarted.elapsed() > INTERVAL * MISSES + SLACK && s.heartbeats.is_some_and(|h| h.accepted > 3)
    });
    assert_eq!(
        role(&status, "dns", "e3"),
        Some("active"),
        "{}",
        daemon.log_text()
    );
    assert_eq!(health(&status, "e3"), Some("up"));
    let h = status.heartbeats.expect("heartbeat counters");
    assert_eq!(h.rejected_total(), 0, "{h:?}");
    let socks = flows(&lab, 5);
    let answers = new_flows_until(&socks, Duration::from_secs(2), |a| a.len() >= 3);
    assert!(answers.iter().all(|(_, e)| e == "e3"), "{answers:?}");
    assert_eq!(
        agent.log_text().matches("\"registered\"").count(),
        1,
        "the agent registered again\n{}",
        agent.log_text()
    );
}

/// A registration (and a deregistration) is answered once the state that holds it is on disk:
/// a daemon killed the instant after the answer restarts with it. Before, the answer
/// went out while the state file was still being written, so a crash then lost a registration
/// the agent believed it had (its heartbeats were refused as unknown from then on).
#[test]
fn what_the_api_answers_is_on_disk_before_the_answer() {
    let (places, parties) = (Places::new(), Parties::new());
    let (lab, daemon) = running(&places, &parties, &[]);
    let state = places.scratch.path.join("state").join("state.json");
    for round in 0..5 {
        let key = register_e3(&lab, &parties).key;
        // Read at once, as a restart after a crash here would.
        let saved = std::fs::read_to_string(&state).expect("state file");
        assert!(
            saved.contains(&key),
            "round {round}: a registration answered but not in {}",
            state.display()
        );
        let (status, body) = parties.call(&lab, "agent-e3", "DELETE", "/v1/pools/dns/elements/e3", "");
        assert_eq!(status, 200, "{body}");
        let saved = std::fs::read_to_string(&state).expect("state file");
        assert!(
            !saved.contains(&key),
            "round {round}: a deregistration answered but its registration still in {}",
            state.display()
        );
    }
    drop(daemon);
}

/// Sends `datagram` to the daemon's heartbeat listener from the host namespace.
fn send(lab: &Lab, datagram: &[u8]) {
    let datagram = datagram.to_vec();
    lab.host.run(move || {
        let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
        s.send_to(&datagram, ("127.0.0.1", HEARTBEAT_PORT)).expect("send");
    });
}

#[test]
fn forged_replayed_and_unregistered_heartbeats_are_counted_and_change_nothing() {
    let (places, parties) = (Places::new(), Parties::new());
    let (lab, mut daemon) = running(&places, &parties, &[]);
    // The test registers e3 itself, to hold its key.
    let registration = register_e3(&lab, &parties);
    let key = Key::from_hex(&registration.key).expect("key");
    let id = registration.id;
    let now = || heartbeat::unix_ns(SystemTime::now());
    let counters = |d: &mut Daemon| d.status().and_then(|s| s.heartbeats).expect("heartbeat counters");

    // Forged (another key) and unregistered: counted, and e3 never comes up.
    for seq in 1..=5 {
        send(
            &lab,
            &heartbeat::encode(id, seq, now(), &Key::from_bytes([7; heartbeat::KEY_LEN])),
        );
        send(&lab, &heartbeat::encode(id + 1000, seq, now(), &key));
    }
    let status = daemon.wait_until(
        "forged and unregistered heartbeats counted",
        Duration::from_secs(2),
        |s| {
            s.heartbeats
                .is_some_and(|h| h.bad_mac == 5 && h.unknown_element == 5)
        },
    );
    assert_ne!(health(&status, "e3"), Some("up"));
    assert_eq!(role(&status, "dns", "e1"), Some("active"));
    assert_eq!(counters(&mut daemon).accepted, 0);

    // One genuine heartbeat: e3 is up and active. Then only that heartbeat again and again
    // (replayed): counted as old, and e3 fails once the miss time passes since the genuine one.
    let genuine = heartbeat::encode(id, now(), now(), &key);
    send(&lab, &genuine);
    daemon.wait_until("e3 active", Duration::from_secs(2), |s| {
        role(s, "dns", "e3") == Some("active")
    });
    let replaying = std::time::Instant::now();
    let mut replays = 0;
    let status = loop {
        send(&lab, &genuine);
        replays += 1;
        let s = daemon.status().expect("status");
        if health(&s, "e3") == Some("down") {
            break s;
        }
        assert!(
            replaying.elapsed() < Duration::from_secs(2),
            "replays kept e3 alive\n{}",
            daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(role(&status, "dns", "e1"), Some("active"));
    // The replay sent just before e3 was seen down may still be on its way to the receiver.
    let h = daemon
        .wait_until("every replay counted", Duration::from_secs(2), |s| {
            s.heartbeats.is_some_and(|h| h.old_sequence >= replays)
        })
        .heartbeats
        .expect("heartbeat counters");
    assert_eq!(h.accepted, 1, "{h:?}");
    assert_eq!(h.old_sequence, replays, "{h:?}");
    // A heartbeat stamped outside the window, however well signed.
    send(
        &lab,
        &heartbeat::encode(id, now() + 10, now() - 5_000_000_000, &key),
    );
    daemon.wait_until("the stale heartbeat counted", Duration::from_secs(2), |s| {
        s.heartbeats.is_some_and(|h| h.outside_window == 1)
    });
    // The daemon still serves the SCE.
    let (status, body) = parties.call(&lab, "orchestrator", "GET", "/v1/pools/dns", "");
    assert_eq!(status, 200, "{body}");
}

#[test]
fn operators_add_and_remove_elements_and_the_sce_asks_for_a_redundancy_level() {
    let (places, parties) = (Places::new(), Parties::new());
    let (lab, mut daemon) = running(&places, &parties, &[]);
    let path = "/v1/pools/dns/elements/e3";
    let body = element_body(&lab, 2, "\"priority\": 10");

    // Refusals first: nothing changes.
    for (cn, method, path, body, expected, says) in [
        ("orchestrator", "PUT", path, body.as_str(), 403, "role"),
        (
            "ops",
            "PUT",
            "/v1/pools/nope/elements/e3",
            body.as_str(),
            404,
            "no pool nope",
        ),
        (
            "ops",
            "PUT",
            "/v1/pools/dns/elements/e1",
            body.as_str(),
            409,
            "configuration file",
        ),
        (
            "ops",
            "PUT",
            path,
            "{\"address\": \"10.9.9.9\", \"weight\": 0}",
            422,
            "weight",
        ),
        ("ops", "PUT", path, "[1, 2]", 422, "JSON object"),
        ("ops", "PUT", path, "{\"address\": ", 400, ""),
        (
            "ops",
            "DELETE",
            "/v1/pools/dns/elements/e1",
            "",
            409,
            "configuration file",
        ),
        ("ops", "DELETE", path, "", 404, "no element e3"),
        (
            "orchestrator",
            "PUT",
            "/v1/pools/dns/redundancy",
            "{\"active\": 3}",
            409,
            "2 elements",
        ),
        (
            "orchestrator",
            "PUT",
            "/v1/pools/dns/redundancy",
            "{\"actives\": 1}",
            422,
            "unknown field",
        ),
    ] {
        let (status, answer) = parties.call(&lab, cn, method, path, body);
        assert_eq!(status, expected, "{cn} {method} {path} {body}: {answer}");
        assert!(
            answer.contains(says),
            "{cn} {method} {path}: `{answer}` does not say `{says}`"
        );
    }
    let status = daemon.status().expect("status");
    assert!(!has(&status, "e3"));

    // An operator adds e3: probed like the file's elements, it rises and stands by. The same
    // request again changes nothing.
    let (status, answer) = parties.call(&lab, "ops", "PUT", path, &body);
    assert_eq!(status, 201, "{answer}");
    assert!(answer.contains("\"registration\":null"), "{answer}");
    daemon.wait_until("e3 up and standby", Duration::from_secs(5), |s| {
        role(s, "dns", "e3") == Some("standby") && health(s, "e3") == Some("up")
    });
    let (status, answer) = parties.call(&lab, "ops", "PUT", path, &body);
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("\"created\":false"), "{answer}");
    // An agent may not take it over.
    let (status, answer) = parties.call(&lab, "agent-e3", "PUT", path, &body);
    assert_eq!(status, 409, "{answer}");

    let (_, pools) = parties.call(&lab, "orchestrator", "GET", "/v1/pools", "");
    assert!(pools.contains("\"configured_actives\":1"), "{pools}");

    // The SCE asks for two actives: met with e1 and e2 active and e3 standing by.
    let (status, answer) = parties.call(
        &lab,
        "orchestrator",
        "PUT",
        "/v1/pools/dns/redundancy",
        "{\"active\": 2}",
    );
    assert_eq!(status, 200, "{answer}");
    let level: serde_json::Value = serde_json::from_str(&answer).expect("JSON");
    assert_eq!(level["met"], true, "{answer}");
    assert_eq!(
        (level["actives"].as_u64(), level["standbys"].as_u64()),
        (Some(2), Some(1))
    );
    let status = daemon.status().expect("status");
    assert_eq!(role(&status, "dns", "e2"), Some("active"));
    let (_, pool) = parties.call(&lab, "orchestrator", "GET", "/v1/pools/dns", "");
    assert!(pool.contains("\"configured_actives\":2"), "{pool}");
    // The list, encoded once and kept until a pool changes, changed with it.
    let (_, pools) = parties.call(&lab, "orchestrator", "GET", "/v1/pools", "");
    assert!(
        pools.contains("\"configured_actives\":2") && pools.contains("\"standbys\":1"),
        "{pools}"
    );

    // The operator removes e3: e1 and e2 stay active, the level is still met.
    let (status, answer) = parties.call(&lab, "ops", "DELETE", path, "");
    assert_eq!(status, 200, "{answer}");
    let status = daemon.status().expect("status");
    assert!(!has(&status, "e3"));
    let (_, pool) = parties.call(&lab, "orchestrator", "GET", "/v1/pools/dns", "");
    assert!(
        pool.contains("\"configured_actives\":2") && pool.contains("\"state\":\"up\""),
        "{pool}"
    );
    let (_, pools) = parties.call(&lab, "orchestrator", "GET", "/v1/pools", "");
    assert!(pools.contains("\"standbys\":0"), "{pools}");
}

/// `api.crls` are read again on every reload: a client revoked since is refused, others go on;
/// a CRL that does not parse refuses the reload, naming the file, and the last good one stays.
#[test]
fn a_reload_reads_the_crls_again() {
    let (places, parties) = (Places::new(), Parties::new());
    let (lab, daemon) = running(&places, &parties, &[]);
    assert_eq!(parties.try_call(&lab, "ops", "GET", "/v1/status"), Ok(200));

    parties.revoke(&places, &["ops"]);
    let answer = daemon.request(&vnfpool_daemon::control::Request::Reload);
    assert!(
        matches!(answer, vnfpool_daemon::control::Response::Ok { .. }),
        "{answer:?}"
    );
    let refused = parties.try_call(&lab, "ops", "GET", "/v1/status");
    assert!(refused.is_err(), "revoked, yet {refused:?}");
    assert_eq!(
        parties.try_call(&lab, "orchestrator", "GET", "/v1/pools"),
        Ok(200)
    );

    std::fs::write(
        Parties::crl_path(&places),
        "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
    )
    .expect("a broken CRL");
    let answer = daemon.request(&vnfpool_daemon::control::Request::Reload);
    let vnfpool_daemon::control::Response::Error { message } = &answer else {
        panic!("a broken CRL was accepted: {answer:?}");
    };
    assert!(message.contains("clients.crl"), "{message}");
    assert!(
        parties.try_call(&lab, "ops", "GET", "/v1/status").is_err(),
        "the last good CRL stays"
    );
    assert_eq!(
        parties.try_call(&lab, "orchestrator", "GET", "/v1/pools"),
        Ok(200)
    );
}
