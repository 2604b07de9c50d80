//! The application's view of RPC: call, cancel, take requests, respond.

use alloc::boxed::Box;
use core::time::Duration;

use bytes::Bytes;

use super::outbox::{OutHead, OutKind, Outgoing};
use super::{DeadlineKey, Exchanges};
use crate::code::ErrorCode;
use crate::codec::{Address, RequestHead, ResponseHead};
use crate::conn::Connection;
use crate::error::{ReplyError, SendError};
use crate::ids::RequestId;
use crate::name::Name;
use crate::time::{Timestamp, duration_to_wire_millis};

/// A call to make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    /// Target: an edge id on a service link, optionally a service name on an edge link.
    pub address: Address,
    /// The method.
    pub method: Name,
    /// The request body.
    pub body: Bytes,
    /// How long to wait for the response. It travels as a relative timeout, so the callee
    /// and every hop give up at the same time without sharing a clock.
    pub timeout: Option<Duration>,
}

impl Call {
    /// A call of `method` with `body`, no address and no timeout.
    pub fn new(method: Name, body: Bytes) -> Self {
        Call {
            address: Address::default(),
            method,
            body,
            timeout: None,
        }
    }
}

/// A request taken from the peer. Answer it with [`Rpc::respond`]; until then it counts
/// against the peer's in-flight limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IncomingRequest {
    /// Its id, for the response.
    pub id: RequestId,
    /// The method.
    pub method: Name,
    /// Source (gateway → client) or target (client → gateway).
    pub address: Address,
    /// The body.
    pub body: Bytes,
    /// When the caller stops waiting (from its relative timeout), if it set one. Forwarding
    /// hops pass on the time remaining until then.
    pub deadline: Option<Timestamp>,
}

/// RPC commands, from [`Connection::rpc`](crate::Connection::rpc).
#[derive(Debug)]
pub struct Rpc<'a> {
    pub(crate) conn: &'a mut Connection,
}

impl Rpc<'_> {
    /// Queues a call. The response arrives as `RpcEvent::Response`, or the call fails with
    /// `RpcEvent::Failed` (timeout, going away) or `ConnectionLost`.
    pub fn call(&mut self, now: Timestamp, call: Call) -> Result<RequestId, SendError> {
        let conn = &mut *self.conn;
        conn.check_can_send()?;
        let deadline = Exchanges::deadline(now, call.timeout);
        let ex = &mut conn.exchanges;
        let id = ex.admit(
            OutKind::Request,
            call.body.len(),
            Some(deadline),
            &conn.peer_settings,
            &conn.config,
        )?;
        let total_len = u32::try_from(call.body.len()).unwrap_or(u32::MAX);
        ex.outbox.push(Outgoing {
            kind: OutKind::Request,
            id,
            head: Some(OutHead::Request(Box::new(RequestHead {
                address: call.address,
                method: call.method,
                timeout_ms: call.timeout.map_or(0, duration_to_wire_millis),
                total_len,
            }))),
            body: call.body,
            limited: true,
        });
        Ok(RequestId::from_raw(id))
    }

    /// Gives up on a call: no event follows for it, and the peer is told to stop if any of
    /// the request went out. Returns false if the call was not in flight.
    pub fn cancel(&mut self, id: RequestId) -> bool {
        let conn = &mut *self.conn;
        let ex = &mut conn.exchanges;
        if !ex.forget_call(id.raw(), &mut conn.fx) {
            return false;
        }
        ex.abandon(OutKind::Request, id.raw(), &mut conn.fx);
        true
    }

    /// Takes the next request that arrived, or `None` (then an `IncomingRequests` event
    /// announces the next one). Taking it returns its message credit to the peer.
    pub fn next_request(&mut self) -> Option<IncomingRequest> {
        let conn = &mut *self.conn;
        let ex = &mut conn.exchanges;
        let taken = ex.requests.take_next()?;
        ex.release(taken.release, &mut conn.fx);
        let head = *taken.head;
        Some(IncomingRequest {
            id: RequestId::from_raw(taken.id),
            method: head.method,
            address: head.address,
            body: taken.body,
            deadline: taken.deadline,
        })
    }

    /// Answers a request taken with [`next_request`](Self::next_request): `OK` with a body,
    /// or an error code with the error text as the body.
    pub fn respond(
        &mut self,
        id: RequestId,
        status: ErrorCode,
        body: Bytes,
    ) -> Result<(), ReplyError> {
        let conn = &mut *self.conn;
        if conn.is_closed() {
            return Err(ReplyError::Closed);
        }
        let max = Exchanges::max_send_body(&conn.peer_settings);
        if body.len() > max {
            return Err(ReplyError::TooLarge {
                len: body.len(),
                max,
            });
        }
        let ex = &mut conn.exchanges;
        let deadline = ex.requests.finish(id.raw()).ok_or(ReplyError::Unknown)?;
        ex.drop_deadline(deadline, DeadlineKey::Request(id.raw()));
        ex.outbox.push(Outgoing {
            kind: OutKind::Response,
            id: id.raw(),
            head: Some(OutHead::Response(ResponseHead {
                status,
                total_len: u32::try_from(body.len()).unwrap_or(u32::MAX),
            })),
            body,
            limited: false,
        });
        Ok(())
    }

    /// Our calls awaiting a response.
    pub fn calls_in_flight(&self) -> usize {
        self.conn.exchanges.calls.entries.len()
    }

    /// Requests from the peer not yet answered (queued or taken).
    pub fn requests_pending(&self) -> usize {
        self.conn.exchanges.requests.len()
    }
}
