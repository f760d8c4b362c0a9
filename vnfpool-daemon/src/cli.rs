//! Command line (clap): `vnfpool daemon | validate | status | drain | undrain | reload`.

use std::{path::PathBuf, time::Duration};

use clap::{Parser, Subcommand, ValueEnum};

/// Default path of the control socket.
pub const DEFAULT_SOCKET: &str = "/run/vnfpool/vnfpool.sock";

/// vnfpool: a VNF Pool manager with an XDP data plane.
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
}
