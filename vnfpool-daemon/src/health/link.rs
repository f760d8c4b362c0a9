//! Link state of element-facing interfaces, from rtnetlink (`RTNLGRP_LINK`).
//!
//! "Up" means administratively up and operationally running (`IFF_UP` and `IFF_RUNNING`): the
//! kernel sets `IFF_RUNNING` when the operational state is `UP` (or `UNKNOWN`, for devices
//! without carrier reporting), so a veth whose peer is down, or a NIC without carrier, is down.
//!
//! Netlink sockets belong to the network namespace of the thread that creates them: call these
//! functions from a thread (and runtime) in the namespace of the interfaces.

use std::{collections::HashMap, io};

use futures_util::{StreamExt as _, TryStreamExt as _};
use rtnetlink::{
    Handle, MulticastGroup,
    packet_core::{ErrorMessage, NetlinkPayload},
    packet_route::{
        AddressFamily, RouteNetlinkMessage,
        link::{LinkAttribute, LinkFlags, LinkLayerType, LinkMessage},
    },
};
use tokio::{sync::mpsc, task::JoinHandle};

/// A change of an interface's state (or its state when the watch starts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkEvent {
    pub ifindex: u32,
    pub name: String,
    pub up: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("opening a netlink route socket")]
    Socket {
        #[source]
        source: io::Error,
    },
    #[error("netlink {op} failed")]
    Netlink {
        op: &'static str,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("no interface with index {ifindex}")]
    NotFound { ifindex: u32 },
    #[error("the netlink socket closed")]
    Closed,
}

pub type Result<T, E = LinkError> = std::result::Result<T, E>;

/// Sends a [`LinkEvent`] for every change of an interface's up/down state in this network
/// namespace, until `tx`'s receiver is dropped (then `Ok`).
///
/// After subscribing, it first sends one event per existing interface with its current state, so
/// that a consumer starting the watch misses no change between reading the initial state and
/// the first event. A removed interface is reported down. Notifications that do not change the
/// state (statistics, MTU, …) send nothing. If the kernel drops notifications because the socket
/// buffer overflowed, the state is read again and the differences are sent.
///
/// # Errors
///
/// [`LinkError::Socket`] if the netlink socket cannot be opened, [`LinkError::Netlink`] if the
/// link dump fails, [`LinkError::Closed`] if the socket stops delivering messages.
pub async fn watch_links(tx: mpsc::Sender<LinkEvent>) -> Result<()> {
    let (connection, handle, mut messages) = rtnetlink::new_multicast_connection(&[MulticastGroup::Link])
        .map_err(|source| LinkError::Socket { source })?;
    let _connection = AbortOnDrop(tokio::spawn(connection));
    let mut links = Links::default();

    // Subscribed before the dump: a change during the dump arrives as a notification afterwards.
    let Ok(()) = links.resync(&handle, &tx).await? else {
        return Ok(());
    };
    while let Some((message, _)) = messages.next().await {
        let event = match message.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => links.observe(&link, false),
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(link)) => links.observe(&link, true),
            NetlinkPayload::Overrun(_) => {
                let Ok(()) = links.resync(&handle, &tx).await? else {
                    return Ok(());
                };
                None
            }
            _ => None,
        };
        if let Some(event) = event
            && tx.send(event).await.is_err()
        {
            return Ok(());
        }
    }
    Err(LinkError::Closed)
}

/// Whether interface `ifindex` is up (see the module docs for what "up" means).
///
/// # Errors
///
/// [`LinkError::NotFound`] when there is no such interface, or a socket/netlink error.
pub async fn link_state(ifindex: u32) -> Result<bool> {
    let session = Session::open().map_err(|source| LinkError::Socket { source })?;
    match session.link_by_index(ifindex).await {
        Ok(Some(link)) => Ok(is_up(&link)),
        Ok(None) => Err(LinkError::NotFound { ifindex }),
        Err(source) => Err(LinkError::Netlink {
            op: "link lookup",
            source,
        }),
    }
}

/// The last state sent for each interface.
#[derive(Default)]
struct Links(HashMap<u32, (String, bool)>);

impl Links {
    /// Records a notification; returns the event to send if the state changed.
    fn observe(&mut self, link: &LinkMessage, deleted: bool) -> Option<LinkEvent> {
        // Bridge port notifications (AF_BRIDGE) share this group, and their RTM_DELLINK means
        // "left the bridge", not "removed": only AF_UNSPEC messages describe the interface.
        if link.header.interface_family != AddressFamily::Unspec {
            return None;
        }
        let ifindex = link.header.index;
        let up = !deleted && is_up(link);
        let name = name_of(link).or_else(|| self.0.get(&ifindex).map(|(name, _)| name.clone()))?;
        if deleted {
            self.0.remove(&ifindex)?;
        } else if self
            .0
            .insert(ifindex, (name.clone(), up))
            .is_some_and(|(_, was_up)| was_up == up)
        {
            return None;
        }
        Some(LinkEvent { ifindex, name, up })
    }

    /// Reads every interface and sends the differences with what was last sent (including the
    /// removal of interfaces no longer listed). The inner `Err` means the receiver is gone.
    async fn resync(
        &mut self,
        handle: &Handle,
        tx: &mpsc::Sender<LinkEvent>,
    ) -> Result<std::result::Result<(), mpsc::error::SendError<LinkEvent>>> {
        let dump: Vec<LinkMessage> = handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|source| LinkError::Netlink {
                op: "link dump",
                source,
            })?;
        let mut events: Vec<LinkEvent> = self
            .0
            .iter()
            .filter(|(ifindex, _)| !dump.iter().any(|link| link.header.index == **ifindex))
            .map(|(&ifindex, (name, _))| LinkEvent {
                ifindex,
                name: name.clone(),
                up: false,
            })
            .collect();
        for gone in &events {
            self.0.remove(&gone.ifindex);
        }
        events.extend(dump.iter().filter_map(|link| self.observe(link, false)));
        for event in events {
            if let Err(closed) = tx.send(event).await {
                return Ok(Err(closed));
            }
        }
        Ok(Ok(()))
    }
}

pub(crate) fn is_up(link: &LinkMessage) -> bool {
    link.header.flags.contains(LinkFlags::Up | LinkFlags::Running)
}

pub(crate) fn name_of(link: &LinkMessage) -> Option<String> {
    link.attributes.iter().find_map(|attribute| match attribute {
        LinkAttribute::IfName(name) => Some(name.clone()),
        _ => None,
    })
}

/// The interface's own Ethernet address, if it is an Ethernet interface (not, e.g., `lo`, whose
/// address is six zero bytes).
pub(crate) fn mac_of(link: &LinkMessage) -> Option<[u8; 6]> {
    if link.header.link_layer_type != LinkLayerType::Ether {
        return None;
    }
    link.attributes.iter().find_map(|attribute| match attribute {
        LinkAttribute::Address(address) => <[u8; 6]>::try_from(address.as_slice()).ok(),
        _ => None,
    })
}

/// An rtnetlink request socket whose connection task ends with it.
pub(crate) struct Session {
    pub(crate) handle: Handle,
    _connection: AbortOnDrop,
}

impl Session {
    /// Opens a socket in the calling thread's network namespace; needs a tokio runtime.
    pub(crate) fn open() -> io::Result<Self> {
        let (connection, handle, _) = rtnetlink::new_connection()?;
        Ok(Self {
            handle,
            _connection: AbortOnDrop(tokio::spawn(connection)),
        })
    }

    /// `Ok(None)` when there is no interface with that index.
    pub(crate) async fn link_by_index(&self, ifindex: u32) -> Result<Option<LinkMessage>, rtnetlink::Error> {
        not_found_as_none(
            self.handle
                .link()
                .get()
                .match_index(ifindex)
                .execute()
                .try_next()
                .await,
        )
    }

    /// `Ok(None)` when there is no interface of that name.
    pub(crate) async fn link_by_name(&self, name: &str) -> Result<Option<LinkMessage>, rtnetlink::Error> {
        not_found_as_none(
            self.handle
                .link()
                .get()
                .match_name(name.to_owned())
                .execute()
                .try_next()
                .await,
        )
    }
}

fn not_found_as_none(
    link: Result<Option<LinkMessage>, rtnetlink::Error>,
) -> Result<Option<LinkMessage>, rtnetlink::Error> {
    match link {
        // The kernel answers the lookup of a missing interface with ENODEV.
        Err(rtnetlink::Error::NetlinkError(ErrorMessage { code: Some(code), .. }))
            if code.get().abs() == rustix::io::Errno::NODEV.raw_os_error() =>
        {
            Ok(None)
        }
        other => other,
    }
}

/// A task aborted when this is dropped (a netlink connection's, here and in
/// [`crate::announce`]).
pub(crate) struct AbortOnDrop(pub(crate) JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::{process::Command, time};

    use super::*;
    use crate::health::testnet::{NetNs, unique_name};

    const WAIT: Duration = Duration::from_secs(5);

    /// The next event for `name`, skipping other interfaces' events.
    async fn next_for(rx: &mut mpsc::Receiver<LinkEvent>, name: &str) -> LinkEvent {
        loop {
            let event = time::timeout(WAIT, rx.recv())
                .await
                .unwrap_or_else(|_| panic!("no event for {name} within {WAIT:?}"))
                .expect("the watcher is running");
            if event.name == name {
                return event;
            }
        }
    }

    /// The first event for `name` that says it is up: a link just set up becomes running only
    /// once the kernel has processed its carrier (asynchronously), so the initial state read by
    /// the watcher may still be down.
    async fn first_up(rx: &mut mpsc::Receiver<LinkEvent>, name: &str) -> LinkEvent {
        loop {
            let event = next_for(rx, name).await;
            if event.up {
                return event;
            }
        }
    }

    async fn ip(namespace: &str, args: &[&str]) {
        let status = Command::new("ip")
            .arg("-n")
            .arg(namespace)
            .args(args)
            .status()
            .await
            .expect("running ip");
        assert!(status.success(), "ip -n {namespace} {}: {status}", args.join(" "));
    }

    #[test]
    fn watch_reports_the_initial_state_then_each_change() {
        let ns = NetNs::new();
        let (host, peer) = (unique_name(), unique_name());
        ns.ip(&["link", "add", &host, "type", "veth", "peer", "name", &peer]);
        ns.ip(&["link", "set", &host, "up"]);
        ns.ip(&["link", "set", &peer, "up"]);

        ns.run(|| async {
            let (tx, mut rx) = mpsc::channel(64);
            let watcher = tokio::spawn(watch_links(tx));

            let initial = first_up(&mut rx, &host).await;
            assert!(link_state(initial.ifindex).await.expect("reading the link state"));

            // The peer going down takes the carrier away: up but not running.
            ip(ns.name(), &["link", "set", &peer, "down"]).await;
            let down = next_for(&mut rx, &host).await;
            assert_eq!(
                down,
                LinkEvent {
                    up: false,
                    ..initial.clone()
                }
            );
            assert!(!link_state(initial.ifindex).await.expect("reading the link state"));

            ip(ns.name(), &["link", "set", &peer, "up"]).await;
            assert_eq!(next_for(&mut rx, &host).await, initial);

            // Administratively down, with the carrier still there.
            ip(ns.name(), &["link", "set", &host, "down"]).await;
            assert_eq!(
                next_for(&mut rx, &host).await,
                LinkEvent {
                    up: false,
                    ..initial.clone()
                }
            );
            ip(ns.name(), &["link", "set", &host, "up"]).await;
            assert_eq!(next_for(&mut rx, &host).await, initial);

            // A change that keeps the state sends nothing: the next event for the host is the
            // removal, not the MTU change.
            ip(ns.name(), &["link", "set", &host, "mtu", "1400"]).await;
            ip(ns.name(), &["link", "del", &peer]).await;
            assert_eq!(
                next_for(&mut rx, &host).await,
                LinkEvent {
                    up: false,
                    ..initial.clone()
                }
            );
            assert!(matches!(
                link_state(initial.ifindex).await,
                Err(LinkError::NotFound { ifindex }) if ifindex == initial.ifindex
            ));

            assert!(!watcher.is_finished());
            drop(rx);
            // The watcher ends at its next event once its receiver is gone.
            ip(ns.name(), &["link", "set", "lo", "up"]).await;
            let ended = time::timeout(WAIT, watcher).await.expect("the watcher ends");
            assert!(matches!(ended, Ok(Ok(()))), "{ended:?}");
        });
    }

    #[test]
    fn bridge_port_notifications_are_not_removals() {
        let ns = NetNs::new();
        let (bridge, host, peer) = (unique_name(), unique_name(), unique_name());
        ns.ip(&["link", "add", &bridge, "type", "bridge"]);
        ns.ip(&["link", "add", &host, "type", "veth", "peer", "name", &peer]);
        ns.ip(&["link", "set", &host, "up"]);
        ns.ip(&["link", "set", &peer, "up"]);

        ns.run(|| async {
            let (tx, mut rx) = mpsc::channel(64);
            let _watcher = AbortOnDrop(tokio::spawn(async move {
                watch_links(tx).await.expect("watching links");
            }));
            let initial = first_up(&mut rx, &host).await;

            // Joining and leaving a bridge sends AF_BRIDGE RTM_NEWLINK/RTM_DELLINK for the port.
            ip(ns.name(), &["link", "set", &host, "master", &bridge]).await;
            ip(ns.name(), &["link", "set", &host, "nomaster"]).await;
            ip(ns.name(), &["link", "set", &peer, "down"]).await;

            // Exactly one event: the real change, without a false removal (and the "new" link
            // that would follow it) before it.
            assert_eq!(next_for(&mut rx, &host).await, LinkEvent { up: false, ..initial });
            let more = time::timeout(Duration::from_millis(200), next_for(&mut rx, &host)).await;
            assert!(more.is_err(), "unexpected {more:?}");
        });
    }
}
