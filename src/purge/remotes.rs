//! The clients one purge command shares between its jobs: one registry client per host (its
//! connection pool and tokens), one BuildKit connection per builder, each builder's record
//! listing for verification, and what is known and learned about the manifests to delete.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

use crate::config::Config;
use crate::error::RemoteError;
use crate::model::{Driver, ManifestFacts};
use crate::remote::buildkit::{BuildkitClient, CacheRecord};
use crate::remote::endpoint::require_endpoint;
use crate::remote::registry::RegistryClient;

/// A builder's BuildKit connection, made on first use; a failed attempt is tried again.
pub type BuilderSlot = Arc<tokio::sync::Mutex<Option<BuildkitClient>>>;

/// What the jobs of one purge command share.
pub struct Remotes {
    pub config: Config,
    registries: tokio::sync::Mutex<HashMap<String, Result<Arc<RegistryClient>, RemoteError>>>,
    builders: tokio::sync::Mutex<HashMap<String, BuilderSlot>>,
    listings: tokio::sync::Mutex<HashMap<String, Listing>>,
    /// What the store knew about the manifests when the command started: what a digest is
    /// never changes, so these spare asking the registry, and name an index's children after
    /// the index is gone.
    pub known: HashMap<String, ManifestFacts>,
    /// What probes learned since, for the store.
    learned: Mutex<Vec<ManifestFacts>>,
}

/// A builder's records, listed once for a whole verification (or why they could not be).
type Listing = Arc<OnceCell<Result<Arc<Vec<CacheRecord>>, String>>>;

impl Remotes {
    pub fn new(config: &Config, known: HashMap<String, ManifestFacts>) -> Self {
        Self {
            config: config.clone(),
            registries: Default::default(),
            builders: Default::default(),
            listings: Default::default(),
            known,
            learned: Mutex::new(Vec::new()),
        }
    }

    /// The client for a registry host, made once; a host that cannot be set up stays so.
    pub async fn registry(&self, host: &str) -> Result<Arc<RegistryClient>, RemoteError> {
        self.registries
            .lock()
            .await
            .entry(host.to_owned())
            .or_insert_with(|| RegistryClient::new(&self.config, host).map(Arc::new))
            .clone()
    }

    /// The connection slot of a builder: jobs on one builder take turns with it.
    pub async fn builder(&self, name: &str) -> BuilderSlot {
        self.builders
            .lock()
            .await
            .entry(name.to_owned())
            .or_default()
            .clone()
    }

    /// The records on a builder, listed through its connection.
    pub async fn disk_usage(
        &self,
        builder: &str,
        endpoint: Option<&str>,
        driver: Option<Driver>,
    ) -> Result<Vec<CacheRecord>, RemoteError> {
        let (endpoint, driver) = require_endpoint(&self.config, builder, endpoint, driver)?;
        let slot = self.builder(builder).await;
        let mut slot = slot.lock().await;
        connected(&mut slot, &endpoint, driver)
            .await?
            .disk_usage()
            .await
    }

    /// The builder's records, listed once per builder for the whole command.
    pub async fn listing(
        &self,
        builder: &str,
        endpoint: Option<&str>,
        driver: Option<Driver>,
    ) -> Result<Arc<Vec<CacheRecord>>, String> {
        let cell = self
            .listings
            .lock()
            .await
            .entry(builder.to_owned())
            .or_default()
            .clone();
        cell.get_or_init(|| async {
            self.disk_usage(builder, endpoint, driver)
                .await
                .map(Arc::new)
                .map_err(|err| format!("cannot list the records of `{builder}`: {err}"))
        })
        .await
        .clone()
    }

    /// Keeps what a probe learned about a manifest.
    pub fn learn(&self, facts: ManifestFacts) {
        self.learned.lock().expect("learned lock").push(facts);
    }

    /// What was learned and not taken yet, once `at_least` facts wait (everything with 1).
    pub fn take_learned(&self, at_least: usize) -> Vec<ManifestFacts> {
        let mut learned = self.learned.lock().expect("learned lock");
        if learned.is_empty() || learned.len() < at_least {
            return Vec::new();
        }
        std::mem::take(&mut *learned)
    }
}

/// The builder's connection, made now if there is none yet.
pub async fn connected<'a>(
    slot: &'a mut Option<BuildkitClient>,
    endpoint: &str,
    driver: Driver,
) -> Result<&'a mut BuildkitClient, RemoteError> {
    if slot.is_none() {
        *slot = Some(BuildkitClient::connect(endpoint, driver).await?);
    }
    Ok(slot.as_mut().expect("just connected"))
}
