//! Stream multiplexing: opening, accepting, per-stream state, and the frames that drive it.
//!
//! Streams are bidirectional byte pipes with independent halves (FIN, RESET and STOP act on
//! one half). Each has its own flow-control window, and the connection has one more for all
//! stream data, so a slow reader on one stream holds at most its own window of the
//! connection's credit.
//!
//! Spec: `docs/PROTOCOL.md#streams`.

mod frames;
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
use state::{RecvState, SendState};

use crate::code::ErrorCode;
use crate::codec::{Address, Frame};
use crate::config::{Config, Settings};
use crate::effects::{Control, Effects};
use crate::error::{OpenError, StreamError};
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
