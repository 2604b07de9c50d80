//! Input from the transport: buffering, frame decoding, and dispatch to the subsystems.

use super::{Connection, Phase};
use crate::budget::BudgetKind;
use crate::codec::{DecodeLimits, Frame};
use crate::error::{ConnectionError, ProtocolViolation};
use crate::event::Event;
use crate::time::Timestamp;

impl Connection {
    /// Feeds bytes received from the transport and processes every complete frame.
    ///
    /// Returns how many bytes were taken, at most [`input_capacity`](Self::input_capacity);
    /// the driver keeps the rest and offers them again after draining the outputs. After
    /// the connection closed, input is ignored (and reported as taken).
    pub fn handle_input(&mut self, now: Timestamp, data: &[u8]) -> usize {
        if self.phase == Phase::Closed {
            return data.len();
        }
        let take = self.input_capacity().min(data.len());
        if take == 0 {
            return 0;
        }
        self.last_received = now;
        let left = self.process_input(now, data.get(..take).unwrap_or_default());
        let taken = take.saturating_sub(left);
        self.stats.bytes_in = self.stats.bytes_in.saturating_add(taken as u64);
        self.after_activity(now);
        taken
    }

    /// The transport reached end of input (the peer closed its side, or the read failed).
    pub fn handle_eof(&mut self, now: Timestamp) {
        if self.phase == Phase::Closed {
            self.finished = true;
            return;
        }
        let error = if let Some(goaway) = &self.goaway_received {
            ConnectionError::PeerClosed {
                code: goaway.code,
                reason: goaway.reason.clone(),
            }
        } else if let Some(code) = self.goaway_sent {
            ConnectionError::LocallyClosed {
                code,
                reason: alloc::string::String::new(),
            }
        } else {
            ConnectionError::TransportClosed
        };
        self.terminate(now, error, false);
        self.finished = true;
    }

    /// Processes `input`; returns how many bytes at its end were left for the driver to
    /// offer again (because replies or events backed up).
    fn process_input(&mut self, now: Timestamp, input: &[u8]) -> usize {
        if !matches!(
            self.phase,
            Phase::AwaitClientPreface | Phase::AwaitServerPreface
        ) {
            return self.process_frames(now, input);
        }
        // The preface is a few dozen bytes: collect it, then frame what follows it straight
        // from the caller's slice.
        let before = self.preface.len();
        self.preface.extend_from_slice(input);
        let used = match self.phase {
            Phase::AwaitClientPreface => self.on_client_preface_bytes(now),
            _ => self.on_server_preface_bytes(now),
        };
        let Some(used) = used else {
            return 0;
        };
        self.preface = alloc::vec::Vec::new();
        let from_input = used.saturating_sub(before);
        self.process_frames(now, input.get(from_input..).unwrap_or_default())
    }

    fn decode_limits(&self) -> DecodeLimits {
        DecodeLimits {
            max_frame_size: self.config.settings.max_frame_size,
            max_handshake_size: self.config.max_handshake_size,
        }
    }

    /// Decodes and handles the frames in `input`, keeping an incomplete one. Stops early,
    /// between frames, once our replies or events back up past their thresholds (the peer
    /// is not reading, or the application is not keeping up), and returns how many bytes it
    /// left: they stay with the driver instead of turning into more queued output.
    fn process_frames(&mut self, now: Timestamp, mut input: &[u8]) -> usize {
        let limits = self.decode_limits();
        while self.phase != Phase::Closed {
            match self.framer.next_frame(&mut input, limits) {
                Ok(Some(frame)) => {
                    self.stats.frames_in = self.stats.frames_in.saturating_add(1);
                    if let Err(violation) = self.on_frame(now, frame) {
                        self.fail(now, violation);
                        return 0;
                    }
                    if self.backlogged() {
                        return input.len();
                    }
                }
                Ok(None) => return 0,
                Err(e) => {
                    self.fail(now, ProtocolViolation::Decode(e));
                    return 0;
                }
            }
        }
        0
    }

    fn on_frame(&mut self, now: Timestamp, frame: Frame) -> Result<(), ProtocolViolation> {
        match self.phase {
            Phase::AwaitHello => return self.on_hello_frame(now, frame),
            Phase::AwaitWelcome => return self.on_welcome_frame(now, frame),
            Phase::Deciding => {
                // A client that detected a problem may say so with GOAWAY before WELCOME;
                // anything else has to wait for our decision.
                if let Frame::GoAway(goaway) = frame {
                    let error = ConnectionError::PeerClosed {
                        code: goaway.code,
                        reason: goaway.reason,
                    };
                    self.terminate(now, error, false);
                    return Ok(());
                }
                return Err(ProtocolViolation::UnexpectedFrame {
                    ty: frame.frame_type(),
                    during: "before WELCOME",
                });
            }
            Phase::Open => {}
            Phase::AwaitClientPreface | Phase::AwaitServerPreface | Phase::Closed => return Ok(()),
        }
        // Frames handled by the connection itself first; the rest go to a subsystem.
        let frame = match frame {
            Frame::Hello(_) | Frame::Welcome(_) | Frame::Refuse { .. } => {
                return Err(ProtocolViolation::UnexpectedFrame {
                    ty: frame.frame_type(),
                    during: "after the handshake",
                });
            }
            Frame::Ping { ack: false, opaque } => {
                self.budgets
                    .spend(now, BudgetKind::Pings)
                    .map_err(ProtocolViolation::Budget)?;
                self.pending_pong = Some(opaque);
                return Ok(());
            }
            Frame::Ping { ack: true, opaque } => return self.on_ping_ack(now, opaque),
            Frame::GoAway(goaway) => {
                self.on_goaway(now, goaway);
                return Ok(());
            }
            Frame::Register { remove, entries } => return self.on_register(now, remove, entries),
            other => other,
        };
        let mut cx = context!(self, now);
        let streams = &mut self.streams;
        let exchanges = &mut self.exchanges;
        match frame {
            Frame::MaxStreams { max } => streams.on_max_streams(max, &mut cx),
            Frame::Window { stream, increment } => streams.on_window(stream, increment, &mut cx),
            Frame::MessageWindow { increment } => exchanges.on_message_window(increment, &mut cx),
            Frame::Open {
                id,
                address,
                metadata,
            } => streams.on_open(id, address, metadata, &mut cx),
            Frame::Accept { id, metadata } => streams.on_accept(id, metadata, &mut cx),
            Frame::Data { id, fin, payload } => streams.on_data(id, fin, payload, &mut cx),
            Frame::Reset { id, code, reason } => streams.on_reset(id, code, reason, &mut cx),
            Frame::Stop { id, code } => streams.on_stop(id, code, &mut cx),
            Frame::Request {
                id,
                more,
                head,
                body,
            } => exchanges.on_request(id, more, head, body, &mut cx),
            Frame::Response {
                id,
                more,
                head,
                body,
            } => exchanges.on_response(id, more, head, body, &mut cx),
            Frame::Cancel { id } => exchanges.on_cancel(id, &mut cx),
            Frame::Message {
                id,
                more,
                head,
                body,
            } => exchanges.on_message(id, more, head, body, &mut cx),
            Frame::Ack { id, code, text } => exchanges.on_ack(id, code, text, &mut cx),
            Frame::MessageCancel { id } => exchanges.on_message_cancel(id, &mut cx),
            Frame::Hello(_)
            | Frame::Welcome(_)
            | Frame::Refuse { .. }
            | Frame::Ping { .. }
            | Frame::GoAway(_)
            | Frame::Register { .. } => Ok(()),
        }
    }

    fn on_ping_ack(&mut self, now: Timestamp, opaque: u64) -> Result<(), ProtocolViolation> {
        match self.probe {
            Some(probe) if probe.opaque == opaque => {
                let rtt = now.saturating_duration_since(probe.sent_at);
                self.rtt = Some(rtt);
                self.probe = None;
                if probe.user {
                    self.fx.emit(Event::PingAcked { rtt });
                }
                Ok(())
            }
            _ => self
                .budgets
                .spend(now, BudgetKind::WastedFrames)
                .map_err(ProtocolViolation::Budget),
        }
    }
}
