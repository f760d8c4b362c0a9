//! A client of the API: HTTPS with a client certificate, one request per connection, and an
//! event follower. For `vnfpool agent` and other tools, and for the tests.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{Request as HttpRequest, StatusCode, body::Incoming};
use hyper_util::rt::TokioIo;
use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject as _},
};
use tokio::net::TcpStream;
use tokio_rustls::{TlsConnector, client::TlsStream};

/// Where the API is and how to prove who we are.
#[derive(Clone)]
pub struct Client {
    addr: SocketAddr,
    config: Arc<ClientConfig>,
    /// Connect over MPTCP where the kernel offers it ([`crate::mptcp`]); on by default.
    mptcp: bool,
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub id: String,
    pub kind: String,
    pub data: String,
}

impl Client {
    /// A client of the API at `addr` whose certificate is signed by one of `server_ca_pem`,
    /// presenting `identity` (certificate chain and key, PEM) when given.
    ///
    /// # Errors
    /// When a PEM text cannot be parsed or the key does not fit.
    pub fn new(
        addr: SocketAddr,
        server_ca_pem: &str,
        identity: Option<(&str, &str)>,
    ) -> Result<Self, String> {
        let mut roots = RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(server_ca_pem.as_bytes()) {
            roots
                .add(ca.map_err(|e| format!("server CA: {e}"))?)
                .map_err(|e| format!("server CA: {e}"))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots);
        let config = match identity {
            Some((cert, key)) => {
                let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert.as_bytes())
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("client certificate: {e}"))?;
                let key =
                    PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| format!("client key: {e}"))?;
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(|e| e.to_string())?
            }
            None => builder.with_no_client_auth(),
        };
        Ok(Self {
            addr,
            config: Arc::new(config),
            mptcp: true,
        })
    }

    /// The same client, connecting over MPTCP (where the kernel offers it) or not.
    #[must_use]
    pub fn with_mptcp(self, mptcp: bool) -> Self {
        Self { mptcp, ..self }
    }

    /// A TLS connection to the API.
    ///
    /// # Errors
    /// When the connection or the handshake fails.
    pub async fn connect(&self) -> std::io::Result<TlsStream<TcpStream>> {
        let tcp = crate::mptcp::connect(self.addr, self.mptcp).await?;
        let name = ServerName::IpAddress(self.addr.ip().into());
        TlsConnector::from(Arc::clone(&self.config))
            .connect(name, tcp)
            .await
    }

    async fn send(&self, request: HttpRequest<Full<Bytes>>) -> Result<hyper::Response<Incoming>, String> {
        let tls = self.connect().await.map_err(|e| format!("TLS: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| format!("HTTP handshake: {e}"))?;
        tokio::spawn(conn);
        sender
            .send_request(request)
            .await
            .map_err(|e| format!("request: {e}"))
    }

    /// `method path` with a JSON `body`: the status and the body.
    ///
    /// # Errors
    /// When the exchange fails (connection, TLS, HTTP).
    pub async fn call(&self, method: &str, path: &str, body: &str) -> Result<(StatusCode, String), String> {
        let request = HttpRequest::builder()
            .method(method)
            .uri(path)
            .header("host", "vnfpool")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_owned())))
            .map_err(|e| e.to_string())?;
        let response = self.send(request).await?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    /// Follows `/v1/events` (from after `last` when given) and returns the events received until
    /// `done` says enough, or an error after `timeout`.
    ///
    /// # Errors
    /// When the exchange fails, the stream ends, or `timeout` passes first.
    pub async fn follow(
        &self,
        last: Option<u64>,
        timeout: Duration,
        mut done: impl FnMut(&[SseEvent]) -> bool,
    ) -> Result<Vec<SseEvent>, String> {
        let mut request = HttpRequest::builder().uri("/v1/events").header("host", "vnfpool");
        if let Some(last) = last {
            request = request.header("last-event-id", last.to_string());
        }
        let response = self
            .send(request.body(Full::new(Bytes::new())).map_err(|e| e.to_string())?)
            .await?;
        if response.status() != StatusCode::OK {
            return Err(format!("/v1/events answered {}", response.status()));
        }
        let mut body = response.into_body();
        let mut text = String::new();
        let mut events = Vec::new();
        let deadline = tokio::time::Instant::now() + timeout;
        while !done(&events) {
            let frame = tokio::time::timeout_at(deadline, body.frame())
                .await
                .map_err(|_| format!("timed out with {events:?}"))?
                .ok_or("the event stream ended")?
                .map_err(|e| e.to_string())?;
            if let Ok(data) = frame.into_data() {
                text.push_str(&String::from_utf8_lossy(&data));
            }
            while let Some(end) = text.find("\n\n") {
                let block: String = text.drain(..end + 2).collect();
                let field = |name: &str| {
                    block
                        .lines()
                        .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
                        .unwrap_or_default()
                };
                let kind = field("event:");
                if !kind.is_empty() {
                    events.push(SseEvent {
                        id: field("id:"),
                        kind,
                        data: field("data:"),
                    });
                }
            }
        }
        Ok(events)
    }
}
