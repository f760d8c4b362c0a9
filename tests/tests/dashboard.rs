//! The Grafana dashboard (`packaging/grafana/vnfpool.json`) cannot drift from the metrics: every
//! metric, label and function its queries use must be one the metrics table of
//! docs/operations.md lists, and that table must be what the daemon exposes (the same names,
//! types and labels).

use std::collections::{BTreeMap, BTreeSet};

use promql_parser::parser::Expr;
use serde_json::Value;
use vnfpool_common::stats::{Counters, Reason};
use vnfpool_daemon::{
    controller::snapshot::PathStatus,
    metrics::{ElementSample, Metrics},
};

const OPERATIONS: &str = include_str!("../../docs/operations.md");
const DASHBOARD: &str = include_str!("../../packaging/grafana/vnfpool.json");

/// Labels Prometheus adds to every series it scrapes.
const TARGET_LABELS: [&str; 2] = ["instance", "job"];
const HISTOGRAM_SUFFIXES: [&str; 3] = ["_bucket", "_sum", "_count"];
/// The `PromQL` functions and aggregations the dashboard may use (a typo must not pass as one).
const FUNCTIONS: [&str; 18] = [
    "sum",
    "max",
    "min",
    "avg",
    "count",
    "rate",
    "irate",
    "increase",
    "delta",
    "histogram_quantile",
    "clamp_min",
    "clamp_max",
    "abs",
    "topk",
    "bottomk",
    "label_replace",
    "vector",
    "time",
];

#[derive(Debug, PartialEq)]
struct Metric {
    kind: String,
    labels: BTreeSet<String>,
}

/// docs/operations.md's metrics table: one entry per name (`…_bytes_total` after a name stands
/// for that name with its last two words replaced).
fn documented_metrics() -> BTreeMap<String, Metric> {
    let mut lines = OPERATIONS
        .lines()
        .skip_while(|l| !l.starts_with("| metric | type | labels |"))
        .skip(2);
    let mut out = BTreeMap::new();
    for line in lines.by_ref().take_while(|l| l.starts_with('|')) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        assert!(cells.len() >= 4, "docs/operations.md metrics row: {line}");
        let labels: BTreeSet<String> = backticked(cells[2]).into_iter().collect();
        let mut previous: Option<String> = None;
        for name in backticked(cells[0]) {
            let name = match name.strip_prefix('…') {
                Some(suffix) => {
                    let prev = previous.as_deref().expect("an elided name follows a full one");
                    let words = suffix.trim_start_matches('_').split('_').count();
                    let kept: Vec<&str> = prev.split('_').collect();
                    format!("{}{suffix}", kept[..kept.len() - words].join("_"))
                }
                None => name,
            };
            out.insert(
                name.clone(),
                Metric {
                    kind: cells[1].to_owned(),
                    labels: labels.clone(),
                },
            );
            previous = Some(name);
        }
    }
    assert!(
        out.len() > 10,
        "docs/operations.md metrics table not found or cut: {out:?}"
    );
    out
}

fn backticked(cell: &str) -> Vec<String> {
    cell.split('`').skip(1).step_by(2).map(str::to_owned).collect()
}

/// What one query uses.
#[derive(Debug, Default)]
struct Uses {
    /// Series names as written (`…_bucket` included), each with the label names it matches on.
    selectors: Vec<(String, Vec<String>)>,
    functions: Vec<String>,
    /// Labels of `by`, `without`, `on`, `ignoring`, `group_left` and `group_right`.
    grouping: Vec<String>,
}

/// What `expr` uses, parsed by `promql-parser` (the grammar of Prometheus itself: a misspelt
/// function or a stray brace is a parse error). Grafana's interval variables (`$__rate_interval`
/// and the like) stand in for durations, so a duration takes their place before parsing;
/// `$pool` only appears inside strings, which the parser takes as they are.
fn scan(expr: &str) -> Result<Uses, String> {
    let mut text = String::new();
    let mut rest = expr;
    while let Some(at) = rest.find("$__") {
        text.push_str(&rest[..at]);
        let name_end = rest[at + 3..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(rest.len(), |n| at + 3 + n);
        text.push_str("5m");
        rest = &rest[name_end..];
    }
    text.push_str(rest);
    let parsed = promql_parser::parser::parse(&text)?;
    let mut uses = Uses::default();
    walk(&parsed, &mut uses);
    Ok(uses)
}

fn walk(expr: &Expr, uses: &mut Uses) {
    let selector = |vs: &promql_parser::parser::VectorSelector, uses: &mut Uses| {
        let labels = vs
            .matchers
            .matchers
            .iter()
            .chain(vs.matchers.or_matchers.iter().flatten())
            .map(|m| m.name.clone())
            .filter(|name| name != "__name__")
            .collect();
        uses.selectors.push((vs.name.clone().unwrap_or_default(), labels));
    };
    match expr {
        Expr::Aggregate(a) => {
            uses.functions.push(a.op.to_string());
            if let Some(m) = &a.modifier {
                uses.grouping.extend(m.labels().labels.iter().cloned());
            }
            if let Some(param) = &a.param {
                walk(param, uses);
            }
            walk(&a.expr, uses);
        }
        Expr::Binary(b) => {
            if let Some(m) = &b.modifier {
                if let Some(matching) = &m.matching {
                    uses.grouping.extend(matching.labels().labels.iter().cloned());
                }
                if let Some(labels) = m.card.labels() {
                    uses.grouping.extend(labels.labels.iter().cloned());
                }
            }
            walk(&b.lhs, uses);
            walk(&b.rhs, uses);
        }
        Expr::Call(c) => {
            uses.functions.push(c.func.name.to_owned());
            for arg in &c.args.args {
                walk(arg, uses);
            }
        }
        Expr::Unary(u) => walk(&u.expr, uses),
        Expr::Paren(p) => walk(&p.expr, uses),
        Expr::Subquery(q) => walk(&q.expr, uses),
        Expr::VectorSelector(vs) => selector(vs, uses),
        Expr::MatrixSelector(ms) => selector(&ms.vs, uses),
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
    }
}

/// The metric a series name belongs to: a histogram's `_bucket`, `_sum` and `_count` series
/// belong to it; anything else must be listed as it is.
fn metric_of<'a>(series: &str, metrics: &'a BTreeMap<String, Metric>) -> Option<(&'a str, &'a Metric, bool)> {
    if let Some((name, m)) = metrics.get_key_value(series) {
        return Some((name, m, false));
    }
    HISTOGRAM_SUFFIXES.iter().find_map(|s| {
        let base = series.strip_suffix(s)?;
        let (name, m) = metrics.get_key_value(base)?;
        (m.kind == "histogram").then_some((name.as_str(), m, *s == "_bucket"))
    })
}

/// Everything wrong with one query, as messages naming `place`.
fn check(place: &str, expr: &str, legend: Option<&str>, metrics: &BTreeMap<String, Metric>) -> Vec<String> {
    let uses = match scan(expr) {
        Ok(uses) => uses,
        Err(e) => return vec![format!("{place}: not PromQL ({e}): {expr:?}")],
    };
    let mut errors = Vec::new();
    let mut available: BTreeSet<&str> = TARGET_LABELS.into_iter().collect();
    for f in &uses.functions {
        if !FUNCTIONS.contains(&f.as_str()) {
            errors.push(format!("{place}: unknown function {f}() in {expr:?}"));
        }
    }
    for (series, labels) in &uses.selectors {
        let Some((name, metric, bucket)) = metric_of(series, metrics) else {
            errors.push(format!(
                "{place}: {series:?} is not a metric of docs/operations.md's table, in {expr:?}"
            ));
            continue;
        };
        available.extend(metric.labels.iter().map(String::as_str));
        if bucket {
            available.insert("le");
        }
        for l in labels {
            let known =
                metric.labels.contains(l) || TARGET_LABELS.contains(&l.as_str()) || (bucket && l == "le");
            if !known {
                errors.push(format!("{place}: {name} has no label {l:?}, in {expr:?}"));
            }
        }
    }
    if uses.selectors.is_empty() {
        errors.push(format!("{place}: no metric in {expr:?}"));
    }
    for l in &uses.grouping {
        if !available.contains(l.as_str()) {
            errors.push(format!(
                "{place}: groups by {l:?}, a label of none of its metrics: {expr:?}"
            ));
        }
    }
    for l in legend.map(legend_labels).unwrap_or_default() {
        if !available.contains(l.as_str()) {
            errors.push(format!(
                "{place}: legend uses {l:?}, a label of none of its metrics"
            ));
        }
    }
    errors
}

fn legend_labels(legend: &str) -> Vec<String> {
    legend
        .split("{{")
        .skip(1)
        .filter_map(|s| s.split_once("}}").map(|(l, _)| l.trim().to_owned()))
        .collect()
}

fn dashboard() -> Value {
    serde_json::from_str(DASHBOARD).expect("packaging/grafana/vnfpool.json is JSON")
}

/// Every panel, those inside collapsed rows included.
fn panels(v: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in v["panels"].as_array().into_iter().flatten() {
        out.push(p);
        out.extend(panels(p));
    }
    out
}

/// Every query of the dashboard: (where, expression, legend).
fn queries(d: &Value) -> Vec<(String, String, Option<String>)> {
    let mut out = Vec::new();
    for p in panels(d) {
        let title = p["title"].as_str().unwrap_or("?");
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((
                format!("panel {title:?} target {}", t["refId"]),
                t["expr"].as_str().unwrap_or_default().to_owned(),
                t["legendFormat"].as_str().map(str::to_owned),
            ));
        }
    }
    for a in d["annotations"]["list"].as_array().expect("annotations") {
        if let Some(expr) = a["expr"].as_str() {
            out.push((
                format!("annotation {}", a["name"]),
                expr.to_owned(),
                a["textFormat"].as_str().map(str::to_owned),
            ));
        }
    }
    out
}

#[test]
fn every_query_uses_only_metrics_and_labels_the_docs_list() {
    let metrics = documented_metrics();
    let d = dashboard();
    let queries = queries(&d);
    assert!(queries.len() >= 20, "{} queries", queries.len());
    let mut errors = Vec::new();
    let mut used = BTreeSet::new();
    for (place, expr, legend) in &queries {
        if expr.trim().is_empty() {
            errors.push(format!("{place}: empty expr"));
        }
        errors.extend(check(place, expr, legend.as_deref(), &metrics));
        // A query that does not parse is an error above already.
        let selectors = scan(expr).map(|uses| uses.selectors).unwrap_or_default();
        used.extend(
            selectors
                .iter()
                .filter_map(|(s, _)| metric_of(s, &metrics).map(|(name, ..)| name.to_owned())),
        );
    }
    assert!(
        errors.is_empty(),
        "the dashboard drifted from docs/operations.md:\n{}",
        errors.join("\n")
    );
    // What the issue asks the dashboard to show.
    for name in [
        "vnfpool_pool_active_weight",
        "vnfpool_pool_active_elements",
        "vnfpool_pool_standby_elements",
        "vnfpool_element_role",
        "vnfpool_failovers_total",
        "vnfpool_failover_detection_seconds",
        "vnfpool_failover_switch_seconds",
        "vnfpool_element_packets_total",
        "vnfpool_element_bytes_total",
        "vnfpool_dataplane_reason_packets_total",
        "vnfpool_probe_duration_seconds",
        "vnfpool_flow_table_entries",
        "vnfpool_flow_table_capacity",
        "vnfpool_policy_violations_total",
    ] {
        assert!(used.contains(name), "no panel shows {name}");
    }
}

#[test]
fn the_pool_variable_and_the_datasource_are_templated() {
    let metrics = documented_metrics();
    let d = dashboard();
    let vars = d["templating"]["list"].as_array().expect("templating");
    let ds = vars
        .iter()
        .find(|v| v["name"] == "DS_PROMETHEUS")
        .expect("a DS_PROMETHEUS variable");
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");
    assert_eq!(d["__inputs"][0]["name"], "DS_PROMETHEUS");

    let pool = vars
        .iter()
        .find(|v| v["name"] == "pool")
        .expect("a pool variable");
    let definition = pool["definition"].as_str().expect("definition");
    assert_eq!(pool["query"]["query"], definition);
    let args = definition
        .strip_prefix("label_values(")
        .and_then(|s| s.strip_suffix(')'))
        .expect("label_values(metric, label)");
    let (metric, label) = args.split_once(',').expect("two arguments");
    let metric = &metrics[metric.trim()];
    assert!(metric.labels.contains(label.trim()), "{definition}");

    let mut ids = BTreeSet::new();
    for p in panels(&d) {
        assert!(
            ids.insert(p["id"].as_u64().expect("panel id")),
            "id {} twice",
            p["id"]
        );
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${DS_PROMETHEUS}", "panel {}", p["title"]);
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {} has no query", p["title"]);
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${DS_PROMETHEUS}", "panel {}", p["title"]);
        }
    }
    assert!(d["schemaVersion"].as_u64().expect("schemaVersion") >= 36);
}

#[test]
fn the_check_catches_drift() {
    let metrics = documented_metrics();
    let errors = |expr: &str| check("t", expr, None, &metrics);
    assert!(
        errors(r#"histogram_quantile(0.99, sum by (le, pool) (rate(vnfpool_failover_switch_seconds_bucket{pool=~"$pool"}[$__rate_interval])))"#)
            .is_empty()
    );
    assert_eq!(
        errors("rate(vnfpool_failover_total[5m])").len(),
        1,
        "a misspelt metric"
    );
    assert_eq!(errors("vnfpool_failovers").len(), 1, "a counter without _total");
    assert_eq!(
        errors("vnfpool_probes_total_bucket").len(),
        1,
        "_bucket of a counter"
    );
    assert_eq!(
        errors(r#"vnfpool_flow_table_entries{pool="web"}"#).len(),
        1,
        "an unknown label"
    );
    assert_eq!(
        errors("sum by (element) (vnfpool_failovers_total)").len(),
        1,
        "grouping"
    );
    assert_eq!(
        errors("rat(vnfpool_failovers_total[1m])").len(),
        1,
        "a misspelt function"
    );
    assert_eq!(
        check(
            "t",
            "vnfpool_failovers_total",
            Some("{{pool}} {{elemnt}}"),
            &metrics
        )
        .len(),
        1,
        "a legend label"
    );
    assert!(errors(r#"vnfpool_element_role{pool=~"$pool", state="a{b}"} == 1"#).is_empty());
    assert_eq!(
        errors(r#"sum by (pool) (vnfpool_failovers_total{pool=~"$pool"}"#).len(),
        1,
        "an unclosed parenthesis"
    );
    assert_eq!(
        errors("vnfpool_pool_active_weight * on (elment) group_left vnfpool_pool_active_elements").len(),
        1,
        "a matching label"
    );
}

/// The table of docs/operations.md is the daemon's exposition: the same names, types and labels.
#[test]
fn the_docs_list_what_the_daemon_exposes() {
    let m = Metrics::new(1024);
    m.probe("web", "e1", true, std::time::Duration::from_millis(2));
    m.failover(
        "web",
        "probe_failure",
        std::time::Duration::from_millis(30),
        std::time::Duration::from_micros(900),
    );
    m.violation("web");
    let c = Counters {
        packets: 1,
        bytes: 100,
    };
    m.sample_pool(
        "web",
        c,
        &[ElementSample {
            name: "e1",
            role: "active",
            health: "up",
            weight: 1,
            counters: c,
            paths: &[PathStatus {
                address: "10.1.0.2".to_owned(),
                up: true,
            }],
        }],
    );
    m.sample_reasons(&Reason::ALL.map(|r| (r, c)));
    m.sample_heartbeats(&vnfpool_daemon::heartbeat::Counters::default());
    let text = m.encode();

    let mut exposed: BTreeMap<String, Metric> = BTreeMap::new();
    let mut kinds = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (family, kind) = rest.split_once(' ').expect("# TYPE family kind");
            kinds.insert(family.to_owned(), kind.to_owned());
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let series = line.split(['{', ' ']).next().expect("series name");
        let labels: BTreeSet<String> = line
            .split_once('{')
            .map(|(_, rest)| rest.split('}').next().unwrap_or_default())
            .unwrap_or_default()
            .split(',')
            .filter_map(|kv| kv.split_once('=').map(|(k, _)| k.to_owned()))
            .filter(|k| k != "le")
            .collect();
        let (family, kind) = kinds
            .iter()
            .filter(|(f, _)| series.starts_with(f.as_str()))
            .max_by_key(|(f, _)| f.len())
            .expect("a # TYPE line before every series");
        let name = match kind.as_str() {
            "histogram" => family.clone(),
            _ => series.to_owned(),
        };
        let entry = exposed.entry(name).or_insert_with(|| Metric {
            kind: kind.clone(),
            labels: BTreeSet::new(),
        });
        entry.labels.extend(labels);
    }
    assert_eq!(
        documented_metrics(),
        exposed,
        "docs/operations.md's metrics table against the exposition:\n{text}"
    );
}
