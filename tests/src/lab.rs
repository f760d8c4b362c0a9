//! A lab of namespaces for traffic through the XDP program: a client, the vnfpool host and `n`
//! pool elements, each element on a veth pair of its own to the host (a bridge is no
//! `XDP_REDIRECT` target). Everything is removed on drop.
//!
//! ```text
//!  client ── 10.201.X.0/24 ── host (XDP on its client-facing end) ─┬─ 10.202.X.0/24 ── e1
//!                                                                   ├─ 10.203.X.0/24 ── e2
//!                                                                   └─ …
//! ```
//!
//! Every element holds the VIP `10.200.X.100/32` on `lo` and answers on it: TCP `TCP_PORT`
//! answers each line with `"<name>\n"`, UDP `UDP_PORT` each datagram with `"<name>"`. Replies
//! go straight back through the host's routing (direct server return), never through XDP.
//!
//! [`Lab::routed`] puts the elements on other subnets, behind a router, for tunnelled pools:
//!
//! ```text
//!  client ── host (XDP) ── 10.199.X.0/24 ── router ─┬─ 10.202.X.0/24 ── e1
//!                                                   ├─ 10.203.X.0/24 ── e2
//!                                                   └─ …
//! ```
//!
//! There every element strips the tunnel with `vnfpool decap` on its link (IPIP, GUE) or takes
//! it with a kernel VXLAN device `vx0` (VXLAN, VNI [`VNI`]), and the host sends every element's
//! frames to the router.
#![expect(
    clippy::missing_panics_doc,
    reason = "test helpers fail by panicking with context (STYLE rule 15), every one of them"
)]

use std::{
    io::{self, ErrorKind, Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsFd as _,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU16, Ordering},
        mpsc,
    },
    time::Duration,
};

use rustix::{
    event::{PollFd, PollFlags, Timespec, poll},
    io::retry_on_intr,
    process::{Resource, Rlimit, getrlimit, setrlimit},
};
use socket2::{Domain, Protocol, Socket, Type};
use vnfpool_common::{
    element::Element,
    tunnel::{self, Tunnel},
};
use vnfpool_daemon::{
    dataplane::AyaDataplane,
    model::{
        plan::{self, TunnelPath},
        spec::{Forwarding, XdpMode as SpecXdpMode},
    },
};

use crate::netns::{Background, Link, Netns, Stop, VethPair};

/// Port of every element's TCP service.
pub const TCP_PORT: u16 = 8080;
/// Port of every element's UDP service.
pub const UDP_PORT: u16 = 5353;
/// Bound of every socket operation of the lab's clients.
pub const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a server waits at most before it looks at its stop flag again.
const SERVER_TICK: Duration = Duration::from_millis(50);
/// How long `Lab::new` waits for a server to be listening.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Most elements: their links take the second octets 202..=251.
pub const MAX_ELEMENTS: usize = 50;
/// First client source port a lab uses (outside the default ephemeral range).
const FIRST_CLIENT_PORT: u16 = 20_000;
/// The UDP port the elements of a routed lab decapsulate GUE on.
pub const GUE_PORT: u16 = 6080;
/// The VXLAN network identifier of a routed lab's VXLAN pools.
pub const VNI: u32 = 4242;
/// Name of the VXLAN device of each element of a routed VXLAN lab.
const VXLAN_DEVICE: &str = "vx0";

/// How the host reaches a lab's elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    /// Each element on a link of its own to the host: L2 direct server return.
    OnLink,
    /// Behind a router, through a tunnel of this mode (`vnfpool_common::tunnel::ENCAP_*`).
    Tunnel(u8),
}

/// The router of a routed lab.
#[derive(Debug)]
pub struct Router {
    /// Its namespace.
    pub netns: Netns,
    /// The host's end of the host–router link: every element's egress.
    pub host_link: Link,
    /// The router's end of that link: every element's next hop.
    pub link: Link,
    /// The host's address on that link: the tunnels' outer source.
    pub host_addr: Ipv4Addr,
}

impl Router {
    /// Links `netns` to `host` on `10.199.x.0/24` (the host `.1`, the router `.2`; the pair
    /// goes to `links`) and routes the client network `client_net` back through the host.
    fn new(netns: Netns, host: &Netns, x: u8, client_net: &str, links: &mut Vec<VethPair>) -> Self {
        let host_addr = Ipv4Addr::new(10, 199, x, 1);
        let router_addr = Ipv4Addr::new(10, 199, x, 2);
        links.push(VethPair::new(&netns, host));
        let pair = links.last().expect("just pushed");
        let (link, host_link) = (pair.a.clone(), pair.b.clone());
        host.ip(&["addr", "add", &format!("{host_addr}/24"), "dev", &host_link.name]);
        netns.ip(&["addr", "add", &format!("{router_addr}/24"), "dev", &link.name]);
        netns.ip(&["route", "add", client_net, "via", &host_addr.to_string()]);
        netns.sysctl("net.ipv4.ip_forward", "1");
        // Frames the host XDP_REDIRECTs into its end arrive here only with NAPI: GRO on gives
        // it that (shared/TOOLCHAIN.md).
        netns.exec("ethtool", &["-K", &link.name, "gro", "on"]);
        Self {
            netns,
            host_link,
            link,
            host_addr,
        }
    }
}

/// `vnfpool decap` attached to an element's link; detached, and its pins removed, on drop.
#[derive(Debug)]
struct Decap {
    binary: PathBuf,
    netns: String,
    interface: String,
}

impl Decap {
    #[track_caller]
    fn attach(binary: &Path, netns: &Netns, interface: &str, vip: Ipv4Addr) -> Self {
        // The guard first: a half-done attach is undone too.
        let guard = Self {
            binary: binary.to_owned(),
            netns: netns.name().to_owned(),
            interface: interface.to_owned(),
        };
        let vip = vip.to_string();
        let port = GUE_PORT.to_string();
        let out = guard.run(&["--interface", interface, "--vip", &vip, "--gue-port", &port]);
        assert!(
            out.status.success(),
            "vnfpool decap on {interface}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        guard
    }

    /// `vnfpool decap <args>` in the element's network namespace only (`nsenter`, not `ip netns
    /// exec`, whose fresh `/sys` would hide the bpffs the pins go to).
    fn run(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.netns))
            .arg(&self.binary)
            .arg("decap")
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", self.binary.display()))
    }
}

impl Drop for Decap {
    fn drop(&mut self) {
        // Best effort: a detach that fails (nothing attached any more) still leaves no pins.
        let interface = self.interface.clone();
        let _ = self.run(&["--interface", &interface, "--detach"]);
        let _ = std::fs::remove_dir_all(Path::new(vnfpool_common::decap::PIN_ROOT).join(&self.interface));
    }
}

/// One pool element of a [`Lab`].
#[derive(Debug)]
pub struct LabElement {
    /// Its name, which its services answer with: `e1`, `e2`, …
    pub name: String,
    /// Its namespace.
    pub netns: Netns,
    /// The host's end of its link, in the host namespace: the egress for its frames.
    pub host_link: Link,
    /// Its own end of the link, in its namespace.
    pub link: Link,
    /// Its address on the link (the host's end is `.1` of the same /24).
    pub addr: Ipv4Addr,
    /// The MAC of its VXLAN device, in a routed VXLAN lab.
    pub vxlan_mac: Option<[u8; 6]>,
}

impl LabElement {
    /// Its MAC as configuration files write it (`aa:bb:cc:dd:ee:ff`).
    #[must_use]
    pub fn mac_text(&self) -> String {
        text_of(self.link.mac)
    }
}

/// A MAC as configuration files and `ip` write it (`aa:bb:cc:dd:ee:ff`).
#[must_use]
pub fn text_of(m: [u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        m[0], m[1], m[2], m[3], m[4], m[5]
    )
}

/// Client, vnfpool host and elements in namespaces of their own; see the module docs.
#[derive(Debug)]
pub struct Lab {
    // Held for their drops, which run in this order: servers (their sockets live in the
    // element namespaces), then links, then namespaces. `servers[i]` are element i's; empty
    // while stopped.
    servers: Vec<Vec<Background>>,
    _decaps: Vec<Decap>,
    _links: Vec<VethPair>,
    /// The router of a routed lab, before the namespaces it links.
    pub router: Option<Router>,
    /// The client's namespace.
    pub client: Netns,
    /// The vnfpool host's namespace.
    pub host: Netns,
    /// The elements, `elements[i]` named `e{i+1}`.
    pub elements: Vec<LabElement>,
    /// The pool's virtual address, on every element's `lo`.
    pub vip: Ipv4Addr,
    /// The client's address.
    pub client_addr: Ipv4Addr,
    /// The client's end of its link.
    pub client_link: Link,
    /// The host's end of the client link, where the program is attached.
    pub ingress: Link,
    /// Next client source port: the client binds its ports itself, so that which flow lands
    /// where (a function of the 5-tuple) is the same in every run.
    next_port: AtomicU16,
    /// How the host reaches the elements.
    pub reach: Reach,
}

impl Lab {
    /// Builds a lab with `n` elements on links of their own to the host, their services
    /// listening when it returns.
    #[track_caller]
    #[must_use]
    pub fn new(n: usize) -> Self {
        Self::build(n, None)
    }

    /// Builds a lab with `n` elements behind a router, reached through tunnels of mode `encap`;
    /// each element decapsulates with `binary decap` (the `vnfpool` binary) on its link.
    #[track_caller]
    #[must_use]
    pub fn routed(n: usize, encap: u8, binary: &Path) -> Self {
        Self::build(n, Some((encap, binary)))
    }

    #[track_caller]
    #[expect(
        clippy::too_many_lines,
        reason = "the lab's set-up in order; every guard stays a local until the end (see below)"
    )]
    fn build(n: usize, tunnelled: Option<(u8, &Path)>) -> Self {
        assert!(
            (1..=MAX_ELEMENTS).contains(&n),
            "a lab has 1..={MAX_ELEMENTS} elements, not {n}"
        );
        raise_fd_limit();
        // Namespaces keep labs apart, so every lab uses the same addresses: with the client's
        // source ports fixed too, each flow's 5-tuple, hence its element, is the same in every
        // run, and the tests' spreads are reproducible.
        let x = 1u8;
        let vip = Ipv4Addr::new(10, 200, x, 100);
        let client_addr = Ipv4Addr::new(10, 201, x, 2);
        let host_client_addr = Ipv4Addr::new(10, 201, x, 1);
        let client_net = format!("10.201.{x}.0/24");

        // Every guard is a local until the end, so a failure half-way removes what exists
        // (locals drop in reverse order: servers, links, namespaces).
        let client = Netns::new();
        let host = Netns::new();
        let router_ns = tunnelled.map(|_| Netns::new());
        let element_ns: Vec<Netns> = (0..n).map(|_| Netns::new()).collect();
        for ns in [&client, &host].into_iter().chain(&router_ns).chain(&element_ns) {
            // Before any link exists, so that every interface inherits it: replies leave the
            // elements from the VIP, an address the host has no route to.
            ns.sysctl("net.ipv4.conf.all.rp_filter", "0");
            ns.sysctl("net.ipv4.conf.default.rp_filter", "0");
        }
        host.sysctl("net.ipv4.ip_forward", "1");

        let mut links = Vec::with_capacity(n + 1);
        links.push(VethPair::new(&client, &host));
        let (client_link, ingress) = (links[0].a.clone(), links[0].b.clone());
        client.ip(&[
            "addr",
            "add",
            &format!("{client_addr}/24"),
            "dev",
            &client_link.name,
        ]);
        host.ip(&[
            "addr",
            "add",
            &format!("{host_client_addr}/24"),
            "dev",
            &ingress.name,
        ]);
        client.ip(&[
            "route",
            "add",
            &format!("{vip}/32"),
            "via",
            &host_client_addr.to_string(),
        ]);
        // veth leaves transmit checksums to "hardware" (CHECKSUM_PARTIAL); once XDP redirects
        // the frame, nothing finishes them and the element drops it (shared/TOOLCHAIN.md).
        client.exec("ethtool", &["-K", &client_link.name, "tx", "off"]);

        // The router: one link to the host, the elements' links on its side.
        let router = router_ns.map(|netns| Router::new(netns, &host, x, &client_net, &mut links));

        let mut elements = Vec::with_capacity(n);
        for (i, netns) in element_ns.into_iter().enumerate() {
            let octet = 202 + i as u8;
            let addr = Ipv4Addr::new(10, octet, x, 2);
            let gateway = Ipv4Addr::new(10, octet, x, 1);
            // On-link: the element's link goes to the host; routed: to the router.
            let peer = router.as_ref().map_or(&host, |r| &r.netns);
            links.push(VethPair::new(&netns, peer));
            let pair = links.last().expect("just pushed");
            let (link, host_link) = (pair.a.clone(), pair.b.clone());
            peer.ip(&["addr", "add", &format!("{gateway}/24"), "dev", &host_link.name]);
            if let Some(r) = &router {
                host.ip(&[
                    "route",
                    "add",
                    &format!("10.{octet}.{x}.0/24"),
                    "via",
                    &Ipv4Addr::new(10, 199, x, 2).to_string(),
                    "dev",
                    &r.host_link.name,
                ]);
            }
            netns.ip(&["addr", "add", &format!("{addr}/24"), "dev", &link.name]);
            netns.ip(&["addr", "add", &format!("{vip}/32"), "dev", "lo"]);
            netns.ip(&["route", "add", &client_net, "via", &gateway.to_string()]);
            if router.is_some() {
                // The host's probes come from its address on the router link.
                netns.ip(&[
                    "route",
                    "add",
                    &format!("10.199.{x}.0/24"),
                    "via",
                    &gateway.to_string(),
                ]);
            }
            // Frames XDP_REDIRECTed into the host's end arrive only if this end has NAPI:
            // GRO on gives it that (shared/TOOLCHAIN.md).
            netns.exec("ethtool", &["-K", &link.name, "gro", "on"]);
            let vxlan_mac = (tunnelled.map(|(encap, _)| encap) == Some(tunnel::ENCAP_VXLAN)).then(|| {
                let mac = [0x02, 0, 0, 0, 0x7e, 1 + i as u8];
                let (vni, mac_text) = (VNI.to_string(), text_of(mac));
                netns.ip(&[
                    "link",
                    "add",
                    VXLAN_DEVICE,
                    "address",
                    &mac_text,
                    "type",
                    "vxlan",
                    "id",
                    &vni,
                    "dstport",
                    "4789",
                    "local",
                    &addr.to_string(),
                    "dev",
                    &link.name,
                ]);
                netns.ip(&["link", "set", VXLAN_DEVICE, "up"]);
                mac
            });
            elements.push(LabElement {
                name: format!("e{}", i + 1),
                netns,
                host_link,
                link,
                addr,
                vxlan_mac,
            });
        }

        let servers = elements.iter().map(|e| start_services(e, vip)).collect();
        let decaps = match tunnelled {
            Some((encap, binary)) if encap != tunnel::ENCAP_VXLAN => elements
                .iter()
                .map(|e| Decap::attach(binary, &e.netns, &e.link.name, vip))
                .collect(),
            _ => Vec::new(),
        };

        Self {
            servers,
            _decaps: decaps,
            _links: links,
            router,
            client,
            host,
            elements,
            vip,
            client_addr,
            client_link,
            ingress,
            next_port: AtomicU16::new(FIRST_CLIENT_PORT),
            reach: tunnelled.map_or(Reach::OnLink, |(encap, _)| Reach::Tunnel(encap)),
        }
    }

    /// Stops element `i`'s TCP and UDP services (its connections are closed, new ones refused:
    /// a failed element as its health checks see it). Returns once they are gone.
    pub fn stop_services(&mut self, i: usize) {
        self.servers[i].clear();
    }

    /// Starts element `i`'s services again; returns once they listen.
    pub fn start_services(&mut self, i: usize) {
        assert!(
            self.servers[i].is_empty(),
            "services of {} already running",
            self.elements[i].name
        );
        self.servers[i] = start_services(&self.elements[i], self.vip);
    }

    /// `n` fresh client source ports.
    fn client_ports(&self, n: usize) -> impl Iterator<Item = u16> {
        let n = u16::try_from(n).expect("fewer than 2^16 ports");
        let first = self.next_port.fetch_add(n, Ordering::Relaxed);
        assert!(first.checked_add(n).is_some(), "client source ports exhausted");
        first..first + n
    }

    /// Attaches the program of `dp` natively to the host's client-facing interface (or adopts
    /// the pinned attachment a previous `dp` left there) and registers every element's egress
    /// as a redirect target. Both happen inside the host namespace: the kernel resolves the
    /// ifindexes in the caller's namespace.
    #[track_caller]
    pub fn attach(&self, dp: &mut AyaDataplane) {
        let ingress = self.ingress.name.as_str();
        let egress: Vec<u32> = match &self.router {
            Some(r) => vec![r.host_link.ifindex],
            None => self.elements.iter().map(|e| e.host_link.ifindex).collect(),
        };
        self.host.run(|| {
            dp.attach(ingress, SpecXdpMode::Native)
                .unwrap_or_else(|e| panic!("attaching natively to {ingress}: {e}"));
            for ifindex in egress {
                dp.add_tx_port(ifindex)
                    .unwrap_or_else(|e| panic!("add_tx_port({ifindex}): {e}"));
            }
        });
    }

    /// The element table entry of element `i` in `state`.
    #[must_use]
    pub fn element_entry(&self, i: usize, state: u32) -> Element {
        let e = &self.elements[i];
        match (&self.router, self.reach) {
            (Some(r), Reach::Tunnel(encap)) => Element {
                ifindex: r.host_link.ifindex,
                state,
                dst_mac: r.link.mac,
                src_mac: r.host_link.mac,
                encap,
                _pad: [0; 3],
            },
            _ => Element {
                ifindex: e.host_link.ifindex,
                state,
                dst_mac: e.link.mac,
                src_mac: e.host_link.mac,
                encap: 0,
                _pad: [0; 3],
            },
        }
    }

    /// Packets element `i`'s `vnfpool decap` (VXLAN: its VXLAN device) has taken out of their
    /// tunnel so far (0 on-link).
    #[must_use]
    pub fn decapsulated(&self, i: usize) -> u64 {
        if self.router.is_none() {
            return 0;
        }
        if self.reach == Reach::Tunnel(tunnel::ENCAP_VXLAN) {
            let out = self.elements[i]
                .netns
                .ip_output(&["-j", "-s", "link", "show", VXLAN_DEVICE]);
            let stats: serde_json::Value = serde_json::from_str(&out).expect("ip -j output");
            return stats[0]["stats64"]["rx"]["packets"]
                .as_u64()
                .expect("the device's received packets");
        }
        let root = Path::new(vnfpool_common::decap::PIN_ROOT);
        let interface = &self.elements[i].link.name;
        let counters = vnfpool_daemon::dataplane::decap::pinned_counters(root, interface)
            .unwrap_or_else(|e| panic!("reading the decap counters of {interface}: {e}"));
        counters[vnfpool_common::decap::Counter::Decapsulated as usize].packets
    }

    /// The tunnel table of a mapping with every element (empty on-link).
    #[must_use]
    pub fn tunnel_entries(&self) -> Vec<Tunnel> {
        let (Some(r), Reach::Tunnel(encap)) = (&self.router, self.reach) else {
            return Vec::new();
        };
        let forwarding = match encap {
            tunnel::ENCAP_GUE => Forwarding::Gue { port: GUE_PORT },
            tunnel::ENCAP_VXLAN => Forwarding::Vxlan { vni: VNI },
            _ => Forwarding::Ipip,
        };
        let path = TunnelPath {
            source: r.host_addr.into(),
            mtu: 1500,
        };
        self.elements
            .iter()
            .map(|e| plan::tunnel(forwarding, e.addr.into(), e.vxlan_mac, Some(path)))
            .collect()
    }

    /// Runs `f` inside the client namespace (sockets made there may be used from anywhere).
    pub fn in_client<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.client.run(f)
    }

    /// `n` TCP connections from the client to the VIP's `port`, established, with
    /// [`IO_TIMEOUT`] on every read and write.
    #[track_caller]
    #[must_use]
    pub fn tcp_connect(&self, n: usize, port: u16) -> Vec<TcpStream> {
        let to = SocketAddr::from((self.vip, port));
        let ports: Vec<u16> = self.client_ports(n).collect();
        self.in_client(|| {
            ports
                .into_iter()
                .map(|sport| {
                    let from = SocketAddr::from((self.client_addr, sport));
                    let sock =
                        Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("TCP socket");
                    sock.bind(&from.into())
                        .unwrap_or_else(|e| panic!("binding {from}: {e}"));
                    sock.connect_timeout(&to.into(), IO_TIMEOUT)
                        .unwrap_or_else(|e| panic!("connection from {from} to {to}: {e}"));
                    let s = TcpStream::from(sock);
                    s.set_read_timeout(Some(IO_TIMEOUT)).expect("read timeout");
                    s.set_write_timeout(Some(IO_TIMEOUT)).expect("write timeout");
                    s.set_nodelay(true).expect("nodelay");
                    s
                })
                .collect()
        })
    }

    /// `n` UDP sockets of the client, each on its own port and connected to the VIP's `port`.
    #[track_caller]
    #[must_use]
    pub fn udp_sockets(&self, n: usize, port: u16) -> Vec<UdpSocket> {
        let to = SocketAddr::from((self.vip, port));
        let ports: Vec<u16> = self.client_ports(n).collect();
        self.in_client(|| {
            ports
                .into_iter()
                .map(|sport| {
                    let from = SocketAddr::from((self.client_addr, sport));
                    let s = UdpSocket::bind(from).unwrap_or_else(|e| panic!("binding {from}: {e}"));
                    s.connect(to).expect("connecting a UDP socket");
                    s.set_read_timeout(Some(IO_TIMEOUT)).expect("read timeout");
                    s.set_write_timeout(Some(IO_TIMEOUT)).expect("write timeout");
                    s
                })
                .collect()
        })
    }
}

/// Starts element `e`'s services and waits until they listen. TCP listens on every address
/// (accepted connections answer from the address they were made to, the VIP for client
/// traffic), so health checks can reach it on the element's own address too; UDP listens on
/// the VIP only, so that replies leave from the VIP (direct server return).
fn start_services(e: &LabElement, vip: Ipv4Addr) -> Vec<Background> {
    let (tx, rx) = mpsc::channel();
    let (name, ready) = (e.name.clone(), tx.clone());
    let tcp = e.netns.spawn(&format!("{}-tcp", e.name), move |stop| {
        tcp_server(
            &name,
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, TCP_PORT)),
            ready,
            stop,
        );
    });
    let (name, ready) = (e.name.clone(), tx);
    let udp = e.netns.spawn(&format!("{}-udp", e.name), move |stop| {
        udp_server(&name, SocketAddr::from((vip, UDP_PORT)), ready, stop);
    });
    for _ in 0..2 {
        match rx.recv_timeout(READY_TIMEOUT) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("{e}"),
            // A server that failed before binding panicked; its drop reports it.
            Err(err) => panic!("waiting for the services of {}: {err}", e.name),
        }
    }
    vec![tcp, udp]
}

/// Raises this process's soft limit of open files to the hard limit: the process holds both
/// ends of every lab connection (hundreds of client sockets, and the elements' servers run on
/// its threads), close to the usual soft limit of 1024.
fn raise_fd_limit() {
    if let Rlimit {
        current: Some(current),
        maximum: Some(maximum),
    } = getrlimit(Resource::Nofile)
        && current < maximum
    {
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(maximum),
                maximum: Some(maximum),
            },
        )
        .unwrap_or_else(|e| panic!("raising RLIMIT_NOFILE from {current} to {maximum}: {e}"));
    }
}

// === clients ===

/// Sends one request line on a lab TCP connection.
///
/// # Errors
/// As the write does (a reset connection, a timeout).
pub fn send_ping(s: &mut TcpStream) -> io::Result<()> {
    s.write_all(b"ping\n")
}

/// Reads one answer line (without its newline) from a lab TCP connection.
///
/// # Errors
/// As the reads do (reset, timeout); `UnexpectedEof` when the connection closes first.
pub fn read_line(s: &mut TcpStream) -> io::Result<String> {
    let mut line = Vec::new();
    let mut buf = [0u8; 64];
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        line.extend_from_slice(&buf[..n]);
        if let Some(end) = line.iter().position(|&b| b == b'\n') {
            line.truncate(end);
            return String::from_utf8(line).map_err(|e| io::Error::new(ErrorKind::InvalidData, e));
        }
    }
}

/// Asks every connection at once (all requests first, then all answers), so that timeouts
/// overlap instead of adding up. One result per connection.
pub fn ask_all<'a>(conns: impl IntoIterator<Item = &'a mut TcpStream>) -> Vec<io::Result<String>> {
    let mut conns: Vec<(&mut TcpStream, io::Result<()>)> = conns
        .into_iter()
        .map(|s| {
            let sent = send_ping(s);
            (s, sent)
        })
        .collect();
    conns
        .iter_mut()
        .map(|(s, sent)| match sent {
            Ok(()) => read_line(s),
            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
        })
        .collect()
}

/// One request/answer on a lab UDP socket.
///
/// # Errors
/// As the send or receive does (a timeout when no answer came).
pub fn ask_udp(s: &UdpSocket) -> io::Result<String> {
    s.send(b"ping")?;
    let mut buf = [0u8; 64];
    let n = s.recv(&mut buf)?;
    String::from_utf8(buf[..n].to_vec()).map_err(|e| io::Error::new(ErrorKind::InvalidData, e))
}

// === servers ===

/// Where a server reports that it listens, or why it cannot.
pub type Ready = mpsc::Sender<Result<(), String>>;

/// Answers every line of every connection with `"<name>\n"`, on one thread: a non-blocking
/// listener and connections, waited on with `poll` for at most [`SERVER_TICK`] at a time.
/// Returns soon after `stop` says so.
pub fn tcp_server(name: &str, addr: SocketAddr, ready: Ready, stop: &Stop) {
    let listener = match TcpListener::bind(addr).and_then(|l| l.set_nonblocking(true).map(|()| l)) {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send(Err(format!("{name}: binding TCP {addr}: {e}")));
            return;
        }
    };
    // Sent, and the sender dropped: a server that fails later cannot keep `Lab::new` waiting.
    let _ = ready.send(Ok(()));
    drop(ready);
    let answer = format!("{name}\n");
    let tick = Timespec::try_from(SERVER_TICK).expect("tick fits a timespec");
    let mut conns: Vec<(TcpStream, Vec<u8>)> = Vec::new();
    while !stop.stopped() {
        {
            let mut fds: Vec<PollFd<'_>> = std::iter::once(listener.as_fd())
                .chain(conns.iter().map(|(s, _)| s.as_fd()))
                .map(|fd| PollFd::from_borrowed_fd(fd, PollFlags::IN))
                .collect();
            retry_on_intr(|| poll(&mut fds, Some(&tick))).expect("poll");
        }
        loop {
            match listener.accept() {
                Ok((s, _)) => {
                    s.set_nonblocking(true).expect("non-blocking connection");
                    conns.push((s, Vec::new()));
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                // The client gave up during the handshake; nothing to serve.
                Err(e) if e.kind() == ErrorKind::ConnectionAborted => {}
                Err(e) => panic!("{name}: accept on {addr}: {e}"),
            }
        }
        conns.retain_mut(|(s, pending)| serve(s, pending, answer.as_bytes()));
    }
}

/// Reads what one connection has and answers its complete lines; whether to keep it.
fn serve(s: &mut TcpStream, pending: &mut Vec<u8>, answer: &[u8]) -> bool {
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return false,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            // Reset by the client, or any other end of the connection.
            Err(_) => return false,
        }
    }
    while let Some(end) = pending.iter().position(|&b| b == b'\n') {
        pending.drain(..=end);
        // A few bytes into an empty send buffer; a client that never reads is dropped.
        if s.write_all(answer).is_err() {
            return false;
        }
    }
    true
}

/// Answers every datagram with `"<name>"`, receiving with a timeout of [`SERVER_TICK`].
/// Returns soon after `stop` says so.
pub fn udp_server(name: &str, addr: SocketAddr, ready: Ready, stop: &Stop) {
    let sock = match UdpSocket::bind(addr).and_then(|s| s.set_read_timeout(Some(SERVER_TICK)).map(|()| s)) {
        Ok(s) => s,
        Err(e) => {
            let _ = ready.send(Err(format!("{name}: binding UDP {addr}: {e}")));
            return;
        }
    };
    // Sent, and the sender dropped: a server that fails later cannot keep `Lab::new` waiting.
    let _ = ready.send(Ok(()));
    drop(ready);
    let mut buf = [0u8; 1500];
    while !stop.stopped() {
        match sock.recv_from(&mut buf) {
            Ok((_, peer)) => {
                sock.send_to(name.as_bytes(), peer)
                    .unwrap_or_else(|e| panic!("{name}: answering {peer}: {e}"));
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(e) => panic!("{name}: receiving on UDP {addr}: {e}"),
        }
    }
}
