//! Reconnect delays: exponential bounds with full jitter, from a tiny xorshift generator
//! seeded from the clock (no `rand` dependency).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Reconnect delay state.
#[derive(Debug)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    /// The bound of the next delay.
    bound: Duration,
    rng: u64,
}

impl Backoff {
    /// Delays from `initial` doubling up to `max`, seeded from the clock.
    pub(crate) fn new(initial: Duration, max: Duration) -> Backoff {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Backoff::with_seed(initial, max, nanos ^ u64::from(std::process::id()))
    }

    /// Like [`new`](Self::new) with a given seed.
    pub(crate) fn with_seed(initial: Duration, max: Duration, seed: u64) -> Backoff {
        let max = max.max(initial);
        Backoff {
            initial,
            max,
            bound: initial,
            // xorshift must not start at zero.
            rng: seed | 1,
        }
    }

    /// A connection succeeded: start again from the initial delay.
    pub(crate) fn reset(&mut self) {
        self.bound = self.initial;
    }

    /// The next delay: uniform in `[0, bound]` (full jitter); the bound doubles up to max.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let bound = self.bound;
        self.bound = bound
            .saturating_mul(2)
            .max(Duration::from_millis(1))
            .min(self.max);
        let nanos = u64::try_from(bound.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(self.next_u64() % nanos.saturating_add(1))
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_within_a_doubling_bound_and_reset() {
        let ms = Duration::from_millis;
        let mut b = Backoff::with_seed(ms(100), ms(1000), 12345);
        let bounds = [100, 200, 400, 800, 1000, 1000, 1000];
        for bound in bounds {
            assert!(b.next_delay() <= ms(bound));
        }
        b.reset();
        assert!(b.next_delay() <= ms(100));
        // Jitter: not every delay is the same.
        let mut b = Backoff::with_seed(ms(1000), ms(1000), 7);
        let first = b.next_delay();
        assert!((0..20).any(|_| b.next_delay() != first));
    }

    #[test]
    fn zero_initial_and_small_max_are_fine() {
        let mut b = Backoff::with_seed(Duration::ZERO, Duration::ZERO, 0);
        assert_eq!(b.next_delay(), Duration::ZERO);
    }
}
