//! `cachewarden db`: the store itself. `db migrate` is the one command whose only job is to
//! change the schema; read commands never do.

use std::path::Path;

use anyhow::Result;

use crate::ExitStatus;
use crate::cli::{DbCommand, GrantArgs, GrantRoleArg};
use crate::printer::Printer;
use crate::store::{GrantRole, Migrated, Store};

pub fn db(command: &DbCommand, db: &Path, printer: Printer) -> Result<ExitStatus> {
    match command {
        DbCommand::Migrate => migrate(db, printer),
        DbCommand::Grant(args) => grant(args, db, printer),
    }
}

/// Applies, or prints, the grants of a role.
fn grant(args: &GrantArgs, db: &Path, printer: Printer) -> Result<ExitStatus> {
    let kind = match args.role {
        GrantRoleArg::Hook => GrantRole::Hook,
        GrantRoleArg::Responder => GrantRole::Responder,
    };
    if args.print {
        let sql = crate::store::grant_sql(&args.name, kind)?;
        crate::commands::write_stdout(&format!("{};\n", sql.join(";\n")))?;
        return Ok(ExitStatus::Success);
    }
    Store::grant(db, &args.name, kind)?;
    printer.status(format!(
        "granted `{}` the {} role on `{}`",
        crate::report::escape::Term(&args.name),
        match kind {
            GrantRole::Hook => "hook",
            GrantRole::Responder => "responder",
        },
        crate::store::display_location(db)
    ));
    Ok(ExitStatus::Success)
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
