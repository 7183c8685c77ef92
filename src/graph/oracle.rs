//! The taint rules applied naively, for tests: rescan every run until nothing changes. Slow
//! and obviously faithful to the rules, so the incremental traversal is checked against it.

use std::collections::{BTreeMap, BTreeSet};

use compact_str::CompactString;

use super::mem::{Event, History, index};
use super::result::{artifact_name, builder_name, mount_name, record_name, run_name};
use super::seeds::Window;
use super::source::{ArtifactId, BuilderId, MountId, RecordId, RunId, RunInfo};
use super::taint::record_carries_taint;
use crate::model::Backend;
use crate::time::Micros;

/// Seeds by id, already resolved.
#[derive(Debug, Clone)]
pub struct OracleSeeds {
    pub runs: Vec<RunId>,
    pub mount: Option<(MountId, Micros)>,
    pub builder: Option<(BuilderId, Micros)>,
    pub digest: Option<String>,
    /// Tag seeds: locator, tag and window.
    pub tags: Vec<(String, String, Window)>,
    /// Seed runs whose writes count from before their claimed start or until after their
    /// claimed finish: from when, and until when.
    pub write_spans: BTreeMap<RunId, (Micros, Micros)>,
    /// Seed runs whose writes nothing bounds: taken as a time-suspect run's.
    pub unbounded: BTreeSet<RunId>,
    /// How far one runner's clock may be behind another's (the trace's clock skew).
    pub skew: Micros,
}

impl Default for OracleSeeds {
    /// No seeds, with the trace's default clock skew.
    fn default() -> Self {
        Self {
            runs: Vec::new(),
            mount: None,
            builder: None,
            digest: None,
            tags: Vec::new(),
            write_spans: BTreeMap::new(),
            unbounded: BTreeSet::new(),
            skew: super::ClaimLimits::default().skew,
        }
    }
}

impl OracleSeeds {
    /// When a tainted run's write at `at` counts from: for a seed run with a write floor, the
    /// floor when earlier (time-aware only).
    fn write_at(&self, run: RunId, at: Micros, ignore_time: bool) -> Micros {
        match self.write_spans.get(&run) {
            Some(&(from, _)) if !ignore_time => from.min(at),
            _ => at,
        }
    }

    /// Whether the run's writes are taken as made before every read and purge (a seed run
    /// nothing bounds: time-aware only).
    fn suspect_writer(&self, run: &RunInfo, ignore_time: bool) -> bool {
        run.time_suspect || (!ignore_time && self.unbounded.contains(&run.id))
    }

    /// Until when a tainted run that finished writing at `done` went on: for a seed run with
    /// a write span, its end when later (time-aware only).
    fn write_done(&self, run: RunId, done: Micros, ignore_time: bool) -> Micros {
        match self.write_spans.get(&run) {
            Some(&(_, until)) if !ignore_time => until.max(done),
            _ => done,
        }
    }
}

/// The names of every tainted entity.
pub fn closure(h: &History, seeds: &OracleSeeds, ignore_time: bool) -> BTreeSet<String> {
    let (runs, artifacts) = fixpoint(h, seeds, ignore_time);
    names(h, &runs, &artifacts, seeds, ignore_time)
}

/// The earliest time each tainted entity is tainted from, by name. A run: the earliest any
/// evidence from the tainted runs and artifacts reaches it. An artifact: its seeding (from its
/// first sighting) or its earliest write by a tainted run, the earliest of any artifact with
/// the same digest. A mount, builder or builder record: its seeding or its earliest write.
pub fn times(h: &History, seeds: &OracleSeeds, ignore_time: bool) -> BTreeMap<String, Micros> {
    let (runs, artifacts) = fixpoint(h, seeds, ignore_time);
    let mut out = BTreeMap::new();
    let mut earliest_at =
        |name: CompactString, at: Micros| keep_earliest(&mut out, name.into(), at);
    let mut own: BTreeMap<ArtifactId, Micros> = BTreeMap::new();
    if let Some(digest) = &seeds.digest {
        for a in h.artifacts.iter().filter(|a| &a.digest == digest) {
            own.insert(a.id, h.artifact_info(a.id).first_seen);
        }
    }
    for (a, floor) in tag_seeded(h, seeds, ignore_time) {
        keep_earliest(&mut own, a, h.artifact_info(a).first_seen.max(floor));
    }
    if let Some((mount, since)) = seeds.mount {
        earliest_at(mount_name(&h.mounts[index(mount)]), since);
    }
    if let Some((builder, since)) = seeds.builder {
        earliest_at(builder_name(&h.builders[index(builder)].name), since);
    }
    for &id in &runs {
        let run = info(h, id);
        let at = if seeds.runs.contains(&id) {
            run.started_at
        } else {
            earliest(h, run, &runs, &artifacts, seeds, ignore_time).expect("reached")
        };
        earliest_at(run_name(run), at);
        let start = seeds.write_at(id, run.started_at, ignore_time);
        if let Some(builder) = run.builder {
            earliest_at(builder_name(&h.builders[index(builder)].name), start);
        }
        for r in orphans_of(h, run, seeds, ignore_time) {
            let record = &h.records[index(r)];
            let builder = &h.builders[index(record.builder)].name;
            earliest_at(record_name(builder, record), start);
        }
        for (e, at) in events_of(h, id) {
            match e {
                Event::Exported(a) | Event::Produced(a) => {
                    keep_earliest(&mut own, a, at);
                }
                Event::WroteMount(m) => earliest_at(
                    mount_name(&h.mounts[index(m)]),
                    seeds.write_at(id, at, ignore_time),
                ),
                Event::CreatedRecord(r) if record_carries_taint(&h.records[index(r)]) => {
                    let record = &h.records[index(r)];
                    let builder = &h.builders[index(record.builder)].name;
                    earliest_at(record_name(builder, record), at);
                }
                _ => {}
            }
        }
    }
    for (held, _, at) in tag_held(h, &artifacts, seeds, ignore_time) {
        keep_earliest(&mut own, held, at);
    }
    for &a in artifacts.keys() {
        let digest = &h.artifacts[index(a)].digest;
        let at = own
            .iter()
            .filter(|&(&b, _)| {
                b == a || !digest.is_empty() && &h.artifacts[index(b)].digest == digest
            })
            .map(|(_, &at)| at)
            .min()
            .expect("tainted by its own evidence or a copy's");
        earliest_at(artifact_name(&h.artifacts[index(a)]), at);
    }
    out
}

fn keep_earliest<K: Ord>(times: &mut BTreeMap<K, Micros>, key: K, at: Micros) {
    let slot = times.entry(key).or_insert(at);
    *slot = (*slot).min(at);
}

/// The tainted runs, and the tainted artifacts with the earliest read time from which they
/// taint their readers.
fn fixpoint(
    h: &History,
    seeds: &OracleSeeds,
    ignore_time: bool,
) -> (BTreeSet<RunId>, BTreeMap<ArtifactId, Reads>) {
    let mut runs: BTreeSet<RunId> = seeds.runs.iter().copied().collect();
    loop {
        let before = runs.len();
        let artifacts = tainted_artifacts(h, &runs, seeds, ignore_time);
        for run in &h.runs {
            if !runs.contains(&run.id)
                && earliest(h, run, &runs, &artifacts, seeds, ignore_time).is_some()
            {
                runs.insert(run.id);
            }
        }
        if runs.len() == before {
            return (runs, artifacts);
        }
    }
}

fn events_of(h: &History, run: RunId) -> impl Iterator<Item = (Event, Micros)> + '_ {
    h.events
        .iter()
        .filter(move |(r, _)| *r == run)
        .map(move |&(r, e)| (e, h.at(r, e)))
}

fn info(h: &History, run: RunId) -> &RunInfo {
    &h.runs[index(run)]
}

/// The artifacts a tag seed selects: those seen under the tag at some time in its window, and
/// the digest it held when the window opened (last seen under it before). One
/// recorded by tag only stands for whatever the tag held, so it taints only the runs that read
/// it from the window's start (its floor); one with a digest taints every reader.
fn tag_seeded(h: &History, seeds: &OracleSeeds, ignore_time: bool) -> Vec<(ArtifactId, Micros)> {
    let mut out = Vec::new();
    for (locator, tag, window) in &seeds.tags {
        // The digest the tag held when the window opened counts as seen in it.
        let held = h.held_at(locator, tag, window.since);
        for a in h.artifacts.iter() {
            let (first, last) = h.sighted(a.id);
            if *a.locator != **locator
                || !a.tags.iter().any(|t| t == tag)
                || !(window.overlaps(first, last) || held.contains(&a.id))
            {
                continue;
            }
            let floor = match window.since {
                Some(since) if a.digest.is_empty() && !ignore_time => since,
                _ => Micros::MIN,
            };
            out.push((a.id, floor));
        }
    }
    out
}

/// The read times from which, and before which, a tainted artifact taints its readers: every
/// read but those of a ref recorded by tag only that a tag seed with a window, or a digest the
/// tag held for a while, taints. Several are joined into the span that holds them all.
type Reads = (Micros, Micros);

const ALL_READS: Reads = (Micros::MIN, Micros::MAX);

fn keep_widest(
    reads: &mut BTreeMap<ArtifactId, Reads>,
    artifact: ArtifactId,
    (from, until): Reads,
) {
    let slot = reads.entry(artifact).or_insert((from, until));
    *slot = (slot.0.min(from), slot.1.max(until));
}

/// The tainted artifacts, each with the reads it taints.
fn tainted_artifacts(
    h: &History,
    runs: &BTreeSet<RunId>,
    seeds: &OracleSeeds,
    ignore_time: bool,
) -> BTreeMap<ArtifactId, Reads> {
    let mut out: BTreeMap<ArtifactId, Reads> = BTreeMap::new();
    if let Some(digest) = &seeds.digest {
        for a in h.artifacts.iter().filter(|a| &a.digest == digest) {
            out.insert(a.id, ALL_READS);
        }
    }
    for (a, floor) in tag_seeded(h, seeds, ignore_time) {
        keep_widest(&mut out, a, (floor, Micros::MAX));
    }
    // A failed run's exports and images count: it may have pushed before it failed.
    for &run in runs {
        for (e, _) in events_of(h, run) {
            if let Event::Exported(a) | Event::Produced(a) = e {
                out.insert(a, ALL_READS);
            }
        }
    }
    let digests: BTreeSet<String> = out
        .keys()
        .map(|&a| h.artifacts[index(a)].digest.clone())
        .filter(|d| !d.is_empty())
        .collect();
    for a in h.artifacts.iter().filter(|a| digests.contains(&a.digest)) {
        out.insert(a.id, ALL_READS);
    }
    for (held, reads, _) in tag_held(h, &out, seeds, ignore_time) {
        keep_widest(&mut out, held, reads);
    }
    out
}

/// The refs recorded by tag only (registry, no digest) that a tainted registry artifact with a
/// digest shares a locator and a tag with: the tag may have held the digest when they were
/// read, from the digest's first sighting there (any time, if a time-suspect run named it)
/// until a recorded purge deleted it there. Each with those reads (all, time-blind) and the
/// time it is tainted from.
fn tag_held<V>(
    h: &History,
    tainted: &BTreeMap<ArtifactId, V>,
    seeds: &OracleSeeds,
    ignore_time: bool,
) -> Vec<(ArtifactId, Reads, Micros)> {
    let mut out = Vec::new();
    for &a in tainted.keys() {
        let digest = h.artifact_info(a);
        if digest.backend != Backend::Registry || digest.digest.is_empty() {
            continue;
        }
        let suspect =
            (h.events.iter()).any(|&(run, e)| e.artifact() == Some(a) && info(h, run).time_suspect);
        // A seed run with a write span that pushed it may have done so from the span's start.
        let pushed = (h.events.iter())
            .filter(|&&(run, e)| {
                matches!(e, Event::Exported(x) | Event::Produced(x) if x == a)
                    && seeds.write_spans.contains_key(&run)
            })
            .map(|&(run, _)| {
                if seeds.unbounded.contains(&run) {
                    Micros::MIN
                } else {
                    seeds.write_spans[&run].0
                }
            })
            .min();
        let from = if suspect {
            Micros::MIN
        } else {
            pushed.map_or(digest.first_seen, |p| p.min(digest.first_seen))
        };
        let named_after = |at: Micros| {
            (h.events.iter()).any(|&(run, e)| e.artifact() == Some(a) && h.at(run, e) > at)
        };
        let until = h
            .manifest_deletions
            .iter()
            .filter(|(l, d, _)| **l == *digest.locator && *d == digest.digest)
            .map(|&(_, _, at)| at)
            .min()
            .filter(|&at| !named_after(at))
            .unwrap_or(Micros::MAX);
        let reads = if ignore_time {
            ALL_READS
        } else {
            (from, until)
        };
        for held in &h.artifacts {
            if held.backend == Backend::Registry
                && held.digest.is_empty()
                && held.locator == digest.locator
                && held.tags.iter().any(|t| digest.tags.contains(t))
            {
                let at = h.artifact_info(held.id).first_seen.max(digest.first_seen);
                out.push((held.id, reads, at));
            }
        }
    }
    out
}

/// Whether a purge after a write's writer finished (`done`; a seed's time) and before the
/// reader started cleared the write. A purge while the writer ran leaves what it went on
/// writing.
fn cleared(purges: &[Micros], done: Micros, start: Micros) -> bool {
    purges.iter().any(|&p| done < p && p < start)
}

/// The earliest time any evidence from the tainted runs and artifacts (and the seeds)
/// reaches the run, if any does.
fn earliest(
    h: &History,
    run: &RunInfo,
    tainted: &BTreeSet<RunId>,
    artifacts: &BTreeMap<ArtifactId, Reads>,
    seeds: &OracleSeeds,
    ignore_time: bool,
) -> Option<Micros> {
    let (start, finish) = (run.started_at, run.finished_at);
    // A time-suspect run's times prove nothing: as a reader it read after every write and
    // before any purge; as a writer, its write came before every read and every purge.
    let fresh = |purges: &[Micros], (written, done, suspect): Write, read: Micros| {
        ignore_time
            || run.time_suspect
            || suspect
            || (written <= read && !cleared(purges, done, start))
    };
    let from = |(written, _, suspect): Write| {
        if suspect { start } else { start.max(written) }
    };
    // A run is tainted no earlier than its start, and from a write no earlier than the write.
    let mut times: Vec<Micros> = Vec::new();
    for (event, at) in events_of(h, run.id) {
        match event {
            Event::Imported(a) | Event::UsedBase(a) => {
                if let Some(&(floor, until)) = artifacts.get(&a)
                    && ((floor <= at && (at < until || until == Micros::MAX)) || run.time_suspect)
                {
                    times.push(start.max(floor));
                }
            }
            Event::ReadMount(m) => {
                let purges = mount_purges(h, m);
                let seeded = seeds.mount.filter(|s| s.0 == m).map(|s| s.1);
                times.extend(
                    seeded
                        .map(|at| (at, at, false))
                        .into_iter()
                        .chain(writes_to(h, tainted, run.id, (seeds, ignore_time), |e| {
                            e == Event::WroteMount(m)
                        }))
                        .filter(|&w| fresh(&purges, w, at))
                        .map(from),
                );
            }
            Event::ReusedRecord(r)
                if record_carries_taint(&h.records[index(r)])
                    && writes_to(h, tainted, run.id, (seeds, ignore_time), |e| {
                        e == Event::CreatedRecord(r)
                    })
                    .next()
                    .is_some() =>
            {
                times.push(start);
            }
            // Two runs that recorded creating one record ran side by side: either may have
            // made it, and the other used it, unless it finished before the tainted one made it
            // (on a clock that may be behind the other runner's by the skew).
            Event::CreatedRecord(r)
                if record_carries_taint(&h.records[index(r)])
                    && writes_to(h, tainted, run.id, (seeds, ignore_time), |e| {
                        e == Event::CreatedRecord(r)
                    })
                    .any(|(made, _, suspect)| {
                        ignore_time
                            || run.time_suspect
                            || suspect
                            || made <= run.finished_at.saturating_add(seeds.skew.max(0))
                    }) =>
            {
                times.push(start);
            }
            Event::ReusedRecord(r)
                if record_carries_taint(&h.records[index(r)]) && !has_creator(h, r) =>
            {
                let builder = h.records[index(r)].builder;
                for &writer in tainted {
                    let writer = info(h, writer);
                    if writer.id == run.id
                        || writer.builder != Some(builder)
                        || !orphans_of(h, writer, seeds, ignore_time).any(|o| o == r)
                    {
                        continue;
                    }
                    let floor = if ignore_time || seeds.suspect_writer(writer, ignore_time) {
                        Micros::MIN
                    } else {
                        seeds.write_at(writer.id, writer.started_at, ignore_time)
                    };
                    if at >= floor || run.time_suspect {
                        times.push(start.max(floor));
                    }
                }
            }
            _ => {}
        }
    }
    if let Some(builder) = run.builder
        && !run.has_records
    {
        let seeded = seeds.builder.filter(|s| s.0 == builder).map(|s| s.1);
        let seeded = seeded.map(|at| {
            (
                (at, at, false),
                builder_prunes(h, builder, (None, at, false)),
            )
        });
        let starts = tainted
            .iter()
            .filter(|&&r| r != run.id && info(h, r).builder == Some(builder))
            .map(|&r| {
                let writer = info(h, r);
                let done = writer.finished_at.max(writer.started_at);
                let done = seeds.write_done(r, done, ignore_time);
                let start = seeds.write_at(r, writer.started_at, ignore_time);
                let suspect = seeds.suspect_writer(writer, ignore_time);
                let prunes = builder_prunes(h, builder, (Some(writer), start, suspect));
                ((start, done, suspect), prunes)
            });
        times.extend(
            seeded
                .into_iter()
                .chain(starts)
                .filter(|(t, prunes)| fresh(prunes, *t, finish))
                .map(|(t, _)| from(t)),
        );
    }
    times.extend(seeded_builder_use(h, run, seeds, ignore_time).map(|since| start.max(since)));
    times.into_iter().min()
}

/// Whether any run recorded creating the record.
fn has_creator(h: &History, record: RecordId) -> bool {
    h.events
        .iter()
        .any(|&(_, e)| e == Event::CreatedRecord(record))
}

/// The records a run without record evidence may have created unrecorded: those of its
/// builder that carry taint and that no run recorded creating, unless first reused before the
/// run started or after a prune that followed its finish. None for a run with evidence, which
/// said what it created.
fn orphans_of<'a>(
    h: &'a History,
    run: &'a RunInfo,
    seeds: &'a OracleSeeds,
    ignore_time: bool,
) -> impl Iterator<Item = RecordId> + 'a {
    let builder = run.builder.filter(|_| !run.has_records);
    let done = run.finished_at.max(run.started_at);
    let done = seeds.write_done(run.id, done, ignore_time);
    let start = seeds.write_at(run.id, run.started_at, ignore_time);
    let suspect = seeds.suspect_writer(run, ignore_time);
    let prunes = builder
        .map(|b| builder_prunes(h, b, (Some(run), start, suspect)))
        .unwrap_or_default();
    h.records
        .iter()
        .filter(move |r| Some(r.builder) == builder)
        .filter(|r| record_carries_taint(r) && !has_creator(h, r.id))
        .filter(move |r| {
            let first = h
                .events
                .iter()
                .filter(|&&(_, e)| e == Event::ReusedRecord(r.id))
                .map(|&(reuser, e)| h.at(reuser, e))
                .min();
            ignore_time
                || seeds.suspect_writer(run, ignore_time)
                || first.is_none_or(|first| start <= first && !cleared(&prunes, done, first))
        })
        .map(|r| r.id)
}

/// For a run with record evidence that created or reused a record of a seeded builder and was
/// on it at or after the seed time (finished then or later, whenever its record events are
/// dated): the time the seed suspects the builder from.
fn seeded_builder_use(
    h: &History,
    run: &RunInfo,
    seeds: &OracleSeeds,
    ignore_time: bool,
) -> Option<Micros> {
    let (builder, since) = seeds.builder?;
    // Records of the builder it ran on: every store keeps a run's records on its builder.
    if !run.has_records || run.builder != Some(builder) {
        return None;
    }
    let prunes = builder_prunes(h, builder, (None, since, false));
    events_of(h, run.id)
        .any(|(e, _)| match e {
            Event::CreatedRecord(r) | Event::ReusedRecord(r) => {
                h.records[index(r)].builder == builder
                    && (ignore_time
                        || run.time_suspect
                        || (run.finished_at >= since && !cleared(&prunes, since, run.started_at)))
            }
            _ => false,
        })
        .then_some(since)
}

/// A tainted write: when it was made, until when its writer went on (its finish; a seed's
/// time), and whether its writer is time-suspect.
type Write = (Micros, Micros, bool);

/// The writes of tainted runs other than `reader` whose events match.
fn writes_to<'a>(
    h: &'a History,
    tainted: &'a BTreeSet<RunId>,
    reader: RunId,
    (seeds, ignore_time): (&'a OracleSeeds, bool),
    pick: impl Fn(Event) -> bool + 'a,
) -> impl Iterator<Item = Write> + 'a {
    h.events
        .iter()
        .filter(move |(r, e)| *r != reader && tainted.contains(r) && pick(*e))
        .map(move |&(r, e)| {
            let writer = info(h, r);
            let at = h.at(r, e);
            // A write dated after its run's finish went on until then.
            let done = seeds.write_done(r, writer.finished_at.max(at), ignore_time);
            (
                seeds.write_at(r, at, ignore_time),
                done,
                seeds.suspect_writer(writer, ignore_time),
            )
        })
}

/// A mount's purges: its own, and its builder's whole prunes (a prune of build records only
/// leaves cache mounts).
fn mount_purges(h: &History, mount: MountId) -> Vec<Micros> {
    let builder = h.mounts[index(mount)].builder;
    h.mount_purges
        .iter()
        .filter(|p| p.0 == mount)
        .map(|p| p.1)
        .chain(
            h.builder_prunes
                .iter()
                .filter(|p| p.builder == builder && !p.records_only)
                .map(|p| p.at),
        )
        .collect()
}

/// The times of the builder's prunes that removed what a writer may have left there: every
/// prune of all its records, and a prune of some of them that named every record the writer
/// said it created (of those that carry taint, when it said them all), or pruned every record
/// used since before the writer began, by more than the builder's clock may be behind (or
/// whenever used). A seed of the builder (no run) is a writer without record evidence from its time.
fn builder_prunes(
    h: &History,
    builder: BuilderId,
    (writer, start, suspect): (Option<&RunInfo>, Micros, bool),
) -> Vec<Micros> {
    h.builder_prunes
        .iter()
        .filter(|p| p.builder == builder)
        .filter(|p| match &p.selective {
            None => true,
            Some(some) => {
                let since = match some.since {
                    Some(Micros::MIN) => true,
                    // The builder's clock may be `skew` behind the writer's.
                    Some(since) => !suspect && since.saturating_add(some.skew) <= start,
                    None => false,
                };
                // Of the records of this builder it said it created, those an incident names
                // (that carry taint); a run recorded over a limit may not have said them all.
                let named = writer.is_some_and(|run| {
                    run.has_records
                        && !run.truncated
                        && h.events.iter().all(|&(r, e)| match e {
                            Event::CreatedRecord(record)
                                if r == run.id
                                    && h.records[index(record)].builder == builder
                                    && record_carries_taint(&h.records[index(record)]) =>
                            {
                                some.records.contains(&record)
                            }
                            _ => true,
                        })
                });
                since || named
            }
        })
        .map(|p| p.at)
        .collect()
}

fn names(
    h: &History,
    runs: &BTreeSet<RunId>,
    artifacts: &BTreeMap<ArtifactId, Reads>,
    seeds: &OracleSeeds,
    ignore_time: bool,
) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut mounts: BTreeSet<MountId> = seeds.mount.map(|s| s.0).into_iter().collect();
    let mut builders: BTreeSet<BuilderId> = seeds.builder.map(|s| s.0).into_iter().collect();
    let mut records: BTreeSet<RecordId> = BTreeSet::new();
    for &run in runs {
        let info = info(h, run);
        out.insert(run_name(info).into());
        builders.extend(info.builder);
        for (e, _) in events_of(h, run) {
            match e {
                Event::WroteMount(m) => {
                    mounts.insert(m);
                }
                Event::CreatedRecord(r) if record_carries_taint(&h.records[index(r)]) => {
                    records.insert(r);
                }
                _ => {}
            }
        }
        records.extend(orphans_of(h, info, seeds, ignore_time));
    }
    for &a in artifacts.keys() {
        out.insert(artifact_name(&h.artifacts[index(a)]).into());
    }
    for m in mounts {
        out.insert(mount_name(&h.mounts[index(m)]).into());
    }
    for b in builders {
        out.insert(builder_name(&h.builders[index(b)].name).into());
    }
    for r in records {
        let record = &h.records[index(r)];
        let builder = &h.builders[index(record.builder)].name;
        out.insert(record_name(builder, record).into());
    }
    out
}
