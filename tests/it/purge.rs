//! `incident open` and `incident purge` against a real registry.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::build::{self, ConfigBuilder, Run};
use crate::common::{Env, manifest_exists, ok, output, registry_env};
use crate::harness::oci::{Pushed, Pusher};
use crate::harness::proxy::{Fault, FaultProxy};
use crate::harness::{self, Registry, RegistryOpts};

/// A history: `evil` exported `tainted` caches in `team/app`, `good` exported `clean` in the
/// same repository, `victim` imported the first tainted cache and exported `downstream` in
/// `team/victim`, and `evil` also exported `outside` to a repository outside the scope.
pub(crate) struct History {
    pub(crate) tainted: Vec<Pushed>,
    pub(crate) clean: Pushed,
    pub(crate) downstream: Pushed,
    pub(crate) outside: Pushed,
}

pub(crate) fn history(env: &Env, registry: &Registry, count: usize) -> History {
    let host = registry.host();
    let mut pusher = Pusher::new(registry);
    let tainted: Vec<Pushed> = (0..count)
        .map(|i| {
            pusher.cache_manifest("team/app", Some(&format!("evil-{i}")), &format!("evil {i}"))
        })
        .collect();
    let clean = pusher.cache_manifest("team/app", Some("main"), "good");
    let downstream = pusher.cache_index("team/victim", Some("cache"), "victim");
    let outside = pusher.cache_manifest("other/app", Some("x"), "outside");
    let exported = tainted
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{host}/team/app:evil-{i}@{}", p.digest))
        .chain([format!("{host}/other/app:x@{}", outside.digest)]);
    build::History::new()
        .run(Run::new("evil", 1).exported(exported))
        .run(Run::new("good", 1).exported([format!("{host}/team/app:main@{}", clean.digest)]))
        .run(
            Run::new("victim", 1)
                .day(2)
                .imported([format!("{host}/team/app:evil-0@{}", tainted[0].digest)])
                .exported([format!("{host}/team/victim:cache@{}", downstream.digest)]),
        )
        .import(env);
    History {
        tainted,
        clean,
        downstream,
        outside,
    }
}

/// The registry and its `team/` repositories in scope.
pub(crate) fn config(host: &str) -> ConfigBuilder {
    ConfigBuilder::registry(host).scope_repositories([format!("{host}/team/**")])
}

/// [`history`] with `count` tainted caches, the config, and an incident open on `evil`.
pub(crate) fn opened(env: &Env, registry: &Registry, count: usize) -> (History, PathBuf) {
    let h = history(env, registry, count);
    let config = config(&registry.host()).write(env);
    env.open_incident(&config, "evil");
    (h, config)
}

/// `incident purge 1 --execute --yes` and `extra` in the background, its output dropped.
pub(crate) fn spawn_purge(env: &Env, config: &Path, extra: &[&str]) -> Child {
    env.execute(config, "1", extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// How many actions the store records done.
fn done(env: &Env) -> i64 {
    let conn = rusqlite::Connection::open(env.db()).unwrap();
    conn.query_row(
        "SELECT count(*) FROM actions WHERE state = 'done'",
        [],
        |r| r.get(0),
    )
    .unwrap_or(0)
}

/// Polls every `poll` until `count` actions are done, for a minute at most.
fn wait_until_done(env: &Env, count: i64, poll: Duration) {
    let started = Instant::now();
    while done(env) < count && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(poll);
    }
}

/// Open then execute deletes exactly the tainted digests in scope: a clean digest in the same
/// repository and an out-of-scope tainted one survive, and a second execute does nothing.
#[test]
fn purge_deletes_exactly_the_tainted_digests_in_scope() {
    let Some((registry, env)) = registry_env() else {
        return;
    };
    let h = history(&env, &registry, 3);
    let config = config(&registry.host()).write(&env);
    let open = ok(env.cmd_with(&config).args([
        "incident",
        "open",
        "--pipeline",
        "evil",
        "--format",
        "json",
    ]));
    let open: serde_json::Value = serde_json::from_str(&open).unwrap();
    let id = open["incident"].as_i64().unwrap().to_string();
    let actions = open["actions"].as_array().unwrap();
    let deletes: Vec<&serde_json::Value> = actions
        .iter()
        .filter(|a| a["kind"] == "delete-manifest")
        .collect();
    assert_eq!(deletes.len(), 5, "{open:#}");
    assert_eq!(
        deletes.iter().filter(|a| a["in_scope"] == false).count(),
        1,
        "the other/ repository is out of scope"
    );

    // The dry run changes nothing and reports the out-of-scope target.
    let dry = output(&env, env.cmd_with(&config).args(["incident", "purge", &id]));
    assert!(dry.starts_with("exit: 1\n"), "{dry}");
    assert!(dry.contains("out of scope: will not run"), "{dry}");
    assert!(
        h.tainted
            .iter()
            .all(|p| manifest_exists(&registry, "team/app", &p.digest))
    );

    // Everything in scope is done; the out-of-scope action stays pending, and says so (exit 5).
    let run = output(&env, &mut env.execute(&config, &id, &[]));
    assert!(run.starts_with("exit: 5\n"), "{run}");
    assert!(run.contains("1 outside the scope"), "{run}");
    for p in &h.tainted {
        assert!(
            !manifest_exists(&registry, "team/app", &p.digest),
            "{} survived",
            p.digest
        );
    }
    assert!(
        !manifest_exists(&registry, "team/victim", &h.downstream.digest),
        "transitively tainted cache survived"
    );
    assert!(
        manifest_exists(&registry, "team/app", &h.clean.digest),
        "an untainted digest in a tainted repository was deleted"
    );
    assert!(
        manifest_exists(&registry, "other/app", &h.outside.digest),
        "an out-of-scope ref was touched"
    );
    assert!(
        !registry
            .tags("team/app")
            .iter()
            .any(|t| t.starts_with("evil-"))
    );
    assert!(registry.tags("team/app").contains(&"main".to_owned()));

    let again = output(&env, &mut env.execute(&config, &id, &[]));
    assert!(
        again.starts_with("exit: 5\n") && again.contains("nothing was done"),
        "{again}"
    );

    let report = ok(env.cmd_with(&config).args(["incident", "report", &id]));
    assert!(
        report.contains("## Actions") && report.contains("garbage-collect"),
        "{report}"
    );
    let json = ok(env
        .cmd_with(&config)
        .args(["incident", "report", &id, "--format", "json"]));
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["summary"]["done"], 4);
    assert_eq!(json["summary"]["failed"], 0);
}

/// Without --yes and without a terminal, nothing is done and the exit status says refused.
#[test]
fn purge_without_confirmation_is_refused() {
    let Some((registry, env)) = registry_env() else {
        return;
    };
    let (h, config) = opened(&env, &registry, 1);
    let out = output(
        &env,
        env.cmd_with(&config)
            .args(["incident", "purge", "1", "--execute"])
            .stdin(std::process::Stdio::null()),
    );
    assert!(out.starts_with("exit: 5\n"), "{out}");
    assert!(manifest_exists(&registry, "team/app", &h.tainted[0].digest));
}

/// A registry with deletes disabled gives the actionable error and a partial-failure status.
#[test]
fn delete_disabled_is_actionable() {
    if !harness::require_registry() {
        return;
    }
    let registry = Registry::start(RegistryOpts {
        delete_enabled: false,
        ..RegistryOpts::default()
    });
    let env = Env::new();
    let (_, config) = opened(&env, &registry, 1);
    let out = output(&env, &mut env.execute(&config, "1", &[]));
    assert!(out.starts_with("exit: 1\n"), "{out}");
    assert!(out.contains("deletion is disabled on registry"), "{out}");
}

/// 500 and 429 with Retry-After from a proxy in front of the registry are retried.
#[test]
fn transient_registry_errors_are_retried() {
    let Some(registry) = harness::registry() else {
        return;
    };
    let proxy = FaultProxy::start(&registry.host());
    let env = Env::new();
    let h = history(&env, &registry, 2);
    let config = config(&registry.host()).endpoint(&proxy.url()).write(&env);
    env.open_incident(&config, "evil");
    proxy.inject(Fault::status(500).on("DELETE"));
    proxy.inject(Fault::status(429).on("DELETE").header("Retry-After", "1"));
    let out = output(
        &env,
        &mut env.execute(&config, "1", &["--concurrency", "1"]),
    );
    assert!(out.starts_with("exit: 5\n"), "{out}");
    for p in &h.tainted {
        assert!(!manifest_exists(&registry, "team/app", &p.digest));
    }
    let seen = proxy.seen();
    assert!(
        seen.iter().any(|s| s.injected && s.status == Some(429)),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|s| s.injected && s.status == Some(500)),
        "{seen:?}"
    );
}

/// The registry stopped in the middle of a purge: what was done stays done, the rest fails
/// without hanging; after a restart the rerun completes.
#[test]
fn registry_stopped_mid_purge_then_rerun_completes() {
    if !harness::require_registry() {
        return;
    }
    let mut registry = Registry::start(RegistryOpts::default());
    let env = Env::new();
    let (h, config) = opened(&env, &registry, 200);
    let child = spawn_purge(&env, &config, &["--no-evidence", "--concurrency", "1"]);
    wait_until_done(&env, 10, Duration::from_millis(2));
    registry.stop();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(4),
        "a purge the registry went away from exits 4"
    );
    let done_mid = done(&env);
    assert!(
        (10..201).contains(&done_mid),
        "{done_mid} actions done before the registry went away"
    );
    registry.restart();
    let out = output(&env, &mut env.execute(&config, "1", &["--no-evidence"]));
    assert!(out.starts_with("exit: 5\n"), "{out}");
    for p in &h.tainted {
        assert!(!manifest_exists(&registry, "team/app", &p.digest));
    }
    assert!(manifest_exists(&registry, "team/app", &h.clean.digest));
}

/// `kill -9` in the middle of a purge: the rerun finishes the rest, and no action that was
/// recorded done is attempted again.
#[test]
fn kill_nine_mid_purge_then_rerun() {
    let Some((registry, env)) = registry_env() else {
        return;
    };
    let (h, config) = opened(&env, &registry, 300);
    let mut child = spawn_purge(&env, &config, &["--concurrency", "2"]);
    wait_until_done(&env, 20, Duration::from_millis(5));
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    let conn = rusqlite::Connection::open(env.db()).unwrap();
    let done_before: Vec<i64> = conn
        .prepare("SELECT id FROM actions WHERE state = 'done'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(
        done_before.len() >= 20 && done_before.len() < 301,
        "killed after {} actions",
        done_before.len()
    );
    drop(conn);

    let out = output(&env, &mut env.execute(&config, "1", &[]));
    assert!(out.starts_with("exit: 5\n"), "{out}");
    let conn = rusqlite::Connection::open(env.db()).unwrap();
    for id in &done_before {
        let attempts: i64 = conn
            .query_row("SELECT attempts FROM actions WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(
            attempts, 1,
            "action {id} was done before the kill and ran again"
        );
    }
    let not_done: i64 = conn
        .query_row("SELECT count(*) FROM actions WHERE kind = 'delete-manifest' AND in_scope = 1 AND state <> 'done'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(not_done, 0);
    for p in &h.tainted {
        assert!(!manifest_exists(&registry, "team/app", &p.digest));
    }
}
