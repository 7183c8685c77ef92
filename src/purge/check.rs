//! The dry run: every action still to run is checked where its target lives (there or gone,
//! reachable, in the scope in force), and nothing is changed. Manifests are checked
//! concurrently per registry, and what they turn out to be is recorded for the execution.

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;

use crate::config::Config;
use crate::error::RemoteError;
use crate::plan::ActionKind;
use crate::plan::Target;
use crate::purge::manifest::Leaving;
use crate::purge::runner::{self, Job};
use crate::purge::verify::{Verdict, VerifyInputs};
use crate::purge::{ActionState, kind_of};
use crate::store::{ActionRow, Store, StoreError};

/// What the dry run says of one action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    DoneEarlier,
    /// A follow-up: never executed.
    FollowUp,
    /// Outside the scope in force now: it will not run.
    OutOfScope,
    /// Checked: what was found.
    Ready(String),
    /// Checked: why it cannot be acted on as planned.
    Problem(RemoteError),
}

impl Status {
    /// Whether the action cannot be carried out as planned.
    pub fn is_problem(&self) -> bool {
        matches!(self, Self::OutOfScope | Self::Problem(_))
    }

    /// In words, for the dry run's table.
    pub fn text(&self) -> String {
        match self {
            Self::DoneEarlier => "done earlier".to_owned(),
            Self::FollowUp => "follow-up (not executed)".to_owned(),
            Self::OutOfScope => "out of scope: will not run".to_owned(),
            Self::Ready(found) => found.clone(),
            Self::Problem(err) => format!("problem: {err}"),
        }
    }
}

/// Checks every action of the journal `rows` that would run now, `concurrency` at a time per
/// registry and one at a time per builder; returns one status per row, in order.
pub async fn dry_run(
    store: &mut Store,
    incident: i64,
    rows: &[ActionRow],
    config: &Config,
    concurrency: usize,
) -> Result<Vec<Status>, StoreError> {
    // The scope is the config's now, not the one the plan was made under.
    let to_check = |row: &ActionRow| {
        row.state != ActionState::Done
            && row.action.kind != ActionKind::FollowUp
            && row.action.target.in_scope(&config.scope)
    };
    let digests: Vec<&str> = rows
        .iter()
        .filter(|row| to_check(row))
        .filter_map(|row| row.action.target.manifest_digest())
        .collect();
    let targets: Vec<&Target> = rows
        .iter()
        .filter(|row| to_check(row))
        .map(|row| &row.action.target)
        .collect();
    let leaving = Leaving::ask(store, incident, config, &digests, &targets).await?;
    let remotes = Arc::new(leaving.remotes(config));
    let back = back_again(store, incident, rows, config, (concurrency, None)).await?;
    let jobs = rows
        .iter()
        .filter(|row| to_check(row))
        .cloned()
        .map(|row| {
            let kind = kind_of(&row.action.target);
            let remotes = remotes.clone();
            Job {
                place: row.action.place.clone(),
                limit: kind.limit(concurrency.max(1)),
                work: async move {
                    let found = kind.check(&row.action.target, &remotes).await;
                    Ok::<_, std::convert::Infallible>(match found {
                        Ok(found) => Status::Ready(found),
                        Err(err) => Status::Problem(err),
                    })
                },
            }
        })
        .collect();
    let mut checked = match runner::run(jobs).await {
        Ok(checked) => checked.into_iter(),
        Err(never) => match never {},
    };
    store.save_manifest_facts(&remotes.take_learned(1))?;
    Ok(rows
        .iter()
        .map(|row| {
            if back.contains(&row.id) {
                Status::Ready(
                    "done earlier, but back in the registry: will be deleted again".to_owned(),
                )
            } else if row.state == ActionState::Done {
                Status::DoneEarlier
            } else if row.action.kind == ActionKind::FollowUp {
                Status::FollowUp
            } else if !row.action.target.in_scope(&config.scope) {
                Status::OutOfScope
            } else {
                checked.next().expect("every target to check was checked")
            }
        })
        .collect())
}

/// The ids of the done manifest deletes among `rows` (in the scope in force) whose manifest,
/// or a child it deleted, is in the registry again, as verification finds it: the next
/// execution runs them again. With `mutable` (what a re-run trace says of the tainted runs
/// and the recorded purges), also the done prunes of mounts and builders, and removals of
/// local images, that verification finds present again (a tainted run wrote there after the
/// purge). One that cannot be checked stays done, and verification says it is unverified.
pub async fn back_again(
    store: &mut Store,
    incident: i64,
    rows: &[ActionRow],
    config: &Config,
    (concurrency, mutable): (usize, Option<VerifyInputs>),
) -> Result<HashSet<i64>, StoreError> {
    let done: Vec<ActionRow> = rows
        .iter()
        .filter(|row| {
            row.state == ActionState::Done
                && (row.action.kind == ActionKind::DeleteManifest
                    || mutable.is_some()
                        && matches!(
                            row.action.kind,
                            ActionKind::PruneMount
                                | ActionKind::PruneBuilder
                                | ActionKind::RemoveLocalImage
                        ))
                && row.action.target.in_scope(&config.scope)
        })
        .cloned()
        .collect();
    let inputs = Arc::new(mutable.unwrap_or_default());
    // What people accepted stays: it is not purged again behind their back.
    let acceptances = store.acceptances(incident)?;
    let done: Vec<ActionRow> = done
        .into_iter()
        .filter(|row| {
            !acceptances.iter().any(|a| {
                a.seq == row.seq
                    && crate::purge::verify::covers(a, &row.action.target, &inputs.tainted_runs)
            })
        })
        .collect();
    if done.is_empty() {
        return Ok(HashSet::new());
    }
    let digests: Vec<&str> = done
        .iter()
        .filter_map(|row| row.action.target.manifest_digest())
        .collect();
    let targets: Vec<&Target> = done.iter().map(|row| &row.action.target).collect();
    let leaving = Leaving::ask(store, incident, config, &digests, &targets).await?;
    let remotes = Arc::new(leaving.remotes(config));
    let jobs = done
        .into_iter()
        .map(|row| {
            let (remotes, inputs) = (remotes.clone(), inputs.clone());
            let kind = kind_of(&row.action.target);
            Job {
                place: row.action.place.clone(),
                limit: kind.limit(concurrency.max(1)),
                work: async move {
                    let verdict = kind
                        .verify(
                            &row.action.target,
                            std::slice::from_ref(&row),
                            &remotes,
                            &inputs,
                        )
                        .await;
                    Ok::<_, Infallible>(
                        matches!(verdict, Verdict::Present { .. }).then_some(row.id),
                    )
                },
            }
        })
        .collect();
    match runner::run(jobs).await {
        Ok(found) => Ok(found.into_iter().flatten().collect()),
        Err(never) => match never {},
    }
}
