//! Cache-mount audits: the mounts recorded on each builder, the runs that wrote them, the base
//! images a helper build may run in, and the snapshots each audit (or baseline) took.

use std::collections::BTreeSet;

use crate::store::db::{OptionalExtension, params};

use super::audit::insert_findings;
use super::{Store, StoreError, UsedBase, sql_error};
use crate::audit::mounts::{FileEntry, Writer};
use crate::audit::{Finding, Reported};
use crate::model::encode_component;
use crate::time::Micros;

/// Why a snapshot was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotSource {
    Audit,
    Baseline,
    /// The empty mount right after the purge executor pruned it.
    Purge,
}

impl SnapshotSource {
    fn as_str(self) -> &'static str {
        match self {
            Self::Audit => "audit",
            Self::Baseline => "baseline",
            Self::Purge => "purge",
        }
    }
}

/// One mount's snapshot to store.
pub struct NewSnapshot<'a> {
    pub builder: &'a str,
    pub mount_id: &'a str,
    pub source: SnapshotSource,
    pub taken_at: Micros,
    pub files: &'a [FileEntry],
    /// The stored snapshot (its file rows' owner) that holds exactly these files.
    pub same_as: Option<i64>,
}

impl Store {
    /// Every (builder, mount id) recorded in the default namespace, sorted; only `builder`'s
    /// when given.
    pub fn recorded_mounts(
        &self,
        builder: Option<&str>,
    ) -> Result<Vec<(String, String)>, StoreError> {
        self.rows(
            "SELECT DISTINCT b.name, m.mount_id FROM mounts m JOIN builders b ON b.id = m.builder_id
             WHERE (CAST(?1 AS TEXT) IS NULL OR b.name = ?1) AND m.namespace = ''
             ORDER BY 1, 2",
            [builder],
            |row| row.try_into(),
        )
    }

    /// Every (builder, `namespace/id`) recorded under a namespace of its own
    /// (`BUILDKIT_CACHE_MOUNT_NS`), sorted; only `builder`'s when given.
    pub fn namespaced_mounts(
        &self,
        builder: Option<&str>,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let rows: Vec<(String, String, String)> = self.rows(
            "SELECT DISTINCT b.name, m.namespace, m.mount_id
             FROM mounts m JOIN builders b ON b.id = m.builder_id
             WHERE (CAST(?1 AS TEXT) IS NULL OR b.name = ?1) AND m.namespace <> ''
             ORDER BY 1, 2, 3",
            [builder],
            |row| row.try_into(),
        )?;
        Ok(rows
            .into_iter()
            .map(|(builder, namespace, id)| (builder, format!("{namespace}/{id}")))
            .collect())
    }

    /// Base images recorded runs on a builder used (newest first, at most 50 runs): where a
    /// helper build may run when no build that used the mount names one.
    pub fn builder_bases(&self, builder: &str) -> Result<Vec<UsedBase>, StoreError> {
        self.rows(
            "SELECT a.backend, a.locator, a.digest, a.key FROM events e
             JOIN artifacts a ON a.id = e.target
             WHERE e.kind = 'used_base' AND e.run_id IN (
                SELECT r.id FROM runs r JOIN builders b ON b.id = r.builder_id
                WHERE b.name = ?1 ORDER BY r.started_at DESC LIMIT 50)
             ORDER BY e.at DESC, e.id DESC",
            [builder],
            |row| {
                Ok(UsedBase {
                    backend: row.get(0)?,
                    locator: row.get(1)?,
                    digest: row.get(2)?,
                    key: row.get(3)?,
                })
            },
        )
    }

    /// Digests any incident holds tainted: a helper build never runs in one.
    pub fn all_incident_digests(&self) -> Result<BTreeSet<String>, StoreError> {
        self.rows("SELECT DISTINCT digest FROM incident_digests", [], |row| {
            row.get(0)
        })
    }

    /// The latest snapshot of a mount: the id of the snapshot that holds its file rows, and
    /// when it was taken.
    pub fn latest_mount_snapshot(
        &self,
        builder: &str,
        mount_id: &str,
    ) -> Result<Option<(i64, Micros)>, StoreError> {
        self.conn
            .query_row(
                "SELECT coalesce(files_of, id), taken_at FROM mount_snapshots
                 WHERE builder = ?1 AND mount_id = ?2
                 ORDER BY taken_at DESC, id DESC LIMIT 1",
                params![builder, mount_id],
                |row| row.try_into(),
            )
            .optional()
            .map_err(|e| self.sql(e))
    }

    /// A snapshot's files, sorted by path.
    pub fn mount_snapshot_files(&self, snapshot: i64) -> Result<Vec<FileEntry>, StoreError> {
        self.rows(
            "SELECT path, size, mode, sha256 FROM mount_snapshot_files WHERE snapshot_id = ?1 ORDER BY path",
            [snapshot],
            |row| {
                let digest: Vec<u8> = row.get(3)?;
                Ok(FileEntry {
                    path: row.get(0)?,
                    size: row.get::<_, i64>(1)? as u64,
                    mode: row.get::<_, i64>(2)? as u32,
                    sha256: digest.try_into().unwrap_or([0; 32]),
                })
            },
        )
    }

    /// The runs that wrote a mount: those finished before `since` (the earlier writers) and
    /// those that overlap `since..=until` (every writer when `since` is `None`), by start.
    pub fn mount_writers(
        &self,
        builder: &str,
        mount_id: &str,
        since: Option<Micros>,
        until: Micros,
    ) -> Result<(Vec<Writer>, Vec<Writer>), StoreError> {
        let all: Vec<Writer> = self.rows(
            "SELECT DISTINCT p.name, r.run_key, r.step, r.trust_level, r.started_at, r.finished_at, r.id
             FROM events e JOIN mounts m ON m.id = e.target JOIN builders b ON b.id = m.builder_id
             JOIN runs r ON r.id = e.run_id JOIN pipelines p ON p.id = r.pipeline_id
             WHERE e.kind = 'wrote_mount' AND b.name = ?1 AND m.mount_id = ?2 AND m.namespace = ''
               AND r.started_at <= ?3
             ORDER BY r.started_at, r.id",
            params![builder, mount_id, until],
            |row| {
                let part = |i: usize| -> crate::store::db::DbResult<String> {
                    Ok(encode_component(&row.get::<_, String>(i)?).into_owned())
                };
                Ok(Writer {
                    run: format!("{}/{}/{}", part(0)?, part(1)?, part(2)?),
                    trust_level: row.get(3)?,
                    started_at: row.get(4)?,
                    finished_at: row.get(5)?,
                })
            },
        )?;
        Ok(match since {
            None => (Vec::new(), all),
            Some(since) => all.into_iter().partition(|w| w.finished_at < since),
        })
    }

    /// Stores one mount audit in one transaction: the snapshots, and the findings (a finding
    /// already stored under its fingerprint is not new). Returns every finding with its id.
    pub fn save_mount_audit(
        &mut self,
        snapshots: &[NewSnapshot<'_>],
        findings: &[Finding],
        now: Micros,
    ) -> Result<(Vec<Reported>, Vec<i64>), StoreError> {
        let path = self.path.clone();
        let err = |e| sql_error(&path, e);
        let tx = self.conn.transaction().map_err(err)?;
        let mut ids = Vec::with_capacity(snapshots.len());
        for s in snapshots {
            ids.push(insert_snapshot(&tx, s).map_err(err)?);
        }
        let reported = insert_findings(&tx, findings, "mount", now).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok((reported, ids))
    }

    /// Records that a mount is empty at `at`: the purge executor pruned it, so the next audit
    /// compares against known-good without a build.
    pub fn record_empty_mount_snapshot(
        &mut self,
        builder: &str,
        mount_id: &str,
        at: Micros,
    ) -> Result<(), StoreError> {
        let path = self.path.clone();
        let tx = self.conn.transaction().map_err(|e| sql_error(&path, e))?;
        insert_snapshot(
            &tx,
            &NewSnapshot {
                builder,
                mount_id,
                source: SnapshotSource::Purge,
                taken_at: at,
                files: &[],
                same_as: None,
            },
        )
        .map_err(|e| sql_error(&path, e))?;
        tx.commit().map_err(|e| sql_error(&path, e))
    }
}

fn insert_snapshot(
    tx: &crate::store::db::Transaction<'_>,
    s: &NewSnapshot<'_>,
) -> crate::store::db::DbResult<i64> {
    let bytes: u64 = s.files.iter().map(|f| f.size).sum();
    let id: i64 = tx.query_row(
        "INSERT INTO mount_snapshots (builder, mount_id, taken_at, source, files, bytes, files_of)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) RETURNING id",
        params![
            s.builder,
            s.mount_id,
            s.taken_at,
            s.source.as_str(),
            s.files.len() as i64,
            bytes as i64,
            s.same_as
        ],
        |row| row.get(0),
    )?;
    if s.same_as.is_some() {
        return Ok(id);
    }
    let mut file = tx.prepare_cached(
        "INSERT INTO mount_snapshot_files (snapshot_id, path, size, mode, sha256) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for f in s.files {
        file.execute(params![
            id,
            f.path,
            f.size as i64,
            f.mode as i64,
            &f.sha256[..]
        ])?;
    }
    Ok(id)
}
