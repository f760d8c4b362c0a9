//! What every accept loop of the daemon (API, metrics, control socket) does alike: a cap on the
//! connections it serves at once, and a back-off when `accept` fails.
//!
//! Without a cap, a client that opens connections and leaves them idle takes every descriptor
//! the process has, and probes then cannot open sockets. At the cap, the loop stops accepting:
//! new connections wait in the kernel's backlog (and past it are refused there), at no cost to
//! the daemon. Without a back-off, an `accept` that fails (`EMFILE`) fails again at once and the
//! loop spins on a core.

use std::{future::Future, io, sync::Arc, time::Duration};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::warn;

/// The first pause after a failed `accept`; it doubles with each failure in a row.
const FIRST_PAUSE: Duration = Duration::from_millis(10);
/// The longest pause.
const LONGEST_PAUSE: Duration = Duration::from_secs(1);

/// Connections served at once by the API listener (SSE streams included).
pub const API_CONNECTIONS: usize = 512;
/// Connections served at once by the metrics listener.
pub const METRICS_CONNECTIONS: usize = 32;
/// Connections served at once by the control socket.
pub const CONTROL_CONNECTIONS: usize = 32;

/// One listener's cap and failure count.
#[derive(Debug)]
pub struct Gate {
    what: &'static str,
    permits: Arc<Semaphore>,
    max: usize,
    failures: u32,
}

impl Gate {
    /// A gate letting at most `max` connections of the listener `what` in at once.
    #[must_use]
    pub fn new(what: &'static str, max: usize) -> Self {
        Self {
            what,
            permits: Arc::new(Semaphore::new(max)),
            max,
            failures: 0,
        }
    }

    /// Waits for room for one more connection, then accepts one with `accept`; the connection
    /// holds its room until the permit is dropped. A failed `accept` is logged (the first, then
    /// every power of two in a row) and retried after a pause that doubles up to a second.
    pub async fn accept<T, Fut>(&mut self, mut accept: impl FnMut() -> Fut) -> (T, OwnedSemaphorePermit)
    where
        Fut: Future<Output = io::Result<T>>,
    {
        let permit = if let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() {
            permit
        } else {
            warn!(
                listener = self.what,
                max = self.max,
                "at its cap of connections at once: new ones wait in the backlog"
            );
            Arc::clone(&self.permits)
                .acquire_owned()
                .await
                .expect("the semaphore is never closed")
        };
        loop {
            match accept().await {
                Ok(accepted) => {
                    self.failures = 0;
                    return (accepted, permit);
                }
                Err(e) => {
                    self.failures = self.failures.saturating_add(1);
                    if self.failures.is_power_of_two() {
                        warn!(listener = self.what, error = %e, failures = self.failures, "accept failed; backing off");
                    }
                    tokio::time::sleep(pause(self.failures)).await;
                }
            }
        }
    }
}

/// The pause after `failures` failed accepts in a row.
fn pause(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(10);
    (FIRST_PAUSE * 2u32.pow(doublings)).min(LONGEST_PAUSE)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[test]
    fn the_pause_doubles_up_to_a_second() {
        assert_eq!(pause(1), Duration::from_millis(10));
        assert_eq!(pause(2), Duration::from_millis(20));
        assert_eq!(pause(7), Duration::from_millis(640));
        assert_eq!(pause(8), LONGEST_PAUSE);
        assert_eq!(pause(u32::MAX), LONGEST_PAUSE);
    }

    /// A listener whose accept fails with `EMFILE` is tried a handful of times a second, not
    /// in a loop on a core, and the first success goes through.
    #[tokio::test(start_paused = true)]
    async fn failing_accepts_back_off() {
        let calls = AtomicU32::new(0);
        let mut gate = Gate::new("test", 1);
        let started = tokio::time::Instant::now();
        let (n, _permit) = gate
            .accept(|| {
                let n = calls.fetch_add(1, Ordering::Relaxed) + 1;
                async move {
                    if n < 12 {
                        Err(io::Error::from_raw_os_error(24))
                    } else {
                        Ok(n)
                    }
                }
            })
            .await;
        assert_eq!(n, 12);
        // 10 + 20 + … + 640 ms, then four pauses of a second.
        assert_eq!(started.elapsed(), Duration::from_millis(1_270 + 4_000));
    }

    /// At the cap, the next accept waits until a connection ends.
    #[tokio::test(start_paused = true)]
    async fn at_the_cap_the_next_accept_waits_for_a_connection_to_end() {
        let mut gate = Gate::new("test", 2);
        let ok = || async { Ok::<_, io::Error>(()) };
        let ((), first) = gate.accept(ok).await;
        let ((), _second) = gate.accept(ok).await;
        let third = tokio::time::timeout(Duration::from_secs(1), gate.accept(ok)).await;
        assert!(third.is_err(), "a third connection waits");
        drop(first);
        let third = tokio::time::timeout(Duration::from_secs(1), gate.accept(ok)).await;
        assert!(third.is_ok(), "room again once one ended");
    }
}
