//! `packaging/vnfpool.service` is a unit systemd accepts: `systemd-analyze verify` says nothing
//! about it (the check fails on any message, since verify exits 0 on most mistakes and only
//! prints them), its hardening rates no worse than 2.5 in `systemd-analyze security`, and it
//! is what the daemon needs (notify readiness, restart on failure, a user that is not root,
//! no `CAP_SYS_ADMIN`). Runs on the unit file alone: no systemd needs to be running.

use std::process::Command;

use vnfpool_tests::{daemon::Scratch, unit};

const BIN: &str = env!("CARGO_BIN_EXE_vnfpool-under-test");
const INSTALLED: &str = "/usr/bin/vnfpool";

/// The unit with its commands pointing at the built binary (verify checks that they exist).
fn installable(unit: &str) -> String {
    assert!(unit.contains(INSTALLED), "the unit runs {INSTALLED}");
    unit.replace(INSTALLED, BIN)
}

/// `systemd-analyze <args…> <scratch>/vnfpool.service` with `text` as the unit: its exit status
/// and everything it printed.
fn analyze(scratch: &Scratch, args: &[&str], text: &str) -> (bool, String) {
    let path = scratch.path.join("vnfpool.service");
    std::fs::write(&path, text).expect("writing the unit");
    let out = Command::new("systemd-analyze")
        .args(args)
        .arg(&path)
        .output()
        .expect("running systemd-analyze (Debian package systemd)");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), printed)
}

/// Verify succeeds and prints nothing.
fn verify(scratch: &Scratch, text: &str) -> Result<(), String> {
    match analyze(scratch, &["verify"], text) {
        (true, printed) if printed.trim().is_empty() => Ok(()),
        (_, printed) => Err(printed),
    }
}

#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    let scratch = Scratch::new();
    let unit = installable(&unit::text());
    if let Err(printed) = verify(&scratch, &unit) {
        panic!("systemd-analyze verify {}:\n{printed}", unit::path().display());
    }
    // The check can fail: a misspelt setting, a bad value, a missing binary are all reported.
    for (from, to) in [
        ("ProtectSystem=strict", "ProtectSytem=strict"),
        ("Type=notify", "Type=notfy"),
        ("RestartSec=1s", "RestartSec=1q"),
        (
            "SystemCallFilter=@system-service",
            "SystemCallFilter=@system-servce",
        ),
        (&format!("ExecStart={BIN}"), "ExecStart=/nonexistent/vnfpool"),
    ] {
        assert!(unit.contains(from), "the unit has {from}");
        let broken = unit.replacen(from, to, 1);
        assert!(verify(&scratch, &broken).is_err(), "verify reports {from} → {to}");
    }
}

#[test]
fn the_units_hardening_rates_at_most_2_5() {
    let scratch = Scratch::new();
    let (ok, printed) = analyze(
        &scratch,
        &["security", "--offline=true", "--threshold=25", "--no-pager"],
        &installable(&unit::text()),
    );
    let overall = printed
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or("(no overall rating)");
    println!("{overall}");
    assert!(ok, "systemd-analyze security:\n{printed}");
}

#[test]
fn the_unit_notifies_restarts_on_failure_and_runs_as_a_user_without_cap_sys_admin() {
    let text = unit::text();
    let one = |key: &str| -> String {
        let v = unit::values(&text, key);
        assert!(!v.is_empty(), "{key}= is set");
        v.join(" ")
    };
    assert_eq!(one("Type"), "notify");
    assert_eq!(one("Restart"), "on-failure");
    assert_eq!(
        one("RestartPreventExitStatus"),
        "2",
        "a bad configuration is not retried"
    );
    assert_eq!(one("User"), "vnfpool");
    assert_eq!(one("NoNewPrivileges"), "yes");
    assert_eq!(
        one("ExecStart"),
        format!("{INSTALLED} daemon --config /etc/vnfpool/pools.yaml")
    );
    assert!(one("ExecReload").starts_with(&format!("{INSTALLED} reload")));
    let caps = unit::capabilities(&text);
    assert!(!caps.is_empty(), "some capabilities are granted");
    assert!(
        !caps.iter().any(|c| c == "CAP_SYS_ADMIN"),
        "no CAP_SYS_ADMIN: {caps:?}"
    );
    // One comment per capability, saying what needs it.
    for cap in &caps {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("# {cap}: "))),
            "a comment says what needs {cap}"
        );
    }
}
