//! `sweep` against a real registry: rule selection, keep-N, dry run, the lock, metrics.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::build::{ConfigBuilder, History, Run};
use crate::common::{Env, manifest_exists, ok, output, registry_env};
use crate::harness::Registry;
use crate::harness::oci::{Pushed, Pusher};
use crate::schemas::assert_valid;

/// A run of `project` web exporting `refs`, started `days` ago.
fn export_run(pipeline: &str, trust: &str, run: usize, days: i64, refs: &[String]) -> Run {
    Run::new(pipeline, run)
        .trust(trust)
        .project("web")
        .days_ago(days)
        .exported(refs.iter().cloned())
}

/// The registry's `team/` repositories and builder `ci-1` in scope.
fn config(env: &Env, host: &str) -> PathBuf {
    ConfigBuilder::registry(host)
        .scope_repositories([format!("{host}/team/**")])
        .scope_builders(["ci-1"])
        .write(env)
}

/// `sweep --policy POLICY` and `extra`.
fn sweep(env: &Env, config: &Path, policy: &Path, extra: &[&str]) -> Command {
    let mut cmd = env.cmd_with(config);
    cmd.args(["sweep", "--policy", policy.to_str().unwrap()])
        .args(extra);
    cmd
}

/// The digests a sweep's JSON plans to delete, sorted.
fn planned_deletes(json: &str) -> Vec<String> {
    let doc: serde_json::Value = serde_json::from_str(json).unwrap();
    let mut digests: Vec<String> = doc["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == "delete-manifest")
        .map(|a| a["target"]["digest"].as_str().unwrap().to_owned())
        .collect();
    digests.sort();
    digests
}

/// Caches of an untrusted and a release pipeline, old and young, in a repository the policy
/// names and one it does not.
struct Fleet {
    old_untrusted: Pushed,
    young_untrusted: Pushed,
    old_release: Pushed,
    elsewhere: Pushed,
}

fn fleet(env: &Env, registry: &Registry) -> Fleet {
    let host = registry.host();
    let mut pusher = Pusher::new(registry);
    let f = Fleet {
        old_untrusted: pusher.cache_manifest("team/app", Some("pr-1"), "old untrusted"),
        young_untrusted: pusher.cache_manifest("team/app", Some("pr-2"), "young untrusted"),
        old_release: pusher.cache_manifest("team/app", Some("main"), "old release"),
        elsewhere: pusher.cache_manifest("other/app", Some("pr-3"), "elsewhere"),
    };
    History::new()
        .runs([
            export_run(
                "pr",
                "untrusted",
                1,
                30,
                &[format!("{host}/team/app:pr-1@{}", f.old_untrusted.digest)],
            ),
            export_run(
                "pr",
                "untrusted",
                2,
                1,
                &[format!("{host}/team/app:pr-2@{}", f.young_untrusted.digest)],
            ),
            export_run(
                "main",
                "release",
                1,
                30,
                &[format!("{host}/team/app:main@{}", f.old_release.digest)],
            ),
            export_run(
                "pr",
                "untrusted",
                3,
                30,
                &[format!("{host}/other/app:pr-3@{}", f.elsewhere.digest)],
            ),
        ])
        .import(env);
    f
}

const POLICY: &str = r#"
[[rule]]
name = "release stays"
select = "cache-refs"
trust_level = ">=release"
action = "keep"

[[rule]]
name = "stale team caches"
select = "cache-refs"
repository = "HOST/team/*"
older_than = "14d"
action = "purge"
"#;

/// Ordered rules select exactly the stale untrusted cache, and executing deletes it alone.
#[test]
fn rules_select_exactly_what_they_should() {
    let Some((registry, env)) = registry_env() else {
        return;
    };
    let f = fleet(&env, &registry);
    let config = config(&env, &registry.host());
    let policy = env.write("policy.toml", &POLICY.replace("HOST", &registry.host()));
    let dry = ok(&mut sweep(&env, &config, &policy, &["--format", "json"]));
    assert_eq!(
        planned_deletes(&dry),
        vec![f.old_untrusted.digest.clone()],
        "{dry}"
    );
    let doc: serde_json::Value = serde_json::from_str(&dry).unwrap();
    assert_eq!(doc["rules"][0]["kept"], 1, "{dry}");
    assert_valid("sweep.schema.json", &doc);

    let metrics = env.path().join("sweep.prom");
    let run = ok(sweep(
        &env,
        &config,
        &policy,
        &["--execute", "--yes", "--format", "json", "--metrics-file"],
    )
    .arg(&metrics));
    let run: serde_json::Value = serde_json::from_str(&run).unwrap();
    assert_valid("sweep.schema.json", &run);
    assert_eq!(run["dry_run"], false, "{run:#}");
    assert_eq!(run["actions"][0]["state"], "done", "{run:#}");
    assert!(!manifest_exists(
        &registry,
        "team/app",
        &f.old_untrusted.digest
    ));
    for (repository, kept) in [
        ("team/app", &f.young_untrusted),
        ("team/app", &f.old_release),
        ("other/app", &f.elsewhere),
    ] {
        assert!(
            manifest_exists(&registry, repository, &kept.digest),
            "{} was deleted",
            kept.digest
        );
    }
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert!(
        text.contains(
            "cachewarden_sweep_actions_total{kind=\"delete-manifest\",state=\"done\"} 1\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("cachewarden_sweep_failures_total 0\n"),
        "{text}"
    );
    assert!(text.contains("cachewarden_sweep_dry_run 0\n"), "{text}");
    let leftovers: Vec<_> = std::fs::read_dir(env.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "temporary metrics files left: {leftovers:?}"
    );

    let report = ok(env
        .cmd_with(&config)
        .args(["incident", "report", "1", "--format", "json"]));
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert_eq!(report["summary"]["done"], 1, "{report:#}");
    let schema = |name: &str| -> serde_json::Value {
        let path = format!("{}/schema/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    };
    let mut report_schema = schema("report.schema.json");
    report_schema["properties"]["trace"] = schema("trace.schema.json");
    let validator = jsonschema::validator_for(&report_schema).expect("a valid schema");
    let errors: Vec<String> = validator
        .iter_errors(&report)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "the sweep's report does not match its schema: {errors:#?}"
    );

    let again = ok(&mut sweep(&env, &config, &policy, &["--format", "json"]));
    assert!(
        planned_deletes(&again).is_empty(),
        "a deleted cache was planned again: {again}"
    );
}

/// `keep_newest` keeps the newest N caches of each repository and purges the rest.
#[test]
fn keep_newest_keeps_the_newest() {
    let Some((registry, env)) = registry_env() else {
        return;
    };
    let host = registry.host();
    let mut pusher = Pusher::new(&registry);
    let caches: Vec<Pushed> = (0..5)
        .map(|i| pusher.cache_manifest("team/app", Some(&format!("c{i}")), &format!("cache {i}")))
        .collect();
    // Cache i was written i + 1 days ago: c0 and c1 are the newest.
    History::new()
        .runs(caches.iter().enumerate().map(|(i, c)| {
            export_run(
                "pr",
                "untrusted",
                i,
                i as i64 + 1,
                &[format!("{host}/team/app:c{i}@{}", c.digest)],
            )
        }))
        .import(&env);
    let config = config(&env, &host);
    let policy = env.write(
        "policy.toml",
        "[[rule]]\nselect = \"cache-refs\"\nkeep_newest = 2\naction = \"purge\"\n",
    );
    let run = output(
        &env,
        &mut sweep(&env, &config, &policy, &["--execute", "--yes"]),
    );
    assert!(run.starts_with("exit: 0\n"), "{run}");
    for (i, c) in caches.iter().enumerate() {
        assert_eq!(
            manifest_exists(&registry, "team/app", &c.digest),
            i < 2,
            "cache {i}"
        );
    }
    assert_eq!(
        registry.tags("team/app"),
        vec!["c0".to_owned(), "c1".to_owned()]
    );
}

/// Without `--execute` nothing is deleted or stored, whatever the plan says.
#[test]
fn dry_run_deletes_nothing() {
    let Some((registry, env)) = registry_env() else {
        return;
    };
    let f = fleet(&env, &registry);
    let config = config(&env, &registry.host());
    let policy = env.write(
        "policy.toml",
        "[[rule]]\nselect = \"cache-refs\"\naction = \"purge\"\n",
    );
    let metrics = env.path().join("dry.prom");
    let out = output(
        &env,
        sweep(&env, &config, &policy, &["--metrics-file"]).arg(&metrics),
    );
    assert!(out.starts_with("exit: 0\n"), "{out}");
    assert!(out.contains("dry run, nothing changed"), "{out}");
    assert!(
        out.contains("[out of scope: will not run]"),
        "other/app is outside the scope: {out}"
    );
    for (repository, p) in [
        ("team/app", &f.old_untrusted),
        ("team/app", &f.young_untrusted),
        ("team/app", &f.old_release),
        ("other/app", &f.elsewhere),
    ] {
        assert!(manifest_exists(&registry, repository, &p.digest));
    }
    let list = ok(env.cmd_with(&config).args(["incident", "list"]));
    assert_eq!(list, "no incidents\n");
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert!(
        text.contains(
            "cachewarden_sweep_actions_total{kind=\"delete-manifest\",state=\"planned\"} 3\n"
        ),
        "{text}"
    );
    assert!(text.contains("cachewarden_sweep_dry_run 1\n"), "{text}");
}

/// A pull-request run that records an export of a release cache's digest does not make it a
/// pull-request cache: the example policy keeps it and purges only the pull request's own.
#[test]
fn a_claimed_export_of_a_release_cache_does_not_get_it_swept() {
    let Some((registry, env)) = registry_env() else {
        return;
    };
    let host = registry.host();
    let mut pusher = Pusher::new(&registry);
    let release = pusher.cache_manifest("team/app", Some("main"), "release");
    let mut runs = vec![export_run(
        "web-release",
        "release",
        1,
        20,
        &[format!("{host}/team/app:main@{}", release.digest)],
    )];
    // Four pull-request caches, 19 to 16 days old: the policy keeps the newest three.
    let own: Vec<Pushed> = (0..4)
        .map(|i| pusher.cache_manifest("team/app", Some("pr-9"), &format!("pull request {i}")))
        .collect();
    for (i, p) in own.iter().enumerate() {
        let mut refs = vec![format!("{host}/team/app:pr-9@{}", p.digest)];
        if i == 0 {
            refs.push(format!("{host}/team/app:pr-9@{}", release.digest));
        }
        runs.push(export_run(
            "web-pr-9",
            "untrusted",
            i + 1,
            19 - i as i64,
            &refs,
        ));
    }
    History::new().runs(runs).import(&env);
    let config = config(&env, &host);
    let policy = env.path().join("policy.toml");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/examples/sweep-policy.toml"),
        &policy,
    )
    .unwrap();
    let json = ok(&mut sweep(&env, &config, &policy, &["--format", "json"]));
    assert_eq!(planned_deletes(&json), vec![own[0].digest.clone()]);
}

/// An image a release run built from is never swept, however a pull request's runs claim to
/// have exported it: with a start dated years back past `older_than`, and with newer claims of
/// their own that use up `keep_newest`.
#[test]
fn a_claimed_export_of_a_base_image_does_not_get_it_swept() {
    let Some((registry, env)) = registry_env() else {
        return;
    };
    let host = registry.host();
    let mut pusher = Pusher::new(&registry);
    let base = pusher.image("team/base", Some("3.12"), "base", false);
    let mut runs = vec![
        Run::new("web-release", 1)
            .trust("release")
            .project("web")
            .days_ago(1)
            .base_images([format!("{host}/team/base:3.12@{}", base.digest)]),
        export_run(
            "web-pr-9",
            "untrusted",
            1,
            2000,
            &[format!("{host}/team/base@{}", base.digest)],
        ),
    ];
    let own: Vec<Pushed> = (0..3)
        .map(|i| pusher.cache_manifest("team/base", None, &format!("pull request {i}")))
        .collect();
    for (i, p) in own.iter().enumerate() {
        runs.push(export_run(
            "web-pr-9",
            "untrusted",
            i + 2,
            20,
            &[format!("{host}/team/base@{}", p.digest)],
        ));
    }
    History::new().runs(runs).import(&env);
    let config = config(&env, &host);
    let policy = env.path().join("policy.toml");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/examples/sweep-policy.toml"),
        &policy,
    )
    .unwrap();
    let json = ok(&mut sweep(&env, &config, &policy, &["--format", "json"]));
    assert!(!planned_deletes(&json).contains(&base.digest), "{json}");
    ok(&mut sweep(&env, &config, &policy, &["--execute"]));
    assert!(manifest_exists(&registry, "team/base", &base.digest));
}

/// A sweep is refused (exit 5, nothing deleted) while another holds the lock.
#[test]
fn the_lock_holds() {
    let Some((registry, env)) = registry_env() else {
        return;
    };
    let f = fleet(&env, &registry);
    let config = config(&env, &registry.host());
    let policy = env.write("policy.toml", &POLICY.replace("HOST", &registry.host()));
    let mut lock_path = env.db().into_os_string();
    lock_path.push(".sweep.lock");
    let holder = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .unwrap();
    holder.lock().unwrap();
    let refused = output(
        &env,
        &mut sweep(&env, &config, &policy, &["--execute", "--yes"]),
    );
    assert!(refused.starts_with("exit: 5\n"), "{refused}");
    assert!(refused.contains("another sweep is running"), "{refused}");
    assert!(manifest_exists(
        &registry,
        "team/app",
        &f.old_untrusted.digest
    ));
    drop(holder);
    let run = output(
        &env,
        &mut sweep(&env, &config, &policy, &["--execute", "--yes"]),
    );
    assert!(run.starts_with("exit: 0\n"), "{run}");
    assert!(!manifest_exists(
        &registry,
        "team/app",
        &f.old_untrusted.digest
    ));
}

/// Mount and record rules plan exact prunes; a budget prune is partial, not a builder purge. A
/// mount under a namespace of its own is left alone (a prune by id would find the default
/// namespace's mount of that id).
#[test]
fn mount_and_record_rules_plan_exact_prunes() {
    let env = Env::new();
    let run = |pipeline: &str,
               run: usize,
               builder: &str,
               days: i64,
               mount: &str,
               record: &str,
               size: i64| {
        Run::new(pipeline, run)
            .trust("untrusted")
            .builder(builder)
            .days_ago(days)
            .mount(mount)
            .created_record(record, "regular", size)
    };
    History::new()
        .runs([
            run("pr", 1, "ci-1", 30, "/root/.cache/pip", "r-old", 100),
            run("pr", 2, "ci-1", 1, "/root/.npm", "r-new", 100),
            run("pr", 3, "ci-2", 30, "/root/.cache/pip", "r-other", 100),
            Run::new("team", 4)
                .trust("untrusted")
                .builder("ci-1")
                .days_ago(30)
                .namespaced_mount("team-a", "pip", "/root/.cache/pip"),
        ])
        .import(&env);
    let config = config(&env, "127.0.0.1:1");
    let policy = env.write(
        "policy.toml",
        "[[rule]]\nselect = \"mounts\"\nbuilder = \"ci-*\"\nolder_than = \"7d\"\naction = \"purge\"\n\n\
         [[rule]]\nselect = \"builder-records\"\nbuilder = \"ci-1\"\nmax_bytes = 150\naction = \"purge\"\n",
    );
    let json = ok(&mut sweep(&env, &config, &policy, &["--format", "json"]));
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    let actions = doc["actions"].as_array().unwrap();
    let mounts: Vec<(String, String, bool)> = actions
        .iter()
        .filter(|a| a["kind"] == "prune-mount")
        .map(|a| {
            (
                a["target"]["builder"].as_str().unwrap().to_owned(),
                a["target"]["mount_id"].as_str().unwrap().to_owned(),
                a["in_scope"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        mounts,
        vec![
            ("ci-1".into(), "/root/.cache/pip".into(), true),
            ("ci-2".into(), "/root/.cache/pip".into(), false)
        ],
        "{json}"
    );
    let prunes: Vec<&serde_json::Value> = actions
        .iter()
        .filter(|a| a["kind"] == "prune-builder")
        .collect();
    assert_eq!(prunes.len(), 1, "{json}");
    assert_eq!(
        prunes[0]["target"]["record_ids"],
        serde_json::json!(["r-old"]),
        "{json}"
    );
    assert_eq!(prunes[0]["target"]["partial"], true, "{json}");
    assert_eq!(prunes[0]["target"]["full"], false, "{json}");
}
