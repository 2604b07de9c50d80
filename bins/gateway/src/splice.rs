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

/// Largest chunk taken from one side at a time.
const CHUNK: usize = 64 * 1024;

/// One direction of a splice.
#[derive(Default)]
struct Direction {
    /// A chunk read and not yet fully written.
    pending: Option<Bytes>,
    done: bool,
}

/// The code and text an I/O error of a `Stream` carries.
fn code_of(e: &io::Error) -> (ErrorCode, String) {
    match e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) {
        Some(error) => (error.code(), error.text()),
        None => (ErrorCode::INTERNAL, e.to_string()),
    }
}

/// Moves what `from` sends into `to`. Ready when this direction is done.
fn poll_direction(
    cx: &mut Context<'_>,
    dir: &mut Direction,
    from: &mut Stream,
    to: &mut Stream,
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
                    let (code, _) = code_of(&e);
                    from.stop(code);
                    dir.done = true;
                }
                Poll::Pending => return Poll::Pending,
            }
            continue;
        }
        match from.poll_read_chunk(cx, CHUNK) {
            Poll::Ready(Ok(Some(chunk))) => dir.pending = Some(chunk),
            Poll::Ready(Ok(None)) => {
                let _ = to.finish();
                dir.done = true;
            }
            Poll::Ready(Err(e)) => {
                let (code, text) = code_of(&e);
                to.reset(code, &text);
                dir.done = true;
            }
            Poll::Pending => return Poll::Pending,
        }
    }
    Poll::Ready(())
}

/// Relays between `a` and `b` until both directions have ended.
pub(crate) async fn splice(mut a: Stream, mut b: Stream) {
    let (mut ab, mut ba) = (Direction::default(), Direction::default());
    poll_fn(|cx| {
        let forward = poll_direction(cx, &mut ab, &mut a, &mut b);
        let backward = poll_direction(cx, &mut ba, &mut b, &mut a);
        if forward.is_ready() && backward.is_ready() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await
}
