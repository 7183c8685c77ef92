//! Incidents, their plans and the action journal.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use crate::store::db::{OptionalExtension, params};
use serde::Serialize;

use super::{ChainHash, ChainHead, Store, StoreError, sql_error};
use crate::model::{Driver, MountUse, clean_path};
use crate::plan::{Action, ActionKind, BuilderPlace, PlanContext, Target};
use crate::purge::{ActionState, Finished, IncidentStatus};
use crate::time::{self, Micros};

/// An incident as stored.
#[derive(Debug, Clone, Serialize)]
pub struct IncidentRow {
    pub id: i64,
    pub title: String,
    pub opened_at: Micros,
    pub opened_by: String,
    pub seeds: String,
    pub trace: String,
    pub status: IncidentStatus,
    pub closed_at: Option<Micros>,
    pub closed_by: Option<String>,
    /// The run chain's head when it was opened (its trace read no more than that); `None` for
    /// an incident opened before the store had a chain.
    pub chain: Option<ChainHead>,
}

/// A journal row: one action and what became of it.
#[derive(Debug, Clone)]
pub struct ActionRow {
    pub id: i64,
    pub seq: i64,
    pub action: Action,
    pub state: ActionState,
    pub attempts: i64,
    pub outcome: Option<String>,
    pub error: Option<String>,
    pub started_at: Option<Micros>,
    pub finished_at: Option<Micros>,
    pub duration_us: Option<i64>,
    /// Why the evidence of the target could not be saved before the action ran.
    pub evidence_gap: Option<String>,
}

/// What taking an incident's execution lock came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IncidentLock {
    Taken,
    /// Taken from a holder that is gone or stopped renewing it: why.
    TakenOver(String),
    /// Another execution holds it: who, and when it last renewed it.
    Held(String),
}

/// A target the responder leaves in place on purpose: who, when and why.
#[derive(Debug, Clone, Serialize)]
pub struct Acceptance {
    pub seq: i64,
    pub at: Micros,
    pub by: String,
    pub reason: String,
}

impl Store {
    /// Stores a new incident with its plan; returns its id.
    pub fn create_incident(
        &mut self,
        title: &str,
        opened_by: &str,
        seeds: &str,
        trace: &str,
        actions: &[Action],
    ) -> Result<i64, StoreError> {
        self.create_with_plan("incident", title, opened_by, seeds, trace, actions)
    }

    /// Stores an incident row of `kind` (`incident` or `sweep`) and its plan in one
    /// transaction; returns its id.
    pub(super) fn create_with_plan(
        &mut self,
        kind: &str,
        title: &str,
        opened_by: &str,
        seeds: &str,
        trace: &str,
        actions: &[Action],
    ) -> Result<i64, StoreError> {
        let path = self.path.clone();
        let tx = self.conn.transaction().map_err(|e| sql_error(&path, e))?;
        // Read under the write lock, after the trace: the head covers every run it read.
        let head = super::chain::stored_head(&tx).map_err(|e| sql_error(&path, e))?;
        let id: i64 = tx
            .query_row(
                "INSERT INTO incidents (title, opened_at, opened_by, seeds, trace, kind,
                                        chain_length, chain_head)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) RETURNING id",
                params![
                    title,
                    time::now(),
                    opened_by,
                    seeds,
                    trace,
                    kind,
                    head.length,
                    &head.head.0[..]
                ],
                |row| row.get(0),
            )
            .map_err(|e| sql_error(&path, e))?;
        insert_actions(&tx, id, 1, actions, kind == "sweep").map_err(|e| sql_error(&path, e))?;
        tx.commit().map_err(|e| sql_error(&path, e))?;
        Ok(id)
    }

    /// Adds actions to an incident's plan (a re-trace found more); returns how many were new.
    /// A target is the same as one planned whatever clock skew either was planned with, and
    /// whatever records believed runs have made on its builder since (builds after the purge
    /// add to them).
    pub fn extend_plan(&mut self, incident: i64, actions: &[Action]) -> Result<usize, StoreError> {
        let key = |target: &crate::plan::Target| {
            let mut target = target.clone();
            if let crate::plan::Target::Builder {
                clock_skew,
                made_by_others,
                ..
            } = &mut target
            {
                *clock_skew = None;
                made_by_others.clear();
            }
            serde_json::to_string(&target).unwrap_or_default()
        };
        let existing: BTreeSet<String> = self
            .actions(incident)?
            .into_iter()
            .map(|row| key(&row.action.target))
            .collect();
        let new: Vec<Action> = actions
            .iter()
            .filter(|a| !existing.contains(&key(&a.target)))
            .cloned()
            .collect();
        if new.is_empty() {
            return Ok(0);
        }
        let path = self.path.clone();
        let tx = self.conn.transaction().map_err(|e| sql_error(&path, e))?;
        let next: i64 = tx
            .query_row(
                "SELECT coalesce(max(seq), 0) + 1 FROM actions WHERE incident_id = ?1",
                [incident],
                |row| row.get(0),
            )
            .map_err(|e| sql_error(&path, e))?;
        insert_actions(&tx, incident, next, &new, false).map_err(|e| sql_error(&path, e))?;
        tx.commit().map_err(|e| sql_error(&path, e))?;
        Ok(new.len())
    }

    pub fn incident(&self, id: i64) -> Result<IncidentRow, StoreError> {
        self.conn
            .query_row(
                "SELECT id, title, opened_at, opened_by, seeds, trace, status, closed_at, closed_by,
                        chain_length, chain_head
                 FROM incidents WHERE id = ?1",
                [id],
                incident_from_row,
            )
            .optional()
            .map_err(|e| sql_error(&self.path, e))?
            .ok_or_else(|| StoreError::NotFound(format!("no incident `{id}`")))
    }

    pub fn incidents(&self) -> Result<Vec<IncidentRow>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, title, opened_at, opened_by, seeds, trace, status, closed_at, closed_by,
                        chain_length, chain_head
                 FROM incidents ORDER BY id",
            )
            .map_err(|e| sql_error(&self.path, e))?;
        let rows = stmt
            .query_map([], incident_from_row)
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>());
        rows.map_err(|e| sql_error(&self.path, e))
    }

    pub fn actions(&self, incident: i64) -> Result<Vec<ActionRow>, StoreError> {
        let sql = "SELECT id, seq, kind, place, target, reason, in_scope, state, attempts, outcome,
                          error, started_at, finished_at, duration_us, evidence_gap
                   FROM actions WHERE incident_id = ?1 ORDER BY seq";
        self.rows(sql, [incident], |row| {
            let kind: String = row.get(2)?;
            let target: String = row.get(4)?;
            let target: Target =
                serde_json::from_str(&target).map_err(|e| crate::store::db::DbError::Type {
                    index: 4,
                    message: e.to_string(),
                })?;
            Ok(ActionRow {
                id: row.get(0)?,
                seq: row.get(1)?,
                action: Action {
                    kind: ActionKind::parse(&kind).unwrap_or(ActionKind::FollowUp),
                    place: row.get(3)?,
                    target,
                    reason: row.get(5)?,
                    in_scope: row.get(6)?,
                },
                state: row.get(7)?,
                attempts: row.get(8)?,
                outcome: row.get(9)?,
                error: row.get(10)?,
                started_at: row.get(11)?,
                finished_at: row.get(12)?,
                duration_us: row.get(13)?,
                evidence_gap: row.get(14)?,
            })
        })
    }

    /// The cache mounts open incidents hold tainted on `builder`, by id: those a mount prune
    /// of the incident's has not emptied yet (planned, failed, out of scope or accepted), with
    /// the incident. `wrap` refuses a build that would mount one.
    pub fn held_mounts(&self, builder: &str) -> Result<Vec<(i64, String)>, StoreError> {
        let rows: Vec<(i64, String)> = self.rows(
            "SELECT a.incident_id, a.target FROM actions a JOIN incidents i ON i.id = a.incident_id
             WHERE i.status = 'open' AND a.kind = 'prune-mount' AND a.place = ?1 AND a.state <> 'done'
             ORDER BY a.incident_id, a.seq",
            [builder],
            |row| row.try_into(),
        )?;
        let mut out = Vec::new();
        for (incident, target) in rows {
            if let Ok(Target::Mount {
                builder: on,
                mount_id,
                ..
            }) = serde_json::from_str(&target)
                && on == builder
                && !out.contains(&(incident, mount_id.clone()))
            {
                out.push((incident, mount_id));
            }
        }
        Ok(out)
    }

    /// Records how an action ended, committed at once. An action interrupted before this
    /// stays pending, and the next execution runs it again: every action is idempotent.
    pub fn finish_action(
        &mut self,
        action: i64,
        finished: &Finished,
        duration_us: i64,
    ) -> Result<(), StoreError> {
        let state = finished.state();
        let (outcome, error) = match finished {
            Finished::Done(outcome) => (Some(outcome.to_string()), None),
            Finished::Failed(error) => (None, Some(error.to_string())),
            Finished::Skipped(why) => (Some(why.clone()), None),
        };
        self.conn
            .prepare_cached(
                "UPDATE actions SET state = ?2, outcome = ?3, error = ?4, finished_at = ?5, duration_us = ?6,
                    started_at = CAST(?5 AS BIGINT) - CAST(?6 AS BIGINT), attempts = attempts + 1
                 WHERE id = ?1",
            )
            .and_then(|mut stmt| stmt.execute(params![action, state, outcome, error, time::now(), duration_us]))
            .map(|_| ())
            .map_err(|e| sql_error(&self.path, e))
    }

    /// Puts done actions back to pending, with `why` as their error until they run again: what
    /// they removed is there again. Committed at once.
    pub fn reopen_actions(&mut self, actions: &HashSet<i64>, why: &str) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction()
            .map_err(|e| sql_error(&self.path, e))?;
        for &action in actions {
            tx.prepare_cached(
                "UPDATE actions SET state = 'pending', error = ?2 WHERE id = ?1 AND state = 'done'",
            )
            .and_then(|mut stmt| stmt.execute(params![action, why]))
            .map_err(|e| sql_error(&self.path, e))?;
        }
        tx.commit().map_err(|e| sql_error(&self.path, e))
    }

    /// For each cache mount `(builder, id)` asked, the open incidents that hold it
    /// ([`Store::held_mounts`]), each builder's asked once.
    pub fn incidents_holding_mounts(
        &self,
        mounts: &[(String, String)],
    ) -> Result<Vec<Vec<i64>>, StoreError> {
        let mut by_builder: std::collections::HashMap<&str, Vec<(i64, String)>> =
            std::collections::HashMap::new();
        let mut out = Vec::with_capacity(mounts.len());
        for (builder, id) in mounts {
            if !by_builder.contains_key(builder.as_str()) {
                by_builder.insert(builder, self.held_mounts(builder)?);
            }
            out.push(
                by_builder[builder.as_str()]
                    .iter()
                    .filter(|(_, held)| held == id)
                    .map(|(incident, _)| *incident)
                    .collect(),
            );
        }
        Ok(out)
    }

    /// Takes the incident's execution lock for `owner` ([`crate::actor::lock_owner`]). A lock
    /// whose holder process is gone is taken over, and so is one its holder has not renewed
    /// ([`Store::renew_incident_lock`]) for `stale`: a holder on another machine cannot be
    /// asked whether it runs.
    pub fn lock_incident(
        &mut self,
        incident: i64,
        owner: &str,
        stale: Micros,
    ) -> Result<IncidentLock, StoreError> {
        let path = self.path.clone();
        let tx = self.conn.transaction().map_err(|e| sql_error(&path, e))?;
        let current: (Option<String>, Option<Micros>) = tx
            .query_row(
                "SELECT lock_owner, lock_at FROM incidents WHERE id = ?1",
                [incident],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .map_err(|e| sql_error(&path, e))?;
        let mut outcome = IncidentLock::Taken;
        if let (Some(holder), at) = current
            && holder != owner
        {
            let renewed = at.unwrap_or(0);
            if !crate::actor::lock_holder_alive(&holder) {
                outcome = IncidentLock::TakenOver(format!("{holder} is gone"));
            } else if time::now().saturating_sub(renewed) > stale {
                outcome = IncidentLock::TakenOver(format!(
                    "{holder} has not renewed it since {}",
                    time::format(renewed)
                ));
            } else {
                return Ok(IncidentLock::Held(format!(
                    "{holder}, renewed {}",
                    time::format(renewed)
                )));
            }
        }
        tx.execute(
            "UPDATE incidents SET lock_owner = ?2, lock_at = ?3 WHERE id = ?1",
            params![incident, owner, time::now()],
        )
        .map_err(|e| sql_error(&path, e))?;
        tx.commit().map_err(|e| sql_error(&path, e))?;
        Ok(outcome)
    }

    /// Whether `owner` holds the incident's execution lock.
    pub fn holds_incident_lock(&self, incident: i64, owner: &str) -> Result<bool, StoreError> {
        self.conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM incidents WHERE id = ?1 AND lock_owner = ?2)",
                params![incident, owner],
                |row| row.get(0),
            )
            .map_err(|e| sql_error(&self.path, e))
    }

    /// Renews the incident's lock while `owner` holds it; `false` when it does not any more.
    pub fn renew_incident_lock(&mut self, incident: i64, owner: &str) -> Result<bool, StoreError> {
        self.conn
            .execute(
                "UPDATE incidents SET lock_at = ?3 WHERE id = ?1 AND lock_owner = ?2",
                params![incident, owner, time::now()],
            )
            .map(|n| n == 1)
            .map_err(|e| sql_error(&self.path, e))
    }

    pub fn unlock_incident(&mut self, incident: i64, owner: &str) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE incidents SET lock_owner = NULL, lock_at = NULL WHERE id = ?1 AND lock_owner = ?2",
                params![incident, owner],
            )
            .map(|_| ())
            .map_err(|e| sql_error(&self.path, e))
    }

    pub fn close_incident(&mut self, incident: i64, by: &str) -> Result<(), StoreError> {
        // Under the writer lock, as a verification's record is: one waits for the other.
        let path = self.path.clone();
        let tx = self.conn.transaction().map_err(|e| sql_error(&path, e))?;
        tx.execute(
            "UPDATE incidents SET status = 'closed', closed_at = ?2, closed_by = ?3 WHERE id = ?1",
            params![incident, time::now(), by],
        )
        .map_err(|e| sql_error(&path, e))?;
        tx.commit().map_err(|e| sql_error(&path, e))
    }

    /// Records that the targets of actions `seqs` are left in place on purpose. Every seq must
    /// name an action of the incident; otherwise nothing is written.
    pub fn accept(
        &mut self,
        incident: i64,
        seqs: &[i64],
        by: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        let path = self.path.clone();
        let tx = self.conn.transaction().map_err(|e| sql_error(&path, e))?;
        let now = time::now();
        for seq in seqs {
            let known: bool = tx
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM actions WHERE incident_id = ?1 AND seq = ?2)",
                    params![incident, seq],
                    |row| row.get(0),
                )
                .map_err(|e| sql_error(&path, e))?;
            if !known {
                return Err(StoreError::NotFound(format!(
                    "incident {incident} has no action `{seq}` (cachewarden incident show {incident} lists them)"
                )));
            }
            tx.execute(
                "INSERT INTO acceptances (incident_id, seq, at, by, reason) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![incident, seq, now, by, reason],
            )
            .map_err(|e| sql_error(&path, e))?;
        }
        tx.commit().map_err(|e| sql_error(&path, e))
    }

    /// Every acceptance recorded for the incident, oldest first.
    pub fn acceptances(&self, incident: i64) -> Result<Vec<Acceptance>, StoreError> {
        self.rows(
            "SELECT seq, at, by, reason FROM acceptances WHERE incident_id = ?1 ORDER BY id",
            [incident],
            |row| {
                Ok(Acceptance {
                    seq: row.get(0)?,
                    at: row.get(1)?,
                    by: row.get(2)?,
                    reason: row.get(3)?,
                })
            },
        )
    }

    /// The latest purge this store saw done (by its executor or recorded by hand) of each
    /// place: `(builder, Some(mount id))` for a mount, `(builder, None)` for the builder's whole
    /// cache. Imported purges are left out, since an import line can claim any time, and so are
    /// places never purged.
    pub fn last_purges(
        &self,
        places: &[(String, Option<String>)],
    ) -> Result<BTreeMap<(String, Option<String>), Micros>, StoreError> {
        let mut out = BTreeMap::new();
        for (builder, mount) in places {
            let at: Option<Micros> = match mount {
                None => self.conn.query_row(
                    "SELECT max(u.at) FROM purges u JOIN builders b ON b.id = u.builder_id
                     WHERE u.kind = 'builder' AND b.name = ?1 AND u.method <> 'imported'",
                    [builder],
                    |row| row.get(0),
                ),
                Some(mount) => self.conn.query_row(
                    "SELECT max(u.at) FROM purges u JOIN mounts m ON m.id = u.mount
                     JOIN builders b ON b.id = u.builder_id
                     WHERE u.kind = 'mount' AND b.name = ?1 AND m.mount_id = ?2
                       AND u.method <> 'imported'",
                    params![builder, mount],
                    |row| row.get(0),
                ),
            }
            .map_err(|e| sql_error(&self.path, e))?;
            if let Some(at) = at {
                out.insert((builder.clone(), mount.clone()), at);
            }
        }
        Ok(out)
    }

    /// Notes, per action seq, why its target's evidence could not be saved.
    pub fn set_evidence_gaps(
        &mut self,
        incident: i64,
        gaps: &[(i64, String)],
    ) -> Result<(), StoreError> {
        let path = self.path.clone();
        let tx = self.conn.transaction().map_err(|e| sql_error(&path, e))?;
        for (seq, why) in gaps {
            tx.execute(
                "UPDATE actions SET evidence_gap = ?3 WHERE incident_id = ?1 AND seq = ?2",
                params![incident, seq, why],
            )
            .map_err(|e| sql_error(&path, e))?;
        }
        tx.commit().map_err(|e| sql_error(&path, e))
    }

    /// Endpoints, drivers and mount target paths the plan needs.
    /// The records on `builder` that runs not at the level `doubted` created, those runs
    /// having finished at or after `since`: record evidence that is believed.
    pub fn believed_records_since(
        &self,
        builder: &str,
        since: Micros,
        doubted: &str,
    ) -> Result<Vec<String>, StoreError> {
        self.rows(
            "SELECT DISTINCT br.record_id FROM builder_records br
             JOIN builders b ON b.id = br.builder_id
             JOIN events e ON e.kind = 'created_record' AND e.target = br.id
             JOIN runs r ON r.id = e.run_id
             WHERE b.name = ?1 AND r.finished_at >= ?2
               AND (r.trust_level IS NULL OR r.trust_level <> ?3)
             ORDER BY br.record_id",
            params![builder, since, doubted],
            |row| row.get(0),
        )
    }

    pub fn plan_context(
        &self,
        builders: &BTreeSet<String>,
        mounts: &BTreeSet<(String, String)>,
    ) -> Result<PlanContext, StoreError> {
        let err = |e| sql_error(&self.path, e);
        let mut ctx = PlanContext::default();
        let mut stmt = self
            .conn
            .prepare_cached("SELECT driver, endpoint FROM builders WHERE name = ?1")
            .map_err(err)?;
        for name in builders {
            let place = stmt
                .query_row([name], |row| {
                    let driver: Option<String> = row.get(0)?;
                    Ok(BuilderPlace {
                        driver: driver.as_deref().and_then(parse_driver),
                        endpoint: row.get(1)?,
                    })
                })
                .optional()
                .map_err(err)?
                .unwrap_or_default();
            ctx.builders.insert(name.clone(), place);
        }
        // Every mount use on the affected builders, to know target paths and who shares them.
        let affected: BTreeSet<&String> = mounts.iter().map(|(b, _)| b).collect();
        let mut uses = self
            .conn
            .prepare_cached(
                "SELECT DISTINCT m.namespace, m.mount_id,
                        coalesce((SELECT d.detail FROM event_details d WHERE d.event_id = e.id
                                  ORDER BY d.id DESC LIMIT 1), e.detail)
                 FROM mounts m
                 JOIN builders b ON b.id = m.builder_id
                 JOIN events e ON e.kind = 'read_mount' AND e.target = m.id
                 WHERE b.name = ?1",
            )
            .map_err(err)?;
        for builder in affected {
            let rows: Vec<(String, String, Option<String>)> = uses
                .query_map([builder], |row| row.try_into())
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(err)?;
            // By namespace and id: one id under two namespaces is two caches.
            let mut targets: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
            for (namespace, mount_id, detail) in rows {
                let entry = targets.entry((namespace, mount_id.clone())).or_default();
                use_targets(entry, &mount_id, detail);
            }
            for (user, ts) in &targets {
                for t in ts {
                    ctx.target_users
                        .entry((builder.clone(), t.clone()))
                        .or_default()
                        .insert(user.clone());
                }
                let (namespace, mount_id) = user;
                if namespace.is_empty() && mounts.contains(&(builder.clone(), mount_id.clone())) {
                    ctx.mount_targets.insert(
                        (builder.clone(), mount_id.clone()),
                        ts.iter().cloned().collect(),
                    );
                }
            }
        }
        Ok(ctx)
    }

    /// For each of `runs`: the cache-mount records (`exec.cachemount`) it recorded creating or
    /// reusing, as (builder, record id, description), and the cache mounts it recorded using,
    /// as (namespace, mount id, target paths). Runs with neither are left out.
    pub fn runs_mount_records(
        &self,
        runs: &BTreeSet<i64>,
    ) -> Result<Vec<RunMountRecords>, StoreError> {
        let err = |e| sql_error(&self.path, e);
        let mut records = self
            .conn
            .prepare_cached(
                "SELECT DISTINCT b.name, br.record_id, br.description
                 FROM events e
                 JOIN builder_records br ON br.id = e.target
                 JOIN builders b ON b.id = br.builder_id
                 WHERE e.run_id = ?1 AND e.kind IN ('created_record', 'reused_record')
                   AND br.record_type = 'exec.cachemount'
                 ORDER BY b.name, br.record_id",
            )
            .map_err(err)?;
        let mut uses = self
            .conn
            .prepare_cached(
                "SELECT m.namespace, m.mount_id,
                        coalesce((SELECT d.detail FROM event_details d WHERE d.event_id = e.id
                                  ORDER BY d.id DESC LIMIT 1), e.detail)
                 FROM events e JOIN mounts m ON m.id = e.target
                 WHERE e.run_id = ?1 AND e.kind IN ('read_mount', 'wrote_mount')",
            )
            .map_err(err)?;
        let mut out = Vec::new();
        for &run in runs {
            let found: Vec<(String, String, String)> = records
                .query_map([run], |row| row.try_into())
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(err)?;
            if found.is_empty() {
                continue;
            }
            let rows: Vec<(String, String, Option<String>)> = uses
                .query_map([run], |row| row.try_into())
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(err)?;
            let mut mounts: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
            for (namespace, mount_id, detail) in rows {
                let targets = mounts.entry((namespace, mount_id.clone())).or_default();
                use_targets(targets, &mount_id, detail);
            }
            out.push(RunMountRecords {
                run,
                records: found,
                mounts: mounts
                    .into_iter()
                    .map(|((ns, id), ts)| (ns, id, ts.into_iter().collect()))
                    .collect(),
            });
        }
        Ok(out)
    }

    /// Those of `artifacts` that runs recorded only as images (built or used as a base), never
    /// exported or imported as a cache: a copy of a cache's bytes there is still an image.
    pub fn images_only(&self, artifacts: &BTreeSet<i64>) -> Result<BTreeSet<i64>, StoreError> {
        let err = |e| sql_error(&self.path, e);
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT DISTINCT kind FROM events
                 WHERE kind IN ('produced', 'used_base', 'exported', 'imported') AND target = ?1",
            )
            .map_err(err)?;
        let mut out = BTreeSet::new();
        for &artifact in artifacts {
            let kinds: Vec<String> = stmt
                .query_map([artifact], |row| row.get(0))
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(err)?;
            if !kinds.is_empty() && kinds.iter().all(|k| k == "produced" || k == "used_base") {
                out.insert(artifact);
            }
        }
        Ok(out)
    }
}

/// Adds to `targets` the target paths of the uses of mount `mount_id` an event's `detail`
/// records: each use's target, or its id when the id is a path; the mount id itself when it
/// is a path and no use says more. Each is cleaned (`/c/` and `//c/.` are `/c`), as a
/// record's description is read: two mounts at one target share it however each wrote it.
fn use_targets(targets: &mut BTreeSet<String>, mount_id: &str, detail: Option<String>) {
    let uses: Vec<MountUse> = detail
        .and_then(|d| serde_json::from_str(&d).ok())
        .unwrap_or_default();
    for m in uses {
        // A use without a known target is at the id itself when the id is a path.
        let target = m
            .target
            .or_else(|| m.id.starts_with('/').then(|| m.id.clone()));
        targets.extend(target.map(|t| clean_path(&t)));
    }
    if targets.is_empty() && mount_id.starts_with('/') {
        targets.insert(clean_path(mount_id));
    }
}

/// A run's cache-mount records and the cache mounts it recorded ([`Store::runs_mount_records`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunMountRecords {
    pub run: i64,
    /// (builder, record id, description).
    pub records: Vec<(String, String, String)>,
    /// (namespace, mount id, target paths).
    pub mounts: Vec<(String, String, Vec<String>)>,
}

impl Store {
    /// The latest builds that read a mount on a builder (at most 50, newest first): how each
    /// used it, as recorded, and the base images it used. The purge picks from these what
    /// listing the mount's contents takes.
    pub fn mount_reads(&self, builder: &str, mount_id: &str) -> Result<Vec<MountRead>, StoreError> {
        let err = |e| sql_error(&self.path, e);
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT coalesce((SELECT d.detail FROM event_details d WHERE d.event_id = e.id
                                  ORDER BY d.id DESC LIMIT 1), e.detail), e.run_id
                 FROM events e JOIN mounts m ON m.id = e.target
                 JOIN builders b ON b.id = m.builder_id
                 WHERE e.kind = 'read_mount' AND b.name = ?1 AND m.mount_id = ?2
                   AND m.namespace = ''
                 ORDER BY e.at DESC LIMIT 50",
            )
            .map_err(err)?;
        let rows: Vec<(Option<String>, i64)> = stmt
            .query_map(params![builder, mount_id], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(err)?;
        let mut bases = self
            .conn
            .prepare_cached(
                "SELECT a.backend, a.locator, a.digest, a.key FROM events e JOIN artifacts a ON a.id = e.target
                 WHERE e.run_id = ?1 AND e.kind = 'used_base'",
            )
            .map_err(err)?;
        let mut reads = Vec::new();
        for (detail, run) in rows {
            let uses = detail
                .and_then(|d| serde_json::from_str::<Vec<MountUse>>(&d).ok())
                .unwrap_or_default();
            let bases = bases
                .query_map([run], |row| {
                    Ok(UsedBase {
                        backend: row.get(0)?,
                        locator: row.get(1)?,
                        digest: row.get(2)?,
                        key: row.get(3)?,
                    })
                })
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(err)?;
            reads.push(MountRead { uses, bases });
        }
        Ok(reads)
    }
}

/// One build that read a mount, as recorded.
#[derive(Debug, Clone)]
pub struct MountRead {
    /// The cache mounts of its step (the mount's own among them).
    pub uses: Vec<MountUse>,
    pub bases: Vec<UsedBase>,
}

/// A base image a build used, as the store has the artifact.
#[derive(Debug, Clone)]
pub struct UsedBase {
    /// `local-image` or `registry`.
    pub backend: String,
    pub locator: String,
    pub digest: String,
    /// A local image's id.
    pub key: String,
}

fn parse_driver(value: &str) -> Option<Driver> {
    match value {
        "docker" => Some(Driver::Docker),
        "buildkitd" => Some(Driver::Buildkitd),
        "docker-container" => Some(Driver::DockerContainer),
        _ => None,
    }
}

/// Inserts planned actions. Follow-ups are never executed, so they are settled at once. An
/// incident's action outside the scope waits as pending: the scope is decided again each time
/// the purge acts. A sweep is planned anew on every run, so its out-of-scope actions are
/// settled as skipped.
fn insert_actions(
    tx: &crate::store::db::Transaction<'_>,
    incident: i64,
    first_seq: i64,
    actions: &[Action],
    settle_out_of_scope: bool,
) -> crate::store::db::DbResult<()> {
    let mut stmt = tx.prepare_cached(
        "INSERT INTO actions (incident_id, seq, kind, place, target, reason, in_scope, state)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    for (i, action) in actions.iter().enumerate() {
        let target = serde_json::to_string(&action.target)
            .map_err(|e| crate::store::db::DbError::Value(e.to_string()))?;
        let state =
            if action.kind == ActionKind::FollowUp || (settle_out_of_scope && !action.in_scope) {
                ActionState::Skipped
            } else {
                ActionState::Pending
            };
        stmt.execute(params![
            incident,
            first_seq + i as i64,
            action.kind.as_str(),
            action.place,
            target,
            action.reason,
            action.in_scope,
            state
        ])?;
    }
    Ok(())
}

fn incident_from_row(row: &crate::store::db::Row<'_>) -> crate::store::db::DbResult<IncidentRow> {
    Ok(IncidentRow {
        id: row.get(0)?,
        title: row.get(1)?,
        opened_at: row.get(2)?,
        opened_by: row.get(3)?,
        seeds: row.get(4)?,
        trace: row.get(5)?,
        status: row.get(6)?,
        closed_at: row.get(7)?,
        closed_by: row.get(8)?,
        chain: match (
            row.get::<_, Option<i64>>(9)?,
            row.get::<_, Option<Vec<u8>>>(10)?,
        ) {
            (Some(length), Some(head)) => {
                <[u8; 32]>::try_from(head.as_slice())
                    .ok()
                    .map(|head| ChainHead {
                        length,
                        head: ChainHash(head),
                    })
            }
            _ => None,
        },
    })
}

/// States are text in SQL (the schema's `CHECK` lists the words) and typed everywhere else.
impl crate::store::db::ToValue for ActionState {
    fn to_value(&self) -> crate::store::db::DbResult<crate::store::db::Value<'_>> {
        Ok(crate::store::db::Value::Text(self.as_str()))
    }
}

impl crate::store::db::FromValue for ActionState {
    fn from_value(value: crate::store::db::ValueRef<'_>) -> crate::store::db::DbResult<Self> {
        let text = value.as_str()?;
        Self::parse(text).ok_or_else(|| unknown_word("action state", text))
    }
}

impl crate::store::db::ToValue for IncidentStatus {
    fn to_value(&self) -> crate::store::db::DbResult<crate::store::db::Value<'_>> {
        Ok(crate::store::db::Value::Text(self.as_str()))
    }
}

impl crate::store::db::FromValue for IncidentStatus {
    fn from_value(value: crate::store::db::ValueRef<'_>) -> crate::store::db::DbResult<Self> {
        let text = value.as_str()?;
        Self::parse(text).ok_or_else(|| unknown_word("incident status", text))
    }
}

fn unknown_word(what: &str, text: &str) -> crate::store::db::DbError {
    crate::store::db::DbError::Value(format!("unknown {what} `{text}`"))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::use_targets;
    use crate::plan::{Action, ActionKind, Target};
    use crate::store::Store;

    /// A re-run plan's builder prune is the one planned, whatever believed runs made on the
    /// builder since (builds after the purge) and whatever clock skew either was planned with;
    /// one that prunes other records is new.
    #[test]
    fn a_builder_target_is_planned_once_whatever_others_made_since() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("db")).unwrap();
        let prune = |ids: &[&str], others: &[&str], skew: i64| Action {
            kind: ActionKind::PruneBuilder,
            place: "ci-1".into(),
            target: Target::Builder {
                builder: "ci-1".into(),
                endpoint: None,
                driver: None,
                record_ids: ids.iter().map(|&id| id.to_owned()).collect(),
                used_since: None,
                made_since: Some(100),
                made_by_others: others.iter().map(|&id| id.to_owned()).collect(),
                full: false,
                partial: false,
                clock_skew: Some(skew),
            },
            reason: String::new(),
            in_scope: true,
        };
        let id = store
            .create_incident("t", "me", "{}", "{}", &[prune(&["r1"], &["a"], 300)])
            .unwrap();
        let again = [prune(&["r1"], &["a", "rebuilt"], 60)];
        assert_eq!(store.extend_plan(id, &again).unwrap(), 0);
        let more = [prune(&["r1", "r2"], &["a"], 300)];
        assert_eq!(store.extend_plan(id, &more).unwrap(), 1);
    }

    /// A use's target is taken cleaned, as a record's description is read, whatever wrote it
    /// (a store written before targets were cleaned on the way in holds them as given).
    #[test]
    fn use_targets_are_cleaned() {
        let mut targets = BTreeSet::new();
        use_targets(
            &mut targets,
            "pip",
            Some(r#"[{"id":"pip","target":"/root/.cache/pip/"},{"id":"pip","target":"//root/./.cache/pip"}]"#.to_owned()),
        );
        assert_eq!(targets, BTreeSet::from(["/root/.cache/pip".to_owned()]));
        let mut targets = BTreeSet::new();
        use_targets(&mut targets, "/c/d/", None);
        assert_eq!(targets, BTreeSet::from(["/c/d".to_owned()]));
    }
}
