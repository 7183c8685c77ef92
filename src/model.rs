//! Domain types shared by the hook, the store and the trace: digests, references, mounts,
//! cache specs and the record of one build.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use crate::parse::ParseError;
use crate::time::Micros;

/// A content digest, `algorithm:hex`. Only `sha256` and `sha512` are accepted: they are the
/// algorithms the OCI image spec registers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

impl Digest {
    pub fn parse(value: &str, what: &str) -> Result<Self, ParseError> {
        match Self::problem(value) {
            None => Ok(Self(value.to_owned())),
            Some(reason) => Err(ParseError::new(what, value, reason)),
        }
    }

    /// `value` as a digest when it starts with an algorithm's prefix (`sha256:`, `sha512:`, in
    /// any case) and holds no `/`: a bare `sha256:...` is a digest, malformed or not, never a
    /// Docker Hub repository `sha256` with a tag. `None` for anything else.
    pub fn parse_bare(value: &str, what: &str) -> Option<Result<Self, ParseError>> {
        let (algorithm, _) = value.split_once(':')?;
        let prefixed =
            algorithm.eq_ignore_ascii_case("sha256") || algorithm.eq_ignore_ascii_case("sha512");
        (prefixed && !value.contains('/')).then(|| Self::parse(value, what))
    }

    /// Whether `value` is a digest [`Digest::parse`] accepts, without making one.
    ///
    /// Output names every artifact by it, so it is checked without a search or an early exit.
    pub fn is_valid(value: &str) -> bool {
        let hex = match value.as_bytes() {
            [b's', b'h', b'a', b'2', b'5', b'6', b':', hex @ ..] if hex.len() == 64 => hex,
            [b's', b'h', b'a', b'5', b'1', b'2', b':', hex @ ..] if hex.len() == 128 => hex,
            _ => return false,
        };
        hex.iter().fold(true, |ok, &b| {
            ok & (b.wrapping_sub(b'0') < 10 || b.wrapping_sub(b'a') < 6)
        })
    }

    /// What is wrong with `value` as a digest, if anything.
    fn problem(value: &str) -> Option<String> {
        let Some((algorithm, hex)) = value.split_once(':') else {
            return Some("expected `sha256:<64 hex digits>`".to_owned());
        };
        let len = match algorithm {
            "sha256" => 64,
            "sha512" => 128,
            _ => return Some(format!("unsupported digest algorithm `{algorithm}`")),
        };
        (hex.len() != len
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then(|| format!("expected {len} lowercase hex digits after `{algorithm}:`"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Digest {
    type Error = ParseError;
    fn try_from(value: String) -> Result<Self, ParseError> {
        Self::parse(&value, "digest")
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.0
    }
}

/// What a manifest digest is. Content under a digest never changes, so once learned this stays
/// true: a purge that knows it need not ask the registry what it is deleting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestFacts {
    pub digest: Digest,
    pub media_type: String,
    /// The manifests an index lists (images, nested indexes), in order; none for a manifest.
    pub children: Vec<Digest>,
}

/// Docker Hub's registry host as references name it after normalization.
pub const DOCKER_HUB: &str = "docker.io";

/// An image or cache reference, normalized the way Docker normalizes it: a missing registry is
/// `docker.io`, a one-part Docker Hub repository gains `library/`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ImageRef {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl ImageRef {
    /// Parses `[registry/]repository[:tag][@digest]`; `what` names the flag or field.
    pub fn parse(value: &str, what: &str) -> Result<Self, ParseError> {
        let err = |reason: &str| ParseError::new(what, value, reason.to_owned());
        if value.is_empty() {
            return Err(err("empty reference"));
        }
        if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(err("references contain no white space"));
        }
        let (rest, digest) = match value.split_once('@') {
            Some((rest, digest)) => (
                rest,
                Some(
                    Digest::parse(digest, what)
                        .map_err(|e| ParseError::new(what, value, e.reason))?,
                ),
            ),
            None => (value, None),
        };
        // A tag follows the last colon after the last slash; an earlier colon is a port.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(tag) = tag {
            let valid = !tag.is_empty()
                && tag.len() <= 128
                && tag
                    .bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
                && tag
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
            if !valid {
                return Err(err("invalid tag"));
            }
        }
        // As Docker reads it, a first part with a dot, a colon or a capital letter is a host;
        // a host names one registry however it is spelt, so it is kept in lower case.
        let (registry, repository) = match name.split_once('/') {
            Some((first, path))
                if first.contains(['.', ':'])
                    || first == "localhost"
                    || first.bytes().any(|b| b.is_ascii_uppercase()) =>
            {
                (first.to_ascii_lowercase(), path.to_owned())
            }
            _ => (DOCKER_HUB.to_owned(), name.to_owned()),
        };
        let registry = if registry == "index.docker.io" || registry == "registry-1.docker.io" {
            DOCKER_HUB.to_owned()
        } else {
            registry
        };
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        if repository.is_empty()
            || repository.split('/').any(|part| {
                part.is_empty()
                    || !part.bytes().all(|b| {
                        b.is_ascii_lowercase()
                            || b.is_ascii_digit()
                            || matches!(b, b'.' | b'_' | b'-')
                    })
                    || !part
                        .bytes()
                        .next()
                        .is_some_and(|b| b.is_ascii_alphanumeric())
            })
        {
            return Err(err(
                "repository must be lowercase path components of [a-z0-9._-]",
            ));
        }
        Ok(Self {
            registry,
            repository,
            tag: tag.map(str::to_owned),
            digest,
        })
    }

    /// `registry/repository`, the unit registry deletes work in.
    pub fn locator(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl FromStr for ImageRef {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        Self::parse(s, "reference")
    }
}

/// Outcome of a build.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    #[default]
    Succeeded,
    Failed,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }
}

/// How BuildKit's builder is driven.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Driver {
    /// The BuildKit embedded in a Docker Engine.
    Docker,
    /// A standalone `buildkitd`.
    Buildkitd,
    /// buildx's `docker-container` driver.
    DockerContainer,
}

impl Driver {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Docker => "docker",
            Self::Buildkitd => "buildkitd",
            Self::DockerContainer => "docker-container",
        }
    }
}

/// A cache mount's `sharing` mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sharing {
    #[default]
    Shared,
    Private,
    Locked,
}

impl Sharing {
    pub fn parse(value: &str, what: &str) -> Result<Self, ParseError> {
        match value {
            "shared" => Ok(Self::Shared),
            "private" => Ok(Self::Private),
            "locked" => Ok(Self::Locked),
            _ => Err(ParseError::new(
                what,
                value,
                "expected `shared`, `private` or `locked`",
            )),
        }
    }
}

/// One use of a cache mount by a build step, as the Dockerfile or provenance describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountUse {
    /// The mount id as the Dockerfile says it: `id=`, else the cleaned target path.
    pub id: String,
    /// `BUILDKIT_CACHE_MOUNT_NS`, empty by default.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default)]
    pub sharing: Sharing,
    #[serde(default)]
    pub readonly: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
}

/// Cleans a path the way Go's `path.Clean` does, which is how BuildKit derives a default
/// mount id from the target.
pub fn clean_path(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            _ => parts.push(part),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_owned(),
        (false, false) => joined,
    }
}

/// Turns a mount id from any input into the Dockerfile form.
///
/// The LLB form that provenance shows is `<namespace>/<id>`: with the default empty namespace
/// a default id becomes `//root/.cache/pip` and a custom id `pip` becomes `/pip`. Given the
/// namespace, this strips it; `llb` says whether the value is known to be in LLB form.
pub fn normalize_mount_id(value: &str, namespace: &str, llb: bool) -> String {
    if llb {
        let prefix = format!("{namespace}/");
        if let Some(rest) = value.strip_prefix(&prefix) {
            return rest.to_owned();
        }
        return value.to_owned();
    }
    // A Dockerfile id needs no change, except that `//x` can only be the LLB form of `/x`.
    match value.strip_prefix("//") {
        Some(rest) if namespace.is_empty() => format!("/{rest}"),
        _ => value.to_owned(),
    }
}

/// The one `(namespace, id)` of a cache mount among all that name the same cache.
///
/// BuildKit keys a cache mount by `<namespace>/<id>` (the LLB form), so a namespace can move
/// part of a path out of the id: `BUILDKIT_CACHE_MOUNT_NS=//root/.cache` with `id=pip` is the
/// cache of the default `/root/.cache/pip`. The key is split at its first `/`, so every
/// spelling of one cache is one mount, and the key is the namespace, `/` and the id as before.
pub fn canonical_mount(namespace: &str, id: &str) -> (String, String) {
    let key = format!("{namespace}/{id}");
    let (namespace, id) = key.split_once('/').expect("the key holds a `/`");
    (namespace.to_owned(), id.to_owned())
}

/// The `(namespace, id)` a mount id from any input names ([`normalize_mount_id`]), as
/// [`canonical_mount`] records it.
pub fn mount_identity(namespace: &str, value: &str, llb: bool) -> (String, String) {
    canonical_mount(namespace, &normalize_mount_id(value, namespace, llb))
}

/// A `--cache-from` / `--cache-to` entry, in every form buildx accepts.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum CacheSpec {
    /// `type=registry,ref=...` or a plain reference.
    Registry {
        reference: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mode: Option<String>,
    },
    /// `type=inline`: the cache travels in the pushed image's config.
    Inline,
    /// `type=gha,scope=...`.
    Gha { scope: String },
    /// `type=local,src=...` or `dest=...`.
    Local { path: String },
    /// `type=s3,bucket=...,name=...` (and region, prefix).
    S3 { key: String },
    /// `type=azblob,account_url=...,name=...` (and container, prefixes): the URL of the
    /// cache's manifest blob (`ingest::cache_flag::azblob_key`).
    Azblob { key: String },
}

/// Which kind of artifact a recorded cache or image is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// A manifest in an OCI registry: `locator` is `registry/repository`, `digest` is set.
    Registry,
    /// A local image on a builder, known only by its id: `locator` is the builder name.
    LocalImage,
    Gha,
    Local,
    S3,
    Azblob,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Registry => "registry",
            Self::LocalImage => "local-image",
            Self::Gha => "gha",
            Self::Local => "local",
            Self::S3 => "s3",
            Self::Azblob => "azblob",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "registry" => Self::Registry,
            "local-image" => Self::LocalImage,
            "gha" => Self::Gha,
            "local" => Self::Local,
            "s3" => Self::S3,
            "azblob" => Self::Azblob,
            _ => return None,
        })
    }
}

/// An artifact a build can read or write: a registry manifest (cache or image), a local image,
/// or a non-registry cache entry. Identity is (backend, locator, digest, key).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Artifact {
    pub backend: Backend,
    /// `registry/repository` for registry artifacts, the builder for local images, the
    /// bucket/account/path for other caches.
    pub locator: String,
    /// The manifest digest (registry), image id (local image), or empty.
    pub digest: Option<Digest>,
    /// The scope or key for non-registry caches, empty otherwise.
    pub key: String,
    /// A tag seen pointing at it when it was recorded.
    pub tag: Option<String>,
}

impl Artifact {
    pub fn registry(reference: &ImageRef) -> Self {
        Self {
            backend: Backend::Registry,
            locator: reference.locator(),
            digest: reference.digest.clone(),
            key: String::new(),
            tag: reference.tag.clone(),
        }
    }

    /// How a person names it: `reg/repo@sha256:...`, `gha:scope`, ...
    pub fn display_name(&self) -> String {
        display_name(
            self.backend,
            &self.locator,
            self.digest.as_ref().map(Digest::as_str),
            &self.key,
            self.tag.as_deref(),
        )
    }
}

/// How a person names an artifact (see [`Artifact::display_name`]), from its parts.
pub fn display_name(
    backend: Backend,
    locator: &str,
    digest: Option<&str>,
    key: &str,
    tag: Option<&str>,
) -> String {
    let mut out = String::new();
    display_name_parts(backend, locator, digest, key, tag, &mut |p| out.push_str(p));
    out
}

/// Calls `part` with each part of [`display_name`], one after the other. A cache named by its
/// key shows the place an import gave it (a `gha` cache's repository, a local image's builder)
/// as `backend[place]:key`, with `%` and `]` in the place percent-encoded: two caches with one
/// key in two places never print as one, nor as a cache with no place whatever its key holds.
pub fn display_name_parts(
    backend: Backend,
    locator: &str,
    digest: Option<&str>,
    key: &str,
    tag: Option<&str>,
    part: &mut dyn FnMut(&str),
) {
    match (backend, digest) {
        (Backend::Registry, Some(d)) => [locator, "@", d].into_iter().for_each(part),
        (Backend::Registry, None) => match tag {
            Some(tag) => [locator, ":", tag].into_iter().for_each(part),
            None => part(locator),
        },
        (Backend::LocalImage, Some(d)) => [locator, "#", d].into_iter().for_each(part),
        (backend, _) if locator.is_empty() => {
            [backend.as_str(), ":", key].into_iter().for_each(part)
        }
        (backend, _) => {
            part(backend.as_str());
            part("[");
            if locator.contains(['%', ']']) {
                part(&locator.replace('%', "%25").replace(']', "%5D"));
            } else {
                part(locator);
            }
            part("]:");
            part(key);
        }
    }
}

/// A BuildKit build-cache record seen on a builder.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuilderRecord {
    pub id: String,
    #[serde(rename = "type", default)]
    pub record_type: String,
    #[serde(default)]
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Micros>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<Micros>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<i64>,
}

/// A pipeline as the hook knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineInfo {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_level: Option<String>,
}

/// A builder as the hook knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuilderInfo {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<Driver>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

/// Drops how to reach the builder (its driver and endpoint), keeping its name: for a line from
/// a source whose claims are not taken (an upload imported with `--trust-level`), since the
/// first endpoint recorded is kept for good and purges and verify reach the builder by it.
pub fn forget_how_to_reach(builder: &mut BuilderInfo) {
    builder.driver = None;
    builder.endpoint = None;
}

/// Which builder records a run created and reused, from snapshots taken around the build.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordEvidence {
    #[serde(default)]
    pub created: Vec<BuilderRecord>,
    #[serde(default)]
    pub reused: Vec<BuilderRecord>,
    /// Another build ran on the builder during this one: its records may be in these lists.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub overlapped: bool,
}

impl BuilderRecord {
    /// What a run whose word is not believed (one at the lowest trust level, an upload) may say
    /// of a record other runs share: no use or creation after the run finished, by which time
    /// it had seen the builder's records; and, for a record it only reused, no size, which is
    /// the record's and moves what a sweep's budget counts. A record's stored last use and size
    /// are what sweeps select by, and an earlier run's export shows them.
    pub fn as_seen_by(&self, finished_at: Micros, reused: bool) -> Self {
        Self {
            created_at: self.created_at.map(|at| at.min(finished_at)),
            last_used_at: self.last_used_at.map(|at| at.min(finished_at)),
            size: if reused { None } else { self.size },
            ..self.clone()
        }
    }
}

impl RecordEvidence {
    /// Each record as [`BuilderRecord::as_seen_by`] takes it.
    pub fn bound_to(&mut self, finished_at: Micros) {
        for (list, reused) in [(&mut self.created, false), (&mut self.reused, true)] {
            for record in list.iter_mut() {
                *record = record.as_seen_by(finished_at, reused);
            }
        }
    }
}

/// Everything the hook knows about one build: the unit `record`, `wrap` and `import` store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRecord {
    /// The pipeline. Its `trust_level` is not the run's: see `trust_level`.
    pub pipeline: PipelineInfo,
    /// The trust level the run asks for; the store records it at most at the pipeline's
    /// ceiling.
    pub trust_level: Option<String>,
    /// The CI run id plus attempt.
    pub run_id: String,
    /// Tells apart several builds of one CI job.
    pub step: String,
    pub commit: Option<String>,
    pub git_ref: Option<String>,
    pub builder: Option<BuilderInfo>,
    pub started_at: Micros,
    pub finished_at: Micros,
    pub status: RunStatus,
    pub imported: Vec<Artifact>,
    pub exported: Vec<Artifact>,
    pub produced: Vec<Artifact>,
    pub base_images: Vec<Artifact>,
    pub mounts: Vec<MountUse>,
    /// `None` when the hook could not see the builder's records.
    pub records: Option<RecordEvidence>,
    /// Some of what the build used was left out because it was over a [`limits`] bound
    /// (`wrap` records what fits rather than fail a build).
    pub truncated: bool,
    /// BuildKit's ref of the build (buildx's `buildx.build.ref`, last part): what matches the
    /// builder's history record of it.
    pub build_ref: Option<String>,
}

/// What a manifest is, as far as purging is concerned: the registry client classifies it,
/// audits compare by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ManifestKind {
    /// A registry cache export (`--cache-to type=registry`) in index form: an index listing
    /// a `application/vnd.buildkit.cacheconfig.v0` descriptor.
    BuildkitCacheIndex,
    /// A registry cache export in image-manifest form: its config (or a layer) is the cache
    /// configuration.
    BuildkitCacheManifest,
    /// An image whose config carries an inline cache (`moby.buildkit.cache.v0`).
    InlineCacheImage,
    Image,
    Index,
}

/// Bounds on what one run may record, checked on every input path: one hostile pipeline must
/// not make a trace of everyone's builds a gigabyte, or abort it on allocation.
pub mod limits {
    use super::{Artifact, RunRecord};

    pub use crate::parse::NAME_BYTES;
    /// Cache mounts a run may use.
    pub const MOUNTS: usize = 1000;
    /// Imported, exported, produced and base-image references of a run, together.
    pub const REFERENCES: usize = 1000;
    /// Bytes in one line of an `import` file.
    pub const LINE_BYTES: usize = 1 << 20;

    /// A value over a limit (the message names the field and the limit, never the value), or
    /// a name that would print as another (the message shows it escaped).
    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    pub enum LimitError {
        #[error("`{field}` is {bytes} bytes, over the limit of {NAME_BYTES} bytes")]
        Name { field: String, bytes: usize },
        #[error(
            "`{field}` `{}` begins or ends with white space, which no listing shows: it would print as another name",
            crate::report::escape::Term(value)
        )]
        Padded { field: String, value: String },
        #[error(
            "`{field}` `{}` is not in Unicode normalization form C: it would print as another name, written the usual way",
            crate::report::escape::Term(value)
        )]
        Unnormalized { field: String, value: String },
        #[error("`{field}` has {count} entries, over the limit of {limit}")]
        Count {
            field: &'static str,
            count: usize,
            limit: usize,
        },
    }

    /// Checks one name or id.
    pub fn name(field: impl FnOnce() -> String, value: &str) -> Result<(), LimitError> {
        if value.len() > NAME_BYTES {
            return Err(LimitError::Name {
                field: field(),
                bytes: value.len(),
            });
        }
        Ok(())
    }

    fn opt(field: &str, value: Option<&str>) -> Result<(), LimitError> {
        value.map_or(Ok(()), |v| name(|| field.to_owned(), v))
    }

    fn artifact(field: &str, i: usize, a: &Artifact) -> Result<(), LimitError> {
        let at = || format!("{field}[{i}]");
        name(at, &a.locator)?;
        name(at, &a.key)?;
        opt(&at(), a.digest.as_ref().map(|d| d.as_str()))?;
        opt(&at(), a.tag.as_deref())
    }

    /// The fields of the run itself: without them there is no run to record. Each is a name
    /// people read and type: one with white space at an end, or not in normalization form C
    /// (`cafe\u{301}` beside `café`), would be a second name that prints as the first.
    fn identity(run: &RunRecord) -> Result<(), LimitError> {
        for (field, value) in identity_names(run) {
            name(|| field.to_owned(), value)?;
            shown_as_itself(field, value)?;
        }
        Ok(())
    }

    /// The names [`identity`] checks, with their fields.
    fn identity_names(run: &RunRecord) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("pipeline", run.pipeline.name.as_str()),
            ("run", run.run_id.as_str()),
            ("step", run.step.as_str()),
        ]
        .into_iter()
        .chain(run.builder.as_ref().map(|b| ("builder", b.name.as_str())))
    }

    /// A name read from where nobody typed it for cachewarden (a CI variable, a token's claim)
    /// as [`shown_as_itself`] takes it: without white space at its ends, in normalization form
    /// C. Hook and collector read one CI's names the same way, so they agree.
    pub fn normalized_name(value: &str) -> String {
        let trimmed = value.trim();
        if trimmed.is_ascii() {
            trimmed.to_owned()
        } else {
            unicode_normalization::UnicodeNormalization::nfc(trimmed).collect()
        }
    }

    /// Refuses a name that would print as another: white space at either end, or a form
    /// other than Unicode's normalization form C.
    pub fn shown_as_itself(field: &str, value: &str) -> Result<(), LimitError> {
        if value.starts_with(char::is_whitespace) || value.ends_with(char::is_whitespace) {
            return Err(LimitError::Padded {
                field: field.to_owned(),
                value: value.to_owned(),
            });
        }
        if !value.is_ascii() && !unicode_normalization::is_nfc(value) {
            return Err(LimitError::Unnormalized {
                field: field.to_owned(),
                value: value.to_owned(),
            });
        }
        Ok(())
    }

    fn details(run: &RunRecord) -> Result<(), LimitError> {
        opt("project", run.pipeline.project.as_deref())?;
        opt("trust_level", run.pipeline.trust_level.as_deref())?;
        opt("commit", run.commit.as_deref())?;
        opt("git_ref", run.git_ref.as_deref())?;
        opt(
            "builder endpoint",
            run.builder.as_ref().and_then(|b| b.endpoint.as_deref()),
        )
    }

    fn mount(i: usize, m: &super::MountUse) -> Result<(), LimitError> {
        let at = || format!("mounts[{i}]");
        name(at, &m.id)?;
        name(at, &m.namespace)?;
        opt(&at(), m.target.as_deref())?;
        opt(&at(), m.from.as_deref())
    }

    /// A run's artifact lists, each with its field's name in a provenance line.
    pub fn lists(run: &RunRecord) -> [(&'static str, &Vec<Artifact>); 4] {
        [
            ("imported", &run.imported),
            ("base_images", &run.base_images),
            ("exported", &run.exported),
            ("produced", &run.produced),
        ]
    }

    /// The first limit `run` is over, if any: `record` and `import` refuse such a run whole.
    pub fn check(run: &RunRecord) -> Result<(), LimitError> {
        identity(run)?;
        check_stored(run)
    }

    /// [`check`] for a run a store held (its export): its names as the store held them, which
    /// may be as a store recorded them before it refused names that print as others.
    pub fn check_stored(run: &RunRecord) -> Result<(), LimitError> {
        for (field, value) in identity_names(run) {
            name(|| field.to_owned(), value)?;
        }
        details(run)?;
        let references: usize = lists(run).iter().map(|(_, l)| l.len()).sum();
        if references > REFERENCES {
            return Err(LimitError::Count {
                field: "references",
                count: references,
                limit: REFERENCES,
            });
        }
        for (field, list) in lists(run) {
            for (i, a) in list.iter().enumerate() {
                artifact(field, i, a)?;
            }
        }
        if run.mounts.len() > MOUNTS {
            return Err(LimitError::Count {
                field: "mounts",
                count: run.mounts.len(),
                limit: MOUNTS,
            });
        }
        for (i, m) in run.mounts.iter().enumerate() {
            mount(i, m)?;
        }
        if let Some(records) = &run.records {
            for (field, list) in [
                ("records.created", &records.created),
                ("records.reused", &records.reused),
            ] {
                for (i, r) in list.iter().enumerate() {
                    name(|| format!("{field}[{i}].id"), &r.id)?;
                    name(|| format!("{field}[{i}].type"), &r.record_type)?;
                }
            }
        }
        Ok(())
    }

    /// Makes `run` fit, for `wrap`, which must not fail a build: what is over a limit is left
    /// out and the run flagged `truncated`. Returns what was left out, one line each, or the
    /// error when the run's own pipeline, run id, step or builder is over (nothing fits).
    pub fn fit(run: &mut RunRecord) -> Result<Vec<String>, LimitError> {
        identity(run)?;
        let mut cut = Vec::new();
        let mut note = |err: LimitError| cut.push(err.to_string());
        let drop_long =
            |value: &mut Option<String>, field: &str, note: &mut dyn FnMut(LimitError)| {
                if let Some(Err(err)) = value.as_deref().map(|v| name(|| field.to_owned(), v)) {
                    note(err);
                    *value = None;
                }
            };
        drop_long(&mut run.pipeline.project, "project", &mut note);
        drop_long(&mut run.pipeline.trust_level, "trust_level", &mut note);
        drop_long(&mut run.commit, "commit", &mut note);
        drop_long(&mut run.git_ref, "git_ref", &mut note);
        if let Some(b) = &mut run.builder {
            drop_long(&mut b.endpoint, "builder endpoint", &mut note);
        }
        let mut budget = REFERENCES;
        let total: usize = lists(run).iter().map(|(_, l)| l.len()).sum();
        if total > REFERENCES {
            note(LimitError::Count {
                field: "references",
                count: total,
                limit: REFERENCES,
            });
        }
        // What the run wrote comes first: a compromised run that pads its imports must not
        // push its own exports out of the record.
        for (field, list) in [
            ("exported", &mut run.exported),
            ("produced", &mut run.produced),
            ("imported", &mut run.imported),
            ("base_images", &mut run.base_images),
        ] {
            let mut i = 0;
            list.retain(|a| {
                let fits = artifact(field, i, a);
                i += 1;
                match fits {
                    Ok(()) if budget > 0 => {
                        budget -= 1;
                        true
                    }
                    Ok(()) => false,
                    Err(err) => {
                        note(err);
                        false
                    }
                }
            });
        }
        let mut i = 0;
        run.mounts.retain(|m| {
            let fits = mount(i, m);
            i += 1;
            fits.map_err(&mut note).is_ok()
        });
        if run.mounts.len() > MOUNTS {
            note(LimitError::Count {
                field: "mounts",
                count: run.mounts.len(),
                limit: MOUNTS,
            });
            run.mounts.truncate(MOUNTS);
        }
        if let Some(records) = &mut run.records {
            for (field, list) in [
                ("records.created", &mut records.created),
                ("records.reused", &mut records.reused),
            ] {
                let mut i = 0;
                list.retain(|r| {
                    let fits = name(|| format!("{field}[{i}].id"), &r.id)
                        .and_then(|()| name(|| format!("{field}[{i}].type"), &r.record_type));
                    i += 1;
                    fits.map_err(&mut note).is_ok()
                });
            }
        }
        if !cut.is_empty() {
            run.truncated = true;
        }
        Ok(cut)
    }
}

/// The address of one run: `pipeline/run[/step]`, each part percent-encoded
/// ([`encode_component`]) so that a `/` inside a pipeline name, run id or step cannot move the
/// split.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RunKey {
    pub pipeline: String,
    pub run_id: String,
    pub step: Option<String>,
}

/// A part of a run name with `%` written `%25` and `/` written `%2F`: GitHub's derived
/// pipeline names and Dockerfile paths contain `/`, and `run:a/b/c/d` would name two runs.
/// A `,` (`%2C`) and control characters (`%0A` for a line break, `%C2%85` for U+0085 NEL: the
/// bytes of its UTF-8) are written encoded too, as are the line and paragraph separators
/// U+2028 and U+2029: lists of run names are joined with `, ` or line breaks, and one name must
/// not read as two.
pub fn encode_component(value: &str) -> std::borrow::Cow<'_, str> {
    // Printable ASCII other than `%`, `/` and `,` is never encoded: most names are only that.
    let plain = |b: u8| (0x20..0x7f).contains(&b) && !matches!(b, b'%' | b'/' | b',');
    if value.bytes().all(plain) || !value.contains(|c: char| encoded(c)) {
        return value.into();
    }
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        if encoded(c) {
            let mut utf8 = [0u8; 4];
            for b in c.encode_utf8(&mut utf8).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out.into()
}

/// Whether [`encode_component`] writes `c` as `%XX` escapes.
fn encoded(c: char) -> bool {
    matches!(c, '%' | '/' | ',' | '\u{2028}' | '\u{2029}') || c.is_control()
}

/// The part [`encode_component`] encoded; `None` when a run of `%XX` escapes is anything but
/// the UTF-8 of characters it encodes (`%25`, `%2F`, `%2C`, `%0A`, `%C2%85`, ...; hex digits
/// in either case).
pub fn decode_component(value: &str) -> Option<String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let mut bytes = Vec::new();
        while let Some(escape) = rest.strip_prefix('%') {
            let hex = escape.get(..2)?;
            if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &escape[2..];
        }
        let decoded = String::from_utf8(bytes).ok()?;
        if !decoded.chars().all(encoded) {
            return None;
        }
        out.push_str(&decoded);
    }
    out.push_str(rest);
    Some(out)
}

/// How output names a run: `pipeline/run/step`, each part encoded ([`encode_component`]).
pub fn run_name(pipeline: &str, run_id: &str, step: &str) -> String {
    [
        encode_component(pipeline),
        "/".into(),
        encode_component(run_id),
        "/".into(),
        encode_component(step),
    ]
    .concat()
}

impl RunKey {
    /// Parses a run name as output writes it: `pipeline/run[/step]`, each part percent-encoded
    /// (`%2F` for `/`, `%25` for `%`). A trailing `/` names the empty step.
    pub fn parse(value: &str, what: &str) -> Result<Self, ParseError> {
        let err = |reason: &str| ParseError::new(what, value, reason);
        let parts: Vec<&str> = value.split('/').collect();
        if !(2..=3).contains(&parts.len()) || parts[0].is_empty() || parts[1].is_empty() {
            return Err(err(
                "expected `pipeline/run[/step]`, with `/` inside a part written `%2F`",
            ));
        }
        let decode = |part: &str| {
            decode_component(part).ok_or_else(|| err("a `%` must start `%2F` or `%25`"))
        };
        Ok(Self {
            pipeline: decode(parts[0])?,
            run_id: decode(parts[1])?,
            step: parts.get(2).map(|step| decode(step)).transpose()?,
        })
    }
}

impl RunKey {
    /// Every way to read `value` as `pipeline/run[/step]` when pipeline names and steps may
    /// contain `/` but run ids do not: the store keeps the readings that exist. This is how
    /// run names were read before their parts were encoded: an old seed keeps its meaning.
    pub fn candidates(value: &str, what: &str) -> Result<Vec<Self>, ParseError> {
        let parts: Vec<&str> = value.split('/').collect();
        if parts.len() < 2 || parts.iter().any(|p| p.is_empty()) {
            return Err(ParseError::new(
                what,
                value,
                "expected `pipeline/run[/step]`",
            ));
        }
        let mut out = Vec::new();
        for run_at in 1..parts.len() {
            let step = parts[run_at + 1..].join("/");
            out.push(Self {
                pipeline: parts[..run_at].join("/"),
                run_id: parts[run_at].to_owned(),
                step: (!step.is_empty()).then_some(step),
            });
        }
        Ok(out)
    }
}

impl fmt::Display for RunKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}",
            encode_component(&self.pipeline),
            encode_component(&self.run_id)
        )?;
        if let Some(step) = &self.step {
            write!(f, "/{}", encode_component(step))?;
        }
        Ok(())
    }
}

/// What a purge or invalidation acted on; the trace treats the target as clean from then on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "target", rename_all = "lowercase")]
pub enum PurgeTarget {
    /// A mount cache was emptied on a builder.
    Mount {
        builder: String,
        mount: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        namespace: String,
    },
    /// A builder's build cache was pruned: the whole of it, its cache mounts too, or with
    /// `records_only` only build records (a prune that leaves cache mounts to the mount
    /// purges), which cleans none of its mounts. A `selective` prune removed only some of
    /// the records, and cleans only what it removed.
    Builder {
        builder: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        records_only: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        selective: Option<SelectivePrune>,
    },
}

/// What a prune of some of a builder's records removed: the named records (and those built on
/// them), and every build record used since `since` (the builder's clock). It cleans the
/// builder of a writer only when it removed all that writer may have left there: every record
/// the writer said it created, or everything since the writer began, as far as the clocks of
/// runners and builders may differ (`skew`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelectivePrune {
    /// BuildKit's ids of the records named.
    pub records: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Micros>,
    #[serde(default = "default_prune_skew")]
    pub skew: Micros,
}

impl SelectivePrune {
    /// Whether it pruned every build record: since any time, or since before any time a
    /// record can be dated.
    pub fn every_record(&self) -> bool {
        self.since
            .is_some_and(|t| t < crate::time::EARLIEST_RFC3339)
    }

    /// The time it pruned every build record used since, unless it pruned every one.
    pub fn used_since(&self) -> Option<Micros> {
        self.since.filter(|&t| t >= crate::time::EARLIEST_RFC3339)
    }

    /// The skew it allowed, in whole seconds rounded up: never less than it allowed.
    pub fn skew_seconds(&self) -> u64 {
        u64::try_from(self.skew.max(0))
            .unwrap_or(0)
            .div_ceil(1_000_000)
    }
}

/// The clock skew a selective prune allowed when it does not say: `[purge] clock_skew_seconds`'s
/// default.
pub const DEFAULT_PRUNE_SKEW: Micros = 300_000_000;

fn default_prune_skew() -> Micros {
    DEFAULT_PRUNE_SKEW
}

/// How a purge came to be recorded in this store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PurgeMethod {
    /// cachewarden's executor pruned it, as an action of an incident or sweep.
    Executor,
    /// Recorded by hand with `mark-purged`.
    Manual,
    /// Read from an import line, whatever the line claims.
    Imported,
}

impl PurgeMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Executor => "executor",
            Self::Manual => "manual",
            Self::Imported => "imported",
        }
    }

    /// The stored text back; `None` for anything else.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "executor" => Some(Self::Executor),
            "manual" => Some(Self::Manual),
            "imported" => Some(Self::Imported),
            _ => None,
        }
    }
}

/// Who recorded a purge, when, and how. The store fills the recording time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeProvenance {
    pub method: PurgeMethod,
    /// The OS account and host that recorded it (`user@host`).
    pub author: String,
    /// A late entry accepted with `--force`.
    pub forced: bool,
    pub reason: Option<String>,
    /// Free text kept for compatibility (`mark-purged`, `incident N`, an import line's own).
    pub source: String,
    /// For an executor purge: the incident (or sweep) and the action's sequence number.
    pub action: Option<(i64, i64)>,
    /// For an imported purge: what the line claimed.
    pub claimed: Option<PurgeClaim>,
}

/// A purge as stored, with its provenance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPurge {
    pub id: i64,
    pub target: PurgeTarget,
    /// When the purge happened, as recorded.
    pub at: Micros,
    pub method: PurgeMethod,
    /// Empty when unknown (purges stored before provenance was kept).
    pub author: String,
    /// When it was recorded in this store; `None` when unknown.
    pub recorded_at: Option<Micros>,
    pub forced: bool,
    pub reason: Option<String>,
    pub source: String,
    pub action: Option<(i64, i64)>,
    pub claimed: Option<PurgeClaim>,
}

/// What an import line says about a purge's provenance. Kept and exported, never trusted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurgeClaim {
    pub method: Option<String>,
    pub author: Option<String>,
    pub recorded_at: Option<Micros>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cache named by its key shows the place an import gave it, encoded so that no place
    /// and key print as another place and key, or as a cache with no place.
    #[test]
    fn caches_in_two_places_print_apart() {
        let name = |backend, locator, key| display_name(backend, locator, None, key, None);
        assert_eq!(name(Backend::Gha, "", "buildkit-main"), "gha:buildkit-main");
        assert_eq!(
            name(Backend::Gha, "org/prod", "buildkit-main"),
            "gha[org/prod]:buildkit-main"
        );
        assert_eq!(name(Backend::Gha, "a]:b", "c"), "gha[a%5D:b]:c");
        assert_eq!(name(Backend::Gha, "a", "b]:c"), "gha[a]:b]:c");
        assert_eq!(name(Backend::Gha, "%5D", "k"), "gha[%255D]:k");
        assert_eq!(
            name(Backend::LocalImage, "ci-1", "web:1"),
            "local-image[ci-1]:web:1"
        );
        let digest = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            display_name(Backend::LocalImage, "ci-1", Some(&digest), "web:1", None),
            format!("ci-1#{digest}")
        );
    }

    proptest::proptest! {
        #[test]
        fn a_digest_is_valid_exactly_when_it_parses(
            algorithm in "sha256|sha512|SHA256|sha1|sha25|",
            hex in "[0-9a-fA-Fg:/ ]{0,130}",
            full in proptest::bool::ANY,
        ) {
            let hex = if full {
                let len = if algorithm == "sha512" { 128 } else { 64 };
                hex.chars().cycle().take(len).collect::<String>()
            } else {
                hex
            };
            let value = format!("{algorithm}:{hex}");
            proptest::prop_assert_eq!(Digest::is_valid(&value), Digest::problem(&value).is_none());
        }
    }

    #[test]
    fn every_spelling_of_one_cache_mount_is_one_mount() {
        let default = canonical_mount("", "/root/.cache/pip");
        assert_eq!(default, (String::new(), "/root/.cache/pip".to_owned()));
        assert_eq!(canonical_mount("//root/.cache", "pip"), default);
        assert_eq!(canonical_mount("/", "root/.cache/pip"), default);
        assert_eq!(
            canonical_mount("", "pip"),
            (String::new(), "pip".to_owned())
        );
        let team = canonical_mount("team", "pip");
        assert_eq!(team, ("team".to_owned(), "pip".to_owned()));
        assert_eq!(
            canonical_mount("team/x", "pip"),
            canonical_mount("team", "x/pip")
        );
        for (namespace, id) in [("team/x", "pip"), ("//a", "b"), ("", "/x")] {
            let (n, i) = canonical_mount(namespace, id);
            assert_eq!(canonical_mount(&n, &i), (n.clone(), i.clone()));
            assert_eq!(format!("{n}/{i}"), format!("{namespace}/{id}"));
        }
    }

    #[test]
    fn digests_valid_and_not() {
        let good = format!("sha256:{}", "0a".repeat(32));
        assert!(Digest::is_valid(&good));
        assert!(Digest::is_valid(&format!("sha512:{}", "f9".repeat(64))));
        for bad in [
            String::new(),
            format!("sha256:{}", "0A".repeat(32)),
            format!("sha256:{}", "0a".repeat(31)),
            format!("sha256:{}g", "0a".repeat(31)),
            format!("sha512:{}", "0a".repeat(32)),
            format!("sha256:{}:", "0a".repeat(32)),
            format!("Sha256:{}", "0a".repeat(32)),
        ] {
            assert!(!Digest::is_valid(&bad), "{bad}");
        }
    }

    #[test]
    fn normalizes_docker_hub_references() {
        let r = ImageRef::parse("busybox", "--image").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/busybox");
        let r = ImageRef::parse("localhost:5000/team/app:cache", "--image").unwrap();
        assert_eq!(r.registry, "localhost:5000");
        assert_eq!(r.repository, "team/app");
        assert_eq!(r.tag.as_deref(), Some("cache"));
        let r = ImageRef::parse("127.0.0.1:5000/app", "--image").unwrap();
        assert_eq!(r.locator(), "127.0.0.1:5000/app");
        for spelt in ["Reg.IO:5000/team/app", "REG.io:5000/team/app"] {
            let r = ImageRef::parse(spelt, "--image").unwrap();
            assert_eq!(r.locator(), "reg.io:5000/team/app", "{spelt}");
        }
        let r = ImageRef::parse("Index.Docker.IO/busybox", "--image").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/busybox");
        let r = ImageRef::parse("Myreg/app", "--image").unwrap();
        assert_eq!(r.locator(), "myreg/app");
    }

    #[test]
    fn rejects_bad_references_naming_the_flag() {
        for bad in [
            "",
            "reg.io/UPPER/case",
            "app:",
            "app@sha256:123",
            "a b",
            "reg.io//x",
        ] {
            let err = ImageRef::parse(bad, "--cache-from").unwrap_err();
            assert_eq!(err.what, "--cache-from", "{bad}");
        }
    }

    #[test]
    fn digests_are_validated() {
        let good = format!("sha256:{}", "a".repeat(64));
        assert!(Digest::parse(&good, "d").is_ok());
        assert!(Digest::parse("sha256:abc", "d").is_err());
        assert!(Digest::parse(&format!("md5:{}", "a".repeat(32)), "d").is_err());
        assert!(Digest::parse(&format!("sha256:{}", "A".repeat(64)), "d").is_err());
    }

    /// A value with an algorithm's prefix is read as a digest, and refused when malformed,
    /// rather than as a Docker Hub repository with a tag; other values are not digests.
    #[test]
    fn bare_digests_are_digests_however_malformed() {
        let good = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            Digest::parse_bare(&good, "REF").unwrap().unwrap().as_str(),
            good
        );
        for bad in [
            "sha256:abc".to_owned(),
            format!("sha256:{}", "A".repeat(64)),
            format!("SHA256:{}", "a".repeat(64)),
            "sha512:".to_owned(),
        ] {
            let err = Digest::parse_bare(&bad, "REF").unwrap().unwrap_err();
            assert_eq!(err.what, "REF", "{bad}");
        }
        for other in ["nginx:1.25", "sha256", "registry/sha256:abc", "alpine"] {
            assert!(Digest::parse_bare(other, "REF").is_none(), "{other}");
        }
    }

    #[test]
    fn mount_ids_normalize_from_llb_and_dockerfile_forms() {
        assert_eq!(
            normalize_mount_id("//root/.cache/pip", "", true),
            "/root/.cache/pip"
        );
        assert_eq!(normalize_mount_id("/pip", "", true), "pip");
        assert_eq!(normalize_mount_id("ns1/pip", "ns1", true), "pip");
        assert_eq!(
            normalize_mount_id("//root/.cache/pip", "", false),
            "/root/.cache/pip"
        );
        assert_eq!(
            normalize_mount_id("/root/.cache/pip", "", false),
            "/root/.cache/pip"
        );
        assert_eq!(clean_path("/root//.cache/./pip/"), "/root/.cache/pip");
        assert_eq!(clean_path("/a/../b"), "/b");
    }

    /// Every ASCII character, alone and inside a longer part, is left as it is exactly when
    /// it is not one of those encoded: the quick check for plain parts agrees with the rule.
    #[test]
    fn plain_parts_are_left_as_they_are() {
        for b in 0u8..0x80 {
            let c = char::from(b);
            for part in [c.to_string(), format!("web-{c}-release")] {
                let out = encode_component(&part);
                assert_eq!(
                    matches!(out, std::borrow::Cow::Borrowed(_)),
                    !encoded(c),
                    "{b:#x}"
                );
                if encoded(c) {
                    assert_eq!(out, part.replace(c, &format!("%{b:02X}")));
                }
            }
        }
        assert_eq!(encode_component("é\u{2028}"), "é%E2%80%A8");
    }

    /// A run name's parts are percent-encoded, so `/` inside a pipeline name or step no
    /// longer moves the split: two runs that printed as one name now print as two, and each
    /// name parses back to its own run.
    #[test]
    fn run_names_encode_slashes_and_parse_back() {
        let step_slash = run_name("web-release", "200-1", "ci/Dockerfile");
        let pipeline_slash = run_name("web-release/200-1", "ci", "Dockerfile");
        assert_eq!(step_slash, "web-release/200-1/ci%2FDockerfile");
        assert_eq!(pipeline_slash, "web-release%2F200-1/ci/Dockerfile");
        let k = RunKey::parse(&step_slash, "--run").unwrap();
        assert_eq!(
            (k.pipeline.as_str(), k.run_id.as_str(), k.step.as_deref()),
            ("web-release", "200-1", Some("ci/Dockerfile"))
        );
        let k = RunKey::parse(&pipeline_slash, "--run").unwrap();
        assert_eq!(k.pipeline, "web-release/200-1");
        assert_eq!(k.to_string(), pipeline_slash);
        assert_eq!(run_name("100%", "1", "a%2Fb"), "100%25/1/a%252Fb");
        let k = RunKey::parse("100%25/1/a%252Fb", "--run").unwrap();
        assert_eq!(
            (k.pipeline.as_str(), k.step.as_deref()),
            ("100%", Some("a%2Fb"))
        );
        let k = RunKey::parse("web/1/", "--run").unwrap();
        assert_eq!(k.step.as_deref(), Some(""));
        assert_eq!(RunKey::parse("web/1", "--run").unwrap().step, None);
        for bad in ["web", "web/1/a/b", "/1", "web//x", "w%2/1", "w%41/1"] {
            assert!(RunKey::parse(bad, "--run").is_err(), "{bad}");
        }
    }

    fn run_with(mounts: usize, long_mount_at: Option<usize>, references: usize) -> RunRecord {
        let digest = Digest::parse(&format!("sha256:{}", "a".repeat(64)), "d").unwrap();
        RunRecord {
            pipeline: PipelineInfo {
                name: "p".into(),
                project: Some("x".repeat(2000)),
                trust_level: None,
            },
            trust_level: None,
            run_id: "1".into(),
            step: "s".into(),
            commit: None,
            git_ref: None,
            builder: Some(BuilderInfo {
                name: "b".into(),
                driver: None,
                endpoint: None,
            }),
            started_at: 0,
            finished_at: 1,
            status: RunStatus::Succeeded,
            imported: (0..references)
                .map(|i| Artifact {
                    backend: Backend::Registry,
                    locator: format!("r.io/{i}"),
                    digest: Some(digest.clone()),
                    key: String::new(),
                    tag: None,
                })
                .collect(),
            exported: Vec::new(),
            produced: Vec::new(),
            base_images: Vec::new(),
            mounts: (0..mounts)
                .map(|i| MountUse {
                    id: if Some(i) == long_mount_at {
                        "l".repeat(limits::NAME_BYTES + 1)
                    } else {
                        format!("/m/{i}")
                    },
                    ..MountUse::default()
                })
                .collect(),
            records: None,
            truncated: false,
            build_ref: None,
        }
    }

    /// `check` names the first field over a limit; `fit` keeps what fits, in order, drops the
    /// rest, and flags the run.
    #[test]
    fn limits_are_checked_and_fitted() {
        let mut run = run_with(1001, Some(5), 1001);
        assert_eq!(
            limits::check(&run).unwrap_err().to_string(),
            "`project` is 2000 bytes, over the limit of 1024 bytes"
        );
        let cut = limits::fit(&mut run).unwrap();
        assert!(run.truncated);
        assert_eq!(run.pipeline.project, None);
        assert_eq!(run.imported.len(), limits::REFERENCES);
        // Exports are kept before imports.
        let mut padded = run_with(0, None, limits::REFERENCES);
        padded.exported = padded.imported[..2].to_vec();
        limits::fit(&mut padded).unwrap();
        assert_eq!(padded.exported.len(), 2);
        assert_eq!(padded.imported.len(), limits::REFERENCES - 2);
        assert_eq!(run.mounts.len(), limits::MOUNTS);
        assert!(run.mounts.iter().all(|m| m.id.len() < 10));
        assert_eq!(run.mounts[5].id, "/m/6");
        assert_eq!(cut.len(), 3, "{cut:?}");
        assert!(limits::check(&run).is_ok());
        let mut fine = run_with(3, None, 3);
        fine.pipeline.project = None;
        assert_eq!(limits::fit(&mut fine).unwrap(), Vec::<String>::new());
        assert!(!fine.truncated);
        let mut nameless = run_with(0, None, 0);
        nameless.run_id = "r".repeat(limits::NAME_BYTES + 1);
        assert!(limits::fit(&mut nameless).is_err());
    }

    /// A pipeline, run or step holding a line break or `, ` is encoded: a list of run names
    /// joined by lines or commas shows it as one name, which parses back to the run.
    #[test]
    fn run_names_with_line_breaks_and_commas_stay_one_name() {
        let name = run_name("fork\nweb-release", "1, web-release/2", "s\r\x1b");
        assert_eq!(name, "fork%0Aweb-release/1%2C web-release%2F2/s%0D%1B");
        assert_eq!(name.lines().count(), 1);
        assert!(!name.contains(','));
        let k = RunKey::parse(&name, "--run").unwrap();
        assert_eq!(
            (k.pipeline.as_str(), k.run_id.as_str(), k.step.as_deref()),
            ("fork\nweb-release", "1, web-release/2", Some("s\r\x1b"))
        );
        assert_eq!(k.to_string(), name);
        assert_eq!(decode_component("a%0a%2c"), Some("a\n,".to_owned()));
        assert_eq!(decode_component("a%41"), None);
        assert_eq!(decode_component("a%zz"), None);
    }

    /// Unicode line breaks (U+0085 NEL, U+2028, U+2029) and other C1 controls in a run name
    /// are encoded as their UTF-8 bytes and parse back; escapes of characters never encoded,
    /// or not whole UTF-8, are refused.
    #[test]
    fn run_names_with_unicode_line_breaks_stay_one_line() {
        let name = run_name("a\u{85}b", "1\u{2028}2", "s\u{2029}\u{9b}é");
        assert_eq!(name, "a%C2%85b/1%E2%80%A82/s%E2%80%A9%C2%9Bé");
        assert!(!name.contains(['\u{85}', '\u{2028}', '\u{2029}', '\u{9b}']));
        let k = RunKey::parse(&name, "--run").unwrap();
        assert_eq!(
            (k.pipeline.as_str(), k.run_id.as_str(), k.step.as_deref()),
            ("a\u{85}b", "1\u{2028}2", Some("s\u{2029}\u{9b}é"))
        );
        assert_eq!(k.to_string(), name);
        assert_eq!(decode_component("%c2%85%25x"), Some("\u{85}%x".to_owned()));
        assert_eq!(decode_component("%C2"), None);
        assert_eq!(decode_component("%C3%A9"), None);
        assert_eq!(decode_component("%E2%80"), None);
    }

    /// An unencoded name is still read every way it can be, as before encoding.
    #[test]
    fn unencoded_run_names_keep_every_reading() {
        let readings = RunKey::candidates("web/1234-1/docker/Dockerfile", "--run").unwrap();
        assert_eq!(readings[0].pipeline, "web");
        assert_eq!(readings[0].step.as_deref(), Some("docker/Dockerfile"));
        assert_eq!(readings.len(), 3);
    }
}
