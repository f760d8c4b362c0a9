//! Backup selection under placement policy (draft 5.1): which standby takes over from which
//! active, so that a live element and its backup do not fail together and stay close.
//!
//! Two elements share a risk when a failure-domain kind has the same value in both or their
//! shared-risk link groups meet; the risk of a pair is the sum of the weights of what they
//! share. The cost of a pair is the topology cost from the active's site to the backup's.
//!
//! Every active gets one backup among the standbys, minimising over the whole pool, in this
//! order: the total risk, the total cost (an unknown cost ranks after every known one), then the
//! standbys' rank (higher priority, then name). A standby backs at most `⌈N/M⌉` of the N
//! actives (M standbys), so that actives failing together find different backups where the
//! standbys allow it. With one active (`active-standby`) this is simply the best standby by
//! risk, cost, priority and name. It is a min-cost assignment, solved exactly by successive
//! shortest paths; for pools up to 8 elements a test checks it against every assignment.

use std::cmp::Reverse;

use serde::{Deserialize, Serialize};

use super::spec::{ElementSpec, PlacementSpec, PoolSpec};

/// What two elements share, and what it weighs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Risk {
    /// Sum of the weights of what is shared; 0 when nothing is.
    pub weight: u64,
    /// What is shared, as `kind value` (`host h1`, `srlg fiber-7`), in name order.
    pub shared: Vec<String>,
}

/// The risk `a` and `b` share under `placement`.
#[must_use]
pub fn risk(placement: &PlacementSpec, a: &ElementSpec, b: &ElementSpec) -> Risk {
    let mut out = Risk::default();
    shared(placement, a, b, |kind, value, weight| {
        out.weight += u64::from(weight);
        out.shared.push(format!("{kind} {value}"));
    });
    out
}

/// Calls `found(kind, value, weight)` for everything of positive weight `a` and `b` share.
fn shared(
    placement: &PlacementSpec,
    a: &ElementSpec,
    b: &ElementSpec,
    mut found: impl FnMut(&str, &str, u32),
) {
    for (kind, value) in &a.failure_domains {
        let weight = placement.weight(kind);
        if weight > 0 && b.failure_domains.get(kind) == Some(value) {
            found(kind, value, weight);
        }
    }
    // Both lists are sorted: walk them together.
    let srlg_weight = placement.weight("srlg");
    let (mut i, mut j) = (0, 0);
    while srlg_weight > 0 && i < a.srlg.len() && j < b.srlg.len() {
        match a.srlg[i].cmp(&b.srlg[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                found("srlg", &a.srlg[i], srlg_weight);
                i += 1;
                j += 1;
            }
        }
    }
}

/// The topology cost from `active`'s site to `backup`'s, if known.
#[must_use]
pub fn cost(placement: &PlacementSpec, active: &ElementSpec, backup: &ElementSpec) -> Option<u32> {
    placement.cost(active.site.as_deref()?, backup.site.as_deref()?)
}

/// The backup of one active, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backup {
    pub active: String,
    /// `None` when the pool has no standby.
    pub backup: Option<String>,
    pub risk: Risk,
    pub cost: Option<u32>,
}

impl Backup {
    /// The backup shares a risk with its active: no better choice existed under the policy.
    #[must_use]
    pub fn is_violation(&self) -> bool {
        self.backup.is_some() && self.risk.weight > 0
    }

    /// One line: `e3: no shared risk, site cost 2`.
    #[must_use]
    pub fn explain(&self) -> String {
        let Some(backup) = &self.backup else {
            return "none: no standby".to_owned();
        };
        let risk = if self.risk.shared.is_empty() {
            "no shared risk".to_owned()
        } else {
            format!(
                "shares {} (risk {}), the least available",
                self.risk.shared.join(", "),
                self.risk.weight
            )
        };
        let cost = self
            .cost
            .map_or_else(|| "site cost unknown".to_owned(), |c| format!("site cost {c}"));
        format!("{backup}: {risk}, {cost}")
    }
}

/// The backups of `actives` among `standbys` (indices into `spec.elements`), one entry per
/// active in the order given. See the module documentation for what is minimised.
#[must_use]
pub fn choose(spec: &PoolSpec, actives: &[usize], standbys: &[usize]) -> Vec<Backup> {
    let elements = &spec.elements;
    let placement = &spec.placement;
    let ranked = rank(spec, standbys);
    let key = keys(spec, actives, &ranked);
    // Narrower numbers are twice as fast; they fit when no distance can come near their limit.
    let largest = key.iter().flatten().max().copied().unwrap_or(0);
    let fits = largest
        .checked_mul(16 * (actives.len() as i128 + 1))
        .is_some_and(|x| x < i128::from(i64::MAX));
    let assigned = if fits {
        let narrow: Vec<Vec<i64>> = key
            .iter()
            .map(|row| row.iter().map(|&k| k as i64).collect())
            .collect();
        assign(&narrow)
    } else {
        assign(&key)
    };
    actives
        .iter()
        .zip(assigned)
        .map(|(&a, column)| {
            let backup = column.map(|c| ranked[c]);
            Backup {
                active: elements[a].name.clone(),
                backup: backup.map(|b| elements[b].name.clone()),
                risk: backup
                    .map(|b| risk(placement, &elements[a], &elements[b]))
                    .unwrap_or_default(),
                cost: backup.and_then(|b| cost(placement, &elements[a], &elements[b])),
            }
        })
        .collect()
}

/// The standbys in rank order: higher priority, then name.
#[must_use]
pub fn rank(spec: &PoolSpec, standbys: &[usize]) -> Vec<usize> {
    let mut ranked = standbys.to_vec();
    ranked.sort_by_key(|&s| (Reverse(spec.elements[s].priority), spec.elements[s].name.as_str()));
    ranked
}

/// The elements' placement with every name replaced by a number, so that a pair costs a few
/// integer comparisons: a pool of 1,000 elements has up to 250,000 pairs to weigh.
struct Interned {
    /// Weight of each failure-domain kind, by kind number.
    weights: Vec<u64>,
    srlg_weight: u64,
    /// Per element: its value number for each kind (`u32::MAX` when it has none), its sorted
    /// link-group numbers and its site number.
    domains: Vec<Vec<u32>>,
    srlg: Vec<Vec<u32>>,
    site: Vec<Option<usize>>,
    /// Site-to-site costs, `sites × sites`.
    costs: Vec<Option<u32>>,
    sites: usize,
}

impl Interned {
    fn new(spec: &PoolSpec) -> Self {
        fn number<'a>(table: &mut std::collections::HashMap<&'a str, u32>, name: &'a str) -> u32 {
            let next = u32::try_from(table.len()).unwrap_or(u32::MAX);
            *table.entry(name).or_insert(next)
        }
        let placement = &spec.placement;
        let mut kinds = std::collections::HashMap::new();
        let mut values = std::collections::HashMap::new();
        let mut groups = std::collections::HashMap::new();
        // Sites: the cost map's, whether they give costs or take them, and the elements'.
        let mut names: Vec<&str> = placement
            .costs
            .iter()
            .flat_map(|(from, row)| std::iter::once(from).chain(row.keys()))
            .chain(spec.elements.iter().filter_map(|e| e.site.as_ref()))
            .map(String::as_str)
            .collect();
        names.sort_unstable();
        names.dedup();
        let sites: std::collections::HashMap<&str, usize> =
            names.iter().enumerate().map(|(i, &s)| (s, i)).collect();
        let mut pairs: Vec<Vec<(u32, u32)>> = Vec::with_capacity(spec.elements.len());
        let mut srlg = Vec::with_capacity(spec.elements.len());
        let mut site = Vec::with_capacity(spec.elements.len());
        for e in &spec.elements {
            pairs.push(
                e.failure_domains
                    .iter()
                    .map(|(k, v)| (number(&mut kinds, k), number(&mut values, v)))
                    .collect(),
            );
            let mut g: Vec<u32> = e.srlg.iter().map(|s| number(&mut groups, s)).collect();
            g.sort_unstable();
            srlg.push(g);
            site.push(e.site.as_deref().and_then(|s| sites.get(s).copied()));
        }
        let mut weights = vec![0; kinds.len()];
        for (kind, &k) in &kinds {
            weights[k as usize] = u64::from(placement.weight(kind));
        }
        let domains = pairs
            .into_iter()
            .map(|p| {
                let mut row = vec![u32::MAX; kinds.len()];
                for (k, v) in p {
                    row[k as usize] = v;
                }
                row
            })
            .collect();
        let costs = names
            .iter()
            .flat_map(|from| names.iter().map(|to| placement.cost(from, to)))
            .collect();
        Self {
            weights,
            srlg_weight: u64::from(placement.weight("srlg")),
            domains,
            srlg,
            site,
            costs,
            sites: names.len(),
        }
    }

    fn risk(&self, a: usize, b: usize) -> u64 {
        let mut total = 0;
        for ((&va, &vb), &w) in self.domains[a].iter().zip(&self.domains[b]).zip(&self.weights) {
            if va == vb && va != u32::MAX {
                total += w;
            }
        }
        let (ga, gb) = (&self.srlg[a], &self.srlg[b]);
        let (mut i, mut j) = (0, 0);
        while self.srlg_weight > 0 && i < ga.len() && j < gb.len() {
            match ga[i].cmp(&gb[j]) {
                std::cmp::Ordering::Less => i += 1,
                std::cmp::Ordering::Greater => j += 1,
                std::cmp::Ordering::Equal => {
                    total += self.srlg_weight;
                    i += 1;
                    j += 1;
                }
            }
        }
        total
    }

    fn cost(&self, a: usize, b: usize) -> Option<u32> {
        self.costs[self.site[a]? * self.sites + self.site[b]?]
    }
}

/// One number per (active, ranked standby) pair whose sums order assignments as the module
/// documentation says: risk, then cost (unknown = one more than the highest known), then rank.
/// Each term's multiplier exceeds the largest possible total of the terms after it. Public for
/// the benchmark, whose baseline is each active's least key alone.
#[must_use]
pub fn keys(spec: &PoolSpec, actives: &[usize], ranked: &[usize]) -> Vec<Vec<i128>> {
    let interned = Interned::new(spec);
    let (n, m) = (actives.len() as i128, ranked.len() as i128);
    // Unknown ranks after the highest cost of the map, hence after every known pair.
    let unknown = i128::from(interned.costs.iter().flatten().max().copied().unwrap_or(0)) + 1;
    let cost_scale = n * m + 1;
    let risk_scale = (n * unknown + 1) * cost_scale;
    actives
        .iter()
        .map(|&a| {
            let mut rank = 0;
            ranked
                .iter()
                .map(|&s| {
                    let r = i128::from(interned.risk(a, s));
                    let c = interned.cost(a, s).map_or(unknown, i128::from);
                    rank += 1;
                    r * risk_scale + c * cost_scale + rank
                })
                .collect()
        })
        .collect()
}

/// The numbers [`assign`] works in.
trait Key: Copy + Ord + Default + std::ops::Add<Output = Self> + std::ops::Sub<Output = Self> {
    /// Farther than any distance: a quarter of the range, so that sums of two never overflow.
    const INF: Self;
}

impl Key for i64 {
    const INF: Self = i64::MAX / 4;
}

impl Key for i128 {
    const INF: Self = i128::MAX / 4;
}

/// The minimum-sum assignment of rows (actives) to columns (standbys) where a column takes at
/// most `⌈rows/columns⌉` rows: for each row, in order, a shortest augmenting path found by
/// Dijkstra on reduced costs over dense arrays (every row reaches every column), stopping at
/// the first column with room. `None` for every row when there is no column.
///
/// Potentials `row_p`, `col_p` and `sink_p` keep every reduced cost non-negative; an assigned
/// (row, column) pair has reduced cost 0, so a column's rows are reached at the column's
/// distance.
fn assign<K: Key>(key: &[Vec<K>]) -> Vec<Option<usize>> {
    let columns = key.first().map_or(0, Vec::len);
    if columns == 0 {
        return vec![None; key.len()];
    }
    let mut search = Search::new(key, columns);
    for root in 0..key.len() {
        search.augment(root);
    }
    search.column_of
}

/// The state of [`assign`]: the assignment so far, the potentials, and one Dijkstra's arrays.
struct Search<'k, K> {
    key: &'k [Vec<K>],
    capacity: usize,
    column_of: Vec<Option<usize>>,
    members: Vec<Vec<usize>>,
    row_p: Vec<K>,
    col_p: Vec<K>,
    sink_p: K,
    row_dist: Vec<K>,
    col_dist: Vec<K>,
    /// The row each column was reached from, and the column each row was reached from.
    col_from: Vec<usize>,
    row_from: Vec<usize>,
    settled: Vec<bool>,
}

impl<'k, K: Key> Search<'k, K> {
    fn new(key: &'k [Vec<K>], columns: usize) -> Self {
        let rows = key.len();
        Self {
            key,
            capacity: rows.div_ceil(columns),
            column_of: vec![None; rows],
            members: vec![Vec::new(); columns],
            row_p: vec![K::default(); rows],
            col_p: vec![K::default(); columns],
            sink_p: K::default(),
            row_dist: vec![K::INF; rows],
            col_dist: vec![K::INF; columns],
            col_from: vec![0; columns],
            row_from: vec![0; rows],
            settled: vec![false; columns],
        }
    }

    /// Relaxes every edge out of `row`, reached at `row_dist[row]`.
    fn relax(&mut self, row: usize) {
        let base = self.row_dist[row] + self.row_p[row];
        let own = self.column_of[row];
        for (col, &k) in self.key[row].iter().enumerate() {
            let dist = base + k - self.col_p[col];
            if dist < self.col_dist[col] && !self.settled[col] && own != Some(col) {
                self.col_dist[col] = dist;
                self.col_from[col] = row;
            }
        }
    }

    /// Assigns the unassigned `root` along a shortest path to a column with room.
    fn augment(&mut self, root: usize) {
        self.col_dist.fill(K::INF);
        self.row_dist.fill(K::INF);
        self.settled.fill(false);
        let (mut sink_dist, mut sink_from) = (K::INF, 0);
        self.row_dist[root] = K::default();
        self.relax(root);
        loop {
            let mut next = None;
            let mut nearest = sink_dist;
            for (col, &dist) in self.col_dist.iter().enumerate() {
                if dist < nearest && !self.settled[col] {
                    nearest = dist;
                    next = Some(col);
                }
            }
            // The sink is nearer than every unsettled column: the path is found.
            let Some(col) = next else { break };
            self.settled[col] = true;
            let to_sink = self.col_dist[col] + self.col_p[col] - self.sink_p;
            if self.members[col].len() < self.capacity && to_sink < sink_dist {
                sink_dist = to_sink;
                sink_from = col;
            }
            for at in 0..self.members[col].len() {
                let row = self.members[col][at];
                let dist = self.col_dist[col] - self.key[row][col] + self.col_p[col] - self.row_p[row];
                if dist < self.row_dist[row] {
                    self.row_dist[row] = dist;
                    self.row_from[row] = col;
                    self.relax(row);
                }
            }
        }
        debug_assert!(sink_dist < K::INF, "the columns have room for every row");
        for (p, &d) in self.row_p.iter_mut().zip(&self.row_dist) {
            *p = *p + d.min(sink_dist);
        }
        for (p, &d) in self.col_p.iter_mut().zip(&self.col_dist) {
            *p = *p + d.min(sink_dist);
        }
        self.sink_p = self.sink_p + sink_dist;
        // Walk back from the sink: each row on the path moves to the column after it.
        let mut col = sink_from;
        loop {
            let row = self.col_from[col];
            if let Some(old) = self.column_of[row] {
                self.members[old].retain(|&x| x != row);
            }
            self.members[col].push(row);
            self.column_of[row] = Some(col);
            if row == root {
                break;
            }
            col = self.row_from[row];
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, sync::Arc};

    use proptest::prelude::*;

    use super::*;
    use crate::model::testutil::{AS_PREEMPT, pool};

    fn element(spec: &mut PoolSpec, i: usize, domains: &[(&str, &str)], srlg: &[&str], site: Option<&str>) {
        let e = &mut spec.elements[i];
        e.failure_domains = domains
            .iter()
            .map(|&(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        e.srlg = srlg.iter().map(|&s| s.to_owned()).collect();
        e.site = site.map(str::to_owned);
    }

    fn placement(weights: &[(&str, u32)], costs: &[(&str, &str, u32)]) -> Arc<PlacementSpec> {
        let mut p = PlacementSpec {
            weights: weights.iter().map(|&(k, w)| (k.to_owned(), w)).collect(),
            costs: BTreeMap::new(),
        };
        for &(from, to, c) in costs {
            p.costs
                .entry(from.to_owned())
                .or_default()
                .insert(to.to_owned(), c);
            p.costs.entry(to.to_owned()).or_default();
        }
        Arc::new(p)
    }

    fn names(backups: &[Backup]) -> Vec<Option<&str>> {
        backups.iter().map(|b| b.backup.as_deref()).collect()
    }

    #[test]
    fn risk_sums_the_weights_of_shared_domains_and_link_groups() {
        let mut spec = pool(AS_PREEMPT, &[("a", 100, 1), ("b", 100, 1)]);
        element(
            &mut spec,
            0,
            &[("host", "h1"), ("rack", "r1"), ("zone", "z1")],
            &["d2", "f7"],
            None,
        );
        element(
            &mut spec,
            1,
            &[("host", "h2"), ("rack", "r1"), ("zone", "z1")],
            &["f7", "x"],
            None,
        );
        let p = placement(&[("rack", 10), ("zone", 0), ("srlg", 50)], &[]);
        let r = risk(&p, &spec.elements[0], &spec.elements[1]);
        assert_eq!(r.weight, 60);
        assert_eq!(
            r.shared,
            ["rack r1", "srlg f7"],
            "a kind weighing 0 is not a risk"
        );
        // Unweighted kinds weigh 1; nothing shared weighs 0.
        let r = risk(&PlacementSpec::default(), &spec.elements[0], &spec.elements[1]);
        assert_eq!(r.weight, 3);
        element(&mut spec, 1, &[("host", "h2")], &[], None);
        assert_eq!(risk(&p, &spec.elements[0], &spec.elements[1]), Risk::default());
    }

    #[test]
    fn the_backup_shares_no_risk_then_is_closest_then_has_the_higher_priority() {
        // a is active; b is the best by priority but shares a's host; c and d share nothing,
        // d is nearer; e shares nothing, is as near as d, with a higher priority than d.
        let mut spec = pool(
            AS_PREEMPT,
            &[
                ("a", 500, 1),
                ("b", 400, 1),
                ("c", 300, 1),
                ("d", 100, 1),
                ("e", 200, 1),
            ],
        );
        spec.placement = placement(&[], &[("s1", "s2", 5), ("s1", "s3", 2)]);
        element(&mut spec, 0, &[("host", "h1")], &[], Some("s1"));
        element(&mut spec, 1, &[("host", "h1")], &[], Some("s1"));
        element(&mut spec, 2, &[("host", "h2")], &[], Some("s2"));
        element(&mut spec, 3, &[("host", "h3")], &[], Some("s3"));
        element(&mut spec, 4, &[("host", "h4")], &[], Some("s3"));
        let chosen = choose(&spec, &[0], &[1, 2, 3, 4]);
        assert_eq!(names(&chosen), [Some("e")]);
        assert_eq!(chosen[0].explain(), "e: no shared risk, site cost 2");
        assert!(!chosen[0].is_violation());
        // Without e: d (cost 2) before c (cost 5).
        assert_eq!(names(&choose(&spec, &[0], &[1, 2, 3])), [Some("d")]);
        // At the same cost, priority decides among the risk-free.
        element(&mut spec, 2, &[("host", "h2")], &[], Some("s3"));
        assert_eq!(names(&choose(&spec, &[0], &[1, 3, 2])), [Some("c")]);
        // Only b: it shares the host, is chosen, and is a violation.
        let only_b = choose(&spec, &[0], &[1]);
        assert_eq!(names(&only_b), [Some("b")]);
        assert!(only_b[0].is_violation());
        assert_eq!(
            only_b[0].explain(),
            "b: shares host h1 (risk 1), the least available, site cost 0"
        );
        // No standby at all.
        assert_eq!(choose(&spec, &[0], &[])[0].explain(), "none: no standby");
    }

    #[test]
    fn unknown_costs_rank_after_known_ones_and_weights_order_the_risks() {
        let mut spec = pool(
            AS_PREEMPT,
            &[("a", 100, 1), ("b", 300, 1), ("c", 200, 1), ("d", 100, 1)],
        );
        spec.placement = placement(&[("host", 100), ("rack", 10), ("zone", 1)], &[("s1", "s2", 1000)]);
        element(
            &mut spec,
            0,
            &[("host", "h1"), ("rack", "r1"), ("zone", "z1")],
            &[],
            Some("s1"),
        );
        // b: same rack; c: same zone, no site (unknown cost); d: same zone, far site.
        element(
            &mut spec,
            1,
            &[("host", "h2"), ("rack", "r1"), ("zone", "z1")],
            &[],
            Some("s1"),
        );
        element(
            &mut spec,
            2,
            &[("host", "h3"), ("rack", "r2"), ("zone", "z1")],
            &[],
            None,
        );
        element(
            &mut spec,
            3,
            &[("host", "h4"), ("rack", "r3"), ("zone", "z1")],
            &[],
            Some("s2"),
        );
        let chosen = choose(&spec, &[0], &[1, 2, 3]);
        assert_eq!(
            names(&chosen),
            [Some("d")],
            "same zone beats same rack; a known cost beats an unknown one"
        );
        assert_eq!(
            chosen[0].explain(),
            "d: shares zone z1 (risk 1), the least available, site cost 1000"
        );
    }

    #[test]
    fn n_plus_m_spreads_the_actives_over_the_standbys() {
        // Four actives on two hosts, two standbys on a third and fourth: each standby backs two.
        let mut spec = pool(
            crate::model::testutil::n_plus_m(4, false),
            &[
                ("a1", 9, 1),
                ("a2", 9, 1),
                ("a3", 9, 1),
                ("a4", 9, 1),
                ("s1", 1, 1),
                ("s2", 1, 1),
            ],
        );
        for (i, host) in ["h1", "h1", "h2", "h2", "h3", "h4"].iter().enumerate() {
            element(&mut spec, i, &[("host", host)], &[], None);
        }
        let chosen = choose(&spec, &[0, 1, 2, 3], &[4, 5]);
        let b = names(&chosen);
        assert_eq!(b.iter().filter(|&&x| x == Some("s1")).count(), 2, "{b:?}");
        assert_eq!(b.iter().filter(|&&x| x == Some("s2")).count(), 2, "{b:?}");
        // One standby on a1's host: it backs the actives it shares nothing with.
        element(&mut spec, 4, &[("host", "h1")], &[], None);
        let chosen = choose(&spec, &[0, 1, 2, 3], &[4, 5]);
        assert_eq!(names(&chosen), [Some("s2"), Some("s2"), Some("s1"), Some("s1")]);
        assert!(chosen.iter().all(|c| !c.is_violation()));
    }

    /// Every assignment of actives to standbys within the capacity, by brute force: the least
    /// (total risk, total cost) and the assignment's key sum.
    fn brute_force(key: &[Vec<i128>]) -> i128 {
        fn go(key: &[Vec<i128>], row: usize, load: &mut [usize], capacity: usize) -> i128 {
            if row == key.len() {
                return 0;
            }
            let mut best = i128::MAX;
            for c in 0..load.len() {
                if load[c] < capacity {
                    load[c] += 1;
                    let rest = go(key, row + 1, load, capacity);
                    load[c] -= 1;
                    if rest != i128::MAX {
                        best = best.min(key[row][c] + rest);
                    }
                }
            }
            best
        }
        let m = key[0].len();
        go(key, 0, &mut vec![0; m], key.len().div_ceil(m))
    }

    fn topology() -> impl Strategy<Value = (PoolSpec, Vec<usize>, Vec<usize>)> {
        (2usize..=8, 1usize..=7, prop::collection::vec(0u32..4, 0..4))
            .prop_flat_map(|(n, actives, weights)| {
                let actives = actives.min(n - 1);
                let per_element = (
                    0u8..3,
                    0u8..3,
                    0u8..3,
                    prop::collection::vec(0u8..3, 0..2),
                    prop::option::of(0u8..4),
                );
                let costs = prop::collection::vec(prop::option::of(0u32..10), 16);
                (
                    Just(n),
                    Just(actives),
                    Just(weights),
                    prop::collection::vec(per_element, n),
                    costs,
                )
            })
            .prop_map(|(n, actives, weights, per_element, costs)| {
                let named: Vec<(String, u32, u32)> =
                    (0..n).map(|i| (format!("e{i}"), (i as u32 * 7) % 3, 1)).collect();
                let borrowed: Vec<(&str, u32, u32)> =
                    named.iter().map(|(s, p, w)| (s.as_str(), *p, *w)).collect();
                let mut spec = pool(crate::model::testutil::n_plus_m(actives as u32, false), &borrowed);
                let kinds = ["host", "rack", "zone"];
                let mut p = PlacementSpec::default();
                for (kind, w) in kinds.iter().chain(&["srlg"]).zip(&weights) {
                    p.weights.insert((*kind).to_owned(), *w);
                }
                for from in 0..4 {
                    for to in 0..4 {
                        let row = p.costs.entry(format!("s{from}")).or_default();
                        if let Some(c) = costs[from * 4 + to] {
                            row.insert(format!("s{to}"), c);
                        }
                    }
                }
                spec.placement = Arc::new(p);
                for (e, (host, rack, zone, srlg, site)) in spec.elements.iter_mut().zip(per_element) {
                    e.failure_domains = kinds
                        .iter()
                        .zip([host, rack, zone])
                        .map(|(k, v)| ((*k).to_owned(), format!("{k}{v}")))
                        .collect();
                    let mut srlg: Vec<String> = srlg.iter().map(|g| format!("g{g}")).collect();
                    srlg.sort();
                    srlg.dedup();
                    e.srlg = srlg;
                    e.site = site.map(|s| format!("s{s}"));
                }
                (spec, (0..actives).collect(), (actives..n).collect())
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn the_assignment_is_the_brute_force_optimum((spec, actives, standbys) in topology()) {
            let chosen = choose(&spec, &actives, &standbys);
            prop_assert_eq!(chosen.len(), actives.len());
            let ranked = rank(&spec, &standbys);
            let key = keys(&spec, &actives, &ranked);
            // The numbered placement weighs every pair as the named one does.
            let interned = Interned::new(&spec);
            for a in 0..spec.elements.len() {
                for b in 0..spec.elements.len() {
                    let (ea, eb) = (&spec.elements[a], &spec.elements[b]);
                    prop_assert_eq!(interned.risk(a, b), risk(&spec.placement, ea, eb).weight);
                    prop_assert_eq!(interned.cost(a, b), cost(&spec.placement, ea, eb));
                }
            }
            let column = |name: &str| ranked.iter().position(|&s| spec.elements[s].name == name).expect("a standby");
            let mut load = vec![0; ranked.len()];
            let mut total = 0;
            for (row, c) in chosen.iter().enumerate() {
                let c = column(c.backup.as_deref().expect("a backup"));
                load[c] += 1;
                total += key[row][c];
            }
            let capacity = actives.len().div_ceil(ranked.len());
            prop_assert!(load.iter().all(|&l| l <= capacity), "{:?}", load);
            prop_assert_eq!(total, brute_force(&key));
            // The same inputs give the same answer.
            prop_assert_eq!(choose(&spec, &actives, &standbys), chosen);
        }
    }
}
