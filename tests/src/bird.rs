//! BIRD 2 (Debian `bird2`) in a lab namespace: a router that merges the nodes' BGP paths into
//! one ECMP route in its kernel, and nodes that export the VIP routes of their dedicated table
//! (see `vnfpool_daemon::announce`). Each instance keeps its config, control socket and log in
//! a scratch directory, and is killed on drop.
//!
//! ```text
//!  node 1 ── BGP (+BFD) ──┐
//!  node 2 ── BGP (+BFD) ──┼── router: one route to the VIP, a next hop per announcing node
//!  node 3 ── BGP (+BFD) ──┘
//! ```

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{
    daemon::Scratch,
    netns::{Netns, try_command},
};

/// How long [`Bird::start`] waits for the control socket to answer.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between two looks while waiting for a state.
const POLL: Duration = Duration::from_millis(2);

/// BFD timers of a [`Bfd::Fast`] session: 50 ms x 3.
const BFD_INTERVAL_MS: u32 = 50;
const BFD_MULTIPLIER: u32 = 3;

/// BGP timers short enough for a lab: BIRD's smallest hold time (3 s) and a keepalive every
/// second; the first connection after 1 s instead of 5, and a session that failed is retried
/// after 1-5 s instead of BIRD's 60-300 s.
const BGP_TIMERS: &str = "hold time 3; keepalive time 1; connect delay time 1; connect retry time 1; \
                          error wait time 1, 5;";

/// Whether the BGP sessions are watched by BFD.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bfd {
    /// No BFD: a silent peer is noticed at the end of the hold time (3 s).
    Off,
    /// BFD at 50 ms x 3 on every session: a silent peer is noticed in about 150 ms.
    Fast,
}

impl Bfd {
    fn protocol(self) -> String {
        match self {
            Self::Off => String::new(),
            Self::Fast => format!(
                "protocol bfd {{\n  interface \"*\" {{ min rx interval {BFD_INTERVAL_MS} ms; min tx interval \
                 {BFD_INTERVAL_MS} ms; multiplier {BFD_MULTIPLIER}; }};\n}}\n"
            ),
        }
    }

    fn session(self) -> &'static str {
        match self {
            Self::Off => "",
            Self::Fast => " bfd on;",
        }
    }
}

/// One node as the router sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Neighbor {
    /// The name of its BGP protocol in the router's BIRD (a BIRD identifier: `node1`).
    pub name: String,
    /// Its address on the shared link.
    pub addr: Ipv4Addr,
    /// Its AS number.
    pub asn: u32,
}

/// The router's BIRD: a passive BGP session per node, whose paths are merged into one ECMP
/// route in the kernel's main table (`merge paths yes`).
#[derive(Clone, Debug)]
pub struct RouterConfig {
    /// Its address on the link to the nodes (also its router id).
    pub addr: Ipv4Addr,
    pub asn: u32,
    pub neighbors: Vec<Neighbor>,
    pub bfd: Bfd,
}

impl RouterConfig {
    /// The text of its `bird.conf`.
    #[must_use]
    pub fn render(&self) -> String {
        let Self {
            addr,
            asn,
            neighbors,
            bfd,
        } = self;
        let mut text = format!(
            "log stderr all;\nrouter id {addr};\nprotocol device {{ }}\n\
             protocol kernel {{\n  ipv4 {{ import none; export all; }};\n  merge paths yes;\n}}\n{}\
             template bgp nodes {{\n  local {addr} as {asn};\n  passive;\n  {BGP_TIMERS}\n  \
             # A node that goes away takes its paths with it: no stale paths kept for it.\n  \
             graceful restart off;\n {}\n  ipv4 {{ import all; export none; }};\n}}\n",
            bfd.protocol(),
            bfd.session(),
        );
        for Neighbor { name, addr, asn } in neighbors {
            writeln!(
                text,
                "protocol bgp {name} from nodes {{ neighbor {addr} as {asn}; }}"
            )
            .expect("a String");
        }
        text
    }
}

/// A vnfpool node's BIRD: its kernel protocol learns the routes of the announcer's table
/// (`learn`: they are not BIRD's own), and BGP exports those, and only those, to the router.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Its address on the link to the router (also its router id).
    pub addr: Ipv4Addr,
    pub asn: u32,
    pub router: Ipv4Addr,
    pub router_asn: u32,
    /// The table the announcer writes (`vnfpool_daemon::announce::DEFAULT_TABLE`).
    pub table: u32,
    pub bfd: Bfd,
}

impl NodeConfig {
    /// The text of its `bird.conf`.
    #[must_use]
    pub fn render(&self) -> String {
        let Self {
            addr,
            asn,
            router,
            router_asn,
            table,
            bfd,
        } = self;
        format!(
            "log stderr all;\nrouter id {addr};\nprotocol device {{ }}\n\
             protocol kernel vips {{\n  kernel table {table};\n  learn;\n  \
             ipv4 {{ import all; export none; }};\n}}\n{}\
             protocol bgp uplink {{\n  local {addr} as {asn};\n  neighbor {router} as {router_asn};\n  \
             {BGP_TIMERS}\n {}\n  ipv4 {{ import none; export where proto = \"vips\"; }};\n}}\n",
            bfd.protocol(),
            bfd.session(),
        )
    }
}

// === impl Bird ===

/// A running `bird -f` in a namespace; killed on drop, its scratch directory removed.
pub struct Bird {
    netns: String,
    child: Option<Child>,
    scratch: Scratch,
}

impl Bird {
    /// Starts BIRD with `config` in `ns` and waits until its control socket answers; panics
    /// with its log if it exits first (a config error) or takes longer than 10 s.
    #[must_use]
    pub fn start(ns: &Netns, config: &str) -> Self {
        let scratch = Scratch::new();
        let conf = scratch.path.join("bird.conf");
        std::fs::write(&conf, config).unwrap_or_else(|e| panic!("writing {}: {e}", conf.display()));
        let log = std::fs::File::create(scratch.path.join("bird.log")).expect("bird log");
        // nsenter enters only the network namespace and execs: the child is bird itself.
        let child = Command::new("nsenter")
            .arg(format!("--net={}", ns.path().display()))
            .args(["bird", "-f", "-c"])
            .arg(&conf)
            .arg("-s")
            .arg(scratch.path.join("bird.ctl"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawning bird");
        let mut bird = Self {
            netns: ns.name().to_owned(),
            child: Some(child),
            scratch,
        };
        bird.wait(READY_TIMEOUT, "answers on its control socket", |b| {
            b.try_birdc(&["show", "status"])
                .is_ok_and(|out| out.contains("Daemon is up and running"))
        });
        bird
    }

    /// Sets the namespace up as the lab's router (forwarding, multipath hashing on the L4
    /// ports: `fib_multipath_hash_policy=1`) and starts BIRD there with `config`.
    #[must_use]
    pub fn start_router(ns: &Netns, config: &RouterConfig) -> Self {
        ns.sysctl("net.ipv4.ip_forward", "1");
        ns.sysctl("net.ipv4.fib_multipath_hash_policy", "1");
        Self::start(ns, &config.render())
    }

    /// Starts a node's BIRD with `config` in `ns`.
    #[must_use]
    pub fn start_node(ns: &Netns, config: &NodeConfig) -> Self {
        Self::start(ns, &config.render())
    }

    /// The namespace it runs in.
    #[must_use]
    pub fn netns(&self) -> &str {
        &self.netns
    }

    fn socket(&self) -> PathBuf {
        self.scratch.path.join("bird.ctl")
    }

    /// What BIRD has logged so far.
    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.scratch.path.join("bird.log")).unwrap_or_default()
    }

    /// `birdc -s <socket> args`: its output, or why it failed.
    pub fn try_birdc(&self, args: &[&str]) -> Result<String, String> {
        let socket = self.socket();
        let mut all = vec!["-s", socket.to_str().expect("a UTF-8 path")];
        all.extend_from_slice(args);
        try_command("birdc", &all)
    }

    /// `birdc -s <socket> args`; panics with BIRD's log if it fails.
    #[must_use]
    pub fn birdc(&self, args: &[&str]) -> String {
        self.try_birdc(args)
            .unwrap_or_else(|e| panic!("{e}\nbird log in {}:\n{}", self.netns, self.log()))
    }

    /// The state and info of protocol `name` (`show protocols`): e.g. `up Established`.
    #[must_use]
    pub fn protocol_state(&self, name: &str) -> String {
        let out = self.birdc(&["show", "protocols", name]);
        protocol_line(&out, name).unwrap_or_else(|| panic!("no protocol {name} in {out:?}"))
    }

    /// Waits until BGP protocol `name` is Established; returns how long that took.
    pub fn wait_established(&mut self, name: &str, timeout: Duration) -> Duration {
        self.wait(timeout, &format!("has BGP session {name} Established"), |b| {
            b.protocol_state(name).contains("Established")
        })
    }

    /// The next hops of BIRD's routes for `prefix` (`show route for PREFIX all`): every path
    /// it holds, the best and the others, which `merge paths` sends to the kernel together
    /// when they are equal.
    #[must_use]
    pub fn route_next_hops(&self, prefix: &str) -> BTreeSet<IpAddr> {
        parse_bird_vias(&self.birdc(&["show", "route", "for", prefix, "all"]))
    }

    /// Polls `done` every 2 ms until it holds; panics with the log after `timeout` or if BIRD
    /// exits. Returns the time it took.
    #[expect(clippy::disallowed_methods, reason = "polls BIRD in real time")]
    fn wait(&mut self, timeout: Duration, what: &str, mut done: impl FnMut(&Self) -> bool) -> Duration {
        let start = Instant::now();
        loop {
            if done(self) {
                return start.elapsed();
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().expect("try_wait")) {
                panic!(
                    "bird in {} exited ({status}) before it {what}:\n{}",
                    self.netns,
                    self.log()
                );
            }
            assert!(
                start.elapsed() < timeout,
                "bird in {} did not say it {what} within {timeout:?}:\n{}",
                self.netns,
                self.log()
            );
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for Bird {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The `State Since Info` part of protocol `name`'s line in `birdc show protocols`:
/// `name  BGP  ---  up  16:11:33.855  Established`.
fn protocol_line(out: &str, name: &str) -> Option<String> {
    out.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        (words.next() == Some(name)).then(|| words.skip(2).collect::<Vec<_>>().join(" "))
    })
}

/// The addresses after `via` in `birdc show route … all`.
fn parse_bird_vias(out: &str) -> BTreeSet<IpAddr> {
    out.lines()
        .filter_map(|line| {
            line.trim()
                .strip_prefix("via ")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

// === the router's kernel ===

/// The next hops of the kernel's route for `prefix` in `ns` (`ip -j route show PREFIX`, main
/// table): one per path of a multipath route, none when there is no route.
#[must_use]
pub fn kernel_next_hops(ns: &Netns, prefix: &str) -> BTreeSet<IpAddr> {
    parse_kernel_next_hops(&ns.ip_output(&["-j", "route", "show", prefix]))
}

fn parse_kernel_next_hops(out: &str) -> BTreeSet<IpAddr> {
    let routes: Vec<serde_json::Value> =
        serde_json::from_str(out).unwrap_or_else(|e| panic!("ip -j route: {e}: {out:?}"));
    let gateway = |v: &serde_json::Value| -> Option<IpAddr> { v["gateway"].as_str()?.parse().ok() };
    routes
        .iter()
        .flat_map(|route| match route["nexthops"].as_array() {
            Some(hops) => hops.iter().filter_map(gateway).collect::<Vec<_>>(),
            None => gateway(route).into_iter().collect(),
        })
        .collect()
}

/// Waits until the kernel route for `prefix` in `ns` has exactly the next hops `want`, polling
/// every 2 ms, and returns the time from `since` to the end of the look that saw them (an upper
/// bound: one look runs `ip`, about 2 ms). Panics if that is later than `timeout`, also when the
/// look that saw them ended after it.
#[must_use]
#[expect(clippy::disallowed_methods, reason = "polls a real kernel in real time")]
pub fn wait_kernel_next_hops(
    ns: &Netns,
    prefix: &str,
    want: &BTreeSet<IpAddr>,
    since: Instant,
    timeout: Duration,
) -> Duration {
    loop {
        let hops = kernel_next_hops(ns, prefix);
        let took = since.elapsed();
        if hops == *want {
            assert!(
                took <= timeout,
                "the route to {prefix} in {} had next hops {want:?} only {took:?} on, more than {timeout:?}",
                ns.name()
            );
            return took;
        }
        assert!(
            took < timeout,
            "the route to {prefix} in {} has next hops {hops:?}, not {want:?}, {took:?} on",
            ns.name()
        );
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(list: &[&str]) -> BTreeSet<IpAddr> {
        list.iter().map(|a| a.parse().expect("an address")).collect()
    }

    #[test]
    fn reads_a_multipath_route_a_single_path_and_none() {
        let multipath = r#"[{"dst":"10.190.100.1","protocol":"bird","metric":32,"flags":[],"nexthops":[{"gateway":"10.190.0.11","dev":"br","weight":1,"flags":[]},{"gateway":"10.190.0.12","dev":"br","weight":1,"flags":[]}]}]"#;
        assert_eq!(
            parse_kernel_next_hops(multipath),
            set(&["10.190.0.11", "10.190.0.12"])
        );
        let single = r#"[{"dst":"10.190.100.1","gateway":"10.190.0.12","dev":"br","protocol":"bird","metric":32,"flags":[]}]"#;
        assert_eq!(parse_kernel_next_hops(single), set(&["10.190.0.12"]));
        assert_eq!(parse_kernel_next_hops("[]"), BTreeSet::new());
    }

    #[test]
    fn reads_birdc_output() {
        let protocols = "BIRD 2.0.12 ready.\nName       Proto      Table      State  Since         Info\n\
                         node1      BGP        ---        up     16:11:33.855  Established   \n\
                         node10     BGP        ---        start  16:11:20.377  Active        Socket: Connection refused\n";
        assert_eq!(
            protocol_line(protocols, "node1").as_deref(),
            Some("up 16:11:33.855 Established")
        );
        assert_eq!(
            protocol_line(protocols, "node10").as_deref(),
            Some("start 16:11:20.377 Active Socket: Connection refused")
        );
        assert_eq!(protocol_line(protocols, "node2"), None);

        let routes = "BIRD 2.0.12 ready.\nTable master4:\n10.190.100.1/32      unicast [node1 16:11:41.377] * (100) [AS65001i]\n\
                      \tvia 10.190.0.11 on br\n\tType: BGP univ\n\tBGP.next_hop: 10.190.0.11\n\
                      \x20                    unicast [node2 16:11:41.390] (100) [AS65001i]\n\
                      \tvia 10.190.0.12 on br\n\tType: BGP univ\n";
        assert_eq!(parse_bird_vias(routes), set(&["10.190.0.11", "10.190.0.12"]));
    }

    #[test]
    fn configs_name_what_the_lab_relies_on() {
        let router = RouterConfig {
            addr: Ipv4Addr::new(10, 190, 0, 1),
            asn: 65000,
            neighbors: vec![Neighbor {
                name: "node1".into(),
                addr: Ipv4Addr::new(10, 190, 0, 11),
                asn: 65001,
            }],
            bfd: Bfd::Fast,
        }
        .render();
        for needle in [
            "merge paths yes;",
            "passive;",
            "bfd on;",
            "multiplier 3;",
            "protocol bgp node1 from nodes { neighbor 10.190.0.11 as 65001; }",
        ] {
            assert!(router.contains(needle), "{needle} in\n{router}");
        }
        let node = NodeConfig {
            addr: Ipv4Addr::new(10, 190, 0, 11),
            asn: 65001,
            router: Ipv4Addr::new(10, 190, 0, 1),
            router_asn: 65000,
            table: 100,
            bfd: Bfd::Off,
        }
        .render();
        for needle in ["kernel table 100;", "learn;", "export where proto = \"vips\";"] {
            assert!(node.contains(needle), "{needle} in\n{node}");
        }
        assert!(!node.contains("bfd"), "{node}");
    }
}
