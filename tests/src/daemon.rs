//! The `vnfpool` daemon run as a real process inside a lab's vnfpool-host namespace, with its
//! pins, state and control socket in places of its own; killed (SIGKILL) on drop.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use vnfpool_daemon::control::{self, Request, Response, Status};

use crate::{lab::Lab, pins::PinDir};

/// A scratch directory for one daemon's config, state, socket and log; removed on drop, also
/// when a test panics. Named `{prefix}-{pid}-…` (see [`crate::netns::name_prefix`]) so that a
/// leftover (of a killed test, or of a kept demo lab) says whose it is.
pub struct Scratch {
    /// The directory.
    pub path: PathBuf,
    /// Held for its drop, which removes the directory.
    _dir: tempfile::TempDir,
}

impl Scratch {
    #[must_use]
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!(
                "{}-{}-",
                crate::netns::name_prefix(),
                std::process::id()
            ))
            .tempdir()
            .unwrap_or_else(|e| panic!("creating a scratch directory: {e}"));
        Self {
            path: dir.path().to_owned(),
            _dir: dir,
        }
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Self::new()
    }
}

/// Where one daemon keeps its things.
pub struct Places {
    pub scratch: Scratch,
    pub pins: PinDir,
}

impl Places {
    #[must_use]
    pub fn new() -> Self {
        Self {
            scratch: Scratch::new(),
            pins: PinDir::new(),
        }
    }

    #[must_use]
    pub fn config(&self) -> PathBuf {
        self.scratch.path.join("pools.yaml")
    }

    #[must_use]
    pub fn socket(&self) -> PathBuf {
        self.scratch.path.join("vnfpool.sock")
    }

    #[must_use]
    pub fn log(&self) -> PathBuf {
        self.scratch.path.join("daemon.log")
    }

    /// The `daemon:` section for a lab: XDP on the host's client-facing interface.
    #[must_use]
    pub fn daemon_section(&self, lab: &Lab) -> String {
        self.daemon_section_on(&lab.ingress.name)
    }

    /// The `daemon:` section with XDP natively on `interface`.
    #[must_use]
    pub fn daemon_section_on(&self, interface: &str) -> String {
        format!(
            "daemon:\n  interfaces: [{interface}]\n  xdp_mode: native\n  pin_dir: {}\n  state_dir: {}\n  socket: {}\n  flow_table_size: 65536\n",
            self.pins.path().display(),
            self.scratch.path.join("state").display(),
            self.socket().display(),
        )
    }

    /// An `elements:` list for the lab's elements with these priorities (name, address, the
    /// host-side interface and the element's MAC given, so nothing needs resolving).
    #[must_use]
    pub fn elements(lab: &Lab, priorities: &[u32]) -> String {
        let plain: Vec<(u32, &str)> = priorities.iter().map(|&p| (p, "")).collect();
        Self::placed_elements(lab, &plain)
    }

    /// Like [`Self::elements`], each element with more keys (`failure_domains: …, site: …`).
    #[must_use]
    pub fn placed_elements(lab: &Lab, elements: &[(u32, &str)]) -> String {
        // As many as the lab has: a longer list is cut to the lab's elements.
        let all: Vec<(usize, u32, &str)> = elements
            .iter()
            .take(lab.elements.len())
            .enumerate()
            .map(|(i, &(p, more))| (i, p, more))
            .collect();
        Self::some_elements(lab, &all)
    }

    /// Like [`Self::placed_elements`] for some of the lab's elements: `(index, priority, more)`.
    #[must_use]
    pub fn some_elements(lab: &Lab, elements: &[(usize, u32, &str)]) -> String {
        let mut out = String::from("    elements:\n");
        for &(i, p, more) in elements {
            let e = &lab.elements[i];
            let more = if more.is_empty() {
                String::new()
            } else {
                format!(", {more}")
            };
            writeln!(
                out,
                "      - {{ name: {}, address: {}, priority: {p}, interface: {}, mac: \"{}\"{more} }}",
                e.name,
                e.addr,
                e.host_link.name,
                e.mac_text()
            )
            .expect("writing to a String");
        }
        out
    }
}

impl Default for Places {
    fn default() -> Self {
        Self::new()
    }
}

/// `binary daemon --config <places.config()>` in the lab's host namespace (only the network
/// namespace: the pins stay on the host's bpffs).
#[must_use]
pub fn command(binary: &Path, lab: &Lab, places: &Places) -> Command {
    command_via(&[], binary, lab, places)
}

/// Like [`command`], run through `wrapper` (a program and its arguments, e.g. `setpriv …`)
/// once in the lab's host namespace: `nsenter --net=… <wrapper…> binary daemon --config …`.
#[must_use]
pub fn command_via(wrapper: &[String], binary: &Path, lab: &Lab, places: &Places) -> Command {
    command_in(lab.host.name(), wrapper, binary, places)
}

/// `nsenter --net=/run/netns/<netns> <wrapper…> binary daemon --config <places.config()>`.
#[must_use]
pub fn command_in(netns: &str, wrapper: &[String], binary: &Path, places: &Places) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/run/netns/{netns}"))
        .args(wrapper)
        .arg(binary)
        .args(["daemon", "--config"])
        .arg(places.config());
    c
}

/// A running daemon.
pub struct Daemon {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
}

impl Daemon {
    /// Starts `binary daemon --config <places.config()>` in the lab's host namespace (only the
    /// network namespace: the pins stay on the host's bpffs), and waits until its control
    /// socket answers.
    #[must_use]
    pub fn start(binary: &Path, lab: &Lab, places: &Places) -> Self {
        Self::spawn(command(binary, lab, places), places)
    }

    /// [`Self::start`] with more arguments after `daemon --config <file>`.
    #[must_use]
    pub fn start_with(binary: &Path, lab: &Lab, places: &Places, args: &[&str]) -> Self {
        let mut command = command(binary, lab, places);
        command.args(args);
        Self::spawn(command, places)
    }

    /// Starts `command` (see [`command_via`]) with its output in `places.log()`, and
    /// waits until the control socket answers.
    #[must_use]
    pub fn spawn(mut command: Command, places: &Places) -> Self {
        let log = std::fs::File::create(places.log()).expect("daemon log");
        let child = command
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawning the daemon");
        let mut daemon = Self {
            child,
            socket: places.socket(),
            log: places.log(),
        };
        daemon.wait_until("control socket answers", Duration::from_secs(20), |_| true);
        daemon
    }

    /// The daemon's status, or `None` while its socket does not answer.
    #[must_use]
    pub fn status(&self) -> Option<Status> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        match rt.block_on(control::request(&self.socket, &Request::Status)) {
            Ok(Response::Status(s)) => Some(s),
            _ => None,
        }
    }

    /// Sends a request and returns the answer.
    #[must_use]
    pub fn request(&self, request: &Request) -> Response {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(control::request(&self.socket, request))
            .unwrap_or_else(|e| panic!("{e}\n{}", self.log_text()))
    }

    /// Polls the status until `ready` holds (every 5 ms), or panics with the daemon's log
    /// after `timeout`; panics at once if the daemon exits.
    pub fn wait_until(&mut self, what: &str, timeout: Duration, ready: impl Fn(&Status) -> bool) -> Status {
        self.poll(what, timeout, |d| d.status().filter(|s| ready(s)))
    }

    /// Polls the daemon's log until `logged` holds (every 5 ms), or panics with it after
    /// `timeout`; panics at once if the daemon exits.
    pub fn wait_logged(&mut self, what: &str, timeout: Duration, logged: impl Fn(&str) -> bool) {
        self.poll(what, timeout, |d| logged(&d.log_text()).then_some(()));
    }

    /// Asks `probe` every 5 ms until it answers, or panics with the daemon's log after
    /// `timeout` (waiting for `what`); panics at once if the daemon exits.
    #[expect(clippy::disallowed_methods, reason = "polls a real process in real time")]
    fn poll<T>(&mut self, what: &str, timeout: Duration, probe: impl Fn(&Self) -> Option<T>) -> T {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!(
                    "the daemon exited ({status}) while waiting for: {what}\n{}",
                    self.log_text()
                );
            }
            if let Some(answer) = probe(self) {
                return answer;
            }
            assert!(
                start.elapsed() < timeout,
                "not within {timeout:?}: {what}\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The daemon's log so far.
    #[must_use]
    pub fn log_text(&self) -> String {
        read_log(&self.log)
    }

    /// The daemon's process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, as `systemctl stop` sends it, and the exit status (panics with the log if the
    /// daemon is still running after `timeout`).
    #[must_use]
    pub fn terminate(mut self, timeout: Duration) -> ExitStatus {
        terminate(&mut self.child, timeout, || read_log(&self.log))
    }

    /// SIGKILL, as a crash: nothing is cleaned up by the daemon.
    #[must_use]
    pub fn kill(mut self) -> ExitStatus {
        let _ = self.child.kill();
        self.child.wait().expect("wait")
    }

    /// Leaves the daemon running after this process exits (a kept lab); its pid.
    #[must_use]
    pub fn detach(self) -> u32 {
        let pid = self.pid();
        std::mem::forget(self);
        pid
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// SIGTERM to `child` and its exit status; panics with `log()` if it still runs after
/// `timeout`.
#[must_use]
#[expect(clippy::disallowed_methods, reason = "polls a real process in real time")]
pub fn terminate(child: &mut Child, timeout: Duration, log: impl Fn() -> String) -> ExitStatus {
    let pid = rustix::process::Pid::from_raw(child.id().cast_signed()).expect("a pid");
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(
            start.elapsed() < timeout,
            "still running {timeout:?} after SIGTERM\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The role of `element` in `pool`, from a status.
#[must_use]
pub fn role<'a>(status: &'a Status, pool: &str, element: &str) -> Option<&'a str> {
    status
        .pools
        .iter()
        .find(|p| p.name == pool)?
        .elements
        .iter()
        .find(|e| e.name == element)
        .map(|e| e.role.as_str())
}
