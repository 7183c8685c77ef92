//! Incidents opened before the seeds were stored as the project's own type (when the stored
//! seeds were the command line's argument struct) still re-trace, verify and report.

use rusqlite::Connection;

use crate::build::{History, Run};
use crate::common::{Env, manifest_exists, ok, output, registry_env};
use crate::harness::Registry;
use crate::harness::oci::Pusher;
use crate::purge::config;

/// A run of `evil` that exported `digest` to `team/app`, on `day` of January 2026.
fn import_run(env: &Env, registry: &Registry, run: &str, day: u32, digest: &str) {
    History::new()
        .run(
            Run::new("evil", run)
                .day(day)
                .exported([format!("{}/team/app:evil{run}@{digest}", registry.host())]),
        )
        .import_as(env, &format!("run-{run}.jsonl"));
}

fn stored_seeds(conn: &Connection) -> serde_json::Value {
    let text: String = conn
        .query_row("SELECT seeds FROM incidents WHERE id = 1", [], |row| {
            row.get(0)
        })
        .unwrap();
    serde_json::from_str(&text).unwrap()
}

/// An incident stored with the old seed shape (`pipeline`, `runs`, `cache_ref`, ... as the
/// flags were named) is rewritten by the migration to what `open` stores now, keeps its
/// seeds and window exactly: a later build of the compromised pipeline is still caught by
/// verify, purged, and the incident verifies clean and reports. Without the migration the
/// stored seeds could not be read and the incident could never be verified or closed.
#[test]
fn an_incident_stored_with_the_old_seed_shape_still_verifies_and_reports() {
    let Some((registry, env)) = registry_env() else {
        return;
    };
    let mut pusher = Pusher::new(&registry);
    let first = pusher.cache_manifest("team/app", Some("evil1"), "evil first");
    let later = pusher.cache_manifest("team/app", Some("evil2"), "evil later");
    import_run(&env, &registry, "1", 1, &first.digest);
    let config = config(&registry.host()).write(&env);
    let first_ref = format!("{}/team/app@{}", registry.host(), first.digest);
    ok(env.cmd_with(&config).args([
        "incident",
        "open",
        "--pipeline",
        "evil",
        "--run",
        "evil/1/s",
        "--cache-ref",
        &first_ref,
        "--since",
        "2025-12-31T00:00:00Z",
    ]));
    let conn = Connection::open(env.db()).unwrap();
    let current = stored_seeds(&conn);
    assert_eq!(current["seeds"]["version"], 2, "{current}");

    // The shape every incident was stored in before, taken literally.
    let old = format!(
        r#"{{"seeds":{{"pipeline":["evil"],"runs":["evil/1/s"],"cache_ref":["{first_ref}"],"mount":[],"builder":[],"image":[],"since":"2025-12-31T00:00:00Z","until":null}},"ignore_time":false,"ignore_purges":false,"delete_images":false,"full_prune":false}}"#
    );
    conn.execute("UPDATE incidents SET seeds = ?1 WHERE id = 1", [&old])
        .unwrap();
    // The version before the seed migration (0011), with what later migrations made undone.
    conn.execute_batch(
        "DROP TABLE record_descriptions;
         DROP INDEX runs_by_builder_finish;
         DROP TABLE purge_records; ALTER TABLE purges DROP COLUMN records_since;
         ALTER TABLE purges DROP COLUMN selective; ALTER TABLE purges DROP COLUMN records_skew;
         ALTER TABLE purges DROP COLUMN records_only;
         DROP TABLE step_events;
         DROP TABLE mount_snapshot_files; DROP TABLE mount_snapshots;
         ALTER TABLE audit_findings DROP COLUMN target;
         DROP TABLE run_chain;
         ALTER TABLE incidents DROP COLUMN chain_length;
         ALTER TABLE incidents DROP COLUMN chain_head;
         DROP TABLE run_receipts; DROP TABLE collector_refusals;
         DROP TABLE build_history; DROP TABLE run_build_refs;
         ALTER TABLE events DROP COLUMN source;",
    )
    .unwrap();
    conn.pragma_update(None, "user_version", 10).unwrap();
    drop(conn);

    let out = output(&env, env.cmd_with(&config).args(["db", "migrate"]));
    assert!(out.starts_with("exit: 0\n"), "{out}");
    let conn = Connection::open(env.db()).unwrap();
    assert_eq!(stored_seeds(&conn), current);
    drop(conn);

    // A later build of the compromised pipeline, within the stored window.
    import_run(&env, &registry, "2", 2, &later.digest);
    let verify = output(
        &env,
        env.cmd_with(&config).args(["incident", "verify", "1"]),
    );
    assert!(verify.starts_with("exit: 1\n"), "{verify}");
    assert!(
        verify.contains("the re-run trace found 1 target the plan did not hold; it is planned now"),
        "{verify}"
    );
    ok(&mut env.execute(&config, "1", &[]));
    for digest in [&first.digest, &later.digest] {
        assert!(!manifest_exists(&registry, "team/app", digest), "{digest}");
    }
    let verify = output(
        &env,
        env.cmd_with(&config).args(["incident", "verify", "1"]),
    );
    assert!(verify.starts_with("exit: 0\n"), "{verify}");
    let report = ok(env
        .cmd_with(&config)
        .args(["incident", "report", "1", "--format", "json"]));
    for digest in [&first.digest, &later.digest] {
        assert!(report.contains(digest.as_str()), "{digest}: {report}");
    }
}
