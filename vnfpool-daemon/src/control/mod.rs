//! The local control socket: `vnfpool status | drain | undrain | reload` talk to the running
//! daemon over a unix stream socket (default `/run/vnfpool/vnfpool.sock`, mode 0600, so only
//! root, or the daemon's own user, may use it). One request per connection, one JSON document
//! per line each way. Handlers only parse and forward a [`Command`] to the controller, which
//! answers on a oneshot channel.

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot},
};

/// Longest a client waits for the daemon's answer.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest request line accepted.
const MAX_REQUEST: usize = 64 * 1024;

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "kebab-case")]
pub enum Request {
    /// The state of every pool.
    Status,
    /// No new flows to `element`; its flows stay until they end or `deadline` passes.
    Drain {
        pool: String,
        element: String,
        deadline: Option<Duration>,
    },
    /// Ends a drain.
    Undrain { pool: String, element: String },
    /// Re-reads the configuration file and applies the difference.
    Reload,
    /// Copies the current state into the metrics, for a scrape of `/metrics`.
    SampleMetrics,
    /// Every pool as the Service Control Entity sees it (no element identity).
    Summaries,
    /// The same, as the JSON array `GET /v1/pools` answers: encoded once and kept until a pool
    /// changes.
    SummariesJson,
    /// Adds `element` to `pool` as `body` (the keys of a file element) says; when it is there
    /// already with the same origin, the same body and the same registrant, nothing changes
    /// (idempotent), and a new body replaces the old one. `subject` is the client's for an
    /// element that registers itself.
    AddElement {
        pool: String,
        element: String,
        body: serde_json::Value,
        origin: crate::model::spec::Origin,
        subject: Option<String>,
    },
    /// Removes an element added at run time. `subject`: the caller when it is an element,
    /// which may remove only itself; `None` for an operator.
    RemoveElement {
        pool: String,
        element: String,
        subject: Option<String>,
    },
    /// The Service Control Entity's redundancy request: `active` actives (N) in `pool`.
    SetRedundancy { pool: String, active: u32 },
}

/// What the daemon answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "response", rename_all = "kebab-case")]
pub enum Response {
    /// Done.
    Ok { message: String },
    /// The state of every pool.
    Status(Status),
    /// Refused or failed; nothing changed.
    Error { message: String },
    /// The pools as the Service Control Entity sees them.
    Summaries { pools: Vec<crate::api::PoolSummary> },
    /// [`Request::SummariesJson`]'s answer.
    SummariesJson { json: String },
    /// Refused; nothing changed. `status` is the HTTP status that says why: 404 (no such
    /// pool or element), 403 (not the caller's), 409 (conflicts with the configuration or
    /// cannot be met), 422 (invalid).
    Refused { status: u16, message: String },
    /// An element was added, or was there as asked.
    Added(crate::api::ElementAdded),
    /// The answer to a redundancy request.
    Level(crate::api::LevelAnswer),
}

/// The daemon's view of its pools, for `vnfpool status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Status {
    pub pools: Vec<PoolStatus>,
    /// Heartbeats of self-registered elements, when the API is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeats: Option<crate::heartbeat::Counters>,
}

/// One pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolStatus {
    pub name: String,
    pub vip: String,
    pub ports: Vec<u16>,
    pub protocol: String,
    pub model: String,
    /// Generation of the live data-plane mapping.
    pub generation: u32,
    pub packets: u64,
    pub bytes: u64,
    pub elements: Vec<ElementStatus>,
    /// Most recent failovers, newest last.
    pub failovers: Vec<FailoverStatus>,
    /// Detection budget and the worst-case detection of the health settings, if a budget is set.
    pub budget: Option<BudgetStatus>,
    /// Policy violations raised since the daemon started (a backup sharing a risk with its active).
    #[serde(default)]
    pub policy_violations: u64,
}

/// One element.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ElementStatus {
    pub name: String,
    pub address: String,
    /// `active`, `standby`, `draining` or `out`.
    pub role: String,
    /// `up`, `down` or `unknown`.
    pub health: String,
    pub packets: u64,
    pub bytes: u64,
    /// For an active: its backup and why it was chosen (`e3: no shared risk, site cost 2`).
    #[serde(default)]
    pub backup: Option<String>,
    /// For an active: its backup shares a risk with it.
    #[serde(default)]
    pub policy_violation: bool,
}

/// One failover.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailoverStatus {
    pub element: String,
    pub reason: String,
    pub detection: Duration,
    pub switch: Duration,
    /// Seconds since the Unix epoch.
    pub at_unix: f64,
}

/// A pool's budget beside what it achieves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetStatus {
    pub detect: Duration,
    pub switch: Duration,
    pub worst_detection: Duration,
}

/// A request on its way to the controller, with where to send the answer.
#[derive(Debug)]
pub struct Command {
    pub request: Request,
    pub reply: oneshot::Sender<Response>,
}

/// Errors of the control socket.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control socket {}: {what}", path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("control socket {}: malformed answer", path.display())]
    Protocol {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("control socket {}: no answer within {CLIENT_TIMEOUT:?}", path.display())]
    Timeout { path: PathBuf },
}

/// Binds the socket at `path` (replacing a stale one), mode 0600.
pub fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    let io = |what, source| ControlError::Io {
        path: path.to_owned(),
        what,
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io("creating its directory", e))?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io("removing a stale socket", e)),
        _ => {}
    }
    let listener = UnixListener::bind(path).map_err(|e| io("binding", e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| io("setting mode 0600", e))?;
    Ok(listener)
}

/// Serves connections until the controller's channel closes.
pub async fn serve(listener: UnixListener, commands: mpsc::Sender<Command>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let commands = commands.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(stream, commands).await {
                tracing::debug!(error = %e, "control connection");
            }
        });
    }
}

async fn handle(stream: UnixStream, commands: mpsc::Sender<Command>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let n = BufReader::new(read.take(MAX_REQUEST as u64))
        .read_line(&mut line)
        .await?;
    let response = match serde_json::from_str::<Request>(&line[..n]) {
        Err(e) => Response::Error {
            message: format!("malformed request: {e}"),
        },
        Ok(request) => {
            let (reply, answer) = oneshot::channel();
            if commands.send(Command { request, reply }).await.is_err() {
                Response::Error {
                    message: "the daemon is shutting down".to_owned(),
                }
            } else {
                answer.await.unwrap_or(Response::Error {
                    message: "the daemon is shutting down".to_owned(),
                })
            }
        }
    };
    let mut out = serde_json::to_vec(&response).map_err(std::io::Error::other)?;
    out.push(b'\n');
    write.write_all(&out).await?;
    write.shutdown().await
}

/// Sends `request` to the daemon at `path` and waits for its answer.
pub async fn request(path: &Path, request: &Request) -> Result<Response, ControlError> {
    let io = |what, source| ControlError::Io {
        path: path.to_owned(),
        what,
        source,
    };
    let exchange = async {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|e| io("connecting (is the daemon running?)", e))?;
        let (read, mut write) = stream.into_split();
        let mut out = serde_json::to_vec(request).expect("requests serialize");
        out.push(b'\n');
        write.write_all(&out).await.map_err(|e| io("sending", e))?;
        let mut line = String::new();
        BufReader::new(read)
            .read_line(&mut line)
            .await
            .map_err(|e| io("receiving", e))?;
        serde_json::from_str(&line).map_err(|source| ControlError::Protocol {
            path: path.to_owned(),
            source,
        })
    };
    tokio::time::timeout(CLIENT_TIMEOUT, exchange)
        .await
        .map_err(|_| ControlError::Timeout {
            path: path.to_owned(),
        })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_reaches_the_controller_and_its_answer_the_client() {
        let dir = std::env::temp_dir().join(format!("vnfp-control-{}", std::process::id()));
        let path = dir.join("vnfpool.sock");
        let listener = bind(&path).expect("bind");
        let mode = std::fs::metadata(&path).expect("socket").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (tx, mut rx) = mpsc::channel(1);
        let server = tokio::spawn(serve(listener, tx));
        let controller = tokio::spawn(async move {
            let cmd = rx.recv().await.expect("a command");
            assert_eq!(
                cmd.request,
                Request::Drain {
                    pool: "web".into(),
                    element: "e2".into(),
                    deadline: Some(Duration::from_secs(30))
                }
            );
            cmd.reply
                .send(Response::Ok {
                    message: "draining".into(),
                })
                .expect("client waiting");
        });
        let request = Request::Drain {
            pool: "web".into(),
            element: "e2".into(),
            deadline: Some(Duration::from_secs(30)),
        };
        let answer = super::request(&path, &request).await.expect("answer");
        assert_eq!(
            answer,
            Response::Ok {
                message: "draining".into()
            }
        );
        controller.await.expect("controller");
        server.abort();
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[tokio::test]
    async fn a_malformed_request_gets_an_error_not_a_hang() {
        let dir = std::env::temp_dir().join(format!("vnfp-control-bad-{}", std::process::id()));
        let path = dir.join("vnfpool.sock");
        let listener = bind(&path).expect("bind");
        let (tx, _rx) = mpsc::channel(1);
        let server = tokio::spawn(serve(listener, tx));
        let mut stream = UnixStream::connect(&path).await.expect("connect");
        stream
            .write_all(b"{\"request\":\"explode\"}\n")
            .await
            .expect("send");
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).await.expect("answer");
        let answer: Response = serde_json::from_str(&line).expect("json");
        assert!(
            matches!(answer, Response::Error { ref message } if message.contains("malformed")),
            "{answer:?}"
        );
        server.abort();
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
