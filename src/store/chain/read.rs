//! Entries as the stored rows give them: what appending hashes and verifying recomputes.

use std::collections::HashMap;

use crate::store::db::{Db, Engine, OptionalExtension, params, params_from_iter};

use super::EntryKind;
use super::encode::{
    DetailFacts, ENCODING_V2, Entry, EventFacts, ReceiptFacts, Ref, RunFacts, Target,
};

/// The columns that name an event's target, for a query over `events e`: the table the kind
/// points into is joined, the others are not.
const TARGET_COLUMNS: &str = "e.kind, e.target,
       a.backend, a.locator, a.digest, a.key,
       m.builder_id, mb.name, m.namespace, m.mount_id,
       b.name,
       r.builder_id, rb.name, r.record_id, r.record_type, r.description";

const TARGET_JOINS: &str = "
    LEFT JOIN artifacts a
        ON e.kind IN ('imported', 'exported', 'produced', 'used_base') AND a.id = e.target
    LEFT JOIN mounts m ON e.kind IN ('read_mount', 'wrote_mount') AND m.id = e.target
    LEFT JOIN builders mb ON mb.id = m.builder_id
    LEFT JOIN builders b ON e.kind = 'ran_on' AND b.id = e.target
    LEFT JOIN builder_records r
        ON e.kind IN ('created_record', 'reused_record') AND r.id = e.target
    LEFT JOIN builders rb ON rb.id = r.builder_id";

/// The event kind and target named by [`TARGET_COLUMNS`], starting at column `at`.
fn target_at(
    row: &crate::store::db::Row<'_>,
    at: usize,
) -> crate::store::db::DbResult<(String, Target)> {
    let kind: String = row.get(at)?;
    let id: i64 = row.get(at + 1)?;
    let builder = |id: Option<i64>, name: Option<String>| match (id, name) {
        (_, Some(name)) => Ref::Named(name),
        (Some(id), None) => Ref::Gone(id),
        (None, None) => Ref::None,
    };
    let target = if let Some(backend) = row.get::<_, Option<String>>(at + 2)? {
        Target::Artifact {
            backend,
            locator: row.get(at + 3)?,
            digest: row.get(at + 4)?,
            key: row.get(at + 5)?,
        }
    } else if let Some(mount_id) = row.get::<_, Option<String>>(at + 9)? {
        Target::Mount {
            builder: builder(row.get(at + 6)?, row.get(at + 7)?),
            namespace: row.get(at + 8)?,
            mount_id,
        }
    } else if let Some(name) = row.get::<_, Option<String>>(at + 10)? {
        Target::Builder { name }
    } else if let Some(record_id) = row.get::<_, Option<String>>(at + 13)? {
        Target::Record {
            builder: builder(row.get(at + 11)?, row.get(at + 12)?),
            record_id,
            record_type: row.get(at + 14)?,
            description: row.get(at + 15)?,
        }
    } else {
        Target::Unresolved { id }
    };
    Ok((kind, target))
}

/// An event named by `e.at, e.detail, ` then [`TARGET_COLUMNS`], starting at column `at`.
fn event_facts(
    row: &crate::store::db::Row<'_>,
    at: usize,
) -> crate::store::db::DbResult<EventFacts> {
    let (kind, target) = target_at(row, at + 2)?;
    Ok(EventFacts {
        kind,
        target,
        at: row.get(at)?,
        detail: row.get(at + 1)?,
    })
}

/// A mount-use detail named by `d.detail, d.at, ` then [`TARGET_COLUMNS`], starting at column
/// `at`.
fn detail_facts(
    row: &crate::store::db::Row<'_>,
    at: usize,
) -> crate::store::db::DbResult<DetailFacts> {
    let (event_kind, target) = target_at(row, at + 2)?;
    Ok(DetailFacts {
        event_kind,
        target,
        detail: row.get(at)?,
        at: row.get(at + 1)?,
    })
}

/// A run's columns, for a query over `runs r` with [`RUN_JOINS`].
const RUN_COLUMNS: &str =
    "p.name, r.run_key, r.step, r.commit_sha, r.git_ref, r.builder_id, b.name,
       r.started_at, r.finished_at, r.status, r.has_records, r.overlapped,
       r.recorded_at, r.trust_level";

const RUN_JOINS: &str = "FROM runs r
    LEFT JOIN pipelines p ON p.id = r.pipeline_id
    LEFT JOIN builders b ON b.id = r.builder_id";

/// The run named by [`RUN_COLUMNS`], starting at column `at`.
fn run_facts(row: &crate::store::db::Row<'_>, at: usize) -> crate::store::db::DbResult<RunFacts> {
    let builder = match (
        row.get::<_, Option<i64>>(at + 5)?,
        row.get::<_, Option<String>>(at + 6)?,
    ) {
        (_, Some(name)) => Ref::Named(name),
        (Some(id), None) => Ref::Gone(id),
        (None, None) => Ref::None,
    };
    Ok(RunFacts {
        pipeline: row.get(at)?,
        run_key: row.get(at + 1)?,
        step: row.get(at + 2)?,
        commit: row.get(at + 3)?,
        git_ref: row.get(at + 4)?,
        builder,
        started_at: row.get(at + 7)?,
        finished_at: row.get(at + 8)?,
        status: row.get(at + 9)?,
        has_records: row.get(at + 10)?,
        overlapped: row.get(at + 11)?,
        recorded_at: row.get(at + 12)?,
        trust_level: row.get(at + 13)?,
    })
}

/// A run's stored facts, or `None` when its row is gone.
pub(super) fn load_run(conn: &Db, run: i64) -> crate::store::db::DbResult<Option<RunFacts>> {
    conn.prepare_cached(&format!("SELECT {RUN_COLUMNS} {RUN_JOINS} WHERE r.id = ?1"))?
        .query_row([run], |row| run_facts(row, 0))
        .optional()
}

/// Which rows of a run an entry covers: ids in `(after, through]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Span {
    pub events_after: i64,
    pub events_through: i64,
    pub details_after: i64,
    pub details_through: i64,
}

const RECEIPT_COLUMNS: &str = "received_at, identity, late, time_suspect, began_after";

/// The receipt named by [`RECEIPT_COLUMNS`], starting at column `at`.
fn receipt_facts(
    row: &crate::store::db::Row<'_>,
    at: usize,
) -> crate::store::db::DbResult<ReceiptFacts> {
    Ok(ReceiptFacts {
        received_at: row.get(at)?,
        identity: row.get(at + 1)?,
        late: row.get(at + 2)?,
        time_suspect: row.get(at + 3)?,
        began_after: row.get(at + 4)?,
    })
}

/// The run's collector receipt as stored, if it has one.
pub(super) fn load_receipt(
    conn: &Db,
    run: i64,
) -> crate::store::db::DbResult<Option<ReceiptFacts>> {
    conn.prepare_cached(&format!(
        "SELECT {RECEIPT_COLUMNS} FROM run_receipts WHERE run_id = ?1"
    ))?
    .query_row([run], |row| receipt_facts(row, 0))
    .optional()
}

/// An entry as the stored rows give it, in encoding `version`, or `None` when the run's row
/// is gone.
pub(super) fn load_entry(
    conn: &Db,
    (seq, version): (i64, u8),
    kind: EntryKind,
    run: i64,
    span: Span,
) -> crate::store::db::DbResult<Option<Entry>> {
    let Some(facts) = load_run(conn, run)? else {
        return Ok(None);
    };
    let events = conn
        .prepare_cached(&format!(
            "SELECT e.at, e.detail, {TARGET_COLUMNS} FROM events e {TARGET_JOINS}
             WHERE e.run_id = ?1 AND e.id > ?2 AND e.id <= ?3 ORDER BY e.id"
        ))?
        .query_map(
            params![run, span.events_after, span.events_through],
            |row| event_facts(row, 0),
        )?
        .collect::<crate::store::db::DbResult<Vec<_>>>()?;
    let details = if span.details_through > span.details_after {
        conn.prepare_cached(&format!(
            "SELECT d.detail, d.at, {TARGET_COLUMNS}
             FROM event_details d JOIN events e ON e.id = d.event_id {TARGET_JOINS}
             WHERE e.run_id = ?1 AND d.id > ?2 AND d.id <= ?3 ORDER BY d.id"
        ))?
        .query_map(
            params![run, span.details_after, span.details_through],
            |row| detail_facts(row, 0),
        )?
        .collect::<crate::store::db::DbResult<Vec<_>>>()?
    } else {
        Vec::new()
    };
    let receipt = if version >= ENCODING_V2 {
        load_receipt(conn, run)?
    } else {
        None
    };
    Ok(Some(Entry {
        version,
        seq,
        kind,
        run: facts,
        events,
        details,
        receipt,
    }))
}

/// An entry to load: its number, encoding version, kind, run and span.
#[derive(Debug, Clone, Copy)]
pub(super) struct Wanted {
    pub seq: i64,
    pub version: u8,
    pub kind: EntryKind,
    pub run: i64,
    pub span: Span,
}

/// How many entries [`load_entries`] reads with one set of queries on `conn`: each query
/// names this many runs, so its text stays the same from batch to batch. PostgreSQL plans
/// each statement anew, and a larger batch pays for that less often; SQLite reads a run's
/// rows as fast one run at a time and sorts a larger batch's for nothing.
pub(super) fn batch_size(conn: &Db) -> usize {
    match conn.engine() {
        Engine::Sqlite => 512,
        Engine::Postgres => 4096,
    }
}

/// `?first, ..., ?(first + size - 1)`.
fn placeholders(first: usize, size: usize) -> String {
    (first..first + size)
        .map(|n| format!("?{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The most events, and the most details, [`load_entries`] reads for one batch: a batch
/// whose runs have more is not read whole (the caller splits it), so a store holding runs of
/// millions of events costs time, not memory.
pub(super) const MOST_ROWS: usize = 1 << 18;

/// The entries `wanted` (at most [`batch_size`]) as [`load_entry`] gives them, one each, in a
/// few queries over all of them instead of a few per entry: the runs' rows, their events and
/// details in the batch's id ranges, and their receipts. `None` when the batch's runs hold
/// more than `most` events or `most` details in those ranges.
pub(super) fn load_entries(
    conn: &Db,
    wanted: &[Wanted],
    most: usize,
) -> crate::store::db::DbResult<Option<Vec<Option<Entry>>>> {
    let size = batch_size(conn);
    assert!(wanted.len() <= size, "at most {size} entries a batch");
    let Some(first) = wanted.first() else {
        return Ok(Some(Vec::new()));
    };
    // Every query names `size` runs: the batch's, then its first again.
    let runs: Vec<i64> = wanted
        .iter()
        .map(|w| w.run)
        .chain(std::iter::repeat(first.run))
        .take(size)
        .collect();
    let mut facts: HashMap<i64, RunFacts> = HashMap::new();
    {
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT r.id, {RUN_COLUMNS} {RUN_JOINS} WHERE r.id IN ({})",
            placeholders(1, size)
        ))?;
        let mut rows = stmt.query(params_from_iter(runs.iter()))?;
        while let Some(row) = rows.next()? {
            facts.insert(row.get(0)?, run_facts(&row, 1)?);
        }
    }
    // Rows of the batch's runs in `(after, through]` over the whole batch, in no order (an
    // `ORDER BY` would sort them all before the first came back): each run's are sorted by id
    // here, and each entry takes its own span of them. The range only filters (`+id`):
    // searched as a range of ids, it would read every row from the first run's up, whoever's.
    let bounds = |span: fn(&Span) -> (i64, i64)| {
        wanted
            .iter()
            .map(|w| span(&w.span))
            .fold((i64::MAX, i64::MIN), |(after, through), (a, t)| {
                (after.min(a), through.max(t))
            })
    };
    let ranged = Ranged {
        conn,
        runs: &runs,
        most,
    };
    let Some(events) = ranged.read(
        &format!(
            "SELECT e.run_id, e.id, e.at, e.detail, {TARGET_COLUMNS} FROM events e {TARGET_JOINS}
             WHERE e.run_id IN ({}) AND +e.id > ?{} AND +e.id <= ?{}{}",
            placeholders(1, size),
            size + 1,
            size + 2,
            ranged.limit_clause(),
        ),
        bounds(|s| (s.events_after, s.events_through)),
        |row| event_facts(row, 2),
    )?
    else {
        return Ok(None);
    };
    let Some(details) = ranged.read(
        &format!(
            "SELECT e.run_id, d.id, d.detail, d.at, {TARGET_COLUMNS}
             FROM event_details d JOIN events e ON e.id = d.event_id {TARGET_JOINS}
             WHERE e.run_id IN ({}) AND +d.id > ?{} AND +d.id <= ?{}{}",
            placeholders(1, size),
            size + 1,
            size + 2,
            ranged.limit_clause(),
        ),
        bounds(|s| (s.details_after, s.details_through)),
        |row| detail_facts(row, 2),
    )?
    else {
        return Ok(None);
    };
    let mut receipts: HashMap<i64, ReceiptFacts> = HashMap::new();
    if wanted.iter().any(|w| w.version >= ENCODING_V2) {
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT run_id, {RECEIPT_COLUMNS} FROM run_receipts WHERE run_id IN ({})",
            placeholders(1, size)
        ))?;
        let mut rows = stmt.query(params_from_iter(runs.iter()))?;
        while let Some(row) = rows.next()? {
            receipts.insert(row.get(0)?, receipt_facts(&row, 1)?);
        }
    }
    Ok(Some(
        wanted
            .iter()
            .map(|w| {
                let run = facts.get(&w.run)?.clone();
                let span = w.span;
                let events = spanned(&events, w.run, (span.events_after, span.events_through));
                let details = spanned(&details, w.run, (span.details_after, span.details_through));
                let receipt = if w.version >= ENCODING_V2 {
                    receipts.get(&w.run).cloned()
                } else {
                    None
                };
                Some(Entry {
                    version: w.version,
                    seq: w.seq,
                    kind: w.kind,
                    run,
                    events,
                    details,
                    receipt,
                })
            })
            .collect(),
    ))
}

/// Rows of a batch's runs, by run and sorted by id.
type ByRun<T> = HashMap<i64, Vec<(i64, T)>>;

/// Reads rows of a batch's runs (its IN-list, `runs`) in an id range, at most `most` of them.
struct Ranged<'a> {
    conn: &'a Db,
    runs: &'a [i64],
    most: usize,
}

impl Ranged<'_> {
    /// What ends a query of the batch: PostgreSQL sends a query's rows whole, so it is told
    /// when to stop (the parameter after the range's two); SQLite hands them over one at a
    /// time.
    fn limit_clause(&self) -> String {
        match self.conn.engine() {
            Engine::Postgres => format!(" LIMIT ?{}", self.runs.len() + 3),
            Engine::Sqlite => String::new(),
        }
    }

    /// The rows `sql` gives for the runs and the range `(after, through]` (its columns: run,
    /// row id, then what `read` reads), each run's sorted by id; `None` when there are more
    /// than `most`.
    fn read<T>(
        &self,
        sql: &str,
        (after, through): (i64, i64),
        read: impl Fn(&crate::store::db::Row<'_>) -> crate::store::db::DbResult<T>,
    ) -> crate::store::db::DbResult<Option<ByRun<T>>> {
        let mut by_run: ByRun<T> = HashMap::new();
        if through <= after {
            return Ok(Some(by_run));
        }
        let mut stmt = self.conn.prepare_cached(sql)?;
        let limit = i64::try_from(self.most).unwrap_or(i64::MAX - 1) + 1;
        let values = self.runs.iter().copied().chain([after, through]);
        let values = values.chain((self.conn.engine() == Engine::Postgres).then_some(limit));
        let mut rows = stmt.query(params_from_iter(values))?;
        let mut read_rows = 0;
        while let Some(row) = rows.next()? {
            read_rows += 1;
            if read_rows > self.most {
                return Ok(None);
            }
            let (run, id) = (row.get(0)?, row.get(1)?);
            by_run.entry(run).or_default().push((id, read(&row)?));
        }
        for rows in by_run.values_mut() {
            rows.sort_unstable_by_key(|&(id, _)| id);
        }
        Ok(Some(by_run))
    }
}

/// The rows of `run` whose ids are in `(after, through]`.
fn spanned<T: Clone>(rows: &ByRun<T>, run: i64, (after, through): (i64, i64)) -> Vec<T> {
    let Some(rows) = rows.get(&run) else {
        return Vec::new();
    };
    let start = rows.partition_point(|&(id, _)| id <= after);
    let end = rows.partition_point(|&(id, _)| id <= through).max(start);
    rows[start..end]
        .iter()
        .map(|(_, row)| row.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    /// Two runs, then the first again with another input and its mount used with other
    /// options: a run entry each, an entry of added events and mount-use details.
    const LINES: [&str; 3] = [
        r#"{"v":1,"type":"run","pipeline":"web","run":"1","step":"Dockerfile","builder":"ci-1","started_at":"2026-01-01T00:00:00Z","finished_at":"2026-01-01T00:05:00Z","imported":["localhost:5000/web:cache@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"],"mounts":[{"id":"/root/.cache/pip","sharing":"shared"}]}"#,
        r#"{"v":1,"type":"run","pipeline":"web","run":"2","step":"Dockerfile","builder":"ci-2","started_at":"2026-01-02T00:00:00Z","finished_at":"2026-01-02T00:05:00Z","exported":["localhost:5000/web:cache@sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"],"records":{"created":[{"id":"r1","type":"regular","description":"[2/2] RUN make"}]}}"#,
        r#"{"v":1,"type":"run","pipeline":"web","run":"1","step":"Dockerfile","builder":"ci-1","started_at":"2026-01-01T00:00:00Z","finished_at":"2026-01-01T00:05:00Z","imported":["localhost:5000/web:cache@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","localhost:5000/base:1"],"mounts":[{"id":"/root/.cache/pip","sharing":"locked"}]}"#,
    ];

    /// Every entry of the chain, as verifying asks for it.
    fn wanted(conn: &Db) -> Vec<Wanted> {
        let mut spans: HashMap<i64, (i64, i64)> = HashMap::new();
        let mut stmt = conn
            .prepare(
                "SELECT seq, run_id, kind, events_through, details_through, encoding
                 FROM run_chain ORDER BY seq",
            )
            .unwrap();
        let mut rows = stmt.query([]).unwrap();
        let mut wanted = Vec::new();
        while let Some(row) = rows.next().unwrap() {
            let (seq, run, kind): (i64, i64, String) = (
                row.get(0).unwrap(),
                row.get(1).unwrap(),
                row.get(2).unwrap(),
            );
            let (events_through, details_through): (i64, i64) =
                (row.get(3).unwrap(), row.get(4).unwrap());
            let version: i64 = row.get(5).unwrap();
            let (events_after, details_after) = spans.get(&run).copied().unwrap_or((0, 0));
            spans.insert(run, (events_through, details_through));
            wanted.push(Wanted {
                seq,
                version: u8::try_from(version).unwrap(),
                kind: EntryKind::parse(&kind).unwrap(),
                run,
                span: Span {
                    events_after,
                    events_through,
                    details_after,
                    details_through,
                },
            });
        }
        wanted
    }

    /// Entries loaded together are the entries loaded one at a time; a batch whose rows are
    /// more than it may hold is not loaded.
    #[test]
    fn entries_loaded_together_are_those_loaded_one_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("store.db")).unwrap();
        for (i, line) in LINES.iter().enumerate() {
            let item = crate::wire::provenance::parse_line(line).unwrap();
            store
                .import_batch(&[item], i + 1, &crate::config::Config::default())
                .unwrap();
        }
        let wanted = wanted(&store.conn);
        assert_eq!(wanted.len(), 3);
        assert_eq!(wanted[2].kind, EntryKind::Events);
        let alone: Vec<Option<Entry>> = wanted
            .iter()
            .map(|w| load_entry(&store.conn, (w.seq, w.version), w.kind, w.run, w.span).unwrap())
            .collect();
        let entries: Vec<&Entry> = alone.iter().flatten().collect();
        assert_eq!(entries.len(), 3);
        assert!(entries.iter().all(|e| !e.events.is_empty()), "{entries:?}");
        assert!(!entries[2].details.is_empty(), "{entries:?}");
        let events: usize = entries.iter().map(|e| e.events.len()).sum();
        for most in [usize::MAX, MOST_ROWS, events] {
            let together = load_entries(&store.conn, &wanted, most).unwrap();
            assert_eq!(together, Some(alone.clone()), "holding at most {most} rows");
        }
        // Over the bound, nothing is read whole.
        for most in [events - 1, 1, 0] {
            assert_eq!(load_entries(&store.conn, &wanted, most).unwrap(), None);
        }
    }
}
