//! Packet fixtures run through BPF_PROG_TEST_RUN: for each case a map state, the input frame,
//! the expected verdict and the exact expected output frame.
//!
//! BPF_PROG_TEST_RUN runs the program as if the frame arrived on the loopback device
//! (ifindex 1), so an element whose egress is ifindex 1 gets `XDP_TX`.

use std::net::IpAddr;

use vnfpool_common::{
    addr,
    element::{Element, STATE_DOWN, STATE_DRAINING, STATE_UP},
    flow::{self, FlowEvent, FlowKey},
    maps, ring,
    stats::Reason,
    vip::{PROTO_TCP, PROTO_UDP},
};
use vnfpool_daemon::dataplane::{FlowEvents, FlowTable as _, LoadOptions, Mapping};
use vnfpool_tests::{
    harness::{Harness, Run, verdict_name},
    packet::{Frame, HOST_MAC, L4, hex, ip_packet, with_macs},
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const LOOPBACK: u32 = 1;

const VIP4: &str = "10.10.0.100";
const VIP6: &str = "fd00:10::100";
const CLIENT4: &str = "10.0.0.2";
const CLIENT6: &str = "fd00:1::2";
const TCP_PORT: u16 = 8080;
const UDP_PORT: u16 = 5353;
/// Pools of the fixtures: 0 = VIP4:8080/tcp, 1 = VIP4:5353/udp, 2 = VIP6:8080/tcp, 3 = VIP6:5353/udp.
const POOLS: [(&str, u16, u8); 4] = [
    (VIP4, TCP_PORT, PROTO_TCP),
    (VIP4, UDP_PORT, PROTO_UDP),
    (VIP6, TCP_PORT, PROTO_TCP),
    (VIP6, UDP_PORT, PROTO_UDP),
];
/// The smallest table size the Maglev builder allows; the fixtures fill it by hand.
const RING: usize = 251;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

fn mac(n: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, 0xe0, n]
}

fn element(n: u8, state: u32) -> Element {
    Element {
        ifindex: LOOPBACK,
        state,
        dst_mac: mac(n),
        src_mac: HOST_MAC,
        encap: 0,
        _pad: [0; 3],
    }
}

/// Every position of the table names `idx`.
fn all_to(idx: u16) -> Vec<u16> {
    vec![idx; RING]
}

/// Makes `elements` the elements of `pool`, with every new flow to element `to`.
fn map_all_to(h: &mut Harness, pool: u32, to: u16, elements: Vec<Element>) {
    let m = Mapping {
        ring: all_to(to),
        elements,
        tunnels: Vec::new(),
    };
    h.dp.apply(pool, &m).expect("apply");
}

/// The four pools, each with elements 0 and 1 up and every new flow to element 0.
fn provision(h: &mut Harness) {
    for (pool, (vip, port, proto)) in (0u32..).zip(POOLS) {
        h.dp.add_vip(pool, addr::from_ip(ip(vip)), port, proto)
            .expect("add vip");
        map_all_to(h, pool, 0, vec![element(0, STATE_UP), element(1, STATE_UP)]);
    }
}

/// The flow-table key of `tcp4(sport)`.
fn tcp4_key(sport: u16) -> FlowKey {
    FlowKey {
        src: addr::from_ip(ip(CLIENT4)),
        sport_be: sport.to_be(),
        dport_be: TCP_PORT.to_be(),
        pool: 0,
        proto: PROTO_TCP,
        _pad: 0,
    }
}

fn tcp4(sport: u16) -> Frame {
    Frame::new(
        ip(CLIENT4),
        ip(VIP4),
        L4::Tcp {
            sport,
            dport: TCP_PORT,
        },
    )
}
fn udp4(sport: u16) -> Frame {
    Frame::new(
        ip(CLIENT4),
        ip(VIP4),
        L4::Udp {
            sport,
            dport: UDP_PORT,
        },
    )
}
fn tcp6(sport: u16) -> Frame {
    Frame::new(
        ip(CLIENT6),
        ip(VIP6),
        L4::Tcp {
            sport,
            dport: TCP_PORT,
        },
    )
}
fn udp6(sport: u16) -> Frame {
    Frame::new(
        ip(CLIENT6),
        ip(VIP6),
        L4::Udp {
            sport,
            dport: UDP_PORT,
        },
    )
}

fn arp() -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&mac(0xc1));
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&mac(0xc1));
    f.extend_from_slice(&[10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 10, 10, 0, 100]);
    f
}

/// What a fixture expects.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// `XDP_PASS`, frame unmodified.
    Pass,
    /// `XDP_TX` to fixture element `n`: MACs rewritten, nothing else changed.
    Tx(u8),
    /// `XDP_DROP`, counted under the reason, frame unmodified.
    Drop(Reason),
    /// `XDP_PASS`, frame unmodified, counted as malformed: the kernel drops or answers it.
    Malformed,
}

struct Case {
    what: &'static str,
    frame: Vec<u8>,
    want: Want,
}

fn case(what: &'static str, frame: Vec<u8>, want: Want) -> Case {
    Case { what, frame, want }
}

#[track_caller]
fn check(h: &mut Harness, c: &Case) -> Run {
    let counted = match c.want {
        Want::Drop(reason) => Some(reason),
        Want::Malformed => Some(Reason::Malformed),
        Want::Pass | Want::Tx(_) => None,
    };
    let before = counted.map_or(0, |reason| h.reason_packets(reason));
    let r = h.run(&c.frame);
    let (verdict, frame) = match c.want {
        Want::Pass | Want::Malformed => (XDP_PASS, c.frame.clone()),
        Want::Tx(n) => (XDP_TX, with_macs(&c.frame, mac(n), HOST_MAC)),
        Want::Drop(_) => (XDP_DROP, c.frame.clone()),
    };
    assert!(
        r.verdict == verdict && r.frame == frame,
        "{}: got {} want {}\nin:\n{}\ngot:\n{}\nwant:\n{}",
        c.what,
        verdict_name(r.verdict),
        verdict_name(verdict),
        hex(&c.frame),
        hex(&r.frame),
        hex(&frame)
    );
    if let Some(reason) = counted {
        assert_eq!(
            h.reason_packets(reason),
            before + 1,
            "{}: counted under {}",
            c.what,
            reason.name()
        );
    }
    r
}

#[test]
fn fixtures() {
    let mut h = Harness::new();
    provision(&mut h);

    let vlan = |mut f: Frame, tags: &[u16]| {
        f.vlans = tags.to_vec();
        f.build()
    };
    let frag = |mut f: Frame| {
        f.fragment = true;
        f.build()
    };
    let mut v4opts = tcp4(1001);
    v4opts.ipv4_options = 3;
    let mut v6ext = udp6(1002);
    v6ext.ipv6_ext = 2;
    let mut v6ext_many = udp6(1003);
    v6ext_many.ipv6_ext = 5;

    let cases = vec![
        // Not for a VIP: passed, untouched.
        case(
            "non-VIP IPv4 TCP",
            Frame::new(
                ip(CLIENT4),
                ip("10.10.0.101"),
                L4::Tcp {
                    sport: 1,
                    dport: TCP_PORT,
                },
            )
            .build(),
            Want::Pass,
        ),
        case(
            "non-VIP IPv6 UDP",
            Frame::new(
                ip(CLIENT6),
                ip("fd00:10::101"),
                L4::Udp {
                    sport: 1,
                    dport: UDP_PORT,
                },
            )
            .build(),
            Want::Pass,
        ),
        case("ARP", arp(), Want::Pass),
        case(
            "VIP address, other port",
            Frame::new(
                ip(CLIENT4),
                ip(VIP4),
                L4::Tcp {
                    sport: 1,
                    dport: 8081,
                },
            )
            .build(),
            Want::Pass,
        ),
        case(
            "VIP address and port, other protocol",
            Frame::new(
                ip(CLIENT4),
                ip(VIP4),
                L4::Udp {
                    sport: 1,
                    dport: TCP_PORT,
                },
            )
            .build(),
            Want::Pass,
        ),
        case(
            "VIP address, port 0 (address entry only)",
            Frame::new(ip(CLIENT4), ip(VIP4), L4::Tcp { sport: 1, dport: 0 }).build(),
            Want::Pass,
        ),
        case(
            "three VLAN tags (more than parsed)",
            vlan(tcp4(1), &[1, 2, 3]),
            Want::Pass,
        ),
        case(
            "IPv6 with more extension headers than skipped",
            v6ext_many.build(),
            Want::Pass,
        ),
        // VIP traffic: MACs rewritten, sent back out (element behind the ingress interface).
        case("VIP IPv4 TCP", tcp4(2000).build(), Want::Tx(0)),
        case("VIP IPv4 UDP", udp4(2000).build(), Want::Tx(0)),
        case("VIP IPv6 TCP", tcp6(2000).build(), Want::Tx(0)),
        case("VIP IPv6 UDP", udp6(2000).build(), Want::Tx(0)),
        case("VIP behind one VLAN tag", vlan(tcp4(2001), &[100]), Want::Tx(0)),
        case("VIP behind QinQ", vlan(udp6(2001), &[10, 100]), Want::Tx(0)),
        case("VIP IPv4 with options", v4opts.build(), Want::Tx(0)),
        case("VIP IPv6 with two extension headers", v6ext.build(), Want::Tx(0)),
        // Fragments: no port to steer by; dropped when addressed to a VIP, else passed.
        case(
            "IPv4 fragment to a VIP",
            frag(tcp4(3000)),
            Want::Drop(Reason::Fragment),
        ),
        case(
            "IPv6 fragment to a VIP",
            frag(udp6(3000)),
            Want::Drop(Reason::Fragment),
        ),
        case(
            "IPv4 fragment to another host",
            frag(Frame::new(
                ip(CLIENT4),
                ip("10.10.0.9"),
                L4::Udp { sport: 1, dport: 2 },
            )),
            Want::Pass,
        ),
        // ICMP that is not an error is not VIP:port traffic.
        case("ICMP echo to a VIP", icmp4_echo(), Want::Pass),
    ];
    for c in &cases {
        check(&mut h, c);
    }
}

/// Offsets in the fixtures' untagged frames.
const L3: usize = 14;
const L4_V4: usize = L3 + 20;
const L4_V6: usize = L3 + 40;

/// `frame` with the big-endian 16-bit field at `at` set to `value`.
fn set16(mut frame: Vec<u8>, at: usize, value: u16) -> Vec<u8> {
    frame[at..at + 2].copy_from_slice(&value.to_be_bytes());
    frame
}

/// `frame` with the byte at `at` set to `value`.
fn set8(mut frame: Vec<u8>, at: usize, value: u8) -> Vec<u8> {
    frame[at] = value;
    frame
}

/// VIP frames whose lengths disagree with each other are not steered: what an element's stack
/// would drop is left to this host's (the kernel drops it, or answers it), and counted. Each
/// frame stays whole within the Ethernet frame, so only the IP and L4 lengths tell them apart
/// from good ones; each good original is steered (checked first).
#[test]
fn frames_whose_lengths_disagree_are_not_steered() {
    let mut h = Harness::new();
    provision(&mut h);
    let with_ext = |f: Frame, n| {
        let mut f = f;
        f.ipv6_ext = n;
        f.build()
    };
    let udp6_ext = with_ext(udp6(4001), 1);
    let udp6_ext2 = with_ext(udp6(4002), 2);
    let mut udp6_fragment = udp6(3000);
    udp6_fragment.fragment = true;
    let udp6_fragment = udp6_fragment.build();
    let tcp4 = tcp4(4000).build();
    let udp4 = udp4(4000).build();
    let tcp6 = tcp6(4000).build();
    let udp6 = udp6(4000).build();
    for (what, good) in [
        ("IPv4 TCP", &tcp4),
        ("IPv4 UDP", &udp4),
        ("IPv6 TCP", &tcp6),
        ("IPv6 UDP", &udp6),
        ("IPv6 UDP behind one extension header", &udp6_ext),
        ("IPv6 UDP behind two extension headers", &udp6_ext2),
    ] {
        check(&mut h, &case(what, good.clone(), Want::Tx(0)));
    }
    // The TCP segments are 27 bytes (20 of header, 7 of payload), the UDP datagrams 15.
    let ipv4_total = |f: &Vec<u8>, l4: usize| set16(f.clone(), L3 + 2, (20 + l4) as u16);
    let ipv6_payload = |f: &Vec<u8>, n: u16| set16(f.clone(), L3 + 4, n);
    // Hop-by-hop options (next header 0) in the second extension header.
    let hop_by_hop_second = set8(udp6_ext2.clone(), L4_V6, 0);
    let cases = vec![
        case(
            "IPv4 total length cuts the TCP header",
            ipv4_total(&tcp4, 12),
            Want::Malformed,
        ),
        case(
            "IPv4 total length cuts the UDP header",
            ipv4_total(&udp4, 6),
            Want::Malformed,
        ),
        case(
            "IPv6 payload length cuts the TCP header",
            ipv6_payload(&tcp6, 19),
            Want::Malformed,
        ),
        case(
            "IPv6 payload length cuts the UDP header",
            ipv6_payload(&udp6, 7),
            Want::Malformed,
        ),
        case(
            "IPv6 payload length 0 (jumbogram)",
            ipv6_payload(&tcp6, 0),
            Want::Malformed,
        ),
        case(
            "TCP data offset 4",
            set8(tcp4.clone(), L4_V4 + 12, 0x40),
            Want::Malformed,
        ),
        case(
            "TCP data offset 0",
            set8(tcp6.clone(), L4_V6 + 12, 0x00),
            Want::Malformed,
        ),
        case(
            "TCP data offset 7 (28 bytes) in a 27-byte segment",
            set8(tcp4.clone(), L4_V4 + 12, 0x70),
            Want::Malformed,
        ),
        case("UDP length 7", set16(udp4.clone(), L4_V4 + 4, 7), Want::Malformed),
        case("UDP length 0", set16(udp6.clone(), L4_V6 + 4, 0), Want::Malformed),
        case(
            "UDP length 16 in a 15-byte datagram",
            set16(udp4.clone(), L4_V4 + 4, 16),
            Want::Malformed,
        ),
        case(
            "IPv6 extension header longer than the payload",
            ipv6_payload(&udp6_ext, 4),
            Want::Malformed,
        ),
        case(
            "IPv6 payload ends with the extension header",
            ipv6_payload(&udp6_ext, 8),
            Want::Malformed,
        ),
        case(
            "IPv6 hop-by-hop options not first",
            hop_by_hop_second,
            Want::Malformed,
        ),
        // Found by fuzzing the parser: headers read against the frame's end, not the IP
        // packet's. An ICMP error quoting 20 + 8 (IPv4) or 40 + 8 (IPv6) bytes whose outer
        // length ends two bytes into the quoted ports; an IPv6 fragment header cut at 4 bytes.
        case(
            "IPv4 total length cuts the ICMP error's quoted ports",
            set16(icmp_error_about(false, 4000, 3), L3 + 2, 20 + 8 + 20 + 2),
            Want::Malformed,
        ),
        case(
            "IPv6 payload length cuts the ICMPv6 error's quoted ports",
            ipv6_payload(&icmp_error_about(true, 4000, 1), 8 + 40 + 2),
            Want::Malformed,
        ),
        case(
            "IPv6 payload length cuts the fragment header",
            ipv6_payload(&udp6_fragment, 4),
            Want::Malformed,
        ),
    ];
    for c in &cases {
        check(&mut h, c);
    }
}

/// Bytes past the lengths are not part of the packet, and are accepted: Ethernet padding after
/// the IP packet, a UDP datagram shorter than the IP payload (the kernel trims both).
#[test]
fn bytes_past_the_lengths_are_accepted() {
    let mut h = Harness::new();
    provision(&mut h);
    let tcp4 = tcp4(4000).build();
    let udp4 = udp4(4000).build();
    let cases = vec![
        // A shorter UDP length than the IP payload is trailing data, which the kernel trims.
        case(
            "UDP length 14 in a 15-byte datagram",
            set16(udp4.clone(), L4_V4 + 4, 14),
            Want::Tx(0),
        ),
        // Ethernet padding after the IP packet is not part of it.
        case(
            "IPv4 TCP with Ethernet padding",
            [tcp4.clone(), vec![0; 6]].concat(),
            Want::Tx(0),
        ),
    ];
    for c in &cases {
        check(&mut h, c);
    }
}

/// `frame` (built by `tcp4`/`tcp6`, SYN set) with TCP flags `flags` instead.
fn with_tcp_flags(frame: Vec<u8>, v6: bool, flags: u8) -> Vec<u8> {
    set8(frame, if v6 { L4_V6 } else { L4_V4 } + 13, flags)
}

const ACK: u8 = 0x10;
const SYN_ACK: u8 = 0x12;

/// A TCP flow gets an entry on its SYN only: a mid-stream packet the table does not know goes
/// where the Maglev table says without being recorded, so it follows the table; UDP has no SYN
/// and records on any packet; a recorded flow whose element went away is recorded again on any
/// packet (so that it does not go back when the element returns).
#[test]
fn tcp_flows_are_recorded_on_their_syn_only() {
    let mut h = Harness::new();
    provision(&mut h);
    let before = h.reason_packets(Reason::FlowNotRecorded);
    for (what, frame) in [
        ("ACK", with_tcp_flags(tcp4(6000).build(), false, ACK)),
        ("SYN+ACK", with_tcp_flags(tcp4(6001).build(), false, SYN_ACK)),
        ("IPv6 ACK", with_tcp_flags(tcp6(6002).build(), true, ACK)),
    ] {
        check(&mut h, &case(what, frame, Want::Tx(0)));
    }
    assert_eq!(h.reason_packets(Reason::FlowNotRecorded), before + 3);
    assert_eq!(
        h.dp.flow(&tcp4_key(6000)).expect("lookup"),
        None,
        "an ACK records nothing"
    );
    assert_eq!(
        h.dp.flow(&tcp4_key(6001)).expect("lookup"),
        None,
        "nor does a SYN+ACK"
    );
    check(&mut h, &case("SYN", tcp4(6003).build(), Want::Tx(0)));
    assert_eq!(
        h.dp.flow(&tcp4_key(6003)).expect("lookup"),
        Some(0),
        "a SYN records"
    );
    check(&mut h, &case("UDP", udp4(6004).build(), Want::Tx(0)));

    // New flows now go to element 1: the recorded ones stay, the unrecorded one follows.
    map_all_to(&mut h, 0, 1, vec![element(0, STATE_UP), element(1, STATE_UP)]);
    map_all_to(&mut h, 1, 1, vec![element(0, STATE_UP), element(1, STATE_UP)]);
    let ack = |sport| with_tcp_flags(tcp4(sport).build(), false, ACK);
    check(&mut h, &case("recorded by its SYN", ack(6003), Want::Tx(0)));
    check(&mut h, &case("UDP recorded", udp4(6004).build(), Want::Tx(0)));
    check(
        &mut h,
        &case("never recorded: follows the table", ack(6000), Want::Tx(1)),
    );

    // Element 0 goes down: its flow is re-picked on a plain ACK and recorded to element 1, so
    // that it stays there when element 0 comes back.
    map_all_to(&mut h, 0, 1, vec![element(0, STATE_DOWN), element(1, STATE_UP)]);
    check(&mut h, &case("re-picked", ack(6003), Want::Tx(1)));
    assert_eq!(h.dp.flow(&tcp4_key(6003)).expect("lookup"), Some(1));
    map_all_to(&mut h, 0, 0, vec![element(0, STATE_UP), element(1, STATE_UP)]);
    check(
        &mut h,
        &case("stays after the element returns", ack(6003), Want::Tx(1)),
    );
}

/// 10,000 established flows, then 2,000,000 SYNs from random spoofed sources through the
/// default flood guard (and a keyed hash, so the sources cannot aim at the flows' buckets):
/// at least 99% of the established flows keep their element.
#[test]
fn a_syn_flood_does_not_push_established_flows_out() {
    const ESTABLISHED: u32 = 10_000;
    const FLOOD: u32 = 2_000_000;
    let mut h = Harness::new();
    provision(&mut h);
    let client = |i: u32| -> Vec<u8> {
        let mut f = tcp4((i % 50_000) as u16 + 1);
        f.src = IpAddr::from([10, 1, (i / 50_000) as u8, 2]);
        f.build()
    };
    for i in 0..ESTABLISHED {
        assert_eq!(h.run(&client(i)).verdict, XDP_TX, "flow {i}");
    }
    // New flows now go to element 1: an established flow still on element 0 kept its entry.
    map_all_to(&mut h, 0, 1, vec![element(0, STATE_UP), element(1, STATE_UP)]);
    let not_recorded = h.reason_packets(Reason::FlowNotRecorded);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let started = std::time::Instant::now();
    for _ in 0..FLOOD {
        // xorshift64: random source address and port.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let mut f = tcp4((x >> 32) as u16 | 1);
        f.src = IpAddr::from(((x as u32) | 0x0100_0000).to_be_bytes());
        assert_eq!(h.run(&f.build()).verdict, XDP_TX);
    }
    let refused = h.reason_packets(Reason::FlowNotRecorded) - not_recorded;
    let kept = (0..ESTABLISHED)
        .filter(|&i| {
            let r = h.run(&with_tcp_flags(client(i), false, ACK));
            r.frame[..6] == mac(0)
        })
        .count();
    println!(
        "{FLOOD} spoofed SYNs in {:?}: {refused} not recorded; {kept} of {ESTABLISHED} established flows kept their element",
        started.elapsed()
    );
    assert!(
        kept * 100 >= ESTABLISHED as usize * 99,
        "{kept} of {ESTABLISHED} established flows kept their element; want at least 99%"
    );
}

/// The maps store IPv4 addresses IPv4-mapped; an IPv6 packet carrying that form must not reach
/// the IPv4 pool.
#[test]
fn ipv6_packets_with_ipv4_mapped_addresses_never_reach_an_ipv4_pool() {
    let mut h = Harness::new();
    provision(&mut h);
    let mapped_vip = ip(&format!("::ffff:{VIP4}"));
    let mapped_client = ip(&format!("::ffff:{CLIENT4}"));
    let tcp = L4::Tcp {
        sport: 4100,
        dport: TCP_PORT,
    };
    let udp = L4::Udp {
        sport: 4100,
        dport: UDP_PORT,
    };
    let cases = vec![
        case(
            "IPv6 TCP to ::ffff:VIP4",
            Frame::new(ip(CLIENT6), mapped_vip, tcp.clone()).build(),
            Want::Malformed,
        ),
        case(
            "IPv6 UDP to ::ffff:VIP4",
            Frame::new(ip(CLIENT6), mapped_vip, udp).build(),
            Want::Malformed,
        ),
        case(
            "IPv6 TCP from an IPv4-mapped client to VIP6",
            Frame::new(mapped_client, ip(VIP6), tcp.clone()).build(),
            Want::Malformed,
        ),
        case(
            "ICMPv6 error quoting a packet from ::ffff:VIP4",
            Frame::new(
                ip("fd00:1::1"),
                ip(VIP6),
                L4::IcmpError {
                    ty: 1,
                    inner: ip_packet(&Frame::new(
                        mapped_vip,
                        ip(CLIENT6),
                        L4::Tcp {
                            sport: TCP_PORT,
                            dport: 4100,
                        },
                    )),
                },
            )
            .build(),
            Want::Pass,
        ),
        // And the IPv4 VIP itself still steers.
        case("IPv4 TCP to VIP4", tcp4(4100).build(), Want::Tx(0)),
    ];
    for c in &cases {
        check(&mut h, c);
    }
}

fn icmp4_echo() -> Vec<u8> {
    // An echo request (type 8) shaped like an error frame: the program must not read it as one.
    Frame::new(
        ip(CLIENT4),
        ip(VIP4),
        L4::IcmpError {
            ty: 8,
            inner: vec![0; 28],
        },
    )
    .build()
}

/// An ICMP error from a router about a packet an element sent VIP:port → client:cport.
fn icmp_error_about(v6: bool, cport: u16, ty: u8) -> Vec<u8> {
    let (vip, client) = if v6 { (VIP6, CLIENT6) } else { (VIP4, CLIENT4) };
    let quoted = ip_packet(&Frame::new(
        ip(vip),
        ip(client),
        L4::Tcp {
            sport: TCP_PORT,
            dport: cport,
        },
    ));
    let router = if v6 { "fd00:1::1" } else { "10.0.0.1" };
    Frame::new(
        ip(router),
        ip(vip),
        L4::IcmpError {
            ty,
            inner: quoted[..quoted.len().min(if v6 { 48 } else { 28 })].to_vec(),
        },
    )
    .build()
}

#[test]
fn icmp_errors_follow_their_flow() {
    let mut h = Harness::new();
    provision(&mut h);
    // Flows of both families land on element 0, then new flows go to element 1: the ICMP
    // errors must follow the flow table, not the Maglev table.
    check(&mut h, &case("v4 flow", tcp4(4000).build(), Want::Tx(0)));
    check(&mut h, &case("v6 flow", tcp6(4000).build(), Want::Tx(0)));
    for pool in [0, 2] {
        map_all_to(&mut h, pool, 1, vec![element(0, STATE_UP), element(1, STATE_UP)]);
    }
    let forwarded = h.reason_packets(Reason::IcmpForwarded);
    check(
        &mut h,
        &case(
            "ICMPv4 unreachable about a known flow",
            icmp_error_about(false, 4000, 3),
            Want::Tx(0),
        ),
    );
    check(
        &mut h,
        &case(
            "ICMPv6 packet too big about a known flow",
            icmp_error_about(true, 4000, 2),
            Want::Tx(0),
        ),
    );
    assert_eq!(h.reason_packets(Reason::IcmpForwarded), forwarded + 2);
    check(
        &mut h,
        &case(
            "ICMPv4 error about an unknown flow",
            icmp_error_about(false, 4001, 11),
            Want::Drop(Reason::IcmpNoFlow),
        ),
    );
    check(
        &mut h,
        &case(
            "ICMPv6 error about an unknown flow",
            icmp_error_about(true, 4001, 1),
            Want::Drop(Reason::IcmpNoFlow),
        ),
    );
    let not_vip = ip_packet(&Frame::new(
        ip("10.10.0.9"),
        ip(CLIENT4),
        L4::Udp { sport: 1, dport: 2 },
    ));
    let f = Frame::new(
        ip("10.0.0.1"),
        ip("10.10.0.9"),
        L4::IcmpError {
            ty: 3,
            inner: not_vip[..28].to_vec(),
        },
    )
    .build();
    check(
        &mut h,
        &case("ICMP error about another host's packet", f, Want::Pass),
    );
}

#[test]
fn every_truncation_point_passes_untouched() {
    let mut h = Harness::new();
    provision(&mut h);
    let mut v4opts = tcp4(5000);
    v4opts.ipv4_options = 2;
    let mut v6ext = udp6(5000);
    v6ext.ipv6_ext = 2;
    let frames = [
        ("IPv4 TCP", tcp4(5000).build()),
        ("IPv4 UDP", udp4(5000).build()),
        ("IPv6 TCP", tcp6(5000).build()),
        ("IPv4 TCP with options", v4opts.build()),
        ("IPv6 UDP with extension headers", v6ext.build()),
        ("QinQ IPv6 UDP", {
            let mut f = udp6(5000);
            f.vlans = vec![1, 2];
            f.build()
        }),
        ("ICMPv4 error", icmp_error_about(false, 5000, 3)),
        ("ICMPv6 error", icmp_error_about(true, 5000, 1)),
    ];
    for (what, full) in frames {
        // BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header.
        for len in 14..full.len() {
            let cut = &full[..len];
            let r = h.run(cut);
            assert!(
                r.verdict == XDP_PASS && r.frame == cut,
                "{what} cut to {len} of {} bytes: got {}\n{}",
                full.len(),
                verdict_name(r.verdict),
                hex(&r.frame)
            );
        }
        // And the whole frame is steered (so the cuts above were VIP traffic).
        assert_eq!(h.run(&full).verdict, XDP_TX, "{what}, whole");
    }
}

#[test]
fn pool_without_usable_element_drops_and_counts() {
    let mut h = Harness::new();
    h.dp.add_vip(0, addr::from_ip(ip(VIP4)), TCP_PORT, PROTO_TCP)
        .expect("add vip");
    h.dp.apply(
        0,
        &Mapping {
            ring: vec![],
            elements: vec![element(0, STATE_DOWN)],
            tunnels: Vec::new(),
        },
    )
    .expect("apply");
    check(
        &mut h,
        &case(
            "VIP with every element down",
            tcp4(6000).build(),
            Want::Drop(Reason::NoElement),
        ),
    );
}

#[test]
fn element_behind_unknown_egress_is_dropped() {
    let mut h = Harness::new();
    h.dp.add_vip(0, addr::from_ip(ip(VIP4)), TCP_PORT, PROTO_TCP)
        .expect("add vip");
    let mut e = element(0, STATE_UP);
    e.ifindex = 0x7fff_0000; // no such device in VNF_TX_PORTS
    map_all_to(&mut h, 0, 0, vec![e]);
    check(
        &mut h,
        &case(
            "egress not in VNF_TX_PORTS",
            tcp4(6001).build(),
            Want::Drop(Reason::NoTxPort),
        ),
    );
}

#[test]
fn flow_table_keeps_affinity_and_honours_element_states() {
    let mut h = Harness::new();
    provision(&mut h);
    let elements = |s0, s1| vec![element(0, s0), element(1, s1)];
    // Established on element 0.
    check(
        &mut h,
        &case("first packet picks element 0", tcp4(7000).build(), Want::Tx(0)),
    );
    // New flows now go to 1; the established flow stays (flow-table hit).
    map_all_to(&mut h, 0, 1, elements(STATE_UP, STATE_UP));
    check(
        &mut h,
        &case("flow hit keeps element 0", tcp4(7000).build(), Want::Tx(0)),
    );
    check(
        &mut h,
        &case("a new flow goes to element 1", tcp4(7001).build(), Want::Tx(1)),
    );
    // Draining element 0: its flow stays, no new flow gets it.
    map_all_to(&mut h, 0, 1, elements(STATE_DRAINING, STATE_UP));
    check(
        &mut h,
        &case("draining element keeps its flow", tcp4(7000).build(), Want::Tx(0)),
    );
    check(
        &mut h,
        &case(
            "draining element gets no new flow",
            tcp4(7002).build(),
            Want::Tx(1),
        ),
    );
    // Element 0 down: its flow is re-picked from the table, and stays re-picked.
    map_all_to(&mut h, 0, 1, elements(STATE_DOWN, STATE_UP));
    check(
        &mut h,
        &case(
            "down element's flow is re-picked",
            tcp4(7000).build(),
            Want::Tx(1),
        ),
    );
    assert_eq!(
        h.dp.flow(&tcp4_key(7000)).expect("flow lookup"),
        Some(1),
        "flow entry rewritten"
    );
    // Element 0 back up with every new flow to it: the re-picked flow stays on 1.
    map_all_to(&mut h, 0, 0, elements(STATE_UP, STATE_UP));
    check(
        &mut h,
        &case(
            "re-picked flow stays when the old element returns",
            tcp4(7000).build(),
            Want::Tx(1),
        ),
    );
}

#[test]
fn program_picks_the_position_the_flow_hash_names() {
    // Every node computes the same hash and position: what lets nodes behind ECMP agree.
    let mut h = Harness::new();
    h.dp.add_vip(0, addr::from_ip(ip(VIP4)), TCP_PORT, PROTO_TCP)
        .expect("add vip");
    let elements: Vec<Element> = (0..7).map(|n| element(n, STATE_UP)).collect();
    let table: Vec<u16> = (0..RING as u16).map(|p| p % 7).collect();
    h.dp.apply(
        0,
        &Mapping {
            ring: table.clone(),
            elements,
            tunnels: Vec::new(),
        },
    )
    .expect("apply");
    for sport in 10_000..10_500u16 {
        let want =
            table[ring::position(flow::hash(&tcp4_key(sport), &h.dp.flow_hash_key()), RING as u32) as usize];
        let r = h.run(&tcp4(sport).build());
        assert_eq!(
            (r.verdict, &r.frame[..6]),
            (XDP_TX, &mac(want as u8)[..]),
            "sport {sport}"
        );
    }
}

/// A table of `size` built by the daemon's Maglev builder over `weights` (element i = weight i).
fn maglev(weights: &[u32], size: u32) -> Vec<u16> {
    use vnfpool_daemon::model::maglev::{Backend, build, name_key};
    let backends: Vec<Backend> = (0u16..)
        .zip(weights)
        .map(|(i, &weight)| Backend {
            key: name_key(&format!("e{i}")),
            index: i,
            weight,
        })
        .collect();
    build(&backends, size).expect("maglev table")
}

/// The client address of synthetic flow `i` (distinct addresses and ports).
fn synthetic(i: u32) -> Vec<u8> {
    let a = std::net::Ipv4Addr::from(0x0a00_0000 | (i >> 4));
    let sport = 1024 + (i & 0xf) as u16 * 997;
    Frame::new(
        IpAddr::V4(a),
        ip(VIP4),
        L4::Tcp {
            sport,
            dport: TCP_PORT,
        },
    )
    .build()
}

#[test]
fn weights_are_respected_over_100k_flows() {
    const FLOWS: u32 = 100_000;
    let weights = [1u32, 2, 3, 4];
    let mut h = Harness::new();
    h.dp.add_vip(0, addr::from_ip(ip(VIP4)), TCP_PORT, PROTO_TCP)
        .expect("add vip");
    let elements: Vec<Element> = (0..4).map(|n| element(n, STATE_UP)).collect();
    h.dp.apply(
        0,
        &Mapping {
            ring: maglev(&weights, maps::DEFAULT_RING_SIZE),
            elements,
            tunnels: Vec::new(),
        },
    )
    .expect("apply");
    let mut seen = [0u32; 4];
    for i in 0..FLOWS {
        let r = h.run(&synthetic(i));
        assert_eq!(r.verdict, XDP_TX);
        seen[usize::from(r.frame[5])] += 1;
    }
    let total: u32 = weights.iter().sum();
    for (n, (&got, &w)) in seen.iter().zip(&weights).enumerate() {
        let want = f64::from(FLOWS) * f64::from(w) / f64::from(total);
        let off = (f64::from(got) / want - 1.0).abs();
        println!(
            "element {n}: weight {w}, {got} flows, {:.2}% off its share",
            off * 100.0
        );
        assert!(off <= 0.02, "element {n}: {got} flows, want {want:.0} within 2%");
    }
}

#[test]
fn removing_one_of_n_moves_only_its_flows() {
    const N: u8 = 5;
    const FLOWS: u32 = 20_000;
    let mut h = Harness::new();
    h.dp.add_vip(0, addr::from_ip(ip(VIP4)), TCP_PORT, PROTO_TCP)
        .expect("add vip");
    let before = maglev(&[1; N as usize], maps::DEFAULT_RING_SIZE);
    let mut elements: Vec<Element> = (0..N).map(|n| element(n, STATE_UP)).collect();
    h.dp.apply(
        0,
        &Mapping {
            ring: before.clone(),
            elements: elements.clone(),
            tunnels: Vec::new(),
        },
    )
    .expect("apply");
    let first: Vec<u8> = (0..FLOWS).map(|i| h.run(&synthetic(i)).frame[5]).collect();

    // Element 2 fails: out of the table, its state down.
    let after = maglev(&[1, 1, 0, 1, 1], maps::DEFAULT_RING_SIZE);
    let moved = vnfpool_daemon::model::maglev::moved(&before, &after);
    let bound = before.len() / usize::from(N) + before.len() / 100;
    println!(
        "table positions moved: {moved} of {} (bound {bound})",
        before.len()
    );
    assert!(moved <= bound, "{moved} positions moved, at most {bound}");
    elements[2].state = STATE_DOWN;
    h.dp.apply(
        0,
        &Mapping {
            ring: after,
            elements,
            tunnels: Vec::new(),
        },
    )
    .expect("apply");

    for (i, &was) in (0..FLOWS).zip(&first) {
        let now = h.run(&synthetic(i)).frame[5];
        if was == 2 {
            assert_ne!(now, 2, "flow {i} still on the failed element");
        } else {
            assert_eq!(now, was, "flow {i} of healthy element {was} moved to {now}");
        }
    }
}

/// A destination on `addr` whose pre-filter entry is the same as that of `vip:port`/TCP.
fn same_bucket(vip: &str, port: u16, other: &str) -> (IpAddr, u16) {
    use vnfpool_common::vip::filter_index;
    let (a, b) = (addr::from_ip(ip(vip)), addr::from_ip(ip(other)));
    let want = filter_index(&a, port.to_be(), PROTO_TCP);
    let port_be = port.to_be() ^ (filter_index(&b, port.to_be(), PROTO_TCP) ^ want) as u16;
    assert_eq!(filter_index(&b, port_be, PROTO_TCP), want);
    (ip(other), u16::from_be(port_be))
}

/// Another IPv4 address whose destinations fold to the same pre-filter entries as `vip`'s, port
/// for port (a fold of `x` xors its halves, so flipping the same bits in both halves keeps it).
fn same_fold_address(vip: &str) -> IpAddr {
    let a = addr::from_ip(ip(vip));
    let other = addr::from_v4_word(a[3] ^ 0x0001_0001);
    assert_eq!(
        vnfpool_common::vip::filter_index(&a, TCP_PORT.to_be(), PROTO_TCP),
        vnfpool_common::vip::filter_index(&other, TCP_PORT.to_be(), PROTO_TCP)
    );
    addr::to_ip(&other)
}

#[test]
fn pre_filter_entries_with_one_or_several_vips() {
    let mut h = Harness::new();
    h.dp.add_vip(0, addr::from_ip(ip(VIP4)), TCP_PORT, PROTO_TCP)
        .expect("add vip");
    map_all_to(&mut h, 0, 0, vec![element(0, STATE_UP)]);
    // One VIP in its entry: another destination folding there is compared away, not steered.
    let (stranger, sport) = same_bucket(VIP4, TCP_PORT, "10.99.0.1");
    let f = Frame::new(
        ip(CLIENT4),
        stranger,
        L4::Tcp {
            sport: 1,
            dport: sport,
        },
    )
    .build();
    check(&mut h, &case("non-VIP in a one-VIP entry", f.clone(), Want::Pass));
    // Same port and protocol, same entry, another address: the pool's address tells them apart.
    let twin = same_fold_address(VIP4);
    let t = Frame::new(
        ip(CLIENT4),
        twin,
        L4::Tcp {
            sport: 1,
            dport: TCP_PORT,
        },
    )
    .build();
    check(
        &mut h,
        &case("VIP port on another address in a one-VIP entry", t, Want::Pass),
    );
    check(&mut h, &case("the entry's VIP", tcp4(1).build(), Want::Tx(0)));
    // A second VIP in the same entry: both are found through the hash table.
    let (vip2, port2) = same_bucket(VIP4, TCP_PORT, "10.10.0.200");
    h.dp.add_vip(1, addr::from_ip(vip2), port2, PROTO_TCP)
        .expect("add colliding vip");
    map_all_to(&mut h, 1, 1, vec![element(0, STATE_UP), element(1, STATE_UP)]);
    check(
        &mut h,
        &case("first VIP of a shared entry", tcp4(2).build(), Want::Tx(0)),
    );
    let f2 = Frame::new(
        ip(CLIENT4),
        vip2,
        L4::Tcp {
            sport: 2,
            dport: port2,
        },
    )
    .build();
    check(&mut h, &case("second VIP of a shared entry", f2, Want::Tx(1)));
    check(&mut h, &case("non-VIP in a shared entry", f, Want::Pass));
}

#[test]
fn a_pool_routes_one_address_which_can_change_once_withdrawn() {
    let mut h = Harness::new();
    h.dp.add_vip(0, addr::from_ip(ip(VIP4)), TCP_PORT, PROTO_TCP)
        .expect("add vip");
    h.dp.add_vip(0, addr::from_ip(ip(VIP4)), UDP_PORT, PROTO_UDP)
        .expect("another port of the same address");
    map_all_to(&mut h, 0, 0, vec![element(0, STATE_UP)]);
    let other = "10.10.0.150";
    let err =
        h.dp.add_vip(0, addr::from_ip(ip(other)), TCP_PORT, PROTO_TCP)
            .expect_err("a second address for the pool");
    assert!(
        matches!(
            err,
            vnfpool_daemon::dataplane::DataplaneError::PoolAddress { pool: 0, .. }
        ),
        "{err}"
    );
    let to_other = || {
        Frame::new(
            ip(CLIENT4),
            ip(other),
            L4::Tcp {
                sport: 1,
                dport: TCP_PORT,
            },
        )
        .build()
    };
    check(&mut h, &case("refused address", to_other(), Want::Pass));
    h.dp.remove_vip(addr::from_ip(ip(VIP4)), TCP_PORT, PROTO_TCP)
        .expect("remove vip");
    check(
        &mut h,
        &case("UDP port still routed", udp4(1).build(), Want::Tx(0)),
    );
    h.dp.remove_vip(addr::from_ip(ip(VIP4)), UDP_PORT, PROTO_UDP)
        .expect("remove vip");
    h.dp.add_vip(0, addr::from_ip(ip(other)), TCP_PORT, PROTO_TCP)
        .expect("the pool's new address");
    check(&mut h, &case("new address", to_other(), Want::Tx(0)));
    check(&mut h, &case("old address", tcp4(1).build(), Want::Pass));
}

#[test]
fn full_flow_bucket_evicts_one_flow_and_keeps_the_others() {
    // Eight flows fill the only bucket of an 8-flow table; a ninth takes the way under the
    // bucket's clock hand (all eight were just used, so none is passed over: way 0, the first
    // flow's), and the hand moves on, so a tenth takes way 1. No flood guard: it would record
    // one flow per stamp unit in so small a table.
    let mut h = Harness::with(&LoadOptions {
        flow_table_size: 8,
        new_flows_per_unit: Some(0),
        ..LoadOptions::default()
    });
    provision(&mut h);
    let key = tcp4_key;
    for sport in 8000..8008 {
        check(
            &mut h,
            &case("filling the bucket", tcp4(sport).build(), Want::Tx(0)),
        );
    }
    assert!((8000..8008).all(|p| h.dp.flow(&key(p)).expect("flow lookup") == Some(0)));
    // New flows now go to element 1; the eight keep element 0.
    map_all_to(&mut h, 0, 1, vec![element(0, STATE_UP), element(1, STATE_UP)]);
    let kept = |h: &Harness| -> Vec<u16> {
        (8000..8010)
            .filter(|&p| h.dp.flow(&key(p)).expect("flow lookup").is_some())
            .collect()
    };
    check(&mut h, &case("ninth flow", tcp4(8008).build(), Want::Tx(1)));
    assert_eq!(
        kept(&h),
        (8001..8009).collect::<Vec<_>>(),
        "exactly one flow evicted, the first written"
    );
    check(&mut h, &case("tenth flow", tcp4(8009).build(), Want::Tx(1)));
    assert_eq!(
        kept(&h),
        (8002..8010).collect::<Vec<_>>(),
        "the hand moved on: the second flow written goes next"
    );
    for sport in 8002..8008 {
        check(&mut h, &case("kept flow stays", tcp4(sport).build(), Want::Tx(0)));
    }
    for sport in 8008..8010 {
        check(&mut h, &case("new flow stays", tcp4(sport).build(), Want::Tx(1)));
    }
}

/// The event the program emits for a new flow `key` picking element `element`.
fn event(h: &Harness, key: &FlowKey, element: u16) -> FlowEvent {
    FlowEvent {
        hash: flow::hash64(key, &h.dp.flow_hash_key()),
        pool: key.pool,
        element,
        exact_bits: 64,
        age: 0,
        _pad: [0; 2],
    }
}

fn drain(events: &mut FlowEvents) -> Vec<FlowEvent> {
    let mut out = Vec::new();
    events.drain(&mut out, usize::MAX);
    out
}

#[test]
fn new_flows_emit_one_event_each_while_events_are_on() {
    let mut h = Harness::new();
    provision(&mut h);
    let mut events = h.dp.flow_events().expect("flow event reader");
    check(&mut h, &case("events off", tcp4(9000).build(), Want::Tx(0)));
    assert_eq!(drain(&mut events), [], "no event while off");

    h.dp.set_flow_events(true).expect("events on");
    check(&mut h, &case("new flow", tcp4(9001).build(), Want::Tx(0)));
    assert_eq!(
        drain(&mut events),
        [event(&h, &tcp4_key(9001), 0)],
        "exactly one event"
    );
    check(&mut h, &case("established flow", tcp4(9001).build(), Want::Tx(0)));
    check(
        &mut h,
        &case("flow recorded while off", tcp4(9000).build(), Want::Tx(0)),
    );
    assert_eq!(drain(&mut events), [], "flow-table hits emit nothing");

    // A flow whose element went down is picked again, and that new pick is an event.
    map_all_to(&mut h, 0, 1, vec![element(0, STATE_DOWN), element(1, STATE_UP)]);
    check(&mut h, &case("re-picked flow", tcp4(9001).build(), Want::Tx(1)));
    assert_eq!(drain(&mut events), [event(&h, &tcp4_key(9001), 1)]);

    h.dp.set_flow_events(false).expect("events off");
    check(
        &mut h,
        &case("new flow, events off again", tcp4(9002).build(), Want::Tx(1)),
    );
    assert_eq!(drain(&mut events), []);
}

#[test]
fn a_full_event_ring_counts_and_still_forwards() {
    // Every new flow recorded, whatever the host's CPUs make of the flood guard: this fills the
    // ring with more new flows than the guard may let through on a host with many CPUs.
    let mut h = Harness::with(&LoadOptions {
        new_flows_per_unit: Some(0),
        ..LoadOptions::default()
    });
    provision(&mut h);
    h.dp.set_flow_events(true).expect("events on");
    let room = maps::FLOW_EVENTS_SIZE as usize / (size_of::<FlowEvent>() + 8);
    // Distinct flows: client port and one byte of the client address.
    let flow = |i: usize| {
        let mut f = tcp4((i % 50_000) as u16 + 1);
        f.src = ip(&format!("10.0.{}.2", i / 50_000));
        f.build()
    };
    for i in 0..room {
        let r = h.run(&flow(i));
        assert_eq!(r.verdict, XDP_TX, "flow {i}");
    }
    assert_eq!(h.reason_packets(Reason::FlowEventLost), 0, "{room} events fit");
    let r = h.run(&flow(room));
    assert_eq!(r.verdict, XDP_TX, "the packet is forwarded all the same");
    assert_eq!(
        h.reason_packets(Reason::FlowEventLost),
        1,
        "the lost event is counted"
    );
    let mut events = h.dp.flow_events().expect("reader");
    assert_eq!(drain(&mut events).len(), room);
}

#[test]
fn a_peer_entry_pins_its_flow_to_the_peer_element() {
    let mut h = Harness::new();
    provision(&mut h);
    let table = h.dp.flow_table().expect("flow table handle");
    let key = tcp4_key(9100);
    // The Maglev table sends every new flow to element 0; the peer pinned this one to 1.
    let inserted = table
        .insert(&[
            event(&h, &key, 1),
            FlowEvent {
                element: maps::MAX_ELEMENTS as u16,
                ..event(&h, &tcp4_key(9101), 1)
            },
            FlowEvent {
                pool: maps::MAX_POOLS as u16,
                ..event(&h, &tcp4_key(9102), 1)
            },
        ])
        .expect("insert");
    assert_eq!(
        (inserted.added, inserted.bad_element, inserted.bad_pool),
        (1, 1, 1),
        "{inserted:?}"
    );
    assert_eq!(h.dp.flow(&key).expect("lookup"), Some(1));
    check(
        &mut h,
        &case(
            "the peer's pin wins over the ring",
            tcp4(9100).build(),
            Want::Tx(1),
        ),
    );
    for sport in [9101, 9102] {
        check(
            &mut h,
            &case("refused entries left no trace", tcp4(sport).build(), Want::Tx(0)),
        );
    }
    // Read back, the entry places the same flow in the same bucket for a peer.
    let mut back = Vec::new();
    let mut from = 0;
    loop {
        from = table.scan(from, 1 << 14, false, &mut back).expect("scan");
        if from == 0 {
            break;
        }
    }
    let mask = table.buckets() - 1;
    let found: Vec<&FlowEvent> = back
        .iter()
        .filter(|e| flow::fingerprint(e.hash) == flow::fingerprint(flow::hash64(&key, &h.dp.flow_hash_key())))
        .collect();
    assert_eq!(found.len(), 1, "{back:?}");
    assert_eq!(
        (flow::bucket(found[0].hash, mask), found[0].element),
        (flow::bucket(flow::hash64(&key, &h.dp.flow_hash_key()), mask), 1)
    );

    // A refresh sends only entries used lately: an entry the peer last used 5 stamp units ago
    // is written that old, and left out of a scan for recent entries.
    let (fresh, stale) = (tcp4_key(9103), tcp4_key(9104));
    let aged = FlowEvent {
        age: 5,
        ..event(&h, &stale, 1)
    };
    let inserted = table.insert(&[event(&h, &fresh, 1), aged]).expect("insert");
    assert_eq!(inserted.added, 2, "{inserted:?}");
    let mut recent = Vec::new();
    let mut from = 0;
    loop {
        from = table.scan(from, 1 << 14, true, &mut recent).expect("scan");
        if from == 0 {
            break;
        }
    }
    let has = |k: &FlowKey| {
        recent
            .iter()
            .any(|e| flow::fingerprint(e.hash) == flow::fingerprint(flow::hash64(k, &h.dp.flow_hash_key())))
    };
    // (`key`'s entry is stamped with the clock as it was before the first new flow of this
    // test, the last time the program had stored it: long ago.)
    assert!(has(&fresh), "an entry used now is recent");
    assert!(!has(&stale), "an entry 5 units old is not");
}

/// A UDP datagram from `src` to `dst`:`dport`.
fn udp_to(src: &str, dst: IpAddr, dport: u16) -> Vec<u8> {
    Frame::new(ip(src), dst, L4::Udp { sport: 40_000, dport }).build()
}

/// The heartbeat listener's guard (issue 14, item 3): datagrams to the listener's address and
/// port pass only from the peers' addresses, anything else there passes untouched, and a VIP
/// that shares the guard's pre-filter entry is still steered.
#[test]
fn the_heartbeat_listener_hears_its_peers_only() {
    use vnfpool_common::vip::filter_index;
    use vnfpool_daemon::dataplane::HeartbeatGuard;

    const HB: u16 = 9471;
    let (host4, host6) = (ip("10.0.0.1"), ip("fd00:1::1"));
    let (peer4, peer6) = ("10.1.0.5", "fd00:2::5");
    let mut h = Harness::new();
    provision(&mut h);
    // A VIP whose destination folds into the IPv4 guard's pre-filter entry.
    let want = filter_index(&addr::from_ip(host4), HB.to_be(), PROTO_UDP);
    let twin = addr::from_ip(ip("10.10.0.201"));
    let twin_port = u16::from_be(HB.to_be() ^ (filter_index(&twin, HB.to_be(), PROTO_UDP) ^ want) as u16);
    assert_eq!(filter_index(&twin, twin_port.to_be(), PROTO_UDP), want);
    h.dp.add_vip(4, twin, twin_port, PROTO_UDP).expect("add vip");
    map_all_to(&mut h, 4, 1, vec![element(0, STATE_UP), element(1, STATE_UP)]);
    let twin_frame = udp_to(CLIENT4, addr::to_ip(&twin), twin_port);

    let guard = |peers: &[&str]| HeartbeatGuard {
        listen: [(addr::from_ip(host4), HB), (addr::from_ip(host6), HB)]
            .into_iter()
            .collect(),
        peers: peers.iter().map(|p| (addr::from_ip(ip(p)), 1)).collect(),
    };
    h.dp.set_heartbeat_guard(&guard(&[peer4, peer6])).expect("guard");
    let refused = Want::Drop(Reason::HeartbeatRefused);
    for c in [
        case("v4 heartbeat from a peer", udp_to(peer4, host4, HB), Want::Pass),
        case("v6 heartbeat from a peer", udp_to(peer6, host6, HB), Want::Pass),
        case("v4 datagram from a stranger", udp_to(CLIENT4, host4, HB), refused),
        case("v6 datagram from a stranger", udp_to(CLIENT6, host6, HB), refused),
        case(
            "another port of the listener's address",
            udp_to(CLIENT4, host4, HB + 1),
            Want::Pass,
        ),
        case(
            "the port on another address",
            udp_to(CLIENT4, ip("10.0.0.9"), HB),
            Want::Pass,
        ),
        case(
            "TCP to the listener's port",
            Frame::new(ip(CLIENT4), host4, L4::Tcp { sport: 1, dport: HB }).build(),
            Want::Pass,
        ),
        case(
            "a VIP in the guard's pre-filter entry",
            twin_frame.clone(),
            Want::Tx(1),
        ),
        case("a VIP elsewhere", udp4(7).build(), Want::Tx(0)),
    ] {
        check(&mut h, &c);
    }
    // A peer that goes is refused from then on.
    h.dp.set_heartbeat_guard(&guard(&[peer6])).expect("guard");
    check(&mut h, &case("a former peer", udp_to(peer4, host4, HB), refused));
    check(&mut h, &case("a peer left", udp_to(peer6, host6, HB), Want::Pass));
    // Without a guard the listener's port is the kernel's again, and the VIP keeps its entry.
    h.dp.set_heartbeat_guard(&HeartbeatGuard::default())
        .expect("no guard");
    check(&mut h, &case("no guard", udp_to(CLIENT4, host4, HB), Want::Pass));
    check(
        &mut h,
        &case("the VIP, alone in its entry", twin_frame, Want::Tx(1)),
    );
}
