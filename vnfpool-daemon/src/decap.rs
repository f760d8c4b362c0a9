//! `vnfpool decap`: on an element host, strips the encapsulation a vnfpool load balancer puts
//! around the VIP packets it sends to an element on another subnet (issue #16). The command
//! checks its arguments, then has `dataplane::decap` attach, rewrite or detach the XDP program;
//! the program outlives the command through its pins.

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    net::IpAddr,
    path::{Path, PathBuf},
    process::ExitCode,
};

use vnfpool_common::{addr, decap::Counter};

use crate::dataplane::decap::{self as dp, Attached, DecapConfig};

/// What `vnfpool decap` was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecapArgs {
    pub interface: String,
    pub vips: Vec<IpAddr>,
    pub gue_ports: Vec<u16>,
    pub detach: bool,
    pub pin_dir: PathBuf,
}

/// `--vip`: a unicast address of either family, not loopback, not IPv4-mapped (the program
/// keeps IPv4 in mapped form and refuses mapped IPv6 packets, so the family must be the real one).
pub fn parse_vip(s: &str) -> Result<IpAddr, String> {
    let expected =
        "expected a unicast IPv4 or IPv6 address of this element, such as 10.200.1.100 or 2001:db8::100";
    let ip: IpAddr = s
        .parse()
        .map_err(|_| format!("{s:?} is not an IP address; {expected}"))?;
    let what = match ip {
        _ if ip.is_unspecified() => Some("the unspecified address"),
        _ if ip.is_multicast() => Some("a multicast address"),
        _ if ip.is_loopback() => Some("a loopback address"),
        IpAddr::V4(v4) if v4.is_broadcast() => Some("the broadcast address"),
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => {
            let v4 = v6.to_ipv4_mapped().map(|a| a.to_string()).unwrap_or_default();
            return Err(format!("{s} is IPv4-mapped: give the IPv4 address {v4}"));
        }
        _ => None,
    };
    match what {
        Some(what) => Err(format!("{s} is {what}, not a unicast address; {expected}")),
        None => Ok(ip),
    }
}

/// `--gue-port`: a UDP port, 1-65535.
pub fn parse_gue_port(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(0) => Err(
            "GUE port 0: expected the UDP destination port the load balancer sends GUE to, 1-65535"
                .to_owned(),
        ),
        Ok(port) => Ok(port),
        Err(_) => Err(format!("GUE port {s:?}: expected a UDP port number, 1-65535")),
    }
}

/// The program's configuration from the command line.
#[must_use]
pub fn config(vips: &[IpAddr], gue_ports: &[u16]) -> DecapConfig {
    DecapConfig {
        vips: vips.iter().map(|ip| addr::from_ip(*ip)).collect(),
        gue_ports: gue_ports.iter().copied().collect(),
    }
}

/// Runs `vnfpool decap`: 0 when done, 1 with the reason on stderr otherwise.
#[must_use]
pub fn main(args: &DecapArgs) -> ExitCode {
    match run(args) {
        Ok(message) => {
            println!("{message}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vnfpool decap: {:#}", anyhow::Error::from(e));
            ExitCode::FAILURE
        }
    }
}

fn run(args: &DecapArgs) -> Result<String, dp::DecapError> {
    let root = args.pin_dir.as_path();
    let interface = args.interface.as_str();
    if args.detach {
        dp::detach(root, interface)?;
        return Ok(format!(
            "detached vnfpool decap from {interface}; removed {}",
            dp::pin_dir(root, interface).display()
        ));
    }
    let config = config(&args.vips, &args.gue_ports);
    let done = dp::attach(root, interface, &config)?;
    let counters = dp::pinned_counters(root, interface)?;
    Ok(summary(interface, root, &args.vips, &config, done, &counters))
}

fn summary(
    interface: &str,
    root: &Path,
    vips: &[IpAddr],
    config: &DecapConfig,
    done: Attached,
    counters: &[vnfpool_common::stats::Counters],
) -> String {
    let mut out = match done {
        Attached::New { mode: "native" } => {
            format!("attached vnfpool decap to {interface} in native (driver) mode")
        }
        Attached::New { mode } => format!(
            "attached vnfpool decap to {interface} in {mode} (skb) mode: the driver has no native XDP"
        ),
        Attached::Updated => {
            format!("vnfpool decap was attached to {interface}: VIPs and GUE ports replaced")
        }
    };
    let vips: BTreeSet<IpAddr> = vips.iter().copied().collect();
    let vips: Vec<String> = vips.iter().map(ToString::to_string).collect();
    let ports: Vec<String> = config.gue_ports.iter().map(ToString::to_string).collect();
    let _ = write!(
        out,
        "\n  VIPs: {}\n  GUE ports: {}\n  pins: {}",
        vips.join(", "),
        if ports.is_empty() {
            "none (GUE is not stripped)".to_owned()
        } else {
            ports.join(", ")
        },
        dp::pin_dir(root, interface).display()
    );
    let counts: Vec<String> = Counter::ALL
        .iter()
        .zip(counters)
        .map(|(c, n)| format!("{} {}", c.name(), n.packets))
        .collect();
    let _ = write!(out, "\n  packets so far: {}", counts.join(", "));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vip_is_a_unicast_address_of_its_own_family() {
        assert_eq!(parse_vip("10.200.1.100"), Ok("10.200.1.100".parse().expect("ip")));
        assert_eq!(
            parse_vip("2001:db8::100"),
            Ok("2001:db8::100".parse().expect("ip"))
        );
        for (bad, says) in [
            ("0.0.0.0", "unspecified"),
            ("::", "unspecified"),
            ("224.0.0.1", "multicast"),
            ("ff02::1", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("127.0.0.1", "loopback"),
            ("::ffff:10.0.0.1", "give the IPv4 address 10.0.0.1"),
            ("10.0.0", "not an IP address"),
        ] {
            let err = parse_vip(bad).expect_err(bad);
            assert!(err.contains(says), "{bad}: {err}");
            assert!(
                says.starts_with("give") || err.contains("expected a unicast"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn a_gue_port_is_1_to_65535() {
        assert_eq!(parse_gue_port("6080"), Ok(6080));
        assert!(parse_gue_port("0").expect_err("0").contains("GUE port 0"));
        assert!(parse_gue_port("65536").expect_err("big").contains("1-65535"));
        assert!(parse_gue_port("gue").expect_err("word").contains("1-65535"));
    }

    #[test]
    fn the_config_keeps_ipv4_mapped_and_drops_repeats() {
        let c = config(
            &["10.0.0.1".parse().expect("ip"), "10.0.0.1".parse().expect("ip")],
            &[6080, 6080, 5555],
        );
        assert_eq!(c.vips.len(), 1);
        assert!(c.vips.iter().all(addr::is_v4));
        let value = c.gue_value().expect("fits");
        assert_eq!(value.ports, [5555, 6080, 0, 0, 0, 0, 0, 0]);
        let many: Vec<u16> = (1..=9).collect();
        assert!(config(&[], &many).gue_value().is_err());
    }

    #[test]
    fn the_summary_says_the_mode_and_the_pins() {
        let c = config(&["10.0.0.1".parse().expect("ip")], &[]);
        let counters = [vnfpool_common::stats::Counters::default(); 3];
        let root = Path::new(vnfpool_common::decap::PIN_ROOT);
        let s = summary(
            "eth0",
            root,
            &["10.0.0.1".parse().expect("ip")],
            &c,
            Attached::New { mode: "generic" },
            &counters,
        );
        assert!(s.contains("generic (skb) mode"), "{s}");
        assert!(s.contains("/sys/fs/bpf/vnfpool-decap/eth0"), "{s}");
        assert!(s.contains("GUE ports: none"), "{s}");
        assert!(s.contains("decapsulated 0, not_for_us 0, malformed 0"), "{s}");
    }
}
