//! The daemon as one node of a cluster, driven through what the docs document (the `cluster:`
//! section of docs/configuration.md; `vnfpool status` and the route table, docs/cluster.md): a
//! real etcd in the lab's host namespace, the node elected leader of its pool, traffic through
//! the VIP mapped from its decision, its VIP route in the cluster's table, fail static while etcd
//! is away, and the route withdrawn when the daemon stops. The lab with a router and three nodes
//! is `ecmp.rs` (BIRD) and, for the cluster's logic, the controller's own tests.

use std::{os::unix::fs::PermissionsExt as _, path::Path, time::Duration};

use vnfpool_tests::{
    daemon::{Daemon, Places, role},
    etcd::Etcd,
    lab::{self, Lab, TCP_PORT},
};

const BIN: &str = env!("CARGO_BIN_EXE_vnfpool-under-test");
const TABLE: u32 = 100;

fn config(lab: &Lab, places: &Places, etcd: &Etcd, key: &Path) -> String {
    format!(
        "{}pools:\n  - name: web\n    vip: {}\n    ports: [{TCP_PORT}]\n    protocol: tcp\n    redundancy: {{ model: active-active }}\n    health: {{ check: tcp, port: {TCP_PORT}, interval: 20ms, timeout: 50ms, rise: 2, fall: 3 }}\n{}cluster:\n  node: n1\n  etcd: {{ endpoints: [{}] }}\n  lease_ttl: 3s\n  flow_sync: {{ listen: \"127.0.0.1:9472\", key_file: {} }}\n  route_table: {TABLE}\n",
        places.daemon_section(lab),
        lab.vip,
        Places::elements(lab, &[100, 100]),
        etcd.url(),
        key.display(),
    )
}

/// The VIP routes vnfpool holds in the lab host's table.
fn routes(lab: &Lab) -> String {
    lab.host
        .ip_output(&["route", "show", "table", &TABLE.to_string(), "proto", "201"])
}

fn cluster_line(daemon: &Daemon) -> String {
    let status = daemon.status().expect("status");
    vnfpool_daemon::entry::render_status(&status)
        .lines()
        .filter(|l| l.starts_with("cluster:") || l.trim_start().starts_with("pool web "))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_cluster_node_leads_maps_announces_and_rides_out_etcd() {
    let lab = Lab::new(2);
    let places = Places::new();
    let mut etcd = Etcd::start(Some(lab.host.name()));
    let key = places.config().with_file_name("cluster.key");
    std::fs::write(&key, [7u8; 32]).expect("key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    std::fs::write(places.config(), config(&lab, &places, &etcd, &key)).expect("config");

    let mut daemon = Daemon::start(Path::new(BIN), &lab, &places);
    let status = daemon.wait_until("n1 leads and maps web", Duration::from_secs(20), |s| {
        s.cluster.as_ref().is_some_and(|c| {
            c.connected
                && c.pools
                    .iter()
                    .any(|p| p.leader.as_deref() == Some("n1") && p.generation >= 1)
        }) && role(s, "web", "e1") == Some("active")
            && role(s, "web", "e2") == Some("active")
    });
    let c = status.cluster.as_ref().expect("cluster");
    assert_eq!(c.members, vec!["n1".to_owned()]);
    assert!(status.flow_sync.is_some(), "flow sync runs on a cluster node");
    println!("{}", cluster_line(&daemon));

    // Traffic through the VIP, mapped from the decision.
    let mut conns = lab.tcp_connect(20, TCP_PORT);
    let answers = lab::ask_all(conns.iter_mut());
    assert!(answers.iter().all(Result::is_ok), "{answers:?}");

    // The VIP route, for the node's BGP speaker.
    let vip = lab.vip.to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !routes(&lab).contains(&format!("blackhole {vip}")) {
        assert!(
            std::time::Instant::now() < deadline,
            "no VIP route: {}",
            routes(&lab)
        );
        daemon.wait_until("a status round trip", Duration::from_secs(1), |_| true);
    }

    // etcd goes away: the node keeps forwarding and announcing (fail static), and says so.
    etcd.stop();
    daemon.wait_until("n1 out of its session", Duration::from_secs(10), |s| {
        s.cluster.as_ref().is_some_and(|c| !c.connected && c.member)
    });
    let answers = lab::ask_all(conns.iter_mut());
    assert!(
        answers.iter().all(Result::is_ok),
        "forwarding without etcd: {answers:?}"
    );
    assert!(
        routes(&lab).contains(&format!("blackhole {vip}")),
        "still announced"
    );
    println!("{}", cluster_line(&daemon));

    // etcd returns: the node is back, leads again, and nothing changed on the way.
    etcd.restart();
    let back = daemon.wait_until("n1 back", Duration::from_secs(20), |s| {
        s.cluster
            .as_ref()
            .is_some_and(|c| c.connected && c.pools.iter().any(|p| p.leader.as_deref() == Some("n1")))
    });
    let generation = back.cluster.as_ref().expect("cluster").pools[0].generation;
    assert_eq!(
        generation, c.pools[0].generation,
        "no new decision: nothing changed"
    );
    let answers = lab::ask_all(conns.iter_mut());
    assert!(answers.iter().all(Result::is_ok), "{answers:?}");

    // Stopping the daemon withdraws the route; the data plane keeps forwarding.
    let exit = daemon.terminate(Duration::from_secs(10));
    assert!(exit.success(), "{exit}");
    assert!(
        !routes(&lab).contains(&vip),
        "withdrawn at stop: {}",
        routes(&lab)
    );
    let answers = lab::ask_all(conns.iter_mut());
    assert!(
        answers.iter().all(Result::is_ok),
        "forwarding after the daemon: {answers:?}"
    );
}
