//! `cachewarden export`: the whole store, or some runs, as provenance JSON Lines.

use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::Result;

use crate::ExitStatus;
use crate::cli::ExportArgs;
use crate::commands::open_read_store;
use crate::commands::output::Output;
use crate::error::InputError;
use crate::graph::seeds::RunSeed;
use crate::graph::source::{RunId, Source};
use crate::report::escape;
use crate::store::{ExportError, ExportItem, Store};
use crate::wire::provenance::line_of;

pub fn export(args: &ExportArgs, db: &Path) -> Result<ExitStatus> {
    let mut store = open_read_store(db)?;
    // Resolved before anything is written: an unknown run leaves no file behind.
    let runs = if args.runs.is_empty() {
        None
    } else {
        Some(selected_runs(&mut store, &args.runs)?)
    };
    let Some(path) = &args.output else {
        let mut out = BufWriter::new(std::io::stdout().lock());
        store
            .export_selected(runs.as_deref(), |item| write_line(&mut out, &item))
            .and_then(|()| out.flush().map_err(ExportError::from))
            .map_err(export_error)?;
        return Ok(ExitStatus::Success);
    };
    // Written whole or not at all: a failed export leaves no half file.
    let mut out = Output::create(path, db)?;
    match store.export_selected(runs.as_deref(), |item| write_line(&mut out, &item)) {
        Ok(()) => out.finish()?,
        Err(ExportError::Io(err)) => return Err(out.error(err).into()),
        Err(err) => return Err(export_error(err)),
    }
    Ok(ExitStatus::Success)
}

/// Writes one item as a line of JSON.
fn write_line(out: &mut impl Write, item: &ExportItem) -> std::io::Result<()> {
    let line = crate::report::json::to_string(&line_of(item)).map_err(std::io::Error::other)?;
    out.write_all(line.as_bytes())?;
    out.write_all(b"\n")
}

/// A failed export to standard output.
fn export_error(err: ExportError) -> anyhow::Error {
    match err {
        ExportError::Store(e) => e.into(),
        ExportError::Io(e) => super::stdout_error(e).into(),
    }
}

/// The stored runs each name reads as (every reading `trace --run` seeds); a name that reads
/// as no stored run is bad input.
fn selected_runs(store: &mut Store, names: &[String]) -> Result<Vec<RunId>> {
    let mut ids = Vec::new();
    for name in names {
        let seed = RunSeed::parse(name)?;
        let before = ids.len();
        for reading in &seed.readings {
            ids.extend(store.runs_by_key(reading)?.into_iter().map(|run| run.id));
        }
        if ids.len() == before {
            return Err(InputError::invalid(format!(
                "no run `{}` in the store",
                escape::Term(name)
            ))
            .into());
        }
    }
    Ok(ids)
}
