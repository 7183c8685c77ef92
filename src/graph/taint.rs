//! Time-aware taint propagation from seeds to a fixpoint.
//!
//! Label-correcting: every node keeps its earliest taint time and the evidence that gave it.
//! Times can move earlier after a node was first reached (an immutable digest taints readers
//! that ran before the tainted export was found; a second tainted write to a mount can be
//! earlier than the first one found), so a node is re-relaxed when its time improves, and a
//! mount or builder is re-queried when it gains a tainted write earlier than any before among
//! those whose writers finished in the same purge segment (the writer of that write, which its
//! own query leaves out, is offered the earliest write by another run instead). A purge clears
//! a write only when its writer had finished: a tainted run still running at a purge of a
//! mount it wrote (or a prune of the builder it ran on) goes on writing after it. Times only
//! decrease and come from a finite set, so cycles terminate. Ties are broken by names and
//! kinds of evidence, never by the order evidence was found in, so a trace answered by
//! indexed queries and one answered from the loaded graph are the same.
//!
//! Every expansion is one [`Source`] lookup; nothing scans the whole store.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use compact_str::CompactString;
use petgraph::Direction;
use petgraph::graph::{DiGraph, EdgeIndex, NodeIndex};
use petgraph::visit::EdgeRef;
use smallvec::SmallVec;

use super::result::{
    AppliedPurge, Entity, Evidence, Kind, Label, Node, SeedMark, Trace, Via, cleanings_of,
    is_cache_backend,
};
use super::seeds::{CacheRefSeed, DigestSeed, MountSeed, Seeds, Window};
use super::source::{
    ArtifactId, ArtifactInfo, ArtifactRead, BuilderId, BuilderInfo, DigestRead, MountId, MountInfo,
    Purged, Receipt, RecordId, RecordInfo, RunId, RunInfo, RunRef, Selective, Source, Write,
};
use crate::model::Backend;
use crate::time::Micros;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TraceOptions {
    /// Every time comparison passes and purges are ignored: the conservative closure. Seed
    /// windows still select the seeds.
    pub ignore_time: bool,
    /// Trace as if no purge had been recorded: what the recorded purges hid.
    pub ignore_purges: bool,
    /// Keep each entity's label (when and through what it was tainted) but not every piece
    /// of evidence between entities: enough for the lists and reports, not for
    /// [`Trace::explain`] or the graph (`--format dot`). Answers are the same.
    ///
    /// [`Trace::explain`]: super::Trace::explain
    pub labels_only: bool,
    /// How long before the collector received a run the run may have made its writes.
    pub claims: ClaimLimits,
}

/// What bounds the times a seed run claims when the collector received it.
///
/// A seed run is the incident's compromised run: what its hook sent is the attacker's word,
/// and a run that dates its start later than it began hides its writes from the runs that
/// read them in between. The collector's clock bounds how much later. A run reached the
/// collector before its token expired (or, `late`, from a spool, at most `late_grace` after),
/// its token lived at most `token_life` (the collector holds a run whose token lives longer
/// time-suspect), and the run began at most `longest_run` before its token was issued; each
/// clock may be `skew` off. A seed run's writes are taken as made from the earliest time that
/// allows, or from its seed's window start when that is later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimLimits {
    pub longest_run: Micros,
    pub token_life: Micros,
    pub late_grace: Micros,
    pub skew: Micros,
}

impl ClaimLimits {
    /// The earliest time a run the collector received may have begun: the earlier of what
    /// these limits allow and the bound the collector kept with the receipt (from the token's
    /// issue time, with the collector's own limits), so that limits narrower than the
    /// collector's never move it later. Nothing bounds a run sent with a static token, which
    /// never expires.
    pub fn earliest_start(self, received: Receipt) -> Micros {
        if !received.expiring {
            return Micros::MIN;
        }
        let spooled = if received.late { self.late_grace } else { 0 };
        let limited = received
            .received_at
            .saturating_sub(self.longest_run)
            .saturating_sub(self.token_life)
            .saturating_sub(spooled)
            .saturating_sub(self.skew.saturating_mul(2));
        received
            .began_after
            .map_or(limited, |kept| kept.min(limited))
    }

    /// The latest time a run the collector received may have gone on writing: until it was
    /// last sent, on a clock up to `skew` off.
    pub fn latest_end(self, received: Receipt) -> Micros {
        (received.received_at.max(received.last_seen)).saturating_add(self.skew)
    }
}

/// When a seed run the collector received may have written: from the earliest start its
/// receipt allows (or its seed window's start) to when it was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteSpan {
    pub from: Micros,
    pub until: Micros,
}

impl WriteSpan {
    /// Nothing bounds when the run began (a static token, no window).
    pub fn unbounded(self) -> bool {
        self.from == Micros::MIN
    }

    /// When a write the run dates at `at` counts from: the span's start when earlier, unless
    /// nothing bounds it (the run is then taken as time-suspect instead).
    fn counted_from(self, at: Micros) -> Micros {
        if self.unbounded() {
            at
        } else {
            self.from.min(at)
        }
    }
}

impl Default for ClaimLimits {
    /// The collector's defaults: a run of six hours, a token of a day, a day of grace, a
    /// minute of skew.
    fn default() -> Self {
        Self {
            longest_run: 6 * 3600 * 1_000_000,
            token_life: 24 * 3600 * 1_000_000,
            late_grace: 24 * 3600 * 1_000_000,
            skew: 60 * 1_000_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TraceError<E: std::error::Error + 'static> {
    /// A seed names a pipeline, run, builder, mount or ref the store does not hold.
    #[error("{0}")]
    UnknownSeed(Unknown),
    #[error("cannot read the provenance store")]
    Source(#[from] E),
}

/// A seed the store does not hold, by kind, so that the caller can offer names it does hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unknown {
    #[error("no pipeline `{0}` in the store")]
    Pipeline(String),
    #[error("no run `{0}` in the store")]
    Run(String),
    #[error("no cache ref `{locator}:{tag}` in the store")]
    CacheRef { locator: String, tag: String },
    #[error("no mount `{id}` on builder `{builder}` in the store")]
    Mount { builder: String, id: String },
    #[error("no builder `{0}` in the store")]
    Builder(String),
}

/// Whether a builder record carries taint from the run that created it to the runs that reuse
/// it.
///
/// Only `regular` records do, and records of unknown type. Cache-mount records
/// (`exec.cachemount`) are covered by the mount rule; `source.local` snapshots of the build
/// context are re-synced by every build; base image layers (`pulled from ...`; for an image the
/// daemon already holds, `from local ` on Docker 20.10 and no description at all on the
/// containerd image store of Docker 26) are content-addressed and covered by the base-image
/// digest rule. Every record a Dockerfile step makes is described (`mount / from exec ...`,
/// `[stage 2/3] COPY ...`). A record's type and description are kept as first recorded, and a
/// run that reused it may have named it by id alone: a record of unknown (empty) type may be
/// any of these, so it carries taint, as does one whose type and description only a run whose
/// record evidence is not believed gave ([`RecordInfo::doubted`]).
pub fn record_carries_taint(record: &RecordInfo) -> bool {
    record.doubted || record_kind_carries_taint(&record.record_type, &record.description)
}

/// [`record_carries_taint`] for a record of `record_type` described as `description` (as a
/// builder lists it).
pub fn record_kind_carries_taint(record_type: &str, description: &str) -> bool {
    record_type.is_empty()
        || record_type == "regular"
            && !description.is_empty()
            && !description.starts_with("pulled from")
            && !description.starts_with("from local")
}

/// Traces everything downstream of the seeds.
///
/// A seed that names a pipeline, run, builder, mount or tag the store does not hold is an
/// error; a digest that matches no artifact still seeds (its readers, if any, are tainted),
/// and a window that selects nothing gives an empty trace.
pub fn trace<S: Source>(
    source: &mut S,
    seeds: &Seeds,
    options: TraceOptions,
) -> Result<Trace, TraceError<S::Error>> {
    let mut tracer = Tracer::new(source, options);
    tracer.seed(seeds)?;
    tracer.fixpoint()?;
    let purges = tracer.applied_purges()?;
    let mut trace = tracer.finish();
    trace.purges = purges;
    Ok(trace)
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Key {
    Run(RunId),
    Artifact(ArtifactId),
    Mount(MountId),
    Builder(BuilderId),
    Record(RecordId),
    Digest(String),
}

/// The node of each entity met so far.
#[derive(Debug, Default)]
struct Nodes {
    runs: IdMap,
    artifacts: IdMap,
    mounts: IdMap,
    builders: IdMap,
    records: IdMap,
    digests: HashMap<String, NodeIndex>,
}

impl Nodes {
    fn get(&self, key: &Key) -> Option<&NodeIndex> {
        match key {
            Key::Run(id) => self.runs.get(*id),
            Key::Artifact(id) => self.artifacts.get(*id),
            Key::Mount(id) => self.mounts.get(*id),
            Key::Builder(id) => self.builders.get(*id),
            Key::Record(id) => self.records.get(*id),
            Key::Digest(digest) => self.digests.get(digest),
        }
    }

    fn insert(&mut self, key: Key, node: NodeIndex) {
        match key {
            Key::Run(id) => self.runs.insert(id, node),
            Key::Artifact(id) => self.artifacts.insert(id, node),
            Key::Mount(id) => self.mounts.insert(id, node),
            Key::Builder(id) => self.builders.insert(id, node),
            Key::Record(id) => self.records.insert(id, node),
            Key::Digest(digest) => {
                self.digests.insert(digest, node);
            }
        }
    }
}

/// A value an [`IdMap`] holds; one value marks an empty slot.
trait Slot: Copy + PartialEq {
    fn empty() -> Self;
}

impl Slot for NodeIndex {
    fn empty() -> Self {
        NodeIndex::end()
    }
}

impl Slot for u32 {
    fn empty() -> Self {
        u32::MAX
    }
}

/// Values (nodes, by default) by store id. Store ids are small and dense, so a vector indexed
/// by id holds them; an id out of its reach goes to a map.
#[derive(Debug)]
struct IdMap<V = NodeIndex> {
    dense: Vec<V>,
    sparse: HashMap<i64, V>,
}

impl<V> Default for IdMap<V> {
    fn default() -> Self {
        Self {
            dense: Vec::new(),
            sparse: HashMap::default(),
        }
    }
}

impl<V: Slot> IdMap<V> {
    /// The largest id kept in the vector: 64 MiB of slots at most.
    const DENSE: i64 = 1 << 24;

    fn get(&self, id: i64) -> Option<&V> {
        match usize::try_from(id) {
            Ok(slot) if id < Self::DENSE => {
                self.dense.get(slot).filter(|&&value| value != V::empty())
            }
            _ => self.sparse.get(&id),
        }
    }

    fn insert(&mut self, id: i64, value: V) {
        match usize::try_from(id) {
            Ok(slot) if id < Self::DENSE => {
                if slot >= self.dense.len() {
                    let len = (slot + 1).max(self.dense.len() * 2);
                    self.dense.resize(len, V::empty());
                }
                self.dense[slot] = value;
            }
            _ => {
                self.sparse.insert(id, value);
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Work {
    /// A newly tainted run: taint what it wrote and the builder it ran on.
    Run(NodeIndex),
    /// A tainted artifact (new or earlier): its copies and its readers.
    Artifact(NodeIndex),
    /// A newly tainted builder record: the runs that reused it.
    Record(NodeIndex),
    /// A mount or builder gained a tainted write at `at`, the earliest of those that a purge
    /// segment's end clears: the readers it reaches.
    Readers {
        node: NodeIndex,
        segment: usize,
        at: Micros,
        writer: Option<RunId>,
    },
    /// A seeded builder: its runs with record evidence that used its cache from `at`.
    BuilderSeed { node: NodeIndex, at: Micros },
    /// A mount or builder gained its first tainted write by a time-suspect run: every reader,
    /// whatever the times, as if the write came before all of them.
    SuspectReaders { node: NodeIndex, writer: RunId },
}

/// The time-suspect runs that wrote a tainted mount or ran on a tainted builder: the first,
/// whose readers are queried, and whether another one reached it.
#[derive(Debug, Clone, Copy)]
struct SuspectWriters {
    first: RunId,
    other: bool,
}

/// The read times at which an artifact recorded by tag only taints its readers: from `from`,
/// and before `until` (`Micros::MAX`: no end). Several are joined into the span that holds
/// them all, which may take in reads between them: more taint, never less.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Reads {
    from: Micros,
    until: Micros,
}

impl Reads {
    const ALL: Self = Self {
        from: Micros::MIN,
        until: Micros::MAX,
    };

    fn holds(self, at: Micros) -> bool {
        self.from <= at && (at < self.until || self.until == Micros::MAX)
    }

    fn hull(self, other: Self) -> Self {
        Self {
            from: self.from.min(other.from),
            until: self.until.max(other.until),
        }
    }

    fn covers(self, other: Self) -> bool {
        self.hull(other) == self
    }
}

impl From<Micros> for Reads {
    /// From a time on, with no end.
    fn from(from: Micros) -> Self {
        Self {
            from,
            until: Micros::MAX,
        }
    }
}

/// The tainted run that wrote a mount or ran on a builder, as a selective prune of the
/// builder asks: whether its times are believed, and the records it said it created there
/// (`None` without record evidence).
struct Writer<'a> {
    run: RunId,
    suspect: bool,
    created: Option<&'a [RecordId]>,
}

/// Orphan writers offered alike: on one builder, cleared by one purge (none for runs whose start
/// does not count), and whether it does not.
type OrphanOfferKey = (BuilderId, Option<Micros>, bool);

/// Keeps the two earliest distinct runs of `earliest` with `offered`.
fn keep_earliest(earliest: &mut [Option<(Micros, RunId)>; 2], offered: (Micros, RunId)) {
    let mut all: SmallVec<[(Micros, RunId); 3]> = earliest.iter().flatten().copied().collect();
    match all.iter_mut().find(|(_, run)| *run == offered.1) {
        Some(kept) => kept.0 = kept.0.min(offered.0),
        None => all.push(offered),
    }
    all.sort_unstable();
    *earliest = [all.first().copied(), all.get(1).copied()];
}

/// A builder's records that no recorded run created: those reused, in the order of their
/// first reuse, and those never reused.
#[derive(Debug, Default)]
struct Orphans {
    reused: Vec<(Micros, RecordId)>,
    unreused: Vec<RecordId>,
}

/// A tainted run without record evidence that may have created a record no recorded run
/// created: reuses from `floor` on may be of what it made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct OrphanWriter {
    floor: Micros,
    run: RunId,
}

/// A tainted run's offer of the records of its builder no recorded run created, waiting to
/// be made (see [`Tracer::offer_orphans`]).
#[derive(Debug, Clone, Copy)]
struct PendingOffer {
    builder: BuilderId,
    writer: NodeIndex,
    builder_node: NodeIndex,
    offer: OrphanWriter,
    /// When its writes on the builder count from, and until.
    started_at: Micros,
    done: Micros,
}

/// The two earliest such writers of a record, by distinct runs: a reuser is reached by the
/// earliest one that is not itself.
type OrphanWriters = [Option<OrphanWriter>; 2];

/// Adds a writer to the two earliest; whether they changed.
fn keep_two(writers: &mut OrphanWriters, new: OrphanWriter) -> bool {
    let mut all: Vec<OrphanWriter> = writers.iter().flatten().copied().collect();
    match all.iter_mut().find(|w| w.run == new.run) {
        Some(same) if same.floor <= new.floor => return false,
        Some(same) => same.floor = new.floor,
        None => all.push(new),
    }
    all.sort_unstable();
    let kept = [all.first().copied(), all.get(1).copied()];
    let changed = kept != *writers;
    *writers = kept;
    changed
}

/// Everything recorded under one digest, loaded once.
#[derive(Debug, Default)]
struct DigestState {
    /// Nearly always one: held inline, a blast radius holds one state per tainted digest.
    artifacts: SmallVec<[ArtifactId; 1]>,
    readers: Vec<DigestRead>,
    /// The artifact whose own evidence is earliest; the others are tainted as its copies.
    origin: Option<NodeIndex>,
    readers_done: bool,
}

/// The tainted writes that matter among those whose writers finished in one purge segment of
/// a mount or builder: the purge that ends the segment is the one that clears them all.
#[derive(Debug, Clone, Copy)]
struct SegmentWrites {
    /// The earliest write, whose readers are queried: a later write in the segment reaches a
    /// subset of them, but for the earliest write's own writer, which its query leaves out.
    first: Micros,
    writer: Option<RunId>,
    /// For that writer: the earliest write by another run or a seed.
    other: Option<Micros>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Roles {
    cache: bool,
    image: bool,
    /// A tainted run pushed it (exported or built it).
    pushed: bool,
}

/// An artifact without a role yet has an empty slot.
impl Slot for Roles {
    fn empty() -> Self {
        Self::default()
    }
}

struct Tracer<'s, S: Source> {
    source: &'s mut S,
    ignore_time: bool,
    /// Purges are not loaded at all: every mount and builder has a single segment.
    ignore_purges: bool,
    /// Only record-creation evidence is kept as edges (the traversal asks who created a
    /// record); see [`TraceOptions::labels_only`].
    labels_only: bool,
    /// For each mount and builder with any: the purges that clean it, ascending.
    cleanings: HashMap<NodeIndex, Vec<Micros>>,
    /// For each builder with a prune that removed only some records: beside its
    /// `cleanings`, what each prune removed (`None`: every build record). A selective prune
    /// clears only the writers it covers.
    selective: HashMap<NodeIndex, Vec<Option<Selective>>>,
    /// A buffer for the records a run created on its builder.
    created: Vec<RecordId>,
    /// For each selective prune: the tainted writers met that it covers.
    covered: HashMap<(NodeIndex, usize), HashSet<RunId>>,
    /// The runs each purge (a mount or builder, and the purge's time) kept a tainted write
    /// from: met only when a purge cleans something, so the traversal carries no more than
    /// the purge's time.
    cuts: HashMap<(NodeIndex, Micros), Vec<RunId>>,
    graph: DiGraph<Node, Evidence>,
    nodes: Nodes,
    /// The evidence edges of crowded nodes (see [`Tracer::find_edge`]), by source, target and
    /// kind.
    edges: HashMap<(NodeIndex, NodeIndex, Via), EdgeIndex>,
    /// Nodes with so many edges on the side duplicates are looked for that `edges` holds them.
    crowded: HashSet<NodeIndex>,
    seeds: Vec<NodeIndex>,
    queue: VecDeque<Work>,
    /// Store-wide reader queries of mounts and builders, run once the cheap expansions are
    /// done: by then more tainted writes are known, and a query made stale by an earlier
    /// write in its segment is skipped.
    deferred: VecDeque<Work>,
    /// Digest-less artifacts whose readers were loaded, each with the earliest read time it
    /// was loaded from. (Runs and records expand once, when first tainted; artifacts with a
    /// digest share their digest's state.)
    expanded: HashMap<NodeIndex, Reads>,
    /// Digest-less artifacts tainted only by a tag seed with a window, or by a tainted digest
    /// their tag held: they taint only the runs that read them from the window's start, or
    /// from when the digest was first seen, on. Any other evidence lifts the floor.
    reader_floors: HashMap<NodeIndex, Reads>,
    /// Tainted registry artifacts whose tags were followed to the refs recorded by tag only.
    tags_followed: HashSet<NodeIndex>,
    builder_names: HashMap<BuilderId, CompactString>,
    /// The state in `digests` of each artifact whose digest was loaded, by artifact id.
    digest_of: IdMap<u32>,
    digests: Vec<DigestState>,
    /// For each mount and builder: the tainted writes whose writers finished in each purge
    /// segment that decide which readers are reached.
    segments: HashMap<NodeIndex, BTreeMap<usize, SegmentWrites>>,
    roles: IdMap<Roles>,
    /// For each expanded record: the runs that reused it and are its only creator so far.
    waiting_creators: HashMap<NodeIndex, Vec<(RunRef, Micros)>>,
    /// For each expanded record with other creators: those not reached yet.
    unreached_creators: HashMap<NodeIndex, Vec<(RunRef, Micros)>>,
    /// For each mount and builder: its tainted writes by time-suspect runs.
    suspect_writers: HashMap<NodeIndex, SuspectWriters>,
    /// Each builder's records that no recorded run created, once asked for.
    orphan_records: HashMap<BuilderId, Rc<Orphans>>,
    /// The runs that reused each of them and when, read when a purge kept them out.
    orphan_reusers: HashMap<RecordId, Vec<(RunId, Micros)>>,
    /// The two earliest runs offered as writers of a builder's orphan records, by builder,
    /// the purge that clears what they made there, and whether their start counts: a later
    /// writer of the same kind reaches no record they do not reach earlier.
    orphan_offers: HashMap<OrphanOfferKey, [Option<(Micros, RunId)>; 2]>,
    /// For each such record reached: the tainted runs without record evidence that may have
    /// created it.
    orphan_writers: HashMap<NodeIndex, OrphanWriters>,
    /// Such records queued to be expanded again, with the writers they hold by then.
    orphans_queued: HashSet<NodeIndex>,
    /// Such records a tainted run also claims to have created, expanded as created records.
    creators_expanded: HashSet<NodeIndex>,
    /// Their queue, taken once `queue` is empty and the offers made: a record is expanded
    /// once for all the offers in by then. A record expanded since it was queued is skipped.
    orphan_queue: VecDeque<NodeIndex>,
    /// Offers of tainted runs without record evidence, made once `queue` is empty, the
    /// earliest start first: a run that began later than two others offering the same
    /// records then adds nothing, where taken as they came it would often be offered first.
    pending_offers: Vec<PendingOffer>,
    /// Two names being compared ([`Tracer::names_cmp`]): nodes do not keep theirs.
    names: RefCell<(String, String)>,
    claims: ClaimLimits,
    /// For each seed run the collector received: when its writes to mounts and builders may
    /// have been made, as far as its receipt bounds it (see [`ClaimLimits`]).
    write_spans: HashMap<RunId, WriteSpan>,
    /// Registry artifacts a seed run with a write span pushed: the earliest time a tag may
    /// have held them, from that span.
    pushed_from: HashMap<ArtifactId, Micros>,
    /// For each tainted time-suspect run with a receipt: the latest it may have gone on
    /// writing, when it was sent.
    suspect_ends: HashMap<RunId, Micros>,
}

/// What [`Tracer::find_edge`] found.
enum Edge {
    Found(EdgeIndex),
    /// No such edge; `crowded` when the edges on the side looked at are kept in `edges`, where
    /// a new one goes too.
    Absent {
        crowded: bool,
    },
}

impl<'s, S: Source> Tracer<'s, S> {
    fn new(source: &'s mut S, options: TraceOptions) -> Self {
        Self {
            source,
            ignore_time: options.ignore_time,
            ignore_purges: options.ignore_purges,
            labels_only: options.labels_only,
            cleanings: HashMap::default(),
            selective: HashMap::default(),
            covered: HashMap::default(),
            created: Vec::new(),
            cuts: HashMap::default(),
            graph: DiGraph::new(),
            nodes: Nodes::default(),
            edges: HashMap::default(),
            crowded: HashSet::default(),
            seeds: Vec::new(),
            queue: VecDeque::new(),
            deferred: VecDeque::new(),
            expanded: HashMap::default(),
            reader_floors: HashMap::default(),
            tags_followed: HashSet::default(),
            builder_names: HashMap::default(),
            names: RefCell::default(),
            digest_of: IdMap::default(),
            digests: Vec::new(),
            segments: HashMap::default(),
            roles: IdMap::default(),
            waiting_creators: HashMap::default(),
            unreached_creators: HashMap::default(),
            suspect_writers: HashMap::default(),
            orphan_records: HashMap::default(),
            orphan_reusers: HashMap::default(),
            orphan_offers: HashMap::default(),
            orphan_writers: HashMap::default(),
            orphans_queued: HashSet::default(),
            creators_expanded: HashSet::default(),
            orphan_queue: VecDeque::new(),
            pending_offers: Vec::new(),
            claims: options.claims,
            write_spans: HashMap::default(),
            pushed_from: HashMap::default(),
            suspect_ends: HashMap::default(),
        }
    }

    fn seed(&mut self, seeds: &Seeds) -> Result<(), TraceError<S::Error>> {
        // Tag-only artifacts a seed without a window selected: no other seed floors them.
        let mut unfloored: HashSet<NodeIndex> = HashSet::default();
        for pipeline in &seeds.pipelines {
            let Window { since, until } = pipeline.window;
            // A run the collector received may have begun before or after the start it
            // claims: one claiming to start after the window is in it when its receipt allows
            // a start within it, and so is one claiming to start before it (a run that dates
            // its start back hides from a window that opens after), as it began before the
            // collector received it: every run received since the window opened (less the skew
            // of the collector's clock) is in it, whatever start it claims.
            let mut runs = self
                .source
                .pipeline_runs(&pipeline.name, since, None)?
                .ok_or_else(|| TraceError::UnknownSeed(Unknown::Pipeline(pipeline.name.clone())))?;
            if let Some(since) = since {
                let received = self
                    .source
                    .runs_received_since(&pipeline.name, since.saturating_sub(self.claims.skew))?;
                let known: HashSet<RunId> = runs.iter().map(|r| r.id).collect();
                runs.extend(received.into_iter().filter(|r| !known.contains(&r.id)));
                runs.sort_by_key(|r| (r.started_at, r.id));
            }
            for run in runs {
                if let Some(until) = until
                    && run.started_at > until
                    && !run.time_suspect
                    && (self.source.receipt(run.id)?)
                        .is_none_or(|receipt| self.claims.earliest_start(receipt) > until)
                {
                    continue;
                }
                self.seed_run(run, since)?;
            }
        }
        for seed in &seeds.runs {
            let mut found = Vec::new();
            for reading in &seed.readings {
                found.extend(self.source.runs_by_key(reading)?);
            }
            if found.is_empty() {
                return Err(TraceError::UnknownSeed(Unknown::Run(seed.name.clone())));
            }
            for run in found {
                self.seed_run(run, None)?;
            }
        }
        for cache_ref in &seeds.cache_refs {
            match cache_ref {
                CacheRefSeed::Digest(digest) => self.seed_digest(digest, Kind::CacheRef)?,
                CacheRefSeed::Tag {
                    locator,
                    tag,
                    window,
                } => {
                    let artifacts =
                        self.source
                            .artifacts_by_tag(locator, tag, window.since, window.until)?;
                    if artifacts.is_empty()
                        && (window.since.is_none() && window.until.is_none()
                            || self
                                .source
                                .artifacts_by_tag(locator, tag, None, None)?
                                .is_empty())
                    {
                        return Err(TraceError::UnknownSeed(Unknown::CacheRef {
                            locator: locator.clone(),
                            tag: tag.clone(),
                        }));
                    }
                    // An artifact recorded by tag only stands for whatever the tag held: it is
                    // suspect from `since` on, and so are only the runs that read it then.
                    let floor = window.since.filter(|_| !self.ignore_time);
                    // Seeded by several windows, it keeps the earliest; by one without, none.
                    for info in artifacts {
                        match floor {
                            Some(since) if info.digest.is_empty() => {
                                let first_seen = info.first_seen.max(since);
                                let node = self.seed_artifact(
                                    ArtifactInfo { first_seen, ..info },
                                    Kind::CacheRef,
                                );
                                if !unfloored.contains(&node) {
                                    let reads = Reads::from(since);
                                    self.reader_floors
                                        .entry(node)
                                        .and_modify(|r| *r = r.hull(reads))
                                        .or_insert(reads);
                                }
                            }
                            _ => {
                                let tag_only = info.digest.is_empty();
                                let node = self.seed_artifact(info, Kind::CacheRef);
                                if tag_only {
                                    unfloored.insert(node);
                                    self.reader_floors.remove(&node);
                                }
                            }
                        }
                    }
                }
            }
        }
        for image in &seeds.images {
            self.seed_digest(image, Kind::Image)?;
        }
        for mount in &seeds.mounts {
            let found = self.seeded_mounts(mount)?;
            for info in found {
                let at = match mount.since {
                    Some(since) => Some(since),
                    None => self.source.first_mount_use(info.id)?,
                };
                let node = self.mount_node_from(info)?;
                self.mark_seed(node, Kind::Mount, at);
                if let Some(at) = at {
                    self.mutable_write(node, (at, at), Via::Seed, None, None)?;
                }
            }
        }
        for seed in &seeds.builders {
            let info = self.builder_by_name(&seed.name)?;
            let at = match seed.since {
                Some(since) => Some(since),
                None => self.source.first_builder_use(info.id)?,
            };
            let node = self.builder_node(info.id)?;
            self.mark_seed(node, Kind::Builder, at);
            if let Some(at) = at {
                self.mutable_write(node, (at, at), Via::Seed, None, None)?;
                self.deferred.push_back(Work::BuilderSeed { node, at });
            }
        }
        Ok(())
    }

    /// The mounts a `--mount BUILDER:ID` seed names. Builder names and mount ids can both hold
    /// `:` (`docker@host:/var/run/docker.sock` is a builder), so the value is read at each
    /// `:` in turn: every builder and mount the store holds under one of those readings is
    /// seeded. A value that names none is an unknown mount on the first builder found, else
    /// an unknown builder.
    fn seeded_mounts(&mut self, seed: &MountSeed) -> Result<Vec<MountInfo>, TraceError<S::Error>> {
        let mut found = Vec::new();
        let mut unknown = None;
        for reading in seed.readings() {
            let Some(builder) = self.source.builder_by_name(&reading.builder)? else {
                continue;
            };
            let mut here = Vec::new();
            for candidate in reading.candidates() {
                here = self.source.mounts_by_name(&builder.name, &candidate)?;
                if !here.is_empty() {
                    break;
                }
            }
            // Output names a mount in a namespace `NAMESPACE/ID`, as it names one without a
            // namespace whose id holds a `/`: a name taken from output seeds both.
            if let Some((namespace, id)) = reading.id.split_once('/')
                && !namespace.is_empty()
                && !id.is_empty()
            {
                for info in self.source.mounts_by_name(&builder.name, id)? {
                    if info.namespace == namespace && !here.iter().any(|m| m.id == info.id) {
                        here.push(info);
                    }
                }
            }
            if here.is_empty() {
                unknown.get_or_insert(Unknown::Mount {
                    builder: reading.builder,
                    id: reading.id,
                });
            }
            for info in here {
                if !found.iter().any(|f: &MountInfo| f.id == info.id) {
                    found.push(info);
                }
            }
        }
        if found.is_empty() {
            return Err(TraceError::UnknownSeed(
                unknown.unwrap_or_else(|| Unknown::Builder(seed.builder.clone())),
            ));
        }
        Ok(found)
    }

    fn builder_by_name(&mut self, name: &str) -> Result<BuilderInfo, TraceError<S::Error>> {
        self.source
            .builder_by_name(name)?
            .ok_or_else(|| TraceError::UnknownSeed(Unknown::Builder(name.to_owned())))
    }

    /// Seeds a run, selected by a seed whose window starts at `since`, if it has one.
    fn seed_run(&mut self, run: RunInfo, since: Option<Micros>) -> Result<(), S::Error> {
        let at = run.started_at;
        // For a time-suspect run, every write already comes before all. Without time, the
        // span only tells the plan from when the run may have made builder records.
        if !run.time_suspect
            && let Some(receipt) = self.source.receipt(run.id)?
        {
            // Nothing bounding it (`Micros::MIN`), its writes are taken as a time-suspect run's.
            let from = (self.claims.earliest_start(receipt)).max(since.unwrap_or(Micros::MIN));
            let span = WriteSpan {
                from: from.min(at),
                until: self.claims.latest_end(receipt).max(run.finished_at),
            };
            let kept = self.write_spans.entry(run.id).or_insert(span);
            kept.from = kept.from.min(span.from);
            let from = kept.from;
            // What it pushed may have been under a tag from then on too (any time, when
            // nothing bounds it).
            for (write, _) in self.source.writes(run.id)? {
                if let Write::Exported(artifact) | Write::Produced(artifact) = write {
                    let at = self.pushed_from.entry(artifact).or_insert(from);
                    *at = (*at).min(from);
                }
            }
        }
        let node = self.run_node(run.id, Some(run))?;
        self.relax(
            node,
            Label {
                tainted_at: at,
                via: Via::Seed,
                from: None.into(),
                at,
            },
            None,
        );
        self.mark_seed(node, Kind::Run, Some(at));
        Ok(())
    }

    /// Seeds every artifact with the digest (those in the named repository when there are
    /// any). A repository the seed names where the store holds no artifact with the digest
    /// (a push nobody recorded), or a digest the store holds nowhere, is a bare digest node
    /// that reaches nothing: the plan still acts on the digest there.
    fn seed_digest(&mut self, seed: &DigestSeed, kind: Kind) -> Result<(), S::Error> {
        let digest = seed.digest.as_str();
        let loaded = self.load_digest(None, digest)?;
        let mut artifacts = Vec::new();
        for id in self.digests[loaded].artifacts.clone() {
            artifacts.push(self.source.artifact(id)?);
        }
        let named_here = match &seed.locator {
            Some(locator) => artifacts.iter().any(|a| *a.locator == **locator),
            None => !artifacts.is_empty(),
        };
        if named_here && let Some(locator) = &seed.locator {
            artifacts.retain(|a| *a.locator == **locator);
        }
        if !named_here {
            let name = seed.display_name();
            let node = self.node(Key::Digest(name.clone()), || Node {
                entity: Entity::Digest {
                    digest: seed.digest.clone(),
                    name: name.into(),
                    locator: seed.locator.as_deref().map(CompactString::from),
                },
                seed: None,
                label: None,
            });
            self.mark_seed(node, kind, None);
        }
        // Conceptually tainted forever; reported from the earliest known sighting.
        let state = &self.digests[loaded];
        let sighted: Vec<ArtifactInfo> = artifacts
            .into_iter()
            .map(|info| {
                let first_read = state
                    .readers
                    .iter()
                    .filter(|r| r.2 == info.id)
                    .map(|r| r.3)
                    .min();
                ArtifactInfo {
                    first_seen: first_read
                        .map_or(info.first_seen, |read| read.min(info.first_seen)),
                    ..info
                }
            })
            .collect();
        for info in sighted {
            self.seed_artifact(info, kind);
        }
        Ok(())
    }

    fn seed_artifact(&mut self, info: ArtifactInfo, kind: Kind) -> NodeIndex {
        let at = info.first_seen;
        self.add_role(info.id, kind == Kind::Image, false);
        let node = self.artifact_node_from(info);
        self.relax(
            node,
            Label {
                tainted_at: at,
                via: Via::Seed,
                from: None.into(),
                at,
            },
            None,
        );
        self.mark_seed(node, kind, Some(at));
        node
    }

    /// Notes that the artifact was used as an image (built, or built on), or else as a cache,
    /// and whether a tainted run pushed it.
    fn add_role(&mut self, artifact: ArtifactId, image: bool, pushed: bool) {
        let mut roles = self.roles.get(artifact).copied().unwrap_or_default();
        if image {
            roles.image = true;
        } else {
            roles.cache = true;
        }
        roles.pushed |= pushed;
        self.roles.insert(artifact, roles);
    }

    fn mark_seed(&mut self, node: NodeIndex, kind: Kind, at: Option<Micros>) {
        let n = &mut self.graph[node];
        match &mut n.seed {
            Some(mark) => {
                mark.at = match (mark.at, at) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
            None => {
                n.seed = Some(Box::new(SeedMark { kind, at }));
                self.seeds.push(node);
            }
        }
    }

    fn fixpoint(&mut self) -> Result<(), S::Error> {
        loop {
            let work = if let Some(work) = self.queue.pop_front() {
                work
            } else if !self.pending_offers.is_empty() {
                self.make_offers()?;
                continue;
            } else if let Some(node) = self.orphan_queue.pop_front() {
                if !self.orphans_queued.contains(&node) {
                    continue;
                }
                Work::Record(node)
            } else if let Some(work) = self.deferred.pop_front() {
                work
            } else {
                break;
            };
            match work {
                Work::Run(node) => self.expand_run(node)?,
                Work::Artifact(node) => self.expand_artifact(node)?,
                Work::Record(node) => self.expand_record(node)?,
                Work::Readers {
                    node,
                    segment,
                    at,
                    writer,
                } => self.expand_readers(node, segment, at, writer)?,
                Work::BuilderSeed { node, at } => self.expand_builder_seed(node, at)?,
                Work::SuspectReaders { node, writer } => self.expand_suspect(node, writer)?,
            }
        }
        Ok(())
    }

    fn expand_run(&mut self, node: NodeIndex) -> Result<(), S::Error> {
        let Entity::Run { info, .. } = &self.graph[node].entity else {
            return Ok(());
        };
        // Record evidence a trace believes: none from a run whose word is doubted.
        let (id, builder, started_at, finished_at, time_suspect, has_records) = (
            info.id,
            info.builder,
            info.started_at,
            info.finished_at,
            info.time_suspect,
            info.has_believed_records(),
        );
        // What a run recorded over a limit may have left out records it created.
        let complete_records = has_records && !info.truncated;
        // A seed run's writes to mounts and builders count from the earliest time it may
        // have made them, and went on until the latest. A run nothing bounds is taken as
        // time-suspect instead.
        let span = self.seed_span(id);
        let unbounded = span.is_some_and(WriteSpan::unbounded);
        let suspect = time_suspect || unbounded;
        let from = |at: Micros| span.map_or(at, |span| span.counted_from(at));
        let until = |done: Micros| span.map_or(done, |span| span.until.max(done));
        if time_suspect && let Some(receipt) = self.source.receipt(id)? {
            let done = finished_at.max(started_at);
            self.suspect_ends
                .insert(id, self.claims.latest_end(receipt).max(done));
        }
        // The records it created there, which a selective prune of the builder asks after
        // (none is loaded when purges are not), in a buffer kept between runs.
        let mut created = std::mem::take(&mut self.created);
        created.clear();
        let track_created = !(self.ignore_time || self.ignore_purges);
        for (write, at) in self.source.writes(id)? {
            let offer = |via| Label {
                tainted_at: at,
                via,
                from: Some(node).into(),
                at,
            };
            match write {
                // A failed run's exports and images count too: BuildKit can push an image
                // and fail later (a cache export, a later step of the job), and a recorded
                // digest existed.
                Write::Exported(artifact) | Write::Produced(artifact) => {
                    let exported = matches!(write, Write::Exported(_));
                    self.add_role(artifact, !exported, true);
                    let target = self.artifact_node(artifact)?;
                    let via = if exported {
                        Via::Exported
                    } else {
                        Via::Produced
                    };
                    self.relax(target, offer(via), None);
                    // Written by a tainted run: every reader, whenever it read.
                    if self.reader_floors.remove(&target).is_some() {
                        self.queue.push_back(Work::Artifact(target));
                    }
                }
                Write::Mount(mount) => {
                    let target = self.mount_node(mount)?;
                    let done = until(finished_at.max(at));
                    let at = from(at);
                    let writer = Writer {
                        run: id,
                        suspect,
                        created: None,
                    };
                    self.mutable_write(
                        target,
                        (at, done),
                        Via::MountWrite,
                        Some(node),
                        Some(writer),
                    )?;
                    if suspect {
                        self.suspect_write(target, id)?;
                    }
                }
                Write::CreatedRecord(record) => {
                    // A record that carries no taint (a cache mount's, the build context's, a
                    // pulled layer's) is no record an incident names; one of another builder
                    // is none its prune removes.
                    let Some(target) = self.record_node(record)? else {
                        continue;
                    };
                    if track_created
                        && matches!(&self.graph[target].entity,
                            Entity::Record { info, .. } if Some(info.builder) == builder)
                    {
                        created.push(record);
                    }
                    self.relax(target, offer(Via::RecordCreated), None);
                    // Its other creators are reached if this one made it by their finish: an
                    // expanded record looks at those not reached yet again, and one reached
                    // only as a record no recorded run created looks at them for the first
                    // time.
                    if self.unreached_creators.contains_key(&target)
                        || (self.orphan_writers.contains_key(&target)
                            && !self.creators_expanded.contains(&target))
                    {
                        self.queue.push_back(Work::Record(target));
                    }
                    // Creators that reused the record wait for another creator.
                    if let Some(waiting) = self.waiting_creators.get_mut(&target) {
                        let reached: Vec<(RunRef, Micros)> =
                            waiting.extract_if(.., |(run, _)| run.id != id).collect();
                        for (run, at) in reached {
                            self.reuse(target, run, at, Micros::MIN)?;
                        }
                    }
                }
            }
        }
        if let Some(builder) = builder {
            let target = self.builder_node(builder)?;
            let done = until(finished_at.max(started_at));
            let started_at = from(started_at);
            let writer = Writer {
                run: id,
                suspect,
                created: (complete_records && track_created).then_some(created.as_slice()),
            };
            self.mutable_write(
                target,
                (started_at, done),
                Via::RanOn,
                Some(node),
                Some(writer),
            )?;
            if suspect {
                self.suspect_write(target, id)?;
            }
            if !has_records {
                let floor = if self.ignore_time || suspect {
                    Micros::MIN
                } else {
                    started_at
                };
                self.pending_offers.push(PendingOffer {
                    builder,
                    writer: node,
                    builder_node: target,
                    offer: OrphanWriter { floor, run: id },
                    started_at,
                    done,
                });
            }
        }
        self.created = created;
        Ok(())
    }

    /// Makes the offers pending, the earliest start first.
    fn make_offers(&mut self) -> Result<(), S::Error> {
        let mut pending = std::mem::take(&mut self.pending_offers);
        pending.sort_unstable_by_key(|o| (o.started_at, o.offer.run, o.builder));
        for o in pending.drain(..) {
            self.offer_orphans(
                o.builder,
                (o.writer, o.builder_node),
                o.offer,
                (o.started_at, o.done),
            )?;
        }
        // The buffer is kept for the next round.
        if self.pending_offers.is_empty() {
            self.pending_offers = pending;
        }
        Ok(())
    }

    /// A tainted run without record evidence may have created, unrecorded, a record of its
    /// builder that no recorded run created, unless the record was reused before the run
    /// started, or a prune of the builder came between the run's finish and that first reuse
    /// (the record then came after it). Such a record carries taint to the runs that reused
    /// it from the run's start on.
    fn offer_orphans(
        &mut self,
        builder: BuilderId,
        (writer, builder_node): (NodeIndex, NodeIndex),
        offer: OrphanWriter,
        (started_at, done): (Micros, Micros),
    ) -> Result<(), S::Error> {
        let orphans = match self.orphan_records.get(&builder) {
            Some(orphans) => Rc::clone(orphans),
            None => {
                let orphans = Rc::new(self.orphans_of(builder)?);
                self.orphan_records.insert(builder, Rc::clone(&orphans));
                orphans
            }
        };
        // A record first reused before the run started was not its: those are skipped at
        // once when the run's start counts.
        let reused = if offer.floor == Micros::MIN {
            &orphans.reused[..]
        } else {
            let first = orphans
                .reused
                .partition_point(|&(first, _)| first < started_at);
            &orphans.reused[first..]
        };
        let records = (orphans.unreused.iter().map(|&record| (None, record)))
            .chain(reused.iter().map(|&(first, record)| (Some(first), record)));
        // The first prune after its finish that removed what the run may have made there.
        let made_by = Writer {
            run: offer.run,
            suspect: false,
            created: None,
        };
        let clearing = self.clearing(builder_node, done, (started_at, Some(&made_by)));
        let cleared_by = self.segment_end(builder_node, clearing);
        // Two other runs that began earlier, cleared by the same purge (or by none, for runs
        // whose start does not count), reach every record this one would, earlier: it adds
        // no label (nor names anything for the purges their reusers were kept out by), and
        // no evidence either: an explanation or the graph goes through those two. (Every
        // tainted run on a builder offering every orphan record would otherwise draw an
        // edge per run and record.)
        let open = offer.floor == Micros::MIN;
        let key = (builder, cleared_by.filter(|_| !open), open);
        let earliest = self.orphan_offers.entry(key).or_default();
        if earliest
            .iter()
            .all(|e| e.is_some_and(|(start, run)| start < started_at && run != offer.run))
        {
            return Ok(());
        }
        keep_earliest(earliest, (started_at, offer.run));
        for (first_reuse, record) in records {
            // (The records first reused before the run started were left out above.) A prune
            // between its finish and the record's first reuse kept the record's reusers out:
            // listed with the purges.
            if offer.floor != Micros::MIN
                && let Some(first) = first_reuse
                && let Some(prune) = cleared_by.filter(|&p| p < first)
            {
                if !self.orphan_reusers.contains_key(&record) {
                    let reusers = (self.source.record_reusers(record)?.into_iter())
                        .map(|(run, at)| (run.id, at))
                        .collect();
                    self.orphan_reusers.insert(record, reusers);
                }
                let kept_out: Vec<RunId> = (self.orphan_reusers[&record].iter())
                    .map(|&(run, _)| run)
                    .filter(|&r| r != offer.run)
                    .collect();
                if !kept_out.is_empty() {
                    self.cuts
                        .entry((builder_node, prune))
                        .or_default()
                        .extend(kept_out);
                }
                continue;
            }
            let Some(target) = self.record_node(record)? else {
                continue;
            };
            let label = Label {
                tainted_at: started_at,
                via: Via::RanOn,
                from: Some(writer).into(),
                at: started_at,
            };
            self.relax(target, label, None);
            // Its reusers are reached again only when a reuser can be reached earlier, once
            // for all the offers made before it is expanded again.
            if keep_two(self.orphan_writers.entry(target).or_default(), offer)
                && self.orphans_queued.insert(target)
            {
                self.orphan_queue.push_back(target);
            }
        }
        Ok(())
    }

    /// A builder's records that no recorded run created, by their first reuse.
    fn orphans_of(&mut self, builder: BuilderId) -> Result<Orphans, S::Error> {
        let mut orphans = Orphans::default();
        for record in self.source.orphan_records(builder)? {
            match self.source.record_first_reuse(record)? {
                Some(first) => orphans.reused.push((first, record)),
                None => orphans.unreused.push(record),
            }
        }
        orphans.reused.sort_unstable();
        Ok(orphans)
    }

    /// A time-suspect run wrote a tainted mount (or ran on a tainted builder). Its claimed
    /// time proves nothing, so the write is taken as earlier than every read and no purge as
    /// coming after it: the first such writer's readers are all queried, and that writer,
    /// which its own query leaves out, is reached by the next one.
    fn suspect_write(&mut self, node: NodeIndex, writer: RunId) -> Result<(), S::Error> {
        match self.suspect_writers.get_mut(&node) {
            None => {
                let first = SuspectWriters {
                    first: writer,
                    other: false,
                };
                self.suspect_writers.insert(node, first);
                self.deferred
                    .push_back(Work::SuspectReaders { node, writer });
                Ok(())
            }
            Some(seen) if seen.first != writer && !seen.other => {
                seen.other = true;
                let first = seen.first;
                // The first writer is time-suspect: no purge keeps it out.
                self.reach_writer(node, first, Micros::MIN, None)
            }
            Some(_) => Ok(()),
        }
    }

    /// Every reader of a mount (every run without record evidence on a builder) but the
    /// time-suspect writer, reached as if its write came first and no purge followed it.
    fn expand_suspect(&mut self, node: NodeIndex, writer: RunId) -> Result<(), S::Error> {
        let (readers, via) = match &self.graph[node].entity {
            Entity::Mount(mount) => (
                self.source.mount_readers(mount.id, Micros::MIN)?,
                Via::MountRead,
            ),
            Entity::Builder(builder) => {
                let runs = self
                    .source
                    .unverified_builder_runs(builder.id, Micros::MIN)?;
                let runs = runs.into_iter().map(|run| (run, run.finished_at));
                (runs.collect(), Via::BuilderCacheUnverified)
            }
            _ => return Ok(()),
        };
        for (run, read_at) in readers {
            if run.id != writer {
                self.reach(node, run, Micros::MIN, read_at, via, None)?;
            }
        }
        Ok(())
    }

    fn expand_artifact(&mut self, node: NodeIndex) -> Result<(), S::Error> {
        let (Entity::Artifact { info, .. }, Some(label)) =
            (&self.graph[node].entity, self.graph[node].label)
        else {
            return Ok(());
        };
        let id = info.id;
        if info.digest.is_empty() {
            let reads = self.reader_floors.get(&node).copied().unwrap_or(Reads::ALL);
            if self
                .expanded
                .get(&node)
                .is_some_and(|done| done.covers(reads))
            {
                return Ok(());
            }
            self.expanded.insert(node, reads);
            for (run, read, at) in self.source.artifact_readers(id)? {
                // A time-suspect reader's read time proves nothing.
                if reads.holds(at) || run.time_suspect {
                    self.taint_reader(run, read, id, node, at, reads.from)?;
                }
            }
            return Ok(());
        }
        let follows = info.backend == Backend::Registry && !info.tags.is_empty();
        let loaded = match self.digest_of.get(id) {
            Some(&loaded) => loaded as usize,
            None => {
                let digest = info.digest.clone();
                let loaded = self.load_digest(Some(id), &digest)?;
                self.digest_of.insert(id, state_slot(loaded));
                loaded
            }
        };
        if follows && self.tags_followed.insert(node) {
            self.follow_tags(node)?;
        }
        if label.via != Via::SameDigest {
            self.offer_origin(loaded, node)?;
        }
        let state = &mut self.digests[loaded];
        if std::mem::replace(&mut state.readers_done, true) {
            return Ok(());
        }
        for (run, read, artifact, at) in std::mem::take(&mut state.readers) {
            let from = self.artifact_node(artifact)?;
            self.taint_reader(run, read, artifact, from, at, Micros::MIN)?;
        }
        Ok(())
    }

    /// Taints the refs recorded by tag only (their digest never learnt) in the locator of a
    /// tainted registry artifact under one of its tags: the tag may have held its digest when
    /// they were read, from when the digest was first seen there on. A read before that
    /// cannot have been of it.
    fn follow_tags(&mut self, node: NodeIndex) -> Result<(), S::Error> {
        let Entity::Artifact { info, .. } = &self.graph[node].entity else {
            return Ok(());
        };
        let (id, locator, digest, tags, seen) = (
            info.id,
            info.locator.clone(),
            info.digest.clone(),
            info.tags.clone(),
            info.first_seen,
        );
        let mut reads = None;
        for tag in &tags {
            for held in self.source.tag_only_artifacts(&locator, tag)? {
                let reads = match reads {
                    Some(reads) => reads,
                    None => *reads.insert(self.held_reads(id, &locator, &digest, seen)?),
                };
                // Its node may show a tag seed's window start as its first sighting.
                let info = self.source.artifact(held)?;
                let first_seen = info.first_seen;
                let target = self.artifact_node_from(info);
                let label = Label {
                    tainted_at: first_seen.max(seen),
                    via: Via::TagHeld,
                    from: Some(node).into(),
                    at: seen,
                };
                // Tainted with no bounds (a tainted run wrote it, a seed without a window
                // selected it): every reader is already reached.
                let unbounded =
                    self.graph[target].label.is_some() && !self.reader_floors.contains_key(&target);
                if !unbounded {
                    self.reader_floors
                        .entry(target)
                        .and_modify(|r| *r = r.hull(reads))
                        .or_insert(reads);
                }
                self.relax(target, label, None);
                self.queue.push_back(Work::Artifact(target));
            }
        }
        Ok(())
    }

    /// The reads of a tag that may have been of a digest seen under it: from its first
    /// sighting in the repository (any time, when a time-suspect run may have claimed it) until
    /// a recorded purge deleted it there.
    fn held_reads(
        &mut self,
        artifact: ArtifactId,
        locator: &str,
        digest: &str,
        seen: Micros,
    ) -> Result<Reads, S::Error> {
        if self.ignore_time {
            return Ok(Reads::ALL);
        }
        let from = if self.source.suspect_sighting(artifact)? {
            Micros::MIN
        } else {
            (self.pushed_from.get(&artifact)).map_or(seen, |&pushed| pushed.min(seen))
        };
        let until = if self.ignore_purges {
            None
        } else {
            match self.source.manifest_deleted_at(locator, digest)? {
                // Named there again after: pushed back, or still served.
                Some(at) if self.source.named_after(artifact, at)? => None,
                deleted => deleted,
            }
        };
        Ok(Reads {
            from,
            until: until.unwrap_or(Micros::MAX),
        })
    }

    /// Loads every artifact with the digest and every run that read one; returns the digest's
    /// place in `digests`. A digest is kept once: its artifacts are looked up by id after
    /// the first load (only a seeded digest is asked for again by its value).
    fn load_digest(
        &mut self,
        artifact: Option<ArtifactId>,
        digest: &str,
    ) -> Result<usize, S::Error> {
        let (mut artifacts, readers) = match artifact {
            Some(artifact) => self.source.artifact_digest(artifact, digest)?,
            None => self.source.digest(digest)?,
        };
        if let Some(&loaded) = artifacts.first().and_then(|&a| self.digest_of.get(a)) {
            return Ok(loaded as usize);
        }
        for &(_, _, artifact, _) in &readers {
            if !artifacts.contains(&artifact) {
                artifacts.push(artifact);
            }
        }
        let loaded = self.digests.len();
        for &artifact in &artifacts {
            self.digest_of.insert(artifact, state_slot(loaded));
        }
        self.digests.push(DigestState {
            artifacts: SmallVec::from_slice(&artifacts),
            readers,
            origin: None,
            readers_done: false,
        });
        Ok(loaded)
    }

    /// Offers an artifact with its own evidence as the origin of its digest. When it becomes
    /// the origin, or the origin's time improves, every other artifact with the digest is
    /// tainted as a copy from the same time.
    fn offer_origin(&mut self, loaded: usize, node: NodeIndex) -> Result<(), S::Error> {
        let state = &self.digests[loaded];
        let takes_over = match state.origin {
            None => true,
            Some(origin) if origin == node => true,
            // Copies with equal evidence (one run exporting the bytes to two repositories)
            // are told apart by name.
            Some(origin) => {
                let label = |n: NodeIndex| self.graph[n].label.expect("tainted");
                self.compare(&label(node), &label(origin))
                    .then_with(|| self.names_cmp(Some(node), Some(origin)))
                    .is_lt()
            }
        };
        if !takes_over {
            return Ok(());
        }
        let count = state.artifacts.len();
        self.digests[loaded].origin = Some(node);
        let at = self.graph[node].label.expect("tainted").tainted_at;
        for i in 0..count {
            let copy = self.artifact_node(self.digests[loaded].artifacts[i])?;
            if copy != node {
                self.relax(
                    copy,
                    Label {
                        tainted_at: at,
                        via: Via::SameDigest,
                        from: Some(node).into(),
                        at,
                    },
                    None,
                );
            }
        }
        Ok(())
    }

    /// Taints a run that read a tainted artifact at `at`: from its start, or from `floor` (the
    /// start of a tag seed's window, for an artifact recorded by tag only) when that is later.
    fn taint_reader(
        &mut self,
        run: RunRef,
        read: ArtifactRead,
        artifact: ArtifactId,
        from: NodeIndex,
        at: Micros,
        floor: Micros,
    ) -> Result<(), S::Error> {
        let via = match read {
            ArtifactRead::Imported => Via::ImportedDigest,
            ArtifactRead::UsedBase => Via::BaseImage,
        };
        self.add_role(artifact, read == ArtifactRead::UsedBase, false);
        // The bytes never change: the reader is tainted whenever it ran.
        let window = (run.started_at, at);
        self.taint_run(
            run,
            Label {
                tainted_at: window.0.max(floor),
                via,
                from: Some(from).into(),
                at,
            },
            Some(window),
        )?;
        Ok(())
    }

    /// The record's node, made when first met; `None` for a record that carries no taint.
    fn record_node(&mut self, record: RecordId) -> Result<Option<NodeIndex>, S::Error> {
        if let Some(&node) = self.nodes.get(&Key::Record(record)) {
            return Ok(Some(node));
        }
        let info = self.source.record(record)?;
        if !record_carries_taint(&info) {
            return Ok(None);
        }
        let builder = self.builder_name(info.builder)?;
        Ok(Some(self.node(Key::Record(record), || Node {
            entity: Entity::Record { info, builder },
            seed: None,
            label: None,
        })))
    }

    fn expand_record(&mut self, node: NodeIndex) -> Result<(), S::Error> {
        let Entity::Record { info, .. } = &self.graph[node].entity else {
            return Ok(());
        };
        let id = info.id;
        if let Some(writers) = self.orphan_writers.get(&node).copied() {
            self.orphans_queued.remove(&node);
            // No recorded creator: reached from the earliest tainted run without record
            // evidence that may have made it, other than the reuser itself.
            for (run, at) in self.source.record_reusers(id)? {
                let Some(writer) = writers.iter().flatten().find(|w| w.run != run.id) else {
                    continue;
                };
                if at >= writer.floor || run.time_suspect {
                    self.reuse(node, run, at, writer.floor)?;
                }
            }
            // A tainted run's claim to have created it (a run whose record evidence is
            // doubted, which leaves it a record no recorded run created) reaches the other
            // claimants and the reusers as any creation does, below: once, then again for
            // the claimants not reached yet.
            if self.creations_of(node).is_empty()
                || (self.creators_expanded.contains(&node)
                    && !self.unreached_creators.contains_key(&node))
            {
                return Ok(());
            }
            self.creators_expanded.insert(node);
        }
        // Runs that recorded creating it too ran beside a creator: each lists what either
        // made, so they are reached as if they reused it, once another tainted creator made it
        // by their finish (or whenever, when times are ignored or not believed): a run that
        // finished before a tainted run began used nothing that run says it made.
        let (first, mut pending) = match self.unreached_creators.remove(&node) {
            Some(pending) => (false, pending),
            None => (true, self.source.record_cocreators(id)?),
        };
        if !pending.is_empty() {
            // Another creator made it by a run's finish when one of the two earliest does, or
            // one of two whose times are not believed: a look at each run costs the same
            // however many claim the record.
            let mut made = self.creations_of(node);
            made.sort_unstable_by_key(|&(creator, at, suspect)| (suspect, at, creator));
            let earliest: SmallVec<[(RunId, Micros); 2]> = made
                .iter()
                .filter(|c| !c.2)
                .take(2)
                .map(|&(creator, at, _)| (creator, at))
                .collect();
            let suspects: SmallVec<[RunId; 2]> =
                made.iter().filter(|c| c.2).take(2).map(|c| c.0).collect();
            let ignore_time = self.ignore_time;
            // Two runners' clocks are compared: the one may be behind by the skew allowed.
            let skew = self.claims.skew.max(0);
            let reached: Vec<(RunRef, Micros)> = pending
                .extract_if(.., |(run, _)| {
                    ignore_time
                        || run.time_suspect
                        || suspects.iter().any(|&s| s != run.id)
                        || earliest
                            .iter()
                            .find(|&&(creator, _)| creator != run.id)
                            .is_some_and(|&(_, at)| at <= run.finished_at.saturating_add(skew))
                })
                .collect();
            if !pending.is_empty() {
                self.unreached_creators.insert(node, pending);
            }
            for (run, at) in reached {
                self.reuse(node, run, at, Micros::MIN)?;
            }
        }
        if !first {
            return Ok(());
        }
        for (run, at) in self.source.record_reusers(id)? {
            // A run that created the record does not taint itself through it; another
            // creator found later reaches it.
            if self.only_creator(node, run.id) {
                self.waiting_creators
                    .entry(node)
                    .or_default()
                    .push((run, at));
                continue;
            }
            self.reuse(node, run, at, Micros::MIN)?;
        }
        Ok(())
    }

    /// When seed run `run` may have written, if a span bounds it and times count.
    fn seed_span(&self, run: RunId) -> Option<WriteSpan> {
        self.write_spans
            .get(&run)
            .copied()
            .filter(|_| !self.ignore_time)
    }

    /// The record's tainted creators found so far: each run, when it made the record (from
    /// the earliest time a seed's writes count from), and whether its times are not believed.
    fn creations_of(&self, record: NodeIndex) -> SmallVec<[(RunId, Micros, bool); 4]> {
        self.graph
            .edges_directed(record, Direction::Incoming)
            .filter(|edge| edge.weight().via == Via::RecordCreated)
            .filter_map(|edge| match &self.graph[edge.source()].entity {
                Entity::Run { info, .. } => {
                    let at = edge.weight().at;
                    let span = self.seed_span(info.id);
                    let made = span.map_or(at, |span| span.counted_from(at));
                    let unbounded = span.is_some_and(WriteSpan::unbounded);
                    Some((info.id, made, info.time_suspect || unbounded))
                }
                _ => None,
            })
            .collect()
    }

    /// Whether the run is the only tainted creator of the record found so far.
    fn only_creator(&self, record: NodeIndex, run: RunId) -> bool {
        let Some(&run) = self.nodes.get(&Key::Run(run)) else {
            return false;
        };
        let mut creators = self
            .graph
            .edges_directed(record, Direction::Incoming)
            .filter(|edge| edge.weight().via == Via::RecordCreated)
            .map(|edge| edge.source());
        creators.clone().any(|c| c == run) && creators.all(|c| c == run)
    }

    /// Taints a run that reused a tainted record at `at`: from its start, or from `floor` (the
    /// start of the run that may have made a record no recorded run created) when later.
    fn reuse(
        &mut self,
        record: NodeIndex,
        run: RunRef,
        at: Micros,
        floor: Micros,
    ) -> Result<(), S::Error> {
        let window = (run.started_at, at);
        self.taint_run(
            run,
            Label {
                tainted_at: window.0.max(floor),
                via: Via::BuilderRecord,
                from: Some(record).into(),
                at,
            },
            Some(window),
        )?;
        Ok(())
    }

    /// The runs a tainted write at `at` to a mount (or a tainted run's start on a builder),
    /// whose writer finished in `segment`, reaches: read at or after it, and not started after
    /// the purge that ends the segment.
    fn expand_readers(
        &mut self,
        node: NodeIndex,
        segment: usize,
        at: Micros,
        writer: Option<RunId>,
    ) -> Result<(), S::Error> {
        if self.segments[&node][&segment].first < at {
            return Ok(());
        }
        let since = if self.ignore_time { Micros::MIN } else { at };
        let cleared_by = self.segment_end(node, segment);
        let (readers, via) = match &self.graph[node].entity {
            Entity::Mount(mount) => (self.source.mount_readers(mount.id, since)?, Via::MountRead),
            Entity::Builder(builder) => {
                let runs = self.source.unverified_builder_runs(builder.id, since)?;
                let runs = runs.into_iter().map(|run| (run, run.finished_at));
                (runs.collect(), Via::BuilderCacheUnverified)
            }
            _ => return Ok(()),
        };
        for (run, read_at) in readers {
            if Some(run.id) != writer {
                self.reach(node, run, at, read_at, via, cleared_by)?;
            }
        }
        Ok(())
    }

    /// Taints a run that read a mutable node (a mount, or a builder's cache) at `read_at`,
    /// after a tainted write at `at`: from its start, or from the write when that is later,
    /// unless it started after the purge that cleared the write. A time-suspect run's claimed
    /// start cannot put it after a purge.
    fn reach(
        &mut self,
        node: NodeIndex,
        run: RunRef,
        at: Micros,
        read_at: Micros,
        via: Via,
        cleared_by: Option<Micros>,
    ) -> Result<(), S::Error> {
        if let Some(purge) = cleared_by.filter(|&purge| purge < run.started_at && !run.time_suspect)
        {
            self.cuts.entry((node, purge)).or_default().push(run.id);
            return Ok(());
        }
        self.taint_run(
            run,
            Label {
                tainted_at: run.started_at.max(at),
                via,
                from: Some(node).into(),
                at: read_at,
            },
            Some((run.started_at, read_at)),
        )?;
        Ok(())
    }

    /// A seeded builder's cache is suspect as a whole: every run with record evidence that
    /// created or reused a record on it and was on it from `at` on (finished then or later,
    /// though a record it created is dated at its start), until a prune, is tainted.
    fn expand_builder_seed(&mut self, node: NodeIndex, at: Micros) -> Result<(), S::Error> {
        let Entity::Builder(builder) = &self.graph[node].entity else {
            return Ok(());
        };
        let builder = builder.id;
        let since = if self.ignore_time { Micros::MIN } else { at };
        let cleared_by = self.next_purge(node, at);
        for (run, used_at) in self.source.builder_record_users(builder, since)? {
            // A run that spans the seed time used the cache at it, whenever its record events
            // are dated.
            let used_at = if run.time_suspect {
                used_at
            } else {
                used_at.max(since)
            };
            self.reach(node, run, at, used_at, Via::BuilderRecord, cleared_by)?;
        }
        Ok(())
    }

    /// Which purge segment of a mount or builder a time falls in.
    fn segment(&self, node: NodeIndex, at: Micros) -> usize {
        cleanings_of(&self.cleanings, node).partition_point(|&p| p <= at)
    }

    /// The purge segment a write at `at` that went on until `done` falls in: it ends at the
    /// first later purge that clears the write. A selective prune of a builder clears only
    /// the writers it covers (a seed's write, by no run, when it pruned every record used
    /// since), and the runs it covers are noted for the chains of evidence.
    fn clearing(
        &mut self,
        node: NodeIndex,
        done: Micros,
        (at, writer): (Micros, Option<&Writer>),
    ) -> usize {
        let first = self.segment(node, done);
        // Without a selective prune, the first purge after `done` clears every write.
        let Some(prunes) = self.selective.get(&node) else {
            return first;
        };
        let mut clearing = None;
        for (i, prune) in prunes.iter().enumerate().skip(first) {
            let covers = match (prune, writer) {
                (None, _) => true,
                (Some(prune), None) => prune.covers(at, false, None),
                (Some(prune), Some(writer)) => {
                    let covers = prune.covers(at, writer.suspect, writer.created);
                    if covers {
                        self.covered
                            .entry((node, i))
                            .or_default()
                            .insert(writer.run);
                    }
                    covers
                }
            };
            if covers && clearing.is_none() {
                clearing = Some(i);
            }
        }
        clearing.unwrap_or(prunes.len())
    }

    /// The purge that ends a segment: it clears the writes whose writers finished in the
    /// segment.
    fn segment_end(&self, node: NodeIndex, segment: usize) -> Option<Micros> {
        cleanings_of(&self.cleanings, node).get(segment).copied()
    }

    /// The first purge of a mount or builder after a seed's time `at`: readers that start
    /// after it did not see the seeded cache. `None` when time is ignored.
    fn next_purge(&mut self, node: NodeIndex, at: Micros) -> Option<Micros> {
        let clearing = self.clearing(node, at, (at, None));
        self.segment_end(node, clearing)
    }

    /// Records a tainted write at `at` to a mount (or a tainted run on a builder, or a seed)
    /// by a writer that went on writing until `done` (its finish; a seed's time), and queues
    /// its readers unless an earlier write whose writer finished in the same purge segment
    /// already reached them; the writer of that earlier write, which its own query left out,
    /// is offered this one.
    ///
    /// A purge clears a write only when the writer had finished: one during the run leaves
    /// what the rest of the run wrote, so the write reaches readers up to the first purge
    /// after `done`, and is kept with the writes of the segment that purge ends.
    fn mutable_write(
        &mut self,
        node: NodeIndex,
        (at, done): (Micros, Micros),
        via: Via,
        from: Option<NodeIndex>,
        who: Option<Writer>,
    ) -> Result<(), S::Error> {
        let writer = who.as_ref().map(|w| w.run);
        self.relax(
            node,
            Label {
                tainted_at: at,
                via,
                from: from.into(),
                at,
            },
            None,
        );
        let segment = self.clearing(node, done, (at, who.as_ref()));
        let writes = self.segments.entry(node).or_default();
        // A run writes a mount or a builder once, so two writes with one writer are seeds.
        let left_out = match writes.get_mut(&segment) {
            None => {
                writes.insert(
                    segment,
                    SegmentWrites {
                        first: at,
                        writer,
                        other: None,
                    },
                );
                self.deferred.push_back(Work::Readers {
                    node,
                    segment,
                    at,
                    writer,
                });
                None
            }
            Some(seen) if at < seen.first => {
                let other = if seen.writer == writer {
                    seen.other
                } else {
                    Some(seen.first)
                };
                *seen = SegmentWrites {
                    first: at,
                    writer,
                    other,
                };
                self.deferred.push_back(Work::Readers {
                    node,
                    segment,
                    at,
                    writer,
                });
                writer.zip(other)
            }
            Some(seen) => match seen.writer {
                Some(first) if Some(first) != writer && seen.other.is_none_or(|o| at < o) => {
                    seen.other = Some(at);
                    Some((first, at))
                }
                _ => None,
            },
        };
        match left_out {
            Some((run, at)) => {
                let cleared_by = self.segment_end(node, segment);
                self.reach_writer(node, run, at, cleared_by)
            }
            None => Ok(()),
        }
    }

    /// Offers a write at `at` to the run whose own write to the mount or builder is earlier,
    /// and whose query left it out: it is reached when it read the mount (or ran on the
    /// builder without record evidence) at or after `at`, and did not start after the purge
    /// that clears the write (`cleared_by`).
    fn reach_writer(
        &mut self,
        node: NodeIndex,
        run: RunId,
        at: Micros,
        cleared_by: Option<Micros>,
    ) -> Result<(), S::Error> {
        let Some(&run_node) = self.nodes.get(&Key::Run(run)) else {
            return Ok(());
        };
        let Entity::Run { info, .. } = &self.graph[run_node].entity else {
            return Ok(());
        };
        let (reader, builder, has_records) = (
            RunRef::from(info),
            info.builder,
            info.has_believed_records(),
        );
        let (read_at, via) = match &self.graph[node].entity {
            Entity::Mount(mount) => {
                let mount = mount.id;
                match self.source.mount_read(run, mount)? {
                    Some(read_at) => (read_at, Via::MountRead),
                    None => return Ok(()),
                }
            }
            Entity::Builder(b) if builder == Some(b.id) && !has_records => {
                (reader.finished_at, Via::BuilderCacheUnverified)
            }
            _ => return Ok(()),
        };
        // A time-suspect reader's read time proves nothing.
        if !self.ignore_time && !reader.time_suspect && read_at < at {
            return Ok(());
        }
        self.reach(node, reader, at, read_at, via, cleared_by)
    }

    fn taint_run(
        &mut self,
        run: RunRef,
        label: Label,
        reader: Option<(Micros, Micros)>,
    ) -> Result<NodeIndex, S::Error> {
        let node = self.run_node(run.id, None)?;
        self.relax(node, label, reader);
        Ok(node)
    }

    /// The run's node; a run met for the first time is described from `info`, or else from
    /// the source.
    fn run_node(&mut self, run: RunId, info: Option<RunInfo>) -> Result<NodeIndex, S::Error> {
        if let Some(&node) = self.nodes.get(&Key::Run(run)) {
            return Ok(node);
        }
        let info = match info {
            Some(info) => info,
            None => self.source.run(run)?,
        };
        if let Some(builder) = info.builder {
            // Named in output from the trace's builder names.
            self.builder_name(builder)?;
        }
        Ok(self.node(Key::Run(run), || Node {
            entity: Entity::Run { info },
            seed: None,
            label: None,
        }))
    }

    /// Offers a label to a node and records the evidence edge; queues the node's expansion
    /// when it is newly tainted (or, for an artifact, when its time improved).
    fn relax(&mut self, node: NodeIndex, label: Label, reader: Option<(Micros, Micros)>) {
        // Same-digest evidence is drawn once the traversal is done (see `copy_edges`).
        let kept =
            label.via != Via::SameDigest && (!self.labels_only || label.via == Via::RecordCreated);
        if let Some(from) = label.from.get().filter(|_| kept) {
            match self.find_edge(from, node, label.via) {
                Edge::Found(edge) => {
                    let evidence = &mut self.graph[edge];
                    if label.at < evidence.at {
                        evidence.at = label.at;
                        evidence.reader = reader;
                    }
                }
                Edge::Absent { crowded } => {
                    let evidence = Evidence {
                        via: label.via,
                        at: label.at,
                        reader,
                    };
                    let edge = self.graph.add_edge(from, node, evidence);
                    if crowded {
                        self.edges.insert((from, node, label.via), edge);
                    }
                }
            }
        }
        let first = match self.graph[node].label {
            None => true,
            Some(old) => {
                if self.compare(&label, &old).is_ge() {
                    return;
                }
                false
            }
        };
        self.graph[node].label = Some(label);
        match self.graph[node].entity {
            Entity::Run { .. } if first => self.queue.push_back(Work::Run(node)),
            Entity::Record { .. } if first => self.queue.push_back(Work::Record(node)),
            Entity::Artifact { .. } => self.queue.push_back(Work::Artifact(node)),
            _ => {}
        }
    }

    /// The evidence edge of this kind from `from` to `node`, if there is one.
    ///
    /// Duplicates are looked for among the edges on the side that has few: into a run,
    /// artifact or record, and out of the run that wrote a mount or ran on a builder (a
    /// mount or builder can have thousands of writers). A node found with many edges on
    /// that side is crowded: its edges go to `edges`, and are looked up there from then on.
    fn find_edge(&mut self, from: NodeIndex, node: NodeIndex, via: Via) -> Edge {
        /// How many edges are walked before a node is crowded.
        const CROWDED: usize = 32;
        let (anchor, direction) = if self.graph[node].entity.is_mutable() {
            (from, Direction::Outgoing)
        } else {
            (node, Direction::Incoming)
        };
        if self.crowded.contains(&anchor) {
            return match self.edges.get(&(from, node, via)) {
                Some(&edge) => Edge::Found(edge),
                None => Edge::Absent { crowded: true },
            };
        }
        let mut walked = 0;
        for edge in self.graph.edges_directed(anchor, direction) {
            if edge.source() == from && edge.target() == node && edge.weight().via == via {
                return Edge::Found(edge.id());
            }
            walked += 1;
        }
        if walked < CROWDED {
            return Edge::Absent { crowded: false };
        }
        self.crowded.insert(anchor);
        for edge in self.graph.edges_directed(anchor, direction) {
            self.edges
                .insert((edge.source(), edge.target(), edge.weight().via), edge.id());
        }
        Edge::Absent { crowded: true }
    }

    /// How labels compare: earlier first, then more direct, then by the name of the node it
    /// came from (none first), the kind of evidence and its time, so that ties resolve the
    /// same way whatever order the store returns rows in (one artifact can be both imported
    /// and used as a base by the same run). Names are made only when times and directness
    /// tie and the labels came from different nodes.
    fn compare(&self, a: &Label, b: &Label) -> std::cmp::Ordering {
        (a.tainted_at, a.via.rank())
            .cmp(&(b.tainted_at, b.via.rank()))
            .then_with(|| {
                if a.from == b.from {
                    std::cmp::Ordering::Equal
                } else {
                    self.names_cmp(a.from.get(), b.from.get())
                }
            })
            .then_with(|| (a.via, a.at).cmp(&(b.via, b.at)))
    }

    /// The names of two nodes compared, made into buffers kept for it; no node names as "".
    fn names_cmp(&self, a: Option<NodeIndex>, b: Option<NodeIndex>) -> std::cmp::Ordering {
        let mut names = self.names.borrow_mut();
        let (a_name, b_name) = &mut *names;
        a_name.clear();
        b_name.clear();
        if let Some(a) = a {
            self.graph[a].entity.write_name(a_name);
        }
        if let Some(b) = b {
            self.graph[b].entity.write_name(b_name);
        }
        a_name.as_str().cmp(b_name.as_str())
    }

    fn node(&mut self, key: Key, make: impl FnOnce() -> Node) -> NodeIndex {
        if let Some(&node) = self.nodes.get(&key) {
            return node;
        }
        let node = self.graph.add_node(make());
        self.nodes.insert(key, node);
        node
    }

    fn artifact_node(&mut self, artifact: ArtifactId) -> Result<NodeIndex, S::Error> {
        if let Some(&node) = self.nodes.get(&Key::Artifact(artifact)) {
            return Ok(node);
        }
        let info = self.source.artifact(artifact)?;
        Ok(self.artifact_node_from(info))
    }

    fn artifact_node_from(&mut self, info: ArtifactInfo) -> NodeIndex {
        self.node(Key::Artifact(info.id), || Node {
            entity: Entity::Artifact {
                info,
                cache: false,
                image: false,
                pushed_or_seeded: false,
            },
            seed: None,
            label: None,
        })
    }

    fn mount_node(&mut self, mount: MountId) -> Result<NodeIndex, S::Error> {
        if let Some(&node) = self.nodes.get(&Key::Mount(mount)) {
            return Ok(node);
        }
        let info = self.source.mount(mount)?;
        self.mount_node_from(info)
    }

    fn mount_node_from(&mut self, info: MountInfo) -> Result<NodeIndex, S::Error> {
        if let Some(&node) = self.nodes.get(&Key::Mount(info.id)) {
            return Ok(node);
        }
        let purges = if self.ignore_time || self.ignore_purges {
            Vec::new()
        } else {
            sorted(self.source.mount_purges(info.id)?)
        };
        let node = self.node(Key::Mount(info.id), || Node {
            entity: Entity::Mount(info),
            seed: None,
            label: None,
        });
        if !purges.is_empty() {
            self.cleanings.insert(node, purges);
        }
        Ok(node)
    }

    fn builder_node(&mut self, builder: BuilderId) -> Result<NodeIndex, S::Error> {
        if let Some(&node) = self.nodes.get(&Key::Builder(builder)) {
            return Ok(node);
        }
        let info = self.source.builder(builder)?;
        self.builder_names.insert(info.id, info.name.clone());
        let mut prunes = if self.ignore_time || self.ignore_purges {
            Vec::new()
        } else {
            self.source.builder_purges(builder)?
        };
        prunes.sort_by_key(|p| p.at);
        let node = self.node(Key::Builder(builder), || Node {
            entity: Entity::Builder(info),
            seed: None,
            label: None,
        });
        if !prunes.is_empty() {
            self.cleanings
                .insert(node, prunes.iter().map(|p| p.at).collect());
            if prunes.iter().any(|p| p.selective.is_some()) {
                let removed = prunes.into_iter().map(|p| p.selective).collect();
                self.selective.insert(node, removed);
            }
        }
        Ok(node)
    }

    fn builder_name(&mut self, builder: BuilderId) -> Result<CompactString, S::Error> {
        if let Some(name) = self.builder_names.get(&builder) {
            return Ok(name.clone());
        }
        let name = self.source.builder(builder)?.name;
        self.builder_names.insert(builder, name.clone());
        Ok(name)
    }

    /// Decides, for each artifact, whether it is listed as a cache ref, an image, or both.
    ///
    /// Copies of the same bytes are the same kind of thing, so an artifact with a digest takes
    /// the roles seen for any artifact with that digest. Roles only accumulate as more runs
    /// are tainted, so the time-blind trace lists everything the time-aware one does.
    fn finish(mut self) -> Trace {
        let own = |id: ArtifactId| self.roles.get(id).copied().unwrap_or_default();
        let mut shared: Vec<Option<Roles>> = vec![None; self.graph.node_count()];
        for state in &self.digests {
            let roles = state.artifacts.iter().fold(Roles::default(), |acc, &a| {
                let roles = own(a);
                Roles {
                    cache: acc.cache || roles.cache,
                    image: acc.image || roles.image,
                    pushed: acc.pushed || roles.pushed,
                }
            });
            for &a in &state.artifacts {
                if let Some(&node) = self.nodes.get(&Key::Artifact(a)) {
                    shared[node.index()] = Some(roles);
                }
            }
        }
        for (node, shared) in self.graph.node_weights_mut().zip(shared) {
            let seeded = node.seed.is_some();
            let Entity::Artifact {
                info,
                cache,
                image,
                pushed_or_seeded,
            } = &mut node.entity
            else {
                continue;
            };
            *pushed_or_seeded = own(info.id).pushed || seeded;
            let roles = shared.unwrap_or_else(|| own(info.id));
            let cache_backend = is_cache_backend(info.backend);
            *image = roles.image && !cache_backend;
            // Every tainted artifact has a role; a cache is the safer listing if one had none.
            *cache = roles.cache || cache_backend || !*image;
        }
        if !self.labels_only {
            self.copy_edges();
        }
        // Freeing the traversal's bookkeeping takes a while for a large blast radius: another
        // thread does it while the trace is used.
        let leftovers = (
            self.nodes,
            self.edges,
            self.digest_of,
            self.digests,
            self.roles,
            self.segments,
        );
        std::thread::spawn(move || drop(leftovers));
        Trace {
            graph: self.graph,
            seeds: self.seeds,
            ignore_time: self.ignore_time,
            ignore_purges: self.ignore_purges,
            labels_only: self.labels_only,
            cleanings: self.cleanings,
            selective: self.selective.into_iter().collect(),
            covered: self.covered.into_iter().collect(),
            builder_names: self.builder_names,
            purges: Vec::new(),
            write_spans: self.write_spans.into_iter().collect(),
            suspect_ends: self.suspect_ends.into_iter().collect(),
        }
    }

    /// The purges that kept a tainted write from a later run, described from the source. A
    /// prune of a whole builder cleans each of its mounts, so one purge can be met at several
    /// nodes: it is listed once, naming all of them.
    fn applied_purges(&mut self) -> Result<Vec<AppliedPurge>, S::Error> {
        let mut cuts: Vec<((NodeIndex, Micros), Vec<RunId>)> =
            std::mem::take(&mut self.cuts).into_iter().collect();
        cuts.sort_unstable_by_key(|((node, at), _)| (*at, node.index()));
        let mut applied: BTreeMap<(Micros, i64), (AppliedPurge, HashSet<RunId>)> = BTreeMap::new();
        for ((node, at), runs) in cuts {
            let purged = match &self.graph[node].entity {
                Entity::Mount(mount) => Purged::Mount(mount.id),
                Entity::Builder(builder) => Purged::Builder(builder.id),
                _ => continue,
            };
            let name = self.graph[node].name().to_string();
            for purge in self.source.purges_at(purged, at)? {
                let entry = applied.entry((at, purge.id)).or_insert_with(|| {
                    let empty = AppliedPurge {
                        purge,
                        cleaned: Vec::new(),
                        runs: 0,
                        kept_out: 0,
                    };
                    (empty, HashSet::default())
                });
                if !entry.0.cleaned.contains(&name) {
                    entry.0.cleaned.push(name.clone());
                }
                entry.1.extend(runs.iter().copied());
            }
        }
        Ok(applied
            .into_values()
            .map(|(mut purge, runs)| {
                purge.cleaned.sort_unstable();
                purge.runs = runs.len();
                purge.kept_out = runs
                    .iter()
                    .filter(|&&run| !self.is_tainted_run(run))
                    .count();
                purge
            })
            .collect())
    }

    fn is_tainted_run(&self, run: RunId) -> bool {
        self.nodes
            .get(&Key::Run(run))
            .is_some_and(|&node| self.graph[node].label.is_some())
    }
}

impl<S: Source> Tracer<'_, S> {
    /// Makes the same-digest evidence the same whatever order it was found in: an edge from
    /// every artifact with evidence of its own (a seed, or an export or build by a tainted
    /// run), from the time of that evidence, to every other artifact with its digest. Each
    /// copy's label names one of them; an artifact whose only own evidence came through a
    /// copy (a run that imported the copy and pushed the bytes back) still has a chain from
    /// the seeds.
    fn copy_edges(&mut self) {
        let graph = &self.graph;
        let groups = self.digests.iter().filter_map(|state| {
            let nodes: Vec<NodeIndex> = state
                .artifacts
                .iter()
                .filter_map(|a| self.nodes.get(&Key::Artifact(*a)).copied())
                .collect();
            (nodes.len() > 1).then_some(nodes)
        });
        let own_time = |node: NodeIndex| {
            let seeded = graph[node].seed.as_deref().and_then(|seed| seed.at);
            graph
                .edges_directed(node, Direction::Incoming)
                .filter(|edge| matches!(edge.weight().via, Via::Exported | Via::Produced))
                .map(|edge| edge.weight().at)
                .chain(seeded)
                .min()
        };
        let mut copies = Vec::new();
        for group in groups {
            for &origin in &group {
                if let Some(at) = own_time(origin) {
                    copies.extend(
                        group
                            .iter()
                            .filter(|&&copy| copy != origin)
                            .map(|&copy| (origin, copy, at)),
                    );
                }
            }
        }
        for (origin, copy, at) in copies {
            self.graph.add_edge(
                origin,
                copy,
                Evidence {
                    via: Via::SameDigest,
                    at,
                    reader: None,
                },
            );
        }
    }
}

/// A digest's place in `digests` as `digest_of` keeps it: there are fewer digests than
/// nodes, whose indices are `u32` too.
fn state_slot(loaded: usize) -> u32 {
    u32::try_from(loaded).expect("fewer digests than nodes")
}

fn sorted(mut times: Vec<Micros>) -> Vec<Micros> {
    times.sort_unstable();
    times
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::mem::History;
    use crate::model::RunStatus;

    fn run_node(id: RunId) -> Node {
        let info = RunInfo {
            id,
            pipeline: "p".into(),
            run_key: id.to_string().into(),
            step: "build".into(),
            builder: None,
            started_at: 0,
            finished_at: 1,
            status: RunStatus::Succeeded,
            has_records: true,
            records_doubted: false,
            truncated: false,
            time_suspect: false,
        };
        Node {
            entity: Entity::Run { info },
            seed: None,
            label: None,
        }
    }

    /// Evidence offered again, into a node with few edges or a crowded one, and into a mount
    /// from its many writers, stays one edge per source, target and kind, with the earliest
    /// time and its reader window.
    #[test]
    fn evidence_offered_again_keeps_one_edge_with_the_earliest_time() {
        let mut history = History::new();
        let mut tracer = Tracer::new(&mut history, TraceOptions::default());
        let reader = tracer.graph.add_node(run_node(0));
        let mount = tracer.graph.add_node(Node {
            entity: Entity::Mount(MountInfo {
                id: 1,
                builder: 1,
                builder_name: "b".into(),
                namespace: CompactString::default(),
                mount_id: "m".into(),
            }),
            seed: None,
            label: None,
        });
        let sources: Vec<NodeIndex> = (1..=100)
            .map(|id| tracer.graph.add_node(run_node(id)))
            .collect();
        let offer = |tracer: &mut Tracer<'_, History>, from, node, via, at: Micros| {
            let label = Label {
                tainted_at: at,
                via,
                from: Some(from).into(),
                at,
            };
            tracer.relax(node, label, Some((at, at)));
        };
        // Each source offers its evidence three times, the earliest in the middle, with the
        // other sources' offers in between.
        for round in [5, 1, 9] {
            for (i, &from) in sources.iter().enumerate() {
                let at = round * 1000 + i as Micros;
                offer(&mut tracer, from, reader, Via::BuilderRecord, at);
                offer(&mut tracer, from, reader, Via::MountRead, at + 1);
                offer(&mut tracer, from, mount, Via::MountWrite, at);
            }
        }
        let graph = &tracer.graph;
        assert_eq!(graph.edge_count(), 300);
        let mut seen = HashSet::default();
        for edge in graph.edge_references() {
            let key = (edge.source(), edge.target(), edge.weight().via);
            assert!(seen.insert(key), "two edges for {key:?}");
            let i = sources.iter().position(|&s| s == edge.source()).unwrap() as Micros;
            let at = 1000 + i + Micros::from(edge.weight().via == Via::MountRead);
            assert_eq!(edge.weight().at, at, "{key:?}");
            assert_eq!(edge.weight().reader, Some((at, at)), "{key:?}");
        }
        assert!(tracer.crowded.contains(&reader));
        assert!(!tracer.crowded.contains(&mount));
    }

    /// The earliest start a receipt allows takes off the longest run, the token's life, the
    /// spool's grace for a late run only, and two skews; the latest end adds a skew to the
    /// last send; a static token bounds nothing.
    #[test]
    fn claim_limits_bound_a_run_by_its_receipt() {
        let limits = ClaimLimits {
            longest_run: 1_000,
            token_life: 100,
            late_grace: 10,
            skew: 1,
        };
        let receipt = |late, expiring| Receipt {
            received_at: 10_000,
            late,
            expiring,
            last_seen: 12_000,
            began_after: None,
        };
        assert_eq!(
            limits.earliest_start(receipt(false, true)),
            10_000 - 1_100 - 2
        );
        assert_eq!(
            limits.earliest_start(receipt(true, true)),
            10_000 - 1_110 - 2
        );
        assert_eq!(limits.earliest_start(receipt(false, false)), Micros::MIN);
        assert_eq!(limits.latest_end(receipt(false, true)), 12_001);
        // The collector's own bound counts where it is earlier than these limits allow (it
        // allowed longer runs), never where it is later.
        let kept = |began_after| Receipt {
            began_after: Some(began_after),
            ..receipt(false, true)
        };
        assert_eq!(limits.earliest_start(kept(5_000)), 5_000);
        assert_eq!(limits.earliest_start(kept(9_990)), 10_000 - 1_100 - 2);
        assert_eq!(
            limits.earliest_start(Receipt {
                expiring: false,
                ..kept(5_000)
            }),
            Micros::MIN
        );
        let hostile = Receipt {
            received_at: Micros::MIN,
            late: true,
            expiring: true,
            last_seen: Micros::MAX,
            began_after: Some(Micros::MAX),
        };
        assert_eq!(limits.earliest_start(hostile), Micros::MIN);
        assert_eq!(limits.latest_end(hostile), Micros::MAX);
    }

    #[test]
    fn id_map_holds_dense_far_and_negative_ids() {
        let mut map = IdMap::<NodeIndex>::default();
        let ids = [
            0,
            1,
            7,
            1000,
            IdMap::<NodeIndex>::DENSE - 1,
            IdMap::<NodeIndex>::DENSE,
            i64::MAX,
            -1,
            i64::MIN,
        ];
        for (i, &id) in ids.iter().enumerate() {
            assert_eq!(map.get(id), None, "{id} before insert");
            map.insert(id, NodeIndex::new(i));
        }
        for (i, &id) in ids.iter().enumerate() {
            assert_eq!(map.get(id), Some(&NodeIndex::new(i)), "{id}");
        }
        for id in [
            2,
            999,
            1001,
            IdMap::<NodeIndex>::DENSE - 2,
            IdMap::<NodeIndex>::DENSE + 1,
            -2,
        ] {
            assert_eq!(map.get(id), None, "{id} was never inserted");
        }
        map.insert(7, NodeIndex::new(42));
        assert_eq!(map.get(7), Some(&NodeIndex::new(42)));
        assert!(map.dense.len() <= usize::try_from(IdMap::<NodeIndex>::DENSE).unwrap());
    }
}
