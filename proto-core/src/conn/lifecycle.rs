//! Time and the end of a connection: the timers, keepalive and idle timeout, GOAWAY and
//! drain, and closing.
//!
//! Spec: `docs/PROTOCOL.md#liveness` and `docs/PROTOCOL.md#shutdown`.

use alloc::string::{String, ToString};
use core::time::Duration;

use super::{Connection, Phase, Probe};
use crate::code::ErrorCode;
use crate::codec::{Frame, GoAway};
use crate::config::Config;
use crate::error::{ApiMisuse, ConnectionError, ProtocolViolation, TimeoutKind};
use crate::event::Event;
use crate::exchange::{DeadlineKey, Exchanges};
use crate::time::Timestamp;

/// Why [`Connection::poll_timeout`] chose its deadline: a wake-up that changes nothing is
/// easy to trace to its timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimerKind {
    /// The handshake must complete by then.
    Handshake,
    /// Nothing received for the idle timeout.
    Idle,
    /// Nothing received for the keepalive interval: send a PING.
    KeepAlive,
    /// The keepalive PING went unanswered.
    KeepAliveTimeout,
    /// A call's or a taken request's relative timeout.
    RpcTimeout,
    /// A message's acknowledgement timeout.
    MessageTimeout,
    /// Graceful shutdown must be finished by then.
    Drain,
    /// The driver should give up flushing the final frames and close.
    CloseLinger,
}

impl Connection {
    /// The next time [`handle_timeout`](Self::handle_timeout) must be called, and why.
    /// Re-poll after every `handle_*` call and command; `None` means no timer is needed.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<(Timestamp, TimerKind)> {
        if self.finished {
            return None;
        }
        if self.phase == Phase::Closed {
            return self.linger_deadline.map(|t| (t, TimerKind::CloseLinger));
        }
        if self.phase != Phase::Open {
            return Some((self.handshake_deadline(), TimerKind::Handshake));
        }
        let mut next: Option<(Timestamp, TimerKind)> = None;
        let mut consider = |at: Timestamp, kind: TimerKind| {
            if next.is_none_or(|(t, _)| at < t) {
                next = Some((at, kind));
            }
        };
        if let Some(idle) = self.idle_timeout() {
            consider(self.last_received.saturating_add(idle), TimerKind::Idle);
        }
        if let Some((interval, timeout)) = self.keepalive() {
            if self.probe.is_none() {
                consider(
                    self.last_received.saturating_add(interval),
                    TimerKind::KeepAlive,
                );
            }
            let dead = self
                .last_received
                .saturating_add(interval)
                .saturating_add(timeout);
            consider(dead, TimerKind::KeepAliveTimeout);
        }
        if let Some((at, key)) = self.exchanges.next_deadline_key() {
            let kind = match key {
                DeadlineKey::Call(_) | DeadlineKey::Request(_) => TimerKind::RpcTimeout,
                DeadlineKey::Published(_) | DeadlineKey::Message(_) => TimerKind::MessageTimeout,
            };
            consider(at, kind);
        }
        if let Some(at) = self.drain_deadline {
            consider(at, TimerKind::Drain);
        }
        next
    }

    /// Handles every timer due at `now`. Calling it early or twice is harmless.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        if self.phase == Phase::Closed {
            if self.linger_deadline.is_some_and(|t| now >= t) {
                self.finished = true;
            }
            return;
        }
        if self.phase != Phase::Open {
            if now >= self.handshake_deadline() {
                self.on_handshake_timeout(now);
            }
            return;
        }
        // Per-call deadlines first: after a clock jump a call whose timeout passed failed with
        // TIMEOUT, which is more precise than the connection loss that may follow.
        self.exchanges.handle_timeout(now, &mut self.fx);
        if let Some(idle) = self.idle_timeout()
            && now >= self.last_received.saturating_add(idle)
        {
            self.terminate(now, ConnectionError::TimedOut(TimeoutKind::Idle), false);
            return;
        }
        if let Some((interval, timeout)) = self.keepalive() {
            let quiet_since = self.last_received;
            if now >= quiet_since.saturating_add(interval).saturating_add(timeout) {
                self.terminate(
                    now,
                    ConnectionError::TimedOut(TimeoutKind::Keepalive),
                    false,
                );
                return;
            }
            if self.probe.is_none() && now >= quiet_since.saturating_add(interval) {
                self.send_probe(now, false);
            }
        }
        if self.drain_deadline.is_some_and(|t| now >= t) {
            self.close_with_goaway(
                now,
                ErrorCode::DRAIN_TIMEOUT,
                String::from("graceful shutdown did not finish in time"),
                ConnectionError::TimedOut(TimeoutKind::Drain),
            );
            return;
        }
        self.after_activity(now);
    }

    fn handshake_deadline(&self) -> Timestamp {
        let limit = if self.side.is_client() {
            self.config.welcome_timeout
        } else {
            self.config.handshake_timeout
        };
        self.created_at.saturating_add(limit)
    }

    fn on_handshake_timeout(&mut self, now: Timestamp) {
        let error = ConnectionError::TimedOut(TimeoutKind::Handshake);
        match self.phase {
            Phase::Deciding => {
                // The client waits for WELCOME or REFUSE: tell it why it gets neither.
                self.fx.push_frame(Frame::Refuse {
                    code: ErrorCode::HANDSHAKE_TIMEOUT,
                    reason: String::from("the handshake was not decided in time"),
                });
                self.terminate(now, error, true);
            }
            Phase::AwaitHello => self.close_with_goaway(
                now,
                ErrorCode::HANDSHAKE_TIMEOUT,
                String::from("no HELLO in time"),
                error,
            ),
            _ => self.terminate(now, error, false),
        }
    }

    /// The idle timeout in force: the smaller non-zero one of ours and the peer's.
    fn idle_timeout(&self) -> Option<Duration> {
        let ours = self.config.settings.idle_timeout_ms;
        let theirs = self.peer_settings.idle_timeout_ms;
        let ms = match (ours, theirs) {
            (0, 0) => return None,
            (0, t) | (t, 0) => t,
            (a, b) => a.min(b),
        };
        Some(Duration::from_millis(u64::from(ms)))
    }

    fn keepalive(&self) -> Option<(Duration, Duration)> {
        let interval = self.config.keepalive_interval;
        (!interval.is_zero()).then_some((interval, self.config.keepalive_timeout))
    }

    pub(super) fn send_probe(&mut self, now: Timestamp, user: bool) {
        let opaque = self.next_ping;
        self.next_ping = self.next_ping.wrapping_add(1);
        self.fx.push_frame(Frame::Ping { ack: false, opaque });
        self.probe = Some(Probe {
            opaque,
            sent_at: now,
            user,
        });
    }

    /// Sends a PING; `Event::PingAcked` reports the round-trip time.
    pub fn ping(&mut self, now: Timestamp) -> Result<(), ApiMisuse> {
        match self.phase {
            Phase::Open => {}
            Phase::Closed => return Err(ApiMisuse::Closed),
            _ => return Err(ApiMisuse::NotConnected),
        }
        match &mut self.probe {
            Some(probe) => probe.user = true,
            None => self.send_probe(now, true),
        }
        Ok(())
    }

    // ---- shutdown ----------------------------------------------------------------------

    /// Starts a graceful shutdown: GOAWAY tells the peer which of its streams, requests and
    /// messages we will still process; we take nothing new; the connection closes once
    /// nothing is in flight, or at the drain deadline. `code` should be `OK` or
    /// `GOING_AWAY`; with any other code, and before the handshake completes, this is
    /// [`close`](Self::close).
    pub fn go_away(&mut self, now: Timestamp, code: ErrorCode, reason: &str) {
        let graceful = code == ErrorCode::OK || code == ErrorCode::GOING_AWAY;
        // Any other code means "stop now" to the peer: that is a close, not a drain.
        if self.phase != Phase::Open || !graceful {
            self.close(now, code, reason);
            return;
        }
        if self.goaway_sent.is_some() {
            return;
        }
        let last_stream = self.streams.start_refusing();
        let (last_request, last_message) = self.exchanges.start_refusing();
        self.fx.push_frame(Frame::GoAway(GoAway {
            code,
            last_stream,
            last_request,
            last_message,
            reason: String::from(reason),
        }));
        self.goaway_sent = Some(code);
        self.drain_deadline = Some(now.saturating_add(self.config.drain_timeout));
        self.after_activity(now);
    }

    /// Closes at once: everything in flight fails, the peer gets GOAWAY with `code`, and the
    /// driver should close the transport when [`is_finished`](Self::is_finished).
    pub fn close(&mut self, now: Timestamp, code: ErrorCode, reason: &str) {
        if self.phase == Phase::Closed {
            return;
        }
        let error = ConnectionError::LocallyClosed {
            code,
            reason: String::from(reason),
        };
        match self.phase {
            // The peer may not even speak Tether, or (as a server) expects only WELCOME or
            // REFUSE: no GOAWAY; a client just drops the transport.
            Phase::AwaitClientPreface | Phase::AwaitServerPreface | Phase::AwaitWelcome => {
                self.terminate(now, error, false);
            }
            Phase::Deciding => self.refuse(now, code, String::from(reason)),
            Phase::AwaitHello | Phase::Open | Phase::Closed => {
                self.close_with_goaway(now, code, String::from(reason), error);
            }
        }
    }

    /// Ends the connection because the peer broke the protocol.
    pub(super) fn fail(&mut self, now: Timestamp, violation: ProtocolViolation) {
        let code = violation.code();
        let reason = violation.to_string();
        self.close_with_goaway(
            now,
            code,
            reason,
            ConnectionError::ProtocolViolation(violation),
        );
    }

    /// Replaces all pending output with one GOAWAY carrying `code`, then terminates.
    fn close_with_goaway(
        &mut self,
        now: Timestamp,
        code: ErrorCode,
        reason: String,
        error: ConnectionError,
    ) {
        self.fx.clear_control();
        self.pending_pong = None;
        self.fx.push_frame(Frame::GoAway(GoAway {
            code,
            last_stream: self.streams.last_remote_id(),
            last_request: self.exchanges.last_peer_ids().0,
            last_message: self.exchanges.last_peer_ids().1,
            reason,
        }));
        self.terminate(now, error, true);
    }

    /// The peer's GOAWAY.
    pub(super) fn on_goaway(&mut self, now: Timestamp, goaway: GoAway) {
        let graceful = goaway.code == ErrorCode::OK || goaway.code == ErrorCode::GOING_AWAY;
        if !graceful {
            let error = ConnectionError::PeerClosed {
                code: goaway.code,
                reason: goaway.reason,
            };
            self.terminate(now, error, false);
            return;
        }
        self.streams
            .on_peer_goaway(goaway.last_stream, &mut self.fx);
        self.exchanges
            .on_peer_goaway(goaway.last_request, goaway.last_message, &mut self.fx);
        if self.goaway_received.is_none() {
            self.fx.emit(Event::GoAway {
                code: goaway.code,
                reason: goaway.reason.clone(),
            });
        }
        self.goaway_received = Some(goaway);
    }

    /// Ends the connection: records the error, emits `ConnectionLost` once, and forgets all
    /// streams and in-flight work. With `flush`, frames already queued (a REFUSE, a final
    /// GOAWAY, acknowledgements) still go out; without it, nothing more is sent.
    pub(super) fn terminate(&mut self, now: Timestamp, error: ConnectionError, flush: bool) {
        if self.phase == Phase::Closed {
            return;
        }
        self.phase = Phase::Closed;
        if !flush {
            self.fx.clear_control();
            self.raw_out.clear();
            self.pending_pong = None;
        }
        self.fx.seal();
        // Bytes and FINs already received stay readable, as a socket's buffered bytes do
        // after its peer closed: the peer counts them as delivered. Everything else that
        // needed the peer is gone.
        self.streams.keep_only_readable();
        self.exchanges = Exchanges::new(&self.config);
        self.framer = crate::codec::Framer::default();
        self.preface = alloc::vec::Vec::new();
        self.probe = None;
        self.error = Some(error.clone());
        self.fx.emit(Event::ConnectionLost(error));
        self.linger_deadline = Some(now.saturating_add(self.config.close_linger));
        self.finished = !self.has_pending_output();
    }

    /// Work common to the end of every input: unblock senders, finish a drain.
    pub(super) fn after_activity(&mut self, now: Timestamp) {
        if self.phase != Phase::Open {
            return;
        }
        let config: &Config = &self.config;
        self.exchanges
            .check_unblocked(config, &self.peer_settings, &mut self.fx);
        if self.is_going_away() && self.streams.is_idle() && self.exchanges.is_idle() {
            let error = match (&self.goaway_received, self.goaway_sent) {
                (_, Some(code)) => ConnectionError::LocallyClosed {
                    code,
                    reason: String::new(),
                },
                (Some(goaway), None) => ConnectionError::PeerClosed {
                    code: goaway.code,
                    reason: goaway.reason.clone(),
                },
                (None, None) => return,
            };
            self.terminate(now, error, true);
        }
    }
}
