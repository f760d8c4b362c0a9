//! The seam between the controller and the kernel: the [`Dataplane`] trait, the values that cross
//! it, and its two implementations. [`AyaDataplane`] (in `bpf.rs`, with `mmap.rs`,
//! `counters.rs` and `flows.rs`) is the only code of the daemon that uses aya; a test keeps it
//! that way. [`FlowTable`] and [`FlowEvents`] (`flows.rs`) serve flow sync between cluster
//! nodes (`crate::flowsync`): the program's new entries out, peers' entries in.
//! [`recording::RecordingDataplane`] stands in for [`AyaDataplane`] in the controller's tests.
//!
//! # The switch (DESIGN invariant 1)
//! Each pool has two slots, each a complete mapping (Maglev table, element table, shape).
//! [`AyaDataplane::apply`] writes the *spare* slot through shared mappings of the arrays, then
//! switches with one aligned 64-bit atomic store into `VNF_POOLS`. The program reads that
//! selector once per packet and then only the slot it names, so each packet sees the old
//! mapping or the new one. Before a retired slot can be written again, `apply` waits for an RCU
//! grace period (`membarrier(MEMBARRIER_CMD_GLOBAL)`, which calls `synchronize_rcu()`), so no
//! program run that read the old selector is still reading the slot when it is rewritten. The
//! grace period starts right after the switch on a thread of its own, so the switch itself
//! never waits for it.

mod bpf;
mod counters;
pub mod decap;
pub mod flows;
mod mmap;
#[cfg(any(test, feature = "test-util"))]
pub mod recording;
pub mod xdp_log;

use std::{collections::BTreeMap, sync::Arc};

use vnfpool_common::{
    addr::Addr,
    flow::FlowEvent,
    pool::PoolSel,
    stats::{Counters, PoolCounters, Reason},
};

#[cfg(feature = "bench")]
pub use self::bpf::BASELINE_OBJECT;
pub use self::{
    bpf::{AyaDataplane, DataplaneError, EBPF_OBJECT, FlowHashKey, LoadOptions, Result, key_of, layout},
    counters::{AyaReader, EXACT_BUCKETS},
    flows::{AyaFlowTable, FlowEvents},
    mmap::MappedArray,
};

/// One complete mapping of a pool: what `apply` makes live in one switch.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Mapping {
    /// Maglev table: `ring_size` positions, each an element index whose element is up.
    /// Empty when the pool has no up element (its VIP traffic is then dropped and counted).
    pub ring: Vec<u16>,
    /// Element table, by element index.
    pub elements: Vec<vnfpool_common::element::Element>,
    /// Tunnel table, by element index: empty when no element is reached through a tunnel,
    /// else one entry per element (read only for elements whose `encap` names a tunnel).
    pub tunnels: Vec<vnfpool_common::tunnel::Tunnel>,
}

/// One address, port and protocol routed to a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Vip {
    pub addr: Addr,
    pub port: u16,
    pub proto: u8,
}

/// Everything the data plane holds for one pool, as one value: [`Dataplane::apply_pool`] makes
/// it live as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolPlan {
    /// Data-plane pool index.
    pub pool: u32,
    /// What is routed to the pool. Empty until the pool goes live; VIPs the pool had before and
    /// that are not here any more are withdrawn.
    pub vips: Vec<Vip>,
    /// The mapping, by data-plane element index.
    pub mapping: Mapping,
    /// Interfaces the program may redirect to for this pool's elements (ifindex).
    pub tx_ports: Vec<u32>,
}

/// The heartbeat listener's guard in the program: UDP datagrams to `listen` pass only from
/// the addresses in `peers` (`vnfpool_common::vip::FLAG_HEARTBEAT`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeartbeatGuard {
    /// The listener's addresses (every local address of its family when it listens on a
    /// wildcard), each with its port (host order). Empty: no guard.
    pub listen: std::collections::BTreeSet<(Addr, u16)>,
    /// The source addresses that may reach it, each with how many self-registered elements
    /// have it.
    pub peers: BTreeMap<Addr, u32>,
}

impl HeartbeatGuard {
    /// The guard of a listener on `listen` (`None`: no listener, no guard) that accepts
    /// heartbeats from `peers` (self-registered elements' addresses, one per element). A
    /// wildcard listener is guarded at every address in `local` that it receives on: IPv4 ones
    /// for `0.0.0.0`, all for `[::]` (a dual-stack socket).
    #[must_use]
    pub fn new(
        listen: Option<std::net::SocketAddr>,
        local: &std::collections::BTreeSet<std::net::IpAddr>,
        peers: impl IntoIterator<Item = std::net::IpAddr>,
    ) -> Self {
        let Some(listen) = listen else {
            return Self::default();
        };
        let at = |ip: std::net::IpAddr| (vnfpool_common::addr::from_ip(ip), listen.port());
        let listen = match listen.ip() {
            std::net::IpAddr::V4(v4) if v4.is_unspecified() => {
                local.iter().filter(|ip| ip.is_ipv4()).map(|&ip| at(ip)).collect()
            }
            std::net::IpAddr::V6(v6) if v6.is_unspecified() => local.iter().map(|&ip| at(ip)).collect(),
            ip => std::iter::once(at(ip)).collect(),
        };
        let mut counted = BTreeMap::new();
        for peer in peers {
            *counted.entry(vnfpool_common::addr::from_ip(peer)).or_insert(0) += 1;
        }
        Self {
            listen,
            peers: counted,
        }
    }
}

/// What one apply did, with its timings.
#[derive(Debug, Clone, Copy, Default)]
pub struct Applied {
    /// Generation now live.
    pub generation: u32,
    /// Writing the spare slot.
    pub prepare: std::time::Duration,
    /// The switch itself (the atomic store).
    pub switch: std::time::Duration,
    /// Waiting, before the write, for what was left of the previous switch's grace period
    /// (zero unless switches follow each other within a grace period).
    pub grace: std::time::Duration,
}

/// Counters and occupancy, as read at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CounterSnapshot {
    /// Per pool index asked for: what it forwarded, and its live selector.
    pub pools: BTreeMap<u32, (PoolCounters, PoolSel)>,
    /// Per drop or pass reason.
    pub reasons: Vec<(Reason, Counters)>,
    /// Flows in the flow table (exact up to [`EXACT_BUCKETS`] buckets, else estimated);
    /// `None` when the table cannot be read.
    pub flows: Option<u64>,
}

/// Reads counters without the writer, from any task: status and metrics never wait for the
/// controller, and the controller never waits for them.
pub trait DataplaneReader: Send + Sync {
    /// The counters of `pools` (data-plane indices), the reasons and the flow table's occupancy.
    fn read(&self, pools: &[u32]) -> Result<CounterSnapshot>;
}

/// Everything the controller may ask of the kernel side.
///
/// Synchronous on purpose: each operation is a few system calls and memory stores, and a fake
/// needs no runtime. Nothing here waits for an RCU grace period on the caller's thread except
/// in the one rare case [`AyaDataplane`] documents (a pool re-addressed within a grace period
/// of its withdrawal).
pub trait Dataplane: Send + 'static {
    /// Makes `plan` the pool's live state: the TX ports first, then the mapping with one atomic
    /// switch (a packet sees the previous mapping or this one, never a mix), then the VIPs the
    /// plan adds; VIPs the pool had and the plan lacks are withdrawn.
    fn apply_pool(&mut self, plan: &PoolPlan) -> Result<Applied>;
    /// Withdraws the pool's VIPs and clears its mapping. The VIP entries themselves are removed
    /// once no packet can still be reading them, without blocking the caller.
    fn remove_pool(&mut self, pool: u32) -> Result<()>;
    /// Every pool has been applied once since the start: what the maps still hold that no
    /// pool uses (egress interfaces a previous run added) may go.
    fn settled(&mut self) -> Result<()> {
        Ok(())
    }
    /// Makes `guard` the heartbeat listener's guard (replacing the one before).
    fn heartbeat_guard(&mut self, guard: &HeartbeatGuard) -> Result<()>;
    /// A reader of counters and occupancy for other tasks.
    fn reader(&self) -> Arc<dyn DataplaneReader>;
}

/// What [`FlowTable::insert`] did with a batch of peers' entries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Inserted {
    /// Entries new to the table, stored in an empty way.
    pub added: u64,
    /// Entries new to the table, stored over a full bucket's victim.
    pub evicted: u64,
    /// Flows the table had on the same element (their stamp refreshed).
    pub refreshed: u64,
    /// Flows the table had on another element, now on the peer's.
    pub replaced: u64,
    /// Flows the table had on another element, used here more recently than by the peer: kept.
    pub kept: u64,
    /// Refused: pool index out of range.
    pub bad_pool: u64,
    /// Refused: element index out of range.
    pub bad_element: u64,
    /// Refused: the hash lacks bits this table's bucket index needs.
    pub unplaceable: u64,
}

impl Inserted {
    /// Entries written (or refreshed, or found newer here).
    #[must_use]
    pub fn stored(&self) -> u64 {
        self.added + self.evicted + self.refreshed + self.replaced + self.kept
    }

    /// Entries refused.
    #[must_use]
    pub fn refused(&self) -> u64 {
        self.bad_pool + self.bad_element + self.unplaceable
    }
}

/// The flow-affinity table as flow sync between cluster nodes uses it: peers' entries in, the
/// table's entries out. Shared by the tasks that receive and send (`&self`, `Sync`).
pub trait FlowTable: Send + Sync {
    /// Writes peers' entries by the program's placement rules, refusing invalid ones; never
    /// leaves a bucket half-written (see [`flows`]).
    fn insert(&self, events: &[FlowEvent]) -> Result<Inserted>;
    /// Appends the entries of buckets `from..from + count` to `out` (only those used in the
    /// last `flow::RECENT` stamp units with `recent_only`); returns the bucket to scan next,
    /// 0 once the table is done. Entries read back carry `flow::NO_POOL`.
    fn scan(&self, from: u32, count: u32, recent_only: bool, out: &mut Vec<FlowEvent>) -> Result<u32>;
    /// Buckets of the table.
    fn buckets(&self) -> u32;
}

#[cfg(test)]
mod tests {
    use std::{
        collections::BTreeSet,
        net::{IpAddr, SocketAddr},
    };

    use vnfpool_common::addr::from_ip;

    use super::HeartbeatGuard;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    #[test]
    fn a_guard_covers_the_listeners_addresses_and_counts_its_peers() {
        let local: BTreeSet<IpAddr> = ["10.0.0.1", "192.0.2.7", "fd00::1"].into_iter().map(ip).collect();
        let peers = || ["10.1.0.2", "10.1.0.3", "10.1.0.2"].into_iter().map(ip);
        let listen = |text: &str| Some(text.parse::<SocketAddr>().expect("a socket address"));
        let dests = |g: &HeartbeatGuard| -> Vec<(IpAddr, u16)> {
            g.listen
                .iter()
                .map(|(a, p)| (vnfpool_common::addr::to_ip(a), *p))
                .collect()
        };

        let none = HeartbeatGuard::new(None, &local, peers());
        assert_eq!(
            none,
            HeartbeatGuard::default(),
            "no listener, no guard and no peers"
        );

        let one = HeartbeatGuard::new(listen("192.0.2.7:9471"), &local, peers());
        assert_eq!(dests(&one), [(ip("192.0.2.7"), 9471)]);
        assert_eq!(
            one.peers.into_iter().collect::<Vec<_>>(),
            [(from_ip(ip("10.1.0.2")), 2), (from_ip(ip("10.1.0.3")), 1)],
            "two elements at one address count twice"
        );

        let v4 = HeartbeatGuard::new(listen("0.0.0.0:9471"), &local, peers());
        assert_eq!(
            dests(&v4),
            [(ip("10.0.0.1"), 9471), (ip("192.0.2.7"), 9471)],
            "a v4 wildcard: the v4 addresses"
        );
        let both = HeartbeatGuard::new(listen("[::]:9471"), &local, peers());
        assert_eq!(
            dests(&both).len(),
            3,
            "a v6 wildcard is dual-stack: every address"
        );
    }
}
