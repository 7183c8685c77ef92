//! `cachewarden trace`: the blast radius of a compromise.

use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::Result;

use crate::ExitStatus;
use crate::cli::TraceArgs;
use crate::commands::open_existing_store;
use crate::error::InputError;
use crate::graph::{self, Seeds, TraceError, TraceOptions};
use crate::report;
use crate::store::{Store, TraceSource};

pub fn trace(args: &TraceArgs, db: &Path) -> Result<ExitStatus> {
    let seeds = Seeds::from_args(&args.seeds)?;
    let mut store = open_existing_store(db)?;
    let trace = run_trace(&mut store, &seeds, args.ignore_time)?;
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
    // The process ends next: freeing a large blast radius node by node would only delay it.
    std::mem::forget(trace);
    Ok(ExitStatus::Success)
}

/// Runs a trace on the store, turning an unknown seed into bad input.
pub(crate) fn run_trace(
    store: &mut Store,
    seeds: &Seeds,
    ignore_time: bool,
) -> Result<graph::Trace> {
    let result = store.read_snapshot(|store| {
        let mut source = TraceSource::new(store)?;
        graph::trace(&mut source, seeds, TraceOptions { ignore_time })
    })?;
    result.map_err(|err| match err {
        TraceError::UnknownSeed(message) => InputError::invalid(message).into(),
        TraceError::Source(err) => anyhow::Error::from(err),
    })
}
