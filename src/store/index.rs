//! An in-memory copy of the provenance graph, for traces that reach a large part of a fleet.
//!
//! A trace starts with indexed queries, one per entity it expands. When it has made enough of
//! them that loading the whole graph is cheaper than going on, [`TraceSource`] reads every
//! table once, in the trace's read transaction, into compact arrays, and answers the rest of
//! the trace from memory with the same answers the queries give.

use std::cell::OnceCell;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::store::db::{Db, Engine};
use compact_str::CompactString;
use rustc_hash::{FxHashMap, FxHasher};

use super::{Access, Store, StoreError, sql_error};
use crate::graph::source::{
    ArtifactId, ArtifactInfo, ArtifactRead, BuilderId, BuilderInfo, BuilderPrune, DigestUses,
    MountId, MountInfo, Purged, Receipt, RecordId, RecordInfo, RunId, RunInfo, RunRef, Source,
    Write,
};
use crate::model::{Backend, Digest, RunKey, RunStatus, StoredPurge};
use crate::time::Micros;

/// `Ok(None)` from the enclosing loader when a value does not fit its array form.
macro_rules! some_or_skip {
    ($e:expr) => {
        match $e {
            Some(v) => v,
            None => return Ok(None),
        }
    };
}

/// The trace's view of the store: indexed queries first, the in-memory graph once the trace
/// has grown large.
pub struct TraceSource<'s> {
    store: &'s mut Store,
    index: Option<Index>,
    /// Expansion queries left before the graph is loaded; `None` never loads it.
    budget: Option<usize>,
    /// Expansion queries answered by the store, and how long loading the graph took.
    queries: usize,
    load_time: Option<Duration>,
    /// Record descriptions handed out, by their place in the index: records that share one
    /// share its allocation.
    descriptions: FxHashMap<(u32, u32), Arc<str>>,
    /// What believed runs said of records a doubted run named first, and the records only a
    /// doubted run described (`None`), once the graph is loaded.
    described: Option<HashMap<RecordId, Option<(String, String)>>>,
}

/// How a trace read the store, for `--verbose`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SourceSummary {
    /// Expansions answered by indexed queries.
    pub queries: usize,
    /// When the whole graph was loaded: how long that took, and how many events it holds.
    pub loaded: Option<(Duration, usize)>,
}

impl<'s> TraceSource<'s> {
    /// Loads the graph once the trace has made about one query per thousand events (per five
    /// thousand on PostgreSQL): from then on, going on query by query costs more than reading
    /// every event once.
    pub fn new(store: &'s mut Store) -> Result<Self, StoreError> {
        let events: i64 = store
            .conn
            .query_row("SELECT coalesce(max(id), 0) FROM events", [], |row| {
                row.get(0)
            })
            .map_err(|e| sql_error(&store.path, e))?;
        // A PostgreSQL query is a round trip, and its load reads every row over the socket:
        // measured on a 100k-run fleet, a load there costs about what 2,000 queries do, and a
        // closure that needs more than a few hundred queries goes on to need thousands.
        let (per, least) = match store.conn.engine() {
            Engine::Sqlite => (1000, 2000),
            Engine::Postgres => (5000, 500),
        };
        let budget = usize::try_from(events / per).unwrap_or(0).max(least);
        Ok(Self::with_budget(store, Some(budget)))
    }

    /// `Some(0)` loads the graph at the first expansion; `None` never does.
    pub fn with_budget(store: &'s mut Store, budget: Option<usize>) -> Self {
        Self {
            store,
            index: None,
            budget,
            queries: 0,
            load_time: None,
            descriptions: FxHashMap::default(),
            described: None,
        }
    }

    pub fn summary(&self) -> SourceSummary {
        SourceSummary {
            queries: self.queries,
            loaded: self
                .load_time
                .zip(self.index.as_ref().map(|index| index.events.count)),
        }
    }

    /// Whether the trace is being answered from memory.
    pub fn loaded(&self) -> bool {
        self.index.is_some()
    }

    /// The in-memory graph, loading it when the budget has run out.
    fn index(&mut self) -> Result<Option<&Index>, StoreError> {
        self.index_for(1)
    }

    /// [`Self::index`] for a lookup that makes `queries` queries in the store.
    fn index_for(&mut self, queries: usize) -> Result<Option<&Index>, StoreError> {
        if self.index.is_none() {
            match &mut self.budget {
                Some(0) => {
                    self.budget = None;
                    let started = Instant::now();
                    let reader = self.store.appended_reader();
                    for conn in [Some(&self.store.conn), reader.as_ref()]
                        .into_iter()
                        .flatten()
                    {
                        bulk_reading(conn);
                    }
                    let doubted = self.store.doubted_records();
                    self.index = Index::load(&self.store.conn, reader, &doubted)
                        .map_err(|e| sql_error(&self.store.path, e))?;
                    self.load_time = Some(started.elapsed());
                }
                Some(left) => *left = left.saturating_sub(queries),
                None => {}
            }
            if self.index.is_none() {
                self.queries += queries;
            }
        }
        Ok(self.index.as_ref())
    }
}

/// Readies a connection to read the graph's tables once, front to back: its pages are no
/// longer mapped nor kept in a large cache, which would only add to the trace's peak memory
/// what the arrays already hold. Settings of memory only: a connection that keeps its
/// defaults (SQLite refuses to change its mapping while a page is in use) reads the same rows.
fn bulk_reading(conn: &Db) {
    if let Some(conn) = conn.sqlite() {
        let _ = conn.execute_batch("PRAGMA mmap_size = 0; PRAGMA cache_size = -8192;");
    }
}

impl Drop for TraceSource<'_> {
    /// Freeing millions of rows takes a noticeable fraction of a second: another thread does it
    /// while the trace is written out.
    fn drop(&mut self) {
        if let Some(index) = self.index.take() {
            std::thread::spawn(move || drop(index));
        }
    }
}

/// A second, read-only connection to read the events, the artifacts' identities and the
/// builder records on while `conn` reads the other tables.
///
/// It may see a later state than `conn`'s read transaction, but events, artifacts and builder
/// records are only ever appended, each with an id above every earlier one, and the columns
/// read there (an artifact's backend, locator, digest and key; a record's builder, id, type and
/// description) never change: reading those up to the largest id `conn` sees (see [`Slots`])
/// gives exactly the rows of `conn`'s snapshot. It is opened as the store was (an immutable
/// copy stays immutable). `None` when the file cannot be opened again (then `conn` reads
/// everything).
fn appended_reader(path: &Path, access: Access) -> Option<Db> {
    super::reopen_read_only(path, access)
}

impl Store {
    /// The second connection [`Index::load`] reads on: SQLite's file opened again (see
    /// [`appended_reader`]); on PostgreSQL a new connection that takes on this one's snapshot
    /// (`pg_export_snapshot`), so both read exactly the same state.
    fn appended_reader(&self) -> Option<Db> {
        match self.conn.engine() {
            Engine::Sqlite => appended_reader(&self.path, self.access),
            Engine::Postgres => self.pg_snapshot_reader(),
        }
    }
}

/// Store ids as array positions. Loading gives up (and the trace goes on with queries) when
/// ids are too large for that.
fn slot(id: i64) -> Option<usize> {
    usize::try_from(id).ok()
}

fn id32(id: i64) -> Option<u32> {
    u32::try_from(id).ok()
}

/// Whether bit `i` of a bit set is set; bits past its end are not.
fn has_bit(words: &[u64], i: usize) -> bool {
    words
        .get(i / 64)
        .is_some_and(|word| word >> (i % 64) & 1 == 1)
}

/// Strings of one column, back to back.
#[derive(Default)]
struct Text {
    bytes: String,
}

#[derive(Clone, Copy, Default)]
struct Span {
    start: u32,
    end: u32,
}

impl Text {
    fn push(&mut self, value: &str) -> Option<Span> {
        let start = u32::try_from(self.bytes.len()).ok()?;
        self.bytes.push_str(value);
        let end = u32::try_from(self.bytes.len()).ok()?;
        Some(Span { start, end })
    }

    fn get(&self, span: Span) -> &str {
        &self.bytes[span.start as usize..span.end as usize]
    }
}

/// Items grouped by a key: the items of key `k` are `items[offsets[k]..offsets[k + 1]]`.
struct Groups<T> {
    offsets: Vec<u32>,
    items: Vec<T>,
}

impl<T: Copy + Default> Groups<T> {
    /// Groups the inputs that have a key (`keys` in input order), each as `item` makes it
    /// from its position, keeping the order of the input within each key.
    fn build(
        keys: impl Iterator<Item = Option<usize>> + Clone,
        item: impl Fn(usize) -> T,
        slots: usize,
    ) -> Self {
        let mut counts = GroupCounts::new(slots);
        keys.clone().flatten().for_each(|key| counts.count(key));
        let mut groups = counts.placing();
        for (position, key) in keys.enumerate() {
            if let Some(key) = key {
                groups.place(key, item(position));
            }
        }
        groups.done()
    }

    fn get(&self, key: i64) -> &[T] {
        match slot(key) {
            Some(k) if k + 1 < self.offsets.len() => {
                &self.items[self.offsets[k] as usize..self.offsets[k + 1] as usize]
            }
            _ => &[],
        }
    }
}

/// The first pass of grouping: how many items each key has. Keys at or above the number of
/// slots are left out.
struct GroupCounts {
    offsets: Vec<u32>,
}

impl GroupCounts {
    fn new(slots: usize) -> Self {
        Self {
            offsets: vec![0; slots + 1],
        }
    }

    fn count(&mut self, key: usize) {
        if let Some(count) = self.offsets.get_mut(key + 1) {
            *count += 1;
        }
    }

    /// The second pass: items are placed, in input order within each key.
    fn placing<T: Copy + Default>(mut self) -> Groups<T> {
        for i in 1..self.offsets.len() {
            self.offsets[i] += self.offsets[i - 1];
        }
        let total = self.offsets.last().map_or(0, |&n| n as usize);
        Groups {
            // Where each key's next item goes, until `done` turns them back into starts.
            offsets: self.offsets,
            items: vec![T::default(); total],
        }
    }
}

impl<T: Copy> Groups<T> {
    fn place(&mut self, key: usize, item: T) {
        if key + 1 < self.offsets.len() {
            self.items[self.offsets[key] as usize] = item;
            self.offsets[key] += 1;
        }
    }

    /// Ends placing: each key's end became the next key's start.
    fn done(mut self) -> Self {
        self.offsets.rotate_right(1);
        self.offsets[0] = 0;
        self
    }
}

#[derive(Clone, Copy, Default, PartialEq, Eq)]
enum EventKind {
    Imported,
    Exported,
    Produced,
    UsedBase,
    ReadMount,
    WroteMount,
    CreatedRecord,
    ReusedRecord,
    #[default]
    Other,
}

impl EventKind {
    /// The kind of a packed event (see `schema/migrations/0005_event_pages.sql`).
    fn from_code(code: u8) -> Self {
        match code {
            1 => Self::Imported,
            2 => Self::Exported,
            3 => Self::Produced,
            4 => Self::UsedBase,
            5 => Self::ReadMount,
            6 => Self::WroteMount,
            7 => Self::CreatedRecord,
            8 => Self::ReusedRecord,
            _ => Self::Other,
        }
    }

    /// The code [`Self::from_code`] reads back: the packed events' own, 0 for the rest.
    fn code(self) -> u8 {
        match self {
            Self::Imported => 1,
            Self::Exported => 2,
            Self::Produced => 3,
            Self::UsedBase => 4,
            Self::ReadMount => 5,
            Self::WroteMount => 6,
            Self::CreatedRecord => 7,
            Self::ReusedRecord => 8,
            Self::Other => 0,
        }
    }

    /// Which grouping by target the event is in: 0 artifact reads, 1 mount reads, 2 record
    /// reuses.
    fn target_group(self) -> Option<usize> {
        match self {
            Self::Imported | Self::UsedBase => Some(0),
            Self::ReadMount => Some(1),
            Self::ReusedRecord => Some(2),
            _ => None,
        }
    }

    fn is_write(self) -> bool {
        matches!(
            self,
            Self::Exported | Self::Produced | Self::WroteMount | Self::CreatedRecord
        )
    }
}

#[derive(Clone, Copy, Default)]
struct RunRow {
    present: bool,
    pipeline: u32,
    builder: Option<u32>,
    started_at: Micros,
    finished_at: Micros,
    failed: bool,
    has_records: bool,
    /// Recorded at the level whose record evidence a trace doubts
    /// ([`Store::doubt_records_at`]).
    records_doubted: bool,
    truncated: bool,
    time_suspect: bool,
    run_key: Span,
    step: Span,
}

#[derive(Clone, Copy, Default)]
struct ArtifactRow {
    present: bool,
    backend: u8,
    /// The digest is in [`Artifacts::sha256`]; else it is `digest` of the text.
    sha256: bool,
    locator: u32,
    digest: Span,
    key: Span,
}

#[derive(Clone, Copy, Default)]
struct RecordRow {
    present: bool,
    builder: u32,
    record_id: Span,
    record_type: u32,
    description: Span,
}

const BACKENDS: [Backend; 6] = [
    Backend::Registry,
    Backend::LocalImage,
    Backend::Gha,
    Backend::Local,
    Backend::S3,
    Backend::Azblob,
];

/// The whole provenance graph, by store id.
struct Index {
    events: Events,
    records: Records,
    artifacts: Artifacts,
    tables: Tables,
    /// By builder, its records that no run recorded creating, in id order: made when first
    /// asked for, in one pass over the records.
    orphans: OnceCell<FxHashMap<u32, Vec<RecordId>>>,
}

/// Array sizes: the largest id of each table, plus one.
#[derive(Clone, Copy)]
struct Slots {
    runs: usize,
    artifacts: usize,
    mounts: usize,
    records: usize,
    builders: usize,
    pipelines: usize,
    events: usize,
}

impl Slots {
    /// The slots of each table, or `None` when a table's ids are too wide or too sparse to be
    /// held as arrays.
    ///
    /// The store hands out ids in order, so a table's largest id is about its row count. A
    /// store that was edited (or a role that drew ids from a sequence without using them) can
    /// hold an id far above it, and arrays sized by that id would take memory the rows do not
    /// account for. When the arrays of every table together would fit in what the store takes
    /// on disk, they are loaded at once; else each table is counted, and loaded only when its
    /// ids are at most four times its rows. Else the trace is answered by queries, with the
    /// same answers.
    fn read(conn: &Db) -> crate::store::db::DbResult<Option<Self>> {
        Self::read_within(conn, ARRAYS_ALWAYS_LOADED)
    }

    /// [`Slots::read`], loading arrays of up to `always` bytes whatever the store's size.
    fn read_within(conn: &Db, always: u64) -> crate::store::db::DbResult<Option<Self>> {
        let offset = size_of::<u32>();
        // Each table: its rows (a count, or an upper bound from its pages), the bytes the
        // graph holds a slot (with the offsets of its events' group), and whether an event
        // names its ids, which then sit beside the event's kind.
        let tables: [(&str, &str, usize, bool); 7] = [
            (
                "runs",
                "SELECT count(*) FROM runs",
                size_of::<RunRow>() + offset,
                true,
            ),
            (
                "artifacts",
                "SELECT count(*) * 64 FROM artifact_pages",
                size_of::<ArtifactRow>()
                    + size_of::<[u8; 32]>()
                    + size_of::<Micros>()
                    + size_of::<(u64, u32)>()
                    + offset,
                true,
            ),
            (
                "mounts",
                "SELECT count(*) FROM mounts",
                size_of::<Option<MountInfo>>() + offset,
                true,
            ),
            (
                "builder_records",
                "SELECT count(*) * 64 FROM record_pages",
                size_of::<RecordRow>() + offset,
                true,
            ),
            (
                "builders",
                "SELECT count(*) FROM builders",
                size_of::<Option<CompactString>>(),
                false,
            ),
            (
                "pipelines",
                "SELECT count(*) FROM pipelines",
                size_of::<CompactString>(),
                false,
            ),
            (
                "events",
                "SELECT count(*) * 64 FROM event_pages",
                // Its run, target, time and kind, until they are grouped.
                2 * size_of::<u32>() + size_of::<Micros>() + size_of::<EventKind>(),
                false,
            ),
        ];
        let mut found = [0; 7];
        let mut wanted = 0u64;
        for (slot, &(table, _, bytes, named)) in found.iter_mut().zip(&tables) {
            *slot = some_or_skip!(slots(conn, table)?.filter(|&n| !named || fits_events(n)));
            wanted = wanted.saturating_add((*slot as u64).saturating_mul(bytes as u64));
        }
        if wanted > store_bytes(conn)?.max(always) {
            for (&slots, &(_, rows, _, _)) in found.iter().zip(&tables) {
                let counted: i64 = conn.query_row(rows, [], |row| row.get(0))?;
                let bound = u64::try_from(counted)
                    .unwrap_or(0)
                    .saturating_mul(4)
                    .saturating_add(1 << 16);
                if slots as u64 > bound {
                    return Ok(None);
                }
            }
        }
        let [
            runs,
            artifacts,
            mounts,
            records,
            builders,
            pipelines,
            events,
        ] = found;
        Ok(Some(Self {
            runs,
            artifacts,
            mounts,
            records,
            builders,
            pipelines,
            events,
        }))
    }
}

/// The graph's arrays are loaded up to this size whatever the store's size.
const ARRAYS_ALWAYS_LOADED: u64 = 64 << 20;

/// The bytes the store takes on disk.
fn store_bytes(conn: &Db) -> crate::store::db::DbResult<u64> {
    let bytes: i64 = match conn.engine() {
        crate::store::db::Engine::Sqlite => conn.query_row(
            "SELECT c.page_count * s.page_size FROM pragma_page_count() c, pragma_page_size() s",
            [],
            |row| row.get(0),
        )?,
        crate::store::db::Engine::Postgres => {
            conn.query_row("SELECT pg_database_size(current_database())", [], |row| {
                row.get(0)
            })?
        }
    };
    Ok(u64::try_from(bytes).unwrap_or(0))
}

/// Every event a trace follows, in the groupings it looks them up by.
///
/// Each grouping holds what its lookups read of an event, so that following one takes a
/// single pass over adjacent memory.
struct Events {
    /// How many events were read.
    count: usize,
    /// The writes and mount reads of each run.
    by_run: Groups<RunEvent>,
    artifact_reads: Groups<TargetEvent>,
    /// Sorted by time within each mount.
    mount_reads: Groups<TargetEvent>,
    record_reuses: Groups<TargetEvent>,
    /// A bit for each record that a run recorded creating.
    created: Vec<u64>,
    /// A bit for each record that two or more runs recorded creating: only those are looked up
    /// again for their creators.
    cocreated: Vec<u64>,
}

/// Ids an event of the graph may name: the top four bits of its grouped form hold its kind.
const EVENT_ID_BITS: u32 = 28;

/// An id that fits beside an event's kind.
fn event_id(id: i64) -> Option<u32> {
    id32(id).filter(|&id| id < 1 << EVENT_ID_BITS)
}

/// Whether `slots` slots (ids below it) all fit beside an event's kind.
fn fits_events(slots: usize) -> bool {
    slots <= 1 << EVENT_ID_BITS
}

/// An event as a grouping holds it, in 12 bytes: when it happened, and its kind with the id
/// at the other end (the target in its run's group, the run in its target's group).
#[derive(Clone, Copy, Default)]
#[repr(C, packed(4))]
struct Grouped {
    at: Micros,
    kind_and_id: u32,
}

impl Grouped {
    /// `id` must fit in [`EVENT_ID_BITS`] bits ([`event_id`]).
    fn new(kind: EventKind, id: u32, at: Micros) -> Self {
        debug_assert!(id < 1 << EVENT_ID_BITS);
        Self {
            at,
            kind_and_id: u32::from(kind.code()) << EVENT_ID_BITS | id,
        }
    }

    fn kind(self) -> EventKind {
        EventKind::from_code((self.kind_and_id >> EVENT_ID_BITS) as u8)
    }

    fn id(self) -> u32 {
        self.kind_and_id & ((1 << EVENT_ID_BITS) - 1)
    }

    fn at(self) -> Micros {
        self.at
    }
}

/// An event in its run's group.
#[derive(Clone, Copy, Default)]
struct RunEvent(Grouped);

impl RunEvent {
    fn kind(self) -> EventKind {
        self.0.kind()
    }

    fn target(self) -> u32 {
        self.0.id()
    }

    fn at(self) -> Micros {
        self.0.at()
    }
}

/// An event in its target's group.
#[derive(Clone, Copy, Default)]
struct TargetEvent(Grouped);

impl TargetEvent {
    fn kind(self) -> EventKind {
        self.0.kind()
    }

    fn run(self) -> u32 {
        self.0.id()
    }

    fn at(self) -> Micros {
        self.0.at()
    }
}

impl Events {
    /// Reads `events`, grouped the ways a trace asks for them.
    fn load(conn: &Db, slots: &Slots) -> crate::store::db::DbResult<Option<Self>> {
        let Slots {
            runs: run_slots,
            artifacts: artifact_slots,
            mounts: mount_slots,
            records: record_slots,
            events,
            ..
        } = *slots;
        // Each event goes to the position of its id, so the events keep the order of their ids
        // whatever order the pages come in; positions of `ran_on` events stay `Other`.
        let mut event_run = vec![0u32; events];
        let mut event_target = vec![0u32; events];
        let mut event_at = vec![0; events];
        let mut event_kind = vec![EventKind::Other; events];
        let mut count = 0;
        let read = read_pages(conn, "event_pages", "events", events, |page| {
            let (id, run, kind, target, at) = (
                page.number()?,
                page.number()?,
                page.byte()?,
                page.number()?,
                page.number()?,
            );
            // Only the events of the snapshot the slots were read in.
            let Some(slot) = slot(id).filter(|&slot| slot < events) else {
                return Some(());
            };
            event_run[slot] = event_id(run)?;
            event_kind[slot] = EventKind::from_code(kind);
            event_target[slot] = event_id(target)?;
            event_at[slot] = at;
            count += 1;
            Some(())
        })?;
        some_or_skip!(read);
        if u32::try_from(event_run.len()).is_err() {
            return Ok(None);
        }
        // Two passes over the events fill the four groupings: counting, then placing.
        let mut run_counts = GroupCounts::new(run_slots);
        let mut target_counts = [artifact_slots, mount_slots, record_slots].map(GroupCounts::new);
        for e in 0..event_kind.len() {
            let kind = event_kind[e];
            if kind.is_write() || kind == EventKind::ReadMount {
                run_counts.count(event_run[e] as usize);
            }
            if let Some(group) = kind.target_group() {
                target_counts[group].count(event_target[e] as usize);
            }
        }
        let mut by_run = run_counts.placing();
        let mut by_target = target_counts.map(GroupCounts::placing);
        let words = record_slots.div_ceil(64);
        let (mut created, mut cocreated) = (vec![0u64; words], vec![0u64; words]);
        for e in 0..event_kind.len() {
            let (kind, run, target, at) =
                (event_kind[e], event_run[e], event_target[e], event_at[e]);
            if kind == EventKind::CreatedRecord && (target as usize) < record_slots {
                let (word, bit) = (target as usize / 64, 1u64 << (target % 64));
                if created[word] & bit != 0 {
                    cocreated[word] |= bit;
                }
                created[word] |= bit;
            }
            if kind.is_write() || kind == EventKind::ReadMount {
                by_run.place(run as usize, RunEvent(Grouped::new(kind, target, at)));
            }
            if let Some(group) = kind.target_group() {
                by_target[group].place(target as usize, TargetEvent(Grouped::new(kind, run, at)));
            }
        }
        let by_run = by_run.done();
        let [artifact_reads, mount_reads, record_reuses] = by_target.map(Groups::done);
        let mut mount_reads = mount_reads;
        for m in 0..mount_slots {
            let (a, b) = (
                mount_reads.offsets[m] as usize,
                mount_reads.offsets[m + 1] as usize,
            );
            mount_reads.items[a..b].sort_by_key(|e| e.at());
        }
        Ok(Some(Self {
            count,
            by_run,
            artifact_reads,
            mount_reads,
            record_reuses,
            created,
            cocreated,
        }))
    }
}

/// Every other table.
struct Tables {
    pipelines: Vec<CompactString>,
    builders: Vec<Option<CompactString>>,
    runs: Vec<RunRow>,
    run_text: Text,
    /// When each artifact was first seen: the one artifact column updated in place.
    artifact_first_seen: Vec<Micros>,
    tag_text: Text,
    /// Each artifact's tags, as spans of `tag_text`.
    artifact_tags: Groups<Span>,
    mounts: Vec<Option<MountInfo>>,
    mount_purges: HashMap<i64, Vec<Micros>>,
    /// Runs without record evidence per builder, by start time, and the longest run there.
    unverified: HashMap<u32, (Vec<u32>, Micros)>,
    /// The time-suspect runs, which every query from a time on includes whatever they claim.
    suspect: Vec<u32>,
}

impl Tables {
    /// Reads every table but `events`; a run recorded at the level `doubted` has no record
    /// evidence ([`Store::doubt_records_at`]).
    fn load(conn: &Db, slots: &Slots, doubted: &str) -> crate::store::db::DbResult<Option<Self>> {
        let Slots {
            runs: run_slots,
            artifacts: artifact_slots,
            mounts: mount_slots,
            builders: builder_slots,
            pipelines: pipeline_slots,
            ..
        } = *slots;

        let mut pipelines = vec![CompactString::default(); pipeline_slots];
        let mut stmt = conn.prepare("SELECT id, name FROM pipelines")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let id = some_or_skip!(slot(row.get(0)?));
            pipelines[id] = row.get_ref(1)?.as_str()?.into();
        }

        let mut builders = vec![None; builder_slots];
        let mut stmt = conn.prepare("SELECT id, name FROM builders")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let id = some_or_skip!(slot(row.get(0)?));
            builders[id] = Some(row.get_ref(1)?.as_str()?.into());
        }

        let mut runs = vec![RunRow::default(); run_slots];
        let mut run_text = Text::default();
        let mut stmt = conn.prepare(
            "SELECT id, pipeline_id, run_key, step, builder_id, started_at, finished_at, status,
                    has_records, CASE WHEN trust_level = ?1 THEN 1 ELSE 0 END
             FROM runs",
        )?;
        let mut rows = stmt.query([doubted])?;
        while let Some(row) = rows.next()? {
            let id = some_or_skip!(slot(row.get(0)?));
            let builder: Option<i64> = row.get(4)?;
            runs[id] = RunRow {
                present: true,
                pipeline: some_or_skip!(id32(row.get(1)?)),
                builder: match builder {
                    Some(b) => Some(some_or_skip!(id32(b))),
                    None => None,
                },
                started_at: row.get(5)?,
                finished_at: row.get(6)?,
                failed: row.get_ref(7)?.as_bytes()? == b"failed",
                has_records: row.get(8)?,
                records_doubted: row.get(9)?,
                truncated: false,
                time_suspect: false,
                run_key: some_or_skip!(run_text.push(row.get_ref(2)?.as_str()?)),
                step: some_or_skip!(run_text.push(row.get_ref(3)?.as_str()?)),
            };
        }
        // Few runs are truncated: their flags are read apart from the runs.
        let mut stmt = conn.prepare("SELECT run_id FROM run_truncations")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let id = some_or_skip!(slot(row.get(0)?));
            if let Some(run) = runs.get_mut(id) {
                run.truncated = true;
            }
        }
        // Runs whose times the collector does not believe, as few.
        let mut stmt =
            conn.prepare("SELECT run_id FROM run_receipts WHERE time_suspect IS NOT NULL")?;
        let mut rows = stmt.query([])?;
        let mut suspect = Vec::new();
        while let Some(row) = rows.next()? {
            let id = some_or_skip!(slot(row.get(0)?));
            if let Some(run) = runs.get_mut(id) {
                run.time_suspect = true;
                suspect.push(id as u32);
            }
        }

        let mut artifact_first_seen = vec![0; artifact_slots];
        let mut stmt = conn.prepare("SELECT id, first_seen FROM artifacts")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let id = some_or_skip!(slot(row.get(0)?));
            artifact_first_seen[id] = row.get(1)?;
        }

        let mut tag_text = Text::default();
        let mut tags = Vec::new();
        let mut tag_owner = Vec::new();
        let mut stmt =
            conn.prepare("SELECT artifact_id, tag FROM artifact_tags ORDER BY artifact_id, tag")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            tag_owner.push(slot(row.get(0)?).filter(|&a| a < artifact_slots));
            tags.push(some_or_skip!(tag_text.push(row.get_ref(1)?.as_str()?)));
        }
        let artifact_tags = Groups::build(tag_owner.iter().copied(), |t| tags[t], artifact_slots);

        let mut mounts = vec![None; mount_slots];
        let mut stmt = conn.prepare(
            "SELECT m.id, m.builder_id, b.name, m.namespace, m.mount_id FROM mounts m
             JOIN builders b ON b.id = m.builder_id",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let id: i64 = row.get(0)?;
            mounts[some_or_skip!(slot(id))] = Some(MountInfo {
                id,
                builder: row.get(1)?,
                builder_name: row.get_ref(2)?.as_str()?.into(),
                namespace: row.get_ref(3)?.as_str()?.into(),
                mount_id: row.get_ref(4)?.as_str()?.into(),
            });
        }

        let mut mount_purges: HashMap<i64, Vec<Micros>> = HashMap::new();
        // Whole prunes of each builder, which purge each of its mounts too.
        let mut whole_prunes: HashMap<i64, Vec<Micros>> = HashMap::new();
        let mut stmt =
            conn.prepare("SELECT kind, builder_id, mount, at, records_only FROM purges")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let at: Micros = row.get(3)?;
            match row.get_ref(0)?.as_str()? {
                "mount" => {
                    if let Some(mount) = row.get::<_, Option<i64>>(2)? {
                        mount_purges.entry(mount).or_default().push(at);
                    }
                }
                _ => {
                    let builder: i64 = row.get(1)?;
                    if row.get::<_, i64>(4)? == 0 {
                        whole_prunes.entry(builder).or_default().push(at);
                    }
                }
            }
        }
        for mount in mounts.iter().flatten() {
            if let Some(times) = whole_prunes.get(&mount.builder) {
                mount_purges
                    .entry(mount.id)
                    .or_default()
                    .extend_from_slice(times);
            }
        }
        for times in mount_purges.values_mut() {
            times.sort_unstable();
        }

        let mut unverified: HashMap<u32, (Vec<u32>, Micros)> = HashMap::new();
        for (id, run) in runs.iter().enumerate() {
            let (true, Some(builder)) = (run.present, run.builder) else {
                continue;
            };
            let entry = unverified.entry(builder).or_default();
            entry.1 = entry.1.max(run.finished_at - run.started_at);
            if !run.has_records || run.records_doubted {
                entry.0.push(id as u32);
            }
        }
        for (list, _) in unverified.values_mut() {
            list.sort_by_key(|&r| runs[r as usize].started_at);
        }

        Ok(Some(Self {
            pipelines,
            builders,
            runs,
            run_text,
            artifact_first_seen,
            tag_text,
            artifact_tags,
            mounts,
            mount_purges,
            unverified,
            suspect,
        }))
    }
}

/// The builder records (the columns a trace reads never change), read from their pages (see
/// `schema/migrations/0006_identity_pages.sql`) up to the snapshot's largest id.
struct Records {
    rows: Vec<RecordRow>,
    text: Text,
    types: Vec<String>,
}

impl Records {
    fn load(conn: &Db, slots: &Slots) -> crate::store::db::DbResult<Option<Self>> {
        let mut rows_by_id = vec![RecordRow::default(); slots.records];
        let mut record_text = Text::default();
        let mut record_types = Vec::new();
        let mut record_type_ids = FxHashMap::default();
        // The same step gives the same description on every run: each is kept once.
        let mut descriptions: FxHashMap<Box<str>, Span> = FxHashMap::default();
        let read = read_pages(conn, "record_pages", "records", slots.records, |page| {
            let (id, builder) = (page.number()?, page.number()?);
            let (record_id, record_type, description) = (page.text()?, page.text()?, page.text()?);
            let Some(id) = slot(id).filter(|&id| id < slots.records) else {
                return Some(());
            };
            rows_by_id[id] = RecordRow {
                present: true,
                builder: id32(builder)?,
                record_id: record_text.push(record_id)?,
                record_type: intern(&mut record_types, &mut record_type_ids, record_type)?,
                description: match descriptions.get(description) {
                    Some(&span) => span,
                    None => {
                        let span = record_text.push(description)?;
                        descriptions.insert(description.into(), span);
                        span
                    }
                },
            };
            Some(())
        })?;
        some_or_skip!(read);

        Ok(Some(Self {
            rows: rows_by_id,
            text: record_text,
            types: record_types,
        }))
    }
}

/// The artifacts' columns that never change (they are its identity), read from their pages
/// (see `schema/migrations/0006_identity_pages.sql`) up to the snapshot's largest id.
struct Artifacts {
    rows: Vec<ArtifactRow>,
    /// By artifact id, the bytes of a digest written `sha256:` and 64 lowercase hex digits:
    /// nearly every digest, in less than half the room of its text.
    sha256: Vec<[u8; 32]>,
    text: Text,
    locators: Vec<Arc<str>>,
    by_digest: DigestIndex,
    /// The registry artifacts recorded by tag only, by locator: few, as a hook learns the
    /// digest of nearly everything it records.
    tag_only: FxHashMap<String, Vec<u32>>,
}

impl Artifacts {
    /// The digest of a present artifact, as recorded.
    fn digest(&self, slot: usize, row: &ArtifactRow) -> String {
        if !row.sha256 {
            return self.text.get(row.digest).to_owned();
        }
        let mut hex = [0; 64];
        hex::encode_to_slice(self.sha256[slot], &mut hex).expect("64 digits hold 32 bytes");
        let mut digest = String::with_capacity(SHA256_PREFIX.len() + hex.len());
        digest.push_str(SHA256_PREFIX);
        digest.push_str(std::str::from_utf8(&hex).expect("hex digits are ASCII"));
        digest
    }

    /// Whether a present artifact's digest is `digest`, whose bytes (when it is a `sha256:`
    /// digest in lowercase hex) are `bytes`.
    fn digest_is(
        &self,
        slot: usize,
        row: &ArtifactRow,
        digest: &str,
        bytes: Option<[u8; 32]>,
    ) -> bool {
        if row.sha256 {
            bytes == Some(self.sha256[slot])
        } else {
            self.text.get(row.digest) == digest
        }
    }

    fn load(conn: &Db, slots: &Slots) -> crate::store::db::DbResult<Option<Self>> {
        let mut artifacts = vec![ArtifactRow::default(); slots.artifacts];
        let mut sha256 = vec![[0; 32]; slots.artifacts];
        let mut artifact_text = Text::default();
        let mut locators = Vec::new();
        let mut locator_ids = FxHashMap::default();
        let mut by_digest = Vec::with_capacity(slots.artifacts);
        let mut tag_only: FxHashMap<String, Vec<u32>> = FxHashMap::default();
        let read = read_pages(
            conn,
            "artifact_pages",
            "artifacts",
            slots.artifacts,
            |page| {
                let id = page.number()?;
                let (backend, locator, digest, key) =
                    (page.text()?, page.text()?, page.text()?, page.text()?);
                let Some(id) = id32(id).filter(|&id| (id as usize) < slots.artifacts) else {
                    return Some(());
                };
                let backend = Backend::parse(backend).unwrap_or(Backend::Registry);
                if !digest.is_empty() {
                    by_digest.push((digest_hash(digest), id));
                } else if backend == Backend::Registry {
                    tag_only.entry(locator.to_owned()).or_default().push(id);
                }
                let bytes = sha256_bytes(digest);
                if let Some(bytes) = bytes {
                    sha256[id as usize] = bytes;
                }
                artifacts[id as usize] = ArtifactRow {
                    present: true,
                    backend: BACKENDS.iter().position(|b| *b == backend).unwrap_or(0) as u8,
                    sha256: bytes.is_some(),
                    locator: intern(&mut locators, &mut locator_ids, locator)?,
                    digest: match bytes {
                        Some(_) => Span::default(),
                        None => artifact_text.push(digest)?,
                    },
                    key: artifact_text.push(key)?,
                };
                Some(())
            },
        )?;
        some_or_skip!(read);
        let by_digest = DigestIndex::new(by_digest);
        Ok(Some(Self {
            rows: artifacts,
            sha256,
            text: artifact_text,
            locators,
            by_digest,
            tag_only,
        }))
    }
}

/// Reads a packed table (`column` of `table`, 64 rows to a page by id >> 6): every page that
/// can hold ids below `slots`, each of its entries read by `entry` in turn. `None` when an
/// entry is cut short or a value does not fit its array form.
fn read_pages(
    conn: &Db,
    table: &str,
    column: &str,
    slots: usize,
    mut entry: impl FnMut(&mut Packed<'_>) -> Option<()> + Send,
) -> crate::store::db::DbResult<Option<()>> {
    let last_page = i64::try_from(slots).unwrap_or(i64::MAX).saturating_sub(1) >> 6;
    let sql = format!("SELECT {column} FROM {table} WHERE page <= ?1");
    // Pages are read as they come: the whole table is never held at once.
    let stopped = conn.each_row(&sql, [last_page], |row| {
        let mut page = Packed(row.get_ref(0)?.as_blob()?);
        while !page.0.is_empty() {
            if entry(&mut page).is_none() {
                return Ok(false);
            }
        }
        Ok(true)
    })?;
    Ok((!stopped).then_some(()))
}

/// The rest of a page of packed rows: big-endian numbers, and texts after their length.
struct Packed<'p>(&'p [u8]);

impl<'p> Packed<'p> {
    fn take(&mut self, len: usize) -> Option<&'p [u8]> {
        let (taken, rest) = self.0.split_at_checked(len)?;
        self.0 = rest;
        Some(taken)
    }

    fn byte(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn number(&mut self) -> Option<i64> {
        Some(i64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }

    fn text(&mut self) -> Option<&'p str> {
        let len = u32::from_be_bytes(self.take(4)?.try_into().ok()?);
        std::str::from_utf8(self.take(usize::try_from(len).ok()?)?).ok()
    }
}

/// Interns `value` in `table`.
fn intern<T: for<'v> From<&'v str>>(
    table: &mut Vec<T>,
    seen: &mut FxHashMap<String, u32>,
    value: &str,
) -> Option<u32> {
    if let Some(&id) = seen.get(value) {
        return Some(id);
    }
    let id = u32::try_from(table.len()).ok()?;
    table.push(value.into());
    seen.insert(value.to_owned(), id);
    Some(id)
}

/// Artifact ids by the hash of their digest: the pairs sorted, and where each range of hash
/// prefixes starts among them (about one pair a range).
struct DigestIndex {
    pairs: Vec<(u64, u32)>,
    shift: u32,
    starts: Vec<u32>,
    /// By artifact id, one bit each: no other artifact's digest has the same hash, so no
    /// other artifact has the same digest.
    alone: Vec<u64>,
}

impl DigestIndex {
    fn new(mut pairs: Vec<(u64, u32)>) -> Self {
        pairs.sort_unstable();
        let ids = pairs
            .iter()
            .map(|&(_, id)| id as usize + 1)
            .max()
            .unwrap_or(0);
        let mut alone = vec![0u64; ids.div_ceil(64)];
        for (i, &(hash, id)) in pairs.iter().enumerate() {
            let shared = (i > 0 && pairs[i - 1].0 == hash)
                || pairs.get(i + 1).is_some_and(|next| next.0 == hash);
            if !shared {
                alone[id as usize / 64] |= 1 << (id % 64);
            }
        }
        let bits = (usize::BITS - pairs.len().leading_zeros()).clamp(1, 32);
        let shift = u64::BITS - bits;
        let mut starts = Vec::with_capacity((1 << bits) + 1);
        let mut next = 0;
        for prefix in 0..1u64 << bits {
            while next < pairs.len() && pairs[next].0 >> shift < prefix {
                next += 1;
            }
            starts.push(next as u32);
        }
        starts.push(pairs.len() as u32);
        Self {
            pairs,
            shift,
            starts,
            alone,
        }
    }

    /// Whether the artifact has a digest no other artifact has.
    fn is_alone(&self, artifact: ArtifactId) -> bool {
        usize::try_from(artifact).is_ok_and(|id| {
            self.alone
                .get(id / 64)
                .is_some_and(|word| word >> (id % 64) & 1 == 1)
        })
    }

    /// The artifacts whose digest has this hash.
    fn candidates(&self, hash: u64) -> impl Iterator<Item = u32> + '_ {
        let prefix = (hash >> self.shift) as usize;
        let range = self.starts[prefix] as usize..self.starts[prefix + 1] as usize;
        self.pairs[range]
            .iter()
            .filter(move |&&(h, _)| h == hash)
            .map(|&(_, id)| id)
    }
}

const SHA256_PREFIX: &str = "sha256:";

/// The bytes of a digest written `sha256:` and 64 lowercase hex digits, which they give back
/// exactly; `None` for any other string.
fn sha256_bytes(digest: &str) -> Option<[u8; 32]> {
    if !Digest::is_valid(digest) {
        return None;
    }
    let hex: &[u8; 64] = digest
        .strip_prefix(SHA256_PREFIX)?
        .as_bytes()
        .try_into()
        .ok()?;
    // Every store's load decodes about one digest an artifact: without a branch a digit.
    let nibble = |digit: u8| (digit & 0x0f) + 9 * (digit >> 6);
    let mut bytes = [0; 32];
    for (byte, pair) in bytes.iter_mut().zip(hex.chunks_exact(2)) {
        *byte = nibble(pair[0]) << 4 | nibble(pair[1]);
    }
    Some(bytes)
}

fn digest_hash(digest: &str) -> u64 {
    let mut hasher = FxHasher::default();
    digest.hash(&mut hasher);
    hasher.finish()
}

/// How many array slots a table's ids need, or `None` when they do not fit `u32` positions.
/// Provenance rows are never deleted, so ids are dense.
fn slots(conn: &Db, table: &str) -> crate::store::db::DbResult<Option<usize>> {
    // One aggregate a query: SQLite answers a lone min() or max() from the end of the b-tree.
    let bound = |aggregate: &str| -> crate::store::db::DbResult<i64> {
        conn.query_row(
            &format!("SELECT coalesce({aggregate}(id), 0) FROM {table}"),
            [],
            |row| row.get(0),
        )
    };
    let (min, max) = (bound("min")?, bound("max")?);
    Ok((min >= 0 && id32(max).is_some())
        .then(|| slot(max + 1))
        .flatten())
}

impl Index {
    /// Reads the graph; `None` when it cannot be held as arrays (ids too large). The events,
    /// the artifacts' identities and the builder records are read on a second connection
    /// while `conn` reads the other tables.
    fn load(
        conn: &Db,
        reader: Option<Db>,
        doubted: &str,
    ) -> crate::store::db::DbResult<Option<Self>> {
        let slots = some_or_skip!(Slots::read(conn)?);
        type Appended = (Events, Artifacts, Records);
        let appended = |conn: &Db| -> crate::store::db::DbResult<Option<Appended>> {
            let events = some_or_skip!(Events::load(conn, &slots)?);
            let artifacts = some_or_skip!(Artifacts::load(conn, &slots)?);
            let records = some_or_skip!(Records::load(conn, &slots)?);
            Ok(Some((events, artifacts, records)))
        };
        let (appended, tables) = match reader {
            Some(reader) => std::thread::scope(|scope| {
                let appended = scope.spawn(move || appended(&reader));
                let tables = Tables::load(conn, &slots, doubted);
                (appended.join().expect("loading thread panicked"), tables)
            }),
            None => (appended(conn), Tables::load(conn, &slots, doubted)),
        };
        let (Some((events, artifacts, records)), Some(tables)) = (appended?, tables?) else {
            return Ok(None);
        };
        Ok(Some(Self {
            events,
            records,
            artifacts,
            tables,
            orphans: OnceCell::new(),
        }))
    }

    fn run(&self, id: RunId) -> Option<RunInfo> {
        let row = self.tables.runs.get(slot(id)?).filter(|r| r.present)?;
        Some(RunInfo {
            id,
            pipeline: self.tables.pipelines.get(row.pipeline as usize)?.clone(),
            run_key: self.tables.run_text.get(row.run_key).into(),
            step: self.tables.run_text.get(row.step).into(),
            builder: row.builder.map(i64::from),
            started_at: row.started_at,
            finished_at: row.finished_at,
            status: if row.failed {
                RunStatus::Failed
            } else {
                RunStatus::Succeeded
            },
            has_records: row.has_records,
            records_doubted: row.records_doubted,
            truncated: row.truncated,
            time_suspect: row.time_suspect,
        })
    }

    /// The builder's records that no run recorded creating, in id order: a run whose record
    /// evidence is doubted creates none, whatever it claims (its claim still taints when the
    /// run is tainted, as any creator's).
    fn orphan_records(&self, builder: BuilderId) -> Vec<RecordId> {
        let orphans = self.orphans.get_or_init(|| {
            let doubted = self
                .tables
                .runs
                .iter()
                .any(|r| r.present && r.records_doubted);
            let believed: Option<Vec<u64>> = doubted.then(|| {
                let mut created = vec![0u64; self.events.created.len()];
                for (run, row) in self.tables.runs.iter().enumerate() {
                    if !row.present || row.records_doubted {
                        continue;
                    }
                    for e in self.events.by_run.get(run as i64) {
                        let target = e.target() as usize;
                        if e.kind() == EventKind::CreatedRecord && target / 64 < created.len() {
                            created[target / 64] |= 1u64 << (target % 64);
                        }
                    }
                }
                created
            });
            let created = believed.as_ref().unwrap_or(&self.events.created);
            let mut orphans: FxHashMap<u32, Vec<RecordId>> = FxHashMap::default();
            for (id, row) in self.records.rows.iter().enumerate() {
                if row.present && !has_bit(created, id) {
                    orphans.entry(row.builder).or_default().push(id as RecordId);
                }
            }
            orphans
        });
        id32(builder)
            .and_then(|builder| orphans.get(&builder))
            .cloned()
            .unwrap_or_default()
    }

    fn run_ref(&self, id: u32) -> Option<RunRef> {
        let row = self.tables.runs.get(id as usize).filter(|r| r.present)?;
        Some(RunRef {
            id: i64::from(id),
            started_at: row.started_at,
            finished_at: row.finished_at,
            time_suspect: row.time_suspect,
        })
    }

    fn artifact(&self, id: ArtifactId) -> Option<ArtifactInfo> {
        let slot = slot(id)?;
        let row = self.artifacts.rows.get(slot).filter(|r| r.present)?;
        Some(ArtifactInfo {
            id,
            backend: BACKENDS[row.backend as usize],
            locator: self.artifacts.locators[row.locator as usize].clone(),
            digest: self.artifacts.digest(slot, row),
            key: self.artifacts.text.get(row.key).into(),
            tags: self
                .tables
                .artifact_tags
                .get(id)
                .iter()
                .map(|&t| self.tables.tag_text.get(t).into())
                .collect(),
            first_seen: self.tables.artifact_first_seen[id as usize],
        })
    }

    fn digest_artifacts(&self, digest: &str) -> Vec<ArtifactId> {
        if digest.is_empty() {
            return Vec::new();
        }
        let bytes = sha256_bytes(digest);
        self.artifacts
            .by_digest
            .candidates(digest_hash(digest))
            .filter(|&id| {
                let slot = id as usize;
                self.artifacts
                    .rows
                    .get(slot)
                    .is_some_and(|a| self.artifacts.digest_is(slot, a, digest, bytes))
            })
            .map(i64::from)
            .collect()
    }

    /// The artifacts with a digest, and the runs that read one.
    fn digest_uses(&self, ids: Vec<ArtifactId>) -> DigestUses {
        let readers = ids
            .iter()
            .flat_map(|&artifact| {
                self.artifact_readers(artifact)
                    .into_iter()
                    .map(move |(run, read, at)| (run, read, artifact, at))
            })
            .collect();
        (ids, readers)
    }

    fn artifact_readers(&self, artifact: ArtifactId) -> Vec<(RunRef, ArtifactRead, Micros)> {
        self.events
            .artifact_reads
            .get(artifact)
            .iter()
            .filter_map(|e| {
                let read = match e.kind() {
                    EventKind::UsedBase => ArtifactRead::UsedBase,
                    _ => ArtifactRead::Imported,
                };
                Some((self.run_ref(e.run())?, read, e.at()))
            })
            .collect()
    }

    /// The runs of `events`, with each event's time.
    fn timed_readers(&self, events: &[TargetEvent]) -> Vec<(RunRef, Micros)> {
        events
            .iter()
            .filter_map(|e| Some((self.run_ref(e.run())?, e.at())))
            .collect()
    }
}

fn missing(what: &str, id: i64) -> StoreError {
    StoreError::NotFound(format!("no {what} with id {id}"))
}

impl Source for TraceSource<'_> {
    type Error = StoreError;

    fn pipeline_runs(
        &mut self,
        pipeline: &str,
        since: Option<Micros>,
        until: Option<Micros>,
    ) -> Result<Option<Vec<RunInfo>>, StoreError> {
        self.store.pipeline_runs(pipeline, since, until)
    }

    fn runs_received_since(
        &mut self,
        pipeline: &str,
        at: Micros,
    ) -> Result<Vec<RunInfo>, StoreError> {
        self.store.runs_received_since(pipeline, at)
    }

    fn runs_by_key(&mut self, key: &RunKey) -> Result<Vec<RunInfo>, StoreError> {
        self.store.runs_by_key(key)
    }

    fn artifacts_by_tag(
        &mut self,
        locator: &str,
        tag: &str,
        since: Option<Micros>,
        until: Option<Micros>,
    ) -> Result<Vec<ArtifactInfo>, StoreError> {
        self.store.artifacts_by_tag(locator, tag, since, until)
    }

    fn tag_only_artifacts(
        &mut self,
        locator: &str,
        tag: &str,
    ) -> Result<Vec<ArtifactId>, StoreError> {
        let Some(index) = self.index()? else {
            return self.store.tag_only_artifacts(locator, tag);
        };
        let tables = &index.tables;
        let seen_under = |id: &u32| {
            (tables.artifact_tags.get(i64::from(*id)).iter())
                .any(|&t| tables.tag_text.get(t) == tag)
        };
        let mut ids: Vec<ArtifactId> = (index.artifacts.tag_only.get(locator))
            .into_iter()
            .flatten()
            .filter(|id| seen_under(id))
            .map(|&id| i64::from(id))
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }

    fn mounts_by_name(
        &mut self,
        builder: &str,
        mount_id: &str,
    ) -> Result<Vec<MountInfo>, StoreError> {
        self.store.mounts_by_name(builder, mount_id)
    }

    fn builder_by_name(&mut self, name: &str) -> Result<Option<BuilderInfo>, StoreError> {
        self.store.builder_by_name(name)
    }

    fn first_mount_use(&mut self, mount: MountId) -> Result<Option<Micros>, StoreError> {
        self.store.first_mount_use(mount)
    }

    fn first_builder_use(&mut self, builder: BuilderId) -> Result<Option<Micros>, StoreError> {
        self.store.first_builder_use(builder)
    }

    fn receipt(&mut self, run: RunId) -> Result<Option<Receipt>, StoreError> {
        self.store.receipt(run)
    }

    fn run(&mut self, run: RunId) -> Result<RunInfo, StoreError> {
        match self.index()? {
            Some(index) => index.run(run).ok_or_else(|| missing("run", run)),
            None => self.store.run(run),
        }
    }

    fn writes(&mut self, run: RunId) -> Result<Vec<(Write, Micros)>, StoreError> {
        let Some(index) = self.index()? else {
            return self.store.writes(run);
        };
        Ok(index
            .events
            .by_run
            .get(run)
            .iter()
            .filter_map(|e| {
                let (target, at) = (i64::from(e.target()), e.at());
                let write = match e.kind() {
                    EventKind::Exported => Write::Exported(target),
                    EventKind::Produced => Write::Produced(target),
                    EventKind::WroteMount => Write::Mount(target),
                    EventKind::CreatedRecord => Write::CreatedRecord(target),
                    _ => return None,
                };
                Some((write, at))
            })
            .collect())
    }

    fn digest(&mut self, digest: &str) -> Result<DigestUses, StoreError> {
        let Some(index) = self.index_for(2)? else {
            return self.store.digest(digest);
        };
        let ids = index.digest_artifacts(digest);
        Ok(index.digest_uses(ids))
    }

    fn artifact_digest(
        &mut self,
        artifact: ArtifactId,
        digest: &str,
    ) -> Result<DigestUses, StoreError> {
        let Some(index) = self.index_for(2)? else {
            return self.store.digest(digest);
        };
        let ids = if index.artifacts.by_digest.is_alone(artifact) {
            vec![artifact]
        } else {
            index.digest_artifacts(digest)
        };
        Ok(index.digest_uses(ids))
    }

    fn artifact_readers(
        &mut self,
        artifact: ArtifactId,
    ) -> Result<Vec<(RunRef, ArtifactRead, Micros)>, StoreError> {
        match self.index()? {
            Some(index) => Ok(index.artifact_readers(artifact)),
            None => self.store.artifact_readers(artifact),
        }
    }

    fn mount_readers(
        &mut self,
        mount: MountId,
        since: Micros,
    ) -> Result<Vec<(RunRef, Micros)>, StoreError> {
        let Some(index) = self.index()? else {
            return self.store.mount_readers(mount, since);
        };
        let events = index.events.mount_reads.get(mount);
        let first = events.partition_point(|e| e.at() < since);
        let mut readers = index.timed_readers(&events[first..]);
        // Time-suspect runs that claim to have read it earlier.
        for &run in &index.tables.suspect {
            let read = index.events.by_run.get(i64::from(run)).iter().find(|e| {
                e.kind() == EventKind::ReadMount && i64::from(e.target()) == mount && e.at() < since
            });
            if let (Some(read), Some(reader)) = (read, index.run_ref(run)) {
                readers.push((reader, read.at()));
            }
        }
        Ok(readers)
    }

    fn mount_read(&mut self, run: RunId, mount: MountId) -> Result<Option<Micros>, StoreError> {
        let Some(index) = self.index()? else {
            return self.store.mount_read(run, mount);
        };
        Ok(index
            .events
            .by_run
            .get(run)
            .iter()
            .find(|e| e.kind() == EventKind::ReadMount && i64::from(e.target()) == mount)
            .map(|e| e.at()))
    }

    fn mount_purges(&mut self, mount: MountId) -> Result<Vec<Micros>, StoreError> {
        match self.index()? {
            Some(index) => Ok(index
                .tables
                .mount_purges
                .get(&mount)
                .cloned()
                .unwrap_or_default()),
            None => self.store.mount_purges(mount),
        }
    }

    /// Always asked of the store: a trace meets few builders, and a selective prune's named
    /// records are read with it.
    fn builder_purges(&mut self, builder: BuilderId) -> Result<Vec<BuilderPrune>, StoreError> {
        self.store.builder_purges(builder)
    }

    /// Always asked of the store: only the few purges a trace applied are described.
    fn purges_at(&mut self, node: Purged, at: Micros) -> Result<Vec<StoredPurge>, StoreError> {
        self.store.purges_at(node, at)
    }

    fn orphan_records(&mut self, builder: BuilderId) -> Result<Vec<RecordId>, StoreError> {
        // The store finds them with a lookup per record the builder holds, which twenty
        // count as one query (measured): a builder with many records is read from the loaded
        // graph.
        let queries = match (&self.index, self.budget) {
            (None, Some(_)) => usize::try_from(self.store.builder_record_count(builder)? / 20)
                .unwrap_or(usize::MAX)
                .max(1),
            _ => 1,
        };
        if let Some(left) = self.budget
            && queries >= left
        {
            self.budget = Some(0);
        }
        match self.index_for(queries)? {
            Some(index) => Ok(index.orphan_records(builder)),
            None => self.store.orphan_records(builder),
        }
    }

    fn record_cocreators(&mut self, record: RecordId) -> Result<Vec<(RunRef, Micros)>, StoreError> {
        if let Some(index) = self.index()? {
            let cocreated = usize::try_from(record)
                .is_ok_and(|record| has_bit(&index.events.cocreated, record));
            if !cocreated {
                return Ok(Vec::new());
            }
        }
        self.store.record_cocreators(record)
    }

    fn manifest_deleted_at(
        &mut self,
        locator: &str,
        digest: &str,
    ) -> Result<Option<Micros>, StoreError> {
        self.store.manifest_deleted_at(locator, digest)
    }

    fn suspect_sighting(&mut self, artifact: ArtifactId) -> Result<bool, StoreError> {
        self.store.suspect_sighting(artifact)
    }

    fn named_after(&mut self, artifact: ArtifactId, at: Micros) -> Result<bool, StoreError> {
        self.store.named_after(artifact, at)
    }

    fn record_reusers(&mut self, record: RecordId) -> Result<Vec<(RunRef, Micros)>, StoreError> {
        match self.index()? {
            Some(index) => Ok(index.timed_readers(index.events.record_reuses.get(record))),
            None => self.store.record_reusers(record),
        }
    }

    fn record_first_reuse(&mut self, record: RecordId) -> Result<Option<Micros>, StoreError> {
        match self.index()? {
            Some(index) => Ok((index.events.record_reuses.get(record).iter())
                .filter(|e| index.run_ref(e.run()).is_some())
                .map(|e| e.at())
                .min()),
            None => self.store.record_first_reuse(record),
        }
    }

    fn unverified_builder_runs(
        &mut self,
        builder: BuilderId,
        since: Micros,
    ) -> Result<Vec<RunRef>, StoreError> {
        let Some(index) = self.index()? else {
            return self.store.unverified_builder_runs(builder, since);
        };
        let Some((runs, longest)) = id32(builder).and_then(|b| index.tables.unverified.get(&b))
        else {
            return Ok(Vec::new());
        };
        let lower = since.saturating_sub(*longest);
        let first = runs.partition_point(|&r| index.tables.runs[r as usize].started_at < lower);
        let rows = &index.tables.runs;
        let in_range = |r: u32| {
            let row = &rows[r as usize];
            row.started_at >= lower && row.finished_at >= since
        };
        // Time-suspect runs on the builder, whatever times they claim.
        let suspect = index.tables.suspect.iter().copied().filter(|&r| {
            let row = &rows[r as usize];
            row.builder == id32(builder)
                && (!row.has_records || row.records_doubted)
                && !in_range(r)
        });
        Ok(runs[first..]
            .iter()
            .copied()
            .filter(|&r| rows[r as usize].finished_at >= since)
            .chain(suspect)
            .filter_map(|r| index.run_ref(r))
            .collect())
    }

    fn builder_record_users(
        &mut self,
        builder: BuilderId,
        since: Micros,
    ) -> Result<Vec<(RunRef, Micros)>, StoreError> {
        // Asked once per seeded builder: the query is cheap enough.
        self.store.builder_record_users(builder, since)
    }

    fn artifact(&mut self, artifact: ArtifactId) -> Result<ArtifactInfo, StoreError> {
        match self.index()? {
            Some(index) => index
                .artifact(artifact)
                .ok_or_else(|| missing("artifact", artifact)),
            None => self.store.artifact(artifact),
        }
    }

    fn mount(&mut self, mount: MountId) -> Result<MountInfo, StoreError> {
        match self.index()? {
            Some(index) => slot(mount)
                .and_then(|m| index.tables.mounts.get(m).cloned().flatten())
                .ok_or_else(|| missing("mount", mount)),
            None => self.store.mount(mount),
        }
    }

    fn builder(&mut self, builder: BuilderId) -> Result<BuilderInfo, StoreError> {
        match self.index()? {
            Some(index) => slot(builder)
                .and_then(|b| index.tables.builders.get(b).cloned().flatten())
                .map(|name| BuilderInfo { id: builder, name })
                .ok_or_else(|| missing("builder", builder)),
            None => self.store.builder(builder),
        }
    }

    fn record(&mut self, record: RecordId) -> Result<RecordInfo, StoreError> {
        if self.index()?.is_none() {
            return self.store.record(record);
        }
        if self.described.is_none() {
            self.described = Some(self.store.record_descriptions()?);
        }
        let index = self.index.as_ref().expect("the graph is loaded");
        let row = slot(record)
            .and_then(|r| index.records.rows.get(r))
            .filter(|r| r.present)
            .ok_or_else(|| missing("builder record", record))?;
        let mut info = RecordInfo {
            id: record,
            builder: i64::from(row.builder),
            record_id: index.records.text.get(row.record_id).into(),
            record_type: index.records.types[row.record_type as usize]
                .as_str()
                .into(),
            description: self
                .descriptions
                .entry((row.description.start, row.description.end))
                .or_insert_with(|| index.records.text.get(row.description).into())
                .clone(),
            doubted: false,
        };
        // A record a doubted run named first: in a believed run's words since, else doubted.
        match self.described.as_ref().and_then(|d| d.get(&record)) {
            Some(Some((record_type, description))) => {
                info.record_type = record_type.as_str().into();
                info.description = description.as_str().into();
            }
            Some(None) => info.doubted = true,
            None => {}
        }
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::trace::Format as TraceFormat;
    use crate::store::db::OptionalExtension;
    use proptest::prelude::*;

    use crate::graph::mem::{Event, History};
    use crate::graph::tests::{arb_history, t};
    use crate::graph::{self, Seeds, TraceOptions};
    use crate::model::{PurgeMethod, PurgeProvenance, PurgeTarget};
    use crate::store::write::kind;
    use crate::time;

    fn manual() -> PurgeProvenance {
        PurgeProvenance {
            method: PurgeMethod::Manual,
            author: "tester@host".into(),
            forced: false,
            reason: None,
            source: "test".into(),
            action: None,
            claimed: None,
        }
    }

    /// Imports a provenance file as `cachewarden import` does: batches of lines, each in one
    /// transaction, on a connection of its own.
    fn import(db: &str, file: &str) {
        let lines = std::fs::read_to_string(file).unwrap();
        let items: Vec<crate::store::ImportItem> = lines
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| crate::wire::provenance::parse_line(line).unwrap())
            .collect();
        let mut store = Store::open(std::path::Path::new(db)).unwrap();
        store.bulk(true).unwrap();
        for (i, batch) in items.chunks(50_000).enumerate() {
            store
                .import_batch(batch, 1 + i * 50_000, &crate::config::Config::default())
                .unwrap();
        }
        store.bulk(false).unwrap();
        store.optimize().unwrap();
    }

    /// The seeds the `trace` flags in `args` give.
    fn seeds(args: &[&str]) -> Seeds {
        let mut spec = graph::SeedSpec::default();
        for pair in args.chunks(2) {
            let value = pair[1].to_owned();
            match pair[0] {
                "--pipeline" => spec.pipelines.push(value),
                "--run" => spec.runs.push(value),
                "--cache-ref" => spec.cache_refs.push(value),
                "--mount" => spec.mounts.push(value),
                "--builder" => spec.builders.push(value),
                "--image" => spec.images.push(value),
                "--since" => spec.since = Some(value),
                "--until" => spec.until = Some(value),
                flag => unreachable!("{flag}"),
            }
        }
        Seeds::from_spec(&spec).unwrap()
    }

    /// The trace as JSON, answered with the given budget of queries before the graph loads.
    fn traced(
        store: &mut Store,
        seeds: &Seeds,
        ignore_time: bool,
        budget: Option<usize>,
    ) -> String {
        let (loaded, json) = traced_loading(store, seeds, ignore_time, budget);
        assert_eq!(loaded, budget.is_some_and(|b| b < 1000));
        json
    }

    /// The trace as JSON, and whether it loaded the whole graph.
    fn traced_loading(
        store: &mut Store,
        seeds: &Seeds,
        ignore_time: bool,
        budget: Option<usize>,
    ) -> (bool, String) {
        let (loaded, trace) = store
            .read_snapshot(|store| {
                let mut source = TraceSource::with_budget(store, budget);
                let trace = graph::trace(
                    &mut source,
                    seeds,
                    TraceOptions {
                        ignore_time,
                        ..TraceOptions::default()
                    },
                );
                (source.loaded(), trace)
            })
            .unwrap();
        let mut out = Vec::new();
        crate::report::trace::write(&trace.unwrap(), TraceFormat::Json, &mut out).unwrap();
        (loaded, String::from_utf8(out).unwrap())
    }

    /// Events, artifacts and builder records recorded after a trace's snapshot was taken, and
    /// later sightings of its artifacts, are not part of its graph, though they are read on
    /// another connection.
    #[test]
    fn rows_after_the_snapshot_are_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let (x, y) = (
            format!("reg.io/x:t@sha256:{}", "a".repeat(64)),
            format!("reg.io/y@sha256:{}", "b".repeat(64)),
        );
        let line = |run: &str, day: &str, imported: &[&str]| {
            format!(
                r#"{{"v":1,"type":"run","pipeline":"p","run":"{run}","step":"s","builder":"b","started_at":"{day}T00:00:00Z","finished_at":"{day}T00:01:00Z","mounts":[{{"id":"/m"}}],"imported":{},"records":{{"created":[{{"id":"r{run}","type":"regular","description":"RUN {run}"}}]}}}}"#,
                serde_json::to_string(imported).unwrap()
            )
        };
        let file = dir.path().join("h.jsonl");
        std::fs::write(&file, line("1", "2026-01-01", &[&x]) + "\n").unwrap();
        let db = path.to_str().unwrap();
        import(db, file.to_str().unwrap());
        let mut store = Store::open(&path).unwrap();
        store
            .read_snapshot(|store| {
                let before: i64 = store
                    .conn
                    .query_row("SELECT count(*) FROM events", [], |row| row.get(0))
                    .unwrap();
                // A run seen earlier, that imported `x` and a new artifact `y`.
                std::fs::write(&file, line("2", "2025-12-01", &[&x, &y]) + "\n").unwrap();
                import(db, file.to_str().unwrap());
                let index = Index::load(&store.conn, appended_reader(&path, Access::Write), "")
                    .unwrap()
                    .unwrap();
                // `x` keeps the first sighting of the snapshot; `y` is not there.
                assert_eq!(
                    index.artifact(1).unwrap().first_seen,
                    time::parse_rfc3339("2026-01-01T00:01:00Z", "t").unwrap()
                );
                assert!(index.artifact(2).is_none());
                // The first run's record is there; the second run's is not.
                assert_eq!(index.records.rows.len(), 2);
                assert_eq!(
                    index.records.text.get(index.records.rows[1].record_id),
                    "r1"
                );
                assert!(
                    index
                        .digest_artifacts(&format!("sha256:{}", "b".repeat(64)))
                        .is_empty()
                );
                // The run's own `ran_on` event is not kept.
                assert_eq!(index.events.count as i64, before - 1);
                let events = &index.events;
                let runs = events.by_run.offsets.len() - 1;
                assert!((0..runs as i64).all(|r| r == 1 || events.by_run.get(r).is_empty()));
                for reads in [
                    &events.artifact_reads,
                    &events.mount_reads,
                    &events.record_reuses,
                ] {
                    assert!(reads.items.iter().all(|e| e.run() == 1));
                }
                let reader = appended_reader(&path, Access::Write).unwrap();
                let now: i64 = reader
                    .query_row("SELECT count(*) FROM events", [], |row| row.get(0))
                    .unwrap();
                assert!(now > before, "the second import was committed");
                let (seen, artifacts): (i64, i64) = reader
                    .query_row(
                        "SELECT min(first_seen), count(*) FROM artifacts",
                        [],
                        |row| Ok((row.get(0)?, row.get(1)?)),
                    )
                    .unwrap();
                assert_eq!(artifacts, 2);
                assert_eq!(
                    seen,
                    time::parse_rfc3339("2025-12-01T00:01:00Z", "t").unwrap()
                );
                let records: i64 = reader
                    .query_row("SELECT count(*) FROM builder_records", [], |row| row.get(0))
                    .unwrap();
                assert_eq!(records, 2, "the second run's record was committed");
            })
            .unwrap();
    }

    /// A trace answered from memory, from the first expansion or part way through, is the
    /// trace the indexed queries give: same entities, times and evidence.
    #[test]
    fn memory_answers_as_the_queries_do() {
        let dir = tempfile::tempdir().unwrap();
        let (fleet, db) = (dir.path().join("fleet.jsonl"), dir.path().join("db"));
        let (fleet, db) = (fleet.to_str().unwrap(), db.to_str().unwrap());
        let mut out = std::io::BufWriter::new(std::fs::File::create(fleet).unwrap());
        crate::commands::bench::write_fleet(
            &crate::commands::bench::Fleet {
                shape: crate::commands::bench::Shape::Default,
                runs: 3000,
                pipelines: 60,
                builders: 5,
                mounts: 150,
                seed: 7,
                year: 0,
            },
            &mut out,
        )
        .unwrap();
        std::io::Write::flush(&mut out).unwrap();
        drop(out);
        // Runs without record evidence that overlap a tainted run on its builder.
        let overlapping = [
            ("overlap-seed", "1", "00:00", "00:05"),
            ("overlap", "early", "23:30", "00:30"),
            ("overlap", "before", "22:00", "23:00"),
            ("overlap", "late", "01:00", "01:10"),
        ];
        let mut lines = std::fs::read_to_string(fleet).unwrap();
        for (pipeline, run, start, finish) in overlapping {
            let day = |at: &str| {
                if at < "12:00" {
                    "2026-06-02"
                } else {
                    "2026-06-01"
                }
            };
            lines.push_str(&format!(
                "{{\"v\": 1, \"type\": \"run\", \"pipeline\": \"{pipeline}\", \"run\": \"{run}\", \"step\": \"s\", \"builder\": \"b1\", \"started_at\": \"{}T{start}:00Z\", \"finished_at\": \"{}T{finish}:00Z\"}}\n",
                day(start),
                day(finish)
            ));
        }
        std::fs::write(fleet, lines).unwrap();
        import(db, fleet);
        let mut store = Store::open(std::path::Path::new(db)).unwrap();
        // Purges of some mounts and one builder, half way through the year.
        let (mounts, middle): (Vec<(String, String)>, Micros) = {
            let mut stmt = store
                .conn
                .prepare(
                    "SELECT b.name, m.mount_id FROM mounts m JOIN builders b ON b.id = m.builder_id
                     WHERE m.id % 5 = 0",
                )
                .unwrap();
            let mounts = stmt
                .query_map([], |row| row.try_into())
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            let middle = store
                .conn
                .query_row(
                    "SELECT (min(started_at) + max(started_at)) / 2 FROM runs",
                    [],
                    |row| row.get(0),
                )
                .unwrap();
            (mounts, middle)
        };
        for (builder, mount) in &mounts {
            let target = PurgeTarget::Mount {
                builder: builder.clone(),
                mount: mount.clone(),
                namespace: String::new(),
            };
            store.record_purge(&target, middle, &manual()).unwrap();
        }
        let target = PurgeTarget::Builder {
            builder: "b2".to_owned(),
            records_only: false,
            selective: None,
        };
        store.record_purge(&target, middle + 1, &manual()).unwrap();
        let (digest, image): (String, String) = store
            .conn
            .query_row(
                "SELECT (SELECT digest FROM artifacts WHERE locator LIKE '%/cache' ORDER BY id LIMIT 1 OFFSET 500),
                        (SELECT locator || '@' || digest FROM artifacts
                         WHERE id IN (SELECT target FROM events WHERE kind = 'used_base') ORDER BY id LIMIT 1 OFFSET 3)",
                [],
                |row| row.try_into(),
            )
            .unwrap();
        let (builder, mount) = &mounts[3];
        let mount_seed = format!("{builder}:{mount}");
        let cases: Vec<Vec<&str>> = vec![
            vec!["--pipeline", "overlap-seed"],
            vec!["--pipeline", "p7"],
            vec!["--pipeline", "p50"],
            vec!["--pipeline", "p0", "--pipeline", "p33"],
            vec!["--builder", "b2"],
            vec!["--builder", "b4"],
            vec!["--mount", &mount_seed],
            vec!["--cache-ref", &digest],
            vec!["--image", &image],
        ];
        for case in cases {
            let seeds = seeds(&case);
            for ignore_time in [false, true] {
                let queried = traced(&mut store, &seeds, ignore_time, None);
                assert!(queried.contains("\"runs\": ["), "{case:?}");
                if case == ["--pipeline", "overlap-seed"] {
                    assert!(queried.contains("run:overlap/early/s"), "{queried}");
                    assert!(!queried.contains("run:overlap/before/s") || ignore_time);
                }
                for budget in [0, 30] {
                    let loaded = traced(&mut store, &seeds, ignore_time, Some(budget));
                    assert!(
                        queried == loaded,
                        "{case:?} ignore_time={ignore_time} budget={budget}: the traces differ"
                    );
                }
            }
        }
        // Each builder's records that no run recorded creating, and a builder with none.
        let builders: Vec<i64> = (0..8).collect();
        let queried: Vec<Vec<RecordId>> = builders
            .iter()
            .map(|&b| graph::Source::orphan_records(&mut store, b).unwrap())
            .collect();
        assert!(queried.iter().filter(|r| !r.is_empty()).count() > 1);
        let mut source = TraceSource::with_budget(&mut store, Some(0));
        for (&builder, queried) in builders.iter().zip(&queried) {
            let loaded = graph::Source::orphan_records(&mut source, builder).unwrap();
            assert_eq!(&loaded, queried, "orphan records of builder {builder}");
        }
        assert!(source.loaded());
    }

    /// Ids up to the widest that fits beside an event's kind keep their kind, id and time in
    /// the 12-byte form; one wider is not taken.
    #[test]
    fn grouped_events_keep_every_kind_up_to_the_widest_id() {
        let widest = (1_i64 << EVENT_ID_BITS) - 1;
        assert_eq!(event_id(widest), Some(widest as u32));
        assert_eq!(event_id(widest + 1), None);
        assert_eq!(event_id(-1), None);
        assert!(fits_events(1 << EVENT_ID_BITS) && !fits_events((1 << EVENT_ID_BITS) + 1));
        assert_eq!(std::mem::size_of::<RunEvent>(), 12);
        for code in 0..=8 {
            let kind = EventKind::from_code(code);
            assert_eq!(kind.code(), code);
            for (id, at) in [(0, i64::MIN), (1, -5), (widest as u32, i64::MAX)] {
                let run = RunEvent(Grouped::new(kind, id, at));
                assert!(run.kind() == kind && run.target() == id && run.at() == at);
                let target = TargetEvent(Grouped::new(kind, id, at));
                assert!(target.kind() == kind && target.run() == id && target.at() == at);
            }
        }
    }

    /// An event naming an id too wide to be held beside its kind leaves the graph unloaded,
    /// before anything is allocated for it: the trace is answered by queries, and answers the
    /// same.
    #[test]
    fn an_event_id_too_wide_for_memory_keeps_the_trace_on_queries() {
        let dir = tempfile::tempdir().unwrap();
        let (fleet, db) = (dir.path().join("fleet.jsonl"), dir.path().join("db"));
        let mut out = Vec::new();
        crate::commands::bench::write_fleet(
            &crate::commands::bench::Fleet {
                shape: crate::commands::bench::Shape::Shared,
                runs: 400,
                pipelines: 8,
                builders: 3,
                mounts: 10,
                seed: 3,
                year: 0,
            },
            &mut out,
        )
        .unwrap();
        std::fs::write(&fleet, out).unwrap();
        let (fleet, db) = (fleet.to_str().unwrap(), db.to_str().unwrap());
        import(db, fleet);
        let mut store = Store::open(std::path::Path::new(db)).unwrap();
        let seeds = seeds(&["--pipeline", "p3"]);
        let before = traced(&mut store, &seeds, false, Some(0));
        // One past the widest id that fits: an artifact the first run of p3 exported.
        let id = 1_i64 << EVENT_ID_BITS;
        store
            .conn
            .execute_batch(&format!(
                "INSERT INTO artifacts (id, backend, locator, digest, key, first_seen)
                 VALUES ({id}, 'registry', 'reg.io/wide', 'sha256:{id:064x}', '', 7);
                 INSERT INTO events (run_id, kind, target, at)
                 SELECT min(r.id), 'exported', {id}, min(r.started_at) FROM runs r
                 JOIN pipelines p ON p.id = r.pipeline_id WHERE p.name = 'p3';"
            ))
            .unwrap();
        let queried = traced(&mut store, &seeds, false, None);
        let (loaded, json) = traced_loading(&mut store, &seeds, false, Some(0));
        assert!(!loaded);
        assert_eq!(json, queried);
        assert_ne!(queried, before);
        assert!(queried.contains(&format!("sha256:{id:064x}")));
    }

    /// A store holding one id far above its other rows (an edited file, or ids drawn and never
    /// used) is traced on queries, with the same answers, instead of sizing the graph's arrays
    /// by that id; a table's ids are counted only when its arrays would outgrow the store.
    #[test]
    fn an_id_far_above_its_rows_keeps_the_trace_on_queries() {
        let dir = tempfile::tempdir().unwrap();
        let fleet = dir.path().join("fleet.jsonl");
        let mut out = Vec::new();
        crate::commands::bench::write_fleet(
            &crate::commands::bench::Fleet {
                shape: crate::commands::bench::Shape::Shared,
                runs: 300,
                pipelines: 6,
                builders: 3,
                mounts: 10,
                seed: 5,
                year: 0,
            },
            &mut out,
        )
        .unwrap();
        std::fs::write(&fleet, out).unwrap();
        let seeds = seeds(&["--pipeline", "p3"]);
        // An event 2^27 (2 GiB of arrays in a store of a few MiB), and a pipeline 2^31.
        let event = 1_i64 << 27;
        let forged = [
            format!(
                "INSERT INTO artifacts (backend, locator, digest, key, first_seen)
                 VALUES ('registry', 'reg.io/far', 'sha256:{event:064x}', '', 7);
                 INSERT INTO events (id, run_id, kind, target, at)
                 SELECT {event}, min(r.id), 'exported', (SELECT max(id) FROM artifacts),
                        min(r.started_at)
                 FROM runs r JOIN pipelines p ON p.id = r.pipeline_id WHERE p.name = 'p3';"
            ),
            format!(
                "INSERT INTO pipelines (id, name) VALUES ({}, 'far')",
                1_i64 << 31
            ),
        ];
        for (n, sql) in forged.iter().enumerate() {
            let db = dir.path().join(format!("db{n}"));
            let db = db.to_str().unwrap();
            import(db, fleet.to_str().unwrap());
            let mut store = Store::open(std::path::Path::new(db)).unwrap();
            let before = traced(&mut store, &seeds, false, Some(0));
            // Counted even though the arrays are small: dense ids pass.
            let counted = |store: &Store| {
                Slots::read_within(&store.conn, 0)
                    .unwrap()
                    .map(|slots| slots.events)
            };
            let events: usize = store
                .conn
                .query_row("SELECT max(id) + 1 FROM events", [], |row| row.get(0))
                .unwrap();
            assert_eq!(counted(&store), Some(events));
            store.conn.execute_batch(sql).unwrap();
            assert_eq!(counted(&store), None, "{sql}");
            let queried = traced(&mut store, &seeds, false, None);
            let (loaded, json) = traced_loading(&mut store, &seeds, false, Some(0));
            assert!(!loaded, "{sql}");
            assert_eq!(json, queried);
            assert_eq!(
                queried.contains(&format!("sha256:{event:064x}")),
                n == 0,
                "{sql}"
            );
            assert_eq!(queried == before, n == 1, "{sql}");
        }
    }

    /// Loading the graph leaves the store's pages unmapped and its page cache small: the
    /// trace's peak memory holds the arrays, not a mapped copy of the file besides.
    #[test]
    fn loading_the_graph_unmaps_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let (fleet, db) = (dir.path().join("fleet.jsonl"), dir.path().join("db"));
        let (fleet, db) = (fleet.to_str().unwrap(), db.to_str().unwrap());
        let mut out = std::io::BufWriter::new(std::fs::File::create(fleet).unwrap());
        crate::commands::bench::write_fleet(
            &crate::commands::bench::Fleet {
                shape: crate::commands::bench::Shape::Shared,
                runs: 200,
                pipelines: 10,
                builders: 5,
                mounts: 0,
                seed: 3,
                year: 0,
            },
            &mut out,
        )
        .unwrap();
        std::io::Write::flush(&mut out).unwrap();
        drop(out);
        import(db, fleet);
        let mut store = Store::open_read_only(std::path::Path::new(db)).unwrap();
        let pragma = |store: &Store, name: &str| -> i64 {
            let conn = store.conn.sqlite().unwrap();
            conn.query_row(&format!("PRAGMA {name}"), [], |row| row.get(0))
                .unwrap()
        };
        assert!(pragma(&store, "mmap_size") > 0);
        let seeds = seeds(&["--pipeline", "p1"]);
        traced(&mut store, &seeds, false, Some(0));
        assert_eq!(pragma(&store, "mmap_size"), 0);
        assert_eq!(pragma(&store, "cache_size"), -8192);
    }

    /// Reads an imported store back as a hand-built history: the same ids, values and events
    /// (each at the time the store holds for it, which the history derives from its run).
    fn read_history(store: &mut Store) -> History {
        let count = |store: &Store, table: &str| -> i64 {
            let (n, max): (i64, Option<i64>) = store
                .conn
                .query_row(
                    &format!("SELECT count(*), max(id) FROM {table}"),
                    [],
                    |row| row.try_into(),
                )
                .unwrap();
            assert_eq!(max.unwrap_or(0), n, "{table} ids are dense from 1");
            n
        };
        let mut h = History::new();
        for id in 1..=count(store, "builders") {
            h.builders.push(Source::builder(store, id).unwrap());
        }
        for id in 1..=count(store, "runs") {
            h.runs.push(Source::run(store, id).unwrap());
        }
        for id in 1..=count(store, "artifacts") {
            let info = Source::artifact(store, id).unwrap();
            h.artifacts.push(ArtifactInfo {
                first_seen: Micros::MAX,
                ..info
            });
        }
        for id in 1..=count(store, "mounts") {
            h.mounts.push(Source::mount(store, id).unwrap());
        }
        for id in 1..=count(store, "builder_records") {
            h.records.push(Source::record(store, id).unwrap());
        }
        let mut stmt = store
            .conn
            .prepare("SELECT run_id, kind, target, at FROM events WHERE kind <> ?1 ORDER BY id")
            .unwrap();
        let rows: Vec<(i64, String, i64, i64)> = stmt
            .query_map([kind::RAN_ON], |row| row.try_into())
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        for (run, kind, target, at) in rows {
            let event = match kind.as_str() {
                kind::IMPORTED => Event::Imported(target),
                kind::USED_BASE => Event::UsedBase(target),
                kind::EXPORTED => Event::Exported(target),
                kind::PRODUCED => Event::Produced(target),
                kind::READ_MOUNT => Event::ReadMount(target),
                kind::WROTE_MOUNT => Event::WroteMount(target),
                kind::CREATED_RECORD => Event::CreatedRecord(target),
                kind::REUSED_RECORD => Event::ReusedRecord(target),
                other => panic!("unexpected event kind `{other}`"),
            };
            h.events.push((run, event));
            assert_eq!(h.at(run, event), at, "event time of run {run}");
        }
        let mut stmt = store
            .conn
            .prepare(
                "SELECT id, builder_id, mount, at, records_only, selective, records_since,
                        records_skew
                 FROM purges ORDER BY id",
            )
            .unwrap();
        type PurgeRow = (i64, i64, Option<i64>, i64, i64, i64, Option<i64>, i64);
        let purges: Vec<PurgeRow> = stmt
            .query_map([], |row| row.try_into())
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        for (id, builder, mount, at, records_only, selective, since, skew) in purges {
            match mount {
                Some(mount) => h.mount_purges.push((mount, at)),
                None => {
                    let selective = (selective != 0).then(|| {
                        let mut records: Vec<i64> = store
                            .conn
                            .prepare("SELECT record FROM purge_records WHERE purge_id = ?1")
                            .unwrap()
                            .query_map([id], |row| row.get(0))
                            .unwrap()
                            .collect::<Result<_, _>>()
                            .unwrap();
                        records.sort_unstable();
                        crate::graph::source::Selective {
                            records,
                            since,
                            skew,
                        }
                    });
                    h.builder_prunes.push(crate::graph::mem::Pruned {
                        builder,
                        at,
                        records_only: records_only != 0,
                        selective,
                    });
                }
            }
        }
        h
    }

    /// On a generated fleet of the shared shape (shared mount ids on shared builders, records
    /// reused across pipelines, overlapping runs), a pipeline compromised from mid-year taints
    /// what the rules applied naively taint, from the same times, and the store answers as
    /// memory does, from indexed queries and from the loaded graph.
    #[test]
    fn a_shared_fleet_traces_as_the_rules_and_memory_do() {
        use std::collections::BTreeMap;
        let dir = tempfile::tempdir().unwrap();
        let (fleet, db) = (dir.path().join("fleet.jsonl"), dir.path().join("db"));
        let (fleet, db) = (fleet.to_str().unwrap(), db.to_str().unwrap());
        let mut out = std::io::BufWriter::new(std::fs::File::create(fleet).unwrap());
        let summary = crate::commands::bench::write_fleet(
            &crate::commands::bench::Fleet {
                shape: crate::commands::bench::Shape::Shared,
                runs: 500,
                pipelines: 25,
                builders: 5,
                mounts: 0,
                seed: 11,
                year: 0,
            },
            &mut out,
        )
        .unwrap();
        std::io::Write::flush(&mut out).unwrap();
        drop(out);
        import(db, fleet);
        let mut store = Store::open(std::path::Path::new(db)).unwrap();
        // A purge of a shared mount and a prune of a builder, a quarter into the year, recorded
        // as the memory source describes them.
        let quarter = time::parse_rfc3339("2026-04-01T00:00:00Z", "t").unwrap();
        store
            .conn
            .execute(
                "INSERT INTO purges (kind, builder_id, mount, at, method, author, recorded_at)
                 SELECT 'mount', builder_id, id, ?1, 'manual', 'tester@host', ?1 FROM mounts
                 WHERE builder_id = (SELECT id FROM builders WHERE name = 'b1')
                   AND mount_id = '/root/.cache/pip'",
                [quarter],
            )
            .unwrap();
        store
            .conn
            .execute(
                "INSERT INTO purges (kind, builder_id, at, method, author, recorded_at)
                 SELECT 'builder', id, ?1, 'manual', 'tester@host', ?1 FROM builders
                 WHERE name = 'b4'",
                [quarter + 1],
            )
            .unwrap();
        let history = read_history(&mut store);
        let mid = time::parse_rfc3339("2026-07-01T00:00:00Z", "t").unwrap();
        for (pipeline, since) in [("p3", Some(mid)), ("p7", None)] {
            let mut args = vec!["--pipeline", pipeline];
            let formatted = since.map(time::format);
            if let Some(since) = &formatted {
                args.extend(["--since", since]);
            }
            let seeds = seeds(&args);
            let resolved = crate::graph::oracle::OracleSeeds {
                runs: history
                    .runs
                    .iter()
                    .filter(|r| r.pipeline == pipeline && since.is_none_or(|s| r.started_at >= s))
                    .map(|r| r.id)
                    .collect(),
                ..Default::default()
            };
            for ignore_time in [false, true] {
                let options = TraceOptions {
                    ignore_time,
                    ..TraceOptions::default()
                };
                let aware = graph::trace(&mut history.clone(), &seeds, options).unwrap();
                let mut tainted = BTreeMap::new();
                for kind in graph::Kind::ALL {
                    for entry in aware.tainted(kind) {
                        tainted.insert(entry.name().to_string(), entry.tainted_at);
                    }
                }
                let expected = crate::graph::oracle::times(&history, &resolved, ignore_time);
                assert_eq!(tainted, expected, "{args:?} ignore_time={ignore_time}");
                let runs = tainted.keys().filter(|n| n.starts_with("run:")).count();
                if since.is_some() && !ignore_time {
                    // The shape's point: from mid-year, about half the fleet.
                    assert!(
                        (200..=300).contains(&runs),
                        "{runs} runs tainted; {summary}"
                    );
                }
                let memory = json_or_error(&mut history.clone(), &seeds, ignore_time);
                for budget in [None, Some(0)] {
                    let traced = store
                        .read_snapshot(|store| {
                            let mut source = TraceSource::with_budget(store, budget);
                            json_or_error(&mut source, &seeds, ignore_time)
                        })
                        .unwrap();
                    assert!(
                        traced == memory,
                        "{args:?} ignore_time={ignore_time} budget={budget:?}: the traces differ"
                    );
                }
            }
        }
    }

    /// Writes a hand-built history into the store's tables, each row with the id, times and
    /// values the in-memory source answers with.
    fn write_history(store: &mut Store, h: &History) {
        let tx = store.conn.transaction().unwrap();
        let mut pipelines: Vec<&str> = h.runs.iter().map(|r| r.pipeline.as_str()).collect();
        pipelines.sort_unstable();
        pipelines.dedup();
        for name in &pipelines {
            tx.execute("INSERT INTO pipelines (name) VALUES (?1)", [name])
                .unwrap();
        }
        for b in &h.builders {
            tx.execute(
                "INSERT INTO builders (id, name) VALUES (?1, ?2)",
                crate::store::db::params![b.id, b.name.as_str()],
            )
            .unwrap();
        }
        for r in &h.runs {
            tx.execute(
                "INSERT INTO runs (id, pipeline_id, run_key, step, builder_id, started_at,
                                   finished_at, status, has_records, recorded_at, trust_level)
                 VALUES (?1, (SELECT id FROM pipelines WHERE name = ?2), ?3, ?4, ?5, ?6, ?7, ?8,
                         ?9, 0, ?10)",
                crate::store::db::params![
                    r.id,
                    r.pipeline.as_str(),
                    r.run_key.as_str(),
                    r.step.as_str(),
                    r.builder,
                    r.started_at,
                    r.finished_at,
                    r.status.as_str(),
                    r.has_records,
                    // Believed runs at a level of their own, or at none.
                    if r.records_doubted {
                        Some(DOUBTED_LEVEL)
                    } else {
                        (r.id % 2 == 0).then_some("release")
                    }
                ],
            )
            .unwrap();
            let receipt = h.receipts.iter().find(|c| c.0 == r.id).map(|c| c.1);
            if r.time_suspect || receipt.is_some() {
                let (received_at, late, expiring, began_after) = receipt
                    .map_or((0, false, true, None), |c| {
                        (c.received_at, c.late, c.expiring, c.began_after)
                    });
                tx.execute(
                    "INSERT INTO run_receipts
                         (run_id, received_at, identity, late, time_suspect, began_after)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    crate::store::db::params![
                        r.id,
                        received_at,
                        if expiring { "ci#p" } else { "token:rack" },
                        i64::from(late),
                        r.time_suspect.then_some("claimed"),
                        began_after
                    ],
                )
                .unwrap();
            }
            if let Some(builder) = r.builder {
                tx.execute(
                    "INSERT INTO events (run_id, kind, target, at) VALUES (?1, ?2, ?3, ?4)",
                    crate::store::db::params![r.id, kind::RAN_ON, builder, r.started_at],
                )
                .unwrap();
            }
            if r.truncated {
                tx.execute(
                    "INSERT INTO run_truncations (run_id, recorded_at) VALUES (?1, 0)",
                    [r.id],
                )
                .unwrap();
            }
        }
        for a in &h.artifacts {
            let info = h.artifact_info(a.id);
            tx.execute(
                "INSERT INTO artifacts (id, backend, locator, digest, key, first_seen)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                crate::store::db::params![
                    a.id,
                    a.backend.as_str(),
                    &*a.locator,
                    a.digest,
                    a.key.as_str(),
                    info.first_seen
                ],
            )
            .unwrap();
            let (first, last) = h.sighted(a.id);
            for tag in &a.tags {
                tx.execute(
                    "INSERT INTO artifact_tags (artifact_id, tag, first_seen, last_seen)
                     VALUES (?1, ?2, ?3, ?4)",
                    crate::store::db::params![a.id, tag.as_str(), first, last],
                )
                .unwrap();
            }
        }
        for m in &h.mounts {
            tx.execute(
                "INSERT INTO mounts (id, builder_id, namespace, mount_id) VALUES (?1, ?2, ?3, ?4)",
                crate::store::db::params![
                    m.id,
                    m.builder,
                    m.namespace.as_str(),
                    m.mount_id.as_str()
                ],
            )
            .unwrap();
        }
        for r in &h.records {
            tx.execute(
                "INSERT INTO builder_records (id, builder_id, record_id, record_type, description)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                crate::store::db::params![
                    r.id,
                    r.builder,
                    r.record_id.as_str(),
                    r.record_type.as_str(),
                    &*r.description
                ],
            )
            .unwrap();
            if r.doubted {
                tx.execute(
                    "INSERT INTO record_descriptions (record, believed, record_type, description)
                     VALUES (?1, 0, ?2, ?3)",
                    crate::store::db::params![r.id, r.record_type.as_str(), &*r.description],
                )
                .unwrap();
            }
        }
        for &(run, event) in &h.events {
            let (kind, target) = match event {
                Event::Imported(a) => (kind::IMPORTED, a),
                Event::UsedBase(a) => (kind::USED_BASE, a),
                Event::Exported(a) => (kind::EXPORTED, a),
                Event::Produced(a) => (kind::PRODUCED, a),
                Event::ReadMount(m) => (kind::READ_MOUNT, m),
                Event::WroteMount(m) => (kind::WROTE_MOUNT, m),
                Event::CreatedRecord(r) => (kind::CREATED_RECORD, r),
                Event::ReusedRecord(r) => (kind::REUSED_RECORD, r),
            };
            tx.execute(
                "INSERT INTO events (run_id, kind, target, at) VALUES (?1, ?2, ?3, ?4)",
                crate::store::db::params![run, kind, target, h.at(run, event)],
            )
            .unwrap();
        }
        // Described as the memory source describes them: recorded by hand, ids in this order.
        for &(mount, at) in &h.mount_purges {
            tx.execute(
                "INSERT INTO purges (kind, builder_id, mount, at, method, author, recorded_at)
                 VALUES ('mount', (SELECT builder_id FROM mounts WHERE id = ?1), ?1, ?2,
                         'manual', 'tester@host', ?2)",
                crate::store::db::params![mount, at],
            )
            .unwrap();
        }
        for p in &h.builder_prunes {
            let selective = p.selective.as_ref();
            let id: i64 = tx
                .query_row(
                    "INSERT INTO purges (kind, builder_id, at, method, author, recorded_at,
                                         records_only, selective, records_since, records_skew)
                     VALUES ('builder', ?1, ?2, 'manual', 'tester@host', ?2, ?3, ?4, ?5, ?6)
                     RETURNING id",
                    crate::store::db::params![
                        p.builder,
                        p.at,
                        p.records_only,
                        selective.is_some(),
                        selective.and_then(|s| s.since),
                        selective.map_or(0, |s| s.skew)
                    ],
                    |row| row.get(0),
                )
                .unwrap();
            for record in selective.map_or(&[][..], |s| &s.records) {
                tx.execute(
                    "INSERT INTO purge_records (purge_id, record) VALUES (?1, ?2)",
                    crate::store::db::params![id, record],
                )
                .unwrap();
            }
        }
        tx.commit().unwrap();
        // The runs at the level the history doubts are doubted by the store too.
        store.doubt_records_at(DOUBTED_LEVEL);
    }

    /// The trust level [`write_history`] gives the runs whose record evidence is doubted.
    const DOUBTED_LEVEL: &str = "untrusted";

    /// Every tainted entity of the trace is explained by a chain that holds in time through
    /// the records no believed run created. (One search per entity: for small histories. A
    /// trace that fails is left to [`json_or_error`], which compares its message.)
    fn explained_in_time<S: graph::Source>(source: &mut S, seeds: &Seeds, ignore_time: bool) {
        let options = TraceOptions {
            ignore_time,
            ..TraceOptions::default()
        };
        let Ok(trace) = graph::trace(source, seeds, options) else {
            return;
        };
        let graph = trace.graph();
        for node in graph.node_indices().filter(|&n| graph[n].label.is_some()) {
            let hops = (trace.explain_node(node))
                .unwrap_or_else(|| panic!("no chain to {}", graph[node].name()));
            if let Err(broken) = crate::graph::tests::offers_hold_in_time(&trace, &hops) {
                panic!("{broken}: {hops:?}");
            }
        }
    }

    /// The trace as JSON and as Graphviz (every evidence edge), or the error's message.
    fn json_or_error<S: graph::Source>(
        source: &mut S,
        seeds: &Seeds,
        ignore_time: bool,
    ) -> Result<String, String> {
        let trace = graph::trace(
            source,
            seeds,
            TraceOptions {
                ignore_time,
                ..TraceOptions::default()
            },
        )
        .map_err(|err| err.to_string())?;
        let mut out = Vec::new();
        for format in [TraceFormat::Json, TraceFormat::Dot] {
            crate::report::trace::write(&trace, format, &mut out).unwrap();
        }
        Ok(String::from_utf8(out).unwrap())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// A random history written into a store traces exactly as it does in memory (where
        /// the rules, doubt aside, are checked against a naive fixpoint), with the same
        /// evidence, some runs' record evidence and some records' first words doubted,
        /// whether the store answers with indexed queries or from the loaded graph: from the
        /// history's own seeds, its pipeline within a window, a tag first seen within a
        /// window, a digest, a run, and a mount and a builder from their first use.
        #[test]
        fn the_store_traces_random_histories_as_memory_does(
            (history, seeds, _) in arb_history(),
            (since, until) in (0i64..80, 0i64..80),
            (doubted_runs, doubted_words) in (any::<u16>(), any::<u16>()),
        ) {
            let mut history = history;
            history.tag(1, "cache");
            history.tag(3, "cache");
            // Some runs' record evidence, and some records' first words, not believed.
            for run in 1..=history.runs.len() {
                if doubted_runs & (1 << (run % 16)) != 0 {
                    history.doubt_records(run as i64);
                }
            }
            for record in 1..=history.records.len() {
                if doubted_words & (1 << (record % 16)) != 0 {
                    history.doubt_description(record as i64);
                }
            }
            let dir = tempfile::tempdir().unwrap();
            let mut store = Store::open(&dir.path().join("db")).unwrap();
            write_history(&mut store, &history);
            let (since, until) = (
                time::format(t(since.min(until))),
                time::format(t(since.max(until))),
            );
            let digest = format!("sha256:{}", "2".repeat(64));
            let flags: [&[&str]; 6] = [
                &["--pipeline", "p", "--since", &since, "--until", &until],
                &["--cache-ref", "reg.io/x:cache", "--since", &since, "--until", &until],
                &["--cache-ref", &digest],
                &["--run", "p/1"],
                &["--mount", "b1:a"],
                &["--builder", "b2"],
            ];
            let all = std::iter::once(seeds).chain(flags.iter().map(|args| self::seeds(args)));
            for seeds in all {
                for ignore_time in [false, true] {
                    let expected = json_or_error(&mut history.clone(), &seeds, ignore_time);
                    // These histories doubt some runs' record evidence.
                    explained_in_time(&mut history.clone(), &seeds, ignore_time);
                    // Indexed queries find suspect uses from the receipts of few suspect
                    // runs, and among a target's uses when there are many.
                    for (budget, many) in [(None, false), (None, true), (Some(0), false)] {
                        crate::store::read::MANY_SUSPECTS.set(many);
                        let traced = store
                            .read_snapshot(|store| {
                                let mut source = TraceSource::with_budget(store, budget);
                                json_or_error(&mut source, &seeds, ignore_time)
                            })
                            .unwrap();
                        crate::store::read::MANY_SUSPECTS.set(false);
                        prop_assert_eq!(
                            &traced, &expected,
                            "{:?} ignore_time={} budget={:?} many suspects={}",
                            seeds, ignore_time, budget, many
                        );
                    }
                }
            }
        }
    }

    /// Every use of a builder, on it, its mounts and its records, and every run's end there,
    /// as `mark-purged` once read them all for the latest.
    const EVERY_BUILDER_USE: &str = "WITH b AS (SELECT id FROM builders WHERE name = ?1)
        SELECT run_id, at FROM (
          SELECT e.run_id, e.at FROM events e
            WHERE e.kind = 'ran_on' AND e.target IN (SELECT id FROM b)
          UNION ALL
          SELECT e.run_id, e.at FROM events e JOIN mounts m ON m.id = e.target
            WHERE e.kind IN ('read_mount', 'wrote_mount') AND m.builder_id IN (SELECT id FROM b)
          UNION ALL
          SELECT e.run_id, e.at FROM events e JOIN builder_records r ON r.id = e.target
            WHERE e.kind IN ('created_record', 'reused_record')
              AND r.builder_id IN (SELECT id FROM b)
          UNION ALL
          SELECT r.id, r.finished_at FROM runs r WHERE r.builder_id IN (SELECT id FROM b)) AS uses
        ORDER BY at DESC, run_id DESC LIMIT 1";

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// The latest use of a builder, read from the ends of the indexes of runs by builder,
        /// is the latest of every use of the builder, its mounts and its records.
        #[test]
        fn a_builders_last_use_is_the_latest_of_all_its_uses(
            (history, _, _) in arb_history(),
        ) {
            // A run uses mounts of its own builder only, as every store records them (the
            // generated histories give records so, and mounts of any builder).
            let mut history = history;
            let runs = history.runs.clone();
            let mounts = history.mounts.clone();
            history.events.retain(|(run, event)| match event {
                Event::ReadMount(m) | Event::WroteMount(m) => {
                    let on = runs.iter().find(|r| r.id == *run).and_then(|r| r.builder);
                    mounts.iter().any(|x| x.id == *m && Some(x.builder) == on)
                }
                _ => true,
            });
            let dir = tempfile::tempdir().unwrap();
            let mut store = Store::open(&dir.path().join("db")).unwrap();
            write_history(&mut store, &history);
            for builder in ["b1", "b2", "b3", "unknown"] {
                let every: Option<(i64, i64)> = store
                    .conn
                    .query_row(EVERY_BUILDER_USE, [builder], |row| Ok((row.get(0)?, row.get(1)?)))
                    .optional()
                    .unwrap();
                for records_only in [false, true] {
                    let target = PurgeTarget::Builder {
                        builder: builder.to_owned(),
                        records_only,
                        selective: None,
                    };
                    prop_assert_eq!(store.last_use(&target).unwrap(), every, "{}", builder);
                }
            }
        }
    }

    /// A store holding `history`, its even runs moved to a second pipeline, `q`.
    fn two_pipelines(mut history: History) -> (tempfile::TempDir, Store) {
        for run in history.runs.iter_mut().filter(|r| r.id % 2 == 0) {
            run.pipeline = "q".into();
        }
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("db")).unwrap();
        write_history(&mut store, &history);
        (dir, store)
    }

    /// An `ls` filter, with the window between two of the history's minutes when `narrowed[0]`
    /// and a limit of two rows when `narrowed[1]`.
    fn list_filter(
        pipeline: Option<&str>,
        builder: Option<&str>,
        narrowed: &[bool],
        (since, until): (i64, i64),
    ) -> crate::store::ls::ListFilter {
        crate::store::ls::ListFilter {
            pipeline: pipeline.map(str::to_owned),
            builder: builder.map(str::to_owned),
            since: narrowed[0].then(|| t(since.min(until))),
            until: narrowed[0].then(|| t(since.max(until))),
            limit: narrowed[1].then_some(2),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// The mounts a pipeline used, listed from its runs' uses, are those listed from every
        /// mount's uses with the pipeline's own: with a builder, a window and a limit or none.
        #[test]
        fn a_pipelines_mounts_list_as_every_mount_lists_them(
            (history, _, _) in arb_history(),
            (since, until) in (0i64..80, 0i64..80),
            narrowed in proptest::collection::vec(any::<bool>(), 3),
        ) {
            let (_dir, store) = two_pipelines(history);
            for pipeline in ["p", "q", "unknown"] {
                let builder = narrowed[0].then_some("b1");
                let filter = list_filter(Some(pipeline), builder, &narrowed[1..], (since, until));
                prop_assert_eq!(
                    store.ls_mounts(&filter).unwrap(),
                    store.every_mount(&filter).unwrap(),
                    "{:?}", filter
                );
            }
        }

        /// A builder's runs and pipelines, listed from the runs on it, are those listed with a
        /// filter on its name: with a pipeline, a window and a limit or none.
        #[test]
        fn a_builders_runs_and_pipelines_list_as_a_filter_on_its_name_lists_them(
            (history, _, _) in arb_history(),
            (since, until) in (0i64..80, 0i64..80),
            narrowed in proptest::collection::vec(any::<bool>(), 3),
        ) {
            let (_dir, store) = two_pipelines(history);
            for builder in ["b1", "b2", "unknown"] {
                let pipeline = narrowed[0].then_some("q");
                let filter = list_filter(pipeline, Some(builder), &narrowed[1..], (since, until));
                prop_assert_eq!(
                    store.runs_listed(&filter, true).unwrap(),
                    store.runs_listed(&filter, false).unwrap(),
                    "{:?}", filter
                );
                prop_assert_eq!(
                    store.pipelines_listed(&filter, true).unwrap(),
                    store.pipelines_listed(&filter, false).unwrap(),
                    "{:?}", filter
                );
            }
        }
    }

    /// Undoes `0008_purge_provenance.sql` (and the index of 0021), so a store rewound to an
    /// older schema version migrates forward again.
    const PURGES_AS_IN_0001: &str = "
        DROP INDEX runs_by_builder_finish;
        DROP TABLE purge_records;
        DROP TRIGGER purges_append_only_update; DROP TRIGGER purges_append_only_delete;
        DROP INDEX purges_by_mount;
        CREATE TABLE purges_old (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL CHECK (kind IN ('mount', 'builder')),
            builder_id INTEGER NOT NULL REFERENCES builders (id),
            mount INTEGER REFERENCES mounts (id),
            at INTEGER NOT NULL,
            source TEXT NOT NULL DEFAULT ''
        ) STRICT;
        INSERT INTO purges_old SELECT id, kind, builder_id, mount, at, source FROM purges;
        DROP TABLE purges;
        ALTER TABLE purges_old RENAME TO purges;
        CREATE INDEX purges_by_builder ON purges (builder_id, kind, at);";

    /// The bytes of one packed event: id, run, kind, target and time (see
    /// `schema/migrations/0005_event_pages.sql`).
    const PACKED_EVENT: usize = 33;

    /// Every page of the packed tables: table, page, bytes.
    fn pages(store: &Store) -> Vec<(&'static str, i64, Vec<u8>)> {
        let mut pages = Vec::new();
        for (table, column) in [
            ("event_pages", "events"),
            ("artifact_pages", "artifacts"),
            ("record_pages", "records"),
        ] {
            let mut stmt = store
                .conn
                .prepare(&format!("SELECT page, {column} FROM {table} ORDER BY page"))
                .unwrap();
            let rows = stmt
                .query_map([], |row| Ok((table, row.get(0)?, row.get(1)?)))
                .unwrap();
            pages.extend(rows.map(Result::unwrap));
        }
        pages
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// A store whose events, artifacts and builder records were written before the pages
        /// existed gets, when it is migrated, the same pages the triggers write as rows are
        /// inserted.
        #[test]
        fn the_migration_packs_existing_rows_as_the_triggers_do(
            (history, _, _) in arb_history(),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("db");
            let mut store = Store::open(&path).unwrap();
            write_history(&mut store, &history);
            // And events spread over many pages, with ids in gaps, and `ran_on` events.
            for i in 0..300_i64 {
                let kind = if i % 7 == 0 { kind::RAN_ON } else { kind::IMPORTED };
                store
                    .conn
                    .execute(
                        "INSERT INTO events (id, run_id, kind, target, at)
                         SELECT ?1, min(id), ?2, ?3, ?4 FROM runs HAVING count(*) > 0",
                        crate::store::db::params![1000 + 37 * i, kind, 5000 + i, i - 150],
                    )
                    .unwrap();
            }
            // And artifacts and records with empty, long and non-ASCII texts.
            for i in 0..70_i64 {
                let long = "x".repeat(300);
                let text = ["", "é/ü:🦀", &long][usize::try_from(i % 3).unwrap()];
                store
                    .conn
                    .execute(
                        "INSERT INTO artifacts (id, backend, locator, digest, key, first_seen)
                         VALUES (?1, 'gha', ?2, '', ?3, 0)",
                        crate::store::db::params![3000 + 11 * i, format!("packed/{i}{text}"), text],
                    )
                    .unwrap();
                store
                    .conn
                    .execute(
                        "INSERT INTO builder_records (id, builder_id, record_id, record_type,
                                                      description)
                         SELECT ?1, min(id), ?2, ?3, ?3 FROM builders HAVING count(*) > 0",
                        crate::store::db::params![3000 + 13 * i, format!("packed-{i}"), text],
                    )
                    .unwrap();
            }
            let written = pages(&store);
            let packed: i64 = store
                .conn
                .query_row("SELECT count(*) FROM events WHERE kind <> 'ran_on'", [], |row| {
                    row.get(0)
                })
                .unwrap();
            prop_assert_eq!(
                written.iter().filter(|(table, _, _)| *table == "event_pages")
                    .map(|(_, _, events)| events.len()).sum::<usize>(),
                PACKED_EVENT * usize::try_from(packed).unwrap()
            );
            store
                .conn
                .execute_batch(&format!(
                    "DROP TRIGGER event_pages_append; DROP TABLE event_pages;
                     DROP TRIGGER artifact_pages_append; DROP TABLE artifact_pages;
                     DROP TRIGGER record_pages_append; DROP TABLE record_pages;
                     DROP TABLE step_events;
                     DROP TABLE record_descriptions;
                     DROP TABLE run_chain;
                     ALTER TABLE incidents DROP COLUMN chain_length;
                     ALTER TABLE incidents DROP COLUMN chain_head;
                     DROP TABLE run_truncations;
                     DROP TABLE acceptances;
                     DROP TABLE mount_snapshot_files; DROP TABLE mount_snapshots;
                     ALTER TABLE audit_findings DROP COLUMN target;
                     DROP TABLE run_receipts; DROP TABLE collector_refusals;
                     DROP TABLE build_history; DROP TABLE run_build_refs;
                     ALTER TABLE events DROP COLUMN source;
                     ALTER TABLE actions DROP COLUMN evidence_gap;
                     DROP TRIGGER runs_never_update; DROP TRIGGER runs_never_delete;
                     DROP TRIGGER events_never_update; DROP TRIGGER events_never_delete;
                     DROP TRIGGER pipelines_never_update; DROP VIEW pipeline_current;
                     DROP TABLE pipeline_changes; DROP TABLE run_observations;
                     DROP TABLE event_details; ALTER TABLE runs DROP COLUMN trust_level;
                     {PURGES_AS_IN_0001}
                     PRAGMA user_version = 4;",
                ))
                .unwrap();
            drop(store);
            let store = Store::open(&path).unwrap();
            prop_assert_eq!(pages(&store), written);
        }
    }

    /// Artifacts and builder records read from their pages are the rows the store holds,
    /// whatever their texts: empty, non-ASCII, longer than 255 bytes, or with a NUL inside
    /// (which only a store an older release wrote holds: the rows go in with SQLite itself).
    /// A description is kept once for the records sharing it; an empty one is not taken for
    /// the next.
    #[test]
    fn packed_texts_read_back_as_stored() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("db")).unwrap();
        store
            .conn
            .execute("INSERT INTO builders (id, name) VALUES (1, 'b')", [])
            .unwrap();
        let long = "é".repeat(200);
        let texts = ["", "a\0b", "mirror.io/ü/🦀", long.as_str()];
        let raw = store.conn.sqlite().expect("an SQLite store");
        for (i, text) in texts.iter().enumerate() {
            let id = i64::try_from(i).unwrap() * 40 + 1;
            raw.execute(
                "INSERT INTO artifacts (id, backend, locator, digest, key, first_seen)
                     VALUES (?1, ?2, ?3, ?4, ?5, 7)",
                rusqlite::params![
                    id,
                    ["registry", "gha", "local", "s3"][i],
                    format!("reg.io/{text}"),
                    format!("sha256:{}", i.to_string().repeat(64)),
                    text
                ],
            )
            .unwrap();
            raw.execute(
                "INSERT INTO builder_records (id, builder_id, record_id, record_type,
                                                  description)
                     VALUES (?1, 1, ?2, ?3, ?4)",
                rusqlite::params![id, text, text, text],
            )
            .unwrap();
            if i == 0 {
                // Packed right after record 1's empty record id and description.
                raw.execute_batch(
                    "INSERT INTO builders (id, name) VALUES (2, 'c');
                     INSERT INTO builder_records (id, builder_id, record_id, record_type,
                                                  description)
                         VALUES (2, 2, '', 'regular', 'next');",
                )
                .unwrap();
            }
        }
        let (next, shared) = (2, 200);
        raw.execute(
            "INSERT INTO builder_records (id, builder_id, record_id, record_type, description)
                 VALUES (200, 1, 'again', 'regular', ?1)",
            [texts[1]],
        )
        .unwrap();
        let mut queried = Vec::new();
        for i in 0..texts.len() {
            let id = i64::try_from(i).unwrap() * 40 + 1;
            queried.push((
                graph::Source::artifact(&mut store, id).unwrap(),
                graph::Source::record(&mut store, id).unwrap(),
            ));
        }
        let again = graph::Source::record(&mut store, shared).unwrap();
        let after_empty = graph::Source::record(&mut store, next).unwrap();
        let mut source = TraceSource::with_budget(&mut store, Some(0));
        for (i, (artifact, record)) in queried.into_iter().enumerate() {
            let id = i64::try_from(i).unwrap() * 40 + 1;
            assert_eq!(graph::Source::artifact(&mut source, id).unwrap(), artifact);
            assert_eq!(graph::Source::record(&mut source, id).unwrap(), record);
        }
        assert_eq!(graph::Source::record(&mut source, shared).unwrap(), again);
        assert_eq!(
            graph::Source::record(&mut source, next).unwrap(),
            after_empty
        );
        assert!(source.loaded());
    }

    /// A record a doubted run named first reads back alike from the loaded graph and from the
    /// store: of unknown kind until a believed run described it, then in that run's words.
    /// Words for a record no doubted run named first (a row no release writes) are left out.
    #[test]
    fn records_a_doubted_run_described_read_back_alike() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("db")).unwrap();
        let raw = store.conn.sqlite().expect("an SQLite store");
        raw.execute_batch(
            "INSERT INTO builders (id, name) VALUES (1, 'b');
             INSERT INTO builder_records (id, builder_id, record_id, record_type, description)
                 VALUES (1, 1, 'lied', 'regular', 'pulled from x'),
                        (2, 1, 'told', 'regular', 'pulled from x'),
                        (3, 1, 'kept', 'regular', 'pulled from x');
             INSERT INTO record_descriptions (record, believed, record_type, description)
                 VALUES (1, 0, 'regular', 'pulled from x'), (2, 0, 'regular', 'pulled from x'),
                        (2, 1, 'regular', 'RUN make'),
                        (3, 1, 'regular', 'RUN make');",
        )
        .unwrap();
        let queried: Vec<RecordInfo> = (1..=3)
            .map(|id| graph::Source::record(&mut store, id).unwrap())
            .collect();
        let kinds: Vec<(bool, &str, bool)> = (queried.iter())
            .map(|r| (r.doubted, &*r.description, graph::record_carries_taint(r)))
            .collect();
        assert_eq!(
            kinds,
            [
                (true, "pulled from x", true),
                (false, "RUN make", true),
                (false, "pulled from x", false)
            ]
        );
        let mut source = TraceSource::with_budget(&mut store, Some(0));
        for (id, record) in (1..=3).zip(queried) {
            assert_eq!(graph::Source::record(&mut source, id).unwrap(), record);
        }
        assert!(source.loaded());
        drop(source);
        let raw = store.conn.sqlite().expect("an SQLite store");
        let err = (raw.execute("UPDATE record_descriptions SET description = 'x'", []))
            .unwrap_err()
            .to_string();
        assert!(err.contains("append-only"), "{err}");
    }

    /// A `sha256:` digest in lowercase hex is held as its bytes, any other as text: each reads
    /// back as recorded, and a digest finds the artifacts recorded with it written just so,
    /// as the store's queries answer.
    #[test]
    fn digests_of_every_form_read_back_as_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("db")).unwrap();
        let hex = "0123456789abcdef".repeat(4);
        let lower = format!("sha256:{hex}");
        let recorded = [
            lower.clone(),
            format!("sha256:{}", hex.to_uppercase()),
            format!("sha512:{hex}{hex}"),
            format!("sha256:{}", &hex[1..]),
            format!("sha256:{}g", &hex[1..]),
            format!("{lower}0"),
            format!("SHA256:{hex}"),
            String::new(),
            lower.clone(),
        ];
        let raw = store.conn.sqlite().expect("an SQLite store");
        for (i, digest) in recorded.iter().enumerate() {
            raw.execute(
                "INSERT INTO artifacts (id, backend, locator, digest, key, first_seen)
                     VALUES (?1, 'registry', ?2, ?3, '', 7)",
                rusqlite::params![
                    i64::try_from(i).unwrap() + 1,
                    format!("reg.io/r{i}"),
                    digest
                ],
            )
            .unwrap();
        }
        let mut probes: Vec<String> = recorded.iter().filter(|d| !d.is_empty()).cloned().collect();
        probes.push(format!("sha256:{}", "f".repeat(64)));
        let ids = 1..=i64::try_from(recorded.len()).unwrap();
        let artifacts: Vec<_> = ids
            .clone()
            .map(|id| graph::Source::artifact(&mut store, id).unwrap())
            .collect();
        let found: Vec<_> = probes
            .iter()
            .map(|d| graph::Source::digest(&mut store, d).unwrap().0)
            .collect();
        assert_eq!(found[0], [1, 9]);
        assert_eq!(found[1], [2]);
        let mut source = TraceSource::with_budget(&mut store, Some(0));
        for (id, artifact) in ids.zip(artifacts) {
            let loaded = graph::Source::artifact(&mut source, id).unwrap();
            assert_eq!(loaded.digest, recorded[usize::try_from(id).unwrap() - 1]);
            assert_eq!(loaded, artifact);
        }
        for (probe, found) in probes.iter().zip(found) {
            let mut loaded = graph::Source::digest(&mut source, probe).unwrap().0;
            loaded.sort_unstable();
            assert_eq!(loaded, found, "artifacts with digest `{probe}`");
        }
        assert!(source.loaded());
    }

    /// A read-only copy (a file and directory nobody may write, no `-wal`) is read as
    /// immutable, the graph load's second connection too: the answers are the store's, and
    /// nothing is created beside the file.
    #[test]
    fn a_read_only_copy_loads_the_graph_without_writing() {
        use std::os::unix::fs::PermissionsExt;

        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("evidence");
        std::fs::create_dir(&copy).unwrap();
        let path = copy.join("db");
        let mut store = Store::open(&path).unwrap();
        store
            .conn
            .execute_batch(
                "INSERT INTO builders (id, name) VALUES (1, 'b');
                 INSERT INTO artifacts (id, backend, locator, digest, key, first_seen)
                 VALUES (1, 'registry', 'reg.io/app', 'sha256:aa', '', 7);
                 INSERT INTO builder_records (id, builder_id, record_id, description)
                 VALUES (1, 1, 'r1', 'RUN make');",
            )
            .unwrap();
        let artifact = graph::Source::artifact(&mut store, 1).unwrap();
        let record = graph::Source::record(&mut store, 1).unwrap();
        drop(store);
        assert_eq!(std::fs::read_dir(&copy).unwrap().count(), 1, "no -wal left");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o444)).unwrap();
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o555)).unwrap();
        let before = std::fs::read(&path).unwrap();

        let mut store = Store::open_read_only(&path).unwrap();
        assert_eq!(store.access, Access::Immutable);
        let mut source = TraceSource::with_budget(&mut store, Some(0));
        assert_eq!(graph::Source::artifact(&mut source, 1).unwrap(), artifact);
        assert_eq!(graph::Source::record(&mut source, 1).unwrap(), record);
        assert!(source.loaded());
        drop(source);
        drop(store);
        let names: Vec<_> = std::fs::read_dir(&copy)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["db"]);
        assert_eq!(std::fs::read(&path).unwrap(), before);
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// Packed events keep ids, run ids and times beyond 32 bits, and negative times.
    #[test]
    fn the_trigger_packs_wide_and_negative_values() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        store
            .conn
            .execute_batch(
                "INSERT INTO pipelines (id, name) VALUES (1, 'p');
                 INSERT INTO runs (id, pipeline_id, run_key, step, started_at, finished_at,
                                   status, recorded_at)
                 VALUES (4294967301, 1, '1', 's', 0, 0, 'succeeded', 0);
                 INSERT INTO events (id, run_id, kind, target, at)
                 VALUES (4294967400, 4294967301, 'reused_record', 4294967302, -5),
                        (4294967401, 4294967301, 'ran_on', 1, 7);",
            )
            .unwrap();
        let mut expected = Vec::new();
        expected.extend_from_slice(&4_294_967_400_i64.to_be_bytes());
        expected.extend_from_slice(&4_294_967_301_i64.to_be_bytes());
        expected.push(8);
        expected.extend_from_slice(&4_294_967_302_i64.to_be_bytes());
        expected.extend_from_slice(&(-5_i64).to_be_bytes());
        assert_eq!(
            pages(&store),
            [("event_pages", 4_294_967_400 >> 6, expected)]
        );
    }

    proptest! {
        /// The digest index finds exactly the artifacts with a hash, at either end of the
        /// hash range, for any number of artifacts (with gaps between their ids), and knows
        /// which artifacts share their hash with none.
        #[test]
        fn the_digest_index_finds_every_artifact_with_a_hash(
            hashes in proptest::collection::vec(
                prop_oneof![Just(0u64), Just(u64::MAX), 0u64..16, any::<u64>()],
                0..300,
            ),
            probe in any::<u64>(),
        ) {
            let pairs: Vec<(u64, u32)> =
                hashes.iter().zip((0u32..).step_by(3)).map(|(&h, id)| (h, id)).collect();
            let index = DigestIndex::new(pairs.clone());
            for hash in hashes.iter().copied().chain([probe, 0, u64::MAX, 7]) {
                let mut found: Vec<u32> = index.candidates(hash).collect();
                found.sort_unstable();
                let expected: Vec<u32> =
                    pairs.iter().filter(|p| p.0 == hash).map(|p| p.1).collect();
                prop_assert_eq!(found, expected);
            }
            for id in -1..hashes.len() as i64 * 3 + 70 {
                let alone = pairs.iter().find(|p| i64::from(p.1) == id).is_some_and(|p| {
                    pairs.iter().filter(|q| q.0 == p.0).count() == 1
                });
                prop_assert_eq!(index.is_alone(id), alone, "artifact {}", id);
            }
        }
    }

    /// Grouping keeps each key's items in input order, and leaves out keys beyond the slots.
    #[test]
    fn groups_keep_input_order_within_a_key() {
        let keys = [Some(2), None, Some(0), Some(3), Some(2), Some(0), Some(9)];
        let groups = Groups::build(keys.iter().copied(), |i| 10 * i as u32, 3);
        assert_eq!(groups.get(0), &[20, 50]);
        assert_eq!(groups.get(1), &[] as &[u32]);
        assert_eq!(groups.get(2), &[0, 40]);
        // Keys beyond the slots are left out.
        assert_eq!(groups.get(3), &[] as &[u32]);
        assert_eq!(groups.get(-1), &[] as &[u32]);
        assert_eq!(groups.items.len(), 4);
    }
}
