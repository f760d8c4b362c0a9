//! Replay protection per sender, IPsec-style (RFC 4303 §3.4.3): the sender's epoch, then a
//! sliding window of [`WINDOW`] sequence numbers below the highest one accepted. Pure.

use std::collections::HashMap;

/// Sequence numbers tracked below the highest accepted one.
pub const WINDOW: u64 = 128;

/// Why a sender's datagram was refused by its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// An epoch older than the sender's latest: a datagram of an earlier run of the sender.
    OldEpoch,
    /// Already accepted.
    Duplicate,
    /// Below the window: too old to tell.
    TooOld,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    epoch: u64,
    /// Highest sequence number accepted.
    top: u64,
    /// Bit `i`: `top - i` accepted.
    seen: u128,
}

/// The windows of every sender heard from (only authenticated datagrams reach it).
#[derive(Debug, Default)]
pub struct Windows(HashMap<u64, Window>);

impl Windows {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Accepts `(epoch, seq)` of `node` once, recording it; refuses what was accepted before, an
    /// older epoch, or a number below the window.
    pub fn accept(&mut self, node: u64, epoch: u64, seq: u64) -> Result<(), Replay> {
        let fresh = Window {
            epoch,
            top: seq,
            seen: 1,
        };
        let Some(w) = self.0.get_mut(&node) else {
            self.0.insert(node, fresh);
            return Ok(());
        };
        if epoch < w.epoch {
            return Err(Replay::OldEpoch);
        }
        if epoch > w.epoch {
            *w = fresh;
            return Ok(());
        }
        if seq > w.top {
            let shift = seq - w.top;
            w.seen = if shift >= WINDOW { 0 } else { w.seen << shift };
            w.seen |= 1;
            w.top = seq;
            return Ok(());
        }
        let behind = w.top - seq;
        if behind >= WINDOW {
            return Err(Replay::TooOld);
        }
        let bit = 1u128 << behind;
        if w.seen & bit != 0 {
            return Err(Replay::Duplicate);
        }
        w.seen |= bit;
        Ok(())
    }

    /// Senders heard from.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_number_twice_is_a_duplicate() {
        let mut w = Windows::new();
        assert_eq!(w.accept(1, 10, 5), Ok(()));
        assert_eq!(w.accept(1, 10, 5), Err(Replay::Duplicate));
        assert_eq!(w.accept(2, 10, 5), Ok(()), "windows are per sender");
    }

    #[test]
    fn reordering_inside_the_window_is_accepted_once() {
        let mut w = Windows::new();
        assert_eq!(w.accept(1, 10, 1000), Ok(()));
        for seq in [999, 950, 1000 - WINDOW + 1, 1001, 998] {
            assert_eq!(w.accept(1, 10, seq), Ok(()), "seq {seq}");
        }
        for seq in [999, 950, 1001, 1000] {
            assert_eq!(w.accept(1, 10, seq), Err(Replay::Duplicate), "seq {seq} again");
        }
        assert_eq!(w.accept(1, 10, 1001 - WINDOW), Err(Replay::TooOld));
    }

    #[test]
    fn a_jump_beyond_the_window_forgets_the_old_numbers() {
        let mut w = Windows::new();
        assert_eq!(w.accept(1, 10, 1), Ok(()));
        assert_eq!(w.accept(1, 10, 1 + 2 * WINDOW), Ok(()));
        assert_eq!(
            w.accept(1, 10, 2 + WINDOW),
            Ok(()),
            "inside the new window, never seen"
        );
        assert_eq!(w.accept(1, 10, 1), Err(Replay::TooOld));
    }

    #[test]
    fn a_newer_epoch_restarts_and_an_older_one_is_refused() {
        let mut w = Windows::new();
        assert_eq!(w.accept(1, 10, 500), Ok(()));
        assert_eq!(
            w.accept(1, 11, 1),
            Ok(()),
            "the sender restarted: numbers start again"
        );
        assert_eq!(w.accept(1, 11, 2), Ok(()));
        assert_eq!(w.accept(1, 10, 501), Err(Replay::OldEpoch));
        assert_eq!(w.accept(1, 11, 1), Err(Replay::Duplicate));
    }
}
