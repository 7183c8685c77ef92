//! The command line: help, record, import, export and bad input.

use insta::assert_snapshot;

use crate::common::{Env, digest, ok, output};

/// The top-level help lists every command and the exit codes.
#[test]
fn help() {
    let env = Env::new();
    assert_snapshot!(output(&env, env.cmd().arg("--help")));
}

/// `record --help` documents every hook flag.
#[test]
fn record_help() {
    let env = Env::new();
    assert_snapshot!(output(&env, env.cmd().args(["record", "--help"])));
}

/// `wrap --help` lists only what wrap reads, and the global options under their own heading.
#[test]
fn wrap_help() {
    let env = Env::new();
    assert_snapshot!(output(&env, env.cmd().args(["wrap", "--help"])));
}

/// `serve --help` documents the listen address and TLS files.
#[test]
fn serve_help() {
    let env = Env::new();
    assert_snapshot!(output(&env, env.cmd().args(["serve", "--help"])));
}

/// `bench generate --help` names the fleet shapes the benchmarks generate.
#[test]
fn bench_generate_help() {
    let env = Env::new();
    assert_snapshot!(output(
        &env,
        env.cmd().args(["bench", "generate", "--help"])
    ));
}

/// `flush --help` documents where the spool is and which collector it goes to.
#[test]
fn flush_help() {
    let env = Env::new();
    assert_snapshot!(output(&env, env.cmd().args(["flush", "--help"])));
}

/// `ls --help` documents what it lists, its filters and the time forms.
#[test]
fn ls_help() {
    let env = Env::new();
    assert_snapshot!(output(&env, env.cmd().args(["ls", "--help"])));
}

/// `wrap` refuses `record`'s flags for what it measures itself, instead of ignoring them: a
/// `--status failed` that was silently dropped recorded a failed build as succeeded.
#[test]
fn wrap_refuses_record_only_flags() {
    let env = Env::new();
    for flag in [
        &["--status", "failed"][..],
        &["--started-at", "2026-11-01T00:00:00Z"][..],
        &["--finished-at", "2026-11-01T00:00:00Z"][..],
        &["--metadata-file", "m.json"][..],
        &["--resolve"][..],
        &["--format", "json"][..],
    ] {
        let out = env
            .cmd()
            .arg("wrap")
            .args(flag)
            .args(["--", "true"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag:?}: {stderr}");
        assert!(
            stderr.contains(&format!("unexpected argument '{}'", flag[0])),
            "{flag:?}: {stderr}"
        );
    }
    assert!(!env.db().exists());
}

/// A recorded run comes back out of export with every input kind.
#[test]
fn record_then_export() {
    let env = Env::new();
    let dockerfile = env.write(
        "Dockerfile",
        "ARG BASE=127.0.0.1:5000/base:1\nFROM $BASE AS build\nRUN --mount=type=cache,target=/root/.cache/pip \\\n    --mount=type=cache,id=wheels,target=/w,sharing=locked,readonly pip install .\nFROM build\n",
    );
    let out = output(
        &env,
        env.cmd().args([
            "record",
            "--pipeline",
            "web",
            "--run",
            "41-1",
            "--project",
            "acme/web",
            "--trust-level",
            "internal",
            "--builder",
            "ci-1",
            "--started-at",
            "2026-03-01T10:00:00Z",
            "--finished-at",
            "2026-03-01T10:04:00Z",
            "--cache-from",
            &format!("127.0.0.1:5000/web:cache@{}", digest('a')),
            "--cache-to",
            "type=registry,ref=127.0.0.1:5000/web:cache,mode=max",
            "--cache-to",
            "type=gha,scope=web-main",
            "--image",
            &format!("127.0.0.1:5000/web:41@{}", digest('b')),
            "--dockerfile",
            dockerfile.to_str().unwrap(),
            "--format",
            "json",
        ]),
    );
    assert_snapshot!(out);
    assert_snapshot!("record_then_export_store", ok(env.cmd().arg("export")));
}

/// Recording the same run twice stores it once.
#[test]
fn record_is_idempotent() {
    let env = Env::new();
    let args = [
        "record",
        "--pipeline",
        "web",
        "--run",
        "1",
        "--builder",
        "b",
        "--mount",
        "/root/.cache/pip",
        "--finished-at",
        "2026-03-01T10:00:00Z",
    ];
    ok(env.cmd().args(args));
    ok(env.cmd().args(args));
    let export = ok(env.cmd().arg("export"));
    assert_eq!(
        export
            .lines()
            .filter(|l| l.contains("\"type\":\"run\""))
            .count(),
        1,
        "{export}"
    );
}

/// Records run `run` of pipeline `p` on builder `b`, with one cache mount.
fn record_with_mount(env: &Env, run: &str, mount: &str) {
    ok(env.cmd().args([
        "record",
        "--pipeline",
        "p",
        "--run",
        run,
        "--builder",
        "b",
        "--mount",
        mount,
    ]));
}

/// The LLB form of a mount id and the Dockerfile form are one mount.
#[test]
fn llb_mount_ids_are_normalized() {
    let env = Env::new();
    for (run, id) in [("1", "//root/.cache/pip"), ("2", "/root/.cache/pip")] {
        record_with_mount(&env, run, id);
    }
    let export = ok(env.cmd().arg("export"));
    assert_eq!(
        export.matches("\"id\":\"/root/.cache/pip\"").count(),
        2,
        "{export}"
    );
    let conn = rusqlite::Connection::open(env.db()).unwrap();
    let mounts: i64 = conn
        .query_row("SELECT count(*) FROM mounts", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mounts, 1);
}

/// A builder's driver and endpoint are the first ones recorded: a later line (a job's upload)
/// fills in what is missing, never changes them.
#[test]
fn a_builder_keeps_the_first_endpoint_recorded() {
    let env = Env::new();
    let line =
        |name: &str, rest: &str| format!(r#"{{"v":1,"type":"builder","name":"{name}"{rest}}}"#);
    let first = [
        line(
            "b1",
            r#","driver":"docker","endpoint":"unix:///run/ci-1.sock""#,
        ),
        line("b2", ""),
    ];
    let file = env.write("first.jsonl", &format!("{}\n", first.join("\n")));
    ok(env.cmd().arg("import").arg(&file));
    let later = [
        line(
            "b1",
            r#","driver":"buildkitd","endpoint":"tcp://127.0.0.1:23751""#,
        ),
        line(
            "b2",
            r#","driver":"docker","endpoint":"unix:///run/ci-2.sock""#,
        ),
    ];
    let file = env.write("later.jsonl", &format!("{}\n", later.join("\n")));
    ok(env.cmd().arg("import").arg(&file));
    let export = ok(env.cmd().arg("export"));
    let builders: Vec<serde_json::Value> = export
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| l["type"] == "builder")
        .collect();
    assert_eq!(builders.len(), 2, "{export}");
    assert_eq!(builders[0]["driver"], "docker");
    assert_eq!(builders[0]["endpoint"], "unix:///run/ci-1.sock");
    assert_eq!(builders[1]["driver"], "docker");
    assert_eq!(builders[1]["endpoint"], "unix:///run/ci-2.sock");

    // An upload imported with --trust-level says nothing of how to reach a builder, even one
    // with no endpoint yet.
    let run = r#"{"v":1,"type":"run","pipeline":"pr","run":"1","started_at":"2026-01-01T00:00:00Z","finished_at":"2026-01-01T00:01:00Z","builder":"b4"}"#;
    let reach = r#","driver":"buildkitd","endpoint":"tcp://127.0.0.1:23751""#;
    let upload = [line("b3", reach), line("b4", reach), run.to_owned()];
    let file = env.write("upload.jsonl", &format!("{}\n", upload.join("\n")));
    ok(env
        .cmd()
        .args(["import", "--trust-level", "untrusted", "--run", "pr/1"])
        .arg(&file));
    let export = ok(env.cmd().arg("export"));
    for line in export.lines() {
        let line: serde_json::Value = serde_json::from_str(line).unwrap();
        if line["type"] == "builder" && ["b3", "b4"].contains(&line["name"].as_str().unwrap()) {
            assert_eq!(line.get("endpoint"), None, "{line}");
            assert_eq!(line.get("driver"), None, "{line}");
        }
    }
    assert!(export.contains(r#""name":"b4""#), "{export}");
}

/// An upload (`import --trust-level`) holds the job's own runs, which `--run` names as the
/// CI does: a pull request's job that claims the run key of a release build still to come,
/// or writes a pipeline line of another pipeline, is refused with nothing written, and the
/// release build records its run afterwards. `--trust-level` needs `--run`, and `--run`
/// needs `--trust-level`.
#[test]
fn an_upload_holds_only_the_runs_its_job_ran() {
    let env = Env::new();
    let line = |pipeline: &str, run: &str, extra: &str| {
        format!(
            r#"{{"v":1,"type":"run","pipeline":"{pipeline}","run":"{run}","step":"s","builder":"ci-1","started_at":"2026-01-01T00:00:00Z","finished_at":"2026-01-01T00:01:00Z"{extra}}}"#
        )
    };
    let upload = |name: &str, lines: &[String], extra: &[&str]| {
        let file = env.write(name, &format!("{}\n", lines.join("\n")));
        let mut cmd = env.cmd();
        cmd.args(["import", "--trust-level", "untrusted"])
            .args(extra)
            .arg(&file);
        output(&env, &mut cmd)
    };
    let own = line("web", "pr-7", "");
    let claimed = line("web", "1001-1", "");
    let out = upload(
        "claim.jsonl",
        &[own.clone(), claimed],
        &["--run", "web/pr-7"],
    );
    assert!(out.starts_with("exit: 2\n"), "{out}");
    assert!(
        out.contains("claim.jsonl` line 2: run `web/1001-1/s` is not the upload's own (`--run` names `web/pr-7`)"),
        "{out}"
    );
    let other = r#"{"v":1,"type":"pipeline","name":"release","trust_level":"untrusted"}"#;
    let out = upload(
        "pipeline.jsonl",
        &[other.to_owned(), own.clone()],
        &["--run", "web/pr-7/s"],
    );
    assert!(out.starts_with("exit: 2\n"), "{out}");
    assert!(
        out.contains("line 1: pipeline `release` is not the upload's own"),
        "{out}"
    );
    // Nothing of either file was written: the store was never made.
    assert!(!env.db().exists());
    let out = upload("own.jsonl", &[own], &["--run", "web/pr-7/s"]);
    assert!(out.starts_with("exit: 0\n"), "{out}");
    // The release build's own record of the key the upload tried to claim is taken.
    let release = line(
        "web",
        "1001-1",
        r#","trust_level":"release","commit":"abc""#,
    );
    let file = env.write("release.jsonl", &format!("{release}\n"));
    ok(env.cmd().arg("import").arg(&file));
    let export = ok(env.cmd().arg("export"));
    assert!(
        export.contains(r#""run":"1001-1""#) && export.contains(r#""commit":"abc""#),
        "{export}"
    );
    for args in [
        &["--trust-level", "untrusted"][..],
        &["--run", "web/pr-7"][..],
    ] {
        let out = output(&env, env.cmd().arg("import").args(args).arg(&file));
        assert!(out.starts_with("exit: 2\n"), "{out}");
        assert!(
            out.contains("--run") || out.contains("--trust-level"),
            "{out}"
        );
    }
}

/// An upload (`import --trust-level`) repeats a run the store holds as it is, or not at all:
/// one job's file cannot give another run (another pipeline's, or an earlier one) writes,
/// a build ref or a truncation, dated at that run's times. The same file twice adds nothing.
#[test]
fn an_upload_adds_nothing_to_a_run_the_store_holds() {
    let env = Env::new();
    let run = |extra: &str| {
        let records = if extra.contains("records") {
            ""
        } else {
            r#","records":{"created":[],"reused":[{"id":"r1","type":"regular","description":"RUN make"}]}"#
        };
        let imported = if extra.contains("imported") {
            String::new()
        } else {
            format!(r#","imported":["r.io/web:cache@{}"]"#, digest('a'))
        };
        format!(
            r#"{{"v":1,"type":"run","pipeline":"forks-good","run":"100","step":"s","builder":"b1","started_at":"2026-01-01T00:00:00Z","finished_at":"2026-01-01T00:01:00Z"{imported}{records}{extra}}}"#
        )
    };
    let upload = |name: &str, line: &str| {
        let file = env.write(name, &format!("{line}\n"));
        let mut cmd = env.cmd();
        cmd.args(["import", "--trust-level", "untrusted"])
            .args(["--run", "forks-good/100"])
            .arg(&file);
        output(&env, &mut cmd)
    };
    // A file that holds the run twice (a spool's retried write) is the run once, whatever
    // the batch size.
    let twice = format!("{}\n{}", run(""), run(""));
    let first = upload("good.jsonl", &twice);
    assert!(first.starts_with("exit: 0\n"), "{first}");
    let again = upload("good.jsonl", &run(""));
    assert!(again.starts_with("exit: 0\n"), "{again}");
    let before = ok(env.cmd().arg("export"));
    for (extra, gained) in [
        (
            format!(r#","exported":["r.io/web:cache@{}"]"#, digest('e')),
            "events",
        ),
        (r#","build_ref":"attackerbuild1""#.to_owned(), "a build ref"),
        (r#","truncated":true"#.to_owned(), "a truncation"),
        (
            format!(r#","imported":["r.io/web:prod@{}"]"#, digest('a')),
            "a tag sighting",
        ),
        (
            r#","records":{"created":[],"reused":[{"id":"r1","type":"regular","description":"RUN make","last_used_at":1767225630000000,"size":7}]}"#.to_owned(),
            "a builder record's use",
        ),
    ] {
        let out = upload("evil.jsonl", &run(&extra));
        assert!(
            out.starts_with("exit: 2\n")
                && out.contains("run `forks-good/100/s` is already recorded, and this upload adds")
                && out.contains(gained),
            "{extra}: {out}"
        );
        assert_eq!(ok(env.cmd().arg("export")), before, "{extra}");
    }
    // A store's own export (a plain import) may still add to a run.
    let file = env.write("more.jsonl", &format!("{}\n", run(r#","truncated":true"#)));
    ok(env.cmd().arg("import").arg(&file));
}

/// `record` refuses a name that would print as another (white space at an end, a form other
/// than NFC), naming it, and writes nothing.
#[test]
fn record_refuses_names_that_print_as_others() {
    let env = Env::new();
    for (flag, value) in [
        ("--pipeline", "web-release "),
        ("--run", " 1"),
        ("--builder", "b1\t"),
        ("--pipeline", "cafe\u{301}-release"),
    ] {
        let mut cmd = env.cmd();
        cmd.arg("record");
        for (name, default) in [("--pipeline", "web"), ("--run", "1"), ("--builder", "b1")] {
            cmd.args([name, if name == flag { value } else { default }]);
        }
        let out = output(&env, &mut cmd);
        assert!(
            out.starts_with("exit: 2\n") && out.contains("would print as another name"),
            "{flag} {value:?}: {out}"
        );
    }
    assert!(!env.db().exists());
    // A store's export holding such names, recorded before they were refused, moves to a new
    // store as it is with `--stored-names`; any other file holding them is refused, naming
    // the line and the flag, and writes nothing.
    let old = env.write(
        "old.jsonl",
        concat!(
            r#"{"v":1,"type":"builder","name":"b1 "}"#,
            "\n",
            r#"{"v":1,"type":"run","pipeline":"web ","run":"1","step":"cafe\u0301","builder":"b1 ","started_at":"2026-01-01T00:00:00Z","finished_at":"2026-01-01T00:01:00Z"}"#,
            "\n"
        ),
    );
    let out = output(&env, env.cmd().arg("import").arg(&old));
    assert!(
        out.starts_with("exit: 2\n")
            && out.contains("line 1")
            && out.contains("would print as another name")
            && out.contains("--stored-names"),
        "{out}"
    );
    assert!(!env.db().exists(), "{out}");
    ok(env.cmd().args(["import", "--stored-names"]).arg(&old));
    let export = ok(env.cmd().arg("export"));
    assert!(
        export.contains(r#""pipeline":"web ""#) && export.contains("\"step\":\"cafe\u{301}\""),
        "{export}"
    );
    let out = output(
        &env,
        env.cmd()
            .args(["import", "--trust-level", "untrusted", "--run", "web /1"])
            .arg(&old),
    );
    assert!(
        out.starts_with("exit: 2\n") && out.contains("would print as another name"),
        "{out}"
    );
}

/// Export then import into a fresh store gives the same export.
#[test]
fn export_import_round_trip() {
    let env = Env::new();
    let lines = format!(
        concat!(
            r#"{{"v":1,"type":"pipeline","name":"web","project":"acme","trust_level":"release"}}"#,
            "\n",
            r#"{{"v":1,"type":"run","pipeline":"web","run":"1","step":"s","builder":"b1","started_at":"2026-01-01T00:00:00Z","finished_at":"2026-01-01T00:01:00Z","imported":["r.io/web:cache@{a}"],"exported":["r.io/web:cache@{b}"],"mounts":[{{"id":"pip","sharing":"private","uid":1000}}],"records":{{"created":[{{"id":"x1","type":"regular","description":"RUN make"}}],"reused":[]}}}}"#,
            "\n",
            r#"{{"v":1,"type":"purge","builder":"b1","mount":"pip","at":"2026-01-02T00:00:00Z"}}"#,
            "\n"
        ),
        a = digest('a'),
        b = digest('b')
    );
    let file = env.write("in.jsonl", &lines);
    ok(env
        .cmd()
        .args(["import", "--purges", file.to_str().unwrap()]));
    let first = ok(env.cmd().arg("export"));
    let copy = env.write("copy.jsonl", &first);
    let other = env.path().join("other.db");
    ok(env.cmd().args([
        "--db",
        other.to_str().unwrap(),
        "import",
        "--purges",
        copy.to_str().unwrap(),
    ]));
    let second = ok(env.cmd().args(["--db", other.to_str().unwrap(), "export"]));
    assert_eq!(first, second);
    assert_snapshot!(first);
}

/// A bad line names its line number and nothing of its batch is written: a store that did
/// not exist is not created, and one that did is left as it was.
#[test]
fn import_bad_line_writes_nothing() {
    let env = Env::new();
    let good = r#"{"v":1,"type":"pipeline","name":"web"}"#;
    let file = env.write(
        "in.jsonl",
        &format!("{good}\n{good}\n{{\"v\":1,\"type\":\"pipeline\"\n"),
    );
    assert_snapshot!(output(
        &env,
        env.cmd().args(["import", file.to_str().unwrap()])
    ));
    assert!(!env.db().exists(), "no store was created");

    let other = env.write("other.jsonl", r#"{"v":1,"type":"pipeline","name":"api"}"#);
    ok(env.cmd().args(["import", other.to_str().unwrap()]));
    let before = ok(env.cmd().arg("export"));
    let out = env
        .cmd()
        .args(["import", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(ok(env.cmd().arg("export")), before);
}

/// Every kind of bad input gets one line naming the value, exit 2, and an unchanged store.
#[test]
fn bad_input_per_kind() {
    let env = Env::new();
    ok(env
        .cmd()
        .args(["record", "--pipeline", "p", "--run", "1", "--builder", "b"]));
    let before = ok(env.cmd().arg("export"));
    let bad_dockerfile = env.write("bad/Dockerfile", "RUN echo no from\n");
    let bad_meta = env.write("bad/meta.json", "{\"containerimage.digest\": 7");
    let bad_config = env.write(
        "bad/config.toml",
        "[[builder]]\nname = \"x\"\nendpoint = 3\n",
    );
    let cases: Vec<Vec<String>> = vec![
        vec!["--cache-from".into(), "Not A Ref".into()],
        vec!["--image".into(), "reg.io/app@sha256:1234".into()],
        vec!["--started-at".into(), "yesterday".into()],
        vec!["--cache-to".into(), "type=bogus".into()],
        vec!["--mount".into(), "pip,sometimes".into()],
        vec!["--trust-level".into(), "godlike".into()],
        vec!["--dockerfile".into(), "missing/Dockerfile".into()],
        vec!["--dockerfile".into(), bad_dockerfile.display().to_string()],
        vec!["--metadata-file".into(), bad_meta.display().to_string()],
    ];
    let mut all = String::new();
    for case in cases {
        let mut cmd = env.cmd();
        cmd.args(["record", "--pipeline", "p", "--run", "2", "--builder", "b"])
            .args(&case);
        let out = output(&env, &mut cmd);
        assert!(out.starts_with("exit: 2\n"), "{case:?}: {out}");
        let stderr = out.split("--- stderr\n").nth(1).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{case:?}: {out}");
        all.push_str(&format!("{}\n", stderr.trim_end()));
    }
    let mut cmd = env.cmd();
    cmd.args([
        "--config",
        bad_config.to_str().unwrap(),
        "record",
        "--pipeline",
        "p",
        "--run",
        "3",
    ]);
    all.push_str(&output(&env, &mut cmd));
    assert_snapshot!(all);
    assert_eq!(ok(env.cmd().arg("export")), before);
}

/// A database written by a newer cachewarden is refused with exit 3 and left alone.
#[test]
fn newer_schema_is_refused() {
    let env = Env::new();
    ok(env.cmd().args(["record", "--pipeline", "p", "--run", "1"]));
    let conn = rusqlite::Connection::open(env.db()).unwrap();
    conn.pragma_update(None, "user_version", 42).unwrap();
    drop(conn);
    assert_snapshot!(output(
        &env,
        env.cmd().args(["record", "--pipeline", "p", "--run", "2"])
    ));
}

/// A `--db` URL of a scheme other than PostgreSQL's is refused in one line naming only the
/// scheme, and a PostgreSQL URL whose server cannot be reached exits 3; neither creates a file
/// named after the scheme nor shows the password.
#[test]
fn a_database_url_is_never_taken_as_a_path() {
    let env = Env::new();
    for (db, args, code, says) in [
        (
            "postgresql://ci:s3cret@127.0.0.1:1/cw",
            &["record", "--pipeline", "p", "--run", "1"][..],
            3,
            "cannot connect",
        ),
        (
            "postgres://ci:s3cret@127.0.0.1:1/cw",
            &["ls", "pipelines"][..],
            3,
            "cannot connect",
        ),
        (
            "mysql://ci:s3cret@db/cw",
            &["trace", "--pipeline", "p"][..],
            2,
            "`mysql://...`",
        ),
    ] {
        let out = output(&env, env.cmd().args(["--db", db]).args(args));
        assert!(out.starts_with(&format!("exit: {code}\n")), "{out}");
        assert!(out.contains(says), "{out}");
        assert!(!out.contains("s3cret"), "{out}");
        let scheme = db.split_once(':').unwrap().0;
        assert!(!env.path().join(format!("{scheme}:")).exists(), "{db}");
    }
    assert!(!env.db().exists());
}

/// A `--db` or `CACHEWARDEN_DB` that SQLite would read as a URI (`file:`, any case) is refused
/// (exit 2) naming it, before anything is recorded into memory or into a path other than the
/// one it looks like.
#[test]
fn an_sqlite_uri_is_refused_as_a_store() {
    let env = Env::new();
    let line = env.write(
        "in.jsonl",
        r#"{"type":"run","v":1,"pipeline":"p","run":"1","started_at":"2026-01-01T00:00:00Z","finished_at":"2026-01-01T01:00:00Z"}
"#,
    );
    for db in [
        "file:m.db?mode=memory",
        "FILE:sub/f.db",
        "file:/tmp/cw-never.db",
    ] {
        let out = output(&env, env.cmd().args(["--db", db, "import"]).arg(&line));
        assert_eq!(
            out,
            format!(
                "exit: 2\n--- stdout\n--- stderr\nerror: `{db}` is an SQLite URI, which --db does not \
                 take: give a file path (`./{db}` for a file whose name starts with `file:`)\n"
            )
        );
        let out = output(
            &env,
            env.cmd().env("CACHEWARDEN_DB", db).args(["ls", "runs"]),
        );
        assert!(out.starts_with("exit: 2\n"), "{out}");
    }
    assert!(!std::path::Path::new("/tmp/cw-never.db").exists());
    assert_eq!(std::fs::read_dir(env.path()).unwrap().count(), 1);
}

/// An empty `CACHEWARDEN_DB` or `CACHEWARDEN_CONFIG` (an undefined CI secret) is as if unset:
/// `record` records into the default store, and `wrap` runs its build; an empty `--db` given
/// on the command line is still a usage error.
#[test]
fn empty_store_and_config_variables_are_unset() {
    let env = Env::new();
    let empty = |args: &[&str]| {
        let mut cmd = env.cmd();
        cmd.env("CACHEWARDEN_DB", "")
            .env("CACHEWARDEN_CONFIG", "")
            .args(args);
        cmd
    };
    ok(&mut empty(&["record", "--pipeline", "p", "--run", "1"]));
    let default = env.path().join("data/cachewarden/cachewarden.db");
    assert!(default.exists());
    let out = ok(&mut empty(&[
        "wrap",
        "--pipeline",
        "p",
        "--run",
        "2",
        "--",
        "echo",
        "built",
    ]));
    assert_eq!(out, "built\n");
    let out = ok(&mut empty(&["ls", "runs", "--format", "json"]));
    assert!(out.contains("\"run\": \"1\""), "{out}");
    let out = output(&env, &mut empty(&["--db", "", "ls", "runs"]));
    assert!(out.starts_with("exit: 2\n"), "{out}");
}

/// `check` reads an argument with a digest algorithm's prefix as a digest: a malformed one, or
/// one in upper case, is bad input (exit 2) before any store or registry is read, never a
/// Docker Hub tag to resolve over the network.
#[test]
fn check_refuses_a_malformed_bare_digest() {
    let env = Env::new();
    let upper = format!("sha256:{}", "A".repeat(64));
    for (value, says) in [
        (
            "sha256:abc",
            "expected 64 lowercase hex digits after `sha256:`",
        ),
        (
            upper.as_str(),
            "expected 64 lowercase hex digits after `sha256:`",
        ),
        ("SHA512:00", "unsupported digest algorithm `SHA512`"),
    ] {
        let out = output(&env, env.cmd().args(["check", value]));
        assert_eq!(
            out,
            format!("exit: 2\n--- stdout\n--- stderr\nerror: invalid REF `{value}`: {says}\n")
        );
    }
    assert!(!env.db().exists());
}

/// Eight processes recording into one fresh database at once lose nothing.
#[test]
fn concurrent_records_lose_nothing() {
    let env = Env::new();
    let children: Vec<_> = (0..8)
        .map(|i| {
            env.cmd()
                .args([
                    "record",
                    "--pipeline",
                    &format!("p{}", i % 3),
                    "--run",
                    &i.to_string(),
                    "--builder",
                    "shared",
                    "--mount",
                    "/root/.cache/pip",
                    "--cache-from",
                    &format!("r.io/app:cache@{}", digest('c')),
                ])
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
    let export = ok(env.cmd().arg("export"));
    assert_eq!(
        export
            .lines()
            .filter(|l| l.contains("\"type\":\"run\""))
            .count(),
        8
    );
    assert_eq!(
        export
            .lines()
            .filter(|l| l.contains("\"type\":\"pipeline\""))
            .count(),
        3
    );
}

/// `trace --verbose` says how the store was read and where the time went, on stderr only.
#[test]
fn trace_verbose_reports_its_phases() {
    let env = Env::new();
    for run in ["1", "2"] {
        record_with_mount(&env, run, "/m");
    }
    let plain = env
        .cmd()
        .args(["trace", "--pipeline", "p", "--format", "json"])
        .output()
        .unwrap();
    let verbose = env
        .cmd()
        .args(["-v", "trace", "--pipeline", "p", "--format", "json"])
        .output()
        .unwrap();
    assert!(verbose.status.success());
    assert_eq!(
        verbose.stdout, plain.stdout,
        "stdout carries only the trace"
    );
    assert!(plain.stderr.is_empty());
    let stderr = String::from_utf8(verbose.stderr).unwrap();
    let line = stderr.lines().find(|l| l.starts_with("trace: ")).unwrap();
    let words: Vec<&str> = line.split(' ').collect();
    // Two runs, their mount and their builder; no graph load for a store this small.
    assert!(words[1].parse::<usize>().unwrap() > 0, "{line}");
    assert!(
        line.contains(" indexed queries; 4 nodes traversed in "),
        "{line}"
    );
    assert!(line.contains(" s; output written in "), "{line}");
    assert!(!line.contains("loaded"), "{line}");
}

/// A tainted cache ref known by tag only cannot be matched to the runs that imported one of
/// its tag's digests: the trace says so on stderr, with the seed that follows the tag. A
/// tag-only ref whose tag has no digest outside the blast radius goes unmentioned, and so does
/// everything in a trace seeded with the tag.
#[test]
fn trace_warns_of_tainted_refs_known_by_tag_only() {
    let env = Env::new();
    let digest = digest('a');
    let run = |pipeline: &str, run: &str, minute: u32, field: &str, reference: &str| {
        format!(
            r#"{{"v":1,"type":"run","pipeline":"{pipeline}","run":"{run}","step":"s","started_at":"2026-01-01T00:{minute:02}:00Z","finished_at":"2026-01-01T00:{minute:02}:30Z","status":"succeeded","{field}":["{reference}"]}}"#
        )
    };
    let lines = [
        run("a", "1", 0, "exported", "reg.example/app:cache"),
        run("a", "2", 1, "produced", "reg.example/other:1"),
        run(
            "b",
            "1",
            2,
            "imported",
            &format!("reg.example/app:cache@{digest}"),
        ),
    ]
    .join("\n");
    let file = env.write("history.jsonl", &format!("{lines}\n"));
    ok(env.cmd().arg("import").arg(&file));

    let out = env
        .cmd()
        .args(["trace", "--pipeline", "a", "--format", "json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let trace: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(trace["runs"].as_array().unwrap().len(), 2, "{trace}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        stderr.trim_end(),
        "warning: 1 tainted registry ref is recorded by tag only (`reg.example/app:cache`), and \
         digests recorded for its tag since then are outside the blast radius: `trace \
         --cache-ref reg.example/app:cache --since 2026-01-01T00:00:00Z` follows them"
    );

    // A trace that leaves nothing out says nothing on stderr.
    let quiet = |args: &[&str]| -> serde_json::Value {
        let out = env
            .cmd()
            .arg("trace")
            .args(args)
            .args(["--format", "json"])
            .output()
            .unwrap();
        assert!(out.status.success());
        assert!(
            out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let trace = quiet(&[
        "--cache-ref",
        "reg.example/app:cache",
        "--since",
        "2026-01-01T00:00:00Z",
    ]);
    let runs: Vec<&str> = trace["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["pipeline"].as_str().unwrap())
        .collect();
    assert_eq!(runs, ["b"], "{trace}");

    // Once the tag's digest is in the blast radius, nothing is left to warn of.
    quiet(&[
        "--pipeline",
        "a",
        "--cache-ref",
        &format!("reg.example/app@{digest}"),
    ]);

    // Opening an incident on the pipeline warns too.
    let out = env
        .cmd()
        .args(["incident", "open", "--pipeline", "a"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("warning: 1 tainted registry ref is recorded by tag only"),
        "{stderr}"
    );
}

/// A build on a builder whose endpoint is unknown is recorded, with a warning that its builder
/// records (the evidence that keeps other projects' layers out of a purge) are not captured.
#[test]
fn wrap_without_a_builder_endpoint_warns_that_records_are_not_captured() {
    let env = Env::new();
    let docker = env.fake_docker("exit 0\n");
    env.write("ctx/Dockerfile", "FROM scratch\n");
    let out = env
        .cmd()
        .args([
            "wrap",
            "--pipeline",
            "p",
            "--run",
            "1",
            "--builder",
            "ci-7",
            "--",
        ])
        .arg(&docker)
        .args(["build", "-t", "app", "ctx"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains(
            "warning: builder records will not be captured: no endpoint is known for builder `ci-7`"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("cachewarden: recorded succeeded run `p/1"),
        "{stderr}"
    );
    let export = ok(env.cmd().arg("export"));
    assert!(!export.contains("\"records\""), "{export}");
}

/// `wrap` refuses a build that mounts a cache mount an open incident holds tainted on its
/// builder (exit 5, naming it), as it refuses a tainted image; the same mount id on another
/// builder builds, and `--allow-tainted` builds with the override recorded.
#[test]
fn wrap_refuses_a_mount_an_open_incident_holds() {
    let env = Env::new();
    let docker = env.fake_docker("exit 0\n");
    env.write(
        "ctx/Dockerfile",
        "FROM scratch\nRUN --mount=type=cache,id=pip,target=/root/.cache/pip true\n",
    );
    ok(env.cmd().args([
        "record",
        "--pipeline",
        "evil",
        "--run",
        "1",
        "--builder",
        "ci-1",
        "--mount",
        "pip",
    ]));
    ok(env.cmd().args(["incident", "open", "--pipeline", "evil"]));
    let wrap = |run: &str, builder: &str, extra: &[&str]| {
        let mut cmd = env.cmd();
        cmd.args([
            "wrap",
            "--pipeline",
            "victim",
            "--run",
            run,
            "--builder",
            builder,
        ])
        .args(extra)
        .arg("--")
        .arg(&docker)
        .args(["build", "-t", "app"])
        .arg(env.path().join("ctx"));
        output(&env, &mut cmd)
    };
    let refused = wrap("1", "ci-1", &[]);
    assert!(refused.starts_with("exit: 5\n"), "{refused}");
    assert!(
        refused.contains("`cache mount ci-1:pip` is tainted in open incident 1"),
        "{refused}"
    );
    let elsewhere = wrap("2", "ci-2", &[]);
    assert!(elsewhere.starts_with("exit: 0\n"), "{elsewhere}");
    // A mount under a namespace, and a build wrap cannot read, are inputs nobody can check:
    // refused while the incident holds a mount.
    let namespaced = wrap("4", "ci-1", &["--build-arg", "BUILDKIT_CACHE_MOUNT_NS=ns"]);
    assert!(
        namespaced.starts_with("exit: 5\n") && namespaced.contains("under a namespace"),
        "{namespaced}"
    );
    let mut bake = env.cmd();
    bake.args([
        "wrap",
        "--pipeline",
        "victim",
        "--run",
        "5",
        "--builder",
        "ci-1",
        "--",
    ])
    .arg(&docker)
    .args(["buildx", "bake"]);
    let bake = output(&env, &mut bake);
    assert!(
        bake.starts_with("exit: 5\n") && bake.contains("builds in a way wrap does not read"),
        "{bake}"
    );
    let allowed = wrap("3", "ci-1", &["--allow-tainted"]);
    assert!(allowed.starts_with("exit: 0\n"), "{allowed}");
    let report = ok(env
        .cmd()
        .args(["incident", "report", "1", "--format", "json"]));
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert_eq!(report["overrides"][0]["run"], "3", "{report:#}");
    let export = ok(env.cmd().arg("export"));
    assert!(
        !export.contains("\"pipeline\":\"victim\",\"run\":\"1\""),
        "{export}"
    );
}

/// The wrapped client's `-H`, `--context` and `--config` flags, and the builder `docker buildx
/// use` made current, choose the builder as its environment would: a build on the engine that
/// holds a tainted mount is refused however the engine is named, and recorded on it.
#[test]
fn wrap_names_the_builder_the_wrapped_client_chooses() {
    let env = Env::new();
    let docker = env.fake_docker("exit 0\n");
    env.write(
        "ctx/Dockerfile",
        "FROM scratch\nRUN --mount=type=cache,id=pip,target=/root/.cache/pip true\n",
    );
    let socket = format!("unix://{}", env.path().join("other.sock").display());
    // buildx's current builder, as `docker buildx use fleet` leaves it for the default engine.
    let config = env.path().join("cfg");
    env.write("cfg/buildx/instances/fleet", "{}");
    env.write(
        "cfg/buildx/current",
        r#"{"Key":"unix:///var/run/docker.sock","Name":"fleet","Global":false}"#,
    );
    let holds: [(&str, &str); 3] = [
        ("DOCKER_HOST", socket.as_str()),
        ("DOCKER_CONTEXT", "remote"),
        ("BUILDX_BUILDER", "fleet"),
    ];
    for (i, (var, value)) in holds.iter().enumerate() {
        ok(env
            .cmd()
            .args(["record", "--pipeline", "evil", "--run"])
            .arg(i.to_string())
            .args(["--mount", "pip"])
            .env(var, value));
    }
    ok(env.cmd().args(["incident", "open", "--pipeline", "evil"]));
    let wrap = |run: &str, client: &[&str]| {
        let mut cmd = env.cmd();
        cmd.args(["wrap", "--pipeline", "victim", "--run", run, "--"])
            .arg(&docker)
            .args(client)
            .arg(env.path().join("ctx"));
        output(&env, &mut cmd)
    };
    // `docker buildx install` makes `docker build` a buildx build on the current builder.
    env.write("aliased/config.json", r#"{"aliases":{"builder":"buildx"}}"#);
    env.write("aliased/buildx/instances/fleet", "{}");
    env.write(
        "aliased/buildx/current",
        r#"{"Key":"unix:///var/run/docker.sock","Name":"fleet","Global":false}"#,
    );
    let aliased = env.path().join("aliased").display().to_string();
    // A context the context store names, on the engine that holds the mount.
    let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"alias"));
    env.write(
        &format!("cfg/contexts/meta/{hash}/meta.json"),
        &format!(r#"{{"Name":"alias","Endpoints":{{"docker":{{"Host":"{socket}"}}}}}}"#),
    );
    let config = config.display().to_string();
    let refused: [&[&str]; 10] = [
        &["-H", &socket, "build"],
        &[&format!("--host={socket}"), "build"],
        &["--context", "remote", "build"],
        &["-c", "remote", "buildx", "build"],
        &["--config", &config, "buildx", "build"],
        &["--config", &config, "buildx", "build", "--builder=FLEET"],
        &["--config", &config, "buildx", "build", "--builder="],
        &["--config", &aliased, "build"],
        &["--config", &config, "--context", "alias", "build"],
        &["build", "--frobnicate"],
    ];
    for (i, client) in refused.iter().enumerate() {
        let out = wrap(&format!("r{i}"), client);
        assert!(
            out.starts_with("exit: 5\n")
                && (out.contains("is tainted in open incident 1")
                    || out.contains("`--frobnicate`, which wrap does not read")),
            "{client:?}: {out}"
        );
    }
    // The default engine holds no tainted mount, and neither does another context.
    for (run, client) in [
        ("ok-1", &["build"][..]),
        ("ok-2", &["--config", &config, "build"]),
        (
            "ok-3",
            &["--context", "other", "--config", &config, "buildx", "build"],
        ),
    ] {
        let out = wrap(run, client);
        assert!(out.starts_with("exit: 0\n"), "{client:?}: {out}");
    }
    // A `docker build --builder=` is a buildx build on the current builder; an empty
    // `--context=` is none, leaving `DOCKER_HOST`; buildx's `default` builder is the engine of
    // the `default` context (`DOCKER_HOST`), not of the context the client is told to use.
    let in_env = |run: &str, client: &[&str]| {
        let mut cmd = env.cmd();
        cmd.args(["wrap", "--pipeline", "victim", "--run", run, "--"])
            .arg(&docker)
            .args(client)
            .arg(env.path().join("ctx"))
            .env("DOCKER_HOST", &socket);
        output(&env, &mut cmd)
    };
    let plain = wrap("e0", &["--config", &config, "build", "--builder="]);
    assert!(plain.starts_with("exit: 5\n"), "{plain}");
    for (run, client) in [
        ("e1", &["--context=", "build"][..]),
        ("e2", &["-c", "", "build"]),
        (
            "e3",
            &[
                "--context",
                "other",
                "buildx",
                "build",
                "--builder",
                "default",
            ],
        ),
    ] {
        let out = in_env(run, client);
        assert!(
            out.starts_with("exit: 5\n") && out.contains("is tainted in open incident 1"),
            "{client:?}: {out}"
        );
    }
    let export = ok(env.cmd().arg("export"));
    let builder = |run: &str| {
        export
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|l| l["run"] == run)
            .map(|l| l["builder"].as_str().unwrap_or_default().to_owned())
            .unwrap_or_default()
    };
    assert!(
        builder("ok-1").ends_with(":/var/run/docker.sock"),
        "{export}"
    );
    assert!(builder("ok-3").starts_with("context:other@"), "{export}");
}

/// A builder the hook names (`wrap --builder`) that the config puts at another engine than the
/// one the command builds on is not where the build ran: it is recorded on the engine the
/// command names, with a warning, so that a held mount there is refused and nothing is
/// captured from (or later pruned on) the named builder for it.
#[test]
fn a_named_builder_configured_elsewhere_does_not_move_the_build() {
    let env = Env::new();
    let docker = env.fake_docker("exit 0\n");
    env.write(
        "ctx/Dockerfile",
        "FROM scratch\nRUN --mount=type=cache,id=pip,target=/root/.cache/pip true\n",
    );
    let real = format!("unix://{}", env.path().join("real.sock").display());
    let config = env.write(
        "cw.toml",
        "[[builder]]\nname = \"ci-1\"\nendpoint = \"unix:///nowhere/docker.sock\"\n",
    );
    ok(env
        .cmd_with(&config)
        .args([
            "record",
            "--pipeline",
            "evil",
            "--run",
            "1",
            "--mount",
            "pip",
        ])
        .env("DOCKER_HOST", &real));
    ok(env
        .cmd_with(&config)
        .args(["incident", "open", "--pipeline", "evil"]));
    let mut cmd = env.cmd_with(&config);
    cmd.args([
        "wrap",
        "--pipeline",
        "victim",
        "--run",
        "1",
        "--builder",
        "ci-1",
        "--",
    ])
    .arg(&docker)
    .args(["-H", &real, "build"])
    .arg(env.path().join("ctx"));
    let out = output(&env, &mut cmd);
    assert!(out.starts_with("exit: 5\n"), "{out}");
    assert!(
        out.contains("builder `ci-1` is configured at `unix:///nowhere/docker.sock`, but the command builds on")
            && out.contains("is tainted in open incident 1"),
        "{out}"
    );
    // With `BUILDX_BUILDER` set, a plain `docker build` runs on that instance (Docker 23 and
    // later) or on the engine `-H` names (before): on the configured engine either way never.
    env.write("cfg/buildx/instances/fleet", "{}");
    let mut cmd = env.cmd_with(&config);
    cmd.args([
        "wrap",
        "--pipeline",
        "victim",
        "--run",
        "4",
        "--builder",
        "ci-1",
        "--",
    ])
    .arg(&docker)
    .arg("--config")
    .arg(env.path().join("cfg"))
    .args(["-H", &real, "build"])
    .arg(env.path().join("ctx"))
    .env("BUILDX_BUILDER", "fleet");
    let out = output(&env, &mut cmd);
    assert!(out.starts_with("exit: 5\n"), "{out}");
    assert!(
        out.contains("builder `ci-1` is configured at `unix:///nowhere/docker.sock`, but the command builds on")
            && out.contains("real.sock`: the build is recorded on builder `docker@"),
        "{out}"
    );
    // An engine the config names is recorded by that name.
    let both = env.write(
        "both.toml",
        &format!(
            "[[builder]]\nname = \"ci-1\"\nendpoint = \"unix:///nowhere/docker.sock\"\n\n[[builder]]\nname = \"ci-real\"\nendpoint = \"{real}\"\n"
        ),
    );
    let mut cmd = env.cmd_with(&both);
    cmd.args([
        "wrap",
        "--pipeline",
        "victim",
        "--run",
        "3",
        "--builder",
        "ci-1",
        "--",
    ])
    .arg(&docker)
    .args(["-H", &real, "build"])
    .arg(env.path().join("ctx"));
    let out = output(&env, &mut cmd);
    assert!(
        out.contains("the build is recorded on builder `ci-real`"),
        "{out}"
    );
    // The same engine named two ways is no other engine.
    env.write("real.sock", "");
    let same = env.write(
        "same.toml",
        &format!("[[builder]]\nname = \"ci-2\"\nendpoint = \"{real}\"\n"),
    );
    let mut cmd = env.cmd_with(&same);
    cmd.args([
        "wrap",
        "--pipeline",
        "victim",
        "--run",
        "2",
        "--builder",
        "ci-2",
        "--",
    ])
    .arg(&docker)
    .args([
        "-H",
        &format!("unix://{}//real.sock", env.path().display()),
        "build",
    ])
    .arg(env.path().join("ctx"));
    let out = output(&env, &mut cmd);
    assert!(!out.contains("is configured at"), "{out}");
}

/// A build that reaches a configured engine by its socket or by a context, naming no builder,
/// is recorded under the config's name for that engine: a trace from a fork that wrote a mount
/// there reaches the build that names the engine and read it.
#[test]
fn an_engine_the_config_names_is_one_builder_however_it_is_reached() {
    let env = Env::new();
    let socket = format!("unix://{}", env.path().join("b2.sock").display());
    let config = env.write(
        "cw.toml",
        &format!("[[builder]]\nname = \"b2\"\nendpoint = \"{socket}\"\n"),
    );
    let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"c2"));
    env.write(
        &format!("cfg/contexts/meta/{hash}/meta.json"),
        &format!(r#"{{"Name":"c2","Endpoints":{{"docker":{{"Host":"{socket}"}}}}}}"#),
    );
    let record = |pipeline: &str, run: &str, vars: &[(&str, String)]| {
        let mut cmd = env.cmd_with(&config);
        cmd.args([
            "record",
            "--pipeline",
            pipeline,
            "--run",
            run,
            "--mount",
            "pip",
        ]);
        for (name, value) in vars {
            cmd.env(name, value);
        }
        ok(&mut cmd);
    };
    let dir = env.path().join("cfg").display().to_string();
    record("fork", "1", &[("DOCKER_HOST", socket.clone())]);
    record(
        "fork",
        "2",
        &[("DOCKER_CONTEXT", "c2".into()), ("DOCKER_CONFIG", dir)],
    );
    record("webapp", "1", &[("CACHEWARDEN_BUILDER", "b2".into())]);
    record("other", "1", &[("CACHEWARDEN_BUILDER", "elsewhere".into())]);
    let export = ok(env.cmd_with(&config).arg("export"));
    let builders: Vec<String> = export
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| l["type"] == "run")
        .map(|l| {
            format!(
                "{}/{} {}",
                l["pipeline"].as_str().unwrap(),
                l["run"].as_str().unwrap(),
                l["builder"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        builders,
        ["fork/1 b2", "fork/2 b2", "webapp/1 b2", "other/1 elsewhere"],
        "{export}"
    );
    let trace = ok(env
        .cmd_with(&config)
        .args(["trace", "--run", "fork/1", "--format", "json"]));
    assert!(trace.contains("run:webapp/1/"), "{trace}");
}

/// A store that already holds one engine under two builder names (runs recorded before the
/// hook's config named it) cannot be traced as one: `trace` and `incident open` say so, naming
/// the other builder to trace too.
#[test]
fn one_engine_under_two_names_is_told() {
    let env = Env::new();
    let file = env.write(
        "h.jsonl",
        concat!(
            r#"{"v":1,"type":"builder","name":"b2","driver":"docker","endpoint":"unix:///run/b2.sock"}"#,
            "\n",
            r#"{"v":1,"type":"builder","name":"docker@vm:/run/b2.sock","driver":"docker","endpoint":"unix:///run/b2.sock"}"#,
            "\n",
            r#"{"v":1,"type":"run","pipeline":"fork","run":"1","step":"s","builder":"docker@vm:/run/b2.sock","started_at":"2026-03-01T10:00:00Z","finished_at":"2026-03-01T10:05:00Z","mounts":[{"id":"pip"}]}"#,
            "\n",
            r#"{"v":1,"type":"run","pipeline":"webapp","run":"1","step":"s","builder":"b2","started_at":"2026-03-01T11:00:00Z","finished_at":"2026-03-01T11:05:00Z","mounts":[{"id":"pip","readonly":true}]}"#,
            "\n",
            r#"{"v":1,"type":"builder","name":"b3","driver":"docker","endpoint":"unix:///run/b3.sock"}"#,
            "\n",
            r#"{"v":1,"type":"run","pipeline":"solo","run":"1","step":"s","builder":"b3","started_at":"2026-03-01T11:00:00Z","finished_at":"2026-03-01T11:05:00Z","mounts":[{"id":"pip"}]}"#,
            "\n",
            r#"{"v":1,"type":"builder","name":"docker@runner-a:/var/run/docker.sock","driver":"docker","endpoint":"unix:///var/run/docker.sock"}"#,
            "\n",
            r#"{"v":1,"type":"builder","name":"docker@runner-b:/var/run/docker.sock","driver":"docker","endpoint":"unix:///var/run/docker.sock"}"#,
            "\n",
            r#"{"v":1,"type":"run","pipeline":"runner","run":"1","step":"s","builder":"docker@runner-a:/var/run/docker.sock","started_at":"2026-03-01T11:00:00Z","finished_at":"2026-03-01T11:05:00Z","mounts":[{"id":"pip"}]}"#,
            "\n"
        ),
    );
    ok(env.cmd().arg("import").arg(&file));
    let told = "builder `docker@vm:/run/b2.sock` is one Docker Engine (`unix:///run/b2.sock`) with builder `b2`";
    for args in [
        &["trace", "--pipeline", "fork"][..],
        &["incident", "open", "--pipeline", "fork"],
    ] {
        let out = output(&env, env.cmd().args(args));
        assert!(out.contains(told), "{args:?}: {out}");
    }
    // A trace whose builders have no other name says nothing, nor does one whose builder is
    // the default socket of one runner: the same path on another runner is another engine.
    for pipeline in ["solo", "runner"] {
        let out = output(&env, env.cmd().args(["trace", "--pipeline", pipeline]));
        assert!(!out.contains("one Docker Engine"), "{out}");
    }
}

/// A builder the hook names as a configured Docker Engine does not move a buildx build onto it
/// either: the buildx instance `BUILDX_BUILDER` or `docker buildx use` chose runs it, in a
/// container of its own, and the build is checked and recorded there.
#[test]
fn a_named_engine_does_not_move_a_buildx_build() {
    let env = Env::new();
    let docker = env.fake_docker("exit 0\n");
    env.write(
        "ctx/Dockerfile",
        "FROM scratch\nRUN --mount=type=cache,id=pip,target=/root/.cache/pip true\n",
    );
    let config = env.write(
        "cw.toml",
        "[[builder]]\nname = \"ci-1\"\nendpoint = \"unix:///var/run/docker.sock\"\n",
    );
    env.write("cfg/buildx/instances/fleet", "{}");
    env.write(
        "cfg/buildx/current",
        r#"{"Key":"unix:///var/run/docker.sock","Name":"fleet","Global":false}"#,
    );
    let dir = env.path().join("cfg");
    ok(env
        .cmd_with(&config)
        .args([
            "record",
            "--pipeline",
            "evil",
            "--run",
            "1",
            "--mount",
            "pip",
        ])
        .env("BUILDX_BUILDER", "fleet"));
    ok(env
        .cmd_with(&config)
        .args(["incident", "open", "--pipeline", "evil"]));
    let wrap = |run: &str, named: &[&str], var: Option<(&str, &str)>| {
        let mut cmd = env.cmd_with(&config);
        cmd.args(["wrap", "--pipeline", "victim", "--run", run])
            .args(named)
            .arg("--")
            .arg(&docker)
            .arg("--config")
            .arg(&dir)
            .args(["buildx", "build"])
            .arg(env.path().join("ctx"));
        if let Some((name, value)) = var {
            cmd.env(name, value);
        }
        output(&env, &mut cmd)
    };
    for (run, named, var) in [
        ("1", &["--builder", "ci-1"][..], None),
        ("2", &[], Some(("CACHEWARDEN_BUILDER", "ci-1"))),
        (
            "3",
            &["--builder", "ci-1"],
            Some(("BUILDX_BUILDER", "fleet")),
        ),
    ] {
        let out = wrap(run, named, var);
        assert!(
            out.starts_with("exit: 5\n")
                && out.contains("builder `ci-1` is configured at `unix:///var/run/docker.sock`, but the command builds on `buildx:fleet@")
                && out.contains("is tainted in open incident 1"),
            "{run}: {out}"
        );
    }
    // A legacy `docker build` builds on the engine, whatever `BUILDX_BUILDER` says: it stays
    // on the named engine.
    let mut cmd = env.cmd_with(&config);
    cmd.args([
        "wrap",
        "--pipeline",
        "victim",
        "--run",
        "4",
        "--builder",
        "ci-1",
        "--",
    ])
    .arg(&docker)
    .arg("build")
    .arg(env.path().join("ctx"))
    .env("BUILDX_BUILDER", "fleet")
    .env("DOCKER_BUILDKIT", "0");
    let out = output(&env, &mut cmd);
    assert!(
        out.starts_with("exit: 0\n") && !out.contains("is configured at"),
        "{out}"
    );
    // Without `DOCKER_BUILDKIT=0` it may run through buildx (Docker 23 and later): the mount
    // held on the instance `BUILDX_BUILDER` names is held for it too.
    let mut cmd = env.cmd_with(&config);
    cmd.args([
        "wrap",
        "--pipeline",
        "victim",
        "--run",
        "5",
        "--builder",
        "ci-1",
        "--",
    ])
    .arg(&docker)
    .arg("build")
    .arg(env.path().join("ctx"))
    .env("BUILDX_BUILDER", "fleet");
    let out = output(&env, &mut cmd);
    assert!(
        out.starts_with("exit: 5\n") && out.contains("is tainted in open incident 1"),
        "{out}"
    );
    let export = ok(env.cmd_with(&config).arg("export"));
    assert!(
        export.contains(r#""run":"4","step":"ctx/Dockerfile","builder":"ci-1""#),
        "{export}"
    );
}

/// `export --run` gives only the runs named, with their pipelines and builders and no purge:
/// a CI job's upload never carries what other jobs on a shared runner recorded. An unknown run
/// is refused and leaves no file.
#[test]
fn export_run_selects_only_that_run() {
    let env = Env::new();
    for (pipeline, run, builder) in [
        ("acme/web/images", "7-1", "ci-1"),
        ("acme/web/images", "8-1", "ci-2"),
        ("api", "1", "ci-3"),
    ] {
        ok(env.cmd().args([
            "record",
            "--pipeline",
            pipeline,
            "--run",
            run,
            "--builder",
            builder,
            "--mount",
            "/root/.cache/pip",
            "--finished-at",
            "2026-03-01T10:00:00Z",
        ]));
    }
    ok(env.cmd().args([
        "mark-purged",
        "--builder",
        "ci-1",
        "--mount",
        "/root/.cache/pip",
        "--at",
        "2026-03-02T00:00:00Z",
    ]));
    // The pipeline name holds `/`: the unencoded name is read every way its slashes allow.
    let one = ok(env.cmd().args(["export", "--run", "acme/web/images/8-1"]));
    let kinds: Vec<String> = one
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            format!(
                "{} {}",
                v["type"].as_str().unwrap(),
                v["name"].as_str().or(v["run"].as_str()).unwrap()
            )
        })
        .collect();
    assert_eq!(
        kinds,
        ["pipeline acme/web/images", "builder ci-2", "run 8-1"],
        "{one}"
    );
    // It imports on its own into an empty store.
    let file = env.write("one.jsonl", &one);
    let other = env.path().join("other.db");
    ok(env.cmd().args([
        "--db",
        other.to_str().unwrap(),
        "import",
        file.to_str().unwrap(),
    ]));
    // Two runs, encoded or not, each once.
    let two = ok(env.cmd().args([
        "export",
        "--run",
        "acme%2Fweb%2Fimages/7-1",
        "--run",
        "api/1",
        "--run",
        "api/1",
    ]));
    assert_eq!(
        two.lines()
            .filter(|l| l.contains("\"type\":\"run\""))
            .count(),
        2,
        "{two}"
    );
    assert!(!two.contains("\"type\":\"purge\""), "{two}");

    let out = env.path().join("out.jsonl");
    assert_snapshot!(output(
        &env,
        env.cmd().args([
            "export",
            "--run",
            "acme/web/images/9-1",
            "-o",
            out.to_str().unwrap()
        ])
    ));
    assert!(!out.exists());
    assert!(!env.path().join("out.partial").exists());
}

/// The attack of a pull request's job that writes its own upload claiming `release`:
/// `import --trust-level untrusted` records its run, and the pipeline's first ceiling, at
/// `untrusted`, where a plain import takes the claim. An unknown level is refused.
#[test]
fn import_trust_level_caps_what_an_upload_claims() {
    let env = Env::new();
    let upload = env.write(
        "provenance.jsonl",
        &format!(
            concat!(
                r#"{{"v":1,"type":"pipeline","name":"acme/web/images","project":"attacker","trust_level":"release"}}"#,
                "\n",
                r#"{{"v":1,"type":"run","pipeline":"acme/web/images","run":"1002-1","step":"s","trust_level":"release","started_at":"2026-01-01T00:00:00Z","finished_at":"2026-01-01T00:01:00Z","exported":["r.io/web:cache@{a}"]}}"#,
                "\n",
                r#"{{"v":1,"type":"run","pipeline":"acme/web/images","run":"1003-1","step":"s","started_at":"2026-01-01T00:00:00Z","finished_at":"2026-01-01T00:01:00Z"}}"#,
                "\n"
            ),
            a = digest('a')
        ),
    );
    let levels = |db: &str, extra: &[&str]| {
        let db = env.path().join(db);
        ok(env
            .cmd()
            .arg("--db")
            .arg(&db)
            .arg("import")
            .args(extra)
            .arg(&upload));
        ok(env.cmd().arg("--db").arg(&db).arg("export"))
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                format!(
                    "{} {}{}",
                    v["run"].as_str().unwrap_or("pipeline"),
                    v["trust_level"].as_str().unwrap_or("-"),
                    v["project"]
                        .as_str()
                        .map(|p| format!(" {p}"))
                        .unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        levels("plain.db", &[]),
        [
            "pipeline release attacker",
            "1002-1 release",
            "1003-1 release"
        ]
    );
    assert_eq!(
        levels(
            "capped.db",
            &[
                "--trust-level",
                "untrusted",
                "--run",
                "acme%2Fweb%2Fimages/1002-1",
                "--run",
                "acme%2Fweb%2Fimages/1003-1"
            ]
        ),
        ["pipeline untrusted", "1002-1 untrusted", "1003-1 untrusted"]
    );
    let out = output(
        &env,
        env.cmd()
            .args([
                "import",
                "--trust-level",
                "trusted",
                "--run",
                "acme%2Fweb%2Fimages/1002-1",
            ])
            .arg(&upload),
    );
    assert!(out.starts_with("exit: 2\n"), "{out}");
    assert!(out.contains("`trusted`"), "{out}");
    assert!(!env.db().exists());
}

/// A command `wrap` cannot start exits as a shell would: 127 when it is not found, 126 when it
/// cannot be run; one line names it.
#[test]
fn wrap_exits_as_a_shell_when_its_command_cannot_start() {
    let env = Env::new();
    let not_executable = env.write("bin/docker", "#!/bin/sh\n");
    for (program, status) in [
        (env.path().join("bin/missing"), "127"),
        (not_executable, "126"),
    ] {
        let out = output(
            &env,
            env.cmd()
                .args([
                    "wrap",
                    "--pipeline",
                    "p",
                    "--run",
                    "1",
                    "--builder",
                    "b",
                    "--",
                ])
                .arg(&program)
                .args(["build", "."]),
        );
        assert!(out.starts_with(&format!("exit: {status}\n")), "{out}");
        let errors: Vec<&str> = out.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "{out}");
        assert!(errors[0].contains("cannot run"), "{out}");
    }
}

/// A usage error clap finds is one line (what is wrong, and clap's tip), exit 2, and no
/// escape sequence in a value reaches the terminal.
#[test]
fn usage_errors_are_one_line() {
    let env = Env::new();
    for (args, says) in [
        (&["ls", "bogus"][..], "invalid value 'bogus'"),
        (
            &["ls", "runs", "--limit", "-1"][..],
            "unexpected argument '-1'",
        ),
        (
            &["incident", "accept", "1", "2"][..],
            "required arguments were not provided: --reason",
        ),
        // clap drops escape sequences from what it shows.
        (
            &["ls", "runs", "--limit", "x\u{1b}[31m"][..],
            "invalid value 'x",
        ),
    ] {
        let out = output(&env, env.cmd().args(args));
        assert!(out.starts_with("exit: 2\n"), "{out}");
        let stderr = out.split("--- stderr\n").nth(1).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{out}");
        assert!(
            stderr.starts_with("error: ") && stderr.contains(says),
            "{out}"
        );
        assert!(!stderr.contains('\u{1b}'), "{out}");
    }
}

/// A hook records a run once it ran: `record` refuses a finish in the future beyond the
/// allowed clock skew (it would hide the run from every trace until then), and writes nothing.
#[test]
fn record_refuses_a_run_that_finishes_in_the_future() {
    let env = Env::new();
    let out = output(
        &env,
        env.cmd().args([
            "record",
            "--pipeline",
            "forks-pr",
            "--run",
            "1",
            "--builder",
            "ci-1",
            "--mount",
            "/root/.cache/pip",
            "--started-at",
            "2030-06-01T00:00:00Z",
            "--finished-at",
            "2030-06-01T00:01:00Z",
        ]),
    );
    assert!(out.starts_with("exit: 2\n"), "{out}");
    assert!(
        out.contains("--finished-at `2030-06-01T00:01:00Z` is in the future"),
        "{out}"
    );
    assert!(
        !env.path().join("cachewarden.db").exists()
            || !ok(env.cmd().arg("export")).contains("forks-pr")
    );
}

/// A 404 that is not the registry's own (a front's page, even with the registry's header) does
/// not make `wrap` take a base image's tag for absent: the input stays unchecked, and while an
/// incident holds anything the build is refused.
#[test]
fn wrap_takes_no_front_404_for_an_absent_tag() {
    let Some(registry) = crate::harness::registry() else {
        return;
    };
    let proxy = crate::harness::proxy::FaultProxy::start(&registry.host());
    let env = Env::new();
    let host = registry.host();
    let mut pusher = crate::harness::oci::Pusher::new(&registry);
    let image = pusher.image("team/app", Some("1"), "poisoned base", false);
    let config = crate::build::ConfigBuilder::registry(&host)
        .endpoint(&proxy.url())
        .write(&env);
    ok(env.cmd_with(&config).args([
        "record",
        "--pipeline",
        "evil",
        "--run",
        "1",
        "--image",
        &format!("{host}/team/app:1@{}", image.digest),
    ]));
    ok(env
        .cmd_with(&config)
        .args(["incident", "open", "--pipeline", "evil"]));
    let docker = env.fake_docker("exit 0\n");
    env.write("ctx/Dockerfile", &format!("FROM {host}/team/app:1\n"));
    let api = ("Docker-Distribution-API-Version", "registry/2.0");
    for method in ["HEAD", "GET", "GET"] {
        proxy.inject(
            crate::harness::proxy::Fault::status(404)
                .on(method)
                .header(api.0, api.1),
        );
    }
    let mut cmd = env.cmd_with(&config);
    cmd.args(["wrap", "--pipeline", "victim", "--run", "1", "--"])
        .arg(&docker)
        .arg("build")
        .arg(env.path().join("ctx"));
    let out = output(&env, &mut cmd);
    assert!(
        out.starts_with("exit: 5\n") && out.contains("not taken as proof"),
        "{out}"
    );
}
