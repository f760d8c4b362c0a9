//! The flow-sync datagram: encoding, decoding and its HMAC-SHA256 tag. Pure.
//!
//! # Wire format (version 1)
//! One UDP datagram of at most [`MAX_DATAGRAM`] bytes; integers big-endian.
//!
//! | offset | size | field |
//! | ---: | ---: | --- |
//! | 0 | 4 | magic `b"VNFS"` |
//! | 4 | 1 | version, [`VERSION`] = 1 |
//! | 5 | 1 | kind: 1 = flow records, 2 = full-dump request (no records) |
//! | 6 | 2 | record count `n` (at most [`MAX_RECORDS`]) |
//! | 8 | 8 | sender node id |
//! | 16 | 8 | sender epoch: its wall clock at start, ns since the Unix epoch (grows across restarts) |
//! | 24 | 8 | sequence number, per sender and epoch, from 1 |
//! | 32 | 8 | send time: the sender's wall clock, ns since the Unix epoch (for the lag) |
//! | 40 | 16·n | records: hash (8), pool (2), element (2), exact bits (1), age (1), 0 (2) |
//! | 40 + 16·n | 32 | HMAC-SHA256 under the cluster key over bytes 0..40 + 16·n |
//!
//! A datagram whose length does not match its count, or with another magic, version or kind,
//! is rejected before any cryptography; the tag is compared in constant time.

use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::Sha256;
use vnfpool_common::flow::FlowEvent;

/// The magic at the start of every datagram.
pub const MAGIC: [u8; 4] = *b"VNFS";
/// The version this module writes and accepts.
pub const VERSION: u8 = 1;
/// Bytes before the records.
pub const HEADER: usize = 40;
/// Bytes of one record.
pub const RECORD: usize = 16;
/// Bytes of the tag.
pub const TAG: usize = 32;
/// Records in a full datagram: the largest count that keeps it within [`MAX_DATAGRAM`].
pub const MAX_RECORDS: usize = (MAX_DATAGRAM - HEADER - TAG) / RECORD;
/// Largest datagram: under a 1500-byte MTU with IPv6 and UDP headers and some room to spare.
pub const MAX_DATAGRAM: usize = 1400;

type HmacSha256 = Hmac<Sha256>;

/// What a datagram carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Flow records.
    Records = 1,
    /// "Send me your whole table".
    DumpRequest = 2,
}

/// The fields of a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    pub node: u64,
    pub epoch: u64,
    pub seq: u64,
    pub sent_ns: u64,
}

/// Why a datagram was rejected before its sender's replay window was looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// Shorter than a header and a tag, or not header + count records + tag.
    Length,
    /// Another magic or version.
    Version,
    /// A kind this version does not know, or records in a dump request.
    Kind,
    /// The tag does not verify under the cluster key.
    Tag,
}

/// The cluster key, ready to sign and verify.
#[derive(Clone)]
pub struct Key(HmacSha256);

impl Key {
    /// A key of any length (HMAC takes any; the cluster key is 32 random bytes).
    #[must_use]
    pub fn new(bytes: &[u8]) -> Self {
        Self(HmacSha256::new_from_slice(bytes).expect("HMAC takes keys of any length"))
    }

    /// A secret for another use, derived from this key and `label` (HMAC-SHA256 of the label,
    /// as HKDF's expand step for one block): it tells nothing of the key or of other labels.
    #[must_use]
    pub fn derive(&self, label: &[u8]) -> [u8; 32] {
        let mut mac = self.0.clone();
        mac.update(label);
        mac.finalize().into_bytes().into()
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

/// Appends the datagram for `header` and `records` to `out` (cleared first).
pub fn encode(key: &Key, header: &Header, records: &[FlowEvent], out: &mut Vec<u8>) {
    assert!(records.len() <= MAX_RECORDS, "at most {MAX_RECORDS} records");
    out.clear();
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(header.kind as u8);
    out.extend_from_slice(&(records.len() as u16).to_be_bytes());
    for v in [header.node, header.epoch, header.seq, header.sent_ns] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    for r in records {
        out.extend_from_slice(&r.hash.to_be_bytes());
        out.extend_from_slice(&r.pool.to_be_bytes());
        out.extend_from_slice(&r.element.to_be_bytes());
        out.extend_from_slice(&[r.exact_bits, r.age, 0, 0]);
    }
    let mut mac = key.0.clone();
    mac.update(out);
    let tag = mac.finalize().into_bytes();
    out.extend_from_slice(&tag);
}

/// Checks the shape and the tag of `bytes`; its header and records when both are right.
pub fn decode(key: &Key, bytes: &[u8], records: &mut Vec<FlowEvent>) -> Result<Header, Malformed> {
    records.clear();
    if bytes.len() < HEADER + TAG || bytes.len() > MAX_DATAGRAM {
        return Err(Malformed::Length);
    }
    if bytes[0..4] != MAGIC || bytes[4] != VERSION {
        return Err(Malformed::Version);
    }
    let count = usize::from(u16::from_be_bytes([bytes[6], bytes[7]]));
    if bytes.len() != HEADER + count * RECORD + TAG {
        return Err(Malformed::Length);
    }
    let kind = match bytes[5] {
        1 => Kind::Records,
        2 if count == 0 => Kind::DumpRequest,
        _ => return Err(Malformed::Kind),
    };
    let signed = bytes.len() - TAG;
    let mut mac = key.0.clone();
    mac.update(&bytes[..signed]);
    // Constant time: `verify_slice` compares with `subtle`.
    mac.verify_slice(&bytes[signed..]).map_err(|_| Malformed::Tag)?;
    let u64_at = |at: usize| u64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    let header = Header {
        kind,
        node: u64_at(8),
        epoch: u64_at(16),
        seq: u64_at(24),
        sent_ns: u64_at(32),
    };
    records.extend(bytes[HEADER..signed].chunks_exact(RECORD).map(|r| FlowEvent {
        hash: u64::from_be_bytes(r[0..8].try_into().expect("8 bytes")),
        pool: u16::from_be_bytes([r[8], r[9]]),
        element: u16::from_be_bytes([r[10], r[11]]),
        exact_bits: r[12],
        age: r[13],
        _pad: [0; 2],
    }));
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> Key {
        Key::new(&[n; 32])
    }

    fn header(seq: u64) -> Header {
        Header {
            kind: Kind::Records,
            node: 7,
            epoch: 1_700_000_000_000_000_000,
            seq,
            sent_ns: 1_700_000_000_000_000_123,
        }
    }

    fn record(n: u16) -> FlowEvent {
        FlowEvent {
            hash: 0x0123_4567_89ab_cdef ^ u64::from(n),
            pool: n % 128,
            element: n % 1024,
            exact_bits: 64,
            age: (n % 3) as u8,
            _pad: [0; 2],
        }
    }

    #[test]
    fn a_full_datagram_fits_and_round_trips() {
        assert_eq!(MAX_RECORDS, 83);
        let records: Vec<FlowEvent> = (0..MAX_RECORDS as u16).map(record).collect();
        let mut out = Vec::new();
        encode(&key(1), &header(5), &records, &mut out);
        assert_eq!(out.len(), HEADER + MAX_RECORDS * RECORD + TAG);
        assert!(out.len() <= MAX_DATAGRAM);
        let mut back = Vec::new();
        assert_eq!(decode(&key(1), &out, &mut back), Ok(header(5)));
        assert_eq!(back, records);
    }

    #[test]
    fn layout_is_as_documented() {
        let mut out = Vec::new();
        encode(&key(1), &header(0x0102), &[record(1)], &mut out);
        assert_eq!(&out[0..8], b"VNFS\x01\x01\x00\x01");
        assert_eq!(out[8..16], 7u64.to_be_bytes());
        assert_eq!(out[24..32], 0x0102u64.to_be_bytes());
        assert_eq!(out[40..48], record(1).hash.to_be_bytes());
        assert_eq!(out[48..56], [0, 1, 0, 1, 64, 1, 0, 0]);
        let tag = {
            let mut mac = HmacSha256::new_from_slice(&[1; 32]).expect("key");
            mac.update(&out[..56]);
            mac.finalize().into_bytes()
        };
        assert_eq!(
            out[56..],
            tag[..],
            "standard HMAC-SHA256 over everything before it"
        );
    }

    #[test]
    fn a_dump_request_has_no_records() {
        let mut out = Vec::new();
        let h = Header {
            kind: Kind::DumpRequest,
            ..header(9)
        };
        encode(&key(1), &h, &[], &mut out);
        assert_eq!(decode(&key(1), &out, &mut Vec::new()), Ok(h));
    }

    #[test]
    fn every_flipped_bit_is_rejected() {
        let mut good = Vec::new();
        encode(&key(1), &header(5), &[record(1), record(2)], &mut good);
        for bit in 0..good.len() * 8 {
            let mut bad = good.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            let mut records = vec![record(9)];
            assert!(
                decode(&key(1), &bad, &mut records).is_err(),
                "bit {bit} flipped was accepted"
            );
            assert!(records.is_empty(), "nothing of a rejected datagram is returned");
        }
    }

    #[test]
    fn each_malformation_has_its_reason() {
        let mut good = Vec::new();
        encode(&key(1), &header(5), &[record(1)], &mut good);
        let mut bad_count = good.clone();
        bad_count[7] = 2;
        let mut bad_kind = good.clone();
        bad_kind[5] = 3;
        let mut bad_version = good.clone();
        bad_version[4] = 2;
        let mut records_in_request = good.clone();
        records_in_request[5] = Kind::DumpRequest as u8;
        for (what, bytes, want) in [
            ("wrong key", good.clone(), Malformed::Tag),
            ("truncated", good[..good.len() - 1].to_vec(), Malformed::Length),
            ("empty", Vec::new(), Malformed::Length),
            ("count beyond the bytes", bad_count, Malformed::Length),
            ("unknown kind", bad_kind, Malformed::Kind),
            ("records in a dump request", records_in_request, Malformed::Kind),
            ("other version", bad_version, Malformed::Version),
            ("too long", vec![0; MAX_DATAGRAM + 1], Malformed::Length),
        ] {
            let k = if what == "wrong key" { key(2) } else { key(1) };
            assert_eq!(decode(&k, &bytes, &mut Vec::new()), Err(want), "{what}");
        }
    }
}
