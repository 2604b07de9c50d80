//! Two-phase frame decoding over a bounded input buffer.

use alloc::boxed::Box;
use alloc::vec::Vec;

use bytes::{Buf, Bytes, BytesMut};
use thiserror::Error;

use super::reader::Reader;
use super::{
    Address, ClientInfo, Frame, FrameHeader, FrameType, GoAway, HEADER_LEN, Hello, IdUse,
    MessageHead, Registration, RegistrationKind, RequestHead, ResponseHead, Welcome, flags,
};
use crate::code::ErrorCode;
use crate::config::Settings;
use crate::ids::{MessageId, RequestId, Role, StreamId};

/// Payloads at least this long are split off the input buffer without copying; shorter ones
/// are copied into their own allocation so a retained small payload never pins a large input
/// chunk (at most 4× amplification with 64 KiB chunks).
pub(crate) const ZERO_COPY_MIN: usize = 16 * 1024;

/// Size limits the decoder checks before it waits for or allocates a payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest payload of any frame but HELLO and WELCOME.
    pub max_frame_size: u32,
    /// Largest HELLO or WELCOME payload.
    pub max_handshake_size: u32,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_frame_size: Settings::DEFAULT.max_frame_size,
            max_handshake_size: super::MAX_HANDSHAKE_PAYLOAD,
        }
    }
}

/// Bytes that are not a valid frame. Every variant is a protocol violation by the sender.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// A type code this version does not define.
    #[error("unknown frame type {0:#04x}")]
    UnknownFrameType(u8),
    /// Flag bits the type does not allow.
    #[error("{ty:?} frame with invalid flags {flags:#04x}")]
    InvalidFlags {
        /// Frame type.
        ty: FrameType,
        /// The flags received.
        flags: u8,
    },
    /// The length exceeds the limit (checked before reading the payload).
    #[error("{ty:?} frame of {len} bytes exceeds the limit of {max}")]
    FrameTooLarge {
        /// Frame type.
        ty: FrameType,
        /// Declared payload length.
        len: u32,
        /// The limit.
        max: u32,
    },
    /// The payload ends inside a field.
    #[error("{ty:?} frame payload is truncated")]
    Truncated {
        /// Frame type.
        ty: FrameType,
    },
    /// Bytes left after the last field.
    #[error("{ty:?} frame has trailing bytes")]
    TrailingBytes {
        /// Frame type.
        ty: FrameType,
    },
    /// The id field is zero where an id is required, or non-zero where none is allowed.
    #[error("{ty:?} frame with invalid id {id}")]
    InvalidId {
        /// Frame type.
        ty: FrameType,
        /// The id received.
        id: u64,
    },
    /// A name that is not UTF-8.
    #[error("{ty:?} frame carries a name that is not UTF-8")]
    InvalidName {
        /// Frame type.
        ty: FrameType,
    },
    /// A reason or error text longer than 4096 bytes.
    #[error("{ty:?} frame carries a text of {len} bytes (limit 4096)")]
    TextTooLong {
        /// Frame type.
        ty: FrameType,
        /// Declared length.
        len: usize,
    },
    /// A field with a value the spec forbids.
    #[error("{ty:?} frame: {what}")]
    InvalidValue {
        /// Frame type.
        ty: FrameType,
        /// What is wrong.
        what: &'static str,
    },
}

impl DecodeError {
    /// The wire code a GOAWAY for this error carries.
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::FrameTooLarge { .. } => ErrorCode::FRAME_SIZE_ERROR,
            _ => ErrorCode::PROTOCOL_ERROR,
        }
    }
}

/// Decodes one frame from the front of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed (nothing is consumed), `Ok(Some(frame))`
/// after consuming exactly one frame, or an error as soon as the header alone proves the
/// input invalid — an unknown type, bad flags, a bad id or an oversized length is rejected
/// without waiting for (or allocating) the payload.
pub fn decode_frame(
    buf: &mut BytesMut,
    limits: DecodeLimits,
) -> Result<Option<Frame>, DecodeError> {
    let Some(header) = FrameHeader::peek(buf) else {
        return Ok(None);
    };
    let ty = check_header(&header, limits)?;
    let len = usize::try_from(header.len).map_err(|_| DecodeError::Truncated { ty })?;
    let total = HEADER_LEN.saturating_add(len);
    if buf.len() < total {
        return Ok(None);
    }
    let payload = if len < ZERO_COPY_MIN {
        let copy = Bytes::copy_from_slice(buf.get(HEADER_LEN..total).unwrap_or_default());
        buf.advance(total);
        copy
    } else {
        let mut frame = buf.split_to(total);
        frame.advance(HEADER_LEN);
        frame.freeze()
    };
    parse_payload(&header, ty, payload).map(Some)
}

/// Phase one: everything that can be judged from the header alone.
pub(crate) fn check_header(
    header: &FrameHeader,
    limits: DecodeLimits,
) -> Result<FrameType, DecodeError> {
    let ty = FrameType::from_wire(header.ty).ok_or(DecodeError::UnknownFrameType(header.ty))?;
    // ACK_WANTED belongs on a message head, never on a continuation.
    let bad_combination = ty == FrameType::Message
        && header.flags & flags::CONT != 0
        && header.flags & flags::ACK_WANTED != 0;
    if header.flags & !ty.allowed_flags() != 0 || bad_combination {
        return Err(DecodeError::InvalidFlags {
            ty,
            flags: header.flags,
        });
    }
    let id_ok = match ty.id_use() {
        IdUse::Zero => header.id == 0,
        IdUse::NonZero => header.id != 0,
        IdUse::Any => true,
    };
    if !id_ok {
        return Err(DecodeError::InvalidId { ty, id: header.id });
    }
    let max = if ty.is_handshake() {
        limits.max_handshake_size
    } else {
        limits.max_frame_size
    };
    if header.len > max {
        return Err(DecodeError::FrameTooLarge {
            ty,
            len: header.len,
            max,
        });
    }
    Ok(ty)
}

/// Phase two: the fields of a complete payload.
pub(crate) fn parse_payload(
    header: &FrameHeader,
    ty: FrameType,
    payload: Bytes,
) -> Result<Frame, DecodeError> {
    let mut r = Reader::new(payload, ty);
    let id = header.id;
    let flag = |bit: u8| header.flags & bit != 0;
    let frame = match ty {
        FrameType::Hello => {
            let role = Role::from_wire(r.u8()?).ok_or(DecodeError::InvalidValue {
                ty,
                what: "unknown role",
            })?;
            let requested = r.u64()?;
            let name = r.name()?;
            let version = r.name()?;
            let token = r.bytes16()?;
            let metadata = r.bytes32()?;
            let settings = read_settings(&mut r)?;
            let registrations = read_registrations(&mut r, ty)?;
            r.finish()?;
            Frame::Hello(Box::new(Hello {
                info: ClientInfo {
                    role,
                    requested_id: (requested != 0).then_some(requested),
                    name,
                    version,
                    token,
                    metadata,
                    registrations,
                },
                settings,
            }))
        }
        FrameType::Welcome => {
            let settings = read_settings(&mut r)?;
            let metadata = r.bytes32()?;
            r.finish()?;
            Frame::Welcome(Welcome {
                assigned_id: id,
                settings,
                metadata,
            })
        }
        FrameType::Refuse => {
            let code = ErrorCode(r.u16()?);
            let reason = r.text()?;
            r.finish()?;
            Frame::Refuse { code, reason }
        }
        FrameType::Ping => {
            r.finish()?;
            Frame::Ping {
                ack: flag(flags::ACK),
                opaque: id,
            }
        }
        FrameType::GoAway => {
            let code = ErrorCode(r.u16()?);
            let last_stream = r.u64()?;
            let last_request = r.u64()?;
            let last_message = r.u64()?;
            let reason = r.text()?;
            r.finish()?;
            Frame::GoAway(GoAway {
                code,
                last_stream,
                last_request,
                last_message,
                reason,
            })
        }
        FrameType::Register => {
            let entries = read_registrations(&mut r, ty)?;
            r.finish()?;
            Frame::Register {
                remove: flag(flags::REMOVE),
                entries,
            }
        }
        FrameType::MaxStreams => {
            let max = r.u64()?;
            r.finish()?;
            Frame::MaxStreams { max }
        }
        FrameType::Window => {
            let increment = read_increment(&mut r, ty)?;
            r.finish()?;
            Frame::Window {
                stream: (id != 0).then_some(StreamId::from_raw(id)),
                increment,
            }
        }
        FrameType::MessageWindow => {
            let increment = read_increment(&mut r, ty)?;
            r.finish()?;
            Frame::MessageWindow { increment }
        }
        FrameType::Open => {
            let address = read_address(&mut r)?;
            let metadata = r.bytes16()?;
            r.finish()?;
            Frame::Open {
                id: StreamId::from_raw(id),
                address,
                metadata,
            }
        }
        FrameType::Accept => {
            let metadata = r.bytes16()?;
            r.finish()?;
            Frame::Accept {
                id: StreamId::from_raw(id),
                metadata,
            }
        }
        FrameType::Data => Frame::Data {
            id: StreamId::from_raw(id),
            fin: flag(flags::FIN),
            payload: r.rest(),
        },
        FrameType::Reset => {
            let code = ErrorCode(r.u16()?);
            let reason = r.text()?;
            r.finish()?;
            Frame::Reset {
                id: StreamId::from_raw(id),
                code,
                reason,
            }
        }
        FrameType::Stop => {
            let code = ErrorCode(r.u16()?);
            r.finish()?;
            Frame::Stop {
                id: StreamId::from_raw(id),
                code,
            }
        }
        FrameType::Request => {
            let more = flag(flags::MORE);
            if flag(flags::CONT) {
                Frame::Request {
                    id: RequestId::from_raw(id),
                    more,
                    head: None,
                    body: continuation_body(r, ty)?,
                }
            } else {
                let address = read_address(&mut r)?;
                let method = r.name()?;
                let timeout_ms = r.u32()?;
                let total_len = r.u32()?;
                let body = head_body(r, ty, total_len, more)?;
                Frame::Request {
                    id: RequestId::from_raw(id),
                    more,
                    head: Some(Box::new(RequestHead {
                        address,
                        method,
                        timeout_ms,
                        total_len,
                    })),
                    body,
                }
            }
        }
        FrameType::Response => {
            let more = flag(flags::MORE);
            if flag(flags::CONT) {
                Frame::Response {
                    id: RequestId::from_raw(id),
                    more,
                    head: None,
                    body: continuation_body(r, ty)?,
                }
            } else {
                let status = ErrorCode(r.u16()?);
                let total_len = r.u32()?;
                let body = head_body(r, ty, total_len, more)?;
                Frame::Response {
                    id: RequestId::from_raw(id),
                    more,
                    head: Some(ResponseHead { status, total_len }),
                    body,
                }
            }
        }
        FrameType::Cancel => {
            r.finish()?;
            Frame::Cancel {
                id: RequestId::from_raw(id),
            }
        }
        FrameType::Message => {
            let more = flag(flags::MORE);
            if flag(flags::CONT) {
                if flag(flags::ACK_WANTED) {
                    return Err(DecodeError::InvalidFlags {
                        ty,
                        flags: header.flags,
                    });
                }
                Frame::Message {
                    id: MessageId::from_raw(id),
                    more,
                    head: None,
                    body: continuation_body(r, ty)?,
                }
            } else {
                let address = read_address(&mut r)?;
                let topic = r.name()?;
                let timeout_ms = r.u32()?;
                let total_len = r.u32()?;
                let body = head_body(r, ty, total_len, more)?;
                Frame::Message {
                    id: MessageId::from_raw(id),
                    more,
                    head: Some(Box::new(MessageHead {
                        address,
                        topic,
                        ack_wanted: flag(flags::ACK_WANTED),
                        timeout_ms,
                        total_len,
                    })),
                    body,
                }
            }
        }
        FrameType::Ack => {
            let code = ErrorCode(r.u16()?);
            let text = r.text()?;
            r.finish()?;
            Frame::Ack {
                id: MessageId::from_raw(id),
                code,
                text,
            }
        }
        FrameType::MessageCancel => {
            r.finish()?;
            Frame::MessageCancel {
                id: MessageId::from_raw(id),
            }
        }
    };
    Ok(frame)
}

fn read_settings(r: &mut Reader) -> Result<Settings, DecodeError> {
    let count = r.u8()?;
    let mut settings = Settings::DEFAULT;
    for _ in 0..count {
        let id = r.u16()?;
        let value = r.u32()?;
        settings.apply(id, value);
    }
    Ok(settings)
}

fn read_registrations(r: &mut Reader, ty: FrameType) -> Result<Vec<Registration>, DecodeError> {
    let count = usize::from(r.u16()?);
    // Each entry is at least two bytes (kind + name length): never reserve more entries than
    // the payload could hold, whatever the count field claims.
    let mut entries = Vec::with_capacity(count.min(r.remaining() / 2));
    for _ in 0..count {
        let kind = RegistrationKind::from_wire(r.u8()?).ok_or(DecodeError::InvalidValue {
            ty,
            what: "unknown registration kind",
        })?;
        let name = r.name()?;
        if name.is_empty() {
            return Err(DecodeError::InvalidValue {
                ty,
                what: "empty registration name",
            });
        }
        entries.push(Registration { kind, name });
    }
    Ok(entries)
}

fn read_address(r: &mut Reader) -> Result<Address, DecodeError> {
    let peer_id = r.u64()?;
    let peer_name = r.name()?;
    Ok(Address { peer_id, peer_name })
}

fn read_increment(r: &mut Reader, ty: FrameType) -> Result<u32, DecodeError> {
    let increment = r.u32()?;
    if increment == 0 {
        return Err(DecodeError::InvalidValue {
            ty,
            what: "zero window increment",
        });
    }
    Ok(increment)
}

fn continuation_body(r: Reader, ty: FrameType) -> Result<Bytes, DecodeError> {
    let body = r.rest();
    if body.is_empty() {
        // An empty continuation carries nothing; allowing it would let a peer spin us with
        // endless fragments (the HTTP/2 CONTINUATION flood).
        return Err(DecodeError::InvalidValue {
            ty,
            what: "empty continuation fragment",
        });
    }
    Ok(body)
}

fn head_body(r: Reader, ty: FrameType, total_len: u32, more: bool) -> Result<Bytes, DecodeError> {
    let body = r.rest();
    let len = u64::try_from(body.len()).unwrap_or(u64::MAX);
    let total = u64::from(total_len);
    if len > total || (!more && len != total) || (more && len == total) {
        return Err(DecodeError::InvalidValue {
            ty,
            what: "fragment length disagrees with the declared body length",
        });
    }
    Ok(body)
}
