//! `collect`: a builder's build history read through BuildKit's Control API, matched to the
//! runs hooks recorded, and builds no hook recorded stored where a trace reaches them.

use std::process::Command;

use insta::assert_snapshot;

use crate::common::{Env, ok, output};
use crate::harness::{self, Dockerd, Engine};

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|err| panic!("{err}: {text}"))
}

fn export_line(env: &Env, kind: &str, pipeline: &str) -> serde_json::Value {
    let export = ok(env.cmd().arg("export"));
    export
        .lines()
        .map(json)
        .find(|v| v["type"] == kind && (kind == "builder" || v["pipeline"] == pipeline))
        .unwrap_or_else(|| panic!("no {kind} {pipeline} in\n{export}"))
}

/// The facts of a run that collecting must never change.
fn run_facts(run: &serde_json::Value) -> Vec<serde_json::Value> {
    [
        "run",
        "step",
        "started_at",
        "finished_at",
        "status",
        "trust_level",
        "builder",
    ]
    .iter()
    .map(|k| run[k].clone())
    .collect()
}

/// Events of each source, from the store itself.
fn sources(env: &Env) -> Vec<(String, String, i64)> {
    let conn = rusqlite::Connection::open(env.db()).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT p.name, e.source, count(*) FROM events e JOIN runs r ON r.id = e.run_id
             JOIN pipelines p ON p.id = r.pipeline_id GROUP BY 1, 2 ORDER BY 1, 2",
        )
        .unwrap();
    stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// On Docker 26: a build `wrap` recorded is matched by its build ref and keeps its facts, a
/// build a hook recorded without its cache import gains it as a `build-history` event, and a
/// build no hook recorded becomes a run of `unrecorded@BUILDER` that traces of the builder
/// and of that pipeline reach. Collecting again adds nothing.
#[test]
fn history_matches_recorded_runs_and_stores_unrecorded_builds() {
    if !harness::require_docker26() {
        return;
    }
    let dockerd = Dockerd::start_engine(Engine::Docker26);
    let env = Env::new();
    dockerd.import_busybox("base:1");
    let ctx = env.write("app/Dockerfile", "FROM base:1\nARG X\nRUN echo $X > /x\n");
    let ctx = ctx.parent().unwrap().to_str().unwrap().to_owned();
    let docker_env = |cmd: &mut Command| {
        cmd.env("DOCKER_HOST", dockerd.host())
            .env("DOCKER_CONFIG", dockerd.config_dir())
            .env("DOCKER_BUILDKIT", "1")
            .env("BUILDKIT_PROGRESS", "plain");
    };
    // Recorded by wrap.
    let mut wrap = env.cmd();
    docker_env(&mut wrap);
    wrap.args(["wrap", "--pipeline", "app", "--run", "1", "--"])
        .arg(harness::DOCKER)
        .args(["buildx", "build", "--network=none", "--build-arg", "X=1"])
        .args(["-t", "app:1", &ctx]);
    ok(&mut wrap);
    // Recorded by a hook that was not told of the cache the build imported.
    let metadata = env.path().join("md.json");
    let md = metadata.to_str().unwrap();
    dockerd.run([
        "buildx",
        "build",
        "--network=none",
        "--build-arg",
        "X=2",
        "--cache-from",
        "type=registry,ref=127.0.0.1:9/app:cache",
        "--metadata-file",
        md,
        "-t",
        "lib:1",
        &ctx,
    ]);
    let mut record = env.cmd();
    docker_env(&mut record);
    ok(record.args([
        "record",
        "--pipeline",
        "lib",
        "--run",
        "1",
        "--metadata-file",
        md,
    ]));
    // Recorded by no hook.
    dockerd.run([
        "buildx",
        "build",
        "--network=none",
        "--build-arg",
        "X=3",
        "-t",
        "rogue:1",
        &ctx,
    ]);

    let builder = export_line(&env, "builder", "")["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let app_before = export_line(&env, "run", "app");
    assert!(
        app_before["build_ref"].is_string(),
        "wrap keeps the build ref: {app_before}"
    );
    let collected = json(&ok(env.cmd().args([
        "collect",
        "--builder",
        &builder,
        "--format",
        "json",
    ])));
    crate::schemas::assert_valid("collect.schema.json", &collected);
    let builds = collected["builds"].as_array().unwrap();
    assert_eq!(builds.len(), 3, "{collected:#}");
    let by_run = |prefix: &str| {
        builds
            .iter()
            .find(|b| b["run"].as_str().unwrap().starts_with(prefix))
            .unwrap_or_else(|| panic!("no build of {prefix}: {collected:#}"))
    };
    let app = by_run("app/1/");
    assert_eq!(app["matched_by"], "build-ref", "{collected:#}");
    assert_eq!(app["events"], 0, "wrap recorded all of it: {app:#}");
    let lib = by_run("lib/1/");
    assert_eq!(lib["matched_by"], "build-ref", "{collected:#}");
    assert_eq!(lib["cache_imports"][0], "127.0.0.1:9/app:cache", "{lib:#}");
    assert_eq!(
        lib["events"], 2,
        "the import and the image are appended: {lib:#}"
    );
    let unrecorded = format!("unrecorded@{builder}");
    let rogue = builds
        .iter()
        .find(|b| b["matched_by"] == "unrecorded")
        .unwrap_or_else(|| panic!("no unrecorded build: {collected:#}"));
    assert_eq!(rogue["build_args"]["X"], "3", "{rogue:#}");
    assert!(rogue["total_steps"].as_u64().unwrap() > 0, "{rogue:#}");
    assert_eq!(
        run_facts(&export_line(&env, "run", "app")),
        run_facts(&app_before),
        "the recorded run is not rewritten"
    );
    let stored = sources(&env);
    assert!(
        stored.contains(&("lib".into(), "build-history".into(), 2)),
        "{stored:?}"
    );
    assert!(
        stored
            .iter()
            .any(|(p, s, _)| *p == unrecorded && s == "build-history"),
        "{stored:?}"
    );
    let unrecorded_run = export_line(&env, "run", &unrecorded);
    assert_eq!(
        unrecorded_run["trust_level"], "untrusted",
        "{unrecorded_run}"
    );

    // Both traces reach the unrecorded build.
    for args in [
        ["--builder", builder.as_str()],
        ["--pipeline", unrecorded.as_str()],
    ] {
        let trace = json(&ok(env
            .cmd()
            .arg("trace")
            .args(args)
            .args(["--format", "json"])));
        assert!(
            trace["runs"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["pipeline"] == unrecorded.as_str()),
            "{args:?}: {trace:#}"
        );
    }
    // The text lists it.
    let text = ok(env.cmd().args(["collect", "--builder", &builder]));
    assert!(text.contains("1 build no hook recorded"), "{text}");

    let before = ok(env.cmd().arg("export"));
    let again = json(&ok(env.cmd().args([
        "collect",
        "--builder",
        &builder,
        "--format",
        "json",
    ])));
    assert!(
        again["builds"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["new"] == false && b["events"] == 0),
        "{again:#}"
    );
    assert_eq!(
        ok(env.cmd().arg("export")),
        before,
        "a second collect adds nothing"
    );
}

/// Docker 20.10's BuildKit keeps no build history: `collect` says so in one line, exit 4.
#[test]
fn a_builder_without_history_is_named_in_one_line() {
    if !harness::require_dockerd() {
        return;
    }
    let dockerd = Dockerd::start_engine(Engine::Docker20);
    let env = Env::new();
    let mut record = env.cmd();
    record.env("DOCKER_HOST", dockerd.host());
    ok(record.args(["record", "--pipeline", "p", "--run", "1"]));
    let builder = export_line(&env, "builder", "")["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = output(&env, env.cmd().args(["collect", "--builder", &builder]));
    assert!(out.starts_with("exit: 4\n"), "{out}");
    assert!(out.contains("keeps no build history"), "{out}");
    let stderr = out.split("--- stderr\n").nth(1).unwrap();
    assert_eq!(stderr.trim_end().lines().count(), 1, "{out}");
}

/// `collect --help` says what is matched, what is stored and how often to run it.
#[test]
fn collect_help() {
    let env = Env::new();
    assert_snapshot!(output(&env, env.cmd().args(["collect", "--help"])));
}

/// A builder with no known endpoint is named in one line, and no store is left behind.
#[test]
fn an_unknown_builder_is_named_and_nothing_is_written() {
    let env = Env::new();
    let out = output(
        &env,
        env.cmd().args(["collect", "--builder", "nowhere\u{1b}[2J"]),
    );
    assert!(out.starts_with("exit: 4\n"), "{out}");
    assert!(
        out.contains("no endpoint known for builder `nowhere\\x1b[2J`"),
        "{out}"
    );
    assert!(!env.db().exists(), "{out}");
}
