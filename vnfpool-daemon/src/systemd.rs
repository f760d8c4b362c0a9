//! systemd's readiness protocol (`sd_notify(3)`) for `Type=notify`: `READY=1` once every pool
//! is live, `STOPPING=1` when the daemon stops. Without `NOTIFY_SOCKET` in the environment (not
//! started by systemd, or not as `Type=notify`) every function here does nothing.
//!
//! A failed notification is logged, never fatal: systemd then times the start out, which is the
//! failure it should see.

use sd_notify::NotifyState;
use tracing::warn;

/// Tells systemd the daemon is ready (`READY=1`), with `status` as its `STATUS=` line
/// (`systemctl status` shows it).
pub fn notify_ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
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
