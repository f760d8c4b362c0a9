//! `cargo xtask fuzz`: every cargo-fuzz target of `fuzz/`, one after the other, for a bounded
//! time each.
//!
//! Each target starts from its seed corpus (`fuzz/corpus/<target>`, committed, never written
//! to) and from the inputs earlier runs found (`fuzz/target/corpus/<target>`, kept between
//! runs, not committed). libFuzzer's output goes to `fuzz/target/logs/<target>.log`; a crash
//! leaves its input in `fuzz/artifacts/<target>/`, and the task ends non-zero naming it.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

/// An input slower than this is reported as a crash (libFuzzer's `-timeout`), in seconds.
const INPUT_TIMEOUT: u32 = 10;

/// Options of both `cargo fuzz build` and `cargo fuzz run` (the same, or the run rebuilds).
/// Beyond cargo-fuzz's defaults (release, debug assertions, AddressSanitizer): 16 codegen units
/// instead of 1, so that code generation of the daemon crate, most of the build, may use both
/// cores. On a busy 2-core machine both took about 15 minutes from scratch.
const BUILD_OPTIONS: &[&str] = &["--codegen-units", "16"];

fn log(line: &str) {
    eprintln!("[fuzz] {line}");
}

/// `cargo +nightly fuzz …` at the repository's root, without the variables `cargo run` set
/// for xtask (see `set_by_cargo_run`).
fn cargo_fuzz(root: &Path) -> Command {
    let mut command = Command::new("cargo");
    command.current_dir(root).args(["+nightly", "fuzz"]);
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(super::set_by_cargo_run) {
            command.env_remove(name);
        }
    }
    command
}

fn files(dir: &Path) -> BTreeSet<PathBuf> {
    fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| Some(e.ok()?.path())).collect())
        .unwrap_or_default()
}

/// The value after the last `key` in libFuzzer's output, like `stat::number_of_executed_units:`.
fn last_number(output: &str, key: &str) -> Option<u64> {
    let at = output.rfind(key)? + key.len();
    // `corp: 463/12Kb` counts inputs before the slash.
    output[at..]
        .split_whitespace()
        .next()?
        .split('/')
        .next()?
        .parse()
        .ok()
}

pub fn run(seconds: u32, filter: Option<&str>) -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask's parent directory")?
        .to_owned();
    let fuzz = root.join("fuzz");
    let targets = list(&root, filter)?;
    for target in &targets {
        if files(&fuzz.join("corpus").join(target)).is_empty() {
            bail!("fuzz target {target} has no seed corpus in fuzz/corpus/{target}");
        }
    }
    build(&root, &targets, filter.is_some())?;

    let logs = fuzz.join("target").join("logs");
    fs::create_dir_all(&logs).context("creating fuzz/target/logs")?;
    let mut failed = Vec::new();
    for (i, target) in targets.iter().enumerate() {
        log(&format!("{}/{} {target}: {seconds} s", i + 1, targets.len()));
        if !run_one(&root, target, seconds, &logs)? {
            failed.push(target.as_str());
        }
    }
    if !failed.is_empty() {
        bail!(
            "fuzz targets that crashed: {} (logs in {})",
            failed.join(", "),
            logs.display()
        );
    }
    log(&format!("{} targets, {seconds} s each: no crash", targets.len()));
    Ok(())
}

/// The targets `cargo fuzz list` names, those containing `filter` if given.
fn list(root: &Path, filter: Option<&str>) -> Result<Vec<String>> {
    let listed = cargo_fuzz(root)
        .arg("list")
        .stderr(Stdio::inherit())
        .output()
        .context("running `cargo +nightly fuzz list` (is cargo-fuzz installed? scripts/setup.sh)")?;
    if !listed.status.success() {
        bail!("`cargo +nightly fuzz list` failed: {}", listed.status);
    }
    let targets: Vec<String> = String::from_utf8(listed.stdout)
        .context("target names")?
        .lines()
        .map(str::trim)
        .filter(|t| !t.is_empty() && filter.is_none_or(|f| t.contains(f)))
        .map(str::to_owned)
        .collect();
    if targets.is_empty() {
        bail!("no fuzz target matches {filter:?}");
    }
    Ok(targets)
}

/// Builds `targets` (all of them in one build unless `some`: `cargo fuzz build` takes one
/// target or all), with the options `run_one` runs them with.
fn build(root: &Path, targets: &[String], some: bool) -> Result<()> {
    log(&format!(
        "building {} (nightly, libFuzzer, AddressSanitizer, debug assertions)",
        targets.join(", ")
    ));
    let started = std::time::Instant::now();
    let builds: Vec<Option<&String>> = if some {
        targets.iter().map(Some).collect()
    } else {
        vec![None]
    };
    for target in builds {
        let status = cargo_fuzz(root)
            .arg("build")
            .args(BUILD_OPTIONS)
            .args(target)
            .status()
            .context("running cargo fuzz build")?;
        if !status.success() {
            bail!("building the fuzz targets failed: {status}");
        }
    }
    log(&format!("built in {} s", started.elapsed().as_secs()));
    Ok(())
}

/// Runs `target` for `seconds`; whether it found nothing.
fn run_one(root: &Path, target: &str, seconds: u32, logs: &Path) -> Result<bool> {
    let fuzz = root.join("fuzz");
    let seeds = fuzz.join("corpus").join(target);
    let found = fuzz.join("target").join("corpus").join(target);
    fs::create_dir_all(&found).with_context(|| format!("creating {}", found.display()))?;
    let artifacts = fuzz.join("artifacts").join(target);
    let before = files(&artifacts);
    let log_path = logs.join(format!("{target}.log"));
    let log_file = fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    log(&format!(
        "    from {} seeds and {} inputs found before; output in {}",
        files(&seeds).len(),
        files(&found).len(),
        log_path.strip_prefix(root).unwrap_or(&log_path).display()
    ));
    // The first corpus directory is where libFuzzer adds what it finds.
    let status = cargo_fuzz(root)
        .arg("run")
        .args(BUILD_OPTIONS)
        .arg(target)
        .arg(&found)
        .arg(&seeds)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-timeout={INPUT_TIMEOUT}"))
        .arg("-print_final_stats=1")
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .status()
        .context("running cargo fuzz run")?;
    let output = fs::read_to_string(&log_path).unwrap_or_default();
    if status.success() {
        let runs = last_number(&output, "stat::number_of_executed_units:").unwrap_or(0);
        let per_s = last_number(&output, "stat::average_exec_per_sec:").unwrap_or(0);
        let cov = last_number(&output, " cov: ").unwrap_or(0);
        let corpus = last_number(&output, " corp: ").unwrap_or(0);
        log(&format!(
            "    no crash: {runs} inputs ({per_s}/s), {cov} edges covered, corpus of {corpus}"
        ));
        return Ok(true);
    }
    let tail: Vec<&str> = output.lines().rev().take(60).collect();
    for line in tail.into_iter().rev() {
        eprintln!("    | {line}");
    }
    let new: Vec<PathBuf> = files(&artifacts).difference(&before).cloned().collect();
    if new.is_empty() {
        log(&format!("{target}: failed ({status}) and saved no input"));
    }
    for artifact in &new {
        let shown = artifact.strip_prefix(root).unwrap_or(artifact).display();
        log(&format!(
            "{target}: CRASH, input saved in {shown}; reproduce: cargo +nightly fuzz run {target} {shown}; \
             shrink: cargo +nightly fuzz tmin {target} {shown}"
        ));
    }
    Ok(false)
}
