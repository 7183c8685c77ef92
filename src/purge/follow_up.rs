//! A follow-up: work for people (rotate a secret, rebuild from a clean base) that cachewarden
//! never executes. Verification checks its subject when it has one (a tainted image left in
//! its registry is checked as a manifest); without one it stays unverified until accepted.

use crate::error::RemoteError;
use crate::plan::Target;
use crate::purge::evidence::Evidence;
use crate::purge::remotes::Remotes;
use crate::purge::verify::{Verdict, VerifyInputs};
use crate::purge::{BoxFuture, Executed, TargetKind};
use crate::store::ActionRow;

pub struct FollowUp;

fn fields(target: &Target) -> (&str, &str) {
    match target {
        Target::FollowUp { what, command, .. } => (what, command),
        _ => unreachable!("dispatched by kind_of"),
    }
}

impl TargetKind for FollowUp {
    fn place(&self, target: &Target) -> String {
        fields(target).0.to_owned()
    }

    fn identity(&self, target: &Target) -> String {
        format!("follow-up\0{}", fields(target).0)
    }

    /// Never checked: the dry run says it is not executed.
    fn check<'a>(
        &'a self,
        _target: &'a Target,
        _cx: &'a Remotes,
    ) -> BoxFuture<'a, Result<String, RemoteError>> {
        Box::pin(async { Ok(String::new()) })
    }

    fn evidence<'a>(
        &'a self,
        _target: &'a Target,
        _cx: &'a Remotes,
        _opts: &'a Evidence,
    ) -> BoxFuture<'a, Result<(), RemoteError>> {
        Box::pin(async { Ok(()) })
    }

    fn execute<'a>(
        &'a self,
        target: &'a Target,
        _cx: &'a Remotes,
    ) -> BoxFuture<'a, Result<Executed, RemoteError>> {
        let what = fields(target).0;
        Box::pin(async move { Ok(Executed::Skipped(format!("follow-up: {what}"))) })
    }

    fn verify<'a>(
        &'a self,
        target: &'a Target,
        _rows: &'a [ActionRow],
        _cx: &'a Remotes,
        _inputs: &'a VerifyInputs,
    ) -> BoxFuture<'a, Verdict> {
        let command = fields(target).1;
        Box::pin(async move {
            Verdict::Unverified {
                detail: if command.is_empty() {
                    "cachewarden cannot check this; see to it, then accept it".to_owned()
                } else {
                    format!("cachewarden cannot check this; see `{command}`, then accept it")
                },
            }
        })
    }
}
