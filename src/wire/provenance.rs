//! The provenance JSON Lines format of `import` and `export`
//! (`schema/provenance-line.schema.json`).
//!
//! One JSON object a line, each with `"v": 1` and a `"type"`: `pipeline`, `builder`, `run` or
//! `purge`. A run line carries everything about one build, so a line is one transaction unit.

use serde::{Deserialize, Serialize};

use crate::model::{
    Artifact, Backend, BuilderInfo, DEFAULT_PRUNE_SKEW, Digest, Driver, ImageRef, MountUse,
    PipelineInfo, PurgeClaim, PurgeMethod, PurgeTarget, RecordEvidence, RunRecord, RunStatus,
    SelectivePrune, clean_path, limits, mount_identity,
};
use crate::store::{ExportItem, ImportItem};
use crate::time::{self, Micros};

/// The format version this build reads and writes.
pub const VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Line {
    Pipeline {
        v: u32,
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        project: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        trust_level: Option<String>,
    },
    Builder {
        v: u32,
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        driver: Option<Driver>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        endpoint: Option<String>,
    },
    Run(Box<RunLine>),
    Purge {
        v: u32,
        builder: String,
        /// The mount id, for a mount purge; absent for a prune of the whole builder cache.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mount: Option<String>,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        namespace: String,
        at: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        source: String,
        /// How the purge was done where it was recorded: `executor`, `manual` or `imported`.
        /// A claim: an import stores every purge as `imported`, keeping this to export again.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        method: Option<String>,
        /// Who recorded it there (a claim, like `method`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        author: Option<String>,
        /// When it was recorded there, RFC 3339 (a claim, like `method`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        recorded_at: Option<String>,
        /// A late entry recorded with `mark-purged --force`.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        forced: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// For a builder purge: whether it pruned the builder's build records only, its cache
        /// mounts left (it then cleans none of its mounts). Absent from a line written before
        /// this was kept: a prune an incident recorded is then taken as records-only, since an
        /// incident's prune leaves cache mounts unless asked not to, and any other as whole.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        records_only: Option<bool>,
        /// For a prune of only some of the builder's records: what it removed. Absent from a
        /// records-only prune an incident recorded, it is taken to have removed nothing known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        selective: Option<Box<SelectiveLine>>,
    },
}

/// What a prune of some of a builder's records removed: the records named (BuildKit ids), and
/// every build record used since `since` (RFC 3339, the builder's clock, which may be
/// `skew_seconds` behind a runner's; 300 when absent), or whenever used (`every_record`).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectiveLine {
    pub records: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub every_record: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skew_seconds: Option<u64>,
}

/// The longest clock skew a selective prune line may say it allowed: ten years.
const MAX_SKEW_SECONDS: u64 = 10 * 365 * 24 * 3600;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunLine {
    pub v: u32,
    pub pipeline: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// The run's own trust level (at most its pipeline's ceiling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_level: Option<String>,
    pub run: String,
    #[serde(default)]
    pub step: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builder: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    pub started_at: String,
    pub finished_at: String,
    #[serde(default)]
    pub status: RunStatus,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub imported: Vec<ArtifactWire>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exported: Vec<ArtifactWire>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub produced: Vec<ArtifactWire>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub base_images: Vec<ArtifactWire>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<MountUse>,
    /// Absent when the hook could not see the builder's records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records: Option<RecordEvidence>,
    /// Some of what the build used was over a limit and left out.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// BuildKit's ref of the build, which `collect` matches its history record by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_ref: Option<String>,
}

/// An artifact: a registry reference string (`registry/repo[:tag]@digest`), or an object for
/// the other backends. An object is read strictly: a field it does not know is an error that
/// names it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged, try_from = "serde_json::Value")]
pub enum ArtifactWire {
    Reference(String),
    Other {
        backend: Backend,
        /// The builder for local images; for the other backends the place an import names
        /// (a `gha` cache's repository), which the hook leaves empty.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        locator: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        digest: Option<String>,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        key: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tag: Option<String>,
    },
}

/// The object form of [`ArtifactWire`], as read.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OtherArtifact {
    backend: Backend,
    #[serde(default)]
    locator: String,
    #[serde(default)]
    digest: Option<String>,
    #[serde(default)]
    key: String,
    #[serde(default)]
    tag: Option<String>,
}

impl TryFrom<serde_json::Value> for ArtifactWire {
    type Error = String;

    fn try_from(value: serde_json::Value) -> Result<Self, String> {
        match value {
            serde_json::Value::String(reference) => Ok(Self::Reference(reference)),
            value @ serde_json::Value::Object(_) => {
                let o: OtherArtifact =
                    serde_json::from_value(value).map_err(|e| format!("artifact object: {e}"))?;
                Ok(Self::Other {
                    backend: o.backend,
                    locator: o.locator,
                    digest: o.digest,
                    key: o.key,
                    tag: o.tag,
                })
            }
            _ => Err("an artifact is a reference string or an object".to_owned()),
        }
    }
}

impl ArtifactWire {
    fn into_artifact(self, field: &str) -> Result<Artifact, String> {
        match self {
            Self::Reference(reference) => {
                let parsed = ImageRef::parse(&reference, field).map_err(|e| e.to_string())?;
                Ok(Artifact::registry(&parsed))
            }
            Self::Other {
                backend,
                locator,
                digest,
                key,
                tag,
            } => {
                let digest = digest
                    .map(|d| Digest::parse(&d, field))
                    .transpose()
                    .map_err(|e| e.to_string())?;
                if backend == Backend::Registry {
                    return Err(format!(
                        "`{field}`: registry artifacts are written as reference strings"
                    ));
                }
                Ok(Artifact {
                    backend,
                    locator,
                    digest,
                    key,
                    tag,
                })
            }
        }
    }

    fn from_artifact(artifact: &Artifact) -> Self {
        if artifact.backend == Backend::Registry {
            let mut s = artifact.locator.clone();
            if let Some(tag) = &artifact.tag {
                s.push(':');
                s.push_str(tag);
            }
            if let Some(d) = &artifact.digest {
                s.push('@');
                s.push_str(d.as_str());
            }
            return Self::Reference(s);
        }
        Self::Other {
            backend: artifact.backend,
            locator: artifact.locator.clone(),
            digest: artifact.digest.as_ref().map(|d| d.to_string()),
            key: artifact.key.clone(),
            tag: artifact.tag.clone(),
        }
    }
}

/// Parses one line into what the store takes. The error is the message without the line
/// number, which the caller adds. A pipeline, run, step or builder name must be shown as
/// itself ([`limits::shown_as_itself`]), as every hook and the collector record them.
pub fn parse_line(text: &str) -> Result<ImportItem, String> {
    parse_line_with(text, Names::AsRecordedNow)
}

/// [`parse_line`] for a store's own export (`import --stored-names`): names are taken as the store
/// held them, white space at their ends or another normalization form included, which a store
/// recorded before it refused them.
pub fn parse_stored_line(text: &str) -> Result<ImportItem, String> {
    parse_line_with(text, Names::AsStored)
}

/// How [`parse_line_with`] takes a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Names {
    AsRecordedNow,
    AsStored,
}

fn parse_line_with(text: &str, names: Names) -> Result<ImportItem, String> {
    let shown_as_itself = |field: &str, value: &str| match names {
        Names::AsRecordedNow => {
            limits::shown_as_itself(field, value).map_err(|err| err.to_string())
        }
        Names::AsStored => Ok(()),
    };
    // JSON can only spell a NUL as this escape: the whole line is looked at only when it is
    // there.
    if text.contains("\\u0000") {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
        if let Some(field) = nul_field(&value) {
            return Err(nul_message(&field));
        }
    }
    let line: Line = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    let check_version = |v: u32| {
        if v == VERSION {
            Ok(())
        } else {
            Err(format!(
                "unsupported format version {v} (this cachewarden reads {VERSION})"
            ))
        }
    };
    match line {
        Line::Pipeline {
            v,
            name,
            project,
            trust_level,
        } => {
            check_version(v)?;
            non_empty(&name, "name")?;
            within_limits(&[
                ("name", Some(&name)),
                ("project", project.as_ref()),
                ("trust_level", trust_level.as_ref()),
            ])?;
            shown_as_itself("name", &name)?;
            Ok(ImportItem::Pipeline(PipelineInfo {
                name,
                project,
                trust_level,
            }))
        }
        Line::Builder {
            v,
            name,
            driver,
            endpoint,
        } => {
            check_version(v)?;
            non_empty(&name, "name")?;
            within_limits(&[("name", Some(&name)), ("endpoint", endpoint.as_ref())])?;
            shown_as_itself("name", &name)?;
            Ok(ImportItem::Builder(BuilderInfo {
                name,
                driver,
                endpoint,
            }))
        }
        Line::Purge {
            v,
            builder,
            mount,
            namespace,
            at,
            source,
            method,
            author,
            recorded_at,
            forced,
            reason,
            records_only,
            selective,
        } => {
            check_version(v)?;
            non_empty(&builder, "builder")?;
            if records_only.is_some() && mount.is_some() {
                return Err("records_only is for a prune of a builder, not a mount purge".into());
            }
            if selective.is_some() && mount.is_some() {
                return Err("selective is for a prune of a builder, not a mount purge".into());
            }
            if selective.is_some() && records_only == Some(false) {
                return Err(
                    "a selective prune prunes build records only: records_only is false".into(),
                );
            }
            let executor = method.as_deref() == Some(PurgeMethod::Executor.as_str());
            let records_only = records_only.unwrap_or(executor || selective.is_some());
            let selective = match selective {
                Some(line) => Some(selective_from_line(*line)?),
                // An incident's prune of build records only removed what it named, which a
                // line without it does not say: it is taken to have removed nothing known.
                None if records_only && executor => Some(SelectivePrune {
                    records: Vec::new(),
                    since: None,
                    skew: DEFAULT_PRUNE_SKEW,
                }),
                None => None,
            };
            within_limits(&[
                ("builder", Some(&builder)),
                ("mount", mount.as_ref()),
                ("namespace", Some(&namespace)),
                ("source", Some(&source)),
            ])?;
            let at = time::parse_rfc3339(&at, "at").map_err(|e| e.to_string())?;
            if let Some(method) = &method
                && PurgeMethod::parse(method).is_none()
            {
                return Err(format!(
                    "invalid method `{method}`: expected executor, manual or imported"
                ));
            }
            let recorded_at = recorded_at
                .map(|t| time::parse_rfc3339(&t, "recorded_at").map_err(|e| e.to_string()))
                .transpose()?;
            let claimed = PurgeClaim {
                method,
                author,
                recorded_at,
            };
            let target = match mount {
                Some(mount) => {
                    let (namespace, mount) = mount_identity(&namespace, &mount, false);
                    PurgeTarget::Mount {
                        builder,
                        mount,
                        namespace,
                    }
                }
                None => PurgeTarget::Builder {
                    builder,
                    records_only,
                    selective,
                },
            };
            Ok(ImportItem::Purge {
                target,
                at,
                source,
                forced,
                reason,
                claimed,
            })
        }
        Line::Run(run) => {
            check_version(run.v)?;
            let run = run_from_line(*run)?;
            let checked = match names {
                Names::AsRecordedNow => limits::check(&run),
                Names::AsStored => limits::check_stored(&run),
            };
            checked.map_err(|err| err.to_string())?;
            Ok(ImportItem::Run(Box::new(run)))
        }
    }
}

/// Where `value` holds a NUL character (U+0000), in a string or a key: its path, such as
/// `imported[2]` or `records.created[0].id`. The store keeps no NUL (PostgreSQL's text cannot
/// hold one), so a value with one is refused as input, alike on both engines.
pub fn nul_field(value: &serde_json::Value) -> Option<String> {
    fn walk(value: &serde_json::Value, path: &mut String) -> bool {
        match value {
            serde_json::Value::String(text) => text.contains('\0'),
            serde_json::Value::Array(items) => items.iter().enumerate().any(|(i, item)| {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                let found = walk(item, path);
                if !found {
                    path.truncate(len);
                }
                found
            }),
            serde_json::Value::Object(map) => map.iter().any(|(key, item)| {
                let len = path.len();
                if key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(key);
                } else {
                    // A key of the sender's own: quoted and escaped, as JSON would.
                    path.push_str(&format!(
                        "[{}]",
                        serde_json::to_string(key).unwrap_or_default()
                    ));
                }
                let found = key.contains('\0') || walk(item, path);
                if !found {
                    path.truncate(len);
                }
                found
            }),
            _ => false,
        }
    }
    let mut path = String::new();
    walk(value, &mut path).then_some(path)
}

/// The refusal of a value holding a NUL, naming its field.
pub fn nul_message(field: &str) -> String {
    format!("`{field}` holds a NUL character (U+0000), which the store does not keep")
}

/// Checks names against [`limits::NAME_BYTES`].
/// A selective prune's line as stored: each record id a name within limits, `since` a time.
fn selective_from_line(line: SelectiveLine) -> Result<SelectivePrune, String> {
    if line.every_record && line.since.is_some() {
        return Err("a selective prune has `since` or `every_record`, not both".into());
    }
    for record in &line.records {
        non_empty(record, "selective.records")?;
        within_limits(&[("selective.records", Some(record))])?;
    }
    let since = match (line.every_record, line.since) {
        (true, _) => Some(Micros::MIN),
        (false, Some(since)) => {
            Some(time::parse_rfc3339(&since, "selective.since").map_err(|e| e.to_string())?)
        }
        (false, None) => None,
    };
    let skew = match line.skew_seconds {
        Some(seconds) if seconds > MAX_SKEW_SECONDS => {
            return Err(format!(
                "`selective.skew_seconds` is {seconds}: at most {MAX_SKEW_SECONDS} (ten years)"
            ));
        }
        Some(seconds) => time::seconds(seconds),
        None => DEFAULT_PRUNE_SKEW,
    };
    let mut records = line.records;
    records.sort();
    records.dedup();
    Ok(SelectivePrune {
        records,
        since,
        skew,
    })
}

/// Refuses, in a run a CI job sent (an upload, the collector), a digest, tag or locator on a
/// cache of a backend other than a registry or a local image: such a cache is named by its key
/// (its bucket, account or path are in the key, as the hook writes it), and a digest or tag
/// would make a second cache that prints as the first. A locator (a `gha` cache's repository)
/// only an import of a store's export gives: from a job it would name another repository's
/// cache, which the plan's follow-up would then delete there. A store's own export may hold
/// them (written before this was refused), and imports as it is.
pub fn sent_caches_named_by_key(run: &RunRecord) -> Result<(), String> {
    for (field, list) in limits::lists(run) {
        for artifact in list {
            if matches!(artifact.backend, Backend::Registry | Backend::LocalImage) {
                continue;
            }
            let given = [
                ("digest", artifact.digest.is_some()),
                ("tag", artifact.tag.is_some()),
                ("locator", !artifact.locator.is_empty()),
            ];
            if let Some((name, _)) = given.iter().find(|(_, given)| *given) {
                return Err(format!(
                    "`{field}`: a {} cache a job sends is named by its `key` alone: `{name}` is taken only for local images",
                    artifact.backend.as_str()
                ));
            }
        }
    }
    Ok(())
}

fn within_limits(fields: &[(&str, Option<&String>)]) -> Result<(), String> {
    for (field, value) in fields {
        if let Some(value) = value {
            limits::name(|| (*field).to_owned(), value).map_err(|err| err.to_string())?;
        }
    }
    Ok(())
}

fn non_empty(value: &str, field: &str) -> Result<(), String> {
    if value.trim().is_empty() {
        Err(format!("`{field}` is empty"))
    } else {
        Ok(())
    }
}

fn run_from_line(line: RunLine) -> Result<RunRecord, String> {
    non_empty(&line.pipeline, "pipeline")?;
    non_empty(&line.run, "run")?;
    // Left out, a step or builder is unknown; given, it names something (as `record` has it).
    if let Some(builder) = &line.builder {
        non_empty(builder, "builder")?;
    }
    if !line.step.is_empty() {
        non_empty(&line.step, "step")?;
    }
    for record in line
        .records
        .iter()
        .flat_map(|r| r.created.iter().chain(&r.reused))
    {
        non_empty(&record.id, "records[].id")?;
    }
    if line.run.contains('/') {
        return Err(format!(
            "`run` `{}` contains `/`",
            crate::report::escape::Term(&line.run)
        ));
    }
    let started_at: Micros =
        time::parse_rfc3339(&line.started_at, "started_at").map_err(|e| e.to_string())?;
    let finished_at: Micros =
        time::parse_rfc3339(&line.finished_at, "finished_at").map_err(|e| e.to_string())?;
    if finished_at < started_at {
        return Err(format!(
            "`finished_at` `{}` is before `started_at` `{}`",
            line.finished_at, line.started_at
        ));
    }
    let artifacts = |list: Vec<ArtifactWire>, field: &str| -> Result<Vec<Artifact>, String> {
        list.into_iter().map(|a| a.into_artifact(field)).collect()
    };
    let mounts = line
        .mounts
        .into_iter()
        .map(|mut m| {
            non_empty(&m.id, "mounts[].id")?;
            (m.namespace, m.id) = mount_identity(&m.namespace, &m.id, false);
            m.target = m.target.map(|t| clean_path(&t));
            Ok(m)
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(RunRecord {
        pipeline: PipelineInfo {
            name: line.pipeline,
            project: line.project,
            trust_level: None,
        },
        trust_level: line.trust_level,
        run_id: line.run,
        step: line.step,
        commit: line.commit,
        git_ref: line.git_ref,
        builder: line.builder.map(|name| BuilderInfo {
            name,
            driver: None,
            endpoint: None,
        }),
        started_at,
        finished_at,
        status: line.status,
        imported: artifacts(line.imported, "imported")?,
        exported: artifacts(line.exported, "exported")?,
        produced: artifacts(line.produced, "produced")?,
        base_images: artifacts(line.base_images, "base_images")?,
        mounts,
        records: line.records.map(|mut r| {
            r.created.sort_by(|a, b| a.id.cmp(&b.id));
            r.reused.sort_by(|a, b| a.id.cmp(&b.id));
            // BuildKit says -1 for a size it does not know.
            for record in r.created.iter_mut().chain(&mut r.reused) {
                record.size = record.size.filter(|size| *size >= 0);
            }
            r
        }),
        truncated: line.truncated,
        build_ref: match line.build_ref {
            Some(r) if crate::ingest::history::is_build_ref(&r) => Some(r),
            Some(_) => return Err("`build_ref` is not a BuildKit build ref".to_owned()),
            None => None,
        },
    })
}

/// The line for one exported unit.
pub fn line_of(item: &ExportItem) -> Line {
    match item {
        ExportItem::Pipeline(p) => Line::Pipeline {
            v: VERSION,
            name: p.name.clone(),
            project: p.project.clone(),
            trust_level: p.trust_level.clone(),
        },
        ExportItem::Builder(b) => Line::Builder {
            v: VERSION,
            name: b.name.clone(),
            driver: b.driver,
            endpoint: b.endpoint.clone(),
        },
        ExportItem::Run(run) => Line::Run(Box::new(run_line(run))),
        ExportItem::Purge(purge) => {
            let (builder, mount, namespace, records_only, selective) = match &purge.target {
                PurgeTarget::Builder {
                    builder,
                    records_only,
                    selective,
                } => (
                    builder.clone(),
                    None,
                    String::new(),
                    // A selective prune prunes build records only, whatever a row says.
                    Some(*records_only || selective.is_some()),
                    selective.as_ref().map(|s| {
                        Box::new(SelectiveLine {
                            records: s.records.clone(),
                            every_record: s.every_record(),
                            since: s.used_since().map(time::format),
                            skew_seconds: Some(s.skew_seconds()),
                        })
                    }),
                ),
                PurgeTarget::Mount {
                    builder,
                    mount,
                    namespace,
                } => (
                    builder.clone(),
                    Some(mount.clone()),
                    namespace.clone(),
                    None,
                    None,
                ),
            };
            // An imported purge carries on what its line claimed (nothing, for a line from
            // before provenance), so a chain of stores keeps the origin's word; any other, what
            // this store recorded. Either way the next import stores it as `imported`.
            let (method, author, recorded_at) = match (&purge.claimed, purge.method) {
                (Some(claim), PurgeMethod::Imported) => (
                    claim.method.clone(),
                    claim.author.clone(),
                    claim.recorded_at,
                ),
                (None, PurgeMethod::Imported) => (None, None, None),
                _ => (
                    Some(purge.method.as_str().to_owned()),
                    Some(purge.author.clone()).filter(|a| !a.is_empty()),
                    purge.recorded_at,
                ),
            };
            Line::Purge {
                v: VERSION,
                builder,
                mount,
                namespace,
                at: time::format(purge.at),
                source: purge.source.clone(),
                method,
                author,
                recorded_at: recorded_at.map(time::format),
                forced: purge.forced,
                reason: purge.reason.clone(),
                records_only,
                selective,
            }
        }
    }
}

/// The run line of a record (also what `record --format json` prints).
pub fn run_line(run: &RunRecord) -> RunLine {
    let wires = |list: &[Artifact]| list.iter().map(ArtifactWire::from_artifact).collect();
    RunLine {
        v: VERSION,
        pipeline: run.pipeline.name.clone(),
        project: run.pipeline.project.clone(),
        trust_level: run.trust_level.clone(),
        run: run.run_id.clone(),
        step: run.step.clone(),
        builder: run.builder.as_ref().map(|b| b.name.clone()),
        commit: run.commit.clone(),
        git_ref: run.git_ref.clone(),
        started_at: time::format(run.started_at),
        finished_at: time::format(run.finished_at),
        status: run.status,
        imported: wires(&run.imported),
        exported: wires(&run.exported),
        produced: wires(&run.produced),
        base_images: wires(&run.base_images),
        mounts: run.mounts.clone(),
        records: run.records.clone(),
        truncated: run.truncated,
        build_ref: run.build_ref.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A selective prune's line carries what it removed and the skew it allowed, and reads
    /// back the same; one that pruned since before any time a line can spell is written as
    /// having pruned every record.
    #[test]
    fn selective_prunes_round_trip() {
        let purge = |since: Option<Micros>| {
            ExportItem::Purge(Box::new(crate::model::StoredPurge {
                id: 1,
                target: PurgeTarget::Builder {
                    builder: "ci-1".into(),
                    records_only: true,
                    selective: Some(SelectivePrune {
                        records: vec!["r1".into(), "r2".into()],
                        since,
                        skew: 90_000_000,
                    }),
                },
                at: 1_000_000,
                method: PurgeMethod::Executor,
                author: "me@host".into(),
                recorded_at: Some(1_000_000),
                forced: false,
                reason: None,
                source: "incident 1".into(),
                action: Some((1, 2)),
                claimed: None,
            }))
        };
        let read = |since: Option<Micros>| {
            let text = serde_json::to_string(&line_of(&purge(since))).unwrap();
            let ImportItem::Purge { target, .. } = parse_line(&text).unwrap() else {
                panic!("not a purge: {text}")
            };
            let PurgeTarget::Builder { selective, .. } = target else {
                panic!("not a builder prune: {text}")
            };
            selective.unwrap()
        };
        for since in [None, Some(1_700_000_000_000_000), Some(Micros::MIN)] {
            let selective = read(since);
            assert_eq!(selective.since, since);
            assert_eq!(selective.skew, 90_000_000);
            assert_eq!(selective.records, ["r1", "r2"]);
        }
        // Year -1: no record was used before it.
        let earliest = time::EARLIEST_RFC3339;
        assert_eq!(read(Some(earliest - 1)).since, Some(Micros::MIN));
        assert_eq!(read(Some(earliest)).since, Some(earliest));
    }

    #[test]
    fn run_line_round_trips() {
        let text = r#"{"v":1,"type":"run","pipeline":"web","run":"7-1","step":"Dockerfile","builder":"ci-1","started_at":"2026-01-01T00:00:00Z","finished_at":"2026-01-01T00:05:00Z","imported":["localhost:5000/web:cache@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"],"exported":[{"backend":"gha","key":"web-main"}],"mounts":[{"id":"//root/.cache/pip","sharing":"locked"}]}"#;
        let ImportItem::Run(run) = parse_line(text).unwrap() else {
            panic!("not a run")
        };
        assert_eq!(run.mounts[0].id, "/root/.cache/pip");
        assert_eq!(run.imported[0].locator, "localhost:5000/web");
        assert_eq!(run.imported[0].tag.as_deref(), Some("cache"));
        let again = serde_json::to_string(&Line::Run(Box::new(run_line(&run)))).unwrap();
        let ImportItem::Run(run2) = parse_line(&again).unwrap() else {
            panic!("not a run")
        };
        assert_eq!(run, run2);
    }

    /// A run's build ref survives export and import, and an import cannot smuggle in one that
    /// is not a BuildKit ref.
    #[test]
    fn build_refs_round_trip_and_are_checked() {
        let line = r#"{"v":1,"type":"run","pipeline":"p","run":"1","started_at":"2026-01-01T00:00:00Z","finished_at":"2026-01-01T00:00:00Z","build_ref":"p0axicqckkr3upveqdezycj5u"}"#;
        let ImportItem::Run(run) = parse_line(line).unwrap() else {
            panic!("not a run")
        };
        assert_eq!(run.build_ref.as_deref(), Some("p0axicqckkr3upveqdezycj5u"));
        let again = serde_json::to_string(&Line::Run(Box::new(run_line(&run)))).unwrap();
        assert!(
            again.contains(r#""build_ref":"p0axicqckkr3upveqdezycj5u""#),
            "{again}"
        );
        let bad = line.replace("p0axicqckkr3upveqdezycj5u", "a/../b");
        assert!(parse_line(&bad).unwrap_err().contains("build_ref"));
    }

    #[test]
    fn bad_lines_say_what_is_wrong() {
        assert!(parse_line("{").unwrap_err().contains("invalid JSON"));
        let err = parse_line(r#"{"v":1,"type":"run","pipeline":"p","run":"1","started_at":"now","finished_at":"2026-01-01T00:00:00Z"}"#).unwrap_err();
        assert!(err.contains("`now`"), "{err}");
        let err = parse_line(r#"{"v":2,"type":"pipeline","name":"p"}"#).unwrap_err();
        assert!(err.contains("version 2"), "{err}");
        let err = parse_line(r#"{"v":1,"type":"run","pipeline":"p","run":"1","started_at":"2026-01-01T00:00:00Z","finished_at":"2026-01-01T00:00:00Z","imported":["reg.io/x@sha256:zz"]}"#).unwrap_err();
        assert!(err.contains("sha256:zz"), "{err}");
    }

    /// Unknown fields inside the nested objects of a run line (mounts, builder records, the
    /// records object, artifact objects) are refused, naming the field, as the schema says.
    #[test]
    fn unknown_nested_fields_are_refused() {
        let run = |extra: &str| {
            format!(
                r#"{{"v":1,"type":"run","pipeline":"p","run":"1","builder":"b","started_at":"2026-01-01T00:00:00Z","finished_at":"2026-01-01T00:00:00Z",{extra}}}"#
            )
        };
        for (extra, field) in [
            (r#""mounts":[{"id":"/m","bogus":1}]"#, "bogus"),
            (r#""records":{"created":[{"id":"r","evil":true}]}"#, "evil"),
            (r#""records":{"reused":[],"extra":1}"#, "extra"),
            (
                r#""exported":[{"backend":"gha","key":"k","zzz":"1"}]"#,
                "zzz",
            ),
        ] {
            let err = parse_line(&run(extra)).unwrap_err();
            assert!(
                err.contains(&format!("unknown field `{field}`")),
                "{extra}: {err}"
            );
        }
        for line in [
            r#"{"v":1,"type":"pipeline","name":"p","ceiling":"release"}"#,
            r#"{"v":1,"type":"builder","name":"b","evil":1}"#,
            r#"{"v":1,"type":"purge","builder":"b","at":"2026-01-01T00:00:00Z","evil":1}"#,
        ] {
            let err = parse_line(line).unwrap_err();
            assert!(err.contains("unknown field"), "{line}: {err}");
        }
        let ok = parse_line(&run(
            r#""exported":[{"backend":"gha","key":"k"}],"mounts":[{"id":"/m","readonly":true}]"#,
        ));
        assert!(ok.is_ok(), "{ok:?}");
    }

    /// A cache of a backend other than a registry or a local image is named by its key: a
    /// digest, tag or locator on one a CI job sent is refused, naming the field (a store's own
    /// export takes it as it is); a local image keeps them.
    #[test]
    fn other_caches_take_no_digest_or_tag() {
        let run = |artifact: &str| {
            format!(
                r#"{{"v":1,"type":"run","pipeline":"p","run":"1","builder":"b","started_at":"2026-01-01T00:00:00Z","finished_at":"2026-01-01T00:00:00Z","exported":[{artifact}]}}"#
            )
        };
        let sent = |line: &str| match parse_line(line)? {
            ImportItem::Run(run) => sent_caches_named_by_key(&run),
            _ => Ok(()),
        };
        let digest = format!("sha256:{}", "a".repeat(64));
        for (artifact, field) in [
            (
                format!(r#"{{"backend":"s3","key":"k","digest":"{digest}"}}"#),
                "digest",
            ),
            (
                r#"{"backend":"local","key":"/c","tag":"t"}"#.to_owned(),
                "tag",
            ),
            (r#"{"backend":"gha","key":"k","tag":"t"}"#.to_owned(), "tag"),
            (
                r#"{"backend":"gha","locator":"victim-org/prod","key":"k"}"#.to_owned(),
                "locator",
            ),
        ] {
            assert!(parse_line(&run(&artifact)).is_ok(), "{artifact}");
            let err = sent(&run(&artifact)).unwrap_err();
            assert!(
                err.contains(&format!("is named by its `key` alone: `{field}`")),
                "{artifact}: {err}"
            );
        }
        let image = format!(
            r#"{{"backend":"local-image","locator":"ci-1","key":"web","digest":"{digest}","tag":"v1"}}"#
        );
        assert!(sent(&run(&image)).is_ok());
        assert!(sent(&run(r#"{"backend":"gha","key":"k"}"#)).is_ok());
    }

    /// A run line names its builder, step and builder records as `record` would: a blank one
    /// is refused, naming the field, so that no line goes in that its own export could not
    /// bring back.
    #[test]
    fn blank_names_are_refused() {
        let run = |extra: &str| {
            format!(
                r#"{{"v":1,"type":"run","pipeline":"p","run":"1","started_at":"2026-01-01T00:00:00Z","finished_at":"2026-01-01T00:00:00Z"{extra}}}"#
            )
        };
        for (extra, says) in [
            (r#","builder":"""#, "`builder` is empty"),
            (r#","builder":"  ""#, "`builder` is empty"),
            (r#","step":" ""#, "`step` is empty"),
            (
                r#","records":{"created":[{"id":""}]}"#,
                "`records[].id` is empty",
            ),
        ] {
            let err = parse_line(&run(extra)).unwrap_err();
            assert!(err.contains(says), "{extra}: {err}");
        }
        assert!(parse_line(&run(r#","builder":"b","step":"""#)).is_ok());
        // BuildKit's -1 for a size it does not know is no size.
        let Ok(ImportItem::Run(run)) =
            parse_line(&run(r#","records":{"reused":[{"id":"r","size":-1}]}"#))
        else {
            panic!("refused")
        };
        assert_eq!(run.records.unwrap().reused[0].size, None);
    }

    /// A name with white space at an end, or not in normalization form C, is refused, naming
    /// the field and showing the value: it would print as another name.
    #[test]
    fn names_that_print_as_others_are_refused() {
        let run = |pipeline: &str, extra: &str| {
            format!(
                r#"{{"v":1,"type":"run","pipeline":"{pipeline}","run":"1","started_at":"2026-01-01T00:00:00Z","finished_at":"2026-01-01T00:00:00Z"{extra}}}"#
            )
        };
        for (line, says) in [
            (
                run("web-release ", ""),
                "`pipeline` `web-release ` begins or ends",
            ),
            (
                run("web", r#","builder":" b1""#),
                "`builder` ` b1` begins or ends",
            ),
            (
                run("web", r#","step":"build\u00a0""#),
                "`step` `build\\u{a0}` begins",
            ),
            (
                run("cafe\u{301}", ""),
                "`pipeline` `cafe\u{301}` is not in Unicode normalization form C",
            ),
            (
                r#"{"v":1,"type":"pipeline","name":"web\t"}"#.to_owned(),
                "`name` `web\\t` begins or ends",
            ),
            (
                r#"{"v":1,"type":"builder","name":" ci-1"}"#.to_owned(),
                "`name` ` ci-1` begins or ends",
            ),
        ] {
            let err = parse_line(&line).unwrap_err();
            assert!(err.contains(says), "{line}: {err}");
            // A store's own export keeps the names it held, recorded before they were refused.
            assert!(parse_stored_line(&line).is_ok(), "{line}");
        }
        assert!(parse_line(&run("caf\u{e9}-release", "")).is_ok());
        assert!(parse_line(&run("web release", "")).is_ok());
    }

    /// A run line's `trust_level` is the run's own, not its pipeline's.
    #[test]
    fn a_run_lines_trust_level_is_the_runs() {
        let text = r#"{"v":1,"type":"run","pipeline":"p","trust_level":"untrusted","run":"1","started_at":"2026-01-01T00:00:00Z","finished_at":"2026-01-01T00:00:00Z"}"#;
        let ImportItem::Run(run) = parse_line(text).unwrap() else {
            panic!("not a run")
        };
        assert_eq!(run.trust_level.as_deref(), Some("untrusted"));
        assert_eq!(run.pipeline.trust_level, None);
        let again = serde_json::to_string(&Line::Run(Box::new(run_line(&run)))).unwrap();
        assert!(again.contains(r#""trust_level":"untrusted""#), "{again}");
    }

    /// A NUL anywhere in a line, escaped as JSON spells it, is refused naming its field; text
    /// that only spells the escape (an escaped backslash before `u0000`) is not.
    #[test]
    fn a_nul_is_refused_naming_its_field() {
        let run = |extra: &str| {
            format!(
                r#"{{"v":1,"type":"run","pipeline":"web","run":"7","started_at":"2026-01-01T00:00:00Z","finished_at":"2026-01-01T00:05:00Z"{extra}}}"#
            )
        };
        for (extra, field) in [
            (r#","commit":"ab\u0000cd""#, "`commit`"),
            (
                r#","exported":[{"backend":"gha","key":"a"},{"backend":"gha","key":"x\u0000"}]"#,
                "`exported[1].key`",
            ),
            (
                r#","mounts":[{"id":"/w","target":"/t\u0000"}]"#,
                "`mounts[0].target`",
            ),
        ] {
            let err = parse_line(&run(extra)).unwrap_err();
            assert!(err.starts_with(field) && err.contains("NUL"), "{err}");
        }
        let err =
            parse_line(r#"{"v":1,"type":"pipeline","name":"p","project":"\u0000"}"#).unwrap_err();
        assert!(err.starts_with("`project`"), "{err}");
        let value: serde_json::Value = serde_json::from_str(r#"{"a b\u0000":1}"#).unwrap();
        assert_eq!(nul_field(&value).as_deref(), Some(r#"["a b\u0000"]"#));
        assert!(parse_line(&run(r#","commit":"ab\\u0000cd""#)).is_ok());
    }
}
