//! `cachewarden import FILE`: bulk provenance from JSON Lines, one transaction per batch.
//!
//! Each batch of lines is parsed, then written in one transaction: a bad line names its line
//! number and nothing of its batch is written (earlier batches stay). Lines are read streamed
//! and bounded (`model::limits`): a line over 1 MiB is refused without being held whole.
//!
//! Where no SQLite store is yet, the import builds one beside the path and puts it in place
//! when it ends ([`BulkTarget`]).

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::sync::mpsc::SyncSender;
use std::time::Instant;

use anyhow::Result;

use crate::ExitStatus;
use crate::cli::ImportArgs;
use crate::commands::open_store;
use crate::config::Config;
use crate::error::InputError;
use crate::graph::seeds::RunSeed;
use crate::ingest::IngestError;
use crate::model::{ParseError, RunRecord, limits};
use crate::printer::Printer;
use crate::report::escape::Quoted;
use crate::store::{BulkTarget, BulkWrite, ImportCache, ImportItem, StoreError};
use crate::time::Micros;
use crate::wire::provenance::{parse_line, parse_stored_line};

/// How many items a batch reserves room for up front; a larger batch grows as it fills.
const PREALLOCATED: usize = 4096;

pub fn import(
    args: &ImportArgs,
    db: &Path,
    config: &Config,
    printer: Printer,
) -> Result<ExitStatus> {
    if let Some(level) = &args.trust_level
        && config.trust_rank(level).is_none()
    {
        return Err(ParseError::new(
            "--trust-level",
            level,
            format!(
                "not one of the configured levels: {}",
                config.trust_levels().join(", ")
            ),
        )
        .into());
    }
    let bound = args
        .runs
        .iter()
        .map(|name| RunSeed::parse(name))
        .collect::<Result<Vec<_>, _>>()?;
    let source = args.file.display().to_string();
    let reader: Box<dyn BufRead + Send> = if source == "-" {
        Box::new(BufReader::new(std::io::stdin()))
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
    let mut store: Option<BulkTarget> = None;
    let batch_size = args.batch_size;
    let (mut lines, mut events) = (0usize, 0usize);
    let mut known = match args.trust_level {
        Some(_) => ImportCache::upload(),
        None => ImportCache::default(),
    };
    let mut commit = |batch: &[ImportItem], first_line: usize| -> Result<()> {
        let target = match &mut store {
            Some(target) => target,
            None => store.insert(bulk_target(db, printer)?),
        };
        let outcome = target
            .store()
            .import_batch_cached(batch, first_line, config, &mut known)
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
        Ok(())
    };
    // One thread reads and parses the next batch while this one writes the last: batches
    // are written in order, and a bad line stops the import after the batches before its own.
    // The receiver is dropped before the scope joins the reader: a write that fails stops
    // the reader at its next batch.
    let read = std::thread::scope(|scope| -> Result<()> {
        let (sender, batches) = std::sync::mpsc::sync_channel(1);
        let parse = Batches {
            source: &source,
            trust_level: args.trust_level.as_deref(),
            stored_names: args.stored_names,
            bound: &bound,
            purges: args.purges,
            now: crate::time::now(),
            config,
            batch_size,
        };
        scope.spawn(move || parse.send(reader, &sender));
        for batch in &batches {
            let (first_line, batch) = batch?;
            commit(&batch, first_line)?;
            lines += batch.len();
        }
        Ok(())
    });
    // The batches before a bad line stay, in a store built by this import as in one that was
    // there; after the store's own trouble, a store built by this import is not put in place.
    if let Err(err) = &read
        && err.downcast_ref::<crate::store::StoreError>().is_some()
    {
        return read.map(|()| ExitStatus::Success);
    }
    let target = match store.take() {
        Some(target) => target,
        None if read.is_err() => return read.map(|()| ExitStatus::Success),
        // Input with no lines still leaves a store.
        None => bulk_target(db, printer)?,
    };
    // Bulk mode ends (a built store, opened anew at its path, has nothing of it to undo).
    let finished = target
        .finish()
        .and_then(|mut store| store.bulk(false).map(|()| store));
    let mut store = match finished {
        Ok(store) => store,
        Err(err) => {
            // The bad line is still news, told before the store's own trouble.
            if let Err(bad) = &read {
                printer.warn(format!("{bad:#}"));
            }
            return Err(err.into());
        }
    };
    read?;
    store.optimize()?;
    let elapsed = started.elapsed();
    printer.status(format!(
        "imported {} ({}) from `{source}` in {:.2}s",
        crate::report::count(lines, "line", "lines"),
        crate::report::count(events, "event", "events"),
        elapsed.as_secs_f64()
    ));
    // The head to keep outside the store (`verify-log --head`), with `-v`.
    let chain = store.chain_head()?;
    printer.detail(format!(
        "run chain: {}, head {}",
        crate::report::count(
            usize::try_from(chain.length).unwrap_or(0),
            "entry",
            "entries"
        ),
        chain.head
    ));
    Ok(ExitStatus::Success)
}

/// Reads and parses lines into batches.
struct Batches<'a> {
    source: &'a str,
    trust_level: Option<&'a str>,
    /// Names are taken as a store's own export holds them (`--stored-names`).
    stored_names: bool,
    /// An upload's own runs (`--run`): its run and pipeline lines name one of them.
    bound: &'a [RunSeed],
    /// Purge lines are recorded (`--purges`), else refused.
    purges: bool,
    /// When the import started: a purge after it (beyond the clock skew allowed) is refused,
    /// and so is an upload's run (`--trust-level`) that starts or finishes after it.
    now: Micros,
    config: &'a Config,
    batch_size: usize,
}

impl Batches<'_> {
    /// Sends each batch with the number of its first line; after a bad line, the error, and
    /// nothing more. Stops when the receiver is gone.
    fn send(
        &self,
        mut reader: Box<dyn BufRead + Send>,
        sender: &SyncSender<Result<(usize, Vec<ImportItem>)>>,
    ) {
        // Grown as lines come: a large batch size is no reason to reserve it all up front.
        let capacity = self.batch_size.min(PREALLOCATED);
        let mut batch = Vec::with_capacity(capacity);
        let mut first_line = 1;
        let mut buf = Vec::new();
        let mut number = 0;
        loop {
            number += 1;
            let item = match self.next(&mut reader, &mut buf, number) {
                Ok(Some(Some(item))) => item,
                Ok(Some(None)) => continue,
                Ok(None) => break,
                Err(err) => {
                    // The batches before the bad line are written; its own is not.
                    let _ = sender.send(Err(err));
                    return;
                }
            };
            if batch.is_empty() {
                first_line = number;
            }
            batch.push(item);
            if batch.len() == self.batch_size {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(capacity));
                if sender.send(Ok((first_line, full))).is_err() {
                    return;
                }
            }
        }
        if !batch.is_empty() {
            let _ = sender.send(Ok((first_line, batch)));
        }
    }

    /// Line `number`: `None` at the end, `Some(None)` for a blank line.
    fn next(
        &self,
        reader: &mut dyn BufRead,
        buf: &mut Vec<u8>,
        number: usize,
    ) -> Result<Option<Option<ImportItem>>> {
        let at_line = |message: String| IngestError::new(self.source, Some(number), message);
        match next_line(reader, buf).map_err(|err| at_line(err.to_string()))? {
            Next::End => return Ok(None),
            Next::Line => {}
            Next::TooLong => {
                return Err(at_line(format!(
                    "the line is over the limit of {} bytes",
                    limits::LINE_BYTES
                ))
                .into());
            }
        }
        let line = std::str::from_utf8(buf)
            .map_err(|_| at_line("stream did not contain valid UTF-8".to_owned()))?;
        if line.trim().is_empty() {
            return Ok(Some(None));
        }
        // A file is held to the names every hook records now, unless it is a store's own
        // export, which keeps the ones it held.
        let parsed = if self.stored_names {
            parse_stored_line(line)
        } else {
            parse_line(line).map_err(|err| {
                if self.trust_level.is_none() && parse_stored_line(line).is_ok() {
                    format!(
                        "{err} (a store's own export holding names recorded before they were \
                         refused imports with --stored-names)"
                    )
                } else {
                    err
                }
            })
        };
        let mut item = parsed.map_err(at_line)?;
        if let ImportItem::Purge { at, .. } = &item {
            self.check_purge(*at).map_err(at_line)?;
        }
        if let Some(level) = self.trust_level {
            self.check_bound(&item).map_err(at_line)?;
            if let ImportItem::Run(run) = &item {
                self.check_upload_times(run).map_err(at_line)?;
                crate::wire::provenance::sent_caches_named_by_key(run).map_err(at_line)?;
            }
            cap_trust(&mut item, level, self.config);
        }
        Ok(Some(Some(item)))
    }
}

impl Batches<'_> {
    /// Why a purge line at `at` is not recorded, if it is not: a purge narrows every later
    /// trace, so only a store's export (`--purges`) brings them, and none is dated after the
    /// import began, as `mark-purged` refuses one.
    fn check_purge(&self, at: Micros) -> Result<(), String> {
        if !self.purges {
            return Err(
                "a purge line: a CI job's upload never carries one, and a purge narrows \
                        every later trace (import a store's export with --purges)"
                    .to_owned(),
            );
        }
        if self.config.purge.in_future(at, self.now) {
            return Err(format!(
                "a purge at `{}`, in the future (the import began at {}, clock skew allowed \
                 {}s): a purge is recorded once it is done",
                crate::time::format(at),
                crate::time::format(self.now),
                self.config.purge.clock_skew_seconds
            ));
        }
        Ok(())
    }
}

impl Batches<'_> {
    /// Why a line of an upload (`--trust-level`) is not recorded, if it is not: a run line of
    /// a run `--run` does not name, or a pipeline line of a pipeline it does not name.
    fn check_bound(&self, item: &ImportItem) -> Result<(), String> {
        let readings = || self.bound.iter().flat_map(|seed| &seed.readings);
        let (what, name) = match item {
            ImportItem::Run(run) => {
                let ours = readings().any(|key| {
                    key.pipeline == run.pipeline.name
                        && key.run_id == run.run_id
                        && key.step.as_ref().is_none_or(|step| *step == run.step)
                });
                if ours {
                    return Ok(());
                }
                let name = crate::model::run_name(&run.pipeline.name, &run.run_id, &run.step);
                ("run", name)
            }
            ImportItem::Pipeline(pipeline) => {
                if readings().any(|key| key.pipeline == pipeline.name) {
                    return Ok(());
                }
                (
                    "pipeline",
                    crate::model::encode_component(&pipeline.name).into_owned(),
                )
            }
            _ => return Ok(()),
        };
        let named: Vec<String> = (self.bound.iter())
            .map(|seed| Quoted(&seed.name).to_string())
            .collect();
        Err(format!(
            "{what} {} is not the upload's own (`--run` names {}): a job's upload records its \
             own runs, no other",
            Quoted(&name),
            named.join(", ")
        ))
    }

    /// Why a run of an upload (`--trust-level`) is not recorded, if it is not: it is dated
    /// after the import began (beyond the clock skew allowed, as for a purge). An upload is
    /// written after its run, so such a time is made up, and a write dated in the future is
    /// hidden from every trace until then, and makes every purge of its mount before then need
    /// `--force`. A store's export (a plain import) keeps its times: they are the store's own.
    fn check_upload_times(&self, run: &RunRecord) -> Result<(), String> {
        for (field, at) in [
            ("started_at", run.started_at),
            ("finished_at", run.finished_at),
        ] {
            if self.config.purge.in_future(at, self.now) {
                return Err(format!(
                    "run {} has {field} `{}`, in the future (the import began at {}, clock \
                     skew allowed {}s): an upload is written after its run",
                    Quoted(&crate::model::run_name(
                        &run.pipeline.name,
                        &run.run_id,
                        &run.step
                    )),
                    crate::time::format(at),
                    crate::time::format(self.now),
                    self.config.purge.clock_skew_seconds
                ));
            }
        }
        Ok(())
    }
}

/// Lowers what a line says about trust to at most `cap`: a run's level (a run that names none
/// would take its pipeline's ceiling, so it gets `cap`), and a pipeline's level, which becomes
/// its ceiling when the config names none. A level the config does not know counts as above.
/// A builder's driver and endpoint are dropped: the first ones recorded are kept for good, and
/// purges and verify reach the builder by them.
fn cap_trust(item: &mut ImportItem, cap: &str, config: &Config) {
    let cap_rank = config.trust_rank(cap);
    let above = |level: &str| match (config.trust_rank(level), cap_rank) {
        (Some(rank), Some(cap_rank)) => rank > cap_rank,
        _ => level != cap,
    };
    let lower = |level: &mut Option<String>| {
        if level.as_deref().is_some_and(above) {
            *level = Some(cap.to_owned());
        }
    };
    match item {
        ImportItem::Run(run) => {
            if run.trust_level.is_none() {
                run.trust_level = Some(cap.to_owned());
            }
            lower(&mut run.trust_level);
            lower(&mut run.pipeline.trust_level);
            run.pipeline.project = None;
            // What it says of records other runs share stays within what it could have seen.
            if let Some(records) = &mut run.records {
                records.bound_to(run.finished_at);
            }
        }
        // An upload names a pipeline's project nowhere: the first one recorded stays for good,
        // and sweeps and audits select by it.
        ImportItem::Pipeline(pipeline) => {
            pipeline.project = None;
            lower(&mut pipeline.trust_level);
        }
        // A run line names its builder only; a builder line says how to reach it.
        ImportItem::Builder(builder) => crate::model::forget_how_to_reach(builder),
        ImportItem::Purge { .. } => {}
    }
}

/// What [`next_line`] read.
enum Next {
    Line,
    /// The line is longer than [`limits::LINE_BYTES`]: only that much of it was read.
    TooLong,
    End,
}

/// Reads the next line into `buf`, without its line ending, holding at most
/// [`limits::LINE_BYTES`] of it: a 300 MB line is refused after its first MiB, never read whole.
fn next_line(reader: &mut (impl BufRead + ?Sized), buf: &mut Vec<u8>) -> std::io::Result<Next> {
    buf.clear();
    let mut read_any = false;
    loop {
        let available = match reader.fill_buf() {
            Ok(available) => available,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        if available.is_empty() {
            return Ok(if read_any { Next::Line } else { Next::End });
        }
        read_any = true;
        let (chunk, used, ended) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..i], i + 1, true),
            None => (available, available.len(), false),
        };
        // One byte over is allowed for the `\r` of a CRLF ending, checked below.
        if buf.len() + chunk.len() > limits::LINE_BYTES + 1 {
            return Ok(Next::TooLong);
        }
        buf.extend_from_slice(chunk);
        reader.consume(used);
        if ended {
            break;
        }
    }
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    if buf.len() > limits::LINE_BYTES {
        return Ok(Next::TooLong);
    }
    Ok(Next::Line)
}

/// The store an import writes into, opened for a bulk import when nothing is to be built.
fn bulk_target(db: &Path, printer: Printer) -> Result<BulkTarget, StoreError> {
    let target = BulkTarget::open(db, BulkWrite::Import, || {
        let mut store = open_store(db)?;
        store.bulk(true)?;
        Ok(store)
    })?;
    super::warn_leftovers(db, printer);
    Ok(target)
}

#[cfg(test)]
mod tests {
    use std::io::{BufReader, Read};

    use super::*;

    /// A line that never ends (an endless stream of bytes) is refused after its first MiB:
    /// reading it whole would never finish.
    #[test]
    fn an_endless_line_is_refused_without_reading_it_whole() {
        let mut reader = BufReader::new(std::io::repeat(b'x'));
        let mut buf = Vec::new();
        assert!(matches!(
            next_line(&mut reader, &mut buf).unwrap(),
            Next::TooLong
        ));
        assert!(buf.len() <= limits::LINE_BYTES + 1);
    }

    /// Lines end at `\n` or `\r\n`, the last one with or without an ending, and a line of
    /// exactly the limit is read.
    #[test]
    fn lines_are_read_up_to_the_limit() {
        let exact = "y".repeat(limits::LINE_BYTES);
        let text = format!("a\r\nb\n{exact}\r\n{exact}y\nlast");
        let mut reader = BufReader::with_capacity(1000, text.as_bytes());
        let mut buf = Vec::new();
        let mut lines = Vec::new();
        loop {
            match next_line(&mut reader, &mut buf).unwrap() {
                Next::End => break,
                Next::Line => lines.push(String::from_utf8(buf.clone()).unwrap()),
                Next::TooLong => {
                    lines.push("too long".to_owned());
                    // No more than the limit and a line ending is read: the import stops here.
                    let mut rest = String::new();
                    reader.read_to_string(&mut rest).unwrap();
                    assert!(rest.ends_with("last"), "{rest}");
                    break;
                }
            }
        }
        assert_eq!(lines, ["a", "b", exact.as_str(), "too long"]);
    }
}
