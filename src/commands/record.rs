//! `cachewarden record`: store one build's provenance.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};

use crate::ExitStatus;
use crate::cli::{OutputFormat, RecordArgs};
use crate::commands::{open_store, write_stdout};
use crate::config::Config;
use crate::error::InputError;
use crate::ingest::dockerfile::Platform;
use crate::ingest::{builder, cache_flag, ci, dockerfile, metadata};
use crate::model::{
    Artifact, Backend, CacheSpec, Digest, ImageRef, MountUse, ParseError, PipelineInfo, RunRecord,
    mount_identity,
};
use crate::printer::Printer;
use crate::remote::registry::Resolver;
use crate::time::{self, Micros};
use crate::wire::provenance::{Line, run_line};

/// Refuses a run holding a NUL character anywhere (read from a metadata file, a Dockerfile or
/// the builder), naming the field: the store keeps no NUL, on either engine.
fn refuse_nul(record: &RunRecord) -> Result<(), InputError> {
    let value = serde_json::to_value(Line::Run(Box::new(run_line(record))))
        .map_err(|err| InputError::invalid(err.to_string()))?;
    match crate::wire::provenance::nul_field(&value) {
        Some(field) => Err(InputError::invalid(crate::wire::provenance::nul_message(
            &field,
        ))),
        None => Ok(()),
    }
}

/// The build argument that turns on inline cache export.
pub const INLINE_CACHE_ARG: &str = "BUILDKIT_INLINE_CACHE";

pub async fn record(
    args: RecordArgs,
    db: &Path,
    config: &Config,
    printer: Printer,
) -> Result<ExitStatus> {
    let env = |name: &str| std::env::var(name).ok();
    let mut warnings = Vec::new();
    let mut record = build_record(&args, config, &env, None, &mut warnings)?;
    for warning in &warnings {
        printer.warn(warning);
    }
    crate::model::limits::check(&record).map_err(|err| InputError::invalid(err.to_string()))?;
    refuse_nul(&record)?;
    if let Some(warning) = trust_warning(&args, config, &env) {
        printer.warn(warning);
    }
    if args.resolve {
        resolve_tags(&mut record, config, printer).await?;
    }
    warn_unpinned(&record, printer);
    if let Some(server) = &args.run.collector.server {
        return send_record(&record, server, &args, printer).await;
    }
    let mut store = open_store(db)?;
    let outcome = store.record_run(&record, config)?;
    for warning in &outcome.warnings {
        printer.warn(warning);
    }
    // What is printed is what the store holds: the level the run was recorded at.
    record.trust_level = outcome.trust_level.clone();
    let name = crate::model::run_name(&record.pipeline.name, &record.run_id, &record.step);
    match args.format {
        OutputFormat::Json => {
            let line = crate::report::json::to_string(&Line::Run(Box::new(run_line(&record))))?;
            write_stdout(&format!("{line}\n"))?;
        }
        OutputFormat::Text => {
            let verb = if outcome.created {
                "recorded"
            } else {
                "already recorded:"
            };
            let level = outcome
                .trust_level
                .as_deref()
                .map(|l| format!(", trust level {l}"))
                .unwrap_or_default();
            printer.status(format!(
                "{verb} run `{}` ({} new events{level})",
                crate::report::escape::Term(&name),
                outcome.events
            ));
        }
    }
    Ok(ExitStatus::Success)
}

/// Sends the run to the collector (spooled when it cannot be reached) and says what became
/// of it.
async fn send_record(
    record: &RunRecord,
    server: &str,
    args: &RecordArgs,
    printer: Printer,
) -> Result<ExitStatus> {
    use crate::commands::send::{Delivered, deliver};
    match deliver(record, None, server, &args.run.collector, printer).await? {
        Delivered::Stored { created, answer } => {
            match args.format {
                OutputFormat::Json => {
                    write_stdout(&format!("{}\n", crate::report::json::to_string(&answer)?))?;
                }
                OutputFormat::Text => {
                    let verb = if created {
                        "recorded"
                    } else {
                        "already recorded:"
                    };
                    printer.status(format!(
                        "{verb} run `{}` at the collector",
                        crate::report::escape::Term(answer["run"].as_str().unwrap_or(""))
                    ));
                }
            }
            for warning in answer["warnings"].as_array().into_iter().flatten() {
                printer.warn(crate::report::escape::Line(warning.as_str().unwrap_or("")));
            }
        }
        Delivered::Spooled => {}
    }
    Ok(ExitStatus::Success)
}

/// Turns flags, files and the CI environment into one run. No network; `wrap` passes the
/// times and status it measured. What had to be over-approximated (a Dockerfile `FROM` that
/// cannot be resolved) is added to `warnings`. For `wrap` (`measured`), whose build runs
/// anyway, a Dockerfile that cannot be read in full is a warning and flags the run truncated;
/// for `record` it is an error.
pub fn build_record(
    args: &RecordArgs,
    config: &Config,
    var: &dyn Fn(&str) -> Option<String>,
    measured: Option<(Micros, Micros)>,
    warnings: &mut Vec<String>,
) -> Result<RunRecord> {
    let ci = ci::detect(var);
    let ci = ci.as_ref();
    if let Some(warning) = ci.and_then(several_systems_warning) {
        warnings.push(warning);
    }
    // With a collector the token names the pipeline and run: what the hook does not know it
    // leaves empty.
    let to_collector = args.run.collector.server.is_some();
    let pipeline = args.run.pipeline.clone().or_else(|| ci.and_then(|c| c.pipeline.clone())).or_else(|| to_collector.then(String::new)).ok_or_else(|| {
        InputError::invalid(
            "no pipeline: pass --pipeline, or run inside GitHub Actions, GitLab CI, Buildkite, Jenkins or CircleCI",
        )
    })?;
    if pipeline.trim().is_empty() && !(to_collector && pipeline.is_empty()) {
        return Err(ParseError::new("--pipeline", &pipeline, "must not be empty").into());
    }
    let run_id = args
        .run
        .run_id
        .clone()
        .or_else(|| ci.and_then(|c| c.run_id.clone()))
        .or_else(|| to_collector.then(String::new))
        .ok_or_else(|| {
            InputError::invalid("no run id: pass --run, or run inside a supported CI")
        })?;
    if (run_id.trim().is_empty() && !(to_collector && run_id.is_empty())) || run_id.contains('/') {
        return Err(
            ParseError::new("--run", &run_id, "must be non-empty and contain no `/`").into(),
        );
    }

    // What `import` refuses as empty is not recorded either: `export` would write it.
    for (flag, value) in [("--builder", &args.run.builder), ("--step", &args.run.step)] {
        if let Some(value) = value
            && value.trim().is_empty()
        {
            return Err(ParseError::new(flag, value, "must not be empty").into());
        }
    }

    if let Some(level) = &args.run.trust_level
        && config.trust_rank(level).is_none()
    {
        return Err(ParseError::new(
            "--trust-level",
            level,
            format!(
                "not one of the configured levels: {}",
                config.trust_levels().join(", ")
            ),
        )
        .into());
    }

    let (started_at, finished_at) = match measured {
        Some(times) => times,
        None => {
            let now = time::now();
            let finished = match &args.finished_at {
                Some(t) => time::parse_flag(t, "--finished-at", time::Bound::Point, now)?,
                None => now,
            };
            let started = match &args.started_at {
                Some(t) => time::parse_flag(t, "--started-at", time::Bound::Point, now)?,
                None => finished,
            };
            if started > finished {
                return Err(InputError::invalid(format!(
                    "--started-at `{}` is after --finished-at `{}`",
                    time::format(started),
                    time::format(finished)
                ))
                .into());
            }
            // A hook records a run once it ran: a time in the future is made up, and would
            // hide the run from every trace until then.
            if config.purge.in_future(finished, now) {
                return Err(InputError::invalid(format!(
                    "--finished-at `{}` is in the future (now {}, clock skew allowed {}s): a run \
                     is recorded once it ran",
                    time::format(finished),
                    time::format(now),
                    config.purge.clock_skew_seconds
                ))
                .into());
            }
            (started, finished)
        }
    };

    let build_args = parse_build_args(&args.run.build_arg)?;
    let namespace = build_args
        .get("BUILDKIT_CACHE_MOUNT_NS")
        .cloned()
        .unwrap_or_default();

    let builder = builder::derive(
        args.run.builder.as_deref(),
        var,
        &builder::hostname(),
        builder::current_context(var).as_deref(),
    );
    // A builder found from the client's settings (no name given) on an engine the config
    // names is recorded under that name: a build named for the engine and one that reaches it
    // by socket or context use one builder's mounts and records, and a trace follows both.
    let named = args.run.builder.is_some()
        || var("CACHEWARDEN_BUILDER").is_some_and(|v| !v.trim().is_empty());
    let engine = match (&builder.driver, &builder.endpoint) {
        (Some(crate::model::Driver::Docker), Some(endpoint)) if !named => {
            config.engine_at(endpoint)
        }
        _ => None,
    };
    let builder = match config.builder(&builder.name).or(engine) {
        Some(configured) => crate::model::BuilderInfo {
            name: configured.name.clone(),
            driver: configured.driver.or(builder.driver),
            endpoint: Some(configured.endpoint.clone()),
        },
        None => crate::model::BuilderInfo {
            driver: args.run.driver.or(builder.driver),
            ..builder
        },
    };
    let build_platform = builder_platform(&builder);
    let platforms = parse_platforms(&args.run.platform, &build_platform)?;

    let mut record = RunRecord {
        pipeline: PipelineInfo {
            name: pipeline,
            project: args
                .run
                .project
                .clone()
                .or_else(|| ci.and_then(|c| c.project.clone())),
            trust_level: None,
        },
        trust_level: run_trust_level(args, config, ci),
        run_id,
        step: String::new(),
        commit: args
            .run
            .commit
            .clone()
            .or_else(|| ci.and_then(|c| c.commit.clone())),
        git_ref: args
            .run
            .git_ref
            .clone()
            .or_else(|| ci.and_then(|c| c.git_ref.clone())),
        builder: Some(builder),
        started_at,
        finished_at,
        status: args.status,
        imported: Vec::new(),
        exported: Vec::new(),
        produced: Vec::new(),
        base_images: Vec::new(),
        mounts: Vec::new(),
        records: None,
        truncated: false,
        build_ref: None,
    };

    for image in &args.run.image {
        let reference = ImageRef::parse(image, "--image")?;
        push_unique(&mut record.produced, Artifact::registry(&reference));
    }
    for base in &args.run.base_image {
        let reference = ImageRef::parse(base, "--base-image")?;
        push_unique(&mut record.base_images, Artifact::registry(&reference));
    }
    let inline = carries_inline_cache(args);
    for value in &args.run.cache_from {
        match cache_flag::parse(value, "--cache-from")? {
            CacheSpec::Inline => {}
            spec => push_unique(&mut record.imported, artifact_of_spec(&spec)?),
        }
    }
    for value in &args.run.cache_to {
        match cache_flag::parse(value, "--cache-to")? {
            CacheSpec::Inline => {}
            spec => push_unique(&mut record.exported, artifact_of_spec(&spec)?),
        }
    }
    for value in &args.run.mounts {
        record.mounts.push(parse_mount_flag(value, &namespace)?);
    }

    if let Some(path) = &args.run.dockerfile {
        let options = dockerfile::BuildOptions {
            build_args: build_args.clone(),
            target: args.run.target.clone(),
            platforms,
            build_platform: Some(build_platform),
        };
        match dockerfile_inputs(path, &options, warnings) {
            Ok((base_images, mounts)) => {
                for base in base_images {
                    push_unique(&mut record.base_images, base);
                }
                for mount in mounts {
                    if !record.mounts.contains(&mount) {
                        record.mounts.push(mount);
                    }
                }
            }
            // A build that ran is recorded with what is known, as one whose Dockerfile is
            // not a file here is; the flag says its inputs may be incomplete.
            Err(err) if measured.is_some() => {
                warnings.push(format!(
                    "the Dockerfile's base images and cache mounts are not recorded, and the run \
                     is flagged truncated: {}",
                    crate::printer::one_line(&err)
                ));
                record.truncated = true;
            }
            Err(err) => return Err(err),
        }
    }

    if let Some(path) = &args.metadata_file {
        let text = std::fs::read_to_string(path).map_err(|source| InputError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let meta = metadata::parse(&text, &path.display().to_string())?;
        apply_metadata(&mut record, &meta)?;
    }

    if inline {
        // Inline cache travels inside every image the build pushes.
        let images: Vec<Artifact> = record
            .produced
            .iter()
            .filter(|a| a.backend == Backend::Registry)
            .cloned()
            .collect();
        for image in images {
            push_unique(&mut record.exported, image);
        }
    }

    record.step = match &args.run.step {
        Some(step) => step.clone(),
        None => default_step(
            args.run.dockerfile.as_deref(),
            args.run.target.as_deref(),
            ci.and_then(|c| c.job.as_deref()),
        ),
    };
    Ok(record)
}

/// The base images and cache mounts the Dockerfile at `path` names for the build `options`
/// describe. BuildKit reads a Dockerfile as bytes: one that is not UTF-8 is read with each
/// invalid byte replaced by U+FFFD, with a warning naming it.
fn dockerfile_inputs(
    path: &Path,
    options: &dockerfile::BuildOptions,
    warnings: &mut Vec<String>,
) -> Result<(Vec<Artifact>, Vec<MountUse>)> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| InputError::Read {
        path: shown.clone(),
        source,
    })?;
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(err) => {
            warnings.push(format!(
                "`{shown}` is not valid UTF-8: it is read with each invalid byte replaced by U+FFFD"
            ));
            String::from_utf8_lossy(err.as_bytes()).into_owned()
        }
    };
    let info = dockerfile::parse_build(&text, &shown, options)?;
    warnings.extend(info.warnings.iter().map(ToString::to_string));
    let mut base_images = Vec::new();
    for base in &info.base_images {
        let reference = ImageRef::parse(base, &format!("FROM in `{shown}`"))?;
        push_unique(&mut base_images, Artifact::registry(&reference));
    }
    Ok((base_images, info.mounts))
}

/// The trust level a run asks for: the lowest configured level when the CI marks the run
/// untrusted (a pull request, an unprotected ref), else `--trust-level`. The store caps it at
/// the pipeline's ceiling.
fn run_trust_level(
    args: &RecordArgs,
    config: &Config,
    ci: Option<&ci::CiContext>,
) -> Option<String> {
    match ci.and_then(|c| c.untrusted.as_ref()) {
        Some(_) => config.trust_levels().into_iter().next(),
        None => args.run.trust_level.clone(),
    }
}

/// A warning when the markers of more than one CI system are set: one CI does not run inside
/// another, so a job may have set the others' variables itself. The fields come from the first
/// system; each one's untrusted markers count.
fn several_systems_warning(ci: &ci::CiContext) -> Option<String> {
    if ci.also_detected.is_empty() {
        return None;
    }
    let others: Vec<String> = ci.also_detected.iter().map(|s| format!("`{s}`")).collect();
    Some(format!(
        "the variables of several CI systems are set (`{}`, {}): pipeline, run and commit are \
         taken from `{}`, and the run is untrusted if any of them marks it so",
        ci.system,
        others.join(", "),
        ci.system
    ))
}

/// A warning when the CI environment lowers the level `--trust-level` asks for.
pub fn trust_warning(
    args: &RecordArgs,
    config: &Config,
    var: &dyn Fn(&str) -> Option<String>,
) -> Option<String> {
    let ci = ci::detect(var)?;
    let reason = ci.untrusted.as_ref()?;
    let lowest = config.trust_levels().into_iter().next()?;
    let asked = args.run.trust_level.as_ref().filter(|l| **l != lowest)?;
    Some(format!(
        "{reason}: the run is untrusted, recorded at trust level `{lowest}`, not `{asked}`"
    ))
}

/// Whether the build exports inline cache: `--build-arg BUILDKIT_INLINE_CACHE=1` (or `true`),
/// or `--cache-to type=inline`. Values that do not parse carry none.
pub fn carries_inline_cache(args: &RecordArgs) -> bool {
    let by_arg = parse_build_args(&args.run.build_arg)
        .ok()
        .and_then(|build_args| build_args.get(INLINE_CACHE_ARG).cloned())
        .is_some_and(|v| v == "1" || v == "true");
    by_arg
        || args.run.cache_to.iter().any(|value| {
            matches!(
                cache_flag::parse(value, "--cache-to"),
                Ok(CacheSpec::Inline)
            )
        })
}

/// `--step` default: the Dockerfile path and target (`docker/Dockerfile:release`), prefixed
/// by the CI job when one is known.
pub fn default_step(dockerfile: Option<&Path>, target: Option<&str>, job: Option<&str>) -> String {
    // Relative to the working directory, so that checkouts in different places agree.
    let cwd = std::env::current_dir().ok();
    let mut step = dockerfile.map_or_else(
        || "Dockerfile".to_owned(),
        |p| {
            cwd.as_deref()
                .and_then(|cwd| p.strip_prefix(cwd).ok())
                .unwrap_or(p)
                .display()
                .to_string()
        },
    );
    if let Some(target) = target {
        step.push(':');
        step.push_str(target);
    }
    // Made from paths and names nobody typed for cachewarden: taken as a name is, trimmed and
    // composed, rather than refused.
    crate::model::limits::normalized_name(&match job {
        Some(job) => format!("{job}:{step}"),
        None => step,
    })
}

/// Merges what a buildx metadata file says into the run. `cache.manifest` pins the registry
/// cache export when the run has exactly one left unpinned: the key holds one descriptor.
pub fn apply_metadata(record: &mut RunRecord, meta: &metadata::BuildMetadata) -> Result<()> {
    if let Some(build_ref) = meta
        .build_ref
        .as_deref()
        .and_then(crate::ingest::history::ref_of_buildx)
    {
        record.build_ref = Some(build_ref);
    }
    for image in &meta.images {
        for name in &image.names {
            let reference = ImageRef::parse(name, "image.name in the metadata file")?;
            let mut artifact = Artifact::registry(&reference);
            if artifact.digest.is_none() {
                artifact.digest = image.digest.clone();
            }
            // The pinned digest replaces the unpinned tag recorded from `-t`/`--image`.
            record.produced.retain(|a| {
                !(a.locator == artifact.locator && a.tag == artifact.tag && a.digest.is_none())
            });
            push_unique(&mut record.produced, artifact);
        }
    }
    for (base, digest) in &meta.base_images {
        let mut reference = ImageRef::parse(base, "a provenance material")?;
        if reference.digest.is_none() {
            reference.digest = digest.clone();
        }
        let artifact = Artifact::registry(&reference);
        record
            .base_images
            .retain(|a| !(a.locator == artifact.locator && a.digest.is_none()));
        push_unique(&mut record.base_images, artifact);
    }
    if let Some(manifest) = &meta.cache_manifest {
        // The one registry cache export the build pushed; an image's inline cache is pinned
        // with the image.
        let produced = &record.produced;
        let mut exports = record.exported.iter_mut().filter(|a| {
            a.backend == Backend::Registry
                && a.digest.is_none()
                && !produced.iter().any(|image| {
                    image.backend == Backend::Registry
                        && image.locator == a.locator
                        && image.tag == a.tag
                })
        });
        if let (Some(only), None) = (exports.next(), exports.next()) {
            only.digest = Some(manifest.digest.clone());
        }
    }
    for mount in &meta.cache_mounts {
        if !record
            .mounts
            .iter()
            .any(|m| m.id == mount.id && m.namespace == mount.namespace)
        {
            record.mounts.push(mount.clone());
        }
    }
    Ok(())
}

fn push_unique(list: &mut Vec<Artifact>, artifact: Artifact) {
    if !list.contains(&artifact) {
        list.push(artifact);
    }
}

/// The artifact a (non-inline) cache spec names.
pub fn artifact_of_spec(spec: &CacheSpec) -> Result<Artifact, ParseError> {
    let other = |backend, key: &str| Artifact {
        backend,
        locator: String::new(),
        digest: None,
        key: key.to_owned(),
        tag: None,
    };
    Ok(match spec {
        CacheSpec::Registry { reference, .. } => {
            Artifact::registry(&ImageRef::parse(reference, "cache ref")?)
        }
        CacheSpec::Gha { scope } => other(Backend::Gha, scope),
        CacheSpec::Local { path } => other(Backend::Local, path),
        CacheSpec::S3 { key } => other(Backend::S3, key),
        CacheSpec::Azblob { key } => other(Backend::Azblob, key),
        CacheSpec::Inline => unreachable!("inline cache names no artifact of its own"),
    })
}

/// `--mount ID[,readonly]`: the Dockerfile id, or the LLB form.
pub fn parse_mount_flag(value: &str, namespace: &str) -> Result<MountUse, ParseError> {
    let mut parts = value.split(',');
    let id = parts.next().unwrap_or_default().trim();
    if id.is_empty() {
        return Err(ParseError::new(
            "--mount",
            value,
            "expected `ID[,readonly]`",
        ));
    }
    let (namespace, id) = mount_identity(namespace, id, false);
    let mut mount = MountUse {
        id,
        namespace,
        ..MountUse::default()
    };
    for option in parts {
        match option.trim() {
            "readonly" | "ro" | "readonly=true" => mount.readonly = true,
            "readonly=false" => mount.readonly = false,
            other => {
                if let Some(sharing) = other.strip_prefix("sharing=") {
                    mount.sharing = crate::model::Sharing::parse(sharing, "--mount")?;
                } else {
                    return Err(ParseError::new(
                        "--mount",
                        value,
                        format!("unknown option `{other}` (expected `readonly` or `sharing=`)"),
                    ));
                }
            }
        }
    }
    Ok(mount)
}

/// The platform a build on `builder` is for when nothing says: BuildKit's own. A builder on
/// this machine (a local socket, a buildx container) builds for this machine's; one elsewhere
/// is taken as `linux/amd64`.
pub fn builder_platform(builder: &crate::model::BuilderInfo) -> Platform {
    let local = match &builder.endpoint {
        Some(endpoint) => endpoint.starts_with("unix://"),
        None => builder.driver == Some(crate::model::Driver::DockerContainer),
    };
    if local {
        Platform::host()
    } else {
        Platform::linux_amd64()
    }
}

/// `--platform` values, each possibly a comma-separated list, as the build reads them on a
/// builder of platform `build` (`local` means it).
pub fn parse_platforms(values: &[String], build: &Platform) -> Result<Vec<Platform>, ParseError> {
    let mut platforms = Vec::new();
    for value in values.iter().flat_map(|v| v.split(',')) {
        let platform = Platform::parse(value, build)
            .map_err(|reason| ParseError::new("--platform", value, reason))?;
        if !platforms.contains(&platform) {
            platforms.push(platform);
        }
    }
    Ok(platforms)
}

/// `KEY=VALUE` build arguments; `KEY` alone takes the value from the environment, as
/// `docker build` does.
pub fn parse_build_args(values: &[String]) -> Result<BTreeMap<String, String>, ParseError> {
    let mut map = BTreeMap::new();
    for value in values {
        match value.split_once('=') {
            Some((key, val)) if !key.is_empty() => {
                map.insert(key.to_owned(), val.to_owned());
            }
            None if !value.is_empty() => {
                if let Ok(val) = std::env::var(value) {
                    map.insert(value.clone(), val);
                }
            }
            _ => {
                return Err(ParseError::new(
                    "--build-arg",
                    value,
                    "expected `KEY=VALUE`",
                ));
            }
        }
    }
    Ok(map)
}

/// Resolves every registry artifact given by tag to the digest its tag points at now.
pub async fn resolve_tags(record: &mut RunRecord, config: &Config, printer: Printer) -> Result<()> {
    let hosts = registry_hosts(
        record
            .imported
            .iter()
            .chain(&record.exported)
            .chain(&record.produced)
            .chain(&record.base_images)
            .filter(|a| a.digest.is_none()),
    );
    if hosts.is_empty() {
        return Ok(());
    }
    let resolver = Resolver::new(config, &hosts);
    for list in [
        &mut record.imported,
        &mut record.exported,
        &mut record.produced,
        &mut record.base_images,
    ] {
        for artifact in list.iter_mut() {
            if artifact.backend != Backend::Registry || artifact.digest.is_some() {
                continue;
            }
            let reference = reference_of(artifact)?;
            let digest: Digest = resolver
                .resolve(&reference)
                .await
                .with_context(|| format!("--resolve could not pin `{reference}`"))?;
            printer.detail(format!("resolved {reference} to {digest}"));
            artifact.digest = Some(digest);
        }
    }
    Ok(())
}

/// The registry hosts of the registry artifacts among these, each once.
pub fn registry_hosts<'a>(artifacts: impl Iterator<Item = &'a Artifact>) -> Vec<String> {
    let mut hosts: Vec<String> = artifacts
        .filter(|a| a.backend == Backend::Registry)
        .filter_map(|a| a.locator.split('/').next().map(str::to_owned))
        .collect();
    hosts.sort();
    hosts.dedup();
    hosts
}

/// The registry reference of a registry artifact.
pub fn reference_of(artifact: &Artifact) -> Result<ImageRef, ParseError> {
    let mut text = artifact.locator.clone();
    if let Some(tag) = &artifact.tag {
        text.push(':');
        text.push_str(tag);
    }
    if let Some(digest) = &artifact.digest {
        text.push('@');
        text.push_str(digest.as_str());
    }
    ImageRef::parse(&text, "reference")
}

/// Cache imports known only by tag cannot be traced by digest: say so.
fn warn_unpinned(record: &RunRecord, printer: Printer) {
    for a in record.imported.iter().chain(&record.base_images) {
        if a.backend == Backend::Registry && a.digest.is_none() {
            printer.warn(format!(
                "`{}` is recorded by tag only; pass --resolve (or a digest) so a trace can match it exactly",
                a.display_name()
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::RunStatus;

    /// A step made from a Dockerfile's path is taken as a name is: a checkout whose directory
    /// is named in decomposed form (as some file systems give it) is recorded, composed.
    #[test]
    fn a_default_step_is_composed() {
        let step = default_step(Some(Path::new("cafe\u{301}/Dockerfile ")), None, None);
        assert_eq!(step, "caf\u{e9}/Dockerfile");
        assert!(crate::model::limits::shown_as_itself("step", &step).is_ok());
    }

    fn registry(reference: &str) -> Artifact {
        Artifact::registry(&ImageRef::parse(reference, "test").unwrap())
    }

    fn run(exported: &[&str], produced: &[&str]) -> RunRecord {
        RunRecord {
            pipeline: PipelineInfo {
                name: "p".to_owned(),
                ..PipelineInfo::default()
            },
            trust_level: None,
            run_id: "1".to_owned(),
            step: "s".to_owned(),
            commit: None,
            git_ref: None,
            builder: None,
            started_at: 0,
            finished_at: 0,
            status: RunStatus::Succeeded,
            imported: Vec::new(),
            exported: exported.iter().map(|r| registry(r)).collect(),
            produced: produced.iter().map(|r| registry(r)).collect(),
            base_images: Vec::new(),
            mounts: Vec::new(),
            records: None,
            truncated: false,
            build_ref: None,
        }
    }

    fn metadata(cache_manifest: &str) -> metadata::BuildMetadata {
        let text = serde_json::json!({
            "cache.manifest": serde_json::json!({
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "digest": cache_manifest,
                "size": 1,
            })
            .to_string(),
        });
        metadata::parse(&text.to_string(), "metadata.json").unwrap()
    }

    const CACHE: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

    /// `cache.manifest` pins the one registry cache export, not an image's inline cache.
    #[test]
    fn the_cache_manifest_pins_the_one_registry_cache_export() {
        let mut record = run(&["reg/app:cache", "reg/app:1"], &["reg/app:1"]);
        apply_metadata(&mut record, &metadata(CACHE)).unwrap();
        assert_eq!(
            record.exported,
            vec![
                registry(&format!("reg/app:cache@{CACHE}")),
                registry("reg/app:1")
            ]
        );
    }

    /// With two registry cache exports, the one descriptor names neither for sure.
    #[test]
    fn the_cache_manifest_pins_nothing_among_two_exports() {
        let mut record = run(&["reg/app:cache", "reg/other:cache"], &[]);
        let before = record.exported.clone();
        apply_metadata(&mut record, &metadata(CACHE)).unwrap();
        assert_eq!(record.exported, before);
    }
}
