//! Caps on unauthenticated connections: those accepted whose TLS, WebSocket upgrade or
//! protocol handshake has not completed yet. A flood of half-open connections from one
//! address, or from everywhere, is refused at accept time, before it costs a task or a
//! TLS handshake, while established peers are unaffected.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use serde::Deserialize;

/// Deadlines and caps of the stages before a peer is admitted (the `admission` section).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdmissionConfig {
    /// Connections still in their handshakes, over all listeners. Default 4096.
    pub max_unauthenticated: u32,
    /// Connections still in their handshakes from one IP address. Default 64.
    pub max_unauthenticated_per_ip: u32,
    /// The TLS handshake and, for WebSocket, the HTTP upgrade must complete within this
    /// many milliseconds of the TCP accept. Default 10000. (The protocol handshake has its
    /// own deadline, `protocol.handshake_timeout_ms`.)
    pub transport_handshake_timeout_ms: u64,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        AdmissionConfig {
            max_unauthenticated: 4096,
            max_unauthenticated_per_ip: 64,
            transport_handshake_timeout_ms: 10_000,
        }
    }
}

/// Counts the connections in their handshakes, in total and per address.
#[derive(Debug)]
pub struct Admission {
    max_total: u32,
    max_per_ip: u32,
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: u32,
    per_ip: HashMap<IpAddr, u32>,
}

/// Why a connection was refused at accept time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overload {
    /// The global cap is reached.
    Total,
    /// The cap for this address is reached.
    PerIp,
}

impl Admission {
    /// Caps from the configuration.
    pub fn new(config: &AdmissionConfig) -> Arc<Admission> {
        Arc::new(Admission {
            max_total: config.max_unauthenticated,
            max_per_ip: config.max_unauthenticated_per_ip,
            counts: Mutex::new(Counts::default()),
        })
    }

    /// Takes a slot for a new connection from `ip`, released when the returned permit drops.
    pub fn try_enter(self: &Arc<Self>, ip: IpAddr) -> Result<Permit, Overload> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if counts.total >= self.max_total {
            return Err(Overload::Total);
        }
        let here = counts.per_ip.entry(ip).or_insert(0);
        if *here >= self.max_per_ip {
            return Err(Overload::PerIp);
        }
        *here += 1;
        counts.total += 1;
        Ok(Permit {
            admission: Arc::clone(self),
            ip,
        })
    }

    /// Connections in their handshakes now.
    pub fn in_progress(&self) -> u32 {
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).total
    }

    fn leave(&self, ip: IpAddr) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.total = counts.total.saturating_sub(1);
        if let Some(here) = counts.per_ip.get_mut(&ip) {
            *here = here.saturating_sub(1);
            if *here == 0 {
                // No entry outlives its connections: the map stays as small as the flood.
                counts.per_ip.remove(&ip);
            }
        }
    }
}

/// One connection's slot among the unauthenticated ones; dropping it frees the slot (at
/// the end of the handshake, whatever its outcome).
#[derive(Debug)]
pub struct Permit {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.admission.leave(self.ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_total_and_per_address_and_frees_on_drop() {
        let config = AdmissionConfig {
            max_unauthenticated: 3,
            max_unauthenticated_per_ip: 2,
            ..AdmissionConfig::default()
        };
        let admission = Admission::new(&config);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let a1 = admission.try_enter(a).unwrap();
        let a2 = admission.try_enter(a).unwrap();
        assert_eq!(admission.try_enter(a).unwrap_err(), Overload::PerIp);
        let b1 = admission.try_enter(b).unwrap();
        assert_eq!(admission.try_enter(b).unwrap_err(), Overload::Total);
        drop(a1);
        let a3 = admission.try_enter(a).unwrap();
        assert_eq!(admission.in_progress(), 3);
        drop((a2, a3, b1));
        assert_eq!(admission.in_progress(), 0);
        assert!(admission.counts.lock().unwrap().per_ip.is_empty());
    }
}
