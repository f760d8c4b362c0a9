//! The configuration loader (`vnfpool_daemon::config::parse_with`): YAML parsing, shape and
//! validation, on arbitrary text, and the positions its errors report.
//!
//! Input: the configuration text, then optionally a NUL byte and the text of the topology
//! file it may name (`placement.topology: some/file`); without that part, reading the file
//! fails as an unreadable file does.
//!
//! Checked: no panic; an error list is never empty, displays, and every position in the
//! configuration lies inside its text; a configuration accepted holds what validation
//! promises (unique names, ports and addresses, elements of the VIP's family) and gives each
//! pool a starting state.
#![no_main]

use std::{collections::HashSet, io, path::Path};

use libfuzzer_sys::fuzz_target;
use vnfpool_daemon::{config, model::failover::PoolState};

fuzz_target!(|data: &[u8]| {
    let (text, topology) = match data.iter().position(|&b| b == 0) {
        Some(nul) => (&data[..nul], Some(&data[nul + 1..])),
        None => (data, None),
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let topology = topology.map(|t| String::from_utf8_lossy(t).into_owned());
    let origin = Path::new("/etc/vnfpool/fuzz.yaml");
    let read = |_: &Path| {
        topology
            .clone()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    };

    match config::parse_with(text, origin, &read) {
        Err(errors) => {
            assert!(!errors.0.is_empty(), "an empty error list");
            let shown = errors.to_string();
            assert!(!shown.is_empty());
            // YAML breaks lines at LF, CRLF and a lone CR; one line past the last is where an
            // error at the end of the text points.
            let breaks = text.bytes().filter(|&b| b == b'\n').count()
                + text.matches('\r').count()
                - text.matches("\r\n").count();
            let lines = breaks as u64 + 1;
            for e in &errors.0 {
                if e.path() == origin
                    && let Some(p) = e.position()
                {
                    assert!(p.line >= 1 && p.column >= 1, "position {p} in {e}");
                    assert!(p.line <= lines, "line {} past the text's {lines} lines in {e}", p.line);
                }
            }
        }
        Ok(spec) => {
            let mut pools = HashSet::new();
            let mut services = HashSet::new();
            for pool in &spec.pools {
                assert!(pools.insert(&pool.name), "pool {} twice", pool.name);
                assert!(!pool.ports.is_empty() && !pool.elements.is_empty());
                for &port in &pool.ports {
                    assert_ne!(port, 0);
                    assert!(services.insert((pool.vip, port, pool.protocol)));
                }
                let mut names = HashSet::new();
                let mut addresses = HashSet::new();
                for e in &pool.elements {
                    assert!(names.insert(&e.name), "element {} twice in {}", e.name, pool.name);
                    assert!(addresses.insert(e.address), "address {} twice", e.address);
                    assert_eq!(e.address.is_ipv4(), pool.vip.is_ipv4());
                    assert_ne!(e.address, pool.vip);
                }
                let state = PoolState::new(pool);
                assert_eq!(state.elements().len(), pool.elements.len());
            }
            // What `vnfpool validate` and the daemon print about sections.
            for section in ["daemon", "api", "placement", "pools"] {
                let _ = config::section_position(text, section);
            }
            if let Some(pool) = spec.pools.first()
                && let Some(e) = pool.elements.first()
            {
                assert!(config::element_address_position(text, &pool.name, &e.name).is_some());
            }
        }
    }
});
