//! Failure detection I/O: active probes, their schedule, and link state from netlink.
//!
//! A probe produces an [`Outcome`] and nothing else; rise/fall counting and every decision
//! taken on outcomes live in `model`. [`check`] runs one probe, [`spawn_probers`] runs them on a
//! fixed schedule per element, and [`link::watch_links`] reports interface state changes.

pub mod exec;
pub mod http;
pub mod link;
mod schedule;
pub mod tcp;
pub mod udp;

#[cfg(test)]
pub(crate) mod testnet;

use std::{
    io,
    net::{IpAddr, SocketAddr},
    process::ExitStatus,
    time::Duration,
};

use tokio::time::{self, Instant};

pub use self::schedule::{ProbeReport, ProbeTarget, spawn_probers};

/// One incarnation of an element: its pool's and its own data-plane index, and the generation
/// the controller gave its configuration. A probe report about another generation (an element
/// that a reload removed or changed) is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ElementRef {
    pub pool: u32,
    pub slot: u32,
    pub generation: u64,
}
use crate::{model::spec::CheckSpec, telemetry::error_chain};

/// The result of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub ok: bool,
    /// From the start of the probe to its success or failure.
    pub latency: Duration,
    /// Why the probe failed (`None` when `ok`).
    pub detail: Option<String>,
    /// The probe could not be made for a reason of this host's ([`ProbeError::is_local`]: no
    /// descriptor, no buffer, no process): it says nothing of the element, and must not count
    /// against it (a descriptor flood would otherwise fail every element).
    pub local: bool,
}

impl Outcome {
    #[must_use]
    pub fn success(latency: Duration) -> Self {
        Self {
            ok: true,
            latency,
            detail: None,
            local: false,
        }
    }

    #[must_use]
    pub fn failure(latency: Duration, detail: String) -> Self {
        Self {
            ok: false,
            latency,
            detail: Some(detail),
            local: false,
        }
    }

    fn from_result(result: Result<(), ProbeError>, latency: Duration) -> Self {
        match result {
            Ok(()) => Self::success(latency),
            Err(error) => Self {
                local: error.is_local(),
                ..Self::failure(latency, error_chain(&error))
            },
        }
    }
}

/// Why a probe failed. [`check`] turns it into [`Outcome::detail`] (with its sources).
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("no answer within {after:?}")]
    TimedOut { after: Duration },
    #[error("TCP connect to {addr}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("HTTP {stage} with {addr}")]
    Http {
        addr: SocketAddr,
        stage: &'static str,
        #[source]
        source: hyper::Error,
    },
    #[error("building the HTTP request for path {path:?}")]
    HttpRequest {
        path: String,
        #[source]
        source: hyper::http::Error,
    },
    #[error("HTTP status {got}, expected {expected}")]
    Status { expected: u16, got: u16 },
    #[error("UDP {op} with {addr}")]
    Udp {
        addr: SocketAddr,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("UDP port unreachable at {addr} (ICMP)")]
    PortUnreachable { addr: SocketAddr },
    #[error("UDP reply from {addr} differs from the expected bytes")]
    UnexpectedReply { addr: SocketAddr },
    #[error("the exec check has an empty command")]
    EmptyCommand,
    #[error("starting {program:?}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("waiting for {program:?}")]
    Wait {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("{program:?} failed: {status}")]
    Exit { program: String, status: ExitStatus },
    #[error("the previous probe is still running after {running:?}")]
    Overrun { running: Duration },
    #[error("no answer after {running:?}, where the element usually answers within {expected:?}")]
    Late { running: Duration, expected: Duration },
}

impl ProbeError {
    /// Whether the probe failed for want of something on this host before it could reach the
    /// element: descriptors (`EMFILE`, `ENFILE`), buffers or memory (`ENOBUFS`, `ENOMEM`),
    /// local ports (`EADDRNOTAVAIL`) or processes (`EAGAIN` from fork).
    #[must_use]
    pub fn is_local(&self) -> bool {
        let (Self::Connect { source, .. } | Self::Udp { source, .. } | Self::Spawn { source, .. }) = self
        else {
            return false;
        };
        let Some(errno) = source.raw_os_error() else {
            return false;
        };
        let local = [
            rustix::io::Errno::MFILE,
            rustix::io::Errno::NFILE,
            rustix::io::Errno::NOBUFS,
            rustix::io::Errno::NOMEM,
            rustix::io::Errno::ADDRNOTAVAIL,
            rustix::io::Errno::AGAIN,
        ];
        local.iter().any(|e| e.raw_os_error() == errno)
    }
}

/// Runs one probe of `spec` against the element `name` at `target`.
///
/// Every failure, including an I/O error or `timeout` passing, is an `Outcome` with `ok: false`
/// and a `detail`; this never panics on I/O. The probe uses a fresh connection or socket.
pub async fn check(spec: &CheckSpec, target: IpAddr, name: &str, timeout: Duration) -> Outcome {
    let start = Instant::now();
    let result = match spec {
        CheckSpec::Tcp { port } => within(timeout, tcp::probe(SocketAddr::new(target, *port))).await,
        CheckSpec::Http {
            port,
            path,
            expect_status,
        } => {
            within(
                timeout,
                http::probe(SocketAddr::new(target, *port), path, *expect_status),
            )
            .await
        }
        CheckSpec::Udp {
            port,
            payload,
            expect,
        } => {
            within(
                timeout,
                udp::probe(SocketAddr::new(target, *port), payload, expect.as_deref()),
            )
            .await
        }
        // The exec probe enforces `timeout` itself so that it can kill and reap the child.
        CheckSpec::Exec { command } => exec::probe(command, target, name, timeout).await,
    };
    Outcome::from_result(result, start.elapsed())
}

async fn within(
    timeout: Duration,
    probe: impl Future<Output = Result<(), ProbeError>>,
) -> Result<(), ProbeError> {
    time::timeout(timeout, probe)
        .await
        .unwrap_or(Err(ProbeError::TimedOut { after: timeout }))
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    #[test]
    fn a_probe_this_host_could_not_make_is_local() {
        let addr = SocketAddr::new(LOCALHOST, 1);
        let connect = |e: rustix::io::Errno| ProbeError::Connect {
            addr,
            source: io::Error::from_raw_os_error(e.raw_os_error()),
        };
        for local in [
            rustix::io::Errno::MFILE,
            rustix::io::Errno::NFILE,
            rustix::io::Errno::NOBUFS,
            rustix::io::Errno::NOMEM,
            rustix::io::Errno::ADDRNOTAVAIL,
        ] {
            assert!(connect(local).is_local(), "{local:?}");
            let outcome = Outcome::from_result(Err(connect(local)), Duration::ZERO);
            assert!(outcome.local && !outcome.ok, "{outcome:?}");
        }
        let spawn = ProbeError::Spawn {
            program: "/bin/true".into(),
            source: io::Error::from_raw_os_error(rustix::io::Errno::AGAIN.raw_os_error()),
        };
        assert!(spawn.is_local(), "no process left");
        // What the element or the path says is a verdict.
        for remote in [
            rustix::io::Errno::CONNREFUSED,
            rustix::io::Errno::HOSTUNREACH,
            rustix::io::Errno::NETUNREACH,
            rustix::io::Errno::CONNRESET,
        ] {
            assert!(!connect(remote).is_local(), "{remote:?}");
        }
        assert!(
            !ProbeError::TimedOut {
                after: Duration::ZERO
            }
            .is_local()
        );
        assert!(!Outcome::failure(Duration::ZERO, "refused".into()).local);
    }

    #[tokio::test]
    async fn detail_carries_the_source_chain() {
        let outcome = check(
            &CheckSpec::Exec {
                command: vec!["/nonexistent/vnfpool-check".to_owned()],
            },
            LOCALHOST,
            "e1",
            Duration::from_secs(1),
        )
        .await;
        assert!(!outcome.ok);
        let detail = outcome.detail.expect("a failure has a detail");
        assert!(
            detail.starts_with("starting \"/nonexistent/vnfpool-check\": "),
            "{detail}"
        );
    }
}
