//! What the purge commands (`incident purge`, `sweep`) share on the command line: asking
//! before acting, progress bars, and how a journal row is shown.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Mutex;

use anyhow::Result;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::error::RefusedError;
use crate::plan::ActionKind;
use crate::printer::Printer;
use crate::purge::ActionState;
use crate::purge::execute::Reporter;
use crate::store::ActionRow;

/// Shows the plan on a terminal and asks before acting on `count` targets; without a
/// terminal to ask on, refuses.
pub fn confirm(plan: &str, count: usize) -> Result<()> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(RefusedError(format!(
            "refusing to act on {} without confirmation: rerun with --yes",
            crate::report::count(count, "target", "targets")
        ))
        .into());
    }
    eprint!(
        "{plan}about to act on {}. proceed? [y/N] ",
        crate::report::count(count, "target", "targets")
    );
    let mut answer = String::new();
    stdin.read_line(&mut answer)?;
    if !matches!(answer.trim(), "y" | "Y" | "yes") {
        return Err(RefusedError("not confirmed: nothing was done".to_owned()).into());
    }
    Ok(())
}

/// One warning per failed action, with its error.
pub fn warn_failed(printer: Printer, rows: &[ActionRow]) {
    for row in rows.iter().filter(|r| r.state == ActionState::Failed) {
        printer.warn(format!(
            "action {} ({}) failed: {}",
            row.seq,
            row.action.kind.as_str(),
            row.error.as_deref().unwrap_or("")
        ));
    }
}

/// One journal row as JSON output shows it.
pub fn action_json(row: &ActionRow) -> serde_json::Value {
    serde_json::json!({
        "seq": row.seq,
        "kind": row.action.kind.as_str(),
        "place": row.action.place,
        "target": row.action.target,
        "reason": row.action.reason,
        "in_scope": row.action.in_scope,
        "state": row.state,
        "outcome": row.outcome,
        "error": row.error,
        "evidence_gap": row.evidence_gap,
    })
}

/// Progress bars per action kind, on stderr.
#[derive(Default)]
pub struct Bars {
    multi: MultiProgress,
    bars: Mutex<BTreeMap<ActionKind, ProgressBar>>,
}

impl Reporter for Bars {
    fn on_start(&self, kind: ActionKind, total: usize) {
        let bar = self.multi.add(ProgressBar::new(total as u64));
        bar.set_style(
            ProgressStyle::with_template("{prefix:>18} [{bar:30}] {pos}/{len} {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(kind.as_str());
        self.bars.lock().expect("bars").insert(kind, bar);
    }

    fn on_done(&self, kind: ActionKind, ok: bool) {
        if let Some(bar) = self.bars.lock().expect("bars").get(&kind) {
            bar.inc(1);
            if !ok {
                bar.set_message("(failures)");
            }
            if bar.position() == bar.length().unwrap_or(0) {
                bar.finish();
            }
        }
    }
}
