//! The built object against `vnfpool_common::maps`: names, key and value sizes, capacities,
//! pins, and BTF field names as bpftool prints them.

use std::{collections::BTreeSet, net::IpAddr};

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
use vnfpool_tests::pins::{PinDir, bpftool_dump};

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

    // Besides its own maps, the object has aya-log's ring (not pinned: each program its own)
    // and the read-only data sections the compiler made (`.rodata…`, with the log level).
    let in_object: BTreeSet<&str> = dp
        .ebpf_mut()
        .maps()
        .map(|(name, _)| name)
        .filter(|name| !name.starts_with(".rodata"))
        .collect();
    let mut in_abi: BTreeSet<&str> = maps::ALL.iter().copied().collect();
    in_abi.insert(maps::XDP_LOG);
    assert_eq!(
        in_object, in_abi,
        "maps of the object vs vnfpool_common::maps::ALL and aya-log's"
    );
    assert!(
        !pins.path().join(maps::XDP_LOG).exists(),
        "{} is not pinned",
        maps::XDP_LOG
    );
    match dp.ebpf_mut().map(maps::XDP_LOG) {
        Some(aya::maps::Map::RingBuf(data)) => assert_eq!(
            data.info().expect("map info").max_entries(),
            maps::XDP_LOG_OFF_SIZE,
            "with the log off its ring is one page"
        ),
        other => panic!("{} is no ring buffer: {other:?}", maps::XDP_LOG),
    }

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
        encap: 0,
        _pad: [0; 3],
    };
    dp.apply(
        0,
        &Mapping {
            ring: vec![0; 251],
            elements: vec![e],
            tunnels: Vec::new(),
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
        let text = bpftool_dump(&pins.path().join(name));
        assert!(
            text.contains(&format!("\"{field}\"")),
            "{name}: bpftool shows no field {field}:\n{}",
            &text[..text.len().min(600)]
        );
    }
}

/// The kind of map a type cell of `docs/architecture.md`'s map table names, as aya names it.
fn documented_kind(cell: &str) -> &'static str {
    match cell.split([',', '(']).next().map(str::trim) {
        Some("hash") => "HashMap",
        Some("array" | "array of 8-way buckets") => "Array",
        Some("per-CPU array") => "PerCpuArray",
        Some("ring buffer") => "RingBuf",
        Some("device hash") => "DevMapHash",
        _ => panic!("docs/architecture.md names an unknown map type: {cell:?}"),
    }
}

/// The kind of a loaded map, as aya names it.
fn loaded_kind(map: &aya::maps::Map) -> &'static str {
    use aya::maps::Map;
    match map {
        Map::HashMap(_) => "HashMap",
        Map::Array(_) => "Array",
        Map::PerCpuArray(_) => "PerCpuArray",
        Map::RingBuf(_) => "RingBuf",
        Map::DevMapHash(_) => "DevMapHash",
        other => panic!("a map type docs/architecture.md has no word for: {other:?}"),
    }
}

/// The map table of `docs/architecture.md` names every map of the program, in `maps::ALL`'s
/// order, with its type and the number of entries this build gives it by default (issue 18: the
/// docs said 64 pools where the code had 128).
#[test]
fn the_docs_map_table_matches_the_build() {
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/architecture.md"))
        .expect("docs/architecture.md");
    let mut kinds = Vec::new();
    let rows: Vec<(String, u64)> = docs
        .lines()
        .filter(|l| l.starts_with("| `VNF_"))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split(" | ").map(str::trim).collect();
            let name = cells[0].trim_matches('`').to_owned();
            kinds.push((name.clone(), documented_kind(cells[1])));
            let entries = cells
                .get(3)
                .unwrap_or_else(|| panic!("{name}: no entries cell in {l:?}"));
            let mut words = entries.split_whitespace();
            let n: u64 = words
                .next()
                .and_then(|w| w.parse().ok())
                .unwrap_or_else(|| panic!("{name}: entries {entries:?} do not start with a number"));
            let n = if words.next() == Some("MiB") { n << 20 } else { n };
            (name, n)
        })
        .collect();
    let layout = vnfpool_daemon::dataplane::layout(
        flow::buckets(maps::DEFAULT_FLOW_TABLE_SIZE),
        maps::DEFAULT_RING_CHUNKS,
    );
    let built: Vec<(String, u64)> = maps::ALL
        .iter()
        .map(|name| {
            let (_, (_, _, entries)) = layout
                .iter()
                .find(|(n, _)| n == name)
                .unwrap_or_else(|| panic!("{name} missing from layout()"));
            ((*name).to_owned(), u64::from(*entries))
        })
        .collect();
    assert_eq!(
        rows, built,
        "docs/architecture.md's map table (name, entries) against the build"
    );
    let mut dp = AyaDataplane::load(&LoadOptions {
        pin_dir: None,
        ..LoadOptions::default()
    })
    .expect("load");
    let loaded: std::collections::BTreeMap<String, &str> = dp
        .ebpf_mut()
        .maps()
        .map(|(name, map)| (name.to_owned(), loaded_kind(map)))
        .collect();
    for (name, kind) in kinds {
        assert_eq!(
            loaded.get(&name),
            Some(&kind),
            "{name}: docs/architecture.md's type against the object's"
        );
    }
}
