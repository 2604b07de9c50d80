//! Stream multiplexing: opening, accepting, per-stream state, and the frames that drive it.
//!
//! Streams are bidirectional byte pipes with independent halves (FIN, RESET and STOP act on
//! one half). Each has its own flow-control window, and the connection has one more for all
//! stream data, so a slow reader on one stream holds at most its own window of the
//! connection's credit.
//!
//! Spec: `docs/PROTOCOL.md#streams`.

mod handle;
mod io;
mod recv_buffer;
pub(crate) mod state;
mod transmit;

use alloc::collections::{BTreeMap, VecDeque};
use alloc::string::String;

use bytes::Bytes;

pub use handle::{IncomingStream, Stream};
use recv_buffer::RecvBuffer;
use state::{RecvInput, RecvState, SendInput, SendState, Transition};

use crate::budget::BudgetKind;
use crate::code::ErrorCode;
use crate::codec::{Address, Frame, FrameType};
use crate::config::{Config, Settings};
use crate::context::Context;
use crate::effects::{Control, Effects};
use crate::error::{OpenError, ProtocolViolation, StreamError};
use crate::event::{Event, StreamEvent};
use crate::flow::{RecvWindow, SendCredit};
use crate::ids::{Side, StreamId};

/// How a stream came to be and whether it has been accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Opening {
    /// We opened it.
    Local {
        /// The peer sent ACCEPT.
        accepted: bool,
    },
    /// The peer opened it.
    Remote {
        /// We sent ACCEPT.
        accepted: bool,
    },
}

/// Everything we keep per stream.
#[derive(Debug)]
pub(crate) struct StreamState {
    pub(crate) opening: Opening,
    /// Address and metadata of a peer-opened stream until the application takes it.
    pub(crate) open_info: Option<(Address, Bytes)>,
    pub(crate) send: SendState,
    pub(crate) send_buf: VecDeque<Bytes>,
    pub(crate) send_buffered: u64,
    pub(crate) send_credit: SendCredit,
    /// The code of a STOP from the peer, reported to later writes.
    pub(crate) stopped_by_peer: Option<ErrorCode>,
    pub(crate) recv: RecvState,
    pub(crate) recv_buf: RecvBuffer,
    pub(crate) recv_window: RecvWindow,
    /// The peer's RESET, reported to later reads.
    pub(crate) reset_by_peer: Option<(ErrorCode, String)>,
    /// A `Readable` event was emitted and the application has not yet read to `Blocked`.
    pub(crate) readable_notified: bool,
    /// A write was cut short; emit `Writable` when capacity returns.
    pub(crate) wants_writable: bool,
    /// The stream is in the transmit round-robin.
    pub(crate) in_ready: bool,
    /// A WINDOW update for this stream is queued (one is enough: its size is computed
    /// when sent).
    pub(crate) window_queued: bool,
}

impl StreamState {
    fn new(opening: Opening, send_window: u32, recv_window: u32) -> Self {
        StreamState {
            opening,
            open_info: None,
            send: SendState::Open,
            send_buf: VecDeque::new(),
            send_buffered: 0,
            send_credit: SendCredit::new(send_window),
            stopped_by_peer: None,
            recv: RecvState::Open,
            recv_buf: RecvBuffer::default(),
            recv_window: RecvWindow::new(recv_window),
            reset_by_peer: None,
            readable_notified: false,
            wants_writable: false,
            in_ready: false,
            window_queued: false,
        }
    }

    /// Both halves are finished: the stream can be forgotten.
    fn is_closed(&self) -> bool {
        self.send.is_terminal() && self.recv.is_terminal()
    }

    /// Bytes the application may write now: bounded by the peer's credit (we never buffer
    /// more than the peer let us send) and by our send buffer.
    pub(crate) fn writable(&self, send_buffer: u32) -> u64 {
        let by_credit = self
            .send_credit
            .available()
            .saturating_sub(self.send_buffered);
        let by_buffer = u64::from(send_buffer).saturating_sub(self.send_buffered);
        by_credit.min(by_buffer)
    }
}

/// Largest metadata the peer accepts on OPEN or ACCEPT when the rest of the payload takes
/// `fixed` bytes: its advertised limit, bounded by its frame size and the 16-bit length.
fn max_metadata(peer: &Settings, fixed: usize) -> usize {
    let by_setting = usize::try_from(peer.max_open_metadata).unwrap_or(usize::MAX);
    let by_frame = usize::try_from(peer.max_frame_size)
        .unwrap_or(usize::MAX)
        .saturating_sub(fixed);
    by_setting.min(by_frame).min(usize::from(u16::MAX))
}

/// All streams of one connection.
#[derive(Debug)]
pub(crate) struct StreamsState {
    side: Side,
    pub(crate) map: BTreeMap<StreamId, StreamState>,
    /// Sequence number (1-based) of the next stream we open.
    next_local: u64,
    /// Cumulative streams the peer lets us open (its MAX_STREAMS).
    local_credit: u64,
    /// An open failed for lack of credit: tell the application when credit arrives.
    open_blocked: bool,
    /// Sequence number of the next stream the peer may open.
    next_remote: u64,
    /// Cumulative streams we let the peer open.
    remote_credit: u64,
    /// Peer streams closed since we last raised `remote_credit`.
    remote_closed_ungranted: u64,
    /// Our `max_concurrent_streams`.
    max_concurrent: u64,
    /// Peer-opened streams the application has not taken yet.
    incoming: VecDeque<StreamId>,
    incoming_notified: bool,
    /// Peer-opened streams neither accepted nor refused.
    pending_accept: u32,
    /// Our window for stream data on the whole connection.
    pub(crate) conn_recv: RecvWindow,
    /// The peer's window for our stream data on the whole connection.
    pub(crate) conn_send: SendCredit,
    /// Streams with bytes or a FIN to send, in round-robin order.
    pub(crate) ready: VecDeque<StreamId>,
    /// Sum over live streams of window growth beyond the initial window.
    pub(crate) autotune_extra: u64,
    /// Our initial stream window, the base that auto-tuning grows from.
    initial_window: u32,
    /// We sent GOAWAY: peer streams above this id are refused.
    refuse_above: Option<u64>,
    /// Highest stream id the peer opened.
    last_remote_id: u64,
}

impl StreamsState {
    pub(crate) fn new(side: Side, config: &Config) -> Self {
        let peer = Settings::DEFAULT;
        StreamsState {
            side,
            map: BTreeMap::new(),
            next_local: 1,
            local_credit: u64::from(peer.max_concurrent_streams),
            open_blocked: false,
            next_remote: 1,
            remote_credit: u64::from(config.settings.max_concurrent_streams),
            remote_closed_ungranted: 0,
            max_concurrent: u64::from(config.settings.max_concurrent_streams),
            incoming: VecDeque::new(),
            incoming_notified: false,
            pending_accept: 0,
            conn_recv: RecvWindow::new(config.settings.connection_window),
            conn_send: SendCredit::new(peer.connection_window),
            ready: VecDeque::new(),
            autotune_extra: 0,
            initial_window: config.settings.initial_stream_window,
            refuse_above: None,
            last_remote_id: 0,
        }
    }

    /// Adopts the peer's advertised limits once the handshake completes.
    pub(crate) fn on_peer_settings(&mut self, peer: &Settings) {
        self.local_credit = u64::from(peer.max_concurrent_streams);
        self.conn_send = SendCredit::new(peer.connection_window);
    }

    /// True when no stream is open and none waits to be accepted.
    pub(crate) fn is_idle(&self) -> bool {
        self.map.is_empty()
    }

    pub(crate) fn open(
        &mut self,
        address: Address,
        metadata: Bytes,
        peer: &Settings,
        config: &Config,
        fx: &mut Effects,
    ) -> Result<StreamId, OpenError> {
        // OPEN must fit the peer's frame: id, name length and name, metadata length.
        let fixed = 8usize
            .saturating_add(1)
            .saturating_add(address.peer_name.len())
            .saturating_add(2);
        let max_meta = max_metadata(peer, fixed);
        if metadata.len() > max_meta {
            return Err(OpenError::MetadataTooLarge {
                len: metadata.len(),
                max: max_meta,
            });
        }
        if self.next_local > self.local_credit {
            self.open_blocked = true;
            return Err(OpenError::StreamLimit);
        }
        let id = StreamId::nth(self.side, self.next_local).ok_or(OpenError::StreamLimit)?;
        self.next_local = self.next_local.saturating_add(1);
        let stream = StreamState::new(
            Opening::Local { accepted: false },
            peer.initial_stream_window,
            config.settings.initial_stream_window,
        );
        self.map.insert(id, stream);
        fx.push_frame(Frame::Open {
            id,
            address,
            metadata,
        });
        Ok(id)
    }

    /// Takes the next peer-opened stream waiting for a decision.
    pub(crate) fn next_incoming(&mut self) -> Option<IncomingStream> {
        while let Some(id) = self.incoming.pop_front() {
            // A stream reset before it was taken is gone: the application never sees it.
            if let Some((address, metadata)) =
                self.map.get_mut(&id).and_then(|s| s.open_info.take())
            {
                return Some(IncomingStream {
                    id,
                    address,
                    metadata,
                });
            }
        }
        self.incoming_notified = false;
        None
    }

    fn pending_remote(&mut self, id: StreamId) -> Result<&mut StreamState, StreamError> {
        match self.map.get_mut(&id) {
            Some(s) if s.opening == (Opening::Remote { accepted: false }) => Ok(s),
            Some(_) => Err(StreamError::NotPending(id)),
            None => Err(StreamError::Unknown(id)),
        }
    }

    pub(crate) fn accept(
        &mut self,
        id: StreamId,
        metadata: Bytes,
        peer: &Settings,
        fx: &mut Effects,
    ) -> Result<(), StreamError> {
        let max_meta = max_metadata(peer, 2);
        if metadata.len() > max_meta {
            return Err(StreamError::MetadataTooLarge {
                len: metadata.len(),
                max: max_meta,
            });
        }
        let stream = self.pending_remote(id)?;
        stream.opening = Opening::Remote { accepted: true };
        stream.open_info = None;
        self.pending_accept = self.pending_accept.saturating_sub(1);
        fx.push_frame(Frame::Accept { id, metadata });
        Ok(())
    }

    pub(crate) fn refuse(
        &mut self,
        id: StreamId,
        code: ErrorCode,
        reason: String,
        fx: &mut Effects,
    ) -> Result<(), StreamError> {
        self.pending_remote(id)?;
        fx.push_frame(Frame::Reset { id, code, reason });
        // `remove` releases the pending-accept slot of an unaccepted stream.
        self.remove(id, fx);
        Ok(())
    }

    /// Forgets a stream: returns the connection credit of unread bytes and, for a peer
    /// stream, counts it towards the next MAX_STREAMS.
    pub(crate) fn remove(&mut self, id: StreamId, fx: &mut Effects) {
        let Some(stream) = self.map.remove(&id) else {
            return;
        };
        self.conn_recv.on_consume(stream.recv_window.buffered());
        if self.conn_recv.wants_update() {
            fx.push_credit(Control::ConnectionWindow);
        }
        let growth =
            u64::from(stream.recv_window.window()).saturating_sub(u64::from(self.initial_window));
        self.autotune_extra = self.autotune_extra.saturating_sub(growth);
        if matches!(stream.opening, Opening::Remote { accepted: false }) {
            self.pending_accept = self.pending_accept.saturating_sub(1);
        }
        if id.initiator() != self.side {
            self.on_remote_closed(fx);
        }
    }

    fn on_remote_closed(&mut self, fx: &mut Effects) {
        self.remote_closed_ungranted = self.remote_closed_ungranted.saturating_add(1);
        // Batch grants, but never leave the peer short: once its unused credit falls below
        // a batch, every close is granted at once.
        let batch = (self.max_concurrent / 8).max(1);
        let opened = self.next_remote.saturating_sub(1);
        let unused = self.remote_credit.saturating_sub(opened);
        if self.remote_closed_ungranted >= batch || unused < batch {
            fx.push_credit(Control::MaxStreams);
        }
    }

    /// Removes the stream if both halves are done.
    pub(crate) fn reap(&mut self, id: StreamId, fx: &mut Effects) {
        if self.map.get(&id).is_some_and(StreamState::is_closed) {
            self.remove(id, fx);
        }
    }

    /// The cumulative credit to advertise in MAX_STREAMS, raised by the streams closed since.
    pub(crate) fn take_max_streams(&mut self) -> Option<u64> {
        if self.remote_closed_ungranted == 0 {
            return None;
        }
        self.remote_credit = self
            .remote_credit
            .saturating_add(self.remote_closed_ungranted);
        self.remote_closed_ungranted = 0;
        Some(self.remote_credit)
    }

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
        let refusal = if self.refuse_above.is_some_and(|last| id.raw() > last) {
            Some((ErrorCode::GOING_AWAY, "the connection is going away"))
        } else if self.pending_accept >= cx.config.max_pending_accept {
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

    /// The connection ended: forget every stream except those with received bytes or an
    /// unread FIN, and make those read-only.
    pub(crate) fn keep_only_readable(&mut self) {
        self.map
            .retain(|_, s| !s.recv_buf.is_empty() || s.recv == RecvState::FinReceived);
        for stream in self.map.values_mut() {
            stream.send = SendState::ResetSent;
            stream.send_buf.clear();
            stream.send_buffered = 0;
            stream.open_info = None;
        }
        self.ready.clear();
        self.incoming.clear();
        self.pending_accept = 0;
    }

    /// The highest stream id the peer opened.
    pub(crate) fn last_remote_id(&self) -> u64 {
        self.last_remote_id
    }

    /// We sent GOAWAY: refuse peer streams above the last one seen. Returns that id.
    pub(crate) fn start_refusing(&mut self) -> u64 {
        let last = self.last_remote_id;
        self.refuse_above = Some(last);
        last
    }

    /// The peer sent GOAWAY: our streams above `last` will never be processed.
    pub(crate) fn on_peer_goaway(&mut self, last: u64, fx: &mut Effects) {
        let doomed: alloc::vec::Vec<StreamId> = self
            .map
            .keys()
            .copied()
            .filter(|id| id.initiator() == self.side && id.raw() > last)
            .collect();
        for id in doomed {
            fx.emit(Event::Stream(StreamEvent::Refused {
                id,
                code: ErrorCode::GOING_AWAY,
                reason: String::from("the peer is going away and did not process this stream"),
            }));
            self.remove(id, fx);
        }
    }
}
