//! Persisted pool state (roles, drain deadlines, failover history): one JSON document in the
//! state directory, replaced atomically. A crash at any instant leaves either the previous
//! document or the new one, never a torn one: the new one is written to a temporary file in
//! the same directory, flushed to disk, renamed over the old one, and the directory is flushed
//! so the rename itself survives a power loss.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write as _},
    path::{Path, PathBuf},
};

use serde::{Serialize, de::DeserializeOwned};

/// File name of the state document in the state directory.
pub const STATE_FILE: &str = "state.json";

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{}: {what}", path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{}: not a state document this version can read", path.display())]
    Decode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// The state directory could be read or replaced by someone else.
    #[error(
        "{}: {why}; the state holds heartbeat keys and slot numbers: give the directory to the daemon's user only (chown, chmod 0700)",
        path.display()
    )]
    Unsafe { path: PathBuf, why: String },
}

/// The state document of one daemon.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// A store in `dir` (created, mode 0700, when missing). An existing directory must belong
    /// to this process's user and be writable by no one else.
    ///
    /// # Errors
    /// When the directory cannot be created, or is not safe.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _};
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| StoreError::Io {
                path: dir.to_owned(),
                what: "creating the state directory",
                source,
            })?;
        let meta = fs::symlink_metadata(dir).map_err(|source| StoreError::Io {
            path: dir.to_owned(),
            what: "reading the state directory's owner and mode",
            source,
        })?;
        let unsafe_dir = |why: String| {
            Err(StoreError::Unsafe {
                path: dir.to_owned(),
                why,
            })
        };
        if !meta.is_dir() {
            return unsafe_dir("not a directory (a symbolic link?)".to_owned());
        }
        let me = rustix::process::geteuid().as_raw();
        if meta.uid() != me {
            return unsafe_dir(format!(
                "owned by uid {}, the daemon runs as uid {me}",
                meta.uid()
            ));
        }
        if meta.mode() & 0o022 != 0 {
            return unsafe_dir(format!(
                "mode {:o}: writable by its group or by others",
                meta.mode() & 0o7777
            ));
        }
        Ok(Self { dir: dir.to_owned() })
    }

    /// Moves an unreadable state document aside as `state.json.bad-<unix seconds>`, so that the
    /// daemon can start from probes without losing it; returns where it went.
    ///
    /// # Errors
    /// When the rename fails.
    pub fn move_aside(&self) -> Result<PathBuf, StoreError> {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let aside = self.dir.join(format!("{STATE_FILE}.bad-{secs}"));
        fs::rename(self.path(), &aside).map_err(|source| StoreError::Io {
            path: self.path(),
            what: "moving aside",
            source,
        })?;
        Ok(aside)
    }

    /// Path of the state document.
    #[must_use]
    pub fn path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// The saved state, or `None` when nothing was saved yet.
    ///
    /// # Errors
    /// When the document cannot be read or decoded (the caller decides whether to start fresh).
    pub fn load<T: DeserializeOwned>(&self) -> Result<Option<T>, StoreError> {
        let path = self.path();
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StoreError::Io {
                    path,
                    what: "reading",
                    source,
                });
            }
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| StoreError::Decode { path, source })
    }

    /// Replaces the saved state with `state`, crash-safely (see the module docs).
    ///
    /// # Errors
    /// When any step fails; the previous document is then still in place.
    pub fn save<T: Serialize>(&self, state: &T) -> Result<(), StoreError> {
        self.save_bytes(&encode(state))
    }

    /// Replaces the saved state with `bytes` (made by [`encode`]), crash-safely.
    ///
    /// # Errors
    /// When any step fails; the previous document is then still in place.
    pub fn save_bytes(&self, bytes: &[u8]) -> Result<(), StoreError> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = self.path();
        let tmp = self.dir.join(format!(".{STATE_FILE}.tmp"));
        let io = |what, source| StoreError::Io {
            path: tmp.clone(),
            what,
            source,
        };
        // A leftover of a crash, or anything planted there, goes: the name itself is removed,
        // never followed. The document holds the heartbeat keys of registered elements: a new
        // file, owner only.
        match fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io("removing a leftover", e)),
            _ => {}
        }
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(i32::try_from(rustix::fs::OFlags::NOFOLLOW.bits()).expect("a small flag"))
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| io("creating", e))?;
        f.write_all(bytes).map_err(|e| io("writing", e))?;
        f.sync_all().map_err(|e| io("flushing", e))?;
        drop(f);
        fs::rename(&tmp, &path).map_err(|source| StoreError::Io {
            path: path.clone(),
            what: "replacing",
            source,
        })?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|source| StoreError::Io {
                path: self.dir.clone(),
                what: "flushing the directory",
                source,
            })
    }
}

/// The document [`Store::save_bytes`] writes for `state`.
#[must_use]
pub fn encode<T: Serialize>(state: &T) -> Vec<u8> {
    serde_json::to_vec_pretty(state).expect("pool state serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state directory that does not exist yet (`Store::open` makes it, as the daemon's first
    /// start does), in a fresh temporary directory removed, with it, when dropped.
    struct StateDir {
        path: PathBuf,
        /// Held for its drop, which removes it and the state directory in it.
        _tmp: tempfile::TempDir,
    }
    impl StateDir {
        fn new(tag: &str) -> Self {
            let tmp = tempfile::Builder::new()
                .prefix(&format!("vnfp-store-{tag}-"))
                .tempdir()
                .expect("a temporary directory");
            Self {
                path: tmp.path().join("state"),
                _tmp: tmp,
            }
        }
    }

    #[test]
    fn saves_and_loads_and_nothing_before_the_first_save() {
        let dir = StateDir::new("roundtrip");
        let store = Store::open(&dir.path).expect("open");
        assert_eq!(store.load::<Vec<u32>>().expect("load"), None);
        store.save(&vec![1u32, 2, 3]).expect("save");
        store.save(&vec![4u32]).expect("save again");
        assert_eq!(store.load::<Vec<u32>>().expect("load"), Some(vec![4]));
        let names: Vec<_> = fs::read_dir(&dir.path)
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from(STATE_FILE)],
            "no temporary file left behind"
        );
    }

    #[test]
    fn a_leftover_temporary_file_from_a_crash_is_ignored_and_replaced() {
        let dir = StateDir::new("crash");
        let store = Store::open(&dir.path).expect("open");
        store.save(&"good").expect("save");
        // A crash between writing the temporary file and the rename leaves it behind, torn.
        fs::write(dir.path.join(format!(".{STATE_FILE}.tmp")), b"{\"tor").expect("torn temp");
        assert_eq!(store.load::<String>().expect("load").as_deref(), Some("good"));
        store.save(&"next").expect("save over the leftover");
        assert_eq!(store.load::<String>().expect("load").as_deref(), Some("next"));
    }

    #[test]
    fn a_temporary_name_planted_as_a_link_is_replaced_not_followed() {
        use std::os::unix::fs::symlink;
        let dir = StateDir::new("planted");
        let store = Store::open(&dir.path).expect("open");
        let victim = dir.path.join("victim");
        fs::write(&victim, b"precious").expect("victim");
        symlink(&victim, dir.path.join(format!(".{STATE_FILE}.tmp"))).expect("link");
        store.save(&"state").expect("save");
        assert_eq!(
            fs::read(&victim).expect("victim"),
            b"precious",
            "the link was followed"
        );
        assert_eq!(store.load::<String>().expect("load").as_deref(), Some("state"));
    }

    #[test]
    fn a_state_directory_others_may_write_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = StateDir::new("open-mode");
        fs::create_dir_all(&dir.path).expect("dir");
        fs::set_permissions(&dir.path, fs::Permissions::from_mode(0o777)).expect("chmod");
        let err = Store::open(&dir.path).expect_err("refused");
        assert!(err.to_string().contains("mode 777"), "{err}");
        fs::set_permissions(&dir.path, fs::Permissions::from_mode(0o755)).expect("chmod");
        Store::open(&dir.path).expect("only its owner writes it");
    }

    #[test]
    fn an_unreadable_document_moves_aside_whole() {
        let dir = StateDir::new("aside");
        let store = Store::open(&dir.path).expect("open");
        fs::write(store.path(), b"not json").expect("write");
        let aside = store.move_aside().expect("moved");
        assert_eq!(fs::read(&aside).expect("kept"), b"not json");
        assert_eq!(store.load::<String>().expect("load"), None);
    }

    #[test]
    fn a_corrupt_document_is_an_error_not_a_silent_fresh_start() {
        let dir = StateDir::new("corrupt");
        let store = Store::open(&dir.path).expect("open");
        fs::write(store.path(), b"not json").expect("write");
        assert!(matches!(store.load::<String>(), Err(StoreError::Decode { .. })));
    }
}
