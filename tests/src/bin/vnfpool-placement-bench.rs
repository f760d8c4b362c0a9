//! Cost of backup selection (`model::placement::choose`) for a pool of 1,000 elements across 50
//! sites, printed as a table. Run through `cargo xtask bench`; figures are in BENCHMARKS.md.
//!
//! Baseline, measured in the same run on the same pool: every active scanning every standby for
//! its best one alone (no capacity, no assignment), the least any selection must do.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
    sync::Arc,
    time::{Duration, Instant},
};

use vnfpool_daemon::model::{
    placement,
    spec::{CheckSpec, ElementSpec, HealthSpec, PlacementSpec, PoolSpec, Protocol, RedundancySpec},
};

const ELEMENTS: usize = 1_000;
const SITES: usize = 50;
const SAMPLES: usize = 21;

/// A small deterministic generator (xorshift64*), so every run measures the same pool.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }
}

/// 1,000 elements, two per host, ten hosts per rack, on 50 sites (five per zone), each in two
/// of 100 link groups; site costs for 90% of the pairs.
fn pool() -> PoolSpec {
    let mut rng = Rng(0x5eed_cafe);
    let site = |s: usize| format!("site{s:02}");
    let mut costs: BTreeMap<String, BTreeMap<String, u32>> = BTreeMap::new();
    for from in 0..SITES {
        let row = costs.entry(site(from)).or_default();
        for to in 0..SITES {
            if from != to && rng.below(10) != 0 {
                row.insert(site(to), u32::try_from(1 + rng.below(100)).unwrap_or(1));
            }
        }
    }
    let placement = Arc::new(PlacementSpec {
        weights: [("host", 1000), ("rack", 100), ("zone", 10), ("srlg", 50)]
            .into_iter()
            .map(|(k, w)| (k.to_owned(), w))
            .collect(),
        costs,
    });
    let elements = (0..ELEMENTS)
        .map(|i| {
            let host = i / 2;
            let s = rng.below(SITES);
            let mut srlg = vec![format!("g{}", rng.below(100)), format!("g{}", rng.below(100))];
            srlg.sort();
            srlg.dedup();
            ElementSpec {
                name: format!("e{i:04}"),
                address: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + u32::try_from(i).unwrap_or(0))),
                priority: u32::try_from(rng.below(1000)).unwrap_or(0),
                weight: 1,
                failure_domains: [
                    ("host".to_owned(), format!("h{host}")),
                    ("rack".to_owned(), format!("r{}", host / 10)),
                    ("zone".to_owned(), format!("z{}", s / 5)),
                ]
                .into(),
                srlg,
                site: Some(site(s)),
                mac: None,
                interface: None,
                heartbeat_paths: Vec::new(),
                vxlan_mac: None,
                origin: vnfpool_daemon::model::spec::Origin::File,
            }
        })
        .collect();
    PoolSpec {
        name: "bench".to_owned(),
        vip: IpAddr::V4(Ipv4Addr::new(10, 255, 0, 1)),
        ports: vec![80],
        protocol: Protocol::Tcp,
        redundancy: RedundancySpec::ActiveActive,
        health: HealthSpec {
            check: CheckSpec::Tcp { port: 80 },
            interval: Duration::from_millis(10),
            timeout: Duration::from_millis(10),
            rise: 1,
            fall: 1,
        },
        elements,
        ring_size: 65_537,
        budget: None,
        placement,
        heartbeat: vnfpool_daemon::model::spec::HeartbeatSpec::DEFAULT,
        registration: vnfpool_daemon::model::spec::RegistrationSpec::DEFAULT,
        forwarding: vnfpool_daemon::model::spec::Forwarding::L2Dsr,
    }
}

/// Each active's least key alone, over the same keys the selection weighs (the baseline).
fn scan(spec: &PoolSpec, actives: &[usize], standbys: &[usize]) -> i128 {
    match placement::keys(spec, actives, &placement::rank(spec, standbys)) {
        placement::Keys::Narrow(keys) => least(&keys),
        placement::Keys::Wide(keys) => least(&keys),
    }
}

/// The sum over the rows of each row's least key.
fn least<K: Copy + Ord + Into<i128>>(keys: &placement::Matrix<K>) -> i128 {
    (0..keys.rows())
        .map(|r| keys.row(r).iter().min().copied().map_or(0, Into::into))
        .sum()
}

fn median(mut f: impl FnMut()) -> Duration {
    let mut samples: Vec<Duration> = (0..SAMPLES)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    samples.sort();
    samples[SAMPLES / 2]
}

fn main() {
    let spec = pool();
    println!(
        "backup selection, {ELEMENTS} elements on {SITES} sites (host, rack, zone, 2 SRLGs each), median of {SAMPLES}\n"
    );
    println!(
        "| actives N | standbys M | selection | baseline (weigh every pair, best per active) | ratio | violations | target |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for actives in [1, 100, 500, 800] {
        let act: Vec<usize> = (0..actives).collect();
        let stand: Vec<usize> = (actives..ELEMENTS).collect();
        let mut violations = 0;
        let chosen = median(|| {
            let backups = placement::choose(&spec, &act, &stand);
            violations = backups.iter().filter(|b| b.is_violation()).count();
        });
        let baseline = median(|| {
            std::hint::black_box(scan(&spec, &act, &stand));
        });
        println!(
            "| {actives} | {} | {:.2} ms | {:.2} ms | {:.1} | {violations} | < 10 ms |",
            ELEMENTS - actives,
            chosen.as_secs_f64() * 1e3,
            baseline.as_secs_f64() * 1e3,
            chosen.as_secs_f64() / baseline.as_secs_f64()
        );
    }
}
