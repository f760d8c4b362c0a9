//! The module boundaries the design relies on, checked on the source: aya only behind the
//! data-plane seam, the model pure, the API and the controller apart.

use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`, with its path relative to `src/`.
fn sources(dir: &Path, src: &Path, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).expect("source dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, src, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path
                .strip_prefix(src)
                .expect("under src")
                .to_string_lossy()
                .into_owned();
            out.push((rel, std::fs::read_to_string(&path).expect("source")));
        }
    }
}

fn all() -> Vec<(String, String)> {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    sources(&src, &src, &mut out);
    assert!(out.len() > 20, "found the sources");
    out
}

/// Lines of `text` that are code, not comments, up to its tests.
fn code(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .take_while(|(_, l)| l.trim() != "#[cfg(test)]")
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
        .map(|(i, l)| (i + 1, l))
}

#[test]
fn only_the_aya_data_plane_uses_aya() {
    let allowed = [
        "dataplane/bpf.rs",
        "dataplane/counters.rs",
        // The element-side decapsulation program of `vnfpool decap`.
        "dataplane/decap.rs",
        "dataplane/flows.rs",
        "dataplane/mmap.rs",
        // The program's drop log (aya-log's ring), read by program id.
        "dataplane/xdp_log.rs",
    ];
    let offenders: Vec<String> = all()
        .iter()
        .filter(|(path, _)| !allowed.contains(&path.as_str()))
        .flat_map(|(path, text)| {
            code(text)
                .filter(|(_, l)| l.contains("aya::") || l.contains("use aya"))
                .map(move |(n, l)| format!("{path}:{n}: {}", l.trim()))
        })
        .collect();
    assert!(
        offenders.is_empty(),
        "aya outside the data plane:\n{}",
        offenders.join("\n")
    );
}

#[test]
fn the_model_imports_nothing_outside_the_model_and_the_abi() {
    let offenders: Vec<String> = all()
        .iter()
        .filter(|(path, _)| path.starts_with("model/"))
        .flat_map(|(path, text)| {
            code(text)
                .filter(|(_, l)| {
                    l.match_indices("crate::")
                        .any(|(at, _)| !l[at..].starts_with("crate::model"))
                        || l.contains("tokio")
                        || l.contains("std::time::Instant")
                })
                .map(move |(n, l)| format!("{path}:{n}: {}", l.trim()))
        })
        .collect();
    assert!(
        offenders.is_empty(),
        "the model reaches out:\n{}",
        offenders.join("\n")
    );
}

#[test]
fn the_controller_knows_nothing_of_http_and_the_api_nothing_of_its_insides() {
    let mut offenders = Vec::new();
    for (path, text) in all() {
        for (n, l) in code(&text) {
            let controller = path.starts_with("controller/");
            if controller
                && (l.contains("axum")
                    || l.contains("hyper")
                    || l.contains("crate::api")
                    || l.contains("StatusCode"))
            {
                offenders.push(format!("{path}:{n}: {}", l.trim()));
            }
            let outside = path.starts_with("api/") || path.starts_with("control/") || path == "metrics.rs";
            if outside && (l.contains("controller::Controller") || l.contains("reconcile")) {
                offenders.push(format!("{path}:{n}: {}", l.trim()));
            }
        }
    }
    assert!(offenders.is_empty(), "layering broken:\n{}", offenders.join("\n"));
}
