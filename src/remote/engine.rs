//! Docker Engine API helpers: addresses, the raw connection the BuildKit client upgrades, and
//! the few image and build-cache calls cachewarden makes through bollard.

use std::collections::HashSet;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use bollard::query_parameters::RemoveImageOptionsBuilder;
use bollard::{API_DEFAULT_VERSION, Docker};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::header::{CONNECTION, HOST, UPGRADE};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};

use crate::error::{RemoteError, RemoteKind};
use crate::remote::cache_record::CacheRecord;

/// How long one Engine API call may take.
const ENGINE_TIMEOUT: Duration = Duration::from_secs(120);

/// Where a Docker Engine or buildkitd listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineAddr {
    /// `unix:///run/docker.sock` (or a bare absolute path).
    Unix(PathBuf),
    /// `tcp://host:port`, plain TCP.
    Tcp(String),
}

impl EngineAddr {
    /// Parses `unix:///path`, `tcp://host:port`, `http://host:port` or an absolute socket path.
    pub fn parse(endpoint: &str) -> Result<Self, RemoteError> {
        let shown = redact(endpoint);
        let unsupported = |why: &str| RemoteError::local(format!("endpoint `{shown}`: {why}"));
        if let Some(path) = endpoint.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(unsupported(
                    "a unix socket path must be absolute (`unix:///path`)",
                ));
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        if endpoint.starts_with('/') {
            return Ok(Self::Unix(PathBuf::from(endpoint)));
        }
        if let Some(rest) = endpoint
            .strip_prefix("tcp://")
            .or_else(|| endpoint.strip_prefix("http://"))
        {
            let authority = rest.split('/').next().unwrap_or_default();
            let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
            let has_port = host_port
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !has_port {
                return Err(unsupported("expected `tcp://host:port`"));
            }
            return Ok(Self::Tcp(host_port.to_owned()));
        }
        match endpoint.split_once("://") {
            Some((scheme, _)) => Err(unsupported(&format!(
                "`{scheme}://` endpoints are not supported; use `unix://` or `tcp://`"
            ))),
            None => Err(unsupported("expected `unix:///path` or `tcp://host:port`")),
        }
    }

    /// The address as `DOCKER_HOST` for the `docker` CLI: rebuilt from what was parsed, so a
    /// recorded endpoint of another scheme (`ssh://` runs `ssh` with the recorded host) never
    /// reaches the CLI.
    pub fn docker_host(&self) -> String {
        match self {
            Self::Unix(path) => format!("unix://{}", path.display()),
            Self::Tcp(host_port) => format!("tcp://{host_port}"),
        }
    }

    /// Opens a connection to the address.
    pub(crate) async fn dial(&self) -> io::Result<DialedStream> {
        match self {
            Self::Unix(path) => Ok(DialedStream::Unix(UnixStream::connect(path).await?)),
            Self::Tcp(host_port) => {
                let stream = TcpStream::connect(host_port.as_str()).await?;
                stream.set_nodelay(true)?;
                Ok(DialedStream::Tcp(stream))
            }
        }
    }
}

/// A connection opened by [`EngineAddr::dial`].
pub(crate) enum DialedStream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

/// An endpoint as it may be shown: any `user:password@` is replaced by `***@`.
pub fn redact(endpoint: &str) -> String {
    let Some((scheme, rest)) = endpoint.split_once("://") else {
        return endpoint.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => endpoint.to_owned(),
    }
}

/// An error's message and its causes on one line.
pub(crate) fn one_line(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cause {
        let text = e
            .to_string()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cause = e.source();
    }
    parts.join(": ")
}

fn io_other(err: impl std::error::Error + Send + Sync + 'static) -> io::Error {
    io::Error::other(one_line(&err))
}

/// Sends `POST /grpc` with `Upgrade: h2c` and returns the connection once the daemon has
/// switched protocols: from then on it carries HTTP/2 (gRPC) to the embedded BuildKit.
pub(crate) async fn upgrade_to_h2c(stream: DialedStream) -> io::Result<hyper::upgrade::Upgraded> {
    match stream {
        DialedStream::Unix(s) => upgrade_stream(s).await,
        DialedStream::Tcp(s) => upgrade_stream(s).await,
    }
}

async fn upgrade_stream<S>(stream: S) -> io::Result<hyper::upgrade::Upgraded>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(io_other)?;
    tokio::spawn(async move {
        // Ends when the upgrade completes or the connection closes; either way the outcome
        // reaches the caller through the response.
        let _ = connection.with_upgrades().await;
    });
    let request = Request::post("/grpc")
        .header(HOST, "docker")
        .header(CONNECTION, "Upgrade")
        .header(UPGRADE, "h2c")
        .body(Empty::<Bytes>::new())
        .map_err(io_other)?;
    let response = sender.send_request(request).await.map_err(io_other)?;
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let body = String::from_utf8_lossy(&body);
        let body = body.split_whitespace().collect::<Vec<_>>().join(" ");
        let detail = if body.is_empty() {
            String::new()
        } else {
            format!(" ({})", truncate(&body, 200))
        };
        return Err(io::Error::other(format!(
            "POST /grpc answered {status} instead of 101 Switching Protocols{detail}; \
             the daemon does not serve the BuildKit API"
        )));
    }
    hyper::upgrade::on(response).await.map_err(io_other)
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

/// A plain HTTP/1.1 GET on a fresh connection; returns status and body.
async fn raw_get(addr: &EngineAddr, path: &str) -> io::Result<(StatusCode, Bytes)> {
    async fn exchange<S>(stream: S, path: &str) -> io::Result<(StatusCode, Bytes)>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(io_other)?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let request = Request::get(path)
            .header(HOST, "docker")
            .body(Empty::<Bytes>::new())
            .map_err(io_other)?;
        let response = sender.send_request(request).await.map_err(io_other)?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(io_other)?
            .to_bytes();
        Ok((status, body))
    }
    match addr.dial().await? {
        DialedStream::Unix(s) => exchange(s, path).await,
        DialedStream::Tcp(s) => exchange(s, path).await,
    }
}

/// A local image as `docker image inspect` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalImage {
    /// The image id, `sha256:...` of the config.
    pub id: String,
    /// `repo@sha256:...` for each registry the image was pushed to or pulled from.
    pub repo_digests: Vec<String>,
    pub repo_tags: Vec<String>,
}

/// A Docker Engine reached through bollard, with the API version negotiated.
pub struct Engine {
    docker: Docker,
    addr: EngineAddr,
    shown: String,
}

impl Engine {
    /// Connects to `unix:///path` or `tcp://host:port` and negotiates the API version.
    pub async fn connect(endpoint: &str) -> Result<Self, RemoteError> {
        let shown = redact(endpoint);
        let addr = EngineAddr::parse(endpoint)?;
        let fail = |what: &str, err: bollard::errors::Error| {
            RemoteError::new(
                engine_kind(&err),
                format!("Docker Engine at {shown}: {what}: {}", one_line(&err)),
            )
        };
        let timeout = ENGINE_TIMEOUT.as_secs();
        let docker = match &addr {
            EngineAddr::Unix(path) => {
                Docker::connect_with_unix(&path.to_string_lossy(), timeout, API_DEFAULT_VERSION)
            }
            EngineAddr::Tcp(host_port) => Docker::connect_with_http(
                &format!("tcp://{host_port}"),
                timeout,
                API_DEFAULT_VERSION,
            ),
        }
        .map_err(|err| fail("cannot connect", err))?;
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|err| fail("cannot negotiate the API version", err))?;
        Ok(Self {
            docker,
            addr,
            shown,
        })
    }

    /// The negotiated API version, `1.41` for Docker 20.10.
    pub fn api_version(&self) -> String {
        let v = self.docker.client_version();
        format!("{}.{}", v.major_version, v.minor_version)
    }

    /// The Docker Engine's version (`26.1.5`, `20.10.24+dfsg1`).
    pub async fn server_version(&self) -> Result<String, RemoteError> {
        let version = self
            .docker
            .version()
            .await
            .map_err(|err| self.error("cannot read the version", &err))?;
        Ok(version.version.unwrap_or_default())
    }

    /// The endpoint as it may be shown.
    pub fn endpoint(&self) -> &str {
        &self.shown
    }

    /// Inspects a local image by id or reference; `None` when the daemon does not have it.
    pub async fn image_inspect(&self, reference: &str) -> Result<Option<LocalImage>, RemoteError> {
        match self.docker.inspect_image(reference).await {
            Ok(image) => Ok(Some(LocalImage {
                id: image.id.unwrap_or_default(),
                repo_digests: image.repo_digests.unwrap_or_default(),
                repo_tags: image.repo_tags.unwrap_or_default(),
            })),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(err) => Err(self.error(&format!("cannot inspect image `{reference}`"), &err)),
        }
    }

    /// Removes a local image (untags a reference, deletes an id); `false` when it was not
    /// there. Without `force` the daemon refuses images that containers use or that several
    /// references name.
    pub async fn remove_image(&self, reference: &str, force: bool) -> Result<bool, RemoteError> {
        let options = RemoveImageOptionsBuilder::new().force(force).build();
        match self
            .docker
            .remove_image(reference, Some(options), None)
            .await
        {
            Ok(_) => Ok(true),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(false),
            Err(err) => Err(self.error(&format!("cannot remove image `{reference}`"), &err)),
        }
    }

    /// Every manifest digest and image id the engine holds under any name (`GET /images/json`
    /// with intermediate images and digests): one request where inspecting each of thousands
    /// of references would take one each. See [`surely_absent`].
    pub async fn image_digests(&self) -> Result<HashSet<String>, RemoteError> {
        let path = format!("/v{}/images/json?all=1&digests=1", self.api_version());
        let fail = |kind: RemoteKind, why: String| {
            RemoteError::new(
                kind,
                format!("Docker Engine at {}: GET {path}: {why}", self.shown),
            )
        };
        let (status, body) = raw_get(&self.addr, &path)
            .await
            .map_err(|err| fail(io_kind(&err), one_line(&err)))?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body);
            return Err(fail(
                RemoteKind::Status(status.as_u16()),
                format!("answered {status}: {}", truncate(text.trim(), 200)),
            ));
        }
        let images: Vec<ImageSummary> = serde_json::from_slice(&body)
            .map_err(|err| fail(RemoteKind::Protocol, format!("unexpected answer: {err}")))?;
        let mut digests = HashSet::new();
        for image in images {
            for name in image.repo_digests.into_iter().flatten() {
                if let Some((_, digest)) = name.rsplit_once('@') {
                    digests.insert(digest.to_owned());
                }
            }
            digests.insert(image.id);
        }
        Ok(digests)
    }

    /// The build-cache records from `GET /system/df`, which bollard's typed call drops on
    /// API 1.41.
    pub async fn build_cache(&self) -> Result<Vec<CacheRecord>, RemoteError> {
        let path = format!("/v{}/system/df", self.api_version());
        let fail = |kind: RemoteKind, why: String| {
            RemoteError::new(
                kind,
                format!("Docker Engine at {}: GET {path}: {why}", self.shown),
            )
        };
        // The socket or port not answering is the engine out of reach; anything after the
        // exchange began is a broken one.
        let (status, body) = raw_get(&self.addr, &path)
            .await
            .map_err(|err| fail(io_kind(&err), one_line(&err)))?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body);
            return Err(fail(
                RemoteKind::Status(status.as_u16()),
                format!("answered {status}: {}", truncate(text.trim(), 200)),
            ));
        }
        let df: SystemDf = serde_json::from_slice(&body)
            .map_err(|err| fail(RemoteKind::Protocol, format!("unexpected answer: {err}")))?;
        Ok(df
            .build_cache
            .unwrap_or_default()
            .into_iter()
            .map(DfBuildCache::into_record)
            .collect())
    }

    /// The bollard client, for calls this module does not wrap.
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    fn error(&self, what: &str, err: &bollard::errors::Error) -> RemoteError {
        RemoteError::new(
            engine_kind(err),
            format!("Docker Engine at {}: {what}: {}", self.shown, one_line(err)),
        )
    }
}

/// What a bollard failure says about the engine: out of reach (no socket, refused, timed out),
/// an HTTP status it answered, or a broken exchange.
fn engine_kind(err: &bollard::errors::Error) -> RemoteKind {
    use bollard::errors::Error as E;
    match err {
        E::RequestTimeoutError | E::SocketNotFoundError(_) => RemoteKind::Unreachable,
        E::IOError { err } => io_kind(err),
        E::HyperLegacyError { err } if err.is_connect() => RemoteKind::Unreachable,
        E::DockerResponseServerError { status_code, .. } => match *status_code {
            401 | 403 => RemoteKind::Auth,
            code => RemoteKind::Status(code),
        },
        _ => RemoteKind::Protocol,
    }
}

/// An I/O failure while dialing or talking to the engine: which ones mean out of reach.
fn io_kind(err: &io::Error) -> RemoteKind {
    use io::ErrorKind as K;
    match err.kind() {
        K::NotFound
        | K::ConnectionRefused
        | K::ConnectionReset
        | K::ConnectionAborted
        | K::NotConnected
        | K::TimedOut
        | K::AddrNotAvailable
        | K::PermissionDenied => RemoteKind::Unreachable,
        _ => RemoteKind::Protocol,
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ImageSummary {
    id: String,
    #[serde(default)]
    repo_digests: Option<Vec<String>>,
}

/// Whether an engine whose images hold exactly `digests` (see [`Engine::image_digests`])
/// surely has no image under `reference`. Only a reference pinned to a full digest
/// (`NAME@sha256:HEX`, or an image id `sha256:HEX`) can be: the engine resolves such a name
/// through an image that lists it among its repo digests (or, for an id, is that image), so a
/// digest it lists nowhere names nothing there. Any other reference (a tag, a short id) is
/// never surely absent, and is asked about.
pub fn surely_absent(reference: &str, digests: &HashSet<String>) -> bool {
    let digest = reference
        .rsplit_once('@')
        .map_or(reference, |(_, digest)| digest);
    let Some(hex) = digest.strip_prefix("sha256:") else {
        return false;
    };
    let full = hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    full && !digests.contains(digest)
}

#[derive(Deserialize)]
struct SystemDf {
    #[serde(rename = "BuildCache")]
    build_cache: Option<Vec<DfBuildCache>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DfBuildCache {
    #[serde(rename = "ID")]
    id: String,
    #[serde(default)]
    parent: Option<String>,
    /// Docker 25 and 26 spell the key `" Parents"`, with a leading space (a typo in their API
    /// types), and leave `Parent` empty.
    #[serde(default, alias = " Parents")]
    parents: Option<Vec<String>>,
    #[serde(default, rename = "Type")]
    record_type: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    in_use: bool,
    #[serde(default)]
    shared: bool,
    #[serde(default)]
    size: i64,
    #[serde(default)]
    created_at: Option<String>,
    #[serde(default)]
    last_used_at: Option<String>,
    #[serde(default)]
    usage_count: i64,
}

impl DfBuildCache {
    fn into_record(self) -> CacheRecord {
        let time = |t: Option<String>| t.and_then(|t| crate::time::parse_rfc3339(&t, "time").ok());
        let mut parents = self.parents.unwrap_or_default();
        if parents.is_empty()
            && let Some(parent) = self.parent.filter(|p| !p.is_empty())
        {
            parents.push(parent);
        }
        CacheRecord {
            id: self.id,
            record_type: self.record_type,
            description: self.description,
            mutable: false,
            in_use: self.in_use,
            shared: self.shared,
            size: self.size,
            parents,
            created_at: time(self.created_at),
            last_used_at: time(self.last_used_at),
            usage_count: self.usage_count,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only a reference pinned to a full digest that the engine lists nowhere is taken as
    /// absent without asking: a tag, a short or malformed digest, or a digest the engine lists
    /// under any name or as an image id is asked about, so no local image is passed over.
    #[test]
    fn only_an_unlisted_full_digest_is_surely_absent() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let c = format!("sha256:{}", "c".repeat(64));
        let listed: HashSet<String> = [a.clone(), b.clone()].into();
        assert!(surely_absent(&format!("reg:5000/cache@{c}"), &listed));
        assert!(surely_absent(&c, &listed));
        // Listed as a repo digest under another name, or as an image id: asked.
        assert!(!surely_absent(&format!("reg:5000/other@{a}"), &listed));
        assert!(!surely_absent(&b, &listed));
        assert!(!surely_absent(&format!("busybox@{b}"), &listed));
        // Not a full lowercase SHA-256: asked.
        for reference in [
            "reg:5000/cache:latest".to_owned(),
            "reg:5000/cache".to_owned(),
            format!("reg:5000/cache@sha256:{}", "c".repeat(12)),
            format!("reg:5000/cache@sha256:{}", "C".repeat(64)),
            format!("reg:5000/cache@sha512:{}", "c".repeat(128)),
            "c".repeat(64),
            format!("sha256:{}x", "c".repeat(63)),
        ] {
            assert!(!surely_absent(&reference, &listed), "{reference}");
        }
    }

    #[test]
    fn parses_unix_and_tcp_endpoints() {
        assert_eq!(
            EngineAddr::parse("unix:///var/run/docker.sock").unwrap(),
            EngineAddr::Unix(PathBuf::from("/var/run/docker.sock"))
        );
        assert_eq!(
            EngineAddr::parse("/run/buildkit/buildkitd.sock").unwrap(),
            EngineAddr::Unix(PathBuf::from("/run/buildkit/buildkitd.sock"))
        );
        assert_eq!(
            EngineAddr::parse("tcp://127.0.0.1:2375").unwrap(),
            EngineAddr::Tcp("127.0.0.1:2375".to_owned())
        );
        assert_eq!(
            EngineAddr::parse("tcp://builder.internal:1234/").unwrap(),
            EngineAddr::Tcp("builder.internal:1234".to_owned())
        );
    }

    #[test]
    fn rejects_other_endpoints_naming_them() {
        for bad in [
            "unix://relative.sock",
            "tcp://host",
            "ssh://me@host",
            "npipe:////./pipe/docker",
            "docker",
        ] {
            let err = EngineAddr::parse(bad).unwrap_err();
            assert!(err.message.contains("endpoint `"), "{bad}: {err}");
        }
    }

    #[test]
    fn redacts_credentials_in_endpoints() {
        assert_eq!(redact("tcp://user:secret@host:2375"), "tcp://***@host:2375");
        assert_eq!(redact("unix:///run/docker.sock"), "unix:///run/docker.sock");
        assert_eq!(redact("tcp://host:1/a@b"), "tcp://host:1/a@b");
        let err = EngineAddr::parse("ssh://user:secret@host").unwrap_err();
        assert!(!err.message.contains("secret"), "{err}");
    }

    /// An engine socket that is not there is the engine out of reach (the purge exits 4 and
    /// its breaker counts it), not a protocol failure.
    #[tokio::test]
    async fn a_missing_socket_is_unreachable() {
        let dir = tempfile::tempdir().unwrap();
        let endpoint = format!("unix://{}", dir.path().join("docker.sock").display());
        let err = Engine::connect(&endpoint).await.err().expect("no engine");
        assert_eq!(err.kind, RemoteKind::Unreachable, "{err}");
    }

    #[test]
    fn reads_system_df_build_cache() {
        let json = r#"{"BuildCache":[{"ID":"abc","Parent":"p1","Type":"regular",
            "Description":"mount / from exec /bin/sh -c true","InUse":false,"Shared":true,"Size":6,
            "CreatedAt":"2026-01-02T03:04:05.5Z","LastUsedAt":null,"UsageCount":2}]}"#;
        let df: SystemDf = serde_json::from_str(json).unwrap();
        let records: Vec<_> = df
            .build_cache
            .unwrap()
            .into_iter()
            .map(DfBuildCache::into_record)
            .collect();
        assert_eq!(records[0].id, "abc");
        assert_eq!(records[0].parents, ["p1"]);
        assert_eq!(records[0].usage_count, 2);
        assert_eq!(records[0].created_at, Some(1_767_323_045_500_000));
        assert_eq!(records[0].last_used_at, None);
    }

    /// Docker 26 names a record's parents under `" Parents"`: they are not lost.
    #[test]
    fn reads_the_parents_docker_26_spells_with_a_space() {
        let json = r#"{"BuildCache":[{"ID":"abc"," Parents":["p1","p2"],"Type":"regular",
            "Description":"mount / from exec /bin/sh -c true","UsageCount":1}]}"#;
        let df: SystemDf = serde_json::from_str(json).unwrap();
        let record = df.build_cache.unwrap().remove(0).into_record();
        assert_eq!(record.parents, ["p1", "p2"]);
    }
}
