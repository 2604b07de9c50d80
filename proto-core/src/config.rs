//! Configuration: the limits a connection enforces and the settings it advertises.
//!
//! Every limit has a default that suits a gateway link and a constrained edge alike; the spec
//! lists them in `docs/PROTOCOL.md#limits-and-defaults`. [`Config::validate`] rejects values
//! that could deadlock or that the wire cannot express.

use core::time::Duration;

use thiserror::Error;

use crate::codec::{MAX_HANDSHAKE_PAYLOAD, MAX_MAX_FRAME_SIZE, MAX_WINDOW, MIN_MAX_FRAME_SIZE};

/// The smallest stream or connection window a peer may advertise.
pub const MIN_WINDOW: u32 = 1024;

/// Setting ids on the wire (`docs/PROTOCOL.md#settings`).
pub(crate) mod setting_id {
    pub(crate) const MAX_FRAME_SIZE: u16 = 1;
    pub(crate) const INITIAL_STREAM_WINDOW: u16 = 2;
    pub(crate) const CONNECTION_WINDOW: u16 = 3;
    pub(crate) const MESSAGE_WINDOW: u16 = 4;
    pub(crate) const MAX_MESSAGE_SIZE: u16 = 5;
    pub(crate) const MAX_CONCURRENT_STREAMS: u16 = 6;
    pub(crate) const MAX_INFLIGHT_REQUESTS: u16 = 7;
    pub(crate) const MAX_INFLIGHT_MESSAGES: u16 = 8;
    pub(crate) const IDLE_TIMEOUT_MS: u16 = 9;
    pub(crate) const MAX_OPEN_METADATA: u16 = 10;
    pub(crate) const MAX_REGISTRATIONS: u16 = 11;
}

/// The values one side advertises in HELLO or WELCOME: what it is willing to receive.
///
/// The peer's settings bound what we send; ours bound what we accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Largest frame payload accepted, in bytes.
    pub max_frame_size: u32,
    /// Initial receive window of every stream, in bytes.
    pub initial_stream_window: u32,
    /// Initial receive window for stream data of the whole connection, in bytes.
    pub connection_window: u32,
    /// Receive window shared by request, response and message bodies, in bytes.
    pub message_window: u32,
    /// Largest request, response or message body accepted, in bytes.
    pub max_message_size: u32,
    /// Streams the peer may have open towards us at once.
    pub max_concurrent_streams: u32,
    /// Requests the peer may have in flight towards us at once.
    pub max_inflight_requests: u32,
    /// Acknowledged messages the peer may have awaiting our acknowledgement at once.
    pub max_inflight_messages: u32,
    /// We close the connection after this long without receiving anything (zero: never).
    pub idle_timeout_ms: u32,
    /// Largest metadata accepted on OPEN and ACCEPT, in bytes.
    pub max_open_metadata: u32,
    /// Most method, topic and hook names the peer may have registered at once.
    pub max_registrations: u32,
}

impl Settings {
    /// What a peer that advertises nothing is assumed to accept (also our defaults).
    pub const DEFAULT: Settings = Settings {
        max_frame_size: 64 * 1024,
        initial_stream_window: 256 * 1024,
        connection_window: 16 * 1024 * 1024,
        message_window: 4 * 1024 * 1024,
        max_message_size: 1024 * 1024,
        max_concurrent_streams: 1024,
        max_inflight_requests: 1024,
        max_inflight_messages: 1024,
        idle_timeout_ms: 60_000,
        max_open_metadata: 4 * 1024,
        max_registrations: 4096,
    };

    /// The wire form: `(id, value)` pairs in id order.
    pub(crate) fn to_pairs(self) -> [(u16, u32); 11] {
        use setting_id::*;
        [
            (MAX_FRAME_SIZE, self.max_frame_size),
            (INITIAL_STREAM_WINDOW, self.initial_stream_window),
            (CONNECTION_WINDOW, self.connection_window),
            (MESSAGE_WINDOW, self.message_window),
            (MAX_MESSAGE_SIZE, self.max_message_size),
            (MAX_CONCURRENT_STREAMS, self.max_concurrent_streams),
            (MAX_INFLIGHT_REQUESTS, self.max_inflight_requests),
            (MAX_INFLIGHT_MESSAGES, self.max_inflight_messages),
            (IDLE_TIMEOUT_MS, self.idle_timeout_ms),
            (MAX_OPEN_METADATA, self.max_open_metadata),
            (MAX_REGISTRATIONS, self.max_registrations),
        ]
    }

    /// Applies one wire pair. Unknown ids are ignored so newer peers can add settings.
    pub(crate) fn apply(&mut self, id: u16, value: u32) {
        use setting_id::*;
        match id {
            MAX_FRAME_SIZE => self.max_frame_size = value,
            INITIAL_STREAM_WINDOW => self.initial_stream_window = value,
            CONNECTION_WINDOW => self.connection_window = value,
            MESSAGE_WINDOW => self.message_window = value,
            MAX_MESSAGE_SIZE => self.max_message_size = value,
            MAX_CONCURRENT_STREAMS => self.max_concurrent_streams = value,
            MAX_INFLIGHT_REQUESTS => self.max_inflight_requests = value,
            MAX_INFLIGHT_MESSAGES => self.max_inflight_messages = value,
            IDLE_TIMEOUT_MS => self.idle_timeout_ms = value,
            MAX_OPEN_METADATA => self.max_open_metadata = value,
            MAX_REGISTRATIONS => self.max_registrations = value,
            _ => {}
        }
    }

    /// Checks values a peer advertised; a violation makes the handshake fail.
    pub(crate) fn check_peer(&self) -> Result<(), SettingsError> {
        if !(MIN_MAX_FRAME_SIZE..=MAX_MAX_FRAME_SIZE).contains(&self.max_frame_size) {
            return Err(SettingsError::FrameSize(self.max_frame_size));
        }
        for (name, value) in [
            ("initial_stream_window", self.initial_stream_window),
            ("connection_window", self.connection_window),
            ("message_window", self.message_window),
        ] {
            if u64::from(value) > MAX_WINDOW {
                return Err(SettingsError::Window { name, value });
            }
        }
        if u64::from(self.message_window) < crate::exchange::HEAD_CREDIT {
            return Err(SettingsError::MessageWindow(self.message_window));
        }
        // Below this a receiver's grants are indistinguishable from a credit dribble.
        for (name, value) in [
            ("initial_stream_window", self.initial_stream_window),
            ("connection_window", self.connection_window),
        ] {
            if value < MIN_WINDOW {
                return Err(SettingsError::WindowTooSmall { name, value });
            }
        }
        Ok(())
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings::DEFAULT
    }
}

/// A setting outside the range the protocol allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum SettingsError {
    /// `max_frame_size` outside 16 KiB ..= 16 MiB − 1.
    #[error("max_frame_size {0} is outside 16384..=16777215")]
    FrameSize(u32),
    /// A message window too small for even an empty request or message.
    #[error("message_window {0} is below the 256 bytes every request or message head costs")]
    MessageWindow(u32),
    /// A stream or connection window below 1024 bytes.
    #[error("{name} {value} is below the minimum window of 1024")]
    WindowTooSmall {
        /// Which window.
        name: &'static str,
        /// The value given.
        value: u32,
    },
    /// A window larger than 2^31 − 1.
    #[error("{name} {value} exceeds the maximum window 2^31-1")]
    Window {
        /// Which window.
        name: &'static str,
        /// The value given.
        value: u32,
    },
}

/// Budgets for frames that are cheap for a peer to send and cost us work or memory.
///
/// Each counter refills every [`Budgets::window`]; spending more than its limit inside one
/// window closes the connection with GOAWAY(`ENHANCE_YOUR_CALM`). Rates rather than lifetime
/// counts, so long-lived legitimate peers are never cut off (`docs/PROTOCOL.md#budgets`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budgets {
    /// Length of one budget window.
    pub window: Duration,
    /// PING frames (not acks) the peer may send per window.
    pub pings: u32,
    /// Streams the peer may reset before we accepted them, plus requests and messages it may
    /// cancel before we took them, per window (rapid reset).
    pub peer_resets: u32,
    /// Streams we may refuse per window because the peer opened more than
    /// `max_pending_accept` without waiting for us.
    pub local_resets: u32,
    /// Frames that carry nothing (DATA without bytes or FIN) per window.
    pub empty_frames: u32,
    /// Frames that change nothing: window updates for closed streams or of under 1 KiB, data
    /// and replies for streams, requests or messages already gone, per window.
    pub wasted_frames: u32,
    /// REGISTER frames per window.
    pub registrations: u32,
}

impl Default for Budgets {
    fn default() -> Self {
        Budgets {
            window: Duration::from_secs(10),
            pings: 50,
            peer_resets: 100,
            local_resets: 100,
            empty_frames: 100,
            wasted_frames: 10_000,
            registrations: 100,
        }
    }
}

/// Everything a [`Connection`](crate::Connection) needs to know before it starts.
///
/// Build it with struct-update syntax from the default and call [`Config::validate`]:
///
/// ```
/// use proto_core::Config;
/// let config = Config { max_pending_accept: 16, ..Config::default() };
/// config.validate().unwrap();
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// What we advertise and enforce on input.
    pub settings: Settings,
    /// Largest a stream's receive window may grow to by auto-tuning (growth summed over all
    /// streams is also capped at half the connection window, so one stalled reader cannot
    /// take all of it). Equal to
    /// `settings.initial_stream_window` disables auto-tuning. Default 4 MiB.
    pub max_stream_window: u32,
    /// Peer-opened streams that may wait for `accept`; more are refused with `REFUSED`.
    /// Default 128.
    pub max_pending_accept: u32,
    /// Largest HELLO or WELCOME payload accepted (at most 64 KiB). Default 64 KiB.
    pub max_handshake_size: u32,
    /// Largest handshake metadata accepted. Default 16 KiB.
    pub max_metadata_size: u32,
    /// Largest auth token accepted. Default 4 KiB.
    pub max_token_size: u32,
    /// Server: the preface, HELLO and the application's accept/reject decision must all
    /// happen within this time from the connection's start. Default 10 s.
    pub handshake_timeout: Duration,
    /// Client: how long to wait for WELCOME or REFUSE after connecting. Longer than the
    /// server's `handshake_timeout`, so a server that refuses a late handshake can still
    /// tell the client why. Default 15 s.
    pub welcome_timeout: Duration,
    /// Send a PING after this long without receiving anything; zero disables keepalive.
    /// Default 15 s.
    pub keepalive_interval: Duration,
    /// Close when nothing arrives this long after a keepalive PING. Default 10 s.
    pub keepalive_timeout: Duration,
    /// Graceful shutdown closes the connection at this deadline even if work remains.
    /// Default 30 s.
    pub drain_timeout: Duration,

    /// After a fatal error, give the driver this long to flush the final GOAWAY. Default 1 s.
    pub close_linger: Duration,
    /// Most bytes a stream buffers for sending (in addition to the peer's window limiting
    /// it). Default 1 MiB.
    pub stream_send_buffer: u32,
    /// Most request, response and message body bytes queued for sending before `call` and
    /// `publish` report `Blocked`. Default 4 MiB.
    pub exchange_send_buffer: u32,
    /// Most bytes of unparsed input buffered; must exceed `settings.max_frame_size` plus the
    /// 13-byte header. Default 128 KiB.
    pub max_input_buffer: u32,
    /// When this many bytes of control frames are waiting to be sent, the core stops taking
    /// input until the driver writes them (the peer is not reading). Default 64 KiB.
    pub max_pending_control: u32,
    /// When this many events are waiting for `poll_event`, the core stops taking input.
    /// Default 4096.
    pub max_pending_events: u32,
    /// Rate budgets for cheap-for-the-peer frames.
    pub budgets: Budgets,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            settings: Settings::DEFAULT,
            max_stream_window: 4 * 1024 * 1024,
            max_pending_accept: 128,
            max_handshake_size: MAX_HANDSHAKE_PAYLOAD,
            max_metadata_size: 16 * 1024,
            max_token_size: 4 * 1024,
            handshake_timeout: Duration::from_secs(10),
            welcome_timeout: Duration::from_secs(15),
            keepalive_interval: Duration::from_secs(15),
            keepalive_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(30),

            close_linger: Duration::from_secs(1),
            stream_send_buffer: 1024 * 1024,
            exchange_send_buffer: 4 * 1024 * 1024,
            max_input_buffer: 128 * 1024,
            max_pending_control: 64 * 1024,
            max_pending_events: 4096,
            budgets: Budgets::default(),
        }
    }
}

/// A [`Config`] that cannot work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum ConfigError {
    /// An advertised setting outside the protocol's range.
    #[error("invalid setting: {0}")]
    Setting(#[from] SettingsError),
    /// The client's HELLO would exceed the 64 KiB any server must accept (a token,
    /// metadata or registration list that is too large).
    #[error("the HELLO would be {len} bytes; the limit is {max}")]
    HelloTooLarge {
        /// Encoded payload length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A bound that must be larger than another one is not.
    #[error("{what} must be at least {min}, got {value}")]
    TooSmall {
        /// Which field.
        what: &'static str,
        /// The smallest workable value.
        min: u64,
        /// The value given.
        value: u64,
    },
    /// A value larger than the protocol can express.
    #[error("{what} must be at most {max}, got {value}")]
    TooLarge {
        /// Which field.
        what: &'static str,
        /// The largest allowed value.
        max: u64,
        /// The value given.
        value: u64,
    },
}

impl Config {
    /// Checks that the configuration is usable: settings in range, windows large enough for
    /// the largest message, an input buffer that fits one whole frame, and so on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let s = &self.settings;
        s.check_peer()?;
        let at_least = |what, min: u64, value: u64| {
            if value < min {
                Err(ConfigError::TooSmall { what, min, value })
            } else {
                Ok(())
            }
        };
        let at_most = |what, max: u64, value: u64| {
            if value > max {
                Err(ConfigError::TooLarge { what, max, value })
            } else {
                Ok(())
            }
        };
        // A message larger than the window could never be delivered: the sender reserves
        // credit for a whole message (plus its head) before sending it.
        at_least(
            "settings.message_window",
            u64::from(s.max_message_size).saturating_add(crate::exchange::HEAD_CREDIT),
            u64::from(s.message_window),
        )?;
        at_least(
            "max_stream_window",
            u64::from(s.initial_stream_window),
            u64::from(self.max_stream_window),
        )?;
        at_most(
            "max_stream_window",
            MAX_WINDOW,
            u64::from(self.max_stream_window),
        )?;
        at_least(
            "max_input_buffer",
            u64::from(s.max_frame_size).saturating_add(crate::codec::HEADER_LEN as u64),
            u64::from(self.max_input_buffer),
        )?;
        at_least(
            "max_input_buffer",
            u64::from(self.max_handshake_size).saturating_add(crate::codec::HEADER_LEN as u64),
            u64::from(self.max_input_buffer),
        )?;
        at_most(
            "max_handshake_size",
            u64::from(MAX_HANDSHAKE_PAYLOAD),
            u64::from(self.max_handshake_size),
        )?;
        at_least(
            "max_handshake_size",
            1024,
            u64::from(self.max_handshake_size),
        )?;
        at_least(
            "max_pending_control",
            1024,
            u64::from(self.max_pending_control),
        )?;
        at_least("max_pending_events", 16, u64::from(self.max_pending_events))?;
        at_least("stream_send_buffer", 1, u64::from(self.stream_send_buffer))?;
        at_least(
            "exchange_send_buffer",
            1,
            u64::from(self.exchange_send_buffer),
        )?;
        at_least(
            "budgets.window",
            1,
            crate::time::duration_to_micros(self.budgets.window),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn settings_round_trip_through_pairs() {
        let mut s = Settings::DEFAULT;
        s.max_frame_size = 20_000;
        s.idle_timeout_ms = 5;
        let mut back = Settings::DEFAULT;
        for (id, v) in s.to_pairs() {
            back.apply(id, v);
        }
        assert_eq!(back, s);
        back.apply(999, 1); // unknown ids are ignored
        assert_eq!(back, s);
    }

    #[test]
    fn message_window_must_hold_the_largest_message() {
        let mut c = Config::default();
        c.settings.message_window = c.settings.max_message_size - 1;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::TooSmall {
                what: "settings.message_window",
                ..
            })
        ));
    }

    #[test]
    fn input_buffer_must_hold_a_whole_frame() {
        let mut c = Config::default();
        c.settings.max_frame_size = 1 << 20;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::TooSmall {
                what: "max_input_buffer",
                ..
            })
        ));
        c.max_input_buffer = (1 << 20) + 13;
        c.validate().unwrap();
    }

    #[test]
    fn peer_settings_are_range_checked() {
        let mut s = Settings::DEFAULT;
        s.max_frame_size = 100;
        assert_eq!(s.check_peer(), Err(SettingsError::FrameSize(100)));
        s.max_frame_size = 16384;
        s.connection_window = u32::MAX;
        assert!(matches!(s.check_peer(), Err(SettingsError::Window { .. })));
    }
}
