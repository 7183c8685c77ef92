//! The sweep policy file: ordered `[[rule]]` tables, validated against the config's trust
//! levels before anything is read from the store.
//!
//! ```toml
//! [[rule]]
//! name = "release caches stay"
//! select = "cache-refs"
//! trust_level = ">=release"
//! action = "keep"
//!
//! [[rule]]
//! name = "stale pull-request caches"
//! select = "cache-refs"
//! pipeline = "pr-*"
//! repository = "registry.example/team/**"
//! older_than = "14d"
//! keep_newest = 3
//! action = "purge"
//!
//! [[rule]]
//! select = "builder-records"
//! builder = "ci-*"
//! max_bytes = 20_000_000_000
//! action = "purge"
//! ```
//!
//! Entities flow through the rules in order; the first rule that matches one decides it, and
//! an entity no rule matches is kept. Selectors: `pipeline`, `project` (globs over the
//! pipelines that wrote or used the entity: any one matching is enough), `trust_level` (the
//! lowest level among the runs that wrote or used the entity, each at its own recorded level:
//! `untrusted`, `<=internal`, `>=release`; an entity whose runs have no level the config knows
//! matches no trust selector), `repository` (a glob
//! over `registry/repository`, cache refs only), `builder` (a glob, mounts and records only) and
//! `older_than` (time since the last recorded write or use). In globs `*` stays within one
//! `/`-separated component and `**` crosses them.
//!
//! `keep_newest = N` (cache refs) keeps the N most recently written cache refs of each
//! repository among those the rule's other selectors match, old or young, so together with
//! `older_than` a repository keeps at least its N newest caches. `max_bytes = N` (builder
//! records) keeps each builder's most recently used matching records while their recorded sizes
//! add up to at most N bytes and purges the rest, oldest first. Cache refs, records and mounts
//! such a rule spares are decided (kept); those too young for `older_than` go on to the next rule.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::Config;
use crate::time::Micros;

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policy `{path}`: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid policy `{path}`{}: {message}", line.map(|l| format!(" line {l}")).unwrap_or_default())]
    Invalid {
        path: PathBuf,
        line: Option<usize>,
        message: String,
    },
}

/// What a rule selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Selects {
    /// Registry manifests that recorded runs exported as a cache (images are never swept).
    CacheRefs,
    /// Cache mounts (`RUN --mount=type=cache`), as a whole, on their builder.
    Mounts,
    /// Individual build-cache records the hook saw on a builder.
    BuilderRecords,
}

impl Selects {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CacheRefs => "cache-refs",
            Self::Mounts => "mounts",
            Self::BuilderRecords => "builder-records",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuleAction {
    Purge,
    Keep,
}

impl RuleAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Purge => "purge",
            Self::Keep => "keep",
        }
    }
}

/// A trust-level selector, resolved to ranks in the config's order (0 is lowest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrustSelector {
    Exactly(usize),
    AtMost(usize),
    AtLeast(usize),
}

impl TrustSelector {
    /// Parses `level`, `<=level` or `>=level` against the config's levels.
    pub fn parse(value: &str, config: &Config) -> Result<Self, String> {
        let (make, level): (fn(usize) -> Self, &str) = if let Some(level) = value.strip_prefix("<=")
        {
            (Self::AtMost, level)
        } else if let Some(level) = value.strip_prefix(">=") {
            (Self::AtLeast, level)
        } else {
            (Self::Exactly, value)
        };
        let level = level.trim();
        let rank = config.trust_rank(level).ok_or_else(|| {
            format!(
                "`trust_level` `{value}`: unknown level `{level}` (the config's levels, lowest first: {})",
                config.trust_levels().join(", ")
            )
        })?;
        Ok(make(rank))
    }

    /// Whether an entity whose lowest known trust rank is `rank` matches.
    pub fn matches(self, rank: Option<usize>) -> bool {
        match (self, rank) {
            (_, None) => false,
            (Self::Exactly(want), Some(r)) => r == want,
            (Self::AtMost(want), Some(r)) => r <= want,
            (Self::AtLeast(want), Some(r)) => r >= want,
        }
    }
}

/// One validated rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// `name`, else `rule N` (counted from 1).
    pub name: String,
    pub selects: Selects,
    pub pipeline: Option<String>,
    pub project: Option<String>,
    pub trust: Option<TrustSelector>,
    /// The `trust_level` text, for messages.
    pub trust_text: Option<String>,
    pub repository: Option<String>,
    pub builder: Option<String>,
    /// In microseconds.
    pub older_than: Option<Micros>,
    /// The `older_than` text, for messages.
    pub older_than_text: Option<String>,
    pub keep_newest: Option<usize>,
    pub max_bytes: Option<u64>,
    pub action: RuleAction,
}

/// A validated policy: rules in the order the file gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub rules: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default, rename = "rule")]
    rules: Vec<RuleFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    #[serde(default)]
    name: Option<String>,
    select: Selects,
    #[serde(default)]
    pipeline: Option<String>,
    #[serde(default)]
    project: Option<String>,
    #[serde(default)]
    trust_level: Option<String>,
    #[serde(default)]
    repository: Option<String>,
    #[serde(default)]
    builder: Option<String>,
    #[serde(default)]
    older_than: Option<String>,
    #[serde(default)]
    keep_newest: Option<usize>,
    #[serde(default)]
    max_bytes: Option<u64>,
    action: RuleAction,
}

impl Policy {
    /// Reads and validates a policy file.
    pub fn load(path: &Path, config: &Config) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path, config)
    }

    /// Parses policy text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path, config: &Config) -> Result<Self, PolicyError> {
        let file: PolicyFile = toml::from_str(text).map_err(|err| PolicyError::Invalid {
            path: path.to_path_buf(),
            line: err
                .span()
                .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1),
            message: err.message().trim().to_owned(),
        })?;
        let invalid = |message: String| PolicyError::Invalid {
            path: path.to_path_buf(),
            line: None,
            message,
        };
        if file.rules.is_empty() {
            return Err(invalid(
                "no `[[rule]]`: a sweep without rules would do nothing".to_owned(),
            ));
        }
        let mut rules = Vec::with_capacity(file.rules.len());
        for (i, raw) in file.rules.into_iter().enumerate() {
            let name = raw
                .name
                .clone()
                .unwrap_or_else(|| format!("rule {}", i + 1));
            let rule = validate(raw, name.clone(), config)
                .map_err(|message| invalid(format!("rule `{name}`: {message}")))?;
            if rules.iter().any(|r: &Rule| r.name == rule.name) {
                return Err(invalid(format!("two rules are named `{}`", rule.name)));
            }
            rules.push(rule);
        }
        Ok(Self { rules })
    }

    /// Whether any rule selects this kind of entity (the others need not be loaded).
    pub fn selects(&self, kind: Selects) -> bool {
        self.rules.iter().any(|r| r.selects == kind)
    }
}

fn validate(raw: RuleFile, name: String, config: &Config) -> Result<Rule, String> {
    let only = |present: bool, key: &str, kinds: &[Selects]| -> Result<(), String> {
        if present && !kinds.contains(&raw.select) {
            let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
            return Err(format!(
                "`{key}` applies to `select = \"{}\"` only, not `{}`",
                names.join("\"` or `select = \""),
                raw.select.as_str()
            ));
        }
        Ok(())
    };
    only(
        raw.repository.is_some(),
        "repository",
        &[Selects::CacheRefs],
    )?;
    only(
        raw.keep_newest.is_some(),
        "keep_newest",
        &[Selects::CacheRefs],
    )?;
    only(
        raw.builder.is_some(),
        "builder",
        &[Selects::Mounts, Selects::BuilderRecords],
    )?;
    only(
        raw.max_bytes.is_some(),
        "max_bytes",
        &[Selects::BuilderRecords],
    )?;
    if raw.action == RuleAction::Keep && (raw.keep_newest.is_some() || raw.max_bytes.is_some()) {
        return Err("`keep_newest` and `max_bytes` say what a purge rule spares: use them with `action = \"purge\"`".to_owned());
    }
    for (key, value) in [
        ("pipeline", &raw.pipeline),
        ("project", &raw.project),
        ("repository", &raw.repository),
        ("builder", &raw.builder),
    ] {
        if value.as_deref().is_some_and(str::is_empty) {
            return Err(format!("`{key}` is empty"));
        }
    }
    let trust = raw
        .trust_level
        .as_deref()
        .map(|t| TrustSelector::parse(t, config))
        .transpose()?;
    let older_than = raw
        .older_than
        .as_deref()
        .map(|age| parse_age(age).map_err(|e| format!("`older_than` {e}")))
        .transpose()?;
    Ok(Rule {
        name,
        selects: raw.select,
        pipeline: raw.pipeline,
        project: raw.project,
        trust,
        trust_text: raw.trust_level,
        repository: raw.repository,
        builder: raw.builder,
        older_than,
        older_than_text: raw.older_than,
        keep_newest: raw.keep_newest,
        max_bytes: raw.max_bytes,
        action: raw.action,
    })
}

/// Parses an age such as `14d`, `36h`, `1w2d` or `90m` (units `s`, `m`, `h`, `d`, `w`) into
/// microseconds.
pub fn parse_age(value: &str) -> Result<Micros, String> {
    let bad = || format!("`{value}`: expected a number and a unit, such as `14d`, `36h` or `1w2d`");
    let mut total: Micros = 0;
    let mut digits = String::new();
    for c in value.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit: Micros = match c {
            's' => 1,
            'm' => 60,
            'h' => 3_600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return Err(bad()),
        };
        let n: Micros = digits.parse().map_err(|_| bad())?;
        digits.clear();
        total = n
            .checked_mul(unit * 1_000_000)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
    }
    if !digits.is_empty() || value.trim().is_empty() {
        return Err(bad());
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Policy, PolicyError> {
        Policy::parse(text, Path::new("p.toml"), &Config::default())
    }

    /// Rules keep file order, get default names and resolve ages and trust ranks.
    #[test]
    fn parses_rules_in_order_with_defaults() {
        let policy = parse(
            r#"
[[rule]]
select = "cache-refs"
trust_level = ">=release"
action = "keep"

[[rule]]
name = "old"
select = "cache-refs"
pipeline = "pr-*"
repository = "r.io/team/**"
older_than = "1w2d"
keep_newest = 3
action = "purge"

[[rule]]
select = "builder-records"
builder = "ci-*"
max_bytes = 1_000
action = "purge"
"#,
        )
        .unwrap();
        assert_eq!(policy.rules.len(), 3);
        assert_eq!(policy.rules[0].name, "rule 1");
        assert_eq!(policy.rules[0].trust, Some(TrustSelector::AtLeast(2)));
        assert_eq!(policy.rules[1].older_than, Some(9 * 86_400 * 1_000_000));
        assert_eq!(policy.rules[1].keep_newest, Some(3));
        assert_eq!(policy.rules[2].max_bytes, Some(1_000));
        assert!(policy.selects(Selects::BuilderRecords) && !policy.selects(Selects::Mounts));
    }

    /// Options that do not apply to what a rule selects are refused.
    #[test]
    fn options_must_fit_the_selection() {
        let err = parse("[[rule]]\nselect = \"mounts\"\nkeep_newest = 2\naction = \"purge\"\n")
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("`keep_newest` applies to `select = \"cache-refs\"` only"),
            "{err}"
        );
        let err = parse("[[rule]]\nselect = \"cache-refs\"\nkeep_newest = 2\naction = \"keep\"\n")
            .unwrap_err();
        assert!(
            err.to_string().contains("with `action = \"purge\"`"),
            "{err}"
        );
        let err = parse("[[rule]]\nselect = \"cache-refs\"\nbuilder = \"x\"\naction = \"keep\"\n")
            .unwrap_err();
        assert!(err.to_string().contains("`builder`"), "{err}");
    }

    /// Unknown trust levels, keys and ages are refused, naming file and line.
    #[test]
    fn unknown_levels_keys_and_ages_are_refused_with_their_place() {
        let err = parse(
            "[[rule]]\nselect = \"mounts\"\ntrust_level = \"<=secret\"\naction = \"purge\"\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown level `secret`"), "{err}");
        let err =
            parse("[[rule]]\nselect = \"mounts\"\naction = \"purge\"\nbogus = 1\n").unwrap_err();
        assert!(err.to_string().contains("`p.toml` line 4"), "{err}");
        let err = parse("[[rule]]\nselect = \"mounts\"\nolder_than = \"14\"\naction = \"purge\"\n")
            .unwrap_err();
        assert!(err.to_string().contains("`14`"), "{err}");
        assert!(parse("").unwrap_err().to_string().contains("no `[[rule]]`"));
    }

    /// Ages combine units; trust selectors compare ranks and never match an unknown level.
    #[test]
    fn ages_and_trust_selectors() {
        assert_eq!(parse_age("90m").unwrap(), 90 * 60 * 1_000_000);
        assert_eq!(parse_age("1d12h").unwrap(), 36 * 3_600 * 1_000_000);
        assert!(parse_age("d").is_err() && parse_age("3x").is_err() && parse_age("").is_err());
        let config = Config::default();
        let at_most = TrustSelector::parse("<=internal", &config).unwrap();
        assert!(at_most.matches(Some(0)) && at_most.matches(Some(1)) && !at_most.matches(Some(2)));
        assert!(!at_most.matches(None));
        assert!(
            TrustSelector::parse("release", &config)
                .unwrap()
                .matches(Some(2))
        );
    }
}
