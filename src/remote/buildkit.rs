//! A client of BuildKit's Control API (`moby.buildkit.v1.Control`): list, prune and describe
//! a builder's build cache.
//!
//! A Docker Engine serves the API of its embedded BuildKit after `POST /grpc` switches the
//! connection to HTTP/2 (`Upgrade: h2c`); a standalone buildkitd serves it as plain gRPC.

use std::collections::BTreeMap;
use std::time::Duration;

pub use bollard::moby::buildkit::v1::BuildHistoryRecord;
use bollard::moby::buildkit::v1::control_client::ControlClient;
use bollard::moby::buildkit::v1::{
    BuildHistoryEventType, BuildHistoryRequest, DiskUsageRequest, InfoRequest, ListWorkersRequest,
    PruneRequest, UsageRecord,
};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};
use tower::service_fn;

use crate::error::{RemoteError, RemoteKind};
use crate::model::Driver;
pub use crate::remote::cache_record::{CacheRecord, PrunedRecord};
use crate::remote::engine::{EngineAddr, one_line, redact, upgrade_to_h2c};
use crate::time::Micros;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one call may take, streaming prunes included.
const CALL_TIMEOUT: Duration = Duration::from_secs(300);
/// Large builders answer `DiskUsage` with tens of thousands of records.
const MAX_MESSAGE_SIZE: usize = 256 * 1024 * 1024;
/// BuildKit keeps 50 builds by default; a builder that sends far more is not believed.
pub const MAX_HISTORY_RECORDS: usize = 10_000;

impl CacheRecord {
    // Older BuildKit, Docker 20.10's among them, fills only the deprecated `parent`.
    #[allow(deprecated)]
    fn from_usage(record: UsageRecord) -> Self {
        let created_at = record.created_at.and_then(|t| micros(t.seconds, t.nanos));
        let last_used_at = record.last_used_at.and_then(|t| micros(t.seconds, t.nanos));
        let mut parents = record.parents;
        if parents.is_empty() && !record.parent.is_empty() {
            parents.push(record.parent);
        }
        Self {
            id: record.id,
            record_type: record.record_type,
            description: record.description,
            mutable: record.mutable,
            in_use: record.in_use,
            shared: record.shared,
            size: record.size,
            parents,
            created_at,
            last_used_at,
            usage_count: record.usage_count,
        }
    }
}

/// A protobuf timestamp in microseconds; `None` for unset (zero or Go's zero time).
fn micros(seconds: i64, nanos: i32) -> Option<Micros> {
    (seconds > 0).then(|| seconds * 1_000_000 + i64::from(nanos) / 1_000)
}

/// A BuildKit worker: on a Docker Engine the one `moby` worker, on buildkitd usually `oci` or
/// `containerd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerInfo {
    pub id: String,
    pub labels: BTreeMap<String, String>,
    /// `os/arch[/variant]`.
    pub platforms: Vec<String>,
    /// Empty on BuildKit versions that do not report it (Docker 20.10).
    pub buildkit_version: Option<String>,
}

/// A connection to one builder's Control API.
pub struct BuildkitClient {
    control: ControlClient<Channel>,
    shown: String,
}

impl BuildkitClient {
    /// Connects to a builder.
    ///
    /// With [`Driver::Docker`], `endpoint` is the Docker Engine (`unix:///var/run/docker.sock`
    /// or `tcp://host:2375`) and the connection is upgraded through `POST /grpc`. With
    /// [`Driver::Buildkitd`] or [`Driver::DockerContainer`] it is buildkitd's own plain-gRPC
    /// address (`unix://` or `tcp://`, without TLS).
    pub async fn connect(endpoint: &str, driver: Driver) -> Result<Self, RemoteError> {
        let shown = redact(endpoint);
        if driver == Driver::DockerContainer && endpoint.starts_with("docker-container://") {
            return Err(RemoteError::local(format!(
                "BuildKit at {shown}: docker-container builders are reached through \
                 `docker exec`, which is not supported; give the buildkitd address (`unix://` or `tcp://`)"
            )));
        }
        let addr = EngineAddr::parse(endpoint)?;
        let channel = match driver {
            Driver::Docker => connect_docker(addr).await,
            Driver::Buildkitd | Driver::DockerContainer => connect_plain(addr).await,
        }
        .map_err(|err| {
            let what = match driver {
                Driver::Docker => "cannot reach the Docker Engine's BuildKit",
                _ => "cannot reach buildkitd",
            };
            RemoteError::unreachable(format!("BuildKit at {shown}: {what}: {}", one_line(&err)))
        })?;
        let control = ControlClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE);
        Ok(Self { control, shown })
    }

    /// The endpoint as it may be shown.
    pub fn endpoint(&self) -> &str {
        &self.shown
    }

    /// Every build-cache record on the builder, in no particular order.
    ///
    /// Listing is not free of effects: on Docker 20.10 the first listing after a cache mount
    /// was used measures the mount, and that counts as a use, so the next listing shows its
    /// `usage_count` one higher and `last_used_at` at the time of the first listing. It
    /// happens once per use of the mount.
    pub async fn disk_usage(&mut self) -> Result<Vec<CacheRecord>, RemoteError> {
        let response = self
            .control
            .disk_usage(DiskUsageRequest::default())
            .await
            .map_err(|status| self.error("DiskUsage", &status))?;
        Ok(response
            .into_inner()
            .record
            .into_iter()
            .map(CacheRecord::from_usage)
            .collect())
    }

    /// Prunes exactly the records with these ids (and nothing when `ids` is empty); returns
    /// the records BuildKit reports removed.
    ///
    /// A record that another record is built on survives unless that one goes too, and a
    /// record in use survives: compare the answer with what was asked.
    pub async fn prune_ids(&mut self, ids: &[String]) -> Result<Vec<PrunedRecord>, RemoteError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(bad) = ids.iter().find(|id| !is_record_id(id)) {
            return Err(RemoteError::local(format!(
                "BuildKit at {}: refusing to prune: `{bad}` is not a build-cache record id",
                self.shown
            )));
        }
        let request = PruneRequest {
            filter: ids.iter().map(|id| format!("id=={id}")).collect(),
            all: true,
            keep_duration: 0,
            ..PruneRequest::default()
        };
        let mut stream = self
            .control
            .prune(request)
            .await
            .map_err(|status| self.error("Prune", &status))?
            .into_inner();
        let mut pruned = Vec::new();
        while let Some(record) = stream
            .message()
            .await
            .map_err(|status| self.error("Prune", &status))?
        {
            pruned.push(CacheRecord::from_usage(record));
        }
        Ok(pruned)
    }

    /// The finished builds the builder keeps in its history (BuildKit 0.11 and later), as
    /// BuildKit sends them: hostile input, to be checked record by record. Builds still
    /// running are left out. At most [`MAX_HISTORY_RECORDS`]; more is an error.
    pub async fn build_history(&mut self) -> Result<Vec<BuildHistoryRecord>, RemoteError> {
        let request = BuildHistoryRequest {
            early_exit: true,
            ..BuildHistoryRequest::default()
        };
        let mut stream = match self.control.listen_build_history(request).await {
            Ok(response) => response.into_inner(),
            Err(status) => return Err(self.history_error(&status)),
        };
        let mut records = Vec::new();
        while let Some(event) = stream
            .message()
            .await
            .map_err(|status| self.history_error(&status))?
        {
            let Some(record) = event.record else {
                continue;
            };
            match BuildHistoryEventType::try_from(event.r#type) {
                Ok(BuildHistoryEventType::Complete) => {}
                _ => continue,
            }
            if records.len() == MAX_HISTORY_RECORDS {
                return Err(RemoteError::protocol(format!(
                    "BuildKit at {}: ListenBuildHistory: more than {MAX_HISTORY_RECORDS} build history records",
                    self.shown
                )));
            }
            records.push(record);
        }
        Ok(records)
    }

    fn history_error(&self, status: &tonic::Status) -> RemoteError {
        if status.code() == tonic::Code::Unimplemented {
            return RemoteError::protocol(format!(
                "BuildKit at {}: the builder keeps no build history: its BuildKit predates 0.11 (history needs Docker Engine 23 or later, or buildkitd 0.11 or later)",
                self.shown
            ));
        }
        self.error("ListenBuildHistory", status)
    }

    /// The builder's workers.
    pub async fn list_workers(&mut self) -> Result<Vec<WorkerInfo>, RemoteError> {
        let response = self
            .control
            .list_workers(ListWorkersRequest::default())
            .await
            .map_err(|status| self.error("ListWorkers", &status))?;
        Ok(response
            .into_inner()
            .record
            .into_iter()
            .map(|worker| WorkerInfo {
                id: worker.id,
                labels: worker.labels.into_iter().collect(),
                platforms: worker
                    .platforms
                    .iter()
                    .map(|p| {
                        let mut name = format!("{}/{}", p.os, p.architecture);
                        if !p.variant.is_empty() {
                            name.push('/');
                            name.push_str(&p.variant);
                        }
                        name
                    })
                    .collect(),
                buildkit_version: worker
                    .buildkit_version
                    .map(|v| v.version)
                    .filter(|v| !v.is_empty()),
            })
            .collect())
    }

    /// The version the builder's BuildKit reports (`v0.13.2`); `None` when it reports none,
    /// as Docker 20.10's BuildKit v0.8, which predates the `Info` call, does not.
    pub async fn buildkit_version(&mut self) -> Result<Option<String>, RemoteError> {
        match self.control.info(InfoRequest::default()).await {
            Ok(response) => Ok(response
                .into_inner()
                .buildkit_version
                .map(|v| v.version)
                .filter(|v| !v.is_empty())),
            Err(status) if status.code() == tonic::Code::Unimplemented => Ok(None),
            Err(status) => Err(self.error("Info", &status)),
        }
    }

    fn error(&self, call: &str, status: &tonic::Status) -> RemoteError {
        let mut text = format!("{:?}", status.code());
        let message = status
            .message()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        if !message.is_empty() {
            text.push_str(": ");
            text.push_str(&message);
        }
        if let Some(source) = std::error::Error::source(status) {
            let cause = one_line(source);
            if !cause.is_empty() && !text.contains(&cause) {
                text.push_str(": ");
                text.push_str(&cause);
            }
        }
        let kind = match status.code() {
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => RemoteKind::Unreachable,
            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => RemoteKind::Auth,
            _ => RemoteKind::Protocol,
        };
        RemoteError::new(kind, format!("BuildKit at {}: {call}: {text}", self.shown))
    }
}

/// BuildKit record ids are random lowercase base-36 strings; anything else could change the
/// meaning of a prune filter.
fn is_record_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn channel_endpoint() -> Endpoint {
    Endpoint::from_static("http://buildkit.invalid")
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(CALL_TIMEOUT)
}

/// gRPC over a Docker Engine connection switched to HTTP/2 by `POST /grpc`.
async fn connect_docker(addr: EngineAddr) -> Result<Channel, tonic::transport::Error> {
    channel_endpoint()
        .connect_with_connector(service_fn(move |_: Uri| {
            let addr = addr.clone();
            async move {
                let stream = addr.dial().await?;
                upgrade_to_h2c(stream).await
            }
        }))
        .await
}

/// Plain gRPC to buildkitd.
async fn connect_plain(addr: EngineAddr) -> Result<Channel, tonic::transport::Error> {
    match addr {
        EngineAddr::Tcp(host_port) => {
            let endpoint = Endpoint::from_shared(format!("http://{host_port}"))?
                .connect_timeout(CONNECT_TIMEOUT)
                .timeout(CALL_TIMEOUT);
            endpoint.connect().await
        }
        EngineAddr::Unix(path) => {
            channel_endpoint()
                .connect_with_connector(service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move { UnixStream::connect(path).await.map(TokioIo::new) }
                }))
                .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_convert_to_micros_and_unset_ones_to_none() {
        assert_eq!(
            micros(1_767_323_045, 500_000_000),
            Some(1_767_323_045_500_000)
        );
        assert_eq!(micros(0, 0), None);
        assert_eq!(micros(-62_135_596_800, 0), None);
    }

    #[test]
    #[allow(deprecated)]
    fn a_single_parent_counts_as_the_parent_list() {
        let old = CacheRecord::from_usage(UsageRecord {
            id: "a".into(),
            parent: "p".into(),
            ..UsageRecord::default()
        });
        assert_eq!(old.parents, ["p"]);
        let new = CacheRecord::from_usage(UsageRecord {
            id: "a".into(),
            parent: "p".into(),
            parents: vec!["p".into(), "q".into()],
            ..UsageRecord::default()
        });
        assert_eq!(new.parents, ["p", "q"]);
        assert_eq!(new.created_at, None);
    }

    #[test]
    fn only_plain_ids_reach_a_prune_filter() {
        assert!(is_record_id("ypifex58nfmrd4mss0kqjt43l"));
        for bad in ["", "a,type==regular", "a b", "id==x", "x~=.*"] {
            assert!(!is_record_id(bad), "{bad}");
        }
    }

    #[tokio::test]
    async fn unsupported_builders_are_refused_by_name() {
        let err = BuildkitClient::connect("ssh://user:pw@host", Driver::Docker)
            .await
            .err()
            .unwrap();
        assert!(err.message.contains("ssh://***@host"), "{err}");
        assert!(!err.message.contains("pw"), "{err}");
    }

    /// A builder whose port nothing listens on is out of reach by kind, whatever the text.
    #[tokio::test]
    async fn a_closed_port_is_unreachable() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let err = BuildkitClient::connect(&format!("tcp://127.0.0.1:{port}"), Driver::Buildkitd)
            .await
            .err()
            .expect("nothing listens");
        assert_eq!(err.kind, crate::error::RemoteKind::Unreachable, "{err}");
    }
}
