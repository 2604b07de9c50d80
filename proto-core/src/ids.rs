//! Identifiers: which side of the connection we are, what role the client plays, and the ids
//! of streams, requests and messages.
//!
//! Spec: `docs/PROTOCOL.md#identifiers`.

use core::fmt;

/// Which end of the transport a [`Connection`](crate::Connection) is.
///
/// The client is the side that dialled and sends the preface; the server accepted the
/// transport. In Tether both services and edges are clients of the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// The dialling side: sends the preface and HELLO.
    Client,
    /// The accepting side: answers with WELCOME or REFUSE.
    Server,
}

impl Side {
    /// The other side.
    pub fn peer(self) -> Side {
        match self {
            Side::Client => Side::Server,
            Side::Server => Side::Client,
        }
    }

    /// True for [`Side::Client`].
    pub fn is_client(self) -> bool {
        self == Side::Client
    }
}

/// The role a client announces in its HELLO.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// A cloud microservice: named, registers methods and topics, addresses edges by id.
    Service,
    /// A device or client at the edge: has an edge id, reaches services by method, topic or
    /// service name.
    Edge,
}

impl Role {
    pub(crate) fn to_wire(self) -> u8 {
        match self {
            Role::Service => 1,
            Role::Edge => 2,
        }
    }

    pub(crate) fn from_wire(v: u8) -> Option<Role> {
        match v {
            1 => Some(Role::Service),
            2 => Some(Role::Edge),
            _ => None,
        }
    }
}

/// A stream id. Bit 0 says who opened it: odd ids are opened by the client, even ids by the
/// server. Ids are allocated sequentially per side (1, 3, 5, … and 2, 4, 6, …) and never reused.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId(u64);

impl StreamId {
    /// Wraps a raw wire id. Zero is not a valid stream id; decoding rejects it.
    pub const fn from_raw(raw: u64) -> Self {
        StreamId(raw)
    }

    /// The raw wire value.
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// The side that opened this stream.
    pub fn initiator(self) -> Side {
        if self.0 & 1 == 1 {
            Side::Client
        } else {
            Side::Server
        }
    }

    /// The 1-based sequence number of this stream among those its initiator opened.
    pub(crate) fn sequence(self) -> u64 {
        // Client: 1, 3, 5 → 1, 2, 3. Server: 2, 4, 6 → 1, 2, 3.
        self.0.div_ceil(2)
    }

    /// The id of the `sequence`-th stream opened by `side` (1-based), or `None` on overflow.
    pub(crate) fn nth(side: Side, sequence: u64) -> Option<StreamId> {
        let base = sequence.checked_mul(2)?;
        let raw = match side {
            Side::Client => base.checked_sub(1)?,
            Side::Server => base,
        };
        Some(StreamId(raw))
    }
}

impl fmt::Debug for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stream#{}", self.0)
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

macro_rules! sequential_id {
    ($(#[$doc:meta])* $name:ident, $label:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(u64);

        impl $name {
            /// Wraps a raw wire id.
            pub const fn from_raw(raw: u64) -> Self {
                $name(raw)
            }

            /// The raw wire value.
            pub const fn raw(self) -> u64 {
                self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($label, "#{}"), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

sequential_id!(
    /// The id of an RPC request, chosen by the caller: 1, 2, 3, … per direction. The response
    /// and any cancel carry the same id.
    RequestId,
    "request"
);

sequential_id!(
    /// The id of a message, chosen by the publisher: 1, 2, 3, … per direction. The
    /// acknowledgement carries the same id.
    MessageId,
    "message"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_encode_their_initiator_and_sequence() {
        for seq in 1..100u64 {
            let c = StreamId::nth(Side::Client, seq).unwrap();
            let s = StreamId::nth(Side::Server, seq).unwrap();
            assert_eq!(c.initiator(), Side::Client);
            assert_eq!(s.initiator(), Side::Server);
            assert_eq!(c.sequence(), seq);
            assert_eq!(s.sequence(), seq);
        }
        assert_eq!(StreamId::nth(Side::Client, 1).unwrap().raw(), 1);
        assert_eq!(StreamId::nth(Side::Server, 1).unwrap().raw(), 2);
        assert_eq!(StreamId::nth(Side::Client, u64::MAX), None);
    }

    #[test]
    fn roles_round_trip() {
        for role in [Role::Service, Role::Edge] {
            assert_eq!(Role::from_wire(role.to_wire()), Some(role));
        }
        assert_eq!(Role::from_wire(0), None);
        assert_eq!(Role::from_wire(3), None);
    }
}
