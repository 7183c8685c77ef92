//! The clients one purge command shares between its jobs: one registry client per host (its
//! connection pool and tokens), one BuildKit connection per builder, each builder's record
//! listing for verification, and what is known and learned about the manifests to delete.

use crate::report::escape::Term;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

use crate::config::Config;
use crate::error::RemoteError;
use crate::model::{Digest, Driver, ManifestFacts};
use crate::purge::manifest;
use crate::remote::buildkit::{BuildkitClient, CacheRecord};
use crate::remote::endpoint::require_endpoint;
use crate::remote::engine::{Engine, surely_absent};
use crate::remote::registry::{RegistryClient, is_index_type};
use crate::store::{Store, Vouching};

/// A builder's BuildKit connection, made on first use; a failed attempt is tried again.
pub type BuilderSlot = Arc<tokio::sync::Mutex<Option<BuildkitClient>>>;

/// Where the child manifests a tainted index lists, but that must stay, are learnt: a child
/// some recorded run names and the incident does not hold tainted was not the pusher's to
/// list, and is neither deleted nor counted present.
#[derive(Default)]
pub enum Spare {
    /// Nothing is spared (no deletion and no verification of children).
    #[default]
    Nothing,
    /// Asked of the store for each index as it is deleted.
    Store {
        store: Arc<Mutex<Store>>,
        incident: i64,
        vouching: Vouching,
    },
    /// Known before the command acts (verification: the children are recorded facts), with
    /// the digests the incident holds tainted.
    Digests {
        spared: HashSet<String>,
        tainted: HashSet<String>,
    },
}

/// What the jobs of one purge command share.
pub struct Remotes {
    pub config: Config,
    registries: tokio::sync::Mutex<HashMap<String, Result<Arc<RegistryClient>, RemoteError>>>,
    builders: tokio::sync::Mutex<HashMap<String, BuilderSlot>>,
    listings: tokio::sync::Mutex<HashMap<String, Listing>>,
    mount_ids: tokio::sync::Mutex<HashMap<String, bool>>,
    images: tokio::sync::Mutex<HashMap<String, Images>>,
    /// What the store knew about the manifests when the command started: what a digest is
    /// never changes, so these spare asking the registry, and name an index's children after
    /// the index is gone.
    pub known: HashMap<String, ManifestFacts>,
    /// What probes learned since, for the store.
    learned: Mutex<Vec<ManifestFacts>>,
    /// What probes learned during this command, by digest: a manifest listed by several
    /// indexes is asked about once.
    probed: Mutex<HashMap<String, ManifestFacts>>,
    spare: Spare,
    /// Each index under a tag, with the children it lists, by registry and repository: looked
    /// up once per command (see [`Remotes::listed_by_tagged`]).
    tagged: tokio::sync::Mutex<TaggedScans>,
    /// Image configs fetched for evidence, by registry, repository and digest: each was
    /// checked against its digest, and thousands of cache manifests share a few.
    configs: Mutex<Configs>,
}

/// Image configs kept for one command, up to [`CONFIG_CACHE_BYTES`] in all.
#[derive(Default)]
struct Configs {
    bytes: usize,
    by_digest: HashMap<(String, String, String), Arc<Vec<u8>>>,
}

/// What the image configs kept for one command may take.
const CONFIG_CACHE_BYTES: usize = 64 << 20;

/// The indexes under a tag of one repository, each with the children it lists.
pub type TaggedIndexes = Arc<Vec<(String, Vec<String>)>>;

/// [`TaggedIndexes`] by registry and repository.
pub type TaggedScans = HashMap<(String, String), TaggedIndexes>;

/// A builder's records, listed once for a whole verification (or why they could not be).
type Listing = Arc<OnceCell<Result<Arc<Vec<CacheRecord>>, String>>>;

/// The digests and ids of a builder's local images, listed once per command (`None`: the
/// listing failed, and each reference is asked about instead).
type Images = Arc<OnceCell<Option<Arc<HashSet<String>>>>>;

impl Remotes {
    pub fn new(config: &Config, known: HashMap<String, ManifestFacts>) -> Self {
        Self {
            config: config.clone(),
            registries: Default::default(),
            builders: Default::default(),
            listings: Default::default(),
            mount_ids: Default::default(),
            images: Default::default(),
            known,
            learned: Mutex::new(Vec::new()),
            probed: Mutex::default(),
            spare: Spare::Nothing,
            tagged: Default::default(),
            configs: Mutex::default(),
        }
    }

    /// The image config `digest` of `registry`'s `repository`: fetched once per command, and
    /// checked against its digest by the client.
    pub async fn config_blob(
        &self,
        client: &RegistryClient,
        (registry, repository): (&str, &str),
        digest: &Digest,
    ) -> Result<Arc<Vec<u8>>, RemoteError> {
        let key = (
            registry.to_owned(),
            repository.to_owned(),
            digest.as_str().to_owned(),
        );
        let kept = self
            .configs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .by_digest
            .get(&key)
            .cloned();
        if let Some(bytes) = kept {
            return Ok(bytes);
        }
        let bytes = Arc::new(client.get_blob(repository, digest).await?);
        let mut configs = self
            .configs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if configs.bytes + bytes.len() <= CONFIG_CACHE_BYTES
            && configs.by_digest.insert(key, bytes.clone()).is_none()
        {
            configs.bytes += bytes.len();
        }
        Ok(bytes)
    }

    /// With the children of tainted indexes to spare taken from `spare`.
    pub fn sparing(mut self, spare: Spare) -> Self {
        self.spare = spare;
        self
    }

    /// With the tags of repositories already listed (by [`manifest::tagged_keepers`]).
    pub fn with_tagged(mut self, scans: TaggedScans) -> Self {
        *self.tagged.get_mut() = scans;
        self
    }

    /// The tags of repositories listed so far.
    pub async fn tagged(&self) -> TaggedScans {
        self.tagged.lock().await.clone()
    }

    /// What `digest` in `repository` is: as recorded, else asked of the registry (and learnt);
    /// `None` when the registry has nothing under it.
    pub async fn facts(
        &self,
        client: &RegistryClient,
        repository: &str,
        digest: &Digest,
    ) -> Result<Option<ManifestFacts>, RemoteError> {
        if let Some(facts) = self.known_facts(digest.as_str()) {
            return Ok(Some(facts));
        }
        let learned = manifest::probe(client, repository, digest).await?;
        if let Some(facts) = &learned {
            self.learn(facts.clone());
        }
        Ok(learned)
    }

    /// Every index under a tag of `registry`'s `repository`, and every index in `pushed` (what
    /// recorded runs pushed there by digest), with the children it lists: asked of the
    /// registry once per command.
    pub async fn tagged_indexes(
        &self,
        client: &RegistryClient,
        (registry, repository): (&str, &str),
        pushed: &[String],
    ) -> Result<TaggedIndexes, RemoteError> {
        let mut tagged = self.tagged.lock().await;
        let key = (registry.to_owned(), repository.to_owned());
        if let Some(found) = tagged.get(&key) {
            return Ok(found.clone());
        }
        let mut found = Vec::new();
        // The indexes recorded runs pushed there by digest, under a tag or not any more (a
        // release whose tag moved on still needs what it lists).
        for digest in pushed {
            let Ok(parsed) = Digest::parse(digest, "digest") else {
                continue;
            };
            let Some(facts) = self.facts(client, repository, &parsed).await? else {
                continue;
            };
            if !facts.children.is_empty() {
                let listed = self.nested(client, repository, &facts.children).await?;
                found.push((digest.clone(), listed));
            }
        }
        for tag in client.list_tags(repository).await? {
            let Some(head) = client.head_manifest(repository, &tag).await? else {
                continue;
            };
            let digest = head.digest.as_str();
            if !is_index_type(&head.media_type) || found.iter().any(|(d, _)| d == digest) {
                continue;
            }
            let Some(facts) = self.facts(client, repository, &head.digest).await? else {
                continue;
            };
            let listed = self.nested(client, repository, &facts.children).await?;
            found.push((digest.to_owned(), listed));
        }
        let found = Arc::new(found);
        tagged.insert(key, found.clone());
        Ok(found)
    }

    /// The manifests an index lists (`children`), and those the indexes among them list in
    /// turn, [`manifest::NESTED`] levels down at most: a release's index of indexes needs the
    /// images at the bottom as much as those it lists itself. What is learnt on the way is
    /// kept for the store.
    pub(crate) async fn nested(
        &self,
        client: &RegistryClient,
        repository: &str,
        children: &[Digest],
    ) -> Result<Vec<String>, RemoteError> {
        let mut out: Vec<String> = children.iter().map(|c| c.as_str().to_owned()).collect();
        let mut level = children.to_vec();
        for _ in 1..manifest::NESTED {
            let mut next = Vec::new();
            for child in &level {
                let Some(facts) = self.facts(client, repository, child).await? else {
                    continue;
                };
                for below in facts.children {
                    if !out.iter().any(|c| c == below.as_str()) {
                        out.push(below.as_str().to_owned());
                        next.push(below);
                    }
                }
            }
            if next.is_empty() {
                break;
            }
            level = next;
        }
        Ok(out)
    }

    /// Of the `children` of `index` in `registry`'s `repository`, those that another index
    /// under a tag of that repository lists, where recorded runs outside the incident pushed
    /// that index (as [`Remotes::spared`] tells): deleting them would break it (a release's
    /// multi-platform image listing a manifest the tainted index lists too). An index only the
    /// registry knows keeps nothing: whoever pushed the tainted index could push that too.
    ///
    /// The registry's tags are listed only where the store has such a run's manifest in the
    /// repository: as the purge deletes, at once; for the dry run and verification, before
    /// they act ([`manifest::tagged_keepers`]), and a repository not listed then keeps nothing.
    pub async fn listed_by_tagged(
        &self,
        client: &RegistryClient,
        place: (&str, &str),
        index: &str,
        children: &[String],
    ) -> Result<HashSet<String>, RemoteError> {
        if children.is_empty() {
            return Ok(HashSet::new());
        }
        let key = (place.0.to_owned(), place.1.to_owned());
        let listed = self.tagged.lock().await.get(&key).cloned();
        let tagged = match (listed, &self.spare) {
            (Some(tagged), _) => tagged,
            (
                None,
                Spare::Store {
                    store,
                    incident,
                    vouching,
                },
            ) => {
                let asked = {
                    let store = store.lock().unwrap_or_else(|e| e.into_inner());
                    store
                        .names_untainted_in(*incident, place.1)
                        .and_then(|names| {
                            let pushed = store.pushed_untainted_in(*incident, place.1, vouching)?;
                            Ok((names, pushed))
                        })
                };
                let (names, pushed) = asked.map_err(|e| {
                    RemoteError::local(format!(
                        "cannot ask the store which indexes may keep children: {e}"
                    ))
                })?;
                if names {
                    self.tagged_indexes(client, place, &pushed).await?
                } else {
                    let none = TaggedIndexes::default();
                    self.tagged.lock().await.insert(key, none.clone());
                    none
                }
            }
            (None, _) => return Ok(HashSet::new()),
        };
        let listing: Vec<&(String, Vec<String>)> = tagged
            .iter()
            .filter(|(digest, listed)| {
                digest != index && listed.iter().any(|c| children.contains(c))
            })
            .collect();
        let candidates: Vec<String> = listing.iter().map(|(digest, _)| digest.clone()).collect();
        let keepers = self.spared(&candidates)?;
        let kept: Vec<String> = listing
            .iter()
            .filter(|(digest, _)| keepers.contains(digest))
            .flat_map(|(_, listed)| listed.iter().filter(|c| children.contains(c)).cloned())
            .collect();
        // A child the incident holds tainted goes, whatever lists it.
        let tainted = self.held_tainted(&kept)?;
        Ok(kept.into_iter().filter(|c| !tainted.contains(c)).collect())
    }

    /// Of an index's `children`, those to leave in place (see [`Spare`]).
    pub fn spared(&self, children: &[String]) -> Result<HashSet<String>, RemoteError> {
        match &self.spare {
            Spare::Nothing => Ok(HashSet::new()),
            Spare::Digests { spared: set, .. } => Ok(children
                .iter()
                .filter(|c| set.contains(*c))
                .cloned()
                .collect()),
            Spare::Store {
                store,
                incident,
                vouching,
            } => store
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .recorded_untainted(*incident, children, vouching)
                .map_err(|e| {
                    RemoteError::local(format!("cannot ask the store which children to spare: {e}"))
                }),
        }
    }

    /// Of `digests`, those the incident holds tainted: never kept for an index that lists them.
    fn held_tainted(&self, digests: &[String]) -> Result<HashSet<String>, RemoteError> {
        match &self.spare {
            Spare::Nothing => Ok(HashSet::new()),
            Spare::Digests { tainted, .. } => Ok(digests
                .iter()
                .filter(|d| tainted.contains(*d))
                .cloned()
                .collect()),
            Spare::Store {
                store, incident, ..
            } => store
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .held_tainted(*incident, digests)
                .map_err(|e| {
                    RemoteError::local(format!("cannot ask the store what the incident holds: {e}"))
                }),
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

    /// Whether the builder's BuildKit ends each cache-mount record's description with the
    /// mount's id (` with id "/pip"`): BuildKit v0.12 and later, so Docker Engine 25 and later.
    /// Asked once per builder. Docker's embedded BuildKit reports no usable version, so the
    /// Engine's own version decides for the docker driver.
    pub async fn describes_mount_ids(
        &self,
        builder: &str,
        endpoint: Option<&str>,
        driver: Option<Driver>,
    ) -> Result<bool, RemoteError> {
        if let Some(known) = self.mount_ids.lock().await.get(builder) {
            return Ok(*known);
        }
        let (endpoint, driver) = require_endpoint(&self.config, builder, endpoint, driver)?;
        let describes = if driver == Driver::Docker {
            let engine = Engine::connect(&endpoint).await?;
            version_at_least(&engine.server_version().await?, 25, 0)
        } else {
            let slot = self.builder(builder).await;
            let mut slot = slot.lock().await;
            let version = connected(&mut slot, &endpoint, driver)
                .await?
                .buildkit_version()
                .await?;
            version.is_some_and(|v| version_at_least(&v, 0, 12))
        };
        self.mount_ids
            .lock()
            .await
            .insert(builder.to_owned(), describes);
        Ok(describes)
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
                .map_err(|err| {
                    format!(
                        "cannot list the records of `{builder}`: {err}",
                        builder = Term(builder)
                    )
                })
        })
        .await
        .clone()
    }

    /// Whether the builder surely holds no local image under `reference`, from one listing
    /// of its images per command (see [`surely_absent`]); `false` when that cannot be told,
    /// and the reference must be asked about. The listing is taken once: an image that comes
    /// after it is missed by this command, not by the next (`verify` lists again).
    pub async fn local_image_surely_absent(&self, endpoint: &str, reference: &str) -> bool {
        let cell = self
            .images
            .lock()
            .await
            .entry(endpoint.to_owned())
            .or_default()
            .clone();
        let digests = cell
            .get_or_init(|| async {
                let engine = Engine::connect(endpoint).await.ok()?;
                engine.image_digests().await.ok().map(Arc::new)
            })
            .await;
        digests
            .as_ref()
            .is_some_and(|digests| surely_absent(reference, digests))
    }

    /// Keeps what a probe learned about a manifest.
    pub fn learn(&self, facts: ManifestFacts) {
        self.probed
            .lock()
            .expect("probed lock")
            .insert(facts.digest.as_str().to_owned(), facts.clone());
        self.learned.lock().expect("learned lock").push(facts);
    }

    /// What `digest` is, as recorded or as a probe of this command learned it.
    pub fn known_facts(&self, digest: &str) -> Option<ManifestFacts> {
        match self.known.get(digest) {
            Some(facts) => Some(facts.clone()),
            None => self
                .probed
                .lock()
                .expect("probed lock")
                .get(digest)
                .cloned(),
        }
    }

    /// What was learned and not taken yet, once `at_least` facts wait (everything with 1), or
    /// once an index's are among them: after the index is deleted, no probe can learn again
    /// which children verification must look for.
    pub fn take_learned(&self, at_least: usize) -> Vec<ManifestFacts> {
        let mut learned = self.learned.lock().expect("learned lock");
        if learned.is_empty()
            || (learned.len() < at_least && learned.iter().all(|f| f.children.is_empty()))
        {
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

/// Whether a version (`26.1.5+dfsg1`, `v0.13.2`) is at least `major.minor`; an unreadable one
/// is not.
fn version_at_least(version: &str, major: u64, minor: u64) -> bool {
    let mut parts = version
        .trim_start_matches('v')
        .split(['.', '+', '-'])
        .map(|p| p.parse::<u64>());
    match (parts.next(), parts.next()) {
        (Some(Ok(a)), Some(Ok(b))) => (a, b) >= (major, minor),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(digest: char, children: &[char]) -> ManifestFacts {
        let digest_of =
            |c: char| Digest::parse(&format!("sha256:{}", c.to_string().repeat(64)), "t").unwrap();
        ManifestFacts {
            digest: digest_of(digest),
            media_type: "application/vnd.oci.image.index.v1+json".to_owned(),
            children: children.iter().map(|&c| digest_of(c)).collect(),
        }
    }

    /// Facts of plain manifests wait for a batch; an index's are taken at once, with
    /// whatever waits beside them: once the index is deleted, nothing can learn its children.
    #[test]
    fn an_index_is_taken_before_a_batch_fills() {
        let remotes = Remotes::new(&Config::default(), HashMap::new());
        remotes.learn(facts('a', &[]));
        assert!(remotes.take_learned(256).is_empty());
        remotes.learn(facts('b', &['c', 'd']));
        let taken = remotes.take_learned(256);
        assert_eq!(taken.len(), 2);
        assert!(remotes.take_learned(1).is_empty());
    }

    /// Engine and BuildKit versions as they are reported are compared by major and minor;
    /// moby's unversioned BuildKit (`v0.0.0+unknown`) and garbage are not new enough.
    #[test]
    fn versions_compare_by_major_and_minor() {
        assert!(version_at_least("26.1.5+dfsg1", 25, 0));
        assert!(version_at_least("25.0.0", 25, 0));
        assert!(!version_at_least("20.10.24+dfsg1", 25, 0));
        assert!(version_at_least("v0.13.2", 0, 12));
        assert!(!version_at_least("v0.11.6", 0, 12));
        assert!(!version_at_least("v0.0.0+unknown", 0, 12));
        assert!(!version_at_least("", 0, 12));
        assert!(!version_at_least("latest", 25, 0));
    }
}
