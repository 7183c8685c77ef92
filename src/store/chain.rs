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
//! row an event points at is caught too. Observations learnt later (`run_observations`,
//! `run_truncations`) are not in the chain.

use std::collections::HashMap;
use std::fmt;

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use super::{Store, StoreError};
use crate::time::Micros;

/// The version of the entry encoding; the first byte of every encoded entry.
pub const ENCODING_VERSION: u8 = 1;

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

/// A run's facts as stored, names resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RunFacts {
    /// `None` when the run's pipeline row is gone.
    pub pipeline: Option<String>,
    pub run_key: String,
    pub step: String,
    pub commit: Option<String>,
    pub git_ref: Option<String>,
    pub builder: Ref,
    pub started_at: Micros,
    pub finished_at: Micros,
    pub status: String,
    pub has_records: i64,
    pub overlapped: i64,
    pub recorded_at: Micros,
    pub trust_level: Option<String>,
}

impl RunFacts {
    /// `pipeline/run/step`, as commands name runs.
    pub fn name(&self) -> String {
        crate::model::run_name(
            self.pipeline.as_deref().unwrap_or(""),
            &self.run_key,
            &self.step,
        )
    }
}

/// A builder named by a row: none, its name, or an id whose row is gone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) enum Ref {
    #[default]
    None,
    Named(String),
    Gone(i64),
}

/// What an event points at, by what it is rather than by row id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    Artifact {
        backend: String,
        locator: String,
        digest: String,
        key: String,
    },
    Mount {
        builder: Ref,
        namespace: String,
        mount_id: String,
    },
    Builder {
        name: String,
    },
    Record {
        builder: Ref,
        record_id: String,
        record_type: String,
        description: String,
    },
    /// A row id whose row is gone, or of a kind no table belongs to.
    Unresolved {
        id: i64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EventFacts {
    pub kind: String,
    pub target: Target,
    pub at: Micros,
    pub detail: Option<String>,
}

/// A mount use re-recorded with other options (`event_details`), with its event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DetailFacts {
    pub event_kind: String,
    pub target: Target,
    pub detail: String,
    pub at: Micros,
}

/// One entry, as hashed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub seq: i64,
    pub kind: EntryKind,
    pub run: RunFacts,
    pub events: Vec<EventFacts>,
    pub details: Vec<DetailFacts>,
}

/// Length-prefixed fields: every text is its byte length (4 bytes, big-endian) and its bytes,
/// every option a 0 or 1 byte before its value, every integer 8 bytes big-endian, every list
/// its count first. With the version and the kind first, no two different entries encode the
/// same.
struct Encoder(Vec<u8>);

impl Encoder {
    fn byte(&mut self, b: u8) {
        self.0.push(b);
    }

    fn int(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }

    fn len(&mut self, n: usize) {
        // A text or list over 4 GiB cannot be stored by SQLite in the first place.
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        self.0.extend_from_slice(&n.to_be_bytes());
    }

    fn text(&mut self, s: &str) {
        self.len(s.len());
        self.0.extend_from_slice(s.as_bytes());
    }

    fn opt(&mut self, s: Option<&str>) {
        match s {
            None => self.byte(0),
            Some(s) => {
                self.byte(1);
                self.text(s);
            }
        }
    }

    fn builder(&mut self, r: &Ref) {
        match r {
            Ref::None => self.byte(0),
            Ref::Named(name) => {
                self.byte(1);
                self.text(name);
            }
            Ref::Gone(id) => {
                self.byte(2);
                self.int(*id);
            }
        }
    }

    fn target(&mut self, t: &Target) {
        match t {
            Target::Artifact {
                backend,
                locator,
                digest,
                key,
            } => {
                self.byte(1);
                for s in [backend, locator, digest, key] {
                    self.text(s);
                }
            }
            Target::Mount {
                builder,
                namespace,
                mount_id,
            } => {
                self.byte(2);
                self.builder(builder);
                self.text(namespace);
                self.text(mount_id);
            }
            Target::Builder { name } => {
                self.byte(3);
                self.text(name);
            }
            Target::Record {
                builder,
                record_id,
                record_type,
                description,
            } => {
                self.byte(4);
                self.builder(builder);
                for s in [record_id, record_type, description] {
                    self.text(s);
                }
            }
            Target::Unresolved { id } => {
                self.byte(5);
                self.int(*id);
            }
        }
    }
}

/// The canonical encoding of an entry (version [`ENCODING_VERSION`]).
pub(crate) fn encode(entry: &Entry) -> Vec<u8> {
    let mut e = Encoder(Vec::with_capacity(256));
    e.byte(ENCODING_VERSION);
    e.int(entry.seq);
    e.byte(match entry.kind {
        EntryKind::Run => 1,
        EntryKind::Events => 2,
    });
    let run = &entry.run;
    e.opt(run.pipeline.as_deref());
    e.text(&run.run_key);
    e.text(&run.step);
    if entry.kind == EntryKind::Run {
        e.opt(run.commit.as_deref());
        e.opt(run.git_ref.as_deref());
        e.builder(&run.builder);
        e.int(run.started_at);
        e.int(run.finished_at);
        e.text(&run.status);
        e.int(run.has_records);
        e.int(run.overlapped);
        e.int(run.recorded_at);
        e.opt(run.trust_level.as_deref());
    }
    e.len(entry.events.len());
    for ev in &entry.events {
        e.text(&ev.kind);
        e.target(&ev.target);
        e.int(ev.at);
        e.opt(ev.detail.as_deref());
    }
    e.len(entry.details.len());
    for d in &entry.details {
        e.text(&d.event_kind);
        e.target(&d.target);
        e.text(&d.detail);
        e.int(d.at);
    }
    e.0
}

/// Entry n's hash from entry n-1's and entry n's encoding.
pub(crate) fn next_hash(prev: &ChainHash, encoding: &[u8]) -> ChainHash {
    let mut h = Sha256::new();
    h.update(prev.0);
    h.update(encoding);
    ChainHash(h.finalize().into())
}

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
fn target_at(row: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<(String, Target)> {
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

/// A run's stored facts, or `None` when its row is gone.
fn load_run(conn: &Connection, run: i64) -> rusqlite::Result<Option<RunFacts>> {
    conn.prepare_cached(
        "SELECT p.name, r.run_key, r.step, r.commit_sha, r.git_ref, r.builder_id, b.name,
                r.started_at, r.finished_at, r.status, r.has_records, r.overlapped,
                r.recorded_at, r.trust_level
         FROM runs r
         LEFT JOIN pipelines p ON p.id = r.pipeline_id
         LEFT JOIN builders b ON b.id = r.builder_id
         WHERE r.id = ?1",
    )?
    .query_row([run], |row| {
        let builder = match (
            row.get::<_, Option<i64>>(5)?,
            row.get::<_, Option<String>>(6)?,
        ) {
            (_, Some(name)) => Ref::Named(name),
            (Some(id), None) => Ref::Gone(id),
            (None, None) => Ref::None,
        };
        Ok(RunFacts {
            pipeline: row.get(0)?,
            run_key: row.get(1)?,
            step: row.get(2)?,
            commit: row.get(3)?,
            git_ref: row.get(4)?,
            builder,
            started_at: row.get(7)?,
            finished_at: row.get(8)?,
            status: row.get(9)?,
            has_records: row.get(10)?,
            overlapped: row.get(11)?,
            recorded_at: row.get(12)?,
            trust_level: row.get(13)?,
        })
    })
    .optional()
}

/// Which rows of a run an entry covers: ids in `(after, through]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Span {
    events_after: i64,
    events_through: i64,
    details_after: i64,
    details_through: i64,
}

/// An entry as the stored rows give it, or `None` when the run's row is gone.
fn load_entry(
    conn: &Connection,
    seq: i64,
    kind: EntryKind,
    run: i64,
    span: Span,
) -> rusqlite::Result<Option<Entry>> {
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
            |row| {
                let (kind, target) = target_at(row, 2)?;
                Ok(EventFacts {
                    kind,
                    target,
                    at: row.get(0)?,
                    detail: row.get(1)?,
                })
            },
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let details = if span.details_through > span.details_after {
        conn.prepare_cached(&format!(
            "SELECT d.detail, d.at, {TARGET_COLUMNS}
             FROM event_details d JOIN events e ON e.id = d.event_id {TARGET_JOINS}
             WHERE e.run_id = ?1 AND d.id > ?2 AND d.id <= ?3 ORDER BY d.id"
        ))?
        .query_map(
            params![run, span.details_after, span.details_through],
            |row| {
                let (event_kind, target) = target_at(row, 2)?;
                Ok(DetailFacts {
                    event_kind,
                    target,
                    detail: row.get(0)?,
                    at: row.get(1)?,
                })
            },
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?
    } else {
        Vec::new()
    };
    Ok(Some(Entry {
        seq,
        kind,
        run: facts,
        events,
        details,
    }))
}

/// The highest event id and event-detail id a run has.
fn run_through(conn: &Connection, run: i64) -> rusqlite::Result<(i64, i64)> {
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

pub(super) fn stored_head(conn: &Connection) -> rusqlite::Result<ChainHead> {
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
/// last entry. Call inside the write transaction that wrote those rows.
pub(super) fn append(
    conn: &Connection,
    tail: &mut Option<Tail>,
    run: i64,
    kind: EntryKind,
    now: Micros,
) -> rusqlite::Result<()> {
    let last = match *tail {
        Some(last) => last,
        None => {
            let head = stored_head(conn)?;
            Tail {
                seq: head.length,
                hash: head.head,
            }
        }
    };
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
    let seq = last.seq + 1;
    let entry =
        load_entry(conn, seq, kind, run, span)?.ok_or(rusqlite::Error::QueryReturnedNoRows)?;
    let hash = next_hash(&last.hash, &encode(&entry));
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
        ENCODING_VERSION,
        &hash.0[..],
        now
    ])?;
    *tail = Some(Tail { seq, hash });
    Ok(())
}

/// The migration's hook: chains the runs a store held before it had a chain, in run id order,
/// each with everything it holds.
pub(super) fn chain_existing(conn: &Connection) -> rusqlite::Result<()> {
    let runs: Vec<i64> = conn
        .prepare("SELECT id FROM runs WHERE id NOT IN (SELECT run_id FROM run_chain) ORDER BY id")?
        .query_map([], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let now = crate::time::now();
    let mut tail = None;
    for run in runs {
        append(conn, &mut tail, run, EntryKind::Run, now)?;
    }
    Ok(())
}

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
        let tx = self.conn.unchecked_transaction().map_err(|e| self.sql(e))?;
        let check = verify(&tx, expected).map_err(|e| self.sql(e))?;
        tx.finish().map_err(|e| self.sql(e))?;
        Ok(check)
    }
}

fn verify(conn: &Connection, expected: Option<&ChainHash>) -> rusqlite::Result<ChainCheck> {
    let length: i64 = conn.query_row("SELECT count(*) FROM run_chain", [], |row| row.get(0))?;
    let mut check = ChainCheck {
        length,
        head: ChainHash::GENESIS,
        broken: None,
        reached_at: None,
    };
    let name_of = |run: i64| -> rusqlite::Result<Option<String>> {
        Ok(load_run(conn, run)?.map(|facts| facts.name()))
    };
    // Entries are read one at a time: memory stays flat whatever the chain's length, but for
    // the span of each run seen.
    let mut spans: HashMap<i64, (i64, i64)> = HashMap::new();
    let mut stmt = conn.prepare(
        "SELECT seq, run_id, kind, events_through, details_through, encoding, hash
         FROM run_chain ORDER BY seq",
    )?;
    let mut rows = stmt.query([])?;
    let mut number = 0_i64;
    while let Some(row) = rows.next()? {
        number += 1;
        let row = StoredEntry {
            seq: row.get(0)?,
            run: row.get(1)?,
            kind: row.get(2)?,
            events_through: row.get(3)?,
            details_through: row.get(4)?,
            encoding: row.get(5)?,
            hash: row.get(6)?,
        };
        let fail = |kind: BreakKind| -> rusqlite::Result<ChainBreak> {
            Ok(ChainBreak {
                entry: number,
                run: name_of(row.run)?,
                run_id: row.run,
                kind,
            })
        };
        if row.seq != number {
            check.broken = Some(fail(BreakKind::MissingEntry)?);
            return Ok(check);
        }
        let previous = spans.get(&row.run).copied();
        let (events_after, details_after) = previous.unwrap_or((0, 0));
        let kind = match (EntryKind::parse(&row.kind), previous) {
            _ if row.encoding != i64::from(ENCODING_VERSION) => Err(BreakKind::Malformed),
            (None, _) => Err(BreakKind::Malformed),
            (Some(EntryKind::Run), Some(_)) => Err(BreakKind::RunTwice),
            (Some(EntryKind::Events), None) => Err(BreakKind::EventsBeforeRun),
            _ if row.events_through < events_after || row.details_through < details_after => {
                Err(BreakKind::Malformed)
            }
            (Some(kind), _) => Ok(kind),
        };
        let kind = match kind {
            Ok(kind) => kind,
            Err(why) => {
                check.broken = Some(fail(why)?);
                return Ok(check);
            }
        };
        let span = Span {
            events_after,
            events_through: row.events_through,
            details_after,
            details_through: row.details_through,
        };
        let Some(entry) = load_entry(conn, row.seq, kind, row.run, span)? else {
            check.broken = Some(fail(BreakKind::RunGone)?);
            return Ok(check);
        };
        let hash = next_hash(&check.head, &encode(&entry));
        if ChainHash::from_blob(&row.hash) != Some(hash) {
            check.broken = Some(ChainBreak {
                entry: number,
                run: Some(entry.run.name()),
                run_id: row.run,
                kind: BreakKind::HashMismatch,
            });
            return Ok(check);
        }
        check.head = hash;
        if expected == Some(&hash) {
            check.reached_at = Some(number);
        }
        spans.insert(row.run, (row.events_through, row.details_through));
    }
    // Rows that no entry covers.
    let next = length + 1;
    let uncovered = |run: i64, kind: BreakKind| -> rusqlite::Result<ChainBreak> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn run_entry() -> Entry {
        Entry {
            seq: 1,
            kind: EntryKind::Run,
            run: RunFacts {
                pipeline: Some("p".into()),
                run_key: "1".into(),
                step: "s".into(),
                commit: Some("c0ffee".into()),
                git_ref: None,
                builder: Ref::Named("b".into()),
                started_at: 10,
                finished_at: 20,
                status: "succeeded".into(),
                has_records: 0,
                overlapped: 0,
                recorded_at: 30,
                trust_level: Some("internal".into()),
            },
            events: vec![EventFacts {
                kind: "imported".into(),
                target: Target::Artifact {
                    backend: "registry".into(),
                    locator: "r.io/x".into(),
                    digest: "sha256:00".into(),
                    key: String::new(),
                },
                at: 20,
                detail: None,
            }],
            details: Vec::new(),
        }
    }

    /// Entries that differ in any one field, or only in where a text is split between two
    /// fields, encode differently: no forged run can take a real one's hash.
    #[test]
    fn no_two_different_entries_encode_the_same() {
        let base = run_entry();
        let mut variants: Vec<Entry> = vec![base.clone()];
        let mut push = |f: &dyn Fn(&mut Entry)| {
            let mut e = base.clone();
            f(&mut e);
            variants.push(e);
        };
        push(&|e| e.seq = 2);
        push(&|e| e.kind = EntryKind::Events);
        push(&|e| e.run.pipeline = None);
        push(&|e| e.run.pipeline = Some(String::new()));
        // The same characters split differently between pipeline, run key and step.
        push(&|e| {
            e.run.pipeline = Some("p1".into());
            e.run.run_key = String::new();
        });
        push(&|e| {
            e.run.run_key = "1s".into();
            e.run.step = String::new();
        });
        push(&|e| e.run.commit = None);
        push(&|e| e.run.git_ref = Some(String::new()));
        push(&|e| e.run.builder = Ref::None);
        push(&|e| e.run.builder = Ref::Gone(1));
        push(&|e| e.run.builder = Ref::Named("c".into()));
        push(&|e| e.run.started_at = 11);
        push(&|e| e.run.finished_at = 21);
        push(&|e| e.run.status = "failed".into());
        push(&|e| e.run.has_records = 1);
        push(&|e| e.run.overlapped = 1);
        push(&|e| e.run.recorded_at = 31);
        push(&|e| e.run.trust_level = Some("release".into()));
        push(&|e| e.run.trust_level = None);
        push(&|e| e.events.clear());
        push(&|e| e.events[0].kind = "exported".into());
        push(&|e| e.events[0].at = 19);
        push(&|e| e.events[0].detail = Some(String::new()));
        push(&|e| {
            e.events[0].target = Target::Artifact {
                backend: "registry".into(),
                locator: "r.io/xsha256:00".into(),
                digest: String::new(),
                key: String::new(),
            }
        });
        push(&|e| e.events[0].target = Target::Unresolved { id: 1 });
        push(&|e| e.events[0].target = Target::Builder { name: "b".into() });
        push(&|e| {
            e.events[0].target = Target::Mount {
                builder: Ref::Named("b".into()),
                namespace: String::new(),
                mount_id: "m".into(),
            }
        });
        push(&|e| {
            e.events[0].target = Target::Record {
                builder: Ref::Named("b".into()),
                record_id: "m".into(),
                record_type: String::new(),
                description: String::new(),
            }
        });
        push(&|e| {
            let again = e.events[0].clone();
            e.events.push(again);
        });
        push(&|e| {
            e.details.push(DetailFacts {
                event_kind: "read_mount".into(),
                target: Target::Unresolved { id: 1 },
                detail: "[]".into(),
                at: 1,
            })
        });
        let encodings: Vec<Vec<u8>> = variants.iter().map(encode).collect();
        for (i, a) in encodings.iter().enumerate() {
            for (j, b) in encodings.iter().enumerate().skip(i + 1) {
                assert_ne!(a, b, "variants {i} and {j} encode the same");
            }
        }
    }

    /// An events entry leaves the run's other facts out (they are in its run entry), and
    /// every encoding starts with the version.
    #[test]
    fn the_encoding_is_versioned_and_events_entries_name_only_the_run() {
        let mut e = run_entry();
        assert_eq!(encode(&e)[0], ENCODING_VERSION);
        e.kind = EntryKind::Events;
        let before = encode(&e);
        e.run.started_at = 99;
        e.run.trust_level = None;
        assert_eq!(encode(&e), before);
        e.run.run_key = "2".into();
        assert_ne!(encode(&e), before);
    }

    /// Hex heads read back to the same hash; anything else is refused.
    #[test]
    fn heads_parse_from_hex() {
        let h = next_hash(&ChainHash::GENESIS, b"x");
        assert_eq!(ChainHash::parse(&h.to_string()), Some(h));
        assert_eq!(ChainHash::parse(&h.to_string().to_uppercase()), Some(h));
        for bad in [
            "",
            "00",
            &"g".repeat(64),
            &"0".repeat(63),
            &"0".repeat(65),
            &"é".repeat(32),
        ] {
            assert_eq!(ChainHash::parse(bad), None, "{bad}");
        }
    }

    /// Each hash covers the one before: the same entry after another head hashes otherwise.
    #[test]
    fn each_hash_covers_the_previous() {
        let enc = encode(&run_entry());
        let a = next_hash(&ChainHash::GENESIS, &enc);
        let b = next_hash(&a, &enc);
        assert_ne!(a, b);
        assert_eq!(a, next_hash(&ChainHash::GENESIS, &enc));
    }
}
