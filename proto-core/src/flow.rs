//! Credit-based flow control: what we may send, and what we let the peer send.
//!
//! Both sides count cumulative bytes (`u64`, so they never wrap in practice). The sender may
//! send up to the *limit* the receiver granted; the receiver raises the limit only when the
//! application has *consumed* bytes, never when they merely arrived, so a slow reader slows
//! its sender instead of growing our memory. Every sum is checked: a grant that would push
//! the sender's credit past [`MAX_WINDOW`] is a flow-control error, not an overflow.
//!
//! Spec: `docs/PROTOCOL.md#flow-control`.

use core::time::Duration;

use crate::codec::MAX_WINDOW;
use crate::time::Timestamp;

/// True for a grant small enough to be suspicious: under 1 KiB, or under a quarter of a
/// window smaller than 4 KiB. A correct receiver grants at half its window, so only a
/// peer trying to make us send tiny frames (data dribble) grants less.
pub(crate) fn is_tiny_grant(increment: u32, window: u32) -> bool {
    increment < 1024u32.min(window / 4)
}

/// A credit grant that would exceed [`MAX_WINDOW`] of available credit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CreditOverflow;

/// Bytes received beyond the granted limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WindowExceeded {
    pub(crate) limit: u64,
    pub(crate) attempted: u64,
}

/// The sending side: how much the peer lets us send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SendCredit {
    /// Cumulative bytes the peer allows.
    limit: u64,
    /// Cumulative bytes sent.
    sent: u64,
}

impl SendCredit {
    pub(crate) fn new(initial: u32) -> Self {
        SendCredit {
            limit: u64::from(initial),
            sent: 0,
        }
    }

    /// Bytes we may send now.
    pub(crate) fn available(&self) -> u64 {
        self.limit.saturating_sub(self.sent)
    }

    /// Records bytes sent. Callers never send more than [`available`](Self::available).
    pub(crate) fn consume(&mut self, n: u64) {
        debug_assert!(n <= self.available());
        self.sent = self.sent.saturating_add(n).min(self.limit);
    }

    /// Gives back credit consumed for bytes that will never be sent (an item reserved in
    /// full and abandoned part-way): the receiver only ever counts bytes it received.
    pub(crate) fn refund(&mut self, n: u64) {
        self.sent = self.sent.saturating_sub(n);
    }

    /// Applies a peer's grant.
    pub(crate) fn grant(&mut self, increment: u32) -> Result<(), CreditOverflow> {
        let limit = self
            .limit
            .checked_add(u64::from(increment))
            .ok_or(CreditOverflow)?;
        if limit.saturating_sub(self.sent) > MAX_WINDOW {
            return Err(CreditOverflow);
        }
        self.limit = limit;
        Ok(())
    }
}

/// The receiving side: what we allowed, what arrived, what the application consumed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RecvWindow {
    /// Current window size: how far past `consumed` the peer may send.
    window: u32,
    /// Cumulative limit advertised to the peer.
    limit: u64,
    /// Cumulative bytes received.
    received: u64,
    /// Cumulative bytes the application consumed (or we discarded).
    consumed: u64,
    /// When the last update was sent (for auto-tuning).
    last_update: Option<Timestamp>,
    /// Grant at once whenever the peer's remaining credit falls below this, even under the
    /// half-window threshold: a sender that must reserve a whole message before starting it
    /// would otherwise wait forever for the rest of the window.
    min_available: u64,
}

impl RecvWindow {
    pub(crate) fn new(window: u32) -> Self {
        RecvWindow {
            window,
            limit: u64::from(window),
            received: 0,
            consumed: 0,
            last_update: None,
            min_available: 0,
        }
    }

    /// A window that re-grants whenever the peer holds less than `min_available` credit
    /// (the message window: the peer needs room for its largest message to start one).
    pub(crate) fn with_min_available(window: u32, min_available: u64) -> Self {
        RecvWindow {
            min_available,
            ..RecvWindow::new(window)
        }
    }

    /// Records `n` bytes arriving; fails if the peer exceeded its credit.
    pub(crate) fn on_receive(&mut self, n: u64) -> Result<(), WindowExceeded> {
        let attempted = self.received.saturating_add(n);
        if attempted > self.limit {
            return Err(WindowExceeded {
                limit: self.limit,
                attempted,
            });
        }
        self.received = attempted;
        Ok(())
    }

    /// Records `n` bytes leaving our buffers (read by the application, or discarded).
    pub(crate) fn on_consume(&mut self, n: u64) {
        self.consumed = self.consumed.saturating_add(n).min(self.received);
    }

    /// Bytes received but not yet consumed.
    pub(crate) fn buffered(&self) -> u64 {
        self.received.saturating_sub(self.consumed)
    }

    /// Credit we could grant now without exceeding the window.
    fn pending_credit(&self) -> u64 {
        self.consumed
            .saturating_add(u64::from(self.window))
            .saturating_sub(self.limit)
    }

    /// True once at least half the window has been consumed without being re-granted: the
    /// h2 threshold, which batches updates without letting the sender run dry.
    pub(crate) fn wants_update(&self) -> bool {
        let pending = self.pending_credit();
        let peer_available = self.limit.saturating_sub(self.received);
        pending >= u64::from(self.window / 2).max(1)
            || (pending > 0 && peer_available < self.min_available)
    }

    /// The current window size.
    pub(crate) fn window(&self) -> u32 {
        self.window
    }

    /// Grows the window to `new_window` (never shrinks it).
    pub(crate) fn grow(&mut self, new_window: u32) {
        self.window = self.window.max(new_window);
    }

    /// If the window was drained within two round trips of the previous update, the sender is
    /// limited by the window rather than by the application: return a doubled size (capped
    /// at `max`) that the caller may grant if its connection budget allows.
    pub(crate) fn autotune_target(
        &self,
        now: Timestamp,
        rtt: Option<Duration>,
        max: u32,
    ) -> Option<u32> {
        let (last, rtt) = (self.last_update?, rtt?);
        if self.window >= max {
            return None;
        }
        let fast = now.saturating_duration_since(last) < rtt.saturating_mul(2);
        fast.then(|| self.window.saturating_mul(2).min(max))
    }

    /// Takes the credit to grant now, marking it advertised. `None` if there is none.
    pub(crate) fn take_update(&mut self, now: Timestamp) -> Option<u32> {
        let credit = self.pending_credit();
        if credit == 0 {
            return None;
        }
        // A grant never exceeds the window (≤ 2^31 − 1), so it fits the 32-bit field.
        let increment = u32::try_from(credit).unwrap_or(u32::MAX);
        self.limit = self.limit.saturating_add(u64::from(increment));
        self.last_update = Some(now);
        Some(increment)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_credit_never_exceeds_the_maximum_window() {
        let mut c = SendCredit::new(10);
        assert_eq!(c.available(), 10);
        c.consume(4);
        assert_eq!(c.available(), 6);
        c.grant(100).unwrap();
        assert_eq!(c.available(), 106);
        // Pushing available credit past 2^31 − 1 is an error and changes nothing.
        let mut big = SendCredit::new(0);
        big.grant(u32::MAX >> 1).unwrap();
        assert_eq!(big.grant(1), Err(CreditOverflow));
        assert_eq!(big.available(), MAX_WINDOW);
        // Once credit was used, the same grant fits again.
        big.consume(10);
        big.grant(10).unwrap();
    }

    #[test]
    fn receiving_beyond_the_limit_is_refused() {
        let mut w = RecvWindow::new(100);
        w.on_receive(60).unwrap();
        w.on_receive(40).unwrap();
        assert_eq!(
            w.on_receive(1),
            Err(WindowExceeded {
                limit: 100,
                attempted: 101
            })
        );
        assert_eq!(w.buffered(), 100);
    }

    #[test]
    fn credit_returns_on_consume_at_the_half_window_threshold() {
        let mut w = RecvWindow::new(100);
        w.on_receive(100).unwrap();
        assert!(!w.wants_update(), "arrival alone grants nothing");
        w.on_consume(49);
        assert!(!w.wants_update());
        w.on_consume(1);
        assert!(w.wants_update());
        assert_eq!(w.take_update(Timestamp::ZERO), Some(50));
        assert!(!w.wants_update());
        w.on_receive(50).unwrap();
        assert!(w.on_receive(1).is_err());
    }

    #[test]
    fn a_message_window_regrants_when_the_peer_cannot_start_its_largest_message() {
        // Window just above one 1000-byte message: half-window batching alone would leave
        // the sender short of a whole message for good.
        let mut w = RecvWindow::with_min_available(1100, 1000);
        w.on_receive(300).unwrap();
        w.on_consume(300);
        assert!(
            w.wants_update(),
            "the peer has 800 left, less than one message"
        );
        assert_eq!(w.take_update(Timestamp::ZERO), Some(300));
        let mut plain = RecvWindow::new(1100);
        plain.on_receive(300).unwrap();
        plain.on_consume(300);
        assert!(!plain.wants_update());
    }

    #[test]
    fn consuming_more_than_received_is_clamped() {
        let mut w = RecvWindow::new(10);
        w.on_receive(5).unwrap();
        w.on_consume(50);
        assert_eq!(w.buffered(), 0);
        assert_eq!(w.take_update(Timestamp::ZERO), Some(5));
    }

    #[test]
    fn autotune_doubles_only_when_the_window_drains_within_two_rtts() {
        let rtt = Some(Duration::from_millis(10));
        let mut w = RecvWindow::new(1000);
        assert_eq!(
            w.autotune_target(Timestamp::ZERO, rtt, 8000),
            None,
            "no update yet"
        );
        w.on_receive(1000).unwrap();
        w.on_consume(1000);
        w.take_update(Timestamp::from_millis(100)).unwrap();
        assert_eq!(
            w.autotune_target(Timestamp::from_millis(115), rtt, 8000),
            Some(2000)
        );
        assert_eq!(
            w.autotune_target(Timestamp::from_millis(125), rtt, 8000),
            None
        );
        assert_eq!(
            w.autotune_target(Timestamp::from_millis(115), None, 8000),
            None
        );
        w.grow(8000);
        assert_eq!(
            w.autotune_target(Timestamp::from_millis(101), rtt, 8000),
            None,
            "at max"
        );
    }
}
