//! OCI registries: resolving tags to digests (through oci-client), with credentials from the
//! docker config and its credential helpers.

use std::time::Duration;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use crate::config::{Config, CredentialSource};
use crate::error::RemoteError;
use crate::model::{DOCKER_HUB, Digest, ImageRef};

/// Hosts that are spoken to over plain HTTP without being configured: loopback, as Docker
/// itself treats `127.0.0.0/8` as insecure.
fn is_loopback(host: &str) -> bool {
    let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
    name == "localhost" || name.starts_with("127.") || name == "[::1]"
}

/// Whether to talk plain HTTP to `host`.
pub fn is_insecure(config: &Config, host: &str) -> bool {
    config.registry(host).map_or_else(|| is_loopback(host), |r| r.insecure)
}

/// Credentials for `host`, from the configured source. Never logged.
pub fn auth_for(config: &Config, host: &str) -> RegistryAuth {
    let source = config
        .registry(host)
        .map(|r| r.credentials.clone())
        .unwrap_or_default();
    if source == CredentialSource::Anonymous {
        return RegistryAuth::Anonymous;
    }
    let server = if host == DOCKER_HUB { "https://index.docker.io/v1/" } else { host };
    match docker_credential::get_credential(server) {
        Ok(docker_credential::DockerCredential::UsernamePassword(user, password)) => {
            RegistryAuth::Basic(user, password)
        }
        Ok(docker_credential::DockerCredential::IdentityToken(token)) => RegistryAuth::Bearer(token),
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

    /// The manifest digest the reference's tag points at now.
    pub async fn resolve(&self, reference: &ImageRef) -> Result<Digest, RemoteError> {
        let tag = reference.tag.clone().unwrap_or_else(|| "latest".to_owned());
        let oci = Reference::with_tag(reference.registry.clone(), reference.repository.clone(), tag);
        let auth = auth_for(self.config, &reference.registry);
        let digest = self
            .client
            .fetch_manifest_digest(&oci, &auth)
            .await
            .map_err(|err| RemoteError(format!("cannot resolve `{reference}`: {}", one_line(&err.to_string()))))?;
        Digest::parse(&digest, "registry digest").map_err(|e| RemoteError(e.to_string()))
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
