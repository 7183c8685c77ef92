//! `cachewarden incident ...`: open an incident from a trace, purge it, report it.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::ExitStatus;
use crate::cli::{
    IncidentCommand, IncidentListArgs, IncidentOpenArgs, IncidentPurgeArgs, IncidentReportArgs,
    IncidentShowArgs, OutputFormat, ReportFormat,
};
use crate::commands::journal::{Bars, action_json, confirm, warn_failed};
use crate::commands::trace::run_trace;
use crate::commands::{open_existing_store, open_read_store, write_stdout};
use crate::config::Config;
use crate::error::{InputError, RefusedError};
use crate::graph::{Entity, Kind, SeedSpec, Seeds, Trace, Via};
use crate::plan::{self, Action, ActionKind, PlanOptions};
use crate::printer::Printer;
use crate::purge::execute::{self, Reporter};
use crate::purge::{self, IncidentStatus, evidence};
use crate::report;
use crate::report::count;
use crate::report::escape::{Line, Short, Term};
use crate::store::{ActionRow, IncidentLock, Store};
use crate::time;

/// What `open` stores so the trace and plan can be recomputed later. The seeds are the
/// project's own versioned type, not the command line's: renaming a flag changes nothing here.
#[derive(Debug, Serialize, Deserialize)]
struct Opened {
    seeds: SeedSpec,
    ignore_time: bool,
    /// Absent from incidents opened before the flag existed.
    #[serde(default)]
    ignore_purges: bool,
    delete_images: bool,
    full_prune: bool,
}

pub async fn incident(
    command: IncidentCommand,
    db: &Path,
    config: &Config,
    printer: Printer,
) -> Result<ExitStatus> {
    match command {
        IncidentCommand::Open(args) => open(&args, db, config, printer),
        IncidentCommand::Purge(args) => purge(&args, db, config, printer).await,
        IncidentCommand::Verify(args) => verify(&args, db, config, printer).await,
        IncidentCommand::Accept(args) => accept(&args, db, printer),
        IncidentCommand::Close(args) => close(&args, db, config, printer).await,
        IncidentCommand::List(args) => list(&args, db),
        IncidentCommand::Show(args) => show(&args, db),
        IncidentCommand::Report(args) => write_report(&args, db),
    }
}

/// Traces the stored seeds and plans the purge.
fn trace_and_plan(
    store: &mut Store,
    opened: &Opened,
    config: &Config,
) -> Result<(Trace, Vec<Action>)> {
    let seeds = Seeds::from_spec(&opened.seeds)?;
    let options = crate::graph::TraceOptions {
        ignore_time: opened.ignore_time,
        ignore_purges: opened.ignore_purges,
        labels_only: true,
        claims: super::trace::claim_limits(config),
    };
    let (trace, _) = run_trace(store, &seeds, options, config)?;
    let mut builders = BTreeSet::new();
    let mut mounts = BTreeSet::new();
    for kind in [
        Kind::Run,
        Kind::Mount,
        Kind::Record,
        Kind::Builder,
        Kind::Image,
        Kind::CacheRef,
    ] {
        for t in trace.tainted(kind) {
            match t.entity {
                Entity::Run { .. } => {
                    if let Some(b) = t.builder {
                        builders.insert(b.to_string());
                    }
                }
                Entity::Mount(m) => {
                    builders.insert(m.builder_name.to_string());
                    mounts.insert((m.builder_name.to_string(), m.mount_id.to_string()));
                }
                Entity::Record { builder, .. } => {
                    builders.insert(builder.to_string());
                }
                Entity::Builder(b) => {
                    builders.insert(b.name.to_string());
                }
                Entity::Artifact { info, .. }
                    if info.backend == crate::model::Backend::LocalImage =>
                {
                    builders.insert(info.locator.to_string());
                }
                _ => {}
            }
        }
    }
    let mut ctx = store.plan_context(&builders, &mounts)?;
    // A copy of a tainted digest takes the roles its copies were tainted in; where runs only
    // ever built or based on it, it is an image all the same.
    let copies: BTreeSet<i64> = trace
        .tainted(Kind::CacheRef)
        .iter()
        .filter(|t| t.via == Via::SameDigest)
        .filter_map(|t| match t.entity {
            Entity::Artifact { info, .. } => Some(info.id),
            _ => None,
        })
        .collect();
    ctx.images_only = store.images_only(&copies)?;
    // Cache mounts tainted runs mounted and did not record.
    let with_records: BTreeSet<i64> = trace
        .tainted(Kind::Run)
        .iter()
        .filter_map(|t| match t.entity {
            Entity::Run { info } if info.has_records => Some(info.id),
            _ => None,
        })
        .collect();
    for run in store.runs_mount_records(&with_records)? {
        // Where a description names no id (Docker 20.10), the record keeps the target of the
        // build that made it: a mount the run used is explained by another recorded use of
        // the same mount there.
        let own: BTreeSet<(String, String)> = run
            .mounts
            .iter()
            .map(|(ns, id, _)| (ns.clone(), id.clone()))
            .collect();
        let used_there = |builder: &str, description: &str| {
            crate::purge::mount::described_targets(description)
                .into_iter()
                .any(|target| {
                    ctx.target_users
                        .get(&(builder.to_owned(), target))
                        .is_some_and(|users| users.iter().any(|u| own.contains(u)))
                })
        };
        let unexplained: Vec<(String, String, String)> = run
            .records
            .into_iter()
            .filter(|(builder, _, description)| {
                !crate::purge::mount::record_of_mounts(description, &run.mounts)
                    && !used_there(builder, description)
            })
            .collect();
        if !unexplained.is_empty() {
            ctx.unexplained_mounts.insert(run.run, unexplained);
        }
    }
    // A trusted build's own image is not deleted on a tainted run's claim to have pushed it.
    let tainted_runs: std::collections::HashSet<i64> = trace
        .tainted(Kind::Run)
        .iter()
        .filter_map(|t| match t.entity {
            Entity::Run { info } => Some(info.id),
            _ => None,
        })
        .collect();
    // Only what a tainted run claims to have pushed: never what the responder seeded, nor
    // what is tainted by what it holds.
    let seeded_digests: BTreeSet<String> = trace
        .seeds()
        .iter()
        .filter_map(|node| match &node.entity {
            Entity::Artifact { info, .. } => Some(info.digest.to_string()),
            Entity::Digest { digest, .. } => Some(digest.to_string()),
            _ => None,
        })
        .collect();
    let claimed: BTreeSet<i64> = [Kind::CacheRef, Kind::Image]
        .into_iter()
        .flat_map(|kind| trace.tainted(kind))
        .filter(|t| matches!(t.via, Via::Exported | Via::Produced))
        .filter_map(|t| match t.entity {
            // A seeded digest is the responder's, in whatever repository.
            Entity::Artifact { info, .. }
                if !info.digest.is_empty() && !seeded_digests.contains(info.digest.as_str()) =>
            {
                Some(info.id)
            }
            _ => None,
        })
        .collect();
    let vouching = store.vouching(config.trusted_levels())?;
    ctx.vouched_images = store.vouched_images(&claimed, &tainted_runs, &vouching)?;
    let options = PlanOptions {
        delete_images: opened.delete_images,
        full_prune: opened.full_prune,
        clock_skew: crate::time::seconds(config.purge.clock_skew_seconds),
    };
    // Where a tainted run's record evidence is doubted, the plan prunes what was made on its
    // builder since it began: but for what runs whose evidence is believed made there.
    if let Some(lowest) = config.trust_levels().first() {
        for (builder, since) in plan::doubted_since(&trace) {
            let since = since.saturating_sub(options.clock_skew);
            let made = store.believed_records_since(&builder, since, lowest)?;
            ctx.made_by_believed.insert(builder, made);
        }
    }
    let actions = plan::plan(&trace, &ctx, &config.scope, options);
    Ok((trace, actions))
}

fn open(
    args: &IncidentOpenArgs,
    db: &Path,
    config: &Config,
    printer: Printer,
) -> Result<ExitStatus> {
    let mut store = open_existing_store(db)?;
    let audit_seed = args
        .from_audit
        .map(|id| super::audit::incident_seed(&store, id, config))
        .transpose()?;
    // Durations and dates become absolute times once, here: the stored seeds then name the
    // same window for every later verification.
    let mut given = super::trace::seed_spec(&args.seeds);
    if let Some(seed) = &audit_seed {
        given.cache_refs.extend(seed.cache_ref.clone());
        given.mounts.extend(seed.mounts.iter().cloned());
        given.runs.extend(seed.runs.iter().cloned());
    }
    let seeds = crate::graph::seeds::resolve_times(&given, time::now())?;
    let opened = Opened {
        seeds,
        ignore_time: args.ignore_time,
        ignore_purges: args.ignore_purges,
        delete_images: args.delete_images,
        full_prune: args.full_prune,
    };
    let (trace, mut actions) = trace_and_plan(&mut store, &opened, config)?;
    super::trace::warn_tag_only(&mut store, &trace, printer);
    super::trace::warn_engine_aliases(&store, &trace, config, printer);
    warn_scope(config, &actions, printer);
    if let Some(seed) = &audit_seed {
        super::audit::add_audit_delete(&mut actions, seed);
    }
    let mut trace_json = Vec::new();
    report::trace::write(&trace, report::trace::Format::Json, &mut trace_json)?;
    let title = args
        .title
        .clone()
        .or_else(|| audit_seed.map(|s| s.title))
        .unwrap_or_else(|| {
            let names: Vec<String> = trace.seeds().iter().map(|n| n.name().to_string()).collect();
            format!("compromise of {}", names.join(", "))
        });
    let id = store.create_incident(
        &title,
        &crate::actor::actor(),
        &serde_json::to_string(&opened)?,
        std::str::from_utf8(&trace_json)?,
        &actions,
    )?;
    store.set_incident_digests(id, &tainted_digests(&trace))?;
    let rows = store.actions(id)?;
    match args.format {
        OutputFormat::Json => {
            let doc = serde_json::json!({
                "schema_version": 1,
                "incident": id,
                "title": title,
                "actions": rows.iter().map(action_json).collect::<Vec<_>>(),
            });
            write_stdout(&format!(
                "{}\n",
                crate::report::json::to_string_pretty(&doc)?
            ))?;
        }
        OutputFormat::Text => {
            let mut out = String::new();
            out.push_str(&format!("incident {id}: {}\n", Term(&title)));
            let counts: Vec<String> = Kind::ALL
                .iter()
                .map(|k| k.count(trace.tainted(*k).len()))
                .collect();
            out.push_str(&format!("blast radius: {}\n\nplan:\n", counts.join(", ")));
            out.push_str(&plan_table(&rows));
            out.push_str(&format!(
                "\nnothing was deleted. check: cachewarden incident purge {id}; act: cachewarden incident purge {id} --execute\n"
            ));
            write_stdout(&out)?;
        }
    }
    printer.detail(format!(
        "stored incident {id} in {}",
        crate::store::display_location(db)
    ));
    Ok(ExitStatus::Success)
}

/// Registry manifest digests and local image ids the trace holds tainted, with their names.
pub(crate) fn tainted_digests(trace: &Trace) -> Vec<(String, String)> {
    let mut out = BTreeMap::new();
    for kind in [Kind::CacheRef, Kind::Image] {
        for t in trace.tainted(kind) {
            match t.entity {
                Entity::Artifact { info, .. } if !info.digest.is_empty() => {
                    out.entry(info.digest.clone())
                        .or_insert_with(|| t.name().to_string());
                }
                Entity::Digest { digest, .. } => {
                    out.entry(digest.to_string())
                        .or_insert_with(|| t.name().to_string());
                }
                _ => {}
            }
        }
    }
    for seed in trace.seeds() {
        if let Entity::Digest { digest, name, .. } = &seed.entity {
            out.entry(digest.to_string())
                .or_insert_with(|| name.to_string());
        }
    }
    out.into_iter().collect()
}

/// Says loudly when no config file was loaded, or when actions fall outside the scope: they
/// will not run, and verification will not pass while their targets remain.
fn warn_scope<'a>(
    config: &Config,
    actions: impl IntoIterator<Item = &'a Action> + Clone,
    printer: Printer,
) {
    if config.path.is_none() {
        printer.warn(
            "no config file was loaded (--config, CACHEWARDEN_CONFIG, or ~/.config/cachewarden/config.toml): \
             the scope is empty, so no action can run",
        );
    }
    let acting = actions
        .clone()
        .into_iter()
        .filter(|a| a.kind != ActionKind::FollowUp)
        .count();
    let outside = actions
        .into_iter()
        .filter(|a| a.kind != ActionKind::FollowUp && !a.target.in_scope(&config.scope))
        .count();
    if outside > 0 {
        printer.warn(format!(
            "{outside} of {} {} outside the scope{}: they will not run, and `incident verify` \
             will not pass while their targets remain (widen [scope], or leave them with `incident accept`)",
            count(acting, "action", "actions"),
            if outside == 1 { "is" } else { "are" },
            config
                .path
                .as_ref()
                .map(|p| format!(" of `{}`", p.display()))
                .unwrap_or_default()
        ));
    }
}

fn plan_table(rows: &[ActionRow]) -> String {
    let mut out = String::new();
    for row in rows {
        let scope = if row.action.in_scope || row.action.kind == ActionKind::FollowUp {
            ""
        } else {
            "  [out of scope: will not run]"
        };
        out.push_str(&format!(
            "  {:>3}  {:<18} {:<9} {}{scope}\n",
            row.seq,
            row.action.kind.as_str(),
            row.state,
            report::incident::describe_target(&row.action.target)
        ));
    }
    if rows.is_empty() {
        out.push_str("  (nothing to do)\n");
    }
    out
}

async fn purge(
    args: &IncidentPurgeArgs,
    db: &Path,
    config: &Config,
    printer: Printer,
) -> Result<ExitStatus> {
    let mut store = open_existing_store(db)?;
    let incident = store.incident(args.id)?;
    if incident.status == IncidentStatus::Closed {
        return Err(RefusedError(format!("incident {} is closed", args.id)).into());
    }
    if !args.execute {
        let concurrency = args.concurrency.unwrap_or(config.purge.concurrency).max(1);
        return check(&mut store, args.id, config, concurrency, printer).await;
    }
    let owner = crate::actor::lock_owner();
    let stale = crate::time::seconds(config.purge.lock_stale_seconds.max(1));
    match store.lock_incident(args.id, &owner, stale)? {
        IncidentLock::Taken => {}
        IncidentLock::TakenOver(why) => printer.warn(format!(
            "took over incident {}'s lock: {}",
            args.id,
            Line(&why)
        )),
        IncidentLock::Held(holder) => {
            return Err(RefusedError(format!(
                "incident {} is being purged by another process ({}); wait for it to finish (a lock not renewed for `[purge] lock_stale_seconds` is taken over)",
                args.id,
                Line(&holder)
            ))
            .into());
        }
    }
    let renewing = LockRenewal::start(db, args.id, &owner, config.purge.lock_stale_seconds);
    let result = purge_locked(args, store, config, printer, &owner).await;
    renewing.stop();
    if let Ok(mut store) = open_existing_store(db) {
        let _ = store.unlock_incident(args.id, &owner);
    }
    result
}

/// Renews an incident's execution lock from a thread of its own, on a connection of its own,
/// every quarter of `[purge] lock_stale_seconds`, while the execution runs: a lock renewed
/// is one no other execution takes over, however long one action takes.
struct LockRenewal {
    stop: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl LockRenewal {
    fn start(db: &Path, incident: i64, owner: &str, stale_seconds: u64) -> Self {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let (db, owner) = (db.to_owned(), owner.to_owned());
        let every = std::time::Duration::from_millis(stale_seconds.max(1).saturating_mul(250));
        let thread = std::thread::spawn(move || {
            // One connection for the execution, opened again when it is lost.
            let mut store = None;
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every)
            {
                if store.is_none() {
                    store = open_existing_store(&db).ok();
                }
                let renewed = store.as_mut().map(|s: &mut Store| {
                    s.reconnect_if_closed()
                        .and_then(|()| s.renew_incident_lock(incident, &owner))
                });
                if !matches!(renewed, Some(Ok(_))) {
                    store = None;
                }
            }
        });
        Self { stop, thread }
    }

    fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

async fn purge_locked(
    args: &IncidentPurgeArgs,
    mut store: Store,
    config: &Config,
    printer: Printer,
    owner: &str,
) -> Result<ExitStatus> {
    // Re-trace: builds recorded since `open` may have widened the blast radius.
    let incident = store.incident(args.id)?;
    let opened: Opened = serde_json::from_str(&incident.seeds)
        .context("the incident's stored seeds are unreadable")?;
    let (trace, actions) = trace_and_plan(&mut store, &opened, config)?;
    store.set_incident_digests(args.id, &tainted_digests(&trace))?;
    let before = store.actions(args.id)?;
    let added = store.extend_plan(args.id, &actions)?;
    let mut rows = store.actions(args.id)?;
    let concurrency = args.concurrency.unwrap_or(config.purge.concurrency).max(1);
    let inputs = purge::verify::verify_inputs(&store, &trace, &rows)?;
    let back = purge::check::back_again(
        &mut store,
        args.id,
        &rows,
        config,
        (concurrency, Some(inputs)),
    )
    .await?;
    if !back.is_empty() {
        let manifests = rows
            .iter()
            .filter(|r| back.contains(&r.id) && r.action.kind == ActionKind::DeleteManifest)
            .count();
        store.reopen_actions(&back, "found again by verification")?;
        if manifests > 0 {
            printer.warn(format!(
                "{} deleted earlier {} back in the registry: to be deleted again",
                count(manifests, "manifest", "manifests"),
                if manifests == 1 { "is" } else { "are" },
            ));
        }
        let others = back.len() - manifests;
        if others > 0 {
            printer.warn(format!(
                "{} done earlier {} tainted content again (a tainted run wrote after the \
                 purge): to be run again",
                count(others, "prune or removal", "prunes or removals"),
                if others == 1 { "finds" } else { "find" },
            ));
        }
        rows = store.actions(args.id)?;
    }
    if added > 0 {
        let delta: Vec<ActionRow> = rows
            .iter()
            .filter(|r| !before.iter().any(|b| b.id == r.id))
            .cloned()
            .collect();
        printer.status(format!(
            "the re-trace found {added} new actions since the incident was opened:"
        ));
        // A message is one line; the table's lines go one by one.
        for line in plan_table(&delta).lines() {
            printer.status(line);
        }
    }
    let open: Vec<&ActionRow> = rows.iter().filter(|r| !r.state.is_settled()).collect();
    warn_scope(config, open.iter().map(|r| &r.action), printer);
    note_scope_changes(&open, config, printer);
    let (pending, outside): (Vec<&ActionRow>, Vec<&ActionRow>) = open
        .into_iter()
        .partition(|r| r.action.target.in_scope(&config.scope));
    if pending.is_empty() {
        if !outside.is_empty() {
            return Err(RefusedError(format!(
                "incident {}: nothing was done: {} left {} outside the scope in force\n{}",
                args.id,
                count(outside.len(), "the action", "the actions"),
                if outside.len() == 1 { "is" } else { "are" },
                plan_table(&outside.iter().map(|r| (*r).clone()).collect::<Vec<_>>()).trim_end()
            ))
            .into());
        }
        printer.status(format!("incident {}: nothing left to do", args.id));
        return Ok(ExitStatus::Success);
    }
    if !args.yes {
        let plan = plan_table(&pending.iter().map(|r| (*r).clone()).collect::<Vec<_>>());
        confirm(&plan, pending.len())?;
    }
    if args.no_evidence {
        printer.warn("--no-evidence: deleting without saving evidence first");
    } else {
        // One directory holds an incident's evidence: the one its first execution chose.
        let kept = store.evidence_dir(args.id)?.map(std::path::PathBuf::from);
        let dir = match (&args.evidence_dir, kept) {
            (Some(dir), Some(kept)) if *dir != kept => {
                return Err(InputError::invalid(format!(
                    "incident {} keeps its evidence in `{}`, where its earlier execution saved it:                      leave out --evidence-dir, or name that directory",
                    args.id,
                    Line(&kept.display().to_string())
                ))
                .into());
            }
            (Some(dir), _) => dir.clone(),
            (None, Some(kept)) => kept,
            // Beside an SQLite store; in the current directory for a PostgreSQL one.
            (None, None) => store
                .file()
                .and_then(Path::parent)
                .unwrap_or(Path::new("."))
                .join("evidence")
                .join(format!("incident-{}", args.id)),
        };
        let opts = evidence::Evidence {
            dir: dir.clone(),
            blobs: args.evidence_blobs,
            incident: args.id,
            docker: evidence::docker_client(),
            probes: evidence::mount_probes(&store, args.id, &rows)?,
            concurrency: args.concurrency.unwrap_or(config.purge.concurrency),
        };
        let acting: Vec<ActionRow> = pending.iter().map(|r| (*r).clone()).collect();
        // A directory that cannot be made or written is the responder's to fix (exit 2).
        let collected = evidence::collect(&acting, config, opts)
            .await
            .map_err(|source| InputError::Write {
                path: dir.display().to_string(),
                source,
            })?;
        for item in &collected.unavailable {
            printer.warn(format!(
                "evidence not saved: {item}; the action goes ahead, and the journal and report say so"
            ));
        }
        store.set_evidence_gaps(args.id, &collected.gaps)?;
        store.save_manifest_facts(&collected.facts)?;
        store.set_evidence_dir(args.id, &dir.display().to_string())?;
        printer.status(format!("evidence saved in {}", dir.display()));
    }
    let reporter: Arc<dyn Reporter> = if printer.progress {
        Arc::new(Bars::default())
    } else {
        Arc::new(execute::Silent)
    };
    let store = Arc::new(Mutex::new(store));
    let summary = execute::execute(
        store.clone(),
        args.id,
        config,
        concurrency,
        reporter,
        Some(owner),
    )
    .await?;
    if summary.lost_lock > 0 {
        return Err(RefusedError(format!(
            "another execution took incident {}'s lock over (this one had not renewed it for `[purge] lock_stale_seconds`): this one stopped, leaving {} to it",
            args.id,
            count(summary.lost_lock, "action", "actions")
        ))
        .into());
    }
    let store = store.lock().expect("store lock");
    let rows = store.actions(args.id)?;
    if args.format == OutputFormat::Json {
        let doc = serde_json::json!({
            "schema_version": 1,
            "incident": args.id,
            "done": summary.done,
            "failed": summary.failed,
            "already_done": summary.already_done,
            "actions": rows.iter().map(action_json).collect::<Vec<_>>(),
        });
        write_stdout(&format!(
            "{}\n",
            crate::report::json::to_string_pretty(&doc)?
        ))?;
    } else {
        warn_failed(printer, &rows);
        printer.status(format!(
            "incident {}: {} done, {} failed, {} done earlier, {} not executed, {} outside the scope; report: cachewarden incident report {}",
            args.id,
            summary.done,
            summary.failed,
            summary.already_done,
            count(summary.skipped, "follow-up", "follow-ups"),
            summary.out_of_scope,
            args.id
        ));
    }
    if summary.out_of_scope > 0 {
        printer.warn(format!(
            "{} not run: outside the scope in force; {} remain",
            count(summary.out_of_scope, "action was", "actions were"),
            if summary.out_of_scope == 1 {
                "its target"
            } else {
                "their targets"
            }
        ));
    }
    Ok(execution_status(&summary))
}

/// The exit status of an execution: a registry or builder out of reach (4) first, then other
/// failures (1), then actions left outside the scope (5).
fn execution_status(summary: &execute::Summary) -> ExitStatus {
    if summary.unreachable > 0 {
        ExitStatus::Remote
    } else if summary.failed > 0 {
        ExitStatus::Findings
    } else if summary.out_of_scope > 0 {
        ExitStatus::Refused
    } else {
        ExitStatus::Success
    }
}

/// Says which actions the scope in force now treats otherwise than the plan did.
fn note_scope_changes(rows: &[&ActionRow], config: &Config, printer: Printer) {
    for row in rows {
        let now = row.action.target.in_scope(&config.scope);
        if now != row.action.in_scope && row.action.kind != ActionKind::FollowUp {
            printer.warn(format!(
                "action {} ({}): {}",
                row.seq,
                row.action.kind.as_str(),
                if now {
                    "planned outside the scope, inside the scope in force now: it runs"
                } else {
                    "planned inside the scope, outside the scope in force now: it does not run"
                }
            ));
        }
    }
}

/// Re-runs the trace (planning what it finds anew), then checks every target of the plan
/// where it lives, whatever the state of its action; records the result.
async fn verify_incident(
    store: &mut Store,
    id: i64,
    config: &Config,
) -> Result<purge::verify::Verified> {
    let incident = store.incident(id)?;
    let opened: Opened = serde_json::from_str(&incident.seeds)
        .context("the incident's stored seeds are unreadable")?;
    let (trace, actions) = trace_and_plan(store, &opened, config)?;
    // What the re-trace found tainted is held from `check` and `wrap` from now on, as a
    // purge's re-trace holds it.
    store.set_incident_digests(id, &tainted_digests(&trace))?;
    let added = store.extend_plan(id, &actions)?;
    Ok(purge::verify::verify_journal(store, id, config, &trace, added).await?)
}

async fn verify(
    args: &crate::cli::IncidentVerifyArgs,
    db: &Path,
    config: &Config,
    printer: Printer,
) -> Result<ExitStatus> {
    let mut store = open_existing_store(db)?;
    let incident = store.incident(args.id)?;
    // A closed incident keeps the verification it was closed on (a forced close's says
    // what was left): it is no longer planned, purged or verified.
    if incident.status == IncidentStatus::Closed {
        return Err(RefusedError(format!(
            "incident {} is closed, with the verification it was closed on (`incident report {}`); to look again, open a new incident with the same seeds",
            args.id, args.id
        ))
        .into());
    }
    let verified = verify_incident(&mut store, args.id, config).await?;
    let lines = verified.lines();
    match args.format {
        OutputFormat::Json => write_stdout(&format!(
            "{}\n",
            crate::report::json::to_string_pretty(&serde_json::json!({
                "incident": args.id,
                "clean": verified.clean,
                "targets": verified.targets,
                "added": verified.added,
                "checks": lines,
            }))?
        ))?,
        OutputFormat::Text => {
            let mut out = format!(
                "incident {}: {}\n",
                args.id,
                if verified.clean { "clean" } else { "NOT clean" }
            );
            for line in &lines {
                out.push_str(&format!("  {}\n", Line(line)));
            }
            write_stdout(&out)?;
        }
    }
    if !verified.clean {
        let left = verified
            .targets
            .iter()
            .filter(|c| c.verdict.blocks())
            .count();
        printer.warn(format!(
            "{} neither gone nor accepted: remove {them} (`incident purge {id} --execute`), \
             or leave {them} on purpose with `incident accept {id} SEQ... --reason TEXT`",
            count(left, "target is", "targets are"),
            them = if left == 1 { "it" } else { "them" },
            id = args.id
        ));
        return Ok(ExitStatus::Findings);
    }
    Ok(ExitStatus::Success)
}

fn accept(
    args: &crate::cli::IncidentAcceptArgs,
    db: &Path,
    printer: Printer,
) -> Result<ExitStatus> {
    let reason = args.reason.trim();
    if reason.is_empty() {
        return Err(InputError::invalid("--reason is empty: say why the targets stay").into());
    }
    let mut store = open_existing_store(db)?;
    let incident = store.incident(args.id)?;
    if incident.status == IncidentStatus::Closed {
        return Err(RefusedError(format!("incident {} is closed", args.id)).into());
    }
    let mut seqs = args.seqs.clone();
    seqs.sort_unstable();
    seqs.dedup();
    let by = crate::actor::actor();
    store.accept(args.id, &seqs, &by, reason)?;
    printer.status(format!(
        "incident {}: {} accepted by {by}; `incident verify {}` lists them as accepted",
        args.id,
        seqs.iter()
            .map(|s| format!("#{s}"))
            .collect::<Vec<_>>()
            .join(", "),
        args.id
    ));
    Ok(ExitStatus::Success)
}

async fn close(
    args: &crate::cli::IncidentCloseArgs,
    db: &Path,
    config: &Config,
    printer: Printer,
) -> Result<ExitStatus> {
    let mut store = open_existing_store(db)?;
    let incident = store.incident(args.id)?;
    if incident.status == IncidentStatus::Closed {
        printer.status(format!("incident {} is already closed", args.id));
        return Ok(ExitStatus::Success);
    }
    let verified = verify_incident(&mut store, args.id, config).await?;
    if !verified.clean && !args.force {
        for line in verified.lines().iter().filter(|l| {
            !(l.starts_with("gone") || l.starts_with("accepted") || l.starts_with("clean"))
        }) {
            printer.warn(line);
        }
        return Err(RefusedError(format!(
            "incident {} does not verify clean: remove what is listed, accept it with \
             `incident accept {} SEQ... --reason TEXT`, or close with --force (recorded)",
            args.id, args.id
        ))
        .into());
    }
    store.close_incident(args.id, &crate::actor::actor())?;
    printer.status(format!(
        "incident {} closed by {} (verification {}); containment lifted",
        args.id,
        crate::actor::actor(),
        if verified.clean {
            "clean"
        } else {
            "NOT clean, forced"
        }
    ));
    Ok(ExitStatus::Success)
}

/// The dry run: every pending target is checked for existence, reachability and scope.
async fn check(
    store: &mut Store,
    id: i64,
    config: &Config,
    concurrency: usize,
    printer: Printer,
) -> Result<ExitStatus> {
    let rows = store.actions(id)?;
    let open: Vec<&ActionRow> = rows.iter().filter(|r| !r.state.is_settled()).collect();
    warn_scope(config, open.iter().map(|r| &r.action), printer);
    note_scope_changes(&open, config, printer);
    let statuses = purge::check::dry_run(store, id, &rows, config, concurrency).await?;
    let problems = statuses.iter().filter(|s| s.is_problem()).count();
    let mut out = String::new();
    for (row, status) in rows.iter().zip(statuses) {
        out.push_str(&format!(
            "  {:>3}  {:<18} {}: {}\n",
            row.seq,
            row.action.kind.as_str(),
            report::incident::describe_target(&row.action.target),
            Line(&status.text())
        ));
    }
    write_stdout(&format!("incident {id}: dry run, nothing changed\n{out}"))?;
    if problems > 0 {
        printer.warn(format!(
            "{} cannot be acted on as planned",
            count(problems, "target", "targets")
        ));
        return Ok(ExitStatus::Findings);
    }
    Ok(ExitStatus::Success)
}

fn list(args: &IncidentListArgs, db: &Path) -> Result<ExitStatus> {
    let store = open_read_store(db)?;
    let incidents = store.incidents()?;
    let mut out = String::new();
    match args.format {
        OutputFormat::Json => {
            let docs: Vec<serde_json::Value> = incidents
                .iter()
                .map(|i| {
                    serde_json::json!({"id": i.id, "title": i.title, "status": i.status,
                        "opened_at": time::format(i.opened_at), "opened_by": i.opened_by})
                })
                .collect();
            out = format!("{}\n", crate::report::json::to_string_pretty(&docs)?);
        }
        OutputFormat::Text => {
            for i in &incidents {
                out.push_str(&format!(
                    "{:>4}  {:<6}  {}  {}\n",
                    i.id,
                    i.status,
                    time::format(i.opened_at),
                    Short(&i.title)
                ));
            }
            if incidents.is_empty() {
                out.push_str("no incidents\n");
            }
        }
    }
    write_stdout(&out)?;
    Ok(ExitStatus::Success)
}

fn show(args: &IncidentShowArgs, db: &Path) -> Result<ExitStatus> {
    let store = open_read_store(db)?;
    let incident = store.incident(args.id)?;
    let rows = store.actions(args.id)?;
    match args.format {
        OutputFormat::Json => {
            let doc = report::incident::document(&incident, &rows, extras(&store, args.id)?);
            let mut out = Vec::new();
            report::incident::write_json(&doc, &mut out)?;
            write_stdout(std::str::from_utf8(&out)?)?;
        }
        OutputFormat::Text => write_stdout(&format!(
            "incident {}: {}\nstatus: {}, opened {} by {}\n\n{}",
            incident.id,
            Term(&incident.title),
            incident.status,
            time::format(incident.opened_at),
            Term(&incident.opened_by),
            plan_table(&rows)
        ))?,
    }
    Ok(ExitStatus::Success)
}

fn write_report(args: &IncidentReportArgs, db: &Path) -> Result<ExitStatus> {
    let store = open_read_store(db)?;
    let incident = store.incident(args.id)?;
    let rows = store.actions(args.id)?;
    let doc = report::incident::document(&incident, &rows, extras(&store, args.id)?);
    let mut buf = Vec::new();
    match args.format {
        ReportFormat::Md => report::incident::write_markdown(&doc, &mut buf)?,
        ReportFormat::Json => report::incident::write_json(&doc, &mut buf)?,
        ReportFormat::Digests => {
            for (digest, _) in store.incident_digests(args.id)? {
                buf.extend_from_slice(digest.as_bytes());
                buf.push(b'\n');
            }
        }
    }
    match &args.output {
        Some(path) => super::output::write_file(path, db, &buf)?,
        None => {
            let mut out = BufWriter::new(std::io::stdout().lock());
            out.write_all(&buf)
                .and_then(|()| out.flush())
                .map_err(super::stdout_error)?;
        }
    }
    Ok(ExitStatus::Success)
}

fn extras(store: &Store, id: i64) -> Result<report::incident::Extras> {
    Ok(report::incident::Extras {
        overrides: store.overrides(id)?,
        evidence_dir: store.evidence_dir(id)?,
        verification: store.last_verification(id)?,
        acceptances: store.acceptances(id)?,
    })
}
