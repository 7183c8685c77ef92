//! Reads: the indexed lookups the trace runs, and export.

use std::collections::{HashMap, HashSet};

use crate::store::db::{OptionalExtension, Row, params};
use compact_str::CompactString;

use super::write::kind;
use super::{Store, StoreError, sql_error};
use crate::graph::source::{
    ArtifactId, ArtifactInfo, ArtifactRead, BuilderId, BuilderInfo, BuilderPrune, DigestUses,
    MountId, MountInfo, Purged, Receipt, RecordId, RecordInfo, RunId, RunInfo, RunRef, Selective,
    Source, Write,
};
use crate::model::{
    Artifact, Backend, BuilderInfo as BuilderDesc, BuilderRecord, Digest, Driver, MountUse,
    PipelineInfo, PurgeClaim, PurgeMethod, PurgeTarget, RecordEvidence, RunKey, RunRecord,
    RunStatus, SelectivePrune, StoredPurge,
};
use crate::time::Micros;

/// A purge with its provenance, for [`purge_from_row`]: `u` is `purges`, `b` its builder and
/// `m` its mount (left-joined).
const PURGE_COLUMNS: &str = "u.id, u.kind, b.name, m.mount_id, m.namespace, u.at, u.source,
    u.method, u.author, u.recorded_at, u.forced, u.reason, u.incident_id, u.action_seq,
    u.claimed_method, u.claimed_author, u.claimed_recorded_at, u.records_only, u.selective,
    u.records_since, u.records_skew";

const PURGE_FROM: &str =
    "purges u JOIN builders b ON b.id = u.builder_id LEFT JOIN mounts m ON m.id = u.mount";

fn purge_from_row(row: &Row<'_>) -> crate::store::db::DbResult<StoredPurge> {
    let kind: String = row.get(1)?;
    let builder: String = row.get(2)?;
    let (since, skew): (Option<Micros>, Micros) = (row.get(19)?, row.get(20)?);
    let target = if kind == "mount" {
        PurgeTarget::Mount {
            builder,
            mount: row.get(3)?,
            namespace: row.get(4)?,
        }
    } else {
        PurgeTarget::Builder {
            builder,
            records_only: row.get::<_, i64>(17)? != 0,
            // The named records are read by `named_records`.
            selective: (row.get::<_, i64>(18)? != 0).then(|| SelectivePrune {
                records: Vec::new(),
                since,
                skew,
            }),
        }
    };
    let method: String = row.get(7)?;
    let incident: Option<i64> = row.get(12)?;
    let seq: Option<i64> = row.get(13)?;
    let claimed = PurgeClaim {
        method: row.get(14)?,
        author: row.get(15)?,
        recorded_at: row.get(16)?,
    };
    Ok(StoredPurge {
        id: row.get(0)?,
        target,
        at: row.get(5)?,
        // The schema admits only the three methods; anything else is shown as the least trusted.
        method: PurgeMethod::parse(&method).unwrap_or(PurgeMethod::Imported),
        author: row.get(8)?,
        recorded_at: row.get(9)?,
        forced: row.get(10)?,
        reason: row.get(11)?,
        source: row.get(6)?,
        action: incident.zip(seq),
        claimed: (claimed != PurgeClaim::default()).then_some(claimed),
    })
}

const RUN_COLUMNS: &str = "r.id, p.name, r.run_key, r.step, r.builder_id, r.started_at, r.finished_at, r.status, r.has_records, \
     EXISTS (SELECT 1 FROM run_truncations t WHERE t.run_id = r.id), \
     EXISTS (SELECT 1 FROM run_receipts c WHERE c.run_id = r.id AND c.time_suspect IS NOT NULL), \
     r.trust_level";
/// How many columns [`RUN_COLUMNS`] selects: a query's own columns follow them.
const RUN_COLUMN_COUNT: usize = 12;

/// A text column.
fn text(row: &Row<'_>, column: usize) -> crate::store::db::DbResult<CompactString> {
    row.get::<_, String>(column).map(CompactString::from)
}

/// A run as [`RUN_COLUMNS`] reads it; one recorded at the level `doubted` names has no record
/// evidence ([`Store::doubt_records_at`]).
fn run_from_row(row: &Row<'_>, doubted: &str) -> crate::store::db::DbResult<RunInfo> {
    let status: String = row.get(7)?;
    let level: Option<String> = row.get(11)?;
    Ok(RunInfo {
        id: row.get(0)?,
        pipeline: text(row, 1)?,
        run_key: text(row, 2)?,
        step: text(row, 3)?,
        builder: row.get(4)?,
        started_at: row.get(5)?,
        finished_at: row.get(6)?,
        status: if status == "failed" {
            RunStatus::Failed
        } else {
            RunStatus::Succeeded
        },
        has_records: row.get(8)?,
        records_doubted: level.as_deref() == Some(doubted),
        truncated: row.get(9)?,
        time_suspect: row.get(10)?,
    })
}

fn artifact_from_row(row: &Row<'_>) -> crate::store::db::DbResult<ArtifactInfo> {
    let backend: String = row.get(1)?;
    let tags: Option<String> = row.get(6)?;
    Ok(ArtifactInfo {
        id: row.get(0)?,
        backend: Backend::parse(&backend).unwrap_or(Backend::Registry),
        locator: row.get::<_, String>(2)?.into(),
        digest: row.get(3)?,
        key: text(row, 4)?,
        first_seen: row.get(5)?,
        tags: tags
            .map(|t| t.split('\u{1f}').map(CompactString::from).collect())
            .unwrap_or_default(),
    })
}

const ARTIFACT_COLUMNS: &str = "a.id, a.backend, a.locator, a.digest, a.key, a.first_seen,
    (SELECT string_agg(tag, char(31) ORDER BY tag) FROM artifact_tags t WHERE t.artifact_id = a.id)";

impl Store {
    fn err(&self, e: crate::store::db::DbError) -> StoreError {
        sql_error(&self.path, e)
    }

    /// Every pipeline, builder, run and purge, in store order, for `export`.
    pub fn export(
        &self,
        emit: impl FnMut(ExportItem) -> std::io::Result<()>,
    ) -> Result<(), ExportError> {
        self.export_selected(None, emit)
    }

    /// With `runs`, only those runs (in store order, each once), with their pipelines and
    /// builders and no purge: what a CI job recorded, for `export --run`. Without, everything.
    pub fn export_selected(
        &self,
        runs: Option<&[RunId]>,
        mut emit: impl FnMut(ExportItem) -> std::io::Result<()>,
    ) -> Result<(), ExportError> {
        let e = |err| ExportError::Store(self.err(err));
        let selected: Option<Vec<RunId>> = runs.map(|ids| {
            let mut ids = ids.to_vec();
            ids.sort_unstable();
            ids.dedup();
            ids
        });
        // The pipelines and builders the selected runs name.
        let (mut pipelines, mut run_builders) = (HashSet::new(), HashSet::new());
        for id in selected.iter().flatten() {
            let (pipeline, builder): (i64, Option<i64>) = self
                .conn
                .query_row(
                    "SELECT pipeline_id, builder_id FROM runs WHERE id = ?1",
                    [id],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .map_err(e)?;
            pipelines.insert(pipeline);
            run_builders.extend(builder);
        }
        let mut stmt = self
            .conn
            .prepare("SELECT id, name, project, trust_level FROM pipeline_current ORDER BY id")
            .map_err(e)?;
        let mut rows = stmt.query([]).map_err(e)?;
        while let Some(row) = rows.next().map_err(e)? {
            if selected.is_some() && !pipelines.contains(&row.get::<_, i64>(0).map_err(e)?) {
                continue;
            }
            emit(ExportItem::Pipeline(PipelineInfo {
                name: row.get(1).map_err(e)?,
                project: row.get(2).map_err(e)?,
                trust_level: row.get(3).map_err(e)?,
            }))?;
        }
        let mut stmt = self
            .conn
            .prepare("SELECT id, name, driver, endpoint FROM builders ORDER BY id")
            .map_err(e)?;
        let mut builders = HashMap::new();
        let mut rows = stmt.query([]).map_err(e)?;
        while let Some(row) = rows.next().map_err(e)? {
            let driver: Option<String> = row.get(2).map_err(e)?;
            let builder = BuilderDesc {
                name: row.get(1).map_err(e)?,
                driver: driver.and_then(|d| match d.as_str() {
                    "docker" => Some(Driver::Docker),
                    "buildkitd" => Some(Driver::Buildkitd),
                    "docker-container" => Some(Driver::DockerContainer),
                    _ => None,
                }),
                endpoint: row.get(3).map_err(e)?,
            };
            let id: i64 = row.get(0).map_err(e)?;
            builders.insert(id, builder.name.clone());
            if selected.is_none() || run_builders.contains(&id) {
                emit(ExportItem::Builder(builder))?;
            }
        }
        let Some(selected) = selected else {
            self.export_runs(&builders, None, &mut emit)?;
            let mut stmt = self
                .conn
                .prepare(&format!(
                    "SELECT {PURGE_COLUMNS} FROM {PURGE_FROM} ORDER BY u.id"
                ))
                .map_err(e)?;
            let mut rows = stmt.query([]).map_err(e)?;
            let mut purges = Vec::new();
            while let Some(row) = rows.next().map_err(e)? {
                purges.push(purge_from_row(&row).map_err(e)?);
            }
            drop(rows);
            drop(stmt);
            for mut purge in purges {
                self.named_records(&mut purge)?;
                emit(ExportItem::Purge(Box::new(purge)))?;
            }
            return Ok(());
        };
        for id in selected {
            self.export_runs(&builders, Some(id), &mut emit)?;
        }
        Ok(())
    }

    /// The latest recorded use of what a purge of `target` would clean: a read or write of
    /// the mount (for a prune of a builder: any use of it, its mounts or its records, see
    /// [`BUILDER_LAST_USE`]), as the run and the event's time. `None` when nothing was
    /// recorded, or the builder or mount is unknown.
    pub fn last_use(&self, target: &PurgeTarget) -> Result<Option<(RunId, Micros)>, StoreError> {
        let found = match target {
            PurgeTarget::Mount {
                builder,
                mount,
                namespace,
            } => self.conn.query_row(
                "SELECT e.run_id, e.at FROM events e
                   JOIN mounts m ON m.id = e.target
                   JOIN builders b ON b.id = m.builder_id
                 WHERE e.kind IN ('read_mount', 'wrote_mount')
                   AND b.name = ?1 AND m.mount_id = ?2 AND m.namespace = ?3
                 ORDER BY e.at DESC, e.run_id DESC LIMIT 1",
                params![builder, mount, namespace],
                |row| Ok((row.get(0)?, row.get(1)?)),
            ),
            PurgeTarget::Builder { builder, .. } => {
                self.conn
                    .query_row(BUILDER_LAST_USE, params![builder], |row| {
                        Ok((row.get(0)?, row.get(1)?))
                    })
            }
        };
        found.optional().map_err(|e| self.err(e))
    }

    /// Every run, or only the run `only`, with its events. A record a doubted run named first
    /// (`record_descriptions`) is in that run's words on its line only: on the others, in the
    /// words a believed run gave it since, or by id alone, so that importing the export gives
    /// no believed run the doubted run's words.
    fn export_runs(
        &self,
        builders: &HashMap<i64, String>,
        only: Option<RunId>,
        emit: &mut impl FnMut(ExportItem) -> std::io::Result<()>,
    ) -> Result<(), ExportError> {
        let e = |err| ExportError::Store(self.err(err));
        // Events in run order, so each run's events arrive together in one pass.
        let mut events = self
            .conn
            .prepare(&format!(
                "{FIRST_NAMED}
                 SELECT e.run_id, e.kind, e.at,
                        coalesce((SELECT d.detail FROM event_details d WHERE d.event_id = e.id
                                  ORDER BY d.id DESC LIMIT 1), e.detail),
                        a.backend, a.locator, a.digest, a.key,
                        (SELECT t.tag FROM artifact_tags t WHERE t.artifact_id = a.id ORDER BY t.first_seen LIMIT 1),
                        m.mount_id, m.namespace,
                        br.record_id, {words}, br.created_at, br.last_used_at, br.size
                 FROM events e
                 LEFT JOIN artifacts a ON e.kind IN ('imported', 'exported', 'produced', 'used_base') AND a.id = e.target
                 LEFT JOIN mounts m ON e.kind IN ('read_mount', 'wrote_mount') AND m.id = e.target
                 LEFT JOIN builder_records br ON e.kind IN ('created_record', 'reused_record') AND br.id = e.target
                 LEFT JOIN firsts fr ON fr.record = br.id
                 LEFT JOIN record_descriptions bw ON bw.record = br.id AND bw.believed = 1
                 {}
                 ORDER BY e.run_id, e.id",
                if only.is_some() { "WHERE e.run_id = ?1" } else { "" },
                words = RUN_RECORD_WORDS,
            ))
            .map_err(e)?;
        let mut event_rows = events
            .query(crate::store::db::params_from_iter(only))
            .map_err(e)?;
        let mut pending = event_rows.next().map_err(e)?;
        let mut runs = self
            .conn
            .prepare(&format!(
                "SELECT r.id, p.name, r.run_key, r.step, r.commit_sha, r.git_ref, r.builder_id,
                        r.started_at, r.finished_at, r.status, r.has_records,
                        (r.overlapped <> 0 OR EXISTS (SELECT 1 FROM run_observations o
                                                 WHERE o.run_id = r.id AND o.kind = 'overlapped')),
                        r.trust_level,
                        EXISTS (SELECT 1 FROM run_truncations t WHERE t.run_id = r.id),
                        (SELECT min(b.build_ref) FROM run_build_refs b WHERE b.run_id = r.id)
                 FROM runs r JOIN pipelines p ON p.id = r.pipeline_id {} ORDER BY r.id",
                if only.is_some() {
                    "WHERE r.id = ?1"
                } else {
                    ""
                }
            ))
            .map_err(e)?;
        let mut rows = runs
            .query(crate::store::db::params_from_iter(only))
            .map_err(e)?;
        while let Some(row) = rows.next().map_err(e)? {
            let id: i64 = row.get(0).map_err(e)?;
            let status: String = row.get(9).map_err(e)?;
            let has_records: bool = row.get(10).map_err(e)?;
            let builder: Option<i64> = row.get(6).map_err(e)?;
            let mut record = RunRecord {
                pipeline: PipelineInfo {
                    name: row.get(1).map_err(e)?,
                    ..PipelineInfo::default()
                },
                trust_level: row.get(12).map_err(e)?,
                run_id: row.get(2).map_err(e)?,
                step: row.get(3).map_err(e)?,
                commit: row.get(4).map_err(e)?,
                git_ref: row.get(5).map_err(e)?,
                builder: builder
                    .and_then(|b| builders.get(&b))
                    .map(|name| BuilderDesc {
                        name: name.clone(),
                        driver: None,
                        endpoint: None,
                    }),
                started_at: row.get(7).map_err(e)?,
                finished_at: row.get(8).map_err(e)?,
                status: if status == "failed" {
                    RunStatus::Failed
                } else {
                    RunStatus::Succeeded
                },
                imported: Vec::new(),
                exported: Vec::new(),
                produced: Vec::new(),
                base_images: Vec::new(),
                mounts: Vec::new(),
                records: has_records.then(|| RecordEvidence {
                    overlapped: row.get(11).unwrap_or(false),
                    ..RecordEvidence::default()
                }),
                truncated: row.get(13).map_err(e)?,
                build_ref: row.get(14).map_err(e)?,
            };
            while let Some(ev) = pending {
                let run_id: i64 = ev.get(0).map_err(e)?;
                if run_id != id {
                    break;
                }
                add_exported_event(&mut record, &ev).map_err(e)?;
                pending = event_rows.next().map_err(e)?;
            }
            emit(ExportItem::Run(Box::new(record)))?;
        }
        Ok(())
    }
}

fn add_exported_event(record: &mut RunRecord, ev: &Row<'_>) -> crate::store::db::DbResult<()> {
    let kind: String = ev.get(1)?;
    match kind.as_str() {
        kind::IMPORTED | kind::EXPORTED | kind::PRODUCED | kind::USED_BASE => {
            let backend: String = ev.get(4)?;
            let digest: String = ev.get(6)?;
            let key: String = ev.get(7)?;
            let tag: Option<String> = ev.get(8)?;
            let backend = Backend::parse(&backend).unwrap_or(Backend::Registry);
            let digest = (!digest.is_empty())
                .then(|| Digest::parse(&digest, "digest").ok())
                .flatten();
            let artifact = Artifact {
                backend,
                locator: ev.get(5)?,
                tag: if backend == Backend::Registry && digest.is_none() {
                    Some(key.clone())
                } else {
                    tag
                },
                key: if backend == Backend::Registry {
                    String::new()
                } else {
                    key
                },
                digest,
            };
            let list = match kind.as_str() {
                kind::IMPORTED => &mut record.imported,
                kind::EXPORTED => &mut record.exported,
                kind::PRODUCED => &mut record.produced,
                _ => &mut record.base_images,
            };
            list.push(artifact);
        }
        kind::READ_MOUNT => {
            let detail: Option<String> = ev.get(3)?;
            let uses: Vec<MountUse> = detail
                .and_then(|d| serde_json::from_str(&d).ok())
                .unwrap_or_else(|| {
                    vec![MountUse {
                        id: ev.get(9).unwrap_or_default(),
                        namespace: ev.get(10).unwrap_or_default(),
                        readonly: true,
                        ..MountUse::default()
                    }]
                });
            record.mounts.extend(uses);
        }
        kind::CREATED_RECORD | kind::REUSED_RECORD => {
            let r = BuilderRecord {
                id: ev.get(11)?,
                record_type: ev.get(12)?,
                description: ev.get(13)?,
                created_at: ev.get(14)?,
                last_used_at: ev.get(15)?,
                size: ev.get(16)?,
            };
            let evidence = record.records.get_or_insert_with(RecordEvidence::default);
            if kind == kind::CREATED_RECORD {
                evidence.created.push(r);
            } else {
                evidence.reused.push(r);
            }
        }
        _ => {}
    }
    Ok(())
}

/// One unit `export` writes.
#[derive(Debug)]
pub enum ExportItem {
    Pipeline(PipelineInfo),
    Builder(BuilderDesc),
    Run(Box<RunRecord>),
    Purge(Box<StoredPurge>),
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl Store {
    /// Fills in the records a selective prune named, as BuildKit ids.
    fn named_records(&self, purge: &mut StoredPurge) -> Result<(), StoreError> {
        if let PurgeTarget::Builder {
            selective: Some(selective),
            ..
        } = &mut purge.target
        {
            selective.records = self.rows(
                "SELECT r.record_id FROM purge_records p
                 JOIN builder_records r ON r.id = p.record
                 WHERE p.purge_id = ?1 ORDER BY r.record_id",
                [purge.id],
                |row| row.get(0),
            )?;
        }
        Ok(())
    }

    fn runs_query(
        &self,
        where_clause: &str,
        params: impl crate::store::db::Params,
    ) -> Result<Vec<RunInfo>, StoreError> {
        let doubted = self.doubted_records();
        self.rows(&runs_sql(where_clause), params, |row| {
            run_from_row(row, &doubted)
        })
    }

    /// The time-suspect runs that meet `condition`: see [`suspect_runs_sql`].
    fn suspect_runs_query(
        &self,
        condition: &str,
        params: impl crate::store::db::Params,
    ) -> Result<Vec<RunInfo>, StoreError> {
        let doubted = self.doubted_records();
        self.rows(&suspect_runs_sql(condition), params, |row| {
            run_from_row(row, &doubted)
        })
    }

    fn artifacts_query(
        &self,
        where_clause: &str,
        params: impl crate::store::db::Params,
    ) -> Result<Vec<ArtifactInfo>, StoreError> {
        let sql = format!("SELECT {ARTIFACT_COLUMNS} FROM artifacts a {where_clause}");
        self.rows(&sql, params, artifact_from_row)
    }

    /// Runs joined with events of the given kinds on one target, with the event time: those
    /// at or after `since`, and a time-suspect run's whenever it claims they happened. (The
    /// suspect runs are found from their receipts, which a partial index keeps few.)
    fn event_runs(
        &self,
        kinds: &str,
        target: i64,
        since: Micros,
    ) -> Result<Vec<(RunInfo, String, Micros)>, StoreError> {
        let sql = event_runs_sql(kinds, self.few_suspects()?);
        let doubted = self.doubted_records();
        self.rows(&sql, params![target, since], |row| {
            Ok((
                run_from_row(row, &doubted)?,
                row.get(RUN_COLUMN_COUNT)?,
                row.get(RUN_COLUMN_COUNT + 1)?,
            ))
        })
    }
}

#[cfg(test)]
thread_local! {
    /// Set by a test: every read takes the store to hold many time-suspect runs.
    pub(crate) static MANY_SUSPECTS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// How many time-suspect runs are few: each read of a target's uses looks through every one
/// of them, from its receipt, instead of through the target's earlier uses.
const FEW_SUSPECTS: i64 = 64;

impl Store {
    /// How many records the store holds for a builder: one range of an index, counted.
    pub(super) fn builder_record_count(&self, builder: BuilderId) -> Result<i64, StoreError> {
        self.conn
            .query_row(
                "SELECT count(*) FROM builder_records WHERE builder_id = ?1",
                [builder],
                |row| row.get(0),
            )
            .map_err(|e| self.err(e))
    }

    /// Whether the store holds at most [`FEW_SUSPECTS`] time-suspect runs, asked once a read
    /// snapshot. When it holds more (a client sent many runs whose times the collector did
    /// not believe), a target's suspect uses are found among its earlier uses instead: a mount
    /// shared by most pipelines has millions of those, but each read costs the same whatever
    /// the suspect runs.
    fn few_suspects(&self) -> Result<bool, StoreError> {
        #[cfg(test)]
        if MANY_SUSPECTS.get() {
            return Ok(false);
        }
        if let Some(few) = self.few_suspects.get() {
            return Ok(few);
        }
        let suspects: i64 = self
            .conn
            .query_row(
                &format!(
                    "SELECT count(*) FROM (SELECT 1 FROM run_receipts
                     WHERE time_suspect IS NOT NULL LIMIT {}) AS suspect",
                    FEW_SUSPECTS + 1
                ),
                [],
                |row| row.get(0),
            )
            .map_err(|e| self.err(e))?;
        let few = suspects <= FEW_SUSPECTS;
        self.few_suspects.set(Some(few));
        Ok(few)
    }
}

/// The events `e` of the time-suspect runs `s`, for a query that picks a target's: with `few`
/// suspect runs, read by run from their receipts; else among the target's uses.
fn suspect_uses_from(few: bool) -> &'static str {
    if few {
        "FROM run_receipts s CROSS JOIN events e ON e.run_id = s.run_id"
    } else {
        "FROM events e CROSS JOIN run_receipts s ON s.run_id = e.run_id"
    }
}

/// [`Store::event_runs`]'s query. The suspect runs' uses are found as [`suspect_uses_from`]
/// says (`+` keeps the time out of the other index's reach when they are few).
fn event_runs_sql(kinds: &str, few: bool) -> String {
    let suspect = suspect_uses_from(few);
    format!(
        "SELECT {RUN_COLUMNS}, e.kind, e.at FROM events e
         JOIN runs r ON r.id = e.run_id JOIN pipelines p ON p.id = r.pipeline_id
         WHERE e.kind IN ({kinds}) AND e.target = ?1 AND e.at >= ?2
         UNION ALL
         SELECT {RUN_COLUMNS}, e.kind, e.at {suspect}
         JOIN runs r ON r.id = e.run_id JOIN pipelines p ON p.id = r.pipeline_id
         WHERE s.time_suspect IS NOT NULL
           AND e.kind IN ({kinds}) AND e.target = ?1 AND {at} < ?2",
        at = if few { "+e.at" } else { "e.at" }
    )
}

/// Runs with their pipelines' names, as [`run_from_row`] reads them, and `where_clause`.
fn runs_sql(where_clause: &str) -> String {
    format!(
        "SELECT {RUN_COLUMNS} FROM runs r JOIN pipelines p ON p.id = r.pipeline_id {where_clause}"
    )
}

/// The time-suspect runs that meet `condition`, found from their few receipts (a partial
/// index holds them) instead of from every run of a pipeline or a builder.
fn suspect_runs_sql(condition: &str) -> String {
    format!(
        "SELECT {RUN_COLUMNS} FROM run_receipts s
         CROSS JOIN runs r ON r.id = s.run_id JOIN pipelines p ON p.id = r.pipeline_id
         WHERE s.time_suspect IS NOT NULL AND {condition}"
    )
}

/// A pipeline's runs that started outside a window.
const OUTSIDE_WINDOW: &str =
    "r.pipeline_id = ?1 AND NOT (r.started_at >= ?2 AND r.started_at <= ?3)";

/// The runs on a builder without record evidence that finished at or after a time: one range
/// of the runs by builder and finish time. Runs at the level `?3` have none
/// ([`Store::doubt_records_at`]).
const UNVERIFIED_SINCE: &str = "WHERE r.builder_id = ?1 AND r.finished_at >= ?2
       AND (r.has_records = 0 OR r.trust_level = ?3)";

/// The runs on a builder without record evidence that claim to have finished before a time.
const UNVERIFIED_BEFORE: &str = "r.builder_id = ?1 AND (r.has_records = 0 OR r.trust_level = ?3)
       AND NOT (r.finished_at >= ?2)";

/// The latest use of a builder: the latest end of a run on it, or the latest start (its
/// `ran_on` event), as that run and the time, the later run first on a tie. A run uses
/// mounts and records of its own builder only (every write path names them on the run's
/// builder, which `require_builder` requires; see [`builder_record_users_sql`]), and each of
/// its events is at its start (a write, beside its `ran_on` event) or its end (a read): so
/// this is the latest of every use of the builder, its mounts and its records, read from the
/// end of one range of an index each, not from every use of a shared builder's mounts and
/// records. (Each range is on the only index that can give it in order: a planner that
/// chose between the two indexes of runs by builder could sort one by the other's times.)
const BUILDER_LAST_USE: &str = "SELECT run_id, at FROM (
       SELECT run_id, at FROM (
         SELECT r.id AS run_id, r.finished_at AS at FROM runs r
         WHERE r.builder_id = (SELECT id FROM builders WHERE name = ?1)
         ORDER BY r.finished_at DESC, r.id DESC LIMIT 1) AS ended
       UNION ALL
       SELECT run_id, at FROM (
         SELECT e.run_id, e.at FROM events e
         WHERE e.kind = 'ran_on' AND e.target = (SELECT id FROM builders WHERE name = ?1)
         ORDER BY e.at DESC, e.run_id DESC LIMIT 1) AS started) AS uses
     ORDER BY at DESC, run_id DESC LIMIT 1";

/// The runs that created or reused a builder's records and finished at or after a time, or
/// are time-suspect, with their first such use: those with record evidence, which a run at
/// the level `?3` has none of ([`Store::doubt_records_at`]).
///
/// A run creates and reuses records of its own builder only: a run that names records names
/// its builder (`require_builder`), which its later lines may not change. So the users are
/// found from the runs on the builder that finished since (one range of the runs by builder
/// and finish time) and the time-suspect runs on it (from their few receipts), each with its
/// own events: never from every use of every record the builder ever held.
fn builder_record_users_sql() -> String {
    let users = |runs: &str, which: &str| {
        format!(
            "SELECT {RUN_COLUMNS}, min(e.at) {runs}
             CROSS JOIN events e ON e.run_id = r.id
             JOIN builder_records br ON br.id = e.target
             JOIN pipelines p ON p.id = r.pipeline_id
             WHERE {which} AND r.builder_id = ?1 AND r.has_records = 1
               AND (r.trust_level IS NULL OR r.trust_level <> ?3)
               AND e.kind IN ('created_record', 'reused_record') AND br.builder_id = ?1
             GROUP BY r.id, p.id"
        )
    };
    format!(
        "{} UNION ALL {}",
        users("FROM runs r", "r.finished_at >= ?2"),
        users(
            "FROM run_receipts s CROSS JOIN runs r ON r.id = s.run_id",
            "s.time_suspect IS NOT NULL AND NOT (r.finished_at >= ?2)"
        )
    )
}

/// Whether a time-suspect run recorded an artifact, its uses found as [`suspect_uses_from`]
/// says (a base image can be used by every run).
fn suspect_sighting_sql(few: bool) -> String {
    let from = suspect_uses_from(few);
    format!(
        "SELECT 1 {from}
         WHERE s.time_suspect IS NOT NULL
           AND e.kind IN ('imported', 'used_base', 'exported', 'produced') AND e.target = ?1
         LIMIT 1"
    )
}

fn read_kind(kind: &str) -> ArtifactRead {
    if kind == kind::USED_BASE {
        ArtifactRead::UsedBase
    } else {
        ArtifactRead::Imported
    }
}

impl Source for Store {
    type Error = StoreError;

    fn pipeline_runs(
        &mut self,
        pipeline: &str,
        since: Option<Micros>,
        until: Option<Micros>,
    ) -> Result<Option<Vec<RunInfo>>, StoreError> {
        let exists: Option<i64> = self
            .conn
            .query_row(
                "SELECT id FROM pipelines WHERE name = ?1",
                [pipeline],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        let Some(id) = exists else { return Ok(None) };
        let window = params![id, since.unwrap_or(i64::MIN), until.unwrap_or(i64::MAX)];
        let mut runs = self.runs_query(
            "WHERE r.pipeline_id = ?1 AND r.started_at >= ?2 AND r.started_at <= ?3",
            window,
        )?;
        // A time-suspect run is in every window: its claimed start cannot keep it out.
        if since.is_some() || until.is_some() {
            runs.extend(self.suspect_runs_query(OUTSIDE_WINDOW, window)?);
        }
        runs.sort_by_key(|run| (run.started_at, run.id));
        Ok(Some(runs))
    }

    fn runs_received_since(
        &mut self,
        pipeline: &str,
        at: Micros,
    ) -> Result<Vec<RunInfo>, StoreError> {
        self.runs_query(
            "JOIN run_receipts rr ON rr.run_id = r.id
             WHERE p.name = ?1 AND rr.received_at >= ?2 ORDER BY r.started_at, r.id",
            params![pipeline, at],
        )
    }

    fn runs_by_key(&mut self, key: &RunKey) -> Result<Vec<RunInfo>, StoreError> {
        match &key.step {
            Some(step) => self.runs_query(
                "WHERE p.name = ?1 AND r.run_key = ?2 AND r.step = ?3",
                params![key.pipeline, key.run_id, step],
            ),
            None => self.runs_query(
                "WHERE p.name = ?1 AND r.run_key = ?2 ORDER BY r.started_at",
                params![key.pipeline, key.run_id],
            ),
        }
    }

    fn artifacts_by_tag(
        &mut self,
        locator: &str,
        tag: &str,
        since: Option<Micros>,
        until: Option<Micros>,
    ) -> Result<Vec<ArtifactInfo>, StoreError> {
        // Seen under the tag in the window, or the digest it held when the window opened: the
        // last seen under it before, unless one was seen under it across the window's start.
        self.artifacts_query(
            "JOIN artifact_tags tt ON tt.artifact_id = a.id
             WHERE a.locator = ?1 AND tt.tag = ?2 AND tt.first_seen <= ?4
               AND (tt.last_seen >= ?3
                    OR a.digest <> '' AND tt.last_seen = (
                        SELECT max(t2.last_seen) FROM artifact_tags t2
                        JOIN artifacts a2 ON a2.id = t2.artifact_id
                        WHERE a2.locator = ?1 AND t2.tag = ?2 AND a2.digest <> ''
                          AND t2.last_seen < ?3)
                       AND NOT EXISTS (
                        SELECT 1 FROM artifact_tags t3
                        JOIN artifacts a3 ON a3.id = t3.artifact_id
                        WHERE a3.locator = ?1 AND t3.tag = ?2 AND a3.digest <> ''
                          AND t3.first_seen <= ?3 AND t3.last_seen >= ?3))
             ORDER BY a.id",
            params![
                locator,
                tag,
                since.unwrap_or(i64::MIN),
                until.unwrap_or(i64::MAX)
            ],
        )
    }

    fn tag_only_artifacts(
        &mut self,
        locator: &str,
        tag: &str,
    ) -> Result<Vec<ArtifactId>, StoreError> {
        self.rows(
            "SELECT a.id FROM artifacts a JOIN artifact_tags tt ON tt.artifact_id = a.id
             WHERE a.backend = ?1 AND a.locator = ?2 AND a.digest = '' AND tt.tag = ?3
             ORDER BY a.id",
            params![Backend::Registry.as_str(), locator, tag],
            |row| row.get(0),
        )
    }

    fn mounts_by_name(
        &mut self,
        builder: &str,
        mount_id: &str,
    ) -> Result<Vec<MountInfo>, StoreError> {
        self.rows("SELECT m.id, m.builder_id, b.name, m.namespace, m.mount_id FROM mounts m
                 JOIN builders b ON b.id = m.builder_id WHERE b.name = ?1 AND m.mount_id = ?2 ORDER BY m.id", params![builder, mount_id], mount_from_row)
    }

    fn builder_by_name(&mut self, name: &str) -> Result<Option<BuilderInfo>, StoreError> {
        self.conn
            .query_row(
                "SELECT id, name FROM builders WHERE name = ?1",
                [name],
                |row| {
                    Ok(BuilderInfo {
                        id: row.get(0)?,
                        name: text(row, 1)?,
                    })
                },
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    fn first_mount_use(&mut self, mount: MountId) -> Result<Option<Micros>, StoreError> {
        self.conn
            .query_row(
                "SELECT min(at) FROM events WHERE kind IN ('read_mount', 'wrote_mount') AND target = ?1",
                [mount],
                |row| row.get(0),
            )
            .map_err(|e| self.err(e))
    }

    fn first_builder_use(&mut self, builder: BuilderId) -> Result<Option<Micros>, StoreError> {
        self.conn
            .query_row(
                "SELECT min(started_at) FROM runs WHERE builder_id = ?1",
                [builder],
                |row| row.get(0),
            )
            .map_err(|e| self.err(e))
    }

    fn receipt(&mut self, run: RunId) -> Result<Option<Receipt>, StoreError> {
        self.conn
            .query_row(
                "SELECT received_at, late, identity,
                        (SELECT max(appended_at) FROM run_chain WHERE run_id = ?1), began_after
                 FROM run_receipts WHERE run_id = ?1",
                [run],
                |row| {
                    let identity: String = row.get(2)?;
                    let received_at: Micros = row.get(0)?;
                    let appended: Option<Micros> = row.get(3)?;
                    Ok(Receipt {
                        received_at,
                        late: row.get::<_, i64>(1)? != 0,
                        // `token:NAME` is a static token; `store` the store's own receipt.
                        expiring: !identity.starts_with("token:") && identity != "store",
                        last_seen: appended.map_or(received_at, |a| a.max(received_at)),
                        began_after: row.get(4)?,
                    })
                },
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    fn run(&mut self, run: RunId) -> Result<RunInfo, StoreError> {
        self.runs_query("WHERE r.id = ?1", [run])?
            .pop()
            .ok_or_else(|| StoreError::NotFound(format!("no run with id {run}")))
    }

    fn writes(&mut self, run: RunId) -> Result<Vec<(Write, Micros)>, StoreError> {
        self.rows(
            "SELECT kind, target, at FROM events WHERE run_id = ?1
                 AND kind IN ('exported', 'produced', 'wrote_mount', 'created_record')",
            [run],
            |row| {
                let kind: String = row.get(0)?;
                let target: i64 = row.get(1)?;
                let write = match kind.as_str() {
                    kind::EXPORTED => Write::Exported(target),
                    kind::PRODUCED => Write::Produced(target),
                    kind::WROTE_MOUNT => Write::Mount(target),
                    _ => Write::CreatedRecord(target),
                };
                Ok((write, row.get(2)?))
            },
        )
    }

    fn digest(&mut self, digest: &str) -> Result<DigestUses, StoreError> {
        let ids = self.rows(
            "SELECT id FROM artifacts WHERE digest = ?1 AND digest <> '' ORDER BY id",
            [digest],
            |row| row.get(0),
        )?;
        let sql = format!(
            // CROSS JOIN fixes the join order: artifacts by digest, then their events by
            // target. Left to itself the planner scans every import event.
            "SELECT {RUN_COLUMNS}, e.kind, e.at, a.id FROM artifacts a
             CROSS JOIN events e ON e.kind IN ('imported', 'used_base') AND e.target = a.id
             JOIN runs r ON r.id = e.run_id JOIN pipelines p ON p.id = r.pipeline_id
             WHERE a.digest = ?1 AND a.digest <> ''"
        );
        let doubted = self.doubted_records();
        let readers = self.rows(&sql, [digest], |row| {
            let kind: String = row.get(RUN_COLUMN_COUNT)?;
            Ok((
                RunRef::from(&run_from_row(row, &doubted)?),
                read_kind(&kind),
                row.get(RUN_COLUMN_COUNT + 2)?,
                row.get(RUN_COLUMN_COUNT + 1)?,
            ))
        })?;
        Ok((ids, readers))
    }

    fn artifact_readers(
        &mut self,
        artifact: ArtifactId,
    ) -> Result<Vec<(RunRef, ArtifactRead, Micros)>, StoreError> {
        Ok(self
            .event_runs("'imported', 'used_base'", artifact, i64::MIN)?
            .into_iter()
            .map(|(run, kind, at)| (RunRef::from(&run), read_kind(&kind), at))
            .collect())
    }

    fn mount_readers(
        &mut self,
        mount: MountId,
        since: Micros,
    ) -> Result<Vec<(RunRef, Micros)>, StoreError> {
        Ok(self
            .event_runs("'read_mount'", mount, since)?
            .into_iter()
            .map(|(run, _, at)| (RunRef::from(&run), at))
            .collect())
    }

    fn mount_read(&mut self, run: RunId, mount: MountId) -> Result<Option<Micros>, StoreError> {
        self.conn
            .query_row(
                "SELECT at FROM events WHERE run_id = ?1 AND kind = 'read_mount' AND target = ?2",
                [run, mount],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    fn mount_purges(&mut self, mount: MountId) -> Result<Vec<Micros>, StoreError> {
        // A prune of a builder's build records only cleans none of its mounts.
        self.rows(
            "SELECT at FROM purges WHERE (kind = 'mount' AND mount = ?1)
                    OR (kind = 'builder' AND records_only = 0
                        AND builder_id = (SELECT builder_id FROM mounts WHERE id = ?1))
                 ORDER BY at",
            [mount],
            |row| row.get(0),
        )
    }

    fn builder_purges(&mut self, builder: BuilderId) -> Result<Vec<BuilderPrune>, StoreError> {
        type Prune = (i64, Micros, bool, Option<Micros>, Micros);
        let prunes: Vec<Prune> = self.rows(
            "SELECT id, at, selective, records_since, records_skew FROM purges
             WHERE kind = 'builder' AND builder_id = ?1 ORDER BY at, id",
            [builder],
            |row| {
                let selective = row.get::<_, i64>(2)? != 0;
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    selective,
                    row.get(3)?,
                    row.get(4)?,
                ))
            },
        )?;
        prunes
            .into_iter()
            .map(|(id, at, selective, since, skew)| {
                let selective = if selective {
                    let mut records: Vec<RecordId> = self.rows(
                        "SELECT record FROM purge_records WHERE purge_id = ?1",
                        [id],
                        |row| row.get(0),
                    )?;
                    records.sort_unstable();
                    Some(Selective {
                        records,
                        since,
                        skew,
                    })
                } else {
                    None
                };
                Ok(BuilderPrune { at, selective })
            })
            .collect()
    }

    fn purges_at(&mut self, node: Purged, at: Micros) -> Result<Vec<StoredPurge>, StoreError> {
        let mut purges = match node {
            Purged::Mount(mount) => self.rows(
                &format!(
                    "SELECT {PURGE_COLUMNS} FROM {PURGE_FROM} WHERE u.at = ?2
                       AND ((u.kind = 'mount' AND u.mount = ?1) OR (u.kind = 'builder'
                       AND u.records_only = 0
                       AND u.builder_id = (SELECT builder_id FROM mounts WHERE id = ?1)))
                     ORDER BY u.id"
                ),
                [mount, at],
                purge_from_row,
            ),
            Purged::Builder(builder) => self.rows(
                &format!(
                    "SELECT {PURGE_COLUMNS} FROM {PURGE_FROM} WHERE u.at = ?2
                       AND u.kind = 'builder' AND u.builder_id = ?1 ORDER BY u.id"
                ),
                [builder, at],
                purge_from_row,
            ),
        }?;
        for purge in &mut purges {
            self.named_records(purge)?;
        }
        Ok(purges)
    }

    fn manifest_deleted_at(
        &mut self,
        locator: &str,
        digest: &str,
    ) -> Result<Option<Micros>, StoreError> {
        // The digest narrows the journal's rows; each target is then read whole.
        let rows: Vec<(String, Option<Micros>)> = self.rows(
            "SELECT target, finished_at FROM actions
             WHERE kind = 'delete-manifest' AND state = 'done' AND target LIKE ?1",
            params![format!("%{digest}%")],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        Ok(rows
            .into_iter()
            .filter(|(target, _)| {
                matches!(
                    serde_json::from_str(target),
                    Ok(crate::plan::Target::Manifest { registry, repository, digest: d, .. })
                        if d == digest && format!("{registry}/{repository}") == locator
                )
            })
            .filter_map(|(_, at)| at)
            .min())
    }

    fn named_after(&mut self, artifact: ArtifactId, at: Micros) -> Result<bool, StoreError> {
        let found: Vec<i64> = self.rows(
            "SELECT 1 FROM events e
             WHERE e.kind IN ('imported', 'used_base', 'exported', 'produced')
               AND e.target = ?1 AND e.at > ?2
             LIMIT 1",
            params![artifact, at],
            |row| row.get(0),
        )?;
        Ok(!found.is_empty())
    }

    fn suspect_sighting(&mut self, artifact: ArtifactId) -> Result<bool, StoreError> {
        let sql = suspect_sighting_sql(self.few_suspects()?);
        let found: Vec<i64> = self.rows(&sql, params![artifact], |row| row.get(0))?;
        Ok(!found.is_empty())
    }

    fn record_cocreators(&mut self, record: RecordId) -> Result<Vec<(RunRef, Micros)>, StoreError> {
        Ok(crate::graph::source::cocreators(
            self.event_runs("'created_record'", record, i64::MIN)?
                .into_iter()
                .map(|(run, _, at)| (RunRef::from(&run), at))
                .collect(),
        ))
    }

    /// The builder's records no run created: a run whose record evidence is doubted
    /// ([`Store::doubt_records_at`]) creates none, whatever it claims.
    fn orphan_records(&mut self, builder: BuilderId) -> Result<Vec<RecordId>, StoreError> {
        let doubted = self.doubted_records();
        self.rows(
            "SELECT br.id FROM builder_records br WHERE br.builder_id = ?1 AND NOT EXISTS
               (SELECT 1 FROM events e JOIN runs r ON r.id = e.run_id
                WHERE e.kind = 'created_record' AND e.target = br.id
                  AND (r.trust_level IS NULL OR r.trust_level <> ?2))
             ORDER BY br.id",
            params![builder, doubted],
            |row| row.get(0),
        )
    }

    fn record_reusers(&mut self, record: RecordId) -> Result<Vec<(RunRef, Micros)>, StoreError> {
        Ok(self
            .event_runs("'reused_record'", record, i64::MIN)?
            .into_iter()
            .map(|(run, _, at)| (RunRef::from(&run), at))
            .collect())
    }

    fn unverified_builder_runs(
        &mut self,
        builder: BuilderId,
        since: Micros,
    ) -> Result<Vec<RunRef>, StoreError> {
        let doubted = self.doubted_records();
        let range = params![builder, since, doubted];
        let mut runs = self.runs_query(UNVERIFIED_SINCE, range)?;
        runs.extend(self.suspect_runs_query(UNVERIFIED_BEFORE, range)?);
        Ok(runs.iter().map(RunRef::from).collect())
    }

    fn builder_record_users(
        &mut self,
        builder: BuilderId,
        since: Micros,
    ) -> Result<Vec<(RunRef, Micros)>, StoreError> {
        let sql = builder_record_users_sql();
        let doubted = self.doubted_records();
        self.rows(&sql, params![builder, since, doubted], |row| {
            Ok((
                RunRef::from(&run_from_row(row, &doubted)?),
                row.get(RUN_COLUMN_COUNT)?,
            ))
        })
    }

    fn artifact(&mut self, artifact: ArtifactId) -> Result<ArtifactInfo, StoreError> {
        self.artifacts_query("WHERE a.id = ?1", [artifact])?
            .pop()
            .ok_or_else(|| StoreError::NotFound(format!("no artifact with id {artifact}")))
    }

    fn mount(&mut self, mount: MountId) -> Result<MountInfo, StoreError> {
        self.conn
            .query_row(
                "SELECT m.id, m.builder_id, b.name, m.namespace, m.mount_id FROM mounts m
                 JOIN builders b ON b.id = m.builder_id WHERE m.id = ?1",
                [mount],
                mount_from_row,
            )
            .map_err(|e| self.err(e))
    }

    fn builder(&mut self, builder: BuilderId) -> Result<BuilderInfo, StoreError> {
        self.conn
            .query_row(
                "SELECT id, name FROM builders WHERE id = ?1",
                [builder],
                |row| {
                    Ok(BuilderInfo {
                        id: row.get(0)?,
                        name: text(row, 1)?,
                    })
                },
            )
            .map_err(|e| self.err(e))
    }

    fn record(&mut self, record: RecordId) -> Result<RecordInfo, StoreError> {
        // A believed run's words for a record that a doubted one named first stand for it
        // (`record_descriptions`); words with no doubted ones before them are no store's.
        self.conn
            .query_row(
                "SELECT r.id, r.builder_id, r.record_id,
                        coalesce(b.record_type, r.record_type), coalesce(b.description, r.description),
                        CASE WHEN d.record IS NOT NULL AND b.record IS NULL THEN 1 ELSE 0 END
                 FROM builder_records r
                 LEFT JOIN record_descriptions d ON d.record = r.id AND d.believed = 0
                 LEFT JOIN record_descriptions b
                        ON b.record = r.id AND b.believed = 1 AND d.record IS NOT NULL
                 WHERE r.id = ?1",
                [record],
                |row| {
                    Ok(RecordInfo {
                        id: row.get(0)?,
                        builder: row.get(1)?,
                        record_id: text(row, 2)?,
                        record_type: text(row, 3)?,
                        description: row.get::<_, String>(4)?.into(),
                        doubted: row.get::<_, i64>(5)? == 1,
                    })
                },
            )
            .map_err(|e| self.err(e))
    }
}

/// A record's type and description on an exported run's line (`e`, the event; `br`, the
/// record; `fr`, the first run to name a record a doubted run named first; `bw`, a believed
/// run's words for it): see `Store::export_runs`.
const RUN_RECORD_WORDS: &str = "
        CASE WHEN fr.record IS NULL OR fr.run = e.run_id THEN br.record_type
             ELSE coalesce(bw.record_type, '') END,
        CASE WHEN fr.record IS NULL OR fr.run = e.run_id THEN br.description
             ELSE coalesce(bw.description, '') END";

/// The records a doubted run named first, each with that run: read once for an export, not
/// once an event.
const FIRST_NAMED: &str = "WITH firsts AS MATERIALIZED (
        SELECT d.record,
               (SELECT f.run_id FROM events f
                WHERE f.target = d.record AND f.kind IN ('created_record', 'reused_record')
                ORDER BY f.id LIMIT 1) AS run
        FROM record_descriptions d WHERE d.believed = 0)";

impl Store {
    /// The record descriptions a believed run gave after a doubted one named the record first,
    /// and the records only a doubted run has described (`None`), by record.
    pub(crate) fn record_descriptions(
        &self,
    ) -> Result<HashMap<RecordId, Option<(String, String)>>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT record, believed, record_type, description FROM record_descriptions")
            .map_err(|e| self.err(e))?;
        let mut rows = stmt.query([]).map_err(|e| self.err(e))?;
        let mut described: HashMap<RecordId, (bool, Option<(String, String)>)> = HashMap::new();
        while let Some(row) = rows.next().map_err(|e| self.err(e))? {
            let (record, believed): (RecordId, i64) = (
                row.get(0).map_err(|e| self.err(e))?,
                row.get(1).map_err(|e| self.err(e))?,
            );
            let words = (believed == 1)
                .then(|| Ok::<_, crate::store::db::DbError>((row.get(2)?, row.get(3)?)))
                .transpose()
                .map_err(|e| self.err(e))?;
            let entry = described.entry(record).or_insert((false, None));
            match words {
                Some(words) => entry.1 = Some(words),
                None => entry.0 = true,
            }
        }
        // Words with no doubted ones before them are no store's: left out.
        Ok(described
            .into_iter()
            .filter(|(_, (doubted, _))| *doubted)
            .map(|(record, (_, words))| (record, words))
            .collect())
    }
}

fn mount_from_row(row: &Row<'_>) -> crate::store::db::DbResult<MountInfo> {
    Ok(MountInfo {
        id: row.get(0)?,
        builder: row.get(1)?,
        builder_name: text(row, 2)?,
        namespace: text(row, 3)?,
        mount_id: text(row, 4)?,
    })
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;
    use rusqlite_migration::{M, Migrations};

    use super::*;

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

    /// A store with the latest schema and nothing in it, opened as a plain connection.
    fn bare_store() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        drop(Store::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        (dir, conn)
    }

    /// How SQLite would answer `sql`: the detail of each step of its plan.
    fn plan(conn: &Connection, sql: &str) -> Vec<String> {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        // Parameters left unbound: a plan does not depend on their values.
        let mut rows = stmt.raw_query();
        let mut steps = Vec::new();
        while let Some(row) = rows.next().unwrap() {
            steps.push(row.get(3).unwrap());
        }
        steps
    }

    /// The queries a trace asks about a shared mount, builder or base image read one range
    /// of an index, and the time-suspect runs from their receipts: never every run on a
    /// builder or every use of a mount, which on a fleet's store are millions of rows. So
    /// with and without the statistics `PRAGMA optimize` leaves on such a store. So do
    /// `mark-purged`'s last use of a builder and `ls mounts --pipeline`, and a bulk import's
    /// read of the events it added, which must not go through the index by kind.
    #[test]
    fn trace_queries_read_one_range_of_an_index() {
        let (_dir, conn) = bare_store();
        // The receipts' partial index is walked whole: it holds the suspect runs only.
        let receipts = "SCAN s USING INDEX run_receipts_time_suspect";
        let by_run = "sqlite_autoindex_events_1 (run_id=? AND kind=? AND target=?)";
        let runs_by_finish = "runs_by_builder_finish (builder_id=? AND finished_at>?)";
        let uses_since = "events_by_target (kind=? AND target=? AND at>?)";
        let cases: [(String, &[&str]); 11] = [
            (
                super::super::pages::EVENTS_SELECT.to_owned(),
                &["SEARCH events USING INTEGER PRIMARY KEY (rowid>?)"],
            ),
            (
                super::super::ls::PIPELINE_MOUNTS.to_owned(),
                &[
                    "runs_by_pipeline_start (pipeline_id=?)",
                    "sqlite_autoindex_events_1 (run_id=? AND kind=?)",
                ],
            ),
            (
                BUILDER_LAST_USE.to_owned(),
                &[
                    "runs_by_builder_finish (builder_id=?)",
                    "events_by_target (kind=? AND target=?)",
                ],
            ),
            (
                event_runs_sql("'read_mount'", true),
                &[uses_since, receipts, by_run],
            ),
            // Many suspect runs: each found among the target's earlier uses.
            (
                event_runs_sql("'read_mount'", false),
                &[
                    uses_since,
                    "events_by_target (kind=? AND target=? AND at<?)",
                    "SEARCH s USING",
                ],
            ),
            (
                suspect_sighting_sql(false),
                &["events_by_target (kind=? AND target=?)", "SEARCH s USING"],
            ),
            (suspect_runs_sql(OUTSIDE_WINDOW), &[receipts]),
            (runs_sql(UNVERIFIED_SINCE), &[runs_by_finish]),
            (suspect_runs_sql(UNVERIFIED_BEFORE), &[receipts]),
            (
                builder_record_users_sql(),
                &[
                    runs_by_finish,
                    receipts,
                    "sqlite_autoindex_events_1 (run_id=? AND kind=?)",
                ],
            ),
            (suspect_sighting_sql(true), &[receipts, by_run]),
        ];
        for stats in [false, true] {
            if stats {
                conn.execute_batch(
                    "ANALYZE;
                     INSERT INTO sqlite_stat1 VALUES
                        ('pipelines', 'sqlite_autoindex_pipelines_1', '5000 1'),
                        ('runs', 'runs_by_builder_start', '1000000 2001 1'),
                        ('runs', 'runs_by_builder_finish', '1000000 2001 1'),
                        ('runs', 'runs_by_pipeline_start', '1000000 182 1'),
                        ('runs', 'sqlite_autoindex_runs_1', '1000000 182 1 1'),
                        ('builder_records', 'sqlite_autoindex_builder_records_1', '2000000 2001 1'),
                        ('events', 'events_by_target', '10478246 2001 1 1'),
                        ('events', 'sqlite_autoindex_events_1', '10478246 9 2 1'),
                        ('run_receipts', 'run_receipts_time_suspect', '10 1');
                     ANALYZE sqlite_schema;",
                )
                .unwrap();
            }
            for (sql, wanted) in &cases {
                let plan = plan(&conn, sql);
                for step in *wanted {
                    assert!(
                        plan.iter().any(|p| p.contains(step)),
                        "stats {stats}: no `{step}` in {plan:?} for {sql}"
                    );
                }
                // Every other table is searched: by key, or by a range of an index. (A
                // subquery's rows, limited where it is made, are read whole.)
                let subquery = |step: &str| {
                    step.strip_prefix("SCAN ")
                        .is_some_and(|name| plan.contains(&format!("CO-ROUTINE {name}")))
                };
                for step in &plan {
                    assert!(
                        !step.starts_with("SCAN") || step == receipts || subquery(step),
                        "stats {stats}: `{step}` in {plan:?} for {sql}"
                    );
                }
            }
        }
    }

    /// Purges stored before provenance was kept cannot be vouched for (any import line could
    /// set their source): the migration makes them `imported` by an unknown author at an
    /// unknown time, whatever their source says, and keeps the source.
    #[test]
    fn purges_from_before_provenance_are_backfilled_as_imported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let mut conn = Connection::open(&path).unwrap();
        let before: Vec<M<'_>> = super::super::MIGRATION_SQL[..6]
            .iter()
            .map(|sql| M::up(sql))
            .collect();
        Migrations::new(before).to_latest(&mut conn).unwrap();
        conn.execute_batch(
            "INSERT INTO builders (id, name) VALUES (1, 'ci-1');
             INSERT INTO mounts (id, builder_id, mount_id) VALUES (1, 1, '/root/.cache/pip');
             INSERT INTO purges (kind, builder_id, mount, at, source)
                 VALUES ('mount', 1, 1, 10, 'mark-purged'), ('builder', 1, NULL, 20, 'incident 3');",
        )
        .unwrap();
        drop(conn);
        let store = Store::open(&path).unwrap();
        let stored = purges(&store);
        assert_eq!(stored.len(), 2);
        for (purge, source) in stored.iter().zip(["mark-purged", "incident 3"]) {
            assert_eq!(purge.method, PurgeMethod::Imported);
            assert_eq!(purge.author, "");
            assert_eq!(purge.recorded_at, None);
            assert_eq!(purge.action, None);
            assert_eq!(purge.claimed, None);
            assert_eq!(purge.source, source);
        }
    }

    /// A recorded purge is history: the store refuses to rewrite or remove it.
    #[test]
    fn purges_are_append_only() {
        let (_dir, conn) = bare_store();
        conn.execute_batch(
            "INSERT INTO builders (id, name) VALUES (1, 'ci-1');
             INSERT INTO purges (kind, builder_id, at, method, author)
                 VALUES ('builder', 1, 10, 'manual', 'alice@host');",
        )
        .unwrap();
        for sql in [
            "UPDATE purges SET at = 5",
            "UPDATE purges SET method = 'executor'",
            "DELETE FROM purges",
        ] {
            let err = conn.execute_batch(sql).unwrap_err();
            assert!(err.to_string().contains("append-only"), "{sql}: {err}");
        }
        let err = conn
            .execute_batch(
                "INSERT INTO purges (kind, builder_id, at, method) VALUES ('builder', 1, 1, 'vendor')",
            )
            .unwrap_err();
        assert!(err.to_string().contains("CHECK"), "{err}");
    }
}
