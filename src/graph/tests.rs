//! Traces over hand-built histories, each checked against the exact expected sets.

use std::collections::{BTreeMap, BTreeSet};

use petgraph::Direction;
use petgraph::graph::NodeIndex;
use petgraph::visit::EdgeRef;
use proptest::prelude::*;

use super::mem::History;
use super::oracle::{self, OracleSeeds};
use super::seeds::{
    BuilderSeed, CacheRefSeed, DigestSeed, MountSeed, PipelineSeed, RunSeed, SeedSpec, Seeds,
    Window,
};
use super::source::{Receipt, RecordId, Source};
use super::{ClaimLimits, Entity, Kind, ResolveError, Trace, TraceError, TraceOptions, Via, trace};
use crate::model::{Backend, Digest};
use crate::time::Micros;

/// 2026-03-01T00:00:00Z plus `minutes`.
pub(crate) fn t(minutes: i64) -> Micros {
    (1_772_323_200 + minutes * 60) * 1_000_000
}

fn digest(c: char) -> String {
    format!("sha256:{}", c.to_string().repeat(64))
}

fn runs(keys: &[&str]) -> Seeds {
    Seeds {
        runs: keys.iter().map(|k| RunSeed::parse(k).unwrap()).collect(),
        ..Seeds::default()
    }
}

fn traced(history: &mut History, seeds: &Seeds) -> Trace {
    trace(history, seeds, TraceOptions::default()).unwrap()
}

fn names(trace: &Trace, kind: Kind) -> Vec<String> {
    let mut names: Vec<String> = trace
        .tainted(kind)
        .iter()
        .map(|e| e.name().to_string())
        .collect();
    names.sort();
    names
}

fn set(items: &[&str]) -> Vec<String> {
    let mut items: Vec<String> = items.iter().map(|&s| s.to_owned()).collect();
    items.sort();
    items
}

/// The tainted entry with this name, in whichever group lists it.
fn entry<'t>(trace: &'t Trace, name: &str) -> super::Tainted<'t> {
    Kind::ALL
        .iter()
        .flat_map(|&k| trace.tainted(k))
        .find(|e| e.name() == name)
        .unwrap_or_else(|| panic!("`{name}` is not tainted"))
}

const PIP: &str = "mount:b1:/root/.cache/pip";

/// A builder `b1` with a pip mount, and `evil/1` (10..20) writing it. Runs carry record
/// evidence, so only the mount rule applies.
fn poisoned_mount() -> (History, i64) {
    poisoned_mount_by(10, 20)
}

/// [`poisoned_mount`] with `evil/1` (run 1) claiming `start..finish`.
fn poisoned_mount_by(start: i64, finish: i64) -> (History, i64) {
    let mut h = History::new();
    let b1 = h.builder("b1");
    let pip = h.mount(b1, "/root/.cache/pip");
    let evil = h.run("evil", "1", t(start), t(finish));
    h.on(evil, b1);
    h.with_records(evil);
    h.writes(evil, pip);
    (h, pip)
}

fn reader(h: &mut History, key: &str, start: i64, finish: i64, mount: i64) -> i64 {
    let (pipeline, run) = key.split_once('/').unwrap();
    let r = h.run(pipeline, run, t(start), t(finish));
    h.on(r, 1);
    h.with_records(r);
    h.reads(r, mount);
    r
}

/// A build that read the mount before the poison was written is clean.
#[test]
fn reader_before_poison_write_is_clean() {
    let (mut h, pip) = poisoned_mount();
    reader(&mut h, "web/1", 0, 5, pip);
    let trace = traced(&mut h, &runs(&["evil/1"]));
    assert_eq!(names(&trace, Kind::Run), set(&["run:evil/1/build"]));
    assert_eq!(names(&trace, Kind::Mount), set(&[PIP]));
    assert_eq!(names(&trace, Kind::Builder), set(&["builder:b1"]));
}

/// A build that read the mount after the poison was written is tainted from its start.
#[test]
fn reader_after_poison_write_is_tainted() {
    let (mut h, pip) = poisoned_mount();
    reader(&mut h, "web/2", 30, 40, pip);
    let trace = traced(&mut h, &runs(&["evil/1"]));
    assert_eq!(
        names(&trace, Kind::Run),
        set(&["run:evil/1/build", "run:web/2/build"])
    );
    let web = entry(&trace, "run:web/2/build");
    assert_eq!(
        (web.tainted_at, web.via, web.from_name().as_deref()),
        (t(30), Via::MountRead, Some(PIP))
    );
    assert_eq!(web.at, t(40));
    let mount = entry(&trace, PIP);
    assert_eq!((mount.tainted_at, mount.via), (t(10), Via::MountWrite));
}

/// A time-suspect build that claims to have read the poisoned mount before the poison was
/// written is still tainted (from its claimed start), and its chain of evidence is shown; a
/// build with believed times that read before the write stays clean.
#[test]
fn a_suspect_reader_backdating_its_read_is_still_tainted() {
    let (mut h, pip) = poisoned_mount();
    let backdated = reader(&mut h, "web/1", 0, 5, pip);
    h.suspect(backdated);
    reader(&mut h, "web/2", 0, 5, pip);
    let trace = traced(&mut h, &runs(&["evil/1"]));
    assert_eq!(
        names(&trace, Kind::Run),
        set(&["run:evil/1/build", "run:web/1/build"])
    );
    let web = entry(&trace, "run:web/1/build");
    assert_eq!((web.tainted_at, web.via), (t(10), Via::MountRead));
    assert_eq!(trace.explain("web/1").unwrap().len(), 3);
}

/// A time-suspect build that claims to have started after a purge of the poisoned mount is
/// still tainted: its claimed start cannot put it after the purge. One with believed times
/// is kept out by the purge.
#[test]
fn a_suspect_reader_claiming_to_start_after_a_purge_is_still_tainted() {
    let (mut h, pip) = poisoned_mount();
    h.purge(pip, t(25));
    let after = reader(&mut h, "web/1", 30, 40, pip);
    h.suspect(after);
    reader(&mut h, "web/2", 30, 40, pip);
    let trace = traced(&mut h, &runs(&["evil/1"]));
    assert_eq!(
        names(&trace, Kind::Run),
        set(&["run:evil/1/build", "run:web/1/build"])
    );
    assert!(trace.explain("web/1").is_some());
    let kept_out: usize = trace.purges().iter().map(|p| p.kept_out).sum();
    assert_eq!(kept_out, 1, "only web/2 is kept out by the purge");
}

/// A tainted time-suspect build's write to a mount is taken as earlier than every read and
/// every purge: a build that read the mount before the claimed write, or after a purge that
/// followed it, is tainted from its own start. A believed write by another tainted run still
/// reaches only what came after it.
#[test]
fn a_suspect_writer_reaches_every_reader_of_what_it_wrote() {
    let (mut h, pip) = poisoned_mount();
    // evil/1 (believed, 10..20) is seeded; it poisons `npm`, which suspect/1 reads and
    // writes, claiming 50..60.
    let npm = h.mount(1, "/root/.npm");
    h.writes(1, npm);
    let suspect = h.run("suspect", "1", t(50), t(60));
    h.on(suspect, 1);
    h.with_records(suspect);
    h.reads(suspect, pip);
    h.writes(suspect, npm);
    h.suspect(suspect);
    h.purge(npm, t(70));
    reader(&mut h, "web/early", 0, 5, npm);
    reader(&mut h, "web/late", 80, 90, npm);
    reader(&mut h, "web/clean", 0, 5, pip);
    let trace = traced(&mut h, &runs(&["evil/1"]));
    assert_eq!(
        names(&trace, Kind::Run),
        set(&[
            "run:evil/1/build",
            "run:suspect/1/build",
            "run:web/early/build",
            "run:web/late/build"
        ])
    );
    assert_eq!(entry(&trace, "run:web/early/build").tainted_at, t(0));
    assert_eq!(entry(&trace, "run:web/late/build").tainted_at, t(80));
    for run in ["web/early", "web/late"] {
        assert!(trace.explain(run).is_some(), "no chain to {run}");
    }
}

/// Two time-suspect writers of one mount, each also reading it, reach each other whatever
/// they claim (each one's own reader query leaves it out).
#[test]
fn two_suspect_writers_of_one_mount_reach_each_other() {
    let (mut h, pip) = poisoned_mount();
    let npm = h.mount(1, "/root/.npm");
    let mut suspects = Vec::new();
    for (key, start) in [("1", 50), ("2", 0)] {
        let run = h.run("suspect", key, t(start), t(start + 5));
        h.on(run, 1);
        h.with_records(run);
        h.reads(run, npm);
        h.writes(run, npm);
        h.suspect(run);
        suspects.push(run);
    }
    // Only suspect/1 is reached from the seed, through the poisoned mount.
    h.reads(suspects[0], pip);
    let trace = traced(&mut h, &runs(&["evil/1"]));
    assert_eq!(
        names(&trace, Kind::Run),
        set(&[
            "run:evil/1/build",
            "run:suspect/1/build",
            "run:suspect/2/build"
        ])
    );
    assert_eq!(entry(&trace, "run:suspect/2/build").tainted_at, t(0));
}

/// Claim limits in minutes, for histories in minutes: the longest run, and the token's life
/// and the late grace (the same), with no skew.
pub(crate) fn limits(run: i64, grace: i64) -> TraceOptions {
    TraceOptions {
        claims: ClaimLimits {
            longest_run: t(run) - t(0),
            token_life: t(grace) - t(0),
            late_grace: t(grace) - t(0),
            skew: 0,
        },
        ..TraceOptions::default()
    }
}

/// Limits for the post-dating tests: a run of 30 minutes, 10 of grace.
fn claim_limits() -> TraceOptions {
    limits(30, 10)
}

/// [`post_dated_writer`]'s seed run and every reader of the mount it poisoned.
const EVERY_WEB_READER: [&str; 4] = [
    "run:evil/1/build",
    "run:web/0/build",
    "run:web/1/build",
    "run:web/2/build",
];

/// `evil/1` claims 100..110 but wrote the pip mount earlier: the collector received it at 111,
/// so it began no earlier than 71 (61 when it came late, from a spool). Readers
/// at 60..70 (`web/0`), 72..74 (`web/1`) and 80..90 (`web/2`) are around that floor.
fn post_dated_writer() -> (History, i64) {
    let (mut h, pip) = poisoned_mount_by(100, 110);
    let evil = 1;
    reader(&mut h, "web/0", 60, 70, pip);
    reader(&mut h, "web/1", 72, 74, pip);
    reader(&mut h, "web/2", 80, 90, pip);
    (h, evil)
}

/// A seed run the collector received cannot hide its write to a mount by claiming a later
/// start: its write counts from the earliest start its receipt allows, so the readers in
/// between are tainted; a reader before that stays clean. Without a receipt, nothing bounds
/// the claim and the trace takes it (the runs in between stay clean).
#[test]
fn a_seed_run_post_dating_its_start_reaches_the_readers_its_receipt_allows() {
    let (mut unreceived, evil) = post_dated_writer();
    let trace = super::trace(&mut unreceived.clone(), &runs(&["evil/1"]), claim_limits()).unwrap();
    assert_eq!(names(&trace, Kind::Run), set(&["run:evil/1/build"]));

    let mut h = unreceived.clone();
    h.received(evil, t(111), false);
    let trace = super::trace(&mut h, &runs(&["evil/1"]), claim_limits()).unwrap();
    assert_eq!(
        names(&trace, Kind::Run),
        set(&["run:evil/1/build", "run:web/1/build", "run:web/2/build"])
    );
    let mount = entry(&trace, PIP);
    assert_eq!((mount.tainted_at, mount.via), (t(71), Via::MountWrite));
    let web = entry(&trace, "run:web/1/build");
    assert_eq!((web.tainted_at, web.via), (t(72), Via::MountRead));
    // The seed run itself keeps its claimed start.
    assert_eq!(entry(&trace, "run:evil/1/build").tainted_at, t(100));

    // From a spool, past its token's expiry: another grace earlier.
    unreceived.received(evil, t(111), true);
    let trace = super::trace(&mut unreceived, &runs(&["evil/1"]), claim_limits()).unwrap();
    assert_eq!(names(&trace, Kind::Run), set(&EVERY_WEB_READER));
}

/// A run that recorded creating a record a tainted run also says it created is reached
/// through it only if the tainted run made it by its finish: one that finished before the
/// tainted run began used nothing it made, and its image stays out. A seed whose receipt
/// allows an earlier start made it as early as that; time ignored, every claim counts.
#[test]
fn a_record_an_earlier_run_made_is_not_tainted_back_in_time() {
    let mut h = History::new();
    let b1 = h.builder("b1");
    let r1 = h.record(b1, "r1", "regular", "RUN make");
    let web = h.run("web", "1", t(60), t(75));
    h.on(web, b1);
    h.with_records(web);
    h.creates(web, r1);
    let evil = h.run("evil", "1", t(100), t(110));
    h.on(evil, b1);
    h.with_records(evil);
    h.creates(evil, r1);
    let later = h.run("web", "2", t(120), t(130));
    h.on(later, b1);
    h.with_records(later);
    h.reuses(later, r1);
    let trace = super::trace(&mut h.clone(), &runs(&["evil/1"]), claim_limits()).unwrap();
    assert_eq!(
        names(&trace, Kind::Run),
        set(&["run:evil/1/build", "run:web/2/build"])
    );
    // A runner's clock may be behind another's by the skew allowed.
    let mut skewed = claim_limits();
    skewed.claims.skew = t(25) - t(0);
    let trace = super::trace(&mut h.clone(), &runs(&["evil/1"]), skewed).unwrap();
    assert_eq!(
        names(&trace, Kind::Run),
        set(&["run:evil/1/build", "run:web/1/build", "run:web/2/build"])
    );
    // The reference engine applies the same skew, and none takes web/1 in.
    for (skew, reached) in [(t(25) - t(0), true), (0, false)] {
        let mut options = claim_limits();
        options.claims.skew = skew;
        let trace = super::trace(&mut h.clone(), &runs(&["evil/1"]), options).unwrap();
        let resolved = OracleSeeds {
            runs: vec![evil],
            skew,
            ..OracleSeeds::default()
        };
        let closure = oracle::closure(&h, &resolved, false);
        assert_eq!(everything(&trace), closure);
        assert_eq!(closure.contains("run:web/1/build"), reached);
        assert_eq!(times(&trace), oracle::times(&h, &resolved, false));
    }
    let mut ignoring = claim_limits();
    ignoring.ignore_time = true;
    let trace = super::trace(&mut h.clone(), &runs(&["evil/1"]), ignoring).unwrap();
    assert_eq!(
        names(&trace, Kind::Run),
        set(&["run:evil/1/build", "run:web/1/build", "run:web/2/build"])
    );
    // Received with a token that allows a start (71) before web/1 finished.
    h.received(evil, t(111), false);
    let trace = super::trace(&mut h, &runs(&["evil/1"]), claim_limits()).unwrap();
    assert_eq!(
        names(&trace, Kind::Run),
        set(&["run:evil/1/build", "run:web/1/build", "run:web/2/build"])
    );
}

/// The collector keeps, with the receipt, how early the run may have begun by its own limits
/// (its token's issue time less the longest run it allows). A trace run with narrower limits
/// than the collector's still counts the run's writes from there: `web/0`, read at 60..70,
/// before the 71 the trace's own limits allow, is reached when the collector allowed a start
/// at 65. A bound later than the trace's limits moves nothing.
#[test]
fn a_seed_run_counts_from_the_bound_its_collector_kept_when_earlier() {
    let (unreceived, evil) = post_dated_writer();
    let traced = |began_after: i64| {
        let mut h = unreceived.clone();
        h.received_bounded(evil, t(111), false, Some(t(began_after)));
        super::trace(&mut h, &runs(&["evil/1"]), claim_limits()).unwrap()
    };
    let trace = traced(65);
    assert_eq!(names(&trace, Kind::Run), set(&EVERY_WEB_READER));
    assert_eq!(entry(&trace, PIP).tainted_at, t(65));
    let trace = traced(90);
    assert_eq!(
        names(&trace, Kind::Run),
        set(&["run:evil/1/build", "run:web/1/build", "run:web/2/build"])
    );
    assert_eq!(entry(&trace, PIP).tainted_at, t(71));
}

/// A pipeline compromised from a time on: its runs' writes count from no earlier than that.
#[test]
fn a_post_dated_seed_run_counts_from_no_earlier_than_its_seed_window() {
    let (mut h, evil) = post_dated_writer();
    h.received(evil, t(111), false);
    // `evil` compromised within the window, in minutes.
    let window = |since: i64, until: Option<i64>| Seeds {
        pipelines: vec![PipelineSeed {
            name: "evil".into(),
            window: Window {
                since: Some(t(since)),
                until: until.map(t),
            },
        }],
        ..Seeds::default()
    };
    let trace = super::trace(&mut h.clone(), &window(75, None), claim_limits()).unwrap();
    assert_eq!(
        names(&trace, Kind::Run),
        set(&["run:evil/1/build", "run:web/2/build"])
    );
    assert_eq!(entry(&trace, PIP).tainted_at, t(75));
    // A window that ends before the start it claims still holds it: it may have begun at 71.
    let until = |until: i64| window(50, Some(until));
    let trace = super::trace(&mut h.clone(), &until(95), claim_limits()).unwrap();
    assert_eq!(
        names(&trace, Kind::Run),
        set(&["run:evil/1/build", "run:web/1/build", "run:web/2/build"])
    );
    let trace = super::trace(&mut h, &until(70), claim_limits()).unwrap();
    assert!(names(&trace, Kind::Run).is_empty());
}

/// A run that dates its start back before a pipeline seed's window is in the window when the
/// collector received it after the window opened: it began before it was received, maybe
/// within the window. Its writes count from the start it claims, the earliest either allows.
/// Without a receipt, or received before the window, its claimed start keeps it out.
#[test]
fn a_pre_dated_seed_run_is_in_the_window_its_receipt_allows() {
    let (unreceived, evil) = post_dated_writer();
    let since = |since: i64| Seeds {
        pipelines: vec![PipelineSeed {
            name: "evil".into(),
            window: Window {
                since: Some(t(since)),
                until: None,
            },
        }],
        ..Seeds::default()
    };
    // `evil` claims 100..110; it reached the collector at 111.
    let trace = super::trace(&mut unreceived.clone(), &since(105), claim_limits()).unwrap();
    assert!(names(&trace, Kind::Run).is_empty());
    let mut h = unreceived.clone();
    h.received(evil, t(111), false);
    let trace = super::trace(&mut h.clone(), &since(105), claim_limits()).unwrap();
    assert_eq!(
        names(&trace, Kind::Run),
        set(&["run:evil/1/build"]),
        "the readers all finished before 105"
    );
    assert_eq!(entry(&trace, PIP).tainted_at, t(100));
    let trace = super::trace(&mut h, &since(112), claim_limits()).unwrap();
    assert!(names(&trace, Kind::Run).is_empty());
}

/// A seed run sent with a static token, which never expires, is bounded by nothing: its
/// writes count from any time (from its window's start, for a pipeline seed). And a seed run
/// went on writing until it was sent: a purge between its claimed finish and its receipt does
/// not clear what it wrote.
#[test]
fn a_static_token_bounds_nothing_and_a_seed_run_writes_until_it_was_sent() {
    let (mut h, evil) = post_dated_writer();
    h.received_with_static_token(evil, t(111));
    let trace = super::trace(&mut h.clone(), &runs(&["evil/1"]), claim_limits()).unwrap();
    assert_eq!(names(&trace, Kind::Run).len(), 4);
    // The text says so, on the seed's line only.
    let mut text = Vec::new();
    crate::report::trace::write_text(&trace, &mut text).unwrap();
    let text = String::from_utf8(text).unwrap();
    let noted: Vec<&str> = (text.lines())
        .filter(|l| l.contains("[writes counted from any time: its static token bounds nothing]"))
        .collect();
    assert!(noted.len() == 1 && noted[0].contains("evil/1"), "{text}");

    let (mut h, evil) = post_dated_writer();
    h.received(evil, t(131), false);
    h.purge(1, t(112));
    reader(&mut h, "web/3", 113, 115, 1);
    let trace = super::trace(&mut h, &runs(&["evil/1"]), claim_limits()).unwrap();
    assert!(
        names(&trace, Kind::Run).contains(&"run:web/3/build".to_owned()),
        "{:?}",
        names(&trace, Kind::Run)
    );
}

/// A post-dating seed run's push to a registry may have been under its tag from the earliest
/// start its receipt allows: a build that read the tag by name (its digest never learnt)
/// after that is tainted.
#[test]
fn a_post_dated_seed_push_taints_builds_that_read_its_tag_before_the_claimed_push() {
    let mut h = History::new();
    let evil = h.run("evil", "1", t(100), t(110));
    let pushed = h.manifest("reg.io/w", &digest('4'));
    h.tag(pushed, "cache");
    h.exports(evil, pushed);
    let by_tag = h.artifact(Backend::Registry, "reg.io/w", "", "");
    h.tag(by_tag, "cache");
    let web = h.run("web", "1", t(80), t(90));
    h.imports(web, by_tag);
    let early = h.run("web", "0", t(60), t(70));
    h.imports(early, by_tag);
    let trace = super::trace(&mut h.clone(), &runs(&["evil/1"]), claim_limits()).unwrap();
    assert_eq!(names(&trace, Kind::Run), set(&["run:evil/1/build"]));
    h.received(evil, t(111), false);
    let trace = super::trace(&mut h, &runs(&["evil/1"]), claim_limits()).unwrap();
    assert_eq!(
        names(&trace, Kind::Run),
        set(&["run:evil/1/build", "run:web/1/build"])
    );
}

/// The plan and verify take a tainted run's writes to span what its receipt allows, with time
/// or without (the time-blind trace is the widest): from the earliest start to when it was
/// sent; a time-suspect run's, from any time until it was sent (any time, unsent).
#[test]
fn a_tainted_run_writes_over_what_its_receipt_allows_with_or_without_time() {
    let (mut h, evil) = post_dated_writer();
    h.received(evil, t(111), false);
    for ignore_time in [false, true] {
        let options = TraceOptions {
            ignore_time,
            ..claim_limits()
        };
        let trace = super::trace(&mut h.clone(), &runs(&["evil/1"]), options).unwrap();
        let info = h.runs[0].clone();
        assert_eq!(trace.writes_from(&info), t(71), "ignore_time {ignore_time}");
        assert_eq!(
            trace.writes_until(&info),
            t(111),
            "ignore_time {ignore_time}"
        );
        let web = h.runs[2].clone();
        assert_eq!(
            (trace.writes_from(&web), trace.writes_until(&web)),
            (t(72), t(74))
        );
    }
    h.suspect(evil);
    let trace = super::trace(&mut h.clone(), &runs(&["evil/1"]), claim_limits()).unwrap();
    let info = h.runs[0].clone();
    assert_eq!(
        (trace.writes_from(&info), trace.writes_until(&info)),
        (Micros::MIN, t(111))
    );
    h.receipts.clear();
    let trace = super::trace(&mut h.clone(), &runs(&["evil/1"]), claim_limits()).unwrap();
    assert_eq!(
        (trace.writes_from(&info), trace.writes_until(&info)),
        (Micros::MIN, Micros::MAX)
    );
}

/// Only seed runs are bounded by their receipts: a tainted run reached from the seed is
/// taken at its word (the seed's attacker does not write its record), and without time the
/// receipt changes nothing.
#[test]
fn only_seed_runs_count_their_writes_from_their_receipts() {
    let (mut h, pip) = poisoned_mount();
    let npm = h.mount(1, "/root/.npm");
    let mid = reader(&mut h, "mid/1", 100, 110, pip);
    h.writes(mid, npm);
    h.received(mid, t(111), false);
    reader(&mut h, "web/1", 80, 90, npm);
    let trace = super::trace(&mut h.clone(), &runs(&["evil/1"]), claim_limits()).unwrap();
    assert_eq!(
        names(&trace, Kind::Run),
        set(&["run:evil/1/build", "run:mid/1/build"])
    );
    let blind = TraceOptions {
        ignore_time: true,
        ..claim_limits()
    };
    let trace = super::trace(&mut h, &runs(&["mid/1"]), blind).unwrap();
    assert_eq!(entry(&trace, "mount:b1:/root/.npm").tainted_at, t(100));
}

/// A time-suspect run without record evidence on a tainted builder is tainted whatever it
/// claims (here: to have finished before the tainted run started, which keeps a believed run
/// clean); once tainted, its own use of the builder is taken as earlier than every run
/// there, so a believed run without record evidence that finished before it is reached too.
#[test]
fn a_suspect_run_on_a_tainted_builder_is_tainted_whatever_it_claims() {
    let mut h = builder_with_tainted_record();
    let before = h.run("legacy", "0", t(0), t(4));
    h.on(before, 1);
    h.suspect(before);
    let trace = traced(&mut h, &runs(&["evil/1"]));
    assert_eq!(
        names(&trace, Kind::Run),
        set(&["run:evil/1/build", "run:legacy/0/build"])
    );
    assert_eq!(
        entry(&trace, "run:legacy/0/build").via,
        Via::BuilderCacheUnverified
    );
    let earlier = h.run("legacy", "1", t(0), t(2));
    h.on(earlier, 1);
    let trace = traced(&mut h, &runs(&["evil/1"]));
    let legacy = entry(&trace, "run:legacy/1/build");
    assert_eq!(
        (legacy.tainted_at, legacy.from_name().as_deref()),
        (t(0), Some("builder:b1"))
    );
    assert!(trace.explain("legacy/1").is_some());
}

/// A time-suspect run with record evidence that used a seeded builder's records before the
/// seed time is still tainted; a believed one is not.
#[test]
fn a_suspect_user_of_a_seeded_builder_is_tainted_whatever_it_claims() {
    let mut h = builder_with_tainted_record();
    for (key, suspect) in [("1", true), ("2", false)] {
        let run = h.run("web", key, t(0), t(5));
        h.on(run, 1);
        h.with_records(run);
        h.reuses(run, 2);
        if suspect {
            h.suspect(run);
        }
    }
    let seeds = Seeds {
        builders: vec![BuilderSeed {
            name: "b1".into(),
            since: Some(t(25)),
        }],
        ..Seeds::default()
    };
    let trace = traced(&mut h, &seeds);
    let tainted = names(&trace, Kind::Run);
    assert!(
        tainted.contains(&"run:web/1/build".to_owned()),
        "{tainted:?}"
    );
    assert!(
        !tainted.contains(&"run:web/2/build".to_owned()),
        "{tainted:?}"
    );
    assert!(trace.explain("web/1").is_some());
}

/// Order inside overlapping windows is unknown: an overlap counts as read-after-write.
#[test]
fn overlapping_windows_are_tainted() {
    let (mut h, pip) = poisoned_mount();
    reader(&mut h, "web/3", 5, 15, pip);
    let trace = traced(&mut h, &runs(&["evil/1"]));
    assert_eq!(
        names(&trace, Kind::Run),
        set(&["run:evil/1/build", "run:web/3/build"])
    );
    assert_eq!(entry(&trace, "run:web/3/build").tainted_at, t(10));
}

/// A purge cleans the mount for runs that start after it, until the next tainted write.
#[test]
fn purge_resets_a_mount_until_the_next_tainted_write() {
    let (mut h, pip) = poisoned_mount();
    h.purge(pip, t(25));
    reader(&mut h, "web/a", 30, 40, pip);
    reader(&mut h, "web/b", 22, 24, pip);
    reader(&mut h, "web/c", 25, 26, pip);
    let again = h.run("evil", "2", t(50), t(60));
    h.writes(again, pip);
    reader(&mut h, "web/d", 70, 80, pip);
    let seeds = Seeds {
        pipelines: vec![PipelineSeed {
            name: "evil".into(),
            window: Window::default(),
        }],
        ..Seeds::default()
    };
    let trace = traced(&mut h, &seeds);
    assert_eq!(
        names(&trace, Kind::Run),
        set(&[
            "run:evil/1/build",
            "run:evil/2/build",
            "run:web/b/build",
            "run:web/c/build",
            "run:web/d/build"
        ])
    );
    assert_eq!(entry(&trace, "run:web/d/build").tainted_at, t(70));
}

/// Every purge that kept a tainted write from a later run is listed with what it cleaned and
/// how many runs it kept out; purges that cleaned nothing tainted are not.
#[test]
fn the_trace_lists_the_purges_it_applied() {
    let (mut h, pip) = poisoned_mount();
    let other = h.mount(1, "/root/.npm");
    h.purge(other, t(22));
    h.purge(pip, t(25));
    h.prune(1, t(90));
    reader(&mut h, "web/a", 30, 40, pip);
    reader(&mut h, "web/b", 22, 24, pip);
    let trace = traced(&mut h, &runs(&["evil/1"]));
    assert_eq!(
        names(&trace, Kind::Run),
        set(&["run:evil/1/build", "run:web/b/build"])
    );
    let purges = trace.purges();
    assert_eq!(purges.len(), 1, "{purges:?}");
    assert_eq!(purges[0].purge.at, t(25));
    assert_eq!(purges[0].cleaned, vec![PIP.to_owned()]);
    assert_eq!((purges[0].runs, purges[0].kept_out), (1, 1));
    assert!(!trace.ignore_purges());
}

/// A prune of a builder's build records only (an incident's prune without `--full-prune`)
/// leaves its cache mounts: a build that read the poisoned mount after it is still tainted,
/// and the prune is not listed as cleaning the mount. A whole prune cleans the mount.
#[test]
fn a_prune_of_build_records_only_cleans_no_mount() {
    let (mut h, pip) = poisoned_mount();
    reader(&mut h, "web/a", 30, 40, pip);
    let mut records_only = h.clone();
    records_only.prune_records(1, t(25));
    let trace = traced(&mut records_only, &runs(&["evil/1"]));
    assert_eq!(
        names(&trace, Kind::Run),
        set(&["run:evil/1/build", "run:web/a/build"])
    );
    assert!(
        trace.purges().iter().all(|p| p.cleaned != [PIP.to_owned()]),
        "{:?}",
        trace.purges()
    );
    h.prune(1, t(25));
    let trace = traced(&mut h, &runs(&["evil/1"]));
    assert_eq!(names(&trace, Kind::Run), set(&["run:evil/1/build"]));
}

/// `--ignore-purges` traces as if no purge had been recorded: the runs a purge kept out are
/// back in the blast radius, and no purge is listed.
#[test]
fn ignoring_purges_shows_what_they_hid() {
    let (mut h, pip) = poisoned_mount();
    h.purge(pip, t(25));
    h.prune(1, t(26));
    reader(&mut h, "web/a", 30, 40, pip);
    let options = TraceOptions {
        ignore_purges: true,
        ..TraceOptions::default()
    };
    let trace = trace(&mut h, &runs(&["evil/1"]), options).unwrap();
    assert_eq!(
        names(&trace, Kind::Run),
        set(&["run:evil/1/build", "run:web/a/build"])
    );
    assert!(trace.purges().is_empty());
    assert!(trace.ignore_purges());
    // Both purges cleaned the mount before `web/a`; each is listed once.
    let aware = traced(&mut h, &runs(&["evil/1"]));
    assert_eq!(names(&aware, Kind::Run), set(&["run:evil/1/build"]));
    let listed: Vec<(Micros, usize)> = aware
        .purges()
        .iter()
        .map(|p| (p.purge.at, p.kept_out))
        .collect();
    assert_eq!(listed, vec![(t(25), 1)]);
}

/// A prune of a whole builder is listed once, naming every tainted mount and the builder it
/// cleaned.
#[test]
fn a_prune_met_at_several_nodes_is_listed_once() {
    let mut h = History::new();
    let b1 = h.builder("b1");
    let pip = h.mount(b1, "/root/.cache/pip");
    let npm = h.mount(b1, "/root/.npm");
    let evil = h.run("evil", "1", t(10), t(20));
    h.on(evil, b1);
    h.writes(evil, pip);
    h.writes(evil, npm);
    h.prune(b1, t(25));
    let web = h.run("web", "1", t(30), t(40));
    h.on(web, b1);
    h.reads(web, pip);
    h.reads(web, npm);
    let trace = traced(&mut h, &runs(&["evil/1"]));
    assert_eq!(names(&trace, Kind::Run), set(&["run:evil/1/build"]));
    let purges = trace.purges();
    assert_eq!(purges.len(), 1, "{purges:?}");
    assert_eq!(
        purges[0].cleaned,
        set(&[
            "builder:b1",
            "mount:b1:/root/.cache/pip",
            "mount:b1:/root/.npm"
        ])
    );
    assert_eq!((purges[0].runs, purges[0].kept_out), (1, 1));
}

/// A failed run's mount writes, exports and images all taint: BuildKit can push an image and
/// fail later (a cache export, a later step of the job), so a digest it recorded existed. (This
/// once held that a failed run pushed nothing.)
#[test]
fn failed_tainted_run_taints_its_mount_exports_and_images() {
    let (mut h, pip) = poisoned_mount();
    h.fail(1);
    let cache = h.manifest("reg.io/app", &digest('a'));
    let image = h.manifest("reg.io/app", &digest('b'));
    h.exports(1, cache);
    h.produces(1, image);
    reader(&mut h, "web/1", 30, 40, pip);
    let importer = h.run("api", "1", t(50), t(60));
    h.imports(importer, cache);
    let deployer = h.run("deploy", "1", t(50), t(60));
    h.uses_base(deployer, image);
    let trace = traced(&mut h.clone(), &runs(&["evil/1"]));
    assert_eq!(
        names(&trace, Kind::Run),
        set(&[
            "run:api/1/build",
            "run:deploy/1/build",
            "run:evil/1/build",
            "run:web/1/build",
        ])
    );
    assert_eq!(names(&trace, Kind::Mount), set(&[PIP]));
    assert_eq!(
        names(&trace, Kind::CacheRef),
        set(&[&format!("reg.io/app@{}", digest('a'))])
    );
    assert_eq!(
        names(&trace, Kind::Image),
        set(&[&format!("reg.io/app@{}", digest('b'))])
    );
    let image = entry(&trace, &format!("reg.io/app@{}", digest('b')));
    assert_eq!((image.tainted_at, image.via), (t(10), Via::Produced));
    let resolved = OracleSeeds {
        runs: vec![1],
        ..OracleSeeds::default()
    };
    assert_eq!(everything(&trace), oracle::closure(&h, &resolved, false));
    assert_eq!(times(&trace), oracle::times(&h, &resolved, false));
}

/// Taint crosses four hops: exported cache, its importer, the image it produced, and a build
/// on that image as a base; an importer that ran before the export is tainted too.
#[test]
fn four_hop_chain_export_import_image_base_image() {
    let mut h = History::new();
    let cache = h.manifest("reg.io/ci", &digest('c'));
    let app_image = h.manifest("reg.io/app", &digest('1'));
    let svc_image = h.manifest("reg.io/svc", &digest('2'));
    let other = h.manifest("reg.io/other", &digest('9'));
    let ci = h.run("ci", "1", t(30), t(40));
    h.exports(ci, cache);
    let early = h.run("app", "0", t(0), t(5));
    h.imports(early, cache);
    let app = h.run("app", "1", t(50), t(60));
    h.imports(app, cache);
    h.produces(app, app_image);
    let svc = h.run("svc", "1", t(70), t(80));
    h.uses_base(svc, app_image);
    h.produces(svc, svc_image);
    let fin = h.run("final", "1", t(90), t(95));
    h.uses_base(fin, svc_image);
    let unrelated = h.run("unrelated", "1", t(90), t(95));
    h.imports(unrelated, other);

    let trace = traced(&mut h, &runs(&["ci/1"]));
    assert_eq!(
        names(&trace, Kind::Run),
        set(&[
            "run:ci/1/build",
            "run:app/0/build",
            "run:app/1/build",
            "run:svc/1/build",
            "run:final/1/build"
        ])
    );
    let cache_name = format!("reg.io/ci@{}", digest('c'));
    let app_name = format!("reg.io/app@{}", digest('1'));
    let svc_name = format!("reg.io/svc@{}", digest('2'));
    assert_eq!(names(&trace, Kind::CacheRef), set(&[&cache_name]));
    assert_eq!(names(&trace, Kind::Image), set(&[&app_name, &svc_name]));
    assert_eq!(entry(&trace, "run:app/0/build").tainted_at, t(0));
    let fin = entry(&trace, "run:final/1/build");
    assert_eq!(
        (fin.via, fin.from_name().as_deref()),
        (Via::BaseImage, Some(svc_name.as_str()))
    );

    let hops = trace.explain("final/1/build").unwrap();
    let path: Vec<(Via, &str)> = hops.iter().map(|h| (h.via, h.to.as_str())).collect();
    assert_eq!(
        path,
        [
            (Via::Seed, "run:ci/1/build"),
            (Via::Exported, cache_name.as_str()),
            (Via::ImportedDigest, "run:app/1/build"),
            (Via::Produced, app_name.as_str()),
            (Via::BaseImage, "run:svc/1/build"),
            (Via::Produced, svc_name.as_str()),
            (Via::BaseImage, "run:final/1/build"),
        ]
    );
}

/// Builder `b1` where `evil/1` (10..20, with record evidence) created a regular record `r1`.
fn builder_with_tainted_record() -> History {
    let mut h = History::new();
    let b1 = h.builder("b1");
    let r1 = h.record(b1, "r1", "regular", "[2/3] RUN make");
    let r2 = h.record(b1, "r2", "regular", "[2/3] RUN npm ci");
    let evil = h.run("evil", "1", t(10), t(20));
    h.on(evil, b1);
    h.with_records(evil);
    h.creates(evil, r1);
    let other0 = h.run("other", "0", t(0), t(5));
    h.on(other0, b1);
    h.with_records(other0);
    h.creates(other0, r2);
    h
}

/// With record-level evidence, a run on the same builder that reused only clean records is
/// clean; one that reused the tainted record is tainted.
#[test]
fn record_evidence_keeps_an_unrelated_project_clean() {
    let mut h = builder_with_tainted_record();
    let web = h.run("web", "1", t(30), t(40));
    h.on(web, 1);
    h.with_records(web);
    h.reuses(web, 1);
    let other = h.run("other", "1", t(30), t(40));
    h.on(other, 1);
    h.with_records(other);
    h.reuses(other, 2);
    let trace = traced(&mut h, &runs(&["evil/1"]));
    assert_eq!(
        names(&trace, Kind::Run),
        set(&["run:evil/1/build", "run:web/1/build"])
    );
    assert_eq!(names(&trace, Kind::Record), set(&["record:b1:r1"]));
    let web = entry(&trace, "run:web/1/build");
    assert_eq!(
        (web.via, web.from_name().as_deref()),
        (Via::BuilderRecord, Some("record:b1:r1"))
    );
}

/// Without record-level evidence a run on the builder after a tainted run started is
/// tainted conservatively, and says so; one that finished before is clean.
#[test]
fn missing_record_evidence_taints_as_builder_cache_unverified() {
    let mut h = builder_with_tainted_record();
    let legacy = h.run("legacy", "1", t(30), t(40));
    h.on(legacy, 1);
    let overlapping = h.run("legacy", "2", t(5), t(15));
    h.on(overlapping, 1);
    // Finished before any tainted run on the builder started (`legacy/2` starts at 5).
    let before = h.run("legacy", "0", t(0), t(4));
    h.on(before, 1);
    let trace = traced(&mut h, &runs(&["evil/1"]));
    assert_eq!(
        names(&trace, Kind::Run),
        set(&[
            "run:evil/1/build",
            "run:legacy/1/build",
            "run:legacy/2/build"
        ])
    );
    let legacy = entry(&trace, "run:legacy/1/build");
    assert_eq!(
        (legacy.tainted_at, legacy.via, legacy.from_name().as_deref()),
        (t(30), Via::BuilderCacheUnverified, Some("builder:b1"))
    );
    assert_eq!(entry(&trace, "run:legacy/2/build").tainted_at, t(10));
}

/// A builder prune between the tainted run and a later one clears both the unverified
/// builder cache and the builder's mounts; a run tainted before the prune that was still
/// running on the builder across it is not cleared by it. (This once held `legacy/1` clean:
/// the straddling run's use of the builder was dated at its start, before the prune, though
/// it went on using the cache after it.)
#[test]
fn builder_prune_clears_unverified_runs_and_mounts() {
    let (mut h, pip) = poisoned_mount();
    h.prune(1, t(25));
    let after = h.run("legacy", "1", t(30), t(40));
    h.on(after, 1);
    let straddling = h.run("legacy", "2", t(22), t(28));
    h.on(straddling, 1);
    reader(&mut h, "web/1", 30, 40, pip);
    let trace = traced(&mut h.clone(), &runs(&["evil/1"]));
    assert_eq!(
        names(&trace, Kind::Run),
        set(&[
            "run:evil/1/build",
            "run:legacy/1/build",
            "run:legacy/2/build"
        ])
    );
    let legacy = entry(&trace, "run:legacy/1/build");
    assert_eq!(legacy.from_name().as_deref(), Some("builder:b1"));
    assert_eq!(trace.explain("legacy/1").unwrap().len(), 5);
    // Without the straddling run, the prune keeps `legacy/1` out.
    let mut h = h;
    h.runs[1].builder = None;
    let trace = traced(&mut h, &runs(&["evil/1"]));
    assert_eq!(
        names(&trace, Kind::Run),
        set(&["run:evil/1/build", "run:legacy/2/build"])
    );
}

/// A prune of some of a builder's records (an incident's prune without `--full-prune`) cleans
/// the builder only of the writers whose records it removed: one whose created records it
/// named, and one without record evidence that began after it pruned every record used since
/// (by more than the builder's clock may be behind).
/// A writer found later, whose record it left, still taints a run without record evidence
/// that ran on the builder after it, as does a seed of the builder from before `since`; a
/// whole prune cleans them all.
#[test]
fn a_prune_of_some_records_cleans_only_the_writers_whose_records_it_removed() {
    // The writer: its run key, times, whether it has record evidence and which record it
    // created; the builder pruned at 20 of `named` and every record used since 10 by its
    // clock, which may be a minute behind the runners'.
    let fleet = |key: &str, (start, finish): (i64, i64), created: Option<&str>, whole: bool| {
        let mut h = History::new();
        let b1 = h.builder("b1");
        let named = h.record(b1, "named", "regular", "[2/3] RUN make");
        let left = h.record(b1, "left", "regular", "[2/3] RUN npm ci");
        let writer = h.run(key, "1", t(start), t(finish));
        h.on(writer, b1);
        if let Some(created) = created {
            h.with_records(writer);
            h.creates(writer, if created == "named" { named } else { left });
        }
        h.prune_some_records(b1, t(20), &[named], (Some(t(10)), 60_000_000));
        if whole {
            h.prune(b1, t(21));
        }
        let legacy = h.run("legacy", "1", t(30), t(40));
        h.on(legacy, b1);
        (h, writer)
    };
    let check = |(mut h, writer): (History, super::source::RunId), tainted: bool| {
        let seed = format!("{}/1", h.runs[super::mem::index(writer)].pipeline);
        let trace = traced(&mut h, &runs(&[&seed]));
        let mut expected = vec![format!("run:{seed}/build")];
        if tainted {
            expected.push("run:legacy/1/build".to_owned());
        }
        expected.sort();
        assert_eq!(names(&trace, Kind::Run), expected, "{seed}");
        let resolved = OracleSeeds {
            runs: vec![writer],
            ..OracleSeeds::default()
        };
        assert_eq!(
            everything(&trace),
            oracle::closure(&h, &resolved, false),
            "{seed}"
        );
        assert_eq!(times(&trace), oracle::times(&h, &resolved, false), "{seed}");
        if tainted {
            assert_eq!(trace.explain("legacy/1").unwrap().len(), 3, "{seed}");
        } else {
            let kept: Vec<usize> = trace.purges().iter().map(|p| p.kept_out).collect();
            assert_eq!(kept, [1], "{seed}");
        }
    };
    // Named its record; began after `since`: cleaned.
    check(fleet("evil", (0, 10), Some("named"), false), false);
    check(fleet("late", (12, 14), None, false), false);
    // Begun after `since`, but not by more than the builder's clock may be behind.
    check(fleet("skewed", (10, 10), None, false), true);
    // Its record left; without record evidence and begun before `since`: not cleaned.
    check(fleet("sly", (2, 8), Some("left"), false), true);
    check(fleet("early", (1, 9), None, false), true);
    // A whole prune cleans them all.
    check(fleet("sly", (2, 8), Some("left"), true), false);
    check(fleet("early", (1, 9), None, true), false);
    // A seed of the builder is no writer whose records the prune named.
    let (mut h, _) = fleet("evil", (0, 10), Some("named"), false);
    let seeds = Seeds {
        builders: vec![BuilderSeed {
            name: "b1".into(),
            since: Some(t(5)),
        }],
        ..Seeds::default()
    };
    let trace = traced(&mut h, &seeds);
    assert!(names(&trace, Kind::Run).contains(&"run:legacy/1/build".to_owned()));
    // One from after `since` is: the prune removed every record used since.
    let seeds = Seeds {
        builders: vec![BuilderSeed {
            name: "b1".into(),
            since: Some(t(12)),
        }],
        ..Seeds::default()
    };
    let trace = traced(&mut h, &seeds);
    assert!(!names(&trace, Kind::Run).contains(&"run:legacy/1/build".to_owned()));
}

/// A purge of a mount while a tainted writer of it ran does not clear its write: the writer
/// went on writing after it. A reader after the purge is tainted; a reader after a purge that
/// followed the writer's finish is not. The same holds for a prune of the builder the tainted
/// run was on, for runs without record evidence.
#[test]
fn a_purge_during_a_tainted_write_does_not_clear_it() {
    let mut h = History::new();
    let b1 = h.builder("b1");
    let pip = h.mount(b1, "/root/.cache/pip");
    let evil = h.run("evil", "1", t(0), t(60));
    h.on(evil, b1);
    h.with_records(evil);
    h.writes(evil, pip);
    h.purge(pip, t(30));
    h.purge(pip, t(90));
    h.prune(b1, t(30));
    reader(&mut h, "during/1", 10, 20, pip);
    reader(&mut h, "after/1", 40, 50, pip);
    reader(&mut h, "later/1", 100, 110, pip);
    let legacy = h.run("legacy", "1", t(40), t(50));
    h.on(legacy, b1);
    let resolved = OracleSeeds {
        runs: vec![evil],
        ..OracleSeeds::default()
    };
    let trace = traced(&mut h.clone(), &runs(&["evil/1"]));
    assert_eq!(
        names(&trace, Kind::Run),
        set(&[
            "run:after/1/build",
            "run:during/1/build",
            "run:evil/1/build",
            "run:legacy/1/build",
        ])
    );
    let after = entry(&trace, "run:after/1/build");
    assert_eq!((after.tainted_at, after.via), (t(40), Via::MountRead));
    assert_eq!(trace.explain("after/1").unwrap().len(), 3);
    assert_eq!(trace.explain("legacy/1").unwrap().len(), 3);
    assert_eq!(everything(&trace), oracle::closure(&h, &resolved, false));
    assert_eq!(times(&trace), oracle::times(&h, &resolved, false));
    // Only the purge at 90 kept a run out: `later/1`.
    let kept: Vec<(Micros, usize)> = trace
        .purges()
        .iter()
        .filter(|p| p.kept_out > 0)
        .map(|p| (p.purge.at, p.kept_out))
        .collect();
    assert_eq!(kept, [(t(90), 1)]);
}

/// Mutual import cycles reach a fixpoint.
#[test]
fn a_cycle_terminates() {
    let mut h = History::new();
    let b1 = h.builder("b1");
    let m = h.mount(b1, "cache");
    let x = h.manifest("reg.io/a", &digest('a'));
    let y = h.manifest("reg.io/b", &digest('b'));
    let a1 = h.run("a", "1", t(0), t(10));
    h.exports(a1, x);
    let b1run = h.run("b", "1", t(20), t(30));
    h.imports(b1run, x);
    h.exports(b1run, y);
    h.reads(b1run, m);
    let a2 = h.run("a", "2", t(40), t(50));
    h.imports(a2, y);
    h.exports(a2, x);
    h.writes(a2, m);
    let b2 = h.run("b", "2", t(60), t(70));
    h.reads(b2, m);
    h.exports(b2, y);
    let trace = traced(&mut h, &runs(&["a/1"]));
    assert_eq!(
        names(&trace, Kind::Run),
        set(&[
            "run:a/1/build",
            "run:a/2/build",
            "run:b/1/build",
            "run:b/2/build"
        ])
    );
    let xs = format!("reg.io/a@{}", digest('a'));
    let ys = format!("reg.io/b@{}", digest('b'));
    assert_eq!(names(&trace, Kind::CacheRef), set(&[&xs, &ys]));
    assert_eq!(entry(&trace, &xs).tainted_at, t(0));
}

/// `--since` and `--until` both include their bound.
#[test]
fn window_bounds_are_inclusive() {
    let mut h = History::new();
    for (i, start) in [10, 20, 30, 40].into_iter().enumerate() {
        h.run("p", &(i + 1).to_string(), t(start), t(start + 5));
    }
    let seeds = Seeds::from_spec(&SeedSpec {
        pipelines: vec!["p".into()],
        since: Some("2026-03-01T00:20:00Z".into()),
        until: Some("2026-03-01T00:30:00Z".into()),
        ..SeedSpec::default()
    })
    .unwrap();
    let trace = traced(&mut h, &seeds);
    assert_eq!(
        names(&trace, Kind::Run),
        set(&["run:p/2/build", "run:p/3/build"])
    );
    let seeds: Vec<String> = trace.seeds().iter().map(|n| n.name().to_string()).collect();
    assert_eq!(seeds, ["run:p/2/build", "run:p/3/build"]);
}

/// A time-suspect run is in a pipeline seed's window whatever start it claims: one claiming
/// to have run before `--since` or after `--until` is still seeded.
#[test]
fn a_suspect_run_is_in_every_pipeline_window() {
    let mut h = History::new();
    for (i, start) in [10, 20, 30, 40].into_iter().enumerate() {
        h.run("p", &(i + 1).to_string(), t(start), t(start + 5));
    }
    h.suspect(1);
    h.suspect(4);
    let seeds = Seeds::from_spec(&SeedSpec {
        pipelines: vec!["p".into()],
        since: Some("2026-03-01T00:20:00Z".into()),
        until: Some("2026-03-01T00:30:00Z".into()),
        ..SeedSpec::default()
    })
    .unwrap();
    let trace = traced(&mut h, &seeds);
    assert_eq!(
        names(&trace, Kind::Run),
        set(&[
            "run:p/1/build",
            "run:p/2/build",
            "run:p/3/build",
            "run:p/4/build"
        ])
    );
}

/// Pipeline names may contain `/`: output encodes it (`%2F`), an encoded name seeds its own
/// run, an unencoded one is tried in every reading, and a pipeline seed takes the name whole.
#[test]
fn run_and_pipeline_names_may_contain_slashes() {
    let mut h = History::new();
    h.run("acme/web", "7", t(0), t(5));
    h.run("acme/web", "8", t(10), t(15));
    h.run("acme", "web", t(20), t(25));
    let trace = traced(&mut h, &runs(&["acme/web/7/build"]));
    assert_eq!(names(&trace, Kind::Run), set(&["run:acme%2Fweb/7/build"]));
    let trace = traced(&mut h, &runs(&["acme%2Fweb/7/build"]));
    assert_eq!(names(&trace, Kind::Run), set(&["run:acme%2Fweb/7/build"]));
    let trace = traced(&mut h, &runs(&["acme/web/build"]));
    assert_eq!(names(&trace, Kind::Run), set(&["run:acme/web/build"]));
    let seeds = Seeds::from_spec(&SeedSpec {
        pipelines: vec!["acme/web".into()],
        ..SeedSpec::default()
    })
    .unwrap();
    let trace = traced(&mut h, &seeds);
    assert_eq!(
        names(&trace, Kind::Run),
        set(&["run:acme%2Fweb/7/build", "run:acme%2Fweb/8/build"])
    );
}

/// An attacker's unrecorded push: the store knows the digest only from the runs that
/// imported it, in any repository holding those bytes, and those runs are tainted.
#[test]
fn seed_digest_without_a_recorded_push_taints_its_importers() {
    let mut h = History::new();
    let pushed = h.manifest("reg.io/app", &digest('e'));
    let mirrored = h.manifest("mirror.io/app", &digest('e'));
    let web = h.run("web", "1", t(10), t(20));
    h.imports(web, pushed);
    let api = h.run("api", "1", t(30), t(40));
    h.imports(api, mirrored);
    h.run("clean", "1", t(10), t(20));
    let seeds = Seeds {
        cache_refs: vec![CacheRefSeed::Digest(DigestSeed {
            locator: Some("reg.io/app".into()),
            digest: Digest::parse(&digest('e'), "d").unwrap(),
        })],
        ..Seeds::default()
    };
    let trace = traced(&mut h, &seeds);
    assert_eq!(
        names(&trace, Kind::Run),
        set(&["run:api/1/build", "run:web/1/build"])
    );
    let pushed = format!("reg.io/app@{}", digest('e'));
    let mirrored = format!("mirror.io/app@{}", digest('e'));
    assert_eq!(names(&trace, Kind::CacheRef), set(&[&pushed, &mirrored]));
    let seeds: Vec<String> = trace.seeds().iter().map(|n| n.name().to_string()).collect();
    assert_eq!(seeds, [pushed.as_str()]);
    assert_eq!(entry(&trace, &mirrored).via, Via::SameDigest);
    assert_eq!(entry(&trace, &pushed).tainted_at, t(20));
}

/// `--explain` names resolve by output name, bare run key or digest, and say when they are
/// ambiguous or outside the blast radius.
#[test]
fn explain_names_resolve_or_say_why() {
    let mut h = History::new();
    let pushed = h.manifest("reg.io/app", &digest('e'));
    let mirrored = h.manifest("mirror.io/app", &digest('e'));
    let ci = h.run("ci", "1", t(0), t(5));
    h.exports(ci, pushed);
    let web = h.run("web", "1", t(10), t(20));
    h.imports(web, mirrored);
    h.run("clean", "1", t(10), t(20));
    let trace = traced(&mut h, &runs(&["ci/1"]));
    let name =
        |found: Result<NodeIndex, ResolveError>| found.map(|n| trace.graph()[n].name().to_string());
    assert_eq!(
        name(trace.resolve("web/1")),
        Ok("run:web/1/build".to_owned())
    );
    assert_eq!(
        name(trace.resolve(&format!("mirror.io/app@{}", digest('e')))),
        Ok(format!("mirror.io/app@{}", digest('e')))
    );
    assert_eq!(
        name(trace.resolve(&digest('e'))),
        Err(ResolveError::Ambiguous {
            name: digest('e'),
            candidates: vec![
                format!("mirror.io/app@{}", digest('e')),
                format!("reg.io/app@{}", digest('e')),
            ],
        })
    );
    assert_eq!(
        name(trace.resolve("clean/1/build")),
        Err(ResolveError::NotFound("clean/1/build".to_owned()))
    );
}

/// A seed window that selects no run, or a digest the store never saw, is an empty blast
/// radius rather than an error.
#[test]
fn a_seed_that_matches_nothing_gives_an_empty_trace() {
    let mut h = History::new();
    h.run("p", "1", t(10), t(20));
    let seeds = Seeds {
        pipelines: vec![PipelineSeed {
            name: "p".into(),
            window: Window {
                since: Some(t(100)),
                until: None,
            },
        }],
        images: vec![DigestSeed {
            locator: None,
            digest: Digest::parse(&digest('f'), "d").unwrap(),
        }],
        ..Seeds::default()
    };
    let trace = traced(&mut h, &seeds);
    assert!(trace.is_empty());
    let seeds: Vec<String> = trace.seeds().iter().map(|n| n.name().to_string()).collect();
    assert_eq!(seeds, [digest('f')]);
}

/// Output names a mount in a namespace `NAMESPACE/ID`, as it names a mount without one whose
/// id is that whole text: `--mount` given such a name seeds both, and the namespaced one alone
/// when it is the only one.
#[test]
fn a_mount_seed_named_as_output_names_it_seeds_the_namespaced_mount() {
    let mut h = History::new();
    let b = h.builder("ci-1");
    let namespaced = h.mount_in(b, "evil", "gomod");
    let writer = h.run("w", "1", t(0), t(10));
    h.writes(writer, namespaced);
    let seeded = |h: &mut History| {
        let seeds = Seeds::from_spec(&SeedSpec {
            mounts: vec!["ci-1:evil/gomod".into()],
            ..SeedSpec::default()
        })
        .unwrap();
        let trace = traced(h, &seeds);
        trace.seeds().len()
    };
    assert_eq!(seeded(&mut h), 1);
    let plain = h.mount(b, "evil/gomod");
    let other = h.run("x", "1", t(0), t(10));
    h.writes(other, plain);
    assert_eq!(seeded(&mut h), 2);
}

/// A `--mount` value is read at each `:`: a builder named after its endpoint
/// (`docker@vm:/var/run/docker.sock`) can be seeded, and a look-alike another writer recorded
/// (builder `docker@vm`, mount `/var/run/docker.sock:/root/.cache/pip`) is seeded beside the
/// mount it imitates, never in its place.
#[test]
fn a_mount_seed_is_read_at_each_colon() {
    let mut h = History::new();
    let real = h.builder("docker@vm:/var/run/docker.sock");
    let pip = h.mount(real, "/root/.cache/pip");
    let writer = h.run("w", "1", t(0), t(10));
    h.writes(writer, pip);
    let seed = |h: &mut History| {
        let seeds = Seeds::from_spec(&SeedSpec {
            mounts: vec!["docker@vm:/var/run/docker.sock:/root/.cache/pip".into()],
            ..SeedSpec::default()
        })
        .unwrap();
        let trace = traced(h, &seeds);
        let mut seeded: Vec<String> = trace.seeds().iter().map(|n| n.name().to_string()).collect();
        seeded.sort();
        seeded
    };
    assert_eq!(
        seed(&mut h),
        ["mount:docker@vm:/var/run/docker.sock:/root/.cache/pip"]
    );

    let fake = h.builder("docker@vm");
    let look_alike = h.mount(fake, "/var/run/docker.sock:/root/.cache/pip");
    let other = h.run("x", "1", t(0), t(10));
    h.writes(other, look_alike);
    let seeded = seed(&mut h);
    assert_eq!(seeded.len(), 2, "{seeded:?}");
    let trace = traced(
        &mut h,
        &Seeds::from_spec(&SeedSpec {
            mounts: vec!["docker@vm:/var/run/docker.sock:/root/.cache/pip".into()],
            ..SeedSpec::default()
        })
        .unwrap(),
    );
    let mut mounts: Vec<String> = trace
        .seeds()
        .iter()
        .filter_map(|n| match &n.entity {
            crate::graph::Entity::Mount(info) => {
                Some(format!("{} {}", info.builder_name, info.mount_id))
            }
            _ => None,
        })
        .collect();
    mounts.sort();
    assert_eq!(
        mounts,
        [
            "docker@vm /var/run/docker.sock:/root/.cache/pip",
            "docker@vm:/var/run/docker.sock /root/.cache/pip",
        ]
    );
}

/// Naming a pipeline, run, builder, mount or tag the store does not hold is a clear error.
#[test]
fn unknown_seeds_are_errors_naming_the_value() {
    let (mut h, _) = poisoned_mount();
    let cases = [
        (
            Seeds {
                pipelines: vec![PipelineSeed {
                    name: "nope".into(),
                    window: Window::default(),
                }],
                ..Seeds::default()
            },
            "no pipeline `nope` in the store",
        ),
        (runs(&["evil/9"]), "no run `evil/9` in the store"),
        (
            Seeds {
                builders: vec![BuilderSeed {
                    name: "b9".into(),
                    since: None,
                }],
                ..Seeds::default()
            },
            "no builder `b9` in the store",
        ),
        (
            Seeds {
                mounts: vec![MountSeed {
                    builder: "b1".into(),
                    id: "npm".into(),
                    since: None,
                }],
                ..Seeds::default()
            },
            "no mount `npm` on builder `b1` in the store",
        ),
        (
            Seeds {
                cache_refs: vec![CacheRefSeed::Tag {
                    locator: "reg.io/app".into(),
                    tag: "cache".into(),
                    window: Window::default(),
                }],
                ..Seeds::default()
            },
            "no cache ref `reg.io/app:cache` in the store",
        ),
    ];
    for (seeds, message) in cases {
        match trace(&mut h, &seeds, TraceOptions::default()) {
            Err(TraceError::UnknownSeed(got)) => assert_eq!(got.to_string(), message),
            other => panic!("expected an unknown seed, got {other:?}"),
        }
    }
}

/// A pip mount that `seed/1` (100..110) writes, read by `between` (40..50), `before` (5..8)
/// and `after` (120..130). `early/1` (10..) writes it too, and is tainted only through `route`.
fn late_and_early_writes(route: impl FnOnce(&mut History, i64, i64)) -> History {
    let mut h = History::new();
    let b1 = h.builder("b1");
    let pip = h.mount(b1, "/root/.cache/pip");
    let seed = h.run("seed", "1", t(100), t(110));
    let early = h.run("early", "1", t(10), t(105));
    h.writes(seed, pip);
    route(&mut h, seed, early);
    h.writes(early, pip);
    for (key, start, finish) in [("between", 40, 50), ("before", 5, 8), ("after", 120, 130)] {
        let r = h.run(key, "1", t(start), t(finish));
        h.reads(r, pip);
    }
    h
}

/// `early/1` is tainted by reading a second mount after `seed/1` wrote it: found only by a
/// mount query, after the pip mount was already queried from the late write.
fn early_found_through_a_mount(h: &mut History, seed: i64, early: i64) {
    let npm = h.mount(1, "/root/.npm");
    h.writes(seed, npm);
    h.reads(early, npm);
}

/// `early/1` is tainted by importing a cache `seed/1` exported: found before any mount query.
fn early_found_through_a_digest(h: &mut History, seed: i64, early: i64) {
    let cache = h.manifest("reg.io/app", &digest('a'));
    h.exports(seed, cache);
    h.imports(early, cache);
}

const EARLY_TAINTED: [&str; 4] = [
    "run:seed/1/build",
    "run:early/1/build",
    "run:between/1/build",
    "run:after/1/build",
];

/// Label-correcting: the first tainted write found is late; an earlier one found later
/// re-queries the mount, so a reader between the two is tainted.
#[test]
fn an_earlier_write_found_later_re_expands_the_mount() {
    let mut h = late_and_early_writes(early_found_through_a_mount);
    let trace = traced(&mut h, &runs(&["seed/1"]));
    assert_eq!(names(&trace, Kind::Run), set(&EARLY_TAINTED));
    let mount = entry(&trace, PIP);
    assert_eq!(
        (mount.tainted_at, mount.from_name().as_deref()),
        (t(10), Some("run:early/1/build"))
    );
    assert_eq!(entry(&trace, "run:between/1/build").tainted_at, t(40));
    // pip from the late write, npm, then pip again from the early write.
    assert_eq!(h.mount_reader_queries, 3);
}

/// A mount query made stale by an earlier write found first is skipped, not run.
#[test]
fn a_stale_mount_query_is_skipped() {
    let mut h = late_and_early_writes(early_found_through_a_digest);
    let trace = traced(&mut h, &runs(&["seed/1"]));
    assert_eq!(names(&trace, Kind::Run), set(&EARLY_TAINTED));
    assert_eq!(h.mount_reader_queries, 1);
}

/// An explanation through a mount uses a write the reader could have seen, even when a
/// shorter chain through a later write exists.
#[test]
fn explain_chains_hold_in_time() {
    let mut h = late_and_early_writes(early_found_through_a_mount);
    let trace = traced(&mut h, &runs(&["seed/1"]));
    let hops = trace.explain("run:between/1/build").unwrap();
    let path: Vec<(Via, &str)> = hops.iter().map(|h| (h.via, h.to.as_str())).collect();
    assert_eq!(
        path,
        [
            (Via::Seed, "run:seed/1/build"),
            (Via::MountWrite, "mount:b1:/root/.npm"),
            (Via::MountRead, "run:early/1/build"),
            (Via::MountWrite, PIP),
            (Via::MountRead, "run:between/1/build"),
        ]
    );
    let after = trace.explain("after/1").unwrap();
    assert_eq!(after.len(), 3, "{after:?}");
    assert_eq!(trace.explain("seed/1/build").unwrap().len(), 1);
    assert!(trace.explain("run:before/1/build").is_none());
}

/// When a digest and the builder cache taint a run at the same time, `via` names the digest,
/// even when the builder cache arrived first.
#[test]
fn via_prefers_the_digest_over_the_builder_cache_on_ties() {
    let mut h = History::new();
    let b1 = h.builder("b1");
    let c = h.manifest("reg.io/c", &digest('c'));
    let d = h.manifest("reg.io/d", &digest('d'));
    let evil = h.run("evil", "1", t(10), t(20));
    h.on(evil, b1);
    h.exports(evil, c);
    let mid = h.run("mid", "1", t(12), t(18));
    h.imports(mid, c);
    h.exports(mid, d);
    let web = h.run("web", "1", t(30), t(40));
    h.on(web, b1);
    h.imports(web, d);
    let trace = traced(&mut h, &runs(&["evil/1"]));
    let web = entry(&trace, "run:web/1/build");
    let d_name = format!("reg.io/d@{}", digest('d'));
    assert_eq!(
        (web.tainted_at, web.via, web.from_name().as_deref()),
        (t(30), Via::ImportedDigest, Some(d_name.as_str()))
    );
}

/// A seeded builder taints runs that used its cache from the seed time on: through records
/// where there is evidence, conservatively where there is none.
#[test]
fn builder_seed_taints_its_cache_users_from_the_seed_time() {
    let mut h = builder_with_tainted_record();
    let reuser = h.run("web", "1", t(30), t(40));
    h.on(reuser, 1);
    h.with_records(reuser);
    h.reuses(reuser, 2);
    let legacy = h.run("legacy", "1", t(30), t(40));
    h.on(legacy, 1);
    let seeds = Seeds {
        builders: vec![BuilderSeed {
            name: "b1".into(),
            since: Some(t(25)),
        }],
        ..Seeds::default()
    };
    let trace = traced(&mut h, &seeds);
    assert_eq!(
        names(&trace, Kind::Run),
        set(&["run:legacy/1/build", "run:web/1/build"])
    );
    assert_eq!(entry(&trace, "run:web/1/build").via, Via::BuilderRecord);
    assert_eq!(entry(&trace, "builder:b1").tainted_at, t(25));
    assert_eq!(trace.explain("web/1").unwrap().len(), 2);
}

/// A seeded builder taints a run with record evidence that was on it across the seed time
/// (started before, finished after), whether it reused a record or only created one: a record
/// it created is dated at its start, before the seed time. A run that finished before the seed
/// time stays clean.
#[test]
fn builder_seed_taints_a_run_spanning_the_seed_time() {
    let mut h = History::new();
    let b1 = h.builder("b1");
    let made = h.record(b1, "r1", "regular", "[1/2] RUN make");
    let old = h.record(b1, "r0", "regular", "[1/2] RUN x");
    let creator = h.run("creator", "1", t(0), t(60));
    h.on(creator, b1);
    h.with_records(creator);
    h.creates(creator, made);
    let reuser = h.run("reuser", "1", t(0), t(60));
    h.on(reuser, b1);
    h.with_records(reuser);
    h.reuses(reuser, old);
    let done = h.run("done", "1", t(0), t(4));
    h.on(done, b1);
    h.with_records(done);
    h.creates(done, old);
    let seeds = Seeds {
        builders: vec![BuilderSeed {
            name: "b1".into(),
            since: Some(t(5)),
        }],
        ..Seeds::default()
    };
    let resolved = OracleSeeds {
        builder: Some((b1, t(5))),
        ..OracleSeeds::default()
    };
    let trace = traced(&mut h.clone(), &seeds);
    let expected = set(&["run:creator/1/build", "run:reuser/1/build"]);
    assert_eq!(names(&trace, Kind::Run), expected);
    let creator = entry(&trace, "run:creator/1/build");
    assert_eq!(
        (creator.tainted_at, creator.via),
        (t(5), Via::BuilderRecord)
    );
    assert_eq!(trace.explain("creator/1").unwrap().len(), 2);
    assert_eq!(everything(&trace), oracle::closure(&h, &resolved, false));
    assert_eq!(times(&trace), oracle::times(&h, &resolved, false));
}

/// Cache-mount, context and base-image records (pulled; local on 20.10 and on Docker 26's
/// containerd image store, which leaves them undescribed) do not carry taint between runs.
#[test]
fn only_regular_records_carry_taint() {
    let mut h = History::new();
    let b1 = h.builder("b1");
    let evil = h.run("evil", "1", t(10), t(20));
    h.on(evil, b1);
    h.with_records(evil);
    for (i, (kind, description)) in [
        ("exec.cachemount", "cached mount /root/.cache/pip"),
        ("source.local", "local source for context"),
        ("regular", "pulled from docker.io/library/alpine:3"),
        ("regular", "from local "),
        ("regular", ""),
    ]
    .into_iter()
    .enumerate()
    {
        let record = h.record(b1, &format!("r{i}"), kind, description);
        h.creates(evil, record);
        let reuser = h.run("web", &i.to_string(), t(30), t(40));
        h.on(reuser, b1);
        h.with_records(reuser);
        h.reuses(reuser, record);
    }
    let trace = traced(&mut h, &runs(&["evil/1"]));
    assert_eq!(names(&trace, Kind::Run), set(&["run:evil/1/build"]));
    assert!(names(&trace, Kind::Record).is_empty());
}

/// A pulled layer's words for a record, given only by a run whose record evidence is not
/// believed, say nothing of what it is: the record carries taint like one of unknown type.
#[test]
fn a_record_only_a_doubted_run_described_carries_taint() {
    let mut h = History::new();
    let b1 = h.builder("b1");
    let record = h.record(
        b1,
        "r1",
        "regular",
        "pulled from docker.io/library/alpine:3",
    );
    h.doubt_description(record);
    let evil = h.run("evil", "1", t(0), t(60));
    h.on(evil, b1);
    h.with_records(evil);
    h.creates(evil, record);
    let reuser = h.run("v", "2", t(120), t(180));
    h.on(reuser, b1);
    h.with_records(reuser);
    h.reuses(reuser, record);
    let resolved = OracleSeeds {
        runs: vec![evil],
        ..OracleSeeds::default()
    };
    let trace = traced(&mut h.clone(), &runs(&["evil/1"]));
    assert_eq!(
        names(&trace, Kind::Run),
        set(&["run:evil/1/build", "run:v/2/build"])
    );
    assert_eq!(everything(&trace), oracle::closure(&h, &resolved, false));
}

/// A record of unknown type (first recorded by a run that reused it and named it by id alone)
/// carries taint from the run that created it to the runs that reuse it.
#[test]
fn a_record_of_unknown_type_carries_taint() {
    let mut h = History::new();
    let b1 = h.builder("b1");
    let record = h.record(b1, "r1", "", "");
    let evil = h.run("evil", "1", t(0), t(60));
    h.on(evil, b1);
    h.with_records(evil);
    h.creates(evil, record);
    let reuser = h.run("v", "2", t(120), t(180));
    h.on(reuser, b1);
    h.with_records(reuser);
    h.reuses(reuser, record);
    let resolved = OracleSeeds {
        runs: vec![evil],
        ..OracleSeeds::default()
    };
    let trace = traced(&mut h.clone(), &runs(&["evil/1"]));
    assert_eq!(
        names(&trace, Kind::Run),
        set(&["run:evil/1/build", "run:v/2/build"])
    );
    assert_eq!(names(&trace, Kind::Record), set(&["record:b1:r1"]));
    let reuser = entry(&trace, "run:v/2/build");
    assert_eq!(
        (reuser.tainted_at, reuser.via),
        (t(120), Via::BuilderRecord)
    );
    assert_eq!(everything(&trace), oracle::closure(&h, &resolved, false));
    assert_eq!(times(&trace), oracle::times(&h, &resolved, false));
}

/// A mount seed in LLB form finds the mount and taints it from its first recorded use.
#[test]
fn mount_seed_accepts_the_llb_form() {
    let (mut h, pip) = poisoned_mount();
    reader(&mut h, "web/1", 0, 5, pip);
    reader(&mut h, "web/2", 30, 40, pip);
    let seeds = Seeds {
        mounts: vec![MountSeed {
            builder: "b1".into(),
            id: "//root/.cache/pip".into(),
            since: None,
        }],
        ..Seeds::default()
    };
    let trace = traced(&mut h, &seeds);
    assert_eq!(
        names(&trace, Kind::Run),
        set(&["run:web/1/build", "run:web/2/build"])
    );
    assert_eq!(entry(&trace, PIP).tainted_at, t(5));
}

/// A tag seed with a window selects the digests seen under it in the window and the one it
/// held when the window opened (the last seen under it before), whose readers are tainted
/// whenever they read it, not those it held before that.
#[test]
fn tag_seed_selects_digests_by_window() {
    let mut h = History::new();
    let oldest = h.manifest("reg.io/app", &digest('1'));
    let held = h.manifest("reg.io/app", &digest('2'));
    let new = h.manifest("reg.io/app", &digest('3'));
    for (run, at, artifact) in [("1", 0, oldest), ("2", 10, held), ("3", 50, new)] {
        h.tag(artifact, "cache");
        let r = h.run("ci", run, t(at), t(at + 5));
        h.exports(r, artifact);
    }
    let reader = h.run("web", "1", t(20), t(30));
    h.imports(reader, held);
    let window = Window {
        since: Some(t(40)),
        until: None,
    };
    let seeds = Seeds {
        cache_refs: vec![CacheRefSeed::Tag {
            locator: "reg.io/app".into(),
            tag: "cache".into(),
            window,
        }],
        ..Seeds::default()
    };
    let trace = traced(&mut h.clone(), &seeds);
    assert_eq!(names(&trace, Kind::Run), set(&["run:web/1/build"]));
    assert_eq!(
        names(&trace, Kind::CacheRef),
        set(&[
            &format!("reg.io/app@{}", digest('2')),
            &format!("reg.io/app@{}", digest('3'))
        ])
    );
    let resolved = OracleSeeds {
        tags: vec![("reg.io/app".into(), "cache".into(), window)],
        ..OracleSeeds::default()
    };
    assert_eq!(everything(&trace), oracle::closure(&h, &resolved, false));
}

/// A tag seed with a window selects an artifact recorded by tag only when the tag was seen
/// in the window, even if it was first seen before it; the ref taints only the runs that read
/// it from the window's start, from then. A digest seen under the tag before and in the window
/// is selected too, and taints every reader of its bytes.
#[test]
fn tag_seed_selects_a_tag_seen_across_its_window() {
    let mut h = History::new();
    let tag_only = h.artifact(Backend::Registry, "reg.io/app", "", "");
    h.tag(tag_only, "cache");
    let old = h.run("old", "1", t(0), t(10));
    h.imports(old, tag_only);
    let spanning = h.run("spanning", "1", t(30), t(50));
    h.imports(spanning, tag_only);
    let late = h.run("late", "1", t(60), t(70));
    h.imports(late, tag_only);
    let pinned = h.manifest("reg.io/app", &digest('1'));
    h.tag(pinned, "pinned");
    let first = h.run("first", "1", t(0), t(10));
    h.imports(first, pinned);
    let again = h.run("again", "1", t(60), t(70));
    h.imports(again, pinned);
    let window = Window {
        since: Some(t(40)),
        until: None,
    };
    let mut seeds = Seeds::default();
    let mut resolved = OracleSeeds::default();
    for tag in ["cache", "pinned"] {
        seeds.cache_refs.push(CacheRefSeed::Tag {
            locator: "reg.io/app".into(),
            tag: tag.into(),
            window,
        });
        resolved
            .tags
            .push(("reg.io/app".into(), tag.into(), window));
    }
    let trace = traced(&mut h.clone(), &seeds);
    assert_eq!(
        names(&trace, Kind::Run),
        set(&[
            "run:again/1/build",
            "run:first/1/build",
            "run:late/1/build",
            "run:spanning/1/build",
        ])
    );
    assert_eq!(entry(&trace, "reg.io/app:cache").tainted_at, t(40));
    assert_eq!(entry(&trace, "run:spanning/1/build").tainted_at, t(40));
    assert_eq!(entry(&trace, "run:late/1/build").tainted_at, t(60));
    assert_eq!(entry(&trace, "run:first/1/build").tainted_at, t(0));
    assert_eq!(everything(&trace), oracle::closure(&h, &resolved, false));
    assert_eq!(times(&trace), oracle::times(&h, &resolved, false));
}

/// A run that read a tag by name, whose digest its hook never learnt, is reached from a
/// tainted push of that tag by digest in the same repository when it read after the digest
/// was first seen there; a read from before cannot have been of it, and the same tag in
/// another repository is another ref.
#[test]
fn a_tag_read_by_name_is_reached_from_a_tainted_push_of_the_tag() {
    let mut h = History::new();
    let by_name = h.artifact(Backend::Registry, "reg.io/app", "", "");
    h.tag(by_name, "cache");
    let elsewhere = h.artifact(Backend::Registry, "reg.io/other", "", "");
    h.tag(elsewhere, "cache");
    let early = h.run("early", "1", t(0), t(10));
    h.imports(early, by_name);
    let evil = h.run("evil", "1", t(20), t(30));
    let pushed = h.manifest("reg.io/app", &digest('1'));
    h.tag(pushed, "cache");
    h.exports(evil, pushed);
    let late = h.run("late", "1", t(40), t(50));
    h.imports(late, by_name);
    let other = h.run("other", "1", t(40), t(50));
    h.imports(other, elsewhere);
    let seeds = runs(&["evil/1"]);
    let resolved = OracleSeeds {
        runs: vec![evil],
        ..OracleSeeds::default()
    };
    let aware = traced(&mut h.clone(), &seeds);
    assert_eq!(
        names(&aware, Kind::Run),
        set(&["run:evil/1/build", "run:late/1/build"])
    );
    let held = entry(&aware, "reg.io/app:cache");
    assert_eq!((held.via, held.tainted_at), (Via::TagHeld, t(20)));
    assert_eq!(
        held.from_name().as_deref(),
        Some(format!("reg.io/app@{}", digest('1')).as_str())
    );
    assert_eq!(entry(&aware, "run:late/1/build").tainted_at, t(40));
    assert_eq!(everything(&aware), oracle::closure(&h, &resolved, false));
    assert_eq!(times(&aware), oracle::times(&h, &resolved, false));
    // Time-blind, the early read counts too; the other repository's tag still does not.
    let options = TraceOptions {
        ignore_time: true,
        ..TraceOptions::default()
    };
    let blind = trace(&mut h.clone(), &seeds, options).unwrap();
    assert_eq!(
        names(&blind, Kind::Run),
        set(&["run:early/1/build", "run:evil/1/build", "run:late/1/build"])
    );
    assert_eq!(everything(&blind), oracle::closure(&h, &resolved, true));
}

/// A tag read by name after a recorded purge deleted the tainted digest from the repository
/// cannot have been of it; one between the push and the deletion may have been. A digest
/// first seen by a time-suspect run is held from any time: its claimed time proves nothing.
#[test]
fn a_tag_held_a_tainted_digest_until_its_deletion_and_from_any_time_when_suspect() {
    let mut h = History::new();
    let by_name = h.artifact(Backend::Registry, "reg.io/app", "", "");
    h.tag(by_name, "cache");
    let evil = h.run("evil", "1", t(20), t(30));
    let pushed = h.manifest("reg.io/app", &digest('1'));
    h.tag(pushed, "cache");
    h.exports(evil, pushed);
    let between = h.run("between", "1", t(31), t(33));
    h.imports(between, by_name);
    let after = h.run("after", "1", t(40), t(50));
    h.imports(after, by_name);
    h.delete_manifest(pushed, t(35));
    let seeds = runs(&["evil/1"]);
    let resolved = OracleSeeds {
        runs: vec![evil],
        ..OracleSeeds::default()
    };
    let aware = traced(&mut h.clone(), &seeds);
    assert_eq!(
        names(&aware, Kind::Run),
        set(&["run:between/1/build", "run:evil/1/build"])
    );
    assert_eq!(everything(&aware), oracle::closure(&h, &resolved, false));
    assert_eq!(times(&aware), oracle::times(&h, &resolved, false));
    // As if no purge had been recorded, the later read counts too.
    let options = TraceOptions {
        ignore_purges: true,
        ..TraceOptions::default()
    };
    let unpurged = trace(&mut h.clone(), &seeds, options).unwrap();
    assert!(names(&unpurged, Kind::Run).contains(&"run:after/1/build".to_owned()));
    // Pushed back after the deletion, the tag may hold it again.
    let again = h.run("again", "1", t(37), t(38));
    h.exports(again, pushed);
    let aware = traced(&mut h.clone(), &seeds);
    assert!(names(&aware, Kind::Run).contains(&"run:after/1/build".to_owned()));
    assert_eq!(everything(&aware), oracle::closure(&h, &resolved, false));

    let mut h = History::new();
    let by_name = h.artifact(Backend::Registry, "reg.io/app", "", "");
    h.tag(by_name, "cache");
    let early = h.run("early", "1", t(0), t(10));
    h.imports(early, by_name);
    let evil = h.run("evil", "1", t(90), t(95));
    h.suspect(evil);
    let pushed = h.manifest("reg.io/app", &digest('1'));
    h.tag(pushed, "cache");
    h.exports(evil, pushed);
    let resolved = OracleSeeds {
        runs: vec![evil],
        ..OracleSeeds::default()
    };
    let aware = traced(&mut h.clone(), &seeds);
    assert_eq!(
        names(&aware, Kind::Run),
        set(&["run:early/1/build", "run:evil/1/build"])
    );
    assert_eq!(everything(&aware), oracle::closure(&h, &resolved, false));
    assert_eq!(times(&aware), oracle::times(&h, &resolved, false));
}

/// A tainted run whose hook captured no record evidence may have made a record of its builder
/// that no recorded run created: a run with evidence that reused one after it started is
/// reached. Not one first reused before it started (it was there already), nor one first
/// reused after a prune of the builder that followed its finish, nor one whose creator was
/// recorded.
#[test]
fn a_record_no_run_created_is_reached_from_a_tainted_run_without_evidence() {
    let mut h = History::new();
    let b1 = h.builder("b1");
    let orphan = h.record(b1, "r1", "regular", "[2/2] RUN make");
    let known = h.record(b1, "r2", "regular", "[2/2] RUN test");
    let older = h.record(b1, "r3", "regular", "[2/2] RUN lint");
    let before = h.run("before", "1", t(0), t(5));
    h.on(before, b1);
    h.with_records(before);
    h.reuses(before, older);
    let creator = h.run("creator", "1", t(0), t(5));
    h.on(creator, b1);
    h.with_records(creator);
    h.creates(creator, known);
    let evil = h.run("evil", "1", t(10), t(20));
    h.on(evil, b1);
    let mut reuser = |name: &str, record| {
        let run = h.run(name, "1", t(30), t(40));
        h.on(run, b1);
        h.with_records(run);
        h.reuses(run, record);
    };
    reuser("victim", orphan);
    reuser("late", older);
    reuser("bystander", known);
    let seeds = runs(&["evil/1"]);
    let resolved = OracleSeeds {
        runs: vec![evil],
        ..OracleSeeds::default()
    };
    let aware = traced(&mut h.clone(), &seeds);
    assert_eq!(
        names(&aware, Kind::Run),
        set(&["run:evil/1/build", "run:victim/1/build"])
    );
    let reached = entry(&aware, "run:victim/1/build");
    assert_eq!(
        (reached.via, reached.tainted_at),
        (Via::BuilderRecord, t(30))
    );
    assert_eq!(names(&aware, Kind::Record), set(&["record:b1:r1"]));
    assert_eq!(everything(&aware), oracle::closure(&h, &resolved, false));
    assert_eq!(times(&aware), oracle::times(&h, &resolved, false));
    let options = TraceOptions {
        ignore_time: true,
        ..TraceOptions::default()
    };
    let blind = trace(&mut h.clone(), &seeds, options).unwrap();
    assert!(names(&blind, Kind::Run).contains(&"run:late/1/build".to_owned()));
    assert_eq!(everything(&blind), oracle::closure(&h, &resolved, true));

    // A prune between the tainted run's finish and the first reuse: the record came after.
    h.prune(b1, t(25));
    let pruned = traced(&mut h.clone(), &seeds);
    assert_eq!(names(&pruned, Kind::Run), set(&["run:evil/1/build"]));
    assert_eq!(everything(&pruned), oracle::closure(&h, &resolved, false));
}

/// An explanation through a record no recorded run created comes in by the offer of a run
/// that began before the reuse: a run that began after it was reused offers no such record,
/// so no shorter chain through it holds.
#[test]
fn explain_chains_through_a_record_no_run_created_hold_in_time() {
    let mut h = History::new();
    let b1 = h.builder("b1");
    let orphan = h.record(b1, "r1", "regular", "[2/2] RUN make");
    let origin = h.run("origin", "1", t(0), t(5));
    let cache = h.manifest("reg.io/app", &digest('a'));
    h.exports(origin, cache);
    let early = h.run("early", "1", t(10), t(20));
    h.on(early, b1);
    h.imports(early, cache);
    let late = h.run("late", "1", t(50), t(60));
    h.on(late, b1);
    let victim = h.run("victim", "1", t(30), t(40));
    h.on(victim, b1);
    h.with_records(victim);
    h.reuses(victim, orphan);
    let trace = traced(&mut h, &runs(&["origin/1", "late/1"]));
    let reached = entry(&trace, "run:victim/1/build");
    assert_eq!(reached.from_name().as_deref(), Some("record:b1:r1"));
    let hops = trace.explain("victim/1").unwrap();
    let path: Vec<(Via, &str)> = hops.iter().map(|h| (h.via, h.to.as_str())).collect();
    assert_eq!(path.len(), 5, "{path:?}");
    assert_eq!(path[0], (Via::Seed, "run:origin/1/build"));
    assert_eq!(
        path[2..],
        [
            (Via::ImportedDigest, "run:early/1/build"),
            (Via::RanOn, "record:b1:r1"),
            (Via::BuilderRecord, "run:victim/1/build"),
        ]
    );
    // Reused before it began, the record reaches nothing from the later run alone.
    let alone = traced(&mut h, &runs(&["late/1"]));
    assert!(alone.explain("victim/1").is_none());
    assert_eq!(names(&alone, Kind::Run), set(&["run:late/1/build"]));
}

/// Every tainted run without record evidence on a builder may have made each of its records
/// no recorded run created, but a run that began after two others adds nothing they do not
/// reach earlier: the evidence kept for an explanation or the graph holds the two earliest
/// offers, not one edge per run and record.
#[test]
fn a_record_no_run_created_keeps_the_two_earliest_offers_as_evidence() {
    let mut h = History::new();
    let b1 = h.builder("b1");
    let orphan = h.record(b1, "r1", "regular", "[2/2] RUN make");
    let mut seeds = Vec::new();
    for (key, start) in [("c", 20), ("a", 0), ("d", 30), ("b", 10)] {
        let run = h.run(key, "1", t(start), t(start + 5));
        h.on(run, b1);
        seeds.push(format!("{key}/1"));
    }
    let victim = h.run("victim", "1", t(100), t(110));
    h.on(victim, b1);
    h.with_records(victim);
    h.reuses(victim, orphan);
    let seeds: Vec<&str> = seeds.iter().map(String::as_str).collect();
    let trace = traced(&mut h, &runs(&seeds));
    let graph = trace.graph();
    let record = (graph.node_indices())
        .find(|&n| graph[n].name() == "record:b1:r1")
        .unwrap();
    let mut offers: Vec<String> = graph
        .edges_directed(record, Direction::Incoming)
        .filter(|e| e.weight().via == Via::RanOn)
        .map(|e| graph[e.source()].name().to_string())
        .collect();
    offers.sort();
    assert_eq!(offers, ["run:a/1/build", "run:b/1/build"]);
    let reached = entry(&trace, "run:victim/1/build");
    assert_eq!(
        (reached.via, reached.tainted_at),
        (Via::BuilderRecord, t(100))
    );
    let hops = trace.explain("victim/1").unwrap();
    assert_eq!(hops[0].to, "run:a/1/build");
    assert_eq!(hops.len(), 3, "{hops:?}");
}

/// A run that only claims (its record evidence doubted) to have created a record is reached
/// as a co-creator once another tainted creator made the record by its finish. Its
/// explanation comes in through such a creator, not through the offer of a run without
/// record evidence that began after it had finished, though that chain is shorter.
#[test]
fn explain_reaches_a_doubted_cocreator_through_a_creator_not_a_later_offer() {
    let mut h = History::new();
    let b1 = h.builder("b1");
    let m = h.mount(b1, "m");
    let record = h.record(b1, "r1", "regular", "[2/2] RUN make");
    let early = h.run("early", "1", t(0), t(1));
    h.writes(early, m);
    for key in ["d1", "d2"] {
        let run = h.run(key, "1", t(2), t(5));
        h.on(run, b1);
        h.with_records(run);
        h.doubt_records(run);
        h.creates(run, record);
        if key == "d1" {
            h.reads(run, m);
        }
    }
    let late = h.run("late", "1", t(30), t(40));
    h.on(late, b1);
    let trace = traced(&mut h, &runs(&["early/1", "late/1"]));
    let reached = entry(&trace, "run:d2/1/build");
    assert_eq!(
        (reached.via, reached.tainted_at),
        (Via::BuilderRecord, t(2))
    );
    let hops = trace.explain("d2/1").unwrap();
    let path: Vec<(Via, &str)> = hops.iter().map(|h| (h.via, h.to.as_str())).collect();
    assert_eq!(
        path[..3],
        [
            (Via::Seed, "run:early/1/build"),
            (Via::MountWrite, "mount:b1:m"),
            (Via::MountRead, "run:d1/1/build"),
        ]
    );
    assert!(
        hops.iter()
            .all(|h| h.from.as_deref() != Some("run:late/1/build")),
        "{path:?}"
    );
}

/// Two tag seeds on one tag-only artifact: the earlier window decides, whichever comes first,
/// and a seed without a window taints every reader.
#[test]
fn two_tag_seeds_on_one_artifact_keep_the_earlier_window() {
    let mut h = History::new();
    let tag_only = h.artifact(Backend::Registry, "reg.io/app", "", "");
    h.tag(tag_only, "cache");
    h.tag(tag_only, "main");
    let early = h.run("early", "1", t(0), t(10));
    h.imports(early, tag_only);
    let middle = h.run("middle", "1", t(30), t(35));
    h.imports(middle, tag_only);
    let late = h.run("late", "1", t(60), t(70));
    h.imports(late, tag_only);
    let window = |since: i64| Window {
        since: Some(t(since)),
        until: None,
    };
    let unbounded = Window {
        since: None,
        until: None,
    };
    for (windows, expected) in [
        (
            [("cache", window(50)), ("main", window(20))],
            &["run:late/1/build", "run:middle/1/build"][..],
        ),
        (
            [("cache", window(20)), ("main", window(50))],
            &["run:late/1/build", "run:middle/1/build"][..],
        ),
        (
            [("cache", unbounded), ("main", window(50))],
            &[
                "run:early/1/build",
                "run:late/1/build",
                "run:middle/1/build",
            ][..],
        ),
        (
            [("cache", window(50)), ("main", unbounded)],
            &[
                "run:early/1/build",
                "run:late/1/build",
                "run:middle/1/build",
            ][..],
        ),
    ] {
        let mut seeds = Seeds::default();
        let mut resolved = OracleSeeds::default();
        for (tag, window) in windows {
            seeds.cache_refs.push(CacheRefSeed::Tag {
                locator: "reg.io/app".into(),
                tag: tag.into(),
                window,
            });
            resolved
                .tags
                .push(("reg.io/app".into(), tag.into(), window));
        }
        let trace = traced(&mut h.clone(), &seeds);
        assert_eq!(names(&trace, Kind::Run), set(expected), "{windows:?}");
        assert_eq!(everything(&trace), oracle::closure(&h, &resolved, false));
        assert_eq!(times(&trace), oracle::times(&h, &resolved, false));
    }
}

/// One random history: runs on two builders (or none), a few mounts, artifacts over four
/// digests and two without, builder records, purges and prunes; each run reads and writes a random subset.
/// Returned with the seeds both as flags would give them and resolved to ids.
pub(crate) fn arb_history() -> impl Strategy<Value = (History, Seeds, OracleSeeds)> {
    let run = (
        0i64..60,
        0i64..15,
        0usize..3,
        any::<bool>(),
        any::<bool>(),
        prop::collection::vec((0u8..8, 0usize..7), 0..5),
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.1),
    );
    (
        prop::collection::vec(run, 1..9),
        prop::collection::vec((0usize..3, 0i64..80), 0..3),
        prop::collection::vec(
            (
                0usize..2,
                0i64..80,
                0u8..4,
                0u8..32,
                (0u8..3, 0i64..80, 0i64..4),
            ),
            0..3,
        ),
        0usize..6,
        (0i64..80, 0i64..80),
        prop::option::weighted(0.4, (0i64..100, 0u8..4, 0i64..100)),
    )
        .prop_map(|(specs, purges, prunes, seed, (since, until), receipt)| {
            let mut h = History::new();
            let builders = [h.builder("b1"), h.builder("b2")];
            let mounts = [
                h.mount(builders[0], "a"),
                h.mount(builders[0], "b"),
                h.mount(builders[1], "a"),
            ];
            let artifacts = [
                h.manifest("reg.io/x", &digest('1')),
                h.manifest("reg.io/y", &digest('1')),
                h.manifest("reg.io/x", &digest('2')),
                h.manifest("reg.io/z", &digest('3')),
                // A cache entry without a digest: its readers are its own.
                h.artifact(Backend::Gha, "gha", "", "web-main"),
                // A registry ref recorded by tag only, and digests seen under the same tag,
                // in another repository and in its own.
                h.artifact(Backend::Registry, "reg.io/w", "", ""),
                h.manifest("reg.io/w", &digest('4')),
            ];
            h.tag(artifacts[5], "cache");
            h.tag(artifacts[2], "cache");
            h.tag(artifacts[6], "cache");
            let records = [
                h.record(builders[0], "r0", "regular", "RUN make"),
                h.record(builders[0], "r1", "regular", "RUN test"),
                h.record(builders[1], "r2", "regular", "RUN make"),
                h.record(builders[1], "r3", "exec.cachemount", "cached mount"),
                // Named by id alone by the run that first recorded it.
                h.record(builders[0], "r4", "", ""),
            ];
            for (i, (start, length, builder, evidence, failed, events, suspect, truncated)) in
                specs.into_iter().enumerate()
            {
                let r = h.run("p", &i.to_string(), t(start), t(start + length));
                if suspect {
                    h.suspect(r);
                }
                if truncated {
                    h.truncated(r);
                }
                if builder < 2 {
                    h.on(r, builders[builder]);
                }
                // A run creates and reuses records of its own builder only, as every store
                // records them: a run that names records names its builder.
                let own: &[RecordId] = match builder {
                    0 => &[records[0], records[1], records[4]],
                    1 => &[records[2], records[3]],
                    _ => &[],
                };
                if evidence {
                    h.with_records(r);
                }
                if failed {
                    h.fail(r);
                }
                for (kind, target) in events {
                    match kind {
                        0 => h.imports(r, artifacts[target]),
                        1 => h.uses_base(r, artifacts[target % 5]),
                        2 => h.exports(r, artifacts[target]),
                        3 => h.produces(r, artifacts[target % 5]),
                        4 => h.reads(r, mounts[target % 3]),
                        5 => h.writes(r, mounts[target % 3]),
                        _ if own.is_empty() => {}
                        6 => h.creates(r, own[target % own.len()]),
                        _ => h.reuses(r, own[target % own.len()]),
                    }
                }
            }
            for (mount, at) in purges {
                h.purge(mounts[mount], t(at));
            }
            // Whole prunes, prunes of build records only that leave cache mounts, and prunes
            // of some records: those named, and those used since a time (or any time).
            for (builder, at, kind, named, (since_kind, since, skew)) in prunes {
                match kind {
                    0 => h.prune(builders[builder], t(at)),
                    1 => h.prune_records(builders[builder], t(at)),
                    _ => {
                        let named: Vec<RecordId> = (0..5)
                            .filter(|i| named & (1 << i) != 0)
                            .map(|i| records[i])
                            .collect();
                        let since = match since_kind {
                            0 => None,
                            1 => Some(t(since)),
                            _ => Some(Micros::MIN),
                        };
                        h.prune_some_records(
                            builders[builder],
                            t(at),
                            &named,
                            (since, skew * 60_000_000),
                        );
                    }
                }
            }
            // The first run, received by the collector: as a seed, its writes may count from
            // earlier than it claims.
            // (3: with the bound its collector kept on when it began.)
            if let Some((at, kind, began_after)) = receipt {
                match kind {
                    0 => h.received_with_static_token(1, t(at)),
                    3 => h.received_bounded(1, t(at), false, Some(t(began_after))),
                    _ => h.received(1, t(at), kind == 2),
                }
            }
            let claims = prop_claims().claims;
            let window = Window {
                since: Some(t(since.min(until))),
                until: Some(t(since.max(until))),
            };
            // Seeded by its run, or (5) by its pipeline's window: the runs that claim to start
            // in it, those that may have begun in it by their receipt (received after it
            // opened, or able to have begun before it closed), and time-suspect ones.
            let (mut seeds, seeded, seed_since) = if seed == 5 {
                let (from, to) = (window.since.unwrap(), window.until.unwrap());
                let seeded: Vec<i64> = (h.runs.iter())
                    .filter(|r| {
                        let receipt = h.receipts.iter().find(|c| c.0 == r.id).map(|c| c.1);
                        r.time_suspect
                            || (r.started_at >= from
                                || receipt.is_some_and(|c| c.received_at + claims.skew >= from))
                                && (r.started_at <= to
                                    || receipt.is_some_and(|c| earliest_start(claims, c) <= to))
                    })
                    .map(|r| r.id)
                    .collect();
                let seeds = Seeds {
                    pipelines: vec![PipelineSeed {
                        name: "p".into(),
                        window,
                    }],
                    ..Seeds::default()
                };
                (seeds, seeded, window.since)
            } else {
                (runs(&["p/0"]), vec![1], None)
            };
            let mut resolved = OracleSeeds {
                runs: seeded.clone(),
                skew: claims.skew,
                ..OracleSeeds::default()
            };
            let first = &h.runs[0];
            if let Some(&(_, receipt)) = h.receipts.first()
                && seeded.contains(&1)
                && !first.time_suspect
            {
                let from = earliest_start(claims, receipt).max(seed_since.unwrap_or(Micros::MIN));
                let from = if from == Micros::MIN {
                    // Taken as time-suspect instead.
                    resolved.unbounded.insert(1);
                    first.started_at
                } else {
                    from.min(first.started_at)
                };
                let until = (receipt.received_at.max(receipt.last_seen) + claims.skew)
                    .max(first.finished_at);
                resolved.write_spans.insert(1, (from, until));
            }
            match seed {
                0 | 5 => {}
                1 => {
                    seeds.mounts.push(MountSeed {
                        builder: "b1".into(),
                        id: "a".into(),
                        since: Some(t(20)),
                    });
                    resolved.mount = Some((mounts[0], t(20)));
                }
                2 => {
                    seeds.builders.push(BuilderSeed {
                        name: "b2".into(),
                        since: Some(t(10)),
                    });
                    resolved.builder = Some((builders[1], t(10)));
                }
                3 => {
                    seeds.images.push(DigestSeed {
                        locator: None,
                        digest: Digest::parse(&digest('1'), "d").unwrap(),
                    });
                    resolved.digest = Some(digest('1'));
                }
                _ => {
                    let window = Window {
                        since: Some(t(since.min(until))),
                        until: Some(t(since.max(until))),
                    };
                    for locator in ["reg.io/w", "reg.io/x"] {
                        seeds.cache_refs.push(CacheRefSeed::Tag {
                            locator: locator.into(),
                            tag: "cache".into(),
                            window,
                        });
                        resolved.tags.push((locator.into(), "cache".into(), window));
                    }
                }
            }
            (h, seeds, resolved)
        })
}

/// Claim limits small enough for the histories above: a run of 20 minutes, 5 of grace.
pub(crate) fn prop_claims() -> TraceOptions {
    let mut options = limits(20, 5);
    options.claims.skew = t(1) - t(0);
    options
}

/// The earliest a received run may have begun, worked out here for the reference engine
/// rather than by [`ClaimLimits::earliest_start`]: its receipt time less the longest run, the
/// token's life, the grace when late and two skews, or the collector's kept bound where that
/// is earlier; nothing for a static token.
fn earliest_start(claims: ClaimLimits, receipt: Receipt) -> Micros {
    if !receipt.expiring {
        return Micros::MIN;
    }
    let grace = if receipt.late { claims.late_grace } else { 0 };
    let limited =
        receipt.received_at - claims.longest_run - claims.token_life - grace - 2 * claims.skew;
    match receipt.began_after {
        Some(kept) if kept < limited => kept,
        _ => limited,
    }
}

/// When each tainted entity became tainted, by name.
fn times(trace: &Trace) -> BTreeMap<String, Micros> {
    Kind::ALL
        .iter()
        .flat_map(|&kind| trace.tainted(kind))
        .map(|e| (e.name().to_string(), e.tainted_at))
        .collect()
}

/// Everything the lists and reports show of a trace: each tainted entity with its label, and
/// the purges applied.
fn listed(trace: &Trace) -> Vec<String> {
    let mut shown: Vec<String> = Kind::ALL
        .iter()
        .flat_map(|&kind| trace.tainted(kind))
        .map(|e| {
            format!(
                "{} {} {:?} {:?} {}",
                e.name(),
                e.tainted_at,
                e.via,
                e.from_name().as_deref(),
                e.at
            )
        })
        .collect();
    shown.extend(trace.purges().iter().map(|p| format!("{p:?}")));
    shown
}

fn everything(trace: &Trace) -> BTreeSet<String> {
    Kind::ALL.iter().flat_map(|&k| names(trace, k)).collect()
}

proptest! {
    /// The traversal taints exactly what the rules applied naively taint, with and without
    /// time; the time-blind closure contains the time-aware one; and every tainted entity has
    /// a chain of evidence from a seed that holds in time.
    #[test]
    fn traversal_matches_the_rules_and_ignoring_time_gives_a_superset(
        (history, seeds, resolved) in arb_history()
    ) {
        let mut h = history.clone();
        let aware = trace(&mut h, &seeds, TraceOptions { ignore_time: false, ..prop_claims() }).unwrap();
        let mut h = history.clone();
        let blind = trace(&mut h, &seeds, TraceOptions { ignore_time: true, ..prop_claims() }).unwrap();
        prop_assert_eq!(everything(&aware), oracle::closure(&history, &resolved, false));
        prop_assert_eq!(everything(&blind), oracle::closure(&history, &resolved, true));
        prop_assert_eq!(times(&aware), oracle::times(&history, &resolved, false));
        prop_assert_eq!(times(&blind), oracle::times(&history, &resolved, true));
        // Without the evidence between entities, the same lists.
        for (full, ignore_time) in [(&aware, false), (&blind, true)] {
            let options = TraceOptions { ignore_time, labels_only: true, ..prop_claims() };
            let labels = trace(&mut history.clone(), &seeds, options).unwrap();
            prop_assert!(!labels.has_evidence());
            prop_assert_eq!(listed(&labels), listed(full));
        }
        // Ignoring purges is tracing the history with none recorded.
        let mut h = history.clone();
        let unpurged = trace(&mut h, &seeds, TraceOptions { ignore_purges: true, ..prop_claims() }).unwrap();
        let stripped = history.without_purges();
        prop_assert_eq!(times(&unpurged), oracle::times(&stripped, &resolved, false));
        prop_assert!(unpurged.purges().is_empty());
        // The listed purges account for all they hid: with none listed, nothing was hidden;
        // each run a listed purge kept out is in the blast radius without purges.
        let hidden: BTreeSet<String> = everything(&unpurged)
            .difference(&everything(&aware))
            .cloned()
            .collect();
        if aware.purges().is_empty() {
            prop_assert_eq!(times(&aware), times(&unpurged));
        }
        let kept_out: usize = aware.purges().iter().map(|p| p.kept_out).sum();
        prop_assert!(kept_out > 0 || hidden.iter().all(|n| !n.starts_with("run:")),
            "runs hidden without a purge keeping one out: {:?}", hidden);
        for p in aware.purges() {
            prop_assert!(p.kept_out <= p.runs && p.runs > 0);
            prop_assert!(!p.cleaned.is_empty());
        }
        for kind in Kind::ALL {
            let blind_names = names(&blind, kind);
            for name in names(&aware, kind) {
                prop_assert!(
                    blind_names.contains(&name),
                    "{} {} is missing from the time-blind trace", kind.as_str(), name
                );
            }
        }
        for result in [&aware, &blind] {
            for node in result.graph().node_indices() {
                if result.graph()[node].label.is_none() {
                    continue;
                }
                let hops = result.explain_node(node);
                prop_assert!(hops.is_some(), "no chain to {}", result.graph()[node].name());
                let hops = hops.unwrap();
                prop_assert_eq!(hops[0].via, Via::Seed);
                prop_assert_eq!(&hops[hops.len() - 1].to, &result.graph()[node].name().to_string());
                if let Err(broken) = offers_hold_in_time(result, &hops) {
                    prop_assert!(false, "{}: {:?}", broken, hops);
                }
            }
        }
    }
}

/// Whether each hop of an explanation from a run's offer of a record no believed run created
/// to a run that used the record holds in time: the offering run is another run, and began
/// by the use, unless times prove nothing.
pub(crate) fn offers_hold_in_time(result: &Trace, hops: &[super::Hop]) -> Result<(), String> {
    let g = result.graph();
    let by_name: BTreeMap<String, NodeIndex> = (g.node_indices())
        .map(|n| (g[n].name().to_string(), n))
        .collect();
    let at = |from: NodeIndex, to: NodeIndex, via: Via| {
        (g.edges_connecting(from, to))
            .filter(|e| e.weight().via == via)
            .map(|e| e.weight().at)
            .min()
    };
    for pair in hops.windows(2) {
        let (into, out) = (&pair[0], &pair[1]);
        if into.via != Via::RanOn || out.via != Via::BuilderRecord {
            continue;
        }
        let record = by_name[&into.to];
        if !matches!(g[record].entity, Entity::Record { .. }) {
            continue;
        }
        let offerer = by_name[into.from.as_deref().unwrap_or_default()];
        let user = by_name[&out.to];
        let (Entity::Run { info: o }, Entity::Run { info: u }) =
            (&g[offerer].entity, &g[user].entity)
        else {
            return Err(format!("no runs around {}", into.to));
        };
        if o.id == u.id {
            return Err(format!("{} reaches itself through {}", out.to, into.to));
        }
        let unbounded = (result.write_spans.get(&o.id)).is_some_and(|span| span.unbounded());
        if result.ignore_time || o.time_suspect || u.time_suspect || unbounded {
            continue;
        }
        let (offered, used) = (
            at(offerer, record, Via::RanOn),
            at(record, user, Via::BuilderRecord),
        );
        if offered > used {
            return Err(format!(
                "{} offered {} from {offered:?}, {} used it at {used:?}",
                into.from.as_deref().unwrap_or_default(),
                into.to,
                out.to
            ));
        }
    }
    Ok(())
}

proptest! {
    /// An incident's prune of a builder without `--full-prune`, as the plan makes it and the
    /// executor records it, covers every tainted writer of the builder the trace found, and
    /// the builder's seed: traced again, a build without record evidence that ran on the
    /// builder after the prune and read nothing else is clean, unless a tainted writer's times
    /// prove nothing (it may have written after any prune).
    #[test]
    fn a_planned_prune_of_some_records_cleans_its_builders(
        (history, seeds, _) in arb_history(),
        skew in 0i64..3,
    ) {
        let mut h = history.clone();
        let before = trace(&mut h, &seeds, prop_claims()).unwrap();
        let options = crate::plan::PlanOptions {
            delete_images: false,
            full_prune: false,
            clock_skew: skew * 60_000_000,
        };
        let actions = crate::plan::plan(
            &before,
            &crate::plan::PlanContext::default(),
            &crate::config::Scope::default(),
            options,
        );
        let mut h = history.clone();
        let mut fresh = Vec::new();
        for action in &actions {
            let crate::plan::Target::Builder {
                builder,
                record_ids,
                used_since,
                made_since,
                full: false,
                clock_skew,
                ..
            } = &action.target
            else {
                continue;
            };
            // As the executor records it.
            let since = crate::purge::builder::selective_since(*used_since, *made_since);
            let b = h.builders.iter().find(|b| b.name == builder.as_str()).unwrap().id;
            let named: Vec<RecordId> = (h.records.iter())
                .filter(|r| r.builder == b && record_ids.contains(&r.record_id.to_string()))
                .map(|r| r.id)
                .collect();
            h.prune_some_records(b, t(100_000), &named, (since, clock_skew.unwrap()));
            let run = h.run("fresh", &b.to_string(), t(100_001), t(100_002));
            h.on(run, b);
            fresh.push((b, format!("run:fresh/{b}/build")));
        }
        let after = trace(&mut h, &seeds, prop_claims()).unwrap();
        let tainted = names(&after, Kind::Run);
        for (b, name) in fresh {
            // A tainted writer on the builder whose times prove nothing: not this test's.
            let unbounded = after.tainted(Kind::Run).iter().any(|e| match e.entity {
                crate::graph::Entity::Run { info } => {
                    info.builder == Some(b)
                        && (info.time_suspect || after.writes_from(info) == Micros::MIN)
                }
                _ => false,
            });
            prop_assert!(unbounded || !tainted.contains(&name), "{name}: {actions:?}");
        }
    }
}

/// A record that only runs whose record evidence is doubted claim to have created is one no
/// recorded run created, and a tainted claimant's claim still taints it: both rules reach its
/// reusers and the other claimants, whichever comes first. A seed more never takes a run out
/// of the blast radius, nor makes one tainted later.
#[test]
fn a_doubted_creators_record_reaches_as_created_whatever_comes_first() {
    let mut h = History::new();
    let b1 = h.builder("b1");
    let m = h.mount(b1, "m");
    let x = h.record(b1, "x", "regular", "[2/2] RUN evil");
    let pr = h.run("pr", "1", t(100), t(110));
    h.on(pr, b1);
    h.with_records(pr);
    h.doubt_records(pr);
    h.creates(pr, x);
    h.prune(b1, t(115));
    let victim = h.run("victim", "1", t(50), t(200));
    h.on(victim, b1);
    h.with_records(victim);
    h.reuses(victim, x);
    // A run without record evidence on the builder, tainted through a mount.
    let w = h.run("w", "1", t(150), t(160));
    h.on(w, b1);
    h.reads(w, m);
    let s = h.run("s", "1", t(140), t(141));
    h.writes(s, m);
    let pr2 = h.run("pr2", "1", t(120), t(130));
    h.on(pr2, b1);
    h.with_records(pr2);
    h.doubt_records(pr2);
    h.creates(pr2, x);
    for labels_only in [false, true] {
        let options = TraceOptions {
            labels_only,
            ..TraceOptions::default()
        };
        let fewer = trace(&mut h.clone(), &runs(&["pr/1", "s/1"]), options).unwrap();
        let more = trace(&mut h.clone(), &runs(&["pr/1", "s/1", "w/1"]), options).unwrap();
        let expected = set(&[
            "run:pr/1/build",
            "run:pr2/1/build",
            "run:s/1/build",
            "run:victim/1/build",
            "run:w/1/build",
        ]);
        assert_eq!(names(&fewer, Kind::Run), expected);
        assert_eq!(names(&more, Kind::Run), expected);
        for trace in [&fewer, &more] {
            assert_eq!(entry(trace, "run:victim/1/build").tainted_at, t(50));
        }
    }
}

/// A run whose record evidence is doubted is one without any on its builder, as the store
/// keeps it: the runs that read a tainted builder's cache unverified include it, and those
/// whose records say what they used do not. Its evidence edge from the builder is kept for
/// the graph whichever tainted run reached the builder first.
#[test]
fn a_doubted_reuser_reads_its_builder_unverified() {
    use petgraph::visit::EdgeRef;
    let mut h = History::new();
    let b1 = h.builder("b1");
    let r: Vec<RecordId> = (0..4)
        .map(|i| h.record(b1, &format!("r{i}"), "regular", &format!("RUN {i}")))
        .collect();
    let p0 = h.run("p", "0", t(9), t(9));
    h.on(p0, b1);
    h.creates(p0, r[3]);
    let p1 = h.run("p", "1", t(0), t(0));
    h.on(p1, b1);
    h.creates(p1, r[0]);
    let p2 = h.run("p", "2", t(9), t(9));
    h.on(p2, b1);
    h.creates(p2, r[0]);
    h.creates(p2, r[3]);
    let pr = h.run("pr", "1", t(0), t(0));
    h.on(pr, b1);
    h.with_records(pr);
    h.doubt_records(pr);
    h.reuses(pr, r[1]);
    assert_eq!(
        h.unverified_builder_runs(b1, Micros::MIN)
            .unwrap()
            .iter()
            .map(|run| run.id)
            .collect::<Vec<_>>(),
        [p0, p1, p2, pr]
    );
    // Nor is it among the runs whose records of the builder say what they used.
    assert!(h.builder_record_users(b1, Micros::MIN).unwrap().is_empty());
    let options = TraceOptions {
        ignore_time: true,
        ..prop_claims()
    };
    let traced = trace(&mut h, &runs(&["p/0"]), options).unwrap();
    let from_builder: Vec<String> = (traced.graph().edge_references())
        .filter(|e| e.weight().via == Via::BuilderCacheUnverified)
        .map(|e| traced.graph()[e.target()].name().to_string())
        .collect();
    assert!(
        from_builder.contains(&"run:pr/1/build".to_string()),
        "{from_builder:?}"
    );
}
