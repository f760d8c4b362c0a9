//! VIP announcement for ECMP (issue #15): while this node can serve a VIP, a `blackhole` host
//! route for it sits in a dedicated kernel routing table, which the operator's BIRD 2 / FRR
//! learns and exports over BGP to the router in front of the nodes.
//!
//! Two parts: [`wanted`] decides which VIPs to announce from plain inputs (pure), and
//! [`RouteAnnouncer`] makes the table hold exactly those routes over rtnetlink. The routes
//! carry a route protocol number of their own ([`DEFAULT_PROTOCOL`]): the announcer lists,
//! adds and removes only routes with that protocol in its table, so an operator's routes in the
//! same table, and everything in other tables, are never touched.
//!
//! A sync is netlink round trips (a dump of the table, then one request per change): run the
//! announcer on a task of its own, fed the wanted set (e.g. through a `tokio::sync::watch`), not
//! on the loop that decides failovers (DESIGN invariant 7).
//!
//! Why `blackhole`: BIRD's kernel protocol ignores `proto kernel` and `local` routes of the
//! table it learns, but imports blackhole routes (checked with bird 2.0.12). The route only
//! carries the announcement: packets for the VIP are taken by the XDP program before routing,
//! and a packet that reaches the node's routing anyway (no usable element) is dropped, which
//! is what a withdrawn VIP would get too.

use std::{
    collections::{BTreeMap, BTreeSet},
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use futures_util::TryStreamExt as _;
use rtnetlink::{
    Handle, RouteMessageBuilder,
    packet_core::ErrorMessage,
    packet_route::{
        AddressFamily,
        route::{
            RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
        },
    },
    sys::AsyncSocket as _,
};

use crate::health::link::AbortOnDrop;

/// The routing table the announcer writes unless told otherwise.
pub const DEFAULT_TABLE: u32 = 100;

/// The route protocol number of vnfpool's routes unless told otherwise (`ip route … proto
/// 201`): listed neither in Linux's `rtnetlink.h` nor in iproute2's `rt_protos`. An operator
/// may name it in `/etc/iproute2/rt_protos.d/vnfpool.conf` (`201 vnfpool`).
pub const DEFAULT_PROTOCOL: u8 = 201;

/// Protocol numbers up to `RTPROT_STATIC` (4) are the kernel's own or an administrator's
/// (`ip route add` writes `boot`, 3). Protocol 0 would even be worse: a delete request with
/// protocol 0 matches a route of any protocol.
const MAX_RESERVED_PROTOCOL: u8 = 4;

/// `RT_TABLE_UNSPEC`, `RT_TABLE_DEFAULT`, `RT_TABLE_MAIN`, `RT_TABLE_LOCAL`: not a dedicated
/// table.
const RESERVED_TABLES: [u32; 4] = [0, 253, 254, 255];

// === the decision (pure) ===

/// What the node knows about itself when it decides what to announce.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeState {
    /// The XDP program is attached and the maps are live on this node.
    pub dataplane_up: bool,
    /// The node is a member of the cluster (holds its membership lease).
    pub member: bool,
}

/// One pool, as far as announcing goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolReach {
    /// The pool's virtual address.
    pub vip: IpAddr,
    /// The pool has at least one element that can take new flows.
    pub usable: bool,
}

/// The VIPs this node should announce: none unless its data plane is up and it is a member;
/// otherwise every VIP with at least one pool that has a usable element. Several pools may
/// share a VIP (other ports or protocol): the VIP stays announced while any of them is usable,
/// since the route cannot tell the pools apart.
#[must_use]
pub fn wanted(node: NodeState, pools: impl IntoIterator<Item = PoolReach>) -> BTreeSet<IpAddr> {
    if !(node.dataplane_up && node.member) {
        return BTreeSet::new();
    }
    pools
        .into_iter()
        .filter(|pool| pool.usable)
        .map(|pool| pool.vip)
        .collect()
}

/// The prefix length of a host route for `vip`: 32 for IPv4, 128 for IPv6.
#[must_use]
pub fn host_prefix_len(vip: &IpAddr) -> u8 {
    match vip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// What [`RouteAnnouncer::sync`] changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// VIPs whose route was added.
    pub added: Vec<IpAddr>,
    /// VIPs whose route was removed.
    pub removed: Vec<IpAddr>,
    /// Other routes of ours in the table, removed, as `prefix/len`: not a blackhole host route,
    /// or a second route for an announced VIP (another metric); left by an older version, or
    /// added by hand with our protocol.
    pub strays: Vec<(IpAddr, u8)>,
}

impl Changes {
    /// Whether nothing changed.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.strays.is_empty()
    }
}

/// The routes to add (wanted, not present) and to remove (present, not wanted).
fn delta(present: &BTreeSet<IpAddr>, wanted: &BTreeSet<IpAddr>) -> (Vec<IpAddr>, Vec<IpAddr>) {
    (
        wanted.difference(present).copied().collect(),
        present.difference(wanted).copied().collect(),
    )
}

// === errors ===

#[derive(Debug, thiserror::Error)]
pub enum AnnounceError {
    #[error("table {table} is not a dedicated routing table (0, 253, 254 and 255 are the kernel's)")]
    ReservedTable { table: u32 },
    #[error("route protocol {protocol} is reserved (0 to 4 are the kernel's and the administrator's)")]
    ReservedProtocol { protocol: u8 },
    #[error("opening a netlink route socket")]
    Socket {
        #[source]
        source: io::Error,
    },
    #[error("listing the routes of table {table}")]
    List {
        table: u32,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("adding blackhole {vip}/{} to table {table} (proto {protocol})", host_prefix_len(.vip))]
    Add {
        table: u32,
        protocol: u8,
        vip: IpAddr,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("removing {prefix}/{len} from table {table} (proto {protocol})")]
    Remove {
        table: u32,
        protocol: u8,
        prefix: IpAddr,
        len: u8,
        #[source]
        source: rtnetlink::Error,
    },
}

pub type Result<T, E = AnnounceError> = std::result::Result<T, E>;

// === impl RouteAnnouncer ===

/// Keeps one routing table's routes of one protocol equal to a set of VIPs.
///
/// Its netlink socket belongs to the network namespace of the thread that made it, and its
/// connection runs as a task on the tokio runtime it was made on (until the announcer is
/// dropped). Every [`sync`](Self::sync) reads the table again, so it also repairs routes
/// removed or added behind its back.
pub struct RouteAnnouncer {
    table: u32,
    protocol: u8,
    handle: Handle,
    _connection: AbortOnDrop,
}

/// One route of ours as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Ours {
    prefix: IpAddr,
    len: u8,
    kind: RouteType,
    scope: RouteScope,
    priority: Option<u32>,
}

impl Ours {
    /// A blackhole host route: what [`RouteAnnouncer`] writes.
    fn announces(&self) -> Option<IpAddr> {
        (self.kind == RouteType::BlackHole && self.len == host_prefix_len(&self.prefix))
            .then_some(self.prefix)
    }
}

impl RouteAnnouncer {
    /// An announcer of blackhole routes with route protocol `protocol` in table `table`, in
    /// the calling thread's network namespace; needs a tokio runtime.
    pub fn new(table: u32, protocol: u8) -> Result<Self> {
        if RESERVED_TABLES.contains(&table) {
            return Err(AnnounceError::ReservedTable { table });
        }
        if protocol <= MAX_RESERVED_PROTOCOL {
            return Err(AnnounceError::ReservedProtocol { protocol });
        }
        let (mut connection, handle, _) =
            rtnetlink::new_connection().map_err(|source| AnnounceError::Socket { source })?;
        // With strict checking the kernel filters a route dump by table and protocol, instead of
        // sending every route of the host (a full BGP table, on some nodes). Kernels before 4.20
        // lack the option: there the dump has every route and `list` filters them all.
        let _ = connection
            .socket_mut()
            .socket_ref()
            .set_netlink_get_strict_chk(true);
        Ok(Self {
            table,
            protocol,
            handle,
            _connection: AbortOnDrop(tokio::spawn(connection)),
        })
    }

    /// The routing table it writes.
    #[must_use]
    pub fn table(&self) -> u32 {
        self.table
    }

    /// The route protocol number of its routes.
    #[must_use]
    pub fn protocol(&self) -> u8 {
        self.protocol
    }

    /// The VIPs announced now: our blackhole host routes in the table.
    pub async fn announced(&self) -> Result<BTreeSet<IpAddr>> {
        Ok(self.list().await?.iter().filter_map(Ours::announces).collect())
    }

    /// Makes our routes in the table exactly one blackhole host route per VIP of `wanted`:
    /// adds the missing ones, removes those not wanted and any other route of our protocol
    /// there. Idempotent: a second call with the same set changes nothing.
    ///
    /// Every change is tried even when one fails (a route that cannot be withdrawn must not
    /// keep the others announced); the error is then the first failure. A route for the same
    /// prefix that is not ours makes the add fail (`EEXIST`) rather than being replaced.
    pub async fn sync(&mut self, wanted: &BTreeSet<IpAddr>) -> Result<Changes> {
        let mut present = BTreeMap::new();
        let mut strays = Vec::new();
        for route in self.list().await? {
            match route.announces() {
                // A second route for the same VIP (another metric) is a stray too.
                Some(vip) if !present.contains_key(&vip) => {
                    present.insert(vip, route);
                }
                _ => strays.push(route),
            }
        }
        let (add, remove) = delta(&present.keys().copied().collect(), wanted);

        let mut changes = Changes::default();
        let mut first_error = None;
        // Withdrawals first: they are the urgent half when the node is losing a VIP.
        for route in &strays {
            match self.remove(route).await {
                Ok(()) => changes.strays.push((route.prefix, route.len)),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        for vip in remove {
            match self.remove(&present[&vip]).await {
                Ok(()) => changes.removed.push(vip),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        for vip in add {
            match self.add(vip).await {
                Ok(()) => changes.added.push(vip),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(changes),
        }
    }

    /// Removes every route of ours from the table (shutdown, lost membership).
    pub async fn withdraw_all(&mut self) -> Result<Changes> {
        self.sync(&BTreeSet::new()).await
    }

    /// Our routes in the table, of both families.
    async fn list(&self) -> Result<Vec<Ours>> {
        let mut ours = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            // A dump filter (strict checking): every header field zero but these.
            let mut request = RouteMessage::default();
            request.header.address_family = family;
            request.header.protocol = RouteProtocol::from(self.protocol);
            request.header.table = RouteHeader::RT_TABLE_UNSPEC;
            request.attributes.push(RouteAttribute::Table(self.table));
            // The kernel ends a dump of a table that does not exist yet (no route was ever in
            // it) with ENOENT in its NLMSG_DONE, which rtnetlink does not pass on: that reads as
            // an empty table, as it should. Without strict checking every table comes, so the
            // table and protocol are checked here as well.
            let mut dump = self.handle.route().get(request).execute();
            while let Some(route) = dump.try_next().await.map_err(|source| AnnounceError::List {
                table: self.table,
                source,
            })? {
                if table_of(&route) == self.table && u8::from(route.header.protocol) == self.protocol {
                    ours.push(parse(&route));
                }
            }
        }
        Ok(ours)
    }

    async fn add(&self, vip: IpAddr) -> Result<()> {
        let error = |source| AnnounceError::Add {
            table: self.table,
            protocol: self.protocol,
            vip,
            source,
        };
        let message = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(vip, host_prefix_len(&vip))
            .expect("a host prefix length fits its address family")
            .table_id(self.table)
            .protocol(RouteProtocol::from(self.protocol))
            .kind(RouteType::BlackHole)
            .build();
        self.handle.route().add(message).execute().await.map_err(error)
    }

    /// Removes one route of ours; one that is already gone counts as removed.
    async fn remove(&self, route: &Ours) -> Result<()> {
        let error = |source| AnnounceError::Remove {
            table: self.table,
            protocol: self.protocol,
            prefix: route.prefix,
            len: route.len,
            source,
        };
        let mut builder = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(route.prefix, route.len)
            .expect("a listed route's prefix length fits its address family")
            .table_id(self.table)
            // The protocol in the request makes the kernel delete only a route with it.
            .protocol(RouteProtocol::from(self.protocol))
            .kind(route.kind)
            .scope(route.scope);
        if let Some(priority) = route.priority {
            builder = builder.priority(priority);
        }
        match self.handle.route().del(builder.build()).execute().await {
            Err(rtnetlink::Error::NetlinkError(ErrorMessage { code: Some(code), .. }))
                if code.get().abs() == rustix::io::Errno::SRCH.raw_os_error() =>
            {
                Ok(())
            }
            other => other.map_err(error),
        }
    }
}

/// The table of a listed route: `RTA_TABLE` when present (tables above 255 have only that),
/// else the header's.
fn table_of(route: &RouteMessage) -> u32 {
    route
        .attributes
        .iter()
        .find_map(|attribute| match attribute {
            RouteAttribute::Table(table) => Some(*table),
            _ => None,
        })
        .unwrap_or(u32::from(route.header.table))
}

fn parse(route: &RouteMessage) -> Ours {
    let unspecified = if route.header.address_family == AddressFamily::Inet6 {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    };
    let mut ours = Ours {
        prefix: unspecified,
        len: route.header.destination_prefix_length,
        kind: route.header.kind,
        scope: route.header.scope,
        priority: None,
    };
    for attribute in &route.attributes {
        match attribute {
            RouteAttribute::Destination(RouteAddress::Inet(a)) => ours.prefix = IpAddr::V4(*a),
            RouteAttribute::Destination(RouteAddress::Inet6(a)) => ours.prefix = IpAddr::V6(*a),
            RouteAttribute::Priority(p) => ours.priority = Some(*p),
            _ => {}
        }
    }
    ours
}

#[cfg(test)]
mod tests {
    use super::*;

    const UP: NodeState = NodeState {
        dataplane_up: true,
        member: true,
    };

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    fn reach(vip: &str, usable: bool) -> PoolReach {
        PoolReach { vip: ip(vip), usable }
    }

    fn set(vips: &[&str]) -> BTreeSet<IpAddr> {
        vips.iter().map(|v| ip(v)).collect()
    }

    #[test]
    fn a_healthy_member_announces_every_vip_with_a_usable_element() {
        let pools = [
            reach("192.0.2.1", true),
            reach("192.0.2.2", false),
            reach("2001:db8::1", true),
        ];
        assert_eq!(wanted(UP, pools), set(&["192.0.2.1", "2001:db8::1"]));
    }

    #[test]
    fn nothing_is_announced_without_the_data_plane_or_the_membership() {
        let pools = [reach("192.0.2.1", true), reach("2001:db8::1", true)];
        for node in [
            NodeState {
                dataplane_up: false,
                member: true,
            },
            NodeState {
                dataplane_up: true,
                member: false,
            },
            NodeState::default(),
        ] {
            assert_eq!(wanted(node, pools), BTreeSet::new(), "{node:?}");
        }
    }

    #[test]
    fn a_vip_shared_by_pools_stays_while_any_of_them_is_usable() {
        let one_usable = [reach("192.0.2.1", false), reach("192.0.2.1", true)];
        assert_eq!(wanted(UP, one_usable), set(&["192.0.2.1"]));
        let none_usable = [reach("192.0.2.1", false), reach("192.0.2.1", false)];
        assert_eq!(wanted(UP, none_usable), BTreeSet::new());
    }

    #[test]
    fn host_prefixes_are_32_and_128_bits() {
        assert_eq!(host_prefix_len(&ip("192.0.2.1")), 32);
        assert_eq!(host_prefix_len(&ip("2001:db8::1")), 128);
        // An IPv4-mapped IPv6 address is an IPv6 route.
        assert_eq!(host_prefix_len(&ip("::ffff:192.0.2.1")), 128);
    }

    #[test]
    fn the_delta_adds_the_missing_and_removes_the_unwanted() {
        let present = set(&["192.0.2.1", "192.0.2.2"]);
        let wanted = set(&["192.0.2.2", "2001:db8::1"]);
        assert_eq!(
            delta(&present, &wanted),
            (vec![ip("2001:db8::1")], vec![ip("192.0.2.1")])
        );
        assert_eq!(
            delta(&wanted, &wanted),
            (vec![], vec![]),
            "same input, empty delta"
        );
    }

    #[test]
    fn only_blackhole_host_routes_count_as_announcements() {
        let route = |prefix: &str, len, kind| Ours {
            prefix: ip(prefix),
            len,
            kind,
            scope: RouteScope::Universe,
            priority: None,
        };
        assert_eq!(
            route("192.0.2.1", 32, RouteType::BlackHole).announces(),
            Some(ip("192.0.2.1"))
        );
        assert_eq!(
            route("2001:db8::1", 128, RouteType::BlackHole).announces(),
            Some(ip("2001:db8::1"))
        );
        assert_eq!(route("192.0.2.0", 24, RouteType::BlackHole).announces(), None);
        assert_eq!(route("192.0.2.1", 32, RouteType::Unreachable).announces(), None);
        assert_eq!(route("192.0.2.1", 32, RouteType::Unicast).announces(), None);
    }

    #[tokio::test]
    async fn reserved_tables_and_protocols_are_refused() {
        for table in RESERVED_TABLES {
            assert!(matches!(
                RouteAnnouncer::new(table, DEFAULT_PROTOCOL),
                Err(AnnounceError::ReservedTable { table: t }) if t == table
            ));
        }
        for protocol in 0..=MAX_RESERVED_PROTOCOL {
            assert!(matches!(
                RouteAnnouncer::new(DEFAULT_TABLE, protocol),
                Err(AnnounceError::ReservedProtocol { protocol: p }) if p == protocol
            ));
        }
    }

    #[test]
    fn errors_name_the_table_and_the_prefix() {
        let error = AnnounceError::Add {
            table: 100,
            protocol: DEFAULT_PROTOCOL,
            vip: ip("2001:db8::1"),
            source: rtnetlink::Error::RequestFailed,
        };
        assert_eq!(
            error.to_string(),
            "adding blackhole 2001:db8::1/128 to table 100 (proto 201)"
        );
    }
}
