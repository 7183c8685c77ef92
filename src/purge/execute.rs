//! Carries out a purge plan: bounded concurrency per registry and per builder, every action a
//! journal row committed as it completes, so an interrupted purge resumes where it stopped.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::config::Config;
use crate::error::RemoteError;
use crate::model::{PurgeMethod, PurgeProvenance, PurgeTarget};
use crate::plan::ActionKind;
use crate::purge::remotes::{Remotes, Spare};
use crate::purge::runner::{self, Job};
use crate::purge::{ActionState, Executed, Finished, Outcome, kind_of};
use crate::store::{ActionRow, Store, StoreError};
use crate::time;

/// Progress events; the command turns them into bars.
pub trait Reporter: Send + Sync {
    fn on_start(&self, _kind: ActionKind, _total: usize) {}
    fn on_done(&self, _kind: ActionKind, _ok: bool) {}
}

/// A reporter that shows nothing.
pub struct Silent;
impl Reporter for Silent {}

/// What an execution achieved.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub done: usize,
    pub failed: usize,
    pub skipped: usize,
    /// Already done before this run (a rerun skips them).
    pub already_done: usize,
    /// Not run because the scope in force now does not allow them; they stay pending.
    pub out_of_scope: usize,
    /// Of the failed, those whose registry or builder could not be reached.
    pub unreachable: usize,
    /// Bytes the builders freed in this run.
    pub bytes_reclaimed: i64,
    /// Actions not started because another execution took the incident's lock over: this
    /// one stopped, and wrote nothing of them.
    pub lost_lock: usize,
}

/// Learned manifest facts are saved in batches of this many: an interruption loses at most
/// these, and losing them only costs the next run a probe each. An index's are saved before
/// its action is marked done (see [`Remotes::take_learned`]).
const LEARNED_BATCH: usize = 256;

/// Saves what probes learned once `at_least` facts are waiting (everything with 1).
fn save_learned(remotes: &Remotes, store: &mut Store, at_least: usize) -> Result<(), StoreError> {
    let batch = remotes.take_learned(at_least);
    if batch.is_empty() {
        return Ok(());
    }
    store.save_manifest_facts(&batch)
}

/// Runs every pending (or interrupted) action of the incident.
pub async fn execute(
    store: Arc<Mutex<Store>>,
    incident: i64,
    config: &Config,
    concurrency: usize,
    reporter: Arc<dyn Reporter>,
    owner: Option<&str>,
) -> Result<Summary, StoreError> {
    let rows = store.lock().expect("store lock").actions(incident)?;
    let mut summary = Summary::default();
    let mut todo: Vec<ActionRow> = Vec::new();
    for row in rows {
        match row.state {
            ActionState::Done => summary.already_done += 1,
            ActionState::Skipped => summary.skipped += 1,
            // The scope is the config's now, not the one the plan was made under.
            _ if !row.action.target.in_scope(&config.scope) => summary.out_of_scope += 1,
            // Failed actions are tried again; running ones were interrupted mid-flight.
            _ => todo.push(row),
        }
    }
    let mut per_kind: BTreeMap<ActionKind, usize> = BTreeMap::new();
    for row in &todo {
        *per_kind.entry(row.action.kind).or_default() += 1;
    }
    for (kind, n) in &per_kind {
        reporter.on_start(*kind, *n);
    }
    // Registry deletes first, in parallel per registry; builder work after, since pruning a
    // builder also removes what local images kept alive.
    let (registry_rows, builder_rows): (Vec<_>, Vec<_>) = todo
        .into_iter()
        .partition(|r| r.action.kind == ActionKind::DeleteManifest);
    let digests: Vec<&str> = registry_rows
        .iter()
        .filter_map(|r| r.action.target.manifest_digest())
        .collect();
    let (known, vouching) = {
        let store = store.lock().expect("store lock");
        (
            super::manifest::recorded_facts(&store, &digests)?,
            store.vouching(config.trusted_levels())?,
        )
    };
    let remotes = Arc::new(Remotes::new(config, known).sparing(Spare::Store {
        store: store.clone(),
        incident,
        vouching,
    }));
    let breaker = Arc::new(Breaker::default());
    let owner: Option<Arc<str>> = owner.map(Arc::from);
    let lost = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for phase in [registry_rows, builder_rows] {
        let jobs = phase
            .into_iter()
            .map(|row| {
                let store = store.clone();
                let remotes = remotes.clone();
                let reporter = reporter.clone();
                let breaker = breaker.clone();
                let (owner, lost) = (owner.clone(), lost.clone());
                let kind = kind_of(&row.action.target);
                Job {
                    place: row.action.place.clone(),
                    limit: kind.limit(concurrency.max(1)),
                    work: async move {
                        // An execution whose lock another took over acts no more: what it
                        // has not started is the other's.
                        if let Some(owner) = &owner
                            && !store
                                .lock()
                                .expect("store lock")
                                .holds_incident_lock(incident, owner)?
                        {
                            lost.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            return Ok(None);
                        }
                        let started = Instant::now();
                        let finished = match breaker.open(&row.action.place) {
                            Some(refusal) => Finished::Failed(refusal),
                            None => {
                                let executed = kind.execute(&row.action.target, &remotes).await;
                                let finished = finish(&store, (incident, row.seq), executed);
                                breaker.record(&row.action.place, &finished);
                                finished
                            }
                        };
                        let elapsed = started.elapsed().as_micros() as i64;
                        let mut store = store.lock().expect("store lock");
                        save_learned(&remotes, &mut store, LEARNED_BATCH)?;
                        store.finish_action(row.id, &finished, elapsed)?;
                        drop(store);
                        reporter.on_done(row.action.kind, !matches!(finished, Finished::Failed(_)));
                        Ok::<Option<Finished>, StoreError>(Some(finished))
                    },
                }
            })
            .collect();
        for finished in runner::run(jobs).await?.into_iter().flatten() {
            match finished {
                Finished::Done(outcome) => {
                    summary.done += 1;
                    summary.bytes_reclaimed += outcome.bytes();
                }
                Finished::Failed(error) => {
                    summary.failed += 1;
                    summary.unreachable += usize::from(error.is_unreachable());
                }
                Finished::Skipped(_) => summary.skipped += 1,
            }
        }
        save_learned(&remotes, &mut store.lock().expect("store lock"), 1)?;
    }
    summary.lost_lock = lost.load(std::sync::atomic::Ordering::SeqCst);
    Ok(summary)
}

/// How an action ended: a done purge of a mount or builder is recorded first.
fn finish(
    store: &Arc<Mutex<Store>>,
    job: (i64, i64),
    executed: Result<Executed, RemoteError>,
) -> Finished {
    match executed {
        Ok(Executed::Done { outcome, purged }) => {
            record_purge_after(store, job, Ok(outcome), purged)
        }
        Ok(Executed::Skipped(why)) => Finished::Skipped(why),
        Err(err) => Finished::Failed(err),
    }
}

/// After this many consecutive failures to reach a place, its remaining actions are failed
/// without trying: retries already waited on each, and a rerun resumes them.
const BREAKER_LIMIT: usize = 3;

/// Counts consecutive unreachable-place failures per registry or builder.
#[derive(Default)]
struct Breaker {
    failures: Mutex<HashMap<String, usize>>,
}

impl Breaker {
    /// The refusal when the place failed too often; it counts as the place out of reach.
    fn open(&self, place: &str) -> Option<RemoteError> {
        let failures = self.failures.lock().expect("breaker lock");
        (failures.get(place).copied().unwrap_or(0) >= BREAKER_LIMIT).then(|| {
            RemoteError::unreachable(format!("not attempted: `{place}` failed {BREAKER_LIMIT} times in a row; rerun the purge to resume"))
        })
    }

    fn record(&self, place: &str, finished: &Finished) {
        let mut failures = self.failures.lock().expect("breaker lock");
        match finished {
            Finished::Failed(error) if error.is_unreachable() => {
                *failures.entry(place.to_owned()).or_default() += 1
            }
            _ => {
                failures.insert(place.to_owned(), 0);
            }
        }
    }
}

/// Turns a prune's result into the journal's outcome, recording the purge in the provenance
/// store first when it succeeded, so traces treat the mount or builder as clean from now on.
/// The purge names the executor, who ran it, and the incident (or sweep) action `job` it
/// carried out.
fn record_purge_after(
    store: &Arc<Mutex<Store>>,
    job: (i64, i64),
    result: Result<Outcome, RemoteError>,
    target: Option<PurgeTarget>,
) -> Finished {
    match (result, target) {
        (Ok(outcome), Some(target)) => {
            let provenance = PurgeProvenance {
                method: PurgeMethod::Executor,
                author: crate::actor::actor(),
                forced: false,
                reason: None,
                source: format!("incident {}", job.0),
                action: Some(job),
                claimed: None,
            };
            let now = time::now();
            let mut store = store.lock().expect("store lock");
            let recorded = store.record_purge(&target, now, &provenance).and_then(|_| {
                // The pruned mounts are empty: the next `audit mounts` compares against that.
                let mounts = match &target {
                    PurgeTarget::Mount { builder, mount, .. } => {
                        vec![(builder.clone(), mount.clone())]
                    }
                    PurgeTarget::Builder {
                        builder,
                        records_only: false,
                        ..
                    } => store.recorded_mounts(Some(builder))?,
                    PurgeTarget::Builder { .. } => Vec::new(),
                };
                mounts.iter().try_for_each(|(builder, mount)| {
                    store.record_empty_mount_snapshot(builder, mount, now)
                })
            });
            match recorded {
                Ok(_) => Finished::Done(outcome),
                Err(err) => Finished::Failed(RemoteError::local(format!(
                    "pruned, but the purge was not recorded: {err}"
                ))),
            }
        }
        (Ok(outcome), None) => Finished::Done(outcome),
        (Err(err), _) => Finished::Failed(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BuilderInfo, PurgeTarget, StoredPurge};
    use crate::store::{ExportItem, ImportItem};

    fn purges(store: &Store) -> Vec<StoredPurge> {
        let mut found = Vec::new();
        store
            .export(|item| {
                if let ExportItem::Purge(purge) = item {
                    found.push(*purge);
                }
                Ok(())
            })
            .unwrap();
        found
    }

    /// A failure whose text merely reads like a connection failure (a repository named
    /// `Connect`, an error body saying "connection refused") neither trips the breaker nor
    /// counts as out of reach; three failures of the unreachable kind do.
    #[test]
    fn the_breaker_trips_on_the_kind_not_the_words() {
        let breaker = Breaker::default();
        let worded = RemoteError::status(
            500,
            "registry `r`: delete `Connect/app`: HTTP 500: connection refused, timed out",
        );
        for _ in 0..BREAKER_LIMIT + 1 {
            breaker.record("r", &Finished::Failed(worded.clone()));
        }
        assert!(breaker.open("r").is_none());
        for _ in 0..BREAKER_LIMIT {
            breaker.record("r", &Finished::Failed(RemoteError::unreachable("no route")));
        }
        let refusal = breaker.open("r").expect("tripped");
        assert!(refusal.is_unreachable(), "{refusal}");
        assert!(
            refusal.message.starts_with("not attempted: `r`"),
            "{refusal}"
        );
    }

    /// A prune the executor carried out is recorded as an `executor` purge by the OS account
    /// running it, naming the incident and action; a failed prune records no purge.
    #[test]
    fn an_executor_purge_names_its_method_author_and_action() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("db")).unwrap();
        let builder = BuilderInfo {
            name: "ci-1".into(),
            driver: None,
            endpoint: None,
        };
        store
            .import_batch(
                &[ImportItem::Builder(builder)],
                1,
                &crate::config::Config::default(),
            )
            .unwrap();
        let store = Arc::new(Mutex::new(store));
        let target = PurgeTarget::Mount {
            builder: "ci-1".into(),
            mount: "/root/.cache/pip".into(),
            namespace: String::new(),
        };
        let failed = record_purge_after(
            &store,
            (3, 2),
            Err(RemoteError::unreachable("cannot connect")),
            Some(target.clone()),
        );
        assert!(matches!(failed, Finished::Failed(_)));
        assert!(purges(&store.lock().unwrap()).is_empty());
        let before = time::now();
        let pruned = Outcome::Pruned {
            records: 1,
            bytes: 0,
            already_gone: 0,
        };
        let done = record_purge_after(&store, (3, 2), Ok(pruned), Some(target.clone()));
        assert!(matches!(done, Finished::Done(_)));
        let stored = purges(&store.lock().unwrap());
        assert_eq!(stored.len(), 1);
        let purge = &stored[0];
        assert_eq!(purge.target, target);
        assert_eq!(purge.method, PurgeMethod::Executor);
        assert_eq!(purge.author, crate::actor::actor());
        assert_eq!(purge.action, Some((3, 2)));
        assert_eq!(purge.source, "incident 3");
        assert!(!purge.forced);
        assert!(purge.recorded_at.is_some_and(|at| at >= before));
        assert!(purge.at >= before);
    }
}
