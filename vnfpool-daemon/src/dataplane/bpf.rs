//! [`AyaDataplane`]: loading and pinning the XDP program and its maps, and writing pool
//! mappings with the atomic switch described in the module above.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    path::{Path, PathBuf},
    sync::Arc,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap as BpfHashMap, MapData, MapError, PerCpuArray, xdp::DevMapHash},
    programs::Xdp,
};
use vnfpool_common::{
    addr::Addr,
    element::{Element, STATE_UP},
    flow::{self, FlowBucket, FlowCtl, FlowGuard, FlowKey, HashKey},
    maps,
    pool::{Pool, PoolSel, SlotMeta},
    ring::{self, RingChunk},
    stats::{Counters, PoolCounters},
    tunnel::Tunnel,
    vip::{self, VipKey, VipMeta},
};

use super::{
    Applied, Dataplane, DataplaneReader, HeartbeatGuard, Mapping, PoolPlan, Vip, counters::AyaReader,
    mmap::MappedArray,
};

/// The XDP object built by `build.rs` from `vnfpool-ebpf`.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/vnfpool"));

/// Floor programs (`baseline_pass`, `baseline_tx`) for the benchmarks.
#[cfg(feature = "bench")]
pub static BASELINE_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/vnfpool-baseline"));

/// Errors of the data plane.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    /// A map's descriptor could not be duplicated for a reader.
    #[error("map {name}: duplicating its descriptor")]
    Dup {
        name: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// A reader's map was not available when the reader was made.
    #[error("counters unreadable: {what}")]
    Unreadable { what: String },
    /// The object could not be loaded (verifier, missing privilege, bad pin).
    #[error("loading the XDP object")]
    Load {
        #[source]
        source: aya::EbpfError,
    },
    /// A map the object must have is missing or of another type.
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    /// An egress device could not be added to `VNF_TX_PORTS`.
    #[error("adding ifindex {ifindex} to {}", maps::TX_PORTS)]
    TxPort {
        ifindex: u32,
        #[source]
        source: aya::maps::xdp::XdpMapError,
    },
    /// The pinned flow table packs or places its entries another way than this build.
    #[error(
        "pinned flow table packs or places its entries in layout {found}, this build in layout {expected}: \
         adopted, every flow in it would be picked again; remove the pins (the data plane \
         stops) or run the matching build"
    )]
    FlowLayout { found: u32, expected: u32 },
    /// A map could not be mapped into memory.
    #[error("mmap of map {name}")]
    Mmap {
        name: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The mapping handed to `apply` is inconsistent.
    #[error("pool {pool}: invalid mapping: {what}")]
    InvalidMapping { pool: u32, what: String },
    /// A pinned map does not have the layout this build expects: adopting it would corrupt it.
    #[error(
        "pinned map {} has key/value/entries {found:?}, this build expects {expected:?}; \
         remove the pins (the data plane stops) or run the matching build",
        path.display()
    )]
    PinMismatch {
        path: PathBuf,
        found: (u32, u32, u32),
        expected: (u32, u32, u32),
    },
    /// A pin could not be read, or the pin directory created.
    #[error("pin {}", path.display())]
    Pin {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Attaching the program to an interface failed.
    #[error("attaching to {interface} in {mode} mode")]
    Attach {
        interface: String,
        mode: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    /// Pinning or adopting the XDP link of an interface failed.
    #[error("XDP link of {interface}: {what}")]
    Link { interface: String, what: String },
    /// A pool has one VIP address (its entry in `VNF_POOLS` holds it): another address was
    /// given while the pool still routes ports of the first.
    #[error("pool {pool} routes ports of {have}; it cannot also route {want}")]
    PoolAddress {
        pool: u32,
        have: std::net::IpAddr,
        want: std::net::IpAddr,
    },
    /// The ring arena has no room for another table of this size.
    #[error("pool {pool}: no room for a {ring_size}-position table in the ring arena of {chunks} chunks")]
    RingArenaFull { pool: u32, ring_size: u32, chunks: u32 },
    /// Waiting for the RCU grace period failed.
    #[error("waiting for an RCU grace period")]
    Grace {
        #[source]
        source: std::io::Error,
    },
}

/// Result of the data plane.
pub type Result<T, E = DataplaneError> = std::result::Result<T, E>;

/// How to load the program.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Directory on a bpffs where every map is pinned (and adopted from, when already there);
    /// `None` loads unpinned maps (tests of the program alone).
    pub pin_dir: Option<PathBuf>,
    /// Capacity of the flow-affinity table, in flows (rounded up to a power-of-two number of
    /// 8-flow buckets).
    pub flow_table_size: u32,
    /// Capacity of the Maglev arena, in chunks of four positions.
    pub ring_chunks: u32,
    /// The flow hash's secret key.
    pub flow_hash_key: FlowHashKey,
    /// The flood guard (`FlowCtl::new_flows_per_unit`: flows one CPU records per stamp unit;
    /// 0: no guard). `None`: [`flow::default_guard`] of the table for this host's CPUs.
    pub new_flows_per_unit: Option<u32>,
    /// The drop log: the program logs the 1st, 2nd, 4th… packet of each reason per CPU
    /// ([`maps::XDP_LOG`]). Off, the verifier removes the log code (its level is 0 in the
    /// program's frozen `.rodata`).
    pub xdp_log: bool,
}

/// The flow hash's secret key ([`flow::hash64`]) for [`AyaDataplane::load`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum FlowHashKey {
    /// This key, even over an adopted table recorded with another (whose entries then no
    /// longer match, and its flows are recorded again): the nodes of a cluster must share it.
    Required(HashKey),
    /// This key for a new table; an adopted table keeps the one its entries were recorded with.
    Preferred(HashKey),
}

impl FlowHashKey {
    /// A fresh random key, preferred.
    ///
    /// # Panics
    /// When the kernel gives no random bytes (`getrandom` fails only on broken systems).
    #[must_use]
    pub fn random() -> Self {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).expect("random bytes from the kernel");
        Self::Preferred(key_of(bytes))
    }
}

/// A key never reaches a log.
impl std::fmt::Debug for FlowHashKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Required(_) => f.write_str("Required(..)"),
            Self::Preferred(_) => f.write_str("Preferred(..)"),
        }
    }
}

/// A flow hash key from 16 bytes.
#[must_use]
pub fn key_of(bytes: [u8; 16]) -> HashKey {
    let (a, b) = bytes.split_at(8);
    [
        u64::from_le_bytes(a.try_into().expect("8 bytes")),
        u64::from_le_bytes(b.try_into().expect("8 bytes")),
    ]
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            pin_dir: Some(PathBuf::from(maps::PIN_DIR)),
            flow_table_size: maps::DEFAULT_FLOW_TABLE_SIZE,
            ring_chunks: maps::DEFAULT_RING_CHUNKS,
            flow_hash_key: FlowHashKey::random(),
            new_flows_per_unit: None,
            xdp_log: false,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Region {
    offset: u32,
    chunks_per_slot: u32,
}

/// The loaded program and its maps.
pub struct AyaDataplane {
    ebpf: Ebpf,
    pin_dir: Option<PathBuf>,
    adopted: bool,
    flow_buckets: u32,
    /// The key the table's flows are hashed with.
    flow_hash_key: HashKey,
    pools: MappedArray<Pool>,
    elems: MappedArray<Element>,
    tunnels: MappedArray<Tunnel>,
    ring: MappedArray<RingChunk>,
    regions: HashMap<u32, Region>,
    next_chunk: u32,
    /// VIP entries by pre-filter index.
    vip_buckets: HashMap<u32, Vec<VipKey>>,
    /// Per pool, the address in its `VNF_POOLS` entry and how many VIP entries route to it.
    pool_vips: HashMap<u32, (vnfpool_common::addr::Addr, usize)>,
    /// The pool of every VIP entry with a pre-filter share.
    vip_pool: HashMap<VipKey, u32>,
    /// The heartbeat listener's guard entries (`vip::FLAG_HEARTBEAT`), each with a pre-filter
    /// share (always a collision value).
    guards: HashSet<VipKey>,
    /// What `VNF_HB_PEERS` holds.
    hb_peers: BTreeMap<Addr, u32>,
    /// VIP entries out of the pre-filter whose hash entries wait for a grace period.
    withdrawn: Vec<Withdrawn>,
    retirer: Retirer,
    /// The grace period that follows each pool's last switch: its retired slot is written
    /// again only once that one has passed (other pools' switches do not hold it up).
    switched: HashMap<u32, u64>,
    /// The egress interfaces each pool's elements are behind: a `VNF_TX_PORTS` entry stays
    /// while a pool uses it, and goes with the last one.
    tx_users: HashMap<u32, BTreeSet<u32>>,
    /// Ids of the programs attached by `attach` (this one's, or an adopted link's).
    attached: BTreeSet<u32>,
    clock: fn() -> std::time::Instant,
}

impl AyaDataplane {
    /// Loads the embedded program (it is not attached anywhere yet). With a pin directory whose
    /// maps are already pinned, adopts them after checking their layout: nothing in them is
    /// cleared, so a running data plane keeps forwarding.
    #[expect(
        clippy::too_many_lines,
        reason = "one sequence of load steps, each depending on the one before"
    )]
    pub fn load(opts: &LoadOptions) -> Result<Self> {
        let flow_buckets = flow::buckets(opts.flow_table_size);
        let mut adopted = false;
        if let Some(dir) = &opts.pin_dir {
            std::fs::create_dir_all(dir).map_err(|source| DataplaneError::Pin {
                path: dir.clone(),
                source,
            })?;
            adopted = check_pins(dir, &layout(flow_buckets, opts.ring_chunks))?;
        }
        let mut loader = EbpfLoader::new();
        loader
            .map_max_entries(maps::FLOWS, flow_buckets)
            .map_max_entries(maps::RING, opts.ring_chunks);
        let (log_level, log_bytes) = if opts.xdp_log {
            (aya_log::Level::Info as u8, maps::XDP_LOG_SIZE)
        } else {
            (0u8, maps::XDP_LOG_OFF_SIZE)
        };
        loader
            .override_global(maps::XDP_LOG_LEVEL, &log_level, true)
            .map_max_entries(maps::XDP_LOG, log_bytes);
        let pins: Vec<(&'static str, PathBuf)> = match &opts.pin_dir {
            Some(dir) => maps::ALL.iter().map(|name| (*name, dir.join(name))).collect(),
            None => Vec::new(),
        };
        for (name, path) in &pins {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader
            .load(EBPF_OBJECT)
            .map_err(|source| DataplaneError::Load { source })?;
        // The flow table's shape, before anything can attach the program (an adopted table
        // has it already, and its size was checked above).
        let mut ctl: Array<&mut MapData, FlowCtl> = map(&mut ebpf, maps::FLOW_CTL)?;
        let ctl_err = |source| DataplaneError::Map {
            name: maps::FLOW_CTL,
            source,
        };
        let mut shape = if adopted {
            let found = ctl.get(&0, 0).map_err(ctl_err)?;
            if found.entry_layout != flow::ENTRY_LAYOUT {
                return Err(DataplaneError::FlowLayout {
                    found: found.entry_layout,
                    expected: flow::ENTRY_LAYOUT,
                });
            }
            found
        } else {
            FlowCtl {
                bucket_mask: flow_buckets - 1,
                entry_layout: flow::ENTRY_LAYOUT,
                ..FlowCtl::default()
            }
        };
        match opts.flow_hash_key {
            FlowHashKey::Preferred(_) if adopted => {}
            FlowHashKey::Preferred(key) => shape.hash_key = key,
            FlowHashKey::Required(key) => {
                if adopted && shape.hash_key != key {
                    tracing::warn!(
                        "the adopted flow table was recorded with another flow hash key (the cluster's secret changed?): its flows are recorded anew, and those whose Maglev position changes move"
                    );
                }
                shape.hash_key = key;
            }
        }
        shape.new_flows_per_unit = opts
            .new_flows_per_unit
            .unwrap_or_else(|| flow::default_guard(flow_buckets, cpus()));
        ctl.set(0, shape, 0).map_err(ctl_err)?;
        let flow_hash_key = shape.hash_key;
        let pools = mapped(&mut ebpf, maps::POOLS, maps::MAX_POOLS)?;
        let elems = mapped(&mut ebpf, maps::ELEMS, maps::ELEM_ENTRIES)?;
        let tunnels = mapped(&mut ebpf, maps::TUNNELS, maps::ELEM_ENTRIES)?;
        let ring = mapped(&mut ebpf, maps::RING, opts.ring_chunks)?;
        let mut dp = Self {
            ebpf,
            pin_dir: opts.pin_dir.clone(),
            adopted,
            flow_buckets,
            flow_hash_key,
            pools,
            elems,
            tunnels,
            ring,
            regions: HashMap::new(),
            next_chunk: 0,
            vip_buckets: HashMap::new(),
            pool_vips: HashMap::new(),
            vip_pool: HashMap::new(),
            guards: HashSet::new(),
            hb_peers: BTreeMap::new(),
            withdrawn: Vec::new(),
            retirer: Retirer::new(),
            switched: HashMap::new(),
            tx_users: HashMap::new(),
            attached: BTreeSet::new(),
            clock: std::time::Instant::now,
        };
        if adopted {
            dp.rebuild_bookkeeping()?;
        }
        Ok(dp)
    }

    /// Whether `load` adopted maps that were already pinned (a restart).
    #[must_use]
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    /// The key the program hashes flows with (to be saved, so that a restart after the pins
    /// are gone keeps every flow's Maglev position).
    #[must_use]
    pub fn flow_hash_key(&self) -> HashKey {
        self.flow_hash_key
    }

    /// Rebuilds what the writer keeps in memory from adopted maps: ring regions from
    /// `VNF_POOLS`, the VIP pre-filter buckets, the pools' addresses and the heartbeat guard
    /// from `VNF_VIPS` and `VNF_HB_PEERS`.
    fn rebuild_bookkeeping(&mut self) -> Result<()> {
        for pool in 0..maps::MAX_POOLS {
            let p = self.pools.read(pool);
            if p.ring_region_chunks != 0 {
                let r = Region {
                    offset: p.ring_region,
                    chunks_per_slot: p.ring_region_chunks,
                };
                self.next_chunk = self.next_chunk.max(r.offset + 2 * r.chunks_per_slot);
                self.regions.insert(pool, r);
            }
        }
        let vips: BpfHashMap<&MapData, VipKey, VipMeta> = map_ref(&self.ebpf, maps::VIPS)?;
        let entries: Vec<(VipKey, VipMeta)> = vips
            .iter()
            .filter_map(std::result::Result::ok)
            .filter(|(_, meta)| meta.flags & vip::FLAG_ADDRESS == 0)
            .collect();
        for (key, meta) in entries {
            let idx = vip::filter_index(&key.addr, key.port_be, key.proto);
            self.vip_buckets.entry(idx).or_default().push(key);
            if meta.flags & vip::FLAG_HEARTBEAT != 0 {
                self.guards.insert(key);
                continue;
            }
            self.pool_vips.entry(meta.pool).or_insert((key.addr, 0)).1 += 1;
            self.vip_pool.insert(key, meta.pool);
        }
        let peers: BpfHashMap<&MapData, Addr, u32> = map_ref(&self.ebpf, maps::HB_PEERS)?;
        self.hb_peers = peers.iter().filter_map(std::result::Result::ok).collect();
        Ok(())
    }

    /// Attaches the program to `interface` (in the calling thread's network namespace), or,
    /// when a pinned link for it exists already (a restart), leaves that attachment as it is.
    /// With a pin directory the new link is pinned there, so the program stays attached when
    /// this process exits. Returns the mode used (`None` when an existing link was adopted).
    pub fn attach(
        &mut self,
        interface: &str,
        mode: crate::model::spec::XdpMode,
    ) -> Result<Option<&'static str>> {
        use aya::programs::{XdpMode as Mode, links::FdLink};

        use crate::model::spec::XdpMode;

        let link_pin = self
            .pin_dir
            .as_ref()
            .map(|d| d.join(format!("{}{interface}", maps::LINK_PIN_PREFIX)));
        if let Some(path) = &link_pin
            && path.exists()
        {
            let link =
                aya::programs::links::PinnedLink::from_pin(path).map_err(|e| DataplaneError::Link {
                    interface: interface.to_owned(),
                    what: e.to_string(),
                })?;
            let info = FdLink::from(link).info().map_err(|e| DataplaneError::Link {
                interface: interface.to_owned(),
                what: e.to_string(),
            })?;
            self.attached.insert(info.program_id());
            return Ok(None);
        }
        let prog: &mut Xdp = program(&mut self.ebpf)?;
        if prog.fd().is_err() {
            prog.load().map_err(|source| DataplaneError::Attach {
                interface: interface.to_owned(),
                mode: "load",
                source,
            })?;
        }
        let attempts: &[(Mode, &'static str)] = match mode {
            XdpMode::Native => &[(Mode::Driver, "native")],
            XdpMode::Generic => &[(Mode::Skb, "generic")],
            XdpMode::Auto => &[(Mode::Driver, "native"), (Mode::Skb, "generic")],
        };
        let mut last = None;
        for &(m, name) in attempts {
            match prog.attach(interface, m) {
                Ok(id) => {
                    if let Ok(info) = prog.info() {
                        self.attached.insert(info.id());
                    }
                    if let Some(path) = &link_pin {
                        let link = prog.take_link(id).map_err(|source| DataplaneError::Attach {
                            interface: interface.to_owned(),
                            mode: name,
                            source,
                        })?;
                        let fd_link = FdLink::try_from(link).map_err(|e| DataplaneError::Link {
                            interface: interface.to_owned(),
                            what: e.to_string(),
                        })?;
                        fd_link.pin(path).map_err(|e| DataplaneError::Link {
                            interface: interface.to_owned(),
                            what: e.to_string(),
                        })?;
                    }
                    return Ok(Some(name));
                }
                Err(source) => last = Some((name, source)),
            }
        }
        let (mode, source) = last.expect("at least one attach attempt");
        Err(DataplaneError::Attach {
            interface: interface.to_owned(),
            mode,
            source,
        })
    }

    /// Ids of the programs `attach` attached or found attached (see [`crate::dataplane::xdp_log`]).
    #[must_use]
    pub fn attached_programs(&self) -> Vec<u32> {
        self.attached.iter().copied().collect()
    }

    /// The loaded object, to attach or test-run the program.
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// Routes `port`/`proto` of `addr` to `pool`: adds the VIP entry, the address entry that
    /// marks the address for fragments and ICMP errors, and the pre-filter entry (see
    /// `vnfpool_common::vip`). Adding a VIP that is already there changes nothing.
    pub fn add_vip(
        &mut self,
        pool: u32,
        addr: vnfpool_common::addr::Addr,
        port: u16,
        proto: u8,
    ) -> Result<()> {
        let key = VipKey {
            addr,
            port_be: port.to_be(),
            proto,
            _pad: 0,
        };
        let address = VipKey {
            addr,
            port_be: 0,
            proto,
            _pad: 0,
        };
        self.reap(false)?;
        // Rare: the same entry, or another address of the same pool, still waits for the grace
        // period of its withdrawal. Wait for it: the pool's address may be rewritten only then.
        if self
            .withdrawn
            .iter()
            .any(|w| w.key == key || (w.pool == pool && w.key.addr != addr))
        {
            self.reap(true)?;
        }
        if self.vip_pool.contains_key(&key) {
            return Ok(());
        }
        // A VIP wins over a guard of the same address, port and protocol (a configuration
        // that listens for heartbeats on a VIP's port): its entry replaces the guard's.
        if self.guards.remove(&key) {
            let idx = vip::filter_index(&key.addr, key.port_be, key.proto);
            if let Some(bucket) = self.vip_buckets.get_mut(&idx) {
                bucket.retain(|k| *k != key);
            }
        }
        let mut vips: BpfHashMap<&mut MapData, VipKey, VipMeta> = map(&mut self.ebpf, maps::VIPS)?;
        match self.pool_vips.get_mut(&pool) {
            Some((have, n)) if *n > 0 && *have != addr => {
                return Err(DataplaneError::PoolAddress {
                    pool,
                    have: vnfpool_common::addr::to_ip(have),
                    want: vnfpool_common::addr::to_ip(&addr),
                });
            }
            Some((_, n)) if *n > 0 => *n += 1,
            _ => {
                // No pre-filter entry names the pool (and none has for a grace period, see
                // `remove_vip`), so no packet reads this field: write it before the entry that
                // makes packets read it.
                self.pools.write_part(pool, Pool::VIP_OFFSET, &addr);
                std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
                self.pool_vips.insert(pool, (addr, 1));
            }
        }
        let insert_err = |source| DataplaneError::Map {
            name: maps::VIPS,
            source,
        };
        // The hash entries first: a pre-filter collision value sends packets there.
        vips.insert(key, VipMeta { pool, flags: 0 }, 0)
            .map_err(insert_err)?;
        vips.insert(
            address,
            VipMeta {
                pool,
                flags: vip::FLAG_ADDRESS,
            },
            0,
        )
        .map_err(insert_err)?;

        let idx = vip::filter_index(&key.addr, key.port_be, key.proto);
        self.vip_buckets.entry(idx).or_default().push(key);
        self.vip_pool.insert(key, pool);
        self.write_filter(idx)
    }

    /// Writes the pre-filter entry `idx` from the entries that fold there: none (0), one VIP
    /// (its [`vip::filter_entry`]), else a collision (as for any guard entry, which only the
    /// hash table describes).
    fn write_filter(&mut self, idx: u32) -> Result<()> {
        let value = match self.vip_buckets.get(&idx).map(Vec::as_slice) {
            None | Some([]) => 0,
            Some([only]) if !self.guards.contains(only) => {
                vip::filter_entry(self.vip_pool[only], only.port_be, only.proto)
            }
            Some(_) => vip::FILTER_COLLISION,
        };
        let mut filter: Array<&mut MapData, u32> = map(&mut self.ebpf, maps::VIP_FILTER)?;
        filter.set(idx, value, 0).map_err(|source| DataplaneError::Map {
            name: maps::VIP_FILTER,
            source,
        })
    }

    /// Makes `guard` the heartbeat listener's guard: datagrams to its destinations pass the
    /// program only from its peers. New peers go in before new destinations, and old
    /// destinations out before old peers, so a registered element's heartbeat is never dropped
    /// on the way. A destination's entries go without waiting for a grace period: a packet
    /// that still reads a removed guard's pre-filter value finds no hash entry and passes.
    pub fn set_heartbeat_guard(&mut self, guard: &HeartbeatGuard) -> Result<()> {
        let peers_err = |source| DataplaneError::Map {
            name: maps::HB_PEERS,
            source,
        };
        let mut peers: BpfHashMap<&mut MapData, Addr, u32> = map(&mut self.ebpf, maps::HB_PEERS)?;
        for (addr, &n) in &guard.peers {
            if self.hb_peers.get(addr) != Some(&n) {
                peers.insert(addr, n, 0).map_err(peers_err)?;
                self.hb_peers.insert(*addr, n);
            }
        }
        let keys: HashSet<VipKey> = guard
            .listen
            .iter()
            .map(|&(addr, port)| VipKey {
                addr,
                port_be: port.to_be(),
                proto: vip::PROTO_UDP,
                _pad: 0,
            })
            .filter(|k| !self.vip_pool.contains_key(k))
            .collect();
        let vips_err = |source| DataplaneError::Map {
            name: maps::VIPS,
            source,
        };
        for key in keys.difference(&self.guards).copied().collect::<Vec<_>>() {
            let mut vips: BpfHashMap<&mut MapData, VipKey, VipMeta> = map(&mut self.ebpf, maps::VIPS)?;
            vips.insert(
                key,
                VipMeta {
                    pool: 0,
                    flags: vip::FLAG_HEARTBEAT,
                },
                0,
            )
            .map_err(vips_err)?;
            let idx = vip::filter_index(&key.addr, key.port_be, key.proto);
            self.guards.insert(key);
            self.vip_buckets.entry(idx).or_default().push(key);
            self.write_filter(idx)?;
        }
        for key in self.guards.difference(&keys).copied().collect::<Vec<_>>() {
            let idx = vip::filter_index(&key.addr, key.port_be, key.proto);
            self.guards.remove(&key);
            if let Some(bucket) = self.vip_buckets.get_mut(&idx) {
                bucket.retain(|k| *k != key);
                if bucket.is_empty() {
                    self.vip_buckets.remove(&idx);
                }
            }
            self.write_filter(idx)?;
            let mut vips: BpfHashMap<&mut MapData, VipKey, VipMeta> = map(&mut self.ebpf, maps::VIPS)?;
            removed(vips.remove(&key), maps::VIPS)?;
        }
        let gone: Vec<Addr> = self
            .hb_peers
            .keys()
            .filter(|a| !guard.peers.contains_key(*a))
            .copied()
            .collect();
        let mut peers: BpfHashMap<&mut MapData, Addr, u32> = map(&mut self.ebpf, maps::HB_PEERS)?;
        for addr in gone {
            removed(peers.remove(&addr), maps::HB_PEERS)?;
            self.hb_peers.remove(&addr);
        }
        Ok(())
    }

    /// Stops routing `port`/`proto` of `addr`, and waits until its entries are gone (see
    /// [`Dataplane::remove_pool`] for the way that does not wait). Removing a VIP that is not
    /// there changes nothing.
    pub fn remove_vip(&mut self, addr: vnfpool_common::addr::Addr, port: u16, proto: u8) -> Result<()> {
        let key = VipKey {
            addr,
            port_be: port.to_be(),
            proto,
            _pad: 0,
        };
        self.withdraw(&[key])?;
        self.reap(true)
    }

    /// Takes `keys` out of the pre-filter (so no packet is sent to a missing entry) and starts
    /// a grace period; [`Self::reap`] removes their hash entries once it has passed.
    fn withdraw(&mut self, keys: &[VipKey]) -> Result<()> {
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let idx = vip::filter_index(&key.addr, key.port_be, key.proto);
            let Some(bucket) = self.vip_buckets.get_mut(&idx) else {
                continue;
            };
            let Some(at) = bucket.iter().position(|k| k == key) else {
                continue;
            };
            bucket.swap_remove(at);
            if bucket.is_empty() {
                self.vip_buckets.remove(&idx);
            }
            let pool = self.vip_pool.remove(key).unwrap_or_default();
            // The pre-filter entry: now naming the one VIP left, or none.
            self.write_filter(idx)?;
            out.push((*key, pool));
        }
        if !out.is_empty() {
            let seq = self.retirer.retire();
            self.withdrawn
                .extend(out.into_iter().map(|(key, pool)| Withdrawn { seq, key, pool }));
        }
        Ok(())
    }

    /// Removes the hash entries of withdrawn VIPs whose grace period has passed (after waiting
    /// for all of them with `wait`): no packet can still be reading them; nor the pool's
    /// address when this was the pool's last entry, which the pool's next VIP may then
    /// overwrite. The address entry goes once no other port of that address and protocol
    /// remains.
    fn reap(&mut self, wait: bool) -> Result<()> {
        if self.withdrawn.is_empty() {
            return Ok(());
        }
        let grace = |source| DataplaneError::Grace { source };
        if wait {
            let last = self.withdrawn.iter().map(|w| w.seq).max().unwrap_or_default();
            self.retirer.wait_for(last).map_err(grace)?;
        }
        let passed = self.retirer.passed().map_err(grace)?;
        let (due, later): (Vec<Withdrawn>, Vec<Withdrawn>) =
            self.withdrawn.drain(..).partition(|w| w.seq <= passed);
        self.withdrawn = later;
        let mut vips: BpfHashMap<&mut MapData, VipKey, VipMeta> = map(&mut self.ebpf, maps::VIPS)?;
        let gone = |r| removed(r, maps::VIPS);
        for w in due {
            if let Some((_, n)) = self.pool_vips.get_mut(&w.pool) {
                *n = n.saturating_sub(1);
            }
            gone(vips.remove(&w.key))?;
            let same_address = self
                .vip_pool
                .keys()
                .chain(self.withdrawn.iter().map(|w| &w.key))
                .any(|k| k.addr == w.key.addr && k.proto == w.key.proto);
            if !same_address {
                gone(vips.remove(&VipKey { port_be: 0, ..w.key }))?;
            }
        }
        Ok(())
    }

    /// Lets the program redirect to `ifindex` (an element-facing interface other than ingress).
    /// The kernel resolves `ifindex` in the calling thread's network namespace: call this from
    /// the namespace the interfaces live in, as for attaching the program.
    pub fn add_tx_port(&mut self, ifindex: u32) -> Result<()> {
        let mut ports: DevMapHash<&mut MapData> = map(&mut self.ebpf, maps::TX_PORTS)?;
        ports
            .insert(ifindex, ifindex, None, 0)
            .map_err(|source| DataplaneError::TxPort { ifindex, source })
    }

    /// Makes `ports` the egress interfaces `pool` uses: new ones are added to `VNF_TX_PORTS`,
    /// and those no pool uses any more are removed from it.
    fn use_tx_ports(&mut self, pool: u32, ports: BTreeSet<u32>) -> Result<()> {
        for &ifindex in &ports {
            if !self.tx_users.values().any(|used| used.contains(&ifindex)) {
                self.add_tx_port(ifindex)?;
            }
        }
        let before = if ports.is_empty() {
            self.tx_users.remove(&pool)
        } else {
            self.tx_users.insert(pool, ports)
        };
        let unused: Vec<u32> = before
            .unwrap_or_default()
            .into_iter()
            .filter(|ifindex| !self.tx_users.values().any(|used| used.contains(ifindex)))
            .collect();
        self.remove_tx_ports(&unused)
    }

    /// Removes `ifindexes` from `VNF_TX_PORTS` (those already gone are no error).
    fn remove_tx_ports(&mut self, ifindexes: &[u32]) -> Result<()> {
        if ifindexes.is_empty() {
            return Ok(());
        }
        let mut ports: DevMapHash<&mut MapData> = map(&mut self.ebpf, maps::TX_PORTS)?;
        for &ifindex in ifindexes {
            removed(ports.remove(ifindex), maps::TX_PORTS)?;
        }
        Ok(())
    }

    /// The egress interfaces in `VNF_TX_PORTS`.
    pub fn tx_ports(&self) -> Result<BTreeSet<u32>> {
        let ports: DevMapHash<&MapData> = map_ref(&self.ebpf, maps::TX_PORTS)?;
        ports
            .keys()
            .collect::<std::result::Result<_, _>>()
            .map_err(|source| DataplaneError::Map {
                name: maps::TX_PORTS,
                source,
            })
    }

    /// What `pool` forwarded, in total and per element index, summed over CPUs.
    pub fn pool_counters(&self, pool: u32) -> Result<PoolCounters> {
        let per_cpu: PerCpuArray<&MapData, PoolCounters> = map_ref(&self.ebpf, maps::POOL_STATS)?;
        let values = per_cpu.get(&pool, 0).map_err(|source| DataplaneError::Map {
            name: maps::POOL_STATS,
            source,
        })?;
        Ok(values.iter().fold(PoolCounters::default(), PoolCounters::plus))
    }

    /// Counters at `index` of the per-CPU counter map `name` (of [`Counters`]), summed over CPUs.
    pub fn counters(&self, name: &'static str, index: u32) -> Result<Counters> {
        let per_cpu: PerCpuArray<&MapData, Counters> = map_ref(&self.ebpf, name)?;
        let values = per_cpu
            .get(&index, 0)
            .map_err(|source| DataplaneError::Map { name, source })?;
        Ok(values.iter().fold(Counters::default(), |acc, c| acc.plus(*c)))
    }

    /// The element the flow table holds for `key`, if any.
    pub fn flow(&self, key: &FlowKey) -> Result<Option<u32>> {
        let flows: Array<&MapData, FlowBucket> = map_ref(&self.ebpf, maps::FLOWS)?;
        let h = flow::hash64(key, &self.flow_hash_key);
        let bucket = flows
            .get(&flow::bucket(h, self.flow_buckets - 1), 0)
            .map_err(|source| DataplaneError::Map {
                name: maps::FLOWS,
                source,
            })?;
        Ok(match bucket.find(flow::fingerprint(h)) {
            flow::Way::Hit(_, e) => Some(flow::entry_element(e)),
            flow::Way::Empty(_) | flow::Way::Full => None,
        })
    }

    /// Turns the program's flow events (`VNF_FLOW_EVENTS`, for flow sync) on or off.
    ///
    /// The program keeps the stamp in the same value and may store it meanwhile; this writes
    /// the whole value back, which can set the stamp back by the one unit it moved in between:
    /// harmless, the next new flow stores the current one.
    pub fn set_flow_events(&mut self, on: bool) -> Result<()> {
        let err = |source| DataplaneError::Map {
            name: maps::FLOW_CTL,
            source,
        };
        let mut ctl: Array<&mut MapData, FlowCtl> = map(&mut self.ebpf, maps::FLOW_CTL)?;
        let mut value = ctl.get(&0, 0).map_err(err)?;
        value.events = if on { flow::EVENTS_ON } else { 0 };
        ctl.set(0, value, 0).map_err(err)
    }

    /// A reader of the program's flow events. The ring has one consumer position: make one
    /// reader per data plane (several would each see part of the events).
    pub fn flow_events(&self) -> Result<super::FlowEvents> {
        super::FlowEvents::new(&self.ebpf)
    }

    /// A handle on the flow table for peers' entries, refreshes and dumps; it maps the table
    /// on its own and can move to another task.
    pub fn flow_table(&self) -> Result<super::AyaFlowTable> {
        super::AyaFlowTable::new(&self.ebpf, self.flow_buckets)
    }

    /// The live selector of `pool`.
    #[must_use]
    pub fn live(&self, pool: u32) -> PoolSel {
        self.pools.read(pool).sel
    }

    /// Makes `mapping` the live mapping of `pool` with one atomic switch (see the module docs).
    pub fn apply(&mut self, pool: u32, mapping: &Mapping) -> Result<Applied> {
        validate(pool, mapping)?;
        let start = (self.clock)();
        // The spare slot was live before the pool's previous switch: wait out that switch's
        // grace period (usually long over) before writing it.
        if let Some(&seq) = self.switched.get(&pool) {
            self.retirer
                .wait_for(seq)
                .map_err(|source| DataplaneError::Grace { source })?;
        }
        let written = (self.clock)();
        let ring_size = u32::try_from(mapping.ring.len()).expect("validated");
        let entry = self.pools.read(pool);
        let live = entry.sel;
        let spare = live.slot ^ 1;
        let generation = live.generation.wrapping_add(1);

        let region = self.region(pool, ring_size)?;
        let ring_offset = region.offset + spare * region.chunks_per_slot;
        let chunks: Vec<RingChunk> = mapping
            .ring
            .chunks(ring::LANES as usize)
            .map(|c| {
                let mut elements = [0u16; 4];
                elements[..c.len()].copy_from_slice(c);
                RingChunk { elements }
            })
            .collect();
        self.ring.write_all(ring_offset, &chunks);

        let first = vnfpool_common::element::elem_index(pool, spare, 0);
        let old = entry.slots[spare as usize];
        let count = u32::try_from(mapping.elements.len()).expect("validated");
        // Tunnels before the elements that name them (both before the switch in any case).
        self.tunnels.write_all(first, &mapping.tunnels);
        self.elems.write_all(first, &mapping.elements);
        // Clear entries the previous occupant of this slot had beyond the new count.
        for i in count..old.elements.min(maps::MAX_ELEMENTS) {
            self.elems.write(first + i, &Element::default());
        }
        self.pools.write_part(
            pool,
            Pool::slot_offset(spare),
            &SlotMeta {
                ring_offset,
                ring_size,
                elements: count,
                generation,
            },
        );
        let prepared = (self.clock)();

        self.pools.store_atomic(
            pool,
            &PoolSel {
                slot: spare,
                generation,
            },
        );
        let switched = (self.clock)();
        // The retired slot is written again only after this grace period, which runs meanwhile.
        self.switched.insert(pool, self.retirer.retire());
        Ok(Applied {
            generation,
            prepare: prepared - written,
            switch: switched - prepared,
            grace: written - start,
        })
    }

    /// The arena region of `pool`, sized for `ring_size` positions per slot.
    fn region(&mut self, pool: u32, ring_size: u32) -> Result<Region> {
        let need = ring::chunks(ring_size);
        if let Some(r) = self.regions.get(&pool)
            && r.chunks_per_slot >= need
        {
            return Ok(*r);
        }
        // A larger table than before gets a fresh region; the old one is not reused (a pool's
        // table size changes only by configuration, rarely).
        let full = || DataplaneError::RingArenaFull {
            pool,
            ring_size,
            chunks: self.ring.len(),
        };
        let end = need
            .checked_mul(2)
            .and_then(|n| n.checked_add(self.next_chunk))
            .ok_or_else(full)?;
        if end > self.ring.len() {
            return Err(full());
        }
        let r = Region {
            offset: self.next_chunk,
            chunks_per_slot: need,
        };
        self.next_chunk = end;
        self.regions.insert(pool, r);
        // Recorded in the pool's entry (which no packet reads) so that a restart can adopt it.
        self.pools
            .write_part(pool, Pool::REGION_OFFSET, &[r.offset, r.chunks_per_slot]);
        Ok(r)
    }
}

/// The result of removing a key from map `name`: a key that was not there is no error (the
/// kernel answers `ENOENT`).
fn removed(result: std::result::Result<(), MapError>, name: &'static str) -> Result<()> {
    match result {
        Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
        Err(MapError::SyscallError(e)) if e.io_error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(DataplaneError::Map { name, source }),
    }
}

// === impl Dataplane for AyaDataplane ===

impl Dataplane for AyaDataplane {
    fn apply_pool(&mut self, plan: &PoolPlan) -> Result<Applied> {
        self.reap(false)?;
        self.use_tx_ports(plan.pool, plan.tx_ports.iter().copied().collect())?;
        let keys: HashSet<VipKey> = plan.vips.iter().map(vip_key).collect();
        let stale: Vec<VipKey> = self
            .vip_pool
            .iter()
            .filter(|&(k, &p)| p == plan.pool && !keys.contains(k))
            .map(|(k, _)| *k)
            .collect();
        self.withdraw(&stale)?;
        let applied = self.apply(plan.pool, &plan.mapping)?;
        for v in &plan.vips {
            self.add_vip(plan.pool, v.addr, v.port, v.proto)?;
        }
        Ok(applied)
    }

    fn remove_pool(&mut self, pool: u32) -> Result<()> {
        self.reap(false)?;
        let keys: Vec<VipKey> = self
            .vip_pool
            .iter()
            .filter(|&(_, &p)| p == pool)
            .map(|(k, _)| *k)
            .collect();
        self.withdraw(&keys)?;
        self.apply(pool, &Mapping::default())?;
        self.use_tx_ports(pool, BTreeSet::new())
    }

    fn settled(&mut self) -> Result<()> {
        let used: BTreeSet<u32> = self.tx_users.values().flatten().copied().collect();
        let left: Vec<u32> = self.tx_ports()?.difference(&used).copied().collect();
        if !left.is_empty() {
            tracing::info!(ifindexes = ?left, "egress interfaces no pool uses taken out of {}", maps::TX_PORTS);
        }
        self.remove_tx_ports(&left)
    }

    fn heartbeat_guard(&mut self, guard: &HeartbeatGuard) -> Result<()> {
        self.set_heartbeat_guard(guard)
    }

    fn reader(&self) -> Arc<dyn DataplaneReader> {
        Arc::new(AyaReader::new(&self.ebpf, self.flow_buckets))
    }
}

fn vip_key(v: &Vip) -> VipKey {
    VipKey {
        addr: v.addr,
        port_be: v.port.to_be(),
        proto: v.proto,
        _pad: 0,
    }
}

fn validate(pool: u32, m: &Mapping) -> Result<()> {
    let invalid = |what: String| Err(DataplaneError::InvalidMapping { pool, what });
    if pool >= maps::MAX_POOLS {
        return invalid(format!("pool index {pool} is not below {}", maps::MAX_POOLS));
    }
    if m.elements.len() > maps::MAX_ELEMENTS as usize {
        return invalid(format!(
            "{} elements, at most {}",
            m.elements.len(),
            maps::MAX_ELEMENTS
        ));
    }
    if !m.tunnels.is_empty() && m.tunnels.len() != m.elements.len() {
        return invalid(format!(
            "{} tunnel entries for {} elements",
            m.tunnels.len(),
            m.elements.len()
        ));
    }
    if let Some(i) = m
        .elements
        .iter()
        .position(|e| e.encap != vnfpool_common::tunnel::ENCAP_NONE && m.tunnels.is_empty())
    {
        return invalid(format!(
            "element {i} is reached through a tunnel the mapping lacks"
        ));
    }
    if u32::try_from(m.ring.len()).is_err() {
        return invalid("table too large".to_owned());
    }
    if let Some(pos) = m
        .ring
        .iter()
        .position(|&i| m.elements.get(usize::from(i)).is_none_or(|e| e.state != STATE_UP))
    {
        return invalid(format!(
            "table position {pos} names element {}, which is not up",
            m.ring[pos]
        ));
    }
    Ok(())
}

/// A VIP entry taken out of the pre-filter, removed after grace period `seq`.
#[derive(Debug, Clone, Copy)]
struct Withdrawn {
    seq: u64,
    key: VipKey,
    pool: u32,
}

/// The last retire request whose grace period has passed, and the error of its wait if any.
type Retired = (u64, Option<std::io::ErrorKind>);

/// Waits for RCU grace periods on a thread of its own: a switch returns as soon as the
/// selector is stored, and the next write to a retired slot waits only for whatever is left of
/// the grace period that followed the switch (usually nothing).
struct Retirer {
    requests: std::sync::mpsc::Sender<u64>,
    /// The last request whose grace period has passed, and the error of the last wait if any.
    done: std::sync::Arc<(std::sync::Mutex<Retired>, std::sync::Condvar)>,
    requested: u64,
}

impl Retirer {
    fn new() -> Self {
        let (requests, rx) = std::sync::mpsc::channel::<u64>();
        let done = std::sync::Arc::new((std::sync::Mutex::new((0, None)), std::sync::Condvar::new()));
        let shared = std::sync::Arc::clone(&done);
        std::thread::Builder::new()
            .name("vnfpool-retire".into())
            .spawn(move || {
                while let Ok(mut n) = rx.recv() {
                    // Requests made meanwhile are covered by this one grace period too.
                    while let Ok(later) = rx.try_recv() {
                        n = n.max(later);
                    }
                    let result = grace_period();
                    let (lock, cv) = &*shared;
                    let mut state = lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    *state = (n, result.err().map(|e| e.kind()));
                    cv.notify_all();
                }
            })
            .expect("spawning the grace-period thread");
        Self {
            requests,
            done,
            requested: 0,
        }
    }

    /// Starts a grace period for everything switched so far; returns its number.
    fn retire(&mut self) -> u64 {
        self.requested += 1;
        // The thread lives as long as the sender; a send cannot fail before drop.
        let _ = self.requests.send(self.requested);
        self.requested
    }

    /// Waits until grace period `seq` has passed.
    fn wait_for(&self, seq: u64) -> std::io::Result<()> {
        let (lock, cv) = &*self.done;
        let mut state = lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        while state.0 < seq {
            state = cv.wait(state).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        grace_result(state.1)
    }

    /// The last grace period that has passed, without waiting.
    fn passed(&self) -> std::io::Result<u64> {
        let (lock, _) = &*self.done;
        let state = lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        grace_result(state.1).map(|()| state.0)
    }
}

fn grace_result(error: Option<std::io::ErrorKind>) -> std::io::Result<()> {
    match error {
        Some(kind) => Err(std::io::Error::new(kind, "membarrier(MEMBARRIER_CMD_GLOBAL)")),
        None => Ok(()),
    }
}

/// Waits until every BPF program run that started before the call has finished: XDP runs
/// inside an RCU read-side section, and `MEMBARRIER_CMD_GLOBAL` waits for an RCU grace period
/// ([`kernel/sched/membarrier.c`](https://github.com/torvalds/linux/blob/v6.12/kernel/sched/membarrier.c#L598)).
fn grace_period() -> std::io::Result<()> {
    rustix::thread::membarrier(rustix::thread::MembarrierCommand::Global).map_err(std::io::Error::from)
}

/// The error for a map or program the object does not have (or has of another kind).
fn missing(name: &'static str) -> DataplaneError {
    DataplaneError::Map {
        name,
        source: MapError::InvalidName {
            name: name.to_owned(),
        },
    }
}

fn map<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<T>
where
    T: TryFrom<&'a mut aya::maps::Map, Error = MapError>,
{
    let m = ebpf.map_mut(name).ok_or_else(|| missing(name))?;
    T::try_from(m).map_err(|source| DataplaneError::Map { name, source })
}

fn mapped<T: aya::Pod>(ebpf: &mut Ebpf, name: &'static str, entries: u32) -> Result<MappedArray<T>> {
    let fd = match ebpf.map(name).ok_or_else(|| missing(name))? {
        aya::maps::Map::Array(data) => data.fd(),
        _ => return Err(missing(name)),
    };
    MappedArray::new(fd, entries).map_err(|source| DataplaneError::Mmap { name, source })
}

fn map_ref<'a, T>(ebpf: &'a Ebpf, name: &'static str) -> Result<T>
where
    T: TryFrom<&'a aya::maps::Map, Error = MapError>,
{
    let m = ebpf.map(name).ok_or_else(|| missing(name))?;
    T::try_from(m).map_err(|source| DataplaneError::Map { name, source })
}

fn program(ebpf: &mut Ebpf) -> Result<&mut Xdp> {
    ebpf.program_mut(maps::PROGRAM)
        .ok_or_else(|| missing(maps::PROGRAM))?
        .try_into()
        .map_err(|_| missing(maps::PROGRAM))
}

/// The CPUs per-CPU maps have (possible CPUs); 1 when the kernel does not say.
fn cpus() -> u32 {
    aya::util::nr_cpus()
        .ok()
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(1)
}

/// Key size, value size and entries of every map, as this build creates them.
#[must_use]
pub fn layout(flow_buckets: u32, ring_chunks: u32) -> Vec<(&'static str, (u32, u32, u32))> {
    use vnfpool_common::stats::{Counters, PoolCounters, REASON_ENTRIES};
    let size = |n: usize| u32::try_from(n).expect("small type");
    let u32s = size(size_of::<u32>());
    let counters = size(size_of::<Counters>());
    vec![
        (
            maps::VIPS,
            (
                size(size_of::<VipKey>()),
                size(size_of::<VipMeta>()),
                maps::MAX_VIP_ENTRIES,
            ),
        ),
        (maps::VIP_FILTER, (u32s, u32s, maps::VIP_FILTER_SIZE)),
        (
            maps::HB_PEERS,
            (size(size_of::<Addr>()), u32s, maps::MAX_HB_PEERS),
        ),
        (maps::POOLS, (u32s, size(size_of::<Pool>()), maps::MAX_POOLS)),
        (
            maps::ELEMS,
            (u32s, size(size_of::<Element>()), maps::ELEM_ENTRIES),
        ),
        (
            maps::TUNNELS,
            (u32s, size(size_of::<Tunnel>()), maps::ELEM_ENTRIES),
        ),
        (maps::RING, (u32s, size(size_of::<RingChunk>()), ring_chunks)),
        (maps::FLOWS, (u32s, size(size_of::<FlowBucket>()), flow_buckets)),
        (maps::FLOW_CTL, (u32s, size(size_of::<FlowCtl>()), 1)),
        (maps::FLOW_GUARD, (u32s, size(size_of::<FlowGuard>()), 1)),
        (maps::FLOW_EVENTS, (0, 0, maps::FLOW_EVENTS_SIZE)),
        (maps::TX_PORTS, (u32s, 8, maps::MAX_TX_PORTS)),
        (
            maps::POOL_STATS,
            (u32s, size(size_of::<PoolCounters>()), maps::MAX_POOLS),
        ),
        (maps::REASON_STATS, (u32s, counters, REASON_ENTRIES)),
    ]
}

/// The layout (key size, value size, entries) of the map pinned at `path`; `None` when nothing
/// is pinned there.
pub(super) fn pinned_layout(path: &Path) -> std::io::Result<Option<(u32, u32, u32)>> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
        Ok(_) => {}
    }
    let info = aya::maps::MapInfo::from_pin(path).map_err(std::io::Error::other)?;
    Ok(Some((info.key_size(), info.value_size(), info.max_entries())))
}

/// Checks the maps already pinned in `dir` against `expected`; whether any was pinned.
fn check_pins(dir: &Path, expected: &[(&'static str, (u32, u32, u32))]) -> Result<bool> {
    let mut any = false;
    for &(name, want) in expected {
        let path = dir.join(name);
        let found = match pinned_layout(&path) {
            Ok(Some(found)) => found,
            Ok(None) => continue,
            Err(source) => return Err(DataplaneError::Pin { path, source }),
        };
        if found != want {
            return Err(DataplaneError::PinMismatch {
                path,
                found,
                expected: want,
            });
        }
        any = true;
    }
    Ok(any)
}
