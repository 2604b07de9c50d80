//! Output to the transport: what goes out, in which order.
//!
//! Order: raw bytes (prefaces), control frames (credit, acknowledgements, resets, GOAWAY),
//! the PING reply, then message fragments and stream data taking turns, so an RPC waits at
//! most one data frame behind a bulk transfer on the same connection.

use super::{Connection, Phase};
use crate::codec::Frame;
use crate::effects::Control;
use crate::time::Timestamp;
use crate::transmit::TransmitBuf;

impl Connection {
    /// Appends frames to `buf` until it reaches its soft limit or nothing is left to send,
    /// and returns how many bytes were added. Call after every `handle_*` call and command,
    /// and whenever the transport can take more; write `buf`'s chunks and `advance` it.
    #[must_use = "the bytes appended must be written to the transport"]
    pub fn poll_transmit(&mut self, now: Timestamp, buf: &mut TransmitBuf) -> usize {
        if self.finished {
            return 0;
        }
        let start = buf.len();
        if !self.raw_out.is_empty() {
            crate::codec::Sink::put_slice(buf, &self.raw_out);
            self.raw_out.clear();
        }
        while !buf.is_full() {
            let Some(frame) = self.next_frame(now) else {
                break;
            };
            // Frames are built within the peer's limits, so encoding cannot fail; a frame
            // that somehow could not be encoded is dropped rather than corrupting the wire.
            if frame.encode(buf).is_ok() {
                self.stats.frames_out = self.stats.frames_out.saturating_add(1);
            }
        }
        let added = buf.len().saturating_sub(start);
        self.stats.bytes_out = self.stats.bytes_out.saturating_add(added as u64);
        if self.phase == Phase::Closed {
            if !self.has_pending_output() {
                self.finished = true;
            }
        } else {
            self.after_activity(now);
        }
        added
    }

    /// True if [`poll_transmit`](Self::poll_transmit) would produce bytes now: a driver on
    /// readiness I/O registers write interest only while this holds.
    pub fn has_pending_output(&self) -> bool {
        if !self.raw_out.is_empty() || self.fx.has_control() || self.pending_pong.is_some() {
            return true;
        }
        self.phase == Phase::Open
            && (self.streams.has_sendable()
                || self
                    .exchanges
                    .outbox
                    .has_sendable(&self.exchanges.send_credit))
    }

    fn next_frame(&mut self, now: Timestamp) -> Option<Frame> {
        while let Some(control) = self.fx.pop_control() {
            if let Some(frame) = self.control_frame(now, control) {
                return Some(frame);
            }
        }
        if let Some(opaque) = self.pending_pong.take() {
            return Some(Frame::Ping { ack: true, opaque });
        }
        if self.phase != Phase::Open {
            return None;
        }
        let max_frame = self.peer_settings.max_frame_size as usize;
        for _ in 0..2 {
            self.exchange_turn = !self.exchange_turn;
            let frame = if self.exchange_turn {
                self.exchanges
                    .outbox
                    .poll_fragment(max_frame, &mut self.exchanges.send_credit)
            } else {
                self.streams
                    .poll_data(max_frame, &self.config, &mut self.fx)
            };
            if frame.is_some() {
                return frame;
            }
        }
        None
    }

    /// Builds a queued control frame; credit frames are computed now, so their grant is as
    /// large as possible (and skipped if there is nothing to grant any more).
    fn control_frame(&mut self, now: Timestamp, control: Control) -> Option<Frame> {
        match control {
            Control::Frame(frame) => Some(frame),
            Control::StreamWindow(id) => self
                .streams
                .take_stream_update(id, now, self.rtt, &self.config)
                .map(|increment| Frame::Window {
                    stream: Some(id),
                    increment,
                }),
            Control::ConnectionWindow => {
                self.streams
                    .take_connection_update(now)
                    .map(|increment| Frame::Window {
                        stream: None,
                        increment,
                    })
            }
            Control::MessageWindow => self
                .exchanges
                .recv_window
                .take_update(now)
                .map(|increment| Frame::MessageWindow { increment }),
            Control::MaxStreams => self
                .streams
                .take_max_streams()
                .map(|max| Frame::MaxStreams { max }),
        }
    }
}
