//! `cargo xtask lab`: the demo's lab by hand. `up` builds it and starts the daemon, as
//! `cargo xtask demo --keep` leaves it; `ask` sends new flows through the VIP from the client;
//! `fail eN` and `heal eN` kill and restart an element's service; `down` removes everything.
//! The lab outlives the command: its state file (`target/lab/state.json`) says what it is made
//! of, and there is one such lab at a time.

use std::process::ExitCode;

use vnfpool_tests::demo::{DNS_PORT, DemoLab, KeptLab, RISE, WEB_PORT, run_removing_on_exit, tally};

const USAGE: &str = "usage: cargo xtask lab up | ask | fail eN | heal eN | down";

/// The kept lab, or why there is none.
fn kept() -> Result<KeptLab, String> {
    KeptLab::load().ok_or_else(|| {
        format!(
            "no lab is up ({} is missing): `cargo xtask lab up` or `cargo xtask demo --keep` makes one",
            KeptLab::state_path().display()
        )
    })
}

fn element(lab: &KeptLab, arg: Option<&String>) -> Result<usize, String> {
    let names: Vec<&str> = lab.elements.iter().map(|e| e.name.as_str()).collect();
    arg.and_then(|a| lab.element(a))
        .ok_or_else(|| format!("name an element: {}", names.join(", ")))
}

fn up() -> ExitCode {
    if let Some(lab) = KeptLab::load() {
        eprintln!(
            "a lab is up already (client namespace {}): `cargo xtask lab down` first",
            lab.client
        );
        return ExitCode::FAILURE;
    }
    run_removing_on_exit(|| {
        let mut demo = DemoLab::up();
        let ready = demo.start_daemon();
        let lab = demo.keep();
        println!(
            "lab up: client {}, vnfpool host {}, elements {}; VIP {} (dns {}/udp, web {}/tcp)",
            lab.client,
            lab.host,
            lab.elements
                .iter()
                .map(|e| format!("{} {} ({})", e.name, e.addr, e.netns))
                .collect::<Vec<_>>()
                .join(", "),
            lab.vip,
            DNS_PORT,
            WEB_PORT,
        );
        println!(
            "daemon ready in {:.2} s (pid {}), on {}",
            ready.as_secs_f64(),
            lab.daemon.unwrap_or_default(),
            lab.config.display()
        );
        println!("{}", lab.explore());
    })
}

fn run(args: &[String]) -> Result<(), String> {
    match args.first().map(String::as_str) {
        Some("ask") => {
            let (dns, web) = kept()?.ask();
            let all = |v: &[String]| tally(v.iter().map(String::as_str));
            println!("dns: {} new flows: {}", dns.len(), all(&dns));
            println!("web: {} new connections: {}", web.len(), all(&web));
        }
        Some(verb @ ("fail" | "heal")) => {
            let mut lab = kept()?;
            let i = element(&lab, args.get(1))?;
            let name = lab.elements[i].name.clone();
            let said = match (verb, if verb == "fail" { lab.fail(i) } else { lab.heal(i) }) {
                ("fail", true) => format!(
                    "{name}'s service killed; the daemon takes {name} out: {} status --socket {}",
                    lab.vnfpool.display(),
                    lab.socket.display()
                ),
                ("fail", false) => format!("{name}'s service is not running"),
                (_, true) => {
                    format!("{name}'s service started; the daemon takes {name} back after {RISE} good checks")
                }
                (_, false) => format!("{name}'s service is running already"),
            };
            println!("{said}");
        }
        Some("down") => {
            let removed = kept()?.down();
            println!("lab down; removed:");
            for r in removed {
                println!("  {r}");
            }
        }
        _ => return Err(USAGE.to_owned()),
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("up") && args.len() == 1 {
        return up();
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}
