//! A cache mount on a builder: its records are found by the mount id BuildKit v0.12 and later
//! write at the end of their descriptions (by target path on Docker 20.10), listed file by
//! file as evidence, pruned by id, and verified gone from the builder's records.

use crate::report::escape::Term;
use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;

use crate::config::Config;
use crate::error::RemoteError;
use crate::model::{Driver, MountUse, PurgeTarget, clean_path};
use crate::plan::Target;
use crate::purge::evidence::{Evidence, mount_listing_file, sanitize, save_records, write};
use crate::purge::remotes::{Remotes, connected};
use crate::purge::verify::{Verdict, VerifyInputs, cutoff, from_before, last_purge};
use crate::purge::{BoxFuture, Executed, Outcome, TargetKind};
use crate::remote::buildkit::CacheRecord;
use crate::remote::endpoint::require_endpoint;
use crate::report::count;
use crate::store::{ActionRow, MountRead};
use crate::time::{self, Micros};

pub struct Mount;

/// The fields of a mount target.
struct Fields<'a> {
    builder: &'a str,
    endpoint: Option<&'a str>,
    driver: Option<Driver>,
    mount_id: &'a str,
    targets: &'a [String],
    shares_target_with: &'a [String],
}

fn fields(target: &Target) -> Fields<'_> {
    match target {
        Target::Mount {
            builder,
            endpoint,
            driver,
            mount_id,
            targets,
            shares_target_with,
        } => Fields {
            builder,
            endpoint: endpoint.as_deref(),
            driver: *driver,
            mount_id,
            targets,
            shares_target_with,
        },
        _ => unreachable!("dispatched by kind_of"),
    }
}

impl TargetKind for Mount {
    fn place(&self, target: &Target) -> String {
        fields(target).builder.to_owned()
    }

    fn identity(&self, target: &Target) -> String {
        let m = fields(target);
        format!("mount\0{}\0{}", m.builder, m.mount_id)
    }

    fn check<'a>(
        &'a self,
        target: &'a Target,
        cx: &'a Remotes,
    ) -> BoxFuture<'a, Result<String, RemoteError>> {
        Box::pin(async move {
            let m = fields(target);
            let records = cx.disk_usage(m.builder, m.endpoint, m.driver).await?;
            let describes_ids = cx
                .describes_mount_ids(m.builder, m.endpoint, m.driver)
                .await?;
            let (ids, note) = select_mount_records(
                &records,
                m.mount_id,
                m.targets,
                m.shares_target_with,
                describes_ids,
            );
            Ok(format!(
                "{} to prune{}",
                count(ids.len(), "record", "records"),
                note.map(|n| format!("; {n}")).unwrap_or_default()
            ))
        })
    }

    fn evidence<'a>(
        &'a self,
        target: &'a Target,
        cx: &'a Remotes,
        opts: &'a Evidence,
    ) -> BoxFuture<'a, Result<(), RemoteError>> {
        Box::pin(async move {
            let m = fields(target);
            // Unknown, the target path decides: more records are saved, never fewer.
            let describes_ids = cx
                .describes_mount_ids(m.builder, m.endpoint, m.driver)
                .await
                .unwrap_or(false);
            let records = save_records(
                opts,
                cx,
                m.builder,
                m.endpoint,
                m.driver,
                |records| {
                    select_mount_records(
                        records,
                        m.mount_id,
                        m.targets,
                        m.shares_target_with,
                        describes_ids,
                    )
                    .0
                },
                &format!("mount-{}", sanitize(m.mount_id)),
            )
            .await;
            let listing = list_mount(
                opts, &cx.config, m.builder, m.endpoint, m.driver, m.mount_id,
            )
            .await;
            records.and(listing)
        })
    }

    fn execute<'a>(
        &'a self,
        target: &'a Target,
        cx: &'a Remotes,
    ) -> BoxFuture<'a, Result<Executed, RemoteError>> {
        Box::pin(async move {
            let m = fields(target);
            let (endpoint, driver) = require_endpoint(&cx.config, m.builder, m.endpoint, m.driver)?;
            let describes_ids = cx
                .describes_mount_ids(m.builder, m.endpoint, m.driver)
                .await?;
            let outcome = prune_mount(
                cx,
                m.builder,
                &endpoint,
                driver,
                m.mount_id,
                (m.targets, m.shares_target_with),
                describes_ids,
            )
            .await?;
            Ok(Executed::Done {
                outcome,
                purged: Some(PurgeTarget::Mount {
                    builder: m.builder.to_owned(),
                    mount: m.mount_id.to_owned(),
                    namespace: String::new(),
                }),
            })
        })
    }

    fn verify<'a>(
        &'a self,
        target: &'a Target,
        rows: &'a [ActionRow],
        cx: &'a Remotes,
        inputs: &'a VerifyInputs,
    ) -> BoxFuture<'a, Verdict> {
        Box::pin(async move {
            let m = fields(target);
            let cutoff = cutoff(
                rows,
                last_purge(&inputs.purges, m.builder, Some(m.mount_id)),
                inputs.tainted_runs.get(m.builder).copied(),
            );
            let describes_ids = match cx
                .describes_mount_ids(m.builder, m.endpoint, m.driver)
                .await
            {
                Ok(describes_ids) => describes_ids,
                Err(err) => {
                    return Verdict::Unverified {
                        detail: format!(
                            "cannot tell how `{}` names mounts: {err}",
                            Term(m.builder)
                        ),
                    };
                }
            };
            match cx.listing(m.builder, m.endpoint, m.driver).await {
                Err(detail) => Verdict::Unverified { detail },
                Ok(records) => {
                    let mount = (m.mount_id, describes_ids);
                    mount_verdict(&records, rows, m.builder, mount, cutoff)
                }
            }
        })
    }
}

/// Whether a cache-mount record belongs to `mount_id`. A builder that `describes_ids` (BuildKit
/// v0.12 and later) ends each description with the mount's LLB id (` with id "/pip"`, the
/// Dockerfile id behind the frontend's namespace `/`): only that end counts, since the command
/// before it is the build's own text and may hold the same words. Docker 20.10 writes no id:
/// there, the target path decides. Where ids are written, a record without one at the target
/// is the mount's only when its id is that target (BuildKit leaves such an id out); else it is
/// doubtful.
/// Where the evidence listing ([`list_mount`]) mounts a cache mount: a record it leaves there
/// names the mount's id at this target.
const LISTING_TARGET: &str = "/cachewarden-mount";

pub fn mount_record_matches(
    description: &str,
    mount_id: &str,
    targets: &[String],
    describes_ids: bool,
) -> MountMatch {
    let cleaned: Vec<String> = targets.iter().map(|t| clean_path(t)).collect();
    let at_target = described_at(description, &cleaned);
    // The Dockerfile frontend keys a mount of the default namespace `/<id>`.
    let own = format!("/{mount_id}");
    if describes_ids && let Some(llb) = described_id(description) {
        if llb == own.as_bytes() {
            // A command can end with ` with id "..."` too (below): the id counts at a target
            // the mount was recorded at (or the evidence listing's); elsewhere the record is
            // left for people to check.
            let known = !cleaned.is_empty() && cleaned.iter().all(|t| t.starts_with('/'));
            let listed = described_at(description, &[LISTING_TARGET.to_owned()]);
            return if !known || at_target || listed {
                MountMatch::ById
            } else {
                MountMatch::Doubtful
            };
        }
        // BuildKit names the id only when it is not the target itself: a mount whose id is its
        // target gets none, so at its target the words are another mount's or its command's.
        return if cleaned.contains(&clean_path(&own)) && at_target {
            MountMatch::Doubtful
        } else {
            MountMatch::No
        };
    }
    if !at_target {
        return MountMatch::No;
    }
    // A builder that writes ids writes every mount's but one whose LLB id (`/` and its id) is
    // its target as the Dockerfile wrote it, compared uncleaned as BuildKit compares them: a
    // record without one is that mount's, or older than the builder's ids (made before an
    // upgrade). Unless this mount's id is that target, it is left for people to check. (A
    // mount with no `id=` is keyed by its target, `/` and the target: its id is always
    // written.)
    if describes_ids {
        let every = cleaned.iter().any(|t| t.contains(" from exec "));
        if !described_raw_dests(description, every).contains(&own.as_str()) {
            return MountMatch::Doubtful;
        }
    }
    MountMatch::ByTarget
}

/// Whether a cache-mount description (`cached mount TARGET from exec ...`) is at one of the
/// cleaned `targets`: BuildKit writes the target as the Dockerfile gave it (`/c/`, `//c/./d`),
/// so it is compared cleaned. It ends at the first ` from exec `, or, for a target that itself
/// holds those words, at a later one.
fn described_at(description: &str, cleaned: &[String]) -> bool {
    let every = cleaned.iter().any(|t| t.contains(" from exec "));
    described_dests(description, every)
        .iter()
        .any(|dest| cleaned.contains(dest))
}

/// The target paths, cleaned, a cache-mount description (`cached mount TARGET from exec ...`)
/// may hold: the text before its first ` from exec `, or with `every`, before each of them.
fn described_dests(description: &str, every: bool) -> Vec<String> {
    described_raw_dests(description, every)
        .into_iter()
        .map(clean_path)
        .collect()
}

/// [`described_dests`] as BuildKit wrote them, uncleaned.
fn described_raw_dests(description: &str, every: bool) -> Vec<&str> {
    let Some(rest) = description.strip_prefix("cached mount ") else {
        return Vec::new();
    };
    rest.match_indices(" from exec ")
        .take(if every { usize::MAX } else { 1 })
        .map(|(at, _)| &rest[..at])
        .collect()
}

/// Whether a cache-mount record's description is of one of `mounts` (namespace, mount id,
/// target paths): by the id it ends with where it names one, else by its target path. A
/// record none of them explains was mounted by something the run did not record (an
/// `ONBUILD` step of a base image, a mount the hook could not read).
pub fn record_of_mounts(description: &str, mounts: &[(String, String, Vec<String>)]) -> bool {
    mounts.iter().any(|(namespace, id, targets)| {
        if namespace.is_empty() {
            matches!(
                mount_record_matches(description, id, targets, true),
                MountMatch::ById | MountMatch::ByTarget
            )
        } else {
            // A namespaced id is named `<namespace>/<id>`, and counts at a recorded target.
            let cleaned: Vec<String> = targets.iter().map(|t| clean_path(t)).collect();
            described_id(description).as_deref() == Some(format!("{namespace}/{id}").as_bytes())
                && described_at(description, &cleaned)
        }
    })
}

/// The target paths a cache-mount description may hold (`cached mount TARGET from exec ...`),
/// cleaned: one for each place the target could end. None when it names an id (the id
/// decides) or is no cache-mount description.
pub fn described_targets(description: &str) -> Vec<String> {
    if described_id(description).is_some() {
        return Vec::new();
    }
    // As [`described_at`] reads it: a later ` from exec ` may be the command's.
    described_dests(description, false)
}

/// The LLB id a cache-mount record's description ends with (` with id "/pip"`, BuildKit
/// v0.12 and later), as bytes: BuildKit quotes it as Go's `%q` does, escaping `"`, `\`,
/// controls and what is not valid UTF-8. `None` when the description ends with no such id.
pub fn described_id(description: &str) -> Option<Vec<u8>> {
    const MARK: &str = " with id \"";
    // Inside the quotes every `"` is escaped, so the last mark starts the id.
    let start = description.rfind(MARK)? + MARK.len() - 1;
    go_unquote(&description[start..])
}

/// The bytes a Go double-quoted string literal (`"a\"b\x00"`) stands for, when `literal` is
/// exactly one such literal.
fn go_unquote(literal: &str) -> Option<Vec<u8>> {
    let inner = literal.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = Vec::with_capacity(inner.len());
    let mut chars = inner.chars();
    let hex = |chars: &mut std::str::Chars<'_>, n: usize| -> Option<u32> {
        (0..n).try_fold(0u32, |v, _| Some(v * 16 + chars.next()?.to_digit(16)?))
    };
    while let Some(c) = chars.next() {
        match c {
            '"' => return None,
            '\\' => match chars.next()? {
                'a' => out.push(0x07),
                'b' => out.push(0x08),
                'f' => out.push(0x0c),
                'n' => out.push(b'\n'),
                'r' => out.push(b'\r'),
                't' => out.push(b'\t'),
                'v' => out.push(0x0b),
                '\\' => out.push(b'\\'),
                '"' => out.push(b'"'),
                'x' => out.push(u8::try_from(hex(&mut chars, 2)?).ok()?),
                'u' => push_char(&mut out, char::from_u32(hex(&mut chars, 4)?)?),
                'U' => push_char(&mut out, char::from_u32(hex(&mut chars, 8)?)?),
                d @ '0'..='7' => {
                    let rest = octal_rest(&mut chars)?;
                    out.push(u8::try_from(d.to_digit(8)? * 64 + rest).ok()?);
                }
                _ => return None,
            },
            c => push_char(&mut out, c),
        }
    }
    Some(out)
}

/// The last two digits of a Go octal escape (`\101`).
fn octal_rest(chars: &mut std::str::Chars<'_>) -> Option<u32> {
    let a = chars.next()?.to_digit(8)?;
    let b = chars.next()?.to_digit(8)?;
    Some(a * 8 + b)
}

fn push_char(out: &mut Vec<u8>, c: char) {
    let mut buf = [0; 4];
    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountMatch {
    ById,
    ByTarget,
    /// Its description may be a command's words rather than BuildKit's: the mount's id at a
    /// target the mount was never recorded at, or another id at the target of a mount whose id
    /// is its target (BuildKit writes none for it). Left in place, for people to check.
    Doubtful,
    No,
}

/// The cache-mount records of one mount id, and whether the choice is ambiguous.
pub fn select_mount_records(
    records: &[CacheRecord],
    mount_id: &str,
    targets: &[String],
    shares_target_with: &[String],
    describes_ids: bool,
) -> (Vec<String>, Option<String>) {
    let mut ids = Vec::new();
    let mut ambiguous = Vec::new();
    let mut elsewhere = Vec::new();
    for r in records
        .iter()
        .filter(|r| r.record_type == "exec.cachemount")
    {
        match mount_record_matches(&r.description, mount_id, targets, describes_ids) {
            MountMatch::ById => ids.push(r.id.clone()),
            MountMatch::ByTarget if shares_target_with.is_empty() => ids.push(r.id.clone()),
            MountMatch::ByTarget => ambiguous.push(r.id.clone()),
            MountMatch::Doubtful => elsewhere.push(r.id.clone()),
            MountMatch::No => {}
        }
    }
    let elsewhere = (!elsewhere.is_empty()).then(|| {
        format!(
            "records {} may be this mount's or another's (their descriptions may end with a command's words): left in place, prune them by id after checking",
            elsewhere.join(", ")
        )
    });
    let shared = (!ambiguous.is_empty()).then(|| {
        format!(
            "records {} are at a target also used by mount ids {}: left in place, prune them by id after checking",
            ambiguous.join(", "),
            shares_target_with.join(", ")
        )
    });
    let note = match (shared, elsewhere) {
        (Some(a), Some(b)) => Some(format!("{a}; {b}")),
        (a, b) => a.or(b),
    };
    (ids, note)
}

/// The cache-mount records that may be the mount's ([`MountMatch::Doubtful`]).
fn records_elsewhere<'r>(
    records: &'r [CacheRecord],
    mount_id: &str,
    targets: &[String],
    describes_ids: bool,
) -> impl Iterator<Item = &'r CacheRecord> {
    records.iter().filter(move |r| {
        r.record_type == "exec.cachemount"
            && mount_record_matches(&r.description, mount_id, targets, describes_ids)
                == MountMatch::Doubtful
    })
}

async fn prune_mount(
    cx: &Remotes,
    builder: &str,
    endpoint: &str,
    driver: Driver,
    mount_id: &str,
    (targets, shares_target_with): (&[String], &[String]),
    describes_ids: bool,
) -> Result<Outcome, RemoteError> {
    let slot = cx.builder(builder).await;
    let mut slot = slot.lock().await;
    let client = connected(&mut slot, endpoint, driver).await?;
    let records = client.disk_usage().await?;
    let (ids, ambiguity) = select_mount_records(
        &records,
        mount_id,
        targets,
        shares_target_with,
        describes_ids,
    );
    let pruned = client.prune_ids(&ids).await?;
    let after = client.disk_usage().await?;
    let survivors: Vec<&str> = after
        .iter()
        .filter(|r| ids.contains(&r.id))
        .map(|r| r.id.as_str())
        .collect();
    if !survivors.is_empty() {
        return Err(RemoteError::protocol(format!(
            "builder `{builder}`: mount `{mount_id}` records {} are still present (in use?)",
            survivors.join(", "),
            builder = Term(builder),
            mount_id = Term(mount_id)
        )));
    }
    if let Some(note) = ambiguity {
        return Err(RemoteError::protocol(format!(
            "builder `{builder}`: mount `{mount_id}`: {note}",
            builder = Term(builder),
            mount_id = Term(mount_id)
        )));
    }
    Ok(Outcome::Pruned {
        records: ids.len(),
        bytes: pruned.iter().map(|r| r.size).sum(),
        already_gone: 0,
    })
}

/// What the collector needs per tainted mount: how it was used, and a base image with a shell
/// that the builder already holds.
#[derive(Debug, Clone, Default)]
pub struct MountProbe {
    pub uses: Vec<MountUse>,
    /// (name the builder knows it by, digest or image id), local images first.
    pub base_images: Vec<(String, String)>,
}

impl MountProbe {
    /// From the builds that read the mount (newest first): the ways it was used, and the base
    /// images those builds used by the name the builder knows them by, local images first
    /// (the builder holds them), never one in `tainted`: the listing build runs in it.
    pub fn from_reads(mount_id: &str, reads: &[MountRead], tainted: &BTreeSet<String>) -> Self {
        let mut probe = Self::default();
        for read in reads {
            for u in &read.uses {
                if u.id == mount_id && !probe.uses.contains(u) {
                    probe.uses.push(u.clone());
                }
            }
            for base in &read.bases {
                let name = match base.backend.as_str() {
                    "local-image" if !base.key.is_empty() => base.key.clone(),
                    "registry" if !base.digest.is_empty() => {
                        format!("{}@{}", base.locator, base.digest)
                    }
                    _ => continue,
                };
                let base_image = (name, base.digest.clone());
                if !probe.base_images.contains(&base_image) {
                    if base.backend == "local-image" {
                        probe.base_images.insert(0, base_image);
                    } else {
                        probe.base_images.push(base_image);
                    }
                }
            }
        }
        probe
            .base_images
            .retain(|(_, digest)| !tainted.contains(digest));
        probe
    }
}

/// Lists a mount cache's files with their SHA-256: a build on the builder mounts the cache
/// read-only and exports the listing with `--output type=local`.
async fn list_mount(
    opts: &Evidence,
    config: &Config,
    builder: &str,
    endpoint: Option<&str>,
    driver: Option<Driver>,
    mount_id: &str,
) -> Result<(), RemoteError> {
    let listing = mount_listing(
        config,
        &opts.docker,
        &opts.probes,
        builder,
        endpoint,
        driver,
        mount_id,
    )
    .await?;
    write(
        &opts.dir,
        &mount_listing_file(builder, mount_id),
        listing.as_bytes(),
    )
}

/// The `sha256sum` listing of a mount cache's files, sorted by path.
async fn mount_listing(
    config: &Config,
    docker: &str,
    probes: &BTreeMap<(String, String), MountProbe>,
    builder: &str,
    endpoint: Option<&str>,
    driver: Option<Driver>,
    mount_id: &str,
) -> Result<String, RemoteError> {
    let (endpoint, driver) = require_endpoint(config, builder, endpoint, driver)?;
    if driver != Driver::Docker {
        return Err(RemoteError::local(format!(
            "listing mount `{mount_id}` needs a Docker-driver builder; `{builder}` is {}",
            driver.as_str(),
            builder = Term(builder),
            mount_id = Term(mount_id)
        )));
    }
    let probe = probes
        .get(&(builder.to_owned(), mount_id.to_owned()))
        .cloned()
        .unwrap_or_default();
    // The operator's helper image first: a recorded base is named by the pipelines whose
    // cache is being listed, and its `find` and `sha256sum` could hide what the mount holds.
    let base = match &config.audit.helper_image {
        Some(image) => image,
        None => probe.base_images.first().map(|(name, _)| name).ok_or_else(|| {
            RemoteError::local(format!(
                "no untainted base image known that used mount `{mount_id}` on `{builder}`, and no `[audit] helper_image`", builder = Term(builder), mount_id = Term(mount_id)))
        })?,
    };
    let from = probe
        .uses
        .first()
        .and_then(|u| u.from.as_deref())
        .unwrap_or("");
    crate::remote::mount_copy::check_helper_names(mount_id, from, base)?;
    let docker_host = crate::remote::engine::EngineAddr::parse(&endpoint)?.docker_host();
    let mut options = format!("type=cache,id={mount_id},target={LISTING_TARGET},readonly");
    if let Some(first) = probe.uses.first() {
        if let Some(uid) = first.uid {
            options.push_str(&format!(",uid={uid}"));
        }
        if let Some(gid) = first.gid {
            options.push_str(&format!(",gid={gid}"));
        }
        if let Some(mode) = first.mode {
            options.push_str(&format!(",mode={mode:o}"));
        }
        if let Some(from) = &first.from {
            options.push_str(&format!(",from={from}"));
        }
    }
    let work = tempfile::Builder::new()
        .prefix("cachewarden-listing-")
        .tempdir()
        .map_err(|e| RemoteError::local(format!("cannot create a temporary directory: {e}")))?;
    // The nonce keeps the listing step out of the layer cache: mount contents are not part of
    // the cache key, and `--no-cache` would detach the very mount being listed.
    let nonce = format!("{:x}", time::now());
    let dockerfile = format!(
        "FROM {base} AS list\n\
         RUN --mount={options} echo {nonce} >/dev/null; cd {LISTING_TARGET} && find . -type f -exec sha256sum {{}} + > /cachewarden-listing.txt; true\n\
         FROM scratch\n\
         COPY --from=list /cachewarden-listing.txt /\n"
    );
    std::fs::write(work.path().join("Dockerfile"), dockerfile)
        .map_err(|e| RemoteError::local(format!("cannot write the listing Dockerfile: {e}")))?;
    let out = work.path().join("out");
    let output = tokio::process::Command::new(docker)
        .args(["build", "--network=none", "--output"])
        .arg(format!("type=local,dest={}", out.display()))
        .arg(work.path())
        .env("DOCKER_HOST", &docker_host)
        .env("DOCKER_BUILDKIT", "1")
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| RemoteError::local(format!("cannot run `{docker}`: {e}")))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        return Err(RemoteError::local(format!(
            "listing mount `{mount_id}` on `{builder}` failed: {last}",
            builder = Term(builder),
            mount_id = Term(mount_id)
        )));
    }
    let text = std::fs::read_to_string(out.join("cachewarden-listing.txt"))
        .map_err(|e| RemoteError::local(format!("the listing build wrote no listing: {e}")))?;
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_by_key(|l| l.split_once("  ").map(|(_, p)| p).unwrap_or(l));
    Ok(lines.iter().map(|l| format!("{l}\n")).collect())
}

fn mount_verdict(
    records: &[CacheRecord],
    rows: &[ActionRow],
    builder: &str,
    (mount_id, describes_ids): (&str, bool),
    cutoff: Option<Micros>,
) -> Verdict {
    let mut left: Vec<&str> = Vec::new();
    let mut shared: Vec<&str> = Vec::new();
    for row in rows {
        let Target::Mount {
            targets,
            shares_target_with,
            ..
        } = &row.action.target
        else {
            continue;
        };
        // A target relative to the working directory: BuildKit describes it joined to a
        // directory the record does not keep, so no description can be told to be its.
        // On a builder that names ids, one that is its own target gets none: a relative
        // target may end where its id is, and no record would name it.
        if let Some(relative) = targets.iter().find(|t| !t.starts_with('/')) {
            return Verdict::Unverified {
                detail: format!(
                    "mount `{mount_id}` on `{builder}` has the target `{target}`, relative to a working directory: which records are its cannot be told; check its records by hand",
                    builder = Term(builder),
                    mount_id = Term(mount_id),
                    target = Term(relative)
                ),
            };
        }
        // With no target known, a builder that names no ids names nothing to match.
        if !describes_ids && targets.is_empty() {
            return Verdict::Unverified {
                detail: format!(
                    "mount `{mount_id}` on `{builder}` has no recorded target path: which records are its cannot be told on a builder that does not name mount ids (Docker 20.10); check its records by hand",
                    builder = Term(builder),
                    mount_id = Term(mount_id)
                ),
            };
        }
        let (ids, note) = select_mount_records(
            records,
            mount_id,
            targets,
            shares_target_with,
            describes_ids,
        );
        let ambiguous: Vec<String> = if note.is_some() {
            select_mount_records(records, mount_id, targets, &[], describes_ids).0
        } else {
            Vec::new()
        };
        for record in records_elsewhere(records, mount_id, targets, describes_ids) {
            if !shared.contains(&record.id.as_str()) {
                shared.push(&record.id);
            }
        }
        for record in records.iter().filter(|r| from_before(r, cutoff)) {
            if ids.contains(&record.id) && !left.contains(&record.id.as_str()) {
                left.push(&record.id);
            } else if ambiguous.contains(&record.id)
                && !ids.contains(&record.id)
                && !shared.contains(&record.id.as_str())
            {
                shared.push(&record.id);
            }
        }
    }
    match (left.is_empty(), shared.is_empty()) {
        (true, true) => Verdict::Gone,
        (false, _) => Verdict::Present {
            detail: format!(
                "mount `{mount_id}` on `{builder}` still holds records {} from before its purge",
                left.join(", "),
                builder = Term(builder),
                mount_id = Term(mount_id)
            ),
        },
        (true, false) => Verdict::Present {
            detail: format!(
                "records {} on `{builder}` may be mount `{mount_id}`'s (at a target path it shares with other mount ids, or described in words a command may have written): prune them by id after checking, or accept them",
                shared.join(", "),
                builder = Term(builder),
                mount_id = Term(mount_id)
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::UsedBase;

    /// The evidence listing before a mount purge runs a build on the builder: a recorded mount
    /// id, `from` or base image that would end the mount option, the flag or the Dockerfile
    /// line (and so run as the responder's step) is refused before anything runs.
    #[tokio::test]
    async fn hostile_names_never_reach_the_listing_dockerfile() {
        let config = Config::default();
        for (mount_id, base, from) in [
            ("pip echo planted; true", "busybox", None),
            ("pip\nRUN echo planted", "busybox", None),
            ("pip,target=/etc", "busybox", None),
            ("pip", "busybox\nRUN echo planted", None),
            ("pip", "busybox", Some("x echo planted")),
        ] {
            let probe = MountProbe {
                uses: vec![MountUse {
                    id: mount_id.into(),
                    from: from.map(str::to_owned),
                    ..MountUse::default()
                }],
                base_images: vec![(base.into(), "sha256:00".into())],
            };
            let probes = BTreeMap::from([(("ci-1".to_owned(), mount_id.to_owned()), probe)]);
            let err = mount_listing(
                &config,
                "/nonexistent/docker",
                &probes,
                "ci-1",
                Some("unix:///nonexistent.sock"),
                Some(Driver::Docker),
                mount_id,
            )
            .await
            .unwrap_err();
            assert!(
                err.to_string().contains("cannot be named in a Dockerfile"),
                "{mount_id:?}: {err}"
            );
        }
    }

    /// A recorded `ssh://` endpoint (its host can be an `ssh` option) never becomes the
    /// listing build's `DOCKER_HOST`.
    #[tokio::test]
    async fn recorded_ssh_endpoints_never_reach_the_listing_build() {
        let probe = MountProbe {
            uses: Vec::new(),
            base_images: vec![("busybox".into(), "sha256:00".into())],
        };
        let probes = BTreeMap::from([(("ci-1".to_owned(), "pip".to_owned()), probe)]);
        let err = mount_listing(
            &Config::default(),
            "/nonexistent/docker",
            &probes,
            "ci-1",
            Some("ssh://-oProxyCommand=touch${IFS}/tmp/cw-pwned@host"),
            Some(Driver::Docker),
            "pip",
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("not supported"), "{err}");
    }

    /// The listing build runs in `[audit] helper_image` when one is set, not in a base image
    /// the recorded (hostile) builds named.
    #[tokio::test]
    async fn the_listing_runs_in_the_configured_helper_image() {
        let dir = tempfile::tempdir().unwrap();
        let seen = dir.path().join("Dockerfile.seen");
        let docker = dir.path().join("docker");
        std::fs::write(
            &docker,
            format!(
                "#!/bin/sh\nfor a; do last=$a; done\ncp \"$last/Dockerfile\" {}\nexit 1\n",
                seen.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&docker, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let mut config = Config::default();
        config.audit.helper_image = Some("busybox:1.36".into());
        let probe = MountProbe {
            uses: Vec::new(),
            base_images: vec![("evil:latest".into(), "sha256:00".into())],
        };
        let probes = BTreeMap::from([(("ci-1".to_owned(), "pip".to_owned()), probe)]);
        let _ = mount_listing(
            &config,
            docker.to_str().unwrap(),
            &probes,
            "ci-1",
            Some("unix:///nonexistent.sock"),
            Some(Driver::Docker),
            "pip",
        )
        .await;
        let dockerfile = std::fs::read_to_string(&seen).unwrap();
        assert!(dockerfile.starts_with("FROM busybox:1.36 "), "{dockerfile}");
    }

    fn base(backend: &str, locator: &str, digest: &str, key: &str) -> UsedBase {
        UsedBase {
            backend: backend.into(),
            locator: locator.into(),
            digest: digest.into(),
            key: key.into(),
        }
    }

    /// Descriptions are read as BuildKit writes them: the target as the Dockerfile gave it
    /// (`/c/`, `//c/./d`, one holding ` from exec `), the id quoted as Go's `%q` quotes it; and
    /// an id under a namespace (`team/pip`) is not the default namespace's `team/pip`.
    #[test]
    fn descriptions_are_read_as_buildkit_writes_them() {
        let c = ["/c".to_owned()];
        for raw in ["/c/", "//c/./", "/c/d/.."] {
            let description = format!("cached mount {raw} from exec /bin/sh -c true");
            assert_eq!(
                mount_record_matches(&description, "pip", &c, false),
                MountMatch::ByTarget,
                "{raw}"
            );
        }
        let odd = ["/a from exec /b".to_owned()];
        assert_eq!(
            mount_record_matches(
                "cached mount /a from exec /b from exec /bin/sh -c true",
                "x",
                &odd,
                false
            ),
            MountMatch::ByTarget
        );
        let quoted = r#"cached mount /c from exec /bin/sh -c true with id "/go\"mod\\x\u00a0\xff""#;
        assert_eq!(
            described_id(quoted).unwrap(),
            b"/go\"mod\\x\xc2\xa0\xff".to_vec()
        );
        assert_eq!(
            mount_record_matches(quoted, "go\"mod\\x\u{a0}", &c, true),
            MountMatch::No
        );
        let quoted = r#"cached mount /c from exec /bin/sh -c true with id "/go\"mod""#;
        assert_eq!(
            mount_record_matches(quoted, "go\"mod", &c, true),
            MountMatch::ById
        );
        let namespaced = r#"cached mount /c from exec /bin/sh -c true with id "team/pip""#;
        assert_eq!(
            mount_record_matches(namespaced, "team/pip", &c, true),
            MountMatch::No
        );
        let plain = r#"cached mount /c from exec /bin/sh -c true with id "/team/pip""#;
        assert_eq!(
            mount_record_matches(plain, "team/pip", &c, true),
            MountMatch::ById
        );
    }

    /// A command can end with ` with id "..."`, and BuildKit writes no id for a mount whose id
    /// is its target: such a record at that target, and one naming a mount's id at a target it
    /// was never recorded at, are left for people to check (neither pruned nor taken as gone);
    /// a later ` from exec ` in a command is no target.
    #[test]
    fn a_command_cannot_name_another_mounts_id_or_target() {
        let foo = ["/foo".to_owned()];
        let y = ["/y".to_owned()];
        let forged = r#"cached mount /foo from exec /bin/sh -c poison; : with id "/x""#;
        // `foo` (id = target: no id written) does not lose it: it is left for people to check.
        assert_eq!(
            mount_record_matches(forged, "foo", &foo, true),
            MountMatch::Doubtful
        );
        // `x`, recorded at `/y`, does not take `foo`'s record.
        assert_eq!(
            mount_record_matches(forged, "x", &y, true),
            MountMatch::Doubtful
        );
        let genuine = r#"cached mount /y from exec /bin/sh -c true with id "/x""#;
        assert_eq!(
            mount_record_matches(genuine, "x", &y, true),
            MountMatch::ById
        );
        let npm = ["/root/.npm".to_owned()];
        let dotted = "cached mount /c from exec sh -c : /../../root/.npm from exec x";
        assert_eq!(
            mount_record_matches(dotted, "npm", &npm, false),
            MountMatch::No
        );
        assert!(!record_of_mounts(
            dotted,
            &[(String::new(), "npm".into(), npm.to_vec())]
        ));
        assert!(!record_of_mounts(
            forged,
            &[(String::new(), "foo".into(), foo.to_vec())]
        ));
    }

    /// A record's mount id is the one its description ends with, whatever the command before
    /// it says; a builder that writes no ids is matched by target, even when a command imitates
    /// an id; two ids sharing a target are told apart where ids are written.
    #[test]
    fn a_command_cannot_move_a_record_to_another_mount() {
        let c = ["/c".to_owned()];
        let pip = ["/root/.cache/pip".to_owned()];
        let forged = r#"cached mount /c from exec /bin/sh -c echo with id "x with id "/pip""#;
        assert_eq!(
            mount_record_matches(forged, "pip", &c, true),
            MountMatch::ById
        );
        assert_eq!(mount_record_matches(forged, "x", &c, true), MountMatch::No);
        let claims = r#"cached mount /c from exec /bin/sh -c echo with id "/other""#;
        assert_eq!(
            mount_record_matches(claims, "pip", &c, false),
            MountMatch::ByTarget
        );
        let other = r#"cached mount /c from exec /bin/sh -c true with id "/b""#;
        assert_eq!(mount_record_matches(other, "a", &c, true), MountMatch::No);
        assert_eq!(mount_record_matches(other, "b", &c, true), MountMatch::ById);
        let default = r#"cached mount /root/.cache/pip from exec /bin/sh -c true with id "//root/.cache/pip""#;
        assert_eq!(
            mount_record_matches(default, "/root/.cache/pip", &pip, true),
            MountMatch::ById
        );
        assert_eq!(
            mount_record_matches(default, "root/.cache/pip", &pip, true),
            MountMatch::Doubtful
        );
        // Where ids are written, a record without one is the mount's whose id is its target
        // (`id=c,target=/c`), not another's at that target: that is left for people to check.
        let old = "cached mount /c from exec /bin/sh -c true";
        assert_eq!(
            mount_record_matches(old, "a", &c, true),
            MountMatch::Doubtful
        );
        assert_eq!(
            mount_record_matches(old, "c", &c, true),
            MountMatch::ByTarget
        );
        assert_eq!(
            mount_record_matches(old, "a", &c, false),
            MountMatch::ByTarget
        );
        // A mount with no `id=` (recorded by its target) always has its id written: a record
        // at its target without one is another's.
        assert_eq!(
            mount_record_matches(old, "/c", &c, true),
            MountMatch::Doubtful
        );
        // BuildKit compares the target as written: `/c/` is not the id `/c`.
        let slashed = "cached mount /c/ from exec /bin/sh -c true";
        assert_eq!(
            mount_record_matches(slashed, "c", &c, true),
            MountMatch::Doubtful
        );
    }

    /// The listing build runs in a base image with the mount attached: one the incident holds
    /// tainted is never chosen, a local image the builder holds comes first, and only the
    /// mount's own uses shape the listing's mount options.
    #[test]
    fn a_tainted_base_is_never_chosen_for_the_listing() {
        let pip = MountUse {
            id: "pip".into(),
            uid: Some(1000),
            ..MountUse::default()
        };
        let other = MountUse {
            id: "npm".into(),
            ..MountUse::default()
        };
        let reads = vec![
            MountRead {
                uses: vec![pip.clone(), other],
                bases: vec![
                    base("registry", "reg/evil", "sha256:bad", ""),
                    base("registry", "reg/python", "sha256:good", ""),
                ],
            },
            MountRead {
                uses: vec![pip.clone()],
                bases: vec![
                    base("local-image", "ci-1", "sha256:local", "sha256:local"),
                    base("registry", "reg/python", "sha256:good", ""),
                    base("cache", "x", "sha256:skip", ""),
                ],
            },
        ];
        let tainted: BTreeSet<String> = ["sha256:bad".to_owned()].into();
        let probe = MountProbe::from_reads("pip", &reads, &tainted);
        assert_eq!(probe.uses, vec![pip]);
        assert_eq!(
            probe.base_images,
            vec![
                ("sha256:local".to_owned(), "sha256:local".to_owned()),
                (
                    "reg/python@sha256:good".to_owned(),
                    "sha256:good".to_owned()
                ),
            ]
        );
    }
}
