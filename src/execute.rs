//! Carries out a purge plan: bounded concurrency per registry and per builder, every action a
//! journal row committed as it completes, so an interrupted purge resumes where it stopped.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Semaphore;

use crate::config::Config;
use crate::error::RemoteError;
use crate::model::{Digest, Driver, ManifestFacts, PurgeMethod, PurgeProvenance, PurgeTarget};
use crate::plan::{Action, ActionKind, Target};
use crate::remote::buildkit::{BuildkitClient, CacheRecord};
use crate::remote::engine::Engine;
use crate::remote::registry::{DeleteOutcome, RegistryClient, facts, is_index_type};
use crate::report::count;
use crate::store::{ActionRow, Finished, Store, StoreError};
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
}

/// The clients an execution shares between actions: one per registry and per builder.
struct Clients {
    config: Config,
    registries: tokio::sync::Mutex<HashMap<String, Arc<RegistryClient>>>,
    builders: tokio::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<BuildkitClient>>>>>,
    /// What the store knew about the manifests to delete when the execution started.
    known: HashMap<String, ManifestFacts>,
    /// What probes learned since, not saved yet.
    learned: Mutex<Vec<ManifestFacts>>,
}

/// Learned manifest facts are saved in batches of this many: an interruption loses at most
/// these, and losing them only costs the next run a probe each.
const LEARNED_BATCH: usize = 256;

impl Clients {
    /// Saves what probes learned once `at_least` facts are waiting (everything with 1).
    fn save_learned(&self, store: &mut Store, at_least: usize) -> Result<(), StoreError> {
        let batch = {
            let mut learned = self.learned.lock().expect("learned lock");
            if learned.is_empty() || learned.len() < at_least {
                return Ok(());
            }
            std::mem::take(&mut *learned)
        };
        store.save_manifest_facts(&batch)
    }

    async fn registry(&self, host: &str) -> Result<Arc<RegistryClient>, RemoteError> {
        let mut map = self.registries.lock().await;
        if let Some(client) = map.get(host) {
            return Ok(client.clone());
        }
        let client = Arc::new(RegistryClient::new(&self.config, host)?);
        map.insert(host.to_owned(), client.clone());
        Ok(client)
    }

    async fn builder(&self, name: &str) -> Arc<tokio::sync::Mutex<Option<BuildkitClient>>> {
        self.builders
            .lock()
            .await
            .entry(name.to_owned())
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(None)))
            .clone()
    }
}

/// The endpoint and driver to reach a builder: the config wins over what the store recorded.
pub fn builder_endpoint(
    config: &Config,
    builder: &str,
    endpoint: Option<&str>,
    driver: Option<Driver>,
) -> Option<(String, Driver)> {
    match config.builder(builder) {
        Some(b) => Some((
            b.endpoint.clone(),
            b.driver.or(driver).unwrap_or(Driver::Docker),
        )),
        None => endpoint.map(|e| (e.to_owned(), driver.unwrap_or(Driver::Docker))),
    }
}

/// [`builder_endpoint`], or the error that says how to fix its absence.
pub fn require_endpoint(
    config: &Config,
    builder: &str,
    endpoint: Option<&str>,
    driver: Option<Driver>,
) -> Result<(String, Driver), RemoteError> {
    builder_endpoint(config, builder, endpoint, driver).ok_or_else(|| {
        RemoteError(format!(
            "no endpoint known for builder `{builder}`: add it to the config"
        ))
    })
}

/// Connects to a builder's BuildKit as the config and the store know it.
pub async fn connect_builder(
    config: &Config,
    builder: &str,
    endpoint: Option<&str>,
    driver: Option<Driver>,
) -> Result<BuildkitClient, RemoteError> {
    let (endpoint, driver) = require_endpoint(config, builder, endpoint, driver)?;
    BuildkitClient::connect(&endpoint, driver).await
}

/// Runs every pending (or interrupted) action of the incident.
pub async fn execute(
    store: Arc<Mutex<Store>>,
    incident: i64,
    config: &Config,
    concurrency: usize,
    reporter: Arc<dyn Reporter>,
) -> Result<Summary, StoreError> {
    let rows = store.lock().expect("store lock").actions(incident)?;
    let mut summary = Summary::default();
    let mut todo: Vec<ActionRow> = Vec::new();
    for row in rows {
        match row.state.as_str() {
            "done" => summary.already_done += 1,
            "skipped" => summary.skipped += 1,
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
    let known = store.lock().expect("store lock").manifest_facts(&digests)?;
    let clients = Arc::new(Clients {
        config: config.clone(),
        registries: tokio::sync::Mutex::new(HashMap::new()),
        builders: tokio::sync::Mutex::new(HashMap::new()),
        known,
        learned: Mutex::new(Vec::new()),
    });
    let breaker = Arc::new(Breaker::default());
    for phase in [registry_rows, builder_rows] {
        let mut places: HashMap<String, Arc<Semaphore>> = HashMap::new();
        let mut tasks = tokio::task::JoinSet::new();
        for row in phase {
            let limit = if row.action.kind == ActionKind::DeleteManifest {
                concurrency.max(1)
            } else {
                1
            };
            let semaphore = places
                .entry(row.action.place.clone())
                .or_insert_with(|| Arc::new(Semaphore::new(limit)))
                .clone();
            let store = store.clone();
            let clients = clients.clone();
            let reporter = reporter.clone();
            let breaker = breaker.clone();
            tasks.spawn(async move {
                let _permit = semaphore.acquire_owned().await.expect("semaphore open");
                let started = Instant::now();
                let finished = match breaker.open(&row.action.place) {
                    Some(reason) => Finished::Failed(reason),
                    None => {
                        let finished =
                            run_action(&row.action, &clients, (incident, row.seq), &store).await;
                        breaker.record(&row.action.place, &finished);
                        finished
                    }
                };
                let elapsed = started.elapsed().as_micros() as i64;
                let mut store = store.lock().expect("store lock");
                store.finish_action(row.id, &finished, elapsed)?;
                clients.save_learned(&mut store, LEARNED_BATCH)?;
                drop(store);
                reporter.on_done(row.action.kind, !matches!(finished, Finished::Failed(_)));
                Ok::<Finished, StoreError>(finished)
            });
        }
        while let Some(joined) = tasks.join_next().await {
            match joined.expect("action task panicked")? {
                Finished::Done(_) => summary.done += 1,
                Finished::Failed(error) => {
                    summary.failed += 1;
                    summary.unreachable += usize::from(is_unreachable(&error));
                }
                Finished::Skipped(_) => summary.skipped += 1,
            }
        }
        clients.save_learned(&mut store.lock().expect("store lock"), 1)?;
    }
    Ok(summary)
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
    fn open(&self, place: &str) -> Option<String> {
        let failures = self.failures.lock().expect("breaker lock");
        (failures.get(place).copied().unwrap_or(0) >= BREAKER_LIMIT).then(|| {
            format!("not attempted: `{place}` failed {BREAKER_LIMIT} times in a row; rerun the purge to resume")
        })
    }

    fn record(&self, place: &str, finished: &Finished) {
        let mut failures = self.failures.lock().expect("breaker lock");
        match finished {
            Finished::Failed(error) if is_unreachable(error) => {
                *failures.entry(place.to_owned()).or_default() += 1
            }
            _ => {
                failures.insert(place.to_owned(), 0);
            }
        }
    }
}

/// Whether an action failed because its place could not be reached at all.
pub(crate) fn is_unreachable(error: &str) -> bool {
    [
        "cannot connect",
        "connection refused",
        "Connection refused",
        "cannot reach",
        "timed out",
        "Connect",
        // The breaker's own refusal: the place failed to answer just before.
        "not attempted:",
    ]
    .iter()
    .any(|needle| error.contains(needle))
}

async fn run_action(
    action: &Action,
    clients: &Clients,
    job: (i64, i64),
    store: &Arc<Mutex<Store>>,
) -> Finished {
    let result = match &action.target {
        Target::Manifest {
            registry,
            repository,
            digest,
            ..
        } => delete_manifest(clients, registry, repository, digest).await,
        Target::Mount {
            builder,
            endpoint,
            driver,
            mount_id,
            targets,
            shares_target_with,
        } => {
            let (endpoint, driver) =
                match require_endpoint(&clients.config, builder, endpoint.as_deref(), *driver) {
                    Ok(found) => found,
                    Err(err) => return Finished::Failed(err.to_string()),
                };
            let result = prune_mount(
                clients,
                builder,
                &endpoint,
                driver,
                mount_id,
                targets,
                shares_target_with,
            )
            .await;
            let target = PurgeTarget::Mount {
                builder: builder.clone(),
                mount: mount_id.clone(),
                namespace: String::new(),
            };
            return record_purge_after(store, job, result, Some(target));
        }
        Target::Builder {
            builder,
            endpoint,
            driver,
            record_ids,
            used_since,
            full,
            partial,
        } => {
            let (endpoint, driver) =
                match require_endpoint(&clients.config, builder, endpoint.as_deref(), *driver) {
                    Ok(found) => found,
                    Err(err) => return Finished::Failed(err.to_string()),
                };
            let result = prune_builder(
                clients,
                builder,
                &endpoint,
                driver,
                record_ids,
                *used_since,
                *full,
            )
            .await;
            // A prune of only some records is no purge of the builder's whole cache.
            let target = (!*partial).then(|| PurgeTarget::Builder {
                builder: builder.clone(),
            });
            return record_purge_after(store, job, result, target);
        }
        Target::LocalImage {
            builder,
            endpoint,
            reference,
        } => {
            match require_endpoint(
                &clients.config,
                builder,
                endpoint.as_deref(),
                Some(Driver::Docker),
            ) {
                Ok((endpoint, _)) => remove_local_image(&endpoint, reference).await,
                Err(err) => Err(err),
            }
        }
        Target::FollowUp { what, .. } => return Finished::Skipped(format!("follow-up: {what}")),
    };
    match result {
        Ok(outcome) => Finished::Done(outcome),
        Err(err) => Finished::Failed(err.to_string()),
    }
}

/// Turns a prune's result into the journal's outcome, recording the purge in the provenance
/// store first when it succeeded, so traces treat the mount or builder as clean from now on.
/// The purge names the executor, who ran it, and the incident (or sweep) action `job` it
/// carried out.
fn record_purge_after(
    store: &Arc<Mutex<Store>>,
    job: (i64, i64),
    result: Result<String, RemoteError>,
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
            let recorded =
                store
                    .lock()
                    .expect("store lock")
                    .record_purge(&target, time::now(), &provenance);
            match recorded {
                Ok(_) => Finished::Done(outcome),
                Err(err) => {
                    Finished::Failed(format!("pruned, but the purge was not recorded: {err}"))
                }
            }
        }
        (Ok(outcome), None) => Finished::Done(outcome),
        (Err(err), _) => Finished::Failed(err.to_string()),
    }
}

async fn delete_manifest(
    clients: &Clients,
    registry: &str,
    repository: &str,
    digest: &str,
) -> Result<String, RemoteError> {
    let client = clients.registry(registry).await?;
    let digest = Digest::parse(digest, "digest").map_err(|e| RemoteError(e.to_string()))?;
    // Children of an index go first: after an interruption the index still names them. What
    // a digest is never changes, so recorded facts spare asking the registry; they also name
    // the children of an index that is already gone.
    let children = match clients.known.get(digest.as_str()) {
        Some(known) => known.children.clone(),
        None => match probe(&client, repository, &digest).await? {
            Some(learned) => {
                let children = learned.children.clone();
                clients.learned.lock().expect("learned lock").push(learned);
                children
            }
            None => Vec::new(),
        },
    };
    let mut children_deleted = 0;
    for child in &children {
        if client.delete_manifest(repository, child).await? == DeleteOutcome::Deleted {
            children_deleted += 1;
        }
    }
    let outcome = match client.delete_manifest(repository, &digest).await? {
        DeleteOutcome::Deleted => "deleted",
        DeleteOutcome::AlreadyGone => "already gone",
    };
    Ok(if children_deleted > 0 {
        format!(
            "{outcome}, with {}",
            count(children_deleted, "child manifest", "child manifests")
        )
    } else {
        outcome.to_owned()
    })
}

/// What the registry says a manifest is: a HEAD tells an index apart without fetching every
/// manifest's body, and only an index is fetched for its children. `None` when it is gone.
pub async fn probe(
    client: &RegistryClient,
    repository: &str,
    digest: &Digest,
) -> Result<Option<ManifestFacts>, RemoteError> {
    let Some(head) = client.head_manifest(repository, digest.as_str()).await? else {
        return Ok(None);
    };
    if !is_index_type(&head.media_type) {
        return Ok(Some(ManifestFacts {
            digest: digest.clone(),
            media_type: head.media_type,
            children: Vec::new(),
        }));
    }
    match client.get_manifest(repository, digest.as_str()).await? {
        Some(manifest) => facts(&manifest).map(Some),
        None => Ok(None),
    }
}

async fn connected<'a>(
    slot: &'a mut Option<BuildkitClient>,
    endpoint: &str,
    driver: Driver,
) -> Result<&'a mut BuildkitClient, RemoteError> {
    if slot.is_none() {
        *slot = Some(BuildkitClient::connect(endpoint, driver).await?);
    }
    Ok(slot.as_mut().expect("just connected"))
}

/// Whether a cache-mount record belongs to `mount_id`: by the id newer engines write into the
/// description, else by the target path Docker 20.10 writes.
pub fn mount_record_matches(description: &str, mount_id: &str, targets: &[String]) -> MountMatch {
    if let Some(start) = description.find(" with id \"") {
        let id = description[start + 10..].trim_end_matches('"');
        let id = crate::model::normalize_mount_id(id, "", true);
        return if id == mount_id {
            MountMatch::ById
        } else {
            MountMatch::No
        };
    }
    let Some(rest) = description.strip_prefix("cached mount ") else {
        return MountMatch::No;
    };
    let target = rest.split(" from exec ").next().unwrap_or(rest);
    if targets.iter().any(|t| t == target) {
        MountMatch::ByTarget
    } else {
        MountMatch::No
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountMatch {
    ById,
    ByTarget,
    No,
}

/// The cache-mount records of one mount id, and whether the choice is ambiguous.
pub fn select_mount_records(
    records: &[CacheRecord],
    mount_id: &str,
    targets: &[String],
    shares_target_with: &[String],
) -> (Vec<String>, Option<String>) {
    let mut ids = Vec::new();
    let mut ambiguous = Vec::new();
    for r in records
        .iter()
        .filter(|r| r.record_type == "exec.cachemount")
    {
        match mount_record_matches(&r.description, mount_id, targets) {
            MountMatch::ById => ids.push(r.id.clone()),
            MountMatch::ByTarget if shares_target_with.is_empty() => ids.push(r.id.clone()),
            MountMatch::ByTarget => ambiguous.push(r.id.clone()),
            MountMatch::No => {}
        }
    }
    let note = (!ambiguous.is_empty()).then(|| {
        format!(
            "records {} are at a target also used by mount ids {}: left in place, prune them by id after checking",
            ambiguous.join(", "),
            shares_target_with.join(", ")
        )
    });
    (ids, note)
}

async fn prune_mount(
    clients: &Clients,
    builder: &str,
    endpoint: &str,
    driver: Driver,
    mount_id: &str,
    targets: &[String],
    shares_target_with: &[String],
) -> Result<String, RemoteError> {
    let slot = clients.builder(builder).await;
    let mut slot = slot.lock().await;
    let client = connected(&mut slot, endpoint, driver).await?;
    let records = client.disk_usage().await?;
    let (ids, ambiguity) = select_mount_records(&records, mount_id, targets, shares_target_with);
    let pruned = client.prune_ids(&ids).await?;
    let after = client.disk_usage().await?;
    let survivors: Vec<&str> = after
        .iter()
        .filter(|r| ids.contains(&r.id))
        .map(|r| r.id.as_str())
        .collect();
    if !survivors.is_empty() {
        return Err(RemoteError(format!(
            "builder `{builder}`: mount `{mount_id}` records {} are still present (in use?)",
            survivors.join(", ")
        )));
    }
    if let Some(note) = ambiguity {
        return Err(RemoteError(format!(
            "builder `{builder}`: mount `{mount_id}`: {note}"
        )));
    }
    let bytes: i64 = pruned.iter().map(|r| r.size).sum();
    Ok(format!(
        "pruned {}, {}",
        count(ids.len(), "record", "records"),
        count(usize::try_from(bytes).unwrap_or_default(), "byte", "bytes")
    ))
}

/// The records to prune on a builder: those tainted runs created, those used since the taint
/// time where evidence is missing (mount records aside: the mount actions decide those), or all.
pub fn select_builder_records(
    records: &[CacheRecord],
    record_ids: &[String],
    used_since: Option<i64>,
    full: bool,
) -> Vec<String> {
    let wanted: BTreeSet<&str> = record_ids.iter().map(String::as_str).collect();
    let mut selected: BTreeSet<&str> = records
        .iter()
        .filter(|r| {
            full || wanted.contains(r.id.as_str())
                || used_since.is_some_and(|since| {
                    r.record_type != "exec.cachemount"
                        && r.last_used_at.or(r.created_at).is_some_and(|t| t >= since)
                })
        })
        .map(|r| r.id.as_str())
        .collect();
    // A record built on a selected one holds its content, and keeps it from being pruned: a
    // later step over a tainted layer, or the evidence listing's step over a tainted base.
    loop {
        let before = selected.len();
        for r in records {
            if r.parents.iter().any(|p| selected.contains(p.as_str())) {
                selected.insert(r.id.as_str());
            }
        }
        if selected.len() == before {
            break;
        }
    }
    records
        .iter()
        .filter(|r| selected.contains(r.id.as_str()))
        .map(|r| r.id.clone())
        .collect()
}

async fn prune_builder(
    clients: &Clients,
    builder: &str,
    endpoint: &str,
    driver: Driver,
    record_ids: &[String],
    used_since: Option<i64>,
    full: bool,
) -> Result<String, RemoteError> {
    let slot = clients.builder(builder).await;
    let mut slot = slot.lock().await;
    let client = connected(&mut slot, endpoint, driver).await?;
    let records = client.disk_usage().await?;
    let ids = select_builder_records(&records, record_ids, used_since, full);
    let pruned = client.prune_ids(&ids).await?;
    let after = client.disk_usage().await?;
    let survivors: Vec<&str> = after
        .iter()
        .filter(|r| ids.contains(&r.id))
        .map(|r| r.id.as_str())
        .collect();
    let bytes: i64 = pruned.iter().map(|r| r.size).sum();
    if !survivors.is_empty() {
        return Err(RemoteError(format!(
            "builder `{builder}`: {} of {} survived the prune (kept by records outside the plan, or in use): {}",
            survivors.len(),
            count(ids.len(), "record", "records"),
            survivors.join(", ")
        )));
    }
    let gone = record_ids
        .iter()
        .filter(|id| !records.iter().any(|r| &r.id == *id))
        .count();
    Ok(format!(
        "pruned {}, {}{}",
        count(ids.len(), "record", "records"),
        count(usize::try_from(bytes).unwrap_or_default(), "byte", "bytes"),
        if gone > 0 {
            format!(
                " ({gone} {} already gone)",
                if gone == 1 { "was" } else { "were" }
            )
        } else {
            String::new()
        }
    ))
}

async fn remove_local_image(endpoint: &str, reference: &str) -> Result<String, RemoteError> {
    let engine = Engine::connect(endpoint).await?;
    Ok(if engine.remove_image(reference, true).await? {
        "removed".to_owned()
    } else {
        "not present".to_owned()
    })
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
                    found.push(purge);
                }
                Ok(())
            })
            .unwrap();
        found
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
            Err(RemoteError("cannot connect".into())),
            Some(target.clone()),
        );
        assert!(matches!(failed, Finished::Failed(_)));
        assert!(purges(&store.lock().unwrap()).is_empty());
        let before = time::now();
        let done = record_purge_after(&store, (3, 2), Ok("pruned".into()), Some(target.clone()));
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
