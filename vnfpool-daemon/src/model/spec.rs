//! Validated configuration values: what `config::load` produces from the YAML and what every
//! decision takes as input. Constructing these through `config` guarantees the invariants
//! stated on each field; the model code relies on them without re-checking.

use std::{collections::BTreeMap, net::IpAddr, path::PathBuf, sync::Arc, time::Duration};

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub daemon: DaemonSpec,
    /// Pools in file order; names are unique, VIP:port/protocol pairs are unique.
    pub pools: Vec<PoolSpec>,
    /// The `placement:` section; every pool holds the same one.
    pub placement: Arc<PlacementSpec>,
    /// The `api:` section: the HTTPS API with mutual TLS; `None` when not configured.
    pub api: Option<ApiSpec>,
    /// The `cluster:` section; `None`: a node on its own.
    pub cluster: Option<ClusterSpec>,
}

/// The `cluster:` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSpec {
    /// This node's name, unique in the cluster.
    pub node: String,
    pub etcd: EtcdSpec,
    /// Every key vnfpool writes starts with this; starts and ends with `/`.
    pub prefix: String,
    /// Membership and leadership lease.
    pub lease_ttl: std::time::Duration,
    pub flow_sync: FlowSyncSpec,
    /// Kernel routing table the VIP routes are installed in.
    pub route_table: u32,
}

/// `cluster.etcd:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdSpec {
    /// `http://` or `https://` URLs (one scheme for all).
    pub endpoints: Vec<String>,
    /// With https: the CA of the servers, and the client certificate and key if given.
    pub tls: Option<EtcdTls>,
}

/// TLS to etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdTls {
    pub ca: PathBuf,
    /// Client certificate and private key (PEM).
    pub identity: Option<(PathBuf, PathBuf)>,
}

/// `cluster.flow_sync:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowSyncSpec {
    pub listen: std::net::SocketAddr,
    /// The shared secret's file.
    pub key_file: PathBuf,
}

/// The `api:` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiSpec {
    pub listen: std::net::SocketAddr,
    /// PEM certificate chain and private key of the server.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// PEM certificates of the CAs whose client certificates are accepted.
    pub client_ca: PathBuf,
    /// Certificate revocation lists (PEM or DER files) of those CAs, read at start and again
    /// on every reload.
    pub crls: Vec<PathBuf>,
    /// Client certificate subjects (as `CN=…, O=…`) and their roles.
    pub clients: Vec<ApiClient>,
    /// Roles pinned to one issuer (its subject, as `CN=…, O=…`): a certificate of another CA
    /// of `client_ca` gets no such role, whatever its subject.
    pub issuers: Vec<(ApiRole, String)>,
    /// UDP address heartbeats of self-registered elements are received on (default: the API's
    /// address, port 9471).
    pub heartbeat_listen: std::net::SocketAddr,
    /// How far an element's clock may be from the daemon's: heartbeats are accepted when
    /// stamped at most this after the daemon's clock, and at most the pool's miss limit plus
    /// this before it.
    pub heartbeat_clock_skew: std::time::Duration,
    /// Whether the listener offers MPTCP (where the kernel has it; plain TCP clients are
    /// served all the same): `crate::mptcp`.
    pub mptcp: bool,
}

/// One client of the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiClient {
    pub subject: String,
    pub role: ApiRole,
    /// What an `element` client may register (`Grant::default()` for the other roles, which
    /// register nothing).
    pub grant: Grant,
}

/// What one `element` client may register: its own elements and nothing else. Checked on
/// every registration and change (`registry::admit`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Pools it may register in; `None`: every pool.
    pub pools: Option<Vec<String>>,
    /// A glob its element names must match (`*` any run, `?` one character); `None`: any.
    pub names: Option<String>,
    /// Prefixes one of which must hold the element's address; `None`: any address.
    pub prefixes: Option<Vec<ipnet::IpNet>>,
    /// Registrations it may hold at once, over every pool.
    pub max_elements: u32,
}

impl Grant {
    /// Registrations an `element` client may hold when the file does not say.
    pub const DEFAULT_MAX_ELEMENTS: u32 = 8;
}

impl Default for Grant {
    fn default() -> Self {
        Self {
            pools: None,
            names: None,
            prefixes: None,
            max_elements: Self::DEFAULT_MAX_ELEMENTS,
        }
    }
}

/// What a client may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApiRole {
    /// The Service Control Entity: pools, capacity and events, never element identity.
    Sce,
    /// Elements, roles, health, drains, failover history.
    Operator,
    /// An element registering itself.
    Element,
}

/// The `placement:` section: what backup selection weighs (draft 5.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlacementSpec {
    /// Weight of sharing one failure-domain kind (`host`, `rack`, …), 0..=1,000,000; a kind not
    /// listed weighs 1. The key `srlg` weighs each shared-risk link group two elements share.
    pub weights: BTreeMap<String, u32>,
    /// Topology cost from a site to another (ALTO-style cost map), 0..=1,000,000, as written:
    /// directional; a pair not given is unknown, except a site to itself, which costs 0.
    /// Every element's `site` is a key here (possibly with no costs).
    pub costs: BTreeMap<String, BTreeMap<String, u32>>,
}

impl PlacementSpec {
    /// Weight of sharing the failure-domain kind `kind` (`srlg` for one shared link group).
    #[must_use]
    pub fn weight(&self, kind: &str) -> u32 {
        self.weights.get(kind).copied().unwrap_or(1)
    }

    /// The cost from site `from` to site `to`, if known.
    #[must_use]
    pub fn cost(&self, from: &str, to: &str) -> Option<u32> {
        match self.costs.get(from).and_then(|row| row.get(to)) {
            Some(&c) => Some(c),
            None if from == to => Some(0),
            None => None,
        }
    }
}

/// The `daemon:` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonSpec {
    /// Interfaces the XDP program attaches to (ingress), at least one.
    pub interfaces: Vec<String>,
    pub xdp_mode: XdpMode,
    /// bpffs directory of the pins (default `/sys/fs/bpf/vnfpool`).
    pub pin_dir: PathBuf,
    /// Directory of the persisted pool state (default `/var/lib/vnfpool`).
    pub state_dir: PathBuf,
    /// Flow-table capacity in flows (default 1,048,576).
    pub flow_table_size: u32,
    /// Local control socket (default `/run/vnfpool/vnfpool.sock`, mode 0600).
    pub socket: PathBuf,
    /// Listener of `/metrics`, `/live` and `/ready` (default `127.0.0.1:9470`).
    pub metrics: std::net::SocketAddr,
}

/// How the program attaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpMode {
    /// Driver mode only; failing that is an error.
    Native,
    /// Generic (skb) mode.
    Generic,
    /// Native, else generic with a warning.
    Auto,
}

/// L4 protocol of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

/// One pool (`pools[]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSpec {
    /// Unique among pools; `[a-z0-9][a-z0-9_-]*`, at most 32 bytes.
    pub name: String,
    pub vip: IpAddr,
    /// At least one, no duplicates, none is 0.
    pub ports: Vec<u16>,
    pub protocol: Protocol,
    pub redundancy: RedundancySpec,
    pub health: HealthSpec,
    /// At least one; names unique within the pool; every address of the VIP's family.
    pub elements: Vec<ElementSpec>,
    /// Maglev table size: a prime (default 65537).
    pub ring_size: u32,
    /// Availability budget, if declared; `config` has checked that the health settings meet it.
    pub budget: Option<Budget>,
    /// The configuration's `placement:` section (shared by every pool).
    pub placement: Arc<PlacementSpec>,
    /// How often self-registered elements send heartbeats and how many they may miss.
    pub heartbeat: HeartbeatSpec,
    /// Caps on what a self-registered element may ask for.
    pub registration: RegistrationSpec,
    /// How packets reach the elements.
    pub forwarding: Forwarding,
}

/// `forwarding:` of a pool: how the data plane sends a VIP packet to an element.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Forwarding {
    /// L2 direct server return: the element shares an L2 segment with this host; only the
    /// frame's MACs change.
    #[default]
    L2Dsr,
    /// IPv4-in-IPv4 or IPv6-in-IPv6 to the element's address, through the routing table.
    Ipip,
    /// The inner packet in UDP to the element's `port` (GUE variant 1).
    Gue { port: u16 },
    /// VXLAN to UDP port 4789 with this VNI; the inner frame goes to each element's
    /// `vxlan_mac`.
    Vxlan { vni: u32 },
}

impl Forwarding {
    /// The element table's `encap` value for this mode.
    #[must_use]
    pub const fn encap(self) -> u8 {
        match self {
            Self::L2Dsr => vnfpool_common::tunnel::ENCAP_NONE,
            Self::Ipip => vnfpool_common::tunnel::ENCAP_IPIP,
            Self::Gue { .. } => vnfpool_common::tunnel::ENCAP_GUE,
            Self::Vxlan { .. } => vnfpool_common::tunnel::ENCAP_VXLAN,
        }
    }

    /// Whether elements are reached through a tunnel (and so may be on other subnets).
    #[must_use]
    pub const fn tunnelled(self) -> bool {
        !matches!(self, Self::L2Dsr)
    }

    /// The name the configuration uses.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::L2Dsr => "l2-dsr",
            Self::Ipip => "ipip",
            Self::Gue { .. } => "gue",
            Self::Vxlan { .. } => "vxlan",
        }
    }

    /// What this mode needs of an element that it lacks, in words (`vxlan` needs each
    /// element's `vxlan_mac`).
    #[must_use]
    pub fn lacks(self, element: &ElementSpec) -> Option<String> {
        (matches!(self, Self::Vxlan { .. }) && element.vxlan_mac.is_none()).then(|| {
            format!(
                "element {} has no vxlan_mac, which forwarding: vxlan needs (the MAC of the element's VXLAN device)",
                element.name
            )
        })
    }
}

/// `registration:` of a pool: the most priority and weight a self-registered element may
/// ask for (an operator's or the file's elements are not capped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistrationSpec {
    pub max_priority: u32,
    pub max_weight: u32,
}

impl RegistrationSpec {
    /// Default: the default priority (100; never above the file's elements at theirs) and any
    /// weight (1..=1000).
    pub const DEFAULT: Self = Self {
        max_priority: 100,
        max_weight: 1000,
    };
}

/// `heartbeat:` of a pool: what its self-registered elements are told at registration, and
/// how their silence is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatSpec {
    /// Time between two heartbeats of an element; at least 1 ms.
    pub interval: Duration,
    /// Heartbeat intervals an element may stay silent before it is failed; at least 1.
    pub misses: u32,
}

impl HeartbeatSpec {
    /// Default: a heartbeat every 10 ms, failed after 3 silent intervals (30 ms).
    pub const DEFAULT: Self = Self {
        interval: Duration::from_millis(10),
        misses: 3,
    };

    /// How long an element may stay silent: `interval × misses` (see
    /// [`miss_limit`]).
    #[must_use]
    pub fn miss_limit(&self) -> Duration {
        miss_limit(self.interval, self.misses)
    }
}

/// Where an element comes from, which also says what judges its health.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// The configuration file; probed by the pool's health check.
    #[default]
    File,
    /// Added by an operator over the API; probed by the pool's health check.
    Operator,
    /// Registered by its own agent over the API; alive while its heartbeats arrive.
    Agent,
}

impl Origin {
    /// Whether heartbeats, not probes, judge the element's health.
    #[must_use]
    pub const fn is_agent(self) -> bool {
        matches!(self, Self::Agent)
    }
}

/// `redundancy:` of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedundancySpec {
    /// One active element (highest priority among healthy ones), the others standby (1:1 or 1:N).
    ActiveStandby { preempt: bool },
    /// `active` active elements (N), every other healthy element a hot standby (M).
    NPlusM { active: u32, preempt: bool },
    /// Every healthy element active, sharing flows by weight.
    ActiveActive,
}

/// `health:` of a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthSpec {
    pub check: CheckSpec,
    /// At least 1 ms (10 ms and more recommended).
    pub interval: Duration,
    /// At least 1 ms.
    pub timeout: Duration,
    /// Consecutive successes that make a down element up; at least 1.
    pub rise: u32,
    /// Consecutive failures that make an up element down; at least 1.
    pub fall: u32,
}

impl HealthSpec {
    /// Worst-case detection time, as BFD and VRRP count theirs: `interval × fall + timeout`.
    #[must_use]
    pub fn worst_detection(&self) -> Duration {
        self.interval * self.fall + self.timeout
    }
}

/// What a health check does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckSpec {
    /// A TCP connection to the element's address and `port` completes.
    Tcp { port: u16 },
    /// `GET path` on the element's address and `port` answers `expect_status`.
    Http {
        port: u16,
        path: String,
        expect_status: u16,
    },
    /// `payload` sent to the element's address and `port` gets a reply (equal to `expect` when given).
    Udp {
        port: u16,
        payload: Vec<u8>,
        expect: Option<Vec<u8>>,
    },
    /// `command` (program and arguments, not a shell line) exits with status 0; the element's
    /// address is in the environment as `VNFPOOL_ELEMENT_ADDRESS`, its name as `VNFPOOL_ELEMENT`.
    Exec { command: Vec<String> },
}

/// One element (`elements[]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElementSpec {
    /// Unique within its pool; same character rules as pool names.
    pub name: String,
    pub address: IpAddr,
    /// Higher wins the active role in `active-standby` and `n+m`; default 100.
    pub priority: u32,
    /// Share of new flows when active; 1..=1000, default 1.
    pub weight: u32,
    /// Shared-risk groups: kind (`host`, `rack`, `zone`, …) → value.
    pub failure_domains: BTreeMap<String, String>,
    /// Shared-risk link groups the element depends on; sorted, no repeats.
    pub srlg: Vec<String>,
    /// The element's site, a key of [`PlacementSpec::costs`]; `None` when not placed.
    pub site: Option<String>,
    /// The element's MAC, when not to be resolved from the neighbour table.
    pub mac: Option<[u8; 6]>,
    /// The egress interface, when not to be resolved from the routing table.
    pub interface: Option<String>,
    /// A self-registered element's heartbeat paths: the source addresses it sends each
    /// heartbeat from, followed one by one. Empty: one path, not followed.
    pub heartbeat_paths: Vec<IpAddr>,
    /// Pools with `forwarding: vxlan`: the MAC of the element's VXLAN device, the inner frame's
    /// destination.
    pub vxlan_mac: Option<[u8; 6]>,
    /// The configuration file, an operator, or the element's own registration.
    pub origin: Origin,
}

/// `budget:` of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Most time from a failure to its detection.
    pub detect: Duration,
    /// Most time from a decision to the data plane switched.
    pub switch: Duration,
}

/// How long an element sending a heartbeat every `interval` may stay silent: `misses` (at
/// least one) intervals.
#[must_use]
pub fn miss_limit(interval: Duration, misses: u32) -> Duration {
    interval.saturating_mul(misses.max(1))
}
