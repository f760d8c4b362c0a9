//! Map names, pin paths and capacities: the one list both sides use.
//!
//! The eBPF statics carry exactly these names (a test compares the built object with
//! [`ALL`]); the kernel keeps at most 15 bytes of a map name, which a `const` assertion
//! enforces here.

/// VIP table, `HASH` [`crate::vip::VipKey`] → [`crate::vip::VipMeta`]. Written by the daemon.
pub const VIPS: &str = "VNF_VIPS";
/// VIP pre-filter, `ARRAY` of `u32` indexed by [`crate::vip::filter_index`]. Written by the daemon.
pub const VIP_FILTER: &str = "VNF_VIP_FILTER";
/// Sources that may send to the heartbeat listener, `HASH` [`crate::addr::Addr`] → `u32` (the
/// number of self-registered elements at that address), allocated on use
/// ([`BPF_F_NO_PREALLOC`]). Written by the daemon; read by the program for datagrams to a
/// guarded destination (a [`crate::vip::FLAG_HEARTBEAT`] entry of `VNF_VIPS`).
pub const HB_PEERS: &str = "VNF_HB_PEERS";
/// Live slot and slot shapes per pool, mmap-able `ARRAY` of [`crate::pool::Pool`]. Written by the daemon.
pub const POOLS: &str = "VNF_POOLS";
/// Per pool, slot and element, mmap-able `ARRAY` of [`crate::element::Element`]. Written by the daemon.
pub const ELEMS: &str = "VNF_ELEMS";
/// Outer headers of tunnelled elements, mmap-able `ARRAY` of [`crate::tunnel::Tunnel`] at the
/// element's index in [`ELEMS`]. Written by the daemon with the element table.
pub const TUNNELS: &str = "VNF_TUNNELS";
/// Maglev tables of every pool and slot, mmap-able `ARRAY` of [`crate::ring::RingChunk`]. Written by the daemon.
pub const RING: &str = "VNF_RING";
/// Flow affinity, mmap-able `ARRAY` of [`crate::flow::FlowBucket`] (8-way set-associative), so
/// that each bucket is one aligned cache line. Written by the program.
pub const FLOWS: &str = "VNF_FLOWS";
/// The flow table's shape and clock, `ARRAY` of one [`crate::flow::FlowCtl`]. Written by the
/// loader (shape, once), the program (clock) and the daemon (the flow-events switch).
pub const FLOW_CTL: &str = "VNF_FLOW_CTL";
/// The flood guard's count, `PERCPU_ARRAY` of one [`crate::flow::FlowGuard`]. Written by the
/// program.
pub const FLOW_GUARD: &str = "VNF_FLOW_GUARD";
/// New flow entries for peer nodes, `RINGBUF` of [`crate::flow::FlowEvent`] records,
/// [`FLOW_EVENTS_SIZE`] bytes. Written by the program when `FlowCtl::events` is on, read by the
/// daemon's flow sync.
///
/// # Minimum kernel version
/// `BPF_MAP_TYPE_RINGBUF` needs Linux 5.8
/// ([`kernel/bpf/ringbuf.c`](https://github.com/torvalds/linux/blob/v5.8/kernel/bpf/ringbuf.c)
/// first appears there).
pub const FLOW_EVENTS: &str = "VNF_FLOW_EVENTS";
/// Egress devices for `XDP_REDIRECT`, `DEVMAP_HASH` ifindex → ifindex. Written by the daemon.
pub const TX_PORTS: &str = "VNF_TX_PORTS";
/// Per-pool and per-element counters, `PERCPU_ARRAY` of [`crate::stats::PoolCounters`] indexed
/// by pool. Written by the program.
pub const POOL_STATS: &str = "VNF_POOL_STATS";
/// Per-reason counters, `PERCPU_ARRAY` of [`crate::stats::Counters`] indexed by
/// [`crate::stats::Reason`]. Written by the program.
pub const REASON_STATS: &str = "VNF_REASONS";

/// The drop log (`--xdp-log`), aya-log's `RINGBUF` of log records: written by the program, read
/// by the daemon into its own log. Not pinned: each loaded program has its own, found by the
/// program's id. [`XDP_LOG_SIZE`] bytes with the log on, [`XDP_LOG_OFF_SIZE`] with it off.
pub const XDP_LOG: &str = "AYA_LOGS";
/// Bytes of [`XDP_LOG`] with the log on (aya-log's default).
pub const XDP_LOG_SIZE: u32 = 128 << 10;
/// Bytes of [`XDP_LOG`] with the log off: one page, the least a ring buffer can have (the
/// program has the map, but the verifier removed the code that writes it).
pub const XDP_LOG_OFF_SIZE: u32 = 4096;
/// The log level the program reads from `.rodata` (aya-log's `AYA_LOG_LEVEL`).
pub const XDP_LOG_LEVEL: &str = "AYA_LOG_LEVEL";

/// Every map of the program, in the order `docs/architecture.md`'s map table documents them.
pub const ALL: &[&str] = &[
    VIPS,
    VIP_FILTER,
    HB_PEERS,
    POOLS,
    ELEMS,
    TUNNELS,
    RING,
    FLOWS,
    FLOW_CTL,
    FLOW_GUARD,
    FLOW_EVENTS,
    TX_PORTS,
    POOL_STATS,
    REASON_STATS,
];

/// The kernel keeps this many bytes of a map name (`BPF_OBJ_NAME_LEN` - 1).
pub const MAX_NAME_LEN: usize = 15;

const _: () = {
    let mut i = 0;
    while i < ALL.len() {
        assert!(
            ALL[i].len() <= MAX_NAME_LEN,
            "map name longer than the kernel keeps"
        );
        i += 1;
    }
};

/// Default directory (on a bpffs) where the maps, the program and its link are pinned.
pub const PIN_DIR: &str = "/sys/fs/bpf/vnfpool";

/// Pin of the XDP link on interface `ifname`, under [`PIN_DIR`]: `link_{ifname}`. The link keeps
/// the program attached while no process holds it.
pub const LINK_PIN_PREFIX: &str = "link_";

/// Name of the XDP program (the `#[xdp]` function).
pub const PROGRAM: &str = "vnfpool";

/// Most pools (VIPs) one program serves.
pub const MAX_POOLS: u32 = 128;
/// Mappings each pool keeps: the live one and the spare being prepared.
pub const SLOTS_PER_POOL: u32 = 2;
/// Most elements in one pool; element indices are below this and fit a `u16`.
pub const MAX_ELEMENTS: u32 = 1024;
/// Default flow-table capacity in flows (the loader may set another; it is rounded up to a
/// power-of-two number of 8-flow buckets).
pub const DEFAULT_FLOW_TABLE_SIZE: u32 = 1 << 20;
/// Default Maglev table size of a pool (a prime).
pub const DEFAULT_RING_SIZE: u32 = 65_537;
/// Default capacity of the ring arena, in [`crate::ring::RingChunk`]s: room for 15 pools of
/// the default ring size in both slots. The loader may set another.
pub const DEFAULT_RING_CHUNKS: u32 = 1 << 19;
/// Entries of the VIP pre-filter (indexed by a 16-bit fold).
pub const VIP_FILTER_SIZE: u32 = 1 << 16;
/// Capacity of the VIP table: per pool one entry per port plus one address entry per protocol.
pub const MAX_VIP_ENTRIES: u32 = 4096;
/// Bytes of the flow-event ring (a power of two, a multiple of the page size): 1 MiB holds
/// 43,690 events (16 bytes each plus the kernel's 8-byte header), 44 ms of new flows at 1 M/s,
/// which the daemon drains every millisecond or so. A full ring loses events, never packets
/// ([`crate::stats::Reason::FlowEventLost`]).
pub const FLOW_EVENTS_SIZE: u32 = 1 << 20;
/// Capacity of the heartbeat sources' map: one address per element of every pool.
pub const MAX_HB_PEERS: u32 = MAX_POOLS * MAX_ELEMENTS;
/// Capacity of the egress device map.
pub const MAX_TX_PORTS: u32 = 64;
/// Entries of the element table (every element of every pool, in both slots).
pub const ELEM_ENTRIES: u32 = MAX_POOLS * SLOTS_PER_POOL * MAX_ELEMENTS;

/// `BPF_F_MMAPABLE`: the daemon writes these arrays through a shared mapping, in bulk, and
/// flips the selector with one atomic store. It also makes the kernel place the first value on
/// a page boundary (the values of a plain array start 312 bytes into `struct bpf_array` on
/// Linux 6.18, i.e. 56 bytes into a cache line), which is why the flow table has it.
pub const BPF_F_MMAPABLE: usize = 1 << 10;

/// `BPF_F_NO_PREALLOC`: a hash map whose entries are allocated when inserted, so that its
/// memory follows its use rather than its capacity.
pub const BPF_F_NO_PREALLOC: usize = 1;
