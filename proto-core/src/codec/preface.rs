//! The preface: a fixed magic plus version negotiation, sent before any frame.
//!
//! Spec: `docs/PROTOCOL.md#preface`.

use alloc::vec::Vec;

use thiserror::Error;

use super::Sink;

/// The eight magic bytes that open every Tether connection in both directions.
///
/// Like PNG's signature: a non-ASCII first byte (no text protocol starts with it, and a
/// 7-bit channel mangles it), the letters `THR`, then CR LF, SUB, LF to catch line-ending
/// conversion.
pub const MAGIC: [u8; 8] = [0x89, b'T', b'H', b'R', b'\r', b'\n', 0x1a, b'\n'];

/// At most this many versions may be offered.
pub const MAX_VERSIONS: usize = 16;

/// HTTP request lines we recognise, so a browser or curl pointed at a Tether port gets a
/// readable HTTP answer instead of silence.
const HTTP_METHODS: [&[u8]; 10] = [
    b"GET ",
    b"POST ",
    b"PUT ",
    b"HEAD ",
    b"DELETE ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"TRACE ",
    b"PRI * HTTP",
];

/// What a server writes back before closing when the first bytes are an HTTP request.
pub(crate) const HTTP_REJECTION: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Length: 91\r\n\
Connection: close\r\n\
\r\n\
This port speaks the Tether protocol, not HTTP. Connect with a Tether SDK or tether-edge.\r\n";

/// Why a preface could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum PrefaceError {
    /// The first bytes are not the Tether magic.
    #[error("the peer does not speak Tether{}", if *.looks_like_http { " (it sent HTTP)" } else { "" })]
    NotTether {
        /// The bytes look like HTTP (a request on a server, a response on a client).
        looks_like_http: bool,
    },
    /// The client offered no version.
    #[error("the preface offers no protocol version")]
    NoVersions,
    /// More than 16 versions offered.
    #[error("the preface offers {0} versions (limit 16)")]
    TooManyVersions(usize),
}

/// The client's preface: magic, then the versions it supports in preference order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientPreface {
    /// Supported versions, most preferred first.
    pub versions: Vec<u16>,
}

/// The server's preface: magic, the version it selected (0 = none in common), and the
/// versions it supports (so a client can say what would have worked).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerPreface {
    /// The chosen version, or 0 when the two sides share none.
    pub selected: u16,
    /// Versions the server supports.
    pub supported: Vec<u16>,
}

/// Checks the magic against what has arrived. `Ok(false)` means "need more bytes".
fn check_magic(buf: &[u8], http_prefixes: &[&[u8]]) -> Result<bool, PrefaceError> {
    let n = buf.len().min(MAGIC.len());
    if buf.get(..n) == MAGIC.get(..n) {
        return Ok(n == MAGIC.len());
    }
    for prefix in http_prefixes {
        if buf.starts_with(prefix) {
            return Err(PrefaceError::NotTether {
                looks_like_http: true,
            });
        }
        if prefix.starts_with(buf) {
            // Could still become an HTTP request line; wait (the handshake deadline bounds
            // how long).
            return Ok(false);
        }
    }
    Err(PrefaceError::NotTether {
        looks_like_http: false,
    })
}

fn read_versions(buf: &[u8], at: usize) -> Result<Option<(Vec<u16>, usize)>, PrefaceError> {
    let Some(&count) = buf.get(at) else {
        return Ok(None);
    };
    let count = usize::from(count);
    if count > MAX_VERSIONS {
        return Err(PrefaceError::TooManyVersions(count));
    }
    let start = at.saturating_add(1);
    let end = start.saturating_add(count.saturating_mul(2));
    let Some(raw) = buf.get(start..end) else {
        return Ok(None);
    };
    let versions = raw
        .chunks_exact(2)
        .map(|pair| {
            u16::from_be_bytes([
                pair.first().copied().unwrap_or(0),
                pair.get(1).copied().unwrap_or(0),
            ])
        })
        .collect();
    Ok(Some((versions, end)))
}

impl ClientPreface {
    /// Writes the preface.
    pub fn encode<S: Sink>(&self, sink: &mut S) {
        sink.put_slice(&MAGIC);
        let count = self.versions.len().min(MAX_VERSIONS);
        sink.put_slice(&[u8::try_from(count).unwrap_or(0)]);
        for v in self.versions.iter().take(count) {
            sink.put_slice(&v.to_be_bytes());
        }
    }

    /// Reads a preface from the start of `buf`: `Ok(None)` if incomplete, else the preface
    /// and the bytes it took.
    pub fn decode(buf: &[u8]) -> Result<Option<(ClientPreface, usize)>, PrefaceError> {
        if !check_magic(buf, &HTTP_METHODS)? {
            return Ok(None);
        }
        let Some((versions, used)) = read_versions(buf, MAGIC.len())? else {
            return Ok(None);
        };
        if versions.is_empty() {
            return Err(PrefaceError::NoVersions);
        }
        Ok(Some((ClientPreface { versions }, used)))
    }
}

impl ServerPreface {
    /// Writes the preface.
    pub fn encode<S: Sink>(&self, sink: &mut S) {
        sink.put_slice(&MAGIC);
        sink.put_slice(&self.selected.to_be_bytes());
        let count = self.supported.len().min(MAX_VERSIONS);
        sink.put_slice(&[u8::try_from(count).unwrap_or(0)]);
        for v in self.supported.iter().take(count) {
            sink.put_slice(&v.to_be_bytes());
        }
    }

    /// Reads a preface from the start of `buf`: `Ok(None)` if incomplete, else the preface
    /// and the bytes it took.
    pub fn decode(buf: &[u8]) -> Result<Option<(ServerPreface, usize)>, PrefaceError> {
        if !check_magic(buf, &[b"HTTP/"])? {
            return Ok(None);
        }
        let Some(sel) = buf.get(MAGIC.len()..MAGIC.len().saturating_add(2)) else {
            return Ok(None);
        };
        let selected = u16::from_be_bytes([
            sel.first().copied().unwrap_or(0),
            sel.get(1).copied().unwrap_or(0),
        ]);
        let Some((supported, used)) = read_versions(buf, MAGIC.len().saturating_add(2))? else {
            return Ok(None);
        };
        Ok(Some((
            ServerPreface {
                selected,
                supported,
            },
            used,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn http_rejection_declares_its_exact_length() {
        let text = core::str::from_utf8(HTTP_REJECTION).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&alloc::format!("Content-Length: {}", body.len())));
    }

    #[test]
    fn client_preface_round_trips_and_waits_for_every_byte() {
        let p = ClientPreface {
            versions: vec![1, 7],
        };
        let mut wire = Vec::new();
        p.encode(&mut wire);
        for cut in 0..wire.len() {
            assert_eq!(
                ClientPreface::decode(&wire[..cut]),
                Ok(None),
                "cut at {cut}"
            );
        }
        assert_eq!(ClientPreface::decode(&wire), Ok(Some((p, wire.len()))));
    }

    #[test]
    fn server_preface_round_trips() {
        let p = ServerPreface {
            selected: 0,
            supported: vec![1],
        };
        let mut wire = Vec::new();
        p.encode(&mut wire);
        wire.extend_from_slice(b"trailing frame bytes");
        assert_eq!(ServerPreface::decode(&wire), Ok(Some((p, 13))));
    }

    #[test]
    fn garbage_is_rejected_at_the_first_byte() {
        assert_eq!(
            ClientPreface::decode(b"\x00"),
            Err(PrefaceError::NotTether {
                looks_like_http: false
            })
        );
        assert_eq!(
            ClientPreface::decode(b"SSH-2.0-OpenSSH"),
            Err(PrefaceError::NotTether {
                looks_like_http: false
            })
        );
    }

    #[test]
    fn http_requests_are_recognised() {
        assert_eq!(ClientPreface::decode(b"GE"), Ok(None));
        assert_eq!(
            ClientPreface::decode(b"GET / HTTP/1.1\r\n"),
            Err(PrefaceError::NotTether {
                looks_like_http: true
            })
        );
        assert_eq!(
            ServerPreface::decode(b"HTTP/1.1 400 Bad Request"),
            Err(PrefaceError::NotTether {
                looks_like_http: true
            })
        );
    }

    #[test]
    fn version_lists_are_bounded() {
        let mut wire = MAGIC.to_vec();
        wire.push(0);
        assert_eq!(ClientPreface::decode(&wire), Err(PrefaceError::NoVersions));
        let mut wire = MAGIC.to_vec();
        wire.push(17);
        assert_eq!(
            ClientPreface::decode(&wire),
            Err(PrefaceError::TooManyVersions(17))
        );
    }
}
