//! Reassembly of a body sent in fragments.
//!
//! A body that arrives in one frame is kept as it arrived (no copy). A fragmented one is
//! appended to a single growing buffer: memory follows the bytes actually received (at
//! most twice them, by doubling), never the declared length, and those bytes were paid for
//! with message credit; tiny fragments cost no per-fragment bookkeeping.

use bytes::{Bytes, BytesMut};

/// Why a fragment does not fit its body.
pub(crate) type FragmentError = &'static str;

#[derive(Debug)]
pub(crate) struct Assembly {
    total: u32,
    received: u32,
    /// The head's fragment, while it is the only one.
    first: Option<Bytes>,
    /// Everything received, once a second fragment arrived.
    joined: BytesMut,
}

impl Assembly {
    /// Starts a body of `total` bytes with the head's fragment (checked by the decoder to be
    /// no longer than `total`).
    pub(crate) fn new(total: u32, first: Bytes) -> Self {
        let received = u32::try_from(first.len()).unwrap_or(u32::MAX).min(total);
        Assembly {
            total,
            received,
            first: Some(first),
            joined: BytesMut::new(),
        }
    }

    /// Adds a continuation fragment. `more` must be set exactly while bytes are missing.
    pub(crate) fn push(&mut self, fragment: Bytes, more: bool) -> Result<(), FragmentError> {
        let len = u32::try_from(fragment.len())
            .map_err(|_| "fragment exceeds the declared body length")?;
        let received = self
            .received
            .checked_add(len)
            .filter(|r| *r <= self.total)
            .ok_or("fragment exceeds the declared body length")?;
        if !more && received != self.total {
            return Err("body ended before its declared length");
        }
        if more && received == self.total {
            return Err("MORE set on the fragment that completes the body");
        }
        self.received = received;
        if let Some(first) = self.first.take() {
            self.joined.extend_from_slice(&first);
        }
        self.joined.extend_from_slice(&fragment);
        Ok(())
    }

    pub(crate) fn is_complete(&self) -> bool {
        self.received == self.total
    }

    /// Bytes received so far.
    pub(crate) fn received(&self) -> u32 {
        self.received
    }

    /// The declared length.
    pub(crate) fn total(&self) -> u32 {
        self.total
    }

    /// The whole body.
    pub(crate) fn into_body(self) -> Bytes {
        match self.first {
            Some(first) => first,
            None => self.joined.freeze(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_fragment_body_is_not_copied() {
        let body = Bytes::from(alloc::vec![5u8; 100]);
        let a = Assembly::new(100, body.clone());
        assert!(a.is_complete());
        assert_eq!(a.into_body().as_ptr(), body.as_ptr());
    }

    #[test]
    fn fragments_join_in_order_and_lengths_are_enforced() {
        let mut a = Assembly::new(6, Bytes::from_static(b"ab"));
        assert!(!a.is_complete());
        assert_eq!(
            a.push(Bytes::from_static(b"cdefg"), false),
            Err("fragment exceeds the declared body length")
        );
        assert_eq!(
            a.push(Bytes::from_static(b"c"), false),
            Err("body ended before its declared length")
        );
        a.push(Bytes::from_static(b"cd"), true).unwrap();
        assert_eq!(
            a.push(Bytes::from_static(b"ef"), true),
            Err("MORE set on the fragment that completes the body")
        );
        a.push(Bytes::from_static(b"ef"), false).unwrap();
        assert!(a.is_complete());
        assert_eq!(a.received(), 6);
        assert_eq!(a.into_body(), Bytes::from_static(b"abcdef"));
    }
}
