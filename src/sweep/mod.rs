//! Scheduled policy purges (`cachewarden sweep`): a TOML policy of ordered rules, and the pure
//! selection that turns the store's caches, mounts and builder records into a purge plan.
//!
//! A sweep produces the same [`crate::plan::Action`]s as an incident and runs through the same
//! executor, journal and scope guard.

pub mod metrics;
pub mod policy;
pub mod select;

pub use policy::{Policy, PolicyError, Rule, RuleAction, Selects, TrustSelector};
pub use select::{
    CacheRefCandidate, Candidates, Decision, Entity, MountCandidate, PipelineFacts,
    RecordCandidate, Selection, Verdict,
};
