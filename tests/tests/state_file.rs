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
