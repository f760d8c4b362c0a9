//! `vnfpool completions SHELL` and `vnfpool man [COMMAND]`: generated from the clap definitions
//! in [`crate::cli`], so they cannot drift from the command line.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use clap::CommandFactory as _;
use clap_complete::Shell;

use crate::cli::Cli;

/// The name the scripts and pages are for.
const BIN: &str = "vnfpool";

/// Errors of `vnfpool man`.
#[derive(Debug, thiserror::Error)]
pub enum ManualError {
    #[error("no command named {name:?}; the pages are: {}", known.join(", "))]
    NoSuchCommand { name: String, known: Vec<String> },
    #[error("writing the manual page")]
    Write {
        #[source]
        source: std::io::Error,
    },
    #[error("writing {}", path.display())]
    WriteFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Writes the completion script for `shell`.
pub fn completions(shell: Shell, out: &mut dyn Write) {
    clap_complete::generate(shell, &mut Cli::command(), BIN, out);
}

/// Writes vnfpool(1), or with `command` that subcommand's own page (`vnfpool-watch(1)`, which
/// vnfpool(1) refers to).
pub fn man(command: Option<&str>, out: &mut dyn Write) -> Result<(), ManualError> {
    // As `clap_mangen::generate_to` does: no `help` subcommand, which has no page of its own.
    let mut cli = Cli::command().disable_help_subcommand(true);
    cli.build();
    let page = match command {
        None => cli,
        Some(name) => cli
            .find_subcommand(name)
            .cloned()
            .ok_or_else(|| ManualError::NoSuchCommand {
                name: name.to_owned(),
                known: cli.get_subcommands().map(|c| c.get_name().to_owned()).collect(),
            })?,
    };
    // The source of every page is vnfpool's (a subcommand has no version of its own).
    let source = format!("{BIN} {}", env!("CARGO_PKG_VERSION"));
    clap_mangen::Man::new(page)
        .source(source)
        .render(out)
        .map_err(|source| ManualError::Write { source })
}

/// Writes vnfpool(1) and every subcommand's page into `dir` (made if missing) as
/// `vnfpool.1` and `vnfpool-COMMAND.1`, the names vnfpool(1) refers to; returns their paths.
pub fn write_pages(dir: &Path) -> Result<Vec<PathBuf>, ManualError> {
    let write_err = |path: &Path| {
        let path = path.to_owned();
        move |source| ManualError::WriteFile { path, source }
    };
    std::fs::create_dir_all(dir).map_err(write_err(dir))?;
    let commands = Cli::command()
        .disable_help_subcommand(true)
        .get_subcommands()
        .map(|c| c.get_name().to_owned())
        .collect::<Vec<_>>();
    let mut written = Vec::new();
    for command in std::iter::once(None).chain(commands.iter().map(|c| Some(c.as_str()))) {
        let path = dir.join(match command {
            None => format!("{BIN}.1"),
            Some(name) => format!("{BIN}-{name}.1"),
        });
        let mut page = Vec::new();
        man(command, &mut page)?;
        std::fs::write(&path, page).map_err(write_err(&path))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subcommands() -> Vec<String> {
        Cli::command()
            .get_subcommands()
            .map(|c| c.get_name().to_owned())
            .collect()
    }

    #[test]
    fn every_subcommand_is_listed() {
        let names = subcommands();
        for expected in [
            "daemon",
            "decap",
            "validate",
            "status",
            "watch",
            "drain",
            "undrain",
            "reload",
            "completions",
            "man",
        ] {
            assert!(names.iter().any(|n| n == expected), "{expected} in {names:?}");
        }
    }

    #[test]
    fn the_bash_completion_offers_every_subcommand() {
        let mut out = Vec::new();
        completions(Shell::Bash, &mut out);
        let script = String::from_utf8(out).expect("utf-8");
        assert!(script.contains("complete -F _vnfpool"), "{script}");
        // The words offered after `vnfpool`.
        let offered = script
            .lines()
            .find(|l| l.trim_start().starts_with("opts=\"") && l.contains("daemon"))
            .expect("the top-level opts line");
        for name in subcommands() {
            assert!(
                offered
                    .split(|c: char| c == '"' || c.is_whitespace())
                    .any(|w| w == name),
                "{name} not offered: {offered}"
            );
        }
        // And each has its own completion case (`vnfpool watch --<TAB>`).
        for name in subcommands() {
            assert!(script.contains(&format!("vnfpool,{name})")), "no case for {name}");
        }
    }

    #[test]
    fn zsh_and_fish_completions_are_generated_too() {
        for shell in [Shell::Zsh, Shell::Fish] {
            let mut out = Vec::new();
            completions(shell, &mut out);
            let script = String::from_utf8(out).expect("utf-8");
            assert!(
                script.contains("watch") && script.contains("interval"),
                "{shell}: {script}"
            );
        }
    }

    #[test]
    fn the_man_page_is_roff_naming_every_subcommand() {
        let mut out = Vec::new();
        man(None, &mut out).expect("renders");
        let page = String::from_utf8(out).expect("utf-8");
        assert!(page.contains("\n.TH vnfpool 1 "), "{page}");
        assert!(page.contains(".SH SUBCOMMANDS"), "{page}");
        for name in subcommands() {
            assert!(
                page.contains(&format!("vnfpool\\-{name}(1)")),
                "{name} missing:\n{page}"
            );
        }
    }

    #[test]
    fn every_page_vnfpool_1_refers_to_is_written() {
        let tmp = tempfile::Builder::new()
            .prefix("vnfpool-man-")
            .tempdir()
            .expect("a temporary directory");
        // Not there yet, as `vnfpool man --out-dir` may be given it: `write_pages` makes it.
        let dir = tmp.path().join("man1");
        let written = write_pages(&dir).expect("writes");
        let names: Vec<String> = written
            .iter()
            .map(|p| p.file_name().expect("a file").to_string_lossy().into_owned())
            .collect();
        let mut top = Vec::new();
        man(None, &mut top).expect("renders");
        let top = String::from_utf8(top).expect("utf-8");
        for name in subcommands() {
            assert!(
                top.contains(&format!("vnfpool\\-{name}(1)")),
                "vnfpool(1) refers to {name}"
            );
            let file = format!("vnfpool-{name}.1");
            assert!(names.contains(&file), "{file} in {names:?}");
            let page = std::fs::read_to_string(dir.join(&file)).expect("readable");
            assert!(
                page.contains(&format!("\n.TH vnfpool-{name} 1 ")),
                "{file}: {page}"
            );
        }
        assert!(names.contains(&"vnfpool.1".to_owned()));
        assert_eq!(names.len(), subcommands().len() + 1, "{names:?}");
        tmp.close().expect("removed");
    }

    #[test]
    fn a_subcommand_has_its_own_page_with_its_options() {
        let mut out = Vec::new();
        man(Some("watch"), &mut out).expect("renders");
        let page = String::from_utf8(out).expect("utf-8");
        assert!(page.contains("\n.TH vnfpool-watch 1  \"vnfpool 0."), "{page}");
        assert!(page.contains(".SH OPTIONS"), "{page}");
        assert!(page.contains("\\-\\-interval"), "{page}");
        let err = man(Some("explode"), &mut Vec::new()).expect_err("no such page");
        assert!(
            matches!(&err, ManualError::NoSuchCommand { known, .. } if known.iter().any(|k| k == "watch")),
            "{err}"
        );
    }
}
