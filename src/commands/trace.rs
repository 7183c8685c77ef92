//! `cachewarden trace`: the blast radius of a compromise.

use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use indicatif::ProgressBar;

use crate::ExitStatus;
use crate::cli::TraceArgs;
use crate::commands::open_existing_store;
use crate::error::InputError;
use crate::graph::{self, Seeds, TraceError, TraceOptions};
use crate::printer::Printer;
use crate::report;
use crate::store::{SourceSummary, Store, TraceSource};

pub fn trace(args: &TraceArgs, db: &Path, printer: Printer) -> Result<ExitStatus> {
    let seeds = Seeds::from_args(&args.seeds)?;
    let mut store = open_existing_store(db)?;
    let started = Instant::now();
    let spinner = spinner(printer);
    let result = run_trace(&mut store, &seeds, args.ignore_time);
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
            report::trace::write_explain(&hops, &mut out)?;
        }
        None => report::trace::write(&trace, args.format, &mut out)?,
    }
    out.flush()?;
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
            "{} indexed queries, then the whole graph ({events} events) loaded in {:.2} s",
            summary.queries,
            load.as_secs_f64()
        ),
        None => format!("{} indexed queries", summary.queries),
    };
    let traversal = traced.saturating_sub(summary.loaded.map_or(Duration::ZERO, |(load, _)| load));
    format!(
        "trace: {reads}; {nodes} nodes traversed in {:.2} s; output written in {:.2} s",
        traversal.as_secs_f64(),
        written.as_secs_f64()
    )
}

/// Runs a trace on the store, turning an unknown seed into bad input.
pub(crate) fn run_trace(
    store: &mut Store,
    seeds: &Seeds,
    ignore_time: bool,
) -> Result<(graph::Trace, SourceSummary)> {
    let result = store.read_snapshot(|store| {
        let mut source = TraceSource::new(store)?;
        let trace = graph::trace(&mut source, seeds, TraceOptions { ignore_time })?;
        Ok((trace, source.summary()))
    })?;
    result.map_err(|err| match err {
        TraceError::UnknownSeed(message) => InputError::invalid(message).into(),
        TraceError::Source(err) => anyhow::Error::from(err),
    })
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
