//! Putting content into a registry over the distribution API, without a Docker Engine:
//! monolithic blob uploads (POST, then PUT with the digest) and manifest PUTs.
//!
//! Manifests made here share their blobs where they can, so thousands of distinct cache
//! manifests cost about one request each.

use std::collections::HashSet;

use sha2::{Digest as _, Sha256};

use super::http::{self, Request, Response};
use super::registry::Registry;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const BUILDKIT_CACHE_CONFIG: &str = "application/vnd.buildkit.cacheconfig.v0";

/// What was pushed: enough to describe it in another manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    pub digest: String,
    pub media_type: String,
    pub size: usize,
}

impl Pushed {
    /// The descriptor JSON of this content.
    pub fn descriptor(&self) -> serde_json::Value {
        serde_json::json!({
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        })
    }
}

/// Pushes blobs and manifests to one registry host.
pub struct Pusher {
    host: String,
    authorization: Option<String>,
    /// (repository, digest) already uploaded: blobs are linked per repository.
    uploaded: HashSet<(String, String)>,
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

impl Pusher {
    /// A pusher with the registry's basic credentials, if it has any.
    pub fn new(registry: &Registry) -> Self {
        let authorization = registry.credentials().map(|(user, password)| {
            format!(
                "Basic {}",
                http::base64(format!("{user}:{password}").as_bytes())
            )
        });
        Self::with_authorization(&registry.host(), authorization)
    }

    /// A pusher to `host` (`127.0.0.1:PORT`) sending this `Authorization` value.
    pub fn with_authorization(host: &str, authorization: Option<String>) -> Self {
        Self {
            host: host.to_owned(),
            authorization,
            uploaded: HashSet::new(),
        }
    }

    fn send(&self, request: Request<'_>) -> Response {
        let request = match &self.authorization {
            Some(value) => request.header("Authorization", value),
            None => request,
        };
        http::tcp(&self.host, &request).unwrap_or_else(|err| {
            panic!(
                "{} {} on {}: {err}",
                request.method, request.path, self.host
            )
        })
    }

    /// Uploads a blob (once per repository) and returns its digest.
    pub fn blob(&mut self, repository: &str, bytes: &[u8]) -> String {
        let digest = sha256(bytes);
        if !self
            .uploaded
            .insert((repository.to_owned(), digest.clone()))
        {
            return digest;
        }
        let start_path = format!("/v2/{repository}/blobs/uploads/");
        let started = self.send(Request::new("POST", &start_path));
        assert_eq!(
            started.status,
            202,
            "start upload in {repository}: {}",
            started.text()
        );
        let location = started
            .header("location")
            .expect("an upload answer has a Location");
        // The Location may be absolute; the request needs its path and query.
        let path = location
            .find("/v2/")
            .map(|i| &location[i..])
            .unwrap_or(location);
        let separator = if path.contains('?') { '&' } else { '?' };
        let put_path = format!("{path}{separator}digest={digest}");
        let mut put =
            Request::new("PUT", &put_path).header("Content-Type", "application/octet-stream");
        put.body = bytes.to_vec();
        let done = self.send(put);
        assert_eq!(
            done.status,
            201,
            "finish upload of {digest} in {repository}: {}",
            done.text()
        );
        digest
    }

    /// Puts a manifest under `reference` (a tag, or its own digest when `None`).
    pub fn manifest(
        &mut self,
        repository: &str,
        reference: Option<&str>,
        media_type: &str,
        bytes: &[u8],
    ) -> Pushed {
        let digest = sha256(bytes);
        let path = format!(
            "/v2/{repository}/manifests/{}",
            reference.unwrap_or(&digest)
        );
        let mut put = Request::new("PUT", &path).header("Content-Type", media_type);
        put.body = bytes.to_vec();
        let answer = self.send(put);
        assert_eq!(answer.status, 201, "PUT {path}: {}", answer.text());
        assert_eq!(
            answer.header("docker-content-digest"),
            Some(digest.as_str())
        );
        Pushed {
            digest,
            media_type: media_type.to_owned(),
            size: bytes.len(),
        }
    }

    fn pushed_blob(&mut self, repository: &str, media_type: &str, bytes: &[u8]) -> Pushed {
        Pushed {
            digest: self.blob(repository, bytes),
            media_type: media_type.to_owned(),
            size: bytes.len(),
        }
    }

    /// An image manifest over `config`; `seed` goes into an annotation, so every seed gives a
    /// distinct manifest over the same blobs.
    fn image_manifest(
        &mut self,
        repository: &str,
        tag: Option<&str>,
        config: Pushed,
        layers: &[Pushed],
        seed: &str,
    ) -> Pushed {
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.descriptor(),
            "layers": layers.iter().map(Pushed::descriptor).collect::<Vec<_>>(),
            "annotations": {"org.cachewarden.test.seed": seed},
        });
        self.manifest(
            repository,
            tag,
            OCI_MANIFEST,
            manifest.to_string().as_bytes(),
        )
    }

    /// A BuildKit registry cache export in image-manifest form: the config is the cache
    /// configuration (`image-manifest=true`).
    pub fn cache_manifest(&mut self, repository: &str, tag: Option<&str>, seed: &str) -> Pushed {
        let config = self.pushed_blob(
            repository,
            BUILDKIT_CACHE_CONFIG,
            br#"{"layers":[],"records":[]}"#,
        );
        let layer = self.pushed_blob(repository, OCI_LAYER, b"cache layer");
        self.image_manifest(repository, tag, config, &[layer], seed)
    }

    /// A BuildKit registry cache export in index form: layer blobs plus the cache config.
    pub fn cache_index(&mut self, repository: &str, tag: Option<&str>, seed: &str) -> Pushed {
        let layer = self.pushed_blob(repository, OCI_LAYER, b"cache layer");
        let config = self.pushed_blob(
            repository,
            BUILDKIT_CACHE_CONFIG,
            br#"{"layers":[],"records":[]}"#,
        );
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [layer.descriptor(), config.descriptor()],
            "annotations": {"org.cachewarden.test.seed": seed},
        });
        self.manifest(repository, tag, OCI_INDEX, index.to_string().as_bytes())
    }

    /// An image; with `inline_cache` its config carries `moby.buildkit.cache.v0`.
    pub fn image(
        &mut self,
        repository: &str,
        tag: Option<&str>,
        seed: &str,
        inline_cache: bool,
    ) -> Pushed {
        let mut config = serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": []},
            "config": {"Labels": {"seed": seed}},
        });
        if inline_cache {
            config["moby.buildkit.cache.v0"] = serde_json::json!("eyJsYXllcnMiOltdfQ==");
        }
        let config = self.pushed_blob(repository, OCI_CONFIG, config.to_string().as_bytes());
        let layer = self.pushed_blob(repository, OCI_LAYER, b"image layer");
        self.image_manifest(repository, tag, config, &[layer], seed)
    }

    /// An index of manifests already in the repository.
    pub fn index(&mut self, repository: &str, tag: Option<&str>, children: &[Pushed]) -> Pushed {
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": children.iter().map(|c| {
                let mut d = c.descriptor();
                d["platform"] = serde_json::json!({"architecture": "amd64", "os": "linux"});
                d
            }).collect::<Vec<_>>(),
        });
        self.manifest(repository, tag, OCI_INDEX, index.to_string().as_bytes())
    }
}
