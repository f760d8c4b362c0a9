//! The configuration file as written: serde structs that mirror the YAML, keep the position of
//! every value a later check may point at, and reject unknown keys. `validate` turns them into
//! [`crate::model::spec`] values.
//!
//! # Configuration reference
//!
//! Keys marked *required* must be present; every other key may be left out and takes the
//! default shown. Durations are written as `10ms`, `1s`, `1m 30s`, … (humantime). A name is
//! `[a-z0-9][a-z0-9_-]*`, at most 32 bytes. Any key not listed here is an error.
//!
//! ```yaml
//! daemon:                            # required
//!   interfaces: [eth0]               # required, at least one; where XDP attaches (ingress)
//!   xdp_mode: auto                   # native | generic | auto (native, else generic with a warning)
//!   pin_dir: /sys/fs/bpf/vnfpool     # absolute path on a bpffs
//!   state_dir: /var/lib/vnfpool      # absolute path; persisted pool state
//!   socket: /run/vnfpool/vnfpool.sock  # absolute path; local control socket (mode 0600)
//!   metrics: 127.0.0.1:9470          # address:port of /metrics, /live and /ready (HTTP)
//!   flow_table_size: 1048576         # flows, 8..=67108864 (2^26)
//! pools:                             # required, at most 128 pools (may be empty)
//!   - name: web                      # required, a name, unique among pools
//!     vip: 10.10.0.100               # required, IPv4 or IPv6 unicast address
//!     ports: [8080]                  # required, at least one, 1..=65535, no repeats; a
//!                                    #   VIP:port/protocol belongs to one pool only
//!     protocol: tcp                  # required: tcp | udp
//!     ring_size: 65537               # Maglev table size: a prime, 251..=1048573, >= elements;
//!                                    #   all pools together: at most 15 tables of 65537
//!     redundancy:                    # required
//!       model: active-standby        # required: active-standby | n+m | active-active
//!       active: 1                    # n+m: required, 1..=number of elements (N);
//!                                    #   active-standby: 1 if given; active-active: not allowed
//!       preempt: true                # active-standby and n+m: a returning higher-priority
//!                                    #   element takes over again; active-active: not allowed
//!     health:                        # required
//!       check: tcp                   # required: tcp | http | udp | exec
//!       port: 8080                   # tcp, http, udp: required, 1..=65535; exec: not allowed
//!       path: /                      # http only: request path, starts with `/`
//!       expect_status: 200           # http only: 100..=599
//!       payload: "ping"              # udp only, required: datagram sent (UTF-8 bytes of the
//!                                    #   string; YAML escapes like "\x01" allowed)
//!       expect: "pong"               # udp only: the reply must equal this (any reply if absent)
//!       command: [/usr/bin/check, --fast]  # exec only, required: program and arguments (no
//!                                    #   shell); gets VNFPOOL_ELEMENT and VNFPOOL_ELEMENT_ADDRESS
//!       interval: 10ms               # required, 1ms..=1h
//!       timeout: 50ms                # required, 1ms..=1h
//!       rise: 2                      # required, 1..=100 successes to come up
//!       fall: 3                      # required, 1..=100 failures to go down
//!     budget:                        # optional availability budget
//!       detect: 50ms                 # required, > 0; must be >= interval x fall + timeout
//!       switch: 1ms                  # required, > 0; checked at run time
//!     heartbeat:                     # self-registered elements (see the API): they are told
//!       interval: 10ms               #   this interval, 1ms..=1h, and failed after `misses`
//!       misses: 3                    #   (1..=100) silent intervals; default 10ms x 3
//!     elements:                      # required, 1..=1024 elements
//!       - name: e1                   # required, a name, unique within the pool
//!         address: 10.10.1.11        # required, unicast, same family as the VIP, not the VIP,
//!                                    #   unique within the pool
//!         priority: 100              # 0..=4294967295; higher wins the active role
//!         weight: 1                  # 1..=1000; share of new flows when active
//!         failure_domains: { host: h1, rack: r1, zone: z1 }  # kind (a name) -> value
//!                                    #   (a string, non-empty, at most 64 bytes; quote one
//!                                    #   YAML reads otherwise, like "3" or "no"); default none
//!         srlg: [fiber-7, duct-2]    # shared-risk link groups, strings as failure-domain
//!                                    #   values; kept sorted, each once; default none
//!         site: site-a               # a site of placement.topology; default none
//!         mac: "aa:bb:cc:dd:ee:ff"   # unicast MAC; default: from the neighbour table
//!         interface: eth1            # egress interface; default: from the routing table
//! placement:                         # optional: what backup selection weighs
//!   weights: { host: 100, rack: 10, zone: 1, srlg: 50 }  # failure-domain kind (a name), or
//!                                    #   `srlg` for each shared link group -> 0..=1000000;
//!                                    #   a kind not listed weighs 1
//!   topology:                        # site cost map: site (a name) -> { site -> cost
//!     site-a: { site-a: 0, site-b: 2 }  #   0..=1000000 }, directional; every site costed
//!     site-b: { site-a: 2, site-c: 5 }  #   to is a key here; a pair not given is unknown
//!     site-c: {}                     #   (a site to itself: 0); default none
//!   # topology: sites.yaml           # or the path of a file holding that mapping as its whole
//!                                    #   document, relative to this file's directory; read
//!                                    #   again on every load (and so on reload)
//! cluster:                           # optional: this daemon is one node of a cluster
//!   node: lb-1                       # required, a name, unique in the cluster
//!   etcd:                            # required: the etcd v3 cluster holding the pools' state
//!     endpoints: [http://10.0.0.5:2379]  # required, 1..=16 URLs, all http:// or all https://
//!     ca: /etc/vnfpool/etcd-ca.pem   # https only, required: CA of the etcd servers (PEM)
//!     cert: /etc/vnfpool/etcd.pem    # https only, optional with `key`: client certificate
//!     key: /etc/vnfpool/etcd.key     #   and its private key (PEM)
//!   prefix: /vnfpool/                # etcd key prefix: starts and ends with `/`
//!   lease_ttl: 3s                    # membership and leadership lease, 3s..=60s (whole
//!                                    #   seconds): a dead node's pools move within it
//!   flow_sync:                       # required: new flows replicated to the other nodes
//!     listen: 10.0.0.1:9472          # required, IP address and UDP port peers send to
//!     key_file: /etc/vnfpool/cluster.key  # required, absolute path: the cluster's shared
//!                                    #   secret (32..=1024 bytes; mode 0600 or stricter)
//!   route_table: 100                 # kernel routing table the VIP routes go to, 1..=4294967295
//!                                    #   but not 253..=255 (default, main, local)
//! ```
//!
//! `path` and `expect_status` default to `/` and `200` for an `http` check. A key that does not
//! apply to the chosen check or redundancy model is an error rather than silently ignored.

use std::{fmt, marker::PhantomData};

use serde::{
    Deserialize, Deserializer,
    de::{self, MapAccess, SeqAccess, Visitor},
};
use serde_saphyr::Spanned;

// Keys the reference calls required are `Option` here too: `validate` reports a missing key at
// the mapping that lacks it, together with every other problem, where serde would stop at the
// first one and point past the end of the mapping.

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub daemon: Option<Spanned<RawDaemon>>,
    pub pools: Option<Vec<Spanned<RawPool>>>,
    pub placement: Option<Spanned<RawPlacement>>,
    pub api: Option<Spanned<RawApi>>,
    pub cluster: Option<Spanned<RawCluster>>,
}

/// `cluster:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCluster {
    pub node: Option<Spanned<String>>,
    pub etcd: Option<Spanned<RawEtcd>>,
    pub prefix: Option<Spanned<String>>,
    pub lease_ttl: Option<Spanned<String>>,
    pub flow_sync: Option<Spanned<RawFlowSync>>,
    pub route_table: Option<Spanned<i64>>,
}

/// `cluster.etcd:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEtcd {
    pub endpoints: Option<Spanned<Vec<Spanned<String>>>>,
    pub ca: Option<Spanned<String>>,
    pub cert: Option<Spanned<String>>,
    pub key: Option<Spanned<String>>,
}

/// `cluster.flow_sync:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFlowSync {
    pub listen: Option<Spanned<String>>,
    pub key_file: Option<Spanned<String>>,
}

/// `api:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawApi {
    pub listen: Option<Spanned<String>>,
    pub cert: Option<Spanned<String>>,
    pub key: Option<Spanned<String>>,
    pub client_ca: Option<Spanned<String>>,
    pub crls: Option<Spanned<Vec<Spanned<String>>>>,
    pub clients: Option<Spanned<Vec<Spanned<RawApiClient>>>>,
    pub heartbeat_listen: Option<Spanned<String>>,
    pub heartbeat_clock_skew: Option<Spanned<String>>,
    pub issuers: Option<Spanned<Vec<Spanned<RawApiIssuer>>>>,
}

/// One entry of `api.issuers:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawApiIssuer {
    pub role: Option<Spanned<crate::model::spec::ApiRole>>,
    pub issuer: Option<Spanned<String>>,
}

/// One entry of `api.clients:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawApiClient {
    pub subject: Option<Spanned<String>>,
    pub role: Option<Spanned<crate::model::spec::ApiRole>>,
    pub pools: Option<Spanned<Vec<Spanned<String>>>>,
    pub names: Option<Spanned<String>>,
    pub prefixes: Option<Spanned<Vec<Spanned<String>>>>,
    pub max_elements: Option<Spanned<i64>>,
}

/// `placement:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPlacement {
    pub weights: Option<Spanned<WeightMap>>,
    pub topology: Option<Spanned<RawTopology>>,
}

/// `placement.topology:`, written in place or as the path of a file that holds it.
#[derive(Debug)]
pub(crate) enum RawTopology {
    Inline(Entries<Spanned<CostRow>>),
    /// The path as written; its position is the `Spanned` around the `RawTopology`.
    File(String),
    Wrong(Wrong),
}

/// `daemon:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDaemon {
    pub interfaces: Option<Spanned<Vec<Spanned<String>>>>,
    pub xdp_mode: Option<RawXdpMode>,
    pub pin_dir: Option<Spanned<String>>,
    pub state_dir: Option<Spanned<String>>,
    pub socket: Option<Spanned<String>>,
    pub metrics: Option<Spanned<String>>,
    pub flow_table_size: Option<Spanned<i64>>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawXdpMode {
    Native,
    Generic,
    Auto,
}

/// One entry of `pools:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPool {
    pub name: Option<Spanned<String>>,
    pub vip: Option<Spanned<String>>,
    pub ports: Option<Spanned<Vec<Spanned<i64>>>>,
    pub protocol: Option<Spanned<RawProtocol>>,
    pub redundancy: Option<Spanned<RawRedundancy>>,
    pub health: Option<Spanned<RawHealth>>,
    pub elements: Option<Spanned<Vec<Spanned<RawElement>>>>,
    pub ring_size: Option<Spanned<i64>>,
    pub budget: Option<Spanned<RawBudget>>,
    pub heartbeat: Option<Spanned<RawHeartbeat>>,
    pub registration: Option<Spanned<RawRegistration>>,
}

/// `registration:` of a pool.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRegistration {
    pub max_priority: Option<Spanned<i64>>,
    pub max_weight: Option<Spanned<i64>>,
}

/// `heartbeat:` of a pool.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHeartbeat {
    pub interval: Option<Spanned<String>>,
    pub misses: Option<Spanned<i64>>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawProtocol {
    Tcp,
    Udp,
}

/// `redundancy:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRedundancy {
    pub model: Option<Spanned<RawModel>>,
    pub active: Option<Spanned<i64>>,
    pub preempt: Option<Spanned<bool>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub(crate) enum RawModel {
    #[serde(rename = "active-standby")]
    ActiveStandby,
    #[serde(rename = "n+m")]
    NPlusM,
    #[serde(rename = "active-active")]
    ActiveActive,
}

/// `health:`. One flat struct for every kind of check (rather than an enum tagged by `check`),
/// so that each key keeps its position and a key that does not fit the check is reported as
/// such instead of as "unknown".
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHealth {
    pub check: Option<Spanned<RawCheck>>,
    pub port: Option<Spanned<i64>>,
    pub path: Option<Spanned<String>>,
    pub expect_status: Option<Spanned<i64>>,
    pub payload: Option<Spanned<String>>,
    pub expect: Option<Spanned<String>>,
    pub command: Option<Spanned<Vec<Spanned<String>>>>,
    pub interval: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub rise: Option<Spanned<i64>>,
    pub fall: Option<Spanned<i64>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RawCheck {
    Tcp,
    Http,
    Udp,
    Exec,
}

/// `budget:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBudget {
    pub detect: Option<Spanned<String>>,
    pub switch: Option<Spanned<String>>,
}

/// One entry of `elements:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawElement {
    pub name: Option<Spanned<String>>,
    pub address: Option<Spanned<String>>,
    pub priority: Option<Spanned<i64>>,
    pub weight: Option<Spanned<i64>>,
    pub failure_domains: Option<Spanned<DomainMap>>,
    pub srlg: Option<Spanned<Vec<Spanned<Text>>>>,
    pub site: Option<Spanned<String>>,
    pub mac: Option<Spanned<String>>,
    pub interface: Option<Spanned<String>>,
}

// Values that may have the wrong shape (a list where a mapping belongs, a number where text
// does) are read whatever their shape and checked by `validate`, which reports the problem at
// the value, with every other one; serde would stop at the first and point at the key.

/// `failure_domains:`: kind → value.
pub(crate) type DomainMap = Mapping<Spanned<Text>>;

/// `placement.weights:`: kind → weight.
pub(crate) type WeightMap = Mapping<Spanned<i64>>;

/// A topology: site → its costs to other sites.
pub(crate) type CostMap = Mapping<Spanned<CostRow>>;

/// The costs from one site: site → cost.
pub(crate) type CostRow = Mapping<Spanned<i64>>;

/// A mapping's entries in file order, keys with their positions (a `BTreeMap` would lose
/// both). Repeated keys never get here: the YAML parser rejects them.
pub(crate) type Entries<V> = Vec<(Spanned<String>, V)>;

/// A mapping, or what was there instead.
#[derive(Debug)]
pub(crate) struct Mapping<V>(pub Result<Entries<V>, Wrong>);

/// A scalar YAML reads as a string (`h1`, `"3"`), or what was there instead: a number,
/// boolean or null (`3`, `no`, `~`) does not quietly become the text it was written as.
#[derive(Debug)]
pub(crate) struct Text(pub Result<String, Wrong>);

/// What a value of the wrong shape is, for the error message: `a list`, `an integer`, ….
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Wrong(pub &'static str);

impl fmt::Display for Wrong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Mapping<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Self(
            match deserializer.deserialize_any(NodeVisitor(PhantomData))? {
                Node::Entries(entries) => Ok(entries),
                Node::Text(_) => Err(Wrong("a string")),
                Node::Wrong(wrong) => Err(wrong),
            },
        ))
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let node: Node<de::IgnoredAny> = deserializer.deserialize_any(NodeVisitor(PhantomData))?;
        Ok(Self(match node {
            Node::Text(text) => Ok(text),
            Node::Entries(_) => Err(Wrong("a mapping")),
            Node::Wrong(wrong) => Err(wrong),
        }))
    }
}

impl<'de> Deserialize<'de> for RawTopology {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(match deserializer.deserialize_any(NodeVisitor(PhantomData))? {
            Node::Entries(entries) => Self::Inline(entries),
            Node::Text(path) => Self::File(path),
            Node::Wrong(wrong) => Self::Wrong(wrong),
        })
    }
}

/// Any YAML value, as far as the types above care.
enum Node<V> {
    Text(String),
    Entries(Entries<V>),
    Wrong(Wrong),
}

struct NodeVisitor<V>(PhantomData<V>);

impl<'de, V: Deserialize<'de>> Visitor<'de> for NodeVisitor<V> {
    type Value = Node<V>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML value")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Node<V>, E> {
        Ok(Node::Text(text.to_owned()))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node<V>, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Node::Entries(entries))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node<V>, A::Error> {
        while seq.next_element::<de::IgnoredAny>()?.is_some() {}
        Ok(Node::Wrong(Wrong("a list")))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Node<V>, E> {
        Ok(Node::Wrong(Wrong("a boolean")))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Node<V>, E> {
        Ok(Node::Wrong(Wrong("an integer")))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Node<V>, E> {
        Ok(Node::Wrong(Wrong("an integer")))
    }

    fn visit_i128<E: de::Error>(self, _: i128) -> Result<Node<V>, E> {
        Ok(Node::Wrong(Wrong("an integer")))
    }

    fn visit_u128<E: de::Error>(self, _: u128) -> Result<Node<V>, E> {
        Ok(Node::Wrong(Wrong("an integer")))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Node<V>, E> {
        Ok(Node::Wrong(Wrong("a number")))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Node<V>, E> {
        Ok(Node::Wrong(Wrong("null")))
    }

    fn visit_none<E: de::Error>(self) -> Result<Node<V>, E> {
        Ok(Node::Wrong(Wrong("null")))
    }

    fn visit_bytes<E: de::Error>(self, _: &[u8]) -> Result<Node<V>, E> {
        Ok(Node::Wrong(Wrong("binary data")))
    }
}
