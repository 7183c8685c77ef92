//! What the trace reads: the indexed lookups it needs, nothing more.
//!
//! The store implements [`Source`] with indexed SQL queries, so a trace loads only the part of
//! the history it reaches. Tests implement it over hand-built histories in memory.

use std::sync::Arc;

use compact_str::CompactString;

use crate::model::{Backend, RunKey, RunStatus, StoredPurge};
use crate::time::Micros;

/// Store row ids; each kind has its own id space.
pub type RunId = i64;
pub type ArtifactId = i64;
pub type MountId = i64;
pub type BuilderId = i64;
pub type RecordId = i64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunInfo {
    pub id: RunId,
    pub pipeline: CompactString,
    pub run_key: CompactString,
    pub step: CompactString,
    pub builder: Option<BuilderId>,
    pub started_at: Micros,
    pub finished_at: Micros,
    pub status: RunStatus,
    /// The hook captured which builder records this run created and reused.
    pub has_records: bool,
    /// The run was recorded at a level whose word a trace does not take as complete record
    /// evidence (the lowest): it may have left out a record it created. Its evidence still
    /// names what it created and reused, which a purge prunes by id.
    pub records_doubted: bool,
    /// Part of what the run used was over a limit and not recorded.
    pub truncated: bool,
    /// The collector does not believe the run's own times (`time-suspect`).
    pub time_suspect: bool,
}

/// A run as a reader sees it: enough to decide whether and from when it is tainted. Its
/// description is read with [`Source::run`] only when it joins the blast radius.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunRef {
    pub id: RunId,
    pub started_at: Micros,
    pub finished_at: Micros,
    /// The collector does not believe the run's times: no time comparison keeps it out.
    pub time_suspect: bool,
}

/// When the collector received a run (its own clock), whether the run came late, from a
/// spool, with a token past its expiry, and whether its token expires at all (an OIDC token
/// does; a static `[[token]]` does not, and bounds nothing about when the run began).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    pub received_at: Micros,
    pub late: bool,
    pub expiring: bool,
    /// The last time the store took events for the run: its receipt, or a later send that
    /// added to it.
    pub last_seen: Micros,
    /// The earliest the run may have begun as the collector bounded it when it received the
    /// run, from its token's issue time; `None` when it did not (or before it kept this).
    pub began_after: Option<Micros>,
}

impl RunInfo {
    /// Whether a trace takes the run's record evidence: it has some, and its word is not
    /// doubted. A run without is one whose use of its builder's records is unknown.
    pub fn has_believed_records(&self) -> bool {
        self.has_records && !self.records_doubted
    }
}

impl From<&RunInfo> for RunRef {
    fn from(run: &RunInfo) -> Self {
        Self {
            id: run.id,
            started_at: run.started_at,
            finished_at: run.finished_at,
            time_suspect: run.time_suspect,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactInfo {
    pub id: ArtifactId,
    pub backend: Backend,
    /// Shared by the artifacts of one repository or cache location.
    pub locator: Arc<str>,
    /// Empty when unknown (a tag that was never resolved).
    pub digest: String,
    pub key: CompactString,
    pub tags: Vec<CompactString>,
    pub first_seen: Micros,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    pub id: MountId,
    pub builder: BuilderId,
    pub builder_name: CompactString,
    pub namespace: CompactString,
    pub mount_id: CompactString,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuilderInfo {
    pub id: BuilderId,
    pub name: CompactString,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordInfo {
    pub id: RecordId,
    pub builder: BuilderId,
    pub record_id: CompactString,
    pub record_type: CompactString,
    /// Shared: the same step on the same builder gives records of the same description.
    pub description: Arc<str>,
    /// The type and description were given by a run whose record evidence is not believed,
    /// and no believed run has described the record since: they say nothing of what it is.
    pub doubted: bool,
}

/// Something a run wrote, with the time the write is taken to have happened (its start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    Exported(ArtifactId),
    Produced(ArtifactId),
    Mount(MountId),
    CreatedRecord(RecordId),
}

/// A prune of a builder's cache, as a trace applies it to the builder's build records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuilderPrune {
    pub at: Micros,
    /// `None` for a prune of every build record.
    pub selective: Option<Selective>,
}

/// A prune of only some of a builder's records: those named, and every build record used
/// since `since` (the builder's clock, which may be `skew` behind a runner's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selective {
    /// The named records the store holds, ascending.
    pub records: Vec<RecordId>,
    pub since: Option<Micros>,
    pub skew: Micros,
}

impl Selective {
    /// Whether the prune removed all a writer may have left on the builder: everything from
    /// its write on (`at`, when its times are believed, less the skew the builder's clock
    /// may be behind), or, for a run with complete record evidence, every record it `created`
    /// there that carries taint.
    pub fn covers(&self, at: Micros, suspect: bool, created: Option<&[RecordId]>) -> bool {
        // Since any time: every build record, whoever wrote it, whenever.
        let since = self.since.is_some_and(|since| {
            since == Micros::MIN || (!suspect && at >= since.saturating_add(self.skew))
        });
        since
            || created.is_some_and(|created| {
                created
                    .iter()
                    .all(|r| self.records.binary_search(r).is_ok())
            })
    }
}

/// How a run read an artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArtifactRead {
    Imported,
    UsedBase,
}

/// A run that read an artifact with a given digest: how, which artifact, and when.
pub type DigestRead = (RunRef, ArtifactRead, ArtifactId, Micros);

/// The artifacts with a digest, and the runs that read one of them.
pub type DigestUses = (Vec<ArtifactId>, Vec<DigestRead>);

/// What a purge cleaned, as the trace sees it: a mount (which a prune of its whole builder
/// cleans too) or a builder's cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Purged {
    Mount(MountId),
    Builder(BuilderId),
}

/// The lookups a trace needs. Every method is one indexed query in the store.
pub trait Source {
    type Error: std::error::Error + Send + Sync + 'static;

    // Seeds.
    /// Runs of the pipeline whose start lies in `[since, until]`, and its time-suspect runs
    /// whatever times they claim; `None` when no such pipeline.
    fn pipeline_runs(
        &mut self,
        pipeline: &str,
        since: Option<Micros>,
        until: Option<Micros>,
    ) -> Result<Option<Vec<RunInfo>>, Self::Error>;
    /// Runs of the pipeline the collector received at or after `at`, whatever start they claim.
    fn runs_received_since(
        &mut self,
        pipeline: &str,
        at: Micros,
    ) -> Result<Vec<RunInfo>, Self::Error>;
    /// Runs with this key; without a step, every step of the run.
    fn runs_by_key(&mut self, key: &RunKey) -> Result<Vec<RunInfo>, Self::Error>;
    /// Artifacts in `locator` (`registry/repository`) that were seen under `tag` at some time
    /// within `[since, until]`: the tag's sightings there (first to last) overlap it.
    fn artifacts_by_tag(
        &mut self,
        locator: &str,
        tag: &str,
        since: Option<Micros>,
        until: Option<Micros>,
    ) -> Result<Vec<ArtifactInfo>, Self::Error>;
    /// The mount with this Dockerfile id on the builder (any namespace).
    fn mounts_by_name(
        &mut self,
        builder: &str,
        mount_id: &str,
    ) -> Result<Vec<MountInfo>, Self::Error>;
    fn builder_by_name(&mut self, name: &str) -> Result<Option<BuilderInfo>, Self::Error>;
    /// The earliest recorded use (read or write) of the mount.
    fn first_mount_use(&mut self, mount: MountId) -> Result<Option<Micros>, Self::Error>;
    /// The earliest start of a run on the builder.
    fn first_builder_use(&mut self, builder: BuilderId) -> Result<Option<Micros>, Self::Error>;
    /// How the collector received the run, when one did.
    fn receipt(&mut self, run: RunId) -> Result<Option<Receipt>, Self::Error>;

    // Expansion.
    fn run(&mut self, run: RunId) -> Result<RunInfo, Self::Error>;
    /// What the run wrote, each with its event time.
    fn writes(&mut self, run: RunId) -> Result<Vec<(Write, Micros)>, Self::Error>;
    /// Every artifact with this digest, and the runs that imported one or used one as a base
    /// (two queries in the store).
    fn digest(&mut self, digest: &str) -> Result<DigestUses, Self::Error>;
    /// [`Self::digest`] for `artifact`'s own digest, which a source may answer from the
    /// artifact alone.
    fn artifact_digest(
        &mut self,
        artifact: ArtifactId,
        digest: &str,
    ) -> Result<DigestUses, Self::Error> {
        let _ = artifact;
        self.digest(digest)
    }
    /// The registry artifacts in `locator` recorded by tag only (their digest never learnt)
    /// that were seen under `tag`: whatever the tag held when they were read.
    fn tag_only_artifacts(
        &mut self,
        locator: &str,
        tag: &str,
    ) -> Result<Vec<ArtifactId>, Self::Error>;
    /// When a recorded purge deleted the manifest `digest` from `locator` (the earliest of
    /// the deletions still done), if one did: a tag read after it no longer held it.
    fn manifest_deleted_at(
        &mut self,
        locator: &str,
        digest: &str,
    ) -> Result<Option<Micros>, Self::Error>;
    /// Whether a run named the artifact (read or pushed it) after `at`.
    fn named_after(&mut self, artifact: ArtifactId, at: Micros) -> Result<bool, Self::Error>;
    /// Whether a time-suspect run named the artifact: its first sighting may be that run's
    /// claim, which proves nothing.
    fn suspect_sighting(&mut self, artifact: ArtifactId) -> Result<bool, Self::Error>;
    /// Runs that imported this artifact (for artifacts without a digest).
    fn artifact_readers(
        &mut self,
        artifact: ArtifactId,
    ) -> Result<Vec<(RunRef, ArtifactRead, Micros)>, Self::Error>;
    /// Runs that read the mount at or after `since`, and time-suspect runs that read it at
    /// any time, with the read time.
    fn mount_readers(
        &mut self,
        mount: MountId,
        since: Micros,
    ) -> Result<Vec<(RunRef, Micros)>, Self::Error>;
    /// When the run read the mount, if it did.
    fn mount_read(&mut self, run: RunId, mount: MountId) -> Result<Option<Micros>, Self::Error>;
    /// Times the mount was purged (including prunes of its whole builder), ascending.
    fn mount_purges(&mut self, mount: MountId) -> Result<Vec<Micros>, Self::Error>;
    /// The prunes of the builder's cache, by time ascending.
    fn builder_purges(&mut self, builder: BuilderId) -> Result<Vec<BuilderPrune>, Self::Error>;
    /// The purges recorded at exactly `at` that clean the mount (its own, and prunes of its
    /// builder) or the builder, with their provenance, for output. Only the purges a trace
    /// applied are looked up, so the traversal itself carries nothing but their times.
    fn purges_at(&mut self, node: Purged, at: Micros) -> Result<Vec<StoredPurge>, Self::Error>;
    /// The builder's records that no recorded run created (whoever made them ran without
    /// record evidence, or unrecorded): a run whose record evidence is doubted creates none.
    fn orphan_records(&mut self, builder: BuilderId) -> Result<Vec<RecordId>, Self::Error>;
    /// The runs that recorded creating this builder record, with the time, when more than one
    /// did (concurrent builds on one builder each list what either made); none otherwise.
    fn record_cocreators(&mut self, record: RecordId)
    -> Result<Vec<(RunRef, Micros)>, Self::Error>;
    /// Runs that reused this builder record, with the reuse time.
    fn record_reusers(&mut self, record: RecordId) -> Result<Vec<(RunRef, Micros)>, Self::Error>;
    /// When a run first reused this builder record (a time-suspect one whenever it says).
    fn record_first_reuse(&mut self, record: RecordId) -> Result<Option<Micros>, Self::Error> {
        Ok(self.record_reusers(record)?.iter().map(|&(_, at)| at).min())
    }
    /// Runs on the builder without record-level evidence that finished at or after `since`,
    /// and those of them that are time-suspect whenever they finished.
    fn unverified_builder_runs(
        &mut self,
        builder: BuilderId,
        since: Micros,
    ) -> Result<Vec<RunRef>, Self::Error>;
    /// Runs on the builder with record-level evidence that created or reused one of its
    /// records (a run names records of its own builder only) and were on it at or after
    /// `since` (finished at or after it; a time-suspect run: whenever it ran), each with its
    /// earliest such event time, which for a run that spans `since` is before it (for a
    /// seeded builder, whose whole cache is suspect).
    fn builder_record_users(
        &mut self,
        builder: BuilderId,
        since: Micros,
    ) -> Result<Vec<(RunRef, Micros)>, Self::Error>;

    // Description, for output.
    fn artifact(&mut self, artifact: ArtifactId) -> Result<ArtifactInfo, Self::Error>;
    fn mount(&mut self, mount: MountId) -> Result<MountInfo, Self::Error>;
    fn builder(&mut self, builder: BuilderId) -> Result<BuilderInfo, Self::Error>;
    fn record(&mut self, record: RecordId) -> Result<RecordInfo, Self::Error>;
}

/// What [`Source::record_cocreators`] answers from a record's creators: all of them when more
/// than one run recorded creating it, none otherwise.
pub fn cocreators(creators: Vec<(RunRef, Micros)>) -> Vec<(RunRef, Micros)> {
    if creators.len() > 1 {
        creators
    } else {
        Vec::new()
    }
}
