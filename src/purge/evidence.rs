//! Evidence saved before a purge deletes anything: the manifests and configs it will delete,
//! their blob digests, the builder records it will prune, and a listing of each tainted mount
//! cache. `MANIFEST.json` holds the SHA-256 of every file, so tampering shows.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::config::Config;
use crate::error::RemoteError;
use crate::model::{Digest, Driver, ManifestFacts, MountUse};
use crate::plan::Target;
use crate::purge::execute::{select_builder_records, select_mount_records};
use crate::remote::endpoint::{connect_builder, require_endpoint};

use crate::remote::registry::{
    ParsedManifest, RegistryClient, blobs, client_for, facts, parse_manifest,
};
use crate::store::ActionRow;
use crate::time;

/// What the collector needs per tainted mount: how it was used, and a base image with a shell
/// that the builder already holds.
#[derive(Debug, Clone, Default)]
pub struct MountProbe {
    pub uses: Vec<MountUse>,
    /// (name the builder knows it by, digest or image id), local images first.
    pub base_images: Vec<(String, String)>,
}

/// Options of one collection.
pub struct Collect<'a> {
    pub dir: &'a Path,
    pub config: &'a Config,
    pub blobs: bool,
    pub incident: i64,
    /// The docker client that can run BuildKit builds.
    pub docker: &'a str,
    pub probes: &'a BTreeMap<(String, String), MountProbe>,
}

#[derive(Debug, Serialize)]
struct FileEntry {
    path: String,
    sha256: String,
    size: u64,
}

#[derive(Debug, Serialize)]
struct EvidenceManifest<'a> {
    schema_version: u32,
    incident: i64,
    written_at: String,
    files: Vec<FileEntry>,
    /// What could not be saved, and why.
    unavailable: &'a [String],
}

/// What a collection could not save, and what it learned about the manifests it fetched.
#[derive(Debug, Default)]
pub struct Collected {
    pub unavailable: Vec<String>,
    /// Per action seq, why its evidence could not be saved.
    pub gaps: Vec<(i64, String)>,
    /// For the store: the execution then need not ask the registry what each manifest is.
    pub facts: Vec<ManifestFacts>,
}

/// Saves evidence for every action not done yet.
pub async fn collect(rows: &[ActionRow], opts: &Collect<'_>) -> Result<Collected, std::io::Error> {
    std::fs::create_dir_all(opts.dir)?;
    let mut unavailable = Vec::new();
    let mut gaps = Vec::new();
    let mut learned = Vec::new();
    let mut registries: BTreeMap<String, RegistryClient> = BTreeMap::new();
    for row in rows.iter().filter(|r| !r.state.is_settled()) {
        let result = match &row.action.target {
            Target::Manifest {
                registry,
                repository,
                digest,
                ..
            } => {
                save_manifest(
                    opts,
                    &mut registries,
                    registry,
                    repository,
                    digest,
                    &mut learned,
                )
                .await
            }
            Target::Mount {
                builder,
                endpoint,
                driver,
                mount_id,
                targets,
                shares_target_with,
            } => {
                let records = save_records(
                    opts,
                    builder,
                    endpoint.as_deref(),
                    *driver,
                    |records| {
                        select_mount_records(records, mount_id, targets, shares_target_with).0
                    },
                    &format!("mount-{}", sanitize(mount_id)),
                )
                .await;
                let listing =
                    list_mount(opts, builder, endpoint.as_deref(), *driver, mount_id).await;
                records.and(listing)
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
                save_records(
                    opts,
                    builder,
                    endpoint.as_deref(),
                    *driver,
                    |records| select_builder_records(records, record_ids, *used_since, *full),
                    "records",
                )
                .await
            }
            Target::LocalImage { .. } | Target::FollowUp { .. } => Ok(()),
        };
        if let Err(err) = result {
            unavailable.push(format!(
                "action {} ({}): {err}",
                row.seq,
                row.action.kind.as_str()
            ));
            gaps.push((row.seq, err.to_string()));
        }
    }
    write_manifest(opts.dir, opts.incident, &unavailable)?;
    Ok(Collected {
        unavailable,
        gaps,
        facts: learned,
    })
}

/// Where in an evidence directory a mount's listing is saved.
pub fn mount_listing_file(builder: &str, mount_id: &str) -> String {
    format!("mounts/{}/{}.sha256", sanitize(builder), sanitize(mount_id))
}

/// `a/b:c` -> `a_b_c`: one path component.
fn sanitize(value: &str) -> String {
    value
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect::<String>()
        .trim_matches('_')
        .to_owned()
}

fn write(dir: &Path, relative: &str, bytes: &[u8]) -> Result<(), RemoteError> {
    let path = dir.join(relative);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| RemoteError::local(format!("cannot write `{}`: {e}", path.display())))?;
    }
    std::fs::write(&path, bytes)
        .map_err(|e| RemoteError::local(format!("cannot write `{}`: {e}", path.display())))
}

/// Saves a manifest (an index with its child manifests), its config and its blob list; what
/// each fetched manifest is goes into `learned`.
async fn save_manifest(
    opts: &Collect<'_>,
    registries: &mut BTreeMap<String, RegistryClient>,
    registry: &str,
    repository: &str,
    digest: &str,
    learned: &mut Vec<ManifestFacts>,
) -> Result<(), RemoteError> {
    let client = client_for(registries, opts.config, registry)?;
    let base = format!("manifests/{}/{}", sanitize(registry), repository);
    let Some(manifest) = client.get_manifest(repository, digest).await? else {
        return Ok(());
    };
    let hex = digest.trim_start_matches("sha256:");
    write(opts.dir, &format!("{base}/{hex}.json"), &manifest.bytes)?;
    let mut blob_list: Vec<String> = blobs(&manifest.bytes, &manifest.media_type)?
        .iter()
        .map(|d| format!("{} {} {}", d.digest, d.size, d.media_type))
        .collect();
    let parsed = parse_manifest(&manifest.bytes, &manifest.media_type)?;
    let known = facts(&manifest)?;
    let children = known.children.clone();
    learned.push(known);
    // An index's children are deleted with it: keep them too.
    for child in &children {
        if let Some(m) = client.get_manifest(repository, child.as_str()).await? {
            write(
                opts.dir,
                &format!(
                    "{base}/{}.json",
                    child.as_str().trim_start_matches("sha256:")
                ),
                &m.bytes,
            )?;
            blob_list.extend(
                blobs(&m.bytes, &m.media_type)?
                    .iter()
                    .map(|d| format!("{} {} {}", d.digest, d.size, d.media_type)),
            );
            learned.push(facts(&m)?);
        }
    }
    if let ParsedManifest::Image { config, .. } = &parsed
        && let Ok(bytes) = client.get_blob(repository, &config.digest).await
    {
        write(opts.dir, &format!("{base}/{hex}.config.json"), &bytes)?;
    }
    blob_list.sort();
    blob_list.dedup();
    write(
        opts.dir,
        &format!("{base}/{hex}.blobs.txt"),
        format!("{}\n", blob_list.join("\n")).as_bytes(),
    )?;
    if opts.blobs {
        for line in &blob_list {
            let Some(d) = line.split(' ').next() else {
                continue;
            };
            let Ok(d) = Digest::parse(d, "blob digest") else {
                continue;
            };
            let bytes = client.get_blob(repository, &d).await?;
            write(
                opts.dir,
                &format!("blobs/{}", d.as_str().trim_start_matches("sha256:")),
                &bytes,
            )?;
        }
    }
    Ok(())
}

async fn save_records(
    opts: &Collect<'_>,
    builder: &str,
    endpoint: Option<&str>,
    driver: Option<Driver>,
    select: impl Fn(&[crate::remote::buildkit::CacheRecord]) -> Vec<String>,
    name: &str,
) -> Result<(), RemoteError> {
    let mut client = connect_builder(opts.config, builder, endpoint, driver).await?;
    let records = client.disk_usage().await?;
    let chosen = select(&records);
    let docs: Vec<serde_json::Value> = records
        .iter()
        .filter(|r| chosen.contains(&r.id))
        .map(|r| {
            serde_json::json!({
                "id": r.id, "type": r.record_type, "description": r.description, "size": r.size,
                "created_at": r.created_at.map(time::format), "last_used_at": r.last_used_at.map(time::format),
                "usage_count": r.usage_count, "parents": r.parents,
            })
        })
        .collect();
    let text =
        serde_json::to_string_pretty(&docs).map_err(|e| RemoteError::local(e.to_string()))?;
    write(
        opts.dir,
        &format!("builders/{}/{name}.json", sanitize(builder)),
        text.as_bytes(),
    )
}

/// Lists a mount cache's files with their SHA-256: a build on the builder mounts the cache
/// read-only and exports the listing with `--output type=local`.
pub async fn list_mount(
    opts: &Collect<'_>,
    builder: &str,
    endpoint: Option<&str>,
    driver: Option<Driver>,
    mount_id: &str,
) -> Result<(), RemoteError> {
    let listing = mount_listing(
        opts.config,
        opts.docker,
        opts.probes,
        builder,
        endpoint,
        driver,
        mount_id,
    )
    .await?;
    write(
        opts.dir,
        &mount_listing_file(builder, mount_id),
        listing.as_bytes(),
    )
}

/// The `sha256sum` listing of a mount cache's files, sorted by path.
pub async fn mount_listing(
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
            driver.as_str()
        )));
    }
    let probe = probes
        .get(&(builder.to_owned(), mount_id.to_owned()))
        .cloned()
        .unwrap_or_default();
    let (base, _) = probe.base_images.first().ok_or_else(|| {
        RemoteError::local(format!(
            "no untainted base image known that used mount `{mount_id}` on `{builder}`"
        ))
    })?;
    let mut options = format!("type=cache,id={mount_id},target=/cachewarden-mount,readonly");
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
         RUN --mount={options} echo {nonce} >/dev/null; cd /cachewarden-mount && find . -type f -exec sha256sum {{}} + > /cachewarden-listing.txt; true\n\
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
        .env("DOCKER_HOST", &endpoint)
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
            "listing mount `{mount_id}` on `{builder}` failed: {last}"
        )));
    }
    let text = std::fs::read_to_string(out.join("cachewarden-listing.txt"))
        .map_err(|e| RemoteError::local(format!("the listing build wrote no listing: {e}")))?;
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_by_key(|l| l.split_once("  ").map(|(_, p)| p).unwrap_or(l));
    Ok(lines.iter().map(|l| format!("{l}\n")).collect())
}

/// Rewrites `MANIFEST.json` over every file in the evidence directory.
fn write_manifest(dir: &Path, incident: i64, unavailable: &[String]) -> std::io::Result<()> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n != "MANIFEST.json") {
                let bytes = std::fs::read(&path)?;
                files.push(FileEntry {
                    path: relative(dir, &path),
                    sha256: hex(&Sha256::digest(&bytes)),
                    size: bytes.len() as u64,
                });
            }
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let manifest = EvidenceManifest {
        schema_version: 1,
        incident,
        written_at: time::format(time::now()),
        files,
        unavailable,
    };
    let tmp = dir.join("MANIFEST.json.partial");
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(&manifest).map_err(std::io::Error::other)?,
    )?;
    std::fs::rename(tmp, dir.join("MANIFEST.json"))
}

fn relative(dir: &Path, path: &Path) -> String {
    path.strip_prefix(dir)
        .map(PathBuf::from)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The docker client able to run BuildKit builds: Debian's `/usr/bin/docker` when present.
pub fn docker_client() -> String {
    for candidate in ["/usr/bin/docker", "/usr/local/bin/docker"] {
        if Path::new(candidate).exists() {
            return candidate.to_owned();
        }
    }
    "docker".to_owned()
}
