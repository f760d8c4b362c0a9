//! The lab by hand, for the README's demo: `up` builds it and writes a daemon configuration,
//! `ask` sends requests through the VIP from the client, `fail`/`heal` stop and restart an
//! element's service, `down` removes everything. Unlike the test labs, this one outlives the
//! command (fixed names, `vnfp-lab-*`), so `down` must be run.
//!
//! Layout: client `10.201.9.2` — host (XDP on `vnfp-lab-c1`) — e1..e3 at `10.20{2,3,4}.9.2`,
//! each with the VIP `10.200.9.100` on `lo` and a service answering UDP port 5353 with its name
//! (and TCP port 8080 on its own address, for health checks).

use std::{
    net::UdpSocket,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

const CLIENT: &str = "vnfp-lab-client";
const HOST: &str = "vnfp-lab-host";
const VIP: &str = "10.200.9.100";
const ELEMENTS: usize = 3;
const UDP_PORT: u16 = 5353;
const TCP_PORT: u16 = 8080;

fn element_ns(i: usize) -> String {
    format!("vnfp-lab-e{}", i + 1)
}

fn run(program: &str, args: &[&str]) {
    let status = Command::new(program)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(status.success(), "{program} {} failed: {status}", args.join(" "));
}

fn output(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ns(netns: &str, args: &[&str]) {
    let mut all = vec!["netns", "exec", netns];
    all.extend_from_slice(args);
    run("ip", &all);
}

/// Like `ns`, without the command's report on stdout.
fn quiet(netns: &str, args: &[&str]) {
    let mut all = vec!["netns", "exec", netns];
    all.extend_from_slice(args);
    let _ = output("ip", &all);
}

fn mac(netns: &str, dev: &str) -> String {
    let text = output("ip", &["-n", netns, "-o", "link", "show", "dev", dev]);
    let at = text.find("link/ether ").expect("an Ethernet link") + "link/ether ".len();
    text[at..at + 17].to_owned()
}

/// Where the lab keeps its files: `target/lab` next to the binaries.
fn dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("lab")
}

fn sibling(name: &str) -> PathBuf {
    std::env::current_exe().expect("current exe").with_file_name(name)
}

fn start_service(i: usize) {
    let e = element_ns(i);
    let addr = format!("10.{}.9.2", 202 + i);
    let log = std::fs::File::create(dir().join(format!("e{}.log", i + 1))).expect("log");
    let child = Command::new("ip")
        .args(["netns", "exec", &e])
        .arg(sibling("vnfpool-lab-service"))
        .args(["--name", &format!("e{}", i + 1)])
        .args([
            "--udp",
            &format!("{VIP}:{UDP_PORT}"),
            "--udp",
            &format!("{addr}:{UDP_PORT}"),
        ])
        .args(["--tcp", &format!("{addr}:{TCP_PORT}")])
        // Never closed by us: `vnfpool-lab-service` exits when its stdin closes, so hand it a
        // pipe whose writer is this process's own copy, kept by the child `sleep infinity`.
        .stdin(Stdio::piped())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("service");
    // Keep the service's stdin open after we exit: pass the write end to a holder process.
    let mut child = child;
    let stdin = child.stdin.take().expect("stdin");
    let holder = Command::new("sleep")
        .arg("infinity")
        .stdin(Stdio::null())
        .stdout(Stdio::from(stdin))
        .stderr(Stdio::null())
        .spawn()
        .expect("holder");
    std::fs::write(
        dir().join(format!("e{}.pid", i + 1)),
        format!("{} {}\n", child.id(), holder.id()),
    )
    .expect("pid file");
}

fn stop_service(i: usize) {
    let path = dir().join(format!("e{}.pid", i + 1));
    if let Ok(pids) = std::fs::read_to_string(&path) {
        for pid in pids.split_whitespace() {
            let _ = Command::new("kill").arg(pid).status();
        }
        let _ = std::fs::remove_file(path);
    }
}

fn up() {
    std::fs::create_dir_all(dir()).expect("lab dir");
    run("ip", &["netns", "add", CLIENT]);
    run("ip", &["netns", "add", HOST]);
    run(
        "ip",
        &[
            "link",
            "add",
            "vnfp-lab-c0",
            "netns",
            CLIENT,
            "type",
            "veth",
            "peer",
            "name",
            "vnfp-lab-c1",
            "netns",
            HOST,
        ],
    );
    ns(
        CLIENT,
        &["ip", "addr", "add", "10.201.9.2/24", "dev", "vnfp-lab-c0"],
    );
    ns(
        HOST,
        &["ip", "addr", "add", "10.201.9.1/24", "dev", "vnfp-lab-c1"],
    );
    for n in [CLIENT, HOST] {
        ns(n, &["ip", "link", "set", "lo", "up"]);
    }
    ns(CLIENT, &["ip", "link", "set", "vnfp-lab-c0", "up"]);
    ns(HOST, &["ip", "link", "set", "vnfp-lab-c1", "up"]);
    ns(
        CLIENT,
        &["ip", "route", "add", &format!("{VIP}/32"), "via", "10.201.9.1"],
    );
    quiet(CLIENT, &["ethtool", "-K", "vnfp-lab-c0", "tx", "off"]);
    ns(HOST, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    let mut elements = String::new();
    for i in 0..ELEMENTS {
        let e = element_ns(i);
        let (here, there) = (format!("vnfp-lab-h{}", i + 1), format!("vnfp-lab-x{}", i + 1));
        run("ip", &["netns", "add", &e]);
        run(
            "ip",
            &[
                "link", "add", &there, "netns", &e, "type", "veth", "peer", "name", &here, "netns", HOST,
            ],
        );
        let net = 202 + i;
        ns(
            HOST,
            &["ip", "addr", "add", &format!("10.{net}.9.1/24"), "dev", &here],
        );
        ns(
            &e,
            &["ip", "addr", "add", &format!("10.{net}.9.2/24"), "dev", &there],
        );
        ns(&e, &["ip", "addr", "add", &format!("{VIP}/32"), "dev", "lo"]);
        for dev in ["lo", there.as_str()] {
            ns(&e, &["ip", "link", "set", dev, "up"]);
        }
        ns(HOST, &["ip", "link", "set", &here, "up"]);
        ns(
            &e,
            &[
                "ip",
                "route",
                "add",
                "10.201.9.0/24",
                "via",
                &format!("10.{net}.9.1"),
            ],
        );
        quiet(&e, &["ethtool", "-K", &there, "gro", "on"]);
        ns(&e, &["sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0"]);
        start_service(i);
        elements += &format!(
            "      - {{ name: e{n}, address: 10.{net}.9.2, priority: {p}, interface: {here}, mac: \"{m}\" }}\n",
            n = i + 1,
            p = 300 - 100 * i,
            m = mac(&e, &there),
        );
    }
    let d = dir();
    let config = format!(
        "daemon:\n  interfaces: [vnfp-lab-c1]\n  xdp_mode: native\n  pin_dir: /sys/fs/bpf/vnfpool-lab\n  state_dir: {}\n  socket: {}\n  flow_table_size: 65536\npools:\n  - name: dns\n    vip: {VIP}\n    ports: [{UDP_PORT}]\n    protocol: udp\n    redundancy: {{ model: active-standby, preempt: true }}\n    health: {{ check: tcp, port: {TCP_PORT}, interval: 10ms, timeout: 50ms, rise: 2, fall: 3 }}\n    budget: {{ detect: 100ms, switch: 5ms }}\n    elements:\n{elements}",
        d.join("state").display(),
        d.join("vnfpool.sock").display(),
    );
    std::fs::write(d.join("pools.yaml"), config).expect("config");
    let bin = sibling("vnfpool");
    println!(
        "lab up: client {CLIENT}, vnfpool host {HOST}, elements vnfp-lab-e1..e3, VIP {VIP}:{UDP_PORT}/udp"
    );
    println!("configuration: {}\n", d.join("pools.yaml").display());
    println!(
        "run the daemon in the host namespace:\n  nsenter --net=/run/netns/{HOST} {} daemon --config {} &",
        bin.display(),
        d.join("pools.yaml").display()
    );
    println!(
        "then:\n  {} status --socket {}",
        bin.display(),
        d.join("vnfpool.sock").display()
    );
    println!("  cargo xtask lab ask          # requests through the VIP: who answers");
    println!("  cargo xtask lab fail e1      # stop e1's service; `heal e1` restarts it");
    println!("  cargo xtask lab down");
}

fn down() {
    // A daemon started on the lab's configuration would outlive its interfaces.
    // (Matched by the file's tail, whichever path it was started with.)
    let _ = Command::new("pkill")
        .args(["-f", "daemon --config .*lab/pools.yaml"])
        .status();
    for i in 0..ELEMENTS {
        stop_service(i);
        let _ = Command::new("ip").args(["netns", "del", &element_ns(i)]).status();
    }
    for n in [CLIENT, HOST] {
        let _ = Command::new("ip").args(["netns", "del", n]).status();
    }
    let _ = std::fs::remove_dir_all("/sys/fs/bpf/vnfpool-lab");
    let _ = std::fs::remove_dir_all(dir());
    println!("lab down");
}

/// 20 requests on 20 flows through the VIP, from the client namespace.
fn ask() {
    let handle = std::thread::spawn(|| {
        let f =
            std::fs::File::open(format!("/run/netns/{CLIENT}")).expect("client namespace (is the lab up?)");
        rustix::thread::move_into_link_name_space(
            std::os::fd::AsFd::as_fd(&f),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .expect("setns");
        let mut seen = std::collections::BTreeMap::<String, usize>::new();
        for _ in 0..20 {
            let s = UdpSocket::bind("10.201.9.2:0").expect("bind");
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .expect("timeout");
            s.send_to(b"ping", (VIP, UDP_PORT)).expect("send");
            let mut buf = [0u8; 32];
            let who = match s.recv(&mut buf) {
                Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
                Err(_) => "(no answer)".to_owned(),
            };
            *seen.entry(who).or_default() += 1;
        }
        seen
    });
    for (who, n) in handle.join().expect("client thread") {
        println!("{who}: {n} of 20 flows");
    }
}

fn element_arg(arg: Option<&String>) -> usize {
    let e = arg.map(String::as_str).unwrap_or_default();
    match e.strip_prefix('e').and_then(|n| n.parse::<usize>().ok()) {
        Some(n) if (1..=ELEMENTS).contains(&n) => n - 1,
        _ => panic!("name an element: e1, e2 or e3"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("up") => up(),
        Some("down") => down(),
        Some("ask") => ask(),
        Some("fail") => stop_service(element_arg(args.get(1))),
        Some("heal") => start_service(element_arg(args.get(1))),
        _ => {
            eprintln!("usage: vnfpool-lab up | ask | fail eN | heal eN | down");
            std::process::exit(2);
        }
    }
}
