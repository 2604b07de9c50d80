//! Names on the wire: methods, topics, service names, hooks.

use alloc::string::String;
use core::fmt;

use bytes::Bytes;
use thiserror::Error;

/// The longest name the wire can carry (its length is one byte).
pub const MAX_NAME_LEN: usize = 255;

/// A method, topic, service or hook name: valid UTF-8 of at most 255 bytes.
///
/// Decoded names share the received buffer, so routing on them copies nothing.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(Bytes);

/// A string that cannot be a [`Name`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum NameError {
    /// Longer than [`MAX_NAME_LEN`] bytes.
    #[error("name is {0} bytes long; the limit is 255")]
    TooLong(usize),
    /// Not UTF-8 (only possible from bytes).
    #[error("name is not valid UTF-8")]
    NotUtf8,
}

impl Name {
    /// The empty name (no method, topic or service given).
    pub const EMPTY: Name = Name(Bytes::new());

    /// A name from a string.
    pub fn new(name: &str) -> Result<Name, NameError> {
        Name::check_len(name.len())?;
        Ok(Name(Bytes::copy_from_slice(name.as_bytes())))
    }

    /// A name from a `'static` string, without copying.
    pub fn from_static(name: &'static str) -> Result<Name, NameError> {
        Name::check_len(name.len())?;
        Ok(Name(Bytes::from_static(name.as_bytes())))
    }

    /// A name from bytes that must be UTF-8.
    pub fn from_bytes(bytes: Bytes) -> Result<Name, NameError> {
        Name::check_len(bytes.len())?;
        core::str::from_utf8(&bytes).map_err(|_| NameError::NotUtf8)?;
        Ok(Name(bytes))
    }

    fn check_len(len: usize) -> Result<(), NameError> {
        if len > MAX_NAME_LEN {
            Err(NameError::TooLong(len))
        } else {
            Ok(())
        }
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        // Every constructor validated UTF-8, so this never falls back.
        core::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The raw bytes, shared with the buffer they were decoded from.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True for the empty name.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl TryFrom<&str> for Name {
    type Error = NameError;
    fn try_from(s: &str) -> Result<Name, NameError> {
        Name::new(s)
    }
}

impl TryFrom<String> for Name {
    type Error = NameError;
    fn try_from(s: String) -> Result<Name, NameError> {
        Name::check_len(s.len())?;
        Ok(Name(Bytes::from(s.into_bytes())))
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_bounded_and_utf8() {
        assert_eq!(Name::new("echo").unwrap(), "echo");
        let long = "x".repeat(256);
        assert_eq!(Name::new(&long), Err(NameError::TooLong(256)));
        assert!(Name::new(&long[..255]).is_ok());
        assert_eq!(
            Name::from_bytes(Bytes::from_static(&[0xff, 0xfe])),
            Err(NameError::NotUtf8)
        );
        assert!(Name::EMPTY.is_empty());
        assert_eq!(Name::try_from(String::from("ü")).unwrap().len(), 2);
    }
}
