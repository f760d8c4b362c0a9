//! `vnfpool watch` against the real daemon in the lab: in a pseudo-terminal (tmux) it shows the
//! elements' roles and packet rates, a failover (the new active and the event), says when the
//! daemon is gone and comes back with it, and quits on `q` leaving the alternate screen; with a
//! pipe for stdout it prints text snapshots.

use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use vnfpool_daemon::control::Status;
use vnfpool_tests::{
    daemon::{Daemon, Places, role},
    lab::{Lab, TCP_PORT, UDP_PORT},
    tmux::Pane,
    traffic::exchange,
};

const BIN: &str = env!("CARGO_BIN_EXE_vnfpool-under-test");

/// A UDP pool on the lab's VIP, active-standby by priority (e1 > e2 > e3), probed over TCP.
fn config(lab: &Lab, places: &Places) -> String {
    format!(
        "{}pools:\n  - name: dns\n    vip: {}\n    ports: [{UDP_PORT}]\n    protocol: udp\n    redundancy: {{ model: active-standby, preempt: true }}\n    health: {{ check: tcp, port: {TCP_PORT}, interval: 10ms, timeout: 50ms, rise: 2, fall: 3 }}\n{}",
        places.daemon_section(lab),
        lab.vip,
        Places::elements(lab, &[300, 200, 100]),
    )
}

/// The words of the screen row of element `name` in a pool table (`│e1  10.… active up 12 …`):
/// name, address, role, health, packets per second, packets, backup….
fn element_row(screen: &str, name: &str) -> Option<Vec<String>> {
    screen.lines().find_map(|line| {
        let words: Vec<String> = line
            .trim_matches(|c: char| c == '│' || c.is_whitespace())
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        (words.first().map(String::as_str) == Some(name) && words.len() >= 6).then_some(words)
    })
}

fn has_role(screen: &str, name: &str, role: &str) -> bool {
    element_row(screen, name).is_some_and(|w| w[2] == role)
}

/// Failover rows: time, pool, element, reason, detection (ms), switch (ms).
fn failover_rows(screen: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut in_events = false;
    for line in screen.lines() {
        if line.contains("recent failovers") {
            in_events = true;
            continue;
        }
        if !in_events {
            continue;
        }
        let words: Vec<String> = line
            .trim_matches(|c: char| c == '│' || c.is_whitespace())
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        if words.len() == 8 && words[0].len() == 8 && words[0].as_bytes()[2] == b':' {
            rows.push(words);
        }
    }
    rows
}

/// `binary watch` with stdout on a pipe; its lines arrive on the channel.
struct PlainWatch {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl PlainWatch {
    fn start(socket: &Path) -> Self {
        let mut child = Command::new(BIN)
            .arg("watch")
            .arg("--socket")
            .arg(socket)
            .args(["--interval", "100ms"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawning vnfpool watch");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    /// Reads lines until one for which `done` holds; panics after `timeout` with what came.
    fn until(&self, what: &str, timeout: Duration, done: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        let mut seen = Vec::new();
        loop {
            let left = timeout.saturating_sub(start.elapsed());
            match self.lines.recv_timeout(left) {
                Ok(line) if done(&line) => return line,
                Ok(line) => seen.push(line),
                Err(e) => panic!(
                    "no line {what} within {timeout:?} ({e}); got:\n{}",
                    seen.join("\n")
                ),
            }
        }
    }
}

impl Drop for PlainWatch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The failover row of e1 on `screen` says what the daemon's `status` says: reason, detection
/// and switch times.
fn failover_as_the_daemon_reports_it(screen: &str, status: &Status) {
    let record = status.pools[0]
        .failovers
        .iter()
        .find(|f| f.element == "e1")
        .expect("e1's failover in the status");
    let row = failover_rows(screen)
        .into_iter()
        .find(|r| r[2] == "e1")
        .expect("e1's failover row");
    assert_eq!(row[3], record.reason, "{screen}");
    assert_eq!(
        row[4],
        format!("{:.1}", record.detection.as_secs_f64() * 1e3),
        "detection ms as the daemon measured it:\n{screen}"
    );
    assert_eq!(
        row[6],
        format!("{:.3}", record.switch.as_secs_f64() * 1e3),
        "switch ms as the daemon measured it:\n{screen}"
    );
}

/// `vnfpool watch | …` after e1's failover: a line for e2 as the active (with its rate) and
/// a line for the failover.
fn plain_snapshots_show_the_failover(socket: &Path, wait: Duration) {
    let plain = PlainWatch::start(socket);
    let line = plain.until("for e2 as the active", wait, |l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        w.first() == Some(&"e2") && w.get(2) == Some(&"active")
    });
    assert!(line.contains(" pkt/s "), "{line}");
    let failover = plain.until("for e1's failover", wait, |l| l.starts_with("failover "));
    assert!(failover.contains("dns e1 ProbeFailure  detection "), "{failover}");
}

#[test]
fn watch_shows_the_failover_and_outlives_the_daemon() {
    let mut lab = Lab::new(3);
    let places = Places::new();
    std::fs::write(places.config(), config(&lab, &places)).expect("config");
    let mut daemon = Daemon::start(Path::new(BIN), &lab, &places);
    daemon.wait_until("e1 active, e2 and e3 standby", Duration::from_secs(10), |s| {
        role(s, "dns", "e1") == Some("active")
            && role(s, "dns", "e2") == Some("standby")
            && role(s, "dns", "e3") == Some("standby")
    });

    let socket = places.socket();
    let socket_arg = socket.to_str().expect("a UTF-8 path");
    let pane = Pane::start(
        &places.scratch.path,
        160,
        50,
        &[BIN, "watch", "--socket", socket_arg, "--interval", "200ms"],
    );
    let wait = Duration::from_secs(10);
    let screen = pane.wait_for(
        "e1 active, e2 and e3 standby",
        wait,
        |s| has_role(s, "e1", "active") && has_role(s, "e2", "standby") && has_role(s, "e3", "standby"),
        || daemon.log_text(),
    );
    assert!(screen.contains("pool dns"), "{screen}");
    assert!(screen.contains("connected:"), "{screen}");
    assert_eq!(pane.format("#{alternate_on}"), "1", "on the alternate screen");

    // Traffic through the VIP shows as e1's packets per second.
    let sock = lab.udp_sockets(1, UDP_PORT).pop().expect("a socket");
    let screen = std::thread::scope(|s| {
        let traffic = s.spawn(|| exchange(&sock, Duration::from_millis(1500)));
        let screen = pane.wait_for(
            "a packet rate for e1",
            wait,
            |s| element_row(s, "e1").is_some_and(|w| w[4].parse::<f64>().is_ok_and(|r| r > 0.0)),
            || daemon.log_text(),
        );
        let (sent, got) = traffic.join().expect("traffic");
        assert_eq!(got.get("e1").copied(), Some(sent), "{got:?}");
        screen
    });
    let e1 = element_row(&screen, "e1").expect("e1's row");
    assert!(e1[5].parse::<u64>().is_ok_and(|p| p > 0), "e1's packets: {e1:?}");
    assert!(
        e1[6..].join(" ").starts_with("e2:"),
        "e1's backup is shown: {e1:?}"
    );

    // A failover: the new active and the event, as the daemon itself reports them.
    lab.stop_services(0);
    let screen = pane.wait_for(
        "e2 active, e1 out, the failover of e1",
        wait,
        |s| {
            has_role(s, "e2", "active")
                && has_role(s, "e1", "out")
                && failover_rows(s).iter().any(|r| r[1] == "dns" && r[2] == "e1")
        },
        || daemon.log_text(),
    );
    println!("the screen after the failover:\n{screen}");
    let status = daemon.wait_until("e2 active", Duration::from_secs(2), |s| {
        role(s, "dns", "e2") == Some("active")
    });
    failover_as_the_daemon_reports_it(&screen, &status);
    assert_eq!(element_row(&screen, "e1").expect("e1")[3], "down");

    // Without a terminal: text snapshots with the same facts, and a rate column.
    plain_snapshots_show_the_failover(&socket, wait);

    // The daemon gone: said on the screen, and the watch keeps asking.
    let killed = daemon.kill();
    assert!(!killed.success());
    pane.wait_for(
        "the daemon unreachable",
        wait,
        |s| s.contains("DAEMON UNREACHABLE since"),
        String::new,
    );
    assert_eq!(pane.exit_status(), None, "the watch still runs");

    // Back: it adopts its pins and state, and the screen follows.
    let mut daemon = Daemon::start(Path::new(BIN), &lab, &places);
    daemon.wait_until("e2 active after the restart", Duration::from_secs(10), |s| {
        role(s, "dns", "e2") == Some("active")
    });
    pane.wait_for(
        "connected again, e2 active",
        wait,
        |s| s.contains("connected:") && !s.contains("UNREACHABLE") && has_role(s, "e2", "active"),
        || daemon.log_text(),
    );

    // `q` quits with status 0, the terminal back on its normal screen.
    pane.send_keys("q");
    let status = pane.wait_exit(wait);
    assert_eq!(status, 0, "{}", pane.capture());
    assert_eq!(pane.format("#{alternate_on}"), "0", "left the alternate screen");
    assert!(
        !pane.capture().contains("vnfpool watch"),
        "the watch's screen is gone:\n{}",
        pane.capture()
    );
}

/// Whether process `pid` has ended (gone, or a zombie nobody reaped yet).
fn ended(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z'))
    })
}

#[test]
fn without_a_daemon_it_says_so_and_ends_on_ctrl_c_a_signal_or_with_its_terminal() {
    let places = Places::new();
    let socket = places.socket();
    let socket_arg = socket.to_str().expect("a UTF-8 path");
    let command = [BIN, "watch", "--socket", socket_arg, "--interval", "100ms"];
    let wait = Duration::from_secs(10);

    // A watch on screen that says the daemon is unreachable, and that screen.
    let unreachable = || {
        let pane = Pane::start(&places.scratch.path, 120, 20, &command);
        let screen = pane.wait_for(
            "the daemon unreachable",
            wait,
            |s| s.contains("DAEMON UNREACHABLE since"),
            String::new,
        );
        (pane, screen)
    };

    // SIGTERM: the screen is left, the status says which signal.
    let (pane, screen) = unreachable();
    // The line wraps where its length (a time, a path) puts it.
    let words = screen.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(words.contains("(is the daemon running?)"), "{screen}");
    assert_eq!(pane.format("#{alternate_on}"), "1");
    let kill = Command::new("kill")
        .args(["-TERM", &pane.pid().to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
    assert_eq!(pane.wait_exit(wait), 128 + 15, "{}", pane.capture());
    assert_eq!(pane.format("#{alternate_on}"), "0", "left the alternate screen");
    drop(pane);

    // Ctrl-C is a key in raw mode: it quits as `q` does.
    let (pane, _) = unreachable();
    pane.send_keys("C-c");
    assert_eq!(pane.wait_exit(wait), 0, "{}", pane.capture());
    assert_eq!(pane.format("#{alternate_on}"), "0", "left the alternate screen");
    drop(pane);

    // Its terminal gone (tmux killed): it ends too, rather than spinning on a dead terminal.
    let (pane, _) = unreachable();
    let pid = pane.pid();
    drop(pane);
    let start = Instant::now();
    while !ended(pid) {
        if start.elapsed() > wait {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            panic!("vnfpool watch (pid {pid}) outlived its terminal by {wait:?}");
        }
        pause();
    }
}

#[expect(clippy::disallowed_methods, reason = "polls a real process in real time")]
fn pause() {
    std::thread::sleep(Duration::from_millis(20));
}
