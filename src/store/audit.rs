//! Registry audits: what earlier audits saw, the recorded exports and imports to compare it
//! with, and the findings, stored once each.

use std::collections::{BTreeMap, HashMap};

use crate::store::db::{OptionalExtension, params};

use super::{Store, StoreError, sql_error};
use crate::audit::{CacheEvent, Finding, RepoFacts, Reported, Seen};
use crate::time::Micros;

/// A finding as stored, for `incident open --from-audit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFinding {
    pub id: i64,
    pub code: String,
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
    pub message: String,
    pub detail: BTreeMap<String, String>,
    pub first_seen: Micros,
    /// `registry` or `mount`: what the finding is about.
    pub target: String,
}

/// One tag as an audit saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagSighting<'a> {
    pub repository: &'a str,
    pub tag: &'a str,
    pub digest: &'a str,
    pub kind: &'static str,
}

impl Store {
    /// Repositories of `registry` the store has recorded artifacts in, sorted.
    pub fn recorded_repositories(&self, registry: &str) -> Result<Vec<String>, StoreError> {
        self.rows(
            "SELECT DISTINCT substr(locator, length(?1) + 2) FROM artifacts
                 WHERE backend = 'registry' AND substr(locator, 1, length(?1) + 1) = ?1 || '/'
                 ORDER BY 1",
            [registry],
            |row| row.get(0),
        )
    }

    /// Every digest earlier audits classified in a repository, with its kind.
    pub fn audit_kinds(
        &self,
        registry: &str,
        repository: &str,
    ) -> Result<HashMap<String, String>, StoreError> {
        self.rows(
            "SELECT digest, kind FROM audit_manifests WHERE registry = ?1 AND repository = ?2",
            params![registry, repository],
            |row| row.try_into(),
        )
    }

    /// The digest each tag pointed at when last audited.
    pub fn audit_current_tags(
        &self,
        registry: &str,
        repository: &str,
    ) -> Result<HashMap<String, String>, StoreError> {
        self.rows(
            "SELECT t.tag, t.digest FROM audit_tags t
             WHERE t.registry = ?1 AND t.repository = ?2
               AND t.last_seen = (SELECT max(u.last_seen) FROM audit_tags u
                                  WHERE u.registry = t.registry AND u.repository = t.repository
                                    AND u.tag = t.tag)
             ORDER BY t.tag, t.digest",
            params![registry, repository],
            |row| row.try_into(),
        )
    }

    /// What the store knows about a repository: recorded exports, imports and products, and
    /// what earlier audits saw there.
    pub fn audit_facts(&self, registry: &str, repository: &str) -> Result<RepoFacts, StoreError> {
        let err = |e| sql_error(&self.path, e);
        let locator = format!("{registry}/{repository}");
        let mut facts = RepoFacts {
            registry: registry.to_owned(),
            repository: repository.to_owned(),
            ..RepoFacts::default()
        };
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT e.kind, a.digest, a.key,
                    (SELECT string_agg(tag, char(31) ORDER BY tag) FROM artifact_tags t WHERE t.artifact_id = a.id),
                    p.name, r.trust_level, p.name || '/' || r.run_key || '/' || r.step, e.at, r.finished_at
                 FROM artifacts a
                 JOIN events e ON e.kind IN ('exported', 'imported', 'produced') AND e.target = a.id
                 JOIN runs r ON r.id = e.run_id JOIN pipelines p ON p.id = r.pipeline_id
                 WHERE a.backend = 'registry' AND a.locator = ?1
                 ORDER BY e.at, e.id",
            )
            .map_err(err)?;
        let mut rows = stmt.query([&locator]).map_err(err)?;
        while let Some(row) = rows.next().map_err(err)? {
            let read = || -> crate::store::db::DbResult<(String, CacheEvent)> {
                let kind: String = row.get(0)?;
                let digest: String = row.get(1)?;
                let key: String = row.get(2)?;
                let tags: Option<String> = row.get(3)?;
                let tags = if digest.is_empty() {
                    vec![key]
                } else {
                    tags.map(|t| t.split('\u{1f}').map(str::to_owned).collect())
                        .unwrap_or_default()
                };
                Ok((
                    kind,
                    CacheEvent {
                        digest: (!digest.is_empty()).then_some(digest),
                        tags,
                        pipeline: row.get(4)?,
                        trust_level: row.get(5)?,
                        run: row.get(6)?,
                        at: row.get(7)?,
                        finished_at: row.get(8)?,
                    },
                ))
            };
            let (kind, event) = read().map_err(err)?;
            match kind.as_str() {
                "exported" => facts.exports.push(event),
                "imported" => facts.imports.push(event),
                _ => facts.produced.extend(event.digest),
            }
        }
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT tag, digest, first_seen, last_seen FROM audit_tags
                 WHERE registry = ?1 AND repository = ?2 ORDER BY tag, first_seen",
            )
            .map_err(err)?;
        let mut rows = stmt.query(params![registry, repository]).map_err(err)?;
        while let Some(row) = rows.next().map_err(err)? {
            let tag: String = row.get(0).map_err(err)?;
            facts.history.entry(tag).or_default().push(Seen {
                digest: row.get(1).map_err(err)?,
                first_seen: row.get(2).map_err(err)?,
                last_seen: row.get(3).map_err(err)?,
            });
        }
        let mut stmt = self
            .conn
            .prepare_cached("SELECT digest, first_seen FROM audit_manifests WHERE registry = ?1 AND repository = ?2")
            .map_err(err)?;
        facts.digest_first_seen = stmt
            .query_map(params![registry, repository], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .and_then(|rows| rows.collect::<Result<_, _>>())
            .map_err(err)?;
        Ok(facts)
    }

    /// Stores one audit in one transaction: the registries' tags as seen at `now`, and the
    /// findings (a finding already stored under its fingerprint is not new). Returns every
    /// finding with its id, in the given order.
    pub fn save_audit(
        &mut self,
        started_at: Micros,
        now: Micros,
        sightings: &[(&str, Vec<TagSighting<'_>>)],
        findings: &[Finding],
        errors: &[String],
    ) -> Result<Vec<Reported>, StoreError> {
        let path = self.path.clone();
        let err = |e| sql_error(&path, e);
        let tx = self.conn.transaction().map_err(err)?;
        let reported;
        let mut tags = 0;
        {
            let mut manifest = tx
                .prepare_cached(
                    "INSERT INTO audit_manifests (registry, repository, digest, kind, first_seen)
                     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
                )
                .map_err(err)?;
            let mut tag = tx
                .prepare_cached(
                    "INSERT INTO audit_tags (registry, repository, tag, digest, first_seen, last_seen)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?5)
                     ON CONFLICT (registry, repository, tag, digest) DO UPDATE SET
                        last_seen = CASE WHEN excluded.last_seen > audit_tags.last_seen
                                    THEN excluded.last_seen ELSE audit_tags.last_seen END",
                )
                .map_err(err)?;
            for (registry, seen) in sightings {
                for s in seen {
                    manifest
                        .execute(params![registry, s.repository, s.digest, s.kind, now])
                        .map_err(err)?;
                    tag.execute(params![registry, s.repository, s.tag, s.digest, now])
                        .map_err(err)?;
                    tags += 1;
                }
            }
            reported = insert_findings(&tx, findings, "registry", now).map_err(err)?;
        }
        let new = reported.iter().filter(|r| r.new).count() as i64;
        tx.execute(
            "INSERT INTO audits (started_at, finished_at, tags, new_findings, errors) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                started_at,
                now,
                tags,
                new,
                serde_json::to_string(errors).unwrap_or_else(|_| "[]".to_owned())
            ],
        )
        .map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(reported)
    }

    /// A stored finding by id.
    pub fn audit_finding(&self, id: i64) -> Result<StoredFinding, StoreError> {
        self.conn
            .query_row(
                "SELECT id, code, registry, repository, tag, digest, message, detail, first_seen, target
                 FROM audit_findings WHERE id = ?1",
                [id],
                |row| {
                    let detail: String = row.get(7)?;
                    Ok(StoredFinding {
                        id: row.get(0)?,
                        code: row.get(1)?,
                        registry: row.get(2)?,
                        repository: row.get(3)?,
                        tag: row.get(4)?,
                        digest: row.get(5)?,
                        message: row.get(6)?,
                        detail: serde_json::from_str(&detail).unwrap_or_default(),
                        first_seen: row.get(8)?,
                        target: row.get(9)?,
                    })
                },
            )
            .optional()
            .map_err(|e| sql_error(&self.path, e))?
            .ok_or_else(|| {
                StoreError::NotFound(format!(
                    "no audit finding `{id}` (see `cachewarden audit registry` and `audit mounts`)"
                ))
            })
    }
}

/// Stores `findings` of an audit of `target` (`registry`, `mount` or `build`) at `now`: a
/// finding already stored under its fingerprint is seen again, not new. Returns every finding
/// with its id, in the given order.
impl Store {
    /// Forgets the findings `ids` that an audit has just stored as new, when it could not
    /// report them (its output could not be written): the next audit finds them new again,
    /// instead of taking them as seen.
    ///
    /// What the audit saw is forgotten with them, for the next audit to compare against what
    /// was there before: the registry tags and manifests first seen at `seen_at` (a registry
    /// audit's time), and the mount snapshots `snapshots`.
    pub fn forget_new_findings(
        &mut self,
        ids: &[i64],
        seen_at: Option<Micros>,
        snapshots: &[i64],
    ) -> Result<(), StoreError> {
        let path = self.path.clone();
        let err = |e| sql_error(&path, e);
        let tx = self.conn.transaction().map_err(err)?;
        for (sql, rows) in [
            ("DELETE FROM audit_findings WHERE id = ?1", ids),
            (
                "DELETE FROM mount_snapshot_files WHERE snapshot_id = ?1",
                snapshots,
            ),
            ("DELETE FROM mount_snapshots WHERE id = ?1", snapshots),
        ] {
            let mut stmt = tx.prepare_cached(sql).map_err(err)?;
            for id in rows {
                stmt.execute([id]).map_err(err)?;
            }
        }
        if let Some(at) = seen_at {
            for sql in [
                "DELETE FROM audit_tags WHERE first_seen = ?1",
                "DELETE FROM audit_manifests WHERE first_seen = ?1",
                "DELETE FROM audits WHERE finished_at = ?1",
            ] {
                tx.execute(sql, [at]).map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }
}

pub(super) fn insert_findings(
    tx: &crate::store::db::Transaction<'_>,
    findings: &[Finding],
    target: &str,
    now: Micros,
) -> crate::store::db::DbResult<Vec<Reported>> {
    let mut insert = tx.prepare_cached(
        "INSERT INTO audit_findings (code, fingerprint, registry, repository, tag, digest, message, detail,
                                     first_seen, reported_at, last_seen, target)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10, ?11)
         ON CONFLICT (fingerprint) DO UPDATE SET last_seen = excluded.last_seen
         RETURNING id, reported_at",
    )?;
    let mut reported = Vec::with_capacity(findings.len());
    for f in findings {
        let detail = serde_json::to_string(&f.detail).unwrap_or_else(|_| "{}".to_owned());
        let (id, reported_at): (i64, Micros) = insert.query_row(
            params![
                f.code.id(),
                f.fingerprint(),
                f.registry,
                f.repository,
                f.tag,
                f.digest,
                f.message,
                detail,
                f.first_seen,
                now,
                target
            ],
            |row| row.try_into(),
        )?;
        reported.push(Reported {
            id,
            new: reported_at == now,
            finding: f.clone(),
        });
    }
    Ok(reported)
}
