//! The controller without a kernel or root: the recording data plane, a resolver and probers
//! of the test's own, and tokio's paused clock. Every test drives the real loop through its
//! channels and reads what it published.

use std::{
    collections::{BTreeSet, HashSet},
    fmt::Write as _,
    net::IpAddr,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::{
    sync::{mpsc, oneshot},
    task::JoinHandle,
    time::Instant,
};

use super::{
    Controller, Deps, Inputs, Start,
    commands::{self, AddElement, Command, ElementAdded, Refusal, RemoveElement, SetRedundancy},
    persist::Persisted,
    reconcile,
    snapshot::{Snapshot, Views},
    work::{self, BoxFuture, Probers, Resolver, Saver},
};
use crate::{
    config,
    dataplane::recording::{Change, RecordingDataplane},
    events::EventLog,
    health::{Outcome, ProbeReport, ProbeTarget, link::LinkEvent},
    heartbeat::{self, Clocks, Key, Signer, Verifier, udp::HeartbeatEvent},
    metrics::{Metrics, Readiness},
    model::{plan::Resolved, spec::Origin},
    resolve::ResolveError,
    store::Store,
};

mod cluster;

const MS: Duration = Duration::from_millis(1);

/// Resolves every address at once, except those listed, which fail after `slow` (an address
/// that never answers ARP).
struct FakeResolver {
    unresolvable: Mutex<HashSet<IpAddr>>,
    slow: Duration,
}

impl Resolver for FakeResolver {
    fn resolve(
        &self,
        address: IpAddr,
        interface: Option<String>,
        _mac: Option<[u8; 6]>,
        routed: bool,
    ) -> BoxFuture<Result<Resolved, ResolveError>> {
        let fails = self.unresolvable.lock().expect("lock").contains(&address);
        let slow = self.slow;
        Box::pin(async move {
            if fails {
                tokio::time::sleep(slow).await;
                return Err(ResolveError::Unresolved {
                    address,
                    interface: interface.unwrap_or_else(|| "eth1".to_owned()),
                    timeout: slow,
                });
            }
            let last = match address {
                IpAddr::V4(a) => a.octets()[3],
                IpAddr::V6(a) => a.octets()[15],
            };
            // Routed: behind one router, whose MAC every element gets.
            let path = routed.then(|| crate::model::plan::TunnelPath {
                source: if address.is_ipv4() {
                    IpAddr::from([192, 0, 2, 1])
                } else {
                    "2001:db8::1".parse().expect("address")
                },
                mtu: 1500,
            });
            Ok(Resolved {
                ifindex: 7,
                dst_mac: if routed {
                    [2, 0, 0, 0, 0xfe, 1]
                } else {
                    [2, 0, 0, 0, 0, last]
                },
                src_mac: [2, 0, 0, 0, 0, 1],
                path,
            })
        })
    }
}

/// Records the probe sets the controller starts.
#[derive(Clone, Default)]
struct RecordingProbers {
    current: Arc<Mutex<Vec<ProbeTarget>>>,
    starts: Arc<AtomicUsize>,
}

impl Probers for RecordingProbers {
    fn start(&mut self, targets: Vec<ProbeTarget>) {
        *self.current.lock().expect("lock") = targets;
        self.starts.fetch_add(1, Ordering::SeqCst);
    }
}

/// A scratch directory, removed on drop.
struct Scratch(tempfile::TempDir);

impl Scratch {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("vnfp-controller-")
            .tempdir()
            .expect("scratch dir");
        Self(dir)
    }
}

/// A running controller and everything around it.
struct Harness {
    dp: RecordingDataplane,
    probes: mpsc::Sender<ProbeReport>,
    links: mpsc::Sender<LinkEvent>,
    heartbeats: mpsc::Sender<HeartbeatEvent>,
    commands: mpsc::Sender<Command>,
    views: Views,
    metrics: Metrics,
    probers: RecordingProbers,
    resolver: Arc<FakeResolver>,
    verifier: Arc<Mutex<Verifier>>,
    epoch: Instant,
    config: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    /// The state writer: it ends after the controller, and before the scratch directory goes.
    writer: Option<JoinHandle<()>>,
    scratch: Scratch,
    /// Whether the configuration has an `api:` section.
    api: bool,
    /// What the cluster says to a cluster node (nothing to a node on its own).
    cluster: mpsc::Sender<crate::cluster::ClusterInput>,
    /// This host's addresses as the controller hears them.
    local_addresses: tokio::sync::watch::Sender<BTreeSet<std::net::IpAddr>>,
}

/// The writes a cluster node asks for (`None` for a node on its own).
type ClusterOutputs = Option<mpsc::UnboundedReceiver<crate::cluster::ClusterOutput>>;

/// A cluster node's link, and the writes it asks for.
fn cluster_link(
    node: &str,
) -> (
    super::ClusterLink,
    mpsc::UnboundedReceiver<crate::cluster::ClusterOutput>,
) {
    let (out, outputs) = mpsc::unbounded_channel();
    let link = super::ClusterLink {
        node: node.to_owned(),
        out,
    };
    (link, outputs)
}

/// The daemon section and `pools` (YAML, indented under `pools:`), with an API when `api`.
fn yaml(scratch: &Scratch, pools: &str, api: bool) -> String {
    let d = scratch.0.path().display();
    let api = if api {
        format!(
            "api:\n  listen: 127.0.0.1:9443\n  heartbeat_listen: 127.0.0.1:9444\n  cert: {d}/c.pem\n  key: {d}/k.pem\n  client_ca: {d}/ca.pem\n  clients:\n    - {{ subject: \"CN=e\", role: element }}\n    - {{ subject: \"CN=g\", role: element, pools: [dns], names: \"g-*\", prefixes: [10.0.0.64/26], max_elements: 2 }}\n"
        )
    } else {
        String::new()
    };
    format!(
        "daemon:\n  interfaces: [lo]\n  pin_dir: /sys/fs/bpf/vnfp-test\n  state_dir: {d}/state\n  socket: {d}/s.sock\n{api}pools:\n{pools}"
    )
}

const HEALTH: &str = "health: { check: tcp, port: 80, interval: 10ms, timeout: 5ms, rise: 2, fall: 3 }";

fn pool(name: &str, vip: &str, model: &str, elements: &[(&str, u8, u32)]) -> String {
    let mut out = format!(
        "  - name: {name}\n    vip: {vip}\n    ports: [53]\n    protocol: udp\n    redundancy: {model}\n    {HEALTH}\n    elements:\n"
    );
    for (n, last, priority) in elements {
        let _ = writeln!(
            out,
            "      - {{ name: {n}, address: 10.0.0.{last}, priority: {priority} }}"
        );
    }
    out
}

const AA: &str = "{ model: active-active }";
const ALL_ACTIVE: [&str; 3] = ["active", "active", "active"];

fn three(model: &str) -> String {
    pool(
        "dns",
        "192.0.2.1",
        model,
        &[("e1", 1, 300), ("e2", 2, 200), ("e3", 3, 100)],
    )
}

impl Harness {
    /// The three-element pool of `model`, every element up, with `roles` as expected.
    async fn started(model: &str, roles_then: &[&str]) -> Self {
        Self::started_with(model, roles_then, false).await
    }

    async fn started_with(model: &str, roles_then: &[&str], api: bool) -> Self {
        let h = Self::start_with(&three(model), api).await;
        h.up(&["e1", "e2", "e3"]).await;
        h.until("every element up", |s| roles(s, "dns") == roles_then)
            .await;
        h
    }

    async fn start(pools: &str) -> Self {
        Self::start_with(pools, false).await
    }

    async fn start_with(pools: &str, api: bool) -> Self {
        Self::start_node(pools, api, None).await.0
    }

    /// A controller; with `node`, one node of a cluster whose writes come out of the receiver
    /// (see `cluster.rs`).
    #[expect(
        clippy::too_many_lines,
        reason = "one harness: configuration, controller, inputs"
    )]
    async fn start_node(pools: &str, api: bool, node: Option<&str>) -> (Self, ClusterOutputs) {
        let scratch = Scratch::new();
        let config = scratch.0.path().join("pools.yaml");
        std::fs::write(&config, yaml(&scratch, pools, api)).expect("config");
        // The API's certificates are read only when the API starts, which these tests do not.
        let file_spec = config::load(&config).expect("valid configuration");
        let resolver = Arc::new(FakeResolver {
            unresolvable: Mutex::default(),
            slow: Duration::from_secs(1),
        });
        let spec = super::merged(&file_spec, &crate::registry::Added::default());
        let known = reconcile::known_resolutions(&[], &spec);
        let addresses = work::resolve_missing(
            Arc::clone(&resolver) as Arc<dyn Resolver>,
            Arc::new(spec.clone()),
            known,
            config.clone(),
        )
        .await
        .expect("resolved");
        let epoch = Instant::now();
        let mut generations = 0;
        let pools = Persisted::default()
            .restore(&spec, addresses, epoch.elapsed(), &mut generations)
            .expect("restore");
        let dp = RecordingDataplane::new();
        let probers = RecordingProbers::default();
        let verifier = Arc::new(Mutex::new(Verifier::new(heartbeat::DEFAULT_SKEW)));
        let store = Store::open(&spec.daemon.state_dir).expect("store");
        let (saver, writer) = Saver::spawn(store);
        let (link, outputs) = node.map(cluster_link).unzip();
        let metrics = Metrics::new(1024);
        let deps = Deps {
            dataplane: dp.clone(),
            resolver: Arc::clone(&resolver) as Arc<dyn Resolver>,
            probers: Box::new(probers.clone()),
            saver,
            metrics: metrics.clone(),
            events: EventLog::new(),
            readiness: Readiness::default(),
            verifier: Arc::clone(&verifier),
            work: tokio::runtime::Handle::current(),
            cluster: link,
            renewal: None,
        };
        let start = Start {
            config_path: config.clone(),
            file_spec,
            spec,
            added: crate::registry::Added::default(),
            pools,
            generations,
            epoch,
            adopted: false,
            flow_hash_key: None,
        };
        let (mut controller, views) = Controller::new(deps, start);
        controller.start(&[]);
        let (reports, reports_rx) = mpsc::channel(1024);
        let (links, links_rx) = mpsc::channel(16);
        let (heartbeats, heartbeats_rx) = mpsc::channel(1024);
        let (commands, commands_rx) = mpsc::channel(64);
        let (cluster, cluster_rx) = mpsc::channel(1024);
        let (local_addresses, local_addresses_rx) = tokio::sync::watch::channel(BTreeSet::new());
        let (stop, stopped) = oneshot::channel::<()>();
        let inputs = Inputs {
            probes: reports_rx,
            links: links_rx,
            heartbeats: heartbeats_rx,
            commands: commands_rx,
            cluster: cluster_rx,
            local_addresses: local_addresses_rx,
        };
        let task = tokio::spawn(controller.run(
            inputs,
            async move {
                let _ = stopped.await;
            },
            None,
        ));
        let harness = Self {
            cluster,
            local_addresses,
            dp,
            probes: reports,
            links,
            heartbeats,
            commands,
            views,
            metrics,
            probers,
            resolver,
            verifier,
            epoch,
            config,
            stop: Some(stop),
            task: Some(task),
            writer: Some(writer),
            scratch,
            api,
        };
        (harness, outputs)
    }

    /// The probe target of `element` as last started.
    fn target(&self, element: &str) -> ProbeTarget {
        self.probers
            .current
            .lock()
            .expect("lock")
            .iter()
            .find(|t| t.name == element)
            .cloned()
            .unwrap_or_else(|| panic!("no probe target {element}"))
    }

    async fn report_to(&self, target: &ProbeTarget, ok: bool) {
        let outcome = if ok {
            Outcome::success(MS)
        } else {
            Outcome::failure(MS, "refused".to_owned())
        };
        self.send_outcome(target, outcome).await;
    }

    async fn send_outcome(&self, target: &ProbeTarget, outcome: Outcome) {
        self.probes
            .send(ProbeReport {
                element: target.element,
                outcome,
                at: Instant::now(),
            })
            .await
            .expect("controller running");
    }

    /// `n` probe outcomes for `element`.
    async fn report(&self, element: &str, ok: bool, n: u32) {
        let target = self.target(element);
        for _ in 0..n {
            self.report_to(&target, ok).await;
        }
    }

    /// Every element of `elements` up (two successes each: rise 2).
    async fn up(&self, elements: &[&str]) {
        for e in elements {
            self.report(e, true, 2).await;
        }
    }

    /// Waits (virtual time) until the published snapshot satisfies `f`.
    async fn until(&self, what: &str, f: impl Fn(&Snapshot) -> bool) {
        let mut rx = self.views.snapshot.clone();
        tokio::time::timeout(Duration::from_mins(1), rx.wait_for(|s| f(s)))
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}: {:#?}", self.views.current().pools))
            .expect("controller running");
    }

    fn role(&self, pool: &str, element: &str) -> String {
        role_in(&self.views.current(), pool, element).unwrap_or_default()
    }

    async fn ask<T>(&self, command: impl FnOnce(commands::Reply<T>) -> Command) -> Result<T, Refusal> {
        commands::ask(&self.commands, command).await
    }

    async fn reload(&self, pools: &str) -> Result<String, Refusal> {
        std::fs::write(&self.config, yaml(&self.scratch, pools, self.api)).expect("config");
        self.ask(|reply| Command::Reload { reply }).await
    }

    /// The pool's live plan's ring, as data-plane element indices.
    fn ring(&self, pool: u32) -> HashSet<u16> {
        self.dp
            .live(pool)
            .map(|p| p.mapping.ring.into_iter().collect())
            .unwrap_or_default()
    }

    fn slot(&self, pool: &str, element: &str) -> u16 {
        let snap = self.views.current();
        let view = snap.pools.iter().find(|p| p.status.name == pool).expect("pool");
        let e = view
            .status
            .elements
            .iter()
            .position(|e| e.name == element)
            .expect("element");
        view.slots[e] as u16
    }

    /// A signed heartbeat of a registered element, through the verifier as the receiver does.
    async fn beat(&self, id: u64, key: &Key, seq: u64) {
        let wall = heartbeat::unix_ns(std::time::SystemTime::now());
        let bytes = Signer::new(id, key).sign(seq, wall);
        let mono = self.epoch.elapsed();
        self.verifier
            .lock()
            .expect("lock")
            .verify(&bytes, Clocks { wall, mono })
            .expect("accepted");
        self.heartbeats
            .send(HeartbeatEvent {
                id,
                seq,
                received: mono,
                path_up: None,
            })
            .await
            .expect("controller running");
    }

    async fn stop(mut self) {
        let _ = self.stop.take().expect("running").send(());
        self.task.take().expect("running").await.expect("controller");
        self.writer.take().expect("running").await.expect("state writer");
    }
}

fn role_in(snap: &Snapshot, pool: &str, element: &str) -> Option<String> {
    snap.pools
        .iter()
        .find(|p| p.status.name == pool)?
        .status
        .elements
        .iter()
        .find(|e| e.name == element)
        .map(|e| e.role.clone())
}

fn roles(snap: &Snapshot, pool: &str) -> Vec<String> {
    snap.pools
        .iter()
        .find(|p| p.status.name == pool)
        .map(|p| p.status.elements.iter().map(|e| e.role.clone()).collect())
        .unwrap_or_default()
}

// === Failover per redundancy model ===

#[tokio::test(start_paused = true)]
async fn active_standby_fails_over_to_the_next_priority_and_back_with_preemption() {
    let h = Harness::started(
        "{ model: active-standby, preempt: true }",
        &["active", "standby", "standby"],
    )
    .await;
    assert_eq!(h.ring(0), HashSet::from([h.slot("dns", "e1")]));
    assert!(h.views.current().ready, "ready once the pool is live");

    h.report("e1", false, 3).await;
    h.until("e2 takes over", |s| {
        roles(s, "dns") == ["out", "active", "standby"]
    })
    .await;
    assert_eq!(h.ring(0), HashSet::from([h.slot("dns", "e2")]));
    let snap = h.views.current();
    let failovers = &snap.pools[0].status.failovers;
    assert_eq!(failovers.len(), 1, "{failovers:?}");
    assert_eq!(failovers[0].element, "e1");

    h.report("e1", true, 2).await;
    h.until("e1 preempts", |s| {
        role_in(s, "dns", "e1").as_deref() == Some("active")
    })
    .await;
    h.stop().await;
}

/// Probes this host could not make (out of descriptors, say) say nothing of the element: ten of
/// them and two real failures leave it active with `fall: 3`, where counted they would fail it.
#[tokio::test(start_paused = true)]
async fn probes_this_host_could_not_make_never_fail_an_element() {
    let h = Harness::started(
        "{ model: active-standby, preempt: true }",
        &["active", "standby", "standby"],
    )
    .await;
    let target = h.target("e1");
    let emfile = Outcome {
        local: true,
        ..Outcome::failure(MS, "TCP connect: Too many open files (os error 24)".to_owned())
    };
    for _ in 0..10 {
        h.send_outcome(&target, emfile.clone()).await;
    }
    h.report("e1", false, 2).await;
    let counted = |text: &str, result: &str, n: u32| {
        text.contains(&format!(
            "vnfpool_probes_total{{pool=\"dns\",element=\"e1\",result=\"{result}\"}} {n}"
        ))
    };
    tokio::time::timeout(Duration::from_secs(5), async {
        while !counted(&h.metrics.encode(), "failed", 2) {
            tokio::time::sleep(MS).await;
        }
    })
    .await
    .expect("the two failures counted");
    let text = h.metrics.encode();
    assert!(counted(&text, "local_error", 10), "{text}");
    assert_eq!(h.role("dns", "e1"), "active", "two real failures of three");
    h.report("e1", false, 1).await;
    h.until("e1 fails on its third real failure", |s| {
        role_in(s, "dns", "e1").as_deref() == Some("out")
    })
    .await;
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn n_plus_m_promotes_a_standby_when_an_active_fails() {
    let h = Harness::started("{ model: n+m, active: 2 }", &["active", "active", "standby"]).await;
    h.report("e2", false, 3).await;
    h.until("e3 promoted", |s| roles(s, "dns") == ["active", "out", "active"])
        .await;
    assert_eq!(
        h.ring(0),
        HashSet::from([h.slot("dns", "e1"), h.slot("dns", "e3")])
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn active_active_takes_a_failed_element_out_of_the_ring() {
    let h = Harness::started(AA, &ALL_ACTIVE).await;
    h.report("e3", false, 3).await;
    h.until("e3 out", |s| roles(s, "dns") == ["active", "active", "out"])
        .await;
    assert_eq!(
        h.ring(0),
        HashSet::from([h.slot("dns", "e1"), h.slot("dns", "e2")])
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_link_down_fails_every_element_behind_it_at_once() {
    let h = Harness::started(AA, &ALL_ACTIVE).await;
    h.links
        .send(LinkEvent {
            ifindex: 7,
            name: "eth1".to_owned(),
            up: false,
        })
        .await
        .expect("running");
    h.until("all out", |s| roles(s, "dns") == ["out", "out", "out"])
        .await;
    assert!(
        h.ring(0).is_empty(),
        "no element left: the pool's traffic is dropped and counted"
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_failed_data_plane_write_keeps_the_last_mapping_and_the_next_remap_writes_all() {
    let h = Harness::started(AA, &ALL_ACTIVE).await;
    let before = h.dp.live(0).expect("live");
    h.dp.fail_next("injected");
    h.report("e1", false, 3).await;
    h.until("e1 out", |s| role_in(s, "dns", "e1").as_deref() == Some("out"))
        .await;
    assert_eq!(h.dp.live(0), Some(before), "fail static: the old mapping stays");
    h.report("e3", false, 3).await;
    h.until("e3 out", |s| role_in(s, "dns", "e3").as_deref() == Some("out"))
        .await;
    assert_eq!(
        h.ring(0),
        HashSet::from([h.slot("dns", "e2")]),
        "the next write carries both decisions"
    );
    h.stop().await;
}

// === Element identity ===

#[tokio::test(start_paused = true)]
async fn a_report_about_an_element_that_a_reload_changed_is_dropped() {
    let pools = three(AA);
    let h = Harness::started(AA, &ALL_ACTIVE).await;
    let old = h.target("e2");
    let changed = pools.replace("address: 10.0.0.2", "address: 10.0.0.22");
    h.reload(&changed).await.expect("reloaded");
    let new = h.target("e2");
    assert_eq!(new.element.slot, old.element.slot, "same name, same slot");
    assert_ne!(
        new.element.generation, old.element.generation,
        "a new incarnation"
    );
    for _ in 0..3 {
        h.report_to(&old, false).await;
    }
    // A report of e1 goes through the same queue after the stale ones: once it is seen, so
    // were they.
    h.report("e1", false, 3).await;
    h.until("e1 out", |s| role_in(s, "dns", "e1").as_deref() == Some("out"))
        .await;
    assert_ne!(
        h.role("dns", "e2"),
        "out",
        "the old incarnation's failures were dropped"
    );
    for _ in 0..3 {
        h.report_to(&new, false).await;
    }
    h.until("e2 out", |s| role_in(s, "dns", "e2").as_deref() == Some("out"))
        .await;
    h.stop().await;
}

// === Reload ===

#[tokio::test(start_paused = true)]
async fn reload_adds_changes_and_removes_elements_keeping_the_others_slots() {
    let pools = three(AA);
    let h = Harness::started(AA, &ALL_ACTIVE).await;
    let (s1, s3) = (h.slot("dns", "e1"), h.slot("dns", "e3"));
    let starts = h.probers.starts.load(Ordering::SeqCst);

    // Same file: nothing changes, probers keep their clocks.
    h.reload(&pools).await.expect("reloaded");
    assert_eq!(h.probers.starts.load(Ordering::SeqCst), starts);
    let _ = h.dp.take();

    let next = pool(
        "dns",
        "192.0.2.1",
        "{ model: active-active }",
        &[("e1", 1, 300), ("e3", 3, 100), ("e4", 4, 50)],
    );
    h.reload(&next).await.expect("reloaded");
    assert_eq!(
        h.probers.starts.load(Ordering::SeqCst),
        starts + 1,
        "probe set changed"
    );
    assert_eq!((h.slot("dns", "e1"), h.slot("dns", "e3")), (s1, s3), "kept slots");
    let e4 = h.slot("dns", "e4");
    assert!(![s1, s3].contains(&e4));
    assert_eq!(
        h.ring(0),
        HashSet::from([s1, s3]),
        "e4 carries nothing until it rises"
    );
    h.up(&["e4"]).await;
    h.until("e4 active", |s| {
        role_in(s, "dns", "e4").as_deref() == Some("active")
    })
    .await;
    assert_eq!(h.ring(0), HashSet::from([s1, s3, e4]));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn reload_withdraws_a_removed_pool_and_a_re_addressed_one_and_reuses_no_index_at_once() {
    let web = pool("web", "192.0.2.2", "{ model: active-active }", &[("w1", 11, 1)]);
    let dns = three("{ model: active-active }");
    let h = Harness::start(&format!("{dns}{web}")).await;
    h.up(&["e1", "e2", "e3", "w1"]).await;
    h.until("both live", |s| s.ready).await;
    let web_plan = h.dp.live(1).expect("web live");
    assert_eq!(web_plan.vips.len(), 1);
    let _ = h.dp.take();

    // web goes, mail comes; dns moves to another address.
    let mail = pool("mail", "192.0.2.3", "{ model: active-active }", &[("m1", 21, 1)]);
    let dns2 = dns.replace("vip: 192.0.2.1", "vip: 192.0.2.9");
    h.reload(&format!("{dns2}{mail}")).await.expect("reloaded");
    let changes = h.dp.take();
    assert!(changes.contains(&Change::Remove(1)), "web withdrawn: {changes:?}");
    assert!(
        changes.contains(&Change::Remove(0)),
        "dns withdrawn from its old address: {changes:?}"
    );
    let snap = h.views.current();
    let mail_index = snap
        .pools
        .iter()
        .find(|p| p.status.name == "mail")
        .expect("mail")
        .index;
    assert_eq!(
        mail_index, 2,
        "web's index is not reused in the reload that freed it"
    );

    h.up(&["m1"]).await;
    h.until("dns live again", |_| {
        h.dp.live(0).is_some_and(|p| {
            p.vips
                .first()
                .is_some_and(|v| v.addr == vnfpool_common::addr::from_ip("192.0.2.9".parse().expect("ip")))
        })
    })
    .await;
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_reload_of_a_broken_file_changes_nothing_and_says_why() {
    let h = Harness::started(AA, &ALL_ACTIVE).await;
    let _ = h.dp.take();
    std::fs::write(&h.config, "pools: [").expect("config");
    let why = h
        .ask(|reply| Command::Reload { reply })
        .await
        .expect_err("refused");
    assert!(why.to_string().contains("pools.yaml"), "{why}");
    assert!(h.dp.take().is_empty());
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_reload_that_changes_the_api_section_is_refused_with_where() {
    let h = Harness::started_with(AA, &ALL_ACTIVE, true).await;
    let _ = h.dp.take();
    let text = std::fs::read_to_string(&h.config).expect("config");
    let more = text.replace(
        "role: element }\n",
        "role: element }\n    - { subject: \"CN=new\", role: operator }\n",
    );
    assert_ne!(more, text);
    std::fs::write(&h.config, more).expect("config");
    let why = h
        .ask(|reply| Command::Reload { reply })
        .await
        .expect_err("refused");
    let message = why.to_string();
    assert!(
        message.contains("pools.yaml:7:") && message.contains("api section changed"),
        "{message}"
    );
    assert!(h.dp.take().is_empty(), "nothing changed");
    h.stop().await;
}

// === Drains ===

#[tokio::test(start_paused = true)]
async fn a_drain_deadline_fires_on_time() {
    let h = Harness::started(AA, &ALL_ACTIVE).await;
    let answer = h
        .ask(|reply| Command::Drain {
            pool: "dns".into(),
            element: "e2".into(),
            deadline: Some(Duration::from_secs(5)),
            reply,
        })
        .await
        .expect("drained");
    let drained_at = Instant::now();
    assert_eq!(answer, "dns/e2: draining");
    assert!(!h.ring(0).contains(&h.slot("dns", "e2")), "no new flows to e2");
    // The probes keep e2 healthy meanwhile; the deadline alone ends the drain.
    h.until("e2 out", |s| role_in(s, "dns", "e2").as_deref() == Some("out"))
        .await;
    let late = drained_at.elapsed().abs_diff(Duration::from_secs(5));
    assert!(late <= MS, "fired {late:?} away from its time");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_drain_deadline_beyond_the_clock_is_clamped_not_a_crash() {
    let h = Harness::started(AA, &ALL_ACTIVE).await;
    let answer = h
        .ask(|reply| Command::Drain {
            pool: "dns".into(),
            element: "e2".into(),
            deadline: Some(Duration::MAX),
            reply,
        })
        .await
        .expect("drained");
    assert_eq!(answer, "dns/e2: draining");
    // The controller is still deciding.
    h.report("e3", false, 3).await;
    h.until("e3 out", |s| role_in(s, "dns", "e3").as_deref() == Some("out"))
        .await;
    assert_eq!(h.role("dns", "e2"), "draining");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn drains_of_unknown_pools_and_elements_are_refused_by_kind() {
    let h = Harness::start(&three("{ model: active-active }")).await;
    let why = h
        .ask(|reply| Command::Drain {
            pool: "nope".into(),
            element: "e1".into(),
            deadline: None,
            reply,
        })
        .await
        .expect_err("refused");
    assert_eq!(why.kind(), commands::RefusalKind::NotFound);
    let why = h
        .ask(|reply| Command::Undrain {
            pool: "dns".into(),
            element: "e9".into(),
            reply,
        })
        .await
        .expect_err("refused");
    assert_eq!(
        why,
        Refusal::NoElement {
            pool: "dns".into(),
            element: "e9".into()
        }
    );
    h.stop().await;
}

// === Registrations, heartbeats, redundancy requests ===

async fn register(h: &Harness, element: &str, address: &str) -> Result<ElementAdded, Refusal> {
    register_as(
        h,
        "CN=e",
        "dns",
        element,
        serde_json::json!({ "address": address }),
    )
    .await
}

async fn register_as(
    h: &Harness,
    subject: &str,
    pool: &str,
    element: &str,
    body: serde_json::Value,
) -> Result<ElementAdded, Refusal> {
    h.ask(|reply| {
        Command::AddElement(AddElement {
            pool: pool.into(),
            element: element.into(),
            body,
            origin: Origin::Agent,
            subject: Some(subject.into()),
            reply,
        })
    })
    .await
}

/// `subject` removes `element` from `pool`.
async fn deregister_as(h: &Harness, subject: &str, pool: &str, element: &str) -> Result<String, Refusal> {
    h.ask(|reply| {
        Command::RemoveElement(RemoveElement {
            pool: pool.into(),
            element: element.into(),
            subject: Some(subject.into()),
            reply,
        })
    })
    .await
}

/// `CN=g` may register in `dns` only, names `g-*`, addresses in 10.0.0.64/26, two at once.
#[tokio::test(start_paused = true)]
async fn an_element_client_registers_only_what_its_grant_allows() {
    let pools = format!(
        "{}{}",
        three(AA),
        pool("web", "192.0.2.2", AA, &[("w1", 11, 100)])
    );
    let h = Harness::start_with(&pools, true).await;
    h.up(&["e1", "e2", "e3", "w1"]).await;
    let forbidden = |r: Result<ElementAdded, Refusal>, what: &str| {
        let why = r.expect_err(what);
        assert_eq!(why.kind(), commands::RefusalKind::Forbidden, "{what}: {why}");
        why.to_string()
    };
    let address = |a: &str| serde_json::json!({ "address": a });
    let why = forbidden(
        register_as(
            &h,
            "CN=g",
            "web",
            "g-1",
            serde_json::json!({ "address": "192.0.2.70" }),
        )
        .await,
        "another pool",
    );
    assert!(why.contains("may not register elements in pool web"), "{why}");
    let why = forbidden(
        register_as(&h, "CN=g", "dns", "x-1", address("10.0.0.65")).await,
        "another name",
    );
    assert!(why.contains("match `g-*`"), "{why}");
    let why = forbidden(
        register_as(&h, "CN=g", "dns", "g-1", address("10.0.0.31")).await,
        "another address",
    );
    assert!(why.contains("10.0.0.64/26"), "{why}");
    register_as(&h, "CN=g", "dns", "g-1", address("10.0.0.65"))
        .await
        .expect("within the grant");
    register_as(&h, "CN=g", "dns", "g-2", address("10.0.0.66"))
        .await
        .expect("the second");
    let why = forbidden(
        register_as(&h, "CN=g", "dns", "g-3", address("10.0.0.67")).await,
        "past the quota",
    );
    assert!(why.contains("max_elements: 2"), "{why}");
    // A change is held to the grant too, and does not count against the quota itself.
    forbidden(
        register_as(&h, "CN=g", "dns", "g-1", address("10.0.0.32")).await,
        "moved out of the prefix",
    );
    register_as(
        &h,
        "CN=g",
        "dns",
        "g-1",
        serde_json::json!({ "address": "10.0.0.65", "weight": 3 }),
    )
    .await
    .expect("changed within the grant");
    // A removal frees its place.
    deregister_as(&h, "CN=g", "dns", "g-2").await.expect("removed");
    register_as(&h, "CN=g", "dns", "g-3", address("10.0.0.67"))
        .await
        .expect("the quota has room again");
    h.stop().await;
}

/// A registration names neither MAC nor interface (the daemon finds them), and asks for no
/// more priority or weight than the pool's `registration:` allows (100 and 1000 by default).
#[tokio::test(start_paused = true)]
async fn a_registration_cannot_choose_its_mac_interface_or_outrank_the_pool_caps() {
    let h = Harness::started_with(AA, &ALL_ACTIVE, true).await;
    for (body, what) in [
        (
            serde_json::json!({ "address": "10.0.0.31", "mac": "02:00:00:00:00:01" }),
            "`mac`",
        ),
        (
            serde_json::json!({ "address": "10.0.0.31", "interface": "eth0" }),
            "`interface`",
        ),
        (
            serde_json::json!({ "address": "10.0.0.31", "priority": 101 }),
            "priority",
        ),
    ] {
        let why = register_as(&h, "CN=e", "dns", "a1", body).await.expect_err(what);
        assert_eq!(why.kind(), commands::RefusalKind::Invalid, "{why}");
        assert!(why.to_string().contains(what), "{why}");
    }
    register_as(
        &h,
        "CN=e",
        "dns",
        "a1",
        serde_json::json!({ "address": "10.0.0.31", "priority": 100, "weight": 1000 }),
    )
    .await
    .expect("at the caps");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_registered_element_lives_by_its_heartbeats_and_fails_when_they_stop() {
    let h = Harness::started_with(AA, &ALL_ACTIVE, true).await;
    let added = register(&h, "a1", "10.0.0.31").await.expect("registered");
    assert!(added.created);
    let registration = added.registration.expect("a heartbeat key");
    let key = Key::from_hex(&registration.key).expect("key");
    assert!(
        h.probers
            .current
            .lock()
            .expect("lock")
            .iter()
            .all(|t| t.name != "a1"),
        "heartbeats, not probes, judge a registered element"
    );
    // Again, the same: idempotent.
    let again = register(&h, "a1", "10.0.0.31").await.expect("same");
    assert!(!again.created);

    let interval = Duration::from_micros(registration.interval_us);
    for seq in 1..=20 {
        h.beat(registration.id, &key, seq).await;
        tokio::time::sleep(interval).await;
    }
    h.until("a1 active", |s| {
        role_in(s, "dns", "a1").as_deref() == Some("active")
    })
    .await;
    let silent = Instant::now();
    h.until("a1 failed by silence", |s| {
        role_in(s, "dns", "a1").as_deref() == Some("out")
    })
    .await;
    let limit = interval * registration.misses;
    assert!(
        silent.elapsed() <= limit + 2 * MS,
        "failed {:?} after its last heartbeat; the miss limit is {limit:?}",
        silent.elapsed()
    );

    let other = deregister_as(&h, "CN=someone-else", "dns", "a1")
        .await
        .expect_err("not the caller's");
    assert_eq!(other.kind(), commands::RefusalKind::Forbidden);
    let gone = deregister_as(&h, "CN=e", "dns", "a1")
        .await
        .expect("deregistered");
    assert_eq!(gone, "dns/a1: removed");
    assert!(role_in(&h.views.current(), "dns", "a1").is_none());
    assert!(!h.verifier.lock().expect("lock").contains(registration.id));
    h.stop().await;
}

/// An element that deregisters and registers again under the same name is up with the first
/// heartbeat of its new registration, as the first time.
#[tokio::test(start_paused = true)]
async fn an_element_registered_again_is_up_with_its_new_registrations_first_heartbeat() {
    let h = Harness::started_with(
        "{ model: active-standby, preempt: true }",
        &["active", "standby", "standby"],
        true,
    )
    .await;
    for round in 0..3 {
        let registration = register(&h, "a1", "10.0.0.31")
            .await
            .expect("registered")
            .registration
            .expect("a heartbeat key");
        let key = Key::from_hex(&registration.key).expect("key");
        h.beat(registration.id, &key, 1).await;
        h.until(&format!("a1 up, round {round}"), |s| {
            s.pools[0]
                .status
                .elements
                .iter()
                .any(|e| e.name == "a1" && e.health == "up")
        })
        .await;
        deregister_as(&h, "CN=e", "dns", "a1")
            .await
            .expect("deregistered");
    }
    h.stop().await;
}

/// The data plane lets datagrams reach the heartbeat listener only from the addresses of
/// running self-registered elements, as registrations come and go (issue 14, item 3).
#[tokio::test(start_paused = true)]
async fn the_heartbeat_guard_admits_the_registered_elements_addresses_only() {
    let h = Harness::started_with(AA, &ALL_ACTIVE, true).await;
    let ip = |text: &str| text.parse::<std::net::IpAddr>().expect("an address");
    let peers = |h: &Harness| -> Vec<(std::net::IpAddr, u32)> {
        h.dp.guard()
            .peers
            .iter()
            .map(|(a, n)| (vnfpool_common::addr::to_ip(a), *n))
            .collect()
    };
    let guard = h.dp.guard();
    assert_eq!(
        guard
            .listen
            .iter()
            .map(|(a, p)| (vnfpool_common::addr::to_ip(a), *p))
            .collect::<Vec<_>>(),
        [(ip("127.0.0.1"), 9444)],
        "the listener's address and port"
    );
    assert!(
        guard.peers.is_empty(),
        "nobody registered: every heartbeat dropped"
    );
    register(&h, "a1", "10.0.0.31").await.expect("registered");
    register(&h, "a2", "10.0.0.32").await.expect("registered");
    // The file's elements are probed, not heard: they are no peers.
    assert_eq!(peers(&h), [(ip("10.0.0.31"), 1), (ip("10.0.0.32"), 1)]);
    deregister_as(&h, "CN=e", "dns", "a1")
        .await
        .expect("deregistered");
    assert_eq!(
        peers(&h),
        [(ip("10.0.0.32"), 1)],
        "a deregistered element's address goes"
    );
    // A listener on one address does not follow the host's addresses.
    h.local_addresses
        .send(std::iter::once(ip("192.0.2.99")).collect())
        .expect("the controller listening");
    h.until("a snapshot after the addresses", |_| true).await;
    assert_eq!(h.dp.guard().listen.len(), 1);
    h.stop().await;
}

/// The verifier takes a registered element's heartbeats as old as its pool's miss limit plus the
/// clock skew, and no older: the window follows the pool's heartbeat settings.
#[tokio::test(start_paused = true)]
async fn the_heartbeat_window_is_the_pools_miss_limit_plus_the_skew() {
    let h = Harness::started_with(AA, &ALL_ACTIVE, true).await;
    let registration = register(&h, "a1", "10.0.0.31")
        .await
        .expect("registered")
        .registration
        .expect("a heartbeat key");
    let key = Key::from_hex(&registration.key).expect("key");
    let miss_limit = Duration::from_micros(registration.interval_us) * registration.misses;
    let skew = heartbeat::DEFAULT_SKEW;
    let wall = heartbeat::unix_ns(std::time::SystemTime::now());
    let verify = |seq: u64, age: Duration| {
        let stamped = wall - u64::try_from(age.as_nanos()).expect("small");
        let bytes = Signer::new(registration.id, &key).sign(seq, stamped);
        h.verifier.lock().expect("lock").verify(
            &bytes,
            Clocks {
                wall,
                mono: h.epoch.elapsed(),
            },
        )
    };
    assert!(
        verify(1, miss_limit + skew).is_ok(),
        "stamped the miss limit plus the skew ago ({:?})",
        miss_limit + skew
    );
    assert_eq!(
        verify(2, miss_limit + skew + MS).map(|_| ()),
        Err(heartbeat::Rejected::OutsideWindow)
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_redundancy_request_changes_the_number_of_actives() {
    let h = Harness::started("{ model: n+m, active: 1 }", &["active", "standby", "standby"]).await;
    let answer = h
        .ask(|reply| {
            Command::SetRedundancy(SetRedundancy {
                pool: "dns".into(),
                active: 2,
                reply,
            })
        })
        .await
        .expect("applied");
    assert!(answer.met, "{answer:?}");
    assert_eq!((answer.actives, answer.standbys), (2, 1));
    assert_eq!(roles(&h.views.current(), "dns"), ["active", "active", "standby"]);
    let why = h
        .ask(|reply| {
            Command::SetRedundancy(SetRedundancy {
                pool: "dns".into(),
                active: 4,
                reply,
            })
        })
        .await
        .expect_err("more than the elements");
    assert_eq!(why.kind(), commands::RefusalKind::Conflict);
    h.stop().await;
}

// === Nothing slow on the loop ===

#[tokio::test(start_paused = true)]
async fn a_failover_does_not_wait_for_registrations_whose_addresses_never_resolve() {
    let h = Harness::started_with(
        "{ model: active-standby, preempt: false }",
        &["active", "standby", "standby"],
        true,
    )
    .await;
    let mut pending = Vec::new();
    for i in 0..50u8 {
        let address = format!("10.0.1.{i}");
        h.resolver
            .unresolvable
            .lock()
            .expect("lock")
            .insert(address.parse().expect("ip"));
        let commands = h.commands.clone();
        pending.push(tokio::spawn(async move {
            commands::ask(&commands, |reply| {
                Command::AddElement(AddElement {
                    pool: "dns".into(),
                    element: format!("r{i}"),
                    body: serde_json::json!({ "address": address }),
                    origin: Origin::Agent,
                    subject: Some("CN=e".into()),
                    reply,
                })
            })
            .await
        }));
    }
    tokio::task::yield_now().await;
    let failing = Instant::now();
    h.report("e1", false, 3).await;
    h.until("e2 active", |s| {
        role_in(s, "dns", "e2").as_deref() == Some("active")
    })
    .await;
    assert!(
        failing.elapsed() < 10 * MS,
        "the failover waited {:?} behind resolutions of 1 s each",
        failing.elapsed()
    );
    // Nor does a reload: it needs no new address.
    let reloading = Instant::now();
    h.reload(&three("{ model: active-standby, preempt: false }"))
        .await
        .expect("reloaded");
    assert!(
        reloading.elapsed() < 10 * MS,
        "the reload waited {:?} behind the registrations' resolutions",
        reloading.elapsed()
    );
    for p in pending {
        let why = p.await.expect("task").expect_err("unresolvable");
        assert_eq!(why.kind(), commands::RefusalKind::Invalid, "{why}");
        assert!(why.to_string().contains("no MAC for 10.0.1."), "{why}");
    }
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn registrations_resolved_at_the_same_time_each_get_their_own_id() {
    let h = Harness::started_with(AA, &ALL_ACTIVE, true).await;
    let asks: Vec<_> = (0..5u8)
        .map(|i| {
            let commands = h.commands.clone();
            tokio::spawn(async move {
                commands::ask(&commands, |reply| {
                    Command::AddElement(AddElement {
                        pool: "dns".into(),
                        element: format!("a{i}"),
                        body: serde_json::json!({ "address": format!("10.0.0.{}", 40 + i) }),
                        origin: Origin::Agent,
                        subject: Some("CN=e".into()),
                        reply,
                    })
                })
                .await
            })
        })
        .collect();
    let mut ids = HashSet::new();
    for a in asks {
        let added = a.await.expect("task").expect("registered");
        ids.insert(added.registration.expect("registration").id);
    }
    assert_eq!(ids.len(), 5, "{ids:?}");
    let snap = h.views.current();
    assert_eq!(snap.pools[0].status.elements.len(), 8, "all five joined");
    h.stop().await;
}
