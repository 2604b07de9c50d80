//! Shared pieces of the proto-core benchmarks in `benches/benches/`.
//!
//! The benches drive two [`Connection`]s directly ([`Link`]) instead of going through
//! `proto_core::testing::Pair`: the pair harness copies every byte through a
//! `VecDeque<u8>` one element at a time and a scratch vector, which would dominate a
//! throughput figure and measure the harness rather than the core. A [`Link`] hands the
//! sender's [`TransmitBuf`] to the receiver's `handle_input` with at most one `memcpy`
//! (the one a socket read would do), so what is timed is the core's own work.
//!
//! The scenarios ([`bulk_transfer`], [`rpc_round_trips`], [`message_round_trips`]) and
//! the codec samples ([`sample_frames`]) live here, not in the bench files, so the unit
//! tests below check that each bench moves exactly the bytes, calls and messages it
//! claims to (a bench that silently stalls or drops work measures nothing).

use std::collections::HashMap;

use bytes::Bytes;
use proto_core::codec::{Frame, MessageHead, RequestHead};
use proto_core::{
    Address, Call, ClientInfo, Config, Connection, ErrorCode, Event, HandshakeAccept, Hello,
    MessageEvent, MessageId, Name, OpenStream, Publish, Registration, RegistrationKind, RequestId,
    Role, RpcEvent, Settings, StreamEvent, StreamId, Timestamp, TransmitBuf,
};

/// How bytes written by one side reach the other side's `handle_input`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feed {
    /// Each [`TransmitBuf`] chunk is passed to `handle_input` as is: no copy in the driver,
    /// but input arrives frame-aligned (header and large payload as separate calls), which
    /// no socket guarantees.
    Chunks,
    /// Bytes are copied into a read buffer of this size first, the way the blocking driver
    /// of the crate docs reads a socket (at most `input_capacity` bytes per read). Frames
    /// straddle reads, as they do on a real transport; costs one `memcpy` in the driver.
    Reads(usize),
}

/// Two connected [`Connection`]s and the buffers between them, on a frozen clock (no timer
/// fires, so nothing but the benchmarked traffic happens).
#[derive(Debug)]
pub struct Link {
    /// The dialling side.
    pub client: Connection,
    /// The accepting side.
    pub server: Connection,
    /// The time passed to every call.
    pub now: Timestamp,
    /// How bytes are handed over.
    pub feed: Feed,
    client_out: TransmitBuf,
    server_out: TransmitBuf,
    read_buf: Vec<u8>,
}

impl Link {
    /// A connected pair with `config` on both sides and an edge client. Panics if the
    /// handshake does not complete.
    pub fn connected(config: Config, feed: Feed) -> Link {
        let now = Timestamp::from_millis(1_000);
        let client = Connection::client(config.clone(), ClientInfo::new(Role::Edge), now)
            .expect("client config");
        let server = Connection::server(config, now).expect("server config");
        let read_len = match feed {
            Feed::Chunks => 0,
            Feed::Reads(n) => n,
        };
        let mut link = Link {
            client,
            server,
            now,
            feed,
            client_out: TransmitBuf::new(),
            server_out: TransmitBuf::new(),
            read_buf: vec![0; read_len],
        };
        for _ in 0..100 {
            let moved = link.client_to_server() + link.server_to_client();
            while let Some(event) = link.server.poll_event() {
                if let Event::HandshakeRequest(_) = event {
                    let accept = HandshakeAccept {
                        assigned_id: 1,
                        ..HandshakeAccept::default()
                    };
                    link.server.accept_handshake(now, accept).expect("accept");
                }
            }
            while link.client.poll_event().is_some() {}
            if moved == 0 && link.client.is_connected() && link.server.is_connected() {
                return link;
            }
        }
        panic!(
            "handshake did not complete: client {:?}, server {:?}",
            link.client.error(),
            link.server.error()
        );
    }

    /// Moves everything the client has to send into the server; returns the byte count.
    /// Stops early when the server's input capacity is zero (its events must be drained).
    pub fn client_to_server(&mut self) -> usize {
        pump(
            &mut self.client,
            &mut self.client_out,
            &mut self.server,
            self.now,
            self.feed,
            &mut self.read_buf,
        )
    }

    /// Moves everything the server has to send into the client; returns the byte count.
    pub fn server_to_client(&mut self) -> usize {
        pump(
            &mut self.server,
            &mut self.server_out,
            &mut self.client,
            self.now,
            self.feed,
            &mut self.read_buf,
        )
    }
}

fn pump(
    from: &mut Connection,
    out: &mut TransmitBuf,
    to: &mut Connection,
    now: Timestamp,
    feed: Feed,
    read_buf: &mut [u8],
) -> usize {
    let mut moved = 0;
    loop {
        if out.is_empty() && from.poll_transmit(now, out) == 0 {
            break;
        }
        let room = to.input_capacity();
        if room == 0 {
            break;
        }
        let n = match feed {
            Feed::Chunks => {
                let n = to.handle_input(now, out.first_chunk());
                out.advance(n);
                n
            }
            Feed::Reads(_) => {
                let len = room.min(read_buf.len());
                let n = out.read_into(&mut read_buf[..len]);
                let taken = to.handle_input(now, &read_buf[..n]);
                assert_eq!(taken, n, "handle_input took less than input_capacity");
                n
            }
        };
        if n == 0 {
            break;
        }
        moved += n;
    }
    moved
}

/// `len` bytes of a fixed pattern, in one allocation (the benches share it by refcount).
pub fn payload(len: usize) -> Bytes {
    (0..len)
        .map(|i| (i * 31 % 251) as u8)
        .collect::<Vec<u8>>()
        .into()
}

fn name(s: &'static str) -> Name {
    Name::from_static(s).expect("valid name")
}

fn lost(side: &str, conn: &Connection) -> ! {
    panic!("{side} lost the connection: {:?}", conn.error())
}

/// Rounds without any byte moved or event seen before a scenario is declared stalled.
const STALL_ROUNDS: u32 = 3;

/// One sending stream of [`bulk_transfer`].
struct Upload {
    id: StreamId,
    rest: Bytes,
    finished: bool,
}

impl Upload {
    /// Writes what the stream takes now (zero-copy) and finishes once everything is in.
    fn write(&mut self, conn: &mut Connection) {
        let mut stream = conn.stream(self.id).expect("client stream");
        if !self.rest.is_empty() {
            match stream.write_bytes(&mut self.rest) {
                Ok(_) | Err(proto_core::WriteError::Blocked) => {}
                Err(e) => panic!("write failed: {e}"),
            }
        }
        if self.rest.is_empty() && !self.finished {
            stream.finish().expect("finish");
            self.finished = true;
        }
    }
}

/// Opens `streams` client streams and sends `data` over them, each stream its own slice
/// (`data.len() / streams` bytes; zero-copy writes, FIN at the end), has the server accept
/// them and read everything as soon as it is readable, then closes the server halves and
/// reads their FINs on the client, so every stream is reaped. Returns the bytes the server
/// read.
///
/// Slicing one buffer rather than sending the same bytes on every stream keeps the memory
/// the sender touches the same whatever the stream count, so 1 and 64 streams compare.
///
/// Writes and reads are driven by `Writable` and `Readable` events, as an application would;
/// reads take `Bytes` without copying. Windows are the defaults (256 KiB per stream, 16 MiB
/// per connection), and the clock never moves, so RTT-based window auto-tuning stays off.
pub fn bulk_transfer(link: &mut Link, streams: usize, data: &Bytes) -> u64 {
    let per_stream = data.len() / streams;
    let mut uploads = Vec::with_capacity(streams);
    let mut index = HashMap::with_capacity(streams);
    for i in 0..streams {
        let id = link
            .client
            .open_stream(OpenStream::default())
            .expect("open stream");
        index.insert(id, i);
        let mut up = Upload {
            id,
            rest: data.slice(i * per_stream..(i + 1) * per_stream),
            finished: false,
        };
        up.write(&mut link.client);
        uploads.push(up);
    }
    let mut server_read = 0u64;
    let mut client_eofs = 0;
    let mut idle = 0;
    while client_eofs < streams {
        let mut progress = link.client_to_server() > 0;
        while let Some(event) = link.server.poll_event() {
            progress = true;
            match event {
                Event::IncomingStreams => {
                    while let Some(incoming) = link.server.next_incoming_stream() {
                        link.server
                            .accept_stream(incoming.id, Bytes::new())
                            .expect("accept");
                    }
                }
                Event::Stream(StreamEvent::Readable { id }) => {
                    let mut stream = link.server.stream(id).expect("server stream");
                    loop {
                        match stream.read(usize::MAX) {
                            Ok(Some(chunk)) => server_read += chunk.len() as u64,
                            Ok(None) => {
                                stream.finish().expect("server finish");
                                break;
                            }
                            Err(proto_core::ReadError::Blocked) => break,
                            Err(e) => panic!("server read failed: {e}"),
                        }
                    }
                }
                Event::ConnectionLost(_) => lost("server", &link.server),
                _ => {}
            }
        }
        progress |= link.server_to_client() > 0;
        while let Some(event) = link.client.poll_event() {
            progress = true;
            match event {
                Event::Stream(StreamEvent::Writable { id }) => {
                    uploads[index[&id]].write(&mut link.client);
                }
                Event::Stream(StreamEvent::Readable { id }) => {
                    let mut stream = link.client.stream(id).expect("client stream");
                    match stream.read(usize::MAX) {
                        Ok(None) => client_eofs += 1,
                        other => panic!("expected the server's FIN on {id:?}, got {other:?}"),
                    }
                }
                Event::ConnectionLost(_) => lost("client", &link.client),
                _ => {}
            }
        }
        idle = if progress { 0 } else { idle + 1 };
        assert!(
            idle < STALL_ROUNDS,
            "bulk transfer stalled after {server_read} bytes"
        );
    }
    server_read
}

/// Runs `calls` RPC round trips with up to `in_flight` calls outstanding: the client calls
/// `echo` with `body`, the server takes each request when `IncomingRequests` says so and
/// responds with the request body, the client counts `Response` events. Returns the bytes
/// of response bodies received.
pub fn rpc_round_trips(link: &mut Link, calls: u64, in_flight: usize, body: &Bytes) -> u64 {
    let method = name("echo");
    let (mut issued, mut done, mut outstanding) = (0u64, 0u64, 0usize);
    let mut received = 0u64;
    let mut idle = 0;
    while done < calls {
        while outstanding < in_flight && issued < calls {
            let call = Call::new(method.clone(), body.clone());
            link.client.rpc().call(link.now, call).expect("call");
            issued += 1;
            outstanding += 1;
        }
        let mut progress = link.client_to_server() > 0;
        while let Some(event) = link.server.poll_event() {
            progress = true;
            match event {
                Event::IncomingRequests => {
                    let mut rpc = link.server.rpc();
                    while let Some(req) = rpc.next_request() {
                        rpc.respond(req.id, ErrorCode::OK, req.body)
                            .expect("respond");
                    }
                }
                Event::ConnectionLost(_) => lost("server", &link.server),
                _ => {}
            }
        }
        progress |= link.server_to_client() > 0;
        while let Some(event) = link.client.poll_event() {
            progress = true;
            match event {
                Event::Rpc(RpcEvent::Response { status, body, .. }) => {
                    assert_eq!(status, ErrorCode::OK);
                    received += body.len() as u64;
                    done += 1;
                    outstanding -= 1;
                }
                Event::ConnectionLost(_) => lost("client", &link.client),
                _ => {}
            }
        }
        idle = if progress { 0 } else { idle + 1 };
        assert!(idle < STALL_ROUNDS, "RPC stalled after {done} round trips");
    }
    received
}

/// Runs `messages` publish/acknowledge round trips with up to `in_flight` unacknowledged:
/// the client publishes `body` on a topic with an acknowledgement wanted, the server takes
/// each message on `IncomingMessages` and acknowledges it `OK`, the client counts `Acked`.
/// Returns the number of acknowledgements.
pub fn message_round_trips(link: &mut Link, messages: u64, in_flight: usize, body: &Bytes) -> u64 {
    let topic = name("telemetry/temperature");
    let (mut issued, mut acked, mut outstanding) = (0u64, 0u64, 0usize);
    let mut idle = 0;
    while acked < messages {
        while outstanding < in_flight && issued < messages {
            let msg = Publish::new(topic.clone(), body.clone());
            link.client
                .messages()
                .publish(link.now, msg)
                .expect("publish");
            issued += 1;
            outstanding += 1;
        }
        let mut progress = link.client_to_server() > 0;
        while let Some(event) = link.server.poll_event() {
            progress = true;
            match event {
                Event::IncomingMessages => {
                    let mut msgs = link.server.messages();
                    while let Some(msg) = msgs.next_message() {
                        msgs.ack(msg.id, ErrorCode::OK, "").expect("ack");
                    }
                }
                Event::ConnectionLost(_) => lost("server", &link.server),
                _ => {}
            }
        }
        progress |= link.server_to_client() > 0;
        while let Some(event) = link.client.poll_event() {
            progress = true;
            match event {
                Event::Message(MessageEvent::Acked { code, .. }) => {
                    assert_eq!(code, ErrorCode::OK);
                    acked += 1;
                    outstanding -= 1;
                }
                Event::ConnectionLost(_) => lost("client", &link.client),
                _ => {}
            }
        }
        idle = if progress { 0 } else { idle + 1 };
        assert!(idle < STALL_ROUNDS, "messages stalled after {acked} acks");
    }
    acked
}

/// The frames the codec bench encodes and decodes, by label: bulk and small DATA, the two
/// most frequent control frames, a request head and a message head with small bodies, and
/// a realistic edge HELLO.
pub fn sample_frames() -> Vec<(&'static str, Frame)> {
    let address = Address {
        peer_id: 42,
        peer_name: name("billing"),
    };
    let stream = StreamId::from_raw(7);
    let hello = Hello {
        info: ClientInfo {
            role: Role::Edge,
            requested_id: Some(1_234_567),
            name: Name::EMPTY,
            version: name("1.4.2"),
            token: payload(64),
            metadata: Bytes::from_static(
                br#"{"serial":"TX-00012345","model":"gw-mini","fw":"2024.11.3","site":"plant-7"}"#,
            ),
            registrations: [
                (RegistrationKind::Method, "reboot"),
                (RegistrationKind::Method, "get_config"),
                (RegistrationKind::Method, "set_config"),
                (RegistrationKind::Method, "read_sensor"),
                (RegistrationKind::Topic, "firmware/update"),
                (RegistrationKind::Topic, "config/changed"),
                (RegistrationKind::Hook, "edge_id"),
                (RegistrationKind::Hook, "auth"),
            ]
            .into_iter()
            .map(|(kind, n)| Registration {
                kind,
                name: name(n),
            })
            .collect(),
        },
        settings: Settings::DEFAULT,
    };
    vec![
        (
            "data_64k",
            Frame::Data {
                id: stream,
                fin: false,
                payload: payload(64 * 1024),
            },
        ),
        (
            "data_1k",
            Frame::Data {
                id: stream,
                fin: false,
                payload: payload(1024),
            },
        ),
        (
            "window",
            Frame::Window {
                stream: Some(stream),
                increment: 128 * 1024,
            },
        ),
        (
            "ping",
            Frame::Ping {
                ack: false,
                opaque: 0x0123_4567_89ab_cdef,
            },
        ),
        (
            "request_256",
            Frame::Request {
                id: RequestId::from_raw(9),
                more: false,
                head: Some(Box::new(RequestHead {
                    address: address.clone(),
                    method: name("get_invoice"),
                    timeout_ms: 5_000,
                    total_len: 256,
                })),
                body: payload(256),
            },
        ),
        (
            "message_256",
            Frame::Message {
                id: MessageId::from_raw(9),
                more: false,
                head: Some(Box::new(MessageHead {
                    address,
                    topic: name("telemetry/temperature"),
                    ack_wanted: true,
                    timeout_ms: 30_000,
                    total_len: 256,
                })),
                body: payload(256),
            },
        ),
        ("hello", Frame::Hello(Box::new(hello))),
    ]
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use proto_core::codec::{DecodeLimits, decode_frame};

    use super::*;

    const FEEDS: [Feed; 3] = [Feed::Chunks, Feed::Reads(64 * 1024), Feed::Reads(1000)];

    fn assert_quiet(link: &Link) {
        assert!(link.client.error().is_none(), "{:?}", link.client.error());
        assert!(link.server.error().is_none(), "{:?}", link.server.error());
        assert_eq!(
            link.client.stream_ids().count(),
            0,
            "client streams not reaped"
        );
        assert_eq!(
            link.server.stream_ids().count(),
            0,
            "server streams not reaped"
        );
    }

    #[test]
    fn bulk_transfer_moves_every_byte_and_reaps_every_stream() {
        for feed in FEEDS {
            let mut link = Link::connected(Config::default(), feed);
            let data = payload(1 << 20);
            assert_eq!(bulk_transfer(&mut link, 1, &data), 1 << 20);
            assert_quiet(&link);
            // Repeated rounds of many streams run past the initial MAX_STREAMS credit only
            // if closed streams return it.
            for _ in 0..20 {
                assert_eq!(
                    bulk_transfer(&mut link, 64, &data.slice(..64 * 4096)),
                    64 * 4096
                );
            }
            assert_quiet(&link);
            assert!(link.client.stats().bytes_out > 1 << 20);
        }
    }

    #[test]
    fn rpc_and_message_round_trips_complete() {
        for feed in FEEDS {
            let mut link = Link::connected(Config::default(), feed);
            for (in_flight, len) in [(1, 64), (64, 64), (1, 4096), (64, 4096)] {
                let body = payload(len);
                assert_eq!(
                    rpc_round_trips(&mut link, 500, in_flight, &body),
                    500 * len as u64
                );
                assert_eq!(message_round_trips(&mut link, 500, in_flight, &body), 500);
            }
            assert_eq!(link.client.rpc().calls_in_flight(), 0);
            assert_eq!(link.server.rpc().requests_pending(), 0);
            assert_eq!(link.client.messages().awaiting_ack(), 0);
            assert_quiet(&link);
        }
    }

    #[test]
    fn sample_frames_round_trip() {
        for (label, frame) in sample_frames() {
            let mut wire = Vec::new();
            let n = frame.encode(&mut wire).unwrap();
            assert_eq!(n, wire.len(), "{label}");
            let mut buf = BytesMut::from(&wire[..]);
            let back = decode_frame(&mut buf, DecodeLimits::default()).unwrap();
            assert_eq!(back.as_ref(), Some(&frame), "{label}");
            assert!(buf.is_empty(), "{label}");
        }
    }
}
