//! Entries as the stored rows give them: what appending hashes and verifying recomputes.

use crate::store::db::{Db, OptionalExtension, params};

use super::EntryKind;
use super::encode::{
    DetailFacts, ENCODING_V2, Entry, EventFacts, ReceiptFacts, Ref, RunFacts, Target,
};

/// The columns that name an event's target, for a query over `events e`: the table the kind
/// points into is joined, the others are not.
const TARGET_COLUMNS: &str = "e.kind, e.target,
       a.backend, a.locator, a.digest, a.key,
       m.builder_id, mb.name, m.namespace, m.mount_id,
       b.name,
       r.builder_id, rb.name, r.record_id, r.record_type, r.description";

const TARGET_JOINS: &str = "
    LEFT JOIN artifacts a
        ON e.kind IN ('imported', 'exported', 'produced', 'used_base') AND a.id = e.target
    LEFT JOIN mounts m ON e.kind IN ('read_mount', 'wrote_mount') AND m.id = e.target
    LEFT JOIN builders mb ON mb.id = m.builder_id
    LEFT JOIN builders b ON e.kind = 'ran_on' AND b.id = e.target
    LEFT JOIN builder_records r
        ON e.kind IN ('created_record', 'reused_record') AND r.id = e.target
    LEFT JOIN builders rb ON rb.id = r.builder_id";

/// The event kind and target named by [`TARGET_COLUMNS`], starting at column `at`.
fn target_at(
    row: &crate::store::db::Row<'_>,
    at: usize,
) -> crate::store::db::DbResult<(String, Target)> {
    let kind: String = row.get(at)?;
    let id: i64 = row.get(at + 1)?;
    let builder = |id: Option<i64>, name: Option<String>| match (id, name) {
        (_, Some(name)) => Ref::Named(name),
        (Some(id), None) => Ref::Gone(id),
        (None, None) => Ref::None,
    };
    let target = if let Some(backend) = row.get::<_, Option<String>>(at + 2)? {
        Target::Artifact {
            backend,
            locator: row.get(at + 3)?,
            digest: row.get(at + 4)?,
            key: row.get(at + 5)?,
        }
    } else if let Some(mount_id) = row.get::<_, Option<String>>(at + 9)? {
        Target::Mount {
            builder: builder(row.get(at + 6)?, row.get(at + 7)?),
            namespace: row.get(at + 8)?,
            mount_id,
        }
    } else if let Some(name) = row.get::<_, Option<String>>(at + 10)? {
        Target::Builder { name }
    } else if let Some(record_id) = row.get::<_, Option<String>>(at + 13)? {
        Target::Record {
            builder: builder(row.get(at + 11)?, row.get(at + 12)?),
            record_id,
            record_type: row.get(at + 14)?,
            description: row.get(at + 15)?,
        }
    } else {
        Target::Unresolved { id }
    };
    Ok((kind, target))
}

/// A run's stored facts, or `None` when its row is gone.
pub(super) fn load_run(conn: &Db, run: i64) -> crate::store::db::DbResult<Option<RunFacts>> {
    conn.prepare_cached(
        "SELECT p.name, r.run_key, r.step, r.commit_sha, r.git_ref, r.builder_id, b.name,
                r.started_at, r.finished_at, r.status, r.has_records, r.overlapped,
                r.recorded_at, r.trust_level
         FROM runs r
         LEFT JOIN pipelines p ON p.id = r.pipeline_id
         LEFT JOIN builders b ON b.id = r.builder_id
         WHERE r.id = ?1",
    )?
    .query_row([run], |row| {
        let builder = match (
            row.get::<_, Option<i64>>(5)?,
            row.get::<_, Option<String>>(6)?,
        ) {
            (_, Some(name)) => Ref::Named(name),
            (Some(id), None) => Ref::Gone(id),
            (None, None) => Ref::None,
        };
        Ok(RunFacts {
            pipeline: row.get(0)?,
            run_key: row.get(1)?,
            step: row.get(2)?,
            commit: row.get(3)?,
            git_ref: row.get(4)?,
            builder,
            started_at: row.get(7)?,
            finished_at: row.get(8)?,
            status: row.get(9)?,
            has_records: row.get(10)?,
            overlapped: row.get(11)?,
            recorded_at: row.get(12)?,
            trust_level: row.get(13)?,
        })
    })
    .optional()
}

/// Which rows of a run an entry covers: ids in `(after, through]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Span {
    pub events_after: i64,
    pub events_through: i64,
    pub details_after: i64,
    pub details_through: i64,
}

/// The run's collector receipt as stored, if it has one.
pub(super) fn load_receipt(
    conn: &Db,
    run: i64,
) -> crate::store::db::DbResult<Option<ReceiptFacts>> {
    conn.prepare_cached(
        "SELECT received_at, identity, late, time_suspect FROM run_receipts WHERE run_id = ?1",
    )?
    .query_row([run], |row| {
        Ok(ReceiptFacts {
            received_at: row.get(0)?,
            identity: row.get(1)?,
            late: row.get(2)?,
            time_suspect: row.get(3)?,
        })
    })
    .optional()
}

/// An entry as the stored rows give it, in encoding `version`, or `None` when the run's row
/// is gone.
pub(super) fn load_entry(
    conn: &Db,
    (seq, version): (i64, u8),
    kind: EntryKind,
    run: i64,
    span: Span,
) -> crate::store::db::DbResult<Option<Entry>> {
    let Some(facts) = load_run(conn, run)? else {
        return Ok(None);
    };
    let events = conn
        .prepare_cached(&format!(
            "SELECT e.at, e.detail, {TARGET_COLUMNS} FROM events e {TARGET_JOINS}
             WHERE e.run_id = ?1 AND e.id > ?2 AND e.id <= ?3 ORDER BY e.id"
        ))?
        .query_map(
            params![run, span.events_after, span.events_through],
            |row| {
                let (kind, target) = target_at(row, 2)?;
                Ok(EventFacts {
                    kind,
                    target,
                    at: row.get(0)?,
                    detail: row.get(1)?,
                })
            },
        )?
        .collect::<crate::store::db::DbResult<Vec<_>>>()?;
    let details = if span.details_through > span.details_after {
        conn.prepare_cached(&format!(
            "SELECT d.detail, d.at, {TARGET_COLUMNS}
             FROM event_details d JOIN events e ON e.id = d.event_id {TARGET_JOINS}
             WHERE e.run_id = ?1 AND d.id > ?2 AND d.id <= ?3 ORDER BY d.id"
        ))?
        .query_map(
            params![run, span.details_after, span.details_through],
            |row| {
                let (event_kind, target) = target_at(row, 2)?;
                Ok(DetailFacts {
                    event_kind,
                    target,
                    detail: row.get(0)?,
                    at: row.get(1)?,
                })
            },
        )?
        .collect::<crate::store::db::DbResult<Vec<_>>>()?
    } else {
        Vec::new()
    };
    let receipt = if version >= ENCODING_V2 {
        load_receipt(conn, run)?
    } else {
        None
    };
    Ok(Some(Entry {
        version,
        seq,
        kind,
        run: facts,
        events,
        details,
        receipt,
    }))
}
