//! The handshake: prefaces and version negotiation, HELLO, and the server's deferred
//! decision (WELCOME or REFUSE).
//!
//! Spec: `docs/PROTOCOL.md#handshake`.
//!
//! ```text
//!  client                                       server
//!  ──────                                       ──────
//!  AwaitServerPreface ── preface + HELLO ──▶    AwaitClientPreface
//!                     ◀── preface ──────────    AwaitHello
//!  AwaitWelcome                                 Deciding  (Event::HandshakeRequest)
//!                     ◀── WELCOME or REFUSE ─   accept_handshake / reject_handshake
//!  Open / Closed                                Open / Closed
//! ```

use alloc::string::String;

use super::{Connection, HandshakeAccept, Phase, SUPPORTED_VERSIONS};
use crate::code::ErrorCode;
use crate::codec::HTTP_REJECTION;
use crate::codec::{ClientPreface, Frame, Hello, PrefaceError, ServerPreface, Welcome};
use crate::error::{ApiMisuse, ConnectionError, Incompatible, ProtocolViolation};
use crate::event::{Connected, Event};
use crate::time::Timestamp;

impl Connection {
    /// Server: reads the client preface from the bytes collected so far. Returns how many
    /// it took once complete; `None` while incomplete or after a failure.
    pub(super) fn on_client_preface_bytes(&mut self, now: Timestamp) -> Option<usize> {
        match ClientPreface::decode(&self.preface) {
            Ok(None) => None,
            Ok(Some((preface, used))) => {
                let selected = preface
                    .versions
                    .iter()
                    .copied()
                    .find(|v| SUPPORTED_VERSIONS.contains(v))
                    .unwrap_or(0);
                ServerPreface {
                    selected,
                    supported: SUPPORTED_VERSIONS.to_vec(),
                }
                .encode(&mut self.raw_out);
                if selected == 0 {
                    let error = Incompatible::NoCommonVersion {
                        ours: SUPPORTED_VERSIONS.to_vec(),
                        theirs: preface.versions,
                    };
                    self.terminate(now, ConnectionError::Incompatible(error), true);
                    return None;
                }
                self.version = selected;
                self.phase = Phase::AwaitHello;
                Some(used)
            }
            Err(e) => {
                if let PrefaceError::NotTether {
                    looks_like_http: true,
                } = e
                {
                    self.raw_out.extend_from_slice(HTTP_REJECTION);
                }
                self.terminate(now, ConnectionError::Incompatible(preface_error(e)), true);
                None
            }
        }
    }

    /// Client: reads the server preface from the bytes collected so far. Returns how many
    /// it took once complete; `None` while incomplete or after a failure.
    pub(super) fn on_server_preface_bytes(&mut self, now: Timestamp) -> Option<usize> {
        match ServerPreface::decode(&self.preface) {
            Ok(None) => None,
            Ok(Some((preface, used))) => {
                if !SUPPORTED_VERSIONS.contains(&preface.selected) {
                    let error = Incompatible::NoCommonVersion {
                        ours: SUPPORTED_VERSIONS.to_vec(),
                        theirs: preface.supported,
                    };
                    self.terminate(now, ConnectionError::Incompatible(error), false);
                    return None;
                }
                self.version = preface.selected;
                self.phase = Phase::AwaitWelcome;
                Some(used)
            }
            Err(e) => {
                self.terminate(now, ConnectionError::Incompatible(preface_error(e)), false);
                None
            }
        }
    }

    /// Server: the only frame allowed now is HELLO.
    pub(super) fn on_hello_frame(
        &mut self,
        now: Timestamp,
        frame: Frame,
    ) -> Result<(), ProtocolViolation> {
        let hello = match frame {
            Frame::Hello(hello) => hello,
            // A client may give up before its HELLO is complete.
            Frame::GoAway(goaway) => {
                let error = ConnectionError::PeerClosed {
                    code: goaway.code,
                    reason: goaway.reason,
                };
                self.terminate(now, error, false);
                return Ok(());
            }
            other => {
                return Err(ProtocolViolation::UnexpectedFrame {
                    ty: other.frame_type(),
                    during: "before HELLO",
                });
            }
        };
        if let Some((code, reason)) = self.hello_problem(&hello) {
            self.refuse(now, code, reason);
            return Ok(());
        }
        self.peer_settings = hello.settings;
        self.phase = Phase::Deciding;
        self.fx.emit(Event::HandshakeRequest(hello.clone()));
        self.peer_hello = Some(hello);
        Ok(())
    }

    /// Limits checked before the application sees a HELLO; a violation is refused with a
    /// reason the client can show.
    fn hello_problem(&self, hello: &Hello) -> Option<(ErrorCode, String)> {
        if let Err(e) = hello.settings.check_peer() {
            return Some((
                ErrorCode::INCOMPATIBLE,
                alloc::format!("invalid settings: {e}"),
            ));
        }
        let info = &hello.info;
        let checks = [
            (
                "metadata",
                info.metadata.len(),
                self.config.max_metadata_size,
            ),
            ("token", info.token.len(), self.config.max_token_size),
        ];
        for (what, len, max) in checks {
            if len > max as usize {
                return Some((
                    ErrorCode::TOO_LARGE,
                    alloc::format!("{what} of {len} bytes exceeds the limit of {max}"),
                ));
            }
        }
        let max = self.config.settings.max_registrations as usize;
        if info.registrations.len() > max {
            return Some((
                ErrorCode::LIMIT_EXCEEDED,
                alloc::format!(
                    "{} registrations exceed the limit of {max}",
                    info.registrations.len()
                ),
            ));
        }
        None
    }

    /// Client: WELCOME, REFUSE or GOAWAY may arrive now.
    pub(super) fn on_welcome_frame(
        &mut self,
        now: Timestamp,
        frame: Frame,
    ) -> Result<(), ProtocolViolation> {
        match frame {
            Frame::Welcome(welcome) => {
                welcome
                    .settings
                    .check_peer()
                    .map_err(ProtocolViolation::Settings)?;
                self.peer_settings = welcome.settings;
                self.assigned_id = welcome.assigned_id;
                self.on_open(now);
                Ok(())
            }
            Frame::Refuse { code, reason } => {
                self.terminate(now, ConnectionError::Refused { code, reason }, false);
                Ok(())
            }
            Frame::GoAway(goaway) => {
                let error = ConnectionError::PeerClosed {
                    code: goaway.code,
                    reason: goaway.reason,
                };
                self.terminate(now, error, false);
                Ok(())
            }
            other => Err(ProtocolViolation::UnexpectedFrame {
                ty: other.frame_type(),
                during: "before WELCOME",
            }),
        }
    }

    /// Both sides: the handshake completed.
    fn on_open(&mut self, now: Timestamp) {
        self.phase = Phase::Open;
        self.last_received = now;
        self.streams.on_peer_settings(&self.peer_settings);
        self.exchanges.on_peer_settings(&self.peer_settings);
        if let Some(hello) = &self.peer_hello {
            self.peer_registrations = hello.info.registrations.iter().cloned().collect();
        }
        self.fx.emit(Event::Connected(Connected {
            assigned_id: self.assigned_id,
            version: self.version,
        }));
        // Measure the round trip at once: window auto-tuning needs it.
        self.send_probe(now, false);
    }

    /// Server: accepts the pending handshake, assigning the client its id.
    pub fn accept_handshake(
        &mut self,
        now: Timestamp,
        accept: HandshakeAccept,
    ) -> Result<(), ApiMisuse> {
        self.check_deciding()?;
        let welcome = Frame::Welcome(Welcome {
            assigned_id: accept.assigned_id,
            settings: self.config.settings,
            metadata: accept.metadata,
        });
        let len = welcome.payload_len();
        let max = crate::codec::MAX_HANDSHAKE_PAYLOAD as usize;
        if len > max {
            return Err(ApiMisuse::HandshakeTooLarge { len, max });
        }
        self.assigned_id = accept.assigned_id;
        self.fx.push_frame(welcome);
        self.on_open(now);
        self.after_activity(now);
        Ok(())
    }

    /// Server: rejects the pending handshake. The client sees `code` and `reason`
    /// (e.g. `UNAUTHORIZED`, "unknown device"); the connection then closes.
    pub fn reject_handshake(
        &mut self,
        now: Timestamp,
        code: ErrorCode,
        reason: &str,
    ) -> Result<(), ApiMisuse> {
        self.check_deciding()?;
        self.refuse(now, code, String::from(reason));
        Ok(())
    }

    fn check_deciding(&self) -> Result<(), ApiMisuse> {
        if self.side.is_client() {
            return Err(ApiMisuse::NotServer);
        }
        if self.phase != Phase::Deciding {
            return Err(ApiMisuse::NoHandshakePending);
        }
        Ok(())
    }

    /// Sends REFUSE and closes.
    pub(super) fn refuse(&mut self, now: Timestamp, code: ErrorCode, reason: String) {
        self.fx.push_frame(Frame::Refuse {
            code,
            reason: reason.clone(),
        });
        self.terminate(now, ConnectionError::LocallyClosed { code, reason }, true);
    }
}

fn preface_error(e: PrefaceError) -> Incompatible {
    match e {
        PrefaceError::NotTether { looks_like_http } => Incompatible::NotTether { looks_like_http },
        other => Incompatible::BadPreface(other),
    }
}
