//! An import into an SQLite store that does not exist yet: the store is built in a file of
//! its own beside its path, and appears at the path, whole and indexed, once the import is
//! done.
//!
//! No path names that file while the import runs, so nothing else reads or writes it: the
//! import needs no write-ahead log and no syncs, and the indexes it never reads (events by
//! target, artifacts by digest, tags by tag, runs by pipeline and by builder), where new rows
//! land at random places, are built once at the end. A process killed during the import
//! leaves no store at the path, only the hidden file it was building (`.NAME.import-XXXXXX`
//! beside it, with its `-journal`), which nothing reads; the next import starts again, and
//! names the file ([`BulkTarget::leftovers`]). A building file is locked (`flock`) while
//! its process lives, so a file another import is still building is never named.

use std::fs::File;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use tempfile::TempPath;

use super::{BULK_CACHE_KIB, CACHE_KIB, Store, StoreError, pg, sql_error};

/// Indexes an import never reads: dropped while it writes, built again from the rows after.
/// (A run's chain entries by run are read when a repeated run line adds events, and pipeline
/// changes by pipeline for every pipeline a batch names: those stay.)
const DEFERRED: &[&str] = &[
    "events_by_target",
    "artifacts_by_digest",
    "artifact_tags_by_tag",
    "runs_by_pipeline_start",
    "runs_by_builder_start",
    "runs_by_builder_finish",
];

/// The page cache while the deferred indexes are built, in KiB: the size of each sorted run.
const SORT_CACHE_KIB: i64 = 16 << 10;

/// The bulk write that builds a store: it names the building file, `.NAME.WRITE-XXXXXX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkWrite {
    Import,
    Copy,
}

impl BulkWrite {
    const ALL: [Self; 2] = [Self::Import, Self::Copy];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Import => "import",
            Self::Copy => "copy",
        }
    }
}

/// A store an import is building at a path where none was.
#[derive(Debug)]
pub struct FreshStore {
    /// Closed before `file` is removed (fields drop in order).
    store: Store,
    target: PathBuf,
    write: BulkWrite,
    file: Building,
    /// The definitions of the indexes dropped until [`FreshStore::publish`].
    deferred: Vec<String>,
}

impl FreshStore {
    /// A store to import into at `target`, built beside it; `None` when `target` names a
    /// PostgreSQL store or something already there, which the import writes into as it is.
    pub fn create(target: &Path, write: BulkWrite) -> Result<Option<Self>, StoreError> {
        if pg::postgres_url(target)?.is_some() || !is_free(target) {
            return Ok(None);
        }
        // `dir/` names a directory: the ordinary open says what is wrong with it.
        let Some(name) = target
            .file_name()
            .and_then(|name| name.to_str())
            .filter(|_| !target.as_os_str().to_string_lossy().ends_with('/'))
        else {
            return Ok(None);
        };
        let dir = directory(target);
        let unusable = |err: std::io::Error| StoreError::Unusable {
            path: target.to_path_buf(),
            reason: err.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(unusable)?;
        let path = tempfile::Builder::new()
            .prefix(&format!(".{name}.{}-", write.as_str()))
            // As SQLite creates a store's file, the umask applying.
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .tempfile_in(dir)
            .map_err(unusable)?
            .into_temp_path();
        // Held until the file is removed or the process ends. A file system without `flock`
        // builds unlocked: its building files are never named as left over.
        let lock = File::open(&path).ok().filter(|f| f.try_lock().is_ok());
        let file = Building {
            path: Some(path),
            _lock: lock,
        };
        let mut store = Store::open(file.path())?;
        // Errors name the path the user gave; nothing on the import's way opens the store's
        // path again (the building file is reached through `file`).
        store.path = target.to_path_buf();
        let deferred = store.unindexed_bulk()?;
        Ok(Some(Self {
            store,
            target: target.to_path_buf(),
            write,
            file,
            deferred,
        }))
    }

    pub fn store(&mut self) -> &mut Store {
        &mut self.store
    }

    /// Builds the deferred indexes, gives the store its usual journal (WAL) and settings,
    /// syncs it, and links it in at its path, which must still be free. The store is then
    /// opened there as any writer opens it.
    ///
    /// A store that cannot be put in place is kept in its file, which the error names.
    pub fn publish(self) -> Result<Store, StoreError> {
        let Self {
            store,
            target,
            write,
            mut file,
            deferred,
        } = self;
        store.finish_unindexed_bulk(&deferred)?;
        drop(store);
        let linked = std::fs::File::open(file.path())
            .and_then(|f| f.sync_all())
            .and_then(|()| put_in_place(file.path(), &target));
        if let Err(err) = linked {
            let name = write.as_str();
            let reason = if err.kind() == ErrorKind::AlreadyExists {
                format!(
                    "a file appeared there while it ran; {name} again to write into that store, \
                     then delete the built one"
                )
            } else {
                format!("{err}; move it there, or {name} again")
            };
            return Err(StoreError::Unpublished {
                write: write.as_str(),
                path: target,
                kept: file.keep(),
                reason,
            });
        }
        drop(file);
        // The link lasts a crash once its directory is synced; a file system that cannot sync
        // a directory still has the store in place.
        let _ = std::fs::File::open(directory(&target)).and_then(|dir| dir.sync_all());
        Store::open(&target)
    }
}

/// The store a bulk write (`import`, `db copy`) goes into: the one already at its path, or
/// one built where none was and put in place when the write is done.
#[derive(Debug)]
pub enum BulkTarget {
    There(Store),
    Fresh(FreshStore),
}

impl BulkTarget {
    /// A store built beside `path` when nothing is there; else what `there` opens.
    pub fn open(
        path: &Path,
        write: BulkWrite,
        there: impl FnOnce() -> Result<Store, StoreError>,
    ) -> Result<Self, StoreError> {
        Ok(match FreshStore::create(path, write)? {
            Some(fresh) => Self::Fresh(fresh),
            None => Self::There(there()?),
        })
    }

    /// Building files beside `path` that no process holds, each with its size in bytes
    /// (journal included): left by an import or copy that was killed, or kept after it could
    /// not be put in place. Nothing reads them.
    pub fn leftovers(path: &Path) -> Vec<(PathBuf, u64)> {
        let Some(name) = path.file_name().and_then(|name| name.to_str()) else {
            return Vec::new();
        };
        let prefixes = BulkWrite::ALL.map(|write| format!(".{name}.{}-", write.as_str()));
        let Ok(entries) = std::fs::read_dir(directory(path)) else {
            return Vec::new();
        };
        let mut left: Vec<(PathBuf, u64)> = entries
            .filter_map(Result::ok)
            .filter(|entry| {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                prefixes.iter().any(|p| name.starts_with(p.as_str()))
                    && !SIDECARS.iter().any(|suffix| name.ends_with(suffix))
                    && entry.file_type().is_ok_and(|t| t.is_file())
            })
            .map(|entry| entry.path())
            .filter(|file| File::open(file).is_ok_and(|f| f.try_lock().is_ok()))
            .map(|file| {
                let size = STORE_FILES
                    .iter()
                    .filter_map(|suffix| std::fs::metadata(super::sidecar(&file, suffix)).ok())
                    .map(|meta| meta.len())
                    .sum();
                (file, size)
            })
            .collect();
        left.sort();
        left
    }

    pub fn store(&mut self) -> &mut Store {
        match self {
            Self::There(store) => store,
            Self::Fresh(fresh) => fresh.store(),
        }
    }

    /// The store at its path: a built one is put in place ([`FreshStore::publish`]).
    pub fn finish(self) -> Result<Store, StoreError> {
        match self {
            Self::There(store) => Ok(store),
            Self::Fresh(fresh) => fresh.publish(),
        }
    }
}

/// A store's file and those SQLite keeps beside it, by the suffix of their names.
const STORE_FILES: [&str; 4] = ["", "-journal", "-wal", "-shm"];

/// The paths of the store at `path`: its file and those SQLite keeps beside it, which nothing
/// but the store may write.
pub fn store_files(path: &Path) -> impl Iterator<Item = PathBuf> + '_ {
    STORE_FILES
        .iter()
        .map(move |suffix| super::sidecar(path, suffix))
}

/// The files SQLite keeps beside a store's.
const SIDECARS: &[&str] = STORE_FILES.split_at(1).1;

/// Whether nothing is at `path`: no file, and no journal or write-ahead log that SQLite would
/// take as a store's (replayed into the new store, or rolled back onto it).
fn is_free(path: &Path) -> bool {
    STORE_FILES.iter().all(|suffix| {
        std::fs::symlink_metadata(super::sidecar(path, suffix))
            .is_err_and(|err| err.kind() == ErrorKind::NotFound)
    })
}

/// The directory `path` is in.
fn directory(path: &Path) -> &Path {
    path.parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Links `built` in at `target`, never over anything there. A file system without hard links
/// gets a rename, after looking once more that nothing is there.
fn put_in_place(built: &Path, target: &Path) -> std::io::Result<()> {
    if !is_free(target) {
        return Err(ErrorKind::AlreadyExists.into());
    }
    match std::fs::hard_link(built, target) {
        Err(err) if err.kind() != ErrorKind::AlreadyExists => {
            if !is_free(target) {
                return Err(ErrorKind::AlreadyExists.into());
            }
            std::fs::rename(built, target)
        }
        linked => linked,
    }
}

/// The file a store is built in: removed when dropped, with the files SQLite keeps beside it,
/// unless kept.
#[derive(Debug)]
struct Building {
    path: Option<TempPath>,
    /// The file opened once more, locked while it is being built (released when dropped,
    /// after the file is removed).
    _lock: Option<File>,
}

impl Building {
    fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new(""))
    }

    /// Keeps the file; its path.
    fn keep(&mut self) -> PathBuf {
        let path = self.path().to_path_buf();
        if let Some(Err(err)) = self.path.take().map(TempPath::keep) {
            std::mem::forget(err.path);
        }
        path
    }
}

impl Drop for Building {
    fn drop(&mut self) {
        if let Some(file) = self.path.take() {
            for suffix in SIDECARS {
                let _ = std::fs::remove_file(super::sidecar(&file, suffix));
            }
            // Removes the file itself.
            drop(file);
        }
    }
}

impl Store {
    /// Bulk mode for a store no path names yet: no journal on disk, no syncs, and the
    /// [`DEFERRED`] indexes dropped. Returns their definitions.
    fn unindexed_bulk(&mut self) -> Result<Vec<String>, StoreError> {
        let Some(conn) = self.conn.sqlite() else {
            return Ok(Vec::new());
        };
        let result = (|| -> rusqlite::Result<Vec<String>> {
            conn.pragma_update_and_check(None, "journal_mode", "truncate", |_| Ok(()))?;
            // Foreign keys are checked once over the whole store before it is put in place
            // (`finish_unindexed_bulk`): checked row by row, 2.09M events took 2.5 s more to
            // insert; the whole store's check takes 0.4 s.
            conn.execute_batch("PRAGMA synchronous = OFF; PRAGMA foreign_keys = OFF")?;
            conn.pragma_update(None, "cache_size", -BULK_CACHE_KIB)?;
            let mut deferred = Vec::new();
            for name in DEFERRED {
                let sql: Option<String> = conn
                    .query_row(
                        "SELECT sql FROM sqlite_schema WHERE type = 'index' AND name = ?1",
                        [name],
                        |row| row.get(0),
                    )
                    .or_else(|err| match err {
                        rusqlite::Error::QueryReturnedNoRows => Ok(None),
                        err => Err(err),
                    })?;
                if let Some(sql) = sql {
                    conn.execute_batch(&format!("DROP INDEX {name}"))?;
                    deferred.push(sql);
                }
            }
            Ok(deferred)
        })();
        result.map_err(|e| sql_error(&self.path, e.into()))
    }

    /// Ends [`Store::unindexed_bulk`]: builds `deferred` and switches back to WAL and the
    /// usual syncs and page cache.
    fn finish_unindexed_bulk(&self, deferred: &[String]) -> Result<(), StoreError> {
        let Some(conn) = self.conn.sqlite() else {
            return Ok(());
        };
        let broken = conn
            .query_row("PRAGMA foreign_key_check", [], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, Option<i64>>(1)?,
                    row.get::<_, String>(2)?,
                ))
            })
            .map(Some)
            .or_else(|err| match err {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                err => Err(err),
            })
            .map_err(|e| sql_error(&self.path, e.into()))?;
        if let Some((table, row, parent)) = broken {
            let row = row.map_or_else(String::new, |row| format!(" row {row}"));
            return Err(sql_error(
                &self.path,
                crate::store::db::DbError::Value(format!(
                    "{table}{row} refers to a missing {parent} row; the store was not put in place"
                )),
            ));
        }
        let result = (|| -> rusqlite::Result<()> {
            conn.execute_batch("PRAGMA foreign_keys = ON")?;
            // The sort behind each index fills runs of entries as large as the page cache,
            // sorts each (in helper threads while the next fills), spills them to a file and
            // merges them, rather than holding every entry in memory (a 10M-event store's take
            // half a gigabyte). Small runs sort inside the processor's caches: the 10.5M-event
            // index by target took 13 s so, 23 s with runs of the usual page cache on one
            // thread.
            conn.pragma_update(None, "cache_size", -SORT_CACHE_KIB)?;
            conn.execute_batch("PRAGMA temp_store = FILE")?;
            let threads = std::thread::available_parallelism()
                .map_or(1, |n| u32::try_from(n.get().min(8)).unwrap_or(1));
            conn.pragma_update(None, "threads", threads)?;
            for sql in deferred {
                conn.execute_batch(sql)?;
            }
            conn.pragma_update(None, "threads", 0)?;
            conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
            conn.pragma_update_and_check(None, "journal_mode", "wal", |_| Ok(()))?;
            conn.execute_batch("PRAGMA synchronous = NORMAL")
        })();
        result.map_err(|e| sql_error(&self.path, e.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The store an import builds for the free path `target`.
    fn building(target: &Path) -> FreshStore {
        FreshStore::create(target, BulkWrite::Import)
            .unwrap()
            .unwrap()
    }

    /// A pragma's value on `store`'s connection.
    fn pragma<T: rusqlite::types::FromSql>(store: &Store, name: &str) -> T {
        let conn = store.conn.sqlite().unwrap();
        conn.pragma_query_value(None, name, |row| row.get(0))
            .unwrap()
    }

    fn index_names(store: &Store) -> Vec<String> {
        let conn = store.conn.sqlite().unwrap();
        let mut stmt = conn
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'index' AND sql IS NOT NULL ORDER BY name")
            .unwrap();
        stmt.query_map([], |row| row.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    /// A fresh store is built beside its path with the deferred indexes dropped, and
    /// published with every index an opened store has, in WAL mode, the building file gone.
    #[test]
    fn a_published_store_has_every_index_and_its_journal() {
        let dir = tempfile::tempdir().unwrap();
        let reference = Store::open(&dir.path().join("reference.db")).unwrap();
        let target = dir.path().join("sub").join("fleet.db");
        let mut fresh = building(&target);
        assert!(!target.exists());
        let building = index_names(fresh.store());
        for name in DEFERRED {
            assert!(
                !building.contains(&(*name).to_owned()),
                "{name} is built last"
            );
        }
        let store = fresh.publish().unwrap();
        assert_eq!(index_names(&store), index_names(&reference));
        let mode = |path: &Path| {
            std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(path).unwrap().permissions())
        };
        assert_eq!(mode(&target), mode(&dir.path().join("reference.db")));
        assert_eq!(pragma::<String>(&store, "journal_mode"), "wal");
        let left: Vec<_> = std::fs::read_dir(target.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|name| !name.starts_with("fleet.db"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    /// Foreign keys are checked over the whole built store, not row by row: a row whose parent
    /// is missing is written while the store is built, and the store is then not put in
    /// place, its building file gone. A store whose rows hold is published with the check back
    /// on for its writers.
    #[test]
    fn a_built_store_breaking_a_foreign_key_is_not_put_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("fleet.db");
        let mut fresh = building(&target);
        fresh
            .store()
            .conn
            .sqlite()
            .unwrap()
            .execute(
                "INSERT INTO events (run_id, kind, target, at) VALUES (42, 'imported', 1, 0)",
                [],
            )
            .unwrap();
        let err = fresh.publish().unwrap_err().to_string();
        assert!(
            err.contains("events row 1 refers to a missing runs row"),
            "{err}"
        );
        assert!(!target.exists());
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");

        let mut fresh = building(&target);
        let store = fresh.store().conn.sqlite().unwrap();
        store
            .execute("INSERT INTO pipelines (id, name) VALUES (1, 'p')", [])
            .unwrap();
        let store = fresh.publish().unwrap();
        assert_eq!(pragma::<i64>(&store, "foreign_keys"), 1);
    }

    /// A path already there, even an empty file, is imported into as it is; so is one with a
    /// write-ahead log or journal left beside it (SQLite would take either into a new store),
    /// and a path that names a directory.
    #[test]
    fn only_a_free_path_gets_a_fresh_store() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("fleet.db");
        std::fs::write(&target, b"").unwrap();
        assert!(
            FreshStore::create(&target, BulkWrite::Import)
                .unwrap()
                .is_none()
        );
        for suffix in ["-wal", "-journal"] {
            let target = dir.path().join(format!("left{suffix}.db"));
            std::fs::write(super::super::sidecar(&target, suffix), b"left").unwrap();
            assert!(
                FreshStore::create(&target, BulkWrite::Import)
                    .unwrap()
                    .is_none(),
                "{suffix}"
            );
        }
        let slash = PathBuf::from(format!("{}/", dir.path().join("newdir").display()));
        assert!(
            FreshStore::create(&slash, BulkWrite::Import)
                .unwrap()
                .is_none()
        );
    }

    /// An import that ends without publishing (the store's own trouble) leaves nothing beside
    /// the path: not the building file, not its journal.
    #[test]
    fn an_unpublished_store_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("fleet.db");
        let mut fresh = building(&target);
        let conn = fresh.store().conn.sqlite().unwrap();
        // A transaction left open keeps its journal on disk.
        conn.execute_batch("BEGIN; CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
        drop(fresh);
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
    }

    /// Building files no process holds are named, with their journals' bytes counted; one
    /// still being built is not, nor are other files beside the path.
    #[test]
    fn only_building_files_no_process_holds_are_left_over() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("fleet.db");
        let live = FreshStore::create(&target, BulkWrite::Copy)
            .unwrap()
            .unwrap();
        assert!(
            live.file
                .path()
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with(".fleet.db.copy-")
        );
        assert_eq!(BulkTarget::leftovers(&target), Vec::new());

        let killed = dir.path().join(".fleet.db.import-AbC123");
        std::fs::write(&killed, [0; 100]).unwrap();
        std::fs::write(dir.path().join(".fleet.db.import-AbC123-journal"), [0; 20]).unwrap();
        for other in [
            ".other.db.import-AbC123",
            "fleet.db.import-AbC123",
            ".fleet.db-wal",
        ] {
            std::fs::write(dir.path().join(other), b"").unwrap();
        }
        assert_eq!(BulkTarget::leftovers(&target), vec![(killed.clone(), 120)]);

        // A building file locked by a process that lives is not named: this one's lock is
        // taken by another open file, as another process's would be.
        let held = File::open(&killed).unwrap();
        held.try_lock().unwrap();
        assert_eq!(BulkTarget::leftovers(&target), Vec::new());
        drop(held);
        drop(live);
        assert_eq!(BulkTarget::leftovers(&target), vec![(killed, 120)]);
    }

    /// A store that appeared at the path meanwhile is left alone; the import stays in its
    /// file, which the error names.
    #[test]
    fn a_path_taken_meanwhile_keeps_the_import_aside() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("fleet.db");
        let fresh = building(&target);
        std::fs::write(&target, b"someone else's").unwrap();
        let Err(StoreError::Unpublished { kept, .. }) = fresh.publish() else {
            panic!("published over another file");
        };
        assert_eq!(std::fs::read(&target).unwrap(), b"someone else's");
        assert!(kept.exists());
        assert!(Store::open(&kept).is_ok());
    }
}
