//! `cachewarden wrap`: run a build or push and record what it did.
//!
//! Recording trouble never fails the build: it becomes a warning on stderr, and `wrap` exits
//! with the command's own status. Containment is another matter: a build from an input an open
//! incident holds tainted is refused, and so is one whose inputs cannot be checked because the
//! store exists but cannot be read, unless `[containment] on_unavailable = "fail-open"`.

use crate::report::escape::Term;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::ExitStatus;
use crate::cli::{CollectorArgs, RecordArgs, RunArgs, WrapArgs};
use crate::commands::record::{
    apply_metadata, artifact_of_spec, build_record, carries_inline_cache, reference_of,
    registry_hosts,
};
use crate::commands::{open_existing_store, open_store};
use crate::config::{Config, OnUnavailable};
use crate::error::{InputError, RefusedError, RemoteError, RemoteKind, SpawnError};
use crate::ingest::command::{self, BuildCommand, Wrapped};
use crate::ingest::{builder as builder_name, cache_flag, ci, metadata, progress};
use crate::model::{
    Artifact, Backend, BuilderInfo, BuilderRecord, CacheSpec, Digest, Driver, ImageRef,
    RecordEvidence, RunStatus,
};
use crate::printer::Printer;
use crate::remote::buildkit::{BuildkitClient, CacheRecord};
use crate::remote::engine::Engine;
use crate::remote::registry::Resolver;
use crate::store::{Contained, Store, StoreError};
use crate::time;

pub async fn wrap(
    args: WrapArgs,
    db: &Path,
    config: &Config,
    printer: Printer,
) -> Result<ExitStatus> {
    match command::parse(&args.command) {
        Wrapped::Build(build) => wrap_build(&args, *build, db, config, printer).await,
        Wrapped::Push { reference } => wrap_push(&args, &reference, db, printer).await,
        Wrapped::Other => {
            // A build wrap cannot read has inputs nobody can check: while an incident holds
            // anything, `[containment] on_unavailable` decides, as for any input it cannot
            // check.
            if command::may_build(&args.command) {
                unknown_inputs(
                    &args,
                    db,
                    config,
                    printer,
                    "the command builds in a way wrap does not read (a wrapper, buildx bake, compose), so its inputs are unknown",
                )
                .await?;
            }
            printer.warn(format!(
                "`{}` is not a docker build or push wrap reads: running it without recording",
                crate::report::escape::Line(&args.command.join(" "))
            ));
            run_inherited(&args.command).await
        }
    }
}

/// Exit status of a child: its code, or 128 + signal.
fn child_status(status: std::process::ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code).unwrap_or(1),
        (None, Some(signal)) => u8::try_from(128 + signal).unwrap_or(1),
        (None, None) => 1,
    }
}

async fn run_inherited(argv: &[String]) -> Result<ExitStatus> {
    let status = spawn(argv)?
        .wait()
        .await
        .context("waiting for the wrapped command")?;
    Ok(ExitStatus::from_child(child_status(status)))
}

fn spawn(argv: &[String]) -> Result<tokio::process::Child> {
    let (program, rest) = argv
        .split_first()
        .ok_or_else(|| InputError::invalid("wrap needs a command after `--`"))?;
    tokio::process::Command::new(program)
        .args(rest)
        .spawn()
        .map_err(|err| SpawnError::new(program, &err).into())
}

/// A scratch directory for the files `wrap` asks the build to write.
fn scratch_dir() -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("cachewarden-wrap-")
        .tempdir()
        .context("cannot create a temporary directory")
}

async fn wrap_build(
    args: &WrapArgs,
    build: BuildCommand,
    db: &Path,
    config: &Config,
    printer: Printer,
) -> Result<ExitStatus> {
    let scratch = scratch_dir()?;
    let mut argv = args.command.clone();
    let mut extra = Vec::new();
    let iidfile = match &build.iidfile {
        Some(path) => path.clone(),
        None => {
            let path = scratch.path().join("iid");
            extra.push(format!("--iidfile={}", path.display()));
            path
        }
    };
    let metadata_file = match (&build.metadata_file, build.buildx) {
        (Some(path), _) => Some(path.clone()),
        (None, true) => {
            let path = scratch.path().join("metadata.json");
            extra.push(format!("--metadata-file={}", path.display()));
            Some(path)
        }
        (None, false) => None,
    };
    // Per-step cache hits are read from the progress output: plain for `docker build` on the
    // legacy client, raw JSON for buildx (which also serves `docker build` from Docker 23 on,
    // and prints no step digests in plain), unless the command (or `BUILDKIT_PROGRESS`) names
    // its own mode, which is read when it is `plain` or `rawjson`. Raw JSON that `wrap` asked
    // for is shown to the user as text; a mode the command named passes through unchanged.
    let named = build.progress.clone().or_else(|| {
        std::env::var("BUILDKIT_PROGRESS")
            .ok()
            .filter(|v| !v.is_empty())
    });
    // The mode `wrap` names is picked once containment has let the build run: asking a
    // `docker build` client whether it runs through buildx runs it.
    let named_mode = match &named {
        Some(mode) => {
            let read = progress::Mode::of_flag(mode);
            if read.is_none() {
                printer.detail(format!(
                    "per-step cache hits are not recorded: progress mode `{}` is not read (plain and rawjson are)",
                    crate::report::escape::Term(mode)
                ));
            }
            read
        }
        None => None,
    };
    argv.splice(build.insert_at..build.insert_at, extra);

    // The client's `-H`, `--context` and `--config` choose the engine, as its environment does.
    let process_env = |name: &str| std::env::var(name).ok();
    let client = build.client.clone();
    let client_env = builder_name::client_env(&client, &process_env);
    let (env, route) = buildx_env(&build, &client_env);
    let record_args = merged_args(&args.run, &build);
    // Everything that can be known before the build is settled first; a bad flag is an error
    // before anything runs.
    let mut warnings = Vec::new();
    let planned = build_record(&record_args, config, &env, Some((0, 0)), &mut warnings);
    for warning in &warnings {
        printer.warn(warning);
    }
    let planned = planned.map(|mut record| {
        if let Some(actual) = builds_elsewhere(&record, &env, config, route) {
            let named = record.builder.as_ref().map_or("", |b| b.name.as_str());
            printer.warn(format!(
                "builder `{}` is configured at `{}`, but the command builds on `{}`: the build is recorded on builder `{}`",
                Term(named),
                Term(config.builder(named).map_or("", |b| b.endpoint.as_str())),
                Term(actual.endpoint.as_deref().unwrap_or(&actual.name)),
                Term(&actual.name)
            ));
            record.builder = Some(actual);
        }
        record
    });
    let mut planned = match planned {
        Ok(mut record) => {
            named_image_contexts(&mut record, &build);
            // A flag wrap does not read may hide inputs: the record says they may be incomplete.
            record.truncated |= !build.unknown_flags.is_empty();
            Some(record)
        }
        Err(err) => {
            printer.warn(format!(
                "the build will not be recorded: {}",
                crate::printer::one_line(&err)
            ));
            None
        }
    };

    let builder = planned.as_ref().and_then(|r| r.builder.clone());
    let endpoint = builder.as_ref().and_then(|b| reachable_endpoint(b, config));
    let mut buildkit = match (&endpoint, &builder) {
        (Some(endpoint), Some(b)) => match connect(endpoint, b).await {
            Ok(client) => Some(client),
            Err(err) => {
                printer.warn(format!("builder records will not be captured: {err}"));
                None
            }
        },
        (None, Some(b)) => {
            printer.warn(format!(
                "builder records will not be captured: no endpoint is known for builder `{}` (give it one in a `[[builder]]` table of the config)",
                b.name
            ));
            None
        }
        (_, None) => None,
    };
    let engine = match (&endpoint, builder.as_ref().and_then(|b| b.driver)) {
        (Some(endpoint), Some(Driver::Docker) | None) => Engine::connect(endpoint).await.ok(),
        _ => None,
    };
    let before = match buildkit.as_mut() {
        Some(client) => match baseline(client).await {
            Ok(records) => Some(records),
            Err(err) => {
                printer.warn(format!("builder records will not be captured: {err}"));
                None
            }
        },
        None => None,
    };
    if planned.is_some() && !reads_dockerfile(&build) {
        printer.warn(
            "the Dockerfile is not a file here (standard input, a remote context, or a file that is not there): its base images are not recorded",
        );
    }
    let mut import_tags: Vec<(ImageRef, Option<Digest>)> = Vec::new();
    let mut absent: Vec<Artifact> = Vec::new();
    let mut held_here: Vec<Artifact> = Vec::new();
    if let Some(record) = planned.as_mut() {
        pin_inputs(
            record,
            engine.as_ref(),
            config,
            printer,
            (&mut import_tags, &mut absent, &mut held_here),
        )
        .await;
    }

    // Containment: an open incident holds some input tainted. A store that exists but cannot
    // be read is decided by `[containment] on_unavailable`.
    // A build that may run through buildx or on the engine's own builder (a plain `docker
    // build` on a client that may predate Docker 23) is checked against both.
    let also = planned
        .as_ref()
        .map(|record| may_also_build_on(record, &env, config, route))
        .unwrap_or_default();
    let (hits, mut containment_store) = match planned.as_ref() {
        Some(record) => match contained_inputs(
            record,
            db,
            &args.run.collector,
            (config, printer, &held_here),
            &also,
        )
        .await
        {
            Ok(found) => found,
            Err(err) => match config.on_unavailable_for(Some(&record.pipeline.name)) {
                OnUnavailable::FailClosed => {
                    return Err(RefusedError(format!(
                        "refusing to build: whether its inputs are tainted cannot be checked: {err} (`[containment] on_unavailable` is `fail-closed`)"
                    ))
                    .into());
                }
                OnUnavailable::FailOpen => {
                    printer.warn(format!(
                        "containment not checked, building anyway (`[containment] on_unavailable = \"fail-open\"`): {err}"
                    ));
                    (Vec::new(), None)
                }
            },
        },
        None => {
            unknown_inputs(args, db, config, printer, "the build cannot be planned").await?;
            (Vec::new(), None)
        }
    };
    let mut hits = hits;
    if let Some(record) = planned.as_ref() {
        let unchecked = unchecked_inputs(record, &build, &absent);
        if !unchecked.is_empty() {
            hits.extend(contained_by_tag(record, db, &absent));
            if hits.is_empty() {
                unknown_inputs(args, db, config, printer, &unchecked.join("; ")).await?;
            }
        }
    }
    if !hits.is_empty() {
        for hit in &hits {
            let line = if hit.digest.is_empty() {
                format!(
                    "`{}` is tainted in open incident {}",
                    Term(&hit.name),
                    hit.incident
                )
            } else {
                format!(
                    "`{}` ({}) is tainted in open incident {}",
                    Term(&hit.name),
                    Term(&hit.digest),
                    hit.incident
                )
            };
            if args.allow_tainted {
                printer.warn(format!(
                    "{line}: building anyway (--allow-tainted, recorded)"
                ));
            } else {
                printer.warn(line);
            }
        }
        if !args.allow_tainted {
            return Err(RefusedError(format!(
                "refusing to build from {} tainted input(s); pass --allow-tainted to override (the override is recorded)",
                hits.len()
            ))
            .into());
        }
        if let (Some(record), Some(server)) = (planned.as_ref(), &args.run.collector.server) {
            // The fleet's record holds it, under the token's identity; a build never waits on
            // it, so a collector that cannot take it is a warning.
            // The collector keeps overrides of digests; one of a held mount stays in this
            // warning and the build's record.
            let digests: Vec<Contained> = hits
                .iter()
                .filter(|h| !h.digest.is_empty())
                .cloned()
                .collect();
            if !digests.is_empty() {
                match crate::commands::send::send_overrides(
                    server,
                    &args.run.collector,
                    record,
                    &digests,
                )
                .await
                {
                    Ok(kept) => printer.status(format!(
                        "cachewarden: the override is recorded at the collector ({})",
                        crate::report::count(usize::try_from(kept).unwrap_or(0), "input", "inputs")
                    )),
                    Err(err) => printer.warn(format!(
                        "the override was not recorded at the collector: {}",
                        crate::report::escape::Line(&err)
                    )),
                }
            }
        } else if let Some(record) = planned.as_ref() {
            // The OS account from the system, never `USER`, which the job sets at will.
            let by = crate::actor::actor();
            let store = match containment_store.take() {
                Some(store) => Ok(store),
                None => open_store(db),
            };
            match store {
                Ok(mut store) => {
                    for hit in &hits {
                        if let Err(err) =
                            store.record_override(hit, &record.pipeline.name, &record.run_id, &by)
                        {
                            printer.warn(format!("the override was not recorded: {err}"));
                        }
                    }
                }
                Err(err) => printer.warn(format!("the override was not recorded: {err}")),
            }
        }
    }
    drop(containment_store);

    let mut render = false;
    let progress = match named {
        Some(_) => named_mode,
        None => {
            let mode = if build.buildx
                || build_runs_through_buildx(&argv, builder_name::config_dir(&env)).await
            {
                progress::Mode::RawJson
            } else {
                progress::Mode::Plain
            };
            argv.insert(build.insert_at, format!("--progress={}", mode.as_str()));
            render = mode == progress::Mode::RawJson;
            Some(mode)
        }
    };
    let started_at = time::now();
    let (status, output) = run_reading_stderr(&argv, progress.is_some(), render).await?;
    let finished_at = time::now();
    let code = child_status(status);

    let Some(mut record) = planned else {
        return Ok(ExitStatus::from_child(code));
    };
    record.started_at = started_at;
    record.finished_at = finished_at;
    record.status = if status.success() {
        RunStatus::Succeeded
    } else {
        RunStatus::Failed
    };
    if let (Some(client), Some(before)) = (buildkit.as_mut(), before) {
        // A build can outlast the connection opened before it: one new connection is tried.
        let after = match client.disk_usage().await {
            Err(_) if let (Some(endpoint), Some(b)) = (&endpoint, &builder) => {
                match connect(endpoint, b).await {
                    Ok(mut fresh) => fresh.disk_usage().await,
                    Err(err) => Err(err),
                }
            }
            after => after,
        };
        match after {
            Ok(after) => record.records = Some(diff_records(&before, &after)),
            Err(err) => printer.warn(format!(
                "builder records after the build were not captured: {err}"
            )),
        }
    }
    let steps = progress.map(|mode| {
        let found = progress::steps(&output, mode);
        (mode, progress::attribute(found, record.records.as_ref()))
    });
    drop(output);
    if status.success() {
        let outputs = Outputs {
            iidfile: &iidfile,
            metadata_file: metadata_file.as_deref(),
            pushed: if build.push { &build.tags } else { &[] },
            inline: carries_inline_cache(&record_args),
        };
        collect_outputs(&mut record, &outputs, printer);
        resolve_cache_exports(&mut record, &record_args, config, printer).await;
        check_moved(&import_tags, config, printer).await;
    }
    if !fit_limits(&mut record, printer) {
        return Ok(ExitStatus::from_child(code));
    }
    if let Some(server) = &args.run.collector.server {
        let sent_steps = steps
            .as_ref()
            .filter(|(_, hits)| !hits.is_empty())
            .map(|(mode, hits)| (*mode, hits.as_slice()));
        // Recording never fails the build: a refusal is a warning here.
        match crate::commands::send::deliver(
            &record,
            sent_steps,
            server,
            &args.run.collector,
            printer,
        )
        .await
        {
            Ok(crate::commands::send::Delivered::Stored { answer, .. }) => printer.status(format!(
                "cachewarden: recorded {} run `{}` at the collector",
                record.status.as_str(),
                crate::report::escape::Term(answer["run"].as_str().unwrap_or(""))
            )),
            Ok(crate::commands::send::Delivered::Spooled) => {}
            Err(err) => printer.warn(format!(
                "the build was not recorded: {}",
                crate::printer::one_line(&err)
            )),
        }
        return Ok(ExitStatus::from_child(code));
    }
    let mut store = None;
    match open_store(db)
        .map_err(anyhow::Error::from)
        .and_then(|s| Ok(store.insert(s).record_run(&record, config)?))
    {
        Ok(outcome) => {
            let trust = crate::commands::record::trust_warning(&record_args, config, &env);
            for warning in trust.iter().chain(&outcome.warnings) {
                printer.warn(warning);
            }
            printer.status(format!(
                "cachewarden: recorded {} run `{}` ({})",
                record.status.as_str(),
                Term(&crate::model::run_name(
                    &record.pipeline.name,
                    &record.run_id,
                    &record.step
                )),
                crate::report::count(outcome.events, "event", "events")
            ))
        }
        Err(err) => {
            printer.warn(format!(
                "the build was not recorded: {}",
                crate::printer::one_line(&err)
            ));
            return Ok(ExitStatus::from_child(code));
        }
    }
    if let (Some(store), Some((mode, hits))) = (store.as_mut(), steps)
        && !hits.is_empty()
    {
        let key = (
            record.pipeline.name.as_str(),
            record.run_id.as_str(),
            record.step.as_str(),
        );
        match store.record_steps(key, &hits, mode, record.finished_at) {
            Ok(added) => printer.detail(format!(
                "cachewarden: recorded {}: {} from cache, {} attributed to a builder record",
                crate::report::count(added, "step", "steps"),
                hits.iter().filter(|h| h.step.cached).count(),
                hits.iter().filter(|h| h.record.is_some()).count()
            )),
            Err(err) => printer.warn(format!("the build's steps were not recorded: {err}")),
        }
    }
    Ok(ExitStatus::from_child(code))
}

/// Whether the `docker build` in `argv` runs through buildx: asks the client its version
/// (`docker --version`, which reaches no daemon) on every run, and reads its `config.json` for
/// a `docker buildx install` alias. A client that cannot say is taken for the legacy one.
async fn build_runs_through_buildx(argv: &[String], config_dir: Option<PathBuf>) -> bool {
    let Some(program) = argv.first() else {
        return false;
    };
    let version = tokio::process::Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .await
        .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
        .unwrap_or_default();
    let config = config_dir.and_then(|d| std::fs::read_to_string(d.join("config.json")).ok());
    command::build_served_by_buildx(
        &version,
        config.as_deref(),
        std::env::var("DOCKER_BUILDKIT").ok().as_deref(),
    )
}

/// Runs the build. With `read`, its stderr (where the progress output goes) is passed through
/// as it comes, byte for byte (or, with `render`, raw JSON progress shown as text), and its
/// first [`progress::OUTPUT_BYTES`] are kept to read.
async fn run_reading_stderr(
    argv: &[String],
    read: bool,
    render: bool,
) -> Result<(std::process::ExitStatus, Vec<u8>)> {
    use tokio::io::AsyncReadExt;
    if !read {
        let status = spawn(argv)?.wait().await.context("waiting for the build")?;
        return Ok((status, Vec::new()));
    }
    let (program, rest) = argv
        .split_first()
        .ok_or_else(|| InputError::invalid("wrap needs a command after `--`"))?;
    let mut child = tokio::process::Command::new(program)
        .args(rest)
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| SpawnError::new(program, &err))?;
    let mut kept = Vec::new();
    if let Some(mut stderr) = child.stderr.take() {
        let mut out = tokio::io::stderr();
        let mut chunk = vec![0u8; 64 * 1024];
        let mut renderer = render.then(progress::Render::default);
        let mut shown = Vec::new();
        loop {
            match stderr.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    match renderer.as_mut() {
                        Some(renderer) => {
                            renderer.feed(&chunk[..n], &mut shown);
                            let _ = out.write_all(&shown).await;
                            shown.clear();
                        }
                        None => {
                            let _ = out.write_all(&chunk[..n]).await;
                        }
                    }
                    let _ = out.flush().await;
                    let room = progress::OUTPUT_BYTES.saturating_sub(kept.len());
                    kept.extend_from_slice(&chunk[..n.min(room)]);
                }
            }
        }
        if let Some(renderer) = renderer.as_mut() {
            renderer.finish(&mut shown);
            let _ = out.write_all(&shown).await;
            let _ = out.flush().await;
        }
    }
    let status = child.wait().await.context("waiting for the build")?;
    Ok((status, kept))
}

/// Makes the run fit the limits (`model::limits`): a build never fails over one, so what is
/// over is left out, the run flagged `truncated`, and a warning says what. False when the run's
/// own name is over: then nothing is recorded.
fn fit_limits(record: &mut crate::model::RunRecord, printer: Printer) -> bool {
    match crate::model::limits::fit(record) {
        Ok(cut) => {
            if let Some(first) = cut.first() {
                let more = match cut.len() - 1 {
                    0 => String::new(),
                    n => format!(" (and {n} more)"),
                };
                printer.warn(format!(
                    "recorded what fits and flagged the run truncated: {first}{more}"
                ));
            }
            true
        }
        Err(err) => {
            printer.warn(format!("the build was not recorded: {err}"));
            false
        }
    }
}

/// Whether the build's Dockerfile is a file here, which the record reads its base images from.
fn reads_dockerfile(build: &BuildCommand) -> bool {
    build.dockerfile().is_some_and(|path| path.exists())
}

/// What of a planned build's inputs nobody can check: each registry input left without a
/// digest (but those its registry has nothing under: `absent`), and a Dockerfile no file
/// holds (read from standard input, or from a remote context) or that could not be read in full
/// (the run is then flagged truncated), whose base images are unknown.
fn unchecked_inputs(
    record: &crate::model::RunRecord,
    build: &BuildCommand,
    absent: &[Artifact],
) -> Vec<String> {
    let mut unchecked: Vec<String> = record
        .imported
        .iter()
        .chain(&record.base_images)
        .filter(|a| a.backend == Backend::Registry && a.digest.is_none() && !absent.contains(a))
        .map(|a| {
            format!(
                "`{}{}` could not be pinned to a digest",
                a.locator,
                a.tag
                    .as_deref()
                    .map(|t| format!(":{t}"))
                    .unwrap_or_default()
            )
        })
        .collect();
    // What a named context of another kind (a directory, a git repository, an OCI layout)
    // gives `FROM NAME` or `COPY --from=NAME` is nothing a registry holds.
    for context in &build.build_contexts {
        if let Some((name, value)) = context.split_once('=')
            && value
                .strip_prefix(DOCKER_IMAGE_CONTEXT)
                .is_none_or(|image| ImageRef::parse(image, "--build-context").is_err())
        {
            unchecked.push(format!(
                "build context `{}` is `{}`: what the build reads from it is not checked",
                Term(name),
                Term(value)
            ));
        }
    }
    // A mount under `BUILDKIT_CACHE_MOUNT_NS` is one no incident is checked for.
    for mount in record.mounts.iter().filter(|m| !m.namespace.is_empty()) {
        unchecked.push(format!(
            "cache mount `{}/{}` is under a namespace (BUILDKIT_CACHE_MOUNT_NS): whether an incident holds it is not checked",
            Term(&mount.namespace),
            Term(&mount.id)
        ));
    }
    // An unknown flag says why the Dockerfile may be other than read (and is why the run is
    // flagged truncated): said once, for each flag.
    for flag in &build.unknown_flags {
        unchecked.push(format!(
            "its command has the flag `{}`, which wrap does not read: its context, Dockerfile and inputs may be other than recorded",
            Term(flag)
        ));
    }
    if !build.unknown_flags.is_empty() {
        return unchecked;
    }
    if record.truncated {
        unchecked.push(
            "its Dockerfile could not be read in full, so its base images are unknown".to_owned(),
        );
    } else if !reads_dockerfile(build) {
        unchecked.push(
            "its Dockerfile is not a file here (standard input, a remote context, or a file that is not there), so its base images are unknown"
                .to_owned(),
        );
    }
    unchecked
}

/// How `--build-context NAME=VALUE` names an image.
const DOCKER_IMAGE_CONTEXT: &str = "docker-image://";

/// Applies the build's `--build-context NAME=docker-image://REF` flags to its record: the
/// image replaces a base image named `NAME` (BuildKit builds `FROM NAME` from it), and is a
/// base image of the build in any case (`COPY --from=NAME` reads it). A context of another kind
/// is left to [`unchecked_inputs`].
fn named_image_contexts(record: &mut crate::model::RunRecord, build: &BuildCommand) {
    for context in &build.build_contexts {
        let Some((name, value)) = context.split_once('=') else {
            continue;
        };
        let Some(image) = value.strip_prefix(DOCKER_IMAGE_CONTEXT) else {
            continue;
        };
        let Ok(image) = ImageRef::parse(image, "--build-context") else {
            continue;
        };
        if let Ok(named) = ImageRef::parse(name, "--build-context") {
            let named = Artifact::registry(&named);
            record.base_images.retain(|a| *a != named);
        }
        let image = Artifact::registry(&image);
        if !record.base_images.contains(&image) {
            record.base_images.push(image);
        }
    }
}

/// What open incidents hold tainted among the digests the local store recorded under the tags
/// of a build's unpinned registry inputs (but those its registry has nothing under:
/// `absent`); nothing when the store cannot be read (the caller then treats the inputs as
/// unknown).
fn contained_by_tag(
    record: &crate::model::RunRecord,
    db: &Path,
    absent: &[Artifact],
) -> Vec<Contained> {
    let Ok(store) = open_existing_store(db) else {
        return Vec::new();
    };
    let mut hits = Vec::new();
    for artifact in record.imported.iter().chain(&record.base_images) {
        if artifact.backend != Backend::Registry
            || artifact.digest.is_some()
            || absent.contains(artifact)
        {
            continue;
        }
        let Some(tag) = &artifact.tag else { continue };
        if let Ok(found) = store.contained_by_tag(&artifact.locator, tag) {
            hits.extend(found.into_iter().map(|hit| Contained {
                name: format!("{}:{tag} (recorded at {})", artifact.locator, hit.digest),
                ..hit
            }));
        }
    }
    hits
}

/// Containment for a build some of whose inputs nobody can check (`what`: it could not be
/// planned, an input could not be pinned, ...): while an open incident holds anything tainted,
/// it cannot be told apart from a tainted build, so `[containment] on_unavailable` decides, as
/// for a store that cannot be read. `--allow-tainted` builds anyway. No store, or no open
/// incident holding digests, builds as before.
async fn unknown_inputs(
    args: &WrapArgs,
    db: &Path,
    config: &Config,
    printer: Printer,
    what: &str,
) -> Result<()> {
    let incidents = match &args.run.collector.server {
        // An ephemeral runner's store is empty: the collector's is the one that knows.
        Some(server) => {
            match crate::commands::send::remote_holding(server, &args.run.collector).await {
                Ok(false) => return Ok(()),
                Ok(true) => Ok(None),
                Err(err) => Err(err),
            }
        }
        None => match open_existing_store(db) {
            Ok(store) => store
                .holding_incidents()
                .map(Some)
                .map_err(|e| e.to_string()),
            Err(StoreError::Missing { .. }) => return Ok(()),
            Err(err) => Err(err.to_string()),
        },
    };
    let why = match incidents {
        Ok(Some(ids)) if ids.is_empty() => return Ok(()),
        Ok(Some(ids)) => format!(
            "its inputs are unknown while open incident {} holds inputs tainted",
            ids.iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Ok(None) => {
            "its inputs are unknown while the collector's open incidents hold inputs tainted"
                .to_owned()
        }
        Err(err) => format!("whether its inputs are tainted cannot be checked: {err}"),
    };
    if args.allow_tainted {
        printer.warn(format!(
            "{what}, and {why}: building anyway (--allow-tainted)"
        ));
        return Ok(());
    }
    match config.on_unavailable_for(args.run.pipeline.as_deref()) {
        OnUnavailable::FailClosed => Err(RefusedError(format!(
            "refusing to build: {what}, and {why} (`[containment] on_unavailable` is `fail-closed`; --allow-tainted builds anyway)"
        ))
        .into()),
        OnUnavailable::FailOpen => {
            printer.warn(format!(
                "containment not checked, building anyway (`[containment] on_unavailable = \"fail-open\"`): {what}, and {why}"
            ));
            Ok(())
        }
    }
}

/// The inputs of a planned build that an open incident holds tainted, and the store they were
/// read from. No store yet holds nothing (a fresh runner records as before); a store that
/// exists but cannot be read is an error, which the caller decides on.
///
/// An input is as tainted as the manifests it lists: a multi-platform tag names an index, and
/// the build pulls the manifest for its platform from it. What an index lists comes from the
/// store's facts and, while an incident holds anything, from the registry itself.
async fn contained_inputs(
    record: &crate::model::RunRecord,
    db: &Path,
    collector: &CollectorArgs,
    (config, printer, held_here): (&Config, Printer, &[Artifact]),
    also: &[String],
) -> Result<(Vec<Contained>, Option<Store>), anyhow::Error> {
    let inputs: Vec<&Artifact> = record
        .imported
        .iter()
        .chain(&record.base_images)
        .filter(|a| a.digest.is_some())
        .collect();
    let name_of = |digest: &str| {
        inputs
            .iter()
            .find(|a| a.digest.as_ref().is_some_and(|d| d.as_str() == digest))
            .map(|a| a.locator.clone())
            .unwrap_or_else(|| digest.to_owned())
    };
    let digests: Vec<String> = inputs
        .iter()
        .filter_map(|a| a.digest.as_ref().map(ToString::to_string))
        .collect();
    // A builder reached at a Docker Engine (a context's) is also that engine by its own name:
    // a mount held there is held whatever the build calls the engine.
    let names: Vec<String> = match &record.builder {
        Some(builder) => {
            let mut names = vec![builder.name.clone()];
            if matches!(builder.driver, None | Some(Driver::Docker))
                && let Some(endpoint) = &builder.endpoint
            {
                let engine = builder_name::engine_name(endpoint, &builder_name::hostname());
                if !names.contains(&engine) {
                    names.push(engine);
                }
            }
            for name in also {
                if !names.contains(name) {
                    names.push(name.clone());
                }
            }
            names
        }
        None => Vec::new(),
    };
    let mounts: Vec<(String, String)> = names
        .iter()
        .flat_map(|name| {
            record
                .mounts
                .iter()
                .filter(|m| m.namespace.is_empty())
                .map(move |m| (name.clone(), m.id.clone()))
        })
        .collect();
    if digests.is_empty() && record.mounts.is_empty() {
        return Ok((Vec::new(), None));
    }
    // The inputs themselves first, and whether any incident holds anything at all.
    let mut found: Vec<Contained> = Vec::new();
    let (holding, store) = match &collector.server {
        // An ephemeral runner's store is empty: the collector's is the one that knows.
        Some(server) => {
            if digests.is_empty() && mounts.is_empty() {
                return Ok((Vec::new(), None));
            }
            let answer = match crate::commands::send::remote_contained_with_mounts(
                server, collector, &digests, &mounts,
            )
            .await
            {
                Ok(answer) => answer,
                // Only mounts asked: a collector of an earlier release refuses (400) a check of
                // no digest. Any other failure is one `on_unavailable` decides on.
                Err(err) if digests.is_empty() && err.contains("answered 400") => {
                    printer.warn(format!(
                        "the build's cache mounts were not checked at the collector: {}",
                        crate::report::escape::Line(&err)
                    ));
                    return Ok((Vec::new(), None));
                }
                Err(err) => return Err(anyhow::anyhow!("{err}")),
            };
            found.extend(
                answer
                    .digests
                    .into_iter()
                    .map(|(digest, incident)| Contained {
                        incident,
                        name: name_of(&digest),
                        digest,
                    }),
            );
            match answer.mounts {
                Some(held) => found.extend(held.into_iter().map(|((builder, id), incident)| {
                    Contained {
                        incident,
                        digest: String::new(),
                        name: format!("cache mount {builder}:{id}"),
                    }
                })),
                None if !mounts.is_empty() => printer.warn(
                    "the collector does not say which cache mounts its open incidents hold (an earlier release): the build's mounts are not checked",
                ),
                None => {}
            }
            (answer.holding.unwrap_or(true), None)
        }
        None => {
            let store = match open_existing_store(db) {
                Ok(store) => store,
                Err(StoreError::Missing { .. }) => return Ok((Vec::new(), None)),
                Err(err) => return Err(err.into()),
            };
            for hit in store.contained_listing(&digests)? {
                found.push(Contained {
                    name: name_of(&hit.digest),
                    ..hit
                });
            }
            for ((builder, id), incidents) in
                mounts.iter().zip(store.incidents_holding_mounts(&mounts)?)
            {
                found.extend(incidents.into_iter().map(|incident| Contained {
                    incident,
                    digest: String::new(),
                    name: format!("cache mount {builder}:{id}"),
                }));
            }
            let holding = !store.containing_incidents()?.is_empty();
            (holding, Some(store))
        }
    };
    if !holding || digests.is_empty() {
        return Ok((found, store));
    }
    // Then what each registry input lists, as its registry says now.
    let listed = match listed_inputs(&inputs, config, (printer, held_here)).await {
        Ok(listed) => listed,
        // The build is refused already.
        Err(why) if !found.is_empty() => {
            printer.warn(why);
            Vec::new()
        }
        Err(why) => return Err(anyhow::anyhow!(why)),
    };
    let children: Vec<String> = listed
        .iter()
        .map(|(_, child)| child.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if children.is_empty() {
        return Ok((found, store));
    }
    let held: Vec<(String, i64)> = match (&collector.server, &store) {
        (Some(server), _) => crate::commands::send::remote_contained(server, collector, &children)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?,
        (None, Some(store)) => store
            .contained_listing(&children)?
            .into_iter()
            .map(|hit| (hit.digest, hit.incident))
            .collect(),
        (None, None) => Vec::new(),
    };
    for (child, incident) in held {
        for (top, _) in listed.iter().filter(|(_, c)| *c == child) {
            if !found
                .iter()
                .any(|h| h.incident == incident && h.digest == *top)
            {
                found.push(Contained {
                    incident,
                    digest: top.clone(),
                    name: format!("{} (it lists {child})", name_of(top)),
                });
            }
        }
    }
    Ok((found, store))
}

/// The manifests each registry input lists, as its registry answers now: `(input digest,
/// listed digest)`, indexes nested in indexes followed as deep as a purge follows them. `Err`
/// says what could not be read: the input cannot be checked, and the caller decides as for a
/// store that cannot be read.
///
/// An input the builder's engine already holds (pinned from its local image) may be in no
/// registry at all: what its registry cannot say of it is warned about, not failed on.
async fn listed_inputs(
    inputs: &[&Artifact],
    config: &Config,
    (printer, held_here): (Printer, &[Artifact]),
) -> Result<Vec<(String, String)>, String> {
    use crate::remote::registry::{ClientOptions, RegistryClient, facts};
    let depth = crate::purge::manifest::NESTED;
    let mut out = Vec::new();
    for input in inputs {
        let (Backend::Registry, Some(digest)) = (input.backend, &input.digest) else {
            continue;
        };
        let Some((registry, repository)) = input.locator.split_once('/') else {
            continue;
        };
        let unread = |err: &dyn std::fmt::Display| {
            format!(
                "what `{}@{digest}` lists cannot be read: {}",
                Term(&input.locator),
                crate::report::escape::Line(&err.to_string())
            )
        };
        let local = held_here.contains(input);
        let client = match RegistryClient::with_options(config, registry, ClientOptions::default())
        {
            Ok(client) => client,
            Err(err) if local && err.is_unreachable() => {
                printer.warn(unread(&err));
                continue;
            }
            Err(err) => return Err(unread(&err)),
        };
        let mut seen = std::collections::HashSet::from([digest.to_string()]);
        let mut level = vec![digest.to_string()];
        for down in 0..=depth {
            let mut next = Vec::new();
            for at in &level {
                let manifest = match client.get_manifest(repository, at).await {
                    Ok(manifest) => manifest,
                    Err(err) if local && err.is_unreachable() => {
                        printer.warn(unread(&err));
                        None
                    }
                    Err(err) => return Err(unread(&err)),
                };
                let Some(manifest) = manifest else { continue };
                let listed = facts(&manifest).map_err(|err| unread(&err))?;
                next.extend(
                    listed
                        .children
                        .iter()
                        .map(ToString::to_string)
                        .filter(|child| seen.insert(child.clone())),
                );
            }
            if next.is_empty() {
                break;
            }
            if down == depth {
                return Err(unread(&format_args!(
                    "indexes are nested more than {depth} deep"
                )));
            }
            out.extend(next.iter().map(|child| (digest.to_string(), child.clone())));
            level = next;
        }
    }
    Ok(out)
}

/// The builder the command builds on, when the builder the hook names (`--builder`,
/// `CACHEWARDEN_BUILDER`) is configured as a Docker Engine it does not build on (another
/// engine, or a buildx instance's container): a name does not move a build, and what is
/// captured and later pruned on the configured engine is none of this build's.
fn builds_elsewhere(
    record: &crate::model::RunRecord,
    env: &dyn Fn(&str) -> Option<String>,
    config: &Config,
    route: Route,
) -> Option<BuilderInfo> {
    let named = record.builder.as_ref()?;
    let configured = config.builder(&named.name)?;
    if !matches!(configured.driver, None | Some(Driver::Docker))
        || !["unix://", "tcp://", "ssh://"]
            .iter()
            .any(|scheme| configured.endpoint.starts_with(scheme))
    {
        return None;
    }
    let mut actual = derived_without(env, &["CACHEWARDEN_BUILDER"]);
    // A buildx instance's BuildKit runs in a container of its own: none of the engine's. Only
    // a build known to go through buildx runs there: a legacy `docker build` (a client before
    // Docker 23, `DOCKER_BUILDKIT=0`) builds on the engine whatever `BUILDX_BUILDER` says, and
    // one that may be either builds on the instance or the engine: on the configured engine
    // only when that is the engine ([`may_also_build_on`] adds the instance to its checks).
    if actual.driver != Some(Driver::Docker) {
        if route == Route::Buildx {
            return Some(actual);
        }
        actual = derived_without(env, &["CACHEWARDEN_BUILDER", "BUILDX_BUILDER"]);
        if actual.driver != Some(Driver::Docker) {
            return None;
        }
    }
    let client = actual.endpoint.as_deref()?;
    if builder_name::same_engine(client, &configured.endpoint) {
        return None;
    }
    // The engine it builds on by the name the config gives it, when the config has it: one
    // engine under one name, whichever way a build names it.
    let known = config.engine_at(client);
    Some(match known {
        Some(b) => BuilderInfo {
            name: b.name.clone(),
            driver: Some(Driver::Docker),
            endpoint: Some(b.endpoint.clone()),
        },
        None => actual,
    })
}

/// The other builders a build that may or may not go through buildx (a plain `docker build`
/// while `BUILDX_BUILDER` is set, on a client that may predate Docker 23) may run on, besides
/// the one it is recorded on: the builder `BUILDX_BUILDER` names and the engine itself, each by
/// every name it has (the config's for an engine it names). Its mounts held there are held for
/// the build too.
fn may_also_build_on(
    record: &crate::model::RunRecord,
    env: &dyn Fn(&str) -> Option<String>,
    config: &Config,
    route: Route,
) -> Vec<String> {
    if route != Route::Either || env("BUILDX_BUILDER").is_none_or(|v| v.trim().is_empty()) {
        return Vec::new();
    }
    let recorded = record.builder.as_ref().map(|b| b.name.as_str());
    let mut names = Vec::new();
    for hidden in [
        &["CACHEWARDEN_BUILDER"][..],
        &["CACHEWARDEN_BUILDER", "BUILDX_BUILDER"],
    ] {
        let builder = derived_without(env, hidden);
        if let Some(endpoint) = &builder.endpoint
            && let Some(configured) = config.engine_at(endpoint)
        {
            names.push(configured.name.clone());
        }
        names.push(builder.name);
    }
    names.retain(|name| Some(name.as_str()) != recorded);
    names.dedup();
    names
}

/// The builder the client's settings (`env`) choose, with the variables `hidden` unset.
fn derived_without(env: &dyn Fn(&str) -> Option<String>, hidden: &[&str]) -> BuilderInfo {
    let var = |name: &str| (!hidden.contains(&name)).then(|| env(name)).flatten();
    builder_name::derive(
        None,
        &var,
        &builder_name::hostname(),
        builder_name::current_context(env).as_deref(),
    )
}

/// How a build reaches BuildKit, as far as the command and the client's settings say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// Through buildx: `docker buildx build`, the `docker buildx install` alias, a `--builder`.
    Buildx,
    /// The legacy `docker build` for certain (`DOCKER_BUILDKIT=0`).
    Legacy,
    /// A plain `docker build`: through buildx on a client from Docker 23 on, else legacy.
    Either,
}

/// The environment the builder is named from ([`builder_name::derive`]): the client's (`env`),
/// with the buildx builder the build runs on as `BUILDX_BUILDER`: its `--builder` (which wins
/// over `CACHEWARDEN_BUILDER`), else, for a buildx build (`docker buildx build`, or a `docker
/// build` that `docker buildx install` made one) that nothing names a builder for, the one
/// `docker buildx use` made current. `--builder=` names none: buildx takes the current one,
/// for a plain `docker build` too (a client that passes `--builder` on runs it through
/// buildx, which reads the empty name so). A name the hook gives (`wrap --builder`,
/// `CACHEWARDEN_BUILDER`) still names the build, but the builder found here is the one
/// [`builds_elsewhere`] compares it with. Also says how the build reaches BuildKit (a legacy
/// `docker build` no buildx builder runs).
fn buildx_env<'a>(
    build: &BuildCommand,
    env: &'a dyn Fn(&str) -> Option<String>,
) -> (impl Fn(&str) -> Option<String> + 'a, Route) {
    let set = |name: &str| env(name).is_some_and(|v| !v.trim().is_empty());
    let explicit = build.builder.clone().filter(|b| !b.is_empty());
    let cleared = build.builder.as_deref() == Some("");
    // `DOCKER_BUILDKIT=0` keeps `docker build` on the legacy builder, alias or not.
    let legacy = env("DOCKER_BUILDKIT").is_some_and(|v| command::parse_bool(&v) == Some(false));
    let buildx = build.buildx
        || (!legacy
            && (cleared
                || builder_name::config_dir(env)
                    .and_then(|dir| std::fs::read_to_string(dir.join("config.json")).ok())
                    .is_some_and(|config| command::aliases_build_to_buildx(&config))));
    let current = if buildx && explicit.is_none() && (cleared || !set("BUILDX_BUILDER")) {
        builder_name::buildx_current(env)
    } else {
        None
    };
    // The command's own choice of builder wins over the one the environment names for the
    // hook; the current builder does not, unless the command asked for it.
    let command_chose = explicit.is_some() || (cleared && current.is_some());
    // Known to run through buildx: a client that takes `--builder` runs the build there.
    let route = if buildx || (!legacy && explicit.is_some()) {
        Route::Buildx
    } else if legacy {
        Route::Legacy
    } else {
        Route::Either
    };
    let chosen = explicit.or(current);
    let env = move |name: &str| match name {
        "BUILDX_BUILDER" if chosen.is_some() || cleared => chosen.clone(),
        "CACHEWARDEN_BUILDER" if command_chose => None,
        _ => env(name),
    };
    (env, route)
}

/// The record of a wrapped build: its flags and what its command says. The times and the
/// outcome are measured, so they are left at their defaults here.
fn merged_args(run: &RunArgs, build: &BuildCommand) -> RecordArgs {
    let mut args = RecordArgs {
        run: run.clone(),
        ..RecordArgs::default()
    };
    args.run.cache_from.extend(build.cache_from.iter().cloned());
    args.run.cache_to.extend(build.cache_to.iter().cloned());
    args.run.image.extend(build.tags.iter().cloned());
    args.run.build_arg.extend(build.build_args.iter().cloned());
    args.run.platform.extend(build.platforms.iter().cloned());
    // The CLI's default `--platform`.
    if args.run.platform.is_empty()
        && let Ok(platform) = std::env::var("DOCKER_DEFAULT_PLATFORM")
        && !platform.trim().is_empty()
    {
        args.run.platform.push(platform);
    }
    if args.run.dockerfile.is_none() {
        args.run.dockerfile = build.dockerfile().filter(|p| p.exists());
    }
    if args.run.target.is_none() {
        args.run.target = build.target.clone();
    }
    if args.run.step.is_none() && args.run.dockerfile.is_none() {
        args.run.step = Some(crate::commands::record::default_step(
            build.file.as_deref(),
            build.target.as_deref(),
            None,
        ));
    }
    args
}

/// The endpoint to snapshot, when the builder is one this machine can reach: configured, or
/// the Docker Engine the client talks to.
/// The builder's BuildKit Control API at `endpoint`.
async fn connect(endpoint: &str, builder: &BuilderInfo) -> Result<BuildkitClient, RemoteError> {
    BuildkitClient::connect(endpoint, builder.driver.unwrap_or(Driver::Docker)).await
}

fn reachable_endpoint(builder: &BuilderInfo, config: &Config) -> Option<String> {
    if let Some(configured) = config.builder(&builder.name) {
        return Some(configured.endpoint.clone());
    }
    match builder.driver {
        Some(Driver::Docker) | None => builder
            .endpoint
            .clone()
            .filter(|e| e.starts_with("unix://") || e.starts_with("tcp://")),
        _ => None,
    }
}

/// The registry refs a build imports by tag, with the digest each was pinned to.
type ImportTags = Vec<(ImageRef, Option<Digest>)>;

/// Pins `--cache-from` and base images to digests just before the build: the local image
/// first (Docker 20.10 reads `--cache-from` from local images before the registry), then the
/// registry. The inputs whose registry says it has nothing under the tag go to `absent`, and
/// those pinned to the builder's own image to `held_here`.
async fn pin_inputs(
    record: &mut crate::model::RunRecord,
    engine: Option<&Engine>,
    config: &Config,
    printer: Printer,
    (import_tags, absent, held_here): (&mut ImportTags, &mut Vec<Artifact>, &mut Vec<Artifact>),
) {
    let builder = record
        .builder
        .as_ref()
        .map(|b| b.name.clone())
        .unwrap_or_default();
    let hosts = registry_hosts(record.imported.iter().chain(&record.base_images));
    // One client for every registry the build reads from.
    let resolver = Resolver::new(config, &hosts);
    let mut local_imports = Vec::new();
    let mut local_bases = Vec::new();
    let mut local_only = Vec::new();
    for (list, locals, is_import) in [
        (&mut record.imported, &mut local_imports, true),
        (&mut record.base_images, &mut local_bases, false),
    ] {
        for artifact in list.iter_mut() {
            if artifact.backend != Backend::Registry || artifact.digest.is_some() {
                continue;
            }
            let Ok(reference) = reference_of(artifact) else {
                continue;
            };
            let shown = short_name(&reference);
            if let Some(engine) = engine
                && let Ok(Some(local)) = engine.image_inspect(&shown).await
            {
                if let Ok(id) = Digest::parse(&local.id, "image id") {
                    locals.push(Artifact {
                        backend: Backend::LocalImage,
                        locator: builder.clone(),
                        digest: Some(id),
                        // The name the builder knows it by: a later build can use it again.
                        key: shown.clone(),
                        tag: reference.tag.clone(),
                    });
                }
                let repo = reference.locator();
                let pinned = local.repo_digests.iter().find_map(|rd| {
                    let (name, digest) = rd.split_once('@')?;
                    let name = ImageRef::parse(name, "RepoDigests").ok()?;
                    (name.locator() == repo).then(|| Digest::parse(digest, "RepoDigests").ok())?
                });
                if let Some(digest) = pinned {
                    artifact.digest = Some(digest);
                    held_here.push(artifact.clone());
                    if is_import {
                        import_tags.push((reference.clone(), artifact.digest.clone()));
                    }
                    continue;
                }
                if !is_import {
                    // A local-only base image: its id is the evidence, the tag names nothing
                    // in a registry.
                    local_only.push(artifact.clone());
                    continue;
                }
            }
            match resolver.resolve(&reference).await {
                Ok(digest) => artifact.digest = Some(digest),
                // Nothing under the tag: the build cannot read it either.
                Err(err) if err.kind == RemoteKind::Status(404) => {
                    absent.push(artifact.clone());
                    printer.warn(format!("`{reference}` stays unpinned: {err}"));
                }
                Err(err) => printer.warn(format!("`{reference}` stays unpinned: {err}")),
            }
            if is_import {
                import_tags.push((reference, artifact.digest.clone()));
            }
        }
    }
    record.base_images.retain(|a| !local_only.contains(a));
    record.imported.extend(local_imports);
    record.base_images.extend(local_bases);
}

/// How the docker client names a reference (`busybox`, `127.0.0.1:5000/app:1`).
fn short_name(reference: &ImageRef) -> String {
    let mut name = if reference.registry == crate::model::DOCKER_HUB {
        reference
            .repository
            .strip_prefix("library/")
            .unwrap_or(&reference.repository)
            .to_owned()
    } else {
        reference.locator()
    };
    if let Some(tag) = &reference.tag {
        name.push(':');
        name.push_str(tag);
    }
    name
}

/// The builder's records before a build. Listing records sizes the cache mounts used since the
/// last listing, and BuildKit counts that as a use: their usage count and last use move (seen
/// on Docker 20.10). The records are listed twice, so that a use by a build nobody listed after
/// is in the baseline, not taken for this build's.
async fn baseline(client: &mut BuildkitClient) -> Result<Vec<CacheRecord>, RemoteError> {
    client.disk_usage().await?;
    client.disk_usage().await
}

/// Which records the build created and which it reused.
fn diff_records(before: &[CacheRecord], after: &[CacheRecord]) -> RecordEvidence {
    let old: HashMap<&str, &CacheRecord> = before.iter().map(|r| (r.id.as_str(), r)).collect();
    let mut evidence = RecordEvidence::default();
    for record in after {
        match old.get(record.id.as_str()) {
            None => evidence.created.push(BuilderRecord::from(record.clone())),
            Some(prev)
                if prev.usage_count != record.usage_count
                    || prev.last_used_at != record.last_used_at =>
            {
                evidence.reused.push(BuilderRecord::from(record.clone()));
            }
            Some(_) => {}
        }
    }
    evidence.created.sort_by(|a, b| a.id.cmp(&b.id));
    evidence.reused.sort_by(|a, b| a.id.cmp(&b.id));
    evidence
}

/// What a finished build left to read.
struct Outputs<'a> {
    iidfile: &'a Path,
    metadata_file: Option<&'a Path>,
    /// The tags a buildx build pushed (`-t` with `--push`); empty when it pushed nothing.
    pushed: &'a [String],
    /// Whether the build exported inline cache, which travels in the images it pushed.
    inline: bool,
}

/// The local image id and, for buildx, the metadata file.
fn collect_outputs(record: &mut crate::model::RunRecord, outputs: &Outputs<'_>, printer: Printer) {
    if let Ok(text) = std::fs::read_to_string(outputs.iidfile)
        && let Ok(id) = Digest::parse(text.trim(), "--iidfile")
    {
        let builder = record
            .builder
            .as_ref()
            .map(|b| b.name.clone())
            .unwrap_or_default();
        let first = record.produced.first().and_then(|a| reference_of(a).ok());
        record.produced.push(Artifact {
            backend: Backend::LocalImage,
            locator: builder,
            digest: Some(id),
            key: first.as_ref().map(short_name).unwrap_or_default(),
            tag: first.and_then(|r| r.tag),
        });
    }
    if let Some(path) = outputs.metadata_file
        && let Ok(text) = std::fs::read_to_string(path)
    {
        match metadata::parse(&text, &path.display().to_string()) {
            Ok(mut meta) => {
                name_pushed_images(&mut meta, outputs.pushed);
                if let Err(err) = apply_metadata(record, &meta) {
                    printer.warn(format!(
                        "metadata file ignored: {}",
                        crate::printer::one_line(&err)
                    ));
                }
            }
            Err(err) => printer.warn(format!("metadata file ignored: {err}")),
        }
    }
    if outputs.inline {
        pin_inline_exports(record);
    }
}

/// A `--cache-to type=registry` export is pushed by the build itself. Unless the metadata file
/// pinned it, it is pinned to what its tag points at right after the build: a push to the same
/// tag by another build in between would be taken for this one's, which the metadata file's
/// `cache.manifest` (the descriptor BuildKit's cache exporter returns) rules out.
async fn resolve_cache_exports(
    record: &mut crate::model::RunRecord,
    args: &RecordArgs,
    config: &Config,
    printer: Printer,
) {
    let refs: Vec<Artifact> = args
        .run
        .cache_to
        .iter()
        .filter_map(|value| match cache_flag::parse(value, "--cache-to") {
            Ok(spec @ CacheSpec::Registry { .. }) => artifact_of_spec(&spec).ok(),
            _ => None,
        })
        .collect();
    let hosts = registry_hosts(
        record
            .exported
            .iter()
            .filter(|a| a.digest.is_none() && refs.contains(a)),
    );
    if hosts.is_empty() {
        return;
    }
    let resolver = Resolver::new(config, &hosts);
    for export in &mut record.exported {
        if export.digest.is_some() || !refs.contains(export) {
            continue;
        }
        let Ok(reference) = reference_of(export) else {
            continue;
        };
        match resolver.resolve(&reference).await {
            Ok(digest) => export.digest = Some(digest),
            Err(err) => printer.warn(format!(
                "`{reference}` is recorded by tag only, so a trace cannot match its importers by digest: {err}"
            )),
        }
    }
}

/// The docker driver (Docker 20.10's BuildKit) writes no `image.name`: the manifest it pushed
/// carries the build's `-t` tags. Without a push, its `containerimage.digest` is a local image
/// id, not a manifest, and names nothing.
fn name_pushed_images(meta: &mut metadata::BuildMetadata, pushed: &[String]) {
    if pushed.is_empty() {
        return;
    }
    for image in &mut meta.images {
        if image.names.is_empty() && image.digest.is_some() && image.platform.is_none() {
            image.names = pushed.to_vec();
        }
    }
}

/// Inline cache is exported inside each image the build pushed: an export recorded by tag
/// takes the digest its image was pinned to.
fn pin_inline_exports(record: &mut crate::model::RunRecord) {
    for export in &mut record.exported {
        if export.backend != Backend::Registry || export.digest.is_some() {
            continue;
        }
        if let Some(image) = record.produced.iter().find(|image| {
            image.backend == Backend::Registry
                && image.digest.is_some()
                && image.locator == export.locator
                && image.tag == export.tag
        }) {
            export.digest = image.digest.clone();
        }
    }
    let mut kept: Vec<Artifact> = Vec::with_capacity(record.exported.len());
    record.exported.retain(|export| {
        let first = !kept.contains(export);
        if first {
            kept.push(export.clone());
        }
        first
    });
}

/// Warns when a `--cache-from` tag points somewhere else after the build than before it.
async fn check_moved(
    import_tags: &[(ImageRef, Option<Digest>)],
    config: &Config,
    printer: Printer,
) {
    let mut hosts: Vec<String> = import_tags
        .iter()
        .map(|(r, _)| r.registry.clone())
        .collect();
    hosts.sort();
    hosts.dedup();
    let resolver = Resolver::new(config, &hosts);
    for (reference, before) in import_tags {
        let Some(before) = before else { continue };
        if let Ok(now) = resolver.resolve(reference).await
            && &now != before
        {
            printer.warn(format!(
                "`{reference}` moved during the build: {before} before, {now} after; recorded {before}"
            ));
        }
    }
}

async fn wrap_push(
    args: &WrapArgs,
    reference: &str,
    db: &Path,
    printer: Printer,
) -> Result<ExitStatus> {
    let (program, rest) = args
        .command
        .split_first()
        .expect("parsed as a docker command");
    let mut child = tokio::process::Command::new(program)
        .args(rest)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|err| SpawnError::new(program, &err))?;
    let mut output = String::new();
    if let Some(stdout) = child.stdout.take() {
        let mut lines = BufReader::new(stdout).lines();
        let mut out = tokio::io::stdout();
        while let Ok(Some(line)) = lines.next_line().await {
            let _ = out.write_all(line.as_bytes()).await;
            let _ = out.write_all(b"\n").await;
            let _ = out.flush().await;
            output.push_str(&line);
            output.push('\n');
        }
    }
    let status = child.wait().await.context("waiting for the push")?;
    let code = child_status(status);
    if !status.success() {
        return Ok(ExitStatus::from_child(code));
    }
    if let Err(err) = attach(args, reference, &output, db, printer) {
        printer.warn(format!(
            "the push was not recorded: {}",
            crate::printer::one_line(&err)
        ));
    }
    Ok(ExitStatus::from_child(code))
}

fn attach(
    args: &WrapArgs,
    reference: &str,
    output: &str,
    db: &Path,
    printer: Printer,
) -> Result<()> {
    let env = |name: &str| std::env::var(name).ok();
    let ci = ci::detect(&env);
    let pipeline = args
        .run
        .pipeline
        .clone()
        .or_else(|| ci.as_ref().and_then(|c| c.pipeline.clone()))
        .ok_or_else(|| {
            InputError::invalid("no pipeline: pass --pipeline, or run inside a supported CI")
        })?;
    let run_id = args
        .run
        .run_id
        .clone()
        .or_else(|| ci.as_ref().and_then(|c| c.run_id.clone()))
        .ok_or_else(|| {
            InputError::invalid("no run id: pass --run, or run inside a supported CI")
        })?;
    let pushed = ImageRef::parse(reference, "docker push")?;
    let digest = command::pushed_digest(output)
        .ok_or_else(|| InputError::invalid("`docker push` printed no digest"))?;
    let digest = Digest::parse(&digest, "docker push output")?;
    let mut store = open_store(db)?;
    match store.attach_push(&pipeline, &run_id, &pushed, &digest)? {
        Some(step) => printer.status(format!(
            "cachewarden: recorded push of `{}@{digest}` for `{}`",
            Term(&pushed.to_string()),
            Term(&crate::model::run_name(&pipeline, &run_id, &step))
        )),
        None => printer.warn(format!(
            "no build of {}/{} produced `{pushed}`: the push of {digest} was not attached",
            Term(&pipeline),
            Term(&run_id),
        )),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The build's `--platform` reaches the record, so the Dockerfile is read for the
    /// platforms that were built.
    #[test]
    fn build_platforms_reach_the_record() {
        let argv: Vec<String> = "docker buildx build --platform linux/arm64 ."
            .split(' ')
            .map(str::to_owned)
            .collect();
        let Wrapped::Build(build) = command::parse(&argv) else {
            panic!("not a build")
        };
        let args = merged_args(&RunArgs::default(), &build);
        assert_eq!(args.run.platform, ["linux/arm64"]);
    }
}
