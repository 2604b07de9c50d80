//! What a subsystem needs while it handles one input or command: the time, where to put
//! control frames and events, the budgets, and both sides' limits.

use crate::budget::{BudgetKind, BudgetState};
use crate::config::{Config, Settings};
use crate::effects::Effects;
use crate::error::ProtocolViolation;
use crate::time::Timestamp;

pub(crate) struct Context<'a> {
    pub(crate) now: Timestamp,
    pub(crate) fx: &'a mut Effects,
    pub(crate) budgets: &'a mut BudgetState,
    /// Our configuration (what we advertised and enforce).
    pub(crate) config: &'a Config,
    /// The peer's settings (what it accepts from us).
    pub(crate) peer: &'a Settings,
}

impl Context<'_> {
    /// Spends one unit of a budget; a protocol violation once it is exhausted.
    pub(crate) fn spend(&mut self, kind: BudgetKind) -> Result<(), ProtocolViolation> {
        self.budgets
            .spend(self.now, kind)
            .map_err(ProtocolViolation::Budget)
    }
}
