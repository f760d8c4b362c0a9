//! What probing costs the daemon (issue 17): the real daemon in the lab probes N elements with
//! TCP checks every interval, and its CPU time (all threads, from `/proc/PID/stat`) over a
//! window of steady state is the figure, with its resident memory. Same-run baseline: the same
//! number of bare TCP connects to the same addresses, from a minimal loop on one thread
//! (non-blocking connects, poll(2) for the handshakes, a reset to close, as the daemon's probe
//! does), its CPU time counted as the daemon's is (`vnfpool_tests::cpu`). Run through `cargo xtask bench` (release build);
//! figures go to BENCHMARKS.md.

use std::{
    fmt::Write as _,
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    time::{Duration, Instant},
};

use socket2::{Domain, Protocol, Socket, Type};
use vnfpool_tests::{
    cpu,
    daemon::{Daemon, Places},
    lab::{Lab, TCP_PORT},
    plot::median,
};

/// How long each measurement window lasts.
const WINDOW: Duration = Duration::from_secs(10);
/// Windows per row; the median is reported.
const RUNS: usize = 3;
/// Target (issue 17): 100 elements every 10 ms at most 10% of one core.
const TARGET: f64 = 0.10;

fn main() {
    let daemon_bin = vnfpool_tests::sibling_binary("vnfpool-under-test");
    println!(
        "vnfpool probing cost: TCP checks, the daemon's CPU (all threads) over {} s of steady state, median of {RUNS} windows; baseline: the same connects from a minimal loop on one thread, same run",
        WINDOW.as_secs()
    );
    println!();
    println!(
        "| elements | interval | probes/s | daemon, share of one core | bare connects, share of one core | ratio | daemon resident | target |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (elements, interval_ms) in [(100usize, 10u64), (1000, 100)] {
        let row = measure(&daemon_bin, elements, Duration::from_millis(interval_ms));
        let target = if (elements, interval_ms) == (100, 10) {
            format!(
                "{} {}",
                percent(TARGET),
                if row.daemon <= TARGET { "ok" } else { "MISSED" }
            )
        } else {
            String::new()
        };
        println!(
            "| {elements} | {interval_ms} ms | {} | {} | {} | {:.1} | {:.1} MiB | {target} |",
            elements as u64 * 1000 / interval_ms,
            percent(row.daemon),
            percent(row.bare),
            row.daemon / row.bare,
            row.rss_kib as f64 / 1024.0,
        );
    }
}

fn percent(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

struct Row {
    daemon: f64,
    bare: f64,
    rss_kib: u64,
}

/// The element addresses: `.2` of the lab's first element network, then `count − 1` more on a
/// /22 of their own (added to both ends of that element's link).
fn addresses(lab: &Lab, count: usize) -> Vec<Ipv4Addr> {
    let e = &lab.elements[0];
    let x = e.addr.octets()[2];
    let base = u32::from(Ipv4Addr::new(10, 212, (x % 64) * 4, 0));
    lab.host.ip(&[
        "addr",
        "add",
        &format!("{}/22", Ipv4Addr::from(base + 1)),
        "dev",
        &e.host_link.name,
    ]);
    let mut addrs = vec![e.addr];
    for i in 1..count {
        let addr = Ipv4Addr::from(base + 1 + u32::try_from(i).expect("small"));
        e.netns
            .ip(&["addr", "add", &format!("{addr}/22"), "dev", &e.link.name]);
        addrs.push(addr);
    }
    addrs
}

fn measure(daemon_bin: &Path, count: usize, interval: Duration) -> Row {
    let lab = Lab::new(1);
    let places = Places::new();
    let e = &lab.elements[0];
    let addrs = addresses(&lab, count);
    let mut elements = String::from("    elements:\n");
    for (i, addr) in addrs.iter().enumerate() {
        writeln!(
            elements,
            "      - {{ name: m{i}, address: {addr}, interface: {}, mac: \"{}\" }}",
            e.host_link.name,
            e.mac_text()
        )
        .expect("writing to a String");
    }
    let yaml = format!(
        "{}pools:\n  - name: many\n    vip: {}\n    ports: [{TCP_PORT}]\n    protocol: tcp\n    redundancy: {{ model: active-active }}\n    health: {{ check: tcp, port: {TCP_PORT}, interval: {}ms, timeout: {}ms, rise: 2, fall: 3 }}\n{elements}",
        places.daemon_section(&lab),
        lab.vip,
        interval.as_millis(),
        (interval * 5).min(Duration::from_millis(500)).as_millis(),
    );
    std::fs::write(places.config(), yaml).expect("config");
    // The baseline first, alone on the machine.
    let targets: Vec<SocketAddr> = addrs.iter().map(|&a| SocketAddr::from((a, TCP_PORT))).collect();
    let bare_shares: Vec<f64> = (0..RUNS)
        .map(|_| lab.host.run(|| bare_connects(&targets, interval, WINDOW)))
        .collect();
    let mut daemon = Daemon::start(daemon_bin, &lab, &places);
    let all_up = |s: &vnfpool_daemon::control::Status| {
        s.pools[0].elements.iter().filter(|e| e.role == "active").count() == count
    };
    daemon.wait_until(&format!("{count} elements up"), Duration::from_secs(30), all_up);
    let pid = daemon.pid();
    let mut daemon_shares = Vec::new();
    for _ in 0..RUNS {
        let (t0, c0) = (Instant::now(), cpu::of_process(pid));
        // A window of steady state with nothing asked of the daemon: a status request reads
        // every counter of the data plane, and polling for one would be measured too.
        #[expect(
            clippy::disallowed_methods,
            reason = "a measurement window, not a wait for readiness"
        )]
        std::thread::sleep(WINDOW);
        daemon_shares
            .push(cpu::of_process(pid).saturating_sub(c0).as_secs_f64() / t0.elapsed().as_secs_f64());
    }
    let rss_kib = cpu::resident_kib(pid);
    // Still running, every element still up: the window measured probing, not failing over.
    daemon.wait_until("every element still up", Duration::from_secs(5), all_up);
    let _ = daemon.terminate(Duration::from_secs(10));
    Row {
        daemon: median(&daemon_shares).expect("windows"),
        bare: median(&bare_shares).expect("windows"),
        rss_kib,
    }
}

/// Connects to every target once per `interval` for `window`, on this thread only, and returns
/// the thread's CPU time as a share of the wall time.
fn bare_connects(targets: &[SocketAddr], interval: Duration, window: Duration) -> f64 {
    let (t0, c0) = (Instant::now(), cpu::of_this_thread());
    let mut next = t0;
    while t0.elapsed() < window {
        let sockets: Vec<Socket> = targets
            .iter()
            .map(|addr| {
                let s = Socket::new(Domain::IPV4, Type::STREAM.nonblocking(), Some(Protocol::TCP))
                    .expect("socket");
                match s.connect(&(*addr).into()) {
                    Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
                    other => other.expect("connect"),
                }
                s
            })
            .collect();
        let mut pending: Vec<&Socket> = sockets.iter().collect();
        while !pending.is_empty() {
            let mut fds: Vec<_> = pending
                .iter()
                .map(|s| rustix::event::PollFd::new(*s, rustix::event::PollFlags::OUT))
                .collect();
            rustix::event::poll(&mut fds, None).expect("poll");
            let done: Vec<bool> = fds.iter().map(|f| !f.revents().is_empty()).collect();
            pending = pending
                .into_iter()
                .zip(done)
                .filter_map(|(s, done)| (!done).then_some(s))
                .collect();
        }
        for s in &sockets {
            assert!(
                s.take_error().expect("SO_ERROR").is_none(),
                "a bare connect failed"
            );
            s.set_linger(Some(Duration::ZERO)).expect("SO_LINGER");
        }
        drop(sockets);
        next += interval;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            #[expect(clippy::disallowed_methods, reason = "paces the load, waits for nothing")]
            std::thread::sleep(wait);
        }
    }
    cpu::of_this_thread().saturating_sub(c0).as_secs_f64() / t0.elapsed().as_secs_f64()
}
