//! DESIGN invariant 1: while mappings flip under it, the data plane's every choice comes from
//! one whole mapping, never a mix of two.
//!
//! Mapping number `t` sends every new flow to element `t % 2`, and gives element `i` the MAC
//! `02:t:t:t:t:i` (low byte of `t`). A packet that read its table from one mapping and its
//! element table from another, or a table or element entry half rewritten, comes out with a
//! MAC whose tag bytes differ from each other or whose element index is not the tag's parity.

use std::{
    net::{IpAddr, Ipv4Addr},
    sync::atomic::{AtomicBool, Ordering},
};

use vnfpool_common::{
    addr,
    element::{Element, STATE_UP},
    maps,
    vip::PROTO_TCP,
};
use vnfpool_daemon::dataplane::Mapping;
use vnfpool_tests::{
    harness::{Harness, run},
    packet::{Frame, HOST_MAC, L4, hex},
    pins::PinDir,
};

const XDP_TX: u32 = 3;
const SWITCHES: u32 = 300;

fn mapping(t: u32) -> Mapping {
    let tag = t as u8;
    let e = |i: u8| Element {
        ifindex: 1,
        state: STATE_UP,
        dst_mac: [2, tag, tag, tag, tag, i],
        src_mac: HOST_MAC,
        encap: 0,
        _pad: [0; 3],
    };
    Mapping {
        ring: vec![(t % 2) as u16; maps::DEFAULT_RING_SIZE as usize],
        elements: vec![e(0), e(1)],
        tunnels: Vec::new(),
    }
}

#[test]
fn packets_never_see_a_mix_of_two_mappings() {
    let vip: IpAddr = "10.10.0.100".parse().expect("address");
    let pins = PinDir::new();
    let mut h = Harness::new();
    h.dp.add_vip(0, addr::from_ip(vip), 8080, PROTO_TCP)
        .expect("add vip");
    h.dp.apply(0, &mapping(0)).expect("apply");
    let reader = h.second_handle(&pins);
    let done = AtomicBool::new(false);

    let (seen, mixes) = std::thread::scope(|s| {
        let r = s.spawn(|| {
            let (mut seen, mut mixes) = ([0u32; 2], Vec::new());
            let mut i = 0u32;
            // Each packet is a new flow (a new source), so each one reads the Maglev table.
            while !done.load(Ordering::Acquire) {
                i += 1;
                let src = IpAddr::V4(Ipv4Addr::from(0x0b00_0000 | i));
                let frame = Frame::new(
                    src,
                    vip,
                    L4::Tcp {
                        sport: 1000,
                        dport: 8080,
                    },
                )
                .build();
                let out = run(&reader, &frame);
                let m = &out.frame[..6];
                let consistent = out.verdict == XDP_TX
                    && m[1..5].iter().all(|&b| b == m[1])
                    && u32::from(m[5]) == u32::from(m[1]) % 2;
                if consistent {
                    seen[usize::from(m[5])] += 1;
                } else if mixes.len() < 5 {
                    mixes.push(hex(&out.frame[..14]));
                }
            }
            (seen, mixes)
        });
        for t in 1..=SWITCHES {
            let applied = h.dp.apply(0, &mapping(t)).expect("apply");
            assert_eq!(applied.generation, t + 1);
        }
        done.store(true, Ordering::Release);
        r.join().expect("reader thread")
    });
    println!("{SWITCHES} switches; packets per mapping parity: {seen:?}");
    assert!(
        mixes.is_empty(),
        "packets saw a mix of mappings:\n{}",
        mixes.join("\n")
    );
    assert!(
        seen[0] > 0 && seen[1] > 0,
        "the reader ran during both kinds of mapping: {seen:?}"
    );
}
