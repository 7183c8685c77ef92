//! Containment while incidents are open, and verification records.

use std::collections::{BTreeSet, HashSet};

use crate::store::db::params;

use super::{Store, StoreError, sql_error};
use crate::time::{self, Micros};

/// A digest some open incident holds tainted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contained {
    pub incident: i64,
    pub digest: String,
    pub name: String,
}

/// A build that went ahead from a tainted input: (digest, pipeline, run, at, by).
pub type OverrideRow = (String, String, String, Micros, String);

/// One stored verification.
#[derive(Debug, Clone)]
pub struct VerificationRow {
    pub at: Micros,
    pub by: String,
    pub clean: bool,
    pub result: String,
}

/// Who may vouch for a manifest by pushing it: runs at one of `levels` (those above the lowest
/// trust level), whose times are believed. Anyone can open a pull request, and an untrusted
/// pipeline records what it likes: its claim to have pushed a child of a tainted index must
/// not keep that child in place. A run recorded with no level, or at one the config does not
/// rank, counts as untrusted, unless the store keeps no levels at all: then nothing tells one
/// run from another, and every push vouches. Made once a command ([`Store::vouching`]).
#[derive(Debug, Clone)]
pub struct Vouching {
    levels: Vec<String>,
    /// Whether the store keeps trust levels, so that a run without one is not trusted.
    keeps_levels: bool,
}

impl Vouching {
    /// Whether a push by a run at `level` (`None`: recorded with none), `suspect` when its
    /// times are doubted, vouches for what it pushed.
    fn vouches(&self, level: Option<&str>, suspect: bool) -> bool {
        !suspect
            && match level {
                Some(level) => self.levels.iter().any(|l| l == level),
                None => !self.keeps_levels,
            }
    }
}

/// A push, as [`Vouching`] weighs it: the pushing run's trust level, and whether its times are
/// doubted.
const PUSH_COLUMNS: &str = "r.trust_level,
    EXISTS (SELECT 1 FROM run_receipts c WHERE c.run_id = r.id AND c.time_suspect IS NOT NULL)";

impl Store {
    /// Who may vouch for a manifest by pushing it: runs at one of `levels`, the config's above
    /// the lowest ([`Vouching`]).
    pub fn vouching(&self, levels: Vec<String>) -> Result<Vouching, StoreError> {
        let keeps_levels = self
            .conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM runs WHERE trust_level IS NOT NULL)",
                [],
                |row| row.get(0),
            )
            .map_err(|e| sql_error(&self.path, e))?;
        Ok(Vouching {
            levels,
            keeps_levels,
        })
    }

    /// Replaces the incident's tainted digests (at open, and after each re-trace).
    pub fn set_incident_digests(
        &mut self,
        incident: i64,
        digests: &[(String, String)],
    ) -> Result<(), StoreError> {
        let path = self.path.clone();
        let tx = self.conn.transaction().map_err(|e| sql_error(&path, e))?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO incident_digests (incident_id, digest, name) VALUES (?1, ?2, ?3)
                     ON CONFLICT (incident_id, digest) DO NOTHING",
                )
                .map_err(|e| sql_error(&path, e))?;
            for (digest, name) in digests {
                stmt.execute(params![incident, digest, name])
                    .map_err(|e| sql_error(&path, e))?;
            }
        }
        tx.commit().map_err(|e| sql_error(&path, e))
    }

    /// Which of these digests an open incident holds tainted.
    pub fn contained(&self, digests: &[String]) -> Result<Vec<Contained>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT d.incident_id, d.digest, d.name FROM incident_digests d
                 JOIN incidents i ON i.id = d.incident_id
                 WHERE d.digest = ?1 AND i.status = 'open' ORDER BY d.incident_id",
            )
            .map_err(|e| sql_error(&self.path, e))?;
        let mut out = Vec::new();
        for digest in digests {
            let rows = stmt
                .query_map([digest], |row| {
                    Ok(Contained {
                        incident: row.get(0)?,
                        digest: row.get(1)?,
                        name: row.get(2)?,
                    })
                })
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(|e| sql_error(&self.path, e))?;
            out.extend(rows);
        }
        Ok(out)
    }

    /// What open incidents hold tainted among `digests` and the manifests the store knows
    /// each of them lists (an index's children, and theirs): a hit on a listed manifest is
    /// answered for the digest asked, as pulling the index pulls it. `check` and `wrap` run
    /// on an index whenever a tag names a multi-platform image.
    pub fn contained_listing(&self, digests: &[String]) -> Result<Vec<Contained>, StoreError> {
        /// How deep listed manifests are followed: an index of indexes of images is 2.
        const DEPTH: usize = 8;
        let mut under: Vec<(String, String)> =
            digests.iter().map(|d| (d.clone(), d.clone())).collect();
        let mut seen: HashSet<(String, String)> = under.iter().cloned().collect();
        let mut level: Vec<(String, String)> = under.clone();
        for _ in 0..DEPTH {
            let asked: Vec<&str> = level.iter().map(|(_, d)| d.as_str()).collect();
            let facts = self.manifest_facts(&asked)?;
            let mut next = Vec::new();
            for (top, digest) in &level {
                for child in facts
                    .get(digest)
                    .map(|f| f.children.as_slice())
                    .unwrap_or_default()
                {
                    let pair = (top.clone(), child.to_string());
                    if seen.insert(pair.clone()) {
                        next.push(pair);
                    }
                }
            }
            if next.is_empty() {
                break;
            }
            under.extend(next.iter().cloned());
            level = next;
        }
        let all: Vec<String> = under
            .iter()
            .map(|(_, d)| d.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let hits = self.contained(&all)?;
        let mut out: Vec<Contained> = Vec::new();
        for (top, digest) in &under {
            for hit in hits.iter().filter(|h| &h.digest == digest) {
                let found = Contained {
                    incident: hit.incident,
                    digest: top.clone(),
                    name: hit.name.clone(),
                };
                if !out.contains(&found) {
                    out.push(found);
                }
            }
        }
        Ok(out)
    }

    /// What open incidents hold tainted among the digests recorded under tag `tag` of
    /// `locator`: an input that cannot be pinned to a digest now may still be known.
    pub fn contained_by_tag(&self, locator: &str, tag: &str) -> Result<Vec<Contained>, StoreError> {
        let digests: Vec<String> = self.rows(
            "SELECT DISTINCT a.digest FROM artifacts a
             JOIN artifact_tags t ON t.artifact_id = a.id
             WHERE a.backend = 'registry' AND a.locator = ?1 AND t.tag = ?2 AND a.digest <> ''
             ORDER BY a.digest",
            params![locator, tag],
            |row| row.get(0),
        )?;
        self.contained(&digests)
    }

    /// The open incidents that hold any digest tainted, by id.
    /// The open incidents that hold anything a build could read: a digest, or a cache mount
    /// (one whose prune is not done, or one under a namespace, which the plan leaves to people).
    pub fn holding_incidents(&self) -> Result<Vec<i64>, StoreError> {
        self.rows(
            "SELECT i.id FROM incidents i
             WHERE i.status = 'open'
               AND (EXISTS (SELECT 1 FROM incident_digests d WHERE d.incident_id = i.id)
                    OR EXISTS (SELECT 1 FROM actions a
                               WHERE a.incident_id = i.id AND a.state <> 'done'
                                 AND (a.kind = 'prune-mount'
                                      OR (a.kind = 'follow-up'
                                          AND a.target LIKE '%BUILDKIT_CACHE_MOUNT_NS%'))))
             ORDER BY i.id",
            [],
            |row| row.get(0),
        )
    }

    pub fn containing_incidents(&self) -> Result<Vec<i64>, StoreError> {
        self.rows(
            "SELECT DISTINCT d.incident_id FROM incident_digests d
             JOIN incidents i ON i.id = d.incident_id
             WHERE i.status = 'open' ORDER BY d.incident_id",
            [],
            |row| row.get(0),
        )
    }

    /// Every digest an incident holds tainted, sorted.
    pub fn incident_digests(&self, incident: i64) -> Result<Vec<(String, String)>, StoreError> {
        self.rows(
            "SELECT digest, name FROM incident_digests WHERE incident_id = ?1 ORDER BY digest",
            [incident],
            |row| row.try_into(),
        )
    }

    /// Whether a recorded run names a registry manifest in `repository` (any registry; names
    /// compared without case) that incident `incident` does not hold tainted: only then can an
    /// index there keep the children a tainted index lists too.
    pub fn names_untainted_in(&self, incident: i64, repository: &str) -> Result<bool, StoreError> {
        let pattern = repository_pattern(repository);
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM artifacts a
                                WHERE a.backend = 'registry' AND a.digest <> ''
                                  AND lower(a.locator) LIKE ?1 ESCAPE '!'
                                  AND EXISTS (SELECT 1 FROM events e
                                              WHERE e.kind IN ('imported', 'exported', 'produced', 'used_base')
                                                AND e.target = a.id)
                                  AND NOT EXISTS (SELECT 1 FROM incident_digests d
                                                  WHERE d.incident_id = ?2 AND d.digest = a.digest))",
            )
            .map_err(|e| sql_error(&self.path, e))?;
        stmt.query_row(params![pattern, incident], |row| row.get(0))
            .map_err(|e| sql_error(&self.path, e))
    }

    /// Of `digests`, those incident `incident` holds tainted.
    pub fn held_tainted(
        &self,
        incident: i64,
        digests: &[String],
    ) -> Result<HashSet<String>, StoreError> {
        self.digests_where(
            "SELECT EXISTS (SELECT 1 FROM incident_digests WHERE incident_id = ?2 AND digest = ?1)",
            incident,
            digests,
        )
    }

    /// The registry manifests that recorded runs pushed (exported or produced) by digest to a
    /// repository named `repository`, by a push that vouches for them ([`Vouching`]), and
    /// incident `incident` does not hold tainted: the indexes among them keep what they list.
    pub fn pushed_untainted_in(
        &self,
        incident: i64,
        repository: &str,
        vouching: &Vouching,
    ) -> Result<Vec<String>, StoreError> {
        let pattern = repository_pattern(repository);
        let pushes: Vec<(String, Option<String>, bool)> = self.rows(
            &format!(
                "SELECT a.digest, {PUSH_COLUMNS} FROM artifacts a
                 JOIN events e ON e.target = a.id AND e.kind IN ('exported', 'produced')
                 JOIN runs r ON r.id = e.run_id
                 WHERE a.backend = 'registry' AND a.digest <> ''
                   AND lower(a.locator) LIKE ?1 ESCAPE '!'
                   AND NOT EXISTS (SELECT 1 FROM incident_digests d
                                   WHERE d.incident_id = ?2 AND d.digest = a.digest)"
            ),
            params![pattern, incident],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )?;
        let vouched: BTreeSet<String> = pushes
            .into_iter()
            .filter(|(_, level, suspect)| vouching.vouches(level.as_deref(), *suspect))
            .map(|(digest, _, _)| digest)
            .collect();
        Ok(vouched.into_iter().collect())
    }

    /// Of the tainted `artifacts`, those a run outside `tainted_runs` built and pushed as an
    /// image (`produced`), by a push that vouches for it ([`Vouching`]), with that run's name:
    /// the bytes under that digest are what the trusted build made, whoever else claims to
    /// have pushed them. An untrusted run that records an export of a release image's digest
    /// must not get it deleted as its cache.
    pub fn vouched_images(
        &self,
        artifacts: &BTreeSet<i64>,
        tainted_runs: &HashSet<i64>,
        vouching: &Vouching,
    ) -> Result<std::collections::BTreeMap<i64, String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT r.id, p.name, r.run_key, r.step, {PUSH_COLUMNS} FROM events e
                 JOIN runs r ON r.id = e.run_id JOIN pipelines p ON p.id = r.pipeline_id
                 WHERE e.kind = 'produced' AND e.target = ?1
                 ORDER BY r.started_at, r.id"
            ))
            .map_err(|e| sql_error(&self.path, e))?;
        let mut out = std::collections::BTreeMap::new();
        for &artifact in artifacts {
            type Row = (i64, String, String, String, Option<String>, bool);
            let runs: Vec<Row> = stmt
                .query_map([artifact], |row| {
                    Ok((
                        row.get(0)?,
                        row.get(1)?,
                        row.get(2)?,
                        row.get(3)?,
                        row.get(4)?,
                        row.get(5)?,
                    ))
                })
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(|e| sql_error(&self.path, e))?;
            if let Some((_, pipeline, run_key, step, ..)) =
                runs.into_iter().find(|(id, _, _, _, level, suspect)| {
                    !tainted_runs.contains(id) && vouching.vouches(level.as_deref(), *suspect)
                })
            {
                out.insert(artifact, crate::model::run_name(&pipeline, &run_key, &step));
            }
        }
        Ok(out)
    }

    /// Of `digests`, those some recorded run pushed (an artifact exported or produced) by a
    /// push that vouches for them ([`Vouching`]) and incident `incident` does not hold
    /// tainted: the child manifests of a tainted index that a purge must leave, since whoever
    /// pushed the index chose what it lists. A run that only read a manifest vouches for
    /// nothing: it may have read the planted one.
    pub fn recorded_untainted(
        &self,
        incident: i64,
        digests: &[String],
        vouching: &Vouching,
    ) -> Result<HashSet<String>, StoreError> {
        let held = self.held_tainted(incident, digests)?;
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT {PUSH_COLUMNS} FROM artifacts a
                 JOIN events e ON e.target = a.id AND e.kind IN ('exported', 'produced')
                 JOIN runs r ON r.id = e.run_id
                 WHERE a.digest = ?1"
            ))
            .map_err(|e| sql_error(&self.path, e))?;
        let mut out = HashSet::new();
        for digest in digests.iter().filter(|d| !held.contains(*d)) {
            let pushes: Vec<(Option<String>, bool)> = stmt
                .query_map([digest], |row| Ok((row.get(0)?, row.get(1)?)))
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(|e| sql_error(&self.path, e))?;
            if pushes
                .iter()
                .any(|(level, suspect)| vouching.vouches(level.as_deref(), *suspect))
            {
                out.insert(digest.clone());
            }
        }
        Ok(out)
    }

    /// Of `digests`, those for which `sql` (one boolean, of the digest `?1` and the incident
    /// `?2`) is true.
    fn digests_where(
        &self,
        sql: &str,
        incident: i64,
        digests: &[String],
    ) -> Result<HashSet<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(sql)
            .map_err(|e| sql_error(&self.path, e))?;
        let mut out = HashSet::new();
        for digest in digests {
            let found: bool = stmt
                .query_row(params![digest, incident], |row| row.get(0))
                .map_err(|e| sql_error(&self.path, e))?;
            if found {
                out.insert(digest.clone());
            }
        }
        Ok(out)
    }

    /// Records a build that went ahead with `--allow-tainted`.
    pub fn record_override(
        &mut self,
        hit: &Contained,
        pipeline: &str,
        run_key: &str,
        by: &str,
    ) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO containment_overrides (incident_id, digest, pipeline, run_key, at, by)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                // A held cache mount has no digest: its name stands in.
                params![
                    hit.incident,
                    if hit.digest.is_empty() {
                        &hit.name
                    } else {
                        &hit.digest
                    },
                    pipeline,
                    run_key,
                    time::now(),
                    by
                ],
            )
            .map(|_| ())
            .map_err(|e| sql_error(&self.path, e))
    }

    /// Overrides recorded against an incident.
    pub fn overrides(&self, incident: i64) -> Result<Vec<OverrideRow>, StoreError> {
        self.rows(
            "SELECT digest, pipeline, run_key, at, by FROM containment_overrides
             WHERE incident_id = ?1 ORDER BY id",
            [incident],
            |row| row.try_into(),
        )
    }

    pub fn record_verification(
        &mut self,
        incident: i64,
        by: &str,
        clean: bool,
        result: &str,
    ) -> Result<(), StoreError> {
        // Only while the incident is open: a closed one keeps the verification it was closed
        // on, even against a verify that began before the close (in a transaction, which
        // the close waits for).
        let path = self.path.clone();
        let tx = self.conn.transaction().map_err(|e| sql_error(&path, e))?;
        tx.execute(
            "INSERT INTO verifications (incident_id, at, by, clean, result)
             SELECT ?1, ?2, ?3, ?4, ?5
             WHERE EXISTS (SELECT 1 FROM incidents WHERE id = ?1 AND status = 'open')",
            params![incident, time::now(), by, clean, result],
        )
        .map_err(|e| sql_error(&path, e))?;
        tx.commit().map_err(|e| sql_error(&path, e))
    }

    pub fn last_verification(&self, incident: i64) -> Result<Option<VerificationRow>, StoreError> {
        use crate::store::db::OptionalExtension;
        self.conn
            .query_row(
                "SELECT at, by, clean, result FROM verifications WHERE incident_id = ?1 ORDER BY id DESC LIMIT 1",
                [incident],
                |row| {
                    Ok(VerificationRow {
                        at: row.get(0)?,
                        by: row.get(1)?,
                        clean: row.get(2)?,
                        result: row.get(3)?,
                    })
                },
            )
            .optional()
            .map_err(|e| sql_error(&self.path, e))
    }

    pub fn set_evidence_dir(&mut self, incident: i64, dir: &str) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE incidents SET evidence_dir = ?2 WHERE id = ?1",
                params![incident, dir],
            )
            .map(|_| ())
            .map_err(|e| sql_error(&self.path, e))
    }

    pub fn evidence_dir(&self, incident: i64) -> Result<Option<String>, StoreError> {
        self.conn
            .query_row(
                "SELECT evidence_dir FROM incidents WHERE id = ?1",
                [incident],
                |row| row.get(0),
            )
            .map_err(|e| sql_error(&self.path, e))
    }
}

/// A `LIKE` pattern (escaped with `!`) for locators of any registry whose repository is
/// `repository`, in any case.
fn repository_pattern(repository: &str) -> String {
    format!(
        "%/{}",
        repository
            .to_lowercase()
            .replace('!', "!!")
            .replace('%', "!%")
            .replace('_', "!_")
    )
}
