//! Flow sync between cluster nodes (issue #15): every flow entry the program records is sent,
//! batched and authenticated, to the peer nodes, which write it into their own flow tables, so
//! that flows the table pinned keep their element when ECMP moves them to another node.
//!
//! - [`wire`] (pure): the datagram, its HMAC-SHA256 tag under the cluster key.
//! - [`replay`] (pure): per-sender epoch and sliding window of sequence numbers.
//! - [`Verifier`] (pure): both, with each rejection named ([`Rejected`]).
//! - [`FlowSync::start`] (I/O): one UDP socket, a sender task and a receiver task.
//!
//! The sender reads the program's flow events ([`EventSource`], e.g.
//! [`crate::dataplane::FlowEvents`]), fills a datagram and sends it to every peer when it is
//! full or [`FlowSyncConfig::flush_after`] after its first record. It also walks the table
//! once per [`FlowSyncConfig::refresh_period`] and re-sends the entries used lately, so that
//! peers keep long-lived flows (a peer stamps an entry as old as the sender says it is, so a
//! refresh never makes a flow look more recent than it is). When an address joins the peer
//! list it asks that peer for a full dump, which the peer streams from its table, paced.
//!
//! The receiver verifies each datagram (tag, then the sender's replay window; nothing of a
//! rejected datagram is used), writes the records into the flow table
//! ([`crate::dataplane::FlowTable::insert`]), counts and, at most once a second, logs what
//! it rejected.
//!
//! Entries read back from the table (refreshes, dumps) carry no pool
//! (`vnfpool_common::flow::NO_POOL`) and only the hash bits that place them; nodes of one
//! cluster should use one flow-table size (a larger table than the sender's refuses them).

pub mod replay;
pub mod wire;

use std::{
    collections::HashSet,
    future::Future,
    io,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use tokio::{
    net::UdpSocket,
    sync::{mpsc, watch},
    task::{JoinHandle, JoinSet},
    time::Instant,
};
use vnfpool_common::flow::FlowEvent;

use self::{
    replay::{Replay, Windows},
    wire::{Header, Key, Kind, MAX_DATAGRAM, MAX_RECORDS, Malformed},
};
use crate::{
    dataplane::{FlowEvents, FlowTable},
    heartbeat::unix_ns,
};

/// What a node needs to take part in flow sync. Its `Debug` output never shows the key.
#[derive(Clone)]
pub struct FlowSyncConfig {
    /// Address of the UDP socket that receives peers' datagrams and sends this node's.
    pub listen: SocketAddr,
    /// The cluster key: HMAC-SHA256 key of every datagram (32 random bytes).
    pub key: Vec<u8>,
    /// This node's id, unique in the cluster.
    pub node: u64,
    /// Longest wait before a datagram that is not full is sent.
    pub flush_after: Duration,
    /// Time to walk the whole table re-sending the entries used lately: below the
    /// `flow::RECENT` window (4.1 to 8.2 s at HZ=250), so that peers see a long-lived flow as
    /// recent as the sender does.
    pub refresh_period: Duration,
    /// Datagrams a full dump sends per millisecond at most.
    pub dump_pace: u32,
}

impl std::fmt::Debug for FlowSyncConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowSyncConfig")
            .field("listen", &self.listen)
            .field("key", &format_args!("<{} bytes>", self.key.len()))
            .field("node", &self.node)
            .field("flush_after", &self.flush_after)
            .field("refresh_period", &self.refresh_period)
            .field("dump_pace", &self.dump_pace)
            .finish()
    }
}

/// Shortest cluster key [`FlowSync::start`] accepts.
pub const MIN_KEY_LEN: usize = 16;

impl FlowSyncConfig {
    /// A configuration with the default timings.
    #[must_use]
    pub fn new(listen: SocketAddr, key: Vec<u8>, node: u64) -> Self {
        Self {
            listen,
            key,
            node,
            flush_after: Duration::from_millis(1),
            refresh_period: Duration::from_secs(4),
            dump_pace: 32,
        }
    }
}

// === Rejected, Stats ===

/// Why a datagram was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// Its length does not match a header, its count and a tag.
    Length,
    /// Another magic or version.
    Version,
    /// An unknown kind.
    Kind,
    /// The tag does not verify under the cluster key (tampered with, or another key).
    Tag,
    /// Sent by this node (its own address in the peer list).
    Own,
    /// From an earlier run of its sender.
    OldEpoch,
    /// Accepted before: a replay.
    Duplicate,
    /// Below its sender's window.
    TooOld,
}

impl Rejected {
    /// Every reason, by index.
    pub const ALL: [Rejected; 8] = [
        Rejected::Length,
        Rejected::Version,
        Rejected::Kind,
        Rejected::Tag,
        Rejected::Own,
        Rejected::OldEpoch,
        Rejected::Duplicate,
        Rejected::TooOld,
    ];

    /// Stable name for metrics and logs.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Rejected::Length => "length",
            Rejected::Version => "version",
            Rejected::Kind => "kind",
            Rejected::Tag => "tag",
            Rejected::Own => "own",
            Rejected::OldEpoch => "old_epoch",
            Rejected::Duplicate => "duplicate",
            Rejected::TooOld => "too_old",
        }
    }
}

impl From<Malformed> for Rejected {
    fn from(m: Malformed) -> Self {
        match m {
            Malformed::Length => Rejected::Length,
            Malformed::Version => Rejected::Version,
            Malformed::Kind => Rejected::Kind,
            Malformed::Tag => Rejected::Tag,
        }
    }
}

impl From<Replay> for Rejected {
    fn from(r: Replay) -> Self {
        match r {
            Replay::OldEpoch => Rejected::OldEpoch,
            Replay::Duplicate => Rejected::Duplicate,
            Replay::TooOld => Rejected::TooOld,
        }
    }
}

/// Counters of one node's flow sync, updated by its tasks, read by anyone.
#[derive(Debug, Default)]
pub struct Stats {
    events: AtomicU64,
    datagrams_sent: AtomicU64,
    records_sent: AtomicU64,
    send_errors: AtomicU64,
    datagrams_received: AtomicU64,
    records_received: AtomicU64,
    records_stored: AtomicU64,
    records_refused: AtomicU64,
    insert_errors: AtomicU64,
    rejected: [AtomicU64; Rejected::ALL.len()],
    dumps_requested: AtomicU64,
    dumps_served: AtomicU64,
    lag_last_ns: AtomicU64,
    lag_max_ns: AtomicU64,
}

/// [`Stats`] as read at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StatsSnapshot {
    /// Flow events read from the program.
    pub events: u64,
    /// Datagrams sent (one per peer).
    pub datagrams_sent: u64,
    /// Records sent (one per peer).
    pub records_sent: u64,
    /// Sends that failed.
    pub send_errors: u64,
    /// Datagrams accepted.
    pub datagrams_received: u64,
    /// Records in accepted datagrams.
    pub records_received: u64,
    /// Records written into the flow table (or refreshed there).
    pub records_stored: u64,
    /// Records the table refused (indices out of range, unplaceable).
    pub records_refused: u64,
    /// Batches the table could not take at all.
    pub insert_errors: u64,
    /// Datagrams rejected, by [`Rejected`] index.
    pub rejected: [u64; Rejected::ALL.len()],
    /// Full dumps this node asked for.
    pub dumps_requested: u64,
    /// Full dumps this node streamed to a peer.
    pub dumps_served: u64,
    /// Receive time minus send time of the last accepted datagram (the two nodes' wall clocks:
    /// meaningful as far as they agree).
    pub lag_last_ns: u64,
    /// The largest such lag seen.
    pub lag_max_ns: u64,
}

impl StatsSnapshot {
    /// Datagrams rejected for `reason`.
    #[must_use]
    pub fn rejected(&self, reason: Rejected) -> u64 {
        self.rejected[reason as usize]
    }
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl Stats {
    /// The counters now.
    #[must_use]
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            events: get(&self.events),
            datagrams_sent: get(&self.datagrams_sent),
            records_sent: get(&self.records_sent),
            send_errors: get(&self.send_errors),
            datagrams_received: get(&self.datagrams_received),
            records_received: get(&self.records_received),
            records_stored: get(&self.records_stored),
            records_refused: get(&self.records_refused),
            insert_errors: get(&self.insert_errors),
            rejected: std::array::from_fn(|i| get(&self.rejected[i])),
            dumps_requested: get(&self.dumps_requested),
            dumps_served: get(&self.dumps_served),
            lag_last_ns: get(&self.lag_last_ns),
            lag_max_ns: get(&self.lag_max_ns),
        }
    }
}

// === Verifier, Signer ===

/// Checks datagrams: shape and tag, the sender (not this node), then its replay window.
#[derive(Debug)]
pub struct Verifier {
    key: Key,
    node: u64,
    windows: Windows,
}

impl Verifier {
    #[must_use]
    pub fn new(key: &[u8], node: u64) -> Self {
        Self {
            key: Key::new(key),
            node,
            windows: Windows::new(),
        }
    }

    /// The header of `bytes`, its records in `records`, when it is authentic and new.
    pub fn check(&mut self, bytes: &[u8], records: &mut Vec<FlowEvent>) -> Result<Header, Rejected> {
        let header = wire::decode(&self.key, bytes, records)?;
        let fresh = if header.node == self.node {
            Err(Rejected::Own)
        } else {
            self.windows
                .accept(header.node, header.epoch, header.seq)
                .map_err(Rejected::from)
        };
        if fresh.is_err() {
            records.clear();
        }
        fresh.map(|()| header)
    }
}

/// Signs this node's datagrams, numbering them in one sequence per run.
#[derive(Debug)]
pub struct Signer {
    key: Key,
    node: u64,
    epoch: u64,
    seq: AtomicU64,
}

impl Signer {
    /// A signer for this run of `node`, whose epoch is `epoch` (the wall clock at start, in ns).
    #[must_use]
    pub fn new(key: &[u8], node: u64, epoch: u64) -> Self {
        Self {
            key: Key::new(key),
            node,
            epoch,
            seq: AtomicU64::new(0),
        }
    }

    /// The next datagram, into `out`.
    pub fn sign(&self, kind: Kind, records: &[FlowEvent], sent_ns: u64, out: &mut Vec<u8>) {
        let header = Header {
            kind,
            node: self.node,
            epoch: self.epoch,
            seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
            sent_ns,
        };
        wire::encode(&self.key, &header, records, out);
    }
}

// === EventSource ===

/// Where the sender gets new flow entries from.
pub trait EventSource: Send + 'static {
    /// Waits for entries and appends up to `max` of them to `out`; how many, 0 when the source
    /// has ended. Cancel-safe: dropping the future loses no entry.
    fn read<'a>(
        &'a mut self,
        out: &'a mut Vec<FlowEvent>,
        max: usize,
    ) -> impl Future<Output = io::Result<usize>> + Send + 'a;
}

impl EventSource for FlowEvents {
    fn read<'a>(
        &'a mut self,
        out: &'a mut Vec<FlowEvent>,
        max: usize,
    ) -> impl Future<Output = io::Result<usize>> + Send + 'a {
        FlowEvents::read(self, out, max)
    }
}

/// Entries handed over in memory (tests, or a source other than the program).
impl EventSource for mpsc::Receiver<FlowEvent> {
    async fn read(&mut self, out: &mut Vec<FlowEvent>, max: usize) -> io::Result<usize> {
        Ok(self.recv_many(out, max).await)
    }
}

// === FlowSync ===

/// What the tasks share.
struct Shared {
    socket: UdpSocket,
    signer: Signer,
    table: Arc<dyn FlowTable>,
    stats: Arc<Stats>,
    cfg: FlowSyncConfig,
}

impl Shared {
    /// Sends `records` in one datagram of `kind` to each of `peers`.
    async fn send(&self, kind: Kind, records: &[FlowEvent], peers: &[SocketAddr], buf: &mut Vec<u8>) {
        if peers.is_empty() {
            return;
        }
        self.signer.sign(kind, records, unix_ns(SystemTime::now()), buf);
        for peer in peers {
            match self.socket.send_to(buf, peer).await {
                Ok(_) => {
                    add(&self.stats.datagrams_sent, 1);
                    add(&self.stats.records_sent, records.len() as u64);
                }
                Err(error) => {
                    if self.stats.send_errors.fetch_add(1, Ordering::Relaxed) == 0 {
                        tracing::warn!(%peer, %error, "flow sync: send failed (logged once)");
                    }
                }
            }
        }
    }

    /// Sends `records` to `peers` in as many full datagrams as it takes.
    async fn send_all(&self, records: &[FlowEvent], peers: &[SocketAddr], buf: &mut Vec<u8>) {
        for chunk in records.chunks(MAX_RECORDS) {
            self.send(Kind::Records, chunk, peers, buf).await;
        }
    }
}

/// A running flow sync: its socket and two tasks, stopped when this is dropped.
pub struct FlowSync {
    local: SocketAddr,
    stats: Arc<Stats>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for FlowSync {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// How often the sender walks a slice of the table for refreshes.
const REFRESH_TICK: Duration = Duration::from_millis(100);

impl FlowSync {
    /// Binds `cfg.listen` and starts the sender (reading `events`, sending to `peers`) and the
    /// receiver (writing into `table`). Asks every peer in the list, and every address that
    /// joins it later, for a full dump.
    pub async fn start<S: EventSource>(
        cfg: FlowSyncConfig,
        events: S,
        table: Arc<dyn FlowTable>,
        peers: watch::Receiver<Vec<SocketAddr>>,
    ) -> io::Result<Self> {
        if cfg.key.len() < MIN_KEY_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("flow sync: a cluster key of at least {MIN_KEY_LEN} bytes is needed"),
            ));
        }
        let socket = UdpSocket::bind(cfg.listen).await?;
        let local = socket.local_addr()?;
        let stats = Arc::new(Stats::default());
        let shared = Arc::new(Shared {
            socket,
            signer: Signer::new(&cfg.key, cfg.node, unix_ns(SystemTime::now())),
            table,
            stats: Arc::clone(&stats),
            cfg,
        });
        let verifier = Verifier::new(&shared.cfg.key, shared.cfg.node);
        let tasks = vec![
            tokio::spawn(send_loop(Arc::clone(&shared), events, peers)),
            tokio::spawn(receive_loop(shared, verifier)),
        ];
        Ok(Self { local, stats, tasks })
    }

    /// The address the socket is bound to (the port chosen when `listen` had port 0).
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The counters, for metrics and status.
    #[must_use]
    pub fn stats(&self) -> Arc<Stats> {
        Arc::clone(&self.stats)
    }
}

async fn send_loop<S: EventSource>(
    shared: Arc<Shared>,
    mut events: S,
    mut peers: watch::Receiver<Vec<SocketAddr>>,
) {
    let mut buf = Vec::with_capacity(MAX_DATAGRAM);
    let mut batch: Vec<FlowEvent> = Vec::with_capacity(MAX_RECORDS);
    let mut incoming: Vec<FlowEvent> = Vec::with_capacity(4 * MAX_RECORDS);
    let mut scanned: Vec<FlowEvent> = Vec::new();
    let mut deadline: Option<Instant> = None;
    let mut events_open = true;
    let mut peers_open = true;
    let mut known: HashSet<SocketAddr> = HashSet::new();
    let mut current: Vec<SocketAddr> = peers.borrow_and_update().clone();
    request_dumps(&shared, &current, &mut known, &mut buf).await;

    let buckets = shared.table.buckets();
    let ticks = (shared.cfg.refresh_period.as_millis() / REFRESH_TICK.as_millis()).max(1);
    let per_tick = u32::try_from(u128::from(buckets).div_ceil(ticks)).unwrap_or(buckets);
    let mut refresh = tokio::time::interval(REFRESH_TICK);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut cursor = 0u32;

    loop {
        tokio::select! {
            biased;
            // Timers first: under a steady stream of events, the ring is never empty and a
            // branch after it would never run.
            () = sleep_until(deadline), if deadline.is_some() => {
                shared.send(Kind::Records, &batch, &current, &mut buf).await;
                batch.clear();
                deadline = None;
            }
            changed = peers.changed(), if peers_open => {
                if changed.is_err() {
                    peers_open = false;
                    continue;
                }
                current.clone_from(&peers.borrow_and_update());
                request_dumps(&shared, &current, &mut known, &mut buf).await;
            }
            _ = refresh.tick() => {
                scanned.clear();
                match shared.table.scan(cursor, per_tick, true, &mut scanned) {
                    Ok(next) => cursor = next,
                    Err(error) => {
                        tracing::warn!(%error, "flow sync: reading the flow table failed");
                        cursor = 0;
                    }
                }
                shared.send_all(&scanned, &current, &mut buf).await;
            }
            read = events.read(&mut incoming, 4 * MAX_RECORDS), if events_open => {
                match read {
                    Ok(0) => events_open = false,
                    Ok(n) => add(&shared.stats.events, n as u64),
                    Err(error) => {
                        tracing::error!(%error, "flow sync: reading flow events failed; no more are sent");
                        events_open = false;
                    }
                }
                for e in incoming.drain(..) {
                    batch.push(e);
                    if batch.len() == MAX_RECORDS {
                        shared.send(Kind::Records, &batch, &current, &mut buf).await;
                        batch.clear();
                    }
                }
                deadline = match (batch.is_empty(), deadline) {
                    (true, _) => None,
                    (false, None) => Some(Instant::now() + shared.cfg.flush_after),
                    (false, d) => d,
                };
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Asks each address of `peers` not in `known` for a full dump; `known` becomes `peers`.
async fn request_dumps(
    shared: &Shared,
    peers: &[SocketAddr],
    known: &mut HashSet<SocketAddr>,
    buf: &mut Vec<u8>,
) {
    let joined: Vec<SocketAddr> = peers.iter().filter(|p| !known.contains(p)).copied().collect();
    if !joined.is_empty() {
        shared.send(Kind::DumpRequest, &[], &joined, buf).await;
        add(&shared.stats.dumps_requested, joined.len() as u64);
    }
    *known = peers.iter().copied().collect();
}

/// Once a second at most.
struct LogLimit {
    last: Option<Instant>,
}

impl LogLimit {
    fn allow(&mut self) -> bool {
        let now = Instant::now();
        if self.last.is_some_and(|t| now < t + Duration::from_secs(1)) {
            return false;
        }
        self.last = Some(now);
        true
    }
}

async fn receive_loop(shared: Arc<Shared>, mut verifier: Verifier) {
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    let mut records = Vec::with_capacity(MAX_RECORDS);
    let mut dumps: JoinSet<SocketAddr> = JoinSet::new();
    let mut dumping: HashSet<SocketAddr> = HashSet::new();
    let mut log = LogLimit { last: None };
    loop {
        let (n, from) = tokio::select! {
            received = shared.socket.recv_from(&mut buf) => match received {
                Ok(r) => r,
                Err(error) => {
                    // ICMP errors of earlier sends surface here (ECONNREFUSED): not fatal.
                    if log.allow() {
                        tracing::debug!(%error, "flow sync: receive error");
                    }
                    continue;
                }
            },
            Some(done) = dumps.join_next() => {
                if let Ok(peer) = done {
                    dumping.remove(&peer);
                }
                continue;
            }
        };
        let header = match verifier.check(&buf[..n], &mut records) {
            Ok(h) => h,
            Err(reason) => {
                add(&shared.stats.rejected[reason as usize], 1);
                if log.allow() {
                    let total: u64 = shared.stats.snapshot().rejected.iter().sum();
                    tracing::warn!(%from, reason = reason.name(), total, "flow sync: datagram rejected");
                }
                continue;
            }
        };
        let stats = &shared.stats;
        add(&stats.datagrams_received, 1);
        let lag = unix_ns(SystemTime::now()).saturating_sub(header.sent_ns);
        stats.lag_last_ns.store(lag, Ordering::Relaxed);
        stats.lag_max_ns.fetch_max(lag, Ordering::Relaxed);
        match header.kind {
            Kind::Records => {
                add(&stats.records_received, records.len() as u64);
                match shared.table.insert(&records) {
                    Ok(done) => {
                        add(&stats.records_stored, done.stored());
                        add(&stats.records_refused, done.refused());
                    }
                    Err(error) => {
                        add(&stats.insert_errors, 1);
                        if log.allow() {
                            tracing::warn!(%error, "flow sync: writing peers' flows failed");
                        }
                    }
                }
            }
            Kind::DumpRequest => {
                // One dump per peer at a time; a repeated request while one runs is served by it.
                if dumping.insert(from) {
                    let peer = from;
                    let shared = Arc::clone(&shared);
                    dumps.spawn(async move {
                        dump(&shared, peer).await;
                        peer
                    });
                }
            }
        }
    }
}

/// Streams the whole table to `peer`, at most `dump_pace` datagrams per millisecond.
async fn dump(shared: &Shared, peer: SocketAddr) {
    const SLICE: u32 = 256;
    let mut buf = Vec::with_capacity(MAX_DATAGRAM);
    let mut entries = Vec::new();
    let mut cursor = 0;
    let mut sent_this_ms = 0u32;
    let mut window = tokio::time::interval(Duration::from_millis(1));
    loop {
        entries.clear();
        match shared.table.scan(cursor, SLICE, false, &mut entries) {
            Ok(next) => cursor = next,
            Err(error) => {
                tracing::warn!(%peer, %error, "flow sync: dump stopped, the flow table is unreadable");
                return;
            }
        }
        for chunk in entries.chunks(MAX_RECORDS) {
            if sent_this_ms >= shared.cfg.dump_pace {
                window.tick().await;
                sent_this_ms = 0;
            }
            shared.send(Kind::Records, chunk, &[peer], &mut buf).await;
            sent_this_ms += 1;
        }
        if cursor == 0 {
            break;
        }
        tokio::task::yield_now().await;
    }
    add(&shared.stats.dumps_served, 1);
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tokio::sync::Notify;

    use super::*;
    use crate::dataplane::{Inserted, Result as DpResult};

    const KEY: [u8; 32] = [7; 32];

    fn record(n: u64) -> FlowEvent {
        FlowEvent {
            hash: n.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            pool: (n % 4) as u16,
            element: (n % 1000) as u16,
            exact_bits: 64,
            age: 0,
            _pad: [0; 2],
        }
    }

    fn datagram(signer: &Signer, records: &[FlowEvent]) -> Vec<u8> {
        let mut out = Vec::new();
        signer.sign(Kind::Records, records, 1, &mut out);
        out
    }

    #[test]
    fn a_good_datagram_is_accepted_once() {
        let signer = Signer::new(&KEY, 1, 100);
        let mut v = Verifier::new(&KEY, 2);
        let d = datagram(&signer, &[record(1), record(2)]);
        let mut records = Vec::new();
        let h = v.check(&d, &mut records).expect("accepted");
        assert_eq!((h.node, h.epoch, h.seq), (1, 100, 1));
        assert_eq!(records, [record(1), record(2)]);
        assert_eq!(v.check(&d, &mut records), Err(Rejected::Duplicate), "a replay");
        assert!(records.is_empty(), "nothing of a replay is used");
    }

    #[test]
    fn tampered_or_foreign_datagrams_are_rejected() {
        let signer = Signer::new(&KEY, 1, 100);
        let mut v = Verifier::new(&KEY, 2);
        let mut d = datagram(&signer, &[record(1)]);
        d[45] ^= 0x10;
        assert_eq!(v.check(&d, &mut Vec::new()), Err(Rejected::Tag), "a flipped bit");
        let other = Signer::new(&[8; 32], 1, 100);
        assert_eq!(
            v.check(&datagram(&other, &[record(1)]), &mut Vec::new()),
            Err(Rejected::Tag),
            "another key"
        );
        let own = Signer::new(&KEY, 2, 100);
        assert_eq!(
            v.check(&datagram(&own, &[]), &mut Vec::new()),
            Err(Rejected::Own),
            "this node's own"
        );
        // None of the rejected datagrams moved the window: the sender's first is still new.
        assert!(v.check(&datagram(&signer, &[]), &mut Vec::new()).is_ok());
    }

    #[test]
    fn reordered_datagrams_pass_and_an_old_epoch_does_not() {
        let before = Signer::new(&KEY, 1, 100);
        let stale = datagram(&before, &[record(1)]);
        let signer = Signer::new(&KEY, 1, 200);
        let d: Vec<Vec<u8>> = (0..5).map(|_| datagram(&signer, &[])).collect();
        let mut v = Verifier::new(&KEY, 2);
        for i in [3, 0, 4, 2, 1] {
            assert!(
                v.check(&d[i], &mut Vec::new()).is_ok(),
                "datagram {i} out of order"
            );
        }
        assert_eq!(v.check(&d[2], &mut Vec::new()), Err(Rejected::Duplicate));
        assert_eq!(
            v.check(&stale, &mut Vec::new()),
            Err(Rejected::OldEpoch),
            "from the sender's previous run"
        );
    }

    /// A flow table in memory: one entry per bucket, in insertion order; an entry for a hash
    /// it has replaces the old one, as in the real table (records come back to their sender
    /// in dumps and refreshes).
    #[derive(Default)]
    struct MemTable {
        entries: Mutex<Vec<FlowEvent>>,
        changed: Notify,
    }

    impl MemTable {
        fn with(entries: Vec<FlowEvent>) -> Arc<Self> {
            Arc::new(Self {
                entries: Mutex::new(entries),
                changed: Notify::new(),
            })
        }

        fn entries(&self) -> Vec<FlowEvent> {
            self.entries.lock().expect("lock").clone()
        }

        /// Waits until the table holds `n` entries, at most `within`.
        async fn wait_for(&self, n: usize, within: Duration) -> Vec<FlowEvent> {
            let deadline = Instant::now() + within;
            loop {
                let notified = self.changed.notified();
                let now = self.entries();
                if now.len() >= n {
                    return now;
                }
                assert!(
                    tokio::time::timeout_at(deadline, notified).await.is_ok(),
                    "{} of {n} entries after {within:?}",
                    now.len()
                );
            }
        }
    }

    impl FlowTable for MemTable {
        fn insert(&self, events: &[FlowEvent]) -> DpResult<Inserted> {
            let mut entries = self.entries.lock().expect("lock");
            for e in events {
                match entries.iter_mut().find(|have| have.hash == e.hash) {
                    Some(have) => *have = *e,
                    None => entries.push(*e),
                }
            }
            drop(entries);
            self.changed.notify_waiters();
            Ok(Inserted {
                added: events.len() as u64,
                ..Inserted::default()
            })
        }

        fn scan(&self, from: u32, count: u32, _recent_only: bool, out: &mut Vec<FlowEvent>) -> DpResult<u32> {
            let entries = self.entries.lock().expect("lock");
            let end = (from + count).min(self.buckets());
            out.extend(entries.iter().take(end as usize).skip(from as usize));
            Ok(if end >= self.buckets() { 0 } else { end })
        }

        fn buckets(&self) -> u32 {
            4096
        }
    }

    fn config(key: [u8; 32], node: u64) -> FlowSyncConfig {
        FlowSyncConfig::new("127.0.0.1:0".parse().expect("address"), key.to_vec(), node)
    }

    const WITHIN: Duration = Duration::from_secs(5);

    /// Waits until `what` holds of `stats`, at most [`WITHIN`].
    async fn wait_until(stats: &Stats, what: impl Fn(&StatsSnapshot) -> bool) -> StatsSnapshot {
        let deadline = Instant::now() + WITHIN;
        loop {
            let now = stats.snapshot();
            if what(&now) {
                return now;
            }
            assert!(Instant::now() < deadline, "not within {WITHIN:?}: {now:?}");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    #[tokio::test]
    async fn records_reach_every_peer_table() {
        let (b_table, c_table) = (MemTable::with(Vec::new()), MemTable::with(Vec::new()));
        let (_b_tx, b_events) = mpsc::channel(1);
        let (_c_tx, c_events) = mpsc::channel(1);
        let (_peers_b, none_b) = watch::channel(Vec::new());
        let (_peers_c, none_c) = watch::channel(Vec::new());
        let b = FlowSync::start(config(KEY, 2), b_events, b_table.clone(), none_b)
            .await
            .expect("start b");
        let c = FlowSync::start(config(KEY, 3), c_events, c_table.clone(), none_c)
            .await
            .expect("start c");
        let (a_tx, a_events) = mpsc::channel(1024);
        let (_peers_a, peers) = watch::channel(vec![b.local_addr(), c.local_addr()]);
        let a = FlowSync::start(config(KEY, 1), a_events, MemTable::with(Vec::new()), peers)
            .await
            .expect("start a");
        // 200 records: two full datagrams, and a partial one sent by the flush deadline.
        let sent: Vec<FlowEvent> = (0..200).map(record).collect();
        for r in &sent {
            a_tx.send(*r).await.expect("a's sender runs");
        }
        assert_eq!(b_table.wait_for(200, WITHIN).await, sent);
        assert_eq!(c_table.wait_for(200, WITHIN).await, sent);
        let (sa, sb) = (a.stats().snapshot(), b.stats().snapshot());
        assert_eq!(sa.events, 200);
        // At least: records come back to A in the dumps it asked for, and A's refreshes send
        // them again.
        assert!(sa.records_sent >= 400, "to each of two peers: {sa:?}");
        assert!(
            sb.records_received >= 200 && sb.records_stored == sb.records_received,
            "{sb:?}"
        );
        assert_eq!(sb.rejected.iter().sum::<u64>(), 0, "{sb:?}");
        assert!(
            sb.lag_max_ns < WITHIN.as_nanos() as u64,
            "lag {} ns",
            sb.lag_max_ns
        );
    }

    #[tokio::test]
    async fn a_joining_node_gets_a_full_dump() {
        let held: Vec<FlowEvent> = (0..1000).map(record).collect();
        let b_table = MemTable::with(held.clone());
        let (_b_tx, b_events) = mpsc::channel(1);
        let (_peers_b, none) = watch::channel(Vec::new());
        let b = FlowSync::start(config(KEY, 2), b_events, b_table, none)
            .await
            .expect("start b");
        let a_table = MemTable::with(Vec::new());
        let (_a_tx, a_events) = mpsc::channel(1);
        let (_peers_a, peers) = watch::channel(vec![b.local_addr()]);
        let a = FlowSync::start(config(KEY, 1), a_events, a_table.clone(), peers)
            .await
            .expect("start a");
        assert_eq!(a_table.wait_for(1000, WITHIN).await, held);
        assert_eq!(a.stats().snapshot().dumps_requested, 1);
        wait_until(&b.stats(), |s| s.dumps_served == 1).await;
    }

    #[tokio::test]
    async fn a_short_key_is_refused_and_no_key_is_printed() {
        let cfg = config(KEY, 1);
        assert!(!format!("{cfg:?}").contains("7, 7"), "{cfg:?}");
        let (_tx, events) = mpsc::channel(1);
        let (_peers, none) = watch::channel(Vec::new());
        let short = FlowSyncConfig {
            key: vec![1; MIN_KEY_LEN - 1],
            ..cfg
        };
        let err = FlowSync::start(short, events, MemTable::with(Vec::new()), none).await;
        assert_eq!(err.err().map(|e| e.kind()), Some(io::ErrorKind::InvalidInput));
    }

    #[tokio::test]
    async fn a_node_with_another_key_is_rejected_and_counted() {
        let b_table = MemTable::with(Vec::new());
        let (_b_tx, b_events) = mpsc::channel(1);
        let (_peers_b, none) = watch::channel(Vec::new());
        let b = FlowSync::start(config(KEY, 2), b_events, b_table.clone(), none)
            .await
            .expect("start b");
        let (a_tx, a_events) = mpsc::channel(16);
        let (_peers_a, peers) = watch::channel(vec![b.local_addr()]);
        let _a = FlowSync::start(config([9; 32], 1), a_events, MemTable::with(Vec::new()), peers)
            .await
            .expect("start a");
        a_tx.send(record(1)).await.expect("a's sender runs");
        // The dump request and the record: two datagrams, both rejected for their tag.
        let seen = wait_until(&b.stats(), |s| s.rejected(Rejected::Tag) == 2).await;
        assert!(b_table.entries().is_empty());
        assert_eq!(seen.datagrams_received, 0);
    }
}
