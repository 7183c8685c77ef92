//! `cachewarden verify-log`: recomputes the tamper-evident chain of recorded runs, names its
//! first break, and checks it reaches a head kept elsewhere.

use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use crate::ExitStatus;
use crate::cli::{OutputFormat, VerifyLogArgs};
use crate::commands::{open_read_store, write_stdout};
use crate::error::InputError;
use crate::report::escape::Term;
use crate::store::{ChainBreak, ChainCheck, ChainHash};

/// The JSON output's version (`schema/verify-log.schema.json`).
const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Serialize)]
struct VerifyDoc<'a> {
    schema_version: u32,
    /// No break, and the kept head (when given) reached.
    intact: bool,
    /// Entries stored.
    length: i64,
    /// The head recomputed over the entries before the break (all of them when intact).
    head: String,
    expected_head: Option<ExpectedDoc>,
    #[serde(rename = "break")]
    broken: Option<BreakDoc<'a>>,
}

#[derive(Debug, Serialize)]
struct ExpectedDoc {
    hash: String,
    /// The entry whose hash it is, or null when the chain does not reach it.
    reached_at: Option<i64>,
}

#[derive(Debug, Serialize)]
struct BreakDoc<'a> {
    entry: i64,
    run: Option<&'a str>,
    run_id: i64,
    kind: &'static str,
    reason: &'static str,
}

pub fn verify_log(args: &VerifyLogArgs, db: &Path) -> Result<ExitStatus> {
    let expected = args
        .head
        .as_deref()
        .map(|text| {
            ChainHash::parse(text).ok_or_else(|| {
                InputError::invalid(format!(
                    "`--head` `{}` is not a chain head: 64 hex digits expected (as `verify-log` prints it)",
                    Term(text)
                ))
            })
        })
        .transpose()?;
    let store = open_read_store(db)?;
    let check = store.verify_chain(expected.as_ref())?;
    let intact = check.broken.is_none() && (expected.is_none() || check.reached_at.is_some());
    match args.format {
        OutputFormat::Json => {
            let doc = VerifyDoc {
                schema_version: SCHEMA_VERSION,
                intact,
                length: check.length,
                head: check.head.to_string(),
                expected_head: expected.map(|hash| ExpectedDoc {
                    hash: hash.to_string(),
                    reached_at: check.reached_at,
                }),
                broken: check.broken.as_ref().map(|b| BreakDoc {
                    entry: b.entry,
                    run: b.run.as_deref(),
                    run_id: b.run_id,
                    kind: b.kind.as_str(),
                    reason: b.kind.describe(),
                }),
            };
            write_stdout(&format!(
                "{}\n",
                crate::report::json::to_string_pretty(&doc)?
            ))?;
        }
        OutputFormat::Text => write_stdout(&text(&check, expected.as_ref()))?,
    }
    Ok(if intact {
        ExitStatus::Success
    } else {
        ExitStatus::Findings
    })
}

fn text(check: &ChainCheck, expected: Option<&ChainHash>) -> String {
    let mut out = String::new();
    match &check.broken {
        None => out.push_str(&format!(
            "chain intact: {} {}, head {}\n",
            check.length,
            if check.length == 1 {
                "entry"
            } else {
                "entries"
            },
            check.head
        )),
        Some(broken) => {
            out.push_str(&format!(
                "chain broken at entry {}, {}: {}\n",
                broken.entry,
                run_label(broken),
                broken.kind.describe()
            ));
            if broken.entry > 1 {
                out.push_str(&format!(
                    "entries 1 to {} hold, head {}\n",
                    broken.entry - 1,
                    check.head
                ));
            }
        }
    }
    if let Some(hash) = expected {
        match check.reached_at {
            Some(entry) => out.push_str(&format!("reaches the kept head {hash} at entry {entry}\n")),
            None if check.broken.is_none() => out.push_str(&format!(
                "does not reach the kept head {hash}: the chain was rewritten since that head was kept, or the head is another store's\n"
            )),
            None => out.push_str(&format!(
                "does not reach the kept head {hash} before the break\n"
            )),
        }
    }
    out
}

fn run_label(broken: &ChainBreak) -> String {
    match &broken.run {
        Some(name) => format!("run `{}`", Term(name)),
        None => format!("run id {} (its row is gone)", broken.run_id),
    }
}
