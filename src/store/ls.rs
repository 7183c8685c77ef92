//! What `ls` lists, and the names that unknown seeds are compared with for suggestions.
//!
//! Every list takes the same filter; a filter that does not apply to a list is refused by the
//! command before it gets here. Lists by time are newest first; `limit` rows plus one are read
//! so that the caller can say the list was cut.

use crate::store::db::{DbResult, Row, params};

use super::{Store, StoreError};
use crate::model::run_name;
use crate::time::Micros;

/// The filters `ls` takes. Times bound run starts (pipelines, runs, builders), mount uses
/// (mounts) or openings (incidents), both inclusive.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub pipeline: Option<String>,
    pub builder: Option<String>,
    pub since: Option<Micros>,
    pub until: Option<Micros>,
    /// At most this many rows; `None` for all.
    pub limit: Option<u64>,
}

impl ListFilter {
    /// Whether a row without runs in the filter's scope is left out.
    fn narrows(&self) -> bool {
        self.pipeline.is_some()
            || self.builder.is_some()
            || self.since.is_some()
            || self.until.is_some()
    }

    /// The SQL `LIMIT`: one more than asked, to tell that more rows matched; the largest
    /// there is for none (PostgreSQL refuses SQLite's `-1`).
    fn sql_limit(&self) -> i64 {
        self.limit.map_or(i64::MAX, |n| {
            i64::try_from(n).unwrap_or(i64::MAX).saturating_add(1)
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineItem {
    pub name: String,
    pub project: Option<String>,
    pub trust_ceiling: Option<String>,
    pub runs: i64,
    pub first_run: Option<Micros>,
    pub last_run: Option<Micros>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunItem {
    pub pipeline: String,
    pub run: String,
    pub step: String,
    pub builder: Option<String>,
    pub started_at: Micros,
    pub finished_at: Micros,
    pub status: String,
    pub trust_level: Option<String>,
    pub truncated: bool,
}

impl RunItem {
    /// The run's name as `trace` prints it and `--run` takes it.
    pub fn name(&self) -> String {
        run_name(&self.pipeline, &self.run, &self.step)
    }
}

/// A builder's name, driver and endpoint, as first recorded ([`Store::builder_places`]).
pub type BuilderPlace = (String, Option<String>, Option<String>);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuilderItem {
    pub name: String,
    pub runs: i64,
    pub records: i64,
    pub last_seen: Option<Micros>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountItem {
    pub builder: String,
    /// The cache mount namespace; empty for none.
    pub namespace: String,
    pub id: String,
    /// Runs that wrote it, and that read it.
    pub writers: i64,
    pub readers: i64,
    pub last_write: Option<Micros>,
    pub last_purge: Option<Micros>,
}

impl MountItem {
    /// `BUILDER:ID`, or `BUILDER:NAMESPACE/ID`, as `trace` names it (without `mount:`).
    pub fn name(&self) -> String {
        if self.namespace.is_empty() {
            format!("{}:{}", self.builder, self.id)
        } else {
            format!("{}:{}/{}", self.builder, self.namespace, self.id)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentItem {
    pub id: i64,
    pub status: String,
    pub opened_at: Micros,
    pub title: String,
    pub done: i64,
    /// Actions not carried out yet (pending, or running when an execution was interrupted).
    pub pending: i64,
    pub failed: i64,
}

/// How many runs' names an unknown run is compared with.
const RUN_CANDIDATES: i64 = 10_000;

impl Store {
    pub fn ls_pipelines(&self, f: &ListFilter) -> Result<Vec<PipelineItem>, StoreError> {
        self.pipelines_listed(f, f.builder.is_some() && f.pipeline.is_none())
    }

    /// `from_builder`: the pipelines are found from the runs on the filter's builder (CROSS
    /// JOIN fixes that order), which a builder of a fleet's store has tens of thousands of,
    /// not from every pipeline's runs. The same list: a named builder narrows the list to
    /// the pipelines with runs on it. (A named pipeline is a narrower start.)
    pub(super) fn pipelines_listed(
        &self,
        f: &ListFilter,
        from_builder: bool,
    ) -> Result<Vec<PipelineItem>, StoreError> {
        let from = if from_builder {
            "runs r CROSS JOIN pipeline_current p ON p.id = r.pipeline_id
                        AND r.builder_id = (SELECT id FROM builders WHERE name = ?2)"
        } else {
            "pipeline_current p LEFT JOIN runs r ON r.pipeline_id = p.id
                        AND (CAST(?2 AS TEXT) IS NULL OR r.builder_id = (SELECT id FROM builders WHERE name = ?2))"
        };
        let sql = format!(
            "SELECT p.name, p.project, p.trust_level, count(r.id), min(r.started_at),
                    max(r.started_at)
             FROM {from}
                  AND (CAST(?3 AS BIGINT) IS NULL OR r.started_at >= ?3)
                  AND (CAST(?4 AS BIGINT) IS NULL OR r.started_at <= ?4)
             WHERE CAST(?1 AS TEXT) IS NULL OR p.name = ?1
             GROUP BY p.id, p.name, p.project, p.trust_level
             HAVING NOT ?5 OR count(r.id) > 0
             ORDER BY max(r.started_at) DESC NULLS LAST, p.name
             LIMIT ?6"
        );
        self.rows(
            &sql,
            params![
                f.pipeline,
                f.builder,
                f.since,
                f.until,
                f.narrows(),
                f.sql_limit()
            ],
            |row| {
                Ok(PipelineItem {
                    name: row.get(0)?,
                    project: row.get(1)?,
                    trust_ceiling: row.get(2)?,
                    runs: row.get(3)?,
                    first_run: row.get(4)?,
                    last_run: row.get(5)?,
                })
            },
        )
    }

    pub fn ls_runs(&self, f: &ListFilter) -> Result<Vec<RunItem>, StoreError> {
        self.runs_listed(f, f.builder.is_some() && f.pipeline.is_none())
    }

    /// `on_builder`: the runs are read from an index of runs by builder, not all of them
    /// (a filter on the builder's name alone reads every run of the store). The same list.
    /// (A named pipeline is a narrower start.)
    pub(super) fn runs_listed(
        &self,
        f: &ListFilter,
        on_builder: bool,
    ) -> Result<Vec<RunItem>, StoreError> {
        let builder = if on_builder {
            "r.builder_id = (SELECT id FROM builders WHERE name = ?2)"
        } else {
            "(CAST(?2 AS TEXT) IS NULL OR b.name = ?2)"
        };
        let sql = format!(
            "SELECT p.name, r.run_key, r.step, b.name, r.started_at, r.finished_at, r.status,
                    r.trust_level,
                    EXISTS (SELECT 1 FROM run_truncations t WHERE t.run_id = r.id)
             FROM runs r
             JOIN pipelines p ON p.id = r.pipeline_id
             LEFT JOIN builders b ON b.id = r.builder_id
             WHERE (CAST(?1 AS TEXT) IS NULL OR p.name = ?1)
               AND {builder}
               AND (CAST(?3 AS BIGINT) IS NULL OR r.started_at >= ?3)
               AND (CAST(?4 AS BIGINT) IS NULL OR r.started_at <= ?4)
             ORDER BY r.started_at DESC, r.id DESC
             LIMIT ?5"
        );
        self.rows(
            &sql,
            params![f.pipeline, f.builder, f.since, f.until, f.sql_limit()],
            |row| {
                Ok(RunItem {
                    pipeline: row.get(0)?,
                    run: row.get(1)?,
                    step: row.get(2)?,
                    builder: row.get(3)?,
                    started_at: row.get(4)?,
                    finished_at: row.get(5)?,
                    status: row.get(6)?,
                    trust_level: row.get(7)?,
                    truncated: row.get(8)?,
                })
            },
        )
    }

    pub fn ls_builders(&self, f: &ListFilter) -> Result<Vec<BuilderItem>, StoreError> {
        let sql = "SELECT b.name, count(r.id),
                          (SELECT count(*) FROM builder_records br WHERE br.builder_id = b.id),
                          max(r.finished_at)
                   FROM builders b
                   LEFT JOIN runs r ON r.builder_id = b.id
                        AND (CAST(?1 AS TEXT) IS NULL OR r.pipeline_id = (SELECT id FROM pipelines WHERE name = ?1))
                        AND (CAST(?3 AS BIGINT) IS NULL OR r.started_at >= ?3)
                        AND (CAST(?4 AS BIGINT) IS NULL OR r.started_at <= ?4)
                   WHERE CAST(?2 AS TEXT) IS NULL OR b.name = ?2
                   GROUP BY b.id
                   HAVING NOT ?5 OR count(r.id) > 0
                   ORDER BY max(r.finished_at) DESC NULLS LAST, b.name
                   LIMIT ?6";
        // A builder named by `--builder` is listed even without runs in the window.
        let narrows = f.pipeline.is_some() || f.since.is_some() || f.until.is_some();
        self.rows(
            sql,
            params![
                f.pipeline,
                f.builder,
                f.since,
                f.until,
                narrows,
                f.sql_limit()
            ],
            |row| {
                Ok(BuilderItem {
                    name: row.get(0)?,
                    runs: row.get(1)?,
                    records: row.get(2)?,
                    last_seen: row.get(3)?,
                })
            },
        )
    }

    pub fn ls_mounts(&self, f: &ListFilter) -> Result<Vec<MountItem>, StoreError> {
        match &f.pipeline {
            Some(pipeline) => self.pipeline_mounts(f, pipeline),
            None => self.every_mount(f),
        }
    }

    /// The mounts a pipeline's runs used, found from the uses of those runs (CROSS JOIN fixes
    /// that order): a shared mount of a fleet's store has hundreds of thousands of uses by
    /// other pipelines, which a search from the mounts would read. Lists what
    /// [`Self::every_mount`] lists for the pipeline.
    fn pipeline_mounts(
        &self,
        f: &ListFilter,
        pipeline: &str,
    ) -> Result<Vec<MountItem>, StoreError> {
        self.rows(
            PIPELINE_MOUNTS,
            params![pipeline, f.builder, f.since, f.until, f.sql_limit()],
            mount_item,
        )
    }

    /// Every mount, or those the filter's builder holds or its window saw used, with the
    /// uses of the filter's pipeline when it names one.
    pub(super) fn every_mount(&self, f: &ListFilter) -> Result<Vec<MountItem>, StoreError> {
        // Each run uses a mount at most once per kind (events are unique by run, kind and
        // target), so counting events counts runs.
        let sql = "SELECT b.name, m.mount_id,
                          count(CASE WHEN e.kind = 'wrote_mount' THEN 1 END),
                          count(CASE WHEN e.kind = 'read_mount' THEN 1 END),
                          max(CASE WHEN e.kind = 'wrote_mount' THEN e.at END),
                          (SELECT max(pu.at) FROM purges pu
                           WHERE pu.kind = 'mount' AND pu.mount = m.id),
                          max(e.at) AS last_use, m.namespace
                   FROM mounts m
                   JOIN builders b ON b.id = m.builder_id
                   LEFT JOIN events e ON e.kind IN ('read_mount', 'wrote_mount')
                        AND e.target = m.id
                        AND (CAST(?3 AS BIGINT) IS NULL OR e.at >= ?3)
                        AND (CAST(?4 AS BIGINT) IS NULL OR e.at <= ?4)
                        AND (CAST(?1 AS TEXT) IS NULL OR e.run_id IN (
                            SELECT r.id FROM runs r JOIN pipelines p ON p.id = r.pipeline_id
                            WHERE p.name = ?1))
                   WHERE CAST(?2 AS TEXT) IS NULL OR b.name = ?2
                   GROUP BY m.id, b.id
                   HAVING NOT ?5 OR count(e.id) > 0
                   ORDER BY last_use DESC NULLS LAST, b.name, m.mount_id, m.id
                   LIMIT ?6";
        let narrows = f.pipeline.is_some() || f.since.is_some() || f.until.is_some();
        self.rows(
            sql,
            params![
                f.pipeline,
                f.builder,
                f.since,
                f.until,
                narrows,
                f.sql_limit()
            ],
            mount_item,
        )
    }

    pub fn ls_incidents(&self, f: &ListFilter) -> Result<Vec<IncidentItem>, StoreError> {
        let sql = "SELECT i.id, i.status, i.opened_at, i.title,
                          (SELECT count(*) FROM actions a
                           WHERE a.incident_id = i.id AND a.state = 'done'),
                          (SELECT count(*) FROM actions a
                           WHERE a.incident_id = i.id AND a.state IN ('pending', 'running')),
                          (SELECT count(*) FROM actions a
                           WHERE a.incident_id = i.id AND a.state = 'failed')
                   FROM incidents i
                   WHERE (CAST(?1 AS BIGINT) IS NULL OR i.opened_at >= ?1) AND (CAST(?2 AS BIGINT) IS NULL OR i.opened_at <= ?2)
                   ORDER BY i.opened_at DESC, i.id DESC
                   LIMIT ?3";
        self.rows(sql, params![f.since, f.until, f.sql_limit()], |row| {
            Ok(IncidentItem {
                id: row.get(0)?,
                status: row.get(1)?,
                opened_at: row.get(2)?,
                title: row.get(3)?,
                done: row.get(4)?,
                pending: row.get(5)?,
                failed: row.get(6)?,
            })
        })
    }

    /// Every pipeline's name.
    pub fn pipeline_names(&self) -> Result<Vec<String>, StoreError> {
        self.rows("SELECT name FROM pipelines ORDER BY name", [], |row| {
            row.get(0)
        })
    }

    /// Every builder's name, driver and endpoint, as first recorded.
    pub fn builder_places(&self) -> Result<Vec<BuilderPlace>, StoreError> {
        self.rows(
            "SELECT name, driver, endpoint FROM builders ORDER BY name",
            [],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
    }

    /// Every builder's name.
    pub fn builder_names(&self) -> Result<Vec<String>, StoreError> {
        self.rows("SELECT name FROM builders ORDER BY name", [], |row| {
            row.get(0)
        })
    }

    /// The mounts recorded on a builder: (namespace, id), the namespace empty by default.
    pub fn mount_identities(&self, builder: &str) -> Result<Vec<(String, String)>, StoreError> {
        self.rows(
            "SELECT DISTINCT m.namespace, m.mount_id FROM mounts m JOIN builders b ON b.id = m.builder_id
             WHERE b.name = ?1 ORDER BY m.namespace, m.mount_id",
            [builder],
            |row| row.try_into(),
        )
    }

    /// The mount ids recorded on a builder.
    pub fn mount_ids(&self, builder: &str) -> Result<Vec<String>, StoreError> {
        self.rows(
            "SELECT DISTINCT m.mount_id FROM mounts m JOIN builders b ON b.id = m.builder_id
             WHERE b.name = ?1 ORDER BY m.mount_id",
            [builder],
            |row| row.get(0),
        )
    }

    /// The names of the newest runs, of one pipeline when it is given and exists.
    pub fn run_names(&self, pipeline: Option<&str>) -> Result<Vec<String>, StoreError> {
        self.rows(
            "SELECT p.name, r.run_key, r.step FROM runs r JOIN pipelines p ON p.id = r.pipeline_id
             WHERE CAST(?1 AS TEXT) IS NULL OR p.name = ?1 OR NOT EXISTS (SELECT 1 FROM pipelines WHERE name = ?1)
             ORDER BY r.started_at DESC, r.id DESC LIMIT ?2",
            params![pipeline, RUN_CANDIDATES],
            |row| {
                let (p, r, s): (String, String, String) = (row.get(0)?, row.get(1)?, row.get(2)?);
                Ok(run_name(&p, &r, &s))
            },
        )
    }

    /// Recorded registry refs as `locator:tag`, those of `locator` first.
    pub fn cache_ref_names(&self, locator: &str) -> Result<Vec<String>, StoreError> {
        self.rows(
            "SELECT a.locator || ':' || t.tag FROM artifact_tags t
             JOIN artifacts a ON a.id = t.artifact_id
             GROUP BY a.locator, t.tag
             ORDER BY a.locator = ?1 DESC
             LIMIT ?2",
            params![locator, RUN_CANDIDATES],
            |row| row.get(0),
        )
    }
}

/// [`Store::ls_mounts`] with a pipeline: its runs' uses, grouped by mount.
pub(super) const PIPELINE_MOUNTS: &str = "SELECT b.name, m.mount_id,
        count(CASE WHEN e.kind = 'wrote_mount' THEN 1 END),
        count(CASE WHEN e.kind = 'read_mount' THEN 1 END),
        max(CASE WHEN e.kind = 'wrote_mount' THEN e.at END),
        (SELECT max(pu.at) FROM purges pu WHERE pu.kind = 'mount' AND pu.mount = m.id),
        max(e.at) AS last_use, m.namespace
    FROM runs r
    CROSS JOIN events e ON e.run_id = r.id AND e.kind IN ('read_mount', 'wrote_mount')
    JOIN mounts m ON m.id = e.target
    JOIN builders b ON b.id = m.builder_id
    WHERE r.pipeline_id = (SELECT id FROM pipelines WHERE name = ?1)
      AND (CAST(?2 AS TEXT) IS NULL OR b.name = ?2)
      AND (CAST(?3 AS BIGINT) IS NULL OR e.at >= ?3)
      AND (CAST(?4 AS BIGINT) IS NULL OR e.at <= ?4)
    GROUP BY m.id, b.id
    ORDER BY last_use DESC NULLS LAST, b.name, m.mount_id, m.id
    LIMIT ?5";

fn mount_item(row: &Row<'_>) -> DbResult<MountItem> {
    Ok(MountItem {
        builder: row.get(0)?,
        namespace: row.get(7)?,
        id: row.get(1)?,
        writers: row.get(2)?,
        readers: row.get(3)?,
        last_write: row.get(4)?,
        last_purge: row.get(5)?,
    })
}
