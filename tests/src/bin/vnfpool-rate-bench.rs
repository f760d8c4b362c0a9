//! Forwarding rate through real interfaces (issue 17, item 3), printed as a table. Run through
//! `cargo xtask bench`; figures are recorded in BENCHMARKS.md.
//!
//! `BPF_PROG_TEST_RUN` in live-frame mode (`BPF_F_TEST_XDP_LIVE_FRAMES`, Linux 5.18) pushes
//! frames through the loaded program as if the lab host's client-facing veth had received them:
//! what the program redirects really leaves through the element's veth, and what it passes
//! really enters the host's stack. Each figure is packets per second on one CPU (the median of
//! [`RUNS`] runs of [`FRAMES`] frames, wall time of the call, which includes the delivery into
//! the element's veth), set against a floor measured in turns with it on the same frames: a
//! program that only redirects to the element's veth (or only passes). The element's stack drops
//! what arrives (no reply traffic: the VIP is not its address there), after its receive
//! counter, which says how many frames arrived.

use std::{net::IpAddr, time::Instant};

use anyhow::{Context as _, Result, ensure};
use aya::{
    EbpfLoader,
    programs::{TestRun as _, TestRunAttrs, TestRunOptions, Xdp},
};
use vnfpool_common::{
    addr,
    element::STATE_UP,
    maps,
    vip::{PROTO_TCP, PROTO_UDP},
};
use vnfpool_daemon::{
    dataplane::{AyaDataplane, BASELINE_OBJECT, LoadOptions, Mapping},
    model::maglev::{self, Backend},
};
use vnfpool_tests::{
    harness::handle,
    lab::Lab,
    netns::Netns,
    packet::{Frame, L4},
};

/// Frames per run.
const FRAMES: u32 = 2_000_000;
/// Runs per figure, in turns with the floor's (the median is reported).
const RUNS: usize = 7;
/// Frames the kernel hands the program per batch (at most 256).
const BATCH: u32 = 64;
/// The UDP pool's port.
const UDP_PORT: u16 = 5301;
/// The TCP pool's port.
const TCP_PORT: u16 = 5302;
/// Established flows through vnfpool against the redirect floor: at least this ratio.
const TARGET_ESTABLISHED: f64 = 0.8;

/// One row: what the frame is, the floor it is set against.
struct Case {
    what: &'static str,
    frame: Vec<u8>,
    floor: &'static str,
    /// Whether the frames leave through the element's veth (their arrival is counted).
    redirected: bool,
    target: Option<f64>,
}

fn main() -> Result<()> {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpus - 1);
    rustix::thread::sched_setaffinity(None, &set).context("pinning the benchmark to one CPU")?;

    let lab = Lab::new(1);
    let element = &lab.elements[0];
    // Frames end in the element's stack, after its receive counter, without a reply: the VIP
    // leaves its loopback and the namespace does not forward, so they are for no one.
    element
        .netns
        .ip(&["addr", "del", &format!("{}/32", lab.vip), "dev", "lo"]);
    element.netns.sysctl("net.ipv4.ip_forward", "0");

    // Kept for its maps and attachment while `vnf` runs.
    let (_dp, vnf) = provision(&lab)?;

    let egress = element.host_link.ifindex;
    let mut base = EbpfLoader::new()
        .override_global("REDIRECT_IFINDEX", &egress, true)
        .load(BASELINE_OBJECT)
        .context("loading the floor programs")?;
    for name in ["baseline_pass", "baseline_redirect"] {
        let p: &mut Xdp = base.program_mut(name).context("floor program")?.try_into()?;
        p.load()?;
    }
    let (pass, redirect) = (
        handle(&base, "baseline_pass")?,
        handle(&base, "baseline_redirect")?,
    );

    let cases = cases(&lab);
    let ingress = lab.ingress.ifindex;
    // Some kernels refuse live frames (this project's lab machines answer EPERM even for a bare
    // XDP_PASS program in the root namespace, while an ordinary test run of it works): say so
    // and leave the other benchmarks to run.
    if let Err(e) = lab.host.run(|| live_rate(&pass, &cases[0].frame, ingress, 1)) {
        let refused = e
            .chain()
            .filter_map(|c| c.downcast_ref::<std::io::Error>())
            .any(|io| io.raw_os_error() == Some(libc::EPERM));
        ensure!(refused, e);
        println!(
            "vnfpool forwarding rate: this kernel refuses BPF_PROG_TEST_RUN with live frames (EPERM); no figures."
        );
        return Ok(());
    }
    println!(
        "vnfpool forwarding rate through the lab's veths (BPF_PROG_TEST_RUN, live frames, batches of {BATCH}; one CPU; median of {RUNS} runs of {FRAMES} frames, in turns with the floor)"
    );
    println!();
    println!(
        "| case | frame bytes | floor | floor Mpps | vnfpool Mpps | vnfpool / floor | arrived at the element | target |"
    );
    println!("|---|---:|---|---:|---:|---:|---:|---:|");
    for case in &cases {
        let floor_prog = if case.floor == "baseline_pass" {
            &pass
        } else {
            &redirect
        };
        let (mut ours, mut theirs, mut arrived) = (Vec::new(), Vec::new(), u64::MAX);
        for _ in 0..RUNS {
            let before = rx_packets(&element.netns, &element.link.name)?;
            let rate = lab.host.run(|| live_rate(&vnf, &case.frame, ingress, FRAMES))?;
            let after = rx_packets(&element.netns, &element.link.name)?;
            arrived = arrived.min(after - before);
            ours.push(rate);
            theirs.push(
                lab.host
                    .run(|| live_rate(floor_prog, &case.frame, ingress, FRAMES))?,
            );
        }
        let (ours, theirs) = (median(&mut ours), median(&mut theirs));
        let ratio = ours / theirs;
        let arrived = if case.redirected {
            let arrived = u32::try_from(arrived).unwrap_or(u32::MAX);
            format!("{:.3}", f64::from(arrived) / f64::from(FRAMES))
        } else {
            "(the host's stack)".to_owned()
        };
        let target = case.target.map_or(String::new(), |t| {
            format!("≥ {t} {}", if ratio >= t { "ok" } else { "MISSED" })
        });
        println!(
            "| {} | {} | {} | {:.2} | {:.2} | {ratio:.2} | {arrived} | {target} |",
            case.what,
            case.frame.len() + 4,
            case.floor,
            theirs / 1e6,
            ours / 1e6,
        );
    }
    Ok(())
}

/// The program loaded and attached to the lab's ingress, with a UDP and a TCP pool on the
/// VIP whose one element is the lab's; and a second handle on it for the test runs.
fn provision(lab: &Lab) -> Result<(AyaDataplane, Xdp)> {
    let mut dp = AyaDataplane::load(&LoadOptions {
        pin_dir: None,
        // Unrecorded TCP segments are never recorded anyway; the UDP flow is recorded once.
        new_flows_per_unit: Some(u32::MAX),
        ..LoadOptions::default()
    })
    .context("loading the XDP object")?;
    lab.attach(&mut dp);
    let vip = addr::from_ip(IpAddr::V4(lab.vip));
    let mapping = Mapping {
        ring: maglev::build(
            &[Backend {
                key: maglev::name_key("e1"),
                index: 0,
                weight: 1,
            }],
            maps::DEFAULT_RING_SIZE,
        )?,
        elements: vec![lab.element_entry(0, STATE_UP)],
        tunnels: Vec::new(),
    };
    for (pool, port, proto) in [(0, UDP_PORT, PROTO_UDP), (1, TCP_PORT, PROTO_TCP)] {
        dp.add_vip(pool, vip, port, proto)?;
        dp.apply(pool, &mapping)?;
    }
    let vnf = handle(dp.ebpf_mut(), maps::PROGRAM)?;
    Ok((dp, vnf))
}

/// The rows: non-VIP frames (passed), an established UDP flow and TCP segments of a flow the
/// table does not hold (no SYN: picked by the Maglev table every time, never recorded), each at
/// 64 and 1,518 bytes on the wire.
fn cases(lab: &Lab) -> Vec<Case> {
    let mut cases = Vec::new();
    for wire in [64usize, 1518] {
        let frame = |dst: IpAddr, l4: L4, syn_less: bool| -> Vec<u8> {
            let mut f = Frame::new(IpAddr::V4(lab.client_addr), dst, l4);
            f.dst_mac = lab.ingress.mac;
            f.src_mac = lab.client_link.mac;
            let bare = Frame {
                payload: Vec::new(),
                ..f.clone()
            }
            .build()
            .len();
            // The wire size less the 4-byte FCS, and at least the bare headers.
            f.payload = vec![0; (wire - 4).saturating_sub(bare)];
            let mut bytes = f.build();
            if syn_less {
                set_ack_only(&mut bytes);
            }
            bytes
        };
        let vip = IpAddr::V4(lab.vip);
        cases.push(Case {
            what: "non-VIP UDP (passed)",
            frame: frame("10.203.0.9".parse().expect("address"), udp(), false),
            floor: "baseline_pass",
            redirected: false,
            target: None,
        });
        cases.push(Case {
            what: "VIP UDP, established flow",
            frame: frame(vip, udp(), false),
            floor: "baseline_redirect",
            redirected: true,
            target: Some(TARGET_ESTABLISHED),
        });
        cases.push(Case {
            what: "VIP TCP without SYN (Maglev pick, not recorded)",
            frame: frame(
                vip,
                L4::Tcp {
                    sport: 40000,
                    dport: TCP_PORT,
                },
                true,
            ),
            floor: "baseline_redirect",
            redirected: true,
            target: None,
        });
    }
    cases
}

fn udp() -> L4 {
    L4::Udp {
        sport: 40000,
        dport: UDP_PORT,
    }
}

/// Turns the SYN of an IPv4 TCP frame without options into a bare ACK (the checksum is not
/// checked on this path).
fn set_ack_only(frame: &mut [u8]) {
    const TCP_FLAGS: usize = 14 + 20 + 13;
    frame[TCP_FLAGS] = 0x10;
}

/// Frames per second through `prog` for one live-frame run of `frames` copies of `frame`
/// received on `ingress` (the caller's namespace must hold it).
fn live_rate(prog: &Xdp, frame: &[u8], ingress: u32, frames: u32) -> Result<f64> {
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex.
    let len = u32::try_from(frame.len())?;
    let ctx: Vec<u8> = [0, len, 0, ingress, 0, 0]
        .iter()
        .flat_map(|w: &u32| w.to_ne_bytes())
        .collect();
    let opts = TestRunOptions {
        data_in: Some(frame),
        ctx_in: Some(&ctx),
        repeat: frames,
        attrs: TestRunAttrs::new().xdp_live_frames(BATCH.min(frames)),
        ..Default::default()
    };
    let start = Instant::now();
    let result = prog
        .test_run(opts)
        .context("BPF_PROG_TEST_RUN with live frames")?;
    let elapsed = start.elapsed();
    ensure!(
        result.return_value == 0,
        "the live run returned {}",
        result.return_value
    );
    Ok(f64::from(frames) / elapsed.as_secs_f64())
}

/// The receive counter of `link` in `ns`.
fn rx_packets(ns: &Netns, link: &str) -> Result<u64> {
    let text = ns.ip_output(&["-s", "-j", "link", "show", "dev", link]);
    let json: serde_json::Value = serde_json::from_str(&text)?;
    json[0]["stats64"]["rx"]["packets"]
        .as_u64()
        .context("rx packets in `ip -s -j link`")
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
