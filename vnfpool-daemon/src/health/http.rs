//! HTTP probe: `GET path` over a fresh HTTP/1.1 connection answers the expected status.

use std::{net::SocketAddr, pin::pin};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::{
    Request,
    client::conn::http1,
    header::{CONNECTION, HOST, USER_AGENT},
};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::ProbeError;

/// Sends `GET path` to `addr` and checks the status; the body is read to its end and ignored.
/// The caller bounds the time.
///
/// # Errors
///
/// [`ProbeError::Connect`], [`ProbeError::Http`] for protocol or I/O failures,
/// [`ProbeError::HttpRequest`] for a path that is not a valid request target, and
/// [`ProbeError::Status`] for any other status than `expect_status`.
pub async fn probe(addr: SocketAddr, path: &str, expect_status: u16) -> Result<(), ProbeError> {
    let http_error = |stage| move |source| ProbeError::Http { addr, stage, source };

    let request = Request::get(path)
        // `SocketAddr` formats as `host:port`, with brackets for IPv6, as Host requires.
        .header(HOST, addr.to_string())
        .header(USER_AGENT, concat!("vnfpool-health/", env!("CARGO_PKG_VERSION")))
        // The connection serves one request; letting the server close first also leaves the
        // TIME_WAIT state on its side rather than on this host.
        .header(CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|source| ProbeError::HttpRequest {
            path: path.to_owned(),
            source,
        })?;

    let stream = TcpStream::connect(addr)
        .await
        .map_err(|source| ProbeError::Connect { addr, source })?;
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http_error("handshake"))?;

    let mut exchange = pin!(async move {
        let response = sender
            .send_request(request)
            .await
            .map_err(http_error("request"))?;
        let got = response.status().as_u16();
        if got != expect_status {
            return Err(ProbeError::Status {
                expected: expect_status,
                got,
            });
        }
        let mut body = response.into_body();
        while let Some(frame) = body.frame().await {
            frame.map_err(http_error("body"))?;
        }
        Ok(())
    });

    // The connection future does the I/O; drive it here rather than in a spawned task so that
    // nothing outlives the probe. It may finish before the exchange has read the buffered end
    // of the body, so the exchange keeps being awaited after that.
    let mut connection = pin!(connection);
    let mut connection_done = false;
    loop {
        tokio::select! {
            result = &mut exchange => return result,
            result = &mut connection, if !connection_done => {
                result.map_err(http_error("connection"))?;
                connection_done = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        net::{IpAddr, Ipv4Addr},
        time::Duration,
    };

    use tokio::{
        io::{AsyncReadExt as _, AsyncWriteExt as _},
        net::TcpListener,
        sync::mpsc,
        task::JoinHandle,
        time::Instant,
    };

    use crate::{health::check, model::spec::CheckSpec};

    const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
    const TIMEOUT: Duration = Duration::from_secs(2);

    /// A minimal HTTP/1.1 responder: reads a request head, answers `status` (or nothing when
    /// `None`) and reports each request head it read.
    struct Responder {
        port: u16,
        heads: mpsc::UnboundedReceiver<String>,
        task: JoinHandle<()>,
    }

    impl Drop for Responder {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    async fn responder(status: Option<u16>) -> Responder {
        let listener = TcpListener::bind((LOCALHOST, 0))
            .await
            .expect("binding the HTTP responder");
        let port = listener.local_addr().expect("responder address").port();
        let (heads_tx, heads) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let heads_tx = heads_tx.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0_u8; 1024];
                    while !head.ends_with(b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = heads_tx.send(String::from_utf8_lossy(&head).into_owned());
                    let Some(status) = status else {
                        // Hold the connection open without answering.
                        let _ = stream.read(&mut buf).await;
                        return;
                    };
                    let response =
                        format!("HTTP/1.1 {status} X\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello");
                    let _ = stream.write_all(response.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        Responder { port, heads, task }
    }

    fn http(port: u16, expect_status: u16) -> CheckSpec {
        CheckSpec::Http {
            port,
            path: "/healthz?deep=1".to_owned(),
            expect_status,
        }
    }

    #[tokio::test]
    async fn expected_status_is_healthy_and_request_is_well_formed() {
        let mut server = responder(Some(200)).await;

        let outcome = check(&http(server.port, 200), LOCALHOST, "e1", TIMEOUT).await;

        assert!(outcome.ok, "{outcome:?}");
        let head = server.heads.recv().await.expect("the responder saw the request");
        let head = head.to_ascii_lowercase();
        assert!(head.starts_with("get /healthz?deep=1 http/1.1\r\n"), "{head}");
        assert!(
            head.contains(&format!("\r\nhost: 127.0.0.1:{}\r\n", server.port)),
            "{head}"
        );
    }

    #[tokio::test]
    async fn other_status_fails() {
        let server = responder(Some(503)).await;

        let outcome = check(&http(server.port, 200), LOCALHOST, "e1", TIMEOUT).await;

        assert!(!outcome.ok);
        assert_eq!(outcome.detail.as_deref(), Some("HTTP status 503, expected 200"));
    }

    #[tokio::test]
    async fn status_other_than_200_can_be_expected() {
        let server = responder(Some(503)).await;

        let outcome = check(&http(server.port, 503), LOCALHOST, "e1", TIMEOUT).await;

        assert!(outcome.ok, "{outcome:?}");
    }

    #[tokio::test]
    async fn silent_server_times_out() {
        let timeout = Duration::from_millis(100);
        let server = responder(None).await;
        let start = Instant::now();

        let outcome = check(&http(server.port, 200), LOCALHOST, "e1", timeout).await;

        let elapsed = start.elapsed();
        assert!(!outcome.ok);
        assert!(
            elapsed >= timeout && elapsed < timeout + Duration::from_millis(100),
            "took {elapsed:?}"
        );
        assert_eq!(outcome.detail.as_deref(), Some("no answer within 100ms"));
    }

    #[tokio::test]
    async fn closed_port_fails_fast() {
        // Bound but not listening: the port stays this test's (a port closed by dropping its
        // listener may be bound again by a test running beside it), and a connect is refused.
        let closed = tokio::net::TcpSocket::new_v4().expect("socket");
        closed.bind((LOCALHOST, 0).into()).expect("binding");
        let port = closed.local_addr().expect("address").port();
        let start = Instant::now();

        let outcome = check(&http(port, 200), LOCALHOST, "e1", TIMEOUT).await;

        assert!(!outcome.ok);
        assert!(
            start.elapsed() < Duration::from_millis(200),
            "took {:?}",
            start.elapsed()
        );
        let detail = outcome.detail.expect("a failure has a detail");
        assert!(detail.starts_with("TCP connect to "), "{detail}");
    }

    #[tokio::test]
    async fn garbage_answer_fails() {
        let listener = TcpListener::bind((LOCALHOST, 0)).await.expect("binding");
        let port = listener.local_addr().expect("address").port();
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accepting");
            let _ = stream.write_all(b"SSH-2.0-not-http\r\n").await;
            let _ = stream.shutdown().await;
        });

        let outcome = check(&http(port, 200), LOCALHOST, "e1", TIMEOUT).await;

        server.await.expect("the server task");
        assert!(!outcome.ok);
        let detail = outcome.detail.expect("a failure has a detail");
        assert!(detail.starts_with("HTTP "), "{detail}");
    }

    #[tokio::test]
    async fn invalid_path_fails_without_connecting() {
        let spec = CheckSpec::Http {
            port: 1,
            path: "not a path".to_owned(),
            expect_status: 200,
        };

        let outcome = check(&spec, LOCALHOST, "e1", TIMEOUT).await;

        assert!(!outcome.ok);
        let detail = outcome.detail.expect("a failure has a detail");
        assert!(
            detail.starts_with("building the HTTP request for path \"not a path\""),
            "{detail}"
        );
    }
}
