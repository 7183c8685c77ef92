//! `cachewarden import FILE`: bulk provenance from JSON Lines, one transaction per batch.
//!
//! Each batch of lines is parsed, then written in one transaction: a bad line names its line
//! number and nothing of its batch is written (earlier batches stay).

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::time::Instant;

use anyhow::Result;

use crate::ExitStatus;
use crate::cli::ImportArgs;
use crate::commands::open_store;
use crate::config::Config;
use crate::error::InputError;
use crate::ingest::IngestError;
use crate::printer::Printer;
use crate::store::{ImportItem, Store};
use crate::wire::provenance::parse_line;

pub fn import(
    args: &ImportArgs,
    db: &Path,
    config: &Config,
    printer: Printer,
) -> Result<ExitStatus> {
    let source = args.file.display().to_string();
    let reader: Box<dyn BufRead> = if source == "-" {
        Box::new(BufReader::new(std::io::stdin().lock()))
    } else {
        let file = File::open(&args.file).map_err(|source_err| InputError::Read {
            path: source.clone(),
            source: source_err,
        })?;
        Box::new(BufReader::with_capacity(1 << 20, file))
    };
    let started = Instant::now();
    // Opened when the first batch is ready: input that is bad from its first batch on leaves
    // no store behind.
    let mut store: Option<Store> = None;
    let batch_size = args.batch_size.max(1);
    let (mut lines, mut events) = (0usize, 0usize);
    let mut batch: Vec<ImportItem> = Vec::with_capacity(batch_size);
    let mut first_line = 1;
    let mut commit = |batch: &mut Vec<ImportItem>, first_line: usize| -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let outcome = bulk_store(&mut store, db)?
            .import_batch(batch, first_line, config)
            .map_err(|err| match err {
                crate::store::StoreError::Input(message) => {
                    anyhow::Error::from(IngestError::new(&source, None, message))
                }
                other => other.into(),
            })?;
        events += outcome.events;
        for warning in outcome.warnings {
            printer.warn(format!("`{source}` {warning}"));
        }
        batch.clear();
        Ok(())
    };
    for (i, line) in reader.lines().enumerate() {
        let number = i + 1;
        let line = line.map_err(|err| IngestError::new(&source, Some(number), err.to_string()))?;
        if line.trim().is_empty() {
            continue;
        }
        let item = parse_line(&line)
            .map_err(|message| IngestError::new(&source, Some(number), message))?;
        if batch.is_empty() {
            first_line = number;
        }
        batch.push(item);
        lines += 1;
        if batch.len() == batch_size {
            commit(&mut batch, first_line)?;
        }
    }
    commit(&mut batch, first_line)?;
    let store = bulk_store(&mut store, db)?;
    store.bulk(false)?;
    store.optimize()?;
    let elapsed = started.elapsed();
    printer.status(format!(
        "imported {lines} lines ({events} events) from `{source}` in {:.2}s",
        elapsed.as_secs_f64()
    ));
    Ok(ExitStatus::Success)
}

/// The store, opened for a bulk import when first needed.
fn bulk_store<'s>(store: &'s mut Option<Store>, db: &Path) -> Result<&'s mut Store> {
    Ok(match store {
        Some(store) => store,
        None => {
            let mut fresh = open_store(db)?;
            fresh.bulk(true)?;
            store.insert(fresh)
        }
    })
}
