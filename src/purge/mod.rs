//! The purge of an incident or a sweep: its states and outcomes, checking the plan (the dry
//! run), saving evidence, executing, and verifying what is left.

pub mod evidence;
pub mod execute;
pub mod state;
pub mod verify;

pub use state::{ActionState, Finished, IncidentStatus, Outcome};
