//! Command line (clap): `vnfpool daemon | agent | decap | validate | status | watch | drain | undrain |
//! reload | completions | man`.

use std::{net::IpAddr, path::PathBuf, time::Duration};

use clap::{Parser, Subcommand, ValueEnum};

/// Default path of the control socket.
pub const DEFAULT_SOCKET: &str = "/run/vnfpool/vnfpool.sock";

/// A VNF Pool manager with an XDP data plane.
#[derive(Debug, Parser)]
#[command(name = "vnfpool", version, about)]
pub struct Cli {
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Plain, global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Plain,
    /// One JSON object per line.
    Json,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs the Pool Manager: attaches the data plane, probes elements, fails over.
    Daemon {
        /// Configuration file (YAML).
        #[arg(long, short)]
        config: PathBuf,
        /// When the state file cannot be read, move it aside (as `state.json.bad-<time>`) and
        /// start from probes; without this flag the daemon refuses to start over it.
        #[arg(long)]
        move_aside_bad_state: bool,
        /// Loads the XDP program with its drop log on: the 1st, 2nd, 4th, 8th… packet of each
        /// drop or exception reason on each CPU is logged (target `vnfpool::xdp`, level info).
        /// Takes effect when the program is attached: a restart that adopts a running program
        /// reads that program's log, on only if it was loaded with this flag.
        #[arg(long)]
        xdp_log: bool,
    },
    /// Runs beside an element: registers it into a pool over the API, sends its heartbeats,
    /// deregisters it on SIGTERM or SIGINT.
    Agent {
        /// Agent configuration file (YAML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// On an element host: strips the encapsulation (IPv4 in IPv4, IPv6 in IPv6, GUE) around
    /// VIP packets that a load balancer sends to an element on another subnet.
    ///
    /// Attaches an XDP program to IFACE (natively when the driver can, generically otherwise; the
    /// output says which) and pins it with its maps under `PIN_DIR/IFACE/`, so it stays after the
    /// command exits. An encapsulated packet whose inner destination is a --vip leaves the
    /// program as its inner packet behind the same Ethernet header; everything else passes
    /// untouched. The VIPs must also be addresses of the host (e.g. on `lo`). Run again on the
    /// same interface to replace the VIPs and GUE ports without detaching; `--detach` removes
    /// the program and its pins. Counters: `bpftool map dump pinned PIN_DIR/IFACE/VNFD_STATS`
    /// (decapsulated, not for us, malformed). Exits 1 on failure.
    Decap {
        /// Interface the encapsulated packets arrive on.
        #[arg(long, value_name = "IFACE")]
        interface: String,
        /// A VIP of this element, IPv4 or IPv6 (repeat for several): encapsulated packets to it
        /// are stripped. Required unless --detach.
        #[arg(
            long = "vip",
            value_name = "ADDR",
            value_parser = crate::decap::parse_vip,
            required_unless_present = "detach",
            conflicts_with = "detach"
        )]
        vips: Vec<IpAddr>,
        /// UDP destination port of GUE (variant 1) packets to strip (repeat for several, at
        /// most 8). Without it, GUE packets are not stripped.
        #[arg(
            long = "gue-port",
            value_name = "PORT",
            value_parser = crate::decap::parse_gue_port,
            conflicts_with = "detach"
        )]
        gue_ports: Vec<u16>,
        /// Detaches the program from IFACE and removes its pins; fails when none is attached.
        #[arg(long)]
        detach: bool,
        /// Directory on a bpffs under which each interface's pins go (`PIN_DIR/IFACE/`).
        #[arg(long, value_name = "PIN_DIR", default_value = vnfpool_common::decap::PIN_ROOT)]
        pin_dir: PathBuf,
    },
    /// Checks a configuration file and exits: 0 when valid, 2 with every error otherwise.
    Validate {
        /// Configuration file (YAML).
        config: PathBuf,
    },
    /// Shows every pool: VIP, model, each element's role, health and traffic, last failovers.
    Status {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Control socket of the daemon.
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Live view of every pool: roles, health, packets per second, backups, last failovers.
    ///
    /// Asks the daemon every interval; shows when it does not answer and keeps asking. `q` or
    /// Ctrl-C quits. When stdout is not a terminal, prints a snapshot per interval as text.
    Watch {
        /// Control socket of the daemon.
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Time between two questions to the daemon (e.g. `500ms`), 10ms..=1h.
        #[arg(long, default_value = "1s", value_parser = parse_interval)]
        interval: Duration,
    },
    /// Gives an element no new flows; its flows stay until they end or the deadline passes.
    Drain {
        pool: String,
        element: String,
        /// Longest its existing flows may stay (e.g. `30s`); none: until undrained.
        #[arg(long, value_parser = humantime::parse_duration)]
        deadline: Option<Duration>,
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Ends a drain.
    Undrain {
        pool: String,
        element: String,
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Re-reads the configuration file and applies the difference (same as SIGHUP).
    Reload {
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Prints a completion script for a shell (e.g. `vnfpool completions bash > /etc/bash_completion.d/vnfpool`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Prints the manual page (roff), e.g. `vnfpool man | man -l -`.
    Man {
        /// A subcommand's own page (`vnfpool man watch`) instead of vnfpool(1).
        command: Option<String>,
        /// Writes every page instead, vnfpool.1 and vnfpool-COMMAND.1 for each subcommand, into
        /// this directory (made if missing), and prints their paths.
        #[arg(long, value_name = "DIR", conflicts_with = "command")]
        out_dir: Option<PathBuf>,
    },
}

/// `--interval`: a humantime duration, 10ms..=1h.
fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if (Duration::from_millis(10)..=Duration::from_hours(1)).contains(&d) {
        Ok(d)
    } else {
        Err("must be 10ms..=1h".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn drain_takes_a_human_deadline() {
        let cli =
            Cli::try_parse_from(["vnfpool", "drain", "web", "e2", "--deadline", "30s"]).expect("parses");
        match cli.command {
            Command::Drain {
                pool,
                element,
                deadline,
                ..
            } => {
                assert_eq!(
                    (pool.as_str(), element.as_str(), deadline),
                    ("web", "e2", Some(Duration::from_secs(30)))
                );
            }
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn decap_needs_a_vip_unless_it_detaches() {
        let err = Cli::try_parse_from(["vnfpool", "decap", "--interface", "eth0"]).expect_err("no --vip");
        assert!(err.to_string().contains("--vip <ADDR>"), "{err}");
        let cli =
            Cli::try_parse_from(["vnfpool", "decap", "--interface", "eth0", "--detach"]).expect("parses");
        assert!(matches!(cli.command, Command::Decap { detach: true, ref vips, .. } if vips.is_empty()));
        let cli = Cli::try_parse_from([
            "vnfpool",
            "decap",
            "--interface",
            "eth0",
            "--vip",
            "10.0.0.1",
            "--vip",
            "2001:db8::1",
            "--gue-port",
            "6080",
        ])
        .expect("parses");
        assert!(
            matches!(cli.command, Command::Decap { ref vips, ref gue_ports, ref pin_dir, detach: false, .. }
                if vips.len() == 2 && gue_ports == &[6080] && pin_dir.as_os_str() == vnfpool_common::decap::PIN_ROOT),
            "{:?}",
            cli.command
        );
        for bad in [
            &["--vip", "224.0.0.1"][..],
            &["--vip", "10.0.0.1", "--gue-port", "0"],
            &["--vip", "10.0.0.1", "--detach"],
        ] {
            let mut argv = vec!["vnfpool", "decap", "--interface", "eth0"];
            argv.extend_from_slice(bad);
            assert!(Cli::try_parse_from(&argv).is_err(), "{argv:?}");
        }
    }

    #[test]
    fn watch_asks_every_second_unless_told() {
        let cli = Cli::try_parse_from(["vnfpool", "watch"]).expect("parses");
        assert!(
            matches!(cli.command, Command::Watch { interval, ref socket }
                if interval == Duration::from_secs(1) && socket.as_os_str() == DEFAULT_SOCKET),
            "{:?}",
            cli.command
        );
        let cli = Cli::try_parse_from(["vnfpool", "watch", "--interval", "250ms"]).expect("parses");
        assert!(
            matches!(cli.command, Command::Watch { interval, .. } if interval == Duration::from_millis(250))
        );
        for bad in ["0s", "1ms", "2h", "often"] {
            assert!(
                Cli::try_parse_from(["vnfpool", "watch", "--interval", bad]).is_err(),
                "--interval {bad}"
            );
        }
    }
}
