//! Tamper evidence: the hash chain of recorded runs, `verify-log`, and the heads incidents
//! keep. Each tampering test edits the store as an attacker with write access to the file
//! would: directly in SQLite, append-only triggers dropped first.

use std::path::{Path, PathBuf};

use rusqlite::Connection;

use crate::common::{Env, digest, generate_fleet, ok, output};
use crate::schemas::assert_valid;

fn history() -> String {
    format!(
        "{}/examples/incident-history.jsonl",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// A store holding a recorded run, the example history imported, and a run re-imported with
/// one more input (an entry of added events): 7 entries.
fn chained_store(env: &Env) {
    ok(env.cmd().args([
        "record",
        "--pipeline",
        "hook",
        "--run",
        "1",
        "--builder",
        "ci-9",
        "--cache-from",
        &format!("reg.example/app:cache@{}", digest('a')),
        "--image",
        "reg.example/app:1",
        "--mount",
        "/root/.cache",
    ]));
    ok(env.cmd().args(["import", &history()]));
    let line = |inputs: &str| {
        format!(
            r#"{{"v":1,"type":"run","pipeline":"late","run":"7","step":"s","started_at":"2026-11-01T00:00:00Z","finished_at":"2026-11-01T00:01:00Z","imported":[{inputs}]}}"#
        )
    };
    let first = env.write("late.jsonl", &(line(r#""reg.example/base:1""#) + "\n"));
    // With `-v`, an import names the head it leaves, to be kept elsewhere.
    let out = env
        .cmd()
        .args(["-v", "import", first.to_str().unwrap()])
        .output()
        .unwrap();
    let head = ok(env.cmd().args(["verify-log", "--format", "json"]));
    let head: serde_json::Value = serde_json::from_str(&head).unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!(
            "run chain: 7 entries, head {}\n",
            head["head"].as_str().unwrap()
        )),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again = env.write(
        "late-again.jsonl",
        &(line(r#""reg.example/base:1","reg.example/extra:2""#) + "\n"),
    );
    ok(env.cmd().args(["import", again.to_str().unwrap()]));
}

fn verify_json(env: &Env, db: &Path, extra: &[&str]) -> (i32, serde_json::Value) {
    let out = env
        .cmd()
        .arg("--db")
        .arg(db)
        .args(["verify-log", "--format", "json"])
        .args(extra)
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_valid("verify-log.schema.json", &doc);
    (out.status.code().unwrap(), doc)
}

/// A copy of the store, for one tampering.
fn copy(env: &Env, name: &str) -> PathBuf {
    let copy = env.path().join(name);
    std::fs::copy(env.db(), &copy).unwrap();
    copy
}

/// Runs `sql` on `db` with the append-only triggers dropped, then puts them back, as a careful
/// attacker would.
fn tamper(db: &Path, sql: &str) {
    let conn = Connection::open(db).unwrap();
    let triggers: Vec<String> = conn
        .prepare(
            "SELECT sql FROM sqlite_schema WHERE type = 'trigger'
             AND tbl_name IN ('runs', 'events', 'run_chain') AND name LIKE '%never%'",
        )
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    conn.execute_batch(
        "DROP TRIGGER runs_never_update; DROP TRIGGER runs_never_delete;
         DROP TRIGGER events_never_update; DROP TRIGGER events_never_delete;
         DROP TRIGGER run_chain_never_update; DROP TRIGGER run_chain_never_delete;",
    )
    .unwrap();
    conn.execute_batch(sql).unwrap();
    for trigger in triggers {
        conn.execute_batch(&trigger).unwrap();
    }
}

/// Undoes the chain migration as if the store was made before it: the migrations after it
/// (the receipts, mount audits, step events, receipt bounds, records-only and selective
/// prunes, the runs by builder and finish, record descriptions) undone first, then the chain's
/// table and columns dropped, `user_version` nine lower.
fn unchain(db: &Path) {
    rewind(
        db,
        9,
        "DROP TABLE record_descriptions;
         DROP INDEX runs_by_builder_finish;
         DROP TABLE purge_records; ALTER TABLE purges DROP COLUMN records_since;
         ALTER TABLE purges DROP COLUMN selective; ALTER TABLE purges DROP COLUMN records_skew;
         ALTER TABLE purges DROP COLUMN records_only;
         ALTER TABLE run_receipts DROP COLUMN began_after;
         DROP TABLE step_events;
         DROP INDEX run_receipts_time_suspect;
         DROP TABLE mount_snapshot_files; DROP TABLE mount_snapshots;
         ALTER TABLE audit_findings DROP COLUMN target;
         DROP TABLE run_chain;
         ALTER TABLE incidents DROP COLUMN chain_length;
         ALTER TABLE incidents DROP COLUMN chain_head;",
    );
}

/// Runs `undo` on the store at `db`, which undoes its last `versions` migrations, and sets its
/// `user_version` that much lower, as if it was made before them.
fn rewind(db: &Path, versions: i64, undo: &str) {
    let conn = Connection::open(db).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .unwrap();
    conn.execute_batch(undo).unwrap();
    conn.pragma_update(None, "user_version", version - versions)
        .unwrap();
}

/// A chain over a recorded run, imported runs and events added to a run later verifies: exit
/// 0 with its head and length, and it reaches its own head and an earlier one.
#[test]
fn a_chain_over_record_and_import_verifies() {
    let env = Env::new();
    ok(env.cmd().args(["import", &history()]));
    let (_, early) = verify_json(&env, &env.db(), &[]);
    chained_store(&env);
    let (code, doc) = verify_json(&env, &env.db(), &[]);
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(doc["intact"], true);
    // Five runs of the history (imported twice: the second adds nothing), the recorded run,
    // the late run, then its added input.
    assert_eq!(doc["length"], 8, "{doc:#}");
    let head = doc["head"].as_str().unwrap().to_owned();
    let text = ok(env.cmd().arg("verify-log"));
    assert_eq!(text, format!("chain intact: 8 entries, head {head}\n"));
    let early = early["head"].as_str().unwrap();
    for (kept, at) in [(head.as_str(), 8), (early, 5)] {
        let (code, doc) = verify_json(&env, &env.db(), &["--head", kept]);
        assert_eq!(code, 0, "{doc:#}");
        assert_eq!(doc["expected_head"]["reached_at"], at, "{doc:#}");
    }
    let conn = Connection::open(env.db()).unwrap();
    let kinds: Vec<String> = conn
        .prepare("SELECT kind FROM run_chain ORDER BY seq")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(kinds.last().map(String::as_str), Some("events"));
}

/// The run of chain entry `seq`: its row id and its name as `verify-log` shows it.
fn entry_run(db: &Path, seq: i64) -> (i64, String) {
    Connection::open(db)
        .unwrap()
        .query_row(
            "SELECT r.id, p.name || '/' || r.run_key || '/' || r.step
             FROM run_chain c JOIN runs r ON r.id = c.run_id
             JOIN pipelines p ON p.id = r.pipeline_id WHERE c.seq = ?1",
            [seq],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap()
}

/// A chain far longer than the entries checked together: an edit anywhere is named at its
/// own entry, with the head of the entries before it, and of two breaks the one earlier in
/// the chain is named, whichever kinds they are and wherever the batches fall.
#[test]
fn breaks_in_a_long_chain_are_named_in_chain_order() {
    let env = Env::new();
    let fleet = generate_fleet(&env, (1300, 7, 3, 9), Some(11));
    ok(env.cmd().arg("import").arg(&fleet));
    let (code, doc) = verify_json(&env, &env.db(), &[]);
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(doc["length"], 1300);
    let stored_hash = |seq: i64| -> String {
        Connection::open(env.db())
            .unwrap()
            .query_row(
                "SELECT lower(hex(hash)) FROM run_chain WHERE seq = ?1",
                [seq],
                |row| row.get(0),
            )
            .unwrap()
    };
    // A kept head deep in the chain is reached where it was appended.
    let kept = stored_hash(1111);
    let (code, doc) = verify_json(&env, &env.db(), &["--head", &kept]);
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(doc["expected_head"]["reached_at"], 1111, "{doc:#}");

    let edit = |seq: i64| {
        let (id, _) = entry_run(&env.db(), seq);
        format!("UPDATE runs SET finished_at = finished_at + 1 WHERE id = {id};")
    };
    let remove = |seq: i64| format!("DELETE FROM run_chain WHERE seq = {seq};");
    let gone = |seq: i64| {
        let (id, _) = entry_run(&env.db(), seq);
        format!("PRAGMA foreign_keys = OFF; DELETE FROM runs WHERE id = {id};")
    };
    let cases = [
        (
            "edit past the first batch",
            edit(1025),
            1025,
            "hash_mismatch",
        ),
        (
            "edit, then a later entry deleted",
            edit(700) + &remove(705),
            700,
            "hash_mismatch",
        ),
        (
            "entry deleted, then a later edit",
            remove(600) + &edit(601),
            600,
            "missing_entry",
        ),
        (
            "run gone, then a later edit",
            gone(900) + &edit(902),
            900,
            "run_gone",
        ),
        ("the last entry edited", edit(1300), 1300, "hash_mismatch"),
        (
            "the first entry edited",
            edit(1) + &edit(2),
            1,
            "hash_mismatch",
        ),
    ];
    for (name, sql, at, kind) in cases {
        // A missing entry is named by the run of the next one stored.
        let named = if kind == "missing_entry" { at + 1 } else { at };
        let (_, run) = entry_run(&env.db(), named);
        let db = copy(&env, &format!("{at}.db"));
        tamper(&db, &sql);
        let (code, doc) = verify_json(&env, &db, &[]);
        assert_eq!(code, 1, "{name}: {doc:#}");
        assert_eq!(doc["break"]["kind"], kind, "{name}: {doc:#}");
        assert_eq!(doc["break"]["entry"], at, "{name}: {doc:#}");
        if kind == "run_gone" {
            assert!(doc["break"]["run"].is_null(), "{name}: {doc:#}");
        } else {
            assert_eq!(doc["break"]["run"], run.as_str(), "{name}: {doc:#}");
        }
        // The head of the entries before the break.
        let before = if at == 1 {
            "0".repeat(64)
        } else {
            stored_hash(at - 1)
        };
        assert_eq!(doc["head"], before.as_str(), "{name}: {doc:#}");
    }
}

/// Editing a run's times, builder or trust level, or what one of its events names, directly
/// in SQLite is caught: exit 1, naming the entry and the run.
#[test]
fn a_run_edited_in_the_store_is_caught() {
    let env = Env::new();
    chained_store(&env);
    let cases = [
        (
            "times",
            "UPDATE runs SET started_at = started_at - 86400000000 WHERE run_key = '1'",
        ),
        (
            "builder",
            "INSERT INTO builders (name) VALUES ('clean-builder');
             UPDATE runs SET builder_id = (SELECT id FROM builders WHERE name = 'clean-builder')
             WHERE run_key = '1'",
        ),
        (
            "trust",
            "UPDATE runs SET trust_level = 'release' WHERE run_key = '1'",
        ),
        (
            "artifact",
            "UPDATE artifacts SET locator = 'reg.example/innocent' WHERE locator = 'reg.example/app'
             AND digest <> ''",
        ),
    ];
    for (name, sql) in cases {
        let db = copy(&env, &format!("{name}.db"));
        tamper(&db, sql);
        let (code, doc) = verify_json(&env, &db, &[]);
        assert_eq!(code, 1, "{name}: {doc:#}");
        let broken = &doc["break"];
        assert_eq!(broken["kind"], "hash_mismatch", "{name}: {doc:#}");
        assert_eq!(broken["entry"], 1, "{name}: {doc:#}");
        assert_eq!(broken["run"], "hook/1/Dockerfile", "{name}: {doc:#}");
        let text = output(&env, env.cmd().arg("--db").arg(&db).arg("verify-log"));
        assert!(
            text.starts_with(
                "exit: 1\n--- stdout\nchain broken at entry 1, run `hook/1/Dockerfile`: its recomputed hash differs"
            ),
            "{name}: {text}"
        );
    }
}

/// Deleting one event of a run (an input it read) is caught at that run's entry.
#[test]
fn a_deleted_event_is_caught() {
    let env = Env::new();
    chained_store(&env);
    let db = copy(&env, "deleted.db");
    tamper(
        &db,
        "DELETE FROM events WHERE kind = 'imported' AND run_id =
             (SELECT id FROM runs WHERE run_key = '1')",
    );
    let (code, doc) = verify_json(&env, &db, &[]);
    assert_eq!(code, 1, "{doc:#}");
    assert_eq!(doc["break"]["kind"], "hash_mismatch");
    assert_eq!(doc["break"]["entry"], 1);
    // The entries before the break still hold: their head is printed.
    assert_eq!(doc["head"], "0".repeat(64));
}

/// A run inserted behind the store's back, with its events, is in no entry: caught, named
/// (its hostile key percent-encoded), at the entry it would have been.
#[test]
fn a_forged_run_is_caught() {
    let env = Env::new();
    chained_store(&env);
    let db = copy(&env, "forged.db");
    tamper(
        &db,
        "INSERT INTO runs (pipeline_id, run_key, step, started_at, finished_at, status,
                           recorded_at, trust_level)
         VALUES ((SELECT id FROM pipelines WHERE name = 'hook'), 'old' || char(27) || '[2J', 's',
                 0, 1, 'succeeded', 2, 'release');
         INSERT INTO events (run_id, kind, target, at)
         VALUES (last_insert_rowid(), 'exported', (SELECT min(id) FROM artifacts), 0);",
    );
    let (code, doc) = verify_json(&env, &db, &[]);
    assert_eq!(code, 1, "{doc:#}");
    assert_eq!(doc["break"]["kind"], "run_not_chained", "{doc:#}");
    assert_eq!(doc["break"]["entry"], 9, "{doc:#}");
    // A control character in a run name is percent-encoded wherever the name is shown.
    assert_eq!(doc["break"]["run"], "hook/old%1B[2J/s");
    let text = output(&env, env.cmd().arg("--db").arg(&db).arg("verify-log"));
    assert!(
        text.contains(
            "chain broken at entry 9, run `hook/old%1B[2J/s`: the run is stored but in no entry"
        ),
        "{text}"
    );
    assert!(!text.contains('\u{1b}'), "{text}");

    // An event slipped into a chained run after its last entry is caught too.
    let db = copy(&env, "slipped.db");
    tamper(
        &db,
        "INSERT INTO events (run_id, kind, target, at)
         SELECT id, 'exported', (SELECT max(id) FROM artifacts), 0 FROM runs WHERE run_key = '7'",
    );
    let (code, doc) = verify_json(&env, &db, &[]);
    assert_eq!(code, 1, "{doc:#}");
    assert_eq!(doc["break"]["kind"], "events_not_chained", "{doc:#}");
    assert_eq!(doc["break"]["run"], "late/7/s");
}

/// Deleting an entry of the chain is caught, and so is a chain rewritten whole with recomputed
/// hashes (cachewarden's own migration made to rebuild it over an edited run), but that only
/// with a head kept before.
#[test]
fn a_chain_rewritten_whole_is_caught_with_a_kept_head() {
    let env = Env::new();
    chained_store(&env);
    let (_, before) = verify_json(&env, &env.db(), &[]);
    let kept = before["head"].as_str().unwrap().to_owned();

    let db = copy(&env, "gap.db");
    tamper(&db, "DELETE FROM run_chain WHERE seq = 3");
    let (code, doc) = verify_json(&env, &db, &[]);
    assert_eq!(code, 1, "{doc:#}");
    assert_eq!(doc["break"]["kind"], "missing_entry", "{doc:#}");
    assert_eq!(doc["break"]["entry"], 3, "{doc:#}");

    // An entry claiming an encoding this cachewarden does not know is not passed over; one
    // relabelled with another known encoding no longer hashes to its stored hash.
    for (version, kind) in [(4, "malformed"), (3, "hash_mismatch"), (2, "hash_mismatch")] {
        let db = copy(&env, &format!("version-{version}.db"));
        tamper(
            &db,
            &format!("UPDATE run_chain SET encoding = {version} WHERE seq = 2"),
        );
        let (code, doc) = verify_json(&env, &db, &[]);
        assert_eq!(code, 1, "{doc:#}");
        assert_eq!(
            (&doc["break"]["kind"], &doc["break"]["entry"]),
            (&kind.into(), &2.into()),
            "{doc:#}"
        );
    }

    let db = copy(&env, "rewritten.db");
    tamper(
        &db,
        "UPDATE runs SET trust_level = 'release' WHERE run_key = '1'",
    );
    unchain(&db);
    ok(env.cmd().arg("--db").arg(&db).args(["db", "migrate"]));
    let (code, doc) = verify_json(&env, &db, &[]);
    assert_eq!(code, 0, "a consistent rewrite holds on its own: {doc:#}");
    assert_ne!(doc["head"], kept.as_str());
    let (code, doc) = verify_json(&env, &db, &["--head", &kept]);
    assert_eq!(code, 1, "{doc:#}");
    assert_eq!(doc["intact"], false);
    assert_eq!(doc["expected_head"]["reached_at"], serde_json::Value::Null);
    let text = output(
        &env,
        env.cmd()
            .arg("--db")
            .arg(&db)
            .args(["verify-log", "--head", &kept]),
    );
    assert!(
        text.contains(&format!(
            "does not reach the kept head {kept}: the chain was rewritten since that head was kept"
        )),
        "{text}"
    );
}

/// A store recorded before the chain existed gets one when migrated: every run, in run id
/// order, the same head for the same history, which verifies.
#[test]
fn the_migration_chains_a_store_made_before_it() {
    let env = Env::new();
    ok(env.cmd().args(["import", &history()]));
    let (_, recorded) = verify_json(&env, &env.db(), &[]);
    unchain(&env.db());
    let older = copy(&env, "older.db");
    // Readers leave an older store as it is.
    let out = output(&env, env.cmd().arg("verify-log"));
    assert!(out.starts_with("exit: 3\n"), "{out}");
    let out = output(&env, env.cmd().args(["db", "migrate"]));
    assert!(out.starts_with("exit: 0\n"), "{out}");
    let (code, migrated) = verify_json(&env, &env.db(), &[]);
    assert_eq!(code, 0, "{migrated:#}");
    assert_eq!(migrated["length"], 5);
    // Whole runs, in id order: the chain the hooks built, and the same on another copy.
    assert_eq!(migrated["head"], recorded["head"]);
    ok(env.cmd().arg("--db").arg(&older).args(["db", "migrate"]));
    let (_, again) = verify_json(&env, &older, &[]);
    assert_eq!(again["head"], migrated["head"]);
    // And the next record appends to it.
    ok(env
        .cmd()
        .args(["record", "--pipeline", "after", "--run", "1"]));
    let (code, doc) = verify_json(&env, &env.db(), &[]);
    assert_eq!((code, doc["length"].as_i64()), (0, Some(6)), "{doc:#}");
}

/// A store holding collector receipts from before receipts were chained gets them chained
/// when migrated: one entry each, after the runs', which verifies; the receipt edited then
/// is caught.
#[test]
fn the_migration_chains_the_receipts_a_store_already_holds() {
    let env = Env::new();
    ok(env.cmd().args(["import", &history()]));
    // Rewound to before the receipt migration, with a receipt as the collector kept it then.
    rewind(
        &env.db(),
        7,
        "DROP TABLE record_descriptions;
         DROP INDEX runs_by_builder_finish;
         DROP TABLE purge_records; ALTER TABLE purges DROP COLUMN records_since;
         ALTER TABLE purges DROP COLUMN selective; ALTER TABLE purges DROP COLUMN records_skew;
         ALTER TABLE purges DROP COLUMN records_only;
         ALTER TABLE run_receipts DROP COLUMN began_after;
         DROP TABLE step_events;
         DROP INDEX run_receipts_time_suspect;
         INSERT INTO run_receipts (run_id, received_at, identity, late, time_suspect)
         VALUES ((SELECT min(id) FROM runs), 1, 'https://issuer#p', 0, 'claims to finish after it was received');",
    );
    let out = output(&env, env.cmd().args(["db", "migrate"]));
    assert!(out.starts_with("exit: 0\n"), "{out}");
    let (code, doc) = verify_json(&env, &env.db(), &[]);
    assert_eq!((code, doc["length"].as_i64()), (0, Some(6)), "{doc:#}");
    let edited = copy(&env, "edited.db");
    let conn = Connection::open(&edited).unwrap();
    conn.execute_batch(
        "DROP TRIGGER run_receipts_never_update;
         UPDATE run_receipts SET time_suspect = NULL;",
    )
    .unwrap();
    drop(conn);
    let (code, doc) = verify_json(&env, &edited, &[]);
    assert_eq!(code, 1, "{doc:#}");
    assert_eq!(doc["break"]["kind"], "hash_mismatch", "{doc:#}");
    assert_eq!(doc["break"]["entry"], 6, "{doc:#}");
}

/// An incident's report states the chain head its trace was computed from, which
/// `verify-log --head` then checks, in JSON (valid against its schema) and Markdown.
#[test]
fn an_incident_report_states_the_chain_head() {
    let env = Env::new();
    ok(env.cmd().args(["import", &history()]));
    let (_, at_open) = verify_json(&env, &env.db(), &[]);
    ok(env
        .cmd()
        .args(["incident", "open", "--pipeline", "forks-pr"]));
    // Runs recorded after the incident do not change the head it states.
    ok(env
        .cmd()
        .args(["record", "--pipeline", "after", "--run", "1"]));
    let report: serde_json::Value = serde_json::from_str(&ok(env
        .cmd()
        .args(["incident", "report", "1", "--format", "json"])))
    .unwrap();
    assert_valid("report.schema.json", &report);
    assert_eq!(report["chain"]["head"], at_open["head"], "{report:#}");
    assert_eq!(report["chain"]["length"], 5);
    let head = at_open["head"].as_str().unwrap();
    let md = ok(env.cmd().args(["incident", "report", "1"]));
    assert!(
        md.contains(&format!(
            "- Computed from run chain head `{head}` (5 entries): `cachewarden verify-log --head {head}`"
        )),
        "{md}"
    );
    let (code, doc) = verify_json(&env, &env.db(), &["--head", head]);
    assert_eq!(
        (code, doc["expected_head"]["reached_at"].as_i64()),
        (0, Some(5))
    );
}

/// Writers recording at the same time append one after another: the chain has one entry a
/// run and verifies, never two entries with one number or a fork.
#[test]
fn concurrent_writers_do_not_fork_the_chain() {
    let env = Env::new();
    ok(env
        .cmd()
        .args(["record", "--pipeline", "first", "--run", "0"]));
    let children: Vec<_> = (1..=8)
        .map(|i| {
            env.cmd()
                .args(["record", "--pipeline", &format!("p{i}"), "--run", "1"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
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
    }
    let (code, doc) = verify_json(&env, &env.db(), &[]);
    assert_eq!((code, doc["length"].as_i64()), (0, Some(9)), "{doc:#}");
}

/// A `--head` that is not 64 hex digits is bad input: one line naming it, exit 2, before the
/// store is opened.
#[test]
fn a_malformed_head_is_bad_input() {
    let env = Env::new();
    let out = output(&env, env.cmd().args(["verify-log", "--head", "abc\u{1b}"]));
    assert_eq!(
        out,
        "exit: 2\n--- stdout\n--- stderr\nerror: `--head` `abc\\x1b` is not a chain head: 64 hex digits expected (as `verify-log` prints it)\n"
    );
}

/// `verify-log --help` documents the exit statuses and `--head`.
#[test]
fn verify_log_help() {
    let env = Env::new();
    insta::assert_snapshot!(output(&env, env.cmd().args(["verify-log", "--help"])));
}

/// A store whose incident pruned a builder without `--full-prune`, recorded before prunes of
/// build records only were told apart, gets that purge marked as one when migrated: a later
/// trace no longer takes it as cleaning the builder's cache mounts. A full prune, and a prune
/// recorded by hand, stay whole.
#[test]
fn the_migration_marks_an_incidents_partial_prunes_as_build_records_only() {
    let env = Env::new();
    ok(env.cmd().args(["import", &history()]));
    rewind(
        &env.db(),
        4,
        &format!(
            "DROP TABLE record_descriptions;
         DROP INDEX runs_by_builder_finish;
         DROP TABLE purge_records; ALTER TABLE purges DROP COLUMN records_since;
         ALTER TABLE purges DROP COLUMN selective; ALTER TABLE purges DROP COLUMN records_skew;
         ALTER TABLE purges DROP COLUMN records_only; {} {}",
            crate::common::BUILDER_PRUNES_SQL,
            crate::common::IMPORTED_PRUNES_SQL
        ),
    );
    ok(env.cmd().args(["db", "migrate"]));
    let conn = Connection::open(env.db()).unwrap();
    let marked: Vec<(i64, i64)> = conn
        .prepare("SELECT at, records_only FROM purges WHERE at <= 12 ORDER BY at")
        .unwrap()
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(marked, crate::common::BUILDER_PRUNES_MARKED);
    // And selective, with what its action named.
    let selective: Vec<String> = conn
        .prepare(crate::common::BUILDER_PRUNES_SELECTIVE_SQL)
        .unwrap()
        .query_map([], |row| {
            Ok(format!(
                "{}|{}|{}|{}",
                row.get::<_, i64>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, Option<i64>>(2)?
                    .map_or(String::new(), |t| t.to_string()),
                row.get::<_, String>(3)?
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        selective.join("\n"),
        crate::common::BUILDER_PRUNES_SELECTIVE
    );
    // Purges stay append-only after it.
    assert!(
        conn.execute("UPDATE purges SET records_only = 0", [])
            .is_err()
    );
    let exported = ok(env.cmd().arg("export"));
    let lines: Vec<&str> = exported
        .lines()
        .filter(|l| l.contains(r#""type":"purge""#))
        .collect();
    assert_eq!(lines.len(), 5, "{exported}");
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.contains(r#""records_only":true"#))
            .count(),
        2,
        "{exported}"
    );
    // What it exported imports again.
    let again = Env::new();
    let file = again.write("export.jsonl", &exported);
    ok(again.cmd().args(["import", "--purges"]).arg(&file));
    assert_eq!(
        ok(again.cmd().arg("export"))
            .lines()
            .filter(|l| l.contains(r#""type":"purge""#))
            .count(),
        5
    );
}
