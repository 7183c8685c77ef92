//! `audit builds`: per-step cache hits against who created the records that served them, and
//! builds no hook recorded. Pure: the store reads the rows, the command writes the results.
//!
//! - CW005: a build `collect` found in a builder's history that no hook recorded.
//! - CW006: a step of a run served from a record a lower-trust run created: the poisoning
//!   signature, even when no mount or cache ref links the two runs.
//! - CW007: a hit on a record no recorded run created.
//! - CW008: a pipeline step whose hit rate moved more than `[audit] hit_rate_change` against
//!   its own history.
//!
//! A hit whose serving record cannot be told from the record snapshots is `unattributed`: no
//! finding can name its record, so it is counted and listed beside the findings instead.
//!
//! Builds `collect` read from a builder's history carry BuildKit's own step counts: they count
//! in the hit rates where their run has no step events (a build with step events is counted
//! from them, once), and where matched to a recorded run, CW008 judges them per pipeline as
//! one more step key, [`HISTORY_KEY`].

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::finding::{Code, Finding, trust_level};
use super::render::Reported;
use crate::ingest::progress::instruction;
use crate::report::count;
use crate::report::escape::Quoted;
use crate::time::{self, Micros};

pub const SCHEMA_VERSION: u32 = 1;

/// A run, by name, with its pipeline and its own trust level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRef {
    /// `pipeline/run/step`, as `--run` takes it.
    pub name: String,
    pub pipeline: String,
    pub trust_level: Option<String>,
}

/// One recorded step of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepRow {
    pub run: RunRef,
    pub builder: String,
    pub name: String,
    pub digest: Option<String>,
    pub cached: bool,
    /// When its run finished.
    pub at: Micros,
    /// The BuildKit record that served the hit; `None` when the step ran or is unattributed.
    pub record: Option<String>,
    /// The runs recorded creating that record.
    pub creators: Vec<RunRef>,
}

/// A build `collect` stored as a run of `unrecorded@BUILDER`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnrecordedBuild {
    pub builder: String,
    pub build_ref: String,
    pub run: String,
    pub created_at: Micros,
    pub completed_at: Micros,
}

/// A build's step counts from the builder's own history, as `collect` stored them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRow {
    /// The run the record was matched to, or stored as (`unrecorded@BUILDER`).
    pub run: RunRef,
    pub builder: String,
    /// When the build completed.
    pub at: Micros,
    /// BuildKit's `numCachedSteps` and `numTotalSteps`: every vertex, internal ones too.
    pub cached_steps: u64,
    pub total_steps: u64,
    /// Matched to a run a hook recorded (not stored as an unrecorded build).
    pub recorded: bool,
    /// Its run has step events, which count its hits instead.
    pub has_steps: bool,
}

/// The step key CW008 judges a pipeline's builds by, from their build history.
pub const HISTORY_KEY: &str = "(every step, from build history)";

/// Steps and hits of one pipeline on one builder.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HitRate {
    pub pipeline: String,
    pub builder: String,
    pub steps: u64,
    pub cached: u64,
    /// Hits no builder record could be told for.
    pub unattributed: u64,
    /// Builds counted from build history (their steps and hits are in `steps` and `cached`).
    pub history_builds: u64,
}

impl HitRate {
    pub fn ratio(&self) -> f64 {
        if self.steps == 0 {
            0.0
        } else {
            self.cached as f64 / self.steps as f64
        }
    }
}

/// What the audit judges.
pub struct Input<'a> {
    pub steps: &'a [StepRow],
    pub history: &'a [HistoryRow],
    pub unrecorded: &'a [UnrecordedBuild],
    /// Only what happened at or after this is reported; for CW008, the runs since then are
    /// compared with the runs before. Without it every step is judged, and CW008 compares each
    /// pipeline step's latest run with its earlier ones.
    pub since: Option<Micros>,
    /// `[audit] hit_rate_change`: a fraction. A step is judged once it has [`HISTORY_RUNS`]
    /// earlier runs.
    pub hit_rate_change: f64,
}

/// A trust level's rank; an unknown or missing level ranks lowest (a hit on its records is
/// judged as a hit on untrusted work).
fn rank_of(rank: &dyn Fn(&str) -> Option<usize>, level: Option<&str>) -> usize {
    level.and_then(rank).unwrap_or(0)
}

/// The findings, sorted by code, then reference.
pub fn findings(input: &Input<'_>, rank: &dyn Fn(&str) -> Option<usize>) -> Vec<Finding> {
    let mut out = Vec::new();
    let recent = |at: Micros| input.since.is_none_or(|s| at >= s);
    for build in input.unrecorded.iter().filter(|b| recent(b.completed_at)) {
        out.push(Finding {
            code: Code::UnrecordedBuild,
            registry: build.builder.clone(),
            repository: crate::store::unrecorded_pipeline(&build.builder),
            tag: None,
            digest: Some(build.build_ref.clone()),
            first_seen: build.completed_at,
            message: format!(
                "build {} ran on builder {} from {} to {} and no hook recorded it",
                Quoted(&build.build_ref),
                Quoted(&build.builder),
                time::format(build.created_at),
                time::format(build.completed_at)
            ),
            detail: BTreeMap::from([("run".to_owned(), build.run.clone())]),
        });
    }
    for step in input.steps.iter().filter(|s| s.cached && recent(s.at)) {
        let Some(record) = &step.record else { continue };
        let mut detail = BTreeMap::from([
            ("run".to_owned(), step.run.name.clone()),
            ("record".to_owned(), record.clone()),
            (
                "trust_level".to_owned(),
                step.run.trust_level.clone().unwrap_or_default(),
            ),
        ]);
        if let Some(digest) = &step.digest {
            detail.insert("step_digest".to_owned(), digest.clone());
        }
        if step.creators.is_empty() {
            out.push(Finding {
                code: Code::UnknownRecordHit,
                registry: step.builder.clone(),
                repository: step.run.pipeline.clone(),
                tag: Some(step.name.clone()),
                digest: Some(record.clone()),
                first_seen: step.at,
                message: format!(
                    "step {} of run {} was served from builder record {}, which no recorded run created",
                    Quoted(&step.name),
                    Quoted(&step.run.name),
                    Quoted(record)
                ),
                detail,
            });
            continue;
        }
        let level = rank_of(rank, step.run.trust_level.as_deref());
        for creator in &step.creators {
            if creator.name == step.run.name
                || rank_of(rank, creator.trust_level.as_deref()) >= level
            {
                continue;
            }
            let mut detail = detail.clone();
            detail.insert("creator".to_owned(), creator.name.clone());
            detail.insert(
                "creator_trust_level".to_owned(),
                creator.trust_level.clone().unwrap_or_default(),
            );
            out.push(Finding {
                code: Code::CrossTrustHit,
                registry: step.builder.clone(),
                repository: step.run.pipeline.clone(),
                tag: Some(step.name.clone()),
                digest: Some(record.clone()),
                first_seen: step.at,
                message: format!(
                    "step {} of run {} ({}) was served from builder record {}, created by run {} ({})",
                    Quoted(&step.name),
                    Quoted(&step.run.name),
                    trust_level(step.run.trust_level.as_deref()),
                    Quoted(record),
                    Quoted(&creator.name),
                    trust_level(creator.trust_level.as_deref()),
                ),
                detail,
            });
        }
    }
    out.extend(rate_changes(input));
    out.sort_by(|a, b| {
        (a.code, a.reference(), a.fingerprint()).cmp(&(b.code, b.reference(), b.fingerprint()))
    });
    out
}

/// What names one step across a pipeline's runs: its instruction and arguments, without the
/// `[stage 2/4]` label, whose numbers move when the Dockerfile gains a line.
fn step_key(name: &str) -> String {
    match instruction(name) {
        Some((word, args)) => format!("{word} {args}"),
        None => name.to_owned(),
    }
}

/// Earlier runs a step needs before its hit rate is judged: a step's first run always misses.
pub const HISTORY_RUNS: usize = 3;

/// One run's steps of one key: when it finished, how many, how many cache served.
#[derive(Debug, Clone, Default)]
struct Tally {
    at: Micros,
    steps: u64,
    cached: u64,
    builder: String,
}

/// The hit rate over some runs.
fn rate(runs: &[(String, Tally)]) -> f64 {
    let (steps, cached) = runs
        .iter()
        .fold((0, 0), |(s, c), (_, t)| (s + t.steps, c + t.cached));
    cached as f64 / steps.max(1) as f64
}

/// CW008: per pipeline step, the hit rate of its recent runs against its earlier ones.
fn rate_changes(input: &Input<'_>) -> Vec<Finding> {
    let mut groups: BTreeMap<(String, String), BTreeMap<String, Tally>> = BTreeMap::new();
    for step in input.steps {
        let tally = groups
            .entry((step.run.pipeline.clone(), step_key(&step.name)))
            .or_default()
            .entry(step.run.name.clone())
            .or_insert_with(|| Tally {
                at: step.at,
                builder: step.builder.clone(),
                ..Tally::default()
            });
        tally.steps += 1;
        tally.cached += u64::from(step.cached);
    }
    for build in input
        .history
        .iter()
        .filter(|b| b.recorded && b.total_steps > 0)
    {
        let tally = groups
            .entry((build.run.pipeline.clone(), HISTORY_KEY.to_owned()))
            .or_default()
            .entry(build.run.name.clone())
            .or_insert_with(|| Tally {
                at: build.at,
                builder: build.builder.clone(),
                ..Tally::default()
            });
        tally.steps += build.total_steps;
        tally.cached += build.cached_steps.min(build.total_steps);
    }
    let mut out = Vec::new();
    for ((pipeline, key), runs) in groups {
        let mut runs: Vec<(String, Tally)> = runs.into_iter().collect();
        runs.sort_by(|a, b| (a.1.at, &a.0).cmp(&(b.1.at, &b.0)));
        let split = match input.since {
            Some(since) => runs.partition_point(|r| r.1.at < since),
            None => runs.len().saturating_sub(1),
        };
        let (before, recent) = runs.split_at(split);
        if before.len() < HISTORY_RUNS || recent.is_empty() {
            continue;
        }
        let (then, now) = (rate(before), rate(recent));
        if (now - then).abs() <= input.hit_rate_change {
            continue;
        }
        let (last_run, last) = recent.last().cloned().unwrap_or_default();
        let what = if key == HISTORY_KEY {
            format!(
                "the builds of pipeline {} (by their build history) were",
                Quoted(&pipeline)
            )
        } else {
            format!(
                "step {} of pipeline {} was",
                Quoted(&key),
                Quoted(&pipeline)
            )
        };
        let mut detail = BTreeMap::from([
            ("run".to_owned(), last_run),
            ("hit_rate".to_owned(), format!("{now:.3}")),
            ("hit_rate_before".to_owned(), format!("{then:.3}")),
        ]);
        if key == HISTORY_KEY {
            detail.insert("source".to_owned(), "build-history".to_owned());
        }
        out.push(Finding {
            code: Code::HitRateChange,
            registry: last.builder,
            repository: pipeline.clone(),
            tag: Some(key.clone()),
            digest: None,
            first_seen: last.at,
            message: format!(
                "{what} served from cache in {:.0}% of {} against {:.0}% of the {} before",
                now * 100.0,
                count(recent.len(), "run", "runs"),
                then * 100.0,
                count(before.len(), "run", "runs"),
            ),
            detail,
        });
    }
    out
}

/// Hit rates per pipeline and builder, over the steps and the builds from build history since
/// `since` (every one without it). A build whose run has step events is counted from them
/// only.
pub fn hit_rates(steps: &[StepRow], history: &[HistoryRow], since: Option<Micros>) -> Vec<HitRate> {
    let mut rates: BTreeMap<(String, String), HitRate> = BTreeMap::new();
    fn rate_of<'a>(
        rates: &'a mut BTreeMap<(String, String), HitRate>,
        pipeline: &str,
        builder: &str,
    ) -> &'a mut HitRate {
        rates
            .entry((pipeline.to_owned(), builder.to_owned()))
            .or_insert_with(|| HitRate {
                pipeline: pipeline.to_owned(),
                builder: builder.to_owned(),
                ..HitRate::default()
            })
    }
    for step in steps.iter().filter(|s| since.is_none_or(|t| s.at >= t)) {
        let rate = rate_of(&mut rates, &step.run.pipeline, &step.builder);
        rate.steps += 1;
        rate.cached += u64::from(step.cached);
        rate.unattributed += u64::from(is_unattributed(step));
    }
    for build in history
        .iter()
        .filter(|b| !b.has_steps && since.is_none_or(|t| b.at >= t))
    {
        let rate = rate_of(&mut rates, &build.run.pipeline, &build.builder);
        rate.steps += build.total_steps;
        rate.cached += build.cached_steps.min(build.total_steps);
        rate.history_builds += 1;
    }
    rates.into_values().collect()
}

/// A hit whose serving record could not be told.
fn is_unattributed(step: &StepRow) -> bool {
    step.cached && step.record.is_none()
}

/// The unattributed hits since `since` (every one without it), oldest first.
pub fn unattributed(steps: &[StepRow], since: Option<Micros>) -> Vec<StepRow> {
    steps
        .iter()
        .filter(|s| is_unattributed(s) && since.is_none_or(|t| s.at >= t))
        .cloned()
        .collect()
}

/// One `audit builds`.
#[derive(Debug, Clone, Default)]
pub struct BuildsResult {
    pub started_at: Micros,
    pub since: Option<Micros>,
    pub steps: usize,
    pub unrecorded: usize,
    pub rates: Vec<HitRate>,
    /// Hits no builder record could be told for, oldest first.
    pub unattributed: Vec<StepRow>,
    pub findings: Vec<Reported>,
    pub seen_before: usize,
}

#[derive(Serialize)]
struct Doc<'a> {
    schema_version: u32,
    started_at: String,
    since: Option<String>,
    summary: Summary,
    hit_rates: Vec<RateDoc<'a>>,
    unattributed_hits: Vec<UnattributedDoc<'a>>,
    findings: Vec<FindingDoc<'a>>,
}

#[derive(Serialize)]
struct UnattributedDoc<'a> {
    pipeline: &'a str,
    builder: &'a str,
    run: &'a str,
    step: &'a str,
    step_digest: Option<&'a str>,
    at: String,
}

#[derive(Serialize)]
struct Summary {
    steps: usize,
    unrecorded_builds: usize,
    unattributed_hits: usize,
    findings: usize,
    new: usize,
    seen_before: usize,
}

#[derive(Serialize)]
struct RateDoc<'a> {
    pipeline: &'a str,
    builder: &'a str,
    steps: u64,
    cached: u64,
    unattributed: u64,
    history_builds: u64,
    hit_rate: f64,
}

#[derive(Serialize)]
struct FindingDoc<'a> {
    id: i64,
    code: &'static str,
    name: &'static str,
    severity: &'static str,
    new: bool,
    builder: &'a str,
    pipeline: &'a str,
    step: Option<&'a str>,
    record: Option<&'a str>,
    first_seen: String,
    message: &'a str,
    detail: &'a BTreeMap<String, String>,
}

/// JSON, shape in `schema/audit-builds.schema.json`.
pub fn json(result: &BuildsResult) -> serde_json::Value {
    let doc = Doc {
        schema_version: SCHEMA_VERSION,
        started_at: time::format(result.started_at),
        since: result.since.map(time::format),
        summary: Summary {
            steps: result.steps,
            unrecorded_builds: result.unrecorded,
            unattributed_hits: result.unattributed.len(),
            findings: result.findings.len(),
            new: result.findings.iter().filter(|f| f.new).count(),
            seen_before: result.seen_before,
        },
        hit_rates: result
            .rates
            .iter()
            .map(|r| RateDoc {
                pipeline: &r.pipeline,
                builder: &r.builder,
                steps: r.steps,
                cached: r.cached,
                unattributed: r.unattributed,
                history_builds: r.history_builds,
                hit_rate: (r.ratio() * 1000.0).round() / 1000.0,
            })
            .collect(),
        unattributed_hits: result
            .unattributed
            .iter()
            .map(|s| UnattributedDoc {
                pipeline: &s.run.pipeline,
                builder: &s.builder,
                run: &s.run.name,
                step: &s.name,
                step_digest: s.digest.as_deref(),
                at: time::format(s.at),
            })
            .collect(),
        findings: result
            .findings
            .iter()
            .map(|r| {
                let f = &r.finding;
                FindingDoc {
                    id: r.id,
                    code: f.code.id(),
                    name: f.code.name(),
                    severity: f.code.severity().as_str(),
                    new: r.new,
                    builder: &f.registry,
                    pipeline: &f.repository,
                    step: f.tag.as_deref(),
                    record: f.digest.as_deref(),
                    first_seen: time::format(f.first_seen),
                    message: &f.message,
                    detail: &f.detail,
                }
            })
            .collect(),
    };
    serde_json::to_value(doc).unwrap_or_default()
}

/// The findings, one block each, then the unattributed hits per pipeline and builder. Step
/// names, run names, pipelines and builders were written by pipelines: shown escaped
/// ([`Term`](crate::report::escape::Term)).
pub fn text(result: &BuildsResult) -> String {
    use crate::report::escape::Term;
    let mut out = String::new();
    for r in &result.findings {
        crate::audit::render::write_finding(&mut out, r);
    }
    let unattributed: Vec<&HitRate> = result.rates.iter().filter(|r| r.unattributed > 0).collect();
    if !unattributed.is_empty() {
        let _ = writeln!(
            out,
            "unattributed cache hits (no builder record could be told for them):"
        );
        for r in unattributed {
            let _ = writeln!(
                out,
                "  pipeline {} on builder {}: {} of {}",
                Term(&r.pipeline),
                Term(&r.builder),
                r.unattributed,
                count(
                    usize::try_from(r.cached).unwrap_or(usize::MAX),
                    "hit",
                    "hits"
                )
            );
        }
    }
    out
}

/// One status line for stderr.
pub fn summary_line(result: &BuildsResult) -> String {
    let new = result.findings.iter().filter(|f| f.new).count();
    let mut line = format!(
        "audited {} and {}: ",
        count(result.steps, "recorded step", "recorded steps"),
        count(result.unrecorded, "unrecorded build", "unrecorded builds"),
    );
    if result.findings.is_empty() {
        line.push_str("no new findings");
    } else {
        line.push_str(&format!(
            "{} ({new} new)",
            count(result.findings.len(), "finding", "findings")
        ));
    }
    if result.seen_before > 0 {
        line.push_str(&format!(
            "; {} seen before (--all shows them)",
            result.seen_before
        ));
    }
    if !result.unattributed.is_empty() {
        line.push_str(&format!(
            "; {} unattributed",
            count(result.unattributed.len(), "cache hit", "cache hits")
        ));
    }
    line
}

/// A Prometheus label value: backslash, double quote and newline escaped.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The textfile node_exporter's textfile collector reads: hit rates per pipeline and builder,
/// and the audit's findings by code.
pub fn metrics(result: &BuildsResult, duration_seconds: f64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP cachewarden_build_steps Recorded build steps by pipeline and builder, and how many cache served."
    );
    let _ = writeln!(out, "# TYPE cachewarden_build_steps gauge");
    for r in &result.rates {
        for (cached, n) in [("true", r.cached), ("false", r.steps - r.cached)] {
            let _ = writeln!(
                out,
                "cachewarden_build_steps{{pipeline=\"{}\",builder=\"{}\",cached=\"{cached}\"}} {n}",
                label(&r.pipeline),
                label(&r.builder)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP cachewarden_build_step_hit_ratio Fraction of recorded build steps served from cache, by pipeline and builder."
    );
    let _ = writeln!(out, "# TYPE cachewarden_build_step_hit_ratio gauge");
    for r in &result.rates {
        let _ = writeln!(
            out,
            "cachewarden_build_step_hit_ratio{{pipeline=\"{}\",builder=\"{}\"}} {}",
            label(&r.pipeline),
            label(&r.builder),
            r.ratio()
        );
    }
    let _ = writeln!(
        out,
        "# HELP cachewarden_build_step_unattributed_hits Recorded cache hits whose serving builder record could not be told, by pipeline and builder."
    );
    let _ = writeln!(out, "# TYPE cachewarden_build_step_unattributed_hits gauge");
    for r in &result.rates {
        let _ = writeln!(
            out,
            "cachewarden_build_step_unattributed_hits{{pipeline=\"{}\",builder=\"{}\"}} {}",
            label(&r.pipeline),
            label(&r.builder),
            r.unattributed
        );
    }
    let _ = writeln!(
        out,
        "# HELP cachewarden_audit_builds_findings Findings of the last audit builds by code."
    );
    let _ = writeln!(out, "# TYPE cachewarden_audit_builds_findings gauge");
    for code in Code::BUILDS {
        let n = result
            .findings
            .iter()
            .filter(|f| f.finding.code == code)
            .count();
        let _ = writeln!(
            out,
            "cachewarden_audit_builds_findings{{code=\"{}\"}} {n}",
            code.id()
        );
    }
    let _ = writeln!(
        out,
        "# HELP cachewarden_audit_builds_duration_seconds How long the last audit builds took."
    );
    let _ = writeln!(
        out,
        "# TYPE cachewarden_audit_builds_duration_seconds gauge"
    );
    let _ = writeln!(
        out,
        "cachewarden_audit_builds_duration_seconds {duration_seconds}"
    );
    let _ = writeln!(
        out,
        "# HELP cachewarden_audit_builds_last_run_timestamp_seconds When the last audit builds ran."
    );
    let _ = writeln!(
        out,
        "# TYPE cachewarden_audit_builds_last_run_timestamp_seconds gauge"
    );
    let _ = writeln!(
        out,
        "cachewarden_audit_builds_last_run_timestamp_seconds {}",
        result.started_at / 1_000_000
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(name: &str, trust: &str) -> RunRef {
        RunRef {
            name: format!("{name}/1/Dockerfile"),
            pipeline: name.to_owned(),
            trust_level: Some(trust.to_owned()),
        }
    }

    fn hit(
        run: RunRef,
        at: Micros,
        cached: bool,
        record: Option<&str>,
        creators: Vec<RunRef>,
    ) -> StepRow {
        StepRow {
            run,
            builder: "b".into(),
            name: "[stage-0 2/2] RUN echo hi".into(),
            digest: None,
            cached,
            at,
            record: record.map(str::to_owned),
            creators,
        }
    }

    fn rank(level: &str) -> Option<usize> {
        ["untrusted", "internal", "release"]
            .iter()
            .position(|l| *l == level)
    }

    fn judge(steps: &[StepRow], since: Option<Micros>) -> Vec<Finding> {
        findings(
            &Input {
                steps,
                history: &[],
                unrecorded: &[],
                since,
                hit_rate_change: 0.5,
            },
            &rank,
        )
    }

    /// A release run served from a record an untrusted run created is CW006, naming both
    /// runs; the same hit on a record a release run created is nothing.
    #[test]
    fn a_hit_on_lower_trust_work_is_cw006() {
        let steps = [hit(
            run("release", "release"),
            10,
            true,
            Some("r1"),
            vec![run("forks", "untrusted")],
        )];
        let found = judge(&steps, None);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].code, Code::CrossTrustHit);
        assert_eq!(found[0].detail["creator"], "forks/1/Dockerfile");
        assert_eq!(found[0].detail["run"], "release/1/Dockerfile");
        let clean = [hit(
            run("release", "release"),
            10,
            true,
            Some("r1"),
            vec![run("other", "release")],
        )];
        assert!(judge(&clean, None).is_empty());
    }

    /// A hit on a record no recorded run created is CW007; an unattributed hit is nothing.
    #[test]
    fn a_hit_on_an_unknown_record_is_cw007() {
        let steps = [
            hit(run("release", "release"), 10, true, Some("r9"), Vec::new()),
            hit(run("release", "release"), 10, true, None, Vec::new()),
        ];
        let found = judge(&steps, None);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].code, Code::UnknownRecordHit);
        assert!(judge(&steps, Some(11)).is_empty(), "before --since");
    }

    /// A step whose hit rate jumps from never to always is CW008; a steady one is not.
    #[test]
    fn a_moved_hit_rate_is_cw008() {
        let mut steps = Vec::new();
        for i in 0..3 {
            let mut r = run("app", "internal");
            r.name = format!("app/{i}/Dockerfile");
            steps.push(hit(r, i, false, None, Vec::new()));
        }
        assert!(judge(&steps, None).is_empty());
        let mut r = run("app", "internal");
        r.name = "app/9/Dockerfile".into();
        steps.push(hit(r, 9, true, None, Vec::new()));
        let found = judge(&steps, None);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].code, Code::HitRateChange);
        assert_eq!(found[0].tag.as_deref(), Some("RUN echo hi"));
    }

    /// A step name a pipeline wrote reaches the terminal escaped: no escape sequence, no
    /// second line.
    #[test]
    fn text_escapes_step_names() {
        let mut steps = [hit(
            run("release", "release"),
            10,
            true,
            Some("r1"),
            vec![run("forks", "untrusted")],
        )];
        steps[0].name = "[1/2] RUN echo \u{1b}[2J\nCW000 fake".into();
        let findings = judge(&steps, None);
        let result = BuildsResult {
            findings: findings
                .into_iter()
                .map(|finding| Reported {
                    id: 1,
                    new: true,
                    finding,
                })
                .collect(),
            ..BuildsResult::default()
        };
        let text = text(&result);
        assert!(!text.contains('\u{1b}'), "{text}");
        assert_eq!(text.lines().count(), 2, "{text}");
    }

    /// A step or run name cannot end the quotes it is shown in and read as the rest of the
    /// message: a backtick in it is an escape, so the message names exactly the runs it is
    /// about.
    #[test]
    fn names_in_a_message_cannot_forge_its_text() {
        let mut steps = [hit(
            run("forks", "untrusted"),
            10,
            true,
            Some("r1"),
            vec![run("release", "release")],
        )];
        steps[0].name =
            "x` of run `release/1/Dockerfile` (`release`) was served from builder record `r1`, created by run `forks/1/Dockerfile".into();
        steps[0].run.trust_level = Some("release".into());
        steps[0].creators[0].trust_level = Some("untrusted".into());
        let found = judge(&steps, None);
        assert_eq!(found.len(), 1, "{found:?}");
        let message = &found[0].message;
        assert_eq!(
            message,
            r"step `x\` of run \`release/1/Dockerfile\` (\`release\`) was served from builder record \`r1\`, created by run \`forks/1/Dockerfile` of run `forks/1/Dockerfile` (`release`) was served from builder record `r1`, created by run `release/1/Dockerfile` (`untrusted`)"
        );
        let reported = Reported {
            id: 1,
            new: true,
            finding: found[0].clone(),
        };
        let mut shown = String::new();
        super::super::render::write_finding(&mut shown, &reported);
        assert!(shown.contains(message.as_str()), "{shown}");
    }

    /// Hostile pipeline names cannot break out of a Prometheus label.
    #[test]
    fn metric_labels_are_escaped() {
        let result = BuildsResult {
            rates: vec![HitRate {
                pipeline: "a\"} 1\nevil{x=\"".into(),
                builder: "b\\".into(),
                steps: 2,
                cached: 1,
                ..HitRate::default()
            }],
            ..BuildsResult::default()
        };
        let text = metrics(&result, 0.0);
        assert!(text.contains(
            "cachewarden_build_step_hit_ratio{pipeline=\"a\\\"} 1\\nevil{x=\\\"\",builder=\"b\\\\\"} 0.5"
        ), "{text}");
        assert!(!text.lines().any(|l| l.starts_with("evil")));
    }

    /// An unattributed hit is counted per pipeline and builder, listed in the JSON, shown in
    /// the text (escaped) and the summary line, and written as its own metric; an attributed
    /// hit and a step that ran are not counted.
    #[test]
    fn unattributed_hits_are_shown() {
        let mut evil = run("rel\u{1b}[2J", "release");
        evil.name = "rel/2/Dockerfile".into();
        let steps = [
            hit(run("release", "release"), 10, true, None, Vec::new()),
            hit(run("release", "release"), 10, true, Some("r1"), Vec::new()),
            hit(run("release", "release"), 10, false, None, Vec::new()),
            hit(evil, 5, true, None, Vec::new()),
        ];
        let result = BuildsResult {
            steps: steps.len(),
            rates: hit_rates(&steps, &[], None),
            unattributed: unattributed(&steps, Some(8)),
            ..BuildsResult::default()
        };
        let release = result
            .rates
            .iter()
            .find(|r| r.pipeline == "release")
            .unwrap();
        assert_eq!(
            (release.steps, release.cached, release.unattributed),
            (3, 2, 1)
        );
        let doc = json(&result);
        assert_eq!(doc["summary"]["unattributed_hits"], 1, "{doc:#}");
        assert_eq!(doc["unattributed_hits"][0]["run"], "release/1/Dockerfile");
        assert_eq!(doc["hit_rates"][1]["unattributed"], 1, "{doc:#}");
        let text = text(&result);
        assert!(
            text.contains("pipeline release on builder b: 1 of 2 hits"),
            "{text}"
        );
        assert!(!text.contains('\u{1b}'), "{text}");
        assert!(summary_line(&result).ends_with("; 1 cache hit unattributed"));
        let prom = metrics(&result, 0.0);
        assert!(
            prom.contains(
                "cachewarden_build_step_unattributed_hits{pipeline=\"release\",builder=\"b\"} 1"
            ),
            "{prom}"
        );
    }

    fn history(run: RunRef, at: Micros, counts: (u64, u64), has_steps: bool) -> HistoryRow {
        HistoryRow {
            run,
            builder: "b".into(),
            at,
            cached_steps: counts.0,
            total_steps: counts.1,
            recorded: true,
            has_steps,
        }
    }

    /// A build from history counts in its pipeline's hit rate unless its run has step events,
    /// which count it already; `--since` leaves earlier builds out.
    #[test]
    fn history_counts_in_hit_rates_once() {
        let steps = [hit(run("app", "internal"), 10, true, None, Vec::new())];
        let mut other = run("app", "internal");
        other.name = "app/2/Dockerfile".into();
        let builds = [
            history(run("app", "internal"), 10, (5, 6), true),
            history(other.clone(), 11, (2, 8), false),
            history(other, 3, (8, 8), false),
        ];
        let rates = hit_rates(&steps, &builds, Some(5));
        assert_eq!(rates.len(), 1, "{rates:?}");
        assert_eq!(
            (rates[0].steps, rates[0].cached, rates[0].history_builds),
            (1 + 8, 1 + 2, 1),
            "{rates:?}"
        );
    }

    /// Builds matched to recorded runs whose history hit rate jumps are CW008 under the
    /// history key; unrecorded builds are not judged.
    #[test]
    fn a_moved_history_hit_rate_is_cw008() {
        let mut builds = Vec::new();
        for i in 0..4 {
            let mut r = run("app", "internal");
            r.name = format!("app/{i}/Dockerfile");
            let cached = if i == 3 { 6 } else { 1 };
            builds.push(history(r, i, (cached, 6), false));
        }
        let judge = |builds: &[HistoryRow]| {
            findings(
                &Input {
                    steps: &[],
                    history: builds,
                    unrecorded: &[],
                    since: None,
                    hit_rate_change: 0.5,
                },
                &rank,
            )
        };
        let found = judge(&builds);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].code, Code::HitRateChange);
        assert_eq!(found[0].tag.as_deref(), Some(HISTORY_KEY));
        assert_eq!(found[0].detail["source"], "build-history");
        assert_eq!(found[0].detail["run"], "app/3/Dockerfile");
        for b in &mut builds {
            b.recorded = false;
        }
        assert!(judge(&builds).is_empty());
    }
}
