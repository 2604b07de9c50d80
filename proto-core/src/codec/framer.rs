//! Framing a byte stream that arrives in arbitrary pieces, for the connection's input path.
//!
//! Every payload byte is copied exactly once, from the driver's read buffer into an
//! allocation of exactly the payload's size: frames that arrive whole are decoded straight
//! from the caller's slice, and only a frame that straddles two reads is kept, its header in
//! a fixed array and its payload in a buffer sized from the (already checked) length. No
//! input buffer is shared with payloads handed to the application, so a retained payload
//! never pins more memory than itself, and an idle connection holds no input allocation.
//!
//! [`decode_frame`](super::decode_frame) remains the two-phase decoder over a `BytesMut`;
//! both share the header checks and payload parsing.

use bytes::{Bytes, BytesMut};

use super::decode::{check_header, parse_payload};
use super::{DecodeError, DecodeLimits, Frame, FrameHeader, FrameType, HEADER_LEN};

/// A frame received in part.
#[derive(Debug, Default)]
enum Partial {
    #[default]
    Idle,
    /// Part of a header.
    Header {
        bytes: [u8; HEADER_LEN],
        filled: usize,
    },
    /// A checked header and part of its payload (capacity = the declared length).
    Payload {
        header: FrameHeader,
        ty: FrameType,
        payload: BytesMut,
    },
}

/// Incremental frame reader.
#[derive(Debug, Default)]
pub(crate) struct Framer {
    partial: Partial,
}

impl Framer {
    /// Bytes of an incomplete frame held since the last call.
    pub(crate) fn buffered(&self) -> usize {
        match &self.partial {
            Partial::Idle => 0,
            Partial::Header { filled, .. } => *filled,
            Partial::Payload { payload, .. } => HEADER_LEN.saturating_add(payload.len()),
        }
    }

    /// Takes bytes from the front of `input` and returns the next complete frame, or
    /// `Ok(None)` once `input` is used up (keeping any incomplete frame for the next call).
    /// A header that proves the input invalid fails as soon as its 13 bytes are known,
    /// before any payload is awaited or allocated.
    pub(crate) fn next_frame(
        &mut self,
        input: &mut &[u8],
        limits: DecodeLimits,
    ) -> Result<Option<Frame>, DecodeError> {
        loop {
            match &mut self.partial {
                Partial::Idle => {
                    if input.is_empty() {
                        return Ok(None);
                    }
                    let Some(header) = FrameHeader::peek(input) else {
                        let mut bytes = [0u8; HEADER_LEN];
                        let filled = input.len();
                        if let Some(dst) = bytes.get_mut(..filled) {
                            dst.copy_from_slice(input);
                        }
                        *input = &[];
                        self.partial = Partial::Header { bytes, filled };
                        return Ok(None);
                    };
                    let ty = check_header(&header, limits)?;
                    let len = payload_len(&header, ty)?;
                    let end = HEADER_LEN.saturating_add(len);
                    if let Some(whole) = input.get(HEADER_LEN..end) {
                        let payload = Bytes::copy_from_slice(whole);
                        *input = input.get(end..).unwrap_or_default();
                        return parse_payload(&header, ty, payload).map(Some);
                    }
                    let mut payload = BytesMut::new();
                    append_bounded(
                        &mut payload,
                        input.get(HEADER_LEN..).unwrap_or_default(),
                        len,
                    );
                    *input = &[];
                    self.partial = Partial::Payload {
                        header,
                        ty,
                        payload,
                    };
                    return Ok(None);
                }
                Partial::Header { bytes, filled } => {
                    let need = HEADER_LEN.saturating_sub(*filled);
                    let take = need.min(input.len());
                    if let (Some(dst), Some(src)) = (
                        bytes.get_mut(*filled..filled.saturating_add(take)),
                        input.get(..take),
                    ) {
                        dst.copy_from_slice(src);
                    }
                    *filled = filled.saturating_add(take);
                    *input = input.get(take..).unwrap_or_default();
                    if *filled < HEADER_LEN {
                        return Ok(None);
                    }
                    let Some(header) = FrameHeader::peek(bytes.as_slice()) else {
                        return Ok(None);
                    };
                    let ty = check_header(&header, limits)?;
                    self.partial = Partial::Payload {
                        header,
                        ty,
                        payload: BytesMut::new(),
                    };
                }
                Partial::Payload {
                    header, payload, ..
                } => {
                    let len = usize::try_from(header.len).unwrap_or(usize::MAX);
                    let take = len.saturating_sub(payload.len()).min(input.len());
                    append_bounded(payload, input.get(..take).unwrap_or_default(), len);
                    *input = input.get(take..).unwrap_or_default();
                    if payload.len() < len {
                        return Ok(None);
                    }
                    let Partial::Payload {
                        header,
                        ty,
                        payload,
                    } = core::mem::take(&mut self.partial)
                    else {
                        return Ok(None);
                    };
                    return parse_payload(&header, ty, payload.freeze()).map(Some);
                }
            }
        }
    }
}

/// Appends `data`, growing the buffer by doubling but never beyond `limit` bytes of
/// capacity, so a straddling payload costs at most about twice what arrived of it.
fn append_bounded(buf: &mut BytesMut, data: &[u8], limit: usize) {
    let needed = buf.len().saturating_add(data.len());
    if needed > buf.capacity() {
        let grown = buf
            .capacity()
            .saturating_mul(2)
            .max(needed)
            .min(limit.max(needed));
        let mut bigger = BytesMut::with_capacity(grown);
        bigger.extend_from_slice(buf);
        *buf = bigger;
    }
    buf.extend_from_slice(data);
}

fn payload_len(header: &FrameHeader, ty: FrameType) -> Result<usize, DecodeError> {
    usize::try_from(header.len).map_err(|_| DecodeError::Truncated { ty })
}

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;

    use super::*;
    use crate::codec::tests::sample_frames;

    fn run(framer: &mut Framer, mut input: &[u8]) -> Vec<Frame> {
        let mut out = Vec::new();
        while let Some(frame) = framer
            .next_frame(&mut input, DecodeLimits::default())
            .unwrap()
        {
            out.push(frame);
        }
        assert!(input.is_empty());
        out
    }

    #[test]
    fn every_split_of_the_stream_yields_the_same_frames() {
        let frames = sample_frames();
        let mut wire = Vec::new();
        for f in &frames {
            f.encode(&mut wire).unwrap();
        }
        for piece in [1usize, 2, 7, 13, 14, 100, 4096, 65_536, wire.len()] {
            let mut framer = Framer::default();
            let mut got = Vec::new();
            for chunk in wire.chunks(piece) {
                got.extend(run(&mut framer, chunk));
            }
            assert_eq!(got, frames, "pieces of {piece}");
            assert_eq!(framer.buffered(), 0);
        }
    }

    #[test]
    fn a_bad_header_fails_before_its_payload_arrives() {
        let mut framer = Framer::default();
        let header = FrameHeader {
            len: 1 << 20,
            ty: FrameType::Data as u8,
            flags: 0,
            id: 1,
        }
        .to_bytes();
        let mut input = &header[..5];
        assert_eq!(
            framer.next_frame(&mut input, DecodeLimits::default()),
            Ok(None)
        );
        let mut input = &header[5..];
        assert!(matches!(
            framer.next_frame(&mut input, DecodeLimits::default()),
            Err(DecodeError::FrameTooLarge { .. })
        ));
    }

    #[test]
    fn a_header_alone_allocates_nothing_and_a_payload_grows_with_what_arrived() {
        let mut framer = Framer::default();
        let mut wire = Vec::new();
        Frame::Data {
            id: crate::StreamId::from_raw(1),
            fin: false,
            payload: Bytes::from(alloc::vec![5u8; 60_000]),
        }
        .encode(&mut wire)
        .unwrap();
        assert!(run(&mut framer, &wire[..HEADER_LEN]).is_empty());
        let Partial::Payload { payload, .. } = &framer.partial else {
            panic!("header complete")
        };
        assert_eq!(payload.capacity(), 0, "nothing reserved for a claim");
        assert!(run(&mut framer, &wire[HEADER_LEN..HEADER_LEN + 100]).is_empty());
        let Partial::Payload { payload, .. } = &framer.partial else {
            panic!()
        };
        assert!(payload.capacity() < 1000);
        let mut got = Vec::new();
        for chunk in wire[HEADER_LEN + 100..].chunks(777) {
            if let Partial::Payload { payload, .. } = &framer.partial {
                assert!(
                    payload.capacity() <= 60_000,
                    "never beyond the declared length"
                );
            }
            got.extend(run(&mut framer, chunk));
        }
        assert_eq!(got.len(), 1);
    }

    #[test]
    fn payloads_do_not_share_the_callers_buffer() {
        let mut wire = Vec::new();
        Frame::Data {
            id: crate::StreamId::from_raw(1),
            fin: false,
            payload: Bytes::from(alloc::vec![3u8; 40_000]),
        }
        .encode(&mut wire)
        .unwrap();
        let mut framer = Framer::default();
        let (a, b) = wire.split_at(20_000);
        assert!(run(&mut framer, a).is_empty());
        assert_eq!(framer.buffered(), 20_000);
        let frames = run(&mut framer, b);
        let Frame::Data { payload, .. } = &frames[0] else {
            panic!()
        };
        assert_eq!(payload.len(), 40_000);
        assert!(payload.iter().all(|b| *b == 3));
    }
}
