//! Per-CPU counters (`VNF_POOL_STATS`, `VNF_REASONS`).
//!
//! A forwarded packet is counted for its pool and for its element. Both counters live in one
//! per-CPU value per pool ([`PoolCounters`]), the pool's first, so that the program does one
//! lookup, reads one per-CPU pointer and writes two adjacent counters (for elements 0 to 2 of a
//! pool, in the cache line of the pool's own) instead of two lookups in two maps.

use crate::abi_type;

/// Packets and bytes. 16 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Counters {
    /// Packets seen.
    pub packets: u64,
    /// Bytes seen (whole frames).
    pub bytes: u64,
}
abi_type!(Counters, 16);

impl Counters {
    /// The sum of two counters (for summing over CPUs).
    #[must_use]
    pub const fn plus(self, other: Counters) -> Counters {
        Counters {
            packets: self.packets + other.packets,
            bytes: self.bytes + other.bytes,
        }
    }
}

/// Value of `VNF_POOL_STATS`, indexed by pool: what the pool forwarded, in total and per
/// element index, on one CPU. 16,400 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolCounters {
    /// Every packet forwarded to an element of the pool (the sum of `elements`).
    pub vip: Counters,
    /// Per element index (the same index in both slots: counters survive a switch).
    pub elements: [Counters; crate::maps::MAX_ELEMENTS as usize],
}
abi_type!(PoolCounters, 16 * (1 + crate::maps::MAX_ELEMENTS as usize));

impl Default for PoolCounters {
    fn default() -> Self {
        Self {
            vip: Counters::default(),
            elements: [Counters::default(); crate::maps::MAX_ELEMENTS as usize],
        }
    }
}

impl PoolCounters {
    /// The sum of two values (for summing over CPUs).
    #[must_use]
    pub fn plus(mut self, other: &PoolCounters) -> PoolCounters {
        self.vip = self.vip.plus(other.vip);
        for (a, b) in self.elements.iter_mut().zip(&other.elements) {
            *a = a.plus(*b);
        }
        self
    }

    /// The counters of element index `element` (zero beyond the table).
    #[must_use]
    pub fn element(&self, element: u32) -> Counters {
        self.elements.get(element as usize).copied().unwrap_or_default()
    }
}

/// Why the program did not forward a packet it looked at, or passed it on for the kernel:
/// the index into `VNF_REASONS`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// A VIP packet with no usable element (empty Maglev table): dropped.
    NoElement = 0,
    /// An IP fragment addressed to a VIP: dropped (fragments carry no usable port, and
    /// reassembly is the element's job behind a stateful front end, not ours).
    Fragment = 1,
    /// An ICMP error about a VIP flow that the flow table does not know: dropped.
    IcmpNoFlow = 2,
    /// A VIP packet whose element's egress interface is missing from `VNF_TX_PORTS`: dropped.
    NoTxPort = 3,
    /// A truncated or malformed header: passed to the kernel, which drops or answers it.
    Malformed = 4,
    /// An ICMP error about a VIP flow, forwarded to that flow's element.
    IcmpForwarded = 5,
    /// A new flow whose event for peer nodes did not fit the full `VNF_FLOW_EVENTS` ring: the
    /// packet is forwarded all the same, only the entry's replication is lost.
    FlowEventLost = 6,
    /// A new flow forwarded by its Maglev position but not recorded in the flow table: a TCP
    /// packet without SYN (a flow whose start this node did not see), or any new flow past the
    /// flood guard ([`crate::flow::FlowGuard`]).
    FlowNotRecorded = 7,
    /// A datagram to the heartbeat listener from a source that is not a self-registered
    /// element's address: dropped (see [`crate::vip::FLAG_HEARTBEAT`]).
    HeartbeatRefused = 8,
    /// A VIP packet for an element reached through a tunnel whose encapsulated form would be
    /// larger than the path to the element carries: not forwarded; the client is answered
    /// with ICMP "fragmentation needed" or `ICMPv6` "packet too big" (see
    /// [`crate::tunnel::Tunnel::mtu`]).
    TooBig = 9,
    /// A VIP packet that could not be encapsulated: the frame lacked headroom for the outer
    /// headers (a driver that reserves less than `XDP_PACKET_HEADROOM`), or the element's
    /// tunnel entry is missing. Dropped.
    EncapFailed = 10,
}

/// Reasons there are.
pub const REASONS: u32 = 11;
/// Entries of `VNF_REASONS`: room for reasons to come, so that adding one does not change the
/// map's layout (which would make a restarted daemon refuse the pinned maps).
pub const REASON_ENTRIES: u32 = 16;
const _: () = assert!(REASONS <= REASON_ENTRIES);

impl Reason {
    /// Every reason, by index.
    pub const ALL: [Reason; REASONS as usize] = [
        Reason::NoElement,
        Reason::Fragment,
        Reason::IcmpNoFlow,
        Reason::NoTxPort,
        Reason::Malformed,
        Reason::IcmpForwarded,
        Reason::FlowEventLost,
        Reason::FlowNotRecorded,
        Reason::HeartbeatRefused,
        Reason::TooBig,
        Reason::EncapFailed,
    ];

    /// Stable name for metrics and `vnfpool status`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Reason::NoElement => "no_element",
            Reason::Fragment => "fragment",
            Reason::IcmpNoFlow => "icmp_no_flow",
            Reason::NoTxPort => "no_tx_port",
            Reason::Malformed => "malformed",
            Reason::IcmpForwarded => "icmp_forwarded",
            Reason::FlowEventLost => "flow_event_lost",
            Reason::FlowNotRecorded => "flow_not_recorded",
            Reason::HeartbeatRefused => "heartbeat_refused",
            Reason::TooBig => "too_big",
            Reason::EncapFailed => "encap_failed",
        }
    }
}
