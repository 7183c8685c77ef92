//! The store on PostgreSQL, on a real server started by the harness: the store-level
//! integration tests run again with every store in PostgreSQL, the same histories give the
//! same traces in both stores, and what only a shared store meets (concurrent writers, a
//! server that dies, a schema from a newer release).

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{Env, generate_fleet, ok};
use crate::harness::cut::CutProxy;
use crate::harness::oidc::{self, Collector, Issuer, Key};
use crate::harness::{PgBouncer, PgCluster, require_pgbouncer, require_postgres};

/// Tests that stay on SQLite, each group for its reason: they open the store's file with
/// SQLite to tamper with it or read it, test a file's own semantics (missing, read-only,
/// locked, WAL, `user_version`), or snapshot `--help`, which shows `CACHEWARDEN_DB`'s value.
const SQLITE_ONLY: &[&str] = &[
    // The file itself: tampering, locks, permissions, versions.
    "chain::",
    "store_access::",
    "stored_seeds::",
    "sweep::the_lock_holds",
    "cli::newer_schema_is_refused",
    "ls::ls_never_creates_a_store",
    // Read or edit rows with SQLite directly.
    "audit::registry_down_gives_a_clear_error_and_no_findings",
    "cli::llb_mount_ids_are_normalized",
    "lifecycle::second_concurrent_execution_is_refused",
    "lifecycle::an_execution_that_lost_its_lock_stops",
    "ls::incident_open_stores_absolute_times",
    "purge::kill_nine_mid_purge_then_rerun",
    "purge::registry_stopped_mid_purge_then_rerun_completes",
    "purge_facts::",
    "serve::a_flood_of_refusals_is_kept_only_up_to_the_allowance",
    "serve::a_receipt_edited_in_the_store_is_caught_by_verify_log",
    "serve::bodies_that_contradict_the_token_are_refused",
    "serve::forged_and_unusable_tokens_are_refused",
    "serve::kill_9_mid_write_loses_nothing_sent_again",
    "serve::late_and_time_suspect_runs_are_marked",
    "serve::a_static_token_run_claiming_an_old_start_is_time_suspect",
    "serve::valid_tokens_record_the_run_their_claims_name",
    "serve::wrap_sends_its_override_to_the_collector",
    "serve::a_run_sent_with_steps_is_stored_with_them",
    "serve::an_oversized_body_is_refused_logged_counted_and_kept",
    "audit_builds::wrap_sends_its_steps_to_the_collector",
    "audit_builds::docker_build_through_buildx_records_step_digests",
    // `--help` snapshots.
    "_help",
    "cli::help",
];

/// Tests of builders run on one store only (the builders are what they test).
const BUILDER_TESTS: &[&str] = &[
    "docker20",
    "docker26",
    "audit_mounts::",
    "buildkit::",
    "collect::",
    "dockerfile::",
    "scenarios::",
    "wrap::",
    "build::",
];

/// A role that may create databases, and the URL prefix (no database name) it logs in with.
fn suite_admin(cluster: &PgCluster) -> String {
    let role = format!("cw_suite_{}", std::process::id());
    let password = format!("pw{}", std::process::id());
    cluster.create_role(&role, &password);
    cluster.psql("postgres", &format!("ALTER ROLE {role} CREATEDB"));
    format!(
        "postgresql://{role}:{password}@127.0.0.1:{}",
        cluster.port()
    )
}

/// The password in a `postgresql://user:password@...` URL.
fn password_of(url: &str) -> &str {
    let credentials = url.split('@').next().unwrap();
    credentials.rsplit(':').next().unwrap()
}

/// A fresh store on the shared cluster, its schema made by `db migrate`.
fn pg_store(cluster: &PgCluster) -> String {
    let url = cluster.database();
    let env = Env::new();
    ok(env.cmd().args(["--db", &url, "db", "migrate"]));
    url
}

/// The store-level integration tests pass with every store in PostgreSQL: this binary runs
/// itself again with `CACHEWARDEN_TEST_PG` set, which gives each test environment a database
/// of its own on the shared cluster.
#[test]
fn store_level_tests_pass_on_postgres() {
    if !require_postgres() || std::env::var_os("CACHEWARDEN_TEST_PG").is_some() {
        return;
    }
    let cluster = PgCluster::shared();
    let admin = suite_admin(cluster);
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.env("CACHEWARDEN_TEST_PG", &admin).args([
        "--test-threads",
        "2",
        "--skip",
        "postgres::",
        "--skip",
        "pg_harness::",
    ]);
    for skip in SQLITE_ONLY.iter().chain(BUILDER_TESTS) {
        cmd.args(["--skip", skip]);
    }
    let out = cmd.output().expect("run the suite again");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary = stdout
        .lines()
        .filter(|line| line.starts_with("test result:"))
        .collect::<Vec<_>>()
        .join("\n");
    eprintln!("on PostgreSQL: {summary}");
    assert!(
        out.status.success(),
        "store-level tests failed on PostgreSQL:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let passed: usize = summary
        .split_whitespace()
        .skip_while(|word| *word != "ok.")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(passed >= 100, "only {passed} tests ran on PostgreSQL");
}

/// A generated fleet imported into SQLite and into PostgreSQL gives byte-identical trace JSON,
/// from every kind of seed, with time and without, over several random fleets.
#[test]
fn the_same_histories_trace_the_same_in_both_stores() {
    if !require_postgres() {
        return;
    }
    let cluster = PgCluster::shared();
    for seed in [1_u64, 7, 42] {
        let env = Env::new();
        let fleet = generate_fleet(&env, (400, 12, 3, 20), Some(seed));
        let sqlite = env.path().join("fleet.db");
        let pg = pg_store(cluster);
        for db in [sqlite.to_str().unwrap(), pg.as_str()] {
            ok(env
                .cmd()
                .args(["--db", db, "import", fleet.to_str().unwrap()]));
        }
        let mut seeds: Vec<Vec<String>> = Vec::new();
        for p in [0, 3, 11] {
            seeds.push(vec!["--pipeline".into(), format!("p{p}")]);
        }
        seeds.push(vec!["--builder".into(), "b1".into()]);
        seeds.push(vec!["--run".into(), "p2/17-1/Dockerfile".into()]);
        seeds.push(vec![
            "--pipeline".into(),
            "p5".into(),
            "--since".into(),
            "2026-02-01".into(),
        ]);
        let mut compared = 0;
        for seed_args in &seeds {
            for ignore_time in [false, true] {
                let trace = |db: &str| {
                    let mut cmd = env.cmd();
                    cmd.args(["--db", db, "trace", "--format", "json"])
                        .args(seed_args);
                    if ignore_time {
                        cmd.arg("--ignore-time");
                    }
                    let out = cmd.output().unwrap();
                    (
                        out.status.code(),
                        String::from_utf8_lossy(&out.stdout).into_owned(),
                    )
                };
                let (lite_code, lite) = trace(sqlite.to_str().unwrap());
                let (pg_code, on_pg) = trace(&pg);
                assert_eq!(lite_code, pg_code, "seed {seed}, {seed_args:?}");
                assert!(
                    lite == on_pg,
                    "fleet {seed}, {seed_args:?}, ignore_time {ignore_time}: the traces differ"
                );
                compared += usize::from(lite_code == Some(0) && lite.len() > 100);
            }
        }
        assert!(
            compared >= 6,
            "fleet {seed}: only {compared} traces found anything"
        );
        let export = |db: &str| ok(env.cmd().args(["--db", db, "export"]));
        assert_eq!(
            export(sqlite.to_str().unwrap()),
            export(&pg),
            "fleet {seed}"
        );
    }
}

/// 64 `record` processes at once against one PostgreSQL store: every run is stored, none
/// fails, and the run chain verifies.
#[test]
fn sixty_four_concurrent_records_lose_nothing() {
    if !require_postgres() {
        return;
    }
    let cluster = PgCluster::shared();
    concurrent_records_lose_nothing(&pg_store(cluster), 64);
}

/// The same where the database's transactions default to repeatable read: the writers still
/// take turns, each seeing what the one before it committed.
#[test]
fn concurrent_records_lose_nothing_where_transactions_default_to_repeatable_read() {
    if !require_postgres() {
        return;
    }
    let cluster = PgCluster::shared();
    let db = pg_store(cluster);
    let name = cluster_database_name(&db);
    cluster.psql(
        &name,
        &format!("ALTER DATABASE {name} SET default_transaction_isolation = 'repeatable read'"),
    );
    concurrent_records_lose_nothing(&db, 16);
}

fn concurrent_records_lose_nothing(db: &str, records: usize) {
    let env = Env::new();
    let children: Vec<_> = (0..records)
        .map(|i| {
            env.cmd()
                .args([
                    "--db",
                    db,
                    "record",
                    "--pipeline",
                    &format!("team/p{}", i % 8),
                    "--run",
                    &format!("r{i}"),
                    "--builder",
                    "shared",
                    "--cache-from",
                    &format!("reg.example/team/cache:main@{}", crate::common::digest('a')),
                    "--mount",
                    "/root/.cache/pip",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stderr.is_empty() || !String::from_utf8_lossy(&out.stderr).contains("error"));
    }
    let export = ok(env.cmd().args(["--db", db, "export"]));
    let runs: BTreeSet<String> = export
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["type"] == "run")
        .map(|line| line["run"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(runs.len(), records, "{runs:?}");
    ok(env.cmd().args(["--db", db, "verify-log"]));
}

/// A server killed in the middle of an import: the import exits 3 naming the store, what it
/// committed is whole batches, and the rerun after a restart stores exactly what an import
/// into SQLite does.
#[test]
fn a_server_killed_mid_import_exits_3_and_the_rerun_completes() {
    if !require_postgres() {
        return;
    }
    let cluster = PgCluster::start();
    let db = cluster.database();
    let env = Env::new();
    ok(env.cmd().args(["--db", &db, "db", "migrate"]));
    let fleet = generate_fleet(&env, (12000, 30, 4, 60), None);
    let import = || {
        env.cmd()
            .args(["--db", &db, "import", "--batch-size", "200"])
            .arg(&fleet)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let name = cluster_database_name(&db);
    let mut child = import();
    // Killed once a first batch is in and well before the last (60 batches of 200 runs).
    let started = std::time::Instant::now();
    while cluster.psql(&name, "SELECT count(*) FROM runs") == "0" {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the import ended first"
        );
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no batch committed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    cluster.kill();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert_eq!(
        stderr.lines().filter(|l| l.starts_with("error")).count(),
        1,
        "{stderr}"
    );
    assert!(
        !stderr.contains(password_of(&db)),
        "the password is never shown: {stderr}"
    );
    cluster.restart();
    let out = import().wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sqlite = env.path().join("whole.db");
    ok(env
        .cmd()
        .args(["--db", sqlite.to_str().unwrap(), "import"])
        .arg(&fleet));
    let export = |db: &str| ok(env.cmd().args(["--db", db, "export"]));
    assert_eq!(export(&db), export(sqlite.to_str().unwrap()));
    ok(env.cmd().args(["--db", &db, "verify-log"]));
}

/// A connection that dies while a trace reads the store (the server's answer stops part way,
/// in its indexed queries or while it streams the whole graph): the trace exits 3 with one
/// error line and writes nothing of the blast radius. Through a whole connection the same
/// trace gives the same answer as a direct one.
#[test]
fn a_connection_cut_mid_trace_exits_3_and_writes_nothing() {
    if !require_postgres() {
        return;
    }
    let cluster = PgCluster::shared();
    let store = cluster.new_database();
    let env = Env::new();
    ok(env.cmd().args(["--db", &store.url, "db", "migrate"]));
    let fleet = generate_fleet(&env, (3000, 10, 4, 30), None);
    ok(env
        .cmd()
        .args(["--db", &store.url, "import"])
        .arg(&fleet)
        .stderr(Stdio::null()));
    let proxy = CutProxy::start(store.port);
    let through = store.url.replace(
        &format!("127.0.0.1:{}/", store.port),
        &format!("127.0.0.1:{}/", proxy.port()),
    );
    assert_ne!(through, store.url);
    let trace = |db: &str| {
        env.cmd()
            .args([
                "--db",
                db,
                "-v",
                "trace",
                "--format",
                "json",
                "--pipeline",
                "p1",
            ])
            .output()
            .unwrap()
    };
    let direct = trace(&store.url);
    assert!(
        direct.status.success(),
        "{}",
        String::from_utf8_lossy(&direct.stderr)
    );
    let before = proxy.served();
    let whole = trace(&through);
    assert!(whole.status.success());
    assert_eq!(whole.stdout, direct.stdout);
    // The trace loaded the whole graph: one cut falls in its stream of pages.
    let verbose = String::from_utf8_lossy(&whole.stderr);
    assert!(verbose.contains(" loaded in "), "{verbose}");
    let read = proxy.served() - before;
    for tenths in [1, 5, 8] {
        proxy.cut_at(Some(proxy.served() + read * tenths / 10));
        let out = trace(&through);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "cut at {tenths}/10: {stderr}");
        assert!(
            out.stdout.is_empty(),
            "cut at {tenths}/10: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert_eq!(
            stderr.lines().filter(|l| l.starts_with("error")).count(),
            1,
            "{stderr}"
        );
        assert!(!stderr.contains(&store.password), "{stderr}");
    }
    proxy.cut_at(None);
    assert_eq!(trace(&through).stdout, direct.stdout);
}

/// A store migrated by a newer release is refused with exit 3 naming both versions, unless
/// that release says this one may still write it (its migrations only added).
#[test]
fn a_newer_schema_is_refused_unless_it_says_this_release_may_write() {
    if !require_postgres() {
        return;
    }
    let cluster = PgCluster::shared();
    let db = pg_store(cluster);
    let env = Env::new();
    let name = db.rsplit('/').next().unwrap();
    let record = |run: &str| {
        env.cmd()
            .args(["--db", &db, "record", "--pipeline", "p", "--run", run])
            .output()
            .unwrap()
    };
    cluster.psql(
        name,
        "UPDATE schema_version SET version = 99, writable_by = 99",
    );
    let out = record("1");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("99") && stderr.contains("newer"),
        "{stderr}"
    );
    assert!(!stderr.contains(password_of(&db)), "{stderr}");
    cluster.psql(name, "UPDATE schema_version SET writable_by = 1");
    let out = record("2");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A database with no cachewarden schema is refused with the command that creates it, and
/// nothing is created by a command that records.
#[test]
fn only_db_migrate_creates_the_schema() {
    if !require_postgres() {
        return;
    }
    let cluster = PgCluster::shared();
    let db = cluster.database();
    let env = Env::new();
    let out = env
        .cmd()
        .args(["--db", &db, "record", "--pipeline", "p", "--run", "1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("cachewarden db migrate"), "{stderr}");
    let name = db.rsplit('/').next().unwrap();
    let tables = cluster.psql(
        name,
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
    );
    assert_eq!(tables.trim(), "0");
    let migrated = ok(env.cmd().args(["--db", &db, "db", "migrate"]));
    let again = env
        .cmd()
        .args(["--db", &db, "db", "migrate"])
        .output()
        .unwrap();
    assert!(again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("nothing to migrate"),
        "{migrated}"
    );
}

/// A new migrated store with a hook role and a responder role granted on it.
struct Granted {
    store: crate::harness::PgDatabase,
    env: Env,
    hook_url: String,
    responder_url: String,
}

/// `db grant ROLE --role KIND` on `url`, which must succeed.
fn db_grant(env: &Env, url: &str, role: &str, kind: &str) {
    ok(env
        .cmd()
        .args(["--db", url, "db", "grant", role, "--role", kind]));
}

fn granted(cluster: &PgCluster) -> Granted {
    let store = cluster.new_database();
    let env = Env::new();
    ok(env.cmd().args(["--db", &store.url, "db", "migrate"]));
    let role_url = |role: &str, password: &str| store.url_as(role, password);
    let (hook, responder) = (
        format!("{}_hook", store.name),
        format!("{}_resp", store.name),
    );
    cluster.create_role(&hook, "hook-pw");
    cluster.create_role(&responder, "resp-pw");
    for (role, kind) in [(&hook, "hook"), (&responder, "responder")] {
        db_grant(&env, &store.url, role, kind);
    }
    let (hook_url, responder_url) = (role_url(&hook, "hook-pw"), role_url(&responder, "resp-pw"));
    Granted {
        store,
        env,
        hook_url,
        responder_url,
    }
}

/// Records run `run` of `team/app` on builder `b1` into `url`, reading a shared registry cache
/// and the pip cache mount, with `extra` arguments.
fn record_shared_cache(env: &Env, url: &str, run: &str, extra: &[&str]) -> String {
    ok(env
        .cmd()
        .args([
            "--db",
            url,
            "record",
            "--pipeline",
            "team/app",
            "--run",
            run,
        ])
        .args([
            "--builder",
            "b1",
            "--mount",
            "/root/.cache/pip",
            "--cache-from",
        ])
        .arg(format!(
            "reg.example/team/cache:main@{}",
            crate::common::digest('c')
        ))
        .args(extra))
}

/// A hook role records and traces, but PostgreSQL refuses every UPDATE and DELETE it tries on
/// every table, and any row it tries to add to incidents, journals, purges or sweeps; a
/// responder role opens an incident.
#[test]
fn the_hook_role_only_adds_provenance() {
    if !require_postgres() {
        return;
    }
    let cluster = PgCluster::shared();
    let Granted {
        store,
        env,
        hook_url,
        responder_url,
    } = granted(cluster);
    for run in ["1", "2"] {
        record_shared_cache(
            &env,
            &hook_url,
            run,
            &[
                "--cache-to",
                "type=registry,ref=reg.example/team/cache:main",
            ],
        );
    }
    let trace = ok(env.cmd().args([
        "--db",
        &hook_url,
        "trace",
        "--pipeline",
        "team/app",
        "--format",
        "json",
    ]));
    assert!(trace.contains("team/app"), "{trace}");
    let tables = cluster.psql(
        &store.name,
        "SELECT c.table_name || ' ' || c.column_name FROM information_schema.columns c
         JOIN information_schema.tables t
           ON t.table_schema = c.table_schema AND t.table_name = c.table_name
         WHERE c.table_schema = 'public' AND c.ordinal_position = 1
           AND t.table_type = 'BASE TABLE'
         ORDER BY 1",
    );
    let tables: Vec<(&str, &str)> = tables
        .lines()
        .filter_map(|line| line.split_once(' '))
        .collect();
    assert!(tables.len() > 30, "{tables:?}");
    for (table, column) in &tables {
        for sql in [
            format!("UPDATE {table} SET {column} = {column}"),
            format!("DELETE FROM {table}"),
        ] {
            let out = cluster.psql_url(&hook_url, &sql);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                !out.status.success() && stderr.contains("permission denied"),
                "the hook role ran `{sql}`: {stderr}"
            );
        }
    }
    for sql in [
        "INSERT INTO incidents (title, opened_at, opened_by, seeds, trace) VALUES ('x', 0, 'x', '{}', '{}')",
        "INSERT INTO purges (kind, builder_id, at) VALUES ('builder', 1, 0)",
        "INSERT INTO store_locks (name, owner, taken_at) VALUES ('sweep', 'x', 0)",
    ] {
        let out = cluster.psql_url(&hook_url, sql);
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("permission denied"),
            "the hook role ran `{sql}`"
        );
    }
    // Ids are the store's to give. A row taking the id its identity hands out next would make a
    // later row written in good faith conflict (or be lost); one far ahead would make a trace
    // size its arrays by it. Each is refused, with nothing added.
    let counts = || {
        cluster.psql(
            &store.name,
            "SELECT (SELECT count(*) FROM pipelines) || ' ' || (SELECT count(*) FROM runs)
                    || ' ' || (SELECT count(*) FROM events)",
        )
    };
    let before = counts();
    // Ids below 1 would keep a trace from holding the table as arrays.
    for id in ["next + 1", "next + 1000000", "0", "-5"] {
        for (table, other) in [
            ("pipelines", "name = 'forged'"),
            ("runs", "run_key = 'forged'"),
            ("events", "target = target + 1000000"),
        ] {
            let sql = format!(
                "CREATE TEMP TABLE forged AS SELECT * FROM {table} ORDER BY id LIMIT 1;
                 UPDATE forged SET id = (SELECT {id} FROM pg_sequence_last_value(
                     pg_get_serial_sequence('{table}', 'id')::regclass) next), {other};
                 INSERT INTO {table} SELECT * FROM forged"
            );
            let out = cluster.psql_url(&hook_url, &sql);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                !out.status.success()
                    && stderr.contains(&format!("of table \"{table}\" was not handed out")),
                "the hook role ran `{sql}`: {stderr}"
            );
        }
    }
    assert_eq!(counts(), before);
    ok(env.cmd().args([
        "--db",
        &hook_url,
        "record",
        "--pipeline",
        "team/app",
        "--run",
        "3",
        "--builder",
        "b1",
        "--mount",
        "/root/.cache/pip",
    ]));
    let runs = cluster.psql(&store.name, "SELECT count(*) FROM runs");
    assert_eq!(runs.trim(), "3");
    let out = env
        .cmd()
        .args([
            "--db",
            &hook_url,
            "incident",
            "open",
            "--pipeline",
            "team/app",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let opened = ok(env.cmd().args([
        "--db",
        &responder_url,
        "incident",
        "open",
        "--pipeline",
        "team/app",
    ]));
    assert!(!opened.is_empty());
}

/// A hook role adds a pipeline's first project and ceiling and nothing after them: a row of
/// `pipeline_changes` that would move a ceiling (any source), a manifest fact, and a builder's
/// endpoint are refused or left out. A hook under a config that raises the ceiling records
/// with a warning, held to the stored one, and a responder records the change; `record` and
/// `wrap` go on working on the hook role, and the responder still records endpoints.
#[test]
fn the_hook_role_cannot_move_ceilings_plant_facts_or_point_builders() {
    if !require_postgres() {
        return;
    }
    let cluster = PgCluster::shared();
    let Granted {
        store,
        env,
        hook_url,
        responder_url,
    } = granted(cluster);
    let record = |url: &str, run: &str, builder: &str, extra: &[&str]| {
        let mut cmd = env.cmd();
        cmd.env("DOCKER_HOST", "tcp://10.0.0.66:2375")
            .args(["--db", url, "record", "--pipeline", "team/app"])
            .args(["--run", run, "--builder", builder, "--driver", "docker"])
            .args(extra);
        cmd.output().unwrap()
    };
    let first = record(&hook_url, "1", "b1", &["--trust-level", "untrusted"]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let ceiling = || {
        cluster
            .psql(
                &store.name,
                "SELECT trust_level FROM pipeline_current WHERE name = 'team/app'",
            )
            .trim()
            .to_owned()
    };
    assert_eq!(ceiling(), "untrusted");
    let changes = || cluster.psql(&store.name, "SELECT count(*) FROM pipeline_changes");
    let before = changes();
    for source in ["config", "hook", "migration"] {
        let sql = format!(
            "INSERT INTO pipeline_changes (pipeline_id, field, value, source, at)
             SELECT id, 'trust_level', 'release', '{source}', 0 FROM pipelines
             WHERE name = 'team/app'"
        );
        let out = cluster.psql_url(&hook_url, &sql);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains("already has a trust_level"),
            "the hook role ran `{sql}`: {stderr}"
        );
    }
    // A migration's row is never a hook's, even as a pipeline's first.
    let out = cluster.psql_url(
        &hook_url,
        "INSERT INTO pipelines (name) VALUES ('team/new');
         INSERT INTO pipeline_changes (pipeline_id, field, value, source, at)
         SELECT id, 'trust_level', 'release', 'migration', 0 FROM pipelines
         WHERE name = 'team/new'",
    );
    assert!(!out.status.success(), "a migration row from the hook role");
    assert_eq!(changes(), before);
    assert_eq!(ceiling(), "untrusted");
    // Facts are learned by responders: a planted empty index would keep a purge from the
    // manifests it lists.
    let planted = format!(
        "INSERT INTO manifest_facts (digest, media_type, children, learned_at)
         VALUES ('{}', 'application/vnd.oci.image.index.v1+json', '[]', 0)",
        crate::common::digest('f')
    );
    let out = cluster.psql_url(&hook_url, &planted);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("permission denied"),
        "the hook role planted a manifest fact"
    );
    assert!(cluster.psql_url(&responder_url, &planted).status.success());
    // A builder named by a hook says nothing of how to reach it, however it is asked.
    let out = cluster.psql_url(
        &hook_url,
        "SELECT cw_upsert_builder('b1', 'remote', 'tcp://10.0.0.66:2375');
         SELECT cw_upsert_builder('b9', 'remote', 'tcp://10.0.0.66:2375')",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let endpoints = || {
        cluster.psql(
            &store.name,
            "SELECT name || '=' || coalesce(driver, '-') || ',' || coalesce(endpoint, '-')
             FROM builders ORDER BY name",
        )
    };
    assert_eq!(endpoints(), "b1=-,-\nb9=-,-");

    // A config raising the ceiling: the hook records, warned and held to the stored ceiling;
    // a responder's write records the change.
    let config = env.write(
        "cw.toml",
        "[[pipeline]]\nname = \"team/app\"\ntrust_level = \"release\"\n",
    );
    let config = config.display().to_string();
    let raised = record(
        &hook_url,
        "2",
        "b1",
        &["--config", &config, "--trust-level", "release"],
    );
    let stderr = String::from_utf8_lossy(&raised.stderr);
    assert!(raised.status.success(), "{stderr}");
    assert!(
        stderr.contains("keeps its trust ceiling `untrusted`") && stderr.contains("`release`"),
        "{stderr}"
    );
    assert_eq!(ceiling(), "untrusted");
    let levels = || {
        cluster.psql(
            &store.name,
            "SELECT string_agg(run_key || '=' || trust_level, ' ' ORDER BY run_key) FROM runs",
        )
    };
    assert_eq!(levels().trim(), "1=untrusted 2=untrusted");
    let by_responder = record(
        &responder_url,
        "3",
        "b3",
        &["--config", &config, "--trust-level", "release"],
    );
    assert!(
        by_responder.status.success(),
        "{}",
        String::from_utf8_lossy(&by_responder.stderr)
    );
    assert_eq!(ceiling(), "release");
    assert_eq!(levels().trim(), "1=untrusted 2=untrusted 3=release");
    assert_eq!(
        endpoints(),
        "b1=-,-\nb3=docker,tcp://10.0.0.66:2375\nb9=-,-"
    );

    // `wrap` on the hook role records its build.
    let docker = env.write("bin/docker", "#!/bin/sh\necho built\nexit 0\n");
    std::fs::set_permissions(&docker, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    ok(env
        .cmd()
        .env("DOCKER_HOST", "unix:///nonexistent.sock")
        .args(["--db", &hook_url, "wrap", "--pipeline", "team/app"])
        .args(["--run", "4", "--builder", "b1", "--"])
        .arg(&docker)
        .args(["build", "-t", "app:1", "."]));
    let runs = cluster.psql(&store.name, "SELECT count(*) FROM runs");
    assert_eq!(runs.trim(), "4");

    // A config lowering the ceiling: the hook's bulk import is warned as `record` is, and its
    // runs are held to the lower of the two.
    let lowered = env.write(
        "low.toml",
        "[[pipeline]]\nname = \"team/app\"\ntrust_level = \"internal\"\n",
    );
    let line = |run: &str| {
        format!(
            r#"{{"v":1,"type":"run","pipeline":"team/app","run":"{run}","step":"s","builder":"b1","trust_level":"release","started_at":"2026-03-01T10:00:00Z","finished_at":"2026-03-01T10:05:00Z"}}"#
        )
    };
    let file = env.write("low.jsonl", &format!("{}\n{}\n", line("5"), line("6")));
    let out = env
        .cmd()
        .args(["--db", &hook_url, "--config"])
        .arg(&lowered)
        .arg("import")
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        stderr.matches("keeps its trust ceiling `release`").count(),
        1,
        "{stderr}"
    );
    assert_eq!(
        levels().trim(),
        "1=untrusted 2=untrusted 3=release 4=release 5=internal 6=internal"
    );
}

/// A hook role adding rows by hand, not through `record`: an event naming no row of the table
/// its kind points into, or of no known kind, and a chain entry that does not follow on from
/// the head (one far ahead would leave no room for the next, a gap would stop every check of
/// the chain at it), are each refused with nothing added; `record`, `trace` and `verify-log`
/// go on as before.
#[test]
fn the_hook_role_cannot_add_events_naming_nothing_or_chain_entries_out_of_turn() {
    if !require_postgres() {
        return;
    }
    let cluster = PgCluster::shared();
    let Granted {
        store,
        env,
        hook_url,
        ..
    } = granted(cluster);
    let record = |run: &str| record_shared_cache(&env, &hook_url, run, &[]);
    record("1");
    let counts = || {
        cluster.psql(
            &store.name,
            "SELECT (SELECT count(*) FROM events) || ' ' || (SELECT count(*) FROM run_chain)
                    || ' ' || (SELECT count(*) FROM event_pages)",
        )
    };
    let before = counts();
    let run = "(SELECT id FROM runs WHERE run_key = '1')";
    for (kind, target) in [
        ("exported", "-1".to_owned()),
        ("imported", "(SELECT max(id) + 1 FROM artifacts)".to_owned()),
        ("wrote_mount", "(SELECT max(id) + 1 FROM mounts)".to_owned()),
        (
            "read_mount",
            "(SELECT min(id) FROM artifacts) + 1000".to_owned(),
        ),
        ("ran_on", "(SELECT max(id) + 1 FROM builders)".to_owned()),
        ("created_record", "1".to_owned()),
        ("reused_record", "7".to_owned()),
        ("planted", "(SELECT min(id) FROM artifacts)".to_owned()),
    ] {
        let sql = format!(
            "INSERT INTO events (run_id, kind, target, at) SELECT {run}, '{kind}', {target}, 0"
        );
        let out = cluster.psql_url(&hook_url, &sql);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success()
                && stderr.contains(&format!("names '{kind}'"))
                && stderr.contains("which the store does not hold"),
            "the hook role ran `{sql}`: {stderr}"
        );
    }
    let head = "(SELECT max(seq) FROM run_chain)";
    for seq in [
        "9223372036854775807".to_owned(),
        format!("{head} + 2"),
        head.to_owned(),
        "0".to_owned(),
        "-9223372036854775808".to_owned(),
    ] {
        let sql = format!(
            "INSERT INTO run_chain (seq, run_id, kind, events_through, details_through, encoding,
                                    hash, appended_at)
             SELECT {seq}, {run}, 'run', 0, 0, 1, decode(repeat('00', 32), 'hex'), 0"
        );
        let out = cluster.psql_url(&hook_url, &sql);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success()
                && (stderr.contains("do not follow on from the chain's head")
                    || stderr.contains("duplicate key")),
            "the hook role ran `{sql}`: {stderr}"
        );
    }
    // Two entries in one statement, the second skipping one.
    let sql = format!(
        "INSERT INTO run_chain (seq, run_id, kind, events_through, details_through, encoding,
                                hash, appended_at)
         SELECT {head} + s, {run}, 'run', 0, 0, 1, decode(repeat('00', 32), 'hex'), 0
         FROM (VALUES (1), (3)) v (s)"
    );
    let out = cluster.psql_url(&hook_url, &sql);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("do not follow on from the chain's head"),
        "the hook role ran `{sql}`: {stderr}"
    );
    assert_eq!(counts(), before);
    record("2");
    let trace = ok(env.cmd().args([
        "--db",
        &hook_url,
        "trace",
        "--pipeline",
        "team/app",
        "--format",
        "json",
    ]));
    assert!(trace.contains("team/app"), "{trace}");
    let runs = cluster.psql(&store.name, "SELECT count(*) FROM runs");
    assert_eq!(runs.trim(), "2");
    let verified = ok(env
        .cmd()
        .args(["--db", &hook_url, "verify-log", "--format", "json"]));
    let doc: serde_json::Value = serde_json::from_str(&verified).unwrap();
    assert_eq!(doc["intact"], true, "{verified}");
}

/// A store outside the `public` schema (the database's search path names its own): `db grant`
/// applies to that schema, so a role moved from responder to hook keeps no UPDATE or DELETE
/// there, and records as a hook; `--print --schema` shows the statements for it.
#[test]
fn db_grant_works_in_the_stores_own_schema() {
    if !require_postgres() {
        return;
    }
    let cluster = PgCluster::shared();
    let store = cluster.new_database();
    cluster.psql(
        &store.name,
        &format!(
            "CREATE SCHEMA cw AUTHORIZATION \"{}\"; ALTER DATABASE \"{}\" SET search_path = cw",
            store.owner, store.name
        ),
    );
    let env = Env::new();
    ok(env.cmd().args(["--db", &store.url, "db", "migrate"]));
    let role = format!("{}_moved", store.name);
    cluster.create_role(&role, "moved-pw");
    for kind in ["responder", "hook"] {
        db_grant(&env, &store.url, &role, kind);
    }
    let rights = cluster.psql(
        &store.name,
        &format!(
            "SELECT count(*) FILTER (WHERE has_table_privilege('{role}', c.oid, 'UPDATE')
                                        OR has_table_privilege('{role}', c.oid, 'DELETE')),
                    count(*) FILTER (WHERE has_table_privilege('{role}', c.oid, 'INSERT'))
             FROM pg_class c WHERE c.relnamespace = 'cw'::regnamespace AND c.relkind = 'r'"
        ),
    );
    let (changes, inserts) = rights.split_once('|').unwrap();
    assert_eq!(changes, "0", "{rights}");
    assert!(inserts.parse::<u32>().unwrap() > 5, "{rights}");
    let sequences = cluster.psql(
        &store.name,
        &format!(
            "SELECT count(*) FROM pg_class c WHERE c.relnamespace = 'cw'::regnamespace
               AND CASE WHEN c.relkind = 'S'
                        THEN has_sequence_privilege('{role}', c.oid, 'UPDATE') END"
        ),
    );
    assert_eq!(sequences, "0");
    let hook_url = store.url_as(&role, "moved-pw");
    ok(env.cmd().args([
        "--db",
        &hook_url,
        "record",
        "--pipeline",
        "p",
        "--run",
        "1",
        "--builder",
        "b1",
    ]));
    let out = cluster.psql_url(&hook_url, "UPDATE runs SET run_key = run_key");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("permission denied"),
        "{out:?}"
    );
    let printed_role = format!("{}_printed", store.name);
    cluster.create_role(&printed_role, "printed-pw");
    let printed = ok(env.cmd().args([
        "db",
        "grant",
        &printed_role,
        "--role",
        "hook",
        "--print",
        "--schema",
        "cw",
    ]));
    // Run by a DBA whose search path does not name the store's schema.
    cluster.psql(&store.name, &format!("SET search_path = public; {printed}"));
    let may = cluster.psql(
        &store.name,
        &format!(
            "SELECT has_table_privilege('{printed_role}', 'cw.runs', 'INSERT')
                    AND NOT has_table_privilege('{printed_role}', 'cw.runs', 'UPDATE')"
        ),
    );
    assert_eq!(may, "t");
    assert!(
        printed.contains(&format!(
            "REVOKE ALL ON ALL TABLES IN SCHEMA \"cw\" FROM \"{printed_role}\""
        )),
        "{printed}"
    );
    assert!(
        printed.contains("GRANT INSERT ON \"cw\".pipelines, \"cw\".pipeline_changes"),
        "{printed}"
    );
    assert!(
        printed.contains("GRANT EXECUTE ON FUNCTION \"cw\".cw_upsert_builder(TEXT, TEXT, TEXT)"),
        "{printed}"
    );
    assert!(!printed.contains("public"), "{printed}");
}

/// A record's words (which decide whether it carries taint) go in only with the run that says
/// them. What hooks record goes in as before: a doubted run's words for a record it names first,
/// a believed run's later words, each in its own import. A hook role by hand gives no record
/// words without a run of its transaction naming it, and marks no record that runs named before
/// as a doubted run's; the trace from the doubted run still reaches the release build.
#[test]
fn a_hook_adds_a_records_words_only_with_the_run_that_says_them() {
    if !require_postgres() {
        return;
    }
    let cluster = PgCluster::shared();
    let Granted {
        store,
        env,
        hook_url,
        responder_url,
    } = granted(cluster);
    let line = |pipeline: &str, level: &str, run: &str, records: &str, produced: &str| {
        format!(
            r#"{{"v":1,"type":"run","pipeline":"{pipeline}","trust_level":"{level}","run":"{run}","step":"s","builder":"ci-1","started_at":"2026-01-0{run}T00:00:00Z","finished_at":"2026-01-0{run}T00:01:00Z","records":{records}{produced}}}"#
        )
    };
    let image = format!(
        r#","produced":["reg.example/web:3@sha256:{}"]"#,
        "d".repeat(64)
    );
    let first = env.write(
        "first.jsonl",
        &format!(
            "{}\n{}\n",
            line(
                "forks-pr",
                "untrusted",
                "1",
                r#"{"created":[{"id":"rX","type":"regular","description":"pulled from docker.io/library/alpine:3"},{"id":"rZ","type":"regular","description":"pulled from docker.io/library/alpine:3"}],"reused":[]}"#,
                ""
            ),
            line(
                "web-release",
                "release",
                "2",
                r#"{"created":[{"id":"rY","type":"regular","description":"[2/2] RUN make"}],"reused":[]}"#,
                ""
            )
        ),
    );
    ok(env.cmd().args(["--db", &hook_url, "import"]).arg(&first));
    let second = env.write(
        "second.jsonl",
        &format!(
            "{}\n",
            line(
                "web-release",
                "release",
                "3",
                r#"{"created":[],"reused":[{"id":"rX","type":"regular","description":"[2/2] RUN make"}]}"#,
                &image
            )
        ),
    );
    ok(env.cmd().args(["--db", &hook_url, "import"]).arg(&second));
    let words = || {
        cluster.psql(
            &store.name,
            "SELECT r.record_id, d.believed, d.description FROM record_descriptions d
             JOIN builder_records r ON r.id = d.record ORDER BY 1, 2",
        )
    };
    let recorded = words();
    assert_eq!(
        recorded.trim(),
        "rX|0|pulled from docker.io/library/alpine:3\nrX|1|[2/2] RUN make\n\
         rZ|0|pulled from docker.io/library/alpine:3"
    );
    let of =
        |record: &str| format!("(SELECT id FROM builder_records WHERE record_id = '{record}')");
    for sql in [
        // Believed words for a record only a doubted run described, with no run.
        format!(
            "INSERT INTO record_descriptions VALUES ({}, 1, 'regular', 'pulled from x')",
            of("rZ")
        ),
        // A record a believed run made, marked a doubted run's, then described as pulled.
        format!(
            "INSERT INTO record_descriptions VALUES ({r}, 0, 'regular', 'x'), ({r}, 1, 'regular', 'pulled from x')",
            r = of("rY")
        ),
        format!(
            "INSERT INTO record_descriptions VALUES ({}, 0, 'regular', 'x')",
            of("rY")
        ),
    ] {
        let out = cluster.psql_url(&hook_url, &sql);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains("only with the run that says them"),
            "{sql}: {stderr}"
        );
    }
    assert_eq!(words(), recorded);
    // A believed run recorded again with words for a record its earlier write named without
    // any: no event of its own comes with them, so they are not taken, and the write stands.
    for (file, words) in [
        ("bare.jsonl", r#""type":"""#),
        (
            "worded.jsonl",
            r#""type":"regular","description":"[2/2] RUN make""#,
        ),
    ] {
        let records = format!(r#"{{"created":[],"reused":[{{"id":"rZ",{words}}}]}}"#);
        let file = env.write(
            file,
            &format!("{}\n", line("web-release", "release", "4", &records, "")),
        );
        ok(env.cmd().args(["--db", &hook_url, "import"]).arg(&file));
    }
    assert_eq!(words(), recorded);
    let trace = ok(env.cmd().args([
        "--db",
        &responder_url,
        "trace",
        "--run",
        "forks-pr/1/s",
        "--format",
        "json",
    ]));
    assert!(
        trace.contains("run:web-release/3/s") && trace.contains("reg.example/web"),
        "{trace}"
    );
}

/// A mount use's details only grow: a run recorded again with another target path adds the
/// union of its uses, through the hook role, and a hook role by hand adds no detail that leaves
/// out a target path seen before (a purge finds a mount's records on Docker 20.10 by them).
#[test]
fn a_hook_adds_mount_details_only_with_the_uses_seen_before() {
    if !require_postgres() {
        return;
    }
    let cluster = PgCluster::shared();
    let Granted {
        store,
        env,
        hook_url,
        ..
    } = granted(cluster);
    let run = |target: &str| {
        format!(
            "{}\n",
            format_args!(
                r#"{{"v":1,"type":"run","pipeline":"web","run":"1","step":"s","builder":"ci-1","started_at":"2026-01-01T00:00:00Z","finished_at":"2026-01-01T00:01:00Z","mounts":[{{"id":"pip","target":"{target}"}}]}}"#
            )
        )
    };
    for (file, target) in [("a.jsonl", "/a"), ("b.jsonl", "/b")] {
        let file = env.write(file, &run(target));
        ok(env.cmd().args(["--db", &hook_url, "import"]).arg(&file));
    }
    let newest = || {
        cluster.psql(
            &store.name,
            "SELECT d.detail FROM event_details d ORDER BY d.id DESC LIMIT 1",
        )
    };
    let seen = newest();
    assert!(seen.contains("\"/a\"") && seen.contains("\"/b\""), "{seen}");
    let add = |detail: &str| {
        cluster.psql_url(
            &hook_url,
            &format!(
                "INSERT INTO event_details (event_id, detail, at)
                 SELECT id, '{detail}', 0 FROM events WHERE kind = 'read_mount'"
            ),
        )
    };
    for detail in [
        r#"[{"id":"pip","target":"/c"}]"#,
        r#"[{"id":"pip","target":"/a"}]"#,
        "[]",
        "not json",
        // Every use seen, in uses a reader cannot parse (read as no use at all).
        r#"[{"id":"pip","target":"/a","x":1},{"id":"pip","target":"/b"}]"#,
        r#"[{"id":"pip","target":"/zzz","target":"/a"},{"id":"pip","target":"/b"}]"#,
        r#"[{"id":"pip","target":"/a"},{"id":"pip","target":"/b","sharing":"bogus"}]"#,
        r#"[{"id":"pip","target":"/a","uid":-1},{"id":"pip","target":"/b"}]"#,
        r#"[{"id":"pip","target":"/a","mode":1e3},{"id":"pip","target":"/b"}]"#,
        r#"[{"target":"/a"},{"id":"pip","target":"/b"}]"#,
    ] {
        let out = add(detail);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains("every use seen before"),
            "{detail}: {stderr}"
        );
    }
    assert_eq!(newest(), seen);
    // A detail holding every use seen, and more, only widens what a purge takes.
    let wider = r#"[{"id":"pip","target":"/a","sharing":"private","readonly":true,"uid":0},{"id":"pip","target":"/b"},{"id":"pip","target":"/c"}]"#;
    let out = add(wider);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Receipts are the collector's. A hook role adds none by hand, for an earlier run of any
/// pipeline (a bound on when it began would narrow a trace from it, a doubt would widen one),
/// and no refusal; it still adds the store's doubt of a run it records after a purge that run
/// claims to predate, as `record` does on any store. A collector role adds both.
#[test]
fn receipts_are_the_collectors_and_a_hook_adds_only_its_own_doubt() {
    if !require_postgres() {
        return;
    }
    let cluster = PgCluster::shared();
    let Granted {
        store,
        env,
        hook_url,
        responder_url,
    } = granted(cluster);
    let record = |run: &str, finished: &str| {
        ok(env.cmd().args([
            "--db",
            &hook_url,
            "record",
            "--pipeline",
            "team/app",
            "--run",
            run,
            "--builder",
            "b1",
            "--started-at",
            "2026-06-01T00:00:00Z",
            "--finished-at",
            finished,
            "--mount",
            "/root/.cache/pip",
        ]))
    };
    record("1", "2026-06-01T00:10:00Z");
    let receipts = || {
        cluster.psql(
            &store.name,
            "SELECT coalesce(string_agg(r.run_key || '=' || c.identity, ' ' ORDER BY r.run_key), '')
             FROM run_receipts c JOIN runs r ON r.id = c.run_id",
        )
    };
    assert_eq!(receipts(), "");
    let run = "(SELECT id FROM runs WHERE run_key = '1')";
    for (identity, late, suspect, began) in [
        ("'ci.example'", "0", "NULL", "1780272000000000"),
        ("'ci.example'", "1", "'forged'", "NULL"),
        ("'store'", "0", "'forged'", "NULL"),
        ("'store'", "0", "NULL", "NULL"),
    ] {
        let sql = format!(
            "INSERT INTO run_receipts (run_id, received_at, identity, late, time_suspect,
                                       began_after)
             SELECT {run}, 0, {identity}, {late}, {suspect}, {began}"
        );
        let out = cluster.psql_url(&hook_url, &sql);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains("adds no receipt but the store's doubt"),
            "the hook role ran `{sql}`: {stderr}"
        );
    }
    let refusal = "INSERT INTO collector_refusals (at, status, code, reason, claimed)
                   VALUES (0, 401, 'forged', 'forged', '{}')";
    let out = cluster.psql_url(&hook_url, refusal);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("permission denied"),
        "{out:?}"
    );
    assert_eq!(receipts(), "");

    // A purge of b1 the store holds; a run recorded after it that claims to have finished
    // before it is kept, doubted by the store, through the hook role.
    let purged = cluster.psql_url(
        &responder_url,
        "INSERT INTO purges (kind, builder_id, at, method, author)
         SELECT 'builder', id, 1782864000000000, 'manual', 'responder' FROM builders
         WHERE name = 'b1'",
    );
    assert!(purged.status.success(), "{purged:?}");
    record("2", "2026-06-01T00:20:00Z");
    assert_eq!(receipts(), "2=store");
    let doubt = cluster.psql(
        &store.name,
        "SELECT time_suspect FROM run_receipts c JOIN runs r ON r.id = c.run_id
         WHERE r.run_key = '2'",
    );
    assert!(doubt.contains("before a purge"), "{doubt}");

    // A collector role adds receipts and refusals.
    let collector = format!("{}_coll", store.name);
    cluster.create_role(&collector, "coll-pw");
    db_grant(&env, &store.url, &collector, "collector");
    let collector_url = store.url_as(&collector, "coll-pw");
    for sql in [
        format!(
            "INSERT INTO run_receipts (run_id, received_at, identity) SELECT {run}, 0, 'ci.example'"
        ),
        refusal.to_owned(),
    ] {
        let out = cluster.psql_url(&collector_url, &sql);
        assert!(
            out.status.success(),
            "the collector could not run `{sql}`: {out:?}"
        );
    }
    assert_eq!(receipts(), "1=ci.example 2=store");
    let out = cluster.psql_url(&collector_url, "UPDATE runs SET run_key = run_key");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("permission denied"),
        "{out:?}"
    );
}

/// The server's checks of new events and chain entries look each row up on its own, whatever
/// size of statement a server process saw first: PL/pgSQL keeps the plan of its first call,
/// and a join planned for a large first batch (even one that fails) would read whole tables at
/// every later `record` on that process. After 20,000-row statements, no check of a one-row
/// statement joins or hashes.
#[test]
fn the_servers_checks_plan_no_join_whatever_comes_first() {
    if !require_postgres() {
        return;
    }
    let cluster = PgCluster::shared();
    let Granted { store, env, .. } = granted(cluster);
    record_shared_cache(&env, &store.url, "1", &[]);
    let out = cluster.psql_output(
        &store.name,
        "LOAD 'auto_explain';
         BEGIN;
         DO $$ BEGIN
             INSERT INTO events (run_id, kind, target, at)
             SELECT r.id, 'produced', -g, 0 FROM runs r, generate_series(1, 20000) g;
         EXCEPTION WHEN foreign_key_violation THEN NULL;
         END $$;
         INSERT INTO run_chain (seq, run_id, kind, events_through, details_through, encoding,
                                hash, appended_at)
         SELECT (SELECT max(seq) FROM run_chain) + g, r.id, 'events', 0, 0, 1,
                decode(repeat('00', 32), 'hex'), 0
         FROM runs r, generate_series(1, 20000) g;
         ROLLBACK;
         BEGIN;
         SET LOCAL auto_explain.log_min_duration = 0;
         SET LOCAL auto_explain.log_nested_statements = on;
         SET LOCAL auto_explain.log_level = notice;
         INSERT INTO events (run_id, kind, target, at)
         SELECT r.id, 'used_base', a.id, 0 FROM runs r, artifacts a LIMIT 1;
         INSERT INTO run_chain (seq, run_id, kind, events_through, details_through, encoding,
                                hash, appended_at)
         SELECT (SELECT max(seq) FROM run_chain) + 1, r.id, 'events', 0, 0, 1,
                decode(repeat('00', 32), 'hex'), 0 FROM runs r;
         ROLLBACK;",
    );
    let notices = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{notices}");
    let checks: Vec<&str> = notices
        .split("NOTICE:")
        .filter(|plan| plan.contains("cw_new_rows"))
        .collect();
    assert!(
        checks
            .iter()
            .any(|plan| plan.contains("builder_records br")),
        "the one-row insert's target check: {notices}"
    );
    // Of the one-row statements: the run check, the target check and the ids' check of the
    // event; the run check and the span of the chain entry.
    assert!(checks.len() >= 5, "{notices}");
    for plan in checks {
        for join in ["Join", "Hashed SubPlan", "Hash Anti", "Hash Semi", "Merge"] {
            assert!(!plan.contains(join), "{plan}");
        }
    }
}

/// A session holding the store's writer lock, idle (a stalled or hostile client): a write that
/// waits out the statement timeout exits 3 naming the server process that holds the lock and
/// its role and application, escaped, so that a responder can end it; nothing is written. The
/// collector answers such a run 503 without the store's details, which it logs. Once the
/// holder is gone the same writes go through.
#[test]
fn a_write_stalled_on_the_writer_lock_names_its_holder() {
    if !require_postgres() {
        return;
    }
    let cluster = PgCluster::shared();
    let store = cluster.new_database();
    let env = Env::with_store(&store.url);
    ok(env.cmd().args(["db", "migrate"]));
    let config = env.write("cw.toml", "[store]\nstatement_timeout = \"1s\"\n");
    // The key `src/store/db.rs` takes it by.
    let mut holder = Command::new(cluster.program("psql"))
        .args(["-X", "-q", "-d", &store.url])
        .args(["-c", "SELECT pg_advisory_lock(27973102275491681)"])
        .args(["-c", "SELECT pg_sleep(60)"])
        .env("PGAPPNAME", "stall\u{1b}[31mer")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The writer lock of this store's database (other tests share the cluster).
    let lock = "FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = 6512995
                  AND objid = 1751480161 AND objsubid = 1
                  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())";
    let held = || cluster.psql(&store.name, &format!("SELECT count(*) {lock}")) == "1";
    let started = std::time::Instant::now();
    while !held() && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(held(), "the holder never took the lock");
    let pid = cluster.psql(&store.name, &format!("SELECT pid {lock}"));
    let record = || {
        env.cmd_with(&config)
            .args(["record", "--pipeline", "p", "--run", "1", "--builder", "b1"])
            .output()
            .unwrap()
    };
    let out = record();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("waited that long for the store's writer lock")
            && stderr.contains(&format!(
                "held by server process {pid} (role `{}`",
                store.owner
            ))
            // The server keeps printable ASCII of an application name, as `?` else.
            && stderr.contains("application `stall?[31mer`"),
        "{stderr}"
    );
    assert!(!stderr.contains('\u{1b}'), "{stderr}");
    assert_eq!(cluster.psql(&store.name, "SELECT count(*) FROM runs"), "0");

    let key = Key::rsa(env.path(), "rsa-1");
    let issuer = Issuer::start(&[&key]);
    let collector_config = env.write(
        "collector.toml",
        &oidc::config(&issuer, "github", "[store]\nstatement_timeout = \"1s\"\n"),
    );
    let collector = Collector::start(env.cmd_with(&collector_config), 0);
    let token = key.sign(&oidc::github_claims(&issuer.url, "acme/web", "build", "7"));
    let line = oidc::run_line("acme/web/build", "7-1");
    let answer = collector.post(&token, &line);
    assert_eq!(answer.status, 503, "{}", answer.text());
    assert_eq!(answer.json()["error"], "store_unavailable");
    let reason = answer.json()["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        reason.contains("send it again later") && !reason.contains(&pid),
        "{reason}"
    );
    let logged = collector.log_with("writer lock");
    assert!(
        logged.contains(&format!("held by server process {pid}")),
        "{logged}"
    );
    holder.kill().unwrap();
    holder.wait().unwrap();
    cluster.psql("postgres", &format!("SELECT pg_terminate_backend({pid})"));
    let out = record();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer = collector.post(&token, &line);
    assert_eq!(answer.status, 201, "{}", answer.text());
    assert_eq!(cluster.psql(&store.name, "SELECT count(*) FROM runs"), "2");
}

/// Anyone may probe `/healthz`: while the store is down each probe answers 503, but the log
/// says so once a minute, not once a probe. The collector connects again once the server is
/// back, and the probe answers 200.
#[test]
fn a_store_that_is_down_is_logged_once_however_often_it_is_probed() {
    if !require_postgres() {
        return;
    }
    let cluster = PgCluster::start();
    let store = cluster.new_database();
    let env = Env::with_store(&store.url);
    ok(env.cmd().args(["db", "migrate"]));
    let key = Key::rsa(env.path(), "rsa-1");
    let issuer = Issuer::start(&[&key]);
    let config = env.write("collector.toml", &oidc::config(&issuer, "github", ""));
    let collector = Collector::start(env.cmd_with(&config), 0);
    assert_eq!(collector.get("/healthz").status, 200);
    cluster.kill();
    for _ in 0..5 {
        assert_eq!(collector.get("/healthz").status, 503);
    }
    let log = collector.log_with("store unavailable");
    assert_eq!(log.matches("store unavailable").count(), 1, "{log}");
    cluster.restart();
    let back = crate::harness::wait_until(Duration::from_secs(20), || {
        collector.get("/healthz").status == 200
    });
    assert!(back, "{}", collector.log());
}

/// A hook role that may create objects in the store's schema could define a function the
/// owner's functions and triggers would call in place of the built-in one: `db grant` refuses
/// it, naming the privilege, and grants once it is revoked.
#[test]
fn db_grant_refuses_a_hook_that_may_create_in_the_schema() {
    if !require_postgres() {
        return;
    }
    let cluster = PgCluster::shared();
    let store = cluster.new_database();
    let env = Env::new();
    ok(env.cmd().args(["--db", &store.url, "db", "migrate"]));
    let hook = format!("{}_hook", store.name);
    cluster.create_role(&hook, "hook-pw");
    cluster.psql(
        &store.name,
        &format!(
            "GRANT CREATE ON SCHEMA public TO PUBLIC; GRANT CREATE ON SCHEMA public TO {hook}"
        ),
    );
    let grant = || {
        env.cmd()
            .args(["--db", &store.url, "db", "grant", &hook, "--role", "hook"])
            .output()
            .unwrap()
    };
    for revoke in [
        format!("REVOKE CREATE ON SCHEMA public FROM {hook}"),
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC".to_owned(),
    ] {
        let out = grant();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains(&format!(
                "role `{hook}` may create objects in schema `public`"
            )),
            "{stderr}"
        );
        cluster.psql(&store.name, &revoke);
    }
    db_grant(&env, &store.url, &hook, "hook");
}

/// `db grant --print` shows the statements, the role name quoted as one identifier however it
/// is spelt, and changes nothing.
#[test]
fn db_grant_print_quotes_the_role() {
    let env = Env::new();
    let sql = ok(env.cmd().args([
        "--db",
        "postgresql://owner@127.0.0.1:1/none",
        "db",
        "grant",
        "ci\"; DROP TABLE runs; --",
        "--role",
        "hook",
        "--print",
    ]));
    assert!(sql.contains("TO \"ci\"\"; DROP TABLE runs; --\";"), "{sql}");
    assert!(
        sql.contains("GRANT INSERT ON \"public\".pipelines"),
        "{sql}"
    );
    assert!(!sql.contains("UPDATE") && !sql.contains("DELETE"), "{sql}");
}

/// A PostgreSQL server killed in the middle of a purge: the purge exits 3 naming the store,
/// every action it recorded done stays done, and after a restart the rerun deletes the rest
/// without attempting a done one again.
#[test]
fn a_server_killed_mid_purge_then_rerun_completes() {
    let Some((registry, _)) = crate::common::registry_env() else {
        return;
    };
    if !require_postgres() {
        return;
    }
    let cluster = PgCluster::start();
    let db = cluster.new_database();
    let env = Env::with_store(&db.url);
    ok(env.cmd().args(["db", "migrate"]));
    let (h, config) = crate::purge::opened(&env, &registry, 300);
    let count = |sql: &str| -> i64 { cluster.psql(&db.name, sql).trim().parse().unwrap_or(0) };
    let done = "SELECT count(*) FROM actions WHERE state = 'done'";
    let child = env
        .execute(&config, "1", &["--concurrency", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while count(done) < 20 && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(5));
    }
    cluster.kill();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(!stderr.contains(&db.password), "{stderr}");
    cluster.restart();
    let done_before: Vec<String> = cluster
        .psql(
            &db.name,
            "SELECT id FROM actions WHERE state = 'done' ORDER BY id",
        )
        .lines()
        .map(str::to_owned)
        .collect();
    assert!(
        done_before.len() >= 20 && done_before.len() < 301,
        "killed after {} actions",
        done_before.len()
    );
    let out = crate::common::output(&env, &mut env.execute(&config, "1", &[]));
    assert!(out.starts_with("exit: 5\n"), "{out}");
    for id in &done_before {
        let attempts = count(&format!("SELECT attempts FROM actions WHERE id = {id}"));
        assert_eq!(
            attempts, 1,
            "action {id} was done before the kill and ran again"
        );
    }
    assert_eq!(
        count(
            "SELECT count(*) FROM actions WHERE kind = 'delete-manifest' AND in_scope = 1 AND state <> 'done'"
        ),
        0
    );
    for p in &h.tainted {
        assert!(!crate::common::manifest_exists(
            &registry, "team/app", &p.digest
        ));
    }
}

/// The store-level tests that write through every path a fleet uses (record, import, incidents
/// and their purges against a real registry, sweeps, the collector) pass with every store
/// reached through PgBouncer in transaction pooling mode, two server connections per database:
/// nothing the store does depends on session state.
#[test]
fn store_level_tests_pass_behind_pgbouncer() {
    if !require_pgbouncer() || std::env::var_os("CACHEWARDEN_TEST_PG").is_some() {
        return;
    }
    let cluster = PgCluster::shared();
    let role = format!("cw_pooled_{}", std::process::id());
    cluster.create_role(&role, "unused");
    cluster.psql("postgres", &format!("ALTER ROLE {role} CREATEDB"));
    let bouncer = PgBouncer::start(cluster, &[&role]);
    let admin = format!("postgresql://{role}:unused@127.0.0.1:{}", bouncer.port());
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.env("CACHEWARDEN_TEST_PG", &admin).args([
        "--test-threads",
        "2",
        "record::",
        "purge::",
        "lifecycle::",
        "sweep::",
        "serve::",
        "ls::",
        "--skip",
        "postgres::",
        "--skip",
        "pg_harness::",
    ]);
    for skip in SQLITE_ONLY.iter().chain(BUILDER_TESTS) {
        cmd.args(["--skip", skip]);
    }
    let out = cmd.output().expect("run the tests again");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "store-level tests failed behind PgBouncer:\n{stdout}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        crate::harness::log_tail(&bouncer.log(), 2000)
    );
    let passed: usize = stdout
        .lines()
        .filter(|line| line.starts_with("test result:"))
        .flat_map(|line| {
            line.split_whitespace()
                .skip_while(|word| *word != "ok.")
                .nth(1)
                .and_then(|n| n.parse::<usize>().ok())
        })
        .sum();
    eprintln!("behind PgBouncer: {passed} tests passed");
    assert!(passed >= 25, "only {passed} tests ran behind PgBouncer");
}

/// Through PgBouncer in transaction pooling mode (two server connections shared by every
/// client), concurrent `record`s, an `import`, `trace`, `export` and `verify-log` give the
/// answers a direct connection gives, and a sweep still finds the store's lock held.
#[test]
fn pgbouncer_transaction_pooling_answers_as_a_direct_connection() {
    if !require_pgbouncer() {
        return;
    }
    let cluster = PgCluster::shared();
    let direct = cluster.new_database();
    let pooled_db = cluster.new_database();
    let bouncer = PgBouncer::start(cluster, &[&pooled_db.owner]);
    let pooled = bouncer.url(&pooled_db.url);
    let env = Env::new();
    for db in [&direct.url, &pooled] {
        ok(env.cmd().args(["--db", db, "db", "migrate"]));
    }
    let fleet = generate_fleet(&env, (300, 10, 3, 20), None);
    for db in [&direct.url, &pooled] {
        ok(env
            .cmd()
            .args(["--db", db, "import", "--batch-size", "50"])
            .arg(&fleet));
    }
    let record = |db: &str, i: usize| {
        let mut cmd = env.cmd();
        cmd.args([
            "--db",
            db,
            "record",
            "--pipeline",
            &format!("p{}", i % 4),
            "--run",
            &format!("live-{i}"),
            "--builder",
            "b1",
            "--started-at",
            "2026-03-01T10:00:00Z",
            "--finished-at",
            "2026-03-01T10:05:00Z",
            "--cache-from",
            &format!("reg.example/team/cache:main@{}", crate::common::digest('c')),
            "--mount",
            "/root/.cache/pip",
        ]);
        cmd
    };
    let children: Vec<_> = (0..16)
        .map(|i| {
            record(&pooled, i)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for i in 0..16 {
        ok(&mut record(&direct.url, i));
    }
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let sorted = |text: String| {
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        lines.sort();
        lines
    };
    let export = |db: &str| sorted(ok(env.cmd().args(["--db", db, "export"])));
    assert_eq!(export(&pooled), export(&direct.url));
    for seed in [
        ["--pipeline", "p3"],
        ["--builder", "b1"],
        ["--pipeline", "p1"],
    ] {
        let trace = |db: &str| {
            ok(env
                .cmd()
                .args(["--db", db, "trace", "--format", "json"])
                .args(seed))
        };
        assert_eq!(trace(&pooled), trace(&direct.url), "{seed:?}");
    }
    ok(env.cmd().args(["--db", &pooled, "verify-log"]));
    cluster.psql(
        &pooled_db.name,
        "INSERT INTO store_locks (name, owner, taken_at) VALUES ('sweep', 'elsewhere:1', 0)",
    );
    let policy = env.write(
        "policy.toml",
        "[[rule]]\nselect = \"cache-refs\"\naction = \"purge\"\n",
    );
    let out = env
        .cmd()
        .args(["--db", &pooled, "sweep", "--execute", "--yes", "--policy"])
        .arg(&policy)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(stderr.contains("elsewhere:1"), "{stderr}");
}

/// An import into PostgreSQL, in batches that cut the fleet anywhere and again over what it
/// already holds, stores what the same import into SQLite stores: the same export, the same
/// trace JSON, and a chain of the same length that verifies.
#[test]
fn a_bulk_import_stores_what_sqlite_stores() {
    if !require_postgres() {
        return;
    }
    let cluster = PgCluster::shared();
    let env = Env::new();
    let fleet = generate_fleet(&env, (300, 9, 3, 12), Some(5));
    let sqlite = env.path().join("fleet.db");
    let pg = pg_store(cluster);
    for db in [sqlite.to_str().unwrap(), pg.as_str()] {
        // A second import repeats every run key: nothing new, nothing refused.
        for batch in ["97", "1000"] {
            ok(env
                .cmd()
                .args(["--db", db, "import", "--batch-size", batch])
                .arg(&fleet));
        }
    }
    let run = |db: &str, args: &[&str]| ok(env.cmd().args(["--db", db]).args(args));
    let lite = sqlite.to_str().unwrap();
    assert_eq!(run(lite, &["export"]), run(&pg, &["export"]));
    for seed in [
        &["--pipeline", "p1"][..],
        &["--builder", "b0"],
        &["--pipeline", "p4"],
    ] {
        let args: Vec<&str> = ["trace", "--format", "json"]
            .iter()
            .chain(seed)
            .copied()
            .collect();
        let (a, b) = (run(lite, &args), run(&pg, &args));
        assert!(a.len() > 100, "{seed:?} finds something: {a}");
        assert!(a == b, "{seed:?}: the traces differ");
    }
    let length = |db: &str| {
        let out = run(db, &["verify-log", "--format", "json"]);
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(json["intact"], true, "{out}");
        json["length"].as_i64().unwrap()
    };
    assert_eq!(length(lite), 300);
    assert_eq!(length(&pg), 300);
}

/// `record` writes a new run's events a few rows a statement on PostgreSQL as on SQLite: the
/// rows, their ids and the chain entries are the ones SQLite stores, for a run with more
/// events than one statement takes, one naming a cache twice, a run recorded again with one
/// more, then again with other facts (refused), and runs after them, the last on a builder,
/// with a mount and an image new to the store: naming a row again draws no id on either.
#[test]
fn recorded_events_are_the_rows_sqlite_stores() {
    if !require_postgres() {
        return;
    }
    let cluster = PgCluster::shared();
    let env = Env::new();
    let sqlite = env.path().join("lite.db");
    let pg = pg_store(cluster);
    let refs: Vec<String> = (1..=20)
        .map(|i| format!("registry.example.com/lib{i}/cache:main@sha256:{i:064x}"))
        .collect();
    let times = [
        "--started-at",
        "2026-03-01T10:00:00Z",
        "--finished-at",
        "2026-03-01T10:05:00Z",
    ];
    for db in [sqlite.to_str().unwrap(), pg.as_str()] {
        let record = |pipeline: &str, args: &[&str]| {
            ok(env
                .cmd()
                .args(["--db", db, "record", "--pipeline", pipeline, "--run", "1"])
                .args(["--builder", "b1"])
                .args(times)
                .args(args));
        };
        let mut many = vec![
            "--mount",
            "/root/.cache/pip",
            "--image",
            "registry.example.com/app:1",
        ];
        for r in &refs {
            many.extend(["--cache-from", r.as_str()]);
        }
        record("p1", &many);
        let twice = ["--cache-from", &refs[0], "--cache-from", &refs[0]];
        record("p2", &twice);
        record("p2", &[&twice[..], &["--cache-from", &refs[1]]].concat());
        // Recorded again with other facts: refused, and nothing drawn for it.
        let out = env
            .cmd()
            .args(["--db", db, "record", "--pipeline", "p2", "--run", "1"])
            .args(["--builder", "b1", "--started-at", "2026-03-01T10:00:00Z"])
            .args(["--finished-at", "2026-03-01T10:06:00Z"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        record("p3", &["--cache-from", &refs[2]]);
        // A builder, an artifact and a mount new to the store, after each kind was named again.
        ok(env
            .cmd()
            .args(["--db", db, "record", "--pipeline", "p4", "--run", "1"])
            .args(["--builder", "b4", "--mount", "/root/.cache/npm"])
            .args(["--image", "registry.example.com/app:4"])
            .args(times));
    }
    let conn = rusqlite::Connection::open(&sqlite).unwrap();
    let lite = |sql: &str| -> Vec<String> {
        let mut stmt = conn.prepare(sql).unwrap();
        stmt.query_map([], |row| row.get::<_, String>(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let name = cluster_database_name(&pg);
    let on_pg = |sql: &str| -> Vec<String> {
        let out = cluster.psql(&name, sql);
        out.lines().map(str::to_owned).collect()
    };
    // Every row in the same order, with the same ids: recording a run or an event already
    // there draws none.
    let events = "SELECT id || ' ' || run_id || ' ' || kind || ' ' || target || ' ' || at \
                  || ' ' || coalesce(detail, '-') FROM events ORDER BY id";
    let stored = lite(events);
    // The first run alone has more events than one statement inserts.
    assert!(stored.len() > 24, "{stored:#?}");
    assert_eq!(stored, on_pg(events));
    let new_runs = "SELECT id || ' ' || kind || ' ' || target FROM events \
                    WHERE id <= (SELECT events_through FROM run_chain WHERE seq = 2) ORDER BY id";
    assert_eq!(lite(new_runs), on_pg(new_runs));
    for (table, rows) in [
        (
            "SELECT id || ' ' || pipeline_id || ' ' || run_key FROM runs ORDER BY id",
            4,
        ),
        ("SELECT id || ' ' || name FROM builders ORDER BY id", 2),
        (
            "SELECT id || ' ' || locator || coalesce(digest, '') FROM artifacts ORDER BY id",
            22,
        ),
        (
            "SELECT id || ' ' || builder_id || ' ' || mount_id FROM mounts ORDER BY id",
            2,
        ),
    ] {
        assert_eq!(lite(table).len(), rows, "{table}");
        assert_eq!(lite(table), on_pg(table), "{table}");
    }
    let chain = "SELECT seq || ' ' || run_id || ' ' || kind FROM run_chain ORDER BY seq";
    assert_eq!(lite(chain).len(), 5);
    assert_eq!(lite(chain), on_pg(chain));
    // The entries of the new runs end at each run's last event, on both.
    let ends = "SELECT c.events_through || ' ' || (SELECT max(e.id) FROM events e \
                    WHERE e.run_id = c.run_id AND e.id <= c.events_through) \
                FROM run_chain c WHERE c.seq <= 2 ORDER BY c.seq";
    let lite_ends = lite(ends);
    assert!(
        lite_ends
            .iter()
            .all(|l| l.split(' ').next() == l.split(' ').nth(1)),
        "{lite_ends:?}"
    );
    assert_eq!(lite_ends, on_pg(ends));
}

/// The upsert functions draw an id only for a row not there, and the batch forms answer in
/// the order given, rows found and rows added mixed (a release that takes the ids by position
/// keeps working): an artifact or build record named again keeps its id, its first sighting
/// only moves earlier, and the identity hands the next new row the next id.
#[test]
fn upserts_draw_ids_only_for_new_rows_and_answer_in_the_order_given() {
    if !require_postgres() {
        return;
    }
    let cluster = PgCluster::shared();
    let db = pg_store(cluster);
    let name = cluster_database_name(&db);
    let sql = |sql: &str| cluster.psql(&name, sql).trim().to_owned();
    assert_eq!(sql("SELECT cw_upsert_builder('b1', NULL, NULL)"), "1");
    assert_eq!(sql("SELECT cw_upsert_builder('b1', NULL, NULL)"), "1");
    assert_eq!(sql("SELECT cw_upsert_builder('b2', NULL, NULL)"), "2");
    assert_eq!(sql("SELECT cw_upsert_mount(1, '', '/m')"), "1");
    assert_eq!(sql("SELECT cw_upsert_mount(1, '', '/m')"), "1");
    assert_eq!(sql("SELECT cw_upsert_mount(2, '', '/m')"), "2");
    let artifacts = |keys: &[&str], seen: i64| {
        let n = keys.len();
        let list = |item: &str| vec![format!("'{item}'"); n].join(",");
        let keys: Vec<String> = keys.iter().map(|k| format!("'{k}'")).collect();
        sql(&format!(
            "SELECT key || ':' || id FROM cw_upsert_artifacts(ARRAY[{}], ARRAY[{}], ARRAY[{}], \
             ARRAY[{}], ARRAY[{}]::int8[])",
            list("gha"),
            list(""),
            list(""),
            keys.join(","),
            vec![seen.to_string(); n].join(",")
        ))
        .replace('\n', " ")
    };
    assert_eq!(artifacts(&["a", "b"], 100), "a:1 b:2");
    assert_eq!(artifacts(&["c", "a", "d", "b"], 50), "c:3 a:1 d:4 b:2");
    assert_eq!(
        sql("SELECT cw_upsert_artifact('gha', '', '', 'a', 70)"),
        "1",
        "a row named again keeps its id"
    );
    assert_eq!(
        sql("SELECT cw_upsert_artifact('gha', '', '', 'e', 70)"),
        "5"
    );
    assert_eq!(
        sql("SELECT string_agg(key || '=' || first_seen, ' ' ORDER BY id) FROM artifacts"),
        "a=50 b=50 c=50 d=50 e=70"
    );
    let records = |ids: &[&str], used: i64| {
        let n = ids.len();
        let ids: Vec<String> = ids.iter().map(|r| format!("'{r}'")).collect();
        sql(&format!(
            "SELECT record_id || ':' || id FROM cw_upsert_builder_records(ARRAY[{}]::int8[], \
             ARRAY[{}], ARRAY[{}], ARRAY[{}], ARRAY[{}]::int8[], ARRAY[{}]::int8[], \
             ARRAY[{}]::int8[])",
            vec!["1"; n].join(","),
            ids.join(","),
            vec!["'regular'"; n].join(","),
            vec!["''"; n].join(","),
            vec!["NULL"; n].join(","),
            vec![used.to_string(); n].join(","),
            vec!["NULL"; n].join(",")
        ))
        .replace('\n', " ")
    };
    assert_eq!(records(&["r1", "r2"], 10), "r1:1 r2:2");
    assert_eq!(
        records(&["r3", "r2", "r4", "r1"], 20),
        "r3:3 r2:2 r4:4 r1:1"
    );
    assert_eq!(
        sql("SELECT cw_upsert_builder_record(1, 'r1', 'regular', '', NULL, 5, 7)"),
        "1"
    );
    assert_eq!(
        sql(
            "SELECT string_agg(record_id || '=' || last_used_at || '/' || coalesce(size, -1), \
             ' ' ORDER BY id) FROM builder_records"
        ),
        "r1=20/7 r2=20/-1 r3=20/-1 r4=20/-1"
    );
    assert_eq!(
        sql(
            "SELECT string_agg(sequencename || '=' || last_value, ' ' ORDER BY sequencename) \
             FROM pg_sequences WHERE sequencename IN ('artifacts_id_seq', 'builders_id_seq', \
             'mounts_id_seq', 'builder_records_id_seq')"
        ),
        "artifacts_id_seq=5 builder_records_id_seq=4 builders_id_seq=2 mounts_id_seq=2"
    );
}

/// An upsert that waits for another transaction's commit on the same row changes the row as
/// that commit left it: a first sighting only moves earlier and a last use only later,
/// whichever call commits first.
#[test]
fn an_upsert_waiting_on_another_keeps_the_earliest_sighting_and_the_latest_use() {
    if !require_postgres() {
        return;
    }
    let cluster = PgCluster::shared();
    let db = pg_store(cluster);
    let name = cluster_database_name(&db);
    cluster.psql(
        &name,
        "SELECT cw_upsert_builder('b1', NULL, NULL); \
         SELECT cw_upsert_artifact('gha', '', '', 'k', 100); \
         SELECT cw_upsert_artifacts(ARRAY['gha'], ARRAY[''], ARRAY[''], ARRAY['j'], ARRAY[100]); \
         SELECT cw_upsert_builder_record(1, 'r', 'regular', '', NULL, 100, NULL)",
    );
    std::thread::scope(|scope| {
        // Holds the rows it changed until it commits.
        let holder = scope.spawn(|| {
            cluster.psql(
                &name,
                "BEGIN; \
                 SELECT cw_upsert_artifact('gha', '', '', 'k', 30); \
                 SELECT cw_upsert_artifacts(ARRAY['gha'], ARRAY[''], ARRAY[''], ARRAY['j'], \
                                            ARRAY[30]); \
                 SELECT cw_upsert_builder_record(1, 'r', 'regular', '', NULL, 300, NULL); \
                 SELECT pg_sleep(1.5); COMMIT;",
            )
        });
        std::thread::sleep(Duration::from_millis(500));
        // Each call waits on its own.
        let waiting: Vec<_> = [
            "SELECT cw_upsert_artifact('gha', '', '', 'k', 50)",
            "SELECT cw_upsert_artifacts(ARRAY['gha'], ARRAY[''], ARRAY[''], ARRAY['j'], ARRAY[50])",
            "SELECT cw_upsert_builder_record(1, 'r', 'regular', '', NULL, 200, NULL)",
        ]
        .into_iter()
        .map(|call| {
            let name = &name;
            scope.spawn(move || cluster.psql(name, call))
        })
        .collect();
        for call in waiting {
            call.join().unwrap();
        }
        holder.join().unwrap();
    });
    assert_eq!(
        cluster
            .psql(
                &name,
                "SELECT string_agg(key || '=' || first_seen, ' ' ORDER BY key) FROM artifacts"
            )
            .trim(),
        "j=30 k=30"
    );
    assert_eq!(
        cluster
            .psql(&name, "SELECT last_used_at FROM builder_records")
            .trim(),
        "300"
    );
}

/// A batch whose last line repeats a run key with other facts is refused (exit 2, naming the
/// line and the field) and writes nothing of the batch: not its new runs before that line.
#[test]
fn a_batch_repeating_a_run_key_with_other_facts_writes_nothing() {
    if !require_postgres() {
        return;
    }
    let cluster = PgCluster::shared();
    let env = Env::new();
    let fleet = generate_fleet(&env, (40, 4, 2, 6), Some(3));
    let pg = pg_store(cluster);
    ok(env.cmd().args(["--db", &pg, "import"]).arg(&fleet));
    let text = std::fs::read_to_string(&fleet).unwrap();
    let runs: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .filter(|line| line["type"] == "run")
        .collect();
    // Two new runs (new run ids), then a recorded run with another commit.
    let mut lines = Vec::new();
    for (i, run) in runs.iter().take(2).enumerate() {
        let mut new = run.clone();
        new["run"] = format!("new-{i}").into();
        lines.push(new.to_string());
    }
    let mut changed = runs[0].clone();
    changed["commit"] = "0".repeat(40).into();
    lines.push(changed.to_string());
    let batch = env.write("batch.jsonl", &(lines.join("\n") + "\n"));
    let before = ok(env.cmd().args(["--db", &pg, "export"]));
    let out = env
        .cmd()
        .args(["--db", &pg, "import"])
        .arg(&batch)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("line 3")
            && stderr.contains("already recorded with other facts")
            && stderr.contains("commit"),
        "{stderr}"
    );
    assert_eq!(ok(env.cmd().args(["--db", &pg, "export"])), before);
    let verify = ok(env
        .cmd()
        .args(["--db", &pg, "verify-log", "--format", "json"]));
    let json: serde_json::Value = serde_json::from_str(&verify).unwrap();
    assert_eq!(json["length"], 40, "{verify}");
}

/// The hook role (SELECT and INSERT, the upsert functions, no UPDATE) may import in bulk, a
/// fleet and then the same fleet again, and stores what SQLite stores, but for how to reach
/// each builder, which a hook role does not record: through the batch upserts of schema
/// version 3, and through the row functions alone when it may not call those.
#[test]
fn the_hook_role_imports_in_bulk() {
    if !require_postgres() {
        return;
    }
    let cluster = PgCluster::shared();
    let env = Env::new();
    let fleet = generate_fleet(&env, (400, 5, 2, 8), Some(9));
    let sqlite = env.path().join("fleet.db");
    let import = |db: &str| {
        // One batch of more artifacts and records than one statement upserts, then again in
        // small batches over what the store holds.
        for batch in ["10000", "40"] {
            ok(env
                .cmd()
                .args(["--db", db, "import", "--batch-size", batch])
                .arg(&fleet));
        }
    };
    import(sqlite.to_str().unwrap());
    let export = |db: &str| ok(env.cmd().args(["--db", db, "export"]));
    // Each exported line, a builder's without its driver and endpoint.
    let unreached = |export: &str| -> Vec<serde_json::Value> {
        export
            .lines()
            .map(|line| {
                let mut line: serde_json::Value = serde_json::from_str(line).unwrap();
                if line["type"] == "builder" {
                    let fields = line.as_object_mut().unwrap();
                    fields.remove("driver");
                    fields.remove("endpoint");
                }
                line
            })
            .collect()
    };
    let sqlite_export = export(sqlite.to_str().unwrap());
    assert!(
        sqlite_export.contains("\"driver\""),
        "the fleet says how to reach its builders"
    );
    let expected = unreached(&sqlite_export);
    for batches in [true, false] {
        let store = cluster.new_database();
        ok(env.cmd().args(["--db", &store.url, "db", "migrate"]));
        let hook = format!("{}_hook", store.name);
        cluster.create_role(&hook, "hook-pw");
        db_grant(&env, &store.url, &hook, "hook");
        if !batches {
            cluster.psql(
                &store.name,
                &format!(
                    "REVOKE EXECUTE ON FUNCTION
                         cw_upsert_artifacts(text[], text[], text[], text[], bigint[]),
                         cw_upsert_builder_records(bigint[], text[], text[], text[], bigint[],
                                                   bigint[], bigint[])
                     FROM {hook}"
                ),
            );
        }
        let hook_url = store.url_as(&hook, "hook-pw");
        cluster.psql(
            &store.name,
            &format!("ALTER DATABASE {} SET track_functions = 'all'", store.name),
        );
        import(&hook_url);
        let stored = export(&hook_url);
        assert!(!stored.contains("\"driver\""), "batches: {batches}");
        assert!(unreached(&stored) == expected, "batches: {batches}");
        // The batch upserts were called, or never: each import's calls are counted once its
        // server process has ended, soon after it. (The second import repeats every run key,
        // which goes row by row as `record` would, through the row functions either way.)
        let calls = || {
            cluster.psql(
                &store.name,
                "SELECT coalesce(sum(calls), 0) FROM pg_stat_user_functions
                 WHERE funcname IN ('cw_upsert_artifacts', 'cw_upsert_builder_records')",
            )
        };
        let row_calls = || {
            cluster.psql(
                &store.name,
                "SELECT coalesce(sum(calls), 0) FROM pg_stat_user_functions
                 WHERE funcname = 'cw_upsert_artifact'",
            )
        };
        let started = std::time::Instant::now();
        while row_calls() == "0" && started.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_ne!(row_calls(), "0", "no calls counted");
        assert_eq!(calls() != "0", batches, "batch upserts called: {}", calls());
        ok(env.cmd().args(["--db", &hook_url, "verify-log"]));
    }
}

/// A new database with the schema as the first `version` migrations left it, as a release at
/// that version made it.
fn at_version(cluster: &PgCluster, version: usize) -> crate::harness::PgDatabase {
    let store = cluster.new_database();
    let dir = format!("{}/schema/postgres", env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "sql"))
        .collect();
    files.sort();
    let migrations = files[..version]
        .iter()
        .map(|path| std::fs::read_to_string(path).unwrap())
        .chain([format!("UPDATE schema_version SET version = {version}")]);
    for sql in migrations {
        let out = cluster.psql_url(&store.url, &sql);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    store
}

/// Migrating a version 2 store gives the batch upserts of version 3 to every role that may
/// call the row functions they stand for, and to no other.
#[test]
fn migrating_to_version_3_carries_the_hook_grants_over() {
    if !require_postgres() {
        return;
    }
    let cluster = PgCluster::shared();
    let store = at_version(cluster, 2);
    let (hook, other) = (
        format!("{}_hook", store.name),
        format!("{}_other", store.name),
    );
    cluster.create_role(&hook, "hook-pw");
    cluster.create_role(&other, "other-pw");
    // What `db grant --role hook` of a version 2 release gave of the row functions.
    cluster.psql(
        &store.name,
        &format!(
            "GRANT EXECUTE ON FUNCTION
                 cw_upsert_artifact(text, text, text, text, bigint),
                 cw_upsert_builder_record(bigint, text, text, text, bigint, bigint, bigint)
             TO {hook}"
        ),
    );
    let env = Env::new();
    let migrated = ok(env.cmd().args(["--db", &store.url, "db", "migrate"]));
    let may = |role: &str, function: &str| {
        cluster.psql(
            &store.name,
            &format!("SELECT has_function_privilege('{role}', '{function}', 'EXECUTE')"),
        )
    };
    for function in [
        "cw_upsert_artifacts(text[], text[], text[], text[], bigint[])",
        "cw_upsert_builder_records(bigint[], text[], text[], text[], bigint[], bigint[], bigint[])",
    ] {
        assert_eq!(may(&hook, function), "t", "{function}: {migrated}");
        assert_eq!(may(&other, function), "f", "{function}");
        assert_eq!(may("public", function), "f", "{function}");
    }
}

/// Migrating a version 11 store keeps every role that was granted receipts and refusals without
/// being a responder (a hook or a collector granted by an earlier release, a group of them, not
/// its members) adding them, and names those roles; `db grant --role hook` then takes receipts
/// from a hook and from a group's members; a later `db migrate` names the collectors.
#[test]
fn migrating_to_version_12_keeps_collectors_collecting_and_names_them() {
    if !require_postgres() {
        return;
    }
    let cluster = PgCluster::shared();
    let store = at_version(cluster, 11);
    let (old, responder, reader, group, member) = (
        format!("{}_old", store.name),
        format!("{}_resp", store.name),
        format!("{}_read", store.name),
        format!("{}_group", store.name),
        format!("{}_member", store.name),
    );
    for role in [&old, &responder, &reader, &group, &member] {
        cluster.create_role(role, "pw");
    }
    // What `db grant` of a version 11 release gave a hook (of the tables that matter here),
    // a responder and a role that only reads.
    cluster.psql(
        &store.name,
        &format!(
            "GRANT SELECT ON ALL TABLES IN SCHEMA public TO {old}, {reader};
             GRANT INSERT ON runs, run_receipts, collector_refusals TO {old};
             GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {responder};
             GRANT SELECT ON ALL TABLES IN SCHEMA public TO {group};
             GRANT INSERT ON runs, run_receipts, collector_refusals TO {group};
             GRANT {group} TO {member}"
        ),
    );
    let env = Env::new();
    let out = env
        .cmd()
        .args(["--db", &store.url, "db", "migrate"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("`{old}` may add receipts as a collector does"))
            && stderr.contains("--role hook"),
        "{stderr}"
    );
    assert!(stderr.contains(&format!("`{group}`")), "{stderr}");
    // A member has the mark through its group, which one grant takes back.
    assert!(
        !stderr.contains(&responder) && !stderr.contains(&reader) && !stderr.contains(&member),
        "{stderr}"
    );
    ok(env.cmd().args([
        "--db",
        &store.url,
        "record",
        "--pipeline",
        "p",
        "--run",
        "1",
        "--builder",
        "b1",
    ]));
    let old_url = store.url_as(&old, "pw");
    let receipt = "INSERT INTO run_receipts (run_id, received_at, identity)
                   SELECT id, 0, 'ci.example' FROM runs WHERE run_key = '1'";
    let kept = cluster.psql_url(&old_url, &format!("BEGIN; {receipt}; ROLLBACK"));
    assert!(kept.status.success(), "{kept:?}");
    for role in [&old, &group] {
        db_grant(&env, &store.url, role, "hook");
    }
    let member_url = store.url_as(&member, "pw");
    for url in [&old_url, &member_url] {
        let out = cluster.psql_url(url, receipt);
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("adds no receipt but the store's doubt"),
            "{out:?}"
        );
    }
    // Migrating again names the collectors only.
    let collector = format!("{}_coll", store.name);
    cluster.create_role(&collector, "pw");
    db_grant(&env, &store.url, &collector, "collector");
    let again = env
        .cmd()
        .args(["--db", &store.url, "db", "migrate"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "`{collector}` may add receipts as a collector does"
        )) && !stderr.contains("warning")
            && !stderr.contains(&old)
            && !stderr.contains(&group),
        "{stderr}"
    );
}

/// Migrating a version 8 store lets every role that reads purges read the records selective
/// prunes named, and every role that adds purges add them (the executor's prune, and an older
/// release's trigger, records them), and no other.
#[test]
fn migrating_to_version_9_carries_the_purge_grants_over() {
    if !require_postgres() {
        return;
    }
    let cluster = PgCluster::shared();
    let store = at_version(cluster, 8);
    let (responder, reader, other) = (
        format!("{}_resp", store.name),
        format!("{}_read", store.name),
        format!("{}_other", store.name),
    );
    for role in [&responder, &reader, &other] {
        cluster.create_role(role, "pw");
    }
    cluster.psql(
        &store.name,
        &format!(
            "GRANT SELECT, INSERT ON purges TO {responder}; GRANT SELECT ON purges TO {reader}"
        ),
    );
    let env = Env::new();
    let migrated = ok(env.cmd().args(["--db", &store.url, "db", "migrate"]));
    let may = |role: &str, privilege: &str| {
        cluster.psql(
            &store.name,
            &format!("SELECT has_table_privilege('{role}', 'purge_records', '{privilege}')"),
        )
    };
    assert_eq!(may(&responder, "INSERT"), "t", "{migrated}");
    assert_eq!(may(&responder, "SELECT"), "t");
    assert_eq!(may(&reader, "SELECT"), "t");
    assert_eq!(may(&reader, "INSERT"), "f");
    assert_eq!(may(&other, "SELECT"), "f");
    assert_eq!(may("public", "SELECT"), "f");
}

/// `verify-log` on PostgreSQL walks a chain longer than the entries it checks together and
/// names the first break in chain order, with the head of the entries before it, as on
/// SQLite: rows edited or deleted by a superuser with the append-only triggers off.
#[test]
fn verify_log_names_the_first_break_of_a_long_chain() {
    if !require_postgres() {
        return;
    }
    let cluster = PgCluster::shared();
    let env = Env::new();
    let fleet = generate_fleet(&env, (9000, 7, 3, 9), Some(11));
    let db = cluster.new_database();
    ok(env.cmd().args(["--db", &db.url, "db", "migrate"]));
    ok(env.cmd().args(["--db", &db.url, "import"]).arg(&fleet));
    let verify = || {
        let out = env
            .cmd()
            .args(["--db", &db.url, "verify-log", "--format", "json"])
            .output()
            .unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (out.status.code(), doc)
    };
    let (code, doc) = verify();
    assert_eq!(code, Some(0), "{doc:#}");
    assert_eq!(doc["length"], 9000);
    let stored_hash = |seq: i64| {
        cluster.psql(
            &db.name,
            &format!("SELECT encode(hash, 'hex') FROM run_chain WHERE seq = {seq}"),
        )
    };
    let run_of = |seq: i64| {
        cluster.psql(
            &db.name,
            &format!("SELECT run_id FROM run_chain WHERE seq = {seq}"),
        )
    };
    let (edited, removed) = (run_of(4100), run_of(4110));
    cluster.psql(
        &db.name,
        &format!(
            "SET session_replication_role = replica;
             DELETE FROM run_chain WHERE seq = 4110;
             UPDATE runs SET finished_at = finished_at + 1 WHERE id = {edited};"
        ),
    );
    let (code, doc) = verify();
    assert_eq!(code, Some(1), "{doc:#}");
    assert_eq!(doc["break"]["kind"], "hash_mismatch", "{doc:#}");
    assert_eq!(doc["break"]["entry"], 4100, "{doc:#}");
    assert_eq!(doc["head"], stored_hash(4099).as_str(), "{doc:#}");
    cluster.psql(
        &db.name,
        &format!(
            "SET session_replication_role = replica;
             UPDATE runs SET finished_at = finished_at - 1 WHERE id = {edited};"
        ),
    );
    let (code, doc) = verify();
    assert_eq!(code, Some(1), "{doc:#}");
    assert_eq!(doc["break"]["kind"], "missing_entry", "{doc:#}");
    assert_eq!(doc["break"]["entry"], 4110, "{doc:#}");
    assert_eq!(doc["head"], stored_hash(4109).as_str(), "{doc:#}");
    assert_ne!(removed, edited);
}

/// The database a `postgresql://` URL of the test cluster names.
fn cluster_database_name(url: &str) -> String {
    url.rsplit('/').next().unwrap().to_owned()
}

/// Schema version 2's page triggers write every page byte for byte as version 1's functions
/// did, and an event or chain entry naming no run is refused as the foreign key refused it
/// (SQLSTATE 23503), the whole statement with it, even when its other rows name recorded runs.
#[test]
fn pages_stay_as_the_first_schema_wrote_them_and_rows_need_their_run() {
    if !require_postgres() {
        return;
    }
    let cluster = PgCluster::shared();
    let env = Env::new();
    let fleet = generate_fleet(&env, (300, 6, 3, 10), Some(11));
    let pg = pg_store(cluster);
    ok(env
        .cmd()
        .args(["--db", &pg, "import", "--batch-size", "70"])
        .arg(&fleet));
    let name = cluster_database_name(&pg);
    let counts = cluster.psql(
        &name,
        "SELECT (SELECT count(*) FROM event_pages), (SELECT count(*) FROM artifact_pages),
                (SELECT count(*) FROM record_pages)",
    );
    assert!(
        counts.split('|').all(|n| n.parse::<i64>().unwrap() > 1),
        "pages of each kind: {counts}"
    );
    let differing = cluster.psql(
        &name,
        "SELECT
           (SELECT count(*) FROM (SELECT e.id >> 6 AS page,
                   string_agg(int8send(e.id) || int8send(e.run_id) || cw_event_kind(e.kind)
                              || int8send(e.target) || int8send(e.at), ''::bytea ORDER BY e.id)
                   AS bytes
                 FROM events e WHERE cw_event_kind(e.kind) IS NOT NULL GROUP BY 1) w
            FULL JOIN event_pages p ON p.page = w.page
            WHERE p.events IS DISTINCT FROM w.bytes)
         + (SELECT count(*) FROM (SELECT a.id >> 6 AS page,
                   string_agg(int8send(a.id) || cw_page_text(a.backend) || cw_page_text(a.locator)
                              || cw_page_text(a.digest) || cw_page_text(a.key),
                              ''::bytea ORDER BY a.id) AS bytes
                 FROM artifacts a GROUP BY 1) w
            FULL JOIN artifact_pages p ON p.page = w.page
            WHERE p.artifacts IS DISTINCT FROM w.bytes)
         + (SELECT count(*) FROM (SELECT r.id >> 6 AS page,
                   string_agg(int8send(r.id) || int8send(r.builder_id)
                              || cw_page_text(r.record_id) || cw_page_text(r.record_type)
                              || cw_page_text(r.description), ''::bytea ORDER BY r.id) AS bytes
                 FROM builder_records r GROUP BY 1) w
            FULL JOIN record_pages p ON p.page = w.page
            WHERE p.records IS DISTINCT FROM w.bytes)",
    );
    assert_eq!(differing, "0", "pages unlike version 1's");

    let rows = "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM run_chain)";
    let before = cluster.psql(&name, rows);
    for insert in [
        "INSERT INTO events (run_id, kind, target, at)
         VALUES ((SELECT max(id) + 1 FROM runs), 'imported', 1, 0)",
        // Every event again on another target, the last one naming no run.
        "INSERT INTO events (run_id, kind, target, at)
         SELECT CASE WHEN e.id = (SELECT max(id) FROM events) THEN -1 ELSE e.run_id END,
                e.kind, e.target + 1000000000, e.at
         FROM events e",
        "INSERT INTO run_chain (seq, run_id, kind, events_through, details_through, encoding,
                               hash, appended_at)
         SELECT seq + 1000000,
                CASE WHEN seq = (SELECT max(seq) FROM run_chain) THEN -1 ELSE run_id END,
                kind, events_through, details_through, encoding, hash, appended_at
         FROM run_chain",
    ] {
        cluster.psql(
            &name,
            &format!(
                "DO $$ BEGIN
                     BEGIN {insert};
                     EXCEPTION WHEN foreign_key_violation THEN RETURN;
                     END;
                     RAISE EXCEPTION 'an event naming no run was stored';
                 END $$"
            ),
        );
    }
    assert_eq!(cluster.psql(&name, rows), before);
}

/// A release from before builder prunes of build records only were told apart still writes a
/// version 9 store, and records an incident's prune without `--full-prune` as a whole prune:
/// the store marks it records-only and selective from its action, with the records the action
/// named, so no trace takes it as cleaning the builder's cache mounts, or the builder of a
/// writer whose records it left. A full prune and one recorded by hand stay whole.
#[test]
fn a_partial_prune_an_older_release_records_is_marked_records_only() {
    if !require_postgres() {
        return;
    }
    let cluster = PgCluster::shared();
    let db = pg_store(cluster);
    let env = Env::new();
    let history = format!(
        "{}/examples/incident-history.jsonl",
        env!("CARGO_MANIFEST_DIR")
    );
    ok(env.cmd().args(["--db", &db, "import", &history]));
    let name = db.rsplit('/').next().unwrap();
    cluster.psql(name, crate::common::BUILDER_PRUNES_SQL);
    let marked = cluster.psql(name, "SELECT at, records_only FROM purges ORDER BY at");
    let expected: Vec<String> = crate::common::BUILDER_PRUNES_MARKED
        .iter()
        .map(|(at, records_only)| format!("{at}|{records_only}"))
        .collect();
    assert_eq!(marked.trim(), expected.join("\n"));
    // Imports by a release before records-only prunes were told apart, which kept no
    // `records_only`: the one that claims an incident made it is taken as records-only.
    cluster.psql(name, crate::common::IMPORTED_PRUNES_SQL);
    let imported = cluster.psql(
        name,
        "SELECT at, records_only FROM purges WHERE at > 12 ORDER BY at",
    );
    assert_eq!(imported.trim(), "13|1\n14|0");
    // And selective, with what its action named.
    let selective = cluster.psql(name, crate::common::BUILDER_PRUNES_SELECTIVE_SQL);
    assert_eq!(selective.trim(), crate::common::BUILDER_PRUNES_SELECTIVE);
}
