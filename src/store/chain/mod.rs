//! Tamper evidence: the hash chain of accepted runs (`run_chain`, migration 0014).
//!
//! Every run the store accepts is appended as an entry, and so is every later addition to a
//! run's events (a re-recorded run's new events, a push attached to its build). Entry n's hash
//! is SHA-256 over entry n-1's hash and a canonical encoding of the entry, read back from the
//! stored rows, so that [`Store::verify_chain`] recomputes exactly what was hashed. Appends
//! happen inside the transaction that writes the run: SQLite's write lock serializes them.
//!
//! What an entry covers: the run's key, pipeline, commit, ref, builder, times, status, record
//! flags and trust level; and its events and mount-use details, each target named by what it
//! is (an artifact's backend, locator, digest and key; a mount's builder, namespace and id; a
//! builder's name; a builder record's builder, id, type and description), so that rewriting a
//! row an event points at is caught too. From encoding version 2, the run's collector receipt
//! (`run_receipts`): the entry that brings it into the chain (the run's own, for a run the
//! collector received first) is hashed with it; from version 3, with the receipt's bound on
//! when the run began. Observations learnt later
//! (`run_observations`, `run_truncations`) are not in the chain.

mod encode;
mod read;
mod verify;

use std::fmt;

use crate::store::db::{Db, OptionalExtension, params};
use serde::Serialize;

use crate::time::Micros;
pub(crate) use encode::{
    ENCODING_V1, ENCODING_V3, EventFacts, Ref, RunFacts, Target, encode, next_hash,
};
use read::{Span, load_entry};
pub use verify::{BreakKind, ChainBreak, ChainCheck};

/// A chain hash: 32 bytes, shown as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChainHash(pub [u8; 32]);

impl ChainHash {
    /// The hash before the first entry, and the head of an empty chain.
    pub const GENESIS: ChainHash = ChainHash([0; 32]);

    /// Parses 64 hex digits (either case).
    pub fn parse(text: &str) -> Option<Self> {
        let bytes = text.as_bytes();
        if bytes.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks(2).enumerate() {
            let hi = char::from(pair[0]).to_digit(16)?;
            let lo = char::from(pair[1]).to_digit(16)?;
            out[i] = u8::try_from(hi * 16 + lo).ok()?;
        }
        Some(Self(out))
    }

    fn from_blob(blob: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(blob).ok().map(Self)
    }
}

impl fmt::Display for ChainHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ChainHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChainHash({self})")
    }
}

impl Serialize for ChainHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The chain's last entry as stored: how many entries, and the last one's hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ChainHead {
    pub length: i64,
    pub head: ChainHash,
}

impl ChainHead {
    pub const EMPTY: ChainHead = ChainHead {
        length: 0,
        head: ChainHash::GENESIS,
    };
}

/// What an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EntryKind {
    /// A run as accepted, with the events it came with.
    Run,
    /// Events (or mount-use details) added to a run already in the chain.
    Events,
}

impl EntryKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Run => "run",
            Self::Events => "events",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "run" => Some(Self::Run),
            "events" => Some(Self::Events),
            _ => None,
        }
    }
}

/// The highest event id and event-detail id a run has.
fn run_through(conn: &Db, run: i64) -> crate::store::db::DbResult<(i64, i64)> {
    let events = conn
        .prepare_cached("SELECT coalesce(max(id), 0) FROM events WHERE run_id = ?1")?
        .query_row([run], |row| row.get(0))?;
    let details = conn
        .prepare_cached(
            "SELECT coalesce(max(d.id), 0) FROM events e JOIN event_details d ON d.event_id = e.id
             WHERE e.run_id = ?1",
        )?
        .query_row([run], |row| row.get(0))?;
    Ok((events, details))
}

/// The last entry as stored: where the next append goes. Kept for the length of a write
/// transaction, which holds the write lock, so no other writer can move it meanwhile.
#[derive(Debug, Clone, Copy)]
pub(super) struct Tail {
    seq: i64,
    hash: ChainHash,
}

impl Tail {
    /// Where the entry after this one goes: refused past the largest sequence number, which no
    /// chain this store appended reaches.
    fn next_seq(self) -> crate::store::db::DbResult<i64> {
        self.seq.checked_add(1).ok_or_else(|| {
            crate::store::db::DbError::Value(format!(
                "the chain's head is at sequence number {}, with no room after it",
                self.seq
            ))
        })
    }
}

/// The chain's last entry: `tail` when this transaction has already moved it, else the stored
/// head.
fn last_entry(conn: &Db, tail: Option<Tail>) -> crate::store::db::DbResult<Tail> {
    match tail {
        Some(last) => Ok(last),
        None => {
            let head = stored_head(conn)?;
            Ok(Tail {
                seq: head.length,
                hash: head.head,
            })
        }
    }
}

pub(super) fn stored_head(conn: &Db) -> crate::store::db::DbResult<ChainHead> {
    let last = conn
        .prepare_cached("SELECT seq, hash FROM run_chain ORDER BY seq DESC LIMIT 1")?
        .query_row([], |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, Vec<u8>>(1)?))
        })
        .optional()?;
    Ok(match last {
        Some((seq, hash)) => ChainHead {
            length: seq,
            head: ChainHash::from_blob(&hash).unwrap_or(ChainHash::GENESIS),
        },
        None => ChainHead::EMPTY,
    })
}

/// Appends an entry for `run` of `kind`: the run as it now stands, or what it gained since its
/// last entry; with `receipt`, the run's collector receipt too (encoding version 2), which
/// this entry brings into the chain. Call inside the write transaction that wrote those rows.
pub(super) fn append(
    conn: &Db,
    tail: &mut Option<Tail>,
    (run, receipt): (i64, bool),
    kind: EntryKind,
    now: Micros,
) -> crate::store::db::DbResult<()> {
    let last = last_entry(conn, *tail)?;
    let previous = match kind {
        EntryKind::Run => None,
        EntryKind::Events => conn
            .prepare_cached(
                "SELECT events_through, details_through FROM run_chain WHERE run_id = ?1
                 ORDER BY seq DESC LIMIT 1",
            )?
            .query_row([run], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?))
            })
            .optional()?,
    };
    // A run with no entry yet is appended whole, whatever it gained.
    let kind = if previous.is_some() {
        kind
    } else {
        EntryKind::Run
    };
    let (events_after, details_after) = previous.unwrap_or((0, 0));
    let (events_through, details_through) = run_through(conn, run)?;
    let span = Span {
        events_after,
        events_through: events_through.max(events_after),
        details_after,
        details_through: details_through.max(details_after),
    };
    let seq = last.next_seq()?;
    let version = if receipt { ENCODING_V3 } else { ENCODING_V1 };
    let entry = load_entry(conn, (seq, version), kind, run, span)?
        .ok_or(crate::store::db::DbError::NoRows)?;
    write_entry(conn, tail, last, (run, &entry), span, now)
}

/// A run this transaction has just created, as it wrote it: its facts and its events in the
/// order they were inserted, names resolved as the stored rows give them.
#[derive(Debug)]
pub(crate) struct NewRun {
    pub run: RunFacts,
    pub events: Vec<EventFacts>,
    /// The highest id among its events (0 when it has none).
    pub events_through: i64,
}

impl NewRun {
    /// The run's chain entry at `seq`: no receipt and no event details yet.
    fn entry(self, seq: i64) -> encode::Entry {
        encode::Entry {
            version: ENCODING_V1,
            seq,
            kind: EntryKind::Run,
            run: self.run,
            events: self.events,
            details: Vec::new(),
            receipt: None,
        }
    }
}

/// Appends the entry of a run created in this transaction, with no receipt and no event
/// details, from what the transaction wrote rather than by reading it back: the same entry
/// [`append`] would load. Debug builds load it too and check that they agree.
pub(super) fn append_new(
    conn: &Db,
    tail: &mut Option<Tail>,
    run: i64,
    new: NewRun,
    now: Micros,
) -> crate::store::db::DbResult<()> {
    let last = last_entry(conn, *tail)?;
    let span = Span {
        events_through: new.events_through,
        ..Span::default()
    };
    let entry = new.entry(last.next_seq()?);
    #[cfg(debug_assertions)]
    {
        let stored = load_entry(conn, (entry.seq, ENCODING_V1), EntryKind::Run, run, span)?;
        debug_assert_eq!(
            stored.as_ref(),
            Some(&entry),
            "the entry as written and as stored"
        );
        debug_assert_eq!(run_through(conn, run)?, (span.events_through, 0));
    }
    write_entry(conn, tail, last, (run, &entry), span, now)
}

/// The entry of a run created in this transaction, hashed onto the tail as [`append_new`]
/// would hash it, for a bulk writer that stores the entries itself (after the run's rows, in
/// the same transaction): moves the tail and returns the entry's seq and hash.
pub(super) fn hash_new(
    conn: &Db,
    tail: &mut Option<Tail>,
    new: NewRun,
) -> crate::store::db::DbResult<(i64, ChainHash)> {
    let last = last_entry(conn, *tail)?;
    let entry = new.entry(last.next_seq()?);
    let hash = next_hash(&last.hash, &encode(&entry));
    *tail = Some(Tail {
        seq: entry.seq,
        hash,
    });
    Ok((entry.seq, hash))
}

/// Hashes `entry` onto `last`, stores it and moves the tail.
fn write_entry(
    conn: &Db,
    tail: &mut Option<Tail>,
    last: Tail,
    (run, entry): (i64, &encode::Entry),
    span: Span,
    now: Micros,
) -> crate::store::db::DbResult<()> {
    let (seq, kind, version) = (entry.seq, entry.kind, entry.version);
    let hash = next_hash(&last.hash, &encode(entry));
    conn.prepare_cached(
        "INSERT INTO run_chain (seq, run_id, kind, events_through, details_through, encoding,
                                hash, appended_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        seq,
        run,
        kind.as_str(),
        span.events_through,
        span.details_through,
        version,
        &hash.0[..],
        now
    ])?;
    *tail = Some(Tail { seq, hash });
    Ok(())
}

/// The migration's hook: chains the runs a store held before it had a chain, in run id order,
/// each with everything it holds.
pub(super) fn chain_existing(conn: &Db) -> crate::store::db::DbResult<()> {
    let runs: Vec<i64> = conn
        .prepare("SELECT id FROM runs WHERE id NOT IN (SELECT run_id FROM run_chain) ORDER BY id")?
        .query_map([], |row| row.get(0))?
        .collect::<crate::store::db::DbResult<_>>()?;
    let now = crate::time::now();
    let mut tail = None;
    for run in runs {
        append(conn, &mut tail, (run, false), EntryKind::Run, now)?;
    }
    Ok(())
}

/// The hook of the migration after which receipts are chained: every receipt already held is
/// brought into the chain by an entry of its own (version 3, no new events), in run id order.
/// It runs once every migration has (the entry reads the receipt's later columns).
pub(super) fn chain_existing_receipts(conn: &Db) -> crate::store::db::DbResult<()> {
    let runs: Vec<i64> = conn
        .prepare(
            "SELECT run_id FROM run_receipts WHERE run_id IN (SELECT run_id FROM run_chain)
             ORDER BY run_id",
        )?
        .query_map([], |row| row.get(0))?
        .collect::<crate::store::db::DbResult<_>>()?;
    let now = crate::time::now();
    let mut tail = None;
    for run in runs {
        append(conn, &mut tail, (run, true), EntryKind::Events, now)?;
    }
    Ok(())
}
