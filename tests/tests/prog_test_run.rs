//! Packet fixtures run through BPF_PROG_TEST_RUN: map state, frame in, verdict and frame out.

use std::net::IpAddr;

use vnfpool_common::{element::{Element, STATE_UP}, vip::PROTO_TCP, addr};
use vnfpool_daemon::dataplane::Mapping;
use vnfpool_tests::{harness::{Harness, verdict_name}, packet::{Frame, L4, hex, with_macs, HOST_MAC}};

const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

#[test]
fn smoke_vip_tcp_is_sent_back_out_to_the_element() {
    let mut h = Harness::new();
    let e = Element { ifindex: 1, state: STATE_UP, dst_mac: [2, 0, 0, 0, 0xe1, 1], src_mac: HOST_MAC, _pad: [0; 4] };
    h.dp.add_vip(0, addr::from_ip(ip("10.10.0.100")), 8080, PROTO_TCP).expect("add vip");
    h.dp.apply(0, &Mapping { ring: vec![0; 251], elements: vec![e] }).expect("apply");
    let frame = Frame::new(ip("10.0.0.2"), ip("10.10.0.100"), L4::Tcp { sport: 40000, dport: 8080 }).build();
    let r = h.run(&frame);
    let want = with_macs(&frame, e.dst_mac, e.src_mac);
    // test_run's ingress ifindex is loopback (1), the element's interface here: XDP_TX.
    assert_eq!(r.verdict, XDP_TX, "verdict {}\nout:\n{}", verdict_name(r.verdict), hex(&r.frame));
    assert_eq!(r.frame, want, "\ngot:\n{}\nwant:\n{}", hex(&r.frame), hex(&want));

    let other = Frame::new(ip("10.0.0.2"), ip("10.10.0.101"), L4::Tcp { sport: 40000, dport: 8080 }).build();
    let r = h.run(&other);
    assert_eq!((r.verdict, r.frame), (XDP_PASS, other));
}
