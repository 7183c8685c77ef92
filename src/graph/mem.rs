//! An in-memory [`Source`] over a hand-built history, for tests.
//!
//! Event times follow the store: reads carry the run's finish time, writes its start time.

use super::source::{
    ArtifactId, ArtifactInfo, ArtifactRead, BuilderId, BuilderInfo, BuilderPrune, DigestUses,
    MountId, MountInfo, Purged, Receipt, RecordId, RecordInfo, RunId, RunInfo, RunRef, Selective,
    Source, Write,
};
use crate::model::{
    Backend, PurgeMethod, PurgeTarget, RunKey, RunStatus, SelectivePrune, StoredPurge,
};
use crate::time::Micros;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct MemError(String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    Imported(ArtifactId),
    UsedBase(ArtifactId),
    Exported(ArtifactId),
    Produced(ArtifactId),
    ReadMount(MountId),
    WroteMount(MountId),
    CreatedRecord(RecordId),
    ReusedRecord(RecordId),
}

impl Event {
    /// The artifact the event names, if it names one (read or pushed).
    pub(super) fn artifact(self) -> Option<ArtifactId> {
        match self {
            Self::Imported(a) | Self::UsedBase(a) | Self::Exported(a) | Self::Produced(a) => {
                Some(a)
            }
            _ => None,
        }
    }

    pub(super) fn is_read(self) -> bool {
        matches!(
            self,
            Self::Imported(_) | Self::UsedBase(_) | Self::ReadMount(_) | Self::ReusedRecord(_)
        )
    }
}

/// A prune of a builder: whether it pruned only build records (its cache mounts left to mount
/// purges), and whether only some of them.
#[derive(Debug, Clone)]
pub(crate) struct Pruned {
    pub builder: BuilderId,
    pub at: Micros,
    pub records_only: bool,
    pub selective: Option<Selective>,
}

/// A provenance history built by hand. Ids start at 1 and follow insertion order.
#[derive(Debug, Default, Clone)]
pub struct History {
    pub(crate) runs: Vec<RunInfo>,
    pub(crate) artifacts: Vec<ArtifactInfo>,
    pub(crate) mounts: Vec<MountInfo>,
    pub(crate) builders: Vec<BuilderInfo>,
    pub(crate) records: Vec<RecordInfo>,
    pub(crate) events: Vec<(RunId, Event)>,
    pub(crate) mount_purges: Vec<(MountId, Micros)>,
    pub(crate) builder_prunes: Vec<Pruned>,
    /// Manifests a recorded purge deleted from a registry repository: locator, digest, when.
    pub(crate) manifest_deletions: Vec<(String, String, Micros)>,
    /// The collector's receipts, by run.
    pub(crate) receipts: Vec<(RunId, Receipt)>,
    /// How many times a trace asked for a mount's readers.
    pub mount_reader_queries: usize,
}

/// The position of a row in its list: ids start at 1.
pub(crate) fn index(id: i64) -> usize {
    usize::try_from(id - 1).expect("ids start at 1")
}

fn next_id(len: usize) -> i64 {
    i64::try_from(len).expect("small history") + 1
}

impl History {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn builder(&mut self, name: &str) -> BuilderId {
        let id = next_id(self.builders.len());
        self.builders.push(BuilderInfo {
            id,
            name: name.into(),
        });
        id
    }

    pub fn mount(&mut self, builder: BuilderId, mount_id: &str) -> MountId {
        self.mount_in(builder, "", mount_id)
    }

    /// A mount in a namespace (`BUILDKIT_CACHE_MOUNT_NS`).
    pub fn mount_in(&mut self, builder: BuilderId, namespace: &str, mount_id: &str) -> MountId {
        let id = next_id(self.mounts.len());
        self.mounts.push(MountInfo {
            id,
            builder,
            builder_name: self.builders[index(builder)].name.clone(),
            namespace: namespace.into(),
            mount_id: mount_id.into(),
        });
        id
    }

    /// A registry manifest; its first sighting is its earliest event.
    pub fn manifest(&mut self, locator: &str, digest: &str) -> ArtifactId {
        self.artifact(Backend::Registry, locator, digest, "")
    }

    pub fn artifact(
        &mut self,
        backend: Backend,
        locator: &str,
        digest: &str,
        key: &str,
    ) -> ArtifactId {
        let id = next_id(self.artifacts.len());
        self.artifacts.push(ArtifactInfo {
            id,
            backend,
            locator: locator.into(),
            digest: digest.to_owned(),
            key: key.into(),
            tags: Vec::new(),
            first_seen: Micros::MAX,
        });
        id
    }

    pub fn tag(&mut self, artifact: ArtifactId, tag: &str) {
        let tags = &mut self.artifacts[index(artifact)].tags;
        if !tags.iter().any(|t| t == tag) {
            tags.push(tag.into());
        }
    }

    pub fn record(
        &mut self,
        builder: BuilderId,
        record_id: &str,
        record_type: &str,
        description: &str,
    ) -> RecordId {
        let id = next_id(self.records.len());
        self.records.push(RecordInfo {
            id,
            builder,
            record_id: record_id.into(),
            record_type: record_type.into(),
            description: description.into(),
            doubted: false,
        });
        id
    }

    /// Marks the record's type and description as given only by a run whose record evidence
    /// is not believed.
    pub fn doubt_description(&mut self, record: RecordId) {
        self.records[index(record)].doubted = true;
    }

    /// A successful run `pipeline/run_key/build` without a builder or record evidence.
    pub fn run(
        &mut self,
        pipeline: &str,
        run_key: &str,
        started_at: Micros,
        finished_at: Micros,
    ) -> RunId {
        let id = next_id(self.runs.len());
        self.runs.push(RunInfo {
            id,
            pipeline: pipeline.into(),
            run_key: run_key.into(),
            step: "build".into(),
            builder: None,
            started_at,
            finished_at,
            status: RunStatus::Succeeded,
            has_records: false,
            records_doubted: false,
            truncated: false,
            time_suspect: false,
        });
        id
    }

    /// Marks the run as one whose times the collector does not believe.
    pub fn suspect(&mut self, run: RunId) {
        self.runs[index(run)].time_suspect = true;
    }

    /// Records that the collector received the run at `at` (`late`: from a spool), with an
    /// OIDC token from before it kept a bound on when the run began.
    pub fn received(&mut self, run: RunId, at: Micros, late: bool) {
        self.received_bounded(run, at, late, None);
    }

    /// Records that the collector received the run at `at` (`late`: from a spool), with an
    /// OIDC token that bounds the run's start by `began_after`.
    pub fn received_bounded(
        &mut self,
        run: RunId,
        at: Micros,
        late: bool,
        began_after: Option<Micros>,
    ) {
        self.receipts.push((
            run,
            Receipt {
                received_at: at,
                late,
                expiring: true,
                last_seen: at,
                began_after,
            },
        ));
    }

    /// Records that the collector received the run at `at` with a static token.
    pub fn received_with_static_token(&mut self, run: RunId, at: Micros) {
        self.receipts.push((
            run,
            Receipt {
                received_at: at,
                late: false,
                expiring: false,
                last_seen: at,
                began_after: None,
            },
        ));
    }

    pub fn on(&mut self, run: RunId, builder: BuilderId) {
        self.runs[index(run)].builder = Some(builder);
    }

    /// Part of what the run used was over a limit and not recorded.
    pub fn truncated(&mut self, run: RunId) {
        self.runs[index(run)].truncated = true;
    }

    pub fn fail(&mut self, run: RunId) {
        self.runs[index(run)].status = RunStatus::Failed;
    }

    /// Marks the run's record evidence as doubted (a run at the lowest trust level): its
    /// claims to have created records make them no less records no recorded run created, and
    /// on its builder it is a run without record evidence, as the store keeps it.
    pub fn doubt_records(&mut self, run: RunId) {
        self.runs[index(run)].records_doubted = true;
    }

    /// Marks the run as carrying record-level builder evidence.
    pub fn with_records(&mut self, run: RunId) {
        self.runs[index(run)].has_records = true;
    }

    pub fn imports(&mut self, run: RunId, artifact: ArtifactId) {
        self.event(run, Event::Imported(artifact));
    }

    pub fn uses_base(&mut self, run: RunId, artifact: ArtifactId) {
        self.event(run, Event::UsedBase(artifact));
    }

    pub fn exports(&mut self, run: RunId, artifact: ArtifactId) {
        self.event(run, Event::Exported(artifact));
    }

    pub fn produces(&mut self, run: RunId, artifact: ArtifactId) {
        self.event(run, Event::Produced(artifact));
    }

    pub fn reads(&mut self, run: RunId, mount: MountId) {
        self.event(run, Event::ReadMount(mount));
    }

    pub fn writes(&mut self, run: RunId, mount: MountId) {
        self.event(run, Event::WroteMount(mount));
    }

    pub fn creates(&mut self, run: RunId, record: RecordId) {
        self.event(run, Event::CreatedRecord(record));
    }

    pub fn reuses(&mut self, run: RunId, record: RecordId) {
        self.event(run, Event::ReusedRecord(record));
    }

    pub fn purge(&mut self, mount: MountId, at: Micros) {
        self.mount_purges.push((mount, at));
    }

    /// A prune of the builder's whole cache, its cache mounts too.
    pub fn prune(&mut self, builder: BuilderId, at: Micros) {
        self.builder_prunes.push(Pruned {
            builder,
            at,
            records_only: false,
            selective: None,
        });
    }

    /// A prune of the builder's build records only, which cleans none of its mounts.
    pub fn prune_records(&mut self, builder: BuilderId, at: Micros) {
        self.builder_prunes.push(Pruned {
            builder,
            at,
            records_only: true,
            selective: None,
        });
    }

    /// A prune of some of the builder's build records: those named, and those used since
    /// (the builder's clock, up to `skew` behind a runner's).
    pub fn prune_some_records(
        &mut self,
        builder: BuilderId,
        at: Micros,
        records: &[RecordId],
        (since, skew): (Option<Micros>, Micros),
    ) {
        let mut records = records.to_vec();
        records.sort_unstable();
        records.dedup();
        self.builder_prunes.push(Pruned {
            builder,
            at,
            records_only: true,
            selective: Some(Selective {
                records,
                since,
                skew,
            }),
        });
    }

    /// A recorded purge deleted the artifact's manifest from its repository at `at`.
    pub fn delete_manifest(&mut self, artifact: ArtifactId, at: Micros) {
        let info = &self.artifacts[index(artifact)];
        let deletion = (info.locator.to_string(), info.digest.clone(), at);
        self.manifest_deletions.push(deletion);
    }

    /// The same history with no purge or prune recorded.
    pub fn without_purges(&self) -> Self {
        Self {
            mount_purges: Vec::new(),
            builder_prunes: Vec::new(),
            manifest_deletions: Vec::new(),
            ..self.clone()
        }
    }

    fn event(&mut self, run: RunId, event: Event) {
        if !self.events.contains(&(run, event)) {
            self.events.push((run, event));
        }
    }

    pub(crate) fn at(&self, run: RunId, event: Event) -> Micros {
        let info = &self.runs[index(run)];
        if event.is_read() {
            info.finished_at
        } else {
            info.started_at
        }
    }

    /// Every event matching `pick`, with its run and time, in insertion order.
    fn events_where(&self, pick: impl Fn(Event) -> bool) -> Vec<(RunInfo, Event, Micros)> {
        self.events
            .iter()
            .filter(|(_, e)| pick(*e))
            .map(|&(run, e)| (self.runs[index(run)].clone(), e, self.at(run, e)))
            .collect()
    }

    pub(crate) fn artifact_info(&self, artifact: ArtifactId) -> ArtifactInfo {
        let mut info = self.artifacts[index(artifact)].clone();
        info.first_seen = self.sighted(artifact).0;
        info
    }

    /// The artifacts with a digest that `tag` in `locator` held at `since`, when none was seen
    /// under it across then: those last seen under it latest before.
    pub(crate) fn held_at(
        &self,
        locator: &str,
        tag: &str,
        since: Option<Micros>,
    ) -> Vec<ArtifactId> {
        let Some(since) = since else {
            return Vec::new();
        };
        let under: Vec<(ArtifactId, (Micros, Micros))> = self
            .artifacts
            .iter()
            .filter(|a| *a.locator == *locator && a.tags.iter().any(|t| t == tag))
            .filter(|a| !a.digest.is_empty())
            .map(|a| (a.id, self.sighted(a.id)))
            .collect();
        // One seen under it across `since` is what it held then.
        if under
            .iter()
            .any(|&(_, (first, last))| first <= since && since <= last)
        {
            return Vec::new();
        }
        let candidates: Vec<(ArtifactId, Micros)> = under
            .into_iter()
            .map(|(a, (_, last))| (a, last))
            .filter(|&(_, last)| last < since)
            .collect();
        let latest = candidates.iter().map(|&(_, last)| last).max();
        candidates
            .into_iter()
            .filter(|&(_, last)| Some(last) == latest)
            .map(|(a, _)| a)
            .collect()
    }

    /// The first and last events that name the artifact (0 for one no run names): its tags
    /// were seen over that span.
    pub(crate) fn sighted(&self, artifact: ArtifactId) -> (Micros, Micros) {
        let touches = |e: Event| e.artifact() == Some(artifact);
        let times: Vec<Micros> = self.events_where(touches).iter().map(|e| e.2).collect();
        (
            times.iter().copied().min().unwrap_or(0),
            times.iter().copied().max().unwrap_or(0),
        )
    }

    fn lookup<T: Clone>(items: &[T], id: i64, what: &str) -> Result<T, MemError> {
        usize::try_from(id - 1)
            .ok()
            .and_then(|i| items.get(i))
            .cloned()
            .ok_or_else(|| MemError(format!("no {what} with id {id}")))
    }
}

impl Source for History {
    type Error = MemError;

    fn pipeline_runs(
        &mut self,
        pipeline: &str,
        since: Option<Micros>,
        until: Option<Micros>,
    ) -> Result<Option<Vec<RunInfo>>, MemError> {
        if !self.runs.iter().any(|r| r.pipeline == pipeline) {
            return Ok(None);
        }
        let window = super::seeds::Window { since, until };
        Ok(Some(
            self.runs
                .iter()
                .filter(|r| {
                    r.pipeline == pipeline && (r.time_suspect || window.contains(r.started_at))
                })
                .cloned()
                .collect(),
        ))
    }

    fn runs_received_since(
        &mut self,
        pipeline: &str,
        at: Micros,
    ) -> Result<Vec<RunInfo>, MemError> {
        Ok(self
            .runs
            .iter()
            .filter(|r| r.pipeline == pipeline)
            .filter(|r| {
                self.receipts
                    .iter()
                    .any(|(run, receipt)| *run == r.id && receipt.received_at >= at)
            })
            .cloned()
            .collect())
    }

    fn runs_by_key(&mut self, key: &RunKey) -> Result<Vec<RunInfo>, MemError> {
        Ok(self
            .runs
            .iter()
            .filter(|r| r.pipeline == key.pipeline && r.run_key == key.run_id)
            .filter(|r| key.step.as_ref().is_none_or(|s| *s == r.step))
            .cloned()
            .collect())
    }

    fn artifacts_by_tag(
        &mut self,
        locator: &str,
        tag: &str,
        since: Option<Micros>,
        until: Option<Micros>,
    ) -> Result<Vec<ArtifactInfo>, MemError> {
        let window = super::seeds::Window { since, until };
        let held = self.held_at(locator, tag, since);
        Ok(self
            .artifacts
            .iter()
            .filter(|a| *a.locator == *locator && a.tags.iter().any(|t| t == tag))
            .filter(|a| {
                let (first, last) = self.sighted(a.id);
                window.overlaps(first, last) || held.contains(&a.id)
            })
            .map(|a| self.artifact_info(a.id))
            .collect())
    }

    fn manifest_deleted_at(
        &mut self,
        locator: &str,
        digest: &str,
    ) -> Result<Option<Micros>, MemError> {
        Ok(self
            .manifest_deletions
            .iter()
            .filter(|(l, d, _)| l == locator && d == digest)
            .map(|&(_, _, at)| at)
            .min())
    }

    fn named_after(&mut self, artifact: ArtifactId, at: Micros) -> Result<bool, MemError> {
        Ok(self
            .events
            .iter()
            .any(|&(run, e)| e.artifact() == Some(artifact) && self.at(run, e) > at))
    }

    fn suspect_sighting(&mut self, artifact: ArtifactId) -> Result<bool, MemError> {
        Ok(self
            .events
            .iter()
            .any(|&(run, e)| e.artifact() == Some(artifact) && self.runs[index(run)].time_suspect))
    }

    fn record_cocreators(&mut self, record: RecordId) -> Result<Vec<(RunRef, Micros)>, MemError> {
        Ok(super::source::cocreators(
            self.events_where(|e| e == Event::CreatedRecord(record))
                .into_iter()
                .map(|(run, _, at)| (RunRef::from(&run), at))
                .collect(),
        ))
    }

    fn orphan_records(&mut self, builder: BuilderId) -> Result<Vec<RecordId>, MemError> {
        Ok(self
            .records
            .iter()
            .filter(|r| r.builder == builder)
            .filter(|r| {
                !self.events.iter().any(|&(run, e)| {
                    e == Event::CreatedRecord(r.id) && !self.runs[index(run)].records_doubted
                })
            })
            .map(|r| r.id)
            .collect())
    }

    fn tag_only_artifacts(
        &mut self,
        locator: &str,
        tag: &str,
    ) -> Result<Vec<ArtifactId>, MemError> {
        Ok(self
            .artifacts
            .iter()
            .filter(|a| a.backend == Backend::Registry && a.digest.is_empty())
            .filter(|a| *a.locator == *locator && a.tags.iter().any(|t| t == tag))
            .map(|a| a.id)
            .collect())
    }

    fn mounts_by_name(
        &mut self,
        builder: &str,
        mount_id: &str,
    ) -> Result<Vec<MountInfo>, MemError> {
        Ok(self
            .mounts
            .iter()
            .filter(|m| m.builder_name == builder && m.mount_id == mount_id)
            .cloned()
            .collect())
    }

    fn builder_by_name(&mut self, name: &str) -> Result<Option<BuilderInfo>, MemError> {
        Ok(self.builders.iter().find(|b| b.name == name).cloned())
    }

    fn first_mount_use(&mut self, mount: MountId) -> Result<Option<Micros>, MemError> {
        let uses = self.events_where(
            |e| matches!(e, Event::ReadMount(m) | Event::WroteMount(m) if m == mount),
        );
        Ok(uses.iter().map(|e| e.2).min())
    }

    fn first_builder_use(&mut self, builder: BuilderId) -> Result<Option<Micros>, MemError> {
        Ok(self
            .runs
            .iter()
            .filter(|r| r.builder == Some(builder))
            .map(|r| r.started_at)
            .min())
    }

    fn receipt(&mut self, run: RunId) -> Result<Option<Receipt>, MemError> {
        Ok(self.receipts.iter().find(|r| r.0 == run).map(|r| r.1))
    }

    fn run(&mut self, run: RunId) -> Result<RunInfo, MemError> {
        Self::lookup(&self.runs, run, "run")
    }

    fn writes(&mut self, run: RunId) -> Result<Vec<(Write, Micros)>, MemError> {
        Ok(self
            .events
            .iter()
            .filter(|(r, _)| *r == run)
            .filter_map(|&(r, e)| {
                let write = match e {
                    Event::Exported(a) => Write::Exported(a),
                    Event::Produced(a) => Write::Produced(a),
                    Event::WroteMount(m) => Write::Mount(m),
                    Event::CreatedRecord(c) => Write::CreatedRecord(c),
                    _ => return None,
                };
                Some((write, self.at(r, e)))
            })
            .collect())
    }

    fn digest(&mut self, digest: &str) -> Result<DigestUses, MemError> {
        let artifacts = &self.artifacts;
        let with_digest =
            |a: ArtifactId| !digest.is_empty() && artifacts[index(a)].digest == digest;
        let ids = artifacts
            .iter()
            .map(|a| a.id)
            .filter(|&a| with_digest(a))
            .collect();
        let readers = self
            .events_where(
                |e| matches!(e, Event::Imported(a) | Event::UsedBase(a) if with_digest(a)),
            )
            .into_iter()
            .map(|(run, e, at)| match e {
                Event::Imported(a) => (RunRef::from(&run), ArtifactRead::Imported, a, at),
                Event::UsedBase(a) => (RunRef::from(&run), ArtifactRead::UsedBase, a, at),
                _ => unreachable!("filtered to reads"),
            })
            .collect();
        Ok((ids, readers))
    }

    fn artifact_readers(
        &mut self,
        artifact: ArtifactId,
    ) -> Result<Vec<(RunRef, ArtifactRead, Micros)>, MemError> {
        Ok(self
            .events_where(|e| matches!(e, Event::Imported(a) | Event::UsedBase(a) if a == artifact))
            .into_iter()
            .map(|(run, e, at)| {
                let read = if matches!(e, Event::UsedBase(_)) {
                    ArtifactRead::UsedBase
                } else {
                    ArtifactRead::Imported
                };
                (RunRef::from(&run), read, at)
            })
            .collect())
    }

    fn mount_readers(
        &mut self,
        mount: MountId,
        since: Micros,
    ) -> Result<Vec<(RunRef, Micros)>, MemError> {
        self.mount_reader_queries += 1;
        Ok(self
            .events_where(|e| e == Event::ReadMount(mount))
            .into_iter()
            .filter(|e| e.2 >= since || e.0.time_suspect)
            .map(|(run, _, at)| (RunRef::from(&run), at))
            .collect())
    }

    fn mount_read(&mut self, run: RunId, mount: MountId) -> Result<Option<Micros>, MemError> {
        let read = Event::ReadMount(mount);
        Ok(self
            .events
            .contains(&(run, read))
            .then(|| self.at(run, read)))
    }

    fn mount_purges(&mut self, mount: MountId) -> Result<Vec<Micros>, MemError> {
        let builder = self.mounts[index(mount)].builder;
        let mut purges: Vec<Micros> = self
            .mount_purges
            .iter()
            .filter(|(m, _)| *m == mount)
            .map(|p| p.1)
            .chain(
                self.builder_prunes
                    .iter()
                    .filter(|p| p.builder == builder && !p.records_only)
                    .map(|p| p.at),
            )
            .collect();
        purges.sort_unstable();
        Ok(purges)
    }

    fn builder_purges(&mut self, builder: BuilderId) -> Result<Vec<BuilderPrune>, MemError> {
        let mut prunes: Vec<BuilderPrune> = self
            .builder_prunes
            .iter()
            .filter(|p| p.builder == builder)
            .map(|p| BuilderPrune {
                at: p.at,
                selective: p.selective.clone(),
            })
            .collect();
        prunes.sort_by_key(|p| p.at);
        Ok(prunes)
    }

    /// Mount purges have ids from 1 in insertion order, builder prunes follow them; each is
    /// described as recorded by hand.
    fn purges_at(&mut self, node: Purged, at: Micros) -> Result<Vec<StoredPurge>, MemError> {
        let builder = match node {
            Purged::Mount(mount) => self.mounts[index(mount)].builder,
            Purged::Builder(builder) => builder,
        };
        let builder_name = self.builders[index(builder)].name.to_string();
        let stored = |id: usize, target: PurgeTarget| StoredPurge {
            id: next_id(id),
            target,
            at,
            method: PurgeMethod::Manual,
            author: "tester@host".into(),
            recorded_at: Some(at),
            forced: false,
            reason: None,
            source: String::new(),
            action: None,
            claimed: None,
        };
        let mut found = Vec::new();
        if let Purged::Mount(mount) = node {
            for (i, _) in self
                .mount_purges
                .iter()
                .enumerate()
                .filter(|(_, p)| **p == (mount, at))
            {
                let info = &self.mounts[index(mount)];
                let target = PurgeTarget::Mount {
                    builder: builder_name.clone(),
                    mount: info.mount_id.to_string(),
                    namespace: info.namespace.to_string(),
                };
                found.push(stored(i, target));
            }
        }
        for (i, p) in self.builder_prunes.iter().enumerate().filter(|(_, p)| {
            (p.builder, p.at) == (builder, at)
                && !(p.records_only && matches!(node, Purged::Mount(_)))
        }) {
            let target = PurgeTarget::Builder {
                builder: builder_name.clone(),
                records_only: p.records_only,
                selective: p.selective.as_ref().map(|s| {
                    let mut records: Vec<String> = (s.records.iter())
                        .map(|&r| self.records[index(r)].record_id.to_string())
                        .collect();
                    records.sort();
                    SelectivePrune {
                        records,
                        since: s.since,
                        skew: s.skew,
                    }
                }),
            };
            found.push(stored(self.mount_purges.len() + i, target));
        }
        Ok(found)
    }

    fn record_reusers(&mut self, record: RecordId) -> Result<Vec<(RunRef, Micros)>, MemError> {
        Ok(self
            .events_where(|e| e == Event::ReusedRecord(record))
            .into_iter()
            .map(|(run, _, at)| (RunRef::from(&run), at))
            .collect())
    }

    fn unverified_builder_runs(
        &mut self,
        builder: BuilderId,
        since: Micros,
    ) -> Result<Vec<RunRef>, MemError> {
        Ok(self
            .runs
            .iter()
            // A run whose record evidence is doubted has none, as the store keeps it.
            .filter(|r| r.builder == Some(builder) && !r.has_believed_records())
            .filter(|r| r.finished_at >= since || r.time_suspect)
            .map(RunRef::from)
            .collect())
    }

    fn builder_record_users(
        &mut self,
        builder: BuilderId,
        since: Micros,
    ) -> Result<Vec<(RunRef, Micros)>, MemError> {
        let records = &self.records;
        let on_builder = |r: RecordId| records[index(r)].builder == builder;
        let mut users: Vec<(RunRef, Micros)> = Vec::new();
        let uses = self.events_where(
            |e| matches!(e, Event::CreatedRecord(r) | Event::ReusedRecord(r) if on_builder(r)),
        );
        for (run, _, at) in uses {
            // A run uses the records of the builder it ran on: one that names records names
            // its builder, and every store keeps a run's records on it.
            let on = run.builder == Some(builder);
            let evidence = run.has_believed_records();
            if (run.finished_at < since && !run.time_suspect) || !evidence || !on {
                continue;
            }
            match users.iter_mut().find(|(u, _)| u.id == run.id) {
                Some(user) => user.1 = user.1.min(at),
                None => users.push((RunRef::from(&run), at)),
            }
        }
        Ok(users)
    }

    fn artifact(&mut self, artifact: ArtifactId) -> Result<ArtifactInfo, MemError> {
        Self::lookup(&self.artifacts, artifact, "artifact")?;
        Ok(self.artifact_info(artifact))
    }

    fn mount(&mut self, mount: MountId) -> Result<MountInfo, MemError> {
        Self::lookup(&self.mounts, mount, "mount")
    }

    fn builder(&mut self, builder: BuilderId) -> Result<BuilderInfo, MemError> {
        Self::lookup(&self.builders, builder, "builder")
    }

    fn record(&mut self, record: RecordId) -> Result<RecordInfo, MemError> {
        Self::lookup(&self.records, record, "record")
    }
}
