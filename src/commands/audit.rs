//! `cachewarden audit registry`: list the tags of the configured cache repositories, classify
//! each manifest, compare with the store, store what was seen, report what is new.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use tokio::sync::Semaphore;

use crate::ExitStatus;
use crate::audit::{self, AuditResult, CompareOptions, Observed, RegistryResult, RepositoryResult};
use crate::cli::{AuditCommand, AuditFormat, AuditRegistryArgs};
use crate::commands::{open_existing_store, write_stdout};
use crate::config::Config;
use crate::error::{InputError, RemoteError};
use crate::model::Digest;
use crate::plan::{Action, ActionKind, Target};
use crate::printer::Printer;
use crate::remote::registry::{
    BUILDKIT_CACHE_CONFIG, ManifestKind, ParsedManifest, RegistryClient, classify, parse_manifest,
};
use crate::store::{Store, TagSighting};
use crate::time;

pub async fn audit(
    command: AuditCommand,
    db: &Path,
    config: &Config,
    printer: Printer,
) -> Result<ExitStatus> {
    match command {
        AuditCommand::Registry(args) => registry(&args, db, config, printer).await,
        AuditCommand::Mounts(args) => super::audit_mounts::mounts(&args, db, config, printer).await,
        AuditCommand::Builds(args) => super::audit_builds::builds(&args, db, config, printer),
    }
}

/// What earlier audits saw in one repository: each tag's digest, each digest's kind.
struct Known {
    tags: HashMap<String, String>,
    kinds: HashMap<String, String>,
}

/// One repository as the registry showed it.
struct Scanned {
    repository: String,
    observed: Vec<Observed>,
}

async fn registry(
    args: &AuditRegistryArgs,
    db: &Path,
    config: &Config,
    printer: Printer,
) -> Result<ExitStatus> {
    let grace = crate::sweep::policy::parse_age(&args.grace)
        .map_err(|e| InputError::invalid(format!("--grace {e}")))?;
    let hosts: Vec<String> = if args.registry.is_empty() {
        config.registries.iter().map(|r| r.host.clone()).collect()
    } else {
        args.registry.clone()
    };
    if hosts.is_empty() {
        return Err(InputError::invalid(
            "no registry to audit: add a `[[registry]]` to the config or pass --registry",
        )
        .into());
    }
    let mut store = open_existing_store(db)?;
    let started_at = time::now();
    let clock = Instant::now();
    let mut result = AuditResult {
        started_at,
        ..AuditResult::default()
    };
    let mut findings = Vec::new();
    let mut scans: Vec<(String, Vec<Scanned>)> = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    for host in &hosts {
        let repositories = repositories(args, config, &store, host)?;
        if repositories.is_empty() {
            printer.warn(format!(
                "registry `{host}`: no repositories to audit (list them in its `repositories` or pass --repository)"
            ));
        }
        let known = repositories
            .iter()
            .map(|repo| {
                Ok(Known {
                    tags: store.audit_current_tags(host, repo)?,
                    kinds: store.audit_kinds(host, repo)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        match scan(config, host, &repositories, known, args.concurrency).await {
            Ok(scanned) => {
                let mut registry = RegistryResult {
                    host: host.clone(),
                    ..RegistryResult::default()
                };
                for s in &scanned {
                    let mut facts = store.audit_facts(host, &s.repository)?;
                    let shown: Vec<String> = s.observed.iter().map(|o| o.digest.clone()).collect();
                    for hit in store.contained(&shown)? {
                        facts
                            .tainted
                            .entry(hit.digest)
                            .or_default()
                            .push(hit.incident);
                    }
                    let options = CompareOptions {
                        now: started_at,
                        grace,
                    };
                    findings.extend(audit::compare(&facts, &s.observed, options, &|l| {
                        config.trust_rank(l)
                    }));
                    registry.repositories.push(RepositoryResult {
                        name: s.repository.clone(),
                        tags: s.observed.len(),
                        caches: s
                            .observed
                            .iter()
                            .filter(|o| audit::is_cache(o.kind))
                            .count(),
                    });
                }
                result.registries.push(registry);
                scans.push((host.clone(), scanned));
            }
            Err(err) => {
                let message =
                    format!("cannot audit registry `{host}`, nothing is reported for it: {err}");
                printer.error(&anyhow::anyhow!(message.clone()));
                errors.push(message.clone());
                result.registries.push(RegistryResult {
                    host: host.clone(),
                    repositories: Vec::new(),
                    error: Some(message),
                });
            }
        }
    }
    let sightings: Vec<(&str, Vec<TagSighting<'_>>)> = scans
        .iter()
        .map(|(host, scanned)| {
            let seen = scanned
                .iter()
                .flat_map(|s| {
                    s.observed.iter().map(|o| TagSighting {
                        repository: &s.repository,
                        tag: &o.tag,
                        digest: &o.digest,
                        kind: audit::kind_str(o.kind),
                    })
                })
                .collect();
            (host.as_str(), seen)
        })
        .collect();
    let seen_at = time::now();
    let reported = store.save_audit(started_at, seen_at, &sightings, &findings, &errors)?;
    let new_ids: Vec<i64> = reported.iter().filter(|r| r.new).map(|r| r.id).collect();
    result.seen_before = reported.iter().filter(|r| !r.new).count();
    if args.all {
        result.seen_before = 0;
    }
    result.findings = reported.into_iter().filter(|r| args.all || r.new).collect();
    result.findings.sort_by_cached_key(|r| {
        (
            r.finding.code,
            r.finding.reference(),
            r.finding.fingerprint(),
        )
    });
    result.duration_seconds = clock.elapsed().as_secs_f64();
    if let Err(err) = write_result(args.format, &result) {
        // Not reported, so not seen: the next audit reports them.
        let _ = store.forget_new_findings(&new_ids, Some(seen_at), &[]);
        return Err(err);
    }
    printer.status(audit::render::summary_line(&result));
    Ok(if !errors.is_empty() {
        ExitStatus::Remote
    } else if !result.findings.is_empty() {
        ExitStatus::Findings
    } else {
        ExitStatus::Success
    })
}

/// `--repository`, else the registry's `repositories`, else those the store recorded on it.
fn repositories(
    args: &AuditRegistryArgs,
    config: &Config,
    store: &Store,
    host: &str,
) -> Result<Vec<String>> {
    if !args.repository.is_empty() {
        return Ok(args.repository.clone());
    }
    match config.registry(host).filter(|r| !r.repositories.is_empty()) {
        Some(registry) => Ok(registry.repositories.clone()),
        None => Ok(store.recorded_repositories(host)?),
    }
}

fn write_result(format: AuditFormat, result: &AuditResult) -> Result<()> {
    let text = match format {
        AuditFormat::Text => audit::render::text(result),
        AuditFormat::Json => format!(
            "{}\n",
            crate::report::json::to_string_pretty(&audit::render::document(result))?
        ),
        AuditFormat::Sarif => format!(
            "{}\n",
            crate::report::json::to_string_pretty(&audit::sarif::document(result))?
        ),
    };
    write_stdout(&text)?;
    Ok(())
}

/// Lists every repository's tags and finds each tag's digest and kind. A tag still at a digest
/// an earlier audit classified costs one HEAD; anything else one GET of the manifest (and of
/// an image's config). Any failure fails the whole registry: a partial view would report
/// missing tags as nothing.
async fn scan(
    config: &Config,
    host: &str,
    repositories: &[String],
    known: Vec<Known>,
    concurrency: usize,
) -> Result<Vec<Scanned>, RemoteError> {
    let client = Arc::new(RegistryClient::new(config, host)?);
    let limit = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut listings = tokio::task::JoinSet::new();
    for (index, repository) in repositories.iter().enumerate() {
        let (client, limit, repository) = (client.clone(), limit.clone(), repository.clone());
        listings.spawn(async move {
            let _permit = limit.acquire_owned().await.expect("semaphore open");
            client
                .list_tags(&repository)
                .await
                .map(|tags| (index, tags))
        });
    }
    let mut tags: Vec<Vec<String>> = vec![Vec::new(); repositories.len()];
    while let Some(joined) = listings.join_next().await {
        let (index, listed) = joined.expect("tag listing panicked")?;
        tags[index] = listed;
    }
    let known: Vec<Arc<Known>> = known.into_iter().map(Arc::new).collect();
    let mut lookups = tokio::task::JoinSet::new();
    for (index, repository) in repositories.iter().enumerate() {
        for tag in std::mem::take(&mut tags[index]) {
            let (client, limit, known) = (client.clone(), limit.clone(), known[index].clone());
            let repository = repository.clone();
            lookups.spawn(async move {
                let _permit = limit.acquire_owned().await.expect("semaphore open");
                observe(&client, &repository, tag, &known)
                    .await
                    .map(|o| o.map(|o| (index, o)))
            });
        }
    }
    let mut scanned: Vec<Scanned> = repositories
        .iter()
        .map(|r| Scanned {
            repository: r.clone(),
            observed: Vec::new(),
        })
        .collect();
    while let Some(joined) = lookups.join_next().await {
        if let Some((index, observed)) = joined.expect("manifest lookup panicked")? {
            scanned[index].observed.push(observed);
        }
    }
    for s in &mut scanned {
        s.observed.sort_by(|a, b| a.tag.cmp(&b.tag));
    }
    Ok(scanned)
}

/// One tag's digest and kind; `None` when the tag went away meanwhile or its manifest is not
/// one this audit can read (it is then no BuildKit cache either).
async fn observe(
    client: &RegistryClient,
    repository: &str,
    tag: String,
    seen: &Known,
) -> Result<Option<Observed>, RemoteError> {
    let known = |digest: &str| seen.kinds.get(digest).and_then(|k| audit::parse_kind(k));
    let reference = if seen.tags.get(&tag).is_some_and(|d| known(d).is_some()) {
        let Some(head) = client.head_manifest(repository, &tag).await? else {
            return Ok(None);
        };
        if let Some(kind) = known(head.digest.as_str()) {
            return Ok(Some(Observed {
                tag,
                digest: head.digest.as_str().to_owned(),
                kind,
            }));
        }
        head.digest.as_str().to_owned()
    } else {
        tag.clone()
    };
    let Some(manifest) = client.get_manifest(repository, &reference).await? else {
        return Ok(None);
    };
    let Ok(parsed) = parse_manifest(&manifest.bytes, &manifest.media_type) else {
        return Ok(None);
    };
    let config = match &parsed {
        ParsedManifest::Image { config, .. }
            if config.media_type != BUILDKIT_CACHE_CONFIG
                && config.media_type.ends_with("json") =>
        {
            Some(client.get_blob(repository, &config.digest).await?)
        }
        _ => None,
    };
    let kind: ManifestKind = classify(&parsed, config.as_deref());
    Ok(Some(Observed {
        tag,
        digest: manifest.digest.as_str().to_owned(),
        kind,
    }))
}

/// What `incident open --from-audit` seeds from a stored finding.
pub(crate) struct AuditSeed {
    /// A `--cache-ref` seed: the finding's cache by digest (by tag when it has none).
    pub cache_ref: Option<String>,
    /// `--mount` and `--run` seeds of a mount finding: the mount, and the runs that wrote it.
    pub mounts: Vec<String>,
    pub runs: Vec<String>,
    pub title: String,
    /// Deletes the finding's manifest itself: an unrecorded digest is in no recorded run, so
    /// the trace reaches nothing from it.
    pub delete: Option<Action>,
}

pub(crate) fn incident_seed(store: &Store, id: i64, config: &Config) -> Result<AuditSeed> {
    let finding = store.audit_finding(id)?;
    if finding.target == "build" {
        return Ok(AuditSeed {
            cache_ref: None,
            mounts: Vec::new(),
            runs: super::audit_builds::incident_runs(&finding)?,
            title: format!("audit finding {id} ({}): {}", finding.code, finding.message),
            delete: None,
        });
    }
    if finding.target == "mount" {
        let (mount, runs) = super::audit_mounts::incident_seeds(&finding);
        return Ok(AuditSeed {
            cache_ref: None,
            mounts: vec![mount],
            runs,
            title: format!("audit finding {id} ({}): {}", finding.code, finding.message),
            delete: None,
        });
    }
    let locator = format!("{}/{}", finding.registry, finding.repository);
    let cache_ref = match (&finding.digest, &finding.tag) {
        (Some(digest), _) => format!("{locator}@{digest}"),
        (None, Some(tag)) => format!("{locator}:{tag}"),
        (None, None) => {
            return Err(InputError::invalid(format!(
                "audit finding {id} names no digest or tag to seed from"
            ))
            .into());
        }
    };
    let delete = match &finding.digest {
        Some(digest) if Digest::parse(digest, "digest").is_ok() => {
            let mut tags: Vec<String> = finding
                .detail
                .get("tags")
                .map(|t| {
                    t.split(',')
                        .filter(|t| !t.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            if tags.is_empty() {
                tags.extend(finding.tag.clone());
            }
            Some(Action {
                kind: ActionKind::DeleteManifest,
                place: finding.registry.clone(),
                in_scope: config
                    .scope
                    .allows_repository(&finding.registry, &finding.repository),
                target: Target::Manifest {
                    registry: finding.registry.clone(),
                    repository: finding.repository.clone(),
                    digest: digest.clone(),
                    tags,
                    cache: true,
                    image: finding
                        .detail
                        .get("kind")
                        .is_some_and(|k| k == "inline-cache-image"),
                },
                reason: format!("audit finding {id} ({}): {}", finding.code, finding.message),
            })
        }
        _ => None,
    };
    Ok(AuditSeed {
        cache_ref: Some(cache_ref),
        mounts: Vec::new(),
        runs: Vec::new(),
        title: format!("audit finding {id} ({}): {}", finding.code, finding.message),
        delete,
    })
}

/// Adds the finding's own delete to a plan that does not already delete that manifest.
pub(crate) fn add_audit_delete(actions: &mut Vec<Action>, seed: &AuditSeed) {
    let Some(delete) = &seed.delete else { return };
    let Target::Manifest {
        registry,
        repository,
        digest,
        ..
    } = &delete.target
    else {
        return;
    };
    let planned = actions.iter().any(|a| {
        matches!(&a.target, Target::Manifest { registry: r, repository: p, digest: d, .. }
            if r == registry && p == repository && d == digest)
    });
    if !planned {
        actions.insert(0, delete.clone());
    }
}
