//! The Debian package `cargo xtask dist` builds: its file list and modes, then installed into a
//! scratch root by dpkg itself (`dpkg --root`, maintainer scripts run chrootless against that
//! root) — the service user and the state directory made, `vnfpool --version` running from the
//! installed path, a second install (an upgrade) restarting nothing, a purge removing the state.

use std::{
    collections::BTreeMap,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    process::{Command, Output},
};

use vnfpool_tests::daemon::Scratch;

/// The workspace root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(command: &mut Command) -> Output {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(command: &mut Command) -> String {
    String::from_utf8(run(command).stdout).expect("utf-8")
}

/// `cargo xtask dist --out-dir <dir>`; the package's path.
fn build_package(dir: &Path) -> PathBuf {
    let mut cargo = Command::new(env!("CARGO"));
    // What cargo set for this test process would make the nested build differ from a build
    // typed in a shell (xtask's own `cargo` helper says which and why).
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(|n| {
            n.starts_with("CARGO_PKG_")
                || matches!(
                    n,
                    "CARGO_MANIFEST_DIR"
                        | "CARGO_MANIFEST_PATH"
                        | "CARGO_CRATE_NAME"
                        | "CARGO_BIN_NAME"
                        | "CARGO_PRIMARY_PACKAGE"
                )
        }) {
            cargo.env_remove(name);
        }
    }
    let printed = stdout(
        cargo
            .current_dir(root())
            .args([
                "run",
                "--locked",
                "--quiet",
                "-p",
                "xtask",
                "--",
                "dist",
                "--out-dir",
            ])
            .arg(dir),
    );
    let deb = PathBuf::from(printed.lines().last().expect("the package's path").trim());
    assert!(deb.is_file(), "{} is the package", deb.display());
    deb
}

/// Every subcommand of `vnfpool`, for the manual pages expected.
const SUBCOMMANDS: [&str; 11] = [
    "agent",
    "completions",
    "daemon",
    "decap",
    "drain",
    "man",
    "reload",
    "status",
    "undrain",
    "validate",
    "watch",
];

/// The files the package must hold, with their modes (all owned by root).
fn expected_files() -> BTreeMap<String, &'static str> {
    let mut files: BTreeMap<String, &'static str> = [
        ("/usr/bin/vnfpool", "-rwxr-xr-x"),
        ("/usr/lib/systemd/system/vnfpool.service", "-rw-r--r--"),
        ("/usr/lib/sysusers.d/vnfpool.conf", "-rw-r--r--"),
        ("/usr/lib/tmpfiles.d/vnfpool.conf", "-rw-r--r--"),
        ("/etc/vnfpool/pools.yaml.example", "-rw-r--r--"),
        ("/usr/share/vnfpool/grafana/vnfpool.json", "-rw-r--r--"),
        ("/usr/share/bash-completion/completions/vnfpool", "-rw-r--r--"),
        ("/usr/share/zsh/vendor-completions/_vnfpool", "-rw-r--r--"),
        ("/usr/share/fish/vendor_completions.d/vnfpool.fish", "-rw-r--r--"),
        ("/usr/share/man/man1/vnfpool.1.gz", "-rw-r--r--"),
        ("/usr/share/doc/vnfpool/copyright", "-rw-r--r--"),
        ("/usr/share/doc/vnfpool/README.md", "-rw-r--r--"),
        ("/usr/share/doc/vnfpool/SECURITY.md", "-rw-r--r--"),
        ("/usr/share/doc/vnfpool/BENCHMARKS.md", "-rw-r--r--"),
    ]
    .into_iter()
    .map(|(p, m)| (p.to_owned(), m))
    .collect();
    for name in SUBCOMMANDS {
        files.insert(format!("/usr/share/man/man1/vnfpool-{name}.1.gz"), "-rw-r--r--");
    }
    for page in std::fs::read_dir(root().join("docs")).expect("docs/") {
        let page = page.expect("an entry").path();
        if page.extension().is_some_and(|e| e == "md") {
            let name = page.file_name().expect("a name").to_string_lossy().into_owned();
            files.insert(format!("/usr/share/doc/vnfpool/docs/{name}"), "-rw-r--r--");
        }
    }
    files
}

/// `dpkg --root <root> …` as a chrootless install into a scratch root: the maintainer scripts
/// run on this host with `DPKG_ROOT` set (they prefix their paths with it), and the package's
/// dependencies (libc6, systemd) are this host's, not the empty root's.
fn dpkg(root: &Path, args: &[&str]) -> String {
    stdout(
        Command::new("dpkg")
            .arg(format!("--root={}", root.display()))
            .args(["--force-script-chrootless", "--force-depends", "--log=/dev/null"])
            .args(args),
    )
}

#[test]
fn the_package_installs_into_a_scratch_root_upgrades_without_a_restart_and_purges() {
    let scratch = Scratch::new();
    let deb = build_package(&scratch.path.join("dist"));

    // The file list and every mode and owner, as dpkg-deb reads them from the archive.
    let listing = stdout(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    let mut files = BTreeMap::new();
    for line in listing.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let (mode, owner, path) = (cols[0], cols[1], cols[5].trim_start_matches('.'));
        assert_eq!(owner, "root/root", "{line}");
        if mode.starts_with('d') {
            assert_eq!(mode, "drwxr-xr-x", "{line}");
        } else {
            files.insert(path.to_owned(), mode);
        }
    }
    let expected = expected_files();
    assert_eq!(
        files.iter().map(|(p, m)| (p.clone(), *m)).collect::<Vec<_>>(),
        expected.iter().map(|(p, m)| (p.clone(), *m)).collect::<Vec<_>>(),
        "the package's files and modes"
    );
    let control = stdout(Command::new("dpkg-deb").arg("--field").arg(&deb));
    for field in ["Package: vnfpool\n", "Depends: libc6 (>= ", "Installed-Size: "] {
        assert!(control.contains(field), "{field:?} in\n{control}");
    }
    let conffiles = stdout(
        Command::new("dpkg-deb")
            .args(["--info"])
            .arg(&deb)
            .arg("conffiles"),
    );
    assert_eq!(conffiles, "/etc/vnfpool/pools.yaml.example\n");
    // No maintainer script starts, restarts or enables the daemon: the operator does.
    let scripts = scratch.path.join("control");
    run(Command::new("dpkg-deb").arg("--control").arg(&deb).arg(&scripts));
    for script in ["postinst", "prerm", "postrm"] {
        let path = scripts.join(script);
        let text = std::fs::read_to_string(&path).expect("a maintainer script");
        assert_eq!(path.metadata().expect("stat").permissions().mode() & 0o777, 0o755);
        for line in text.lines().map(str::trim).filter(|l| !l.starts_with('#')) {
            assert!(
                !line.contains("deb-systemd-invoke") && !line.contains("invoke-rc.d"),
                "{script}: {line}"
            );
            // Every systemctl the script runs (a quoted one is a message to the operator).
            for (at, _) in line.match_indices("systemctl ") {
                if line[..at].ends_with('\'') {
                    continue;
                }
                let verb = line[at..].split_whitespace().nth(1);
                assert!(
                    matches!(verb, Some("daemon-reload" | "stop")),
                    "{script} runs systemctl {verb:?}: {line}"
                );
            }
        }
    }

    // Installed by dpkg into an empty root.
    let target = scratch.path.join("root");
    for dir in [
        "var/lib/dpkg/info",
        "var/lib/dpkg/updates",
        "var/lib/dpkg/triggers",
    ] {
        std::fs::create_dir_all(target.join(dir)).expect("dpkg's database");
    }
    for file in ["var/lib/dpkg/status", "var/lib/dpkg/available"] {
        std::fs::write(target.join(file), "").expect("dpkg's database");
    }
    let deb_arg = deb.to_str().expect("a UTF-8 path");
    let said = dpkg(&target, &["--install", deb_arg]);
    assert!(said.contains("installed, not started"), "{said}");
    let status = dpkg(&target, &["--status", "vnfpool"]);
    assert!(status.contains("Status: install ok installed"), "{status}");
    for (path, mode) in &expected {
        let meta = target
            .join(path.trim_start_matches('/'))
            .metadata()
            .unwrap_or_else(|e| panic!("{path} installed: {e}"));
        let want = if *mode == "-rwxr-xr-x" { 0o755 } else { 0o644 };
        assert_eq!(meta.permissions().mode() & 0o7777, want, "{path}");
        assert_eq!((meta.uid(), meta.gid()), (0, 0), "{path}");
    }
    let version = stdout(Command::new(target.join("usr/bin/vnfpool")).arg("--version"));
    assert_eq!(version.trim(), format!("vnfpool {}", env!("CARGO_PKG_VERSION")));
    // The service user (no login) and its state directory, 0700, its own.
    let passwd = std::fs::read_to_string(target.join("etc/passwd")).expect("the root's passwd");
    let user = passwd
        .lines()
        .find(|l| l.starts_with("vnfpool:"))
        .unwrap_or_else(|| panic!("no vnfpool user in\n{passwd}"));
    let fields: Vec<&str> = user.split(':').collect();
    assert_eq!(fields[5..], ["/var/lib/vnfpool", "/usr/sbin/nologin"], "{user}");
    let uid: u32 = fields[2].parse().expect("a uid");
    let gid: u32 = fields[3].parse().expect("a gid");
    let state = target
        .join("var/lib/vnfpool")
        .metadata()
        .expect("the state directory");
    assert!(state.is_dir());
    assert_eq!(state.permissions().mode() & 0o7777, 0o700);
    assert_eq!(
        (state.uid(), state.gid()),
        (uid, gid),
        "owned by the service user"
    );

    // Installed again over itself: dpkg's upgrade path (configure with the old version). The
    // state stays, and the daemon is left to the operator.
    std::fs::write(target.join("var/lib/vnfpool/state.json"), "{}").expect("a state file");
    let said = dpkg(&target, &["--install", deb_arg]);
    assert!(said.contains("still runs the old binary"), "{said}");
    assert!(
        target.join("var/lib/vnfpool/state.json").is_file(),
        "an upgrade keeps the state"
    );

    // Purged: the files and the state go; the user stays (Debian leaves system users).
    dpkg(&target, &["--purge", "vnfpool"]);
    assert!(!target.join("usr/bin/vnfpool").exists());
    assert!(
        !target.join("var/lib/vnfpool").exists(),
        "purge removes the state"
    );
    let passwd = std::fs::read_to_string(target.join("etc/passwd")).expect("the root's passwd");
    assert!(passwd.contains("vnfpool:"), "{passwd}");
}
