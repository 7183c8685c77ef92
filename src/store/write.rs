//! Writes: one build, a batch of imported lines, a purge, a push attached to its build.
//!
//! History only grows. A run key (pipeline, run id, step) recorded again with other facts is
//! refused and nothing is written; recorded again with the same facts it gains only the events
//! that are new. What is learnt about a run later (a build that overlapped it, a mount use with
//! other options) is appended as an observation, and a pipeline's project and trust ceiling are
//! appended changes: the config's when it names them, else the first a hook brought.

use std::collections::{HashMap, HashSet};

use crate::store::db::{OptionalExtension, Transaction, Value, params};
use serde::Serialize;

use super::chain::{EntryKind, EventFacts, NewRun, Ref, RunFacts, Target};
use super::collector::Receipt;
use super::{Store, StoreError, sql_error};
use crate::config::Config;
use crate::ingest::progress::{Mode, StepHit};
use crate::model::{
    Artifact, Backend, BuilderInfo, BuilderRecord, DEFAULT_PRUNE_SKEW, Digest, ImageRef, MountUse,
    PipelineInfo, PurgeClaim, PurgeMethod, PurgeProvenance, PurgeTarget, RunRecord,
};
use crate::report::escape::Quoted;
use crate::time::{self, Micros};

/// Event kinds as stored. Reads carry the run's finish time, writes its start time.
pub(crate) mod kind {
    pub const IMPORTED: &str = "imported";
    pub const EXPORTED: &str = "exported";
    pub const PRODUCED: &str = "produced";
    pub const USED_BASE: &str = "used_base";
    pub const READ_MOUNT: &str = "read_mount";
    pub const WROTE_MOUNT: &str = "wrote_mount";
    pub const RAN_ON: &str = "ran_on";
    pub const CREATED_RECORD: &str = "created_record";
    pub const REUSED_RECORD: &str = "reused_record";
}

/// Where an event came from, as stored.
pub(crate) mod source {
    /// `record`, `wrap` or `import`.
    pub const HOOK: &str = "hook";
    /// `collect`, from the builder's build history.
    pub const BUILD_HISTORY: &str = "build-history";
}

/// One line of an import: the same units `record` and `wrap` store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportItem {
    Pipeline(PipelineInfo),
    Builder(BuilderInfo),
    Run(Box<RunRecord>),
    /// A purge line. Whatever provenance it claims is kept as a claim: the store records it
    /// as `imported`, by whoever imports it.
    Purge {
        target: PurgeTarget,
        at: Micros,
        source: String,
        forced: bool,
        reason: Option<String>,
        claimed: PurgeClaim,
    },
}

/// What storing one run did.
#[derive(Debug, Clone, Serialize)]
pub struct RecordOutcome {
    /// The run's store id.
    pub run: i64,
    /// False when the run was already recorded (its new events were added to it).
    pub created: bool,
    /// Events newly written.
    pub events: usize,
    /// The trust level the run is recorded at.
    pub trust_level: Option<String>,
    /// What the caller should warn about: a level above the pipeline's ceiling, a project a
    /// hook cannot change.
    pub warnings: Vec<String>,
}

/// What storing a batch of imported lines did.
#[derive(Debug, Clone, Default)]
pub struct ImportOutcome {
    /// Events newly written.
    pub events: usize,
    /// Warnings, each naming its line.
    pub warnings: Vec<String>,
}

/// Why a write did not happen.
#[derive(Debug)]
pub(super) enum WriteError {
    Sql(crate::store::db::DbError),
    /// The input contradicts the store or is not storable: the message says how.
    Refused(String),
    /// The run is recorded with other facts; the message names them, the store's included.
    Conflict(String),
}

impl From<crate::store::db::DbError> for WriteError {
    fn from(err: crate::store::db::DbError) -> Self {
        Self::Sql(err)
    }
}

pub(super) type WriteResult<T> = Result<T, WriteError>;

/// A pipeline's id with its current project and trust ceiling.
#[derive(Debug, Clone)]
pub(super) struct PipelineRow {
    pub(super) id: i64,
    pub(super) project: Option<String>,
    pub(super) ceiling: Option<String>,
}

/// The maps of an [`IdCache`]: keyed by recorded names, hashed with a per-process seed.
pub(super) type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Ids already looked up in this writer, so a batch does not re-query them.
///
/// Builders, artifacts, mounts and records are never deleted and their identities never
/// change, so these entries stay true across transactions; what an upsert would still change
/// (an earlier first sighting, a later use) is kept beside the id and written when it moves.
/// Pipelines (whose project and ceiling other writers may change) and the chain's tail hold
/// for one transaction only: [`IdCache::next_transaction`].
#[derive(Default)]
pub(super) struct IdCache {
    pub(super) pipelines: Map<String, PipelineRow>,
    pub(super) builders: Map<String, i64>,
    /// Id and first sighting.
    pub(super) artifacts: Map<(Backend, String, String, String), (i64, Micros)>,
    /// First and last sighting of a tag on an artifact.
    pub(super) tags: Map<(i64, String), (Micros, Micros)>,
    pub(super) mounts: Map<(i64, String, String), i64>,
    pub(super) records: Map<(i64, String), StoredRecord>,
    /// For builder records (by row id) looked at: whether only a run whose record evidence is
    /// not believed has described it (`record_descriptions`).
    pub(super) described_by_doubted: Map<i64, bool>,
    /// Whether the store holds any record only doubted runs have described, once asked (and
    /// set when this process adds one): while it holds none, no record needs looking up.
    pub(super) doubted_words_held: Option<bool>,
    /// The lowest builder record id this process added.
    pub(super) first_added: Option<i64>,
    /// The run chain's last entry, once this transaction has appended to it.
    pub(super) chain: Option<super::chain::Tail>,
    /// While set, pipeline changes are collected here, for the caller to write, instead of
    /// inserted one by one.
    pub(super) changes: Option<Vec<PipelineChange>>,
    /// Whether this connection's role may change a pipeline's project or ceiling once set:
    /// always on SQLite; on PostgreSQL the owner and a responder, not a hook role. Asked once.
    pub(super) changes_pipelines: Option<bool>,
    /// While set, the later uses of records and sightings of tags are gathered here and
    /// written once each when the transaction ends ([`Held::write`]), not once a run.
    held: Option<Held>,
    /// The lines are a CI job's upload (`import --trust-level`): a run the store already
    /// holds is repeated as it is or refused.
    pub(super) upload: bool,
    /// While an upload repeats a run the store holds: what the repeat would change (an
    /// observation, a build ref, a truncation, and in rows other runs share a tag's sightings,
    /// an artifact's first sighting, a builder record's use), which it must not.
    repeat_gains: Option<Vec<&'static str>>,
}

impl IdCache {
    /// Notes what an upload's repeat of a stored run would change ([`IdCache::repeat_gains`]),
    /// when one is being written.
    fn gain(&mut self, what: &'static str) {
        if let Some(gains) = &mut self.repeat_gains
            && !gains.contains(&what)
        {
            gains.push(what);
        }
    }
}

/// What later sightings change in rows an import's transaction already holds: a record's last
/// use and size, and a tag's first and last sighting. Nothing the transaction writes reads
/// them, and each moves one way (the latest use, the last size given, the widest span), so
/// one write of where they end gives the rows every write one a sighting would have.
#[derive(Default)]
struct Held {
    /// The records whose cached row ([`IdCache::records`]) is ahead of the stored one.
    records: HashSet<(i64, String), foldhash::fast::RandomState>,
    /// First and last sighting of a tag on an artifact, over this transaction.
    tags: Map<(i64, String), (Micros, Micros)>,
}

impl Held {
    /// Writes what was gathered, in `tx`, from `cache`'s rows.
    fn write(self, tx: &Transaction<'_>, cache: &IdCache) -> crate::store::db::DbResult<()> {
        let mut records: Vec<&StoredRecord> = self
            .records
            .iter()
            .filter_map(|key| cache.records.get(key))
            .collect();
        records.sort_unstable_by_key(|record| record.id);
        for record in records {
            tx.prepare_cached(
                "UPDATE builder_records SET last_used_at = ?2, size = ?3 WHERE id = ?1",
            )?
            .execute(params![record.id, record.last_used_at, record.size])?;
        }
        let mut tags: Vec<_> = self.tags.into_iter().collect();
        tags.sort_unstable();
        for ((artifact, tag), (first, last)) in tags {
            upsert_tag(tx, artifact, &tag, (first, last))?;
        }
        Ok(())
    }
}

/// A pipeline change to append to `pipeline_changes`.
#[derive(Debug, Clone)]
pub(super) struct PipelineChange {
    pub(super) pipeline: i64,
    pub(super) field: &'static str,
    pub(super) value: String,
    pub(super) source: &'static str,
    pub(super) at: Micros,
}

impl IdCache {
    /// Forgets what holds for one transaction only, and empties each map that holds more
    /// than `kept` entries.
    fn next_transaction(&mut self, kept: usize) {
        self.pipelines.clear();
        self.chain = None;
        self.changes = None;
        fn bound<K, V>(map: &mut Map<K, V>, kept: usize) {
            if map.len() > kept {
                *map = Map::default();
            }
        }
        bound(&mut self.builders, kept);
        bound(&mut self.artifacts, kept);
        bound(&mut self.tags, kept);
        bound(&mut self.mounts, kept);
        bound(&mut self.records, kept);
    }
}

/// How many entries each of an import's maps keeps from one batch to the next before it is
/// emptied: a year of history names millions of artifacts and records, most of them once,
/// and an entry only saves a lookup the store answers anyway.
const IMPORT_KEPT: usize = 1 << 18;

/// What an import has learnt of the store's rows, kept from one batch to the next.
pub struct ImportCache {
    ids: IdCache,
    kept: usize,
    /// The lines are a CI job's upload ([`ImportCache::upload`]).
    upload: bool,
}

impl Default for ImportCache {
    fn default() -> Self {
        Self::keeping(IMPORT_KEPT)
    }
}

impl ImportCache {
    /// A cache whose maps keep at most `kept` entries each from one batch to the next.
    fn keeping(kept: usize) -> Self {
        Self {
            ids: IdCache::default(),
            kept,
            upload: false,
        }
    }

    /// For a CI job's upload (`import --trust-level`): a run the store already holds may be
    /// repeated (the same file imported twice adds nothing), never added to. The job that
    /// wrote the file ran the code it built, which could otherwise give another run's record
    /// (another pipeline's, or an earlier run's of its own) writes it never made, dated at
    /// that run's times, and keep them off its own.
    pub fn upload() -> Self {
        Self {
            upload: true,
            ..Self::default()
        }
    }
}

impl Store {
    /// Stores one build. Recording the same (pipeline, run, step) again with the same facts
    /// adds what is new and never duplicates a run or an event; with other facts it is refused
    /// (`StoreError::Input`, naming the fields) and nothing is written. `config` gives the
    /// trust levels and the `[[pipeline]]` entries.
    pub fn record_run(
        &mut self,
        record: &RunRecord,
        config: &Config,
    ) -> Result<RecordOutcome, StoreError> {
        self.record_run_with(record, config, None, None)
    }

    /// [`Store::record_run`], with the collector's receipt for the run kept and chained in
    /// the same transaction when the run has none yet.
    pub(super) fn record_run_with(
        &mut self,
        record: &RunRecord,
        config: &Config,
        receipt: Option<&Receipt>,
        steps: Option<(Mode, &[StepHit])>,
    ) -> Result<RecordOutcome, StoreError> {
        let path = self.path.clone();
        let fail = |err: WriteError| match err {
            WriteError::Refused(message) => StoreError::Input(message),
            WriteError::Conflict(message) => StoreError::Conflict(message),
            WriteError::Sql(err) => sql_error(&path, err),
        };
        let tx = self.conn.transaction().map_err(|e| sql_error(&path, e))?;
        let mut cache = IdCache::default();
        let now = time::now();
        let outcome = insert_run(
            &tx,
            &mut cache,
            config,
            (record, source::HOOK),
            now,
            receipt,
        )
        .map_err(fail)?;
        if let Some(builder) = &record.builder
            && record.records.is_some()
        {
            mark_overlaps(&tx, outcome.run, &builder.name, record, now)
                .map_err(|e| fail(e.into()))?;
        }
        if let Some((mode, hits)) = steps {
            super::steps::insert_steps(&tx, outcome.run, hits, mode, record.finished_at)
                .map_err(|e| sql_error(&path, e))?;
        }
        tx.commit().map_err(|e| sql_error(&path, e))?;
        Ok(outcome)
    }

    /// Stores a batch of imported lines in one transaction: all or nothing.
    /// `first_line` numbers the batch's first item for error messages.
    pub fn import_batch(
        &mut self,
        items: &[ImportItem],
        first_line: usize,
        config: &Config,
    ) -> Result<ImportOutcome, StoreError> {
        self.import_batch_cached(items, first_line, config, &mut ImportCache::default())
    }

    /// [`Store::import_batch`], with what earlier batches learnt of the store's rows. A batch
    /// that fails leaves `known` empty: its rows were rolled back.
    pub fn import_batch_cached(
        &mut self,
        items: &[ImportItem],
        first_line: usize,
        config: &Config,
        known: &mut ImportCache,
    ) -> Result<ImportOutcome, StoreError> {
        known.ids.next_transaction(known.kept);
        known.ids.upload = known.upload;
        let result = self.import_batch_with(items, first_line, config, &mut known.ids);
        if result.is_err() {
            known.ids = IdCache::default();
        }
        result
    }

    fn import_batch_with(
        &mut self,
        items: &[ImportItem],
        first_line: usize,
        config: &Config,
        cache: &mut IdCache,
    ) -> Result<ImportOutcome, StoreError> {
        let path = self.path.clone();
        let tx = self.conn.transaction().map_err(|e| sql_error(&path, e))?;
        let now = time::now();
        let at_line = |line: usize, err: WriteError| match err {
            WriteError::Refused(msg) | WriteError::Conflict(msg) => {
                StoreError::Input(format!("line {line}: {msg}"))
            }
            WriteError::Sql(crate::store::db::DbError::Value(msg)) => {
                StoreError::Input(format!("line {line}: {msg}"))
            }
            WriteError::Sql(err) => StoreError::Sqlite {
                path: path.clone(),
                source: err,
            },
        };
        if tx.engine() == crate::store::db::Engine::Postgres {
            let outcome =
                super::pg_import::import_batch(&tx, cache, config, items, first_line, now)
                    .map_err(|(line, err)| at_line(line, err))?;
            tx.commit().map_err(|e| sql_error(&path, e))?;
            return Ok(outcome);
        }
        let pages = super::pages::defer(&tx).map_err(|e| sql_error(&path, e))?;
        let mut outcome = ImportOutcome::default();
        let mut importer = None;
        // An upload's repeat of a run is checked against the rows as they stand: its rows are
        // written as they come (an upload is one job's few lines).
        cache.held = (!cache.upload).then(Held::default);
        for (i, item) in items.iter().enumerate() {
            let line = first_line + i;
            let (events, warnings) = import_item(&tx, cache, config, item, now, &mut importer)
                .map_err(|err| at_line(line, err))?;
            outcome.events += events;
            outcome
                .warnings
                .extend(warnings.into_iter().map(|w| format!("line {line}: {w}")));
        }
        if let Some(held) = cache.held.take() {
            held.write(&tx, cache).map_err(|e| sql_error(&path, e))?;
        }
        super::pages::finish(&tx, pages).map_err(|e| sql_error(&path, e))?;
        tx.commit().map_err(|e| sql_error(&path, e))?;
        Ok(outcome)
    }

    /// Records a purge or invalidation done outside a run, with who recorded it and how; the
    /// recording time is now. Returns the purge's id.
    pub fn record_purge(
        &mut self,
        target: &PurgeTarget,
        at: Micros,
        provenance: &PurgeProvenance,
    ) -> Result<i64, StoreError> {
        let path = self.path.clone();
        let tx = self.conn.transaction().map_err(|e| sql_error(&path, e))?;
        let mut cache = IdCache::default();
        // Records a prune names that no recorded run created change nothing a trace follows.
        let (id, _) =
            insert_purge(&tx, &mut cache, target, at, provenance, time::now()).map_err(|err| {
                match err {
                    crate::store::db::DbError::Value(msg) => StoreError::NotFound(msg),
                    err => sql_error(&path, err),
                }
            })?;
        tx.commit().map_err(|e| sql_error(&path, e))?;
        Ok(id)
    }

    /// Attaches a pushed digest to the latest build of the job (`pipeline`, `run_id`) that
    /// produced `pushed`'s tag: PRODUCED, and EXPORTED when that build exported inline cache
    /// to the tag. Returns the run's `pipeline/run/step`, or `None` when no build matches.
    pub fn attach_push(
        &mut self,
        pipeline: &str,
        run_id: &str,
        pushed: &ImageRef,
        digest: &Digest,
    ) -> Result<Option<String>, StoreError> {
        let path = self.path.clone();
        let tx = self.conn.transaction().map_err(|e| sql_error(&path, e))?;
        let found = attach_push_tx(&tx, pipeline, run_id, pushed, digest)
            .map_err(|e| sql_error(&path, e))?;
        tx.commit().map_err(|e| sql_error(&path, e))?;
        Ok(found)
    }
}

/// Stores one imported line: the events it added and its warnings. `importer` is who imports,
/// looked up at the first purge line.
pub(super) fn import_item(
    tx: &Transaction<'_>,
    cache: &mut IdCache,
    config: &Config,
    item: &ImportItem,
    now: Micros,
    importer: &mut Option<String>,
) -> WriteResult<(usize, Vec<String>)> {
    let mut warnings = Vec::new();
    let events = match item {
        ImportItem::Pipeline(p) => ensure_pipeline(
            tx,
            cache,
            config,
            p,
            p.trust_level.as_deref(),
            now,
            &mut warnings,
        )
        .map(|_| 0)?,
        ImportItem::Builder(b) => upsert_builder(tx, cache, b).map(|_| 0)?,
        ImportItem::Run(run) => {
            let o = insert_run(tx, cache, config, (run, source::HOOK), now, None)?;
            warnings = o.warnings;
            o.events
        }
        ImportItem::Purge {
            target,
            at,
            source,
            forced,
            reason,
            claimed,
        } => {
            let author = importer.get_or_insert_with(crate::actor::actor).clone();
            let provenance = PurgeProvenance {
                method: PurgeMethod::Imported,
                author,
                forced: *forced,
                reason: reason.clone(),
                source: source.clone(),
                action: None,
                claimed: (*claimed != PurgeClaim::default()).then(|| claimed.clone()),
            };
            let (_, unknown) = insert_purge(tx, cache, target, *at, &provenance, now)?;
            if let Some(warning) = unknown_records_warning(target, &unknown) {
                warnings.push(warning);
            }
            1
        }
    };
    Ok((events, warnings))
}

fn attach_push_tx(
    tx: &Transaction<'_>,
    pipeline: &str,
    run_id: &str,
    pushed: &ImageRef,
    digest: &Digest,
) -> crate::store::db::DbResult<Option<String>> {
    let tag = pushed.tag.clone().unwrap_or_else(|| "latest".to_owned());
    let run = tx
        .query_row(
            "SELECT r.id, r.started_at, r.step FROM runs r
             JOIN pipelines p ON p.id = r.pipeline_id
             JOIN events e ON e.run_id = r.id AND e.kind = 'produced'
             JOIN artifacts a ON a.id = e.target
             WHERE p.name = ?1 AND r.run_key = ?2 AND a.backend = 'registry'
               AND a.locator = ?3 AND a.digest = '' AND a.key = ?4
             ORDER BY r.started_at DESC, r.id DESC LIMIT 1",
            params![pipeline, run_id, pushed.locator(), tag],
            |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, String>(2)?,
                ))
            },
        )
        .optional()?;
    let Some((run, started_at, step)) = run else {
        return Ok(None);
    };
    let inline: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM events e JOIN artifacts a ON a.id = e.target
         WHERE e.run_id = ?1 AND e.kind = 'exported' AND a.backend = 'registry'
           AND a.locator = ?2 AND a.digest = '' AND a.key = ?3)",
        params![run, pushed.locator(), tag],
        |row| row.get(0),
    )?;
    let mut cache = IdCache::default();
    let artifact = Artifact {
        backend: Backend::Registry,
        locator: pushed.locator(),
        digest: Some(digest.clone()),
        key: String::new(),
        tag: Some(tag),
    };
    let now = time::now();
    let id = upsert_artifact(tx, &mut cache, &artifact, now)?;
    let mut added = insert_event(
        tx,
        run,
        (kind::PRODUCED, source::HOOK),
        id,
        started_at,
        None,
        now,
    )?;
    if inline {
        added |= insert_event(
            tx,
            run,
            (kind::EXPORTED, source::HOOK),
            id,
            started_at,
            None,
            now,
        )?;
    }
    if added {
        super::chain::append(tx, &mut cache.chain, (run, false), EntryKind::Events, now)?;
    }
    Ok(Some(step))
}

/// Whether the connection's role may change a pipeline's project or ceiling once set. On
/// PostgreSQL a role that may not update `pipeline_changes` (a hook role) adds only a
/// pipeline's first ones: the store refuses the rest (schema/postgres/0006).
fn changes_pipelines(
    tx: &Transaction<'_>,
    cache: &mut IdCache,
) -> crate::store::db::DbResult<bool> {
    if let Some(may) = cache.changes_pipelines {
        return Ok(may);
    }
    let may = match tx.engine() {
        crate::store::db::Engine::Sqlite => true,
        crate::store::db::Engine::Postgres => tx.query_row(
            "SELECT has_table_privilege('pipeline_changes', 'UPDATE')",
            [],
            |row| row.get(0),
        )?,
    };
    cache.changes_pipelines = Some(may);
    Ok(may)
}

/// The stored pipeline of this name, if any.
fn stored_pipeline(
    tx: &Transaction<'_>,
    name: &str,
) -> crate::store::db::DbResult<Option<PipelineRow>> {
    tx.prepare_cached("SELECT id, project, trust_level FROM pipeline_current WHERE name = ?1")?
        .query_row([name], |row| {
            Ok(PipelineRow {
                id: row.get(0)?,
                project: row.get(1)?,
                ceiling: row.get(2)?,
            })
        })
        .optional()
}

/// The pipeline's row, created when new. Its project and trust ceiling are the config's when a
/// `[[pipeline]]` entry names them (a difference from the store is appended as a change, with
/// its time), else the first a hook brought; `hook_level` is the level that first hook asks
/// for. A hook never changes them afterwards. A PostgreSQL hook role records the config's
/// only as a pipeline's first: a later difference is left to a responder, with a warning, and
/// its runs are held to the lower of the stored ceiling and the config's.
pub(super) fn ensure_pipeline(
    tx: &Transaction<'_>,
    cache: &mut IdCache,
    config: &Config,
    pipeline: &PipelineInfo,
    hook_level: Option<&str>,
    now: Micros,
    warnings: &mut Vec<String>,
) -> WriteResult<PipelineRow> {
    let name = &pipeline.name;
    let mut row = match cache.pipelines.get(name) {
        Some(row) => row.clone(),
        // Read first: most runs are of a pipeline the store knows, and an insert that adds
        // nothing still runs the table's statement triggers on PostgreSQL. The writer lock
        // keeps the name from being added between the two.
        None => match stored_pipeline(tx, name)? {
            Some(row) => row,
            None => {
                tx.prepare_cached(
                    "INSERT INTO pipelines (name) VALUES (?1) ON CONFLICT (name) DO NOTHING",
                )?
                .execute([name])?;
                stored_pipeline(tx, name)?.ok_or(crate::store::db::DbError::NoRows)?
            }
        },
    };
    let configured = config.pipeline(name);
    let id = row.id;
    let mut change = |field: &'static str,
                      current: &mut Option<String>,
                      configured: Option<&String>,
                      hook: Option<&str>|
     -> crate::store::db::DbResult<()> {
        let (value, source) = match (configured, hook) {
            (Some(value), _) if current.as_ref() != Some(value) => (value.as_str(), "config"),
            (None, Some(value)) if current.is_none() => (value, "hook"),
            _ => return Ok(()),
        };
        if let Some(kept) = current.clone()
            && !changes_pipelines(tx, cache)?
        {
            let what = match field {
                "trust_level" => "trust ceiling",
                _ => "project",
            };
            warnings.push(format!(
                "pipeline {} keeps its {what} {}: this store role adds provenance only, so \
                 the config's {} is recorded by a responder's write{}",
                Quoted(name),
                Quoted(&kept),
                Quoted(value),
                if field == "trust_level" {
                    "; runs recorded here are held to the lower of the two"
                } else {
                    ""
                }
            ));
            if field == "trust_level" {
                *current = capped_level(config, Some(value), Some(&kept)).0;
            }
            return Ok(());
        }
        match &mut cache.changes {
            Some(changes) => changes.push(PipelineChange {
                pipeline: id,
                field,
                value: value.to_owned(),
                source,
                at: now,
            }),
            None => {
                tx.prepare_cached(
                    "INSERT INTO pipeline_changes (pipeline_id, field, value, source, at) VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![id, field, value, source, now])?;
            }
        }
        *current = Some(value.to_owned());
        Ok(())
    };
    change(
        "project",
        &mut row.project,
        configured.and_then(|c| c.project.as_ref()),
        pipeline.project.as_deref(),
    )?;
    change(
        "trust_level",
        &mut row.ceiling,
        configured.and_then(|c| c.trust_level.as_ref()),
        hook_level,
    )?;
    if let (Some(asked), Some(kept)) = (&pipeline.project, &row.project)
        && asked != kept
    {
        warnings.push(format!(
            "pipeline {} keeps its project {}: a hook cannot change it to {}",
            Quoted(name),
            Quoted(kept),
            Quoted(asked)
        ));
    }
    cache.pipelines.insert(name.clone(), row.clone());
    Ok(row)
}

/// The level a run asking for `asked` is recorded at under `ceiling`: the lower of the two.
/// When either is not a configured level they cannot be compared, and the ceiling wins, unless
/// the run asks for the lowest level, which nothing is below.
pub(super) fn capped_level(
    config: &Config,
    asked: Option<&str>,
    ceiling: Option<&str>,
) -> (Option<String>, bool) {
    match (asked, ceiling) {
        (None, ceiling) => (ceiling.map(str::to_owned), false),
        (Some(asked), None) => (Some(asked.to_owned()), false),
        (Some(asked), Some(ceiling)) => {
            let above = match (config.trust_rank(asked), config.trust_rank(ceiling)) {
                (Some(a), Some(c)) => a > c,
                (Some(0), None) => false,
                _ => asked != ceiling,
            };
            if above {
                (Some(ceiling.to_owned()), true)
            } else {
                (Some(asked.to_owned()), false)
            }
        }
    }
}

/// The statement of an upsert: SQLite's own, or on PostgreSQL the function that does the same
/// with the schema owner's rights (the hook role may not update rows).
fn upsert<'a>(tx: &Transaction<'_>, sqlite: &'a str, postgres: &'a str) -> &'a str {
    match tx.engine() {
        crate::store::db::Engine::Sqlite => sqlite,
        crate::store::db::Engine::Postgres => postgres,
    }
}

/// The builder's id, adding it when new. A builder's driver and endpoint are the first ones
/// recorded: a later line (any job's upload could carry one) fills in what is missing but
/// never changes them, so it cannot point a purge or a verify at another engine.
pub(super) fn upsert_builder(
    tx: &Transaction<'_>,
    cache: &mut IdCache,
    builder: &BuilderInfo,
) -> crate::store::db::DbResult<i64> {
    if builder.driver.is_none()
        && builder.endpoint.is_none()
        && let Some(id) = cache.builders.get(&builder.name)
    {
        return Ok(*id);
    }
    let id = tx
        .prepare_cached(upsert(
            tx,
            "INSERT INTO builders (name, driver, endpoint) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO UPDATE SET
                driver = coalesce(builders.driver, excluded.driver),
                endpoint = coalesce(builders.endpoint, excluded.endpoint)
             RETURNING id",
            "SELECT cw_upsert_builder(?1, ?2, ?3)",
        ))?
        .query_row(
            params![
                builder.name,
                builder.driver.map(|d| d.as_str()),
                builder.endpoint
            ],
            |row| row.get(0),
        )?;
    cache.builders.insert(builder.name.clone(), id);
    Ok(id)
}

pub(super) fn builder_id_by_name(
    tx: &Transaction<'_>,
    cache: &mut IdCache,
    name: &str,
) -> crate::store::db::DbResult<i64> {
    upsert_builder(
        tx,
        cache,
        &BuilderInfo {
            name: name.to_owned(),
            driver: None,
            endpoint: None,
        },
    )
}

/// The identity columns of an artifact: a digestless registry artifact is keyed by its tag.
pub(super) fn artifact_key(artifact: &Artifact) -> (Backend, String, String, String) {
    let digest = artifact
        .digest
        .as_ref()
        .map(|d| d.as_str().to_owned())
        .unwrap_or_default();
    let key = if artifact.backend == Backend::Registry && digest.is_empty() {
        artifact.tag.clone().unwrap_or_else(|| "latest".to_owned())
    } else {
        artifact.key.clone()
    };
    (artifact.backend, artifact.locator.clone(), digest, key)
}

pub(super) fn upsert_artifact(
    tx: &Transaction<'_>,
    cache: &mut IdCache,
    artifact: &Artifact,
    seen: Micros,
) -> crate::store::db::DbResult<i64> {
    let ident = artifact_key(artifact);
    if cache.repeat_gains.is_some() {
        match stored_artifact(tx, &ident)? {
            None => cache.gain("an artifact"),
            Some((_, first_seen)) if seen < first_seen => cache.gain("an earlier sighting"),
            Some((id, _)) => {
                if let Some(tag) = &artifact.tag {
                    let span: Option<(Micros, Micros)> = tx
                        .prepare_cached(
                            "SELECT first_seen, last_seen FROM artifact_tags
                             WHERE artifact_id = ?1 AND tag = ?2",
                        )?
                        .query_row(params![id, tag], |row| Ok((row.get(0)?, row.get(1)?)))
                        .optional()?;
                    if !span.is_some_and(|(first, last)| first <= seen && seen <= last) {
                        cache.gain("a tag sighting");
                    }
                }
            }
        }
    }
    let id = match cache.artifacts.get(&ident) {
        Some(&(id, first_seen)) if first_seen <= seen => id,
        // On SQLite a new row is inserted without reading it back (`RETURNING` costs more
        // than the insert), and a known row's first sighting moves by an update.
        Some(&(id, _)) if tx.sqlite().is_some() => {
            seen_earlier(tx, id, seen)?;
            cache.artifacts.insert(ident, (id, seen));
            id
        }
        None if let Some(conn) = tx.sqlite() => {
            let added = tx
                .prepare_cached(
                    "INSERT INTO artifacts (backend, locator, digest, key, first_seen)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (backend, locator, digest, key) DO NOTHING",
                )?
                .execute(params![ident.0.as_str(), ident.1, ident.2, ident.3, seen])?;
            let (id, first_seen) = if added > 0 {
                (conn.last_insert_rowid(), seen)
            } else {
                let (id, first_seen) =
                    stored_artifact(tx, &ident)?.ok_or(crate::store::db::DbError::NoRows)?;
                if seen < first_seen {
                    seen_earlier(tx, id, seen)?;
                }
                (id, first_seen.min(seen))
            };
            cache.artifacts.insert(ident, (id, first_seen));
            id
        }
        _ => {
            let (id, first_seen) = tx
                .prepare_cached(upsert(
                    tx,
                    "INSERT INTO artifacts (backend, locator, digest, key, first_seen)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (backend, locator, digest, key) DO UPDATE SET
                        first_seen = CASE WHEN excluded.first_seen < artifacts.first_seen
                                     THEN excluded.first_seen ELSE artifacts.first_seen END
                     RETURNING id, first_seen",
                    // The row's first sighting is at most this one's: enough to know when
                    // a later sighting changes nothing.
                    "SELECT cw_upsert_artifact(?1, ?2, ?3, ?4, ?5), ?5",
                ))?
                .query_row(
                    params![ident.0.as_str(), ident.1, ident.2, ident.3, seen],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )?;
            cache.artifacts.insert(ident, (id, first_seen));
            id
        }
    };
    if let Some(tag) = &artifact.tag {
        let key = (id, tag.clone());
        let known = cache.tags.get(&key).copied();
        if !known.is_some_and(|(first, last)| first <= seen && seen <= last) {
            match &mut cache.held {
                Some(held) => {
                    let span = held.tags.entry(key.clone()).or_insert((seen, seen));
                    *span = (span.0.min(seen), span.1.max(seen));
                }
                None => upsert_tag(tx, id, tag, (seen, seen))?,
            }
            // What the row holds now (or will, once held sightings are written) is at least
            // this wide; a sighting inside it changes nothing.
            let (first, last) = known.unwrap_or((seen, seen));
            cache.tags.insert(key, (first.min(seen), last.max(seen)));
        }
    }
    Ok(id)
}

/// The id and first sighting of the artifact `ident` names, if the store holds it.
fn stored_artifact(
    tx: &Transaction<'_>,
    ident: &(Backend, String, String, String),
) -> crate::store::db::DbResult<Option<(i64, Micros)>> {
    tx.prepare_cached(
        "SELECT id, first_seen FROM artifacts
         WHERE backend = ?1 AND locator = ?2 AND digest = ?3 AND key = ?4",
    )?
    .query_row(
        params![ident.0.as_str(), ident.1, ident.2, ident.3],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )
    .optional()
}

/// Moves artifact `id`'s first sighting back to `seen` when that is earlier (SQLite).
fn seen_earlier(tx: &Transaction<'_>, id: i64, seen: Micros) -> crate::store::db::DbResult<()> {
    tx.prepare_cached("UPDATE artifacts SET first_seen = ?2 WHERE id = ?1 AND first_seen > ?2")?
        .execute(params![id, seen])?;
    Ok(())
}

/// Records sightings of `tag` on `artifact` from `first` to `last`: the row's span widens to
/// take them in.
fn upsert_tag(
    tx: &Transaction<'_>,
    artifact: i64,
    tag: &str,
    (first, last): (Micros, Micros),
) -> crate::store::db::DbResult<()> {
    if tx.sqlite().is_none() {
        // PostgreSQL's function takes one sighting (a hook role may not update the row).
        let ends = if first == last {
            &[first][..]
        } else {
            &[first, last]
        };
        for &seen in ends {
            tx.prepare_cached("SELECT cw_upsert_artifact_tag(?1, ?2, ?3)")?
                .execute(params![artifact, tag, seen])?;
        }
        return Ok(());
    }
    tx.prepare_cached(
        "INSERT INTO artifact_tags (artifact_id, tag, first_seen, last_seen) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (artifact_id, tag) DO UPDATE SET
            first_seen = CASE WHEN excluded.first_seen < artifact_tags.first_seen
                         THEN excluded.first_seen ELSE artifact_tags.first_seen END,
            last_seen = CASE WHEN excluded.last_seen > artifact_tags.last_seen
                        THEN excluded.last_seen ELSE artifact_tags.last_seen END",
    )?
    .execute(params![artifact, tag, first, last])?;
    Ok(())
}

fn upsert_mount(
    tx: &Transaction<'_>,
    cache: &mut IdCache,
    builder: i64,
    mount: &MountUse,
) -> crate::store::db::DbResult<i64> {
    let ident = (builder, mount.namespace.clone(), mount.id.clone());
    if let Some(id) = cache.mounts.get(&ident) {
        return Ok(*id);
    }
    let id = tx
        .prepare_cached(upsert(
            tx,
            "INSERT INTO mounts (builder_id, namespace, mount_id) VALUES (?1, ?2, ?3)
             ON CONFLICT (builder_id, mount_id, namespace) DO UPDATE SET namespace = excluded.namespace
             RETURNING id",
            "SELECT cw_upsert_mount(?1, ?2, ?3)",
        ))?
        .query_row(params![builder, mount.namespace, mount.id], |row| row.get(0))?;
    cache.mounts.insert(ident, id);
    Ok(id)
}

/// A builder record's row: its id, its type and description as first recorded, and its last
/// use and size as last written.
#[derive(Debug, Clone)]
pub(super) struct StoredRecord {
    pub(super) id: i64,
    pub(super) record_type: String,
    pub(super) description: String,
    pub(super) last_used_at: Option<Micros>,
    pub(super) size: Option<i64>,
}

impl StoredRecord {
    /// Whether upserting `record` would change nothing in this row.
    pub(super) fn covers(&self, record: &BuilderRecord) -> bool {
        covers_use((self.last_used_at, self.size), record)
    }
}

/// Whether upserting `record` would change nothing in a row that holds this last use and size.
fn covers_use((last_used_at, size): (Option<Micros>, Option<i64>), record: &BuilderRecord) -> bool {
    let used = match (record.last_used_at, last_used_at) {
        (None, _) => true,
        (Some(new), Some(kept)) => new <= kept,
        (Some(_), None) => false,
    };
    used && (record.size.is_none() || record.size == size)
}

/// Upserts a builder record named by a run, `doubted` when the run's record evidence is not
/// believed, and keeps who described it (`record_descriptions`): a doubted run that names a
/// record first in words that carry no taint leaves it of unknown kind, until a believed run
/// describes it.
///
/// `repeat` is the run and event kind when the run was recorded before: a believed run whose
/// event naming the record is an earlier write's gives no words now. Words go in only with the
/// event of the run that says them, which the PostgreSQL store checks for a hook role.
fn upsert_record(
    tx: &Transaction<'_>,
    cache: &mut IdCache,
    builder: i64,
    record: &BuilderRecord,
    doubted: bool,
    repeat: Option<(i64, &str)>,
) -> crate::store::db::DbResult<StoredRecord> {
    let ident = (builder, record.id.clone());
    let doubtful = doubted
        && !crate::graph::record_kind_carries_taint(&record.record_type, &record.description);
    let known = cache.records.contains_key(&ident);
    // On PostgreSQL the upsert does not tell whether it added the row: asked first.
    let absent = if doubtful && !known && tx.sqlite().is_none() {
        let found: Option<i64> = tx
            .prepare_cached(
                "SELECT id FROM builder_records WHERE builder_id = ?1 AND record_id = ?2",
            )?
            .query_row(params![builder, record.id], |row| row.get(0))
            .optional()?;
        found.is_none()
    } else {
        false
    };
    let (stored, added) = upsert_record_row(tx, cache, builder, record)?;
    let first = doubtful && !known && (added || absent);
    if first {
        cache.described_by_doubted.insert(stored.id, true);
    } else if added {
        cache.first_added = Some(cache.first_added.map_or(stored.id, |id| id.min(stored.id)));
    }
    let believed_words = !doubted && !record.record_type.is_empty();
    let words = if first {
        Some(0)
    } else if believed_words
        && described_by_doubted(tx, cache, stored.id)?
        && !named_before(tx, repeat, stored.id)?
    {
        Some(1)
    } else {
        None
    };
    if let Some(believed) = words {
        if cache.repeat_gains.is_some() {
            cache.gain("a builder record's description");
        }
        tx.prepare_cached(
            "INSERT INTO record_descriptions (record, believed, record_type, description)
             VALUES (?1, ?2, ?3, ?4) ON CONFLICT (record, believed) DO NOTHING",
        )?
        .execute(params![
            stored.id,
            believed,
            record.record_type,
            record.description
        ])?;
        cache.described_by_doubted.insert(stored.id, believed == 0);
        if believed == 0 {
            cache.doubted_words_held = Some(true);
        }
    }
    Ok(stored)
}

/// Whether a run recorded before already named the record with an event of this kind.
fn named_before(
    tx: &Transaction<'_>,
    repeat: Option<(i64, &str)>,
    record: i64,
) -> crate::store::db::DbResult<bool> {
    let Some((run, kind)) = repeat else {
        return Ok(false);
    };
    let found: Option<i64> = tx
        .prepare_cached("SELECT 1 FROM events WHERE run_id = ?1 AND kind = ?2 AND target = ?3")?
        .query_row(params![run, kind, record], |row| row.get(0))
        .optional()?;
    Ok(found.is_some())
}

/// Whether only a run whose record evidence is not believed has described the record.
fn described_by_doubted(
    tx: &Transaction<'_>,
    cache: &mut IdCache,
    record: i64,
) -> crate::store::db::DbResult<bool> {
    if let Some(&doubted) = cache.described_by_doubted.get(&record) {
        return Ok(doubted);
    }
    // A record added since this process added its first was added by it (or by a writer
    // beside it, whose doubted words are missed: the record keeps no believed words, and
    // carries taint), and is doubted only where it is marked so above.
    if cache.first_added.is_some_and(|first| record >= first) || !doubted_words_held(tx, cache)? {
        return Ok(false);
    }
    let most: Option<i64> = tx
        .prepare_cached("SELECT max(believed) FROM record_descriptions WHERE record = ?1")?
        .query_row([record], |row| row.get(0))?;
    let doubted = most == Some(0);
    cache.described_by_doubted.insert(record, doubted);
    Ok(doubted)
}

/// Whether the store holds any record only doubted runs have described: one row or none.
pub(super) const DOUBTED_WORDS_HELD: &str =
    "SELECT count(*) FROM (SELECT 1 FROM record_descriptions WHERE believed = 0 LIMIT 1) AS x";

/// Whether the store holds any record only doubted runs have described (see
/// [`IdCache::doubted_words_held`]). A row another writer adds meanwhile is missed: the record
/// then keeps no believed words, and carries taint.
pub(super) fn doubted_words_held(
    tx: &Transaction<'_>,
    cache: &mut IdCache,
) -> crate::store::db::DbResult<bool> {
    if let Some(held) = cache.doubted_words_held {
        return Ok(held);
    }
    let held: i64 = tx
        .prepare_cached(DOUBTED_WORDS_HELD)?
        .query_row([], |row| row.get(0))?;
    cache.doubted_words_held = Some(held > 0);
    Ok(held > 0)
}

/// Upserts a builder record's row; says whether this call added it (where that is known
/// without asking: SQLite's insert).
fn upsert_record_row(
    tx: &Transaction<'_>,
    cache: &mut IdCache,
    builder: i64,
    record: &BuilderRecord,
) -> crate::store::db::DbResult<(StoredRecord, bool)> {
    let ident = (builder, record.id.clone());
    if cache.repeat_gains.is_some() {
        let stored: Option<(Option<Micros>, Option<i64>)> = tx
            .prepare_cached(
                "SELECT last_used_at, size FROM builder_records
                 WHERE builder_id = ?1 AND record_id = ?2",
            )?
            .query_row(params![builder, record.id], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .optional()?;
        if !stored.is_some_and(|stored| covers_use(stored, record)) {
            cache.gain("a builder record's use");
        }
    }
    if let Some(stored) = cache.records.get_mut(&ident) {
        if stored.covers(record) {
            return Ok((stored.clone(), false));
        }
        // The row as the upsert below would leave it, written when the transaction ends.
        if let Some(held) = &mut cache.held {
            stored.last_used_at = match (record.last_used_at, stored.last_used_at) {
                (Some(new), Some(kept)) => Some(new.max(kept)),
                (new, kept) => new.or(kept),
            };
            stored.size = record.size.or(stored.size);
            let stored = stored.clone();
            held.records.insert(ident);
            return Ok((stored, false));
        }
    }
    let values = params![
        builder,
        record.id,
        record.record_type,
        record.description,
        record.created_at,
        record.last_used_at,
        record.size
    ];
    let read = |row: &crate::store::db::Row<'_>| {
        Ok(StoredRecord {
            id: row.get(0)?,
            record_type: row.get(1)?,
            description: row.get(2)?,
            last_used_at: row.get(3)?,
            size: row.get(4)?,
        })
    };
    // On SQLite a new row is inserted without reading it back: it holds what was given.
    if let Some(conn) = tx.sqlite() {
        let added = tx
            .prepare_cached(
                "INSERT INTO builder_records
                    (builder_id, record_id, record_type, description, created_at, last_used_at, size)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (builder_id, record_id) DO NOTHING",
            )?
            .execute(values)?;
        if added > 0 {
            let stored = StoredRecord {
                id: conn.last_insert_rowid(),
                record_type: record.record_type.clone(),
                description: record.description.clone(),
                last_used_at: record.last_used_at,
                size: record.size,
            };
            cache.records.insert(ident, stored.clone());
            return Ok((stored, true));
        }
    }
    let stored = match tx.engine() {
        crate::store::db::Engine::Sqlite => tx
            .prepare_cached(
                "INSERT INTO builder_records
                    (builder_id, record_id, record_type, description, created_at, last_used_at, size)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (builder_id, record_id) DO UPDATE SET
                    last_used_at = CASE
                        WHEN excluded.last_used_at IS NULL THEN builder_records.last_used_at
                        WHEN builder_records.last_used_at IS NULL THEN excluded.last_used_at
                        WHEN excluded.last_used_at > builder_records.last_used_at
                            THEN excluded.last_used_at
                        ELSE builder_records.last_used_at END,
                    size = coalesce(excluded.size, builder_records.size)
                 RETURNING id, record_type, description, last_used_at, size",
            )?
            .query_row(values, read)?,
        // The function returns the id only: the row as it now stands is read after it, in
        // the same transaction.
        crate::store::db::Engine::Postgres => {
            let id: i64 = tx
                .prepare_cached("SELECT cw_upsert_builder_record(?1, ?2, ?3, ?4, ?5, ?6, ?7)")?
                .query_row(values, |row| row.get(0))?;
            tx.prepare_cached(
                "SELECT id, record_type, description, last_used_at, size
                 FROM builder_records WHERE id = ?1",
            )?
            .query_row([id], read)?
        }
    };
    cache.records.insert(ident, stored.clone());
    Ok((stored, false))
}

/// Inserts an event once; returns whether anything was written. An event already recorded is
/// never changed: a mount use re-recorded with options the event's detail lacks appends the
/// union of every use seen to `event_details`.
pub(super) fn insert_event(
    tx: &Transaction<'_>,
    run: i64,
    (kind, source): (&str, &str),
    target: i64,
    at: Micros,
    detail: Option<&str>,
    now: Micros,
) -> crate::store::db::DbResult<bool> {
    insert_event_id(tx, run, (kind, source), target, at, detail, now)
        .map(|added| added != Added::Nothing)
}

/// What [`insert_event_id`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Added {
    /// A new event, with its id.
    Event(i64),
    /// A mount use's new options, appended to the event's details.
    Detail,
    Nothing,
}

/// [`insert_event`], saying what it wrote.
fn insert_event_id(
    tx: &Transaction<'_>,
    run: i64,
    (kind, source): (&str, &str),
    target: i64,
    at: Micros,
    detail: Option<&str>,
    now: Micros,
) -> crate::store::db::DbResult<Added> {
    let values = params![run, kind, target, at, detail, source];
    let inserted: Option<i64> = match tx.sqlite() {
        // The id of the row this statement inserted (a trigger's inserts do not count).
        Some(conn) => {
            let added = tx
                .prepare_cached(
                    "INSERT INTO events (run_id, kind, target, at, detail, source)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (run_id, kind, target) DO NOTHING",
                )?
                .execute(values)?;
            (added > 0).then(|| conn.last_insert_rowid())
        }
        // Only an event not there is made: a row `ON CONFLICT` skips has still drawn an id
        // (see `insert_run`).
        None => tx
            .prepare_cached(
                "INSERT INTO events (run_id, kind, target, at, detail, source)
                 SELECT ?1, ?2, ?3, ?4, ?5, ?6
                 WHERE NOT EXISTS (SELECT 1 FROM events
                                   WHERE run_id = ?1 AND kind = ?2 AND target = ?3)
                 ON CONFLICT (run_id, kind, target) DO NOTHING RETURNING id",
            )?
            .query_row(values, |row| row.get(0))
            .optional()?,
    };
    if let Some(id) = inserted {
        return Ok(Added::Event(id));
    }
    let Some(detail) = detail else {
        return Ok(Added::Nothing);
    };
    let (event, current): (i64, Option<String>) = tx
        .prepare_cached(
            "SELECT e.id, coalesce((SELECT d.detail FROM event_details d WHERE d.event_id = e.id
                                    ORDER BY d.id DESC LIMIT 1), e.detail)
             FROM events e WHERE e.run_id = ?1 AND e.kind = ?2 AND e.target = ?3",
        )?
        .query_row(params![run, kind, target], |row| row.try_into())?;
    if current.as_deref() == Some(detail) {
        return Ok(Added::Nothing);
    }
    let mut uses: Vec<MountUse> = current
        .as_deref()
        .and_then(|d| serde_json::from_str(d).ok())
        .unwrap_or_default();
    let before = uses.len();
    for new in serde_json::from_str::<Vec<MountUse>>(detail).unwrap_or_default() {
        if !uses.contains(&new) {
            uses.push(new);
        }
    }
    if uses.len() == before && current.is_some() {
        return Ok(Added::Nothing);
    }
    let merged = serde_json::to_string(&uses)
        .map_err(|e| crate::store::db::DbError::Value(e.to_string()))?;
    tx.prepare_cached("INSERT INTO event_details (event_id, detail, at) VALUES (?1, ?2, ?3)")?
        .execute(params![event, merged, now])?;
    Ok(Added::Detail)
}

/// Events a statement inserts at most.
const EVENTS_PER_STATEMENT: usize = 16;

/// A new run's events, held to be written together: a statement run for each row costs more
/// than SQLite's work to store the row. A new run holds no events yet, so each distinct
/// `(kind, target)` is a new row, in the order the events came, with the ids the same inserts
/// one a row would have given them.
#[derive(Default)]
struct HeldEvents {
    rows: Vec<(&'static str, i64, Micros, Option<String>)>,
    keys: HashSet<(&'static str, i64), foldhash::fast::RandomState>,
}

/// Writes `held`, [`EVENTS_PER_STATEMENT`] rows a statement, adds what it inserted to
/// `events`, and sets the chain entry's last event. A row that was there already (a run id
/// whose events the store held before its run) leaves the entry to be read back instead.
/// The chain entry lists the rows in the order given, so it stands only where their ids follow
/// that order: SQLite gives a statement's rows their ids in `VALUES` order; on PostgreSQL the
/// rows come back with their ids and are checked, and the entry is read back otherwise. The
/// writer lock keeps any other writer's rows out from between them.
fn write_held(
    tx: &Transaction<'_>,
    run: i64,
    source: &str,
    held: &HeldEvents,
    entry: &mut Option<NewRun>,
    events: &mut usize,
) -> crate::store::db::DbResult<()> {
    // Each size of statement, as SQLite runs it, then with the ids it inserted returned
    // (PostgreSQL has no last inserted id).
    static SQL: std::sync::LazyLock<Vec<[String; 2]>> = std::sync::LazyLock::new(|| {
        (1..=EVENTS_PER_STATEMENT)
            .map(|n| {
                let insert = format!(
                    "INSERT INTO events (run_id, kind, target, at, detail, source) VALUES {}
                     ON CONFLICT (run_id, kind, target) DO NOTHING",
                    vec!["(?, ?, ?, ?, ?, ?)"; n].join(", ")
                );
                let returning = format!("{insert} RETURNING id, kind, target");
                [insert, returning]
            })
            .collect()
    });
    let mut inserted = 0;
    let mut last = None;
    let mut in_order = true;
    for chunk in held.rows.chunks(EVENTS_PER_STATEMENT) {
        let mut values = Vec::with_capacity(chunk.len() * 6);
        for (kind, target, at, detail) in chunk {
            values.extend([
                Value::Int(run),
                Value::Text(kind),
                Value::Int(*target),
                Value::Int(*at),
                detail.as_deref().map_or(Value::Null, Value::Text),
                Value::Text(source),
            ]);
        }
        let [insert, returning] = &SQL[chunk.len() - 1];
        let added = match tx.sqlite() {
            Some(conn) => {
                let added = tx.prepare_cached(insert)?.execute(values)?;
                if added > 0 {
                    last = Some(conn.last_insert_rowid());
                }
                added
            }
            None => {
                let mut statement = tx.prepare_cached(returning)?;
                let mut rows = statement.query(values)?;
                let mut added = 0;
                while let Some(row) = rows.next()? {
                    let (id, kind, target): (i64, String, i64) =
                        (row.get(0)?, row.get(1)?, row.get(2)?);
                    // Row `added` of the chunk, with an id above every earlier one.
                    in_order &= chunk
                        .get(added)
                        .is_some_and(|held| (held.0, held.1) == (kind.as_str(), target))
                        && last.is_none_or(|last| id > last);
                    // Where the order breaks, the entry is read back: no largest is needed.
                    last = Some(id);
                    added += 1;
                }
                added
            }
        };
        inserted += added;
    }
    *events += inserted;
    match (last, &mut *entry) {
        _ if inserted < held.rows.len() || !in_order => *entry = None,
        (Some(last), Some(new)) => new.events_through = last,
        (None, Some(_)) if inserted > 0 => *entry = None,
        _ => {}
    }
    Ok(())
}

/// The facts of a stored run that a record of the same key must repeat.
struct StoredRun {
    id: i64,
    commit: Option<String>,
    git_ref: Option<String>,
    builder: Option<String>,
    started_at: Micros,
    finished_at: Micros,
    status: String,
    has_records: bool,
    trust_level: Option<String>,
    overlapped: bool,
}

/// The fields in which `record` (recorded at `level`) contradicts the stored run, each with
/// the stored and the given value. A fact the record leaves out contradicts nothing.
fn differences(
    stored: &StoredRun,
    record: &RunRecord,
    level: Option<&str>,
    asked: Option<&str>,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut differ = |field: &str, was: Option<String>, given: Option<String>| {
        if given.is_some() && given != was {
            let show = |v: Option<String>| match v {
                Some(v) => Quoted(&v).to_string(),
                None => "none".to_owned(),
            };
            out.push(format!(
                "{field} (recorded {}, given {})",
                show(was),
                show(given)
            ));
        }
    };
    differ("commit", stored.commit.clone(), record.commit.clone());
    differ("git_ref", stored.git_ref.clone(), record.git_ref.clone());
    differ(
        "builder",
        stored.builder.clone(),
        record.builder.as_ref().map(|b| b.name.clone()),
    );
    differ(
        "started_at",
        Some(time::format(stored.started_at)),
        Some(time::format(record.started_at)),
    );
    differ(
        "finished_at",
        Some(time::format(stored.finished_at)),
        Some(time::format(record.finished_at)),
    );
    differ(
        "status",
        Some(stored.status.clone()),
        Some(record.status.as_str().to_owned()),
    );
    // A run asking for what it was recorded at, or for what is capped to it, repeats it.
    if asked.is_some() && asked != stored.trust_level.as_deref() {
        differ(
            "trust_level",
            stored.trust_level.clone(),
            level.map(str::to_owned),
        );
    }
    if record.records.is_some() && !stored.has_records {
        out.push("records (recorded without builder records, given with them)".to_owned());
    }
    out
}

/// A run's mount uses grouped by the stored mount `id` gives each, in first-use order: one
/// mount can be used by several steps with different options, and every use is kept.
pub(super) fn mount_uses<E>(
    mounts: &[MountUse],
    mut id: impl FnMut(&MountUse) -> Result<i64, E>,
) -> Result<Vec<(i64, Vec<&MountUse>)>, E> {
    let mut uses: Vec<(i64, Vec<&MountUse>)> = Vec::new();
    for mount in mounts {
        let id = id(mount)?;
        match uses.iter_mut().find(|(m, _)| *m == id) {
            Some((_, list)) => list.push(mount),
            None => uses.push((id, vec![mount])),
        }
    }
    Ok(uses)
}

/// The chain facts of a run `record` stored new at `now` with trust `level`.
pub(super) fn new_run_facts(record: &RunRecord, level: Option<String>, now: Micros) -> RunFacts {
    RunFacts {
        pipeline: Some(record.pipeline.name.clone()),
        run_key: record.run_id.clone(),
        step: record.step.clone(),
        commit: record.commit.clone(),
        git_ref: record.git_ref.clone(),
        builder: record
            .builder
            .as_ref()
            .map_or(Ref::None, |b| Ref::Named(b.name.clone())),
        started_at: record.started_at,
        finished_at: record.finished_at,
        status: record.status.as_str().to_owned(),
        has_records: i64::from(record.records.is_some()),
        overlapped: i64::from(record.records.as_ref().is_some_and(|r| r.overlapped)),
        recorded_at: now,
        trust_level: level,
    }
}

/// The run's pipeline (created if new) and the trust level the run is recorded at: the level
/// it asks for, capped at the pipeline's ceiling (`true` when it was).
pub(super) fn run_pipeline(
    tx: &Transaction<'_>,
    cache: &mut IdCache,
    config: &Config,
    record: &RunRecord,
    now: Micros,
    warnings: &mut Vec<String>,
) -> WriteResult<(PipelineRow, Option<String>, bool)> {
    let asked = record.trust_level.as_deref();
    let pipeline = ensure_pipeline(tx, cache, config, &record.pipeline, asked, now, warnings)?;
    let (level, capped) = capped_level(config, asked, pipeline.ceiling.as_deref());
    Ok((pipeline, level, capped))
}

/// Refuses a run with cache mounts or builder records but no builder to hold them.
pub(super) fn require_builder(record: &RunRecord, has_builder: bool) -> WriteResult<()> {
    if !has_builder && (!record.mounts.is_empty() || record.records.is_some()) {
        return Err(WriteError::Refused(
            "a run with cache mounts or builder records needs a builder".into(),
        ));
    }
    Ok(())
}

/// The warning for a run recorded at its pipeline's ceiling instead of the level it asked for.
pub(super) fn capped_warning(run: &str, asked: &str, ceiling: &str) -> String {
    format!(
        "run {} asks for trust level {}, above its pipeline's ceiling {}: recorded at {}",
        Quoted(run),
        Quoted(asked),
        Quoted(ceiling),
        Quoted(ceiling)
    )
}

/// The identity of a receipt the store gives a run it does not believe the times of.
const STORE_IDENTITY: &str = "store";

/// `receipt` (or, for a run the collector did not receive, one of the store's, received
/// `now`) with the run's times doubted for `why` besides what it already says.
fn doubt(receipt: Option<&Receipt>, why: String, now: Micros) -> Receipt {
    match receipt {
        Some(r) => Receipt {
            time_suspect: Some(match &r.time_suspect {
                Some(before) => format!("{before}; {why}"),
                None => why,
            }),
            ..r.clone()
        },
        None => Receipt {
            received_at: now,
            identity: STORE_IDENTITY.to_owned(),
            late: false,
            time_suspect: Some(why),
            began_after: None,
        },
    }
}

/// The latest purge, after `finished`, of `builder` or of a mount `run` wrote there.
fn predated_purge(
    tx: &Transaction<'_>,
    run: i64,
    builder: i64,
    finished: Micros,
) -> WriteResult<Option<Micros>> {
    Ok(tx
        .prepare_cached(
            "SELECT max(p.at) FROM purges p
             WHERE p.builder_id = ?1 AND p.at > ?2
               AND (p.kind = 'builder'
                    OR p.mount IN (SELECT e.target FROM events e
                                   WHERE e.run_id = ?3 AND e.kind = 'wrote_mount'))",
        )?
        .query_row(params![builder, finished, run], |row| row.get(0))?)
}

/// The latest purge that a repeat of run `run` predates with the writes it adds (its events
/// from `first` on): of its builder, when it adds a mount write or a record it created, or of a
/// mount it adds a write to.
fn predated_writes(
    tx: &Transaction<'_>,
    run: i64,
    builder: i64,
    finished: Micros,
    first: i64,
) -> WriteResult<Option<Micros>> {
    Ok(tx
        .prepare_cached(
            "SELECT max(p.at) FROM purges p
             WHERE p.builder_id = ?1 AND p.at > ?2
               AND ((p.kind = 'builder'
                     AND EXISTS (SELECT 1 FROM events e
                                 WHERE e.run_id = ?3 AND e.id >= ?4
                                   AND e.kind IN ('wrote_mount', 'created_record')))
                    OR p.mount IN (SELECT e.target FROM events e
                                   WHERE e.run_id = ?3 AND e.id >= ?4 AND e.kind = 'wrote_mount'))",
        )?
        .query_row(params![builder, finished, run, first], |row| row.get(0))?)
}

/// Whether run `run` has a receipt whose times are believed (the collector's, not doubted).
fn has_believed_receipt(tx: &Transaction<'_>, run: i64) -> WriteResult<bool> {
    Ok(tx
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM run_receipts WHERE run_id = ?1 AND time_suspect IS NULL)",
        )?
        .query_row([run], |row| row.get(0))?)
}

pub(super) fn insert_run(
    tx: &Transaction<'_>,
    cache: &mut IdCache,
    config: &Config,
    (record, source): (&RunRecord, &str),
    now: Micros,
    receipt: Option<&Receipt>,
) -> WriteResult<RecordOutcome> {
    let mut warnings = Vec::new();
    let asked = record.trust_level.as_deref();
    let (pipeline, level, capped) = run_pipeline(tx, cache, config, record, now, &mut warnings)?;
    // An untrusted run names its builder only: the first way to reach a builder recorded is
    // kept for good, and purges and verification connect to it.
    let untrusted = level.is_some() && level == config.trust_levels().into_iter().next();
    let builder = match &record.builder {
        Some(b) if untrusted => {
            let mut named = b.clone();
            crate::model::forget_how_to_reach(&mut named);
            Some(upsert_builder(tx, cache, &named)?)
        }
        Some(b) => Some(upsert_builder(tx, cache, b)?),
        None => None,
    };
    require_builder(record, builder.is_some())?;
    let name = crate::model::run_name(&record.pipeline.name, &record.run_id, &record.step);
    let overlapped = record.records.as_ref().is_some_and(|r| r.overlapped);
    let values = params![
        pipeline.id,
        record.run_id,
        record.step,
        record.commit,
        record.git_ref,
        builder,
        record.started_at,
        record.finished_at,
        record.status.as_str(),
        record.records.is_some(),
        overlapped,
        now,
        level
    ];
    /// The run's insert, followed by `$rows` (its values, or a query giving them).
    macro_rules! insert {
        ($($rows:expr),+) => {
            concat!(
                "INSERT INTO runs (pipeline_id, run_key, step, commit_sha, git_ref, builder_id,
                                   started_at, finished_at, status, has_records, overlapped,
                                   recorded_at, trust_level) ",
                $($rows),+
            )
        };
    }
    macro_rules! one_row {
        () => {
            "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
        };
    }
    // On PostgreSQL a new run (the usual case) is inserted first, in one round trip, and a
    // run key already there is read back only when the insert added nothing. The row is
    // made only when the key is not there: a row that `ON CONFLICT` skips has still drawn
    // an id, and a pipeline recording its run again and again would push the runs' ids far
    // past their count (the writer lock keeps the key from being added in between). SQLite
    // reads first: its `RETURNING` costs more than the insert.
    let inserted: Option<i64> = match tx.sqlite() {
        Some(_) => None,
        None => tx
            .prepare_cached(insert!(
                "SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13
                 WHERE NOT EXISTS (SELECT 1 FROM runs
                                   WHERE pipeline_id = ?1 AND run_key = ?2 AND step = ?3)
                 ON CONFLICT (pipeline_id, run_key, step) DO NOTHING RETURNING id"
            ))?
            .query_row(values, |row| row.get(0))
            .optional()?,
    };
    let stored = match inserted {
        Some(_) => None,
        None => tx
            .prepare_cached(
                "SELECT r.id, r.commit_sha, r.git_ref, b.name, r.started_at, r.finished_at,
                        r.status, r.has_records, r.trust_level,
                        (r.overlapped <> 0 OR EXISTS (SELECT 1 FROM run_observations o
                                                 WHERE o.run_id = r.id AND o.kind = 'overlapped'))
                 FROM runs r LEFT JOIN builders b ON b.id = r.builder_id
                 WHERE r.pipeline_id = ?1 AND r.run_key = ?2 AND r.step = ?3",
            )?
            .query_row(params![pipeline.id, record.run_id, record.step], |row| {
                Ok(StoredRun {
                    id: row.get(0)?,
                    commit: row.get(1)?,
                    git_ref: row.get(2)?,
                    builder: row.get(3)?,
                    started_at: row.get(4)?,
                    finished_at: row.get(5)?,
                    status: row.get(6)?,
                    has_records: row.get(7)?,
                    trust_level: row.get(8)?,
                    overlapped: row.get(9)?,
                })
            })
            .optional()?,
    };
    let mut overlap_added = false;
    let (run, created, level) = match (inserted, stored) {
        (_, Some(stored)) => {
            let differ = differences(&stored, record, level.as_deref(), asked);
            if !differ.is_empty() {
                return Err(WriteError::Conflict(format!(
                    "run {} is already recorded with other facts: {}; history is append-only, so nothing was written (record the build under a new run id or step)",
                    Quoted(&name),
                    differ.join(", ")
                )));
            }
            if overlapped && !stored.overlapped {
                tx.prepare_cached(
                    "INSERT INTO run_observations (run_id, kind, by_run, at) VALUES (?1, 'overlapped', NULL, ?2)",
                )?
                .execute(params![stored.id, now])?;
                overlap_added = true;
            }
            (stored.id, false, stored.trust_level)
        }
        (inserted, None) => {
            if capped && let (Some(asked), Some(ceiling)) = (asked, &pipeline.ceiling) {
                warnings.push(capped_warning(&name, asked, ceiling));
            }
            let run = match (inserted, tx.sqlite()) {
                (Some(run), _) => run,
                (None, Some(conn)) => {
                    tx.prepare_cached(insert!(one_row!()))?.execute(values)?;
                    conn.last_insert_rowid()
                }
                // On PostgreSQL an insert that added nothing met a committed row, which the
                // read then sees; should it not, a plain insert adds the run or fails on
                // its key, and nothing of the transaction is kept.
                (None, None) => tx
                    .prepare_cached(insert!(one_row!(), " RETURNING id"))?
                    .query_row(values, |row| row.get(0))?,
            };
            (run, true, level)
        }
    };
    // An upload's repeat of a stored run must change nothing: what it would is noted as it is
    // written, and refused at the end.
    cache.repeat_gains = (!created && cache.upload).then(Vec::new);
    if overlap_added {
        cache.gain("an overlap");
    }
    if let Some(build_ref) = &record.build_ref {
        let added = tx
            .prepare_cached(
                "INSERT INTO run_build_refs (run_id, build_ref, recorded_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (run_id, build_ref) DO NOTHING",
            )?
            .execute(params![run, build_ref, now])?;
        if added > 0 {
            cache.gain("a build ref");
        }
    }
    if record.truncated {
        let added = tx
            .prepare_cached(
                "INSERT INTO run_truncations (run_id, recorded_at) VALUES (?1, ?2)
                 ON CONFLICT (run_id) DO NOTHING",
            )?
            .execute(params![run, now])?;
        if added > 0 {
            cache.gain("a truncation");
        }
    }
    let (start, finish) = (record.started_at, record.finished_at);
    let mut events = 0;
    // A new run's chain entry, built as its rows are written; dropped (and read back from
    // the store instead) when anything but plain new events was written.
    let builder_name = record.builder.as_ref().map(|b| b.name.as_str());
    let mut entry = created.then(|| NewRun {
        run: new_run_facts(record, level.clone(), now),
        events: Vec::new(),
        events_through: 0,
    });
    // A new run's events are held and written a few statements a run (see [`HeldEvents`])
    // until one repeats an event with options of its own.
    let mut held = created.then(HeldEvents::default);
    // The first event a repeat of the run adds: what it claims to have written now.
    let mut first_new: Option<i64> = None;
    let mut add = |tx: &Transaction<'_>,
                   kind: &'static str,
                   (target, named): (i64, &dyn Fn() -> Target),
                   at: Micros,
                   detail: Option<&str>| {
        if let Some(rows) = &mut held {
            if rows.keys.insert((kind, target)) {
                rows.rows
                    .push((kind, target, at, detail.map(str::to_owned)));
                if let Some(new) = &mut entry {
                    new.events.push(EventFacts {
                        kind: kind.to_owned(),
                        target: named(),
                        at,
                        detail: detail.map(str::to_owned),
                    });
                }
                return Ok(());
            }
            // Written now, the repeat would change nothing.
            if detail.is_none() {
                return Ok(());
            }
            // Its options may add to the event's: what is held is written first, and every
            // event from here on one at a time, as they come.
            if let Some(rows) = held.take() {
                write_held(tx, run, source, &rows, &mut entry, &mut events)?;
            }
        }
        let added = insert_event_id(tx, run, (kind, source), target, at, detail, now)?;
        if let Added::Event(id) = added {
            first_new = Some(first_new.map_or(id, |first: i64| first.min(id)));
        }
        match (added, &mut entry) {
            (Added::Nothing, _) => {}
            (Added::Event(id), Some(new)) => {
                new.events.push(EventFacts {
                    kind: kind.to_owned(),
                    target: named(),
                    at,
                    detail: detail.map(str::to_owned),
                });
                new.events_through = id;
            }
            (Added::Detail, Some(_)) => entry = None,
            (Added::Event(_) | Added::Detail, None) => {}
        }
        if added != Added::Nothing {
            events += 1;
        }
        crate::store::db::DbResult::Ok(())
    };
    let on_builder = || Ref::Named(builder_name.unwrap_or_default().to_owned());
    if let Some(builder) = builder {
        let named = || Target::Builder {
            name: builder_name.unwrap_or_default().to_owned(),
        };
        add(tx, kind::RAN_ON, (builder, &named), start, None)?;
    }
    for (list, kind, at) in [
        (&record.imported, kind::IMPORTED, finish),
        (&record.base_images, kind::USED_BASE, finish),
        (&record.exported, kind::EXPORTED, start),
        (&record.produced, kind::PRODUCED, start),
    ] {
        for artifact in list {
            let id = upsert_artifact(tx, cache, artifact, at)?;
            let named = || {
                let (backend, locator, digest, key) = artifact_key(artifact);
                Target::Artifact {
                    backend: backend.as_str().to_owned(),
                    locator,
                    digest,
                    key,
                }
            };
            add(tx, kind, (id, &named), at, None)?;
        }
    }
    if let Some(builder) = builder {
        let uses = mount_uses(&record.mounts, |mount| {
            upsert_mount(tx, cache, builder, mount)
        })?;
        for (id, list) in uses {
            let detail = serde_json::to_string(&list).ok();
            let named = || Target::Mount {
                builder: on_builder(),
                namespace: list[0].namespace.clone(),
                mount_id: list[0].id.clone(),
            };
            add(
                tx,
                kind::READ_MOUNT,
                (id, &named),
                finish,
                detail.as_deref(),
            )?;
            if list.iter().any(|m| !m.readonly) {
                add(
                    tx,
                    kind::WROTE_MOUNT,
                    (id, &named),
                    start,
                    detail.as_deref(),
                )?;
            }
        }
        if let Some(evidence) = &record.records {
            for (list, kind, at) in [
                (&evidence.created, kind::CREATED_RECORD, start),
                (&evidence.reused, kind::REUSED_RECORD, finish),
            ] {
                for r in list {
                    // An untrusted run's word does not move what other runs' records show.
                    let bounded;
                    let r = if untrusted {
                        bounded = r.as_seen_by(finish, kind == kind::REUSED_RECORD);
                        &bounded
                    } else {
                        r
                    };
                    let repeat = (!created).then_some((run, kind));
                    let stored = upsert_record(tx, cache, builder, r, untrusted, repeat)?;
                    let named = || Target::Record {
                        builder: on_builder(),
                        record_id: r.id.clone(),
                        record_type: stored.record_type.clone(),
                        description: stored.description.clone(),
                    };
                    add(tx, kind, (stored.id, &named), at, None)?;
                }
            }
        }
    }
    if let Some(rows) = held.take() {
        write_held(tx, run, source, &rows, &mut entry, &mut events)?;
    }
    // A new run at the lowest trust level (or none) that claims to have finished before a
    // purge the store already held, of its builder or of a mount it wrote, would have that
    // purge clean what it wrote. Recorded after the purge, its times prove nothing: it is kept
    // with a receipt of the store, time-suspect, so no trace lets them hide its writes.
    //
    // A repeat of such a run that adds writes is weighed the same way, by what it adds: sent
    // once before the purge with nothing written, then again with the writes, it would
    // otherwise have the purge clean them.
    let predated = match (untrusted || level.is_none(), builder, first_new) {
        (true, Some(builder), _) if created => predated_purge(tx, run, builder, finish)?,
        (true, Some(builder), Some(first)) => {
            let purge = predated_writes(tx, run, builder, finish, first)?;
            if let Some(purge) = purge
                && has_believed_receipt(tx, run)?
            {
                // Its receipt is kept for good, so it cannot be doubted now: refused. (One
                // that is already doubted needs nothing more.)
                return Err(WriteError::Conflict(format!(
                    "run {} adds writes, yet finished at {}, before a purge at {} the store holds; its receipt is kept for good, so nothing was written (record the build under a new run id or step)",
                    Quoted(&name),
                    time::format(finish),
                    time::format(purge)
                )));
            }
            purge
        }
        _ => None,
    };
    let doubted = predated.map(|purge| {
        let why = format!(
            "finished at {}, before a purge at {} the store held when it was recorded",
            time::format(finish),
            time::format(purge)
        );
        doubt(receipt, why, now)
    });
    let receipt = doubted.as_ref().or(receipt);
    // How the collector received it, kept the first time only; a receipt the run did not
    // have is chained with what the run gained.
    let received = match receipt {
        Some(receipt) => super::collector::insert_receipt(tx, run, receipt)?,
        None => false,
    };
    if let Some(mut gained) = cache.repeat_gains.take() {
        if events > 0 {
            gained.insert(0, "events");
        }
        if !gained.is_empty() {
            return Err(WriteError::Conflict(format!(
                "run {} is already recorded, and this upload adds {} to it: an upload repeats a run the store holds as it is or not at all, so nothing was written (record the build under a new run id or step)",
                Quoted(&name),
                gained.join(" and ")
            )));
        }
    }
    // The run as accepted, or what it gained, joins the tamper-evident chain in this
    // transaction.
    if let Some(new) = entry.filter(|_| !received) {
        super::chain::append_new(tx, &mut cache.chain, run, new, now)?;
    } else if created {
        super::chain::append(tx, &mut cache.chain, (run, received), EntryKind::Run, now)?;
    } else if events > 0 || received {
        super::chain::append(
            tx,
            &mut cache.chain,
            (run, received),
            EntryKind::Events,
            now,
        )?;
    }
    Ok(RecordOutcome {
        run,
        created,
        events,
        trust_level: level,
        warnings,
    })
}

/// Appends an `overlapped` observation to every run with record evidence that overlapped
/// `run` on its builder, and to `run` for each of them: their record snapshots may hold each
/// other's records.
fn mark_overlaps(
    tx: &Transaction<'_>,
    run: i64,
    builder: &str,
    record: &RunRecord,
    now: Micros,
) -> crate::store::db::DbResult<()> {
    let others: Vec<i64> = tx
        .prepare_cached(
            "SELECT id FROM runs
             WHERE id <> ?1 AND has_records = 1
               AND builder_id = (SELECT id FROM builders WHERE name = ?2)
               AND started_at <= ?4 AND finished_at >= ?3",
        )?
        .query_map(
            params![run, builder, record.started_at, record.finished_at],
            |row| row.get(0),
        )?
        .collect::<crate::store::db::DbResult<_>>()?;
    let mut observe = tx.prepare_cached(
        "INSERT INTO run_observations (run_id, kind, by_run, at) VALUES (?1, 'overlapped', ?2, ?3)
         ON CONFLICT (run_id, kind, by_run) DO NOTHING",
    )?;
    for other in others {
        observe.execute(params![other, run, now])?;
        observe.execute(params![run, other, now])?;
    }
    Ok(())
}

/// How many record names a warning shows before it only counts the rest.
const NAMES_SHOWN: usize = 3;

/// The warning for an imported prune that names records the store does not hold: they are
/// taken as not pruned, so the runs that created them, imported after it, stay tainted.
fn unknown_records_warning(target: &PurgeTarget, unknown: &[String]) -> Option<String> {
    let PurgeTarget::Builder { builder, .. } = target else {
        return None;
    };
    if unknown.is_empty() {
        return None;
    }
    let named = crate::report::some_names(unknown.iter().map(|r| r.escape_debug()), NAMES_SHOWN);
    let (count, them) = match unknown.len() {
        1 => ("a record".to_owned(), "it"),
        n => (format!("{n} records"), "them"),
    };
    Some(format!(
        "the prune of builder {} names {count} the store does not hold ({named}): a trace takes {them} as left in place, so runs that created {them}, if imported later, stay tainted (import purges after the runs)",
        Quoted(builder)
    ))
}

/// Stores a purge; gives its id and the names of the records a selective prune named that
/// the store does not hold (on the purged builder), in the order given, each once.
fn insert_purge(
    tx: &Transaction<'_>,
    cache: &mut IdCache,
    target: &PurgeTarget,
    at: Micros,
    provenance: &PurgeProvenance,
    recorded_at: Micros,
) -> crate::store::db::DbResult<(i64, Vec<String>)> {
    let (kind, builder_id, mount, records_only, selective) = match target {
        PurgeTarget::Builder {
            builder,
            records_only,
            selective,
        } => (
            "builder",
            builder_id_by_name(tx, cache, builder)?,
            None,
            *records_only,
            selective.as_ref(),
        ),
        PurgeTarget::Mount {
            builder,
            mount,
            namespace,
        } => {
            let builder_id = builder_id_by_name(tx, cache, builder)?;
            let use_ = MountUse {
                id: mount.clone(),
                namespace: namespace.clone(),
                ..MountUse::default()
            };
            let mount = upsert_mount(tx, cache, builder_id, &use_)?;
            ("mount", builder_id, Some(mount), false, None)
        }
    };
    let claimed = provenance.claimed.as_ref();
    let id: i64 = tx
        .prepare_cached(
            "INSERT INTO purges (kind, builder_id, mount, at, source, method, author, recorded_at,
             forced, reason, incident_id, action_seq, claimed_method, claimed_author,
             claimed_recorded_at, records_only, selective, records_since, records_skew)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18,
                 ?19)
         RETURNING id",
        )?
        .query_row(
            params![
                kind,
                builder_id,
                mount,
                at,
                provenance.source,
                provenance.method.as_str(),
                provenance.author,
                recorded_at,
                provenance.forced,
                provenance.reason,
                provenance.action.map(|a| a.0),
                provenance.action.map(|a| a.1),
                claimed.and_then(|c| c.method.as_deref()),
                claimed.and_then(|c| c.author.as_deref()),
                claimed.and_then(|c| c.recorded_at),
                records_only,
                selective.is_some(),
                selective.and_then(|s| s.since),
                selective.map_or(DEFAULT_PRUNE_SKEW, |s| s.skew),
            ],
            |row| row.get(0),
        )?;
    // The named records this store holds; one it does not hold no recorded run created.
    let mut unknown = Vec::new();
    if let Some(selective) = selective {
        let mut held = tx.prepare_cached(
            "SELECT id FROM builder_records WHERE builder_id = ?1 AND record_id = ?2",
        )?;
        let mut named = tx.prepare_cached(
            "INSERT INTO purge_records (purge_id, record) VALUES (?1, ?2)
             ON CONFLICT DO NOTHING",
        )?;
        let mut seen = HashSet::new();
        for record in &selective.records {
            if !seen.insert(record.as_str()) {
                continue;
            }
            let stored: Option<i64> = held
                .query_row(params![builder_id, record], |row| row.get(0))
                .optional()?;
            match stored {
                Some(stored) => {
                    named.execute(params![id, stored])?;
                }
                None => unknown.push(record.clone()),
            }
        }
    }
    Ok((id, unknown))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::audit::compare::{CompareOptions, compare};
    use crate::audit::finding::Code;
    use crate::model::{RecordEvidence, RunStatus};
    use crate::store::ExportItem;

    const MINUTE: Micros = 60_000_000;

    fn digest(c: char) -> Digest {
        Digest::parse(&format!("sha256:{}", c.to_string().repeat(64)), "test").unwrap()
    }

    fn cache(c: char) -> Artifact {
        Artifact {
            digest: Some(digest(c)),
            ..Artifact::registry(&ImageRef::parse("r.io/web:cache", "test").unwrap())
        }
    }

    fn run(pipeline: &str, run_id: &str, trust: Option<&str>) -> RunRecord {
        RunRecord {
            pipeline: PipelineInfo {
                name: pipeline.to_owned(),
                ..PipelineInfo::default()
            },
            trust_level: trust.map(str::to_owned),
            run_id: run_id.to_owned(),
            step: "Dockerfile".to_owned(),
            commit: Some("c0ffee".to_owned()),
            git_ref: Some("refs/heads/main".to_owned()),
            builder: Some(BuilderInfo {
                name: "ci-1".to_owned(),
                driver: None,
                endpoint: None,
            }),
            started_at: 100 * MINUTE,
            finished_at: 101 * MINUTE,
            status: RunStatus::Succeeded,
            imported: Vec::new(),
            exported: Vec::new(),
            produced: Vec::new(),
            base_images: Vec::new(),
            mounts: Vec::new(),
            truncated: false,
            build_ref: None,
            records: None,
        }
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        (dir, store)
    }

    fn config(text: &str) -> Config {
        Config::parse(text, Path::new("c.toml")).unwrap()
    }

    fn count(store: &Store, table: &str) -> i64 {
        store
            .conn
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |row| {
                row.get(0)
            })
            .unwrap()
    }

    fn exported_runs(store: &Store) -> Vec<RunRecord> {
        let mut runs = Vec::new();
        store
            .export(|item| {
                if let ExportItem::Run(run) = item {
                    runs.push(*run);
                }
                Ok(())
            })
            .unwrap();
        runs
    }

    /// Every packed page of the store: table, page, bytes.
    /// A new store with each run of `items` recorded by itself, as `record` would.
    fn recorded_one_by_one(items: &[ImportItem], config: &Config) -> (tempfile::TempDir, Store) {
        let (dir, mut store) = store();
        for item in items {
            let ImportItem::Run(r) = item else {
                unreachable!()
            };
            store.record_run(r, config).unwrap();
        }
        (dir, store)
    }

    fn pages(store: &Store) -> Vec<(String, i64, Vec<u8>)> {
        let mut pages = Vec::new();
        for (table, column) in [
            ("event_pages", "events"),
            ("artifact_pages", "artifacts"),
            ("record_pages", "records"),
        ] {
            let mut stmt = store
                .conn
                .prepare(&format!("SELECT page, {column} FROM {table} ORDER BY page"))
                .unwrap();
            let rows = stmt
                .query_map([], |row| Ok((table.to_owned(), row.get(0)?, row.get(1)?)))
                .unwrap();
            pages.extend(rows.map(Result::unwrap));
        }
        pages
    }

    /// An import, which packs each batch's rows a page at a time, leaves the same pages as
    /// recording the same runs one by one, whose triggers pack row by row; wherever the
    /// batches end, with records described again, mounts shared, and the chain intact.
    #[test]
    fn imported_batches_pack_pages_as_recorded_runs_do() {
        let hex = |i: usize| char::from(b"0123456789abcdef"[i % 16]);
        let record = |id: String, description: String| BuilderRecord {
            id,
            record_type: "regular".to_owned(),
            description,
            created_at: None,
            last_used_at: None,
            size: None,
        };
        let items: Vec<ImportItem> = (0..90_usize)
            .map(|i| {
                let mut r = run(&format!("p{}", i % 4), &i.to_string(), None);
                r.builder = Some(BuilderInfo {
                    name: format!("ci-{}", i % 3),
                    driver: None,
                    endpoint: None,
                });
                r.imported = vec![cache(hex(i))];
                r.exported = vec![Artifact {
                    digest: Some(digest(hex(i + 1))),
                    ..Artifact::registry(
                        &ImageRef::parse(&format!("r.io/app{}:cache", i % 5), "test").unwrap(),
                    )
                }];
                r.mounts = vec![MountUse {
                    id: format!("/root/.cache/{}", i % 6),
                    readonly: i % 2 == 0,
                    ..MountUse::default()
                }];
                r.records = Some(RecordEvidence {
                    created: vec![record(format!("rec{i}"), format!("RUN step {i} é/ü:🦀"))],
                    reused: vec![record(
                        format!("rec{}", i / 2),
                        "described again".to_owned(),
                    )],
                    overlapped: false,
                });
                ImportItem::Run(Box::new(r))
            })
            .collect();
        let config = Config::default();
        let (_a, mut recorded) = recorded_one_by_one(&items, &config);
        let (_b, mut imported) = store();
        for (i, batch) in items.chunks(7).enumerate() {
            imported.import_batch(batch, 1 + 7 * i, &config).unwrap();
        }
        let packed = pages(&imported);
        assert!(packed.iter().filter(|(t, _, _)| t == "event_pages").count() > 3);
        assert_eq!(packed, pages(&recorded));
        assert_eq!(imported.verify_chain(None).unwrap().broken, None);
        // The triggers are back: a run recorded after an import is packed as it is written.
        let mut last = run("p0", "after", None);
        last.imported = vec![cache('f')];
        for store in [&mut recorded, &mut imported] {
            store.record_run(&last, &config).unwrap();
        }
        assert_eq!(pages(&imported), pages(&recorded));
    }

    /// A new run's events, written together by an import, are the rows and ids recording the
    /// runs one at a time gives: with none, with more than one statement takes, with an
    /// artifact named twice, and with a run line repeated to add events.
    #[test]
    fn an_imports_held_events_are_the_rows_one_a_row_writes() {
        let hex = |i: usize| char::from(b"0123456789abcdef"[i % 16]);
        let mut items: Vec<ImportItem> = Vec::new();
        for i in 0..12_usize {
            let mut r = run(&format!("p{}", i % 2), &i.to_string(), None);
            match i % 4 {
                0 => r.builder = None,
                1 => {
                    r.imported = (0..40)
                        .map(|j| Artifact {
                            digest: Some(digest(hex(j))),
                            ..Artifact::registry(
                                &ImageRef::parse(&format!("r.io/lib{j}:cache"), "test").unwrap(),
                            )
                        })
                        .collect();
                }
                2 => r.imported = vec![cache(hex(i)), cache(hex(i + 1)), cache(hex(i))],
                _ => {
                    r.mounts = vec![
                        MountUse {
                            id: "/root/.cache/pip".to_owned(),
                            readonly: true,
                            ..MountUse::default()
                        },
                        MountUse {
                            id: "/root/.cache/pip".to_owned(),
                            readonly: false,
                            ..MountUse::default()
                        },
                    ];
                }
            }
            items.push(ImportItem::Run(Box::new(r.clone())));
            if i % 3 == 0 {
                r.exported = vec![cache(hex(i + 2))];
                items.push(ImportItem::Run(Box::new(r)));
            }
        }
        let rows = |store: &Store| -> Vec<(i64, i64, String, i64, i64, Option<String>)> {
            let sql = "SELECT id, run_id, kind, target, at, detail FROM events ORDER BY id";
            store.rows(sql, [], |row| row.try_into()).unwrap()
        };
        let chain = |store: &Store| -> Vec<(i64, i64, String, i64)> {
            let sql = "SELECT seq, run_id, kind, events_through FROM run_chain ORDER BY seq";
            store.rows(sql, [], |row| row.try_into()).unwrap()
        };
        let config = Config::default();
        let (_a, recorded) = recorded_one_by_one(&items, &config);
        let (_b, mut imported) = store();
        let mut events = 0;
        for (i, batch) in items.chunks(5).enumerate() {
            events += imported
                .import_batch(batch, 1 + 5 * i, &config)
                .unwrap()
                .events;
        }
        let written = rows(&imported);
        assert!(written.len() > 40 * 3);
        assert_eq!(events, written.len());
        assert_eq!(written, rows(&recorded));
        assert_eq!(chain(&imported), chain(&recorded));
        assert_eq!(pages(&imported), pages(&recorded));
        assert_eq!(imported.verify_chain(None).unwrap().broken, None);
    }

    /// What an import keeps from batch to batch does not hide a change: an artifact seen
    /// earlier in a later batch moves its first sighting, a tag's range widens, and a record
    /// used later or with a size gets them, as recording the runs one by one does.
    #[test]
    fn an_import_cache_still_writes_what_moves() {
        let used = |id: &str, at: Option<Micros>, size: Option<i64>| BuilderRecord {
            id: id.to_owned(),
            record_type: "regular".to_owned(),
            description: "RUN make".to_owned(),
            created_at: None,
            last_used_at: at,
            size,
        };
        let at = |i: i64, reused: BuilderRecord| {
            let mut r = run("p", &i.to_string(), None);
            r.started_at = (200 - 10 * i) * MINUTE;
            r.finished_at = r.started_at + MINUTE;
            r.imported = vec![cache('a')];
            r.records = Some(RecordEvidence {
                created: Vec::new(),
                reused: vec![reused],
                overlapped: false,
            });
            ImportItem::Run(Box::new(r))
        };
        let items = [
            at(1, used("r1", None, None)),
            at(2, used("r1", Some(5), None)),
            at(3, used("r1", Some(3), Some(10))),
            at(4, used("r1", Some(9), Some(12))),
            at(5, used("r1", None, None)),
        ];
        let config = Config::default();
        let facts = |store: &Store| -> (i64, i64, i64, Option<i64>, Option<i64>) {
            let (first, tag_first, tag_last) = store
                .conn
                .query_row(
                    "SELECT a.first_seen, t.first_seen, t.last_seen
                     FROM artifacts a JOIN artifact_tags t ON t.artifact_id = a.id",
                    [],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                )
                .unwrap();
            let (last_used, size) = store
                .conn
                .query_row(
                    "SELECT last_used_at, size FROM builder_records",
                    [],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .unwrap();
            (first, tag_first, tag_last, last_used, size)
        };
        let (_a, recorded) = recorded_one_by_one(&items, &config);
        let expected = facts(&recorded);
        assert_eq!(expected.3, Some(9));
        assert_eq!(expected.4, Some(12));
        // Kept whole, or emptied after every batch, as a long import empties it.
        for mut known in [ImportCache::default(), ImportCache::keeping(0)] {
            let (_b, mut imported) = store();
            for (i, batch) in items.chunks(2).enumerate() {
                imported
                    .import_batch_cached(batch, 1 + 2 * i, &config, &mut known)
                    .unwrap();
            }
            assert_eq!(facts(&imported), expected);
        }
    }

    /// A run the collector received first is chained whole with its receipt (encoding 3,
    /// with the bound on when the run began); a run recorded without it and received later
    /// gets an entry that brings the receipt in; a third sending keeps the first receipt and
    /// adds no entry. The chain verifies throughout, and a receipt edited after is caught,
    /// its bound too.
    #[test]
    fn receipts_are_chained_by_the_entry_that_brings_them_in() {
        let (_dir, mut store) = store();
        let none = Config::default();
        let receipt = |received_at: Micros| crate::store::Receipt {
            received_at,
            identity: "https://issuer#p".into(),
            late: false,
            time_suspect: None,
            began_after: Some(received_at - 10),
        };
        store
            .record_received_run(&run("p", "1", None), &none, &receipt(1), None)
            .unwrap();
        store.record_run(&run("p", "2", None), &none).unwrap();
        store
            .record_received_run(&run("p", "2", None), &none, &receipt(2), None)
            .unwrap();
        store
            .record_received_run(&run("p", "2", None), &none, &receipt(3), None)
            .unwrap();
        let entries: Vec<(String, i64)> = store
            .conn
            .prepare("SELECT kind, encoding FROM run_chain ORDER BY seq")
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let expected = [("run", 3), ("run", 1), ("events", 3)];
        let expected: Vec<(String, i64)> =
            expected.iter().map(|&(k, v)| (k.to_owned(), v)).collect();
        assert_eq!(entries, expected);
        assert_eq!(store.verify_chain(None).unwrap().broken, None);
        // A trace bounds when the run went on writing by its last send: the receipt, or the
        // entry that added to the run after it.
        let (id, appended): (i64, Micros) = store
            .conn
            .query_row(
                "SELECT run_id, max(appended_at) FROM run_chain WHERE kind = 'events'",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .unwrap();
        let receipt = crate::graph::Source::receipt(&mut store, id)
            .unwrap()
            .unwrap();
        assert_eq!((receipt.received_at, receipt.last_seen), (2, appended));
        assert!(receipt.expiring && !receipt.late);
        // The first receipt's bound is kept, not the third sending's.
        assert_eq!(receipt.began_after, Some(2 - 10));
        store
            .conn
            .execute_batch("DROP TRIGGER run_receipts_never_update;")
            .unwrap();
        for (edit, undo, entry) in [
            (
                "UPDATE run_receipts SET began_after = 0 WHERE received_at = 1",
                "UPDATE run_receipts SET began_after = -9 WHERE received_at = 1",
                1,
            ),
            (
                "UPDATE run_receipts SET received_at = 9 WHERE received_at = 2",
                "UPDATE run_receipts SET received_at = 2 WHERE received_at = 9",
                3,
            ),
        ] {
            store.conn.execute_batch(edit).unwrap();
            let broken = store.verify_chain(None).unwrap().broken.unwrap();
            assert_eq!(
                (broken.entry, broken.kind),
                (entry, crate::store::BreakKind::HashMismatch),
                "{edit}"
            );
            store.conn.execute_batch(undo).unwrap();
            assert_eq!(store.verify_chain(None).unwrap().broken, None, "{undo}");
        }
    }

    /// The attack of `record --pipeline forks-pr --trust-level release`: with no config, the
    /// pipeline's first level is its ceiling, the run is recorded at it with a warning, and a
    /// release pipeline importing what it exported is still a trust breach (CW002).
    #[test]
    fn a_run_cannot_raise_its_pipeline_and_cw002_still_fires() {
        let (_dir, mut store) = store();
        let none = Config::default();
        let first = store
            .record_run(&run("forks-pr", "1", Some("untrusted")), &none)
            .unwrap();
        assert_eq!(first.trust_level.as_deref(), Some("untrusted"));
        let mut raised = run("forks-pr", "2", Some("release"));
        raised.exported.push(cache('a'));
        let outcome = store.record_run(&raised, &none).unwrap();
        assert_eq!(outcome.trust_level.as_deref(), Some("untrusted"));
        assert!(
            outcome
                .warnings
                .iter()
                .any(|w| w.contains("ceiling `untrusted`")),
            "{:?}",
            outcome.warnings
        );
        let mut release = run("web-release", "1", Some("release"));
        release.imported.push(cache('a'));
        release.started_at += 10 * MINUTE;
        release.finished_at += 10 * MINUTE;
        store.record_run(&release, &none).unwrap();

        let facts = store.audit_facts("r.io", "web").unwrap();
        let options = CompareOptions {
            now: 1_000 * MINUTE,
            grace: 0,
        };
        let findings = compare(&facts, &[], options, &|l| none.trust_rank(l));
        assert!(
            findings.iter().any(|f| f.code == Code::TrustBreach
                && f.detail["exporter_trust"] == "untrusted"
                && f.detail["exporter_run"] == "forks-pr/2/Dockerfile"),
            "{findings:?}"
        );
    }

    /// One pipeline builds pull requests and releases: each run keeps its own level, and a
    /// later run cannot move an earlier one.
    #[test]
    fn runs_of_one_pipeline_keep_their_own_levels() {
        let (_dir, mut store) = store();
        let config = config("[[pipeline]]\nname = \"web\"\ntrust_level = \"release\"\n");
        store
            .record_run(&run("web", "1", Some("untrusted")), &config)
            .unwrap();
        store
            .record_run(&run("web", "2", Some("release")), &config)
            .unwrap();
        store.record_run(&run("web", "3", None), &config).unwrap();
        let levels: Vec<Option<String>> = exported_runs(&store)
            .into_iter()
            .map(|r| r.trust_level)
            .collect();
        assert_eq!(
            levels,
            [Some("untrusted"), Some("release"), Some("release")].map(|l| l.map(str::to_owned))
        );
    }

    /// A config ceiling wins over any hook, and each change of it is appended with its time
    /// and source; a hook's other project is kept out with a warning.
    #[test]
    fn config_ceilings_win_and_their_changes_are_recorded() {
        let (_dir, mut store) = store();
        let first = config(
            "[[pipeline]]\npattern = \"forks-*\"\nproject = \"forks\"\ntrust_level = \"untrusted\"\n",
        );
        let mut asked = run("forks-pr", "1", Some("release"));
        asked.pipeline.project = Some("web".to_owned());
        let outcome = store.record_run(&asked, &first).unwrap();
        assert_eq!(outcome.trust_level.as_deref(), Some("untrusted"));
        assert!(
            outcome
                .warnings
                .iter()
                .any(|w| w.contains("keeps its project `forks`")),
            "{:?}",
            outcome.warnings
        );
        let second = config("[[pipeline]]\npattern = \"forks-*\"\ntrust_level = \"internal\"\n");
        let outcome = store
            .record_run(&run("forks-pr", "2", Some("release")), &second)
            .unwrap();
        assert_eq!(outcome.trust_level.as_deref(), Some("internal"));
        let changes: Vec<(String, String, String)> = store
            .rows(
                "SELECT field, value, source FROM pipeline_changes ORDER BY id",
                [],
                |row| row.try_into(),
            )
            .unwrap();
        let owned = |f: &str, v: &str, s: &str| (f.to_owned(), v.to_owned(), s.to_owned());
        assert_eq!(
            changes,
            [
                owned("project", "forks", "config"),
                owned("trust_level", "untrusted", "config"),
                owned("trust_level", "internal", "config"),
            ]
        );
        // The first run keeps the level it was recorded at.
        let levels: Vec<Option<String>> = exported_runs(&store)
            .into_iter()
            .map(|r| r.trust_level)
            .collect();
        assert_eq!(
            levels,
            [Some("untrusted".to_owned()), Some("internal".to_owned())]
        );
    }

    /// The attack of re-recording `web-release/101-1` with another builder, status and start:
    /// refused, naming the fields, and nothing of it is written (not even its new mount, or
    /// the new builder).
    #[test]
    fn a_run_key_with_other_facts_is_refused_and_writes_nothing() {
        let (_dir, mut store) = store();
        let none = Config::default();
        store
            .record_run(&run("web-release", "101-1", Some("release")), &none)
            .unwrap();
        let tables = [
            "runs",
            "events",
            "builders",
            "mounts",
            "pipelines",
            "pipeline_changes",
        ];
        let before: Vec<i64> = tables.iter().map(|t| count(&store, t)).collect();
        let mut evil = run("web-release", "101-1", Some("release"));
        evil.builder.as_mut().unwrap().name = "evil-builder".to_owned();
        evil.status = RunStatus::Failed;
        evil.started_at = 0;
        evil.mounts.push(MountUse {
            id: "/root/.cache/pip".to_owned(),
            ..MountUse::default()
        });
        let err = store.record_run(&evil, &none).unwrap_err().to_string();
        for field in ["builder", "started_at", "status"] {
            assert!(err.contains(field), "{err}");
        }
        for field in ["commit", "git_ref", "finished_at", "trust_level"] {
            assert!(!err.contains(&format!("{field} (")), "{err}");
        }
        let after: Vec<i64> = tables.iter().map(|t| count(&store, t)).collect();
        assert_eq!(before, after);
        // A lower level is another fact too.
        let err = store
            .record_run(&run("web-release", "101-1", Some("untrusted")), &none)
            .unwrap_err()
            .to_string();
        assert!(err.contains("trust_level"), "{err}");
    }

    /// The same facts again add only what is new; a run recorded at its ceiling repeats it by
    /// asking for the same level again.
    #[test]
    fn the_same_facts_again_add_only_new_events() {
        let (_dir, mut store) = store();
        let config = config("[[pipeline]]\nname = \"p\"\ntrust_level = \"internal\"\n");
        let first = store
            .record_run(&run("p", "1", Some("release")), &config)
            .unwrap();
        assert!(first.created);
        let mut again = run("p", "1", Some("release"));
        again.produced.push(cache('b'));
        let outcome = store.record_run(&again, &config).unwrap();
        assert!(!outcome.created);
        assert_eq!(outcome.events, 1);
        assert_eq!(outcome.trust_level.as_deref(), Some("internal"));
        let outcome = store.record_run(&again, &config).unwrap();
        assert_eq!(outcome.events, 0);
    }

    /// Runs, events and pipelines cannot be changed or deleted, even by SQL that bypasses the
    /// write path.
    #[test]
    fn runs_and_events_are_append_only() {
        let (_dir, mut store) = store();
        store
            .record_run(&run("p", "1", Some("release")), &Config::default())
            .unwrap();
        for sql in [
            "UPDATE runs SET builder_id = NULL",
            "UPDATE runs SET trust_level = 'untrusted'",
            "DELETE FROM runs",
            "UPDATE events SET at = 0",
            "DELETE FROM events",
            "UPDATE pipelines SET trust_level = 'release'",
        ] {
            let err = store.conn.execute(sql, []).unwrap_err().to_string();
            assert!(err.contains("append"), "{sql}: {err}");
        }
    }

    /// A build found overlapping an earlier one is appended as an observation of both: the
    /// earlier run's row is not rewritten, and both export as overlapped.
    #[test]
    fn overlaps_are_appended_observations() {
        let (_dir, mut store) = store();
        let none = Config::default();
        let mut a = run("p", "1", None);
        a.records = Some(RecordEvidence::default());
        store.record_run(&a, &none).unwrap();
        let mut b = run("p", "2", None);
        b.records = Some(RecordEvidence::default());
        b.started_at += MINUTE / 2;
        b.finished_at += MINUTE;
        store.record_run(&b, &none).unwrap();
        let flagged: i64 = store
            .conn
            .query_row("SELECT count(*) FROM runs WHERE overlapped = 1", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(flagged, 0);
        let overlapped: Vec<bool> = exported_runs(&store)
            .into_iter()
            .map(|r| r.records.unwrap().overlapped)
            .collect();
        assert_eq!(overlapped, [true, true]);
    }

    /// A mount use re-recorded with other options leaves its event as it was and appends the
    /// union of the uses, which export (and purges) read.
    #[test]
    fn mount_uses_with_other_options_are_appended() {
        let (_dir, mut store) = store();
        let none = Config::default();
        let pip = |readonly| MountUse {
            id: "/root/.cache/pip".to_owned(),
            readonly,
            ..MountUse::default()
        };
        let mut first = run("p", "1", None);
        first.mounts.push(pip(true));
        store.record_run(&first, &none).unwrap();
        let mut second = first.clone();
        second.mounts = vec![pip(false)];
        store.record_run(&second, &none).unwrap();
        let detail: String = store
            .conn
            .query_row(
                "SELECT detail FROM events WHERE kind = 'read_mount'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(detail, serde_json::to_string(&[pip(true)]).unwrap());
        assert_eq!(count(&store, "event_details"), 1);
        let mounts = exported_runs(&store).pop().unwrap().mounts;
        assert_eq!(mounts, [pip(true), pip(false)]);
    }

    /// Importing the same builder record twice keeps an unknown last use unknown (not 0).
    #[test]
    fn re_import_keeps_an_unknown_last_use_unknown() {
        let (_dir, mut store) = store();
        let mut line = run("p", "1", None);
        line.records = Some(RecordEvidence {
            created: vec![BuilderRecord {
                id: "r1".to_owned(),
                record_type: "regular".to_owned(),
                description: "RUN make".to_owned(),
                created_at: Some(0),
                last_used_at: None,
                size: None,
            }],
            ..RecordEvidence::default()
        });
        let items = [ImportItem::Run(Box::new(line))];
        for _ in 0..2 {
            store.import_batch(&items, 1, &Config::default()).unwrap();
        }
        let last: Option<i64> = store
            .conn
            .query_row("SELECT last_used_at FROM builder_records", [], |r| r.get(0))
            .unwrap();
        assert_eq!(last, None);
    }

    /// Sweep selection judges an entity by the runs that used it, each at its own level: a
    /// mount only a pull-request run wrote is `untrusted` although its pipeline's ceiling is
    /// `release`.
    #[test]
    fn sweep_candidates_carry_each_runs_level() {
        let (_dir, mut store) = store();
        let config = config("[[pipeline]]\nname = \"web\"\ntrust_level = \"release\"\n");
        let mount = |id: &str| MountUse {
            id: id.to_owned(),
            ..MountUse::default()
        };
        let mut pr = run("web", "1", Some("untrusted"));
        pr.mounts.push(mount("/pr"));
        store.record_run(&pr, &config).unwrap();
        let mut release = run("web", "2", Some("release"));
        release.mounts.push(mount("/release"));
        store.record_run(&release, &config).unwrap();
        let kinds = crate::store::SweepKinds {
            mounts: true,
            ..Default::default()
        };
        let levels: Vec<(String, Vec<Option<String>>)> = store
            .sweep_candidates(kinds)
            .unwrap()
            .mounts
            .into_iter()
            .map(|m| {
                (
                    m.mount_id,
                    m.pipelines.into_iter().map(|p| p.trust_level).collect(),
                )
            })
            .collect();
        assert_eq!(
            levels,
            [
                ("/pr".to_owned(), vec![Some("untrusted".to_owned())]),
                ("/release".to_owned(), vec![Some("release".to_owned())]),
            ]
        );
    }

    /// A run is recorded at the lower of its level and its ceiling; levels the config does not
    /// know give way to the ceiling, except that the lowest level is never raised.
    #[test]
    fn capped_levels() {
        let c = Config::default();
        let cap = |asked, ceiling| capped_level(&c, asked, ceiling);
        let some = |l: &str| (Some(l.to_owned()), false);
        let capped = |l: &str| (Some(l.to_owned()), true);
        assert_eq!(cap(Some("release"), Some("internal")), capped("internal"));
        assert_eq!(cap(Some("untrusted"), Some("release")), some("untrusted"));
        assert_eq!(cap(None, Some("internal")), some("internal"));
        assert_eq!(cap(Some("release"), None), some("release"));
        assert_eq!(cap(None, None), (None, false));
        assert_eq!(cap(Some("gold"), Some("internal")), capped("internal"));
        assert_eq!(cap(Some("release"), Some("gold")), capped("gold"));
        assert_eq!(cap(Some("untrusted"), Some("gold")), some("untrusted"));
    }

    /// A store written before runs had their own level is migrated with each run at its
    /// pipeline's level of the time, and that level and project become the pipeline's first
    /// recorded changes.
    #[test]
    fn older_stores_give_each_run_its_pipelines_level() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let mut conn = rusqlite::Connection::open(&path).unwrap();
        let older = rusqlite_migration::Migrations::new(
            super::super::MIGRATION_SQL[..6]
                .iter()
                .map(|sql| rusqlite_migration::M::up(sql))
                .collect(),
        );
        older.to_latest(&mut conn).unwrap();
        conn.execute_batch(
            "INSERT INTO pipelines (id, name, project, trust_level) VALUES (1, 'web', 'acme', 'release');
             INSERT INTO pipelines (id, name) VALUES (2, 'bare');
             INSERT INTO runs (pipeline_id, run_key, step, started_at, finished_at, status, recorded_at)
             VALUES (1, '1', 's', 0, 0, 'succeeded', 5), (2, '1', 's', 0, 0, 'succeeded', 6);",
        )
        .unwrap();
        drop(conn);
        let mut store = Store::open(&path).unwrap();
        let levels: Vec<Option<String>> = exported_runs(&store)
            .into_iter()
            .map(|r| r.trust_level)
            .collect();
        assert_eq!(levels, [Some("release".to_owned()), None]);
        let current: Vec<(String, Option<String>, Option<String>)> = store
            .rows(
                "SELECT name, project, trust_level FROM pipeline_current ORDER BY id",
                [],
                |row| row.try_into(),
            )
            .unwrap();
        assert_eq!(
            current,
            [
                (
                    "web".to_owned(),
                    Some("acme".to_owned()),
                    Some("release".to_owned())
                ),
                ("bare".to_owned(), None, None),
            ]
        );
        // The ceiling holds for the runs recorded after the migration.
        let outcome = store
            .record_run(&run("web", "2", Some("release")), &Config::default())
            .unwrap();
        assert_eq!(outcome.trust_level.as_deref(), Some("release"));
        let mut raised = run("bare", "2", Some("internal"));
        raised.builder = None;
        store.record_run(&raised, &Config::default()).unwrap();
        let outcome = store
            .record_run(&run("bare", "3", Some("release")), &Config::default())
            .unwrap();
        assert_eq!(outcome.trust_level.as_deref(), Some("internal"));
    }

    /// A push attached to its build and a mount use re-recorded with other options join the
    /// chain as entries of added events, which verify; a mount-use detail deleted behind the
    /// store's back is caught at its entry.
    #[test]
    fn later_additions_to_a_run_are_chained() {
        let (_dir, mut store) = store();
        let none = Config::default();
        let image = ImageRef::parse("r.io/web:1", "test").unwrap();
        let mut first = run("p", "1", None);
        first.produced.push(Artifact::registry(&image));
        first.mounts.push(MountUse {
            id: "/m".to_owned(),
            readonly: true,
            ..MountUse::default()
        });
        store.record_run(&first, &none).unwrap();
        assert!(
            store
                .attach_push("p", "1", &image, &digest('a'))
                .unwrap()
                .is_some()
        );
        let mut again = first.clone();
        again.mounts[0].readonly = false;
        assert!(store.record_run(&again, &none).unwrap().events > 0);
        // Recorded again with nothing new: no entry.
        store.record_run(&again, &none).unwrap();
        let check = store.verify_chain(None).unwrap();
        assert_eq!((check.length, check.broken), (3, None));
        assert_eq!(store.chain_head().unwrap().head, check.head);
        assert_eq!(count(&store, "event_details"), 1);
        store.conn.execute("DELETE FROM event_details", []).unwrap();
        let broken = store.verify_chain(None).unwrap().broken.unwrap();
        assert_eq!(
            (broken.entry, broken.kind, broken.run.as_deref()),
            (
                3,
                crate::store::BreakKind::HashMismatch,
                Some("p/1/Dockerfile")
            )
        );
    }
}
