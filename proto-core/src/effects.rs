//! Output produced while handling input or commands: control frames waiting to be sent and
//! events waiting for the application. Subsystems write here; the connection drains it in
//! `poll_transmit` and `poll_event`.

use alloc::collections::VecDeque;

use crate::codec::Frame;
use crate::event::Event;
use crate::ids::StreamId;

/// A control frame waiting to be sent. Credit updates are computed when sent, so queuing
/// one twice is harmless and the grant is as large as possible.
#[derive(Debug)]
pub(crate) enum Control {
    /// A frame built when queued.
    Frame(Frame),
    /// WINDOW for one stream.
    StreamWindow(StreamId),
    /// WINDOW for the connection.
    ConnectionWindow,
    /// MESSAGE_WINDOW.
    MessageWindow,
    /// MAX_STREAMS.
    MaxStreams,
}

/// Queues that emptied give their allocation back when it held more entries than this.
const SHRINK_ABOVE: usize = 64;

/// Estimated encoded size of a computed credit frame.
const CREDIT_FRAME_LEN: usize = crate::codec::HEADER_LEN + 8;

#[derive(Debug, Default)]
pub(crate) struct Effects {
    control: VecDeque<Control>,
    /// Approximate encoded bytes in `control`, for the backpressure threshold.
    control_bytes: usize,
    events: VecDeque<Event>,
    pub(crate) conn_window_queued: bool,
    pub(crate) message_window_queued: bool,
    pub(crate) max_streams_queued: bool,
    /// The connection ended: nothing new may be queued for sending.
    sealed: bool,
}

impl Effects {
    pub(crate) fn push_frame(&mut self, frame: Frame) {
        if self.sealed {
            return;
        }
        self.control_bytes = self.control_bytes.saturating_add(frame.encoded_len());
        self.control.push_back(Control::Frame(frame));
    }

    pub(crate) fn push_credit(&mut self, control: Control) {
        if self.sealed {
            return;
        }
        let flag = match control {
            Control::ConnectionWindow => Some(&mut self.conn_window_queued),
            Control::MessageWindow => Some(&mut self.message_window_queued),
            Control::MaxStreams => Some(&mut self.max_streams_queued),
            Control::StreamWindow(_) | Control::Frame(_) => None,
        };
        if let Some(flag) = flag {
            if *flag {
                return;
            }
            *flag = true;
        }
        self.control_bytes = self.control_bytes.saturating_add(CREDIT_FRAME_LEN);
        self.control.push_back(control);
    }

    pub(crate) fn pop_control(&mut self) -> Option<Control> {
        let control = self.control.pop_front()?;
        if self.control.is_empty() && self.control.capacity() > SHRINK_ABOVE {
            // A burst (a flood we answered) must not keep its peak allocation for the
            // connection's life.
            self.control = VecDeque::new();
        }
        let len = match &control {
            Control::Frame(frame) => frame.encoded_len(),
            _ => CREDIT_FRAME_LEN,
        };
        self.control_bytes = self.control_bytes.saturating_sub(len);
        match control {
            Control::ConnectionWindow => self.conn_window_queued = false,
            Control::MessageWindow => self.message_window_queued = false,
            Control::MaxStreams => self.max_streams_queued = false,
            _ => {}
        }
        Some(control)
    }

    pub(crate) fn has_control(&self) -> bool {
        !self.control.is_empty()
    }

    pub(crate) fn control_bytes(&self) -> usize {
        self.control_bytes
    }

    /// Drops every queued control frame (the connection is closing).
    pub(crate) fn clear_control(&mut self) {
        self.control.clear();
        self.control_bytes = 0;
        self.conn_window_queued = false;
        self.message_window_queued = false;
        self.max_streams_queued = false;
    }

    /// After the connection ended: what is queued may still go out, nothing new is added.
    pub(crate) fn seal(&mut self) {
        self.sealed = true;
    }

    pub(crate) fn emit(&mut self, event: Event) {
        self.events.push_back(event);
    }

    pub(crate) fn pop_event(&mut self) -> Option<Event> {
        let event = self.events.pop_front();
        if self.events.is_empty() && self.events.capacity() > SHRINK_ABOVE {
            self.events = VecDeque::new();
        }
        event
    }

    pub(crate) fn pending_events(&self) -> usize {
        self.events.len()
    }
}
