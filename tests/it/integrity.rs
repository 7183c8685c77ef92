//! History the recorded pipelines cannot rewrite: per-run trust under a ceiling, refused
//! re-records, and imports that are read strictly and change nothing when repeated.

use std::process::Command;

use crate::build::{ConfigBuilder, Pipeline};
use crate::common::{Env, ok, output};

/// `cmd` in GitHub Actions run `run` of workflow `ci` of `acme/web`, for `event`, with
/// `GITHUB_REF_PROTECTED` set to `protected`.
fn github_run<'c>(
    cmd: &'c mut Command,
    run: &str,
    event: &str,
    protected: &str,
) -> &'c mut Command {
    cmd.env("GITHUB_ACTIONS", "true")
        .env("GITHUB_REPOSITORY", "acme/web")
        .env("GITHUB_WORKFLOW", "ci")
        .env("GITHUB_RUN_ID", run)
        .env("GITHUB_RUN_ATTEMPT", "1")
        .env("GITHUB_EVENT_NAME", event)
        .env("GITHUB_REF_PROTECTED", protected)
}

fn record(env: &Env, args: &[&str]) -> String {
    output(env, env.cmd().arg("record").args(args))
}

/// The run lines of `export`, parsed.
fn runs(env: &Env) -> Vec<serde_json::Value> {
    ok(env.cmd().arg("export"))
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| l["type"] == "run")
        .collect()
}

const RELEASE: &[&str] = &[
    "--pipeline",
    "web-release",
    "--run",
    "101-1",
    "--builder",
    "ci-1",
    "--commit",
    "c0ffee",
    "--trust-level",
    "release",
    "--started-at",
    "2026-03-01T10:00:00Z",
    "--finished-at",
    "2026-03-01T10:04:00Z",
];

/// The issue's attack: recording `web-release/101-1` again with another builder, status and
/// start is refused with exit 2 naming those fields, and the store is left exactly as it was.
#[test]
fn a_recorded_run_cannot_be_rewritten() {
    let env = Env::new();
    ok(env.cmd().arg("record").args(RELEASE));
    let before = ok(env.cmd().arg("export"));
    let out = record(
        &env,
        &[
            "--pipeline",
            "web-release",
            "--run",
            "101-1",
            "--builder",
            "evil-builder",
            "--status",
            "failed",
            "--started-at",
            "2020-01-01T00:00:00Z",
            "--finished-at",
            "2026-03-01T10:04:00Z",
            "--mount",
            "/root/.cache/pip",
        ],
    );
    assert!(out.starts_with("exit: 2\n"), "{out}");
    for field in ["builder", "started_at", "status"] {
        assert!(out.contains(&format!("{field} (recorded")), "{out}");
    }
    assert!(!out.contains("updated"), "{out}");
    assert_eq!(ok(env.cmd().arg("export")), before);
}

/// Recording the same facts again is allowed and adds only the new events.
#[test]
fn the_same_run_again_only_adds_events() {
    let env = Env::new();
    ok(env.cmd().arg("record").args(RELEASE));
    let mut more = RELEASE.to_vec();
    more.extend(["--mount", "/root/.cache/pip"]);
    let out = record(&env, &more);
    assert!(
        out.starts_with("exit: 0\n")
            && out.contains("already recorded: run `web-release/101-1/Dockerfile` (2 new events"),
        "{out}"
    );
    let out = record(&env, &more);
    assert!(out.contains("(0 new events"), "{out}");
    assert_eq!(runs(&env).len(), 1);
}

/// The issue's attack `record --pipeline forks-pr --trust-level release`: the pipeline's
/// first level is its ceiling, so the run is recorded `untrusted` with a warning, and the
/// pipeline stays `untrusted`.
#[test]
fn a_run_cannot_raise_its_pipeline() {
    let env = Env::new();
    let fork = |run: &str, level: &str| {
        record(
            &env,
            &[
                "--pipeline",
                "forks-pr",
                "--run",
                run,
                "--builder",
                "ci-1",
                "--trust-level",
                level,
            ],
        )
    };
    assert!(fork("1", "untrusted").starts_with("exit: 0\n"));
    let out = fork("2", "release");
    assert!(out.starts_with("exit: 0\n"), "{out}");
    assert!(
        out.contains("asks for trust level `release`, above its pipeline's ceiling `untrusted`"),
        "{out}"
    );
    let levels: Vec<_> = runs(&env)
        .iter()
        .map(|r| r["trust_level"].clone())
        .collect();
    assert_eq!(levels, ["untrusted", "untrusted"]);
    let export = ok(env.cmd().arg("export"));
    assert!(
        export.contains(r#"{"type":"pipeline","v":1,"name":"forks-pr","trust_level":"untrusted"}"#),
        "{export}"
    );
}

/// One GitHub workflow on `push` and `pull_request`: the pull request's run is untrusted
/// whatever `--trust-level` says, the push to a protected branch runs at the configured
/// ceiling, and each run's level is exported on its line.
#[test]
fn pull_request_runs_are_untrusted() {
    let env = Env::new();
    let config = ConfigBuilder::new()
        .pipeline(
            Pipeline::named("acme/web/ci")
                .project("acme/web")
                .trust("release"),
        )
        .write_as(&env, "cw.toml");
    let github = |event: &str, protected: &str, run: &str| {
        let mut cmd = env.cmd_with(&config);
        github_run(&mut cmd, run, event, protected).args([
            "record",
            "--builder",
            "ci-1",
            "--trust-level",
            "release",
        ]);
        output(&env, &mut cmd)
    };
    let pr = github("pull_request", "false", "7");
    assert!(pr.starts_with("exit: 0\n"), "{pr}");
    assert!(
        pr.contains("GITHUB_EVENT_NAME=pull_request: the run is untrusted"),
        "{pr}"
    );
    let push = github("push", "true", "8");
    assert!(
        push.starts_with("exit: 0\n") && !push.contains("warning"),
        "{push}"
    );
    let unprotected = github("push", "false", "9");
    assert!(
        unprotected.contains("GITHUB_REF_PROTECTED=false"),
        "{unprotected}"
    );
    let levels: Vec<_> = runs(&env)
        .iter()
        .map(|r| (r["run"].clone(), r["trust_level"].clone()))
        .collect();
    assert_eq!(
        levels,
        [
            ("7-1", "untrusted"),
            ("8-1", "release"),
            ("9-1", "untrusted")
        ]
        .map(|(r, l)| (serde_json::json!(r), serde_json::json!(l)))
    );
}

/// A pull request's job that sets another CI's variables is still untrusted: GitHub's inside a
/// GitLab merge-request job, Buildkite's inside a Jenkins pull-request build. Under a config
/// that puts every pipeline at `release`, both runs are recorded at `untrusted`, with a warning
/// naming both systems.
#[test]
fn another_cis_variables_do_not_hide_a_pull_request() {
    let env = Env::new();
    let config = ConfigBuilder::new()
        .pipeline(Pipeline::pattern("**").trust("release"))
        .write_as(&env, "cw.toml");
    let mut gitlab_mr = env.cmd_with(&config);
    gitlab_mr
        .env("GITLAB_CI", "true")
        .env("CI_PROJECT_PATH", "acme/web")
        .env("CI_PIPELINE_ID", "104233")
        .env("CI_JOB_ID", "5521903")
        .env("CI_PIPELINE_SOURCE", "merge_request_event")
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_REPOSITORY", "acme/web")
        .env("GITHUB_WORKFLOW", "release")
        .env("GITHUB_RUN_ID", "3")
        .env("GITHUB_EVENT_NAME", "push")
        .env("GITHUB_REF_PROTECTED", "true")
        .args(["record", "--builder", "ci-1", "--trust-level", "release"]);
    let out = output(&env, &mut gitlab_mr);
    assert!(out.starts_with("exit: 0\n"), "{out}");
    assert!(
        out.contains("several CI systems are set (`github-actions`, `gitlab-ci`)"),
        "{out}"
    );
    assert!(
        out.contains("CI_PIPELINE_SOURCE=merge_request_event: the run is untrusted"),
        "{out}"
    );
    let mut jenkins_pr = env.cmd_with(&config);
    jenkins_pr
        .env("JENKINS_URL", "http://jenkins:8080/")
        .env("JOB_NAME", "platform/api/PR-12")
        .env("BUILD_NUMBER", "7")
        .env("CHANGE_ID", "12")
        .env("BUILDKITE", "true")
        .env("BUILDKITE_PIPELINE_SLUG", "api-release")
        .env("BUILDKITE_BUILD_NUMBER", "9")
        .env("BUILDKITE_PULL_REQUEST", "false")
        .args(["record", "--builder", "ci-1"]);
    let out = output(&env, &mut jenkins_pr);
    assert!(out.starts_with("exit: 0\n"), "{out}");
    assert!(
        out.contains("several CI systems are set (`buildkite`, `jenkins`)"),
        "{out}"
    );
    let levels: Vec<_> = runs(&env)
        .iter()
        .map(|r| (r["pipeline"].clone(), r["trust_level"].clone()))
        .collect();
    assert_eq!(
        levels,
        [
            ("acme/web/release", "untrusted"),
            ("api-release", "untrusted")
        ]
        .map(|(p, l)| (serde_json::json!(p), serde_json::json!(l)))
    );
}

/// An import cannot raise a pipeline the config caps either: its run lines are recorded at
/// the ceiling with a warning naming the line.
#[test]
fn imported_runs_are_capped_at_the_ceiling() {
    let env = Env::new();
    let config = ConfigBuilder::new()
        .pipeline(Pipeline::pattern("forks-*").trust("untrusted"))
        .write_as(&env, "cw.toml");
    let file = env.write(
        "in.jsonl",
        concat!(
            r#"{"v":1,"type":"pipeline","name":"forks-pr","trust_level":"release"}"#,
            "\n",
            r#"{"v":1,"type":"run","pipeline":"forks-pr","trust_level":"release","run":"1","started_at":"2026-01-01T00:00:00Z","finished_at":"2026-01-01T00:01:00Z"}"#,
            "\n"
        ),
    );
    let out = output(&env, env.cmd_with(&config).arg("import").arg(&file));
    assert!(out.starts_with("exit: 0\n"), "{out}");
    assert!(out.contains("line 2: run `forks-pr/1/`"), "{out}");
    assert_eq!(runs(&env)[0]["trust_level"], "untrusted");
}

/// An upload (`import --trust-level`) cannot date a run in the future, where its writes would
/// hide from traces and make every purge of its mounts need `--force`: a run starting or
/// finishing after the import began is refused with exit 2, naming the line and the time, and
/// nothing of the upload is written. A store's export (a plain import) keeps its own times.
#[test]
fn an_upload_cannot_date_a_run_in_the_future() {
    let env = Env::new();
    let run = |id: &str, started: &str, finished: &str| {
        format!(
            r#"{{"v":1,"type":"run","pipeline":"pr","run":"{id}","step":"s","builder":"b","started_at":"{started}","finished_at":"{finished}","mounts":[{{"id":"/root/.cache/pip"}}]}}"#
        )
    };
    let past = "2026-01-01T00:00:00Z";
    let future = "2999-01-01T00:00:00Z";
    // The store is there before the uploads, so that "nothing written" is seen in it.
    let earlier = env.write("earlier.jsonl", &format!("{}\n", run("0", past, past)));
    ok(env.cmd().arg("import").arg(&earlier));
    for (name, line) in [
        ("started.jsonl", run("2", future, future)),
        ("finished.jsonl", run("3", past, future)),
    ] {
        let upload = env.write(name, &format!("{}\n{line}\n", run("1", past, past)));
        let out = output(
            &env,
            env.cmd()
                .args(["import", "--trust-level", "untrusted"])
                .args(["--run", "pr/1", "--run", "pr/2", "--run", "pr/3"])
                .arg(&upload),
        );
        assert!(out.starts_with("exit: 2\n"), "{out}");
        assert!(out.contains(&format!("{name}` line 2: run `pr/")), "{out}");
        assert!(out.contains(&format!("`{future}`, in the future")), "{out}");
    }
    let stored: Vec<_> = runs(&env).iter().map(|r| r["run"].clone()).collect();
    assert_eq!(stored, [serde_json::json!("0")]);
    let export = env.write("export.jsonl", &format!("{}\n", run("4", past, future)));
    ok(env.cmd().arg("import").arg(&export));
    let stored: Vec<_> = runs(&env).iter().map(|r| r["run"].clone()).collect();
    assert_eq!(stored, [serde_json::json!("0"), serde_json::json!("4")]);
}

/// Re-importing an export changes nothing: a builder record with no known last use keeps
/// none (it used to become 0), and no event is added.
#[test]
fn re_import_is_a_no_op() {
    let env = Env::new();
    let file = env.write(
        "in.jsonl",
        concat!(
            r#"{"v":1,"type":"run","pipeline":"p","trust_level":"internal","run":"1","step":"s","builder":"b1","started_at":"2026-01-01T00:00:00Z","finished_at":"2026-01-01T00:01:00Z","mounts":[{"id":"/m"}],"records":{"created":[{"id":"x1","type":"regular","description":"RUN make"}]}}"#,
            "\n"
        ),
    );
    ok(env.cmd().arg("import").arg(&file));
    let first = ok(env.cmd().arg("export"));
    let again = env.write("again.jsonl", &first);
    let out = output(&env, env.cmd().arg("import").arg(&again));
    assert!(out.contains("(0 events)"), "{out}");
    let second = ok(env.cmd().arg("export"));
    assert_eq!(first, second);
    assert!(!second.contains("last_used_at"), "{second}");
}

/// Unknown fields inside a run line's nested objects are refused with exit 2, naming the
/// line and the field, and nothing is written.
#[test]
fn unknown_nested_fields_are_refused() {
    let env = Env::new();
    for (i, (nested, field)) in [
        (r#""mounts":[{"id":"/m","bogus":1}]"#, "bogus"),
        (r#""records":{"created":[{"id":"r","evil":1}]}"#, "evil"),
        (r#""exported":[{"backend":"gha","key":"k","zzz":1}]"#, "zzz"),
    ]
    .into_iter()
    .enumerate()
    {
        let file = env.write(
            &format!("bad{i}.jsonl"),
            &format!(
                "{}\n{{\"v\":1,\"type\":\"run\",\"pipeline\":\"p\",\"run\":\"1\",\"builder\":\"b\",\"started_at\":\"2026-01-01T00:00:00Z\",\"finished_at\":\"2026-01-01T00:00:00Z\",{nested}}}\n",
                r#"{"v":1,"type":"pipeline","name":"p"}"#
            ),
        );
        let out = output(&env, env.cmd().arg("import").arg(&file));
        assert!(out.starts_with("exit: 2\n"), "{out}");
        assert!(
            out.contains("line 2") && out.contains(&format!("unknown field `{field}`")),
            "{out}"
        );
    }
    assert!(!env.db().exists() || runs(&env).is_empty());
}

/// A pull request's `record` names its builder but says nothing of how to reach it: purges
/// and verification connect to the first endpoint recorded, which the pull request must not
/// choose. A trusted run's endpoint is kept.
#[test]
fn an_untrusted_run_sets_no_builder_endpoint() {
    let env = Env::new();
    let config = ConfigBuilder::new()
        .pipeline(Pipeline::named("acme/web/ci").trust("release"))
        .write_as(&env, "cw.toml");
    let record = |event: &str, builder: &str, run: &str| {
        let mut cmd = env.cmd_with(&config);
        github_run(&mut cmd, run, event, "true")
            .env("DOCKER_HOST", "tcp://127.0.0.1:23750")
            .args(["record", "--builder", builder, "--driver", "docker"])
            .args(["--trust-level", "release"]);
        ok(&mut cmd);
    };
    record("pull_request", "ci-1", "7");
    record("push", "ci-2", "8");
    let export = ok(env.cmd_with(&config).arg("export"));
    let builders: Vec<serde_json::Value> = export
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| l["type"] == "builder")
        .collect();
    let of = |name: &str| builders.iter().find(|b| b["name"] == name).cloned();
    let untrusted = of("ci-1").expect("the builder is named");
    assert_eq!(untrusted.get("endpoint"), None, "{export}");
    assert_eq!(untrusted.get("driver"), None, "{export}");
    let trusted = of("ci-2").expect("the builder is named");
    assert_eq!(trusted["endpoint"], "tcp://127.0.0.1:23750", "{export}");
}

/// BuildKit keys a cache mount by `<namespace>/<id>`: a pull request that sets
/// `BUILDKIT_CACHE_MOUNT_NS=//root/.cache` and `id=pip` writes the cache a release build
/// mounts at `/root/.cache/pip` by default. Both are recorded as one mount, and the trace from
/// the pull request reaches the release build by reading it.
#[test]
fn a_cache_mount_namespace_cannot_hide_a_shared_cache() {
    let env = Env::new();
    let attack = env.write(
        "Dockerfile.attack",
        "FROM busybox\nRUN --mount=type=cache,id=pip,target=/root/.cache/pip true\n",
    );
    let release = env.write(
        "Dockerfile",
        "FROM busybox\nRUN --mount=type=cache,target=/root/.cache/pip true\n",
    );
    let run = |pipeline: &str, dockerfile: &std::path::Path, extra: &[&str], at: &str| {
        let out = record(
            &env,
            &[
                &["--pipeline", pipeline, "--run", "1", "--builder", "ci-1"][..],
                &["--dockerfile", dockerfile.to_str().unwrap()],
                &["--started-at", at, "--finished-at", at],
                extra,
            ]
            .concat(),
        );
        assert!(out.starts_with("exit: 0\n"), "{out}");
    };
    run(
        "forks-pr",
        &attack,
        &["--build-arg", "BUILDKIT_CACHE_MOUNT_NS=//root/.cache"],
        "2026-03-01T10:00:00Z",
    );
    run("web-release", &release, &[], "2026-03-01T11:00:00Z");
    let mounts = ok(env.cmd().args(["ls", "mounts", "--format", "json"]));
    let mounts: serde_json::Value = serde_json::from_str(&mounts).unwrap();
    assert_eq!(mounts["items"].as_array().unwrap().len(), 1, "{mounts:#}");
    let trace = ok(env
        .cmd()
        .args(["trace", "--pipeline", "forks-pr", "--format", "json"]));
    let trace: serde_json::Value = serde_json::from_str(&trace).unwrap();
    let release = trace["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "run:web-release/1/Dockerfile")
        .unwrap_or_else(|| panic!("{trace:#}"));
    assert_eq!(release["via"]["kind"], "mount-read", "{trace:#}");
}

/// An untrusted run recorded after a purge, claiming to have finished before it, cannot have
/// the purge clean what it wrote: it is kept time-suspect, and a trace of its pipeline reaches
/// the release builds that read the mount after the purge. A trusted run recorded late is
/// believed, and an untrusted one dated after the purge is not doubted.
#[test]
fn an_untrusted_run_recorded_after_a_purge_cannot_hide_behind_it() {
    let env = Env::new();
    let mount = |pipeline: &str, run: &str, trust: &str, started: &str, finished: &str| {
        let out = record(
            &env,
            &[
                "--pipeline",
                pipeline,
                "--run",
                run,
                "--builder",
                "ci-1",
                "--trust-level",
                trust,
                "--mount",
                "pip",
                "--started-at",
                started,
                "--finished-at",
                finished,
            ],
        );
        assert!(out.starts_with("exit: 0\n"), "{out}");
    };
    mount("pr", "1", "untrusted", "130m", "120m");
    ok(env.cmd().args([
        "mark-purged",
        "--builder",
        "ci-1",
        "--mount",
        "pip",
        "--at",
        "90m",
    ]));
    mount("rel", "1", "release", "60m", "55m");
    mount("pr", "2", "untrusted", "110m", "100m");
    mount("rel", "2", "release", "5m", "4m");
    mount("late", "1", "release", "108m", "101m");
    mount("pr", "3", "untrusted", "3m", "2m");
    // An upload is held to the same rule.
    let before = (chrono::Utc::now() - chrono::Duration::minutes(95))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let upload = env.write(
        "upload.jsonl",
        &format!(
            r#"{{"v":1,"type":"run","pipeline":"pr","run":"4","step":"s","builder":"ci-1","started_at":"{before}","finished_at":"{before}","mounts":[{{"id":"pip"}}]}}"#
        ),
    );
    ok(env
        .cmd()
        .args(["import", "--trust-level", "untrusted", "--run", "pr/4"])
        .arg(&upload));
    // A purge earlier in the same import is one the store holds for a later line.
    let (purge_at, run_at) = [50, 60]
        .map(|minutes| {
            (chrono::Utc::now() - chrono::Duration::minutes(minutes))
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        })
        .into();
    let backfill = env.write(
        "backfill.jsonl",
        &format!(
            r#"{{"v":1,"type":"purge","builder":"ci-2","at":"{purge_at}"}}
{{"v":1,"type":"run","pipeline":"pr","run":"5","step":"s","builder":"ci-2","trust_level":"untrusted","started_at":"{run_at}","finished_at":"{run_at}"}}
"#
        ),
    );
    ok(env.cmd().args(["import", "--purges"]).arg(&backfill));
    // The receipts, read in the store.
    let sql = "SELECT r.run_key, c.identity, c.time_suspect FROM run_receipts c
               JOIN runs r ON r.id = c.run_id ORDER BY r.run_key";
    let suspect: Vec<(String, String, String)> = match &env.store {
        None => rusqlite::Connection::open(env.db())
            .unwrap()
            .prepare(sql)
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap(),
        Some(url) => {
            let out = std::process::Command::new("psql")
                .args([url.as_str(), "-X", "-A", "-t", "-F", "\t", "-c", sql])
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            String::from_utf8(out.stdout)
                .unwrap()
                .lines()
                .map(|l| {
                    let f: Vec<&str> = l.split('\t').collect();
                    (f[0].to_owned(), f[1].to_owned(), f[2].to_owned())
                })
                .collect()
        }
    };
    let keys: Vec<(&str, &str)> = suspect
        .iter()
        .map(|(run, identity, _)| (run.as_str(), identity.as_str()))
        .collect();
    assert_eq!(keys, [("2", "store"), ("4", "store"), ("5", "store")]);
    assert!(suspect[0].2.contains("before a purge at"), "{suspect:?}");
    let trace = ok(env
        .cmd()
        .args(["trace", "--pipeline", "pr", "--format", "json"]));
    let trace: serde_json::Value = serde_json::from_str(&trace).unwrap();
    let mut tainted: Vec<&str> = trace["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    tainted.sort();
    assert!(tainted.contains(&"run:rel/2/Dockerfile"), "{tainted:?}");
    assert!(tainted.contains(&"run:rel/1/Dockerfile"), "{tainted:?}");
}

/// An untrusted run recorded first with nothing written, then, after a purge, again with a
/// write to the purged mount dated before the purge: the repeat is doubted as a new run would
/// be, so the trace of its pipeline reaches the release build that read the mount after the
/// purge. A further repeat of the doubted run is taken as it is.
#[test]
fn an_untrusted_run_cannot_add_writes_behind_a_purge_by_repeating_itself() {
    let env = Env::new();
    let now = chrono::Utc::now();
    let ago = |minutes: i64| {
        (now - chrono::Duration::minutes(minutes))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let run = |pipeline: &str, run: &str, trust: &str, times: (i64, i64), mounts: &[&str]| {
        let (started, finished) = (ago(times.0), ago(times.1));
        let mut args = vec![
            "--pipeline",
            pipeline,
            "--run",
            run,
            "--builder",
            "ci-1",
            "--trust-level",
            trust,
            "--started-at",
            &started,
            "--finished-at",
            &finished,
        ];
        for m in mounts {
            args.extend(["--mount", m]);
        }
        let out = record(&env, &args);
        assert!(out.starts_with("exit: 0\n"), "{out}");
    };
    run("rel", "1", "release", (200, 190), &["pip", "go"]);
    run("pr", "1", "untrusted", (130, 120), &[]);
    ok(env.cmd().args([
        "mark-purged",
        "--builder",
        "ci-1",
        "--mount",
        "pip",
        "--at",
        &ago(90),
    ]));
    ok(env.cmd().args([
        "mark-purged",
        "--builder",
        "ci-1",
        "--mount",
        "go",
        "--at",
        &ago(90),
    ]));
    // It captured the builder's records, so only the mount can reach it.
    let rel2 = env.write(
        "rel2.jsonl",
        &format!(
            r#"{{"v":1,"type":"run","pipeline":"rel","run":"2","step":"s","builder":"ci-1","trust_level":"release","started_at":"{}","finished_at":"{}","mounts":[{{"id":"pip"}}],"records":{{"created":[],"reused":[]}}}}"#,
            ago(5),
            ago(4)
        ),
    );
    ok(env.cmd().arg("import").arg(&rel2));
    run("pr", "1", "untrusted", (130, 120), &["pip"]);
    run("pr", "1", "untrusted", (130, 120), &["pip", "go"]);
    let trace = ok(env
        .cmd()
        .args(["trace", "--pipeline", "pr", "--format", "json"]));
    let trace: serde_json::Value = serde_json::from_str(&trace).unwrap();
    let tainted: Vec<&str> = trace["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(tainted.contains(&"run:rel/2/s"), "{tainted:?}");
}

/// A pull request's run writes its own record evidence, and could leave out the record it
/// poisoned: the release build that reused it must still be in the pipeline's blast radius,
/// with its image. The evidence of a run above the lowest trust level is believed: the same
/// silence from it clears it of the record.
#[test]
fn an_untrusted_runs_record_evidence_cannot_clear_it() {
    let env = Env::new();
    let image = format!("r.io/web:1@sha256:{}", "e".repeat(64));
    let run = |pipeline: &str, run: &str, level: &str, (start, end): (&str, &str), extra: &str| {
        format!(
            r#"{{"v":1,"type":"run","pipeline":"{pipeline}","run":"{run}","step":"s","builder":"ci-1","trust_level":"{level}","started_at":"2026-03-01T{start}Z","finished_at":"2026-03-01T{end}Z"{extra}}}"#
        )
    };
    let silent = r#","records":{"created":[],"reused":[]}"#;
    let reused = format!(
        r#","records":{{"created":[],"reused":[{{"id":"rec-poison","type":"regular","description":"mount / from exec /bin/sh -c make"}}]}},"produced":["{image}"]"#
    );
    let history = [
        run("pr", "1", "untrusted", ("10:00:00", "10:05:00"), silent),
        run(
            "internal",
            "1",
            "internal",
            ("10:10:00", "10:15:00"),
            silent,
        ),
        run("web", "8", "release", ("11:00:00", "11:05:00"), &reused),
    ];
    let file = env.write("history.jsonl", &format!("{}\n", history.join("\n")));
    ok(env.cmd().arg("import").arg(&file));
    let traced = |pipeline: &str| {
        let out = ok(env
            .cmd()
            .args(["trace", "--pipeline", pipeline, "--format", "json"]));
        let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
        let names = |kind: &str| -> Vec<String> {
            doc[kind]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["name"].as_str().unwrap().to_owned())
                .collect()
        };
        (names("runs"), names("images"))
    };
    let (runs, images) = traced("pr");
    assert!(runs.contains(&"run:web/8/s".to_owned()), "{runs:?}");
    assert_eq!(images, [image.replace(":1@", "@")]);
    let (runs, images) = traced("internal");
    assert_eq!(runs, ["run:internal/1/s"]);
    assert!(images.is_empty(), "{images:?}");
    // Another pull request claiming, earlier, to have created the record makes it no less a
    // record no believed run created.
    let claim = run(
        "pr-b",
        "2",
        "untrusted",
        ("09:00:00", "09:01:00"),
        r#","records":{"created":[{"id":"rec-poison","type":"regular","description":"mount / from exec /bin/sh -c make"}],"reused":[]}"#,
    );
    let upload = env.write("claim.jsonl", &format!("{claim}\n"));
    ok(env
        .cmd()
        .args(["import", "--trust-level", "untrusted", "--run", "pr-b/2"])
        .arg(&upload));
    let (runs, _) = traced("pr");
    assert!(runs.contains(&"run:web/8/s".to_owned()), "{runs:?}");
    // An incident opened on the pull request's pipeline holds the image, and its plan prunes
    // what the run may have made on the builder and left out, not only what it named.
    ok(env.cmd().args(["incident", "open", "--pipeline", "pr"]));
    let out = output(&env, env.cmd().args(["check", &image]));
    assert!(out.starts_with("exit: 5\n"), "{out}");
    let show = ok(env.cmd().args(["incident", "show", "1"]));
    assert!(
        show.contains("and those made since 2026-03-01T09:55:00Z"),
        "{show}"
    );
}

/// An untrusted run's word about a record other runs share does not move what the store shows
/// of it: a use after the run finished, as a far-future last use that keeps a poisoned record
/// out of every age-based sweep, is taken at the run's finish, and the size of a record it only
/// reused stays the one recorded. Uploads and untrusted lines of a plain import alike.
#[test]
fn an_untrusted_run_cannot_move_a_shared_records_facts() {
    let env = Env::new();
    let run = |pipeline: &str, run: &str, level: &str, finish: &str, records: &str| {
        format!(
            r#"{{"v":1,"type":"run","pipeline":"{pipeline}","run":"{run}","step":"s","builder":"ci-1","trust_level":"{level}","started_at":"2025-01-01T00:00:00Z","finished_at":"{finish}","records":{records}}}"#
        )
    };
    let release = run(
        "web",
        "8",
        "release",
        "2025-01-01T01:01:00Z",
        r#"{"created":[{"id":"recA","type":"regular","description":"RUN make","last_used_at":1735693260000000,"size":100}],"reused":[]}"#,
    );
    let file = env.write("release.jsonl", &format!("{release}\n"));
    ok(env.cmd().arg("import").arg(&file));
    let lie = r#"{"created":[{"id":"recB","type":"regular","description":"RUN evil","created_at":253402300799000000,"last_used_at":253402300799000000,"size":0}],"reused":[{"id":"recA","type":"regular","description":"RUN make","last_used_at":253402300799000000,"size":7}]}"#;
    let upload = env.write(
        "upload.jsonl",
        &format!(
            "{}\n",
            run("pr", "9", "untrusted", "2025-01-01T02:00:00Z", lie)
        ),
    );
    ok(env
        .cmd()
        .args(["import", "--trust-level", "untrusted", "--run", "pr/9"])
        .arg(&upload));
    let plain = env.write(
        "plain.jsonl",
        &format!(
            "{}\n",
            run("pr", "10", "untrusted", "2025-01-01T03:00:00Z", lie)
        ),
    );
    ok(env.cmd().arg("import").arg(&plain));
    let export = ok(env.cmd().args(["export", "--run", "web/8"]));
    let line: serde_json::Value = export
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|l| l["type"] == "run")
        .unwrap();
    let rec = &line["records"]["created"][0];
    assert_eq!(rec["last_used_at"], 1735700400000000_i64, "{line}");
    assert_eq!(rec["size"], 100, "{line}");
    let export = ok(env.cmd().args(["export", "--run", "pr/9"]));
    assert!(
        !export.contains("253402300799") && export.contains(r#""created_at":1735696800000000"#),
        "{export}"
    );
    // Nor does a run that asks for more than its pipeline's lowest ceiling allows move its
    // last use.
    let config = env.write(
        "cw.toml",
        "[[pipeline]]\npattern = \"forks-*\"\ntrust_level = \"untrusted\"\n",
    );
    let created = r#"{"created":[],"reused":[{"id":"recA","type":"regular","description":"RUN make","last_used_at":253402300799000000,"size":7}]}"#;
    let capped = env.write(
        "capped.jsonl",
        &format!(
            "{}\n",
            run("forks-1", "9", "release", "2025-01-01T05:00:00Z", created)
        ),
    );
    ok(env.cmd_with(&config).arg("import").arg(&capped));
    let export = ok(env.cmd().args(["export", "--run", "web/8"]));
    assert!(
        !export.contains("253402300799")
            && export.contains(r#""last_used_at":1735707600000000,"size":100"#),
        "{export}"
    );
}

/// A pull request's run that first names a record says nothing believed of what it is: told
/// as a pulled base layer (which carries no taint), the record a release build later reuses
/// is still traced from it. The release build's own word for the record, or its silence, is
/// what counts; a record a believed run named first keeps the kind that run gave.
#[test]
fn an_untrusted_runs_word_for_what_a_record_is_is_not_believed() {
    let run = |pipeline: &str, run: &str, level: &str, (start, end): (&str, &str), extra: &str| {
        format!(
            r#"{{"v":1,"type":"run","pipeline":"{pipeline}","run":"{run}","step":"s","builder":"ci-1","trust_level":"{level}","started_at":"2026-03-01T{start}Z","finished_at":"2026-03-01T{end}Z"{extra}}}"#
        )
    };
    let record = |id: &str, description: &str| {
        format!(r#"{{"id":"{id}","type":"regular","description":"{description}"}}"#)
    };
    let evidence = |created: &[String], reused: &[String], image: Option<&str>| {
        let produced = image.map_or(String::new(), |i| format!(r#","produced":["{i}"]"#));
        format!(
            r#","records":{{"created":[{}],"reused":[{}]}}{produced}"#,
            created.join(","),
            reused.join(",")
        )
    };
    let pulled =
        "pulled from docker.io/library/busybox:latest@sha256:".to_owned() + &"1".repeat(64);
    let image = |n: &str| format!("r.io/web:{n}@sha256:{}", n.repeat(64));
    let history = [
        // The base layer a release build pulled first, and a pull request reused.
        run(
            "web",
            "1",
            "release",
            ("08:00:00", "08:05:00"),
            &evidence(&[record("rec-base", &pulled)], &[], None),
        ),
        // The pull request's poisoned layers, told as pulled ones.
        run(
            "pr",
            "1",
            "untrusted",
            ("10:00:00", "10:05:00"),
            &evidence(
                &[record("rec-poison", &pulled), record("rec-quiet", &pulled)],
                &[record("rec-base", &pulled)],
                None,
            ),
        ),
        // A release build that reuses the first, as the builder lists it.
        run(
            "web",
            "8",
            "release",
            ("11:00:00", "11:05:00"),
            &evidence(
                &[],
                &[record("rec-poison", "mount / from exec /bin/sh -c make")],
                Some(&image("a")),
            ),
        ),
        // One that names the second by id alone.
        run(
            "web",
            "9",
            "release",
            ("12:00:00", "12:05:00"),
            &evidence(
                &[],
                &[r#"{"id":"rec-quiet"}"#.to_owned()],
                Some(&image("b")),
            ),
        ),
        // One that reuses only the base layer a believed run pulled.
        run(
            "web",
            "10",
            "release",
            ("13:00:00", "13:05:00"),
            &evidence(&[], &[record("rec-base", &pulled)], Some(&image("c"))),
        ),
    ];
    // All in one import, and a line an import, where what the store holds is read back.
    let env = Env::new();
    let file = env.write("history.jsonl", &format!("{}\n", history.join("\n")));
    ok(env.cmd().arg("import").arg(&file));
    the_pull_request_reaches_what_reused_its_layers(&env, &image, &pulled);
    let env = Env::new();
    for (n, line) in history.iter().enumerate() {
        let file = env.write(&format!("line-{n}.jsonl"), &format!("{line}\n"));
        ok(env.cmd().arg("import").arg(&file));
    }
    the_pull_request_reaches_what_reused_its_layers(&env, &image, &pulled);
    // The store's export, imported into it again and into a new store, gives no believed run
    // the pull request's words.
    let export = env.write("export.jsonl", &ok(env.cmd().arg("export")));
    ok(env.cmd().arg("import").arg(&export));
    let moved = Env::new();
    ok(moved.cmd().arg("import").arg(&export));
    for env in [&env, &moved] {
        let runs = traced_runs(env, "pr");
        assert!(runs.contains(&"run:web/8/s".to_owned()), "{runs:?}");
        assert!(runs.contains(&"run:web/9/s".to_owned()), "{runs:?}");
        assert!(!runs.contains(&"run:web/10/s".to_owned()), "{runs:?}");
    }
}

/// The runs `trace --pipeline PIPELINE` reaches.
fn traced_runs(env: &Env, pipeline: &str) -> Vec<String> {
    let out = ok(env
        .cmd()
        .args(["trace", "--pipeline", pipeline, "--format", "json"]));
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    (doc["runs"].as_array().unwrap().iter())
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect()
}

/// The assertions of [`an_untrusted_runs_word_for_what_a_record_is_is_not_believed`].
fn the_pull_request_reaches_what_reused_its_layers(
    env: &Env,
    image: &dyn Fn(&str) -> String,
    pulled: &str,
) {
    let out = ok(env
        .cmd()
        .args(["trace", "--pipeline", "pr", "--format", "json"]));
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    let runs: Vec<&str> = (doc["runs"].as_array().unwrap().iter())
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(runs.contains(&"run:web/8/s"), "{runs:?}");
    assert!(runs.contains(&"run:web/9/s"), "{runs:?}");
    assert!(!runs.contains(&"run:web/10/s"), "{runs:?}");
    assert!(!runs.contains(&"run:web/1/s"), "{runs:?}");
    // Each record as the trace shows it: in the release build's words where it gave some.
    let described = |id: &str| {
        (doc["records"].as_array().unwrap().iter())
            .find(|r| r["record_id"] == id)
            .map(|r| r["description"].as_str().unwrap().to_owned())
    };
    assert_eq!(
        described("rec-poison").as_deref(),
        Some("mount / from exec /bin/sh -c make")
    );
    assert_eq!(described("rec-quiet").as_deref(), Some(pulled));
    assert_eq!(described("rec-base"), None);
    for n in ["a", "b"] {
        let out = output(env, env.cmd().args(["check", &image(n)]));
        assert!(out.starts_with("exit: 0\n"), "{out}");
    }
    ok(env.cmd().args(["incident", "open", "--pipeline", "pr"]));
    for n in ["a", "b"] {
        let out = output(env, env.cmd().args(["check", &image(n)]));
        assert!(out.starts_with("exit: 5\n"), "{n}: {out}");
    }
    let out = output(env, env.cmd().args(["check", &image("c")]));
    assert!(out.starts_with("exit: 0\n"), "{out}");
}
