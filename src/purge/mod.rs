//! The purge of an incident or a sweep: its states and outcomes, checking the plan (the dry
//! run), saving evidence, executing, and verifying what is left.

pub mod state;

pub use state::{ActionState, Finished, IncidentStatus, Outcome};
