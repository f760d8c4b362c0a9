//! The cluster when nodes die, printed as a table. Run through `cargo xtask bench`; figures are
//! in BENCHMARKS.md.
//!
//! Each run builds the three-node lab of `vnfpool_tests::cluster_lab` (a BIRD router with ECMP,
//! etcd, three daemons each beside its BIRD) with two of its three elements configured, makes
//! 300 TCP connections through the VIP, adds the third element (about a third of the flows are
//! then pinned by the flow tables: the table would send them to the new element), waits until
//! flow sync gave every node the others' flows, and then:
//! - kills a node that does not lead (link down, BIRD and daemon killed): the time until the
//!   router dropped its next hop, and how many connections broke or changed element when each
//!   was asked once after that, counted apart for pinned flows and the others;
//! - kills the leader: the time until the last node leads the pool.
//!
//! Variants: BFD (50 ms x 3) with flow sync; BGP's own timers (hold 3 s) with flow sync; BFD
//! without flow sync (the nodes share the key, and with it the flow hash, but no node reaches
//! another, so none gets the others' flows), the same-run baseline for the broken connections.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use vnfpool_tests::{
    bird::Bfd,
    cluster_lab::{ClusterLab, NODES, Options, leader, pick, role},
    lab::ask_all,
};

const RUNS: usize = 5;
const CONNS: usize = 300;
const WAIT: Duration = Duration::from_secs(20);

/// What one run measured.
struct Run {
    router: Duration,
    /// Connections of flows whose element the table did not change, broken or moved.
    broken_unchanged: usize,
    /// Connections of pinned flows, broken or moved.
    broken_pinned: usize,
    pinned: usize,
    takeover: Duration,
}

fn run(binary: &Path, options: &Options) -> Run {
    let mut lab = ClusterLab::start(binary, options);
    let mut conns = lab.connect(CONNS);
    let sports: Vec<u16> = conns.iter().map(|c| c.sport).collect();
    let paths = lab.paths(&sports);
    let first = lab.table(0);
    let key = lab.flow_hash_key(0);
    let elements: Vec<String> = sports.iter().map(|&s| pick(&first, &key, s).to_owned()).collect();

    for i in 0..NODES {
        lab.configure(i, 3);
    }
    lab.reload_all();
    for i in 0..NODES {
        lab.wait_node(i, "e3 active", WAIT, |s| role(s, "e3") == Some("active"));
    }
    let second = lab.table(0);
    let pinned: Vec<bool> = (0..CONNS)
        .map(|k| pick(&second, &key, sports[k]) != elements[k])
        .collect();
    if options.flow_sync {
        lab.wait_flows_synced(&paths);
    }

    let leader_name = lab.leader(0).expect("a leader");
    let victim = (0..NODES)
        .find(|&i| lab.nodes[i].name != leader_name)
        .expect("a follower");
    let survivors: Vec<usize> = (0..NODES).filter(|&i| i != victim).collect();
    let at = lab.kill_node(victim);
    let router = lab.wait_router(&survivors, at, WAIT);
    let answers = ask_all(conns.iter_mut().map(|c| &mut c.stream));
    let (mut broken_unchanged, mut broken_pinned) = (0, 0);
    for (k, answer) in answers.iter().enumerate() {
        if answer.as_deref().ok() != Some(elements[k].as_str()) {
            if pinned[k] {
                broken_pinned += 1;
            } else {
                broken_unchanged += 1;
            }
        }
    }

    let dead = lab.index(&leader_name);
    let last = survivors.into_iter().find(|&i| i != dead).expect("a last node");
    let last_name = lab.nodes[last].name.clone();
    let at = lab.kill_node(dead);
    lab.wait_node(last, "leads", WAIT, |s| {
        leader(s).as_deref() == Some(last_name.as_str())
    });
    Run {
        router,
        broken_unchanged,
        broken_pinned,
        pinned: pinned.iter().filter(|&&p| p).count(),
        takeover: at.elapsed(),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Median and largest.
fn spread(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (v[v.len() / 2], *v.last().expect("runs"))
}

fn main() {
    let binary = vnfpool_tests::sibling_binary("vnfpool-under-test");
    println!(
        "a cluster of 3 nodes behind a BIRD router (ECMP), {CONNS} TCP connections, lease_ttl 3 s; {RUNS} runs per variant, \
         each killing a follower, then the leader\n"
    );
    println!(
        "| variant | router dropped the dead node (median / max) | connections broken: element unchanged | connections broken: pinned | leader failover (median / max) |"
    );
    println!("|---|---:|---:|---:|---:|");
    for (name, bfd, flow_sync) in [
        ("BFD 50 ms x 3, flow sync", Bfd::Fast, true),
        ("BGP timers (hold 3 s), flow sync", Bfd::Off, true),
        ("BFD 50 ms x 3, no flow sync (baseline)", Bfd::Fast, false),
    ] {
        let started = Instant::now();
        let runs: Vec<Run> = (0..RUNS)
            .map(|_| {
                run(
                    &binary,
                    &Options {
                        configured: 2,
                        bfd,
                        flow_sync,
                    },
                )
            })
            .collect();
        let (router, router_max) = spread(runs.iter().map(|r| r.router).collect());
        let (takeover, takeover_max) = spread(runs.iter().map(|r| r.takeover).collect());
        let unchanged: usize = runs.iter().map(|r| r.broken_unchanged).sum();
        let broken_pinned: usize = runs.iter().map(|r| r.broken_pinned).sum();
        let pinned: usize = runs.iter().map(|r| r.pinned).sum();
        println!(
            "| {name} | {:.0} / {:.0} ms | {unchanged} of {} | {broken_pinned} of {pinned} | {:.0} / {:.0} ms |",
            ms(router),
            ms(router_max),
            RUNS * CONNS - pinned,
            ms(takeover),
            ms(takeover_max),
        );
        eprintln!("({name}: {:.0} s)", started.elapsed().as_secs_f64());
    }
    println!(
        "\nconnections are asked once each after the router dropped the dead node; a broken one was reset, \
         timed out or answered from another element. Pinned: the flows the element added would take, kept on \
         their element by the flow tables."
    );
}
