//! TCP connect probe: healthy when the three-way handshake completes.
//!
//! A frozen element (SIGSTOP) still completes handshakes in its kernel, so this probe cannot see
//! a freeze; use an HTTP or UDP request/response check for that.

use std::net::SocketAddr;

use tokio::net::TcpStream;

use super::ProbeError;

/// Connects to `addr` and closes the connection. The caller bounds the time.
///
/// # Errors
///
/// [`ProbeError::Connect`] when the connection is refused or fails.
pub async fn probe(addr: SocketAddr) -> Result<(), ProbeError> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|source| ProbeError::Connect { addr, source })?;
    // Close with a reset: at a 10 ms interval an orderly close would leave one TIME_WAIT socket
    // per probe on this host for a minute. Failing to set it only costs that, so it is ignored.
    let _ = stream.set_zero_linger();
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::{
        net::{IpAddr, Ipv4Addr},
        time::Duration,
    };

    use tokio::{net::TcpListener, time::Instant};

    use crate::{health::check, model::spec::CheckSpec};

    const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
    const TIMEOUT: Duration = Duration::from_secs(1);

    #[tokio::test]
    async fn open_port_is_healthy() {
        let listener = TcpListener::bind((LOCALHOST, 0))
            .await
            .expect("binding a listener");
        let port = listener.local_addr().expect("listener address").port();

        let outcome = check(&CheckSpec::Tcp { port }, LOCALHOST, "e1", TIMEOUT).await;

        assert!(outcome.ok, "{outcome:?}");
        assert_eq!(outcome.detail, None);
        assert!(outcome.latency < TIMEOUT);
    }

    #[tokio::test]
    async fn closed_port_fails_fast() {
        let port = {
            let listener = TcpListener::bind((LOCALHOST, 0))
                .await
                .expect("binding a listener");
            listener.local_addr().expect("listener address").port()
        };
        let start = Instant::now();

        let outcome = check(&CheckSpec::Tcp { port }, LOCALHOST, "e1", TIMEOUT).await;

        assert!(!outcome.ok);
        assert!(
            start.elapsed() < Duration::from_millis(200),
            "took {:?}",
            start.elapsed()
        );
        let detail = outcome.detail.expect("a failure has a detail");
        assert!(
            detail.starts_with(&format!("TCP connect to 127.0.0.1:{port}: ")),
            "{detail}"
        );
    }

    /// A listener whose backlog is full leaves further handshakes unanswered, which is what a
    /// black-holed element looks like.
    #[tokio::test]
    async fn unanswered_connect_times_out() {
        let timeout = Duration::from_millis(100);
        let socket = tokio::net::TcpSocket::new_v4().expect("creating a socket");
        socket.bind((LOCALHOST, 0).into()).expect("binding");
        let listener = socket.listen(0).expect("listening with a backlog of 0");
        let addr = listener.local_addr().expect("listener address");
        // Fill the backlog (never accepted) until a connect no longer completes at once.
        let mut fillers = Vec::new();
        for _ in 0..8 {
            match tokio::time::timeout(Duration::from_millis(50), tokio::net::TcpStream::connect(addr)).await
            {
                Ok(Ok(stream)) => fillers.push(stream),
                _ => break,
            }
        }
        let start = Instant::now();

        let outcome = check(&CheckSpec::Tcp { port: addr.port() }, LOCALHOST, "e1", timeout).await;

        let elapsed = start.elapsed();
        assert!(!outcome.ok, "{outcome:?}");
        assert!(
            elapsed >= timeout && elapsed < timeout + Duration::from_millis(100),
            "took {elapsed:?}"
        );
        assert_eq!(outcome.detail.as_deref(), Some("no answer within 100ms"));
    }
}
