//! From roles to the values the data plane holds: the Maglev table and the element table.

use std::{fmt, net::IpAddr};

use vnfpool_common::{
    addr,
    element::{Element, STATE_ABSENT, STATE_DOWN, STATE_DRAINING, STATE_UP},
    maps::MAX_ELEMENTS,
    tunnel::{self, Tunnel},
};

use super::{
    failover::PoolState,
    maglev::{self, Backend, RingError},
    roles::Role,
    spec::{Forwarding, PoolSpec},
};

/// Where packets for one element go, as resolved by the controller (routes, neighbours).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resolved {
    /// Egress interface.
    pub ifindex: u32,
    /// The element's MAC.
    pub dst_mac: [u8; 6],
    /// The egress interface's MAC.
    pub src_mac: [u8; 6],
    /// Resolved for a tunnelled pool: the tunnel's path (`dst_mac` is then the next hop's).
    pub path: Option<TunnelPath>,
}

/// The route a tunnel toward an element takes, as far as its outer headers need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelPath {
    /// This host's address toward the element: the outer source.
    pub source: std::net::IpAddr,
    /// The largest outer IP packet the path carries.
    pub mtu: u32,
}

/// One complete mapping of a pool, as the data plane takes it in one switch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mapping {
    /// Maglev table of `ring_size` element indices, all of active elements; empty when the pool
    /// has no active element.
    pub ring: Vec<u16>,
    /// Element table, indexed like `PoolSpec::elements`.
    pub elements: Vec<Element>,
    /// Tunnel table, indexed like `elements`; empty for an L2 DSR pool.
    pub tunnels: Vec<Tunnel>,
}

/// Why a mapping cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("pool {pool}: {resolved} resolved elements for {elements} elements")]
    Resolved {
        pool: String,
        resolved: usize,
        elements: usize,
    },
    #[error("pool {pool}: the state holds {state} elements and the spec {spec}")]
    State { pool: String, state: usize, spec: usize },
    #[error("pool {pool}: {count} elements, the data plane holds at most {max}")]
    TooManyElements { pool: String, count: usize, max: u32 },
    #[error("pool {pool}: cannot build the Maglev table")]
    Ring {
        pool: String,
        #[source]
        source: RingError,
    },
}

/// The mapping for the pool's current roles: actives are up and share the Maglev table by
/// weight (key `name_key(name)`, index = position in the pool); draining elements keep their
/// flows outside the table; every other element is down.
///
/// # Errors
/// When `resolved` or `state` does not hold one entry per element of `spec`, when the pool has
/// more elements than the data plane holds, or when the table cannot be built (bad size, or two
/// names with the same key).
pub fn plan(spec: &PoolSpec, state: &PoolState, resolved: &[Resolved]) -> Result<Mapping, PlanError> {
    if state.elements().len() != spec.elements.len() {
        return Err(PlanError::State {
            pool: spec.name.clone(),
            state: state.elements().len(),
            spec: spec.elements.len(),
        });
    }
    plan_roles(spec, &state.roles(), resolved)
}

/// [`plan`] from the elements' roles alone (by position in `spec.elements`): a cluster node
/// maps its pool from the leader's decision this way.
///
/// # Errors
/// As [`plan`], `roles` standing for the state.
pub fn plan_roles(spec: &PoolSpec, roles: &[Role], resolved: &[Resolved]) -> Result<Mapping, PlanError> {
    let count = spec.elements.len();
    let pool = || spec.name.clone();
    if resolved.len() != count {
        return Err(PlanError::Resolved {
            pool: pool(),
            resolved: resolved.len(),
            elements: count,
        });
    }
    if roles.len() != count {
        return Err(PlanError::State {
            pool: pool(),
            state: roles.len(),
            spec: count,
        });
    }
    if count > MAX_ELEMENTS as usize {
        return Err(PlanError::TooManyElements {
            pool: pool(),
            count,
            max: MAX_ELEMENTS,
        });
    }
    let backends: Vec<Backend> = spec
        .elements
        .iter()
        .zip(roles)
        .zip(0u16..)
        .filter(|&((_, &role), _)| role == Role::Active)
        .map(|((e, _), index)| Backend {
            key: maglev::name_key(&e.name),
            index,
            weight: e.weight,
        })
        .collect();
    let ring = maglev::build(&backends, spec.ring_size)
        .map_err(|source| PlanError::Ring { pool: pool(), source })?;
    let elements = resolved
        .iter()
        .zip(roles)
        .map(|(r, role)| Element {
            ifindex: r.ifindex,
            state: role.dataplane_state(),
            dst_mac: r.dst_mac,
            src_mac: r.src_mac,
            encap: spec.forwarding.encap(),
            _pad: [0; 3],
        })
        .collect();
    let tunnels = if spec.forwarding.tunnelled() {
        spec.elements
            .iter()
            .zip(resolved)
            .map(|(e, r)| tunnel(spec.forwarding, e.address, e.vxlan_mac, r.path))
            .collect()
    } else {
        Vec::new()
    };
    Ok(Mapping {
        ring,
        elements,
        tunnels,
    })
}

/// The outer headers toward the element at `address` (VXLAN: whose VXLAN device has
/// `vxlan_mac`) in a pool forwarding by `forwarding`, over `path` (none yet: an entry no packet
/// reads, as the element's egress is unknown too).
#[must_use]
pub fn tunnel(
    forwarding: Forwarding,
    address: IpAddr,
    vxlan_mac: Option<[u8; 6]>,
    path: Option<TunnelPath>,
) -> Tunnel {
    let Some(path) = path else {
        return Tunnel::default();
    };
    let csum_base = match (path.source, address) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let proto = if tunnel::over_udp(forwarding.encap()) {
                tunnel::IPPROTO_UDP
            } else {
                tunnel::IPPROTO_IPIP
            };
            tunnel::ipv4_base_sum(s.octets(), d.octets(), proto)
        }
        _ => 0,
    };
    Tunnel {
        dst: addr::from_ip(address),
        src: addr::from_ip(path.source),
        csum_base,
        mtu: u16::try_from(path.mtu).unwrap_or(u16::MAX),
        port_be: match forwarding {
            Forwarding::Gue { port } => port.to_be(),
            Forwarding::Vxlan { .. } => tunnel::VXLAN_PORT.to_be(),
            _ => 0,
        },
        vni_be: match forwarding {
            Forwarding::Vxlan { vni } => (vni << 8).to_be(),
            _ => 0,
        },
        inner_mac: vxlan_mac.unwrap_or_default(),
        _pad: [0; 14],
    }
}

/// An element whose data-plane state changed (`STATE_ABSENT` when it did not exist).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateChange {
    pub index: usize,
    pub from: u32,
    pub to: u32,
}

/// What a new mapping changes, for the log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MappingDiff {
    pub states: Vec<StateChange>,
    /// Elements in the same state with another interface or MAC.
    pub rewired: Vec<usize>,
    /// Table positions that now name another element (or none).
    pub moved: usize,
    /// Table size after the change.
    pub ring_len: usize,
}

impl MappingDiff {
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.states.is_empty() && self.rewired.is_empty() && self.moved == 0
    }
}

fn state_name(state: u32) -> &'static str {
    match state {
        STATE_ABSENT => "absent",
        STATE_UP => "up",
        STATE_DRAINING => "draining",
        STATE_DOWN => "down",
        _ => "invalid",
    }
}

impl fmt::Display for MappingDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("no change");
        }
        let mut sep = "";
        for c in &self.states {
            write!(
                f,
                "{sep}#{} {} -> {}",
                c.index,
                state_name(c.from),
                state_name(c.to)
            )?;
            sep = ", ";
        }
        for i in &self.rewired {
            write!(f, "{sep}#{i} rewired")?;
            sep = ", ";
        }
        write!(f, "{sep}{} of {} positions moved", self.moved, self.ring_len)
    }
}

/// What changes from `old` to `new`.
#[must_use]
pub fn diff(old: &Mapping, new: &Mapping) -> MappingDiff {
    let absent = Element::default();
    let mut out = MappingDiff {
        ring_len: new.ring.len(),
        ..MappingDiff::default()
    };
    for index in 0..old.elements.len().max(new.elements.len()) {
        let o = old.elements.get(index).unwrap_or(&absent);
        let n = new.elements.get(index).unwrap_or(&absent);
        if o.state != n.state {
            out.states.push(StateChange {
                index,
                from: o.state,
                to: n.state,
            });
        } else if o != n {
            out.rewired.push(index);
        }
    }
    out.moved = (0..old.ring.len().max(new.ring.len()))
        .filter(|&i| old.ring.get(i) != new.ring.get(i))
        .count();
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use vnfpool_common::tunnel::ENCAP_NONE;

    use super::*;
    use crate::model::{
        failover::Event,
        maglev::MIN_RING_SIZE,
        testutil::{AA, AS_PREEMPT, pool},
    };

    fn resolved(n: usize) -> Vec<Resolved> {
        (0..n)
            .map(|i| Resolved {
                ifindex: 10 + i as u32,
                dst_mac: [2, 0, 0, 0, 0, i as u8],
                src_mac: [2, 0, 0, 0, 1, 0],
                path: None,
            })
            .collect()
    }

    /// Brings every element listed up (rise 2), from `t` seconds.
    fn up(spec: &PoolSpec, state: &mut PoolState, t: u64, elements: &[usize]) {
        for k in 0..2 {
            for &element in elements {
                state
                    .step(
                        spec,
                        Event::Probe { element, ok: true },
                        Duration::from_secs(t + k),
                    )
                    .expect("probe");
            }
        }
    }

    fn states(m: &Mapping) -> Vec<u32> {
        m.elements.iter().map(|e| e.state).collect()
    }

    fn counts(ring: &[u16], n: usize) -> Vec<usize> {
        (0..n)
            .map(|i| ring.iter().filter(|&&x| usize::from(x) == i).count())
            .collect()
    }

    #[test]
    fn roles_become_states_and_only_actives_are_in_the_table() {
        let elements = &[("a", 400, 1), ("b", 300, 1), ("c", 200, 1), ("d", 100, 1)];
        let spec = pool(AS_PREEMPT, elements);
        let mut state = PoolState::new(&spec);
        state.mark_carrying();
        let res = resolved(4);

        let empty = plan(&spec, &state, &res).expect("plan");
        assert_eq!(empty.ring, Vec::<u16>::new(), "no active, no table");
        assert_eq!(states(&empty), [STATE_DOWN; 4]);

        up(&spec, &mut state, 0, &[1, 2]);
        state
            .step(&spec, Event::LinkDown { element: 3 }, Duration::from_secs(5))
            .expect("link");
        up(&spec, &mut state, 6, &[0]);
        assert_eq!(
            state.roles(),
            [Role::Active, Role::Draining, Role::Standby, Role::Out]
        );
        let m = plan(&spec, &state, &res).expect("plan");
        assert_eq!(states(&m), [STATE_UP, STATE_DRAINING, STATE_DOWN, STATE_DOWN]);
        assert_eq!(m.ring, vec![0; MIN_RING_SIZE as usize]);
        assert!(m.tunnels.is_empty(), "an L2 DSR pool has no tunnels");
        for (e, r) in m.elements.iter().zip(&res) {
            assert_eq!(
                (e.ifindex, e.dst_mac, e.src_mac, e.encap, e._pad),
                (r.ifindex, r.dst_mac, r.src_mac, ENCAP_NONE, [0; 3])
            );
        }
    }

    #[test]
    fn a_tunnelled_pool_plans_each_elements_outer_headers() {
        let mut spec = pool(AS_PREEMPT, &[("a", 200, 1), ("b", 100, 1)]);
        let path = TunnelPath {
            source: IpAddr::from([192, 0, 2, 1]),
            mtu: 9000,
        };
        let res: Vec<Resolved> = resolved(2)
            .into_iter()
            .map(|r| Resolved {
                path: Some(path),
                ..r
            })
            .collect();
        for (forwarding, encap, proto, port) in [
            (Forwarding::Ipip, tunnel::ENCAP_IPIP, tunnel::IPPROTO_IPIP, 0),
            (
                Forwarding::Gue { port: 6080 },
                tunnel::ENCAP_GUE,
                tunnel::IPPROTO_UDP,
                6080u16.to_be(),
            ),
        ] {
            spec.forwarding = forwarding;
            let m = plan_roles(&spec, &[Role::Active, Role::Standby], &res).expect("plan");
            assert!(m.elements.iter().all(|e| e.encap == encap), "{forwarding:?}");
            assert_eq!(m.tunnels.len(), 2);
            for (t, e) in m.tunnels.iter().zip(&spec.elements) {
                let IpAddr::V4(element) = e.address else {
                    panic!("the test pool is IPv4")
                };
                assert_eq!(
                    *t,
                    Tunnel {
                        dst: addr::from_ip(e.address),
                        src: addr::from_ip(path.source),
                        csum_base: tunnel::ipv4_base_sum([192, 0, 2, 1], element.octets(), proto),
                        mtu: 9000,
                        port_be: port,
                        ..Tunnel::default()
                    }
                );
            }
        }
        // A path too wide for the entry is capped; no path yet, an empty entry.
        let wide = TunnelPath { mtu: 70_000, ..path };
        let address = spec.elements[0].address;
        assert_eq!(tunnel(Forwarding::Ipip, address, None, Some(wide)).mtu, u16::MAX);
        assert_eq!(tunnel(Forwarding::Ipip, address, None, None), Tunnel::default());
        // VXLAN: port 4789, the VNI in the header's second word, the element's device MAC.
        let mac = [2, 0, 0, 0, 0x7e, 1];
        let t = tunnel(
            Forwarding::Vxlan { vni: 0x00ab_cdef },
            address,
            Some(mac),
            Some(path),
        );
        assert_eq!(
            (t.port_be, t.vni_be, t.inner_mac),
            (4789u16.to_be(), 0xabcd_ef00u32.to_be(), mac)
        );
    }

    #[test]
    fn actives_share_the_table_by_weight() {
        let elements = &[("a", 100, 1), ("b", 100, 2), ("c", 100, 3), ("d", 100, 4)];
        let spec = pool(AA, elements);
        let mut state = PoolState::new(&spec);
        up(&spec, &mut state, 0, &[0, 1, 2]);
        let m = plan(&spec, &state, &resolved(4)).expect("plan");
        let size = MIN_RING_SIZE as usize;
        let counts = counts(&m.ring, 4);
        assert_eq!(counts.iter().sum::<usize>(), size);
        for (i, w) in [1, 2, 3].into_iter().enumerate() {
            assert!(counts[i] >= size * w / 6, "{counts:?}");
            assert!(counts[i] <= (size + 3) * w / 6, "{counts:?}");
        }
        assert_eq!(counts[3], 0, "unknown elements are not in the table");
        // The table is the Maglev table of the actives, keyed by name.
        let backends: Vec<Backend> = (0..3u16)
            .map(|i| Backend {
                key: maglev::name_key(elements[usize::from(i)].0),
                index: i,
                weight: elements[usize::from(i)].2,
            })
            .collect();
        assert_eq!(m.ring, maglev::build(&backends, spec.ring_size).expect("ring"));
    }

    #[test]
    fn bad_inputs_are_errors() {
        let spec = pool(AA, &[("a", 1, 1), ("b", 1, 1)]);
        let state = PoolState::new(&spec);
        assert_eq!(
            plan(&spec, &state, &resolved(1)),
            Err(PlanError::Resolved {
                pool: "p".to_owned(),
                resolved: 1,
                elements: 2
            })
        );
        let other = pool(AA, &[("a", 1, 1)]);
        assert!(matches!(
            plan(&other, &state, &resolved(1)),
            Err(PlanError::State {
                state: 2,
                spec: 1,
                ..
            })
        ));
        let mut bad_size = spec.clone();
        bad_size.ring_size = 256;
        let err = plan(&bad_size, &state, &resolved(2)).expect_err("not prime");
        assert_eq!(
            err,
            PlanError::Ring {
                pool: "p".to_owned(),
                source: RingError::NotPrime { size: 256 }
            }
        );
        let source = std::error::Error::source(&err).expect("source");
        assert_eq!(source.to_string(), "ring size 256 is not prime");
    }

    #[test]
    fn diff_summarizes_changes() {
        let spec = pool(AS_PREEMPT, &[("a", 2, 1), ("b", 1, 1)]);
        let mut state = PoolState::new(&spec);
        let res = resolved(2);
        up(&spec, &mut state, 0, &[0, 1]);
        let before = plan(&spec, &state, &res).expect("plan");
        assert!(diff(&before, &before).is_empty(), "same input, empty delta");
        assert_eq!(diff(&before, &before).to_string(), "no change");

        state
            .step(&spec, Event::LinkDown { element: 0 }, Duration::from_secs(9))
            .expect("link");
        let after = plan(&spec, &state, &res).expect("plan");
        let d = diff(&before, &after);
        assert_eq!(
            d.states,
            [
                StateChange {
                    index: 0,
                    from: STATE_UP,
                    to: STATE_DOWN
                },
                StateChange {
                    index: 1,
                    from: STATE_DOWN,
                    to: STATE_UP
                },
            ]
        );
        assert_eq!(d.moved, MIN_RING_SIZE as usize);
        assert_eq!(
            d.to_string(),
            "#0 up -> down, #1 down -> up, 251 of 251 positions moved"
        );

        let mut rewired = after.clone();
        rewired.elements[1].dst_mac[5] = 0x42;
        let d = diff(&after, &rewired);
        assert_eq!((d.states.len(), d.rewired.as_slice(), d.moved), (0, &[1][..], 0));

        let d = diff(&Mapping::default(), &after);
        assert_eq!(d.states.len(), 2);
        assert_eq!(d.states[0].from, STATE_ABSENT);
        assert_eq!(d.moved, MIN_RING_SIZE as usize);
        let d = diff(&after, &Mapping::default());
        assert_eq!((d.moved, d.ring_len), (MIN_RING_SIZE as usize, 0));
    }
}
