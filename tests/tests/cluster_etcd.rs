//! The etcd coordinator against a real etcd (Debian `etcd-server`, started by
//! `vnfpool_tests::etcd` on free loopback ports with its own data directory; never a system
//! one): leader election per pool,
//! decisions written only by the leader, verdicts that go with the lease, and leadership that
//! moves when a leader leaves or its lease runs out.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use vnfpool_daemon::{
    cluster::{
        self, ClusterInput, ClusterOutput, Coordinator, Decision, Drain, Intent, Member, Update, Verdicts,
        etcd::Etcd,
    },
    model::{health::Health, roles::Role, spec::ClusterSpec},
};
use vnfpool_tests::etcd::Etcd as TestEtcd;

fn spec(etcd: &TestEtcd, node: &str, ttl: u64) -> ClusterSpec {
    ClusterSpec {
        node: node.to_owned(),
        etcd: vnfpool_daemon::model::spec::EtcdSpec {
            endpoints: vec![etcd.url()],
            tls: None,
        },
        prefix: "/test/".to_owned(),
        lease_ttl: Duration::from_secs(ttl),
        flow_sync: vnfpool_daemon::model::spec::FlowSyncSpec {
            listen: "127.0.0.1:9472".parse().expect("addr"),
            key_file: "/dev/null".into(),
        },
        route_table: 100,
    }
}

/// Nodes `a` and `b`, both joined.
async fn two_joined(etcd: &TestEtcd) -> (Etcd, Etcd) {
    let a = Etcd::new(&spec(etcd, "a", 3)).expect("coordinator");
    let b = Etcd::new(&spec(etcd, "b", 3)).expect("coordinator");
    Box::pin(a.join(&member("a", 1001))).await.expect("a joins");
    Box::pin(b.join(&member("b", 1002))).await.expect("b joins");
    (a, b)
}

fn member(node: &str, port: u16) -> Member {
    Member {
        node: node.to_owned(),
        flow_sync: SocketAddr::from(([127, 0, 0, 1], port)),
    }
}

/// Reads changes until one satisfies `want`, within `within`.
async fn until(
    c: &Etcd,
    changes: &mut <Etcd as Coordinator>::Changes,
    within: Duration,
    want: impl Fn(&Update) -> bool,
) -> Update {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let updates = tokio::time::timeout_at(deadline, c.changes(changes))
            .await
            .expect("the awaited change within the deadline")
            .expect("changes");
        if let Some(u) = updates.into_iter().find(|u| want(u)) {
            return u;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_per_pool_and_only_it_decides() {
    let etcd = TestEtcd::start(None);
    let (a, b) = two_joined(&etcd).await;

    assert_eq!(a.campaign("web").await.expect("campaign"), "a");
    assert_eq!(b.campaign("web").await.expect("campaign"), "a", "b sees a lead");
    assert_eq!(
        b.campaign("dns").await.expect("campaign"),
        "b",
        "pools elect apart"
    );

    let decision = Decision {
        pool: "web".to_owned(),
        generation: 1,
        leader: "a".to_owned(),
        roles: [("e1".to_owned(), Role::Active), ("e2".to_owned(), Role::Standby)].into(),
    };
    assert!(a.decide(&decision).await.expect("decide"), "the leader writes");
    let forged = Decision {
        generation: 2,
        leader: "b".to_owned(),
        ..decision.clone()
    };
    assert!(!b.decide(&forged).await.expect("decide"), "a follower does not");

    let verdicts: Verdicts = [("e1".to_owned(), Health::Up), ("e2".to_owned(), Health::Down)].into();
    b.report("web", &verdicts).await.expect("report");

    // What a node joining now sees: both members, both leaders, the one decision, b's verdicts.
    let (seen, mut changes) = a.watch().await.expect("watch");
    for expected in [
        Update::Member {
            node: "a".to_owned(),
            member: Some(member("a", 1001)),
        },
        Update::Member {
            node: "b".to_owned(),
            member: Some(member("b", 1002)),
        },
        Update::Leader {
            pool: "web".to_owned(),
            node: Some("a".to_owned()),
        },
        Update::Leader {
            pool: "dns".to_owned(),
            node: Some("b".to_owned()),
        },
        Update::Decision(decision.clone()),
        Update::Verdicts {
            pool: "web".to_owned(),
            node: "b".to_owned(),
            verdicts: Some(verdicts.clone()),
        },
    ] {
        assert!(seen.contains(&expected), "missing {expected:?} in {seen:?}");
    }
    assert_eq!(seen.len(), 6, "{seen:?}");

    // b leaves: its member record, its leadership and its verdicts go at once.
    b.leave().await;
    let mut gone = Vec::new();
    while gone.len() < 3 {
        gone.extend(a.changes(&mut changes).await.expect("changes"));
    }
    assert!(gone.contains(&Update::Leader {
        pool: "dns".to_owned(),
        node: None
    }));
    assert!(gone.contains(&Update::Member {
        node: "b".to_owned(),
        member: None
    }));
    assert!(gone.contains(&Update::Verdicts {
        pool: "web".to_owned(),
        node: "b".to_owned(),
        verdicts: None
    }));
    assert_eq!(
        a.campaign("dns").await.expect("campaign"),
        "a",
        "a takes the pool b led"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drains_levels_and_elements_outlive_the_node_that_wrote_them() {
    let etcd = TestEtcd::start(None);
    let (a, b) = two_joined(&etcd).await;
    let (_, mut changes) = a.watch().await.expect("watch");
    let drain = Drain {
        until_unix_ms: Some(1_900_000_000_000),
    };
    let drained = Update::Intent {
        pool: "web".to_owned(),
        intent: Intent::Drain {
            element: "e2".to_owned(),
            drain: Some(drain),
        },
    };
    let level = Update::Intent {
        pool: "web".to_owned(),
        intent: Intent::Level { active: 2 },
    };
    let element = Update::Intent {
        pool: "web".to_owned(),
        intent: Intent::Element {
            name: "e4".to_owned(),
            element: Some(Box::new(vnfpool_daemon::registry::AddedElement {
                name: "e4".to_owned(),
                origin: vnfpool_daemon::model::spec::Origin::Operator,
                body: serde_json::json!({ "address": "10.0.0.4" }),
                agent: None,
            })),
        },
    };
    for u in [&drained, &level, &element] {
        let Update::Intent { pool, intent } = u else {
            unreachable!()
        };
        b.intend(pool, intent).await.expect("intent written");
    }
    until(&a, &mut changes, Duration::from_secs(5), |u| *u == drained).await;
    until(&a, &mut changes, Duration::from_secs(5), |u| *u == level).await;
    until(&a, &mut changes, Duration::from_secs(5), |u| *u == element).await;

    // b leaves; the drain, the level and the element are the operator's and the SCE's, not
    // b's: a node joining now still sees them.
    b.leave().await;
    let (seen, _) = a.watch().await.expect("watch");
    assert!(
        seen.contains(&drained) && seen.contains(&level) && seen.contains(&element),
        "{seen:?}"
    );

    let undrain = Intent::Drain {
        element: "e2".to_owned(),
        drain: None,
    };
    a.intend("web", &undrain).await.expect("undrain");
    let undrained = Update::Intent {
        pool: "web".to_owned(),
        intent: undrain,
    };
    until(&a, &mut changes, Duration::from_secs(5), |u| *u == undrained).await;
    let (seen, _) = a.watch().await.expect("watch");
    assert!(
        !seen.iter().any(|u| matches!(
            u,
            Update::Intent {
                intent: Intent::Drain { .. },
                ..
            }
        )),
        "{seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_leader_loses_its_pools_within_the_lease() {
    let etcd = TestEtcd::start(None);
    let (a, b) = two_joined(&etcd).await;
    assert_eq!(a.campaign("web").await.expect("campaign"), "a");
    let (_, mut changes) = b.watch().await.expect("watch");

    // b keeps its lease alive; a never does, as a node that froze or lost the network.
    let keep = tokio::spawn(async move {
        let error = b.keep_alive().await;
        (b, error)
    });
    let silent = Instant::now();
    let watcher = Etcd::new(&spec(&etcd, "watcher", 3)).expect("coordinator");
    watcher.join(&member("watcher", 1003)).await.expect("joins");
    until(&watcher, &mut changes, Duration::from_secs(5), |u| {
        *u == Update::Leader {
            pool: "web".to_owned(),
            node: None,
        }
    })
    .await;
    let lost = silent.elapsed();
    // docs/cluster.md: a dead leader's pools move within `lease_ttl` (3 s here): etcd's lease is
    // a second shorter, ends that long after the grant at most, and etcd looks for ended leases
    // every 500 ms.
    assert!(
        lost <= Duration::from_secs(3),
        "a's leadership ended after {lost:?}"
    );
    keep.abort();
    let b = Etcd::new(&spec(&etcd, "b", 3)).expect("coordinator");
    b.join(&member("b", 1002)).await.expect("b joins again");
    assert_eq!(b.campaign("web").await.expect("campaign"), "b");
    println!("a silent leader's pool was free after {lost:?} (lease_ttl 3 s)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_holds_the_lease_past_its_ttl() {
    let etcd = TestEtcd::start(None);
    let a = std::sync::Arc::new(Etcd::new(&spec(&etcd, "a", 3)).expect("coordinator"));
    a.join(&member("a", 1001)).await.expect("a joins");
    assert_eq!(a.campaign("web").await.expect("campaign"), "a");
    let keeper = {
        let a = std::sync::Arc::clone(&a);
        tokio::spawn(async move { a.keep_alive().await })
    };
    let b = Etcd::new(&spec(&etcd, "b", 3)).expect("coordinator");
    b.join(&member("b", 1002)).await.expect("b joins");
    let (_, mut changes) = b.watch().await.expect("watch");
    // Three TTLs: the key would be gone twice over without the keep-alive.
    assert!(
        !leadership_ends_within(&b, &mut changes, Duration::from_secs(6)).await,
        "a's leadership ended while its lease was kept alive"
    );
    assert!(!keeper.is_finished(), "keep-alive gave up");
    assert_eq!(b.campaign("web").await.expect("campaign"), "a");
    keeper.abort();
}

/// Whether `c` hears some pool lose its leader within `within`.
async fn leadership_ends_within(
    c: &Etcd,
    changes: &mut <Etcd as Coordinator>::Changes,
    within: Duration,
) -> bool {
    tokio::time::timeout(within, async {
        loop {
            let updates = c.changes(changes).await.expect("changes");
            if updates
                .iter()
                .any(|u| matches!(u, Update::Leader { node: None, .. }))
            {
                return;
            }
        }
    })
    .await
    .is_ok()
}

/// Receives inputs until one satisfies `want`, within 10 s.
async fn heard(
    rx: &mut tokio::sync::mpsc::Receiver<ClusterInput>,
    what: &str,
    want: impl Fn(&ClusterInput) -> bool,
) -> ClusterInput {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let input = rx.recv().await.expect("the session task runs");
            if want(&input) {
                return input;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {what} within 10 s"))
}

/// Two nodes' session tasks ([`cluster::run`]) against one etcd: what each controller would
/// hear and write, and what happens when etcd goes away and comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_carry_verdicts_and_decisions_and_survive_etcd_going_away() {
    let mut etcd = TestEtcd::start(None);
    let start = |node: &str, port: u16| {
        let coordinator = Etcd::new(&spec(&etcd, node, 3)).expect("coordinator");
        let (out, outputs) = tokio::sync::mpsc::unbounded_channel();
        let (inputs_tx, inputs) = tokio::sync::mpsc::channel(256);
        let task = tokio::spawn(cluster::run(
            coordinator,
            member(node, port),
            vec!["web".to_owned()],
            outputs,
            inputs_tx,
        ));
        (out, inputs, task)
    };
    let (a_out, mut a_in, a_task) = start("a", 1001);
    heard(&mut a_in, "a's leadership", |i| {
        *i == ClusterInput::Leader {
            pool: "web".to_owned(),
            node: Some("a".to_owned()),
        }
    })
    .await;
    let (b_out, mut b_in, b_task) = start("b", 1002);
    heard(&mut b_in, "b hearing a lead", |i| {
        *i == ClusterInput::Leader {
            pool: "web".to_owned(),
            node: Some("a".to_owned()),
        }
    })
    .await;
    heard(
        &mut a_in,
        "both members",
        |i| matches!(i, ClusterInput::Members(m) if m.len() == 2),
    )
    .await;

    let verdicts: Verdicts = [("e1".to_owned(), Health::Up)].into();
    b_out
        .send(ClusterOutput::Verdicts {
            pool: "web".to_owned(),
            verdicts: verdicts.clone(),
        })
        .expect("b's session runs");
    heard(&mut a_in, "b's verdicts", |i| {
        *i == ClusterInput::Verdicts {
            pool: "web".to_owned(),
            node: "b".to_owned(),
            verdicts: Some(verdicts.clone()),
        }
    })
    .await;
    let decision = Decision {
        pool: "web".to_owned(),
        generation: 1,
        leader: "a".to_owned(),
        roles: [("e1".to_owned(), Role::Active)].into(),
    };
    a_out
        .send(ClusterOutput::Decide(decision.clone()))
        .expect("a's session runs");
    heard(&mut b_in, "a's decision", |i| {
        *i == ClusterInput::Decision(decision.clone())
    })
    .await;

    // etcd goes away: both sessions end; they come back and a leader is elected again.
    etcd.stop();
    heard(&mut a_in, "a's session ending", |i| {
        *i == ClusterInput::Connected(false)
    })
    .await;
    heard(&mut b_in, "b's session ending", |i| {
        *i == ClusterInput::Connected(false)
    })
    .await;
    etcd.restart();
    heard(&mut a_in, "a back", |i| *i == ClusterInput::Connected(true)).await;
    heard(&mut b_in, "b back", |i| *i == ClusterInput::Connected(true)).await;
    // A session starts from what the store holds (keys in order: decisions, then leaders).
    heard(&mut b_in, "the decision again", |i| {
        *i == ClusterInput::Decision(decision.clone())
    })
    .await;
    let led = heard(&mut b_in, "a leader again", |i| {
        matches!(i, ClusterInput::Leader { node: Some(_), .. })
    })
    .await;
    println!("after etcd came back: {led:?}");

    drop((a_out, b_out));
    a_task
        .await
        .expect("a's session task ends when its controller does");
    b_task
        .await
        .expect("b's session task ends when its controller does");
}

/// A node's new session takes over the leaderships its earlier session held, whose lease
/// nothing keeps alive any more (as after etcd restarted, when the old leases still run out
/// their TTL): the leadership does not end with the old lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_session_keeps_the_leaderships_of_the_last_one() {
    let etcd = TestEtcd::start(None);
    let earlier = Etcd::new(&spec(&etcd, "a", 3)).expect("coordinator");
    earlier.join(&member("a", 1001)).await.expect("a joins");
    assert_eq!(earlier.campaign("web").await.expect("campaign"), "a");

    let coordinator = Etcd::new(&spec(&etcd, "a", 3)).expect("coordinator");
    let (out, outputs) = tokio::sync::mpsc::unbounded_channel();
    let (inputs_tx, mut inputs) = tokio::sync::mpsc::channel(256);
    let task = tokio::spawn(cluster::run(
        coordinator,
        member("a", 1001),
        vec!["web".to_owned()],
        outputs,
        inputs_tx,
    ));
    heard(&mut inputs, "a's new session", |i| {
        *i == ClusterInput::Connected(true)
    })
    .await;
    let watcher = Etcd::new(&spec(&etcd, "watcher", 3)).expect("coordinator");
    watcher.join(&member("watcher", 1003)).await.expect("joins");
    let (_, mut changes) = watcher.watch().await.expect("watch");
    // The earlier lease (2 s in etcd) ends within 2.5 s; the leadership must not end with it.
    assert!(
        !leadership_ends_within(&watcher, &mut changes, Duration::from_secs(4)).await,
        "a's leadership ended with its earlier session's lease"
    );
    assert_eq!(watcher.campaign("web").await.expect("campaign"), "a");
    drop(out);
    task.await
        .expect("the session task ends when its controller does");
}
