//! Elements that register themselves, in a lab: the daemon's API section with certificates for
//! every party, calls to the API from the host namespace, and `vnfpool agent` run as a process
//! in an element's namespace (killed on drop).

use std::{
    fmt::Write as _,
    net::{SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant, SystemTime},
};

use vnfpool_daemon::api::client::Client;

use crate::{
    daemon::Places,
    lab::Lab,
    pki::{Ca, server_files},
};

/// The API's port in the lab's host namespace (on every address).
pub const API_PORT: u16 = 9443;
/// The heartbeat listener's port there.
pub const HEARTBEAT_PORT: u16 = 9471;

/// The parties of a lab's API: the CA, and the `api:` section that trusts it.
pub struct Parties {
    pub ca: Ca,
}

impl Parties {
    #[must_use]
    pub fn new() -> Self {
        Self {
            ca: Ca::new("vnfpool lab"),
        }
    }

    /// The `api:` section: listening on every address of the host namespace (the elements
    /// reach it at their gateway), a server certificate for the loopback and every gateway,
    /// the clients `CN=orchestrator` (sce), `CN=ops` (operator) and `CN=agent-eN` (element)
    /// for each element of the lab.
    #[must_use]
    pub fn api_section(&self, lab: &Lab, places: &Places) -> String {
        let gateways: Vec<String> = lab.elements.iter().map(|e| gateway(e.addr).to_string()).collect();
        let mut ips = vec!["127.0.0.1"];
        ips.extend(gateways.iter().map(String::as_str));
        let (cert, key, client_ca) = server_files(&self.ca, &places.scratch.path, &ips);
        let mut clients = String::from(
            "    - { subject: \"CN=orchestrator\", role: sce }\n    - { subject: \"CN=ops\", role: operator }\n",
        );
        for e in &lab.elements {
            writeln!(
                clients,
                "    - {{ subject: \"CN=agent-{}\", role: element }}",
                e.name
            )
            .expect("writing to a String");
        }
        let crl = Self::crl_path(places);
        std::fs::write(&crl, self.ca.crl(&[])).expect("the CRL");
        format!(
            "api:\n  listen: 0.0.0.0:{API_PORT}\n  heartbeat_listen: 0.0.0.0:{HEARTBEAT_PORT}\n  cert: {}\n  key: {}\n  client_ca: {}\n  crls: [{}]\n  clients:\n{clients}",
            cert.display(),
            key.display(),
            client_ca.display(),
            crl.display(),
        )
    }

    /// The CRL file of [`Self::api_section`]: it starts empty.
    #[must_use]
    pub fn crl_path(places: &Places) -> PathBuf {
        places.scratch.path.join("clients.crl")
    }

    /// Writes a CRL revoking the clients `CN=cn` for each of `cns` (the daemon reads it at its
    /// next reload).
    pub fn revoke(&self, places: &Places, cns: &[&str]) {
        std::fs::write(Self::crl_path(places), self.ca.crl(cns)).expect("the CRL");
    }

    /// `method path` as `CN=cn`, from the host namespace: `Err` when the exchange failed (a
    /// refused handshake…).
    pub fn try_call(&self, lab: &Lab, cn: &str, method: &str, path: &str) -> Result<u16, String> {
        self.exchange(lab, cn, method, path, "").map(|(status, _)| status)
    }

    /// `method path` with `body` as the client `CN=cn`, from the host namespace: the status
    /// and the body.
    #[must_use]
    pub fn call(&self, lab: &Lab, cn: &str, method: &str, path: &str, body: &str) -> (u16, String) {
        self.exchange(lab, cn, method, path, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    fn exchange(
        &self,
        lab: &Lab,
        cn: &str,
        method: &str,
        path: &str,
        body: &str,
    ) -> Result<(u16, String), String> {
        let (cert, key) = self.ca.issue(cn, &[]);
        let ca_pem = self.ca.pem();
        let (method, path, body) = (method.to_owned(), path.to_owned(), body.to_owned());
        lab.host.run(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let addr = SocketAddr::from(([127, 0, 0, 1], API_PORT));
            let client = Client::new(addr, &ca_pem, Some((&cert, &key))).expect("client");
            rt.block_on(client.call(&method, &path, &body))
                .map(|(status, body)| (status.as_u16(), body))
        })
    }
}

impl Default for Parties {
    fn default() -> Self {
        Self::new()
    }
}

/// The host's address on an element's link (`.1` of its /24).
#[must_use]
pub fn gateway(element: std::net::Ipv4Addr) -> std::net::Ipv4Addr {
    let [a, b, c, _] = element.octets();
    std::net::Ipv4Addr::new(a, b, c, 1)
}

/// The JSON body that adds lab element `i`, with `more` keys (`"priority": 300`, …): its
/// address only, as a registration must give it (the daemon finds the interface and MAC).
#[must_use]
pub fn element_body(lab: &Lab, i: usize, more: &str) -> String {
    let e = &lab.elements[i];
    let more = if more.is_empty() {
        String::new()
    } else {
        format!(", {more}")
    };
    format!("{{\"address\": \"{}\"{more}}}", e.addr)
}

/// `vnfpool agent` for lab element `i`, running in its namespace.
pub struct Agent {
    child: Option<Child>,
    log: PathBuf,
}

impl Agent {
    /// Writes element `i`'s certificate, key and `agent.yaml` (joining `pool` with `more`
    /// element keys) into `places`, and starts `binary --log-format json agent` in the
    /// element's namespace.
    #[must_use]
    pub fn start(
        binary: &Path,
        lab: &Lab,
        i: usize,
        places: &Places,
        parties: &Parties,
        pool: &str,
        more: &str,
    ) -> Self {
        Self::start_with(binary, lab, i, places, parties, pool, more, "")
    }

    /// [`Self::start`] with `yaml` (top-level keys, one per line) added to `agent.yaml`.
    #[must_use]
    #[expect(clippy::too_many_arguments, reason = "start's, and the agent.yaml lines")]
    pub fn start_with(
        binary: &Path,
        lab: &Lab,
        i: usize,
        places: &Places,
        parties: &Parties,
        pool: &str,
        more: &str,
        yaml: &str,
    ) -> Self {
        let e = &lab.elements[i];
        let dir = places.scratch.path.join(format!("agent-{}", e.name));
        std::fs::create_dir_all(&dir).expect("agent dir");
        let (cert, key) = parties.ca.issue(&format!("agent-{}", e.name), &[]);
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).expect("agent file");
            path
        };
        let (cert, key, ca) = (
            write("agent.crt", &cert),
            write("agent.key", &key),
            write("ca.crt", &parties.ca.pem()),
        );
        let body: serde_json::Value =
            serde_json::from_str(&element_body(lab, i, more)).expect("element body");
        let mut element = body.as_object().expect("an object").clone();
        element.insert("name".to_owned(), e.name.clone().into());
        let config = write(
            "agent.yaml",
            &format!(
                "api: {}:{API_PORT}\nca: {}\ncert: {}\nkey: {}\npool: {pool}\nelement: {}\n{yaml}",
                gateway(e.addr),
                ca.display(),
                cert.display(),
                key.display(),
                serde_json::Value::Object(element),
            ),
        );
        let log = dir.join("agent.log");
        let out = std::fs::File::create(&log).expect("agent log");
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", e.netns.name()))
            .arg(binary)
            .args(["--log-format", "json", "agent", "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("spawning the agent");
        Self {
            child: Some(child),
            log,
        }
    }

    /// The agent's log so far.
    #[must_use]
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (polling its log every 5 ms, at most `timeout`) until the agent has registered;
    /// panics with its log if it exits first or takes longer.
    #[expect(clippy::disallowed_methods, reason = "polls a real process in real time")]
    pub fn wait_registered(&mut self, timeout: Duration) {
        let start = Instant::now();
        loop {
            if log_time(&self.log_text(), "registered").is_some() {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().expect("try_wait")) {
                panic!(
                    "the agent exited ({status}) before registering\n{}",
                    self.log_text()
                );
            }
            assert!(
                start.elapsed() < timeout,
                "the agent did not register within {timeout:?}\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGKILL, as a crash of the element's host: no deregistration. Returns when it is
    /// gone, with the wall-clock time just before the signal.
    pub fn kill(&mut self) -> SystemTime {
        let at = SystemTime::now();
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        at
    }

    /// The process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("a running agent").id()
    }

    /// SIGTERM and the exit status (the agent deregisters first).
    #[must_use]
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("a running agent");
        crate::daemon::terminate(&mut child, timeout, || self.log_text())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The time of the first line of a JSON log (`--log-format json`) whose message is `message`.
#[must_use]
pub fn log_time(log: &str, message: &str) -> Option<SystemTime> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message"] == message)
        .and_then(|v| humantime::parse_rfc3339_weak(v["timestamp"].as_str()?).ok())
}

/// Asks the VIP once on each socket in turn (a new flow each time), one every millisecond,
/// until `done` holds for the answers so far or `limit` passes (or the sockets run out);
/// returns (wall-clock time, answering element) per answer.
#[must_use]
#[expect(clippy::disallowed_methods, reason = "paces requests in real time")]
pub fn new_flows_until(
    socks: &[UdpSocket],
    limit: Duration,
    done: impl Fn(&[(SystemTime, String)]) -> bool,
) -> Vec<(SystemTime, String)> {
    let start = Instant::now();
    let mut answers = Vec::new();
    let mut buf = [0u8; 64];
    for (i, sock) in socks.iter().enumerate() {
        if start.elapsed() >= limit || done(&answers) {
            break;
        }
        // One request per millisecond: the cadence of the measurement, not a wait for anything.
        let slot = start + Duration::from_millis(i as u64);
        if let Some(wait) = slot.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let _ = sock.send(b"ping");
        if let Some(n) = crate::traffic::recv_until(sock, &mut buf, slot + Duration::from_millis(1)) {
            answers.push((SystemTime::now(), String::from_utf8_lossy(&buf[..n]).into_owned()));
        }
    }
    answers
}
