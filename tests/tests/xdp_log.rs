//! The drop log (`vnfpool daemon --xdp-log`, issue 18): on, the program logs the 1st, 2nd, 4th…
//! packet of each reason per CPU through aya-log; off, the verifier has removed the log code, so
//! the program that runs is the one without it.

use std::{
    net::{IpAddr, UdpSocket},
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use aya::maps::{Map, PerCpuArray};
use aya_log::EbpfLogger;
use vnfpool_common::{
    maps,
    stats::{Counters, Reason},
};
use vnfpool_daemon::dataplane::LoadOptions;
use vnfpool_tests::{
    daemon::{Daemon, Places, role},
    harness::{Harness, verdict_name},
    lab::{Lab, TCP_PORT, UDP_PORT},
    netns::command,
    packet::{Frame, L4},
};

const BIN: &str = env!("CARGO_BIN_EXE_vnfpool-under-test");

/// An IPv4 TCP frame whose total length cuts its TCP header: `Reason::Malformed`.
fn malformed() -> Vec<u8> {
    let src: IpAddr = "10.0.0.1".parse().expect("address");
    let dst: IpAddr = "10.0.0.2".parse().expect("address");
    let mut frame = Frame::new(
        src,
        dst,
        L4::Tcp {
            sport: 40000,
            dport: 80,
        },
    )
    .build();
    // IPv4 total length (after the 14-byte Ethernet header): 20 of IP + 12 of TCP.
    frame[16..18].copy_from_slice(&32u16.to_be_bytes());
    frame
}

fn harness(xdp_log: bool) -> Harness {
    Harness::with(&LoadOptions {
        xdp_log,
        ..LoadOptions::default()
    })
}

fn program_id(h: &mut Harness) -> u32 {
    h.program().info().expect("program info").id()
}

/// The kernel's id of the program's log ring.
fn log_map_id(h: &mut Harness) -> u32 {
    match h.dp.ebpf_mut().map(maps::XDP_LOG) {
        Some(Map::RingBuf(data)) => data.info().expect("map info").id(),
        other => panic!("{} is no ring buffer: {other:?}", maps::XDP_LOG),
    }
}

/// The program as the kernel runs it (after the verifier), one instruction a line.
fn translated(id: u32) -> Vec<String> {
    let out = command(
        "bpftool",
        &["--json", "prog", "dump", "xlated", "id", &id.to_string()],
    );
    let insns: Vec<serde_json::Value> = serde_json::from_str(&out).expect("bpftool JSON");
    insns
        .iter()
        .filter_map(|i| i["disasm"].as_str().map(str::to_owned))
        .collect()
}

/// Instructions that load the address of map `map_id`.
fn references(insns: &[String], map_id: u32) -> usize {
    let needle = format!("map[id:{map_id}]");
    insns.iter().filter(|i| i.contains(&needle)).count()
}

/// Per CPU, how many packets the program counted under `reason`.
fn per_cpu_packets(h: &mut Harness, reason: Reason) -> Vec<u64> {
    let map = h.dp.ebpf_mut().map(maps::REASON_STATS).expect("reasons map");
    let reasons: PerCpuArray<_, Counters> = PerCpuArray::try_from(map).expect("per-CPU array");
    reasons
        .get(&(reason as u32), 0)
        .expect("read reasons")
        .iter()
        .map(|c| c.packets)
        .collect()
}

/// The log's records, as text.
#[derive(Clone, Default)]
struct Records(Arc<Mutex<Vec<String>>>);

impl log::Log for Records {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        self.0
            .lock()
            .expect("records")
            .push(format!("{} {}", record.level(), record.args()));
    }

    fn flush(&self) {}
}

/// Whatever the program's log ring holds now.
fn drain_log(program: u32) -> Vec<String> {
    let records = Records::default();
    let mut logger =
        EbpfLogger::init_from_id_with_logger(program, records.clone()).expect("the program's log ring");
    logger.flush();
    records.0.lock().expect("records").clone()
}

#[test]
fn off_the_verifier_has_removed_the_log_code_and_nothing_is_logged() {
    let mut off = harness(false);
    let mut on = harness(true);
    let (off_id, on_id) = (program_id(&mut off), program_id(&mut on));
    let off_insns = translated(off_id);
    let on_insns = translated(on_id);
    let on_refs = references(&on_insns, log_map_id(&mut on));
    assert!(
        on_refs > 0,
        "with the log on, the program must write its log ring"
    );
    assert_eq!(
        references(&off_insns, log_map_id(&mut off)),
        0,
        "with the log off, no instruction of the loaded program may touch the log ring"
    );
    assert!(
        off_insns.len() < on_insns.len(),
        "off: {} instructions, on: {}",
        off_insns.len(),
        on_insns.len()
    );

    let frame = malformed();
    for _ in 0..8 {
        off.run(&frame);
    }
    assert_eq!(
        per_cpu_packets(&mut off, Reason::Malformed).iter().sum::<u64>(),
        8
    );
    assert_eq!(drain_log(off_id), Vec::<String>::new());
}

/// The verifier walks each place that may log once per path that reaches it, so the program
/// with its log on is the one near the verifier's limit of a million instructions; a change
/// that adds paths must leave room (one that did not was found only by the tests that load it).
#[test]
fn with_the_log_on_the_verifier_has_room_to_spare() {
    const LIMIT: u32 = 1_000_000;
    for xdp_log in [false, true] {
        let mut h = harness(xdp_log);
        let verified = h
            .program()
            .info()
            .expect("program info")
            .verified_instruction_count()
            .expect("the kernel reports verified instructions (Linux >= 5.16)");
        println!(
            "drop log {}: {verified} instructions verified",
            if xdp_log { "on" } else { "off" }
        );
        assert!(
            verified < LIMIT * 3 / 4,
            "drop log {xdp_log}: the verifier walked {verified} instructions, more than 3/4 of its limit"
        );
    }
}

#[test]
fn on_the_first_packets_of_a_reason_per_cpu_are_logged() {
    let mut h = harness(true);
    let id = program_id(&mut h);
    let frame = malformed();
    for _ in 0..20 {
        let run = h.run(&frame);
        assert_eq!(
            verdict_name(run.verdict),
            "XDP_PASS",
            "a malformed frame goes to the kernel"
        );
    }
    let counts = per_cpu_packets(&mut h, Reason::Malformed);
    assert_eq!(counts.iter().sum::<u64>(), 20);
    // Per CPU that ran n of them: packets 1, 2, 4, 8, 16 up to n.
    let mut want: Vec<String> = counts
        .iter()
        .flat_map(|&n| {
            (0..u64::BITS)
                .map(|b| 1u64 << b)
                .take_while(move |&p| p <= n)
                .map(|p| {
                    format!(
                        "INFO malformed (packet {p} of this reason on this CPU, {} bytes)",
                        frame.len()
                    )
                })
        })
        .collect();
    let mut got = drain_log(id);
    want.sort();
    got.sort();
    assert_eq!(
        got, want,
        "the drop log for 20 malformed frames, CPU counts {counts:?}"
    );
}

/// The daemon with `--xdp-log` reads the log of the program it attached into its own: a UDP
/// datagram too big for the client's link reaches the VIP in fragments, which the program
/// drops (`Reason::Fragment`) and logs.
#[test]
fn the_daemon_with_xdp_log_logs_the_fragments_the_program_drops() {
    let lab = Lab::new(1);
    let places = Places::new();
    let config = format!(
        "{}pools:\n  - name: dns\n    vip: {}\n    ports: [{UDP_PORT}]\n    protocol: udp\n    redundancy: {{ model: active-standby }}\n    health: {{ check: tcp, port: {TCP_PORT}, interval: 50ms, timeout: 100ms, rise: 1, fall: 3 }}\n{}",
        places.daemon_section(&lab),
        lab.vip,
        Places::elements(&lab, &[100]),
    );
    std::fs::write(places.config(), config).expect("config");
    let mut daemon = Daemon::start_with(Path::new(BIN), &lab, &places, &["--xdp-log"]);
    daemon.wait_until("e1 active", Duration::from_secs(10), |s| {
        role(s, "dns", "e1") == Some("active")
    });
    let vip = lab.vip;
    lab.in_client(|| {
        let socket = UdpSocket::bind("0.0.0.0:0").expect("client socket");
        socket
            .send_to(&[0u8; 3000], (vip, UDP_PORT))
            .expect("a datagram the kernel sends in fragments");
    });
    daemon.wait_logged(
        "a drop log record of the fragments",
        Duration::from_secs(5),
        |log| log.contains("vnfpool::xdp") && log.contains("fragment (packet 1 of this reason on this CPU"),
    );
}
