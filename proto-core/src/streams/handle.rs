//! The application's handle on one stream.

use alloc::string::String;

use bytes::Bytes;

use crate::code::ErrorCode;
use crate::codec::Address;
use crate::conn::Connection;
use crate::error::{ReadError, WriteError};
use crate::ids::StreamId;

/// A stream the peer opened, taken with
/// [`Connection::next_incoming_stream`](crate::Connection::next_incoming_stream). Decide with
/// [`Connection::accept_stream`] or [`Connection::refuse_stream`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IncomingStream {
    /// The stream.
    pub id: StreamId,
    /// Target (client → gateway) or source (gateway → client).
    pub address: Address,
    /// The opener's metadata (e.g. which exposed service it wants).
    pub metadata: Bytes,
}

/// A short-lived handle for commands on one stream, from
/// [`Connection::stream`](crate::Connection::stream). Re-fetch it by id for each batch of
/// commands; it borrows the connection.
#[derive(Debug)]
pub struct Stream<'a> {
    pub(crate) conn: &'a mut Connection,
    pub(crate) id: StreamId,
}

impl Stream<'_> {
    /// The stream's id.
    pub fn id(&self) -> StreamId {
        self.id
    }

    /// Queues bytes (copied) and returns how many were taken, bounded by the peer's credit
    /// and our send buffer. `Err(Blocked)` when none fit; a `Writable` event follows.
    pub fn write(&mut self, data: &[u8]) -> Result<usize, WriteError> {
        let mut bytes = Bytes::copy_from_slice(data);
        self.write_bytes(&mut bytes)
    }

    /// Queues bytes without copying them; `data` keeps what was not taken.
    pub fn write_bytes(&mut self, data: &mut Bytes) -> Result<usize, WriteError> {
        let conn = &mut *self.conn;
        if conn.is_closed() {
            return Err(WriteError::Closed);
        }
        conn.streams
            .write(self.id, data, &conn.config, &mut conn.fx)
    }

    /// Bytes a write would take now.
    pub fn writable(&self) -> u64 {
        self.conn
            .streams
            .map
            .get(&self.id)
            .map_or(0, |s| s.writable(self.conn.config.stream_send_buffer))
    }

    /// Ends our sending half after the buffered bytes (FIN).
    pub fn finish(&mut self) -> Result<(), WriteError> {
        let conn = &mut *self.conn;
        if conn.is_closed() {
            return Err(WriteError::Closed);
        }
        conn.streams.finish(self.id, &mut conn.fx)
    }

    /// Aborts our sending half: buffered bytes are dropped and the peer sees RESET with
    /// `code`. On a peer stream not yet accepted, this refuses it. To abort the whole stream,
    /// also call [`stop`](Self::stop).
    pub fn reset(&mut self, code: ErrorCode, reason: &str) -> Result<(), WriteError> {
        let conn = &mut *self.conn;
        if conn.is_closed() {
            return Err(WriteError::Closed);
        }
        conn.streams
            .reset(self.id, code, String::from(reason), &mut conn.fx)
    }

    /// Takes up to `max` buffered bytes without copying. `Ok(None)` is the end of the
    /// stream; `Err(Blocked)` means nothing is buffered yet. Reading returns credit to the
    /// peer.
    pub fn read(&mut self, max: usize) -> Result<Option<Bytes>, ReadError> {
        let conn = &mut *self.conn;
        match conn.streams.read(self.id, max, &mut conn.fx) {
            // Nothing more will arrive on a closed connection.
            Err(ReadError::Blocked) if conn.is_closed() => Err(ReadError::Closed),
            other => other,
        }
    }

    /// Copies buffered bytes into `buf`. `Ok(None)` is the end of the stream.
    pub fn read_into(&mut self, buf: &mut [u8]) -> Result<Option<usize>, ReadError> {
        let mut filled = 0usize;
        while filled < buf.len() {
            // Once some bytes are copied, stop before the buffer runs dry: the end of the
            // stream (or an error) is reported by the next call, not swallowed by this one.
            if filled > 0 && self.readable() == 0 {
                break;
            }
            let room = buf.len().saturating_sub(filled);
            match self.read(room)? {
                Some(chunk) => {
                    let end = filled.saturating_add(chunk.len());
                    if let Some(dst) = buf.get_mut(filled..end) {
                        dst.copy_from_slice(&chunk);
                    }
                    filled = end;
                }
                None => return Ok(None),
            }
        }
        Ok(Some(filled))
    }

    /// Bytes buffered and not yet read.
    pub fn readable(&self) -> usize {
        self.conn.streams.readable(self.id)
    }

    /// Stops reading: buffered bytes are discarded and the peer is asked to reset its
    /// sending half with `code`.
    pub fn stop(&mut self, code: ErrorCode) -> Result<(), ReadError> {
        let conn = &mut *self.conn;
        if conn.is_closed() {
            return Err(ReadError::Closed);
        }
        conn.streams.stop(self.id, code, &mut conn.fx)
    }
}
