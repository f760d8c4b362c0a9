//! Spec builders shared by the model's tests.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
    time::Duration,
};

use super::{
    maglev::MIN_RING_SIZE,
    spec::{CheckSpec, ElementSpec, HealthSpec, PoolSpec, Protocol, RedundancySpec},
};

/// TCP checks every second with the given thresholds.
pub(crate) fn health_spec(rise: u32, fall: u32) -> HealthSpec {
    HealthSpec {
        check: CheckSpec::Tcp { port: 80 },
        interval: Duration::from_secs(1),
        timeout: Duration::from_millis(500),
        rise,
        fall,
    }
}

/// A pool named `p` of `(name, priority, weight)` elements, rise 2 / fall 3, the smallest ring.
pub(crate) fn pool(redundancy: RedundancySpec, elements: &[(&str, u32, u32)]) -> PoolSpec {
    PoolSpec {
        name: "p".to_owned(),
        vip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        ports: vec![80],
        protocol: Protocol::Tcp,
        redundancy,
        health: health_spec(2, 3),
        elements: elements
            .iter()
            .zip(1u8..)
            .map(|(&(name, priority, weight), host)| ElementSpec {
                name: name.to_owned(),
                address: IpAddr::V4(Ipv4Addr::new(198, 51, 100, host)),
                priority,
                weight,
                failure_domains: BTreeMap::new(),
                srlg: Vec::new(),
                site: None,
                mac: None,
                interface: None,
                heartbeat_paths: Vec::new(),
                vxlan_mac: None,
                origin: crate::model::spec::Origin::File,
            })
            .collect(),
        ring_size: MIN_RING_SIZE,
        budget: None,
        placement: std::sync::Arc::default(),
        heartbeat: crate::model::spec::HeartbeatSpec::DEFAULT,
        registration: crate::model::spec::RegistrationSpec::DEFAULT,
        forwarding: crate::model::spec::Forwarding::L2Dsr,
    }
}

pub(crate) const AS_PREEMPT: RedundancySpec = RedundancySpec::ActiveStandby { preempt: true };
pub(crate) const AS_STICKY: RedundancySpec = RedundancySpec::ActiveStandby { preempt: false };
pub(crate) const AA: RedundancySpec = RedundancySpec::ActiveActive;

pub(crate) const fn n_plus_m(active: u32, preempt: bool) -> RedundancySpec {
    RedundancySpec::NPlusM { active, preempt }
}
