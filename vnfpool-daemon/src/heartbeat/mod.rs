//! Heartbeats of self-registered elements: the wire format, its verification and liveness.
//!
//! An element that registered itself (over the API, which hands it an [`ElementId`] and a
//! per-element [`Key`]) sends a heartbeat datagram every few milliseconds. The [`Verifier`]
//! accepts one only when its HMAC is right under that element's key, its sequence number is
//! greater than the last one accepted from the element, and its timestamp is within the window
//! around the receiver's clock: no later than the clock skew allows, no earlier than the
//! element's miss limit plus that skew. Anything else is rejected and counted, and never refreshes the
//! element's liveness. [`Verifier::liveness`] then tells, at a given instant, which elements
//! have been silent for longer than the miss limit.
//!
//! Everything here is pure: instants come in as parameters ([`Clocks`]), never from a clock.
//! [`udp`] holds the receiver task and the sender.
//!
//! # Paths
//!
//! An element may send every heartbeat over several paths, one per source address it
//! registered (`heartbeat_paths`). The first copy of a sequence number to arrive counts for the
//! element; a later copy over another path is a [`Accepted::duplicate`], not a replay: it
//! refreshes its path only. Each path keeps its own last sequence number, so the same copy
//! again over the same path, or an older sequence, is still refused ([`Rejected::OldSequence`]).
//! The element is silent only when every path is; [`Verifier::judge_paths`] tells which paths
//! went silent while another still delivers.
//!
//! # Wire format (version 1)
//!
//! One UDP datagram of exactly [`LEN`] = 57 bytes; integers are big-endian (network order).
//!
//! | offset | size | field |
//! | ---: | ---: | --- |
//! | 0 | 1 | version, [`VERSION`] = 1 |
//! | 1 | 8 | element id (`u64`, the registration id) |
//! | 9 | 8 | sequence number (`u64`), strictly increasing per element and key |
//! | 17 | 8 | timestamp: the sender's wall clock, nanoseconds since the Unix epoch (`u64`) |
//! | 25 | 32 | HMAC-SHA256 under the element's key over bytes 0..25 |
//!
//! A datagram of any other length, or with another version byte, is rejected before any
//! cryptography is done.

pub mod udp;

use std::{collections::HashMap, fmt, net::IpAddr, time::Duration};

use hmac::{Hmac, KeyInit as _, Mac as _};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

pub use crate::model::health::Now;

/// The version byte this module writes and accepts.
pub const VERSION: u8 = 1;
/// Length of a heartbeat datagram.
pub const LEN: usize = 57;
/// Length of a per-element key.
pub const KEY_LEN: usize = 32;
/// Bytes covered by the MAC: version, id, sequence and timestamp.
const SIGNED: usize = 25;
/// The default clock skew allowed between an element and the receiver (`api.heartbeat_clock_skew`).
///
/// A heartbeat's timestamp must lie within the element's miss limit plus this before the
/// receiver's wall clock, and within this after it: one sent longer ago than the miss limit
/// could not keep the element alive anyway, so accepting it late (held back on the path and
/// let through after the element died) would only stretch a failure's detection.
pub const DEFAULT_SKEW: Duration = Duration::from_millis(100);

/// An element's registration id, handed out by the API when the element registers.
pub type ElementId = u64;

type HmacSha256 = Hmac<Sha256>;

/// A per-element HMAC-SHA256 key. Its `Debug` output never shows the key; it is serialized as
/// 64 lowercase hexadecimal digits (the persisted registrations need it).
#[derive(Clone, PartialEq, Eq)]
pub struct Key([u8; KEY_LEN]);

/// Errors of key generation and key decoding.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("reading random bytes from the operating system: {0}")]
    Random(getrandom::Error),
    /// The text is not repeated: it may be a key with a typo.
    #[error("a key is {expected} hexadecimal digits; got {len} characters that are not", expected = KEY_LEN * 2)]
    Hex { len: usize },
}

impl Key {
    /// A new key of [`KEY_LEN`] random bytes from the operating system.
    pub fn generate() -> Result<Self, KeyError> {
        let mut bytes = [0; KEY_LEN];
        getrandom::fill(&mut bytes).map_err(KeyError::Random)?;
        Ok(Self(bytes))
    }

    #[must_use]
    pub const fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// The key as 64 lowercase hexadecimal digits.
    #[must_use]
    pub fn to_hex(&self) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut hex = String::with_capacity(KEY_LEN * 2);
        for byte in self.0 {
            hex.push(char::from(DIGITS[usize::from(byte >> 4)]));
            hex.push(char::from(DIGITS[usize::from(byte & 0xf)]));
        }
        hex
    }

    /// Parses 64 hexadecimal digits (either case).
    pub fn from_hex(hex: &str) -> Result<Self, KeyError> {
        let bad = || KeyError::Hex {
            len: hex.chars().count(),
        };
        let digits = hex.as_bytes();
        if digits.len() != KEY_LEN * 2 {
            return Err(bad());
        }
        let mut bytes = [0; KEY_LEN];
        for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
            let high = char::from(pair[0]).to_digit(16).ok_or_else(bad)?;
            let low = char::from(pair[1]).to_digit(16).ok_or_else(bad)?;
            *byte = (high << 4 | low) as u8;
        }
        Ok(Self(bytes))
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.0).expect("HMAC takes keys of any length")
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(..)")
    }
}

impl Serialize for Key {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let hex = String::deserialize(deserializer)?;
        Self::from_hex(&hex).map_err(serde::de::Error::custom)
    }
}

/// Nanoseconds since the Unix epoch of a wall-clock reading (0 before the epoch; saturating in
/// the year 2554).
#[must_use]
pub fn unix_ns(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Encodes and signs one heartbeat (see the module docs for the layout).
///
/// This derives the HMAC state from `key` on every call; a sender of many heartbeats keeps a
/// [`Signer`] instead.
#[must_use]
pub fn encode(id: ElementId, seq: u64, timestamp: u64, key: &Key) -> [u8; LEN] {
    Signer::new(id, key).sign(seq, timestamp)
}

/// Signs heartbeats of one element: the HMAC state keyed once, cloned per heartbeat.
#[derive(Clone)]
pub struct Signer {
    id: ElementId,
    mac: HmacSha256,
}

impl Signer {
    #[must_use]
    pub fn new(id: ElementId, key: &Key) -> Self {
        Self { id, mac: key.mac() }
    }

    #[must_use]
    pub fn id(&self) -> ElementId {
        self.id
    }

    /// The heartbeat with sequence number `seq` and timestamp `timestamp` (nanoseconds since
    /// the Unix epoch).
    #[must_use]
    pub fn sign(&self, seq: u64, timestamp: u64) -> [u8; LEN] {
        let mut out = [0; LEN];
        out[0] = VERSION;
        out[1..9].copy_from_slice(&self.id.to_be_bytes());
        out[9..17].copy_from_slice(&seq.to_be_bytes());
        out[17..SIGNED].copy_from_slice(&timestamp.to_be_bytes());
        let tag = self
            .mac
            .clone()
            .chain_update(&out[..SIGNED])
            .finalize()
            .into_bytes();
        out[SIGNED..].copy_from_slice(&tag);
        out
    }
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// The fields of a heartbeat, read without checking its MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fields {
    pub id: ElementId,
    pub seq: u64,
    /// The sender's wall clock, nanoseconds since the Unix epoch.
    pub timestamp: u64,
}

/// Reads the fields of a datagram of the right length and version. Nothing read here is to be
/// trusted before the MAC is checked.
fn parse(bytes: &[u8]) -> Result<(&[u8; LEN], Fields), Rejected> {
    let bytes: &[u8; LEN] = bytes.try_into().map_err(|_| Rejected::Malformed)?;
    if bytes[0] != VERSION {
        return Err(Rejected::BadVersion);
    }
    let word = |at: usize| u64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    Ok((
        bytes,
        Fields {
            id: word(1),
            seq: word(9),
            timestamp: word(17),
        },
    ))
}

/// The receiver's two clocks, read once by the caller for a datagram or a batch of them.
///
/// The wall clock judges the heartbeat's timestamp (the sender stamps it with its own wall
/// clock); the monotonic one records when the element was last heard, so that a step of the
/// wall clock never makes an element look silent or fresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clocks {
    /// Nanoseconds since the Unix epoch.
    pub wall: u64,
    /// Time since the daemon's epoch, as everywhere in the model.
    pub mono: Now,
}

/// A verified heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    pub id: ElementId,
    pub seq: u64,
    /// The sender's timestamp, nanoseconds since the Unix epoch.
    pub timestamp: u64,
    /// A copy of a heartbeat already accepted over another path: it refreshed its own path
    /// only, not the element.
    pub duplicate: bool,
    /// The path it came over, when that path had been judged silent: it is up again.
    pub path_up: Option<IpAddr>,
}

/// Most heartbeat paths an element may register.
pub const MAX_PATHS: usize = 8;

/// Sequence numbers remembered per element, so that a copy arriving over a slower path is
/// known as one: at a heartbeat every millisecond, 16 ms of difference between two paths.
const SEEN: usize = 16;

/// A path whose state changed, as [`Verifier::judge_paths`] or an accepted heartbeat tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathChange {
    pub path: IpAddr,
    pub up: bool,
}

/// Why a datagram was not accepted as a heartbeat. Each kind is counted in [`Counters`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Rejected {
    #[error("not {LEN} bytes long")]
    Malformed,
    #[error("unsupported version")]
    BadVersion,
    #[error("no element registered with this id")]
    UnknownElement,
    #[error("MAC does not match the element's key")]
    BadMac,
    /// The sequence number is not greater than the last accepted one: a replay, or a heartbeat
    /// delayed behind a later one.
    #[error("sequence number not above the last accepted one")]
    OldSequence,
    #[error("timestamp outside the window around the receiver's clock")]
    OutsideWindow,
}

impl Rejected {
    pub const ALL: [Self; 6] = [
        Self::Malformed,
        Self::BadVersion,
        Self::UnknownElement,
        Self::BadMac,
        Self::OldSequence,
        Self::OutsideWindow,
    ];

    /// A short name for logs and metric labels.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::BadVersion => "bad_version",
            Self::UnknownElement => "unknown_element",
            Self::BadMac => "bad_mac",
            Self::OldSequence => "old_sequence",
            Self::OutsideWindow => "outside_window",
        }
    }
}

/// Datagrams accepted and rejected (by kind) since the verifier was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub accepted: u64,
    /// Copies of accepted heartbeats that came over another path (not rejections).
    #[serde(default)]
    pub duplicate: u64,
    pub malformed: u64,
    pub bad_version: u64,
    pub unknown_element: u64,
    pub bad_mac: u64,
    pub old_sequence: u64,
    pub outside_window: u64,
}

impl Counters {
    /// How many datagrams were rejected as `kind`.
    #[must_use]
    pub fn rejected(&self, kind: Rejected) -> u64 {
        match kind {
            Rejected::Malformed => self.malformed,
            Rejected::BadVersion => self.bad_version,
            Rejected::UnknownElement => self.unknown_element,
            Rejected::BadMac => self.bad_mac,
            Rejected::OldSequence => self.old_sequence,
            Rejected::OutsideWindow => self.outside_window,
        }
    }

    /// Rejections of every kind.
    #[must_use]
    pub fn rejected_total(&self) -> u64 {
        Rejected::ALL.iter().map(|&kind| self.rejected(kind)).sum()
    }

    fn count(&mut self, result: Result<bool, Rejected>) {
        let counter = match result {
            Ok(false) => &mut self.accepted,
            Ok(true) => &mut self.duplicate,
            Err(Rejected::Malformed) => &mut self.malformed,
            Err(Rejected::BadVersion) => &mut self.bad_version,
            Err(Rejected::UnknownElement) => &mut self.unknown_element,
            Err(Rejected::BadMac) => &mut self.bad_mac,
            Err(Rejected::OldSequence) => &mut self.old_sequence,
            Err(Rejected::OutsideWindow) => &mut self.outside_window,
        };
        *counter = counter.wrapping_add(1);
    }
}

/// Whether an element was heard from recently enough, at some instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// A heartbeat was accepted at `last`, no longer than the miss limit ago.
    Live { last: Now },
    /// No heartbeat accepted yet since the element was registered (or the verifier restored),
    /// which was no longer than the miss limit ago.
    Pending,
    /// Silent for longer than the miss limit since `silent_since`: its last accepted heartbeat
    /// or, when none was accepted, its registration. Detection time is `now - silent_since`.
    Failed { silent_since: Now },
}

pub use crate::model::spec::miss_limit;

/// A registration as persisted with the pool state: the id, the key (as hex) and the last
/// accepted sequence number, so that a heartbeat captured before a restart is not accepted
/// after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    pub id: ElementId,
    pub key: Key,
    #[serde(default)]
    pub last_seq: Option<u64>,
}

/// One heartbeat path of an element: a source address it registered.
#[derive(Debug, Clone, Copy)]
struct Path {
    addr: IpAddr,
    /// The last sequence number this path delivered.
    last_seq: Option<u64>,
    /// When it last delivered one.
    heard: Option<Now>,
    /// When the path was added: the origin of silence before its first heartbeat.
    since: Now,
    /// Whether it was up when last judged or heard.
    up: bool,
}

impl Path {
    fn new(addr: IpAddr, now: Now) -> Self {
        Self {
            addr,
            last_seq: None,
            heard: None,
            since: now,
            up: true,
        }
    }
}

#[derive(Clone)]
struct Element {
    key: Key,
    /// The HMAC state keyed with `key`, cloned for each verification (this saves the two
    /// SHA-256 blocks of the key schedule on every heartbeat).
    mac: HmacSha256,
    last_seq: Option<u64>,
    /// When the last heartbeat was accepted.
    heard: Option<Now>,
    /// When the element was registered or the verifier restored: the origin of silence before
    /// the first heartbeat.
    since: Now,
    /// The element's miss limit, in ns ([`Verifier::set_miss_limit`]; 0 until told).
    miss_limit_ns: u64,
    /// Its registered paths; none: one path, not followed.
    paths: Vec<Path>,
    /// The last [`SEEN`] accepted sequence numbers (a ring).
    seen: [Option<u64>; SEEN],
    next_seen: usize,
}

impl Element {
    fn new(key: Key, last_seq: Option<u64>, now: Now) -> Self {
        Self {
            mac: key.mac(),
            key,
            last_seq,
            heard: None,
            since: now,
            miss_limit_ns: 0,
            paths: Vec::new(),
            seen: [None; SEEN],
            next_seen: 0,
        }
    }

    fn remember(&mut self, seq: u64) {
        self.seen[self.next_seen] = Some(seq);
        self.next_seen = (self.next_seen + 1) % SEEN;
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Per-element heartbeat state: keys, last accepted sequence numbers and times, and counters.
#[derive(Clone)]
pub struct Verifier {
    skew_ns: u64,
    elements: HashMap<ElementId, Element>,
    counters: Counters,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("skew_ns", &self.skew_ns)
            .field("elements", &self.elements.len())
            .field("counters", &self.counters)
            .finish()
    }
}

impl Verifier {
    /// A verifier with no element that allows `skew` between an element's clock and its own.
    #[must_use]
    pub fn new(skew: Duration) -> Self {
        Self {
            skew_ns: nanos(skew),
            elements: HashMap::new(),
            counters: Counters::default(),
        }
    }

    /// A verifier holding `registrations` (as saved by [`Verifier::snapshot`]); their silence
    /// counts from `now`, their sequence numbers go on from the saved ones.
    #[must_use]
    pub fn restore(skew: Duration, registrations: impl IntoIterator<Item = Registration>, now: Now) -> Self {
        let mut verifier = Self::new(skew);
        for r in registrations {
            verifier
                .elements
                .insert(r.id, Element::new(r.key, r.last_seq, now));
        }
        verifier
    }

    /// Every registration, by id, for persisting.
    #[must_use]
    pub fn snapshot(&self) -> Vec<Registration> {
        let mut registrations: Vec<_> = self
            .elements
            .iter()
            .map(|(&id, e)| Registration {
                id,
                key: e.key.clone(),
                last_seq: e.last_seq,
            })
            .collect();
        registrations.sort_by_key(|r| r.id);
        registrations
    }

    /// The clock skew allowed.
    #[must_use]
    pub fn skew(&self) -> Duration {
        Duration::from_nanos(self.skew_ns)
    }

    /// Sets the miss limit of `id` (its pool's): how far before the receiver's clock its
    /// heartbeats may be stamped, besides the skew. Returns whether `id` is registered.
    pub fn set_miss_limit(&mut self, id: ElementId, miss_limit: Duration) -> bool {
        self.elements
            .get_mut(&id)
            .map(|e| e.miss_limit_ns = nanos(miss_limit))
            .is_some()
    }

    /// Sets the heartbeat paths of `id` (source addresses; at most [`MAX_PATHS`] are kept): a
    /// path it had keeps its state, a new one counts its silence from `now`. Returns whether
    /// `id` is registered.
    pub fn set_paths(&mut self, id: ElementId, paths: &[IpAddr], now: Now) -> bool {
        let Some(element) = self.elements.get_mut(&id) else {
            return false;
        };
        if element.paths.iter().map(|p| p.addr).eq(paths.iter().copied()) {
            return true;
        }
        let old = std::mem::take(&mut element.paths);
        element.paths = paths
            .iter()
            .take(MAX_PATHS)
            .map(|&addr| {
                old.iter()
                    .find(|p| p.addr == addr)
                    .copied()
                    .unwrap_or_else(|| Path::new(addr, now))
            })
            .collect();
        true
    }

    /// The paths of `id`, each with whether it is up as last judged or heard (empty when it
    /// registered none).
    #[must_use]
    pub fn paths(&self, id: ElementId) -> Vec<PathChange> {
        self.elements.get(&id).map_or_else(Vec::new, |e| {
            e.paths
                .iter()
                .map(|p| PathChange {
                    path: p.addr,
                    up: p.up,
                })
                .collect()
        })
    }

    /// Judges the paths of `id` at `now`: each up path silent for strictly longer than
    /// `miss_limit` goes down (and is returned). Also returns when the next up path would go
    /// silent, for the caller to judge again then.
    pub fn judge_paths(
        &mut self,
        id: ElementId,
        miss_limit: Duration,
        now: Now,
    ) -> (Vec<PathChange>, Option<Now>) {
        let Some(element) = self.elements.get_mut(&id) else {
            return (Vec::new(), None);
        };
        let mut down = Vec::new();
        let mut next: Option<Now> = None;
        for path in element.paths.iter_mut().filter(|p| p.up) {
            let origin = path.heard.unwrap_or(path.since);
            if now.saturating_sub(origin) > miss_limit {
                path.up = false;
                down.push(PathChange {
                    path: path.addr,
                    up: false,
                });
            } else {
                let due = origin + miss_limit + Duration::from_micros(1);
                next = Some(next.map_or(due, |n| n.min(due)));
            }
        }
        (down, next)
    }

    /// Registers `id` with `key` at `now`; returns whether it was registered before. A new
    /// registration (a new key) starts a new sequence: the first heartbeat may carry any
    /// number, and heartbeats signed with an earlier key no longer verify.
    pub fn register(&mut self, id: ElementId, key: Key, now: Now) -> bool {
        self.elements.insert(id, Element::new(key, None, now)).is_some()
    }

    /// Removes `id`; returns whether it was registered. Its heartbeats are then rejected as
    /// [`Rejected::UnknownElement`].
    pub fn remove(&mut self, id: ElementId) -> bool {
        self.elements.remove(&id).is_some()
    }

    #[must_use]
    pub fn contains(&self, id: ElementId) -> bool {
        self.elements.contains_key(&id)
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.elements.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.elements.is_empty()
    }

    /// The registered ids, in no particular order.
    pub fn ids(&self) -> impl Iterator<Item = ElementId> + '_ {
        self.elements.keys().copied()
    }

    /// The last accepted sequence number of `id` (`None` when none yet or not registered).
    #[must_use]
    pub fn last_seq(&self, id: ElementId) -> Option<u64> {
        self.elements.get(&id).and_then(|e| e.last_seq)
    }

    #[must_use]
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Verifies one datagram received at `now`, counts the outcome and, when accepted, records
    /// its sequence number and `now.mono` as the element's last heartbeat.
    ///
    /// Checks, in order: length, version, element, MAC (in constant time), sequence, window.
    /// Nothing is recorded for a rejected datagram. This does not allocate.
    pub fn verify(&mut self, bytes: &[u8], now: Clocks) -> Result<Accepted, Rejected> {
        self.verify_from(bytes, None, now)
    }

    /// [`Verifier::verify`] of a datagram from `from`: when that is one of the element's
    /// paths, a copy of a recently accepted heartbeat that this path has not delivered yet is
    /// a [`Accepted::duplicate`] and refreshes the path (see the module's "Paths").
    pub fn verify_from(
        &mut self,
        bytes: &[u8],
        from: Option<IpAddr>,
        now: Clocks,
    ) -> Result<Accepted, Rejected> {
        let result = self.check(bytes, from, now);
        self.counters.count(result.map(|a| a.duplicate));
        result
    }

    fn check(&mut self, bytes: &[u8], from: Option<IpAddr>, now: Clocks) -> Result<Accepted, Rejected> {
        let (bytes, fields) = parse(bytes)?;
        let element = self
            .elements
            .get_mut(&fields.id)
            .ok_or(Rejected::UnknownElement)?;
        element
            .mac
            .clone()
            .chain_update(&bytes[..SIGNED])
            .verify_slice(&bytes[SIGNED..])
            .map_err(|_| Rejected::BadMac)?;
        let path = from.and_then(|ip| element.paths.iter().position(|p| p.addr == ip));
        let duplicate = element.last_seq.is_some_and(|last| fields.seq <= last);
        if duplicate {
            // A copy over another path of one accepted lately; the same path delivering it
            // again, or anything older, is a replay.
            let new_on_path = path.is_some_and(|i| element.paths[i].last_seq.is_none_or(|l| fields.seq > l));
            if !(new_on_path && element.seen.contains(&Some(fields.seq))) {
                return Err(Rejected::OldSequence);
            }
        }
        let earliest = now
            .wall
            .saturating_sub(element.miss_limit_ns.saturating_add(self.skew_ns));
        let latest = now.wall.saturating_add(self.skew_ns);
        if !(earliest..=latest).contains(&fields.timestamp) {
            return Err(Rejected::OutsideWindow);
        }
        if !duplicate {
            element.last_seq = Some(fields.seq);
            element.heard = Some(now.mono);
            element.remember(fields.seq);
        }
        let mut path_up = None;
        if let Some(path) = path.map(|i| &mut element.paths[i]) {
            path.last_seq = Some(fields.seq);
            path.heard = Some(now.mono);
            if !path.up {
                path.up = true;
                path_up = Some(path.addr);
            }
        }
        Ok(Accepted {
            id: fields.id,
            seq: fields.seq,
            timestamp: fields.timestamp,
            duplicate,
            path_up,
        })
    }

    /// The liveness of `id` at `now` (`None` when not registered): failed once it has been
    /// silent for strictly longer than `miss_limit`.
    #[must_use]
    pub fn liveness(&self, id: ElementId, miss_limit: Duration, now: Now) -> Option<Liveness> {
        self.elements.get(&id).map(|e| liveness(e, miss_limit, now))
    }

    /// [`Verifier::liveness`] of every registered element, in no particular order.
    pub fn liveness_all(
        &self,
        miss_limit: Duration,
        now: Now,
    ) -> impl Iterator<Item = (ElementId, Liveness)> + '_ {
        self.elements
            .iter()
            .map(move |(&id, e)| (id, liveness(e, miss_limit, now)))
    }
}

fn liveness(element: &Element, miss_limit: Duration, now: Now) -> Liveness {
    let origin = element.heard.unwrap_or(element.since);
    if now.saturating_sub(origin) > miss_limit {
        Liveness::Failed { silent_since: origin }
    } else {
        element
            .heard
            .map_or(Liveness::Pending, |last| Liveness::Live { last })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const T0: u64 = 1_800_000_000_000_000_000;
    const MS: u64 = 1_000_000;

    fn key(n: u8) -> Key {
        Key::from_bytes([n; KEY_LEN])
    }

    fn ms(n: u64) -> Now {
        Duration::from_millis(n)
    }

    /// Clocks `n` ms after T0 on both clocks.
    fn at(n: u64) -> Clocks {
        Clocks {
            wall: T0 + n * MS,
            mono: ms(n),
        }
    }

    /// A verifier allowing the default skew, elements 1 and 2 (keys 1 and 2) registered at 0.
    fn verifier() -> Verifier {
        let mut v = Verifier::new(DEFAULT_SKEW);
        assert!(!v.register(1, key(1), ms(0)));
        assert!(!v.register(2, key(2), ms(0)));
        v
    }

    #[test]
    fn layout_is_as_documented() {
        let hb = encode(0x0102_0304_0506_0708, 9, 0x1122_3344_5566_7788, &key(7));
        assert_eq!(hb.len(), LEN);
        assert_eq!(hb[0], VERSION);
        assert_eq!(hb[1..9], [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(hb[9..17], [0, 0, 0, 0, 0, 0, 0, 9]);
        assert_eq!(hb[17..25], [0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]);
        let tag = key(7).mac().chain_update(&hb[..25]).finalize().into_bytes();
        assert_eq!(hb[25..], tag[..]);
        assert_eq!(
            parse(&hb).map(|(_, f)| f),
            Ok(Fields {
                id: 0x0102_0304_0506_0708,
                seq: 9,
                timestamp: 0x1122_3344_5566_7788
            })
        );
    }

    #[test]
    fn the_tag_is_standard_hmac_sha256() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let tag = HmacSha256::new_from_slice(b"Jefe")
            .expect("any length")
            .chain_update(b"what do ya want for nothing?")
            .finalize()
            .into_bytes();
        assert_eq!(
            Key::from_bytes(tag.into()).to_hex(),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn accepts_a_good_heartbeat_and_records_it() {
        let mut v = verifier();
        let hb = encode(1, 5, T0 + 10 * MS, &key(1));
        assert_eq!(
            v.verify(&hb, at(10)),
            Ok(Accepted {
                id: 1,
                seq: 5,
                timestamp: T0 + 10 * MS,
                duplicate: false,
                path_up: None,
            })
        );
        assert_eq!(v.last_seq(1), Some(5));
        assert_eq!(
            v.liveness(1, ms(30), ms(20)),
            Some(Liveness::Live { last: ms(10) })
        );
        // The next one, and the other element's first one with any sequence number.
        assert!(v.verify(&encode(1, 6, T0 + 20 * MS, &key(1)), at(20)).is_ok());
        assert!(v.verify(&encode(2, 0, T0 + 20 * MS, &key(2)), at(20)).is_ok());
        assert_eq!(
            v.counters(),
            Counters {
                accepted: 3,
                ..Counters::default()
            }
        );
    }

    #[test]
    fn rejects_and_counts_each_bad_kind() {
        let good = encode(1, 10, T0, &key(1));
        let mut flipped_mac = good;
        flipped_mac[LEN - 1] ^= 0x01;
        let mut flipped_seq = good;
        flipped_seq[16] ^= 0x80;
        let mut wrong_version = good;
        wrong_version[0] = 2;
        let mut longer = good.to_vec();
        longer.push(0);
        let window = DEFAULT_SKEW.as_nanos() as u64;

        let cases: [(&str, Vec<u8>, Rejected); 13] = [
            ("bit-flipped MAC", flipped_mac.to_vec(), Rejected::BadMac),
            ("bit-flipped sequence", flipped_seq.to_vec(), Rejected::BadMac),
            ("wrong key", encode(1, 11, T0, &key(2)).to_vec(), Rejected::BadMac),
            (
                "other element's id under its key",
                encode(2, 11, T0, &key(1)).to_vec(),
                Rejected::BadMac,
            ),
            ("replayed", good.to_vec(), Rejected::OldSequence),
            (
                "older sequence",
                encode(1, 9, T0, &key(1)).to_vec(),
                Rejected::OldSequence,
            ),
            (
                "timestamp too old",
                encode(1, 11, T0 - window - 1, &key(1)).to_vec(),
                Rejected::OutsideWindow,
            ),
            (
                "timestamp too new",
                encode(1, 12, T0 + window + 1, &key(1)).to_vec(),
                Rejected::OutsideWindow,
            ),
            (
                "unknown element",
                encode(3, 11, T0, &key(1)).to_vec(),
                Rejected::UnknownElement,
            ),
            ("truncated", good[..LEN - 1].to_vec(), Rejected::Malformed),
            ("empty", Vec::new(), Rejected::Malformed),
            ("one byte longer", longer, Rejected::Malformed),
            ("wrong version", wrong_version.to_vec(), Rejected::BadVersion),
        ];
        let mut v = verifier();
        assert!(v.verify(&good, at(0)).is_ok());
        for (what, bytes, want) in &cases {
            assert_eq!(v.verify(bytes, at(0)), Err(*want), "{what}");
        }
        assert_eq!(
            v.last_seq(1),
            Some(10),
            "no rejected heartbeat moved the sequence"
        );
        let counters = v.counters();
        assert_eq!(counters.accepted, 1);
        for kind in Rejected::ALL {
            let want = cases.iter().filter(|(_, _, k)| *k == kind).count() as u64;
            assert_eq!(counters.rejected(kind), want, "{}", kind.name());
        }
        assert_eq!(counters.rejected_total(), cases.len() as u64);
        // The edges of the window are inside it.
        assert!(v.verify(&encode(1, 20, T0 - window, &key(1)), at(0)).is_ok());
        assert!(v.verify(&encode(1, 21, T0 + window, &key(1)), at(0)).is_ok());
    }

    #[test]
    fn a_rejected_heartbeat_never_refreshes_liveness() {
        let limit = miss_limit(ms(10), 3);
        let mut v = verifier();
        assert!(v.verify(&encode(1, 1, T0 + 10 * MS, &key(1)), at(10)).is_ok());
        let mut flipped = encode(1, 2, T0 + 50 * MS, &key(1));
        flipped[30] ^= 0x40;
        let bad = [
            flipped.to_vec(),
            encode(1, 2, T0 + 50 * MS, &key(2)).to_vec(),
            encode(1, 1, T0 + 50 * MS, &key(1)).to_vec(),
            encode(1, 3, T0 - 5_000 * MS, &key(1)).to_vec(),
            encode(1, 4, T0 + 5_000 * MS, &key(1)).to_vec(),
            encode(1, 5, T0 + 50 * MS, &key(1))[..40].to_vec(),
        ];
        for bytes in &bad {
            assert!(v.verify(bytes, at(50)).is_err());
        }
        assert_eq!(
            v.liveness(1, limit, ms(50)),
            Some(Liveness::Failed { silent_since: ms(10) })
        );
        // Element 2 never sent a good one: silent since its registration.
        assert_eq!(
            v.liveness(2, limit, ms(50)),
            Some(Liveness::Failed { silent_since: ms(0) })
        );
        // A good heartbeat brings element 1 back.
        assert!(v.verify(&encode(1, 6, T0 + 60 * MS, &key(1)), at(60)).is_ok());
        assert_eq!(
            v.liveness(1, limit, ms(60)),
            Some(Liveness::Live { last: ms(60) })
        );
    }

    /// A heartbeat may be stamped up to the miss limit plus the skew before the receiver's clock,
    /// and up to the skew after it: one held back longer on the path (after the element died,
    /// say) no longer refreshes it.
    #[test]
    fn the_window_is_the_miss_limit_plus_the_skew_before_and_the_skew_after() {
        let mut v = Verifier::new(ms(100));
        v.register(1, key(1), ms(0));
        assert!(v.set_miss_limit(1, ms(30)));
        assert!(!v.set_miss_limit(9, ms(30)), "not registered");
        let now = at(1_000);
        let stamped = |ms_before: i64| {
            let t = i128::from(now.wall) - i128::from(ms_before) * i128::from(MS);
            u64::try_from(t).expect("a time after T0")
        };
        let mut seq = 0;
        let mut verify = |v: &mut Verifier, ms_before: i64| {
            seq += 1;
            v.verify(&encode(1, seq, stamped(ms_before), &key(1)), now)
                .map(|_| ())
        };
        assert_eq!(verify(&mut v, 130), Ok(()), "miss limit + skew before");
        assert_eq!(verify(&mut v, 131), Err(Rejected::OutsideWindow));
        assert_eq!(verify(&mut v, -100), Ok(()), "skew after");
        assert_eq!(verify(&mut v, -101), Err(Rejected::OutsideWindow));
        // A pool whose miss limit grows (a reload) widens the window.
        v.set_miss_limit(1, ms(1_000));
        assert_eq!(verify(&mut v, 1_100), Ok(()));
        // Until told its miss limit, an element gets the skew alone.
        v.register(2, key(2), ms(0));
        assert_eq!(
            v.verify(&encode(2, 1, stamped(101), &key(2)), now).map(|_| ()),
            Err(Rejected::OutsideWindow)
        );
    }

    #[test]
    fn liveness_counts_from_the_last_heartbeat_or_the_registration() {
        let limit = miss_limit(ms(10), 3);
        assert_eq!(limit, ms(30));
        assert_eq!(miss_limit(ms(10), 0), ms(10), "0 misses acts as 1");
        let mut v = Verifier::new(DEFAULT_SKEW);
        v.register(7, key(7), ms(100));
        assert_eq!(v.liveness(7, limit, ms(100)), Some(Liveness::Pending));
        assert_eq!(
            v.liveness(7, limit, ms(130)),
            Some(Liveness::Pending),
            "exactly the limit"
        );
        assert_eq!(
            v.liveness(7, limit, ms(131)),
            Some(Liveness::Failed {
                silent_since: ms(100)
            })
        );
        assert!(v.verify(&encode(7, 1, T0 + 140 * MS, &key(7)), at(140)).is_ok());
        assert_eq!(
            v.liveness(7, limit, ms(170)),
            Some(Liveness::Live { last: ms(140) })
        );
        assert_eq!(
            v.liveness(7, limit, ms(171)),
            Some(Liveness::Failed {
                silent_since: ms(140)
            })
        );
        // An instant before the last heartbeat (a caller's race) is not silence.
        assert_eq!(
            v.liveness(7, limit, ms(0)),
            Some(Liveness::Live { last: ms(140) })
        );
        assert_eq!(v.liveness(8, limit, ms(0)), None);
        let all: Vec<_> = v.liveness_all(limit, ms(171)).collect();
        assert_eq!(
            all,
            [(
                7,
                Liveness::Failed {
                    silent_since: ms(140)
                }
            )]
        );
    }

    #[test]
    fn register_again_starts_a_new_sequence_and_remove_forgets() {
        let mut v = verifier();
        assert!(v.verify(&encode(1, 100, T0, &key(1)), at(0)).is_ok());
        assert!(v.register(1, key(9), ms(5)), "was registered");
        assert_eq!(v.last_seq(1), None);
        assert_eq!(
            v.verify(&encode(1, 101, T0, &key(1)), at(5)),
            Err(Rejected::BadMac)
        );
        assert!(v.verify(&encode(1, 1, T0, &key(9)), at(5)).is_ok());
        assert!(v.remove(1));
        assert!(!v.remove(1));
        assert!(!v.contains(1));
        assert_eq!(
            v.verify(&encode(1, 2, T0, &key(9)), at(6)),
            Err(Rejected::UnknownElement)
        );
        assert_eq!(v.ids().collect::<Vec<_>>(), [2]);
        assert_eq!(v.len(), 1);
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("address")
    }

    #[test]
    fn a_copy_over_another_path_refreshes_that_path_and_is_no_replay() {
        let (a, b, stranger) = (ip("10.1.0.2"), ip("10.2.0.2"), ip("10.3.0.2"));
        let mut v = verifier();
        assert!(v.set_paths(1, &[a, b], ms(0)));
        let hb = encode(1, 10, T0 + 10 * MS, &key(1));
        let first = v.verify_from(&hb, Some(a), at(10)).expect("first copy");
        assert!(!first.duplicate);
        let copy = v.verify_from(&hb, Some(b), at(11)).expect("copy over b");
        assert!(copy.duplicate);
        // The element was heard at the first copy; the copy refreshed path b only.
        assert_eq!(
            v.liveness(1, ms(30), ms(20)),
            Some(Liveness::Live { last: ms(10) })
        );
        // The same copy again over either path, or from an address that is no path, is a
        // replay.
        for from in [Some(a), Some(b), Some(stranger), None] {
            assert_eq!(
                v.verify_from(&hb, from, at(12)).map(|_| ()),
                Err(Rejected::OldSequence),
                "{from:?}"
            );
        }
        // Path b lags by two heartbeats: its copies still count for it, in order.
        for seq in 11..=13 {
            let t = T0 + seq * MS;
            assert!(
                !v.verify_from(&encode(1, seq, t, &key(1)), Some(a), at(seq))
                    .expect("a")
                    .duplicate
            );
        }
        assert!(
            v.verify_from(&encode(1, 11, T0 + 11 * MS, &key(1)), Some(b), at(14))
                .expect("b lags")
                .duplicate
        );
        // ...but never older than what b delivered, and never a sequence nobody accepted.
        assert_eq!(
            v.verify_from(&encode(1, 10, T0 + 10 * MS, &key(1)), Some(b), at(14))
                .map(|_| ()),
            Err(Rejected::OldSequence)
        );
        assert_eq!(
            v.verify_from(&encode(1, 12, T0 + 12 * MS, &key(9)), Some(b), at(14))
                .map(|_| ()),
            Err(Rejected::BadMac)
        );
        let mut never_sent = v.clone();
        assert!(
            never_sent
                .verify_from(&encode(1, 20, T0 + 20 * MS, &key(1)), Some(a), at(20))
                .is_ok()
        );
        assert_eq!(
            never_sent
                .verify_from(&encode(1, 19, T0 + 19 * MS, &key(1)), Some(b), at(20))
                .map(|_| ()),
            Err(Rejected::OldSequence),
            "19 was never accepted: a delayed heartbeat, not a copy"
        );
        assert_eq!(
            v.counters(),
            Counters {
                accepted: 4,
                duplicate: 2,
                old_sequence: 5,
                bad_mac: 1,
                ..Counters::default()
            }
        );
    }

    #[test]
    fn a_silent_path_goes_down_while_the_element_lives_and_comes_back_with_its_next_copy() {
        let (a, b) = (ip("10.1.0.2"), ip("10.2.0.2"));
        let mut v = verifier();
        v.set_paths(1, &[a, b], ms(0));
        let limit = ms(30);
        // Both deliver at 10 ms; then only a, every 10 ms.
        for (seq, t) in [(1, 10), (2, 20), (3, 30), (4, 40)] {
            let hb = encode(1, seq, T0 + t * MS, &key(1));
            v.verify_from(&hb, Some(a), at(t)).expect("a");
            if t == 10 {
                v.verify_from(&hb, Some(b), at(t)).expect("b");
            }
        }
        assert_eq!(
            v.judge_paths(1, limit, ms(40)),
            (vec![], Some(ms(40) + Duration::from_micros(1)))
        );
        let (down, next) = v.judge_paths(1, limit, ms(41));
        assert_eq!(down, [PathChange { path: b, up: false }]);
        assert_eq!(
            next,
            Some(ms(70) + Duration::from_micros(1)),
            "a's silence is judged next"
        );
        assert!(matches!(
            v.liveness(1, limit, ms(41)),
            Some(Liveness::Live { .. })
        ));
        assert_eq!(
            v.paths(1),
            [
                PathChange { path: a, up: true },
                PathChange { path: b, up: false }
            ]
        );
        // Judged again, a path already down is not reported twice.
        assert_eq!(v.judge_paths(1, limit, ms(45)).0, []);
        // b's next copy brings it back.
        let hb = encode(1, 5, T0 + 50 * MS, &key(1));
        assert_eq!(v.verify_from(&hb, Some(a), at(50)).expect("a").path_up, None);
        assert_eq!(v.verify_from(&hb, Some(b), at(50)).expect("b").path_up, Some(b));
        // Paths set again keep their state; a new one counts from then.
        let c = ip("10.3.0.2");
        v.set_paths(1, &[b, c], ms(60));
        assert_eq!(
            v.paths(1),
            [PathChange { path: b, up: true }, PathChange { path: c, up: true }]
        );
        let (down, _) = v.judge_paths(1, limit, ms(85));
        assert_eq!(down, [PathChange { path: b, up: false }], "c was added at 60 ms");
        // An element with no paths has nothing to judge.
        assert_eq!(v.judge_paths(2, limit, ms(1_000)), (vec![], None));
    }

    #[test]
    fn registrations_persist_with_keys_as_hex_and_the_last_sequence() {
        let mut v = verifier();
        assert!(v.verify(&encode(2, 41, T0, &key(2)), at(0)).is_ok());
        let json = serde_json::to_string(&v.snapshot()).expect("serializes");
        assert_eq!(
            json,
            format!(
                "[{{\"id\":1,\"key\":\"{}\",\"last_seq\":null}},{{\"id\":2,\"key\":\"{}\",\"last_seq\":41}}]",
                "01".repeat(32),
                "02".repeat(32)
            )
        );
        let saved: Vec<Registration> = serde_json::from_str(&json).expect("deserializes");
        let mut restored = Verifier::restore(ms(500), saved, ms(1_000));
        assert_eq!(restored.snapshot(), v.snapshot());
        assert_eq!(restored.skew(), ms(500));
        // A heartbeat captured before the restart is still a replay after it.
        assert_eq!(
            restored.verify(&encode(2, 41, T0, &key(2)), at(1_000)),
            Err(Rejected::OldSequence)
        );
        assert!(
            restored
                .verify(&encode(2, 42, T0 + 1_000 * MS, &key(2)), at(1_000))
                .is_ok()
        );
        // Silence counts from the restore.
        assert_eq!(restored.liveness(1, ms(30), ms(1_020)), Some(Liveness::Pending));
        // last_seq may be left out; a bad key is an error.
        let r: Registration =
            serde_json::from_str(&format!("{{\"id\":3,\"key\":\"{}\"}}", "aB".repeat(32))).expect("parses");
        assert_eq!((r.key, r.last_seq), (Key::from_bytes([0xab; KEY_LEN]), None));
        for bad in [
            "\"abc\"",
            &format!("\"{}\"", "zz".repeat(32)),
            &format!("\"{}\"", "0".repeat(65)),
        ] {
            let error = serde_json::from_str::<Key>(bad).expect_err(bad).to_string();
            assert!(error.contains("64 hexadecimal digits; got"), "{error}");
            assert!(!error.contains("zz"), "the text is not repeated: {error}");
        }
    }

    #[test]
    fn generated_keys_differ_and_never_show_in_debug() {
        let a = Key::generate().expect("random");
        let b = Key::generate().expect("random");
        assert_ne!(a, b);
        assert_eq!(Key::from_hex(&a.to_hex()).expect("hex"), a);
        assert_eq!(format!("{a:?}"), "Key(..)");
        let v = Verifier::restore(
            DEFAULT_SKEW,
            [Registration {
                id: 1,
                key: a.clone(),
                last_seq: None,
            }],
            ms(0),
        );
        let shown = format!("{v:?} {:?}", Signer::new(1, &a));
        assert!(!shown.contains(&a.to_hex()[..8]), "{shown}");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2048, failure_persistence: None, ..ProptestConfig::default() })]

        /// Random datagrams of any length never panic and are never accepted, counted once each.
        #[test]
        fn random_bytes_are_never_accepted(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let mut v = verifier();
            prop_assert!(v.verify(&bytes, at(0)).is_err());
            prop_assert_eq!(v.counters().rejected_total(), 1);
        }

        /// Random tags on well-formed headers of registered elements with fresh timestamps.
        #[test]
        fn random_tags_are_never_accepted(
            id in 1_u64..=2,
            seq: u64,
            skew in 0..2_000_u64,
            tag: [u8; 32],
        ) {
            let mut v = verifier();
            let mut bytes = encode(id, seq, T0 + skew * MS - 1_000 * MS, &key(1));
            bytes[SIGNED..].copy_from_slice(&tag);
            prop_assert_eq!(v.verify(&bytes, at(0)), Err(Rejected::BadMac));
            prop_assert_eq!(v.liveness(id, ms(30), ms(0)), Some(Liveness::Pending));
        }
    }
}
