//! A store on PostgreSQL: opening it, its schema version, and `db migrate`.
//!
//! Only `cachewarden db migrate`, run by the schema's owner, changes the schema: every other
//! command checks the version and goes on, or refuses. Migrations are additive, so a store
//! migrated by a newer release stays writable by this one as long as the newer release says so
//! (`schema_version.writable_by`): a fleet's hooks keep recording during a rolling upgrade.

use std::path::{Path, PathBuf};

use super::db::{Db, DbError, PgConn};
use super::postgres::connect::{Location, PgUrl, Timeouts};
use super::{Access, Migrated, Store, StoreError};

/// The timeouts of this process's PostgreSQL connections, from the config's `[store]`.
static TIMEOUTS: std::sync::OnceLock<Timeouts> = std::sync::OnceLock::new();

/// Sets the timeouts of PostgreSQL connections from the config's `[store]` (once, at start).
pub fn configure(store: &crate::config::StoreConfig) {
    let _ = TIMEOUTS.set(Timeouts::from_config(store));
}

/// PostgreSQL's migrations, in order: version `n` is the first `n` applied.
const PG_MIGRATION_SQL: &[&str] = &[include_str!("../../schema/postgres/0001_store.sql")];

/// The schema version this build writes on PostgreSQL.
pub fn pg_schema_version() -> usize {
    PG_MIGRATION_SQL.len()
}

/// The PostgreSQL URL `path` spells, if it is one.
pub(crate) fn postgres_url(path: &Path) -> Result<Option<PgUrl>, StoreError> {
    let Some(text) = path.to_str() else {
        return Ok(None);
    };
    match super::postgres::connect::classify(text) {
        Ok(Location::Postgres(url)) => Ok(Some(*url)),
        Ok(Location::File(_)) => Ok(None),
        Err(err) => Err(StoreError::Input(err.to_string())),
    }
}

impl Store {
    /// A PostgreSQL store, checked to hold a schema this build reads and writes.
    pub(super) fn open_postgres(url: &PgUrl, access: Access) -> Result<Self, StoreError> {
        let store = Self::connect_postgres(url, access)?;
        store.check_pg_schema()?;
        Ok(store)
    }

    fn connect_postgres(url: &PgUrl, access: Access) -> Result<Self, StoreError> {
        let label = PathBuf::from(url.redacted());
        let timeouts = TIMEOUTS.get().copied().unwrap_or_default();
        for warning in url.warnings() {
            eprintln!("warning: {warning}");
        }
        let client = super::postgres::connect::connect(url, &timeouts).map_err(|err| {
            StoreError::Unusable {
                path: label.clone(),
                reason: err.to_string(),
            }
        })?;
        Ok(Self {
            conn: Db::Postgres(PgConn::new(
                client,
                format!(
                    "SET LOCAL statement_timeout = {}",
                    timeouts.statement.as_millis()
                ),
            )),
            path: label,
            access,
        })
    }

    /// `db migrate` on PostgreSQL: creates the schema in an empty database, or brings an
    /// older one up to date, in one transaction.
    pub(super) fn migrate_postgres(url: &PgUrl) -> Result<Migrated, StoreError> {
        let mut store = Self::connect_postgres(url, Access::Write)?;
        let latest = pg_schema_version();
        let path = store.path.clone();
        let tx = store.conn.transaction().map_err(|e| super::sql_error(&path, e))?;
        let run = || -> Result<usize, DbError> {
            let (found, _) = pg_version(&tx)?;
            let from = usize::try_from(found).unwrap_or(usize::MAX);
            for sql in PG_MIGRATION_SQL.iter().take(latest).skip(from) {
                tx.execute_batch(sql)?;
            }
            if from < latest {
                tx.execute(
                    "UPDATE schema_version SET version = ?1, writable_by = ?2",
                    [latest, WRITABLE_BY],
                )?;
            }
            Ok(from)
        };
        let from = match run() {
            Ok(from) => from,
            Err(err) => {
                return Err(StoreError::Migrate {
                    path,
                    message: err.to_string(),
                });
            }
        };
        if from > latest {
            return Err(StoreError::Newer {
                path,
                found: from,
                supported: latest,
            });
        }
        tx.commit().map_err(|e| super::sql_error(&path, e))?;
        Ok(Migrated { from, to: latest })
    }

    fn check_pg_schema(&self) -> Result<(), StoreError> {
        let (found, writable_by) =
            pg_version(&self.conn).map_err(|e| super::sql_error(&self.path, e))?;
        let latest = pg_schema_version();
        let found_usize = usize::try_from(found).map_err(|_| StoreError::Corrupt {
            path: self.path.clone(),
            found,
        })?;
        if found_usize == 0 {
            return Err(StoreError::NoSchema {
                path: self.path.clone(),
            });
        }
        if found_usize < latest {
            return Err(StoreError::Older {
                path: self.path.clone(),
                found: found_usize,
                supported: latest,
            });
        }
        // A newer schema is used when the release that wrote it says this one may still:
        // its migrations only added what this build does not read.
        let compatible = usize::try_from(writable_by).is_ok_and(|oldest| oldest <= latest);
        if found_usize > latest && !compatible {
            return Err(StoreError::Newer {
                path: self.path.clone(),
                found: found_usize,
                supported: latest,
            });
        }
        Ok(())
    }
}

/// The oldest schema version whose releases may still write a store at this build's version.
/// Raised only by a migration that is not additive.
const WRITABLE_BY: usize = 1;

/// The schema version stored and the oldest that may write it; `(0, 0)` in a database with
/// no cachewarden schema.
fn pg_version(db: &Db) -> Result<(i64, i64), DbError> {
    let exists: bool = db.query_row(
        "SELECT to_regclass('schema_version') IS NOT NULL",
        [],
        |row| row.get(0),
    )?;
    if !exists {
        return Ok((0, 0));
    }
    db.query_row(
        "SELECT version, writable_by FROM schema_version",
        [],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )
}
