//! Per-step cache hits (`step_events`, migration 0017) and what `audit builds` reads and
//! stores: the steps with the runs that created the records that served them, the builds
//! `collect` found no hook recorded, and the audit's findings.

use crate::store::db::{DbResult, OptionalExtension, Transaction, params};

use super::audit::insert_findings;
use super::{Store, StoreError, sql_error};
use crate::audit::builds::{HistoryRow, RunRef, StepRow, UnrecordedBuild};
use crate::audit::{Finding, Reported};
use crate::ingest::progress::{Mode, StepHit};
use crate::model::run_name;
use crate::time::Micros;

impl Store {
    /// Appends a run's steps, read from its progress output, to the run recorded under this
    /// key. Steps it already has are kept as they are (a repeat adds nothing). Returns how
    /// many were added.
    pub fn record_steps(
        &mut self,
        key: (&str, &str, &str),
        hits: &[StepHit],
        mode: Mode,
        at: Micros,
    ) -> Result<usize, StoreError> {
        let path = self.path.clone();
        let err = |e| sql_error(&path, e);
        let tx = self.conn.transaction().map_err(err)?;
        let (pipeline, run_key, step) = key;
        let run: Option<i64> = tx
            .query_row(
                "SELECT r.id FROM runs r JOIN pipelines p ON p.id = r.pipeline_id
                 WHERE p.name = ?1 AND r.run_key = ?2 AND r.step = ?3",
                params![pipeline, run_key, step],
                |row| row.get(0),
            )
            .optional()
            .map_err(err)?;
        let Some(run) = run else {
            return Err(StoreError::NotFound(format!(
                "no run `{}` to add steps to",
                run_name(pipeline, run_key, step)
            )));
        };
        let added = insert_steps(&tx, run, hits, mode, at).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(added)
    }

    /// Every recorded step, oldest first, with its run, and for a hit on a record, the runs
    /// that created that record.
    pub fn step_rows(&self) -> Result<Vec<StepRow>, StoreError> {
        let mut rows: Vec<(StepRow, Option<i64>)> = self.rows(
            "SELECT p.name, r.run_key, r.step, r.trust_level, coalesce(b.name, ''), s.name, s.digest,
                    s.cached, s.at, s.record_id, br.record_id
             FROM step_events s
             JOIN runs r ON r.id = s.run_id
             JOIN pipelines p ON p.id = r.pipeline_id
             LEFT JOIN builders b ON b.id = r.builder_id
             LEFT JOIN builder_records br ON br.id = s.record_id
             ORDER BY s.at, s.id",
            [],
            |row| {
                let pipeline: String = row.get(0)?;
                let run = RunRef {
                    name: run_name(&pipeline, &row.get::<_, String>(1)?, &row.get::<_, String>(2)?),
                    pipeline,
                    trust_level: row.get(3)?,
                };
                Ok((
                    StepRow {
                        run,
                        builder: row.get(4)?,
                        name: row.get(5)?,
                        digest: Some(row.get::<_, String>(6)?).filter(|d| !d.is_empty()),
                        cached: row.get(7)?,
                        at: row.get(8)?,
                        record: row.get(10)?,
                        creators: Vec::new(),
                    },
                    row.get(9)?,
                ))
            },
        )?;
        let mut creators = self
            .conn
            .prepare_cached(
                "SELECT p.name, r.run_key, r.step, r.trust_level FROM events e
                 JOIN runs r ON r.id = e.run_id JOIN pipelines p ON p.id = r.pipeline_id
                 WHERE e.kind = 'created_record' AND e.target = ?1 ORDER BY r.id",
            )
            .map_err(|e| self.sql(e))?;
        for (row, record) in &mut rows {
            let Some(record) = record else { continue };
            row.creators = creators
                .query_map([*record], |r| {
                    let pipeline: String = r.get(0)?;
                    Ok(RunRef {
                        name: run_name(&pipeline, &r.get::<_, String>(1)?, &r.get::<_, String>(2)?),
                        pipeline,
                        trust_level: r.get(3)?,
                    })
                })
                .and_then(|rows| rows.collect::<crate::store::db::DbResult<Vec<_>>>())
                .map_err(|e| self.sql(e))?;
        }
        Ok(rows.into_iter().map(|(row, _)| row).collect())
    }

    /// Every build `collect` read from a builder's history, oldest first, with BuildKit's step
    /// counts from its stored facts, and whether its run has step events.
    pub fn history_step_counts(&self) -> Result<Vec<HistoryRow>, StoreError> {
        self.rows(
            "SELECT p.name, r.run_key, r.step, r.trust_level, b.name, h.completed_at, h.facts,
                    h.matched_by,
                    CAST(CASE WHEN EXISTS (SELECT 1 FROM step_events s WHERE s.run_id = h.run_id)
                              THEN 1 ELSE 0 END AS BIGINT)
             FROM build_history h
             JOIN builders b ON b.id = h.builder_id
             JOIN runs r ON r.id = h.run_id
             JOIN pipelines p ON p.id = r.pipeline_id
             ORDER BY h.completed_at, h.id",
            [],
            |row| {
                let pipeline: String = row.get(0)?;
                let facts: String = row.get(6)?;
                // Stored by `collect` from a checked record; a value it cannot read counts
                // nothing.
                let facts: serde_json::Value = serde_json::from_str(&facts).unwrap_or_default();
                let counted = |key: &str| facts[key].as_u64().unwrap_or(0);
                Ok(HistoryRow {
                    run: RunRef {
                        name: run_name(
                            &pipeline,
                            &row.get::<_, String>(1)?,
                            &row.get::<_, String>(2)?,
                        ),
                        pipeline,
                        trust_level: row.get(3)?,
                    },
                    builder: row.get(4)?,
                    at: row.get(5)?,
                    cached_steps: counted("cached_steps"),
                    total_steps: counted("total_steps"),
                    recorded: row.get::<_, String>(7)? != "unrecorded",
                    has_steps: row.get::<_, i64>(8)? == 1,
                })
            },
        )
    }

    /// Builds `collect` found in a builder's history that no hook recorded, finished at or
    /// after `since`.
    pub fn unrecorded_builds(
        &self,
        since: Option<Micros>,
    ) -> Result<Vec<UnrecordedBuild>, StoreError> {
        self.rows(
            "SELECT b.name, h.build_ref, p.name, r.run_key, r.step, h.created_at, h.completed_at
             FROM build_history h
             JOIN builders b ON b.id = h.builder_id
             JOIN runs r ON r.id = h.run_id
             JOIN pipelines p ON p.id = r.pipeline_id
             WHERE h.matched_by = 'unrecorded' AND (CAST(?1 AS BIGINT) IS NULL OR h.completed_at >= ?1)
             ORDER BY h.completed_at, h.id",
            [since],
            |row| {
                Ok(UnrecordedBuild {
                    builder: row.get(0)?,
                    build_ref: row.get(1)?,
                    run: run_name(
                        &row.get::<_, String>(2)?,
                        &row.get::<_, String>(3)?,
                        &row.get::<_, String>(4)?,
                    ),
                    created_at: row.get(5)?,
                    completed_at: row.get(6)?,
                })
            },
        )
    }

    /// Stores the findings of one `audit builds` (a finding already stored under its
    /// fingerprint is not new). Returns every finding with its id.
    pub fn save_build_audit(
        &mut self,
        findings: &[Finding],
        now: Micros,
    ) -> Result<Vec<Reported>, StoreError> {
        let path = self.path.clone();
        let err = |e| sql_error(&path, e);
        let tx = self.conn.transaction().map_err(err)?;
        let reported;
        {
            reported = insert_findings(&tx, findings, "build", now).map_err(err)?;
        }
        tx.commit().map_err(err)?;
        Ok(reported)
    }
}

/// Appends steps to the run with row id `run` inside `tx`; a step it already has is kept as
/// it is. Returns how many were added.
pub(super) fn insert_steps(
    tx: &Transaction<'_>,
    run: i64,
    hits: &[StepHit],
    mode: Mode,
    at: Micros,
) -> DbResult<usize> {
    let builder: Option<i64> =
        tx.query_row("SELECT builder_id FROM runs WHERE id = ?1", [run], |row| {
            row.get(0)
        })?;
    let mut added = 0;
    let mut record = tx.prepare_cached(
        "SELECT id FROM builder_records WHERE builder_id = ?1 AND record_id = ?2",
    )?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO step_events (run_id, ordinal, name, digest, cached, record_id, at, source)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (run_id, ordinal) DO NOTHING",
    )?;
    for (ordinal, hit) in hits.iter().enumerate() {
        let record_row: Option<i64> = match (&hit.record, builder) {
            (Some(id), Some(builder)) => record
                .query_row(params![builder, id], |row| row.get(0))
                .optional()?,
            _ => None,
        };
        added += insert.execute(params![
            run,
            ordinal as i64,
            hit.step.name,
            hit.step.digest.as_deref().unwrap_or(""),
            hit.step.cached,
            record_row,
            at,
            mode.as_str()
        ])?;
    }
    Ok(added)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::progress::Step;

    fn hit(name: &str, cached: bool, record: Option<&str>) -> StepHit {
        StepHit {
            step: Step {
                name: name.into(),
                digest: None,
                cached,
            },
            record: record.map(str::to_owned),
        }
    }

    /// Steps are append-only: a repeat adds nothing, and the store's triggers refuse an edit
    /// or a delete, so a hit on untrusted work cannot be rewritten into a miss.
    #[test]
    fn steps_are_append_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("db")).unwrap();
        store
            .conn
            .execute_batch(
                "INSERT INTO pipelines (id, name) VALUES (1, 'p');
                 INSERT INTO builders (id, name) VALUES (1, 'b');
                 INSERT INTO builder_records (id, builder_id, record_id) VALUES (7, 1, 'r1');
                 INSERT INTO runs (id, pipeline_id, run_key, step, builder_id, started_at,
                                   finished_at, status, recorded_at)
                 VALUES (1, 1, '1', 's', 1, 1000, 2000, 'succeeded', 3000);",
            )
            .unwrap();
        let hits = [
            hit("[1/2] RUN a", true, Some("r1")),
            hit("[2/2] RUN b", false, None),
        ];
        let key = ("p", "1", "s");
        assert_eq!(
            store.record_steps(key, &hits, Mode::Plain, 2000).unwrap(),
            2
        );
        assert_eq!(
            store.record_steps(key, &hits, Mode::Plain, 2000).unwrap(),
            0
        );
        let rows = store.step_rows().unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].record.as_deref(), Some("r1"));
        assert!(rows[0].cached && !rows[1].cached);
        for sql in [
            "UPDATE step_events SET cached = 0",
            "UPDATE step_events SET record_id = NULL",
            "DELETE FROM step_events",
        ] {
            let err = store.conn.execute(sql, []).unwrap_err();
            assert!(err.to_string().contains("append-only"), "{sql}: {err}");
        }
        assert!(
            store
                .record_steps(("p", "2", "s"), &hits, Mode::Plain, 0)
                .is_err(),
            "steps of a run that is not recorded"
        );
    }
}
