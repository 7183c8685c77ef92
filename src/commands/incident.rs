//! `cachewarden incident ...`: open an incident from a trace, purge it, report it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufWriter, IsTerminal, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::ExitStatus;
use crate::cli::{
    IncidentCommand, IncidentListArgs, IncidentOpenArgs, IncidentPurgeArgs, IncidentReportArgs,
    IncidentShowArgs, OutputFormat, ReportFormat, SeedArgs,
};
use crate::commands::trace::run_trace;
use crate::commands::{open_existing_store, open_read_store, write_stdout};
use crate::config::Config;
use crate::error::{RefusedError, RemoteError};
use crate::execute::{
    self, Reporter, connect_builder, probe, require_endpoint, select_builder_records,
    select_mount_records,
};
use crate::graph::{Entity, Kind, Seeds, Trace};
use crate::model::{Digest, ManifestFacts};
use crate::plan::{self, Action, ActionKind, PlanOptions, Target};
use crate::printer::Printer;
use crate::remote::engine::Engine;
use crate::remote::registry::{RegistryClient, client_for};
use crate::report;
use crate::store::{ActionRow, Store};
use crate::time;

/// What `open` stores so the trace and plan can be recomputed later.
#[derive(Debug, Serialize, Deserialize)]
struct Opened {
    seeds: SeedArgs,
    ignore_time: bool,
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
    let seeds = Seeds::from_args(&opened.seeds)?;
    let (trace, _) = run_trace(store, &seeds, opened.ignore_time)?;
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
                Entity::Run {
                    builder: Some(b), ..
                } => {
                    builders.insert(b.to_string());
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
                    builders.insert(info.locator.clone());
                }
                _ => {}
            }
        }
    }
    let ctx = store.plan_context(&builders, &mounts)?;
    let options = PlanOptions {
        delete_images: opened.delete_images,
        full_prune: opened.full_prune,
        clock_skew: config.purge.clock_skew_seconds as i64 * 1_000_000,
    };
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
    let mut seeds = args.seeds.clone();
    seeds
        .cache_ref
        .extend(audit_seed.as_ref().map(|s| s.cache_ref.clone()));
    let opened = Opened {
        seeds,
        ignore_time: args.ignore_time,
        delete_images: args.delete_images,
        full_prune: args.full_prune,
    };
    let (trace, mut actions) = trace_and_plan(&mut store, &opened, config)?;
    super::trace::warn_tag_only(&mut store, &trace, printer);
    if let Some(seed) = &audit_seed {
        super::audit::add_audit_delete(&mut actions, seed);
    }
    let mut trace_json = Vec::new();
    report::trace::write(&trace, crate::cli::TraceFormat::Json, &mut trace_json)?;
    let title = args
        .title
        .clone()
        .or_else(|| audit_seed.map(|s| s.title))
        .unwrap_or_else(|| {
            let names: Vec<String> = trace.seeds().iter().map(|n| n.name.to_string()).collect();
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
            write_stdout(&format!("{}\n", serde_json::to_string_pretty(&doc)?))?;
        }
        OutputFormat::Text => {
            let mut out = String::new();
            out.push_str(&format!("incident {id}: {title}\n"));
            let counts: Vec<String> = Kind::ALL
                .iter()
                .map(|k| format!("{} {}", trace.tainted(*k).len(), k.as_str()))
                .collect();
            out.push_str(&format!("blast radius: {}\n\nplan:\n", counts.join(", ")));
            out.push_str(&plan_table(&rows));
            out.push_str(&format!(
                "\nnothing was deleted. check: cachewarden incident purge {id}; act: cachewarden incident purge {id} --execute\n"
            ));
            write_stdout(&out)?;
        }
    }
    printer.detail(format!("stored incident {id} in {}", db.display()));
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
                        .or_insert_with(|| t.name.to_owned());
                }
                Entity::Digest(d) => {
                    out.entry(d.to_string())
                        .or_insert_with(|| t.name.to_owned());
                }
                _ => {}
            }
        }
    }
    for seed in trace.seeds() {
        if let Entity::Digest(d) = &seed.entity {
            out.entry(d.to_string())
                .or_insert_with(|| seed.name.to_string());
        }
    }
    out.into_iter().collect()
}

/// Shows the plan on a terminal and asks before acting on `count` targets; without a
/// terminal to ask on, refuses.
pub(crate) fn confirm(plan: &str, count: usize) -> Result<()> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(RefusedError(format!(
            "refusing to act on {count} targets without confirmation: rerun with --yes"
        ))
        .into());
    }
    eprint!("{plan}about to act on {count} targets. proceed? [y/N] ");
    let mut answer = String::new();
    stdin.read_line(&mut answer)?;
    if !matches!(answer.trim(), "y" | "Y" | "yes") {
        return Err(RefusedError("not confirmed: nothing was done".to_owned()).into());
    }
    Ok(())
}

/// One warning per failed action, with its error.
pub(crate) fn warn_failed(printer: Printer, rows: &[ActionRow]) {
    for row in rows.iter().filter(|r| r.state == "failed") {
        printer.warn(format!(
            "action {} ({}) failed: {}",
            row.seq,
            row.action.kind.as_str(),
            row.error.as_deref().unwrap_or("")
        ));
    }
}

/// One journal row as JSON output shows it.
pub(crate) fn action_json(row: &ActionRow) -> serde_json::Value {
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
    })
}

fn plan_table(rows: &[ActionRow]) -> String {
    let mut out = String::new();
    for row in rows {
        let scope = if row.action.in_scope {
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
    if incident.status == "closed" {
        return Err(RefusedError(format!("incident {} is closed", args.id)).into());
    }
    if !args.execute {
        let concurrency = args.concurrency.unwrap_or(config.purge.concurrency).max(1);
        return check(&mut store, args.id, config, concurrency, printer).await;
    }
    let owner = format!(
        "{}:{}",
        crate::ingest::builder::hostname(),
        std::process::id()
    );
    if !store.lock_incident(args.id, &owner)? {
        return Err(RefusedError(format!(
            "incident {} is being purged by another process; wait for it to finish",
            args.id
        ))
        .into());
    }
    let result = purge_locked(args, store, config, printer, &owner).await;
    if let Ok(mut store) = open_existing_store(db) {
        let _ = store.unlock_incident(args.id, &owner);
    }
    result
}

async fn purge_locked(
    args: &IncidentPurgeArgs,
    mut store: Store,
    config: &Config,
    printer: Printer,
    _owner: &str,
) -> Result<ExitStatus> {
    // Re-trace: builds recorded since `open` may have widened the blast radius.
    let incident = store.incident(args.id)?;
    let opened: Opened = serde_json::from_str(&incident.seeds)
        .context("the incident's stored seeds are unreadable")?;
    let (trace, actions) = trace_and_plan(&mut store, &opened, config)?;
    store.set_incident_digests(args.id, &tainted_digests(&trace))?;
    let before = store.actions(args.id)?;
    let added = store.extend_plan(args.id, &actions)?;
    let rows = store.actions(args.id)?;
    if added > 0 {
        let delta: Vec<ActionRow> = rows
            .iter()
            .filter(|r| !before.iter().any(|b| b.id == r.id))
            .cloned()
            .collect();
        printer.status(format!(
            "the re-trace found {added} new actions since the incident was opened:\n{}",
            plan_table(&delta)
        ));
    }
    let pending: Vec<&ActionRow> = rows
        .iter()
        .filter(|r| r.state != "done" && r.state != "skipped")
        .collect();
    if pending.is_empty() {
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
        let dir = match &args.evidence_dir {
            Some(dir) => dir.clone(),
            None => store
                .path()
                .parent()
                .unwrap_or(Path::new("."))
                .join("evidence")
                .join(format!("incident-{}", args.id)),
        };
        let probes = mount_probes(&store, args.id, &rows)?;
        let docker = crate::evidence::docker_client();
        let collect = crate::evidence::Collect {
            dir: &dir,
            config,
            blobs: args.evidence_blobs,
            incident: args.id,
            docker: &docker,
            probes: &probes,
        };
        let collected = crate::evidence::collect(&rows, &collect)
            .await
            .with_context(|| format!("cannot save evidence in `{}`", dir.display()))?;
        for item in &collected.unavailable {
            printer.warn(format!("evidence not saved: {item}"));
        }
        store.save_manifest_facts(&collected.facts)?;
        store.set_evidence_dir(args.id, &dir.display().to_string())?;
        printer.status(format!("evidence saved in {}", dir.display()));
    }
    let concurrency = args.concurrency.unwrap_or(config.purge.concurrency).max(1);
    let reporter: Arc<dyn Reporter> = if printer.progress {
        Arc::new(Bars::default())
    } else {
        Arc::new(execute::Silent)
    };
    let store = Arc::new(Mutex::new(store));
    let summary = execute::execute(store.clone(), args.id, config, concurrency, reporter).await?;
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
        write_stdout(&format!("{}\n", serde_json::to_string_pretty(&doc)?))?;
    } else {
        warn_failed(printer, &rows);
        printer.status(format!(
            "incident {}: {} done, {} failed, {} done earlier, {} not executed (follow-ups or out of scope); report: cachewarden incident report {}",
            args.id, summary.done, summary.failed, summary.already_done, summary.skipped, args.id
        ));
    }
    Ok(if summary.failed > 0 {
        ExitStatus::Findings
    } else {
        ExitStatus::Success
    })
}

/// What listing each tainted mount of the plan needs from the store. The listing build runs
/// in a base image, so one the incident holds tainted is never chosen.
fn mount_probes(
    store: &Store,
    incident: i64,
    rows: &[ActionRow],
) -> Result<BTreeMap<(String, String), crate::evidence::MountProbe>> {
    let tainted: BTreeSet<String> = store
        .incident_digests(incident)?
        .into_iter()
        .map(|(digest, _)| digest)
        .collect();
    let mut probes = BTreeMap::new();
    for row in rows {
        if let Target::Mount {
            builder, mount_id, ..
        } = &row.action.target
        {
            let mut probe = store.mount_probe(builder, mount_id)?;
            probe
                .base_images
                .retain(|(_, digest)| !tainted.contains(digest));
            probes.insert((builder.clone(), mount_id.clone()), probe);
        }
    }
    Ok(probes)
}

/// Re-checks every done action and re-runs the trace; records the result.
async fn verify_incident(
    store: &mut Store,
    id: i64,
    config: &Config,
) -> Result<(bool, Vec<String>)> {
    let rows = store.actions(id)?;
    let mut lines = Vec::new();
    let mut clean = true;
    let mut registries: BTreeMap<String, RegistryClient> = BTreeMap::new();
    let evidence = store.evidence_dir(id)?.map(std::path::PathBuf::from);
    let probes = mount_probes(store, id, &rows)?;
    let docker = crate::evidence::docker_client();
    for row in rows.iter().filter(|r| r.state == "done") {
        let name = report::incident::describe_target(&row.action.target);
        let verdict: Result<Option<String>, crate::error::RemoteError> = match &row.action.target {
            Target::Manifest {
                registry,
                repository,
                digest,
                ..
            } => match client_for(&mut registries, config, registry) {
                Err(e) => Err(e),
                Ok(client) => client.head_manifest(repository, digest).await.map(|head| {
                    head.map(|_| {
                        format!("{registry}/{repository}@{digest} is back in the registry")
                    })
                }),
            },
            Target::Builder {
                builder,
                endpoint,
                driver,
                record_ids,
                ..
            } => match connect_builder(config, builder, endpoint.as_deref(), *driver).await {
                Err(e) => Err(e),
                Ok(mut client) => client.disk_usage().await.map(|records| {
                    let back: Vec<&String> = record_ids
                        .iter()
                        .filter(|id| records.iter().any(|r| &r.id == *id))
                        .collect();
                    (!back.is_empty()).then(|| format!("records still on `{builder}`: {back:?}"))
                }),
            },
            Target::Mount {
                builder,
                endpoint,
                driver,
                mount_id,
                ..
            } => {
                let before = evidence.as_ref().and_then(|dir| {
                    std::fs::read_to_string(
                        dir.join(crate::evidence::mount_listing_file(builder, mount_id)),
                    )
                    .ok()
                });
                match crate::evidence::mount_listing(
                    config,
                    &docker,
                    &probes,
                    builder,
                    endpoint.as_deref(),
                    *driver,
                    mount_id,
                )
                .await
                {
                    Ok(now) if now.trim().is_empty() => Ok(None),
                    Ok(now)
                        if before
                            .as_deref()
                            .is_some_and(|b| b != now && !b.trim().is_empty()) =>
                    {
                        // Changed since the purge: what is there now was written afterwards.
                        Ok(None)
                    }
                    Ok(_) => Ok(Some(format!(
                        "mount `{mount_id}` on `{builder}` still holds the purged files"
                    ))),
                    Err(e) => Err(e),
                }
            }
            Target::LocalImage { .. } | Target::FollowUp { .. } => Ok(None),
        };
        match verdict {
            Ok(None) => lines.push(format!("clean      {name}")),
            Ok(Some(problem)) => {
                clean = false;
                lines.push(format!("NOT CLEAN  {name}: {problem}"));
            }
            Err(err) => {
                clean = false;
                lines.push(format!("UNKNOWN    {name}: {err}"));
            }
        }
    }
    let failed = rows
        .iter()
        .filter(|r| r.state == "failed" || r.state == "pending" || r.state == "running")
        .count();
    if failed > 0 {
        clean = false;
        lines.push(format!("NOT CLEAN  {failed} actions are not done"));
    }
    // Re-trace: anything tainted now that the purge plan does not cover.
    let incident = store.incident(id)?;
    let opened: Opened = serde_json::from_str(&incident.seeds)
        .context("the incident's stored seeds are unreadable")?;
    let (_, actions) = trace_and_plan(store, &opened, config)?;
    let known: BTreeSet<String> = rows
        .iter()
        .map(|r| serde_json::to_string(&r.action.target).unwrap_or_default())
        .collect();
    let new: Vec<&Action> = actions
        .iter()
        .filter(|a| a.in_scope && a.kind != ActionKind::FollowUp)
        .filter(|a| !known.contains(&serde_json::to_string(&a.target).unwrap_or_default()))
        .collect();
    if new.is_empty() {
        lines.push("clean      the re-run trace finds nothing new".to_owned());
    } else {
        clean = false;
        for a in new {
            lines.push(format!(
                "NOT CLEAN  new since the purge: {}",
                report::incident::describe_target(&a.target)
            ));
        }
    }
    let result = serde_json::to_string(&lines)?;
    store.record_verification(id, &crate::actor::actor(), clean, &result)?;
    Ok((clean, lines))
}

async fn verify(
    args: &crate::cli::IncidentVerifyArgs,
    db: &Path,
    config: &Config,
    printer: Printer,
) -> Result<ExitStatus> {
    let mut store = open_existing_store(db)?;
    store.incident(args.id)?;
    let (clean, lines) = verify_incident(&mut store, args.id, config).await?;
    match args.format {
        OutputFormat::Json => write_stdout(&format!(
            "{}\n",
            serde_json::to_string_pretty(
                &serde_json::json!({"incident": args.id, "clean": clean, "checks": lines})
            )?
        ))?,
        OutputFormat::Text => {
            let mut out = format!(
                "incident {}: {}\n",
                args.id,
                if clean { "clean" } else { "NOT clean" }
            );
            for line in &lines {
                out.push_str(&format!("  {line}\n"));
            }
            write_stdout(&out)?;
        }
    }
    if !clean {
        printer.warn("verification found problems: see above");
        return Ok(ExitStatus::Findings);
    }
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
    if incident.status == "closed" {
        printer.status(format!("incident {} is already closed", args.id));
        return Ok(ExitStatus::Success);
    }
    let (clean, lines) = verify_incident(&mut store, args.id, config).await?;
    if !clean && !args.force {
        for line in lines.iter().filter(|l| !l.starts_with("clean")) {
            printer.warn(line);
        }
        return Err(RefusedError(format!(
            "incident {} does not verify clean: fix what is listed, or close with --force (recorded)",
            args.id
        ))
        .into());
    }
    store.close_incident(args.id, &crate::actor::actor())?;
    printer.status(format!(
        "incident {} closed by {} (verification {}); containment lifted",
        args.id,
        crate::actor::actor(),
        if clean { "clean" } else { "NOT clean, forced" }
    ));
    Ok(ExitStatus::Success)
}

/// A registry's client and the bound on the manifest checks in flight there.
type Checker = (Arc<RegistryClient>, Arc<Semaphore>);

/// The dry run: every pending target is checked for existence, reachability and scope.
/// Manifests are checked concurrently, `concurrency` at a time per registry, and what they
/// turn out to be is recorded for the execution.
async fn check(
    store: &mut Store,
    id: i64,
    config: &Config,
    concurrency: usize,
    printer: Printer,
) -> Result<ExitStatus> {
    let rows = store.actions(id)?;
    let to_check = |row: &ActionRow| {
        row.state != "done" && row.action.in_scope && row.action.kind != ActionKind::FollowUp
    };
    let digests: Vec<&str> = rows
        .iter()
        .filter(|row| to_check(row))
        .filter_map(|row| row.action.target.manifest_digest())
        .collect();
    let known = store.manifest_facts(&digests)?;
    let mut checked: Vec<Option<Result<String, RemoteError>>> =
        std::iter::repeat_with(|| None).take(rows.len()).collect();
    let mut registries: HashMap<String, Result<Checker, String>> = HashMap::new();
    let mut manifests = JoinSet::new();
    for (i, row) in rows.iter().enumerate().filter(|(_, row)| to_check(row)) {
        let Target::Manifest {
            registry,
            repository,
            digest,
            ..
        } = &row.action.target
        else {
            continue;
        };
        let place = registries.entry(registry.clone()).or_insert_with(|| {
            RegistryClient::new(config, registry)
                .map(|client| (Arc::new(client), Arc::new(Semaphore::new(concurrency))))
                .map_err(|err| err.to_string())
        });
        let (client, semaphore) = match place {
            Ok((client, semaphore)) => (client.clone(), semaphore.clone()),
            Err(err) => {
                checked[i] = Some(Err(RemoteError(err.clone())));
                continue;
            }
        };
        let (repository, digest) = (repository.clone(), digest.clone());
        let known = known.get(&digest).cloned();
        manifests.spawn(async move {
            let _permit = semaphore.acquire_owned().await.expect("semaphore open");
            (
                i,
                check_manifest(&client, &repository, &digest, known).await,
            )
        });
    }
    // Builder-side targets one at a time while the manifest checks run.
    for (i, row) in rows.iter().enumerate().filter(|(_, row)| to_check(row)) {
        if !matches!(row.action.target, Target::Manifest { .. }) {
            checked[i] = Some(check_target(&row.action.target, config).await);
        }
    }
    let mut learned = Vec::new();
    while let Some(joined) = manifests.join_next().await {
        let (i, (result, facts)) = joined.expect("manifest check panicked");
        checked[i] = Some(result);
        learned.extend(facts);
    }
    store.save_manifest_facts(&learned)?;
    let mut problems = 0;
    let mut out = String::new();
    for (row, checked) in rows.iter().zip(checked) {
        let status = if row.state == "done" {
            "done earlier".to_owned()
        } else if !row.action.in_scope {
            problems += 1;
            "out of scope: will not run".to_owned()
        } else if row.action.kind == ActionKind::FollowUp {
            "follow-up (not executed)".to_owned()
        } else {
            match checked.expect("every target to check was checked") {
                Ok(s) => s,
                Err(err) => {
                    problems += 1;
                    format!("problem: {err}")
                }
            }
        };
        out.push_str(&format!(
            "  {:>3}  {:<18} {}: {status}\n",
            row.seq,
            row.action.kind.as_str(),
            report::incident::describe_target(&row.action.target)
        ));
    }
    write_stdout(&format!("incident {id}: dry run, nothing changed\n{out}"))?;
    if problems > 0 {
        printer.warn(format!("{problems} targets cannot be acted on as planned"));
        return Ok(ExitStatus::Findings);
    }
    Ok(ExitStatus::Success)
}

/// Whether a manifest is there and, for an index, how many child manifests go with it; with
/// what was learned about it when nothing was known before.
async fn check_manifest(
    client: &RegistryClient,
    repository: &str,
    digest: &str,
    known: Option<ManifestFacts>,
) -> (Result<String, RemoteError>, Option<ManifestFacts>) {
    let digest = match Digest::parse(digest, "digest") {
        Ok(digest) => digest,
        Err(err) => return (Err(RemoteError(err.to_string())), None),
    };
    let present = |facts: &ManifestFacts| match facts.children.len() {
        0 => format!("present ({})", facts.media_type),
        n => format!(
            "present ({}); {n} child manifests will be deleted with it",
            facts.media_type
        ),
    };
    match known {
        // Known already: only whether it is still there is asked.
        Some(known) => {
            let status = match client.head_manifest(repository, digest.as_str()).await {
                Ok(Some(_)) => Ok(present(&known)),
                Ok(None) if known.children.is_empty() => Ok("already gone".to_owned()),
                Ok(None) => Ok(format!(
                    "already gone; its {} recorded child manifests will be deleted if present",
                    known.children.len()
                )),
                Err(err) => Err(err),
            };
            (status, None)
        }
        None => match probe(client, repository, &digest).await {
            Ok(Some(facts)) => (Ok(present(&facts)), Some(facts)),
            Ok(None) => (Ok("already gone".to_owned()), None),
            Err(err) => (Err(err), None),
        },
    }
}

/// Checks a builder-side target. Manifests are checked by [`check_manifest`], follow-ups not
/// at all.
async fn check_target(target: &Target, config: &Config) -> Result<String, RemoteError> {
    match target {
        Target::Mount {
            builder,
            endpoint,
            driver,
            mount_id,
            targets,
            shares_target_with,
        } => {
            let mut client = connect_builder(config, builder, endpoint.as_deref(), *driver).await?;
            let records = client.disk_usage().await?;
            let (ids, note) = select_mount_records(&records, mount_id, targets, shares_target_with);
            Ok(format!(
                "{} records to prune{}",
                ids.len(),
                note.map(|n| format!("; {n}")).unwrap_or_default()
            ))
        }
        Target::Builder {
            builder,
            endpoint,
            driver,
            record_ids,
            used_since,
            full,
            ..
        } => {
            let mut client = connect_builder(config, builder, endpoint.as_deref(), *driver).await?;
            let records = client.disk_usage().await?;
            let ids = select_builder_records(&records, record_ids, *used_since, *full);
            Ok(format!(
                "{} of {} records to prune",
                ids.len(),
                records.len()
            ))
        }
        Target::LocalImage {
            builder,
            endpoint,
            reference,
        } => {
            let (endpoint, _) = require_endpoint(config, builder, endpoint.as_deref(), None)?;
            let engine = Engine::connect(&endpoint).await?;
            Ok(match engine.image_inspect(reference).await? {
                Some(_) => "present".to_owned(),
                None => "not present".to_owned(),
            })
        }
        Target::Manifest { .. } | Target::FollowUp { .. } => Ok(String::new()),
    }
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
            out = format!("{}\n", serde_json::to_string_pretty(&docs)?);
        }
        OutputFormat::Text => {
            for i in &incidents {
                out.push_str(&format!(
                    "{:>4}  {:<6}  {}  {}\n",
                    i.id,
                    i.status,
                    time::format(i.opened_at),
                    i.title
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
            incident.title,
            incident.status,
            time::format(incident.opened_at),
            incident.opened_by,
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
        Some(path) => {
            let tmp = path.with_extension("partial");
            std::fs::write(&tmp, &buf)
                .with_context(|| format!("cannot write `{}`", tmp.display()))?;
            std::fs::rename(&tmp, path)
                .with_context(|| format!("cannot write `{}`", path.display()))?;
        }
        None => {
            let mut out = BufWriter::new(std::io::stdout().lock());
            out.write_all(&buf)?;
            out.flush()?;
        }
    }
    Ok(ExitStatus::Success)
}

fn extras(store: &Store, id: i64) -> Result<report::incident::Extras> {
    Ok(report::incident::Extras {
        overrides: store.overrides(id)?,
        evidence_dir: store.evidence_dir(id)?,
        verification: store.last_verification(id)?,
    })
}

/// Progress bars per action kind, on stderr.
#[derive(Default)]
pub(crate) struct Bars {
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
