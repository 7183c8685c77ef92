//! Taint traversal over the provenance graph. Pure: it reads through [`Source`] and does no IO
//! of its own.

#[cfg(test)]
pub(crate) mod mem;
#[cfg(test)]
pub(crate) mod oracle;
mod result;
pub mod seeds;
pub mod source;
mod taint;
#[cfg(test)]
pub(crate) mod tests;

pub use result::{
    AppliedPurge, Entity, Evidence, Hop, Kind, Label, Node, ResolveError, SeedMark, TagOnlyRef,
    Tainted, Trace, Via, run_display_name,
};
pub use seeds::{SEED_SPEC_VERSION, SeedSpec, Seeds};
pub use source::Source;
pub use taint::{
    ClaimLimits, TraceError, TraceOptions, Unknown, record_carries_taint,
    record_kind_carries_taint, trace,
};
