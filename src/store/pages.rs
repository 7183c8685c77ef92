//! Packed pages written once per page for a bulk write, instead of once per row.
//!
//! On SQLite, triggers append each new event, artifact and builder record to its page
//! (migrations 0005 and 0006): a page's blob is rewritten for every row it gains. A bulk
//! import instead drops those triggers inside its transaction, writes its rows, then packs
//! the rows it added, in id order, appends each page's
//! share once, and creates the triggers again before it commits. The transaction holds the
//! write lock throughout, so no other writer sees the store without its triggers, and a
//! failure rolls the triggers back with the rows. The packing is the triggers' encoding, and
//! `store::write`'s tests check that both give the same bytes.

use crate::store::db::{DbError, DbResult, OptionalExtension, Row, Transaction, params};

/// A page table kept by a trigger: the rows' table, the trigger, the page table and its
/// column, the query that reads the rows after an id in id order, and how a row is packed
/// (the trigger's encoding, written here in Rust).
struct Packed {
    table: &'static str,
    trigger: &'static str,
    pages: &'static str,
    column: &'static str,
    select: &'static str,
    pack: fn(&Row<'_>, &mut Vec<u8>) -> DbResult<()>,
}

/// A text as the triggers pack it: its length in bytes (4, big-endian), then its bytes.
fn text(row: &Row<'_>, i: usize, out: &mut Vec<u8>) -> DbResult<()> {
    let bytes = row.get_ref(i)?.as_bytes()?;
    let len = u32::try_from(bytes.len()).map_err(|_| DbError::Value("text over 4 GiB".into()))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

fn int(row: &Row<'_>, i: usize, out: &mut Vec<u8>) -> DbResult<()> {
    out.extend_from_slice(&row.get::<_, i64>(i)?.to_be_bytes());
    Ok(())
}

/// The new events a bulk write packs: the kinds the trigger packs, numbered as it numbers
/// them. `+kind` keeps the planner on the range of new ids: through the index by kind it would
/// read every event of those kinds the store holds, once a batch.
pub(super) const EVENTS_SELECT: &str = "SELECT id, run_id,
        CASE kind
            WHEN 'imported' THEN 1 WHEN 'exported' THEN 2 WHEN 'produced' THEN 3
            WHEN 'used_base' THEN 4 WHEN 'read_mount' THEN 5 WHEN 'wrote_mount' THEN 6
            WHEN 'created_record' THEN 7 ELSE 8
        END,
        target, at
    FROM events
    WHERE id > ?1
      AND +kind IN ('imported', 'exported', 'produced', 'used_base', 'read_mount',
                    'wrote_mount', 'created_record', 'reused_record')
    ORDER BY id";

const PACKED: [Packed; 3] = [
    Packed {
        table: "events",
        trigger: "event_pages_append",
        pages: "event_pages",
        column: "events",
        select: EVENTS_SELECT,
        pack: |row, out| {
            int(row, 0, out)?;
            int(row, 1, out)?;
            out.push(u8::try_from(row.get::<_, i64>(2)?).unwrap_or(8));
            int(row, 3, out)?;
            int(row, 4, out)
        },
    },
    Packed {
        table: "artifacts",
        trigger: "artifact_pages_append",
        pages: "artifact_pages",
        column: "artifacts",
        select: "SELECT id, backend, locator, digest, key FROM artifacts WHERE id > ?1 ORDER BY id",
        pack: |row, out| {
            int(row, 0, out)?;
            (1..5).try_for_each(|i| text(row, i, out))
        },
    },
    Packed {
        table: "builder_records",
        trigger: "record_pages_append",
        pages: "record_pages",
        column: "records",
        select: "SELECT id, builder_id, record_id, record_type, description
                 FROM builder_records WHERE id > ?1 ORDER BY id",
        pack: |row, out| {
            int(row, 0, out)?;
            int(row, 1, out)?;
            (2..5).try_for_each(|i| text(row, i, out))
        },
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
        let mut select = tx.prepare_cached(packed.select)?;
        let mut rows = select.query([after])?;
        while let Some(row) = rows.next()? {
            let page = row.get::<_, i64>(0)? >> 6;
            if current.as_ref().is_some_and(|(at, _)| *at != page)
                && let Some((at, buf)) = current.take()
            {
                append.execute(params![at, buf])?;
            }
            let (_, buf) = current.get_or_insert_with(|| (page, Vec::new()));
            (packed.pack)(&row, buf)?;
        }
        if let Some((at, buf)) = current {
            append.execute(params![at, buf])?;
        }
        tx.execute_batch(&sql)?;
    }
    Ok(())
}
