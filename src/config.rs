//! The config file: builders, registries, trust levels, pipelines and the purge scope.
//!
//! Found by `--config`, then `CACHEWARDEN_CONFIG` (both arrive through clap), then
//! `$XDG_CONFIG_HOME/cachewarden/config.toml` (or `~/.config/...`). A missing file at the
//! default location is an empty config; a missing file that was named explicitly is an error.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::model::Driver;

/// The default trust levels, lowest first.
pub const DEFAULT_TRUST_LEVELS: [&str; 3] = ["untrusted", "internal", "release"];

/// The longest duration a setting in seconds may hold: ten years.
const MAX_DURATION_SECONDS: u64 = 10 * 365 * 24 * 3600;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config `{path}`: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config `{path}`{}: {message}", line.map(|l| format!(" line {l}")).unwrap_or_default())]
    Invalid {
        path: PathBuf,
        line: Option<usize>,
        message: String,
    },
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Trust levels, lowest first.
    #[serde(default)]
    pub trust_levels: Option<Vec<String>>,
    #[serde(default, rename = "builder")]
    pub builders: Vec<BuilderConfig>,
    #[serde(default, rename = "registry")]
    pub registries: Vec<RegistryConfig>,
    /// Pipelines' projects and trust ceilings, which no hook can raise.
    #[serde(default, rename = "pipeline")]
    pub pipelines: Vec<PipelineConfig>,
    /// What destructive actions may touch.
    #[serde(default)]
    pub scope: Scope,
    #[serde(default)]
    pub purge: PurgeConfig,
    /// What `wrap` and `check` do when the store cannot be read.
    #[serde(default)]
    pub containment: ContainmentConfig,
    /// OIDC token issuers the collector (`serve`) trusts.
    #[serde(default, rename = "issuer")]
    pub issuers: Vec<IssuerConfig>,
    /// Static per-runner tokens for runners without OIDC, stored hashed.
    #[serde(default, rename = "token")]
    pub tokens: Vec<TokenConfig>,
    /// Collector settings.
    #[serde(default)]
    pub server: ServerConfig,
    /// Audit settings.
    #[serde(default)]
    pub audit: AuditConfig,
    /// Store connection settings (PostgreSQL).
    #[serde(default)]
    pub store: StoreConfig,
    /// Where the file was read from, for messages.
    #[serde(skip)]
    pub path: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuilderConfig {
    pub name: String,
    #[serde(default)]
    pub driver: Option<Driver>,
    /// `unix:///path`, `tcp://host:port`.
    pub endpoint: String,
}

/// A `[[pipeline]]` entry: names one pipeline (`name`) or every pipeline a glob matches
/// (`pattern`, `*` within a `/`-separated component, `**` across), and says what the store
/// keeps for it whatever the hooks say.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub pattern: Option<String>,
    #[serde(default)]
    pub project: Option<String>,
    /// The highest level a run of the pipeline is recorded at.
    #[serde(default)]
    pub trust_level: Option<String>,
    /// Overrides `[containment] on_unavailable` for this pipeline.
    #[serde(default)]
    pub on_unavailable: Option<OnUnavailable>,
}

impl PipelineConfig {
    fn matches(&self, pipeline: &str) -> bool {
        match (&self.name, &self.pattern) {
            (Some(name), _) => name == pipeline,
            (None, Some(pattern)) => glob_match(pattern, pipeline),
            (None, None) => false,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// `host[:port]` as references name it.
    pub host: String,
    /// Talk plain HTTP instead of TLS.
    #[serde(default)]
    pub insecure: bool,
    /// Where credentials come from.
    #[serde(default)]
    pub credentials: CredentialSource,
    /// Send requests here (`http://127.0.0.1:5001`) instead of to the host, e.g. through a
    /// proxy; references, credentials and messages still name the host.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Repositories `audit registry` lists [default: those the store has recorded on this host].
    #[serde(default)]
    pub repositories: Vec<String>,
}

/// The purge scope: registries, repositories and builders cachewarden may act on. An action
/// outside it is reported and never executed. An empty scope allows nothing.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    /// Registry hosts (`host[:port]`).
    #[serde(default)]
    pub registries: Vec<String>,
    /// `registry/repository` patterns where `*` matches within a path component and `**`
    /// across components; empty means every repository of the listed registries.
    #[serde(default)]
    pub repositories: Vec<String>,
    /// Builder names.
    #[serde(default)]
    pub builders: Vec<String>,
}

impl Scope {
    /// Registry hosts match however they are spelt; repositories are lower case.
    pub fn allows_repository(&self, registry: &str, repository: &str) -> bool {
        if !self
            .registries
            .iter()
            .any(|r| r.eq_ignore_ascii_case(registry))
        {
            return false;
        }
        let name = format!("{registry}/{repository}").to_ascii_lowercase();
        self.repositories.is_empty()
            || self
                .repositories
                .iter()
                .any(|p| glob_match(&p.to_ascii_lowercase(), &name))
    }

    pub fn allows_builder(&self, builder: &str) -> bool {
        self.builders.iter().any(|b| b == builder)
    }
}

/// `*` matches within one `/`-separated component, `**` across components.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    fn go(p: &[u8], t: &[u8]) -> bool {
        match p {
            [] => t.is_empty(),
            [b'*', b'*', rest @ ..] => (0..=t.len()).any(|i| go(rest, &t[i..])),
            [b'*', rest @ ..] => {
                let stop = t.iter().position(|&c| c == b'/').unwrap_or(t.len());
                (0..=stop).any(|i| go(rest, &t[i..]))
            }
            [c, rest @ ..] => t.first() == Some(c) && go(rest, &t[1..]),
        }
    }
    go(pattern.as_bytes(), text.as_bytes())
}

/// The `[store]` table: how a PostgreSQL store is connected to. Durations are written as
/// `"5s"`, `"500ms"`, `"1m"`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// How long connecting may take, TLS and authentication included [default: 5s].
    #[serde(default, deserialize_with = "duration")]
    pub connect_timeout: Option<std::time::Duration>,
    /// How long one statement may run, `0s` for no limit [default: 30s].
    #[serde(default, deserialize_with = "duration")]
    pub statement_timeout: Option<std::time::Duration>,
}

/// A humantime duration (`"5s"`, `"1m 30s"`).
fn duration<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<std::time::Duration>, D::Error> {
    let text = String::deserialize(deserializer)?;
    humantime::parse_duration(&text).map(Some).map_err(|err| {
        serde::de::Error::custom(format!(
            "`{text}` is not a duration such as \"5s\" or \"500ms\": {err}"
        ))
    })
}

/// Purge settings.
/// The `[audit]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// The image `audit mounts` copies a mount out in, and the purge's mount listing runs in,
    /// before any base image recorded on the builder (those are the audited pipelines'
    /// choice): it needs `sh`, `tar`, `find` and `sha256sum`, and the builder must hold it
    /// or be able to pull it.
    #[serde(default)]
    pub helper_image: Option<String>,
    /// `audit builds`: how far (a fraction, 0 to 1) a pipeline step's cache hit rate may move
    /// against its own history before it is reported (CW008). Default 0.5.
    #[serde(default)]
    pub hit_rate_change: Option<f64>,
}

impl AuditConfig {
    pub fn hit_rate_change(&self) -> f64 {
        self.hit_rate_change.unwrap_or(0.5)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurgeConfig {
    /// Builder records last used this long before a builder's taint time are pruned too,
    /// allowing for clock skew between CI runners and builders.
    #[serde(default = "default_clock_skew")]
    pub clock_skew_seconds: u64,
    /// Actions in flight per registry and per builder, and manifest checks in flight per
    /// registry in a dry run.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// An execution renews its incident's lock every quarter of this; one not renewed for
    /// this long is taken over (its holder stopped, on whatever machine).
    #[serde(default = "default_lock_stale")]
    pub lock_stale_seconds: u64,
}

impl Default for PurgeConfig {
    fn default() -> Self {
        Self {
            clock_skew_seconds: default_clock_skew(),
            concurrency: default_concurrency(),
            lock_stale_seconds: default_lock_stale(),
        }
    }
}

impl PurgeConfig {
    /// Whether a purge at `at` would be in the future at `now`, beyond the clock skew allowed:
    /// a purge is recorded once it is done. `import --trust-level` holds an upload's run times
    /// to the same bound: an upload is written once its run is done.
    pub fn in_future(&self, at: crate::time::Micros, now: crate::time::Micros) -> bool {
        at > now.saturating_add(crate::time::seconds(self.clock_skew_seconds))
    }
}

fn default_clock_skew() -> u64 {
    300
}

fn default_concurrency() -> usize {
    8
}

fn default_lock_stale() -> u64 {
    600
}

/// Containment settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainmentConfig {
    /// What `wrap` and `check` do when an existing store cannot be read.
    #[serde(default)]
    pub on_unavailable: OnUnavailable,
}

/// An `[[issuer]]` entry: a CI OIDC token issuer whose tokens the collector accepts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// The `iss` claim, exactly.
    pub issuer: String,
    /// Where its keys are: an `https://` URL, `http://` only on loopback, or a local file.
    pub jwks: String,
    /// The `aud` the tokens must carry.
    pub audience: String,
    /// How claims map to pipeline, run and trust.
    #[serde(default)]
    pub kind: IssuerKind,
    /// The least time between two fetches of the key set on an unknown key id.
    #[serde(default = "default_jwks_refresh")]
    pub jwks_refresh_seconds: u64,
    /// For a `generic` issuer: the claim that names the pipeline [default: `sub`]
    /// (`pipeline_slug` for Buildkite).
    #[serde(default)]
    pub pipeline_claim: Option<String>,
    /// For a `generic` issuer: the claim that names the run (`build_id` for Buildkite).
    /// Without one, the hook names the run, and a job holding a token of the pipeline can
    /// record under any run id of it.
    #[serde(default)]
    pub run_claim: Option<String>,
    /// The pipelines (globs) its tokens may record. Required: a public issuer (GitHub,
    /// GitLab.com) signs tokens for every project on it, for any audience the job asks.
    #[serde(default)]
    pub pipelines: Vec<String>,
}

fn default_jwks_refresh() -> u64 {
    60
}

/// How an issuer's claims are read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IssuerKind {
    Github,
    Gitlab,
    /// The pipeline is the `sub` claim (or `pipeline_claim`); the run comes from the hook.
    #[default]
    Generic,
}

impl IssuerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Github => "github",
            Self::Gitlab => "gitlab",
            Self::Generic => "generic",
        }
    }
}

/// A `[[token]]` entry: a static bearer token for a runner without OIDC.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Names the token in logs and evidence.
    pub name: String,
    /// The SHA-256 of the token, lowercase hex.
    pub sha256: String,
    /// The pipelines it may record (`*` within a component, `**` across).
    pub pipelines: Vec<String>,
}

/// The `[server]` table: what the collector enforces.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// A run that claims to have started this long before its token was issued is
    /// time-suspect; with a token that has no issue time, this plus `late_grace_seconds`
    /// before the collector received it.
    #[serde(default = "default_max_run_seconds")]
    pub max_run_seconds: u64,
    /// Runs one identity may send a minute; 0 for no limit.
    #[serde(default = "default_runs_per_minute")]
    pub runs_per_minute: u32,
    /// How long after its expiry a spooled run's token is still accepted (the run is `late`).
    #[serde(default = "default_late_grace")]
    pub late_grace_seconds: u64,
    /// The longest a token may live (`exp` less `iat`; `late_grace_seconds` when unset): a run
    /// sent with one that lives longer is time-suspect, as a trace bounds when a run began by
    /// when its token was issued.
    #[serde(default)]
    pub max_token_life_seconds: Option<u64>,
    /// Clock difference allowed between runners and the collector.
    #[serde(default = "default_server_skew")]
    pub clock_skew_seconds: u64,
    /// Refused requests kept as evidence a minute; those over it are logged and counted only,
    /// so a flood of bad tokens cannot fill the disk; 0 keeps none.
    #[serde(default = "default_refusals_kept")]
    pub refusals_kept_per_minute: u32,
    /// How long a request's head (request line and headers) may take to arrive.
    #[serde(default = "default_head_seconds")]
    pub request_head_seconds: u64,
    /// How long a request's body may take to arrive once its head has.
    #[serde(default = "default_body_seconds")]
    pub request_body_seconds: u64,
}

impl ServerConfig {
    /// The longest a token may live: `max_token_life_seconds`, else `late_grace_seconds`.
    pub fn token_life_seconds(&self) -> u64 {
        self.max_token_life_seconds
            .unwrap_or(self.late_grace_seconds)
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_run_seconds: default_max_run_seconds(),
            runs_per_minute: default_runs_per_minute(),
            late_grace_seconds: default_late_grace(),
            max_token_life_seconds: None,
            clock_skew_seconds: default_server_skew(),
            refusals_kept_per_minute: default_refusals_kept(),
            request_head_seconds: default_head_seconds(),
            request_body_seconds: default_body_seconds(),
        }
    }
}

fn default_max_run_seconds() -> u64 {
    6 * 3600
}

fn default_runs_per_minute() -> u32 {
    600
}

fn default_late_grace() -> u64 {
    24 * 3600
}

fn default_server_skew() -> u64 {
    60
}

fn default_refusals_kept() -> u32 {
    600
}

fn default_head_seconds() -> u64 {
    30
}

fn default_body_seconds() -> u64 {
    60
}

/// What containment does when it cannot tell whether an input is tainted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnUnavailable {
    /// Refuse (exit 5): nothing is built from, or passed as, an input that was not checked.
    #[default]
    FailClosed,
    /// Go on with a warning.
    FailOpen,
}

impl OnUnavailable {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FailClosed => "fail-closed",
            Self::FailOpen => "fail-open",
        }
    }
}

/// Where registry credentials come from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CredentialSource {
    /// `~/.docker/config.json` (or `$DOCKER_CONFIG`), including credential helpers.
    #[default]
    DockerConfig,
    /// No credentials.
    Anonymous,
}

impl Config {
    /// Loads the config: `explicit` is `--config` / `CACHEWARDEN_CONFIG`.
    pub fn load(explicit: Option<&Path>) -> Result<Self, ConfigError> {
        let (path, required) = match explicit {
            Some(path) => (path.to_path_buf(), true),
            None => match default_path() {
                Some(path) => (path, false),
                None => return Ok(Self::default()),
            },
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if !required && err.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self::default());
            }
            Err(source) => return Err(ConfigError::Read { path, source }),
        };
        Self::parse(&text, &path)
    }

    /// Parses config text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let mut config: Self = toml::from_str(text).map_err(|err| {
            let start = err.span().map(|span| span.start.min(text.len()));
            let line = start.map(|start| text[..start].matches('\n').count() + 1);
            // Name the key when the error points into a `key = value` line.
            let key = start.and_then(|start| {
                let line_text = text[text[..start].rfind('\n').map_or(0, |i| i + 1)..]
                    .lines()
                    .next()?;
                let (key, _) = line_text.split_once('=')?;
                Some(key.trim().to_owned()).filter(|k| !k.is_empty() && !k.starts_with('['))
            });
            let message = err.message().trim().to_owned();
            ConfigError::Invalid {
                path: path.to_path_buf(),
                line,
                message: match key {
                    Some(key) if !message.contains(&key) => format!("key `{key}`: {message}"),
                    _ => message,
                },
            }
        })?;
        config.path = Some(path.to_path_buf());
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: self.path.clone().unwrap_or_default(),
            line: None,
            message,
        };
        if let Some(levels) = &self.trust_levels {
            if levels.is_empty() {
                return Err(invalid("`trust_levels` is empty".into()));
            }
            for (i, level) in levels.iter().enumerate() {
                if levels[..i].contains(level) {
                    return Err(invalid(format!("`trust_levels` names `{level}` twice")));
                }
            }
        }
        // Durations past any run's length are mistakes, and would overflow as micros.
        for (name, seconds) in [
            (
                "[purge] clock_skew_seconds",
                Some(self.purge.clock_skew_seconds),
            ),
            (
                "[purge] lock_stale_seconds",
                Some(self.purge.lock_stale_seconds),
            ),
            (
                "[server] max_run_seconds",
                Some(self.server.max_run_seconds),
            ),
            (
                "[server] late_grace_seconds",
                Some(self.server.late_grace_seconds),
            ),
            (
                "[server] max_token_life_seconds",
                self.server.max_token_life_seconds,
            ),
            (
                "[server] clock_skew_seconds",
                Some(self.server.clock_skew_seconds),
            ),
        ] {
            if let Some(seconds) = seconds.filter(|&s| s > MAX_DURATION_SECONDS) {
                return Err(invalid(format!(
                    "`{name}` is {seconds}: at most {MAX_DURATION_SECONDS} (ten years)"
                )));
            }
        }
        if let Some(change) = self.audit.hit_rate_change
            && !(0.0..=1.0).contains(&change)
        {
            return Err(invalid(format!(
                "`[audit] hit_rate_change` is {change}: it is a fraction, from 0 to 1"
            )));
        }
        for (i, builder) in self.builders.iter().enumerate() {
            if self.builders[..i].iter().any(|b| b.name == builder.name) {
                return Err(invalid(format!(
                    "`builder` `{}` is defined twice",
                    builder.name
                )));
            }
        }
        for (i, pipeline) in self.pipelines.iter().enumerate() {
            let what = match (&pipeline.name, &pipeline.pattern) {
                (Some(name), None) => format!("`pipeline` `{name}`"),
                (None, Some(pattern)) => format!("`pipeline` pattern `{pattern}`"),
                _ => {
                    return Err(invalid(format!(
                        "`pipeline` entry {} needs exactly one of `name` and `pattern`",
                        i + 1
                    )));
                }
            };
            if let Some(name) = &pipeline.name
                && self.pipelines[..i]
                    .iter()
                    .any(|p| p.name.as_ref() == Some(name))
            {
                return Err(invalid(format!("{what} is defined twice")));
            }
            if let Some(level) = &pipeline.trust_level
                && self.trust_rank(level).is_none()
            {
                return Err(invalid(format!(
                    "{what}: `trust_level` `{level}` is not one of the configured levels: {}",
                    self.trust_levels().join(", ")
                )));
            }
        }
        for issuer in &self.issuers {
            if self
                .issuers
                .iter()
                .filter(|i| i.issuer == issuer.issuer)
                .count()
                > 1
            {
                return Err(invalid(format!(
                    "`issuer` `{}` is defined twice",
                    issuer.issuer
                )));
            }
            if let Err(message) = crate::serve::jwks::JwksSource::parse(&issuer.jwks) {
                return Err(invalid(format!("`issuer` `{}`: {message}", issuer.issuer)));
            }
            if issuer.jwks_refresh_seconds == 0 {
                return Err(invalid(format!(
                    "`issuer` `{}`: `jwks_refresh_seconds` is 0: a token with a made-up key id would fetch the key set on every request; give at least 1",
                    issuer.issuer
                )));
            }
            if issuer.pipelines.is_empty() {
                return Err(invalid(format!(
                    "`issuer` `{}` lists no `pipelines`: every project on that CI can get a token for any audience; list the pipelines (globs) its tokens may record, e.g. `pipelines = [\"acme/**\"]`",
                    issuer.issuer
                )));
            }
        }
        for token in &self.tokens {
            let hex = &token.sha256;
            if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                return Err(invalid(format!(
                    "`token` `{}`: `sha256` is not 64 lowercase hex digits",
                    token.name
                )));
            }
        }
        Ok(())
    }

    /// The `[[pipeline]]` entry for a pipeline: the one with its exact `name`, else the first
    /// whose `pattern` matches it.
    pub fn pipeline(&self, name: &str) -> Option<&PipelineConfig> {
        self.pipelines
            .iter()
            .find(|p| p.name.as_deref() == Some(name))
            .or_else(|| {
                self.pipelines
                    .iter()
                    .find(|p| p.name.is_none() && p.matches(name))
            })
    }

    /// Trust levels, lowest first.
    pub fn trust_levels(&self) -> Vec<String> {
        match &self.trust_levels {
            Some(levels) => levels.clone(),
            None => DEFAULT_TRUST_LEVELS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
        }
    }

    /// The trust levels above the lowest: those whose runs are trusted to vouch for what they
    /// pushed.
    pub fn trusted_levels(&self) -> Vec<String> {
        self.trust_levels().into_iter().skip(1).collect()
    }

    /// The rank of a trust level (0 is lowest), or `None` when the config does not know it.
    pub fn trust_rank(&self, level: &str) -> Option<usize> {
        self.trust_levels().iter().position(|l| l == level)
    }

    pub fn builder(&self, name: &str) -> Option<&BuilderConfig> {
        self.builders.iter().find(|b| b.name == name)
    }

    /// The Docker Engine the config names at `endpoint` (spelled any way the client reads as
    /// that engine): one engine is one builder, under one name, whichever way a build reaches
    /// it.
    pub fn engine_at(&self, endpoint: &str) -> Option<&BuilderConfig> {
        self.builders.iter().find(|b| {
            matches!(b.driver, None | Some(crate::model::Driver::Docker))
                && crate::ingest::builder::same_engine(endpoint, &b.endpoint)
        })
    }

    pub fn registry(&self, host: &str) -> Option<&RegistryConfig> {
        self.registries
            .iter()
            .find(|r| r.host.eq_ignore_ascii_case(host))
    }

    /// What containment does for `pipeline` (when known) when the store cannot be read: the
    /// matching `[[pipeline]]` entry's `on_unavailable`, else the `[containment]` table's,
    /// fail-closed by default.
    pub fn on_unavailable_for(&self, pipeline: Option<&str>) -> OnUnavailable {
        pipeline
            .and_then(|name| self.pipeline(name))
            .and_then(|p| p.on_unavailable)
            .unwrap_or(self.containment.on_unavailable)
    }
}

fn default_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("cachewarden").join("config.toml"))
}

/// The default database location: `$XDG_DATA_HOME/cachewarden/cachewarden.db`.
pub fn default_db_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))?;
    Some(base.join("cachewarden").join("cachewarden.db"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `[store]` timeouts are humantime durations; a bare number or a misspelt key is refused
    /// naming the key.
    #[test]
    fn store_timeouts_are_durations() {
        let config = Config::parse(
            "[store]\nconnect_timeout = \"2s\"\nstatement_timeout = \"1m 30s\"\n",
            Path::new("c.toml"),
        )
        .unwrap();
        let secs = std::time::Duration::from_secs;
        assert_eq!(config.store.connect_timeout, Some(secs(2)));
        assert_eq!(config.store.statement_timeout, Some(secs(90)));
        assert_eq!(Config::default().store.connect_timeout, None);
        let err = Config::parse("[store]\nconnect_timeout = \"soon\"\n", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`soon` is not a duration"), "{err}");
        assert!(Config::parse("[store]\nconnect_timeout = 5\n", Path::new("c.toml")).is_err());
        assert!(Config::parse("[store]\ntimeout = \"5s\"\n", Path::new("c.toml")).is_err());
    }

    /// `[audit] helper_image` is read, and a misspelt key in `[audit]` is refused.
    #[test]
    fn audit_table_names_the_helper_image() {
        let config = Config::parse(
            "[audit]\nhelper_image = \"busybox:1.36\"\n",
            Path::new("c.toml"),
        )
        .unwrap();
        assert_eq!(config.audit.helper_image.as_deref(), Some("busybox:1.36"));
        assert!(Config::parse("[audit]\nhelper = \"x\"\n", Path::new("c.toml")).is_err());
    }

    /// `[audit] hit_rate_change` is a fraction: read when it is one, refused when it is not.
    #[test]
    fn hit_rate_change_is_a_fraction() {
        let config =
            Config::parse("[audit]\nhit_rate_change = 0.25\n", Path::new("c.toml")).unwrap();
        assert_eq!(config.audit.hit_rate_change(), 0.25);
        assert!(Config::parse("[audit]\nhit_rate_change = 2.0\n", Path::new("c.toml")).is_err());
    }

    /// A duration in seconds past ten years is refused, naming the setting and the value; ten
    /// years is read.
    #[test]
    fn durations_past_ten_years_are_refused() {
        for (table, key) in [
            ("purge", "clock_skew_seconds"),
            ("purge", "lock_stale_seconds"),
            ("server", "max_run_seconds"),
            ("server", "late_grace_seconds"),
            ("server", "max_token_life_seconds"),
            ("server", "clock_skew_seconds"),
        ] {
            let huge = i64::MAX;
            let text = format!("[{table}]\n{key} = {huge}\n");
            let err = Config::parse(&text, Path::new("c.toml"))
                .map(|_| ())
                .unwrap_err();
            assert!(
                err.to_string()
                    .contains(&format!("`[{table}] {key}` is {huge}: at most")),
                "{err}"
            );
            let text = format!("[{table}]\n{key} = {MAX_DURATION_SECONDS}\n");
            assert!(Config::parse(&text, Path::new("c.toml")).is_ok(), "{key}");
        }
    }

    #[test]
    fn parses_builders_registries_and_levels() {
        let config = Config::parse(
            r#"
trust_levels = ["fork", "branch", "main"]

[[builder]]
name = "ci-1"
driver = "docker"
endpoint = "unix:///run/docker.sock"

[[registry]]
host = "localhost:5000"
insecure = true
credentials = "anonymous"
"#,
            Path::new("c.toml"),
        )
        .unwrap();
        assert_eq!(config.trust_rank("branch"), Some(1));
        assert_eq!(config.builder("ci-1").unwrap().driver, Some(Driver::Docker));
        assert!(config.registry("localhost:5000").unwrap().insecure);
        assert!(config.registry("LocalHost:5000").unwrap().insecure);
    }

    #[test]
    fn scope_patterns_match_components() {
        let scope = Scope {
            registries: vec!["r.io".into()],
            repositories: vec!["r.io/team/*".into(), "r.io/deep/**".into()],
            builders: vec!["ci-1".into()],
        };
        assert!(scope.allows_repository("r.io", "team/app"));
        assert!(!scope.allows_repository("r.io", "team/app/sub"));
        assert!(scope.allows_repository("r.io", "deep/a/b"));
        assert!(!scope.allows_repository("other.io", "team/app"));
        assert!(scope.allows_builder("ci-1") && !scope.allows_builder("ci-2"));
        // A host in the config spelt in capitals is the same registry.
        let scope = Scope {
            registries: vec!["R.IO".into()],
            repositories: vec!["R.io/team/*".into()],
            builders: Vec::new(),
        };
        assert!(scope.allows_repository("r.io", "team/app"));
    }

    /// Containment fails closed unless the config says otherwise.
    #[test]
    fn containment_fails_closed_by_default() {
        let empty = Config::parse("", Path::new("c.toml")).unwrap();
        assert_eq!(
            empty.on_unavailable_for(Some("p")),
            OnUnavailable::FailClosed
        );
        let open = Config::parse(
            "[containment]\non_unavailable = \"fail-open\"\n",
            Path::new("c.toml"),
        )
        .unwrap();
        assert_eq!(open.on_unavailable_for(None), OnUnavailable::FailOpen);
        let mixed = Config::parse(
            "[containment]\non_unavailable = \"fail-open\"\n\n\
             [[pipeline]]\nname = \"release\"\non_unavailable = \"fail-closed\"\n\n\
             [[pipeline]]\npattern = \"pr-*\"\ntrust_level = \"untrusted\"\n",
            Path::new("c.toml"),
        )
        .unwrap();
        assert_eq!(
            mixed.on_unavailable_for(Some("release")),
            OnUnavailable::FailClosed
        );
        assert_eq!(
            mixed.on_unavailable_for(Some("pr-1")),
            OnUnavailable::FailOpen,
            "an entry without on_unavailable leaves the table's"
        );
        assert_eq!(mixed.on_unavailable_for(None), OnUnavailable::FailOpen);
        let err = Config::parse(
            "[containment]\non_unavailable = \"sometimes\"\n",
            Path::new("c.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("on_unavailable"), "{err}");
    }

    /// An issuer whose keys would come over plain HTTP from another host or that lists no
    /// pipelines, or a static token stored other than as its SHA-256, is refused when the
    /// config loads.
    #[test]
    fn issuers_and_tokens_are_checked_when_loaded() {
        let config = Config::parse(
            "[[issuer]]\nissuer = \"https://gitlab.example\"\njwks = \"/etc/jwks.json\"\n\
             audience = \"cw\"\nkind = \"gitlab\"\npipelines = [\"grp/**\"]\n\n\
             [server]\nruns_per_minute = 5\n",
            Path::new("c.toml"),
        )
        .unwrap();
        assert_eq!(config.issuers[0].kind, IssuerKind::Gitlab);
        assert_eq!(config.issuers[0].jwks_refresh_seconds, 60);
        assert_eq!(config.server.runs_per_minute, 5);
        assert_eq!(config.server.late_grace_seconds, 86400);
        for bad in [
            "[[issuer]]\nissuer = \"i\"\njwks = \"http://jwks.example/keys\"\naudience = \"a\"\n",
            "[[token]]\nname = \"t\"\nsha256 = \"secret-in-the-clear\"\npipelines = [\"*\"]\n",
            "[[issuer]]\nissuer = \"i\"\njwks = \"/a\"\naudience = \"a\"\npipelines = [\"*\"]\n\n\
             [[issuer]]\nissuer = \"i\"\njwks = \"/b\"\naudience = \"a\"\npipelines = [\"*\"]\n",
            // Any project of a public CI can get a token: an issuer names its pipelines.
            "[[issuer]]\nissuer = \"i\"\njwks = \"/a\"\naudience = \"a\"\n",
            // A made-up key id would fetch the key set on every request.
            "[[issuer]]\nissuer = \"i\"\njwks = \"/a\"\naudience = \"a\"\npipelines = [\"*\"]\n\
             jwks_refresh_seconds = 0\n",
        ] {
            assert!(Config::parse(bad, Path::new("c.toml")).is_err(), "{bad}");
        }
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let err = Config::parse(
            "[[builder]]\nname = \"a\"\nendpoint = \"x\"\nbogus = 1\n",
            Path::new("c.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("`c.toml` line 4"), "{err}");
        assert!(err.contains("bogus"), "{err}");
    }

    /// `[[pipeline]]` entries: an exact name wins over an earlier pattern, and an entry naming
    /// an unknown level or neither `name` nor `pattern` is refused.
    #[test]
    fn pipeline_entries_match_by_name_then_pattern() {
        let config = Config::parse(
            "[[pipeline]]\npattern = \"forks-*\"\ntrust_level = \"untrusted\"\n\n\
             [[pipeline]]\nname = \"forks-main\"\nproject = \"web\"\ntrust_level = \"release\"\n",
            Path::new("c.toml"),
        )
        .unwrap();
        let level = |name: &str| config.pipeline(name).and_then(|p| p.trust_level.clone());
        assert_eq!(level("forks-pr").as_deref(), Some("untrusted"));
        assert_eq!(level("forks-main").as_deref(), Some("release"));
        assert_eq!(level("web-release"), None);
        for bad in [
            "[[pipeline]]\nname = \"p\"\ntrust_level = \"secret\"\n",
            "[[pipeline]]\ntrust_level = \"release\"\n",
            "[[pipeline]]\nname = \"p\"\npattern = \"p*\"\n",
        ] {
            let err = Config::parse(bad, Path::new("c.toml"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("pipeline"), "{err}");
        }
    }
}
