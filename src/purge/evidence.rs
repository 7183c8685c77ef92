//! Evidence saved before a purge deletes anything: the manifests and configs it will delete,
//! their blob digests, the builder records it will prune, and a listing of each tainted mount
//! cache. `MANIFEST.json` holds the SHA-256 of every file, so tampering shows.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::config::Config;
use crate::error::RemoteError;
use crate::model::{Driver, ManifestFacts};
use crate::plan::Target;
use crate::purge::kind_of;
use crate::purge::mount::MountProbe;
use crate::purge::remotes::Remotes;
use crate::purge::runner::{self, Job};
use crate::remote::buildkit::CacheRecord;
use crate::store::{ActionRow, Store, StoreError};
use crate::time;

/// Options of one collection.
pub struct Evidence {
    pub dir: PathBuf,
    pub blobs: bool,
    pub incident: i64,
    /// The docker client that can run BuildKit builds.
    pub docker: String,
    /// What listing each tainted mount needs, by (builder, mount id).
    pub probes: BTreeMap<(String, String), MountProbe>,
    /// How many targets may be saved at once at one place, as for the purge itself: manifests
    /// this many per registry, builders one at a time.
    pub concurrency: usize,
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

/// Saves evidence for every action not done yet: as many at a time per place as the purge
/// itself runs there (`concurrency` manifests per registry, one job per builder), places side
/// by side.
pub async fn collect(
    rows: &[ActionRow],
    config: &Config,
    opts: Evidence,
) -> Result<Collected, std::io::Error> {
    std::fs::create_dir_all(&opts.dir)?;
    let remotes = Arc::new(Remotes::new(config, HashMap::new()));
    let opts = Arc::new(opts);
    let jobs = rows
        .iter()
        .filter(|r| !r.state.is_settled())
        .cloned()
        .map(|row| {
            let (remotes, opts) = (remotes.clone(), opts.clone());
            Job {
                place: row.action.place.clone(),
                limit: kind_of(&row.action.target).limit(opts.concurrency.max(1)),
                work: async move {
                    let kind = kind_of(&row.action.target);
                    let saved = kind.evidence(&row.action.target, &remotes, &opts).await;
                    Ok::<_, Infallible>((row, saved))
                },
            }
        })
        .collect();
    let saved = match runner::run(jobs).await {
        Ok(saved) => saved,
        Err(never) => match never {},
    };
    let mut unavailable = Vec::new();
    let mut gaps = Vec::new();
    for (row, result) in saved {
        if let Err(err) = result {
            unavailable.push(format!(
                "action {} ({}): {err}",
                row.seq,
                row.action.kind.as_str()
            ));
            gaps.push((row.seq, err.to_string()));
        }
    }
    write_manifest(&opts.dir, opts.incident, &unavailable)?;
    Ok(Collected {
        unavailable,
        gaps,
        facts: remotes.take_learned(1),
    })
}

/// What listing each tainted mount of the plan needs from the store. The listing build runs
/// in a base image, so one the incident holds tainted is never chosen.
pub fn mount_probes(
    store: &Store,
    incident: i64,
    rows: &[ActionRow],
) -> Result<BTreeMap<(String, String), MountProbe>, StoreError> {
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
            let reads = store.mount_reads(builder, mount_id)?;
            let probe = MountProbe::from_reads(mount_id, &reads, &tainted);
            probes.insert((builder.clone(), mount_id.clone()), probe);
        }
    }
    Ok(probes)
}

/// Where in an evidence directory a mount's listing is saved.
pub fn mount_listing_file(builder: &str, mount_id: &str) -> String {
    format!("mounts/{}/{}.sha256", sanitize(builder), sanitize(mount_id))
}

/// `a/b:c` -> `a_b_c`: one path component.
pub fn sanitize(value: &str) -> String {
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

/// Writes one evidence file, with its directories.
pub fn write(dir: &Path, relative: &str, bytes: &[u8]) -> Result<(), RemoteError> {
    let path = dir.join(relative);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| RemoteError::local(format!("cannot write `{}`: {e}", path.display())))?;
    }
    // Whole or not at all: saves run side by side, and two may write one content-addressed
    // file (an index's child is also a target of its own).
    let fail =
        |e: std::io::Error| RemoteError::local(format!("cannot write `{}`: {e}", path.display()));
    let mut file = tempfile::Builder::new()
        .prefix(".partial-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .tempfile_in(path.parent().unwrap_or(dir))
        .map_err(fail)?;
    std::io::Write::write_all(&mut file, bytes).map_err(fail)?;
    file.persist(&path).map_err(|e| fail(e.error))?;
    Ok(())
}

/// Saves the builder records `select` picks as `builders/<builder>/<name>.json`.
pub async fn save_records(
    opts: &Evidence,
    cx: &Remotes,
    builder: &str,
    endpoint: Option<&str>,
    driver: Option<Driver>,
    select: impl Fn(&[CacheRecord]) -> Vec<String>,
    name: &str,
) -> Result<(), RemoteError> {
    let records = cx.disk_usage(builder, endpoint, driver).await?;
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
    let text = crate::report::json::to_string_pretty(&docs)
        .map_err(|e| RemoteError::local(e.to_string()))?;
    write(
        &opts.dir,
        &format!("builders/{}/{name}.json", sanitize(builder)),
        text.as_bytes(),
    )
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
                    sha256: hex::encode(Sha256::digest(&bytes)),
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
        crate::report::json::to_string_pretty(&manifest)
            .map(String::into_bytes)
            .map_err(std::io::Error::other)?,
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

/// The docker client able to run BuildKit builds: Debian's `/usr/bin/docker` when present.
pub fn docker_client() -> String {
    for candidate in ["/usr/bin/docker", "/usr/local/bin/docker"] {
        if Path::new(candidate).exists() {
            return candidate.to_owned();
        }
    }
    "docker".to_owned()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::plan::{Action, ActionKind, Target};
    use crate::purge::ActionState;

    /// Manifest evidence is fetched `concurrency` at a time per registry, as the purge runs:
    /// one at a time, 2,000 manifests kept an incident's containment waiting on their evidence
    /// for seconds before anything was deleted.
    #[tokio::test]
    async fn manifest_evidence_is_fetched_side_by_side() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let in_flight = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let (in_flight2, most2) = (in_flight.clone(), most.clone());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (in_flight, most) = (in_flight2.clone(), most2.clone());
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 4096];
                    loop {
                        let Ok(n) = stream.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        request.extend_from_slice(&buf[..n]);
                        if !request.windows(4).any(|w| w == b"\r\n\r\n") {
                            continue;
                        }
                        let head = request.starts_with(b"HEAD ");
                        request.clear();
                        let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        in_flight.fetch_sub(1, Ordering::SeqCst);
                        // The registry's own answer for a manifest it does not hold.
                        let body = r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#;
                        let answer = format!(
                            "HTTP/1.1 404 Not Found\r\nDocker-Distribution-API-Version: registry/2.0\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
                            body.len(),
                            if head { "" } else { body }
                        );
                        if stream.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let config = Config::parse(
            &format!(
                "[scope]\nregistries = [\"{host}\"]\n[[registry]]\nhost = \"{host}\"\ninsecure = true\ncredentials = \"anonymous\"\n"
            ),
            Path::new("c.toml"),
        )
        .unwrap();
        let rows: Vec<ActionRow> = (0..8)
            .map(|i| ActionRow {
                id: i,
                seq: i + 1,
                action: Action {
                    kind: ActionKind::DeleteManifest,
                    place: host.clone(),
                    in_scope: true,
                    target: Target::Manifest {
                        registry: host.clone(),
                        repository: "cache".into(),
                        digest: format!("sha256:{:064x}", i),
                        tags: Vec::new(),
                        cache: true,
                        image: false,
                    },
                    reason: "test".into(),
                },
                state: ActionState::Pending,
                attempts: 0,
                outcome: None,
                error: None,
                started_at: None,
                finished_at: None,
                duration_us: None,
                evidence_gap: None,
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let opts = Evidence {
            dir: dir.path().to_owned(),
            blobs: false,
            incident: 1,
            docker: "docker".into(),
            probes: BTreeMap::new(),
            concurrency: 4,
        };
        let collected = collect(&rows, &config, opts).await.unwrap();
        assert!(
            collected.unavailable.is_empty(),
            "{:?}",
            collected.unavailable
        );
        assert_eq!(most.load(Ordering::SeqCst), 4);
    }
}
