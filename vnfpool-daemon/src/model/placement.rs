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
//! shortest paths over the full (active, standby) matrix, each search relaxing only the pairs
//! that could still matter; for pools up to 8 elements a test checks it against every
//! assignment, and for pools up to 60 against the plain dense solver.

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
    let assigned = match keys(spec, actives, &ranked) {
        Keys::Narrow(key) => assign(&key, BAND),
        Keys::Wide(key) => assign(&key, BAND),
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

/// rustc's own hasher (`rustc-hash`): a few integer operations per word. What is hashed here
/// comes from the configuration, not from an attacker, and numbering the names of a pool is
/// most of the cost of an `active-standby` selection.
type FxMap<K, V> = rustc_hash::FxHashMap<K, V>;

/// The elements' placement with every name replaced by a number, so that weighing a pair costs
/// a few integer operations: a pool of 1,000 elements has up to 250,000 pairs to weigh.
struct Interned {
    /// Weight of each domain (a failure-domain kind with one of its values), by domain number.
    weights: Vec<u64>,
    srlg_weight: u64,
    /// Per element: its domains of positive weight, its link-group numbers and its site number.
    domains: Vec<Vec<u32>>,
    srlg: Vec<Vec<u32>>,
    site: Vec<Option<usize>>,
    /// Domains and link groups numbered.
    domain_count: usize,
    group_count: usize,
    /// Site-to-site costs, `sites × sites`.
    costs: Vec<Option<u32>>,
    sites: usize,
}

impl Interned {
    fn new<'a>(spec: &'a PoolSpec) -> Self {
        let placement = &spec.placement;
        let mut domain_numbers = FxMap::default();
        let mut group_numbers = FxMap::default();
        let mut weights = Vec::new();
        // Sites: the cost map's, whether they give costs or take them, and the elements'.
        let mut site_numbers: FxMap<&str, usize> = FxMap::default();
        let mut number = |name: &'a str| {
            let next = site_numbers.len();
            *site_numbers.entry(name).or_insert(next)
        };
        let mut given = Vec::new();
        for (from, row) in &placement.costs {
            let from = number(from);
            for (to, &c) in row {
                given.push((from, number(to), c));
            }
        }
        let mut domains = Vec::with_capacity(spec.elements.len());
        let mut srlg = Vec::with_capacity(spec.elements.len());
        let mut site = Vec::with_capacity(spec.elements.len());
        for e in &spec.elements {
            let mut own = Vec::with_capacity(e.failure_domains.len());
            for (kind, value) in &e.failure_domains {
                let next = u32::try_from(weights.len()).unwrap_or(u32::MAX);
                let d = *domain_numbers
                    .entry((kind.as_str(), value.as_str()))
                    .or_insert_with(|| {
                        weights.push(u64::from(placement.weight(kind)));
                        next
                    });
                // A kind weighing 0 is not a risk.
                if weights[d as usize] > 0 {
                    own.push(d);
                }
            }
            domains.push(own);
            let mut g: Vec<u32> = e
                .srlg
                .iter()
                .map(|s| {
                    let next = u32::try_from(group_numbers.len()).unwrap_or(u32::MAX);
                    *group_numbers.entry(s.as_str()).or_insert(next)
                })
                .collect();
            // Sorted without repeats, as the specification holds them.
            g.sort_unstable();
            g.dedup();
            srlg.push(g);
            site.push(e.site.as_deref().map(&mut number));
        }
        // A site costs 0 to itself unless the map says otherwise.
        let sites = site_numbers.len();
        let mut costs = vec![None; sites * sites];
        for s in 0..sites {
            costs[s * sites + s] = Some(0);
        }
        for (from, to, c) in given {
            costs[from * sites + to] = Some(c);
        }
        Self {
            domain_count: weights.len(),
            weights,
            srlg_weight: u64::from(placement.weight("srlg")),
            domains,
            group_count: group_numbers.len(),
            srlg,
            site,
            costs,
            sites,
        }
    }

    /// The most risk `a` can share with anything.
    fn most_risk(&self, a: usize) -> u128 {
        let domains: u128 = self.domains[a]
            .iter()
            .map(|&d| u128::from(self.weights[d as usize]))
            .sum();
        domains + u128::from(self.srlg_weight) * self.srlg[a].len() as u128
    }
}

/// The key of every (active, ranked standby) pair, row-major: one row per active, one column
/// per standby in rank order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matrix<K> {
    rows: usize,
    columns: usize,
    values: Vec<K>,
}

impl<K: Copy> Matrix<K> {
    #[must_use]
    pub fn rows(&self) -> usize {
        self.rows
    }

    #[must_use]
    pub fn columns(&self) -> usize {
        self.columns
    }

    /// The keys of `row`'s pairs, by column.
    #[must_use]
    pub fn row(&self, row: usize) -> &[K] {
        &self.values[row * self.columns..][..self.columns]
    }

    fn get(&self, row: usize, column: usize) -> K {
        self.values[row * self.columns + column]
    }
}

/// The keys in the narrowest numbers that hold them and every distance [`assign`] computes
/// from them: `i64` unless the weights and costs are extreme.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Keys {
    Narrow(Matrix<i64>),
    Wide(Matrix<i128>),
}

impl Keys {
    /// The key of (`row`, `column`).
    #[must_use]
    pub fn get(&self, row: usize, column: usize) -> i128 {
        match self {
            Self::Narrow(m) => i128::from(m.get(row, column)),
            Self::Wide(m) => m.get(row, column),
        }
    }
}

/// One number per (active, ranked standby) pair whose sums order assignments as the module
/// documentation says: risk, then cost (unknown = one more than the highest known), then rank.
/// Each term's multiplier exceeds the largest possible total of the terms after it. Public for
/// the benchmark, whose baseline is each active's least key alone.
#[must_use]
pub fn keys(spec: &PoolSpec, actives: &[usize], ranked: &[usize]) -> Keys {
    let weigh = Weigh::new(spec, actives, ranked);
    // Narrower numbers are twice as fast; they fit when no distance can come near their limit.
    let fits = weigh
        .largest()
        .checked_mul(16 * (actives.len() as i128 + 1))
        .is_some_and(|x| x < i128::from(i64::MAX));
    if fits {
        Keys::Narrow(weigh.matrix())
    } else {
        Keys::Wide(weigh.matrix())
    }
}

/// What weighing the pairs of one pool takes: the numbered placement, the scales of the key's
/// terms, and for each domain and link group the standbys (columns) in it, so that an active
/// finds the standbys it shares something with without comparing it with the others.
struct Weigh<'a> {
    interned: Interned,
    actives: &'a [usize],
    /// Per column: its site number, `sites` when it has none.
    column_site: Vec<usize>,
    /// Columns of each domain and each link group: `starts[d]..starts[d + 1]` in `columns`.
    domain_starts: Vec<usize>,
    domain_columns: Vec<usize>,
    group_starts: Vec<usize>,
    group_columns: Vec<usize>,
    unknown: i128,
    cost_scale: i128,
    risk_scale: i128,
}

/// Lists, for each of `count` keys, the columns holding it: `(starts, columns)`, where key `k`'s
/// columns are `columns[starts[k]..starts[k + 1]]`, in column order.
fn index<'a>(count: usize, held: impl Iterator<Item = &'a [u32]> + Clone) -> (Vec<usize>, Vec<usize>) {
    let mut starts = vec![0; count + 1];
    for keys in held.clone() {
        for &k in keys {
            starts[k as usize + 1] += 1;
        }
    }
    for k in 0..count {
        starts[k + 1] += starts[k];
    }
    let mut next = starts.clone();
    let mut columns = vec![0; starts[count]];
    for (column, keys) in held.enumerate() {
        for &k in keys {
            columns[next[k as usize]] = column;
            next[k as usize] += 1;
        }
    }
    (starts, columns)
}

impl<'a> Weigh<'a> {
    fn new(spec: &PoolSpec, actives: &'a [usize], ranked: &[usize]) -> Self {
        let interned = Interned::new(spec);
        let (n, m) = (actives.len() as i128, ranked.len() as i128);
        // Unknown ranks after the highest cost of the map, hence after every known pair.
        let unknown = i128::from(interned.costs.iter().flatten().max().copied().unwrap_or(0)) + 1;
        let cost_scale = n * m + 1;
        let risk_scale = (n * unknown + 1) * cost_scale;
        let (domain_starts, domain_columns) = index(
            interned.domain_count,
            ranked.iter().map(|&s| interned.domains[s].as_slice()),
        );
        let (group_starts, group_columns) = index(
            interned.group_count,
            ranked.iter().map(|&s| interned.srlg[s].as_slice()),
        );
        let column_site = ranked
            .iter()
            .map(|&s| interned.site[s].unwrap_or(interned.sites))
            .collect();
        Self {
            interned,
            actives,
            column_site,
            domain_starts,
            domain_columns,
            group_starts,
            group_columns,
            unknown,
            cost_scale,
            risk_scale,
        }
    }

    /// No key exceeds this.
    fn largest(&self) -> i128 {
        let risk = self
            .actives
            .iter()
            .map(|&a| self.interned.most_risk(a))
            .max()
            .unwrap_or(0);
        i128::try_from(risk).map_or(i128::MAX, |r| {
            r.saturating_mul(self.risk_scale)
                .saturating_add(self.unknown * self.cost_scale)
                .saturating_add(self.column_site.len() as i128)
        })
    }

    /// Every key, row by row: each row adds up the risk its active shares with the standbys
    /// it has something in common with, then the site cost and the rank of every standby.
    fn matrix<K: Key>(&self) -> Matrix<K> {
        let interned = &self.interned;
        let (rows, columns) = (self.actives.len(), self.column_site.len());
        let mut values = Vec::with_capacity(rows * columns);
        // Per column, the rank then the risk terms of the row at hand.
        let ranks: Vec<K> = (1..=columns).map(|r| K::of(r as i128)).collect();
        let mut partial = ranks.clone();
        // Each domain's and link group's risk term, and the cost term by the standby's site
        // (the last entry for a standby with no site).
        let domain_terms: Vec<K> = interned
            .weights
            .iter()
            .map(|&w| K::of(i128::from(w) * self.risk_scale))
            .collect();
        let srlg_term = K::of(i128::from(interned.srlg_weight) * self.risk_scale);
        let mut by_site = vec![K::default(); interned.sites + 1];
        let unknown = K::of(self.unknown * self.cost_scale);
        for &a in self.actives {
            partial.copy_from_slice(&ranks);
            for &d in &interned.domains[a] {
                let (d, term) = (d as usize, domain_terms[d as usize]);
                for &c in &self.domain_columns[self.domain_starts[d]..self.domain_starts[d + 1]] {
                    partial[c] = partial[c] + term;
                }
            }
            if interned.srlg_weight > 0 {
                for &g in &interned.srlg[a] {
                    let g = g as usize;
                    for &c in &self.group_columns[self.group_starts[g]..self.group_starts[g + 1]] {
                        partial[c] = partial[c] + srlg_term;
                    }
                }
            }
            by_site.fill(unknown);
            if let Some(s) = interned.site[a] {
                let costs = &interned.costs[s * interned.sites..][..interned.sites];
                for (term, c) in by_site.iter_mut().zip(costs) {
                    if let Some(c) = c {
                        *term = K::of(i128::from(*c) * self.cost_scale);
                    }
                }
            }
            values.extend(
                partial
                    .iter()
                    .zip(&self.column_site)
                    .map(|(&p, &s)| p + by_site[s]),
            );
        }
        Matrix {
            rows,
            columns,
            values,
        }
    }
}

/// The numbers [`assign`] works in.
trait Key:
    Copy + Ord + Default + std::hash::Hash + std::ops::Add<Output = Self> + std::ops::Sub<Output = Self>
{
    /// Farther than any distance: a quarter of the range, so that sums of two never overflow.
    const INF: Self;
    /// Bits in a key: [`Queue`] has one bucket more.
    const BITS: usize;
    /// `x`, which the caller knows to fit.
    fn of(x: i128) -> Self;
    /// How many low bits `self` and `other` (both non-negative) span from the highest bit
    /// where they differ down: 0 when they are equal.
    fn differ(self, other: Self) -> usize;
}

impl Key for i64 {
    const INF: Self = i64::MAX / 4;
    const BITS: usize = 64;

    fn of(x: i128) -> Self {
        x as i64
    }

    fn differ(self, other: Self) -> usize {
        (64 - (self ^ other).leading_zeros()) as usize
    }
}

impl Key for i128 {
    const INF: Self = i128::MAX / 4;
    const BITS: usize = 128;

    fn of(x: i128) -> Self {
        x
    }

    fn differ(self, other: Self) -> usize {
        (128 - (self ^ other).leading_zeros()) as usize
    }
}

/// The queue of a Dijkstra search, whose keys never go below the last one taken: a radix heap.
/// An item waits in the bucket of the highest bit where its key differs from that last key;
/// taking the least empties the lowest bucket with items into lower ones, so each item moves
/// down a few times at most, where a binary heap sifts through all its levels at every take.
/// Items of equal key leave last in, first out.
struct Queue<K> {
    last: K,
    buckets: Vec<Vec<(K, usize)>>,
    len: usize,
    /// The least key queued, once computed, until the next take.
    least: Option<K>,
}

impl<K: Key> Queue<K> {
    fn new() -> Self {
        Self {
            last: K::default(),
            buckets: (0..=K::BITS).map(|_| Vec::new()).collect(),
            len: 0,
            least: None,
        }
    }

    /// Queues `id` at `key`, no less than the last key taken.
    fn push(&mut self, key: K, id: usize) {
        debug_assert!(key >= self.last, "a radix heap takes no key below the last taken");
        self.buckets[key.differ(self.last)].push((key, id));
        self.len += 1;
        if let Some(least) = self.least
            && key < least
        {
            self.least = Some(key);
        }
    }

    /// The least key queued.
    fn peek(&mut self) -> Option<K> {
        if self.len == 0 {
            return None;
        }
        if !self.buckets[0].is_empty() {
            return Some(self.last);
        }
        if self.least.is_none() {
            let bucket = self.buckets.iter().find(|b| !b.is_empty())?;
            self.least = bucket.iter().map(|&(k, _)| k).min();
        }
        self.least
    }

    /// Takes an item of the least key.
    fn pop(&mut self) -> Option<(K, usize)> {
        if self.len == 0 {
            return None;
        }
        if self.buckets[0].is_empty() {
            let b = self.buckets.iter().position(|b| !b.is_empty())?;
            let mut items = std::mem::take(&mut self.buckets[b]);
            self.last = items.iter().map(|&(k, _)| k).min()?;
            // Every item now differs from the new last key below bit `b`.
            for (key, id) in items.drain(..) {
                self.buckets[key.differ(self.last)].push((key, id));
            }
            self.buckets[b] = items;
        }
        self.least = None;
        self.len -= 1;
        self.buckets[0].pop()
    }

    fn clear(&mut self) {
        if self.len > 0 {
            self.buckets.iter_mut().for_each(Vec::clear);
        }
        self.len = 0;
        self.last = K::default();
        self.least = None;
    }
}

/// Columns per band in [`assign`]: a row's columns are sorted a band of about this many at a
/// time, as searches reach further.
const BAND: usize = 32;

/// The minimum-sum assignment of rows (actives) to columns (standbys) where a column takes at
/// most `⌈rows/columns⌉` rows. `None` for every row when there is no column.
///
/// Successive shortest paths: for each row, in order, Dijkstra on reduced costs finds a
/// shortest augmenting path to a column with room, stopping there. Every row reaches every
/// column, but lazily: a row reached at `d` offers its columns cheapest first, and no column's
/// potential is positive, so `d + row_p + key` bounds the distance of every column it has not
/// offered yet; it offers more only while that bound is below every other candidate's
/// distance and the sink's. A search relaxes the edges Dijkstra on the full matrix would need,
/// not whole rows.
fn assign<K: Key>(key: &Matrix<K>, band: usize) -> Vec<Option<usize>> {
    if key.columns == 0 {
        return vec![None; key.rows];
    }
    let mut search = Search::new(key, band);
    for root in 0..key.rows {
        search.augment(root);
    }
    search.column_of
}

/// A row's columns, cheapest first, as far as searches have needed them: bands of keys between
/// bounds sampled from the row, each band sorted when first needed.
struct Bands<K> {
    /// The (inclusive) upper bound of each band but the last, increasing.
    bounds: Vec<K>,
    /// The columns of the bands built so far with their keys, in key order (the keys alongside,
    /// as a search reads them in that order, not the row's).
    columns: Vec<(K, u32)>,
    built: usize,
}

impl<K: Key> Bands<K> {
    /// Samples one key in `band` for the bounds and builds the first band.
    fn new(row: &[K], band: usize) -> Self {
        let mut bounds = Vec::new();
        let band = band.max(1);
        if row.len() > 2 * band {
            bounds.extend(row.iter().skip(band / 2).step_by(band).copied());
            bounds.sort_unstable();
            bounds.dedup();
        }
        let mut bands = Self {
            bounds,
            columns: Vec::new(),
            built: 0,
        };
        bands.build(row);
        bands
    }

    /// Adds the next band, if any is left: one pass over the row, then a sort of the band.
    fn build(&mut self, row: &[K]) -> bool {
        let b = self.built;
        if b > self.bounds.len() {
            return false;
        }
        let start = self.columns.len();
        let (low, high) = (
            b.checked_sub(1).map(|l| self.bounds[l]),
            self.bounds.get(b).copied(),
        );
        let out = &mut self.columns;
        let keep = |col: usize| out.push((row[col], col as u32));
        match (low, high) {
            (None, None) => (0..row.len()).for_each(keep),
            (None, Some(h)) => each(row, |k| k <= h, keep),
            (Some(l), Some(h)) => each(row, |k| l < k && k <= h, keep),
            (Some(l), None) => each(row, |k| l < k, keep),
        }
        self.columns[start..].sort_unstable();
        self.built += 1;
        true
    }
}

/// Calls `keep(column)` for every column of `row` whose key passes `test`, in column order.
fn each<K: Copy>(row: &[K], test: impl Fn(K) -> bool, mut keep: impl FnMut(usize)) {
    for (col, &k) in row.iter().enumerate() {
        if test(k) {
            keep(col);
        }
    }
}

/// Each row's class, rows of equal keys sharing one, and how many classes there are. Rows are
/// compared whole only when eight keys sampled across them match.
fn classes<K: Key>(key: &Matrix<K>) -> (Vec<usize>, usize) {
    let step = key.columns.div_ceil(8).max(1);
    let mut seen: FxMap<[K; 8], Vec<usize>> = FxMap::default();
    let mut class = Vec::with_capacity(key.rows);
    let mut count = 0;
    for r in 0..key.rows {
        let row = key.row(r);
        let mut sample = [K::default(); 8];
        for (s, k) in sample.iter_mut().zip(row.iter().step_by(step)) {
            *s = *k;
        }
        let firsts = seen.entry(sample).or_default();
        if let Some(&same) = firsts.iter().find(|&&f| key.row(f) == row) {
            class.push(class[same]);
        } else {
            firsts.push(r);
            class.push(count);
            count += 1;
        }
    }
    (class, count)
}

/// The state of [`assign`]: the assignment so far, the potentials, each row's bands, and one
/// Dijkstra's arrays (reset through the lists of what it reached).
///
/// Potentials `row_p` and `col_p` keep every reduced cost of the residual graph non-negative:
/// a row's edges `key + row_p - col_p`, a column's edges back to its rows (0, as an assigned
/// pair's reduced cost is 0), `col_p` from a column with room to the sink and `-col_p` back to
/// a column with rows, the sink's potential being 0. After a search whose sink is at distance
/// `D`, each node reached at `d` gains `min(d, D) - D` and the others nothing (the textbook
/// update less `D` everywhere, which changes no reduced cost): no column potential is ever
/// positive, which bounds the distances of the columns a row has not offered yet.
struct Search<'k, K> {
    key: &'k Matrix<K>,
    capacity: usize,
    band: usize,
    bands: Vec<Option<Bands<K>>>,
    column_of: Vec<Option<usize>>,
    /// The key of each assigned row's pair.
    own_key: Vec<K>,
    members: Vec<Vec<usize>>,
    row_p: Vec<K>,
    col_p: Vec<K>,
    row_dist: Vec<K>,
    col_dist: Vec<K>,
    /// The row each column was reached from, and the column each row was reached from.
    col_from: Vec<usize>,
    row_from: Vec<usize>,
    settled: Vec<bool>,
    /// Per reached row, the position in its bands of the next column to offer.
    next: Vec<usize>,
    /// Columns by distance, and (numbered `columns + row`) rows by the bound of the columns
    /// they have yet to offer.
    queue: Queue<K>,
    rows_reached: Vec<usize>,
    cols_reached: Vec<usize>,
    /// Each row's class: rows of equal keys share one. Per class, the least `dist + row_p` of
    /// its rows offering columns in this search.
    class: Vec<usize>,
    class_base: Vec<K>,
    classes_reached: Vec<usize>,
}

impl<'k, K: Key> Search<'k, K> {
    fn new(key: &'k Matrix<K>, band: usize) -> Self {
        let (rows, columns) = (key.rows, key.columns);
        let (class, classes) = classes(key);
        Self {
            key,
            capacity: rows.div_ceil(columns),
            band,
            bands: (0..rows).map(|_| None).collect(),
            column_of: vec![None; rows],
            own_key: vec![K::default(); rows],
            members: vec![Vec::new(); columns],
            row_p: vec![K::default(); rows],
            col_p: vec![K::default(); columns],
            row_dist: vec![K::INF; rows],
            col_dist: vec![K::INF; columns],
            col_from: vec![0; columns],
            row_from: vec![0; rows],
            settled: vec![false; columns],
            next: vec![0; rows],
            queue: Queue::new(),
            rows_reached: Vec::new(),
            cols_reached: Vec::new(),
            class_base: vec![K::INF; classes],
            class,
            classes_reached: Vec::new(),
        }
    }

    /// Assigns the unassigned `root` along a shortest path to a column with room.
    fn augment(&mut self, root: usize) {
        let keys = self.key.row(root);
        let bands = Bands::new(keys, self.band);
        // The root has no edge in but the source's, and no column potential is positive:
        // minus its least key keeps its reduced costs non-negative.
        self.row_p[root] = K::default() - bands.columns[0].0;
        self.bands[root] = Some(bands);
        let (sink_dist, sink_from) = self.shortest(root);
        self.settle(sink_dist);
        self.flip(root, sink_from);
    }

    /// Reaches `row` at `dist` from column `from` (none for the root), and has it offer its
    /// columns unless a row of the same keys already offers them for less: its every edge
    /// would then lead where that row's does, further (a pool without placement data has only
    /// equal rows, whose searches would otherwise each go through every row).
    fn reach(&mut self, row: usize, dist: K, from: usize, sink_dist: K) {
        self.row_dist[row] = dist;
        self.row_from[row] = from;
        self.next[row] = 0;
        self.rows_reached.push(row);
        let (class, base) = (self.class[row], dist + self.row_p[row]);
        if self.class_base[class] <= base {
            return;
        }
        if self.class_base[class] == K::INF {
            self.classes_reached.push(class);
        }
        self.class_base[class] = base;
        self.offer(row, sink_dist);
    }

    /// Relaxes `row`'s next columns while their bound is below every other candidate and the
    /// sink; queues the row again at the bound of the rest, if any may still matter.
    ///
    /// A settled column needs no test: its distance is at most the one being settled now,
    /// which is at most any bound offered now.
    fn offer(&mut self, row: usize, sink_dist: K) {
        let base = self.row_dist[row] + self.row_p[row];
        let columns = self.key.columns;
        let mut limit = self.queue.peek().unwrap_or(K::INF);
        let Self {
            key,
            bands,
            next,
            col_p,
            col_dist,
            col_from,
            cols_reached,
            queue,
            ..
        } = self;
        let Some(bands) = bands[row].as_mut() else {
            return;
        };
        let mut at = next[row];
        loop {
            let Some(&(k, col)) = bands.columns.get(at) else {
                if bands.build(key.row(row)) {
                    continue;
                }
                break;
            };
            let bound = base + k;
            if bound >= sink_dist {
                break;
            }
            if bound > limit {
                queue.push(bound, columns + row);
                break;
            }
            at += 1;
            let col = col as usize;
            let dist = bound - col_p[col];
            if dist < col_dist[col] {
                if col_dist[col] == K::INF {
                    cols_reached.push(col);
                }
                col_dist[col] = dist;
                col_from[col] = row;
                queue.push(dist, col);
                limit = limit.min(dist);
            }
        }
        next[row] = at;
    }

    /// Dijkstra from `root` until the sink is nearer than every unsettled column: the sink's
    /// distance and the column before it.
    fn shortest(&mut self, root: usize) -> (K, usize) {
        let columns = self.key.columns;
        let (mut sink_dist, mut sink_from) = (K::INF, 0);
        self.reach(root, K::default(), 0, sink_dist);
        while let Some((dist, id)) = self.queue.pop() {
            if dist >= sink_dist {
                break;
            }
            if id >= columns {
                self.offer(id - columns, sink_dist);
                continue;
            }
            let col = id;
            if self.settled[col] {
                continue;
            }
            self.settled[col] = true;
            let to_sink = dist + self.col_p[col];
            if self.members[col].len() < self.capacity && to_sink < sink_dist {
                sink_dist = to_sink;
                sink_from = col;
            }
            for at in 0..self.members[col].len() {
                let row = self.members[col][at];
                let reached = dist - self.own_key[row] + self.col_p[col] - self.row_p[row];
                self.reach(row, reached, col, sink_dist);
            }
        }
        self.queue.clear();
        debug_assert!(sink_dist < K::INF, "the root reaches every column, one with room");
        (sink_dist, sink_from)
    }

    /// Updates the potentials after a search whose sink is at `sink_dist` and resets the
    /// search's arrays.
    fn settle(&mut self, sink_dist: K) {
        for &row in &self.rows_reached {
            self.row_p[row] = self.row_p[row] + self.row_dist[row].min(sink_dist) - sink_dist;
            self.row_dist[row] = K::INF;
        }
        for &col in &self.cols_reached {
            self.col_p[col] = self.col_p[col] + self.col_dist[col].min(sink_dist) - sink_dist;
            self.col_dist[col] = K::INF;
            self.settled[col] = false;
        }
        for &class in &self.classes_reached {
            self.class_base[class] = K::INF;
        }
        self.rows_reached.clear();
        self.cols_reached.clear();
        self.classes_reached.clear();
    }

    /// Walks back from the column before the sink: each row on the path moves to the column
    /// after it.
    fn flip(&mut self, root: usize, sink_from: usize) {
        let mut col = sink_from;
        loop {
            let row = self.col_from[col];
            if let Some(old) = self.column_of[row] {
                self.members[old].retain(|&x| x != row);
            }
            self.members[col].push(row);
            self.column_of[row] = Some(col);
            self.own_key[row] = self.key.get(row, col);
            if row == root {
                break;
            }
            col = self.row_from[row];
        }
    }
}

/// The solver this module had before, kept as the reference for pools too large for brute
/// force: plain successive shortest paths, every row relaxing every column, Dijkstra by
/// linear scans.
#[cfg(test)]
mod dense {
    const INF: i128 = i128::MAX / 4;

    /// The minimum-sum assignment of rows (actives) to columns (standbys) where a column takes at
    /// most `⌈rows/columns⌉` rows: for each row, in order, a shortest augmenting path found by
    /// Dijkstra on reduced costs over dense arrays (every row reaches every column), stopping at
    /// the first column with room. `None` for every row when there is no column.
    ///
    /// Potentials `row_p`, `col_p` and `sink_p` keep every reduced cost non-negative; an assigned
    /// (row, column) pair has reduced cost 0, so a column's rows are reached at the column's
    /// distance.
    pub(super) fn assign(key: &[Vec<i128>]) -> Vec<Option<usize>> {
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
    struct Search<'k> {
        key: &'k [Vec<i128>],
        capacity: usize,
        column_of: Vec<Option<usize>>,
        members: Vec<Vec<usize>>,
        row_p: Vec<i128>,
        col_p: Vec<i128>,
        sink_p: i128,
        row_dist: Vec<i128>,
        col_dist: Vec<i128>,
        /// The row each column was reached from, and the column each row was reached from.
        col_from: Vec<usize>,
        row_from: Vec<usize>,
        settled: Vec<bool>,
    }

    impl<'k> Search<'k> {
        fn new(key: &'k [Vec<i128>], columns: usize) -> Self {
            let rows = key.len();
            Self {
                key,
                capacity: rows.div_ceil(columns),
                column_of: vec![None; rows],
                members: vec![Vec::new(); columns],
                row_p: vec![0; rows],
                col_p: vec![0; columns],
                sink_p: 0,
                row_dist: vec![INF; rows],
                col_dist: vec![INF; columns],
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
            self.col_dist.fill(INF);
            self.row_dist.fill(INF);
            self.settled.fill(false);
            let (mut sink_dist, mut sink_from) = (INF, 0);
            self.row_dist[root] = 0;
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
            debug_assert!(sink_dist < INF, "the columns have room for every row");
            for (p, &d) in self.row_p.iter_mut().zip(&self.row_dist) {
                *p += d.min(sink_dist);
            }
            for (p, &d) in self.col_p.iter_mut().zip(&self.col_dist) {
                *p += d.min(sink_dist);
            }
            self.sink_p += sink_dist;
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

    #[test]
    fn extreme_weights_and_costs_take_wide_keys_and_still_the_optimum() {
        // Ten kinds of the greatest weight and costs of the greatest value: the keys no longer
        // leave i64 room for the search's distances.
        let named: Vec<(String, u32, u32)> = (0..40).map(|i| (format!("e{i:02}"), i % 7, 1)).collect();
        let borrowed: Vec<(&str, u32, u32)> = named.iter().map(|(s, p, w)| (s.as_str(), *p, *w)).collect();
        let mut spec = pool(crate::model::testutil::n_plus_m(24, false), &borrowed);
        let kinds: Vec<String> = (0..10).map(|k| format!("k{k}")).collect();
        let mut p = PlacementSpec::default();
        for kind in kinds.iter().map(String::as_str).chain(["srlg"]) {
            p.weights.insert(kind.to_owned(), 1_000_000);
        }
        for from in 0..3 {
            for to in 0..3 {
                p.costs
                    .entry(format!("s{from}"))
                    .or_default()
                    .insert(format!("s{to}"), 1_000_000 - 1000 * ((from * 3 + to) % 4));
            }
        }
        spec.placement = Arc::new(p);
        for (i, e) in spec.elements.iter_mut().enumerate() {
            e.failure_domains = kinds
                .iter()
                .enumerate()
                .map(|(k, kind)| (kind.clone(), format!("v{}", (i * (k + 1)) % 3)))
                .collect();
            e.srlg = vec![format!("g{}", i % 4)];
            e.site = Some(format!("s{}", i % 3));
        }
        let (actives, standbys): (Vec<usize>, Vec<usize>) = ((0..24).collect(), (24..40).collect());
        let ranked = rank(&spec, &standbys);
        let keys = keys(&spec, &actives, &ranked);
        assert!(matches!(keys, Keys::Wide(_)), "wide keys");
        let key = table(&keys);
        check_keys(&spec, &actives, &ranked, &key);
        let chosen = choose(&spec, &actives, &standbys);
        let column = |name: &str| ranked.iter().position(|&s| spec.elements[s].name == name);
        let columns: Vec<Option<usize>> = chosen
            .iter()
            .map(|c| column(c.backup.as_deref().expect("a backup")))
            .collect();
        assert_eq!(total(&key, &columns), total(&key, &dense::assign(&key)));
    }

    /// The keys as plain rows.
    fn table(key: &Keys) -> Vec<Vec<i128>> {
        let (rows, columns) = match key {
            Keys::Narrow(m) => (m.rows(), m.columns()),
            Keys::Wide(m) => (m.rows(), m.columns()),
        };
        (0..rows)
            .map(|r| (0..columns).map(|c| key.get(r, c)).collect())
            .collect()
    }

    /// [`assign`] on `key` with bands of `band` columns, in both widths (which agree).
    fn assign_with(key: &Keys, band: usize) -> Vec<Option<usize>> {
        let rows = table(key);
        let wide = Matrix {
            rows: rows.len(),
            columns: rows.first().map_or(0, Vec::len),
            values: rows.concat(),
        };
        let chosen = assign(&wide, band);
        if let Keys::Narrow(narrow) = key {
            assert_eq!(assign(narrow, band), chosen, "i64 and i128 agree");
        }
        chosen
    }

    /// The key sum of `chosen`, checking that every row has a column and no column takes more
    /// than its share.
    fn total(key: &[Vec<i128>], chosen: &[Option<usize>]) -> i128 {
        let columns = key.first().map_or(0, Vec::len);
        let mut load = vec![0; columns];
        let mut sum = 0;
        for (row, c) in chosen.iter().enumerate() {
            let c = c.expect("a column");
            load[c] += 1;
            sum += key[row][c];
        }
        let capacity = key.len().div_ceil(columns);
        assert!(load.iter().all(|&l| l <= capacity), "{load:?}");
        sum
    }

    /// Every key is what the named placement gives the pair: risk, then cost, then rank.
    fn check_keys(spec: &PoolSpec, actives: &[usize], ranked: &[usize], key: &[Vec<i128>]) {
        let placement = &spec.placement;
        let unknown = i128::from(
            placement
                .costs
                .values()
                .flat_map(BTreeMap::values)
                .max()
                .copied()
                .unwrap_or(0),
        ) + 1;
        let (n, m) = (actives.len() as i128, ranked.len() as i128);
        let cost_scale = n * m + 1;
        let risk_scale = (n * unknown + 1) * cost_scale;
        for (row, &a) in actives.iter().enumerate() {
            for (col, &s) in ranked.iter().enumerate() {
                let (ea, es) = (&spec.elements[a], &spec.elements[s]);
                let r = i128::from(risk(placement, ea, es).weight);
                let c = cost(placement, ea, es).map_or(unknown, i128::from);
                assert_eq!(
                    key[row][col],
                    r * risk_scale + c * cost_scale + col as i128 + 1,
                    "{row} {col}"
                );
            }
        }
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

    /// Pools of `lengths` elements, the first ones active: each element has one of `values`
    /// values for each of three kinds, up to `groups / 3` (at least one) of `groups` link
    /// groups and one of `sites` sites or none; random weights and costs.
    fn topology(
        lengths: std::ops::RangeInclusive<usize>,
        values: u8,
        groups: u8,
        sites: usize,
    ) -> impl Strategy<Value = (PoolSpec, Vec<usize>, Vec<usize>)> {
        let most = *lengths.end();
        (lengths, 1usize..most, prop::collection::vec(0u32..4, 0..4))
            .prop_flat_map(move |(n, actives, weights)| {
                let actives = actives.min(n - 1);
                let per_element = (
                    0..values,
                    0..values,
                    0..values,
                    prop::collection::vec(0..groups, 0..=usize::from(groups / 3).max(1)),
                    prop::option::of(0..sites),
                );
                let costs = prop::collection::vec(prop::option::of(0u32..10), sites * sites);
                (
                    Just(n),
                    Just(actives),
                    Just(weights),
                    prop::collection::vec(per_element, n),
                    costs,
                )
            })
            .prop_map(move |(n, actives, weights, per_element, costs)| {
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
                for from in 0..sites {
                    for to in 0..sites {
                        let row = p.costs.entry(format!("s{from}")).or_default();
                        if let Some(c) = costs[from * sites + to] {
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
        fn the_assignment_is_the_brute_force_optimum((spec, actives, standbys) in topology(2..=8, 3, 3, 4)) {
            let chosen = choose(&spec, &actives, &standbys);
            prop_assert_eq!(chosen.len(), actives.len());
            let ranked = rank(&spec, &standbys);
            let keys = keys(&spec, &actives, &ranked);
            let key = table(&keys);
            check_keys(&spec, &actives, &ranked, &key);
            let column = |name: &str| ranked.iter().position(|&s| spec.elements[s].name == name).expect("a standby");
            let columns: Vec<Option<usize>> =
                chosen.iter().map(|c| Some(column(c.backup.as_deref().expect("a backup")))).collect();
            let best = brute_force(&key);
            prop_assert_eq!(total(&key, &columns), best);
            // Whatever the bands' size.
            for band in 1..=3 {
                prop_assert_eq!(total(&key, &assign_with(&keys, band)), best, "bands of {}", band);
            }
            // The same inputs give the same answer.
            prop_assert_eq!(choose(&spec, &actives, &standbys), chosen);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn larger_pools_get_the_dense_optimum((spec, actives, standbys) in topology(20..=60, 12, 6, 8)) {
            let chosen = choose(&spec, &actives, &standbys);
            let ranked = rank(&spec, &standbys);
            let keys = keys(&spec, &actives, &ranked);
            let key = table(&keys);
            check_keys(&spec, &actives, &ranked, &key);
            let column = |name: &str| ranked.iter().position(|&s| spec.elements[s].name == name).expect("a standby");
            let columns: Vec<Option<usize>> =
                chosen.iter().map(|c| Some(column(c.backup.as_deref().expect("a backup")))).collect();
            let best = total(&key, &dense::assign(&key));
            prop_assert_eq!(total(&key, &columns), best);
            for band in [1, 2, 4, 8] {
                prop_assert_eq!(total(&key, &assign_with(&keys, band)), best, "bands of {}", band);
            }
            prop_assert_eq!(choose(&spec, &actives, &standbys), chosen);
        }
    }
}
