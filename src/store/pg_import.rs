//! `import` into a PostgreSQL store in bulk: a batch's new runs, events, build refs,
//! truncations and chain entries go in with binary `COPY`, not a statement (a network round
//! trip) a row.
//!
//! A batch is cut into segments at the lines that read back what the store holds: a run key
//! already recorded (in the store or earlier in the batch), which is checked against the
//! stored run and refused or given its new events by `store::write` as before, and a purge.
//! Each segment is written in a few set-based statements, in the order the lines give:
//!
//! - builders through `cw_upsert_builder`, one statement over arrays, in first-sighting order;
//!   artifact tags and mounts the same way through their functions for a hook role, and by one
//!   set-based upsert a table when the role may write them (the owner, a responder);
//! - artifacts and builder records: new ones by `COPY` and known ones moved by one `UPDATE`
//!   when the role may (the owner, a responder); else (a hook role: no `UPDATE`, no `INSERT`
//!   on those tables) through their functions, a few hundred rows a statement, as each row's
//!   insert runs its page trigger;
//! - ids for the new runs and events from their sequences (`nextval`, which the hook role's
//!   `USAGE` allows), handed out in line order, as the row-by-row path would;
//! - each new run's chain entry built in memory ([`super::chain::hash_new`]);
//! - then one `COPY` per table. The page triggers run once per statement with its new rows,
//!   so each page is written once per segment, and the append-only guards (update and delete
//!   triggers) are untouched.
//!
//! Everything is in the batch's one transaction, which holds the writer lock: a refused line
//! rolls back the whole batch. Statements are unnamed and nothing is left in the session, as
//! everywhere on PostgreSQL (transaction-pooling proxies).

use std::collections::{HashMap, HashSet};

use postgres::types::{ToSql, Type};

use super::chain::{EventFacts, NewRun, Ref, Target};
use super::db::{Db, DbError, DbResult, PgConn, Transaction};
use super::write::{
    IdCache, ImportItem, ImportOutcome, PipelineRow, StoredRecord, WriteError, artifact_key,
    capped_warning, ensure_pipeline, import_item, kind, mount_uses, new_run_facts, require_builder,
    run_pipeline, source,
};
use crate::config::Config;
use crate::model::{Artifact, BuilderInfo, BuilderRecord, PurgeTarget, RunRecord};
use crate::time::Micros;

/// Rows upserted a statement when each runs a page trigger of its own (a hook role's artifacts
/// and builder records): each statement stays well inside the statement timeout.
const UPSERTS_PER_STATEMENT: usize = 500;

/// An artifact's identity columns.
type ArtifactKey = (crate::model::Backend, String, String, String);

/// A value sent in a `COPY` row.
#[derive(Debug)]
enum Cell {
    Int(i64),
    MaybeInt(Option<i64>),
    Text(String),
    MaybeText(Option<String>),
    Name(&'static str),
    Bytes(Vec<u8>),
}

impl From<i64> for Cell {
    fn from(value: i64) -> Self {
        Self::Int(value)
    }
}

impl From<Option<i64>> for Cell {
    fn from(value: Option<i64>) -> Self {
        Self::MaybeInt(value)
    }
}

impl From<String> for Cell {
    fn from(value: String) -> Self {
        Self::Text(value)
    }
}

impl From<Option<String>> for Cell {
    fn from(value: Option<String>) -> Self {
        Self::MaybeText(value)
    }
}

impl From<&'static str> for Cell {
    fn from(value: &'static str) -> Self {
        Self::Name(value)
    }
}

impl From<Vec<u8>> for Cell {
    fn from(value: Vec<u8>) -> Self {
        Self::Bytes(value)
    }
}

impl ToSql for Cell {
    /// Each value checks the column's type itself.
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Self::Int(v) => v.to_sql_checked(ty, out),
            Self::MaybeInt(v) => v.to_sql_checked(ty, out),
            Self::Text(v) => v.to_sql_checked(ty, out),
            Self::MaybeText(v) => v.to_sql_checked(ty, out),
            Self::Name(v) => v.to_sql_checked(ty, out),
            Self::Bytes(v) => v.to_sql_checked(ty, out),
        }
    }

    fn accepts(ty: &Type) -> bool {
        <i64 as ToSql>::accepts(ty)
            || <&str as ToSql>::accepts(ty)
            || <Vec<u8> as ToSql>::accepts(ty)
    }

    postgres::types::to_sql_checked!();
}

/// A failure, with the line it belongs to.
type LineResult<T> = Result<T, (usize, WriteError)>;

fn pg<'a>(tx: &'a Transaction<'_>) -> &'a PgConn {
    match &**tx {
        Db::Postgres(conn) => conn,
        Db::Sqlite(_) => unreachable!("the bulk import is PostgreSQL's"),
    }
}

/// Runs one unnamed statement with typed parameters (arrays among them).
fn query(
    conn: &PgConn,
    sql: &str,
    params: &[(&(dyn ToSql + Sync), Type)],
) -> DbResult<Vec<postgres::Row>> {
    conn.with_client(|client| client.query_typed(sql, params))
}

/// `n` new ids of `table`'s identity, ascending.
fn reserve(conn: &PgConn, table: &str, n: usize) -> DbResult<Vec<i64>> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let n = i64::try_from(n).unwrap_or(i64::MAX);
    // The sequence's name is looked up once (an init plan), not once a row, and the ids come
    // back as one array, not a row each.
    let sql = format!(
        "SELECT array_agg(nextval((SELECT pg_get_serial_sequence('{table}', 'id'))::regclass))
         FROM generate_series(1, $1::int8)"
    );
    let mut ids: Vec<i64> = query(conn, &sql, &[(&n, Type::INT8)])?
        .first()
        .map(|row| row.get(0))
        .ok_or(super::db::DbError::NoRows)?;
    ids.sort_unstable();
    Ok(ids)
}

/// Writes `rows` into `table (columns)` with one binary `COPY`.
fn copy(
    conn: &PgConn,
    table: &str,
    columns: &[(&str, Type)],
    rows: Vec<Vec<Cell>>,
) -> DbResult<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = columns.iter().map(|(name, _)| *name).collect();
    let types: Vec<Type> = columns.iter().map(|(_, ty)| ty.clone()).collect();
    let sql = format!("COPY {table} ({}) FROM STDIN BINARY", names.join(", "));
    conn.with_client(move |client| {
        let sink = client.copy_in(&sql)?;
        let mut writer = postgres::binary_copy::BinaryCopyInWriter::new(sink, &types);
        for row in &rows {
            let refs: Vec<&(dyn ToSql + Sync)> =
                row.iter().map(|cell| cell as &(dyn ToSql + Sync)).collect();
            writer.write(&refs)?;
        }
        writer.finish().map(drop)
    })
}

/// Stores a batch of imported lines in the open transaction `tx`.
pub(super) fn import_batch(
    tx: &Transaction<'_>,
    cache: &mut IdCache,
    config: &Config,
    items: &[ImportItem],
    first_line: usize,
    now: Micros,
) -> LineResult<ImportOutcome> {
    let conn = pg(tx);
    let at = |line: usize| move |err: super::db::DbError| (line, WriteError::Sql(err));
    load_pipelines(conn, cache, items).map_err(at(first_line))?;
    let writes = Writes::of(conn).map_err(at(first_line))?;
    let recorded = recorded_runs(conn, cache, items).map_err(at(first_line))?;
    let mut purged = last_purges(conn).map_err(at(first_line))?;
    let mut outcome = ImportOutcome::default();
    let mut importer = None;
    let mut keys = HashSet::new();
    let mut segment: Vec<(usize, &ImportItem)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let line = first_line + i;
        let slow = match item {
            ImportItem::Run(run) => {
                let key = run_key(cache, run);
                // A run that finished before a purge the store holds of its builder (or of
                // a mount there) is written the way `record` writes it, which decides from
                // the level it gets whether its times are doubted.
                let doubtful = run.builder.as_ref().is_some_and(|b| {
                    purged
                        .get(&b.name)
                        .is_some_and(|&purge| purge > run.finished_at)
                });
                recorded.contains(&key) || !keys.insert(key) || doubtful
            }
            ImportItem::Purge { .. } => true,
            ImportItem::Pipeline(_) | ImportItem::Builder(_) => false,
        };
        if !slow {
            segment.push((line, item));
            continue;
        }
        write_segment(tx, cache, config, (&segment, writes), now, &mut outcome)?;
        segment.clear();
        let (events, warnings) =
            import_item(tx, cache, config, item, now, &mut importer).map_err(|err| (line, err))?;
        // A later run of the batch dated before this purge is decided as `record` decides.
        if let ImportItem::Purge { target, at, .. } = item {
            let builder = match target {
                PurgeTarget::Mount { builder, .. } | PurgeTarget::Builder { builder, .. } => {
                    builder
                }
            };
            let last = purged.entry(builder.clone()).or_insert(*at);
            *last = (*last).max(*at);
        }
        outcome.events += events;
        outcome
            .warnings
            .extend(warnings.into_iter().map(|w| format!("line {line}: {w}")));
    }
    write_segment(tx, cache, config, (&segment, writes), now, &mut outcome)?;
    Ok(outcome)
}

/// A run's key: its pipeline's id (loaded), run id and step.
fn run_key(cache: &IdCache, run: &RunRecord) -> (i64, String, String) {
    let pipeline = cache.pipelines.get(&run.pipeline.name).map_or(0, |p| p.id);
    (pipeline, run.run_id.clone(), run.step.clone())
}

/// Creates the batch's new pipelines, in the order the lines name them, and loads every
/// pipeline it names into `cache` with its current project and ceiling.
fn load_pipelines(conn: &PgConn, cache: &mut IdCache, items: &[ImportItem]) -> DbResult<()> {
    let mut names: Vec<String> = Vec::new();
    let mut seen = HashSet::new();
    for item in items {
        let name = match item {
            ImportItem::Pipeline(p) => &p.name,
            ImportItem::Run(run) => &run.pipeline.name,
            ImportItem::Builder(_) | ImportItem::Purge { .. } => continue,
        };
        if !cache.pipelines.contains_key(name) && seen.insert(name.as_str()) {
            names.push(name.clone());
        }
    }
    if names.is_empty() {
        return Ok(());
    }
    query(
        conn,
        "INSERT INTO pipelines (name)
         SELECT u.name FROM unnest($1::text[]) WITH ORDINALITY AS u(name, o)
         WHERE NOT EXISTS (SELECT 1 FROM pipelines p WHERE p.name = u.name)
         ORDER BY u.o
         ON CONFLICT (name) DO NOTHING",
        &[(&names, Type::TEXT_ARRAY)],
    )?;
    for row in query(
        conn,
        "SELECT id, name, project, trust_level FROM pipeline_current WHERE name = ANY($1::text[])",
        &[(&names, Type::TEXT_ARRAY)],
    )? {
        cache.pipelines.insert(
            row.get(1),
            PipelineRow {
                id: row.get(0),
                project: row.get(2),
                ceiling: row.get(3),
            },
        );
    }
    Ok(())
}

/// The keys of the batch's runs that the store already holds.
fn recorded_runs(
    conn: &PgConn,
    cache: &IdCache,
    items: &[ImportItem],
) -> DbResult<HashSet<(i64, String, String)>> {
    let (mut pipelines, mut run_ids, mut steps) = (Vec::new(), Vec::new(), Vec::new());
    for item in items {
        if let ImportItem::Run(run) = item {
            let (pipeline, run_id, step) = run_key(cache, run);
            pipelines.push(pipeline);
            run_ids.push(run_id);
            steps.push(step);
        }
    }
    if pipelines.is_empty() {
        return Ok(HashSet::new());
    }
    Ok(query(
        conn,
        "SELECT r.pipeline_id, r.run_key, r.step
         FROM unnest($1::int8[], $2::text[], $3::text[]) AS k(pipeline_id, run_key, step)
         JOIN runs r ON r.pipeline_id = k.pipeline_id AND r.run_key = k.run_key
                    AND r.step = k.step",
        &[
            (&pipelines, Type::INT8_ARRAY),
            (&run_ids, Type::TEXT_ARRAY),
            (&steps, Type::TEXT_ARRAY),
        ],
    )?
    .iter()
    .map(|row| (row.get(0), row.get(1), row.get(2)))
    .collect())
}

/// The latest purge recorded of each builder or of a mount on it, by builder name.
fn last_purges(conn: &PgConn) -> DbResult<HashMap<String, Micros>> {
    Ok(query(
        conn,
        "SELECT b.name, max(p.at) FROM purges p JOIN builders b ON b.id = p.builder_id
         GROUP BY b.name",
        &[],
    )?
    .iter()
    .map(|row| (row.get(0), row.get(1)))
    .collect())
}

/// The artifacts a run names, in the order it is written, each with the time of its sighting
/// and the kind of its event.
fn artifacts_of(run: &RunRecord) -> impl Iterator<Item = (&Artifact, &'static str, Micros)> {
    let (start, finish) = (run.started_at, run.finished_at);
    [
        (&run.imported, kind::IMPORTED, finish),
        (&run.base_images, kind::USED_BASE, finish),
        (&run.exported, kind::EXPORTED, start),
        (&run.produced, kind::PRODUCED, start),
    ]
    .into_iter()
    .flat_map(|(list, kind, at)| list.iter().map(move |a| (a, kind, at)))
}

/// The builder records a run names, in the order it is written, with their event's kind and
/// time.
fn records_of(run: &RunRecord) -> impl Iterator<Item = (&BuilderRecord, &'static str, Micros)> {
    let lists = run.records.as_ref().map(|evidence| {
        [
            (&evidence.created, kind::CREATED_RECORD, run.started_at),
            (&evidence.reused, kind::REUSED_RECORD, run.finished_at),
        ]
    });
    lists
        .into_iter()
        .flatten()
        .flat_map(|(list, kind, at)| list.iter().map(move |r| (r, kind, at)))
}

/// Each run's level, and each line's warnings (see [`run_levels`]).
type Levels = (Vec<Option<String>>, Vec<Vec<String>>);

/// The level each run of the segment is recorded at, in line order, and each line's warnings
/// so far: its pipeline is made or read first, line by line as the row-by-row path does, so
/// that a pipeline line (or an earlier run) of the segment sets the ceiling of the runs after
/// it. `segment_rows` reads the same rows back and adds the rest of the warnings.
fn run_levels(
    tx: &Transaction<'_>,
    cache: &mut IdCache,
    config: &Config,
    segment: &[(usize, &ImportItem)],
    now: Micros,
) -> LineResult<Levels> {
    let mut levels = Vec::new();
    let mut said = Vec::with_capacity(segment.len());
    for &(line, item) in segment {
        let mut warnings = Vec::new();
        let at_line = |err: WriteError| (line, err);
        match item {
            ImportItem::Pipeline(p) => {
                let level = p.trust_level.as_deref();
                ensure_pipeline(tx, cache, config, p, level, now, &mut warnings)
                    .map_err(at_line)?;
            }
            ImportItem::Run(record) => {
                let (_, level, _) =
                    run_pipeline(tx, cache, config, record, now, &mut warnings).map_err(at_line)?;
                levels.push(level);
            }
            _ => {}
        }
        said.push(warnings);
    }
    Ok((levels, said))
}

/// Upserts the segment's builders, artifacts and tags, mounts and builder records in the order
/// the row-by-row path would, leaving every id in `cache`.
fn resolve(
    conn: &PgConn,
    cache: &mut IdCache,
    config: &Config,
    (segment, levels): (&[(usize, &ImportItem)], &[Option<String>]),
    writes: Writes,
) -> DbResult<()> {
    // Builders: each line's, skipping a bare name already known, as `upsert_builder` does.
    let mut builders: Vec<&BuilderInfo> = Vec::new();
    let mut named = HashSet::new();
    let runs = || {
        segment.iter().filter_map(|(_, item)| match item {
            ImportItem::Run(run) => Some(&**run),
            _ => None,
        })
    };
    for (_, item) in segment {
        let builder = match item {
            ImportItem::Builder(b) => b,
            ImportItem::Run(run) => match &run.builder {
                Some(b) => b,
                None => continue,
            },
            _ => continue,
        };
        let bare = builder.driver.is_none() && builder.endpoint.is_none();
        if bare && (cache.builders.contains_key(&builder.name) || named.contains(&builder.name)) {
            continue;
        }
        named.insert(builder.name.clone());
        builders.push(builder);
    }
    if !builders.is_empty() {
        let names: Vec<&str> = builders.iter().map(|b| b.name.as_str()).collect();
        let drivers: Vec<Option<&str>> = builders
            .iter()
            .map(|b| b.driver.map(|d| d.as_str()))
            .collect();
        let endpoints: Vec<Option<&str>> = builders.iter().map(|b| b.endpoint.as_deref()).collect();
        for row in query(
            conn,
            "SELECT u.o, cw_upsert_builder(u.name, u.driver, u.endpoint)
             FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY
                  AS u(name, driver, endpoint, o)
             ORDER BY u.o",
            &[
                (&names, Type::TEXT_ARRAY),
                (&drivers, Type::TEXT_ARRAY),
                (&endpoints, Type::TEXT_ARRAY),
            ],
        )? {
            let o: i64 = row.get(0);
            let name = names[usize::try_from(o - 1).unwrap_or(0)];
            cache.builders.insert(name.to_owned(), row.get(1));
        }
    }

    // Artifacts: each at its earliest sighting in the segment, unless the row's is earlier.
    let mut order = Vec::new();
    let mut earliest: HashMap<_, Micros> = HashMap::new();
    let mut tags: Vec<(_, String)> = Vec::new();
    let mut spans: HashMap<(_, String), (Micros, Micros)> = HashMap::new();
    for run in runs() {
        for (artifact, _, at) in artifacts_of(run) {
            let key = artifact_key(artifact);
            match earliest.get_mut(&key) {
                Some(first) => *first = (*first).min(at),
                None => {
                    earliest.insert(key.clone(), at);
                    order.push(key.clone());
                }
            }
            if let Some(tag) = &artifact.tag {
                match spans.get_mut(&(key.clone(), tag.clone())) {
                    Some((first, last)) => {
                        *first = (*first).min(at);
                        *last = (*last).max(at);
                    }
                    None => {
                        spans.insert((key.clone(), tag.clone()), (at, at));
                        tags.push((key, tag.clone()));
                    }
                }
            }
        }
    }
    let upserts: Vec<_> = order
        .into_iter()
        .filter(
            |key| !matches!(cache.artifacts.get(key), Some(&(_, first)) if first <= earliest[key]),
        )
        .collect();
    if writes.copy && !upserts.is_empty() {
        copy_artifacts(conn, cache, &upserts, &earliest)?;
    } else {
        for part in upserts.chunks(UPSERTS_PER_STATEMENT) {
            let backends: Vec<&str> = part.iter().map(|k| k.0.as_str()).collect();
            let locators: Vec<&str> = part.iter().map(|k| k.1.as_str()).collect();
            let digests: Vec<&str> = part.iter().map(|k| k.2.as_str()).collect();
            let keys: Vec<&str> = part.iter().map(|k| k.3.as_str()).collect();
            let seen: Vec<Micros> = part.iter().map(|k| earliest[k]).collect();
            let params: &[(&(dyn ToSql + Sync), Type)] = &[
                (&backends, Type::TEXT_ARRAY),
                (&locators, Type::TEXT_ARRAY),
                (&digests, Type::TEXT_ARRAY),
                (&keys, Type::TEXT_ARRAY),
                (&seen, Type::INT8_ARRAY),
            ];
            // The keys are distinct: `upserts` lists each once. Each comes back with its
            // row's id, whichever function upserted it.
            let sql = if writes.batches {
                "SELECT backend, locator, digest, key, id
                 FROM cw_upsert_artifacts($1::text[], $2::text[], $3::text[], $4::text[],
                                          $5::int8[])"
            } else {
                "SELECT u.backend, u.locator, u.digest, u.key,
                        cw_upsert_artifact(u.backend, u.locator, u.digest, u.key, u.seen)
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[])
                      WITH ORDINALITY AS u(backend, locator, digest, key, seen, o)
                 ORDER BY u.o"
            };
            let given: HashMap<(&str, &str, &str, &str), usize> = (0..part.len())
                .map(|i| ((backends[i], locators[i], digests[i], keys[i]), i))
                .collect();
            for row in query(conn, sql, params)? {
                let key: (&str, &str, &str, &str) =
                    (row.get(0), row.get(1), row.get(2), row.get(3));
                let Some(&i) = given.get(&key) else {
                    return Err(DbError::Value(format!(
                        "an upsert returned an artifact not given: {key:?}"
                    )));
                };
                cache
                    .artifacts
                    .insert(part[i].clone(), (row.get(4), seen[i]));
            }
        }
    }
    // Tags: the earliest and the latest sighting, each once, unless the row already spans them.
    let (mut ids, mut names, mut firsts, mut lasts) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (key, tag) in tags {
        let (first, last) = spans[&(key.clone(), tag.clone())];
        let id = cache.artifacts[&key].0;
        let known = cache.tags.get(&(id, tag.clone())).copied();
        if known.is_some_and(|(f, l)| f <= first && last <= l) {
            continue;
        }
        ids.push(id);
        names.push(tag.clone());
        firsts.push(first);
        lasts.push(last);
        let (f, l) = known.unwrap_or((first, last));
        cache.tags.insert((id, tag), (f.min(first), l.max(last)));
    }
    if !ids.is_empty() {
        upsert_tags(conn, writes.copy, &ids, &names, (&firsts, &lasts))?;
    }

    // Mounts and builder records, on each run's builder.
    let mut mounts: Vec<(i64, String, String)> = Vec::new();
    let mut listed = HashSet::new();
    let mut records: Vec<(i64, String)> = Vec::new();
    let mut folded: HashMap<(i64, String), BuilderRecord> = HashMap::new();
    // Who described each record, as `upsert_record` keeps it.
    let mut words: HashMap<(i64, String), Words> = HashMap::new();
    let lowest = config.trust_levels().into_iter().next();
    let lowest = lowest.as_deref();
    for (run, level) in runs().zip(levels) {
        let Some(builder) = run
            .builder
            .as_ref()
            .and_then(|b| cache.builders.get(&b.name))
        else {
            continue;
        };
        for mount in &run.mounts {
            let key = (*builder, mount.namespace.clone(), mount.id.clone());
            if !cache.mounts.contains_key(&key) && listed.insert(key.clone()) {
                mounts.push(key);
            }
        }
        // A run at the lowest level is held to what it could have seen of shared records,
        // as `insert_run` holds it.
        let doubted = run.records.is_some() && level.is_some() && level.as_deref() == lowest;
        for (record, event, _) in records_of(run) {
            let bounded;
            let record = if doubted {
                bounded = record.as_seen_by(run.finished_at, event == kind::REUSED_RECORD);
                &bounded
            } else {
                record
            };
            let key = (*builder, record.id.clone());
            let believed = (!doubted && !record.record_type.is_empty())
                .then(|| (record.record_type.clone(), record.description.clone()));
            match words.get_mut(&key) {
                Some(said) => {
                    if said.believed.is_none() {
                        said.believed = believed;
                    }
                }
                None => {
                    let doubtful = doubted
                        && !crate::graph::record_kind_carries_taint(
                            &record.record_type,
                            &record.description,
                        );
                    words.insert(key.clone(), Words { doubtful, believed });
                }
            }
            match folded.get_mut(&key) {
                // What the upserts leave: the latest use, the last size given.
                Some(kept) => {
                    kept.last_used_at = match (kept.last_used_at, record.last_used_at) {
                        (Some(a), Some(b)) => Some(a.max(b)),
                        (a, b) => a.or(b),
                    };
                    kept.size = record.size.or(kept.size);
                }
                None => {
                    folded.insert(key.clone(), record.clone());
                    records.push(key);
                }
            }
        }
    }
    if !mounts.is_empty() {
        upsert_mounts(conn, cache, writes.copy, &mounts)?;
    }
    let first_doubtful = new_doubtful_records(conn, cache, &records, &words)?;
    let records: Vec<_> = records
        .into_iter()
        .filter(|key| {
            !cache
                .records
                .get(key)
                .is_some_and(|stored| stored.covers(&folded[key]))
        })
        .collect();
    if !records.is_empty() {
        let ids = if writes.copy {
            copy_records(conn, &records, &folded)?
        } else {
            upsert_records(conn, writes.batches, &records, &folded)?
        };
        // The rows as they now stand, read after the upserts, in the same transaction.
        for row in query(
            conn,
            "SELECT id, builder_id, record_id, record_type, description, last_used_at, size
             FROM builder_records WHERE id = ANY($1::int8[])",
            &[(&ids, Type::INT8_ARRAY)],
        )? {
            cache.records.insert(
                (row.get(1), row.get(2)),
                StoredRecord {
                    id: row.get(0),
                    record_type: row.get(3),
                    description: row.get(4),
                    last_used_at: row.get(5),
                    size: row.get(6),
                },
            );
        }
    }
    describe_records(conn, cache, &words, &first_doubtful, &folded)
}

/// Who described a record within a segment: whether its first sighting was a doubted run's
/// words that carry no taint, and a believed run's first words for it.
struct Words {
    doubtful: bool,
    believed: Option<(String, String)>,
}

/// The records whose first sighting in the segment is a doubted run's words that carry no
/// taint, and that the store does not hold yet: a doubted run names them first.
fn new_doubtful_records(
    conn: &PgConn,
    cache: &IdCache,
    records: &[(i64, String)],
    words: &HashMap<(i64, String), Words>,
) -> DbResult<HashSet<(i64, String)>> {
    let mut candidates: HashSet<(i64, String)> = (records.iter())
        .filter(|key| words[*key].doubtful && !cache.records.contains_key(*key))
        .cloned()
        .collect();
    if candidates.is_empty() {
        return Ok(candidates);
    }
    let (builders, ids): (Vec<i64>, Vec<&str>) =
        candidates.iter().map(|(b, r)| (*b, r.as_str())).unzip();
    for row in query(
        conn,
        "SELECT r.builder_id, r.record_id FROM builder_records r
         JOIN unnest($1::int8[], $2::text[]) AS u(builder, record)
           ON r.builder_id = u.builder AND r.record_id = u.record",
        &[(&builders, Type::INT8_ARRAY), (&ids, Type::TEXT_ARRAY)],
    )? {
        candidates.remove(&(row.get(0), row.get(1)));
    }
    Ok(candidates)
}

/// Adds the segment's `record_descriptions` rows, as `upsert_record` adds them: a doubted
/// run's words for a record it names first, and a believed run's first words for a record
/// only doubted runs have described.
fn describe_records(
    conn: &PgConn,
    cache: &mut IdCache,
    words: &HashMap<(i64, String), Words>,
    first_doubtful: &HashSet<(i64, String)>,
    folded: &HashMap<(i64, String), BuilderRecord>,
) -> DbResult<()> {
    let id_of = |key: &(i64, String)| cache.records.get(key).map(|stored| stored.id);
    for key in first_doubtful {
        if let Some(id) = id_of(key) {
            cache.described_by_doubted.insert(id, true);
        }
    }
    if !first_doubtful.is_empty() {
        cache.doubted_words_held = Some(true);
    }
    let unknown: Vec<i64> = (words.iter())
        .filter(|(_, said)| said.believed.is_some())
        .filter_map(|(key, _)| id_of(key))
        .filter(|id| !cache.described_by_doubted.contains_key(id))
        .collect();
    // While the store holds no record only doubted runs described, none needs looking up.
    if !unknown.is_empty() && cache.doubted_words_held.is_none() {
        let held = query(conn, super::write::DOUBTED_WORDS_HELD, &[])?
            .first()
            .is_some_and(|row| row.get::<_, i64>(0) > 0);
        cache.doubted_words_held = Some(held);
    }
    if !unknown.is_empty() && cache.doubted_words_held == Some(true) {
        let mut doubted: HashSet<i64> = HashSet::new();
        for row in query(
            conn,
            "SELECT record FROM record_descriptions WHERE record = ANY($1::int8[])
             GROUP BY record HAVING max(believed) = 0",
            &[(&unknown, Type::INT8_ARRAY)],
        )? {
            doubted.insert(row.get(0));
        }
        for id in unknown {
            cache.described_by_doubted.insert(id, doubted.contains(&id));
        }
    }
    let (mut ids, mut believed, mut types, mut descriptions) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for key in first_doubtful {
        let (Some(id), Some(record)) = (id_of(key), folded.get(key)) else {
            continue;
        };
        ids.push(id);
        believed.push(0_i64);
        types.push(record.record_type.clone());
        descriptions.push(record.description.clone());
    }
    for (key, said) in words {
        let (Some(id), Some((record_type, description))) = (id_of(key), &said.believed) else {
            continue;
        };
        if cache.described_by_doubted.get(&id) == Some(&true) {
            ids.push(id);
            believed.push(1);
            types.push(record_type.clone());
            descriptions.push(description.clone());
        }
    }
    if ids.is_empty() {
        return Ok(());
    }
    query(
        conn,
        "INSERT INTO record_descriptions (record, believed, record_type, description)
         SELECT * FROM unnest($1::int8[], $2::int8[], $3::text[], $4::text[])
         ON CONFLICT (record, believed) DO NOTHING",
        &[
            (&ids, Type::INT8_ARRAY),
            (&believed, Type::INT8_ARRAY),
            (&types, Type::TEXT_ARRAY),
            (&descriptions, Type::TEXT_ARRAY),
        ],
    )?;
    for (&id, &b) in ids.iter().zip(&believed) {
        cache.described_by_doubted.insert(id, b == 0);
    }
    Ok(())
}

/// Tags seen on artifacts, each (artifact, tag) once with its earliest and latest sighting in
/// the segment, as `cw_upsert_artifact_tag` leaves them: one set-based upsert when the role
/// may write the table, else the function for each sighting (one call when the two are one).
fn upsert_tags(
    conn: &PgConn,
    bulk: bool,
    ids: &[i64],
    names: &[String],
    (firsts, lasts): (&[Micros], &[Micros]),
) -> DbResult<()> {
    if bulk {
        query(
            conn,
            "INSERT INTO artifact_tags AS t (artifact_id, tag, first_seen, last_seen)
             SELECT u.id, u.tag, u.first, u.last
             FROM unnest($1::int8[], $2::text[], $3::int8[], $4::int8[]) WITH ORDINALITY
                  AS u(id, tag, first, last, o)
             ORDER BY u.o
             ON CONFLICT (artifact_id, tag) DO UPDATE SET
                first_seen = least(t.first_seen, excluded.first_seen),
                last_seen = greatest(t.last_seen, excluded.last_seen)",
            &[
                (&ids, Type::INT8_ARRAY),
                (&names, Type::TEXT_ARRAY),
                (&firsts, Type::INT8_ARRAY),
                (&lasts, Type::INT8_ARRAY),
            ],
        )?;
        return Ok(());
    }
    let (mut sighted, mut tags, mut seen) = (Vec::new(), Vec::new(), Vec::new());
    for (i, &id) in ids.iter().enumerate() {
        let once = firsts[i] == lasts[i];
        for at in [firsts[i], lasts[i]]
            .into_iter()
            .take(if once { 1 } else { 2 })
        {
            sighted.push(id);
            tags.push(names[i].as_str());
            seen.push(at);
        }
    }
    query(
        conn,
        "SELECT cw_upsert_artifact_tag(u.id, u.tag, u.seen)
         FROM unnest($1::int8[], $2::text[], $3::int8[]) WITH ORDINALITY AS u(id, tag, seen, o)
         ORDER BY u.o",
        &[
            (&sighted, Type::INT8_ARRAY),
            (&tags, Type::TEXT_ARRAY),
            (&seen, Type::INT8_ARRAY),
        ],
    )?;
    Ok(())
}

/// Mounts new to `cache`, in the order given, as `cw_upsert_mount` leaves them (new ones get
/// their ids in that order): one set-based upsert when the role may write the table, else the
/// function for each. Their ids go to `cache`.
fn upsert_mounts(
    conn: &PgConn,
    cache: &mut IdCache,
    bulk: bool,
    mounts: &[(i64, String, String)],
) -> DbResult<()> {
    let builders: Vec<i64> = mounts.iter().map(|m| m.0).collect();
    let namespaces: Vec<&str> = mounts.iter().map(|m| m.1.as_str()).collect();
    let mount_ids: Vec<&str> = mounts.iter().map(|m| m.2.as_str()).collect();
    let params: &[(&(dyn ToSql + Sync), Type)] = &[
        (&builders, Type::INT8_ARRAY),
        (&namespaces, Type::TEXT_ARRAY),
        (&mount_ids, Type::TEXT_ARRAY),
    ];
    let rows = if bulk {
        // The returned rows name their mount: a known one is returned too (`DO UPDATE`).
        query(
            conn,
            "INSERT INTO mounts AS m (builder_id, namespace, mount_id)
             SELECT u.builder, u.namespace, u.mount
             FROM unnest($1::int8[], $2::text[], $3::text[]) WITH ORDINALITY
                  AS u(builder, namespace, mount, o)
             ORDER BY u.o
             ON CONFLICT (builder_id, mount_id, namespace) DO UPDATE SET namespace = excluded.namespace
             RETURNING m.builder_id, m.namespace, m.mount_id, m.id",
            params,
        )?
    } else {
        query(
            conn,
            "SELECT u.builder, u.namespace, u.mount,
                    cw_upsert_mount(u.builder, u.namespace, u.mount)
             FROM unnest($1::int8[], $2::text[], $3::text[]) WITH ORDINALITY
                  AS u(builder, namespace, mount, o)
             ORDER BY u.o",
            params,
        )?
    };
    for row in rows {
        cache
            .mounts
            .insert((row.get(0), row.get(1), row.get(2)), row.get(3));
    }
    Ok(())
}

/// Builder records through `cw_upsert_builder_records` when `batches`, else
/// `cw_upsert_builder_record` for each, a statement a part: their ids.
fn upsert_records(
    conn: &PgConn,
    batches: bool,
    records: &[(i64, String)],
    folded: &HashMap<(i64, String), BuilderRecord>,
) -> DbResult<Vec<i64>> {
    let mut ids = Vec::with_capacity(records.len());
    for part in records.chunks(UPSERTS_PER_STATEMENT) {
        let given: Vec<&BuilderRecord> = part.iter().map(|k| &folded[k]).collect();
        let builders: Vec<i64> = part.iter().map(|k| k.0).collect();
        let record_ids: Vec<&str> = given.iter().map(|r| r.id.as_str()).collect();
        let types: Vec<&str> = given.iter().map(|r| r.record_type.as_str()).collect();
        let descriptions: Vec<&str> = given.iter().map(|r| r.description.as_str()).collect();
        let created: Vec<Option<Micros>> = given.iter().map(|r| r.created_at).collect();
        let used: Vec<Option<Micros>> = given.iter().map(|r| r.last_used_at).collect();
        let sizes: Vec<Option<i64>> = given.iter().map(|r| r.size).collect();
        // The keys are distinct: `records` lists each once.
        let sql = if batches {
            "SELECT id FROM cw_upsert_builder_records($1::int8[], $2::text[], $3::text[],
                                                      $4::text[], $5::int8[], $6::int8[],
                                                      $7::int8[])"
        } else {
            "SELECT cw_upsert_builder_record(u.builder, u.record, u.type, u.description,
                                             u.created, u.used, u.size)
             FROM unnest($1::int8[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::int8[],
                         $7::int8[]) WITH ORDINALITY
                  AS u(builder, record, type, description, created, used, size, o)
             ORDER BY u.o"
        };
        let part_ids: Vec<i64> = query(
            conn,
            sql,
            &[
                (&builders, Type::INT8_ARRAY),
                (&record_ids, Type::TEXT_ARRAY),
                (&types, Type::TEXT_ARRAY),
                (&descriptions, Type::TEXT_ARRAY),
                (&created, Type::INT8_ARRAY),
                (&used, Type::INT8_ARRAY),
                (&sizes, Type::INT8_ARRAY),
            ],
        )?
        .iter()
        .map(|row| row.get(0))
        .collect();
        ids.extend(part_ids);
    }
    Ok(ids)
}

/// How this role may write the tables a hook role may only add to through functions.
#[derive(Debug, Clone, Copy)]
struct Writes {
    /// It may insert and update artifacts, builder records, tags and mounts itself (the
    /// owner, a responder): then new artifacts and records go in by `COPY`, one page-trigger
    /// run a table, known ones are moved by one `UPDATE`, and tags and mounts are upserted by
    /// one statement each. A hook role may not, and upserts through the functions instead.
    copy: bool,
    /// It may call the batch upserts of schema version 3 (`cw_upsert_artifacts`,
    /// `cw_upsert_builder_records`): a statement and a page-trigger run a part. Else the row
    /// functions, a statement (and a page-trigger run) a row: a role granted before version 3
    /// whose grants were not carried over.
    batches: bool,
}

impl Writes {
    fn of(conn: &PgConn) -> DbResult<Self> {
        let row = query(
            conn,
            "SELECT has_table_privilege('artifacts', 'INSERT, UPDATE')
                AND has_table_privilege('builder_records', 'INSERT, UPDATE')
                AND has_table_privilege('artifact_tags', 'INSERT, UPDATE')
                AND has_table_privilege('mounts', 'INSERT, UPDATE'),
                coalesce(has_function_privilege(to_regprocedure(
                    'cw_upsert_artifacts(text[], text[], text[], text[], bigint[])'), 'EXECUTE'),
                    false)
                AND coalesce(has_function_privilege(to_regprocedure(
                    'cw_upsert_builder_records(bigint[], text[], text[], text[], bigint[],
                                               bigint[], bigint[])'), 'EXECUTE'), false)",
            &[],
        )?;
        Ok(row.first().map_or(
            Self {
                copy: false,
                batches: false,
            },
            |row| Self {
                copy: row.get(0),
                batches: row.get(1),
            },
        ))
    }
}

/// Artifacts by `COPY` (new) and one `UPDATE` (known, seen earlier now), in the order given,
/// as `cw_upsert_artifact` would leave them; their ids go to `cache`.
fn copy_artifacts(
    conn: &PgConn,
    cache: &mut IdCache,
    keys: &[ArtifactKey],
    earliest: &HashMap<ArtifactKey, Micros>,
) -> DbResult<()> {
    let column = |f: fn(&ArtifactKey) -> &str| keys.iter().map(f).collect::<Vec<&str>>();
    let (backends, locators, digests, names) = (
        column(|k| k.0.as_str()),
        column(|k| k.1.as_str()),
        column(|k| k.2.as_str()),
        column(|k| k.3.as_str()),
    );
    let mut stored: HashMap<usize, (i64, Micros)> = HashMap::new();
    for row in query(
        conn,
        "SELECT u.o, a.id, a.first_seen
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) WITH ORDINALITY
              AS u(backend, locator, digest, key, o)
         JOIN artifacts a ON a.backend = u.backend AND a.locator = u.locator
                         AND a.digest = u.digest AND a.key = u.key",
        &[
            (&backends, Type::TEXT_ARRAY),
            (&locators, Type::TEXT_ARRAY),
            (&digests, Type::TEXT_ARRAY),
            (&names, Type::TEXT_ARRAY),
        ],
    )? {
        let o: i64 = row.get(0);
        stored.insert(
            usize::try_from(o - 1).unwrap_or(0),
            (row.get(1), row.get(2)),
        );
    }
    let fresh = keys.len() - stored.len();
    let mut ids = reserve(conn, "artifacts", fresh)?.into_iter();
    let (mut rows, mut moved, mut moved_to): (Vec<Vec<Cell>>, Vec<i64>, Vec<Micros>) =
        (Vec::new(), Vec::new(), Vec::new());
    for (i, key) in keys.iter().enumerate() {
        let seen = earliest[key];
        let id = match stored.get(&i) {
            Some(&(id, first)) => {
                if seen < first {
                    moved.push(id);
                    moved_to.push(seen);
                }
                id
            }
            None => {
                let id = ids.next().ok_or(super::db::DbError::NoRows)?;
                rows.push(vec![
                    Cell::from(id),
                    Cell::from(key.0.as_str()),
                    Cell::from(key.1.clone()),
                    Cell::from(key.2.clone()),
                    Cell::from(key.3.clone()),
                    Cell::from(seen),
                ]);
                id
            }
        };
        cache.artifacts.insert(key.clone(), (id, seen));
    }
    copy(
        conn,
        "artifacts",
        &[
            ("id", Type::INT8),
            ("backend", Type::TEXT),
            ("locator", Type::TEXT),
            ("digest", Type::TEXT),
            ("key", Type::TEXT),
            ("first_seen", Type::INT8),
        ],
        rows,
    )?;
    if !moved.is_empty() {
        query(
            conn,
            "UPDATE artifacts a SET first_seen = least(a.first_seen, u.seen)
             FROM unnest($1::int8[], $2::int8[]) AS u(id, seen) WHERE a.id = u.id",
            &[(&moved, Type::INT8_ARRAY), (&moved_to, Type::INT8_ARRAY)],
        )?;
    }
    Ok(())
}

/// Builder records by `COPY` (new) and one `UPDATE` (known), in the order given, as
/// `cw_upsert_builder_record` would leave them: their ids.
fn copy_records(
    conn: &PgConn,
    records: &[(i64, String)],
    folded: &HashMap<(i64, String), BuilderRecord>,
) -> DbResult<Vec<i64>> {
    let builders: Vec<i64> = records.iter().map(|k| k.0).collect();
    let record_ids: Vec<&str> = records.iter().map(|k| k.1.as_str()).collect();
    let mut stored: HashMap<usize, i64> = HashMap::new();
    for row in query(
        conn,
        "SELECT u.o, r.id
         FROM unnest($1::int8[], $2::text[]) WITH ORDINALITY AS u(builder, record, o)
         JOIN builder_records r ON r.builder_id = u.builder AND r.record_id = u.record",
        &[
            (&builders, Type::INT8_ARRAY),
            (&record_ids, Type::TEXT_ARRAY),
        ],
    )? {
        let o: i64 = row.get(0);
        stored.insert(usize::try_from(o - 1).unwrap_or(0), row.get(1));
    }
    let mut fresh = reserve(conn, "builder_records", records.len() - stored.len())?.into_iter();
    let mut out = Vec::with_capacity(records.len());
    let mut rows: Vec<Vec<Cell>> = Vec::new();
    let (mut moved, mut used, mut sizes) = (Vec::new(), Vec::new(), Vec::new());
    for (i, key) in records.iter().enumerate() {
        let given = &folded[key];
        let id = match stored.get(&i) {
            Some(&id) => {
                moved.push(id);
                used.push(given.last_used_at);
                sizes.push(given.size);
                id
            }
            None => {
                let id = fresh.next().ok_or(super::db::DbError::NoRows)?;
                rows.push(vec![
                    Cell::from(id),
                    Cell::from(key.0),
                    Cell::from(given.id.clone()),
                    Cell::from(given.record_type.clone()),
                    Cell::from(given.description.clone()),
                    Cell::from(given.created_at),
                    Cell::from(given.last_used_at),
                    Cell::from(given.size),
                ]);
                id
            }
        };
        out.push(id);
    }
    copy(
        conn,
        "builder_records",
        &[
            ("id", Type::INT8),
            ("builder_id", Type::INT8),
            ("record_id", Type::TEXT),
            ("record_type", Type::TEXT),
            ("description", Type::TEXT),
            ("created_at", Type::INT8),
            ("last_used_at", Type::INT8),
            ("size", Type::INT8),
        ],
        rows,
    )?;
    if !moved.is_empty() {
        // What `cw_upsert_builder_record` does to a known row.
        query(
            conn,
            "UPDATE builder_records r SET
                last_used_at = CASE
                    WHEN u.used IS NULL THEN r.last_used_at
                    WHEN r.last_used_at IS NULL THEN u.used
                    ELSE greatest(r.last_used_at, u.used) END,
                size = coalesce(u.size, r.size)
             FROM unnest($1::int8[], $2::int8[], $3::int8[]) AS u(id, used, size)
             WHERE r.id = u.id",
            &[
                (&moved, Type::INT8_ARRAY),
                (&used, Type::INT8_ARRAY),
                (&sizes, Type::INT8_ARRAY),
            ],
        )?;
    }
    Ok(out)
}

/// An event of a new run, before its id is known.
struct NewEvent {
    run: usize,
    kind: &'static str,
    target: i64,
    at: Micros,
    detail: Option<String>,
}

/// The rows of a segment's new runs, before their events have ids.
#[derive(Default)]
struct SegmentRows {
    runs: Vec<Vec<Cell>>,
    refs: Vec<Vec<Cell>>,
    truncations: Vec<Vec<Cell>>,
    events: Vec<NewEvent>,
    /// Each run's chain entry: its seq, run id and hash.
    entries: Vec<(i64, i64, super::chain::ChainHash)>,
}

/// Goes through a segment's lines in order: pipelines and their changes, each new run's row,
/// events and chain entry.
fn segment_rows(
    tx: &Transaction<'_>,
    cache: &mut IdCache,
    config: &Config,
    (segment, said): (&[(usize, &ImportItem)], Vec<Vec<String>>),
    run_ids: &[i64],
    now: Micros,
    outcome: &mut ImportOutcome,
) -> LineResult<SegmentRows> {
    let SegmentRows {
        mut runs,
        mut refs,
        mut truncations,
        mut events,
        mut entries,
    } = SegmentRows::default();
    // A warning the pipeline's first making gave (`run_levels`) comes first; one it gives
    // again here is given once.
    for (&(line, item), mut warnings) in segment.iter().zip(said) {
        let at_line = |err: WriteError| (line, err);
        match item {
            ImportItem::Pipeline(p) => {
                ensure_pipeline(
                    tx,
                    cache,
                    config,
                    p,
                    p.trust_level.as_deref(),
                    now,
                    &mut warnings,
                )
                .map_err(at_line)?;
            }
            ImportItem::Builder(_) | ImportItem::Purge { .. } => {}
            ImportItem::Run(record) => {
                let index = runs.len();
                let run = run_ids[index];
                let asked = record.trust_level.as_deref();
                let (pipeline, level, capped) =
                    run_pipeline(tx, cache, config, record, now, &mut warnings).map_err(at_line)?;
                let builder_name = record.builder.as_ref().map(|b| b.name.as_str());
                let builder = builder_name.and_then(|name| cache.builders.get(name).copied());
                require_builder(record, builder.is_some()).map_err(at_line)?;
                let name =
                    crate::model::run_name(&record.pipeline.name, &record.run_id, &record.step);
                if capped && let (Some(asked), Some(ceiling)) = (asked, &pipeline.ceiling) {
                    warnings.push(capped_warning(&name, asked, ceiling));
                }
                let overlapped = record.records.as_ref().is_some_and(|r| r.overlapped);
                runs.push(vec![
                    Cell::from(run),
                    Cell::from(pipeline.id),
                    Cell::from(record.run_id.clone()),
                    Cell::from(record.step.clone()),
                    Cell::from(record.commit.clone()),
                    Cell::from(record.git_ref.clone()),
                    Cell::from(builder),
                    Cell::from(record.started_at),
                    Cell::from(record.finished_at),
                    Cell::from(record.status.as_str()),
                    Cell::from(i64::from(record.records.is_some())),
                    Cell::from(i64::from(overlapped)),
                    Cell::from(now),
                    Cell::from(level.clone()),
                ]);
                if let Some(build_ref) = &record.build_ref {
                    refs.push(vec![
                        Cell::from(run),
                        Cell::from(build_ref.clone()),
                        Cell::from(now),
                    ]);
                }
                if record.truncated {
                    truncations.push(vec![Cell::from(run), Cell::from(now)]);
                }
                let new = new_run(cache, record, index, builder, &mut events, (level, now));
                let added = new.events.len();
                let (seq, hash) =
                    super::chain::hash_new(tx, &mut cache.chain, new).map_err(at_line_sql(line))?;
                entries.push((seq, run, hash));
                outcome.events += added;
            }
        }
        let mut seen = HashSet::new();
        warnings.retain(|w| seen.insert(w.clone()));
        outcome
            .warnings
            .extend(warnings.into_iter().map(|w| format!("line {line}: {w}")));
    }
    Ok(SegmentRows {
        runs,
        refs,
        truncations,
        events,
        entries,
    })
}

/// Writes a segment of lines none of which reads back what the store holds.
fn write_segment(
    tx: &Transaction<'_>,
    cache: &mut IdCache,
    config: &Config,
    (segment, writes): (&[(usize, &ImportItem)], Writes),
    now: Micros,
    outcome: &mut ImportOutcome,
) -> LineResult<()> {
    if segment.is_empty() {
        return Ok(());
    }
    let conn = pg(tx);
    let first = segment[0].0;
    let sql = |err: super::db::DbError| (first, WriteError::Sql(err));
    cache.changes = Some(Vec::new());
    let (levels, said) = run_levels(tx, cache, config, segment, now)?;
    resolve(conn, cache, config, (segment, &levels), writes).map_err(sql)?;
    let run_ids = reserve(conn, "runs", levels.len()).map_err(sql)?;
    let written = segment_rows(tx, cache, config, (segment, said), &run_ids, now, outcome);
    let changes = cache.changes.take().unwrap_or_default();
    let SegmentRows {
        runs,
        refs,
        truncations,
        events,
        entries,
    } = written?;
    let changes: Vec<Vec<Cell>> = changes
        .into_iter()
        .map(|c| {
            let row: Vec<Cell> = vec![
                Cell::from(c.pipeline),
                Cell::from(c.field),
                Cell::from(c.value),
                Cell::from(c.source),
                Cell::from(c.at),
            ];
            row
        })
        .collect();
    copy(
        conn,
        "pipeline_changes",
        &[
            ("pipeline_id", Type::INT8),
            ("field", Type::TEXT),
            ("value", Type::TEXT),
            ("source", Type::TEXT),
            ("at", Type::INT8),
        ],
        changes,
    )
    .map_err(sql)?;
    let event_ids = reserve(conn, "events", events.len()).map_err(sql)?;
    // Each run's last event: its entry's `events_through`.
    let mut through = vec![0i64; runs.len()];
    let rows: Vec<Vec<Cell>> = events
        .into_iter()
        .zip(&event_ids)
        .map(|(event, &id)| {
            through[event.run] = id;
            let row: Vec<Cell> = vec![
                Cell::from(id),
                Cell::from(run_ids[event.run]),
                Cell::from(event.kind),
                Cell::from(event.target),
                Cell::from(event.at),
                Cell::from(event.detail),
                Cell::from(source::HOOK),
            ];
            row
        })
        .collect();
    let chain: Vec<Vec<Cell>> = entries
        .into_iter()
        .enumerate()
        .map(|(i, (seq, run, hash))| {
            let row: Vec<Cell> = vec![
                Cell::from(seq),
                Cell::from(run),
                Cell::from("run"),
                Cell::from(through[i]),
                Cell::from(0i64),
                Cell::from(i64::from(super::chain::ENCODING_V1)),
                Cell::from(hash.0.to_vec()),
                Cell::from(now),
            ];
            row
        })
        .collect();
    let (int, text, bytes) = (Type::INT8, Type::TEXT, Type::BYTEA);
    copy(
        conn,
        "runs",
        &[
            ("id", int.clone()),
            ("pipeline_id", int.clone()),
            ("run_key", text.clone()),
            ("step", text.clone()),
            ("commit_sha", text.clone()),
            ("git_ref", text.clone()),
            ("builder_id", int.clone()),
            ("started_at", int.clone()),
            ("finished_at", int.clone()),
            ("status", text.clone()),
            ("has_records", int.clone()),
            ("overlapped", int.clone()),
            ("recorded_at", int.clone()),
            ("trust_level", text.clone()),
        ],
        runs,
    )
    .map_err(sql)?;
    copy(
        conn,
        "events",
        &[
            ("id", int.clone()),
            ("run_id", int.clone()),
            ("kind", text.clone()),
            ("target", int.clone()),
            ("at", int.clone()),
            ("detail", text.clone()),
            ("source", text.clone()),
        ],
        rows,
    )
    .map_err(sql)?;
    copy(
        conn,
        "run_build_refs",
        &[
            ("run_id", int.clone()),
            ("build_ref", text.clone()),
            ("recorded_at", int.clone()),
        ],
        refs,
    )
    .map_err(sql)?;
    copy(
        conn,
        "run_truncations",
        &[("run_id", int.clone()), ("recorded_at", int.clone())],
        truncations,
    )
    .map_err(sql)?;
    copy(
        conn,
        "run_chain",
        &[
            ("seq", int.clone()),
            ("run_id", int.clone()),
            ("kind", text.clone()),
            ("events_through", int.clone()),
            ("details_through", int.clone()),
            ("encoding", int.clone()),
            ("hash", bytes),
            ("appended_at", int),
        ],
        chain,
    )
    .map_err(sql)?;
    Ok(())
}

fn at_line_sql(line: usize) -> impl Fn(super::db::DbError) -> (usize, WriteError) {
    move |err| (line, WriteError::Sql(err))
}

/// A new run's events, appended to `events` in the order `insert_run` writes them (a repeated
/// (kind, target) once), and its chain entry with them.
fn new_run(
    cache: &IdCache,
    record: &RunRecord,
    index: usize,
    builder: Option<i64>,
    events: &mut Vec<NewEvent>,
    (level, now): (Option<String>, Micros),
) -> NewRun {
    let start = record.started_at;
    let builder_name = record.builder.as_ref().map(|b| b.name.as_str());
    let mut new = NewRun {
        run: new_run_facts(record, level, now),
        events: Vec::new(),
        events_through: 0,
    };
    let mut written = HashSet::new();
    let mut add =
        |kind: &'static str, target: i64, named: Target, at: Micros, detail: Option<String>| {
            if !written.insert((kind, target)) {
                return;
            }
            new.events.push(EventFacts {
                kind: kind.to_owned(),
                target: named,
                at,
                detail: detail.clone(),
            });
            events.push(NewEvent {
                run: index,
                kind,
                target,
                at,
                detail,
            });
        };
    let on_builder = || Ref::Named(builder_name.unwrap_or_default().to_owned());
    if let Some(builder) = builder {
        let named = Target::Builder {
            name: builder_name.unwrap_or_default().to_owned(),
        };
        add(kind::RAN_ON, builder, named, start, None);
    }
    for (artifact, kind, at) in artifacts_of(record) {
        let ident = artifact_key(artifact);
        let id = cache.artifacts[&ident].0;
        let (backend, locator, digest, key) = ident;
        let named = Target::Artifact {
            backend: backend.as_str().to_owned(),
            locator,
            digest,
            key,
        };
        add(kind, id, named, at, None);
    }
    if let Some(builder) = builder {
        on_builder_rows(cache, record, builder, &on_builder, &mut add);
    }
    new
}

/// The mount and builder-record events of a run on `builder`, through `add`.
fn on_builder_rows(
    cache: &IdCache,
    record: &RunRecord,
    builder: i64,
    on_builder: &dyn Fn() -> Ref,
    add: &mut dyn FnMut(&'static str, i64, Target, Micros, Option<String>),
) {
    let (start, finish) = (record.started_at, record.finished_at);
    let uses = mount_uses(&record.mounts, |mount| {
        Ok::<_, std::convert::Infallible>(
            cache.mounts[&(builder, mount.namespace.clone(), mount.id.clone())],
        )
    });
    let Ok(uses) = uses;
    for (id, list) in uses {
        let detail = serde_json::to_string(&list).ok();
        let named = || Target::Mount {
            builder: on_builder(),
            namespace: list[0].namespace.clone(),
            mount_id: list[0].id.clone(),
        };
        add(kind::READ_MOUNT, id, named(), finish, detail.clone());
        if list.iter().any(|m| !m.readonly) {
            add(kind::WROTE_MOUNT, id, named(), start, detail);
        }
    }
    for (r, kind, at) in records_of(record) {
        let stored = &cache.records[&(builder, r.id.clone())];
        let named = Target::Record {
            builder: on_builder(),
            record_id: r.id.clone(),
            record_type: stored.record_type.clone(),
            description: stored.description.clone(),
        };
        add(kind, stored.id, named, at, None);
    }
}
