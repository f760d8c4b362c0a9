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
//!   flow_table_size: 1048576         # flows, 8..=67108864 (2^26)
//! pools:                             # required, at most 64 pools (may be empty)
//!   - name: web                      # required, a name, unique among pools
//!     vip: 10.10.0.100               # required, IPv4 or IPv6 unicast address
//!     ports: [8080]                  # required, at least one, 1..=65535, no repeats; a
//!                                    #   VIP:port/protocol belongs to one pool only
//!     protocol: tcp                  # required: tcp | udp
//!     ring_size: 65537               # Maglev table size: a prime, 251..=1048573, >= elements
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
//!     elements:                      # required, 1..=1024 elements
//!       - name: e1                   # required, a name, unique within the pool
//!         address: 10.10.1.11        # required, unicast, same family as the VIP, not the VIP,
//!                                    #   unique within the pool
//!         priority: 100              # 0..=4294967295; higher wins the active role
//!         weight: 1                  # 1..=1000; share of new flows when active
//!         failure_domains: { host: h1, rack: r1, zone: z1 }  # kind (a name) -> value
//!                                    #   (non-empty, at most 64 bytes); default none
//!         mac: "aa:bb:cc:dd:ee:ff"   # unicast MAC; default: from the neighbour table
//!         interface: eth1            # egress interface; default: from the routing table
//! ```
//!
//! `path` and `expect_status` default to `/` and `200` for an `http` check. A key that does not
//! apply to the chosen check or redundancy model is an error rather than silently ignored.

use std::fmt;

use serde::{
    Deserialize, Deserializer,
    de::{MapAccess, Visitor},
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
    pub failure_domains: Option<DomainMap>,
    pub mac: Option<Spanned<String>>,
    pub interface: Option<Spanned<String>>,
}

/// `failure_domains:` in file order, keys with their positions (a `BTreeMap` would lose both).
/// Repeated keys never get here: the YAML parser rejects them.
#[derive(Debug, Default)]
pub(crate) struct DomainMap(pub Vec<(Spanned<String>, Spanned<String>)>);

impl<'de> Deserialize<'de> for DomainMap {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DomainVisitor;

        impl<'de> Visitor<'de> for DomainVisitor {
            type Value = DomainMap;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping of failure-domain kind to value")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<DomainMap, A::Error> {
                let mut pairs = Vec::new();
                while let Some(pair) = map.next_entry()? {
                    pairs.push(pair);
                }
                Ok(DomainMap(pairs))
            }
        }

        deserializer.deserialize_map(DomainVisitor)
    }
}
