//! The caller-owned output buffer.
//!
//! [`Connection::poll_transmit`](crate::Connection::poll_transmit) appends frames to a
//! [`TransmitBuf`] the driver owns and reuses. Headers and small payloads are copied into one
//! contiguous vector; large payloads stay the `Bytes` the application handed in and are
//! referenced, not copied. The driver writes [`TransmitBuf::chunks`] with one vectored write
//! (or copies them into its own buffer) and reports how much the transport took with
//! [`TransmitBuf::advance`].

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use bytes::Bytes;

/// Payloads shorter than this are copied next to their header instead of being referenced:
/// below it an extra I/O slice costs more than the copy.
pub(crate) const INLINE_PAYLOAD_MAX: usize = 1024;

/// Reclaim the consumed prefix of the inline vector once it exceeds this many bytes.
const COMPACT_THRESHOLD: usize = 64 * 1024;

/// Default soft limit on how many unsent bytes `poll_transmit` accumulates.
pub const DEFAULT_TRANSMIT_LIMIT: usize = 256 * 1024;

#[derive(Debug)]
enum Chunk {
    /// `inline[start..end]`.
    Inline { start: usize, end: usize },
    /// A payload referenced without copying.
    Payload(Bytes),
}

/// Bytes waiting to be written to the transport, as a list of chunks for vectored writes.
#[derive(Debug)]
pub struct TransmitBuf {
    inline: Vec<u8>,
    chunks: VecDeque<Chunk>,
    /// Bytes of the first chunk already written.
    head_offset: usize,
    /// Unsent bytes in total.
    len: usize,
    /// `poll_transmit` stops adding frames once `len` reaches this.
    soft_limit: usize,
}

impl Default for TransmitBuf {
    fn default() -> Self {
        TransmitBuf::new()
    }
}

impl TransmitBuf {
    /// An empty buffer with the default soft limit (256 KiB).
    pub fn new() -> Self {
        TransmitBuf::with_limit(DEFAULT_TRANSMIT_LIMIT)
    }

    /// An empty buffer to which `poll_transmit` adds frames until `soft_limit` bytes are
    /// pending. One frame may overshoot the limit; at least one frame is always added.
    pub fn with_limit(soft_limit: usize) -> Self {
        TransmitBuf {
            inline: Vec::new(),
            chunks: VecDeque::new(),
            head_offset: 0,
            len: 0,
            soft_limit: soft_limit.max(1),
        }
    }

    /// Unsent bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is waiting to be written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The soft limit given at construction.
    pub fn soft_limit(&self) -> usize {
        self.soft_limit
    }

    /// True when `poll_transmit` should add no more frames.
    pub(crate) fn is_full(&self) -> bool {
        self.len >= self.soft_limit
    }

    /// The unsent bytes in order, one slice per chunk: hand them to a vectored write.
    pub fn chunks(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.chunks.iter().enumerate().map(move |(i, chunk)| {
            let bytes = self.chunk_bytes(chunk);
            if i == 0 {
                bytes.get(self.head_offset..).unwrap_or_default()
            } else {
                bytes
            }
        })
    }

    /// The first unsent chunk (empty when nothing is pending), for drivers that write one
    /// slice at a time.
    pub fn first_chunk(&self) -> &[u8] {
        self.chunks().next().unwrap_or_default()
    }

    fn chunk_bytes<'a>(&'a self, chunk: &'a Chunk) -> &'a [u8] {
        match chunk {
            Chunk::Inline { start, end } => self.inline.get(*start..*end).unwrap_or_default(),
            Chunk::Payload(bytes) => bytes,
        }
    }

    /// Marks the first `n` bytes as written. `n` larger than [`len`](Self::len) is clamped.
    pub fn advance(&mut self, mut n: usize) {
        n = n.min(self.len);
        self.len = self.len.saturating_sub(n);
        while n > 0 {
            let Some(front) = self.chunks.front() else {
                break;
            };
            let front_len = match front {
                Chunk::Inline { start, end } => end.saturating_sub(*start),
                Chunk::Payload(b) => b.len(),
            };
            let left = front_len.saturating_sub(self.head_offset);
            if n < left {
                self.head_offset = self.head_offset.saturating_add(n);
                break;
            }
            n = n.saturating_sub(left);
            self.chunks.pop_front();
            self.head_offset = 0;
        }
        if self.chunks.is_empty() {
            self.inline.clear();
            self.head_offset = 0;
        }
    }

    /// Copies up to `out.len()` unsent bytes into `out`, marks them written and returns how
    /// many were copied. For drivers without vectored writes.
    pub fn read_into(&mut self, out: &mut [u8]) -> usize {
        let mut copied = 0;
        for chunk in self.chunks() {
            let room = out.len().saturating_sub(copied);
            if room == 0 {
                break;
            }
            let take = chunk.len().min(room);
            if let (Some(dst), Some(src)) = (
                out.get_mut(copied..copied.saturating_add(take)),
                chunk.get(..take),
            ) {
                dst.copy_from_slice(src);
            }
            copied = copied.saturating_add(take);
        }
        self.advance(copied);
        copied
    }

    /// Appends all unsent bytes to `out` and empties the buffer.
    pub fn drain_into(&mut self, out: &mut Vec<u8>) {
        out.reserve(self.len);
        for chunk in self.chunks() {
            out.extend_from_slice(chunk);
        }
        let n = self.len;
        self.advance(n);
    }

    /// Drops the consumed front of the inline vector once it is large, so a driver that
    /// keeps partial writes pending does not grow it without bound.
    fn compact(&mut self) {
        // The first byte of `inline` still unsent: the written part of a partially written
        // first chunk counts as consumed too.
        let mut cut = self.inline.len();
        for (i, chunk) in self.chunks.iter().enumerate() {
            if let Chunk::Inline { start, .. } = chunk {
                cut = if i == 0 {
                    start.saturating_add(self.head_offset)
                } else {
                    *start
                };
                break;
            }
        }
        if cut < COMPACT_THRESHOLD {
            return;
        }
        self.inline.drain(..cut.min(self.inline.len()));
        let head_offset = self.head_offset;
        for (i, chunk) in self.chunks.iter_mut().enumerate() {
            if let Chunk::Inline { start, end } = chunk {
                let consumed_here = if i == 0 { head_offset } else { 0 };
                *start = start.saturating_add(consumed_here).saturating_sub(cut);
                *end = end.saturating_sub(cut);
            }
        }
        if matches!(self.chunks.front(), Some(Chunk::Inline { .. })) {
            self.head_offset = 0;
        }
    }
}

impl crate::codec::Sink for TransmitBuf {
    fn put_slice(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if self.inline.len() >= COMPACT_THRESHOLD {
            self.compact();
        }
        let start = self.inline.len();
        self.inline.extend_from_slice(bytes);
        let end = self.inline.len();
        match self.chunks.back_mut() {
            Some(Chunk::Inline { end: last_end, .. }) if *last_end == start => *last_end = end,
            _ => self.chunks.push_back(Chunk::Inline { start, end }),
        }
        self.len = self.len.saturating_add(bytes.len());
    }

    fn put_payload(&mut self, payload: &Bytes) {
        if payload.len() < INLINE_PAYLOAD_MAX {
            self.put_slice(payload);
        } else {
            self.len = self.len.saturating_add(payload.len());
            self.chunks.push_back(Chunk::Payload(payload.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Sink;

    fn flatten(buf: &TransmitBuf) -> Vec<u8> {
        buf.chunks().flat_map(|c| c.iter().copied()).collect()
    }

    #[test]
    fn small_payloads_are_inlined_and_large_ones_referenced() {
        let mut buf = TransmitBuf::new();
        buf.put_slice(b"head");
        buf.put_payload(&Bytes::from_static(b"tiny"));
        let big = Bytes::from(alloc::vec![7u8; 4096]);
        buf.put_payload(&big);
        buf.put_slice(b"tail");
        assert_eq!(buf.chunks().count(), 3);
        assert_eq!(buf.len(), 4 + 4 + 4096 + 4);
        let flat = flatten(&buf);
        assert_eq!(&flat[..8], b"headtiny");
        assert_eq!(&flat[flat.len() - 4..], b"tail");
    }

    #[test]
    fn advance_walks_across_chunks() {
        let mut buf = TransmitBuf::new();
        buf.put_slice(b"abc");
        buf.put_payload(&Bytes::from(alloc::vec![1u8; 2000]));
        buf.put_slice(b"xyz");
        buf.advance(2);
        assert_eq!(buf.chunks().next().unwrap(), b"c");
        buf.advance(1 + 1999);
        assert_eq!(buf.chunks().next().unwrap(), &[1u8]);
        buf.advance(2);
        assert_eq!(flatten(&buf), b"yz");
        buf.advance(100);
        assert!(buf.is_empty());
        assert_eq!(buf.chunks().count(), 0);
    }

    #[test]
    fn read_into_copies_and_consumes() {
        let mut buf = TransmitBuf::new();
        buf.put_slice(b"hello ");
        buf.put_payload(&Bytes::from(alloc::vec![b'w'; 1500]));
        let mut out = [0u8; 10];
        assert_eq!(buf.read_into(&mut out), 10);
        assert_eq!(&out, b"hello wwww");
        assert_eq!(buf.len(), 1496);
        let mut rest = Vec::new();
        buf.drain_into(&mut rest);
        assert_eq!(rest.len(), 1496);
        assert!(buf.is_empty());
    }

    #[test]
    fn the_inline_vector_is_compacted_under_partial_writes() {
        let mut buf = TransmitBuf::new();
        for _ in 0..1000 {
            buf.put_slice(&[5u8; 200]);
            buf.advance(199);
        }
        assert_eq!(buf.len(), 1000);
        assert!(buf.inline.len() < COMPACT_THRESHOLD + 1000);
    }
}
