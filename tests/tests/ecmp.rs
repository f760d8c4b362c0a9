//! VIP announcement end to end: three vnfpool nodes announce a VIP with the route announcer
//! (`vnfpool_daemon::announce`), each node's BIRD 2 exports it over BGP (with BFD) to a BIRD 2
//! router, whose kernel then holds one ECMP route with a next hop per announcing node.
//! Needs root and Debian `bird2`.
//!
//! ```text
//!  client ── 10.191.0.0/24 ── router (bridge 10.190.0.1/24) ─┬─ node1 10.190.0.11
//!                                                            ├─ node2 10.190.0.12
//!                                                            └─ node3 10.190.0.13
//! ```

use std::{
    collections::{BTreeMap, BTreeSet},
    future::Future,
    io::ErrorKind,
    net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use vnfpool_daemon::announce::{DEFAULT_PROTOCOL, DEFAULT_TABLE, RouteAnnouncer};
use vnfpool_tests::{
    bird::{Bfd, Bird, Neighbor, NodeConfig, RouterConfig, kernel_next_hops, wait_kernel_next_hops},
    netns::{Background, Netns, VethPair, unique_name},
};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 190, 100, 1);
const VIP_PREFIX: &str = "10.190.100.1/32";
const ROUTER: Ipv4Addr = Ipv4Addr::new(10, 190, 0, 1);
const ROUTER_ASN: u32 = 65_000;
/// The nodes form one AS: their paths are equal for BIRD (same AS path length, origin, MED).
const NODE_ASN: u32 = 65_001;
const NODES: usize = 3;
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 191, 0, 2);

/// BIRD's first connect waits 1 s (`connect delay time`), then the session needs a round trip
/// or two; more than enough.
const ESTABLISHED_TIMEOUT: Duration = Duration::from_secs(20);
/// A withdrawal is one BGP UPDATE from the node, sent as soon as its BIRD hears of the route
/// removal over netlink; measured here in tens of milliseconds. A bound well below the hold
/// time (3 s) shows the route left because it was withdrawn, not because a session died.
const WITHDRAW_BOUND: Duration = Duration::from_secs(1);
/// A node cut off from the router: BFD (50 ms x 3) notices in about 150 ms; without BFD the
/// router would wait for the hold time (3 s).
const PARTITION_BOUND: Duration = Duration::from_millis(1_500);

const UDP_PORT: u16 = 9_000;
const FLOWS: u16 = 200;
const FIRST_CLIENT_PORT: u16 = 30_000;
/// Fewest flows a node must get of 200 over three nodes: 66.7 expected, standard deviation
/// sqrt(200 * 1/3 * 2/3) = 6.7, so 40 is 4 standard deviations short; a router that did not
/// hash the ports (`fib_multipath_hash_policy=0`) sends the single client address to one node.
const MIN_FLOWS_PER_NODE: usize = 40;

fn node_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 190, 0, 11 + u8::try_from(i).expect("a small index"))
}

fn node_hops(nodes: &[usize]) -> BTreeSet<IpAddr> {
    nodes.iter().map(|&i| IpAddr::V4(node_addr(i))).collect()
}

/// Fields drop in order: BIRD stops before its namespace goes, links before namespaces.
struct EcmpLab {
    router_bird: Bird,
    _node_birds: Vec<Bird>,
    /// Per node: end `a` is the router's bridge port, end `b` the node's `eth`.
    ports: Vec<VethPair>,
    _client_link: VethPair,
    nodes: Vec<Netns>,
    client: Netns,
    router: Netns,
}

impl EcmpLab {
    fn new() -> Self {
        let router = Netns::new();
        let client = Netns::new();
        let nodes: Vec<Netns> = (0..NODES).map(|_| Netns::new()).collect();

        let bridge = unique_name();
        router.ip(&["link", "add", &bridge, "type", "bridge"]);
        router.ip(&["link", "set", &bridge, "up"]);
        router.ip(&["addr", "add", &format!("{ROUTER}/24"), "dev", &bridge]);
        let ports: Vec<VethPair> = nodes
            .iter()
            .enumerate()
            .map(|(i, node)| {
                let pair = VethPair::new(&router, node);
                router.ip(&["link", "set", &pair.a.name, "master", &bridge]);
                node.ip(&[
                    "addr",
                    "add",
                    &format!("{}/24", node_addr(i)),
                    "dev",
                    &pair.b.name,
                ]);
                node.ip(&["route", "add", "default", "via", &ROUTER.to_string()]);
                pair
            })
            .collect();

        let client_link = VethPair::new(&client, &router);
        client.ip(&["addr", "add", &format!("{CLIENT}/24"), "dev", &client_link.a.name]);
        client.ip(&["route", "add", "default", "via", "10.191.0.1"]);
        router.ip(&["addr", "add", "10.191.0.1/24", "dev", &client_link.b.name]);

        let mut router_bird = Bird::start_router(
            &router,
            &RouterConfig {
                addr: ROUTER,
                asn: ROUTER_ASN,
                neighbors: (0..NODES)
                    .map(|i| Neighbor {
                        name: format!("node{}", i + 1),
                        addr: node_addr(i),
                        asn: NODE_ASN,
                    })
                    .collect(),
                bfd: Bfd::Fast,
            },
        );
        let node_birds: Vec<Bird> = nodes
            .iter()
            .enumerate()
            .map(|(i, node)| {
                Bird::start_node(
                    node,
                    &NodeConfig {
                        addr: node_addr(i),
                        asn: NODE_ASN,
                        router: ROUTER,
                        router_asn: ROUTER_ASN,
                        table: DEFAULT_TABLE,
                        bfd: Bfd::Fast,
                    },
                )
            })
            .collect();
        let started = Instant::now();
        for i in 0..NODES {
            router_bird.wait_established(&format!("node{}", i + 1), ESTABLISHED_TIMEOUT);
        }
        println!(
            "BGP sessions of {NODES} nodes established in {:?}",
            started.elapsed()
        );
        Self {
            router_bird,
            _node_birds: node_birds,
            ports,
            _client_link: client_link,
            nodes,
            client,
            router,
        }
    }

    /// Runs the announcer in node `i`'s namespace with `vips` as the wanted set; returns the
    /// moment just before its sync.
    fn announce(&self, i: usize, vips: &[Ipv4Addr]) -> Instant {
        let wanted: BTreeSet<IpAddr> = vips.iter().copied().map(IpAddr::V4).collect();
        in_ns(&self.nodes[i], || async move {
            let mut announcer = RouteAnnouncer::new(DEFAULT_TABLE, DEFAULT_PROTOCOL).expect("an announcer");
            let at = Instant::now();
            announcer.sync(&wanted).await.expect("announcing");
            at
        })
    }

    /// The router's route to the VIP has exactly the next hops of `nodes`; the time since
    /// `since` it took.
    #[track_caller]
    fn wait_router(&self, nodes: &[usize], since: Instant, timeout: Duration) -> Duration {
        wait_kernel_next_hops(&self.router, VIP_PREFIX, &node_hops(nodes), since, timeout)
    }
}

/// Runs `body` on a current-thread runtime on a thread inside `ns`.
fn in_ns<F, Fut, T>(ns: &Netns, body: F) -> T
where
    F: FnOnce() -> Fut + Send,
    Fut: Future<Output = T>,
    T: Send,
{
    ns.run(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(body())
    })
}

#[test]
fn the_router_keeps_one_next_hop_per_announcing_node() {
    let lab = EcmpLab::new();
    assert!(
        kernel_next_hops(&lab.router, VIP_PREFIX).is_empty(),
        "no route before any announcement"
    );

    let start = Instant::now();
    for i in 0..NODES {
        let _ = lab.announce(i, &[VIP]);
    }
    let all: Vec<usize> = (0..NODES).collect();
    let took = lab.wait_router(&all, start, ESTABLISHED_TIMEOUT);
    println!("announced by {NODES} nodes: a {NODES}-way ECMP route after {took:?}");
    assert_eq!(lab.router_bird.route_next_hops(VIP_PREFIX), node_hops(&all));

    // A withdrawal (e.g. the node's last usable element went down) takes one next hop away.
    let at = lab.announce(1, &[]);
    let took = lab.wait_router(&[0, 2], at, WITHDRAW_BOUND);
    println!("withdrawn on node2: the router dropped its next hop after {took:?}");
    assert_eq!(
        lab.router_bird.protocol_state("node2").split_whitespace().last(),
        Some("Established"),
        "a withdrawal keeps the session"
    );

    let at = lab.announce(1, &[VIP]);
    let took = lab.wait_router(&all, at, WITHDRAW_BOUND);
    println!("announced again on node2: the router added its next hop after {took:?}");

    // A node cut off from the router (its port out of the bridge) is noticed by BFD.
    let at = Instant::now();
    lab.router.ip(&["link", "set", &lab.ports[2].a.name, "nomaster"]);
    let took = lab.wait_router(&[0, 1], at, PARTITION_BOUND);
    println!("node3 partitioned: the router dropped its next hop after {took:?} (BFD 50 ms x 3)");

    // The last one to withdraw takes the route away.
    let at = Instant::now();
    for i in 0..2 {
        let _ = lab.announce(i, &[]);
    }
    let took = lab.wait_router(&[], at, WITHDRAW_BOUND);
    println!("withdrawn on the last nodes: the route was gone after {took:?}");
}

#[test]
#[expect(
    clippy::disallowed_methods,
    reason = "waits in real time for datagrams through a real router"
)]
fn udp_flows_to_the_vip_split_over_the_nodes() {
    let lab = EcmpLab::new();
    let counts: Arc<Mutex<BTreeMap<usize, BTreeSet<u16>>>> = Arc::default();
    let mut receivers: Vec<Background> = Vec::new();
    for (i, node) in lab.nodes.iter().enumerate() {
        node.ip(&["addr", "add", &format!("{VIP}/32"), "dev", "lo"]);
        let socket = node.run(|| UdpSocket::bind((VIP, UDP_PORT)).expect("binding the VIP"));
        socket
            .set_read_timeout(Some(Duration::from_millis(20)))
            .expect("a read timeout");
        let counts = Arc::clone(&counts);
        receivers.push(node.spawn("udp receiver", move |stop| {
            let mut buf = [0u8; 64];
            while !stop.stopped() {
                match socket.recv_from(&mut buf) {
                    Ok((_, SocketAddr::V4(from))) => {
                        counts
                            .lock()
                            .expect("counts")
                            .entry(i)
                            .or_default()
                            .insert(from.port());
                    }
                    Ok(_) => {}
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(e) => panic!("receiving: {e}"),
                }
            }
        }));
        let _ = lab.announce(i, &[VIP]);
    }
    let all: Vec<usize> = (0..NODES).collect();
    lab.wait_router(&all, Instant::now(), ESTABLISHED_TIMEOUT);

    let sockets: Vec<UdpSocket> = lab.client.run(|| {
        (0..FLOWS)
            .map(|n| UdpSocket::bind((CLIENT, FIRST_CLIENT_PORT + n)).expect("binding a client port"))
            .collect()
    });
    // A datagram may wait for the router's first neighbour resolution of a node: send again
    // (same flows) until every flow has arrived somewhere.
    let deadline = Instant::now() + Duration::from_secs(5);
    let per_node = loop {
        for socket in &sockets {
            socket.send_to(b"flow", (VIP, UDP_PORT)).expect("sending");
        }
        std::thread::sleep(Duration::from_millis(100));
        let counts = counts.lock().expect("counts").clone();
        let seen: BTreeSet<u16> = counts.values().flatten().copied().collect();
        if seen.len() == usize::from(FLOWS) {
            break counts;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {FLOWS} flows arrived",
            seen.len()
        );
    };
    let shares: Vec<usize> = (0..NODES)
        .map(|i| per_node.get(&i).map_or(0, BTreeSet::len))
        .collect();
    println!("{FLOWS} UDP flows over {NODES} nodes: {shares:?}");
    assert_eq!(
        shares.iter().sum::<usize>(),
        usize::from(FLOWS),
        "every flow on exactly one node"
    );
    assert!(
        shares.iter().all(|&n| n >= MIN_FLOWS_PER_NODE),
        "the router hashes the ports: {shares:?}"
    );
    drop(receivers);
}
