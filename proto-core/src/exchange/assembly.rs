//! Reassembly of a body sent in fragments.
//!
//! Fragments are kept as the `Bytes` they arrived in (no copy) and joined once, when the
//! body is complete; a body that arrived in one frame is never copied at all. Memory is the
//! bytes actually received, never the declared length, and those bytes were paid for with
//! message credit.

use alloc::vec::Vec;

use bytes::{Bytes, BytesMut};

/// Why a fragment does not fit its body.
pub(crate) type FragmentError = &'static str;

#[derive(Debug)]
pub(crate) struct Assembly {
    total: u32,
    received: u32,
    parts: Vec<Bytes>,
}

impl Assembly {
    /// Starts a body of `total` bytes with the head's fragment (checked by the decoder to be
    /// no longer than `total`).
    pub(crate) fn new(total: u32, first: Bytes) -> Self {
        let received = u32::try_from(first.len()).unwrap_or(u32::MAX).min(total);
        let mut parts = Vec::new();
        if !first.is_empty() {
            parts.push(first);
        }
        Assembly {
            total,
            received,
            parts,
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
        self.parts.push(fragment);
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

    /// The whole body; copies only when it arrived in more than one fragment.
    pub(crate) fn into_body(mut self) -> Bytes {
        match self.parts.len() {
            0 => Bytes::new(),
            1 => self.parts.pop().unwrap_or_default(),
            _ => {
                let mut out = BytesMut::with_capacity(usize::try_from(self.received).unwrap_or(0));
                for part in &self.parts {
                    out.extend_from_slice(part);
                }
                out.freeze()
            }
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
