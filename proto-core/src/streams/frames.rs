//! Frames from the peer that drive the streams: OPEN, ACCEPT, DATA, RESET, STOP, WINDOW
//! and MAX_STREAMS.
//!
//! Spec: `docs/PROTOCOL.md#streams` and `docs/PROTOCOL.md#flow-control`.

use alloc::string::String;

use bytes::Bytes;

use super::state::{RecvInput, RecvState, SendInput, SendState, Transition};
use super::{Opening, StreamState, StreamsState};
use crate::budget::BudgetKind;
use crate::code::ErrorCode;
use crate::codec::{Address, Frame, FrameType};
use crate::context::Context;
use crate::effects::{Control, Effects};
use crate::error::ProtocolViolation;
use crate::event::{Event, StreamEvent};
use crate::ids::StreamId;

impl StreamsState {
    /// Classifies a frame for an id not in the map: a stream that existed and closed (the
    /// frame is stale and ignored) or one that was never opened (a violation).
    fn unknown(&self, ty: FrameType, id: StreamId) -> Result<(), ProtocolViolation> {
        let opened = if id.initiator() == self.side {
            id.sequence() < self.next_local
        } else {
            id.sequence() < self.next_remote
        };
        if opened {
            Ok(())
        } else {
            Err(ProtocolViolation::UnknownStream { ty, id: id.raw() })
        }
    }

    pub(crate) fn on_open(
        &mut self,
        id: StreamId,
        address: Address,
        metadata: Bytes,
        cx: &mut Context<'_>,
    ) -> Result<(), ProtocolViolation> {
        if id.initiator() == self.side || id.sequence() != self.next_remote {
            let expected =
                StreamId::nth(self.side.peer(), self.next_remote).map_or(0, StreamId::raw);
            return Err(ProtocolViolation::StreamOutOfOrder {
                expected,
                got: id.raw(),
            });
        }
        if id.sequence() > self.remote_credit {
            return Err(ProtocolViolation::StreamLimit {
                id: id.raw(),
                limit: self.remote_credit,
            });
        }
        let max_meta = u64::from(cx.config.settings.max_open_metadata);
        let meta_len = u64::try_from(metadata.len()).unwrap_or(u64::MAX);
        if meta_len > max_meta {
            return Err(ProtocolViolation::TooLarge {
                ty: FrameType::Open,
                len: meta_len,
                max: max_meta,
            });
        }
        self.next_remote = self.next_remote.saturating_add(1);
        self.last_remote_id = id.raw();
        if self.refuse_above.is_some_and(|last| id.raw() > last) {
            // Opened before the peer saw our GOAWAY, which already told it this stream will
            // not be processed: forget it without a reply.
            self.on_remote_closed(cx.fx);
            return Ok(());
        }
        let refusal = if self.pending_accept >= cx.config.max_pending_accept {
            cx.spend(BudgetKind::LocalResets)?;
            Some((
                ErrorCode::REFUSED,
                "too many streams waiting to be accepted",
            ))
        } else {
            None
        };
        if let Some((code, reason)) = refusal {
            cx.fx.push_frame(Frame::Reset {
                id,
                code,
                reason: String::from(reason),
            });
            self.on_remote_closed(cx.fx);
            return Ok(());
        }
        let mut stream = StreamState::new(
            Opening::Remote { accepted: false },
            cx.peer.initial_stream_window,
            cx.config.settings.initial_stream_window,
        );
        stream.open_info = Some((address, metadata));
        self.map.insert(id, stream);
        self.pending_accept = self.pending_accept.saturating_add(1);
        self.incoming.push_back(id);
        if !self.incoming_notified {
            self.incoming_notified = true;
            cx.fx.emit(Event::IncomingStreams);
        }
        Ok(())
    }

    pub(crate) fn on_accept(
        &mut self,
        id: StreamId,
        metadata: Bytes,
        cx: &mut Context<'_>,
    ) -> Result<(), ProtocolViolation> {
        if id.initiator() != self.side {
            return Err(ProtocolViolation::StreamState {
                id: id.raw(),
                what: "ACCEPT for a stream the peer opened",
            });
        }
        let Some(stream) = self.map.get_mut(&id) else {
            self.unknown(FrameType::Accept, id)?;
            return cx.spend(BudgetKind::WastedFrames);
        };
        if stream.opening != (Opening::Local { accepted: false }) {
            return Err(ProtocolViolation::StreamState {
                id: id.raw(),
                what: "second ACCEPT",
            });
        }
        let max = u64::from(cx.config.settings.max_open_metadata);
        let len = u64::try_from(metadata.len()).unwrap_or(u64::MAX);
        if len > max {
            return Err(ProtocolViolation::TooLarge {
                ty: FrameType::Accept,
                len,
                max,
            });
        }
        stream.opening = Opening::Local { accepted: true };
        cx.fx
            .emit(Event::Stream(StreamEvent::Accepted { id, metadata }));
        Ok(())
    }

    pub(crate) fn on_data(
        &mut self,
        id: StreamId,
        fin: bool,
        payload: Bytes,
        cx: &mut Context<'_>,
    ) -> Result<(), ProtocolViolation> {
        let len = u64::try_from(payload.len()).unwrap_or(u64::MAX);
        // Connection credit is spent by every DATA frame, even one for a closed stream.
        self.conn_recv
            .on_receive(len)
            .map_err(|e| ProtocolViolation::FlowControl {
                what: "connection window",
                limit: e.limit,
                attempted: e.attempted,
            })?;
        if len == 0 && !fin {
            cx.spend(BudgetKind::EmptyFrames)?;
        }
        let Some(stream) = self.map.get_mut(&id) else {
            self.unknown(FrameType::Data, id)?;
            self.discard_conn(len, cx.fx);
            return cx.spend(BudgetKind::WastedFrames);
        };
        if stream.opening == (Opening::Local { accepted: false }) {
            return Err(ProtocolViolation::StreamState {
                id: id.raw(),
                what: "DATA before ACCEPT",
            });
        }
        stream
            .recv_window
            .on_receive(len)
            .map_err(|e| ProtocolViolation::FlowControl {
                what: "stream window",
                limit: e.limit,
                attempted: e.attempted,
            })?;
        let input = if fin {
            RecvInput::DataFin
        } else {
            RecvInput::Data
        };
        let next = match stream.recv.on(input) {
            Transition::To(next) => next,
            Transition::Ignore => stream.recv,
            Transition::Invalid(what) => {
                return Err(ProtocolViolation::StreamState { id: id.raw(), what });
            }
        };
        let discarding = matches!(stream.recv, RecvState::Stopping);
        stream.recv = next;
        if discarding {
            stream.recv_window.on_consume(len);
        } else {
            if !payload.is_empty() {
                stream.recv_buf.push(payload);
            }
            if !stream.readable_notified {
                stream.readable_notified = true;
                cx.fx.emit(Event::Stream(StreamEvent::Readable { id }));
            }
            return Ok(());
        }
        self.discard_conn(len, cx.fx);
        self.reap(id, cx.fx);
        Ok(())
    }

    /// Returns connection credit for bytes we dropped without buffering.
    fn discard_conn(&mut self, len: u64, fx: &mut Effects) {
        self.conn_recv.on_consume(len);
        if self.conn_recv.wants_update() {
            fx.push_credit(Control::ConnectionWindow);
        }
    }

    pub(crate) fn on_reset(
        &mut self,
        id: StreamId,
        code: ErrorCode,
        reason: String,
        cx: &mut Context<'_>,
    ) -> Result<(), ProtocolViolation> {
        let Some(stream) = self.map.get_mut(&id) else {
            self.unknown(FrameType::Reset, id)?;
            return cx.spend(BudgetKind::WastedFrames);
        };
        if stream.opening == (Opening::Local { accepted: false }) {
            // RESET before ACCEPT is a refusal: the whole stream is gone. If we reset it
            // first, this is only the peer closing its half; there is nothing to report.
            if stream.send != SendState::ResetSent {
                cx.fx
                    .emit(Event::Stream(StreamEvent::Refused { id, code, reason }));
            }
            self.remove(id, cx.fx);
            return Ok(());
        }
        if stream.opening == (Opening::Remote { accepted: false }) {
            // Reset before we took a decision: rapid-reset territory.
            cx.spend(BudgetKind::PeerResets)?;
        }
        let next = match stream.recv.on(RecvInput::Reset) {
            Transition::To(next) => next,
            Transition::Ignore => return cx.spend(BudgetKind::WastedFrames),
            Transition::Invalid(what) => {
                return Err(ProtocolViolation::StreamState { id: id.raw(), what });
            }
        };
        let notify = matches!(stream.recv, RecvState::Open);
        stream.recv = next;
        let dropped = stream.recv_window.buffered();
        stream.recv_window.on_consume(dropped);
        stream.recv_buf.clear();
        let unaccepted = stream.opening == (Opening::Remote { accepted: false });
        let taken = stream.open_info.is_none();
        if notify && (!unaccepted || taken) {
            stream.reset_by_peer = Some((code, reason.clone()));
            cx.fx
                .emit(Event::Stream(StreamEvent::Reset { id, code, reason }));
        }
        self.discard_conn(dropped, cx.fx);
        if unaccepted {
            // Never accepted: close our half too, so the opener can forget the stream, and
            // forget it entirely. If the application had not even taken it, it never hears
            // of the stream (no handler runs for a rapid reset).
            cx.fx.push_frame(Frame::Reset {
                id,
                code: ErrorCode::CANCELLED,
                reason: String::new(),
            });
            self.remove_unaccepted(id, cx.fx);
        } else {
            self.reap(id, cx.fx);
        }
        Ok(())
    }

    /// Drops a peer stream reset before the application decided on it.
    fn remove_unaccepted(&mut self, id: StreamId, fx: &mut Effects) {
        if let Some(stream) = self.map.get_mut(&id) {
            stream.send = SendState::ResetSent;
        }
        self.remove(id, fx);
    }

    pub(crate) fn on_stop(
        &mut self,
        id: StreamId,
        code: ErrorCode,
        cx: &mut Context<'_>,
    ) -> Result<(), ProtocolViolation> {
        let Some(stream) = self.map.get_mut(&id) else {
            self.unknown(FrameType::Stop, id)?;
            return cx.spend(BudgetKind::WastedFrames);
        };
        if stream.opening == (Opening::Local { accepted: false }) {
            return Err(ProtocolViolation::StreamState {
                id: id.raw(),
                what: "STOP before ACCEPT",
            });
        }
        if stream.opening == (Opening::Remote { accepted: false }) {
            // The opener gave up reading before we decided: drop the stream as if refused,
            // closing our half so the opener can forget it too.
            cx.spend(BudgetKind::PeerResets)?;
            cx.fx.push_frame(Frame::Reset {
                id,
                code,
                reason: String::new(),
            });
            self.remove_unaccepted(id, cx.fx);
            return Ok(());
        }
        match stream.send.on(SendInput::StopReceived) {
            Transition::To(next) => {
                stream.send = next;
                stream.send_buf.clear();
                stream.send_buffered = 0;
                stream.stopped_by_peer = Some(code);
                stream.wants_writable = false;
                cx.fx.push_frame(Frame::Reset {
                    id,
                    code,
                    reason: String::new(),
                });
                cx.fx.emit(Event::Stream(StreamEvent::Stopped { id, code }));
                self.reap(id, cx.fx);
                Ok(())
            }
            Transition::Ignore => cx.spend(BudgetKind::WastedFrames),
            Transition::Invalid(what) => Err(ProtocolViolation::StreamState { id: id.raw(), what }),
        }
    }

    pub(crate) fn on_window(
        &mut self,
        stream: Option<StreamId>,
        increment: u32,
        cx: &mut Context<'_>,
    ) -> Result<(), ProtocolViolation> {
        let window = if stream.is_some() {
            cx.peer.initial_stream_window
        } else {
            cx.peer.connection_window
        };
        if crate::flow::is_tiny_grant(increment, window) {
            // Tiny grants are how a peer makes us emit tiny frames (data dribble).
            cx.spend(BudgetKind::WastedFrames)?;
        }
        let Some(id) = stream else {
            let before = self.conn_send.available();
            self.conn_send
                .grant(increment)
                .map_err(|_| ProtocolViolation::FlowControl {
                    what: "connection credit overflow",
                    limit: crate::codec::MAX_WINDOW,
                    attempted: before.saturating_add(u64::from(increment)),
                })?;
            return Ok(());
        };
        let Some(s) = self.map.get_mut(&id) else {
            self.unknown(FrameType::Window, id)?;
            return cx.spend(BudgetKind::WastedFrames);
        };
        let before = s.send_credit.available();
        s.send_credit
            .grant(increment)
            .map_err(|_| ProtocolViolation::FlowControl {
                what: "stream credit overflow",
                limit: crate::codec::MAX_WINDOW,
                attempted: before.saturating_add(u64::from(increment)),
            })?;
        if s.wants_writable && s.writable(cx.config.stream_send_buffer) > 0 {
            s.wants_writable = false;
            cx.fx.emit(Event::Stream(StreamEvent::Writable { id }));
        }
        Ok(())
    }

    pub(crate) fn on_max_streams(
        &mut self,
        max: u64,
        cx: &mut Context<'_>,
    ) -> Result<(), ProtocolViolation> {
        if max < self.local_credit {
            return Err(ProtocolViolation::StreamCreditDecreased {
                from: self.local_credit,
                to: max,
            });
        }
        if max == self.local_credit {
            return cx.spend(BudgetKind::WastedFrames);
        }
        self.local_credit = max;
        if self.open_blocked {
            self.open_blocked = false;
            cx.fx.emit(Event::Unblocked);
        }
        Ok(())
    }
}
