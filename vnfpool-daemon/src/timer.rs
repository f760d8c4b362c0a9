//! A sleep with microsecond precision for the controller's deadlines.
//!
//! tokio's timers have a resolution of one millisecond and round up, so a deadline fires up to
//! a millisecond late: a third of a heartbeat interval of 3 ms. A `timerfd` on the monotonic
//! clock, waited on through the runtime's reactor, fires within the kernel's timer slack of the
//! deadline instead.
#![expect(
    unsafe_code,
    reason = "registering the timerfd with the reactor; see PreciseTimer::new"
)]

use std::{io, os::fd::OwnedFd, time::Instant};

use rustix::time::{Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec};
use tokio::io::unix::AsyncFd;

/// One timer, re-armed by every [`PreciseTimer::sleep_until`].
#[derive(Debug)]
pub struct PreciseTimer {
    fd: AsyncFd<OwnedFd>,
}

impl PreciseTimer {
    /// A disarmed timer, registered with the current runtime.
    ///
    /// # Errors
    /// When the timer cannot be created or registered.
    pub fn new() -> io::Result<Self> {
        let fd = rustix::time::timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
        )?;
        // SAFETY: the `OwnedFd` is a valid open descriptor that the `AsyncFd` owns for its
        // whole life: it is never closed, replaced or handed out while registered.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(io::Error::from)?;
        Ok(Self { fd })
    }

    /// Returns at `deadline` (at once when it has passed). Arming the timer discards an
    /// expiry left from an earlier call whose future was dropped.
    ///
    /// # Errors
    /// When the timer cannot be armed or read.
    pub async fn sleep_until(&self, deadline: Instant) -> io::Result<()> {
        let wait = deadline.saturating_duration_since(Instant::now());
        if wait.is_zero() {
            return Ok(());
        }
        let value = Timespec::try_from(wait).unwrap_or(Timespec {
            tv_sec: i64::MAX,
            tv_nsec: 0,
        });
        let zero = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        rustix::time::timerfd_settime(
            self.fd.get_ref(),
            TimerfdTimerFlags::empty(),
            &Itimerspec {
                it_interval: zero,
                it_value: value,
            },
        )?;
        loop {
            let mut ready = self.fd.readable().await?;
            let mut expirations = [0u8; 8];
            match rustix::io::read(self.fd.get_ref(), &mut expirations) {
                Ok(_) => return Ok(()),
                Err(rustix::io::Errno::AGAIN) => ready.clear_ready(),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// How late a sleep may return here: the kernel's default timer slack is 50 µs; a busy
    /// machine's scheduling adds the rest.
    const TOLERANCE: Duration = Duration::from_millis(5);

    #[tokio::test]
    async fn fires_at_the_deadline_not_before_and_at_once_when_it_has_passed() {
        let timer = PreciseTimer::new().expect("timer");
        for wait in [Duration::from_micros(300), Duration::from_millis(2)] {
            let start = Instant::now();
            timer.sleep_until(start + wait).await.expect("sleep");
            let took = start.elapsed();
            assert!(took >= wait, "{took:?} < {wait:?}");
            assert!(took < wait + TOLERANCE, "{took:?} for {wait:?}");
        }
        // A sleep dropped after arming leaves the timer to expire unread; the next sleep is not
        // woken by that expiry.
        let armed = tokio::time::timeout(
            Duration::ZERO,
            timer.sleep_until(Instant::now() + Duration::from_millis(20)),
        )
        .await;
        assert!(
            armed.is_err(),
            "the first poll armed the timer and returned pending"
        );
        #[expect(
            clippy::disallowed_methods,
            reason = "the real clock must pass: this is a real timer"
        )]
        std::thread::sleep(Duration::from_millis(25));
        let start = Instant::now();
        timer
            .sleep_until(start + Duration::from_millis(3))
            .await
            .expect("sleep");
        assert!(start.elapsed() >= Duration::from_millis(3));
        let start = Instant::now();
        let past = start
            .checked_sub(Duration::from_millis(1))
            .expect("an instant 1 ms ago");
        timer.sleep_until(past).await.expect("past");
        assert!(start.elapsed() < TOLERANCE);
    }
}
