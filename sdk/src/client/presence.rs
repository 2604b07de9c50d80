//! The gateway hooks a service can provide: edge-id assignment and presence events
//! (`docs/PROTOCOL.md#gateway-hooks`). The gateway invokes them as ordinary requests whose
//! method is the hook's `$` name; this module encodes and decodes their bodies.

use std::future::Future;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::client::handler::{CallRequest, Handler};
use crate::error::Error;

/// Hook: the gateway asks the service which id an edge gets (or whether it may connect).
pub const EDGE_ID_HOOK: &str = "$edge_id";
/// Hook: an edge came online.
pub const EDGE_ONLINE_HOOK: &str = "$edge_online";
/// Hook: an edge went offline.
pub const EDGE_OFFLINE_HOOK: &str = "$edge_offline";

/// An edge as the gateway describes it to the hooks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EdgeInfo {
    /// The edge's id: the id it asked for (0 = none) in the edge-id hook, its assigned id
    /// in presence events.
    pub id: u64,
    /// The edge's network address as the gateway sees it (may be empty).
    pub addr: String,
    /// The metadata the edge sent in its handshake.
    pub metadata: Bytes,
}

impl EdgeInfo {
    /// The hook body: `id` (u64, big-endian), `addr` (u8 length + UTF-8), then metadata
    /// to the end.
    pub fn encode(&self) -> Bytes {
        let addr = clip_addr(&self.addr);
        let mut out = BytesMut::with_capacity(9 + addr.len() + self.metadata.len());
        out.put_u64(self.id);
        out.put_u8(addr.len() as u8);
        out.put_slice(addr.as_bytes());
        out.put_slice(&self.metadata);
        out.freeze()
    }

    /// Decodes a hook body.
    pub fn decode(mut body: Bytes) -> Result<EdgeInfo, Error> {
        let malformed = || Error::InvalidArgument(String::from("malformed edge description"));
        if body.remaining() < 9 {
            return Err(malformed());
        }
        let id = body.get_u64();
        let len = usize::from(body.get_u8());
        if body.remaining() < len {
            return Err(malformed());
        }
        let addr = String::from_utf8(body.split_to(len).to_vec()).map_err(|_| malformed())?;
        Ok(EdgeInfo {
            id,
            addr,
            metadata: body,
        })
    }
}

/// Addresses longer than a `u8` length are cut (on a character boundary); real socket
/// addresses are at most 47 bytes.
fn clip_addr(addr: &str) -> &str {
    let mut end = addr.len().min(255);
    while !addr.is_char_boundary(end) {
        end -= 1;
    }
    &addr[..end]
}

/// The answer to the edge-id hook: the id, big-endian.
pub fn encode_edge_id(id: u64) -> Bytes {
    Bytes::copy_from_slice(&id.to_be_bytes())
}

/// Decodes the edge-id hook's answer.
pub fn decode_edge_id(body: &[u8]) -> Result<u64, Error> {
    let bytes: [u8; 8] = body
        .try_into()
        .map_err(|_| Error::InvalidArgument(String::from("an edge id is 8 bytes")))?;
    Ok(u64::from_be_bytes(bytes))
}

/// Wraps an edge-id function as the handler of [`EDGE_ID_HOOK`].
pub(crate) fn edge_id_handler<F, Fut>(f: F) -> Handler
where
    F: Fn(EdgeInfo) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<u64, Error>> + Send + 'static,
{
    let f = Arc::new(f);
    Arc::new(move |call: CallRequest| {
        let f = Arc::clone(&f);
        Box::pin(async move {
            let edge = EdgeInfo::decode(call.body)?;
            f(edge).await.map(encode_edge_id)
        })
    })
}

/// Wraps a presence callback as the handler of an online or offline hook.
pub(crate) fn presence_handler<F, Fut>(f: F) -> Handler
where
    F: Fn(EdgeInfo) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), Error>> + Send + 'static,
{
    let f = Arc::new(f);
    Arc::new(move |call: CallRequest| {
        let f = Arc::clone(&f);
        Box::pin(async move {
            let edge = EdgeInfo::decode(call.body)?;
            f(edge).await.map(|()| Bytes::new())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edge_info_round_trips_and_rejects_truncation() {
        let edge = EdgeInfo {
            id: 42,
            addr: "10.0.0.7:5555".into(),
            metadata: Bytes::from_static(b"{\"sn\":\"A1\"}"),
        };
        let body = edge.encode();
        assert_eq!(&body[..8], &42u64.to_be_bytes());
        assert_eq!(body[8], 13);
        assert_eq!(EdgeInfo::decode(body.clone()).unwrap(), edge);
        for cut in 0..9 + 13 {
            assert!(EdgeInfo::decode(body.slice(..cut)).is_err(), "cut at {cut}");
        }
        assert_eq!(decode_edge_id(&encode_edge_id(7)).unwrap(), 7);
        assert!(decode_edge_id(b"short").is_err());
    }

    #[test]
    fn long_addresses_are_cut_on_a_character_boundary() {
        let edge = EdgeInfo {
            id: 1,
            addr: "é".repeat(200),
            metadata: Bytes::new(),
        };
        let decoded = EdgeInfo::decode(edge.encode()).unwrap();
        assert_eq!(decoded.addr.len(), 254);
    }
}
