//! Per-element health from probe outcomes and link events: rise/fall hysteresis, so one lost or
//! one lucky probe never changes a decision.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::spec::HealthSpec;

/// Time since the daemon's epoch (an arbitrary origin chosen by the controller). The model
/// never reads a clock: every instant is a value handed in.
pub type Now = Duration;

/// What the health checks say about an element.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Health {
    /// Not yet decided: neither `rise` successes nor `fall` failures in a row since the start.
    #[default]
    Unknown,
    Up,
    Down,
}

/// Why the health of an element changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cause {
    /// `rise` consecutive successful probes.
    Rose,
    /// `fall` consecutive failed probes.
    Fell,
    /// The element's link went down.
    LinkDown,
    /// A verified heartbeat of a self-registered element arrived.
    Heartbeat,
    /// A self-registered element sent no verified heartbeat for longer than its miss limit.
    HeartbeatMiss,
    /// The cluster's nodes, together, judged it (see `crate::cluster`): up when one of them
    /// sees it up, down when every node that judged it sees it down.
    Cluster,
}

/// A decided change of health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthChange {
    pub from: Health,
    pub to: Health,
    pub cause: Cause,
    /// When the evidence began: the first probe of the run that crossed `rise` or `fall`, or
    /// the link event. Detection time is the decision's `now` minus this.
    pub since: Now,
}

/// Counts consecutive probe outcomes of one element and decides its [`Health`].
///
/// Thresholds come from the pool's [`HealthSpec`] at every call rather than being stored, so a
/// configuration reload applies to the runs in progress and the persisted value holds no
/// configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCounter {
    health: Health,
    successes: u32,
    failures: u32,
    /// First probe of the current run (of successes or of failures).
    run_start: Option<Now>,
    /// Set by a link-down event, cleared by link-up. While set, successful probes do not count:
    /// a probe that left before the link went down must not bring the element back.
    link_down: bool,
}

impl HealthCounter {
    /// A counter in the [`Health::Unknown`] state with its link up.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    #[must_use]
    pub fn health(&self) -> Health {
        self.health
    }

    /// Whether the last link event was link-down.
    #[must_use]
    pub fn is_link_down(&self) -> bool {
        self.link_down
    }

    /// Counts one probe outcome observed at `now`; returns the change when it crosses `rise`
    /// (successes) or `fall` (failures). A threshold of 0 acts as 1.
    pub fn observe(&mut self, spec: &HealthSpec, ok: bool, now: Now) -> Option<HealthChange> {
        if ok {
            if self.link_down {
                return None;
            }
            if self.successes == 0 {
                self.run_start = Some(now);
            }
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            (self.health != Health::Up && self.successes >= spec.rise.max(1))
                .then(|| self.set(Health::Up, Cause::Rose, now))
        } else {
            if self.failures == 0 {
                self.run_start = Some(now);
            }
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            (self.health != Health::Down && self.failures >= spec.fall.max(1))
                .then(|| self.set(Health::Down, Cause::Fell, now))
        }
    }

    /// The element's link went down at `now`: down at once, without counting.
    pub fn link_down(&mut self, now: Now) -> Option<HealthChange> {
        self.link_down = true;
        self.successes = 0;
        self.run_start = None;
        (self.health != Health::Down).then(|| {
            self.failures = 0;
            self.set(Health::Down, Cause::LinkDown, now)
        })
    }

    /// The element's link came up. Health does not change: probes must rise. Returns whether
    /// the link was down.
    pub fn link_up(&mut self) -> bool {
        let was_down = self.link_down;
        if was_down {
            self.link_down = false;
            self.successes = 0;
        }
        was_down
    }

    /// A verified heartbeat arrived at `now`: a self-registered element is up at once (the
    /// heartbeat is authenticated evidence; the miss limit is the hysteresis), unless its link
    /// is down.
    pub fn heartbeat(&mut self, now: Now) -> Option<HealthChange> {
        if self.link_down {
            return None;
        }
        self.failures = 0;
        self.run_start = None;
        (self.health != Health::Up).then(|| self.set(Health::Up, Cause::Heartbeat, now))
    }

    /// The element has been silent since `silent_since` for longer than its miss limit: down
    /// at once, the evidence dating from `silent_since`.
    pub fn heartbeat_missed(&mut self, silent_since: Now) -> Option<HealthChange> {
        self.successes = 0;
        self.run_start = None;
        (self.health != Health::Down).then(|| self.set(Health::Down, Cause::HeartbeatMiss, silent_since))
    }

    /// The cluster's verdict at `now` (evidence `since`): the element is `to` at once. The
    /// nodes' own counters were the hysteresis; `Unknown` changes nothing.
    pub fn verdict(&mut self, to: Health, since: Now) -> Option<HealthChange> {
        if to == Health::Unknown || to == self.health {
            return None;
        }
        self.successes = 0;
        self.failures = 0;
        self.run_start = None;
        Some(self.set(to, Cause::Cluster, since))
    }

    /// Moves every stored instant by `to - from` (saturating at the epoch).
    pub(crate) fn rebase(&mut self, from: Now, to: Now) {
        self.run_start = self.run_start.map(|t| rebase(t, from, to));
    }

    fn set(&mut self, to: Health, cause: Cause, now: Now) -> HealthChange {
        let from = self.health;
        self.health = to;
        HealthChange {
            from,
            to,
            cause,
            since: self.run_start.unwrap_or(now),
        }
    }
}

/// `t - from + to`, saturating at the epoch and at the largest instant (a drain deadline
/// saved before drains were clamped can be that far).
pub(crate) fn rebase(t: Now, from: Now, to: Now) -> Now {
    match t.checked_sub(from) {
        Some(after) => after.saturating_add(to),
        None => to.saturating_sub(from.saturating_sub(t)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::testutil::health_spec;

    fn at(secs: u64) -> Now {
        Duration::from_secs(secs)
    }

    /// Feeds `outcomes` one per second from t=0 and returns the health after each.
    fn run(counter: &mut HealthCounter, rise: u32, fall: u32, outcomes: &str) -> Vec<Health> {
        let spec = health_spec(rise, fall);
        outcomes
            .bytes()
            .zip(0..)
            .map(|(c, t)| {
                counter.observe(&spec, c == b'+', at(t));
                counter.health()
            })
            .collect()
    }

    fn parse(healths: &str) -> Vec<Health> {
        healths
            .bytes()
            .map(|c| match c {
                b'U' => Health::Up,
                b'D' => Health::Down,
                _ => Health::Unknown,
            })
            .collect()
    }

    #[test]
    fn rise_and_fall_count_exactly() {
        // (rise, fall, outcomes: + ok / - failed, health after each: ? Unknown, U, D)
        let cases = [
            (1, 1, "+-+-", "UDUD"),
            (2, 3, "++", "?U"),
            (2, 3, "---", "??D"),
            (3, 1, "++-+++", "??DDDU"),
            (2, 3, "++--+--", "?UUUUUU"),
            (2, 3, "++---", "?UUUD"),
            (2, 3, "++---+-+", "?UUUDDDD"),
            (2, 3, "++---++", "?UUUDDU"),
            (1, 2, "+-+-", "UUUU"),
            (2, 2, "-+-+-+", "??????"),
            (2, 2, "--++", "?DDU"),
            // A threshold of 0 acts as 1.
            (0, 0, "+-", "UD"),
        ];
        for (rise, fall, outcomes, want) in cases {
            let mut counter = HealthCounter::new();
            assert_eq!(
                run(&mut counter, rise, fall, outcomes),
                parse(want),
                "rise {rise} fall {fall}: {outcomes}"
            );
        }
    }

    #[test]
    fn alternating_outcomes_never_flap() {
        for start in ["++", "--"] {
            for pattern in ["+-", "-+"] {
                let mut counter = HealthCounter::new();
                let settled = *run(&mut counter, 2, 2, start).last().expect("two probes");
                assert_ne!(settled, Health::Unknown);
                let healths = run(&mut counter, 2, 2, &pattern.repeat(50));
                assert!(
                    healths.iter().all(|&h| h == settled),
                    "{start} {pattern}: {healths:?}"
                );
            }
        }
    }

    #[test]
    fn changes_report_where_the_run_began() {
        let spec = health_spec(2, 3);
        let mut counter = HealthCounter::new();
        let mut changes = Vec::new();
        for (t, ok) in [
            (0, true),
            (1, true),
            (2, false),
            (3, true),
            (4, false),
            (5, false),
            (6, false),
        ] {
            changes.extend(counter.observe(&spec, ok, at(t)));
        }
        assert_eq!(
            changes,
            [
                HealthChange {
                    from: Health::Unknown,
                    to: Health::Up,
                    cause: Cause::Rose,
                    since: at(0)
                },
                HealthChange {
                    from: Health::Up,
                    to: Health::Down,
                    cause: Cause::Fell,
                    since: at(4)
                },
            ]
        );
    }

    #[test]
    fn link_down_is_immediate_and_link_up_waits_for_probes() {
        let spec = health_spec(2, 5);
        let mut counter = HealthCounter::new();
        run(&mut counter, 2, 5, "+++");
        assert_eq!(counter.health(), Health::Up);
        counter.observe(&spec, false, at(9));
        assert_eq!(
            counter.link_down(at(10)),
            Some(HealthChange {
                from: Health::Up,
                to: Health::Down,
                cause: Cause::LinkDown,
                since: at(10)
            })
        );
        // Already down: nothing more to decide.
        assert_eq!(counter.link_down(at(11)), None);
        // A probe that left before the link went down does not count.
        assert_eq!(counter.observe(&spec, true, at(12)), None);
        assert_eq!(counter.observe(&spec, true, at(13)), None);
        assert!(counter.link_up());
        assert!(!counter.link_up(), "a second link-up is not a change");
        assert_eq!(counter.health(), Health::Down);
        assert_eq!(counter.observe(&spec, true, at(14)), None);
        let change = counter.observe(&spec, true, at(15)).expect("rose after two");
        assert_eq!(
            (change.to, change.cause, change.since),
            (Health::Up, Cause::Rose, at(14))
        );
    }

    #[test]
    fn link_down_decides_an_unknown_element() {
        let mut counter = HealthCounter::new();
        let change = counter.link_down(at(3)).expect("decided");
        assert_eq!((change.from, change.to), (Health::Unknown, Health::Down));
    }

    /// Found by the `api_bodies` fuzz target: a drain with a deadline the clock cannot hold
    /// (`PoolState::drain` saturates it to `Duration::MAX`), then a restart's rebase, where
    /// `t + to` overflowed and panicked.
    #[test]
    fn rebase_saturates_instead_of_overflowing() {
        assert_eq!(rebase(Duration::MAX, at(0), at(1)), Duration::MAX);
        assert_eq!(
            rebase(Duration::MAX, at(10), at(3)),
            Duration::MAX.saturating_sub(at(7))
        );
        assert_eq!(rebase(at(2), Duration::MAX, at(5)), Duration::ZERO);
    }

    #[test]
    fn rebase_moves_the_run_start() {
        let spec = health_spec(1, 3);
        let mut counter = HealthCounter::new();
        counter.observe(&spec, false, at(100));
        counter.rebase(at(100), at(7));
        counter.observe(&spec, false, at(8));
        let change = counter.observe(&spec, false, at(9)).expect("fell");
        assert_eq!(change.since, at(7));
        assert_eq!(
            rebase(at(5), at(10), at(2)),
            Duration::ZERO,
            "saturates at the epoch"
        );
        assert_eq!(rebase(at(5), at(10), at(20)), at(15));
    }
}
