//! Orchestration of vnfpool's labs and benchmarks (never the eBPF build: the daemon's build.rs
//! does that).

use std::{
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

mod dist;
mod fuzz;

#[derive(Parser)]
#[command(about = "vnfpool development tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Runs the Pool Manager through a failover on a lab of network namespaces: the daemon on
    /// a configuration written for the lab, client traffic through the VIP, an element's service
    /// killed and healed, a drain, `kill -9` of the daemon, a map as bpftool shows it; then
    /// removes everything (also on Ctrl-C or a failure).
    Demo {
        /// Leave the lab and the daemon running, for `cargo xtask lab`, and print how to
        /// explore and remove them.
        #[arg(long)]
        keep: bool,
    },
    /// The demo's lab by hand: `up` (lab and daemon), `ask`, `fail eN`, `heal eN`, `down`.
    Lab {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Per-packet cost, mapping-switch cost, failover gaps, daemon cost, backup selection,
    /// heartbeat verification and API requests per second, as tables (see BENCHMARKS.md).
    Bench,
    /// Builds the Debian package, `vnfpool_VERSION_ARCH.deb`: the release binary (its eBPF
    /// program embedded), the systemd unit, the sysusers and tmpfiles entries, bash, zsh and
    /// fish completions, the manual pages, /etc/vnfpool/pools.yaml.example, the Grafana
    /// dashboard and the documentation. Install it with `apt-get install ./PATH`; that does
    /// not start the daemon, and an upgrade never restarts it.
    Dist {
        /// Where the package goes (the target directory's `dist/` by default).
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
    /// Runs every fuzz target (`fuzz/`: cargo-fuzz, libFuzzer, `AddressSanitizer`) in turn for
    /// `--seconds` each, from its seed corpus (`fuzz/corpus/<target>`), and fails when one
    /// finds a crash, naming the input it saved. Needs `cargo-fuzz` (scripts/setup.sh).
    Fuzz {
        /// How long each target runs.
        #[arg(long, default_value_t = 60)]
        seconds: u32,
        /// Only the targets whose names contain this.
        filter: Option<String>,
    },
}

/// What `demo` and `lab` run on: the `vnfpool` binary and every binary of the test crate.
const BUILD: [&str; 7] = [
    "build",
    "--release",
    "-p",
    "vnfpool-daemon",
    "-p",
    "vnfpool-tests",
    "--bins",
];

/// Cargo's target directory (`CARGO_TARGET_DIR` when set).
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    )
}

/// `name` as the release build leaves it.
fn release_binary(name: &str) -> PathBuf {
    target_dir().join("release").join(name)
}

/// Whether `cargo run` set the variable `name` for this process (as for any program it runs).
/// Some build scripts track such variables (ring's do, `CARGO_PKG_NAME` and others): passed on
/// to a build, they would make it and a `cargo build` typed in a shell rebuild each other's
/// ring, rustls and everything above them.
fn set_by_cargo_run(name: &str) -> bool {
    name.starts_with("CARGO_PKG_")
        || matches!(
            name,
            "CARGO_MANIFEST_DIR"
                | "CARGO_MANIFEST_PATH"
                | "CARGO_CRATE_NAME"
                | "CARGO_BIN_NAME"
                | "CARGO_PRIMARY_PACKAGE"
        )
}

fn cargo(cargo: &str, args: &[&str]) -> Result<()> {
    let mut command = Command::new(cargo);
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(set_by_cargo_run) {
            command.env_remove(name);
        }
    }
    let status = command
        .args(args)
        .status()
        .with_context(|| format!("running {cargo}"))?;
    if !status.success() {
        bail!("{cargo} {} failed: {status}", args.join(" "));
    }
    Ok(())
}

/// Builds (with `quiet`, saying nothing but errors), then becomes `name args`: one process,
/// so that Ctrl-C reaches only the program that removes the lab, and its exit status is the
/// task's.
fn build_and_exec(cargo_bin: &str, quiet: bool, name: &str, args: &[String]) -> Result<()> {
    let mut build = BUILD.to_vec();
    if quiet {
        build.push("--quiet");
    }
    cargo(cargo_bin, &build)?;
    let binary = release_binary(name);
    let err = Command::new(&binary).args(args).exec();
    Err(err).with_context(|| format!("running {}", binary.display()))
}

fn main() -> Result<()> {
    let cargo_bin = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    match Cli::parse().task {
        Task::Demo { keep } => {
            let args: Vec<String> = keep.then(|| "--keep".to_owned()).into_iter().collect();
            build_and_exec(&cargo_bin, false, "vnfpool-demo", &args)
        }
        // Usually built by the demo already; `ask` or `fail e2` should print only its answer.
        Task::Lab { args } => build_and_exec(&cargo_bin, true, "vnfpool-lab", &args),
        Task::Bench => bench(&cargo_bin),
        Task::Dist { out_dir } => {
            let deb = dist::run(&cargo_bin, &out_dir.unwrap_or_else(|| target_dir().join("dist")))?;
            println!("{}", deb.display());
            Ok(())
        }
        Task::Fuzz { seconds, filter } => fuzz::run(seconds, filter.as_deref()),
    }
}

fn bench(cargo_bin: &str) -> Result<()> {
    let steps: &[&[&str]] = &[
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
            "vnfpool-rate-bench",
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
            "vnfpool-probe-bench",
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
            "vnfpool-flowsync-bench",
        ],
        &[
            "run",
            "--release",
            "-p",
            "vnfpool-tests",
            "--bin",
            "vnfpool-cluster-bench",
        ],
        &[
            "run",
            "--release",
            "-p",
            "vnfpool-tests",
            "--bin",
            "vnfpool-api-bench",
        ],
        &[
            "run",
            "--release",
            "-p",
            "vnfpool-tests",
            "--bin",
            "vnfpool-control-bench",
        ],
    ];
    for args in steps {
        cargo(cargo_bin, args)?;
    }
    Ok(())
}
