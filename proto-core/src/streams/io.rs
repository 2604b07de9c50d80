//! Application reads and writes on one stream.

use alloc::string::String;

use bytes::Bytes;

use super::state::{RecvInput, RecvState, SendInput, SendState, Transition};
use super::{Opening, StreamsState};
use crate::code::ErrorCode;
use crate::codec::Frame;
use crate::config::Config;
use crate::effects::{Control, Effects};
use crate::error::{ReadError, WriteError};
use crate::ids::StreamId;

impl StreamsState {
    /// Writing to (or finishing) a peer stream the application has not accepted yet accepts
    /// it implicitly, with empty metadata: ACCEPT must precede our first DATA on the wire.
    fn accept_implicitly(&mut self, id: StreamId, fx: &mut Effects) {
        let Some(stream) = self.map.get_mut(&id) else {
            return;
        };
        if stream.opening == (Opening::Remote { accepted: false }) {
            stream.opening = Opening::Remote { accepted: true };
            stream.open_info = None;
            self.pending_accept = self.pending_accept.saturating_sub(1);
            fx.push_frame(Frame::Accept {
                id,
                metadata: Bytes::new(),
            });
        }
    }

    fn send_closed_error(stream: &super::StreamState) -> WriteError {
        match stream.stopped_by_peer {
            Some(code) => WriteError::Stopped(code),
            None => WriteError::Finished,
        }
    }

    /// Queues up to the stream's writable capacity from `data` and returns how much was
    /// taken; `data` loses that prefix. Zero-copy: the bytes are shared, not copied.
    pub(crate) fn write(
        &mut self,
        id: StreamId,
        data: &mut Bytes,
        config: &Config,
        fx: &mut Effects,
    ) -> Result<usize, WriteError> {
        self.accept_implicitly(id, fx);
        let stream = self.map.get_mut(&id).ok_or(WriteError::Unknown)?;
        if stream.send != SendState::Open {
            return Err(Self::send_closed_error(stream));
        }
        if data.is_empty() {
            return Ok(0);
        }
        let room = stream.writable(config.stream_send_buffer);
        if room == 0 {
            stream.wants_writable = true;
            return Err(WriteError::Blocked);
        }
        let n = usize::try_from(room).unwrap_or(usize::MAX).min(data.len());
        if n < data.len() {
            stream.wants_writable = true;
        }
        let chunk = data.split_to(n);
        stream.send_buffered = stream
            .send_buffered
            .saturating_add(u64::try_from(n).unwrap_or(u64::MAX));
        stream.send_buf.push_back(chunk);
        if !stream.in_ready {
            stream.in_ready = true;
            self.ready.push_back(id);
        }
        Ok(n)
    }

    pub(crate) fn finish(&mut self, id: StreamId, fx: &mut Effects) -> Result<(), WriteError> {
        self.accept_implicitly(id, fx);
        let stream = self.map.get_mut(&id).ok_or(WriteError::Unknown)?;
        match stream.send.on(SendInput::Finish) {
            Transition::To(next) => {
                stream.send = next;
                if !stream.in_ready {
                    stream.in_ready = true;
                    self.ready.push_back(id);
                }
                Ok(())
            }
            Transition::Ignore | Transition::Invalid(_) => Err(Self::send_closed_error(stream)),
        }
    }

    /// Aborts our sending half. On a peer stream not yet accepted, this refuses it.
    pub(crate) fn reset(
        &mut self,
        id: StreamId,
        code: ErrorCode,
        reason: String,
        fx: &mut Effects,
    ) -> Result<(), WriteError> {
        let stream = self.map.get_mut(&id).ok_or(WriteError::Unknown)?;
        if stream.opening == (Opening::Remote { accepted: false }) {
            return self
                .refuse(id, code, reason, fx)
                .map_err(|_| WriteError::Unknown);
        }
        match stream.send.on(SendInput::Reset) {
            Transition::To(next) => {
                stream.send = next;
                stream.send_buf.clear();
                stream.send_buffered = 0;
                stream.wants_writable = false;
                fx.push_frame(Frame::Reset { id, code, reason });
                self.reap(id, fx);
                Ok(())
            }
            Transition::Ignore | Transition::Invalid(_) => Err(Self::send_closed_error(stream)),
        }
    }

    /// Takes up to `max` buffered bytes. `Ok(None)` is the end of the stream.
    pub(crate) fn read(
        &mut self,
        id: StreamId,
        max: usize,
        fx: &mut Effects,
    ) -> Result<Option<Bytes>, ReadError> {
        let stream = self.map.get_mut(&id).ok_or(ReadError::Unknown)?;
        if let Some(chunk) = stream.recv_buf.take(max) {
            let n = u64::try_from(chunk.len()).unwrap_or(u64::MAX);
            stream.recv_window.on_consume(n);
            if stream.recv == RecvState::Open
                && !stream.window_queued
                && stream.recv_window.wants_update()
            {
                stream.window_queued = true;
                fx.push_credit(Control::StreamWindow(id));
            }
            self.conn_recv.on_consume(n);
            if self.conn_recv.wants_update() {
                fx.push_credit(Control::ConnectionWindow);
            }
            return Ok(Some(chunk));
        }
        match stream.recv {
            RecvState::Open => {
                stream.readable_notified = false;
                Err(ReadError::Blocked)
            }
            RecvState::FinReceived => {
                if let Transition::To(next) = stream.recv.on(RecvInput::ReadToEnd) {
                    stream.recv = next;
                }
                self.reap(id, fx);
                Ok(None)
            }
            RecvState::Drained => Ok(None),
            RecvState::ResetReceived => {
                let (code, reason) = stream
                    .reset_by_peer
                    .clone()
                    .unwrap_or((ErrorCode::INTERNAL, String::new()));
                Err(ReadError::Reset { code, reason })
            }
            RecvState::Stopping | RecvState::Stopped => Err(ReadError::Stopped),
        }
    }

    /// Bytes buffered and not yet read.
    pub(crate) fn readable(&self, id: StreamId) -> usize {
        self.map.get(&id).map_or(0, |s| s.recv_buf.len())
    }

    /// Stops reading: buffered bytes are discarded and the peer is asked to reset its side.
    pub(crate) fn stop(
        &mut self,
        id: StreamId,
        code: ErrorCode,
        fx: &mut Effects,
    ) -> Result<(), ReadError> {
        let stream = self.map.get_mut(&id).ok_or(ReadError::Unknown)?;
        if stream.opening == (Opening::Remote { accepted: false }) {
            // Not accepted yet: not reading it means refusing it (a STOP before our ACCEPT
            // would break the protocol).
            return self
                .refuse(id, code, String::new(), fx)
                .map_err(|_| ReadError::Unknown);
        }
        let Transition::To(next) = stream.recv.on(RecvInput::Stop) else {
            return Ok(());
        };
        let dropped = stream.recv_window.buffered();
        stream.recv_window.on_consume(dropped);
        stream.recv_buf.clear();
        // After the peer's FIN there is nothing left to stop; only an open half needs STOP.
        let needs_frame = next == RecvState::Stopping;
        stream.recv = next;
        if needs_frame {
            fx.push_frame(Frame::Stop { id, code });
        }
        self.conn_recv.on_consume(dropped);
        if self.conn_recv.wants_update() {
            fx.push_credit(Control::ConnectionWindow);
        }
        self.reap(id, fx);
        Ok(())
    }
}
