//! Three controllers as the nodes of one cluster, joined by a bus that does what the store
//! does for them (the etcd coordinator itself is tested against a real etcd in
//! `tests/cluster_etcd.rs`): verdicts go to every node, a decision is kept only from the
//! pool's leader, and the test says who leads and who is cut off.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
};

use tokio::{sync::mpsc, task::JoinHandle};

use super::{AA, ALL_ACTIVE, Harness, roles, three};
use crate::{
    cluster::{ClusterInput, ClusterOutput, Decision},
    dataplane::Mapping,
    model::health::Health,
};

/// The store as the nodes see it.
#[derive(Default)]
struct Store {
    inputs: Vec<(String, mpsc::Sender<ClusterInput>)>,
    leaders: HashMap<String, String>,
    /// Decisions the leaders wrote, in order.
    written: Vec<Decision>,
    /// Nodes that reach nothing, and nothing reaches.
    cut: HashSet<String>,
}

struct Bus {
    store: Arc<Mutex<Store>>,
    tasks: Vec<JoinHandle<()>>,
    nodes: Vec<Harness>,
}

impl Bus {
    /// Three nodes `a`, `b`, `c` with the three-element pool of `model`; `a` leads.
    async fn three(model: &str) -> Self {
        Self::start(model, false).await
    }

    /// [`Self::three`], with the API configured when `api` (registrations need it).
    async fn start(model: &str, api: bool) -> Self {
        let store = Arc::new(Mutex::new(Store::default()));
        let mut nodes = Vec::new();
        let mut tasks = Vec::new();
        for name in ["a", "b", "c"] {
            let (h, outputs) = Harness::start_node(&three(model), api, Some(name)).await;
            let mut outputs = outputs.expect("a cluster node");
            store
                .lock()
                .expect("lock")
                .inputs
                .push((name.to_owned(), h.cluster.clone()));
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                while let Some(out) = outputs.recv().await {
                    let (targets, input) = {
                        let mut s = store.lock().expect("lock");
                        if s.cut.contains(name) {
                            continue;
                        }
                        let input = match out {
                            ClusterOutput::Verdicts { pool, verdicts } => ClusterInput::Verdicts {
                                pool,
                                node: name.to_owned(),
                                verdicts: Some(verdicts),
                            },
                            ClusterOutput::Decide(d) => {
                                if s.leaders.get(&d.pool).map(String::as_str) != Some(name) {
                                    continue;
                                }
                                s.written.push(d.clone());
                                ClusterInput::Decision(d)
                            }
                            ClusterOutput::Intent { pool, intent } => ClusterInput::Intent { pool, intent },
                        };
                        (s.reachable(), input)
                    };
                    for tx in targets {
                        let _ = tx.send(input.clone()).await;
                    }
                }
            }));
            nodes.push(h);
        }
        let bus = Self { store, tasks, nodes };
        bus.all(ClusterInput::Connected(true)).await;
        bus.lead("a").await;
        bus
    }

    /// Says `input` to every node that is not cut off.
    async fn all(&self, input: ClusterInput) {
        let targets = self.store.lock().expect("lock").reachable();
        for tx in targets {
            tx.send(input.clone()).await.expect("node running");
        }
    }

    async fn lead(&self, node: &str) {
        self.store
            .lock()
            .expect("lock")
            .leaders
            .insert("dns".to_owned(), node.to_owned());
        self.all(ClusterInput::Leader {
            pool: "dns".to_owned(),
            node: Some(node.to_owned()),
        })
        .await;
    }

    fn node(&self, name: &str) -> &Harness {
        &self.nodes[["a", "b", "c"].iter().position(|n| *n == name).expect("node")]
    }

    fn written(&self) -> Vec<Decision> {
        self.store.lock().expect("lock").written.clone()
    }

    /// Waits until every node listed maps the pool from decision `generation`, and returns
    /// their mappings.
    async fn applied(&self, names: &[&str], generation: u64) -> Vec<Mapping> {
        let mut mappings = Vec::new();
        for name in names {
            let h = self.node(name);
            h.until(&format!("{name} applies decision {generation}"), |s| {
                s.cluster
                    .as_ref()
                    .is_some_and(|c| c.pools.iter().any(|p| p.generation == generation))
            })
            .await;
            mappings.push(h.dp.live(0).expect("mapped").mapping);
        }
        mappings
    }

    /// Waits until every node maps all three elements active; the generation of that decision.
    async fn settled(&self) -> u64 {
        for name in ["a", "b", "c"] {
            self.node(name)
                .until(&format!("{name} maps every element active"), |s| {
                    roles(s, "dns") == ALL_ACTIVE
                })
                .await;
        }
        self.written().last().expect("a decision").generation
    }

    /// Waits until `at` has heard `from`'s verdict on `element` be `health`.
    async fn heard(&self, at: &str, from: &str, element: &str, health: Health) {
        self.node(at)
            .until(&format!("{at} hears {from} see {element} {health:?}"), |s| {
                s.cluster.as_ref().is_some_and(|c| {
                    c.pools[0].verdicts.get(from).and_then(|v| v.get(element)) == Some(&health)
                })
            })
            .await;
    }

    /// Node `name` loses its session with the store; returns once it says so.
    async fn out_of_store(&self, name: &str) {
        let h = self.node(name);
        h.cluster
            .send(ClusterInput::Connected(false))
            .await
            .expect("running");
        h.until(&format!("{name} out of its session"), |s| {
            s.cluster.as_ref().is_some_and(|c| !c.connected)
        })
        .await;
    }

    /// Every node's probes see `elements` up.
    async fn up(&self, elements: &[&str]) {
        for h in &self.nodes {
            h.up(elements).await;
        }
    }

    async fn stop(self) {
        for t in &self.tasks {
            t.abort();
        }
        for h in self.nodes {
            h.stop().await;
        }
    }
}

impl Store {
    fn reachable(&self) -> Vec<mpsc::Sender<ClusterInput>> {
        self.inputs
            .iter()
            .filter(|(n, _)| !self.cut.contains(n))
            .map(|(_, tx)| tx.clone())
            .collect()
    }
}

#[tokio::test(start_paused = true)]
async fn every_node_maps_the_same_bytes_from_the_leaders_decision() {
    let bus = Bus::three(AA).await;
    bus.up(&["e1", "e2", "e3"]).await;
    let last = bus.settled().await;
    let first = bus.written()[0].generation;
    let maps = bus.applied(&["a", "b", "c"], last).await;
    assert!(maps[0].ring.len() > 250, "a Maglev table: {}", maps[0].ring.len());
    assert_eq!(maps[0], maps[1], "a and b differ");
    assert_eq!(maps[0], maps[2], "a and c differ");
    let used: HashSet<u16> = maps[0].ring.iter().copied().collect();
    assert_eq!(used.len(), 3, "all three elements share the table");
    assert!(
        bus.written().iter().all(|d| d.leader == "a"),
        "only the leader decided"
    );
    assert_eq!(first, 1);
    for name in ["a", "b", "c"] {
        let snap = bus.node(name).views.current();
        assert!(snap.ready, "{name} is ready once it mapped the pool");
        let c = snap.cluster.as_ref().expect("cluster status");
        assert_eq!(c.pools[0].leader.as_deref(), Some("a"));
        assert_eq!(c.pools[0].decided_by.as_deref(), Some("a"));
    }
    bus.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_node_cut_off_from_an_element_does_not_fail_it_for_the_cluster() {
    let bus = Bus::three(AA).await;
    bus.up(&["e1", "e2", "e3"]).await;
    let settled = bus.settled().await;
    let before = bus.applied(&["a", "b", "c"], settled).await;

    // b alone loses e1 (three failed probes: fall 3). a and c still reach it.
    bus.node("b").report("e1", false, 3).await;
    bus.heard("a", "b", "e1", Health::Down).await;
    assert_eq!(
        bus.written().last().expect("a decision").generation,
        settled,
        "no decision followed b's verdict"
    );
    assert_eq!(bus.node("b").dp.live(0).expect("mapped").mapping, before[1]);

    // Every node loses e1: it leaves every node's table in one decision.
    bus.node("a").report("e1", false, 3).await;
    bus.node("c").report("e1", false, 3).await;
    let after = bus.applied(&["a", "b", "c"], settled + 1).await;
    assert_eq!(after[0], after[1]);
    assert_eq!(after[0], after[2]);
    let slot = bus.node("a").slot("dns", "e1");
    assert!(!after[0].ring.contains(&slot), "e1 left the table");
    assert_eq!(bus.node("b").role("dns", "e1"), "out");
    bus.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_new_leader_starts_from_the_last_decision_and_handles_the_next_failure() {
    let bus = Bus::three(AA).await;
    bus.up(&["e1", "e2", "e3"]).await;
    let settled = bus.settled().await;
    let before = bus.applied(&["a", "b", "c"], settled).await;

    // a is gone: cut off, its verdicts withdrawn, b elected.
    bus.store.lock().expect("lock").cut.insert("a".to_owned());
    bus.all(ClusterInput::Verdicts {
        pool: "dns".to_owned(),
        node: "a".to_owned(),
        verdicts: None,
    })
    .await;
    bus.lead("b").await;
    bus.node("b")
        .until("b leads", |s| {
            s.cluster
                .as_ref()
                .is_some_and(|c| c.pools[0].leader.as_deref() == Some("b"))
        })
        .await;
    assert_eq!(
        bus.written().last().expect("a decision").generation,
        settled,
        "taking over changed nothing"
    );

    bus.node("b").report("e3", false, 3).await;
    bus.node("c").report("e3", false, 3).await;
    let after = bus.applied(&["b", "c"], settled + 1).await;
    assert_eq!(after[0], after[1]);
    let last = bus.written().last().cloned().expect("a decision");
    assert_eq!(last.leader, "b");
    assert_eq!(bus.node("c").role("dns", "e3"), "out");
    assert_ne!(after[0], before[0]);
    assert_eq!(
        bus.node("a").dp.live(0).expect("mapped").mapping,
        before[0],
        "a, cut off, keeps forwarding with what it had"
    );
    bus.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_node_without_the_store_keeps_its_mapping_and_decides_nothing() {
    let bus = Bus::three(AA).await;
    bus.up(&["e1", "e2", "e3"]).await;
    let settled = bus.settled().await;
    let before = bus.applied(&["a"], settled).await;

    // a loses its session: it leads nothing, even if the store has not moved the lead yet.
    bus.node("a")
        .cluster
        .send(ClusterInput::Connected(false))
        .await
        .expect("running");
    bus.node("a").report("e2", false, 3).await;
    bus.node("a")
        .until("a's view has e2 down", |s| {
            s.cluster.as_ref().is_some_and(|c| {
                c.pools[0].verdicts.get("a").and_then(|v| v.get("e2")) == Some(&Health::Down)
            })
        })
        .await;
    assert_eq!(bus.written().last().expect("a decision").generation, settled);
    assert_eq!(
        bus.node("a").dp.live(0).expect("mapped").mapping,
        before[0],
        "nothing flapped"
    );

    // Back, and leading again: it decides from what every node sees (b and c still see e2).
    bus.node("a")
        .cluster
        .send(ClusterInput::Connected(true))
        .await
        .expect("running");
    bus.lead("a").await;
    bus.node("a")
        .until("a leads again", |s| {
            s.cluster
                .as_ref()
                .is_some_and(|c| c.connected && c.pools[0].leader.as_deref() == Some("a"))
        })
        .await;
    assert_eq!(
        bus.written().last().expect("a decision").generation,
        settled,
        "e2 stays: b and c reach it"
    );
    bus.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_drain_asked_of_any_node_is_decided_by_the_leader_and_mapped_by_every_node() {
    let bus = Bus::three(AA).await;
    bus.up(&["e1", "e2", "e3"]).await;
    let settled = bus.settled().await;
    let drain = |element: &str, deadline| {
        let element = element.to_owned();
        move |reply| super::Command::Drain {
            pool: "dns".to_owned(),
            element,
            deadline,
            reply,
        }
    };

    // Asked of b, which does not lead: a decides, every node maps e2 draining.
    let answer = bus.node("b").ask(drain("e2", None)).await.expect("accepted");
    assert!(answer.contains("drain sent to the cluster"), "{answer}");
    let maps = bus.applied(&["a", "b", "c"], settled + 1).await;
    assert_eq!(maps[0], maps[1]);
    assert_eq!(maps[0], maps[2]);
    assert!(
        !maps[0].ring.contains(&bus.node("a").slot("dns", "e2")),
        "no new flows to e2"
    );
    for name in ["a", "b", "c"] {
        assert_eq!(bus.node(name).role("dns", "e2"), "draining", "on {name}");
    }
    assert_eq!(bus.written().last().expect("a decision").leader, "a");

    // Undrained through c.
    let answer = bus
        .node("c")
        .ask(|reply| super::Command::Undrain {
            pool: "dns".to_owned(),
            element: "e2".to_owned(),
            reply,
        })
        .await
        .expect("accepted");
    assert!(answer.contains("undrain sent"), "{answer}");
    bus.applied(&["a", "b", "c"], settled + 2).await;
    assert_eq!(bus.node("b").role("dns", "e2"), "active");

    // A deadline ends the drain on every node, through the leader's next decision.
    bus.node("c")
        .ask(drain("e3", Some(std::time::Duration::from_secs(5))))
        .await
        .expect("accepted");
    bus.applied(&["a", "b", "c"], settled + 3).await;
    assert_eq!(bus.node("c").role("dns", "e3"), "draining");
    bus.applied(&["a", "b", "c"], settled + 4).await;
    assert_eq!(bus.node("b").role("dns", "e3"), "out");

    // An unknown element is refused at once, on any node.
    let answer = bus.node("b").ask(drain("e9", None)).await;
    assert!(
        matches!(answer, Err(super::Refusal::NoElement { .. })),
        "{answer:?}"
    );
    bus.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_drain_asked_of_a_node_out_of_the_store_is_refused() {
    let bus = Bus::three(AA).await;
    bus.out_of_store("b").await;
    let answer = bus
        .node("b")
        .ask(|reply| super::Command::Drain {
            pool: "dns".to_owned(),
            element: "e1".to_owned(),
            deadline: None,
            reply,
        })
        .await;
    assert!(
        matches!(&answer, Err(super::Refusal::Failed(why)) if why.contains("out of its session")),
        "{answer:?}"
    );
    bus.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_level_asked_of_any_node_changes_every_nodes_pool_and_the_leaders_decision() {
    let bus = Bus::three("{ model: n+m, active: 1 }").await;
    bus.up(&["e1", "e2", "e3"]).await;
    for name in ["a", "b", "c"] {
        bus.node(name)
            .until(&format!("{name}: one active"), |s| {
                roles(s, "dns") == ["active", "standby", "standby"]
            })
            .await;
    }
    let level = |active| {
        move |reply| {
            super::Command::SetRedundancy(super::SetRedundancy {
                pool: "dns".to_owned(),
                active,
                reply,
            })
        }
    };
    // Asked of c, which does not lead: answered once c applied it from the store.
    let answer = bus.node("c").ask(level(2)).await.expect("applied");
    assert_eq!((answer.pool.as_str(), answer.active), ("dns", 2), "{answer:?}");
    for name in ["a", "b", "c"] {
        bus.node(name)
            .until(&format!("{name}: two actives"), |s| {
                roles(s, "dns") == ["active", "active", "standby"]
            })
            .await;
    }
    assert!(
        bus.written().iter().all(|d| d.leader == "a"),
        "the leader decided it"
    );
    // Checked where asked, before anything is written.
    let why = bus.node("b").ask(level(4)).await;
    assert!(matches!(why, Err(super::Refusal::Conflict { .. })), "{why:?}");
    bus.stop().await;
}

/// An operator's addition of e4 at 10.0.0.4.
fn add_e4(reply: super::commands::Reply<super::ElementAdded>) -> super::Command {
    super::Command::AddElement(super::AddElement {
        pool: "dns".to_owned(),
        element: "e4".to_owned(),
        body: serde_json::json!({ "address": "10.0.0.4" }),
        origin: crate::model::spec::Origin::Operator,
        subject: None,
        reply,
    })
}

/// An operator's removal of `element`.
fn remove(element: &str) -> impl FnOnce(super::commands::Reply<String>) -> super::Command {
    let element = element.to_owned();
    move |reply| {
        super::Command::RemoveElement(super::RemoveElement {
            pool: "dns".to_owned(),
            element,
            subject: None,
            reply,
        })
    }
}

#[tokio::test(start_paused = true)]
async fn elements_added_and_registered_at_any_node_reach_every_node() {
    let bus = Bus::start(AA, true).await;
    bus.up(&["e1", "e2", "e3"]).await;
    let settled = bus.settled().await;

    // An operator adds e4 through b: every node has it, probes it, and the leader maps it.
    let added = bus.node("b").ask(add_e4).await.expect("added");
    assert!(added.created && added.registration.is_none(), "{added:?}");
    bus.up(&["e4"]).await;
    for name in ["a", "b", "c"] {
        bus.node(name)
            .until(&format!("{name} maps e4 active"), |s| {
                roles(s, "dns") == ["active", "active", "active", "active"]
            })
            .await;
    }
    assert!(bus.written().last().expect("a decision").generation > settled);

    // An element registers itself through c: its id is c's, and every node takes its
    // heartbeats (a hears them here).
    let registered = super::register(bus.node("c"), "r1", "10.0.0.31")
        .await
        .expect("registered");
    let registration = registered.registration.expect("a heartbeat key");
    assert_eq!(
        registration.id >> 32,
        crate::cluster::node_id("c") >> 32,
        "c's ids: no other node hands them out"
    );
    let key = crate::heartbeat::Key::from_hex(&registration.key).expect("key");
    bus.node("a")
        .until("a knows r1", |s| roles(s, "dns").len() == 5)
        .await;
    bus.node("a").beat(registration.id, &key, 1).await;
    for name in ["a", "b", "c"] {
        bus.node(name)
            .until(&format!("{name} maps r1 active"), |s| {
                super::role_in(s, "dns", "r1").as_deref() == Some("active")
            })
            .await;
    }

    // Removed through a: gone from every node.
    let removed = bus.node("a").ask(remove("e4")).await.expect("removed");
    assert_eq!(removed, "dns/e4: removed");
    for name in ["a", "b", "c"] {
        bus.node(name)
            .until(&format!("{name} without e4"), |s| {
                super::role_in(s, "dns", "e4").is_none()
            })
            .await;
    }
    // A file element stays the file's, on any node.
    let why = bus.node("b").ask(remove("e1")).await;
    assert!(matches!(why, Err(super::Refusal::InFile { .. })), "{why:?}");
    bus.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_cluster_node_out_of_the_store_refuses_elements() {
    let bus = Bus::three(AA).await;
    bus.out_of_store("b").await;
    let answer = bus.node("b").ask(add_e4).await;
    assert!(
        matches!(&answer, Err(super::Refusal::Failed(why)) if why.contains("out of its session")),
        "{answer:?}"
    );
    bus.stop().await;
}
