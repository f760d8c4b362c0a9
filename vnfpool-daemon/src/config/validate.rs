//! Raw YAML values → [`crate::model::spec`] values. Every check runs, whatever failed before
//! it, so that one pass reports everything wrong with a file; checks that depend on a value
//! that failed its own check (the VIP's family, the detection budget) are skipped rather than
//! reported twice.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    fmt::{self, Write as _},
    io,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use serde_saphyr::{Location, Spanned};
use vnfpool_common::maps;

use super::{
    ConfigError, Position, from_yaml,
    raw::{
        CostMap, CostRow, DomainMap, Entries, Mapping, RawBudget, RawCheck, RawCluster, RawConfig, RawDaemon,
        RawElement, RawEtcd, RawForwarding, RawHealth, RawHeartbeat, RawModel, RawPlacement, RawPool,
        RawProtocol, RawRedundancy, RawRegistration, RawTopology, RawXdpMode, Text, WeightMap,
    },
    sanitize,
};
use crate::model::{
    maglev,
    spec::{
        ApiClient, ApiRole, ApiSpec, Budget, CheckSpec, ClusterSpec, DaemonSpec, ElementSpec, EtcdSpec,
        EtcdTls, FlowSyncSpec, Forwarding, Grant, HealthSpec, HeartbeatSpec, Origin, PlacementSpec, PoolSpec,
        Protocol, RedundancySpec, RegistrationSpec, Spec, XdpMode,
    },
};

const NAME_MAX: usize = 32;
const NAME_RULE: &str = "[a-z0-9][a-z0-9_-]*, at most 32 bytes";
/// `IFNAMSIZ` - 1.
const IFNAME_MAX: usize = 15;
const IFNAME_RULE: &str = "an interface name of 1 to 15 bytes without `/`, `:` or whitespace";
const DOMAIN_VALUE_MAX: usize = 64;
/// Most failure-domain kinds, and most `srlg` entries, of one element: each is compared with
/// every other element's at every backup selection.
const ELEMENT_LIST_MAX: usize = 32;
const DEFAULT_SOCKET: &str = "/run/vnfpool/vnfpool.sock";
/// Loopback only by default: metrics say which elements exist and how they fare.
const DEFAULT_METRICS: std::net::SocketAddr =
    std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9470);
/// Largest `api.heartbeat_clock_skew`.
const HEARTBEAT_SKEW_MAX: Duration = Duration::from_secs(10);
/// UDP port of the heartbeat listener when `api.heartbeat_listen` is not given (on the API's
/// address).
const DEFAULT_HEARTBEAT_PORT: u16 = 9471;
const DEFAULT_STATE_DIR: &str = "/var/lib/vnfpool";
const DEFAULT_CLUSTER_PREFIX: &str = "/vnfpool/";
const PREFIX_MAX: usize = 128;
const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(3);
/// etcd grants leases in whole seconds; 1 s would leave no room for a keep-alive round trip.
/// etcd's lease is a second shorter (`cluster::etcd::EXPIRY_MARGIN`), and etcd grants no lease
/// under 2 s with its default timing.
const LEASE_TTL_MIN: Duration = Duration::from_secs(3);
const LEASE_TTL_MAX: Duration = Duration::from_mins(1);
const ENDPOINTS_MAX: usize = 16;
/// A table no distribution uses for itself (BIRD and FRR examples use it too).
const DEFAULT_ROUTE_TABLE: u32 = 100;
const FLOW_TABLE_MIN: i64 = 8;
const FLOW_TABLE_MAX: i64 = 1 << 26;
const PROBE_MIN: Duration = Duration::from_millis(1);
/// Longer probe periods are certainly a mistake, and the bound keeps `interval × fall` far from
/// overflowing.
const PROBE_MAX: Duration = Duration::from_hours(1);
const COUNT_MAX: i64 = 100;
const WEIGHT_MAX: i64 = 1000;
const DEFAULT_PRIORITY: u32 = 100;
const DEFAULT_WEIGHT: u32 = 1;
const DEFAULT_HTTP_PATH: &str = "/";
const DEFAULT_HTTP_STATUS: u16 = 200;
const DURATION_RULE: &str = "a duration such as 10ms, 1s or 1m 30s";
/// Most a placement weight or a topology cost may be.
const PLACEMENT_MAX: i64 = 1_000_000;
const TOPOLOGY_RULE: &str = "a mapping of site to its costs, like site-a: { site-b: 2 }";
const STRING_RULE: &str =
    "a string (quote a value YAML reads as a number, boolean or null, like \"3\" or \"no\")";
/// Sites an error message lists at most.
const SITES_LISTED: usize = 8;

/// Reads a file the configuration names (the topology), at its path resolved against the
/// configuration's directory.
pub(super) type ReadFile<'a> = &'a dyn Fn(&Path) -> io::Result<String>;

/// Checks everything; `Err` holds every problem, in file order: the configuration's, then
/// those of the topology file it names.
pub(super) fn validate(
    raw: &Spanned<RawConfig>,
    path: &Path,
    read: ReadFile<'_>,
) -> Result<Spec, Vec<ConfigError>> {
    let mut check = Checker::new(path);
    let top = raw.referenced;
    if raw.value.daemon.is_none() && raw.value.pools.is_none() {
        // An empty file, or one with only comments.
        return Err(vec![ConfigError::Invalid {
            path: path.to_owned(),
            position: Position { line: 1, column: 1 },
            what: "no configuration".to_owned(),
            expected: "a mapping with `daemon` and `pools` (see examples/pools.yaml)".to_owned(),
        }]);
    }
    // First: the elements' sites are checked against the topology.
    if let Some(placement) = &raw.value.placement
        && let Some(placement) = check.placement(placement, read)
    {
        check.placement = Arc::new(placement);
    }
    let daemon = check
        .required(raw.value.daemon.as_ref(), top, "the file", "daemon")
        .and_then(|daemon| check.daemon(daemon));
    let api = match &raw.value.api {
        Some(api) => check.api(api).map(Some),
        None => Some(None),
    };
    let cluster = match &raw.value.cluster {
        Some(cluster) => check.cluster(cluster).map(Some),
        None => Some(None),
    };
    let pools = check
        .required(raw.value.pools.as_ref(), top, "the file", "pools")
        .map(|pools| check.pools(pools));
    match (daemon, pools, api, cluster) {
        (Some(daemon), Some(pools), Some(api), Some(cluster)) if check.errors.is_empty() => Ok(Spec {
            daemon,
            pools,
            placement: check.placement,
            api,
            cluster,
        }),
        _ => {
            // Stable: errors at the same place keep the order they were found in.
            check
                .errors
                .sort_by_key(|error| (error.path() != path, error.position()));
            Err(check.errors)
        }
    }
}

/// Checks one element given outside the file (over the API) by the rules of the file's
/// elements, against `pool` (its VIP's family, its placement's sites). Its name is `name`; the
/// text may leave it out or repeat it. Errors carry `path` (the request body's name).
pub(super) fn element(
    mut raw: Spanned<RawElement>,
    name: &str,
    pool: &PoolSpec,
    origin: Origin,
    path: &Path,
) -> Result<ElementSpec, Vec<ConfigError>> {
    let mut check = Checker::new(path);
    check.sites = if pool.placement.costs.is_empty() {
        Sites::NoTopology
    } else {
        Sites::Known(pool.placement.costs.keys().cloned().collect())
    };
    match &raw.value.name {
        Some(given) if given.value != name => {
            check.invalid(
                given.referenced,
                format!(
                    "name `{}` differs from the name in the path",
                    sanitize(&given.value)
                ),
                format!("`{name}` or no name"),
            );
            return Err(check.errors);
        }
        Some(_) => {}
        None => raw.value.name = Some(Spanned::new(name.to_owned(), raw.referenced, raw.defined)),
    }
    if origin == Origin::Agent {
        check.registered(&raw.value, pool.registration);
    }
    match check.element(&raw, Some(pool.vip), origin) {
        Some(spec) if check.errors.is_empty() => {
            let priority = if origin == Origin::Agent && raw.value.priority.is_none() {
                spec.priority.min(pool.registration.max_priority)
            } else {
                spec.priority
            };
            Ok(ElementSpec {
                priority,
                origin,
                ..spec
            })
        }
        _ => Err(check.errors),
    }
}

/// Collects errors; each method checks one part of the file and returns its value when valid.
struct Checker<'a> {
    path: &'a Path,
    errors: Vec<ConfigError>,
    /// What an element's `site` may be.
    sites: Sites,
    /// The `placement:` section, once valid; every pool gets a clone.
    placement: Arc<PlacementSpec>,
}

impl<'a> Checker<'a> {
    fn new(path: &'a Path) -> Self {
        Self {
            path,
            errors: Vec::new(),
            sites: Sites::NoTopology,
            placement: Arc::default(),
        }
    }
}

/// The sites an element may name.
enum Sites {
    /// No `placement.topology`: none.
    NoTopology,
    /// The topology's (top-level keys, valid names or not: a bad one is reported at the key).
    Known(BTreeSet<String>),
    /// The topology is not a mapping, or its file could not be read or parsed: an element's
    /// site is not checked (the topology's error says what is wrong).
    Unknown,
}

// === impl Checker: the sections ===

impl Checker<'_> {
    fn daemon(&mut self, raw: &Spanned<RawDaemon>) -> Option<DaemonSpec> {
        let at = raw.referenced;
        let raw = &raw.value;
        let interfaces = self.required(raw.interfaces.as_ref(), at, "daemon", "interfaces");
        let mut interfaces_ok = true;
        if let Some(interfaces) = interfaces {
            if interfaces.value.is_empty() {
                self.invalid(
                    interfaces.referenced,
                    "no interface to attach to",
                    "at least one interface in daemon.interfaces",
                );
                interfaces_ok = false;
            }
            let mut seen = HashMap::new();
            for interface in &interfaces.value {
                interfaces_ok &= self.ifname(interface);
                interfaces_ok &= self.unique(
                    &mut seen,
                    interface.value.as_str(),
                    interface,
                    || format!("interface `{}`", sanitize(&interface.value)),
                    "each interface once",
                );
            }
        }
        let xdp_mode = match raw.xdp_mode {
            Some(RawXdpMode::Native) => XdpMode::Native,
            Some(RawXdpMode::Generic) => XdpMode::Generic,
            Some(RawXdpMode::Auto) | None => XdpMode::Auto,
        };
        let flow_table_size = match &raw.flow_table_size {
            Some(size) => self.int(size, "flow_table_size", FLOW_TABLE_MIN, FLOW_TABLE_MAX),
            None => Some(maps::DEFAULT_FLOW_TABLE_SIZE),
        };
        let pin_dir = self.absolute(raw.pin_dir.as_ref(), "pin_dir", maps::PIN_DIR);
        let state_dir = self.absolute(raw.state_dir.as_ref(), "state_dir", DEFAULT_STATE_DIR);
        let socket = self.absolute(raw.socket.as_ref(), "socket", DEFAULT_SOCKET);
        let metrics = match &raw.metrics {
            Some(addr) => self.socket_addr(addr, "an IP address and port like 127.0.0.1:9470 or [::1]:9470"),
            None => Some(DEFAULT_METRICS),
        };
        if !interfaces_ok {
            return None;
        }
        Some(DaemonSpec {
            interfaces: interfaces?.value.iter().map(|i| i.value.clone()).collect(),
            xdp_mode,
            pin_dir: pin_dir?,
            state_dir: state_dir?,
            flow_table_size: flow_table_size?,
            socket: socket?,
            metrics: metrics?,
        })
    }

    fn api(&mut self, raw: &Spanned<super::raw::RawApi>) -> Option<ApiSpec> {
        let at = raw.referenced;
        let raw = &raw.value;
        let listen = self
            .required(raw.listen.as_ref(), at, "api", "listen")
            .and_then(|addr| self.socket_addr(addr, "an IP address and port like 0.0.0.0:9443"));
        let heartbeat_listen = match &raw.heartbeat_listen {
            Some(addr) => self.socket_addr(addr, "an IP address and UDP port like 0.0.0.0:9471"),
            None => listen
                .map(|l: std::net::SocketAddr| std::net::SocketAddr::new(l.ip(), DEFAULT_HEARTBEAT_PORT)),
        };
        let heartbeat_clock_skew = match &raw.heartbeat_clock_skew {
            Some(skew) => self.duration(skew, "heartbeat_clock_skew", Duration::ZERO, HEARTBEAT_SKEW_MAX),
            None => Some(crate::heartbeat::DEFAULT_SKEW),
        };
        let mut path = |key: &str, value: Option<&Spanned<String>>| {
            let value = self.required(value, at, "api", key)?;
            self.absolute(Some(value), key, "")
        };
        let cert = path("cert", raw.cert.as_ref());
        let key = path("key", raw.key.as_ref());
        let client_ca = path("client_ca", raw.client_ca.as_ref());
        // Every entry checked (each error reported), then `None` if one was wrong.
        let crls: Option<Vec<PathBuf>> = raw.crls.as_ref().map_or(Some(Vec::new()), |list| {
            list.value
                .iter()
                .map(|crl| self.absolute(Some(crl), "crls entry", ""))
                .collect::<Vec<_>>()
                .into_iter()
                .collect()
        });
        let mut clients = Vec::new();
        if let Some(list) = self.required(raw.clients.as_ref(), at, "api", "clients") {
            if list.value.is_empty() {
                self.invalid(
                    list.referenced,
                    "no client",
                    "at least one client subject with its role",
                );
            }
            let mut seen = HashMap::new();
            for client in &list.value {
                let subject = self.required(
                    client.value.subject.as_ref(),
                    client.referenced,
                    "a client",
                    "subject",
                );
                let role = self.required(client.value.role.as_ref(), client.referenced, "a client", "role");
                if let Some(subject) = subject {
                    let Some(name) =
                        self.distinguished_name(subject, "subject", "a subject like `CN=orchestrator`")
                    else {
                        continue;
                    };
                    self.unique(
                        &mut seen,
                        name.clone(),
                        subject,
                        || format!("client subject `{}`", sanitize(&name)),
                        "each subject once",
                    );
                    let grant = self.grant(&client.value, role.map(|r| r.value));
                    if let (Some(role), Some(grant)) = (role, grant) {
                        clients.push(ApiClient {
                            subject: name,
                            role: role.value,
                            grant,
                        });
                    }
                }
            }
        }
        let issuers = self.issuers(raw.issuers.as_ref());
        Some(ApiSpec {
            issuers,
            listen: listen?,
            cert: cert?,
            key: key?,
            client_ca: client_ca?,
            crls: crls?,
            clients,
            heartbeat_listen: heartbeat_listen?,
            heartbeat_clock_skew: heartbeat_clock_skew?,
            mptcp: raw.mptcp.as_ref().is_none_or(|m| m.value),
        })
    }

    /// A subject or issuer (`what`, like `example`), as certificates' are written (see
    /// `api::dn`): `CN=ops,o=acme` is kept as `CN=ops, O=acme`.
    fn distinguished_name(&mut self, raw: &Spanned<String>, what: &str, example: &str) -> Option<String> {
        if raw.value.trim().is_empty() {
            self.invalid(raw.referenced, format!("an empty {what}"), example);
            return None;
        }
        match crate::api::dn::Dn::parse(&raw.value) {
            Ok(dn) => Some(dn.to_string()),
            Err(why) => {
                self.invalid(
                    raw.referenced,
                    format!(
                        "{what} `{}` is not a distinguished name: {why}",
                        sanitize(&raw.value)
                    ),
                    "attributes like `CN=ops, O=acme`, a `,` or `+` in a value escaped as `\\,` or `\\+`",
                );
                None
            }
        }
    }

    /// What an `element` client may register (its `pools`, `names`, `prefixes` and
    /// `max_elements`); those keys given to another role are an error.
    fn grant(&mut self, raw: &super::raw::RawApiClient, role: Option<ApiRole>) -> Option<Grant> {
        if role != Some(ApiRole::Element) {
            for (key, at) in [
                ("pools", raw.pools.as_ref().map(|v| v.referenced)),
                ("names", raw.names.as_ref().map(|v| v.referenced)),
                ("prefixes", raw.prefixes.as_ref().map(|v| v.referenced)),
                ("max_elements", raw.max_elements.as_ref().map(|v| v.referenced)),
            ] {
                if let Some(at) = at
                    && role.is_some()
                {
                    self.invalid(
                        at,
                        format!("`{key}` is for element clients, which register elements"),
                        "pools, names, prefixes and max_elements only with role: element",
                    );
                }
            }
            return Some(Grant::default());
        }
        let mut ok = true;
        let pools = raw.pools.as_ref().map(|list| {
            list.value
                .iter()
                .filter(|pool| {
                    let valid = self.name(pool, "pool name");
                    ok &= valid;
                    valid
                })
                .map(|pool| pool.value.clone())
                .collect::<Vec<_>>()
        });
        let names = raw.names.as_ref().and_then(|names| {
            let pattern = names.value.trim();
            if pattern.is_empty() || crate::registry::name_glob(pattern).is_err() {
                ok = false;
                self.invalid(
                    names.referenced,
                    format!("`{}` is not an element-name pattern", sanitize(pattern)),
                    "a glob over element names, like `fw-*` (`*` any run, `?` one character)",
                );
                return None;
            }
            Some(pattern.to_owned())
        });
        let prefixes = raw.prefixes.as_ref().map(|list| {
            list.value
                .iter()
                .filter_map(|prefix| {
                    if let Ok(net) = prefix.value.trim().parse::<ipnet::IpNet>() {
                        return Some(net.trunc());
                    }
                    ok = false;
                    self.invalid(
                        prefix.referenced,
                        format!("`{}` is not an address prefix", sanitize(&prefix.value)),
                        "an address prefix, like 10.10.1.0/24 or 2001:db8::/64",
                    );
                    None
                })
                .collect::<Vec<_>>()
        });
        let max_elements = match &raw.max_elements {
            Some(max) => self.int(
                max,
                "max_elements",
                0,
                i64::from(vnfpool_common::maps::MAX_ELEMENTS),
            ),
            None => Some(Grant::DEFAULT_MAX_ELEMENTS),
        };
        if !ok {
            return None;
        }
        Some(Grant {
            pools,
            names,
            prefixes,
            max_elements: max_elements?,
        })
    }

    /// `api.issuers`: each role pinned once, to a non-empty issuer.
    fn issuers(
        &mut self,
        raw: Option<&Spanned<Vec<Spanned<super::raw::RawApiIssuer>>>>,
    ) -> Vec<(crate::model::spec::ApiRole, String)> {
        let mut issuers = Vec::new();
        if let Some(list) = raw {
            let mut seen = HashMap::new();
            for pin in &list.value {
                let role = self.required(pin.value.role.as_ref(), pin.referenced, "an issuer pin", "role");
                let issuer = self.required(
                    pin.value.issuer.as_ref(),
                    pin.referenced,
                    "an issuer pin",
                    "issuer",
                );
                let (Some(role), Some(issuer)) = (role, issuer) else {
                    continue;
                };
                let Some(issuer) = self.distinguished_name(issuer, "issuer", "a CA subject like `CN=sce-ca`")
                else {
                    continue;
                };
                self.unique(
                    &mut seen,
                    role.value,
                    role,
                    || format!("role {:?}", role.value).to_lowercase(),
                    "each role pinned once",
                );
                issuers.push((role.value, issuer));
            }
        }
        issuers
    }

    fn cluster(&mut self, raw: &Spanned<RawCluster>) -> Option<ClusterSpec> {
        let at = raw.referenced;
        let raw = &raw.value;
        let node = self
            .required(raw.node.as_ref(), at, "cluster", "node")
            .filter(|node| self.name(node, "node"))
            .map(|node| node.value.clone());
        let etcd = self
            .required(raw.etcd.as_ref(), at, "cluster", "etcd")
            .and_then(|etcd| self.etcd(etcd));
        let prefix = match &raw.prefix {
            Some(prefix) => {
                let text = &prefix.value;
                let ok = text.len() >= 2
                    && text.len() <= PREFIX_MAX
                    && text.starts_with('/')
                    && text.ends_with('/')
                    && text.chars().all(|c| c.is_ascii_graphic());
                if ok {
                    Some(text.clone())
                } else {
                    self.invalid(
                        prefix.referenced,
                        format!("prefix `{}`", sanitize(text)),
                        format!("a key prefix that starts and ends with `/`, like /vnfpool/: printable ASCII without spaces, at most {PREFIX_MAX} bytes"),
                    );
                    None
                }
            }
            None => Some(DEFAULT_CLUSTER_PREFIX.to_owned()),
        };
        let lease_ttl = match &raw.lease_ttl {
            Some(ttl) => self
                .duration(ttl, "lease_ttl", LEASE_TTL_MIN, LEASE_TTL_MAX)
                .filter(|d| {
                    let whole = d.subsec_nanos() == 0;
                    if !whole {
                        self.invalid(
                            ttl.referenced,
                            format!(
                                "lease_ttl `{}` is not a whole number of seconds",
                                sanitize(&ttl.value)
                            ),
                            "whole seconds (etcd leases count seconds), like 3s",
                        );
                    }
                    whole
                }),
            None => Some(DEFAULT_LEASE_TTL),
        };
        let flow_sync = self
            .required(raw.flow_sync.as_ref(), at, "cluster", "flow_sync")
            .and_then(|sync| {
                let sat = sync.referenced;
                let listen = self
                    .required(sync.value.listen.as_ref(), sat, "cluster.flow_sync", "listen")
                    .and_then(|addr| self.socket_addr(addr, "an IP address and UDP port like 10.0.0.1:9472"));
                let key_file = self
                    .required(sync.value.key_file.as_ref(), sat, "cluster.flow_sync", "key_file")
                    .and_then(|path| self.absolute(Some(path), "key_file", ""));
                Some(FlowSyncSpec {
                    listen: listen?,
                    key_file: key_file?,
                })
            });
        let route_table = match &raw.route_table {
            Some(table) => self
                .int::<u32>(table, "route_table", 1, i64::from(u32::MAX))
                .filter(|&t| {
                    let reserved = (253..=255).contains(&t);
                    if reserved {
                        self.invalid(
                            table.referenced,
                            format!("route_table {t} is the kernel's own (default, main or local)"),
                            "a table of vnfpool's own, like 100",
                        );
                    }
                    !reserved
                }),
            None => Some(DEFAULT_ROUTE_TABLE),
        };
        Some(ClusterSpec {
            node: node?,
            etcd: etcd?,
            prefix: prefix?,
            lease_ttl: lease_ttl?,
            flow_sync: flow_sync?,
            route_table: route_table?,
        })
    }

    fn etcd(&mut self, raw: &Spanned<RawEtcd>) -> Option<EtcdSpec> {
        let at = raw.referenced;
        let raw = &raw.value;
        let list = self.required(raw.endpoints.as_ref(), at, "cluster.etcd", "endpoints")?;
        if list.value.is_empty() || list.value.len() > ENDPOINTS_MAX {
            self.invalid(
                list.referenced,
                format!("{} endpoints", list.value.len()),
                format!("1..={ENDPOINTS_MAX} etcd client URLs"),
            );
            return None;
        }
        let mut schemes = BTreeSet::new();
        let mut endpoints = Vec::new();
        let mut ok = true;
        for url in &list.value {
            let text = url.value.trim();
            let scheme = ["http://", "https://"].into_iter().find(|s| text.starts_with(s));
            let rest = scheme.map_or("", |s| &text[s.len()..]);
            let host_port = rest.strip_suffix('/').unwrap_or(rest);
            let valid = scheme.is_some()
                && !host_port.is_empty()
                && !host_port.contains('/')
                && host_port.rsplit_once(':').is_some_and(|(host, port)| {
                    !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0)
                });
            if !valid {
                self.invalid(
                    url.referenced,
                    format!("endpoint `{}`", sanitize(text)),
                    "an etcd client URL with a port, like http://10.0.0.5:2379 or https://etcd-1:2379",
                );
                ok = false;
                continue;
            }
            schemes.insert(scheme.unwrap_or_default());
            endpoints.push(text.to_owned());
        }
        if schemes.len() > 1 {
            self.invalid(
                list.referenced,
                "endpoints mix http:// and https://",
                "one scheme for every endpoint",
            );
            ok = false;
        }
        // Mixed schemes are reported once, above, and not again as missing TLS keys.
        let https = schemes.contains("https://") && schemes.len() == 1;
        let paths = [("ca", &raw.ca), ("cert", &raw.cert), ("key", &raw.key)];
        let mut tls_paths = Vec::new();
        for (key, value) in paths {
            match value {
                Some(value) if !https => {
                    self.invalid(
                        value.referenced,
                        format!("`{key}` with http:// endpoints"),
                        "https:// endpoints, or no TLS keys",
                    );
                    ok = false;
                    tls_paths.push(None);
                }
                Some(value) => {
                    let path = self.absolute(Some(value), key, "");
                    ok &= path.is_some();
                    tls_paths.push(path);
                }
                None => tls_paths.push(None),
            }
        }
        let [ca, cert, key] = [tls_paths[0].clone(), tls_paths[1].clone(), tls_paths[2].clone()];
        let tls = if https {
            if raw.ca.is_none() {
                self.invalid(
                    at,
                    "missing key `ca` in cluster.etcd",
                    "with https:// endpoints, the CA of the etcd servers in `ca`",
                );
                ok = false;
            }
            if raw.cert.is_some() != raw.key.is_some() {
                let (given, at) = match (&raw.cert, &raw.key) {
                    (Some(c), None) => ("cert", c.referenced),
                    (None, Some(k)) => ("key", k.referenced),
                    _ => ("", at),
                };
                self.invalid(
                    at,
                    format!("`{given}` alone"),
                    "both `cert` and `key`, or neither",
                );
                ok = false;
            }
            ca.map(|ca| EtcdTls {
                ca,
                identity: cert.zip(key),
            })
        } else {
            None
        };
        ok.then_some(EtcdSpec { endpoints, tls })
    }

    fn pools(&mut self, raw: &[Spanned<RawPool>]) -> Vec<PoolSpec> {
        if let Some(extra) = raw.get(maps::MAX_POOLS as usize) {
            self.invalid(
                extra.referenced,
                format!("pool number {}, one too many", maps::MAX_POOLS + 1),
                format!("at most {} pools", maps::MAX_POOLS),
            );
        }
        self.across_pools(raw);
        let pools: Vec<PoolSpec> = raw.iter().filter_map(|pool| self.pool(pool)).collect();
        self.ring_arena(raw, &pools);
        pools
    }

    /// Every pool's Maglev table, in both slots, must fit the data plane's ring arena: the
    /// first pool that does not is the error.
    fn ring_arena(&mut self, raw: &[Spanned<RawPool>], pools: &[PoolSpec]) {
        let mut used: u64 = 0;
        let capacity = u64::from(maps::DEFAULT_RING_CHUNKS);
        for pool in pools {
            used += u64::from(maps::SLOTS_PER_POOL) * u64::from(vnfpool_common::ring::chunks(pool.ring_size));
            if used <= capacity {
                continue;
            }
            let at = raw
                .iter()
                .find(|r| r.value.name.as_ref().is_some_and(|n| n.value == pool.name))
                .map(|r| r.value.ring_size.as_ref().map_or(r.referenced, |s| s.referenced));
            if let Some(at) = at {
                self.invalid(
                    at,
                    format!(
                        "pool {}: the Maglev tables up to this pool need {used} chunks of the ring arena, which holds {capacity} ({} pools of {})",
                        pool.name,
                        capacity
                            / (u64::from(maps::SLOTS_PER_POOL)
                                * u64::from(vnfpool_common::ring::chunks(maps::DEFAULT_RING_SIZE))),
                        maps::DEFAULT_RING_SIZE
                    ),
                    "smaller ring_size values (a prime >= 10 x the elements is enough for an even spread), or fewer pools",
                );
            }
            return;
        }
    }

    /// What only shows across pools: names, VIP:port/protocol pairs, the VIP table's capacity.
    /// Values that are missing or invalid are left to the pool's own checks.
    fn across_pools(&mut self, raw: &[Spanned<RawPool>]) {
        let mut names = HashMap::new();
        let mut listeners: HashMap<(IpAddr, u16, Protocol), (Location, &str)> = HashMap::new();
        let mut address_entries = HashSet::new();
        let mut vip_entries: usize = 0;
        let mut vip_table_full = false;
        for pool in raw.iter().map(|pool| &pool.value) {
            let name = pool.name.as_ref().map_or("", |name| name.value.as_str());
            if let Some(spanned) = &pool.name {
                self.unique(
                    &mut names,
                    name,
                    spanned,
                    || format!("pool name `{}`", sanitize(name)),
                    "a unique pool name",
                );
            }
            let (Some(vip), Some(ports), Some(protocol)) = (&pool.vip, &pool.ports, &pool.protocol) else {
                continue;
            };
            let Ok(vip) = vip.value.trim().parse::<IpAddr>() else {
                continue;
            };
            let protocol = self::protocol(protocol.value);
            let mut ports_here = HashSet::new();
            for port in &ports.value {
                let Ok(number) = u16::try_from(port.value) else {
                    continue;
                };
                if number == 0 || !ports_here.insert(number) {
                    continue;
                }
                match listeners.get(&(vip, number, protocol)) {
                    Some(&(first, owner)) => self.errors.push(ConfigError::Duplicate {
                        path: self.path.to_owned(),
                        position: position(port.referenced),
                        what: format!(
                            "{}/{} (pool `{}`)",
                            SocketAddr::new(vip, number),
                            ProtocolName(protocol),
                            sanitize(owner)
                        ),
                        first: position(first),
                        expected: "each VIP, port and protocol in one pool only",
                    }),
                    None => {
                        listeners.insert((vip, number, protocol), (port.referenced, name));
                    }
                }
            }
            vip_entries += ports_here.len() + usize::from(address_entries.insert((vip, protocol)));
            if vip_entries > maps::MAX_VIP_ENTRIES as usize && !vip_table_full {
                vip_table_full = true;
                self.invalid(
                    ports.referenced,
                    format!(
                        "the VIP table is full at pool `{}` ({vip_entries} entries: one per port and one \
                         per VIP and protocol)",
                        sanitize(name)
                    ),
                    format!("at most {} entries in all pools", maps::MAX_VIP_ENTRIES),
                );
            }
        }
    }

    fn pool(&mut self, raw: &Spanned<RawPool>) -> Option<PoolSpec> {
        let at = raw.referenced;
        let raw = &raw.value;
        let name = self.required(raw.name.as_ref(), at, "this pool", "name");
        let name_ok = name.is_some_and(|name| self.name(name, "pool name"));
        let vip = self
            .required(raw.vip.as_ref(), at, "this pool", "vip")
            .and_then(|vip| self.address(vip, "VIP"));
        let ports = self
            .required(raw.ports.as_ref(), at, "this pool", "ports")
            .and_then(|ports| self.ports(ports));
        let protocol = self.required(raw.protocol.as_ref(), at, "this pool", "protocol");
        let elements = self.required(raw.elements.as_ref(), at, "this pool", "elements");
        let count = elements.map_or(0, |elements| elements.value.len());
        let element_specs = elements.and_then(|elements| self.elements(elements, vip));
        let ring_size = self.ring_size(raw.ring_size.as_ref(), count);
        let redundancy = self
            .required(raw.redundancy.as_ref(), at, "this pool", "redundancy")
            .and_then(|redundancy| self.redundancy(redundancy, count));
        let health = self
            .required(raw.health.as_ref(), at, "this pool", "health")
            .and_then(|health| self.health(health));
        let budget = match &raw.budget {
            Some(budget) => self
                .budget(budget, health.as_ref(), name.map_or("", |n| &n.value))
                .map(Some),
            None => Some(None),
        };
        let heartbeat = match &raw.heartbeat {
            Some(heartbeat) => self.heartbeat(heartbeat),
            None => Some(HeartbeatSpec::DEFAULT),
        };
        let registration = match &raw.registration {
            Some(registration) => self.registration(registration),
            None => Some(RegistrationSpec::DEFAULT),
        };
        let forwarding = self.forwarding(raw, at);
        if let (Some(forwarding), Some(specs), Some(raw_elements)) = (forwarding, &element_specs, elements) {
            for (spec, raw) in specs.iter().zip(&raw_elements.value) {
                if let Some(why) = forwarding.lacks(spec) {
                    self.invalid(
                        raw.referenced,
                        why,
                        "`vxlan_mac: \"aa:bb:cc:dd:ee:ff\"` on each element",
                    );
                }
            }
        }
        if !name_ok {
            return None;
        }
        Some(PoolSpec {
            name: name?.value.clone(),
            vip: vip?,
            ports: ports?,
            protocol: self::protocol(protocol?.value),
            redundancy: redundancy?,
            health: health?,
            elements: element_specs?,
            ring_size: ring_size?,
            budget: budget?,
            placement: Arc::clone(&self.placement),
            heartbeat: heartbeat?,
            registration: registration?,
            forwarding: forwarding?,
        })
    }

    /// `forwarding:` of the pool `raw` at `at`, with `gue_port:` (required with `gue`, refused
    /// otherwise) and `vxlan_vni:` (required with `vxlan`, refused otherwise).
    fn forwarding(&mut self, raw: &RawPool, at: Location) -> Option<Forwarding> {
        let (mode, mode_at) = raw
            .forwarding
            .as_ref()
            .map_or((RawForwarding::L2Dsr, at), |m| (m.value, m.referenced));
        let mut ok = true;
        for (key, value, owner) in [
            ("gue_port", &raw.gue_port, RawForwarding::Gue),
            ("vxlan_vni", &raw.vxlan_vni, RawForwarding::Vxlan),
        ] {
            if let Some(value) = value
                && mode != owner
            {
                let owner = if owner == RawForwarding::Gue {
                    "gue"
                } else {
                    "vxlan"
                };
                self.invalid(
                    value.referenced,
                    format!("{key} without `forwarding: {owner}`"),
                    format!("no {key}, or `forwarding: {owner}`"),
                );
                ok = false;
            }
        }
        let missing = |this: &mut Self, key: &str, mode: &str, what: &str| {
            this.invalid(
                mode_at,
                format!("forwarding: {mode} without `{key}`"),
                format!("`{key}: N`, {what}"),
            );
        };
        let forwarding = match mode {
            RawForwarding::L2Dsr => Forwarding::L2Dsr,
            RawForwarding::Ipip => Forwarding::Ipip,
            RawForwarding::Gue => {
                let Some(port) = &raw.gue_port else {
                    missing(
                        self,
                        "gue_port",
                        "gue",
                        "the UDP port the elements decapsulate on",
                    );
                    return None;
                };
                Forwarding::Gue {
                    port: self.int::<u16>(port, "gue_port", 1, i64::from(u16::MAX))?,
                }
            }
            RawForwarding::Vxlan => {
                let Some(vni) = &raw.vxlan_vni else {
                    missing(self, "vxlan_vni", "vxlan", "the pool's VXLAN network identifier");
                    return None;
                };
                Forwarding::Vxlan {
                    vni: self.int::<u32>(vni, "vxlan_vni", 1, (1 << 24) - 1)?,
                }
            }
        };
        ok.then_some(forwarding)
    }

    fn ports(&mut self, raw: &Spanned<Vec<Spanned<i64>>>) -> Option<Vec<u16>> {
        if raw.value.is_empty() {
            self.invalid(raw.referenced, "no port", "at least one port");
            return None;
        }
        let mut seen = HashMap::new();
        let mut ports = Vec::with_capacity(raw.value.len());
        let mut ok = true;
        for port in &raw.value {
            match self.int::<u16>(port, "port", 1, i64::from(u16::MAX)) {
                Some(number) => {
                    ok &= self.unique(
                        &mut seen,
                        number,
                        port,
                        || format!("port {number}"),
                        "each port once per pool",
                    );
                    ports.push(number);
                }
                None => ok = false,
            }
        }
        ok.then_some(ports)
    }

    fn ring_size(&mut self, raw: Option<&Spanned<i64>>, elements: usize) -> Option<u32> {
        let Some(raw) = raw else {
            return Some(maglev::DEFAULT_RING_SIZE);
        };
        let Ok(size) = u32::try_from(raw.value) else {
            self.out_of_range(raw.referenced, "ring_size", raw.value, ring_rule());
            return None;
        };
        if let Err(err) = maglev::validate_size(size) {
            self.invalid(raw.referenced, err.to_string(), ring_rule());
            return None;
        }
        if elements > size as usize {
            self.invalid(
                raw.referenced,
                format!("ring size {size} is smaller than the pool's {elements} elements"),
                "a ring at least as large as the number of elements",
            );
            return None;
        }
        Some(size)
    }

    fn redundancy(&mut self, raw: &Spanned<RawRedundancy>, elements: usize) -> Option<RedundancySpec> {
        let model = self.required(raw.value.model.as_ref(), raw.referenced, "redundancy", "model")?;
        let raw = &raw.value;
        let preempt = raw.preempt.as_ref().is_none_or(|p| p.value);
        match model.value {
            RawModel::ActiveStandby => {
                if let Some(active) = &raw.active
                    && active.value != 1
                {
                    self.invalid(
                        active.referenced,
                        format!("active-standby has one active element, not {}", active.value),
                        "`active: 1`, or model n+m for several active elements",
                    );
                    return None;
                }
                Some(RedundancySpec::ActiveStandby { preempt })
            }
            RawModel::NPlusM => {
                let Some(active) = &raw.active else {
                    self.invalid(
                        model.referenced,
                        "model n+m without `active`",
                        "`active: N` in redundancy, 1 <= N <= the number of elements",
                    );
                    return None;
                };
                let most = u32::try_from(elements).unwrap_or(u32::MAX).max(1);
                let active = match u32::try_from(active.value) {
                    Ok(n) if (1..=most).contains(&n) => n,
                    _ => {
                        self.out_of_range(
                            active.referenced,
                            "active",
                            active.value,
                            format!("1..={most} (the pool has {elements} elements)"),
                        );
                        return None;
                    }
                };
                Some(RedundancySpec::NPlusM { active, preempt })
            }
            RawModel::ActiveActive => {
                let mut ok = true;
                for (key, at) in [
                    ("active", raw.active.as_ref().map(|a| a.referenced)),
                    ("preempt", raw.preempt.as_ref().map(|p| p.referenced)),
                ] {
                    if let Some(at) = at {
                        self.invalid(
                            at,
                            format!(
                                "`{key}` does not apply to active-active (every healthy element is active)"
                            ),
                            format!("no `{key}` with model active-active"),
                        );
                        ok = false;
                    }
                }
                ok.then_some(RedundancySpec::ActiveActive)
            }
        }
    }

    fn health(&mut self, raw: &Spanned<RawHealth>) -> Option<HealthSpec> {
        let at = raw.referenced;
        let raw = &raw.value;
        let kind = self.required(raw.check.as_ref(), at, "health", "check");
        let check = kind.and_then(|kind| self.check(raw, kind));
        let interval = self
            .required(raw.interval.as_ref(), at, "health", "interval")
            .and_then(|interval| self.duration(interval, "interval", PROBE_MIN, PROBE_MAX));
        let timeout = self
            .required(raw.timeout.as_ref(), at, "health", "timeout")
            .and_then(|timeout| self.duration(timeout, "timeout", PROBE_MIN, PROBE_MAX));
        let rise = self
            .required(raw.rise.as_ref(), at, "health", "rise")
            .and_then(|rise| self.int(rise, "rise", 1, COUNT_MAX));
        let fall = self
            .required(raw.fall.as_ref(), at, "health", "fall")
            .and_then(|fall| self.int(fall, "fall", 1, COUNT_MAX));
        Some(HealthSpec {
            check: check?,
            interval: interval?,
            timeout: timeout?,
            rise: rise?,
            fall: fall?,
        })
    }

    fn heartbeat(&mut self, raw: &Spanned<RawHeartbeat>) -> Option<HeartbeatSpec> {
        let raw = &raw.value;
        let interval = match &raw.interval {
            Some(interval) => self.duration(interval, "heartbeat interval", PROBE_MIN, PROBE_MAX),
            None => Some(HeartbeatSpec::DEFAULT.interval),
        };
        let misses = match &raw.misses {
            Some(misses) => self.int(misses, "heartbeat misses", 1, COUNT_MAX),
            None => Some(HeartbeatSpec::DEFAULT.misses),
        };
        Some(HeartbeatSpec {
            interval: interval?,
            misses: misses?,
        })
    }

    fn registration(&mut self, raw: &Spanned<RawRegistration>) -> Option<RegistrationSpec> {
        let raw = &raw.value;
        let max_priority = match &raw.max_priority {
            Some(max) => self.int(max, "registration max_priority", 0, i64::from(u32::MAX)),
            None => Some(RegistrationSpec::DEFAULT.max_priority),
        };
        let max_weight = match &raw.max_weight {
            Some(max) => self.int(max, "registration max_weight", 1, WEIGHT_MAX),
            None => Some(RegistrationSpec::DEFAULT.max_weight),
        };
        Some(RegistrationSpec {
            max_priority: max_priority?,
            max_weight: max_weight?,
        })
    }

    /// The keys that depend on the kind of check.
    fn check(&mut self, raw: &RawHealth, kind: &Spanned<RawCheck>) -> Option<CheckSpec> {
        let allowed = check_keys(kind.value);
        let mut ok = true;
        for (key, at) in [
            ("port", raw.port.as_ref().map(|v| v.referenced)),
            ("path", raw.path.as_ref().map(|v| v.referenced)),
            ("expect_status", raw.expect_status.as_ref().map(|v| v.referenced)),
            ("payload", raw.payload.as_ref().map(|v| v.referenced)),
            ("expect", raw.expect.as_ref().map(|v| v.referenced)),
            ("command", raw.command.as_ref().map(|v| v.referenced)),
        ] {
            if let Some(at) = at
                && !allowed.contains(&key)
            {
                self.invalid(
                    at,
                    format!("`{key}` does not apply to {}", CheckName(kind.value)),
                    format!(
                        "only {} with check: {}",
                        backquoted(allowed),
                        check_name(kind.value)
                    ),
                );
                ok = false;
            }
        }

        if kind.value == RawCheck::Exec {
            let command = self.command(raw, kind);
            return ok.then_some(CheckSpec::Exec { command: command? });
        }
        let port = if let Some(port) = &raw.port {
            self.int(port, "port", 1, i64::from(u16::MAX))
        } else {
            self.missing(kind, "port", "`port: 1..=65535` in health");
            None
        };
        let check = match kind.value {
            RawCheck::Tcp => CheckSpec::Tcp { port: port? },
            RawCheck::Http => {
                let path = match &raw.path {
                    Some(path) => self.http_path(path),
                    None => Some(DEFAULT_HTTP_PATH.to_owned()),
                };
                let expect_status = match &raw.expect_status {
                    Some(status) => self.int(status, "expect_status", 100, 599),
                    None => Some(DEFAULT_HTTP_STATUS),
                };
                CheckSpec::Http {
                    port: port?,
                    path: path?,
                    expect_status: expect_status?,
                }
            }
            RawCheck::Udp => {
                let payload = if let Some(payload) = &raw.payload {
                    self.bytes(payload, "payload")
                } else {
                    self.missing(kind, "payload", "`payload: \"...\"` in health");
                    None
                };
                let expect = match &raw.expect {
                    Some(expect) => self.bytes(expect, "expect").map(Some),
                    None => Some(None),
                };
                CheckSpec::Udp {
                    port: port?,
                    payload: payload?,
                    expect: expect?,
                }
            }
            RawCheck::Exec => unreachable!("returned above"),
        };
        ok.then_some(check)
    }

    fn command(&mut self, raw: &RawHealth, kind: &Spanned<RawCheck>) -> Option<Vec<String>> {
        let Some(command) = &raw.command else {
            self.missing(kind, "command", "`command: [program, args...]` in health");
            return None;
        };
        let mut ok = match command.value.first() {
            None => {
                self.invalid(command.referenced, "empty command", "a program and its arguments");
                false
            }
            Some(program) if program.value.is_empty() => {
                self.invalid(program.referenced, "empty program name", "a program to run");
                false
            }
            Some(_) => true,
        };
        for word in &command.value {
            if word.value.contains('\0') {
                self.invalid(
                    word.referenced,
                    "NUL character in the command",
                    "text without NUL",
                );
                ok = false;
            }
        }
        ok.then(|| command.value.iter().map(|w| w.value.clone()).collect())
    }

    fn budget(
        &mut self,
        raw: &Spanned<RawBudget>,
        health: Option<&HealthSpec>,
        pool: &str,
    ) -> Option<Budget> {
        let positive = Duration::from_nanos(1);
        let detect = self.required(raw.value.detect.as_ref(), raw.referenced, "budget", "detect");
        let switch = self
            .required(raw.value.switch.as_ref(), raw.referenced, "budget", "switch")
            .and_then(|switch| self.duration(switch, "budget.switch", positive, Duration::MAX));
        let detect = detect.and_then(|detect| {
            let budget = self.duration(detect, "budget.detect", positive, Duration::MAX)?;
            let worst = health?.worst_detection();
            if worst > budget {
                self.errors.push(ConfigError::Budget {
                    path: self.path.to_owned(),
                    position: position(detect.referenced),
                    pool: sanitize(pool),
                    worst,
                    budget,
                });
                return None;
            }
            Some(budget)
        });
        Some(Budget {
            detect: detect?,
            switch: switch?,
        })
    }

    fn elements(
        &mut self,
        raw: &Spanned<Vec<Spanned<RawElement>>>,
        vip: Option<IpAddr>,
    ) -> Option<Vec<ElementSpec>> {
        if raw.value.is_empty() {
            self.invalid(raw.referenced, "no element", "at least one element");
            return None;
        }
        if let Some(extra) = raw.value.get(maps::MAX_ELEMENTS as usize) {
            self.invalid(
                extra.referenced,
                format!(
                    "element number {} of the pool, one too many",
                    maps::MAX_ELEMENTS + 1
                ),
                format!("at most {} elements per pool", maps::MAX_ELEMENTS),
            );
        }
        let mut names = HashMap::new();
        let mut addresses = HashMap::new();
        let mut elements = Vec::with_capacity(raw.value.len());
        let mut ok = true;
        for element in &raw.value {
            if let Some(name) = &element.value.name {
                ok &= self.unique(
                    &mut names,
                    name.value.as_str(),
                    name,
                    || format!("element name `{}`", sanitize(&name.value)),
                    "a unique element name within the pool",
                );
            }
            match self.element(element, vip, Origin::File) {
                Some(spec) => {
                    if let Some(address) = &element.value.address {
                        ok &= self.unique(
                            &mut addresses,
                            spec.address,
                            address,
                            || format!("address {}", spec.address),
                            "a distinct address for each element of the pool",
                        );
                    }
                    elements.push(spec);
                }
                None => ok = false,
            }
        }
        ok.then_some(elements)
    }

    fn element(
        &mut self,
        raw: &Spanned<RawElement>,
        vip: Option<IpAddr>,
        origin: Origin,
    ) -> Option<ElementSpec> {
        let at = raw.referenced;
        let raw = &raw.value;
        let name = self.required(raw.name.as_ref(), at, "this element", "name");
        let name_ok = name.is_some_and(|name| self.name(name, "element name"));
        let address = self
            .required(raw.address.as_ref(), at, "this element", "address")
            .and_then(|address| Some((address, self.address(address, "element address")?)))
            .and_then(|(spanned, address)| self.element_address(spanned, address, vip));
        let priority = match &raw.priority {
            Some(priority) => self.int(priority, "priority", 0, i64::from(u32::MAX)),
            None => Some(DEFAULT_PRIORITY),
        };
        let weight = match &raw.weight {
            Some(weight) => self.int(weight, "weight", 1, WEIGHT_MAX),
            None => Some(DEFAULT_WEIGHT),
        };
        let failure_domains = match &raw.failure_domains {
            Some(domains) => self.domains(domains),
            None => Some(BTreeMap::new()),
        };
        let srlg = match &raw.srlg {
            Some(srlg) => self.srlg(srlg),
            None => Some(Vec::new()),
        };
        let site = match &raw.site {
            Some(site) => self.site(site).map(Some),
            None => Some(None),
        };
        let mac = match &raw.mac {
            Some(mac) => self.mac(mac).map(Some),
            None => Some(None),
        };
        let interface = match &raw.interface {
            Some(interface) => self.ifname(interface).then(|| Some(interface.value.clone())),
            None => Some(None),
        };
        let heartbeat_paths = match &raw.heartbeat_paths {
            Some(paths) => self.heartbeat_paths(paths, address, origin),
            None => Some(Vec::new()),
        };
        let vxlan_mac = match &raw.vxlan_mac {
            Some(mac) => self.mac(mac).map(Some),
            None => Some(None),
        };
        if !name_ok {
            return None;
        }
        Some(ElementSpec {
            name: name?.value.clone(),
            address: address?,
            priority: priority?,
            weight: weight?,
            failure_domains: failure_domains?,
            srlg: srlg?,
            site: site?,
            mac: mac?,
            interface: interface?,
            heartbeat_paths: heartbeat_paths?,
            vxlan_mac: vxlan_mac?,
            origin: Origin::File,
        })
    }

    /// A self-registered element's `heartbeat_paths`: distinct addresses of its address's
    /// family, at most [`heartbeat::MAX_PATHS`](crate::heartbeat::MAX_PATHS). Others send no
    /// heartbeats.
    fn heartbeat_paths(
        &mut self,
        raw: &Spanned<Vec<Spanned<String>>>,
        address: Option<IpAddr>,
        origin: Origin,
    ) -> Option<Vec<IpAddr>> {
        use crate::heartbeat::MAX_PATHS;
        if origin != Origin::Agent {
            self.invalid(
                raw.referenced,
                "heartbeat_paths of an element that does not register itself".to_owned(),
                "no heartbeat_paths: they are for elements that send heartbeats (`vnfpool agent` sets them from its `paths`)",
            );
            return None;
        }
        if raw.value.is_empty() || raw.value.len() > MAX_PATHS {
            self.invalid(
                raw.referenced,
                format!("{} heartbeat paths", raw.value.len()),
                format!("1..={MAX_PATHS} addresses"),
            );
            return None;
        }
        let mut paths = Vec::with_capacity(raw.value.len());
        let mut ok = true;
        for path in &raw.value {
            let Some(ip) = self.address(path, "heartbeat path") else {
                ok = false;
                continue;
            };
            if address.is_some_and(|a| a.is_ipv4() != ip.is_ipv4()) {
                self.invalid(
                    path.referenced,
                    format!("heartbeat path {ip} is not of the element address's family"),
                    "an address of the same family as the element's",
                );
                ok = false;
            } else if paths.contains(&ip) {
                self.invalid(
                    path.referenced,
                    format!("heartbeat path {ip} twice"),
                    "each path once",
                );
                ok = false;
            } else {
                paths.push(ip);
            }
        }
        ok.then_some(paths)
    }

    /// What only a self-registered element is held to: the daemon finds its MAC and
    /// interface itself (a caller naming them could steer the pool's traffic anywhere, and
    /// fill `VNF_TX_PORTS`), and the pool caps its priority and weight.
    fn registered(&mut self, raw: &RawElement, caps: RegistrationSpec) {
        for (key, at) in [
            ("mac", raw.mac.as_ref().map(|v| v.referenced)),
            ("interface", raw.interface.as_ref().map(|v| v.referenced)),
        ] {
            if let Some(at) = at {
                self.invalid(
                    at,
                    format!("`{key}` of a self-registered element is the daemon's to find"),
                    "no mac or interface: the daemon resolves them from its routing and neighbour tables",
                );
            }
        }
        if let Some(priority) = &raw.priority
            && priority.value > i64::from(caps.max_priority)
        {
            let expected = format!(
                "at most {} (the pool's registration.max_priority)",
                caps.max_priority
            );
            self.out_of_range(priority.referenced, "priority", priority.value, expected);
        }
        if let Some(weight) = &raw.weight
            && weight.value > i64::from(caps.max_weight)
        {
            let expected = format!("at most {} (the pool's registration.max_weight)", caps.max_weight);
            self.out_of_range(weight.referenced, "weight", weight.value, expected);
        }
    }

    /// An element's address, against the pool's VIP (when that one is valid).
    fn element_address(
        &mut self,
        raw: &Spanned<String>,
        address: IpAddr,
        vip: Option<IpAddr>,
    ) -> Option<IpAddr> {
        let Some(vip) = vip else {
            return Some(address);
        };
        if address.is_ipv4() != vip.is_ipv4() {
            self.invalid(
                raw.referenced,
                format!(
                    "element address {address} is {} but the VIP {vip} is {}",
                    family(address),
                    family(vip)
                ),
                format!("an {} address, like the VIP", family(vip)),
            );
            return None;
        }
        if address == vip {
            self.invalid(
                raw.referenced,
                format!("element address {address} is the VIP"),
                "the element's own address",
            );
            return None;
        }
        Some(address)
    }

    fn domains(&mut self, raw: &Spanned<DomainMap>) -> Option<BTreeMap<String, String>> {
        let entries = self.entries(
            raw,
            "failure_domains",
            "a mapping of failure-domain kind to string value, like { host: h1, rack: r1 }",
        )?;
        if entries.len() > ELEMENT_LIST_MAX {
            self.invalid(
                raw.referenced,
                format!("{} failure-domain kinds", entries.len()),
                format!("at most {ELEMENT_LIST_MAX}"),
            );
            return None;
        }
        let mut ok = true;
        let mut domains = BTreeMap::new();
        for (kind, value) in entries {
            ok &= self.name(kind, "failure-domain kind");
            match self.text(value, || format!("failure domain `{}`", sanitize(&kind.value))) {
                Some(value) => {
                    domains.insert(kind.value.clone(), value);
                }
                None => ok = false,
            }
        }
        ok.then_some(domains)
    }

    /// An element's `srlg`: sorted, each once.
    fn srlg(&mut self, raw: &Spanned<Vec<Spanned<Text>>>) -> Option<Vec<String>> {
        if raw.value.len() > ELEMENT_LIST_MAX {
            self.invalid(
                raw.referenced,
                format!("{} srlg entries", raw.value.len()),
                format!("at most {ELEMENT_LIST_MAX}"),
            );
            return None;
        }
        let mut groups = Vec::with_capacity(raw.value.len());
        let mut ok = true;
        for group in &raw.value {
            match self.text(group, || "srlg entry".to_owned()) {
                Some(group) => groups.push(group),
                None => ok = false,
            }
        }
        if !ok {
            return None;
        }
        groups.sort_unstable();
        groups.dedup();
        Some(groups)
    }

    /// An element's `site`, against the topology.
    fn site(&mut self, raw: &Spanned<String>) -> Option<String> {
        let site = &raw.value;
        match &self.sites {
            Sites::Known(sites) if sites.contains(site) => Some(site.clone()),
            Sites::Unknown => Some(site.clone()),
            Sites::Known(sites) => {
                let expected = format!("a site of placement.topology: {}", listing(sites));
                self.invalid(
                    raw.referenced,
                    format!("unknown site `{}`", sanitize(site)),
                    expected,
                );
                None
            }
            Sites::NoTopology => {
                self.invalid(
                    raw.referenced,
                    format!(
                        "unknown site `{}`: there is no placement.topology",
                        sanitize(site)
                    ),
                    "a site of placement.topology, or no `site`",
                );
                None
            }
        }
    }
}

// === impl Checker: placement ===

impl Checker<'_> {
    /// The `placement:` section; also sets the sites elements may name.
    fn placement(&mut self, raw: &Spanned<RawPlacement>, read: ReadFile<'_>) -> Option<PlacementSpec> {
        let raw = &raw.value;
        let weights = match &raw.weights {
            Some(weights) => self.weights(weights),
            None => Some(BTreeMap::new()),
        };
        let costs = match &raw.topology {
            Some(topology) => self.topology(topology, read),
            None => Some(BTreeMap::new()),
        };
        Some(PlacementSpec {
            weights: weights?,
            costs: costs?,
        })
    }

    fn weights(&mut self, raw: &Spanned<WeightMap>) -> Option<BTreeMap<String, u32>> {
        let entries = self.entries(
            raw,
            "placement.weights",
            &format!(
                "a mapping of failure-domain kind or `srlg` to weight 0..={PLACEMENT_MAX}, like {{ host: 100, srlg: 50 }}"
            ),
        )?;
        let mut ok = true;
        let mut weights = BTreeMap::new();
        for (kind, weight) in entries {
            if !is_name(&kind.value) {
                self.invalid(
                    kind.referenced,
                    format!("weight kind `{}` is not a valid name", sanitize(&kind.value)),
                    format!("a failure-domain kind ({NAME_RULE}) or `srlg`"),
                );
                ok = false;
            }
            match self.int(weight, "placement weight", 0, PLACEMENT_MAX) {
                Some(weight) => {
                    weights.insert(kind.value.clone(), weight);
                }
                None => ok = false,
            }
        }
        ok.then_some(weights)
    }

    /// `placement.topology`, written in place or read from the file it names.
    fn topology(
        &mut self,
        raw: &Spanned<RawTopology>,
        read: ReadFile<'_>,
    ) -> Option<BTreeMap<String, BTreeMap<String, u32>>> {
        match &raw.value {
            RawTopology::Inline(entries) => {
                self.sites = Sites::Known(site_names(entries));
                self.costs(entries)
            }
            RawTopology::File(file) => {
                self.sites = Sites::Unknown;
                let (map, file) = self.topology_file(file, raw.referenced, read)?;
                // Its errors name the topology file.
                let mut check = Checker::new(&file);
                let entries = check.entries(&map, "the topology file", TOPOLOGY_RULE);
                let costs = entries.and_then(|entries| {
                    self.sites = Sites::Known(site_names(entries));
                    check.costs(entries)
                });
                self.errors.append(&mut check.errors);
                costs
            }
            RawTopology::Wrong(wrong) => {
                self.sites = Sites::Unknown;
                self.invalid(
                    raw.referenced,
                    format!("placement.topology is {wrong}, not a mapping or a file path"),
                    format!("{TOPOLOGY_RULE}, or the path of a file holding one"),
                );
                None
            }
        }
    }

    /// Reads and parses the topology file `written` (as given at `at`); its syntax errors name it.
    fn topology_file(
        &mut self,
        written: &str,
        at: Location,
        read: ReadFile<'_>,
    ) -> Option<(Spanned<CostMap>, PathBuf)> {
        if written.trim().is_empty() {
            self.invalid(
                at,
                "empty topology file path",
                format!("{TOPOLOGY_RULE}, or the path of a file holding one"),
            );
            return None;
        }
        // Relative to the configuration's directory (`join` keeps an absolute path as it is).
        let file = match self.path.parent() {
            Some(dir) => dir.join(written),
            None => PathBuf::from(written),
        };
        let text = match read(&file) {
            Ok(text) => text,
            Err(source) => {
                self.errors.push(ConfigError::ReadTopology {
                    path: self.path.to_owned(),
                    position: position(at),
                    file,
                    source,
                });
                return None;
            }
        };
        match serde_saphyr::from_str::<Option<Spanned<CostMap>>>(&text) {
            Ok(Some(map)) => Some((map, file)),
            Ok(None) => {
                self.errors.push(ConfigError::Invalid {
                    path: file,
                    position: Position { line: 1, column: 1 },
                    what: "no topology".to_owned(),
                    expected: TOPOLOGY_RULE.to_owned(),
                });
                None
            }
            Err(err) => {
                self.errors.push(from_yaml(&err, &file, TOPOLOGY_RULE));
                None
            }
        }
    }

    /// A topology's costs: every site a name, every cost 0..=1,000,000 to a site of the map.
    fn costs(&mut self, raw: &Entries<Spanned<CostRow>>) -> Option<BTreeMap<String, BTreeMap<String, u32>>> {
        let sites = site_names(raw);
        let mut ok = true;
        let mut costs = BTreeMap::new();
        for (from, row) in raw {
            ok &= self.name(from, "site name");
            let Some(row) = self.entries(
                row,
                &format!("site `{}`", sanitize(&from.value)),
                "its costs: a mapping of site to cost, like { site-b: 2 }",
            ) else {
                ok = false;
                continue;
            };
            let mut row_costs = BTreeMap::new();
            for (to, cost) in row {
                if !sites.contains(&to.value) {
                    self.invalid(
                        to.referenced,
                        format!(
                            "cost from `{}` to unknown site `{}`",
                            sanitize(&from.value),
                            sanitize(&to.value)
                        ),
                        format!("a site that is a key of the topology: {}", listing(&sites)),
                    );
                    ok = false;
                }
                if cost.value < 0 {
                    self.invalid(
                        cost.referenced,
                        format!(
                            "negative cost {} from `{}` to `{}`",
                            cost.value,
                            sanitize(&from.value),
                            sanitize(&to.value)
                        ),
                        format!("a cost 0..={PLACEMENT_MAX}"),
                    );
                    ok = false;
                    continue;
                }
                match self.int(cost, "cost", 0, PLACEMENT_MAX) {
                    Some(cost) => {
                        row_costs.insert(to.value.clone(), cost);
                    }
                    None => ok = false,
                }
            }
            costs.insert(from.value.clone(), row_costs);
        }
        ok.then_some(costs)
    }
}

// === impl Checker: single values ===

impl Checker<'_> {
    fn invalid(&mut self, at: Location, what: impl Into<String>, expected: impl Into<String>) {
        self.errors.push(ConfigError::Invalid {
            path: self.path.to_owned(),
            position: position(at),
            what: what.into(),
            expected: expected.into(),
        });
    }

    fn out_of_range(&mut self, at: Location, what: &'static str, value: impl fmt::Display, expected: String) {
        self.errors.push(ConfigError::OutOfRange {
            path: self.path.to_owned(),
            position: position(at),
            what,
            value: sanitize(&value.to_string()),
            expected,
        });
    }

    /// A key the reference calls required; its absence is reported at the mapping that lacks it.
    fn required<'r, T>(
        &mut self,
        value: Option<&'r T>,
        owner: Location,
        section: &str,
        key: &str,
    ) -> Option<&'r T> {
        if value.is_none() {
            self.invalid(
                owner,
                format!("missing key `{key}` in {section}"),
                format!("the key `{key}` in this mapping"),
            );
        }
        value
    }

    /// A key the check kind needs is absent: reported at the `check:` value.
    fn missing(&mut self, check: &Spanned<RawCheck>, key: &str, expected: &str) {
        self.invalid(
            check.referenced,
            format!("{} without `{key}`", CheckName(check.value)),
            expected,
        );
    }

    /// Records the first place of `key`; a second one is an error (and `false`).
    fn unique<K: std::hash::Hash + Eq, T>(
        &mut self,
        seen: &mut HashMap<K, Location>,
        key: K,
        at: &Spanned<T>,
        what: impl FnOnce() -> String,
        expected: &'static str,
    ) -> bool {
        let Some(&first) = seen.get(&key) else {
            seen.insert(key, at.referenced);
            return true;
        };
        self.errors.push(ConfigError::Duplicate {
            path: self.path.to_owned(),
            position: position(at.referenced),
            what: what(),
            first: position(first),
            expected,
        });
        false
    }

    /// An integer in `min..=max`, converted to `T` (which holds that whole range).
    fn int<T: TryFrom<i64>>(
        &mut self,
        raw: &Spanned<i64>,
        what: &'static str,
        min: i64,
        max: i64,
    ) -> Option<T> {
        if (min..=max).contains(&raw.value)
            && let Ok(value) = T::try_from(raw.value)
        {
            return Some(value);
        }
        self.out_of_range(raw.referenced, what, raw.value, format!("{min}..={max}"));
        None
    }

    fn duration(
        &mut self,
        raw: &Spanned<String>,
        what: &'static str,
        min: Duration,
        max: Duration,
    ) -> Option<Duration> {
        let text = raw.value.trim();
        let duration = match humantime::parse_duration(text) {
            Ok(duration) => duration,
            Err(err) => {
                self.invalid(
                    raw.referenced,
                    format!("{what} `{}` is not a duration ({err})", sanitize(text)),
                    DURATION_RULE,
                );
                return None;
            }
        };
        if duration < min || duration > max {
            let expected = if max == Duration::MAX {
                "more than 0".to_owned()
            } else {
                format!(
                    "{}..={}",
                    humantime::format_duration(min),
                    humantime::format_duration(max)
                )
            };
            self.out_of_range(raw.referenced, what, text, expected);
            return None;
        }
        Some(duration)
    }

    /// An address and port.
    fn socket_addr(&mut self, raw: &Spanned<String>, expected: &str) -> Option<std::net::SocketAddr> {
        raw.value.trim().parse().map_or_else(
            |_| {
                self.invalid(
                    raw.referenced,
                    format!("`{}` is not an address and port", sanitize(&raw.value)),
                    expected,
                );
                None
            },
            Some,
        )
    }

    fn name(&mut self, raw: &Spanned<String>, what: &str) -> bool {
        if is_name(&raw.value) {
            return true;
        }
        self.invalid(
            raw.referenced,
            format!("{what} `{}` is not a valid name", sanitize(&raw.value)),
            NAME_RULE,
        );
        false
    }

    /// A mapping's entries; a value of another shape is an error: "`what` is a list, …".
    fn entries<'m, V>(
        &mut self,
        raw: &'m Spanned<Mapping<V>>,
        what: &str,
        expected: &str,
    ) -> Option<&'m Entries<V>> {
        match &raw.value.0 {
            Ok(entries) => Some(entries),
            Err(wrong) => {
                self.invalid(
                    raw.referenced,
                    format!("{what} is {wrong}, not a mapping"),
                    expected,
                );
                None
            }
        }
    }

    /// A failure-domain value or SRLG: a string of printable text; `what` names it.
    fn text(&mut self, raw: &Spanned<Text>, what: impl FnOnce() -> String) -> Option<String> {
        let text = match &raw.value.0 {
            Ok(text) => text,
            Err(wrong) => {
                self.invalid(
                    raw.referenced,
                    format!("{} is {wrong}, not a string", what()),
                    STRING_RULE,
                );
                return None;
            }
        };
        if text.is_empty() || text.len() > DOMAIN_VALUE_MAX || text.chars().any(char::is_control) {
            self.invalid(
                raw.referenced,
                format!("{} has the value `{}`", what(), sanitize(text)),
                format!("1 to {DOMAIN_VALUE_MAX} bytes of printable text"),
            );
            return None;
        }
        Some(text.clone())
    }

    fn ifname(&mut self, raw: &Spanned<String>) -> bool {
        let name = &raw.value;
        let ok = !name.is_empty()
            && name.len() <= IFNAME_MAX
            && name != "."
            && name != ".."
            && !name
                .chars()
                .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
        if !ok {
            self.invalid(
                raw.referenced,
                format!("`{}` is not a valid interface name", sanitize(name)),
                IFNAME_RULE,
            );
        }
        ok
    }

    fn absolute(&mut self, raw: Option<&Spanned<String>>, what: &str, default: &str) -> Option<PathBuf> {
        let Some(raw) = raw else {
            return Some(PathBuf::from(default));
        };
        let path = PathBuf::from(&raw.value);
        if path.is_absolute() {
            return Some(path);
        }
        self.invalid(
            raw.referenced,
            format!("{what} `{}` is not an absolute path", sanitize(&raw.value)),
            "an absolute path",
        );
        None
    }

    /// A unicast address: something a client can send to and an element can answer from.
    fn address(&mut self, raw: &Spanned<String>, what: &str) -> Option<IpAddr> {
        let text = raw.value.trim();
        let Ok(address) = text.parse::<IpAddr>() else {
            self.invalid(
                raw.referenced,
                format!("{what} `{}` is not an IP address", sanitize(text)),
                "an IPv4 or IPv6 address, like 10.0.0.1 or 2001:db8::1",
            );
            return None;
        };
        if let IpAddr::V6(v6) = address
            && let Some(v4) = v6.to_ipv4_mapped()
        {
            // The maps store IPv4 addresses in this form, and the data plane refuses IPv6
            // packets that carry it: such an address would be an IPv4 one in disguise.
            self.invalid(
                raw.referenced,
                format!("{what} {address} is an IPv4-mapped IPv6 address"),
                format!("the IPv4 address itself ({v4}) or a native IPv6 address"),
            );
            return None;
        }
        let kind = if address.is_unspecified() {
            "unspecified"
        } else if address.is_multicast() {
            "multicast"
        } else if address.is_loopback() {
            "loopback"
        } else if matches!(address, IpAddr::V4(v4) if v4.is_broadcast()) {
            "broadcast"
        } else {
            return Some(address);
        };
        self.invalid(
            raw.referenced,
            format!("{what} {address} is a {kind} address"),
            "a unicast address",
        );
        None
    }

    fn mac(&mut self, raw: &Spanned<String>) -> Option<[u8; 6]> {
        let text = raw.value.trim();
        let problem = match parse_mac(text) {
            Some(mac) if mac == [0; 6] => "the all-zero MAC",
            Some(mac) if mac[0] & 1 == 1 => "a multicast MAC",
            Some(mac) => return Some(mac),
            None => "not a MAC",
        };
        self.invalid(
            raw.referenced,
            format!("mac `{}` is {problem}", sanitize(text)),
            "a unicast MAC like aa:bb:cc:dd:ee:ff",
        );
        None
    }

    fn http_path(&mut self, raw: &Spanned<String>) -> Option<String> {
        let path = &raw.value;
        if path.starts_with('/') && !path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Some(path.clone());
        }
        self.invalid(
            raw.referenced,
            format!("path `{}` is not an HTTP request path", sanitize(path)),
            "a path starting with `/`, without spaces",
        );
        None
    }

    fn bytes(&mut self, raw: &Spanned<String>, what: &str) -> Option<Vec<u8>> {
        if raw.value.is_empty() {
            self.invalid(raw.referenced, format!("empty {what}"), "at least one byte");
            return None;
        }
        Some(raw.value.as_bytes().to_vec())
    }
}

// === helpers ===

fn position(at: Location) -> Position {
    // Every value the checks point at comes from the parser with a position; `Spanned` loses it
    // only under `flatten` or untagged enums, which `raw` does not use.
    Position::of(at).unwrap_or(Position { line: 0, column: 0 })
}

fn is_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= NAME_MAX
        && matches!(bytes[0], b'a'..=b'z' | b'0'..=b'9')
        && bytes
            .iter()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'))
}

/// The sites of a topology: its top-level keys.
fn site_names(map: &Entries<Spanned<CostRow>>) -> BTreeSet<String> {
    map.iter().map(|(site, _)| site.value.clone()).collect()
}

/// `a, b, c`, or the first few and how many there are.
fn listing(sites: &BTreeSet<String>) -> String {
    if sites.is_empty() {
        return "(none: the topology is empty)".to_owned();
    }
    let mut text = sites
        .iter()
        .take(SITES_LISTED)
        .map(|site| format!("`{}`", sanitize(site)))
        .collect::<Vec<_>>()
        .join(", ");
    if sites.len() > SITES_LISTED {
        let _ = write!(text, ", … ({} in all)", sites.len());
    }
    text
}

fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        let part = parts.next()?;
        if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

fn ring_rule() -> String {
    format!(
        "a prime between {} and {}, e.g. {}",
        maglev::MIN_RING_SIZE,
        maglev::MAX_RING_SIZE,
        maglev::DEFAULT_RING_SIZE
    )
}

fn protocol(raw: RawProtocol) -> Protocol {
    match raw {
        RawProtocol::Tcp => Protocol::Tcp,
        RawProtocol::Udp => Protocol::Udp,
    }
}

fn family(address: IpAddr) -> &'static str {
    if address.is_ipv4() { "IPv4" } else { "IPv6" }
}

fn check_name(kind: RawCheck) -> &'static str {
    match kind {
        RawCheck::Tcp => "tcp",
        RawCheck::Http => "http",
        RawCheck::Udp => "udp",
        RawCheck::Exec => "exec",
    }
}

/// The optional keys of `health` each check takes.
fn check_keys(kind: RawCheck) -> &'static [&'static str] {
    match kind {
        RawCheck::Tcp => &["port"],
        RawCheck::Http => &["port", "path", "expect_status"],
        RawCheck::Udp => &["port", "payload", "expect"],
        RawCheck::Exec => &["command"],
    }
}

fn backquoted(keys: &[&str]) -> String {
    keys.iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// "a tcp check", "an http check", …
struct CheckName(RawCheck);

impl fmt::Display for CheckName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let article = if matches!(self.0, RawCheck::Http | RawCheck::Exec) {
            "an"
        } else {
            "a"
        };
        write!(f, "{article} {} check", check_name(self.0))
    }
}

struct ProtocolName(Protocol);

impl fmt::Display for ProtocolName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["web", "0", "a-b_c", "e1", &"x".repeat(NAME_MAX)] {
            assert!(is_name(good), "{good:?} is a name");
        }
        for bad in [
            "",
            "-a",
            "_a",
            "Web",
            "a.b",
            "a b",
            "é",
            &"x".repeat(NAME_MAX + 1),
        ] {
            assert!(!is_name(bad), "{bad:?} is not a name");
        }
    }

    #[test]
    fn macs() {
        assert_eq!(
            parse_mac("aa:bb:cc:dd:ee:ff"),
            Some([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff])
        );
        assert_eq!(parse_mac("02:00:0A:0a:01:15"), Some([2, 0, 10, 10, 1, 21]));
        for bad in [
            "",
            "aa:bb:cc:dd:ee",
            "aa:bb:cc:dd:ee:ff:00",
            "aa-bb-cc-dd-ee-ff",
            "a:bb:cc:dd:ee:ff0",
            "+a:bb:cc:dd:ee:ff",
            "gg:bb:cc:dd:ee:ff",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad:?} is not a MAC");
        }
    }
}
