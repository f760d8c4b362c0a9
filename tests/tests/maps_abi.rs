//! The built object against `vnfpool_common::maps`: names, key and value sizes, capacities,
//! pins, and BTF field names as bpftool prints them.

use std::{collections::BTreeSet, net::IpAddr, process::Command};

use aya::maps::MapInfo;
use vnfpool_common::{
    addr,
    element::{Element, STATE_UP},
    flow::{self, FlowBucket, FlowCtl, FlowGuard},
    maps,
    pool::Pool,
    ring::RingChunk,
    stats::{Counters, PoolCounters, REASON_ENTRIES},
    vip::{PROTO_TCP, VipKey, VipMeta},
};
use vnfpool_daemon::dataplane::{AyaDataplane, LoadOptions, Mapping};
use vnfpool_tests::pins::PinDir;

/// (name, key size, value size, max entries) of every map, from the ABI crate.
fn expected() -> Vec<(&'static str, usize, usize, u32)> {
    let u32s = size_of::<u32>();
    vec![
        (
            maps::VIPS,
            size_of::<VipKey>(),
            size_of::<VipMeta>(),
            maps::MAX_VIP_ENTRIES,
        ),
        (maps::VIP_FILTER, u32s, u32s, maps::VIP_FILTER_SIZE),
        (
            maps::HB_PEERS,
            size_of::<vnfpool_common::addr::Addr>(),
            u32s,
            maps::MAX_HB_PEERS,
        ),
        (maps::POOLS, u32s, size_of::<Pool>(), maps::MAX_POOLS),
        (maps::ELEMS, u32s, size_of::<Element>(), maps::ELEM_ENTRIES),
        (maps::RING, u32s, size_of::<RingChunk>(), 4096),
        (maps::FLOWS, u32s, size_of::<FlowBucket>(), flow::buckets(8192)),
        (maps::FLOW_CTL, u32s, size_of::<FlowCtl>(), 1),
        (maps::FLOW_GUARD, u32s, size_of::<FlowGuard>(), 1),
        // Ring buffers have neither keys nor values, only bytes.
        (maps::FLOW_EVENTS, 0, 0, maps::FLOW_EVENTS_SIZE),
        // bpf_devmap_val: ifindex + program fd/id.
        (maps::TX_PORTS, u32s, 8, maps::MAX_TX_PORTS),
        (maps::POOL_STATS, u32s, size_of::<PoolCounters>(), maps::MAX_POOLS),
        (maps::REASON_STATS, u32s, size_of::<Counters>(), REASON_ENTRIES),
    ]
}

#[test]
fn object_maps_match_the_abi_crate_and_are_pinned_with_btf() {
    let pins = PinDir::new();
    let opts = LoadOptions {
        pin_dir: Some(pins.path().to_owned()),
        flow_table_size: 8192,
        ring_chunks: 4096,
        ..LoadOptions::default()
    };
    let mut dp = AyaDataplane::load(&opts).expect("load with pins");

    let in_object: BTreeSet<&str> = dp.ebpf_mut().maps().map(|(name, _)| name).collect();
    let in_abi: BTreeSet<&str> = maps::ALL.iter().copied().collect();
    assert_eq!(
        in_object, in_abi,
        "maps of the object vs vnfpool_common::maps::ALL"
    );

    for (name, key, value, entries) in expected() {
        let info = MapInfo::from_pin(pins.path().join(name)).unwrap_or_else(|e| panic!("{name} pinned: {e}"));
        assert_eq!(
            (
                info.key_size() as usize,
                info.value_size() as usize,
                info.max_entries()
            ),
            (key, value, entries),
            "{name}: key size, value size, max entries"
        );
        assert_eq!(info.name_as_str(), Some(name), "{name}: kernel name");
    }

    // Give the BTF-typed maps an entry, then read them back the way an operator would.
    let vip: IpAddr = "10.10.0.100".parse().expect("address");
    dp.add_vip(0, addr::from_ip(vip), 8080, PROTO_TCP)
        .expect("add vip");
    let e = Element {
        ifindex: 1,
        state: STATE_UP,
        dst_mac: [2, 0, 0, 0, 0, 1],
        src_mac: [2, 0, 0, 0, 0, 2],
        _pad: [0; 4],
    };
    dp.apply(
        0,
        &Mapping {
            ring: vec![0; 251],
            elements: vec![e],
        },
    )
    .expect("apply");
    for (name, field) in [
        (maps::VIPS, "port_be"),
        (maps::POOLS, "vip"),
        (maps::POOLS, "generation"),
        (maps::POOLS, "ring_offset"),
        (maps::ELEMS, "dst_mac"),
        (maps::RING, "elements"),
        (maps::POOL_STATS, "elements"),
        (maps::FLOW_CTL, "bucket_mask"),
    ] {
        let path = pins.path().join(name);
        let out = Command::new("bpftool")
            .args(["map", "dump", "pinned"])
            .arg(&path)
            .output()
            .expect("run bpftool (installed by scripts/setup.sh)");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "bpftool map dump {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains(&format!("\"{field}\"")),
            "{name}: bpftool shows no field {field}:\n{}",
            &text[..text.len().min(600)]
        );
    }
}
