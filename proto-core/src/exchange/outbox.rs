//! Sending request, response and message bodies in fragments.
//!
//! An item *starts* by reserving message credit for all of it ([`HEAD_CREDIT`] plus its
//! whole body) and sending its head. The receiver returns credit only when a whole body
//! leaves its core, so reserving up front is what guarantees that every started item can
//! finish: were credit spent fragment by fragment, many half-sent bodies could exhaust the
//! window with none complete, and both sides would wait forever.
//!
//! Items start in order (a large one waiting for credit is not overtaken forever by small
//! ones), and started items take turns one fragment at a time, so a megabyte message holds
//! a small RPC back by at most one frame.

use alloc::boxed::Box;
use alloc::collections::VecDeque;

use bytes::Bytes;

use super::HEAD_CREDIT;
use crate::codec::{Frame, MessageHead, RequestHead, ResponseHead};
use crate::flow::SendCredit;
use crate::ids::{MessageId, RequestId};

/// What an outgoing item is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OutKind {
    Request,
    Response,
    Message,
}

/// The head of an outgoing item, until its first fragment is sent.
#[derive(Debug)]
pub(crate) enum OutHead {
    Request(Box<RequestHead>),
    Response(ResponseHead),
    Message(Box<MessageHead>),
}

#[derive(Debug)]
pub(crate) struct Outgoing {
    pub(crate) kind: OutKind,
    pub(crate) id: u64,
    /// `None` once the head went out.
    pub(crate) head: Option<OutHead>,
    /// Body bytes not yet sent.
    pub(crate) body: Bytes,
    /// Counts towards the send-queue limit (new requests and messages, not responses).
    pub(crate) limited: bool,
}

impl OutHead {
    /// Encoded size of the head's fields, to size the first fragment.
    fn encoded_len(&self) -> usize {
        // address (8 + 1 + name) + name length byte + name + timeout 4 + total 4
        let addressed = |peer_name: usize, name: usize| {
            8usize
                .saturating_add(1)
                .saturating_add(peer_name)
                .saturating_add(1)
                .saturating_add(name)
                .saturating_add(8)
        };
        match self {
            OutHead::Request(h) => addressed(h.address.peer_name.len(), h.method.len()),
            OutHead::Message(h) => addressed(h.address.peer_name.len(), h.topic.len()),
            // status 2 + total 4
            OutHead::Response(_) => 6,
        }
    }

    fn into_frame(self, id: u64, more: bool, body: Bytes) -> Frame {
        match self {
            OutHead::Request(h) => Frame::Request {
                id: RequestId::from_raw(id),
                more,
                head: Some(h),
                body,
            },
            OutHead::Response(h) => Frame::Response {
                id: RequestId::from_raw(id),
                more,
                head: Some(h),
                body,
            },
            OutHead::Message(h) => Frame::Message {
                id: MessageId::from_raw(id),
                more,
                head: Some(h),
                body,
            },
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Outbox {
    /// Items not started yet, in order.
    waiting: VecDeque<Outgoing>,
    /// Items whose head went out, taking turns.
    active: VecDeque<Outgoing>,
    /// Unsent body bytes of limited items.
    queued: u64,
}

impl Outbox {
    pub(crate) fn push(&mut self, item: Outgoing) {
        if item.limited {
            self.queued = self
                .queued
                .saturating_add(u64::try_from(item.body.len()).unwrap_or(u64::MAX));
        }
        self.waiting.push_back(item);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.waiting.is_empty() && self.active.is_empty()
    }

    /// Unsent body bytes of new requests and messages.
    pub(crate) fn queued(&self) -> u64 {
        self.queued
    }

    /// Removes an item. Returns `Some(head_sent)` if it was queued. The credit reserved for
    /// the unsent part of a started item goes back to `credit`.
    pub(crate) fn remove(
        &mut self,
        kind: OutKind,
        id: u64,
        credit: &mut SendCredit,
    ) -> Option<bool> {
        let matches = |i: &Outgoing| i.kind == kind && i.id == id;
        let (item, head_sent) = if let Some(at) = self.waiting.iter().position(matches) {
            (self.waiting.remove(at)?, false)
        } else {
            let at = self.active.iter().position(matches)?;
            (self.active.remove(at)?, true)
        };
        let unsent = u64::try_from(item.body.len()).unwrap_or(u64::MAX);
        if item.limited {
            self.queued = self.queued.saturating_sub(unsent);
        }
        if head_sent {
            credit.refund(unsent);
        }
        Some(head_sent)
    }

    /// Removes every item of `kind` whose id is above `last`, returning their ids.
    pub(crate) fn remove_above(
        &mut self,
        kind: OutKind,
        last: u64,
        credit: &mut SendCredit,
    ) -> alloc::vec::Vec<u64> {
        let ids: alloc::vec::Vec<u64> = self
            .waiting
            .iter()
            .chain(self.active.iter())
            .filter(|i| i.kind == kind && i.id > last)
            .map(|i| i.id)
            .collect();
        for id in &ids {
            self.remove(kind, *id, credit);
        }
        ids
    }

    /// True if a fragment could be sent now.
    pub(crate) fn has_sendable(&self, credit: &SendCredit) -> bool {
        !self.active.is_empty()
            || self
                .waiting
                .front()
                .is_some_and(|i| start_cost(i) <= credit.available())
    }

    /// The next fragment to send, or `None` if nothing can go out now.
    pub(crate) fn poll_fragment(
        &mut self,
        max_frame: usize,
        credit: &mut SendCredit,
    ) -> Option<Frame> {
        // Starting the next item comes first: a small request goes out as soon as credit
        // allows, instead of waiting for the fragments of a large body in progress.
        if self
            .waiting
            .front()
            .is_some_and(|i| start_cost(i) <= credit.available())
        {
            let mut item = self.waiting.pop_front()?;
            credit.consume(start_cost(&item));
            let head = item.head.take()?;
            let room = max_frame.saturating_sub(head.encoded_len());
            let fragment = self.take_fragment(&mut item, room);
            let more = !item.body.is_empty();
            let frame = head.into_frame(item.id, more, fragment);
            if more {
                self.active.push_back(item);
            }
            return Some(frame);
        }
        let mut item = self.active.pop_front()?;
        let fragment = self.take_fragment(&mut item, max_frame);
        let more = !item.body.is_empty();
        let frame = continuation(item.kind, item.id, more, fragment);
        if more {
            self.active.push_back(item);
        }
        Some(frame)
    }

    fn take_fragment(&mut self, item: &mut Outgoing, room: usize) -> Bytes {
        let take = item.body.len().min(room);
        if item.limited {
            self.queued = self
                .queued
                .saturating_sub(u64::try_from(take).unwrap_or(u64::MAX));
        }
        item.body.split_to(take)
    }
}

/// Credit reserved when an item starts: the head's fixed cost plus its whole body.
fn start_cost(item: &Outgoing) -> u64 {
    HEAD_CREDIT.saturating_add(u64::try_from(item.body.len()).unwrap_or(u64::MAX))
}

fn continuation(kind: OutKind, id: u64, more: bool, body: Bytes) -> Frame {
    match kind {
        OutKind::Request => Frame::Request {
            id: RequestId::from_raw(id),
            more,
            head: None,
            body,
        },
        OutKind::Response => Frame::Response {
            id: RequestId::from_raw(id),
            more,
            head: None,
            body,
        },
        OutKind::Message => Frame::Message {
            id: MessageId::from_raw(id),
            more,
            head: None,
            body,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::code::ErrorCode;
    use crate::codec::Address;
    use crate::name::Name;

    fn request(id: u64, body: &'static [u8]) -> Outgoing {
        Outgoing {
            kind: OutKind::Request,
            id,
            head: Some(OutHead::Request(Box::new(RequestHead {
                address: Address::default(),
                method: Name::from_static("m").unwrap(),
                timeout_ms: 0,
                total_len: body.len() as u32,
            }))),
            body: Bytes::from_static(body),
            limited: true,
        }
    }

    #[test]
    fn head_lengths_match_the_encoder() {
        let heads = [
            request(1, b"x").head.unwrap(),
            OutHead::Response(ResponseHead {
                status: ErrorCode::OK,
                total_len: 3,
            }),
            OutHead::Message(Box::new(MessageHead {
                address: Address {
                    peer_id: 9,
                    peer_name: Name::from_static("svc").unwrap(),
                },
                topic: Name::from_static("topic").unwrap(),
                ack_wanted: true,
                timeout_ms: 5,
                total_len: 0,
            })),
        ];
        for head in heads {
            let expected = head.encoded_len();
            assert_eq!(
                head.into_frame(1, false, Bytes::new()).payload_len(),
                expected
            );
        }
    }

    #[test]
    fn items_interleave_fragment_by_fragment() {
        let mut outbox = Outbox::default();
        let big: &'static [u8] = alloc::vec![1u8; 100_000].leak();
        outbox.push(request(1, big));
        outbox.push(request(2, b"small"));
        let mut credit = SendCredit::new(1 << 30);
        let kinds: alloc::vec::Vec<(u64, bool)> =
            core::iter::from_fn(|| outbox.poll_fragment(16 * 1024, &mut credit))
                .map(|f| match f {
                    Frame::Request { id, head, .. } => (id.raw(), head.is_some()),
                    _ => unreachable!(),
                })
                .collect();
        assert_eq!(kinds[0], (1, true));
        assert_eq!(
            kinds[1],
            (2, true),
            "the small request goes second, not after 100 KB"
        );
        assert!(kinds[2..].iter().all(|(id, head)| *id == 1 && !head));
        assert_eq!(outbox.queued(), 0);
        assert!(outbox.is_empty());
    }

    #[test]
    fn an_item_starts_only_when_credit_covers_all_of_it() {
        let mut outbox = Outbox::default();
        outbox.push(request(1, b"0123456789"));
        let mut credit = SendCredit::new(HEAD_CREDIT as u32 + 9);
        assert!(!outbox.has_sendable(&credit));
        assert_eq!(
            outbox.poll_fragment(16 * 1024, &mut credit),
            None,
            "one byte short"
        );
        credit.grant(1).unwrap();
        let Some(Frame::Request {
            body, more, head, ..
        }) = outbox.poll_fragment(16 * 1024, &mut credit)
        else {
            panic!()
        };
        assert_eq!((body.len(), more, head.is_some()), (10, false, true));
        assert_eq!(credit.available(), 0);
    }

    #[test]
    fn started_items_always_finish_even_with_no_credit_left() {
        let mut outbox = Outbox::default();
        let big: &'static [u8] = alloc::vec![1u8; 50_000].leak();
        outbox.push(request(1, big));
        outbox.push(request(2, big));
        // Credit for exactly one item: the second must not start, the first must finish.
        let mut credit = SendCredit::new(HEAD_CREDIT as u32 + 50_000);
        let mut ids = alloc::vec::Vec::new();
        while let Some(Frame::Request { id, .. }) = outbox.poll_fragment(16 * 1024, &mut credit) {
            ids.push(id.raw());
        }
        assert!(ids.iter().all(|id| *id == 1));
        assert_eq!(ids.len(), 4);
        credit.grant(HEAD_CREDIT as u32 + 50_000).unwrap();
        assert!(outbox.poll_fragment(16 * 1024, &mut credit).is_some());
    }

    #[test]
    fn a_zero_length_response_needs_only_the_head_credit() {
        let mut outbox = Outbox::default();
        outbox.push(Outgoing {
            kind: OutKind::Response,
            id: 3,
            head: Some(OutHead::Response(ResponseHead {
                status: ErrorCode::OK,
                total_len: 0,
            })),
            body: Bytes::new(),
            limited: false,
        });
        let mut credit = SendCredit::new(HEAD_CREDIT as u32);
        assert!(outbox.has_sendable(&credit));
        assert!(matches!(
            outbox.poll_fragment(16 * 1024, &mut credit),
            Some(Frame::Response { more: false, .. })
        ));
        assert_eq!(credit.available(), 0);
    }

    #[test]
    fn removal_updates_the_queue_size() {
        let mut outbox = Outbox::default();
        outbox.push(request(1, b"abc"));
        outbox.push(request(2, b"defg"));
        assert_eq!(outbox.queued(), 7);
        let mut credit = SendCredit::new(0);
        assert_eq!(outbox.remove(OutKind::Request, 1, &mut credit), Some(false));
        assert_eq!(outbox.remove(OutKind::Response, 2, &mut credit), None);
        assert_eq!(
            outbox.remove_above(OutKind::Request, 1, &mut credit),
            alloc::vec![2]
        );
        assert_eq!(outbox.queued(), 0);
    }

    #[test]
    fn abandoning_a_started_item_refunds_its_unsent_credit() {
        let mut outbox = Outbox::default();
        let big: &'static [u8] = alloc::vec![1u8; 50_000].leak();
        outbox.push(request(1, big));
        let mut credit = SendCredit::new(HEAD_CREDIT as u32 + 50_000);
        let Some(Frame::Request { body, .. }) = outbox.poll_fragment(16 * 1024, &mut credit) else {
            panic!()
        };
        assert_eq!(credit.available(), 0, "the whole item was reserved");
        assert_eq!(outbox.remove(OutKind::Request, 1, &mut credit), Some(true));
        assert_eq!(credit.available(), 50_000 - body.len() as u64);
    }
}
