//! Encapsulated forwarding through `BPF_PROG_TEST_RUN`: for each mode and family, the exact frame
//! the program sends to an element on another subnet (`vnfpool_common::tunnel`).
//!
//! `BPF_PROG_TEST_RUN` runs the program as if the frame arrived on the loopback device
//! (ifindex 1), so an element whose egress is ifindex 1 gets `XDP_TX`.

use std::net::IpAddr;

use vnfpool_common::{
    addr,
    element::{Element, STATE_UP},
    flow::{self, FlowKey},
    stats::Reason,
    tunnel::{self, ENCAP_GUE, ENCAP_IPIP, ENCAP_VXLAN, Tunnel},
    vip::{PROTO_TCP, PROTO_UDP},
};
use vnfpool_daemon::dataplane::Mapping;
use vnfpool_tests::{
    encap::{Encap, Outer, encapsulated},
    harness::{Harness, verdict_name},
    packet::{Frame, HOST_MAC, L4, checksum, hex, ip_packet},
};

const XDP_DROP: u32 = 1;
const XDP_TX: u32 = 3;
const LOOPBACK: u32 = 1;
const RING: usize = 251;
const GUE_PORT: u16 = 6080;
const VNI: u32 = 0x00ab_cdef;
/// The MAC of the elements' VXLAN device.
const VXLAN_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x7e, 0x01];

/// The next hop toward the elements (a router on the way).
const ROUTER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0xfe, 0x01];

struct Family {
    vip: &'static str,
    client: &'static str,
    /// This node's address toward the elements.
    node: &'static str,
    /// The element, on another subnet.
    element: &'static str,
}

const V4: Family = Family {
    vip: "10.10.0.100",
    client: "10.0.0.2",
    node: "192.0.2.1",
    element: "198.51.100.7",
};
const V6: Family = Family {
    vip: "fd00:10::100",
    client: "fd00:1::2",
    node: "2001:db8::1",
    element: "2001:db8:100::7",
};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

/// The tunnel entry toward `f`'s element, written out field by field (not by the daemon's
/// planner, which a fixture should check rather than trust).
fn tunnel_to(f: &Family, encap: u8, mtu: u16) -> Tunnel {
    let (src, dst) = (ip(f.node), ip(f.element));
    let csum_base = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let proto = if tunnel::over_udp(encap) {
                tunnel::IPPROTO_UDP
            } else {
                tunnel::IPPROTO_IPIP
            };
            tunnel::ipv4_base_sum(s.octets(), d.octets(), proto)
        }
        _ => 0,
    };
    let vxlan = encap == ENCAP_VXLAN;
    Tunnel {
        dst: addr::from_ip(dst),
        src: addr::from_ip(src),
        csum_base,
        mtu,
        port_be: match encap {
            ENCAP_GUE => GUE_PORT.to_be(),
            ENCAP_VXLAN => 4789u16.to_be(),
            _ => 0,
        },
        vni_be: if vxlan { (VNI << 8).to_be() } else { 0 },
        inner_mac: if vxlan { VXLAN_MAC } else { [0; 6] },
        _pad: [0; 14],
    }
}

/// Pool 0 with one element reached through `encap` over a path of `mtu` bytes, every new flow
/// to it.
fn provision(h: &mut Harness, f: &Family, proto: u8, port: u16, encap: u8, mtu: u16) {
    h.dp.add_vip(0, addr::from_ip(ip(f.vip)), port, proto)
        .expect("add vip");
    let e = Element {
        ifindex: LOOPBACK,
        state: STATE_UP,
        dst_mac: ROUTER_MAC,
        src_mac: HOST_MAC,
        encap,
        _pad: [0; 3],
    };
    h.dp.apply(
        0,
        &Mapping {
            ring: vec![0; RING],
            elements: vec![e],
            tunnels: vec![tunnel_to(f, encap, mtu)],
        },
    )
    .expect("apply");
}

fn frame(f: &Family, proto: u8, sport: u16, dport: u16) -> Frame {
    let l4 = if proto == PROTO_TCP {
        L4::Tcp { sport, dport }
    } else {
        L4::Udp { sport, dport }
    };
    Frame::new(ip(f.client), ip(f.vip), l4)
}

/// The flow hash the program computes for `fr` in pool 0 (the outer headers' entropy).
fn flow_hash(h: &Harness, fr: &Frame, proto: u8, sport: u16, dport: u16) -> u32 {
    let key = FlowKey {
        src: addr::from_ip(fr.src),
        sport_be: sport.to_be(),
        dport_be: dport.to_be(),
        pool: 0,
        proto,
        _pad: 0,
    };
    flow::hash64(&key, &h.dp.flow_hash_key()) as u32
}

/// What the program should send for `fr`: the inner IP packet as it arrived, behind the
/// tunnel's headers, to the router.
fn expected(f: &Family, encap: u8, hash: u32, fr: &Frame) -> Vec<u8> {
    let encap = match encap {
        ENCAP_GUE => Encap::Gue {
            sport: tunnel::entropy_port(hash),
            dport: GUE_PORT,
        },
        ENCAP_VXLAN => Encap::Vxlan {
            sport: tunnel::entropy_port(hash),
            vni: VNI,
            inner_dst: VXLAN_MAC,
            inner_src: HOST_MAC,
        },
        _ => Encap::Ipip,
    };
    let outer = Outer {
        src: ip(f.node),
        dst: ip(f.element),
        encap,
        flow_label: hash & 0xf_ffff,
    };
    encapsulated(ROUTER_MAC, HOST_MAC, &outer, &ip_packet(fr))
}

#[track_caller]
fn assert_frame(what: &str, verdict: u32, got: &[u8], want_verdict: u32, want: &[u8]) {
    assert!(
        verdict == want_verdict && got == want,
        "{what}: got {} want {}\ngot:\n{}\nwant:\n{}",
        verdict_name(verdict),
        verdict_name(want_verdict),
        hex(got),
        hex(want)
    );
}

#[test]
fn every_mode_and_family_sends_the_inner_packet_behind_the_tunnels_headers() {
    for (family, f) in [("IPv4", &V4), ("IPv6", &V6)] {
        for (mode, encap) in [("ipip", ENCAP_IPIP), ("gue", ENCAP_GUE), ("vxlan", ENCAP_VXLAN)] {
            for (proto, port) in [(PROTO_TCP, 8080), (PROTO_UDP, 5353)] {
                let mut h = Harness::new();
                provision(&mut h, f, proto, port, encap, 1500);
                for sport in [40000, 40001, 51234] {
                    let fr = frame(f, proto, sport, port);
                    let want = expected(f, encap, flow_hash(&h, &fr, proto, sport, port), &fr);
                    let what = format!("{family} {mode} proto {proto} sport {sport}");
                    // The new flow, then the same flow from the flow table.
                    for _ in 0..2 {
                        let r = h.run(&fr.build());
                        assert_frame(&what, r.verdict, &r.frame, XDP_TX, &want);
                    }
                }
                let stats = h.dp.pool_counters(0).expect("pool counters").vip;
                assert_eq!(
                    stats.packets, 6,
                    "{family} {mode}: every packet counted for the pool"
                );
            }
        }
    }
}

#[test]
fn a_vlan_tag_stays_behind_and_the_outer_frame_is_untagged() {
    for f in [&V4, &V6] {
        for encap in [ENCAP_IPIP, ENCAP_VXLAN] {
            let mut h = Harness::new();
            provision(&mut h, f, PROTO_TCP, 8080, encap, 1500);
            let mut fr = frame(f, PROTO_TCP, 40000, 8080);
            fr.vlans = vec![7, 100];
            let want = expected(f, encap, flow_hash(&h, &fr, PROTO_TCP, 40000, 8080), &fr);
            let r = h.run(&fr.build());
            assert_frame("QinQ-tagged", r.verdict, &r.frame, XDP_TX, &want);
        }
    }
}

#[test]
fn a_packet_whose_encapsulation_exceeds_the_path_mtu_is_not_forwarded() {
    for f in [&V4, &V6] {
        for encap in [ENCAP_IPIP, ENCAP_GUE, ENCAP_VXLAN] {
            let mut h = Harness::new();
            let fr = frame(f, PROTO_UDP, 40000, 5353);
            let inner = ip_packet(&fr).len();
            let v4 = f.vip.contains('.');
            let fits = (inner + tunnel::overhead(encap, v4)) as u16;
            provision(&mut h, f, PROTO_UDP, 5353, encap, fits - 1);
            let before = h.reason_packets(Reason::TooBig);
            let r = h.run(&fr.build());
            assert_eq!(
                verdict_name(r.verdict),
                verdict_name(XDP_DROP),
                "one byte over the MTU"
            );
            let after = h.reason_packets(Reason::TooBig);
            assert_eq!(after, before + 1, "counted too_big");

            // Exactly at the MTU it goes.
            provision(&mut h, f, PROTO_UDP, 5353, encap, fits);
            let want = expected(f, encap, flow_hash(&h, &fr, PROTO_UDP, 40000, 5353), &fr);
            let r = h.run(&fr.build());
            assert_frame("at the MTU", r.verdict, &r.frame, XDP_TX, &want);
        }
    }
}

/// The answer to a packet too big for the tunnel: `frame`'s MACs swapped (its VLAN tags kept),
/// then ICMP "fragmentation needed" / `ICMPv6` "packet too big" from the VIP to the client with
/// `fits`, quoting the packet's first 28 (IPv4) or 48 (IPv6) bytes.
fn too_big_answer(f: &Family, frame: &[u8], l3: usize, fits: u16) -> Vec<u8> {
    let mut out = frame[6..12].to_vec();
    out.extend_from_slice(&frame[..6]);
    out.extend_from_slice(&frame[12..l3]);
    let (vip, client) = (ip(f.vip), ip(f.client));
    match (vip, client) {
        (IpAddr::V4(vip), IpAddr::V4(client)) => {
            let mut icmp = vec![3, 4, 0, 0, 0, 0];
            icmp.extend_from_slice(&fits.to_be_bytes());
            icmp.extend_from_slice(&frame[l3..l3 + 28]);
            let sum = checksum(&icmp);
            icmp[2..4].copy_from_slice(&sum.to_be_bytes());
            let mut h = vec![0x45, 0, 0, 56, 0, 0, 0, 0, 64, 1, 0, 0];
            h.extend_from_slice(&vip.octets());
            h.extend_from_slice(&client.octets());
            let sum = checksum(&h);
            h[10..12].copy_from_slice(&sum.to_be_bytes());
            out.extend_from_slice(&h);
            out.extend_from_slice(&icmp);
        }
        (IpAddr::V6(vip), IpAddr::V6(client)) => {
            let mut icmp = vec![2, 0, 0, 0];
            icmp.extend_from_slice(&u32::from(fits.max(1280)).to_be_bytes());
            icmp.extend_from_slice(&frame[l3..l3 + 48]);
            let mut pseudo = vip.octets().to_vec();
            pseudo.extend_from_slice(&client.octets());
            pseudo.extend_from_slice(&56u32.to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, 58]);
            pseudo.extend_from_slice(&icmp);
            let sum = checksum(&pseudo);
            icmp[2..4].copy_from_slice(&sum.to_be_bytes());
            out.extend_from_slice(&[0x60, 0, 0, 0, 0, 56, 58, 64]);
            out.extend_from_slice(&vip.octets());
            out.extend_from_slice(&client.octets());
            out.extend_from_slice(&icmp);
        }
        _ => unreachable!(),
    }
    out
}

#[test]
fn a_packet_too_big_for_the_tunnel_is_answered_with_icmp_from_the_vip() {
    for (family, f, mtu) in [("IPv4", &V4, 1400u16), ("IPv6", &V6, 1480)] {
        for (mode, encap) in [("ipip", ENCAP_IPIP), ("gue", ENCAP_GUE), ("vxlan", ENCAP_VXLAN)] {
            for vlans in [vec![], vec![42]] {
                let mut h = Harness::new();
                provision(&mut h, f, PROTO_TCP, 8080, encap, mtu);
                let mut fr = frame(f, PROTO_TCP, 40000, 8080);
                fr.payload = vec![0xab; 1460 - 20 - if family == "IPv4" { 20 } else { 40 }];
                fr.vlans = vlans.clone();
                let input = fr.build();
                let l3 = 14 + 4 * vlans.len();
                let fits = mtu - tunnel::overhead(encap, family == "IPv4") as u16;
                let want = too_big_answer(f, &input, l3, fits);
                let r = h.run(&input);
                assert_frame(
                    &format!("{family} {mode} vlans {vlans:?}"),
                    r.verdict,
                    &r.frame,
                    XDP_TX,
                    &want,
                );
                let too_big = h.reason_packets(Reason::TooBig);
                assert_eq!(too_big, 1, "{family} {mode}: counted too_big");
                assert_eq!(
                    h.dp.pool_counters(0).expect("pool counters").vip.packets,
                    0,
                    "not counted as forwarded"
                );
            }
        }
    }
}

#[test]
fn an_icmp_error_too_big_for_the_tunnel_is_dropped_not_answered() {
    for (f, router, ty) in [(&V4, "10.0.0.1", 3u8), (&V6, "fd00:1::1", 1)] {
        let mut h = Harness::new();
        // Room for the client's SYN, not for an ICMP error quoting the element's answer.
        let syn = frame(f, PROTO_TCP, 40000, 8080);
        let v4 = f.vip.contains('.');
        let mtu = (ip_packet(&syn).len() + tunnel::overhead(ENCAP_IPIP, v4)) as u16;
        provision(&mut h, f, PROTO_TCP, 8080, ENCAP_IPIP, mtu);
        let want = expected(f, ENCAP_IPIP, flow_hash(&h, &syn, PROTO_TCP, 40000, 8080), &syn);
        let r = h.run(&syn.build());
        assert_frame("the SYN", r.verdict, &r.frame, XDP_TX, &want);

        let quoted = ip_packet(&Frame::new(
            ip(f.vip),
            ip(f.client),
            L4::Tcp {
                sport: 8080,
                dport: 40000,
            },
        ));
        let error = Frame::new(
            ip(router),
            ip(f.vip),
            L4::IcmpError {
                ty,
                inner: quoted[..quoted.len().min(if v4 { 28 } else { 48 })].to_vec(),
            },
        )
        .build();
        let r = h.run(&error);
        assert_frame(
            "an ICMP error too big for the tunnel",
            r.verdict,
            &r.frame,
            XDP_DROP,
            &error,
        );
        let too_big = h.reason_packets(Reason::TooBig);
        assert_eq!(too_big, 1, "counted too_big");
    }
}
