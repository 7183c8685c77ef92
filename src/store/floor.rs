//! The floor under an SQLite import, for benchmarks: the rows of an imported store copied by
//! SQLite itself into an empty store of the same schema, one `INSERT ... SELECT` a table in
//! one transaction, through the same indexes and triggers an import meets (the page tables
//! are filled by their triggers, as on import). No parsing, no lookups, no checks of the
//! client: the least time SQLite takes to write these rows into this schema on this machine.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension};

use super::db::{params, quote_identifier};
use super::{Store, StoreError, sql_error};

/// One table copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableCopy {
    pub table: String,
    pub rows: u64,
    pub took: Duration,
}

/// The bytes one table takes in an SQLite store, with its indexes apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSize {
    pub table: String,
    /// Rows held: the cells of the table's leaf pages, which is every row of a table with
    /// rowids (a `WITHOUT ROWID` table keeps some in its inner pages too).
    pub count: u64,
    /// The table's own b-tree.
    pub rows: u64,
    /// Its indexes, `UNIQUE` constraints' among them.
    pub indexes: u64,
}

/// The tables to copy: every table of the schema but those its triggers fill, parents before
/// the tables that refer to them.
fn tables_in_order(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare(
        "SELECT name FROM main.sqlite_schema
         WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '%_pages'
         ORDER BY name",
    )?;
    let mut left: Vec<String> = stmt
        .query_map([], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut parents = Vec::with_capacity(left.len());
    for table in &left {
        let mut stmt = conn.prepare("SELECT \"table\" FROM pragma_foreign_key_list(?1)")?;
        let refs: Vec<String> = stmt
            .query_map([table], |row| row.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        parents.push(refs);
    }
    let mut ordered = Vec::with_capacity(left.len());
    while !left.is_empty() {
        let ready = (0..left.len()).find(|&i| {
            parents[i]
                .iter()
                .all(|p| p == &left[i] || !left.contains(p))
        });
        // A cycle would leave every table waiting: the rest go in name order.
        let i = ready.unwrap_or(0);
        ordered.push(left.remove(i));
        parents.remove(i);
    }
    Ok(ordered)
}

fn columns(conn: &Connection, table: &str) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare("SELECT name FROM pragma_table_info(?1) ORDER BY cid")?;
    stmt.query_map([table], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()
}

/// Whether `table` of the main schema is a `WITHOUT ROWID` table.
fn without_rowid(conn: &Connection, table: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT wr FROM pragma_table_list WHERE schema = 'main' AND name = ?1",
        [table],
        |row| row.get::<_, i64>(0),
    )
    .map(|wr| wr != 0)
}

impl Store {
    /// Copies every row of the SQLite store at `from` into this one, which must be an empty
    /// SQLite store of the same schema version, and says how long each table took. Pages are
    /// packed as a bulk import packs them: the triggers dropped inside the transaction, the
    /// pages written once each after the rows, the triggers created again.
    ///
    /// With `rest`, this store may instead hold an earlier state of `from` (a copy of it taken
    /// before its last import), and only the rows it lacks are copied: in a table with rowids,
    /// those after the highest it holds; in a `WITHOUT ROWID` table, which is read whole, those
    /// whose key it lacks. Rows the import changed in place (a tag's span, a record's last use)
    /// are left as they were, so this is the floor under a backfill into a store in use; the
    /// copy runs in [`Store::bulk`] mode, as such an import does.
    pub fn copy_rows_from(
        &mut self,
        from: &Path,
        rest: bool,
    ) -> Result<Vec<TableCopy>, StoreError> {
        let path = self.path.clone();
        let fail = |e: rusqlite::Error| sql_error(&path, e.into());
        let Some(conn) = self.conn.sqlite() else {
            return Err(StoreError::Input(
                "the copy floor is measured on SQLite stores only".to_owned(),
            ));
        };
        if !from.is_file() {
            return Err(StoreError::Input(format!(
                "no SQLite store at `{}`",
                from.display()
            )));
        }
        let tables = tables_in_order(conn).map_err(fail)?;
        if !rest {
            for table in &tables {
                let rows: i64 = conn
                    .query_row(
                        &format!("SELECT count(*) FROM {}", quote_identifier(table)),
                        [],
                        |row| row.get(0),
                    )
                    .map_err(fail)?;
                if rows > 0 {
                    return Err(StoreError::Input(format!(
                        "`{}` already holds {rows} rows in `{table}`: the copy floor needs an empty store",
                        path.display()
                    )));
                }
            }
        }
        conn.execute("ATTACH DATABASE ?1 AS src", [from.to_string_lossy()])
            .map_err(fail)?;
        // Onto a store in use, with the settings an import into it writes with.
        let result = if rest {
            self.bulk(true).and_then(|()| {
                let copied = self.copy_attached(from, tables, rest);
                self.bulk(false).and(copied)
            })
        } else {
            self.copy_attached(from, tables, rest)
        };
        let detached = match self.conn.sqlite() {
            Some(conn) => conn.execute_batch("DETACH DATABASE src").map_err(fail),
            None => Ok(()),
        };
        let copied = result?;
        detached?;
        Ok(copied)
    }

    /// The bytes each table of this SQLite store takes (pages in use, from `dbstat`), largest
    /// first.
    pub fn table_sizes(&self) -> Result<Vec<TableSize>, StoreError> {
        let fail = |e: rusqlite::Error| sql_error(&self.path, e.into());
        let Some(conn) = self.conn.sqlite() else {
            return Err(StoreError::Input(
                "table sizes are measured on SQLite stores only".to_owned(),
            ));
        };
        let mut stmt = conn
            .prepare(
                "SELECT coalesce(m.tbl_name, s.name) AS owner,
                        sum(CASE WHEN s.name = coalesce(m.tbl_name, s.name) THEN s.pgsize ELSE 0 END)
                            AS own,
                        sum(CASE WHEN s.name = coalesce(m.tbl_name, s.name) THEN 0 ELSE s.pgsize END)
                            AS indexed,
                        sum(CASE WHEN s.name = coalesce(m.tbl_name, s.name) AND s.pagetype = 'leaf'
                                 THEN s.ncell ELSE 0 END)
                 FROM dbstat AS s LEFT JOIN sqlite_schema AS m ON m.name = s.name
                 GROUP BY owner
                 ORDER BY own + indexed DESC, owner",
            )
            .map_err(fail)?;
        let sizes = stmt
            .query_map([], |row| {
                Ok(TableSize {
                    table: row.get(0)?,
                    rows: row.get::<_, i64>(1)?.try_into().unwrap_or(0),
                    indexes: row.get::<_, i64>(2)?.try_into().unwrap_or(0),
                    count: row.get::<_, i64>(3)?.try_into().unwrap_or(0),
                })
            })
            .map_err(fail)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(fail)?;
        Ok(sizes)
    }

    /// Copies `tables` (in that order) from the attached `src`; with `rest`, only the rows
    /// this store lacks.
    fn copy_attached(
        &mut self,
        from: &Path,
        tables: Vec<String>,
        rest: bool,
    ) -> Result<Vec<TableCopy>, StoreError> {
        let path = self.path.clone();
        let fail = |e: rusqlite::Error| sql_error(&path, e.into());
        let Some(conn) = self.conn.sqlite() else {
            return Ok(Vec::new());
        };
        let version = |schema: &str| -> rusqlite::Result<i64> {
            conn.query_row(&format!("PRAGMA {schema}.user_version"), [], |row| {
                row.get(0)
            })
        };
        let (ours, theirs) = (
            version("main").map_err(fail)?,
            version("src").map_err(fail)?,
        );
        if ours != theirs {
            return Err(StoreError::Input(format!(
                "`{}` has schema version {theirs}, this store {ours}: migrate it first",
                from.display()
            )));
        }
        let mut statements = Vec::new();
        for table in tables {
            let present: Option<i64> = conn
                .query_row(
                    "SELECT 1 FROM src.sqlite_schema WHERE type = 'table' AND name = ?1",
                    [&table],
                    |row| row.get(0),
                )
                .optional()
                .map_err(fail)?;
            if present.is_none() {
                continue;
            }
            let names = columns(conn, &table)
                .map_err(fail)?
                .iter()
                .map(|c| quote_identifier(c))
                .collect::<Vec<_>>()
                .join(", ");
            let t = quote_identifier(&table);
            let sql = if !rest {
                format!("INSERT INTO main.{t} ({names}) SELECT {names} FROM src.{t}")
            } else if without_rowid(conn, &table).map_err(fail)? {
                format!("INSERT OR IGNORE INTO main.{t} ({names}) SELECT {names} FROM src.{t}")
            } else {
                let last = |schema: &str| -> rusqlite::Result<i64> {
                    conn.query_row(
                        &format!("SELECT coalesce(max(rowid), 0) FROM {schema}.{t}"),
                        [],
                        |row| row.get(0),
                    )
                };
                let (held, theirs) = (last("main").map_err(fail)?, last("src").map_err(fail)?);
                if held > theirs {
                    return Err(StoreError::Input(format!(
                        "`{}` holds rows of `{table}` after those of `{}`: it is not an earlier copy of it",
                        path.display(),
                        from.display()
                    )));
                }
                format!(
                    "INSERT INTO main.{t} ({names}) SELECT {names} FROM src.{t} WHERE rowid > {held}"
                )
            };
            statements.push((table, sql));
        }
        let db_fail = |e: super::db::DbError| sql_error(&path, e);
        let tx = self.conn.transaction().map_err(db_fail)?;
        let deferred = super::pages::defer(&tx).map_err(db_fail)?;
        let mut copied = Vec::with_capacity(statements.len() + 2);
        for (table, sql) in statements {
            let started = Instant::now();
            let rows = tx.execute(&sql, params![]).map_err(db_fail)?;
            copied.push(TableCopy {
                table,
                rows: rows as u64,
                took: started.elapsed(),
            });
        }
        let started = Instant::now();
        super::pages::finish(&tx, deferred).map_err(db_fail)?;
        copied.push(TableCopy {
            table: "(pages)".to_owned(),
            rows: 0,
            took: started.elapsed(),
        });
        let started = Instant::now();
        tx.commit().map_err(db_fail)?;
        copied.push(TableCopy {
            table: "(commit)".to_owned(),
            rows: 0,
            took: started.elapsed(),
        });
        Ok(copied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::bench::{Fleet, Shape, write_fleet};
    use crate::config::Config;
    use crate::store::ImportItem;

    /// A small synthetic fleet imported into a store at `path`.
    fn imported(path: &Path, shape: Shape) -> Store {
        imported_year(path, shape, 0)
    }

    /// Year `year` of a small synthetic fleet imported into a store at `path`.
    fn imported_year(path: &Path, shape: Shape, year: usize) -> Store {
        let mut lines = Vec::new();
        let fleet = Fleet {
            shape,
            runs: 300,
            pipelines: 12,
            builders: 4,
            mounts: 20,
            seed: 7,
            year,
        };
        write_fleet(&fleet, &mut lines).unwrap();
        let items: Vec<ImportItem> = String::from_utf8(lines)
            .unwrap()
            .lines()
            .map(|line| crate::wire::provenance::parse_line(line).unwrap())
            .collect();
        let mut store = Store::open(path).unwrap();
        store.import_batch(&items, 1, &Config::default()).unwrap();
        store
    }

    fn exported(store: &Store) -> Vec<String> {
        let mut items = Vec::new();
        store
            .export(|item| {
                items.push(format!("{item:?}"));
                Ok(())
            })
            .unwrap();
        items
    }

    fn table(store: &Store, sql: &str) -> Vec<(i64, Vec<u8>)> {
        let mut stmt = store.conn.prepare(sql).unwrap();
        stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    /// `copy` holds `source`'s packed pages, written by the triggers, and its chain, intact.
    fn assert_same_pages_and_chain(copy: &Store, source: &Store) {
        for sql in [
            "SELECT page, events FROM event_pages ORDER BY page",
            "SELECT page, artifacts FROM artifact_pages ORDER BY page",
            "SELECT page, records FROM record_pages ORDER BY page",
        ] {
            assert_eq!(table(copy, sql), table(source, sql), "{sql}");
        }
        let check = copy.verify_chain(None).unwrap();
        assert!(check.broken.is_none());
        assert_eq!(check.head, source.chain_head().unwrap().head);
    }

    /// The copy holds what the source holds: the same export, the same pages (written by the
    /// triggers) and the same chain, intact.
    #[test]
    fn the_copy_holds_every_row_and_its_pages() {
        for shape in [Shape::Default, Shape::Shared] {
            let dir = tempfile::tempdir().unwrap();
            let (from, into) = (dir.path().join("from.db"), dir.path().join("into.db"));
            let source = imported(&from, shape);
            let mut copy = Store::open(&into).unwrap();
            let copied = copy.copy_rows_from(&from, false).unwrap();
            let rows = |name: &str| copied.iter().find(|c| c.table == name).map(|c| c.rows);
            assert_eq!(rows("runs"), Some(300));
            assert!(rows("events").unwrap() > 300);
            let position = |name: &str| copied.iter().position(|c| c.table == name).unwrap();
            assert!(position("runs") < position("events"));
            assert!(position("pipelines") < position("runs"));
            assert_eq!(exported(&copy), exported(&source));
            assert_same_pages_and_chain(&copy, &source);
            let sizes = copy.table_sizes().unwrap();
            let events = sizes.iter().find(|t| t.table == "events").unwrap();
            assert!(events.rows > 0 && events.indexes > 0, "{events:?}");
            assert_eq!(Some(events.count), rows("events"));
            let runs = sizes.iter().find(|t| t.table == "runs").unwrap();
            assert_eq!(runs.count, 300);
            let pragma = |name: &str| -> u64 {
                let conn = copy.conn.sqlite().unwrap();
                conn.query_row(&format!("PRAGMA {name}"), [], |row| row.get::<_, i64>(0))
                    .unwrap()
                    .try_into()
                    .unwrap()
            };
            let counted: u64 = sizes.iter().map(|t| t.rows + t.indexes).sum();
            let file = pragma("page_count") * pragma("page_size");
            assert!(counted <= file, "{counted} > {file}");
            assert!(counted * 2 > file, "{counted} of {file}");
            let sorted = sizes
                .windows(2)
                .all(|w| w[0].rows + w[0].indexes >= w[1].rows + w[1].indexes);
            assert!(sorted, "{sizes:?}");
            // Into an empty store only.
            let err = copy.copy_rows_from(&from, false).unwrap_err();
            assert!(err.to_string().contains("rows in `"), "{err}");
            let missing = dir.path().join("missing.db");
            let err = Store::open(&dir.path().join("other.db"))
                .unwrap()
                .copy_rows_from(&missing, false)
                .unwrap_err();
            assert!(err.to_string().contains("no SQLite store"), "{err}");
            assert!(!missing.exists());
        }
    }

    /// With `rest`, a copy of a store taken before its last import gains the rows that import
    /// added, and only those: the same runs, events, chain and pages as the store. A store
    /// ahead of the source is refused.
    #[test]
    fn the_rest_of_a_grown_store_is_copied_onto_its_earlier_copy() {
        for shape in [Shape::Default, Shape::Shared] {
            let dir = tempfile::tempdir().unwrap();
            let (from, into) = (dir.path().join("from.db"), dir.path().join("into.db"));
            let earlier = dir.path().join("earlier.db");
            drop(imported_year(&from, shape, 0));
            std::fs::copy(&from, &into).unwrap();
            std::fs::copy(&from, &earlier).unwrap();
            let source = imported_year(&from, shape, 1);
            let mut copy = Store::open(&into).unwrap();
            let copied = copy.copy_rows_from(&from, true).unwrap();
            let rows = |name: &str| copied.iter().find(|c| c.table == name).map(|c| c.rows);
            assert_eq!(rows("runs"), Some(300));
            assert_eq!(rows("pipelines"), Some(0));
            assert!(rows("events").unwrap() > 300);
            for sql in [
                "SELECT id, CAST(pipeline_id || ' ' || run_key || ' ' || started_at AS BLOB)
                 FROM runs ORDER BY id",
                "SELECT id, CAST(run_id || ' ' || kind || ' ' || target || ' ' || at AS BLOB)
                 FROM events ORDER BY id",
                "SELECT seq, hash FROM run_chain ORDER BY seq",
            ] {
                assert_eq!(table(&copy, sql), table(&source, sql), "{sql}");
            }
            assert_same_pages_and_chain(&copy, &source);
            let err = copy.copy_rows_from(&earlier, true).unwrap_err();
            assert!(err.to_string().contains("not an earlier copy"), "{err}");
        }
    }
}
