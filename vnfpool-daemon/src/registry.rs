//! Elements added at run time and the SCE's redundancy requests (draft 5.3, 5.4): what they
//! are, how they join the configuration file's pools, and when a silent element is due.
//!
//! The file stays the operator's: run-time additions never rewrite it. They are kept apart
//! ([`Added`], persisted with the pool state) and [`merge`]d into the file's pools on start,
//! on every reload and on every change, each checked again by the file's own element rules
//! against the pool it joins. Everything here is pure; the controller does the I/O.

use std::{
    cmp::Reverse,
    collections::{BTreeMap, BinaryHeap, HashSet},
    path::Path,
};

use serde::{Deserialize, Serialize};

use crate::{
    config,
    heartbeat::{ElementId, Key, Now},
    model::spec::{Grant, Origin, PoolSpec, RedundancySpec, Spec},
};

/// Everything added at run time, by pool name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Added {
    #[serde(default)]
    pub pools: BTreeMap<String, AddedPool>,
    /// The next registration id to hand out (ids are never reused, so that a heartbeat of a
    /// removed element never counts for a new one).
    #[serde(default)]
    pub next_id: ElementId,
}

/// One pool's additions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddedPool {
    #[serde(default)]
    pub elements: Vec<AddedElement>,
    /// The number of actives the SCE asked for, replacing the file's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<u32>,
}

/// One element added at run time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddedElement {
    pub name: String,
    pub origin: Origin,
    /// The element as requested (a JSON object with the keys of a file element).
    pub body: serde_json::Value,
    /// Set for an element that registered itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<Agent>,
}

/// The registration of a self-registered element.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agent {
    pub id: ElementId,
    /// Its heartbeat key (persisted: a restarted daemon accepts its next heartbeat).
    pub key: Key,
    /// Subject of the certificate that registered it: only that client may change or
    /// deregister it (an operator may remove it).
    pub subject: String,
    /// The last accepted sequence number as of the last save.
    #[serde(default)]
    pub last_seq: Option<u64>,
}

impl Added {
    /// The registration with id `id`, with its pool's name.
    #[must_use]
    pub fn agent(&self, id: ElementId) -> Option<(&str, &AddedElement)> {
        self.pools.iter().find_map(|(pool, p)| {
            p.elements
                .iter()
                .find(|e| e.agent.as_ref().is_some_and(|a| a.id == id))
                .map(|e| (pool.as_str(), e))
        })
    }

    /// Every registration.
    pub fn agents(&self) -> impl Iterator<Item = &Agent> {
        self.pools
            .values()
            .flat_map(|p| &p.elements)
            .filter_map(|e| e.agent.as_ref())
    }
}

/// A redundancy request that cannot be carried out, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LevelError {
    #[error("an active-active pool makes every healthy element active; it has no other level")]
    ActiveActive,
    #[error("{active} actives requested; at least 1")]
    Zero { active: u32 },
    #[error("{active} actives requested but the pool has {elements} elements")]
    TooFew { active: u32, elements: usize },
}

/// The redundancy of `pool` with `active` actives (N), keeping its model's preemption: an
/// active-standby pool asked for one active stays one.
///
/// # Errors
/// When the pool's model has no such level or the pool has fewer elements than `active`.
pub fn with_actives(pool: &PoolSpec, active: u32) -> Result<RedundancySpec, LevelError> {
    if active == 0 {
        return Err(LevelError::Zero { active });
    }
    if active as usize > pool.elements.len() {
        return Err(LevelError::TooFew {
            active,
            elements: pool.elements.len(),
        });
    }
    match pool.redundancy {
        RedundancySpec::ActiveActive => Err(LevelError::ActiveActive),
        RedundancySpec::ActiveStandby { preempt } if active == 1 => {
            Ok(RedundancySpec::ActiveStandby { preempt })
        }
        RedundancySpec::ActiveStandby { preempt } | RedundancySpec::NPlusM { preempt, .. } => {
            Ok(RedundancySpec::NPlusM { active, preempt })
        }
    }
}

/// The configuration that runs: `file`'s pools with the elements and levels of `added`.
/// Returns it with what had to be left out (an element that no longer fits its pool, say
/// after the file changed the VIP's family or a name it took), one message each.
#[must_use]
pub fn merge(file: &Spec, added: &Added) -> (Spec, Vec<String>) {
    let mut spec = file.clone();
    let mut left_out = Vec::new();
    for pool in &mut spec.pools {
        let Some(extra) = added.pools.get(&pool.name) else {
            continue;
        };
        for element in &extra.elements {
            match check(pool, element) {
                Ok(e) => pool.elements.push(e),
                Err(why) => left_out.push(format!("pool {}, element {}: {why}", pool.name, element.name)),
            }
        }
        if let Some(active) = extra.active {
            match with_actives(pool, active) {
                Ok(redundancy) => pool.redundancy = redundancy,
                Err(why) => left_out.push(format!("pool {}, requested level: {why}", pool.name)),
            }
        }
    }
    (spec, left_out)
}

/// `element` as an element of `pool` (which does not hold it yet).
///
/// # Errors
/// What makes it unfit, in words.
pub fn check(pool: &PoolSpec, element: &AddedElement) -> Result<crate::model::spec::ElementSpec, String> {
    let spec = config::element_from_text(
        &element.body.to_string(),
        &element.name,
        pool,
        element.origin,
        Path::new("element"),
    )
    .map_err(|e| e.to_string())?;
    if let Some(why) = pool.forwarding.lacks(&spec) {
        return Err(why);
    }
    if pool.elements.iter().any(|e| e.name == spec.name) {
        return Err(format!("the pool already has an element called {}", spec.name));
    }
    if let Some(other) = pool.elements.iter().find(|e| e.address == spec.address) {
        return Err(format!("address {} is element {}'s", spec.address, other.name));
    }
    if pool.elements.len() >= vnfpool_common::maps::MAX_ELEMENTS as usize {
        return Err(format!(
            "the pool has {} elements, the most a pool may have",
            pool.elements.len()
        ));
    }
    Ok(spec)
}

/// The matcher of an element-name glob (`*` any run, `?` one character, `[…]` a class).
///
/// # Errors
/// When `pattern` is not a glob.
pub fn name_glob(pattern: &str) -> Result<globset::GlobMatcher, globset::Error> {
    Ok(globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .build()?
        .compile_matcher())
}

/// Whether the `element` client `subject`, holding `grant`, may register `element` (as
/// checked by [`check`]) in `pool`, where `held` of its registrations exist besides this one.
///
/// # Errors
/// What it may not do, in words.
pub fn admit(
    subject: &str,
    grant: &Grant,
    pool: &str,
    element: &crate::model::spec::ElementSpec,
    held: usize,
) -> Result<(), String> {
    if let Some(pools) = &grant.pools
        && !pools.iter().any(|p| p == pool)
    {
        return Err(format!("{subject} may not register elements in pool {pool}"));
    }
    if let Some(names) = &grant.names
        && !name_glob(names).is_ok_and(|glob| glob.is_match(&element.name))
    {
        return Err(format!(
            "{subject} may register only elements whose names match `{names}`, not {}",
            element.name
        ));
    }
    if let Some(prefixes) = &grant.prefixes
        && !prefixes.iter().any(|net| net.contains(&element.address))
    {
        let listed: Vec<String> = prefixes.iter().map(ToString::to_string).collect();
        return Err(format!(
            "{subject} may register only addresses in {}, not {}",
            listed.join(", "),
            element.address
        ));
    }
    if held >= grant.max_elements as usize {
        return Err(format!(
            "{subject} holds {held} registrations, the most it may (max_elements: {})",
            grant.max_elements
        ));
    }
    Ok(())
}

/// When each self-registered element's silence must next be judged: a min-heap with one
/// entry per element at most. Heartbeats do not touch it (they only refresh the verifier's
/// record); an entry that comes due is judged against that record and, when the element was
/// heard from meanwhile, queued again at its last heartbeat plus the miss limit. So the cost is
/// one heap operation per element per miss limit, whatever the heartbeat rate.
#[derive(Debug, Default)]
pub struct Misses {
    heap: BinaryHeap<Reverse<(Now, ElementId)>>,
    queued: HashSet<ElementId>,
}

impl Misses {
    /// Judges `id` at `at`, unless it is already queued.
    pub fn watch(&mut self, id: ElementId, at: Now) {
        if self.queued.insert(id) {
            self.heap.push(Reverse((at, id)));
        }
    }

    /// The earliest judgement.
    #[must_use]
    pub fn next(&self) -> Option<Now> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// Takes every element due at `now`, earliest first.
    pub fn due(&mut self, now: Now) -> Vec<ElementId> {
        let mut due = Vec::new();
        while let Some(&Reverse((at, id))) = self.heap.peek() {
            if at > now {
                break;
            }
            self.heap.pop();
            self.queued.remove(&id);
            due.push(id);
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::model::testutil::{AA, AS_PREEMPT, n_plus_m, pool};

    fn spec_of(pool: PoolSpec) -> Spec {
        Spec {
            daemon: crate::config::parse("daemon: { interfaces: [eth0] }\npools: []\n", Path::new("t.yaml"))
                .expect("config")
                .daemon,
            pools: vec![pool],
            placement: std::sync::Arc::default(),
            api: None,
            cluster: None,
        }
    }

    fn element(name: &str, body: serde_json::Value) -> AddedElement {
        AddedElement {
            name: name.to_owned(),
            origin: Origin::Agent,
            body,
            agent: None,
        }
    }

    #[test]
    fn an_element_added_to_a_vxlan_pool_needs_its_devices_mac() {
        let mut vxlan = pool(AS_PREEMPT, &[("e1", 100, 1)]);
        vxlan.forwarding = crate::model::spec::Forwarding::Vxlan { vni: 7 };
        let without = element("e9", serde_json::json!({ "address": "198.51.100.9" }));
        let why = check(&vxlan, &without).expect_err("no vxlan_mac");
        assert!(why.contains("e9 has no vxlan_mac"), "{why}");
        let with = element(
            "e9",
            serde_json::json!({ "address": "198.51.100.9", "vxlan_mac": "02:00:00:00:7e:09" }),
        );
        assert_eq!(
            check(&vxlan, &with).expect("with its MAC").vxlan_mac,
            Some([2, 0, 0, 0, 0x7e, 9])
        );
    }

    #[test]
    fn added_elements_join_their_pool_checked_by_the_files_rules() {
        let file = spec_of(pool(AS_PREEMPT, &[("e1", 100, 1), ("e2", 100, 1)]));
        let mut added = Added::default();
        let p = added.pools.entry("p".to_owned()).or_default();
        p.elements.push(element(
            "e9",
            serde_json::json!({ "address": "198.51.100.9", "weight": 3 }),
        ));
        p.elements
            .push(element("e8", serde_json::json!({ "address": "2001:db8::8" })));
        p.elements
            .push(element("e7", serde_json::json!({ "address": "198.51.100.1" })));
        p.elements
            .push(element("e1", serde_json::json!({ "address": "198.51.100.77" })));
        p.elements.push(element(
            "e6",
            serde_json::json!({ "address": "198.51.100.6", "weight": 0 }),
        ));
        added.pools.entry("gone".to_owned()).or_default();
        let (spec, left_out) = merge(&file, &added);
        let names: Vec<&str> = spec.pools[0].elements.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["e1", "e2", "e9"]);
        let e9 = &spec.pools[0].elements[2];
        assert_eq!((e9.weight, e9.origin), (3, Origin::Agent));
        assert_eq!(left_out.len(), 4, "{left_out:#?}");
        assert!(
            left_out[0].contains("e8") && left_out[0].contains("IPv6"),
            "{}",
            left_out[0]
        );
        assert!(left_out[1].contains("element e1's"), "{}", left_out[1]);
        assert!(
            left_out[2].contains("already has an element called e1"),
            "{}",
            left_out[2]
        );
        assert!(
            left_out[3].contains("weight") && left_out[3].contains("1..=1000"),
            "{}",
            left_out[3]
        );
        // Nothing added: the file as it is.
        assert_eq!(merge(&file, &Added::default()).0, file);
    }

    #[test]
    fn heartbeat_paths_are_a_registrations_own_and_checked() {
        let file = spec_of(pool(AS_PREEMPT, &[("e1", 100, 1)]));
        let pool = &file.pools[0];
        let agent = |body| check(pool, &element("e9", body));
        let e9 = agent(
            serde_json::json!({ "address": "198.51.100.9", "heartbeat_paths": ["10.1.0.9", "10.2.0.9"] }),
        )
        .expect("two paths");
        assert_eq!(
            e9.heartbeat_paths,
            [
                "10.1.0.9".parse::<std::net::IpAddr>().expect("ip"),
                "10.2.0.9".parse().expect("ip")
            ]
        );
        for (paths, why) in [
            (serde_json::json!([]), "0 heartbeat paths"),
            (
                serde_json::json!(["10.1.0.9", "10.1.0.9"]),
                "heartbeat path 10.1.0.9 twice",
            ),
            (
                serde_json::json!(["2001:db8::9"]),
                "not of the element address's family",
            ),
            (
                serde_json::json!(["nowhere"]),
                "heartbeat path `nowhere` is not an IP address",
            ),
            (
                serde_json::json!((1..=9).map(|i| format!("10.1.0.{i}")).collect::<Vec<_>>()),
                "9 heartbeat paths",
            ),
        ] {
            let e = agent(serde_json::json!({ "address": "198.51.100.9", "heartbeat_paths": paths }))
                .expect_err(why);
            assert!(e.contains(why), "{e}");
        }
        // An operator's element is probed: it has no heartbeats to send over paths.
        let operator = AddedElement {
            origin: Origin::Operator,
            ..element(
                "e8",
                serde_json::json!({ "address": "198.51.100.8", "heartbeat_paths": ["10.1.0.8"] }),
            )
        };
        let e = check(pool, &operator).expect_err("an operator's element");
        assert!(
            e.contains("heartbeat_paths of an element that does not register itself"),
            "{e}"
        );
    }

    #[test]
    fn a_requested_level_replaces_the_files_and_is_refused_when_the_pool_cannot_have_it() {
        let three = pool(AS_PREEMPT, &[("e1", 100, 1), ("e2", 100, 1), ("e3", 100, 1)]);
        assert_eq!(
            with_actives(&three, 2),
            Ok(RedundancySpec::NPlusM {
                active: 2,
                preempt: true
            })
        );
        assert_eq!(with_actives(&three, 1), Ok(AS_PREEMPT));
        assert_eq!(
            with_actives(&three, 4),
            Err(LevelError::TooFew {
                active: 4,
                elements: 3
            })
        );
        assert_eq!(with_actives(&three, 0), Err(LevelError::Zero { active: 0 }));
        let nm = pool(
            n_plus_m(2, false),
            &[("e1", 100, 1), ("e2", 100, 1), ("e3", 100, 1)],
        );
        assert_eq!(with_actives(&nm, 1), Ok(n_plus_m(1, false)));
        let aa = pool(AA, &[("e1", 100, 1), ("e2", 100, 1)]);
        assert_eq!(with_actives(&aa, 2), Err(LevelError::ActiveActive));

        let mut added = Added::default();
        added.pools.entry("p".to_owned()).or_default().active = Some(3);
        let (spec, left_out) = merge(&spec_of(three), &added);
        assert_eq!(spec.pools[0].redundancy, n_plus_m(3, true));
        assert!(left_out.is_empty());
    }

    #[test]
    fn each_element_is_judged_once_per_watch_in_time_order() {
        let ms = Duration::from_millis;
        let mut misses = Misses::default();
        misses.watch(1, ms(30));
        misses.watch(2, ms(10));
        misses.watch(1, ms(5)); // already queued: ignored
        assert_eq!(misses.next(), Some(ms(10)));
        assert!(misses.due(ms(9)).is_empty());
        assert_eq!(misses.due(ms(30)), vec![2, 1]);
        assert_eq!(misses.next(), None);
        misses.watch(1, ms(40));
        assert_eq!(misses.next(), Some(ms(40)));
    }
}
