//! The command line, as types only.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::model::{Driver, RunStatus};

/// Provenance and incident response for BuildKit build caches.
///
/// Exit status: 0 success, 1 findings or partial failure, 2 usage error or bad input,
/// 3 store missing or unusable (locked, unreadable, older or newer schema), 4 remote service
/// unreachable, 5 refused by policy, 70 internal error. `wrap` exits with its command's own
/// status.
#[derive(Debug, Parser)]
#[command(name = "cachewarden", version, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// The [`GlobalArgs`] read from the environment that name a file, by argument id: one set but
/// empty is as if unset (an undefined CI secret arrives empty), for every command, so that
/// `wrap` still runs its build.
const FILE_VARS: [(&str, &str); 2] = [("db", "CACHEWARDEN_DB"), ("config", "CACHEWARDEN_CONFIG")];

impl Cli {
    /// Parses the process's arguments and environment ([`FILE_VARS`]); on a usage error, prints
    /// clap's message and exits 2.
    pub fn parse_process() -> Self {
        let mut command = <Self as clap::CommandFactory>::command();
        for (id, var) in FILE_VARS {
            if std::env::var_os(var).is_some_and(|value| value.is_empty()) {
                command = command.mut_arg(id, |arg| arg.env(None));
            }
        }
        let matches = command.try_get_matches().unwrap_or_else(|err| exit_on(err));
        <Self as clap::FromArgMatches>::from_arg_matches(&matches)
            .unwrap_or_else(|err| exit_on(err))
    }
}

/// Ends the process on a parse error: help and version as clap prints them, any other error
/// on one line (what clap says before its usage and its pointer to `--help`), exit 2.
fn exit_on(err: clap::Error) -> ! {
    use clap::error::ErrorKind;
    if matches!(
        err.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        err.exit();
    }
    let text = err.render().to_string();
    let said: Vec<&str> = text
        .lines()
        .map(str::trim)
        .take_while(|line| !line.starts_with("Usage:") && !line.starts_with("For more information"))
        .filter(|line| !line.is_empty())
        .collect();
    eprintln!("{}", crate::report::escape::Line(&said.join(" ")));
    std::process::exit(i32::from(crate::ExitStatus::BadInput.code()));
}

/// Options every command takes, shown under their own heading.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// The provenance database [default: $XDG_DATA_HOME/cachewarden/cachewarden.db]
    #[arg(long, global = true, env = "CACHEWARDEN_DB", value_name = "PATH")]
    pub db: Option<PathBuf>,
    /// The config file [default: $XDG_CONFIG_HOME/cachewarden/config.toml]
    #[arg(long, global = true, env = "CACHEWARDEN_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Print only errors.
    #[arg(long, short, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Print more detail on stderr.
    #[arg(long, short, global = true)]
    pub verbose: bool,
    /// Hide progress bars.
    #[arg(
        long,
        global = true,
        env = "CACHEWARDEN_NO_PROGRESS",
        value_parser = clap::builder::FalseyValueParser::new()
    )]
    pub no_progress: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Record one build's provenance (the CI hook).
    Record(RecordArgs),
    /// Run a `docker build` or `docker push` command and record what it did.
    Wrap(WrapArgs),
    /// Import provenance from a JSON Lines file (`-` for stdin).
    Import(ImportArgs),
    /// Export the whole store as JSON Lines.
    Export(ExportArgs),
    /// Find everything downstream of a compromised pipeline, run, cache, mount, builder or image.
    Trace(TraceArgs),
    /// List recorded pipelines, runs, builders or mounts, or incidents, newest first.
    Ls(LsArgs),
    /// Check references against open incidents (for CI steps that do not use `wrap`).
    Check(CheckArgs),
    /// Open, purge, inspect and report incidents.
    #[command(subcommand)]
    Incident(IncidentCommand),
    /// Record that a mount cache or a builder's cache was purged outside cachewarden.
    MarkPurged(MarkPurgedArgs),
    /// Read a builder's build history into the store (BuildKit 0.11 and later).
    ///
    /// Builds a hook recorded gain what the history adds; builds none recorded become runs of
    /// the untrusted pipeline `unrecorded@BUILDER`, which traces reach. A build is matched to its run by the build ref the hook saw (buildx's
    /// `buildx.build.ref`), else by builder, Dockerfile and overlapping time; what the history
    /// adds is appended as events of source `build-history`, never rewriting the run. A build
    /// already collected is not collected again. BuildKit keeps 48 hours or 50 builds by
    /// default: run it from cron or a timer, like `sweep`. A record that does not check out is
    /// skipped with a warning (exit 1); a builder that keeps no history (Docker 20.10) exits 4.
    Collect(CollectArgs),
    /// Purge caches, mounts and builder records by a policy of ordered rules (a dry run unless
    /// `--execute`).
    Sweep(SweepArgs),
    /// Compare what registries hold with what recorded pipelines exported, and what cache
    /// mounts hold with their own checksums and earlier snapshots.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Upgrade the store's schema (read commands never change it), or copy a whole store to
    /// another (SQLite or PostgreSQL).
    #[command(subcommand)]
    Db(DbCommand),
    /// Send the runs spooled while the collector could not be reached.
    Flush(FlushArgs),
    /// Run the collector: accept runs from CI hooks over HTTP, with identity from CI OIDC
    /// tokens, into the store.
    Serve(ServeArgs),
    /// Check the tamper-evident chain of recorded runs, and print its head.
    ///
    /// Recomputes every entry from the stored runs and events. Exit 0 when the chain is
    /// intact (the head and length are printed: keep the head outside the store), 1 at the
    /// first break, named by entry number and run.
    VerifyLog(VerifyLogArgs),
    /// Generate synthetic fleet histories and measure (for benchmarks).
    #[command(hide = true)]
    Bench(BenchArgs),
}

/// `flush`'s flags.
#[derive(Debug, Clone, Args)]
pub struct FlushArgs {
    /// Send only the runs spooled for this collector [default: each to the collector it was
    /// spooled for]
    #[arg(long, env = "CACHEWARDEN_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// The spool [default: $XDG_STATE_HOME/cachewarden/spool]
    #[arg(long, env = "CACHEWARDEN_SPOOL", value_name = "DIR")]
    pub spool: Option<PathBuf>,
}

/// `serve`'s flags.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// The address to listen on (`127.0.0.1:8443`; port 0 picks a free one, logged at start).
    #[arg(long, value_name = "ADDR")]
    pub listen: std::net::SocketAddr,
    /// The TLS certificate chain (PEM); without it the collector speaks plain HTTP, for use
    /// behind a TLS-terminating proxy.
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The TLS private key (PEM).
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

/// Output formats for commands that print one result.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Text for people.
    #[default]
    Text,
    /// JSON with a schema under `schema/`.
    Json,
}

/// What a build says about its run: read by `record` and by `wrap`, which also reads the build
/// command itself.
#[derive(Debug, Clone, Default, Args)]
pub struct RunArgs {
    /// The pipeline (CI workflow or project pipeline) [default: from the CI environment]
    #[arg(long, value_name = "NAME")]
    pub pipeline: Option<String>,
    /// The CI run id with its attempt [default: from the CI environment]
    #[arg(long = "run", value_name = "ID")]
    pub run_id: Option<String>,
    /// Tells apart several builds of one CI job [default: Dockerfile path and target]
    #[arg(long, value_name = "NAME")]
    pub step: Option<String>,
    /// The project the pipeline builds (kept from the config, else from the first record).
    #[arg(long, value_name = "NAME")]
    pub project: Option<String>,
    /// The run's trust level (`untrusted`, `internal`, `release`, or the config's list), at most
    /// the pipeline's ceiling; the lowest for pull requests and unprotected refs
    /// [default: the pipeline's ceiling]
    #[arg(long, value_name = "LEVEL")]
    pub trust_level: Option<String>,
    /// The builder [env: CACHEWARDEN_BUILDER; default: derived from DOCKER_HOST or the docker context]
    #[arg(long, value_name = "NAME")]
    pub builder: Option<String>,
    /// The builder's driver.
    #[arg(long, value_enum, value_name = "DRIVER")]
    pub driver: Option<Driver>,
    /// The commit that was built.
    #[arg(long, value_name = "SHA")]
    pub commit: Option<String>,
    /// The git ref that was built.
    #[arg(long, value_name = "REF")]
    pub git_ref: Option<String>,
    /// A cache the build imported, in any form buildx accepts.
    #[arg(long, value_name = "REF")]
    pub cache_from: Vec<String>,
    /// A cache the build exported, in any form buildx accepts.
    #[arg(long, value_name = "REF")]
    pub cache_to: Vec<String>,
    /// An image the build produced.
    #[arg(long, value_name = "REF")]
    pub image: Vec<String>,
    /// A base image the build used.
    #[arg(long, value_name = "REF")]
    pub base_image: Vec<String>,
    /// A cache mount the build used: `ID[,readonly]`.
    #[arg(long = "mount", value_name = "ID")]
    pub mounts: Vec<String>,
    /// The Dockerfile that was built: its cache mounts and base images are recorded.
    #[arg(long, value_name = "PATH")]
    pub dockerfile: Option<PathBuf>,
    /// The Dockerfile target stage.
    #[arg(long, value_name = "STAGE")]
    pub target: Option<String>,
    /// A build argument, as given to the build: `KEY=VALUE`.
    #[arg(long, value_name = "KEY=VALUE")]
    pub build_arg: Vec<String>,
    /// The platforms the build targets, as given to it (`linux/arm64`, comma-separated or
    /// repeated): they set the Dockerfile's `TARGETPLATFORM`, `TARGETOS`, ...
    /// [default: the builder's, taken as linux/amd64]
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Vec<String>,
    #[command(flatten)]
    pub collector: CollectorArgs,
}

/// Sending runs to a collector (`cachewarden serve`) instead of writing a local store.
#[derive(Debug, Clone, Default, Args)]
pub struct CollectorArgs {
    /// Send the run to this collector (`https://collector.example:8443`) instead of writing
    /// the local store; the token names the pipeline and run. Its token comes from
    /// CACHEWARDEN_TOKEN, or on GitHub Actions from the job's OIDC token
    #[arg(long, env = "CACHEWARDEN_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// The audience to request the GitHub Actions OIDC token for
    #[arg(
        long,
        env = "CACHEWARDEN_AUDIENCE",
        value_name = "AUD",
        default_value = "cachewarden"
    )]
    pub audience: String,
    /// Where runs that could not be sent wait for the next hook or `cachewarden flush`
    /// [default: $XDG_STATE_HOME/cachewarden/spool]
    #[arg(long, env = "CACHEWARDEN_SPOOL", value_name = "DIR")]
    pub spool: Option<PathBuf>,
}

/// `record`'s flags: the run, and what a hook that runs after the build must say itself.
#[derive(Debug, Clone, Default, Args)]
pub struct RecordArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// When the build started: an RFC 3339 time or a duration before now (`5m`) [default: the
    /// finish time]
    #[arg(long, value_name = "TIME")]
    pub started_at: Option<String>,
    /// When the build finished: an RFC 3339 time or a duration before now [default: now]
    #[arg(long, value_name = "TIME")]
    pub finished_at: Option<String>,
    /// The build's outcome.
    #[arg(long, value_enum, default_value_t = RunStatus::Succeeded)]
    pub status: RunStatus,
    /// The JSON that `docker buildx build --metadata-file` wrote.
    #[arg(long, value_name = "PATH")]
    pub metadata_file: Option<PathBuf>,
    /// Resolve references given by tag to digests through the registry.
    #[arg(long)]
    pub resolve: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: OutputFormat,
}

/// `collect`'s flags.
#[derive(Debug, Args)]
pub struct CollectArgs {
    /// The builder, as recorded or named in a `[[builder]]` table of the config.
    #[arg(long, value_name = "NAME")]
    pub builder: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: OutputFormat,
}

/// `wrap` takes only what it reads: it measures the times and the outcome itself, reads the
/// metadata file it asks the build for, and pins inputs on its own, so `record`'s `--status`,
/// `--started-at`, `--finished-at`, `--metadata-file`, `--resolve` and `--format` are refused.
#[derive(Debug, Args)]
pub struct WrapArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Run the build even though a cache or base image it uses is tainted in an open incident.
    #[arg(long)]
    pub allow_tainted: bool,
    /// The command to run: `docker build ...`, `docker buildx build ...` or `docker push REF`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// The most lines `import --batch-size` takes: a batch is held in memory whole.
pub const MAX_BATCH_SIZE: u64 = 1_000_000;

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The JSON Lines file (`-` for stdin); format in `schema/provenance-line.schema.json`,
    /// lines of at most 1 MiB.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Lines per transaction, from 1 to 1,000,000.
    #[arg(
        long,
        default_value_t = 50_000,
        value_name = "N",
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=MAX_BATCH_SIZE)
    )]
    pub batch_size: usize,
    /// Record every run, and every pipeline's first ceiling, at most at this level, whatever
    /// the file says, and no builder's driver or endpoint: for an upload from a job whose code
    /// nobody reviewed (a pull request), which that code could have written. A run dated after
    /// the import began (beyond `[purge] clock_skew_seconds`) is refused. Needs `--run`.
    #[arg(
        long,
        value_name = "LEVEL",
        conflicts_with = "purges",
        requires = "runs"
    )]
    pub trust_level: Option<String>,
    /// With `--trust-level`: the job's own run (repeatable), named as the CI names it, not as
    /// the file does (`pipeline/run[/step]`, as `trace --run` takes it). A line of any other
    /// run, or of another pipeline, is refused: the job could otherwise claim a run key
    /// another job will record, or add to a run it never made.
    #[arg(
        long = "run",
        value_name = "PIPELINE/RUN[/STEP]",
        requires = "trust_level"
    )]
    pub runs: Vec<String>,
    /// Record the file's purge lines: for a store's own export. A purge narrows every later
    /// trace, and a CI job's upload never carries one, so without this a purge line is
    /// refused; a purge time in the future is refused either way.
    #[arg(long)]
    pub purges: bool,
    /// Take pipeline, run, step and builder names as a store's own export holds them: with
    /// white space at an end or in another Unicode normalization form than C, as recorded
    /// before such names were refused. Without this, a name that would print as another is
    /// refused (exit 2), as `record` refuses it: a CI job's upload was written by the code it
    /// built.
    #[arg(long, conflicts_with = "trust_level")]
    pub stored_names: bool,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Write to this file instead of stdout: a regular file is replaced whole once written; a
    /// FIFO or device (`/dev/stdout`) is written to. Never the store.
    #[arg(long, short, value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// Only this run (repeatable), with its pipeline and builder: what a CI job recorded, to
    /// upload for `import` elsewhere. Named `pipeline/run[/step]` as `trace --run` takes it; an
    /// unknown run is refused.
    #[arg(long = "run", value_name = "PIPELINE/RUN[/STEP]")]
    pub runs: Vec<String>,
}

#[derive(Debug, Args)]
pub struct VerifyLogArgs {
    /// A head kept outside the store (64 hex digits): the chain must reach it, which catches a
    /// chain rewritten whole in the database.
    #[arg(long, value_name = "HASH")]
    pub head: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: OutputFormat,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum TraceFormat {
    /// Counts per kind, then the tainted entities with when and how each became tainted.
    #[default]
    Text,
    /// JSON, shape in `schema/trace.schema.json`.
    Json,
    /// Graphviz of the blast-radius subgraph, seeds highlighted.
    Dot,
}

/// Seeds of a trace; several may be combined.
#[derive(Debug, Clone, Default, Args)]
pub struct SeedArgs {
    /// Runs of this pipeline whose start lies in `--since`/`--until`.
    #[arg(long, value_name = "NAME")]
    pub pipeline: Vec<String>,
    /// A run: `pipeline/run[/step]` as output names it, with `/` and `%` inside a part written
    /// `%2F` and `%25`.
    #[arg(long = "run", value_name = "PIPELINE/RUN[/STEP]")]
    pub runs: Vec<String>,
    /// A cache ref by digest, or a tag meaning every digest recorded for it.
    #[arg(long, value_name = "REF")]
    pub cache_ref: Vec<String>,
    /// A mount cache: `BUILDER:ID` (the Dockerfile id or its LLB form). Read at each `:`, as
    /// builder names and ids can hold one: every mount the store holds under a reading.
    #[arg(long, value_name = "BUILDER:ID")]
    pub mount: Vec<String>,
    /// A builder whose local cache is compromised.
    #[arg(long, value_name = "NAME")]
    pub builder: Vec<String>,
    /// An image by digest: `REF@DIGEST`.
    #[arg(long, value_name = "REF@DIGEST")]
    pub image: Vec<String>,
    /// Lower bound (inclusive) of the seed window: an RFC 3339 time, a UTC date (its
    /// midnight) or a duration before now (`3d`, `12h`, `30m`, `2w`).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Upper bound (inclusive) of the seed window: an RFC 3339 time, a UTC date (through its
    /// last microsecond) or a duration before now.
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
}

#[derive(Debug, Args)]
pub struct TraceArgs {
    #[command(flatten)]
    pub seeds: SeedArgs,
    /// Ignore time: the conservative closure, a superset of the time-aware one.
    #[arg(long)]
    pub ignore_time: bool,
    /// Trace as if no purge had been recorded, to see what the recorded purges hid.
    #[arg(long)]
    pub ignore_purges: bool,
    /// Print the shortest chain of evidence from a seed to this entity.
    #[arg(long, value_name = "ENTITY")]
    pub explain: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: TraceFormat,
}

/// What `ls` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LsKind {
    /// Pipelines: project, trust ceiling, runs, first and last run.
    Pipelines,
    /// Runs by start, as `trace --run` names them: builder, times, status, trust level.
    Runs,
    /// Builders: runs, records, last seen.
    Builders,
    /// Mount caches as `BUILDER:ID`: runs that wrote and read them, last write, last purge.
    Mounts,
    /// Incidents: status, when opened, actions done, pending and failed.
    Incidents,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// What to list.
    #[arg(value_enum, value_name = "WHAT")]
    pub what: LsKind,
    /// Only this pipeline's runs, and the builders and mounts they used.
    #[arg(long, value_name = "NAME")]
    pub pipeline: Option<String>,
    /// Only runs on this builder, and its mounts.
    #[arg(long, value_name = "NAME")]
    pub builder: Option<String>,
    /// Only runs that started (mount uses, incidents opened) at or after this: an RFC 3339
    /// time, a UTC date (its midnight) or a duration before now (`3d`, `12h`, `30m`, `2w`).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only those at or before this: an RFC 3339 time, a UTC date (through its last
    /// microsecond) or a duration before now.
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// At most this many rows, newest first (0 for all); says on stderr when more matched.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub limit: u64,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: LsFormat,
}

/// Output formats of `ls`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum LsFormat {
    /// A table for people.
    #[default]
    Text,
    /// JSON, shape in `schema/ls.schema.json`.
    Json,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Image or cache references (`REF@DIGEST`, a bare digest, or a tag to resolve). A value
    /// starting `sha256:` or `sha512:` is a bare digest, refused when malformed.
    #[arg(required = true, value_name = "REF")]
    pub refs: Vec<String>,
    /// The pipeline asking, for its containment settings [default: from the CI environment]
    #[arg(long, value_name = "NAME")]
    pub pipeline: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: OutputFormat,
    #[command(flatten)]
    pub collector: CollectorArgs,
}

#[derive(Debug, Subcommand)]
pub enum IncidentCommand {
    /// Trace the seeds, plan the purge and store both as a new incident. Deletes nothing.
    Open(IncidentOpenArgs),
    /// Check the plan (dry run), or carry it out with `--execute`.
    Purge(IncidentPurgeArgs),
    /// Check that every tainted target is gone or accepted, whatever became of its action,
    /// and that the re-run trace finds nothing new. Exits 1 until then.
    Verify(IncidentVerifyArgs),
    /// Leave targets in place on purpose: records who, when and why, so verification passes
    /// with them listed as accepted.
    Accept(IncidentAcceptArgs),
    /// Close an incident once every target is gone or accepted; lifts containment.
    Close(IncidentCloseArgs),
    /// List incidents.
    List(IncidentListArgs),
    /// Show an incident's plan and the state of each action.
    Show(IncidentShowArgs),
    /// Write the incident report.
    Report(IncidentReportArgs),
}

#[derive(Debug, Args)]
pub struct IncidentOpenArgs {
    #[command(flatten)]
    pub seeds: SeedArgs,
    /// A title for the incident.
    #[arg(long, value_name = "TEXT")]
    pub title: Option<String>,
    /// Ignore time when tracing: the conservative closure.
    #[arg(long)]
    pub ignore_time: bool,
    /// Trace as if no purge had been recorded; kept with the incident's seeds.
    #[arg(long)]
    pub ignore_purges: bool,
    /// Plan deleting tainted images too, not only caches.
    #[arg(long)]
    pub delete_images: bool,
    /// Plan pruning every build-cache record on tainted builders.
    #[arg(long)]
    pub full_prune: bool,
    /// Seed from a stored audit finding (the id `audit registry` or `audit mounts` prints): the
    /// cache it names, or the mount and the runs that wrote the finding's files.
    #[arg(long, value_name = "FINDING")]
    pub from_audit: Option<i64>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: OutputFormat,
}

#[derive(Debug, Args)]
pub struct IncidentPurgeArgs {
    /// The incident id.
    pub id: i64,
    /// Carry out the plan. Without it, every target is checked and nothing is deleted; what the
    /// check learns about manifests is recorded for the execution.
    #[arg(long)]
    pub execute: bool,
    /// Actions in flight per registry and per builder; without --execute, manifest checks in
    /// flight per registry [default: from the config, else 8]
    #[arg(long, value_name = "N")]
    pub concurrency: Option<usize>,
    /// Do not ask before acting.
    #[arg(long, short)]
    pub yes: bool,
    /// Save evidence here before deleting [default: evidence/incident-ID beside an SQLite
    /// store, in the current directory for a PostgreSQL one]
    #[arg(long, value_name = "DIR", conflicts_with = "no_evidence")]
    pub evidence_dir: Option<PathBuf>,
    /// Save the blobs of deleted manifests too, not only their digests.
    #[arg(long)]
    pub evidence_blobs: bool,
    /// Delete without saving evidence first.
    #[arg(long)]
    pub no_evidence: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: OutputFormat,
}

#[derive(Debug, Args)]
pub struct IncidentVerifyArgs {
    /// The incident id.
    pub id: i64,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: OutputFormat,
}

#[derive(Debug, Args)]
pub struct IncidentCloseArgs {
    /// The incident id.
    pub id: i64,
    /// Close even though targets are neither gone nor accepted (recorded as not clean).
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct IncidentAcceptArgs {
    /// The incident id.
    pub id: i64,
    /// The actions whose targets stay in place (their `#` in `incident show`).
    #[arg(required = true, value_name = "SEQ")]
    pub seqs: Vec<i64>,
    /// Why they stay: kept in the report with who accepted them and when.
    #[arg(long, value_name = "TEXT", required = true)]
    pub reason: String,
}

#[derive(Debug, Args)]
pub struct IncidentListArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: OutputFormat,
}

#[derive(Debug, Args)]
pub struct IncidentShowArgs {
    /// The incident id.
    pub id: i64,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: OutputFormat,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    /// Markdown for people.
    #[default]
    Md,
    /// JSON, shape in `schema/report.schema.json`.
    Json,
    /// The tainted digests, one a line, for admission control.
    Digests,
}

#[derive(Debug, Args)]
pub struct IncidentReportArgs {
    /// The incident id.
    pub id: i64,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: ReportFormat,
    /// Write to this file instead of stdout: a regular file is replaced whole once written; a
    /// FIFO or device (`/dev/stdout`) is written to. Never the store.
    #[arg(long, short, value_name = "PATH")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct MarkPurgedArgs {
    /// The builder.
    #[arg(long, value_name = "NAME")]
    pub builder: String,
    /// The mount id that was emptied; without it, the builder's cache was pruned (the whole of
    /// it, unless `--records-only`).
    #[arg(long, value_name = "ID")]
    pub mount: Option<String>,
    /// Only the builder's build records were pruned, its cache mounts (`exec.cachemount`
    /// records) left: the purge cleans none of its mounts.
    #[arg(long, conflicts_with = "mount")]
    pub records_only: bool,
    /// When it happened: an RFC 3339 time or a duration before now (`2h`) [default: now]. A
    /// time in the future is refused; one before the last recorded use of what it cleans needs
    /// `--force`.
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// Record a purge time before the last recorded use: an honest late entry, shown as
    /// forced with its reason. Never accepts a time in the future.
    #[arg(long, requires = "reason")]
    pub force: bool,
    /// Why the purge is recorded (required with `--force`; a note otherwise).
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: BenchCommand,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Write a synthetic fleet history as JSON Lines.
    Generate(GenerateArgs),
    /// The floor under an SQLite import: copy an imported store's rows by SQLite itself into
    /// an empty store (same schema, indexes and triggers), timing each table.
    Floor(FloorArgs),
    /// The bytes each table of an SQLite store takes, its indexes apart, per event.
    Size(SizeArgs),
}

#[derive(Debug, Args)]
pub struct SizeArgs {
    /// The SQLite store to measure.
    #[arg(value_name = "PATH")]
    pub store: PathBuf,
}

#[derive(Debug, Args)]
pub struct FloorArgs {
    /// The imported SQLite store to read.
    #[arg(long, value_name = "PATH")]
    pub from: PathBuf,
    /// The SQLite store to fill: created when missing, else it must hold no rows (with
    /// `--rest`, an earlier copy of `--from`).
    #[arg(long, value_name = "PATH")]
    pub into: PathBuf,
    /// `--into` is a copy of `--from` as it was before its last import: copy only the rows it
    /// lacks, the floor under an import into a store already in use.
    #[arg(long)]
    pub rest: bool,
}

/// The shapes of a synthetic fleet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum FleetShape {
    /// Each pipeline on its home builder with its own mount ids; a blast radius stays around
    /// a fifth of the fleet.
    #[default]
    Default,
    /// A handful of mount ids (`/root/.cache/pip`, ...) shared by most pipelines on shared
    /// builders, every run reusing builder records of the runs before it, overlapping runs.
    Shared,
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// The fleet's shape.
    #[arg(long, value_enum, default_value_t)]
    pub shape: FleetShape,
    /// Runs, spread over one year.
    #[arg(long, default_value_t = 1_000_000)]
    pub runs: usize,
    /// Pipelines, a third of them at each trust level.
    #[arg(long, default_value_t = 5_000)]
    pub pipelines: usize,
    /// Builders [default: 200, or 20 for the shared shape]
    #[arg(long)]
    pub builders: Option<usize>,
    /// Mount ids of the default shape (the shared shape has its own six).
    #[arg(long, default_value_t = 50_000)]
    pub mounts: usize,
    /// The generator's seed: the same seed and flags give the same fleet.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Which year of the fleet's history to write, from 0. Year N continues year N-1 of the
    /// same seed and flags: later runs of the same pipelines, reusing its caches and records.
    #[arg(long, default_value_t = 0)]
    pub year: usize,
    /// Write here instead of stdout.
    #[arg(long, short, value_name = "PATH")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SweepArgs {
    /// The policy: a TOML file of `[[rule]]` tables; the first rule that matches decides.
    #[arg(long, value_name = "FILE")]
    pub policy: PathBuf,
    /// Carry out the plan. Without it, the plan is printed and nothing is changed.
    #[arg(long)]
    pub execute: bool,
    /// Do not ask before acting.
    #[arg(long, short)]
    pub yes: bool,
    /// Actions in flight per registry and per builder [default: from the config, else 8]
    #[arg(long, value_name = "N")]
    pub concurrency: Option<usize>,
    /// Write Prometheus metrics here (node_exporter textfile format), replacing the file
    /// atomically.
    #[arg(long, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: OutputFormat,
}

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Upgrade an existing store to this cachewarden's schema, saying from which version.
    ///
    /// Read commands (`trace`, `ls`, `export`, `check`, `incident list`, `show` and `report`)
    /// never migrate: they refuse an older store with exit 3 (`check`, which fails closed,
    /// with 5). Commands that write migrate it as they open it. Older cachewarden hooks refuse
    /// a store once it is migrated: upgrade them first.
    ///
    /// On PostgreSQL only `db migrate` changes the schema: run it as the schema's owner. It
    /// creates the schema in an empty database.
    Migrate,
    /// Give an existing PostgreSQL role what hooks, collectors or responders may do with this
    /// store.
    ///
    /// `hook`: read every table, add provenance (runs, events, the run chain), never update or
    /// delete a row, never open incidents, journals or sweeps. `collector` (`serve`): a hook's
    /// rights, and the receipts and refusals of the runs it is sent. `responder`: everything.
    /// Run as the schema's owner; `--print` only shows the SQL, for a DBA to review.
    Grant(GrantArgs),
    /// Copy the whole store (`--db`) into an empty store, SQLite file or PostgreSQL URL, either
    /// way, without loss.
    ///
    /// Every table is copied: runs, events, purges, incidents and their journals, sweeps,
    /// acceptances, audits, receipts, refusals, step events, build history and mount
    /// snapshots. Rows keep their ids, so `verify-log` gives the same head on the copy. The
    /// copy is one transaction on DEST: on any failure nothing of it is left there. A DEST that
    /// already holds rows is refused (exit 2) and left as it was. A PostgreSQL DEST without the
    /// schema gets it first, as `db migrate` would create it.
    Copy(DbCopyArgs),
}

#[derive(Debug, Args)]
pub struct DbCopyArgs {
    /// The store to copy into: a file path (created when missing) or a `postgresql://` URL.
    #[arg(long, value_name = "DEST")]
    pub to: PathBuf,
}

#[derive(Debug, Args)]
pub struct GrantArgs {
    /// The database role, which must exist (`CREATE ROLE ... LOGIN PASSWORD ...`)
    #[arg(value_name = "NAME")]
    pub name: String,
    /// What the role may do
    #[arg(long, value_enum)]
    pub role: GrantRoleArg,
    /// Print the statements instead of running them
    #[arg(long)]
    pub print: bool,
    /// With --print, the schema the store is in; without it, the store's own is used
    #[arg(
        long,
        value_name = "SCHEMA",
        default_value = "public",
        requires = "print"
    )]
    pub schema: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GrantRoleArg {
    Hook,
    Collector,
    Responder,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// List the tags of cache registries, classify each manifest, and report caches that no
    /// recorded run exported, trust breaches and tags that moved unrecorded.
    Registry(AuditRegistryArgs),
    /// Copy each cache mount out of its builder through a read-only helper build, hash every
    /// file, and report content that does not match its own checksums, new startup hooks, and
    /// changes by a lower-trust writer than the mount's earlier writers.
    Mounts(AuditMountsArgs),
    /// Judge the per-step cache hits `wrap` recorded: a higher-trust run served from a record a
    /// lower-trust run created, hits on records no recorded run created, hit rates that moved,
    /// and builds `collect` found no hook recorded.
    Builds(AuditBuildsArgs),
}

#[derive(Debug, Args)]
pub struct AuditBuildsArgs {
    /// Judge what happened since then: an RFC 3339 time, a UTC date or a duration before now
    /// (`1d`); hit rates since then are compared with those before [default: everything, and
    /// each step's latest run against its earlier ones]
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Report every current finding, not only those no earlier audit reported.
    #[arg(long)]
    pub all: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: AuditFormat,
    /// Write hit rates per pipeline and builder, and the findings by code, here as Prometheus
    /// metrics (node_exporter textfile format), replacing the file atomically.
    #[arg(long, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct AuditMountsArgs {
    /// Audit the mounts of this builder [default: every builder the store recorded mounts on]
    #[arg(long, value_name = "BUILDER")]
    pub builder: Option<String>,
    /// Audit this mount id only, as recorded (the Dockerfile's `id=`, else its target path)
    #[arg(long, value_name = "ID")]
    pub mount: Option<String>,
    /// Take a clean baseline: store what each mount holds as known-good; only content that
    /// does not match its own address is reported.
    #[arg(long)]
    pub baseline: bool,
    /// Report every current finding, not only those no earlier audit reported.
    #[arg(long)]
    pub all: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: AuditFormat,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum AuditFormat {
    /// Text for people.
    #[default]
    Text,
    /// JSON, shape in `schema/audit.schema.json` (registry), `schema/audit-mounts.schema.json`
    /// (mounts) or `schema/audit-builds.schema.json` (builds).
    Json,
    /// SARIF 2.1.0, for code-scanning dashboards.
    Sarif,
}

#[derive(Debug, Args)]
pub struct AuditRegistryArgs {
    /// Audit this registry host [default: every `[[registry]]` of the config]
    #[arg(long, value_name = "HOST")]
    pub registry: Vec<String>,
    /// Audit this repository [default: the registry's `repositories`, else those the store
    /// recorded on it]
    #[arg(long, value_name = "REPO")]
    pub repository: Vec<String>,
    /// Report every current finding, not only those no earlier audit reported.
    #[arg(long)]
    pub all: bool,
    /// Hold back digests first seen less than this long ago (`10m`): the hook of the build
    /// that pushed one may not have recorded it yet.
    #[arg(long, value_name = "AGE", default_value = "0s")]
    pub grace: String,
    /// Requests in flight per registry.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub concurrency: usize,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: AuditFormat,
}
