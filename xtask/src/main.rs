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
    /// Per-packet cost, mapping-switch cost, failover gaps and daemon cost, as tables
    /// (see BENCHMARKS.md).
    Bench,
}

fn main() -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let steps: &[&[&str]] = match Cli::parse().task {
        Task::Demo => &[&["test", "--release", "-p", "vnfpool-tests", "--test", "lab_traffic", "--", "--nocapture"]],
        Task::Bench => &[
            // Every binary of the test crate: the failover benchmark runs the daemon and the
            // element services as processes of their own.
            &["build", "--release", "-p", "vnfpool-tests", "--bins"],
            &["run", "--release", "-p", "vnfpool-tests", "--bin", "vnfpool-bench"],
            &["run", "--release", "-p", "vnfpool-tests", "--bin", "vnfpool-failover-bench"],
        ],
    };
    for args in steps {
        let status = Command::new(&cargo).args(*args).status().with_context(|| format!("running {cargo}"))?;
        if !status.success() {
            bail!("{cargo} {} failed: {status}", args.join(" "));
        }
    }
    Ok(())
}
