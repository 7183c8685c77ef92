//! Purge plans: from a blast radius, the scope and the options, the list of actions that
//! remove it. Pure: the caller loads everything the plan needs into [`PlanContext`].

use std::collections::{BTreeMap, BTreeSet};

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

use crate::config::Scope;
use crate::graph::source::ArtifactInfo;
use crate::graph::{Entity, Kind, Tainted, Trace, Via};
use crate::model::{Backend, Driver};
use crate::report::escape::Quoted;
use crate::time::Micros;

/// What an action does. The strings are stable: the journal and reports use them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActionKind {
    /// Delete a manifest by digest from its repository (and an index's children).
    DeleteManifest,
    /// Prune the `exec.cachemount` records of one mount id on a builder.
    PruneMount,
    /// Prune the build-cache records that hold tainted work on a builder.
    PruneBuilder,
    /// Remove a local image from a Docker-driver builder.
    RemoveLocalImage,
    /// Something cachewarden cannot do itself: the report gives the command.
    FollowUp,
}

impl ActionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DeleteManifest => "delete-manifest",
            Self::PruneMount => "prune-mount",
            Self::PruneBuilder => "prune-builder",
            Self::RemoveLocalImage => "remove-local-image",
            Self::FollowUp => "follow-up",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        [
            Self::DeleteManifest,
            Self::PruneMount,
            Self::PruneBuilder,
            Self::RemoveLocalImage,
            Self::FollowUp,
        ]
        .into_iter()
        .find(|k| k.as_str() == value)
    }
}

/// The target and parameters of an action, stored as JSON in the journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "target", rename_all = "kebab-case")]
pub enum Target {
    Manifest {
        registry: String,
        repository: String,
        digest: String,
        /// Tags the store saw pointing at it.
        tags: Vec<String>,
        /// A cache (exported or imported as one), an image, or both.
        cache: bool,
        image: bool,
    },
    Mount {
        builder: String,
        endpoint: Option<String>,
        driver: Option<Driver>,
        mount_id: String,
        /// Target paths the mount was used at: how Docker 20.10's record descriptions name it.
        targets: Vec<String>,
        /// Other mount ids on the builder used at one of these targets.
        shares_target_with: Vec<String>,
    },
    Builder {
        builder: String,
        endpoint: Option<String>,
        driver: Option<Driver>,
        /// Records that tainted runs created (record-level evidence).
        record_ids: Vec<String>,
        /// Where evidence is missing: also prune records last used at or after this time.
        used_since: Option<Micros>,
        /// Where a tainted run's record evidence is not believed (its trust level is the
        /// lowest): also prune records made at or after this time, which it may have made and
        /// left out. A record made before it began is none of its.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        made_since: Option<Micros>,
        /// Records made since `made_since` that runs whose evidence is believed created: none
        /// of the doubted run's, so that prune leaves them (unless named).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        made_by_others: Vec<String>,
        /// Prune everything.
        full: bool,
        /// Only the listed records, chosen by a sweep: the builder is not clean afterwards, so
        /// no builder purge is recorded.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        partial: bool,
        /// How far the builder's clock may be behind the runners' (`used_since` allows for it):
        /// a prune that is not full is recorded with it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        clock_skew: Option<Micros>,
    },
    LocalImage {
        builder: String,
        endpoint: Option<String>,
        /// An image id or `registry/repository@digest`.
        reference: String,
    },
    FollowUp {
        what: String,
        command: String,
        /// What verification checks for this follow-up: a tainted image left in its registry
        /// is checked like a manifest to delete. Without one, the follow-up cannot be checked.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subject: Option<Box<Target>>,
    },
}

impl Target {
    /// Whether the scope allows acting on this target. Follow-ups are never executed, so
    /// nothing limits them.
    pub fn in_scope(&self, scope: &Scope) -> bool {
        match self {
            Self::Manifest {
                registry,
                repository,
                ..
            } => scope.allows_repository(registry, repository),
            Self::Mount { builder, .. }
            | Self::Builder { builder, .. }
            | Self::LocalImage { builder, .. } => scope.allows_builder(builder),
            Self::FollowUp { .. } => true,
        }
    }

    /// The digest of a registry manifest target.
    pub fn manifest_digest(&self) -> Option<&str> {
        match self {
            Self::Manifest { digest, .. } => Some(digest),
            _ => None,
        }
    }
}

/// One planned action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    pub kind: ActionKind,
    /// The registry host or builder it acts on; concurrency is bounded per place.
    pub place: String,
    pub target: Target,
    /// Why it is in the plan.
    pub reason: String,
    /// Outside the configured scope: reported, never executed.
    pub in_scope: bool,
}

/// A builder as the store and the config know it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuilderPlace {
    pub driver: Option<Driver>,
    pub endpoint: Option<String>,
}

/// What the plan needs beyond the trace.
#[derive(Debug, Clone, Default)]
pub struct PlanContext {
    pub builders: BTreeMap<String, BuilderPlace>,
    /// Target paths of each tainted mount of the default namespace, by (builder, mount id).
    pub mount_targets: BTreeMap<(String, String), Vec<String>>,
    /// Every mount used on a builder at a target path: (builder, target) -> (namespace, id).
    pub target_users: BTreeMap<(String, String), BTreeSet<(String, String)>>,
    /// Tainted artifacts that runs recorded only as images: a copy of a tainted cache's bytes
    /// there is an image, deleted only with `--delete-images`.
    pub images_only: BTreeSet<i64>,
    /// Tainted artifacts that a trusted run outside the blast radius built and pushed as an
    /// image, with that run's name: left in place, for people to confirm.
    pub vouched_images: BTreeMap<i64, String>,
    /// Cache-mount records tainted runs mounted that no cache mount they recorded explains, by
    /// run id: (builder, record id, description).
    pub unexplained_mounts: BTreeMap<i64, Vec<(String, String, String)>>,
    /// On each builder where a tainted run's record evidence is doubted: the records runs
    /// whose evidence is believed created there since it began (less the clock skew), which
    /// the prune of what was made since leaves (they are not the doubted run's).
    pub made_by_believed: BTreeMap<String, Vec<String>>,
}

impl PlanContext {
    /// The prune of mount `mount_id` (of the default namespace) on `builder`: its target
    /// paths, and every other mount that uses one of them, which a prune by target path would
    /// take too.
    pub fn prune_mount(&self, builder: &str, mount_id: &str) -> Target {
        let place = self.builders.get(builder).cloned().unwrap_or_default();
        let targets = self
            .mount_targets
            .get(&(builder.to_owned(), mount_id.to_owned()))
            .cloned()
            .unwrap_or_default();
        let mut shares: BTreeSet<String> = BTreeSet::new();
        for target in &targets {
            if let Some(users) = self.target_users.get(&(builder.to_owned(), target.clone())) {
                shares.extend(
                    users
                        .iter()
                        .filter(|(ns, id)| !(ns.is_empty() && id == mount_id))
                        .map(user_name),
                );
            }
        }
        Target::Mount {
            builder: builder.to_owned(),
            endpoint: place.endpoint,
            driver: place.driver,
            mount_id: mount_id.to_owned(),
            targets,
            shares_target_with: shares.into_iter().collect(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanOptions {
    /// Delete tainted images too, not only caches.
    pub delete_images: bool,
    /// Prune every record on tainted builders.
    pub full_prune: bool,
    /// Clock-skew margin subtracted from a builder's taint time.
    pub clock_skew: Micros,
}

/// Computes the actions that remove a blast radius, in a stable order.
/// The builders where a tainted run's record evidence is doubted (it has some, complete, at the
/// lowest trust level), each with the earliest time such a run may have written there: the
/// builder prune takes what was made there since ([`Target::Builder`]'s `made_since`).
pub fn doubted_since(trace: &Trace) -> BTreeMap<String, Micros> {
    let mut doubted: BTreeMap<String, Micros> = BTreeMap::new();
    for tainted in trace.tainted(Kind::Run) {
        if let (Entity::Run { info }, Some(builder)) = (tainted.entity, tainted.builder)
            && info.records_doubted
            && info.has_records
            && !info.truncated
        {
            // A seed run's claimed start may be later than it began.
            let from = trace.writes_from(info);
            let t = doubted.entry(builder.to_string()).or_insert(from);
            *t = (*t).min(from);
        }
    }
    doubted
}

pub fn plan(trace: &Trace, ctx: &PlanContext, scope: &Scope, options: PlanOptions) -> Vec<Action> {
    let mut actions = Vec::new();
    let place_of = |builder: &str| ctx.builders.get(builder).cloned().unwrap_or_default();

    // Registry artifacts and non-registry caches. A tag recorded without a digest needs no
    // follow-up when it is tainted only as the holder of a tainted digest (its own action
    // deletes that), or when the run that pushed it by tag also recorded the push pinned (a
    // wrapped push pins it). One another run pushed may hold anything: its follow-up stays.
    let mut pinned_tags: BTreeSet<(String, String, CompactString)> = BTreeSet::new();
    for kind in [Kind::CacheRef, Kind::Image] {
        for tainted in trace.tainted(kind) {
            if let Entity::Artifact { info, .. } = tainted.entity
                && info.backend == Backend::Registry
                && !info.digest.is_empty()
                && matches!(tainted.via, Via::Exported | Via::Produced)
                && let Some(pusher) = tainted.from_name()
            {
                for tag in &info.tags {
                    pinned_tags.insert((info.locator.to_string(), tag.to_string(), pusher.clone()));
                }
            }
        }
    }
    let pinned_by_pusher = |info: &ArtifactInfo, tainted: &Tainted<'_>| {
        matches!(tainted.via, Via::Exported | Via::Produced)
            && tainted.from_name().is_some_and(|pusher| {
                pinned_tags.contains(&(info.locator.to_string(), info.key.to_string(), pusher))
            })
    };
    // A tag only ever built into a builder's engine (`docker build -t NAME:TAG`, never pushed)
    // is a local image, which its own action removes: a registry has nothing under it to look
    // up. Only an image tag qualifies, never a cache one: a `--cache-to type=registry` export
    // is pushed by the build itself.
    let mut local_names: BTreeSet<String> = BTreeSet::new();
    for kind in [Kind::CacheRef, Kind::Image] {
        for tainted in trace.tainted(kind) {
            if let Entity::Artifact { info, .. } = tainted.entity
                && info.backend == Backend::LocalImage
            {
                local_names.insert(info.key.to_string());
            }
        }
    }
    let mut seen = BTreeSet::new();
    let mut local_digests: BTreeSet<String> = BTreeSet::new();
    for kind in [Kind::CacheRef, Kind::Image] {
        for tainted in trace.tainted(kind) {
            let Entity::Artifact {
                info,
                cache,
                image,
                pushed_or_seeded,
            } = tainted.entity
            else {
                continue;
            };
            if !seen.insert(info.id) {
                continue;
            }
            let reason = taint_reason(&tainted);
            match info.backend {
                Backend::Registry if !info.digest.is_empty() => {
                    local_digests.insert(format!("{}@{}", info.locator, info.digest));
                    if let Some(run) = ctx.vouched_images.get(&info.id) {
                        // Never deleted on a claim: what a trusted build pushed under the digest
                        // is its own bytes. Verification leaves it unverified until accepted.
                        actions.push(Action {
                            kind: ActionKind::FollowUp,
                            place: info.locator.to_string(),
                            in_scope: true,
                            target: Target::FollowUp {
                                what: format!(
                                    "{} is the image trusted run {} built and pushed; a tainted run claims to have pushed it too: confirm it is that build's, then accept it",
                                    Quoted(&format!("{}@{}", info.locator, info.digest)),
                                    Quoted(run),
                                ),
                                command: "cachewarden incident accept ID SEQ --reason \"...\"".to_owned(),
                                subject: None,
                            },
                            reason,
                        });
                        continue;
                    }
                    let image_only = ctx.images_only.contains(&info.id);
                    let manifest = Manifest {
                        locator: &info.locator,
                        digest: &info.digest,
                        tags: info.tags.iter().map(|t| t.to_string()).collect(),
                        cache: *cache && !image_only,
                        image: *image || image_only,
                    };
                    actions.push(manifest.action(scope, options, reason));
                }
                Backend::Registry if !*pushed_or_seeded || pinned_by_pusher(info, &tainted) => {}
                Backend::Registry if !*cache && local_names.contains(&local_name(&info.locator, &info.key)) => {}
                Backend::Registry => actions.push(Action {
                    kind: ActionKind::FollowUp,
                    place: info.locator.to_string(),
                    in_scope: true,
                    target: Target::FollowUp {
                        what: format!(
                            "{} was recorded without a digest: find what it pointed at and delete that",
                            Quoted(&format!("{}:{}", info.locator, info.key))
                        ),
                        command: format!(
                            "skopeo inspect {}",
                            sh(&format!("docker://{}:{}", info.locator, info.key))
                        ),
                        subject: None,
                    },
                    reason,
                }),
                Backend::LocalImage => {
                    let place = place_of(&info.locator);
                    actions.push(Action {
                        kind: ActionKind::RemoveLocalImage,
                        place: info.locator.to_string(),
                        in_scope: scope.allows_builder(&info.locator),
                        target: Target::LocalImage {
                            builder: info.locator.to_string(),
                            endpoint: place.endpoint,
                            reference: info.digest.clone(),
                        },
                        reason,
                    });
                }
                // A cache recorded with a locator (what an import may carry) is another cache
                // than the same key elsewhere: the locator is named, and two stay two.
                backend => actions.push(Action {
                    kind: ActionKind::FollowUp,
                    place: match &*info.locator {
                        "" => backend.as_str().to_owned(),
                        locator => format!("{}:{locator}", backend.as_str()),
                    },
                    in_scope: true,
                    target: Target::FollowUp {
                        what: match &*info.locator {
                            "" => format!(
                                "delete {} cache {}",
                                backend.as_str(),
                                Quoted(&info.key)
                            ),
                            locator => format!(
                                "delete {} cache {} of {}",
                                backend.as_str(),
                                Quoted(&info.key),
                                Quoted(locator)
                            ),
                        },
                        command: match (backend, &*info.locator) {
                            // A `gha` cache an import placed in a repository is deleted there,
                            // not in whichever repository the command is run from.
                            (Backend::Gha, locator) if !locator.is_empty() => {
                                gha_in_repository(locator, &info.key)
                            }
                            _ => follow_up_command(backend, &info.key),
                        },
                        subject: None,
                    },
                    reason,
                }),
            }
        }
    }

    // Digests a seed named where the store recorded no push of them: the registry holds what
    // no hook saw pushed. The digest is acted on in the repository the seed named; a digest
    // named without one is left to people to find.
    for node in trace.seeds() {
        let (
            Entity::Digest {
                digest, locator, ..
            },
            Some(mark),
        ) = (&node.entity, &node.seed)
        else {
            continue;
        };
        let reason = "seeded: no recorded push of it here".to_owned();
        match locator {
            Some(locator) => {
                local_digests.insert(format!("{locator}@{digest}"));
                let manifest = Manifest {
                    locator,
                    digest: digest.as_str(),
                    tags: Vec::new(),
                    cache: mark.kind != Kind::Image,
                    image: mark.kind == Kind::Image,
                };
                actions.push(manifest.action(scope, options, reason));
            }
            None => actions.push(Action {
                kind: ActionKind::FollowUp,
                place: digest.to_string(),
                in_scope: true,
                target: Target::FollowUp {
                    what: format!(
                        "find the repositories that hold {} (no recorded run pushed it) and delete it there",
                        Quoted(digest.as_str())
                    ),
                    command: String::new(),
                    subject: None,
                },
                reason,
            }),
        }
    }

    // Mounts.
    for tainted in trace.tainted(Kind::Mount) {
        let Entity::Mount(mount) = tainted.entity else {
            continue;
        };
        let place = place_of(&mount.builder_name);
        let reason = format!(
            "tainted from {} via {}",
            crate::time::format(tainted.tainted_at),
            tainted.via.as_str()
        );
        // A mount under a namespace (`BUILDKIT_CACHE_MOUNT_NS`) is keyed `<namespace>/<id>`:
        // a prune by id finds the default namespace's mount of that id instead, and Docker
        // 20.10 names no id at all. Its records are for the responder to prune.
        if !mount.namespace.is_empty() {
            let llb = format!("{}/{}", mount.namespace, mount.mount_id);
            let host = place
                .endpoint
                .as_deref()
                .map(|e| format!("DOCKER_HOST={} ", sh(e)))
                .unwrap_or_default();
            actions.push(Action {
                kind: ActionKind::FollowUp,
                place: mount.builder_name.to_string(),
                in_scope: scope.allows_builder(&mount.builder_name),
                target: Target::FollowUp {
                    what: format!(
                        "cache mount {} on {} is under a namespace (BUILDKIT_CACHE_MOUNT_NS): prune by id its records, those described {} (Docker 25 and later) or at its target path, leaving other namespaces' records",
                        Quoted(&llb),
                        Quoted(&mount.builder_name),
                        Quoted(&format!("with id \"{llb}\""))
                    ),
                    command: format!("{host}docker system df --verbose"),
                    subject: None,
                },
                reason,
            });
            continue;
        }
        actions.push(Action {
            kind: ActionKind::PruneMount,
            place: mount.builder_name.to_string(),
            in_scope: scope.allows_builder(&mount.builder_name),
            target: ctx.prune_mount(&mount.builder_name, &mount.mount_id),
            reason,
        });
    }

    // Builders: records tainted runs created, and where evidence is missing, everything used
    // since the builder's taint time.
    let mut records: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for tainted in trace.tainted(Kind::Record) {
        if let Entity::Record { info, builder } = tainted.entity {
            records
                .entry(builder.to_string())
                .or_default()
                .insert(info.record_id.to_string());
        }
    }
    let mut unverified: BTreeMap<String, Micros> = BTreeMap::new();
    let doubted = doubted_since(trace);
    let mut docker_builders: BTreeSet<String> = BTreeSet::new();
    for tainted in trace.tainted(Kind::Run) {
        let Entity::Run { info } = tainted.entity else {
            continue;
        };
        // A run recorded without what was over a limit (inputs the hook could not read in
        // full) may have written mounts and exported caches no record names: people find
        // them, and verify leaves the follow-up unverified until it is accepted.
        if info.truncated {
            let builder = tainted.builder.unwrap_or("its builder");
            actions.push(Action {
                kind: ActionKind::FollowUp,
                place: builder.to_owned(),
                in_scope: true,
                target: Target::FollowUp {
                    what: format!(
                        "{} was recorded without what was over a limit: find the cache mounts on {} and the caches it wrote that no record names, and remove them",
                        Quoted(&crate::graph::run_display_name(info)),
                        Quoted(builder)
                    ),
                    command: String::new(),
                    subject: None,
                },
                reason: taint_reason(&tainted),
            });
        }
        // Cache mounts it mounted that it did not record (an `ONBUILD` step of a base image,
        // a mount the hook could not read): no mount names them, so no prune or check of a
        // mount covers them. People find them; verify leaves them unverified until accepted.
        if let Some(records) = ctx.unexplained_mounts.get(&info.id) {
            let mut by_builder: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
            for (builder, record, _) in records {
                by_builder.entry(builder).or_default().push(record);
            }
            for (builder, ids) in by_builder {
                actions.push(Action {
                    kind: ActionKind::FollowUp,
                    place: builder.to_owned(),
                    in_scope: scope.allows_builder(builder),
                    target: Target::FollowUp {
                        what: format!(
                            "{} mounted cache mounts it did not record (records {} on {}): a step the hook did not read, such as an ONBUILD of a base image, wrote them; prune them by id after checking",
                            Quoted(&crate::graph::run_display_name(info)),
                            ids.iter().map(|id| Quoted(id).to_string()).collect::<Vec<_>>().join(", "),
                            Quoted(builder)
                        ),
                        command: String::new(),
                        subject: None,
                    },
                    reason: taint_reason(&tainted),
                });
            }
        }
        if let Some(builder) = tainted.builder {
            docker_builders.insert(builder.to_string());
            // A run without record evidence (or with what was over a limit left out of it)
            // may have made records no id names.
            if !info.has_records || info.truncated {
                // A seed run's claimed start may be later than it began.
                let from = trace.writes_from(info);
                let t = unverified.entry(builder.to_string()).or_insert(from);
                *t = (*t).min(from);
            }
        }
    }
    // A seeded builder is suspect from the seed's time, whatever tainted it earlier.
    for seed in trace.seeds() {
        if let (Entity::Builder(b), Some(at)) =
            (&seed.entity, seed.seed.as_ref().and_then(|s| s.at))
        {
            let t = unverified.entry(b.name.to_string()).or_insert(at);
            *t = (*t).min(at);
        }
    }
    let builders: BTreeSet<String> = records
        .keys()
        .chain(unverified.keys())
        .chain(doubted.keys())
        .cloned()
        .chain(
            options
                .full_prune
                .then(|| docker_builders.iter().cloned())
                .into_iter()
                .flatten(),
        )
        .collect();
    for builder in builders {
        let place = place_of(&builder);
        let ids: Vec<String> = records
            .get(&builder)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        let since = (unverified.get(&builder)).map(|t| t.saturating_sub(options.clock_skew));
        let made_since = (doubted.get(&builder))
            .map(|t| t.saturating_sub(options.clock_skew))
            .filter(|&made| since.is_none_or(|used| made < used));
        // A run whose times prove nothing may have made records at any time.
        let used = |t: Micros| match t {
            Micros::MIN => "every record but cache mounts".to_owned(),
            t => format!("records used since {}", crate::time::format(t)),
        };
        let mut reason = match (ids.is_empty(), since) {
            (false, Some(t)) => format!(
                "{} created by tainted runs, and runs without record evidence: {}",
                crate::report::count(ids.len(), "record", "records"),
                used(t)
            ),
            (false, None) => format!(
                "{} created by tainted runs",
                crate::report::count(ids.len(), "record", "records")
            ),
            (true, Some(t)) => format!("tainted runs without record evidence: {}", used(t)),
            (true, None) if made_since.is_some() => String::new(),
            (true, None) => "full prune requested".to_owned(),
        };
        if let Some(t) = made_since {
            if !reason.is_empty() {
                reason.push_str("; ");
            }
            reason.push_str(&format!(
                "tainted runs whose record evidence is not believed (the lowest trust level): records made {}",
                crate::report::made_since(t)
            ));
        }
        actions.push(Action {
            kind: ActionKind::PruneBuilder,
            place: builder.clone(),
            in_scope: scope.allows_builder(&builder),
            target: Target::Builder {
                builder: builder.clone(),
                endpoint: place.endpoint,
                driver: place.driver,
                record_ids: ids,
                used_since: since,
                made_by_others: made_since
                    .and_then(|_| ctx.made_by_believed.get(&builder).cloned())
                    .unwrap_or_default(),
                made_since,
                full: options.full_prune,
                partial: false,
                clock_skew: Some(options.clock_skew),
            },
            reason,
        });
    }

    // Docker 20.10 reads `--cache-from` from local images first: remove local copies of
    // tainted registry digests from the Docker-driver builders tainted runs used.
    for builder in &docker_builders {
        let place = place_of(builder);
        if place.driver.is_some_and(|d| d != Driver::Docker) {
            continue;
        }
        for reference in &local_digests {
            actions.push(Action {
                kind: ActionKind::RemoveLocalImage,
                place: builder.clone(),
                in_scope: scope.allows_builder(builder),
                target: Target::LocalImage {
                    builder: builder.clone(),
                    endpoint: place.endpoint.clone(),
                    reference: reference.clone(),
                },
                reason: "a local copy would be read before the registry".to_owned(),
            });
        }
    }

    settle(&mut actions);
    actions
}

/// Why a tainted entity's action is in the plan: when it was tainted, and how.
fn taint_reason(tainted: &Tainted<'_>) -> String {
    format!(
        "tainted at {} via {}",
        crate::time::format(tainted.tainted_at),
        tainted.via.as_str()
    )
}

/// A tainted manifest in a registry repository.
struct Manifest<'a> {
    /// `registry/repository`.
    locator: &'a str,
    digest: &'a str,
    tags: Vec<String>,
    cache: bool,
    image: bool,
}

impl Manifest<'_> {
    /// Its deletion, or for an image while images are kept, a follow-up that verification
    /// checks as the manifest.
    fn action(self, scope: &Scope, options: PlanOptions, reason: String) -> Action {
        let (registry, repository) = self.locator.split_once('/').unwrap_or((self.locator, ""));
        let what = format!("{}@{}", self.locator, self.digest);
        let target = Target::Manifest {
            registry: registry.to_owned(),
            repository: repository.to_owned(),
            digest: self.digest.to_owned(),
            tags: self.tags,
            cache: self.cache,
            image: self.image,
        };
        if self.cache || options.delete_images {
            Action {
                kind: ActionKind::DeleteManifest,
                place: registry.to_owned(),
                in_scope: target.in_scope(scope),
                target,
                reason,
            }
        } else {
            Action {
                kind: ActionKind::FollowUp,
                place: registry.to_owned(),
                in_scope: true,
                target: Target::FollowUp {
                    what: format!("rebuild or quarantine image {}", Quoted(&what)),
                    command: format!(
                        "cachewarden incident open --image {} --delete-images   # or rebuild it, or quarantine it",
                        sh(&what)
                    ),
                    subject: Some(Box::new(target)),
                },
                reason,
            }
        }
    }
}

/// The name Docker gives a local image built with `-t LOCATOR:TAG`, as `wrap` records it: Docker
/// Hub's `library/` and host left out.
fn local_name(locator: &str, tag: &str) -> String {
    let name = match locator.split_once('/') {
        Some((crate::model::DOCKER_HUB, path)) => path.strip_prefix("library/").unwrap_or(path),
        _ => locator,
    };
    format!("{name}:{tag}")
}

/// Puts a plan in its stable order and drops repeated actions.
pub fn settle(actions: &mut Vec<Action>) {
    // Each target is serialized once, not once per comparison.
    actions.sort_by_cached_key(|a| {
        (
            a.kind,
            a.place.clone(),
            serde_json::to_string(&a.target).ok(),
        )
    });
    actions.dedup();
}

/// The command that deletes a non-registry cache entry in its own system. The key is recorded
/// (a hostile pipeline chose it), so it is quoted for the shell the command is pasted into,
/// and a key holding a control or invisible character, which a pasted command would not show
/// as it is, gets no command at all: a shell comment says so instead.
pub fn follow_up_command(backend: Backend, key: &str) -> String {
    follow_up_command_in(backend, key, None)
}

/// The `gha` cache `key` of repository `repository` (`gh cache delete -R`). The repository
/// came with the record, so only a plain `OWNER/REPO` on GitHub (no host, which `gh` would
/// talk to with the responder's token) gets a command.
fn gha_in_repository(repository: &str, key: &str) -> String {
    let name = |part: &str| {
        !part.is_empty()
            && !part.starts_with('-')
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    };
    match repository.split_once('/') {
        Some((owner, repo)) if name(owner) && name(repo) => {
            follow_up_command_in(Backend::Gha, key, Some(repository))
        }
        _ => "# the repository is no plain OWNER/REPO: delete this cache by hand".to_owned(),
    }
}

fn follow_up_command_in(backend: Backend, key: &str, repository: Option<&str>) -> String {
    if key
        .chars()
        .any(|c| c != '\\' && crate::report::escape::needs_escape(c))
    {
        return "# the key holds control or invisible characters: delete this cache by hand"
            .to_owned();
    }
    match backend {
        // By the exact key: `gh cache list --key` matches a prefix. gh reads a key that is a
        // number as a cache id.
        Backend::Gha => {
            let digits = key.strip_prefix(['+', '-']).unwrap_or(key);
            if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                "# gh takes this key for a cache id: delete the cache by its key through the \
                 GitHub API"
                    .to_owned()
            } else {
                match repository {
                    Some(repository) => {
                        format!("gh cache delete -R {} -- {}", sh(repository), sh(key))
                    }
                    None => format!("gh cache delete -- {}", sh(key)),
                }
            }
        }
        Backend::S3 => {
            let path = key.split(" (").next().unwrap_or(key);
            // `s3://bucket/` alone would be the whole bucket.
            match path.strip_prefix("s3://").and_then(|p| p.split_once('/')) {
                Some((bucket, name)) if !bucket.is_empty() && !name.is_empty() => {
                    format!("aws s3 rm --recursive {}", sh(path))
                }
                _ => "# the key names no cache in a bucket: delete it by hand".to_owned(),
            }
        }
        Backend::Azblob => azblob_follow_up(key),
        // What a local cache export writes into its directory (an OCI layout), never the
        // directory itself: the recorded path could be any directory.
        Backend::Local => {
            let dir = key.trim_end_matches('/');
            let parts = ["index.json", "oci-layout", "blobs", "ingest"]
                .map(|part| sh(&format!("{dir}/{part}")));
            format!("rm -rf -- {}", parts.join(" "))
        }
        Backend::Registry | Backend::LocalImage => String::new(),
    }
}

/// The command that deletes an azblob cache: its manifest blob alone, by the URL its key is
/// (`ingest::cache_flag::azblob_key`), never a batch, which would take a whole container or
/// prefix. The layer blobs stay: they are shared by digest with every cache in the container,
/// and no import finds them without the manifest. A key whose URL is not plain (no account, a
/// query, a `..`, several names, a character a URL would have to encode) gets a shell comment.
fn azblob_follow_up(key: &str) -> String {
    let rest = ["https://", "http://"].iter().find_map(|scheme| {
        key.get(..scheme.len())
            .filter(|s| s.eq_ignore_ascii_case(scheme))
            .map(|_| &key[scheme.len()..])
    });
    let Some(rest) = rest else {
        return "# the key names no storage account: delete the cache's manifest blob by hand"
            .to_owned();
    };
    let plain =
        |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~' | '/' | ':');
    let segments: Vec<&str> = rest.split('/').collect();
    // The host, a container, the manifests prefix and the name: a key recorded before the
    // container and prefixes were part of it (`account/name`) names no blob here.
    let scoped = segments.len() >= 4
        && segments
            .iter()
            .all(|s| !s.is_empty() && *s != "." && *s != "..");
    if !rest.chars().all(plain) || !scoped {
        return "# the key is not one manifest blob's plain URL: delete the cache's manifest \
                blob by hand"
            .to_owned();
    }
    format!("az storage blob delete --blob-url {}", sh(key))
}

/// A mount that uses a target path, as a plan names it: its id, `<namespace>/<id>` under a
/// namespace.
fn user_name((namespace, id): &(String, String)) -> String {
    if namespace.is_empty() {
        id.clone()
    } else {
        format!("{namespace}/{id}")
    }
}

/// `word` as one shell word, whatever it holds. (Neither store keeps a NUL, which no shell
/// word can hold.)
fn sh(word: &str) -> String {
    let word = word.replace('\0', "");
    shlex::try_quote(&word).map_or_else(|_| "''".to_owned(), |quoted| quoted.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `gha` cache an import placed in a repository is deleted there, with `-R`, only when
    /// the repository is a plain `OWNER/REPO`: a host would have `gh` send the token there.
    #[test]
    fn a_gha_cache_is_deleted_in_its_repository_only_when_plainly_named() {
        assert_eq!(
            gha_in_repository("org/prod", "buildkit-main"),
            "gh cache delete -R org/prod -- buildkit-main"
        );
        for repository in [
            "ghes.attacker.example/victim-org/prod",
            "-R/x",
            "org/re po",
            "org",
            "org/",
        ] {
            assert!(
                gha_in_repository(repository, "k").starts_with("# "),
                "{repository}"
            );
        }
    }

    /// A recorded key, however hostile, is one word of the follow-up command: the shell runs
    /// the command named, never anything the key holds; a key a pasted command would not show
    /// as it is gets a comment instead.
    #[test]
    fn a_follow_up_command_holds_its_key_as_one_word() {
        for key in ["1234", "+12", "-7", "007"] {
            let command = follow_up_command(Backend::Gha, key);
            assert!(command.starts_with("# "), "{key}: {command}");
        }
        let hostile = [
            "k'; touch /tmp/pwned; '",
            "$(touch /tmp/pwned)`id`'x",
            "a b c",
            "-rf /",
            "\\'\"$HOME",
            "",
        ];
        for key in hostile {
            let words = shlex::split(&follow_up_command(Backend::Gha, key)).unwrap();
            assert_eq!(words, ["gh", "cache", "delete", "--", key], "{key:?}");
            // A key an azblob URL cannot hold as it is gets no command.
            let url = format!("https://acct.blob.core.windows.net/c/manifests/{key}");
            let command = follow_up_command(Backend::Azblob, &url);
            assert!(command.starts_with("# "), "{key:?}: {command}");
            let path = format!("s3://bucket/{key}x");
            let words = shlex::split(&follow_up_command(Backend::S3, &path)).unwrap();
            assert_eq!(words, ["aws", "s3", "rm", "--recursive", path.as_str()]);
            let words = shlex::split(&follow_up_command(Backend::Local, key)).unwrap();
            let dir = key.trim_end_matches('/');
            let expected: Vec<String> = ["index.json", "oci-layout", "blobs", "ingest"]
                .iter()
                .map(|part| format!("{dir}/{part}"))
                .collect();
            assert_eq!(words[..3], ["rm", "-rf", "--"]);
            assert_eq!(words[3..], expected, "{key:?}");
        }
        // A recorded path is never removed whole; a bucket is never named alone.
        let words = shlex::split(&follow_up_command(Backend::Local, "/")).unwrap();
        assert_eq!(
            words[3..],
            ["/index.json", "/oci-layout", "/blobs", "/ingest"]
        );
        for key in ["s3://prod/", "s3://prod", "s3:///x", "prod/x"] {
            let command = follow_up_command(Backend::S3, key);
            assert!(command.starts_with("# "), "{key}: {command}");
        }
        for key in ["a\nb", "k\x1b[2J", "web\u{200b}main", "x\u{202e}y"] {
            let command = follow_up_command(Backend::Gha, key);
            assert!(command.starts_with("# "), "{command:?}");
            assert!(shlex::split(&command).unwrap().is_empty());
        }
    }

    /// An azblob follow-up deletes the one manifest blob the cache's key names, in the
    /// container BuildKit writes to, never a container or a prefix in a batch; a key that
    /// names no account, or no single blob, gets a comment saying to delete it by hand.
    #[test]
    fn an_azblob_follow_up_deletes_only_the_cache_manifest() {
        let key = |flag: &str| match crate::ingest::cache_flag::parse(flag, "--cache-to") {
            Ok(crate::model::CacheSpec::Azblob { key }) => key,
            other => panic!("{other:?}"),
        };
        let command = |flag: &str| follow_up_command(Backend::Azblob, &key(flag));
        assert_eq!(
            command(
                "type=azblob,account_url=https://corpprod.blob.core.windows.net,name=release-artifacts"
            ),
            "az storage blob delete --blob-url \
             https://corpprod.blob.core.windows.net/buildkit-cache/manifests/release-artifacts"
        );
        assert_eq!(
            command(
                "type=azblob,account_url=https://corpprod.blob.core.windows.net/,container=ci,\
                 prefix=web/,manifests_prefix=m,name=main"
            ),
            "az storage blob delete --blob-url https://corpprod.blob.core.windows.net/ci/web/m/main"
        );
        assert_eq!(
            command("type=azblob,account_url=http://127.0.0.1:10000/devstoreaccount1"),
            "az storage blob delete --blob-url \
             http://127.0.0.1:10000/devstoreaccount1/buildkit-cache/manifests/buildkit"
        );
        for flag in [
            // The builder's environment names the account.
            "type=azblob,name=x",
            // Several names, a query, a name that leaves the container.
            "type=azblob,account_url=https://a.blob.core.windows.net,name=a;b",
            "type=azblob,account_url=https://a.blob.core.windows.net?sv=1,name=x",
            "type=azblob,account_url=https://a.blob.core.windows.net,name=../../x",
            "type=azblob,account_url=https://a.blob.core.windows.net,name=a b",
        ] {
            let command = command(flag);
            assert!(command.starts_with("# "), "{flag}: {command}");
            assert!(shlex::split(&command).unwrap().is_empty(), "{command}");
        }
        // A key recorded as `<account>/<name>`, with no container, names no blob.
        for old in [
            "https://corpprod.blob.core.windows.net/release-artifacts",
            "https://corpprod.blob.core.windows.net/release/artifacts",
            "/x",
        ] {
            let command = follow_up_command(Backend::Azblob, old);
            assert!(command.starts_with("# "), "{old}: {command}");
        }
    }
}
