//! Encapsulated packets as a vnfpool load balancer sends them to an element on another subnet
//! (issue #16), built byte by byte, and the per-packet cost of the element's decapsulation
//! program (`vnfpool decap`) against a bare `XDP_PASS`.
//!
//! Outer IPv4: IHL 5, DF, id 0, TTL 64, checksum computed; outer IPv6: hop limit 64, the flow
//! label given; GUE (variant 1): UDP to the GUE port with checksum 0, the inner packet as its
//! payload.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use aya::programs::{TestRun as _, TestRunOptions, Xdp};

use crate::packet::checksum;

/// `IPPROTO_IPIP`: IPv4 in IPv4.
pub const PROTO_IPIP: u8 = 4;
/// `IPPROTO_IPV6`: IPv6 in IPv6.
pub const PROTO_IPV6: u8 = 41;
/// `IPPROTO_UDP`: GUE.
pub const PROTO_UDP: u8 = 17;

/// An outer IPv4 header carrying `payload` with protocol `proto`, followed by `payload`.
#[must_use]
pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, payload: &[u8]) -> Vec<u8> {
    let total = u16::try_from(20 + payload.len()).expect("fits an IPv4 packet");
    let mut h = vec![0x45, 0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&[0, 0, 0x40, 0]); // id 0, DF
    h.extend_from_slice(&[64, proto, 0, 0]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    let sum = checksum(&h);
    h[10..12].copy_from_slice(&sum.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

/// An outer IPv6 header with next header `next` and `flow_label` (20 bits), then `payload`.
#[must_use]
pub fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, next: u8, flow_label: u32, payload: &[u8]) -> Vec<u8> {
    let first = (6u32 << 28) | (flow_label & 0xF_FFFF);
    let mut h = first.to_be_bytes().to_vec();
    let len = u16::try_from(payload.len()).expect("fits an IPv6 payload");
    h.extend_from_slice(&len.to_be_bytes());
    h.extend_from_slice(&[next, 64]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    h.extend_from_slice(payload);
    h
}

/// A UDP header (checksum 0, as the load balancer sends GUE), then `payload`.
#[must_use]
pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let len = u16::try_from(8 + payload.len()).expect("fits a datagram");
    let mut h = Vec::with_capacity(8 + payload.len());
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&dport.to_be_bytes());
    h.extend_from_slice(&len.to_be_bytes());
    h.extend_from_slice(&[0, 0]);
    h.extend_from_slice(payload);
    h
}

/// An Ethernet frame: MACs, `ethertype`, `payload`.
#[must_use]
pub fn ethernet(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// How a tunnel wraps an IP packet.
#[derive(Clone, Copy, Debug)]
pub enum Encap {
    /// IPv4-in-IPv4 (protocol 4) or IPv6-in-IPv6 (next header 41).
    Ipip,
    /// GUE variant 1: the inner packet directly in UDP, without a checksum.
    Gue { sport: u16, dport: u16 },
    /// VXLAN: UDP to 4789 (no checksum), the VXLAN header with `vni`, then the inner packet
    /// behind an Ethernet header from `inner_src` to `inner_dst`.
    Vxlan {
        sport: u16,
        vni: u32,
        inner_dst: [u8; 6],
        inner_src: [u8; 6],
    },
}

/// The outer IP header of a tunnel from `src` to `dst`.
#[derive(Clone, Copy, Debug)]
pub struct Outer {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub encap: Encap,
    /// IPv6 only: the flow label (20 bits).
    pub flow_label: u32,
}

/// The frame from `src_mac` to `dst_mac` that carries the IP packet `inner` through `outer`,
/// as the load balancer sends it.
#[must_use]
pub fn encapsulated(dst_mac: [u8; 6], src_mac: [u8; 6], outer: &Outer, inner: &[u8]) -> Vec<u8> {
    let (proto, payload) = match outer.encap {
        Encap::Ipip if outer.src.is_ipv4() => (PROTO_IPIP, inner.to_vec()),
        Encap::Ipip => (PROTO_IPV6, inner.to_vec()),
        Encap::Gue { sport, dport } => (PROTO_UDP, udp(sport, dport, inner)),
        Encap::Vxlan {
            sport,
            vni,
            inner_dst,
            inner_src,
        } => {
            let ethertype = if outer.src.is_ipv4() { 0x0800 } else { 0x86dd };
            let mut vxlan = vec![0x08, 0, 0, 0];
            vxlan.extend_from_slice(&(vni << 8).to_be_bytes());
            vxlan.extend_from_slice(&ethernet(inner_dst, inner_src, ethertype, inner));
            (PROTO_UDP, udp(sport, 4789, &vxlan))
        }
    };
    match (outer.src, outer.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => ethernet(dst_mac, src_mac, 0x0800, &ipv4(s, d, proto, &payload)),
        (IpAddr::V6(s), IpAddr::V6(d)) => ethernet(
            dst_mac,
            src_mac,
            0x86dd,
            &ipv6(s, d, proto, outer.flow_label, &payload),
        ),
        _ => panic!("mixed address families in a tunnel"),
    }
}

/// Per-packet cost of a program on one frame, as the kernel times it.
#[derive(Debug, Clone, Copy)]
pub struct Cost {
    /// The program under test.
    pub program: Duration,
    /// The bare `XDP_PASS` floor on the same frame, measured interleaved with it.
    pub floor: Duration,
}

/// Median per-run time of `prog` and of `floor` over `calls` calls of one run each, taken
/// alternately (so that both see the same caches and clock).
///
/// One run per call, not `repeat`: a repeated run does not restore the frame, so after the
/// first run a decapsulation program would see the inner packet. A single run's time includes
/// the kernel's timer reads, which the floor pays too: compare the two, not the absolute.
///
/// # Errors
/// When a test run fails.
pub fn cost(
    prog: &Xdp,
    floor: &Xdp,
    frame: &[u8],
    calls: usize,
) -> Result<Cost, aya::programs::ProgramError> {
    let mut a = Vec::with_capacity(calls);
    let mut b = Vec::with_capacity(calls);
    let mut out = vec![0u8; frame.len() + 64];
    for _ in 0..calls {
        for (p, v) in [(prog, &mut a), (floor, &mut b)] {
            let opts = TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                repeat: 1,
                ..Default::default()
            };
            v.push(p.test_run(opts)?.duration);
        }
    }
    a.sort_unstable();
    b.sort_unstable();
    Ok(Cost {
        program: a[a.len() / 2],
        floor: b[b.len() / 2],
    })
}

/// Median per-run time of `prog` over `samples` calls of `repeat` runs of `frame`, for frames
/// the program does not change (every run takes the same path).
///
/// # Errors
/// When a test run fails.
pub fn cost_repeated(
    prog: &Xdp,
    frame: &[u8],
    repeat: u32,
    samples: usize,
) -> Result<Duration, aya::programs::ProgramError> {
    let mut v = Vec::with_capacity(samples);
    let mut out = vec![0u8; frame.len() + 64];
    for _ in 0..samples {
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat,
            ..Default::default()
        };
        v.push(prog.test_run(opts)?.duration);
    }
    v.sort_unstable();
    Ok(v[v.len() / 2])
}
