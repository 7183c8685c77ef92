//! Build history records as BuildKit's Control API sends them (`ListenBuildHistory`, BuildKit
//! 0.11 and later), checked one by one into the facts `collect` stores.
//!
//! A record is hostile input: any client of the builder chose its frontend attributes. A
//! record whose ref, times or digests do not check out is refused on its own, with a reason;
//! values that only describe the build (build args) are bounded rather than refused.
//!
//! What the records hold depends on the builder. Docker Engine 26's (BuildKit 0.13) docker
//! driver keeps the frontend attributes (`filename`, `target`, `build-arg:*`, `cache-imports`),
//! the build's result descriptor and the step counts, but no exporters and no cache export;
//! buildkitd also keeps its exporters (`name` of an image export) and their response
//! (`containerimage.digest`, `cache.manifest`).

use std::collections::BTreeMap;

use bollard::moby::buildkit::v1::BuildHistoryRecord;
use serde::Serialize;

use crate::model::{Artifact, Backend, Digest, ImageRef, RunStatus, limits::NAME_BYTES};
use crate::time::Micros;

/// Build args kept per record; the rest are counted, not kept.
pub const MAX_BUILD_ARGS: usize = 200;
/// Cache imports, exporters and result descriptors read per record.
pub const MAX_REFERENCES: usize = 100;

/// One finished build from a builder's history, checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryBuild {
    /// BuildKit's ref of the build: the last part of buildx's `buildx.build.ref`.
    pub build_ref: String,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: Micros,
    #[serde(serialize_with = "rfc3339")]
    pub completed_at: Micros,
    pub status: RunStatus,
    /// The frontend (empty for the Dockerfile frontend built into the builder).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub frontend: String,
    /// The Dockerfile's name in its context (`filename`), `Dockerfile` when not given.
    pub dockerfile: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    pub build_args: BTreeMap<String, String>,
    /// Build args over [`MAX_BUILD_ARGS`] or [`NAME_BYTES`], left out.
    #[serde(skip_serializing_if = "is_zero")]
    pub build_args_dropped: usize,
    /// Caches the build imported (`cache-imports`), by the reference it was given.
    #[serde(serialize_with = "names")]
    pub cache_imports: Vec<Artifact>,
    /// Images an image exporter named, pinned to `containerimage.digest` when given.
    #[serde(serialize_with = "names")]
    pub images: Vec<Artifact>,
    /// The build's result: the image (or index) BuildKit made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<Digest>,
    /// The cache export's manifest (`cache.manifest`), when the builder says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_manifest: Option<Digest>,
    pub cached_steps: u32,
    pub total_steps: u32,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn rfc3339<S: serde::Serializer>(at: &Micros, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::time::format(*at))
}

fn names<S: serde::Serializer>(list: &[Artifact], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(list.iter().map(Artifact::display_name))
}

impl HistoryBuild {
    /// The step a run of this build is stored under: `Dockerfile[:target]`.
    /// The step a run made of it is named by: its Dockerfile and target, as a name is taken
    /// (trimmed and composed: the client set them).
    pub fn step(&self) -> String {
        crate::model::limits::normalized_name(&match &self.target {
            Some(target) => format!("{}:{target}", self.dockerfile),
            None => self.dockerfile.clone(),
        })
    }
}

/// Why a record was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("build `{build_ref}`: {reason}")]
pub struct HistoryError {
    /// The record's ref, as far as it can be shown (cut when long).
    pub build_ref: String,
    pub reason: String,
}

/// BuildKit's build refs are random lowercase base-36 strings.
pub fn is_build_ref(value: &str) -> bool {
    !value.is_empty() && value.len() <= 128 && value.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The build ref in buildx's `buildx.build.ref` (`builder/node/ref`), or `None` when it holds
/// none.
pub fn ref_of_buildx(value: &str) -> Option<String> {
    let last = value.rsplit('/').next()?;
    is_build_ref(last).then(|| last.to_owned())
}

/// Checks one record. `builder` names the builder, the locator of the image it made.
pub fn check(record: &BuildHistoryRecord, builder: &str) -> Result<HistoryBuild, HistoryError> {
    let shown: String = record.r#ref.chars().take(64).collect();
    let fail = |reason: String| HistoryError {
        build_ref: shown.clone(),
        reason,
    };
    if !is_build_ref(&record.r#ref) {
        return Err(fail("not a BuildKit build ref".into()));
    }
    let created_at = record
        .created_at
        .as_ref()
        .and_then(|t| micros(t.seconds, t.nanos))
        .ok_or_else(|| fail("no start time".into()))?;
    let completed_at = record
        .completed_at
        .as_ref()
        .and_then(|t| micros(t.seconds, t.nanos))
        .ok_or_else(|| fail("not finished".into()))?;
    if completed_at < created_at {
        return Err(fail("finished before it started".into()));
    }
    let attrs = &record.frontend_attrs;
    let bounded = |key: &str| -> Result<Option<String>, HistoryError> {
        match attrs.get(key) {
            None => Ok(None),
            Some(v) if v.len() > NAME_BYTES => Err(fail(format!(
                "`{key}` is {} bytes, over the limit of {NAME_BYTES}",
                v.len()
            ))),
            Some(v) if v.is_empty() => Ok(None),
            Some(v) => Ok(Some(v.clone())),
        }
    };
    if record.frontend.len() > NAME_BYTES {
        return Err(fail("the frontend name is over the limit".into()));
    }
    let dockerfile = bounded("filename")?.unwrap_or_else(|| "Dockerfile".to_owned());
    let target = bounded("target")?;
    let mut build_args = BTreeMap::new();
    let mut build_args_dropped = 0;
    for (key, value) in attrs {
        if let Some(name) = key.strip_prefix("build-arg:") {
            if build_args.len() < MAX_BUILD_ARGS
                && name.len() <= NAME_BYTES
                && value.len() <= NAME_BYTES
            {
                build_args.insert(name.to_owned(), value.clone());
            } else {
                build_args_dropped += 1;
            }
        }
    }
    let cache_imports = match attrs.get("cache-imports") {
        Some(text) => cache_imports(text).map_err(fail)?,
        None => Vec::new(),
    };
    let digest = |value: &str, what: &str| {
        Digest::parse(value, what).map_err(|_| fail(format!("`{what}` is not a digest")))
    };
    let response = &record.exporter_response;
    let image_digest = match record
        .result
        .as_ref()
        .and_then(|r| r.results.values().next().or(r.result_deprecated.as_ref()))
        .map(|d| d.digest.as_str())
        .filter(|d| !d.is_empty())
        .or(response.get("containerimage.digest").map(String::as_str))
    {
        Some(value) => Some(digest(value, "result digest")?),
        None => None,
    };
    let cache_manifest = match response.get("cache.manifest") {
        Some(text) => {
            let value: serde_json::Value = serde_json::from_str(text)
                .map_err(|_| fail("`cache.manifest` is not a descriptor".into()))?;
            let value = value["digest"]
                .as_str()
                .ok_or_else(|| fail("`cache.manifest` names no digest".into()))?;
            Some(digest(value, "cache.manifest")?)
        }
        None => None,
    };
    let pinned = match response.get("containerimage.digest") {
        Some(value) => Some(digest(value, "containerimage.digest")?),
        None => None,
    };
    let mut images = Vec::new();
    if let Some(digest) = &image_digest {
        images.push(Artifact {
            backend: Backend::LocalImage,
            locator: builder.to_owned(),
            digest: Some(digest.clone()),
            key: String::new(),
            tag: None,
        });
    }
    for exporter in record.exporters.iter().take(MAX_REFERENCES) {
        if exporter.r#type != "image" {
            continue;
        }
        let Some(names) = exporter.attrs.get("name") else {
            continue;
        };
        for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if images.len() > MAX_REFERENCES {
                return Err(fail(format!("over {MAX_REFERENCES} images")));
            }
            let reference = ImageRef::parse(name, "image name")
                .map_err(|_| fail("an exporter names an invalid image".into()))?;
            let mut artifact = Artifact::registry(&reference);
            if artifact.digest.is_none() {
                artifact.digest = pinned.clone();
            }
            images.push(artifact);
        }
    }
    let steps = |n: i32| u32::try_from(n).unwrap_or(0);
    Ok(HistoryBuild {
        build_ref: record.r#ref.clone(),
        created_at,
        completed_at,
        status: if record.error.as_ref().is_some_and(|e| e.code != 0) {
            RunStatus::Failed
        } else {
            RunStatus::Succeeded
        },
        frontend: record.frontend.clone(),
        dockerfile,
        target,
        build_args,
        build_args_dropped,
        cache_imports,
        images,
        image_digest,
        cache_manifest,
        cached_steps: steps(record.num_cached_steps),
        total_steps: steps(record.num_total_steps),
    })
}

/// A protobuf timestamp in microseconds; `None` when unset or out of range.
fn micros(seconds: i64, nanos: i32) -> Option<Micros> {
    if seconds <= 0 || !(0..1_000_000_000).contains(&nanos) {
        return None;
    }
    seconds
        .checked_mul(1_000_000)?
        .checked_add(i64::from(nanos) / 1_000)
}

/// The `cache-imports` attribute: `[{"Type": "registry", "Attrs": {"ref": ...}}, ...]`.
fn cache_imports(text: &str) -> Result<Vec<Artifact>, String> {
    #[derive(serde::Deserialize)]
    struct Entry {
        #[serde(rename = "Type")]
        kind: String,
        #[serde(rename = "Attrs", default)]
        attrs: BTreeMap<String, String>,
    }
    if text.len() > NAME_BYTES * MAX_REFERENCES {
        return Err("`cache-imports` is over the limit".into());
    }
    let entries: Vec<Entry> =
        serde_json::from_str(text).map_err(|_| "`cache-imports` is not a list of caches")?;
    if entries.len() > MAX_REFERENCES {
        return Err(format!("`cache-imports` has over {MAX_REFERENCES} entries"));
    }
    let mut out = Vec::new();
    for entry in entries {
        let other = |backend, key: &str| Artifact {
            backend,
            locator: String::new(),
            digest: None,
            key: key.to_owned(),
            tag: None,
        };
        let attr = |name: &str| entry.attrs.get(name).filter(|v| !v.is_empty());
        let artifact = match entry.kind.as_str() {
            "registry" => {
                let reference = attr("ref").ok_or("a registry cache import names no `ref`")?;
                Artifact::registry(
                    &ImageRef::parse(reference, "cache import")
                        .map_err(|_| "a cache import names an invalid reference")?,
                )
            }
            "gha" => other(
                Backend::Gha,
                attr("scope").map_or("buildkit", String::as_str),
            ),
            "local" => match attr("src") {
                Some(src) => other(Backend::Local, src),
                None => continue,
            },
            // Keyed as the hook keys `--cache-from type=s3|azblob` (`ingest::cache_flag`).
            "s3" => {
                let bucket = attr("bucket").ok_or("an s3 cache import names no `bucket`")?;
                let prefix = attr("prefix").map_or("", String::as_str);
                let name = attr("name").map_or("buildkit", String::as_str);
                let region = attr("region")
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default();
                other(
                    Backend::S3,
                    &format!("s3://{bucket}/{prefix}{name}{region}"),
                )
            }
            "azblob" => other(
                Backend::Azblob,
                &crate::ingest::cache_flag::azblob_key(|name| {
                    entry.attrs.get(name).map(String::as_str)
                }),
            ),
            // A cache this build read that the store cannot name: refused, never dropped.
            other => {
                return Err(format!(
                    "a cache import of type `{}` is not one cachewarden can follow",
                    other.escape_debug()
                ));
            }
        };
        if artifact.locator.len() > NAME_BYTES || artifact.key.len() > NAME_BYTES {
            return Err("a cache import is over the limit".into());
        }
        if !out.contains(&artifact) {
            out.push(artifact);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use bollard::moby::buildkit::v1::{BuildResultInfo, Descriptor, Exporter};

    use super::*;

    fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn record() -> BuildHistoryRecord {
        let mut record = BuildHistoryRecord {
            r#ref: "p0axicqckkr3upveqdezycj5u".into(),
            num_cached_steps: 2,
            num_total_steps: 6,
            ..BuildHistoryRecord::default()
        };
        record.created_at = Some(Default::default());
        record.completed_at = Some(Default::default());
        if let (Some(c), Some(d)) = (record.created_at.as_mut(), record.completed_at.as_mut()) {
            c.seconds = 1_796_369_660;
            d.seconds = 1_796_369_661;
        }
        record.frontend_attrs = HashMap::from([
            ("filename".into(), "app.Dockerfile".into()),
            ("target".into(), "release".into()),
            ("build-arg:X".into(), "1".into()),
            (
                "cache-imports".into(),
                r#"[{"Type":"registry","Attrs":{"ref":"reg.io/app:cache"}},{"Type":"gha","Attrs":{"scope":"main"}}]"#.into(),
            ),
        ]);
        record.result = Some(BuildResultInfo {
            result_deprecated: Some(Descriptor {
                digest: digest('a'),
                ..Descriptor::default()
            }),
            ..BuildResultInfo::default()
        });
        record
    }

    /// What Docker 26 keeps of a build becomes the facts a run is matched and stored by.
    #[test]
    fn a_docker_26_record_gives_its_facts() {
        let build = check(&record(), "b").unwrap();
        assert_eq!(build.created_at, 1_796_369_660_000_000);
        assert_eq!(build.step(), "app.Dockerfile:release");
        assert_eq!(build.build_args["X"], "1");
        let imports: Vec<String> = build
            .cache_imports
            .iter()
            .map(Artifact::display_name)
            .collect();
        assert_eq!(imports, ["reg.io/app:cache", "gha:main"]);
        assert_eq!(build.images[0].display_name(), format!("b#{}", digest('a')));
        assert_eq!((build.cached_steps, build.total_steps), (2, 6));
        assert_eq!(build.status, RunStatus::Succeeded);
    }

    /// A buildkitd record names its images and the digest it pushed them at.
    #[test]
    fn exporters_name_their_images_by_digest() {
        let mut r = record();
        r.exporters = vec![Exporter {
            r#type: "image".into(),
            attrs: HashMap::from([("name".into(), "reg.io/app:1,reg.io/app:latest".into())]),
        }];
        r.exporter_response = HashMap::from([
            ("containerimage.digest".into(), digest('b')),
            (
                "cache.manifest".into(),
                format!(r#"{{"mediaType":"x","digest":"{}","size":1}}"#, digest('c')),
            ),
        ]);
        let build = check(&r, "b").unwrap();
        let images: Vec<String> = build.images.iter().map(Artifact::display_name).collect();
        assert_eq!(
            images[1..],
            [
                format!("reg.io/app@{}", digest('b')),
                format!("reg.io/app@{}", digest('b'))
            ]
        );
        assert_eq!(build.cache_manifest.unwrap().as_str(), digest('c'));
    }

    /// A hostile record is refused on its own, with a reason: a ref that could be anything,
    /// a digest that is not one, an attribute past the bounds, a build still running.
    #[test]
    fn hostile_records_are_refused_one_by_one() {
        let refused = |change: &dyn Fn(&mut BuildHistoryRecord)| {
            let mut r = record();
            change(&mut r);
            check(&r, "b").unwrap_err().reason
        };
        assert!(refused(&|r| r.r#ref = "a/../b\n".into()).contains("build ref"));
        assert!(
            refused(&|r| {
                r.exporter_response
                    .insert("containerimage.digest".into(), "sha256:zz".into());
            })
            .contains("not a digest")
        );
        assert!(
            refused(&|r| {
                r.exporter_response
                    .insert("cache.manifest".into(), r#"{"digest":"md5:1"}"#.into());
            })
            .contains("not a digest")
        );
        assert!(
            refused(&|r| {
                r.frontend_attrs
                    .insert("filename".into(), "x".repeat(NAME_BYTES + 1));
            })
            .contains("over the limit")
        );
        assert!(
            refused(&|r| {
                r.frontend_attrs.insert(
                    "cache-imports".into(),
                    r#"[{"Type":"registry","Attrs":{"ref":"A B"}}]"#.into(),
                );
            })
            .contains("invalid reference")
        );
        assert!(refused(&|r| r.completed_at = None).contains("not finished"));
        let too_many = format!(
            "[{}]",
            vec![r#"{"Type":"gha","Attrs":{"scope":"s"}}"#; MAX_REFERENCES + 1].join(",")
        );
        assert!(
            refused(&|r| {
                r.frontend_attrs
                    .insert("cache-imports".into(), too_many.clone());
            })
            .contains("entries")
        );
    }

    /// A build that read an s3 or azblob cache keeps that import, under the key the hook
    /// gives it, and one that read a cache of a type it cannot name is refused, never kept
    /// with the import silently dropped (a trace would miss the taint it carried).
    #[test]
    fn every_cache_import_is_kept_or_the_record_refused() {
        let mut r = record();
        r.frontend_attrs.insert(
            "cache-imports".into(),
            r#"[{"Type":"s3","Attrs":{"bucket":"b","name":"web","region":"eu-west-1"}},
                {"Type":"azblob","Attrs":{"account_url":"https://a.blob","name":"c"}}]"#
                .into(),
        );
        let build = check(&r, "b").unwrap();
        let hook = |flag: &str| {
            crate::commands::record::artifact_of_spec(
                &crate::ingest::cache_flag::parse(flag, "--cache-from").unwrap(),
            )
            .unwrap()
        };
        assert_eq!(
            build.cache_imports,
            vec![
                hook("type=s3,region=eu-west-1,bucket=b,name=web"),
                hook("type=azblob,account_url=https://a.blob,name=c"),
            ]
        );
        r.frontend_attrs.insert(
            "cache-imports".into(),
            r#"[{"Type":"evil","Attrs":{"ref":"x"}}]"#.into(),
        );
        let err = check(&r, "b").unwrap_err();
        assert!(err.reason.contains("`evil`"), "{err}");
    }

    /// Build args are bounded, not refused: they describe a build, they do not taint one.
    #[test]
    fn build_args_are_bounded() {
        let mut r = record();
        for i in 0..MAX_BUILD_ARGS + 5 {
            r.frontend_attrs
                .insert(format!("build-arg:A{i}"), "v".into());
        }
        r.frontend_attrs
            .insert("build-arg:X".into(), "v".repeat(NAME_BYTES + 1));
        let build = check(&r, "b").unwrap();
        assert_eq!(build.build_args.len(), MAX_BUILD_ARGS);
        assert_eq!(build.build_args_dropped, 6);
    }

    /// buildx's `builder/node/ref` holds the ref; anything else holds none.
    #[test]
    fn buildx_refs_give_their_last_part() {
        assert_eq!(
            ref_of_buildx("default/default/p0axicqckkr3upveqdezycj5u").as_deref(),
            Some("p0axicqckkr3upveqdezycj5u")
        );
        assert_eq!(ref_of_buildx("a/b/"), None);
        assert_eq!(ref_of_buildx("a/b/x y"), None);
    }
}
