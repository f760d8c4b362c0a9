//! Real traffic through the program attached natively to a veth: a client, the vnfpool host and
//! three elements in namespaces of their own (see `vnfpool_tests::lab`). Needs root; the CI
//! kernel has everything used here, so nothing is skipped.
//!
//! Each test runs three times more with the elements on other subnets behind a router, reached
//! through IPIP, GUE and VXLAN tunnels (`Lab::routed`): the same spread, affinity, failure and
//! drain checks hold there.

use std::{
    collections::{BTreeMap, HashSet},
    io::{self, ErrorKind},
    net::{IpAddr, TcpStream},
    path::Path,
};

use vnfpool_common::{
    addr,
    element::{STATE_DOWN, STATE_DRAINING, STATE_UP},
    flow::{self, FlowKey},
    ring,
    tunnel::{ENCAP_GUE, ENCAP_IPIP, ENCAP_VXLAN},
    vip::{PROTO_TCP, PROTO_UDP},
};
use vnfpool_daemon::{
    dataplane::{AyaDataplane, FlowHashKey, LoadOptions, Mapping},
    model::maglev::{self, Backend},
};
use vnfpool_tests::lab::{self, Lab, TCP_PORT, UDP_PORT};

const RING_SIZE: u32 = maglev::DEFAULT_RING_SIZE;
/// Maglev weights of e1, e2, e3.
const WEIGHTS: [u32; 3] = [1, 1, 2];
const TCP_FLOWS: usize = 300;
const NEW_FLOWS: usize = 100;
const UDP_SOCKETS: usize = 60;
const UDP_ROUNDS: usize = 3;
/// Largest allowed gap, in percentage points, between an element's share of the flows and its
/// share of the weight.
///
/// The lab's addresses and client ports are fixed, so the spread is the same in every run; the
/// tolerance says how far 300 flows may stray from the weights. For 300 draws with
/// p = weight/sum the standard deviation of a share is sqrt(p(1-p)/300): 2.5 pp for e1 and e2
/// (p = 1/4), 2.9 pp for e3 (p = 1/2), so ±8 pp is about 3σ, while a table that ignored the
/// weights (33.3% each) would miss e3's 50% by 16.7 pp. The exact check is the other one:
/// every flow lands on the element the table names for its hash.
const SHARE_TOLERANCE_PP: f64 = 8.0;

fn names(lab: &Lab) -> Vec<&str> {
    lab.elements.iter().map(|e| e.name.as_str()).collect()
}

/// The Maglev table over the elements in `up`, with their weights.
fn table(lab: &Lab, up: &[usize]) -> Vec<u16> {
    let backends: Vec<Backend> = up
        .iter()
        .map(|&i| Backend {
            key: maglev::name_key(&lab.elements[i].name),
            index: u16::try_from(i).expect("element index"),
            weight: WEIGHTS[i],
        })
        .collect();
    maglev::build(&backends, RING_SIZE).expect("building the Maglev table")
}

/// A mapping with the elements in `states` (by index), the table over those that are up.
fn mapping(lab: &Lab, states: [u32; 3]) -> Mapping {
    let up: Vec<usize> = (0..states.len()).filter(|&i| states[i] == STATE_UP).collect();
    Mapping {
        ring: table(lab, &up),
        elements: states
            .iter()
            .enumerate()
            .map(|(i, &s)| lab.element_entry(i, s))
            .collect(),
        tunnels: lab.tunnel_entries(),
    }
}

/// The element the table gives a new flow from the client's `port`, as the program computes it.
fn predicted(lab: &Lab, table: &[u16], pool: u32, proto: u8, vport: u16, port: u16) -> usize {
    let key = FlowKey {
        src: addr::from_ip(IpAddr::V4(lab.client_addr)),
        sport_be: port.to_be(),
        dport_be: vport.to_be(),
        pool: u16::try_from(pool).expect("pool index"),
        proto,
        _pad: 0,
    };
    let size = u32::try_from(table.len()).expect("table size");
    usize::from(table[ring::position(flow::hash(&key, &KEY), size) as usize])
}

/// Index of the element that answered `answer`.
#[track_caller]
fn element_of(lab: &Lab, answer: &io::Result<String>, what: &str) -> usize {
    match answer {
        Ok(name) => lab
            .elements
            .iter()
            .position(|e| e.name == *name)
            .unwrap_or_else(|| panic!("{what}: answer {name:?} is no element's name")),
        Err(e) => panic!("{what}: no answer: {e}"),
    }
}

/// A client connection and the element it was first answered by.
struct Conn {
    stream: TcpStream,
    port: u16,
    element: usize,
}

/// Every source port the client used in a test: a port used twice would find the earlier
/// flow's entry in the flow table, and the checks below assume every new flow is new.
#[derive(Default)]
struct Ports(HashSet<u16>);

impl Ports {
    #[track_caller]
    fn add(&mut self, port: u16) {
        assert!(
            self.0.insert(port),
            "the client reused source port {port}: not a new flow"
        );
    }
}

/// Opens `n` connections, asks each once, and checks each landed where `table` says.
#[track_caller]
fn open(lab: &Lab, ports: &mut Ports, n: usize, table: &[u16], what: &str) -> Vec<Conn> {
    let mut streams = lab.tcp_connect(n, TCP_PORT);
    let answers = lab::ask_all(streams.iter_mut());
    streams
        .into_iter()
        .zip(&answers)
        .enumerate()
        .map(|(i, (stream, answer))| {
            let port = stream.local_addr().expect("local address").port();
            ports.add(port);
            let element = element_of(lab, answer, &format!("{what} connection {i} (port {port})"));
            let want = predicted(lab, table, POOL_TCP, PROTO_TCP, TCP_PORT, port);
            assert_eq!(
                element,
                want,
                "{what} connection {i} (port {port}) landed on e{} but the table names e{}",
                element + 1,
                want + 1
            );
            Conn {
                stream,
                port,
                element,
            }
        })
        .collect()
}

/// Asks every connection again and checks it is still answered by its element.
#[track_caller]
fn assert_kept<'a>(lab: &Lab, conns: impl IntoIterator<Item = &'a mut Conn>, what: &str) {
    let conns: Vec<&mut Conn> = conns.into_iter().collect();
    let want: Vec<(u16, usize)> = conns.iter().map(|c| (c.port, c.element)).collect();
    let answers = lab::ask_all(conns.into_iter().map(|c| &mut c.stream));
    for ((port, element), answer) in want.into_iter().zip(&answers) {
        let got = element_of(lab, answer, &format!("{what}: port {port}"));
        assert_eq!(
            got,
            element,
            "{what}: the flow from port {port} moved from e{} to e{}",
            element + 1,
            got + 1
        );
    }
}

fn counts(n: usize, elements: impl IntoIterator<Item = usize>) -> Vec<usize> {
    let mut c = vec![0; n];
    for e in elements {
        c[e] += 1;
    }
    c
}

fn show(lab: &Lab, what: &str, counts: &[usize]) {
    let total: usize = counts.iter().sum();
    let parts: Vec<String> = names(lab)
        .iter()
        .zip(counts)
        .map(|(name, &c)| format!("{name} {c:>3} ({:>5.1}%)", percent(c, total)))
        .collect();
    println!("{what:<44} {}", parts.join("  "));
}

fn percent(part: usize, total: usize) -> f64 {
    // Counts of a few hundred: exact in f64.
    #[expect(clippy::cast_precision_loss, reason = "counts of a few hundred")]
    let (part, total) = (part as f64, total as f64);
    100.0 * part / total
}

const POOL_TCP: u32 = 0;
const POOL_UDP: u32 = 1;

/// The flow hash key of these labs' data plane, so that the tests can predict picks.
const KEY: flow::HashKey = [0x5eed, 0x1ab];

fn loaded(lab: &Lab) -> AyaDataplane {
    let mut dp = AyaDataplane::load(&LoadOptions {
        pin_dir: None,
        flow_hash_key: FlowHashKey::Preferred(KEY),
        ..LoadOptions::default()
    })
    .expect("loading the XDP object (needs root)");
    lab.attach(&mut dp);
    dp
}

/// The `vnfpool` binary, for the elements' `vnfpool decap`.
const BIN: &str = env!("CARGO_BIN_EXE_vnfpool-under-test");

#[test]
fn tcp_spread_affinity_down_and_drain() {
    tcp_spread_affinity_down_and_drain_in(&Lab::new(WEIGHTS.len()));
}

/// The same through IPIP tunnels to elements behind a router, which decapsulate in XDP.
#[test]
fn tcp_through_ipip_tunnels_to_another_subnet() {
    tcp_spread_affinity_down_and_drain_in(&Lab::routed(WEIGHTS.len(), ENCAP_IPIP, Path::new(BIN)));
}

/// The same through GUE tunnels.
#[test]
fn tcp_through_gue_tunnels_to_another_subnet() {
    tcp_spread_affinity_down_and_drain_in(&Lab::routed(WEIGHTS.len(), ENCAP_GUE, Path::new(BIN)));
}

/// The same through VXLAN, into each element's kernel VXLAN device.
#[test]
fn tcp_through_vxlan_to_another_subnet() {
    tcp_spread_affinity_down_and_drain_in(&Lab::routed(WEIGHTS.len(), ENCAP_VXLAN, Path::new(BIN)));
}

fn tcp_spread_affinity_down_and_drain_in(lab: &Lab) {
    // Dropped before the lab: the program is detached before its namespaces go.
    let mut dp = loaded(lab);
    let vip = IpAddr::V4(lab.vip);
    dp.add_vip(POOL_TCP, addr::from_ip(vip), TCP_PORT, PROTO_TCP)
        .expect("add_vip");
    let mut ports = Ports::default();

    // All up: the spread follows the weights, every flow stays where it landed.
    let all_up = mapping(lab, [STATE_UP; 3]);
    dp.apply(POOL_TCP, &all_up).expect("apply: all up");
    let mut conns = open(lab, &mut ports, TCP_FLOWS, &all_up.ring, "all up");
    let spread = counts(3, conns.iter().map(|c| c.element));
    show(
        lab,
        &format!("{TCP_FLOWS} TCP flows, weights {WEIGHTS:?}:"),
        &spread,
    );
    let sum: u32 = WEIGHTS.iter().sum();
    for (i, (&got, &w)) in spread.iter().zip(&WEIGHTS).enumerate() {
        let (share, want) = (percent(got, TCP_FLOWS), 100.0 * f64::from(w) / f64::from(sum));
        assert!(
            (share - want).abs() <= SHARE_TOLERANCE_PP,
            "e{} has {share:.1}% of the flows, weight share {want:.1}% ± {SHARE_TOLERANCE_PP} pp; spread {spread:?}",
            i + 1
        );
    }
    assert_kept(lab, conns.iter_mut(), "all up, asked again");
    if lab.router.is_some() {
        // Every element's packets came through its tunnel: its decapsulation counted them.
        for (i, &n) in spread.iter().enumerate() {
            let stripped = lab.decapsulated(i);
            assert!(
                n == 0 || stripped >= 2 * n as u64,
                "e{} answered {n} connections but decapsulated {stripped} packets",
                i + 1
            );
        }
    }

    // e1 down: e2's and e3's flows stay; e1's are re-picked, so the element that now gets
    // them resets them (it has no such connection); new flows never go to e1.
    let e1_down = mapping(lab, [STATE_DOWN, STATE_UP, STATE_UP]);
    dp.apply(POOL_TCP, &e1_down).expect("apply: e1 down");
    let (mut of_e1, mut rest): (Vec<Conn>, Vec<Conn>) = conns.into_iter().partition(|c| c.element == 0);
    assert_kept(lab, rest.iter_mut(), "e1 down, flows of e2 and e3");
    let answers = lab::ask_all(of_e1.iter_mut().map(|c| &mut c.stream));
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for (c, answer) in of_e1.iter().zip(&answers) {
        let outcome = match answer {
            Ok(name) => format!("answered by {name}"),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => "reset".to_owned(),
            Err(e) => format!("error {:?}", e.kind()),
        };
        assert!(
            outcome == "reset" || (outcome.starts_with("answered") && answer.as_deref().ok() != Some("e1")),
            "e1 down: the flow from port {} of e1 was neither reset nor re-picked: {outcome}",
            c.port
        );
        *outcomes.entry(outcome).or_default() += 1;
    }
    println!("e1 down, its {} flows: {outcomes:?}", of_e1.len());
    drop(of_e1);
    let mut new_down = open(lab, &mut ports, NEW_FLOWS, &e1_down.ring, "e1 down, new");
    let spread = counts(3, new_down.iter().map(|c| c.element));
    show(lab, &format!("e1 down, {NEW_FLOWS} new flows:"), &spread);
    assert_eq!(spread[0], 0, "new flows went to e1 while it is down");

    // e1 up again, e2 draining: e2 keeps its flows and gets no new ones.
    let e2_draining = mapping(lab, [STATE_UP, STATE_DRAINING, STATE_UP]);
    dp.apply(POOL_TCP, &e2_draining).expect("apply: e2 draining");
    assert_kept(
        lab,
        rest.iter_mut().chain(&mut new_down),
        "e2 draining, existing flows",
    );
    let kept = counts(3, rest.iter().chain(&new_down).map(|c| c.element));
    show(lab, "e2 draining, existing flows still answered:", &kept);
    let new_drain = open(lab, &mut ports, NEW_FLOWS, &e2_draining.ring, "e2 draining, new");
    let spread = counts(3, new_drain.iter().map(|c| c.element));
    show(lab, &format!("e2 draining, {NEW_FLOWS} new flows:"), &spread);
    assert_eq!(spread[1], 0, "new flows went to e2 while it drains");
}

#[test]
fn udp_spread_and_affinity() {
    udp_spread_and_affinity_in(&Lab::new(WEIGHTS.len()));
}

#[test]
fn udp_through_ipip_tunnels_to_another_subnet() {
    udp_spread_and_affinity_in(&Lab::routed(WEIGHTS.len(), ENCAP_IPIP, Path::new(BIN)));
}

#[test]
fn udp_through_gue_tunnels_to_another_subnet() {
    udp_spread_and_affinity_in(&Lab::routed(WEIGHTS.len(), ENCAP_GUE, Path::new(BIN)));
}

#[test]
fn udp_through_vxlan_to_another_subnet() {
    udp_spread_and_affinity_in(&Lab::routed(WEIGHTS.len(), ENCAP_VXLAN, Path::new(BIN)));
}

fn udp_spread_and_affinity_in(lab: &Lab) {
    let mut dp = loaded(lab);
    dp.add_vip(POOL_UDP, addr::from_ip(IpAddr::V4(lab.vip)), UDP_PORT, PROTO_UDP)
        .expect("add_vip");
    let all_up = mapping(lab, [STATE_UP; 3]);
    dp.apply(POOL_UDP, &all_up).expect("apply: all up");

    let socks = lab.udp_sockets(UDP_SOCKETS, UDP_PORT);
    let mut ports = Ports::default();
    let mut first = Vec::with_capacity(UDP_SOCKETS);
    for (i, s) in socks.iter().enumerate() {
        let port = s.local_addr().expect("local address").port();
        ports.add(port);
        let answers: Vec<usize> = (0..UDP_ROUNDS)
            .map(|round| {
                element_of(
                    lab,
                    &lab::ask_udp(s),
                    &format!("UDP socket {i} (port {port}) round {round}"),
                )
            })
            .collect();
        assert!(
            answers.iter().all(|&e| e == answers[0]),
            "UDP socket {i} (port {port}) was answered by {answers:?} (element indices)"
        );
        let want = predicted(lab, &all_up.ring, POOL_UDP, PROTO_UDP, UDP_PORT, port);
        assert_eq!(
            answers[0],
            want,
            "UDP socket {i} (port {port}) landed on e{} but the table names e{}",
            answers[0] + 1,
            want + 1
        );
        first.push(answers[0]);
    }
    let spread = counts(3, first);
    show(
        lab,
        &format!("{UDP_SOCKETS} UDP sockets x {UDP_ROUNDS}, weights {WEIGHTS:?}:"),
        &spread,
    );
    // 60 draws with p >= 1/4: an element missing has probability (3/4)^60 < 1e-7.
    assert!(
        spread.iter().all(|&c| c > 0),
        "some element got no UDP flow: {spread:?}"
    );
}
