//! The systemd unit `packaging/vnfpool.service`, read the way the tests need it: a setting's
//! values, and the capabilities it grants (so that the least-privilege test runs the daemon
//! with exactly the unit's list, and the two cannot drift).

use std::path::PathBuf;

/// `packaging/vnfpool.service` in the source tree.
#[must_use]
pub fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../packaging/vnfpool.service")
}

/// The unit's text.
#[must_use]
pub fn text() -> String {
    let path = path();
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The values of `key` in the unit, in order, the way systemd accumulates list settings: each
/// assignment adds its space-separated words, an empty assignment clears what came before.
/// Comments are skipped; line continuations and inverted lists (`~`) are refused, as nothing
/// here needs them.
#[must_use]
pub fn values(unit: &str, key: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (n, line) in unit.lines().enumerate() {
        let line = line.trim();
        if line.starts_with(['#', ';']) {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        if k.trim() != key {
            continue;
        }
        let v = v.trim();
        assert!(
            !v.ends_with('\\') && !v.starts_with('~'),
            "line {}: {key}= with a continuation or an inverted list is not understood here",
            n + 1
        );
        if v.is_empty() {
            out.clear();
        } else {
            out.extend(v.split_whitespace().map(str::to_owned));
        }
    }
    out
}

/// Every capability by name, with its number (`linux/capability.h`, up to Linux 6.18).
pub const CAPABILITIES: &[(&str, u32)] = &[
    ("CAP_CHOWN", 0),
    ("CAP_DAC_OVERRIDE", 1),
    ("CAP_DAC_READ_SEARCH", 2),
    ("CAP_FOWNER", 3),
    ("CAP_FSETID", 4),
    ("CAP_KILL", 5),
    ("CAP_SETGID", 6),
    ("CAP_SETUID", 7),
    ("CAP_SETPCAP", 8),
    ("CAP_LINUX_IMMUTABLE", 9),
    ("CAP_NET_BIND_SERVICE", 10),
    ("CAP_NET_BROADCAST", 11),
    ("CAP_NET_ADMIN", 12),
    ("CAP_NET_RAW", 13),
    ("CAP_IPC_LOCK", 14),
    ("CAP_IPC_OWNER", 15),
    ("CAP_SYS_MODULE", 16),
    ("CAP_SYS_RAWIO", 17),
    ("CAP_SYS_CHROOT", 18),
    ("CAP_SYS_PTRACE", 19),
    ("CAP_SYS_PACCT", 20),
    ("CAP_SYS_ADMIN", 21),
    ("CAP_SYS_BOOT", 22),
    ("CAP_SYS_NICE", 23),
    ("CAP_SYS_RESOURCE", 24),
    ("CAP_SYS_TIME", 25),
    ("CAP_SYS_TTY_CONFIG", 26),
    ("CAP_MKNOD", 27),
    ("CAP_LEASE", 28),
    ("CAP_AUDIT_WRITE", 29),
    ("CAP_AUDIT_CONTROL", 30),
    ("CAP_SETFCAP", 31),
    ("CAP_MAC_OVERRIDE", 32),
    ("CAP_MAC_ADMIN", 33),
    ("CAP_SYSLOG", 34),
    ("CAP_WAKE_ALARM", 35),
    ("CAP_BLOCK_SUSPEND", 36),
    ("CAP_AUDIT_READ", 37),
    ("CAP_PERFMON", 38),
    ("CAP_BPF", 39),
    ("CAP_CHECKPOINT_RESTORE", 40),
];

/// The capabilities the unit grants: its `AmbientCapabilities=`, which must name the same set
/// as its `CapabilityBoundingSet=` (a capability in one but not the other is either not granted
/// or granted for nothing), each a known capability, sorted.
#[must_use]
pub fn capabilities(unit: &str) -> Vec<String> {
    let mut ambient = values(unit, "AmbientCapabilities");
    let mut bounding = values(unit, "CapabilityBoundingSet");
    ambient.sort();
    ambient.dedup();
    bounding.sort();
    bounding.dedup();
    assert_eq!(
        ambient, bounding,
        "AmbientCapabilities= and CapabilityBoundingSet= name different sets"
    );
    for cap in &ambient {
        assert!(
            CAPABILITIES.iter().any(|(name, _)| name == cap),
            "{cap} is not a capability"
        );
    }
    ambient
}

/// The capability set `caps` as the bit mask `/proc/<pid>/status` shows (`CapEff:` …).
#[must_use]
pub fn mask(caps: &[String]) -> u64 {
    caps.iter()
        .map(|cap| {
            let (_, bit) = CAPABILITIES
                .iter()
                .find(|(name, _)| name == cap)
                .unwrap_or_else(|| panic!("{cap} is not a capability"));
            1u64 << bit
        })
        .fold(0, |m, b| m | b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_accumulate_and_an_empty_assignment_clears() {
        let unit = "[Service]\n# AmbientCapabilities=CAP_SYS_ADMIN\nAmbientCapabilities=CAP_CHOWN\nAmbientCapabilities=\nAmbientCapabilities=CAP_BPF\nAmbientCapabilities=CAP_NET_ADMIN CAP_PERFMON\nCapabilityBoundingSet=CAP_PERFMON CAP_BPF CAP_NET_ADMIN\n";
        assert_eq!(capabilities(unit), ["CAP_BPF", "CAP_NET_ADMIN", "CAP_PERFMON"]);
        assert_eq!(mask(&capabilities(unit)), (1 << 39) | (1 << 38) | (1 << 12));
    }

    #[test]
    #[should_panic(expected = "different sets")]
    fn a_capability_granted_but_not_bounded_is_refused() {
        let _ = capabilities("AmbientCapabilities=CAP_BPF CAP_NET_ADMIN\nCapabilityBoundingSet=CAP_BPF\n");
    }

    #[test]
    #[should_panic(expected = "CAP_BFP is not a capability")]
    fn a_misspelt_capability_is_refused() {
        let _ = capabilities("AmbientCapabilities=CAP_BFP\nCapabilityBoundingSet=CAP_BFP\n");
    }
}
