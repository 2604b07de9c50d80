//! Requests or messages from the peer: reassembly, the inbox, and the replies owed.

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use super::HEAD_CREDIT;
use super::assembly::Assembly;
use crate::budget::BudgetKind;
use crate::codec::{FrameType, MessageHead, RequestHead};
use crate::context::Context;
use crate::error::ProtocolViolation;
use crate::flow::RecvWindow;
use crate::time::Timestamp;

/// What the inbound tables need to know about a head.
pub(crate) trait InboundHead {
    fn total_len(&self) -> u32;
    /// Relative timeout in ms; zero when none applies.
    fn timeout_ms(&self) -> u32;
    /// Whether the entry counts towards the in-flight limit (it owes a reply).
    fn owes_reply(&self) -> bool;
}

impl InboundHead for RequestHead {
    fn total_len(&self) -> u32 {
        self.total_len
    }
    fn timeout_ms(&self) -> u32 {
        self.timeout_ms
    }
    fn owes_reply(&self) -> bool {
        true
    }
}

impl InboundHead for MessageHead {
    fn total_len(&self) -> u32 {
        self.total_len
    }
    fn timeout_ms(&self) -> u32 {
        // A timeout bounds how long the publisher waits for the acknowledgement; without
        // one there is nothing to time out.
        if self.ack_wanted { self.timeout_ms } else { 0 }
    }
    fn owes_reply(&self) -> bool {
        self.ack_wanted
    }
}

#[derive(Debug)]
enum Stage<H> {
    Assembling(Box<H>, Assembly),
    Queued(Box<H>, Bytes),
    /// The application has it and owes a reply.
    Taken,
}

#[derive(Debug)]
struct Inbound<H> {
    stage: Stage<H>,
    deadline: Option<Timestamp>,
    owes_reply: bool,
}

/// What handling a fragment asks of the caller.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// Arm this deadline for the id.
    pub(crate) deadline: Option<Timestamp>,
    /// The inbox became non-empty: tell the application.
    pub(crate) notify: bool,
    /// Message credit to return now (bytes dropped on arrival).
    pub(crate) release: u64,
}

/// What a cancel or expiry found.
#[derive(Debug)]
pub(crate) enum Cancelled {
    /// Dropped before the application took it; return this much credit.
    BeforeTaken {
        released: u64,
        deadline: Option<Timestamp>,
    },
    /// The application has it: tell it to stop.
    Taken { deadline: Option<Timestamp> },
    /// Nothing pending with that id.
    Gone,
}

/// A request or message handed to the application.
pub(crate) struct Taken<H> {
    pub(crate) id: u64,
    pub(crate) head: Box<H>,
    pub(crate) body: Bytes,
    pub(crate) deadline: Option<Timestamp>,
    /// Message credit to return now.
    pub(crate) release: u64,
}

#[derive(Debug)]
pub(crate) struct InboundTable<H> {
    ty: FrameType,
    kind: &'static str,
    /// The last id the peer used.
    last_id: u64,
    entries: BTreeMap<u64, Inbound<H>>,
    inbox: VecDeque<u64>,
    notified: bool,
    /// We sent GOAWAY: refuse ids above this.
    refuse_above: Option<u64>,
    /// Entries that owe a reply (the in-flight count).
    owing: u32,
}

impl<H: InboundHead> InboundTable<H> {
    pub(crate) fn new(ty: FrameType, kind: &'static str) -> Self {
        InboundTable {
            ty,
            kind,
            last_id: 0,
            entries: BTreeMap::new(),
            inbox: VecDeque::new(),
            notified: false,
            refuse_above: None,
            owing: 0,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The last id the peer used.
    pub(crate) fn last_id(&self) -> u64 {
        self.last_id
    }

    /// Entries the application owes a reply for, or may still take.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    fn remove(&mut self, id: u64) -> Option<Inbound<H>> {
        let entry = self.entries.remove(&id)?;
        if entry.owes_reply {
            self.owing = self.owing.saturating_sub(1);
        }
        Some(entry)
    }

    fn enqueue(&mut self, id: u64) -> bool {
        self.inbox.push_back(id);
        let notify = !self.notified;
        self.notified = true;
        notify
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn on_fragment(
        &mut self,
        id: u64,
        more: bool,
        head: Option<Box<H>>,
        body: Bytes,
        limit: u32,
        cx: &mut Context<'_>,
        window: &mut RecvWindow,
    ) -> Result<Outcome, ProtocolViolation> {
        let len = u64::try_from(body.len()).unwrap_or(u64::MAX);
        let charge = |window: &mut RecvWindow, n: u64| {
            window
                .on_receive(n)
                .map_err(|e| ProtocolViolation::FlowControl {
                    what: "message window",
                    limit: e.limit,
                    attempted: e.attempted,
                })
        };
        let Some(head) = head else {
            charge(window, len)?;
            let Some(entry) = self.entries.get_mut(&id) else {
                if id <= self.last_id {
                    // The rest of something we dropped (refused, cancelled, timed out).
                    cx.spend(BudgetKind::WastedFrames)?;
                    return Ok(Outcome {
                        release: len,
                        ..Outcome::default()
                    });
                }
                return Err(ProtocolViolation::UnknownId { ty: self.ty, id });
            };
            let Stage::Assembling(_, assembly) = &mut entry.stage else {
                return Err(ProtocolViolation::Fragment {
                    ty: self.ty,
                    id,
                    what: "continuation after the body completed",
                });
            };
            let ty = self.ty;
            assembly
                .push(body, more)
                .map_err(|what| ProtocolViolation::Fragment { ty, id, what })?;
            if !assembly.is_complete() {
                return Ok(Outcome::default());
            }
            let stage = core::mem::replace(&mut entry.stage, Stage::Taken);
            if let Stage::Assembling(head, assembly) = stage {
                entry.stage = Stage::Queued(head, assembly.into_body());
            }
            let notify = self.enqueue(id);
            return Ok(Outcome {
                notify,
                ..Outcome::default()
            });
        };

        // Ids only grow. They may skip: a sender that cancels (or times out) an item before
        // any of it went out never sends its id.
        let expected = self.last_id.saturating_add(1);
        if id < expected {
            return Err(ProtocolViolation::IdOutOfOrder {
                kind: self.kind,
                expected,
                got: id,
            });
        }
        self.last_id = id;
        let cost = HEAD_CREDIT.saturating_add(len);
        charge(window, cost)?;
        if self.refuse_above.is_some_and(|last| id > last) {
            // Sent before the peer saw our GOAWAY, which already told it this id will not be
            // processed: drop it without a reply (replies here could be made to pile up).
            return Ok(Outcome {
                release: cost,
                ..Outcome::default()
            });
        }
        let max = u64::from(cx.config.settings.max_message_size);
        if u64::from(head.total_len()) > max {
            return Err(ProtocolViolation::TooLarge {
                ty: self.ty,
                len: u64::from(head.total_len()),
                max,
            });
        }
        let owes_reply = head.owes_reply();
        if owes_reply {
            if self.owing >= limit {
                return Err(ProtocolViolation::LimitExceeded {
                    what: if self.ty == FrameType::Request {
                        "in-flight requests"
                    } else {
                        "in-flight messages"
                    },
                    max: u64::from(limit),
                });
            }
            self.owing = self.owing.saturating_add(1);
        }
        let timeout = head.timeout_ms();
        let deadline = (timeout > 0).then(|| {
            cx.now
                .saturating_add(core::time::Duration::from_millis(u64::from(timeout)))
        });
        let total = head.total_len();
        let stage = if more {
            Stage::Assembling(head, Assembly::new(total, body))
        } else {
            Stage::Queued(head, body)
        };
        self.entries.insert(
            id,
            Inbound {
                stage,
                deadline,
                owes_reply,
            },
        );
        let notify = !more && self.enqueue(id);
        Ok(Outcome {
            deadline,
            notify,
            ..Outcome::default()
        })
    }

    /// Hands the next complete item to the application.
    pub(crate) fn take_next(&mut self) -> Option<Taken<H>> {
        while let Some(id) = self.inbox.pop_front() {
            let Some(entry) = self.entries.get_mut(&id) else {
                continue;
            };
            let Stage::Queued(head, body) = core::mem::replace(&mut entry.stage, Stage::Taken)
            else {
                continue;
            };
            let deadline = entry.deadline;
            if !entry.owes_reply {
                self.remove(id);
            }
            let release = HEAD_CREDIT.saturating_add(u64::try_from(body.len()).unwrap_or(u64::MAX));
            return Some(Taken {
                id,
                head,
                body,
                deadline,
                release,
            });
        }
        self.notified = false;
        None
    }

    /// The application replied: forget the entry. Returns its deadline, or `None` (outer)
    /// if nothing taken awaits a reply under that id.
    pub(crate) fn finish(&mut self, id: u64) -> Option<Option<Timestamp>> {
        let entry = self.entries.get(&id)?;
        if !matches!(entry.stage, Stage::Taken) || !entry.owes_reply {
            return None;
        }
        self.remove(id).map(|e| e.deadline)
    }

    fn drop_entry(&mut self, id: u64) -> Cancelled {
        let Some(entry) = self.remove(id) else {
            return Cancelled::Gone;
        };
        let released = match entry.stage {
            Stage::Assembling(_, assembly) => u64::from(assembly.received()),
            Stage::Queued(_, body) => {
                self.inbox.retain(|queued| *queued != id);
                u64::try_from(body.len()).unwrap_or(u64::MAX)
            }
            Stage::Taken => {
                return Cancelled::Taken {
                    deadline: entry.deadline,
                };
            }
        };
        Cancelled::BeforeTaken {
            released: HEAD_CREDIT.saturating_add(released),
            deadline: entry.deadline,
        }
    }

    /// The peer cancelled `id`.
    pub(crate) fn cancel(
        &mut self,
        id: u64,
        ty: FrameType,
        cx: &mut Context<'_>,
    ) -> Result<Cancelled, ProtocolViolation> {
        if id > self.last_id {
            return Err(ProtocolViolation::UnknownId { ty, id });
        }
        let outcome = self.drop_entry(id);
        match outcome {
            // Work dropped before the application saw it: the rapid-reset pattern.
            Cancelled::BeforeTaken { .. } => cx.spend(BudgetKind::PeerResets)?,
            Cancelled::Gone => cx.spend(BudgetKind::WastedFrames)?,
            Cancelled::Taken { .. } => {}
        }
        Ok(outcome)
    }

    /// The deadline of `id` passed.
    pub(crate) fn expire(&mut self, id: u64) -> Cancelled {
        self.drop_entry(id)
    }

    /// We sent GOAWAY: later ids are refused. Returns the last id accepted.
    pub(crate) fn start_refusing(&mut self) -> u64 {
        self.refuse_above = Some(self.last_id);
        self.last_id
    }
}
