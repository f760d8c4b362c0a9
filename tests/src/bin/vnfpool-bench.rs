//! Per-packet cost of the data plane and the cost of a mapping switch, printed as tables.
//! Run through `cargo xtask bench`; figures are recorded in BENCHMARKS.md.
//!
//! Every figure is the median of repeated runs, and every packet cost is set against a floor
//! program (a bare `XDP_PASS` or `XDP_TX`) measured in the same run on the same frames.

use std::{net::IpAddr, time::Duration};

use anyhow::{Context as _, Result};
use aya::{
    Ebpf,
    programs::{TestRun as _, TestRunOptions, Xdp},
};
use vnfpool_common::{
    addr,
    element::{Element, STATE_UP},
    maps,
    tunnel::{ENCAP_GUE, ENCAP_IPIP, ENCAP_NONE, ENCAP_VXLAN},
    vip::PROTO_TCP,
};
use vnfpool_daemon::{
    dataplane::{BASELINE_OBJECT, LoadOptions, Mapping, decap::DecapProgram},
    model::{
        maglev::{self, Backend},
        plan::{self, TunnelPath},
        spec::Forwarding,
    },
};
use vnfpool_tests::{
    encap::{Encap, Outer, encapsulated},
    harness::{Harness, handle},
    packet::{Frame, HOST_MAC, L4},
};

/// Samples per figure (the median is reported).
const SAMPLES: usize = 15;
/// Program runs per sample, for frames that take the same path every run.
const REPEAT: u32 = 100_000;
/// Distinct frames per sample, for new flows (one run each).
const NEW_FLOWS: usize = 4_000;
/// Slices of `SAMPLES` interleaved rounds for the one-run-per-call figures: the rounds of one
/// slice take about a second, and right after the fill every entry of the full table has the
/// same age, which a table that has been running for a while does not.
const SLICES: usize = 5;
/// Established traffic between two slices, so that the slices span half a minute of the
/// table's (and the host's) life: entries of several ages, a fuller "not full" table.
const BETWEEN_SLICES: Duration = Duration::from_secs(5);

fn main() -> Result<()> {
    // One CPU for the whole run: a migration between samples would empty the caches of one
    // program and not the other's. BPF_PROG_TEST_RUN runs on the caller's CPU.
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpus - 1);
    rustix::thread::sched_setaffinity(None, &set).context("pinning the benchmark to one CPU")?;
    let vip4: IpAddr = "10.10.0.100".parse()?;
    let vip6: IpAddr = "fd00:10::100".parse()?;
    let mut base = Ebpf::load(BASELINE_OBJECT).context("loading the floor programs")?;
    for name in ["baseline_pass", "baseline_tx"] {
        let p: &mut Xdp = base.program_mut(name).context("floor program")?.try_into()?;
        p.load()?;
    }
    // Second handles on the loaded floor programs, so both can be borrowed at once.
    let pass = handle(&base, "baseline_pass")?;
    let tx = handle(&base, "baseline_tx")?;

    // The flood guard is checked on every new flow but never reached: the new-flow rows
    // measure flows that are recorded, and the full table is filled faster than it allows.
    let opts = LoadOptions {
        new_flows_per_unit: Some(u32::MAX),
        ..LoadOptions::default()
    };
    let mut h = Harness::with(&opts);
    let mut full = Harness::with(&opts);
    for h in [&mut h, &mut full] {
        provision(h, 0, vip4, ENCAP_NONE)?;
        provision(h, 1, vip6, ENCAP_NONE)?;
    }
    let vnf = h.program();
    let vnf_full = full.program();

    let client4: IpAddr = "10.0.0.2".parse()?;
    let client6: IpAddr = "fd00:1::2".parse()?;
    let non_vip = Frame::new(
        client4,
        "10.10.0.101".parse()?,
        L4::Tcp {
            sport: 1000,
            dport: 8080,
        },
    )
    .build();
    let est4 = Frame::new(
        client4,
        vip4,
        L4::Tcp {
            sport: 1000,
            dport: 8080,
        },
    )
    .build();
    let est6 = Frame::new(
        client6,
        vip6,
        L4::Tcp {
            sport: 1000,
            dport: 8080,
        },
    )
    .build();
    let fresh = |start: u32| -> Vec<Vec<u8>> {
        (start..start + NEW_FLOWS as u32)
            .map(|i| {
                let src = IpAddr::V4(std::net::Ipv4Addr::from(0x0c00_0000 | i));
                Frame::new(
                    src,
                    vip4,
                    L4::Tcp {
                        sport: 1000,
                        dport: 8080,
                    },
                )
                .build()
            })
            .collect()
    };
    // Fill the second table past its capacity, so that every new flow evicts one.
    let fill = maps::DEFAULT_FLOW_TABLE_SIZE + maps::DEFAULT_FLOW_TABLE_SIZE / 8;
    eprintln!(
        "filling a {}-entry flow table with {fill} flows…",
        maps::DEFAULT_FLOW_TABLE_SIZE
    );
    for start in (0..fill).step_by(NEW_FLOWS) {
        median_single(&vnf_full, &fresh(100_000_000 + start))?;
    }

    println!(
        "vnfpool data plane: ns per packet (BPF_PROG_TEST_RUN; median of {SAMPLES} samples, of {} \
         rounds for new flows)\n",
        SLICES * SAMPLES
    );
    println!("| case | floor | floor ns | vnfpool ns | above floor | ratio | target above floor |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    let mut rows = Vec::new();
    rows.push((
        "non-VIP IPv4 TCP",
        "XDP_PASS",
        median_repeat(&pass, &non_vip)?,
        median_repeat(&vnf, &non_vip)?,
        10.0,
    ));
    run_once(&vnf, &est4)?;
    run_once(&vnf, &est6)?;
    rows.push((
        "VIP IPv4 established (flow hit)",
        "XDP_TX",
        median_repeat(&tx, &est4)?,
        median_repeat(&vnf, &est4)?,
        70.0,
    ));
    rows.push((
        "VIP IPv6 established (flow hit)",
        "XDP_TX",
        median_repeat(&tx, &est6)?,
        median_repeat(&vnf, &est6)?,
        70.0,
    ));
    // One-run-per-call figures drift with what ran just before, so the cases take turns within
    // every sample (after one warm-up round) rather than running one after the other.
    let established = fresh(0);
    median_single(&vnf, &established)?;
    let floor_frames = fresh(50_000_000);
    let (mut tx_s, mut new_s, mut full_s, mut est_s) = (vec![], vec![], vec![], vec![]);
    let mut iqm: [Vec<f64>; 4] = Default::default();
    // One established flow over and over, one run per call: the per-call penalty without the
    // flow table's cache and TLB misses (its bucket stays hot).
    let one_flow = vec![established[0].clone(); NEW_FLOWS];
    let mut one_s = vec![];
    let mut per_slice = Vec::new();
    for slice in 0..SLICES {
        if slice > 0 {
            // Established traffic only: the program's own lines stay as warm as under load.
            let t = std::time::Instant::now();
            while t.elapsed() < BETWEEN_SLICES {
                single(&tx, &floor_frames)?;
                single(&vnf, &established)?;
                single(&vnf_full, &established)?;
            }
        }
        for round in 0..=SAMPLES {
            let start = 1_000_000 + (slice * (SAMPLES + 1) + round) as u32 * NEW_FLOWS as u32;
            let sample = [
                single(&tx, &floor_frames)?,
                single(&vnf, &fresh(start))?,
                single(&vnf_full, &fresh(200_000_000 + start))?,
                single(&vnf, &established)?,
            ];
            let one = single(&vnf, &one_flow)?;
            if round > 0 {
                tx_s.push(sample[0].0);
                new_s.push(sample[1].0);
                full_s.push(sample[2].0);
                est_s.push(sample[3].0);
                one_s.push(one.0);
                for (v, s) in iqm.iter_mut().zip(sample) {
                    v.push(s.1);
                }
            }
        }
        let this = |v: &[f64]| median(&mut v[v.len() - SAMPLES..].to_vec());
        let f = this(&tx_s);
        per_slice.push((f, this(&new_s) - f, this(&full_s) - f));
    }
    let iqm = iqm.map(|mut v| median(&mut v));
    let (tx_single, new_not_full, new_full, est_single) = (
        median(&mut tx_s),
        median(&mut new_s),
        median(&mut full_s),
        median(&mut est_s),
    );
    rows.push((
        "VIP IPv4 new flow (table not full)",
        "XDP_TX, 1 run/call",
        tx_single,
        new_not_full,
        180.0,
    ));
    rows.push((
        "VIP IPv4 new flow (table full, clock eviction)",
        "XDP_TX, 1 run/call",
        tx_single,
        new_full,
        180.0,
    ));
    let est4_above = rows[1].3 - rows[1].2;
    let est6_above = rows[2].3 - rows[2].2;
    let mut all_ok = true;
    for (case, floor_name, floor_ns, ns, target) in rows {
        let above = ns - floor_ns;
        let ok = above <= target;
        all_ok &= ok;
        println!(
            "| {case} | {floor_name} | {floor_ns:.1} | {ns:.1} | {above:.1} | {:.2} | {target:.0} {} |",
            ns / floor_ns,
            if ok { "ok" } else { "MISSED" }
        );
    }

    println!(
        "\nNew flows by slice ({SAMPLES} rounds each, {} s of established traffic between two), \
         ns above the floor:\n",
        BETWEEN_SLICES.as_secs()
    );
    println!("| slice | floor ns | new flow, not full | new flow, full |");
    println!("|---:|---:|---:|---:|");
    for (i, (floor_ns, new_ns, full_ns)) in per_slice.iter().enumerate() {
        println!("| {} | {floor_ns:.1} | {new_ns:.1} | {full_ns:.1} |", i + 1);
    }

    println!(
        "\nOne run per call leaves the caches colder than a repeated run: the same frames once \
         established cost {est_single:.1} ns per call ({:.1} above the floor), against {est4_above:.1} \
         above the floor in repeated runs. New-flow cost with that per-call penalty taken out \
         (established, repeated + new minus established, both one run per call):\n",
        est_single - tx_single
    );
    println!("| case | estimated ns above floor | target |");
    println!("|---|---:|---:|");
    for (case, ns) in [
        ("new flow, table not full", new_not_full),
        ("new flow, table full", new_full),
    ] {
        println!("| {case} | {:.1} | 180 |", est4_above + ns - est_single);
    }
    let one_single = median(&mut one_s);
    println!(
        "\nOne established flow repeated, one run per call (its bucket stays in cache): {one_single:.1} \
         ns per call ({:.1} above the floor).",
        one_single - tx_single
    );

    println!(
        "\nThe same one-run-per-call samples summarised by their interquartile mean (the mean of \
         the middle half of the runs, which resolves finer than the clock's steps) instead of \
         their median: floor {:.1} ns; new flow (not full) {:.1} ({:.1} above); new flow (full) \
         {:.1} ({:.1} above); established {:.1} ({:.1} above).",
        iqm[0],
        iqm[1],
        iqm[1] - iqm[0],
        iqm[2],
        iqm[2] - iqm[0],
        iqm[3],
        iqm[3] - iqm[0]
    );

    tunnelled_rows(&tx, &opts, vip4, vip6, est4_above, est6_above)?;
    decapsulation(&pass, vip4, vip6)?;

    println!("\nmapping switch, 65537-position Maglev table, 100 elements (median of {SAMPLES})\n");
    let (build, prepare, switch, grace) = switch_costs(&mut h)?;
    println!("| step | median | target |");
    println!("|---|---:|---:|");
    println!("| build the Maglev table (pure) | {} | |", fmt(build));
    println!("| write the spare slot (mmap) | {} | |", fmt(prepare));
    println!(
        "| preparation = build + write | {} | < 5 ms |",
        fmt(build + prepare)
    );
    println!("| switch (one atomic store) | {} | < 1 ms |", fmt(switch));
    println!(
        "| wait for the previous switch's grace period before writing (switches back to back) | {} | |",
        fmt(grace)
    );
    all_ok &= build + prepare < Duration::from_millis(5) && switch < Duration::from_millis(1);
    println!(
        "\n{}",
        if all_ok {
            "all targets met"
        } else {
            "SOME TARGETS MISSED"
        }
    );
    Ok(())
}

/// `NEW_FLOWS` TCP frames to `vip:8080`, each from its own client address (`first + i`, in
/// the VIP's family).
fn flows(vip: IpAddr, first: u32) -> Vec<Vec<u8>> {
    (first..first + NEW_FLOWS as u32)
        .map(|i| {
            let src = match vip {
                IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::from(0x0c00_0000 | i)),
                IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::from(
                    0x2001_0db8_0c00_u128 << 80 | u128::from(i),
                )),
            };
            Frame::new(
                src,
                vip,
                L4::Tcp {
                    sport: 1000,
                    dport: 8080,
                },
            )
            .build()
        })
        .collect()
}

/// The cost of encapsulated forwarding (IPIP, GUE, VXLAN; IPv4 and IPv6), one run per call, set
/// against L2 DSR's in the same rounds. Established flows: L2 DSR's figure above the floor from
/// the repeated runs (`est4_above`, `est6_above`) plus the mode's extra cost per call over L2
/// DSR (a repeated run cannot measure a mode: each run would grow the frame by the outer headers
/// again). New flows: one run per call above the floor, as in the main table.
fn tunnelled_rows(
    tx: &Xdp,
    opts: &LoadOptions,
    vip4: IpAddr,
    vip6: IpAddr,
    est4_above: f64,
    est6_above: f64,
) -> Result<()> {
    let modes = [
        ("L2 DSR", ENCAP_NONE),
        ("IPIP", ENCAP_IPIP),
        ("GUE", ENCAP_GUE),
        ("VXLAN", ENCAP_VXLAN),
    ];
    // Fresh harnesses for every mode, L2 DSR's too: the same flows in every table, so that the
    // modes differ by their forwarding only (the main table's harness holds far more flows).
    let mut harnesses = Vec::new();
    for (_, encap) in &modes {
        let mut h = Harness::with(opts);
        provision(&mut h, 0, vip4, *encap)?;
        provision(&mut h, 1, vip6, *encap)?;
        harnesses.push(h);
    }
    let progs: Vec<Xdp> = harnesses.iter_mut().map(Harness::program).collect();
    let floor_frames = flows(vip4, 60_000_000);
    let established = [flows(vip4, 0), flows(vip6, 0)];
    for prog in &progs {
        for frames in &established {
            median_single(prog, frames)?;
        }
    }
    // Per round, in turns: the floor, then each mode's established and new flows, per family.
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); 1 + progs.len() * 4];
    for round in 0..=SAMPLES {
        let mut got = vec![single(tx, &floor_frames)?.0];
        for (m, prog) in progs.iter().enumerate() {
            for frames in &established {
                got.push(single(prog, frames)?.0);
            }
            let start = 70_000_000 + (round * progs.len() + m) as u32 * NEW_FLOWS as u32;
            for vip in [vip4, vip6] {
                got.push(single(prog, &flows(vip, start))?.0);
            }
        }
        if round > 0 {
            for (v, x) in samples.iter_mut().zip(got) {
                v.push(x);
            }
        }
    }
    let m: Vec<f64> = samples.iter_mut().map(|v| median(v)).collect();
    let floor = m[0];
    let at = |mode: usize, what: usize| m[1 + mode * 4 + what];
    let l2_above = [est4_above, est6_above];
    println!(
        "\nEncapsulated forwarding, one run per call (median of {SAMPLES} rounds of {NEW_FLOWS} \
         frames, the modes in turns; floor XDP_TX {floor:.1} ns per call). Established: L2 DSR's \
         figure above the floor in repeated runs plus the mode's extra cost per call; new flow: \
         ns per call above the floor:\n"
    );
    println!(
        "| mode | family | established ns/call | extra over L2 DSR | est. above floor | target | new flow ns/call | extra over L2 DSR | above floor | target |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut all_ok = true;
    for (k, (name, _)) in modes.iter().enumerate() {
        for (f, family) in ["IPv4", "IPv6"].into_iter().enumerate() {
            let (est, new) = (at(k, f), at(k, 2 + f));
            let (est_extra, new_extra) = (est - at(0, f), new - at(0, 2 + f));
            let (established_above, new_above) = (l2_above[f] + est_extra, new - floor);
            let tunnel = k > 0;
            let (ok_est, ok_new) = (established_above <= 90.0, new_above <= 200.0);
            if tunnel {
                all_ok &= ok_est && ok_new;
            }
            let target = |t: u32, ok: bool| match (tunnel, ok) {
                (false, _) => String::new(),
                (true, true) => format!("{t} ok"),
                (true, false) => format!("{t} MISSED"),
            };
            println!(
                "| {name} | {family} | {est:.1} | {est_extra:.1} | {established_above:.1} | {} | {new:.1} | {new_extra:.1} | {new_above:.1} | {} |",
                target(90, ok_est),
                target(200, ok_new)
            );
        }
    }
    println!(
        "\n{}",
        if all_ok {
            "encapsulation targets met"
        } else {
            "SOME ENCAPSULATION TARGETS MISSED"
        }
    );
    Ok(())
}

/// The element side's `vnfpool decap` against a bare `XDP_PASS` on the same frames: stripping
/// one run per call (a repeated run would find the frame stripped already), frames it only
/// looks at in repeated runs.
fn decapsulation(pass: &Xdp, vip4: IpAddr, vip6: IpAddr) -> Result<()> {
    const CALLS: usize = 20_000;
    let mut p = DecapProgram::load(None).context("loading vnfpool-decap")?;
    p.configure(&vnfpool_daemon::decap::config(&[vip4, vip6], &[6080]))?;
    let prog = handle(p.ebpf_mut(), vnfpool_common::decap::PROGRAM)?;
    let inner = |vip: IpAddr, client: &str| -> Result<Vec<u8>> {
        let fr = Frame::new(
            client.parse()?,
            vip,
            L4::Udp {
                sport: 40000,
                dport: 5353,
            },
        );
        Ok(vnfpool_tests::packet::ip_packet(&fr))
    };
    let tunnel = |src: &str, dst: &str, encap: Encap| -> Result<Outer> {
        Ok(Outer {
            src: src.parse()?,
            dst: dst.parse()?,
            encap,
            flow_label: 0x12345,
        })
    };
    let gue = Encap::Gue {
        sport: 50000,
        dport: 6080,
    };
    let ipip4 = encapsulated(
        HOST_MAC,
        [2, 0, 0, 0, 0xfe, 1],
        &tunnel("192.0.2.1", "198.51.100.7", Encap::Ipip)?,
        &inner(vip4, "10.0.0.2")?,
    );
    let gue6 = encapsulated(
        HOST_MAC,
        [2, 0, 0, 0, 0xfe, 1],
        &tunnel("2001:db8::1", "2001:db8:100::7", gue)?,
        &inner(vip6, "fd00:1::2")?,
    );
    let plain = Frame::new(
        "10.0.0.2".parse()?,
        vip4,
        L4::Udp {
            sport: 40000,
            dport: 5353,
        },
    )
    .build();
    println!("\nElement-side decapsulation (vnfpool decap) against a bare XDP_PASS on the same frames:\n");
    println!("| frame | method | floor ns | decap ns | above floor | target |");
    println!("|---|---|---:|---:|---:|---:|");
    let mut all_ok = true;
    for (name, frame) in [
        ("IPIP, IPv4, to the VIP: stripped", &ipip4),
        ("GUE, IPv6, to the VIP: stripped", &gue6),
    ] {
        let c = vnfpool_tests::encap::cost(&prog, pass, frame, CALLS)?;
        let (floor, ns) = (c.floor.as_secs_f64() * 1e9, c.program.as_secs_f64() * 1e9);
        let ok = ns - floor <= 30.0;
        all_ok &= ok;
        println!(
            "| {name} | 1 run/call, median of {CALLS} | {floor:.1} | {ns:.1} | {:.1} | 30 {} |",
            ns - floor,
            if ok { "ok" } else { "MISSED" }
        );
    }
    let (floor, ns) = (median_repeat(pass, &plain)?, median_repeat(&prog, &plain)?);
    println!(
        "| UDP, not encapsulated: passed | {REPEAT} runs/call, median of {SAMPLES} | {floor:.1} | {ns:.1} | {:.1} | |",
        ns - floor
    );
    println!(
        "\n{}",
        if all_ok {
            "decapsulation targets met"
        } else {
            "SOME DECAPSULATION TARGETS MISSED"
        }
    );
    Ok(())
}

/// Pool `pool` on `vip:8080/tcp` with three elements: on-link for [`ENCAP_NONE`], else behind a
/// router, reached through `encap`.
fn provision(h: &mut Harness, pool: u32, vip: IpAddr, encap: u8) -> Result<()> {
    h.dp.add_vip(pool, addr::from_ip(vip), 8080, PROTO_TCP)?;
    let elements: Vec<Element> = (0..3u8)
        .map(|n| Element {
            ifindex: 1,
            state: STATE_UP,
            // The element's MAC on-link, the router's through a tunnel.
            dst_mac: if encap == ENCAP_NONE {
                [2, 0, 0, 0, 0xe0, n]
            } else {
                [2, 0, 0, 0, 0xfe, 1]
            },
            src_mac: HOST_MAC,
            encap,
            _pad: [0; 3],
        })
        .collect();
    let tunnels = if encap == ENCAP_NONE {
        Vec::new()
    } else {
        let (node, element): (IpAddr, fn(u8) -> IpAddr) = match vip {
            IpAddr::V4(_) => ("192.0.2.1".parse()?, |n| IpAddr::from([198, 51, 100, n])),
            IpAddr::V6(_) => ("2001:db8::1".parse()?, |n| {
                IpAddr::V6(std::net::Ipv6Addr::new(
                    0x2001,
                    0xdb8,
                    0x100,
                    0,
                    0,
                    0,
                    0,
                    u16::from(n),
                ))
            }),
        };
        let forwarding = match encap {
            ENCAP_GUE => Forwarding::Gue { port: 6080 },
            ENCAP_VXLAN => Forwarding::Vxlan { vni: 4242 },
            _ => Forwarding::Ipip,
        };
        let path = TunnelPath {
            source: node,
            mtu: 1500,
        };
        (0..3u8)
            .map(|n| {
                plan::tunnel(
                    forwarding,
                    element(n + 7),
                    Some([2, 0, 0, 0, 0x7e, n]),
                    Some(path),
                )
            })
            .collect()
    };
    let ring = maglev::build(&backends(3), maps::DEFAULT_RING_SIZE)?;
    h.dp.apply(
        pool,
        &Mapping {
            ring,
            elements,
            tunnels,
        },
    )?;
    Ok(())
}

fn backends(n: u16) -> Vec<Backend> {
    (0..n)
        .map(|i| Backend {
            key: maglev::name_key(&format!("e{i}")),
            index: i,
            weight: 1,
        })
        .collect()
}

fn switch_costs(h: &mut Harness) -> Result<(Duration, Duration, Duration, Duration)> {
    let (mut build, mut prepare, mut switch, mut grace) = (vec![], vec![], vec![], vec![]);
    let elements: Vec<Element> = (0..100u8)
        .map(|n| Element {
            ifindex: 1,
            state: STATE_UP,
            dst_mac: [2, 0, 0, 0, 0xe1, n],
            src_mac: HOST_MAC,
            encap: 0,
            _pad: [0; 3],
        })
        .collect();
    for i in 0..SAMPLES {
        let mut b = backends(100);
        b[i % 100].weight = 0; // a different element out each time, as after a failure
        let t = std::time::Instant::now();
        let ring = maglev::build(&b, maps::DEFAULT_RING_SIZE)?;
        build.push(t.elapsed());
        let mut elements = elements.clone();
        elements[i % 100].state = vnfpool_common::element::STATE_DOWN;
        let applied = h.dp.apply(
            2,
            &Mapping {
                ring,
                elements,
                tunnels: Vec::new(),
            },
        )?;
        prepare.push(applied.prepare);
        switch.push(applied.switch);
        grace.push(applied.grace);
    }
    Ok((
        median_d(&mut build),
        median_d(&mut prepare),
        median_d(&mut switch),
        median_d(&mut grace),
    ))
}

fn run_once(prog: &Xdp, frame: &[u8]) -> Result<u32> {
    let mut out = vec![0u8; frame.len() + 64];
    let opts = TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        repeat: 1,
        ..Default::default()
    };
    Ok(prog.test_run(opts)?.return_value)
}

/// Median over samples of the kernel's per-run average for `REPEAT` runs of one frame.
fn median_repeat(prog: &Xdp, frame: &[u8]) -> Result<f64> {
    let mut samples = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let mut out = vec![0u8; frame.len() + 64];
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat: REPEAT,
            ..Default::default()
        };
        samples.push(prog.test_run(opts)?.duration.as_nanos() as f64);
    }
    Ok(median(&mut samples))
}

/// Median of single runs, one per frame (for frames that must each be new).
fn median_single(prog: &Xdp, frames: &[Vec<u8>]) -> Result<f64> {
    Ok(single(prog, frames)?.0)
}

/// Median and interquartile mean of single runs, one per frame.
fn single(prog: &Xdp, frames: &[Vec<u8>]) -> Result<(f64, f64)> {
    let mut ns = Vec::with_capacity(frames.len());
    let mut out = vec![0u8; 256];
    for f in frames {
        let opts = TestRunOptions {
            data_in: Some(f),
            data_out: Some(&mut out),
            repeat: 1,
            ..Default::default()
        };
        ns.push(prog.test_run(opts)?.duration.as_nanos() as f64);
    }
    let m = median(&mut ns);
    let middle = &ns[ns.len() / 4..ns.len() * 3 / 4];
    Ok((m, middle.iter().sum::<f64>() / middle.len() as f64))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn median_d(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn fmt(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}
