//! This host's own addresses, from rtnetlink (`RTNLGRP_IPV4_IFADDR`, `RTNLGRP_IPV6_IFADDR`):
//! where a heartbeat listener on a wildcard address receives, and so where the data plane
//! guards it.
//!
//! As for [`crate::health::link`], the netlink socket belongs to the network namespace of the
//! thread that opens it.

use std::{collections::BTreeSet, net::IpAddr};

use futures_util::{StreamExt as _, TryStreamExt as _};
use rtnetlink::{
    Handle, MulticastGroup,
    packet_core::NetlinkPayload,
    packet_route::{
        RouteNetlinkMessage,
        address::{AddressAttribute, AddressMessage},
    },
};
use tokio::sync::watch;

use crate::health::link::{AbortOnDrop, LinkError};

/// Keeps `tx` at the set of this namespace's addresses until every receiver is gone (then
/// `Ok`). The set is read whole after subscribing and again after each address notification,
/// so that a change is never missed (a burst of changes is read once or a few times); `tx`
/// changes only when the set does.
///
/// # Errors
/// [`LinkError::Socket`] when the netlink socket cannot be opened, [`LinkError::Netlink`] when
/// a dump fails, [`LinkError::Closed`] when the socket stops delivering messages.
pub async fn watch_addresses(tx: watch::Sender<BTreeSet<IpAddr>>) -> Result<(), LinkError> {
    let (connection, handle, mut messages) =
        rtnetlink::new_multicast_connection(&[MulticastGroup::Ipv4Ifaddr, MulticastGroup::Ipv6Ifaddr])
            .map_err(|source| LinkError::Socket { source })?;
    let _connection = AbortOnDrop(tokio::spawn(connection));
    loop {
        let now = addresses(&handle).await?;
        tx.send_if_modified(|have| {
            let changed = *have != now;
            *have = now;
            changed
        });
        if tx.is_closed() {
            return Ok(());
        }
        // Wait for a notification that concerns addresses (or an overrun), then read again.
        loop {
            let Some((message, _)) = messages.next().await else {
                return Err(LinkError::Closed);
            };
            if matches!(
                message.payload,
                NetlinkPayload::InnerMessage(
                    RouteNetlinkMessage::NewAddress(_) | RouteNetlinkMessage::DelAddress(_)
                ) | NetlinkPayload::Overrun(_)
            ) {
                break;
            }
        }
    }
}

/// Every address of every interface in this namespace.
async fn addresses(handle: &Handle) -> Result<BTreeSet<IpAddr>, LinkError> {
    let dump: Vec<AddressMessage> =
        handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|source| LinkError::Netlink {
                op: "address dump",
                source,
            })?;
    Ok(dump.iter().filter_map(own_address).collect())
}

/// The host's own address in an address message: `IFA_LOCAL` when there is one (on a
/// point-to-point link `IFA_ADDRESS` is the peer's), else `IFA_ADDRESS`.
fn own_address(message: &AddressMessage) -> Option<IpAddr> {
    let local = message.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    local.or_else(|| {
        message.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        })
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::health::testnet::{NetNs, unique_name};

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    /// Waits up to 5 s for the watched set to satisfy `want`.
    async fn until(
        rx: &mut watch::Receiver<BTreeSet<IpAddr>>,
        what: &str,
        want: impl Fn(&BTreeSet<IpAddr>) -> bool,
    ) {
        let waited = tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|s| want(s)))
            .await
            .map(|r| r.map(|_| ()));
        match waited {
            Ok(r) => r.expect("the watch running"),
            Err(elapsed) => panic!("{what}: {elapsed}, have {:?}", *rx.borrow()),
        }
    }

    #[test]
    fn the_watch_follows_addresses_as_they_come_and_go() {
        let ns = NetNs::new();
        // This kernel has no dummy device: one end of a veth pair holds the addresses.
        let (dummy, peer) = (unique_name(), unique_name());
        ns.ip(&["link", "add", &dummy, "type", "veth", "peer", "name", &peer]);
        ns.ip(&["link", "set", &dummy, "up"]);
        ns.ip(&["addr", "add", "10.77.0.1/24", "dev", &dummy]);
        ns.run(|| async {
            let (tx, mut rx) = watch::channel(BTreeSet::new());
            let watcher = tokio::spawn(watch_addresses(tx));
            until(&mut rx, "the first address", |s| s.contains(&ip("10.77.0.1"))).await;
            ns.ip(&["addr", "add", "10.77.1.1/24", "dev", &dummy]);
            until(&mut rx, "an address added", |s| s.contains(&ip("10.77.1.1"))).await;
            ns.ip(&["addr", "del", "10.77.0.1/24", "dev", &dummy]);
            until(&mut rx, "an address removed", |s| !s.contains(&ip("10.77.0.1"))).await;
            assert!(rx.borrow().contains(&ip("10.77.1.1")));
            drop(rx);
            watcher.abort();
        });
    }
}
