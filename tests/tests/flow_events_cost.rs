//! What a new flow costs the program with flow events on, against the same program with them
//! off: two loaded programs, the same 4,000 distinct new flows through each, one run per
//! `BPF_PROG_TEST_RUN` call, the median of each round, in turns for 30 rounds. Ignored by
//! default (a measurement, not a check); BENCHMARKS.md has the command and the figures.

use std::net::IpAddr;

use vnfpool_common::{
    addr,
    element::{Element, STATE_UP},
    flow::FlowEvent,
    vip::PROTO_TCP,
};
use vnfpool_daemon::dataplane::{LoadOptions, Mapping};
use vnfpool_tests::{
    harness::Harness,
    packet::{Frame, HOST_MAC, L4},
};

const VIP: &str = "10.10.0.100";
const FLOWS: u32 = 4000;
const ROUNDS: u32 = 30;

fn node() -> Harness {
    // The flood guard checked but never reached: every new flow is recorded, with its event.
    let mut h = Harness::with(&LoadOptions {
        new_flows_per_unit: Some(u32::MAX),
        ..LoadOptions::default()
    });
    let vip: IpAddr = VIP.parse().expect("address");
    h.dp.add_vip(0, addr::from_ip(vip), 8080, PROTO_TCP)
        .expect("add vip");
    let e = Element {
        ifindex: 1,
        state: STATE_UP,
        dst_mac: [2, 0, 0, 0, 0, 9],
        src_mac: HOST_MAC,
        encap: 0,
        _pad: [0; 3],
    };
    h.dp.apply(
        0,
        &Mapping {
            ring: vec![0; 251],
            elements: vec![e],
            tunnels: Vec::new(),
        },
    )
    .expect("apply");
    h
}

/// `FLOWS` flows no earlier round used.
fn frames(round: u32) -> Vec<Vec<u8>> {
    (0..FLOWS)
        .map(|i| {
            let n = round * FLOWS + i;
            let src: IpAddr = format!("10.{}.{}.{}", 1 + (n >> 16) % 200, (n >> 8) & 255, n & 255)
                .parse()
                .expect("address");
            let l4 = L4::Tcp {
                sport: 1000 + (n % 50_000) as u16,
                dport: 8080,
            };
            Frame::new(src, VIP.parse().expect("address"), l4).build()
        })
        .collect()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn round(h: &mut Harness, frames: &[Vec<u8>]) -> f64 {
    let mut ns: Vec<f64> = frames
        .iter()
        .map(|f| h.time(f, 1).expect("test run").as_secs_f64() * 1e9)
        .collect();
    median(&mut ns)
}

#[test]
#[ignore = "a measurement: run with --ignored --nocapture"]
fn new_flow_cost_with_flow_events() {
    let mut off = node();
    let mut on = node();
    on.dp.set_flow_events(true).expect("events on");
    let mut reader = on.dp.flow_events().expect("reader");
    let (mut s_off, mut s_on) = (Vec::new(), Vec::new());
    let mut drained: Vec<FlowEvent> = Vec::new();
    for r in 0..ROUNDS {
        let f = frames(r);
        s_off.push(round(&mut off, &f));
        s_on.push(round(&mut on, &f));
        drained.clear();
        reader.drain(&mut drained, usize::MAX);
        assert_eq!(drained.len(), FLOWS as usize, "one event per new flow");
    }
    let (off, on) = (median(&mut s_off), median(&mut s_on));
    println!(
        "new flow, one run per call, median of {ROUNDS} rounds of {FLOWS}: events off {off:.1} ns, \
         events on {on:.1} ns ({:+.1} ns)",
        on - off
    );
}
