//! One file per command; [`dispatch`] resolves the global settings and picks the command.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::ExitStatus;
use crate::cli::{Cli, Command};
use crate::config::{self, Config};
use crate::error::InputError;
use crate::printer::Printer;
use crate::store::{BulkTarget, Store, StoreError};

mod audit;
mod audit_builds;
mod audit_mounts;
pub(crate) mod bench;
mod check;
mod collect;
mod db;
mod export;
mod import;
mod incident;
mod journal;
mod ls;
mod mark_purged;
mod output;
pub mod record;
mod send;
mod serve;
mod sweep;
pub(crate) mod trace;
mod verify_log;
mod wrap;

pub async fn dispatch(cli: Cli, printer: Printer) -> Result<ExitStatus> {
    let config = Config::load(cli.global.config.as_deref())?;
    crate::store::configure(&config.store);
    let db = db_path(cli.global.db.as_deref())?;
    match cli.command {
        Command::Record(args) => record::record(args, &db, &config, printer).await,
        Command::Wrap(args) => wrap::wrap(args, &db, &config, printer).await,
        Command::Import(args) => import::import(&args, &db, &config, printer),
        Command::Export(args) => export::export(&args, &db),
        Command::Trace(args) => trace::trace(&args, &db, &config, printer),
        Command::Ls(args) => ls::ls(&args, &db, printer),
        Command::Check(args) => check::check(&args, &db, &config, printer).await,
        Command::Incident(command) => incident::incident(command, &db, &config, printer).await,
        Command::MarkPurged(args) => mark_purged::mark_purged(&args, &db, &config, printer),
        Command::Collect(args) => collect::collect(&args, &db, &config, printer).await,
        Command::Sweep(args) => sweep::sweep(&args, &db, &config, printer).await,
        Command::Audit(command) => audit::audit(command, &db, &config, printer).await,
        Command::Db(command) => db::db(&command, &db, printer),
        Command::Flush(args) => send::flush(&args, printer).await,
        Command::Serve(args) => serve::serve(&args, &db, config, printer).await,
        Command::VerifyLog(args) => verify_log::verify_log(&args, &db),
        Command::Bench(args) => bench::bench(args, printer),
    }
}

/// `--db`, then `CACHEWARDEN_DB` (both through clap), then the XDG data directory.
/// A `postgresql://` or `postgres://` URL names a PostgreSQL store and is kept as it is; a
/// value that reads as a URL of another scheme is refused rather than taken as a relative path,
/// which would create a directory named after the scheme. No URL is echoed: it may hold a
/// password.
fn db_path(explicit: Option<&Path>) -> Result<PathBuf> {
    match explicit {
        Some(path) => {
            if let Some(text) = path.to_str() {
                crate::store::postgres::connect::classify(text)
                    .map_err(|err| InputError::invalid(err.to_string()))?;
            }
            Ok(path.to_path_buf())
        }
        None => config::default_db_path().ok_or_else(|| {
            InputError::invalid(
                "no database path: pass --db or set CACHEWARDEN_DB (HOME is not set)",
            )
            .into()
        }),
    }
}

/// Warns of each building file beside the store at `path` that an import or copy left
/// unfinished ([`BulkTarget::leftovers`]): nothing reads it, and it can be large.
fn warn_leftovers(path: &Path, printer: Printer) {
    for (file, size) in BulkTarget::leftovers(path) {
        printer.warn(format!(
            "`{}` ({}) is a store an import or copy into `{}` left unfinished: nothing reads it; \
             delete it to free the space",
            file.display(),
            indicatif::HumanBytes(size),
            path.display()
        ));
    }
}

/// The store for a command that records: created when missing, migrated when older.
pub(crate) fn open_store(path: &Path) -> Result<Store, StoreError> {
    Store::open(path)
}

/// The store for a command that writes to recorded history: it must exist; migrated when
/// older.
pub(crate) fn open_existing_store(path: &Path) -> Result<Store, StoreError> {
    Store::open_existing(path)
}

/// The store for a command that only reads: never created, migrated or written.
pub(crate) fn open_read_store(path: &Path) -> Result<Store, StoreError> {
    Store::open_read_only(path)
}

/// Writes data to stdout; a closed pipe surfaces as an io error the caller ends quietly on.
pub(crate) fn write_stdout(text: &str) -> Result<(), InputError> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(stdout_error)
}

/// A failed write to standard output (a full disk behind a redirection, say), as an output
/// that cannot be written (exit 2); a closed pipe inside it still ends the command quietly.
pub(crate) fn stdout_error(source: std::io::Error) -> InputError {
    InputError::Write {
        path: "standard output".to_owned(),
        source,
    }
}
