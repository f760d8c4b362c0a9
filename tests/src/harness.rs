//! The XDP program loaded (unpinned, unattached) and run through `BPF_PROG_TEST_RUN`.

use std::time::Duration;

use aya::programs::{ProgramError, TestRun as _, TestRunOptions, Xdp};
use aya_obj::programs::XdpAttachType;
use vnfpool_common::maps;
use vnfpool_daemon::dataplane::{AyaDataplane, LoadOptions};

use crate::pins::PinDir;

/// A freshly loaded program with empty maps of its own.
pub struct Harness {
    pub dp: AyaDataplane,
}

/// What one run returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub verdict: u32,
    pub frame: Vec<u8>,
}

impl Harness {
    /// Loads the program with `opts`, its maps unpinned whatever `opts` says.
    #[must_use]
    pub fn with(opts: &LoadOptions) -> Self {
        let opts = LoadOptions {
            pin_dir: None,
            ..opts.clone()
        };
        let mut dp = AyaDataplane::load(&opts).expect("loading the XDP object (needs root and bpf-linker)");
        let prog: &mut Xdp = dp
            .ebpf_mut()
            .program_mut(maps::PROGRAM)
            .expect("program in object")
            .try_into()
            .expect("an XDP program");
        prog.load().expect("verifier accepts the program");
        Self { dp }
    }

    /// Loads the program as the daemon would by default (a 1M-flow table, a random flow hash
    /// key, the default flood guard).
    #[must_use]
    pub fn new() -> Self {
        Self::with(&LoadOptions::default())
    }

    fn prog(&mut self) -> &mut Xdp {
        self.dp
            .ebpf_mut()
            .program_mut(maps::PROGRAM)
            .expect("program")
            .try_into()
            .expect("xdp")
    }

    /// Packets counted so far under `reason` in `VNF_REASONS`, all CPUs together.
    #[must_use]
    pub fn reason_packets(&self, reason: vnfpool_common::stats::Reason) -> u64 {
        self.dp
            .counters(maps::REASON_STATS, reason as u32)
            .expect("reading VNF_REASONS")
            .packets
    }

    /// Runs the program once on `frame`.
    #[track_caller]
    pub fn run(&mut self, frame: &[u8]) -> Run {
        run(self.prog(), frame)
    }

    /// A second handle on the loaded program, sharing its maps (no pin needed).
    #[must_use]
    pub fn program(&mut self) -> Xdp {
        handle(self.dp.ebpf_mut(), maps::PROGRAM).expect("program handle")
    }

    /// A second handle on the same loaded program (pinned into `pins`), for a thread that
    /// runs packets while this harness writes mappings.
    #[must_use]
    pub fn second_handle(&mut self, pins: &PinDir) -> Xdp {
        let path = pins.path().join(maps::PROGRAM);
        self.prog().pin(&path).expect("pin program");
        Xdp::from_pin(&path, XdpAttachType::Interface).expect("program from pin")
    }

    /// Runs the program `repeat` times on `frame` in one call; the kernel's average per run.
    /// The frame is not restored between runs, so only frames whose every run takes the
    /// same path (the program rewrites MACs only) measure what they claim.
    pub fn time(&mut self, frame: &[u8], repeat: u32) -> Result<Duration, ProgramError> {
        let mut out = vec![0u8; frame.len() + 256];
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat,
            ..Default::default()
        };
        Ok(self.prog().test_run(opts)?.duration)
    }
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

/// A second handle on the loaded XDP program `name` of `ebpf`, sharing its maps, so that
/// several programs of one object can be run while it stays borrowed.
///
/// # Errors
/// When `ebpf` has no loaded XDP program of that name.
pub fn handle(ebpf: &aya::Ebpf, name: &'static str) -> anyhow::Result<Xdp> {
    use anyhow::Context as _;
    let prog: &Xdp = ebpf
        .program(name)
        .with_context(|| format!("no program {name}"))?
        .try_into()?;
    Ok(Xdp::from_program_info(
        prog.info()?,
        name.into(),
        XdpAttachType::Interface,
    )?)
}

/// Runs `prog` once on `frame`.
#[track_caller]
#[must_use]
pub fn run(prog: &Xdp, frame: &[u8]) -> Run {
    let mut out = vec![0u8; frame.len() + 256];
    let opts = TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        repeat: 1,
        ..Default::default()
    };
    let r = prog.test_run(opts).expect("BPF_PROG_TEST_RUN");
    out.truncate(r.data_size_out as usize);
    Run {
        verdict: r.return_value,
        frame: out,
    }
}

/// Name of an XDP verdict, for assertion messages.
#[must_use]
pub fn verdict_name(v: u32) -> &'static str {
    match v {
        0 => "XDP_ABORTED",
        1 => "XDP_DROP",
        2 => "XDP_PASS",
        3 => "XDP_TX",
        4 => "XDP_REDIRECT",
        _ => "unknown",
    }
}
