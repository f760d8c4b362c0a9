//! The XDP program's packet parser (`vnfpool-ebpf/src/parse.rs`, the very file the BPF build
//! compiles) run over arbitrary frames on the host.
//!
//! AddressSanitizer catches any read outside the frame (libFuzzer hands each input in an
//! allocation of exactly its size). Beyond that, for every result that steers a packet:
//! - the addresses, protocol, ports and TCP flags are the frame's own bytes at the offsets
//!   the headers give (checked here by a separate, simpler reading of the same headers);
//! - the IP packet lies inside the frame, and the result depends on the IP packet alone: cut
//!   at the IP packet's end (into an allocation of that size, so that ASan sees a read past
//!   it) or padded with bytes after it, the frame parses the same. For TCP and UDP this is
//!   "the L4 header lies within the IP length". ICMP errors and IPv6 fragments are checked
//!   for padding only (see below).
#![no_main]

#[allow(dead_code, reason = "the BPF program's module; the fuzz target uses part of it")]
#[path = "../../vnfpool-ebpf/src/parse.rs"]
mod parse;

use libfuzzer_sys::fuzz_target;
use parse::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, Packet, Parsed, Stop, Tuple};
use vnfpool_common::addr::{self, Addr};

fuzz_target!(|frame: &[u8]| check(frame));

/// A parse result in a form that can be compared: what, addresses, ports, protocol, flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    L4(Fields),
    Fragment(Fields),
    IcmpError(Fields),
    NotOurs,
    Malformed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fields {
    src: Addr,
    dst: Addr,
    sport: [u8; 2],
    dport: [u8; 2],
    proto: u8,
    tcp_flags: u8,
}

impl From<&Tuple> for Fields {
    fn from(t: &Tuple) -> Self {
        Self {
            src: t.src,
            dst: t.dst,
            // The parser keeps ports as read, in network order.
            sport: t.sport_be.to_ne_bytes(),
            dport: t.dport_be.to_ne_bytes(),
            proto: t.proto,
            tcp_flags: t.tcp_flags,
        }
    }
}

fn parse(frame: &[u8]) -> Outcome {
    Packet::with_frame(frame, |pkt| match parse::parse(pkt) {
        Ok(Parsed::L4(t)) => Outcome::L4(Fields::from(&t)),
        Ok(Parsed::Fragment(t)) => Outcome::Fragment(Fields::from(&t)),
        Ok(Parsed::IcmpError(t)) => Outcome::IcmpError(Fields::from(&t)),
        Err(Stop::NotOurs) => Outcome::NotOurs,
        Err(Stop::Malformed) => Outcome::Malformed,
    })
}

/// Where the IP header starts (after up to two VLAN tags) and the ethertype there, read
/// independently of the parser.
fn l3(frame: &[u8]) -> Option<(usize, u16)> {
    let be16 = |at: usize| Some(u16::from_be_bytes(frame.get(at..at + 2)?.try_into().ok()?));
    let mut ethertype = be16(12)?;
    let mut l3 = 14;
    for _ in 0..2 {
        if ethertype != 0x8100 && ethertype != 0x88A8 {
            break;
        }
        ethertype = be16(l3 + 2)?;
        l3 += 4;
    }
    Some((l3, ethertype))
}

fn check(frame: &[u8]) {
    let outcome = parse(frame);
    let fields = match outcome {
        Outcome::L4(f) | Outcome::Fragment(f) | Outcome::IcmpError(f) => f,
        Outcome::NotOurs | Outcome::Malformed => return,
    };
    let (l3, ethertype) = l3(frame).expect("a steering result from a frame with no Ethernet header");
    let bytes = |at: usize, n: usize| &frame[at..at + n];
    let ip_end = match ethertype {
        0x0800 => {
            let ihl = usize::from(frame[l3] & 0x0f) * 4;
            assert_eq!(frame[l3] >> 4, 4, "IPv4 result from a header of another version");
            assert!(ihl >= 20);
            let ip_end = l3 + usize::from(u16::from_be_bytes([frame[l3 + 2], frame[l3 + 3]]));
            assert!(ip_end <= frame.len(), "IPv4 packet longer than the frame");
            let proto = frame[l3 + 9];
            match outcome {
                Outcome::L4(_) | Outcome::Fragment(_) => {
                    assert_eq!(fields.src, addr::from_v4(bytes(l3 + 12, 4).try_into().unwrap()));
                    assert_eq!(fields.dst, addr::from_v4(bytes(l3 + 16, 4).try_into().unwrap()));
                    assert_eq!(fields.proto, proto);
                }
                _ => assert_eq!(proto, IPPROTO_ICMP),
            }
            if let Outcome::L4(f) = outcome {
                ports_at(frame, l3 + ihl, ip_end, &f);
            }
            ip_end
        }
        0x86DD => {
            assert_eq!(frame[l3] >> 4, 6, "IPv6 result from a header of another version");
            let payload = usize::from(u16::from_be_bytes([frame[l3 + 4], frame[l3 + 5]]));
            let ip_end = l3 + 40 + payload;
            assert!(ip_end <= frame.len(), "IPv6 packet longer than the frame");
            let next = frame[l3 + 6];
            if !matches!(outcome, Outcome::IcmpError(_)) {
                assert_eq!(fields.src, addr::from_v6(bytes(l3 + 8, 16).try_into().unwrap()));
                assert_eq!(fields.dst, addr::from_v6(bytes(l3 + 24, 16).try_into().unwrap()));
            }
            // Extension headers are skipped by the parser only; with none, the L4 header
            // follows the fixed header.
            if let Outcome::L4(f) = outcome
                && (next == IPPROTO_TCP || next == IPPROTO_UDP)
            {
                assert_eq!(f.proto, next);
                ports_at(frame, l3 + 40, ip_end, &f);
            }
            if matches!(outcome, Outcome::IcmpError(_)) && next == IPPROTO_ICMPV6 {
                assert!((1..=4).contains(&frame[l3 + 40]), "ICMPv6 type {} is no error", frame[l3 + 40]);
            }
            ip_end
        }
        other => panic!("a steering result for ethertype {other:#06x}"),
    };
    assert!(
        fields.proto == IPPROTO_TCP || fields.proto == IPPROTO_UDP,
        "steering result for protocol {}",
        fields.proto
    );

    // Bytes after the IP packet (Ethernet padding, or a forged tail) change nothing.
    let mut padded = frame.to_vec();
    padded.extend_from_slice(&[0xa5; 64]);
    assert_eq!(parse(&padded), outcome, "bytes after the frame changed the result");
    // Nor do bytes after the IP packet: every header read lies inside it.
    let cut = frame[..ip_end].to_vec();
    assert_eq!(parse(&cut), outcome, "bytes after the IP packet (at {ip_end}) changed the result");
}

/// The ports (and TCP flags) of `f` are those of the TCP or UDP header at `l4`, which lies
/// within the IP packet.
fn ports_at(frame: &[u8], l4: usize, ip_end: usize, f: &Fields) {
    assert!(l4 + 8 <= ip_end, "L4 header at {l4} past the IP packet's end {ip_end}");
    assert_eq!(f.sport, [frame[l4], frame[l4 + 1]]);
    assert_eq!(f.dport, [frame[l4 + 2], frame[l4 + 3]]);
    if f.proto == IPPROTO_TCP {
        let doff = usize::from(frame[l4 + 12] >> 4) * 4;
        assert!(doff >= 20 && l4 + doff <= ip_end, "TCP header past the IP packet");
        assert_eq!(f.tcp_flags, frame[l4 + 13]);
    } else {
        let len = usize::from(u16::from_be_bytes([frame[l4 + 4], frame[l4 + 5]]));
        assert!(len >= 8 && l4 + len <= ip_end, "UDP length past the IP packet");
        assert_eq!(f.tcp_flags, 0);
    }
}
