//! Joins two streams through the gateway: bytes, FIN, resets and stops cross in both
//! directions. Payload chunks move as `Bytes` (no copy in the gateway), and at most one
//! chunk per direction is held here, so memory per relayed stream is bounded by the two
//! connections' windows.

use std::future::poll_fn;
use std::io;
use std::task::{Context, Poll};

use bytes::Bytes;
use proto_core::ErrorCode;
use tether_tokio::{Error, Stream};

use crate::forward::TargetKind;
use crate::metrics::Metrics;

/// Largest chunk taken from one side at a time.
const CHUNK: usize = 64 * 1024;

/// One direction of a splice.
#[derive(Default)]
struct Direction {
    /// A chunk read and not yet fully written.
    pending: Option<Bytes>,
    done: bool,
}

/// The code and text to pass on for an I/O error of `stream`, whose peer is a `kind`.
/// When that peer's connection ended, the other side learns that the peer is no longer
/// online, as for any work in flight; never the code of a connection the other side is
/// not part of (`GOING_AWAY` for a crash, or even `OK`).
fn code_of(e: &io::Error, stream: &Stream, kind: TargetKind) -> (ErrorCode, String) {
    let error = match e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) {
        Some(Error::ConnectionLost(_) | Error::TransportFailed(_) | Error::NotConnected(_)) => {
            kind.gone()
        }
        Some(Error::Closed) if stream.connection().is_closed() => kind.gone(),
        Some(error) => error.clone(),
        None => return (ErrorCode::INTERNAL, e.to_string()),
    };
    (error.code(), error.text())
}

/// Moves what `from` (whose peer is a `from_kind`) sends into `to` (whose peer is a
/// `to_kind`). Ready when this direction is done.
fn poll_direction(
    cx: &mut Context<'_>,
    dir: &mut Direction,
    metrics: &Metrics,
    (from, from_kind): (&mut Stream, TargetKind),
    (to, to_kind): (&mut Stream, TargetKind),
) -> Poll<()> {
    while !dir.done {
        if let Some(chunk) = dir.pending.as_mut() {
            match to.poll_write_bytes(cx, chunk) {
                Poll::Ready(Ok(_)) => {
                    if chunk.is_empty() {
                        dir.pending = None;
                    }
                }
                Poll::Ready(Err(e)) => {
                    // The far side stopped reading: tell the sender, with its code.
                    let (code, _) = code_of(&e, to, to_kind);
                    metrics.stream_reset(code);
                    from.stop(code);
                    dir.done = true;
                }
                Poll::Pending => return Poll::Pending,
            }
            continue;
        }
        match from.poll_read_chunk(cx, CHUNK) {
            Poll::Ready(Ok(Some(chunk))) => {
                metrics.traffic(to_kind).relayed(chunk.len());
                dir.pending = Some(chunk);
            }
            Poll::Ready(Ok(None)) => {
                let _ = to.finish();
                dir.done = true;
            }
            Poll::Ready(Err(e)) => {
                let (code, text) = code_of(&e, from, from_kind);
                metrics.stream_reset(code);
                to.reset(code, &text);
                dir.done = true;
            }
            Poll::Pending => return Poll::Pending,
        }
    }
    Poll::Ready(())
}

/// Relays between `near` (the opener's stream) and `far` (the target's, whose peer is a
/// `far_kind`) until both directions have ended, counting bytes and resets in `metrics`.
pub(crate) async fn splice(
    mut near: Stream,
    mut far: Stream,
    far_kind: TargetKind,
    metrics: &Metrics,
) {
    let near_kind = far_kind.opposite();
    let (mut out, mut back) = (Direction::default(), Direction::default());
    poll_fn(|cx| {
        let (near_side, far_side) = ((&mut near, near_kind), (&mut far, far_kind));
        let forward = poll_direction(cx, &mut out, metrics, near_side, far_side);
        let (near_side, far_side) = ((&mut near, near_kind), (&mut far, far_kind));
        let backward = poll_direction(cx, &mut back, metrics, far_side, near_side);
        if forward.is_ready() && backward.is_ready() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await
}
