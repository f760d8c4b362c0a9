//! The lab of `cargo xtask demo` and `cargo xtask lab`: three elements that serve `dns` (UDP
//! 53) and `web` (TCP 80) on one VIP, a configuration written for them, and the `vnfpool`
//! daemon itself, run as a user would run it.
//!
//! Owned ([`DemoLab`]), the lab is removed on drop like every lab, and [`run_removing_on_exit`]
//! turns SIGINT and SIGTERM into that drop. Kept ([`DemoLab::keep`]), it outlives its process:
//! a state file ([`KeptLab`]) tells `cargo xtask lab` what to ask, fail, heal and remove. Its
//! names start with [`NAME_PREFIX`], which no test uses, so that a kept lab can never take a
//! name a test process picks later with the same pid.
#![expect(
    clippy::missing_panics_doc,
    reason = "demo helpers fail by panicking with context, as test helpers do (STYLE rule 15)"
)]

use std::{
    net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket},
    panic::AssertUnwindSafe,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use vnfpool_daemon::control::Status;

use crate::{
    daemon::{Daemon, Places},
    lab::{self, Lab},
    netns, scrape,
    service::{Detached, ServiceProc},
};

/// First word of every name of a demo lab (namespaces, links, pins, files): see
/// [`netns::set_name_prefix`].
pub const NAME_PREFIX: &str = "vnfd";
/// The `dns` pool's port (UDP).
pub const DNS_PORT: u16 = 53;
/// The `web` pool's port (TCP).
pub const WEB_PORT: u16 = 80;
/// Elements, `e1..e3`, with these priorities (e1 is the active of `dns`).
pub const PRIORITIES: [u32; 3] = [300, 200, 100];
/// Health checks: every `INTERVAL`, down after `FALL` failures, up after `RISE` successes.
pub const INTERVAL: Duration = Duration::from_millis(10);
pub const TIMEOUT: Duration = Duration::from_millis(20);
pub const RISE: u32 = 2;
pub const FALL: u32 = 3;
/// The pools' availability budget: `INTERVAL x FALL + TIMEOUT`, the worst detection of those
/// checks; and from the decision to the data plane switched.
pub const BUDGET_DETECT: Duration = Duration::from_millis(50);
pub const BUDGET_SWITCH: Duration = Duration::from_millis(5);

/// The configuration for `lab`: `dns`, active-standby by priority with preemption, checked
/// over UDP; `web`, active-active, checked over TCP; both on the same elements and VIP.
#[must_use]
pub fn config(lab: &Lab, places: &Places) -> String {
    let ms = |d: Duration| d.as_millis();
    let health = |check: &str, port: u16, more: &str| {
        format!(
            "{{ check: {check}, port: {port}{more}, interval: {}ms, timeout: {}ms, rise: {RISE}, fall: {FALL} }}",
            ms(INTERVAL),
            ms(TIMEOUT)
        )
    };
    let budget = format!(
        "{{ detect: {}ms, switch: {}ms }}",
        ms(BUDGET_DETECT),
        ms(BUDGET_SWITCH)
    );
    let elements = Places::elements(lab, &PRIORITIES);
    format!(
        "# Written for the demo's lab: XDP on the vnfpool host's veth to the client; each element\n\
         # behind a veth of its own (its interface and MAC given, so nothing needs resolving).\n\
         {daemon}pools:\n\
         \x20 - name: dns\n    vip: {vip}\n    ports: [{DNS_PORT}]\n    protocol: udp\n\
         \x20   redundancy: {{ model: active-standby, preempt: true }}\n\
         \x20   health: {dns}\n    budget: {budget}\n{elements}\
         \x20 - name: web\n    vip: {vip}\n    ports: [{WEB_PORT}]\n    protocol: tcp\n\
         \x20   redundancy: {{ model: active-active }}\n\
         \x20   health: {web}\n    budget: {budget}\n{elements}",
        daemon = places.daemon_section(lab),
        vip = lab.vip,
        dns = health("udp", DNS_PORT, ", payload: \"ping\""),
        web = health("tcp", WEB_PORT, ""),
    )
}

/// Where element `addr`'s service answers: UDP on the VIP (traffic) and on its own address
/// (health checks), TCP on every address (traffic to the VIP, checks to its own).
fn service_addrs(vip: Ipv4Addr, addr: Ipv4Addr) -> ([SocketAddr; 2], [SocketAddr; 1]) {
    (
        [(vip, DNS_PORT).into(), (addr, DNS_PORT).into()],
        [(Ipv4Addr::UNSPECIFIED, WEB_PORT).into()],
    )
}

// === impl DemoLab ===

/// A demo lab that this process owns: everything is removed on drop (the daemon and the
/// services first, then the pins and files, then the namespaces).
pub struct DemoLab {
    pub daemon: Option<Daemon>,
    /// `services[i]` is element i's (`ServiceProc::dead()` while stopped).
    pub services: Vec<ServiceProc>,
    pub places: Places,
    pub lab: Lab,
    /// The `vnfpool` binary.
    pub vnfpool: PathBuf,
    service_bin: PathBuf,
}

impl DemoLab {
    /// Builds the lab, starts every element's service and writes the configuration; no
    /// daemon yet ([`Self::start_daemon`]).
    #[must_use]
    pub fn up() -> Self {
        netns::set_name_prefix(NAME_PREFIX);
        let vnfpool = crate::sibling_binary("vnfpool");
        let service_bin = crate::sibling_binary("vnfpool-lab-service");
        let lab = Lab::new(PRIORITIES.len());
        let places = Places::new();
        let services = (0..lab.elements.len())
            .map(|i| start_service(&service_bin, &lab, &places, i))
            .collect();
        std::fs::write(places.config(), config(&lab, &places)).expect("writing the configuration");
        Self {
            daemon: None,
            services,
            places,
            lab,
            vnfpool,
            service_bin,
        }
    }

    /// Starts `vnfpool daemon` in the host's namespace and waits until it is ready (`/ready`
    /// answers 200: every pool is live); how long that took.
    pub fn start_daemon(&mut self) -> Duration {
        assert!(self.daemon.is_none(), "a daemon is running already");
        let start = Instant::now();
        let host = &self.lab.host;
        self.daemon
            .insert(Daemon::start(&self.vnfpool, &self.lab, &self.places))
            .wait_until("the daemon is ready", Duration::from_secs(10), |_| {
                matches!(scrape::get(host, scrape::METRICS, "/ready"), Ok((200, _)))
            });
        start.elapsed()
    }

    /// The running daemon.
    pub fn daemon(&mut self) -> &mut Daemon {
        self.daemon.as_mut().expect("a running daemon")
    }

    /// The daemon's view, through its control socket.
    #[must_use]
    pub fn status(&mut self) -> Status {
        self.daemon().status().expect("the daemon answers")
    }

    /// `vnfpool <args> --socket <the daemon's>`: its output, as a user sees it.
    #[must_use]
    pub fn cli(&self, args: &[&str]) -> String {
        cli(&self.vnfpool, &self.places.socket(), args)
    }

    /// Kills element `i`'s service, as a crash would.
    pub fn stop_service(&mut self, i: usize) {
        self.services[i] = ServiceProc::dead();
    }

    /// Starts element `i`'s service again; returns once it answers.
    pub fn start_service(&mut self, i: usize) {
        self.services[i] = start_service(&self.service_bin, &self.lab, &self.places, i);
    }

    /// Leaves the lab, its services and its daemon running after this process exits, and
    /// writes the state file that `cargo xtask lab` acts on.
    #[must_use]
    pub fn keep(mut self) -> KeptLab {
        let services = std::mem::take(&mut self.services);
        let kept = KeptLab {
            client: self.lab.client.name().to_owned(),
            host: self.lab.host.name().to_owned(),
            vip: self.lab.vip,
            client_addr: self.lab.client_addr,
            elements: self
                .lab
                .elements
                .iter()
                .zip(services)
                .map(|(e, s)| KeptElement {
                    name: e.name.clone(),
                    netns: e.netns.name().to_owned(),
                    addr: e.addr,
                    service: s.detach(),
                })
                .collect(),
            daemon: self.daemon.take().map(Daemon::detach),
            vnfpool: self.vnfpool.clone(),
            service_bin: self.service_bin.clone(),
            config: self.places.config(),
            socket: self.places.socket(),
            log: self.places.log(),
            pins: self.places.pins.path().to_owned(),
            scratch: self.places.scratch.path.clone(),
        };
        // Nothing of it is removed: no guard runs.
        std::mem::forget(self);
        kept.save();
        kept
    }
}

/// Where the services' error output goes: beside the daemon's log (they may outlive this
/// process, and its terminal).
fn services_log(scratch: &Path) -> PathBuf {
    scratch.join("services.log")
}

fn start_service(binary: &Path, lab: &Lab, places: &Places, i: usize) -> ServiceProc {
    let e = &lab.elements[i];
    let (udp, tcp) = service_addrs(lab.vip, e.addr);
    let log = services_log(&places.scratch.path);
    ServiceProc::start_in(binary, e.netns.name(), &e.name, &udp, &tcp, Some(&log))
}

/// `vnfpool <args> --socket <socket>`: its output; panics with its error output when it fails.
#[must_use]
pub fn cli(vnfpool: &Path, socket: &Path, args: &[&str]) -> String {
    let socket = socket.to_string_lossy();
    let all: Vec<&str> = args.iter().copied().chain(["--socket", &socket]).collect();
    netns::command(&vnfpool.to_string_lossy(), &all)
}

/// How many of `names` each one is: `e1 9, e2 11, e3 10`.
pub fn tally<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let mut by = std::collections::BTreeMap::<&str, usize>::new();
    for n in names {
        *by.entry(n).or_default() += 1;
    }
    by.iter()
        .map(|(who, n)| format!("{who} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

// === SIGINT, SIGTERM and failures ===

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// The payload of the unwind that [`checkpoint`] starts.
struct Interrupted;

/// Replaces the default action of SIGINT and SIGTERM (the end of the process, guards and all)
/// with a flag that [`checkpoint`] reads.
fn catch_signals() {
    let (installed, done) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            use tokio::signal::unix::{SignalKind, signal};
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
                let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
                let _ = installed.send(());
                loop {
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                    }
                    INTERRUPTED.store(true, Ordering::Relaxed);
                }
            });
        })
        .expect("spawning the signal thread");
    done.recv().expect("signal handlers installed");
}

/// Unwinds (through every guard) if SIGINT or SIGTERM came.
pub fn checkpoint() {
    if INTERRUPTED.load(Ordering::Relaxed) {
        std::panic::resume_unwind(Box::new(Interrupted));
    }
}

/// Waits `d` in real time, at [`checkpoint`]s every 10 ms.
#[expect(clippy::disallowed_methods, reason = "waits in real time for a real lab")]
pub fn pause(d: Duration) {
    let end = Instant::now() + d;
    loop {
        checkpoint();
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(10)));
    }
}

/// Runs `f`, whose guards remove what it makes, so that they run whatever happens: `f`
/// returns (exit status 0), fails (a panic says what was not shown: 1), or SIGINT or SIGTERM
/// comes (130; seen at the next [`checkpoint`], or when a helper fails because the signal also
/// ended the lab's processes).
pub fn run_removing_on_exit(f: impl FnOnce()) -> ExitCode {
    catch_signals();
    std::panic::set_hook(Box::new(|info| {
        if INTERRUPTED.load(Ordering::Relaxed) {
            return;
        }
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        let at = info
            .location()
            .map(|l| format!(" ({}:{})", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!("\nFAILED{at}: {msg}");
    }));
    match std::panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) if INTERRUPTED.load(Ordering::Relaxed) => {
            eprintln!("\ninterrupted: removed everything it had made");
            ExitCode::from(130)
        }
        Err(_) => {
            eprintln!("removed everything it had made");
            ExitCode::FAILURE
        }
    }
}

// === impl KeptLab ===

/// A demo lab left running after its process (`cargo xtask demo --keep`, `cargo xtask lab
/// up`), as its state file describes it.
#[derive(Debug, Serialize, Deserialize)]
pub struct KeptLab {
    /// Namespaces of the client and of the vnfpool host.
    pub client: String,
    pub host: String,
    pub vip: Ipv4Addr,
    pub client_addr: Ipv4Addr,
    pub elements: Vec<KeptElement>,
    /// The daemon's pid, while it runs.
    pub daemon: Option<u32>,
    pub vnfpool: PathBuf,
    pub service_bin: PathBuf,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub log: PathBuf,
    pub pins: PathBuf,
    /// The directory of the configuration, the socket, the log and the daemon's state.
    pub scratch: PathBuf,
}

/// An element of a [`KeptLab`].
#[derive(Debug, Serialize, Deserialize)]
pub struct KeptElement {
    pub name: String,
    pub netns: String,
    pub addr: Ipv4Addr,
    /// Its service, while it runs.
    pub service: Option<Detached>,
}

impl KeptLab {
    /// The state file: `target/lab/state.json`, beside the binaries' directory.
    #[must_use]
    pub fn state_path() -> PathBuf {
        let exe = std::env::current_exe().expect("current exe");
        exe.parent()
            .and_then(Path::parent)
            .expect("the target directory")
            .join("lab/state.json")
    }

    /// The kept lab, if there is one.
    #[must_use]
    pub fn load() -> Option<Self> {
        let path = Self::state_path();
        let text = std::fs::read_to_string(&path).ok()?;
        Some(serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; remove what it lists by hand, then the file",
                path.display()
            )
        }))
    }

    fn save(&self) {
        let path = Self::state_path();
        std::fs::create_dir_all(path.parent().expect("a directory")).expect("creating target/lab");
        let text = serde_json::to_string_pretty(self).expect("state as JSON");
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }

    /// The index of the element named `name`.
    #[must_use]
    pub fn element(&self, name: &str) -> Option<usize> {
        self.elements.iter().position(|e| e.name == name)
    }

    /// Which element answers 20 new `dns` flows and 20 new `web` connections from the client.
    #[must_use]
    pub fn ask(&self) -> (Vec<String>, Vec<String>) {
        let (vip, from) = (self.vip, self.client_addr);
        netns::run_in(&self.client, || {
            let dns = (0..20)
                .map(|_| {
                    let s = UdpSocket::bind((from, 0)).expect("binding a client socket");
                    s.connect((vip, DNS_PORT)).expect("connecting a UDP socket");
                    s.set_read_timeout(Some(Duration::from_millis(200)))
                        .expect("read timeout");
                    lab::ask_udp(&s).unwrap_or_else(|_| "(no answer)".to_owned())
                })
                .collect();
            let web = (0..20)
                .map(|_| {
                    let to = SocketAddr::from((vip, WEB_PORT));
                    let Ok(mut s) = TcpStream::connect_timeout(&to, Duration::from_millis(500)) else {
                        return "(no connection)".to_owned();
                    };
                    s.set_read_timeout(Some(Duration::from_millis(500)))
                        .expect("read timeout");
                    lab::send_ping(&mut s)
                        .and_then(|()| lab::read_line(&mut s))
                        .unwrap_or_else(|_| "(no answer)".to_owned())
                })
                .collect();
            (dns, web)
        })
    }

    /// Kills element `i`'s service; false if it was not running.
    pub fn fail(&mut self, i: usize) -> bool {
        let Some(service) = self.elements[i].service.take() else {
            return false;
        };
        stop_service(service, &self.elements[i].name);
        self.save();
        true
    }

    /// Starts element `i`'s service again; false if it was running.
    pub fn heal(&mut self, i: usize) -> bool {
        let e = &self.elements[i];
        if e.service.is_some() {
            return false;
        }
        let (udp, tcp) = service_addrs(self.vip, e.addr);
        let log = services_log(&self.scratch);
        let service =
            ServiceProc::start_in(&self.service_bin, &e.netns, &e.name, &udp, &tcp, Some(&log)).detach();
        self.elements[i].service = service;
        self.save();
        true
    }

    /// Stops the daemon and the services, and removes the namespaces, the pins, the files and
    /// the state file; what it removed, one line each.
    #[must_use]
    pub fn down(self) -> Vec<String> {
        let mut done = Vec::new();
        if let Some(pid) = self.daemon {
            let config = self.config.to_string_lossy();
            if stop_process(pid, &config) {
                done.push(format!("daemon (pid {pid})"));
            }
        }
        for e in &self.elements {
            if let Some(service) = e.service {
                stop_service(service, &e.name);
                done.push(format!("{}'s service (pid {})", e.name, service.pid));
            }
        }
        let namespaces: Vec<&str> = std::iter::once(self.client.as_str())
            .chain(std::iter::once(self.host.as_str()))
            .chain(self.elements.iter().map(|e| e.netns.as_str()))
            .collect();
        let gone: Vec<&str> = namespaces
            .into_iter()
            .filter(|ns| netns::try_command("ip", &["netns", "delete", ns]).is_ok())
            .collect();
        if !gone.is_empty() {
            done.push(format!("namespaces {}", gone.join(", ")));
        }
        for dir in [&self.pins, &self.scratch] {
            if std::fs::remove_dir_all(dir).is_ok() {
                done.push(dir.display().to_string());
            }
        }
        let _ = std::fs::remove_file(Self::state_path());
        done
    }

    /// The commands to explore the lab with, and the one that removes it.
    #[must_use]
    pub fn explore(&self) -> String {
        let bin = self.vnfpool.display();
        let sock = self.socket.display();
        format!(
            "explore it:\n\
             \x20 {bin} status --socket {sock}\n\
             \x20 {bin} watch --socket {sock}        # live; q quits\n\
             \x20 cargo xtask lab ask             # 20 new dns flows and 20 new web connections: who answers\n\
             \x20 cargo xtask lab fail e2         # kill e2's service, then look at status or watch\n\
             \x20 cargo xtask lab heal e2         # start it again\n\
             \x20 {bin} drain web e3 --socket {sock}    # then: undrain web e3\n\
             \x20 bpftool map dump pinned {}/VNF_VIPS\n\
             \x20 ip netns exec {} bash           # a shell on the client (VIP {})\n\
             \x20 configuration {}, daemon log {}\n\
             remove everything (daemon, services, namespaces, pins, files):\n\
             \x20 cargo xtask lab down",
            self.pins.display(),
            self.client,
            self.vip,
            self.config.display(),
            self.log.display(),
        )
    }
}

/// Kills a kept service and the process that holds its stdin, each only if it is still what
/// it was (a pid can be reused).
fn stop_service(service: Detached, name: &str) {
    stop_process(service.pid, &format!("vnfpool-lab-service --name {name} "));
    stop_process(service.holder, "sleep infinity");
}

/// Sends SIGTERM to `pid` if its command line contains `marker`, and waits up to 5 s for it
/// to end (then SIGKILL); whether it was there.
fn stop_process(pid: u32, marker: &str) -> bool {
    use rustix::process::{Pid, Signal, kill_process};
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    if !cmdline.contains(marker) || !alive(pid) {
        return false;
    }
    let pid = Pid::from_raw(pid.cast_signed()).expect("a pid");
    let _ = kill_process(pid, Signal::TERM);
    let start = Instant::now();
    while alive(pid.as_raw_nonzero().get().cast_unsigned()) {
        if start.elapsed() > Duration::from_secs(5) {
            let _ = kill_process(pid, Signal::KILL);
            break;
        }
        pause(Duration::from_millis(10));
    }
    true
}

/// Whether `pid` runs (a zombie, which nobody may have reaped, does not).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}
