//! A program in a pseudo-terminal: a detached tmux session on a tmux server of its own (its
//! own socket name), so nothing is shared with another test or a person's tmux. The server,
//! and with it the program, is killed on drop, also when the test fails, and its socket file
//! removed.

use std::{
    ffi::OsStr,
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A tmux session running one program.
pub struct Pane {
    /// The server's socket name (`tmux -L`) and the session's name: the same, unique per run.
    name: String,
    /// The server's socket file, which `kill-server` leaves behind.
    socket: Option<PathBuf>,
}

impl Pane {
    /// Runs `program args…` in a new detached `width` x `height` session (no status line, so
    /// the program has every row). The pane stays after the program exits, so that its exit
    /// status and last screen can be read. `scratch` holds the server's configuration file.
    #[must_use]
    pub fn start<S: AsRef<OsStr>>(scratch: &Path, width: u16, height: u16, program: &[S]) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        let name = format!(
            "vnfp-{}-{}-{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let conf = scratch.join(format!("{name}.tmux.conf"));
        std::fs::write(&conf, "set -g status off\nset -g remain-on-exit on\n").expect("tmux.conf");
        // From here on the guard exists: a failed start still kills whatever came up.
        let mut pane = Self { name, socket: None };
        let out = Command::new("tmux")
            .args(["-L", &pane.name, "-f"])
            .arg(&conf)
            .args(["new-session", "-d", "-s", &pane.name])
            .args(["-x", &width.to_string(), "-y", &height.to_string(), "--"])
            .args(program)
            .output()
            .expect("running tmux (is it installed? scripts/setup.sh installs it)");
        assert!(
            out.status.success(),
            "tmux new-session: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        pane.socket = Some(PathBuf::from(pane.format("#{socket_path}")));
        pane
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.name])
            .args(args)
            .output()
            .expect("running tmux");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// What the screen shows now, one line per row.
    #[must_use]
    pub fn capture(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", &self.name])
    }

    /// Types `keys` (tmux key names: `q`, `C-c`, `Enter`).
    pub fn send_keys(&self, keys: &str) {
        self.tmux(&["send-keys", "-t", &self.name, keys]);
    }

    /// A tmux format of the pane (`#{pane_dead}`, `#{alternate_on}` …).
    #[must_use]
    pub fn format(&self, format: &str) -> String {
        self.tmux(&["display-message", "-p", "-t", &self.name, format])
            .trim_end()
            .to_owned()
    }

    /// The program's process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        let f = self.format("#{pane_pid}");
        f.parse().unwrap_or_else(|e| panic!("pane_pid {f:?}: {e}"))
    }

    /// The program's exit status once it has exited and been reaped; `None` until then (tmux
    /// marks the pane dead when the terminal closes, and has the status a moment later).
    #[must_use]
    pub fn exit_status(&self) -> Option<i32> {
        let f = self.format("#{pane_dead} #{pane_dead_status}");
        let (dead, status) = f.split_once(' ').unwrap_or((&f, ""));
        if dead == "1" { status.parse().ok() } else { None }
    }

    /// Waits until the program has exited and returns its status; panics after `timeout` with
    /// the screen.
    #[must_use]
    pub fn wait_exit(&self, timeout: Duration) -> i32 {
        let start = Instant::now();
        loop {
            if let Some(status) = self.exit_status() {
                return status;
            }
            if self.format("#{pane_dead}") == "1" {
                // The terminal closed but the server has not reaped the program: tmux built with
                // libutempter (Debian's) can miss the SIGCHLD, which arrives while utempter's
                // helper has its own handler in (tmux issue 311), and would leave it a zombie
                // for good. Another SIGCHLD makes the server look again.
                let server = self.format("#{pid}");
                let _ = Command::new("kill").args(["-s", "CHLD", &server]).status();
            }
            assert!(
                start.elapsed() < timeout,
                "still running after {timeout:?}:\n{}",
                self.capture()
            );
            pause();
        }
    }

    /// Polls the screen (every 20 ms) until `ready` holds for it and returns it; panics after
    /// `timeout` with the last screen and `context()` (a log, say).
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        ready: impl Fn(&str) -> bool,
        context: impl Fn() -> String,
    ) -> String {
        let start = Instant::now();
        loop {
            let screen = self.capture();
            if ready(&screen) {
                return screen;
            }
            assert!(
                start.elapsed() < timeout,
                "not on the screen within {timeout:?}: {what}\n--- screen:\n{screen}\n--- context:\n{}",
                context()
            );
            pause();
        }
    }
}

/// Between two looks at a real process's screen: real time, not tokio's.
#[expect(clippy::disallowed_methods, reason = "polls a real process in real time")]
fn pause() {
    std::thread::sleep(Duration::from_millis(20));
}

impl Drop for Pane {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.name, "kill-server"])
            .output();
        if let Some(socket) = &self.socket {
            let _ = std::fs::remove_file(socket);
        }
    }
}
