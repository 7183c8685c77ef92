//! `cachewarden export`: the whole store, or some runs, as provenance JSON Lines.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{Context, Result};

use crate::ExitStatus;
use crate::cli::ExportArgs;
use crate::commands::open_read_store;
use crate::error::InputError;
use crate::graph::seeds::RunSeed;
use crate::graph::source::{RunId, Source};
use crate::report::escape;
use crate::store::{ExportError, Store};
use crate::wire::provenance::line_of;

pub fn export(args: &ExportArgs, db: &Path) -> Result<ExitStatus> {
    let mut store = open_read_store(db)?;
    // Resolved before anything is written: an unknown run leaves no file behind.
    let runs = if args.runs.is_empty() {
        None
    } else {
        Some(selected_runs(&mut store, &args.runs)?)
    };
    let (mut out, tmp): (
        Box<dyn Write>,
        Option<(std::path::PathBuf, std::path::PathBuf)>,
    ) = match &args.output {
        Some(path) => {
            // Write beside the target and rename, so a failed export leaves no half file.
            let tmp = path.with_extension("partial");
            let file =
                File::create(&tmp).with_context(|| format!("cannot create `{}`", tmp.display()))?;
            (Box::new(BufWriter::new(file)), Some((tmp, path.clone())))
        }
        None => (Box::new(BufWriter::new(std::io::stdout().lock())), None),
    };
    let result = store.export_selected(runs.as_deref(), |item| {
        let line = serde_json::to_string(&line_of(&item)).map_err(std::io::Error::other)?;
        out.write_all(line.as_bytes())?;
        out.write_all(b"\n")
    });
    let result = result.and_then(|()| out.flush().map_err(ExportError::from));
    drop(out);
    match (result, tmp) {
        (Ok(()), Some((tmp, path))) => {
            std::fs::rename(&tmp, &path)
                .with_context(|| format!("cannot write `{}`", path.display()))?;
        }
        (Ok(()), None) => {}
        (Err(err), tmp) => {
            if let Some((tmp, _)) = tmp {
                let _ = std::fs::remove_file(tmp);
            }
            return Err(match err {
                ExportError::Store(e) => e.into(),
                ExportError::Io(e) => e.into(),
            });
        }
    }
    Ok(ExitStatus::Success)
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
