//! `cachewarden audit mounts`: copy each cache mount out of its builder, hash it here, diff it
//! against the previous snapshot, attribute the changes to the runs that wrote the mount, and
//! report what does not match its own checksums, new startup hooks and lower-trust changes.

use crate::report::escape::Term;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;

use crate::ExitStatus;
use crate::audit::Finding;
use crate::audit::finding::Code;
use crate::audit::mounts::render::{Changes, MountResult, MountsResult, UnknownRecord};
use crate::audit::mounts::{self, FileEntry, MountAudit, Previous, Scan};
use crate::cli::{AuditFormat, AuditMountsArgs};
use crate::commands::{open_existing_store, write_stdout};
use crate::config::Config;
use crate::error::{InputError, RemoteError};
use crate::model::{Driver, MountUse, normalize_mount_id};
use crate::printer::Printer;
use crate::purge::mount::{MountMatch, MountProbe, mount_record_matches};
use crate::purge::remotes::Remotes;
use crate::remote::endpoint::{builder_endpoint, connect_builder};
use crate::remote::mount_copy::{self, HelperBuild};
use crate::store::{MountRead, NewSnapshot, SnapshotSource, UsedBase};
use crate::time::{self, Micros};

/// One mount to copy out.
struct Job {
    builder: String,
    mount_id: String,
    unknown: bool,
    uses: Option<MountUse>,
    /// Helper base images, best first.
    bases: Vec<String>,
}

/// One mount as snapshotted.
struct Taken {
    job_index: usize,
    taken_at: Micros,
    scan: Scan,
    /// The snapshot compared with: the id holding its file rows, when, and the files.
    previous: Option<(i64, Micros, Arc<Vec<FileEntry>>)>,
}

pub async fn mounts(
    args: &AuditMountsArgs,
    db: &Path,
    config: &Config,
    printer: Printer,
) -> Result<ExitStatus> {
    let mut store = open_existing_store(db)?;
    let started_at = time::now();
    let clock = Instant::now();
    let mut recorded = store.recorded_mounts(args.builder.as_deref())?;
    // A helper build reads a mount by its Dockerfile id, which the frontend puts in the
    // default namespace: a mount under a namespace of its own cannot be read that way.
    let not_audited: BTreeSet<(String, String)> = store
        .namespaced_mounts(args.builder.as_deref())?
        .into_iter()
        .filter(|(_, mount)| {
            args.mount
                .as_ref()
                .is_none_or(|id| mount.ends_with(&format!("/{id}")))
        })
        .collect();
    if let Some(id) = &args.mount {
        recorded.retain(|(_, m)| m == id);
        if recorded.is_empty() {
            match &args.builder {
                Some(b) => recorded.push((b.clone(), id.clone())),
                None => {
                    return Err(InputError::invalid(format!(
                        "no recorded mount `{id}`: pass --builder to audit it on one builder"
                    ))
                    .into());
                }
            }
        }
    }
    let mut builders: BTreeSet<String> = recorded.iter().map(|(b, _)| b.clone()).collect();
    builders.extend(args.builder.clone());
    if builders.is_empty() {
        return Err(InputError::invalid(
            "no cache mount recorded to audit: record builds with `wrap` first, or pass --builder and --mount",
        )
        .into());
    }
    let mounts_set: BTreeSet<(String, String)> = recorded.iter().cloned().collect();
    let ctx = store.plan_context(&builders, &mounts_set)?;
    for b in &builders {
        let place = ctx.builders.get(b).cloned().unwrap_or_default();
        if builder_endpoint(config, b, place.endpoint.as_deref(), place.driver).is_none() {
            return Err(InputError::invalid(format!(
                "no endpoint known for builder `{b}`: add it to the config",
                b = Term(b)
            ))
            .into());
        }
    }
    let tainted = store.all_incident_digests()?;
    let mut result = MountsResult {
        started_at,
        baseline: args.baseline,
        not_audited,
        ..MountsResult::default()
    };
    let mut jobs: Vec<Job> = Vec::new();
    let mut errors = 0;
    let remotes = Remotes::new(config, Default::default());
    for builder in &builders {
        let place = ctx.builders.get(builder).cloned().unwrap_or_default();
        let mine: Vec<&String> = recorded
            .iter()
            .filter(|(b, _)| b == builder)
            .map(|(_, m)| m)
            .collect();
        // The builder's own records name mounts no recorded run used.
        let mut extra: Vec<String> = Vec::new();
        if args.mount.is_none() {
            // Whether this builder's records end with their mount's id: only then may an id
            // in a description decide which mount a record is.
            let describes_ids = match remotes
                .describes_mount_ids(builder, place.endpoint.as_deref(), place.driver)
                .await
            {
                Ok(describes) => describes,
                Err(err) => {
                    errors += 1;
                    printer.error(&anyhow::anyhow!(
                        "cannot tell how `{builder}` describes its records: {err}",
                        builder = Term(builder)
                    ));
                    continue;
                }
            };
            match connect_builder(config, builder, place.endpoint.as_deref(), place.driver).await {
                Ok(mut client) => match client.disk_usage().await {
                    Ok(records) => {
                        for r in records
                            .iter()
                            .filter(|r| r.record_type == "exec.cachemount")
                        {
                            let known = mine.iter().any(|m| {
                                let targets = ctx
                                    .mount_targets
                                    .get(&(builder.clone(), (*m).clone()))
                                    .cloned()
                                    .unwrap_or_default();
                                mount_record_matches(&r.description, m, &targets, describes_ids)
                                    != MountMatch::No
                            });
                            if known || mount_copy::is_helper_record(&r.description) {
                                continue;
                            }
                            // The Dockerfile frontend keys a mount of the default namespace
                            // `/<id>`: an id without the `/` is under a namespace of its own.
                            if let Some(llb) = namespaced_description_id(&r.description) {
                                result.not_audited.insert((builder.clone(), llb));
                                continue;
                            }
                            match description_id(&r.description) {
                                Some(id) if !extra.contains(&id) => extra.push(id),
                                Some(_) => {}
                                None => result.unknown_records.push(UnknownRecord {
                                    builder: builder.clone(),
                                    record: r.id.clone(),
                                    description: r.description.clone(),
                                }),
                            }
                        }
                    }
                    Err(err) => {
                        errors += 1;
                        printer.error(&anyhow::anyhow!(
                            "cannot list the records of `{builder}`: {err}",
                            builder = Term(builder)
                        ));
                    }
                },
                Err(err) => {
                    errors += 1;
                    printer.error(&anyhow::anyhow!(
                        "cannot reach builder `{builder}`: {err}",
                        builder = Term(builder)
                    ));
                }
            }
        }
        let fallback = store.builder_bases(builder)?;
        for (mount_id, unknown) in mine
            .iter()
            .map(|m| ((*m).clone(), false))
            .chain(extra.into_iter().map(|m| (m, true)))
        {
            let reads = store.mount_reads(builder, &mount_id)?;
            let (uses, bases) = helper_bases(
                &mount_id,
                reads,
                &fallback,
                &tainted,
                config.audit.helper_image.as_deref(),
            );
            if bases.is_empty() {
                return Err(InputError::invalid(format!(
                    "no base image for the helper build of mount `{mount_id}` on `{builder}`: no untainted base image is recorded on that builder; set `[audit] helper_image` in the config", builder = Term(builder), mount_id = Term(&mount_id)))
                .into());
            }
            jobs.push(Job {
                builder: builder.clone(),
                mount_id,
                unknown,
                uses,
                bases,
            });
        }
    }
    // Copy out and hash, one mount at a time: each copy can be as big as the mount.
    let docker = crate::purge::evidence::docker_client();
    let mut taken: Vec<Taken> = Vec::new();
    for (index, job) in jobs.iter().enumerate() {
        let place = ctx.builders.get(&job.builder).cloned().unwrap_or_default();
        let mut mount = MountResult {
            builder: job.builder.clone(),
            mount_id: job.mount_id.clone(),
            unknown: job.unknown,
            ..MountResult::default()
        };
        let previous = match store.latest_mount_snapshot(&job.builder, &job.mount_id)? {
            Some((id, at)) => Some((id, at, Arc::new(store.mount_snapshot_files(id)?))),
            None => None,
        };
        let known = previous
            .as_ref()
            .map_or_else(Arc::default, |(_, _, files)| Arc::clone(files));
        match snapshot(
            config,
            &docker,
            job,
            known,
            place.endpoint.as_deref(),
            place.driver,
            printer,
        )
        .await
        {
            Ok((taken_at, scan)) => {
                mount.files = scan.files.len();
                mount.bytes = scan.bytes();
                mount.unchecked = scan.unchecked.len();
                for (path, why) in &scan.unchecked {
                    printer.warn(format!(
                        "mount `{}` on `{}`: `{}` not checked: {why}",
                        &job.mount_id,
                        &job.builder,
                        &String::from_utf8_lossy(path)
                    ));
                }
                taken.push(Taken {
                    job_index: index,
                    taken_at,
                    scan,
                    previous,
                });
            }
            Err(err) => {
                errors += 1;
                let message = format!(
                    "cannot snapshot mount `{}` on `{}`, nothing is reported for it: {err}",
                    job.mount_id, job.builder
                );
                printer.error(&anyhow::anyhow!(message.clone()));
                mount.error = Some(message);
            }
        }
        result.mounts.push(mount);
    }
    // Compare, attribute, store.
    let mut findings: Vec<Finding> = Vec::new();
    // Each mount is compared with the snapshot that was the latest when it was copied out: the
    // one whose unchanged npm blobs the walk did not read again.
    let mut previous_files: Vec<Option<(Micros, Arc<Vec<FileEntry>>)>> = Vec::new();
    let mut same_as: Vec<Option<i64>> = Vec::new();
    let mut writers = Vec::new();
    for t in &taken {
        let job = &jobs[t.job_index];
        let previous = match &t.previous {
            Some((id, at, files)) => {
                same_as.push((**files == t.scan.files).then_some(*id));
                Some((*at, Arc::clone(files)))
            }
            None => {
                same_as.push(None);
                None
            }
        };
        writers.push(store.mount_writers(
            &job.builder,
            &job.mount_id,
            previous.as_ref().map(|(at, _)| *at),
            t.taken_at,
        )?);
        previous_files.push(previous);
    }
    let rank = |level: &str| config.trust_rank(level);
    for ((t, previous), (before, between)) in taken.iter().zip(&previous_files).zip(&writers) {
        let job = &jobs[t.job_index];
        let audit = MountAudit {
            builder: &job.builder,
            mount_id: &job.mount_id,
            now: started_at,
            scan: &t.scan,
            previous: previous.as_ref().map(|(at, files)| Previous {
                taken_at: *at,
                files: files.as_slice(),
            }),
            writers_between: between,
            writers_before: before,
            baseline: args.baseline,
        };
        let (diff, found) = mounts::findings(&audit, &rank);
        if let Some(m) = result
            .mounts
            .iter_mut()
            .find(|m| m.builder == job.builder && m.mount_id == job.mount_id)
        {
            m.previous = previous.as_ref().map(|(at, _)| *at);
            if previous.is_some() {
                m.added = diff.added.len();
                m.changed = diff.changed.len();
                m.removed = diff.removed.len();
                m.changes = Some(Changes::of(&diff, between));
            }
        }
        findings.extend(found);
    }
    let source = if args.baseline {
        SnapshotSource::Baseline
    } else {
        SnapshotSource::Audit
    };
    let snapshots: Vec<NewSnapshot<'_>> = taken
        .iter()
        .zip(&same_as)
        .map(|(t, same_as)| NewSnapshot {
            builder: &jobs[t.job_index].builder,
            mount_id: &jobs[t.job_index].mount_id,
            source,
            taken_at: t.taken_at,
            files: &t.scan.files,
            same_as: *same_as,
        })
        .collect();
    let (reported, snapshot_ids) = store.save_mount_audit(&snapshots, &findings, time::now())?;
    let new_ids: Vec<i64> = reported.iter().filter(|r| r.new).map(|r| r.id).collect();
    result.seen_before = if args.all {
        0
    } else {
        reported.iter().filter(|r| !r.new).count()
    };
    result.findings = reported.into_iter().filter(|r| args.all || r.new).collect();
    result.findings.sort_by_cached_key(|r| {
        (
            r.finding.code,
            r.finding.reference(),
            r.finding.fingerprint(),
        )
    });
    result.duration_seconds = clock.elapsed().as_secs_f64();
    let text = match args.format {
        AuditFormat::Text => mounts::render::text(&result),
        AuditFormat::Json => format!(
            "{}\n",
            crate::report::json::to_string_pretty(&mounts::render::json(&result))?
        ),
        AuditFormat::Sarif => format!(
            "{}\n",
            crate::report::json::to_string_pretty(&crate::audit::sarif::document_of(
                &Code::MOUNTS,
                &result.findings,
                result.started_at,
                &result.errors(),
            ))?
        ),
    };
    if let Err(err) = write_stdout(&text) {
        // Not reported, so not seen: the next audit reports them.
        let _ = store.forget_new_findings(&new_ids, None, &snapshot_ids);
        return Err(err.into());
    }
    printer.status(mounts::render::summary_line(&result));
    Ok(if errors > 0 {
        ExitStatus::Remote
    } else if !result.findings.is_empty()
        || !result.unknown_records.is_empty()
        || !result.not_audited.is_empty()
    {
        ExitStatus::Findings
    } else {
        ExitStatus::Success
    })
}

/// Prunes the layer records helper builds left on a builder: each holds an archive of a mount
/// (the nonce keeps every one apart, so nothing reuses them). Cache-mount records are never
/// touched here.
async fn prune_helper_records(
    config: &Config,
    builder: &str,
    endpoint: &str,
    driver: Driver,
) -> Result<usize, RemoteError> {
    let mut client = connect_builder(config, builder, Some(endpoint), Some(driver)).await?;
    let records = client.disk_usage().await?;
    let ids: Vec<String> = records
        .iter()
        .filter(|r| {
            r.record_type == "regular"
                && !r.in_use
                && r.description.contains(mount_copy::HELPER_ARCHIVE)
        })
        .map(|r| r.id.clone())
        .collect();
    client.prune_ids(&ids).await?;
    Ok(ids.len())
}

/// Where a mount's helper build may run, best first: the configured helper image (the
/// operator vouches for it; a recorded base image is named by the pipelines audited, and its
/// `tar` could hide what the mount holds), then base images of the builds that used the mount
/// (local images first), then of any recorded build on the builder; never a recorded one an
/// incident holds tainted. Also how the mount was used (its uid, gid, mode and `from` pick the
/// record BuildKit attaches).
fn helper_bases(
    mount_id: &str,
    mut reads: Vec<MountRead>,
    builder_bases: &[UsedBase],
    tainted: &BTreeSet<String>,
    helper_image: Option<&str>,
) -> (Option<MountUse>, Vec<String>) {
    reads.push(MountRead {
        uses: Vec::new(),
        bases: builder_bases.to_vec(),
    });
    let probe = MountProbe::from_reads(mount_id, &reads, tainted);
    let bases: Vec<String> = helper_image
        .map(str::to_owned)
        .into_iter()
        .chain(probe.base_images.into_iter().map(|(n, _)| n))
        .collect();
    (probe.uses.first().cloned(), bases)
}

/// The LLB id a record's description names when it is under a namespace of its own: one the
/// Dockerfile frontend did not key `/<id>` (the default namespace).
fn namespaced_description_id(description: &str) -> Option<String> {
    let id = described(description)?;
    (!id.is_empty() && !id.starts_with('/')).then_some(id)
}

/// The mount id a record's description names (` with id "<id>"`, BuildKit v0.12 and later).
fn description_id(description: &str) -> Option<String> {
    let id = described(description)?;
    (!id.is_empty()).then(|| normalize_mount_id(&id, "", true))
}

/// The LLB id a record's description ends with, unquoted as BuildKit quoted it.
fn described(description: &str) -> Option<String> {
    crate::purge::mount::described_id(description)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
}

/// Copies one mount out (trying each base until one builds) and walks the copy; `known` are
/// the files of the previous snapshot ([`mount_copy::scan`]).
async fn snapshot(
    config: &Config,
    docker: &str,
    job: &Job,
    known: Arc<Vec<FileEntry>>,
    endpoint: Option<&str>,
    driver: Option<Driver>,
    printer: Printer,
) -> Result<(Micros, Scan), RemoteError> {
    let (endpoint, driver) =
        crate::remote::endpoint::require_endpoint(config, &job.builder, endpoint, driver)?;
    if driver != Driver::Docker {
        return Err(RemoteError::local(format!(
            "copying a mount out needs a Docker-driver builder; `{}` is {}",
            job.builder,
            driver.as_str()
        )));
    }
    let mut last = None;
    for base in &job.bases {
        let taken_at = time::now();
        let helper = HelperBuild {
            docker,
            endpoint: &endpoint,
            base,
            mount_id: &job.mount_id,
            uses: job.uses.as_ref(),
        };
        let clock = Instant::now();
        match mount_copy::copy_out(&helper).await {
            Ok(dir) => {
                printer.detail(format!(
                    "mount `{}` on `{}`: copied out in {:.1}s",
                    &job.mount_id,
                    &job.builder,
                    clock.elapsed().as_secs_f64()
                ));
                let clock = Instant::now();
                // The helper's layers hold a copy of the mount: they go, not the mount.
                if let Err(err) =
                    prune_helper_records(config, &job.builder, &endpoint, driver).await
                {
                    printer.warn(format!(
                        "builder `{}`: the helper build's records were left in place: {err}",
                        &job.builder
                    ));
                }
                let archive = dir.path().join("mount.tar");
                let known = Arc::clone(&known);
                let scan = tokio::task::spawn_blocking(move || {
                    let scan = mount_copy::scan(&archive, &known);
                    drop(dir);
                    scan
                })
                .await
                .map_err(|e| RemoteError::local(format!("the walk of the copy failed: {e}")))?
                .map_err(|e| RemoteError::local(format!("cannot read the copy: {e}")))?;
                printer.detail(format!(
                    "mount `{}` on `{}`: {} hashed in {:.1}s",
                    &job.mount_id,
                    &job.builder,
                    crate::report::count(scan.files.len(), "file", "files"),
                    clock.elapsed().as_secs_f64()
                ));
                return Ok((taken_at, scan));
            }
            Err(err) => last = Some(err),
        }
    }
    Err(last.unwrap_or_else(|| RemoteError::local("no helper base image")))
}

/// What `incident open --from-audit` seeds from a stored mount finding: the mount
/// (`BUILDER:ID`), and the runs that wrote the finding's files (for CW013, the lower-trust run).
pub(crate) fn incident_seeds(finding: &crate::store::StoredFinding) -> (String, Vec<String>) {
    let mount = format!("{}:{}", finding.registry, finding.repository);
    let runs: Vec<String> = match finding.detail.get("run") {
        Some(run) if !run.starts_with("unrecorded@") => vec![run.clone()],
        Some(_) => Vec::new(),
        None => finding
            .detail
            .get("writer_runs")
            .map(|r| {
                r.lines()
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
    };
    (mount, runs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(backend: &str, locator: &str, digest: &str, key: &str) -> UsedBase {
        UsedBase {
            backend: backend.into(),
            locator: locator.into(),
            digest: digest.into(),
            key: key.into(),
        }
    }

    /// A pipeline cannot pick the image the helper runs in over the operator's: `[audit]
    /// helper_image` comes first, then the mount's own builds' bases, then the builder's, never
    /// a tainted one; with none of them there is no base at all.
    #[test]
    fn helper_bases_skip_tainted_images_and_fall_back_in_order() {
        let reads = vec![MountRead {
            uses: vec![MountUse {
                id: "pip".into(),
                uid: Some(1000),
                ..MountUse::default()
            }],
            bases: vec![
                base("registry", "r/evil", "sha256:bad", ""),
                base("registry", "r/python", "sha256:good", ""),
            ],
        }];
        let builder = vec![base("registry", "r/other", "sha256:other", "")];
        let tainted: BTreeSet<String> = ["sha256:bad".to_owned()].into();
        let (uses, bases) = helper_bases("pip", reads, &builder, &tainted, Some("busybox:1"));
        assert_eq!(uses.unwrap().uid, Some(1000));
        assert_eq!(
            bases,
            vec!["busybox:1", "r/python@sha256:good", "r/other@sha256:other"]
        );
        let (_, bases) = helper_bases("pip", Vec::new(), &builder, &tainted, None);
        assert_eq!(bases, vec!["r/other@sha256:other"]);
        let (_, bases) = helper_bases("pip", Vec::new(), &[], &tainted, Some("busybox:1"));
        assert_eq!(bases, vec!["busybox:1"]);
        let only_tainted = vec![base("registry", "r/evil", "sha256:bad", "")];
        let (_, bases) = helper_bases("pip", Vec::new(), &only_tainted, &tainted, None);
        assert!(bases.is_empty());
    }

    /// Newer engines name the mount id in the record's description; Docker 20.10 does not.
    #[test]
    fn description_ids_are_read() {
        assert_eq!(
            description_id("cached mount /c from exec sh with id \"/bench\"").as_deref(),
            Some("bench")
        );
        assert_eq!(description_id("cached mount /c from exec sh"), None);
        let namespaced = "cached mount /c from exec sh with id \"team-a/pip\"";
        assert_eq!(
            namespaced_description_id(namespaced).as_deref(),
            Some("team-a/pip")
        );
        assert_eq!(
            namespaced_description_id("cached mount /c from exec sh with id \"/bench\""),
            None
        );
    }
}
