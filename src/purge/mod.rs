//! The purge of an incident or a sweep, in one place: checking the plan (the dry run), saving
//! evidence, executing, and verifying what is left.
//!
//! Each kind of target (a registry manifest, a cache mount, a builder's records, a local
//! image, a follow-up) is one [`TargetKind`] in its own file that knows how to do all four;
//! [`runner`] runs the work of every kind with bounded concurrency per place. A new kind of
//! target (a GitHub Actions cache entry, a GitLab cache) is a new `Target` variant, a new file
//! implementing [`TargetKind`], and one line in [`kind_of`].

pub mod builder;
pub mod check;
pub mod evidence;
pub mod execute;
pub mod follow_up;
pub mod local_image;
pub mod manifest;
pub mod mount;
pub mod remotes;
pub mod runner;
pub mod state;
pub mod verify;

use std::future::Future;
use std::pin::Pin;

pub use state::{ActionState, Finished, IncidentStatus, Outcome};

use crate::error::RemoteError;
use crate::model::PurgeTarget;
use crate::plan::Target;
use crate::store::ActionRow;
use evidence::Evidence;
use remotes::Remotes;
use verify::{Verdict, VerifyInputs};

/// The work of one target, run as a task by the [`runner`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What carrying out one action did.
#[derive(Debug, Clone)]
pub enum Executed {
    /// Done; with the purge to record when the target is now clean (a mount, a whole builder).
    Done {
        outcome: Outcome,
        purged: Option<PurgeTarget>,
    },
    /// Not run, and why.
    Skipped(String),
}

/// One kind of target: how the dry run checks it, what evidence is saved before it goes, how
/// it is purged, and how verification finds out whether it is gone. Every method is given
/// only targets of its own kind (see [`kind_of`]).
pub trait TargetKind: Sync {
    /// The registry host or builder the target lives at: work is bounded per place.
    fn place(&self, target: &Target) -> String;

    /// What the target is, among targets of every kind: two actions on one target are one
    /// check in verification.
    fn identity(&self, target: &Target) -> String;

    /// How many jobs may work at one place at a time; builders take one at a time.
    fn limit(&self, _concurrency: usize) -> usize {
        1
    }

    /// The dry run: whether the target is there and can be acted on, in words.
    fn check<'a>(
        &'a self,
        target: &'a Target,
        cx: &'a Remotes,
    ) -> BoxFuture<'a, Result<String, RemoteError>>;

    /// Saves what the purge will delete under the evidence directory.
    fn evidence<'a>(
        &'a self,
        target: &'a Target,
        cx: &'a Remotes,
        opts: &'a Evidence,
    ) -> BoxFuture<'a, Result<(), RemoteError>>;

    /// Purges the target. Every execution is idempotent: an interrupted one runs again.
    fn execute<'a>(
        &'a self,
        target: &'a Target,
        cx: &'a Remotes,
    ) -> BoxFuture<'a, Result<Executed, RemoteError>>;

    /// Whether the target is gone, whatever its actions' states (`rows`) say.
    fn verify<'a>(
        &'a self,
        target: &'a Target,
        rows: &'a [ActionRow],
        cx: &'a Remotes,
        inputs: &'a VerifyInputs,
    ) -> BoxFuture<'a, Verdict>;
}

/// The kind that handles `target`.
pub fn kind_of(target: &Target) -> &'static dyn TargetKind {
    match target {
        Target::Manifest { .. } => &manifest::Manifest,
        Target::Mount { .. } => &mount::Mount,
        Target::Builder { .. } => &builder::Builder,
        Target::LocalImage { .. } => &local_image::LocalImage,
        Target::FollowUp { .. } => &follow_up::FollowUp,
    }
}
