//! How a [`Service`](crate::Service) or [`Edge`](crate::Edge) connects and reconnects.

use std::time::Duration;

use bytes::Bytes;
use proto_core::Config;

use crate::driver::DriverConfig;

/// Connection options shared by services and edges. Every field has a default that works.
#[derive(Clone, Debug)]
pub struct Options {
    /// Protocol settings and limits (windows, message size, keepalive, handshake timeout).
    pub config: Config,
    /// Transport-side settings of the driver (read size, write-stall timeout).
    pub driver: DriverConfig,
    /// Reconnect after the connection is lost (default `true`: forever, with backoff).
    pub reconnect: bool,
    /// Delay between reconnect attempts.
    pub backoff: Backoff,
    /// Bound on dialing plus the handshake (default 10 s).
    pub connect_timeout: Duration,
    /// Timeout of calls, acknowledged publishes and stream opens that set none (default
    /// 30 s). It includes any wait for a connection while disconnected.
    pub default_timeout: Duration,
    /// The application's version (e.g. `1.4.2`), for version-aware routing.
    pub version: String,
    /// Authentication token handed to the gateway's auth hook.
    pub token: Bytes,
    /// Opaque metadata (an edge's hardware id, say) for the gateway's hooks.
    pub metadata: Bytes,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            config: Config::default(),
            driver: DriverConfig::default(),
            reconnect: true,
            backoff: Backoff::default(),
            connect_timeout: Duration::from_secs(10),
            default_timeout: Duration::from_secs(30),
            version: String::new(),
            token: Bytes::new(),
            metadata: Bytes::new(),
        }
    }
}

/// Exponential backoff with full jitter between reconnect attempts: the n-th retry waits a
/// random time in `[0, min(max, initial × 2ⁿ)]`, so a fleet of edges cut off at once does
/// not come back in lockstep. The first retry after a connection that was up waits at
/// most `initial`.
#[derive(Clone, Debug)]
pub struct Backoff {
    /// The first delay's upper bound (default 200 ms).
    pub initial: Duration,
    /// The largest delay (default 30 s).
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The upper bound of the delay before retry number `attempt` (0-based).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// A random delay for retry number `attempt`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self.ceiling(attempt);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(fastrand::u64(0..=nanos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ceiling_doubles_up_to_the_maximum_and_delays_stay_under_it() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
        };
        assert_eq!(b.ceiling(0), Duration::from_millis(100));
        assert_eq!(b.ceiling(1), Duration::from_millis(200));
        assert_eq!(b.ceiling(5), Duration::from_millis(3200));
        assert_eq!(b.ceiling(6), Duration::from_secs(5));
        assert_eq!(b.ceiling(1000), Duration::from_secs(5));
        for attempt in 0..40 {
            assert!(b.delay(attempt) <= b.ceiling(attempt));
        }
        // Jitter: 64 draws are not all the same.
        let draws: std::collections::BTreeSet<_> = (0..64).map(|_| b.delay(10)).collect();
        assert!(draws.len() > 1);
    }
}
