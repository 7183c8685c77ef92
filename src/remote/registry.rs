//! OCI registries: resolving tags to digests (through oci-client), and [`RegistryClient`], the
//! distribution API client that lists tags, reads, classifies and deletes manifests.
//!
//! oci-client never asks the token service for the `delete` action, so purging needs a client
//! of its own. [`RegistryClient`] speaks to one registry host over one connection pool, answers
//! the auth challenge (anonymous, Basic, or a Bearer token from the realm, cached per
//! repository and actions until it expires), and retries what [`super::retry`] calls transient.
//! Credentials come from the docker config and its credential helpers and are never shown:
//! every URL and header in a message passes through [`Redacted`].

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use oci_spec::image::{ImageIndex, ImageManifest};
use reqwest::header::{
    ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, LINK, RETRY_AFTER, WWW_AUTHENTICATE,
};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use serde::Deserialize;
use sha2::{Digest as _, Sha256, Sha512};

use crate::config::{Config, CredentialSource};
use crate::error::{RemoteError, RemoteKind};
pub use crate::model::ManifestKind;
use crate::model::{DOCKER_HUB, Digest, ImageRef, ManifestFacts};
use crate::remote::redact::Redacted;
use crate::remote::retry::{
    RetryPolicy, is_retryable_error, is_retryable_status, jitter_unit, parse_retry_after,
};

/// The client for `host` from `clients`, created on first use: one connection pool and token
/// cache per registry for a whole command.
pub fn client_for<'a>(
    clients: &'a mut std::collections::BTreeMap<String, RegistryClient>,
    config: &Config,
    host: &str,
) -> Result<&'a RegistryClient, RemoteError> {
    if !clients.contains_key(host) {
        clients.insert(host.to_owned(), RegistryClient::new(config, host)?);
    }
    Ok(&clients[host])
}

/// Hosts that are spoken to over plain HTTP without being configured: loopback, as Docker
/// itself treats `127.0.0.0/8` as insecure.
fn is_loopback(host: &str) -> bool {
    let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
    name == "localhost" || name.starts_with("127.") || name == "[::1]"
}

/// Whether to talk plain HTTP to `host`.
pub fn is_insecure(config: &Config, host: &str) -> bool {
    config
        .registry(host)
        .map_or_else(|| is_loopback(host), |r| r.insecure)
}

/// Credentials for `host`, from the configured source. Never logged.
pub fn auth_for(config: &Config, host: &str) -> RegistryAuth {
    auth_in(config, host, None)
}

/// Credentials for `host` from the docker config in `docker_config_dir` (its `config.json`),
/// or from the default one (`$DOCKER_CONFIG`, else `~/.docker`) when it is `None`. Credential
/// helpers and `credsStore` are honoured. Never logged.
pub fn auth_in(config: &Config, host: &str, docker_config_dir: Option<&Path>) -> RegistryAuth {
    let source = config
        .registry(host)
        .map(|r| r.credentials.clone())
        .unwrap_or_default();
    if source == CredentialSource::Anonymous {
        return RegistryAuth::Anonymous;
    }
    let server = if host == DOCKER_HUB {
        "https://index.docker.io/v1/"
    } else {
        host
    };
    let found = match docker_config_dir {
        None => docker_credential::get_credential(server),
        Some(dir) => File::open(dir.join("config.json"))
            .map_err(|_| docker_credential::CredentialRetrievalError::ConfigReadError)
            .and_then(|file| {
                docker_credential::get_credential_from_reader(BufReader::new(file), server)
            }),
    };
    match found {
        Ok(docker_credential::DockerCredential::UsernamePassword(user, password)) => {
            RegistryAuth::Basic(user, password)
        }
        Ok(docker_credential::DockerCredential::IdentityToken(token)) => {
            RegistryAuth::Bearer(token)
        }
        Err(_) => RegistryAuth::Anonymous,
    }
}

/// Resolves references to digests through the registry.
pub struct Resolver<'a> {
    client: Client,
    config: &'a Config,
}

impl<'a> Resolver<'a> {
    pub fn new(config: &'a Config, hosts: &[String]) -> Self {
        let insecure = hosts
            .iter()
            .filter(|h| is_insecure(config, h))
            .cloned()
            .collect();
        let client = Client::new(ClientConfig {
            protocol: ClientProtocol::HttpsExcept(insecure),
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(30)),
            ..ClientConfig::default()
        });
        Self { client, config }
    }

    /// The manifest digest the reference's tag points at now; a tag or repository the registry
    /// says it does not have is an error of status 404.
    pub async fn resolve(&self, reference: &ImageRef) -> Result<Digest, RemoteError> {
        let tag = reference.tag.clone().unwrap_or_else(|| "latest".to_owned());
        // A registry the config gives an endpoint is reached there, as a purge reaches it.
        if self
            .config
            .registry(&reference.registry)
            .is_some_and(|r| r.endpoint.is_some())
        {
            // As the client below: one try, the same timeouts (a hook waits on it).
            let client = RegistryClient::with_options(
                self.config,
                &reference.registry,
                ClientOptions {
                    retry: crate::remote::retry::RetryPolicy::never(),
                    read_timeout: Duration::from_secs(30),
                    ..ClientOptions::default()
                },
            )?;
            return match client.head_manifest(&reference.repository, &tag).await? {
                Some(head) => Ok(head.digest),
                None => Err(RemoteError::status(
                    404,
                    format!("cannot resolve `{reference}`: the registry has no such tag"),
                )),
            };
        }
        let oci = Reference::with_tag(
            reference.registry.clone(),
            reference.repository.clone(),
            tag,
        );
        let auth = auth_for(self.config, &reference.registry);
        let digest = self
            .client
            .fetch_manifest_digest(&oci, &auth)
            .await
            .map_err(|err| {
                let message = format!(
                    "cannot resolve `{reference}`: {}",
                    one_line(&err.to_string())
                );
                // The registry's own word that there is no such tag or repository.
                let unknown = matches!(
                    &err,
                    OciDistributionError::RegistryError { envelope, .. }
                        if envelope.errors.iter().any(|e| matches!(
                            e.code,
                            OciErrorCode::ManifestUnknown | OciErrorCode::NameUnknown
                        ))
                );
                if unknown {
                    RemoteError::status(404, message)
                } else {
                    RemoteError::protocol(message)
                }
            })?;
        Digest::parse(&digest, "registry digest").map_err(|e| RemoteError::protocol(e.to_string()))
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// An OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// An OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// A Docker manifest list (the Docker form of an index).
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// A Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// The media type BuildKit gives the cache configuration of a registry cache export.
pub const BUILDKIT_CACHE_CONFIG: &str = "application/vnd.buildkit.cacheconfig.v0";
/// The image config key that carries an inline cache.
pub const INLINE_CACHE_KEY: &str = "moby.buildkit.cache.v0";

/// Every manifest media type the client asks for, most specific first.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
     application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// Tag listings are followed through at most this many pages.
const MAX_TAG_PAGES: usize = 100_000;

/// How a [`RegistryClient`] is set up beyond the config file.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The directory holding the docker `config.json` to take credentials from, instead of
    /// `$DOCKER_CONFIG` or `~/.docker`.
    pub docker_config_dir: Option<PathBuf>,
    /// Where to send requests (`http://127.0.0.1:5000`), instead of the address derived from
    /// the host; credentials and messages still use the host.
    pub endpoint: Option<String>,
    pub retry: RetryPolicy,
    /// `n` for tag listings; `None` lets the registry choose the page size.
    pub tag_page_size: Option<u32>,
    pub connect_timeout: Duration,
    /// The longest wait for the next bytes of a response.
    pub read_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            docker_config_dir: None,
            endpoint: None,
            retry: RetryPolicy::default(),
            tag_page_size: None,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
        }
    }
}

/// What a manifest HEAD tells without fetching the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestHead {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
}

/// A manifest as the registry stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The exact bytes: their hash is the digest.
    pub bytes: Vec<u8>,
    pub media_type: String,
    pub digest: Digest,
}

/// What a manifest DELETE achieved. A manifest that is already gone is not a failure: purges
/// are rerun after interruptions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteOutcome {
    Deleted,
    /// The registry answered 404: nothing by that digest (any more).
    AlreadyGone,
}

/// A reference from one manifest to other content.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Descriptor {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
}

/// A manifest's content, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParsedManifest {
    /// An OCI index or Docker manifest list: descriptors of manifests, or (for a BuildKit cache
    /// index) of the cache blobs.
    Index { manifests: Vec<Descriptor> },
    /// An OCI or Docker image manifest.
    Image {
        config: Descriptor,
        layers: Vec<Descriptor>,
    },
}

/// A manifest fetched and classified by [`RegistryClient::inspect`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspected {
    pub manifest: Manifest,
    pub parsed: ParsedManifest,
    pub kind: ManifestKind,
}

/// Which actions a request needs on its repository; a token is requested and cached for
/// exactly these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Access {
    Pull,
    Delete,
}

impl Access {
    fn actions(self) -> &'static str {
        match self {
            Self::Pull => "pull",
            Self::Delete => "pull,delete",
        }
    }
}

/// Credentials as the client uses them; `Debug` never shows the secret parts.
#[derive(Clone)]
enum Credentials {
    Anonymous,
    Basic {
        user: String,
        password: String,
    },
    /// An OAuth2 refresh token (`identitytoken` in the docker config).
    IdentityToken(String),
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Anonymous => f.write_str("Anonymous"),
            Self::Basic { user, .. } => write!(f, "Basic({user}, ***)"),
            Self::IdentityToken(_) => f.write_str("IdentityToken(***)"),
        }
    }
}

impl From<RegistryAuth> for Credentials {
    fn from(auth: RegistryAuth) -> Self {
        match auth {
            RegistryAuth::Basic(user, password) => Self::Basic { user, password },
            RegistryAuth::Bearer(token) => Self::IdentityToken(token),
            _ => Self::Anonymous,
        }
    }
}

/// What the registry asked for in `WWW-Authenticate`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// A bearer token and when to stop using it.
struct Token {
    value: String,
    renew_at: Instant,
}

type TokenSlot = Arc<tokio::sync::Mutex<Option<Token>>>;

/// The authorization one request carries.
enum Authorization {
    None,
    Basic(String, String),
    Bearer(String),
}

/// One request: everything needed to send it again after a retry or a new token.
struct Call<'a> {
    method: Method,
    url: Url,
    repository: &'a str,
    access: Access,
    accept: Option<&'static str>,
    /// Names the request in messages: ``DELETE `cache/app@sha256:…` ``.
    what: String,
}

/// A client of one registry host's distribution API.
///
/// Cheap to share: every method takes `&self`, and concurrent calls reuse one connection pool
/// and one token per repository and actions.
pub struct RegistryClient {
    host: String,
    base: Url,
    http: reqwest::Client,
    credentials: Credentials,
    retry: RetryPolicy,
    tag_page_size: Option<u32>,
    /// Learned from the first 401; requests after it authenticate up front.
    challenge: RwLock<Option<Challenge>>,
    tokens: Mutex<HashMap<(String, Access), TokenSlot>>,
    /// Tries in a row that timed out or could not connect, and how the last one failed; at
    /// [`UNANSWERED_LIMIT`] no more are sent ([`RegistryClient::send_retrying`]).
    unanswered: Mutex<(u32, String)>,
}

/// How many tries in a row may go unanswered (timed out, or no connection made) before a
/// client sends no more. A registry that hangs would otherwise hold every later request for
/// its read timeout, each try of it: thousands of manifests would take hours to come out
/// unchecked, where they now do at once.
const UNANSWERED_LIMIT: u32 = 3;

impl fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryClient")
            .field("host", &self.host)
            .field("base", &Redacted::url(self.base.as_str()))
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

impl RegistryClient {
    /// A client for `host` (`registry.example:5000`, `docker.io`) as the config describes it:
    /// plain HTTP when [`is_insecure`], credentials from [`auth_for`].
    pub fn new(config: &Config, host: &str) -> Result<Self, RemoteError> {
        Self::with_options(config, host, ClientOptions::default())
    }

    pub fn with_options(
        config: &Config,
        host: &str,
        options: ClientOptions,
    ) -> Result<Self, RemoteError> {
        // An explicit endpoint wins over the config's; either replaces the host's address.
        let configured = config.registry(host).and_then(|r| r.endpoint.clone());
        let base = match options.endpoint.clone().or(configured) {
            Some(endpoint) => endpoint,
            None if host == DOCKER_HUB => "https://registry-1.docker.io".to_owned(),
            None if is_insecure(config, host) => format!("http://{host}"),
            None => format!("https://{host}"),
        };
        let base = Url::parse(&base).map_err(|err| {
            RemoteError::local(format!(
                "registry `{host}`: invalid address `{}`: {err}",
                Redacted::url(&base)
            ))
        })?;
        let http = reqwest::Client::builder()
            .user_agent(concat!("cachewarden/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(options.connect_timeout)
            .read_timeout(options.read_timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|err| {
                RemoteError::local(format!(
                    "registry `{host}`: cannot set up an HTTP client: {}",
                    transport_message(&err)
                ))
            })?;
        let credentials = auth_in(config, host, options.docker_config_dir.as_deref()).into();
        Ok(Self {
            host: host.to_owned(),
            base,
            http,
            credentials,
            retry: options.retry,
            tag_page_size: options.tag_page_size,
            challenge: RwLock::new(None),
            tokens: Mutex::new(HashMap::new()),
            unanswered: Mutex::new((0, String::new())),
        })
    }

    /// The registry host as references name it.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Every tag of `repository`, sorted, following `Link` pagination. A repository the
    /// registry does not know has no tags.
    pub async fn list_tags(&self, repository: &str) -> Result<Vec<String>, RemoteError> {
        #[derive(Deserialize)]
        struct Page {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let mut url = self.url(repository, "tags/list")?;
        if let Some(n) = self.tag_page_size {
            url.query_pairs_mut().append_pair("n", &n.to_string());
        }
        let mut tags = Vec::new();
        for page in 0.. {
            if page == MAX_TAG_PAGES {
                return Err(self.error(
                    &format!("list tags of `{repository}`"),
                    &format!("more than {MAX_TAG_PAGES} pages"),
                ));
            }
            let call = Call {
                method: Method::GET,
                what: format!("list tags of `{repository}`"),
                url: url.clone(),
                repository,
                access: Access::Pull,
                accept: Some("application/json"),
            };
            let response = self.send(&call).await?;
            match response.status() {
                StatusCode::OK => {}
                StatusCode::NOT_FOUND => {
                    self.registry_not_found(&call, response).await?;
                    if page == 0 {
                        return Ok(Vec::new());
                    }
                    // The repository went away between pages.
                    break;
                }
                _ => return Err(self.unexpected(&call, response).await),
            }
            let next = next_link(response.headers());
            let body = self.body(&call, response).await?;
            let parsed: Page = serde_json::from_slice(&body)
                .map_err(|err| self.error(&call.what, &format!("invalid JSON: {err}")))?;
            tags.extend(parsed.tags.unwrap_or_default());
            let Some(next) = next else { break };
            url = url.join(&next).map_err(|err| {
                self.error(
                    &call.what,
                    &format!("invalid `Link` `{}`: {err}", Redacted::url(&next)),
                )
            })?;
            // Credentials go only where they were meant to.
            if url.origin() != self.base.origin() {
                return Err(self.error(
                    &call.what,
                    &format!(
                        "the next page is on another host: `{}`",
                        Redacted::url(url.as_str())
                    ),
                ));
            }
        }
        tags.sort();
        tags.dedup();
        Ok(tags)
    }

    /// The digest, media type and size of a manifest by tag or digest; `None` when the
    /// registry does not have it.
    pub async fn head_manifest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<Option<ManifestHead>, RemoteError> {
        let call = self.manifest_call(Method::HEAD, repository, reference)?;
        let response = self.send(&call).await?;
        match response.status() {
            StatusCode::OK => {}
            // A HEAD answer has no body to say why: the GET's answer decides (a front before
            // the registry may put the registry's header on a 404 of its own).
            StatusCode::NOT_FOUND => return self.head_by_get(repository, reference).await,
            _ => return Err(self.unexpected(&call, response).await),
        }
        let headers = response.headers();
        let digest = header_str(headers, "docker-content-digest")
            .and_then(|d| Digest::parse(d, "manifest digest").ok());
        let size = header_str(headers, CONTENT_LENGTH.as_str()).and_then(|s| s.parse().ok());
        let media_type = header_str(headers, CONTENT_TYPE.as_str()).map(bare_media_type);
        match (digest, size, media_type) {
            (Some(digest), Some(size), Some(media_type)) if is_manifest_type(&media_type) => {
                Ok(Some(ManifestHead {
                    digest,
                    media_type,
                    size,
                }))
            }
            // Not every registry says everything on HEAD: ask for the manifest itself.
            _ => self.head_by_get(repository, reference).await,
        }
    }

    /// What a HEAD would have said, from the manifest itself.
    async fn head_by_get(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<Option<ManifestHead>, RemoteError> {
        Ok(self
            .get_manifest(repository, reference)
            .await?
            .map(|m| ManifestHead {
                size: m.bytes.len() as u64,
                digest: m.digest,
                media_type: m.media_type,
            }))
    }

    /// A manifest (OCI index or manifest, Docker list or manifest) by tag or digest; `None` when
    /// the registry does not have it. The digest is computed from the bytes and, for a
    /// reference by digest, checked against it.
    pub async fn get_manifest(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<Option<Manifest>, RemoteError> {
        let call = self.manifest_call(Method::GET, repository, reference)?;
        let response = self.send(&call).await?;
        match response.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => {
                self.registry_not_found(&call, response).await?;
                return Ok(None);
            }
            _ => return Err(self.unexpected(&call, response).await),
        }
        let content_type = header_str(response.headers(), CONTENT_TYPE.as_str()).map(str::to_owned);
        let bytes = self.body(&call, response).await?;
        let expected = Digest::parse(reference, "reference").ok();
        let algorithm = expected.as_ref().map_or("sha256", |d| {
            d.as_str().split(':').next().unwrap_or("sha256")
        });
        let digest = digest_of(&bytes, algorithm);
        if let Some(expected) = expected
            && expected != digest
        {
            return Err(self.error(
                &call.what,
                &format!("the registry sent content whose digest is `{digest}`"),
            ));
        }
        let media_type = manifest_media_type(content_type.as_deref(), &bytes);
        Ok(Some(Manifest {
            bytes,
            media_type,
            digest,
        }))
    }

    /// Deletes a manifest by digest. Every tag pointing at it goes with it; an index's child
    /// manifests do not. A 404 is [`DeleteOutcome::AlreadyGone`].
    pub async fn delete_manifest(
        &self,
        repository: &str,
        digest: &Digest,
    ) -> Result<DeleteOutcome, RemoteError> {
        let mut call = self.manifest_call(Method::DELETE, repository, digest.as_str())?;
        call.access = Access::Delete;
        call.accept = None;
        let response = self.send(&call).await?;
        let status = response.status();
        match status {
            StatusCode::ACCEPTED | StatusCode::OK | StatusCode::NO_CONTENT => {
                // Reading the (empty) body hands the connection back to the pool.
                let _ = response.bytes().await;
                return Ok(DeleteOutcome::Deleted);
            }
            StatusCode::NOT_FOUND => {
                self.registry_not_found(&call, response).await?;
                return Ok(DeleteOutcome::AlreadyGone);
            }
            _ => {}
        }
        let body = response.bytes().await.unwrap_or_default();
        let codes = error_codes(&body);
        if status == StatusCode::METHOD_NOT_ALLOWED || codes.iter().any(|(c, _)| c == "UNSUPPORTED")
        {
            return Err(RemoteError::status(
                status.as_u16(),
                format!(
                    "deletion is disabled on registry `{}`: set storage.delete.enabled: true \
                 (distribution) or enable deletes in the registry's settings ({}: {})",
                    self.host,
                    call.what,
                    status_text(status, &codes),
                ),
            ));
        }
        Err(self.status_error(&call, status, &codes))
    }

    /// A blob by digest (a config, or evidence), checked against its digest.
    pub async fn get_blob(
        &self,
        repository: &str,
        digest: &Digest,
    ) -> Result<Vec<u8>, RemoteError> {
        let call = Call {
            method: Method::GET,
            url: self.url(repository, &format!("blobs/{digest}"))?,
            repository,
            access: Access::Pull,
            accept: None,
            what: format!("GET blob `{repository}@{digest}`"),
        };
        let response = self.send(&call).await?;
        if response.status() != StatusCode::OK {
            return Err(self.unexpected(&call, response).await);
        }
        let bytes = self.body(&call, response).await?;
        let algorithm = digest.as_str().split(':').next().unwrap_or("sha256");
        let actual = digest_of(&bytes, algorithm);
        if &actual != digest {
            return Err(self.error(
                &call.what,
                &format!("the registry sent content whose digest is `{actual}`"),
            ));
        }
        Ok(bytes)
    }

    /// Fetches a manifest, parses it and classifies it, fetching the image config when the
    /// kind depends on it; `None` when the registry does not have the manifest.
    pub async fn inspect(
        &self,
        repository: &str,
        reference: &str,
    ) -> Result<Option<Inspected>, RemoteError> {
        let Some(manifest) = self.get_manifest(repository, reference).await? else {
            return Ok(None);
        };
        let parsed = parse_manifest(&manifest.bytes, &manifest.media_type).map_err(|err| {
            RemoteError::protocol(format!("registry `{}`: `{repository}`: {err}", self.host))
        })?;
        let config = match &parsed {
            ParsedManifest::Image { config, .. }
                if config.media_type != BUILDKIT_CACHE_CONFIG
                    && is_json_type(&config.media_type) =>
            {
                Some(self.get_blob(repository, &config.digest).await?)
            }
            _ => None,
        };
        let kind = classify(&parsed, config.as_deref());
        Ok(Some(Inspected {
            manifest,
            parsed,
            kind,
        }))
    }

    fn url(&self, repository: &str, rest: &str) -> Result<Url, RemoteError> {
        if !is_repository_name(repository) {
            return Err(RemoteError::local(format!(
                "registry `{}`: invalid repository name `{repository}`",
                self.host
            )));
        }
        self.base
            .join(&format!("/v2/{repository}/{rest}"))
            .map_err(|err| {
                RemoteError::protocol(format!(
                    "registry `{}`: `{repository}/{rest}`: {err}",
                    self.host
                ))
            })
    }

    fn manifest_call<'a>(
        &self,
        method: Method,
        repository: &'a str,
        reference: &str,
    ) -> Result<Call<'a>, RemoteError> {
        if !is_reference(reference) {
            return Err(RemoteError::local(format!(
                "registry `{}`: invalid tag or digest `{reference}` in `{repository}`",
                self.host
            )));
        }
        let separator = if reference.contains(':') { '@' } else { ':' };
        Ok(Call {
            what: format!("{method} `{repository}{separator}{reference}`"),
            url: self.url(repository, &format!("manifests/{reference}"))?,
            method,
            repository,
            access: Access::Pull,
            accept: Some(MANIFEST_ACCEPT),
        })
    }

    /// Sends a call, answering one auth challenge on the way.
    async fn send(&self, call: &Call<'_>) -> Result<Response, RemoteError> {
        let mut answered = false;
        loop {
            let authorization = self.authorization(call.repository, call.access).await?;
            let response = self
                .send_retrying(&call.what, || {
                    let mut request = self.http.request(call.method.clone(), call.url.clone());
                    if let Some(accept) = call.accept {
                        request = request.header(ACCEPT, accept);
                    }
                    match &authorization {
                        Authorization::None => request,
                        Authorization::Basic(user, password) => {
                            request.basic_auth(user, Some(password))
                        }
                        Authorization::Bearer(token) => request.bearer_auth(token),
                    }
                })
                .await?;
            if response.status() != StatusCode::UNAUTHORIZED {
                return Ok(response);
            }
            let challenge = challenge_of(response.headers());
            let rejected = match &authorization {
                Authorization::None => false,
                Authorization::Basic(..) => true,
                Authorization::Bearer(token) => {
                    self.forget_token(call.repository, call.access, token).await;
                    answered
                }
            };
            let Some(challenge) = challenge.filter(|_| !rejected && !answered) else {
                let body = response.bytes().await.unwrap_or_default();
                return Err(self.unauthorized(call, &error_codes(&body)));
            };
            let _ = response.bytes().await;
            if matches!(challenge, Challenge::Basic)
                && !matches!(self.credentials, Credentials::Basic { .. })
            {
                return Err(self.unauthorized(call, &[]));
            }
            *self.challenge.write().unwrap_or_else(|e| e.into_inner()) = Some(challenge);
            answered = true;
        }
    }

    /// The authorization for a request, from the challenge learned so far.
    async fn authorization(
        &self,
        repository: &str,
        access: Access,
    ) -> Result<Authorization, RemoteError> {
        let challenge = self
            .challenge
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match (challenge, &self.credentials) {
            (None, _) => Ok(Authorization::None),
            (Some(Challenge::Basic), Credentials::Basic { user, password }) => {
                Ok(Authorization::Basic(user.clone(), password.clone()))
            }
            (Some(Challenge::Basic), _) => Ok(Authorization::None),
            (Some(Challenge::Bearer { realm, service }), _) => {
                let slot = self.token_slot(repository, access);
                let mut token = slot.lock().await;
                if let Some(current) = token.as_ref()
                    && current.renew_at > Instant::now()
                {
                    return Ok(Authorization::Bearer(current.value.clone()));
                }
                let fresh = self
                    .fetch_token(&realm, service.as_deref(), repository, access)
                    .await?;
                let value = fresh.value.clone();
                *token = Some(fresh);
                Ok(Authorization::Bearer(value))
            }
        }
    }

    fn token_slot(&self, repository: &str, access: Access) -> TokenSlot {
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((repository.to_owned(), access))
            .or_default()
            .clone()
    }

    /// Drops a token the registry refused, unless another request already replaced it.
    async fn forget_token(&self, repository: &str, access: Access, refused: &str) {
        let slot = self.token_slot(repository, access);
        let mut token = slot.lock().await;
        if token.as_ref().is_some_and(|t| t.value == refused) {
            *token = None;
        }
    }

    /// Asks the token service for `repository:<name>:<actions>`.
    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        repository: &str,
        access: Access,
    ) -> Result<Token, RemoteError> {
        #[derive(Deserialize)]
        struct Answer {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let scope = format!("repository:{repository}:{}", access.actions());
        let what = format!("token for `{scope}` from `{}`", Redacted::url(realm));
        let mut url =
            Url::parse(realm).map_err(|err| self.error(&what, &format!("invalid realm: {err}")))?;
        let mut form: Vec<(&str, &str)> = Vec::new();
        if let Some(service) = service {
            form.push(("service", service));
        }
        form.push(("scope", &scope));
        let started = Instant::now();
        let response = match &self.credentials {
            // OAuth2 refresh-token grant, as `docker login` with an identity token does.
            Credentials::IdentityToken(refresh) => {
                form.extend([
                    ("grant_type", "refresh_token"),
                    ("client_id", "cachewarden"),
                    ("refresh_token", refresh.as_str()),
                ]);
                let body = form_encode(&form);
                self.send_retrying(&what, || {
                    self.http
                        .post(url.clone())
                        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                        .body(body.clone())
                })
                .await?
            }
            credentials => {
                if let Credentials::Basic { user, .. } = credentials {
                    form.push(("account", user));
                }
                url.query_pairs_mut().extend_pairs(&form);
                self.send_retrying(&what, || {
                    let request = self.http.get(url.clone());
                    match credentials {
                        Credentials::Basic { user, password } => {
                            request.basic_auth(user, Some(password))
                        }
                        _ => request,
                    }
                })
                .await?
            }
        };
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            let detail = match self.credentials {
                Credentials::Anonymous => format!(
                    "HTTP {status}; no credentials for `{}` in the docker config",
                    self.host
                ),
                _ => format!("HTTP {status}: the credentials were refused"),
            };
            return Err(self.error_of(RemoteKind::Auth, &what, &detail));
        }
        if status != StatusCode::OK {
            // A token endpoint's 404 says nothing of what the registry holds.
            let kind = match status {
                StatusCode::NOT_FOUND => RemoteKind::Protocol,
                _ => RemoteKind::Status(status.as_u16()),
            };
            return Err(self.error_of(kind, &what, &format!("HTTP {status}")));
        }
        let body = response
            .bytes()
            .await
            .map_err(|err| self.error_of(transport_kind(&err), &what, &transport_message(&err)))?;
        let answer: Answer = serde_json::from_slice(&body)
            .map_err(|_| self.error(&what, "the answer is not a token response"))?;
        let value = answer
            .token
            .or(answer.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| self.error(&what, "the answer holds no token"))?;
        // The spec's default lifetime is 60 s; renew a little early so a token does not expire
        // in flight.
        let lifetime = Duration::from_secs(answer.expires_in.unwrap_or(60).max(1));
        let margin = (lifetime / 10).min(Duration::from_secs(10));
        Ok(Token {
            value,
            renew_at: started + lifetime - margin,
        })
    }

    /// Sends a request built by `build`, again after transient failures per the retry policy.
    /// The last response is returned whatever its status. Once [`UNANSWERED_LIMIT`] tries in
    /// a row to this registry went unanswered, nothing more is sent: the request fails at
    /// once, as unreachable.
    async fn send_retrying(
        &self,
        what: &str,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<Response, RemoteError> {
        let mut attempt = 1;
        loop {
            if let Some(last) = self.given_up() {
                return Err(self.error_of(
                    RemoteKind::Unreachable,
                    what,
                    &format!("not sent: {last}"),
                ));
            }
            let sent = build().send().await;
            let gave_up = match &sent {
                Ok(_) => {
                    self.answered();
                    false
                }
                Err(err) if err.is_timeout() || err.is_connect() => {
                    self.unanswered(&transport_message(err))
                }
                Err(_) => false,
            };
            let wait = match sent {
                Ok(response)
                    if is_retryable_status(response.status().as_u16())
                        && self.retry.allows_another(attempt) =>
                {
                    let asked = header_str(response.headers(), RETRY_AFTER.as_str())
                        .and_then(|v| parse_retry_after(v, SystemTime::now()));
                    let _ = response.bytes().await;
                    self.retry.delay(attempt, asked, jitter_unit())
                }
                Ok(response) => return Ok(response),
                Err(err)
                    if is_retryable_error(&err)
                        && self.retry.allows_another(attempt)
                        && !gave_up =>
                {
                    self.retry.delay(attempt, None, jitter_unit())
                }
                Err(err) => {
                    let tries = if attempt > 1 {
                        format!(" (after {attempt} attempts)")
                    } else {
                        String::new()
                    };
                    let last = if gave_up {
                        format!(
                            "; {UNANSWERED_LIMIT} tries in a row went unanswered, so nothing more is sent to it"
                        )
                    } else {
                        String::new()
                    };
                    return Err(self.error_of(
                        transport_kind(&err),
                        what,
                        &format!("{}{tries}{last}", transport_message(&err)),
                    ));
                }
            };
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// How the last of [`UNANSWERED_LIMIT`] unanswered tries in a row failed, once there have
    /// been that many.
    fn given_up(&self) -> Option<String> {
        let unanswered = self.unanswered.lock().unwrap_or_else(|e| e.into_inner());
        (unanswered.0 >= UNANSWERED_LIMIT).then(|| {
            format!(
                "{} tries in a row went unanswered, the last: {}",
                unanswered.0, unanswered.1
            )
        })
    }

    /// A try was answered: the unanswered ones before it were not in a row.
    fn answered(&self) {
        self.unanswered.lock().unwrap_or_else(|e| e.into_inner()).0 = 0;
    }

    /// Counts a try that went unanswered, failing as `how`; whether that makes
    /// [`UNANSWERED_LIMIT`] in a row.
    fn unanswered(&self, how: &str) -> bool {
        let mut unanswered = self.unanswered.lock().unwrap_or_else(|e| e.into_inner());
        unanswered.0 += 1;
        unanswered.1 = how.to_owned();
        unanswered.0 >= UNANSWERED_LIMIT
    }

    async fn body(&self, call: &Call<'_>, response: Response) -> Result<Vec<u8>, RemoteError> {
        response.bytes().await.map(|b| b.to_vec()).map_err(|err| {
            self.error_of(transport_kind(&err), &call.what, &transport_message(&err))
        })
    }

    /// The registry answered something the protocol does not allow.
    fn error(&self, what: &str, detail: &str) -> RemoteError {
        self.error_of(RemoteKind::Protocol, what, detail)
    }

    fn error_of(&self, kind: RemoteKind, what: &str, detail: &str) -> RemoteError {
        RemoteError::new(
            kind,
            format!("registry `{}`: {what}: {}", self.host, one_line(detail)),
        )
    }

    /// Checks that a 404 is the registry's own "no such manifest or repository": an error body
    /// naming an unknown manifest, repository or blob (Harbor's `NOT_FOUND`, with the
    /// registry's API version header, too). Any other 404 (a proxy's maintenance page, an
    /// endpoint that is not a registry, a front that puts the registry's API version header on
    /// every answer, its own 404s too) proves nothing is gone, and is an error.
    async fn registry_not_found(
        &self,
        call: &Call<'_>,
        response: Response,
    ) -> Result<(), RemoteError> {
        let registry = response
            .headers()
            .contains_key("docker-distribution-api-version");
        let body = response.bytes().await.unwrap_or_default();
        let codes = error_codes(&body);
        if proves_absence(registry, &codes) {
            return Ok(());
        }
        let mut error = self.status_error(call, StatusCode::NOT_FOUND, &codes);
        // Not the registry's "nothing there": no caller may take it for one.
        error.kind = RemoteKind::Protocol;
        error.message.push_str(
            ", without the registry's error code for an unknown manifest, repository or blob: not taken as proof that nothing is there",
        );
        Err(error)
    }

    async fn unexpected(&self, call: &Call<'_>, response: Response) -> RemoteError {
        let status = response.status();
        let body = response.bytes().await.unwrap_or_default();
        let codes = error_codes(&body);
        if status == StatusCode::UNAUTHORIZED {
            return self.unauthorized(call, &codes);
        }
        self.status_error(call, status, &codes)
    }

    fn status_error(
        &self,
        call: &Call<'_>,
        status: StatusCode,
        codes: &[(String, String)],
    ) -> RemoteError {
        let mut detail = status_text(status, codes);
        if is_retryable_status(status.as_u16()) && self.retry.max_attempts > 1 {
            detail.push_str(&format!(
                " (gave up after {} attempts)",
                self.retry.max_attempts
            ));
        } else if status == StatusCode::FORBIDDEN {
            detail.push_str(&format!(
                "; the credentials for `{}` lack this permission on `{}`",
                self.host, call.repository
            ));
        }
        let kind = if status == StatusCode::FORBIDDEN {
            RemoteKind::Auth
        } else {
            RemoteKind::Status(status.as_u16())
        };
        self.error_of(kind, &call.what, &detail)
    }

    fn unauthorized(&self, call: &Call<'_>, codes: &[(String, String)]) -> RemoteError {
        let status = status_text(StatusCode::UNAUTHORIZED, codes);
        let detail = match self.credentials {
            Credentials::Anonymous => format!(
                "{status}; no credentials for `{}` in the docker config",
                self.host
            ),
            _ => format!(
                "{status}; the registry refused the credentials for `{}`",
                call.repository
            ),
        };
        self.error_of(RemoteKind::Auth, &call.what, &detail)
    }
}

/// Parses a manifest of the given media type (the body's own `mediaType`, or its shape,
/// decides when the media type says nothing). The error names the manifest by its digest.
pub fn parse_manifest(bytes: &[u8], media_type: &str) -> Result<ParsedManifest, RemoteError> {
    let media_type = manifest_media_type(Some(media_type), bytes);
    let name = || format!("manifest `{}`", digest_of(bytes, "sha256"));
    let invalid = |what: &str, err: &dyn fmt::Display| {
        RemoteError::protocol(format!(
            "{} of media type `{media_type}` is not a valid {what}: {}",
            name(),
            one_line(&err.to_string())
        ))
    };
    let descriptor = |d: &oci_spec::image::Descriptor| -> Result<Descriptor, RemoteError> {
        Ok(Descriptor {
            digest: Digest::parse(d.digest().as_ref(), "descriptor digest")
                .map_err(|err| invalid("manifest", &err))?,
            media_type: d.media_type().to_string(),
            size: d.size(),
        })
    };
    match media_type.as_str() {
        OCI_INDEX | DOCKER_MANIFEST_LIST => {
            let index = ImageIndex::from_reader(bytes).map_err(|err| invalid("index", &err))?;
            Ok(ParsedManifest::Index {
                manifests: index
                    .manifests()
                    .iter()
                    .map(descriptor)
                    .collect::<Result<_, _>>()?,
            })
        }
        OCI_MANIFEST | DOCKER_MANIFEST => {
            let manifest =
                ImageManifest::from_reader(bytes).map_err(|err| invalid("image manifest", &err))?;
            Ok(ParsedManifest::Image {
                config: descriptor(manifest.config())?,
                layers: manifest
                    .layers()
                    .iter()
                    .map(descriptor)
                    .collect::<Result<_, _>>()?,
            })
        }
        other => Err(RemoteError::protocol(format!(
            "{} has media type `{other}`, which is not an OCI or Docker schema 2 manifest",
            name()
        ))),
    }
}

/// The manifests an index lists (images, nested indexes), in order; none for an image
/// manifest. The blobs a BuildKit cache index lists are not manifests and are left out.
pub fn children(bytes: &[u8], media_type: &str) -> Result<Vec<Descriptor>, RemoteError> {
    Ok(match parse_manifest(bytes, media_type)? {
        ParsedManifest::Index { manifests } => manifests
            .into_iter()
            .filter(|d| is_manifest_type(&d.media_type))
            .collect(),
        ParsedManifest::Image { .. } => Vec::new(),
    })
}

/// Whether a manifest media type is an index (OCI index or Docker manifest list): its child
/// manifests are deleted with it.
pub fn is_index_type(media_type: &str) -> bool {
    matches!(media_type, OCI_INDEX | DOCKER_MANIFEST_LIST)
}

/// What a fetched manifest says about its digest for good: its media type and the manifests it
/// lists.
pub fn facts(manifest: &Manifest) -> Result<ManifestFacts, RemoteError> {
    Ok(ManifestFacts {
        digest: manifest.digest.clone(),
        media_type: manifest.media_type.clone(),
        children: children(&manifest.bytes, &manifest.media_type)?
            .into_iter()
            .map(|d| d.digest)
            .collect(),
    })
}

/// The blobs a manifest refers to: the config and the layers of an image manifest, the
/// non-manifest entries (cache layers and cache config) of an index.
pub fn blobs(bytes: &[u8], media_type: &str) -> Result<Vec<Descriptor>, RemoteError> {
    Ok(match parse_manifest(bytes, media_type)? {
        ParsedManifest::Index { manifests } => manifests
            .into_iter()
            .filter(|d| !is_manifest_type(&d.media_type))
            .collect(),
        ParsedManifest::Image { config, layers } => std::iter::once(config).chain(layers).collect(),
    })
}

/// What a manifest is. `config_json` is the image config blob, needed to recognise an inline
/// cache; without it an image manifest that is not a cache export is an [`ManifestKind::Image`].
pub fn classify(manifest: &ParsedManifest, config_json: Option<&[u8]>) -> ManifestKind {
    let is_cache = |d: &Descriptor| d.media_type == BUILDKIT_CACHE_CONFIG;
    match manifest {
        ParsedManifest::Index { manifests } if manifests.iter().any(is_cache) => {
            ManifestKind::BuildkitCacheIndex
        }
        ParsedManifest::Index { .. } => ManifestKind::Index,
        ParsedManifest::Image { config, layers }
            if is_cache(config) || layers.iter().any(is_cache) =>
        {
            ManifestKind::BuildkitCacheManifest
        }
        ParsedManifest::Image { .. } => {
            let inline = config_json
                .and_then(|json| {
                    serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(json).ok()
                })
                .is_some_and(|config| config.contains_key(INLINE_CACHE_KEY));
            if inline {
                ManifestKind::InlineCacheImage
            } else {
                ManifestKind::Image
            }
        }
    }
}

fn is_manifest_type(media_type: &str) -> bool {
    matches!(
        media_type,
        OCI_INDEX | OCI_MANIFEST | DOCKER_MANIFEST_LIST | DOCKER_MANIFEST
    )
}

fn is_json_type(media_type: &str) -> bool {
    media_type.ends_with("+json") || media_type.ends_with("/json")
}

/// The media type without parameters (`; charset=utf-8`).
fn bare_media_type(value: &str) -> String {
    value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// A manifest's media type: the header when it names a manifest type, else the body's
/// `mediaType`, else its shape (`manifests` makes an index).
fn manifest_media_type(header: Option<&str>, bytes: &[u8]) -> String {
    if let Some(header) = header.map(bare_media_type)
        && is_manifest_type(&header)
    {
        return header;
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Shape {
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
        config: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<Shape>(bytes) {
        Ok(Shape {
            media_type: Some(media_type),
            ..
        }) => media_type,
        Ok(Shape {
            manifests: Some(_), ..
        }) => OCI_INDEX.to_owned(),
        Ok(Shape {
            config: Some(_), ..
        }) => OCI_MANIFEST.to_owned(),
        _ => header
            .map(bare_media_type)
            .unwrap_or_else(|| "application/octet-stream".to_owned()),
    }
}

/// `algorithm:hex` of `bytes`; `sha512` or else `sha256`.
pub(crate) fn digest_of(bytes: &[u8], algorithm: &str) -> Digest {
    let (algorithm, hash) = if algorithm == "sha512" {
        ("sha512", Sha512::digest(bytes).to_vec())
    } else {
        ("sha256", Sha256::digest(bytes).to_vec())
    };
    let text = format!("{algorithm}:{}", hex::encode(hash));
    Digest::parse(&text, "computed digest").expect("a computed digest is well formed")
}

/// Repository names as the distribution spec allows them: lowercase path components.
fn is_repository_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('/').all(|component| {
            !component.is_empty()
                && component.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
                })
                && component
                    .bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_alphanumeric())
        })
}

/// A tag (`[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`) or a digest.
fn is_reference(reference: &str) -> bool {
    if reference.contains(':') {
        return Digest::parse(reference, "reference").is_ok();
    }
    let bytes = reference.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The challenge to answer: Bearer when offered, else Basic.
fn challenge_of(headers: &HeaderMap) -> Option<Challenge> {
    let challenges: Vec<Challenge> = headers
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(parse_challenge)
        .collect();
    challenges
        .iter()
        .find(|c| matches!(c, Challenge::Bearer { .. }))
        .or_else(|| challenges.first())
        .cloned()
}

/// Parses `Bearer realm="…",service="…",scope="…"` or `Basic realm="…"`.
fn parse_challenge(value: &str) -> Option<Challenge> {
    let value = value.trim();
    let (scheme, params) = value.split_once(' ').unwrap_or((value, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let params = parse_params(params);
    let get = |key: &str| {
        params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.clone())
    };
    Some(Challenge::Bearer {
        realm: get("realm").filter(|r| !r.is_empty())?,
        service: get("service"),
    })
}

/// `key=value` pairs separated by commas, values quoted (with `\` escapes) or bare.
fn parse_params(text: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace() || *c == ',').is_some() {}
        let key: String =
            std::iter::from_fn(|| chars.next_if(|c| *c != '=' && *c != ',')).collect();
        if key.trim().is_empty() {
            return pairs;
        }
        if chars.next_if_eq(&'=').is_none() {
            continue;
        }
        let mut value = String::new();
        if chars.next_if_eq(&'"').is_some() {
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value.extend(std::iter::from_fn(|| chars.next_if(|c| *c != ',')));
        }
        pairs.push((key.trim().to_owned(), value.trim().to_owned()));
    }
}

/// The `rel="next"` target of a `Link` header.
fn next_link(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|link| {
            let (target, params) = link.trim().strip_prefix('<')?.split_once('>')?;
            let is_next = params.split(';').any(|p| {
                let p = p.trim();
                p.strip_prefix("rel=").is_some_and(|rel| {
                    rel.trim_matches('"')
                        .split_whitespace()
                        .any(|r| r == "next")
                })
            });
            is_next.then(|| target.to_owned())
        })
}

/// The error codes of the distribution spec that say there is nothing by a name or digest.
const NOT_FOUND_CODES: &[&str] = &["MANIFEST_UNKNOWN", "NAME_UNKNOWN", "BLOB_UNKNOWN"];

/// Whether a 404's error `codes` say the registry holds nothing there: a code of the spec's, or
/// Harbor's `NOT_FOUND` from a server that says it is a registry (its API version header).
fn proves_absence(registry: bool, codes: &[(String, String)]) -> bool {
    codes.iter().any(|(code, _)| {
        NOT_FOUND_CODES.contains(&code.as_str()) || (registry && code == "NOT_FOUND")
    })
}

/// The distribution error codes and messages of an error body.
fn error_codes(body: &[u8]) -> Vec<(String, String)> {
    #[derive(Deserialize)]
    struct Errors {
        #[serde(default)]
        errors: Vec<Entry>,
    }
    #[derive(Deserialize)]
    struct Entry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    serde_json::from_slice::<Errors>(body)
        .map(|e| e.errors.into_iter().map(|e| (e.code, e.message)).collect())
        .unwrap_or_default()
}

/// `HTTP 405 Method Not Allowed (UNSUPPORTED: the operation is unsupported)`.
fn status_text(status: StatusCode, codes: &[(String, String)]) -> String {
    let mut text = format!("HTTP {status}");
    let described: Vec<String> = codes
        .iter()
        .take(3)
        .map(|(code, message)| {
            let message: String = one_line(message).chars().take(200).collect();
            match (code.is_empty(), message.is_empty()) {
                (false, false) => format!("{code}: {message}"),
                (false, true) => code.clone(),
                _ => message,
            }
        })
        .filter(|d| !d.is_empty())
        .collect();
    if !described.is_empty() {
        text.push_str(&format!(" ({})", described.join("; ")));
    }
    text
}

/// What a transport failure says about the registry: out of reach, or a broken exchange.
fn transport_kind(err: &reqwest::Error) -> RemoteKind {
    if err.is_timeout() || err.is_connect() {
        RemoteKind::Unreachable
    } else {
        RemoteKind::Protocol
    }
}

/// A transport failure on one line, without the URL (which the message names otherwise).
fn transport_message(err: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut text = if err.is_timeout() {
        "timed out".to_owned()
    } else if err.is_connect() {
        "cannot connect".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = err.source();
    let mut last = String::new();
    while let Some(cause) = source {
        let shown = cause.to_string();
        // Causes often repeat their source's text; keep each once.
        if !shown.is_empty() && !last.contains(&shown) && !text.contains(&shown) {
            text.push_str(": ");
            text.push_str(&shown);
        }
        last = shown;
        source = cause.source();
    }
    one_line(&text)
}

/// `application/x-www-form-urlencoded` text of `pairs`.
fn form_encode(pairs: &[(&str, &str)]) -> String {
    let mut url = Url::parse("http://form.invalid/").expect("a constant URL parses");
    url.query_pairs_mut().extend_pairs(pairs);
    url.query().unwrap_or_default().to_owned()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;

    /// Only a registry's own error code proves a 404 means nothing is there: a body of the
    /// spec's codes, or Harbor's `NOT_FOUND` with the registry's header; never the header alone
    /// or another code.
    #[test]
    fn only_a_registrys_code_proves_absence() {
        let codes = |list: &[&str]| -> Vec<(String, String)> {
            list.iter()
                .map(|c| ((*c).to_owned(), String::new()))
                .collect()
        };
        assert!(proves_absence(false, &codes(&["MANIFEST_UNKNOWN"])));
        assert!(proves_absence(false, &codes(&["NAME_UNKNOWN"])));
        assert!(proves_absence(true, &codes(&["NOT_FOUND"])));
        assert!(!proves_absence(false, &codes(&["NOT_FOUND"])));
        assert!(!proves_absence(true, &codes(&[])));
        assert!(!proves_absence(true, &codes(&["UNAUTHORIZED"])));
    }

    /// A loopback server that holds the connections whose number (from 0) `hangs` names
    /// open without a word, and answers the others with the registry's 404 for an unknown
    /// manifest; it returns its address and the count of connections it took.
    fn hanging_registry(hangs: fn(usize) -> bool) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let taken = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = Arc::clone(&taken);
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let n = count.fetch_add(1, Ordering::SeqCst);
                if hangs(n) {
                    held.push(stream);
                    continue;
                }
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request);
                let body =
                    r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#;
                let _ = write!(
                    stream,
                    "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nDocker-Distribution-Api-Version: registry/2.0\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        (address, taken)
    }

    fn impatient_client(address: &str) -> RegistryClient {
        RegistryClient::with_options(
            &Config::default(),
            "registry.test",
            ClientOptions {
                endpoint: Some(format!("http://{address}")),
                retry: RetryPolicy {
                    max_attempts: 2,
                    base_delay: Duration::from_millis(1),
                    ..RetryPolicy::default()
                },
                read_timeout: Duration::from_millis(200),
                ..ClientOptions::default()
            },
        )
        .unwrap()
    }

    const MISSING: &str = "sha256:8888888888888888888888888888888888888888888888888888888888888888";

    /// A registry that stops answering is given up on after three tries in a row: the
    /// requests after them fail at once as unreachable, none of them sent, and none is taken
    /// for an absent manifest.
    #[tokio::test]
    async fn a_registry_that_stops_answering_is_not_asked_again() {
        let (address, taken) = hanging_registry(|_| true);
        let client = impatient_client(&address);
        let started = Instant::now();
        for _ in 0..6 {
            let err = client
                .head_manifest("cache/app", MISSING)
                .await
                .unwrap_err();
            assert_eq!(err.kind, RemoteKind::Unreachable, "{err}");
        }
        assert_eq!(taken.load(Ordering::SeqCst), UNANSWERED_LIMIT as usize);
        let err = client.get_manifest("cache/app", MISSING).await.unwrap_err();
        assert!(err.to_string().contains("not sent"), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }

    /// Only tries in a row count: an answer between them starts the count again.
    #[tokio::test]
    async fn an_answer_starts_the_unanswered_count_again() {
        // Two hang, the next answers, two more hang, and then all answer.
        let (address, taken) = hanging_registry(|n| matches!(n, 0 | 1 | 4 | 5));
        let client = impatient_client(&address);
        // Two tries of the first request hang; the next request is answered (by a HEAD and
        // the GET that confirms its 404).
        assert!(client.head_manifest("cache/app", MISSING).await.is_err());
        assert_eq!(
            client.head_manifest("cache/app", MISSING).await.unwrap(),
            None
        );
        assert!(client.head_manifest("cache/app", MISSING).await.is_err());
        assert_eq!(
            client.head_manifest("cache/app", MISSING).await.unwrap(),
            None
        );
        assert_eq!(taken.load(Ordering::SeqCst), 8);
    }

    const CACHE_INDEX: &str = r#"{
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
             "digest": "sha256:1111111111111111111111111111111111111111111111111111111111111111", "size": 10},
            {"mediaType": "application/vnd.buildkit.cacheconfig.v0",
             "digest": "sha256:2222222222222222222222222222222222222222222222222222222222222222", "size": 20}
        ]}"#;

    const IMAGE_INDEX: &str = r#"{
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
        "manifests": [
            {"mediaType": "application/vnd.docker.distribution.manifest.v2+json",
             "digest": "sha256:3333333333333333333333333333333333333333333333333333333333333333", "size": 30,
             "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json",
             "digest": "sha256:4444444444444444444444444444444444444444444444444444444444444444", "size": 40,
             "platform": {"architecture": "arm64", "os": "linux"}},
            {"mediaType": "application/vnd.in-toto+json",
             "digest": "sha256:5555555555555555555555555555555555555555555555555555555555555555", "size": 50}
        ]}"#;

    fn image_manifest(config_type: &str) -> String {
        format!(
            r#"{{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {{"mediaType": "{config_type}",
                  "digest": "sha256:6666666666666666666666666666666666666666666666666666666666666666", "size": 60}},
                "layers": [{{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                  "digest": "sha256:7777777777777777777777777777777777777777777777777777777777777777", "size": 70}}]}}"#
        )
    }

    fn parsed(text: &str, media_type: &str) -> ParsedManifest {
        parse_manifest(text.as_bytes(), media_type).unwrap()
    }

    fn digests(descriptors: &[Descriptor]) -> Vec<char> {
        descriptors
            .iter()
            .map(|d| d.digest.as_str().chars().last().unwrap())
            .collect()
    }

    #[test]
    fn classifies_cache_exports_images_and_indexes() {
        let config = "application/vnd.oci.image.config.v1+json";
        assert_eq!(
            classify(&parsed(CACHE_INDEX, OCI_INDEX), None),
            ManifestKind::BuildkitCacheIndex
        );
        assert_eq!(
            classify(&parsed(IMAGE_INDEX, DOCKER_MANIFEST_LIST), None),
            ManifestKind::Index
        );
        assert_eq!(
            classify(
                &parsed(&image_manifest(BUILDKIT_CACHE_CONFIG), OCI_MANIFEST),
                None
            ),
            ManifestKind::BuildkitCacheManifest
        );
        let image = parsed(&image_manifest(config), OCI_MANIFEST);
        assert_eq!(classify(&image, None), ManifestKind::Image);
        assert_eq!(
            classify(&image, Some(br#"{"architecture":"amd64"}"#)),
            ManifestKind::Image
        );
        assert_eq!(classify(&image, Some(b"not json")), ManifestKind::Image);
        // Only a top-level key counts.
        assert_eq!(
            classify(
                &image,
                Some(br#"{"config":{"moby.buildkit.cache.v0":"x"}}"#)
            ),
            ManifestKind::Image
        );
        assert_eq!(
            classify(
                &image,
                Some(br#"{"architecture":"amd64","moby.buildkit.cache.v0":"e30="}"#)
            ),
            ManifestKind::InlineCacheImage
        );
    }

    #[test]
    fn children_are_the_manifests_an_index_lists() {
        let list = children(IMAGE_INDEX.as_bytes(), DOCKER_MANIFEST_LIST).unwrap();
        assert_eq!(digests(&list), ['3', '4']);
        assert_eq!(list[0].media_type, DOCKER_MANIFEST);
        assert_eq!(list[1].size, 40);
        assert!(
            children(CACHE_INDEX.as_bytes(), OCI_INDEX)
                .unwrap()
                .is_empty()
        );
        assert!(
            children(image_manifest("x/y").as_bytes(), OCI_MANIFEST)
                .unwrap()
                .is_empty()
        );
    }

    /// The facts of an index name its child manifests only; a manifest has none; only the
    /// two index media types count as an index.
    #[test]
    fn facts_name_an_index_child_manifests() {
        let fetched = |text: &str, media_type: &str| Manifest {
            bytes: text.as_bytes().to_vec(),
            media_type: media_type.to_owned(),
            digest: digest_of(text.as_bytes(), "sha256"),
        };
        let list = facts(&fetched(IMAGE_INDEX, DOCKER_MANIFEST_LIST)).unwrap();
        assert_eq!(list.digest, digest_of(IMAGE_INDEX.as_bytes(), "sha256"));
        assert_eq!(list.media_type, DOCKER_MANIFEST_LIST);
        let last = |d: &Digest| d.as_str().chars().last().unwrap();
        assert_eq!(
            list.children.iter().map(last).collect::<Vec<_>>(),
            ['3', '4']
        );
        assert!(
            facts(&fetched(CACHE_INDEX, OCI_INDEX))
                .unwrap()
                .children
                .is_empty()
        );
        let manifest = facts(&fetched(&image_manifest("x/y"), OCI_MANIFEST)).unwrap();
        assert!(manifest.children.is_empty());
        assert!(is_index_type(OCI_INDEX) && is_index_type(DOCKER_MANIFEST_LIST));
        assert!(!is_index_type(OCI_MANIFEST) && !is_index_type(DOCKER_MANIFEST));
    }

    #[test]
    fn blobs_are_config_and_layers_or_non_manifest_entries() {
        let manifest = image_manifest(BUILDKIT_CACHE_CONFIG);
        assert_eq!(
            digests(&blobs(manifest.as_bytes(), OCI_MANIFEST).unwrap()),
            ['6', '7']
        );
        assert_eq!(
            digests(&blobs(CACHE_INDEX.as_bytes(), OCI_INDEX).unwrap()),
            ['1', '2']
        );
        assert_eq!(
            digests(&blobs(IMAGE_INDEX.as_bytes(), OCI_INDEX).unwrap()),
            ['5']
        );
    }

    #[test]
    fn media_type_falls_back_to_the_body() {
        let manifest = image_manifest("x/y");
        for header in [
            None,
            Some("application/json"),
            Some("text/plain; charset=utf-8"),
        ] {
            assert_eq!(
                manifest_media_type(header, manifest.as_bytes()),
                OCI_MANIFEST
            );
        }
        assert_eq!(
            manifest_media_type(
                Some("application/vnd.oci.image.index.v1+json; charset=utf-8"),
                b"{}"
            ),
            OCI_INDEX
        );
        assert_eq!(manifest_media_type(None, br#"{"manifests":[]}"#), OCI_INDEX);
        assert!(matches!(
            parse_manifest(br#"{"schemaVersion":2,"manifests":[]}"#, "application/json"),
            Ok(ParsedManifest::Index { manifests }) if manifests.is_empty()
        ));
    }

    #[test]
    fn malformed_manifests_are_named_by_digest() {
        let err = parse_manifest(b"{", OCI_MANIFEST).unwrap_err().to_string();
        assert!(err.starts_with("manifest `sha256:"), "{err}");
        assert!(err.contains("not a valid image manifest"), "{err}");
        assert!(!err.contains('\n'), "{err}");
        let schema1 = parse_manifest(
            br#"{"schemaVersion":1}"#,
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
        )
        .unwrap_err()
        .to_string();
        assert!(
            schema1.contains("not an OCI or Docker schema 2 manifest"),
            "{schema1}"
        );
    }

    #[test]
    fn parses_bearer_and_basic_challenges() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,delete""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"bearer realm=https://a/t, service="s\"q""#),
            Some(Challenge::Bearer {
                realm: "https://a/t".into(),
                service: Some("s\"q".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Bearer service=\"s\""), None);
        assert_eq!(parse_challenge("Negotiate abc"), None);

        let mut headers = HeaderMap::new();
        headers.append(WWW_AUTHENTICATE, "Basic realm=\"r\"".parse().unwrap());
        headers.append(
            WWW_AUTHENTICATE,
            "Bearer realm=\"https://t\"".parse().unwrap(),
        );
        assert!(matches!(
            challenge_of(&headers),
            Some(Challenge::Bearer { .. })
        ));
    }

    #[test]
    fn follows_next_links_only() {
        let mut headers = HeaderMap::new();
        assert_eq!(next_link(&headers), None);
        headers.insert(
            LINK,
            r#"</v2/a/tags/list?last=b&n=2>; rel="next""#.parse().unwrap(),
        );
        assert_eq!(
            next_link(&headers).as_deref(),
            Some("/v2/a/tags/list?last=b&n=2")
        );
        headers.insert(
            LINK,
            r#"<https://x/prev>; rel="prev", <https://x/next>; rel=next"#
                .parse()
                .unwrap(),
        );
        assert_eq!(next_link(&headers).as_deref(), Some("https://x/next"));
        headers.insert(LINK, r#"<https://x/first>; rel="first""#.parse().unwrap());
        assert_eq!(next_link(&headers), None);
    }

    #[test]
    fn describes_registry_errors_on_one_line() {
        let body =
            br#"{"errors":[{"code":"UNSUPPORTED","message":"The operation\nis unsupported."}]}"#;
        let codes = error_codes(body);
        assert_eq!(
            status_text(StatusCode::METHOD_NOT_ALLOWED, &codes),
            "HTTP 405 Method Not Allowed (UNSUPPORTED: The operation is unsupported.)"
        );
        assert_eq!(
            status_text(StatusCode::BAD_GATEWAY, &error_codes(b"<html>")),
            "HTTP 502 Bad Gateway"
        );
    }

    #[test]
    fn validates_names_and_references() {
        for good in ["a", "cache/app", "my-org/app_1.x", "a/b/c"] {
            assert!(is_repository_name(good), "{good}");
        }
        for bad in ["", "A", "a//b", "/a", "a/", "../a", "a?b", "-a"] {
            assert!(!is_repository_name(bad), "{bad}");
        }
        for good in [
            "latest",
            "v1.2-rc_3",
            "_x",
            &format!("sha256:{}", "a".repeat(64)),
        ] {
            assert!(is_reference(good), "{good}");
        }
        for bad in ["", ".x", "-x", "a/b", "sha256:zz", &"a".repeat(129)] {
            assert!(!is_reference(bad), "{bad}");
        }
    }

    #[test]
    fn computes_digests_and_form_bodies() {
        assert_eq!(
            digest_of(b"{}", "sha256").as_str(),
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        assert!(
            digest_of(b"", "sha512")
                .as_str()
                .starts_with("sha512:cf83e135")
        );
        assert_eq!(
            form_encode(&[("scope", "repository:a/b:pull,delete"), ("x", "a b&c")]),
            "scope=repository%3Aa%2Fb%3Apull%2Cdelete&x=a+b%26c"
        );
    }

    #[test]
    fn credentials_never_show_in_debug() {
        let basic = Credentials::Basic {
            user: "ci".into(),
            password: "hunter2".into(),
        };
        let identity = Credentials::IdentityToken("refresh-secret".into());
        assert_eq!(format!("{basic:?}"), "Basic(ci, ***)");
        assert_eq!(format!("{identity:?}"), "IdentityToken(***)");
    }

    #[test]
    fn docker_config_dir_supplies_credentials() {
        let dir = tempfile::tempdir().unwrap();
        // `ci:hunter2`
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"auths":{"reg.example:5000":{"auth":"Y2k6aHVudGVyMg=="}}}"#,
        )
        .unwrap();
        let config = Config::default();
        assert!(matches!(
            auth_in(&config, "reg.example:5000", Some(dir.path())),
            RegistryAuth::Basic(user, password) if user == "ci" && password == "hunter2"
        ));
        assert!(matches!(
            auth_in(&config, "other.example", Some(dir.path())),
            RegistryAuth::Anonymous
        ));
        let missing = dir.path().join("missing");
        assert!(matches!(
            auth_in(&config, "reg.example:5000", Some(&missing)),
            RegistryAuth::Anonymous
        ));
    }
}
