//! MPTCP for the API's connections (issue 19, items 2 and 3): `vnfpool_daemon::mptcp` in
//! network namespaces of their own, with MPTCP on (this kernel's default) and turned off
//! (`net.mptcp.enabled` = 0), over their loopback; and the real daemon's event stream to an SCE
//! host with two links to it, which outlives the loss of one.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    time::{Duration, Instant},
};

use vnfpool_daemon::{
    api::client::Client,
    mptcp::{Transport, connect, listen, of},
};
use vnfpool_tests::{
    daemon::{Daemon, Places, role},
    lab::{Lab, TCP_PORT, UDP_PORT},
    netns::{Netns, VethPair, command},
    pki::{Ca, server_files},
};

const BIN: &str = env!("CARGO_BIN_EXE_vnfpool-under-test");

/// In `ns`: a listener asking for MPTCP if `server`, a client asking for it if `client`; what
/// the listener offers and what the accepted connection carries.
fn connection(ns: &Netns, server: bool, client: bool) -> (Transport, Transport) {
    ns.run(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let (listener, offered) =
                listen(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), server).expect("listen");
            let addr = listener.local_addr().expect("address");
            let (stream, accepted) = tokio::join!(connect(addr, client), listener.accept());
            stream.expect("connect");
            let (accepted, _) = accepted.expect("accept");
            (offered, of(&accepted))
        })
    })
}

#[test]
fn both_ends_asking_for_mptcp_get_it_and_one_plain_tcp_end_makes_the_connection_tcp() {
    let ns = Netns::new();
    for (server, client, want) in [
        (true, true, (Transport::Mptcp, Transport::Mptcp)),
        (true, false, (Transport::Mptcp, Transport::Tcp)),
        (false, true, (Transport::Tcp, Transport::Tcp)),
        (false, false, (Transport::Tcp, Transport::Tcp)),
    ] {
        assert_eq!(
            connection(&ns, server, client),
            want,
            "(offered, carried) with MPTCP asked by the listener: {server}, by the client: {client}"
        );
    }
}

#[test]
fn where_mptcp_is_turned_off_both_ends_fall_back_to_tcp_by_themselves() {
    let ns = Netns::new();
    ns.sysctl("net.mptcp.enabled", "0");
    assert_eq!(
        connection(&ns, true, true),
        (Transport::Tcp, Transport::Tcp),
        "asked for MPTCP where net.mptcp.enabled = 0"
    );
}

/// The SCE's host has two links to the vnfpool host: A (10.77.1.0/24, the API's address
/// 10.77.1.1 is there) and B (10.77.2.0/24). Its kernel opens a second MPTCP subflow from its
/// address on B (`ip mptcp endpoint … subflow`). With link A cut, an event of the pool still
/// reaches the SCE on the connection it opened before: no reconnection, no `Last-Event-ID`,
/// no `gap`.
#[test]
fn an_event_stream_over_mptcp_outlives_the_loss_of_one_of_its_two_paths() {
    let lab = Lab::new(1);
    let places = Places::new();
    let sce = Netns::new();
    let (a, b) = (VethPair::new(&sce, &lab.host), VethPair::new(&sce, &lab.host));
    sce.ip(&["addr", "add", "10.77.1.2/24", "dev", &a.a.name]);
    sce.ip(&["addr", "add", "10.77.2.2/24", "dev", &b.a.name]);
    lab.host.ip(&["addr", "add", "10.77.1.1/24", "dev", &a.b.name]);
    lab.host.ip(&["addr", "add", "10.77.2.1/24", "dev", &b.b.name]);
    // The second subflow leaves from 10.77.2.2 bound to link B, towards the API's address on
    // A: a route there through B, worse than A's for everything else.
    sce.ip(&["route", "add", "10.77.1.0/24", "dev", &b.a.name, "metric", "200"]);
    for ns in [&sce, &lab.host] {
        ns.ip(&["mptcp", "limits", "set", "subflow", "2", "add_addr_accepted", "2"]);
    }
    sce.ip(&[
        "mptcp",
        "endpoint",
        "add",
        "10.77.2.2",
        "dev",
        &b.a.name,
        "subflow",
    ]);

    let ca = Ca::new("vnfpool lab");
    let (cert, key, client_ca) = server_files(&ca, &places.scratch.path, &["10.77.1.1"]);
    let text = format!(
        "{}api:\n  listen: 10.77.1.1:9443\n  cert: {}\n  key: {}\n  client_ca: {}\n  clients:\n    - {{ subject: \"CN=orchestrator\", role: sce }}\npools:\n  - name: dns\n    vip: {}\n    ports: [{UDP_PORT}]\n    protocol: udp\n    redundancy: {{ model: active-standby }}\n    health: {{ check: tcp, port: {TCP_PORT}, interval: 10ms, timeout: 50ms, rise: 1, fall: 3 }}\n{}",
        places.daemon_section(&lab),
        cert.display(),
        key.display(),
        client_ca.display(),
        lab.vip,
        Places::elements(&lab, &[100]),
    );
    std::fs::write(places.config(), text).expect("config");
    let mut daemon = Daemon::start(Path::new(BIN), &lab, &places);
    daemon.wait_until("e1 active", Duration::from_secs(10), |s| {
        role(s, "dns", "e1") == Some("active")
    });
    assert!(
        daemon.log_text().contains("transport=\"mptcp\""),
        "the API listens over MPTCP:\n{}",
        daemon.log_text()
    );

    let (identity, ca_pem) = (ca.issue("orchestrator", &[]), ca.pem());
    let (sce_name, cut, element_link) = (
        sce.name().to_owned(),
        a.a.name.clone(),
        (lab.host.name().to_owned(), lab.elements[0].host_link.name.clone()),
    );
    let events = sce.run(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let client = Client::new(
            "10.77.1.1:9443".parse().expect("address"),
            &ca_pem,
            Some((&identity.0, &identity.1)),
        )
        .expect("client");
        let mut cut = Some(cut);
        runtime.block_on(client.follow(None, Duration::from_secs(10), |events| {
            // Before the first event is read: the stream is open (its headers are in). Wait for
            // the second subflow, cut link A, then make the pool fail (its one element's link
            // goes down): the event of that reaches the SCE over link B only.
            if let Some(cut) = cut.take() {
                wait_for_second_subflow(&sce_name);
                let _ = command("ip", &["-n", &sce_name, "link", "set", "dev", &cut, "down"]);
                let _ = command(
                    "ip",
                    &[
                        "-n",
                        &element_link.0,
                        "link",
                        "set",
                        "dev",
                        &element_link.1,
                        "down",
                    ],
                );
            }
            events.iter().any(|e| e.kind == "pool")
        }))
    });
    let events = events.expect("the event stream, on the connection opened with both links up");
    assert!(events.iter().all(|e| e.kind != "gap"), "{events:?}");
}

/// Polls (every 5 ms, at most 5 s) until the SCE's namespace has an established TCP subflow
/// from its address on link B.
#[expect(
    clippy::disallowed_methods,
    reason = "polls the kernel's sockets in real time"
)]
fn wait_for_second_subflow(ns: &str) {
    let start = Instant::now();
    loop {
        let out = command(
            "ip",
            &[
                "netns",
                "exec",
                ns,
                "ss",
                "-Htn",
                "state",
                "established",
                "src",
                "10.77.2.2",
            ],
        );
        if !out.trim().is_empty() {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no MPTCP subflow over link B within 5 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}
