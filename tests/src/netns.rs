//! Network namespaces, veth pairs and threads inside namespaces, each a guard with a unique name
//! (`vnfp-{pid}-{counter}`) that removes what it made on drop, also when a test panics.
//!
//! Nothing here changes the namespace of the calling thread: code that must run inside a
//! namespace runs on a thread of its own that enters it first ([`Netns::run`],
//! [`Netns::spawn`]). A socket keeps the namespace it was created in, so sockets made there may
//! be handed back and used from any thread.
#![expect(
    clippy::missing_panics_doc,
    reason = "test helpers fail by panicking with context (STYLE rule 15), every one of them"
)]

use std::{
    any::Any,
    fmt,
    fs::File,
    os::fd::AsFd as _,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    thread,
};

use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};

/// Where `ip netns add` mounts its namespaces.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// Longest interface name the kernel accepts (`IFNAMSIZ` - 1).
pub const MAX_IFNAME_LEN: usize = 15;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The first word of every name this process makes (namespaces, links, pin and scratch
/// directories); `vnfp` unless [`set_name_prefix`] chose another.
static PREFIX: OnceLock<&'static str> = OnceLock::new();

/// Makes every name this process makes from now on start with `prefix` instead of `vnfp`.
/// For a lab that may outlive its process (`cargo xtask demo --keep`, `cargo xtask lab up`):
/// the names of a process that is gone can come back with its pid, and no test process must
/// ever pick one of them. At most 4 bytes, so that every name still fits an interface; call
/// it before any name is made (again later only with the same prefix).
pub fn set_name_prefix(prefix: &'static str) {
    assert!(prefix.len() <= 4, "{prefix:?}: at most 4 bytes");
    let set = *PREFIX.get_or_init(|| {
        assert_eq!(
            COUNTER.load(Ordering::Relaxed),
            0,
            "the name prefix is chosen before any name is made"
        );
        prefix
    });
    assert_eq!(set, prefix, "one name prefix per process");
}

/// The first word of every name this process makes: see [`set_name_prefix`].
#[must_use]
pub fn name_prefix() -> &'static str {
    PREFIX.get().copied().unwrap_or("vnfp")
}

/// A name no other guard of this process uses, and no guard of a concurrently running test
/// process either: `vnfp-{pid}-{counter}` (see [`name_prefix`]). Short enough for an interface
/// name.
#[must_use]
pub fn unique_name() -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = format!("{}-{}-{n}", name_prefix(), std::process::id());
    assert!(
        name.len() <= MAX_IFNAME_LEN,
        "{name} is longer than the {MAX_IFNAME_LEN} bytes of an interface name"
    );
    name
}

// === commands ===

/// Runs `program args`; its stdout, or the exit status and stderr as the error.
///
/// # Errors
/// When the program cannot be started or exits unsuccessfully.
pub fn try_command(program: &str, args: &[&str]) -> Result<String, String> {
    let line = || format!("`{program} {}`", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("starting {}: {e}", line()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{} failed ({}): {}",
            line(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs `program args` and returns its stdout; panics with its stderr when it fails.
#[track_caller]
#[must_use]
pub fn command(program: &str, args: &[&str]) -> String {
    try_command(program, args).unwrap_or_else(|e| panic!("{e}"))
}

/// The text of a panic payload.
#[must_use]
pub fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// Panics with `what` unless the thread is already unwinding (a panic in a drop during an
/// unwind aborts the process and hides the first panic); then it only reports it.
fn fail_in_drop(what: &str) {
    if thread::panicking() {
        eprintln!("while unwinding: {what}");
    } else {
        panic!("{what}");
    }
}

// === impl Netns ===

/// A network namespace mounted at `/run/netns/<name>`, deleted on drop. Deleting it destroys the
/// links inside it (and a veth's peer with it, wherever that is). A socket still open in it
/// keeps the kernel object alive, not the name.
pub struct Netns {
    name: String,
}

/// `ip netns add` makes `/run/netns` a shared mount the first time it runs; two doing so at
/// once can stack mounts there, so this process creates its namespaces one at a time.
static CREATE: Mutex<()> = Mutex::new(());

impl Netns {
    /// Creates a namespace with a unique name, its loopback up.
    #[must_use]
    pub fn new() -> Self {
        let name = unique_name();
        {
            let _one = CREATE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let _ = command("ip", &["netns", "add", &name]);
        }
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// The namespace's name (as `ip netns` knows it).
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace's mount point.
    #[must_use]
    pub fn path(&self) -> PathBuf {
        Path::new(NETNS_RUN_DIR).join(&self.name)
    }

    /// `ip -n <ns> args`.
    #[track_caller]
    pub fn ip(&self, args: &[&str]) {
        let _ = self.ip_output(args);
    }

    /// `ip -n <ns> args`; its stdout.
    #[track_caller]
    #[must_use]
    pub fn ip_output(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        command("ip", &all)
    }

    /// `program args` inside the namespace (`ip netns exec`, which also mounts a fresh `/sys`
    /// for the command).
    #[track_caller]
    pub fn exec(&self, program: &str, args: &[&str]) {
        let mut all = vec!["netns", "exec", self.name.as_str(), program];
        all.extend_from_slice(args);
        let _ = command("ip", &all);
    }

    /// Sets a sysctl of the namespace (`key` in dotted form).
    #[track_caller]
    pub fn sysctl(&self, key: &str, value: &str) {
        self.exec("sysctl", &["-q", "-w", &format!("{key}={value}")]);
    }

    /// The interface `name` of this namespace.
    #[track_caller]
    #[must_use]
    pub fn link(&self, name: &str) -> Link {
        let out = self.ip_output(&["-o", "link", "show", "dev", name]);
        parse_link(&out, &self.name, name).unwrap_or_else(|e| panic!("{e}: {out:?}"))
    }

    /// Runs `f` on a thread inside the namespace and returns its result; the calling thread
    /// stays where it is. A panic of `f` is resumed on the calling thread.
    pub fn run<R, F>(&self, f: F) -> R
    where
        R: Send,
        F: FnOnce() -> R + Send,
    {
        run_in(&self.name, f)
    }

    /// Starts `f` on a thread inside the namespace, for a server. `f` must return soon after
    /// its [`Stop`] says so (poll it between bounded waits: accept or receive with a timeout,
    /// or non-blocking sockets with `poll`). Dropping the handle stops and joins the thread.
    pub fn spawn<F>(&self, what: &str, f: F) -> Background
    where
        F: FnOnce(&Stop) + Send + 'static,
    {
        let path = self.path();
        let stop = Stop(Arc::new(AtomicBool::new(false)));
        let theirs = stop.clone();
        let thread = thread::Builder::new()
            .name(what.to_owned())
            .spawn(move || {
                enter(&path);
                f(&theirs);
            })
            .expect("spawning a thread");
        Background {
            what: format!("{what} in {}", self.name),
            stop,
            thread: Some(thread),
        }
    }
}

impl Default for Netns {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Netns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Netns").field(&self.name).finish()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = try_command("ip", &["netns", "delete", &self.name]) {
            fail_in_drop(&e);
        }
    }
}

/// [`Netns::run`] for the namespace `name` that this process does not own (a kept lab's).
pub fn run_in<R, F>(name: &str, f: F) -> R
where
    R: Send,
    F: FnOnce() -> R + Send,
{
    let path = Path::new(NETNS_RUN_DIR).join(name);
    thread::scope(|s| {
        let t = thread::Builder::new()
            .name(format!("in {name}"))
            .spawn_scoped(s, move || {
                enter(&path);
                f()
            })
            .expect("spawning a thread");
        t.join()
            .unwrap_or_else(|payload| std::panic::resume_unwind(payload))
    })
}

/// Moves the calling thread into the network namespace mounted at `path`.
#[track_caller]
fn enter(path: &Path) {
    let file = File::open(path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    move_into_link_name_space(file.as_fd(), Some(LinkNameSpaceType::Network))
        .unwrap_or_else(|e| panic!("setns(CLONE_NEWNET) into {}: {e}", path.display()));
}

// === impl Stop, Background ===

/// Tells a [`Netns::spawn`]ed thread to return. One made with `default()` is never told to:
/// for a server that lives as long as its process.
#[derive(Clone, Debug, Default)]
pub struct Stop(Arc<AtomicBool>);

impl Stop {
    /// Whether the thread should return now.
    #[must_use]
    pub fn stopped(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// A thread started by [`Netns::spawn`]; stopped and joined on drop, and a panic of the thread
/// is raised again there (unless the dropping thread is already panicking).
#[derive(Debug)]
pub struct Background {
    what: String,
    stop: Stop,
    thread: Option<thread::JoinHandle<()>>,
}

impl Background {
    /// Stops the thread and waits for it; panics if the thread did.
    #[track_caller]
    pub fn stop(mut self) {
        if let Err(e) = self.join() {
            panic!("{e}");
        }
    }

    fn join(&mut self) -> Result<(), String> {
        self.stop.0.store(true, Ordering::Relaxed);
        match self.thread.take().map(thread::JoinHandle::join) {
            Some(Err(payload)) => Err(format!("{} panicked: {}", self.what, panic_message(&*payload))),
            _ => Ok(()),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Err(e) = self.join() {
            fail_in_drop(&e);
        }
    }
}

// === impl Link, VethPair ===

/// An interface as seen from its namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// Name of the namespace that holds it.
    pub netns: String,
    /// Interface name.
    pub name: String,
    /// Index in that namespace.
    pub ifindex: u32,
    /// Hardware address.
    pub mac: [u8; 6],
}

/// Parses one line of `ip -o link show dev <name>`:
/// `7: name@if6: <...> mtu 1500 ... \    link/ether 5e:2a:00:11:22:33 brd ff:ff:ff:ff:ff:ff ...`.
fn parse_link(out: &str, netns: &str, name: &str) -> Result<Link, String> {
    let (index, _) = out.split_once(':').ok_or("no ifindex")?;
    let ifindex = index
        .trim()
        .parse()
        .map_err(|e| format!("ifindex {index:?}: {e}"))?;
    let mut words = out.split_whitespace();
    words.find(|w| *w == "link/ether").ok_or("no link/ether")?;
    let text = words.next().ok_or("no MAC after link/ether")?;
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for b in &mut mac {
        let p = parts.next().ok_or_else(|| format!("short MAC {text:?}"))?;
        *b = u8::from_str_radix(p, 16).map_err(|e| format!("MAC {text:?}: {e}"))?;
    }
    if parts.next().is_some() {
        return Err(format!("long MAC {text:?}"));
    }
    Ok(Link {
        netns: netns.to_owned(),
        name: name.to_owned(),
        ifindex,
        mac,
    })
}

/// A veth pair between two namespaces (or within one), both ends up, deleted on drop.
///
/// Drop it before the namespaces it lives in; if its namespace is already gone, so is the
/// pair, and the drop has nothing to do.
#[derive(Debug)]
pub struct VethPair {
    /// The end created in the first namespace.
    pub a: Link,
    /// The peer, in the second namespace.
    pub b: Link,
}

impl VethPair {
    /// Creates a pair with unique names, end `a` in `ns_a` and end `b` in `ns_b`, both up.
    #[track_caller]
    #[must_use]
    pub fn new(ns_a: &Netns, ns_b: &Netns) -> Self {
        let (a, b) = (unique_name(), unique_name());
        // Both ends are created in their namespaces directly: no link ever sits in the
        // namespace this process runs in.
        ns_a.ip(&[
            "link",
            "add",
            &a,
            "type",
            "veth",
            "peer",
            "name",
            &b,
            "netns",
            ns_b.name(),
        ]);
        // The guard exists before anything else can fail, so the pair is removed either way.
        let mut pair = Self {
            a: Link {
                netns: ns_a.name().to_owned(),
                name: a.clone(),
                ifindex: 0,
                mac: [0; 6],
            },
            b: Link {
                netns: ns_b.name().to_owned(),
                name: b.clone(),
                ifindex: 0,
                mac: [0; 6],
            },
        };
        ns_a.ip(&["link", "set", &a, "up"]);
        ns_b.ip(&["link", "set", &b, "up"]);
        pair.a = ns_a.link(&a);
        pair.b = ns_b.link(&b);
        pair
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        if !Path::new(NETNS_RUN_DIR).join(&self.a.netns).exists() {
            return;
        }
        if let Err(e) = try_command("ip", &["-n", &self.a.netns, "link", "delete", &self.a.name]) {
            fail_in_drop(&e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ip_link_line() {
        let line = "7: vnfp-1-3@if6: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP \
                    mode DEFAULT group default qlen 1000\\    link/ether 5e:2a:00:11:a2:f3 brd \
                    ff:ff:ff:ff:ff:ff link-netns vnfp-1-2\n";
        let l = parse_link(line, "ns", "vnfp-1-3").expect("parses");
        assert_eq!((l.ifindex, l.mac), (7, [0x5e, 0x2a, 0, 0x11, 0xa2, 0xf3]));
    }

    #[test]
    fn names_are_unique_and_fit_an_interface() {
        let (a, b) = (unique_name(), unique_name());
        assert_ne!(a, b);
        assert!(a.starts_with(&format!("vnfp-{}-", std::process::id())));
    }
}
