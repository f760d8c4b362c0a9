//! Reading the daemon's HTTP endpoints (`/metrics`, `/live`, `/ready`) from inside the lab's
//! host namespace, where its listener is.

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use crate::netns::Netns;

/// The default metrics listener, as the daemon binds it in its namespace.
pub const METRICS: &str = "127.0.0.1:9470";

/// `GET path` on `addr` inside `ns`: the status code and the body, or why it failed.
pub fn get(ns: &Netns, addr: &str, path: &str) -> Result<(u16, String), String> {
    let addr: SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let path = path.to_owned();
    ns.run(move || get_here(addr, &path))
}

/// `GET path` on `addr` from the calling thread's namespace.
pub fn get_here(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: vnfpool\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).map_err(|e| format!("read: {e}"))?;
    let (head, body) = raw.split_once("\r\n\r\n").ok_or("no end of headers")?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status in {head:?}"))?;
    Ok((code, body.to_owned()))
}

/// Samples of an exposition: `name{labels}` → value (comments and `# EOF` skipped).
#[must_use]
pub fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// `/metrics` as samples; panics with the reason when it cannot be read.
#[must_use]
pub fn metrics(ns: &Netns) -> BTreeMap<String, f64> {
    match get(ns, METRICS, "/metrics") {
        Ok((200, body)) => samples(&body),
        other => panic!("GET /metrics: {other:?}"),
    }
}
