//! What the collector keeps beside the runs: a receipt for each accepted run (when it was
//! received, on whose word, whether late or time-suspect) and the requests it refused.

use crate::store::db::{OptionalExtension, params};

use super::{RecordOutcome, Store, StoreError, sql_error};
use crate::config::Config;
use crate::ingest::progress::{Mode, StepHit};
use crate::model::RunRecord;
use crate::time::Micros;

/// How the collector received a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub received_at: Micros,
    pub identity: String,
    pub late: bool,
    /// Why the run's own times are not believed.
    pub time_suspect: Option<String>,
    /// The earliest the run may have begun, as the collector bounds it from its token's issue
    /// time; `None` when the token bounds nothing.
    pub began_after: Option<Micros>,
}

/// A refused request, as kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub at: Micros,
    pub status: u16,
    pub code: String,
    pub reason: String,
    pub claimed: String,
    pub run_name: Option<String>,
}

/// Bytes of a refused request's text kept: evidence of a flood must not become the flood.
const KEPT_BYTES: usize = 1024;

/// The first [`KEPT_BYTES`] of `text`, a NUL written `\0`: the store keeps no NUL (PostgreSQL's
/// text cannot hold one), and the refused request is kept alike on both engines.
fn cut(text: &str) -> String {
    let mut end = text.len().min(KEPT_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].replace('\0', "\\0")
}

/// Keeps the receipt of a run that has none yet; whether it was kept (the run's chain entry
/// then covers it).
pub(super) fn insert_receipt(
    tx: &crate::store::db::Transaction<'_>,
    run: i64,
    receipt: &Receipt,
) -> crate::store::db::DbResult<bool> {
    let added = tx
        .prepare_cached(
            "INSERT INTO run_receipts
                 (run_id, received_at, identity, late, time_suspect, began_after)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
        )?
        .execute(params![
            run,
            receipt.received_at,
            receipt.identity,
            receipt.late,
            receipt.time_suspect,
            receipt.began_after
        ])?;
    Ok(added == 1)
}

impl Store {
    /// Stores a run the collector received, with its receipt and the per-step cache hits
    /// the hook sent, in one transaction. A run received again keeps its first receipt (and
    /// its steps; a step it lacked is added).
    pub fn record_received_run(
        &mut self,
        record: &RunRecord,
        config: &Config,
        receipt: &Receipt,
        steps: Option<(Mode, &[StepHit])>,
    ) -> Result<(RecordOutcome, Receipt), StoreError> {
        let outcome = self.record_run_with(record, config, Some(receipt), steps)?;
        // Receipts are append-only: the one kept is the one read back.
        let kept = self
            .conn
            .query_row(
                "SELECT received_at, identity, late, time_suspect, began_after FROM run_receipts
                 WHERE run_id = ?1",
                [outcome.run],
                |row| {
                    Ok(Receipt {
                        received_at: row.get(0)?,
                        identity: row.get(1)?,
                        late: row.get(2)?,
                        time_suspect: row.get(3)?,
                        began_after: row.get(4)?,
                    })
                },
            )
            .optional()
            .map_err(|e| sql_error(&self.path, e))?;
        Ok((outcome, kept.unwrap_or_else(|| receipt.clone())))
    }

    /// Whether the store answers a query.
    pub fn ping(&mut self) -> Result<(), StoreError> {
        self.conn
            .query_row("SELECT EXISTS (SELECT 1 FROM run_receipts)", [], |_| Ok(()))
            .map_err(|e| sql_error(&self.path, e))
    }

    /// Keeps a refused request as evidence.
    pub fn record_refusal(&mut self, refused: &Refused) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO collector_refusals (at, status, code, reason, claimed, run_name)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    refused.at,
                    refused.status,
                    cut(&refused.code),
                    cut(&refused.reason),
                    cut(&refused.claimed),
                    refused.run_name.as_deref().map(cut)
                ],
            )
            .map_err(|e| sql_error(&self.path, e))?;
        Ok(())
    }

    /// The refused requests, oldest first.
    pub fn refusals(&self) -> Result<Vec<Refused>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT at, status, code, reason, claimed, run_name FROM collector_refusals
                 ORDER BY id",
            )
            .map_err(|e| sql_error(&self.path, e))?;
        stmt.query_map([], |row| {
            Ok(Refused {
                at: row.get(0)?,
                status: row.get(1)?,
                code: row.get(2)?,
                reason: row.get(3)?,
                claimed: row.get(4)?,
                run_name: row.get(5)?,
            })
        })
        .and_then(|rows| rows.collect())
        .map_err(|e| sql_error(&self.path, e))
    }
}
