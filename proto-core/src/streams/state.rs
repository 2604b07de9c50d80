//! The two halves of a stream as declarative state machines.
//!
//! Each half has one transition function; every (state, input) pair is answered in one
//! `match`, and a test renders the whole table so a change to it shows up in review (the
//! same table is in `docs/PROTOCOL.md#stream-states`).
//!
//! ```text
//!  sending half                                 receiving half
//!
//!      Open ──finish──▶ Finishing                  Open ──DATA+FIN──▶ FinReceived ──read to end──▶ Drained
//!       │  │               │  │                     │ │ │                  │
//!       │  └──reset/STOP───┼──┴──▶ ResetSent        │ │ └─RESET─▶ ResetReceived
//!       │                  │                        │ └─stop─▶ Stopping ──FIN or RESET──▶ Stopped
//!       │         last byte + FIN sent              │                                       ▲
//!       │                  ▼                        └──────────── (FinReceived) ──stop─────┘
//!       └────────────────▶ FinSent
//! ```

/// The sending half of a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SendState {
    /// The application may write.
    Open,
    /// `finish` was called; buffered bytes and then FIN are still to be sent.
    Finishing,
    /// FIN was sent. Terminal.
    FinSent,
    /// RESET was queued (by us, or because the peer sent STOP). Terminal.
    ResetSent,
}

/// Inputs to the sending half.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SendInput {
    /// The application finished its writes.
    Finish,
    /// The application reset the stream.
    Reset,
    /// The peer sent STOP.
    StopReceived,
    /// The last buffered byte went out with FIN.
    FinTransmitted,
}

/// The receiving half of a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RecvState {
    /// Bytes may arrive.
    Open,
    /// FIN arrived; buffered bytes remain to be read.
    FinReceived,
    /// The application read everything including FIN. Terminal.
    Drained,
    /// The peer reset its sending half. Terminal.
    ResetReceived,
    /// We sent STOP; arriving bytes are discarded until the peer's FIN or RESET.
    Stopping,
    /// The peer's FIN or RESET arrived after our STOP. Terminal.
    Stopped,
}

/// Inputs to the receiving half.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RecvInput {
    /// DATA without FIN.
    Data,
    /// DATA with FIN.
    DataFin,
    /// RESET from the peer.
    Reset,
    /// The application stopped reading.
    Stop,
    /// The application read the last byte and the FIN.
    ReadToEnd,
}

/// The answer of a transition function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transition<S> {
    /// Move to this state (possibly the same one).
    To(S),
    /// Nothing to do (e.g. STOP after our FIN went out).
    Ignore,
    /// Not allowed: a protocol violation for peer inputs, a misuse for local ones.
    Invalid(&'static str),
}

impl SendState {
    #[cfg(test)]
    pub(crate) const ALL: [SendState; 4] = [
        SendState::Open,
        SendState::Finishing,
        SendState::FinSent,
        SendState::ResetSent,
    ];

    pub(crate) fn is_terminal(self) -> bool {
        matches!(self, SendState::FinSent | SendState::ResetSent)
    }

    pub(crate) fn on(self, input: SendInput) -> Transition<SendState> {
        use SendInput::*;
        use SendState::*;
        use Transition::*;
        match (self, input) {
            (Open, Finish) => To(Finishing),
            (Open | Finishing, Reset | StopReceived) => To(ResetSent),
            (Finishing, FinTransmitted) => To(FinSent),
            (Open, FinTransmitted) => Invalid("FIN sent before finish"),
            (Finishing, Finish) => Invalid("already finished"),
            (FinSent | ResetSent, StopReceived) => Ignore,
            (FinSent | ResetSent, Finish | Reset) => Invalid("sending side already closed"),
            (FinSent | ResetSent, FinTransmitted) => Invalid("sending side already closed"),
        }
    }
}

impl RecvState {
    #[cfg(test)]
    pub(crate) const ALL: [RecvState; 6] = [
        RecvState::Open,
        RecvState::FinReceived,
        RecvState::Drained,
        RecvState::ResetReceived,
        RecvState::Stopping,
        RecvState::Stopped,
    ];

    pub(crate) fn is_terminal(self) -> bool {
        matches!(
            self,
            RecvState::Drained | RecvState::ResetReceived | RecvState::Stopped
        )
    }

    pub(crate) fn on(self, input: RecvInput) -> Transition<RecvState> {
        use RecvInput as I;
        use RecvState as S;
        use Transition::*;
        match (self, input) {
            (S::Open, I::Data) => To(S::Open),
            (S::Open, I::DataFin) => To(S::FinReceived),
            (S::Open, I::Reset) => To(S::ResetReceived),
            (S::Open, I::Stop) => To(S::Stopping),
            (S::Open, I::ReadToEnd) => Invalid("no FIN yet"),
            (S::FinReceived | S::Drained, I::Data | I::DataFin) => Invalid("DATA after FIN"),
            // The sender's half already ended with FIN; a late RESET changes nothing.
            (S::FinReceived | S::Drained, I::Reset) => Ignore,
            (S::FinReceived, I::Stop) => To(S::Stopped),
            (S::FinReceived, I::ReadToEnd) => To(S::Drained),
            (S::Drained, I::Stop | I::ReadToEnd) => Ignore,
            (S::ResetReceived, I::Data | I::DataFin) => Invalid("DATA after RESET"),
            (S::ResetReceived, I::Reset) => Invalid("second RESET"),
            (S::ResetReceived, I::Stop | I::ReadToEnd) => Ignore,
            (S::Stopping, I::Data) => To(S::Stopping),
            (S::Stopping, I::DataFin | I::Reset) => To(S::Stopped),
            (S::Stopping, I::Stop | I::ReadToEnd) => Ignore,
            (S::Stopped, I::Data | I::DataFin) => Invalid("DATA after FIN or RESET"),
            (S::Stopped, I::Reset) => Invalid("RESET after FIN or RESET"),
            (S::Stopped, I::Stop | I::ReadToEnd) => Ignore,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;
    use alloc::string::String;

    fn render<S: core::fmt::Debug>(t: Transition<S>) -> String {
        match t {
            Transition::To(s) => format!("{s:?}"),
            Transition::Ignore => String::from("-"),
            Transition::Invalid(why) => format!("invalid ({why})"),
        }
    }

    /// The whole table, pinned. If this test fails, the state machine changed: update
    /// `docs/PROTOCOL.md#stream-states` together with the expected text.
    #[test]
    fn transition_tables_are_pinned() {
        let mut send = String::new();
        for s in SendState::ALL {
            for i in [
                SendInput::Finish,
                SendInput::Reset,
                SendInput::StopReceived,
                SendInput::FinTransmitted,
            ] {
                send.push_str(&format!("{s:?} + {i:?} = {}\n", render(s.on(i))));
            }
        }
        let expected_send = "\
Open + Finish = Finishing
Open + Reset = ResetSent
Open + StopReceived = ResetSent
Open + FinTransmitted = invalid (FIN sent before finish)
Finishing + Finish = invalid (already finished)
Finishing + Reset = ResetSent
Finishing + StopReceived = ResetSent
Finishing + FinTransmitted = FinSent
FinSent + Finish = invalid (sending side already closed)
FinSent + Reset = invalid (sending side already closed)
FinSent + StopReceived = -
FinSent + FinTransmitted = invalid (sending side already closed)
ResetSent + Finish = invalid (sending side already closed)
ResetSent + Reset = invalid (sending side already closed)
ResetSent + StopReceived = -
ResetSent + FinTransmitted = invalid (sending side already closed)
";
        assert_eq!(send, expected_send);

        let mut recv = String::new();
        for s in RecvState::ALL {
            for i in [
                RecvInput::Data,
                RecvInput::DataFin,
                RecvInput::Reset,
                RecvInput::Stop,
                RecvInput::ReadToEnd,
            ] {
                recv.push_str(&format!("{s:?} + {i:?} = {}\n", render(s.on(i))));
            }
        }
        let expected_recv = "\
Open + Data = Open
Open + DataFin = FinReceived
Open + Reset = ResetReceived
Open + Stop = Stopping
Open + ReadToEnd = invalid (no FIN yet)
FinReceived + Data = invalid (DATA after FIN)
FinReceived + DataFin = invalid (DATA after FIN)
FinReceived + Reset = -
FinReceived + Stop = Stopped
FinReceived + ReadToEnd = Drained
Drained + Data = invalid (DATA after FIN)
Drained + DataFin = invalid (DATA after FIN)
Drained + Reset = -
Drained + Stop = -
Drained + ReadToEnd = -
ResetReceived + Data = invalid (DATA after RESET)
ResetReceived + DataFin = invalid (DATA after RESET)
ResetReceived + Reset = invalid (second RESET)
ResetReceived + Stop = -
ResetReceived + ReadToEnd = -
Stopping + Data = Stopping
Stopping + DataFin = Stopped
Stopping + Reset = Stopped
Stopping + Stop = -
Stopping + ReadToEnd = -
Stopped + Data = invalid (DATA after FIN or RESET)
Stopped + DataFin = invalid (DATA after FIN or RESET)
Stopped + Reset = invalid (RESET after FIN or RESET)
Stopped + Stop = -
Stopped + ReadToEnd = -
";
        assert_eq!(recv, expected_recv);
    }

    #[test]
    fn terminal_states_only_ignore_or_reject() {
        for s in SendState::ALL.into_iter().filter(|s| s.is_terminal()) {
            for i in [SendInput::Finish, SendInput::Reset, SendInput::StopReceived] {
                assert!(!matches!(s.on(i), Transition::To(_)));
            }
        }
        for s in RecvState::ALL.into_iter().filter(|s| s.is_terminal()) {
            for i in [RecvInput::Data, RecvInput::DataFin, RecvInput::Reset] {
                assert!(!matches!(s.on(i), Transition::To(_)), "{s:?} {i:?}");
            }
        }
    }
}
