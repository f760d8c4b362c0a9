//! The daemon's cluster parts (`cluster:`): the session with etcd, flow sync between the
//! nodes and the VIP routes the node announces. All of them run on the main runtime, off the
//! failover loop; the controller sees the cluster only through its link and inputs.

use std::{collections::BTreeSet, net::SocketAddr, os::unix::fs::PermissionsExt as _, path::Path, sync::Arc};

use tokio::{
    sync::{mpsc, oneshot, watch},
    task::JoinHandle,
};
use tracing::{error, info, warn};

use super::AppError;
use crate::{
    announce::{self, NodeState, PoolReach, RouteAnnouncer},
    cluster::{self, ClusterInput, Member, etcd::Etcd},
    controller::{ClusterLink, snapshot::Snapshot},
    dataplane::AyaDataplane,
    flowsync::{FlowSync, FlowSyncConfig},
    model::spec::{ClusterSpec, Spec},
};

/// Shortest and longest cluster key file.
const KEY_MIN: usize = 32;
const KEY_MAX: usize = 1024;

/// What runs while the node is a member.
pub(super) struct Joined {
    pub link: Option<ClusterLink>,
    /// What the session task says, for the controller (silent on a node on its own).
    pub inputs: mpsc::Receiver<ClusterInput>,
    /// Flow sync; its tasks stop when it is dropped.
    pub flows: Option<FlowSync>,
}

/// Starts the session task and flow sync for `spec`'s cluster (new flows reported by the
/// program from now on); on a node on its own, a silent input and nothing else.
pub(super) async fn join(spec: &Spec, dp: &mut AyaDataplane) -> Result<Joined, AppError> {
    let (inputs_tx, inputs) = mpsc::channel(1024);
    let Some(c) = &spec.cluster else {
        dp.set_flow_events(false)?;
        return Ok(Joined {
            link: None,
            inputs,
            flows: None,
        });
    };
    let key = read_key(&c.flow_sync.key_file)?;
    let etcd = Etcd::new(c).map_err(|e| AppError::Cluster(e.to_string()))?;
    let (out, outputs) = mpsc::unbounded_channel();
    let me = Member {
        node: c.node.clone(),
        flow_sync: c.flow_sync.listen,
    };
    // The members also make flow sync's peer list.
    let (peers_tx, peers) = watch::channel(Vec::new());
    let (relay_tx, mut relay) = mpsc::channel::<ClusterInput>(1024);
    let node = c.node.clone();
    tokio::spawn(async move {
        while let Some(input) = relay.recv().await {
            if let ClusterInput::Members(members) = &input {
                peers_tx.send_replace(peers_of(&node, members));
            }
            if inputs_tx.send(input).await.is_err() {
                break;
            }
        }
    });
    let pools = spec.pools.iter().map(|p| p.name.clone()).collect();
    info!(node = %c.node, endpoints = ?c.etcd.endpoints, "joining the cluster");
    tokio::spawn(cluster::run(etcd, me, pools, outputs, relay_tx));

    dp.set_flow_events(true)?;
    let events = dp.flow_events()?;
    let table = Arc::new(dp.flow_table()?);
    let config = FlowSyncConfig::new(c.flow_sync.listen, key, cluster::node_id(&c.node));
    let flows = FlowSync::start(config, events, table, peers)
        .await
        .map_err(|e| AppError::Cluster(format!("flow sync on {}: {e}", c.flow_sync.listen)))?;
    info!(listen = %c.flow_sync.listen, "flow sync running");
    Ok(Joined {
        link: Some(ClusterLink {
            node: c.node.clone(),
            out,
        }),
        inputs,
        flows: Some(flows),
    })
}

/// The flow hash's key of every node of the cluster: derived from the cluster's secret, so
/// that nodes behind ECMP give a flow the same hash, hence the same Maglev position and the
/// same flow-table entry (flow sync sends hashes).
pub(super) fn flow_hash_key(c: &ClusterSpec) -> Result<vnfpool_common::flow::HashKey, AppError> {
    let secret = crate::flowsync::wire::Key::new(&read_key(&c.flow_sync.key_file)?);
    let derived = secret.derive(b"vnfpool flow hash key v1");
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&derived[..16]);
    Ok(crate::dataplane::key_of(bytes))
}

/// The flow-sync addresses of the other members.
fn peers_of(me: &str, members: &[Member]) -> Vec<SocketAddr> {
    members
        .iter()
        .filter(|m| m.node != me)
        .map(|m| m.flow_sync)
        .collect()
}

/// The cluster key: `KEY_MIN..=KEY_MAX` bytes, readable by its owner only.
fn read_key(path: &Path) -> Result<Vec<u8>, AppError> {
    let what = || format!("cluster.flow_sync.key_file {}", path.display());
    let meta = std::fs::metadata(path).map_err(|e| AppError::Cluster(format!("{}: {e}", what())))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(AppError::Cluster(format!(
            "{}: mode {:o} lets others read the cluster key; chmod 600 it",
            what(),
            meta.permissions().mode() & 0o777
        )));
    }
    let key = std::fs::read(path).map_err(|e| AppError::Cluster(format!("{}: {e}", what())))?;
    if !(KEY_MIN..=KEY_MAX).contains(&key.len()) {
        return Err(AppError::Cluster(format!(
            "{}: {} bytes; expected {KEY_MIN}..={KEY_MAX} random bytes (head -c 32 /dev/urandom > FILE)",
            what(),
            key.len()
        )));
    }
    Ok(key)
}

/// Keeps the node's VIP routes in `c.route_table` as the controller's snapshots say: every
/// VIP with an active element while the node is a member (joined, its lease not known lost:
/// etcd away for every node must not take every route away), none otherwise. Withdraws them
/// all when `stop` fires.
pub(super) fn announce(
    c: &ClusterSpec,
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    stop: oneshot::Receiver<()>,
) -> Result<JoinHandle<()>, AppError> {
    let mut announcer = RouteAnnouncer::new(c.route_table, announce::DEFAULT_PROTOCOL)
        .map_err(|e| AppError::Cluster(format!("route_table {}: {e}", c.route_table)))?;
    Ok(tokio::spawn(async move {
        tokio::pin!(stop);
        let mut last: Option<BTreeSet<std::net::IpAddr>> = None;
        loop {
            let wanted = wanted(&snapshots.borrow_and_update());
            if last.as_ref() != Some(&wanted) {
                match announcer.sync(&wanted).await {
                    Ok(changes) if !changes.is_empty() => {
                        info!(?changes, table = announcer.table(), "VIP routes changed");
                        last = Some(wanted);
                    }
                    Ok(_) => last = Some(wanted),
                    // Tried again with the next snapshot.
                    Err(e) => error!(error = %e, "VIP routes not brought up to date"),
                }
            }
            tokio::select! {
                _ = &mut stop => break,
                changed = snapshots.changed() => if changed.is_err() { break },
            }
        }
        match announcer.withdraw_all().await {
            Ok(_) => info!(table = announcer.table(), "VIP routes withdrawn"),
            Err(e) => warn!(error = %e, "VIP routes not withdrawn"),
        }
    }))
}

/// What a snapshot says to announce.
fn wanted(snapshot: &Snapshot) -> BTreeSet<std::net::IpAddr> {
    let node = NodeState {
        dataplane_up: true,
        member: snapshot.cluster.as_ref().is_some_and(|c| c.member),
    };
    let pools = snapshot.pools.iter().filter_map(|p| {
        Some(PoolReach {
            vip: p.status.vip.parse().ok()?,
            usable: p.status.elements.iter().any(|e| e.role == "active"),
        })
    });
    announce::wanted(node, pools)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_are_the_other_members() {
        let m = |n: &str, port| Member {
            node: n.to_owned(),
            flow_sync: SocketAddr::from(([10, 0, 0, 1], port)),
        };
        assert_eq!(
            peers_of("b", &[m("a", 1), m("b", 2), m("c", 3)]),
            vec![m("a", 1).flow_sync, m("c", 3).flow_sync]
        );
    }

    #[test]
    fn the_key_file_must_be_private_and_long_enough() {
        let dir = tempfile::Builder::new()
            .prefix("vnfp-key-")
            .tempdir()
            .expect("dir");
        let path = dir.path().join("cluster.key");
        std::fs::write(&path, [7u8; 32]).expect("key");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let open = read_key(&path).expect_err("readable by others");
        assert!(open.to_string().contains("chmod 600"), "{open}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(read_key(&path).expect("a good key").len(), 32);
        std::fs::write(&path, [7u8; 8]).expect("key");
        let short = read_key(&path).expect_err("too short");
        assert!(short.to_string().contains("8 bytes"), "{short}");
    }
}
