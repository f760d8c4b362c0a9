//! What readers see: the controller publishes a [`Snapshot`] after each step that changed
//! something, and status, metrics and the SCE's pool summaries are built from it and from the
//! data plane's counters by the reader's own task ([`Views`]). A read never enters the
//! controller's queue, so a scrape or a status costs the controller nothing.

use std::{
    net::IpAddr,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use utoipa::ToSchema;
use vnfpool_common::stats::Counters;

use crate::{
    dataplane::{CounterSnapshot, DataplaneReader},
    heartbeat::{self, Verifier},
    metrics::{ElementSample, Metrics},
    model::{
        failover::PoolState,
        health::Health,
        roles::Role,
        spec::{PoolSpec, Protocol, RedundancySpec},
    },
};

// === The SCE's view ===

/// How a pool fares, as the SCE sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PoolHealth {
    /// Its configured redundancy is met.
    Up,
    /// It carries traffic with fewer actives or standbys than configured.
    Degraded,
    /// No element takes new flows.
    Down,
}

/// A pool's capacity, without element identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Capacity {
    /// Sum of the weights of the active elements.
    pub active_weight: u64,
    pub actives: u32,
    pub standbys: u32,
    /// Actives the configuration asks for (N).
    pub configured_actives: u32,
    /// Standbys the configuration implies (M: the other elements).
    pub configured_standbys: u32,
    /// Actives and standbys are at least as many as configured.
    pub redundancy_met: bool,
}

/// A pool as the SCE sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PoolSummary {
    pub name: String,
    #[schema(value_type = String)]
    pub vip: IpAddr,
    pub ports: Vec<u16>,
    /// `tcp` or `udp`.
    pub protocol: String,
    pub state: PoolHealth,
    pub capacity: Capacity,
}

/// The SCE's view of one pool: a pure function of its configuration and state.
#[must_use]
pub fn summary(spec: &PoolSpec, state: &PoolState) -> PoolSummary {
    let count = u32::try_from(spec.elements.len()).unwrap_or(u32::MAX);
    let configured_actives = match spec.redundancy {
        RedundancySpec::ActiveStandby { .. } => 1,
        RedundancySpec::NPlusM { active, .. } => active,
        RedundancySpec::ActiveActive => count,
    }
    .min(count);
    let (mut actives, mut standbys, mut active_weight) = (0u32, 0u32, 0u64);
    for (e, s) in spec.elements.iter().zip(state.elements()) {
        match s.role() {
            Role::Active => {
                actives += 1;
                active_weight += u64::from(e.weight);
            }
            Role::Standby => standbys += 1,
            Role::Draining | Role::Out => {}
        }
    }
    let configured_standbys = count - configured_actives;
    let redundancy_met = actives >= configured_actives && standbys >= configured_standbys;
    PoolSummary {
        name: spec.name.clone(),
        vip: spec.vip,
        ports: spec.ports.clone(),
        protocol: protocol_name(spec.protocol).to_owned(),
        state: if actives == 0 {
            PoolHealth::Down
        } else if redundancy_met {
            PoolHealth::Up
        } else {
            PoolHealth::Degraded
        },
        capacity: Capacity {
            active_weight,
            actives,
            standbys,
            configured_actives,
            configured_standbys,
            redundancy_met,
        },
    }
}

// === The operator's view ===

/// The daemon's view of its pools, for `vnfpool status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Status {
    pub pools: Vec<PoolStatus>,
    /// Heartbeats of self-registered elements, when the API is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeats: Option<crate::heartbeat::Counters>,
    /// The cluster, on a cluster node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<super::ClusterStatus>,
    /// Flow sync's counters and lag, on a cluster node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_sync: Option<Box<crate::flowsync::StatsSnapshot>>,
}

/// One pool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolStatus {
    pub name: String,
    pub vip: String,
    pub ports: Vec<u16>,
    pub protocol: String,
    pub model: String,
    /// Generation of the live data-plane mapping.
    pub generation: u32,
    pub packets: u64,
    pub bytes: u64,
    pub elements: Vec<ElementStatus>,
    /// Most recent failovers, newest last.
    pub failovers: Vec<FailoverStatus>,
    /// Detection budget and the worst-case detection of the health settings, if a budget is set.
    pub budget: Option<BudgetStatus>,
    /// Policy violations raised since the daemon started (a backup sharing a risk with its active).
    #[serde(default)]
    pub policy_violations: u64,
}

/// One element.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ElementStatus {
    pub name: String,
    pub address: String,
    /// `active`, `standby`, `draining` or `out`.
    pub role: String,
    /// `up`, `down` or `unknown`.
    pub health: String,
    pub packets: u64,
    pub bytes: u64,
    /// For an active: its backup and why it was chosen (`e3: no shared risk, site cost 2`).
    #[serde(default)]
    pub backup: Option<String>,
    /// For an active: its backup shares a risk with it.
    #[serde(default)]
    pub policy_violation: bool,
    /// A self-registered element's heartbeat paths, when it registered some.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<PathStatus>,
}

/// One heartbeat path of an element.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathStatus {
    /// The source address heartbeats come from over this path.
    pub address: String,
    /// Whether a heartbeat came over it within the miss limit.
    pub up: bool,
}

/// One failover.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailoverStatus {
    pub element: String,
    pub reason: String,
    pub detection: Duration,
    pub switch: Duration,
    /// Seconds since the Unix epoch.
    pub at_unix: f64,
}

/// A pool's budget beside what it achieves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetStatus {
    pub detect: Duration,
    pub switch: Duration,
    pub worst_detection: Duration,
}

// === The snapshot ===

/// One pool as the controller last left it: its status without the data plane's counters,
/// and where to find those.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolView {
    /// Data-plane pool index.
    pub index: u32,
    /// Data-plane element index of each element of `status.elements`.
    pub slots: Vec<u32>,
    /// Weight of each element (for the metrics).
    pub weights: Vec<u32>,
    pub status: PoolStatus,
}

/// Everything readers need, as of the controller's last step.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub pools: Vec<PoolView>,
    /// The SCE's view, in pool order.
    pub summaries: Vec<PoolSummary>,
    /// `summaries` as the JSON array `GET /v1/pools` answers: encoded once per change.
    pub summaries_json: Arc<str>,
    /// Every pool is live.
    pub ready: bool,
    /// The cluster as this node sees it; `None` on a node on its own.
    pub cluster: Option<super::ClusterStatus>,
}

/// The pool's status as the controller sees it, with zero counters.
#[must_use]
pub fn pool_status(
    spec: &PoolSpec,
    state: &PoolState,
    failovers: Vec<FailoverStatus>,
    policy_violations: u64,
) -> PoolStatus {
    let elements = spec
        .elements
        .iter()
        .zip(state.elements())
        .map(|(e, s)| {
            let backup = state.backups().iter().find(|b| b.active == e.name);
            ElementStatus {
                name: e.name.clone(),
                address: e.address.to_string(),
                role: role_name(s.role()).to_owned(),
                health: health_name(s.health()).to_owned(),
                packets: 0,
                bytes: 0,
                backup: backup.map(crate::model::placement::Backup::explain),
                policy_violation: backup.is_some_and(crate::model::placement::Backup::is_violation),
                paths: Vec::new(),
            }
        })
        .collect();
    PoolStatus {
        name: spec.name.clone(),
        vip: spec.vip.to_string(),
        ports: spec.ports.clone(),
        protocol: protocol_name(spec.protocol).to_owned(),
        model: match spec.redundancy {
            RedundancySpec::ActiveStandby { .. } => "active-standby".to_owned(),
            RedundancySpec::NPlusM { active, .. } => format!("n+m (N={active})"),
            RedundancySpec::ActiveActive => "active-active".to_owned(),
        },
        generation: 0,
        packets: 0,
        bytes: 0,
        elements,
        failovers,
        budget: spec.budget.map(|b| BudgetStatus {
            detect: b.detect,
            switch: b.switch,
            worst_detection: spec.health.worst_detection(),
        }),
        policy_violations,
    }
}

/// Reads for other tasks: the published snapshot, the data plane's counters and the
/// heartbeat counters. Cheap to clone.
#[derive(Clone)]
pub struct Views {
    pub snapshot: watch::Receiver<Arc<Snapshot>>,
    pub reader: Arc<dyn DataplaneReader>,
    /// The heartbeat verifier, when the API (and so heartbeats) is configured.
    pub heartbeats: Option<Arc<Mutex<Verifier>>>,
    /// Flow sync's counters, on a cluster node.
    pub flow_sync: Option<Arc<crate::flowsync::Stats>>,
}

impl Views {
    /// The snapshot as published last.
    #[must_use]
    pub fn current(&self) -> Arc<Snapshot> {
        Arc::clone(&self.snapshot.borrow())
    }

    fn heartbeat_counters(&self) -> Option<heartbeat::Counters> {
        self.heartbeats
            .as_ref()
            .map(|v| v.lock().unwrap_or_else(PoisonError::into_inner).counters())
    }

    fn counters(&self, snapshot: &Snapshot) -> CounterSnapshot {
        let indices: Vec<u32> = snapshot.pools.iter().map(|p| p.index).collect();
        self.reader.read(&indices).unwrap_or_default()
    }

    /// Every pool's status with the data plane's counters, read now (a few system calls per
    /// pool: call it from a task that may block briefly).
    #[must_use]
    pub fn status(&self) -> Status {
        let snapshot = self.current();
        let counters = self.counters(&snapshot);
        let pools = snapshot
            .pools
            .iter()
            .map(|view| {
                let mut status = view.status.clone();
                if let Some((c, sel)) = counters.pools.get(&view.index) {
                    status.generation = sel.generation;
                    status.packets = c.vip.packets;
                    status.bytes = c.vip.bytes;
                    for (e, &slot) in status.elements.iter_mut().zip(&view.slots) {
                        let ec = c.element(slot);
                        e.packets = ec.packets;
                        e.bytes = ec.bytes;
                    }
                }
                status
            })
            .collect();
        Status {
            pools,
            heartbeats: self.heartbeat_counters(),
            cluster: snapshot.cluster.clone(),
            flow_sync: self.flow_sync.as_ref().map(|s| Box::new(s.snapshot())),
        }
    }

    /// Copies the snapshot and the counters into `metrics` and encodes them (blocks briefly:
    /// the flow table is counted).
    #[must_use]
    pub fn scrape(&self, metrics: &Metrics) -> String {
        let snapshot = self.current();
        let counters = self.counters(&snapshot);
        for view in &snapshot.pools {
            let (pool_counters, _) = counters.pools.get(&view.index).copied().unwrap_or_default();
            let samples: Vec<ElementSample<'_>> = view
                .status
                .elements
                .iter()
                .zip(&view.slots)
                .zip(&view.weights)
                .map(|((e, &slot), &weight)| ElementSample {
                    name: &e.name,
                    role: &e.role,
                    health: &e.health,
                    weight,
                    counters: pool_counters.element(slot),
                    paths: &e.paths,
                })
                .collect();
            metrics.sample_pool(&view.status.name, pool_counters.vip, &samples);
        }
        let reasons: Vec<(vnfpool_common::stats::Reason, Counters)> = if counters.reasons.is_empty() {
            vnfpool_common::stats::Reason::ALL
                .iter()
                .map(|&r| (r, Counters::default()))
                .collect()
        } else {
            counters.reasons.clone()
        };
        metrics.sample_reasons(&reasons);
        metrics.sample_heartbeats(&self.heartbeat_counters().unwrap_or_default());
        if let Some(flows) = counters.flows {
            metrics.sample_flows(flows);
        }
        if let Some(cluster) = &snapshot.cluster {
            metrics.sample_cluster(cluster);
        }
        if let Some(stats) = &self.flow_sync {
            metrics.sample_flow_sync(&stats.snapshot());
        }
        metrics.encode()
    }
}

#[must_use]
pub fn health_name(health: Health) -> &'static str {
    match health {
        Health::Up => "up",
        Health::Down => "down",
        Health::Unknown => "unknown",
    }
}

#[must_use]
pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Active => "active",
        Role::Standby => "standby",
        Role::Draining => "draining",
        Role::Out => "out",
    }
}

fn protocol_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_counts_capacity_without_naming_elements() {
        use crate::model::{
            failover::Event,
            testutil::{n_plus_m, pool},
        };
        let spec = pool(n_plus_m(2, false), &[("a", 300, 2), ("b", 200, 3), ("c", 100, 1)]);
        let mut state = PoolState::new(&spec);
        let at = Duration::ZERO;
        for _ in 0..spec.health.rise {
            for e in 0..3 {
                state
                    .step(&spec, Event::Probe { element: e, ok: true }, at)
                    .expect("step");
            }
        }
        let s = summary(&spec, &state);
        assert_eq!(
            (
                s.state,
                s.capacity.actives,
                s.capacity.standbys,
                s.capacity.active_weight
            ),
            (PoolHealth::Up, 2, 1, 5)
        );
        assert!(s.capacity.redundancy_met);
        state
            .step(&spec, Event::LinkDown { element: 0 }, at)
            .expect("step");
        let s = summary(&spec, &state);
        assert_eq!(
            (s.state, s.capacity.actives, s.capacity.standbys),
            (PoolHealth::Degraded, 2, 0)
        );
        let json = serde_json::to_string(&s).expect("json");
        assert!(!json.contains("\"a\"") && !json.contains("\"b\""), "{json}");
    }
}
