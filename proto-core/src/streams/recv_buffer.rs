//! A stream's received, unread bytes.
//!
//! Large payloads are kept as the `Bytes` they arrived in (no copy). Small ones are
//! appended to a growing tail buffer instead of each taking a queue slot and an
//! allocation: a peer sending one-byte DATA frames would otherwise make every buffered byte
//! cost tens of bytes of memory, turning a 256 KiB window into megabytes.

use alloc::collections::VecDeque;

use bytes::{Bytes, BytesMut};

/// Payloads shorter than this are copied into the tail rather than queued as they are.
const COALESCE_BELOW: usize = 1024;

#[derive(Debug, Default)]
pub(crate) struct RecvBuffer {
    /// Chunks in arrival order, all before `tail`.
    chunks: VecDeque<Bytes>,
    /// Small payloads received after the last queued chunk.
    tail: BytesMut,
    /// Total unread bytes.
    len: usize,
}

impl RecvBuffer {
    pub(crate) fn push(&mut self, payload: Bytes) {
        if payload.is_empty() {
            return;
        }
        self.len = self.len.saturating_add(payload.len());
        if payload.len() < COALESCE_BELOW {
            self.tail.extend_from_slice(&payload);
            return;
        }
        if !self.tail.is_empty() {
            self.chunks.push_back(self.tail.split().freeze());
        }
        self.chunks.push_back(payload);
    }

    /// Takes up to `max` (≥ 1) bytes from the front.
    pub(crate) fn take(&mut self, max: usize) -> Option<Bytes> {
        let max = max.max(1);
        let chunk = if let Some(front) = self.chunks.front_mut() {
            if front.len() <= max {
                self.chunks.pop_front()?
            } else {
                front.split_to(max)
            }
        } else if self.tail.is_empty() {
            return None;
        } else {
            let take = max.min(self.tail.len());
            self.tail.split_to(take).freeze()
        };
        self.len = self.len.saturating_sub(chunk.len());
        Some(chunk)
    }

    /// Unread bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn clear(&mut self) {
        *self = RecvBuffer::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_kept_across_queued_chunks_and_the_tail() {
        let mut buf = RecvBuffer::default();
        buf.push(Bytes::from_static(b"ab"));
        buf.push(Bytes::from(alloc::vec![b'L'; 2000]));
        buf.push(Bytes::from_static(b"cd"));
        buf.push(Bytes::from_static(b"ef"));
        assert_eq!(buf.len(), 2006);
        assert_eq!(buf.take(10).unwrap(), Bytes::from_static(b"ab"));
        assert_eq!(buf.take(5000).unwrap().len(), 2000);
        assert_eq!(buf.take(3).unwrap(), Bytes::from_static(b"cde"));
        assert_eq!(buf.take(3).unwrap(), Bytes::from_static(b"f"));
        assert_eq!(buf.take(3), None);
        assert!(buf.is_empty());
    }

    #[test]
    fn tiny_payloads_share_one_buffer() {
        let mut buf = RecvBuffer::default();
        for i in 0..10_000u32 {
            buf.push(Bytes::copy_from_slice(&[i as u8]));
        }
        assert!(buf.chunks.is_empty(), "no per-payload queue slots");
        assert_eq!(buf.len(), 10_000);
        assert!(buf.tail.capacity() < 3 * 10_000);
        let all = buf.take(usize::MAX).unwrap();
        assert_eq!(all.len(), 10_000);
        assert!(all.iter().enumerate().all(|(i, b)| *b == i as u8));
    }

    #[test]
    fn a_large_payload_is_not_copied() {
        let mut buf = RecvBuffer::default();
        let big = Bytes::from(alloc::vec![1u8; 4096]);
        buf.push(big.clone());
        assert_eq!(buf.take(usize::MAX).unwrap().as_ptr(), big.as_ptr());
    }
}
