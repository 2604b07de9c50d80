//! Time as a value: the core never reads a clock.
//!
//! Drivers convert their clock (`std::time::Instant`, a hardware tick counter, a virtual clock
//! in tests) into [`Timestamp`]s measured from an epoch of their choosing and pass them into
//! every `handle_*` call. Because time only moves when the caller says so, tests can jump
//! minutes ahead instantly and replay the same run bit for bit.

use core::fmt;
use core::time::Duration;

/// A point in time, in microseconds since an epoch chosen by the driver.
///
/// Only differences between timestamps of the same connection mean anything. Arithmetic
/// saturates instead of overflowing, so a hostile relative timeout can never wrap a deadline
/// into the past.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The epoch itself.
    pub const ZERO: Timestamp = Timestamp(0);
    /// The latest representable time; used as "never".
    pub const MAX: Timestamp = Timestamp(u64::MAX);

    /// A timestamp `micros` microseconds after the epoch.
    pub const fn from_micros(micros: u64) -> Self {
        Timestamp(micros)
    }

    /// A timestamp `millis` milliseconds after the epoch (saturating).
    pub const fn from_millis(millis: u64) -> Self {
        Timestamp(millis.saturating_mul(1000))
    }

    /// A timestamp `since_epoch` after the epoch (saturating at [`Timestamp::MAX`]).
    pub fn from_duration(since_epoch: Duration) -> Self {
        Timestamp(duration_to_micros(since_epoch))
    }

    /// Microseconds since the epoch.
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// The time since the epoch as a [`Duration`].
    pub const fn as_duration(self) -> Duration {
        Duration::from_micros(self.0)
    }

    /// `self + d`, saturating at [`Timestamp::MAX`].
    #[must_use]
    pub fn saturating_add(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_add(duration_to_micros(d)))
    }

    /// The time elapsed from `earlier` to `self`, or zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Timestamp) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "T+{}.{:06}s", self.0 / 1_000_000, self.0 % 1_000_000)
    }
}

/// Converts a duration to whole microseconds, saturating at `u64::MAX`.
pub(crate) fn duration_to_micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Converts a relative timeout to the wire's milliseconds: zero stays "none", anything below
/// one millisecond rounds up so it is not mistaken for "none", and huge values saturate.
pub(crate) fn duration_to_wire_millis(d: Duration) -> u32 {
    if d.is_zero() {
        return 0;
    }
    let millis = d.as_millis().max(1);
    u32::try_from(millis).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        let t = Timestamp::MAX;
        assert_eq!(t.saturating_add(Duration::from_secs(1)), Timestamp::MAX);
        assert_eq!(
            Timestamp::ZERO.saturating_duration_since(Timestamp::from_millis(5)),
            Duration::ZERO
        );
        assert_eq!(
            Timestamp::from_millis(1500).saturating_duration_since(Timestamp::from_millis(500)),
            Duration::from_secs(1)
        );
        assert_eq!(Timestamp::from_duration(Duration::MAX), Timestamp::MAX);
    }

    #[test]
    fn wire_millis_never_turns_a_timeout_into_none() {
        assert_eq!(duration_to_wire_millis(Duration::ZERO), 0);
        assert_eq!(duration_to_wire_millis(Duration::from_micros(1)), 1);
        assert_eq!(duration_to_wire_millis(Duration::from_secs(30)), 30_000);
        assert_eq!(duration_to_wire_millis(Duration::MAX), u32::MAX);
    }

    #[test]
    fn debug_shows_seconds() {
        assert_eq!(
            alloc::format!("{:?}", Timestamp::from_micros(1_500_000)),
            "T+1.500000s"
        );
    }
}
