//! `db copy`: a whole store moved between SQLite and PostgreSQL without loss, into an empty
//! store only, all or nothing.

use std::path::{Path, PathBuf};
use std::process::Command;

use insta::assert_snapshot;

use crate::build::{ConfigBuilder, History, Run};
use crate::common::{Env, building_files, ok, output, sqlite_indexes, test_store};
use crate::harness::Registry;
use crate::harness::oci::Pusher;

/// An environment whose own store is an SQLite file, whatever back end the suite runs on.
fn sqlite_env() -> Env {
    Env {
        dir: tempfile::tempdir().expect("tempdir"),
        store: None,
    }
}

/// A new, empty PostgreSQL database (no schema) on the test server, held by an environment
/// that drops it, or `None` with a notice when `CACHEWARDEN_TEST_PG` is not set.
fn pg_database(test: &str) -> Option<(Env, String)> {
    let Some(admin) = test_store() else {
        eprintln!("skipping {test}: set CACHEWARDEN_TEST_PG to a PostgreSQL server's URL");
        return None;
    };
    let url = crate::common::create_database(&admin, "cw_copy");
    let holder = Env {
        dir: tempfile::tempdir().expect("tempdir"),
        store: Some(url.clone()),
    };
    Some((holder, url))
}

/// `cachewarden` on the store at `db` (a file or a URL).
fn on(env: &Env, db: &str) -> Command {
    let mut cmd = env.cmd();
    cmd.env("CACHEWARDEN_DB", db)
        .env("CACHEWARDEN_NO_PROGRESS", "1");
    cmd
}

/// `db copy` from `from` to `to`.
fn copy(env: &Env, from: &str, to: &str) -> String {
    output(env, on(env, from).args(["db", "copy", "--to", to]))
}

/// A history of runs with events, mounts and records, imported into the environment's store.
fn small_history(env: &Env) {
    History::new()
        .run(
            Run::new("web", 1)
                .builder("ci-1")
                .mount("/root/.cache/pip")
                .created_record("rec-1", "exec.cachemount", 4096)
                .exported(["reg.example/team/app:main@sha256:".to_owned() + &"a".repeat(64)]),
        )
        .run(
            Run::new("pr", 2)
                .trust("untrusted")
                .builder("ci-1")
                .mount("/root/.cache/pip")
                .imported(["reg.example/team/app:main@sha256:".to_owned() + &"a".repeat(64)]),
        )
        .import(env);
    ok(on(env, &env.db().display().to_string()).args([
        "mark-purged",
        "--builder",
        "ci-1",
        "--mount",
        "/root/.cache/pip",
    ]));
}

/// What must read the same on every copy of a store: its export, incidents, chain head and a
/// trace.
fn answers(env: &Env, db: &str, incidents: &[&str], head: &str) -> Vec<(String, String)> {
    let mut out = vec![
        ("export".to_owned(), ok(on(env, db).arg("export"))),
        (
            "verify-log".to_owned(),
            output(env, on(env, db).args(["verify-log", "--head", head])),
        ),
        (
            "trace".to_owned(),
            ok(on(env, db).args(["trace", "--pipeline", "pr", "--format", "json"])),
        ),
        (
            "incident list".to_owned(),
            ok(on(env, db).args(["incident", "list"])),
        ),
    ];
    for id in incidents {
        for format in ["text", "json"] {
            out.push((
                format!("incident show {id} --format {format}"),
                ok(on(env, db).args(["incident", "show", id, "--format", format])),
            ));
        }
    }
    out
}

/// The chain head `verify-log` prints for the store at `db`.
fn head(env: &Env, db: &str) -> String {
    let text = ok(on(env, db).arg("verify-log"));
    text.trim().rsplit(' ').next().expect("a head").to_owned()
}

fn assert_same(what: &str, expected: &[(String, String)], found: &[(String, String)]) {
    assert_eq!(expected.len(), found.len());
    for ((name, a), (_, b)) in expected.iter().zip(found) {
        assert_eq!(a, b, "`{name}` differs on {what}");
    }
}

/// `db copy --help`.
#[test]
fn db_copy_help() {
    let env = sqlite_env();
    assert_snapshot!(output(&env, env.cmd().args(["db", "copy", "--help"])));
}

/// An SQLite store copied to another SQLite file answers the same: export, trace, chain head.
#[test]
fn sqlite_to_sqlite_keeps_everything() {
    let env = sqlite_env();
    small_history(&env);
    let source = env.db().display().to_string();
    let dest = env.path().join("copy.db").display().to_string();
    let copied = copy(&env, &source, &dest);
    assert!(copied.starts_with("exit: 0\n"), "{copied}");
    assert!(copied.contains("copied `events`: "), "{copied}");
    let head = head(&env, &source);
    assert_same(
        "the copy",
        &answers(&env, &source, &[], &head),
        &answers(&env, &dest, &[], &head),
    );
    // Built beside its path where no store was, and put in place whole: every index, in WAL
    // mode, nothing left beside it.
    assert_eq!(sqlite_indexes(&dest), sqlite_indexes(&source));
    let mode: String = rusqlite::Connection::open(&dest)
        .unwrap()
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    assert_eq!(building_files(env.path()), Vec::<String>::new());
}

/// A DEST that already holds runs is refused with exit 2, naming it, and left as it was.
#[test]
fn a_dest_holding_runs_is_refused_and_left_alone() {
    let env = sqlite_env();
    small_history(&env);
    let other = sqlite_env();
    History::new().run(Run::new("mine", 1)).import(&other);
    let dest = other.db().display().to_string();
    let before = ok(on(&other, &dest).arg("export"));
    let refused = copy(&env, &env.db().display().to_string(), &dest);
    assert!(refused.starts_with("exit: 2\n"), "{refused}");
    assert!(
        refused.contains(&format!("`{dest}` already holds runs")),
        "{refused}"
    );
    assert_eq!(ok(on(&other, &dest).arg("export")), before);

    let Some((_held, pg)) = pg_database("a_dest_holding_runs_is_refused_and_left_alone") else {
        return;
    };
    ok(on(&other, &dest).args(["db", "copy", "--to", &pg]));
    let before = ok(on(&other, &pg).arg("export"));
    let refused = copy(&env, &env.db().display().to_string(), &pg);
    assert!(refused.starts_with("exit: 2\n"), "{refused}");
    assert!(refused.contains("already holds runs"), "{refused}");
    assert_eq!(ok(on(&other, &pg).arg("export")), before);
}

/// A source whose packed event pages were edited (so that a trace would read other events
/// than the ones stored) is not copied: the rebuilt pages differ, the copy exits 3, and the
/// DEST file it would have created is not left behind.
#[test]
fn edited_pages_stop_the_copy() {
    let env = sqlite_env();
    small_history(&env);
    let conn = rusqlite::Connection::open(env.db()).unwrap();
    let changed = conn
        .execute(
            "UPDATE event_pages SET events = zeroblob(length(events)) WHERE page = 0",
            [],
        )
        .unwrap();
    assert_eq!(changed, 1);
    drop(conn);
    let dest = env.path().join("copy.db");
    let out = copy(
        &env,
        &env.db().display().to_string(),
        dest.to_str().unwrap(),
    );
    assert!(out.starts_with("exit: 3\n"), "{out}");
    assert!(out.contains("`event_pages` rebuilt here differ"), "{out}");
    assert!(!dest.exists(), "{out}");
    assert_eq!(building_files(env.path()), Vec::<String>::new());

    // Into a store that was there before, and onto PostgreSQL: every table was written before
    // the pages were compared, and all of it is rolled back.
    let empty = env.write("empty.jsonl", "");
    ok(on(&env, dest.to_str().unwrap()).args(["import", empty.to_str().unwrap()]));
    let out = copy(
        &env,
        &env.db().display().to_string(),
        dest.to_str().unwrap(),
    );
    assert!(out.starts_with("exit: 3\n"), "{out}");
    assert_eq!(ok(on(&env, dest.to_str().unwrap()).arg("export")), "");
    let Some((_held, pg)) = pg_database("edited_pages_stop_the_copy") else {
        return;
    };
    let out = copy(&env, &env.db().display().to_string(), &pg);
    assert!(out.starts_with("exit: 3\n"), "{out}");
    assert!(out.contains("`event_pages` rebuilt here differ"), "{out}");
    assert_eq!(ok(on(&env, &pg).arg("export")), "");
}

/// The incident history of the round trip: `evil` exported a cache inside the scope and one
/// outside; its incident is purged, the one outside accepted, and the incident closed; an
/// incident on `pr` stays open; a sweep purged an old untrusted cache; a mount was marked
/// purged.
fn incident_history(env: &Env, registry: &Registry) -> PathBuf {
    let host = registry.host();
    let mut pusher = Pusher::new(registry);
    let inside = pusher.cache_manifest("team/app", Some("evil"), "evil inside");
    let outside = pusher.cache_manifest("other/app", Some("evil"), "evil outside");
    let stale = pusher.cache_manifest("team/app", Some("pr-1"), "stale untrusted");
    let clean = pusher.cache_manifest("team/app", Some("main"), "good");
    History::new()
        .run(Run::new("evil", 1).exported([
            format!("{host}/team/app:evil@{}", inside.digest),
            format!("{host}/other/app:evil@{}", outside.digest),
        ]))
        .run(
            Run::new("good", 1)
                .builder("ci-1")
                .mount("/root/.cache/pip")
                .exported([format!("{host}/team/app:main@{}", clean.digest)]),
        )
        .run(
            Run::new("pr", 1)
                .trust("untrusted")
                .days_ago(30)
                .builder("ci-1")
                .mount("/root/.cache/pip")
                .exported([format!("{host}/team/app:pr-1@{}", stale.digest)]),
        )
        .import(env);
    let config = ConfigBuilder::registry(&host)
        .scope_repositories([format!("{host}/team/**")])
        .write(env);
    env.open_incident(&config, "evil");
    let run = output(env, &mut env.execute(&config, "1", &[]));
    assert!(run.starts_with("exit: 5\n"), "{run}");
    let outside = outside.digest.as_str();
    let seq = env.incident_action(&config, "1", "the cache outside the scope", |a| {
        a["target"]["digest"] == outside
    })["seq"]
        .as_i64()
        .unwrap();
    ok(env.cmd_with(&config).args([
        "incident",
        "accept",
        "1",
        &seq.to_string(),
        "--reason",
        "other/ is a partner's registry",
    ]));
    ok(env.cmd_with(&config).args(["incident", "close", "1"]));
    let policy = env.write(
        "policy.toml",
        &format!(
            "[[rule]]\nname = \"stale team caches\"\nselect = \"cache-refs\"\n\
             repository = \"{host}/team/*\"\ntrust_level = \"untrusted\"\n\
             older_than = \"14d\"\naction = \"purge\"\n"
        ),
    );
    let swept = output(
        env,
        env.cmd_with(&config).args([
            "sweep",
            "--policy",
            policy.to_str().unwrap(),
            "--execute",
            "--yes",
        ]),
    );
    assert!(swept.starts_with("exit: 0\n"), "{swept}");
    env.open_incident(&config, "pr");
    ok(env.cmd().args([
        "mark-purged",
        "--builder",
        "ci-1",
        "--mount",
        "/root/.cache/pip",
    ]));
    config
}

/// SQLite -> PostgreSQL -> SQLite: every copy answers as the first store does (export,
/// incident list and show, the chain head, a trace), incidents open and closed with their
/// journals, acceptances and sweeps included.
#[test]
fn sqlite_to_postgres_and_back_loses_nothing() {
    let Some((pg_env, pg)) = pg_database("sqlite_to_postgres_and_back_loses_nothing") else {
        return;
    };
    let Some(registry) = crate::harness::registry() else {
        return;
    };
    let env = sqlite_env();
    incident_history(&env, &registry);
    let first = env.db().display().to_string();
    let incidents = ok(on(&env, &first).args(["incident", "list", "--format", "json"]));
    let incidents: serde_json::Value = serde_json::from_str(&incidents).unwrap();
    let ids: Vec<String> = incidents
        .as_array()
        .unwrap_or_else(|| panic!("{incidents:#}"))
        .iter()
        .map(|i| i["id"].to_string())
        .collect();
    assert!(ids.len() >= 2, "{incidents:#}");
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let first_head = head(&env, &first);
    let expected = answers(&env, &first, &ids, &first_head);
    // The store holds what the round trip must keep.
    let all: String = expected.iter().map(|(_, text)| text.as_str()).collect();
    for held in [
        "\"type\":\"purge\"",
        "  closed  ",
        "  open    ",
        "sweep by policy",
        "partner's registry",
        "  done  ",
    ] {
        assert!(all.contains(held), "the store lacks {held}: {all}");
    }

    let there = copy(&env, &first, &pg);
    assert!(there.starts_with("exit: 0\n"), "{there}");
    assert!(there.contains("(COPY)"), "{there}");
    assert_same(
        "PostgreSQL",
        &expected,
        &answers(&env, &pg, &ids, &first_head),
    );

    let back = env.path().join("back.db").display().to_string();
    let returned = copy(&env, &pg, &back);
    assert!(returned.starts_with("exit: 0\n"), "{returned}");
    assert_same(
        "the SQLite copy back",
        &expected,
        &answers(&env, &back, &ids, &first_head),
    );

    // The copy on PostgreSQL takes new runs under new ids, and its chain goes on from there.
    History::new()
        .run(Run::new("after", 1))
        .import_as(&pg_env, "after.jsonl");
    let grown = ok(on(&env, &pg).arg("verify-log"));
    assert!(grown.starts_with("chain intact"), "{grown}");
    assert_ne!(head(&env, &pg), first_head);
}

/// The tables of a copied store hold the same rows as the source's, byte for byte, packed
/// pages included.
#[test]
fn every_table_reads_the_same_after_a_copy() {
    let env = sqlite_env();
    small_history(&env);
    let dest = env.path().join("copy.db");
    ok(on(&env, &env.db().display().to_string()).args([
        "db",
        "copy",
        "--to",
        dest.to_str().unwrap(),
    ]));
    let dump = |path: &Path| -> Vec<(String, Vec<String>)> {
        let conn = rusqlite::Connection::open(path).unwrap();
        let tables: Vec<String> = conn
            .prepare(
                "SELECT name FROM sqlite_schema WHERE type = 'table' \
                 AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name",
            )
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        tables
            .into_iter()
            .map(|table| {
                let sql = format!("SELECT * FROM \"{table}\"");
                let mut stmt = conn.prepare(&sql).unwrap();
                let width = stmt.column_count();
                let mut rows: Vec<String> = stmt
                    .query_map([], |row| {
                        Ok((0..width)
                            .map(|i| format!("{:?}", row.get_ref(i).unwrap()))
                            .collect::<Vec<_>>()
                            .join("|"))
                    })
                    .unwrap()
                    .collect::<Result<_, _>>()
                    .unwrap();
                rows.sort();
                (table, rows)
            })
            .collect()
    };
    let source = dump(&env.db());
    let copied = dump(&dest);
    assert!(
        source
            .iter()
            .any(|(t, rows)| t == "event_pages" && !rows.is_empty())
    );
    assert_eq!(source, copied);
}
