//! Registered names: the methods, topics and hooks each side announces, so the gateway can
//! route by capability (`docs/PROTOCOL.md#register`).

use alloc::vec::Vec;

use super::{Connection, Phase};
use crate::budget::BudgetKind;
use crate::codec::{Frame, Registration};
use crate::error::{ApiMisuse, ProtocolViolation};
use crate::event::Event;
use crate::time::Timestamp;

impl Connection {
    /// Announces names (methods answered, topics received, hooks provided). Names already
    /// registered are skipped.
    pub fn register(&mut self, entries: Vec<Registration>) -> Result<(), ApiMisuse> {
        self.check_open()?;
        let new: Vec<Registration> = entries
            .into_iter()
            .filter(|e| !self.local_registrations.contains(e))
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        let max = self.peer_settings.max_registrations;
        let after = self.local_registrations.len().saturating_add(new.len());
        if after > max as usize {
            return Err(ApiMisuse::TooManyRegistrations { max });
        }
        self.local_registrations.extend(new.iter().cloned());
        self.send_registrations(false, new);
        Ok(())
    }

    /// Withdraws names. Names not registered are skipped.
    pub fn unregister(&mut self, entries: Vec<Registration>) -> Result<(), ApiMisuse> {
        self.check_open()?;
        let gone: Vec<Registration> = entries
            .into_iter()
            .filter(|e| self.local_registrations.remove(e))
            .collect();
        if !gone.is_empty() {
            self.send_registrations(true, gone);
        }
        Ok(())
    }

    fn check_open(&self) -> Result<(), ApiMisuse> {
        match self.phase {
            Phase::Open => Ok(()),
            Phase::Closed => Err(ApiMisuse::Closed),
            _ => Err(ApiMisuse::NotConnected),
        }
    }

    /// Queues REGISTER frames, split so each fits the peer's frame size.
    fn send_registrations(&mut self, remove: bool, entries: Vec<Registration>) {
        // Each entry takes at most 257 bytes; 60 of them fit the 16 KiB minimum frame.
        for chunk in entries.chunks(60) {
            self.fx.push_frame(Frame::Register {
                remove,
                entries: chunk.to_vec(),
            });
        }
    }

    pub(super) fn on_register(
        &mut self,
        now: Timestamp,
        remove: bool,
        entries: Vec<Registration>,
    ) -> Result<(), ProtocolViolation> {
        self.budgets
            .spend(now, BudgetKind::Registrations)
            .map_err(ProtocolViolation::Budget)?;
        if remove {
            for entry in &entries {
                self.peer_registrations.remove(entry);
            }
        } else {
            let max = self.config.settings.max_registrations;
            for entry in &entries {
                self.peer_registrations.insert(entry.clone());
                if self.peer_registrations.len() > max as usize {
                    return Err(ProtocolViolation::LimitExceeded {
                        what: "registrations",
                        max: u64::from(max),
                    });
                }
            }
        }
        self.fx.emit(Event::PeerRegistration { remove, entries });
        Ok(())
    }
}
