//! `cachewarden db`: the store itself. `db migrate` is the one command whose only job is to
//! change the schema; read commands never do.

use std::path::Path;

use anyhow::Result;

use crate::ExitStatus;
use crate::cli::DbCommand;
use crate::printer::Printer;
use crate::store::{Migrated, Store};

pub fn db(command: &DbCommand, db: &Path, printer: Printer) -> Result<ExitStatus> {
    match command {
        DbCommand::Migrate => migrate(db, printer),
    }
}

/// Upgrades an existing store, saying from which schema version to which.
fn migrate(db: &Path, printer: Printer) -> Result<ExitStatus> {
    let Migrated { from, to } = Store::migrate_existing(db)?;
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
    Ok(ExitStatus::Success)
}
