//! The element-side decapsulation program (`vnfpool-decap`) under `BPF_PROG_TEST_RUN`: for each
//! case the input frame, the verdict, the exact output frame and the counter it lands in; its
//! maps against the ABI crate; its cost against a bare `XDP_PASS`.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    process::Command,
    sync::mpsc,
    time::{Duration, Instant},
};

use aya::{Ebpf, maps::MapInfo, programs::Xdp};
use socket2::{Domain, Protocol, Socket, Type};
use vnfpool_common::{
    decap::{self, Counter},
    stats::Counters,
};
use vnfpool_daemon::dataplane::{
    BASELINE_OBJECT,
    decap::{DecapConfig, DecapProgram, layout, pinned_counters},
};
use vnfpool_tests::{
    encap::{self, PROTO_IPIP, PROTO_IPV6, PROTO_UDP},
    harness::{handle, run, verdict_name},
    lab,
    netns::{Netns, VethPair},
    packet::{Frame, L4, checksum, hex, ip_packet},
    pins::{PinDir, bpftool_dump},
};

const XDP_PASS: u32 = 2;

const VIP4: &str = "10.10.0.100";
const VIP6: &str = "fd00:10::100";
const OTHER4: &str = "10.10.0.200";
const OTHER6: &str = "fd00:10::200";
const CLIENT4: &str = "10.0.0.2";
const CLIENT6: &str = "fd00:1::2";
const LB4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const ELEMENT4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const LB6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const ELEMENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10);
const GUE_PORT: u16 = 6080;
const GUE_PORT_2: u16 = 5555;
const ELEMENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0xe0, 0x01];
const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x1b, 0x01];
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
/// Single-run calls per figure of the cost measurement.
const CALLS: usize = 2000;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

/// The client's packet to `dst` (UDP 40000 → 53, or a TCP SYN 40000 → 80), as the load
/// balancer received it: the inner packet.
fn inner(dst: &str, tcp: bool) -> Vec<u8> {
    let dst = ip(dst);
    let src = if dst.is_ipv4() { ip(CLIENT4) } else { ip(CLIENT6) };
    let l4 = if tcp {
        L4::Tcp {
            sport: 40000,
            dport: 80,
        }
    } else {
        L4::Udp {
            sport: 40000,
            dport: 53,
        }
    };
    ip_packet(&Frame::new(src, dst, l4))
}

fn eth4(ip_packet: &[u8]) -> Vec<u8> {
    encap::ethernet(ELEMENT_MAC, LB_MAC, ETH_P_IP, ip_packet)
}

fn eth6(ip_packet: &[u8]) -> Vec<u8> {
    encap::ethernet(ELEMENT_MAC, LB_MAC, ETH_P_IPV6, ip_packet)
}

/// IPv4 in IPv4, as a frame.
fn ipip(inner: &[u8]) -> Vec<u8> {
    eth4(&encap::ipv4(LB4, ELEMENT4, PROTO_IPIP, inner))
}

/// IPv6 in IPv6, as a frame.
fn ip6ip6(inner: &[u8]) -> Vec<u8> {
    eth6(&encap::ipv6(LB6, ELEMENT6, PROTO_IPV6, 0x12345, inner))
}

/// GUE over IPv4 to `port`, as a frame.
fn gue4(port: u16, inner: &[u8]) -> Vec<u8> {
    eth4(&encap::ipv4(
        LB4,
        ELEMENT4,
        PROTO_UDP,
        &encap::udp(33000, port, inner),
    ))
}

/// GUE over IPv6 to `port`, as a frame.
fn gue6(port: u16, inner: &[u8]) -> Vec<u8> {
    eth6(&encap::ipv6(
        LB6,
        ELEMENT6,
        PROTO_UDP,
        0x12345,
        &encap::udp(33000, port, inner),
    ))
}

/// `frame` with `bytes` written at `at`.
fn patch(mut frame: Vec<u8>, at: usize, bytes: &[u8]) -> Vec<u8> {
    frame[at..at + bytes.len()].copy_from_slice(bytes);
    frame
}

/// `frame` (outer IPv4 at 14) with its outer header checksum made right again, so that a case
/// differs from a sound frame only in the field it is about.
fn rechecksum(mut frame: Vec<u8>) -> Vec<u8> {
    let ihl = usize::from(frame[14] & 0x0F) * 4;
    let end = (14 + ihl.max(20)).min(frame.len());
    frame[24..26].copy_from_slice(&[0, 0]);
    let sum = checksum(&frame[14..end]);
    frame[24..26].copy_from_slice(&sum.to_be_bytes());
    frame
}

/// `frame` with `n` bytes appended past the outer packet.
fn trailing(mut frame: Vec<u8>, n: usize) -> Vec<u8> {
    frame.extend(std::iter::repeat_n(0xee, n));
    frame
}

/// An outer IPv4 header with one word of options (NOPs): IHL 6.
fn ipip_with_options(inner: &[u8]) -> Vec<u8> {
    let total = u16::try_from(24 + inner.len()).expect("small");
    let mut h = vec![0x46, 0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&[0, 0, 0x40, 0, 64, PROTO_IPIP, 0, 0]);
    h.extend_from_slice(&LB4.octets());
    h.extend_from_slice(&ELEMENT4.octets());
    h.extend_from_slice(&[1, 1, 1, 1]);
    let sum = checksum(&h);
    h[10..12].copy_from_slice(&sum.to_be_bytes());
    h.extend_from_slice(inner);
    eth4(&h)
}

/// A bare IPv4 header to the VIP (protocol 253, no payload): the smallest inner packet.
fn bare_v4_header() -> Vec<u8> {
    let mut h = vec![0x45, 0, 0, 20, 0, 0, 0x40, 0, 64, 253, 0, 0];
    h.extend_from_slice(&[10, 0, 0, 2]);
    h.extend_from_slice(&[10, 10, 0, 100]);
    let sum = checksum(&h);
    h[10..12].copy_from_slice(&sum.to_be_bytes());
    h
}

/// What a case must leave the program as.
enum Out {
    /// `XDP_PASS` with exactly this frame.
    Stripped(Vec<u8>),
    /// `XDP_PASS`, the frame untouched.
    Untouched,
}

struct Case {
    name: &'static str,
    frame: Vec<u8>,
    out: Out,
    /// The counter the frame lands in; `None`: none moves.
    counter: Option<Counter>,
}

fn stripped(name: &'static str, frame: Vec<u8>, inner_frame: Vec<u8>) -> Case {
    Case {
        name,
        frame,
        out: Out::Stripped(inner_frame),
        counter: Some(Counter::Decapsulated),
    }
}

fn untouched(name: &'static str, frame: Vec<u8>, counter: Option<Counter>) -> Case {
    Case {
        name,
        frame,
        out: Out::Untouched,
        counter,
    }
}

fn config(vips: &[&str], ports: &[u16]) -> DecapConfig {
    DecapConfig {
        vips: vips
            .iter()
            .map(|v| vnfpool_common::addr::from_ip(ip(v)))
            .collect(),
        gue_ports: ports.iter().copied().collect(),
    }
}

/// The program loaded (unpinned) with VIP4 and VIP6, GUE on `GUE_PORT` and `GUE_PORT_2`, and a
/// second handle on it for test runs.
fn loaded() -> (DecapProgram, Xdp) {
    let mut p = DecapProgram::load(None).expect("loading vnfpool-decap (needs root)");
    p.configure(&config(&[VIP4, VIP6], &[GUE_PORT, GUE_PORT_2]))
        .expect("configure");
    let prog = handle(p.ebpf_mut(), decap::PROGRAM).expect("program handle");
    (p, prog)
}

fn packets(c: &[Counters; decap::COUNTERS as usize]) -> [u64; decap::COUNTERS as usize] {
    c.map(|c| c.packets)
}

#[track_caller]
fn check(p: &DecapProgram, prog: &Xdp, case: &Case) {
    let before = packets(&p.counters().expect("counters"));
    let r = run(prog, &case.frame);
    let after = packets(&p.counters().expect("counters"));
    let want = match &case.out {
        Out::Stripped(f) => f.clone(),
        Out::Untouched => case.frame.clone(),
    };
    assert!(
        r.verdict == XDP_PASS && r.frame == want,
        "{}: got {} with\n{}\nwant XDP_PASS with\n{}\ninput was\n{}",
        case.name,
        verdict_name(r.verdict),
        hex(&r.frame),
        hex(&want),
        hex(&case.frame)
    );
    let mut moved = [0u64; decap::COUNTERS as usize];
    for (m, (a, b)) in moved.iter_mut().zip(after.iter().zip(before)) {
        *m = a - b;
    }
    let mut expected = [0u64; decap::COUNTERS as usize];
    if let Some(c) = case.counter {
        expected[c as usize] = 1;
    }
    assert_eq!(
        moved, expected,
        "{}: counters (decapsulated, not_for_us, malformed) moved by",
        case.name
    );
}

#[test]
fn encapsulated_vip_packets_leave_as_their_inner_packet() {
    let (p, prog) = loaded();
    let bare = bare_v4_header();
    let mut padded = ipip(&bare);
    assert_eq!(padded.len(), 54, "a frame Ethernet pads");
    padded.resize(60, 0);
    let mut inner_padded = eth4(&bare);
    inner_padded.resize(60 - 20, 0);
    let mut fragment = Frame::new(
        ip(CLIENT4),
        ip(VIP4),
        L4::Udp {
            sport: 40000,
            dport: 53,
        },
    );
    fragment.fragment = true;
    let fragment = ip_packet(&fragment);
    let cases = [
        stripped(
            "IPIP, UDP to the IPv4 VIP",
            ipip(&inner(VIP4, false)),
            eth4(&inner(VIP4, false)),
        ),
        stripped(
            "IPIP, TCP SYN to the IPv4 VIP",
            ipip(&inner(VIP4, true)),
            eth4(&inner(VIP4, true)),
        ),
        stripped(
            "IPv6 in IPv6, UDP to the IPv6 VIP",
            ip6ip6(&inner(VIP6, false)),
            eth6(&inner(VIP6, false)),
        ),
        stripped(
            "IPv6 in IPv6, TCP SYN to the IPv6 VIP",
            ip6ip6(&inner(VIP6, true)),
            eth6(&inner(VIP6, true)),
        ),
        stripped(
            "GUE over IPv4 to the IPv4 VIP",
            gue4(GUE_PORT, &inner(VIP4, false)),
            eth4(&inner(VIP4, false)),
        ),
        stripped(
            "GUE over IPv6 to the IPv6 VIP",
            gue6(GUE_PORT, &inner(VIP6, true)),
            eth6(&inner(VIP6, true)),
        ),
        stripped(
            "GUE on the second configured port",
            gue4(GUE_PORT_2, &inner(VIP4, true)),
            eth4(&inner(VIP4, true)),
        ),
        stripped(
            "IPIP with outer IPv4 options (IHL 6)",
            ipip_with_options(&inner(VIP4, false)),
            eth4(&inner(VIP4, false)),
        ),
        stripped(
            "IPIP of a bare IPv4 header, the frame padded to 60 bytes (the padding stays behind it)",
            padded,
            inner_padded,
        ),
        stripped(
            "IPIP of an inner fragment (reassembly is the element kernel's)",
            ipip(&fragment),
            eth4(&fragment),
        ),
    ];
    for case in &cases {
        check(&p, &prog, case);
    }
}

#[test]
fn frames_not_for_a_vip_pass_untouched() {
    let (p, prog) = loaded();
    let mut vlan = ipip(&inner(VIP4, false));
    vlan.splice(12..12, [0x81, 0x00, 0x00, 0x64]);
    let mut arp = encap::ethernet(ELEMENT_MAC, LB_MAC, 0x0806, &[0u8; 28]);
    arp[14] = 0;
    let mut hop_by_hop = vec![PROTO_IPV6, 0, 1, 4, 0, 0, 0, 0];
    hop_by_hop.extend_from_slice(&inner(VIP6, false));
    let cases = [
        untouched(
            "IPIP to another address",
            ipip(&inner(OTHER4, false)),
            Some(Counter::NotForUs),
        ),
        untouched(
            "IPv6 in IPv6 to another address",
            ip6ip6(&inner(OTHER6, false)),
            Some(Counter::NotForUs),
        ),
        untouched(
            "GUE over IPv4 to another address",
            gue4(GUE_PORT, &inner(OTHER4, true)),
            Some(Counter::NotForUs),
        ),
        untouched(
            "GUE over IPv6 to another address",
            gue6(GUE_PORT, &inner(OTHER6, true)),
            Some(Counter::NotForUs),
        ),
        untouched("plain UDP to the IPv4 VIP", eth4(&inner(VIP4, false)), None),
        untouched("plain TCP to the IPv6 VIP", eth6(&inner(VIP6, true)), None),
        untouched(
            "GUE over IPv4 to a port not configured",
            gue4(6081, &inner(VIP4, false)),
            None,
        ),
        untouched(
            "GUE over IPv6 to a port not configured",
            gue6(6081, &inner(VIP6, false)),
            None,
        ),
        untouched(
            "a VLAN-tagged IPIP frame (the program looks at untagged frames)",
            vlan,
            None,
        ),
        untouched("ARP", arp, None),
        untouched(
            "a later fragment of a datagram to the GUE port (its port is not in it)",
            rechecksum(patch(gue4(GUE_PORT, &inner(VIP4, false)), 20, &[0x00, 0x10])),
            None,
        ),
        untouched(
            "IPv6 in IPv6 behind an outer hop-by-hop header (the load balancer sends none)",
            eth6(&encap::ipv6(LB6, ELEMENT6, 0, 0, &hop_by_hop)),
            None,
        ),
        untouched(
            "an IPv4 frame too short for its header",
            encap::ethernet(
                ELEMENT_MAC,
                LB_MAC,
                ETH_P_IP,
                &[0x45, 0, 0, 10, 0, 0, 0, 0, 64, 4],
            ),
            None,
        ),
    ];
    for case in &cases {
        check(&p, &prog, case);
    }
}

#[test]
#[expect(clippy::too_many_lines, reason = "one fixture table, a case per malformation")]
fn malformed_encapsulated_frames_pass_untouched_and_are_counted() {
    let (p, prog) = loaded();
    let v4 = inner(VIP4, false);
    let v6 = inner(VIP6, false);
    let ok4 = ipip(&v4);
    let ok6 = ip6ip6(&v6);
    let g4 = gue4(GUE_PORT, &v4);
    let g6 = gue6(GUE_PORT, &v6);
    let be = |n: usize| u16::try_from(n).expect("small").to_be_bytes();
    // Offsets in the frames: outer IPv4 at 14 (total length 16, flags 20), its payload at 34;
    // outer IPv6 at 14 (payload length 18), its payload at 54; GUE's UDP length at 34+4 / 54+4.
    let mut gue_v0 = vec![0u8, 0, 0, 0];
    gue_v0.extend_from_slice(&v4);
    let mut mapped = Frame::new(
        ip(CLIENT6),
        ip("::ffff:10.10.0.100"),
        L4::Udp {
            sport: 40000,
            dport: 53,
        },
    );
    mapped.payload = b"mapped".to_vec();
    let cases = [
        untouched(
            "IPIP, outer total length past the frame",
            rechecksum(patch(ok4.clone(), 16, &be(ok4.len() - 14 + 1))),
            Some(Counter::Malformed),
        ),
        untouched(
            "IPIP, bytes past the outer total length (no Ethernet padding)",
            trailing(ok4.clone(), 4),
            Some(Counter::Malformed),
        ),
        untouched(
            "IPv6 in IPv6, outer payload length past the frame",
            patch(ok6.clone(), 18, &be(ok6.len() - 54 + 1)),
            Some(Counter::Malformed),
        ),
        untouched(
            "IPv6 in IPv6, bytes past the outer payload",
            trailing(ok6.clone(), 4),
            Some(Counter::Malformed),
        ),
        untouched(
            "IPv6 in IPv6, outer payload length 0 (a jumbogram)",
            patch(ok6.clone(), 18, &[0, 0]),
            Some(Counter::Malformed),
        ),
        untouched(
            "IPIP, outer IHL 4",
            rechecksum(patch(ok4.clone(), 14, &[0x44])),
            Some(Counter::Malformed),
        ),
        untouched(
            "IPIP, outer \"more fragments\"",
            rechecksum(patch(ok4.clone(), 20, &[0x20, 0])),
            Some(Counter::Malformed),
        ),
        untouched(
            "IPIP, outer fragment offset",
            rechecksum(patch(ok4.clone(), 20, &[0x00, 0x10])),
            Some(Counter::Malformed),
        ),
        untouched(
            "GUE over IPv4, first fragment of the outer datagram",
            rechecksum(patch(g4.clone(), 20, &[0x20, 0])),
            Some(Counter::Malformed),
        ),
        untouched(
            "IPIP, inner header cut short",
            ipip(&v4[..12]),
            Some(Counter::Malformed),
        ),
        untouched(
            "IPv6 in IPv6, inner header cut short",
            ip6ip6(&v6[..30]),
            Some(Counter::Malformed),
        ),
        untouched(
            "IPIP, inner total length longer than the outer payload",
            ipip(&patch(v4.clone(), 2, &be(v4.len() + 1))),
            Some(Counter::Malformed),
        ),
        untouched(
            "IPIP, inner total length shorter than the outer payload",
            ipip(&patch(v4.clone(), 2, &be(v4.len() - 1))),
            Some(Counter::Malformed),
        ),
        untouched(
            "IPIP, inner IHL 4",
            ipip(&patch(v4.clone(), 0, &[0x44])),
            Some(Counter::Malformed),
        ),
        untouched(
            "IPv6 in IPv6, inner payload length disagreeing with the outer payload",
            ip6ip6(&patch(v6.clone(), 4, &be(v6.len() - 40 + 1))),
            Some(Counter::Malformed),
        ),
        untouched("IPIP carrying IPv6", ipip(&v6), Some(Counter::Malformed)),
        untouched(
            "IPv6 in IPv6 carrying IPv4",
            ip6ip6(&v4),
            Some(Counter::Malformed),
        ),
        untouched(
            "GUE over IPv4 carrying IPv6",
            gue4(GUE_PORT, &v6),
            Some(Counter::Malformed),
        ),
        untouched(
            "GUE over IPv6 carrying IPv4",
            gue6(GUE_PORT, &v4),
            Some(Counter::Malformed),
        ),
        untouched(
            "GUE payload whose first nibble is 0 (variant 0)",
            gue4(GUE_PORT, &gue_v0),
            Some(Counter::Malformed),
        ),
        untouched(
            "GUE over IPv4, UDP length 7",
            patch(g4.clone(), 38, &be(7)),
            Some(Counter::Malformed),
        ),
        untouched(
            "GUE over IPv4, UDP length past the outer payload",
            patch(g4.clone(), 38, &be(g4.len() - 34 + 1)),
            Some(Counter::Malformed),
        ),
        untouched(
            "GUE over IPv6, UDP length 7",
            patch(g6.clone(), 58, &be(7)),
            Some(Counter::Malformed),
        ),
        untouched(
            "GUE over IPv6, UDP length past the outer payload",
            patch(g6.clone(), 58, &be(g6.len() - 54 + 1)),
            Some(Counter::Malformed),
        ),
        untouched(
            "IPv6 in IPv6 to an IPv4-mapped inner destination (it would match the IPv4 VIP)",
            ip6ip6(&ip_packet(&mapped)),
            Some(Counter::Malformed),
        ),
    ];
    for case in &cases {
        check(&p, &prog, case);
    }
}

#[test]
fn configuring_again_replaces_the_vips_and_the_ports() {
    let (mut p, prog) = loaded();
    p.configure(&config(&[VIP6], &[7000])).expect("configure again");
    for case in [
        untouched(
            "IPIP to the VIP no longer configured",
            ipip(&inner(VIP4, false)),
            Some(Counter::NotForUs),
        ),
        untouched(
            "GUE to the port no longer configured",
            gue6(GUE_PORT, &inner(VIP6, false)),
            None,
        ),
        stripped(
            "GUE to the new port",
            gue6(7000, &inner(VIP6, false)),
            eth6(&inner(VIP6, false)),
        ),
        stripped(
            "IPv6 in IPv6 to the VIP kept",
            ip6ip6(&inner(VIP6, true)),
            eth6(&inner(VIP6, true)),
        ),
    ] {
        check(&p, &prog, &case);
    }
}

/// The object's maps are `vnfpool_common::decap::ALL` with the ABI crate's sizes, pinned where
/// asked, and bpftool prints their fields by name.
#[test]
fn the_objects_maps_match_the_abi_crate_and_dump_with_field_names() {
    let pins = PinDir::new();
    let mut p = DecapProgram::load(Some(pins.path())).expect("load with pins");
    let in_object: std::collections::BTreeSet<&str> = p
        .ebpf_mut()
        .maps()
        .map(|(name, _)| name)
        .filter(|name| !name.starts_with(".rodata"))
        .collect();
    let in_abi: std::collections::BTreeSet<&str> = decap::ALL.iter().copied().collect();
    assert_eq!(
        in_object, in_abi,
        "maps of vnfpool-decap vs vnfpool_common::decap::ALL"
    );
    for (name, want) in layout() {
        let info = MapInfo::from_pin(pins.path().join(name)).unwrap_or_else(|e| panic!("{name} pinned: {e}"));
        assert_eq!(
            (info.key_size(), info.value_size(), info.max_entries()),
            want,
            "{name}: key size, value size, max entries"
        );
        assert_eq!(info.name_as_str(), Some(name), "{name}: kernel name");
    }
    p.configure(&config(&[VIP4], &[GUE_PORT])).expect("configure");
    let prog = handle(p.ebpf_mut(), decap::PROGRAM).expect("handle");
    assert_eq!(run(&prog, &ipip(&inner(VIP4, false))).verdict, XDP_PASS);
    for (name, field, value) in [
        // 10.10.0.100, IPv4-mapped, as bytes.
        (decap::VIPS, "addr", "255,255,10,10,0,100"),
        (decap::GUE_PORTS, "ports", "6080,0,0"),
        (decap::STATS, "packets", "\"packets\": 1"),
    ] {
        let text = bpftool_dump(&pins.path().join(name));
        let squeezed: String = text.chars().filter(|c| !c.is_whitespace() || *c == ' ').collect();
        let squeezed = squeezed.replace(", ", ",");
        assert!(
            text.contains(&format!("\"{field}\"")) && (squeezed.contains(value) || text.contains(value)),
            "{name}: bpftool shows no {field} with {value}:\n{text}"
        );
    }
}

/// Per-packet cost of the program against a bare `XDP_PASS` on the same frames (printed with
/// `--nocapture`); the test checks that the decapsulating runs did decapsulate.
#[test]
fn decapsulation_cost_against_a_bare_pass() {
    let (p, prog) = loaded();
    let mut base = Ebpf::load(BASELINE_OBJECT).expect("loading the floor programs");
    let pass: &mut Xdp = base
        .program_mut("baseline_pass")
        .expect("baseline_pass")
        .try_into()
        .expect("xdp");
    pass.load().expect("load baseline_pass");
    let floor = handle(&base, "baseline_pass").expect("handle");
    let before = packets(&p.counters().expect("counters"));
    for (name, frame) in [
        ("IPIP, UDP to the VIP", ipip(&inner(VIP4, false))),
        ("GUE over IPv6 to the VIP", gue6(GUE_PORT, &inner(VIP6, false))),
    ] {
        let c = encap::cost(&prog, &floor, &frame, CALLS).expect("test runs");
        println!(
            "{name}: decap {} ns, bare XDP_PASS {} ns (median of {CALLS} single runs each)",
            c.program.as_nanos(),
            c.floor.as_nanos()
        );
    }
    let after = packets(&p.counters().expect("counters"));
    assert_eq!(
        after[Counter::Decapsulated as usize] - before[Counter::Decapsulated as usize],
        2 * CALLS as u64,
        "every measured run decapsulated"
    );
    for (name, frame) in [
        ("plain UDP (not encapsulated)", eth4(&inner(VIP4, false))),
        ("IPIP to another address", ipip(&inner(OTHER4, false))),
    ] {
        let d = encap::cost_repeated(&prog, &frame, 100_000, 9).expect("test runs");
        let f = encap::cost_repeated(&floor, &frame, 100_000, 9).expect("test runs");
        println!(
            "{name}: decap {} ns, bare XDP_PASS {} ns (median of 9 x 100,000 runs)",
            d.as_nanos(),
            f.as_nanos()
        );
    }
}

// === the command, end to end ===

/// The `vnfpool` command (the test crate's copy of it).
const BIN: &str = env!("CARGO_BIN_EXE_vnfpool-under-test");

/// `vnfpool decap args` in the network namespace `netns` (only the network namespace: the pins
/// go to the host's bpffs, which `ip netns exec` would hide); its exit code, stdout and stderr.
fn vnfpool_decap(netns: &Netns, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", netns.path().display()))
        .arg(BIN)
        .arg("decap")
        .args(args)
        .output()
        .expect("running vnfpool decap");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `InUnknownProtos` of the calling thread's network namespace: IP packets for this host whose
/// protocol nothing handles (IPIP without the module, here).
fn unknown_protos() -> u64 {
    let snmp = std::fs::read_to_string("/proc/thread-self/net/snmp").expect("/proc/thread-self/net/snmp");
    let mut ip = snmp.lines().filter(|l| l.starts_with("Ip: "));
    let (names, values) = (ip.next().expect("Ip: names"), ip.next().expect("Ip: values"));
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "InUnknownProtos")
        .and_then(|(_, v)| v.parse().ok())
        .expect("InUnknownProtos")
}

/// Polls `f` until it holds, for at most `limit`.
#[track_caller]
fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "waited {limit:?} for {what}");
        std::thread::yield_now();
    }
}

/// A sender namespace (the load balancer, and the client behind it) and an element namespace
/// on a /30; the element holds the VIP on `lo` and a UDP server on it. An IPIP datagram from the
/// sender (a raw socket: no ipip module needed) reaches the server through `vnfpool decap`, and
/// the server's reply goes straight back to the client (direct server return). Detached, the
/// same datagram stops at the element's IP layer, and the pins are gone.
#[test]
fn vnfpool_decap_delivers_ipip_to_the_vip_until_detached() {
    let vip = Ipv4Addr::new(10, 200, 9, 100);
    let client = Ipv4Addr::new(10, 98, 0, 1);
    let (sender_addr, element_addr) = (Ipv4Addr::new(10, 99, 0, 1), Ipv4Addr::new(10, 99, 0, 2));
    let pins = PinDir::new();
    let sender = Netns::new();
    let element = Netns::new();
    for ns in [&sender, &element] {
        // Before any link exists, so that every interface inherits it: the reply leaves the
        // element from the VIP, an address the sender has no route to.
        ns.sysctl("net.ipv4.conf.all.rp_filter", "0");
        ns.sysctl("net.ipv4.conf.default.rp_filter", "0");
    }
    let link = VethPair::new(&sender, &element);
    let iface = link.b.name.clone();
    sender.ip(&["addr", "add", &format!("{sender_addr}/30"), "dev", &link.a.name]);
    sender.ip(&["addr", "add", &format!("{client}/32"), "dev", "lo"]);
    element.ip(&["addr", "add", &format!("{element_addr}/30"), "dev", &iface]);
    element.ip(&["addr", "add", &format!("{vip}/32"), "dev", "lo"]);
    element.ip(&[
        "route",
        "add",
        &format!("{client}/32"),
        "via",
        &sender_addr.to_string(),
    ]);

    let (ready, up) = mpsc::channel();
    let server = element.spawn("decap-udp", move |stop| {
        lab::udp_server("e1", SocketAddr::from((vip, lab::UDP_PORT)), ready, stop);
    });
    up.recv_timeout(Duration::from_secs(10))
        .expect("the server starts")
        .expect("the server listens");

    // The client's socket, and the load balancer's raw socket for IPIP, both in the sender.
    let (reply_socket, raw) = sender.run(|| {
        let s = UdpSocket::bind((client, 40000)).expect("client socket");
        s.set_read_timeout(Some(lab::IO_TIMEOUT)).expect("timeout");
        let raw = Socket::new(
            Domain::IPV4,
            Type::RAW,
            Some(Protocol::from(i32::from(PROTO_IPIP))),
        )
        .expect("raw IPIP socket");
        (s, raw)
    });
    let datagram = ip_packet(&Frame::new(
        IpAddr::V4(client),
        IpAddr::V4(vip),
        L4::Udp {
            sport: 40000,
            dport: lab::UDP_PORT,
        },
    ));
    let to: socket2::SockAddr = SocketAddr::from((element_addr, 0)).into();
    let send = || {
        let n = raw.send_to(&datagram, &to).expect("sending the IPIP datagram");
        assert_eq!(n, datagram.len());
    };

    let root = pins.path().to_str().expect("UTF-8 pin path").to_owned();
    let vip_text = vip.to_string();
    let attach = ["--interface", &iface, "--vip", &vip_text, "--pin-dir", &root];
    let (code, out, err) = vnfpool_decap(&element, &attach);
    assert_eq!(code, Some(0), "vnfpool decap: {out}{err}");
    assert!(out.contains("native (driver) mode"), "veth has native XDP: {out}");
    let dir = pins.path().join(&iface);
    for pin in decap::ALL.iter().chain([&decap::LINK_PIN]) {
        assert!(dir.join(pin).exists(), "{pin} pinned in {}", dir.display());
    }

    send();
    let mut buf = [0u8; 64];
    let (n, from) = reply_socket
        .recv_from(&mut buf)
        .expect("the server's reply to the client");
    assert_eq!(
        (&buf[..n], from),
        (&b"e1"[..], SocketAddr::from((vip, lab::UDP_PORT))),
        "the reply comes from the VIP, straight to the client"
    );
    let counters = pinned_counters(pins.path(), &iface).expect("pinned counters");
    assert_eq!(
        counters[Counter::Decapsulated as usize].packets,
        1,
        "{counters:?}"
    );

    // Again with another VIP besides: the maps are rewritten, the program stays.
    let (code, out, err) = vnfpool_decap(&element, &[&attach[..], &["--vip", "10.200.9.101"]].concat());
    assert_eq!(code, Some(0), "vnfpool decap again: {out}{err}");
    assert!(out.contains("VIPs and GUE ports replaced"), "{out}");
    send();
    let (n, _) = reply_socket
        .recv_from(&mut buf)
        .expect("a reply after the rewrite");
    assert_eq!(&buf[..n], b"e1");
    assert_eq!(
        bpftool_dump(&dir.join(decap::VIPS)).matches("\"addr\"").count(),
        2,
        "both VIPs in {}",
        decap::VIPS
    );

    let (code, out, err) = vnfpool_decap(&element, &["--interface", &iface, "--detach", "--pin-dir", &root]);
    assert_eq!(code, Some(0), "vnfpool decap --detach: {out}{err}");
    assert!(!dir.exists(), "{} removed", dir.display());
    let before = element.run(unknown_protos);
    send();
    // The datagram reaches the element's IP layer, which has no handler for IPIP: positive
    // evidence that it arrived and was not stripped, before looking for a reply that must not come.
    wait_until(
        "the element to refuse the IPIP datagram",
        Duration::from_secs(5),
        || element.run(unknown_protos) > before,
    );
    reply_socket.set_nonblocking(true).expect("non-blocking");
    match reply_socket.recv_from(&mut buf) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("no reply once detached, got {other:?}"),
    }

    let (code, _, err) = vnfpool_decap(&element, &["--interface", &iface, "--detach", "--pin-dir", &root]);
    assert_eq!(code, Some(1), "detaching twice fails: {err}");
    assert!(err.contains("nothing to detach") && err.contains(&iface), "{err}");
    server.stop();
    drop(link);
}

#[test]
fn vnfpool_decap_errors_say_what_was_wrong() {
    let ns = Netns::new();
    let pins = PinDir::new();
    let root = pins.path().to_str().expect("UTF-8").to_owned();
    for (args, code, says) in [
        (
            &["--interface", "nosuch0", "--vip", "10.0.0.1", "--pin-dir", &root][..],
            1,
            "no interface named \"nosuch0\"",
        ),
        (&["--interface", "lo"], 2, "--vip <ADDR>"),
        (
            &["--interface", "lo", "--vip", "224.0.0.1"],
            2,
            "not a unicast address",
        ),
        (
            &["--interface", "lo", "--vip", "10.0.0.1", "--gue-port", "0"],
            2,
            "GUE port 0",
        ),
        (
            &["--interface", "lo", "--detach", "--pin-dir", &root],
            1,
            "nothing to detach on lo",
        ),
    ] {
        let (got, out, err) = vnfpool_decap(&ns, args);
        assert_eq!(got, Some(code), "{args:?}: {out}{err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    assert_eq!(
        std::fs::read_dir(pins.path()).expect("pin root").count(),
        0,
        "no pins left by failed commands"
    );
}
