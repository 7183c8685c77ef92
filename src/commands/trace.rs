//! `cachewarden trace`: the blast radius of a compromise.

use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use indicatif::ProgressBar;

use crate::ExitStatus;
use crate::cli::{SeedArgs, TraceArgs, TraceFormat};
use crate::commands::open_read_store;
use crate::config::Config;
use crate::error::InputError;
use crate::graph::seeds::RunSeed;
use crate::graph::{self, ClaimLimits, SeedSpec, Seeds, Source, TraceError, TraceOptions, Unknown};
use crate::printer::Printer;
use crate::report;
use crate::report::count;
use crate::report::escape::Term;
use crate::store::{SourceSummary, Store, TraceSource};
use crate::suggest;
use crate::time::{self, Rfc3339};

/// The seed flags as the project's own seed type: what an incident stores, whatever the flags
/// are called.
pub(crate) fn seed_spec(args: &SeedArgs) -> SeedSpec {
    SeedSpec {
        pipelines: args.pipeline.clone(),
        runs: args.runs.clone(),
        cache_refs: args.cache_ref.clone(),
        mounts: args.mount.clone(),
        builders: args.builder.clone(),
        images: args.image.clone(),
        since: args.since.clone(),
        until: args.until.clone(),
        ..SeedSpec::default()
    }
}

/// The report's format for the command line's.
pub(crate) fn report_format(format: TraceFormat) -> report::trace::Format {
    match format {
        TraceFormat::Text => report::trace::Format::Text,
        TraceFormat::Json => report::trace::Format::Json,
        TraceFormat::Dot => report::trace::Format::Dot,
    }
}

/// How long before the collector received a run its writes may have been made, from the
/// collector's settings.
pub(crate) fn claim_limits(config: &Config) -> ClaimLimits {
    let server = &config.server;
    ClaimLimits {
        longest_run: time::seconds(server.max_run_seconds),
        token_life: time::seconds(server.token_life_seconds()),
        late_grace: time::seconds(server.late_grace_seconds),
        skew: time::seconds(server.clock_skew_seconds),
    }
}

pub fn trace(args: &TraceArgs, db: &Path, config: &Config, printer: Printer) -> Result<ExitStatus> {
    let seeds = Seeds::from_spec(&seed_spec(&args.seeds))?;
    let mut store = open_read_store(db)?;
    let started = Instant::now();
    let spinner = spinner(printer);
    let options = TraceOptions {
        ignore_time: args.ignore_time,
        ignore_purges: args.ignore_purges,
        // Only an explanation and the graph follow evidence from entity to entity.
        labels_only: args.explain.is_none() && !matches!(args.format, TraceFormat::Dot),
        claims: claim_limits(config),
    };
    let result = run_trace(&mut store, &seeds, options, config);
    spinner.finish_and_clear();
    let (trace, summary) = result?;
    let traced = started.elapsed();
    let mut out = BufWriter::new(std::io::stdout().lock());
    match &args.explain {
        Some(entity) => {
            let hops = trace
                .explain(entity)
                .ok_or_else(|| match trace.resolve(entity) {
                    Err(err) => InputError::invalid(err.to_string()),
                    Ok(_) => {
                        InputError::invalid(format!("no chain of evidence reaches `{entity}`"))
                    }
                })?;
            report::trace::write_explain(&hops, &mut out).map_err(super::stdout_error)?;
        }
        None => report::trace::write(&trace, report_format(args.format), &mut out)
            .map_err(super::stdout_error)?,
    }
    out.flush().map_err(super::stdout_error)?;
    if args.explain.is_none() {
        warn_tag_only(&mut store, &trace, printer);
        warn_engine_aliases(&store, &trace, config, printer);
    }
    let written = started.elapsed() - traced;
    printer.detail(timings(
        &summary,
        traced,
        written,
        trace.graph().node_count(),
    ));
    // The process ends next: freeing a large blast radius node by node would only delay it.
    std::mem::forget(trace);
    Ok(ExitStatus::Success)
}

/// Says when a builder the blast radius holds (tainted itself, or through a mount on it) is
/// one Docker Engine with another builder the store holds under another name (runs recorded
/// before the hook's config named the engine, or by hooks without it): a trace follows each
/// name apart, so builds under the other name that used the same mounts and records are not
/// in the blast radius.
pub(crate) fn warn_engine_aliases(
    store: &Store,
    trace: &graph::Trace,
    config: &Config,
    printer: Printer,
) {
    let places = match store.builder_places() {
        Ok(places) => places,
        Err(err) => {
            printer.warn(format!(
                "builders that are one engine under two names were not checked: {err}"
            ));
            return;
        }
    };
    // Each builder's engine: the config's endpoint for it, else the one first recorded.
    let engines: Vec<(String, String)> = places
        .into_iter()
        .filter(|(_, driver, _)| driver.as_deref().is_none_or(|d| d == "docker"))
        .filter_map(|(name, _, endpoint)| {
            let endpoint = config
                .builder(&name)
                .map(|b| b.endpoint.clone())
                .or(endpoint)?;
            Some((name, endpoint))
        })
        .collect();
    let mut tainted: std::collections::BTreeSet<&str> = std::collections::BTreeSet::new();
    for kind in [graph::Kind::Builder, graph::Kind::Mount] {
        for t in trace.tainted(kind) {
            match t.entity {
                graph::Entity::Builder(info) => tainted.insert(info.name.as_str()),
                graph::Entity::Mount(info) => tainted.insert(info.builder_name.as_str()),
                _ => continue,
            };
        }
    }
    for name in tainted {
        let Some((_, endpoint)) = engines.iter().find(|(n, _)| n == name) else {
            continue;
        };
        let others: Vec<&str> = engines
            .iter()
            .filter(|(n, e)| {
                n != name
                    && crate::ingest::builder::same_engine(e, endpoint)
                    && !on_other_machines((name, endpoint), (n, e))
            })
            .map(|(n, _)| n.as_str())
            .collect();
        if others.is_empty() {
            continue;
        }
        let named = report::some_names(others.iter().map(|o| Term(o)), 3);
        printer.warn(format!(
            "builder `{}` is one Docker Engine (`{}`) with {} {named}: a trace follows each name apart, so builds recorded under {} that used the same mounts and records are not in the blast radius (trace with `--builder` for {} too)",
            Term(name),
            Term(endpoint),
            if others.len() == 1 { "builder" } else { "builders" },
            if others.len() == 1 { "it" } else { "them" },
            if others.len() == 1 { "it" } else { "each" },
        ));
    }
}

/// Whether two builders named for the local sockets they were found at (`docker@HOST:/path`,
/// as a hook derives the name) are on two machines: one socket path on two runners is two
/// engines. A builder whose name does not say its machine (a config's) may be on either.
fn on_other_machines(a: (&str, &str), b: (&str, &str)) -> bool {
    matches!((machine_of(a), machine_of(b)), (Some(a), Some(b)) if a != b)
}

/// The machine in a builder's name when the name is the one a hook derives for its local
/// socket (`docker@HOST:/path`).
fn machine_of<'a>((name, endpoint): (&'a str, &str)) -> Option<&'a str> {
    let host = name.strip_prefix("docker@")?.split_once(':')?.0;
    let local = endpoint.starts_with("unix://") || endpoint.starts_with("npipe://");
    (local && crate::ingest::builder::name_for_endpoint(endpoint, host) == name).then_some(host)
}

/// How many tag-only refs a warning names before it only counts them.
const TAG_ONLY_SHOWN: usize = 3;

/// Says when a tainted registry ref is known by tag only and the store holds digests recorded
/// for its tag since it was tainted that the blast radius does not hold: runs that read those
/// digests may have read what the tainted run pushed, and are not reached through the tag.
pub(crate) fn warn_tag_only(store: &mut Store, trace: &graph::Trace, printer: Printer) {
    let missed = match tag_only_misses(store, trace) {
        Ok(missed) => missed,
        Err(err) => {
            printer.warn(format!("refs recorded by tag only were not checked: {err}"));
            return;
        }
    };
    let Some(first) = missed.first() else {
        return;
    };
    let named = report::some_names(missed.iter().map(|r| &r.name), TAG_ONLY_SHOWN);
    let (count, its) = match missed.len() {
        1 => ("1 tainted registry ref is".to_owned(), "its tag"),
        n => (format!("{n} tainted registry refs are"), "their tags"),
    };
    printer.warn(format!(
        "{count} recorded by tag only ({named}), and digests recorded for {its} since then are outside the blast radius: `trace --cache-ref {} --since {}` follows them",
        first.name,
        Rfc3339(first.tainted_at)
    ));
}

/// The tag-only refs whose tags have digests seen under them since they were tainted that the
/// trace did not reach.
fn tag_only_misses<'t>(
    store: &mut Store,
    trace: &'t graph::Trace,
) -> Result<Vec<graph::TagOnlyRef<'t>>, crate::store::StoreError> {
    let refs = trace.tag_only_refs();
    if refs.is_empty() {
        return Ok(refs);
    }
    let reached = trace.digests();
    let mut missed = Vec::new();
    for tag_only in refs {
        for tag in tag_only.tags {
            let since =
                store.artifacts_by_tag(tag_only.locator, tag, Some(tag_only.tainted_at), None)?;
            if since
                .iter()
                .any(|a| !a.digest.is_empty() && !reached.contains(a.digest.as_str()))
            {
                missed.push(tag_only);
                break;
            }
        }
    }
    Ok(missed)
}

/// A spinner on stderr while the trace runs (a fleet-wide trace takes seconds), when progress
/// shows.
fn spinner(printer: Printer) -> ProgressBar {
    if !printer.progress {
        return ProgressBar::hidden();
    }
    let spinner = ProgressBar::new_spinner().with_message("tracing the blast radius");
    spinner.enable_steady_tick(Duration::from_millis(100));
    spinner
}

/// Where a trace's time went, for `--verbose`.
fn timings(summary: &SourceSummary, traced: Duration, written: Duration, nodes: usize) -> String {
    let reads = match summary.loaded {
        Some((load, events)) => format!(
            "{}, then the whole graph ({}) loaded in {:.2} s",
            count(summary.queries, "indexed query", "indexed queries"),
            count(events, "event", "events"),
            load.as_secs_f64()
        ),
        None => count(summary.queries, "indexed query", "indexed queries"),
    };
    let traversal = traced.saturating_sub(summary.loaded.map_or(Duration::ZERO, |(load, _)| load));
    format!(
        "trace: {reads}; {} traversed in {:.2} s; output written in {:.2} s",
        count(nodes, "node", "nodes"),
        traversal.as_secs_f64(),
        written.as_secs_f64()
    )
}

/// Runs a trace on the store, turning an unknown seed into bad input. The record evidence of
/// runs at the config's lowest trust level is not taken as complete
/// ([`Store::doubt_records_at`]).
pub(crate) fn run_trace(
    store: &mut Store,
    seeds: &Seeds,
    options: TraceOptions,
    config: &Config,
) -> Result<(graph::Trace, SourceSummary)> {
    if let Some(lowest) = config.trust_levels().first() {
        store.doubt_records_at(lowest);
    }
    let result = store.read_snapshot(|store| {
        let mut source = TraceSource::new(store)?;
        let trace = graph::trace(&mut source, seeds, options)?;
        Ok((trace, source.summary()))
    })?;
    result.map_err(|err| match err {
        TraceError::UnknownSeed(unknown) => {
            // Suggestions are a help: a store that cannot give them does not hide the error.
            let hint = suggestions(store, &unknown).unwrap_or_default();
            InputError::invalid(format!("{unknown}{hint}")).into()
        }
        TraceError::Source(err) => anyhow::Error::from(err),
    })
}

/// `; did you mean ...?` with the recorded names closest to an unknown seed, or nothing.
pub(crate) fn suggestions(
    store: &Store,
    unknown: &Unknown,
) -> Result<String, crate::store::StoreError> {
    let (query, names) = match unknown {
        Unknown::Pipeline(name) => (name.as_str(), store.pipeline_names()?),
        Unknown::Builder(name) => (name.as_str(), store.builder_names()?),
        Unknown::Mount { builder, id } => (id.as_str(), store.mount_ids(builder)?),
        Unknown::Run(name) => {
            let pipeline = RunSeed::parse(name)
                .ok()
                .and_then(|seed| seed.readings.first().map(|r| r.pipeline.clone()));
            (name.as_str(), store.run_names(pipeline.as_deref())?)
        }
        Unknown::CacheRef { locator, tag } => {
            let names = store.cache_ref_names(locator)?;
            let query = format!("{locator}:{tag}");
            let found = suggest::closest(&query, names.iter().map(String::as_str));
            return Ok(suggest::did_you_mean(&found));
        }
    };
    let found = suggest::closest(query, names.iter().map(String::as_str));
    Ok(suggest::did_you_mean(&found))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timings_name_the_graph_load_and_leave_it_out_of_the_traversal() {
        let summary = SourceSummary {
            queries: 2000,
            loaded: Some((Duration::from_millis(1250), 5_000_000)),
        };
        let line = timings(
            &summary,
            Duration::from_millis(3000),
            Duration::from_millis(500),
            7,
        );
        assert_eq!(
            line,
            "trace: 2000 indexed queries, then the whole graph (5000000 events) loaded in 1.25 s; \
             7 nodes traversed in 1.75 s; output written in 0.50 s"
        );
        let lazy = timings(
            &SourceSummary {
                queries: 3,
                loaded: None,
            },
            Duration::from_millis(20),
            Duration::from_millis(10),
            4,
        );
        assert_eq!(
            lazy,
            "trace: 3 indexed queries; 4 nodes traversed in 0.02 s; output written in 0.01 s"
        );
    }
}
