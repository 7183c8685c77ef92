//! `ls`, the time forms every time flag takes, and suggestions for names the store lacks.

use std::process::Output;

use crate::build::Run;
use crate::common::{Env, ok};
use crate::schemas::assert_valid;

/// A store holding the example incident history.
fn history() -> Env {
    let env = Env::new();
    let history = format!(
        "{}/examples/incident-history.jsonl",
        env!("CARGO_MANIFEST_DIR")
    );
    ok(env.cmd().args(["import", &history]));
    env
}

fn run(env: &Env, args: &[&str]) -> Output {
    env.cmd().args(args).output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The first column of each table row, header left out.
fn first_column(text: &str) -> Vec<String> {
    text.lines()
        .skip(1)
        .map(|l| l.split_whitespace().next().unwrap_or("").to_owned())
        .collect()
}

/// Each list names things the way `trace` takes them, newest first.
#[test]
fn lists_name_things_as_trace_takes_them_newest_first() {
    let env = history();
    let runs = ok(env.cmd().args(["ls", "runs"]));
    assert_eq!(
        first_column(&runs),
        [
            "docs/9-1/Dockerfile",
            "api-release/55-1/Dockerfile",
            "web-release/101-1/Dockerfile",
            "forks-pr/7-1/Dockerfile",
            "web-release/100-1/Dockerfile",
        ],
        "{runs}"
    );
    for name in first_column(&runs) {
        ok(env.cmd().args(["trace", "--run", &name]));
    }
    let pipelines = ok(env.cmd().args(["ls", "pipelines"]));
    assert!(
        pipelines
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == [
                    "forks-pr",
                    "acme/web",
                    "untrusted",
                    "1",
                    "2026-11-03T14:00:00Z",
                    "2026-11-03T14:00:00Z"
                ]),
        "{pipelines}"
    );
    let mounts = ok(env.cmd().args(["ls", "mounts"]));
    for name in first_column(&mounts) {
        ok(env.cmd().args(["trace", "--mount", &name]));
    }
    let builders = ok(env.cmd().args(["ls", "builders"]));
    assert_eq!(first_column(&builders), ["ci-1", "ci-2"], "{builders}");
}

/// Every list's JSON matches `schema/ls.schema.json`, incidents with their action counts.
#[test]
fn every_list_matches_its_schema() {
    let env = history();
    ok(env
        .cmd()
        .args(["incident", "open", "--pipeline", "forks-pr"]));
    for what in ["pipelines", "runs", "builders", "mounts", "incidents"] {
        let doc: serde_json::Value =
            serde_json::from_str(&ok(env.cmd().args(["ls", what, "--format", "json"]))).unwrap();
        assert_valid("ls.schema.json", &doc);
        assert_eq!(doc["list"], what);
        assert!(
            !doc["items"].as_array().unwrap().is_empty(),
            "{what}: {doc:#}"
        );
    }
    let doc: serde_json::Value =
        serde_json::from_str(&ok(env.cmd().args(["ls", "incidents", "--format", "json"]))).unwrap();
    assert_eq!(doc["items"][0]["status"], "open");
    assert!(doc["items"][0]["actions"]["pending"].as_i64().unwrap() > 0);
}

/// `--pipeline`, `--builder` and a date window narrow the lists; a date `--until` holds its
/// whole day.
#[test]
fn filters_narrow_every_list() {
    let env = history();
    let runs = ok(env.cmd().args(["ls", "runs", "--pipeline", "web-release"]));
    assert_eq!(
        first_column(&runs),
        [
            "web-release/101-1/Dockerfile",
            "web-release/100-1/Dockerfile"
        ]
    );
    let runs = ok(env.cmd().args(["ls", "runs", "--builder", "ci-2"]));
    assert_eq!(first_column(&runs), ["api-release/55-1/Dockerfile"]);
    let runs = ok(env.cmd().args([
        "ls",
        "runs",
        "--since",
        "2026-11-03",
        "--until",
        "2026-11-04",
    ]));
    assert_eq!(
        first_column(&runs),
        ["web-release/101-1/Dockerfile", "forks-pr/7-1/Dockerfile"],
        "{runs}"
    );
    let pipelines = ok(env.cmd().args(["ls", "pipelines", "--builder", "ci-2"]));
    assert_eq!(first_column(&pipelines), ["api-release"]);
    let builders = ok(env.cmd().args(["ls", "builders", "--pipeline", "forks-pr"]));
    assert_eq!(first_column(&builders), ["ci-1"]);
    let mounts = ok(env.cmd().args(["ls", "mounts", "--pipeline", "forks-pr"]));
    assert_eq!(first_column(&mounts), ["ci-1:/root/.cache/pip"], "{mounts}");
    let out = run(&env, &["ls", "incidents", "--pipeline", "forks-pr"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--pipeline does not filter incidents"));
}

/// A mount in a namespace is listed as `trace` names it, `BUILDER:NAMESPACE/ID`, which is also
/// how a mount without one whose id is that text is named (`trace --mount` given the name seeds
/// both); the JSON tells them apart by the namespace.
#[test]
fn mounts_in_a_namespace_are_named_as_trace_names_them() {
    let env = Env::new();
    crate::build::History::new()
        .run(
            Run::new("a", 1)
                .builder("ci-1")
                .namespaced_mount("evil", "gomod", "/go/pkg/mod"),
        )
        .run(Run::new("b", 1).builder("ci-1").mount("evil/gomod"))
        .import(&env);
    let mounts = ok(env.cmd().args(["ls", "mounts"]));
    let mut names = first_column(&mounts);
    names.sort();
    assert_eq!(names, ["ci-1:evil/gomod", "ci-1:evil/gomod"], "{mounts}");
    let json = ok(env.cmd().args(["ls", "mounts", "--format", "json"]));
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    let mut namespaces: Vec<&str> = json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["namespace"].as_str().unwrap())
        .collect();
    namespaces.sort();
    assert_eq!(namespaces, ["", "evil"], "{json:#}");
}

/// `--limit` keeps the newest rows and says, on stderr and in JSON, that it cut.
#[test]
fn limit_says_when_it_cut() {
    let env = history();
    let out = run(&env, &["ls", "runs", "--limit", "2"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    assert_eq!(
        first_column(&text),
        ["docs/9-1/Dockerfile", "api-release/55-1/Dockerfile"]
    );
    assert!(
        stderr(&out).contains("showing the newest 2 runs; more match"),
        "{}",
        stderr(&out)
    );
    let doc: serde_json::Value = serde_json::from_str(&ok(env
        .cmd()
        .args(["ls", "runs", "--limit", "5", "--format", "json"])))
    .unwrap();
    assert_eq!(doc["truncated"], false);
    assert_eq!(doc["items"].as_array().unwrap().len(), 5);
    let out = run(&env, &["ls", "runs", "--limit", "5"]);
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
    // `--limit 0` lists everything, and the largest limit is no limit, on every kind of list.
    for limit in ["0", "9223372036854775807", "18446744073709551615"] {
        for kind in ["runs", "pipelines", "builders", "mounts", "incidents"] {
            let doc: serde_json::Value = serde_json::from_str(&ok(env
                .cmd()
                .args(["ls", kind, "--limit", limit, "--format", "json"])))
            .unwrap();
            assert_eq!(doc["truncated"], false, "{kind} --limit {limit}");
            if kind == "runs" {
                assert_eq!(doc["items"].as_array().unwrap().len(), 5, "{doc:#}");
            }
        }
    }
}

/// A recorded name cannot write terminal escapes or forge a row through `ls`.
#[test]
fn hostile_names_are_escaped() {
    let env = Env::new();
    ok(env.cmd().args([
        "record",
        "--pipeline",
        "evil\u{1b}[2J\nforks-pr",
        "--run",
        "1",
        "--builder",
        "ci\u{202e}1",
        "--finished-at",
        "2026-11-01T00:00:00Z",
    ]));
    let pipelines = ok(env.cmd().args(["ls", "pipelines"]));
    assert_eq!(pipelines.lines().count(), 2, "{pipelines}");
    assert!(pipelines.contains("evil\\x1b[2J\\nforks-pr"), "{pipelines}");
    let runs = ok(env.cmd().args(["ls", "runs"]));
    assert!(
        !runs.contains('\u{1b}') && !runs.contains('\u{202e}'),
        "{runs}"
    );
    assert!(runs.contains("ci\\u{202e}1"), "{runs}");
}

/// Names that differ only by a character drawn as nothing (a zero-width space, a tag
/// character, a bidi mark) are shown with it escaped, in lists and in suggestions, so they
/// never look the same.
#[test]
fn invisible_characters_tell_names_apart() {
    let env = Env::new();
    for (pipeline, builder) in [
        ("web-release", "ci-1"),
        ("web-rel\u{200b}ease", "ci-1\u{e0041}\u{200e}"),
    ] {
        ok(env.cmd().args([
            "record",
            "--pipeline",
            pipeline,
            "--run",
            "1",
            "--builder",
            builder,
            "--finished-at",
            "2026-11-01T00:00:00Z",
        ]));
    }
    let pipelines = ok(env.cmd().args(["ls", "pipelines"]));
    assert_eq!(
        first_column(&pipelines),
        ["web-release", "web-rel\\u{200b}ease"],
        "{pipelines}"
    );
    let runs = ok(env.cmd().args(["ls", "runs"]));
    assert!(runs.contains("ci-1\\u{e0041}\\u{200e}"), "{runs}");
    let out = run(&env, &["ls", "runs", "--pipeline", "web-rel"]);
    let hint = stderr(&out);
    assert!(hint.contains("did you mean"), "{hint}");
    for text in [&pipelines, &runs, &hint] {
        assert!(
            !text
                .chars()
                .any(|c| matches!(c, '\u{200b}' | '\u{200e}' | '\u{e0041}')),
            "{text:?}"
        );
        assert!(text.contains("web-rel\\u{200b}ease"), "{text}");
    }
}

/// `ls` is a reader: a missing store is not created.
#[test]
fn ls_never_creates_a_store() {
    let env = Env::new();
    let out = run(&env, &["ls", "runs"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(!env.db().exists());
}

/// An unknown seed or filter is answered with the closest recorded names.
#[test]
fn unknown_names_get_suggestions() {
    let env = history();
    for (args, expected) in [
        (
            &["trace", "--pipeline", "forks"][..],
            "no pipeline `forks` in the store; did you mean `forks-pr`?",
        ),
        (
            &["trace", "--builder", "ci-3"][..],
            "no builder `ci-3` in the store; did you mean `ci-1` or `ci-2`?",
        ),
        (
            &["trace", "--mount", "ci-1:/root/.cache/pipp"][..],
            "did you mean `/root/.cache/pip`",
        ),
        (
            &["trace", "--run", "forks-pr/7-2/Dockerfile"][..],
            "did you mean `forks-pr/7-1/Dockerfile`?",
        ),
        (
            &["trace", "--cache-ref", "registry.acme.dev/web/cache:mian"][..],
            "did you mean `registry.acme.dev/web/cache:main`?",
        ),
        (
            &["ls", "runs", "--pipeline", "web-relase"][..],
            "no pipeline `web-relase` in the store; did you mean `web-release`?",
        ),
        (
            &["ls", "mounts", "--builder", "ci"][..],
            "did you mean `ci-1` or `ci-2`?",
        ),
    ] {
        let out = run(&env, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(expected),
            "{args:?}: {}",
            stderr(&out)
        );
        assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    }
    let out = run(&env, &["trace", "--pipeline", "zzzzzz"]);
    assert!(!stderr(&out).contains("did you mean"), "{}", stderr(&out));
}

/// Dates and durations are accepted by every time flag; a bad time shows each form on one line.
#[test]
fn time_flags_take_dates_and_durations() {
    let env = history();
    let dated = ok(env.cmd().args([
        "trace",
        "--pipeline",
        "web-release",
        "--since",
        "2026-11-04",
        "--format",
        "json",
    ]));
    let exact = ok(env.cmd().args([
        "trace",
        "--pipeline",
        "web-release",
        "--since",
        "2026-11-04T00:00:00Z",
        "--format",
        "json",
    ]));
    assert_eq!(dated, exact);
    ok(env
        .cmd()
        .args(["trace", "--pipeline", "web-release", "--since", "52w"]));
    for args in [
        &["trace", "--pipeline", "forks-pr", "--since", "yesterday"][..],
        &["ls", "runs", "--until", "3 o'clock"][..],
        &[
            "incident",
            "open",
            "--pipeline",
            "forks-pr",
            "--since",
            "2026-11",
        ][..],
    ] {
        let out = run(&env, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{err}");
        for example in ["`2026-11-01T09:30:00Z`", "`2026-11-01`", "`3d`"] {
            assert!(err.contains(example), "{err}");
        }
    }
    ok(env.cmd().args([
        "record",
        "--pipeline",
        "docs",
        "--run",
        "10-1",
        "--builder",
        "ci-1",
        "--started-at",
        "10m",
        "--finished-at",
        "5m",
    ]));
    let out = run(
        &env,
        &[
            "record",
            "--pipeline",
            "docs",
            "--run",
            "11-1",
            "--finished-at",
            "2026-11-30",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    ok(env
        .cmd()
        .args(["mark-purged", "--builder", "ci-1", "--at", "1m"]));
    let out = run(
        &env,
        &["mark-purged", "--builder", "ci-1", "--at", "2026-11-30"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("time of day"), "{}", stderr(&out));
}

/// An incident opened with `--since 3d` stores the absolute time it meant, so a later
/// `verify` traces the same window and not one that slid with the clock.
#[test]
fn incident_open_stores_absolute_times() {
    let env = history();
    let refused = run(
        &env,
        &[
            "incident",
            "open",
            "--pipeline",
            "forks-pr",
            "--since",
            "3d",
            "--until",
            "2w",
        ],
    );
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    let conn = rusqlite::Connection::open(env.db()).unwrap();
    let stored: i64 = conn
        .query_row("SELECT count(*) FROM incidents", [], |r| r.get(0))
        .unwrap();
    assert_eq!(stored, 0, "a refused window stores nothing");
    let before = chrono::Utc::now() - chrono::Duration::days(3);
    ok(env.cmd().args([
        "incident",
        "open",
        "--pipeline",
        "forks-pr",
        "--since",
        "3d",
    ]));
    let after = chrono::Utc::now() - chrono::Duration::days(3);
    let seeds: String = conn
        .query_row("SELECT seeds FROM incidents WHERE id = 1", [], |r| r.get(0))
        .unwrap();
    let seeds: serde_json::Value = serde_json::from_str(&seeds).unwrap();
    let since = seeds["seeds"]["since"].as_str().unwrap();
    let since = chrono::DateTime::parse_from_rfc3339(since)
        .unwrap_or_else(|e| panic!("`{since}` is not absolute: {e}"));
    assert!(before <= since && since <= after, "{since}");
}
