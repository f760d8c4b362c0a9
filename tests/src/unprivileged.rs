//! Running a program as an unprivileged user holding exactly a given set of capabilities, the
//! way systemd runs a unit's `User=` with `AmbientCapabilities=` and `CapabilityBoundingSet=`:
//! `setpriv` (util-linux) changes the ids and sets the inheritable, ambient and bounding sets
//! before it executes the program, with `no_new_privs` like `NoNewPrivileges=yes`.

use std::{os::unix::fs::chown, path::Path};

/// A user and group id that no user or group of this host has. Nothing is created (no
/// `/etc/passwd` entry is needed to run as an id), so nothing is left behind; files handed to
/// it are removed with their directories.
#[derive(Debug, Clone, Copy)]
pub struct Unprivileged {
    pub uid: u32,
    pub gid: u32,
}

/// Ids tried, from the first: above the usual system and regular ranges, below `nobody`.
const IDS: std::ops::RangeInclusive<u32> = 61_100..=61_999;

impl Unprivileged {
    /// The first id of `IDS` that is neither a user's nor a group's.
    #[must_use]
    pub fn free() -> Self {
        let taken = |file: &str| -> Vec<u32> {
            std::fs::read_to_string(file)
                .unwrap_or_else(|e| panic!("reading {file}: {e}"))
                .lines()
                .filter_map(|l| l.split(':').nth(2)?.parse().ok())
                .collect()
        };
        let users = taken("/etc/passwd");
        let groups = taken("/etc/group");
        let id = IDS
            .clone()
            .find(|id| !users.contains(id) && !groups.contains(id))
            .expect("a free id");
        Self { uid: id, gid: id }
    }

    /// Hands `path` to the user (this one file or directory).
    pub fn own(&self, path: &Path) {
        chown(path, Some(self.uid), Some(self.gid))
            .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    }

    /// Hands `dir` and everything in it to the user, as the unit's `chown -R` does.
    pub fn own_all(&self, dir: &Path) {
        self.own(dir);
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display())) {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                self.own_all(&path);
            } else {
                self.own(&path);
            }
        }
    }

    /// `setpriv …  --`: the program that follows runs as this user, with no supplementary
    /// group, holding exactly `caps` (names like `CAP_BPF`) as effective, permitted,
    /// inheritable and ambient capabilities, with a bounding set of only `caps`, and with
    /// `no_new_privs`.
    #[must_use]
    pub fn setpriv(&self, caps: &[String]) -> Vec<String> {
        let list = std::iter::once("-all".to_owned())
            .chain(caps.iter().map(|c| {
                let name = c.strip_prefix("CAP_").unwrap_or_else(|| panic!("{c}: not CAP_…"));
                format!("+{}", name.to_lowercase())
            }))
            .collect::<Vec<_>>()
            .join(",");
        vec![
            "setpriv".to_owned(),
            format!("--reuid={}", self.uid),
            format!("--regid={}", self.gid),
            "--clear-groups".to_owned(),
            format!("--inh-caps={list}"),
            format!("--ambient-caps={list}"),
            format!("--bounding-set={list}"),
            "--no-new-privs".to_owned(),
            "--".to_owned(),
        ]
    }
}

/// What `/proc/<pid>/status` says about a process's identity and privileges.
#[derive(Debug, PartialEq, Eq)]
pub struct Credentials {
    /// Real, effective, saved and file-system user ids.
    pub uids: Vec<u32>,
    /// Real, effective, saved and file-system group ids.
    pub gids: Vec<u32>,
    /// Supplementary groups.
    pub groups: Vec<u32>,
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
    pub ambient: u64,
    pub bounding: u64,
    pub no_new_privs: bool,
}

impl Credentials {
    /// The credentials of process `pid`.
    #[must_use]
    pub fn of(pid: u32) -> Self {
        let path = format!("/proc/{pid}/status");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
        let field = |name: &str| -> &str {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .unwrap_or_else(|| panic!("{path} has no {name}:"))
                .trim()
        };
        let ids = |name: &str| -> Vec<u32> {
            field(name)
                .split_whitespace()
                .map(|v| v.parse().expect("an id"))
                .collect()
        };
        let caps = |name: &str| u64::from_str_radix(field(name), 16).expect("a capability mask");
        Self {
            uids: ids("Uid"),
            gids: ids("Gid"),
            groups: ids("Groups"),
            effective: caps("CapEff"),
            permitted: caps("CapPrm"),
            inheritable: caps("CapInh"),
            ambient: caps("CapAmb"),
            bounding: caps("CapBnd"),
            no_new_privs: field("NoNewPrivs") == "1",
        }
    }
}
