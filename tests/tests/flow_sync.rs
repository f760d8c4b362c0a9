//! Flow sync end to end, through two loaded programs (`BPF_PROG_TEST_RUN`) and two flow-sync
//! endpoints on 127.0.0.1: a flow that node A pins to an element is steered to that element by
//! node B, whose own Maglev table would pick another.

use std::{
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::watch;
use vnfpool_common::{
    addr,
    element::{Element, STATE_UP},
    flow::FlowKey,
    vip::PROTO_TCP,
};
use vnfpool_daemon::{
    dataplane::{FlowHashKey, FlowTable, LoadOptions, Mapping},
    flowsync::{FlowSync, FlowSyncConfig},
};
use vnfpool_tests::{
    harness::{Harness, verdict_name},
    packet::{Frame, HOST_MAC, L4},
};

const XDP_TX: u32 = 3;
const VIP: &str = "10.10.0.100";
const CLIENT: &str = "10.0.0.2";
const PORT: u16 = 8080;
const KEY: [u8; 32] = [0x5a; 32];

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

fn mac(n: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, 0xe0, n]
}

/// Pool 0 at VIP:8080/tcp with elements 0 and 1 up, every new flow to element `to`. Every
/// node hashes flows with the same key, as a cluster's nodes derive it from their shared secret.
fn node(to: u16) -> Harness {
    let mut h = Harness::with(&LoadOptions {
        flow_hash_key: FlowHashKey::Required([0x5eed, 0xc1a5]),
        ..LoadOptions::default()
    });
    h.dp.add_vip(0, addr::from_ip(ip(VIP)), PORT, PROTO_TCP)
        .expect("add vip");
    let element = |n: u8| Element {
        ifindex: 1,
        state: STATE_UP,
        dst_mac: mac(n),
        src_mac: HOST_MAC,
        encap: 0,
        _pad: [0; 3],
    };
    h.dp.apply(
        0,
        &Mapping {
            ring: vec![to; 251],
            elements: vec![element(0), element(1)],
            tunnels: Vec::new(),
        },
    )
    .expect("apply");
    h
}

fn frame(sport: u16) -> Vec<u8> {
    Frame::new(ip(CLIENT), ip(VIP), L4::Tcp { sport, dport: PORT }).build()
}

fn key(sport: u16) -> FlowKey {
    FlowKey {
        src: addr::from_ip(ip(CLIENT)),
        sport_be: sport.to_be(),
        dport_be: PORT.to_be(),
        pool: 0,
        proto: PROTO_TCP,
        _pad: 0,
    }
}

#[track_caller]
fn forwarded_to(h: &mut Harness, sport: u16) -> u8 {
    let r = h.run(&frame(sport));
    assert_eq!(r.verdict, XDP_TX, "sport {sport}: {}", verdict_name(r.verdict));
    r.frame[5]
}

#[test]
fn a_flow_pinned_on_one_node_keeps_its_element_on_another() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // Node A's table sends new flows to element 1, node B's to element 0 (as after an
    // element-set change seen by B only: the point is that B's table would pick otherwise).
    let mut a = node(1);
    let mut b = node(0);
    a.dp.set_flow_events(true).expect("events on at A");
    let a_events = a.dp.flow_events().expect("A's event reader");
    let a_table: Arc<dyn FlowTable> = Arc::new(a.dp.flow_table().expect("A's table"));
    let b_table: Arc<dyn FlowTable> = Arc::new(b.dp.flow_table().expect("B's table"));
    let sports: Vec<u16> = (20_000..20_300).collect();

    rt.block_on(async {
        let any = "127.0.0.1:0".parse().expect("address");
        let (_b_peers, none) = watch::channel(Vec::new());
        let (_b_events_tx, b_events) = tokio::sync::mpsc::channel(1);
        let b_sync = FlowSync::start(FlowSyncConfig::new(any, KEY.to_vec(), 2), b_events, b_table, none)
            .await
            .expect("start B");
        let (_a_peers, peers) = watch::channel(vec![b_sync.local_addr()]);
        let a_sync = FlowSync::start(
            FlowSyncConfig::new(any, KEY.to_vec(), 1),
            a_events,
            a_table,
            peers,
        )
        .await
        .expect("start A");

        // New flows at A: element 1, and each one an event.
        for &sport in &sports {
            assert_eq!(forwarded_to(&mut a, sport), mac(1)[5]);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let missing = sports
                .iter()
                .filter(|&&p| b.dp.flow(&key(p)).expect("B lookup") != Some(1))
                .count();
            if missing == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{missing} of {} flows not at B: A {:?}, B {:?}",
                sports.len(),
                a_sync.stats().snapshot(),
                b_sync.stats().snapshot()
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let sb = b_sync.stats().snapshot();
        assert_eq!(sb.rejected.iter().sum::<u64>(), 0, "{sb:?}");
        assert!(sb.records_received >= sports.len() as u64, "{sb:?}");
    });

    // ECMP moves the flows to B: they keep element 1 although B's table picks element 0.
    for &sport in &sports {
        assert_eq!(forwarded_to(&mut b, sport), mac(1)[5], "sport {sport} at B");
    }
    assert_eq!(
        forwarded_to(&mut b, 30_000),
        mac(0)[5],
        "a flow A never saw: B's own pick"
    );
}
