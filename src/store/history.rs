//! Build history collected from a builder. Each record is matched to the run a hook recorded
//! (by the build ref the hook saw, else by builder, Dockerfile and overlapping time) and what
//! it adds is appended to that run as events of source `build-history`; a build no hook
//! recorded is stored as a run of the untrusted pipeline `unrecorded@BUILDER`, so that a trace
//! reaches it. A record collected once is never collected again.

use crate::store::db::{OptionalExtension, Transaction, params};
use serde::Serialize;

use super::write::{
    IdCache, WriteError, WriteResult, builder_id_by_name, insert_event, insert_run, kind, source,
    upsert_artifact,
};
use super::{Store, StoreError, sql_error};
use crate::config::Config;
use crate::ingest::history::HistoryBuild;
use crate::model::{BuilderInfo, PipelineInfo, RunRecord};
use crate::time::{self, Micros};

/// The pipeline the builds of `builder` that no hook recorded are stored under.
pub fn unrecorded_pipeline(builder: &str) -> String {
    format!("unrecorded@{builder}")
}

/// How a history record found its run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HistoryMatch {
    /// The hook saw the same build ref.
    BuildRef,
    /// The one recorded run on the builder with the Dockerfile whose time overlaps the build.
    Window,
    /// No hook recorded it: stored as a run of `unrecorded@BUILDER`.
    Unrecorded,
}

impl HistoryMatch {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BuildRef => "build-ref",
            Self::Window => "window",
            Self::Unrecorded => "unrecorded",
        }
    }

    fn parse(value: &str) -> Self {
        match value {
            "build-ref" => Self::BuildRef,
            "window" => Self::Window,
            _ => Self::Unrecorded,
        }
    }
}

/// One history record and what collecting it did.
#[derive(Debug, Clone, Serialize)]
pub struct CollectedBuild {
    #[serde(flatten)]
    pub build: HistoryBuild,
    pub matched_by: HistoryMatch,
    /// The run, `pipeline/run/step`.
    pub run: String,
    /// False when an earlier collect stored it: nothing was written this time.
    pub new: bool,
    /// Events appended this time.
    pub events: usize,
}

/// What one collect did.
#[derive(Debug, Clone, Default)]
pub struct CollectOutcome {
    pub builds: Vec<CollectedBuild>,
    /// Records that matched more than one run, each naming the build.
    pub warnings: Vec<String>,
}

impl Store {
    /// Stores what a builder's history says, in one transaction: all or nothing. `builds` are
    /// checked records of `builder`; `config` gives the lowest trust level, the level of the
    /// unrecorded builds.
    pub fn collect_history(
        &mut self,
        builder: &str,
        builds: &[HistoryBuild],
        config: &Config,
    ) -> Result<CollectOutcome, StoreError> {
        let path = self.path.clone();
        let fail = |err: WriteError| match err {
            WriteError::Refused(message) => StoreError::Input(message),
            WriteError::Conflict(message) => StoreError::Conflict(message),
            WriteError::Sql(err) => sql_error(&path, err),
        };
        let tx = self.conn.transaction().map_err(|e| sql_error(&path, e))?;
        let mut cache = IdCache::default();
        let now = time::now();
        let builder_id =
            builder_id_by_name(&tx, &mut cache, builder).map_err(|e| fail(e.into()))?;
        let mut order: Vec<&HistoryBuild> = builds.iter().collect();
        order.sort_by(|a, b| (a.created_at, &a.build_ref).cmp(&(b.created_at, &b.build_ref)));
        order.dedup_by(|a, b| a.build_ref == b.build_ref);
        let mut outcome = CollectOutcome::default();
        for build in &order {
            let collected = collect_one(
                &tx,
                &mut cache,
                config,
                (builder, builder_id),
                build,
                &order,
                now,
            )
            .map_err(fail)?;
            outcome.warnings.extend(collected.1);
            outcome.builds.push(collected.0);
        }
        tx.commit().map_err(|e| sql_error(&path, e))?;
        Ok(outcome)
    }
}

fn run_name(tx: &Transaction<'_>, run: i64) -> crate::store::db::DbResult<String> {
    tx.prepare_cached(
        "SELECT p.name, r.run_key, r.step FROM runs r JOIN pipelines p ON p.id = r.pipeline_id
         WHERE r.id = ?1",
    )?
    .query_row([run], |row| {
        Ok(crate::model::run_name(
            &row.get::<_, String>(0)?,
            &row.get::<_, String>(1)?,
            &row.get::<_, String>(2)?,
        ))
    })
}

/// Whether a run's step names the Dockerfile: one of its `:`-separated parts ends in it as a
/// path. The Dockerfile is read as a step made of it is named (trimmed and composed).
fn step_names(step: &str, dockerfile: &str) -> bool {
    let dockerfile = crate::model::limits::normalized_name(dockerfile);
    let base = dockerfile.rsplit('/').next().unwrap_or(&dockerfile);
    step.split(':')
        .any(|part| part.rsplit('/').next() == Some(base))
}

/// `batch` is every build this collect stores: a window fits any client of the builder that
/// builds at the same time, so a run that another build of the batch fits as well is pinned on
/// neither.
fn collect_one(
    tx: &Transaction<'_>,
    cache: &mut IdCache,
    config: &Config,
    (builder, builder_id): (&str, i64),
    build: &HistoryBuild,
    batch: &[&HistoryBuild],
    now: Micros,
) -> WriteResult<(CollectedBuild, Vec<String>)> {
    let mut warnings = Vec::new();
    let known: Option<(i64, String)> = tx
        .prepare_cached(
            "SELECT run_id, matched_by FROM build_history WHERE builder_id = ?1 AND build_ref = ?2",
        )?
        .query_row(params![builder_id, build.build_ref], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .optional()?;
    if let Some((run, matched_by)) = known {
        return Ok((
            CollectedBuild {
                build: build.clone(),
                matched_by: HistoryMatch::parse(&matched_by),
                run: run_name(tx, run)?,
                new: false,
                events: 0,
            },
            warnings,
        ));
    }
    let unrecorded = unrecorded_pipeline(builder);
    let by_ref: Vec<i64> = tx
        .prepare_cached(
            "SELECT DISTINCT r.id FROM run_build_refs b JOIN runs r ON r.id = b.run_id
             WHERE b.build_ref = ?1 AND r.builder_id = ?2 LIMIT 2",
        )?
        .query_map(params![build.build_ref, builder_id], |row| row.get(0))?
        .collect::<crate::store::db::DbResult<_>>()?;
    let found = if let [run] = by_ref[..] {
        Some((run, HistoryMatch::BuildRef))
    } else {
        // Runs of the builder overlapping the build that no other record claimed and that saw
        // no build ref of their own (theirs would have matched).
        let candidates: Vec<(i64, String, Micros, Micros)> = tx
            .prepare_cached(
                "SELECT r.id, r.step, r.started_at, r.finished_at
                 FROM runs r JOIN pipelines p ON p.id = r.pipeline_id
                 WHERE r.builder_id = ?1 AND r.started_at <= ?3 AND r.finished_at >= ?2
                   AND p.name <> ?4
                   AND NOT EXISTS (SELECT 1 FROM build_history h WHERE h.run_id = r.id)
                   AND NOT EXISTS (SELECT 1 FROM run_build_refs b WHERE b.run_id = r.id)",
            )?
            .query_map(
                params![builder_id, build.created_at, build.completed_at, unrecorded],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
            )?
            .collect::<crate::store::db::DbResult<_>>()?;
        let named: Vec<&(i64, String, Micros, Micros)> = candidates
            .iter()
            .filter(|(_, step, _, _)| step_names(step, &build.dockerfile))
            .collect();
        match named[..] {
            [(run, step, started_at, finished_at)] => {
                let mut rivals = Vec::new();
                for other in batch {
                    if other.build_ref == build.build_ref
                        || other.created_at > *finished_at
                        || other.completed_at < *started_at
                        || !step_names(step, &other.dockerfile)
                    {
                        continue;
                    }
                    // A build a hook saw the ref of belongs to that run, not this one.
                    let has_run: bool = tx
                        .prepare_cached(
                            "SELECT EXISTS (SELECT 1 FROM run_build_refs b
                             JOIN runs r ON r.id = b.run_id
                             JOIN pipelines p ON p.id = r.pipeline_id
                             WHERE b.build_ref = ?1 AND r.builder_id = ?2 AND p.name <> ?3)",
                        )?
                        .query_row(params![other.build_ref, builder_id, unrecorded], |row| {
                            row.get(0)
                        })?;
                    if !has_run {
                        rivals.push(other.build_ref.as_str());
                    }
                }
                if rivals.is_empty() {
                    Some((*run, HistoryMatch::Window))
                } else {
                    warnings.push(format!(
                        "builds `{}` and `{}` both fit run {} by time and Dockerfile: neither is pinned on it, both are stored as unrecorded",
                        build.build_ref,
                        rivals.join("`, `"),
                        run_name(tx, *run)?
                    ));
                    None
                }
            }
            [] => None,
            _ => {
                warnings.push(format!(
                    "build `{}` overlaps {} recorded runs with its Dockerfile: stored as unrecorded",
                    build.build_ref,
                    named.len()
                ));
                None
            }
        }
    };
    let (run, matched_by, events) = match found {
        Some((run, matched_by)) => {
            let events = append_to_run(tx, cache, run, build, now)?;
            (run, matched_by, events)
        }
        None => {
            let lowest = config.trust_levels().into_iter().next();
            let record = RunRecord {
                pipeline: PipelineInfo {
                    name: unrecorded.clone(),
                    project: None,
                    trust_level: lowest.clone(),
                },
                trust_level: lowest,
                run_id: build.build_ref.clone(),
                step: build.step(),
                commit: None,
                git_ref: None,
                builder: Some(BuilderInfo {
                    name: builder.to_owned(),
                    driver: None,
                    endpoint: None,
                }),
                started_at: build.created_at,
                finished_at: build.completed_at,
                status: build.status,
                imported: build.cache_imports.clone(),
                exported: Vec::new(),
                produced: build.images.clone(),
                base_images: Vec::new(),
                mounts: Vec::new(),
                records: None,
                truncated: false,
                build_ref: Some(build.build_ref.clone()),
            };
            let outcome = insert_run(
                tx,
                cache,
                config,
                (&record, source::BUILD_HISTORY),
                now,
                None,
            )?;
            warnings.extend(outcome.warnings);
            (outcome.run, HistoryMatch::Unrecorded, outcome.events)
        }
    };
    let facts = serde_json::to_string(build)
        .map_err(|e| WriteError::Sql(crate::store::db::DbError::Value(e.to_string())))?;
    tx.prepare_cached(
        "INSERT INTO build_history (builder_id, build_ref, run_id, matched_by, created_at,
                                    completed_at, facts, collected_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        builder_id,
        build.build_ref,
        run,
        matched_by.as_str(),
        build.created_at,
        build.completed_at,
        facts,
        now
    ])?;
    Ok((
        CollectedBuild {
            build: build.clone(),
            matched_by,
            run: run_name(tx, run)?,
            new: true,
            events,
        },
        warnings,
    ))
}

/// Appends what the history knows and the run does not to a recorded run: a cache import the
/// hook did not record from that repository or scope, an image it did not record. The run's
/// own row is never touched.
fn append_to_run(
    tx: &Transaction<'_>,
    cache: &mut IdCache,
    run: i64,
    build: &HistoryBuild,
    now: Micros,
) -> WriteResult<usize> {
    let (started_at, finished_at): (Micros, Micros) = tx
        .prepare_cached("SELECT started_at, finished_at FROM runs WHERE id = ?1")?
        .query_row([run], |row| Ok((row.get(0)?, row.get(1)?)))?;
    let mut events = 0;
    for (list, what, at) in [
        (&build.cache_imports, kind::IMPORTED, finished_at),
        (&build.images, kind::PRODUCED, started_at),
    ] {
        for artifact in list {
            // The same artifact under another key (a local image `wrap` named), or an import
            // the hook pinned by digest where history names the tag, is already recorded.
            let key = match (&artifact.digest, artifact.key.is_empty()) {
                (Some(_), _) => String::new(),
                (None, true) => artifact.tag.clone().unwrap_or_else(|| "latest".to_owned()),
                (None, false) => artifact.key.clone(),
            };
            let recorded: bool = tx
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM events e JOIN artifacts a ON a.id = e.target
                     WHERE e.run_id = ?1 AND e.kind = ?2 AND a.backend = ?3 AND a.locator = ?4
                       AND CASE WHEN ?5 <> '' THEN a.digest = ?5
                                ELSE a.key = ?6 OR a.digest <> '' END)",
                )?
                .query_row(
                    params![
                        run,
                        what,
                        artifact.backend.as_str(),
                        artifact.locator,
                        artifact.digest.as_ref().map_or("", |d| d.as_str()),
                        key
                    ],
                    |row| row.get(0),
                )?;
            if recorded {
                continue;
            }
            let id = upsert_artifact(tx, cache, artifact, at)?;
            if insert_event(tx, run, (what, source::BUILD_HISTORY), id, at, None, now)? {
                events += 1;
            }
        }
    }
    // What history adds to a recorded run is chained as any later addition is.
    if events > 0 {
        super::chain::append(
            tx,
            &mut cache.chain,
            (run, false),
            super::chain::EntryKind::Events,
            now,
        )?;
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::model::{Artifact, ImageRef, RunStatus};

    /// A Dockerfile named in decomposed form matches the step made of it, which is composed.
    #[test]
    fn a_decomposed_dockerfile_names_its_composed_step() {
        assert!(step_names(
            "build:caf\u{e9}/Dockerfile",
            "ctx/cafe\u{301}/Dockerfile"
        ));
        assert!(step_names("Dockerfile.caf\u{e9}", "Dockerfile.cafe\u{301}"));
        assert!(!step_names("Dockerfile", "Dockerfile.web"));
    }

    const MINUTE: Micros = 60_000_000;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        (dir, store)
    }

    fn run(pipeline: &str, step: &str, minutes: (i64, i64)) -> RunRecord {
        RunRecord {
            pipeline: PipelineInfo {
                name: pipeline.to_owned(),
                ..PipelineInfo::default()
            },
            trust_level: Some("release".into()),
            run_id: "1".into(),
            step: step.into(),
            commit: None,
            git_ref: None,
            builder: Some(BuilderInfo {
                name: "ci-1".into(),
                driver: None,
                endpoint: None,
            }),
            started_at: minutes.0 * MINUTE,
            finished_at: minutes.1 * MINUTE,
            status: RunStatus::Succeeded,
            imported: Vec::new(),
            exported: Vec::new(),
            produced: Vec::new(),
            base_images: Vec::new(),
            mounts: Vec::new(),
            records: None,
            truncated: false,
            build_ref: None,
        }
    }

    fn build(build_ref: &str, minutes: (i64, i64)) -> HistoryBuild {
        HistoryBuild {
            build_ref: build_ref.into(),
            created_at: minutes.0 * MINUTE + 1,
            completed_at: minutes.1 * MINUTE - 1,
            status: RunStatus::Succeeded,
            frontend: String::new(),
            dockerfile: "Dockerfile".into(),
            target: None,
            build_args: BTreeMap::new(),
            build_args_dropped: 0,
            cache_imports: vec![Artifact::registry(
                &ImageRef::parse("r.io/web:cache", "test").unwrap(),
            )],
            images: Vec::new(),
            image_digest: None,
            cache_manifest: None,
            cached_steps: 1,
            total_steps: 2,
        }
    }

    fn count(store: &Store, sql: &str) -> i64 {
        store.conn.query_row(sql, [], |row| row.get(0)).unwrap()
    }

    fn matches(outcome: &CollectOutcome) -> Vec<(HistoryMatch, String, bool, usize)> {
        outcome
            .builds
            .iter()
            .map(|b| (b.matched_by, b.run.clone(), b.new, b.events))
            .collect()
    }

    /// What a collect adds (events appended to a recorded run, and unrecorded runs) is chained:
    /// the run chain still verifies whole afterwards, and has grown by those entries.
    #[test]
    fn collected_additions_keep_the_run_chain_whole() {
        let (_dir, mut store) = store();
        let config = Config::default();
        store
            .record_run(&run("web", "Dockerfile", (10, 20)), &config)
            .unwrap();
        let before = store.chain_head().unwrap().length;
        let builds = [build("one", (11, 19)), build("two", (31, 39))];
        let outcome = store.collect_history("ci-1", &builds, &config).unwrap();
        let m = matches(&outcome);
        assert!(m.iter().any(|b| b.3 > 0), "{m:?}");
        let check = store.verify_chain(None).unwrap();
        assert!(check.broken.is_none(), "{:?}", check.broken);
        assert_eq!(check.length, before + 2);
    }

    /// The one run on the builder with the Dockerfile whose time overlaps a build is its run,
    /// and gains the import as a `build-history` event; a build overlapping two such runs is
    /// not pinned on either (stored as unrecorded, with a warning), and a build overlapping
    /// none is an unrecorded run of the lowest trust level.
    #[test]
    fn builds_are_matched_by_window_only_when_one_run_fits() {
        let (_dir, mut store) = store();
        let config = Config::default();
        store
            .record_run(&run("web", "build:Dockerfile", (10, 20)), &config)
            .unwrap();
        store
            .record_run(&run("a", "Dockerfile", (30, 40)), &config)
            .unwrap();
        store
            .record_run(&run("b", "Dockerfile", (30, 40)), &config)
            .unwrap();
        store
            .record_run(&run("c", "other.Dockerfile", (50, 60)), &config)
            .unwrap();
        let runs = count(&store, "SELECT count(*) FROM runs");
        let builds = [
            build("one", (11, 19)),
            build("two", (31, 39)),
            build("three", (51, 59)),
        ];
        let outcome = store.collect_history("ci-1", &builds, &config).unwrap();
        assert_eq!(
            matches(&outcome),
            [
                (
                    HistoryMatch::Window,
                    "web/1/build:Dockerfile".into(),
                    true,
                    1
                ),
                (
                    HistoryMatch::Unrecorded,
                    "unrecorded@ci-1/two/Dockerfile".into(),
                    true,
                    2
                ),
                (
                    HistoryMatch::Unrecorded,
                    "unrecorded@ci-1/three/Dockerfile".into(),
                    true,
                    2
                ),
            ]
        );
        assert_eq!(outcome.warnings.len(), 1, "{:?}", outcome.warnings);
        assert!(outcome.warnings[0].contains("2 recorded runs"));
        assert_eq!(count(&store, "SELECT count(*) FROM runs"), runs + 2);
        assert_eq!(
            count(
                &store,
                "SELECT count(*) FROM events WHERE source = 'build-history'"
            ),
            5
        );
        assert_eq!(
            count(
                &store,
                "SELECT count(*) FROM runs r JOIN pipelines p ON p.id = r.pipeline_id
                 WHERE substr(p.name, 1, 11) = 'unrecorded@' AND r.trust_level = 'untrusted'"
            ),
            2
        );
    }

    /// Another client of the builder building in a trusted run's window (and before its own
    /// build) cannot pin its build, and the image it made, on that run: when two builds of a
    /// collect fit one run by time and Dockerfile, neither is matched and both are stored as
    /// unrecorded, untrusted runs.
    #[test]
    fn a_build_racing_a_run_is_not_pinned_on_it() {
        let (_dir, mut store) = store();
        let config = Config::default();
        store
            .record_run(&run("release", "Dockerfile", (10, 20)), &config)
            .unwrap();
        let mut evil = build("evil", (10, 12));
        evil.images = vec![Artifact::registry(
            &ImageRef::parse("r.io/web:1.0", "test").unwrap(),
        )];
        let builds = [evil, build("real", (12, 19))];
        let outcome = store.collect_history("ci-1", &builds, &config).unwrap();
        let m = matches(&outcome);
        assert!(m.iter().all(|b| b.0 == HistoryMatch::Unrecorded), "{m:?}");
        assert!(
            outcome.warnings[0].contains("`evil` and `real`"),
            "{:?}",
            outcome.warnings
        );
        assert_eq!(
            count(
                &store,
                "SELECT count(*) FROM events e JOIN runs r ON r.id = e.run_id
                 JOIN pipelines p ON p.id = r.pipeline_id
                 WHERE p.name = 'release' AND e.source = 'build-history'"
            ),
            0
        );
    }

    /// A build ref the hook saw wins over the window, even when another run overlaps too.
    #[test]
    fn the_build_ref_wins() {
        let (_dir, mut store) = store();
        let config = Config::default();
        store
            .record_run(&run("a", "Dockerfile", (10, 20)), &config)
            .unwrap();
        let mut b = run("b", "Dockerfile", (10, 20));
        b.build_ref = Some("one".into());
        store.record_run(&b, &config).unwrap();
        let outcome = store
            .collect_history("ci-1", &[build("one", (11, 19))], &config)
            .unwrap();
        assert_eq!(
            matches(&outcome),
            [(HistoryMatch::BuildRef, "b/1/Dockerfile".into(), true, 1)]
        );
    }

    /// Collecting the same history twice adds nothing the second time, and a hostile history
    /// cannot rewrite a recorded run: runs and events stay as they were.
    #[test]
    fn collecting_again_adds_nothing() {
        let (_dir, mut store) = store();
        let config = Config::default();
        store
            .record_run(&run("web", "Dockerfile", (10, 20)), &config)
            .unwrap();
        let before = count(&store, "SELECT sum(started_at + finished_at) FROM runs");
        let builds = [build("one", (11, 19)), build("two", (31, 39))];
        store.collect_history("ci-1", &builds, &config).unwrap();
        let tables = |store: &Store| {
            ["runs", "events", "build_history", "artifacts", "pipelines"]
                .map(|t| count(store, &format!("SELECT count(*) FROM {t}")))
        };
        let once = tables(&store);
        let again = store.collect_history("ci-1", &builds, &config).unwrap();
        assert_eq!(tables(&store), once);
        assert!(again.builds.iter().all(|b| !b.new && b.events == 0));
        assert_eq!(
            count(
                &store,
                "SELECT sum(started_at + finished_at) FROM runs WHERE id = 1"
            ),
            before
        );
    }
}
