//! The result of a trace: the blast-radius graph, each entity with the time it became tainted
//! and the evidence that tainted it, and the shortest chain of evidence to any of them.

use std::collections::{HashMap, VecDeque};

use compact_str::CompactString;
use petgraph::Direction;
use petgraph::graph::{DiGraph, EdgeIndex, NodeIndex};
use petgraph::visit::EdgeRef;
use rustc_hash::{FxHashMap, FxHashSet};

use super::source::{
    ArtifactInfo, BuilderId, BuilderInfo, MountInfo, RecordInfo, RunId, RunInfo, Selective,
};
use crate::model::{self, Backend, Digest, RunKey, StoredPurge};
use crate::time::Micros;

/// The kind of evidence that carried taint to an entity. The strings are stable: JSON output
/// and scripts match on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Via {
    Seed,
    ImportedDigest,
    BaseImage,
    Exported,
    Produced,
    MountWrite,
    MountRead,
    RecordCreated,
    RanOn,
    SameDigest,
    TagHeld,
    BuilderRecord,
    BuilderCacheUnverified,
}

impl Via {
    pub const ALL: [Self; 13] = [
        Self::Seed,
        Self::ImportedDigest,
        Self::BaseImage,
        Self::Exported,
        Self::Produced,
        Self::MountWrite,
        Self::MountRead,
        Self::RecordCreated,
        Self::RanOn,
        Self::SameDigest,
        Self::TagHeld,
        Self::BuilderRecord,
        Self::BuilderCacheUnverified,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Seed => "seed",
            Self::ImportedDigest => "imported-digest",
            Self::BaseImage => "base-image",
            Self::Exported => "exported",
            Self::Produced => "produced",
            Self::MountWrite => "mount-write",
            Self::MountRead => "mount-read",
            Self::RecordCreated => "record-created",
            Self::RanOn => "ran-on",
            Self::SameDigest => "same-digest",
            Self::TagHeld => "tag-held",
            Self::BuilderRecord => "builder-record",
            Self::BuilderCacheUnverified => "builder-cache-unverified",
        }
    }

    /// How direct the evidence is, lower first: when two arrive at the same time the more
    /// direct one is reported. A copy of the same bytes elsewhere ranks below the artifact's
    /// own evidence, so that `via` points at where the bytes came from.
    pub(crate) fn rank(self) -> u8 {
        match self {
            Self::Seed => 0,
            Self::ImportedDigest
            | Self::BaseImage
            | Self::Exported
            | Self::Produced
            | Self::MountWrite
            | Self::MountRead
            | Self::RecordCreated
            | Self::RanOn => 1,
            Self::SameDigest | Self::TagHeld => 2,
            Self::BuilderRecord => 3,
            Self::BuilderCacheUnverified => 4,
        }
    }
}

/// The groups output lists entities in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Run,
    CacheRef,
    Mount,
    Builder,
    Image,
    Record,
}

impl Kind {
    pub const ALL: [Self; 6] = [
        Self::Run,
        Self::CacheRef,
        Self::Mount,
        Self::Builder,
        Self::Image,
        Self::Record,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Run => "run",
            Self::CacheRef => "cache-ref",
            Self::Mount => "mount",
            Self::Builder => "builder",
            Self::Image => "image",
            Self::Record => "record",
        }
    }

    /// `n` entities of this kind, in words: `1 run`, `2 cache refs`.
    pub fn count(self, n: usize) -> String {
        let (one, many) = match self {
            Self::Run => ("run", "runs"),
            Self::CacheRef => ("cache ref", "cache refs"),
            Self::Mount => ("mount", "mounts"),
            Self::Builder => ("builder", "builders"),
            Self::Image => ("image", "images"),
            Self::Record => ("builder record", "builder records"),
        };
        format!("{n} {}", if n == 1 { one } else { many })
    }
}

/// What a node of the blast-radius graph stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entity {
    /// The builder it ran on is named by [`Tainted::builder`].
    Run {
        info: RunInfo,
    },
    /// A cache ref, an image, or both: `cache` when it was exported or imported as a cache or
    /// lives in a cache backend, `image` when it was produced or used as a base.
    Artifact {
        info: ArtifactInfo,
        cache: bool,
        image: bool,
        /// A tainted run pushed it, or a seed names it: for a ref recorded by tag only, what
        /// it held is the incident's to find. Otherwise the ref is tainted only as a holder
        /// of a tainted digest, which its own action deletes.
        pushed_or_seeded: bool,
    },
    Mount(MountInfo),
    Builder(BuilderInfo),
    Record {
        info: RecordInfo,
        builder: CompactString,
    },
    /// A seeded digest the store holds no artifact for (in the repository its seed named,
    /// when it named one), and how its seed named it.
    Digest {
        digest: Digest,
        name: CompactString,
        /// `registry/repository`, when the seed named one.
        locator: Option<CompactString>,
    },
}

impl Entity {
    /// Whether output lists the entity under `kind`.
    pub fn is(&self, kind: Kind) -> bool {
        match self {
            Self::Run { .. } => kind == Kind::Run,
            Self::Artifact { cache, image, .. } => {
                (kind == Kind::CacheRef && *cache) || (kind == Kind::Image && *image)
            }
            Self::Mount(_) => kind == Kind::Mount,
            Self::Builder(_) => kind == Kind::Builder,
            Self::Record { .. } => kind == Kind::Record,
            Self::Digest { .. } => false,
        }
    }

    /// Mounts and builders are mutable: what taints a reader depends on which write it saw.
    pub(crate) fn is_mutable(&self) -> bool {
        matches!(self, Self::Mount(_) | Self::Builder(_))
    }

    /// How output names it (made anew each time: a node does not keep it).
    pub fn name(&self) -> CompactString {
        joined(|part| self.name_parts(part))
    }

    /// Appends its name to `out`.
    pub fn write_name(&self, out: &mut String) {
        self.name_parts(&mut |p| out.push_str(p));
    }

    /// Calls `part` with each part of its name, in order.
    fn name_parts(&self, part: &mut dyn FnMut(&str)) {
        match self {
            Self::Run { info } => run_parts(info, part),
            Self::Artifact { info, .. } => artifact_parts(info, part),
            Self::Mount(info) => mount_parts(info, part),
            Self::Builder(info) => builder_parts(&info.name, part),
            Self::Record { info, builder } => record_parts(builder, info, part),
            Self::Digest { name, .. } => part(name),
        }
    }
}

/// How output names a run: `run:pipeline/run/step`, as [`run_name`] does.
pub fn run_display_name(info: &RunInfo) -> CompactString {
    run_name(info)
}

/// How output names entities; `--explain` accepts the same names.
/// A run's parts are percent-encoded ([`model::encode_component`]): `/` in a pipeline name or
/// step would make two runs print as one name.
pub(crate) fn run_name(info: &RunInfo) -> CompactString {
    joined(|part| run_parts(info, part))
}

#[cfg(test)]
pub(crate) fn artifact_name(info: &ArtifactInfo) -> CompactString {
    joined(|part| artifact_parts(info, part))
}

#[cfg(test)]
pub(crate) fn mount_name(info: &MountInfo) -> CompactString {
    joined(|part| mount_parts(info, part))
}

#[cfg(test)]
pub(crate) fn builder_name(name: &str) -> CompactString {
    joined(|part| builder_parts(name, part))
}

#[cfg(test)]
pub(crate) fn record_name(builder: &str, info: &RecordInfo) -> CompactString {
    joined(|part| record_parts(builder, info, part))
}

fn run_parts(info: &RunInfo, part: &mut dyn FnMut(&str)) {
    part("run:");
    part(&model::encode_component(&info.pipeline));
    part("/");
    part(&model::encode_component(&info.run_key));
    part("/");
    part(&model::encode_component(&info.step));
}

fn artifact_parts(info: &ArtifactInfo, part: &mut dyn FnMut(&str)) {
    model::display_name_parts(
        info.backend,
        &info.locator,
        Digest::is_valid(&info.digest).then_some(info.digest.as_str()),
        &info.key,
        info.tags.first().map(CompactString::as_str),
        part,
    );
}

fn mount_parts(info: &MountInfo, part: &mut dyn FnMut(&str)) {
    part("mount:");
    part(&info.builder_name);
    part(":");
    if !info.namespace.is_empty() {
        part(&info.namespace);
        part("/");
    }
    part(&info.mount_id);
}

fn builder_parts(name: &str, part: &mut dyn FnMut(&str)) {
    part("builder:");
    part(name);
}

fn record_parts(builder: &str, info: &RecordInfo, part: &mut dyn FnMut(&str)) {
    part("record:");
    part(builder);
    part(":");
    part(&info.record_id);
}

/// The parts `parts` gives, one after the other, in one allocation at most (none for a short
/// name): they are measured first.
fn joined(parts: impl Fn(&mut dyn FnMut(&str))) -> CompactString {
    let mut len = 0;
    parts(&mut |p| len += p.len());
    let mut out = CompactString::with_capacity(len);
    parts(&mut |p| out.push_str(p));
    out
}

/// Whether an artifact backend holds only caches (never an image).
pub(crate) fn is_cache_backend(backend: Backend) -> bool {
    !matches!(backend, Backend::Registry | Backend::LocalImage)
}

/// The best evidence that tainted a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Label {
    pub tainted_at: Micros,
    pub via: Via,
    /// The node the evidence came from; none for a seed.
    pub from: FromNode,
    /// When the evidence event happened.
    pub at: Micros,
}

/// The node evidence came from, or none, in four bytes: a label is held by every node.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct FromNode(u32);

impl FromNode {
    /// No node: the evidence is a seed.
    pub const NONE: Self = Self(u32::MAX);

    pub fn get(self) -> Option<NodeIndex> {
        (self != Self::NONE).then(|| NodeIndex::new(self.0 as usize))
    }
}

impl From<Option<NodeIndex>> for FromNode {
    /// A graph never holds a node of index `u32::MAX` (petgraph keeps it as its end marker).
    fn from(node: Option<NodeIndex>) -> Self {
        node.map_or(Self::NONE, |n| Self(n.index() as u32))
    }
}

impl std::fmt::Debug for FromNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.get().fmt(f)
    }
}

/// A node that was seeded, with the group its seed flag names and the time it was tainted
/// from (`None` when the store records no use of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeedMark {
    pub kind: Kind,
    pub at: Option<Micros>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub entity: Entity,
    pub seed: Option<Box<SeedMark>>,
    /// `None` only for a seed with no recorded use.
    pub label: Option<Label>,
}

impl Node {
    /// How output names it: see [`Entity::name`].
    pub fn name(&self) -> CompactString {
        self.entity.name()
    }
}

/// One evidence edge: the source entity tainted the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Evidence {
    pub via: Via,
    pub at: Micros,
    /// For an edge into a run: the run's start and the time of the read. Out of a mount or
    /// builder they decide which tainted writes the run saw.
    pub(crate) reader: Option<(Micros, Micros)>,
}

/// One tainted entity as output lists it. Names are made when they are needed
/// ([`Tainted::name`], [`Tainted::write_name`]), so a whole group's are never held at once.
#[derive(Debug, Clone, Copy)]
pub struct Tainted<'t> {
    pub entity: &'t Entity,
    pub tainted_at: Micros,
    pub via: Via,
    /// The node the evidence came from; `None` for a seed.
    pub from: Option<&'t Node>,
    /// When the evidence event happened.
    pub at: Micros,
    /// For a run on a recorded builder: the builder's name.
    pub builder: Option<&'t str>,
}

impl Tainted<'_> {
    /// Its name, as [`Entity::name`] makes it.
    pub fn name(&self) -> CompactString {
        self.entity.name()
    }

    /// Appends its name to `out`.
    pub fn write_name(&self, out: &mut String) {
        self.entity.write_name(out);
    }

    /// The name of the entity the evidence came from; `None` for a seed.
    pub fn from_name(&self) -> Option<CompactString> {
        self.from.map(Node::name)
    }
}

/// One hop of an explanation: `from` tainted `to` through `via`, and `to` was tainted from
/// `at` along this chain (a run from its start, or from the write it saw if that was later;
/// anything a run wrote from the write). The first hop of a chain is the seed itself, without
/// `from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    pub at: Micros,
    pub via: Via,
    pub from: Option<String>,
    pub to: String,
}

/// An `--explain` name that does not pick exactly one entity of the blast radius.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("`{0}` is not downstream of the seeds")]
    NotFound(String),
    #[error("`{name}` names several entities: {}", candidates.join(", "))]
    Ambiguous {
        name: String,
        candidates: Vec<String>,
    },
}

/// A recorded purge the trace applied: it cleaned a tainted mount or builder before a later
/// run started, so the taint did not reach that run through it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedPurge {
    pub purge: StoredPurge,
    /// The tainted mounts and builders it cleaned, by name.
    pub cleaned: Vec<String>,
    /// How many later runs it cleaned them for.
    pub runs: usize,
    /// How many of those runs are outside the blast radius (the others are tainted by other
    /// evidence): what ignoring the purge would add.
    pub kept_out: usize,
}

/// The blast radius of a set of seeds.
#[derive(Debug, Clone)]
pub struct Trace {
    pub(crate) graph: DiGraph<Node, Evidence>,
    pub(crate) seeds: Vec<NodeIndex>,
    pub(crate) ignore_time: bool,
    pub(crate) ignore_purges: bool,
    /// Traced with [`TraceOptions::labels_only`]: the graph holds no chains of evidence.
    ///
    /// [`TraceOptions::labels_only`]: super::TraceOptions::labels_only
    pub(crate) labels_only: bool,
    /// For each mount and builder with any: the purges (or prunes) that clean it, ascending.
    /// None when time is ignored.
    pub(crate) cleanings: FxHashMap<NodeIndex, Vec<Micros>>,
    /// For each builder with a prune that removed only some records: beside its
    /// `cleanings`, what each prune removed (`None`: every build record).
    pub(crate) selective: FxHashMap<NodeIndex, Vec<Option<Selective>>>,
    /// The tainted writers each selective prune (by node and place in its `cleanings`)
    /// covers: it clears no other run's write.
    pub(crate) covered: FxHashMap<(NodeIndex, usize), FxHashSet<RunId>>,
    /// The name of each builder a run of the graph ran on, by id.
    pub(crate) builder_names: FxHashMap<BuilderId, CompactString>,
    /// By purge time, then id.
    pub(crate) purges: Vec<AppliedPurge>,
    /// The seed runs the collector received, with when they may have written (see
    /// [`super::ClaimLimits`]).
    pub(crate) write_spans: FxHashMap<RunId, super::taint::WriteSpan>,
    /// The tainted time-suspect runs the collector received: when they were sent.
    pub(crate) suspect_ends: FxHashMap<RunId, Micros>,
}

/// A tainted registry ref known by tag only.
#[derive(Debug, Clone)]
pub struct TagOnlyRef<'t> {
    pub name: CompactString,
    pub locator: &'t str,
    pub tags: &'t [CompactString],
    pub tainted_at: Micros,
}

/// Where an explanation stands: at a mount or builder it also matters which tainted write
/// (or the seed) it came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Entry {
    Plain,
    Seed,
    Edge(EdgeIndex),
}

type State = (NodeIndex, Entry);

/// For each state reached, the state and edge it was reached from (`None` for a seed).
type Parents = HashMap<State, Option<(State, EdgeIndex)>>;

impl Trace {
    /// Until when a tainted run may have gone on writing: its finish; for a seed run the
    /// collector received, until it was sent; for a time-suspect run, until it was sent (any
    /// time, without a receipt).
    pub fn writes_until(&self, run: &RunInfo) -> Micros {
        if run.time_suspect {
            return self
                .suspect_ends
                .get(&run.id)
                .copied()
                .unwrap_or(Micros::MAX);
        }
        let done = run.finished_at.max(run.started_at);
        self.write_spans
            .get(&run.id)
            .map_or(done, |span| span.until.max(done))
    }

    /// When a tainted run's writes to mounts and builders (and the builder records it may
    /// have made) count from: its start; for a seed run the collector received, the earliest
    /// start its receipt allows; for a time-suspect run, any time.
    pub fn writes_from(&self, run: &RunInfo) -> Micros {
        if run.time_suspect {
            return Micros::MIN;
        }
        self.write_spans
            .get(&run.id)
            .map_or(run.started_at, |span| span.from.min(run.started_at))
    }

    /// Whether the closure is the time-blind one.
    pub fn ignore_time(&self) -> bool {
        self.ignore_time
    }

    /// Whether recorded purges were ignored.
    pub fn ignore_purges(&self) -> bool {
        self.ignore_purges
    }

    /// The recorded purges the trace applied, by purge time.
    pub fn purges(&self) -> &[AppliedPurge] {
        &self.purges
    }

    /// Whether the graph holds every piece of evidence between entities (see
    /// [`TraceOptions::labels_only`]).
    ///
    /// [`TraceOptions::labels_only`]: super::TraceOptions::labels_only
    pub fn has_evidence(&self) -> bool {
        !self.labels_only
    }

    pub fn graph(&self) -> &DiGraph<Node, Evidence> {
        &self.graph
    }

    /// The seeded nodes, by kind then name.
    pub fn seeds(&self) -> Vec<&Node> {
        let mut seeds: Vec<&Node> = self.seeds.iter().map(|&i| &self.graph[i]).collect();
        seeds.sort_by_cached_key(|n| (seed_kind(n), n.name()));
        seeds
    }

    /// The tainted entities of one group, by taint time then name.
    pub fn tainted(&self, kind: Kind) -> Vec<Tainted<'_>> {
        let mut out: Vec<Tainted<'_>> = self
            .graph
            .node_indices()
            .filter(|&i| self.graph[i].entity.is(kind))
            .filter_map(|i| self.entry(i))
            .collect();
        sort_tainted(&mut out);
        out
    }

    /// Every group, in the order of [`Kind::ALL`], as [`Trace::tainted`] lists it: one pass
    /// over the graph, and the runs sorted on another thread while this one sorts the rest.
    pub fn groups(&self) -> Vec<(Kind, Vec<Tainted<'_>>)> {
        // Counted first: growing vectors of hundreds of thousands of entries would copy them.
        let mut sizes = [0; Kind::ALL.len()];
        for node in self.graph.node_weights().filter(|n| n.label.is_some()) {
            for (size, &kind) in sizes.iter_mut().zip(&Kind::ALL) {
                *size += usize::from(node.entity.is(kind));
            }
        }
        let mut groups: Vec<Vec<Tainted<'_>>> = sizes.into_iter().map(Vec::with_capacity).collect();
        for node in self.graph.node_indices() {
            let Some(entry) = self.entry(node) else {
                continue;
            };
            for (group, &kind) in groups.iter_mut().zip(&Kind::ALL) {
                if entry.entity.is(kind) {
                    group.push(entry);
                }
            }
        }
        let (runs, rest) = groups.split_at_mut(1);
        std::thread::scope(|scope| {
            scope.spawn(|| sort_tainted(&mut runs[0]));
            rest.iter_mut().for_each(|group| sort_tainted(group));
        });
        Kind::ALL.into_iter().zip(groups).collect()
    }

    /// The tainted registry refs known by tag only, by name; seeds are left out (a tag seed
    /// already stands for every digest recorded for it). A run that read one of the tag's
    /// digests cannot be matched to such a ref.
    pub fn tag_only_refs(&self) -> Vec<TagOnlyRef<'_>> {
        let mut refs: Vec<TagOnlyRef<'_>> = self
            .graph
            .node_weights()
            .filter(|n| n.seed.is_none())
            .filter_map(|n| match (&n.entity, n.label) {
                (Entity::Artifact { info, .. }, Some(label))
                    if info.backend == Backend::Registry && info.digest.is_empty() =>
                {
                    Some(TagOnlyRef {
                        name: n.name(),
                        locator: &info.locator,
                        tags: &info.tags,
                        tainted_at: label.tainted_at,
                    })
                }
                _ => None,
            })
            .collect();
        refs.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        refs
    }

    /// The digests of the tainted cache refs and images, and of seeded digests.
    pub fn digests(&self) -> std::collections::HashSet<&str> {
        self.graph
            .node_weights()
            .filter(|n| n.label.is_some() || n.seed.is_some())
            .filter_map(|n| match &n.entity {
                Entity::Artifact { info, .. } if !info.digest.is_empty() => {
                    Some(info.digest.as_str())
                }
                Entity::Digest { digest, .. } => Some(digest.as_str()),
                _ => None,
            })
            .collect()
    }

    /// Whether nothing at all is tainted.
    pub fn is_empty(&self) -> bool {
        !self
            .graph
            .node_weights()
            .any(|n| n.label.is_some() && Kind::ALL.iter().any(|&kind| n.entity.is(kind)))
    }

    /// The node as output lists it, if it is tainted.
    pub fn entry(&self, node: NodeIndex) -> Option<Tainted<'_>> {
        let n = &self.graph[node];
        let label = n.label?;
        Some(Tainted {
            entity: &n.entity,
            tainted_at: label.tainted_at,
            via: label.via,
            from: label.from.get().map(|f| &self.graph[f]),
            at: label.at,
            builder: match &n.entity {
                Entity::Run { info } => info
                    .builder
                    .and_then(|b| self.builder_names.get(&b))
                    .map(CompactString::as_str),
                _ => None,
            },
        })
    }

    /// Finds the tainted entity an `--explain` name means: its output name,
    /// `pipeline/run/step` for a run, `pipeline/run` when that run has one step in the blast
    /// radius, or a bare digest.
    pub fn resolve(&self, name: &str) -> Result<NodeIndex, ResolveError> {
        let all = || {
            self.graph
                .node_indices()
                .filter(|&i| self.graph[i].label.is_some())
        };
        let prefixed = format!("run:{name}");
        let unprefixed = name.strip_prefix("run:").unwrap_or(name);
        let rules: [&dyn Fn(&Node) -> bool; 5] = [
            &|n| n.name() == name,
            &|n| n.name() == prefixed,
            &|n| match &n.entity {
                Entity::Artifact { info, .. } => info.digest == name,
                Entity::Digest { digest, .. } => digest.as_str() == name,
                _ => false,
            },
            &|n| match &n.entity {
                Entity::Run { info, .. } => {
                    RunKey {
                        pipeline: info.pipeline.to_string(),
                        run_id: info.run_key.to_string(),
                        step: None,
                    }
                    .to_string()
                        == name
                }
                _ => false,
            },
            // A name as it was printed before its parts were encoded.
            &|n| match &n.entity {
                Entity::Run { info, .. } => {
                    let raw = format!("{}/{}", info.pipeline, info.run_key);
                    raw == unprefixed || format!("{raw}/{}", info.step) == unprefixed
                }
                _ => false,
            },
        ];
        for rule in rules {
            let found: Vec<NodeIndex> = all().filter(|&i| rule(&self.graph[i])).collect();
            match found.len() {
                0 => continue,
                1 => return Ok(found[0]),
                _ => {
                    let mut candidates: Vec<String> = found
                        .iter()
                        .map(|&i| self.graph[i].name().to_string())
                        .collect();
                    candidates.sort();
                    candidates.dedup();
                    return Err(ResolveError::Ambiguous {
                        name: name.to_owned(),
                        candidates,
                    });
                }
            }
        }
        Err(ResolveError::NotFound(name.to_owned()))
    }

    /// The shortest chain of evidence from a seed to the named entity; `None` when the name
    /// does not pick one entity of the blast radius (see [`Trace::resolve`]).
    pub fn explain(&self, entity: &str) -> Option<Vec<Hop>> {
        self.resolve(entity)
            .ok()
            .and_then(|node| self.explain_node(node))
    }

    /// The shortest chain, by hop count, from a seed to `target`.
    ///
    /// A breadth-first search over the evidence edges. Through a mount or builder it keeps
    /// which tainted write it came in by, and leaves only to readers that write could have
    /// tainted (read at or after it, no purge between the writer's finish and the reader's
    /// start); through a record no believed run created, which run's offer it came in by,
    /// and leaves only to runs that used the record after that run began. So every chain
    /// holds in time.
    pub fn explain_node(&self, target: NodeIndex) -> Option<Vec<Hop>> {
        debug_assert!(
            self.has_evidence(),
            "explained a trace without its evidence"
        );
        let g = &self.graph;
        g[target].label?;
        let mut roots: Vec<NodeIndex> = self.seeds.clone();
        roots.sort_by_cached_key(|&root| {
            (g[root].seed.as_deref().and_then(|s| s.at), g[root].name())
        });
        let mut parent = Parents::new();
        let mut queue = VecDeque::new();
        for root in roots {
            let state = (
                root,
                if g[root].entity.is_mutable() {
                    Entry::Seed
                } else {
                    Entry::Plain
                },
            );
            if parent.insert(state, None).is_none() {
                queue.push_back(state);
            }
        }
        while let Some(state) = queue.pop_front() {
            if state.0 == target {
                return Some(self.chain(state, &parent));
            }
            let mut edges: Vec<_> = g.edges_directed(state.0, Direction::Outgoing).collect();
            edges.sort_by_cached_key(|edge| (g[edge.target()].name(), edge.weight().via));
            for edge in edges {
                if !self.passes(state, edge.weight(), edge.target()) {
                    continue;
                }
                let next_node = edge.target();
                let entry = if g[next_node].entity.is_mutable() || self.made_unrecorded(edge.id()) {
                    Entry::Edge(edge.id())
                } else {
                    Entry::Plain
                };
                let next = (next_node, entry);
                if let std::collections::hash_map::Entry::Vacant(slot) = parent.entry(next) {
                    slot.insert(Some((state, edge.id())));
                    queue.push_back(next);
                }
            }
        }
        None
    }

    /// When the write the search entered a mount or builder by happened.
    fn written(&self, (node, entry): State) -> Option<Micros> {
        match entry {
            Entry::Plain => None,
            Entry::Seed => Some(
                self.graph[node]
                    .seed
                    .as_deref()
                    .and_then(|s| s.at)
                    .unwrap_or(Micros::MIN),
            ),
            // A time-suspect writer's write is taken as earlier than every read.
            Entry::Edge(edge) if self.suspect_write(edge) => Some(Micros::MIN),
            Entry::Edge(edge) => Some(self.graph[edge].at),
        }
    }

    /// Until when the write the search entered a mount or builder by went on: its writer's
    /// finish (a purge before it does not clear the write), or the write itself for a seed.
    fn done(&self, entry: Entry, written: Micros) -> Micros {
        let Entry::Edge(edge) = entry else {
            return written;
        };
        self.graph
            .edge_endpoints(edge)
            .and_then(|(writer, _)| match &self.graph[writer].entity {
                // A seed run the collector received went on until it was sent.
                Entity::Run { info, .. } => Some(
                    (self.write_spans.get(&info.id))
                        .map_or(info.finished_at, |span| span.until.max(info.finished_at))
                        .max(written),
                ),
                _ => None,
            })
            .unwrap_or(written)
    }

    /// Whether the evidence is a run's offer of a record no believed run created: from the
    /// offer, the record reaches only the runs that used it after the run began (its
    /// reusers, and runs that only claim to have created it), so an explanation keeps which
    /// offer it came in by, as it does for a write to a mount.
    fn made_unrecorded(&self, edge: EdgeIndex) -> bool {
        self.graph[edge].via == Via::RanOn
            && self.graph.edge_endpoints(edge).is_some_and(|(_, record)| {
                matches!(self.graph[record].entity, Entity::Record { .. })
            })
    }

    /// Whether the node is a run whose times the collector does not believe.
    fn suspect(&self, node: NodeIndex) -> bool {
        matches!(&self.graph[node].entity, Entity::Run { info, .. } if info.time_suspect)
    }

    /// Whether the evidence is a write by a time-suspect run, or by a seed run nothing bounds
    /// (see [`super::ClaimLimits`]).
    fn suspect_write(&self, edge: EdgeIndex) -> bool {
        self.graph.edge_endpoints(edge).is_some_and(|(writer, _)| {
            self.suspect(writer)
                || matches!(&self.graph[writer].entity, Entity::Run { info, .. }
                    if self.write_spans.get(&info.id).is_some_and(|s| s.unbounded()))
        })
    }

    /// Whether the evidence edge may follow the way the search entered its source.
    fn passes(&self, (node, entry): State, evidence: &Evidence, reader: NodeIndex) -> bool {
        let Some(written) = self.written((node, entry)) else {
            return true;
        };
        // A builder passes taint to runs with record evidence only when it is itself the seed.
        if evidence.via == Via::BuilderRecord
            && entry != Entry::Seed
            && matches!(self.graph[node].entity, Entity::Builder(_))
        {
            return false;
        }
        let suspect_write = matches!(entry, Entry::Edge(edge) if self.suspect_write(edge));
        if self.ignore_time || suspect_write || self.suspect(reader) {
            return true;
        }
        let Some((start, read)) = evidence.reader else {
            return true;
        };
        let done = self.done(entry, written);
        written <= read
            && !cleanings_of(&self.cleanings, node)
                .iter()
                .enumerate()
                .any(|(i, &p)| done < p && p < start && self.clears(node, i, (entry, written)))
    }

    /// Whether the purge at place `i` of the node's `cleanings` clears the write the search
    /// entered the node by: a selective prune clears only a writer it covered, or a seed from
    /// a time it covers.
    fn clears(&self, node: NodeIndex, i: usize, (entry, written): (Entry, Micros)) -> bool {
        let Some(Some(prune)) = self.selective.get(&node).and_then(|p| p.get(i)) else {
            return true;
        };
        match (self.writer(entry), entry) {
            (Some(writer), _) => self
                .covered
                .get(&(node, i))
                .is_some_and(|covered| covered.contains(&writer)),
            (None, Entry::Seed) => prune.covers(written, false, None),
            (None, _) => false,
        }
    }

    /// The run whose write the search entered a mount or builder by.
    fn writer(&self, entry: Entry) -> Option<RunId> {
        let Entry::Edge(edge) = entry else {
            return None;
        };
        let (writer, _) = self.graph.edge_endpoints(edge)?;
        match &self.graph[writer].entity {
            Entity::Run { info, .. } => Some(info.id),
            _ => None,
        }
    }

    fn chain(&self, mut state: State, parent: &Parents) -> Vec<Hop> {
        let g = &self.graph;
        let mut hops = Vec::new();
        while let Some(&Some((prev, edge))) = parent.get(&state) {
            let evidence = &g[edge];
            let at = match (evidence.reader, self.written(prev)) {
                (Some((start, _)), Some(written)) => start.max(written),
                (Some((start, _)), None) => start,
                (None, _) => evidence.at,
            };
            hops.push(Hop {
                at,
                via: evidence.via,
                from: Some(g[prev.0].name().to_string()),
                to: g[state.0].name().to_string(),
            });
            state = prev;
        }
        let root = &g[state.0];
        hops.push(Hop {
            at: root
                .seed
                .as_deref()
                .and_then(|s| s.at)
                .or(root.label.map(|l| l.tainted_at))
                .unwrap_or_default(),
            via: Via::Seed,
            from: None,
            to: root.name().to_string(),
        });
        hops.reverse();
        hops
    }
}

/// The purges (or prunes) that clean a mount or builder, ascending; none when time or purges
/// are ignored.
pub(crate) fn cleanings_of(
    cleanings: &FxHashMap<NodeIndex, Vec<Micros>>,
    node: NodeIndex,
) -> &[Micros] {
    cleanings.get(&node).map_or(&[], Vec::as_slice)
}

/// By taint time, then name. Names are made only for entries that share their taint time,
/// a run of them at a time.
fn sort_tainted(entries: &mut [Tainted<'_>]) {
    entries.sort_by_key(|e| e.tainted_at);
    for ties in entries.chunk_by_mut(|a, b| a.tainted_at == b.tainted_at) {
        if ties.len() > 1 {
            ties.sort_by_cached_key(Tainted::name);
        }
    }
}

fn seed_kind(node: &Node) -> Kind {
    node.seed.as_deref().map_or(Kind::Run, |s| s.kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A trace holds a node for every entity of the blast radius, millions of them: a node
    /// keeps no name, and its label packs the node it came from into four bytes.
    #[test]
    fn nodes_stay_small() {
        assert_eq!(size_of::<Label>(), 24);
        assert_eq!(size_of::<Option<Label>>(), 24);
        assert_eq!(size_of::<Node>(), 160);
        let node = NodeIndex::new(7);
        assert_eq!(FromNode::from(Some(node)).get(), Some(node));
        assert_eq!(FromNode::from(None).get(), None);
        let widest = NodeIndex::new(u32::MAX as usize - 1);
        assert_eq!(FromNode::from(Some(widest)).get(), Some(widest));
    }
}
