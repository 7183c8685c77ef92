//! `cachewarden collect`: read a builder's build history through BuildKit's Control API and
//! store it. Each build is matched to the run a hook recorded, and what the history adds is
//! appended to that run; builds no hook recorded become runs of `unrecorded@BUILDER`.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::ExitStatus;
use crate::cli::{CollectArgs, OutputFormat};
use crate::commands::{open_existing_store, open_store, write_stdout};
use crate::config::Config;
use crate::error::InputError;
use crate::ingest::history::{self, HistoryBuild};
use crate::plan::BuilderPlace;
use crate::printer::Printer;
use crate::remote::endpoint::connect_builder;
use crate::report::escape::{Line, Term};
use crate::store::{CollectOutcome, CollectedBuild, HistoryMatch};
use crate::time;

/// Version of the JSON output (`schema/collect.schema.json`).
const SCHEMA_VERSION: u32 = 1;

pub async fn collect(
    args: &CollectArgs,
    db: &Path,
    config: &Config,
    printer: Printer,
) -> Result<ExitStatus> {
    let builder = args.builder.as_str();
    if builder.is_empty() {
        return Err(InputError::invalid("--builder is empty: name one").into());
    }
    // The endpoint a hook recorded, unless the config names the builder: a collect that
    // cannot reach its builder leaves no store behind.
    let place = match (config.builder(builder), crate::store::exists(db)) {
        (None, true) => open_existing_store(db)?
            .plan_context(&BTreeSet::from([builder.to_owned()]), &BTreeSet::new())?
            .builders
            .remove(builder)
            .unwrap_or_default(),
        _ => BuilderPlace::default(),
    };
    let mut client = connect_builder(config, builder, place.endpoint.as_deref(), place.driver)
        .await
        .with_context(|| format!("cannot collect the build history of `{}`", Term(builder)))?;
    let records = client
        .build_history()
        .await
        .with_context(|| format!("cannot collect the build history of `{}`", Term(builder)))?;
    let mut builds = Vec::new();
    let mut refused = 0;
    for record in &records {
        match history::check(record, builder) {
            Ok(build) => builds.push(build),
            Err(err) => {
                refused += 1;
                printer.warn(format!(
                    "history record refused: {}",
                    Line(&err.to_string())
                ));
            }
        }
    }
    let outcome = open_store(db)?.collect_history(builder, &builds, config)?;
    for warning in &outcome.warnings {
        printer.warn(Line(warning));
    }
    let out = match args.format {
        OutputFormat::Text => text(builder, &outcome),
        OutputFormat::Json => format!(
            "{}\n",
            crate::report::json::to_string_pretty(&json(builder, &outcome, refused))?
        ),
    };
    write_stdout(&out)?;
    let new = outcome.builds.iter().filter(|b| b.new).count();
    let events: usize = outcome.builds.iter().map(|b| b.events).sum();
    printer.status(format!(
        "cachewarden: collected {} from `{}` ({} new, {})",
        crate::report::count(outcome.builds.len(), "build", "builds"),
        Term(builder),
        new,
        crate::report::count(events, "event", "events"),
    ));
    Ok(if refused > 0 {
        ExitStatus::Findings
    } else {
        ExitStatus::Success
    })
}

#[derive(Serialize)]
struct JsonCollect<'a> {
    schema_version: u32,
    builder: &'a str,
    /// Records refused (each warned about on stderr).
    refused: usize,
    builds: &'a [CollectedBuild],
}

fn json<'a>(builder: &'a str, outcome: &'a CollectOutcome, refused: usize) -> JsonCollect<'a> {
    JsonCollect {
        schema_version: SCHEMA_VERSION,
        builder,
        refused,
        builds: &outcome.builds,
    }
}

/// One paragraph per build, oldest first; unrecorded builds are marked, and listed again at
/// the end.
fn text(builder: &str, outcome: &CollectOutcome) -> String {
    let mut out = String::new();
    if outcome.builds.is_empty() {
        let _ = writeln!(out, "builder `{}` keeps no finished builds", Term(builder));
        return out;
    }
    for collected in &outcome.builds {
        let b = &collected.build;
        let state = match (collected.new, collected.matched_by) {
            (_, HistoryMatch::Unrecorded) => "UNRECORDED",
            (true, _) => "matched",
            (false, _) => "known",
        };
        let _ = writeln!(
            out,
            "{} {state} ({}) {}",
            Term(&b.build_ref),
            collected.matched_by.as_str(),
            Term(&collected.run)
        );
        let _ = writeln!(
            out,
            "  {} .. {}  {}  {}/{} steps cached",
            time::format(b.created_at),
            time::format(b.completed_at),
            b.status.as_str(),
            b.cached_steps,
            b.total_steps
        );
        describe(&mut out, b);
        if collected.events > 0 {
            let _ = writeln!(
                out,
                "  appended {}",
                crate::report::count(collected.events, "event", "events")
            );
        }
    }
    let unrecorded: Vec<&CollectedBuild> = outcome
        .builds
        .iter()
        .filter(|b| b.matched_by == HistoryMatch::Unrecorded)
        .collect();
    if !unrecorded.is_empty() {
        let _ = writeln!(
            out,
            "\n{} no hook recorded (pipeline `{}`):",
            crate::report::count(unrecorded.len(), "build", "builds"),
            Term(&crate::store::unrecorded_pipeline(builder))
        );
        for b in unrecorded {
            let _ = writeln!(out, "  {}", Term(&b.run));
        }
    }
    out
}

fn describe(out: &mut String, b: &HistoryBuild) {
    let mut line = format!("  dockerfile {}", Term(&b.dockerfile));
    if let Some(target) = &b.target {
        let _ = write!(line, "  target {}", Term(target));
    }
    let _ = writeln!(out, "{line}");
    if !b.build_args.is_empty() {
        let args: Vec<String> = b
            .build_args
            .iter()
            .map(|(k, v)| format!("{}={}", Term(k), Term(v)))
            .collect();
        let _ = writeln!(out, "  build args {}", args.join(" "));
    }
    for import in &b.cache_imports {
        let _ = writeln!(out, "  cache import {}", Term(&import.display_name()));
    }
    if let Some(digest) = &b.cache_manifest {
        let _ = writeln!(out, "  cache export manifest {digest}");
    }
    for image in &b.images {
        let _ = writeln!(out, "  image {}", Term(&image.display_name()));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::model::RunStatus;

    /// Names a build's client chose cannot forge lines or drive the terminal in the listing.
    #[test]
    fn hostile_names_are_escaped_in_text() {
        let build = HistoryBuild {
            build_ref: "abc".into(),
            created_at: 0,
            completed_at: 1,
            status: RunStatus::Succeeded,
            frontend: String::new(),
            dockerfile: "Dockerfile\nabc matched (build-ref) release/1/Dockerfile".into(),
            target: Some("\u{1b}[2J".into()),
            build_args: BTreeMap::from([("K\r".into(), "\u{202e}v".into())]),
            build_args_dropped: 0,
            cache_imports: Vec::new(),
            images: Vec::new(),
            image_digest: None,
            cache_manifest: None,
            cached_steps: 0,
            total_steps: 0,
        };
        let outcome = CollectOutcome {
            builds: vec![CollectedBuild {
                build,
                matched_by: HistoryMatch::Unrecorded,
                run: "unrecorded@b/abc/x\ny".into(),
                new: true,
                events: 0,
            }],
            warnings: Vec::new(),
        };
        let out = text("b", &outcome);
        assert!(!out.contains('\u{1b}') && !out.contains('\r') && !out.contains('\u{202e}'));
        assert!(out.contains("Dockerfile\\nabc matched"), "{out}");
        assert!(out.contains("unrecorded@b/abc/x\\ny"), "{out}");
        assert!(
            out.contains("\\x1b[2J") && out.contains("K\\r=\\u{202e}v"),
            "{out}"
        );
    }
}
