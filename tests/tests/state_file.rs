//! A state file the daemon cannot read is never silently replaced: it holds registrations and
//! their keys, drains, redundancy levels and the slot numbers that adopted flows name. The
//! daemon refuses to start over it, saying which file and what to do; `--move-aside-bad-state`
//! keeps it aside and starts from probes. (Its log, a file, carries no terminal colour codes.)

use std::{path::Path, time::Duration};

use vnfpool_tests::{
    daemon::{Daemon, Places, role},
    lab::{Lab, TCP_PORT, UDP_PORT},
};

const BIN: &str = env!("CARGO_BIN_EXE_vnfpool-under-test");
const CORRUPT: &[u8] = b"{\"pools\": {\"dns\": {\"index\": 3, \"slo";

fn config(lab: &Lab, places: &Places) -> String {
    format!(
        "{}pools:\n  - name: dns\n    vip: {}\n    ports: [{UDP_PORT}]\n    protocol: udp\n    redundancy: {{ model: active-active }}\n    health: {{ check: tcp, port: {TCP_PORT}, interval: 10ms, timeout: 50ms, rise: 2, fall: 3 }}\n{}",
        places.daemon_section(lab),
        lab.vip,
        Places::elements(lab, &[100]),
    )
}

#[test]
fn an_unreadable_state_file_stops_the_start_and_is_kept() {
    let lab = Lab::new(1);
    let places = Places::new();
    std::fs::write(places.config(), config(&lab, &places)).expect("config");
    let state_dir = places.scratch.path.join("state");
    std::fs::create_dir_all(&state_dir).expect("state dir");
    let state = state_dir.join("state.json");
    std::fs::write(&state, CORRUPT).expect("corrupt state");

    let run = vnfpool_tests::daemon::command(Path::new(BIN), &lab, &places)
        .output()
        .expect("daemon");
    let msg = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "daemon: {msg}");
    assert!(
        msg.contains("state.json") && msg.contains("--move-aside-bad-state"),
        "names the file and the way out: {msg}"
    );
    assert_eq!(std::fs::read(&state).expect("state"), CORRUPT, "left as it was");

    let mut daemon = Daemon::start_with(Path::new(BIN), &lab, &places, &["--move-aside-bad-state"]);
    daemon.wait_until("e1 active from probes", Duration::from_secs(10), |s| {
        role(s, "dns", "e1") == Some("active")
    });
    let aside: Vec<_> = std::fs::read_dir(&state_dir)
        .expect("state dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.to_string_lossy().contains("state.json.bad-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(std::fs::read(&aside[0]).expect("kept"), CORRUPT);
    let log = daemon.log_text();
    assert!(log.contains("state file moved aside"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "a log file gets no terminal colour codes:\n{log}"
    );
}

/// The pinned flow table's hash key, read with bpftool's view of the map (the daemon's own
/// pins).
fn pinned_flow_hash_key(places: &Places) -> vnfpool_common::flow::HashKey {
    use aya::maps::{Array, Map, MapData};
    let data = MapData::from_pin(places.pins.path().join(vnfpool_common::maps::FLOW_CTL))
        .expect("the pinned VNF_FLOW_CTL");
    let ctl: Array<MapData, vnfpool_common::flow::FlowCtl> =
        Array::try_from(Map::Array(data)).expect("an array of FlowCtl");
    ctl.get(&0, 0).expect("reading it").hash_key
}

/// A node on its own keeps its flow hash key in the state file: after a reboot (the pins are
/// gone, the elements and their clients' connections are not), flows hash as before and keep
/// their Maglev positions. A restart that adopts the pins keeps the key too.
#[test]
fn the_flow_hash_key_outlives_the_pins_in_the_state_file() {
    let lab = Lab::new(1);
    let places = Places::new();
    std::fs::write(places.config(), config(&lab, &places)).expect("config");
    let start = || {
        let mut daemon = Daemon::start(Path::new(BIN), &lab, &places);
        daemon.wait_until("e1 active", Duration::from_secs(10), |s| {
            role(s, "dns", "e1") == Some("active")
        });
        daemon
    };
    let daemon = start();
    let key = pinned_flow_hash_key(&places);
    assert!(key != [0, 0], "a random key, not the zero key");
    let exit = daemon.terminate(Duration::from_secs(10));
    assert!(exit.success(), "the daemon stops cleanly on SIGTERM: {exit}");
    let state = std::fs::read_to_string(places.scratch.path.join("state/state.json")).expect("state file");
    let saved: serde_json::Value = serde_json::from_str(&state).expect("JSON");
    assert_eq!(
        saved["flow_hash_key"],
        serde_json::json!(key),
        "the state holds the key: {state}"
    );

    // A reboot: every pin gone, the program detached.
    for pin in std::fs::read_dir(places.pins.path()).expect("pin dir") {
        std::fs::remove_file(pin.expect("a pin").path()).expect("unpinning");
    }
    let daemon = start();
    assert!(
        pinned_flow_hash_key(&places) == key,
        "the new table hashes with the saved key"
    );
    let exit = daemon.terminate(Duration::from_secs(10));
    assert!(exit.success(), "the daemon stops cleanly on SIGTERM: {exit}");
}
