//! The Service Control Entity's view of a pool through the real daemon's HTTPS API, in the
//! lab: it reads the pool and follows its events across an element failure and recovery,
//! sees the capacity drop and come back, and never learns an element's name or address.

use std::{net::SocketAddr, path::Path, time::Duration};

use vnfpool_daemon::api::client::{Client, SseEvent};
use vnfpool_tests::{
    daemon::{Daemon, Places, role},
    lab::{Lab, TCP_PORT, UDP_PORT},
    pki::{Ca, server_files},
};

const BIN: &str = env!("CARGO_BIN_EXE_vnfpool-under-test");
const API: &str = "127.0.0.1:9443";

/// Runs `f` with an SCE client on a runtime inside the lab's host namespace (where the API is).
fn as_sce<R: Send>(lab: &Lab, ca: &Ca, f: impl AsyncFnOnce(Client) -> R + Send) -> R {
    let (cert, key) = ca.issue("orchestrator", &[]);
    let ca_pem = ca.pem();
    lab.host.run(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let addr: SocketAddr = API.parse().expect("addr");
        let client = Client::new(addr, &ca_pem, Some((&cert, &key))).expect("client");
        rt.block_on(f(client))
    })
}

fn state_of(e: &SseEvent) -> serde_json::Value {
    serde_json::from_str(&e.data).unwrap_or_else(|err| panic!("{err}: {e:?}"))
}

#[test]
fn the_sce_follows_capacity_across_a_failure_without_element_identity() {
    let mut lab = Lab::new(3);
    let places = Places::new();
    let ca = Ca::new("vnfpool lab");
    let (cert, key, client_ca) = server_files(&ca, &places.scratch.path, &["127.0.0.1"]);
    let text = format!(
        "{}api:\n  listen: {API}\n  cert: {}\n  key: {}\n  client_ca: {}\n  clients:\n    - {{ subject: \"CN=orchestrator\", role: sce }}\npools:\n  - name: dns\n    vip: {}\n    ports: [{UDP_PORT}]\n    protocol: udp\n    redundancy: {{ model: active-standby, preempt: false }}\n    health: {{ check: tcp, port: {TCP_PORT}, interval: 10ms, timeout: 50ms, rise: 2, fall: 3 }}\n{}",
        places.daemon_section(&lab),
        cert.display(),
        key.display(),
        client_ca.display(),
        lab.vip,
        Places::elements(&lab, &[300, 200, 100]),
    );
    std::fs::write(places.config(), text).expect("config");
    let mut daemon = Daemon::start(Path::new(BIN), &lab, &places);
    daemon.wait_until("e1 active, two standbys", Duration::from_secs(10), |s| {
        role(s, "dns", "e1") == Some("active") && role(s, "dns", "e3") == Some("standby")
    });
    let secrets: Vec<String> = ["e1", "e2", "e3", "element"]
        .iter()
        .map(|s| (*s).to_owned())
        .chain(lab.elements.iter().map(|e| e.addr.to_string()))
        .collect();
    let identity_free = |what: &str, text: &str| {
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "the SCE saw `{secret}` in {what}: {text}"
            );
        }
    };

    let (status, body) = as_sce(&lab, &ca, async |c| {
        c.call("GET", "/v1/pools/dns", "").await.expect("GET")
    });
    assert_eq!(status.as_u16(), 200, "{body}");
    identity_free("the pool", &body);
    let pool: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(pool["state"], "up");
    assert_eq!(pool["capacity"]["standbys"], 2);
    assert_eq!(pool["capacity"]["redundancy_met"], true);

    // e1 fails: e2 takes over, one standby left; then e1 comes back as a standby.
    lab.stop_services(0);
    daemon.wait_until("e2 active", Duration::from_secs(3), |s| {
        role(s, "dns", "e2") == Some("active")
    });
    lab.start_services(0);
    daemon.wait_until("e1 standby again", Duration::from_secs(3), |s| {
        role(s, "dns", "e1") == Some("standby")
    });

    // The events are kept: a client that connects now receives them all, in order.
    let degraded_then_up = |events: &[SseEvent]| {
        let states: Vec<serde_json::Value> =
            events.iter().filter(|e| e.kind == "pool").map(state_of).collect();
        let degraded = states.iter().position(|s| s["state"] == "degraded");
        degraded.is_some_and(|d| states[d..].iter().any(|s| s["state"] == "up"))
    };
    let events = as_sce(&lab, &ca, async |c| {
        c.follow(None, Duration::from_secs(5), degraded_then_up)
            .await
            .expect("events")
    });
    for e in &events {
        identity_free("an event", &e.data);
    }
    let ids: Vec<u64> = events.iter().map(|e| e.id.parse().expect("id")).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    let degraded = events
        .iter()
        .find(|e| e.kind == "pool" && state_of(e)["state"] == "degraded")
        .expect("a degraded event");
    let capacity = &state_of(degraded)["capacity"];
    assert_eq!(
        (capacity["actives"].as_u64(), capacity["standbys"].as_u64()),
        (Some(1), Some(1)),
        "{capacity}"
    );
    assert_eq!(capacity["redundancy_met"], false);

    // Reconnecting after the degraded event gives what followed it.
    let after: u64 = degraded.id.parse().expect("id");
    let rest = as_sce(&lab, &ca, async |c| {
        c.follow(Some(after), Duration::from_secs(5), |e| {
            e.iter().any(|e| e.kind == "pool" && state_of(e)["state"] == "up")
        })
        .await
        .expect("events after")
    });
    assert!(
        rest.iter().all(|e| e.id.parse::<u64>().expect("id") > after),
        "{rest:?}"
    );
}
