//! Heartbeats over UDP: the receiver task that verifies them, and the sender an element runs.
//!
//! The receiver drains up to [`BATCH`] datagrams from its socket with one system call
//! (`recvmmsg`) each time it is woken, reads the clocks once, verifies the batch under one lock
//! of the shared [`Verifier`] and then reports each accepted heartbeat as a
//! [`HeartbeatEvent`]. Its buffers live in the task: no allocation per datagram.
//!
//! Liveness is recorded in the verifier itself, before any event is sent. The events are for a
//! consumer that wants to react to heartbeats as they come (an element's first one, say); one
//! that falls behind loses events, counted in [`ReceiverStats::events_dropped`], rather than
//! holding up the socket, which would make the kernel drop heartbeats and elements look silent.
//!
//! Give the receiving socket a receive buffer of a few MiB (`SO_RCVBUF`, capped by
//! `net.core.rmem_max`): the default (about 200 KiB, a few hundred heartbeats with the
//! kernel's per-datagram overhead) overflows at 100,000 heartbeats/s whenever the task waits
//! a few milliseconds for a CPU, as measured by `vnfpool-heartbeat-bench`.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::SystemTime,
};

use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg};
use tokio::{
    io::Interest,
    net::UdpSocket,
    sync::mpsc::{self, error::TrySendError},
    time::Instant,
};

use super::{Clocks, ElementId, Key, LEN, Now, Signer, Verifier, unix_ns};

/// The most datagrams verified under one lock of the verifier.
pub const BATCH: usize = 64;
/// One byte more than a heartbeat, so that a longer datagram, cut to this, is still rejected
/// as malformed.
pub const BUF: usize = LEN + 1;

/// An accepted heartbeat: the first copy of a sequence number, or a copy over another path
/// that brought that path back up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatEvent {
    pub id: ElementId,
    pub seq: u64,
    /// When its batch was read from the socket, since the receiver's epoch; also what the
    /// verifier recorded as the element's (or the path's) last heartbeat.
    pub received: Now,
    /// The path it came over, when that path had been judged silent.
    pub path_up: Option<IpAddr>,
}

/// What the receiver counts besides the verifier's [`super::Counters`].
#[derive(Debug, Default)]
pub struct ReceiverStats {
    datagrams: AtomicU64,
    events_dropped: AtomicU64,
    receive_errors: AtomicU64,
}

impl ReceiverStats {
    /// Datagrams read from the socket.
    #[must_use]
    pub fn datagrams(&self) -> u64 {
        self.datagrams.load(Ordering::Relaxed)
    }

    /// Accepted heartbeats not reported because the event channel was full.
    #[must_use]
    pub fn events_dropped(&self) -> u64 {
        self.events_dropped.load(Ordering::Relaxed)
    }

    /// Transient receive errors, skipped.
    #[must_use]
    pub fn receive_errors(&self) -> u64 {
        self.receive_errors.load(Ordering::Relaxed)
    }
}

/// The receiving end: a bound socket and the verifier it feeds.
#[derive(Debug)]
pub struct Receiver {
    socket: UdpSocket,
    verifier: Arc<Mutex<Verifier>>,
    epoch: Instant,
    stats: Arc<ReceiverStats>,
}

impl Receiver {
    /// A receiver on `socket` that records heartbeats in `verifier`, with instants measured
    /// from `epoch` (the daemon's, so that they are the model's `Now`).
    #[must_use]
    pub fn new(socket: UdpSocket, verifier: Arc<Mutex<Verifier>>, epoch: Instant) -> Self {
        Self {
            socket,
            verifier,
            epoch,
            stats: Arc::default(),
        }
    }

    #[must_use]
    pub fn stats(&self) -> Arc<ReceiverStats> {
        Arc::clone(&self.stats)
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Receives, verifies and reports heartbeats until `events` is closed (then `Ok`) or the
    /// socket fails.
    ///
    /// # Errors
    /// A receive error other than the transient ones (an ICMP error reported on the socket, an
    /// interrupted call), which are counted and skipped.
    pub async fn serve(&self, events: &mpsc::Sender<HeartbeatEvent>) -> io::Result<()> {
        let mut bufs = [[0_u8; BUF]; BATCH];
        let mut lens = [0_usize; BATCH];
        let mut from = [None; BATCH];
        let mut accepted = [HeartbeatEvent {
            id: 0,
            seq: 0,
            received: Now::ZERO,
            path_up: None,
        }; BATCH];
        loop {
            tokio::select! {
                () = events.closed() => return Ok(()),
                ready = self.socket.readable() => ready?,
            }
            let n = self.receive_batch(&mut bufs, &mut lens, &mut from)?;
            if n == 0 {
                continue;
            }
            let clocks = Clocks {
                wall: unix_ns(SystemTime::now()),
                mono: self.epoch.elapsed(),
            };
            let mut count = 0;
            {
                let mut verifier = self.verifier.lock().unwrap_or_else(PoisonError::into_inner);
                for ((buf, &len), &from) in bufs.iter().zip(&lens[..n]).zip(&from) {
                    if let Ok(a) = verifier.verify_from(&buf[..len], from, clocks)
                        && (!a.duplicate || a.path_up.is_some())
                    {
                        accepted[count] = HeartbeatEvent {
                            id: a.id,
                            seq: a.seq,
                            received: clocks.mono,
                            path_up: a.path_up,
                        };
                        count += 1;
                    }
                }
            }
            for event in &accepted[..count] {
                match events.try_send(*event) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) => {
                        self.stats.events_dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(TrySendError::Closed(_)) => return Ok(()),
                }
            }
        }
    }

    /// Reads what the socket holds, up to a full `bufs`, with one `recvmmsg`; returns how many
    /// datagrams (0 when there were none).
    fn receive_batch(
        &self,
        bufs: &mut [[u8; BUF]; BATCH],
        lens: &mut [usize; BATCH],
        from: &mut [Option<IpAddr>; BATCH],
    ) -> io::Result<usize> {
        loop {
            match self.socket.try_io(Interest::READABLE, || {
                receive_many(&self.socket, bufs, lens, from)
            }) {
                Ok(n) => {
                    self.stats.datagrams.fetch_add(n as u64, Ordering::Relaxed);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionRefused
                            | io::ErrorKind::ConnectionReset
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    self.stats.receive_errors.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// One `recvmmsg` into `bufs` without waiting; each datagram's length (cut to its buffer) in
/// `lens` and its source address in `from` (an IPv4-mapped IPv6 one as IPv4). `WouldBlock`
/// when the socket holds none. Call it within [`UdpSocket::try_io`], so that the socket's
/// readiness is cleared when it is empty.
///
/// # Errors
/// The system call's.
pub fn receive_many(
    socket: &UdpSocket,
    bufs: &mut [[u8; BUF]; BATCH],
    lens: &mut [usize; BATCH],
    from: &mut [Option<IpAddr>; BATCH],
) -> io::Result<usize> {
    use std::os::fd::AsRawFd as _;
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let mut slices = bufs.each_mut().map(|buf| [io::IoSliceMut::new(buf)]);
    let received = recvmmsg(
        socket.as_raw_fd(),
        &mut headers,
        slices.iter_mut(),
        MsgFlags::MSG_DONTWAIT,
        None,
    )
    .map_err(io::Error::from)?;
    let mut n = 0;
    for ((message, len), from) in received.zip(lens.iter_mut()).zip(from.iter_mut()) {
        *len = message.bytes;
        *from = message.address.as_ref().and_then(ip_of);
        n += 1;
    }
    Ok(n)
}

/// The IP address of a socket address (an IPv4-mapped IPv6 one as IPv4); `None` for other
/// families.
#[must_use]
pub fn ip_of(address: &SockaddrStorage) -> Option<IpAddr> {
    if let Some(v4) = address.as_sockaddr_in() {
        return Some(IpAddr::V4(v4.ip()));
    }
    let v6 = address.as_sockaddr_in6()?.ip();
    Some(v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4))
}

/// First pause before a receiver that failed is started again; it doubles with each failure
/// in a row, up to [`MAX_BACKOFF`].
pub const MIN_BACKOFF: std::time::Duration = std::time::Duration::from_millis(10);
/// Longest pause between two starts.
pub const MAX_BACKOFF: std::time::Duration = std::time::Duration::from_secs(1);
/// A run this long counts as healthy: the next failure pauses [`MIN_BACKOFF`] again.
const HEALTHY_RUN: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs a [`Receiver`] on `socket` (see [`Receiver::serve`]) until `events` is closed. A
/// receive error does not stop it for good, which would fail every self-registered element:
/// it is logged and the receiver starts again after a back-off ([`restarting`]).
///
/// # Errors
/// None in practice: every error is retried.
pub async fn serve(
    socket: UdpSocket,
    verifier: Arc<Mutex<Verifier>>,
    epoch: Instant,
    events: mpsc::Sender<HeartbeatEvent>,
) -> io::Result<()> {
    let receiver = Receiver::new(socket, verifier, epoch);
    restarting(|| receiver.serve(&events)).await;
    Ok(())
}

/// Runs `run` until it returns `Ok`, starting it again after each error with a back-off that
/// doubles from [`MIN_BACKOFF`] to [`MAX_BACKOFF`] (and starts over after a run of
/// [`HEALTHY_RUN`]). Returns how many times it failed.
pub async fn restarting<F, Fut>(mut run: F) -> u64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = io::Result<()>>,
{
    let mut backoff = MIN_BACKOFF;
    let mut failures = 0;
    loop {
        let started = tokio::time::Instant::now();
        match run().await {
            Ok(()) => return failures,
            Err(e) => {
                failures += 1;
                if started.elapsed() >= HEALTHY_RUN {
                    backoff = MIN_BACKOFF;
                }
                tracing::error!(error = %e, retry_in = ?backoff, "heartbeat receiver failed; starting it again");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// The sending end, run by a registered element: every heartbeat goes out over each of its
/// sockets, one per path.
///
/// Sequence numbers: each heartbeat carries the greater of the previous one plus one and its
/// own timestamp. They are strictly increasing, and an element that restarts with the same key
/// (without registering again) goes on above its earlier numbers as long as its clock has not
/// gone back.
#[derive(Debug)]
pub struct Sender {
    sockets: Vec<UdpSocket>,
    signer: Signer,
    seq: u64,
}

impl Sender {
    /// A sender on a socket already connected to the receiver.
    #[must_use]
    pub fn new(socket: UdpSocket, id: ElementId, key: &Key) -> Self {
        Self::over(vec![socket], id, key)
    }

    /// A sender over several paths: `sockets` already connected, each sends every heartbeat.
    #[must_use]
    pub fn over(sockets: Vec<UdpSocket>, id: ElementId, key: &Key) -> Self {
        Self {
            sockets,
            signer: Signer::new(id, key),
            seq: 0,
        }
    }

    /// A sender from a new socket on an ephemeral port, connected to `receiver`.
    pub async fn connect(receiver: SocketAddr, id: ElementId, key: &Key) -> io::Result<Self> {
        Self::connect_from(None, receiver, id, key).await
    }

    /// A sender as [`Self::connect`] makes, whose heartbeats leave from `from` (see
    /// [`path_socket`]).
    pub async fn connect_from(
        from: Option<IpAddr>,
        receiver: SocketAddr,
        id: ElementId,
        key: &Key,
    ) -> io::Result<Self> {
        Ok(Self::new(path_socket(from, None, receiver).await?, id, key))
    }

    /// The sequence number of the last heartbeat (0 before the first).
    #[must_use]
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The next heartbeat, stamped `now` (this advances the sequence number).
    pub fn next_heartbeat(&mut self, now: SystemTime) -> [u8; LEN] {
        let timestamp = unix_ns(now);
        self.seq = self.seq.saturating_add(1).max(timestamp);
        self.signer.sign(self.seq, timestamp)
    }

    /// Sends the next heartbeat, stamped `now`, over every path; returns its sequence number
    /// and what each path's send did, in the order of the sockets.
    ///
    /// A path's error: on a connected socket, an ICMP error about an earlier heartbeat (nobody
    /// listening) comes back as `ConnectionRefused`, a lost route as `NetworkUnreachable`; the
    /// next heartbeat may go through.
    pub async fn send_each(&mut self, now: SystemTime) -> (u64, Vec<io::Result<()>>) {
        let heartbeat = self.next_heartbeat(now);
        let mut results = Vec::with_capacity(self.sockets.len());
        for socket in &self.sockets {
            results.push(socket.send(&heartbeat).await.map(drop));
        }
        (self.seq, results)
    }

    /// [`Self::send_each`], when one path is enough: its sequence number once some path sent
    /// it.
    ///
    /// # Errors
    /// The first path's error when no path sent it.
    pub async fn send(&mut self, now: SystemTime) -> io::Result<u64> {
        let (seq, results) = self.send_each(now).await;
        let mut first = None;
        for result in results {
            match result {
                Ok(()) => return Ok(seq),
                Err(e) => {
                    first.get_or_insert(e);
                }
            }
        }
        Err(first.unwrap_or_else(|| io::Error::other("a sender without a path")))
    }
}

/// A UDP socket connected to `receiver` whose datagrams leave from `from` when this host has
/// that address (the daemon's data plane lets heartbeats through from the addresses elements
/// registered only; without it, or when it is not local, the route chooses), through
/// `device` when given (`SO_BINDTODEVICE`: the path stays on that interface whatever the
/// routing table prefers).
///
/// # Errors
/// Binding or connecting failed, or the device is unknown.
pub async fn path_socket(
    from: Option<IpAddr>,
    device: Option<&str>,
    receiver: SocketAddr,
) -> io::Result<UdpSocket> {
    let any: IpAddr = match receiver {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let socket = match from.filter(|ip| ip.is_ipv4() == receiver.is_ipv4()) {
        Some(ip) => match UdpSocket::bind((ip, 0)).await {
            Ok(socket) => socket,
            Err(e) if e.kind() == io::ErrorKind::AddrNotAvailable => {
                tracing::warn!(address = %ip, "not an address of this host; heartbeats leave from the address the route chooses, which the daemon may refuse");
                UdpSocket::bind((any, 0)).await?
            }
            Err(e) => return Err(e),
        },
        None => UdpSocket::bind((any, 0)).await?,
    };
    if let Some(device) = device {
        nix::sys::socket::setsockopt(
            &socket,
            nix::sys::socket::sockopt::BindToDevice,
            &std::ffi::OsString::from(device),
        )
        .map_err(|e| io::Error::new(io::Error::from(e).kind(), format!("binding to {device}: {e}")))?;
    }
    socket.connect(receiver).await?;
    Ok(socket)
}

/// Receive buffer of the heartbeat socket: room for tens of thousands of heartbeats while the
/// receiving task waits for a CPU.
const RCVBUF: usize = 4 << 20;

/// The heartbeat listener's socket, non-blocking, with a receive buffer of [`RCVBUF`] (or what
/// `net.core.rmem_max` allows).
///
/// # Errors
/// When the address cannot be bound.
pub fn bind(addr: std::net::SocketAddr) -> io::Result<std::net::UdpSocket> {
    let socket = std::net::UdpSocket::bind(addr)?;
    socket.set_nonblocking(true)?;
    if let Err(e) = rustix::net::sockopt::set_socket_recv_buffer_size(&socket, RCVBUF) {
        tracing::warn!(error = %e, "heartbeat socket keeps the default receive buffer; heartbeats may be dropped under load");
    }
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::{sync::mpsc::Receiver as Events, task::JoinHandle};

    use super::*;
    use crate::heartbeat::{Counters, DEFAULT_SKEW, Rejected, encode};

    const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn key(n: u8) -> Key {
        Key::from_bytes([n; 32])
    }

    struct Running {
        addr: SocketAddr,
        verifier: Arc<Mutex<Verifier>>,
        stats: Arc<ReceiverStats>,
        events: Events<HeartbeatEvent>,
        task: JoinHandle<io::Result<()>>,
    }

    /// A receiver on 127.0.0.1 with elements 1 and 2 (keys 1 and 2).
    async fn receiver(capacity: usize) -> Running {
        let socket = UdpSocket::bind((LOCALHOST, 0)).await.expect("bind");
        let mut verifier = Verifier::new(DEFAULT_SKEW);
        verifier.register(1, key(1), Now::ZERO);
        verifier.register(2, key(2), Now::ZERO);
        let verifier = Arc::new(Mutex::new(verifier));
        let receiver = Receiver::new(socket, Arc::clone(&verifier), Instant::now());
        let addr = receiver.local_addr().expect("address");
        let stats = receiver.stats();
        let (tx, events) = mpsc::channel(capacity);
        let task = tokio::spawn(async move { receiver.serve(&tx).await });
        Running {
            addr,
            verifier,
            stats,
            events,
            task,
        }
    }

    async fn next(events: &mut Events<HeartbeatEvent>) -> HeartbeatEvent {
        tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .expect("an event within 5 s")
            .expect("receiver running")
    }

    fn counters(running: &Running) -> Counters {
        running.verifier.lock().expect("lock").counters()
    }

    #[tokio::test]
    async fn reports_good_heartbeats_and_counts_bad_ones() {
        let mut running = receiver(16).await;
        let client = UdpSocket::bind((LOCALHOST, 0)).await.expect("bind");
        client.connect(running.addr).await.expect("connect");
        let now = unix_ns(SystemTime::now());
        let good = encode(1, 10, now, &key(1));
        let mut flipped = good;
        flipped[40] ^= 0x04;
        let mut version = encode(1, 11, now, &key(1));
        version[0] = 0;
        let datagrams: [(&[u8], Option<Rejected>); 10] = [
            (&good, None),
            (&good, Some(Rejected::OldSequence)),
            (&flipped, Some(Rejected::BadMac)),
            (&encode(2, 1, now, &key(1)), Some(Rejected::BadMac)),
            (&encode(3, 1, now, &key(1)), Some(Rejected::UnknownElement)),
            (&good[..LEN - 1], Some(Rejected::Malformed)),
            (&[0_u8; 100], Some(Rejected::Malformed)),
            (&version, Some(Rejected::BadVersion)),
            (
                &encode(2, 5, now - 10_000_000_000, &key(2)),
                Some(Rejected::OutsideWindow),
            ),
            (&encode(2, 6, now, &key(2)), None),
        ];
        for (bytes, _) in &datagrams {
            client.send(bytes).await.expect("send");
        }
        let first = next(&mut running.events).await;
        let second = next(&mut running.events).await;
        assert_eq!((first.id, first.seq), (1, 10));
        assert_eq!((second.id, second.seq), (2, 6));
        assert!(second.received >= first.received);
        let counters = counters(&running);
        assert_eq!(counters.accepted, 2);
        for kind in Rejected::ALL {
            let want = datagrams.iter().filter(|(_, k)| *k == Some(kind)).count() as u64;
            assert_eq!(counters.rejected(kind), want, "{}", kind.name());
        }
        assert_eq!(running.stats.datagrams(), datagrams.len() as u64);
        assert!(running.events.try_recv().is_err(), "no other event");
        // The receiver recorded the heartbeat for liveness.
        let liveness =
            running
                .verifier
                .lock()
                .expect("lock")
                .liveness(2, Duration::from_mins(1), second.received);
        assert_eq!(
            liveness,
            Some(crate::heartbeat::Liveness::Live {
                last: second.received
            })
        );
    }

    #[tokio::test]
    async fn the_sender_is_accepted_and_its_sequence_increases() {
        let mut running = receiver(1024).await;
        let mut sender = Sender::connect(running.addr, 2, &key(2)).await.expect("sender");
        let mut seqs = Vec::new();
        for _ in 0..3 {
            seqs.push(sender.send(SystemTime::now()).await.expect("send"));
        }
        // A clock that went back still gives increasing numbers (back by less than the skew the
        // receiver allows, so that the heartbeat is accepted too).
        let past = SystemTime::now() - DEFAULT_SKEW / 2;
        seqs.push(sender.send(past).await.expect("send"));
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
        for &seq in &seqs {
            let event = next(&mut running.events).await;
            assert_eq!((event.id, event.seq), (2, seq));
        }
        // More than a batch at once: every one is accepted.
        for _ in 0..3 * BATCH {
            sender.send(SystemTime::now()).await.expect("send");
        }
        for _ in 0..3 * BATCH {
            assert_eq!(next(&mut running.events).await.id, 2);
        }
        // A sender with the wrong key is rejected.
        let mut impostor = Sender::connect(running.addr, 1, &key(2)).await.expect("sender");
        impostor.send(SystemTime::now()).await.expect("send");
        sender.send(SystemTime::now()).await.expect("send");
        assert_eq!(next(&mut running.events).await.id, 2);
        let counters = counters(&running);
        assert_eq!(counters.accepted, 4 + 3 * BATCH as u64 + 1);
        assert_eq!(counters.bad_mac, 1);
        assert_eq!(counters.rejected_total(), 1);
    }

    #[tokio::test]
    async fn a_full_channel_drops_events_not_heartbeats_and_closing_it_stops_the_task() {
        let mut running = receiver(1).await;
        let mut sender = Sender::connect(running.addr, 1, &key(1)).await.expect("sender");
        for _ in 0..5 {
            sender.send(SystemTime::now()).await.expect("send");
        }
        let last = sender.seq();
        tokio::time::timeout(Duration::from_secs(5), async {
            while counters(&running).accepted < 5 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("all five accepted");
        assert_eq!(running.verifier.lock().expect("lock").last_seq(1), Some(last));
        assert_eq!(next(&mut running.events).await.id, 1);
        assert_eq!(running.stats.events_dropped(), 4);
        drop(running.events);
        tokio::time::timeout(Duration::from_secs(5), running.task)
            .await
            .expect("stops once the events are closed")
            .expect("task")
            .expect("no error");
    }

    #[tokio::test(start_paused = true)]
    async fn a_receiver_that_fails_starts_again_after_a_growing_back_off() {
        let runs = std::cell::Cell::new(0u32);
        let start = tokio::time::Instant::now();
        let starts = std::cell::RefCell::new(Vec::new());
        let failures = restarting(|| {
            runs.set(runs.get() + 1);
            starts.borrow_mut().push(start.elapsed());
            let n = runs.get();
            async move {
                if n <= 3 {
                    Err(io::Error::other("receive failed"))
                } else {
                    Ok(())
                }
            }
        })
        .await;
        assert_eq!(failures, 3);
        assert_eq!(
            *starts.borrow(),
            [Duration::ZERO, MIN_BACKOFF, MIN_BACKOFF * 3, MIN_BACKOFF * 7],
            "10, 20 and 40 ms between the starts"
        );
    }
}
