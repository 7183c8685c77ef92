//! Sweeps: what a policy may decide about, and the sweep's incident row.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{Store, StoreError, sql_error};
use crate::plan::{Action, Target};
use crate::store::db::{OptionalExtension, params};
use crate::sweep::{CacheRefCandidate, Candidates, MountCandidate, PipelineFacts, RecordCandidate};
use crate::time::{self, Micros};

/// Which kinds of entity to load.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepKinds {
    pub cache_refs: bool,
    pub mounts: bool,
    pub records: bool,
}

impl Store {
    /// Whether the store keeps its sweep lock itself (PostgreSQL: a row in `store_locks`,
    /// shared by every machine) rather than beside its file (SQLite).
    pub fn locks_in_store(&self) -> bool {
        self.conn.engine() == crate::store::db::Engine::Postgres
    }

    /// Takes the lock `name` for `owner` (`host:pid`): `Ok(None)` when taken, else the holder.
    /// A holder on this host whose process is gone is taken over.
    pub fn take_lock(&mut self, name: &str, owner: &str) -> Result<Option<String>, StoreError> {
        let path = self.path.clone();
        let err = |e| sql_error(&path, e);
        let tx = self.conn.transaction().map_err(err)?;
        let holder: Option<(String, Micros)> = tx
            .query_row(
                "SELECT owner, taken_at FROM store_locks WHERE name = ?1",
                [name],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .map_err(err)?;
        if let Some((holder, at)) = holder
            && holder != owner
            && crate::actor::lock_holder_alive(&holder)
        {
            return Ok(Some(format!("{holder} since {}", time::format(at))));
        }
        tx.execute(
            "INSERT INTO store_locks (name, owner, taken_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, taken_at = excluded.taken_at",
            params![name, owner, time::now()],
        )
        .map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(None)
    }

    /// Releases the lock `name` if `owner` holds it.
    pub fn release_lock(&mut self, name: &str, owner: &str) -> Result<(), StoreError> {
        self.conn
            .execute(
                "DELETE FROM store_locks WHERE name = ?1 AND owner = ?2",
                params![name, owner],
            )
            .map(|_| ())
            .map_err(|e| sql_error(&self.path, e))
    }

    /// Stores a sweep as an incident of kind `sweep` with its plan; returns its id.
    pub fn create_sweep(
        &mut self,
        title: &str,
        opened_by: &str,
        seeds: &str,
        trace: &str,
        actions: &[Action],
    ) -> Result<i64, StoreError> {
        self.create_with_plan("sweep", title, opened_by, seeds, trace, actions)
    }

    /// Closes sweeps left open by a process that died mid-sweep; the caller holds the sweep
    /// lock, so none of them is running. Their unfinished actions stay in the journal as they
    /// are, and the next plan covers what they left. Returns how many were closed.
    pub fn close_interrupted_sweeps(&mut self) -> Result<usize, StoreError> {
        self.conn
            .execute(
                "UPDATE incidents SET status = 'closed', closed_at = ?1, closed_by = 'sweep (interrupted)'
                 WHERE kind = 'sweep' AND status = 'open'",
                [time::now()],
            )
            .map_err(|e| sql_error(&self.path, e))
    }

    /// The caches, mounts and records a sweep may decide about, each with the pipelines that
    /// wrote or used it and when it was last written or used. What an earlier purge already
    /// removed (and nothing has written since) is left out.
    pub fn sweep_candidates(&self, kinds: SweepKinds) -> Result<Candidates, StoreError> {
        let mut candidates = Candidates::default();
        let done = self.done_targets()?;
        if kinds.cache_refs {
            candidates.cache_refs = self.cache_ref_candidates(&done)?;
        }
        if kinds.mounts {
            candidates.mounts = self.mount_candidates()?;
        }
        if kinds.records {
            candidates.records = self.record_candidates(&done)?;
        }
        Ok(candidates)
    }

    fn done_targets(&self) -> Result<DoneTargets, StoreError> {
        let rows: Vec<(String, Option<Micros>)> = self.rows(
            "SELECT target, finished_at FROM actions
                 WHERE state = 'done' AND kind IN ('delete-manifest', 'prune-builder')",
            [],
            |row| row.try_into(),
        )?;
        let mut done = DoneTargets::default();
        for (target, finished) in rows {
            let at = finished.unwrap_or(Micros::MAX);
            match serde_json::from_str::<Target>(&target) {
                Ok(Target::Manifest {
                    registry,
                    repository,
                    digest,
                    ..
                }) => {
                    let t = done
                        .manifests
                        .entry((registry, repository, digest))
                        .or_insert(at);
                    *t = (*t).max(at);
                }
                Ok(Target::Builder {
                    builder,
                    record_ids,
                    full,
                    ..
                }) => {
                    done.records
                        .extend(record_ids.into_iter().map(|id| (builder.clone(), id)));
                    if full {
                        let t = done.full_prunes.entry(builder).or_insert(at);
                        *t = (*t).max(at);
                    }
                }
                _ => {}
            }
        }
        Ok(done)
    }

    /// Pipelines by event target, for events of the given kinds.
    fn pipelines_by_target(
        &self,
        kinds: &str,
    ) -> Result<HashMap<i64, Vec<PipelineFacts>>, StoreError> {
        let sql = format!(
            "SELECT DISTINCT e.target, p.name, p.project, r.trust_level FROM events e
             JOIN runs r ON r.id = e.run_id JOIN pipeline_current p ON p.id = r.pipeline_id
             WHERE e.kind IN ({kinds})"
        );
        let mut stmt = self
            .conn
            .prepare(&sql)
            .map_err(|e| sql_error(&self.path, e))?;
        let mut rows = stmt.query([]).map_err(|e| sql_error(&self.path, e))?;
        let mut out: HashMap<i64, Vec<PipelineFacts>> = HashMap::new();
        while let Some(row) = rows.next().map_err(|e| sql_error(&self.path, e))? {
            let read = || -> crate::store::db::DbResult<(i64, PipelineFacts)> {
                Ok((
                    row.get(0)?,
                    PipelineFacts {
                        name: row.get(1)?,
                        project: row.get(2)?,
                        trust_level: row.get(3)?,
                    },
                ))
            };
            let (target, facts) = read().map_err(|e| sql_error(&self.path, e))?;
            out.entry(target).or_default().push(facts);
        }
        for list in out.values_mut() {
            list.sort();
        }
        Ok(out)
    }

    fn cache_ref_candidates(
        &self,
        done: &DoneTargets,
    ) -> Result<Vec<CacheRefCandidate>, StoreError> {
        let mut pipelines = self.pipelines_by_target("'exported'")?;
        type Row = (i64, String, String, Option<String>, Micros, Micros);
        let sql = "SELECT a.id, a.locator, a.digest,
                    (SELECT string_agg(tag, char(31) ORDER BY tag) FROM artifact_tags t WHERE t.artifact_id = a.id),
                    (SELECT max(e.at) FROM events e WHERE e.kind = 'exported' AND e.target = a.id),
                    (SELECT max(e.at) FROM events e WHERE e.kind IN ('exported', 'imported') AND e.target = a.id)
                 FROM artifacts a
                 WHERE a.backend = 'registry' AND a.digest <> ''
                   AND EXISTS (SELECT 1 FROM events e WHERE e.kind = 'exported' AND e.target = a.id)
                   AND NOT EXISTS (SELECT 1 FROM events e WHERE e.kind IN ('produced', 'used_base') AND e.target = a.id)
                 ORDER BY a.locator, a.digest";
        let rows: Vec<Row> = self.rows(sql, [], |row| row.try_into())?;
        let mut out = Vec::with_capacity(rows.len());
        for (id, locator, digest, tags, last_write, last_use) in rows {
            let Some((registry, repository)) = locator.split_once('/') else {
                continue;
            };
            let key = (registry.to_owned(), repository.to_owned(), digest.clone());
            if done
                .manifests
                .get(&key)
                .is_some_and(|deleted| *deleted >= last_write)
            {
                continue;
            }
            out.push(CacheRefCandidate {
                registry: key.0,
                repository: key.1,
                digest,
                tags: tags
                    .map(|t| t.split('\u{1f}').map(str::to_owned).collect())
                    .unwrap_or_default(),
                pipelines: pipelines.remove(&id).unwrap_or_default(),
                last_write,
                last_use,
            });
        }
        Ok(out)
    }

    fn mount_candidates(&self) -> Result<Vec<MountCandidate>, StoreError> {
        let pipelines = self.pipelines_by_target("'read_mount', 'wrote_mount'")?;
        type Row = (i64, String, String, Option<Micros>, Option<Micros>);
        let sql = "SELECT m.id, b.name, m.mount_id,
                    (SELECT max(e.at) FROM events e WHERE e.kind IN ('read_mount', 'wrote_mount') AND e.target = m.id),
                    (SELECT max(u.at) FROM purges u WHERE u.kind = 'mount' AND u.mount = m.id)
                 FROM mounts m JOIN builders b ON b.id = m.builder_id
                 WHERE m.namespace = ''";
        // A mount under a namespace of its own (`BUILDKIT_CACHE_MOUNT_NS`) is left alone: a
        // prune by id finds the default namespace's mount of that id. Every other spelling of
        // a mount is stored under the default namespace.
        let rows: Vec<Row> = self.rows(sql, [], |row| row.try_into())?;
        #[derive(Default)]
        struct Merged {
            pipelines: BTreeSet<PipelineFacts>,
            last_use: Option<Micros>,
            purged: Option<Micros>,
        }
        let mut merged: BTreeMap<(String, String), Merged> = BTreeMap::new();
        for (id, builder, mount_id, last_use, purged) in rows {
            let entry = merged.entry((builder, mount_id)).or_default();
            entry
                .pipelines
                .extend(pipelines.get(&id).into_iter().flatten().cloned());
            entry.last_use = entry.last_use.max(last_use);
            entry.purged = entry.purged.max(purged);
        }
        Ok(merged
            .into_iter()
            .filter_map(|((builder, mount_id), m)| {
                let last_use = m.last_use?;
                // Emptied since its last use: nothing to sweep.
                if m.purged.is_some_and(|p| p >= last_use) {
                    return None;
                }
                Some(MountCandidate {
                    builder,
                    mount_id,
                    pipelines: m.pipelines.into_iter().collect(),
                    last_use,
                })
            })
            .collect())
    }

    fn record_candidates(&self, done: &DoneTargets) -> Result<Vec<RecordCandidate>, StoreError> {
        let mut pipelines = self.pipelines_by_target("'created_record', 'reused_record'")?;
        type Row = (
            i64,
            String,
            String,
            Option<i64>,
            Option<Micros>,
            Option<Micros>,
            Option<Micros>,
        );
        let sql = "SELECT br.id, b.name, br.record_id, br.size, br.last_used_at, br.created_at,
                    (SELECT max(e.at) FROM events e WHERE e.kind IN ('created_record', 'reused_record') AND e.target = br.id)
                 FROM builder_records br JOIN builders b ON b.id = br.builder_id
                 ORDER BY b.name, br.record_id";
        let rows: Vec<Row> = self.rows(sql, [], |row| row.try_into())?;
        let mut out = Vec::with_capacity(rows.len());
        for (id, builder, record_id, size, last_used_at, created_at, event_at) in rows {
            let Some(last_use) = [last_used_at, created_at, event_at]
                .into_iter()
                .flatten()
                .max()
            else {
                continue;
            };
            if done.records.contains(&(builder.clone(), record_id.clone()))
                || done
                    .full_prunes
                    .get(&builder)
                    .is_some_and(|at| *at >= last_use)
            {
                continue;
            }
            out.push(RecordCandidate {
                builder,
                record_id,
                size,
                pipelines: pipelines.remove(&id).unwrap_or_default(),
                last_use,
            });
        }
        Ok(out)
    }
}

/// What done actions of earlier incidents and sweeps already removed.
#[derive(Debug, Default)]
struct DoneTargets {
    /// (registry, repository, digest) -> when it was deleted.
    manifests: BTreeMap<(String, String, String), Micros>,
    /// (builder, record id) pruned by id.
    records: BTreeSet<(String, String)>,
    /// Builder -> its latest full prune.
    full_prunes: BTreeMap<String, Micros>,
}
