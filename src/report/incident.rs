//! The incident report: Markdown for people, JSON (`schema/report.schema.json`) for tools.
//! Built from the store alone, so it can be regenerated at any time.

use std::io::{self, Write};

use serde::Serialize;
use serde_json::Value;

use crate::plan::{ActionKind, Target};
use crate::purge::{ActionState, IncidentStatus};
use crate::report::escape::{Line, MdCode, MdLine, MdText, Short};
use crate::store::{ActionRow, IncidentRow};
use crate::time;

pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Serialize)]
pub struct ReportDoc<'a> {
    pub schema_version: u32,
    pub incident: IncidentDoc<'a>,
    pub summary: SummaryDoc,
    /// The trace stored at open (schema/trace.schema.json).
    pub trace: Value,
    pub actions: Vec<ActionDoc<'a>>,
    pub follow_ups: Vec<String>,
    /// Builds that went ahead from a tainted input with `--allow-tainted`.
    pub overrides: Vec<OverrideDoc>,
    /// Where the evidence of the purge was saved.
    pub evidence_dir: Option<String>,
    pub verification: Option<VerificationDoc>,
    /// Targets left in place on purpose (`incident accept`), oldest first.
    pub acceptances: Vec<AcceptanceDoc>,
    /// The run chain's head when the incident was opened: the trace read no more than it.
    pub chain: Option<crate::store::ChainHead>,
    /// The follow-ups as pieces, for Markdown.
    #[serde(skip)]
    follow_up_pieces: Vec<Vec<Piece>>,
}

#[derive(Debug, Serialize)]
pub struct OverrideDoc {
    pub digest: String,
    pub pipeline: String,
    pub run: String,
    pub at: String,
    pub by: String,
}

#[derive(Debug, Serialize)]
pub struct AcceptanceDoc {
    pub seq: i64,
    pub at: String,
    pub by: String,
    pub reason: String,
}

#[derive(Debug, Serialize)]
pub struct VerificationDoc {
    pub at: String,
    pub by: String,
    pub clean: bool,
    pub checks: Vec<String>,
}

/// What the store knows about an incident beyond its plan.
#[derive(Debug, Default)]
pub struct Extras {
    pub overrides: Vec<crate::store::OverrideRow>,
    pub evidence_dir: Option<String>,
    pub verification: Option<crate::store::VerificationRow>,
    pub acceptances: Vec<crate::store::Acceptance>,
}

#[derive(Debug, Serialize)]
pub struct IncidentDoc<'a> {
    pub id: i64,
    pub title: &'a str,
    pub status: IncidentStatus,
    pub opened_at: String,
    pub opened_by: &'a str,
    pub closed_at: Option<String>,
    pub closed_by: Option<&'a str>,
}

#[derive(Debug, Default, Serialize)]
pub struct SummaryDoc {
    pub actions: usize,
    pub pending: usize,
    pub done: usize,
    pub failed: usize,
    pub skipped: usize,
    pub out_of_scope: usize,
}

#[derive(Debug, Serialize)]
pub struct ActionDoc<'a> {
    pub seq: i64,
    pub kind: &'static str,
    pub place: &'a str,
    pub target: &'a Target,
    pub reason: &'a str,
    pub in_scope: bool,
    pub state: ActionState,
    pub attempts: i64,
    pub outcome: Option<&'a str>,
    pub error: Option<&'a str>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub duration_ms: Option<f64>,
    /// Why the target's evidence could not be saved before the action went ahead.
    pub evidence_gap: Option<&'a str>,
}

/// Everything the report says, as data.
pub fn document<'a>(
    incident: &'a IncidentRow,
    actions: &'a [ActionRow],
    extras: Extras,
) -> ReportDoc<'a> {
    let mut summary = SummaryDoc {
        actions: actions.len(),
        ..SummaryDoc::default()
    };
    for row in actions {
        match row.state {
            ActionState::Done => summary.done += 1,
            ActionState::Failed => summary.failed += 1,
            ActionState::Skipped => summary.skipped += 1,
            ActionState::Pending | ActionState::Running => summary.pending += 1,
        }
        if !row.action.in_scope {
            summary.out_of_scope += 1;
        }
    }
    let trace: Value = serde_json::from_str(&incident.trace).unwrap_or(Value::Null);
    let follow_up_pieces = follow_up_pieces(actions);
    ReportDoc {
        schema_version: SCHEMA_VERSION,
        incident: IncidentDoc {
            id: incident.id,
            title: &incident.title,
            status: incident.status,
            opened_at: time::format(incident.opened_at),
            opened_by: &incident.opened_by,
            closed_at: incident.closed_at.map(time::format),
            closed_by: incident.closed_by.as_deref(),
        },
        summary,
        follow_ups: follow_ups(&follow_up_pieces),
        follow_up_pieces,
        overrides: extras
            .overrides
            .into_iter()
            .map(|(digest, pipeline, run, at, by)| OverrideDoc {
                digest,
                pipeline,
                run,
                at: time::format(at),
                by,
            })
            .collect(),
        evidence_dir: extras.evidence_dir,
        verification: extras.verification.map(|v| VerificationDoc {
            at: time::format(v.at),
            by: v.by,
            clean: v.clean,
            checks: serde_json::from_str(&v.result).unwrap_or_default(),
        }),
        acceptances: extras
            .acceptances
            .into_iter()
            .map(|a| AcceptanceDoc {
                seq: a.seq,
                at: time::format(a.at),
                by: a.by,
                reason: a.reason,
            })
            .collect(),
        trace,
        chain: incident.chain,
        actions: actions
            .iter()
            .map(|row| ActionDoc {
                seq: row.seq,
                kind: row.action.kind.as_str(),
                place: &row.action.place,
                target: &row.action.target,
                reason: &row.action.reason,
                in_scope: row.action.in_scope,
                state: row.state,
                attempts: row.attempts,
                outcome: row.outcome.as_deref(),
                error: row.error.as_deref(),
                started_at: row.started_at.map(time::format),
                finished_at: row.finished_at.map(time::format),
                duration_ms: row.duration_us.map(|us| us as f64 / 1000.0),
                evidence_gap: row.evidence_gap.as_deref(),
            })
            .collect(),
    }
}

/// A piece of a follow-up: our own words, a store value as text, or a name or command.
#[derive(Debug)]
enum Piece {
    Ours(&'static str),
    Text(String),
    Code(String),
}

/// The follow-ups, each as its pieces: the JSON joins them (code in backticks), Markdown
/// escapes each piece by what it is.
fn follow_up_pieces(actions: &[ActionRow]) -> Vec<Vec<Piece>> {
    let mut out = Vec::new();
    for row in actions {
        if let Target::FollowUp { what, command, .. } = &row.action.target {
            out.push(vec![
                Piece::Text(what.clone()),
                Piece::Ours(": "),
                Piece::Code(command.clone()),
            ]);
        }
    }
    let registries: std::collections::BTreeSet<&str> = actions
        .iter()
        .filter(|r| r.action.kind == ActionKind::DeleteManifest)
        .map(|r| r.action.place.as_str())
        .collect();
    for registry in registries {
        out.push(vec![
            Piece::Ours("registry "),
            Piece::Code(registry.to_owned()),
            Piece::Ours(
                ": deleted manifests free no disk and their blobs can still be fetched by digest until \
                 the registry's garbage collection runs (distribution: stop the registry or make it read-only, then ",
            ),
            Piece::Code(
                "registry garbage-collect --delete-untagged /etc/docker/registry/config.yml".to_owned(),
            ),
            Piece::Ours(")"),
        ]);
    }
    out.push(vec![Piece::Ours(
        "rotate every secret the tainted builds could read (build secrets, registry and CI tokens on the tainted builders)",
    )]);
    out
}

fn follow_ups(pieces: &[Vec<Piece>]) -> Vec<String> {
    pieces
        .iter()
        .map(|pieces| {
            pieces
                .iter()
                .map(|piece| match piece {
                    Piece::Ours(text) => (*text).to_owned(),
                    Piece::Text(text) => text.clone(),
                    Piece::Code(code) => format!("`{code}`"),
                })
                .collect()
        })
        .collect()
}

pub fn write_json(doc: &ReportDoc<'_>, out: &mut dyn Write) -> io::Result<()> {
    crate::report::json::to_writer_pretty(&mut *out, doc)?;
    writeln!(out)
}

pub fn write_markdown(doc: &ReportDoc<'_>, out: &mut dyn Write) -> io::Result<()> {
    // Every value below but the counts and times comes from the store, and most of it from
    // the recorded pipelines: names are code spans the name cannot close, other text is
    // escaped Markdown text, and messages that already hold escaped names are escaped once
    // (`escape`).
    let i = &doc.incident;
    writeln!(out, "# Incident {}: {}", i.id, MdText(i.title))?;
    writeln!(out)?;
    writeln!(out, "- Status: **{}**", MdText(i.status.as_str()))?;
    writeln!(out, "- Opened: {} by {}", i.opened_at, MdText(i.opened_by))?;
    if let Some(chain) = &doc.chain {
        writeln!(
            out,
            "- Computed from run chain head `{}` ({} entries): `cachewarden verify-log --head {}` shows the runs it read are unchanged",
            chain.head, chain.length, chain.head
        )?;
    }
    if let (Some(at), Some(by)) = (&i.closed_at, i.closed_by) {
        // Closed on a verification that was not clean: with `--force`.
        let forced = match &doc.verification {
            Some(v) if v.clean => "",
            _ => " (forced: not verified clean)",
        };
        writeln!(out, "- Closed: {} by {}{forced}", MdText(at), MdText(by))?;
    }
    let s = &doc.summary;
    writeln!(
        out,
        "- Actions: {} ({} done, {} failed, {} pending, {} skipped, {} out of scope)",
        s.actions, s.done, s.failed, s.pending, s.skipped, s.out_of_scope
    )?;
    writeln!(out)?;
    writeln!(out, "## Seeds")?;
    writeln!(out)?;
    for seed in doc.trace["seeds"].as_array().into_iter().flatten() {
        writeln!(
            out,
            "- {} {}",
            MdText(seed["kind"].as_str().unwrap_or("")),
            MdCode::span(seed["name"].as_str().unwrap_or(""))
        )?;
    }
    writeln!(out)?;
    writeln!(out, "## Blast radius")?;
    writeln!(out)?;
    let groups = [
        ("runs", "Runs"),
        ("cache_refs", "Cache refs"),
        ("images", "Images"),
        ("mounts", "Mount caches"),
        ("builders", "Builders"),
        ("records", "Builder records"),
    ];
    let mut timeline: Vec<(String, String, String)> = Vec::new();
    for (key, title) in groups {
        let entries: Vec<&Value> = doc.trace[key].as_array().into_iter().flatten().collect();
        writeln!(out, "### {title} ({})", entries.len())?;
        writeln!(out)?;
        if entries.is_empty() {
            writeln!(out, "None.")?;
            writeln!(out)?;
            continue;
        }
        writeln!(out, "| tainted at | entity | evidence | from |")?;
        writeln!(out, "| --- | --- | --- | --- |")?;
        for e in entries {
            let at = e["tainted_at"].as_str().unwrap_or("").to_owned();
            let name = e["name"].as_str().unwrap_or("").to_owned();
            let via = e["via"]["kind"].as_str().unwrap_or("").to_owned();
            let truncated = if e["truncated"].as_bool() == Some(true) {
                " (truncated)"
            } else {
                ""
            };
            writeln!(
                out,
                "| {} | {}{truncated} | {} | {} |",
                MdText(&at),
                MdCode::cell(&name),
                MdText(&via),
                e["via"]["from"]
                    .as_str()
                    .map(|f| MdCode::cell(f).to_string())
                    .unwrap_or_default()
            )?;
            timeline.push((at, name, via));
        }
        writeln!(out)?;
    }
    write_purges_markdown(&doc.trace, out)?;
    timeline.sort();
    timeline.dedup();
    writeln!(out, "## Timeline")?;
    writeln!(out)?;
    for (at, name, via) in &timeline {
        writeln!(
            out,
            "- {}: {} tainted ({})",
            MdText(at),
            MdCode::span(name),
            MdText(via)
        )?;
    }
    writeln!(out)?;
    writeln!(out, "## Actions")?;
    writeln!(out)?;
    writeln!(
        out,
        "| # | action | target | state | outcome or error | duration |"
    )?;
    writeln!(out, "| --- | --- | --- | --- | --- | --- |")?;
    for a in &doc.actions {
        let state = if a.in_scope {
            MdText(a.state.as_str()).to_string()
        } else {
            format!("{} (out of scope)", MdText(a.state.as_str()))
        };
        let detail = MdLine(a.error.or(a.outcome).unwrap_or(""));
        let duration = a
            .duration_ms
            .map(|ms| format!("{ms:.1} ms"))
            .unwrap_or_default();
        writeln!(
            out,
            "| {} | {} | {} | {state} | {detail} | {duration} |",
            a.seq,
            a.kind,
            describe_target_as(a.target, Style::MdCell)
        )?;
    }
    writeln!(out)?;
    let gaps: Vec<&ActionDoc<'_>> = doc
        .actions
        .iter()
        .filter(|a| a.evidence_gap.is_some())
        .collect();
    if doc.evidence_dir.is_some() || !gaps.is_empty() {
        writeln!(out, "## Evidence")?;
        writeln!(out)?;
        if let Some(dir) = &doc.evidence_dir {
            writeln!(
                out,
                "Saved before deletion in {} (`MANIFEST.json` lists every file with its SHA-256).",
                MdCode::span(dir)
            )?;
            writeln!(out)?;
        }
        if !gaps.is_empty() {
            writeln!(
                out,
                "**Not saved** for {}, which went ahead without it:",
                super::count(gaps.len(), "action", "actions")
            )?;
            writeln!(out)?;
            for a in gaps {
                writeln!(
                    out,
                    "- #{} {}: {}",
                    a.seq,
                    describe_target_as(a.target, Style::MdCell),
                    MdLine(a.evidence_gap.unwrap_or_default())
                )?;
            }
            writeln!(out)?;
        }
    }
    if !doc.overrides.is_empty() {
        writeln!(out, "## Containment overrides")?;
        writeln!(out)?;
        for o in &doc.overrides {
            writeln!(
                out,
                "- {}: {} built from {} with --allow-tainted (by {})",
                MdText(&o.at),
                MdCode::span(
                    &crate::model::RunKey {
                        pipeline: o.pipeline.clone(),
                        run_id: o.run.clone(),
                        step: None
                    }
                    .to_string()
                ),
                MdCode::span(&o.digest),
                MdText(&o.by)
            )?;
        }
        writeln!(out)?;
    }
    if !doc.acceptances.is_empty() {
        writeln!(out, "## Targets left in place")?;
        writeln!(out)?;
        writeln!(
            out,
            "Accepted with `incident accept`: verification counts them as settled."
        )?;
        writeln!(out)?;
        for a in &doc.acceptances {
            let target = doc
                .actions
                .iter()
                .find(|d| d.seq == a.seq)
                .map(|d| describe_target_as(d.target, Style::MdCell))
                .unwrap_or_default();
            writeln!(
                out,
                "- #{} {target}: accepted {} by {}: {}",
                a.seq,
                MdText(&a.at),
                MdText(&a.by),
                MdText(&a.reason)
            )?;
        }
        writeln!(out)?;
    }
    if let Some(v) = &doc.verification {
        writeln!(out, "## Verification")?;
        writeln!(out)?;
        writeln!(
            out,
            "{} by {}: **{}**",
            MdText(&v.at),
            MdText(&v.by),
            if v.clean { "clean" } else { "not clean" }
        )?;
        writeln!(out)?;
        for c in &v.checks {
            writeln!(out, "- {}", MdLine(c))?;
        }
        writeln!(out)?;
    }
    writeln!(out, "## Follow-ups")?;
    writeln!(out)?;
    for pieces in &doc.follow_up_pieces {
        let mut line = String::new();
        for piece in pieces {
            match piece {
                Piece::Ours(text) => line.push_str(text),
                Piece::Text(text) => line.push_str(&MdLine(text).to_string()),
                Piece::Code(code) => line.push_str(&MdCode::span(code).to_string()),
            }
        }
        writeln!(out, "- {line}")?;
    }
    Ok(())
}

/// How [`describe_target_as`] quotes names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Terminal text: names escaped ([`Term`]) and shortened ([`Short`]) in backticks.
    Text,
    /// A Markdown table cell: names as code spans, text escaped.
    MdCell,
}

impl Style {
    fn name(self, value: &str) -> String {
        match self {
            Self::Text => format!("`{}`", Short(value)),
            Self::MdCell => MdCode::cell(value).to_string(),
        }
    }

    fn text(self, value: &str) -> String {
        match self {
            Self::Text => Short(value).to_string(),
            Self::MdCell => MdText(value).to_string(),
        }
    }

    /// A sentence of the plan's own that holds names quoted ([`crate::report::escape::Quoted`]):
    /// whole, its quotes as they are, controls escaped.
    fn sentence(self, value: &str) -> String {
        match self {
            Self::Text => Line(value).to_string(),
            Self::MdCell => MdLine(value).to_string(),
        }
    }
}

/// One line naming an action's target, for the terminal.
pub fn describe_target(target: &Target) -> String {
    describe_target_as(target, Style::Text)
}

/// One line naming an action's target, its names quoted as `style` says.
pub fn describe_target_as(target: &Target, style: Style) -> String {
    match target {
        Target::Manifest {
            registry,
            repository,
            digest,
            tags,
            ..
        } => {
            let tags = if tags.is_empty() {
                String::new()
            } else {
                let tags: Vec<String> = tags.iter().map(|t| style.text(t)).collect();
                format!(" (tags: {})", tags.join(", "))
            };
            format!(
                "{}{tags}",
                style.name(&format!("{registry}/{repository}@{digest}"))
            )
        }
        Target::Mount {
            builder, mount_id, ..
        } => format!("mount {} on {}", style.name(mount_id), style.name(builder)),
        Target::Builder {
            builder,
            record_ids,
            used_since,
            made_since,
            full,
            ..
        } => {
            if *full {
                format!("every record on {}", style.name(builder))
            } else if *used_since == Some(i64::MIN) {
                // Mount records are the mount actions' to prune.
                format!(
                    "every record on {} but its cache mounts",
                    style.name(builder)
                )
            } else {
                let mut s = format!(
                    "{} on {}",
                    super::count(record_ids.len(), "record", "records"),
                    style.name(builder)
                );
                if let Some(t) = used_since {
                    s.push_str(&format!(" and those used since {}", time::format(*t)));
                }
                if let Some(t) = made_since {
                    s.push_str(&format!(" and those made {}", super::made_since(*t)));
                }
                s
            }
        }
        Target::LocalImage {
            builder, reference, ..
        } => format!(
            "local image {} on {}",
            style.name(reference),
            style.name(builder)
        ),
        Target::FollowUp { what, .. } => style.sentence(what),
    }
}

/// The purges the stored trace applied, one bullet each, with how and by whom each was
/// recorded: a purge narrows the blast radius, so the report says whose word it rests on.
fn write_purges_markdown(trace: &Value, out: &mut dyn Write) -> io::Result<()> {
    let purges: Vec<&Value> = trace["purges"].as_array().into_iter().flatten().collect();
    let ignored = trace["ignore_purges"].as_bool() == Some(true);
    writeln!(out, "### Purges applied ({})", purges.len())?;
    writeln!(out)?;
    if ignored {
        writeln!(out, "Recorded purges were ignored (`--ignore-purges`).")?;
        writeln!(out)?;
        return Ok(());
    }
    if purges.is_empty() {
        writeln!(out, "None.")?;
        writeln!(out)?;
        return Ok(());
    }
    for p in purges {
        let text = |key: &str| p[key].as_str().map(code);
        let target = match text("mount") {
            Some(mount) => format!("mount {mount} on {}", text("builder").unwrap_or_default()),
            None if p["records_only"] == true => format!(
                "builder {} (build records, not cache mounts)",
                text("builder").unwrap_or_default()
            ),
            None => format!("builder {}", text("builder").unwrap_or_default()),
        };
        let mut line = format!(
            "- {}: purge {} of {target}, **{}**",
            p["at"].as_str().unwrap_or(""),
            p["id"],
            p["method"].as_str().unwrap_or("imported"),
        );
        if let (Some(incident), Some(action)) = (p["incident"].as_i64(), p["action"].as_i64()) {
            line.push_str(&format!(" (incident {incident} action {action})"));
        }
        line.push_str(&format!(
            " by {}, recorded {}",
            text("author").unwrap_or_else(|| "an unknown author".into()),
            p["recorded_at"].as_str().unwrap_or("at an unknown time")
        ));
        if let Some(claim) = p["claimed"].as_object() {
            let field = |key: &str| claim.get(key).and_then(Value::as_str).map(code);
            line.push_str(&format!(
                " (its line claims {} by {})",
                field("method").unwrap_or_else(|| "nothing".into()),
                field("author").unwrap_or_else(|| "nobody".into())
            ));
        }
        if p["forced"].as_bool() == Some(true) {
            line.push_str("; **forced** late entry");
        }
        if let Some(reason) = text("reason") {
            line.push_str(&format!("; reason: {reason}"));
        }
        let cleaned: Vec<String> = p["cleaned"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(code)
            .collect();
        let runs = p["runs"].as_u64().unwrap_or(0);
        line.push_str(&format!(
            "; cleaned {} for {runs} later {}, {} kept out of the blast radius",
            cleaned.join(", "),
            if runs == 1 { "run" } else { "runs" },
            p["kept_out"]
        ));
        writeln!(out, "{line}")?;
    }
    writeln!(out)
}

/// Recorded text as a Markdown code span that the text cannot close.
fn code(text: &str) -> String {
    crate::report::escape::MdCode::span(text).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A prune of what a doubted run whose times prove nothing may have made reaches back to
    /// any time, and says so in words, not as the smallest time there is.
    #[test]
    fn a_prune_of_records_made_at_any_time_says_so() {
        let prune = |made_since: Option<i64>| Target::Builder {
            builder: "b9".to_owned(),
            endpoint: None,
            driver: None,
            record_ids: Vec::new(),
            used_since: None,
            made_since,
            made_by_others: Vec::new(),
            full: false,
            partial: false,
            clock_skew: None,
        };
        let any = describe_target(&prune(Some(i64::MIN)));
        assert_eq!(any, "0 records on `b9` and those made at any time");
        let since = describe_target(&prune(Some(1_767_225_600_000_000)));
        assert_eq!(
            since,
            "0 records on `b9` and those made since 2026-01-01T00:00:00Z"
        );
    }

    /// A builder prune of build records only says so: it cleaned none of the builder's cache
    /// mounts, which a reader of the report must not take it for.
    #[test]
    fn a_prune_of_build_records_only_says_so() {
        let purge = |records_only: bool| {
            serde_json::json!({
                "id": 1, "kind": "builder", "builder": "ci-1", "mount": null,
                "records_only": records_only, "at": "2026-11-03T15:00:00Z", "method": "executor",
                "author": "me@host", "recorded_at": null, "forced": false, "reason": null,
                "source": "incident 1", "incident": 1, "action": 2, "claimed": null,
                "cleaned": [], "runs": 1, "kept_out": 1
            })
        };
        let render = |records_only: bool| {
            let trace = serde_json::json!({ "purges": [purge(records_only)] });
            let mut out = Vec::new();
            write_purges_markdown(&trace, &mut out).unwrap();
            String::from_utf8(out).unwrap()
        };
        assert!(
            render(true).contains("builder `ci-1` (build records, not cache mounts)"),
            "{}",
            render(true)
        );
        assert!(
            !render(false).contains("build records"),
            "{}",
            render(false)
        );
    }
}
