//! buildx `--metadata-file` JSON and the SLSA provenance inside it.
//!
//! buildx writes BuildKit's exporter response as one JSON object. The keys read here:
//!
//! | key | value |
//! | --- | --- |
//! | `containerimage.digest` | digest of the exported manifest, or of the index for a multi-platform build |
//! | `containerimage.descriptor` | OCI descriptor (`mediaType`, `digest`, `size`) of that manifest or index |
//! | `containerimage.config.digest` | digest of the image config (single-platform builds) |
//! | `image.name` | the exported names, comma-separated (the docker driver of Docker 20.10 writes none) |
//! | `buildx.build.ref` | the build record, `builder/node/ref` |
//! | `buildx.build.provenance` | the SLSA provenance predicate, v0.2 or v1 shape |
//! | `cache.manifest` | OCI descriptor of the exported cache manifest, as a JSON string |
//!
//! Each key may carry a `/<platform>` suffix: for a multi-platform build buildx writes one
//! `buildx.build.provenance/linux/amd64` (and so on) per platform, and the image keys are
//! grouped by their suffix the same way. Other keys are ignored. buildx leaves a value it could
//! not decode as the base64 string BuildKit sent, so an object may also arrive as base64 or as
//! a JSON string.
//!
//! From provenance:
//! - base images are the `pkg:docker/...` package URLs among `materials` (v0.2) or
//!   `buildDefinition.resolvedDependencies` (v1), with their `sha256` digest; git, HTTP and
//!   other materials are skipped;
//! - cache mounts are the `mountType` 3 mounts of exec ops in `buildConfig.llbDefinition`
//!   (v0.2) or `buildDefinition.internalParameters.buildConfig.llbDefinition` (v1). Only
//!   provenance made with `mode=max` has that definition, and buildx copies it into the
//!   metadata file only with `BUILDX_METADATA_PROVENANCE=max`. Mount ids are in LLB form,
//!   `<namespace>/<id>`, with the namespace from the `build-arg:BUILDKIT_CACHE_MOUNT_NS` arg.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::ingest::IngestError;
use crate::model::{Digest, ImageRef, MountUse, Sharing, mount_identity};

const IMAGE_DIGEST_KEY: &str = "containerimage.digest";
const CONFIG_DIGEST_KEY: &str = "containerimage.config.digest";
const DESCRIPTOR_KEY: &str = "containerimage.descriptor";
const IMAGE_NAME_KEY: &str = "image.name";
const BUILD_REF_KEY: &str = "buildx.build.ref";
const PROVENANCE_KEY: &str = "buildx.build.provenance";
const CACHE_MANIFEST_KEY: &str = "cache.manifest";
const CACHE_MOUNT_NS_ARG: &str = "build-arg:BUILDKIT_CACHE_MOUNT_NS";
/// `pb.MountType.CACHE` in BuildKit's LLB.
const MOUNT_TYPE_CACHE: u64 = 3;

/// An OCI content descriptor: `containerimage.descriptor`, `cache.manifest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: Option<u64>,
}

/// One image a build exported: the unsuffixed keys, and one per platform suffix found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageOutput {
    /// `image.name`, split at commas.
    pub names: Vec<String>,
    /// `containerimage.digest`, else the digest of `containerimage.descriptor`.
    pub digest: Option<Digest>,
    /// `containerimage.config.digest`.
    pub config_digest: Option<Digest>,
    /// `containerimage.descriptor`: its media type tells a manifest from an index.
    pub descriptor: Option<Descriptor>,
    /// The platform suffix of the keys, for multi-platform builds.
    pub platform: Option<String>,
}

/// What the metadata file says about one build.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildMetadata {
    pub images: Vec<ImageOutput>,
    /// `buildx.build.ref`.
    pub build_ref: Option<String>,
    /// Base images from provenance `materials` / `resolvedDependencies`: reference and digest.
    pub base_images: Vec<(String, Option<Digest>)>,
    /// Cache mounts from mode=max provenance, ids normalized to the Dockerfile form.
    pub cache_mounts: Vec<MountUse>,
    /// `cache.manifest`: the cache manifest a `--cache-to` export wrote.
    pub cache_manifest: Option<Descriptor>,
}

/// Parses the metadata JSON; `source` names the file in errors.
pub fn parse(text: &str, source: &str) -> Result<BuildMetadata, IngestError> {
    let fail = |message: String| IngestError::new(source, None, message);
    let top: Value =
        serde_json::from_str(text).map_err(|e| fail(format!("malformed JSON: {e}")))?;
    let Value::Object(top) = top else {
        return Err(fail(format!(
            "expected a JSON object at the top level, found {}",
            describe(&top)
        )));
    };

    let mut metadata = BuildMetadata::default();
    let mut images: BTreeMap<Option<String>, ImageOutput> = BTreeMap::new();
    let mut provenances = Vec::new();
    for (key, value) in &top {
        if let Some((field, platform)) = image_key(key) {
            let image = images
                .entry(platform.map(str::to_owned))
                .or_insert_with(|| ImageOutput {
                    platform: platform.map(str::to_owned),
                    ..ImageOutput::default()
                });
            read_image_field(field, key, value, image).map_err(fail)?;
        } else if platform_suffix(key, PROVENANCE_KEY).is_some() {
            provenances.push((key.as_str(), value));
        } else if key == BUILD_REF_KEY {
            metadata.build_ref = string_value(key, value).map_err(fail)?.map(str::to_owned);
        } else if key == CACHE_MANIFEST_KEY {
            metadata.cache_manifest = json_object(key, value)
                .and_then(|map| map.map(|map| descriptor(key, &map)).transpose())
                .map_err(fail)?;
        }
    }

    metadata.images = images
        .into_values()
        .map(|mut image| {
            if image.digest.is_none() {
                image.digest = image.descriptor.as_ref().map(|d| d.digest.clone());
            }
            image
        })
        .collect();
    provenances.sort_by_key(|(key, _)| *key);
    for (key, value) in provenances {
        read_provenance(key, value, &mut metadata).map_err(fail)?;
    }
    Ok(metadata)
}

/// `Some(None)` when `key` is `prefix`, `Some(Some(platform))` when it is `prefix/platform`.
fn platform_suffix<'a>(key: &'a str, prefix: &str) -> Option<Option<&'a str>> {
    let rest = key.strip_prefix(prefix)?;
    if rest.is_empty() {
        return Some(None);
    }
    rest.strip_prefix('/').filter(|p| !p.is_empty()).map(Some)
}

/// The image key `key` is, with its platform suffix.
fn image_key(key: &str) -> Option<(&'static str, Option<&str>)> {
    [
        IMAGE_DIGEST_KEY,
        CONFIG_DIGEST_KEY,
        DESCRIPTOR_KEY,
        IMAGE_NAME_KEY,
    ]
    .into_iter()
    .find_map(|field| platform_suffix(key, field).map(|platform| (field, platform)))
}

fn read_image_field(
    field: &str,
    key: &str,
    value: &Value,
    image: &mut ImageOutput,
) -> Result<(), String> {
    match field {
        IMAGE_DIGEST_KEY => {
            image.digest = string_value(key, value)?
                .map(|d| parse_digest(d, key))
                .transpose()?;
        }
        CONFIG_DIGEST_KEY => {
            image.config_digest = string_value(key, value)?
                .map(|d| parse_digest(d, key))
                .transpose()?;
        }
        DESCRIPTOR_KEY => {
            image.descriptor = json_object(key, value)?
                .map(|map| descriptor(key, &map))
                .transpose()?;
        }
        _ => {
            image.names = string_value(key, value)?
                .map(|names| {
                    names
                        .split(',')
                        .map(str::trim)
                        .filter(|n| !n.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
        }
    }
    Ok(())
}

/// A string value; `null` and empty strings are absent.
fn string_value<'a>(key: &str, value: &'a Value) -> Result<Option<&'a str>, String> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.trim()).filter(|s| !s.is_empty())),
        other => Err(format!(
            "`{key}` must be a string, found {}",
            describe(other)
        )),
    }
}

/// An object value, given as an object, a JSON string or base64 of JSON; `null` and empty
/// strings are absent.
fn json_object<'a>(
    key: &str,
    value: &'a Value,
) -> Result<Option<Cow<'a, Map<String, Value>>>, String> {
    let not_object = || format!("`{key}` must be a JSON object, found {}", describe(value));
    match value {
        Value::Null => Ok(None),
        Value::Object(map) => Ok(Some(Cow::Borrowed(map))),
        Value::String(text) => {
            let text = text.trim();
            if text.is_empty() {
                return Ok(None);
            }
            let bytes = if text.starts_with('{') {
                Cow::Borrowed(text.as_bytes())
            } else {
                Cow::Owned(decode_base64(text).ok_or_else(not_object)?)
            };
            match serde_json::from_slice(&bytes) {
                Ok(Value::Object(map)) => Ok(Some(Cow::Owned(map))),
                _ => Err(not_object()),
            }
        }
        _ => Err(not_object()),
    }
}

fn descriptor(key: &str, map: &Map<String, Value>) -> Result<Descriptor, String> {
    let digest = match map.get("digest") {
        Some(Value::String(d)) => parse_digest(d, &format!("{key} digest"))?,
        Some(other) => {
            return Err(format!(
                "`{key}` digest must be a string, found {}",
                describe(other)
            ));
        }
        None => {
            return Err(format!("`{key}` is a descriptor without a `digest`"));
        }
    };
    Ok(Descriptor {
        media_type: map
            .get("mediaType")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        digest,
        size: map.get("size").and_then(Value::as_u64),
    })
}

fn parse_digest(value: &str, what: &str) -> Result<Digest, String> {
    Digest::parse(value, what).map_err(|e| e.to_string())
}

/// The value's JSON type and a short excerpt, for error messages.
fn describe(value: &Value) -> String {
    const MAX: usize = 60;
    let kind = match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    let text = value.to_string();
    if text.chars().count() > MAX {
        format!("{kind} `{}…`", text.chars().take(MAX).collect::<String>())
    } else {
        format!("{kind} `{text}`")
    }
}

/// Standard base64 with padding; `None` for anything else.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(4) {
        return None;
    }
    let body = text.trim_end_matches('=');
    if text.len() - body.len() > 2 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for byte in body.bytes() {
        let sextet = match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(sextet);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// The first of `names` that `value` has as a field.
fn field<'a>(value: &'a Value, names: &[&str]) -> Option<&'a Value> {
    names.iter().find_map(|name| value.get(*name))
}

fn lookup<'a>(start: Option<&'a Value>, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(start?, |value, name| value.get(*name))
}

fn read_provenance(key: &str, value: &Value, out: &mut BuildMetadata) -> Result<(), String> {
    let Some(predicate) = json_object(key, value)? else {
        return Ok(());
    };
    let (args, steps, dependencies, dependencies_name) = match predicate.get("buildDefinition") {
        Some(definition) => (
            lookup(Some(definition), &["externalParameters", "request", "args"]),
            lookup(
                Some(definition),
                &["internalParameters", "buildConfig", "llbDefinition"],
            ),
            definition.get("resolvedDependencies"),
            "resolvedDependencies",
        ),
        None => (
            lookup(predicate.get("invocation"), &["parameters", "args"]),
            lookup(predicate.get("buildConfig"), &["llbDefinition"]),
            predicate.get("materials"),
            "materials",
        ),
    };

    for (i, dependency) in dependencies
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let what = format!("{key} {dependencies_name}[{i}]");
        let Some(uri) = dependency.get("uri").and_then(Value::as_str) else {
            continue;
        };
        let Some((reference, purl_digest)) = docker_purl(uri, &what)? else {
            continue;
        };
        let digest = material_digest(dependency.get("digest"), &what)?.or(purl_digest);
        let entry = (reference, digest);
        if !out.base_images.contains(&entry) {
            out.base_images.push(entry);
        }
    }

    let namespace = args
        .and_then(|args| args.get(CACHE_MOUNT_NS_ARG))
        .and_then(Value::as_str)
        .unwrap_or_default();
    for step in steps.and_then(Value::as_array).into_iter().flatten() {
        let exec = field(step, &["op", "Op"])
            .and_then(|op| field(op, &["Op", "op"]))
            .and_then(|op| field(op, &["exec", "Exec"]));
        let Some(mounts) = exec
            .and_then(|e| field(e, &["mounts", "Mounts"]))
            .and_then(Value::as_array)
        else {
            continue;
        };
        let step_id = step.get("id").and_then(Value::as_str).unwrap_or("?");
        for (j, mount) in mounts.iter().enumerate() {
            let what = format!("{key} llbDefinition step `{step_id}` mounts[{j}]");
            if let Some(mount) = cache_mount(mount, namespace, &what)?
                && !out.cache_mounts.contains(&mount)
            {
                out.cache_mounts.push(mount);
            }
        }
    }
    Ok(())
}

/// The digest of a material's `digest` set: `sha256`, else `sha512`.
fn material_digest(set: Option<&Value>, what: &str) -> Result<Option<Digest>, String> {
    let Some(set) = set else {
        return Ok(None);
    };
    for algorithm in ["sha256", "sha512"] {
        match set.get(algorithm) {
            None => {}
            Some(Value::String(hex)) => {
                return parse_digest(&format!("{algorithm}:{hex}"), &format!("{what} digest"))
                    .map(Some);
            }
            Some(other) => {
                return Err(format!(
                    "`{what}` digest `{algorithm}` must be a string, found {}",
                    describe(other)
                ));
            }
        }
    }
    Ok(None)
}

/// Decodes a `pkg:docker/...` package URL into a normalized reference without digest, and the
/// digest the URL pins, if any. Other URLs give `None`.
fn docker_purl(uri: &str, what: &str) -> Result<Option<(String, Option<Digest>)>, String> {
    let Some(rest) = uri.strip_prefix("pkg:") else {
        return Ok(None);
    };
    let Some((kind, rest)) = rest.trim_start_matches('/').split_once('/') else {
        return Ok(None);
    };
    if !kind.eq_ignore_ascii_case("docker") {
        return Ok(None);
    }
    let rest = rest.split_once('#').map_or(rest, |(rest, _)| rest);
    let (rest, qualifiers) = rest.split_once('?').unwrap_or((rest, ""));
    let (path, version) = match rest.rsplit_once('@') {
        Some((path, version)) => (path, percent_decode(version)),
        None => (rest, String::new()),
    };
    let segments: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    if segments.is_empty() {
        return Err(format!(
            "invalid {what} `{uri}`: the package URL names no image"
        ));
    }

    let mut repository_url = String::new();
    let mut qualifier_digest = None;
    for pair in qualifiers.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name.to_ascii_lowercase().as_str() {
            "repository_url" => repository_url = percent_decode(value),
            "digest" => qualifier_digest = Some(percent_decode(value)),
            _ => {}
        }
    }

    let mut name = segments.join("/");
    let host = repository_url
        .split_once("://")
        .map_or(repository_url.as_str(), |(_, host)| host)
        .trim_end_matches('/');
    if !host.is_empty() {
        name = format!("{host}/{name}");
    }
    // A version with a colon is a digest; tags cannot contain one.
    let (tag, digest) = match version {
        v if v.contains(':') => (None, Some(v)),
        v if v.is_empty() => (None, qualifier_digest),
        v => (Some(v), qualifier_digest),
    };
    let text = match &tag {
        Some(tag) => format!("{name}:{tag}"),
        None => name,
    };
    let reference = ImageRef::parse(&text, what)
        .map_err(|e| format!("invalid {what} `{uri}`: {}", e.reason))?;
    let digest = digest
        .map(|d| parse_digest(&d, &format!("{what} uri")))
        .transpose()?;
    let reference = ImageRef {
        digest: None,
        ..reference
    };
    Ok(Some((reference.to_string(), digest)))
}

/// Decodes `%XX` escapes; anything that is not one stays as it is.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A cache mount of an exec op, `None` for other mounts.
fn cache_mount(mount: &Value, namespace: &str, what: &str) -> Result<Option<MountUse>, String> {
    let is_cache = match field(mount, &["mountType", "MountType"]) {
        Some(Value::Number(n)) => n.as_u64() == Some(MOUNT_TYPE_CACHE),
        Some(Value::String(s)) => s.eq_ignore_ascii_case("cache"),
        _ => false,
    };
    if !is_cache {
        return Ok(None);
    }
    let Some(options) = field(mount, &["cacheOpt", "CacheOpt"]) else {
        return Ok(None);
    };
    let Some(id) = field(options, &["ID", "id"])
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
    else {
        return Ok(None);
    };
    let sharing = match field(options, &["sharing", "Sharing"]) {
        None | Some(Value::Null) => Sharing::Shared,
        Some(value) => match (
            value.as_u64(),
            value.as_str().map(str::to_ascii_lowercase).as_deref(),
        ) {
            (Some(0), _) | (_, Some("shared")) => Sharing::Shared,
            (Some(1), _) | (_, Some("private")) => Sharing::Private,
            (Some(2), _) | (_, Some("locked")) => Sharing::Locked,
            _ => {
                return Err(format!(
                    "invalid {what} cacheOpt sharing {}: expected 0 (shared), 1 (private) or 2 (locked)",
                    describe(value)
                ));
            }
        },
    };
    let (namespace, id) = mount_identity(namespace, id, true);
    Ok(Some(MountUse {
        id,
        namespace,
        target: field(mount, &["dest", "Dest"])
            .and_then(Value::as_str)
            .filter(|d| !d.is_empty())
            .map(str::to_owned),
        sharing,
        readonly: field(mount, &["readonly", "Readonly"])
            .and_then(Value::as_bool)
            .unwrap_or(false),
        ..MountUse::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(hex: &str) -> Digest {
        Digest::parse(&format!("sha256:{hex}"), "test").unwrap()
    }

    fn mount(
        id: &str,
        namespace: &str,
        target: &str,
        sharing: Sharing,
        readonly: bool,
    ) -> MountUse {
        MountUse {
            id: id.to_owned(),
            namespace: namespace.to_owned(),
            target: Some(target.to_owned()),
            sharing,
            readonly,
            ..MountUse::default()
        }
    }

    /// A single-platform build with SLSA v0.2 mode=max provenance yields its image, base
    /// image, cache manifest and both cache mounts, each mount once.
    #[test]
    fn single_platform_max_provenance() {
        let text = include_str!("../../tests/fixtures/metadata/single-platform-max.json");
        let md = parse(text, "metadata.json").unwrap();

        assert_eq!(md.images.len(), 1);
        let image = &md.images[0];
        assert_eq!(
            image.names,
            [
                "registry.acme.internal/web/api:3f1c2b9",
                "registry.acme.internal/web/api:main"
            ]
        );
        let manifest = digest("b29814cf5792e684cd75d6a7fce7a67a11887e312f87ca2ac2496d81f365ff72");
        assert_eq!(image.digest.as_ref(), Some(&manifest));
        assert_eq!(
            image.config_digest,
            Some(digest(
                "e67d23e7820c49a8051dac2831f38290f5e72f66c8db5079eeb60d82f14894c0"
            ))
        );
        let descriptor = image.descriptor.as_ref().unwrap();
        assert_eq!(
            descriptor.media_type,
            "application/vnd.oci.image.manifest.v1+json"
        );
        assert_eq!(descriptor.digest, manifest);
        assert_eq!(descriptor.size, Some(1214));
        assert_eq!(image.platform, None);

        assert_eq!(
            md.build_ref.as_deref(),
            Some("ci-builder/ci-builder0/q8k3v0r5x2m7w1n4p6t9y3b5d")
        );
        assert_eq!(
            md.base_images,
            [(
                "docker.io/library/python:3.12-slim".to_owned(),
                Some(digest(
                    "11a4a60b518bf24989d481468076e5d5982884626aed9faeb35b8576fcd223e1"
                ))
            )]
        );
        assert_eq!(
            md.cache_mounts,
            [
                mount("apt", "", "/var/cache/apt", Sharing::Locked, false),
                mount(
                    "/root/.cache/pip",
                    "",
                    "/root/.cache/pip",
                    Sharing::Shared,
                    false
                ),
            ]
        );
        let cache = md.cache_manifest.unwrap();
        assert_eq!(cache.media_type, "application/vnd.oci.image.index.v1+json");
        assert_eq!(
            cache.digest,
            digest("b65dd6cd0c6727277e0a3e9ef9cea0bec3b2908e13103c5a697b99b1f40380ab")
        );
        assert_eq!(cache.size, Some(1823));
    }

    /// The SLSA v1 shape gives base images from `resolvedDependencies` and cache mounts from
    /// `internalParameters`, with the `BUILDKIT_CACHE_MOUNT_NS` namespace stripped from ids.
    #[test]
    fn slsa_v1_provenance() {
        let text = include_str!("../../tests/fixtures/metadata/slsa-v1.json");
        let md = parse(text, "metadata.json").unwrap();

        assert_eq!(md.images.len(), 1);
        assert_eq!(md.images[0].names, ["ghcr.io/acme/storefront:main"]);
        assert_eq!(
            md.images[0].digest,
            Some(digest(
                "8207b7d67cd4f97a0fb6a77632e06819e69b24e7ce76619fb661c565f736aa2e"
            ))
        );
        assert_eq!(
            md.base_images,
            [
                (
                    "docker.io/library/node:20-alpine".to_owned(),
                    Some(digest(
                        "545ea538461003efdc8c81c244531b003f6f26cfccf6c0073b3239fdedf49446"
                    ))
                ),
                (
                    "docker.io/docker/dockerfile:1.7".to_owned(),
                    Some(digest(
                        "770233427ec02022bb5e3b02d1f5a263396808a6e29e3a4de0171f5f56b23bb2"
                    ))
                ),
            ]
        );
        assert_eq!(
            md.cache_mounts,
            [
                mount(
                    "/root/.npm",
                    "storefront",
                    "/root/.npm",
                    Sharing::Private,
                    false
                ),
                mount(
                    "next-build",
                    "storefront",
                    "/srv/.next/cache",
                    Sharing::Shared,
                    true
                ),
            ]
        );
        assert_eq!(md.cache_manifest, None);
    }

    /// A multi-platform build reports the index once, reads every per-platform provenance key
    /// and keeps each base image digest once; min-mode provenance gives no mounts.
    #[test]
    fn multi_platform_provenance_keys() {
        let text = include_str!("../../tests/fixtures/metadata/multi-platform.json");
        let md = parse(text, "metadata.json").unwrap();

        assert_eq!(md.images.len(), 1);
        let image = &md.images[0];
        assert_eq!(image.platform, None);
        assert_eq!(image.names, ["localhost:5000/tools/bb:latest"]);
        assert_eq!(image.config_digest, None);
        assert_eq!(
            image.descriptor.as_ref().map(|d| d.media_type.as_str()),
            Some("application/vnd.oci.image.index.v1+json")
        );
        assert_eq!(
            md.base_images,
            [
                (
                    "docker.io/library/busybox:latest".to_owned(),
                    Some(digest(
                        "0fb4e9f09fda583255fbf1e53c948ce5a9bd974cc3e020acf7269d0c3619c103"
                    ))
                ),
                (
                    "docker.io/library/alpine:3.20".to_owned(),
                    Some(digest(
                        "2a517c2f6d3a4ad0c25137d44829ccec2785334123ef37e881abb91eed1d4659"
                    ))
                ),
                (
                    "docker.io/library/alpine:3.20".to_owned(),
                    Some(digest(
                        "fcaab457879d3e279c75ae13d87bda6b4dcd7beb19cec184304137c660688794"
                    ))
                ),
            ]
        );
        assert!(md.cache_mounts.is_empty());
    }

    /// A file with only a digest and a name parses, with nothing else invented.
    #[test]
    fn minimal_metadata() {
        let text = include_str!("../../tests/fixtures/metadata/minimal.json");
        let md = parse(text, "metadata.json").unwrap();
        assert_eq!(
            md,
            BuildMetadata {
                images: vec![ImageOutput {
                    names: vec!["docker.io/acme/worker:1.4.2".to_owned()],
                    digest: Some(digest(
                        "43385991f0be5fed6db7fb640c5f510d41bcaac6ecca6c842a0c2a2d2d2bf510"
                    )),
                    ..ImageOutput::default()
                }],
                ..BuildMetadata::default()
            }
        );
    }

    /// Image keys with a `/<platform>` suffix group into one output per platform, after the
    /// unsuffixed one, and a longer key is not mistaken for a suffixed shorter one.
    #[test]
    fn platform_suffixed_image_keys() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let c = format!("sha256:{}", "c".repeat(64));
        let text = serde_json::json!({
            "containerimage.digest": a,
            "containerimage.digest/linux/arm64": c,
            "containerimage.config.digest/linux/arm64": b,
            "image.name/linux/arm64": "reg.io/app:arm",
            "containerimage.digest/linux/amd64": b,
            "containerimage.config": "eyJ9",
            "containerimage.digestive": "not a digest",
        })
        .to_string();
        let md = parse(&text, "m.json").unwrap();
        let platforms: Vec<_> = md.images.iter().map(|i| i.platform.as_deref()).collect();
        assert_eq!(platforms, [None, Some("linux/amd64"), Some("linux/arm64")]);
        assert_eq!(
            md.images[0].digest.as_ref().map(Digest::as_str),
            Some(a.as_str())
        );
        assert_eq!(
            md.images[1].digest.as_ref().map(Digest::as_str),
            Some(b.as_str())
        );
        let arm = &md.images[2];
        assert_eq!(arm.digest.as_ref().map(Digest::as_str), Some(c.as_str()));
        assert_eq!(
            arm.config_digest.as_ref().map(Digest::as_str),
            Some(b.as_str())
        );
        assert_eq!(arm.names, ["reg.io/app:arm"]);
    }

    /// Every form of docker package URL BuildKit and the purl spec write decodes to a
    /// reference `ImageRef` accepts; other package types and URLs are not base images.
    #[test]
    fn docker_package_urls() {
        let hex = "d".repeat(64);
        let pinned = Some(digest(&hex));
        let cases = [
            (
                "pkg:docker/busybox@latest?platform=linux%2Famd64",
                "docker.io/library/busybox:latest",
                None,
            ),
            (
                "pkg:docker/docker.io/library/busybox@1.36?platform=linux%2Farm%2Fv7",
                "docker.io/library/busybox:1.36",
                None,
            ),
            (
                "pkg:docker/ghcr.io/acme/tools/base@v2",
                "ghcr.io/acme/tools/base:v2",
                None,
            ),
            (
                "pkg:docker/localhost%3A5000/team/app@dev",
                "localhost:5000/team/app:dev",
                None,
            ),
            (
                "pkg:docker/customer/dockerimage@sha256%3AHEX?repository_url=gcr.io",
                "gcr.io/customer/dockerimage",
                pinned.clone(),
            ),
            (
                "pkg:docker/alpine?digest=sha256%3AHEX&platform=linux%2Famd64",
                "docker.io/library/alpine",
                pinned.clone(),
            ),
            (
                "pkg:docker/alpine@3.19?digest=sha256:HEX",
                "docker.io/library/alpine:3.19",
                pinned.clone(),
            ),
            (
                "pkg:docker/team/app@1.0?repository_url=https://registry.acme.io/",
                "registry.acme.io/team/app:1.0",
                None,
            ),
            (
                "pkg:docker/team/app@sha256%3AHEX",
                "docker.io/team/app",
                pinned.clone(),
            ),
        ];
        for (uri, reference, digest) in cases {
            let uri = uri.replace("HEX", &hex);
            let (got, got_digest) = docker_purl(&uri, "m").unwrap().unwrap();
            assert_eq!(got, reference, "{uri}");
            assert!(ImageRef::parse(&got, "m").is_ok(), "{uri}");
            assert_eq!(got_digest, digest, "{uri}");
        }
        for other in [
            "pkg:oci/app@sha256%3Aabc?repository_url=localhost",
            "https://github.com/acme/web.git#main",
            "https://example.com/tool.tar.gz",
            "git://example.com/repo",
        ] {
            assert_eq!(docker_purl(other, "m"), Ok(None), "{other}");
        }
        for bad in [
            "pkg:docker/",
            "pkg:docker/Acme/App@1",
            "pkg:docker/app@1?digest=sha256%3Aabc",
        ] {
            let err = docker_purl(bad, "materials[3]").unwrap_err();
            assert!(err.contains("materials[3]"), "{err}");
        }
    }

    /// LLB ops spelled `Op`/`Exec` with enum names instead of numbers still give cache mounts;
    /// bind, secret and id-less mounts do not.
    #[test]
    fn llb_field_spellings() {
        let text = serde_json::json!({
            "buildx.build.provenance": {
                "invocation": {"parameters": {"args": {"build-arg:BUILDKIT_CACHE_MOUNT_NS": "ns1"}}},
                "buildConfig": {"llbDefinition": [
                    {"id": "step0", "Op": {"op": {"Exec": {"Mounts": [
                        {"dest": "/"},
                        {"dest": "/go/pkg/mod", "mountType": "CACHE",
                         "cacheOpt": {"ID": "ns1/gomod", "sharing": "LOCKED"}},
                        {"dest": "/run/secrets/x", "mountType": 1, "secretOpt": {"ID": "x"}},
                        {"dest": "/nocache", "mountType": 3, "cacheOpt": {}},
                    ]}}}},
                    {"id": "step1", "op": {"Op": {"exec": {"mounts": [
                        {"dest": "/root/.cache/go-build", "mountType": 3, "readonly": true,
                         "cacheOpt": {"ID": "ns1//root/.cache/go-build", "sharing": 1}},
                    ]}}}},
                    {"id": "step2", "op": {"Op": {"file": {"actions": []}}}},
                ]},
            },
        })
        .to_string();
        let md = parse(&text, "m.json").unwrap();
        assert_eq!(
            md.cache_mounts,
            [
                mount("gomod", "ns1", "/go/pkg/mod", Sharing::Locked, false),
                mount(
                    "/root/.cache/go-build",
                    "ns1",
                    "/root/.cache/go-build",
                    Sharing::Private,
                    true
                ),
            ]
        );
    }

    /// Objects buildx left undecoded (base64, or JSON in a string) are read like objects.
    #[test]
    fn encoded_object_values() {
        let descriptor = format!(
            r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{}","size":7}}"#,
            "e".repeat(64)
        );
        let provenance =
            r#"{"materials":[{"uri":"pkg:docker/busybox@1","digest":{"sha256":"HEX"}}]}"#
                .replace("HEX", &"f".repeat(64));
        let text = serde_json::json!({
            "containerimage.descriptor": encode_base64(descriptor.as_bytes()),
            "buildx.build.provenance": provenance,
            "buildx.build.provenance/linux/arm64": "e30=",
        })
        .to_string();
        let md = parse(&text, "m.json").unwrap();
        assert_eq!(md.images[0].descriptor.as_ref().unwrap().size, Some(7));
        assert_eq!(md.images[0].digest, Some(digest(&"e".repeat(64))));
        assert_eq!(
            md.base_images,
            [(
                "docker.io/library/busybox:1".to_owned(),
                Some(digest(&"f".repeat(64)))
            )]
        );
    }

    fn encode_base64(bytes: &[u8]) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |acc, (i, b)| acc | u32::from(*b) << (16 - 8 * i));
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    /// Base64 decoding round-trips every padding length and rejects what is not base64.
    #[test]
    fn base64_decoding() {
        for text in ["", "a", "ab", "abc", "abcd", "{\"k\":\"v\"}"] {
            assert_eq!(
                decode_base64(&encode_base64(text.as_bytes())).unwrap(),
                text.as_bytes()
            );
        }
        for bad in ["abc", "ab=c", "a===", "ab$d", "{}"] {
            assert_eq!(decode_base64(bad), None, "{bad}");
        }
    }

    /// Bad input fails with the file named and, for a bad value, the key and the value.
    #[test]
    fn errors_name_the_key_and_value() {
        let err = parse("{\"containerimage.digest\": ", "md.json").unwrap_err();
        assert_eq!(err.source_name, "md.json");
        assert_eq!(err.line, None);
        assert!(err.message.starts_with("malformed JSON"), "{}", err.message);

        let err = parse("[1, 2]", "md.json").unwrap_err();
        assert!(
            err.message.contains("top level") && err.message.contains("an array"),
            "{}",
            err.message
        );

        let err = parse(r#"{"containerimage.digest": "sha256:abc"}"#, "md.json").unwrap_err();
        assert!(
            err.message.contains("containerimage.digest"),
            "{}",
            err.message
        );
        assert!(err.message.contains("`sha256:abc`"), "{}", err.message);

        let err = parse(r#"{"image.name": 42}"#, "md.json").unwrap_err();
        assert!(
            err.message.contains("`image.name`") && err.message.contains("42"),
            "{}",
            err.message
        );

        let text = r#"{"containerimage.descriptor": {"mediaType": "x", "digest": "md5:00"}}"#;
        let err = parse(text, "md.json").unwrap_err();
        assert!(
            err.message
                .contains("containerimage.descriptor digest `md5:00`"),
            "{}",
            err.message
        );

        let text = r#"{"buildx.build.provenance/linux/amd64": {"materials": [
            {"uri": "pkg:docker/busybox@latest", "digest": {"sha256": "XYZ"}}]}}"#;
        let err = parse(text, "md.json").unwrap_err();
        assert!(
            err.message
                .contains("buildx.build.provenance/linux/amd64 materials[0] digest")
                && err.message.contains("`sha256:XYZ`"),
            "{}",
            err.message
        );

        let text = r#"{"cache.manifest": "not json"}"#;
        let err = parse(text, "md.json").unwrap_err();
        assert!(
            err.message.contains("`cache.manifest`") && err.message.contains("not json"),
            "{}",
            err.message
        );

        let text = r#"{"buildx.build.provenance": {"buildConfig": {"llbDefinition": [{"id": "s9",
            "op": {"Op": {"exec": {"mounts": [{"mountType": 3, "cacheOpt": {"ID": "/x", "sharing": 7}}]}}}}]}}}"#;
        let err = parse(text, "md.json").unwrap_err();
        assert!(
            err.message.contains("step `s9`") && err.message.contains("`7`"),
            "{}",
            err.message
        );
    }
}
