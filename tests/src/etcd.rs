//! An etcd of a test's own (Debian `etcd-server`): free loopback ports, a scratch data
//! directory, optionally inside a network namespace; killed and removed on drop. Tests never
//! use a system etcd.
#![expect(
    clippy::missing_panics_doc,
    reason = "test helpers fail by panicking with context (STYLE rule 15), every one of them"
)]

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::netns;

/// How long etcd may take to answer `/health` (about 0.4 s on the lab VM).
const READY: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(20);

/// A running etcd.
pub struct Etcd {
    child: Child,
    /// Its data and log; removed when dropped, after [`Drop`] has killed etcd.
    dir: tempfile::TempDir,
    /// Client URL's address (in `netns` when given).
    pub client: SocketAddr,
    peer: u16,
    netns: Option<String>,
}

impl Etcd {
    /// Starts one on loopback, in network namespace `netns` if given, and waits until it is
    /// healthy.
    #[must_use]
    pub fn start(netns: Option<&str>) -> Self {
        Self::start_at(netns, Ipv4Addr::LOCALHOST)
    }

    /// Starts one listening on `host` (an address of `netns`, or of this namespace), and waits
    /// until it is healthy.
    #[must_use]
    pub fn start_at(netns: Option<&str>, host: Ipv4Addr) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{}-{}-etcd-", netns::name_prefix(), std::process::id()))
            .tempdir()
            .expect("etcd data dir");
        let (client, peer) = match netns {
            // A fresh namespace has its loopback to itself: any port is free there.
            Some(_) => (2379, 2380),
            None => (free_port(), free_port()),
        };
        let client = SocketAddr::from((host, client));
        let mut etcd = Self {
            child: spawn(dir.path(), client, peer, netns),
            dir,
            client,
            peer,
            netns: netns.map(str::to_owned),
        };
        etcd.wait_ready();
        etcd
    }

    /// `http://address` for configurations.
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://{}", self.client)
    }

    /// Kills it (as a crash), keeping its data.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same ports and data, and waits until it is healthy.
    pub fn restart(&mut self) {
        self.child = spawn(self.dir.path(), self.client, self.peer, self.netns.as_deref());
        self.wait_ready();
    }

    #[expect(clippy::disallowed_methods, reason = "polls a real etcd in real time")]
    fn wait_ready(&mut self) {
        let start = Instant::now();
        loop {
            let client = self.client;
            let healthy = match &self.netns {
                Some(ns) => netns::run_in(ns, move || healthy(client)),
                None => healthy(client),
            };
            if healthy {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "etcd exited ({status}): {}",
                    std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
                );
            }
            assert!(start.elapsed() < READY, "etcd was not healthy within {READY:?}");
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        // Killed first: the fields, its data directory among them, drop after this.
        self.stop();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn spawn(dir: &Path, client: SocketAddr, peer: u16, netns: Option<&str>) -> Child {
    let c = format!("http://{client}");
    let p = format!("http://{}:{peer}", client.ip());
    let mut command = match netns {
        Some(ns) => {
            let mut nsenter = Command::new("nsenter");
            nsenter.arg(format!("--net=/run/netns/{ns}")).arg("etcd");
            nsenter
        }
        None => Command::new("etcd"),
    };
    command
        .args(["--name", "t", "--data-dir"])
        .arg(dir.join("data"))
        .args(["--listen-client-urls", &c, "--advertise-client-urls", &c])
        .args(["--listen-peer-urls", &p, "--initial-advertise-peer-urls", &p])
        .args(["--initial-cluster", &format!("t={p}")])
        .stdout(Stdio::null())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join("etcd.log"))
                .expect("etcd log"),
        )
        .spawn()
        .expect("etcd runs (scripts/setup.sh installs etcd-server)")
}

/// Whether etcd's `/health` says it serves requests.
fn healthy(client: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&client, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut answer = String::new();
    stream
        .write_all(b"GET /health HTTP/1.0\r\nHost: etcd\r\n\r\n")
        .and_then(|()| stream.read_to_string(&mut answer))
        .is_ok()
        && answer.contains("\"health\":\"true\"")
}
