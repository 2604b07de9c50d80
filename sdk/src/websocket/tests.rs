//! `WsTransport` over an in-memory message stream.

use std::collections::VecDeque;
use std::task::Waker;

use super::*;

/// Plays the WebSocket: hands out `incoming` (then waits, or ends if `ended`), records
/// what is sent and how often it is flushed.
#[derive(Default)]
struct MockWs {
    incoming: VecDeque<Result<Message, WsError>>,
    ended: bool,
    sent: Vec<Message>,
    flushes: usize,
}

impl MockWs {
    fn with(incoming: impl IntoIterator<Item = Result<Message, WsError>>) -> MockWs {
        MockWs {
            incoming: incoming.into_iter().collect(),
            ..MockWs::default()
        }
    }
}

impl Stream for MockWs {
    type Item = Result<Message, WsError>;

    fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.incoming.pop_front() {
            Some(item) => Poll::Ready(Some(item)),
            None if self.ended => Poll::Ready(None),
            None => Poll::Pending,
        }
    }
}

impl Sink<Message> for MockWs {
    type Error = WsError;

    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        Poll::Ready(Ok(()))
    }

    fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), WsError> {
        self.sent.push(item);
        Ok(())
    }

    fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        self.flushes += 1;
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), WsError>> {
        Poll::Ready(Ok(()))
    }
}

fn binary(bytes: &'static [u8]) -> Result<Message, WsError> {
    Ok(Message::Binary(Bytes::from_static(bytes)))
}

fn read(transport: &mut WsTransport<MockWs>, len: usize) -> Poll<io::Result<Vec<u8>>> {
    let mut buf = vec![0; len];
    let mut cx = Context::from_waker(Waker::noop());
    Pin::new(transport)
        .poll_read(&mut cx, &mut buf)
        .map_ok(|n| buf[..n].to_vec())
}

fn read_ok(transport: &mut WsTransport<MockWs>, len: usize) -> Vec<u8> {
    match read(transport, len) {
        Poll::Ready(Ok(bytes)) => bytes,
        other => panic!("expected bytes, got {other:?}"),
    }
}

#[test]
fn reads_keep_the_rest_of_a_message_and_ignore_boundaries() {
    let ws = MockWs::with([binary(b"hello world"), binary(b""), binary(b"!")]);
    let mut t = WsTransport::new(ws, None);
    assert_eq!(read_ok(&mut t, 5), b"hello");
    assert_eq!(read_ok(&mut t, 100), b" world");
    // The empty message is skipped, not taken for the end of input.
    assert_eq!(read_ok(&mut t, 100), b"!");
    assert!(read(&mut t, 100).is_pending());
}

#[test]
fn a_text_message_is_an_error() {
    let ws = MockWs::with([binary(b"ab"), Ok(Message::text("hi"))]);
    let mut t = WsTransport::new(ws, None);
    assert_eq!(read_ok(&mut t, 10), b"ab");
    match read(&mut t, 10) {
        Poll::Ready(Err(e)) => {
            assert_eq!(e.kind(), io::ErrorKind::InvalidData);
            assert_eq!(e.to_string(), "text message on a Tether WebSocket");
        }
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn close_and_the_end_of_the_stream_are_the_end_of_input() {
    let ws = MockWs::with([
        binary(b"last"),
        Ok(Message::Close(None)),
        binary(b"ignored"),
    ]);
    let mut t = WsTransport::new(ws, None);
    assert_eq!(read_ok(&mut t, 10), b"last");
    assert_eq!(read_ok(&mut t, 10), b"");
    assert_eq!(read_ok(&mut t, 10), b"");

    let mut ended = MockWs::with([binary(b"x")]);
    ended.ended = true;
    let mut t = WsTransport::new(ended, None);
    assert_eq!(read_ok(&mut t, 10), b"x");
    assert_eq!(read_ok(&mut t, 10), b"");

    let closed = MockWs::with([Err(WsError::ConnectionClosed)]);
    assert_eq!(read_ok(&mut WsTransport::new(closed, None), 10), b"");
}

#[test]
fn pings_are_skipped_and_their_pongs_flushed() {
    let ws = MockWs::with([
        Ok(Message::Ping(Bytes::from_static(b"p"))),
        Ok(Message::Pong(Bytes::new())),
        binary(b"data"),
    ]);
    let mut t = WsTransport::new(ws, None);
    assert_eq!(read_ok(&mut t, 10), b"data");
    assert_eq!(t.get_ref().flushes, 1);
}

#[test]
fn protocol_errors_are_invalid_data_and_io_errors_pass_through() {
    let capacity = tungstenite::error::CapacityError::MessageTooLong {
        size: 2,
        max_size: 1,
    };
    let ws = MockWs::with([Err(WsError::Capacity(capacity))]);
    match read(&mut WsTransport::new(ws, None), 10) {
        Poll::Ready(Err(e)) => assert_eq!(e.kind(), io::ErrorKind::InvalidData),
        other => panic!("expected an error, got {other:?}"),
    }
    let reset = io::Error::from(io::ErrorKind::ConnectionReset);
    let ws = MockWs::with([Err(WsError::Io(reset))]);
    match read(&mut WsTransport::new(ws, None), 10) {
        Poll::Ready(Err(e)) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn a_write_sends_one_binary_message_of_at_most_64_kib() {
    let mut t = WsTransport::new(MockWs::default(), None);
    let mut cx = Context::from_waker(Waker::noop());
    let (a, b) = (vec![1u8; 40_000], vec![2u8; 40_000]);
    let written =
        Pin::new(&mut t).poll_write_vectored(&mut cx, &[IoSlice::new(&a), IoSlice::new(&b)]);
    assert!(matches!(written, Poll::Ready(Ok(MAX_WRITE))), "{written:?}");
    let small =
        Pin::new(&mut t).poll_write_vectored(&mut cx, &[IoSlice::new(b"ab"), IoSlice::new(b"c")]);
    assert!(matches!(small, Poll::Ready(Ok(3))), "{small:?}");
    assert!(matches!(
        Pin::new(&mut t).poll_write_vectored(&mut cx, &[]),
        Poll::Ready(Ok(0))
    ));
    let sent = &t.get_ref().sent;
    assert_eq!(sent.len(), 2);
    let Message::Binary(first) = &sent[0] else {
        panic!("{:?}", sent[0])
    };
    assert_eq!(first.len(), MAX_WRITE);
    assert!(first[..40_000].iter().all(|&x| x == 1) && first[40_000..].iter().all(|&x| x == 2));
    assert_eq!(sent[1], Message::Binary(Bytes::from_static(b"abc")));
}

#[test]
fn shutdown_sends_close_once_and_ends_writing() {
    let mut t = WsTransport::new(MockWs::default(), None);
    let mut cx = Context::from_waker(Waker::noop());
    assert!(matches!(
        Pin::new(&mut t).poll_shutdown(&mut cx),
        Poll::Ready(Ok(()))
    ));
    assert!(matches!(
        Pin::new(&mut t).poll_shutdown(&mut cx),
        Poll::Ready(Ok(()))
    ));
    assert_eq!(t.get_ref().sent, [Message::Close(None)]);
    assert!(t.get_ref().flushes >= 1);
    match Pin::new(&mut t).poll_write_vectored(&mut cx, &[IoSlice::new(b"x")]) {
        Poll::Ready(Err(e)) => assert_eq!(e.kind(), io::ErrorKind::BrokenPipe),
        other => panic!("expected an error, got {other:?}"),
    }
}
