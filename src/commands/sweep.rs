//! `cachewarden sweep`: purge by policy through the incident executor, journal and scope
//! guard. A dry run unless `--execute`; one sweep at a time.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, Result};

use crate::ExitStatus;
use crate::cli::{OutputFormat, SweepArgs};
use crate::commands::{journal, open_existing_store, write_stdout};
use crate::config::Config;
use crate::error::{InputError, RefusedError};
use crate::plan::Action;
use crate::printer::Printer;
use crate::purge::ActionState;
use crate::purge::execute::{self, Reporter};
use crate::report::escape::Term;
use crate::report::incident::describe_target;
use crate::store::{Store, SweepKinds};
use crate::sweep::metrics::{self, SweepMetrics};
use crate::sweep::{self, Entity, Policy, Selects, Verdict};
use crate::time;

/// The trace column of a sweep's incident row: a sweep traces nothing, and the report reads the
/// column as a trace (`schema/trace.schema.json`).
const EMPTY_TRACE: &str = r#"{"schema_version":1,"ignore_time":false,"seeds":[],"runs":[],"cache_refs":[],"mounts":[],"builders":[],"images":[],"records":[]}"#;

pub async fn sweep(
    args: &SweepArgs,
    db: &Path,
    config: &Config,
    printer: Printer,
) -> Result<ExitStatus> {
    let clock = Instant::now();
    let policy =
        Policy::load(&args.policy, config).map_err(|e| InputError::invalid(e.to_string()))?;
    let mut store = open_existing_store(db)?;
    // Held until the sweep returns: the kernel drops it if the process dies.
    let _lock = if args.execute {
        let lock = if store.locks_in_store() {
            SweepLock::in_store(db)?
        } else {
            SweepLock::take(db)?
        };
        let closed = store.close_interrupted_sweeps()?;
        if closed > 0 {
            printer.warn(format!(
                "closed {closed} sweeps an earlier process left unfinished; this sweep plans what they left"
            ));
        }
        Some(lock)
    } else {
        None
    };
    let planned = plan(&store, &policy, config)?;
    let outside: Vec<&Action> = planned.actions.iter().filter(|a| !a.in_scope).collect();
    if let Some(first) = outside.first() {
        printer.warn(format!(
            "{} planned actions are outside the configured scope and will not run (the first: {})",
            outside.len(),
            describe_target(&first.target)
        ));
    }
    if !args.execute {
        return dry_run(args, db, &planned, clock);
    }
    if planned.actions.is_empty() {
        printer.status(format!(
            "sweep by `{}`: nothing to purge",
            args.policy.display()
        ));
        if args.format == OutputFormat::Json {
            write_json(None, &planned.rules, &[])?;
        }
        finish_metrics(
            args.metrics_file.as_deref(),
            db,
            SweepMetrics::default(),
            clock,
        )?;
        return Ok(ExitStatus::Success);
    }
    confirm(args, &planned.actions)?;
    run(args, db, store, config, planned, printer, clock).await
}

/// A sweep's plan, and what each rule decided.
struct Planned {
    actions: Vec<Action>,
    rules: Vec<serde_json::Value>,
}

/// Loads what the policy selects from the store and plans its purge.
fn plan(store: &Store, policy: &Policy, config: &Config) -> Result<Planned> {
    let candidates = store.sweep_candidates(SweepKinds {
        cache_refs: policy.selects(Selects::CacheRefs),
        mounts: policy.selects(Selects::Mounts),
        records: policy.selects(Selects::BuilderRecords),
    })?;
    let selection = sweep::select::select(policy, &candidates, time::now(), &|level| {
        config.trust_rank(level)
    });
    let mut builders = BTreeSet::new();
    let mut mounts = BTreeSet::new();
    for decision in selection.purged() {
        match decision.entity {
            Entity::Mount(i) => {
                let m = &candidates.mounts[i];
                builders.insert(m.builder.clone());
                mounts.insert((m.builder.clone(), m.mount_id.clone()));
            }
            Entity::Record(i) => {
                builders.insert(candidates.records[i].builder.clone());
            }
            Entity::CacheRef(_) => {}
        }
    }
    let ctx = store.plan_context(&builders, &mounts)?;
    let actions = sweep::select::plan(&selection, &candidates, &ctx, &config.scope);
    let mut counts: BTreeMap<usize, (usize, usize)> = BTreeMap::new();
    for d in &selection.decisions {
        let entry = counts.entry(d.rule).or_default();
        match d.verdict {
            Verdict::Purge => entry.0 += 1,
            Verdict::Keep => entry.1 += 1,
        }
    }
    let rules = policy
        .rules
        .iter()
        .enumerate()
        .map(|(i, rule)| {
            let (purged, kept) = counts.get(&i).copied().unwrap_or_default();
            serde_json::json!({"name": rule.name, "select": rule.selects.as_str(),
                "action": rule.action.as_str(), "purged": purged, "kept": kept})
        })
        .collect();
    Ok(Planned { actions, rules })
}

/// Prints the plan and changes nothing.
fn dry_run(args: &SweepArgs, db: &Path, planned: &Planned, clock: Instant) -> Result<ExitStatus> {
    let mut m = SweepMetrics {
        dry_run: true,
        ..SweepMetrics::default()
    };
    for a in &planned.actions {
        m.count(a.kind, if a.in_scope { "planned" } else { "skipped" });
    }
    match args.format {
        OutputFormat::Json => write_json(
            None,
            &planned.rules,
            &planned.actions.iter().map(planned_json).collect::<Vec<_>>(),
        )?,
        OutputFormat::Text => {
            let mut out = format!(
                "sweep by `{}`: dry run, nothing changed\n",
                args.policy.display()
            );
            out.push_str(&rules_text(&planned.rules));
            out.push_str("\nplan:\n");
            out.push_str(&plan_text(numbered(&planned.actions, "planned")));
            if planned.actions.iter().any(|a| a.in_scope) {
                out.push_str(&format!(
                    "\nact: cachewarden sweep --policy {} --execute\n",
                    args.policy.display()
                ));
            }
            write_stdout(&out)?;
        }
    }
    finish_metrics(args.metrics_file.as_deref(), db, m, clock)?;
    Ok(ExitStatus::Success)
}

/// Asks on a terminal; refuses without one unless `--yes`.
fn confirm(args: &SweepArgs, actions: &[Action]) -> Result<()> {
    let pending = actions.iter().filter(|a| a.in_scope).count();
    if pending == 0 || args.yes {
        return Ok(());
    }
    journal::confirm(&plan_text(numbered(actions, "pending")), pending)
}

/// Stores the sweep with its plan, runs it through the executor and reports.
async fn run(
    args: &SweepArgs,
    db: &Path,
    mut store: Store,
    config: &Config,
    planned: Planned,
    printer: Printer,
    clock: Instant,
) -> Result<ExitStatus> {
    let seeds = serde_json::json!({
        "sweep": {"policy": args.policy.display().to_string(), "rules": planned.rules},
    });
    let id = store.create_sweep(
        &format!("sweep by policy `{}`", args.policy.display()),
        &crate::actor::actor(),
        &seeds.to_string(),
        EMPTY_TRACE,
        &planned.actions,
    )?;
    let concurrency = args.concurrency.unwrap_or(config.purge.concurrency).max(1);
    let reporter: Arc<dyn Reporter> = if printer.progress {
        Arc::new(journal::Bars::default())
    } else {
        Arc::new(execute::Silent)
    };
    let store = Arc::new(Mutex::new(store));
    let summary = execute::execute(store.clone(), id, config, concurrency, reporter, None).await?;
    let mut store = store.lock().expect("store lock");
    // A sweep is never re-run as such: the next one plans afresh from the store.
    store.close_incident(id, "sweep")?;
    let rows = store.actions(id)?;
    let mut m = SweepMetrics {
        bytes_reclaimed: summary.bytes_reclaimed,
        ..SweepMetrics::default()
    };
    for row in &rows {
        m.count(row.action.kind, row.state.as_str());
        if row.state == ActionState::Failed {
            m.failures += 1;
        }
    }
    match args.format {
        OutputFormat::Json => write_json(
            Some(id),
            &planned.rules,
            &rows.iter().map(journal::action_json).collect::<Vec<_>>(),
        )?,
        OutputFormat::Text => {
            let mut out = format!("sweep {id} by `{}`\n", args.policy.display());
            out.push_str(&rules_text(&planned.rules));
            out.push('\n');
            out.push_str(&plan_text(
                rows.iter().map(|r| (r.seq, &r.action, r.state.as_str())),
            ));
            write_stdout(&out)?;
        }
    }
    journal::warn_failed(printer, &rows);
    printer.status(format!(
        "sweep {id}: {} done, {} failed, {} not executed (out of scope); {} reclaimed on builders; report: cachewarden incident report {id}",
        summary.done,
        summary.failed,
        summary.skipped + summary.out_of_scope,
        crate::report::count(usize::try_from(m.bytes_reclaimed).unwrap_or_default(), "byte", "bytes")
    ));
    let failed = summary.failed > 0;
    finish_metrics(args.metrics_file.as_deref(), db, m, clock)?;
    Ok(if failed {
        ExitStatus::Findings
    } else {
        ExitStatus::Success
    })
}

/// Actions numbered from 1, all in one state.
fn numbered<'a>(
    actions: &'a [Action],
    state: &'a str,
) -> impl Iterator<Item = (i64, &'a Action, &'a str)> {
    actions
        .iter()
        .enumerate()
        .map(move |(i, a)| (i as i64 + 1, a, state))
}

fn rules_text(rules: &[serde_json::Value]) -> String {
    let mut out = String::new();
    for r in rules {
        out.push_str(&format!(
            "  rule `{}` ({} {}): {} to purge, {} kept\n",
            Term(r["name"].as_str().unwrap_or("")),
            r["action"].as_str().unwrap_or(""),
            r["select"].as_str().unwrap_or(""),
            r["purged"],
            r["kept"]
        ));
    }
    out
}

fn plan_text<'a>(rows: impl Iterator<Item = (i64, &'a Action, &'a str)>) -> String {
    let mut out = String::new();
    for (seq, action, state) in rows {
        let scope = if action.in_scope {
            ""
        } else {
            "  [out of scope: will not run]"
        };
        out.push_str(&format!(
            "  {seq:>3}  {:<16} {:<8} {}{scope}\n        {}\n",
            action.kind.as_str(),
            state,
            describe_target(&action.target),
            crate::report::escape::Line(&action.reason)
        ));
    }
    if out.is_empty() {
        out.push_str("  (nothing to purge)\n");
    }
    out
}

fn planned_json(action: &Action) -> serde_json::Value {
    serde_json::json!({
        "kind": action.kind.as_str(),
        "place": action.place,
        "target": action.target,
        "reason": action.reason,
        "in_scope": action.in_scope,
        "state": if action.in_scope { "planned" } else { "skipped" },
    })
}

fn write_json(
    sweep: Option<i64>,
    rules: &[serde_json::Value],
    actions: &[serde_json::Value],
) -> Result<()> {
    let doc = serde_json::json!({
        "schema_version": 1,
        "dry_run": sweep.is_none(),
        "sweep": sweep,
        "rules": rules,
        "actions": actions,
    });
    write_stdout(&format!(
        "{}\n",
        crate::report::json::to_string_pretty(&doc)?
    ))?;
    Ok(())
}

/// Writes the metrics file, if one was asked for; `db` is the store, which it must not be.
fn finish_metrics(
    path: Option<&Path>,
    db: &Path,
    mut m: SweepMetrics,
    clock: Instant,
) -> Result<()> {
    let Some(path) = path else { return Ok(()) };
    m.duration_seconds = clock.elapsed().as_secs_f64();
    m.finished_at = time::now();
    // node_exporter reads `*.prom` files at any moment: written whole (`output`).
    super::output::write_file(path, db, metrics::render(&m).as_bytes())?;
    Ok(())
}

/// An exclusive lock held while a sweep executes: on `<db>.sweep.lock` beside an SQLite
/// store, or a row of a PostgreSQL store (shared by every machine that sweeps it).
enum SweepLock {
    File(#[allow(dead_code)] File),
    Store { store: Box<Store>, owner: String },
}

impl Drop for SweepLock {
    fn drop(&mut self) {
        if let Self::Store { store, owner } = self {
            let _ = store.release_lock("sweep", owner);
        }
    }
}

impl SweepLock {
    /// The lock kept in the store itself, on a connection of its own.
    fn in_store(db: &Path) -> Result<Self> {
        let mut store = Box::new(open_existing_store(db)?);
        let owner = crate::actor::lock_owner();
        if let Some(holder) = store.take_lock("sweep", &owner)? {
            return Err(RefusedError(format!(
                "another sweep is running ({holder}); this one did nothing"
            ))
            .into());
        }
        Ok(Self::Store { store, owner })
    }

    fn take(db: &Path) -> Result<Self> {
        let mut path = db.as_os_str().to_owned();
        path.push(".sweep.lock");
        let path = PathBuf::from(path);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open the sweep lock `{}`", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(RefusedError(format!(
                    "another sweep is running{}: it holds `{}`; this one did nothing",
                    if holder.is_empty() {
                        String::new()
                    } else {
                        format!(" ({holder})")
                    },
                    path.display()
                ))
                .into());
            }
            Err(TryLockError::Error(err)) => {
                return Err(err).with_context(|| format!("cannot lock `{}`", path.display()));
            }
        }
        let note = format!(
            "pid {} on {} since {}\n",
            std::process::id(),
            crate::ingest::builder::hostname(),
            time::format(time::now())
        );
        let _ = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(note.as_bytes()));
        Ok(Self::File(file))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A held lock refuses a second sweep with the refused status.
    #[test]
    fn a_held_lock_refuses_a_second_sweep() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db.sqlite");
        let first = SweepLock::take(&db).unwrap();
        let err = SweepLock::take(&db).err().expect("second lock refused");
        assert_eq!(crate::error::exit_status_of(&err), ExitStatus::Refused);
        assert!(
            err.to_string().contains("another sweep is running (pid"),
            "{err}"
        );
        drop(first);
        SweepLock::take(&db).unwrap();
    }
}
