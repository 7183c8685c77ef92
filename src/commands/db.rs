//! `cachewarden db`: the store itself. `db migrate` is the one command whose only job is to
//! change the schema; read commands never do. `db copy` moves a whole store to another, on
//! either engine.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};

use crate::ExitStatus;
use crate::cli::{DbCommand, DbCopyArgs, GrantArgs, GrantRoleArg};
use crate::error::InputError;
use crate::printer::Printer;
use crate::store::postgres::connect::{Location, classify};
use crate::store::{
    BulkTarget, BulkWrite, CopyReporter, GrantRole, Migrated, Store, StoreError, display_location,
};

pub fn db(command: &DbCommand, db: &Path, printer: Printer) -> Result<ExitStatus> {
    match command {
        DbCommand::Migrate => migrate(db, printer),
        DbCommand::Grant(args) => grant(args, db, printer),
        DbCommand::Copy(args) => copy(args, db, printer),
    }
}

/// Applies, or prints, the grants of a role.
fn grant(args: &GrantArgs, db: &Path, printer: Printer) -> Result<ExitStatus> {
    let kind = match args.role {
        GrantRoleArg::Hook => GrantRole::Hook,
        GrantRoleArg::Collector => GrantRole::Collector,
        GrantRoleArg::Responder => GrantRole::Responder,
    };
    if args.print {
        let sql = crate::store::grant_sql(&args.name, kind, &args.schema)?;
        crate::commands::write_stdout(&format!("{};\n", sql.join(";\n")))?;
        return Ok(ExitStatus::Success);
    }
    Store::grant(db, &args.name, kind)?;
    printer.status(format!(
        "granted `{}` the {} role on `{}`",
        crate::report::escape::Term(&args.name),
        match kind {
            GrantRole::Hook => "hook",
            GrantRole::Collector => "collector",
            GrantRole::Responder => "responder",
        },
        crate::store::display_location(db)
    ));
    Ok(ExitStatus::Success)
}

/// Upgrades an existing store, saying from which schema version to which.
fn migrate(db: &Path, printer: Printer) -> Result<ExitStatus> {
    let Migrated {
        from,
        to,
        collectors,
    } = Store::migrate_existing(db)?;
    let db = crate::store::display_location(db);
    if from == to {
        printer.status(format!(
            "`{}` is at schema version {to}, this cachewarden's: nothing to migrate",
            db
        ));
    } else {
        printer.status(format!(
            "migrated `{}` from schema version {from} to {to}",
            db
        ));
    }
    if !collectors.is_empty() {
        let names: Vec<String> = collectors
            .iter()
            .map(|name| format!("`{}`", crate::report::escape::Term(name)))
            .collect();
        let message = format!(
            "{} may add receipts as a collector does: run `cachewarden db grant NAME --role \
             hook` for each that is a hook (a hook granted before schema version 12 keeps that \
             right until then)",
            names.join(", ")
        );
        if from < to {
            printer.warn(message);
        } else {
            printer.status(message);
        }
    }
    Ok(ExitStatus::Success)
}

/// Copies the store at `db` into the empty store `args.to`.
fn copy(args: &DbCopyArgs, db: &Path, printer: Printer) -> Result<ExitStatus> {
    let dest = &args.to;
    let location = dest
        .to_str()
        .map(classify)
        .transpose()
        .map_err(|err| InputError::invalid(format!("--to: {err}")))?;
    let mut source = Store::open_read_only(db)?;
    let started = Instant::now();
    let mut created = None;
    let mut target = match location {
        Some(Location::Postgres(_)) => BulkTarget::There(open_postgres_dest(dest, printer)?),
        // Where no store is, the copy is built beside the path and put in place whole.
        _ => BulkTarget::open(dest, BulkWrite::Copy, || {
            created = (!dest.exists()).then(|| dest.clone());
            Store::open(dest)
        })?,
    };
    super::warn_leftovers(dest, printer);
    let reporter = Reporter::new(printer);
    let copied = match source.copy_to(target.store(), &reporter) {
        Ok(summary) => target.finish().map(|_| summary),
        Err(err) => {
            drop(target);
            Err(err)
        }
    };
    reporter.bar.finish_and_clear();
    let summary = match copied {
        Ok(summary) => summary,
        Err(err) => {
            // A file this command created is removed again: the copy left nothing in it.
            if let Some(path) = created {
                remove_store_file(&path);
            }
            return Err(err.into());
        }
    };
    printer.status(format!(
        "copied {} rows in {} tables from `{}` to `{}` ({}) in {:.2} s",
        summary.rows(),
        summary.tables.len(),
        display_location(db),
        display_location(dest),
        summary.method,
        started.elapsed().as_secs_f64()
    ));
    Ok(ExitStatus::Success)
}

/// A PostgreSQL DEST, given the schema first when it has none.
fn open_postgres_dest(dest: &Path, printer: Printer) -> Result<Store, StoreError> {
    match Store::open_existing(dest) {
        Err(StoreError::NoSchema { .. }) => {
            let Migrated { to, .. } = Store::migrate_existing(dest)?;
            printer.status(format!(
                "created schema version {to} in `{}`",
                display_location(dest)
            ));
            Store::open_existing(dest)
        }
        result => result,
    }
}

/// Removes an SQLite file and the files SQLite keeps beside it.
fn remove_store_file(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(name));
    }
}

/// A line per table on stderr, and a bar while a table is copied when progress shows.
struct Reporter {
    printer: Printer,
    bar: ProgressBar,
    rows: Cell<u64>,
}

impl Reporter {
    fn new(printer: Printer) -> Self {
        let bar = if printer.progress {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template("{msg:>24} [{bar:30}] {pos}/{len} rows")
                    .expect("a valid template")
                    .progress_chars("=> "),
            );
            bar
        } else {
            ProgressBar::hidden()
        };
        Self {
            printer,
            bar,
            rows: Cell::new(0),
        }
    }
}

impl CopyReporter for Reporter {
    fn table_started(&self, table: &str, rows: u64) {
        self.rows.set(0);
        self.bar.reset();
        self.bar.set_length(rows);
        self.bar.set_message(table.to_owned());
    }

    fn rows_copied(&self, rows: u64) {
        self.rows.set(self.rows.get() + rows);
        self.bar.inc(rows);
    }

    fn table_done(&self, table: &str, rows: u64, elapsed: Duration) {
        self.bar.suspend(|| {
            self.printer.status(format!(
                "copied `{table}`: {rows} rows in {:.2} s",
                elapsed.as_secs_f64()
            ));
        });
    }
}
