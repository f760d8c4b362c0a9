//! The local control socket: `vnfpool status | drain | undrain | reload` talk to the running
//! daemon over a unix stream socket (default `/run/vnfpool/vnfpool.sock`, mode 0600, so only
//! root, or the daemon's own user, may use it). One request per connection, one JSON document
//! per line each way. A status is read from the controller's published snapshot; a change is
//! forwarded as a [`Command`], which the controller answers on a oneshot channel.

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
    sync::mpsc,
};

pub use crate::controller::snapshot::{BudgetStatus, ElementStatus, FailoverStatus, PoolStatus, Status};
use crate::controller::{
    commands::{self, Command},
    snapshot::Views,
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
///
/// The socket never exists under `path` with another mode: `bind` makes it with the mode the
/// umask leaves (0755 or so, which lets anyone connect), so it is bound in a directory of its
/// own (mode 0700: no one else may reach what is inside), made 0600 there, then renamed onto
/// `path`, which is atomic. The process's umask is left alone: other threads create files too.
pub fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    use std::os::unix::fs::DirBuilderExt as _;
    let io = |what, source| ControlError::Io {
        path: path.to_owned(),
        what,
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).map_err(|e| io("creating its directory", e))?;
    let private = dir.join(format!(".vnfpool-bind-{}", std::process::id()));
    // A leftover of a process of the same pid that died here.
    let _ = std::fs::remove_dir_all(&private);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&private)
        .map_err(|e| io("creating a private directory to bind in", e))?;
    let bound = private.join("sock");
    let listener = UnixListener::bind(&bound)
        .map_err(|e| io("binding", e))
        .and_then(|listener| {
            std::fs::set_permissions(&bound, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| io("setting mode 0600", e))?;
            // Replaces a stale socket in the same step.
            std::fs::rename(&bound, path).map_err(|e| io("moving into place", e))?;
            Ok(listener)
        });
    let _ = std::fs::remove_dir_all(&private);
    listener
}

/// Serves connections until the process ends.
pub async fn serve(
    listener: UnixListener,
    commands: mpsc::Sender<Command>,
    views: Views,
    saved: crate::controller::work::Saved,
) {
    let mut gate = crate::listen::Gate::new("control", crate::listen::CONTROL_CONNECTIONS);
    loop {
        let ((stream, _), permit) = gate.accept(|| listener.accept()).await;
        let (commands, views, saved) = (commands.clone(), views.clone(), saved.clone());
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = handle(stream, commands, views, saved).await {
                tracing::debug!(error = %e, "control connection");
            }
        });
    }
}

async fn handle(
    stream: UnixStream,
    commands: mpsc::Sender<Command>,
    views: Views,
    saved: crate::controller::work::Saved,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let n = BufReader::new(read.take(MAX_REQUEST as u64))
        .read_line(&mut line)
        .await?;
    let answer = match serde_json::from_str::<Request>(&line[..n]) {
        Err(e) => Err(format!("malformed request: {e}")),
        Ok(Request::Status) => Ok(Response::Status(
            tokio::task::spawn_blocking(move || views.status())
                .await
                .map_err(std::io::Error::other)?,
        )),
        Ok(Request::Drain {
            pool,
            element,
            deadline,
        }) => ok(commands::ask(&commands, |reply| Command::Drain {
            pool,
            element,
            deadline,
            reply,
        })
        .await),
        Ok(Request::Undrain { pool, element }) => {
            ok(commands::ask(&commands, |reply| Command::Undrain { pool, element, reply }).await)
        }
        Ok(Request::Reload) => ok(commands::ask(&commands, |reply| Command::Reload { reply }).await),
    };
    // A change is answered once the state that holds it is on disk (it survives a crash).
    let answer = match answer {
        Ok(Response::Ok { message }) => saved
            .wait()
            .await
            .map(|()| Response::Ok { message })
            .map_err(|e| e.to_string()),
        other => other,
    };
    let response = answer.unwrap_or_else(|message| Response::Error { message });
    let mut out = serde_json::to_vec(&response).map_err(std::io::Error::other)?;
    out.push(b'\n');
    write.write_all(&out).await?;
    write.shutdown().await
}

fn ok(answer: Result<String, commands::Refusal>) -> Result<Response, String> {
    answer
        .map(|message| Response::Ok { message })
        .map_err(|why| why.to_string())
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
    use std::sync::Arc;

    use super::*;
    use crate::{controller::snapshot::Snapshot, dataplane::recording::RecordingDataplane};

    fn views() -> Views {
        let (_, snapshot) = tokio::sync::watch::channel(Arc::new(Snapshot::default()));
        Views {
            snapshot,
            reader: Arc::new(RecordingDataplane::new()),
            heartbeats: None,
            flow_sync: None,
        }
    }

    /// What happened to `name` in the directory an inotify instance watches, in order.
    fn events_of(inotify: &std::os::fd::OwnedFd, name: &str) -> Vec<rustix::fs::inotify::ReadFlags> {
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 4096];
        let mut reader = rustix::fs::inotify::Reader::new(inotify, &mut buf);
        let mut seen = Vec::new();
        while let Ok(event) = reader.next() {
            if event.file_name().is_some_and(|n| n.to_bytes() == name.as_bytes()) {
                seen.push(event.events());
            }
        }
        seen
    }

    /// The socket shows up under its name by one rename, already 0600: at no instant could
    /// another user connect to it (made by `bind` under its name, it would have the umask's
    /// mode until a chmod).
    #[tokio::test]
    async fn the_socket_appears_under_its_name_already_private() {
        use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};
        let tmp = tempfile::Builder::new()
            .prefix("vnfp-control-bind-")
            .tempdir()
            .expect("dir");
        let dir = tmp.path();
        let path = dir.join("vnfpool.sock");
        // A stale socket of a dead daemon is replaced.
        drop(std::os::unix::net::UnixListener::bind(&path).expect("stale socket"));
        let watch = inotify::init(CreateFlags::NONBLOCK).expect("inotify");
        inotify::add_watch(
            &watch,
            dir,
            WatchFlags::CREATE | WatchFlags::ATTRIB | WatchFlags::MOVED_TO | WatchFlags::DELETE,
        )
        .expect("watch");
        let listener = bind(&path).expect("bind");
        assert_eq!(
            events_of(&watch, "vnfpool.sock"),
            [ReadFlags::MOVED_TO],
            "created, deleted or chmod-ed under its name"
        );
        let mode = std::fs::metadata(&path).expect("socket").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            std::fs::read_dir(dir).expect("dir").count(),
            1,
            "nothing left beside the socket"
        );
        // And it is the socket the listener accepts on.
        let client = tokio::net::UnixStream::connect(&path);
        let (accepted, connected) = tokio::join!(listener.accept(), client);
        accepted.expect("accepted");
        connected.expect("connected");
        tmp.close().expect("clean up");
    }

    /// What the control socket waits on for a change: the stand-in controllers here save
    /// nothing, so answers go out at once.
    fn nothing_saved(dir: &std::path::Path) -> crate::controller::work::Saved {
        let store = crate::store::Store::open(&dir.join("state")).expect("state directory");
        crate::controller::work::Saver::spawn(store).0.saved()
    }

    #[tokio::test]
    async fn a_request_reaches_the_controller_and_its_answer_the_client() {
        let tmp = tempfile::Builder::new()
            .prefix("vnfp-control-")
            .tempdir()
            .expect("dir");
        // A directory that does not exist yet: `bind` makes it.
        let path = tmp.path().join("run").join("vnfpool.sock");
        let listener = bind(&path).expect("bind");
        let mode = std::fs::metadata(&path).expect("socket").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (tx, mut rx) = mpsc::channel(1);
        let server = tokio::spawn(serve(listener, tx, views(), nothing_saved(tmp.path())));
        let controller = tokio::spawn(async move {
            let Some(Command::Drain {
                pool,
                element,
                deadline,
                reply,
            }) = rx.recv().await
            else {
                panic!("a drain command");
            };
            assert_eq!(
                (pool.as_str(), element.as_str(), deadline),
                ("web", "e2", Some(Duration::from_secs(30)))
            );
            reply.send(Ok("draining".into())).expect("client waiting");
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
        tmp.close().expect("cleanup");
    }

    #[tokio::test]
    async fn a_malformed_request_gets_an_error_not_a_hang() {
        let tmp = tempfile::Builder::new()
            .prefix("vnfp-control-bad-")
            .tempdir()
            .expect("dir");
        // A directory that does not exist yet: `bind` makes it.
        let path = tmp.path().join("run").join("vnfpool.sock");
        let listener = bind(&path).expect("bind");
        let (tx, _rx) = mpsc::channel(1);
        let server = tokio::spawn(serve(listener, tx, views(), nothing_saved(tmp.path())));
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
        tmp.close().expect("cleanup");
    }
}
