//! The connection state machine.
//!
//! See the crate documentation for the run-loop contract. Methods come in four kinds
//! (after quinn-proto): getters (`&self`); `handle_*` for input from the transport and the
//! clock; commands, directly or through short-lived views ([`Connection::stream`],
//! [`Connection::rpc`], [`Connection::messages`]); and `poll_*` for output.

/// A [`Context`] borrowing the connection's fields one by one, so the subsystems
/// (`streams`, `exchanges`) stay borrowable beside it.
macro_rules! context {
    ($conn:ident, $now:expr) => {
        crate::context::Context {
            now: $now,
            fx: &mut $conn.fx,
            budgets: &mut $conn.budgets,
            config: &$conn.config,
            peer: &$conn.peer_settings,
        }
    };
}

mod handshake;
mod input;
mod lifecycle;
mod output;
mod registry;

use alloc::boxed::Box;
use alloc::collections::BTreeSet;
use alloc::string::String;
use alloc::vec::Vec;
use core::time::Duration;

use bytes::Bytes;

pub use lifecycle::TimerKind;

use crate::budget::BudgetState;
use crate::code::ErrorCode;
use crate::codec::{
    Address, ClientInfo, ClientPreface, Frame, Framer, GoAway, Hello, Registration, VERSION_1,
};
use crate::config::{Config, ConfigError, Settings};
use crate::effects::Effects;
use crate::error::{ConnectionError, OpenError, SendError, StreamError};
use crate::event::Event;
use crate::exchange::Exchanges;
use crate::exchange::messages::Messages;
use crate::exchange::rpc::Rpc;
use crate::ids::{Side, StreamId};
use crate::streams::{IncomingStream, Stream, StreamsState};
use crate::time::Timestamp;

/// Protocol versions this implementation speaks, most preferred first.
pub const SUPPORTED_VERSIONS: [u16; 1] = [VERSION_1];

/// Where the connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Client: preface and HELLO sent, waiting for the server's preface.
    AwaitServerPreface,
    /// Client: waiting for WELCOME or REFUSE.
    AwaitWelcome,
    /// Server: waiting for the client's preface.
    AwaitClientPreface,
    /// Server: waiting for HELLO.
    AwaitHello,
    /// Server: HELLO received, the application is deciding.
    Deciding,
    /// Handshake complete.
    Open,
    /// Ended; only the final frames may still go out.
    Closed,
}

/// An outstanding PING of ours.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Probe {
    opaque: u64,
    sent_at: Timestamp,
    /// The application asked for it (report the RTT).
    user: bool,
}

/// Counters for metrics and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Bytes taken by `handle_input`.
    pub bytes_in: u64,
    /// Bytes produced by `poll_transmit`.
    pub bytes_out: u64,
    /// Frames decoded.
    pub frames_in: u64,
    /// Frames encoded.
    pub frames_out: u64,
}

/// What the server sends when it accepts a handshake.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HandshakeAccept {
    /// The id assigned to the client (the edge id, or a service id).
    pub assigned_id: u64,
    /// Opaque server metadata for the client (e.g. the gateway's name).
    pub metadata: Bytes,
}

/// Options for opening a stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpenStream {
    /// Target: an edge id on a service link, a service name on an edge link.
    pub address: Address,
    /// Opaque open metadata (e.g. which exposed service).
    pub metadata: Bytes,
}

/// One Tether connection, client or server side, as a pure state machine.
#[derive(Debug)]
pub struct Connection {
    side: Side,
    pub(crate) config: Config,
    pub(crate) peer_settings: Settings,
    phase: Phase,
    /// An incomplete frame received so far.
    framer: Framer,
    /// An incomplete preface received so far (at most a few dozen bytes).
    preface: Vec<u8>,
    /// Bytes to send before any frame: prefaces, or the HTTP rejection.
    raw_out: Vec<u8>,
    created_at: Timestamp,
    /// Server: the client's HELLO.
    peer_hello: Option<Box<Hello>>,
    assigned_id: u64,
    version: u16,
    pub(crate) streams: StreamsState,
    pub(crate) exchanges: Exchanges,
    pub(crate) fx: Effects,
    budgets: BudgetState,
    local_registrations: BTreeSet<Registration>,
    peer_registrations: BTreeSet<Registration>,
    last_received: Timestamp,
    probe: Option<Probe>,
    next_ping: u64,
    /// The one reply slot for the peer's pings: a newer ping replaces an unsent reply.
    pending_pong: Option<u64>,
    rtt: Option<Duration>,
    /// Alternates the transmit turn between message fragments and stream data.
    exchange_turn: bool,
    goaway_sent: Option<ErrorCode>,
    goaway_received: Option<GoAway>,
    drain_deadline: Option<Timestamp>,
    error: Option<ConnectionError>,
    linger_deadline: Option<Timestamp>,
    finished: bool,
    stats: Stats,
}

impl Connection {
    fn new(side: Side, config: Config, now: Timestamp, phase: Phase) -> Result<Self, ConfigError> {
        config.validate()?;
        let budgets = BudgetState::new(config.budgets);
        Ok(Connection {
            side,
            peer_settings: Settings::DEFAULT,
            phase,
            framer: Framer::default(),
            preface: Vec::new(),
            raw_out: Vec::new(),
            created_at: now,
            peer_hello: None,
            assigned_id: 0,
            version: 0,
            streams: StreamsState::new(side, &config),
            exchanges: Exchanges::new(&config),
            fx: Effects::default(),
            budgets,
            local_registrations: BTreeSet::new(),
            peer_registrations: BTreeSet::new(),
            last_received: now,
            probe: None,
            next_ping: 1,
            pending_pong: None,
            rtt: None,
            exchange_turn: false,
            goaway_sent: None,
            goaway_received: None,
            drain_deadline: None,
            error: None,
            linger_deadline: None,
            finished: false,
            stats: Stats::default(),
            config,
        })
    }

    /// A client connection that introduces itself with `info`. The preface and HELLO are
    /// queued at once; call [`poll_transmit`](Self::poll_transmit).
    pub fn client(config: Config, info: ClientInfo, now: Timestamp) -> Result<Self, ConfigError> {
        let mut conn = Connection::new(Side::Client, config, now, Phase::AwaitServerPreface)?;
        ClientPreface {
            versions: SUPPORTED_VERSIONS.to_vec(),
        }
        .encode(&mut conn.raw_out);
        conn.local_registrations = info.registrations.iter().cloned().collect();
        let hello = Frame::Hello(Box::new(Hello {
            info,
            settings: conn.config.settings,
        }));
        let len = hello.payload_len();
        let max = crate::codec::MAX_HANDSHAKE_PAYLOAD as usize;
        if len > max {
            return Err(ConfigError::HelloTooLarge { len, max });
        }
        conn.fx.push_frame(hello);
        Ok(conn)
    }

    /// A server connection waiting for a client's preface.
    pub fn server(config: Config, now: Timestamp) -> Result<Self, ConfigError> {
        Connection::new(Side::Server, config, now, Phase::AwaitClientPreface)
    }

    // ---- getters ---------------------------------------------------------------------

    /// Client or server.
    pub fn side(&self) -> Side {
        self.side
    }

    /// True once the handshake completed and until the connection closes.
    pub fn is_connected(&self) -> bool {
        self.phase == Phase::Open
    }

    /// True once the connection ended (the `ConnectionLost` event is queued or delivered).
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// True when the driver should close the transport: the connection ended and its last
    /// bytes were handed out (or the linger time passed).
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Why the connection ended, once it has.
    pub fn error(&self) -> Option<&ConnectionError> {
        self.error.as_ref()
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// What the peer advertised (defaults until the handshake completes).
    pub fn peer_settings(&self) -> &Settings {
        &self.peer_settings
    }

    /// Server: the client's HELLO, once received.
    pub fn peer_hello(&self) -> Option<&Hello> {
        self.peer_hello.as_deref()
    }

    /// The id assigned to the client in WELCOME (on both sides, once connected).
    pub fn assigned_id(&self) -> u64 {
        self.assigned_id
    }

    /// The negotiated protocol version (0 before the prefaces were exchanged).
    pub fn version(&self) -> u16 {
        self.version
    }

    /// The latest round-trip time measured with PING, if any.
    pub fn rtt(&self) -> Option<Duration> {
        self.rtt
    }

    /// Traffic counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Names the peer has registered.
    pub fn peer_registrations(&self) -> impl Iterator<Item = &Registration> + '_ {
        self.peer_registrations.iter()
    }

    /// Names we have registered.
    pub fn local_registrations(&self) -> impl Iterator<Item = &Registration> + '_ {
        self.local_registrations.iter()
    }

    /// True when the peer sent GOAWAY or we did: no new work may start.
    pub fn is_going_away(&self) -> bool {
        self.goaway_sent.is_some() || self.goaway_received.is_some()
    }

    /// How many bytes [`handle_input`](Self::handle_input) would take now. Zero means stop
    /// reading the transport: the input buffer is full, or the peer's frames produced more
    /// output and events than the driver has drained (it is not reading, or we are not
    /// keeping up). Drain `poll_transmit` and `poll_event`, then read again.
    pub fn input_capacity(&self) -> usize {
        if self.phase == Phase::Closed {
            return 0;
        }
        if self.backlogged() {
            return 0;
        }
        (self.config.max_input_buffer as usize).saturating_sub(self.buffered_input())
    }

    /// True while replies or events wait beyond their thresholds: take no more input.
    pub(crate) fn backlogged(&self) -> bool {
        self.fx.pending_events() >= self.config.max_pending_events as usize
            || self.fx.control_bytes() >= self.config.max_pending_control as usize
    }

    /// Bytes of input received but not yet parsed (an incomplete frame or preface).
    pub fn buffered_input(&self) -> usize {
        self.framer.buffered().saturating_add(self.preface.len())
    }

    // ---- helpers shared by the views -------------------------------------------------

    /// Whether new requests and messages may be queued.
    pub(crate) fn check_can_send(&self) -> Result<(), SendError> {
        match self.phase {
            Phase::Open if self.is_going_away() => Err(SendError::GoingAway),
            Phase::Open => Ok(()),
            Phase::Closed => Err(SendError::Closed),
            _ => Err(SendError::NotConnected),
        }
    }

    // ---- streams ---------------------------------------------------------------------

    /// Opens a stream. The peer sees it at once; bytes may be written immediately, within
    /// the peer's initial window, before the peer accepts.
    pub fn open_stream(&mut self, open: OpenStream) -> Result<StreamId, OpenError> {
        match self.phase {
            Phase::Open if self.is_going_away() => return Err(OpenError::GoingAway),
            Phase::Open => {}
            Phase::Closed => return Err(OpenError::Closed),
            _ => return Err(OpenError::NotConnected),
        }
        self.streams.open(
            open.address,
            open.metadata,
            &self.peer_settings,
            &self.config,
            &mut self.fx,
        )
    }

    /// Takes the next stream the peer opened, or `None` (then an `IncomingStreams` event
    /// announces the next one). Streams the peer reset before they were taken are skipped.
    pub fn next_incoming_stream(&mut self) -> Option<IncomingStream> {
        self.streams.next_incoming()
    }

    /// Accepts a peer stream with optional metadata for the opener.
    pub fn accept_stream(&mut self, id: StreamId, metadata: Bytes) -> Result<(), StreamError> {
        if self.phase == Phase::Closed {
            return Err(StreamError::Closed);
        }
        self.streams
            .accept(id, metadata, &self.peer_settings, &mut self.fx)
    }

    /// Refuses a peer stream with a code the opener sees (`NOT_FOUND` for an unknown exposed
    /// service, `REFUSED`, `UNAUTHORIZED`, ...).
    pub fn refuse_stream(
        &mut self,
        id: StreamId,
        code: ErrorCode,
        reason: &str,
    ) -> Result<(), StreamError> {
        if self.phase == Phase::Closed {
            return Err(StreamError::Closed);
        }
        self.streams
            .refuse(id, code, String::from(reason), &mut self.fx)
    }

    /// A handle for reading, writing and closing one stream.
    ///
    /// After the connection ended, streams with received bytes or an unread FIN can still
    /// be read to their end; every other command fails with `Closed`.
    pub fn stream(&mut self, id: StreamId) -> Result<Stream<'_>, StreamError> {
        if !self.streams.map.contains_key(&id) {
            return Err(if self.phase == Phase::Closed {
                StreamError::Closed
            } else {
                StreamError::Unknown(id)
            });
        }
        Ok(Stream { conn: self, id })
    }

    /// Ids of the streams currently open, in id order.
    pub fn stream_ids(&self) -> impl Iterator<Item = StreamId> + '_ {
        self.streams.map.keys().copied()
    }

    // ---- RPC and messages ------------------------------------------------------------

    /// RPC commands: call, cancel, take requests, respond.
    pub fn rpc(&mut self) -> Rpc<'_> {
        Rpc { conn: self }
    }

    /// Message commands: publish, cancel, take messages, acknowledge.
    pub fn messages(&mut self) -> Messages<'_> {
        Messages { conn: self }
    }

    // ---- output ----------------------------------------------------------------------

    /// The next event, if any. Poll until `None` after every `handle_*` call and command.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.fx.pop_event()
    }
}
