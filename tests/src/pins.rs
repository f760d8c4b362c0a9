//! A unique pin directory on the bpffs, removed with everything in it on drop.

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// `/sys/fs/bpf/vnfp-{pid}-{n}` (see [`crate::netns::name_prefix`]), created empty; its pins
/// are removed on drop.
pub struct PinDir {
    path: PathBuf,
}

impl PinDir {
    /// Creates a fresh directory.
    #[must_use]
    pub fn new() -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = PathBuf::from(format!(
            "/sys/fs/bpf/{}-{}-{n}",
            crate::netns::name_prefix(),
            std::process::id()
        ));
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        Self { path }
    }

    /// The directory.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Default for PinDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        // A bpffs directory holds only pins (files): unlinking them unpins.
        if let Err(e) = std::fs::remove_dir_all(&self.path)
            && !std::thread::panicking()
        {
            panic!("removing {}: {e}", self.path.display());
        }
    }
}
