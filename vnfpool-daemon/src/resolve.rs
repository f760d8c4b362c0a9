//! Where an element's frames go for L2 direct server return: its egress interface, that
//! interface's MAC (source) and the element's MAC (destination), from the kernel's routing and
//! neighbour tables over rtnetlink.
//!
//! L2 DSR rewrites only the destination MAC, so an element must be on-link: an address whose route
//! goes through a gateway is an error, not the gateway's MAC. A pool that reaches its elements
//! through a tunnel resolves them *routed*: the destination MAC is the next hop's (the route's
//! gateway, or the element itself when on-link), and the resolution also gives the outer
//! source address (the route's preferred source) and the path MTU.
//!
//! Like every netlink call, this works in the network namespace of the calling thread.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6},
    time::Duration,
};

use futures_util::TryStreamExt as _;
use rtnetlink::{
    RouteMessageBuilder,
    packet_route::{
        AddressFamily,
        neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourState},
        route::{RouteAddress, RouteAttribute, RouteType, RouteVia},
    },
};
use tokio::{
    net::UdpSocket,
    time::{self, Instant},
};

use crate::health::link::{Session, mac_of, name_of};

/// How long [`resolve`] waits for the neighbour table to learn a missing MAC.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

/// How often the neighbour table is read while waiting.
const POLL: Duration = Duration::from_millis(20);

/// The discard port (RFC 863): the datagram that triggers ARP/ND is meant to be ignored.
const DISCARD_PORT: u16 = 9;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub ifindex: u32,
    pub interface: String,
    /// The element's MAC.
    pub dst_mac: [u8; 6],
    /// The egress interface's own MAC.
    pub src_mac: [u8; 6],
    /// Routed resolutions only: the tunnel's path.
    pub path: Option<RoutePath>,
}

/// What a tunnel toward an element needs from the routing table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoutePath {
    /// This host's address toward the element: the route's preferred source.
    pub source: IpAddr,
    /// The largest IP packet the route carries: its `mtu` metric, else the egress interface's.
    pub mtu: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("opening a netlink route socket")]
    Socket {
        #[source]
        source: io::Error,
    },
    /// No route to the address (the kernel's answer, e.g. ENETUNREACH, as the source).
    #[error("no route to {address}")]
    NoRoute {
        address: IpAddr,
        #[source]
        source: Option<io::Error>,
    },
    #[error(
        "{address} is not on-link: its route goes through gateway {gateway}, and L2 direct server \
         return needs the element on a directly connected network"
    )]
    NotOnLink { address: IpAddr, gateway: IpAddr },
    #[error(
        "the route to {address} gives no source address of this host (add one to the egress \
         interface, or a `src` to the route)"
    )]
    NoSource { address: IpAddr },
    #[error("{address} routes as {route_type}, not unicast (is it an address of this host?)")]
    NotUnicast { address: IpAddr, route_type: String },
    #[error("no interface named {name:?}")]
    NoInterface { name: String },
    #[error("interface {interface} is not an Ethernet interface")]
    NoLinkAddress { interface: String },
    #[error("no MAC for {address} on {interface} in the neighbour table after {timeout:?}")]
    Unresolved {
        address: IpAddr,
        interface: String,
        timeout: Duration,
    },
    #[error("netlink {op} failed")]
    Netlink {
        op: &'static str,
        #[source]
        source: rtnetlink::Error,
    },
}

pub type Result<T, E = ResolveError> = std::result::Result<T, E>;

/// [`resolve_within`] with [`DEFAULT_TIMEOUT`].
///
/// # Errors
///
/// See [`resolve_within`].
pub async fn resolve(
    address: IpAddr,
    interface: Option<&str>,
    mac: Option<[u8; 6]>,
    routed: bool,
) -> Result<Resolved> {
    resolve_within(address, interface, mac, routed, DEFAULT_TIMEOUT).await
}

/// Resolves where frames for the element at `address` go.
///
/// The egress interface is `interface` when given, else the one of the kernel's route to
/// `address`. The destination MAC is `mac` when given, else the neighbour table's entry for
/// `address` on that interface; when there is no usable entry, one empty UDP datagram to the
/// discard port, sent from a socket bound to the interface, makes the kernel resolve it (ARP or
/// neighbour discovery), and the table is read again every 20 ms until `timeout`.
///
/// `routed` (a tunnelled pool): the route is always looked up, a gateway is allowed and its MAC
/// is the destination's, and [`Resolved::path`] gives the route's source address and MTU.
///
/// # Errors
///
/// [`ResolveError::NoRoute`], [`ResolveError::NotOnLink`] (route through a gateway, unless
/// `routed`), [`ResolveError::NoSource`] (`routed` without a source address) or
/// [`ResolveError::NotUnicast`] (e.g. an address of this host) from the route lookup;
/// [`ResolveError::NoInterface`], [`ResolveError::NoLinkAddress`];
/// [`ResolveError::Unresolved`] when the MAC is still unknown after `timeout`; socket and netlink
/// failures.
pub async fn resolve_within(
    address: IpAddr,
    interface: Option<&str>,
    mac: Option<[u8; 6]>,
    routed: bool,
    timeout: Duration,
) -> Result<Resolved> {
    let netlink = |op| move |source| ResolveError::Netlink { op, source };
    let session = Session::open().map_err(|source| ResolveError::Socket { source })?;

    let route = if routed || interface.is_none() {
        Some(route_to(&session, address).await?)
    } else {
        None
    };
    if let Some(Route {
        gateway: Some(gateway),
        ..
    }) = route
        && !routed
    {
        return Err(ResolveError::NotOnLink { address, gateway });
    }
    let link = if let Some(name) = interface {
        let link = session.link_by_name(name).await.map_err(netlink("link lookup"))?;
        link.ok_or_else(|| ResolveError::NoInterface {
            name: name.to_owned(),
        })?
    } else {
        let ifindex = route.map_or(0, |r| r.oif);
        let link = session
            .link_by_index(ifindex)
            .await
            .map_err(netlink("link lookup"))?;
        // Only if the route's interface vanished between the two lookups.
        link.ok_or(ResolveError::NoRoute {
            address,
            source: None,
        })?
    };
    let ifindex = link.header.index;
    let interface = name_of(&link).unwrap_or_default();
    let src_mac = mac_of(&link).ok_or_else(|| ResolveError::NoLinkAddress {
        interface: interface.clone(),
    })?;
    // Frames go to the next hop: the gateway when the route has one (routed only), else the
    // element itself.
    let next_hop = route.and_then(|r| r.gateway).unwrap_or(address);
    let dst_mac = match mac {
        Some(mac) => mac,
        None => neighbour(&session, next_hop, ifindex, &interface, timeout).await?,
    };
    let path = match route {
        Some(r) if routed => Some(RoutePath {
            source: r.source.ok_or(ResolveError::NoSource { address })?,
            mtu: r.mtu.or_else(|| mtu_of(&link)).unwrap_or(1500),
        }),
        _ => None,
    };
    Ok(Resolved {
        ifindex,
        interface,
        dst_mac,
        src_mac,
        path,
    })
}

/// The interface's MTU.
fn mtu_of(link: &rtnetlink::packet_route::link::LinkMessage) -> Option<u32> {
    link.attributes.iter().find_map(|attribute| match attribute {
        rtnetlink::packet_route::link::LinkAttribute::Mtu(mtu) => Some(*mtu),
        _ => None,
    })
}

/// The kernel's route to an address, as far as resolution needs it.
#[derive(Debug, Clone, Copy)]
struct Route {
    oif: u32,
    gateway: Option<IpAddr>,
    /// The preferred source address (`src`).
    source: Option<IpAddr>,
    /// The route's `mtu` metric, if it has one.
    mtu: Option<u32>,
}

/// The kernel's route to `address` (`ip route get`).
async fn route_to(session: &Session, address: IpAddr) -> Result<Route> {
    let query = match address {
        IpAddr::V4(v4) => RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(v4, 32)
            .build(),
        IpAddr::V6(v6) => RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(v6, 128)
            .build(),
    };
    let route = match session.handle.route().get(query).execute().try_next().await {
        Ok(Some(route)) => route,
        Ok(None) => {
            return Err(ResolveError::NoRoute {
                address,
                source: None,
            });
        }
        // The kernel refuses the lookup when nothing routes the address (ENETUNREACH, or the
        // error of an unreachable/prohibit/blackhole route).
        Err(rtnetlink::Error::NetlinkError(error)) => {
            return Err(ResolveError::NoRoute {
                address,
                source: Some(error.to_io()),
            });
        }
        Err(source) => {
            return Err(ResolveError::Netlink {
                op: "route lookup",
                source,
            });
        }
    };
    if route.header.kind != RouteType::Unicast {
        let route_type = format!("{:?}", route.header.kind).to_lowercase();
        return Err(ResolveError::NotUnicast { address, route_type });
    }
    let (mut oif, mut gateway, mut source, mut mtu) = (None, None, None, None);
    for attribute in &route.attributes {
        match attribute {
            RouteAttribute::Oif(index) => oif = Some(*index),
            RouteAttribute::Gateway(RouteAddress::Inet(g)) | RouteAttribute::Via(RouteVia::Inet(g)) => {
                gateway = Some(IpAddr::V4(*g));
            }
            RouteAttribute::Gateway(RouteAddress::Inet6(g)) | RouteAttribute::Via(RouteVia::Inet6(g)) => {
                gateway = Some(IpAddr::V6(*g));
            }
            RouteAttribute::PrefSource(RouteAddress::Inet(a)) => source = Some(IpAddr::V4(*a)),
            RouteAttribute::PrefSource(RouteAddress::Inet6(a)) => source = Some(IpAddr::V6(*a)),
            RouteAttribute::Metrics(metrics) => {
                mtu = metrics.iter().find_map(|m| match m {
                    rtnetlink::packet_route::route::RouteMetric::Mtu(mtu) if *mtu > 0 => Some(*mtu),
                    _ => None,
                });
            }
            _ => {}
        }
    }
    Ok(Route {
        oif: oif.ok_or(ResolveError::NoRoute {
            address,
            source: None,
        })?,
        gateway,
        source,
        mtu,
    })
}

/// Reads the neighbour table until it holds a MAC for `address` on `ifindex`, triggering
/// resolution when the entry is missing or failed.
async fn neighbour(
    session: &Session,
    address: IpAddr,
    ifindex: u32,
    interface: &str,
    timeout: Duration,
) -> Result<[u8; 6]> {
    let deadline = Instant::now() + timeout;
    loop {
        match lookup_neighbour(session, address, ifindex).await? {
            Some((state, Some(mac))) if has_valid_address(state) => return Ok(mac),
            // Resolution is under way; another datagram would only queue behind it.
            Some((NeighbourState::Incomplete, _)) => {}
            _ => trigger_resolution(address, ifindex, interface).await,
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(ResolveError::Unresolved {
                address,
                interface: interface.to_owned(),
                timeout,
            });
        }
        time::sleep_until(deadline.min(now + POLL)).await;
    }
}

/// The kernel's `NUD_VALID`: states in which the entry's link-layer address can be used.
fn has_valid_address(state: NeighbourState) -> bool {
    matches!(
        state,
        NeighbourState::Reachable
            | NeighbourState::Stale
            | NeighbourState::Delay
            | NeighbourState::Probe
            | NeighbourState::Permanent
            | NeighbourState::Noarp
    )
}

async fn lookup_neighbour(
    session: &Session,
    address: IpAddr,
    ifindex: u32,
) -> Result<Option<(NeighbourState, Option<[u8; 6]>)>> {
    let family = if address.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let wanted = match address {
        IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
        IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
    };
    let entries: Vec<_> = session
        .handle
        .neighbours()
        .get()
        .set_address_family(family)
        .execute()
        .try_collect()
        .await
        .map_err(|source| ResolveError::Netlink {
            op: "neighbour dump",
            source,
        })?;
    Ok(entries
        .into_iter()
        .filter(|entry| entry.header.ifindex == ifindex)
        .find(|entry| {
            entry
                .attributes
                .contains(&NeighbourAttribute::Destination(wanted.clone()))
        })
        .map(|entry| {
            let mac = entry.attributes.iter().find_map(|attribute| match attribute {
                NeighbourAttribute::LinkLayerAddress(mac) => <[u8; 6]>::try_from(mac.as_slice()).ok(),
                _ => None,
            });
            (entry.header.state, mac)
        }))
}

/// Sends one empty datagram to `address`'s discard port from a socket bound to `interface`, so
/// the kernel resolves the neighbour there. Best effort: a failure leaves the entry unresolved,
/// which the caller reports once its time is up.
async fn trigger_resolution(address: IpAddr, ifindex: u32, interface: &str) {
    let (local, remote): (SocketAddr, SocketAddr) = match address {
        IpAddr::V4(v4) => ((Ipv4Addr::UNSPECIFIED, 0).into(), (v4, DISCARD_PORT).into()),
        // A link-local address means nothing without its interface.
        IpAddr::V6(v6) => {
            let scope = if v6.is_unicast_link_local() { ifindex } else { 0 };
            (
                (Ipv6Addr::UNSPECIFIED, 0).into(),
                SocketAddrV6::new(v6, DISCARD_PORT, 0, scope).into(),
            )
        }
    };
    let sent = async {
        let socket = UdpSocket::bind(local).await?;
        // Bound to the interface, the datagram leaves there even when the route table would
        // send it elsewhere (the kernel then treats the destination as on-link). Without the
        // privilege to bind, the route's interface is used, which is the same one unless
        // `interface` was configured against the routes.
        if let Err(error) = socket.bind_device(Some(interface.as_bytes())) {
            tracing::debug!(interface, %error, "could not bind the resolution socket to the interface");
        }
        socket.send_to(&[], remote).await
    };
    if let Err(error) = sent.await {
        tracing::debug!(%address, interface, %error, "could not trigger neighbour resolution");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::testnet::{NetNs, unique_name};

    const HOST_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x10, 0x00, 0x01];
    const ELEMENT_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x10, 0x00, 0x02];

    fn mac_text(mac: [u8; 6]) -> String {
        mac.map(|byte| format!("{byte:02x}")).join(":")
    }

    /// The vnfpool host (`host`) and one element (`element`), each a namespace, joined by a veth
    /// pair on `10.77.0.0/24` and `fd00:77::/64`, with `10.78.0.0/24` routed through the element.
    struct Lab {
        host: NetNs,
        element: NetNs,
        host_if: String,
        element_if: String,
    }

    impl Lab {
        /// Waits until IPv6 is configured on both ends. The kernel does that (link-local
        /// address, multicast route) only once it has processed the carrier coming up, which it
        /// may defer by up to a second; until then the element drops neighbour solicitations.
        async fn ipv6_ready(&self) {
            for (ns, interface) in [(&self.host, &self.host_if), (&self.element, &self.element_if)] {
                let deadline = Instant::now() + Duration::from_secs(5);
                loop {
                    let output = tokio::process::Command::new("ip")
                        .args([
                            "-n",
                            ns.name(),
                            "-6",
                            "-o",
                            "addr",
                            "show",
                            "dev",
                            interface,
                            "scope",
                            "link",
                        ])
                        .output()
                        .await
                        .expect("running ip");
                    if !output.stdout.is_empty() {
                        break;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "no IPv6 link-local address on {interface}"
                    );
                    time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }

    fn lab() -> Lab {
        let (host, element) = (NetNs::new(), NetNs::new());
        let (host_if, element_if) = (unique_name(), unique_name());
        host.ip(&[
            "link",
            "add",
            &host_if,
            "type",
            "veth",
            "peer",
            "name",
            &element_if,
            "netns",
            element.name(),
        ]);
        // While duplicate address detection runs on the new link-local addresses, neighbour
        // discovery between the two ends does not complete; real elements are long past it.
        host.exec(&["sysctl", "-qw", &format!("net.ipv6.conf.{host_if}.accept_dad=0")]);
        element.exec(&[
            "sysctl",
            "-qw",
            &format!("net.ipv6.conf.{element_if}.accept_dad=0"),
        ]);
        host.ip(&["link", "set", "dev", &host_if, "address", &mac_text(HOST_MAC)]);
        host.ip(&["addr", "add", "10.77.0.1/24", "dev", &host_if]);
        host.ip(&["addr", "add", "fd00:77::1/64", "dev", &host_if, "nodad"]);
        host.ip(&["link", "set", &host_if, "up"]);
        element.ip(&[
            "link",
            "set",
            "dev",
            &element_if,
            "address",
            &mac_text(ELEMENT_MAC),
        ]);
        element.ip(&["addr", "add", "10.77.0.2/24", "dev", &element_if]);
        element.ip(&["addr", "add", "fd00:77::2/64", "dev", &element_if, "nodad"]);
        element.ip(&["link", "set", &element_if, "up"]);
        host.ip(&["route", "add", "10.78.0.0/24", "via", "10.77.0.2"]);
        Lab {
            host,
            element,
            host_if,
            element_if,
        }
    }

    fn addr(text: &str) -> IpAddr {
        text.parse().expect("an address literal")
    }

    #[test]
    fn resolves_on_link_elements_from_the_route_and_neighbour_tables() {
        let lab = lab();
        lab.host.run(|| async {
            lab.ipv6_ready().await;
            for element in ["10.77.0.2", "fd00:77::2"] {
                let resolved = resolve(addr(element), None, None, false)
                    .await
                    .expect("resolving the element");

                assert_eq!(resolved.interface, lab.host_if, "{element}");
                assert_eq!(resolved.src_mac, HOST_MAC, "{element}");
                assert_eq!(resolved.dst_mac, ELEMENT_MAC, "{element}");
                let by_name = Session::open()
                    .expect("netlink")
                    .link_by_name(&lab.host_if)
                    .await
                    .expect("link lookup")
                    .expect("the host interface exists");
                assert_eq!(resolved.ifindex, by_name.header.index);
            }
        });
    }

    #[test]
    fn configured_interface_and_mac_are_used_as_given() {
        let lab = lab();
        lab.host.run(|| async {
            let given = [0x02, 0, 0, 0, 0, 0x99];
            let resolved = resolve(addr("10.77.0.2"), Some(&lab.host_if), Some(given), false)
                .await
                .expect("resolving");
            assert_eq!(
                (resolved.interface.as_str(), resolved.src_mac, resolved.dst_mac),
                (lab.host_if.as_str(), HOST_MAC, given)
            );

            // An interface without a route to the address still resolves it (on-link by fiat).
            lab.host
                .ip(&["route", "del", "10.77.0.0/24", "dev", &lab.host_if]);
            let resolved = resolve(addr("10.77.0.2"), Some(&lab.host_if), None, false)
                .await
                .expect("resolving");
            assert_eq!(resolved.dst_mac, ELEMENT_MAC);
        });
    }

    #[test]
    fn element_behind_a_gateway_is_not_on_link() {
        let lab = lab();
        let error = lab
            .host
            .run(|| resolve(addr("10.78.0.9"), None, None, false))
            .expect_err("behind a gateway");
        assert!(
            matches!(error, ResolveError::NotOnLink { address, gateway }
                if address == addr("10.78.0.9") && gateway == addr("10.77.0.2")),
            "{error:?}"
        );
    }

    #[test]
    fn a_routed_element_resolves_to_its_next_hop_with_the_routes_source_and_mtu() {
        let lab = lab();
        lab.host.run(|| async {
            // Behind the gateway 10.77.0.2: its MAC, the interface's address and MTU.
            let r = resolve(addr("10.78.0.9"), None, None, true)
                .await
                .expect("routed");
            assert_eq!(
                (r.interface.as_str(), r.dst_mac),
                (lab.host_if.as_str(), ELEMENT_MAC)
            );
            assert_eq!(
                r.path,
                Some(RoutePath {
                    source: addr("10.77.0.1"),
                    mtu: 1500
                })
            );
            // A route's own `mtu` and `src` win over the interface's.
            lab.host.ip(&["addr", "add", "10.77.0.5/24", "dev", &lab.host_if]);
            lab.host.ip(&[
                "route",
                "replace",
                "10.78.0.0/24",
                "via",
                "10.77.0.2",
                "src",
                "10.77.0.5",
                "mtu",
                "1400",
            ]);
            let r = resolve(addr("10.78.0.9"), None, None, true)
                .await
                .expect("routed");
            assert_eq!(
                r.path,
                Some(RoutePath {
                    source: addr("10.77.0.5"),
                    mtu: 1400
                })
            );
            // On-link, routed: the element's own MAC.
            let r = resolve(addr("10.77.0.2"), None, None, true)
                .await
                .expect("routed, on-link");
            assert_eq!(r.dst_mac, ELEMENT_MAC);
            assert_eq!(r.path.map(|p| p.source), Some(addr("10.77.0.1")));
        });
    }

    #[test]
    fn unrouted_local_and_unknown_targets_are_errors() {
        let lab = lab();
        lab.host.run(|| async {
            let error = resolve(addr("198.51.100.7"), None, None, false).await.expect_err("no default route");
            assert!(
                matches!(&error, ResolveError::NoRoute { address, source: Some(_) } if *address == addr("198.51.100.7")),
                "{error:?}"
            );

            let error = resolve(addr("10.77.0.1"), None, None, false).await.expect_err("an address of this host");
            assert!(matches!(&error, ResolveError::NotUnicast { route_type, .. } if route_type == "local"), "{error:?}");

            let error = resolve(addr("10.77.0.2"), Some("vnfp-nonexist"), None, false).await.expect_err("no interface");
            assert!(matches!(&error, ResolveError::NoInterface { name } if name == "vnfp-nonexist"), "{error:?}");

            let error = resolve(addr("10.77.0.2"), Some("lo"), None, false).await.expect_err("lo has no MAC");
            assert!(matches!(&error, ResolveError::NoLinkAddress { interface } if interface == "lo"), "{error:?}");
        });
    }

    #[test]
    fn silent_neighbour_is_unresolved_at_the_timeout() {
        let lab = lab();
        lab.host.run(|| async {
            let timeout = Duration::from_millis(300);
            let start = Instant::now();

            let error = resolve_within(addr("10.77.0.99"), None, None, false, timeout)
                .await
                .expect_err("nobody there");

            let elapsed = start.elapsed();
            assert!(
                elapsed >= timeout && elapsed < timeout + Duration::from_millis(200),
                "took {elapsed:?}"
            );
            assert!(
                matches!(&error, ResolveError::Unresolved { address, interface, timeout: t }
                    if *address == addr("10.77.0.99") && *interface == lab.host_if && *t == timeout),
                "{error:?}"
            );
        });
    }
}
