//! The gateway's Prometheus metrics, served as text at `GET /metrics` on the control
//! listener (`docs/GATEWAY.md#metrics` lists every series).
//!
//! No label takes an unbounded value: roles, handshake results, directions and error-code
//! names come from fixed sets (an unknown wire code is `UNKNOWN`); never an edge id, a
//! method, a topic or an address. Counters and gauges are atomics; the handles of the hot
//! path (bytes, successful calls and messages, latencies, streams) are resolved once, so
//! forwarding does no label lookup unless it fails.

use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use proto_core::{ConnectionError, ErrorCode};

use crate::forward::TargetKind;

/// Which listener a peer came through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum PeerRole {
    /// A service (the service port).
    Service,
    /// An edge (the edge port).
    Edge,
}

impl PeerRole {
    /// The label value: `service` or `edge`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            PeerRole::Service => "service",
            PeerRole::Edge => "edge",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// How a connection attempt ended (label `result` of `tether_handshakes_total`).
#[allow(
    dead_code,
    reason = "the TLS / token / limits accept pipeline reports the others"
)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum HandshakeResult {
    /// Admitted.
    Accepted,
    /// Refused by the gateway or a service hook, or a bad HELLO (wrong port, no name).
    Rejected,
    /// The credentials (token, client certificate) were refused.
    Unauthorized,
    /// The identity the peer claims does not match its credentials.
    IdentityMismatch,
    /// The TLS handshake failed.
    TlsFailed,
    /// The handshake did not complete in time.
    Timeout,
    /// Refused because the gateway is at its connection limit.
    Overloaded,
    /// The peer broke the protocol (or does not speak it) during the handshake.
    ProtocolError,
    /// The peer went away (closed, reset) before its handshake was decided.
    Abandoned,
}

impl HandshakeResult {
    /// Every result, in label order.
    pub(crate) const ALL: [HandshakeResult; 9] = [
        HandshakeResult::Accepted,
        HandshakeResult::Rejected,
        HandshakeResult::Unauthorized,
        HandshakeResult::IdentityMismatch,
        HandshakeResult::TlsFailed,
        HandshakeResult::Timeout,
        HandshakeResult::Overloaded,
        HandshakeResult::ProtocolError,
        HandshakeResult::Abandoned,
    ];

    /// The label value (`accepted`, `rejected`, `unauthorized`, `identity_mismatch`,
    /// `tls_failed`, `timeout`, `overloaded`, `protocol_error`, `abandoned`).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            HandshakeResult::Accepted => "accepted",
            HandshakeResult::Rejected => "rejected",
            HandshakeResult::Unauthorized => "unauthorized",
            HandshakeResult::IdentityMismatch => "identity_mismatch",
            HandshakeResult::TlsFailed => "tls_failed",
            HandshakeResult::Timeout => "timeout",
            HandshakeResult::Overloaded => "overloaded",
            HandshakeResult::ProtocolError => "protocol_error",
            HandshakeResult::Abandoned => "abandoned",
        }
    }
}

/// The bounded label value for a wire code: `ok`, the code's name (`METHOD_NOT_FOUND`), or
/// `UNKNOWN` for a code this version does not define.
pub(crate) fn outcome(code: ErrorCode) -> &'static str {
    if code.is_ok() {
        "ok"
    } else {
        code.name().unwrap_or("UNKNOWN")
    }
}

type Labels = [(&'static str, &'static str); 1];
type Labels2 = [(&'static str, &'static str); 2];

/// Forwarded traffic in one direction (towards services, or towards edges).
#[derive(Debug)]
pub(crate) struct Traffic {
    direction: &'static str,
    bytes: Counter,
    rpcs_ok: Counter,
    messages_ok: Counter,
    rpc_seconds: Histogram,
    message_seconds: Histogram,
}

/// The gateway's metrics and the registry they are encoded from.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    connections: [Gauge; 2],
    handshakes: Family<Labels2, Counter>,
    streams_open: Gauge,
    streams_relayed: Counter,
    traffic: [Traffic; 2],
    rpcs: Family<Labels2, Counter>,
    messages: Family<Labels2, Counter>,
    kicks: [Counter; 2],
    goaways: [Counter; 2],
    stream_resets: Family<Labels, Counter>,
    violations: Family<Labels, Counter>,
}

/// Keeps `tether_connections{role}` (or `tether_streams_open`) raised while it lives.
#[derive(Debug)]
#[must_use = "the gauge goes down when this is dropped"]
pub(crate) struct Live(Gauge);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The series of `family` for each role, in [`PeerRole`] order.
fn by_role<M: Clone + Default>(family: &Family<Labels, M>) -> [M; 2] {
    [PeerRole::Service, PeerRole::Edge].map(|r| family.get_or_create_owned(&[("role", r.as_str())]))
}

fn latency_histogram() -> Histogram {
    // 0.5 ms to about 16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Metrics {
    /// Fresh metrics, every series at zero.
    pub(crate) fn new() -> Metrics {
        let mut registry = Registry::with_prefix("tether");
        let connections = Family::<Labels, Gauge>::default();
        registry.register(
            "connections",
            "Connected peers, by role",
            connections.clone(),
        );
        let connections = by_role(&connections);
        let handshakes = Family::<Labels2, Counter>::default();
        // Every role and result from the start, at zero, so rates and alerts see them.
        for role in [PeerRole::Service, PeerRole::Edge] {
            for result in HandshakeResult::ALL {
                let labels = [("role", role.as_str()), ("result", result.as_str())];
                drop(handshakes.get_or_create(&labels));
            }
        }
        registry.register(
            "handshakes",
            "Connection attempts, by role and result",
            handshakes.clone(),
        );
        let streams_open = Gauge::default();
        registry.register(
            "streams_open",
            "Streams relayed right now",
            streams_open.clone(),
        );
        let streams_relayed = Counter::default();
        registry.register(
            "streams_relayed",
            "Streams relayed (accepted by their target)",
            streams_relayed.clone(),
        );
        let bytes = Family::<Labels, Counter>::default();
        registry.register(
            "relayed_bytes",
            "Stream payload bytes relayed, by direction (to_service, to_edge)",
            bytes.clone(),
        );
        let rpcs = Family::<Labels2, Counter>::default();
        registry.register(
            "rpcs",
            "Forwarded calls, by direction and outcome (ok or the error code's name)",
            rpcs.clone(),
        );
        let messages = Family::<Labels2, Counter>::default();
        registry.register(
            "messages",
            "Forwarded messages, by direction and outcome (ok or the error code's name)",
            messages.clone(),
        );
        let rpc_seconds = Family::<Labels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "rpc_duration_seconds",
            "Time from receiving a call to answering it, by direction",
            rpc_seconds.clone(),
        );
        let message_seconds = Family::<Labels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "message_duration_seconds",
            "Time from receiving a message to its outcome, by direction",
            message_seconds.clone(),
        );
        let traffic = [TargetKind::Service, TargetKind::Edge].map(|kind| {
            let direction = direction(kind);
            let one = [("direction", direction)];
            let ok = [("direction", direction), ("outcome", "ok")];
            Traffic {
                direction,
                bytes: bytes.get_or_create_owned(&one),
                rpcs_ok: rpcs.get_or_create_owned(&ok),
                messages_ok: messages.get_or_create_owned(&ok),
                rpc_seconds: rpc_seconds.get_or_create_owned(&one),
                message_seconds: message_seconds.get_or_create_owned(&one),
            }
        });
        let kicks = Family::<Labels, Counter>::default();
        registry.register(
            "kicks",
            "Peers kicked by an operator, by role",
            kicks.clone(),
        );
        let goaways = Family::<Labels, Counter>::default();
        registry.register(
            "goaways_sent",
            "GOAWAYs sent to peers (shutdown), by role",
            goaways.clone(),
        );
        let stream_resets = Family::<Labels, Counter>::default();
        registry.register(
            "stream_resets",
            "Relayed streams reset or stopped by the gateway, by code",
            stream_resets.clone(),
        );
        let violations = Family::<Labels, Counter>::default();
        registry.register(
            "violations",
            "Connections closed because the peer broke the protocol or spent a budget, by code",
            violations.clone(),
        );
        Metrics {
            connections,
            handshakes,
            streams_open,
            streams_relayed,
            traffic,
            rpcs,
            messages,
            kicks: by_role(&kicks),
            goaways: by_role(&goaways),
            stream_resets,
            violations,
            registry,
        }
    }

    /// Counts a connection attempt on the `role` listener that ended as `result`.
    pub(crate) fn handshake(&self, role: PeerRole, result: HandshakeResult) {
        let labels = [("role", role.as_str()), ("result", result.as_str())];
        self.handshakes.get_or_create(&labels).inc();
    }

    /// Counts an admitted `role` peer as connected until the guard is dropped.
    pub(crate) fn connected(&self, role: PeerRole) -> Live {
        let gauge = self.connections[role.index()].clone();
        gauge.inc();
        Live(gauge)
    }

    /// Counts why a connection ended: a protocol or budget violation of the peer
    /// counts in `tether_violations_total{code}`; other ends count nowhere.
    pub(crate) fn closed(&self, why: &ConnectionError) {
        if let ConnectionError::ProtocolViolation(violation) = why {
            let labels = [("code", outcome(violation.code()))];
            self.violations.get_or_create(&labels).inc();
        }
    }

    /// Counts a relayed stream, open until the guard is dropped.
    pub(crate) fn stream_relayed(&self) -> Live {
        self.streams_relayed.inc();
        self.streams_open.inc();
        Live(self.streams_open.clone())
    }

    /// Counts a reset (or stop) with `code` that the gateway sent on a relayed stream.
    pub(crate) fn stream_reset(&self, code: ErrorCode) {
        self.stream_resets
            .get_or_create(&[("code", outcome(code))])
            .inc();
    }

    /// The traffic towards `kind`.
    pub(crate) fn traffic(&self, kind: TargetKind) -> &Traffic {
        match kind {
            TargetKind::Service => &self.traffic[0],
            TargetKind::Edge => &self.traffic[1],
        }
    }

    /// Counts a forwarded call towards `kind` that ended with `code` after `elapsed`.
    pub(crate) fn rpc(&self, kind: TargetKind, code: ErrorCode, elapsed: Duration) {
        let traffic = self.traffic(kind);
        traffic.rpc_seconds.observe(elapsed.as_secs_f64());
        if code.is_ok() {
            traffic.rpcs_ok.inc();
        } else {
            let labels = [("direction", traffic.direction), ("outcome", outcome(code))];
            self.rpcs.get_or_create(&labels).inc();
        }
    }

    /// Counts a forwarded message towards `kind` that ended with `code` after `elapsed`.
    pub(crate) fn message(&self, kind: TargetKind, code: ErrorCode, elapsed: Duration) {
        let traffic = self.traffic(kind);
        traffic.message_seconds.observe(elapsed.as_secs_f64());
        if code.is_ok() {
            traffic.messages_ok.inc();
        } else {
            let labels = [("direction", traffic.direction), ("outcome", outcome(code))];
            self.messages.get_or_create(&labels).inc();
        }
    }

    /// Counts an operator's kick of a `role` peer.
    pub(crate) fn kick(&self, role: PeerRole) {
        self.kicks[role.index()].inc();
    }

    /// Counts a GOAWAY sent to a `role` peer.
    pub(crate) fn goaway(&self, role: PeerRole) {
        self.goaways[role.index()].inc();
    }

    /// Every series in the OpenMetrics text format (which Prometheus scrapes).
    pub(crate) fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String does not fail.
        let _ = encode(&mut text, &self.registry);
        text
    }
}

impl Traffic {
    /// Counts `len` stream payload bytes relayed in this direction.
    pub(crate) fn relayed(&self, len: usize) {
        self.bytes.inc_by(len as u64);
    }
}

/// The label value of traffic towards `kind`.
fn direction(kind: TargetKind) -> &'static str {
    match kind {
        TargetKind::Service => "to_service",
        TargetKind::Edge => "to_edge",
    }
}

/// The content type of [`Metrics::encode`]'s text.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_bounded_and_named() {
        let m = Metrics::new();
        m.handshake(PeerRole::Edge, HandshakeResult::Accepted);
        m.rpc(TargetKind::Service, ErrorCode::OK, Duration::from_millis(3));
        m.rpc(
            TargetKind::Service,
            ErrorCode(0x7777),
            Duration::from_millis(3),
        );
        m.message(TargetKind::Edge, ErrorCode::EDGE_NOT_ONLINE, Duration::ZERO);
        let live = m.connected(PeerRole::Service);
        m.traffic(TargetKind::Edge).relayed(10);
        let text = m.encode();
        for line in [
            "tether_handshakes_total{role=\"edge\",result=\"accepted\"} 1",
            "tether_rpcs_total{direction=\"to_service\",outcome=\"ok\"} 1",
            "tether_rpcs_total{direction=\"to_service\",outcome=\"UNKNOWN\"} 1",
            "tether_messages_total{direction=\"to_edge\",outcome=\"EDGE_NOT_ONLINE\"} 1",
            "tether_connections{role=\"service\"} 1",
            "tether_relayed_bytes_total{direction=\"to_edge\"} 10",
            "tether_rpc_duration_seconds_count{direction=\"to_service\"} 2",
        ] {
            assert!(text.contains(line), "{line:?} missing in\n{text}");
        }
        drop(live);
        assert!(
            m.encode()
                .contains("tether_connections{role=\"service\"} 0")
        );
    }
}
