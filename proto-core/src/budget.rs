//! Rate budgets for frames that are cheap for a peer and costly for us.
//!
//! Each budget allows `limit` events per window of time; the window restarts lazily at the
//! first event after it ends, so an idle connection costs no timer. Rates rather than
//! lifetime counts: a long-lived, well-behaved peer never runs out (the lesson of h2#856).
//!
//! Spec: `docs/PROTOCOL.md#budgets`.

use core::fmt;
use core::time::Duration;

use crate::config::Budgets;
use crate::time::Timestamp;

/// Which budget a peer exhausted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BudgetKind {
    /// PING frames.
    Pings,
    /// Streams reset, and requests or messages cancelled, before we took them.
    PeerResets,
    /// Resets and refusals we had to send because of the peer.
    LocalResets,
    /// Frames that carry nothing.
    EmptyFrames,
    /// Frames that change nothing.
    WastedFrames,
    /// REGISTER frames.
    Registrations,
}

impl fmt::Display for BudgetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BudgetKind::Pings => "pings",
            BudgetKind::PeerResets => "resets and cancels before accept",
            BudgetKind::LocalResets => "resets caused by the peer",
            BudgetKind::EmptyFrames => "empty frames",
            BudgetKind::WastedFrames => "frames that change nothing",
            BudgetKind::Registrations => "registration changes",
        })
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Counter {
    window_start: Timestamp,
    used: u32,
}

/// The live counters of one connection.
#[derive(Clone, Debug)]
pub(crate) struct BudgetState {
    limits: Budgets,
    counters: [Counter; 6],
}

impl BudgetState {
    pub(crate) fn new(limits: Budgets) -> Self {
        BudgetState {
            limits,
            counters: [Counter::default(); 6],
        }
    }

    fn slot(kind: BudgetKind) -> usize {
        match kind {
            BudgetKind::Pings => 0,
            BudgetKind::PeerResets => 1,
            BudgetKind::LocalResets => 2,
            BudgetKind::EmptyFrames => 3,
            BudgetKind::WastedFrames => 4,
            BudgetKind::Registrations => 5,
        }
    }

    fn limit(&self, kind: BudgetKind) -> u32 {
        let b = &self.limits;
        match kind {
            BudgetKind::Pings => b.pings,
            BudgetKind::PeerResets => b.peer_resets,
            BudgetKind::LocalResets => b.local_resets,
            BudgetKind::EmptyFrames => b.empty_frames,
            BudgetKind::WastedFrames => b.wasted_frames,
            BudgetKind::Registrations => b.registrations,
        }
    }

    /// Spends one unit; `Err(kind)` once the limit for the current window is exceeded.
    pub(crate) fn spend(&mut self, now: Timestamp, kind: BudgetKind) -> Result<(), BudgetKind> {
        let limit = self.limit(kind);
        let window: Duration = self.limits.window;
        let Some(counter) = self.counters.get_mut(Self::slot(kind)) else {
            return Ok(());
        };
        if now.saturating_duration_since(counter.window_start) >= window {
            counter.window_start = now;
            counter.used = 0;
        }
        counter.used = counter.used.saturating_add(1);
        if counter.used > limit {
            Err(kind)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_is_a_rate_not_a_lifetime_count() {
        let limits = Budgets {
            pings: 3,
            ..Budgets::default()
        };
        let mut b = BudgetState::new(limits);
        let t0 = Timestamp::from_millis(1);
        for _ in 0..3 {
            b.spend(t0, BudgetKind::Pings).unwrap();
        }
        assert_eq!(b.spend(t0, BudgetKind::Pings), Err(BudgetKind::Pings));
        // Other budgets are independent.
        b.spend(t0, BudgetKind::EmptyFrames).unwrap();
        // A new window refills.
        let later = t0.saturating_add(limits.window);
        for _ in 0..3 {
            b.spend(later, BudgetKind::Pings).unwrap();
        }
        assert!(b.spend(later, BudgetKind::Pings).is_err());
    }
}
