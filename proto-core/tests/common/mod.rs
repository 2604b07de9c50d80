//! Helpers shared by the pair scenario tests.
#![allow(dead_code)]

use bytes::Bytes;
use proto_core::testing::{End, Pair};
use proto_core::*;

/// The byte at `offset` of the test pattern of `stream`: any mix-up of streams or offsets
/// shows up as a mismatch.
pub(crate) fn pattern(stream: u64, offset: u64) -> u8 {
    let x = offset
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(stream.wrapping_mul(0xC2B2_AE3D_27D4_EB4F));
    (x >> 56) as u8
}

pub(crate) fn pattern_bytes(stream: u64, offset: u64, len: usize) -> Bytes {
    (0..len as u64)
        .map(|i| pattern(stream, offset + i))
        .collect::<Vec<u8>>()
        .into()
}

/// Tracks one direction of a stream transfer: what was written, what was read and checked.
#[derive(Debug, Default)]
pub(crate) struct Transfer {
    pub(crate) total: u64,
    pub(crate) written: u64,
    pub(crate) read: u64,
    pub(crate) finished: bool,
    pub(crate) eof: bool,
}

/// Writes as much of the pattern as the stream takes, finishing at `total`.
pub(crate) fn write_some(end: &mut End, id: StreamId, t: &mut Transfer, chunk: usize) {
    while t.written < t.total {
        let len = chunk.min((t.total - t.written) as usize);
        let mut data = pattern_bytes(id.raw(), t.written, len);
        match end.conn.stream(id).unwrap().write_bytes(&mut data) {
            Ok(n) => t.written += n as u64,
            Err(WriteError::Blocked) => return,
            Err(e) => panic!("write failed: {e}"),
        }
    }
    if !t.finished {
        end.conn.stream(id).unwrap().finish().unwrap();
        t.finished = true;
    }
}

/// Reads everything available, checking every byte against the pattern.
pub(crate) fn read_some(end: &mut End, id: StreamId, t: &mut Transfer, max: usize) {
    if t.eof {
        return;
    }
    loop {
        let Ok(mut stream) = end.conn.stream(id) else {
            return;
        };
        match stream.read(max) {
            Ok(Some(chunk)) => {
                for (i, b) in chunk.iter().enumerate() {
                    let want = pattern(id.raw(), t.read + i as u64);
                    assert_eq!(
                        *b,
                        want,
                        "stream {id:?} byte {} corrupted",
                        t.read + i as u64
                    );
                }
                t.read += chunk.len() as u64;
            }
            Ok(None) => {
                t.eof = true;
                return;
            }
            Err(ReadError::Blocked) => return,
            Err(e) => panic!("read failed: {e}"),
        }
    }
}

/// Accepts every stream the server was offered.
pub(crate) fn accept_all(end: &mut End) -> Vec<StreamId> {
    let mut ids = Vec::new();
    while let Some(incoming) = end.conn.next_incoming_stream() {
        end.conn.accept_stream(incoming.id, Bytes::new()).unwrap();
        ids.push(incoming.id);
    }
    ids
}

/// True if `end` saw a ConnectionLost, and its error.
pub(crate) fn lost(end: &End) -> Option<ConnectionError> {
    end.events.iter().find_map(|e| match e {
        Event::ConnectionLost(err) => Some(err.clone()),
        _ => None,
    })
}

pub(crate) fn name(s: &str) -> Name {
    Name::new(s).unwrap()
}

/// Asserts neither side ended with a protocol violation: two correct cores talking to each
/// other must never accuse each other.
pub(crate) fn assert_no_violation(pair: &Pair) {
    for (side, end) in [("client", &pair.client), ("server", &pair.server)] {
        if let Some(ConnectionError::ProtocolViolation(v)) = end.conn.error() {
            panic!("{side} saw a protocol violation: {v}");
        }
    }
}
