//! Packed pages written once per page for a bulk write, instead of once per row.
//!
//! On SQLite, triggers append each new event, artifact and builder record to its page
//! (migrations 0005 and 0006): a page's blob is rewritten for every row it gains. A bulk
//! import instead drops those triggers inside its transaction, writes its rows, then packs
//! the rows it added, in id order, with the triggers' own expressions, appends each page's
//! share once, and creates the triggers again before it commits. The transaction holds the
//! write lock throughout, so no other writer sees the store without its triggers, and a
//! failure rolls the triggers back with the rows.

use crate::store::db::{DbResult, OptionalExtension, Transaction, params};

/// A page table kept by a trigger: the rows' table, the trigger, the page table and its
/// column, and the query that packs the rows after an id, in id order, as the trigger does.
struct Packed {
    table: &'static str,
    trigger: &'static str,
    pages: &'static str,
    column: &'static str,
    pack: &'static str,
}

const PACKED: [Packed; 3] = [
    Packed {
        table: "events",
        trigger: "event_pages_append",
        pages: "event_pages",
        column: "events",
        pack: "SELECT id >> 6,
                      unhex(printf('%016X%016X%02X%016X%016X', id, run_id,
                          CASE kind
                              WHEN 'imported' THEN 1 WHEN 'exported' THEN 2 WHEN 'produced' THEN 3
                              WHEN 'used_base' THEN 4 WHEN 'read_mount' THEN 5 WHEN 'wrote_mount' THEN 6
                              WHEN 'created_record' THEN 7 ELSE 8
                          END,
                          target, at))
               FROM events
               WHERE id > ?1
                 AND kind IN ('imported', 'exported', 'produced', 'used_base', 'read_mount',
                              'wrote_mount', 'created_record', 'reused_record')
               ORDER BY id",
    },
    Packed {
        table: "artifacts",
        trigger: "artifact_pages_append",
        pages: "artifact_pages",
        column: "artifacts",
        pack: "SELECT id >> 6,
                      unhex(printf('%016X', id)
                          || printf('%08X', length(CAST(backend AS BLOB))) || hex(backend)
                          || printf('%08X', length(CAST(locator AS BLOB))) || hex(locator)
                          || printf('%08X', length(CAST(digest AS BLOB))) || hex(digest)
                          || printf('%08X', length(CAST(key AS BLOB))) || hex(key))
               FROM artifacts WHERE id > ?1 ORDER BY id",
    },
    Packed {
        table: "builder_records",
        trigger: "record_pages_append",
        pages: "record_pages",
        column: "records",
        pack: "SELECT id >> 6,
                      unhex(printf('%016X%016X', id, builder_id)
                          || printf('%08X', length(CAST(record_id AS BLOB))) || hex(record_id)
                          || printf('%08X', length(CAST(record_type AS BLOB))) || hex(record_type)
                          || printf('%08X', length(CAST(description AS BLOB))) || hex(description))
               FROM builder_records WHERE id > ?1 ORDER BY id",
    },
];

/// The page triggers dropped for a bulk write: each with its SQL and the highest row id its
/// table held before.
pub(super) struct Deferred(Vec<(&'static Packed, String, i64)>);

/// Drops the page triggers in `tx` (SQLite only; PostgreSQL's fire once per statement). Pair
/// with [`finish`] before committing.
pub(super) fn defer(tx: &Transaction<'_>) -> DbResult<Deferred> {
    let mut deferred = Vec::new();
    if tx.engine() != crate::store::db::Engine::Sqlite {
        return Ok(Deferred(deferred));
    }
    for packed in &PACKED {
        let sql: Option<String> = tx
            .prepare_cached("SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = ?1")?
            .query_row([packed.trigger], |row| row.get(0))
            .optional()?;
        // A store without the trigger keeps no pages for the table: nothing to defer.
        let Some(sql) = sql else { continue };
        let after: i64 = tx
            .prepare_cached(&format!(
                "SELECT coalesce(max(id), 0) FROM {}",
                packed.table
            ))?
            .query_row([], |row| row.get(0))?;
        tx.execute_batch(&format!("DROP TRIGGER {}", packed.trigger))?;
        deferred.push((packed, sql, after));
    }
    Ok(Deferred(deferred))
}

/// Appends the rows written since [`defer`] to their pages, a page at a time, and creates the
/// triggers again.
pub(super) fn finish(tx: &Transaction<'_>, deferred: Deferred) -> DbResult<()> {
    for (packed, sql, after) in deferred.0 {
        let append = format!(
            "INSERT INTO {pages} (page, {column}) VALUES (?1, ?2)
             ON CONFLICT (page) DO UPDATE SET {column} = CAST({column} || excluded.{column} AS BLOB)",
            pages = packed.pages,
            column = packed.column,
        );
        let mut append = tx.prepare_cached(&append)?;
        let mut current: Option<(i64, Vec<u8>)> = None;
        let mut select = tx.prepare_cached(packed.pack)?;
        let mut rows = select.query([after])?;
        while let Some(row) = rows.next()? {
            let page: i64 = row.get(0)?;
            let bytes: Vec<u8> = row.get(1)?;
            match &mut current {
                Some((at, buf)) if *at == page => buf.extend_from_slice(&bytes),
                _ => {
                    if let Some((at, buf)) = current.replace((page, bytes)) {
                        append.execute(params![at, buf])?;
                    }
                }
            }
        }
        if let Some((at, buf)) = current {
            append.execute(params![at, buf])?;
        }
        tx.execute_batch(&sql)?;
    }
    Ok(())
}
