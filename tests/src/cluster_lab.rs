//! A cluster lab: one client, one router (BIRD 2, ECMP on the L4 ports), an etcd, three
//! vnfpool nodes (each a real daemon beside its own BIRD, its XDP program on its uplink) and
//! three elements, every node and element with an uplink into one bridge behind the router, and
//! each node with a veth pair of its own to each element. Everything is removed on drop.
//!
//! ```text
//!  client 10.191.0.2 ── router 10.191.0.1 ── bridge 10.190.0.1/24 ─┬─ n1 .11  n2 .12  n3 .13
//!                       etcd 10.189.0.1:2379                       └─ e1 .21  e2 .22  e3 .23
//!  and n<i> ── e<j> for every i, j: node i's route to 10.190.0.2<j>/32
//! ```
//!
//! A packet to the VIP goes client → router → (ECMP over the nodes that announce the VIP) a node,
//! whose program rewrites the MACs and redirects the frame into its link to the element (a veth
//! transmits an `XDP_TX` into a bridge port only if that port has an XDP program of its own:
//! shared/TOOLCHAIN.md). Elements hold the VIP on `lo` and answer through their uplink straight
//! to the router (direct server return). Each node's configuration differs only in its name,
//! interface and places; its elements are named by address and resolved by the node itself.
#![expect(
    clippy::missing_panics_doc,
    reason = "test helpers fail by panicking with context (STYLE rule 15), every one of them"
)]

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::mpsc,
    time::{Duration, Instant},
};

use aya::maps::{Array, Map, MapData};
use socket2::{Domain, Protocol, Socket, Type};
use vnfpool_common::{
    addr,
    element::{Element, elem_index},
    flow::{self, FlowCtl, FlowKey},
    maps,
    pool::Pool,
    ring::{self, RingChunk},
    vip::PROTO_TCP,
};
use vnfpool_daemon::{announce::DEFAULT_TABLE, control::Status};

use crate::{
    bird::{Bfd, Bird, Neighbor, NodeConfig, RouterConfig, kernel_next_hops, wait_kernel_next_hops},
    daemon::{self, Daemon, Places, Scratch},
    etcd::Etcd,
    lab::{IO_TIMEOUT, tcp_server},
    netns::{Background, Link, Netns, VethPair},
};

/// The pool's virtual address.
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 190, 100, 1);
const VIP_PREFIX: &str = "10.190.100.1/32";
/// The pool's port: every element answers each line on it with `"<name>\n"`.
pub const PORT: u16 = 8080;
/// The pool's name.
pub const POOL: &str = "web";
/// Nodes and elements in the lab.
pub const NODES: usize = 3;
pub const ELEMENTS: usize = 3;
/// The cluster's lease TTL.
pub const LEASE_TTL: Duration = Duration::from_secs(3);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 191, 0, 2);
const ROUTER: Ipv4Addr = Ipv4Addr::new(10, 190, 0, 1);
const ETCD: Ipv4Addr = Ipv4Addr::new(10, 189, 0, 1);
const ROUTER_ASN: u32 = 65_000;
const NODE_ASN: u32 = 65_001;
const FLOW_SYNC_PORT: u16 = 9_472;
/// The client's first source port: fixed, so that each flow's node and element are the same
/// in every run.
const FIRST_CLIENT_PORT: u16 = 20_000;
/// BIRD's first connect waits 1 s, then a round trip or two.
const ESTABLISHED_TIMEOUT: Duration = Duration::from_secs(20);
/// Flow sync sends new flows within milliseconds; this bounds a lab's few hundred.
const SYNC_TIMEOUT: Duration = Duration::from_secs(10);
/// A node's daemon: joined, leader elected, first decision mapped.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

fn node_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 190, 0, 11 + u8::try_from(i).expect("a small index"))
}

fn element_addr(j: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 190, 0, 21 + u8::try_from(j).expect("a small index"))
}

/// How to build a [`ClusterLab`].
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Elements in the pool's configuration at the start: the first ones of the lab's.
    pub configured: usize,
    /// Whether BFD watches the BGP sessions.
    pub bfd: Bfd,
    /// Whether the nodes share flows (else no node reaches another's flow-sync port).
    pub flow_sync: bool,
}

/// One vnfpool node: a daemon and a BIRD in a namespace, `None` once killed.
pub struct ClusterNode {
    /// `n1`, `n2`, …
    pub name: String,
    pub addr: Ipv4Addr,
    pub daemon: Option<Daemon>,
    bird: Option<Bird>,
    pub places: Places,
    /// Its end of its link to the router's bridge (XDP runs here).
    pub link: Link,
}

/// One element: its TCP service on every address, `None` while stopped.
pub struct ClusterElement {
    pub name: String,
    pub addr: Ipv4Addr,
    /// Its ends of its links to the nodes, `links[i]` to node `i`.
    pub links: Vec<Link>,
    server: Option<Background>,
}

/// One client connection through the VIP.
pub struct Conn {
    pub stream: TcpStream,
    pub sport: u16,
}

/// The lab; see the module docs. Fields drop in order: daemons and BIRDs, etcd, servers, links,
/// namespaces.
pub struct ClusterLab {
    pub nodes: Vec<ClusterNode>,
    router_bird: Bird,
    etcd: Etcd,
    pub elements: Vec<ClusterElement>,
    _links: Vec<VethPair>,
    /// The router's end of the client's link.
    client_port: Link,
    /// The cluster key of each node: one file for all.
    keys: Vec<PathBuf>,
    binary: PathBuf,
    scratch: Scratch,
    next_port: u16,
    /// `node_ns[i]` is node `i`'s.
    pub node_ns: Vec<Netns>,
    /// `element_ns[j]` is element `j`'s.
    pub element_ns: Vec<Netns>,
    pub client: Netns,
    pub router: Netns,
}

impl ClusterLab {
    /// Builds the lab with BFD on every BGP session, starts every node with the first
    /// `configured` elements in its pool, and returns once every node maps the pool's first
    /// decision and the router holds a next hop per node.
    #[must_use]
    pub fn new(binary: &Path, configured: usize) -> Self {
        Self::start(
            binary,
            &Options {
                configured,
                bfd: Bfd::Fast,
                flow_sync: true,
            },
        )
    }

    /// [`Self::new`] with `options`.
    #[must_use]
    pub fn start(binary: &Path, options: &Options) -> Self {
        let &Options {
            configured,
            bfd,
            flow_sync,
        } = options;
        let router = Netns::new();
        let client = Netns::new();
        let node_ns: Vec<Netns> = (0..NODES).map(|_| Netns::new()).collect();
        let element_ns: Vec<Netns> = (0..ELEMENTS).map(|_| Netns::new()).collect();
        let Wiring {
            links,
            node_links,
            element_links,
            client_port,
        } = wire(&router, &client, &node_ns, &element_ns);

        let etcd = Etcd::start_at(Some(router.name()), ETCD);
        let router_bird = Bird::start_router(
            &router,
            &RouterConfig {
                addr: ROUTER,
                asn: ROUTER_ASN,
                neighbors: (0..NODES)
                    .map(|i| Neighbor {
                        name: format!("n{}", i + 1),
                        addr: node_addr(i),
                        asn: NODE_ASN,
                    })
                    .collect(),
                bfd,
            },
        );

        let elements: Vec<ClusterElement> = element_links
            .into_iter()
            .enumerate()
            .map(|(j, links)| ClusterElement {
                name: format!("e{}", j + 1),
                addr: element_addr(j),
                links,
                server: None,
            })
            .collect();

        let scratch = Scratch::new();
        // One key for every node: the cluster's flow hash comes from it too.
        let key = scratch.path.join("cluster.key");
        std::fs::write(&key, [0x5a; 32]).expect("a cluster key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod 0600");
        let keys = vec![key; NODES];
        if !flow_sync {
            // Without flow sync no node reaches another (they talk only for it; BGP and etcd
            // are on the router): what one sends the others never get.
            for (i, ns) in node_ns.iter().enumerate() {
                for j in (0..NODES).filter(|&j| j != i) {
                    ns.ip(&["route", "add", "blackhole", &format!("{}/32", node_addr(j))]);
                }
            }
        }

        let nodes: Vec<ClusterNode> = node_links
            .into_iter()
            .enumerate()
            .map(|(i, link)| ClusterNode {
                name: format!("n{}", i + 1),
                addr: node_addr(i),
                daemon: None,
                bird: None,
                places: Places::new(),
                link,
            })
            .collect();
        let mut lab = Self {
            nodes,
            router_bird,
            etcd,
            elements,
            _links: links,
            client_port,
            keys,
            binary: binary.to_owned(),
            scratch,
            next_port: FIRST_CLIENT_PORT,
            node_ns,
            element_ns,
            client,
            router,
        };
        for j in 0..ELEMENTS {
            lab.start_element(j);
        }
        lab.start_nodes(configured, bfd);
        lab
    }

    /// Starts every node's BIRD and daemon, and waits until each maps the pool's first
    /// decision and the router has a next hop per node.
    fn start_nodes(&mut self, configured: usize, bfd: Bfd) {
        for i in 0..NODES {
            self.configure(i, configured);
            let node = &mut self.nodes[i];
            node.bird = Some(Bird::start_node(
                &self.node_ns[i],
                &NodeConfig {
                    addr: node.addr,
                    asn: NODE_ASN,
                    router: ROUTER,
                    router_asn: ROUTER_ASN,
                    table: DEFAULT_TABLE,
                    bfd,
                },
            ));
            self.start_daemon(i);
        }
        for i in 0..NODES {
            let name = self.nodes[i].name.clone();
            self.router_bird.wait_established(&name, ESTABLISHED_TIMEOUT);
        }
        for i in 0..NODES {
            self.wait_node(i, "the pool mapped from a decision", READY_TIMEOUT, |s| {
                applied_generation(s) >= 1
                    && (0..configured).all(|j| role(s, &format!("e{}", j + 1)) == Some("active"))
            });
        }
        let all: Vec<usize> = (0..NODES).collect();
        self.wait_router(&all, Instant::now(), ESTABLISHED_TIMEOUT);
    }

    /// Writes node `i`'s configuration with the first `elements` elements in the pool.
    pub fn configure(&self, i: usize, elements: usize) {
        let node = &self.nodes[i];
        let mut text = node.places.daemon_section_on(&node.link.name);
        write!(
            text,
            "pools:\n  - name: {POOL}\n    vip: {VIP}\n    ports: [{PORT}]\n    protocol: tcp\n    \
             redundancy: {{ model: active-active }}\n    \
             health: {{ check: tcp, port: {PORT}, interval: 20ms, timeout: 50ms, rise: 2, fall: 3 }}\n    \
             elements:\n"
        )
        .expect("a String");
        for e in &self.elements[..elements] {
            writeln!(text, "      - {{ name: {}, address: {} }}", e.name, e.addr).expect("a String");
        }
        write!(
            text,
            "cluster:\n  node: {}\n  etcd: {{ endpoints: [\"{}\"] }}\n  lease_ttl: {}s\n  \
             flow_sync: {{ listen: \"{}:{FLOW_SYNC_PORT}\", key_file: {} }}\n  route_table: {DEFAULT_TABLE}\n",
            node.name,
            self.etcd.url(),
            LEASE_TTL.as_secs(),
            node.addr,
            self.keys[i].display(),
        )
        .expect("a String");
        std::fs::write(node.places.config(), text).expect("writing a node's configuration");
    }

    fn start_daemon(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let command = daemon::command_in(self.node_ns[i].name(), &[], &self.binary, &node.places);
        node.daemon = Some(Daemon::spawn(command, &node.places));
    }

    /// Node `i`'s running daemon.
    #[must_use]
    pub fn daemon(&self, i: usize) -> &Daemon {
        self.nodes[i]
            .daemon
            .as_ref()
            .unwrap_or_else(|| panic!("{} was killed", self.nodes[i].name))
    }

    /// Node `i`'s status.
    #[must_use]
    pub fn status(&self, i: usize) -> Status {
        self.daemon(i)
            .status()
            .unwrap_or_else(|| panic!("{} does not answer", self.nodes[i].name))
    }

    /// Polls node `i`'s status until `ready` holds.
    pub fn wait_node(
        &mut self,
        i: usize,
        what: &str,
        timeout: Duration,
        ready: impl Fn(&Status) -> bool,
    ) -> Status {
        let name = self.nodes[i].name.clone();
        self.nodes[i]
            .daemon
            .as_mut()
            .unwrap_or_else(|| panic!("{name} was killed"))
            .wait_until(&format!("{name}: {what}"), timeout, ready)
    }

    /// Indices of the nodes still alive.
    #[must_use]
    pub fn alive(&self) -> Vec<usize> {
        (0..NODES).filter(|&i| self.nodes[i].daemon.is_some()).collect()
    }

    /// The pool's leader as node `i` sees it.
    #[must_use]
    pub fn leader(&self, i: usize) -> Option<String> {
        leader(&self.status(i))
    }

    /// Index of the node named `name`.
    #[must_use]
    pub fn index(&self, name: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    /// The node dies as a host does: its daemon killed (SIGKILL), its BIRD killed, its link
    /// down (its program forwards nothing more). Returns the moment it died.
    pub fn kill_node(&mut self, i: usize) -> Instant {
        let node = &mut self.nodes[i];
        let at = Instant::now();
        self.node_ns[i].ip(&["link", "set", &node.link.name, "down"]);
        drop(node.bird.take());
        if let Some(d) = node.daemon.take() {
            let _ = d.kill();
        }
        at
    }

    /// Asks every alive node to re-read its configuration.
    pub fn reload_all(&self) {
        for i in self.alive() {
            match self.daemon(i).request(&vnfpool_daemon::control::Request::Reload) {
                vnfpool_daemon::control::Response::Ok { .. } => {}
                other => panic!("{}: reload: {other:?}", self.nodes[i].name),
            }
        }
    }

    /// Cuts node `i` off from etcd (a blackhole route to it); the router and the other nodes
    /// stay reachable.
    pub fn cut_from_etcd(&self, i: usize) {
        self.node_ns[i].ip(&["route", "add", "blackhole", &format!("{ETCD}/32")]);
    }

    /// Undoes [`Self::cut_from_etcd`].
    pub fn reconnect_to_etcd(&self, i: usize) {
        self.node_ns[i].ip(&["route", "del", "blackhole", &format!("{ETCD}/32")]);
    }

    /// etcd, to stop and restart.
    pub fn etcd(&mut self) -> &mut Etcd {
        &mut self.etcd
    }

    /// The router's route to the VIP has exactly the next hops of `nodes`; the time since
    /// `since` it took.
    #[track_caller]
    #[expect(
        clippy::must_use_candidate,
        reason = "a wait; the time it took is for those who report it"
    )]
    pub fn wait_router(&self, nodes: &[usize], since: Instant, timeout: Duration) -> Duration {
        let hops = nodes.iter().map(|&i| IpAddr::V4(node_addr(i))).collect();
        wait_kernel_next_hops(&self.router, VIP_PREFIX, &hops, since, timeout)
    }

    /// The nodes the router's route to the VIP has a next hop for, now.
    #[must_use]
    pub fn announcing(&self) -> Vec<usize> {
        let hops = kernel_next_hops(&self.router, VIP_PREFIX);
        (0..NODES)
            .filter(|&i| hops.contains(&IpAddr::V4(node_addr(i))))
            .collect()
    }

    /// `n` TCP connections from the client to the VIP, established, with [`IO_TIMEOUT`] on
    /// every read and write, each from a source port of its own.
    #[must_use]
    pub fn connect(&mut self, n: usize) -> Vec<Conn> {
        let first = self.next_port;
        self.next_port += u16::try_from(n).expect("fewer than 2^16 connections");
        let to = SocketAddr::from((VIP, PORT));
        self.client.run(|| {
            (first..first + u16::try_from(n).expect("checked"))
                .map(|sport| {
                    let from = SocketAddr::from((CLIENT, sport));
                    let sock =
                        Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("TCP socket");
                    sock.set_reuse_address(true).expect("SO_REUSEADDR");
                    sock.bind(&from.into())
                        .unwrap_or_else(|e| panic!("binding {from}: {e}"));
                    sock.connect_timeout(&to.into(), IO_TIMEOUT)
                        .unwrap_or_else(|e| panic!("connection from {from} to {to}: {e}"));
                    let stream = TcpStream::from(sock);
                    stream.set_read_timeout(Some(IO_TIMEOUT)).expect("read timeout");
                    stream.set_write_timeout(Some(IO_TIMEOUT)).expect("write timeout");
                    stream.set_nodelay(true).expect("nodelay");
                    Conn { stream, sport }
                })
                .collect()
        })
    }

    /// The node the router sends each of these client ports' flows to (`ip route get` with the
    /// ports: the kernel's own multipath hash).
    #[must_use]
    pub fn paths(&self, sports: &[u16]) -> Vec<usize> {
        let batch = self.scratch.path.join("route-get.batch");
        let mut text = String::new();
        for sport in sports {
            writeln!(
                text,
                "route get {VIP} from {CLIENT} iif {} ipproto tcp sport {sport} dport {PORT}",
                self.client_port.name
            )
            .expect("a String");
        }
        std::fs::write(&batch, text).expect("writing a batch");
        let out = crate::netns::command(
            "ip",
            &["-n", self.router.name(), "-batch", &batch.to_string_lossy()],
        );
        let paths: Vec<usize> = out
            .lines()
            .filter(|l| l.starts_with(&VIP.to_string()))
            .map(|l| {
                let via = l
                    .split_whitespace()
                    .skip_while(|w| *w != "via")
                    .nth(1)
                    .unwrap_or_else(|| panic!("no next hop in {l:?}"));
                (0..NODES)
                    .find(|&i| node_addr(i).to_string() == via)
                    .unwrap_or_else(|| panic!("next hop {via} is no node"))
            })
            .collect();
        assert_eq!(paths.len(), sports.len(), "one route per flow:\n{out}");
        paths
    }

    /// Waits until flow sync gave every alive node the flows the router sends to the others
    /// (`paths[k]`: the node of flow `k`, as [`Self::paths`] tells).
    pub fn wait_flows_synced(&mut self, paths: &[usize]) {
        for i in self.alive() {
            let others = paths.iter().filter(|&&p| p != i).count() as u64;
            self.wait_node(i, "every other node's flows synced", SYNC_TIMEOUT, |s| {
                s.flow_sync.as_ref().is_some_and(|f| f.records_stored >= others)
            });
        }
    }

    /// Node `i`'s flow hash key, from its pinned `VNF_FLOW_CTL`.
    #[must_use]
    pub fn flow_hash_key(&self, i: usize) -> flow::HashKey {
        let ctl: Array<MapData, FlowCtl> = open(self.nodes[i].places.pins.path(), maps::FLOW_CTL);
        ctl.get(&0, 0).expect("reading the flow table's control").hash_key
    }

    /// Node `i`'s live Maglev table for the pool, read from its pinned maps: the element
    /// name at each position.
    #[must_use]
    pub fn table(&self, i: usize) -> Vec<String> {
        let pins = self.nodes[i].places.pins.path();
        let pools: Array<MapData, Pool> = open(pins, maps::POOLS);
        // The lab's one pool has data-plane index 0 on every node.
        let pool = pools.get(&0, 0).expect("reading the pool");
        let slot = pool.sel.slot;
        let meta = pool.slots[slot as usize & 1];
        let elems: Array<MapData, Element> = open(pins, maps::ELEMS);
        let by_mac: BTreeMap<[u8; 6], &str> = self
            .elements
            .iter()
            .map(|e| (e.links[i].mac, e.name.as_str()))
            .collect();
        let names: Vec<String> = (0..meta.elements)
            .map(|k| {
                let e = elems.get(&elem_index(0, slot, k), 0).expect("reading an element");
                by_mac
                    .get(&e.dst_mac)
                    .map_or_else(|| format!("?{k}"), |n| (*n).to_owned())
            })
            .collect();
        let ring: Array<MapData, RingChunk> = open(pins, maps::RING);
        let mut table = Vec::with_capacity(meta.ring_size as usize);
        for c in 0..ring::chunks(meta.ring_size) {
            let chunk = ring.get(&(meta.ring_offset + c), 0).expect("reading the ring");
            table.extend(chunk.elements.iter().map(|&k| names[usize::from(k)].clone()));
        }
        table.truncate(meta.ring_size as usize);
        table
    }

    /// Stops element `j`'s service (its connections close, new ones are refused: a failed
    /// element as health checks see it).
    pub fn stop_element(&mut self, j: usize) {
        drop(self.elements[j].server.take());
    }

    /// Starts element `j`'s service; returns once it listens.
    pub fn start_element(&mut self, j: usize) {
        let e = &mut self.elements[j];
        assert!(e.server.is_none(), "{} already serves", e.name);
        let (tx, rx) = mpsc::channel();
        let name = e.name.clone();
        e.server = Some(self.element_ns[j].spawn(&format!("{}-tcp", e.name), move |stop| {
            tcp_server(&name, SocketAddr::from((Ipv4Addr::UNSPECIFIED, PORT)), tx, stop);
        }));
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => {}
            Ok(Err(err)) => panic!("{err}"),
            Err(err) => panic!("waiting for {}'s service: {err}", e.name),
        }
    }
}

/// The lab's links, removed on drop, and the ends its users need.
struct Wiring {
    links: Vec<VethPair>,
    /// Each node's uplink end.
    node_links: Vec<Link>,
    /// `element_links[j][i]`: element `j`'s end of its link to node `i`.
    element_links: Vec<Vec<Link>>,
    /// The router's end of the client's link.
    client_port: Link,
}

/// Links the namespaces as the module docs draw them.
fn wire(router: &Netns, client: &Netns, node_ns: &[Netns], element_ns: &[Netns]) -> Wiring {
    for ns in [router, client].into_iter().chain(node_ns).chain(element_ns) {
        // Replies leave the elements from the VIP: no reverse-path checks.
        ns.sysctl("net.ipv4.conf.all.rp_filter", "0");
        ns.sysctl("net.ipv4.conf.default.rp_filter", "0");
    }

    let bridge = crate::netns::unique_name();
    router.ip(&["link", "add", &bridge, "type", "bridge"]);
    router.ip(&["link", "set", &bridge, "up"]);
    router.ip(&["addr", "add", &format!("{ROUTER}/24"), "dev", &bridge]);
    router.ip(&["addr", "add", &format!("{ETCD}/32"), "dev", "lo"]);
    let mut links = Vec::new();
    // An uplink into the bridge at `addr`; `ns`'s end.
    let mut plug = |ns: &Netns, addr: Ipv4Addr| -> Link {
        let pair = VethPair::new(router, ns);
        router.ip(&["link", "set", &pair.a.name, "master", &bridge]);
        ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", &pair.b.name]);
        ns.ip(&["route", "add", "default", "via", &ROUTER.to_string()]);
        let end = pair.b.clone();
        links.push(pair);
        end
    };
    let node_links: Vec<Link> = node_ns
        .iter()
        .enumerate()
        .map(|(i, ns)| plug(ns, node_addr(i)))
        .collect();
    for (j, ns) in element_ns.iter().enumerate() {
        let _ = plug(ns, element_addr(j));
        ns.ip(&["addr", "add", &format!("{VIP}/32"), "dev", "lo"]);
    }
    let element_links: Vec<Vec<Link>> = element_ns
        .iter()
        .enumerate()
        .map(|(j, ns)| {
            node_ns
                .iter()
                .map(|node| {
                    let pair = VethPair::new(node, ns);
                    node.ip(&[
                        "route",
                        "add",
                        &format!("{}/32", element_addr(j)),
                        "dev",
                        &pair.a.name,
                    ]);
                    // Frames redirected into the node's end arrive only if this end has
                    // NAPI: GRO on gives it that (shared/TOOLCHAIN.md).
                    ns.exec("ethtool", &["-K", &pair.b.name, "gro", "on"]);
                    let end = pair.b.clone();
                    links.push(pair);
                    end
                })
                .collect()
        })
        .collect();
    let pair = VethPair::new(client, router);
    let (client_link, client_port) = (pair.a.clone(), pair.b.clone());
    links.push(pair);
    client.ip(&["addr", "add", &format!("{CLIENT}/24"), "dev", &client_link.name]);
    client.ip(&["route", "add", "default", "via", "10.191.0.1"]);
    router.ip(&["addr", "add", "10.191.0.1/24", "dev", &client_port.name]);
    // veth leaves transmit checksums to "hardware"; once XDP sends the frame on, nothing
    // finishes them (shared/TOOLCHAIN.md).
    client.exec("ethtool", &["-K", &client_link.name, "tx", "off"]);

    Wiring {
        links,
        node_links,
        element_links,
        client_port,
    }
}

/// The element a table picks for the client's flow from `sport`, hashed under `key`.
#[must_use]
pub fn pick<'a>(table: &'a [String], key: &flow::HashKey, sport: u16) -> &'a str {
    let secret = key;
    let key = FlowKey {
        src: addr::from_ip(IpAddr::V4(CLIENT)),
        sport_be: sport.to_be(),
        dport_be: PORT.to_be(),
        pool: 0,
        proto: PROTO_TCP,
        _pad: 0,
    };
    let size = u32::try_from(table.len()).expect("a ring size");
    &table[ring::position(flow::hash(&key, secret), size) as usize]
}

/// The role of `element` in the lab's pool, from a status.
#[must_use]
pub fn role<'a>(status: &'a Status, element: &str) -> Option<&'a str> {
    daemon::role(status, POOL, element)
}

/// The pool's leader in a status.
#[must_use]
pub fn leader(status: &Status) -> Option<String> {
    status.cluster.as_ref()?.pools.first()?.leader.clone()
}

/// The generation of the decision a status's node applied (0: none).
#[must_use]
pub fn applied_generation(status: &Status) -> u64 {
    status
        .cluster
        .as_ref()
        .and_then(|c| c.pools.first())
        .map_or(0, |p| p.generation)
}

fn open<V: aya::Pod>(pins: &Path, name: &str) -> Array<MapData, V> {
    let data = MapData::from_pin(pins.join(name)).unwrap_or_else(|e| panic!("opening pinned {name}: {e}"));
    Array::try_from(Map::Array(data)).unwrap_or_else(|e| panic!("{name} as an array: {e}"))
}
