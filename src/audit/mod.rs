//! Audits. `mounts`: cache-mount content checked against its own checksums (see its module).
//!
//! The registry audit (`cachewarden audit registry`): what a cache registry holds, compared with
//! what recorded pipelines exported. The registry is the independent witness: a compromised
//! pipeline can skip or forge its own hook, but not what the registry serves.
//!
//! Pure: classification names, the comparison, findings with stable codes, and their text,
//! JSON and SARIF forms. Listing tags and fetching manifests is the command's.

pub mod builds;
pub mod compare;
pub mod finding;
pub mod mounts;
pub mod render;
pub mod sarif;

pub use compare::{
    CacheEvent, CompareOptions, Observed, RepoFacts, Seen, compare, is_cache, kind_str, parse_kind,
};
pub use finding::{Code, Finding, Severity};
pub use render::{AuditResult, RegistryResult, Reported, RepositoryResult};
