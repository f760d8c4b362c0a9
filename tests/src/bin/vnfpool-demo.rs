//! `cargo xtask demo`: the Pool Manager through a failover, start to end, on a lab of network
//! namespaces (see `vnfpool_tests::demo`): the `vnfpool` daemon on a configuration written for
//! the lab, client traffic through the VIP, an element's service killed and started again, a
//! drain, a `kill -9` of the daemon under traffic, a map as bpftool shows it, and the removal of
//! everything. Each step says what it shows, prints what was measured, and fails the demo
//! (exit status 1) when the figures do not show it. `--keep` leaves the lab and the daemon
//! running for `cargo xtask lab` and prints how to explore and remove them.

use std::{
    collections::BTreeMap,
    fmt::Display,
    net::{TcpStream, UdpSocket},
    process::ExitCode,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use vnfpool_common::{
    maps,
    vip::{FLAG_ADDRESS, PROTO_TCP, PROTO_UDP},
};
use vnfpool_daemon::control::{FailoverStatus, PoolStatus, Status};
use vnfpool_tests::{
    daemon::role,
    demo::{DNS_PORT, DemoLab, FALL, INTERVAL, KeptLab, RISE, WEB_PORT, pause, run_removing_on_exit, tally},
    lab,
    netns::command,
    traffic::{around_until, exchange_while, gap_away, owners},
};

const STEPS: usize = 9;
/// TCP connections opened at each of steps 3, 5 and 6.
const CONNECTIONS: usize = 30;
/// How long the probe waits for the answers still due once it stops sending: a probe counts
/// as lost only when no answer came by then (a loaded machine can delay one past its round
/// trip, and late is not lost).
const LATE: Duration = Duration::from_secs(1);

// === printing ===

/// Starts step `n`: its title, then what it shows and why that matters.
fn step(n: usize, title: &str, why: &str) {
    println!("\n[{n}/{STEPS}] {title}");
    for line in why.lines() {
        println!("    {line}");
    }
}

/// One piece of evidence (its further lines indented under the first).
fn say(text: impl Display) {
    let text = text.to_string();
    let mut lines = text.lines();
    println!("    - {}", lines.next().unwrap_or_default());
    for line in lines {
        println!("      {line}");
    }
}

/// A command as a user would type it, and what it printed.
fn shell(command: &str, output: &str) {
    println!("    $ {command}");
    for line in output.trim_end().lines() {
        println!("      {line}");
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// Fails the demo: `what` was not shown.
#[track_caller]
fn check(shown: bool, what: impl FnOnce() -> String) {
    assert!(shown, "{}", what());
}

// === the daemon's view ===

fn pool<'a>(s: &'a Status, name: &str) -> &'a PoolStatus {
    s.pools
        .iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("no pool {name} in the status"))
}

/// `(element, role)` of every element of a pool.
fn roles(s: &Status, name: &str) -> Vec<(String, String)> {
    pool(s, name)
        .elements
        .iter()
        .map(|e| (e.name.clone(), e.role.clone()))
        .collect()
}

fn roles_are(s: &Status, name: &str, want: &[(&str, &str)]) -> bool {
    let have = roles(s, name);
    have.len() == want.len() && have.iter().zip(want).all(|((e, r), (we, wr))| e == we && r == wr)
}

/// The newest failover of `element` in `pool`, checked against the pool's budget and printed.
fn failover_within_budget(s: &Status, name: &str, element: &str) -> FailoverStatus {
    let p = pool(s, name);
    let f = p
        .failovers
        .iter()
        .rev()
        .find(|f| f.element == element)
        .unwrap_or_else(|| panic!("{name}: no failover of {element} recorded: {:?}", p.failovers))
        .clone();
    let budget = p.budget.as_ref().expect("the pool's budget");
    let active: Vec<&str> = p
        .elements
        .iter()
        .filter(|e| e.role == "active")
        .map(|e| e.name.as_str())
        .collect();
    say(format!(
        "daemon, {name}: {element} out ({}), active now: {}; detection {}, decision to data plane switched {} (budget: detect {}, switch {})",
        f.reason,
        active.join(", "),
        ms(f.detection),
        ms(f.switch),
        ms(budget.detect),
        ms(budget.switch),
    ));
    check(f.detection <= budget.detect, || {
        format!(
            "{name}: detection {:?} over the budget {:?}",
            f.detection, budget.detect
        )
    });
    check(f.switch <= budget.switch, || {
        format!(
            "{name}: switch {:?} over the budget {:?}",
            f.switch, budget.switch
        )
    });
    f
}

// === the client ===

/// The element that answers each connection now (`None` where none does).
fn ask(conns: &mut [(TcpStream, String)]) -> Vec<Option<String>> {
    lab::ask_all(conns.iter_mut().map(|(c, _)| c))
        .into_iter()
        .map(Result::ok)
        .collect()
}

/// `n` new connections to web, each with the element that answered it.
fn connect(demo: &DemoLab, n: usize) -> Vec<(TcpStream, String)> {
    let mut streams = demo.lab.tcp_connect(n, WEB_PORT);
    let answers = lab::ask_all(streams.iter_mut());
    streams
        .into_iter()
        .zip(answers)
        .map(|(s, a)| {
            (
                s,
                a.unwrap_or_else(|e| panic!("a new web connection got no answer: {e}")),
            )
        })
        .collect()
}

/// Checks that every connection is still answered by the element that answered it first.
fn same_owners(conns: &mut [(TcpStream, String)], when: &str) {
    let now = ask(conns);
    for ((_, owner), answer) in conns.iter().zip(&now) {
        check(answer.as_deref() == Some(owner.as_str()), || {
            format!("{when}: a web connection of {owner} answered by {answer:?}")
        });
    }
}

/// Sets its flag when dropped, also on a failure: the probe thread of [`probing`] then ends,
/// and the scope that waits for it too.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Runs `f` while the probe asks dns once a millisecond, from 100 ms before to 100 ms after;
/// `f`'s result, the requests sent and the answers by element.
fn probing<R>(probe: &UdpSocket, f: impl FnOnce() -> R) -> (R, usize, BTreeMap<String, usize>) {
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let traffic = s.spawn(|| exchange_while(probe, |_| !done.load(Ordering::Relaxed), LATE));
        let stop = StopOnDrop(&done);
        pause(Duration::from_millis(100));
        let r = f();
        pause(Duration::from_millis(100));
        drop(stop);
        let (sent, got) = traffic.join().expect("the probe thread");
        (r, sent, got)
    })
}

fn answered(got: &BTreeMap<String, usize>) -> usize {
    got.values().sum()
}

fn by_element(got: &BTreeMap<String, usize>) -> String {
    got.iter()
        .map(|(e, n)| format!("{e} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

// === the story ===

/// What the steps share: the lab and its daemon, and the client's traffic.
struct Story {
    demo: DemoLab,
    /// The client's dns probe: one flow.
    probe: UdpSocket,
    /// The web connections still open, each with the element that answered it first.
    conns: Vec<(TcpStream, String)>,
}

fn build() -> Story {
    step(
        1,
        "Build the lab and start the daemon",
        "A client, the vnfpool host and three pool elements, each in a network namespace of its own. Every element\n\
         holds the VIP on lo and serves dns (UDP 53) and web (TCP 80); the daemon runs on the host, as in production.",
    );
    let t = Instant::now();
    let mut demo = DemoLab::up();
    let l = &demo.lab;
    say(format!(
        "lab built in {:.1} s: client {} in {}, vnfpool host {} (XDP on {}), {}; VIP {}",
        t.elapsed().as_secs_f64(),
        l.client_addr,
        l.client.name(),
        l.host.name(),
        l.ingress.name,
        l.elements
            .iter()
            .map(|e| format!("{} {} in {}", e.name, e.addr, e.netns.name()))
            .collect::<Vec<_>>()
            .join(", "),
        l.vip,
    ));
    let config = demo.places.config();
    say(format!("configuration written for it, {}:", config.display()));
    let text = std::fs::read_to_string(&config).expect("the configuration");
    for line in text.lines() {
        println!("        {line}");
    }
    let ready = demo.start_daemon();
    shell(
        &format!("vnfpool daemon --config {} &", config.display()),
        &format!(
            "(pid {}, in the host's namespace; log {})",
            demo.daemon().pid(),
            demo.places.log().display()
        ),
    );
    say(format!(
        "ready {} after its start: GET /ready answers 200, every pool is live",
        ms(ready)
    ));
    say(format!(
        "control socket {} (the vnfpool commands below pass it with --socket)",
        demo.places.socket().display()
    ));
    let probe = demo.lab.udp_sockets(1, DNS_PORT).pop().expect("the probe socket");
    Story {
        demo,
        probe,
        conns: Vec::new(),
    }
}

fn first_status(story: &mut Story) {
    step(
        2,
        "vnfpool status",
        "What the daemon decided from its first round of health checks: dns is active-standby, so e1 (highest\n\
         priority) takes all its flows and e2, e3 stand by; web is active-active, so every element takes new flows.",
    );
    let s = story.demo.status();
    check(
        roles_are(
            &s,
            "dns",
            &[("e1", "active"), ("e2", "standby"), ("e3", "standby")],
        ),
        || format!("dns roles: {:?}", roles(&s, "dns")),
    );
    check(
        roles_are(&s, "web", &[("e1", "active"), ("e2", "active"), ("e3", "active")]),
        || format!("web roles: {:?}", roles(&s, "web")),
    );
    shell("vnfpool status", &story.demo.cli(&["status"]));
}

fn traffic(story: &mut Story) {
    step(
        3,
        "Client traffic through the VIP",
        "From the client: 30 TCP connections to web, and a UDP request to dns every millisecond on one flow (the probe).\n\
         The XDP program sends each new flow to an element and keeps it there.",
    );
    story.conns = connect(&story.demo, CONNECTIONS);
    let spread = tally(story.conns.iter().map(|(_, o)| o.as_str()));
    check(
        ["e1", "e2", "e3"]
            .iter()
            .all(|e| story.conns.iter().any(|(_, o)| o == e)),
        || format!("web connections on every active: {spread}"),
    );
    say(format!(
        "web: {CONNECTIONS} connections answered by {spread}: a Maglev table spreads new flows over the actives"
    ));
    let (sent, got) = exchange_while(&story.probe, |t| t < Duration::from_secs(1), LATE);
    check(got.get("e1") == Some(&sent), || {
        format!("every probe answered by e1: {sent} sent, answers {got:?}")
    });
    say(format!(
        "dns: {sent} probes in 1 s, {} answered, all by e1 (the active): 0 lost",
        answered(&got)
    ));
}

/// Kills e1's service; the element that took over dns.
fn failover(story: &mut Story) -> String {
    step(
        4,
        "Kill e1's service: the daemon fails over",
        &format!(
            "e1's service dies as a crashed VNF would. The daemon checks every element every {} and takes one out\n\
             after {FALL} failed checks, then switches the data plane's mapping with one atomic store.",
            ms(INTERVAL)
        ),
    );
    let demo = &mut story.demo;
    let probed = around_until(&story.probe, |e| e != "e1", || demo.stop_service(0));
    let s = demo
        .daemon()
        .wait_until("e1 out of both pools", Duration::from_secs(2), |s| {
            role(s, "dns", "e1") == Some("out") && role(s, "web", "e1") == Some("out")
        });
    failover_within_budget(&s, "dns", "e1");
    failover_within_budget(&s, "web", "e1");
    let successor = pool(&s, "dns")
        .elements
        .iter()
        .find(|e| e.role == "active")
        .map(|e| e.name.clone())
        .expect("an active in dns");
    check(
        probed.answers.iter().rev().take(5).all(|(_, e)| *e == successor),
        || {
            format!(
                "the probe's flow moved to {successor}: {:?}",
                probed.answers.last()
            )
        },
    );
    let gap = gap_away(&probed.answers, "e1");
    let budget = pool(&s, "dns").budget.as_ref().expect("the budget");
    let bound = budget.detect + budget.switch + INTERVAL;
    say(format!(
        "client, dns: e1 answered the probe, then {successor} {} later; {} of {} probes lost (bound on that gap:\n\
         detect and switch budgets plus one check interval, {})",
        ms(gap),
        probed.lost(),
        probed.sent,
        ms(bound)
    ));
    check(gap <= bound, || format!("client gap {gap:?} over {bound:?}"));
    let now = ask(&mut story.conns);
    let (mut ended, mut kept) = (0, 0);
    for ((_, owner), answer) in story.conns.iter().zip(&now) {
        if owner == "e1" {
            check(answer.is_none(), || {
                format!("a connection of e1 answered by {answer:?}")
            });
            ended += 1;
        } else {
            check(answer.as_deref() == Some(owner.as_str()), || {
                format!("a connection of {owner} answered by {answer:?} after e1 failed")
            });
            kept += 1;
        }
    }
    story.conns.retain(|(_, owner)| owner != "e1");
    say(format!(
        "client, web: the {ended} connections on e1 ended with its service; the {kept} on e2 and e3 still answered by the same elements"
    ));
    shell("vnfpool status", &story.demo.cli(&["status"]));
    successor
}

fn heal(story: &mut Story, successor: &str) {
    step(
        5,
        "Start e1's service again: e1 takes dns back, and no probe is lost",
        &format!(
            "After {RISE} good checks the daemon makes e1 active again (preempt: it has the higher priority). Flows already\n\
             on {successor} stay there until they end (fail-back drain), so the probe's flow is not cut a second time."
        ),
    );
    let demo = &mut story.demo;
    let (back, sent, got) = probing(&story.probe, || {
        let healed = Instant::now();
        demo.start_service(0);
        demo.daemon()
            .wait_until("e1 active again in both pools", Duration::from_secs(5), |s| {
                role(s, "dns", "e1") == Some("active") && role(s, "web", "e1") == Some("active")
            });
        let back = healed.elapsed();
        pause(Duration::from_millis(300));
        back
    });
    let s = demo.status();
    say(format!(
        "daemon: e1 active in both pools {} after its service was started; dns: {successor} {}",
        ms(back),
        role(&s, "dns", successor).unwrap_or("?")
    ));
    say(format!(
        "client, dns: {sent} probes across the fail-back, {} answered ({}): {} lost",
        answered(&got),
        by_element(&got),
        sent - answered(&got)
    ));
    check(answered(&got) == sent, || {
        format!("a probe lost on fail-back: {sent} sent, answers {got:?}")
    });
    let fresh = demo.lab.udp_sockets(20, DNS_PORT);
    let new_owners = owners(&fresh);
    check(new_owners.iter().all(|e| e == "e1"), || {
        format!("new dns flows on e1: {new_owners:?}")
    });
    say(format!(
        "new flows: {} new dns flows answered by {}",
        fresh.len(),
        tally(new_owners.iter().map(String::as_str))
    ));
    same_owners(&mut story.conns, "after e1 came back");
    let more = connect(&story.demo, CONNECTIONS);
    let spread = tally(more.iter().map(|(_, o)| o.as_str()));
    check(more.iter().any(|(_, o)| o == "e1"), || {
        format!("new web connections reach e1 again: {spread}")
    });
    say(format!(
        "web: {CONNECTIONS} new connections answered by {spread}; the {} older ones by the same elements as before",
        story.conns.len()
    ));
    story.conns.extend(more);
    shell("vnfpool status", &story.demo.cli(&["status"]));
}

fn drain(story: &mut Story) {
    step(
        6,
        "Drain e3 from web: no new flows reach it, and its connections keep working",
        "An operator takes an element out of service without cutting anyone off: `vnfpool drain` stops new flows to it;\n\
         the flows it holds stay until they end (or until a deadline, with --deadline).",
    );
    let demo = &mut story.demo;
    shell("vnfpool drain web e3", &demo.cli(&["drain", "web", "e3"]));
    demo.daemon()
        .wait_until("e3 draining in web", Duration::from_secs(2), |s| {
            role(s, "web", "e3") == Some("draining")
        });
    let drained = connect(demo, CONNECTIONS);
    let spread = tally(drained.iter().map(|(_, o)| o.as_str()));
    check(drained.iter().all(|(_, o)| o != "e3"), || {
        format!("a new web connection reached e3 while it drains: {spread}")
    });
    say(format!(
        "web: e3 draining; {CONNECTIONS} new connections answered by {spread}: none by e3"
    ));
    same_owners(&mut story.conns, "while e3 drains");
    let on_e3 = story.conns.iter().filter(|(_, o)| o == "e3").count();
    check(on_e3 > 0, || "connections on e3 before the drain".to_owned());
    say(format!(
        "web: the {on_e3} connections e3 held still answered by e3, the {} others by their elements",
        story.conns.len() - on_e3
    ));
    story.conns.extend(drained);
    shell("vnfpool undrain web e3", &demo.cli(&["undrain", "web", "e3"]));
    demo.daemon()
        .wait_until("e3 active in web", Duration::from_secs(2), |s| {
            role(s, "web", "e3") == Some("active")
        });
    say("web: e3 active again, for new flows too");
}

fn kill_and_restart(story: &mut Story) {
    step(
        7,
        "kill -9 the daemon under traffic, then start it again",
        "The data plane needs no daemon to forward: the program, its maps and its XDP attachment are pinned.\n\
         A new daemon adopts them, and the saved pool state, instead of starting over.",
    );
    let Story { demo, probe, conns } = story;
    let before = demo.status();
    let ((), sent, got) = probing(probe, || {
        let daemon = demo.daemon.take().expect("the daemon");
        let pid = daemon.pid();
        let _ = daemon.kill();
        say(format!("killed the daemon (pid {pid}) with SIGKILL"));
        pause(Duration::from_millis(500));
        same_owners(conns, "with no daemon");
        say(format!(
            "no daemon for 0.5 s: the {} web connections answered by the same elements",
            conns.len()
        ));
        let log = demo.places.log();
        let _ = std::fs::rename(&log, log.with_extension("killed.log"));
        let ready = demo.start_daemon();
        say(format!(
            "started again (pid {}): ready {} after its start",
            demo.daemon().pid(),
            ms(ready)
        ));
    });
    say(format!(
        "client, dns: {sent} probes across the kill and the restart, {} answered ({}): {} lost",
        answered(&got),
        by_element(&got),
        sent - answered(&got)
    ));
    check(answered(&got) == sent, || {
        format!("a probe lost across kill -9 and the restart: {sent} sent, answers {got:?}")
    });
    same_owners(conns, "after the restart");
    say(format!(
        "client, web: the {} connections answered by the same elements after the restart",
        conns.len()
    ));
    let log = demo.daemon().log_text();
    let adopted = log.lines().find(|l| l.contains("adopted")).map_or_else(
        || panic!("the restarted daemon did not adopt the pins:\n{log}"),
        plain,
    );
    say(format!("the new daemon's log: {adopted}"));
    let after = demo.status();
    for name in ["dns", "web"] {
        check(roles(&after, name) == roles(&before, name), || {
            format!(
                "{name}: roles {:?} after the restart, {:?} before",
                roles(&after, name),
                roles(&before, name)
            )
        });
    }
    let generation = |s: &Status, name: &str| pool(s, name).generation;
    say(format!(
        "same roles as before the kill; mapping generation dns {} -> {}, web {} -> {} (the same mapping written again)",
        generation(&before, "dns"),
        generation(&after, "dns"),
        generation(&before, "web"),
        generation(&after, "web"),
    ));
}

fn show_map(story: &Story) {
    let demo = &story.demo;
    step(
        8,
        "The maps, as bpftool shows them",
        &format!(
            "Every map is pinned under {} and carries its key and value types (BTF), so bpftool prints\n\
             fields by name. VNF_VIPS sends each VIP, port and protocol to its pool:",
            demo.places.pins.path().display()
        ),
    );
    let vips = demo.places.pins.path().join(maps::VIPS);
    let vips = vips.to_string_lossy();
    let dump = command("bpftool", &["map", "dump", "pinned", &vips]);
    shell(&format!("bpftool map dump pinned {vips}"), &dump);
    check(dump.contains("\"port_be\"") && dump.contains("\"pool\""), || {
        format!("named fields in the dump:\n{dump}")
    });
    let read = vip_entries(&command("bpftool", &["-j", "map", "dump", "pinned", &vips]));
    let vip = demo.lab.vip;
    let mut want = [
        format!("{vip}:{DNS_PORT}/udp -> pool 0"),
        format!("{vip}:{WEB_PORT}/tcp -> pool 1"),
        format!("{vip}/udp (address entry) -> pool 0"),
        format!("{vip}/tcp (address entry) -> pool 1"),
    ];
    want.sort();
    check(read == want, || {
        format!("VIP entries {read:?}, expected {want:?}")
    });
    say(format!(
        "read: addr is the VIP, IPv4-mapped, in four 32-bit words as stored (network byte order); port_be\n\
         is the port in network byte order (53 reads 13568, 80 reads 20480); pool 0 is dns, 1 is web; flags 1\n\
         marks an address entry (port 0), which lets fragments and ICMP errors for the VIP find their pool:\n  {}",
        read.join("\n  ")
    ));
}

fn keep(story: Story) {
    step(
        9,
        "Keep everything (--keep)",
        "The lab, the element services and the daemon stay up; `cargo xtask lab` acts on them.",
    );
    let kept = story.demo.keep();
    say(format!(
        "kept: daemon pid {}, namespaces {}, {}, {}; state in {}",
        kept.daemon.unwrap_or_default(),
        kept.client,
        kept.host,
        kept.elements
            .iter()
            .map(|e| e.netns.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        KeptLab::state_path().display()
    ));
    for line in kept.explore().lines() {
        println!("    {line}");
    }
}

fn remove(story: Story) {
    step(
        9,
        "Remove everything",
        "The daemon, the element services, the namespaces, the pins and the files go, as they would on Ctrl-C or a\n\
         failure. (`cargo xtask demo --keep` leaves them up to explore.)",
    );
    let demo = &story.demo;
    let namespaces: Vec<String> = std::iter::once(&demo.lab.client)
        .chain(std::iter::once(&demo.lab.host))
        .chain(demo.lab.elements.iter().map(|e| &e.netns))
        .map(|n| n.name().to_owned())
        .collect();
    let pins = demo.places.pins.path().to_owned();
    let files = demo.places.scratch.path.clone();
    drop(story);
    let listed = command("ip", &["netns", "list"]);
    let left: Vec<&String> = namespaces
        .iter()
        .filter(|n| listed.split_whitespace().any(|w| w == n.as_str()))
        .collect();
    check(left.is_empty() && !pins.exists() && !files.exists(), || {
        format!(
            "left behind: namespaces {left:?}, pins {} {}, files {} {}",
            pins.display(),
            pins.exists(),
            files.display(),
            files.exists()
        )
    });
    say(format!(
        "removed the daemon, 3 services, namespaces {}, pins {}, files {}",
        namespaces.join(", "),
        pins.display(),
        files.display()
    ));
    say("checked: `ip netns list` lists none of those namespaces, and both directories are gone");
}

fn demo(keep_it: bool) {
    let started = Instant::now();
    println!(
        "vnfpool demo: the Pool Manager daemon and its XDP data plane, through a failover, in a lab of network namespaces"
    );
    let mut story = build();
    first_status(&mut story);
    traffic(&mut story);
    let successor = failover(&mut story);
    heal(&mut story, &successor);
    drain(&mut story);
    kill_and_restart(&mut story);
    show_map(&story);
    if keep_it {
        keep(story);
    } else {
        remove(story);
    }
    println!(
        "\ndemo done in {:.1} s: every step showed what it claims.",
        started.elapsed().as_secs_f64()
    );
}

/// `VNF_VIPS` as `bpftool -j map dump` prints it, one line per entry, sorted: `addr:port/proto
/// -> pool N` for a port, `addr/proto (address entry) -> pool N` for the entry that marks the
/// address for fragments and ICMP errors.
fn vip_entries(json: &str) -> Vec<String> {
    let entries: serde_json::Value = serde_json::from_str(json).expect("bpftool's JSON");
    let number = |v: &serde_json::Value, what: &str| {
        v.as_u64()
            .unwrap_or_else(|| panic!("{what}: a number in bpftool's JSON, not {v}"))
    };
    let mut out: Vec<String> = entries
        .as_array()
        .expect("an array of entries")
        .iter()
        .map(|e| {
            let (k, v) = (&e["formatted"]["key"], &e["formatted"]["value"]);
            let addr = k["addr"].as_array().expect("addr: four words");
            // IPv4-mapped, each word as stored (network byte order): the address is the last.
            let word = u32::try_from(number(&addr[3], "addr")).expect("a 32-bit word");
            let ip = std::net::Ipv4Addr::from(u32::from_be(word));
            let port = u16::from_be(u16::try_from(number(&k["port_be"], "port_be")).expect("a port"));
            let proto = match u8::try_from(number(&k["proto"], "proto")) {
                Ok(PROTO_TCP) => "tcp",
                Ok(PROTO_UDP) => "udp",
                _ => "?",
            };
            let pool = number(&v["pool"], "pool");
            if number(&v["flags"], "flags") & u64::from(FLAG_ADDRESS) != 0 {
                format!("{ip}/{proto} (address entry) -> pool {pool}")
            } else {
                format!("{ip}:{port}/{proto} -> pool {pool}")
            }
        })
        .collect();
    out.sort();
    out
}

/// `line` without its terminal colour codes (`ESC [ … m`).
fn plain(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            chars.by_ref().find(|&c| c == 'm');
        } else {
            out.push(c);
        }
    }
    out
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let keep = match args.as_slice() {
        [] => false,
        [k] if k == "--keep" => true,
        _ => {
            eprintln!("usage: cargo xtask demo [--keep]");
            return ExitCode::from(2);
        }
    };
    if keep && let Some(lab) = KeptLab::load() {
        eprintln!(
            "a lab is up already (client namespace {}): `cargo xtask lab down` first",
            lab.client
        );
        return ExitCode::FAILURE;
    }
    run_removing_on_exit(|| demo(keep))
}
