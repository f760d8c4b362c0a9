//! What the nodes of a cluster share about a pool, as values: the leader's decision, each
//! node's verdicts on the elements, and how those verdicts add up. Pure: no store, no clock.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    model::{health::Health, roles::Role, spec::PoolSpec},
    registry::AddedElement,
};

/// A pool leader's decision: the role of every element, numbered. Every node maps the pool
/// from the roles of the newest decision it has seen ([`crate::model::plan::plan_roles`]), so
/// that all nodes hold the same Maglev table and the same element states.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub pool: String,
    /// Grows by one with every decision of the pool, across leaders: a new leader continues
    /// from the last decision it applied.
    pub generation: u64,
    /// The node that decided.
    pub leader: String,
    /// Element name → role; in name order, so that the same decision encodes to the same bytes.
    pub roles: BTreeMap<String, Role>,
}

impl Decision {
    /// The roles of `spec`'s elements, by position. An element the decision does not name (one
    /// this node knows and the leader did not) carries nothing.
    #[must_use]
    pub fn roles_for(&self, spec: &PoolSpec) -> Vec<Role> {
        spec.elements
            .iter()
            .map(|e| self.roles.get(&e.name).copied().unwrap_or(Role::Out))
            .collect()
    }

    /// The decision's elements that `spec` does not have: a sign that the nodes' configurations
    /// differ.
    pub fn unknown<'a>(&'a self, spec: &'a PoolSpec) -> impl Iterator<Item = &'a str> {
        self.roles
            .keys()
            .filter(|name| !spec.elements.iter().any(|e| &&e.name == name))
            .map(String::as_str)
    }

    /// Whether `self` replaces `applied` (the decision a node holds now).
    #[must_use]
    pub fn supersedes(&self, applied: Option<&Self>) -> bool {
        applied.is_none_or(|a| self.generation > a.generation)
    }
}

/// An operator's drain of an element, kept in the store for every node: no new flows to it, its
/// flows stay until they end or the deadline passes. The pool's leader decides the roles it
/// leads to, as for any other change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drain {
    /// The deadline, in milliseconds since the Unix epoch (a wall-clock time: the nodes'
    /// clocks are assumed to agree to well under a second); `None`: until undrained.
    pub until_unix_ms: Option<u64>,
}

impl Drain {
    /// The time left at `now_unix_ms`; `None` without a deadline.
    #[must_use]
    pub fn remaining(&self, now_unix_ms: u64) -> Option<std::time::Duration> {
        self.until_unix_ms
            .map(|until| std::time::Duration::from_millis(until.saturating_sub(now_unix_ms)))
    }
}

/// What an operator or the SCE asked of a pool through any node: kept in the store for every
/// node (no lease: it outlives them all), and turned into roles by the pool's leader like any
/// other change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intent {
    /// An element's drain (`None`: undrained).
    Drain { element: String, drain: Option<Drain> },
    /// The SCE's redundancy level: the actives it wants.
    Level { active: u32 },
    /// An element added at run time (by an operator, or registered by itself with its
    /// heartbeat key and id), `None`: removed.
    Element {
        name: String,
        element: Option<Box<AddedElement>>,
    },
}

impl Intent {
    /// What a newer intent of the same pool replaces this one for: `drain/<element>`,
    /// `level`, `element/<name>`.
    #[must_use]
    pub fn subject(&self) -> String {
        match self {
            Self::Drain { element, .. } => format!("drain/{element}"),
            Self::Level { .. } => "level".to_owned(),
            Self::Element { name, .. } => format!("element/{name}"),
        }
    }
}

/// One node's verdicts on a pool's elements: element name → its health as that node sees it.
pub type Verdicts = BTreeMap<String, Health>;

/// The cluster's verdict on each element of `spec` (by position), from every node's verdicts:
/// up when any node sees it up (a node cut off from an element does not fail it for the
/// others), down when no node sees it up and one sees it down, unknown when no node has judged.
#[must_use]
pub fn merge(spec: &PoolSpec, nodes: &[&Verdicts]) -> Vec<Health> {
    spec.elements
        .iter()
        .map(|e| {
            let mut merged = Health::Unknown;
            for verdicts in nodes {
                match verdicts.get(&e.name) {
                    Some(Health::Up) => return Health::Up,
                    Some(Health::Down) => merged = Health::Down,
                    Some(Health::Unknown) | None => {}
                }
            }
            merged
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::testutil::{AS_PREEMPT, pool};

    fn verdicts(rows: &[(&str, Health)]) -> Verdicts {
        rows.iter().map(|&(n, h)| (n.to_owned(), h)).collect()
    }

    #[test]
    fn one_node_that_reaches_an_element_keeps_it_up() {
        let spec = pool(AS_PREEMPT, &[("a", 100, 1), ("b", 50, 1)]);
        let cut_off = verdicts(&[("a", Health::Down), ("b", Health::Up)]);
        let reaches = verdicts(&[("a", Health::Up), ("b", Health::Up)]);
        assert_eq!(merge(&spec, &[&cut_off, &reaches]), vec![Health::Up, Health::Up]);
        let both_down = verdicts(&[("a", Health::Down), ("b", Health::Up)]);
        assert_eq!(
            merge(&spec, &[&cut_off, &both_down]),
            vec![Health::Down, Health::Up]
        );
    }

    #[test]
    fn unknown_until_some_node_judges() {
        let spec = pool(AS_PREEMPT, &[("a", 100, 1), ("b", 50, 1)]);
        let starting = verdicts(&[("a", Health::Unknown)]);
        let judged = verdicts(&[("a", Health::Down)]);
        assert_eq!(merge(&spec, &[&starting]), vec![Health::Unknown, Health::Unknown]);
        assert_eq!(
            merge(&spec, &[&starting, &judged]),
            vec![Health::Down, Health::Unknown]
        );
        assert_eq!(merge(&spec, &[]), vec![Health::Unknown; 2]);
    }

    #[test]
    fn roles_by_position_and_unknown_names() {
        let spec = pool(AS_PREEMPT, &[("a", 100, 1), ("b", 50, 1), ("c", 10, 1)]);
        let d = Decision {
            pool: "web".to_owned(),
            generation: 7,
            leader: "n1".to_owned(),
            roles: [("b", Role::Active), ("a", Role::Standby), ("z", Role::Active)]
                .into_iter()
                .map(|(n, r)| (n.to_owned(), r))
                .collect(),
        };
        assert_eq!(d.roles_for(&spec), vec![Role::Standby, Role::Active, Role::Out]);
        assert_eq!(d.unknown(&spec).collect::<Vec<_>>(), vec!["z"]);
        assert!(d.supersedes(None));
        assert!(!d.supersedes(Some(&d)));
        let next = Decision {
            generation: 8,
            ..d.clone()
        };
        assert!(next.supersedes(Some(&d)));
    }

    #[test]
    fn a_decision_encodes_to_the_same_bytes_whatever_the_insertion_order() {
        let roles = [("c", Role::Out), ("a", Role::Active), ("b", Role::Standby)];
        let forward = Decision {
            pool: "web".to_owned(),
            generation: 1,
            leader: "n1".to_owned(),
            roles: roles.iter().map(|&(n, r)| (n.to_owned(), r)).collect(),
        };
        let backward = Decision {
            roles: roles.iter().rev().map(|&(n, r)| (n.to_owned(), r)).collect(),
            ..forward.clone()
        };
        let a = serde_json::to_vec(&forward).expect("encode");
        assert_eq!(a, serde_json::to_vec(&backward).expect("encode"));
        assert_eq!(serde_json::from_slice::<Decision>(&a).expect("decode"), forward);
    }
}
