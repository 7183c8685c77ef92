//! The incident lifecycle against a real registry: evidence, containment, re-trace, verify,
//! close, and the execution lock.

use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::build::{ConfigBuilder, History, Run};
use crate::common::{Env, digest, ok, output};
use crate::harness::oci::Pusher;
use crate::harness::{self, Registry};

/// `evil` exported a cache and an image with inline cache to `team/app`; the registry is in
/// scope. Returns the config and the two digests.
fn setup(env: &Env, registry: &Registry) -> (std::path::PathBuf, Vec<String>) {
    let host = registry.host();
    let mut pusher = Pusher::new(registry);
    let a = pusher.cache_manifest("team/app", Some("evil"), "evil a");
    let b = pusher.image("team/app", Some("poisoned"), "evil b", true);
    History::new()
        .run(Run::new("evil", 1).exported([
            format!("{host}/team/app:evil@{}", a.digest),
            format!("{host}/team/app:poisoned@{}", b.digest),
        ]))
        .import(env);
    let config = ConfigBuilder::registry(&host).write(env);
    (config, vec![a.digest, b.digest])
}

/// [`setup`] in a new environment with an incident open on `evil`.
fn opened(registry: &Registry) -> (Env, std::path::PathBuf, Vec<String>) {
    let env = Env::new();
    let (config, digests) = setup(&env, registry);
    env.open_incident(&config, "evil");
    (env, config, digests)
}

/// [`setup`] in a new environment behind a proxy that sees every registry request, with
/// `extra` added to the config; no incident is open yet.
fn proxied(
    registry: &Registry,
    extra: &str,
) -> (crate::harness::proxy::FaultProxy, Env, std::path::PathBuf) {
    let proxy = crate::harness::proxy::FaultProxy::start(&registry.host());
    let env = Env::new();
    setup(&env, registry);
    let config = ConfigBuilder::registry(&registry.host())
        .endpoint(&proxy.url())
        .write(&env);
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{text}\n{extra}")).unwrap();
    (proxy, env, config)
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Evidence is saved before deletion, the saved manifests hash to the deleted digests, and
/// MANIFEST.json lists every file with its hash.
#[test]
fn evidence_matches_what_was_deleted() {
    let Some(registry) = harness::registry() else {
        return;
    };
    let (env, config, digests) = opened(&registry);
    let evidence = env.path().join("ev");
    let out = output(
        &env,
        env.execute(&config, "1", &["--evidence-blobs", "--evidence-dir"])
            .arg(&evidence),
    );
    assert!(out.starts_with("exit: 0\n"), "{out}");
    let host_dir = evidence
        .join("manifests")
        .join(registry.host().replace(':', "_"))
        .join("team/app");
    for digest in &digests {
        let hex = digest.trim_start_matches("sha256:");
        let bytes = std::fs::read(host_dir.join(format!("{hex}.json"))).expect("saved manifest");
        assert_eq!(
            sha256_hex(&bytes),
            hex,
            "the saved manifest is the deleted one"
        );
        assert!(host_dir.join(format!("{hex}.blobs.txt")).exists());
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(evidence.join("MANIFEST.json")).unwrap()).unwrap();
    let files = manifest["files"].as_array().unwrap();
    assert!(files.len() >= 4, "{manifest:#}");
    for f in files {
        let bytes = std::fs::read(evidence.join(f["path"].as_str().unwrap())).unwrap();
        assert_eq!(f["sha256"].as_str().unwrap(), sha256_hex(&bytes));
    }
    assert!(
        evidence.join("blobs").read_dir().unwrap().count() > 0,
        "--evidence-blobs saves blobs"
    );
}

/// While the incident is open `check` refuses a tainted digest (exit 5) and passes a clean
/// one; the digest export lists exactly the tainted digests; closing lifts containment.
#[test]
fn containment_until_close() {
    let Some(registry) = harness::registry() else {
        return;
    };
    let (env, config, digests) = opened(&registry);
    let tainted = format!("{}/team/app@{}", registry.host(), digests[0]);
    let out = output(&env, env.cmd_with(&config).args(["check", &tainted]));
    assert!(
        out.starts_with("exit: 5\n") && out.contains("TAINTED"),
        "{out}"
    );
    let clean = format!("{}/team/app@sha256:{}", registry.host(), "0".repeat(64));
    assert!(output(&env, env.cmd_with(&config).args(["check", &clean])).starts_with("exit: 0\n"));
    let listed = ok(env
        .cmd_with(&config)
        .args(["incident", "report", "1", "--format", "digests"]));
    let mut expected = digests.clone();
    expected.sort();
    assert_eq!(listed.lines().collect::<Vec<_>>(), expected);

    ok(&mut env.execute(&config, "1", &[]));
    ok(env.cmd_with(&config).args(["incident", "verify", "1"]));
    ok(env.cmd_with(&config).args(["incident", "close", "1"]));
    assert!(output(&env, env.cmd_with(&config).args(["check", &tainted])).starts_with("exit: 0\n"));
}

/// A run recorded between open and execute that imported a tainted digest widens the plan:
/// the execute re-traces and deletes its export too.
#[test]
fn retrace_picks_up_new_runs() {
    let Some(registry) = harness::registry() else {
        return;
    };
    let (env, config, digests) = opened(&registry);
    let mut pusher = Pusher::new(&registry);
    let late = pusher.cache_manifest("team/late", Some("cache"), "late victim");
    let host = registry.host();
    History::new()
        .run(
            Run::new("late", 1)
                .day(3)
                .imported([format!("{host}/team/app:evil@{}", digests[0])])
                .exported([format!("{host}/team/late:cache@{}", late.digest)]),
        )
        .import_as(&env, "late.jsonl");
    let out = output(&env, &mut env.execute(&config, "1", &["--no-evidence"]));
    assert!(
        out.starts_with("exit: 0\n") && out.contains("re-trace found"),
        "{out}"
    );
    let gone = registry.get(&format!("/v2/team/late/manifests/{}", late.digest));
    assert_eq!(gone.status, 404, "the late export was purged");
}

/// A purged digest pushed again makes verify report the incident as not clean, and close
/// refuses without --force.
#[test]
fn verify_reports_a_target_that_came_back() {
    let Some(registry) = harness::registry() else {
        return;
    };
    let (env, config, _) = opened(&registry);
    ok(&mut env.execute(&config, "1", &["--no-evidence"]));
    assert!(
        output(
            &env,
            env.cmd_with(&config).args(["incident", "verify", "1"])
        )
        .starts_with("exit: 0\n")
    );
    // The same content again: same digest.
    let mut pusher = Pusher::new(&registry);
    pusher.cache_manifest("team/app", Some("evil"), "evil a");
    let out = output(
        &env,
        env.cmd_with(&config).args(["incident", "verify", "1"]),
    );
    assert!(
        out.starts_with("exit: 1\n") && out.contains("is back in the registry"),
        "{out}"
    );
    let out = output(&env, env.cmd_with(&config).args(["incident", "close", "1"]));
    assert!(out.starts_with("exit: 5\n"), "{out}");
}

/// A tainted digest first found by verify's re-trace is held from `check` at once, and listed
/// among the incident's digests, before any purge runs again.
#[test]
fn verify_holds_what_its_retrace_finds() {
    let Some(registry) = harness::registry() else {
        return;
    };
    let (env, config, _) = opened(&registry);
    ok(&mut env.execute(&config, "1", &["--no-evidence"]));
    let mut pusher = Pusher::new(&registry);
    let again = pusher.cache_manifest("team/app", Some("evil"), "evil again");
    let host = registry.host();
    History::new()
        .run(
            Run::new("evil", 2)
                .day(3)
                .exported([format!("{host}/team/app:evil@{}", again.digest)]),
        )
        .import_as(&env, "again.jsonl");
    let out = output(
        &env,
        env.cmd_with(&config).args(["incident", "verify", "1"]),
    );
    assert!(out.starts_with("exit: 1\n"), "{out}");
    let tainted = format!("{host}/team/app@{}", again.digest);
    let out = output(&env, env.cmd_with(&config).args(["check", &tainted]));
    assert!(
        out.starts_with("exit: 5\n") && out.contains("TAINTED"),
        "{out}"
    );
    let listed = ok(env
        .cmd_with(&config)
        .args(["incident", "report", "1", "--format", "digests"]));
    assert!(listed.lines().any(|l| l == again.digest), "{listed}");
}

/// Two executions of one incident at once: the second is refused while the first holds it,
/// naming the holder. A lock is taken over (with a warning) once its holder on this host is
/// gone, or a holder anywhere, on another machine or in another PID namespace, stopped
/// renewing it for `[purge] lock_stale_seconds`.
#[test]
fn second_concurrent_execution_is_refused() {
    let Some(registry) = harness::registry() else {
        return;
    };
    let (env, config, _) = opened(&registry);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let host = host.trim();
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as i64
    };
    let hold = |owner: &str, at: i64| {
        let conn = rusqlite::Connection::open(env.db()).unwrap();
        conn.execute(
            "UPDATE incidents SET lock_owner = ?1, lock_at = ?2 WHERE id = 1",
            rusqlite::params![owner, at],
        )
        .unwrap();
    };
    // Another execution, alive on this host (this test), holds the incident; so does one on
    // another machine that renewed the lock just now.
    for owner in [
        format!("{host}:{}", std::process::id()),
        format!("elsewhere-{host}:7:1"),
    ] {
        hold(&owner, now());
        let out = output(&env, &mut env.execute(&config, "1", &[]));
        assert!(
            out.starts_with("exit: 5\n")
                && out.contains("being purged by another process")
                && out.contains(&owner),
            "{out}"
        );
    }
    // One on another machine that stopped renewing it is taken over.
    hold(&format!("elsewhere-{host}:7:1"), now() - 3_600_000_000);
    let out = output(&env, &mut env.execute(&config, "1", &["--no-evidence"]));
    assert!(out.starts_with("exit: 0\n"), "{out}");
    assert!(
        out.contains("took over incident 1's lock") && out.contains("has not renewed it since"),
        "{out}"
    );
    // Once the holder on this host is gone, the lock is taken over.
    hold(&format!("{host}:999999999:5"), now());
    let out = output(&env, &mut env.execute(&config, "1", &["--no-evidence"]));
    assert!(out.starts_with("exit: 0\n"), "{out}");
    assert!(out.contains("is gone"), "{out}");
}

/// An execution renews its lock while one slow action runs: with `lock_stale_seconds = 1`,
/// a second execution three seconds into a four-second delete is still refused.
#[test]
fn a_lock_is_renewed_while_a_slow_action_runs() {
    let Some(registry) = harness::registry() else {
        return;
    };
    let (proxy, env, config) = proxied(&registry, "[purge]\nlock_stale_seconds = 1\n");
    env.open_incident(&config, "evil");
    for _ in 0..2 {
        proxy.inject(
            crate::harness::proxy::Fault::delay(std::time::Duration::from_secs(4)).on("DELETE"),
        );
    }
    let first = env
        .execute(&config, "1", &["--no-evidence", "--concurrency", "1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(3));
    let second = output(&env, &mut env.execute(&config, "1", &["--no-evidence"]));
    assert!(
        second.starts_with("exit: 5\n") && second.contains("being purged by another process"),
        "{second}"
    );
    let first = first.wait_with_output().unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
}

/// An execution whose lock another took over starts nothing more: what it has not started
/// stays pending for the other, and it exits 5 saying so.
#[test]
fn an_execution_that_lost_its_lock_stops() {
    let Some(registry) = harness::registry() else {
        return;
    };
    let (proxy, env, config) = proxied(&registry, "");
    env.open_incident(&config, "evil");
    proxy.inject(
        crate::harness::proxy::Fault::delay(std::time::Duration::from_secs(3)).on("DELETE"),
    );
    let first = env
        .execute(&config, "1", &["--no-evidence", "--concurrency", "1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(1));
    let conn = rusqlite::Connection::open(env.db()).unwrap();
    conn.execute(
        "UPDATE incidents SET lock_owner = 'elsewhere:7:1:1.x' WHERE id = 1",
        [],
    )
    .unwrap();
    let first = first.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert_eq!(first.status.code(), Some(5), "{stderr}");
    assert!(stderr.contains("took incident 1's lock over"), "{stderr}");
    let pending: i64 = conn
        .query_row(
            "SELECT count(*) FROM actions WHERE incident_id = 1 AND state = 'pending'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(pending, 1);
}

/// An incident keeps its evidence in one directory: an execution that resumes it saves there
/// again without being told, and one that names another directory is refused (exit 2) before
/// anything is deleted. A directory that cannot be made is exit 2 too, naming it.
#[test]
fn a_resumed_purge_keeps_its_evidence_in_one_directory() {
    let Some(registry) = harness::registry() else {
        return;
    };
    let (proxy, env, config) = proxied(&registry, "");
    env.open_incident(&config, "evil");
    let file = env.write("plain-file", "");
    let out = output(
        &env,
        env.execute(&config, "1", &["--evidence-dir"])
            .arg(file.join("evidence")),
    );
    assert!(out.starts_with("exit: 2\n"), "{out}");
    assert!(out.contains("cannot write"), "{out}");

    // The first execution saves its evidence in `first` and fails one delete.
    proxy.inject(crate::harness::proxy::Fault::status(405).on("DELETE"));
    let first = env.path().join("first");
    let out = output(
        &env,
        env.execute(&config, "1", &["--concurrency", "1", "--evidence-dir"])
            .arg(&first),
    );
    assert!(out.starts_with("exit: 1\n"), "{out}");
    let other = env.path().join("other");
    let out = output(
        &env,
        env.execute(&config, "1", &["--evidence-dir"]).arg(&other),
    );
    assert!(out.starts_with("exit: 2\n"), "{out}");
    assert!(out.contains("keeps its evidence in"), "{out}");
    assert!(!other.exists());
    let out = output(&env, &mut env.execute(&config, "1", &[]));
    assert!(out.starts_with("exit: 0\n"), "{out}");
    assert!(out.contains("evidence saved in [TEMP]/first"), "{out}");
    assert!(!registry.tags("team/app").iter().any(|t| t == "evil"));
}

/// Tainted caches outside any registry are follow-ups with the exact command for their system.
#[test]
fn non_registry_caches_are_follow_ups_with_commands() {
    let env = Env::new();
    History::new()
        .run(Run::new("evil", 1).exported([
            json!({"backend": "gha", "key": "web-main"}),
            json!({"backend": "s3", "key": "s3://bucket/cache/web (eu-west-1)"}),
            json!({"backend": "local", "key": "/var/cache/buildx"}),
        ]))
        .import_as(&env, "h.jsonl");
    ok(env.cmd().args(["incident", "open", "--pipeline", "evil"]));
    let show = ok(env.cmd().args(["incident", "show", "1"]));
    assert!(show.contains("delete gha cache `web-main`"), "{show}");
    let report = ok(env.cmd().args(["incident", "report", "1"]));
    assert!(
        report.contains(r"delete gha cache \`web\-main\`"),
        "{report}"
    );
    assert!(report.contains("gh cache delete -- web-main"), "{report}");
    assert!(
        report.contains("aws s3 rm --recursive s3://bucket/cache/web"),
        "{report}"
    );
    assert!(
        report.contains(
            "rm -rf -- /var/cache/buildx/index.json /var/cache/buildx/oci-layout \
             /var/cache/buildx/blobs /var/cache/buildx/ingest"
        ),
        "{report}"
    );
}

/// Two caches with one key in two places (as an import may record them) are two follow-ups,
/// each naming its place, never one.
#[test]
fn caches_with_one_key_in_two_places_are_two_follow_ups() {
    let env = Env::new();
    History::new()
        .run(Run::new("evil", 1).exported([
            json!({"backend": "gha", "locator": "org/evil", "key": "buildkit-main"}),
            json!({"backend": "gha", "locator": "org/prod", "key": "buildkit-main"}),
        ]))
        .import_as(&env, "h.jsonl");
    ok(env.cmd().args(["incident", "open", "--pipeline", "evil"]));
    let show = ok(env.cmd().args(["incident", "show", "1"]));
    assert!(
        show.contains("delete gha cache `buildkit-main` of `org/evil`")
            && show.contains("delete gha cache `buildkit-main` of `org/prod`"),
        "{show}"
    );
    // Each is deleted in its own repository.
    let report = ok(env.cmd().args(["incident", "report", "1"]));
    assert!(
        report.contains("gh cache delete -R org/evil -- buildkit-main")
            && report.contains("gh cache delete -R org/prod -- buildkit-main"),
        "{report}"
    );
    // The trace names each with its place: neither prints as the other.
    let trace = ok(env.cmd().args(["trace", "--pipeline", "evil"]));
    assert!(
        trace.contains("gha[org/evil]:buildkit-main")
            && trace.contains("gha[org/prod]:buildkit-main"),
        "{trace}"
    );
}

/// A tag only ever built into an engine gets no registry look-up (its local image is removed
/// instead), while a tag pushed without a recorded digest keeps its follow-up.
#[test]
fn follow_ups_only_for_tags_that_may_be_in_a_registry() {
    let env = Env::new();
    let image = digest('a');
    History::new()
        .run(Run::new("evil", 1).step("local").builder("ci-1").produced([
            json!("fork-pr:1"),
            json!({"backend": "local-image", "locator": "ci-1", "digest": image, "key": "fork-pr:1", "tag": "1"}),
        ]))
        .run(
            Run::new("evil", 1)
                .step("pushed")
                .produced(["reg.example/web:2"]),
        )
        .import_as(&env, "h.jsonl");
    ok(env.cmd().args(["incident", "open", "--pipeline", "evil"]));
    let report = ok(env.cmd().args(["incident", "report", "1"]));
    assert!(
        report.contains("skopeo inspect docker://reg.example/web:2"),
        "{report}"
    );
    assert!(
        !report.contains("docker://docker.io/library/fork-pr"),
        "{report}"
    );
    assert!(report.contains(&image), "{report}");
}

/// A tag pushed by tag only keeps its follow-up when the same tag was pinned by another run
/// (the tag may hold anything that run's push left there), even when a run that read it by
/// name reached it first; not when the pushing run pinned it itself, nor when it is tainted
/// only as the holder of a tainted digest, which its own action deletes.
#[test]
fn a_tag_pushed_by_tag_only_keeps_its_follow_up_unless_its_run_pinned_it() {
    let pinned = format!("reg.example/web:main@{}", digest('1'));
    let follow_up = "skopeo inspect docker://reg.example/web:main";
    for (runs, expected) in [
        (
            vec![
                Run::new("evil", 1).exported([pinned.as_str()]),
                Run::new("evil", 2).exported(["reg.example/web:main"]),
            ],
            true,
        ),
        (
            vec![Run::new("evil", 1).exported([pinned.as_str(), "reg.example/web:main"])],
            false,
        ),
        (
            vec![
                Run::new("evil", 1).exported([pinned.as_str()]),
                Run::new("reader", 1)
                    .day(2)
                    .imported(["reg.example/web:main"]),
            ],
            false,
        ),
        (
            vec![
                Run::new("evil", 1).exported([pinned.as_str()]),
                Run::new("reader", 1)
                    .day(2)
                    .imported(["reg.example/web:main"]),
                Run::new("evil", 2)
                    .day(3)
                    .exported(["reg.example/web:main"]),
            ],
            true,
        ),
    ] {
        let env = Env::new();
        History::new().runs(runs).import_as(&env, "h.jsonl");
        ok(env.cmd().args(["incident", "open", "--pipeline", "evil"]));
        let report = ok(env.cmd().args(["incident", "report", "1"]));
        assert_eq!(report.contains(follow_up), expected, "{report}");
    }
}

/// Two mounts at one target path, each written its own way (`/root/.cache/pip/` and
/// `//root/.cache/./pip`), share it: the prune of the tainted one names the other, so a record
/// at that path, which either may have written, is left in place rather than pruned.
#[test]
fn mounts_at_one_target_written_two_ways_share_it() {
    let env = Env::new();
    let line = |pipeline: &str, id: &str, target: &str, at: &str| {
        json!({
            "v": 1, "type": "run", "pipeline": pipeline, "run": "1", "step": "s",
            "builder": "ci-1", "started_at": format!("2026-03-01T{at}:00:00Z"),
            "finished_at": format!("2026-03-01T{at}:05:00Z"),
            "mounts": [{"id": id, "target": target}],
        })
        .to_string()
    };
    let file = env.write(
        "h.jsonl",
        &[
            line("web", "b", "//root/.cache/./pip", "09"),
            line("evil", "a", "/root/.cache/pip/", "10"),
        ]
        .join("\n"),
    );
    ok(env.cmd().arg("import").arg(&file));
    ok(env.cmd().args(["incident", "open", "--pipeline", "evil"]));
    let report = ok(env
        .cmd()
        .args(["incident", "report", "1", "--format", "json"]));
    let doc: serde_json::Value = serde_json::from_str(&report).unwrap();
    let prune = doc["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["kind"] == "prune-mount")
        .expect(&report);
    assert_eq!(prune["target"]["mount_id"], "a", "{report}");
    assert_eq!(prune["target"]["targets"], json!(["/root/.cache/pip"]));
    assert_eq!(prune["target"]["shares_target_with"], json!(["b"]));
}
