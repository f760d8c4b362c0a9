//! The daemon the way `packaging/vnfpool.service` runs it: as a user that is not root, holding
//! exactly the unit's capabilities (read from the unit file) and nothing else, with
//! `no_new_privs`, told where to send its readiness (`NOTIFY_SOCKET`, as systemd does for
//! `Type=notify`). In the lab it starts, attaches, probes, reports ready once its pool is live,
//! fails over when the active's service stops, and stops on SIGTERM; after a crash it adopts the
//! pins, including pins a daemon run as root left behind once they are handed over (what the
//! unit's `ExecStartPre=` does).

use std::{
    net::UdpSocket,
    os::unix::{fs::MetadataExt as _, net::UnixDatagram},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use vnfpool_tests::{
    daemon::{Daemon, Places, command_via, role},
    lab::{self, Lab, TCP_PORT, UDP_PORT},
    traffic::{around, exchange, gap, gap_within, probe_until},
    unit,
    unprivileged::{Credentials, Unprivileged},
};

const BIN: &str = env!("CARGO_BIN_EXE_vnfpool-under-test");
const INTERVAL_MS: u64 = 10;
const FALL: u64 = 3;

/// A UDP pool on the lab's VIP, active-standby by priority (e1 > e2 > …), probed over TCP.
fn config(lab: &Lab, places: &Places) -> String {
    let priorities = &[300, 200, 100][..lab.elements.len()];
    format!(
        "{}pools:\n  - name: dns\n    vip: {}\n    ports: [{UDP_PORT}]\n    protocol: udp\n    redundancy: {{ model: active-standby, preempt: true }}\n    health: {{ check: tcp, port: {TCP_PORT}, interval: {INTERVAL_MS}ms, timeout: 50ms, rise: 2, fall: {FALL} }}\n{}",
        places.daemon_section(lab),
        lab.vip,
        Places::elements(lab, priorities),
    )
}

fn bound() -> Duration {
    Duration::from_millis(INTERVAL_MS * FALL + 50)
}

/// What the unit grants, and the user to run as, with everything the daemon writes (scratch
/// directory: state, socket; pin directory) handed to that user beforehand, and its own copy of
/// the binary (the build directory may not be reachable by other users).
struct Setup {
    caps: Vec<String>,
    user: Unprivileged,
    binary: PathBuf,
}

impl Setup {
    fn new(places: &Places) -> Self {
        let caps = unit::capabilities(&unit::text());
        assert!(!caps.is_empty(), "the unit grants no capability");
        let user = Unprivileged::free();
        user.own(&places.scratch.path);
        user.own(places.pins.path());
        let binary = places.scratch.path.join("vnfpool");
        std::fs::copy(BIN, &binary).expect("copying the binary");
        Self { caps, user, binary }
    }

    /// `nsenter --net=<host> setpriv <as the user, with the unit's capabilities> -- vnfpool daemon …`
    /// with `NOTIFY_SOCKET`.
    fn start(&self, lab: &Lab, places: &Places, notify: &Notify) -> Daemon {
        // Started with the usual soft limit of 1,024 descriptors (below the hard one), which the
        // daemon raises.
        let wrapper: Vec<String> = ["prlimit".to_owned(), "--nofile=1024:".to_owned(), "--".to_owned()]
            .into_iter()
            .chain(self.user.setpriv(&self.caps))
            .collect();
        let mut command = command_via(&wrapper, &self.binary, lab, places);
        command.env("NOTIFY_SOCKET", &notify.path);
        Daemon::spawn(command, places)
    }

    /// The daemon runs as the user, with exactly the unit's capabilities.
    #[track_caller]
    fn check_credentials(&self, daemon: &Daemon) {
        let c = Credentials::of(daemon.pid());
        let caps = unit::mask(&self.caps);
        let expected = Credentials {
            uids: vec![self.user.uid; 4],
            gids: vec![self.user.gid; 4],
            groups: Vec::new(),
            effective: caps,
            permitted: caps,
            inheritable: caps,
            // Emptied at start: exec probes must not inherit the capabilities.
            ambient: 0,
            bounding: caps,
            no_new_privs: true,
        };
        assert_eq!(c, expected, "the daemon's credentials ({:?})", self.caps);
        // The soft limit on descriptors raised to the hard one at start.
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", daemon.pid())).expect("limits");
        let open_files: Vec<&str> = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .expect("a descriptor limit")
            .split_whitespace()
            .collect();
        assert_eq!(
            open_files[3], open_files[4],
            "soft and hard descriptor limits: {limits}"
        );
    }
}

/// The receiving end of `NOTIFY_SOCKET`, as systemd's: one datagram per notification, one
/// `KEY=value` per line.
struct Notify {
    socket: UnixDatagram,
    path: PathBuf,
}

impl Notify {
    fn bind(dir: &Path, user: Unprivileged) -> Self {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("binding the notify socket");
        // Sending to it needs write access to the socket file.
        user.own(&path);
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .expect("timeout");
        Self { socket, path }
    }

    /// The lines of the first notification that has line `line`, with those before it; panics
    /// with `log()` after `timeout`.
    fn wait_for(&self, line: &str, timeout: Duration, log: impl Fn() -> String) -> Vec<String> {
        let start = Instant::now();
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            if let Ok(n) = self.socket.recv(&mut buf) {
                let message = String::from_utf8_lossy(&buf[..n]).into_owned();
                seen.extend(message.lines().map(str::to_owned));
                if message.lines().any(|l| l == line) {
                    return seen;
                }
            }
            assert!(
                start.elapsed() < timeout,
                "no {line} within {timeout:?} (notifications: {seen:?})\n{}",
                log()
            );
        }
    }
}

/// Reads and drops the answers still queued on `sock` (late ones of earlier probing), so that
/// an exchange that follows counts only its own.
fn drain(sock: &UdpSocket) {
    sock.set_read_timeout(Some(Duration::from_millis(20)))
        .expect("timeout");
    let mut buf = [0u8; 64];
    while sock.recv(&mut buf).is_ok() {}
}

/// Every pin in the pin directory was made by the daemon, so belongs to the user; the XDP link
/// is among them.
#[track_caller]
fn check_pins(places: &Places, user: Unprivileged) {
    let pins: Vec<(String, u32)> = std::fs::read_dir(places.pins.path())
        .expect("pin dir")
        .map(|e| {
            let e = e.expect("pin");
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().expect("pin metadata").uid(),
            )
        })
        .collect();
    assert!(
        pins.iter().any(|(name, _)| name.starts_with("link_")),
        "the XDP link is pinned: {pins:?}"
    );
    assert!(
        pins.iter().all(|&(_, uid)| uid == user.uid),
        "every pin is the user's: {pins:?}"
    );
}

#[test]
fn unprivileged_with_the_units_capabilities_it_gets_ready_fails_over_and_stops() {
    let mut lab = Lab::new(3);
    let places = Places::new();
    let setup = Setup::new(&places);
    std::fs::write(places.config(), config(&lab, &places)).expect("config");
    let notify = Notify::bind(&places.scratch.path, setup.user);

    let mut daemon = setup.start(&lab, &places, &notify);
    let ready = notify.wait_for("READY=1", Duration::from_secs(10), || daemon.log_text());
    // Ready means live: the VIP is served at once, by the active.
    let sock: UdpSocket = lab.udp_sockets(1, UDP_PORT).pop().expect("a socket");
    let first = lab::ask_udp(&sock)
        .unwrap_or_else(|e| panic!("the VIP right after READY=1: {e}\n{}", daemon.log_text()));
    assert_eq!(first, "e1", "the VIP right after READY=1");
    assert!(
        ready.iter().any(|l| l == "STATUS=1 pools live"),
        "a status line: {ready:?}"
    );
    setup.check_credentials(&daemon);
    check_pins(&places, setup.user);
    let xdp = lab
        .host
        .ip_output(&["-d", "link", "show", "dev", &lab.ingress.name]);
    assert!(xdp.contains("xdp"), "attached:\n{xdp}");

    daemon.wait_until("e1 active, e2 and e3 standby", Duration::from_secs(10), |s| {
        role(s, "dns", "e1") == Some("active")
            && role(s, "dns", "e2") == Some("standby")
            && role(s, "dns", "e3") == Some("standby")
    });
    let answers = probe_until(&sock, Duration::from_secs(2), |a| a.len() >= 20);
    assert!(
        answers.len() >= 20 && answers.iter().all(|(_, e)| e == "e1"),
        "all traffic on e1: {answers:?}"
    );

    // The active's service stops: traffic moves to the standby within the bound.
    let answers = around(&sock, "e2", || lab.stop_services(0));
    gap_within(
        &answers,
        "e1",
        "e2",
        bound(),
        "unprivileged, service stop",
        || daemon.log_text(),
    );
    let s = daemon.wait_until("e2 active", Duration::from_secs(2), |s| {
        role(s, "dns", "e2") == Some("active")
    });
    let f = &s.pools[0].failovers;
    assert!(f.iter().any(|f| f.element == "e1"), "failover recorded: {f:?}");

    // `systemctl stop`: SIGTERM, STOPPING=1, exit status 0; the data plane keeps forwarding.
    let log = places.log();
    let status = daemon.terminate(Duration::from_secs(5));
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        status.success(),
        "exit status after SIGTERM: {status}\n{}",
        log_text()
    );
    notify.wait_for("STOPPING=1", Duration::from_secs(1), log_text);
    drain(&sock);
    let (sent, got) = exchange(&sock, Duration::from_millis(200));
    assert_eq!(
        got.get("e2").copied(),
        Some(sent),
        "with the daemon stopped: {sent} sent, answers {got:?}"
    );
}

#[test]
fn unprivileged_it_adopts_the_pins_a_root_daemon_left_once_they_are_handed_over() {
    let mut lab = Lab::new(2);
    let places = Places::new();
    std::fs::write(places.config(), config(&lab, &places)).expect("config");

    // As root first, like an installation from before the unit; then a crash.
    let mut root = Daemon::start(Path::new(BIN), &lab, &places);
    root.wait_until("e1 active", Duration::from_secs(10), |s| {
        role(s, "dns", "e1") == Some("active")
    });
    let sock: UdpSocket = lab.udp_sockets(1, UDP_PORT).pop().expect("a socket");
    let answers = probe_until(&sock, Duration::from_secs(2), |a| a.len() >= 20);
    assert!(
        answers.iter().all(|(_, e)| e == "e1"),
        "all traffic on e1: {answers:?}"
    );
    let generation = root.status().expect("status").pools[0].generation;
    assert!(!root.kill().success(), "killed");

    // What the unit does before each start: the pins, and the state directory, become the
    // user's (ExecStartPre=+chown -R …, StateDirectory=).
    let setup = Setup::new(&places);
    setup.user.own_all(places.pins.path());
    setup.user.own_all(&places.scratch.path.join("state"));
    let notify = Notify::bind(&places.scratch.path, setup.user);

    // Restarted unprivileged (Restart=on-failure) under traffic: the flow never notices.
    drain(&sock);
    let mut daemon = std::thread::scope(|s| {
        let traffic = s.spawn(|| exchange(&sock, Duration::from_millis(1500)));
        let mut d = setup.start(&lab, &places, &notify);
        d.wait_until("e1 active after the restart", Duration::from_secs(5), |s| {
            role(s, "dns", "e1") == Some("active")
        });
        let (sent, got) = traffic.join().expect("traffic thread");
        assert_eq!(
            got.get("e1").copied(),
            Some(sent),
            "across the restart: {sent} sent, answers {got:?}\n{}",
            d.log_text()
        );
        d
    });
    notify.wait_for("READY=1", Duration::from_secs(5), || daemon.log_text());
    setup.check_credentials(&daemon);
    assert!(
        daemon.log_text().contains("adopted the pinned XDP attachment"),
        "{}",
        daemon.log_text()
    );
    let status = daemon.status().expect("status");
    assert!(
        status.pools[0].generation > generation,
        "the unprivileged daemon wrote its mapping on top of the adopted one"
    );

    // And it still fails over, writing the adopted maps.
    let answers = around(&sock, "e2", || lab.stop_services(0));
    let g = gap(&answers, "e1", "e2");
    assert!(
        g <= bound(),
        "gap {g:?} over {:?}\n{}",
        bound(),
        daemon.log_text()
    );
    daemon.wait_until("e2 active", Duration::from_secs(2), |s| {
        role(s, "dns", "e2") == Some("active")
    });
}

#[test]
fn unprivileged_exec_probes_run_without_the_daemons_capabilities() {
    let lab = Lab::new(1);
    let places = Places::new();
    let setup = Setup::new(&places);
    let seen = places.scratch.path.join("probe-caps");
    let check = format!(
        "{{ check: exec, command: [/bin/sh, -c, \"grep ^Cap /proc/self/status > {}.tmp && mv {}.tmp {}\"], interval: 50ms, timeout: 1s, rise: 1, fall: 3 }}",
        seen.display(),
        seen.display(),
        seen.display()
    );
    let text = config(&lab, &places).replace(
        &format!("{{ check: tcp, port: {TCP_PORT}, interval: {INTERVAL_MS}ms, timeout: 50ms, rise: 2, fall: {FALL} }}"),
        &check,
    );
    assert!(text.contains("check: exec"), "{text}");
    std::fs::write(places.config(), text).expect("config");
    let notify = Notify::bind(&places.scratch.path, setup.user);
    let mut daemon = setup.start(&lab, &places, &notify);
    daemon.wait_until("e1 active on its exec probe", Duration::from_secs(10), |s| {
        role(s, "dns", "e1") == Some("active")
    });
    let caps = std::fs::read_to_string(&seen).expect("the probe wrote its capabilities");
    for set in ["CapAmb", "CapPrm", "CapEff"] {
        let line = caps
            .lines()
            .find(|l| l.starts_with(set))
            .unwrap_or_else(|| panic!("no {set} in {caps}"));
        assert!(
            line.ends_with("0000000000000000"),
            "an exec probe runs with capabilities: {line}\n{caps}"
        );
    }
}
