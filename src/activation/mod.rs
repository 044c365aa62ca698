//! The activation transaction, in the order of the README's numbered steps
//! (validate, lock, recover, check, pre_activate hooks, intent, swap and
//! post_swap hooks, units, health, post_activate hooks, commit).
//! It ends committed or rolled back, never half-done; a SIGKILL at any
//! instant leaves `pending.json` for the next run to finish.
//!
//! The `activation` layer: [`activate`](mod@activate) (steps 1 to 4), the
//! transaction it runs ([`transaction`]), recovery of an interrupted one
//! ([`recover`](mod@recover)), the release checked against its record
//! first ([`verify`]; the check itself is the record's,
//! [`crate::state::record::verify`]), and what is asked and what came of
//! it ([`options`]). May import state, host, config, fs and the base
//! modules; never staging or cli.

mod activate;
mod bluegreen;
mod options;
mod recover;
mod transaction;
mod verify;

pub use activate::{activate, check_expected};
pub use bluegreen::{serving, Serving};
pub use options::{Options, Outcome, Target};
pub use recover::recover;

#[cfg(test)]
mod bluegreen_tests;
#[cfg(test)]
mod tests;
