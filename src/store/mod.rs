//! The provenance store: the only module that speaks SQL.
//!
//! SQLite is the embedded default. Every query lives behind [`Store`]'s methods so that another
//! backend can implement the same narrow API. Migrations are the numbered files under
//! `schema/migrations/`, tracked by `PRAGMA user_version`.
//!
//! Writers open with [`Store::open`] (creating the file and migrating it); readers open with
//! [`Store::open_read_only`], which never writes: not the schema, not the journal mode, not
//! even a `-wal` or `-shm` file beside a copy that cannot be written.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use db::{Db, DbError};

mod audit;
mod chain;
mod collector;
mod containment;
mod copy;
pub(crate) mod db;
mod facts;
mod floor;
mod fresh;
mod history;
mod incident;
mod index;
mod ls;
mod mount_audit;
mod pages;
mod pg;
mod pg_import;
pub mod postgres;

pub use pg::{GrantRole, configure, grant_sql};
mod read;
mod steps;
mod sweep;
mod write;

pub use audit::{StoredFinding, TagSighting};
pub use chain::{BreakKind, ChainBreak, ChainCheck, ChainHash, ChainHead};
pub use collector::{Receipt, Refused};
pub use containment::{Contained, OverrideRow, VerificationRow, Vouching};
pub use copy::{CopyReporter, CopySummary};
pub use floor::{TableCopy, TableSize};
pub use fresh::{BulkTarget, BulkWrite, FreshStore, store_files};
pub use history::{CollectOutcome, CollectedBuild, HistoryMatch, unrecorded_pipeline};
pub use incident::{Acceptance, ActionRow, IncidentLock, IncidentRow, MountRead, UsedBase};
pub use index::{SourceSummary, TraceSource};
pub use ls::{BuilderItem, IncidentItem, ListFilter, MountItem, PipelineItem, RunItem};
pub use mount_audit::{NewSnapshot, SnapshotSource};

pub use read::{ExportError, ExportItem};
pub use sweep::SweepKinds;
pub use write::{ImportCache, ImportItem, ImportOutcome, RecordOutcome};

/// How long a writer waits for another process's lock before giving up.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the checkpoint at the end of an import waits for readers.
const CHECKPOINT_WAIT: Duration = Duration::from_secs(1);

/// The page cache of every SQLite connection, in KiB, and of one that imports ([`Store::bulk`]).
const CACHE_KIB: i64 = 64 << 10;
const BULK_CACHE_KIB: i64 = 256 << 10;
/// Prepared statements a writer's connection keeps.
const STATEMENTS_CACHED: usize = 64;

/// What every SQLite connection sets besides its page cache, reading or writing.
const READ_SETTINGS: &str = "PRAGMA mmap_size = 268435456; PRAGMA temp_store = MEMORY;";

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
    include_str!("../../schema/migrations/0011_seed_spec.sql"),
    include_str!("../../schema/migrations/0012_build_history.sql"),
    include_str!("../../schema/migrations/0013_collector.sql"),
    CHAIN_MIGRATION,
    include_str!("../../schema/migrations/0015_mount_audits.sql"),
    RECEIPT_MIGRATION,
    include_str!("../../schema/migrations/0017_step_events.sql"),
    include_str!("../../schema/migrations/0018_receipt_start.sql"),
    include_str!("../../schema/migrations/0019_purge_records_only.sql"),
    include_str!("../../schema/migrations/0020_selective_prunes.sql"),
    include_str!("../../schema/migrations/0021_runs_by_builder_finish.sql"),
    include_str!("../../schema/migrations/0022_record_descriptions.sql"),
];

/// The migration that creates the run chain; a hook then chains the runs already stored.
const CHAIN_MIGRATION: &str = include_str!("../../schema/migrations/0014_run_chain.sql");
/// The migration after which receipts are chained; a hook then chains the receipts already
/// stored.
const RECEIPT_MIGRATION: &str = include_str!("../../schema/migrations/0016_receipts.sql");

/// Applies the migrations up to version `to` in one transaction, from the version found once
/// the transaction holds the write lock (a concurrent first open may have migrated meanwhile),
/// running the hooks that chain what is already stored.
fn apply_migrations(db: &mut Db, to: usize) -> Result<(), DbError> {
    let tx = db.transaction()?;
    let found: i64 = tx.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    let from = usize::try_from(found).unwrap_or(0);
    // The hooks chain what the store held, and a chain entry is read from the schema as it
    // stands at the end: they run once every migration has.
    let mut hooks = Vec::new();
    for (index, sql) in MIGRATION_SQL.iter().enumerate().take(to).skip(from) {
        tx.execute_batch(sql)?;
        if *sql == CHAIN_MIGRATION {
            hooks.push(chain::chain_existing as fn(&Db) -> db::DbResult<()>);
        } else if *sql == RECEIPT_MIGRATION {
            hooks.push(chain::chain_existing_receipts);
        }
        tx.execute_batch(&format!("PRAGMA user_version = {}", index + 1))?;
    }
    for hook in hooks {
        hook(&tx)?;
    }
    if from < to {
        analyze_new_indexes(&tx)?;
    }
    tx.commit()
}

/// Statistics for the indexes a migration added, on a store that keeps statistics (an import
/// leaves them): without a row of its own, SQLite takes a new index for as selective as any,
/// and may read it where another of the table's indexes fits better. Only indexes of tables
/// that have statistics are analyzed, each alone, so a store without them stays so.
fn analyze_new_indexes(db: &Db) -> Result<(), DbError> {
    let kept: bool = db.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'sqlite_stat1')",
        [],
        |row| row.get(0),
    )?;
    if !kept {
        return Ok(());
    }
    let mut statement = db.prepare(
        "SELECT i.name FROM sqlite_schema i
         WHERE i.type = 'index' AND i.sql IS NOT NULL
           AND EXISTS (SELECT 1 FROM sqlite_stat1 s WHERE s.tbl = i.tbl_name)
           AND NOT EXISTS (SELECT 1 FROM sqlite_stat1 s WHERE s.idx = i.name)
         ORDER BY i.name",
    )?;
    let unmeasured: Vec<String> = statement
        .query_map([], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    for index in unmeasured {
        db.execute_batch(&format!("ANALYZE {}", db::quote_identifier(&index)))?;
    }
    Ok(())
}

/// An SQLite file at schema version `version`, for tests of migrations. (The hooks chain with
/// the latest encoding: an empty store can stop at any version, one holding receipts only at
/// the latest.)
#[cfg(test)]
pub(crate) fn sqlite_at_version(path: &Path, version: usize) -> Connection {
    let conn = Connection::open(path).expect("a test database");
    let mut db = Db::Sqlite(conn);
    apply_migrations(&mut db, version).expect("the migrations apply");
    match db {
        Db::Sqlite(conn) => conn,
        Db::Postgres(_) => unreachable!(),
    }
}

/// The schema version this build writes.
pub fn schema_version() -> usize {
    MIGRATION_SQL.len()
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no database at `{path}` (record a build first, or pass --db)")]
    Missing { path: PathBuf },
    #[error("cannot open database `{path}`: {reason}")]
    Unusable { path: PathBuf, reason: String },
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
    #[error(
        "database `{path}` has schema version {found}, older than this cachewarden's {supported}: `cachewarden db migrate` upgrades it (so does the next command that writes); read commands leave it as it is"
    )]
    Older {
        path: PathBuf,
        found: usize,
        supported: usize,
    },
    #[error(
        "database `{path}` has no schema yet (an empty file): nothing to read; the next command that records creates it"
    )]
    Empty { path: PathBuf },
    #[error(
        "database `{path}` says it has schema version {found}, which does not match the tables it holds: its `user_version` is damaged, or it is not a cachewarden database; it is left as it is (restore it from a backup)"
    )]
    Corrupt { path: PathBuf, found: i64 },
    #[error(
        "cannot read database `{path}` read-only: its write-ahead log `{path}-wal` can be read only with its `-shm` file, which cannot be created here; copy the database and its `-wal` file into a writable directory"
    )]
    WalUnreadable { path: PathBuf },
    #[error("database `{path}` is locked by another process (waited {}s)", BUSY_TIMEOUT.as_secs())]
    Locked { path: PathBuf },
    #[error("cannot migrate database `{path}`: {message}")]
    Migrate { path: PathBuf, message: String },
    #[error("database `{path}`: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: DbError,
    },
    #[error(
        "database `{path}` has no cachewarden schema: its owner creates it with `cachewarden db migrate`"
    )]
    NoSchema { path: PathBuf },
    #[error(
        "the {write} into `{path}` was built whole in `{kept}` but cannot be put in place: {reason}"
    )]
    Unpublished {
        write: &'static str,
        path: PathBuf,
        kept: PathBuf,
        reason: String,
    },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Input(String),
    /// A run already recorded with other facts: history is append-only.
    #[error("{0}")]
    Conflict(String),
}

/// How a store's file was opened; a second connection opens it the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Read and write, schema migrated: the writers.
    Write,
    /// Read-only beside writers, through SQLite's locks and the WAL index (`-shm`).
    ReadOnly,
    /// Read-only, the file taken as unchanging: no locks, no `-shm` or `-wal` file created.
    /// Only for a file that cannot be written and has no write-ahead log (a copy handed over
    /// as evidence), where nothing can change it while it is read.
    Immutable,
}

/// What `cachewarden db migrate` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migrated {
    pub from: usize,
    pub to: usize,
    /// PostgreSQL roles that may add receipts as a collector does without being responders:
    /// collectors, and hooks granted before schema version 12 (each hook's to take back).
    pub collectors: Vec<String>,
}

/// The provenance store.
pub struct Store {
    conn: Db,
    /// A PostgreSQL store's URL, for a second connection.
    pg_url: Option<postgres::connect::PgUrl>,
    path: PathBuf,
    access: Access,
    /// Whether the store holds few time-suspect runs, once a read has asked ([`read`]'s
    /// queries find a target's suspect uses from the receipts when they are few).
    few_suspects: std::cell::Cell<Option<bool>>,
    /// The trust level whose runs' record evidence a trace does not take as complete
    /// ([`Store::doubt_records_at`]).
    doubted_records: Option<String>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date: the
    /// writers.
    ///
    /// Sets WAL, `busy_timeout` and foreign keys. Several processes may open a fresh database
    /// at once: migrations run in a `BEGIN IMMEDIATE` transaction, and a process that lost the
    /// race finds the schema already current when it re-checks the version.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(url) = pg::postgres_url(path)? {
            return Self::open_postgres(&url, Access::Write);
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|err| StoreError::Open {
                path: path.to_path_buf(),
                source: rusqlite::Error::InvalidPath(PathBuf::from(err.to_string())),
            })?;
        }
        Self::open_writer(path, true).map(|(store, _)| store)
    }

    /// Opens an existing database for writing, migrating it (writers that need recorded
    /// history: incidents, sweeps, audits, manual purges).
    pub fn open_existing(path: &Path) -> Result<Self, StoreError> {
        if let Some(url) = pg::postgres_url(path)? {
            return Self::open_postgres(&url, Access::Write);
        }
        require_file(path)?;
        Self::open_writer(path, false).map(|(store, _)| store)
    }

    /// Brings an existing database's schema up to date: `cachewarden db migrate`.
    pub fn migrate_existing(path: &Path) -> Result<Migrated, StoreError> {
        if let Some(url) = pg::postgres_url(path)? {
            return Self::migrate_postgres(&url);
        }
        require_file(path)?;
        let (_, from) = Self::open_writer(path, false)?;
        Ok(Migrated {
            from,
            to: schema_version(),
            collectors: Vec::new(),
        })
    }

    /// Opens for writing; also returns the schema version found before migrating.
    fn open_writer(path: &Path, create: bool) -> Result<(Self, usize), StoreError> {
        let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        if create {
            flags |= OpenFlags::SQLITE_OPEN_CREATE;
        }
        let conn =
            Connection::open_with_flags(plain(path), flags).map_err(|source| StoreError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        let mut store = Self {
            conn: Db::Sqlite(conn),
            pg_url: None,
            path: path.to_path_buf(),
            access: Access::Write,
            few_suspects: Default::default(),
            doubted_records: None,
        };
        // Switching a new file to WAL, and the version check before a migration, can be
        // refused without the busy handler waiting: a concurrent first open tries again.
        let started = std::time::Instant::now();
        loop {
            match store.configure().and_then(|()| store.migrate()) {
                Err(StoreError::Locked { .. }) if started.elapsed() < BUSY_TIMEOUT => {
                    std::thread::sleep(Duration::from_millis(25));
                }
                result => return result.map(|found| (store, found)),
            }
        }
    }

    /// Opens an existing database read-only, without migrating: the readers (`trace`,
    /// `export`, `check`, `incident list`, `show` and `report`).
    ///
    /// Nothing is written, whatever the file: an older schema is refused with the command that
    /// upgrades it, an empty file is refused, and a copy that cannot be written (a read-only
    /// file or directory, or a read-only file system) with no write-ahead log is read as
    /// immutable, without the `-shm` and `-wal` files a read-only WAL connection creates.
    pub fn open_read_only(path: &Path) -> Result<Self, StoreError> {
        if let Some(url) = pg::postgres_url(path)? {
            return Self::open_postgres(&url, Access::ReadOnly);
        }
        let meta = require_file(path)?;
        // SQLite keeps the `-wal` beside the file a link resolves to.
        let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        // An empty `-wal` (a reader leaves one) holds nothing the main file lacks.
        let has_wal = std::fs::metadata(sidecar(&real, "-wal")).is_ok_and(|m| m.len() > 0);
        let dir_read_only = real
            .parent()
            .and_then(|dir| std::fs::metadata(dir).ok())
            .is_some_and(|m| m.permissions().readonly());
        // A file or directory that nobody may write is evidence: the permission bits are read
        // rather than tried, since root may write them anyway.
        let locked_down = meta.permissions().readonly() || dir_read_only;
        if locked_down && !has_wal {
            return Self::open_reader(path, Access::Immutable);
        }
        match Self::open_reader(path, Access::ReadOnly) {
            Err(err) if cannot_open_read_only(&err) => {
                if has_wal {
                    Err(StoreError::WalUnreadable {
                        path: path.to_path_buf(),
                    })
                } else {
                    // A read-only file system, or a file this user may not write: with no
                    // write-ahead log, the main file holds everything.
                    Self::open_reader(path, Access::Immutable)
                }
            }
            result => result,
        }
    }

    fn open_reader(path: &Path, access: Access) -> Result<Self, StoreError> {
        let conn = connect_read_only(path, access).map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let store = Self {
            conn: Db::Sqlite(conn),
            pg_url: None,
            path: path.to_path_buf(),
            access,
            few_suspects: Default::default(),
            doubted_records: None,
        };
        store.configure_reader()?;
        store.check_readable()?;
        Ok(store)
    }

    /// Traces read the runs recorded at `level` (the config's lowest) as runs without record
    /// evidence: what such a run says it created and reused on its builder was written by the
    /// code it built, which could leave out the record it poisoned. Its claims still taint;
    /// its silence no longer clears it of the records no run claims.
    pub fn doubt_records_at(&mut self, level: &str) {
        self.doubted_records = Some(level.to_owned());
    }

    /// The level [`Store::doubt_records_at`] set, as a query binds it: `""` for none.
    fn doubted_records(&self) -> String {
        self.doubted_records.clone().unwrap_or_default()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The store's file, for an SQLite store.
    pub fn file(&self) -> Option<&Path> {
        (self.conn.engine() == db::Engine::Sqlite).then_some(self.path.as_path())
    }

    fn configure(&mut self) -> Result<(), StoreError> {
        let Some(conn) = self.conn.sqlite() else {
            return Ok(());
        };
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| sql_error(&self.path, e.into()))?;
        // A run's writes prepare a few dozen statements, an import's held events among them.
        conn.set_prepared_statement_cache_capacity(STATEMENTS_CACHED);
        // journal_mode needs the lock briefly when switching; a busy reply here is a lock.
        conn.pragma_update_and_check(None, "journal_mode", "wal", |_| Ok(()))
            .map_err(|e| sql_error(&self.path, e.into()))?;
        conn.execute_batch("PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;")
            .and_then(|()| conn.execute_batch(READ_SETTINGS))
            .and_then(|()| conn.pragma_update(None, "cache_size", -CACHE_KIB))
            .map_err(|e| sql_error(&self.path, e.into()))
    }

    /// A reader's settings: none of them writes to the file.
    fn configure_reader(&self) -> Result<(), StoreError> {
        let Some(conn) = self.conn.sqlite() else {
            return Ok(());
        };
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| sql_error(&self.path, e.into()))?;
        conn.execute_batch(READ_SETTINGS)
            .and_then(|()| conn.pragma_update(None, "cache_size", -CACHE_KIB))
            .map_err(|e| sql_error(&self.path, e.into()))
    }

    /// A reader reads only the schema this build writes: an older one is refused with the
    /// command that upgrades it, never migrated.
    fn check_readable(&self) -> Result<(), StoreError> {
        let latest = schema_version();
        let found = self.schema_found()?;
        if found == 0 {
            return Err(StoreError::Empty {
                path: self.path.clone(),
            });
        }
        if found < latest {
            return Err(StoreError::Older {
                path: self.path.clone(),
                found,
                supported: latest,
            });
        }
        Ok(())
    }

    /// The schema version the file says it has, refused when it is newer than this build's,
    /// negative, or not what the file's tables show (a damaged `user_version` would otherwise
    /// run migrations over tables that already exist).
    fn schema_found(&self) -> Result<usize, StoreError> {
        // One statement, so one snapshot: a concurrent first open may migrate in between.
        let (raw, names): (i64, String) = self
            .conn
            .query_row(
                &format!(
                    "SELECT user_version, (SELECT json_group_array(name) FROM ({OBJECT_NAMES})) \
                     FROM pragma_user_version"
                ),
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .map_err(|e| self.sql(e))?;
        let corrupt = || StoreError::Corrupt {
            path: self.path.clone(),
            found: raw,
        };
        let found = usize::try_from(raw).map_err(|_| corrupt())?;
        let latest = schema_version();
        if found > latest {
            return Err(StoreError::Newer {
                path: self.path.clone(),
                found,
                supported: latest,
            });
        }
        if found < latest {
            let names: BTreeSet<String> = serde_json::from_str(&names).map_err(|_| corrupt())?;
            if names != schema_objects()[found] {
                return Err(corrupt());
            }
        }
        Ok(found)
    }

    /// Brings the schema up to date; returns the version found before.
    fn migrate(&mut self) -> Result<usize, StoreError> {
        let latest = schema_version();
        let found = self.schema_found()?;
        if found == latest {
            return Ok(found);
        }
        // Transactions on this connection are IMMEDIATE, so the migration holds the write lock
        // from its first statement. A concurrent first open that read the old version waits for
        // the lock, then fails on the already-created tables and rolls back: re-check.
        match apply_migrations(&mut self.conn, latest) {
            Ok(()) => Ok(found),
            Err(err) => {
                if self.schema_found()? >= latest {
                    return Ok(found);
                }
                if err.is_busy() {
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
        self.conn.read_transaction().map_err(|e| self.sql(e))?;
        self.few_suspects.set(None);
        let out = f(self);
        self.conn.execute_batch("COMMIT").map_err(|e| self.sql(e))?;
        Ok(out)
    }

    /// Bulk mode for imports: the WAL is checkpointed every 64 MiB instead of every 4 MiB, and
    /// truncated at the end. (Never checkpointing until the end made a large import slower as
    /// it went: every page read searched a WAL of gigabytes.) The page cache grows from 64 MiB
    /// to 256 MiB: an index keyed by digest or target takes each new row at a random place,
    /// and a 10M-event import spent an eighth of its time finding those pages again. Call
    /// with `false` when done.
    pub fn bulk(&mut self, on: bool) -> Result<(), StoreError> {
        let Some(conn) = self.conn.sqlite() else {
            return Ok(());
        };
        if on {
            return conn
                .execute_batch("PRAGMA wal_autocheckpoint = 16384")
                .and_then(|()| conn.pragma_update(None, "cache_size", -BULK_CACHE_KIB))
                .map_err(|e| sql_error(&self.path, e.into()));
        }
        // Truncating the WAL waits for readers (a long trace, say); after a short wait the
        // automatic checkpoints take over instead.
        conn.busy_timeout(CHECKPOINT_WAIT)
            .and_then(|()| {
                conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
                conn.execute_batch(
                    "PRAGMA wal_autocheckpoint = 1000; PRAGMA wal_checkpoint(TRUNCATE)",
                )
            })
            .and_then(|()| conn.busy_timeout(BUSY_TIMEOUT))
            .map_err(|e| sql_error(&self.path, e.into()))
    }

    /// Refreshes the planner's statistics after bulk writes.
    pub fn optimize(&mut self) -> Result<(), StoreError> {
        let sql = match self.conn.engine() {
            db::Engine::Sqlite => "PRAGMA optimize",
            db::Engine::Postgres => "ANALYZE",
        };
        self.conn.execute_batch(sql).map_err(|e| self.sql(e))
    }

    fn sql(&self, source: DbError) -> StoreError {
        sql_error(&self.path, source)
    }

    /// Every row `sql` returns, each read by `read`, collected (into a `Vec`, a map, ...).
    fn rows<T, C: FromIterator<T>>(
        &self,
        sql: &str,
        params: impl db::Params,
        read: impl FnMut(&db::Row<'_>) -> db::DbResult<T>,
    ) -> Result<C, StoreError> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map(params, read)
            .and_then(|rows| rows.collect::<Result<C, _>>());
        rows.map_err(|e| self.sql(e))
    }
}

/// Whether a store may be there to read: an SQLite file that exists, or any PostgreSQL URL
/// (its server says when it is opened).
pub fn exists(path: &Path) -> bool {
    matches!(pg::postgres_url(path), Ok(Some(_))) || path.exists()
}

/// A store's location for messages: a file's path, or a PostgreSQL URL without its password.
pub fn display_location(path: &Path) -> String {
    match pg::postgres_url(path) {
        Ok(Some(url)) => url.redacted(),
        _ => path.display().to_string(),
    }
}

/// The tables, indexes, triggers and views a database holds, SQLite's own left out.
const OBJECT_NAMES: &str =
    "SELECT name FROM sqlite_schema WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name";

/// The objects each schema version holds: index `v` names those of version `v`, found by
/// applying the migrations one by one to a database in memory.
fn schema_objects() -> &'static [BTreeSet<String>] {
    static OBJECTS: OnceLock<Vec<BTreeSet<String>>> = OnceLock::new();
    OBJECTS.get_or_init(|| {
        let conn = Connection::open_in_memory().expect("an in-memory database");
        let names = |conn: &Connection| -> BTreeSet<String> {
            let mut stmt = conn.prepare(OBJECT_NAMES).expect("the schema query");
            stmt.query_map([], |row| row.get(0))
                .and_then(|rows| rows.collect())
                .expect("the schema's names")
        };
        let mut versions = vec![names(&conn)];
        for sql in MIGRATION_SQL {
            conn.execute_batch(sql)
                .expect("the migrations apply in order");
            versions.push(names(&conn));
        }
        versions
    })
}

/// The file at `path`, which must exist and not be a directory.
fn require_file(path: &Path) -> Result<std::fs::Metadata, StoreError> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => Err(StoreError::Unusable {
            path: path.to_path_buf(),
            reason: "it is a directory".to_owned(),
        }),
        Ok(meta) => Ok(meta),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Err(StoreError::Missing {
            path: path.to_path_buf(),
        }),
        Err(err) => Err(StoreError::Unusable {
            path: path.to_path_buf(),
            reason: err.to_string(),
        }),
    }
}

/// `path` with `suffix` appended to its file name (`store.db-wal`).
fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// `path` as a name SQLite opens as the file it names: the bundled SQLite reads a name that
/// starts with `file:` as a URI (`file:x.db?mode=memory` is no file at all), so such a name is
/// given as `./file:...`.
fn plain(path: &Path) -> std::borrow::Cow<'_, Path> {
    use std::os::unix::ffi::OsStrExt;
    if path.as_os_str().as_bytes().starts_with(b"file:") {
        Path::new(".").join(path).into()
    } else {
        path.into()
    }
}

/// A read-only connection to `path`, as `access` says.
fn connect_read_only(path: &Path, access: Access) -> rusqlite::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    match access {
        Access::Write | Access::ReadOnly => Connection::open_with_flags(plain(path), flags),
        Access::Immutable => Connection::open_with_flags(
            format!("{}?immutable=1", file_uri(path)),
            flags | OpenFlags::SQLITE_OPEN_URI,
        ),
    }
}

/// A second read-only connection to a store's file, opened as the store was.
pub(crate) fn reopen_read_only(path: &Path, access: Access) -> Option<Db> {
    let reader = connect_read_only(path, access).ok()?;
    reader.busy_timeout(BUSY_TIMEOUT).ok()?;
    Some(Db::Sqlite(reader))
}

/// `file:` URI of a path: every byte but unreserved ones and `/` percent-encoded, so that
/// `?`, `#` and `%` in a file name stay part of it.
fn file_uri(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut uri = String::from("file:");
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            uri.push(char::from(b));
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    uri
}

/// Whether a read-only open failed because SQLite could not set up its shared-memory index or
/// lock (a read-only directory or file system), rather than over the file's content.
fn cannot_open_read_only(err: &StoreError) -> bool {
    let code = match err {
        StoreError::Open { source, .. } => source.sqlite_error_code(),
        StoreError::Sqlite {
            source: DbError::Sqlite(source),
            ..
        } => source.sqlite_error_code(),
        _ => return false,
    };
    matches!(
        code,
        Some(rusqlite::ErrorCode::ReadOnly | rusqlite::ErrorCode::CannotOpen)
    )
}

pub(crate) fn sql_error(path: &Path, source: DbError) -> StoreError {
    if matches!(source, DbError::Nul) {
        StoreError::Input(source.to_string())
    } else if source.is_busy() {
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

    /// A name that starts with `file:` reaches SQLite as a path, never as a URI; other names
    /// are left as they are.
    #[test]
    fn store_names_reach_sqlite_as_paths() {
        assert_eq!(
            plain(Path::new("file:m.db?mode=memory")),
            Path::new("./file:m.db?mode=memory")
        );
        for name in ["store.db", "/srv/file:x.db", "./file:x.db"] {
            assert_eq!(plain(Path::new(name)), Path::new(name));
        }
    }

    /// Every migration applies in order to an empty database.
    #[test]
    fn migrations_are_valid() {
        let dir = tempfile::tempdir().unwrap();
        let conn = sqlite_at_version(&dir.path().join("db"), schema_version());
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .unwrap();
        assert_eq!(version, i64::try_from(schema_version()).unwrap());
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

    /// An import checkpoints as it goes: the WAL is reused from its start instead of growing
    /// with everything imported (three 40 MiB batches leave less than 100 MiB of it). Its
    /// larger page cache is given back when it is done.
    #[test]
    fn a_bulk_import_keeps_the_wal_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let mut store = Store::open(&path).unwrap();
        let cache = |store: &Store| -> i64 {
            let conn = store.conn.sqlite().unwrap();
            conn.pragma_query_value(None, "cache_size", |row| row.get(0))
                .unwrap()
        };
        assert_eq!(cache(&store), -65536);
        store.bulk(true).unwrap();
        assert_eq!(cache(&store), -262144);
        let conn = store.conn.sqlite().unwrap();
        conn.execute_batch("CREATE TABLE scratch (b BLOB)").unwrap();
        for _ in 0..3 {
            conn.execute_batch(
                "BEGIN; INSERT INTO scratch VALUES (zeroblob(40 * 1024 * 1024)); COMMIT",
            )
            .unwrap();
        }
        let wal = std::fs::metadata(dir.path().join("db.sqlite-wal"))
            .unwrap()
            .len();
        assert!(wal < 100 << 20, "the WAL grew to {wal} bytes");
        store.bulk(false).unwrap();
        let wal = std::fs::metadata(dir.path().join("db.sqlite-wal"))
            .unwrap()
            .len();
        assert_eq!(wal, 0, "the WAL is truncated when the import is done");
        assert_eq!(cache(&store), -65536);
    }

    /// A store at schema version `version`, with a pipeline in it, in WAL mode as stores are.
    fn store_at(path: &Path, version: usize) {
        let conn = Connection::open(path).unwrap();
        conn.pragma_update_and_check(None, "journal_mode", "wal", |_| Ok(()))
            .unwrap();
        drop(conn);
        let conn = sqlite_at_version(path, version);
        conn.execute("INSERT INTO pipelines (name) VALUES ('p')", [])
            .unwrap();
    }

    fn user_version(path: &Path) -> i64 {
        Connection::open(path)
            .unwrap()
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .unwrap()
    }

    /// Migrating a store that keeps statistics gives the indexes the migration added
    /// statistics of their own, so the planner weighs a new index as it does the others; a
    /// store without statistics is left without.
    #[test]
    fn a_migration_measures_the_indexes_it_adds_where_statistics_are_kept() {
        let added = "runs_by_builder_finish";
        let before = MIGRATION_SQL
            .iter()
            .position(|sql| sql.contains(&format!("CREATE INDEX {added}")))
            .expect("the migration adding the index");
        for kept in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("db.sqlite");
            store_at(&path, before);
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "INSERT INTO builders (name) VALUES ('b');
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200)
                 INSERT INTO runs (pipeline_id, run_key, step, builder_id, started_at,
                                   finished_at, status, recorded_at)
                 SELECT 1, 'r' || i, 's', 1, i, i + 10, 'succeeded', i FROM n;",
            )
            .unwrap();
            if kept {
                conn.execute_batch("ANALYZE").unwrap();
            }
            drop(conn);
            Store::migrate_existing(&path).unwrap();
            let conn = Connection::open(&path).unwrap();
            let stat1: bool = conn
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE name = 'sqlite_stat1')",
                    [],
                    |row| row.get(0),
                )
                .unwrap();
            assert_eq!(stat1, kept);
            if kept {
                let stat: String = conn
                    .query_row(
                        "SELECT stat FROM sqlite_stat1 WHERE idx = ?1",
                        [added],
                        |row| row.get(0),
                    )
                    .unwrap();
                // 200 rows, all on one builder, each finish time its own.
                assert_eq!(stat, "200 200 1");
            }
        }
    }

    /// Every field of an incident's seeds stored in the old shape (the command line's argument
    /// struct) reaches the versioned seed type unchanged; a sweep's stored policy, and seeds
    /// already in the new shape, are left as they are.
    #[test]
    fn the_seed_migration_keeps_every_old_field() {
        let seed_migration = MIGRATION_SQL
            .iter()
            .position(|sql| sql.contains("SET seeds = json_set"))
            .expect("the seed migration");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        store_at(&path, seed_migration);
        let old = r#"{"seeds":{"pipeline":["p","a/b"],"runs":["p/1/s"],"cache_ref":["reg.io/x:c"],"mount":["b:/m"],"builder":["b"],"image":["sha256:00"],"since":"2026-03-01T00:00:00.123456+01:00","until":null},"ignore_time":true,"delete_images":false,"full_prune":true}"#;
        let sweep = r#"{"sweep":{"policy":"p.toml","rules":[]}}"#;
        let current = r#"{"seeds":{"version":2,"pipelines":["q"],"runs":[],"cache_refs":[],"mounts":[],"builders":[],"images":[],"since":null,"until":"x"},"ignore_time":false}"#;
        let conn = Connection::open(&path).unwrap();
        for (seeds, kind) in [(old, "incident"), (sweep, "sweep"), (current, "incident")] {
            conn.execute(
                "INSERT INTO incidents (title, opened_at, opened_by, seeds, trace, kind)
                 VALUES ('t', 0, 'me', ?1, '{}', ?2)",
                [seeds, kind],
            )
            .unwrap();
        }
        drop(conn);
        Store::migrate_existing(&path).unwrap();
        let conn = Connection::open(&path).unwrap();
        let stored: Vec<serde_json::Value> = conn
            .prepare("SELECT seeds FROM incidents ORDER BY id")
            .unwrap()
            .query_map([], |row| row.get::<_, String>(0))
            .unwrap()
            .map(|text| serde_json::from_str(&text.unwrap()).unwrap())
            .collect();
        let spec: crate::graph::SeedSpec =
            serde_json::from_value(stored[0]["seeds"].clone()).unwrap();
        assert_eq!(
            spec,
            crate::graph::SeedSpec {
                version: crate::graph::SEED_SPEC_VERSION,
                pipelines: vec!["p".into(), "a/b".into()],
                runs: vec!["p/1/s".into()],
                cache_refs: vec!["reg.io/x:c".into()],
                mounts: vec!["b:/m".into()],
                builders: vec!["b".into()],
                images: vec!["sha256:00".into()],
                since: Some("2026-03-01T00:00:00.123456+01:00".into()),
                until: None,
                tags_until: None,
            }
        );
        assert_eq!(stored[0]["ignore_time"], true);
        assert_eq!(stored[0]["full_prune"], true);
        assert!(stored[0].get("ignore_purges").is_none());
        assert_eq!(
            stored[1],
            serde_json::from_str::<serde_json::Value>(sweep).unwrap()
        );
        assert_eq!(
            stored[2],
            serde_json::from_str::<serde_json::Value>(current).unwrap()
        );
    }

    /// A reader refuses an older store, naming the command that upgrades it, and leaves it at
    /// its version; `db migrate` then upgrades it and says from which version.
    #[test]
    fn readers_refuse_an_older_store_and_leave_it_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        store_at(&path, 4);
        let err = Store::open_read_only(&path).unwrap_err();
        assert!(matches!(err, StoreError::Older { found: 4, .. }), "{err}");
        assert!(
            err.to_string().contains("`cachewarden db migrate`"),
            "{err}"
        );
        assert_eq!(user_version(&path), 4);
        let migrated = Store::migrate_existing(&path).unwrap();
        assert_eq!(
            migrated,
            Migrated {
                from: 4,
                to: schema_version(),
                collectors: Vec::new(),
            }
        );
        let store = Store::open_read_only(&path).unwrap();
        let pipelines: i64 = store
            .conn
            .query_row("SELECT count(*) FROM pipelines", [], |row| row.get(0))
            .unwrap();
        assert_eq!(pipelines, 1);
        let again = Store::migrate_existing(&path).unwrap();
        assert_eq!(again.from, again.to);
    }

    /// A reader refuses a zero-byte file and leaves it empty, with nothing created beside it.
    #[test]
    fn readers_leave_an_empty_file_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        std::fs::write(&path, "").unwrap();
        let err = Store::open_read_only(&path).unwrap_err();
        assert!(matches!(err, StoreError::Empty { .. }), "{err}");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    /// A missing store is refused by readers and by writers that need history, and `db
    /// migrate` creates nothing.
    #[test]
    fn a_missing_store_is_not_created_by_readers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("db.sqlite");
        for err in [
            Store::open_read_only(&path).unwrap_err(),
            Store::open_existing(&path).unwrap_err(),
            Store::migrate_existing(&path).unwrap_err(),
        ] {
            assert!(matches!(err, StoreError::Missing { .. }), "{err}");
        }
        assert!(!dir.path().join("sub").exists());
    }

    /// A `user_version` that does not match the tables (3 on a store at the latest version, or
    /// negative) is refused in one line by readers and writers, which run no migration.
    #[test]
    fn a_damaged_user_version_is_refused_in_one_line() {
        for damaged in [3_i64, -1] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("db.sqlite");
            drop(Store::open(&path).unwrap());
            let conn = Connection::open(&path).unwrap();
            conn.pragma_update(None, "user_version", damaged).unwrap();
            drop(conn);
            for err in [
                Store::open_read_only(&path).unwrap_err(),
                Store::open(&path).unwrap_err(),
                Store::migrate_existing(&path).unwrap_err(),
            ] {
                assert!(
                    matches!(err, StoreError::Corrupt { found, .. } if found == damaged),
                    "{err}"
                );
                assert!(!err.to_string().contains('\n'), "{err}");
            }
            assert_eq!(user_version(&path), damaged);
        }
    }

    /// The objects of each schema version are those its migrations create, and a fresh store
    /// holds those of the latest.
    #[test]
    fn schema_objects_follow_the_migrations() {
        let objects = schema_objects();
        assert_eq!(objects.len(), schema_version() + 1);
        assert!(objects[0].is_empty());
        assert!(objects[1].contains("runs") && !objects[1].contains("incidents"));
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.sqlite")).unwrap();
        assert_eq!(store.schema_found().unwrap(), schema_version());
    }

    /// A path with URI syntax in it still names the file.
    #[test]
    fn file_uris_escape_what_uris_would_read() {
        assert_eq!(
            file_uri(Path::new("/tmp/a b/x?y#z%.db")),
            "file:/tmp/a%20b/x%3Fy%23z%25.db"
        );
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
