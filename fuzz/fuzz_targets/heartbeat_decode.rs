//! The heartbeat receiver's decoder and verifier (`vnfpool_daemon::heartbeat::Verifier`) on
//! arbitrary datagrams, against a model written here from the wire format's documentation.
//!
//! Input: one flags byte, the receiver's wall clock (8 bytes), the clock skew and the miss
//! limit (4 bytes each, in microseconds), then datagrams, each a length byte (0..=79) and
//! that many bytes. With flag 1, every datagram of the right length and version whose id is
//! registered is signed again with that element's key before it is handed over, so that
//! inputs reach the checks behind the MAC (sequence, time window). Registered: ids 1, 2 and
//! `u64::MAX`, each with its own key.
//!
//! Checked: every verdict equals the model's, counters add up, and a key survives hex.
#![no_main]

use std::{collections::HashMap, time::Duration};

use libfuzzer_sys::fuzz_target;
use vnfpool_daemon::heartbeat::{self, Accepted, Clocks, Key, Rejected, Verifier};

const IDS: [u64; 3] = [1, 2, u64::MAX];

fn key(id: u64) -> Key {
    let mut bytes = [0; heartbeat::KEY_LEN];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = (id as u8).wrapping_mul(31).wrapping_add(i as u8);
    }
    Key::from_bytes(bytes)
}

fuzz_target!(|data: &[u8]| {
    let Some((head, mut rest)) = data.split_first_chunk::<17>() else {
        return;
    };
    let resign = head[0] & 1 == 1;
    let wall = u64::from_be_bytes(head[1..9].try_into().unwrap());
    let skew = Duration::from_micros(u32::from_be_bytes(head[9..13].try_into().unwrap()).into());
    let miss = Duration::from_micros(u32::from_be_bytes(head[13..17].try_into().unwrap()).into());

    let mut verifier = Verifier::new(skew);
    let keys: HashMap<u64, Key> = IDS.iter().map(|&id| (id, key(id))).collect();
    for (&id, k) in &keys {
        assert!(!verifier.register(id, k.clone(), Duration::ZERO));
        assert!(verifier.set_miss_limit(id, miss));
    }
    let mut last: HashMap<u64, u64> = HashMap::new();
    let mut calls = 0u64;
    let mono = Duration::from_millis(5);

    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len % 80).min(tail.len());
        let (datagram, tail) = tail.split_at(len);
        rest = tail;
        let mut datagram = datagram.to_vec();
        if resign && datagram.len() == heartbeat::LEN && datagram[0] == heartbeat::VERSION {
            let (id, seq, ts) = fields(&datagram);
            if let Some(k) = keys.get(&id) {
                datagram = heartbeat::encode(id, seq, ts, k).to_vec();
            }
        }

        let expected = model(&datagram, &keys, &last, wall, skew, miss);
        let got = verifier.verify(&datagram, Clocks { wall, mono });
        calls += 1;
        assert_eq!(got, expected, "datagram {datagram:02x?}");
        if let Ok(a) = got {
            last.insert(a.id, a.seq);
            assert_eq!(verifier.last_seq(a.id), Some(a.seq));
        }
    }

    let counters = verifier.counters();
    assert_eq!(counters.accepted + counters.rejected_total(), calls);

    // Keys travel as hex (registration answers, the state file).
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(k) = Key::from_hex(text)
    {
        assert_eq!(k.to_hex(), text.to_ascii_lowercase());
        assert_eq!(Key::from_hex(&k.to_hex()).unwrap(), k);
    }
});

fn fields(d: &[u8]) -> (u64, u64, u64) {
    let word = |at: usize| u64::from_be_bytes(d[at..at + 8].try_into().unwrap());
    (word(1), word(9), word(17))
}

/// The verdict the module documentation promises: length, version, element, MAC, sequence,
/// window, in that order.
fn model(
    d: &[u8],
    keys: &HashMap<u64, Key>,
    last: &HashMap<u64, u64>,
    wall: u64,
    skew: Duration,
    miss: Duration,
) -> Result<Accepted, Rejected> {
    if d.len() != heartbeat::LEN {
        return Err(Rejected::Malformed);
    }
    if d[0] != heartbeat::VERSION {
        return Err(Rejected::BadVersion);
    }
    let (id, seq, timestamp) = fields(d);
    let k = keys.get(&id).ok_or(Rejected::UnknownElement)?;
    if heartbeat::encode(id, seq, timestamp, k)[..] != d[..] {
        return Err(Rejected::BadMac);
    }
    if last.get(&id).is_some_and(|&l| seq <= l) {
        return Err(Rejected::OldSequence);
    }
    let (skew, miss) = (skew.as_nanos(), miss.as_nanos());
    let (wall, ts) = (u128::from(wall), u128::from(timestamp));
    if ts + miss + skew < wall || ts > wall + skew {
        return Err(Rejected::OutsideWindow);
    }
    // Datagrams come without a source address here: no path, so never a copy over one.
    Ok(Accepted {
        id,
        seq,
        timestamp,
        duplicate: false,
        path_up: None,
    })
}
