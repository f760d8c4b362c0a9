//! The VIP announcer (`vnfpool_daemon::announce::RouteAnnouncer`) against the kernel, in a
//! network namespace of its own, read back with `ip -j route`. Needs root.

use std::{collections::BTreeSet, future::Future, net::IpAddr};

use vnfpool_daemon::announce::{AnnounceError, Changes, DEFAULT_PROTOCOL, DEFAULT_TABLE, RouteAnnouncer};
use vnfpool_tests::netns::{Netns, try_command};

/// `RTN_BLACKHOLE`, as `ip -N` prints a route's type.
const BLACKHOLE: &str = "6";
/// `RTN_UNREACHABLE`.
const UNREACHABLE: &str = "7";

const A: &str = "198.51.100.1";
const B: &str = "2001:db8::b";
const C: &str = "198.51.100.3";

/// One route as `ip -N -j route show table N` lists it: (type, destination, protocol), all
/// numeric.
type Route = (String, String, String);

fn route(kind: &str, dst: &str, protocol: u8) -> Route {
    (kind.to_owned(), dst.to_owned(), protocol.to_string())
}

/// Every route of `table` in `ns`, both families, sorted.
#[track_caller]
fn routes(ns: &Netns, table: u32) -> BTreeSet<Route> {
    let table = table.to_string();
    let mut all = BTreeSet::new();
    for family in ["-4", "-6"] {
        let out = match try_command(
            "ip",
            &[
                "-n",
                ns.name(),
                family,
                "-N",
                "-j",
                "route",
                "show",
                "table",
                &table,
            ],
        ) {
            Ok(out) => out,
            // The kernel makes an IPv6 table with its first route.
            Err(e) if family == "-6" && e.contains("FIB table does not exist") => continue,
            Err(e) => panic!("{e}"),
        };
        let list: Vec<serde_json::Value> =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("ip -j route: {e}: {out:?}"));
        for r in list {
            let field = |name: &str| {
                r[name]
                    .as_str()
                    .unwrap_or_else(|| panic!("{name} in {r}"))
                    .to_owned()
            };
            all.insert((field("type"), field("dst"), field("protocol")));
        }
    }
    all
}

/// `ip -n <ns> <line>`, the words of `line` as its arguments.
#[track_caller]
fn ip_line(ns: &Netns, line: &str) {
    ns.ip(&line.split_whitespace().collect::<Vec<_>>());
}

fn vips(list: &[&str]) -> BTreeSet<IpAddr> {
    list.iter().map(|v| v.parse().expect("an address")).collect()
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("an address")
}

/// Runs `body` on a current-thread runtime on a thread inside `ns`.
fn in_ns<F, Fut>(ns: &Netns, body: F)
where
    F: FnOnce() -> Fut + Send,
    Fut: Future<Output = ()>,
{
    ns.run(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(body());
    });
}

#[test]
fn sync_holds_exactly_the_wanted_blackhole_routes_and_leaves_others_alone() {
    let ns = Netns::new();
    let p = DEFAULT_PROTOCOL;
    let table = DEFAULT_TABLE.to_string();
    let proto = p.to_string();
    // Not ours: another protocol in our table, and our protocol in another table (the same
    // prefix as A).
    ip_line(
        &ns,
        &format!("route add blackhole 198.51.100.9/32 table {table} proto static"),
    );
    ip_line(
        &ns,
        &format!("route add blackhole {A}/32 table 101 proto {proto}"),
    );
    // Ours but not an announcement (an older version's, or added by hand): removed.
    ip_line(
        &ns,
        &format!("route add unreachable 198.51.100.7/32 table {table} proto {proto}"),
    );
    let foreign = route(BLACKHOLE, "198.51.100.9", 4);
    let other_table = BTreeSet::from([route(BLACKHOLE, A, p)]);

    in_ns(&ns, || async {
        let mut announcer = RouteAnnouncer::new(DEFAULT_TABLE, p).expect("an announcer");

        let changes = announcer.sync(&vips(&[A, B])).await.expect("announcing A and B");
        assert_eq!(
            changes,
            Changes {
                added: vec![ip(A), ip(B)],
                removed: vec![],
                strays: vec![(ip("198.51.100.7"), 32)],
            }
        );
        assert_eq!(
            routes(&ns, DEFAULT_TABLE),
            BTreeSet::from([route(BLACKHOLE, A, p), route(BLACKHOLE, B, p), foreign.clone()])
        );
        assert_eq!(announcer.announced().await.expect("listing"), vips(&[A, B]));

        let again = announcer
            .sync(&vips(&[A, B]))
            .await
            .expect("announcing A and B again");
        assert!(again.is_empty(), "a second sync changes nothing: {again:?}");

        // A second route of ours for A (another metric) goes; one route for A stays.
        ip_line(
            &ns,
            &format!("route add blackhole {A}/32 table {table} proto {proto} metric 7"),
        );
        let changes = announcer
            .sync(&vips(&[A, B]))
            .await
            .expect("announcing A and B once more");
        assert_eq!(changes.strays, vec![(ip(A), 32)], "{changes:?}");
        assert!(
            changes.added.is_empty() && changes.removed.is_empty(),
            "{changes:?}"
        );
        let listing = ns.ip_output(&["route", "show", "table", &table]);
        assert_eq!(listing.lines().filter(|l| l.contains(A)).count(), 1, "{listing}");

        let changes = announcer.sync(&vips(&[B])).await.expect("withdrawing A");
        assert_eq!(changes.removed, vec![ip(A)]);
        assert!(
            changes.added.is_empty() && changes.strays.is_empty(),
            "{changes:?}"
        );
        assert_eq!(
            routes(&ns, DEFAULT_TABLE),
            BTreeSet::from([route(BLACKHOLE, B, p), foreign.clone()])
        );

        // A route removed behind its back comes back at the next sync.
        ip_line(
            &ns,
            &format!("-6 route del blackhole {B}/128 table {table} proto {proto}"),
        );
        let changes = announcer.sync(&vips(&[B])).await.expect("repairing B");
        assert_eq!(changes.added, vec![ip(B)]);

        let changes = announcer.withdraw_all().await.expect("withdrawing everything");
        assert_eq!(changes.removed, vec![ip(B)]);
        assert_eq!(routes(&ns, DEFAULT_TABLE), BTreeSet::from([foreign.clone()]));
        assert!(
            announcer
                .withdraw_all()
                .await
                .expect("withdrawing again")
                .is_empty()
        );
    });
    assert_eq!(
        routes(&ns, 101),
        other_table,
        "our protocol in another table is left alone"
    );
}

#[test]
fn a_foreign_route_for_the_same_prefix_is_an_error_naming_table_and_prefix() {
    let ns = Netns::new();
    let table = DEFAULT_TABLE;
    ip_line(
        &ns,
        &format!("route add blackhole {C}/32 table {table} proto static"),
    );
    ip_line(
        &ns,
        &format!("route add unreachable 198.51.100.4/32 table {table} proto static"),
    );

    in_ns(&ns, || async {
        let mut announcer = RouteAnnouncer::new(DEFAULT_TABLE, DEFAULT_PROTOCOL).expect("an announcer");
        let error = announcer
            .sync(&vips(&[A, C]))
            .await
            .expect_err("the prefix is taken by a foreign route");
        assert!(
            matches!(&error, AnnounceError::Add { vip, table: 100, .. } if *vip == ip(C)),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            format!("adding blackhole {C}/32 to table 100 (proto {DEFAULT_PROTOCOL})")
        );
        // The other VIP was announced all the same, and the foreign routes are untouched.
        assert_eq!(announcer.announced().await.expect("listing"), vips(&[A]));
        assert_eq!(
            routes(&ns, DEFAULT_TABLE),
            BTreeSet::from([
                route(BLACKHOLE, A, DEFAULT_PROTOCOL),
                route(BLACKHOLE, C, 4),
                route(UNREACHABLE, "198.51.100.4", 4),
            ])
        );
        announcer.withdraw_all().await.expect("withdrawing");
    });
}

/// docs/cluster.md's BIRD snippet for a node, the text after its `bird-node-snippet` marker.
fn documented_bird_snippet() -> &'static str {
    const CLUSTER: &str = include_str!("../../docs/cluster.md");
    let (_, after) = CLUSTER
        .split_once("<!-- bird-node-snippet")
        .expect("docs/cluster.md has the BIRD node snippet");
    let (_, block) = after.split_once("```\n").expect("a code block after the marker");
    let (snippet, _) = block.split_once("```").expect("the end of the code block");
    snippet
}

#[test]
#[expect(clippy::disallowed_methods, reason = "polls a real BIRD in real time")]
fn the_documented_bird_snippet_learns_what_the_announcer_writes() {
    let snippet = documented_bird_snippet();
    assert!(
        snippet.contains(&format!("kernel table {DEFAULT_TABLE};")),
        "the snippet reads the announcer's default table:\n{snippet}"
    );
    let ns = Netns::new();
    let bird = vnfpool_tests::bird::Bird::start(&ns, snippet);
    for kernel in ["vips4", "vips6"] {
        assert!(
            bird.protocol_state(kernel).starts_with("up"),
            "{kernel}: {}\n{}",
            bird.birdc(&["show", "protocols"]),
            bird.log()
        );
    }
    in_ns(&ns, || async {
        let mut announcer = RouteAnnouncer::new(DEFAULT_TABLE, DEFAULT_PROTOCOL).expect("an announcer");
        announcer.sync(&vips(&[A, B])).await.expect("announcing A and B");
    });
    // BIRD learns over netlink as the routes come: poll a little.
    let start = std::time::Instant::now();
    for (kernel, prefix) in [("vips4", format!("{A}/32")), ("vips6", format!("{B}/128"))] {
        loop {
            let out = bird.birdc(&["show", "route", "protocol", kernel]);
            if out.contains(&prefix) {
                break;
            }
            assert!(
                start.elapsed() < std::time::Duration::from_secs(5),
                "{kernel} did not learn {prefix}: {out}\n{}",
                bird.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}
