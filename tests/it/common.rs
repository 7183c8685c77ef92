//! Shared helpers: run the real executable in an isolated environment.

use std::path::{Path, PathBuf};
use std::process::Command;

/// CI variables the hook reads; cleared so the host's CI does not leak into tests.
const CI_VARS: &[&str] = &[
    "GITHUB_ACTIONS",
    "GITLAB_CI",
    "BUILDKITE",
    "JENKINS_URL",
    "CIRCLECI",
    "CACHEWARDEN_DB",
    "CACHEWARDEN_CONFIG",
    "CACHEWARDEN_BUILDER",
    "DOCKER_HOST",
    "DOCKER_CONTEXT",
    "BUILDX_BUILDER",
    "DOCKER_CONFIG",
    "BUILDX_CONFIG",
    "CACHEWARDEN_SERVER",
    "CACHEWARDEN_TOKEN",
    "CACHEWARDEN_SPOOL",
    "CACHEWARDEN_AUDIENCE",
    "ACTIONS_ID_TOKEN_REQUEST_URL",
    "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
    "PGHOST",
    "PGPORT",
    "PGUSER",
    "PGDATABASE",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGSSLMODE",
];

/// A temporary home with its own database path.
pub struct Env {
    pub dir: tempfile::TempDir,
    /// The PostgreSQL store's URL when the suite runs on PostgreSQL (see [`test_store`]).
    pub store: Option<String>,
}

/// The PostgreSQL server the suite runs its store on, from `CACHEWARDEN_TEST_PG` (an admin
/// URL without a database name), or `None` for SQLite.
pub fn test_store() -> Option<String> {
    std::env::var("CACHEWARDEN_TEST_PG")
        .ok()
        .filter(|url| !url.is_empty())
}

/// A new database on the suite's PostgreSQL server (`admin`, a URL without a database name),
/// bytewise-ordered, named `PREFIX_PID_N`; its URL.
pub fn create_database(admin: &str, prefix: &str) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let name = format!(
        "{prefix}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let status = Command::new("psql")
        .args([
            &format!("{admin}/postgres"),
            "-qc",
            &format!("CREATE DATABASE {name} TEMPLATE template0 LC_COLLATE 'C' LC_CTYPE 'C'"),
        ])
        .status()
        .expect("psql");
    assert!(status.success(), "CREATE DATABASE {name}");
    format!("{admin}/{name}")
}

impl Drop for Env {
    /// A PostgreSQL store goes with its environment.
    fn drop(&mut self) {
        if let (Some(admin), Some(url)) = (test_store(), &self.store) {
            let name = url.rsplit('/').next().unwrap_or_default();
            let _ = Command::new("psql")
                .args([
                    &format!("{admin}/postgres"),
                    "-qc",
                    &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                ])
                .output();
        }
    }
}

impl Env {
    /// An environment whose store is the PostgreSQL database at `url` (migrated by the caller).
    pub fn with_store(url: &str) -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
            store: Some(url.to_owned()),
        }
    }

    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = test_store().map(|admin| {
            let url = create_database(&admin, "cw");
            let out = Command::new(assert_cmd::cargo::cargo_bin!("cachewarden"))
                .args(["--db", &url, "db", "migrate"])
                .output()
                .expect("db migrate");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            url
        });
        Self { dir, store }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn db(&self) -> PathBuf {
        self.dir.path().join("store.db")
    }

    /// `cachewarden` with HOME, XDG dirs and the database inside this environment.
    pub fn cmd(&self) -> Command {
        let mut cmd = Command::new(assert_cmd::cargo::cargo_bin!("cachewarden"));
        for var in CI_VARS {
            cmd.env_remove(var);
        }
        cmd.env("HOME", self.path())
            .env("XDG_CONFIG_HOME", self.path().join("config"))
            .env("XDG_DATA_HOME", self.path().join("data"))
            .env(
                "CACHEWARDEN_DB",
                self.store
                    .clone()
                    .map_or_else(|| self.db(), std::path::PathBuf::from),
            )
            .env("NO_COLOR", "1")
            .current_dir(self.path());
        cmd
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, text).unwrap();
        path
    }
}

/// Exit code, stdout and stderr, with this environment's paths replaced by `[TEMP]`.
pub fn output(env: &Env, cmd: &mut Command) -> String {
    let out = cmd.output().expect("run cachewarden");
    let clean = |bytes: &[u8]| {
        String::from_utf8_lossy(bytes).replace(&env.path().display().to_string(), "[TEMP]")
    };
    format!(
        "exit: {}\n--- stdout\n{}--- stderr\n{}",
        out.status
            .code()
            .map_or("signal".to_owned(), |c| c.to_string()),
        clean(&out.stdout),
        clean(&out.stderr)
    )
}

/// Runs and asserts success; returns stdout.
pub fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run cachewarden");
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub fn digest(c: char) -> String {
    format!("sha256:{}", c.to_string().repeat(64))
}

impl Env {
    /// `cachewarden` with this config file and no progress bars.
    pub fn cmd_with(&self, config: &Path) -> Command {
        let mut cmd = self.cmd();
        cmd.env("CACHEWARDEN_CONFIG", config)
            .env("CACHEWARDEN_NO_PROGRESS", "1");
        cmd
    }

    /// An executable `bin/docker` here that runs `body` (a shell script) in place of the
    /// Docker CLI: what `wrap` runs without a daemon.
    pub fn fake_docker(&self, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;

        let docker = self.write("bin/docker", &format!("#!/bin/sh\n{body}"));
        std::fs::set_permissions(&docker, std::fs::Permissions::from_mode(0o755)).unwrap();
        docker
    }

    /// `incident open --pipeline PIPELINE` with this config, which must succeed.
    pub fn open_incident(&self, config: &Path, pipeline: &str) -> String {
        ok(self
            .cmd_with(config)
            .args(["incident", "open", "--pipeline", pipeline]))
    }

    /// The action of incident `id`'s plan that `pick` chooses, as `incident show --format json`
    /// lists it; panics, naming `what` and showing the plan, when none does.
    pub fn incident_action(
        &self,
        config: &Path,
        id: &str,
        what: &str,
        pick: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let show = ok(self
            .cmd_with(config)
            .args(["incident", "show", id, "--format", "json"]));
        let show: serde_json::Value = serde_json::from_str(&show).unwrap();
        show["actions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|&a| pick(a))
            .cloned()
            .unwrap_or_else(|| panic!("no action on {what}: {show:#}"))
    }

    /// `incident purge ID --execute --yes` and `extra`, with this config.
    pub fn execute(&self, config: &Path, id: &str, extra: &[&str]) -> Command {
        let mut cmd = self.cmd_with(config);
        cmd.args(["incident", "purge", id, "--execute", "--yes"])
            .args(extra);
        cmd
    }
}

/// A loopback registry and a new environment; `None` when the registry is not installed here.
pub fn registry_env() -> Option<(crate::harness::Registry, Env)> {
    Some((crate::harness::registry()?, Env::new()))
}

/// A private dockerd of `engine` with busybox imported as `base:1`, and a new environment;
/// `None` when the engine is not installed here.
pub fn dockerd_env(engine: crate::harness::Engine) -> Option<(crate::harness::Dockerd, Env)> {
    if !crate::harness::require_engine(engine) {
        return None;
    }
    let dockerd = crate::harness::Dockerd::start_engine(engine);
    dockerd.import_busybox("base:1");
    Some((dockerd, Env::new()))
}

/// Whether the registry serves a manifest (or index) by this digest.
pub fn manifest_exists(
    registry: &crate::harness::Registry,
    repository: &str,
    digest: &str,
) -> bool {
    let response = registry.request(
        crate::harness::http::Request::new("HEAD", &format!("/v2/{repository}/manifests/{digest}")).header(
            "Accept",
            "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json",
        ),
    );
    response.status == 200
}

/// Runs a test function `NAME(engine: Engine)` once per Docker Engine: a module `NAME` with
/// the tests `docker20` and `docker26` (`cargo test NAME::docker26`). `async` for async ones.
#[macro_export]
macro_rules! on_both_engines {
    ($name:ident) => {
        mod $name {
            /// The test on Docker 20.10 (embedded BuildKit v0.8).
            #[test]
            fn docker20() {
                super::$name($crate::harness::Engine::Docker20)
            }

            /// The test on Docker 26 (embedded BuildKit v0.13, containerd image store).
            #[test]
            fn docker26() {
                super::$name($crate::harness::Engine::Docker26)
            }
        }
    };
    (async $name:ident) => {
        mod $name {
            /// The test on Docker 20.10 (embedded BuildKit v0.8).
            #[tokio::test]
            async fn docker20() {
                super::$name($crate::harness::Engine::Docker20).await
            }

            /// The test on Docker 26 (embedded BuildKit v0.13, containerd image store).
            #[tokio::test]
            async fn docker26() {
                super::$name($crate::harness::Engine::Docker26).await
            }
        }
    };
}

/// A synthetic fleet in `env`'s `fleet.jsonl`: `bench generate` with this many runs,
/// pipelines, builders and mount ids, from `seed` or the generator's default.
pub fn generate_fleet(
    env: &Env,
    (runs, pipelines, builders, mounts): (u32, u32, u32, u32),
    seed: Option<u64>,
) -> std::path::PathBuf {
    let fleet = env.path().join("fleet.jsonl");
    let mut cmd = env.cmd();
    cmd.args(["bench", "generate"]);
    for (flag, value) in [
        ("--runs", runs),
        ("--pipelines", pipelines),
        ("--builders", builders),
        ("--mounts", mounts),
    ] {
        cmd.args([flag, &value.to_string()]);
    }
    if let Some(seed) = seed {
        cmd.args(["--seed", &seed.to_string()]);
    }
    ok(cmd.arg("-o").arg(&fleet));
    fleet
}

/// The files a store being built beside its path (`import`, `db copy`) left in `dir`.
pub fn building_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.contains(".import-") || name.contains(".copy-"))
        .collect()
}

/// The names of an SQLite store's indexes, sorted.
pub fn sqlite_indexes(db: impl AsRef<Path>) -> Vec<String> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'index' ORDER BY name")
        .unwrap();
    stmt.query_map([], |row| row.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

/// Builder purges as a release before prunes of build records only were told apart recorded
/// them, over the example history (builders `ci-1` and `ci-2`): incident 7's prune of `ci-1`
/// without `--full-prune` (at 10), its full prune of `ci-2` (11), and a prune of `ci-1` by hand
/// (12).
pub const BUILDER_PRUNES_SQL: &str = r#"
    INSERT INTO incidents (id, title, opened_at, opened_by, seeds, trace)
    VALUES (7, 't', 1, 'me', '{}', '{}');
    INSERT INTO actions (incident_id, seq, kind, place, target, reason, in_scope)
    VALUES (7, 1, 'prune-builder', 'ci-1',
            '{"target":"builder","builder":"ci-1","record_ids":["w100","gone"],"used_since":5,"full":false}',
            'r', 1),
           (7, 2, 'prune-builder', 'ci-2',
            '{"target":"builder","builder":"ci-2","record_ids":[],"full":true}', 'r', 1);
    INSERT INTO purges (kind, builder_id, at, method, incident_id, action_seq)
    VALUES ('builder', (SELECT id FROM builders WHERE name = 'ci-1'), 10, 'executor', 7, 1),
           ('builder', (SELECT id FROM builders WHERE name = 'ci-2'), 11, 'executor', 7, 2),
           ('builder', (SELECT id FROM builders WHERE name = 'ci-1'), 12, 'manual', NULL, NULL);"#;

/// Builder purges imported from lines that claim an incident's executor (at 13) and a hand
/// (14) made them, as a release before records-only prunes were told apart recorded them.
pub const IMPORTED_PRUNES_SQL: &str = r#"
    INSERT INTO purges (kind, builder_id, at, method, claimed_method)
    VALUES ('builder', (SELECT id FROM builders WHERE name = 'ci-1'), 13, 'imported', 'executor'),
           ('builder', (SELECT id FROM builders WHERE name = 'ci-1'), 14, 'imported', 'manual');"#;

/// Each of [`BUILDER_PRUNES_SQL`]'s purges by time, and whether it is marked records-only.
pub const BUILDER_PRUNES_MARKED: [(i64, i64); 3] = [(10, 1), (11, 0), (12, 0)];

/// Each of [`BUILDER_PRUNES_SQL`]'s purges by time, whether it is marked selective, since when
/// it pruned every build record, and the named records the store holds: the incident's
/// records-only prune, as its action says, and the import that claims an incident made it,
/// naming nothing ([`IMPORTED_PRUNES_SQL`]).
pub const BUILDER_PRUNES_SELECTIVE: &str = "10|1|5|w100\n11|0||\n12|0||\n13|1||\n14|0||";

/// What [`BUILDER_PRUNES_SELECTIVE`] is read with.
pub const BUILDER_PRUNES_SELECTIVE_SQL: &str = "SELECT u.at, u.selective, u.records_since,
        coalesce((SELECT min(r.record_id) FROM purge_records p
                  JOIN builder_records r ON r.id = p.record WHERE p.purge_id = u.id), '')
    FROM purges u ORDER BY u.at";
