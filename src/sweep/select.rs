//! Which entities a policy purges, and the plan that purges them. Pure: the caller loads the
//! candidates from the store.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use crate::config::{Scope, glob_match};
use crate::plan::{Action, ActionKind, PlanContext, Target};
use crate::time::{self, Micros};

use super::policy::{Policy, Rule, RuleAction, Selects};

/// A pipeline that wrote or used an entity, with the trust level of its runs that did (one
/// entry per level).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct PipelineFacts {
    pub name: String,
    pub project: Option<String>,
    /// The recorded level of the pipeline's runs that wrote or used the entity.
    pub trust_level: Option<String>,
}

/// A registry manifest that recorded runs exported as a cache.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheRefCandidate {
    pub registry: String,
    pub repository: String,
    pub digest: String,
    /// Tags the store saw pointing at it.
    pub tags: Vec<String>,
    /// The pipelines that exported it.
    pub pipelines: Vec<PipelineFacts>,
    /// The latest recorded export.
    pub last_write: Micros,
    /// The latest recorded export or import.
    pub last_use: Micros,
}

/// A cache mount on a builder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountCandidate {
    pub builder: String,
    pub mount_id: String,
    /// The pipelines whose runs read or wrote it.
    pub pipelines: Vec<PipelineFacts>,
    pub last_use: Micros,
}

/// A build-cache record the hook saw on a builder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordCandidate {
    pub builder: String,
    pub record_id: String,
    /// The recorded size; an unknown size counts as 0 bytes against a budget.
    pub size: Option<i64>,
    /// The pipelines whose runs created or reused it.
    pub pipelines: Vec<PipelineFacts>,
    pub last_use: Micros,
}

/// Everything a sweep may decide about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Candidates {
    pub cache_refs: Vec<CacheRefCandidate>,
    pub mounts: Vec<MountCandidate>,
    pub records: Vec<RecordCandidate>,
}

/// An entity, by its index in [`Candidates`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Entity {
    CacheRef(usize),
    Mount(usize),
    Record(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Purge,
    Keep,
}

/// What the deciding rule said about one entity, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub entity: Entity,
    /// Index of the deciding rule in the policy.
    pub rule: usize,
    pub rule_name: String,
    pub verdict: Verdict,
    pub why: String,
}

/// Every decided entity, in candidate order per kind; entities no rule matched are kept and
/// not listed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    pub decisions: Vec<Decision>,
}

impl Selection {
    pub fn purged(&self) -> impl Iterator<Item = &Decision> {
        self.decisions
            .iter()
            .filter(|d| d.verdict == Verdict::Purge)
    }
}

/// The facts selectors look at, whatever the kind.
struct Facts<'a> {
    pipelines: &'a [PipelineFacts],
    /// `registry/repository` for cache refs, the builder for mounts and records.
    place: String,
    last_use: Micros,
}

/// Runs the policy over the candidates. `rank` gives a trust level's rank in the config's
/// order (0 is lowest).
pub fn select(
    policy: &Policy,
    candidates: &Candidates,
    now: Micros,
    rank: &dyn Fn(&str) -> Option<usize>,
) -> Selection {
    let mut decisions = Vec::new();
    let cache_facts: Vec<Facts<'_>> = candidates
        .cache_refs
        .iter()
        .map(|c| Facts {
            pipelines: &c.pipelines,
            place: format!("{}/{}", c.registry, c.repository),
            last_use: c.last_use,
        })
        .collect();
    let mount_facts: Vec<Facts<'_>> = candidates
        .mounts
        .iter()
        .map(|m| Facts {
            pipelines: &m.pipelines,
            place: m.builder.clone(),
            last_use: m.last_use,
        })
        .collect();
    let record_facts: Vec<Facts<'_>> = candidates
        .records
        .iter()
        .map(|r| Facts {
            pipelines: &r.pipelines,
            place: r.builder.clone(),
            last_use: r.last_use,
        })
        .collect();
    for (kind, facts, make) in [
        (
            Selects::CacheRefs,
            &cache_facts,
            Entity::CacheRef as fn(usize) -> Entity,
        ),
        (Selects::Mounts, &mount_facts, Entity::Mount),
        (Selects::BuilderRecords, &record_facts, Entity::Record),
    ] {
        let mut undecided: Vec<usize> = (0..facts.len()).collect();
        for (rule_index, rule) in policy
            .rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.selects == kind)
        {
            let matching: Vec<usize> = undecided
                .iter()
                .copied()
                .filter(|i| matches(rule, &facts[*i], rank))
                .collect();
            let spared = spared(rule, &matching, candidates, kind);
            let mut decided: HashSet<usize> = HashSet::new();
            for i in matching {
                let (verdict, why) = if let Some(why) = spared.get(&i) {
                    (Verdict::Keep, why.clone())
                } else if let Some(why) = old_enough(rule, facts[i].last_use, now) {
                    let verdict = match rule.action {
                        RuleAction::Purge => Verdict::Purge,
                        RuleAction::Keep => Verdict::Keep,
                    };
                    (verdict, why)
                } else {
                    continue;
                };
                decided.insert(i);
                decisions.push(Decision {
                    entity: make(i),
                    rule: rule_index,
                    rule_name: rule.name.clone(),
                    verdict,
                    why: format!("sweep rule `{}`: {why}", rule.name),
                });
            }
            undecided.retain(|i| !decided.contains(i));
        }
    }
    Selection { decisions }
}

/// Whether the rule's selectors other than age match.
///
/// A mount or a builder record is as trusted as the least trusted pipeline that wrote it: its
/// contents are what they all wrote. A registry cache's bytes never change, and a pipeline
/// that records an export of a digest another pipeline pushed did not make it: a purge rule
/// takes a cache ref only when its pipeline, project and trust selectors match every pipeline
/// that exported it.
fn matches(rule: &Rule, facts: &Facts<'_>, rank: &dyn Fn(&str) -> Option<usize>) -> bool {
    let every = rule.selects == Selects::CacheRefs && rule.action == RuleAction::Purge;
    let holds = |test: &dyn Fn(&PipelineFacts) -> bool| {
        if every {
            !facts.pipelines.is_empty() && facts.pipelines.iter().all(test)
        } else {
            facts.pipelines.iter().any(test)
        }
    };
    if let Some(pattern) = &rule.pipeline
        && !holds(&|p| glob_match(pattern, &p.name))
    {
        return false;
    }
    if let Some(pattern) = &rule.project
        && !holds(&|p| {
            p.project
                .as_deref()
                .is_some_and(|project| glob_match(pattern, project))
        })
    {
        return false;
    }
    if let Some(trust) = rule.trust {
        let matched = if every {
            // A pipeline with no level, or one the config does not name, ranks lowest.
            holds(&|p| trust.matches(Some(p.trust_level.as_deref().and_then(rank).unwrap_or(0))))
        } else {
            let lowest = facts
                .pipelines
                .iter()
                .filter_map(|p| p.trust_level.as_deref().and_then(rank))
                .min();
            trust.matches(lowest)
        };
        if !matched {
            return false;
        }
    }
    // A registry host matches however it is spelt; builder names are as recorded.
    if let Some(pattern) = &rule.repository
        && !glob_match(
            &pattern.to_ascii_lowercase(),
            &facts.place.to_ascii_lowercase(),
        )
    {
        return false;
    }
    if let Some(pattern) = &rule.builder
        && !glob_match(pattern, &facts.place)
    {
        return false;
    }
    true
}

/// `Some(reason)` when the entity is old enough for the rule (or the rule has no age).
fn old_enough(rule: &Rule, last_use: Micros, now: Micros) -> Option<String> {
    let last = format!("last written or used {}", time::format(last_use));
    match (rule.older_than, &rule.older_than_text) {
        (Some(age), text) if now.saturating_sub(last_use) >= age => Some(format!(
            "{last}, older than {}",
            text.as_deref().unwrap_or("the limit")
        )),
        (Some(_), _) => None,
        (None, _) => Some(last),
    }
}

/// The matching entities a purge rule spares by `keep_newest` or `max_bytes`, with why.
fn spared(
    rule: &Rule,
    matching: &[usize],
    candidates: &Candidates,
    kind: Selects,
) -> BTreeMap<usize, String> {
    let mut out = BTreeMap::new();
    if let (Some(n), Selects::CacheRefs) = (rule.keep_newest, kind) {
        let mut groups: BTreeMap<(&str, &str), Vec<usize>> = BTreeMap::new();
        for &i in matching {
            let c = &candidates.cache_refs[i];
            groups
                .entry((&c.registry, &c.repository))
                .or_default()
                .push(i);
        }
        for ((registry, repository), mut members) in groups {
            let refs = &candidates.cache_refs;
            members.sort_by(|a, b| {
                (refs[*b].last_write, &refs[*b].digest)
                    .cmp(&(refs[*a].last_write, &refs[*a].digest))
            });
            for (position, i) in members.into_iter().take(n).enumerate() {
                out.insert(
                    i,
                    format!(
                        "the {} newest in `{registry}/{repository}` (keep_newest = {n})",
                        ordinal(position + 1)
                    ),
                );
            }
        }
    }
    if let (Some(budget), Selects::BuilderRecords) = (rule.max_bytes, kind) {
        let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for &i in matching {
            groups
                .entry(&candidates.records[i].builder)
                .or_default()
                .push(i);
        }
        for (builder, mut members) in groups {
            let records = &candidates.records;
            members.sort_by(|a, b| {
                (records[*b].last_use, &records[*b].record_id)
                    .cmp(&(records[*a].last_use, &records[*a].record_id))
            });
            let mut used: u64 = 0;
            for i in members {
                let size = records[i].size.unwrap_or(0).max(0) as u64;
                if used.saturating_add(size) > budget {
                    // Everything older goes too: the budget is filled newest first.
                    break;
                }
                used += size;
                out.insert(
                    i,
                    format!("within the {budget}-byte budget of builder `{builder}` (max_bytes)"),
                );
            }
        }
    }
    out
}

fn ordinal(n: usize) -> String {
    match n {
        1 => "1st".to_owned(),
        2 => "2nd".to_owned(),
        3 => "3rd".to_owned(),
        n => format!("{n}th"),
    }
}

/// The purge plan of a selection: one delete per cache ref, one prune per mount, one prune of
/// exactly the chosen records per builder. Stable order, as [`crate::plan::plan`] gives.
pub fn plan(
    selection: &Selection,
    candidates: &Candidates,
    ctx: &PlanContext,
    scope: &Scope,
) -> Vec<Action> {
    let mut actions = Vec::new();
    let mut records: BTreeMap<&str, (BTreeSet<&str>, i64, BTreeSet<&str>)> = BTreeMap::new();
    for decision in selection.purged() {
        match decision.entity {
            Entity::CacheRef(i) => {
                let c = &candidates.cache_refs[i];
                actions.push(Action {
                    kind: ActionKind::DeleteManifest,
                    place: c.registry.clone(),
                    in_scope: scope.allows_repository(&c.registry, &c.repository),
                    target: Target::Manifest {
                        registry: c.registry.clone(),
                        repository: c.repository.clone(),
                        digest: c.digest.clone(),
                        tags: c.tags.clone(),
                        cache: true,
                        image: false,
                    },
                    reason: decision.why.clone(),
                });
            }
            Entity::Mount(i) => {
                let m = &candidates.mounts[i];
                actions.push(Action {
                    kind: ActionKind::PruneMount,
                    place: m.builder.clone(),
                    in_scope: scope.allows_builder(&m.builder),
                    target: ctx.prune_mount(&m.builder, &m.mount_id),
                    reason: decision.why.clone(),
                });
            }
            Entity::Record(i) => {
                let r = &candidates.records[i];
                let entry = records.entry(&r.builder).or_default();
                entry.0.insert(&r.record_id);
                entry.1 += r.size.unwrap_or(0).max(0);
                entry.2.insert(&decision.rule_name);
            }
        }
    }
    for (builder, (ids, bytes, rules)) in records {
        let place = ctx.builders.get(builder).cloned().unwrap_or_default();
        actions.push(Action {
            kind: ActionKind::PruneBuilder,
            place: builder.to_owned(),
            in_scope: scope.allows_builder(builder),
            target: Target::Builder {
                builder: builder.to_owned(),
                endpoint: place.endpoint,
                driver: place.driver,
                record_ids: ids.iter().map(|s| (*s).to_owned()).collect(),
                used_since: None,
                made_since: None,
                made_by_others: Vec::new(),
                full: false,
                partial: true,
                clock_skew: None,
            },
            reason: format!(
                "sweep rule `{}`: {}, {bytes} recorded bytes",
                rules.into_iter().collect::<Vec<_>>().join("`, `"),
                crate::report::count(ids.len(), "record", "records")
            ),
        });
    }
    crate::plan::settle(&mut actions);
    actions
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    const DAY: Micros = 86_400 * 1_000_000;
    const NOW: Micros = 100 * DAY;

    fn pipeline(name: &str, trust: &str) -> PipelineFacts {
        PipelineFacts {
            name: name.to_owned(),
            project: Some("web".to_owned()),
            trust_level: Some(trust.to_owned()),
        }
    }

    fn cache(
        repository: &str,
        digest: char,
        by: PipelineFacts,
        age_days: i64,
    ) -> CacheRefCandidate {
        CacheRefCandidate {
            registry: "r.io".to_owned(),
            repository: repository.to_owned(),
            digest: format!("sha256:{}", digest.to_string().repeat(64)),
            tags: vec![],
            pipelines: vec![by],
            last_write: NOW - age_days * DAY,
            last_use: NOW - age_days * DAY,
        }
    }

    fn run(policy: &str, candidates: &Candidates) -> Selection {
        let config = Config::default();
        let policy = Policy::parse(policy, Path::new("p.toml"), &config).unwrap();
        select(&policy, candidates, NOW, &|level| config.trust_rank(level))
    }

    fn purged(selection: &Selection) -> Vec<Entity> {
        selection.purged().map(|d| d.entity).collect()
    }

    /// The first matching rule decides; later rules never see what it decided.
    #[test]
    fn first_matching_rule_decides() {
        let candidates = Candidates {
            cache_refs: vec![
                cache("team/app", 'a', pipeline("pr-1", "untrusted"), 30),
                cache("team/app", 'b', pipeline("main", "release"), 30),
                cache("team/app", 'c', pipeline("pr-2", "untrusted"), 1),
                cache("other/app", 'd', pipeline("pr-3", "untrusted"), 30),
            ],
            ..Candidates::default()
        };
        let selection = run(
            r#"
[[rule]]
select = "cache-refs"
trust_level = ">=release"
action = "keep"

[[rule]]
select = "cache-refs"
repository = "r.io/team/*"
older_than = "14d"
action = "purge"
"#,
            &candidates,
        );
        assert_eq!(purged(&selection), vec![Entity::CacheRef(0)]);
        let kept: Vec<_> = selection
            .decisions
            .iter()
            .filter(|d| d.verdict == Verdict::Keep)
            .map(|d| (d.entity, d.rule))
            .collect();
        assert_eq!(kept, vec![(Entity::CacheRef(1), 0)]);
        assert!(
            selection.decisions[0]
                .why
                .starts_with("sweep rule `rule 1`")
        );
    }

    /// `keep_newest` ranks young and old caches per repository.
    #[test]
    fn keep_newest_counts_young_and_old_per_repository() {
        let by = pipeline("pr", "untrusted");
        let candidates = Candidates {
            cache_refs: vec![
                cache("a", '1', by.clone(), 1),
                cache("a", '2', by.clone(), 20),
                cache("a", '3', by.clone(), 30),
                cache("a", '4', by.clone(), 40),
                cache("b", '5', by.clone(), 50),
            ],
            ..Candidates::default()
        };
        let selection = run(
            "[[rule]]\nselect = \"cache-refs\"\nolder_than = \"14d\"\nkeep_newest = 2\naction = \"purge\"\n",
            &candidates,
        );
        // In `a`, 1 (young) and 2 are the newest two; 3 and 4 go. `b` keeps its only one.
        assert_eq!(
            purged(&selection),
            vec![Entity::CacheRef(2), Entity::CacheRef(3)]
        );
    }

    /// A byte budget purges the oldest records first, as one partial prune per builder.
    #[test]
    fn byte_budget_purges_oldest_first_per_builder() {
        let record = |builder: &str, id: &str, size: i64, age_days: i64| RecordCandidate {
            builder: builder.to_owned(),
            record_id: id.to_owned(),
            size: Some(size),
            pipelines: vec![pipeline("p", "internal")],
            last_use: NOW - age_days * DAY,
        };
        let candidates = Candidates {
            records: vec![
                record("b1", "new", 40, 1),
                record("b1", "mid", 40, 2),
                record("b1", "old", 40, 3),
                record("b1", "older", 5, 4),
                record("b2", "alone", 500, 9),
            ],
            ..Candidates::default()
        };
        let selection = run(
            "[[rule]]\nselect = \"builder-records\"\nbuilder = \"b1\"\nmax_bytes = 100\naction = \"purge\"\n",
            &candidates,
        );
        assert_eq!(
            purged(&selection),
            vec![Entity::Record(2), Entity::Record(3)]
        );
        let actions = plan(
            &selection,
            &candidates,
            &PlanContext::default(),
            &Scope::default(),
        );
        assert_eq!(actions.len(), 1);
        let Target::Builder {
            record_ids,
            partial,
            full,
            used_since,
            ..
        } = &actions[0].target
        else {
            panic!("{actions:?}")
        };
        assert_eq!(record_ids, &["old".to_owned(), "older".to_owned()]);
        assert!(*partial && !*full && used_since.is_none());
        assert!(!actions[0].in_scope, "an empty scope allows nothing");
    }

    /// Every selector must match, and the scope decides whether an action runs.
    #[test]
    fn selectors_pipeline_project_trust_and_builder() {
        let mount = |builder: &str, id: &str, by: PipelineFacts| MountCandidate {
            builder: builder.to_owned(),
            mount_id: id.to_owned(),
            pipelines: vec![by],
            last_use: NOW - 20 * DAY,
        };
        let mut unknown = pipeline("pr-x", "untrusted");
        unknown.trust_level = None;
        let candidates = Candidates {
            mounts: vec![
                mount("ci-1", "pip", pipeline("pr-1", "untrusted")),
                mount("ci-1", "npm", pipeline("pr-2", "internal")),
                mount("ci-1", "go", pipeline("main", "untrusted")),
                mount("other", "pip", pipeline("pr-3", "untrusted")),
                mount("ci-2", "apt", unknown),
            ],
            ..Candidates::default()
        };
        let selection = run(
            "[[rule]]\nselect = \"mounts\"\npipeline = \"pr-*\"\nproject = \"w*\"\ntrust_level = \"untrusted\"\nbuilder = \"ci-*\"\nolder_than = \"7d\"\naction = \"purge\"\n",
            &candidates,
        );
        assert_eq!(purged(&selection), vec![Entity::Mount(0)]);
        let scope = Scope {
            builders: vec!["ci-1".to_owned()],
            ..Scope::default()
        };
        let actions = plan(&selection, &candidates, &PlanContext::default(), &scope);
        assert_eq!(actions[0].kind, ActionKind::PruneMount);
        assert!(actions[0].in_scope);
    }

    /// An entity is as trusted as the least trusted pipeline that wrote it for a keep rule
    /// and for a mount; a purge rule takes a registry cache only when every exporter matches.
    #[test]
    fn lowest_trust_among_writers_decides() {
        let mut c = cache("a", '1', pipeline("main", "release"), 30);
        c.pipelines.push(pipeline("pr", "untrusted"));
        let candidates = Candidates {
            cache_refs: vec![c],
            ..Candidates::default()
        };
        let keep = run(
            "[[rule]]\nselect = \"cache-refs\"\ntrust_level = \">=release\"\naction = \"keep\"\n",
            &candidates,
        );
        assert!(
            keep.decisions.is_empty(),
            "a cache an untrusted pipeline also wrote is not release-trusted"
        );
        let purge = run(
            "[[rule]]\nselect = \"cache-refs\"\ntrust_level = \"<=untrusted\"\naction = \"purge\"\n",
            &candidates,
        );
        assert!(
            purged(&purge).is_empty(),
            "a release cache an untrusted pipeline also claims to have exported is not its to purge"
        );
        let purge = run(
            "[[rule]]\nselect = \"cache-refs\"\npipeline = \"pr*\"\naction = \"purge\"\n",
            &candidates,
        );
        assert!(purged(&purge).is_empty());
        // A pipeline with no trust level ranks lowest.
        let mut c = cache("a", '2', pipeline("pr", "untrusted"), 30);
        let mut unknown = pipeline("new", "untrusted");
        unknown.trust_level = None;
        c.pipelines.push(unknown);
        let candidates = Candidates {
            cache_refs: vec![c],
            ..Candidates::default()
        };
        let purge = run(
            "[[rule]]\nselect = \"cache-refs\"\ntrust_level = \"<=untrusted\"\naction = \"purge\"\n",
            &candidates,
        );
        assert_eq!(purged(&purge), vec![Entity::CacheRef(0)]);
        let mount = MountCandidate {
            builder: "ci-1".to_owned(),
            mount_id: "pip".to_owned(),
            pipelines: vec![pipeline("main", "release"), pipeline("pr", "untrusted")],
            last_use: NOW - 20 * DAY,
        };
        let candidates = Candidates {
            mounts: vec![mount],
            ..Candidates::default()
        };
        let purge = run(
            "[[rule]]\nselect = \"mounts\"\ntrust_level = \"<=untrusted\"\naction = \"purge\"\n",
            &candidates,
        );
        assert_eq!(
            purged(&purge),
            vec![Entity::Mount(0)],
            "a mount an untrusted pipeline wrote holds what it wrote"
        );
    }
}
