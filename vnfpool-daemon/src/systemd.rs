//! systemd's readiness protocol (`sd_notify(3)`) for `Type=notify`: `READY=1` once every pool
//! is live, `STOPPING=1` when the daemon stops. Without `NOTIFY_SOCKET` in the environment (not
//! started by systemd, or not as `Type=notify`) every function here does nothing.
//!
//! A failed notification is logged, never fatal: systemd then times the start out, which is the
//! failure it should see.

use std::sync::atomic::{AtomicBool, Ordering};

use sd_notify::NotifyState;
use tracing::{info, warn};

/// Whether `READY=1` was sent by this process.
static READY: AtomicBool = AtomicBool::new(false);

/// Tells systemd the daemon is ready (`READY=1`), with `status` as its `STATUS=` line
/// (`systemctl status` shows it).
pub fn notify_ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// [`notify_ready`] the first time `all_live` holds in this process, with the number of pools
/// in the status line; afterwards nothing (a reload that adds a pool does not make the daemon
/// ready again). Zero pools are all live.
pub fn notify_ready_once(all_live: bool, pools: usize) {
    if all_live && !READY.swap(true, Ordering::Relaxed) {
        if std::env::var_os("NOTIFY_SOCKET").is_some() {
            info!(pools, "notifying systemd: ready");
        }
        notify_ready(&format!("{pools} pools live"));
    }
}

/// Tells systemd the daemon is stopping (`STOPPING=1`): the data plane stays attached and
/// pinned.
pub fn notify_stopping() {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status("stopping; the data plane stays attached and keeps forwarding"),
    ]);
}

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        warn!(error = %e, "notifying systemd");
    }
}
