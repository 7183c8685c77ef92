//! Writes: one build, a batch of imported lines, a purge, a push attached to its build.

use std::collections::HashMap;

use rusqlite::{OptionalExtension, Transaction, params};
use serde::Serialize;

use super::{Store, StoreError, sql_error};
use crate::model::{
    Artifact, Backend, BuilderInfo, BuilderRecord, Digest, ImageRef, MountUse, PipelineInfo,
    PurgeTarget, RunRecord,
};
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

/// One line of an import: the same units `record` and `wrap` store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportItem {
    Pipeline(PipelineInfo),
    Builder(BuilderInfo),
    Run(Box<RunRecord>),
    Purge {
        target: PurgeTarget,
        at: Micros,
        source: String,
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
}

/// Ids already looked up in this writer, so a batch does not re-query them.
#[derive(Default)]
pub(super) struct IdCache {
    pipelines: HashMap<String, i64>,
    builders: HashMap<String, i64>,
    artifacts: HashMap<(Backend, String, String, String), i64>,
    mounts: HashMap<(i64, String, String), i64>,
    records: HashMap<(i64, String), i64>,
}

impl Store {
    /// Stores one build. Recording the same (pipeline, run, step) again adds what is new and
    /// never duplicates a run or an event.
    pub fn record_run(&mut self, record: &RunRecord) -> Result<RecordOutcome, StoreError> {
        let path = self.path.clone();
        let tx = self.conn.transaction().map_err(|e| sql_error(&path, e))?;
        let mut cache = IdCache::default();
        let outcome =
            insert_run(&tx, &mut cache, record, time::now()).map_err(|e| sql_error(&path, e))?;
        if let Some(evidence) = &record.records
            && let Some(builder) = &record.builder
        {
            mark_overlaps(&tx, outcome.run, &builder.name, record, evidence.overlapped)
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
    ) -> Result<usize, StoreError> {
        let path = self.path.clone();
        let tx = self.conn.transaction().map_err(|e| sql_error(&path, e))?;
        let mut cache = IdCache::default();
        let now = time::now();
        let mut events = 0;
        for (i, item) in items.iter().enumerate() {
            let line = first_line + i;
            let result = match item {
                ImportItem::Pipeline(p) => upsert_pipeline(&tx, &mut cache, p).map(|_| 0),
                ImportItem::Builder(b) => upsert_builder(&tx, &mut cache, b).map(|_| 0),
                ImportItem::Run(run) => insert_run(&tx, &mut cache, run, now).map(|o| o.events),
                ImportItem::Purge { target, at, source } => {
                    insert_purge(&tx, &mut cache, target, *at, source).map(|_| 1)
                }
            };
            events += result.map_err(|err| match err {
                rusqlite::Error::ToSqlConversionFailure(msg) => {
                    StoreError::Input(format!("line {line}: {msg}"))
                }
                err => StoreError::Sqlite {
                    path: path.clone(),
                    source: err,
                },
            })?;
        }
        tx.commit().map_err(|e| sql_error(&path, e))?;
        Ok(events)
    }

    /// Records a purge or invalidation done outside a run.
    pub fn record_purge(
        &mut self,
        target: &PurgeTarget,
        at: Micros,
        source: &str,
    ) -> Result<(), StoreError> {
        let path = self.path.clone();
        let tx = self.conn.transaction().map_err(|e| sql_error(&path, e))?;
        let mut cache = IdCache::default();
        insert_purge(&tx, &mut cache, target, at, source).map_err(|err| match err {
            rusqlite::Error::ToSqlConversionFailure(msg) => StoreError::NotFound(msg.to_string()),
            err => sql_error(&path, err),
        })?;
        tx.commit().map_err(|e| sql_error(&path, e))
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

fn attach_push_tx(
    tx: &Transaction<'_>,
    pipeline: &str,
    run_id: &str,
    pushed: &ImageRef,
    digest: &Digest,
) -> rusqlite::Result<Option<String>> {
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
    insert_event(tx, run, kind::PRODUCED, id, started_at, None)?;
    if inline {
        insert_event(tx, run, kind::EXPORTED, id, started_at, None)?;
    }
    Ok(Some(step))
}

pub(super) fn upsert_pipeline(
    tx: &Transaction<'_>,
    cache: &mut IdCache,
    pipeline: &PipelineInfo,
) -> rusqlite::Result<i64> {
    if pipeline.project.is_none()
        && pipeline.trust_level.is_none()
        && let Some(id) = cache.pipelines.get(&pipeline.name)
    {
        return Ok(*id);
    }
    let id = tx
        .prepare_cached(
            "INSERT INTO pipelines (name, project, trust_level) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO UPDATE SET
                project = coalesce(excluded.project, project),
                trust_level = coalesce(excluded.trust_level, trust_level)
             RETURNING id",
        )?
        .query_row(
            params![pipeline.name, pipeline.project, pipeline.trust_level],
            |row| row.get(0),
        )?;
    cache.pipelines.insert(pipeline.name.clone(), id);
    Ok(id)
}

pub(super) fn upsert_builder(
    tx: &Transaction<'_>,
    cache: &mut IdCache,
    builder: &BuilderInfo,
) -> rusqlite::Result<i64> {
    if builder.driver.is_none()
        && builder.endpoint.is_none()
        && let Some(id) = cache.builders.get(&builder.name)
    {
        return Ok(*id);
    }
    let id = tx
        .prepare_cached(
            "INSERT INTO builders (name, driver, endpoint) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO UPDATE SET
                driver = coalesce(excluded.driver, driver),
                endpoint = coalesce(excluded.endpoint, endpoint)
             RETURNING id",
        )?
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

fn builder_id_by_name(
    tx: &Transaction<'_>,
    cache: &mut IdCache,
    name: &str,
) -> rusqlite::Result<i64> {
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
fn artifact_key(artifact: &Artifact) -> (Backend, String, String, String) {
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
) -> rusqlite::Result<i64> {
    let ident = artifact_key(artifact);
    let id = match cache.artifacts.get(&ident) {
        Some(id) => *id,
        None => {
            let id = tx
                .prepare_cached(
                    "INSERT INTO artifacts (backend, locator, digest, key, first_seen)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (backend, locator, digest, key) DO UPDATE SET
                        first_seen = min(first_seen, excluded.first_seen)
                     RETURNING id",
                )?
                .query_row(
                    params![ident.0.as_str(), ident.1, ident.2, ident.3, seen],
                    |row| row.get(0),
                )?;
            cache.artifacts.insert(ident, id);
            id
        }
    };
    if let Some(tag) = &artifact.tag {
        tx.prepare_cached(
            "INSERT INTO artifact_tags (artifact_id, tag, first_seen, last_seen) VALUES (?1, ?2, ?3, ?3)
             ON CONFLICT (artifact_id, tag) DO UPDATE SET
                first_seen = min(first_seen, excluded.first_seen),
                last_seen = max(last_seen, excluded.last_seen)",
        )?
        .execute(params![id, tag, seen])?;
    }
    Ok(id)
}

fn upsert_mount(
    tx: &Transaction<'_>,
    cache: &mut IdCache,
    builder: i64,
    mount: &MountUse,
) -> rusqlite::Result<i64> {
    let ident = (builder, mount.namespace.clone(), mount.id.clone());
    if let Some(id) = cache.mounts.get(&ident) {
        return Ok(*id);
    }
    let id = tx
        .prepare_cached(
            "INSERT INTO mounts (builder_id, namespace, mount_id) VALUES (?1, ?2, ?3)
             ON CONFLICT (builder_id, mount_id, namespace) DO UPDATE SET namespace = excluded.namespace
             RETURNING id",
        )?
        .query_row(params![builder, mount.namespace, mount.id], |row| row.get(0))?;
    cache.mounts.insert(ident, id);
    Ok(id)
}

fn upsert_record(
    tx: &Transaction<'_>,
    cache: &mut IdCache,
    builder: i64,
    record: &BuilderRecord,
) -> rusqlite::Result<i64> {
    let ident = (builder, record.id.clone());
    if let Some(id) = cache.records.get(&ident) {
        return Ok(*id);
    }
    let id = tx
        .prepare_cached(
            "INSERT INTO builder_records
                (builder_id, record_id, record_type, description, created_at, last_used_at, size)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (builder_id, record_id) DO UPDATE SET
                last_used_at = max(coalesce(last_used_at, 0), coalesce(excluded.last_used_at, 0)),
                size = coalesce(excluded.size, size)
             RETURNING id",
        )?
        .query_row(
            params![
                builder,
                record.id,
                record.record_type,
                record.description,
                record.created_at,
                record.last_used_at,
                record.size
            ],
            |row| row.get(0),
        )?;
    cache.records.insert(ident, id);
    Ok(id)
}

/// Inserts an event once; returns whether it was new.
fn insert_event(
    tx: &Transaction<'_>,
    run: i64,
    kind: &str,
    target: i64,
    at: Micros,
    detail: Option<&str>,
) -> rusqlite::Result<bool> {
    // The common case is a new event: a plain insert that ignores duplicates. Only a
    // re-recorded event whose detail changed is updated.
    let inserted = tx
        .prepare_cached(
            "INSERT OR IGNORE INTO events (run_id, kind, target, at, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![run, kind, target, at, detail])?;
    if inserted == 0
        && let Some(detail) = detail
    {
        let updated = tx
            .prepare_cached(
                "UPDATE events SET detail = ?4 WHERE run_id = ?1 AND kind = ?2 AND target = ?3
                 AND detail IS NOT ?4",
            )?
            .execute(params![run, kind, target, detail])?;
        return Ok(updated > 0);
    }
    Ok(inserted > 0)
}

fn insert_run(
    tx: &Transaction<'_>,
    cache: &mut IdCache,
    record: &RunRecord,
    now: Micros,
) -> rusqlite::Result<RecordOutcome> {
    let pipeline = upsert_pipeline(tx, cache, &record.pipeline)?;
    let builder = match &record.builder {
        Some(b) => Some(upsert_builder(tx, cache, b)?),
        None => None,
    };
    if builder.is_none() && (!record.mounts.is_empty() || record.records.is_some()) {
        return Err(rusqlite::Error::ToSqlConversionFailure(
            "a run with cache mounts or builder records needs a builder".into(),
        ));
    }
    let overlapped = record.records.as_ref().is_some_and(|r| r.overlapped);
    let (run, recorded_at): (i64, i64) = tx
        .prepare_cached(
            "INSERT INTO runs (pipeline_id, run_key, step, commit_sha, git_ref, builder_id,
                               started_at, finished_at, status, has_records, overlapped, recorded_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
             ON CONFLICT (pipeline_id, run_key, step) DO UPDATE SET
                commit_sha = coalesce(excluded.commit_sha, commit_sha),
                git_ref = coalesce(excluded.git_ref, git_ref),
                builder_id = coalesce(excluded.builder_id, builder_id),
                started_at = min(started_at, excluded.started_at),
                finished_at = max(finished_at, excluded.finished_at),
                status = excluded.status,
                has_records = max(has_records, excluded.has_records),
                overlapped = max(overlapped, excluded.overlapped)
             RETURNING id, recorded_at",
        )?
        .query_row(
            params![
                pipeline,
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
                now
            ],
            |row| row.try_into(),
        )?;
    if record.truncated {
        tx.prepare_cached(
            "INSERT INTO run_truncations (run_id, recorded_at) VALUES (?1, ?2)
             ON CONFLICT (run_id) DO NOTHING",
        )?
        .execute(params![run, now])?;
    }
    let (start, finish) = (record.started_at, record.finished_at);
    let mut events = 0;
    let mut add =
        |tx: &Transaction<'_>, kind: &str, target: i64, at: Micros, detail: Option<&str>| {
            insert_event(tx, run, kind, target, at, detail).map(|new| events += usize::from(new))
        };
    if let Some(builder) = builder {
        add(tx, kind::RAN_ON, builder, start, None)?;
    }
    for (list, kind, at) in [
        (&record.imported, kind::IMPORTED, finish),
        (&record.base_images, kind::USED_BASE, finish),
        (&record.exported, kind::EXPORTED, start),
        (&record.produced, kind::PRODUCED, start),
    ] {
        for artifact in list {
            let id = upsert_artifact(tx, cache, artifact, at)?;
            add(tx, kind, id, at, None)?;
        }
    }
    if let Some(builder) = builder {
        // One mount can be used by several steps with different options: keep every use.
        let mut uses: Vec<(i64, Vec<&MountUse>)> = Vec::new();
        for mount in &record.mounts {
            let id = upsert_mount(tx, cache, builder, mount)?;
            match uses.iter_mut().find(|(m, _)| *m == id) {
                Some((_, list)) => list.push(mount),
                None => uses.push((id, vec![mount])),
            }
        }
        for (id, list) in uses {
            let detail = serde_json::to_string(&list).ok();
            add(tx, kind::READ_MOUNT, id, finish, detail.as_deref())?;
            if list.iter().any(|m| !m.readonly) {
                add(tx, kind::WROTE_MOUNT, id, start, detail.as_deref())?;
            }
        }
        if let Some(evidence) = &record.records {
            for (list, kind, at) in [
                (&evidence.created, kind::CREATED_RECORD, start),
                (&evidence.reused, kind::REUSED_RECORD, finish),
            ] {
                for r in list {
                    let id = upsert_record(tx, cache, builder, r)?;
                    add(tx, kind, id, at, None)?;
                }
            }
        }
    }
    Ok(RecordOutcome {
        run,
        created: recorded_at == now,
        events,
    })
}

/// Flags every run that overlapped `run` on its builder, and `run` itself when any did: their
/// record snapshots may hold each other's records.
fn mark_overlaps(
    tx: &Transaction<'_>,
    run: i64,
    builder: &str,
    record: &RunRecord,
    already: bool,
) -> rusqlite::Result<()> {
    let others = tx
        .prepare_cached(
            "UPDATE runs SET overlapped = 1
             WHERE id <> ?1 AND has_records = 1
               AND builder_id = (SELECT id FROM builders WHERE name = ?2)
               AND started_at <= ?4 AND finished_at >= ?3",
        )?
        .execute(params![run, builder, record.started_at, record.finished_at])?;
    if others > 0 && !already {
        tx.prepare_cached("UPDATE runs SET overlapped = 1 WHERE id = ?1")?
            .execute(params![run])?;
    }
    Ok(())
}

fn insert_purge(
    tx: &Transaction<'_>,
    cache: &mut IdCache,
    target: &PurgeTarget,
    at: Micros,
    source: &str,
) -> rusqlite::Result<()> {
    match target {
        PurgeTarget::Builder { builder } => {
            let builder = builder_id_by_name(tx, cache, builder)?;
            tx.prepare_cached("INSERT INTO purges (kind, builder_id, mount, at, source) VALUES ('builder', ?1, NULL, ?2, ?3)")?
                .execute(params![builder, at, source])?;
        }
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
            tx.prepare_cached("INSERT INTO purges (kind, builder_id, mount, at, source) VALUES ('mount', ?1, ?2, ?3, ?4)")?
                .execute(params![builder_id, mount, at, source])?;
        }
    }
    Ok(())
}
