//! Verification: is every tainted target of an incident gone, or left in place on purpose?
//!
//! Every target of the plan is checked where it lives, whatever became of its action: done,
//! failed, pending, out of scope or a follow-up. What the state of an action says is never
//! taken for what the registry or builder holds. A target that cannot be checked (its registry
//! or builder unreachable or unknown, a follow-up cachewarden cannot look at) counts as
//! present and is listed `unverified`; only an acceptance (who, when, why) lets an incident
//! pass with a target in place.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::Arc;

use serde::Serialize;

use crate::config::Config;
use crate::graph::{Entity, Kind, Trace};
use crate::plan::Target;
use crate::purge::Remotes;
use crate::purge::manifest::Leaving;
use crate::purge::runner::{self, Job};
use crate::purge::{ActionState, kind_of};
use crate::remote::buildkit::CacheRecord;
use crate::report::count;
use crate::report::escape::{Line, Term};
use crate::store::{Acceptance, ActionRow, Store, StoreError};
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
    /// The remotes, with the recorded facts of the manifests to check (an index's children
    /// are checked with it), and which of those children the purge leaves
    /// ([`Leaving::remotes`]).
    pub remotes: Arc<Remotes>,
    pub checks: Arc<VerifyInputs>,
}

/// What the kinds' checks need besides the journal and the remotes.
#[derive(Default)]
pub struct VerifyInputs {
    pub purges: PurgeTimes,
    /// The latest time a run the re-run trace holds tainted may have gone on writing, by
    /// builder ([`Trace::writes_until`]): a purge before it does not clean what that run may
    /// have written.
    pub tainted_runs: BTreeMap<String, Micros>,
    /// What the tags manifests were recorded under hold now, by target identity, where it
    /// keeps a target from being gone ([`tag_verdicts`]).
    ///
    /// [`tag_verdicts`]: crate::purge::manifest::tag_verdicts
    pub tags: HashMap<String, Verdict>,
}

/// The rows of one target, with the target that checking it takes.
struct Group {
    seqs: Vec<i64>,
    rows: Vec<ActionRow>,
    target: Target,
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

/// Checks every target of the journal `rows`; returns one verdict per target, in plan order.
/// Two actions on one target (a follow-up about a manifest another action deletes) are one
/// check.
pub async fn check(rows: &[ActionRow], inputs: &Inputs<'_>) -> Vec<Checked> {
    let mut groups: Vec<Group> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for row in rows {
        let target = checked_target(&row.action.target);
        let at = *index
            .entry(kind_of(target).identity(target))
            .or_insert_with(|| {
                groups.push(Group {
                    seqs: Vec::new(),
                    rows: Vec::new(),
                    target: target.clone(),
                });
                groups.len() - 1
            });
        groups[at].seqs.push(row.seq);
        groups[at].rows.push(row.clone());
    }
    let concurrency = inputs.config.purge.concurrency.max(1);
    let (remotes, shared) = (&inputs.remotes, &inputs.checks);
    let jobs = groups
        .into_iter()
        .map(|group| {
            // A manifest or local image never changes: an acceptance of any action on it
            // leaves that content in place. A mount or a builder does: an acceptance covers
            // the actions it names, not others planned on it later for what was written
            // after, which are checked, nor what a tainted run may have written there since.
            let acceptance = |seq: i64| {
                inputs
                    .acceptances
                    .iter()
                    .rev()
                    .find(|a| a.seq == seq && covers(a, &group.target, &shared.tainted_runs))
                    .cloned()
            };
            let open: Vec<ActionRow> = match group.target {
                Target::Mount { .. } | Target::Builder { .. } => group
                    .rows
                    .iter()
                    .filter(|row| acceptance(row.seq).is_none())
                    .cloned()
                    .collect(),
                _ => Vec::new(),
            };
            let (accepted, group) = match open.first() {
                Some(first) if open.len() < group.rows.len() => (
                    None,
                    Group {
                        target: checked_target(&first.action.target).clone(),
                        seqs: group.seqs,
                        rows: open,
                    },
                ),
                _ => (group.seqs.iter().find_map(|&seq| acceptance(seq)), group),
            };
            let kind = kind_of(&group.target);
            let (remotes, shared) = (remotes.clone(), shared.clone());
            Job {
                place: kind.place(&group.target),
                limit: kind.limit(concurrency),
                work: async move {
                    let verdict = match accepted {
                        Some(accepted) => Verdict::Accepted {
                            by: accepted.by,
                            at: time::format(accepted.at),
                            reason: accepted.reason,
                        },
                        None => {
                            kind.verify(&group.target, &group.rows, &remotes, &shared)
                                .await
                        }
                    };
                    Ok::<_, Infallible>(Checked {
                        seqs: group.seqs,
                        kind: group.rows[0].action.kind.as_str(),
                        target: crate::report::incident::describe_target(&group.target),
                        verdict,
                    })
                },
            }
        })
        .collect();
    match runner::run(jobs).await {
        Ok(checked) => checked,
        Err(never) => match never {},
    }
}

/// What a verification found: every target's verdict, and what the re-run trace added.
pub struct Verified {
    pub clean: bool,
    pub targets: Vec<Checked>,
    /// Targets the re-run trace found that the plan did not hold; they are planned now.
    pub added: usize,
}

impl Verified {
    pub fn lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = self.targets.iter().map(|c| c.line()).collect();
        lines.push(if self.added == 0 {
            "clean      the re-run trace finds nothing new".to_owned()
        } else {
            format!(
                "NOT CLEAN  the re-run trace found {} the plan did not hold; {} planned now",
                count(self.added, "target", "targets"),
                if self.added == 1 { "it is" } else { "they are" }
            )
        });
        lines
    }
}

/// Checks every target of incident `id`'s journal where it lives, whatever the state of its
/// action, and records the result. `trace` is the re-run trace, which planned `added` new
/// actions.
pub async fn verify_journal(
    store: &mut Store,
    id: i64,
    config: &Config,
    trace: &Trace,
    added: usize,
) -> Result<Verified, StoreError> {
    let rows = store.actions(id)?;
    let mut checks = verify_inputs(store, trace, &rows)?;
    let digests: Vec<&str> = rows
        .iter()
        .filter_map(|r| match &r.action.target {
            Target::FollowUp {
                subject: Some(subject),
                ..
            } => subject.manifest_digest(),
            target => target.manifest_digest(),
        })
        .collect();
    let targets: Vec<&Target> = rows.iter().map(|row| &row.action.target).collect();
    let leaving = Leaving::ask(store, id, config, &digests, &targets).await?;
    let acceptances = store.acceptances(id)?;
    let checked: Vec<&Target> = rows
        .iter()
        .filter(|row| !acceptances.iter().any(|a| a.seq == row.seq))
        .map(|row| checked_target(&row.action.target))
        .collect();
    let remotes = Arc::new(leaving.remotes(config));
    let tags =
        crate::purge::manifest::tag_verdicts(store, id, config, remotes.clone(), &checked).await?;
    // The content is tainted whatever digest it is asked by: `check` and `wrap` hold it.
    store.set_incident_digests(id, &tags.served)?;
    checks.tags = tags.verdicts;
    let inputs = Inputs {
        config,
        acceptances: &acceptances,
        remotes,
        checks: Arc::new(checks),
    };
    let targets = check(&rows, &inputs).await;
    let verified = Verified {
        clean: added == 0 && !targets.iter().any(|c| c.verdict.blocks()),
        targets,
        added,
    };
    let result = serde_json::to_string(&verified.lines()).expect("lines of text serialize");
    store.record_verification(id, &crate::actor::actor(), verified.clean, &result)?;
    Ok(verified)
}

/// What checking the mounts and builders of the journal `rows` needs: their latest recorded
/// purges, and the latest time a run the (re-run) `trace` holds tainted may have gone on
/// writing on each builder ([`Trace::writes_until`]).
pub fn verify_inputs(
    store: &Store,
    trace: &Trace,
    rows: &[ActionRow],
) -> Result<VerifyInputs, StoreError> {
    let mut tainted_runs: BTreeMap<String, Micros> = BTreeMap::new();
    for t in trace.tainted(Kind::Run) {
        if let (Entity::Run { info }, Some(builder)) = (t.entity, t.builder) {
            // A run still going when the builder was purged may have written after it.
            let until = trace.writes_until(info);
            let latest = tainted_runs.entry(builder.to_string()).or_insert(until);
            *latest = (*latest).max(until);
        }
    }
    Ok(VerifyInputs {
        purges: store.last_purges(&purge_places(rows))?,
        tainted_runs,
        tags: HashMap::new(),
    })
}

/// Whether an acceptance still covers what is on its target: a manifest never changes, but
/// a mount or a builder does, and a tainted run that may have written there after the
/// acceptance (`tainted_runs`, by builder) left what nobody accepted.
pub fn covers(
    acceptance: &Acceptance,
    target: &Target,
    tainted_runs: &BTreeMap<String, Micros>,
) -> bool {
    match checked_target(target) {
        Target::Mount { builder, .. } | Target::Builder { builder, .. } => tainted_runs
            .get(builder)
            .is_none_or(|&until| until < acceptance.at),
        _ => true,
    }
}

/// The latest purge that cleaned the mount (or the whole builder when `mount` is `None`).
pub fn last_purge(purges: &PurgeTimes, builder: &str, mount: Option<&str>) -> Option<Micros> {
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
/// None when a tainted run went on on the builder until after it: then anything there may be
/// theirs.
pub fn cutoff(
    rows: &[ActionRow],
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
        Some(until) if until >= cutoff => None,
        _ => Some(cutoff),
    }
}

/// Whether a record may hold what was there before the cutoff: created before it, or of
/// unknown age.
pub fn from_before(record: &CacheRecord, cutoff: Option<Micros>) -> bool {
    match (cutoff, record.created_at) {
        (Some(cutoff), Some(created)) => created <= cutoff,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Action, ActionKind};

    fn row(seq: i64, kind: ActionKind, target: Target) -> ActionRow {
        ActionRow {
            id: seq,
            seq,
            action: Action {
                kind,
                place: "reg.example".into(),
                target,
                reason: String::new(),
                in_scope: true,
            },
            state: ActionState::Pending,
            attempts: 0,
            outcome: None,
            error: None,
            started_at: None,
            finished_at: None,
            duration_us: None,
            evidence_gap: None,
        }
    }

    /// A follow-up about a manifest and the delete of that manifest are one target: one
    /// check, naming both actions, and an acceptance of either covers it.
    #[tokio::test]
    async fn actions_on_one_target_are_one_check() {
        let manifest = Target::Manifest {
            registry: "reg.example".into(),
            repository: "team/app".into(),
            digest: format!("sha256:{}", "a".repeat(64)),
            tags: Vec::new(),
            cache: true,
            image: false,
        };
        let rows = vec![
            row(1, ActionKind::DeleteManifest, manifest.clone()),
            row(
                2,
                ActionKind::FollowUp,
                Target::FollowUp {
                    what: "rebuild".into(),
                    command: String::new(),
                    subject: Some(Box::new(manifest)),
                },
            ),
        ];
        let acceptances = vec![Acceptance {
            seq: 2,
            at: 0,
            by: "alice".into(),
            reason: "kept for the forensics team".into(),
        }];
        let config = Config::default();
        let inputs = Inputs {
            config: &config,
            acceptances: &acceptances,
            remotes: Arc::new(Leaving::default().remotes(&config)),
            checks: Arc::default(),
        };
        let checked = check(&rows, &inputs).await;
        assert_eq!(checked.len(), 1, "{checked:?}");
        assert_eq!(checked[0].seqs, vec![1, 2]);
        assert!(
            matches!(&checked[0].verdict, Verdict::Accepted { by, .. } if by == "alice"),
            "{checked:?}"
        );
    }

    /// A mount changes: an acceptance of one action on it leaves what was written then, not
    /// what a later action was planned for. The later action is checked, the accepted one
    /// is not; once both are accepted, the mount is, until a tainted run may have written
    /// there after the acceptances.
    #[tokio::test]
    async fn an_acceptance_of_a_mount_covers_only_the_actions_it_names() {
        let dir = tempfile::tempdir().unwrap();
        let endpoint = format!("unix://{}", dir.path().join("gone.sock").display());
        let mount = |targets: &[&str]| Target::Mount {
            builder: "ci-1".into(),
            endpoint: Some(endpoint.clone()),
            driver: None,
            mount_id: "gomod".into(),
            targets: targets.iter().map(|t| (*t).to_owned()).collect(),
            shares_target_with: Vec::new(),
        };
        let rows = vec![
            row(1, ActionKind::PruneMount, mount(&["/go/pkg/mod"])),
            row(
                2,
                ActionKind::PruneMount,
                mount(&["/go/pkg/mod", "/root/go"]),
            ),
        ];
        let accepted = |seqs: &[i64]| -> Vec<Acceptance> {
            seqs.iter()
                .map(|&seq| Acceptance {
                    seq,
                    at: 0,
                    by: "alice".into(),
                    reason: "kept for the forensics team".into(),
                })
                .collect()
        };
        let config = Config::default();
        // A tainted run that may have written on the builder after the acceptances (at 0):
        // they no longer cover the mount.
        let written_after = BTreeMap::from([("ci-1".to_owned(), 10)]);
        for (seqs, tainted_runs, covered) in [
            (&[1][..], &BTreeMap::new(), false),
            (&[1, 2][..], &BTreeMap::new(), true),
            (&[1, 2][..], &written_after, false),
        ] {
            let acceptances = accepted(seqs);
            let inputs = Inputs {
                config: &config,
                acceptances: &acceptances,
                remotes: Arc::new(Leaving::default().remotes(&config)),
                checks: Arc::new(VerifyInputs {
                    tainted_runs: tainted_runs.clone(),
                    ..VerifyInputs::default()
                }),
            };
            let checked = check(&rows, &inputs).await;
            assert_eq!(checked.len(), 1, "{checked:?}");
            assert_eq!(checked[0].seqs, vec![1, 2]);
            assert_eq!(
                matches!(checked[0].verdict, Verdict::Accepted { .. }),
                covered,
                "accepted {seqs:?}: {checked:?}"
            );
            if !covered {
                assert!(
                    matches!(checked[0].verdict, Verdict::Unverified { .. }),
                    "the builder is out of reach: {checked:?}"
                );
            }
        }
    }
}
