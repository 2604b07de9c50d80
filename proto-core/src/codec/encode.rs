//! Frame encoding into a caller-owned sink.
//!
//! The payload is measured first with a [`CountingSink`] (arithmetic only, no copies), so the
//! header is written once with its final length and nothing is patched afterwards.

use alloc::vec::Vec;

use bytes::Bytes;
use thiserror::Error;

use super::{
    Address, Frame, FrameHeader, HEADER_LEN, MAX_MAX_FRAME_SIZE, MAX_TEXT_LEN, Registration, flags,
};
use crate::config::Settings;
use crate::name::Name;

/// Where encoded bytes go.
pub trait Sink {
    /// Appends bytes (copied).
    fn put_slice(&mut self, bytes: &[u8]);
    /// Appends a payload; sinks that can reference it instead of copying do so.
    fn put_payload(&mut self, payload: &Bytes) {
        self.put_slice(payload);
    }
}

impl Sink for Vec<u8> {
    fn put_slice(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// A sink that only counts, used to size a payload before writing its header.
#[derive(Debug, Default)]
pub(crate) struct CountingSink(pub(crate) usize);

impl Sink for CountingSink {
    fn put_slice(&mut self, bytes: &[u8]) {
        self.0 = self.0.saturating_add(bytes.len());
    }
}

/// A frame that cannot be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum EncodeError {
    /// The payload does not fit the 24-bit length field.
    #[error("frame payload of {0} bytes does not fit the 24-bit length field")]
    TooLarge(usize),
}

impl Frame {
    /// Encodes the frame (header and payload) into `sink` and returns the bytes written.
    ///
    /// Texts longer than 4096 bytes are truncated at a character boundary; everything else
    /// is written exactly. Fails only if the payload exceeds 2^24 − 1 bytes.
    pub fn encode<S: Sink>(&self, sink: &mut S) -> Result<usize, EncodeError> {
        let len = self.payload_len();
        if len > MAX_MAX_FRAME_SIZE as usize {
            return Err(EncodeError::TooLarge(len));
        }
        let (flags, id) = self.flags_and_id();
        let header = FrameHeader {
            len: u32::try_from(len).map_err(|_| EncodeError::TooLarge(len))?,
            ty: self.frame_type() as u8,
            flags,
            id,
        };
        sink.put_slice(&header.to_bytes());
        self.encode_payload(sink);
        Ok(HEADER_LEN.saturating_add(len))
    }

    /// Encoded size of the payload (excluding the 13-byte header).
    pub fn payload_len(&self) -> usize {
        let mut counter = CountingSink::default();
        self.encode_payload(&mut counter);
        counter.0
    }

    /// Encoded size including the header.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN.saturating_add(self.payload_len())
    }

    fn flags_and_id(&self) -> (u8, u64) {
        let bit = |on: bool, bit: u8| if on { bit } else { 0 };
        match self {
            Frame::Hello(_)
            | Frame::Refuse { .. }
            | Frame::GoAway(_)
            | Frame::MaxStreams { .. }
            | Frame::MessageWindow { .. } => (0, 0),
            Frame::Welcome(w) => (0, w.assigned_id),
            Frame::Ping { ack, opaque } => (bit(*ack, flags::ACK), *opaque),
            Frame::Register { remove, .. } => (bit(*remove, flags::REMOVE), 0),
            Frame::Window { stream, .. } => (0, stream.map_or(0, |s| s.raw())),
            Frame::Open { id, .. }
            | Frame::Accept { id, .. }
            | Frame::Reset { id, .. }
            | Frame::Stop { id, .. } => (0, id.raw()),
            Frame::Data { id, fin, .. } => (bit(*fin, flags::FIN), id.raw()),
            Frame::Request { id, more, head, .. } => (
                bit(*more, flags::MORE) | bit(head.is_none(), flags::CONT),
                id.raw(),
            ),
            Frame::Response { id, more, head, .. } => (
                bit(*more, flags::MORE) | bit(head.is_none(), flags::CONT),
                id.raw(),
            ),
            Frame::Cancel { id } => (0, id.raw()),
            Frame::Message { id, more, head, .. } => (
                bit(*more, flags::MORE)
                    | bit(head.is_none(), flags::CONT)
                    | bit(
                        head.as_ref().is_some_and(|h| h.ack_wanted),
                        flags::ACK_WANTED,
                    ),
                id.raw(),
            ),
            Frame::Ack { id, .. } => (0, id.raw()),
            Frame::MessageCancel { id } => (0, id.raw()),
        }
    }

    fn encode_payload<S: Sink>(&self, s: &mut S) {
        match self {
            Frame::Hello(h) => {
                let info = &h.info;
                s.put_slice(&[info.role.to_wire()]);
                s.put_slice(&info.requested_id.unwrap_or(0).to_be_bytes());
                put_name(s, &info.name);
                put_name(s, &info.version);
                put_bytes16(s, &info.token);
                put_bytes32(s, &info.metadata);
                put_settings(s, &h.settings);
                put_registrations(s, &info.registrations);
            }
            Frame::Welcome(w) => {
                put_settings(s, &w.settings);
                put_bytes32(s, &w.metadata);
            }
            Frame::Refuse { code, reason } => {
                s.put_slice(&code.0.to_be_bytes());
                put_text(s, reason);
            }
            Frame::Ping { .. } | Frame::Cancel { .. } | Frame::MessageCancel { .. } => {}
            Frame::GoAway(g) => {
                s.put_slice(&g.code.0.to_be_bytes());
                s.put_slice(&g.last_stream.to_be_bytes());
                s.put_slice(&g.last_request.to_be_bytes());
                s.put_slice(&g.last_message.to_be_bytes());
                put_text(s, &g.reason);
            }
            Frame::Register { entries, .. } => put_registrations(s, entries),
            Frame::MaxStreams { max } => s.put_slice(&max.to_be_bytes()),
            Frame::Window { increment, .. } | Frame::MessageWindow { increment } => {
                s.put_slice(&increment.to_be_bytes());
            }
            Frame::Open {
                address, metadata, ..
            } => {
                put_address(s, address);
                put_bytes16(s, metadata);
            }
            Frame::Accept { metadata, .. } => put_bytes16(s, metadata),
            Frame::Data { payload, .. } => s.put_payload(payload),
            Frame::Reset { code, reason, .. } => {
                s.put_slice(&code.0.to_be_bytes());
                put_text(s, reason);
            }
            Frame::Stop { code, .. } => s.put_slice(&code.0.to_be_bytes()),
            Frame::Request { head, body, .. } => {
                if let Some(h) = head {
                    put_address(s, &h.address);
                    put_name(s, &h.method);
                    s.put_slice(&h.timeout_ms.to_be_bytes());
                    s.put_slice(&h.total_len.to_be_bytes());
                }
                s.put_payload(body);
            }
            Frame::Response { head, body, .. } => {
                if let Some(h) = head {
                    s.put_slice(&h.status.0.to_be_bytes());
                    s.put_slice(&h.total_len.to_be_bytes());
                }
                s.put_payload(body);
            }
            Frame::Message { head, body, .. } => {
                if let Some(h) = head {
                    put_address(s, &h.address);
                    put_name(s, &h.topic);
                    s.put_slice(&h.timeout_ms.to_be_bytes());
                    s.put_slice(&h.total_len.to_be_bytes());
                }
                s.put_payload(body);
            }
            Frame::Ack { code, text, .. } => {
                s.put_slice(&code.0.to_be_bytes());
                put_text(s, text);
            }
        }
    }
}

fn put_name<S: Sink>(s: &mut S, name: &Name) {
    // A Name is at most 255 bytes by construction.
    let len = u8::try_from(name.len()).unwrap_or(u8::MAX);
    s.put_slice(&[len]);
    s.put_slice(name.as_bytes().get(..usize::from(len)).unwrap_or_default());
}

/// Writes at most 65535 bytes; callers keep opaque fields within their limits.
fn put_bytes16<S: Sink>(s: &mut S, bytes: &Bytes) {
    let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
    s.put_slice(&len.to_be_bytes());
    s.put_payload(&bytes.slice(..usize::from(len)));
}

fn put_bytes32<S: Sink>(s: &mut S, bytes: &Bytes) {
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    s.put_slice(&len.to_be_bytes());
    s.put_payload(&bytes.slice(..usize::try_from(len).unwrap_or(0)));
}

fn put_text<S: Sink>(s: &mut S, text: &str) {
    let mut end = text.len().min(MAX_TEXT_LEN);
    while !text.is_char_boundary(end) {
        end = end.saturating_sub(1);
    }
    let bytes = text.as_bytes().get(..end).unwrap_or_default();
    let len = u16::try_from(bytes.len()).unwrap_or(0);
    s.put_slice(&len.to_be_bytes());
    s.put_slice(bytes);
}

fn put_settings<S: Sink>(s: &mut S, settings: &Settings) {
    let pairs = settings.to_pairs();
    s.put_slice(&[u8::try_from(pairs.len()).unwrap_or(0)]);
    for (id, value) in pairs {
        s.put_slice(&id.to_be_bytes());
        s.put_slice(&value.to_be_bytes());
    }
}

fn put_registrations<S: Sink>(s: &mut S, entries: &[Registration]) {
    let count = u16::try_from(entries.len()).unwrap_or(u16::MAX);
    s.put_slice(&count.to_be_bytes());
    for entry in entries.iter().take(usize::from(count)) {
        s.put_slice(&[entry.kind.to_wire()]);
        put_name(s, &entry.name);
    }
}

fn put_address<S: Sink>(s: &mut S, address: &Address) {
    s.put_slice(&address.peer_id.to_be_bytes());
    put_name(s, &address.peer_name);
}
