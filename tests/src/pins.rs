//! A unique pin directory on the bpffs, removed with everything in it on drop.

use std::path::{Path, PathBuf};

/// A directory `/sys/fs/bpf/vnfp-{pid}-…` (see [`crate::netns::name_prefix`]), created empty; its pins
/// are removed on drop.
pub struct PinDir {
    path: PathBuf,
    /// `None` only while dropping.
    dir: Option<tempfile::TempDir>,
}

impl PinDir {
    /// Creates a fresh directory.
    #[must_use]
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!(
                "{}-{}-",
                crate::netns::name_prefix(),
                std::process::id()
            ))
            .tempdir_in("/sys/fs/bpf")
            .unwrap_or_else(|e| panic!("creating a directory in /sys/fs/bpf: {e}"));
        Self {
            path: dir.path().to_owned(),
            dir: Some(dir),
        }
    }

    /// The directory.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// `bpftool map dump pinned <path>`: its output (fields by name, from the map's BTF).
///
/// # Panics
/// When bpftool cannot run or fails.
#[must_use]
pub fn bpftool_dump(path: &Path) -> String {
    let out = std::process::Command::new("bpftool")
        .args(["map", "dump", "pinned"])
        .arg(path)
        .output()
        .expect("run bpftool (installed by scripts/setup.sh)");
    assert!(
        out.status.success(),
        "bpftool map dump {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Default for PinDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        // A bpffs directory holds only pins (files): unlinking them unpins. Removed by `close`
        // rather than by the `TempDir`'s own drop, which would hide a failure: pins left behind
        // keep their maps (and whatever holds them) alive.
        if let Some(dir) = self.dir.take()
            && let Err(e) = dir.close()
            && !std::thread::panicking()
        {
            panic!("removing {}: {e}", self.path.display());
        }
    }
}
