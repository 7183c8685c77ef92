//! Seeds of a trace: what is known to be compromised, parsed and validated before the store is
//! read.
//!
//! [`SeedSpec`] is the seeds as given, the form an incident stores so its trace can be re-run;
//! [`Seeds`] is what it parses into. The spec is the project's own versioned type, built from
//! the command line in `commands/`: renaming a flag does not change what the store keeps.

use serde::{Deserialize, Serialize};

use crate::model::{Digest, ImageRef, ParseError, RunKey, normalize_mount_id};
use crate::time::{self, Bound, Micros};

/// An inclusive time window; a missing bound is open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    pub since: Option<Micros>,
    pub until: Option<Micros>,
}

impl Window {
    pub fn contains(&self, t: Micros) -> bool {
        self.since.is_none_or(|since| since <= t) && self.until.is_none_or(|until| t <= until)
    }

    /// Whether something seen from `first` to `last` was seen at some time in the window.
    pub fn overlaps(&self, first: Micros, last: Micros) -> bool {
        self.since.is_none_or(|since| since <= last)
            && self.until.is_none_or(|until| first <= until)
    }
}

/// The runs of a pipeline whose start lies in the window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineSeed {
    pub name: String,
    pub window: Window,
}

/// A run named `pipeline/run[/step]` as output prints it, each part percent-encoded (`%2F`,
/// `%25`). A name written before parts were encoded (a seed stored with an incident, or typed
/// from an old report) may hold `/` inside a pipeline name or step, so it is also read every
/// way its slashes allow, as it was then; every reading the store holds is seeded. A reading
/// too many taints more, never less, and an encoded name has no other reading that exists
/// unless it has no `%` and a pipeline or step with `/` happens to match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSeed {
    pub name: String,
    pub readings: Vec<RunKey>,
}

impl RunSeed {
    pub fn parse(name: &str) -> Result<Self, ParseError> {
        let encoded = RunKey::parse(name, "--run");
        let mut readings: Vec<RunKey> = encoded.iter().cloned().collect();
        match (RunKey::candidates(name, "--run"), encoded) {
            (Ok(old), _) => {
                for reading in old {
                    if !readings.contains(&reading) {
                        readings.push(reading);
                    }
                }
            }
            (Err(_), Ok(_)) => {}
            (Err(_), Err(err)) => return Err(err),
        }
        Ok(Self {
            name: name.to_owned(),
            readings,
        })
    }
}

/// A content digest, with the repository it was named in when there was one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestSeed {
    /// `registry/repository`.
    pub locator: Option<String>,
    pub digest: Digest,
}

impl DigestSeed {
    /// How output names the seed when the store holds no artifact with the digest.
    pub fn display_name(&self) -> String {
        match &self.locator {
            Some(locator) => format!("{locator}@{}", self.digest),
            None => self.digest.to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheRefSeed {
    Digest(DigestSeed),
    /// Every artifact seen under the tag whose tag was first seen there within the window.
    Tag {
        locator: String,
        tag: String,
        window: Window,
    },
}

/// A mount cache, tainted from `since` or else from its first recorded use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSeed {
    pub builder: String,
    /// The id as given: the Dockerfile form or the LLB form.
    pub id: String,
    pub since: Option<Micros>,
}

impl MountSeed {
    /// The ways to read `BUILDER:ID` as given: split at each `:` with something on both
    /// sides, the first `:` first.
    pub fn readings(&self) -> Vec<MountSeed> {
        let value = format!("{}:{}", self.builder, self.id);
        value
            .match_indices(':')
            .map(|(at, _)| (&value[..at], &value[at + 1..]))
            .filter(|(builder, id)| !builder.is_empty() && !id.is_empty())
            .map(|(builder, id)| MountSeed {
                builder: builder.to_owned(),
                id: id.to_owned(),
                since: self.since,
            })
            .collect()
    }

    /// The ids to look the mount up by, most literal first: the id as given, then the
    /// Dockerfile forms of it read as an LLB id.
    pub fn candidates(&self) -> Vec<String> {
        let mut out = vec![self.id.clone()];
        for form in [
            normalize_mount_id(&self.id, "", true),
            normalize_mount_id(&self.id, "", false),
        ] {
            if !out.contains(&form) {
                out.push(form);
            }
        }
        out
    }
}

/// A builder whose local cache is compromised from `since`, or else from its first use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuilderSeed {
    pub name: String,
    pub since: Option<Micros>,
}

/// The version of [`SeedSpec`] this build writes. Version 1 was the command line's own argument
/// struct (`pipeline`, `cache_ref`, ... and no version); migration 0011 rewrites stored
/// incidents into version 2.
pub const SEED_SPEC_VERSION: u32 = 2;

/// The seeds of a trace as given, before parsing: what an incident stores. Every value is
/// checked again by [`Seeds::from_spec`] each time it is read, as it came from outside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedSpec {
    /// [`SEED_SPEC_VERSION`] when written; a newer one is refused.
    pub version: u32,
    /// Pipeline names: their runs that started within `since`/`until`.
    #[serde(default)]
    pub pipelines: Vec<String>,
    /// Runs, `pipeline/run[/step]`, parts percent-encoded.
    #[serde(default)]
    pub runs: Vec<String>,
    /// Cache references: a digest, a reference with a digest, or a tag.
    #[serde(default)]
    pub cache_refs: Vec<String>,
    /// Mount caches, `BUILDER:ID`.
    #[serde(default)]
    pub mounts: Vec<String>,
    /// Builder names.
    #[serde(default)]
    pub builders: Vec<String>,
    /// Images by digest, `REF@DIGEST` or a bare digest.
    #[serde(default)]
    pub images: Vec<String>,
    /// Inclusive lower bound of the window, RFC 3339.
    #[serde(default)]
    pub since: Option<String>,
    /// Inclusive upper bound of the window, RFC 3339.
    #[serde(default)]
    pub until: Option<String>,
    /// Inclusive upper bound of the tag windows, RFC 3339, when it is not `until`: an
    /// incident ends them when it opens, as what a tag holds after that (the rebuild the
    /// incident asks for) is not what the seed named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags_until: Option<String>,
}

impl Default for SeedSpec {
    fn default() -> Self {
        Self {
            version: SEED_SPEC_VERSION,
            pipelines: Vec::new(),
            runs: Vec::new(),
            cache_refs: Vec::new(),
            mounts: Vec::new(),
            builders: Vec::new(),
            images: Vec::new(),
            since: None,
            until: None,
            tags_until: None,
        }
    }
}

/// Everything a trace starts from; several kinds combine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seeds {
    pub pipelines: Vec<PipelineSeed>,
    pub runs: Vec<RunSeed>,
    pub cache_refs: Vec<CacheRefSeed>,
    pub mounts: Vec<MountSeed>,
    pub builders: Vec<BuilderSeed>,
    pub images: Vec<DigestSeed>,
}

impl Seeds {
    /// Validates the seeds, resolving times given as durations against the clock now.
    pub fn from_spec(args: &SeedSpec) -> Result<Self, ParseError> {
        Self::from_spec_at(args, time::now())
    }

    /// Validates the seeds. `--since`/`--until` bound the pipeline windows and the tag
    /// windows; `--since` also starts seeded mounts and builders. A duration is before `now`.
    /// Errors name the flag each value is given with.
    pub fn from_spec_at(args: &SeedSpec, now: Micros) -> Result<Self, ParseError> {
        if args.version != SEED_SPEC_VERSION {
            return Err(ParseError::new(
                "seed version",
                args.version.to_string(),
                format!("this cachewarden reads version {SEED_SPEC_VERSION}"),
            ));
        }
        let (since, until) = window_of(args, now)?;
        let window = Window { since, until };
        let tags_until = args
            .tags_until
            .as_deref()
            .map(|s| time::parse_flag(s, "tags until", Bound::Upper, now))
            .transpose()?;
        let tag_window = Window {
            since,
            until: match (until, tags_until) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
        };
        let seeds = Self {
            pipelines: args
                .pipelines
                .iter()
                .map(|name| parse_pipeline(name, window))
                .collect::<Result<_, _>>()?,
            runs: args
                .runs
                .iter()
                .map(|run| RunSeed::parse(run))
                .collect::<Result<_, _>>()?,
            cache_refs: args
                .cache_refs
                .iter()
                .map(|value| parse_cache_ref(value, tag_window))
                .collect::<Result<_, _>>()?,
            mounts: args
                .mounts
                .iter()
                .map(|value| parse_mount(value, since))
                .collect::<Result<_, _>>()?,
            builders: args
                .builders
                .iter()
                .map(|name| {
                    if name.is_empty() {
                        return Err(ParseError::new("--builder", name, "empty builder name"));
                    }
                    Ok(BuilderSeed {
                        name: name.clone(),
                        since,
                    })
                })
                .collect::<Result<_, _>>()?,
            images: args
                .images
                .iter()
                .map(|value| parse_image(value))
                .collect::<Result<_, _>>()?,
        };
        if seeds.is_empty() {
            return Err(ParseError::new(
                "trace seeds",
                "(none)",
                "give at least one of --pipeline, --run, --cache-ref, --mount, --builder or --image",
            ));
        }
        Ok(seeds)
    }

    pub fn is_empty(&self) -> bool {
        self.pipelines.is_empty()
            && self.runs.is_empty()
            && self.cache_refs.is_empty()
            && self.mounts.is_empty()
            && self.builders.is_empty()
            && self.images.is_empty()
    }
}

/// The seed window's bounds, each resolved to an absolute time.
fn window_of(args: &SeedSpec, now: Micros) -> Result<(Option<Micros>, Option<Micros>), ParseError> {
    let since = args
        .since
        .as_deref()
        .map(|s| time::parse_flag(s, "--since", Bound::Lower, now))
        .transpose()?;
    let until = args
        .until
        .as_deref()
        .map(|s| time::parse_flag(s, "--until", Bound::Upper, now))
        .transpose()?;
    if let (Some(since), Some(until), Some(text)) = (since, until, &args.until)
        && until < since
    {
        return Err(ParseError::new("--until", text, "it is before `--since`"));
    }
    Ok((since, until))
}

/// The seed flags with `--since` and `--until` written as the absolute RFC 3339 times they
/// mean now, and the tag windows ended now when `--until` does not end them: what an incident
/// stores, so that a later verification traces the same window however long after it runs.
pub fn resolve_times(args: &SeedSpec, now: Micros) -> Result<SeedSpec, ParseError> {
    let (since, until) = window_of(args, now)?;
    let mut resolved = args.clone();
    resolved.since = since.map(time::format);
    resolved.until = until.map(time::format);
    resolved.tags_until = match until {
        Some(until) if until <= now => None,
        _ if args.cache_refs.iter().any(|r| is_tag(r)) => Some(time::format(now)),
        _ => None,
    };
    Ok(resolved)
}

/// Whether a `--cache-ref` value names a tag (no digest).
fn is_tag(value: &str) -> bool {
    matches!(
        parse_cache_ref(value, Window::default()),
        Ok(CacheRefSeed::Tag { .. })
    )
}

fn parse_pipeline(name: &str, window: Window) -> Result<PipelineSeed, ParseError> {
    if name.is_empty() {
        return Err(ParseError::new("--pipeline", name, "empty pipeline name"));
    }
    Ok(PipelineSeed {
        name: name.to_owned(),
        window,
    })
}

fn parse_cache_ref(value: &str, window: Window) -> Result<CacheRefSeed, ParseError> {
    const WHAT: &str = "--cache-ref";
    if let Some(digest) = Digest::parse_bare(value, WHAT) {
        return Ok(CacheRefSeed::Digest(DigestSeed {
            locator: None,
            digest: digest?,
        }));
    }
    let reference = ImageRef::parse(value, WHAT)?;
    match (reference.digest.clone(), reference.tag.clone()) {
        (Some(digest), _) => Ok(CacheRefSeed::Digest(DigestSeed {
            locator: Some(reference.locator()),
            digest,
        })),
        (None, Some(tag)) => Ok(CacheRefSeed::Tag {
            locator: reference.locator(),
            tag,
            window,
        }),
        (None, None) => Err(ParseError::new(
            WHAT,
            value,
            "name a digest (`@sha256:...`) or a tag",
        )),
    }
}

fn parse_image(value: &str) -> Result<DigestSeed, ParseError> {
    const WHAT: &str = "--image";
    if let Some(digest) = Digest::parse_bare(value, WHAT) {
        return Ok(DigestSeed {
            locator: None,
            digest: digest?,
        });
    }
    let reference = ImageRef::parse(value, WHAT)?;
    match reference.digest.clone() {
        Some(digest) => Ok(DigestSeed {
            locator: Some(reference.locator()),
            digest,
        }),
        None => Err(ParseError::new(
            WHAT,
            value,
            "expected `REF@DIGEST`: an image seeds by its digest",
        )),
    }
}

fn parse_mount(value: &str, since: Option<Micros>) -> Result<MountSeed, ParseError> {
    match value.split_once(':') {
        Some((builder, id)) if !builder.is_empty() && !id.is_empty() => Ok(MountSeed {
            builder: builder.to_owned(),
            id: id.to_owned(),
            since,
        }),
        _ => Err(ParseError::new("--mount", value, "expected `BUILDER:ID`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn args() -> SeedSpec {
        SeedSpec::default()
    }

    /// A trace with no seed is refused before the store is opened.
    #[test]
    fn at_least_one_seed_is_required() {
        let err = Seeds::from_spec(&SeedSpec {
            since: Some("2026-03-01T00:00:00Z".into()),
            ..args()
        })
        .unwrap_err();
        assert!(err.to_string().contains("at least one"), "{err}");
    }

    /// The window applies to pipelines and tags, `--since` to mounts and builders.
    #[test]
    fn window_reaches_every_seed_that_has_one() {
        let seeds = Seeds::from_spec(&SeedSpec {
            pipelines: vec!["web".into()],
            cache_refs: vec!["reg.io/app:cache".into()],
            mounts: vec!["b1:/root/.cache/pip".into()],
            builders: vec!["b1".into()],
            since: Some("2026-03-01T00:00:00Z".into()),
            until: Some("2026-03-02T00:00:00Z".into()),
            ..args()
        })
        .unwrap();
        let since = time::parse_rfc3339("2026-03-01T00:00:00Z", "t").unwrap();
        let until = time::parse_rfc3339("2026-03-02T00:00:00Z", "t").unwrap();
        let window = Window {
            since: Some(since),
            until: Some(until),
        };
        assert_eq!(seeds.pipelines[0].window, window);
        assert_eq!(
            seeds.cache_refs[0],
            CacheRefSeed::Tag {
                locator: "reg.io/app".into(),
                tag: "cache".into(),
                window
            }
        );
        assert_eq!(seeds.mounts[0].since, Some(since));
        assert_eq!(seeds.builders[0].since, Some(since));
        assert!(window.contains(since) && window.contains(until) && !window.contains(until + 1));
    }

    /// A bare digest, a digest reference and a tag reference each become the right seed.
    #[test]
    fn cache_refs_are_digests_or_tags() {
        let seeds = Seeds::from_spec(&SeedSpec {
            cache_refs: vec![digest('a'), format!("reg.io/app@{}", digest('b'))],
            images: vec![format!("app@{}", digest('c'))],
            ..args()
        })
        .unwrap();
        assert_eq!(
            seeds.cache_refs[0],
            CacheRefSeed::Digest(DigestSeed {
                locator: None,
                digest: Digest::parse(&digest('a'), "d").unwrap()
            })
        );
        let CacheRefSeed::Digest(named) = &seeds.cache_refs[1] else {
            panic!("expected a digest seed")
        };
        assert_eq!(named.display_name(), format!("reg.io/app@{}", digest('b')));
        assert_eq!(
            seeds.images[0].locator.as_deref(),
            Some("docker.io/library/app")
        );
    }

    /// Malformed seeds name the flag and the value.
    #[test]
    fn bad_seeds_name_their_flag() {
        let cases = [
            SeedSpec {
                cache_refs: vec!["sha256:abc".into()],
                ..args()
            },
            SeedSpec {
                cache_refs: vec!["reg.io/app".into()],
                ..args()
            },
            SeedSpec {
                images: vec!["app:latest".into()],
                ..args()
            },
            SeedSpec {
                mounts: vec!["no-colon".into()],
                ..args()
            },
            SeedSpec {
                runs: vec!["web".into()],
                ..args()
            },
            SeedSpec {
                pipelines: vec!["web".into()],
                since: Some("yesterday".into()),
                ..args()
            },
            SeedSpec {
                pipelines: vec!["web".into()],
                since: Some("2026-03-02T00:00:00Z".into()),
                until: Some("2026-03-01T00:00:00Z".into()),
                ..args()
            },
        ];
        let flags = [
            "--cache-ref",
            "--cache-ref",
            "--image",
            "--mount",
            "--run",
            "--since",
            "--until",
        ];
        for (case, flag) in cases.iter().zip(flags) {
            let err = Seeds::from_spec(case).unwrap_err();
            assert_eq!(err.what, flag, "{err}");
        }
    }

    /// A mount id splits at the first colon and is looked up in its LLB forms too.
    #[test]
    fn mount_ids_split_at_the_first_colon_and_accept_llb_forms() {
        let seeds = Seeds::from_spec(&SeedSpec {
            mounts: vec![
                "b1://root/.cache/pip".into(),
                "b1:/pip".into(),
                "b1:c:d".into(),
            ],
            ..args()
        })
        .unwrap();
        assert_eq!(seeds.mounts[0].builder, "b1");
        assert_eq!(
            seeds.mounts[0].candidates(),
            ["//root/.cache/pip", "/root/.cache/pip"]
        );
        assert_eq!(seeds.mounts[1].candidates(), ["/pip", "pip"]);
        assert_eq!(seeds.mounts[2].id, "c:d");
        assert_eq!(seeds.mounts[2].candidates(), ["c:d"]);
    }

    /// Stored seeds of another version are refused rather than read as different seeds, and
    /// the old unversioned shape does not read as an empty spec.
    #[test]
    fn stored_seeds_of_another_version_are_refused() {
        let newer = SeedSpec {
            version: SEED_SPEC_VERSION + 1,
            pipelines: vec!["web".into()],
            ..args()
        };
        let err = Seeds::from_spec(&newer).unwrap_err();
        assert_eq!(err.what, "seed version", "{err}");
        let old = r#"{"pipeline":["web"],"runs":[],"cache_ref":[],"mount":[],"builder":[],"image":[],"since":null,"until":null}"#;
        assert!(serde_json::from_str::<SeedSpec>(old).is_err());
        let spec = SeedSpec {
            pipelines: vec!["web".into()],
            since: Some("2026-03-01T00:00:00Z".into()),
            ..args()
        };
        let text = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<SeedSpec>(&text).unwrap(), spec);
        assert!(
            text.starts_with(r#"{"version":2,"pipelines":["web"]"#),
            "{text}"
        );
    }

    /// A window given as a duration is stored as the absolute times it meant when resolved,
    /// so tracing the stored seeds later reads the same window.
    #[test]
    fn resolved_times_are_absolute_and_trace_the_same_window() {
        let now = time::parse_rfc3339("2026-11-08T12:00:00Z", "t").unwrap();
        let given = SeedSpec {
            pipelines: vec!["web".into()],
            since: Some("3d".into()),
            until: Some("2026-11-07".into()),
            ..args()
        };
        let stored = resolve_times(&given, now).unwrap();
        assert_eq!(stored.since.as_deref(), Some("2026-11-05T12:00:00Z"));
        assert_eq!(stored.until.as_deref(), Some("2026-11-07T23:59:59.999999Z"));
        let a_week_later = now + 7 * 86_400_000_000;
        assert_eq!(
            Seeds::from_spec_at(&stored, a_week_later)
                .unwrap()
                .pipelines,
            Seeds::from_spec_at(&given, now).unwrap().pipelines
        );
    }

    /// `--until` before `--since` is refused whatever forms they take.
    #[test]
    fn until_before_since_is_refused_across_forms() {
        let now = time::parse_rfc3339("2026-11-08T12:00:00Z", "t").unwrap();
        let err = resolve_times(
            &SeedSpec {
                pipelines: vec!["web".into()],
                since: Some("2026-11-08".into()),
                until: Some("2d".into()),
                ..args()
            },
            now,
        )
        .unwrap_err();
        assert!(err.to_string().contains("before `--since`"), "{err}");
    }
}
