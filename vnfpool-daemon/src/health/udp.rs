//! UDP request/response probe: one datagram out, one datagram back.

use std::{
    io,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
};

use tokio::net::UdpSocket;

use super::ProbeError;

/// Sends `payload` to `addr` from a fresh connected socket and waits for one datagram, which must
/// equal `expect` when given. The caller bounds the time.
///
/// # Errors
///
/// [`ProbeError::PortUnreachable`] as soon as the element answers with ICMP port unreachable,
/// [`ProbeError::UnexpectedReply`] for a reply other than `expect`, [`ProbeError::Udp`] for any
/// other socket error.
pub async fn probe(addr: SocketAddr, payload: &[u8], expect: Option<&[u8]>) -> Result<(), ProbeError> {
    let io_error = |op| {
        move |source: io::Error| {
            // A connected UDP socket reports a received ICMP port unreachable as ECONNREFUSED on
            // its next call: that is a definite failure, not a reason to wait for the timeout.
            if source.kind() == io::ErrorKind::ConnectionRefused {
                ProbeError::PortUnreachable { addr }
            } else {
                ProbeError::Udp { addr, op, source }
            }
        }
    };

    let local: SocketAddr = match addr {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await.map_err(io_error("bind"))?;
    // Connected, so that only datagrams from `addr` are received and ICMP errors are reported.
    socket.connect(addr).await.map_err(io_error("connect"))?;
    socket.send(payload).await.map_err(io_error("send"))?;

    // One byte more than `expect` tells a longer reply from an equal one; without `expect` any
    // datagram will do, and the kernel drops what does not fit.
    let mut reply = vec![0_u8; expect.map_or(1, |expect| expect.len() + 1)];
    let len = socket.recv(&mut reply).await.map_err(io_error("receive"))?;
    match expect {
        Some(expect) if reply[..len] != *expect => Err(ProbeError::UnexpectedReply { addr }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::{
        net::{IpAddr, Ipv4Addr},
        time::Duration,
    };

    use tokio::{net::UdpSocket, task::JoinHandle, time::Instant};

    use crate::{health::check, model::spec::CheckSpec};

    const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
    const TIMEOUT: Duration = Duration::from_secs(1);

    /// A UDP echo server, stopped on drop.
    struct Echo {
        port: u16,
        task: JoinHandle<()>,
    }

    impl Drop for Echo {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    async fn echo() -> Echo {
        let socket = UdpSocket::bind((LOCALHOST, 0))
            .await
            .expect("binding the echo server");
        let port = socket.local_addr().expect("echo address").port();
        let task = tokio::spawn(async move {
            let mut buf = [0_u8; 2048];
            while let Ok((len, peer)) = socket.recv_from(&mut buf).await {
                let _ = socket.send_to(&buf[..len], peer).await;
            }
        });
        Echo { port, task }
    }

    fn udp(port: u16, expect: Option<&[u8]>) -> CheckSpec {
        CheckSpec::Udp {
            port,
            payload: b"ping".to_vec(),
            expect: expect.map(<[u8]>::to_vec),
        }
    }

    #[tokio::test]
    async fn expected_reply_is_healthy() {
        let server = echo().await;

        let outcome = check(&udp(server.port, Some(b"ping")), LOCALHOST, "e1", TIMEOUT).await;

        assert!(outcome.ok, "{outcome:?}");
    }

    #[tokio::test]
    async fn any_reply_is_healthy_without_expect() {
        let server = echo().await;

        let outcome = check(&udp(server.port, None), LOCALHOST, "e1", TIMEOUT).await;

        assert!(outcome.ok, "{outcome:?}");
    }

    #[tokio::test]
    async fn other_reply_fails() {
        let server = echo().await;

        for expect in [&b"pong"[..], b"pin", b"ping!"] {
            let outcome = check(&udp(server.port, Some(expect)), LOCALHOST, "e1", TIMEOUT).await;

            assert!(!outcome.ok, "expect {expect:?}: {outcome:?}");
            let detail = outcome.detail.expect("a failure has a detail");
            assert!(detail.contains("differs from the expected bytes"), "{detail}");
        }
    }

    #[tokio::test]
    async fn port_unreachable_fails_at_once() {
        let port = echo().await.port;
        let start = Instant::now();

        let outcome = check(&udp(port, None), LOCALHOST, "e1", TIMEOUT).await;

        assert!(!outcome.ok);
        assert!(
            start.elapsed() < Duration::from_millis(200),
            "took {:?}",
            start.elapsed()
        );
        assert_eq!(
            outcome.detail.as_deref(),
            Some(format!("UDP port unreachable at 127.0.0.1:{port} (ICMP)").as_str())
        );
    }

    #[tokio::test]
    async fn silent_server_times_out() {
        let timeout = Duration::from_millis(50);
        let silent = UdpSocket::bind((LOCALHOST, 0))
            .await
            .expect("binding a silent socket");
        let port = silent.local_addr().expect("address").port();
        let start = Instant::now();

        let outcome = check(&udp(port, None), LOCALHOST, "e1", timeout).await;

        let elapsed = start.elapsed();
        assert!(!outcome.ok);
        assert!(
            elapsed >= timeout && elapsed < timeout + Duration::from_millis(100),
            "took {elapsed:?}"
        );
        assert_eq!(outcome.detail.as_deref(), Some("no answer within 50ms"));
    }
}
