//! A bounds-checked cursor over one frame's payload.
//!
//! Every read checks the remaining length first and fails with
//! [`DecodeError::Truncated`]; sub-slices are split off the shared buffer without copying.

use alloc::string::String;

use bytes::{Buf, Bytes};

use super::{DecodeError, FrameType, MAX_TEXT_LEN};
use crate::name::Name;

pub(super) struct Reader {
    buf: Bytes,
    ty: FrameType,
}

impl Reader {
    pub(super) fn new(buf: Bytes, ty: FrameType) -> Self {
        Reader { buf, ty }
    }

    pub(super) fn remaining(&self) -> usize {
        self.buf.len()
    }

    fn need(&self, n: usize) -> Result<(), DecodeError> {
        if self.buf.len() < n {
            Err(DecodeError::Truncated { ty: self.ty })
        } else {
            Ok(())
        }
    }

    pub(super) fn u8(&mut self) -> Result<u8, DecodeError> {
        self.need(1)?;
        Ok(self.buf.get_u8())
    }

    pub(super) fn u16(&mut self) -> Result<u16, DecodeError> {
        self.need(2)?;
        Ok(self.buf.get_u16())
    }

    pub(super) fn u32(&mut self) -> Result<u32, DecodeError> {
        self.need(4)?;
        Ok(self.buf.get_u32())
    }

    pub(super) fn u64(&mut self) -> Result<u64, DecodeError> {
        self.need(8)?;
        Ok(self.buf.get_u64())
    }

    /// `n` bytes, shared with the input buffer.
    pub(super) fn bytes(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        self.need(n)?;
        Ok(self.buf.split_to(n))
    }

    /// A u16-length-prefixed byte string.
    pub(super) fn bytes16(&mut self) -> Result<Bytes, DecodeError> {
        let n = self.u16()?;
        self.bytes(usize::from(n))
    }

    /// A u32-length-prefixed byte string. The length is checked against what is left of this
    /// frame, so a lying length never allocates.
    pub(super) fn bytes32(&mut self) -> Result<Bytes, DecodeError> {
        let n = self.u32()?;
        let n = usize::try_from(n).map_err(|_| DecodeError::Truncated { ty: self.ty })?;
        self.bytes(n)
    }

    /// A u8-length-prefixed UTF-8 name.
    pub(super) fn name(&mut self) -> Result<Name, DecodeError> {
        let n = self.u8()?;
        let raw = self.bytes(usize::from(n))?;
        Name::from_bytes(raw).map_err(|_| DecodeError::InvalidName { ty: self.ty })
    }

    /// A u16-length-prefixed human-readable text of at most [`MAX_TEXT_LEN`] bytes. Invalid
    /// UTF-8 is replaced rather than rejected: it is only ever shown to people.
    pub(super) fn text(&mut self) -> Result<String, DecodeError> {
        let n = usize::from(self.u16()?);
        if n > MAX_TEXT_LEN {
            return Err(DecodeError::TextTooLong {
                ty: self.ty,
                len: n,
            });
        }
        let raw = self.bytes(n)?;
        let mut text = String::from_utf8_lossy(&raw).into_owned();
        // Replacement characters take three bytes each: keep the limit after replacing.
        if text.len() > MAX_TEXT_LEN {
            let mut end = MAX_TEXT_LEN;
            while !text.is_char_boundary(end) {
                end = end.saturating_sub(1);
            }
            text.truncate(end);
        }
        Ok(text)
    }

    /// Everything left.
    pub(super) fn rest(self) -> Bytes {
        self.buf
    }

    /// Fails if bytes are left over: every frame's layout is exact.
    pub(super) fn finish(self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes { ty: self.ty })
        }
    }
}
