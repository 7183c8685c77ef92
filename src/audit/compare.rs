//! Comparing what a registry repository holds with what the store recorded. Pure: the command
//! lists and classifies the tags and loads the store's facts.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::ManifestKind;
use crate::time::{self, Micros};

use super::finding::{Code, Finding, trust_level};
use crate::report::escape::Quoted;

/// A manifest kind's stable name, as the store and the JSON output write it.
pub fn kind_str(kind: ManifestKind) -> &'static str {
    match kind {
        ManifestKind::BuildkitCacheIndex => "cache-index",
        ManifestKind::BuildkitCacheManifest => "cache-manifest",
        ManifestKind::InlineCacheImage => "inline-cache-image",
        ManifestKind::Image => "image",
        ManifestKind::Index => "index",
    }
}

pub fn parse_kind(value: &str) -> Option<ManifestKind> {
    [
        ManifestKind::BuildkitCacheIndex,
        ManifestKind::BuildkitCacheManifest,
        ManifestKind::InlineCacheImage,
        ManifestKind::Image,
        ManifestKind::Index,
    ]
    .into_iter()
    .find(|k| kind_str(*k) == value)
}

/// Whether a manifest of this kind is a build cache.
pub fn is_cache(kind: ManifestKind) -> bool {
    matches!(
        kind,
        ManifestKind::BuildkitCacheIndex
            | ManifestKind::BuildkitCacheManifest
            | ManifestKind::InlineCacheImage
    )
}

/// A tag as the registry shows it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub tag: String,
    pub digest: String,
    pub kind: ManifestKind,
}

/// A digest earlier audits saw at a tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub digest: String,
    pub first_seen: Micros,
    pub last_seen: Micros,
}

/// A recorded export to the repository, or import from it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheEvent {
    /// `None` when the run recorded the reference without a digest.
    pub digest: Option<String>,
    /// Tags recorded with it (for an event without a digest, the tag it named).
    pub tags: Vec<String>,
    pub pipeline: String,
    pub trust_level: Option<String>,
    /// `pipeline/run/step`.
    pub run: String,
    /// The export's run start, the import's run finish.
    pub at: Micros,
    /// The run's finish time.
    pub finished_at: Micros,
}

/// What the store knows about one repository.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepoFacts {
    pub registry: String,
    pub repository: String,
    pub exports: Vec<CacheEvent>,
    pub imports: Vec<CacheEvent>,
    /// Digests recorded as produced images (an inline cache travels inside one).
    pub produced: BTreeSet<String>,
    /// By tag, every digest earlier audits saw there.
    pub history: BTreeMap<String, Vec<Seen>>,
    /// When earlier audits first saw each digest in the repository.
    pub digest_first_seen: BTreeMap<String, Micros>,
    /// Of the digests the registry shows, those open incidents hold tainted, with the
    /// incidents.
    pub tainted: BTreeMap<String, Vec<i64>>,
}

/// Settings of one comparison.
#[derive(Debug, Clone, Copy)]
pub struct CompareOptions {
    pub now: Micros,
    /// Digests seen for less than this long are not reported yet: the hook of the build that
    /// pushed them may not have recorded it.
    pub grace: Micros,
}

/// Every finding about one repository, sorted by code, then reference.
pub fn compare(
    facts: &RepoFacts,
    observed: &[Observed],
    options: CompareOptions,
    rank: &dyn Fn(&str) -> Option<usize>,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    let finding = |code: Code,
                   tag: Option<&str>,
                   digest: Option<&str>,
                   first_seen: Micros,
                   message: String| Finding {
        code,
        registry: facts.registry.clone(),
        repository: facts.repository.clone(),
        tag: tag.map(str::to_owned),
        digest: digest.map(str::to_owned),
        first_seen,
        message,
        detail: BTreeMap::new(),
    };
    // Recorded exports: by digest, the tags they named; by tag, the latest digestless export.
    let mut exported: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut tagless: BTreeMap<&str, Micros> = BTreeMap::new();
    for e in &facts.exports {
        match &e.digest {
            Some(d) => exported
                .entry(d)
                .or_default()
                .extend(e.tags.iter().map(String::as_str)),
            None => {
                for tag in &e.tags {
                    let t = tagless.entry(tag).or_insert(e.finished_at);
                    *t = (*t).max(e.finished_at);
                }
            }
        }
    }
    // Unrecorded digests, with the tags that point at them.
    let mut unrecorded: BTreeMap<&str, (Vec<&Observed>, Micros)> = BTreeMap::new();
    for o in observed.iter().filter(|o| is_cache(o.kind)) {
        let history = facts
            .history
            .get(&o.tag)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let first_at_tag = history
            .iter()
            .find(|s| s.digest == o.digest)
            .map_or(options.now, |s| s.first_seen);
        if options.now - first_at_tag < options.grace {
            continue;
        }
        // The digest the tag pointed at before, and until when.
        let previous = history
            .iter()
            .filter(|s| s.digest != o.digest)
            .max_by_key(|s| s.last_seen);
        // A digestless export to the tag since it last pointed elsewhere may have put it there.
        let tagless_since = tagless
            .get(o.tag.as_str())
            .is_some_and(|at| previous.is_none_or(|p| *at > p.last_seen));
        let recorded = exported.get(o.digest.as_str());
        let produced_inline =
            o.kind == ManifestKind::InlineCacheImage && facts.produced.contains(&o.digest);
        if recorded.is_none() && !produced_inline {
            if tagless_since {
                let mut f = finding(
                    Code::UnverifiableCachePush,
                    Some(&o.tag),
                    Some(&o.digest),
                    first_at_tag,
                    format!(
                        "{} points at {}, and the exports recorded to it carry no digest: it cannot be matched to a run",
                        Quoted(&o.tag),
                        o.digest
                    ),
                );
                f.detail.insert("kind".into(), kind_str(o.kind).into());
                findings.push(f);
            } else {
                let first = facts
                    .digest_first_seen
                    .get(&o.digest)
                    .copied()
                    .unwrap_or(first_at_tag);
                let entry = unrecorded
                    .entry(&o.digest)
                    .or_insert_with(|| (Vec::new(), first));
                entry.0.push(o);
            }
        }
        if let Some(previous) = previous {
            let to_this_tag =
                recorded.is_some_and(|tags| tags.is_empty() || tags.contains(o.tag.as_str()));
            if !to_this_tag && !tagless_since && !produced_inline {
                let mut f = finding(
                    Code::TagMovedUnrecorded,
                    Some(&o.tag),
                    Some(&o.digest),
                    first_at_tag,
                    format!(
                        "{} moved from {} (last seen {}) to {}, and no recorded run exported that to {}",
                        Quoted(&o.tag),
                        previous.digest,
                        time::format(previous.last_seen),
                        o.digest,
                        Quoted(&o.tag)
                    ),
                );
                f.detail
                    .insert("previous_digest".into(), previous.digest.clone());
                f.detail.insert(
                    "previous_last_seen".into(),
                    time::format(previous.last_seen),
                );
                f.detail.insert("kind".into(), kind_str(o.kind).into());
                findings.push(f);
            }
        }
    }
    for (digest, (tags, first_seen)) in unrecorded {
        let names: Vec<&str> = tags.iter().map(|o| o.tag.as_str()).collect();
        let mut f = finding(
            Code::UnrecordedCachePush,
            names.first().copied(),
            Some(digest),
            first_seen,
            format!(
                "{} cache {digest} at {} was exported by no recorded run (first seen {})",
                kind_str(tags[0].kind),
                names
                    .iter()
                    .map(|n| Quoted(n).to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                time::format(first_seen)
            ),
        );
        f.detail.insert("tags".into(), names.join(","));
        f.detail
            .insert("kind".into(), kind_str(tags[0].kind).into());
        findings.push(f);
    }
    findings.extend(held_tainted(facts, observed, options.now));
    findings.extend(trust_breaches(facts, rank));
    findings.sort_by_cached_key(|f| (f.code, f.reference(), f.fingerprint()));
    findings
}

/// Tags that point at a digest open incidents hold tainted: one finding a digest, naming its
/// tags and the incidents. No grace period: what an incident holds is known to be bad.
fn held_tainted(facts: &RepoFacts, observed: &[Observed], now: Micros) -> Vec<Finding> {
    let mut by_digest: BTreeMap<&str, Vec<&Observed>> = BTreeMap::new();
    for o in observed {
        if facts.tainted.contains_key(&o.digest) {
            by_digest.entry(&o.digest).or_default().push(o);
        }
    }
    by_digest
        .into_iter()
        .map(|(digest, tags)| {
            let names: Vec<&str> = tags.iter().map(|o| o.tag.as_str()).collect();
            let incidents: Vec<String> = facts.tainted[digest].iter().map(i64::to_string).collect();
            let first_seen = facts.digest_first_seen.get(digest).copied().unwrap_or(now);
            let mut detail = BTreeMap::new();
            detail.insert("tags".into(), names.join(","));
            detail.insert("incidents".into(), incidents.join(","));
            detail.insert("kind".into(), kind_str(tags[0].kind).into());
            Finding {
                code: Code::HeldTainted,
                registry: facts.registry.clone(),
                repository: facts.repository.clone(),
                tag: names.first().map(|t| (*t).to_owned()),
                digest: Some(digest.to_owned()),
                first_seen,
                message: format!(
                    "{} points at {digest}, which open incident {} holds tainted",
                    names
                        .iter()
                        .map(|n| Quoted(n).to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                    incidents.join(", ")
                ),
                detail,
            }
        })
        .collect()
}

/// (digest, tag when there is no digest, exporter, importer).
type BreachKey = (Option<String>, Option<String>, String, String);

/// Recorded imports of a cache a lower-trust run exported, by a higher-trust run: each run at
/// its own recorded level, so one pipeline that builds pull requests and releases can breach
/// itself.
/// An import by digest breaches when any lower-trust run exported that digest before; an
/// import by tag when the latest recorded export to the tag before it was lower-trust. A run
/// with no trust level, or one not configured, ranks lowest, as in `audit builds`: nothing
/// vouches for it.
fn trust_breaches(facts: &RepoFacts, rank: &dyn Fn(&str) -> Option<usize>) -> Vec<Finding> {
    let rank_of = |e: &CacheEvent| e.trust_level.as_deref().and_then(rank).unwrap_or(0);
    let mut found: BTreeMap<BreachKey, (&CacheEvent, &CacheEvent)> = BTreeMap::new();
    for import in &facts.imports {
        let importer_rank = rank_of(import);
        let breaching: Vec<&CacheEvent> = match &import.digest {
            Some(digest) => facts
                .exports
                .iter()
                .filter(|e| e.digest.as_ref() == Some(digest) && e.at <= import.at)
                .filter(|e| rank_of(e) < importer_rank)
                .collect(),
            None => import
                .tags
                .iter()
                .filter_map(|tag| {
                    facts
                        .exports
                        .iter()
                        .filter(|e| e.tags.contains(tag) && e.at <= import.at)
                        .max_by_key(|e| e.at)
                })
                .filter(|e| rank_of(e) < importer_rank)
                .collect(),
        };
        for export in breaching {
            let tag = if import.digest.is_some() {
                None
            } else {
                import.tags.first().cloned()
            };
            let key = (
                import.digest.clone(),
                tag,
                export.pipeline.clone(),
                import.pipeline.clone(),
            );
            let entry = found.entry(key).or_insert((export, import));
            if import.at < entry.1.at {
                *entry = (export, import);
            }
        }
    }
    found
        .into_iter()
        .map(|((digest, tag, exporter, importer), (export, import))| {
            let what = match (&digest, &tag) {
                (Some(d), _) => d.clone(),
                (None, Some(t)) => format!("tag {}", Quoted(t)),
                (None, None) => "it".to_owned(),
            };
            let mut detail = BTreeMap::new();
            detail.insert("exporter".to_owned(), exporter.clone());
            detail.insert(
                "exporter_trust".to_owned(),
                export.trust_level.clone().unwrap_or_default(),
            );
            detail.insert("exporter_run".to_owned(), export.run.clone());
            detail.insert("exported_at".to_owned(), time::format(export.at));
            detail.insert("importer".to_owned(), importer.clone());
            detail.insert(
                "importer_trust".to_owned(),
                import.trust_level.clone().unwrap_or_default(),
            );
            detail.insert("importer_run".to_owned(), import.run.clone());
            detail.insert("imported_at".to_owned(), time::format(import.at));
            Finding {
                code: Code::TrustBreach,
                registry: facts.registry.clone(),
                repository: facts.repository.clone(),
                tag,
                digest,
                first_seen: import.at,
                message: format!(
                    "{} ({}) imported {what}, exported by {} ({}) in run {}, in run {} at {}",
                    Quoted(&importer),
                    trust_level(import.trust_level.as_deref()),
                    Quoted(&exporter),
                    trust_level(export.trust_level.as_deref()),
                    Quoted(&export.run),
                    Quoted(&import.run),
                    time::format(import.at)
                ),
                detail,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const NOW: Micros = 1_000_000_000_000;

    fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn facts() -> RepoFacts {
        RepoFacts {
            registry: "r.io".into(),
            repository: "team/app".into(),
            ..RepoFacts::default()
        }
    }

    fn export(d: Option<char>, tag: &str, pipeline: &str, trust: &str, at: Micros) -> CacheEvent {
        CacheEvent {
            digest: d.map(digest),
            tags: vec![tag.to_owned()],
            pipeline: pipeline.to_owned(),
            trust_level: Some(trust.to_owned()),
            run: format!("{pipeline}/1/s"),
            at,
            finished_at: at + 60,
        }
    }

    fn cache(tag: &str, d: char) -> Observed {
        Observed {
            tag: tag.to_owned(),
            digest: digest(d),
            kind: ManifestKind::BuildkitCacheManifest,
        }
    }

    fn run(facts: &RepoFacts, observed: &[Observed]) -> Vec<(Code, Option<String>)> {
        let config = Config::default();
        compare(
            facts,
            observed,
            CompareOptions { now: NOW, grace: 0 },
            &|l| config.trust_rank(l),
        )
        .into_iter()
        .map(|f| (f.code, f.tag))
        .collect()
    }

    /// Recorded exports and images raise nothing.
    #[test]
    fn a_tag_at_a_tainted_digest_is_reported_with_its_incidents() {
        let mut f = facts();
        f.tainted.insert(digest('x'), vec![2, 5]);
        let observed = [cache("main", 'x'), cache("copy", 'x'), cache("other", 'y')];
        let found = compare(&f, &observed, CompareOptions { now: 10, grace: 0 }, &|_| {
            None
        });
        let held: Vec<&Finding> = found
            .iter()
            .filter(|f| f.code == Code::HeldTainted)
            .collect();
        assert_eq!(held.len(), 1, "{found:?}");
        assert_eq!(held[0].digest.as_deref(), Some(digest('x').as_str()));
        assert_eq!(held[0].detail["incidents"], "2,5");
        assert!(
            held[0].message.contains("open incident 2, 5"),
            "{}",
            held[0].message
        );
    }

    #[test]
    fn recorded_exports_and_images_are_quiet() {
        let mut f = facts();
        f.exports
            .push(export(Some('a'), "main", "ci", "release", 10));
        let image = Observed {
            tag: "v1".into(),
            digest: digest('i'),
            kind: ManifestKind::Image,
        };
        assert!(run(&f, &[cache("main", 'a'), image]).is_empty());
    }

    /// An unrecorded digest is one finding, whatever number of tags point at it.
    #[test]
    fn an_unrecorded_digest_is_reported_once_with_its_tags() {
        let mut f = facts();
        f.exports
            .push(export(Some('a'), "main", "ci", "release", 10));
        assert_eq!(
            run(&f, &[cache("main", 'a'), cache("x", 'b'), cache("y", 'b')]),
            vec![(Code::UnrecordedCachePush, Some("x".into()))]
        );
    }

    /// A tag moved without a recorded export to it is reported.
    #[test]
    fn a_moved_tag_is_reported_unless_an_export_put_it_there() {
        let mut f = facts();
        f.exports
            .push(export(Some('a'), "main", "ci", "release", 10));
        f.exports
            .push(export(Some('b'), "pr", "pr", "untrusted", 20));
        f.history.insert(
            "main".into(),
            vec![Seen {
                digest: digest('a'),
                first_seen: 1,
                last_seen: 100,
            }],
        );
        // Retagged: `b` is recorded, but only at `pr`.
        assert_eq!(
            run(&f, &[cache("main", 'b')]),
            vec![(Code::TagMovedUnrecorded, Some("main".into()))]
        );
        // An attacker push: unrecorded and moved.
        assert_eq!(
            run(&f, &[cache("main", 'c')]),
            vec![
                (Code::UnrecordedCachePush, Some("main".into())),
                (Code::TagMovedUnrecorded, Some("main".into()))
            ]
        );
        // A recorded export to `main` of a new digest is normal.
        f.exports
            .push(export(Some('d'), "main", "ci", "release", 200));
        assert!(run(&f, &[cache("main", 'd')]).is_empty());
    }

    /// Digestless exports make a digest unverifiable, until the tag moves past them.
    #[test]
    fn digestless_exports_make_a_digest_unverifiable_until_the_tag_moves_again() {
        let mut f = facts();
        f.exports.push(export(None, "main", "ci", "release", 10));
        assert_eq!(
            run(&f, &[cache("main", 'a')]),
            vec![(Code::UnverifiableCachePush, Some("main".into()))]
        );
        // The audit saw `a` after the last export; a later digest has no export to explain it.
        f.history.insert(
            "main".into(),
            vec![Seen {
                digest: digest('a'),
                first_seen: 50,
                last_seen: 500,
            }],
        );
        assert_eq!(
            run(&f, &[cache("main", 'b')]),
            vec![
                (Code::UnrecordedCachePush, Some("main".into())),
                (Code::TagMovedUnrecorded, Some("main".into()))
            ]
        );
    }

    /// Digests fresher than the grace period are not reported yet.
    #[test]
    fn grace_defers_fresh_digests() {
        let f = facts();
        let config = Config::default();
        let found = compare(
            &f,
            &[cache("x", 'b')],
            CompareOptions {
                now: NOW,
                grace: 10,
            },
            &|l| config.trust_rank(l),
        );
        assert!(found.is_empty());
    }

    /// Only a later import by a higher-trust pipeline is a breach.
    #[test]
    fn trusted_import_of_untrusted_export_is_a_breach() {
        let mut f = facts();
        f.exports
            .push(export(Some('a'), "pr", "pr", "untrusted", 10));
        let mut import = export(Some('a'), "pr", "main", "release", 100);
        import.tags.clear();
        f.imports.push(import.clone());
        // Importing before the export is not a breach.
        let mut early = import.clone();
        early.at = 5;
        early.pipeline = "early".into();
        f.imports.push(early);
        // A lower-trust import of a higher-trust export is not either.
        f.exports
            .push(export(Some('b'), "main", "main", "release", 10));
        let mut down = export(Some('b'), "main", "pr", "untrusted", 100);
        down.tags.clear();
        f.imports.push(down);
        let found = compare(&f, &[], CompareOptions { now: NOW, grace: 0 }, &|l| {
            Config::default().trust_rank(l)
        });
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].code, Code::TrustBreach);
        assert_eq!(found[0].digest, Some(digest('a')));
        assert_eq!(found[0].detail["importer"], "main");
        assert_eq!(
            found[0].fingerprint(),
            format!("CW002 r.io/team/app {} pr > main", digest('a'))
        );
    }

    /// An import by tag breaches when the latest export to the tag was lower-trust.
    #[test]
    fn an_import_by_tag_breaches_when_the_latest_export_to_it_was_lower_trust() {
        let mut f = facts();
        f.exports.push(export(None, "main", "main", "release", 10));
        f.exports
            .push(export(Some('a'), "main", "pr", "untrusted", 20));
        f.exports.push(export(None, "main", "main", "release", 300));
        let import = |at| CacheEvent {
            tags: vec!["main".into()],
            at,
            ..export(None, "main", "main", "release", 0)
        };
        f.imports.push(import(100));
        let config = Config::default();
        let found = compare(&f, &[], CompareOptions { now: NOW, grace: 0 }, &|l| {
            config.trust_rank(l)
        });
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].tag.as_deref(), Some("main"));
        f.imports = vec![import(400)];
        assert!(
            compare(&f, &[], CompareOptions { now: NOW, grace: 0 }, &|l| config
                .trust_rank(l))
            .is_empty()
        );
    }

    /// An exporter with no trust level, or one not configured, ranks lowest: its export
    /// imported by a higher-trust run is a breach, as one at the lowest level is; an importer
    /// with none is breached by nothing.
    #[test]
    fn an_exporter_without_a_trust_level_ranks_lowest() {
        let config = Config::default();
        let lowest = config.trust_levels()[0].clone();
        let found = |exporter: Option<&str>, importer: Option<&str>| {
            let mut f = facts();
            let mut exported = export(Some('a'), "pr", "pr", "", 10);
            exported.trust_level = exporter.map(str::to_owned);
            f.exports.push(exported);
            let mut import = export(Some('a'), "pr", "main", "", 100);
            import.tags.clear();
            import.trust_level = importer.map(str::to_owned);
            f.imports.push(import);
            compare(&f, &[], CompareOptions { now: NOW, grace: 0 }, &|l| {
                config.trust_rank(l)
            })
        };
        for exporter in [None, Some("nonsense"), Some(lowest.as_str())] {
            let got = found(exporter, Some("release"));
            assert_eq!(got.len(), 1, "{exporter:?}: {got:#?}");
            assert_eq!(got[0].code, Code::TrustBreach);
        }
        let got = found(None, Some("release"));
        assert!(
            got[0].message.contains("exported by `pr` (no trust level)"),
            "{}",
            got[0].message
        );
        assert_eq!(got[0].detail["exporter_trust"], "");
        for importer in [None, Some(lowest.as_str())] {
            assert!(found(None, importer).is_empty(), "{importer:?}");
        }
    }
}
