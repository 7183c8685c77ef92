//! The provenance store: the only module that speaks SQL.
//!
//! SQLite is the embedded default. Every query lives behind [`Store`]'s methods so that another
//! backend can implement the same narrow API. Migrations are the numbered files under
//! `schema/migrations/`, tracked by `PRAGMA user_version`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};
use rusqlite_migration::{M, Migrations};

use crate::ExitStatus;

mod audit;
mod containment;
mod facts;
mod incident;
mod index;
mod read;
mod sweep;
mod write;

pub use audit::{StoredFinding, TagSighting};
pub use containment::{Contained, OverrideRow, VerificationRow};
pub use incident::{Acceptance, ActionRow, Finished, IncidentRow};
pub use index::{SourceSummary, TraceSource};

pub use read::{ExportError, ExportItem};
pub use sweep::SweepKinds;
pub use write::{ImportItem, ImportOutcome, RecordOutcome};

/// How long a writer waits for another process's lock before giving up.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the checkpoint at the end of an import waits for readers.
const CHECKPOINT_WAIT: Duration = Duration::from_secs(1);

const MIGRATION_SQL: &[&str] = &[
    include_str!("../../schema/migrations/0001_provenance.sql"),
    include_str!("../../schema/migrations/0002_incidents.sql"),
    include_str!("../../schema/migrations/0003_audit_sweep.sql"),
    include_str!("../../schema/migrations/0004_manifest_facts.sql"),
    include_str!("../../schema/migrations/0005_event_pages.sql"),
    include_str!("../../schema/migrations/0006_identity_pages.sql"),
    include_str!("../../schema/migrations/0007_run_trust.sql"),
    include_str!("../../schema/migrations/0008_purge_provenance.sql"),
    include_str!("../../schema/migrations/0009_run_truncations.sql"),
    include_str!("../../schema/migrations/0010_acceptances.sql"),
];

fn migrations() -> Migrations<'static> {
    Migrations::new(MIGRATION_SQL.iter().map(|sql| M::up(sql)).collect())
}

/// The schema version this build writes.
pub fn schema_version() -> usize {
    MIGRATION_SQL.len()
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open database `{path}`: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "database `{path}` has schema version {found}, newer than this cachewarden's {supported}: upgrade cachewarden"
    )]
    Newer {
        path: PathBuf,
        found: usize,
        supported: usize,
    },
    #[error("database `{path}` is locked by another process (waited {}s)", BUSY_TIMEOUT.as_secs())]
    Locked { path: PathBuf },
    #[error("cannot migrate database `{path}`: {message}")]
    Migrate { path: PathBuf, message: String },
    #[error("database `{path}`: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Input(String),
}

impl StoreError {
    pub fn exit_status(&self) -> ExitStatus {
        match self {
            Self::NotFound(_) | Self::Input(_) => ExitStatus::BadInput,
            _ => ExitStatus::Store,
        }
    }
}

/// The provenance store.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    ///
    /// Sets WAL, `busy_timeout` and foreign keys. Several processes may open a fresh database
    /// at once: migrations run in a `BEGIN IMMEDIATE` transaction, and a process that lost the
    /// race finds the schema already current when it re-checks the version.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|err| StoreError::Open {
                path: path.to_path_buf(),
                source: rusqlite::Error::InvalidPath(PathBuf::from(err.to_string())),
            })?;
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let mut store = Self {
            conn,
            path: path.to_path_buf(),
        };
        // Switching a new file to WAL, and the version check before a migration, can be
        // refused without the busy handler waiting: a concurrent first open tries again.
        let started = std::time::Instant::now();
        loop {
            match store.configure().and_then(|()| store.migrate()) {
                Err(StoreError::Locked { .. }) if started.elapsed() < BUSY_TIMEOUT => {
                    std::thread::sleep(Duration::from_millis(25));
                }
                result => return result.map(|()| store),
            }
        }
    }

    /// Opens an existing database read-only, without migrating (for `export` and `trace`).
    pub fn open_existing(path: &Path) -> Result<Self, StoreError> {
        if !path.exists() {
            return Err(StoreError::NotFound(format!(
                "no database at `{}` (record a build first, or pass --db)",
                path.display()
            )));
        }
        Self::open(path)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn configure(&mut self) -> Result<(), StoreError> {
        self.conn
            .busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| self.sql(e))?;
        // journal_mode needs the lock briefly when switching; a busy reply here is a lock.
        self.conn
            .pragma_update_and_check(None, "journal_mode", "wal", |_| Ok(()))
            .map_err(|e| self.sql(e))?;
        self.conn
            .execute_batch(
                "PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;
                 PRAGMA cache_size = -65536; PRAGMA mmap_size = 268435456; PRAGMA temp_store = MEMORY;",
            )
            .map_err(|e| self.sql(e))?;
        self.conn
            .set_transaction_behavior(TransactionBehavior::Immediate);
        Ok(())
    }

    fn user_version(&self) -> Result<usize, StoreError> {
        self.conn
            .query_row("PRAGMA user_version", [], |row| row.get::<_, i64>(0))
            .map(|v| v.max(0) as usize)
            .map_err(|e| self.sql(e))
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let latest = schema_version();
        let found = self.user_version()?;
        if found > latest {
            return Err(StoreError::Newer {
                path: self.path.clone(),
                found,
                supported: latest,
            });
        }
        if found == latest {
            return Ok(());
        }
        // Transactions on this connection are IMMEDIATE, so the migration holds the write lock
        // from its first statement. A concurrent first open that read the old version waits for
        // the lock, then fails on the already-created tables and rolls back: re-check.
        match migrations().to_latest(&mut self.conn) {
            Ok(()) => Ok(()),
            Err(err) => {
                if self.user_version()? >= latest {
                    return Ok(());
                }
                if is_busy_migration(&err) {
                    return Err(StoreError::Locked {
                        path: self.path.clone(),
                    });
                }
                Err(StoreError::Migrate {
                    path: self.path.clone(),
                    message: err.to_string(),
                })
            }
        }
    }

    /// Runs `f` inside one read transaction: a consistent snapshot, and no lock traffic per
    /// statement.
    pub fn read_snapshot<T>(&mut self, f: impl FnOnce(&mut Self) -> T) -> Result<T, StoreError> {
        self.conn
            .execute_batch("BEGIN DEFERRED")
            .map_err(|e| self.sql(e))?;
        let out = f(self);
        self.conn.execute_batch("COMMIT").map_err(|e| self.sql(e))?;
        Ok(out)
    }

    /// Bulk mode for imports: the WAL is checkpointed once at the end instead of every few
    /// hundred pages. Call with `false` when done.
    pub fn bulk(&mut self, on: bool) -> Result<(), StoreError> {
        if on {
            return self
                .conn
                .execute_batch("PRAGMA wal_autocheckpoint = 0")
                .map_err(|e| self.sql(e));
        }
        // Truncating the WAL waits for readers (a long trace, say); after a short wait the
        // automatic checkpoints take over instead.
        self.conn
            .busy_timeout(CHECKPOINT_WAIT)
            .and_then(|()| {
                self.conn.execute_batch(
                    "PRAGMA wal_autocheckpoint = 1000; PRAGMA wal_checkpoint(TRUNCATE)",
                )
            })
            .and_then(|()| self.conn.busy_timeout(BUSY_TIMEOUT))
            .map_err(|e| self.sql(e))
    }

    /// Refreshes the planner's statistics after bulk writes.
    pub fn optimize(&mut self) -> Result<(), StoreError> {
        self.conn
            .execute_batch("PRAGMA optimize")
            .map_err(|e| self.sql(e))
    }

    fn sql(&self, source: rusqlite::Error) -> StoreError {
        sql_error(&self.path, source)
    }

    /// Every row `sql` returns, each read by `read`, collected (into a `Vec`, a map, ...).
    fn rows<T, C: FromIterator<T>>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        read: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<C, StoreError> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map(params, read)
            .and_then(|rows| rows.collect::<Result<C, _>>());
        rows.map_err(|e| self.sql(e))
    }
}

fn is_busy_migration(err: &rusqlite_migration::Error) -> bool {
    matches!(err, rusqlite_migration::Error::RusqliteError { err, .. } if is_busy(err))
}

fn is_busy(err: &rusqlite::Error) -> bool {
    matches!(
        err.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

pub(crate) fn sql_error(path: &Path, source: rusqlite::Error) -> StoreError {
    if is_busy(&source) {
        StoreError::Locked {
            path: path.to_path_buf(),
        }
    } else {
        StoreError::Sqlite {
            path: path.to_path_buf(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_valid() {
        migrations().validate().unwrap();
    }

    #[test]
    fn newer_schema_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        drop(Store::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        let err = Store::open(&path).unwrap_err();
        assert!(matches!(err, StoreError::Newer { found: 99, .. }), "{err}");
    }

    /// Many processes opening one new database at once all succeed: none is refused while
    /// another switches it to WAL or migrates it.
    #[test]
    fn concurrent_first_opens_succeed() {
        for round in 0..10 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("db.sqlite");
            let barrier = std::sync::Barrier::new(8);
            std::thread::scope(|scope| {
                for _ in 0..8 {
                    scope.spawn(|| {
                        barrier.wait();
                        let store = Store::open(&path);
                        assert!(store.is_ok(), "round {round}: {}", store.unwrap_err());
                    });
                }
            });
        }
    }
}
