//! A registry manifest (an index with its child manifests): checked with a HEAD, saved with
//! its config and blob list, deleted children first, verified gone with a HEAD of each.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::config::Config;
use crate::error::RemoteError;
use crate::model::{Digest, ManifestFacts};
use crate::plan::Target;
use crate::purge::evidence::{Evidence, sanitize, write};
use crate::purge::remotes::{Remotes, Spare, TaggedScans};
use crate::purge::verify::{Verdict, VerifyInputs};
use crate::purge::{ActionState, BoxFuture, Executed, Outcome, TargetKind};
use crate::remote::registry::{
    DeleteOutcome, ParsedManifest, RegistryClient, blobs, facts, is_index_type, parse_manifest,
};
use crate::report::count;
use crate::store::{ActionRow, Store, StoreError, Vouching};

pub struct Manifest;

/// The fields of a manifest target.
fn fields(target: &Target) -> (&str, &str, &str) {
    match target {
        Target::Manifest {
            registry,
            repository,
            digest,
            ..
        } => (registry, repository, digest),
        _ => unreachable!("dispatched by kind_of"),
    }
}

impl TargetKind for Manifest {
    fn place(&self, target: &Target) -> String {
        fields(target).0.to_owned()
    }

    fn identity(&self, target: &Target) -> String {
        let (registry, repository, digest) = fields(target);
        format!("manifest\0{registry}\0{repository}\0{digest}")
    }

    fn limit(&self, concurrency: usize) -> usize {
        concurrency
    }

    fn check<'a>(
        &'a self,
        target: &'a Target,
        cx: &'a Remotes,
    ) -> BoxFuture<'a, Result<String, RemoteError>> {
        Box::pin(async move {
            let (registry, repository, digest) = fields(target);
            let client = cx.registry(registry).await?;
            let digest = Digest::parse(digest, "digest")
                .map_err(|err| RemoteError::local(err.to_string()))?;
            // Children the purge leaves are named apart.
            let present = |facts: &ManifestFacts, left: usize| {
                let mut status = match facts.children.len() - left {
                    0 => format!("present ({})", facts.media_type),
                    n => format!(
                        "present ({}); {} will be deleted with it",
                        facts.media_type,
                        count(n, "child manifest", "child manifests")
                    ),
                };
                if left > 0 {
                    status.push_str(&format!(
                        "; {} left: recorded runs outside the incident pushed {them}, or an \
                         index under a tag they pushed lists {them}",
                        count(left, "listed child manifest", "listed child manifests"),
                        them = if left == 1 { "it" } else { "them" }
                    ));
                }
                status
            };
            match cx.known.get(digest.as_str()) {
                // Known already: only whether it is still there is asked.
                Some(known) => Ok(
                    match client.head_manifest(repository, digest.as_str()).await? {
                        Some(_) => present(
                            known,
                            kept(
                                cx,
                                &client,
                                (registry, repository),
                                digest.as_str(),
                                &known.children,
                            )
                            .await?
                            .len(),
                        ),
                        None if known.children.is_empty() => "already gone".to_owned(),
                        None => format!(
                            "already gone; its {} will be deleted if present",
                            count(
                                known.children.len(),
                                "recorded child manifest",
                                "recorded child manifests"
                            )
                        ),
                    },
                ),
                None => Ok(match probe(&client, repository, &digest).await? {
                    Some(facts) => {
                        // What the indexes among its children list, learnt now, spares the
                        // execution after it asking again.
                        cx.nested(&client, repository, &facts.children).await?;
                        let left = kept(
                            cx,
                            &client,
                            (registry, repository),
                            digest.as_str(),
                            &facts.children,
                        )
                        .await?;
                        let status = present(&facts, left.len());
                        cx.learn(facts);
                        status
                    }
                    None => "already gone".to_owned(),
                }),
            }
        })
    }

    fn evidence<'a>(
        &'a self,
        target: &'a Target,
        cx: &'a Remotes,
        opts: &'a Evidence,
    ) -> BoxFuture<'a, Result<(), RemoteError>> {
        Box::pin(async move {
            let (registry, repository, digest) = fields(target);
            let client = cx.registry(registry).await?;
            save(opts, cx, &client, registry, repository, digest).await
        })
    }

    fn execute<'a>(
        &'a self,
        target: &'a Target,
        cx: &'a Remotes,
    ) -> BoxFuture<'a, Result<Executed, RemoteError>> {
        Box::pin(async move {
            let (registry, repository, digest) = fields(target);
            let outcome = delete(cx, registry, repository, digest).await?;
            Ok(Executed::Done {
                outcome,
                purged: None,
            })
        })
    }

    fn verify<'a>(
        &'a self,
        target: &'a Target,
        rows: &'a [ActionRow],
        cx: &'a Remotes,
        inputs: &'a VerifyInputs,
    ) -> BoxFuture<'a, Verdict> {
        Box::pin(async move {
            let (registry, repository, digest) = fields(target);
            let client = match cx.registry(registry).await {
                Ok(client) => client,
                Err(err) => {
                    return Verdict::Unverified {
                        detail: format!("registry `{registry}` cannot be asked: {err}"),
                    };
                }
            };
            let children = match deleted_under(cx, &client, (registry, repository), digest).await {
                Ok(children) => children,
                Err(detail) => return Verdict::Unverified { detail },
            };
            let done = rows.iter().any(|r| r.state == ActionState::Done);
            match verdict(&client, registry, repository, digest, &children, done).await {
                Verdict::Gone => match inputs.tags.get(&self.identity(target)) {
                    Some(tags) => tags.clone(),
                    // The registry keys what it stores by SHA-256: "no such manifest" for a
                    // digest in another algorithm does not show the content is gone.
                    None if !digest.starts_with("sha256:") => Verdict::Unverified {
                        detail: format!(
                            "the registry keeps manifests by their sha256 digest: its answer \
                             that it has no `{digest}` does not show the content is gone"
                        ),
                    },
                    // A cache gone before anyone read it: had it been an index, the manifests
                    // it listed would still be served by their digests, unseen.
                    None if is_cache(target) && cx.known_facts(digest).is_none() => {
                        Verdict::Unverified {
                            detail: format!(
                                "cache `{digest}` was gone before what it lists was learned: were \
                                 it an index, the manifests it listed would still be served by \
                                 digest; check the repository, then accept it"
                            ),
                        }
                    }
                    None => Verdict::Gone,
                },
                other => other,
            }
        })
    }
}

/// Whether a manifest target was recorded as a cache (exported or imported as one).
fn is_cache(target: &Target) -> bool {
    matches!(target, Target::Manifest { cache: true, .. })
}

/// How deep indexes nested in indexes are followed: an index of indexes of images is two.
pub(crate) const NESTED: usize = 8;

/// Deletes the manifest, an index's children first (an index among them with its own children
/// first, in turn): after an interruption the index still names them. Recorded facts spare
/// asking the registry what the digest is.
async fn delete(
    cx: &Remotes,
    registry: &str,
    repository: &str,
    digest: &str,
) -> Result<Outcome, RemoteError> {
    let client = cx.registry(registry).await?;
    let digest = Digest::parse(digest, "digest").map_err(|e| RemoteError::local(e.to_string()))?;
    let mut seen = HashSet::new();
    let (children, spared) = delete_children(
        cx,
        &client,
        (registry, repository),
        (&digest, NESTED),
        &mut seen,
    )
    .await?;
    let deleted = client.delete_manifest(repository, &digest).await? == DeleteOutcome::Deleted;
    Ok(Outcome::Manifest {
        deleted,
        children,
        spared,
    })
}

/// Deletes the children of `digest` that are not spared, each nested index's own children
/// before it, `depth` levels of indexes down at most (an index deeper still is an error:
/// nothing below it would be deleted), each manifest once (`seen`); returns how many were
/// deleted and spared.
fn delete_children<'a>(
    cx: &'a Remotes,
    client: &'a RegistryClient,
    (registry, repository): (&'a str, &'a str),
    (digest, depth): (&'a Digest, usize),
    seen: &'a mut HashSet<String>,
) -> BoxFuture<'a, Result<(usize, usize), RemoteError>> {
    Box::pin(async move {
        let children = (cx.facts(client, repository, digest).await?)
            .map(|facts| facts.children)
            .unwrap_or_default();
        if children.is_empty() {
            return Ok((0, 0));
        }
        // Deleted by hand since (as the error below asks), it is gone, whatever its recorded
        // facts list.
        if depth == 0
            && client
                .head_manifest(repository, digest.as_str())
                .await?
                .is_some()
        {
            return Err(RemoteError::local(format!(
                "`{digest}` is an index nested more than {NESTED} indexes down: nothing under it \
                 was deleted; delete it and what it lists by hand"
            )));
        }
        if depth == 0 {
            return Ok((0, 0));
        }
        let spared = kept(
            cx,
            client,
            (registry, repository),
            digest.as_str(),
            &children,
        )
        .await?;
        let (mut deleted, mut kept_too) = (0, spared.len());
        for child in children.iter().filter(|c| !spared.contains(c.as_str())) {
            if !seen.insert(child.as_str().to_owned()) {
                continue;
            }
            let (below, spared_below) =
                delete_children(cx, client, (registry, repository), (child, depth - 1), seen)
                    .await?;
            deleted += below;
            kept_too += spared_below;
            if client.delete_manifest(repository, child).await? == DeleteOutcome::Deleted {
                deleted += 1;
            }
        }
        Ok((deleted, kept_too))
    })
}

/// The recorded facts of `digests`, and those of the manifests they list in turn,
/// [`NESTED`] levels down at most.
pub fn recorded_facts(
    store: &Store,
    digests: &[&str],
) -> Result<HashMap<String, ManifestFacts>, StoreError> {
    let mut facts = store.manifest_facts(digests)?;
    let mut level: Vec<String> = digests.iter().map(|d| (*d).to_owned()).collect();
    for _ in 0..NESTED {
        let mut next: Vec<String> = level
            .iter()
            .filter_map(|d| facts.get(d))
            .flat_map(|f| f.children.iter().map(|c| c.as_str().to_owned()))
            .filter(|c| !facts.contains_key(c))
            .collect();
        next.sort();
        next.dedup();
        if next.is_empty() {
            break;
        }
        let refs: Vec<&str> = next.iter().map(String::as_str).collect();
        facts.extend(store.manifest_facts(&refs)?);
        level = next;
    }
    Ok(facts)
}

/// The manifests under `digest` that a purge deletes with it, as the facts `cx` knows name
/// them: its children but those kept, and so on down the indexes among them, each once.
/// `Err` says why they cannot all be known: an index nested more than [`NESTED`] indexes
/// down (whose children a purge leaves).
async fn deleted_under(
    cx: &Remotes,
    client: &RegistryClient,
    place: (&str, &str),
    digest: &str,
) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    let mut seen: HashSet<String> = HashSet::from([digest.to_owned()]);
    let mut level = vec![digest.to_owned()];
    for depth in 0..=NESTED {
        let mut next = Vec::new();
        for parent in &level {
            let children = cx
                .known_facts(parent)
                .map(|f| f.children)
                .unwrap_or_default();
            if children.is_empty() {
                continue;
            }
            if depth == NESTED {
                return Err(format!(
                    "`{parent}` is an index nested more than {NESTED} indexes down: what it lists \
                     is not looked at"
                ));
            }
            // Children the purge leaves are not the incident's to remove.
            let left = kept(cx, client, place, parent, &children)
                .await
                .map_err(|err| err.to_string())?;
            for child in children {
                let child = child.as_str().to_owned();
                if !left.contains(&child) && seen.insert(child.clone()) {
                    out.push(child.clone());
                    next.push(child);
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

/// Which children of the index targets stay, known before a command acts (the dry run, the
/// check of done deletes, verification), which then decide with it instead of asking the
/// store as they go, as an execution does.
#[derive(Debug, Clone, Default)]
pub struct Leaving {
    /// Recorded facts of the manifests: an index's children are looked at with it.
    pub facts: HashMap<String, ManifestFacts>,
    /// Children recorded runs outside the incident pushed, and the indexes under a tag that
    /// keep the children they list (see [`Spare`]).
    pub spared: HashSet<String>,
    /// The digests the incident holds tainted: no index keeps them.
    pub tainted: HashSet<String>,
    /// The indexes under a tag in the repositories where one may keep children.
    pub tagged: TaggedScans,
}

impl Leaving {
    /// What the store (and the registry's tags, where they may keep a child) say of the
    /// manifests `digests` of incident `incident`, whose targets are `targets`.
    pub async fn ask(
        store: &mut Store,
        incident: i64,
        config: &Config,
        digests: &[&str],
        targets: &[&Target],
    ) -> Result<Self, StoreError> {
        let facts = recorded_facts(store, digests)?;
        let children: Vec<String> = facts
            .values()
            .flat_map(|f| f.children.iter().map(|c| c.as_str().to_owned()))
            .collect();
        let vouching = store.vouching(config.trusted_levels())?;
        let mut spared = store.recorded_untainted(incident, &children, &vouching)?;
        let remotes = Remotes::new(config, facts);
        spared.extend(tagged_keepers(store, (incident, &vouching), &remotes, targets).await?);
        let tainted = store
            .incident_digests(incident)?
            .into_iter()
            .map(|(digest, _)| digest)
            .collect();
        let tagged = remotes.tagged().await;
        Ok(Self {
            facts: remotes.known,
            spared,
            tainted,
            tagged,
        })
    }

    /// Remotes that leave what this says stays, with the tags already listed.
    pub fn remotes(self, config: &Config) -> Remotes {
        Remotes::new(config, self.facts)
            .sparing(Spare::Digests {
                spared: self.spared,
                tainted: self.tainted,
            })
            .with_tagged(self.tagged)
    }
}

/// The indexes under a tag that recorded runs outside incident `incident` name, in the
/// repositories of the index `targets` whose children `remotes` knows: they keep the children
/// they list (see [`Remotes::listed_by_tagged`]). Asked before the dry run and verification
/// act, so that their sets of spared digests hold them; a repository the registry cannot list
/// keeps nothing here, and the target's own check says why.
async fn tagged_keepers(
    store: &mut Store,
    (incident, vouching): (i64, &Vouching),
    remotes: &Remotes,
    targets: &[&Target],
) -> Result<HashSet<String>, StoreError> {
    let mut places = BTreeSet::new();
    for target in targets {
        if let Target::Manifest {
            registry,
            repository,
            digest,
            ..
        } = target
            && remotes
                .known
                .get(digest.as_str())
                .is_some_and(|facts| !facts.children.is_empty())
        {
            places.insert((registry.as_str(), repository.as_str()));
        }
    }
    let mut candidates = Vec::new();
    for (registry, repository) in places {
        if !store.names_untainted_in(incident, repository)? {
            continue;
        }
        let Ok(client) = remotes.registry(registry).await else {
            continue;
        };
        let pushed = store.pushed_untainted_in(incident, repository, vouching)?;
        if let Ok(tagged) = remotes
            .tagged_indexes(&client, (registry, repository), &pushed)
            .await
        {
            candidates.extend(tagged.iter().map(|(digest, _)| digest.clone()));
        }
    }
    store.recorded_untainted(incident, &candidates, vouching)
}

/// The `children` of `index` in `place` (registry, repository) that the purge leaves in
/// place: those recorded runs outside the incident pushed, and those an untainted index under a
/// tag lists.
async fn kept(
    cx: &Remotes,
    client: &RegistryClient,
    place: (&str, &str),
    index: &str,
    children: &[Digest],
) -> Result<HashSet<String>, RemoteError> {
    let listed: Vec<String> = children.iter().map(|c| c.as_str().to_owned()).collect();
    let mut kept = cx.spared(&listed)?;
    let rest: Vec<String> = listed
        .iter()
        .filter(|c| !kept.contains(*c))
        .cloned()
        .collect();
    let tagged = cx
        .listed_by_tagged(client, place, index, &rest)
        .await
        .map_err(|err| {
            RemoteError::new(
                err.kind,
                format!(
                    "cannot ask `{}` which indexes list its children: {err}",
                    place.0
                ),
            )
        })?;
    kept.extend(tagged);
    Ok(kept)
}

/// What the registry says a manifest is: a HEAD tells an index apart without fetching every
/// manifest's body, and only an index is fetched for its children. `None` when it is gone.
pub async fn probe(
    client: &RegistryClient,
    repository: &str,
    digest: &Digest,
) -> Result<Option<ManifestFacts>, RemoteError> {
    let Some(head) = client.head_manifest(repository, digest.as_str()).await? else {
        return Ok(None);
    };
    if !is_index_type(&head.media_type) {
        return Ok(Some(ManifestFacts {
            digest: digest.clone(),
            media_type: head.media_type,
            children: Vec::new(),
        }));
    }
    match client.get_manifest(repository, digest.as_str()).await? {
        Some(manifest) => facts(&manifest).map(Some),
        None => Ok(None),
    }
}

/// Saves a manifest (an index with its child manifests), its config and its blob list; what
/// each fetched manifest is, the store learns.
async fn save(
    opts: &Evidence,
    cx: &Remotes,
    client: &RegistryClient,
    registry: &str,
    repository: &str,
    digest: &str,
) -> Result<(), RemoteError> {
    let base = format!("manifests/{}/{}", sanitize(registry), repository);
    let Some(manifest) = client.get_manifest(repository, digest).await? else {
        return Ok(());
    };
    let hex = digest.trim_start_matches("sha256:");
    write(&opts.dir, &format!("{base}/{hex}.json"), &manifest.bytes)?;
    let mut blob_list: Vec<String> = blobs(&manifest.bytes, &manifest.media_type)?
        .iter()
        .map(|d| format!("{} {} {}", d.digest, d.size, d.media_type))
        .collect();
    let parsed = parse_manifest(&manifest.bytes, &manifest.media_type)?;
    let known = facts(&manifest)?;
    let children = known.children.clone();
    cx.learn(known);
    // An index's children are deleted with it: keep them too.
    for child in &children {
        if let Some(m) = client.get_manifest(repository, child.as_str()).await? {
            write(
                &opts.dir,
                &format!(
                    "{base}/{}.json",
                    child.as_str().trim_start_matches("sha256:")
                ),
                &m.bytes,
            )?;
            blob_list.extend(
                blobs(&m.bytes, &m.media_type)?
                    .iter()
                    .map(|d| format!("{} {} {}", d.digest, d.size, d.media_type)),
            );
            cx.learn(facts(&m)?);
        }
    }
    if let ParsedManifest::Image { config, .. } = &parsed
        && let Ok(bytes) = cx
            .config_blob(client, (registry, repository), &config.digest)
            .await
    {
        write(&opts.dir, &format!("{base}/{hex}.config.json"), &bytes)?;
    }
    blob_list.sort();
    blob_list.dedup();
    write(
        &opts.dir,
        &format!("{base}/{hex}.blobs.txt"),
        format!("{}\n", blob_list.join("\n")).as_bytes(),
    )?;
    if opts.blobs {
        for line in &blob_list {
            let Some(d) = line.split(' ').next() else {
                continue;
            };
            let Ok(d) = Digest::parse(d, "blob digest") else {
                continue;
            };
            let bytes = client.get_blob(repository, &d).await?;
            write(
                &opts.dir,
                &format!("blobs/{}", d.as_str().trim_start_matches("sha256:")),
                &bytes,
            )?;
        }
    }
    Ok(())
}

/// Whether the manifest or any child of it is still in the registry.
async fn verdict(
    client: &RegistryClient,
    registry: &str,
    repository: &str,
    digest: &str,
    children: &[String],
    done: bool,
) -> Verdict {
    let mut present = Vec::new();
    for reference in std::iter::once(digest).chain(children.iter().map(String::as_str)) {
        match client.head_manifest(repository, reference).await {
            Ok(Some(_)) => present.push(reference),
            Ok(None) => {}
            Err(err) => {
                return Verdict::Unverified {
                    detail: format!("cannot ask `{registry}`: {err}"),
                };
            }
        }
    }
    if present.is_empty() {
        return Verdict::Gone;
    }
    let what = if present[0] == digest {
        format!("{registry}/{repository}@{digest}")
    } else {
        format!(
            "child manifests {} of {registry}/{repository}@{digest}",
            present.join(", ")
        )
    };
    Verdict::Present {
        detail: if done {
            format!("{what} is back in the registry")
        } else {
            format!("{what} is still in the registry")
        },
    }
}

/// What a tag a manifest target was recorded under holds now: verification's check of the
/// target beside the digest itself. A run records what it pushed, and a hostile run can record
/// a digest the registry never keeps it under (another algorithm, or made up) while the tag
/// serves the content: the digest then answers "no such manifest" with the content in place.
///
/// Returns, by target identity, the verdict of its tags when one keeps it from being gone:
/// present when a tag serves content whose digest (in the recorded digest's algorithm) is the
/// target's, or content the incident holds tainted that no target of the journal names there;
/// unverified when a tag holds content no run outside the incident recorded pushing (people
/// look at it, then accept), or cannot be asked. A tag that is gone, or holds content a
/// vouching run outside the incident pushed, says nothing.
///
/// Also returns the digests the registry keeps a target's content under, where it differs
/// from the recorded one, each with the tag's name: the incident holds them tainted too.
pub async fn tag_verdicts(
    store: &Store,
    incident: i64,
    config: &Config,
    remotes: std::sync::Arc<Remotes>,
    targets: &[&Target],
) -> Result<TagVerdicts, StoreError> {
    let mut named: HashSet<(String, String, String)> = HashSet::new();
    let mut asks = Vec::new();
    for target in targets {
        let Target::Manifest {
            registry,
            repository,
            digest,
            tags,
            ..
        } = target
        else {
            continue;
        };
        named.insert((registry.clone(), repository.clone(), digest.clone()));
        let identity = Manifest.identity(target);
        for tag in tags {
            asks.push((
                identity.clone(),
                registry.clone(),
                repository.clone(),
                digest.clone(),
                tag.clone(),
            ));
        }
    }
    asks.sort();
    asks.dedup();
    // Each tag once, whatever number of targets were recorded under it.
    let mut tags: Vec<(String, String, String)> = asks
        .iter()
        .map(|(_, registry, repository, _, tag)| {
            (registry.clone(), repository.clone(), tag.clone())
        })
        .collect();
    tags.sort();
    tags.dedup();
    let concurrency = config.purge.concurrency.max(1);
    let jobs = tags
        .iter()
        .map(|(registry, repository, tag)| {
            let (remotes, registry, repository, tag) = (
                remotes.clone(),
                registry.clone(),
                repository.clone(),
                tag.clone(),
            );
            crate::purge::runner::Job {
                place: registry.clone(),
                limit: concurrency,
                work: async move {
                    let held = match remotes.registry(&registry).await {
                        Ok(client) => client.get_manifest(&repository, &tag).await,
                        Err(err) => Err(err),
                    };
                    Ok::<_, std::convert::Infallible>(held)
                },
            }
        })
        .collect();
    let answers = match crate::purge::runner::run(jobs).await {
        Ok(held) => held,
        Err(never) => match never {},
    };
    let others: Vec<String> = answers
        .iter()
        .filter_map(|held| match held {
            Ok(Some(manifest)) => Some(manifest.digest.as_str().to_owned()),
            _ => None,
        })
        .collect();
    let by_tag: HashMap<(String, String, String), _> = tags.into_iter().zip(answers).collect();
    let vouching = store.vouching(config.trusted_levels())?;
    let vouched = store.recorded_untainted(incident, &others, &vouching)?;
    let tainted: HashSet<String> = store
        .incident_digests(incident)?
        .into_iter()
        .map(|(digest, _)| digest)
        .collect();
    let mut verdicts: HashMap<String, Verdict> = HashMap::new();
    let mut served = Vec::new();
    for (identity, registry, repository, digest, tag) in asks {
        let place = format!("{registry}/{repository}:{tag}");
        let found = match &by_tag[&(registry.clone(), repository.clone(), tag)] {
            Ok(None) => continue,
            Err(err) => Verdict::Unverified {
                detail: format!("tag `{place}` cannot be asked: {err}"),
            },
            Ok(Some(manifest)) => {
                let algorithm = digest.split(':').next().unwrap_or("sha256");
                let held = manifest.digest.as_str();
                if crate::remote::registry::digest_of(&manifest.bytes, algorithm).as_str() == digest
                {
                    if held != digest {
                        served.push((held.to_owned(), format!("{place}@{held}")));
                    }
                    Verdict::Present {
                        detail: format!(
                            "tag `{place}` still serves it, kept by the registry as `{held}`: \
                             delete that digest"
                        ),
                    }
                } else if vouched.contains(held)
                    || (tainted.contains(held)
                        && named.contains(&(registry.clone(), repository.clone(), held.to_owned())))
                {
                    continue;
                } else if tainted.contains(held) {
                    Verdict::Present {
                        detail: format!(
                            "tag `{place}` holds `{held}`, which the incident holds tainted"
                        ),
                    }
                } else {
                    Verdict::Unverified {
                        detail: format!(
                            "tag `{place}` now holds `{held}`, which no trusted run outside the \
                             incident recorded pushing: look at it, then accept this target"
                        ),
                    }
                }
            }
        };
        match verdicts.get_mut(&identity) {
            None => {
                verdicts.insert(identity, found);
            }
            Some(seen) => *seen = joined(seen, found),
        }
    }
    Ok(TagVerdicts { verdicts, served })
}

/// What [`tag_verdicts`] found.
pub struct TagVerdicts {
    /// By target identity: the verdict of its tags, where they keep it from being gone.
    pub verdicts: HashMap<String, Verdict>,
    /// Digests (and names) the registry keeps targets' content under, other than recorded.
    pub served: Vec<(String, String)>,
}

/// Two findings about one target's tags as one: present if either is, the details joined.
fn joined(a: &Verdict, b: Verdict) -> Verdict {
    let detail = |v: &Verdict| match v {
        Verdict::Present { detail } | Verdict::Unverified { detail } => detail.clone(),
        _ => String::new(),
    };
    let both = format!("{}; {}", detail(a), detail(&b));
    if matches!(a, Verdict::Present { .. }) || matches!(b, Verdict::Present { .. }) {
        Verdict::Present { detail: both }
    } else {
        Verdict::Unverified { detail: both }
    }
}
