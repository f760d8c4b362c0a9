//! MPTCP for the API's connections (draft 5.4: transport redundancy for pool control messages).
//!
//! The API listener and the API client (the agent's) open `IPPROTO_MPTCP` sockets when asked
//! and the kernel offers them, and plain TCP sockets where it does not: a kernel built without
//! MPTCP refuses the protocol (`EPROTONOSUPPORT`), and one where `net.mptcp.enabled` is 0 in the
//! socket's network namespace refuses it too (`ENOPROTOOPT`). Each connection then settles by
//! itself: an MPTCP socket whose peer does not answer with MPTCP carries plain TCP, and an MPTCP
//! listener hands out a plain TCP socket for a client that offered none ([`of`] tells which).
//! A connection that carries MPTCP survives the loss of one path while another is up, as far as
//! the kernel's path manager has subflows on it (`ip mptcp endpoint`, docs/api.md).

use std::{
    io,
    net::SocketAddr,
    os::fd::{AsFd, OwnedFd},
};

use rustix::{
    io::Errno,
    net::{AddressFamily, SocketFlags, SocketType, ipproto, sockopt},
};

/// Backlog of the listening sockets this module makes.
const BACKLOG: i32 = 1024;

/// The transport a socket carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Mptcp,
    Tcp,
}

impl Transport {
    /// `mptcp` or `tcp`, as the log names it.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Mptcp => "mptcp",
            Self::Tcp => "tcp",
        }
    }
}

/// A stream socket for `addr`'s family: MPTCP when `mptcp` and the kernel offers it, else TCP.
fn stream_socket(addr: &SocketAddr, mptcp: bool) -> io::Result<(OwnedFd, Transport)> {
    let family = if addr.is_ipv4() {
        AddressFamily::INET
    } else {
        AddressFamily::INET6
    };
    let flags = SocketFlags::CLOEXEC | SocketFlags::NONBLOCK;
    if mptcp {
        match rustix::net::socket_with(family, SocketType::STREAM, flags, Some(ipproto::MPTCP)) {
            Ok(fd) => return Ok((fd, Transport::Mptcp)),
            Err(e) if unavailable(e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let fd = rustix::net::socket_with(family, SocketType::STREAM, flags, Some(ipproto::TCP))?;
    Ok((fd, Transport::Tcp))
}

/// What a kernel without MPTCP, or with it turned off, answers to `socket(…, IPPROTO_MPTCP)`.
fn unavailable(e: Errno) -> bool {
    matches!(e, Errno::PROTONOSUPPORT | Errno::NOPROTOOPT | Errno::INVAL)
}

/// A listener on `addr` (address reuse on, as tokio's `bind`), and the transport it offers.
///
/// # Errors
/// When the socket cannot be made, bound or put to listen.
pub fn listen(addr: SocketAddr, mptcp: bool) -> io::Result<(tokio::net::TcpListener, Transport)> {
    let (fd, transport) = stream_socket(&addr, mptcp)?;
    sockopt::set_socket_reuseaddr(&fd, true)?;
    rustix::net::bind(&fd, &addr)?;
    rustix::net::listen(&fd, BACKLOG)?;
    let listener = tokio::net::TcpListener::from_std(std::net::TcpListener::from(fd))?;
    Ok((listener, transport))
}

/// A connection to `addr`: MPTCP when `mptcp` and the kernel offers it (the peer may still
/// answer with plain TCP), else TCP.
///
/// # Errors
/// When the socket cannot be made or the connection fails.
pub async fn connect(addr: SocketAddr, mptcp: bool) -> io::Result<tokio::net::TcpStream> {
    let (fd, _) = stream_socket(&addr, mptcp)?;
    tokio::net::TcpSocket::from_std_stream(std::net::TcpStream::from(fd))
        .connect(addr)
        .await
}

/// The transport of a connection an MPTCP or TCP listener accepted.
#[must_use]
pub fn of(accepted: &impl AsFd) -> Transport {
    match sockopt::socket_protocol(accepted) {
        Ok(Some(p)) if p == ipproto::MPTCP => Transport::Mptcp,
        _ => Transport::Tcp,
    }
}
