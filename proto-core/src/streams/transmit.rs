//! Choosing the next DATA frame: round-robin over streams with something to send, each
//! frame bounded by the peer's frame size and by stream and connection credit.

use core::time::Duration;

use bytes::{Bytes, BytesMut};

use super::StreamsState;
use super::state::{SendInput, SendState, Transition};
use crate::codec::Frame;
use crate::config::Config;
use crate::effects::Effects;
use crate::event::{Event, StreamEvent};
use crate::ids::StreamId;
use crate::time::Timestamp;

/// A buffered write at least this large is sent as its own frame rather than copied into a
/// coalesced one.
const COALESCE_MAX_CHUNK: usize = 4096;

/// Takes up to `n` bytes from the front of `buf`: zero-copy when one chunk covers them or is
/// large, otherwise small chunks are coalesced into one frame.
fn take_bytes(buf: &mut alloc::collections::VecDeque<Bytes>, n: usize) -> Bytes {
    let Some(front) = buf.front_mut() else {
        return Bytes::new();
    };
    if front.len() >= n {
        return if front.len() == n {
            buf.pop_front().unwrap_or_default()
        } else {
            front.split_to(n)
        };
    }
    if front.len() >= COALESCE_MAX_CHUNK {
        return buf.pop_front().unwrap_or_default();
    }
    let mut out = BytesMut::with_capacity(n);
    while out.len() < n {
        let Some(front) = buf.front_mut() else {
            break;
        };
        let want = n.saturating_sub(out.len());
        if front.len() <= want {
            out.extend_from_slice(front);
            buf.pop_front();
        } else {
            out.extend_from_slice(&front.split_to(want));
        }
    }
    out.freeze()
}

impl StreamsState {
    /// True when some stream could send now.
    pub(crate) fn has_sendable(&self) -> bool {
        self.ready.iter().any(|id| {
            self.map.get(id).is_some_and(|s| {
                (s.send_buffered > 0 && self.conn_send.available() > 0)
                    || (s.send == SendState::Finishing && s.send_buffered == 0)
            })
        })
    }

    /// The next DATA frame to send, or `None` if no stream can send now.
    pub(crate) fn poll_data(
        &mut self,
        max_frame: usize,
        config: &Config,
        fx: &mut Effects,
    ) -> Option<Frame> {
        let mut tries = self.ready.len();
        while tries > 0 {
            tries = tries.saturating_sub(1);
            let id = self.ready.pop_front()?;
            let Some(stream) = self.map.get_mut(&id) else {
                continue;
            };
            stream.in_ready = false;
            if !matches!(stream.send, SendState::Open | SendState::Finishing) {
                continue;
            }
            let finishing = stream.send == SendState::Finishing;
            if stream.send_buffered == 0 {
                if !finishing {
                    continue;
                }
                if let Transition::To(next) = stream.send.on(SendInput::FinTransmitted) {
                    stream.send = next;
                }
                self.reap(id, fx);
                return Some(Frame::Data {
                    id,
                    fin: true,
                    payload: Bytes::new(),
                });
            }
            let conn_available = self.conn_send.available();
            if conn_available == 0 {
                // Blocked on connection credit: stay queued for when WINDOW arrives, and
                // keep looking for a stream that only has a FIN to send (it needs none).
                stream.in_ready = true;
                self.ready.push_back(id);
                continue;
            }
            let limit = stream
                .send_buffered
                .min(conn_available)
                .min(u64::try_from(max_frame).unwrap_or(u64::MAX));
            let payload = take_bytes(
                &mut stream.send_buf,
                usize::try_from(limit).unwrap_or(usize::MAX),
            );
            let n = u64::try_from(payload.len()).unwrap_or(u64::MAX);
            stream.send_buffered = stream.send_buffered.saturating_sub(n);
            stream.send_credit.consume(n);
            self.conn_send.consume(n);
            let fin = finishing && stream.send_buffered == 0;
            if fin {
                if let Transition::To(next) = stream.send.on(SendInput::FinTransmitted) {
                    stream.send = next;
                }
            } else {
                stream.in_ready = true;
                self.ready.push_back(id);
            }
            if stream.wants_writable && stream.writable(config.stream_send_buffer) > 0 {
                stream.wants_writable = false;
                fx.emit(Event::Stream(StreamEvent::Writable { id }));
            }
            if fin {
                self.reap(id, fx);
            }
            return Some(Frame::Data { id, fin, payload });
        }
        None
    }

    /// Credit to grant on one stream now (auto-tuning its window first), if any.
    ///
    /// Auto-tuning growth, summed over all streams, stays within half the connection
    /// window, so one stream whose reader stalls after growing can hold at most that much
    /// of the connection's credit and the others keep flowing.
    pub(crate) fn take_stream_update(
        &mut self,
        id: StreamId,
        now: Timestamp,
        rtt: Option<Duration>,
        config: &Config,
    ) -> Option<u32> {
        let stream = self.map.get_mut(&id)?;
        stream.window_queued = false;
        if stream.recv != super::RecvState::Open {
            return None;
        }
        if let Some(target) = stream
            .recv_window
            .autotune_target(now, rtt, config.max_stream_window)
        {
            let delta = u64::from(target.saturating_sub(stream.recv_window.window()));
            let budget = u64::from(config.settings.connection_window / 2);
            if self.autotune_extra.saturating_add(delta) <= budget {
                stream.recv_window.grow(target);
                self.autotune_extra = self.autotune_extra.saturating_add(delta);
            }
        }
        stream.recv_window.take_update(now)
    }

    /// Credit to grant on the connection now, if any.
    pub(crate) fn take_connection_update(&mut self, now: Timestamp) -> Option<u32> {
        self.conn_recv.take_update(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::VecDeque;

    #[test]
    fn take_bytes_splits_coalesces_and_passes_large_chunks_through() {
        let mut buf: VecDeque<Bytes> = VecDeque::new();
        buf.push_back(Bytes::from_static(b"abc"));
        buf.push_back(Bytes::from_static(b"defg"));
        buf.push_back(Bytes::from(alloc::vec![7u8; 5000]));
        assert_eq!(take_bytes(&mut buf, 5), Bytes::from_static(b"abcde"));
        assert_eq!(take_bytes(&mut buf, 100).len(), 2 + 98);
        assert_eq!(take_bytes(&mut buf, 10_000).len(), 5000 - 98);
        assert!(buf.is_empty());
        assert_eq!(take_bytes(&mut buf, 10), Bytes::new());
        let big = Bytes::from(alloc::vec![1u8; 8000]);
        buf.push_back(big.clone());
        buf.push_back(Bytes::from_static(b"x"));
        let first = take_bytes(&mut buf, 9000);
        assert_eq!(
            first.as_ptr(),
            big.as_ptr(),
            "a large chunk goes out without a copy"
        );
    }
}
