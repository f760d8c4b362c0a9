//! The `vnfpool` command: what `main` runs. Kept in the library so that every binary that is
//! `vnfpool` (the daemon crate's, and the test crate's copy that integration tests spawn) is
//! the same code.

use std::process::ExitCode;

use clap::Parser as _;

use crate::{
    cli::{Cli, Command},
    config,
    control::{self, Request, Response},
    telemetry,
};

/// Exit status of a bad configuration (the same as `EX_USAGE`-style "your input is wrong").
const EXIT_CONFIG: u8 = 2;

/// Parses the command line and runs it.
#[must_use]
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    match cli.command {
        Command::Validate { config } => match config::load(&config) {
            Ok(spec) => {
                println!("{}: valid ({} pools)", config.display(), spec.pools.len());
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{errors}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::Daemon {
            config,
            move_aside_bad_state,
            xdp_log,
        } => {
            // Load and validate before touching BPF or binding anything.
            let spec = match config::load(&config) {
                Ok(spec) => spec,
                Err(errors) => {
                    eprintln!("{errors}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            drop_ambient_capabilities();
            raise_descriptor_limit();
            run_daemon(
                config,
                spec,
                crate::app::Options {
                    move_aside_bad_state,
                    xdp_log,
                },
            )
        }
        Command::Agent { config } => crate::agent::main(&config),
        Command::Decap {
            interface,
            vips,
            gue_ports,
            detach,
            pin_dir,
        } => crate::decap::main(&crate::decap::DecapArgs {
            interface,
            vips,
            gue_ports,
            detach,
            pin_dir,
        }),
        Command::Status { json, socket } => client(&socket, &Request::Status, json),
        Command::Watch { socket, interval } => crate::watch::run(socket, interval),
        Command::Completions { shell } => print(|out| {
            crate::manual::completions(shell, out);
            Ok(())
        }),
        Command::Man {
            out_dir: Some(dir), ..
        } => print(|out| {
            for page in crate::manual::write_pages(&dir)? {
                // Into the buffer `print` writes out: it cannot fail.
                let _ = writeln!(out, "{}", page.display());
            }
            Ok(())
        }),
        Command::Man { command, .. } => print(|out| crate::manual::man(command.as_deref(), out)),
        Command::Drain {
            pool,
            element,
            deadline,
            socket,
        } => client(
            &socket,
            &Request::Drain {
                pool,
                element,
                deadline,
            },
            false,
        ),
        Command::Undrain {
            pool,
            element,
            socket,
        } => client(&socket, &Request::Undrain { pool, element }, false),
        Command::Reload { socket } => client(&socket, &Request::Reload, false),
    }
}

/// Writes what `write` produces to stdout; a closed stdout (`vnfpool man | head`) is no failure.
fn print(write: impl FnOnce(&mut dyn std::io::Write) -> Result<(), crate::manual::ManualError>) -> ExitCode {
    let mut out = Vec::new();
    if let Err(e) = write(&mut out) {
        eprintln!("vnfpool: {:#}", anyhow::Error::from(e));
        return ExitCode::from(EXIT_CONFIG);
    }
    match std::io::Write::write_all(&mut std::io::stdout().lock(), &out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vnfpool: writing to stdout: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Empties the ambient capability set, before any other thread exists (threads inherit it from
/// the one that creates them). Under the systemd unit the daemon's capabilities come to it as
/// ambient ones, and ambient capabilities survive `execve`: without this, an exec probe would
/// run with `CAP_BPF`, `CAP_NET_ADMIN` and `CAP_PERFMON`. The daemon's own effective and
/// permitted sets stay.
fn drop_ambient_capabilities() {
    if let Err(e) = rustix::thread::clear_ambient_capability_set() {
        eprintln!("vnfpool: clearing the ambient capabilities: {e}; exec probes may inherit them");
    }
}

/// Raises the soft limit on open descriptors to the hard one: every probe, API client, SSE
/// stream and flow-sync peer holds one, and the usual soft limit of 1,024 is soon reached (the
/// systemd unit also sets `LimitNOFILE=`).
fn raise_descriptor_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            ..limit
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            eprintln!(
                "vnfpool: raising the open-descriptor limit to {:?}: {e}",
                limit.maximum
            );
        }
    }
}

fn run_daemon(
    config: std::path::PathBuf,
    spec: crate::model::spec::Spec,
    options: crate::app::Options,
) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vnfpool: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(crate::app::run(config, spec, options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is_config() => {
            eprintln!("vnfpool: {:#}", anyhow::Error::from(e));
            ExitCode::from(EXIT_CONFIG)
        }
        Err(e) => {
            eprintln!("vnfpool: {:#}", anyhow::Error::from(e));
            ExitCode::FAILURE
        }
    }
}

fn client(socket: &std::path::Path, request: &Request, json: bool) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vnfpool: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(control::request(socket, request)) {
        Ok(Response::Ok { message }) => {
            println!("{message}");
            ExitCode::SUCCESS
        }
        Ok(Response::Status(status)) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&status).expect("status serializes")
                );
            } else {
                print!("{}", render_status(&status));
            }
            ExitCode::SUCCESS
        }
        Ok(Response::Error { message }) => {
            eprintln!("vnfpool: {message}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("vnfpool: {:#}", anyhow::Error::from(e));
            ExitCode::FAILURE
        }
    }
}

/// `vnfpool status` as a table.
#[must_use]
pub fn render_status(status: &crate::control::Status) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for p in &status.pools {
        let ports: Vec<String> = p.ports.iter().map(u16::to_string).collect();
        let _ = writeln!(
            out,
            "pool {}  {}:{}/{}  {}  generation {}  {} packets",
            p.name,
            p.vip,
            ports.join(","),
            p.protocol,
            p.model,
            p.generation,
            p.packets
        );
        let _ = writeln!(
            out,
            "  {:<16} {:<40} {:<9} {:<8} {:>12}",
            "ELEMENT", "ADDRESS", "ROLE", "HEALTH", "PACKETS"
        );
        for e in &p.elements {
            let _ = writeln!(
                out,
                "  {:<16} {:<40} {:<9} {:<8} {:>12}",
                e.name, e.address, e.role, e.health, e.packets
            );
        }
        for e in &p.elements {
            if let Some(backup) = &e.backup {
                let flag = if e.policy_violation {
                    "  POLICY VIOLATION"
                } else {
                    ""
                };
                let _ = writeln!(out, "  backup of {}: {backup}{flag}", e.name);
            }
        }
        for e in p.elements.iter().filter(|e| !e.paths.is_empty()) {
            let paths: Vec<String> = e
                .paths
                .iter()
                .map(|path| format!("{} {}", path.address, if path.up { "up" } else { "DOWN" }))
                .collect();
            let _ = writeln!(out, "  heartbeat paths of {}: {}", e.name, paths.join(", "));
        }
        if p.policy_violations > 0 {
            let _ = writeln!(out, "  policy violations since start: {}", p.policy_violations);
        }
        if let Some(b) = &p.budget {
            let _ = writeln!(
                out,
                "  budget: detect {:?} (worst case of the health settings {:?}), switch {:?}",
                b.detect, b.worst_detection, b.switch
            );
        }
        for f in p.failovers.iter().rev().take(5) {
            let _ = writeln!(
                out,
                "  failover: {} {} detection {:.1} ms, decision to switch {:.3} ms",
                f.element,
                f.reason,
                f.detection.as_secs_f64() * 1e3,
                f.switch.as_secs_f64() * 1e3
            );
        }
        out.push('\n');
    }
    if let Some(h) = &status.heartbeats {
        let rejected: Vec<String> = crate::heartbeat::Rejected::ALL
            .iter()
            .filter(|&&kind| h.rejected(kind) > 0)
            .map(|&kind| format!("{} {}", kind.name(), h.rejected(kind)))
            .collect();
        let copies = if h.duplicate > 0 {
            format!(", {} copies over other paths", h.duplicate)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "heartbeats: {} accepted{copies}, {} rejected{}",
            h.accepted,
            h.rejected_total(),
            if rejected.is_empty() {
                String::new()
            } else {
                format!(" ({})", rejected.join(", "))
            }
        );
    }
    if let Some(c) = &status.cluster {
        render_cluster(&mut out, c);
    }
    if let Some(f) = &status.flow_sync {
        let _ = writeln!(
            out,
            "flow sync: {} records sent, {} received ({} stored, {} refused), {} datagrams rejected, lag {:.1} ms (max {:.1} ms)",
            f.records_sent,
            f.records_received,
            f.records_stored,
            f.records_refused,
            f.rejected.iter().sum::<u64>(),
            std::time::Duration::from_nanos(f.lag_last_ns).as_secs_f64() * 1e3,
            std::time::Duration::from_nanos(f.lag_max_ns).as_secs_f64() * 1e3,
        );
    }
    out
}

/// `cluster: node lb-1, connected, members lb-1 lb-2` and a line per pool: its leader, the
/// decision mapped here, and the elements some node sees down.
fn render_cluster(out: &mut String, c: &crate::controller::ClusterStatus) {
    use std::fmt::Write as _;
    let _ = writeln!(
        out,
        "cluster: node {}, {}, members {}",
        c.node,
        if c.connected {
            "connected"
        } else {
            "NOT CONNECTED to the store"
        },
        if c.members.is_empty() {
            "unknown".to_owned()
        } else {
            c.members.join(" ")
        }
    );
    for p in &c.pools {
        let down: Vec<String> = p
            .verdicts
            .iter()
            .flat_map(|(node, v)| {
                v.iter()
                    .filter(|(_, h)| **h == crate::model::health::Health::Down)
                    .map(move |(e, _)| format!("{e}@{node}"))
            })
            .collect();
        let _ = writeln!(
            out,
            "  pool {:<16} leader {:<16} decision {} by {}{}",
            p.pool,
            p.leader.as_deref().unwrap_or("none"),
            p.generation,
            p.decided_by.as_deref().unwrap_or("nobody yet"),
            if down.is_empty() {
                String::new()
            } else {
                format!("  seen down: {}", down.join(" "))
            }
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_says_how_many_heartbeats_were_accepted_and_why_others_were_not() {
        let mut status = crate::control::Status::default();
        assert_eq!(render_status(&status), "", "no API, no heartbeat line");
        status.heartbeats = Some(crate::heartbeat::Counters {
            accepted: 12,
            bad_mac: 2,
            old_sequence: 1,
            ..crate::heartbeat::Counters::default()
        });
        assert_eq!(
            render_status(&status),
            "heartbeats: 12 accepted, 3 rejected (bad_mac 2, old_sequence 1)\n"
        );
        status.heartbeats = Some(crate::heartbeat::Counters {
            accepted: 12,
            duplicate: 11,
            ..crate::heartbeat::Counters::default()
        });
        assert_eq!(
            render_status(&status),
            "heartbeats: 12 accepted, 11 copies over other paths, 0 rejected\n"
        );
    }

    #[test]
    fn status_shows_the_cluster_the_leaders_and_who_sees_what_down() {
        use crate::{
            controller::{ClusterPoolStatus, ClusterStatus},
            model::health::Health,
        };
        let status = crate::control::Status {
            cluster: Some(ClusterStatus {
                node: "lb-2".to_owned(),
                connected: true,
                member: true,
                members: vec!["lb-1".to_owned(), "lb-2".to_owned()],
                pools: vec![ClusterPoolStatus {
                    pool: "web".to_owned(),
                    leader: Some("lb-1".to_owned()),
                    generation: 4,
                    decided_by: Some("lb-1".to_owned()),
                    verdicts: [(
                        "lb-2".to_owned(),
                        [("e1".to_owned(), Health::Down), ("e2".to_owned(), Health::Up)].into(),
                    )]
                    .into(),
                }],
            }),
            ..crate::control::Status::default()
        };
        assert_eq!(
            render_status(&status),
            "cluster: node lb-2, connected, members lb-1 lb-2\n  pool web              leader lb-1             decision 4 by lb-1  seen down: e1@lb-2\n"
        );
        let status = crate::control::Status {
            flow_sync: Some(Box::new(crate::flowsync::StatsSnapshot {
                records_sent: 10,
                records_received: 7,
                records_stored: 6,
                records_refused: 1,
                lag_last_ns: 400_000,
                lag_max_ns: 2_100_000,
                ..crate::flowsync::StatsSnapshot::default()
            })),
            ..status
        };
        assert!(
            render_status(&status).ends_with(
                "flow sync: 10 records sent, 7 received (6 stored, 1 refused), 0 datagrams rejected, lag 0.4 ms (max 2.1 ms)\n"
            ),
            "{}",
            render_status(&status)
        );
    }
}
