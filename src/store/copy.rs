//! `db copy`: a whole store, table by table, into an empty store on either engine, in one
//! transaction on the destination.
//!
//! Rows keep their ids, so everything hashed over ids (the run chain) verifies unchanged. The
//! packed page tables are not copied: the destination's triggers rebuild them as rows arrive,
//! and the copy checks, before it commits, that they came out byte for byte as the source's.
//! Rows are read in key order a chunk at a time (keyset pagination), so memory stays bounded
//! whatever the store's size; on PostgreSQL they are written with binary `COPY`.

use std::collections::BTreeSet;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::db::{
    Db, DbError, DbResult, Engine, Value, ValueRef, params_from_iter, quote_identifier,
};
use super::{Store, StoreError, sql_error};

/// A table `db copy` copies, and the columns it is read in order of: its primary key.
#[derive(Debug, Clone, Copy)]
pub struct CopiedTable {
    pub name: &'static str,
    pub key: &'static [&'static str],
}

const fn table(name: &'static str, key: &'static [&'static str]) -> CopiedTable {
    CopiedTable { name, key }
}

/// Every table of the store but the packed pages, in foreign-key order: a table comes after
/// every table it references. `every_table_is_copied_in_foreign_key_order` checks this list
/// against the schema, so a table added by a migration cannot be forgotten here.
pub const COPIED_TABLES: &[CopiedTable] = &[
    table("pipelines", &["id"]),
    table("builders", &["id"]),
    table("runs", &["id"]),
    table("artifacts", &["id"]),
    table("artifact_tags", &["artifact_id", "tag"]),
    table("mounts", &["id"]),
    table("builder_records", &["id"]),
    table("record_descriptions", &["record", "believed"]),
    table("events", &["id"]),
    table("purges", &["id"]),
    table("purge_records", &["purge_id", "record"]),
    table("incidents", &["id"]),
    table("actions", &["id"]),
    table("incident_digests", &["incident_id", "digest"]),
    table("containment_overrides", &["id"]),
    table("verifications", &["id"]),
    table("audit_manifests", &["registry", "repository", "digest"]),
    table("audit_tags", &["registry", "repository", "tag", "digest"]),
    table("audits", &["id"]),
    table("audit_findings", &["id"]),
    table("manifest_facts", &["digest"]),
    table("pipeline_changes", &["id"]),
    table("run_observations", &["id"]),
    table("event_details", &["id"]),
    table("run_truncations", &["run_id"]),
    table("acceptances", &["id"]),
    table("run_build_refs", &["run_id", "build_ref"]),
    table("build_history", &["id"]),
    table("run_receipts", &["run_id"]),
    table("collector_refusals", &["id"]),
    table("run_chain", &["seq"]),
    table("mount_snapshots", &["id"]),
    table("mount_snapshot_files", &["snapshot_id", "path"]),
    table("step_events", &["id"]),
];

/// The packed page tables, kept in step by triggers: rebuilt on the destination, then
/// compared with the source's. Each is `(table, column of packed bytes)`, keyed by `page`.
pub const PAGE_TABLES: &[(&str, &str)] = &[
    ("event_pages", "events"),
    ("artifact_pages", "artifacts"),
    ("record_pages", "records"),
];

/// Rows read per query, at most.
const CHUNK_ROWS: usize = 8192;
/// Bytes of values held before a chunk is written, whatever its row count. The rows asked
/// for next are as many as fit this at the sizes seen so far: a PostgreSQL source returns a
/// query's rows all at once, and an incident's trace can be megabytes.
const CHUNK_BYTES: usize = 16 << 20;
/// Rows asked for first, before any size is known.
const FIRST_ROWS: usize = 64;
/// Packed pages compared per read (a page holds 64 rows: a few kilobytes).
const PAGES_PER_READ: usize = 1024;

/// What the copy reports as it goes: progress lives in the binary.
pub trait CopyReporter {
    /// A table is about to be copied; the source holds `rows` rows in it.
    fn table_started(&self, table: &str, rows: u64);
    /// `rows` more rows of the current table are written.
    fn rows_copied(&self, rows: u64);
    /// The current table is copied: `rows` rows in `elapsed`.
    fn table_done(&self, table: &str, rows: u64, elapsed: Duration);
}

/// What a copy did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopySummary {
    /// Each table with its row count, in the order copied.
    pub tables: Vec<(&'static str, u64)>,
    /// How the rows were written: `COPY` on PostgreSQL, prepared `INSERT`s on SQLite.
    pub method: &'static str,
}

impl CopySummary {
    pub fn rows(&self) -> u64 {
        self.tables.iter().map(|(_, rows)| rows).sum()
    }
}

/// A value read from the source, owned until the chunk it is in is written.
#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl Cell {
    fn of(value: ValueRef<'_>) -> Self {
        match value {
            ValueRef::Null => Self::Null,
            ValueRef::Int(v) => Self::Int(v),
            ValueRef::Real(v) => Self::Real(v),
            ValueRef::Text(v) => Self::Text(v.to_owned()),
            ValueRef::Blob(v) => Self::Blob(v.to_vec()),
        }
    }

    fn value(&self) -> Value<'_> {
        match self {
            Self::Null => Value::Null,
            Self::Int(v) => Value::Int(*v),
            Self::Real(v) => Value::Real(*v),
            Self::Text(v) => Value::Text(v),
            Self::Blob(v) => Value::Blob(v),
        }
    }

    fn size(&self) -> usize {
        match self {
            Self::Text(v) => v.len() + 24,
            Self::Blob(v) => v.len() + 24,
            _ => 16,
        }
    }
}

/// The columns of every table, as this build's migrations create them on SQLite: the one
/// schema both engines follow.
fn schema_columns() -> &'static Vec<(String, Vec<String>)> {
    static COLUMNS: OnceLock<Vec<(String, Vec<String>)>> = OnceLock::new();
    COLUMNS.get_or_init(|| {
        let conn = rusqlite::Connection::open_in_memory().expect("an in-memory database");
        for sql in super::MIGRATION_SQL {
            conn.execute_batch(sql)
                .expect("the migrations apply in order");
        }
        let tables: Vec<String> = conn
            .prepare(
                "SELECT name FROM sqlite_schema WHERE type = 'table' \
                 AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name",
            )
            .and_then(|mut stmt| stmt.query_map([], |row| row.get(0))?.collect())
            .expect("the schema's tables");
        tables
            .into_iter()
            .map(|name| {
                let columns = conn
                    .prepare("SELECT name FROM pragma_table_info(?1) ORDER BY cid")
                    .and_then(|mut stmt| stmt.query_map([&name], |row| row.get(0))?.collect())
                    .expect("the table's columns");
                (name, columns)
            })
            .collect()
    })
}

fn columns_of(table: &str) -> &'static [String] {
    schema_columns()
        .iter()
        .find(|(name, _)| name == table)
        .map_or(&[], |(_, columns)| columns.as_slice())
}

/// The columns a store's table has, as its engine says.
fn stored_columns(db: &Db, table: &str) -> DbResult<BTreeSet<String>> {
    let sql = match db.engine() {
        Engine::Sqlite => "SELECT name FROM pragma_table_info(?1)",
        Engine::Postgres => {
            "SELECT column_name::text FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = ?1"
        }
    };
    db.prepare_cached(sql)?
        .query_map([table], |row| row.get(0))?
        .collect()
}

/// The schema version a store is at, which must be this build's exactly: a newer store may
/// hold what this build would not copy.
fn require_current(store: &Store) -> Result<(), StoreError> {
    let (found, latest) = match store.conn.engine() {
        Engine::Sqlite => (store.schema_found()?, super::schema_version()),
        Engine::Postgres => {
            let (found, _) = super::pg::pg_version(&store.conn).map_err(|e| store.sql(e))?;
            (
                usize::try_from(found).unwrap_or(usize::MAX),
                super::pg::pg_schema_version(),
            )
        }
    };
    if found > latest {
        return Err(StoreError::Newer {
            path: store.path.clone(),
            found,
            supported: latest,
        });
    }
    if found < latest {
        return Err(StoreError::Older {
            path: store.path.clone(),
            found,
            supported: latest,
        });
    }
    Ok(())
}

impl Store {
    /// Copies every table of this store into `dest`, which must be empty, in one transaction
    /// on `dest`: nothing is left half-written if any step fails. This store is read in one
    /// snapshot.
    pub fn copy_to(
        &mut self,
        dest: &mut Store,
        reporter: &dyn CopyReporter,
    ) -> Result<CopySummary, StoreError> {
        require_current(self)?;
        require_current(dest)?;
        for table in COPIED_TABLES {
            let expected: BTreeSet<String> = columns_of(table.name).iter().cloned().collect();
            for store in [&*self, &*dest] {
                let found = stored_columns(&store.conn, table.name).map_err(|e| store.sql(e))?;
                if found != expected {
                    return Err(StoreError::Sqlite {
                        path: store.path.clone(),
                        source: DbError::Value(format!(
                            "table `{}` does not have the columns this cachewarden's schema gives it: nothing was copied",
                            table.name
                        )),
                    });
                }
            }
        }
        dest.bulk(true)?;
        let copied = self.copy_in_snapshot(dest, reporter);
        let restored = dest.bulk(false);
        let summary = copied?;
        restored?;
        dest.optimize()?;
        Ok(summary)
    }

    fn copy_in_snapshot(
        &mut self,
        dest: &mut Store,
        reporter: &dyn CopyReporter,
    ) -> Result<CopySummary, StoreError> {
        self.conn.read_transaction().map_err(|e| self.sql(e))?;
        let copied = copy_all(self, dest, reporter);
        // The read transaction ends however the copy went; a failed copy's error comes first.
        let ended = self.conn.execute_batch("COMMIT").map_err(|e| self.sql(e));
        let summary = copied?;
        ended?;
        Ok(summary)
    }
}

fn copy_all(
    source: &Store,
    dest: &mut Store,
    reporter: &dyn CopyReporter,
) -> Result<CopySummary, StoreError> {
    let dest_path = dest.path.clone();
    let dest_name = super::display_location(&dest_path);
    let engine = dest.conn.engine();
    let tx = dest
        .conn
        .transaction()
        .map_err(|e| sql_error(&dest_path, e))?;
    // Checked inside the transaction, holding the writer lock: no writer can slip in between.
    // Runs first: a store that holds any is named for them.
    let tables = COPIED_TABLES
        .iter()
        .map(|t| t.name)
        .filter(|name| *name != "runs")
        .chain(PAGE_TABLES.iter().map(|p| p.0));
    for table in std::iter::once("runs").chain(tables) {
        let held: bool = tx
            .query_row(
                &format!("SELECT EXISTS (SELECT 1 FROM {})", quote_identifier(table)),
                [],
                |row| row.get(0),
            )
            .map_err(|e| sql_error(&dest_path, e))?;
        if held {
            let what = if table == "runs" {
                "runs".to_owned()
            } else {
                format!("rows in `{table}`")
            };
            return Err(StoreError::Input(format!(
                "`{dest_name}` already holds {what}: `db copy` copies only into an empty store; it is left as it was"
            )));
        }
    }
    let mut summary = CopySummary {
        tables: Vec::with_capacity(COPIED_TABLES.len()),
        method: match engine {
            Engine::Sqlite => "INSERT",
            Engine::Postgres => "COPY",
        },
    };
    for table in COPIED_TABLES {
        let started = Instant::now();
        let total: i64 = source
            .conn
            .query_row(
                &format!("SELECT count(*) FROM {}", quote_identifier(table.name)),
                [],
                |row| row.get(0),
            )
            .map_err(|e| source.sql(e))?;
        reporter.table_started(table.name, u64::try_from(total).unwrap_or(0));
        let rows = copy_table(source, &tx, &dest_path, table, reporter)?;
        reporter.table_done(table.name, rows, started.elapsed());
        summary.tables.push((table.name, rows));
    }
    for (table, column) in PAGE_TABLES {
        compare_pages(source, &tx, &dest_path, table, column)?;
    }
    tx.commit().map_err(|e| sql_error(&dest_path, e))?;
    Ok(summary)
}

/// Copies one table a chunk at a time, in key order; returns the rows copied.
fn copy_table(
    source: &Store,
    dest: &Db,
    dest_path: &std::path::Path,
    table: &CopiedTable,
    reporter: &dyn CopyReporter,
) -> Result<u64, StoreError> {
    let columns = columns_of(table.name);
    let list = columns
        .iter()
        .map(|c| quote_identifier(c))
        .collect::<Vec<_>>()
        .join(", ");
    let key_positions: Vec<usize> = table
        .key
        .iter()
        .map(|k| {
            columns
                .iter()
                .position(|c| c == k)
                .expect("key columns are columns")
        })
        .collect();
    let keys = table
        .key
        .iter()
        .map(|k| quote_identifier(k))
        .collect::<Vec<_>>()
        .join(", ");
    let placeholders = (1..=table.key.len())
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let first = format!(
        "SELECT {list} FROM {} ORDER BY {keys} LIMIT ?1",
        quote_identifier(table.name)
    );
    let next = format!(
        "SELECT {list} FROM {} WHERE ({keys}) > ({placeholders}) ORDER BY {keys} LIMIT ?{}",
        quote_identifier(table.name),
        table.key.len() + 1
    );
    let mut writer = Writer::new(dest, table.name, columns).map_err(|e| sql_error(dest_path, e))?;
    let mut last: Option<Vec<Cell>> = None;
    let mut copied = 0_u64;
    let mut max_id: Option<i64> = None;
    let mut limit = FIRST_ROWS;
    loop {
        let (chunk, bytes) =
            read_chunk(source, &first, &next, last.as_deref(), limit, columns.len())
                .map_err(|e| source.sql(e))?;
        let Some(tail) = chunk.last() else {
            break;
        };
        limit = (CHUNK_BYTES.saturating_mul(chunk.len()) / bytes.max(1)).clamp(1, CHUNK_ROWS);
        last = Some(key_positions.iter().map(|&i| tail[i].clone()).collect());
        if let [position] = key_positions[..]
            && let Cell::Int(id) = tail[position]
        {
            max_id = Some(max_id.map_or(id, |m| m.max(id)));
        }
        let n = chunk.len() as u64;
        writer.write(chunk).map_err(|e| sql_error(dest_path, e))?;
        copied += n;
        reporter.rows_copied(n);
    }
    // PostgreSQL's identity columns hand out ids past the copied ones.
    if let (Engine::Postgres, Some(max), [key]) = (dest.engine(), max_id, table.key) {
        dest.query_row(
            "SELECT setval(pg_get_serial_sequence(?1, ?2), ?3)",
            params_from_iter([Value::Text(table.name), Value::Text(key), Value::Int(max)]),
            |row| row.get::<_, Option<i64>>(0),
        )
        .map_err(|e| sql_error(dest_path, e))?;
    }
    Ok(copied)
}

/// The next rows after `last` (the key of the last row read), at most `limit` of them and
/// about [`CHUNK_BYTES`] of values; with the bytes they hold.
fn read_chunk(
    source: &Store,
    first: &str,
    next: &str,
    last: Option<&[Cell]>,
    limit: usize,
    width: usize,
) -> DbResult<(Vec<Vec<Cell>>, usize)> {
    let (sql, mut key): (&str, Vec<Value<'_>>) = match last {
        None => (first, Vec::new()),
        Some(key) => (next, key.iter().map(Cell::value).collect()),
    };
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    key.push(Value::Int(limit));
    let mut stmt = source.conn.prepare_cached(sql)?;
    let mut rows = stmt.query(params_from_iter(key))?;
    let mut chunk = Vec::new();
    let mut bytes = 0;
    while let Some(row) = rows.next()? {
        let cells = (0..width)
            .map(|i| row.get_ref(i).map(Cell::of))
            .collect::<DbResult<Vec<Cell>>>()?;
        bytes += cells.iter().map(Cell::size).sum::<usize>();
        chunk.push(cells);
        if bytes >= CHUNK_BYTES {
            break;
        }
    }
    Ok((chunk, bytes))
}

/// Writes rows into one table of the destination: prepared `INSERT`s on SQLite, binary
/// `COPY` on PostgreSQL.
enum Writer<'a> {
    Sqlite {
        db: &'a Db,
        sql: String,
    },
    Postgres {
        conn: &'a super::db::PgConn,
        sql: String,
        types: Vec<postgres::types::Type>,
    },
}

impl<'a> Writer<'a> {
    fn new(db: &'a Db, table: &str, columns: &[String]) -> DbResult<Self> {
        let list = columns
            .iter()
            .map(|c| quote_identifier(c))
            .collect::<Vec<_>>()
            .join(", ");
        match db {
            Db::Sqlite(_) => {
                let placeholders = (1..=columns.len())
                    .map(|i| format!("?{i}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                Ok(Self::Sqlite {
                    db,
                    sql: format!(
                        "INSERT INTO {} ({list}) VALUES ({placeholders})",
                        quote_identifier(table)
                    ),
                })
            }
            Db::Postgres(conn) => {
                // The columns' types from the catalog, in one unnamed statement: preparing a
                // named one would leave session state behind a transaction-pooling proxy.
                let found: Vec<(String, i64)> = db
                    .prepare(
                        "SELECT attname::text, atttypid::int8 FROM pg_attribute
                         WHERE attrelid = ?1::regclass AND attnum > 0 AND NOT attisdropped",
                    )?
                    .query_map([quote_identifier(table)], |row| row.try_into())?
                    .collect::<DbResult<_>>()?;
                let types = columns
                    .iter()
                    .map(|column| {
                        found
                            .iter()
                            .find(|(name, _)| name == column)
                            .and_then(|(_, oid)| u32::try_from(*oid).ok())
                            .and_then(postgres::types::Type::from_oid)
                            .ok_or_else(|| {
                                DbError::Value(format!(
                                    "column `{table}.{column}` has a type `db copy` does not write"
                                ))
                            })
                    })
                    .collect::<DbResult<Vec<_>>>()?;
                Ok(Self::Postgres {
                    conn,
                    sql: format!(
                        "COPY {} ({list}) FROM STDIN BINARY",
                        quote_identifier(table)
                    ),
                    types,
                })
            }
        }
    }

    fn write(&mut self, rows: Vec<Vec<Cell>>) -> DbResult<()> {
        match self {
            Self::Sqlite { db, sql } => {
                let mut stmt = db.prepare_cached(sql)?;
                for row in &rows {
                    stmt.execute(params_from_iter(row.iter().map(Cell::value)))?;
                }
                Ok(())
            }
            Self::Postgres { conn, sql, types } => {
                let (sql, types) = (&*sql, &*types);
                conn.with_client(move |client| {
                    let sink = client.copy_in(sql)?;
                    let mut writer = postgres::binary_copy::BinaryCopyInWriter::new(sink, types);
                    for row in &rows {
                        let values: Vec<Value<'_>> = row.iter().map(Cell::value).collect();
                        let refs: Vec<&(dyn postgres::types::ToSql + Sync)> = values
                            .iter()
                            .map(|v| v as &(dyn postgres::types::ToSql + Sync))
                            .collect();
                        writer.write(&refs)?;
                    }
                    writer.finish().map(drop)
                })
            }
        }
    }
}

/// Checks that a page table the destination's triggers rebuilt holds what the source's does,
/// byte for byte, page by page.
fn compare_pages(
    source: &Store,
    dest: &Db,
    dest_path: &std::path::Path,
    table: &str,
    column: &str,
) -> Result<(), StoreError> {
    let first = format!(
        "SELECT page, {} FROM {} ORDER BY page LIMIT {PAGES_PER_READ}",
        quote_identifier(column),
        quote_identifier(table)
    );
    let next = format!(
        "SELECT page, {} FROM {} WHERE page > ?1 ORDER BY page LIMIT {PAGES_PER_READ}",
        quote_identifier(column),
        quote_identifier(table)
    );
    let read = |db: &Db, after: Option<i64>| -> DbResult<Vec<(i64, Vec<u8>)>> {
        let mut stmt = match after {
            None => db.prepare_cached(&first)?,
            Some(_) => db.prepare_cached(&next)?,
        };
        let params: Vec<i64> = after.into_iter().collect();
        stmt.query_map(params, |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect()
    };
    let mut after = None;
    loop {
        let theirs = read(&source.conn, after).map_err(|e| source.sql(e))?;
        let ours = read(dest, after).map_err(|e| sql_error(dest_path, e))?;
        let differs = theirs
            .iter()
            .zip(&ours)
            .find(|(a, b)| a != b)
            .map(|(a, b)| a.0.min(b.0))
            .or_else(|| {
                let at = theirs.len().min(ours.len());
                theirs.get(at).or(ours.get(at)).map(|p| p.0)
            });
        if let Some(page) = differs {
            return Err(StoreError::Sqlite {
                path: dest_path.to_path_buf(),
                source: DbError::Value(format!(
                    "the packed pages `{table}` rebuilt here differ from the source's at page {page}: nothing was copied"
                )),
            });
        }
        match theirs.last() {
            Some((page, _)) => after = Some(*page),
            None => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chunk stops at the byte budget however many rows were asked for, so that a table of
    /// large values (an incident's trace, a manifest's children) is copied in bounded memory.
    #[test]
    fn chunks_stop_at_the_byte_budget() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let big = "x".repeat(CHUNK_BYTES / 2 + 1);
        for digest in ["a", "b", "c"] {
            store
                .conn
                .execute(
                    "INSERT INTO manifest_facts (digest, media_type, children, learned_at) \
                     VALUES (?1, 'm', ?2, 0)",
                    [digest, big.as_str()],
                )
                .unwrap();
        }
        let first = "SELECT digest, children FROM manifest_facts ORDER BY digest LIMIT ?1";
        let next = "SELECT digest, children FROM manifest_facts WHERE (digest) > (?1) \
                    ORDER BY digest LIMIT ?2";
        let (chunk, bytes) = read_chunk(&store, first, next, None, CHUNK_ROWS, 2).unwrap();
        assert_eq!(chunk.len(), 2);
        assert!(bytes >= CHUNK_BYTES);
        let last = [chunk[1][0].clone()];
        let (rest, _) = read_chunk(&store, first, next, Some(&last), CHUNK_ROWS, 2).unwrap();
        assert_eq!(rest, vec![vec![Cell::Text("c".into()), Cell::Text(big)]]);
    }

    /// Every table of the schema is copied or rebuilt, in an order where each table comes
    /// after the tables it references, read by its primary key: a table a migration adds
    /// cannot be left out of `db copy`.
    #[test]
    fn every_table_is_copied_in_foreign_key_order() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        for sql in super::super::MIGRATION_SQL {
            conn.execute_batch(sql).unwrap();
        }
        let tables: BTreeSet<String> = conn
            .prepare(
                "SELECT name FROM sqlite_schema WHERE type = 'table' \
                 AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'",
            )
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let listed: BTreeSet<String> = COPIED_TABLES
            .iter()
            .map(|t| t.name)
            .chain(PAGE_TABLES.iter().map(|p| p.0))
            .map(str::to_owned)
            .collect();
        assert_eq!(listed, tables);
        assert_eq!(
            listed.len(),
            COPIED_TABLES.len() + PAGE_TABLES.len(),
            "a table is listed twice"
        );
        for (index, table) in COPIED_TABLES.iter().enumerate() {
            let earlier: BTreeSet<&str> = COPIED_TABLES[..=index].iter().map(|t| t.name).collect();
            let references: Vec<String> = conn
                .prepare("SELECT \"table\" FROM pragma_foreign_key_list(?1)")
                .unwrap()
                .query_map([table.name], |row| row.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            for target in references {
                assert!(
                    earlier.contains(target.as_str()),
                    "`{}` references `{target}`, listed after it",
                    table.name
                );
            }
            let key: Vec<String> = conn
                .prepare("SELECT name FROM pragma_table_info(?1) WHERE pk > 0 ORDER BY pk")
                .unwrap()
                .query_map([table.name], |row| row.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(key, table.key, "the key of `{}`", table.name);
        }
    }
}
