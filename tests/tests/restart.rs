//! DESIGN invariant 4 at the data-plane level: the program and maps are pinned, the data plane
//! keeps forwarding when the process that loaded it is gone, and a new process adopts the pins
//! without re-attaching or clearing anything.

use vnfpool_common::{
    addr,
    element::{STATE_DOWN, STATE_UP},
    vip::PROTO_TCP,
};
use vnfpool_daemon::{
    dataplane::{AyaDataplane, DataplaneError, FlowHashKey, LoadOptions, Mapping},
    model::maglev::{self, Backend},
};
use vnfpool_tests::{
    lab::{self, Lab, TCP_PORT},
    pins::PinDir,
};

/// The element that answers each connection (`None` where none did).
fn answers(conns: &mut [std::net::TcpStream]) -> Vec<Option<String>> {
    lab::ask_all(conns.iter_mut())
        .into_iter()
        .map(Result::ok)
        .collect()
}

fn mapping(lab: &Lab, states: &[u32]) -> Mapping {
    let backends: Vec<Backend> = (0..states.len())
        .filter(|&i| states[i] == STATE_UP)
        .map(|i| Backend {
            key: maglev::name_key(&lab.elements[i].name),
            index: u16::try_from(i).expect("index"),
            weight: 1,
        })
        .collect();
    Mapping {
        ring: maglev::build(&backends, maglev::DEFAULT_RING_SIZE).expect("table"),
        elements: states
            .iter()
            .enumerate()
            .map(|(i, &s)| lab.element_entry(i, s))
            .collect(),
        tunnels: Vec::new(),
    }
}

#[test]
fn data_plane_outlives_its_loader_and_is_adopted() {
    let lab = Lab::new(3);
    let pins = PinDir::new();
    let opts = LoadOptions {
        pin_dir: Some(pins.path().to_owned()),
        ..LoadOptions::default()
    };

    let mut first = AyaDataplane::load(&opts).expect("first load");
    assert!(!first.adopted(), "fresh pins");
    let key = first.flow_hash_key();
    lab.attach(&mut first);
    first
        .add_vip(0, addr::from_ip(lab.vip.into()), TCP_PORT, PROTO_TCP)
        .expect("add vip");
    first.apply(0, &mapping(&lab, &[STATE_UP; 3])).expect("apply");
    let generation = first.live(0).generation;

    let mut conns = lab.tcp_connect(30, TCP_PORT);
    let before = answers(&mut conns);
    assert!(
        before.iter().all(Option::is_some),
        "answers through the VIP: {before:?}"
    );
    let on_e1 = before.iter().filter(|b| b.as_deref() == Some("e1")).count();
    assert!(
        on_e1 > 0 && on_e1 < before.len(),
        "connections on e1 and elsewhere: {before:?}"
    );

    // The loader goes away (as on kill -9: nothing is unpinned or detached).
    drop(first);
    let during = answers(&mut conns);
    assert_eq!(
        during, before,
        "every connection answered by the same element with no loader"
    );

    // A new loader adopts: same generation, same attachment, same flows, and the flow hash key
    // the table was recorded with, although it would have made another for a new table.
    let again = LoadOptions {
        flow_hash_key: FlowHashKey::random(),
        ..opts.clone()
    };
    let mut second = AyaDataplane::load(&again).expect("second load adopts the pins");
    assert!(second.adopted());
    assert!(second.flow_hash_key() == key, "the adopted table's key is kept");
    lab.attach(&mut second);
    assert_eq!(
        second.live(0).generation,
        generation,
        "the live mapping was not touched"
    );
    assert_eq!(answers(&mut conns), before, "flows unchanged after adoption");
    // Re-adding the same VIP changes nothing; a new mapping applies on top of the adopted one.
    second
        .add_vip(0, addr::from_ip(lab.vip.into()), TCP_PORT, PROTO_TCP)
        .expect("re-add vip");
    let applied = second
        .apply(0, &mapping(&lab, &[STATE_DOWN, STATE_UP, STATE_UP]))
        .expect("apply");
    assert_eq!(applied.generation, generation + 1);
    let after = answers(&mut conns);
    for (b, a) in before.iter().zip(&after) {
        if b.as_deref() == Some("e1") {
            assert_ne!(
                a.as_deref(),
                Some("e1"),
                "a flow stayed on the element marked down"
            );
        } else {
            assert_eq!(a, b, "a flow of a healthy element moved after the adopted switch");
        }
    }
}

#[test]
fn pins_of_another_layout_are_refused_untouched() {
    let pins = PinDir::new();
    let opts = LoadOptions {
        pin_dir: Some(pins.path().to_owned()),
        flow_table_size: 4096,
        ..LoadOptions::default()
    };
    let first = AyaDataplane::load(&opts).expect("first load");
    drop(first);
    let other = LoadOptions {
        flow_table_size: 8192,
        ..opts
    };
    match AyaDataplane::load(&other) {
        Err(DataplaneError::PinMismatch { path, .. }) => {
            assert!(
                path.ends_with(vnfpool_common::maps::FLOWS),
                "the flow table differs: {}",
                path.display()
            );
        }
        Err(e) => panic!("expected a layout mismatch, got {e}"),
        Ok(_) => panic!("adopted pins of another layout"),
    }
}

#[test]
fn a_flow_table_packed_another_way_is_refused_untouched() {
    use aya::maps::{Array, Map, MapData};
    use vnfpool_common::{
        flow::{ENTRY_LAYOUT, FlowCtl},
        maps,
    };
    let pins = PinDir::new();
    let opts = LoadOptions {
        pin_dir: Some(pins.path().to_owned()),
        flow_table_size: 4096,
        ..LoadOptions::default()
    };
    drop(AyaDataplane::load(&opts).expect("first load"));
    // What a build with another entry packing would have left pinned.
    let ctl_pin = pins.path().join(maps::FLOW_CTL);
    let open = || -> Array<MapData, FlowCtl> {
        let data = MapData::from_pin(&ctl_pin).expect("open the pinned flow control");
        Array::try_from(Map::Array(data)).expect("an array of FlowCtl")
    };
    let mut ctl = open();
    let mut other = ctl.get(&0, 0).expect("read");
    assert_eq!(other.entry_layout, ENTRY_LAYOUT, "the loader records its packing");
    other.entry_layout = ENTRY_LAYOUT + 1;
    ctl.set(0, other, 0).expect("write");
    drop(ctl);
    match AyaDataplane::load(&opts) {
        Err(DataplaneError::FlowLayout { found, expected }) => {
            assert_eq!((found, expected), (ENTRY_LAYOUT + 1, ENTRY_LAYOUT));
        }
        Err(e) => panic!("expected a flow layout mismatch, got {e}"),
        Ok(_) => panic!("adopted a flow table packed another way"),
    }
    assert_eq!(
        open().get(&0, 0).expect("read"),
        other,
        "the refused table is left as it was"
    );
}

/// `VNF_TX_PORTS` holds an egress interface while a pool's elements are behind it, and not
/// after: it has 64 entries, and once elements could fill it for good, no reload or restart
/// could add the interface a new element needs. What a previous run left and no pool uses goes
/// once every pool has been applied.
#[test]
fn egress_interfaces_leave_the_tx_map_with_the_last_pool_that_used_them() {
    use std::collections::BTreeSet;

    use vnfpool_daemon::dataplane::{Dataplane as _, PoolPlan};
    let lab = Lab::new(3);
    let pins = PinDir::new();
    let opts = LoadOptions {
        pin_dir: Some(pins.path().to_owned()),
        ..LoadOptions::default()
    };
    let [a, b, c] = [0, 1, 2].map(|i| lab.elements[i].host_link.ifindex);
    let plan = |pool: u32, tx_ports: Vec<u32>| PoolPlan {
        pool,
        vips: Vec::new(),
        mapping: Mapping::default(),
        tx_ports,
    };
    let set = |ports: &[u32]| ports.iter().copied().collect::<BTreeSet<u32>>();
    lab.host.run(|| {
        let mut dp = AyaDataplane::load(&opts).expect("load");
        dp.apply_pool(&plan(0, vec![a, b])).expect("pool 0");
        dp.apply_pool(&plan(1, vec![b])).expect("pool 1");
        assert_eq!(dp.tx_ports().expect("read"), set(&[a, b]));
        dp.apply_pool(&plan(0, vec![b])).expect("pool 0 without a");
        assert_eq!(
            dp.tx_ports().expect("read"),
            set(&[b]),
            "a went with its last pool"
        );
        dp.remove_pool(1).expect("pool 1 removed");
        assert_eq!(dp.tx_ports().expect("read"), set(&[b]), "pool 0 still uses b");
        dp.apply_pool(&plan(0, Vec::new()))
            .expect("pool 0 without elements");
        assert_eq!(dp.tx_ports().expect("read"), set(&[]));
        // A run that ends with c in the map (as an older release left every interface it was
        // ever given), then one whose pools use a only.
        dp.apply_pool(&plan(0, vec![c])).expect("pool 0 behind c");
        drop(dp);
        let mut dp = AyaDataplane::load(&opts).expect("adopting load");
        assert!(dp.adopted());
        dp.apply_pool(&plan(0, vec![a])).expect("pool 0 behind a");
        assert_eq!(
            dp.tx_ports().expect("read"),
            set(&[a, c]),
            "nothing adopted goes before every pool is applied"
        );
        dp.settled().expect("settled");
        assert_eq!(dp.tx_ports().expect("read"), set(&[a]), "what no pool uses went");
    });
}

/// A restarted daemon's first heartbeat guard replaces the one the adopted maps hold from the
/// run before: destinations and peers it lacks are taken out, not left behind.
#[test]
fn an_adopted_heartbeat_guard_is_replaced_by_the_first_one_written() {
    use std::collections::BTreeSet;

    use aya::maps::{Array, HashMap, MapData};
    use vnfpool_common::{
        addr::Addr,
        maps,
        vip::{self, VipKey, VipMeta},
    };
    use vnfpool_daemon::dataplane::HeartbeatGuard;

    const HB: u16 = 9471;
    let pins = PinDir::new();
    let opts = LoadOptions {
        pin_dir: Some(pins.path().to_owned()),
        ..LoadOptions::default()
    };
    let a = |text: &str| addr::from_ip(text.parse().expect("an address"));
    let guard = |listen: &[&str], peers: &[&str]| HeartbeatGuard {
        listen: listen.iter().map(|l| (a(l), HB)).collect(),
        peers: peers.iter().map(|p| (a(p), 1)).collect(),
    };
    // What the maps hold: the guarded destinations, the peers, and the pre-filter at `at`.
    let held = |dp: &mut AyaDataplane, at: &str| {
        let ebpf = dp.ebpf_mut();
        let vips: HashMap<&MapData, VipKey, VipMeta> =
            HashMap::try_from(ebpf.map(maps::VIPS).expect("VNF_VIPS")).expect("a hash");
        let guarded: BTreeSet<Addr> = vips
            .iter()
            .map(|kv| kv.expect("entry"))
            .filter(|(_, meta)| meta.flags & vip::FLAG_HEARTBEAT != 0)
            .map(|(key, _)| key.addr)
            .collect();
        let peers: HashMap<&MapData, Addr, u32> =
            HashMap::try_from(ebpf.map(maps::HB_PEERS).expect("VNF_HB_PEERS")).expect("a hash");
        let peers: BTreeSet<Addr> = peers.keys().map(|k| k.expect("key")).collect();
        let filter: Array<&MapData, u32> =
            Array::try_from(ebpf.map(maps::VIP_FILTER).expect("VNF_VIP_FILTER")).expect("an array");
        let value = filter
            .get(&vip::filter_index(&a(at), HB.to_be(), vip::PROTO_UDP), 0)
            .expect("pre-filter");
        (guarded, peers, value)
    };
    let set = |addrs: &[&str]| addrs.iter().map(|t| a(t)).collect::<BTreeSet<Addr>>();

    let mut dp = AyaDataplane::load(&opts).expect("load");
    dp.set_heartbeat_guard(&guard(&["10.0.0.1"], &["10.1.0.5", "10.1.0.6"]))
        .expect("guard");
    assert_eq!(
        held(&mut dp, "10.0.0.1"),
        (
            set(&["10.0.0.1"]),
            set(&["10.1.0.5", "10.1.0.6"]),
            vip::FILTER_COLLISION
        )
    );
    drop(dp);

    let mut dp = AyaDataplane::load(&opts).expect("adopting load");
    assert!(dp.adopted());
    dp.set_heartbeat_guard(&guard(&["10.0.0.2"], &["10.1.0.6"]))
        .expect("the new run's guard");
    assert_eq!(
        held(&mut dp, "10.0.0.1"),
        (set(&["10.0.0.2"]), set(&["10.1.0.6"]), 0),
        "the old destination and peer went"
    );
    assert_eq!(held(&mut dp, "10.0.0.2").2, vip::FILTER_COLLISION);
    dp.set_heartbeat_guard(&HeartbeatGuard::default())
        .expect("no guard");
    assert_eq!(held(&mut dp, "10.0.0.2"), (set(&[]), set(&[]), 0));
}
