//! Orchestration of vnfpool's labs and benchmarks (never the eBPF build: the daemon's build.rs
//! does that).

use std::process::Command;

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "vnfpool development tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Builds a network-namespace lab (client, vnfpool host with XDP, three elements), sends
    /// TCP and UDP traffic through the VIP, fails and drains elements, prints what happened,
    /// and removes the lab.
    Demo,
    /// The lab by hand for a demo of the daemon: `up`, `ask`, `fail eN`, `heal eN`, `down`.
    Lab {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Per-packet cost, mapping-switch cost, failover gaps, daemon cost, backup selection,
    /// heartbeat verification and API requests per second, as tables (see BENCHMARKS.md).
    Bench,
}

fn main() -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let task = Cli::parse().task;
    if let Task::Lab { args } = &task {
        let build = [
            "build",
            "--release",
            "-p",
            "vnfpool-daemon",
            "-p",
            "vnfpool-tests",
            "--bins",
        ];
        let status = Command::new(&cargo)
            .args(build)
            .status()
            .with_context(|| format!("running {cargo}"))?;
        if !status.success() {
            bail!("{cargo} {} failed: {status}", build.join(" "));
        }
        let lab = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/vnfpool-lab");
        let status = Command::new(&lab)
            .args(args)
            .status()
            .with_context(|| format!("running {}", lab.display()))?;
        if !status.success() {
            bail!("vnfpool-lab {} failed: {status}", args.join(" "));
        }
        return Ok(());
    }
    let steps: &[&[&str]] = match task {
        Task::Lab { .. } => unreachable!("handled above"),
        Task::Demo => &[&[
            "test",
            "--release",
            "-p",
            "vnfpool-tests",
            "--test",
            "lab_traffic",
            "--",
            "--nocapture",
        ]],
        Task::Bench => &[
            // Every binary of the test crate: the failover and API benchmarks run the daemon
            // (and the element services) as processes of their own.
            &["build", "--release", "-p", "vnfpool-tests", "--bins"],
            &[
                "run",
                "--release",
                "-p",
                "vnfpool-tests",
                "--bin",
                "vnfpool-bench",
            ],
            &[
                "run",
                "--release",
                "-p",
                "vnfpool-tests",
                "--bin",
                "vnfpool-failover-bench",
            ],
            &[
                "run",
                "--release",
                "-p",
                "vnfpool-tests",
                "--bin",
                "vnfpool-placement-bench",
            ],
            &[
                "run",
                "--release",
                "-p",
                "vnfpool-tests",
                "--bin",
                "vnfpool-heartbeat-bench",
            ],
            &[
                "run",
                "--release",
                "-p",
                "vnfpool-tests",
                "--bin",
                "vnfpool-api-bench",
            ],
        ],
    };
    for args in steps {
        let status = Command::new(&cargo)
            .args(*args)
            .status()
            .with_context(|| format!("running {cargo}"))?;
        if !status.success() {
            bail!("{cargo} {} failed: {status}", args.join(" "));
        }
    }
    Ok(())
}
