//! Verification: is every tainted target of an incident gone, or left in place on purpose?
//!
//! Every target of the plan is checked where it lives, whatever became of its action: done,
//! failed, pending, out of scope or a follow-up. What the state of an action says is never
//! taken for what the registry or builder holds. A target that cannot be checked (its registry
//! or builder unreachable or unknown, a follow-up cachewarden cannot look at) counts as
//! present and is listed `unverified`; only an acceptance (who, when, why) lets an incident
//! pass with a target in place.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::config::Config;
use crate::error::RemoteError;
use crate::model::{Driver, ManifestFacts};
use crate::plan::Target;
use crate::purge::ActionState;
use crate::purge::execute::{select_builder_records, select_mount_records};
use crate::remote::buildkit::CacheRecord;
use crate::remote::endpoint::{connect_builder, require_endpoint};
use crate::remote::engine::Engine;
use crate::remote::registry::RegistryClient;
use crate::report::escape::{Line, Term};
use crate::store::{Acceptance, ActionRow};
use crate::time::{self, Micros};

/// What verification found for one target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum Verdict {
    /// Not there any more (or only as content written after its purge).
    Gone,
    /// Still there.
    Present { detail: String },
    /// Could not be checked: counts as present.
    Unverified { detail: String },
    /// Left in place on purpose.
    Accepted {
        by: String,
        at: String,
        reason: String,
    },
}

impl Verdict {
    /// Whether the target keeps the incident from verifying clean.
    pub fn blocks(&self) -> bool {
        matches!(self, Self::Present { .. } | Self::Unverified { .. })
    }

    fn label(&self) -> &'static str {
        match self {
            Self::Gone => "gone",
            Self::Present { .. } => "PRESENT",
            Self::Unverified { .. } => "UNVERIFIED",
            Self::Accepted { .. } => "accepted",
        }
    }
}

/// One checked target: the journal's actions that name it, and the verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Checked {
    /// The actions (their `seq`) whose target this is.
    pub seqs: Vec<i64>,
    pub kind: &'static str,
    pub target: String,
    #[serde(flatten)]
    pub verdict: Verdict,
}

impl Checked {
    /// One line for people: the verdict, the target, and what was found.
    pub fn line(&self) -> String {
        let seqs: Vec<String> = self.seqs.iter().map(|s| format!("#{s}")).collect();
        // Details quote store values and error texts: shown on one line, controls escaped.
        let detail = match &self.verdict {
            Verdict::Gone => String::new(),
            Verdict::Present { detail } | Verdict::Unverified { detail } => {
                format!(": {}", Line(detail))
            }
            Verdict::Accepted { by, at, reason } => {
                format!(": accepted by {} at {at}: {}", Term(by), Term(reason))
            }
        };
        format!(
            "{:<10} {} {}{detail}",
            self.verdict.label(),
            seqs.join(","),
            self.target
        )
    }
}

/// The latest recorded purge by (builder, mount id); `None` as the mount id is a purge of the
/// builder's whole cache (which purges its mounts too).
pub type PurgeTimes = BTreeMap<(String, Option<String>), Micros>;

/// The places whose purge times [`check`] needs: each mount and builder of the journal.
pub fn purge_places(rows: &[ActionRow]) -> Vec<(String, Option<String>)> {
    let mut places = Vec::new();
    for row in rows {
        match checked_target(&row.action.target) {
            Target::Mount {
                builder, mount_id, ..
            } => places.push((builder.clone(), Some(mount_id.clone()))),
            Target::Builder { builder, .. } => places.push((builder.clone(), None)),
            _ => {}
        }
    }
    places.sort();
    places.dedup();
    places
}

/// What verification needs besides the journal.
pub struct Inputs<'a> {
    pub config: &'a Config,
    pub acceptances: &'a [Acceptance],
    /// Recorded facts of the manifests to check: an index's children are checked with it.
    pub facts: &'a HashMap<String, ManifestFacts>,
    pub purges: &'a PurgeTimes,
    /// The latest start of a run the re-run trace holds tainted, by builder: a purge before it
    /// does not clean what that run may have written.
    pub tainted_runs: &'a BTreeMap<String, Micros>,
}

/// Where a target lives: two actions on one place are one check.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Place {
    Manifest(String, String, String),
    Mount(String, String),
    Builder(String),
    LocalImage(String, String),
    Unchecked(String),
}

/// The rows of one place, with the target that checking it takes.
struct Group<'a> {
    seqs: Vec<i64>,
    rows: Vec<&'a ActionRow>,
    target: &'a Target,
}

/// The target a row's check looks at: a follow-up's subject, or the target itself.
fn checked_target(target: &Target) -> &Target {
    match target {
        Target::FollowUp {
            subject: Some(subject),
            ..
        } => subject,
        other => other,
    }
}

fn place_of(target: &Target) -> Place {
    match checked_target(target) {
        Target::Manifest {
            registry,
            repository,
            digest,
            ..
        } => Place::Manifest(registry.clone(), repository.clone(), digest.clone()),
        Target::Mount {
            builder, mount_id, ..
        } => Place::Mount(builder.clone(), mount_id.clone()),
        Target::Builder { builder, .. } => Place::Builder(builder.clone()),
        Target::LocalImage {
            builder, reference, ..
        } => Place::LocalImage(builder.clone(), reference.clone()),
        Target::FollowUp { what, .. } => Place::Unchecked(what.clone()),
    }
}

/// A registry client and the limit on its concurrent requests.
type Checker = (Arc<RegistryClient>, Arc<Semaphore>);

/// Checks every target of the journal `rows`; returns one verdict per place, in plan order.
pub async fn check(rows: &[ActionRow], inputs: &Inputs<'_>) -> Vec<Checked> {
    let mut groups: BTreeMap<Place, Group<'_>> = BTreeMap::new();
    let mut order: Vec<Place> = Vec::new();
    for row in rows {
        let place = place_of(&row.action.target);
        let group = groups.entry(place.clone()).or_insert_with(|| {
            order.push(place);
            Group {
                seqs: Vec::new(),
                rows: Vec::new(),
                target: checked_target(&row.action.target),
            }
        });
        group.seqs.push(row.seq);
        group.rows.push(row);
    }
    let concurrency = inputs.config.purge.concurrency.max(1);
    let mut verdicts: BTreeMap<Place, (Verdict, &'static str, String)> = BTreeMap::new();
    let mut manifests = JoinSet::new();
    let mut registries: HashMap<String, Result<Checker, String>> = HashMap::new();
    let mut listings: HashMap<String, Result<Vec<CacheRecord>, String>> = HashMap::new();
    for place in &order {
        let group = &groups[place];
        let kind = group.rows[0].action.kind.as_str();
        let name = crate::report::incident::describe_target(group.target);
        if let Some(accepted) = group
            .seqs
            .iter()
            .find_map(|seq| inputs.acceptances.iter().rev().find(|a| a.seq == *seq))
        {
            let verdict = Verdict::Accepted {
                by: accepted.by.clone(),
                at: time::format(accepted.at),
                reason: accepted.reason.clone(),
            };
            verdicts.insert(place.clone(), (verdict, kind, name));
            continue;
        }
        let verdict = match (place, group.target) {
            (Place::Manifest(registry, repository, digest), _) => {
                let entry = registries.entry(registry.clone()).or_insert_with(|| {
                    RegistryClient::new(inputs.config, registry)
                        .map(|c| (Arc::new(c), Arc::new(Semaphore::new(concurrency))))
                        .map_err(|e| e.to_string())
                });
                match entry {
                    Err(err) => Verdict::Unverified {
                        detail: format!("registry `{registry}` cannot be asked: {err}"),
                    },
                    Ok((client, semaphore)) => {
                        let (client, semaphore) = (client.clone(), semaphore.clone());
                        let children: Vec<String> = inputs
                            .facts
                            .get(digest)
                            .map(|f| f.children.iter().map(|c| c.as_str().to_owned()).collect())
                            .unwrap_or_default();
                        let done = group.rows.iter().any(|r| r.state == ActionState::Done);
                        let (key, registry, repository, digest) = (
                            place.clone(),
                            registry.clone(),
                            repository.clone(),
                            digest.clone(),
                        );
                        manifests.spawn(async move {
                            let _permit = semaphore.acquire_owned().await.expect("semaphore open");
                            let verdict = check_manifest(
                                &client,
                                &registry,
                                &repository,
                                &digest,
                                &children,
                                done,
                            )
                            .await;
                            (key, verdict)
                        });
                        verdicts.insert(place.clone(), (Verdict::Gone, kind, name));
                        continue;
                    }
                }
            }
            (Place::Mount(builder, mount_id), target) => {
                let cutoff = cutoff(
                    &group.rows,
                    last_purge(inputs.purges, builder, Some(mount_id)),
                    inputs.tainted_runs.get(builder).copied(),
                );
                match listing(&mut listings, inputs.config, target).await {
                    Err(detail) => Verdict::Unverified { detail },
                    Ok(records) => mount_verdict(records, &group.rows, builder, mount_id, cutoff),
                }
            }
            (Place::Builder(builder), target) => {
                let cutoff = cutoff(
                    &group.rows,
                    last_purge(inputs.purges, builder, None),
                    inputs.tainted_runs.get(builder).copied(),
                );
                match listing(&mut listings, inputs.config, target).await {
                    Err(detail) => Verdict::Unverified { detail },
                    Ok(records) => builder_verdict(records, &group.rows, builder, cutoff),
                }
            }
            (Place::LocalImage(builder, reference), Target::LocalImage { endpoint, .. }) => {
                local_image_verdict(inputs.config, builder, endpoint.as_deref(), reference).await
            }
            (_, target) => Verdict::Unverified {
                detail: match target {
                    Target::FollowUp { command, .. } if !command.is_empty() => {
                        format!("cachewarden cannot check this; see `{command}`, then accept it")
                    }
                    _ => "cachewarden cannot check this; see to it, then accept it".to_owned(),
                },
            },
        };
        verdicts.insert(place.clone(), (verdict, kind, name));
    }
    while let Some(joined) = manifests.join_next().await {
        let (place, verdict) = joined.expect("manifest check panicked");
        if let Some(entry) = verdicts.get_mut(&place) {
            entry.0 = verdict;
        }
    }
    order
        .into_iter()
        .map(|place| {
            let seqs = groups[&place].seqs.clone();
            let (verdict, kind, target) = verdicts.remove(&place).expect("every place checked");
            Checked {
                seqs,
                kind,
                target,
                verdict,
            }
        })
        .collect()
}

/// The latest purge that cleaned the mount (or the whole builder when `mount` is `None`).
fn last_purge(purges: &PurgeTimes, builder: &str, mount: Option<&str>) -> Option<Micros> {
    let whole = purges.get(&(builder.to_owned(), None)).copied();
    let own = mount.and_then(|m| {
        purges
            .get(&(builder.to_owned(), Some(m.to_owned())))
            .copied()
    });
    whole.max(own)
}

/// Content created after this time was written after the target's purge, so it is not what
/// the purge was to remove: the latest recorded purge, or the latest finish of a done action.
/// None when a tainted run started on the builder after it: then anything there may be theirs.
fn cutoff(
    rows: &[&ActionRow],
    purged: Option<Micros>,
    tainted_run: Option<Micros>,
) -> Option<Micros> {
    let cutoff = rows
        .iter()
        .filter(|r| r.state == ActionState::Done)
        .filter_map(|r| r.finished_at)
        .chain(purged)
        .max()?;
    match tainted_run {
        Some(started) if started >= cutoff => None,
        _ => Some(cutoff),
    }
}

/// Whether a record may hold what was there before the cutoff: created before it, or of
/// unknown age.
fn from_before(record: &CacheRecord, cutoff: Option<Micros>) -> bool {
    match (cutoff, record.created_at) {
        (Some(cutoff), Some(created)) => created <= cutoff,
        _ => true,
    }
}

async fn check_manifest(
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

/// The builder's records, listed once per builder for the whole verification.
async fn listing<'a>(
    listings: &'a mut HashMap<String, Result<Vec<CacheRecord>, String>>,
    config: &Config,
    target: &Target,
) -> Result<&'a [CacheRecord], String> {
    let (builder, endpoint, driver) = match target {
        Target::Mount {
            builder,
            endpoint,
            driver,
            ..
        }
        | Target::Builder {
            builder,
            endpoint,
            driver,
            ..
        } => (builder, endpoint.as_deref(), *driver),
        _ => unreachable!("only builder-side targets are listed"),
    };
    if !listings.contains_key(builder) {
        let listed = async {
            let mut client = connect_builder(config, builder, endpoint, driver).await?;
            client.disk_usage().await
        }
        .await
        .map_err(|err: RemoteError| format!("cannot list the records of `{builder}`: {err}"));
        listings.insert(builder.clone(), listed);
    }
    listings[builder].as_deref().map_err(Clone::clone)
}

fn mount_verdict(
    records: &[CacheRecord],
    rows: &[&ActionRow],
    builder: &str,
    mount_id: &str,
    cutoff: Option<Micros>,
) -> Verdict {
    let mut left: Vec<&str> = Vec::new();
    let mut shared: Vec<&str> = Vec::new();
    for row in rows {
        let Target::Mount {
            targets,
            shares_target_with,
            ..
        } = &row.action.target
        else {
            continue;
        };
        let (ids, note) = select_mount_records(records, mount_id, targets, shares_target_with);
        let ambiguous: Vec<String> = if note.is_some() {
            select_mount_records(records, mount_id, targets, &[]).0
        } else {
            Vec::new()
        };
        for record in records.iter().filter(|r| from_before(r, cutoff)) {
            if ids.contains(&record.id) && !left.contains(&record.id.as_str()) {
                left.push(&record.id);
            } else if ambiguous.contains(&record.id)
                && !ids.contains(&record.id)
                && !shared.contains(&record.id.as_str())
            {
                shared.push(&record.id);
            }
        }
    }
    match (left.is_empty(), shared.is_empty()) {
        (true, true) => Verdict::Gone,
        (false, _) => Verdict::Present {
            detail: format!(
                "mount `{mount_id}` on `{builder}` still holds records {} from before its purge",
                left.join(", ")
            ),
        },
        (true, false) => Verdict::Present {
            detail: format!(
                "records {} on `{builder}` are at a target path mount `{mount_id}` shares with other mount ids: prune them by id after checking, or accept them",
                shared.join(", ")
            ),
        },
    }
}

fn builder_verdict(
    records: &[CacheRecord],
    rows: &[&ActionRow],
    builder: &str,
    cutoff: Option<Micros>,
) -> Verdict {
    let mut left: Vec<&str> = Vec::new();
    for row in rows {
        let Target::Builder {
            record_ids,
            used_since,
            full,
            ..
        } = &row.action.target
        else {
            continue;
        };
        let ids = select_builder_records(records, record_ids, *used_since, *full);
        for record in records.iter().filter(|r| from_before(r, cutoff)) {
            if ids.contains(&record.id) && !left.contains(&record.id.as_str()) {
                left.push(&record.id);
            }
        }
    }
    if left.is_empty() {
        return Verdict::Gone;
    }
    let shown: Vec<&str> = left.iter().take(10).copied().collect();
    Verdict::Present {
        detail: format!(
            "{} tainted records still on `{builder}`: {}{}",
            left.len(),
            shown.join(", "),
            if left.len() > shown.len() {
                ", ..."
            } else {
                ""
            }
        ),
    }
}

async fn local_image_verdict(
    config: &Config,
    builder: &str,
    endpoint: Option<&str>,
    reference: &str,
) -> Verdict {
    let found = async {
        let (endpoint, _) = require_endpoint(config, builder, endpoint, Some(Driver::Docker))?;
        let engine = Engine::connect(&endpoint).await?;
        engine.image_inspect(reference).await
    }
    .await;
    match found {
        Ok(None) => Verdict::Gone,
        Ok(Some(_)) => Verdict::Present {
            detail: format!("local image `{reference}` is still on `{builder}`"),
        },
        Err(err) => Verdict::Unverified {
            detail: format!("cannot ask `{builder}`: {err}"),
        },
    }
}
