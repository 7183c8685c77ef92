//! `verify-log`: the chain recomputed from the stored rows, and its first break.

use std::collections::{HashMap, HashSet};

use crate::store::db::{Db, DbError};
use serde::Serialize;

use super::encode::{ENCODING_V2, ENCODING_V3, ENCODING_VERSIONS, Entry, encode, next_hash};
use super::read::{MOST_ROWS, Span, Wanted, batch_size, load_entries, load_entry, load_run};
use super::{ChainHash, ChainHead, EntryKind, stored_head};
use crate::store::{Store, StoreError};

/// Why the chain does not hold: the first break found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakKind {
    /// The entry's recomputed hash is not the stored one: the run, its events, what they point
    /// at, or the stored hash changed after it was appended.
    HashMismatch,
    /// An entry number is missing: entries were deleted.
    MissingEntry,
    /// The entry's run row is gone.
    RunGone,
    /// A run is in the chain twice as accepted.
    RunTwice,
    /// Events were chained for a run before the run itself.
    EventsBeforeRun,
    /// An entry of a kind or encoding version this cachewarden does not write, or a span that
    /// goes backwards.
    Malformed,
    /// A stored run that no entry covers: inserted behind the store's back.
    RunNotChained,
    /// Events or mount-use details of a run that no entry covers.
    EventsNotChained,
    /// A collector receipt that no entry covers: added behind the store's back.
    ReceiptNotChained,
    /// A collector receipt's bound on when its run began that no entry covers (it is hashed
    /// from encoding version 3 on): set behind the store's back.
    ReceiptBoundNotChained,
}

impl BreakKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::HashMismatch => "hash_mismatch",
            Self::MissingEntry => "missing_entry",
            Self::RunGone => "run_gone",
            Self::RunTwice => "run_twice",
            Self::EventsBeforeRun => "events_before_run",
            Self::Malformed => "malformed",
            Self::RunNotChained => "run_not_chained",
            Self::EventsNotChained => "events_not_chained",
            Self::ReceiptNotChained => "receipt_not_chained",
            Self::ReceiptBoundNotChained => "receipt_bound_not_chained",
        }
    }

    pub fn describe(&self) -> &'static str {
        match self {
            Self::HashMismatch => {
                "its recomputed hash differs from the stored one: the run, its events, what they name, or the stored hash changed after it was appended"
            }
            Self::MissingEntry => {
                "the entry is missing, deleted from the chain (the run named is the next stored entry's)"
            }
            Self::RunGone => "the run it chains is gone from the store",
            Self::RunTwice => "the run is already in the chain: it was appended twice",
            Self::EventsBeforeRun => "it adds events to a run that is not yet in the chain",
            Self::Malformed => {
                "the entry is malformed (an unknown kind, or a span going backwards)"
            }
            Self::RunNotChained => {
                "the run is stored but in no entry: it was written behind the store's back"
            }
            Self::EventsNotChained => {
                "the run has events or mount uses that no entry covers: they were written behind the store's back"
            }
            Self::ReceiptNotChained => {
                "the run has a collector receipt that no entry covers: it was written behind the store's back"
            }
            Self::ReceiptBoundNotChained => {
                "the run's collector receipt bounds when it began, and no entry covers that bound: it was set behind the store's back"
            }
        }
    }
}

/// The first break: the entry number (for a row no entry covers, the number the next entry
/// would have), the run it concerns when known, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainBreak {
    pub entry: i64,
    /// `pipeline/run/step`, or `None` when the run's row is gone.
    pub run: Option<String>,
    /// The run's row id.
    pub run_id: i64,
    pub kind: BreakKind,
}

/// What verifying the chain found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainCheck {
    /// Entries stored.
    pub length: i64,
    /// The head recomputed over the stored entries up to the break (all of them when intact).
    pub head: ChainHash,
    pub broken: Option<ChainBreak>,
    /// With an expected head: the entry whose recomputed hash it is, if any.
    pub reached_at: Option<i64>,
}

/// An entry's stored columns.
struct StoredEntry {
    seq: i64,
    run: i64,
    kind: String,
    events_through: i64,
    details_through: i64,
    encoding: i64,
    hash: Vec<u8>,
}

impl Store {
    /// The chain's head as stored (not recomputed): what reports and `incident open` state.
    pub fn chain_head(&self) -> Result<ChainHead, StoreError> {
        stored_head(&self.conn).map_err(|e| self.sql(e))
    }

    /// Recomputes the whole chain from the stored runs and events and finds the first break;
    /// with `expected`, also which entry's hash it is.
    pub fn verify_chain(&self, expected: Option<&ChainHash>) -> Result<ChainCheck, StoreError> {
        // One read transaction: one snapshot, however long the walk.
        self.conn.read_transaction().map_err(|e| self.sql(e))?;
        let check = verify(&self.conn, expected);
        self.conn.execute_batch("COMMIT").map_err(|e| self.sql(e))?;
        check.map_err(|e| self.sql(e))
    }
}

fn verify(conn: &Db, expected: Option<&ChainHash>) -> crate::store::db::DbResult<ChainCheck> {
    verify_within(conn, expected, MOST_ROWS)
}

/// [`verify`], reading at most `most` events and `most` details at once for entries loaded
/// together.
fn verify_within(
    conn: &Db,
    expected: Option<&ChainHash>,
    most: usize,
) -> crate::store::db::DbResult<ChainCheck> {
    let length: i64 = conn.query_row("SELECT count(*) FROM run_chain", [], |row| row.get(0))?;
    let mut check = ChainCheck {
        length,
        head: ChainHash::GENESIS,
        broken: None,
        reached_at: None,
    };
    let name_of = |run: i64| name_of(conn, run);
    // Entries are read a batch at a time: memory stays flat whatever the chain's length, but
    // for the span of each run seen.
    let mut walk = Walk {
        most,
        spans: HashMap::new(),
        receipts: HashSet::new(),
        bounded: HashSet::new(),
        number: 0,
    };
    let mut stmt = conn.prepare(
        "SELECT seq, run_id, kind, events_through, details_through, encoding, hash
         FROM run_chain ORDER BY seq",
    )?;
    let mut rows = stmt.query([])?;
    let size = batch_size(conn);
    let mut batch = Vec::with_capacity(size);
    loop {
        let row = rows.next()?;
        let done = row.is_none();
        if let Some(row) = row {
            batch.push(StoredEntry {
                seq: row.get(0)?,
                run: row.get(1)?,
                kind: row.get(2)?,
                events_through: row.get(3)?,
                details_through: row.get(4)?,
                encoding: row.get(5)?,
                hash: row.get(6)?,
            });
        }
        if batch.len() == size || (done && !batch.is_empty()) {
            if let Some(broken) = walk.check(conn, &batch, expected, &mut check)? {
                check.broken = Some(broken);
                return Ok(check);
            }
            batch.clear();
        }
        if done {
            break;
        }
    }
    let Walk {
        spans,
        receipts,
        bounded,
        ..
    } = walk;
    // Rows that no entry covers.
    let next = length + 1;
    let uncovered = |run: i64, kind: BreakKind| -> crate::store::db::DbResult<ChainBreak> {
        Ok(ChainBreak {
            entry: next,
            run: name_of(run)?,
            run_id: run,
            kind,
        })
    };
    let mut runs = conn.prepare("SELECT id FROM runs ORDER BY id")?;
    let mut rows = runs.query([])?;
    while let Some(row) = rows.next()? {
        let run: i64 = row.get(0)?;
        if !spans.contains_key(&run) {
            check.broken = Some(uncovered(run, BreakKind::RunNotChained)?);
            return Ok(check);
        }
    }
    let mut stmt = conn.prepare(
        "SELECT run_id, CASE WHEN began_after IS NULL THEN 0 ELSE 1 END FROM run_receipts
         ORDER BY run_id",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let (run, has_bound): (i64, i64) = (row.get(0)?, row.get(1)?);
        let kind = if !receipts.contains(&run) {
            BreakKind::ReceiptNotChained
        } else if has_bound == 1 && !bounded.contains(&run) {
            BreakKind::ReceiptBoundNotChained
        } else {
            continue;
        };
        check.broken = Some(uncovered(run, kind)?);
        return Ok(check);
    }
    drop(rows);
    for sql in [
        "SELECT run_id, max(id) FROM events GROUP BY run_id ORDER BY run_id",
        "SELECT e.run_id, max(d.id) FROM event_details d JOIN events e ON e.id = d.event_id
         GROUP BY e.run_id ORDER BY e.run_id",
    ] {
        let details = sql.contains("event_details");
        let mut stmt = conn.prepare(sql)?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let (run, max): (i64, i64) = (row.get(0)?, row.get(1)?);
            let through = spans
                .get(&run)
                .map(|&(events, det)| if details { det } else { events });
            if through.is_none_or(|through| max > through) {
                let kind = if through.is_none() {
                    BreakKind::RunNotChained
                } else {
                    BreakKind::EventsNotChained
                };
                check.broken = Some(uncovered(run, kind)?);
                return Ok(check);
            }
        }
    }
    Ok(check)
}

fn name_of(conn: &Db, run: i64) -> crate::store::db::DbResult<Option<String>> {
    Ok(load_run(conn, run)?.map(|facts| facts.name()))
}

/// The walk along the chain so far.
struct Walk {
    /// The most events, and the most details, read at once for entries loaded together.
    most: usize,
    /// Each run's span as its last entry gives it.
    spans: HashMap<i64, (i64, i64)>,
    /// Runs whose receipt an entry covers.
    receipts: HashSet<i64>,
    /// Runs whose receipt an entry covers with its bound on when the run began (version 3).
    bounded: HashSet<i64>,
    /// Entries walked.
    number: i64,
}

impl Walk {
    /// Checks the next entries in order and moves the head over them; the first break, if
    /// any. An entry's own columns are checked first, for the whole batch, then the entries
    /// up to the first such break are loaded together and hashed: a break is still the first
    /// in the chain's order, as if the entries were checked one at a time.
    fn check(
        &mut self,
        conn: &Db,
        batch: &[StoredEntry],
        expected: Option<&ChainHash>,
        check: &mut ChainCheck,
    ) -> crate::store::db::DbResult<Option<ChainBreak>> {
        let start = self.number;
        let mut wanted = Vec::with_capacity(batch.len());
        let mut malformed = None;
        for row in batch {
            self.number += 1;
            match self.columns(row) {
                Ok(entry) => wanted.push(entry),
                Err(kind) => {
                    malformed = Some((self.number, row.run, kind));
                    break;
                }
            }
        }
        // Parts of the batch, first to last: one whose runs hold more rows than a batch may,
        // or whose rows cannot all be read, is halved; an entry alone is read by itself, as
        // one at a time, so that an unreadable row of a later entry does not hide an earlier
        // break. A server's error is not retried: it ends PostgreSQL's transaction.
        let mut parts = vec![(0, wanted.len())];
        while let Some((from, to)) = parts.pop() {
            let part = &wanted[from..to];
            let entries = match part {
                [] => Vec::new(),
                [alone] => vec![load_entry(
                    conn,
                    (alone.seq, alone.version),
                    alone.kind,
                    alone.run,
                    alone.span,
                )?],
                _ => match load_entries(conn, part, self.most) {
                    Ok(Some(entries)) => entries,
                    Ok(None)
                    | Err(DbError::Sqlite(_) | DbError::Type { .. } | DbError::Value(_)) => {
                        let middle = from + part.len() / 2;
                        parts.push((middle, to));
                        parts.push((from, middle));
                        continue;
                    }
                    Err(err) => return Err(err),
                },
            };
            for ((offset, row), entry) in (from..).zip(&batch[from..to]).zip(entries) {
                let number = start + 1 + i64::try_from(offset).unwrap_or(i64::MAX);
                if let Some(broken) = hash(conn, (number, row), entry, expected, check)? {
                    return Ok(Some(broken));
                }
            }
        }
        match malformed {
            Some((entry, run, kind)) => Ok(Some(ChainBreak {
                entry,
                run: name_of(conn, run)?,
                run_id: run,
                kind,
            })),
            None => Ok(None),
        }
    }

    /// What the entry's own columns say it covers, or why they cannot be right (the entry
    /// being number `self.number`); the run's span moves on to the entry's.
    fn columns(&mut self, row: &StoredEntry) -> Result<Wanted, BreakKind> {
        if row.seq != self.number {
            return Err(BreakKind::MissingEntry);
        }
        let previous = self.spans.get(&row.run).copied();
        let (events_after, details_after) = previous.unwrap_or((0, 0));
        let kind = match (EntryKind::parse(&row.kind), previous) {
            _ if !ENCODING_VERSIONS
                .iter()
                .any(|&v| row.encoding == i64::from(v)) =>
            {
                Err(BreakKind::Malformed)
            }
            (None, _) => Err(BreakKind::Malformed),
            (Some(EntryKind::Run), Some(_)) => Err(BreakKind::RunTwice),
            (Some(EntryKind::Events), None) => Err(BreakKind::EventsBeforeRun),
            _ if row.events_through < events_after || row.details_through < details_after => {
                Err(BreakKind::Malformed)
            }
            (Some(kind), _) => Ok(kind),
        }?;
        // One of the known versions, checked above.
        let version = u8::try_from(row.encoding).unwrap_or(ENCODING_V2);
        self.spans
            .insert(row.run, (row.events_through, row.details_through));
        if version >= ENCODING_V2 {
            self.receipts.insert(row.run);
        }
        if version >= ENCODING_V3 {
            self.bounded.insert(row.run);
        }
        Ok(Wanted {
            seq: row.seq,
            version,
            kind,
            run: row.run,
            span: Span {
                events_after,
                events_through: row.events_through,
                details_after,
                details_through: row.details_through,
            },
        })
    }
}

/// Moves the head over entry `number` as loaded, or the break it is.
fn hash(
    conn: &Db,
    (number, row): (i64, &StoredEntry),
    entry: Option<Entry>,
    expected: Option<&ChainHash>,
    check: &mut ChainCheck,
) -> crate::store::db::DbResult<Option<ChainBreak>> {
    let Some(entry) = entry else {
        return Ok(Some(ChainBreak {
            entry: number,
            run: name_of(conn, row.run)?,
            run_id: row.run,
            kind: BreakKind::RunGone,
        }));
    };
    let hash = next_hash(&check.head, &encode(&entry));
    if ChainHash::from_blob(&row.hash) != Some(hash) {
        return Ok(Some(ChainBreak {
            entry: number,
            run: Some(entry.run.name()),
            run_id: row.run,
            kind: BreakKind::HashMismatch,
        }));
    }
    check.head = hash;
    if expected == Some(&hash) {
        check.reached_at = Some(number);
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store of `runs` runs, each importing two caches, one of them its own.
    fn store(dir: &std::path::Path, runs: usize) -> Store {
        let mut store = Store::open(&dir.join("store.db")).unwrap();
        for n in 0..runs {
            let line = format!(
                r#"{{"v":1,"type":"run","pipeline":"p{}","run":"{n}","step":"s","builder":"ci-1","started_at":"2026-01-01T00:00:00Z","finished_at":"2026-01-01T00:05:00Z","imported":["reg.example/base:1","reg.example/own:{n}"],"exported":["reg.example/out:{n}"]}}"#,
                n % 3
            );
            let item = crate::wire::provenance::parse_line(&line).unwrap();
            store
                .import_batch(&[item], n + 1, &crate::config::Config::default())
                .unwrap();
        }
        store
    }

    /// Runs `sql` with the append-only triggers of runs and events dropped.
    fn tamper(store: &Store, sql: &str) {
        let conn = store.conn.sqlite().unwrap();
        conn.execute_batch(
            "DROP TRIGGER IF EXISTS runs_never_update; DROP TRIGGER IF EXISTS events_never_update;",
        )
        .unwrap();
        conn.execute_batch(sql).unwrap();
    }

    /// Entries loaded in parts, down to one at a time, give the chain's answer loaded whole:
    /// intact, broken by an edit, and with a row no batch can read after the break.
    #[test]
    fn parts_answer_as_the_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path(), 40);
        let answers = |store: &Store| {
            [usize::MAX, MOST_ROWS, 7, 1, 0]
                .map(|most| verify_within(&store.conn, None, most).unwrap())
        };
        let intact = answers(&store);
        assert!(intact.iter().all(|c| c == &intact[0]), "{intact:?}");
        assert_eq!(intact[0].broken, None);
        assert_eq!(intact[0].length, 40);

        tamper(
            &store,
            "UPDATE runs SET finished_at = finished_at + 1 WHERE run_key = '20';",
        );
        let broken = answers(&store);
        assert!(broken.iter().all(|c| c == &broken[0]), "{broken:?}");
        let at = broken[0].broken.as_ref().unwrap();
        assert_eq!((at.entry, &at.kind), (21, &BreakKind::HashMismatch));

        // Text that is not UTF-8 in a later run's event: the edit before it is still the
        // break named, not an error reading the batch.
        tamper(
            &store,
            "UPDATE events SET detail = CAST(x'ff' AS TEXT)
             WHERE run_id = (SELECT id FROM runs WHERE run_key = '30');",
        );
        for most in [usize::MAX, MOST_ROWS, 1] {
            let check = verify_within(&store.conn, None, most).unwrap();
            assert_eq!(check, broken[0], "at most {most}");
        }
    }

    /// A receipt chained by a release before version 3 holds no bound on when its run began:
    /// one set on it afterwards is named, though its entry still hashes as written.
    #[test]
    fn a_bound_set_on_a_receipt_chained_without_one_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("store.db")).unwrap();
        let line = r#"{"v":1,"type":"run","pipeline":"p","run":"1","step":"s","builder":"ci-1","started_at":"2026-01-01T00:00:00Z","finished_at":"2026-01-01T00:05:00Z","exported":["reg.example/out:1"]}"#;
        let crate::store::ImportItem::Run(record) =
            crate::wire::provenance::parse_line(line).unwrap()
        else {
            panic!("a run line");
        };
        let receipt = crate::store::Receipt {
            received_at: 1,
            identity: "https://issuer#p".into(),
            late: false,
            time_suspect: None,
            began_after: None,
        };
        let config = crate::config::Config::default();
        let (outcome, _) = store
            .record_received_run(&record, &config, &receipt, None)
            .unwrap();
        // The entry as an earlier release hashed it: encoding version 2.
        let through: i64 = store
            .conn
            .query_row(
                "SELECT events_through FROM run_chain WHERE seq = 1",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let span = Span {
            events_through: through,
            ..Span::default()
        };
        let entry = load_entry(
            &store.conn,
            (1, ENCODING_V2),
            EntryKind::Run,
            outcome.run,
            span,
        )
        .unwrap()
        .unwrap();
        let hash = next_hash(&ChainHash::GENESIS, &encode(&entry));
        let conn = store.conn.sqlite().unwrap();
        conn.execute_batch(
            "DROP TRIGGER run_chain_never_update; DROP TRIGGER run_receipts_never_update;",
        )
        .unwrap();
        conn.execute(
            "UPDATE run_chain SET encoding = 2, hash = ?1 WHERE seq = 1",
            [&hash.0[..]],
        )
        .unwrap();
        assert_eq!(store.verify_chain(None).unwrap().broken, None);
        conn.execute_batch("UPDATE run_receipts SET began_after = 0")
            .unwrap();
        let broken = store.verify_chain(None).unwrap().broken.unwrap();
        assert_eq!(
            (broken.entry, broken.run_id, broken.kind),
            (2, outcome.run, BreakKind::ReceiptBoundNotChained)
        );
    }
}
