//! Redundancy models: which elements take new flows, which keep only their existing ones, and
//! which wait. A pure function of health, administrative state and the current roles.

use std::cmp::Reverse;

use serde::{Deserialize, Serialize};
use vnfpool_common::element::{STATE_DOWN, STATE_DRAINING, STATE_UP};

use super::{
    health::Health,
    spec::{PoolSpec, RedundancySpec},
};

/// What an element does for its pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Takes new flows (in the Maglev table) and keeps its existing ones.
    Active,
    /// Healthy, ready to take over; carries no flows.
    Standby,
    /// Keeps its existing flows, takes no new ones: drained by an operator, or replaced by a
    /// preempting element and waiting out the fail-back period.
    Draining,
    /// Carries nothing and is not a candidate: down, not yet known, or drained past its deadline.
    #[default]
    Out,
}

impl Role {
    /// The element's state in the data plane (`vnfpool_common::element::STATE_*`).
    #[must_use]
    pub const fn dataplane_state(self) -> u32 {
        match self {
            Self::Active => STATE_UP,
            Self::Draining => STATE_DRAINING,
            Self::Standby | Self::Out => STATE_DOWN,
        }
    }

    /// Whether flows already on the element stay there.
    #[must_use]
    pub const fn keeps_flows(self) -> bool {
        matches!(self, Self::Active | Self::Draining)
    }
}

/// Where an element stands in an operator drain, as of the decision.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DrainView {
    #[default]
    None,
    /// Drained, deadline not reached: existing flows stay.
    Running,
    /// Drained and the deadline has passed: out until undrained.
    Done,
}

/// Everything [`assign`] needs to know about one element besides its spec and current role.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ElementView {
    pub health: Health,
    pub drain: DrainView,
    /// A fail-back period is running: the element was replaced while healthy and keeps its
    /// existing flows until the period ends.
    pub failback: bool,
    /// The element stands in for a failed active whose backup it was (see
    /// [`super::placement`]): it ranks with that active's priority, ahead of equals, until the
    /// active is eligible again.
    pub stand_in: Option<u32>,
}

impl ElementView {
    /// Healthy and not drained: may be chosen to take new flows.
    #[must_use]
    pub fn eligible(&self) -> bool {
        self.health == Health::Up && self.drain == DrainView::None
    }
}

/// How many actives the model wants, and whether a better element takes over from a current one.
fn policy(redundancy: RedundancySpec) -> (usize, bool) {
    match redundancy {
        RedundancySpec::ActiveStandby { preempt } => (1, preempt),
        RedundancySpec::NPlusM { active, preempt } => {
            (usize::try_from(active).unwrap_or(usize::MAX), preempt)
        }
        RedundancySpec::ActiveActive => (usize::MAX, true),
    }
}

/// The roles the pool should have now. `view` and `current` are indexed like `spec.elements`;
/// a missing entry reads as an unknown element that is out.
///
/// - Active: the best eligible elements (higher priority, then lower name; a stand-in ranks with
///   the priority it holds, ahead of equals), up to 1
///   (`active-standby`), N (`n+m`) or all (`active-active`). Without preemption the current
///   actives keep their role while eligible, and only free places go to the best others.
/// - Draining: healthy elements that keep existing flows without taking new ones: an operator
///   drain before its deadline, a current active that was replaced while healthy, or one whose
///   fail-back period is running.
/// - Standby: the other eligible elements. Out: everything else, in particular every element
///   that is not up, so a failed element never carries flows.
#[must_use]
pub fn assign(spec: &PoolSpec, view: &[ElementView], current: &[Role]) -> Vec<Role> {
    let n = spec.elements.len();
    let view_of = |i: usize| view.get(i).copied().unwrap_or_default();
    let current_of = |i: usize| current.get(i).copied().unwrap_or_default();
    let (limit, preempt) = policy(spec.redundancy);

    let mut candidates: Vec<usize> = (0..n).filter(|&i| view_of(i).eligible()).collect();
    candidates.sort_by_key(|&i| {
        let own = spec.elements[i].priority;
        let held = view_of(i).stand_in;
        (
            Reverse(held.map_or(own, |p| p.max(own))),
            held.is_none(),
            spec.elements[i].name.as_str(),
        )
    });

    let mut selected = vec![false; n];
    let mut count = 0;
    let keep_current = !preempt;
    for pass_current in [true, false] {
        for &i in &candidates {
            if count == limit {
                break;
            }
            let wanted = if pass_current {
                keep_current && current_of(i) == Role::Active
            } else {
                !selected[i]
            };
            if wanted {
                selected[i] = true;
                count += 1;
            }
        }
    }

    (0..n)
        .map(|i| {
            let v = view_of(i);
            if selected[i] {
                Role::Active
            } else if v.health != Health::Up {
                Role::Out
            } else {
                match v.drain {
                    DrainView::Running => Role::Draining,
                    DrainView::Done => Role::Out,
                    DrainView::None => match current_of(i) {
                        Role::Active => Role::Draining,
                        Role::Draining if v.failback => Role::Draining,
                        _ => Role::Standby,
                    },
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::model::testutil::{AA, AS_PREEMPT, AS_STICKY, n_plus_m, pool};

    /// Views as tokens: health `U`/`D`/`?`, then `r` drain running, `d` drain done, `f` fail-back.
    fn views(s: &str) -> Vec<ElementView> {
        s.split_whitespace()
            .map(|t| {
                let mut v = ElementView::default();
                for c in t.chars() {
                    match c {
                        'U' => v.health = Health::Up,
                        'D' => v.health = Health::Down,
                        '?' => v.health = Health::Unknown,
                        'r' => v.drain = DrainView::Running,
                        'd' => v.drain = DrainView::Done,
                        'f' => v.failback = true,
                        _ => panic!("bad view token {t}"),
                    }
                }
                v
            })
            .collect()
    }

    /// Roles as letters: `A`ctive, `S`tandby, d`R`aining, `O`ut.
    fn roles(s: &str) -> Vec<Role> {
        s.split_whitespace()
            .map(|t| match t {
                "A" => Role::Active,
                "S" => Role::Standby,
                "R" => Role::Draining,
                "O" => Role::Out,
                _ => panic!("bad role token {t}"),
            })
            .collect()
    }

    const PAIR: &[(&str, u32, u32)] = &[("a", 300, 1), ("b", 200, 1)];
    const THREE: &[(&str, u32, u32)] = &[("a", 300, 1), ("b", 200, 1), ("c", 100, 1)];
    const TIED: &[(&str, u32, u32)] = &[("c", 100, 1), ("b", 100, 1), ("a", 100, 1)];
    #[rustfmt::skip]
    const FIVE: &[(&str, u32, u32)] = &[("e", 100, 1), ("d", 200, 1), ("c", 300, 1), ("b", 400, 1), ("a", 500, 1)];

    /// What, redundancy, elements, and `views | current roles => wanted roles`.
    type Case = (
        &'static str,
        RedundancySpec,
        &'static [(&'static str, u32, u32)],
        &'static str,
    );

    #[track_caller]
    fn check(cases: &[Case]) {
        for &(what, redundancy, elements, case) in cases {
            let (v, rest) = case.split_once('|').expect("views | current => wanted");
            let (current, want) = rest.split_once("=>").expect("current => wanted");
            let spec = pool(redundancy, elements);
            assert_eq!(
                assign(&spec, &views(v), &roles(current)),
                roles(want),
                "{what}: {case}"
            );
        }
    }

    #[test]
    fn active_standby() {
        #[rustfmt::skip]
        check(&[
            ("1:1 cold start", AS_PREEMPT, PAIR, "U U | O O => A S"),
            ("1:1 unknown is out", AS_PREEMPT, PAIR, "? U | O O => O A"),
            ("1:1 active fails", AS_PREEMPT, PAIR, "D U | A S => O A"),
            ("1:1 both down", AS_PREEMPT, PAIR, "D D | A S => O O"),
            ("1:1 return, preempt", AS_PREEMPT, PAIR, "U U | O A => A R"),
            ("1:1 return, no preempt", AS_STICKY, PAIR, "U U | O A => S A"),
            ("1:1 fail-back running", AS_PREEMPT, PAIR, "U Uf | A R => A R"),
            ("1:1 fail-back over", AS_PREEMPT, PAIR, "U U | A R => A S"),
            ("1:1 fail-back cut by failure", AS_PREEMPT, PAIR, "U Df | A R => A O"),
            ("1:1 new active fails in fail-back", AS_PREEMPT, PAIR, "D Uf | A R => O A"),
            ("1:1 no preempt, active fails", AS_STICKY, PAIR, "U D | S A => A O"),
            ("1:N by priority", AS_PREEMPT, THREE, "U U U | O O O => A S S"),
            ("1:N best down", AS_PREEMPT, THREE, "D U U | A S S => O A S"),
            ("1:N ties by name", AS_PREEMPT, TIED, "U U U | O O O => S S A"),
            ("1:N ties, a down", AS_PREEMPT, TIED, "U U D | S S A => S A O"),
            ("1:N no preempt keeps", AS_STICKY, THREE, "U U U | S S A => S S A"),
            ("1:N no preempt, fill by priority", AS_STICKY, THREE, "U U D | S S A => A S O"),
            ("1:N two actives (restore), no preempt", AS_STICKY, THREE, "U U U | S A A => S A R"),
        ]);
    }

    #[test]
    fn drains() {
        #[rustfmt::skip]
        check(&[
            ("drain the active", AS_PREEMPT, THREE, "Ur U U | A S S => R A S"),
            ("drain deadline passed", AS_PREEMPT, THREE, "Ud U U | R A S => O A S"),
            ("drained and down", AS_PREEMPT, THREE, "Dr U U | R A S => O A S"),
            ("drained standby", AS_PREEMPT, THREE, "U Ur U | A S S => A R S"),
            ("undrained, preempt", AS_PREEMPT, THREE, "U U U | O A S => A R S"),
            ("undrained, no preempt", AS_STICKY, THREE, "U U U | O A S => S A S"),
            ("aa drain", AA, THREE, "U Ur ? | A A O => A R O"),
            ("aa drain done", AA, THREE, "U Ud U | A R A => A O A"),
        ]);
    }

    #[test]
    fn n_plus_m_model() {
        #[rustfmt::skip]
        check(&[
            ("2+3 by priority", n_plus_m(2, true), FIVE, "U U U U U | O O O O O => S S S A A"),
            ("2+3 active fails", n_plus_m(2, true), FIVE, "U U U U D | S S S A A => S S A A O"),
            ("2+3 two fail", n_plus_m(2, true), FIVE, "U U U D D | S S S A A => S A A O O"),
            ("2+3 one healthy", n_plus_m(2, true), FIVE, "D D D D U | O O O O O => O O O O A"),
            ("2+3 return, preempt", n_plus_m(2, true), FIVE, "U U U U U | S S A A O => S S R A A"),
            ("2+3 return, no preempt", n_plus_m(2, false), FIVE, "U U U U U | S S A A O => S S A A S"),
            ("2+3 no preempt, fill best", n_plus_m(2, false), FIVE, "U U U U U | S S A S O => S S A S A"),
            ("3+0 fewer healthy", n_plus_m(3, true), &FIVE[..3], "U D U | A A A => A O A"),
            ("0 actives", n_plus_m(0, true), &FIVE[..2], "U U | O O => S S"),
        ]);
    }

    #[test]
    fn active_active() {
        #[rustfmt::skip]
        check(&[
            ("all healthy", AA, THREE, "U U U | O O O => A A A"),
            ("one down", AA, THREE, "U D U | A A A => A O A"),
            ("unknown", AA, THREE, "? U U | O A A => O A A"),
            ("none up", AA, THREE, "D ? D | A O A => O O O"),
        ]);
    }

    #[test]
    fn short_inputs_read_as_unknown_and_out() {
        let spec = pool(AA, THREE);
        assert_eq!(assign(&spec, &views("U"), &[]), roles("A O O"));
    }

    fn element_view() -> impl Strategy<Value = ElementView> {
        (
            prop_oneof![Just(Health::Unknown), Just(Health::Up), Just(Health::Down)],
            prop_oneof![
                Just(DrainView::None),
                Just(DrainView::Running),
                Just(DrainView::Done)
            ],
            any::<bool>(),
            prop::option::of(0u32..4),
        )
            .prop_map(|(health, drain, failback, stand_in)| ElementView {
                health,
                drain,
                failback,
                stand_in,
            })
    }

    fn role() -> impl Strategy<Value = Role> {
        prop_oneof![
            Just(Role::Active),
            Just(Role::Standby),
            Just(Role::Draining),
            Just(Role::Out)
        ]
    }

    fn redundancy() -> impl Strategy<Value = RedundancySpec> {
        prop_oneof![
            any::<bool>().prop_map(|preempt| RedundancySpec::ActiveStandby { preempt }),
            (0u32..4, any::<bool>()).prop_map(|(active, preempt)| RedundancySpec::NPlusM { active, preempt }),
            Just(RedundancySpec::ActiveActive),
        ]
    }

    const NAMES: [&str; 6] = ["a", "b", "c", "d", "e", "f"];

    proptest! {
        #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

        /// Whatever the inputs: only up elements carry flows, actives number min(limit,
        /// eligible), and without preemption an eligible current active stays active as long as
        /// there is room for it.
        #[test]
        fn invariants(
            redundancy in redundancy(),
            elements in prop::collection::vec((0u32..3, element_view(), role()), 1..=6),
        ) {
            let specs: Vec<(&str, u32, u32)> =
                elements.iter().zip(NAMES).map(|(&(p, _, _), name)| (name, p, 1)).collect();
            let spec = pool(redundancy, &specs);
            let view: Vec<ElementView> = elements.iter().map(|e| e.1).collect();
            let current: Vec<Role> = elements.iter().map(|e| e.2).collect();
            let got = assign(&spec, &view, &current);
            let (limit, preempt) = policy(redundancy);
            let eligible = view.iter().filter(|v| v.eligible()).count();
            let actives = got.iter().filter(|&&r| r == Role::Active).count();
            prop_assert_eq!(actives, limit.min(eligible));
            for (i, (v, r)) in view.iter().zip(&got).enumerate() {
                if v.health != Health::Up {
                    prop_assert_eq!(*r, Role::Out, "{}", i);
                }
                if *r == Role::Active {
                    prop_assert!(v.eligible());
                }
                if *r == Role::Standby {
                    prop_assert!(v.eligible());
                }
            }
            let current_eligible_actives =
                (0..view.len()).filter(|&i| current[i] == Role::Active && view[i].eligible()).count();
            if !preempt && current_eligible_actives <= limit {
                for i in 0..view.len() {
                    if current[i] == Role::Active && view[i].eligible() {
                        prop_assert_eq!(got[i], Role::Active);
                    }
                }
            }
            // The roles are a fixed point: deciding again from them changes nothing, except
            // that a replaced active without a running fail-back period ends its drain.
            let again = assign(&spec, &view, &got);
            for i in 0..view.len() {
                if !(got[i] == Role::Draining && view[i].drain == DrainView::None && !view[i].failback) {
                    prop_assert_eq!(again[i], got[i], "{}", i);
                }
            }
        }
    }
}
