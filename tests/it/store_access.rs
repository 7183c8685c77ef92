//! Who writes the store: read commands never do (an older, empty, damaged or read-only store
//! is read or refused, never changed), and containment fails closed when the store that holds
//! it cannot be read.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use insta::assert_snapshot;

use crate::build::{ConfigBuilder, Pipeline};
use crate::common::{Env, digest, ok, output};

/// The migrations of schema version 4, as an older cachewarden applied them.
const SCHEMA_4: [&str; 4] = [
    include_str!("../../schema/migrations/0001_provenance.sql"),
    include_str!("../../schema/migrations/0002_incidents.sql"),
    include_str!("../../schema/migrations/0003_audit_sweep.sql"),
    include_str!("../../schema/migrations/0004_manifest_facts.sql"),
];

/// The cache ref an open incident holds tainted: pipeline `evil` exported it.
fn tainted(env: &Env) -> String {
    let reference = format!("reg.example/app:cache@{}", digest('a'));
    let line = format!(
        r#"{{"v":1,"type":"run","pipeline":"evil","run":"1","step":"s","started_at":"2026-01-01T00:00:00Z","finished_at":"2026-01-01T00:01:00Z","status":"succeeded","exported":["{reference}"]}}"#
    );
    let file = env.write("evil.jsonl", &format!("{line}\n"));
    ok(env.cmd().arg("import").arg(&file));
    ok(env.cmd().args(["incident", "open", "--pipeline", "evil"]));
    reference
}

/// A `docker` that builds nothing and leaves `ran` in the working directory (the
/// environment's), running `extra` after.
fn fake_docker(env: &Env, extra: &str) -> PathBuf {
    let docker = env.write("bin/docker", &format!("#!/bin/sh\ntouch ran\n{extra}"));
    std::fs::set_permissions(&docker, std::fs::Permissions::from_mode(0o755)).unwrap();
    env.write("ctx/Dockerfile", "FROM scratch\n");
    docker
}

/// `wrap` of a build from `input` by pipeline `victim`, with the store at `db`.
fn wrap(env: &Env, db: &Path, docker: &Path, input: &str) -> Command {
    wrap_with(env, db, docker, input, &[])
}

/// [`wrap`] with more `wrap` flags.
fn wrap_with(env: &Env, db: &Path, docker: &Path, input: &str, flags: &[&str]) -> Command {
    let mut cmd = env.cmd();
    cmd.env("CACHEWARDEN_DB", db)
        .args([
            "wrap",
            "--pipeline",
            "victim",
            "--run",
            "1",
            "--builder",
            "ci-7",
        ])
        .args(flags)
        .arg("--")
        .arg(docker)
        .args(["build", "--cache-from", input, "-t", "app", "ctx"]);
    cmd
}

fn stderr_of(out: &str) -> &str {
    out.split("--- stderr\n").nth(1).unwrap()
}

fn user_version(db: &Path) -> i64 {
    rusqlite::Connection::open(db)
        .unwrap()
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .unwrap()
}

/// `wrap` with a store that exists but cannot be read (not a database, a directory, a newer
/// schema, a damaged `user_version`) does not build from a tainted input: it refuses with exit
/// 5 before the command runs. `on_unavailable = "fail-open"` builds, with a warning.
#[test]
fn wrap_refuses_to_build_when_the_store_cannot_be_read() {
    let env = Env::new();
    let input = tainted(&env);
    let docker = fake_docker(&env, "");
    let store = std::fs::read(env.db()).unwrap();
    let unusable = |name: &str, make: &dyn Fn(&Path)| {
        let db = env.path().join(name);
        make(&db);
        let out = output(&env, &mut wrap(&env, &db, &docker, &input));
        assert!(out.starts_with("exit: 5\n"), "{name}: {out}");
        let errors: Vec<&str> = stderr_of(&out)
            .lines()
            .filter(|l| l.starts_with("error: "))
            .collect();
        assert_eq!(errors.len(), 1, "{name}: {out}");
        assert!(
            errors[0].starts_with(
                "error: refusing to build: whether its inputs are tainted cannot be checked: "
            ),
            "{name}: {out}"
        );
        assert!(!env.path().join("ran").exists(), "{name}: the build ran");
        db
    };
    unusable("junk.db", &|db| {
        std::fs::write(db, "not a database\n").unwrap()
    });
    unusable("dir.db", &|db| std::fs::create_dir(db).unwrap());
    for (name, version) in [("newer.db", 99), ("damaged.db", 3)] {
        unusable(name, &|db| {
            std::fs::write(db, &store).unwrap();
            rusqlite::Connection::open(db)
                .unwrap()
                .pragma_update(None, "user_version", version)
                .unwrap();
        });
    }

    let config = ConfigBuilder::new()
        .on_unavailable("fail-open")
        .write_as(&env, "open.toml");
    let out = output(
        &env,
        wrap(&env, &env.path().join("junk.db"), &docker, &input).env("CACHEWARDEN_CONFIG", &config),
    );
    assert!(out.starts_with("exit: 0\n"), "{out}");
    assert!(
        stderr_of(&out).contains("warning: containment not checked, building anyway"),
        "{out}"
    );
    assert!(env.path().join("ran").exists());
    std::fs::remove_file(env.path().join("ran")).unwrap();

    // A `[[pipeline]]` entry overrides the table, both ways.
    let closed_for_victim = ConfigBuilder::new()
        .on_unavailable("fail-open")
        .pipeline(Pipeline::named("victim").on_unavailable("fail-closed"))
        .write_as(&env, "victim.toml");
    let out = output(
        &env,
        wrap(&env, &env.path().join("junk.db"), &docker, &input)
            .env("CACHEWARDEN_CONFIG", &closed_for_victim),
    );
    assert!(out.starts_with("exit: 5\n"), "{out}");
    assert!(!env.path().join("ran").exists());
    let open_for_victim = ConfigBuilder::new()
        .pipeline(Pipeline::pattern("vic*").on_unavailable("fail-open"))
        .write_as(&env, "victim-open.toml");
    let out = output(
        &env,
        wrap(&env, &env.path().join("junk.db"), &docker, &input)
            .env("CACHEWARDEN_CONFIG", &open_for_victim),
    );
    assert!(out.starts_with("exit: 0\n"), "{out}");
    assert!(env.path().join("ran").exists());
}

/// A store locked by another process past the busy timeout is a store that cannot be read:
/// `wrap` refuses to build from a tainted input rather than build unchecked.
#[test]
fn wrap_refuses_to_build_while_the_store_is_locked() {
    let env = Env::new();
    let input = tainted(&env);
    let docker = fake_docker(&env, "");
    let lock = rusqlite::Connection::open(env.db()).unwrap();
    lock.execute_batch("PRAGMA locking_mode = EXCLUSIVE; BEGIN EXCLUSIVE;")
        .unwrap();
    let out = output(&env, &mut wrap(&env, &env.db(), &docker, &input));
    drop(lock);
    assert!(out.starts_with("exit: 5\n"), "{out}");
    assert!(
        stderr_of(&out).contains("is locked by another process"),
        "{out}"
    );
    assert!(!env.path().join("ran").exists(), "the build ran");
}

/// A fresh runner has no store: `wrap` builds and its record creates the store.
#[test]
fn wrap_without_a_store_builds_and_creates_it() {
    let env = Env::new();
    let docker = fake_docker(&env, "");
    let input = format!("reg.example/app:cache@{}", digest('b'));
    ok(&mut wrap(&env, &env.db(), &docker, &input));
    assert!(env.path().join("ran").exists());
    assert!(ok(env.cmd().arg("export")).contains(r#""pipeline":"victim""#));
}

/// A store that breaks while the build runs costs only its record: the build's status is
/// passed on, with a warning.
#[test]
fn a_store_lost_during_the_build_never_fails_it() {
    let env = Env::new();
    let input = tainted(&env);
    let clean = input.replace(&digest('a'), &digest('b'));
    let docker = fake_docker(
        &env,
        "rm -f store.db store.db-wal store.db-shm\nmkdir store.db\nexit 3\n",
    );
    // The clean input's registry is made up: what it lists cannot be asked, which the
    // config lets the build go on from.
    let config = env.write("cw.toml", "[containment]\non_unavailable = \"fail-open\"\n");
    let mut cmd = wrap(&env, &env.db(), &docker, &clean);
    cmd.env("CACHEWARDEN_CONFIG", &config);
    let out = output(&env, &mut cmd);
    assert!(out.starts_with("exit: 3\n"), "{out}");
    assert!(
        stderr_of(&out).contains("warning: the build was not recorded"),
        "{out}"
    );
}

/// `--allow-tainted` builds and records who overrode containment: the OS account from the
/// system, even with `USER` and `LOGNAME` unset (never `unknown`).
#[test]
fn an_override_names_the_os_user_without_user_set() {
    let env = Env::new();
    let input = tainted(&env);
    let docker = fake_docker(&env, "");
    ok(
        wrap_with(&env, &env.db(), &docker, &input, &["--allow-tainted"])
            .env_remove("USER")
            .env_remove("LOGNAME"),
    );
    assert!(env.path().join("ran").exists());
    let report: serde_json::Value = serde_json::from_str(&ok(env
        .cmd()
        .args(["incident", "report", "1", "--format", "json"])))
    .unwrap();
    let account = Command::new("id").arg("-un").output().unwrap();
    let account = String::from_utf8(account.stdout).unwrap();
    let by = report["overrides"][0]["by"].as_str().unwrap();
    assert!(
        by.starts_with(&format!("{}@", account.trim())),
        "{report:#}"
    );
    assert_eq!(report["overrides"][0]["pipeline"], "victim");
}

/// A build that cannot be planned (here: no pipeline name, and no CI to derive one from) has
/// unknown inputs: while an open incident holds anything tainted it is refused (exit 5, the
/// command never runs), `--allow-tainted` or `on_unavailable = "fail-open"` builds with a
/// warning, and with no open incident it builds as before.
#[test]
fn a_build_that_cannot_be_planned_is_contained_while_an_incident_is_open() {
    let env = Env::new();
    let input = tainted(&env);
    let docker = fake_docker(&env, "");
    let unplanned = |flags: &[&str]| {
        let mut cmd = env.cmd();
        cmd.args(["wrap", "--run", "1"])
            .args(flags)
            .arg("--")
            .arg(&docker)
            .args(["build", "--cache-from", &input, "-t", "app", "ctx"]);
        cmd
    };
    let out = output(&env, &mut unplanned(&[]));
    assert!(out.starts_with("exit: 5\n"), "{out}");
    assert!(out.contains("open incident 1"), "{out}");
    assert!(!env.path().join("ran").exists(), "the build ran: {out}");

    let out = output(&env, &mut unplanned(&["--allow-tainted"]));
    assert!(out.starts_with("exit: 0\n"), "{out}");
    assert!(env.path().join("ran").exists());
    std::fs::remove_file(env.path().join("ran")).unwrap();

    let open = ConfigBuilder::new()
        .on_unavailable("fail-open")
        .write_as(&env, "open.toml");
    let out = output(&env, unplanned(&[]).env("CACHEWARDEN_CONFIG", &open));
    assert!(out.starts_with("exit: 0\n"), "{out}");
    assert!(out.contains("containment not checked"), "{out}");
    std::fs::remove_file(env.path().join("ran")).unwrap();

    ok(env.cmd().args(["incident", "close", "1", "--force"]));
    ok(&mut unplanned(&[]));
    assert!(env.path().join("ran").exists());
}

/// `check` is a reader: against a store path that does not exist, or an empty file, it exits
/// 3 and creates nothing, rather than answer `ok`.
#[test]
fn check_without_a_store_exits_3_and_creates_nothing() {
    let env = Env::new();
    let input = format!("reg.example/app:cache@{}", digest('a'));
    let db = env.path().join("data/store.db");
    let out = output(
        &env,
        env.cmd().env("CACHEWARDEN_DB", &db).args(["check", &input]),
    );
    assert!(
        out.starts_with("exit: 3\n--- stdout\n--- stderr\n"),
        "{out}"
    );
    assert!(out.contains("no database at"), "{out}");
    assert!(!env.path().join("data").exists());

    std::fs::write(env.db(), "").unwrap();
    let out = output(&env, env.cmd().args(["check", &input]));
    assert!(
        out.starts_with("exit: 3\n--- stdout\n--- stderr\n"),
        "{out}"
    );
    assert_eq!(
        std::fs::read_dir(env.path()).unwrap().count(),
        1,
        "only the empty store"
    );
    assert_eq!(std::fs::metadata(env.db()).unwrap().len(), 0);
}

/// `check` against a store that exists but cannot be read refuses (exit 5); failing open, it
/// passes with a warning and shows every reference as unchecked, never `ok`.
#[test]
fn check_refuses_when_the_store_cannot_be_read() {
    let env = Env::new();
    let input = format!("reg.example/app:cache@{}", digest('a'));
    std::fs::write(env.db(), "not a database\n").unwrap();
    let out = output(&env, env.cmd().args(["check", &input]));
    assert!(
        out.starts_with("exit: 5\n--- stdout\n--- stderr\n"),
        "{out}"
    );
    assert!(
        out.contains("error: containment cannot be checked, so nothing passes"),
        "{out}"
    );

    let config = ConfigBuilder::new().on_unavailable("fail-open").write(&env);
    let out = output(&env, env.cmd_with(&config).args(["check", &input]));
    assert!(out.starts_with("exit: 0\n--- stdout\nUNCHECKED "), "{out}");
    assert!(
        out.contains("warning: containment not checked, passing anyway"),
        "{out}"
    );
    let json = ok(env
        .cmd_with(&config)
        .args(["check", &input, "--format", "json"]));
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json[0]["checked"], false);
    assert!(json[0]["tainted_in"].is_null());
}

/// `db migrate --help` says what it does, and that read commands never migrate.
#[test]
fn db_migrate_help() {
    let env = Env::new();
    assert_snapshot!(output(&env, env.cmd().args(["db", "migrate", "--help"])));
}

/// A store at schema version 4 (an older cachewarden's), WAL as stores are, with one run of
/// pipeline `p` that wrote and read mount `/m` on builder `b`.
fn older_store(db: &Path) {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.pragma_update_and_check(None, "journal_mode", "wal", |_| Ok(()))
        .unwrap();
    for sql in SCHEMA_4 {
        conn.execute_batch(sql).unwrap();
    }
    conn.execute_batch(
        "INSERT INTO pipelines (id, name) VALUES (1, 'p');
         INSERT INTO builders (id, name) VALUES (1, 'b');
         INSERT INTO runs (id, pipeline_id, run_key, step, builder_id, started_at, finished_at,
                           status, recorded_at)
         VALUES (1, 1, '1', 's', 1, 1000, 2000, 'succeeded', 3000);
         INSERT INTO mounts (id, builder_id, mount_id) VALUES (1, 1, '/m');
         INSERT INTO events (run_id, kind, target, at) VALUES
             (1, 'ran_on', 1, 1000), (1, 'wrote_mount', 1, 1000), (1, 'read_mount', 1, 2000);
         PRAGMA user_version = 4;",
    )
    .unwrap();
}

/// Read commands leave an older store as it is (older hooks keep working): each exits 3
/// naming `cachewarden db migrate`, which then upgrades it and says from which version.
#[test]
fn readers_leave_an_older_store_as_it_is() {
    let env = Env::new();
    older_store(&env.db());
    let before = std::fs::read(env.db()).unwrap();
    let input = format!("reg.example/app:cache@{}", digest('a'));
    let readers: [&[&str]; 6] = [
        &["trace", "--pipeline", "p"],
        &["ls", "mounts"],
        &["export"],
        &["incident", "list"],
        &["incident", "report", "1"],
        &["check", &input],
    ];
    for args in readers {
        let out = output(&env, env.cmd().args(args));
        let code = if args[0] == "check" { 5 } else { 3 };
        assert!(
            out.starts_with(&format!("exit: {code}\n")),
            "{args:?}: {out}"
        );
        assert!(
            out.contains("has schema version 4, older than this cachewarden's")
                && out.contains("`cachewarden db migrate` upgrades it"),
            "{args:?}: {out}"
        );
        assert_eq!(stderr_of(&out).lines().count(), 1, "{args:?}: {out}");
    }
    assert_eq!(std::fs::read(env.db()).unwrap(), before);
    assert_eq!(user_version(&env.db()), 4);

    let out = output(&env, env.cmd().args(["db", "migrate"]));
    assert!(
        out.starts_with(
            "exit: 0\n--- stdout\n--- stderr\nmigrated `[TEMP]/store.db` from schema version 4 to "
        ),
        "{out}"
    );
    let trace = ok(env
        .cmd()
        .args(["trace", "--pipeline", "p", "--format", "json"]));
    let trace: serde_json::Value = serde_json::from_str(&trace).unwrap();
    assert_eq!(trace["runs"].as_array().unwrap().len(), 1, "{trace}");
    let out = output(&env, env.cmd().args(["db", "migrate"]));
    assert!(out.contains("nothing to migrate"), "{out}");
}

/// Read commands never write a schema into a zero-byte file: they exit 3 and leave it empty,
/// with nothing created beside it.
#[test]
fn readers_never_write_a_zero_byte_file() {
    let env = Env::new();
    std::fs::write(env.db(), "").unwrap();
    let readers: [&[&str]; 5] = [
        &["trace", "--pipeline", "p"],
        &["ls", "runs"],
        &["export"],
        &["incident", "list"],
        &["incident", "show", "1"],
    ];
    for args in readers {
        let out = output(&env, env.cmd().args(args));
        assert!(out.starts_with("exit: 3\n"), "{args:?}: {out}");
        assert!(out.contains("has no schema yet"), "{args:?}: {out}");
    }
    assert_eq!(std::fs::metadata(env.db()).unwrap().len(), 0);
    assert_eq!(std::fs::read_dir(env.path()).unwrap().count(), 1);
}

/// A damaged `user_version` (3 on a current store, or negative) gives one line and exit 3 to
/// readers and writers alike, never the migrations' SQL, and the store is left as it is.
#[test]
fn a_damaged_user_version_is_one_line() {
    let env = Env::new();
    ok(env
        .cmd()
        .args(["record", "--pipeline", "p", "--run", "1", "--builder", "b"]));
    for damaged in [3, -2] {
        rusqlite::Connection::open(env.db())
            .unwrap()
            .pragma_update(None, "user_version", damaged)
            .unwrap();
        for args in [
            &["trace", "--pipeline", "p"][..],
            &["record", "--pipeline", "p", "--run", "2"],
            &["db", "migrate"],
        ] {
            let out = output(&env, env.cmd().args(args));
            assert!(out.starts_with("exit: 3\n"), "{args:?}: {out}");
            assert_eq!(stderr_of(&out).lines().count(), 1, "{args:?}: {out}");
            assert!(
                out.contains(&format!(
                    "says it has schema version {damaged}, which does not match"
                )),
                "{args:?}: {out}"
            );
        }
        assert_eq!(user_version(&env.db()), damaged);
    }
}

/// `cachewarden --db DB ARGS` as user `nobody`, when this process is root (and may drop to it);
/// HOME is the environment's, which must be readable by all.
fn as_nobody(env: &Env, db: &Path, args: &[&str]) -> Option<Command> {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout == b"0\n");
    if !root {
        return None;
    }
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(assert_cmd::cargo::cargo_bin!("cachewarden"))
        .arg("--db")
        .arg(db)
        .args(args)
        .env("HOME", env.path())
        .env("XDG_CONFIG_HOME", env.path().join("config"))
        .env("NO_COLOR", "1")
        .env_remove("CACHEWARDEN_CONFIG")
        .env_remove("CACHEWARDEN_DB");
    Some(cmd)
}

/// What a responder is handed: a copy of a store with data, the file 0444 in a 0555
/// directory, no `-wal` or `-shm`. `trace` and `export` read it and answer as the original,
/// as root and as an unprivileged user, and nothing is written or created beside it; so do
/// they for a root-owned copy the user may not write whatever its mode bits.
#[test]
fn a_read_only_copy_answers_as_the_original() {
    let env = Env::new();
    let runs = (1..=3)
        .map(|i| {
            format!(
                r#"{{"v":1,"type":"run","pipeline":"p","run":"{i}","step":"s","builder":"b","started_at":"2026-01-0{i}T00:00:00Z","finished_at":"2026-01-0{i}T00:01:00Z","status":"succeeded","mounts":[{{"id":"/m"}}],"imported":["reg.example/app:cache@{a}"],"exported":["reg.example/app:cache@{b}"]}}"#,
                a = digest('a'),
                b = digest('b')
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    let file = env.write("history.jsonl", &format!("{runs}\n"));
    ok(env.cmd().arg("import").arg(&file));
    let trace_args = ["trace", "--run", "p/1", "--format", "json"];
    let trace = ok(env.cmd().args(trace_args));
    let export = ok(env.cmd().arg("export"));
    assert!(trace.contains(r#""run":"3""#), "{trace}");

    let evidence = env.path().join("evidence");
    std::fs::create_dir(&evidence).unwrap();
    let copy = evidence.join("store.db");
    std::fs::copy(env.db(), &copy).unwrap();
    let bytes = std::fs::read(&copy).unwrap();
    let unprivileged = |args: &[&str]| as_nobody(&env, &copy, args).map(|mut cmd| ok(&mut cmd));
    std::fs::set_permissions(env.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for (file_mode, dir_mode) in [(0o444, 0o555), (0o644, 0o755)] {
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(file_mode)).unwrap();
        std::fs::set_permissions(&evidence, std::fs::Permissions::from_mode(dir_mode)).unwrap();
        if file_mode == 0o444 {
            let on_copy = |args: &[&str]| ok(env.cmd().env("CACHEWARDEN_DB", &copy).args(args));
            assert_eq!(on_copy(&trace_args), trace);
            assert_eq!(on_copy(&["export"]), export);
        }
        if let Some(out) = unprivileged(&trace_args) {
            assert_eq!(out, trace, "mode {file_mode:o}");
            assert_eq!(unprivileged(&["export"]).unwrap(), export);
        }
        let names: Vec<_> = std::fs::read_dir(&evidence)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["store.db"], "mode {file_mode:o}");
        assert_eq!(std::fs::read(&copy).unwrap(), bytes);
    }
}

/// A read-only copy with a write-ahead log holding data cannot be read by a user who may not
/// create its index (`-shm`) beside it: it is refused (exit 3) with what to do, and nothing is
/// written or created; never read as immutable, which would leave out the log's data.
#[test]
fn a_read_only_copy_with_a_write_ahead_log_is_refused_unprivileged() {
    let env = Env::new();
    ok(env.cmd().args(["record", "--pipeline", "p", "--run", "1"]));
    let evidence = env.path().join("evidence");
    std::fs::create_dir(&evidence).unwrap();
    let copy = evidence.join("store.db");
    let writer = rusqlite::Connection::open(env.db()).unwrap();
    writer
        .execute_batch(
            "PRAGMA wal_autocheckpoint = 0; INSERT INTO pipelines (name) VALUES ('late');",
        )
        .unwrap();
    std::fs::copy(env.db(), &copy).unwrap();
    let wal = evidence.join("store.db-wal");
    std::fs::copy(env.path().join("store.db-wal"), &wal).unwrap();
    drop(writer);
    assert!(std::fs::metadata(&wal).unwrap().len() > 0);
    for file in [&copy, &wal] {
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o444)).unwrap();
    }
    std::fs::set_permissions(&evidence, std::fs::Permissions::from_mode(0o555)).unwrap();
    std::fs::set_permissions(env.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let before = (std::fs::read(&copy).unwrap(), std::fs::read(&wal).unwrap());
    let Some(mut cmd) = as_nobody(&env, &copy, &["export"]) else {
        return;
    };
    let out = output(&env, &mut cmd);
    assert!(
        out.starts_with("exit: 3\n--- stdout\n--- stderr\n"),
        "{out}"
    );
    assert!(out.contains("its write-ahead log"), "{out}");
    let names: Vec<_> = std::fs::read_dir(&evidence)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(names, ["store.db", "store.db-wal"]);
    assert_eq!(
        (std::fs::read(&copy).unwrap(), std::fs::read(&wal).unwrap()),
        before
    );
}

/// Inputs that cannot be pinned to a digest are not passed over while an incident is open: a
/// `--cache-from` tag that no registry answers for, which the store recorded at a digest the
/// incident holds tainted, is refused as that digest would be (exit 5, naming both); a tag
/// the store knows nothing of, and a Dockerfile read from standard input (whose base images
/// nobody can read), are inputs nobody can check, decided by `on_unavailable`. With no
/// incident open they build as before.
#[test]
fn unpinnable_inputs_are_contained_while_an_incident_is_open() {
    let env = Env::new();
    // Nothing listens on port 1: every lookup of the tag fails at once.
    let tainted = format!("127.0.0.1:1/app:cache@{}", digest('a'));
    let line = format!(
        r#"{{"v":1,"type":"run","pipeline":"evil","run":"1","step":"s","started_at":"2026-01-01T00:00:00Z","finished_at":"2026-01-01T00:01:00Z","status":"succeeded","exported":["{tainted}"]}}"#
    );
    ok(env
        .cmd()
        .arg("import")
        .arg(env.write("evil.jsonl", &format!("{line}\n"))));
    ok(env.cmd().args(["incident", "open", "--pipeline", "evil"]));
    let docker = fake_docker(&env, "");
    let build = |args: &[&str]| {
        let mut cmd = env.cmd();
        cmd.args([
            "wrap",
            "--pipeline",
            "victim",
            "--run",
            "1",
            "--builder",
            "ci-7",
            "--",
        ])
        .arg(&docker)
        .arg("build")
        .args(args);
        cmd
    };

    let out = output(
        &env,
        &mut build(&["--cache-from", "127.0.0.1:1/app:cache", "ctx"]),
    );
    assert!(out.starts_with("exit: 5\n"), "{out}");
    assert!(
        out.contains(&format!("recorded at {}", digest('a')))
            && out.contains("tainted in open incident 1"),
        "{out}"
    );
    assert!(!env.path().join("ran").exists(), "the build ran: {out}");

    let out = output(
        &env,
        &mut build(&["--cache-from", "127.0.0.1:1/other:main", "ctx"]),
    );
    assert!(out.starts_with("exit: 5\n"), "{out}");
    assert!(
        out.contains("`127.0.0.1:1/other:main` could not be pinned to a digest"),
        "{out}"
    );
    assert!(!env.path().join("ran").exists(), "the build ran: {out}");

    let clean = format!("127.0.0.1:1/app:cache@{}", digest('b'));
    let out = output(
        &env,
        &mut build(&["-f", "-", "--cache-from", &clean, "ctx"]),
    );
    assert!(out.starts_with("exit: 5\n"), "{out}");
    assert!(out.contains("standard input"), "{out}");
    assert!(!env.path().join("ran").exists(), "the build ran: {out}");

    let open = ConfigBuilder::new()
        .on_unavailable("fail-open")
        .write_as(&env, "open.toml");
    let out = output(
        &env,
        build(&["--cache-from", "127.0.0.1:1/other:main", "ctx"]).env("CACHEWARDEN_CONFIG", &open),
    );
    assert!(out.starts_with("exit: 0\n"), "{out}");
    assert!(out.contains("containment not checked"), "{out}");
    std::fs::remove_file(env.path().join("ran")).unwrap();

    ok(env.cmd().args(["incident", "close", "1", "--force"]));
    let out = output(
        &env,
        &mut build(&["-f", "-", "--cache-from", "127.0.0.1:1/other:main", "ctx"]),
    );
    assert!(out.starts_with("exit: 0\n"), "{out}");
    assert!(out.contains("its base images are not recorded"), "{out}");
    assert!(env.path().join("ran").exists());
}
