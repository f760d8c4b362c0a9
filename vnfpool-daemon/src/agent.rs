//! `vnfpool agent`: runs beside an element, registers it into a pool over the API (role
//! `element`, its own certificate) and sends it heartbeats until stopped; SIGTERM or SIGINT
//! deregisters it explicitly.
//!
//! # `agent.yaml`
//!
//! ```yaml
//! api: 10.0.0.1:9443              # required: the daemon's API (IP address and port; the
//!                                 #   daemon's certificate must name that IP address)
//! ca: /etc/vnfpool/ca.pem         # required: CA of the daemon's certificate
//! cert: /etc/vnfpool/agent.pem    # required: this agent's certificate (its subject has the
//!                                 #   `element` role in the daemon's api.clients)
//! key: /etc/vnfpool/agent.key     # required: its private key
//! pool: web                       # required: the pool to join
//! element:                        # required: the element, with the keys of a configuration
//!   name: e4                      #   file's element (`name` and `address` required; the
//!   address: 10.10.1.14           #   daemon checks them by the file's rules)
//!   weight: 2
//! heartbeat_to: 10.0.0.1:9471     # where heartbeats go; default: the address the daemon
//!                                 #   gives, else the API's, with the port the daemon gives
//! paths:                          # optional: send every heartbeat over each of these
//!   - from: 10.1.0.14             #   a source address of this host, or an interface (its
//!     to: 10.1.0.1:9471           #   first address of the element's family; heartbeats
//!   - from: eth2                  #   leave through it); `to` defaults to heartbeat_to's
//!     to: 10.2.0.1:9471
//! ```
//!
//! Heartbeats leave from the element's address when it is one of this host's: the daemon's
//! data plane drops datagrams to its heartbeat port from any other source. With `paths`, they
//! leave from each path's address instead, and the registration names those addresses
//! (`heartbeat_paths`): the daemon follows each path, and fails the element only when every
//! path is silent.
//!
//! Registration is retried (1 s apart) while the daemon cannot be reached; a refusal (a 4xx
//! answer) ends the agent with its message and exit status 2. Heartbeats go every interval the
//! daemon gave, stamped with the wall clock; a late tick sends one heartbeat, not a burst.

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, SystemTime},
};

use serde::Deserialize;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

use crate::{
    api::{ElementAdded, client::Client},
    heartbeat::{
        Key,
        udp::{Sender, ip_of, path_socket},
    },
    timer::PreciseTimer,
};

/// Exit status of a bad configuration or a refused registration.
const EXIT_REFUSED: u8 = 2;
/// Time between two registration attempts while the daemon cannot be reached.
const RETRY: Duration = Duration::from_secs(1);
/// Longest the deregistration may take at shutdown.
const DEREGISTER_TIMEOUT: Duration = Duration::from_secs(2);

/// `agent.yaml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    pub api: SocketAddr,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub pool: String,
    /// The element's keys; `name` is taken out for the path.
    pub element: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub heartbeat_to: Option<SocketAddr>,
    /// Talk to the API over MPTCP where the kernel offers it (plain TCP otherwise); default on.
    #[serde(default = "on")]
    pub mptcp: bool,
    /// Heartbeat paths; none: one, from the element's address.
    #[serde(default)]
    pub paths: Vec<PathConfig>,
}

/// One heartbeat path of `agent.yaml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathConfig {
    /// A source address of this host, or an interface name.
    pub from: String,
    /// Where this path's heartbeats go; default: where the others go.
    #[serde(default)]
    pub to: Option<SocketAddr>,
}

/// A path resolved: its source address, and the interface it is held to when it was named by
/// interface.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HeartbeatPath {
    from: IpAddr,
    device: Option<String>,
    to: Option<SocketAddr>,
}

fn on() -> bool {
    true
}

impl AgentConfig {
    /// Reads `path`.
    ///
    /// # Errors
    /// What is wrong, with the file's name (and line and column, for YAML errors).
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let config: Self = serde_saphyr::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if config.element.contains_key("heartbeat_paths") {
            return Err(format!(
                "{}: element.heartbeat_paths: set by the agent from `paths`; list the paths there",
                path.display()
            ));
        }
        if config.paths.len() > crate::heartbeat::MAX_PATHS {
            return Err(format!(
                "{}: paths: {} paths; at most {}",
                path.display(),
                config.paths.len(),
                crate::heartbeat::MAX_PATHS
            ));
        }
        match config.element.get("name") {
            Some(serde_json::Value::String(_)) => Ok(config),
            Some(_) => Err(format!("{}: element.name: expected a string", path.display())),
            None => Err(format!("{}: element.name: required", path.display())),
        }
    }

    /// The configured paths with their source addresses: an interface's is its first address
    /// of the element's family.
    fn resolve_paths(&self) -> Result<Vec<HeartbeatPath>, String> {
        let v4 = self.address().is_none_or(|a| a.is_ipv4());
        let mut interfaces: Option<Vec<(String, IpAddr)>> = None;
        let mut paths: Vec<HeartbeatPath> = Vec::with_capacity(self.paths.len());
        for (i, p) in self.paths.iter().enumerate() {
            let path = if let Ok(from) = p.from.parse::<IpAddr>() {
                HeartbeatPath {
                    from,
                    device: None,
                    to: p.to,
                }
            } else {
                let list = interfaces.get_or_insert_with(local_addresses);
                let from = list
                    .iter()
                    .find(|(name, ip)| *name == p.from && ip.is_ipv4() == v4)
                    .map(|&(_, ip)| ip)
                    .ok_or_else(|| {
                        format!(
                            "paths[{i}].from: `{}` is neither an address nor an interface with an {} address",
                            p.from,
                            if v4 { "IPv4" } else { "IPv6" }
                        )
                    })?;
                HeartbeatPath {
                    from,
                    device: Some(p.from.clone()),
                    to: p.to,
                }
            };
            if paths.iter().any(|q| q.from == path.from) {
                return Err(format!(
                    "paths[{i}].from: {} is another path's address",
                    path.from
                ));
            }
            paths.push(path);
        }
        Ok(paths)
    }

    fn name(&self) -> &str {
        self.element
            .get("name")
            .and_then(|n| n.as_str())
            .unwrap_or_default()
    }

    /// The element's address, as registered.
    fn address(&self) -> Option<IpAddr> {
        self.element.get("address")?.as_str()?.parse().ok()
    }

    /// The registration path and body: the element, with its heartbeat paths' addresses.
    fn request(&self, paths: &[HeartbeatPath]) -> (String, String) {
        let mut body = self.element.clone();
        body.remove("name");
        if !paths.is_empty() {
            body.insert(
                "heartbeat_paths".to_owned(),
                paths.iter().map(|p| p.from.to_string()).collect(),
            );
        }
        (
            format!("/v1/pools/{}/elements/{}", self.pool, self.name()),
            serde_json::Value::Object(body).to_string(),
        )
    }
}

/// Runs the agent until SIGTERM or SIGINT.
#[must_use]
pub fn main(config_path: &Path) -> ExitCode {
    let config = match AgentConfig::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_REFUSED);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vnfpool agent: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(config))
}

/// The API client of `config`: its CA, certificate and key read, MPTCP as it says.
fn client(config: &AgentConfig) -> Result<Client, String> {
    let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()));
    let (ca, cert, key) = (read(&config.ca)?, read(&config.cert)?, read(&config.key)?);
    Client::new(config.api, &ca, Some((&cert, &key))).map(|c| c.with_mptcp(config.mptcp))
}

async fn run(config: AgentConfig) -> ExitCode {
    let client = match client(&config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vnfpool agent: {e}");
            return ExitCode::from(EXIT_REFUSED);
        }
    };
    let (Ok(mut sigterm), Ok(mut sigint)) =
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        eprintln!("vnfpool agent: installing signal handlers failed");
        return ExitCode::FAILURE;
    };
    let paths = match config.resolve_paths() {
        Ok(paths) => paths,
        Err(e) => {
            eprintln!("vnfpool agent: {e}");
            return ExitCode::from(EXIT_REFUSED);
        }
    };
    let (path, body) = config.request(&paths);
    let added = match register(&client, &path, &body, &mut sigterm, &mut sigint).await {
        Ok(added) => added,
        Err(code) => return code,
    };
    let Some(registration) = added.registration else {
        error!(
            "the daemon registered the element without a heartbeat key (is this certificate's role `element`?)"
        );
        return ExitCode::FAILURE;
    };
    let key = match Key::from_hex(&registration.key) {
        Ok(k) => k,
        Err(e) => {
            error!(error = %e, "the daemon's heartbeat key");
            return ExitCode::FAILURE;
        }
    };
    let target = config.heartbeat_to.unwrap_or_else(|| {
        let ip = registration
            .heartbeat_address
            .as_deref()
            .and_then(|a| a.parse::<IpAddr>().ok())
            .unwrap_or(config.api.ip());
        SocketAddr::new(ip, registration.heartbeat_port)
    });
    let interval = Duration::from_micros(registration.interval_us.max(1));
    let mut sender = match sender(&config, &paths, target, registration.id, &key).await {
        Ok(s) => s,
        Err(e) => {
            error!(error = %e, %target, "heartbeat socket");
            return ExitCode::FAILURE;
        }
    };
    info!(
        pool = %added.pool,
        element = %added.element,
        id = registration.id,
        created = added.created,
        heartbeat_to = %target,
        interval_us = registration.interval_us,
        misses = registration.misses,
        paths = paths.len(),
        "registered"
    );
    // A timerfd, not the runtime's millisecond timer: at a 1 ms interval and a miss limit of 3,
    // rounding every tick up to the next millisecond would leave the daemon no margin.
    let timer = match PreciseTimer::new() {
        Ok(t) => t,
        Err(e) => {
            error!(error = %e, "creating the heartbeat timer (timerfd)");
            return ExitCode::FAILURE;
        }
    };
    let mut next = std::time::Instant::now();
    let mut failures = vec![0u64; paths.len().max(1)];
    loop {
        tokio::select! {
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
            slept = timer.sleep_until(next) => {
                if let Err(e) = slept {
                    // Never seen; the runtime's timer still paces the heartbeats.
                    warn!(error = %e, "heartbeat timer failed");
                    tokio::time::sleep_until(next.into()).await;
                }
                // On the schedule; a tick late by more than an interval sends one heartbeat, not
                // a burst, and the schedule starts again from it.
                let now = std::time::Instant::now();
                next += interval;
                if next < now {
                    next = now + interval;
                }
                // An ICMP error about an earlier heartbeat (nobody listening for a moment, as
                // while the daemon restarts) or a lost route surfaces here; the next
                // heartbeat may go through.
                let (_, results) = sender.send_each(SystemTime::now()).await;
                for ((result, failures), i) in results.into_iter().zip(&mut failures).zip(0..) {
                    if let Err(e) = result {
                        *failures += 1;
                        if failures.is_power_of_two() {
                            let from = paths.get(i).map(|p| p.from.to_string());
                            warn!(error = %e, failures = *failures, path = from.as_deref().unwrap_or("the element's address"), "heartbeat not sent");
                        }
                    }
                }
            }
        }
    }
    match tokio::time::timeout(DEREGISTER_TIMEOUT, client.call("DELETE", &path, "")).await {
        Ok(Ok((status, _))) if status.is_success() => {
            info!(pool = %added.pool, element = %added.element, "deregistered");
            ExitCode::SUCCESS
        }
        Ok(Ok((status, text))) => {
            error!(status = status.as_u16(), answer = %text, "deregistration refused");
            ExitCode::FAILURE
        }
        Ok(Err(e)) => {
            error!(error = %e, "deregistration failed; the daemon fails the element when its heartbeats stop");
            ExitCode::FAILURE
        }
        Err(_) => {
            error!("deregistration timed out; the daemon fails the element when its heartbeats stop");
            ExitCode::FAILURE
        }
    }
}

/// The heartbeat sender: one socket per path, or one from the element's address.
async fn sender(
    config: &AgentConfig,
    paths: &[HeartbeatPath],
    target: SocketAddr,
    id: u64,
    key: &Key,
) -> std::io::Result<Sender> {
    if paths.is_empty() {
        return Sender::connect_from(config.address(), target, id, key).await;
    }
    let mut sockets = Vec::with_capacity(paths.len());
    for p in paths {
        sockets.push(path_socket(Some(p.from), p.device.as_deref(), p.to.unwrap_or(target)).await?);
    }
    Ok(Sender::over(sockets, id, key))
}

/// Every address of this host's interfaces, with the interface's name.
fn local_addresses() -> Vec<(String, IpAddr)> {
    let Ok(addresses) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addresses
        .filter_map(|a| Some((a.interface_name, ip_of(a.address.as_ref()?)?)))
        .collect()
}

/// Registers until the daemon answers: the registration, or the exit status to end with
/// (refused, or stopped by a signal meanwhile).
async fn register(
    client: &Client,
    path: &str,
    body: &str,
    sigterm: &mut tokio::signal::unix::Signal,
    sigint: &mut tokio::signal::unix::Signal,
) -> Result<ElementAdded, ExitCode> {
    loop {
        match client.call("PUT", path, body).await {
            Ok((status, text)) if status.is_success() => {
                return serde_json::from_str::<ElementAdded>(&text).map_err(|e| {
                    error!(error = %e, answer = %text, "the daemon's answer is not a registration");
                    ExitCode::FAILURE
                });
            }
            Ok((status, text)) if status.is_client_error() => {
                error!(status = status.as_u16(), answer = %text, "registration refused");
                return Err(ExitCode::from(EXIT_REFUSED));
            }
            Ok((status, text)) => {
                warn!(status = status.as_u16(), answer = %text, "registration failed; retrying");
            }
            Err(e) => warn!(error = %e, "daemon unreachable; retrying"),
        }
        tokio::select! {
            _ = sigterm.recv() => return Err(ExitCode::SUCCESS),
            _ = sigint.recv() => return Err(ExitCode::SUCCESS),
            () = tokio::time::sleep(RETRY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_gives_the_registration_request_and_says_what_is_missing() {
        let dir = tempfile::Builder::new()
            .prefix("vnfp-agent-")
            .tempdir()
            .expect("dir");
        let path = dir.path().join("agent.yaml");
        std::fs::write(
            &path,
            "api: 10.0.0.1:9443\nca: /ca.pem\ncert: /a.pem\nkey: /a.key\npool: web\nelement: { name: e4, address: 10.10.1.14, weight: 2 }\n",
        )
        .expect("write");
        let config = AgentConfig::load(&path).expect("valid");
        let (path_, body) = config.request(&config.resolve_paths().expect("no paths"));
        assert_eq!(path_, "/v1/pools/web/elements/e4");
        let body: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(body, serde_json::json!({ "address": "10.10.1.14", "weight": 2 }));

        std::fs::write(
            &path,
            "api: 10.0.0.1:9443\nca: /ca.pem\ncert: /a.pem\nkey: /a.key\npool: web\nelement: { address: 10.10.1.14 }\n",
        )
        .expect("write");
        let e = AgentConfig::load(&path).expect_err("no name");
        assert!(e.ends_with("element.name: required"), "{e}");
        // Paths: by address or by interface (lo's 127.0.0.1), in the registration.
        std::fs::write(
            &path,
            "api: 10.0.0.1:9443\nca: /ca.pem\ncert: /a.pem\nkey: /a.key\npool: web\nelement: { name: e4, address: 10.10.1.14 }\npaths: [{ from: 10.1.0.14, to: 10.1.0.1:9471 }, { from: lo }]\n",
        )
        .expect("write");
        let config = AgentConfig::load(&path).expect("valid");
        let paths = config.resolve_paths().expect("resolved");
        assert_eq!(
            paths,
            [
                HeartbeatPath {
                    from: "10.1.0.14".parse().expect("ip"),
                    device: None,
                    to: Some("10.1.0.1:9471".parse().expect("addr")),
                },
                HeartbeatPath {
                    from: "127.0.0.1".parse().expect("ip"),
                    device: Some("lo".to_owned()),
                    to: None,
                }
            ]
        );
        let body: serde_json::Value = serde_json::from_str(&config.request(&paths).1).expect("JSON");
        assert_eq!(
            body,
            serde_json::json!({ "address": "10.10.1.14", "heartbeat_paths": ["10.1.0.14", "127.0.0.1"] })
        );
        for (paths, error) in [
            (
                "[{ from: no-such-if0 }]",
                "paths[0].from: `no-such-if0` is neither an address nor an interface with an IPv4 address",
            ),
            (
                "[{ from: 127.0.0.1 }, { from: lo }]",
                "paths[1].from: 127.0.0.1 is another path's address",
            ),
        ] {
            std::fs::write(
                &path,
                format!("api: 10.0.0.1:9443\nca: /ca.pem\ncert: /a.pem\nkey: /a.key\npool: web\nelement: {{ name: e4, address: 10.10.1.14 }}\npaths: {paths}\n"),
            )
            .expect("write");
            let config = AgentConfig::load(&path).expect("valid");
            assert_eq!(config.resolve_paths().expect_err(paths), error);
        }
        std::fs::write(
            &path,
            "api: 10.0.0.1:9443\nca: /ca.pem\ncert: /a.pem\nkey: /a.key\npool: web\nelement: { name: e4, address: 10.10.1.14, heartbeat_paths: [10.1.0.14] }\n",
        )
        .expect("write");
        let e = AgentConfig::load(&path).expect_err("paths in the element");
        assert!(
            e.ends_with("element.heartbeat_paths: set by the agent from `paths`; list the paths there"),
            "{e}"
        );
        std::fs::write(&path, "api: nowhere\n").expect("write");
        let e = AgentConfig::load(&path).expect_err("bad address");
        assert!(
            e.starts_with(&path.display().to_string()) && e.contains("line 1"),
            "{e}"
        );
    }
}
