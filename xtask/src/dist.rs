//! `cargo xtask dist`: the Debian package, staged as the tree it installs and built with
//! `dpkg-deb`. Its dependencies come from `dpkg-shlibdeps`, its completions and manual pages
//! from the binary itself (`vnfpool completions`, `vnfpool man --out-dir`), so none of them
//! can drift from what is packaged.

use std::{
    fmt::Write as _,
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

/// The package's name, and the binary's.
const NAME: &str = "vnfpool";

/// The source tree (the workspace root).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// What the package installs from the source tree: (source, installed path, mode).
const FILES: &[(&str, &str, u32)] = &[
    (
        "packaging/vnfpool.service",
        "usr/lib/systemd/system/vnfpool.service",
        0o644,
    ),
    (
        "packaging/vnfpool.sysusers",
        "usr/lib/sysusers.d/vnfpool.conf",
        0o644,
    ),
    (
        "packaging/vnfpool.tmpfiles",
        "usr/lib/tmpfiles.d/vnfpool.conf",
        0o644,
    ),
    ("examples/pools.yaml", "etc/vnfpool/pools.yaml.example", 0o644),
    (
        "packaging/grafana/vnfpool.json",
        "usr/share/vnfpool/grafana/vnfpool.json",
        0o644,
    ),
    ("README.md", "usr/share/doc/vnfpool/README.md", 0o644),
    ("SECURITY.md", "usr/share/doc/vnfpool/SECURITY.md", 0o644),
    ("BENCHMARKS.md", "usr/share/doc/vnfpool/BENCHMARKS.md", 0o644),
];

/// The maintainer scripts (`packaging/debian/`).
const SCRIPTS: [&str; 3] = ["postinst", "prerm", "postrm"];

/// Completion scripts: (shell, installed path).
const COMPLETIONS: [(&str, &str); 3] = [
    ("bash", "usr/share/bash-completion/completions/vnfpool"),
    ("zsh", "usr/share/zsh/vendor-completions/_vnfpool"),
    ("fish", "usr/share/fish/vendor_completions.d/vnfpool.fish"),
];

/// Builds the release binary and the package; writes `vnfpool_VERSION_ARCH.deb` into
/// `out_dir` and returns its path.
pub fn run(cargo_bin: &str, out_dir: &Path) -> Result<PathBuf> {
    crate::cargo(
        cargo_bin,
        &[
            "build",
            "--release",
            "--locked",
            "-p",
            "vnfpool-daemon",
            "--bin",
            NAME,
        ],
    )?;
    let binary = crate::release_binary(NAME);
    let stage = out_dir.join("stage");
    if stage.exists() {
        fs::remove_dir_all(&stage).with_context(|| format!("removing {}", stage.display()))?;
    }
    fs::create_dir_all(out_dir).with_context(|| format!("making {}", out_dir.display()))?;

    let installed = stage.join("usr/bin").join(NAME);
    install(&binary, &installed, 0o755)?;
    // Symbols only (the eBPF object is data in .rodata and keeps its BTF): 23 MB → 18 MB.
    output(Command::new("strip").arg("--strip-unneeded").arg(&installed))?;
    for (from, to, mode) in FILES {
        install(&root().join(from), &stage.join(to), *mode)?;
    }
    for page in list_dir(&root().join("docs"))?
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
    {
        let name = page.file_name().context("a page's name")?;
        install(&page, &stage.join("usr/share/doc/vnfpool/docs").join(name), 0o644)?;
    }
    fs::create_dir_all(stage.join("usr/share/doc/vnfpool"))?;
    write(&stage.join("usr/share/doc/vnfpool/copyright"), copyright(), 0o644)?;
    for (shell, to) in COMPLETIONS {
        let script = output(Command::new(&binary).args(["completions", shell]))?;
        write(&stage.join(to), &script, 0o644)?;
    }
    let man = stage.join("usr/share/man/man1");
    output(Command::new(&binary).args(["man", "--out-dir"]).arg(&man))?;
    for page in list_dir(&man)? {
        fs::set_permissions(&page, fs::Permissions::from_mode(0o644))?;
        // -n: no name or time stamp in the header, so that the same page gives the same bytes.
        output(Command::new("gzip").args(["-9n"]).arg(&page))?;
    }

    let control = stage.join("DEBIAN");
    for script in SCRIPTS {
        install(
            &root().join("packaging/debian").join(script),
            &control.join(script),
            0o755,
        )?;
    }
    write(
        &control.join("conffiles"),
        "/etc/vnfpool/pools.yaml.example\n",
        0o644,
    )?;
    write(&control.join("md5sums"), &md5sums(&stage)?, 0o644)?;
    let arch = String::from_utf8(output(Command::new("dpkg").arg("--print-architecture"))?)?
        .trim()
        .to_owned();
    let version = env!("CARGO_PKG_VERSION");
    write(
        &control.join("control"),
        control_file(version, &arch, &depends(&binary)?, installed_kib(&stage)?),
        0o644,
    )?;
    // Directories as dpkg expects them whatever the umask was.
    for dir in walk(&stage)?.into_iter().filter(|p| p.is_dir()) {
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
    }

    let deb = out_dir.join(format!("{NAME}_{version}_{arch}.deb"));
    output(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zxz", "--build"])
            .arg(&stage)
            .arg(&deb),
    )?;
    fs::remove_dir_all(&stage).with_context(|| format!("removing {}", stage.display()))?;
    Ok(deb)
}

fn control_file(version: &str, arch: &str, depends: &str, installed_kib: u64) -> String {
    format!(
        "Package: {NAME}\n\
         Version: {version}\n\
         Architecture: {arch}\n\
         Maintainer: vnfpool developers <vnfpool@example.invalid>\n\
         Installed-Size: {installed_kib}\n\
         Depends: {depends}, systemd\n\
         Recommends: bpftool\n\
         Suggests: etcd-server, bird2\n\
         Section: net\n\
         Priority: optional\n\
         Homepage: https://example.invalid/vnfpool\n\
         Description: VNF pool manager with an XDP data plane\n \
         A pool of identical network-function instances behind one virtual address:\n \
         an XDP program steers each flow to a live element and keeps it there, and\n \
         the vnfpool daemon probes the elements and switches the data plane's\n \
         mapping atomically when one fails. The package installs the binary (its\n \
         eBPF program embedded), the systemd unit, completions and manual pages;\n \
         it does not start the daemon.\n"
    )
}

/// `libc6 (>= …), …` for the binary, from `dpkg-shlibdeps` (which wants a `debian/control` in
/// the directory it runs in).
fn depends(binary: &Path) -> Result<String> {
    // Removed on drop too, so that a failure on the way leaves nothing behind.
    let dir = tempfile::Builder::new()
        .prefix("vnfpool-shlibdeps-")
        .tempdir()
        .context("making a directory for dpkg-shlibdeps")?;
    fs::create_dir(dir.path().join("debian"))?;
    fs::write(
        dir.path().join("debian/control"),
        format!("Source: {NAME}\n\nPackage: {NAME}\nArchitecture: any\n"),
    )?;
    let printed = output(
        Command::new("dpkg-shlibdeps")
            .current_dir(dir.path())
            .arg("-O")
            .arg(binary),
    );
    let path = dir.path().to_owned();
    dir.close()
        .with_context(|| format!("removing {}", path.display()))?;
    let printed = String::from_utf8(printed?)?;
    printed
        .lines()
        .find_map(|l| l.strip_prefix("shlibs:Depends="))
        .map(str::to_owned)
        .with_context(|| format!("dpkg-shlibdeps printed no dependencies: {printed:?}"))
}

fn copyright() -> String {
    let mut text = String::from(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
         Upstream-Name: vnfpool\n\n\
         Files: *\n\
         Copyright: vnfpool developers\n",
    );
    let _ = writeln!(text, "License: {}", env!("CARGO_PKG_LICENSE"));
    text.push_str(
        " The eBPF program embedded in /usr/bin/vnfpool is licensed Dual MIT/GPL,\n \
         as the kernel requires of a program that calls GPL-only helpers.\n",
    );
    text
}

/// `md5sum`'s lines for every file of the package but its control files.
fn md5sums(stage: &Path) -> Result<String> {
    let mut files: Vec<String> = walk(stage)?
        .into_iter()
        .filter(|p| p.is_file() && !p.starts_with(stage.join("DEBIAN")))
        .map(|p| {
            p.strip_prefix(stage)
                .map(|rel| rel.to_string_lossy().into_owned())
        })
        .collect::<Result<_, _>>()?;
    files.sort();
    let sums = output(Command::new("md5sum").current_dir(stage).args(&files))?;
    Ok(String::from_utf8(sums)?)
}

/// The package's size installed, in KiB (what `dpkg-gencontrol` would write).
fn installed_kib(stage: &Path) -> Result<u64> {
    let mut bytes = 0;
    for p in walk(stage)? {
        if p.is_file() && !p.starts_with(stage.join("DEBIAN")) {
            bytes += p.metadata()?.len();
        }
    }
    Ok(bytes.div_ceil(1024))
}

fn install(from: &Path, to: &Path, mode: u32) -> Result<()> {
    if let Some(dir) = to.parent() {
        fs::create_dir_all(dir).with_context(|| format!("making {}", dir.display()))?;
    }
    fs::copy(from, to).with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn write(to: &Path, text: impl AsRef<[u8]>, mode: u32) -> Result<()> {
    if let Some(dir) = to.parent() {
        fs::create_dir_all(dir).with_context(|| format!("making {}", dir.display()))?;
    }
    fs::write(to, text).with_context(|| format!("writing {}", to.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn list_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut paths = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        paths.push(entry?.path());
    }
    paths.sort();
    Ok(paths)
}

/// Every path under `dir`, `dir` included.
fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    walkdir::WalkDir::new(dir)
        .sort_by_file_name()
        .into_iter()
        .map(|entry| Ok(entry?.into_path()))
        .collect()
}

/// Runs `command`; its standard output, or an error with what it printed on failure.
fn output(command: &mut Command) -> Result<Vec<u8>> {
    let out = command.output().with_context(|| format!("running {command:?}"))?;
    if !out.status.success() {
        bail!(
            "{command:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}
