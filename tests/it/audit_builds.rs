//! `audit builds` on real builds: the per-step cache hits `wrap` records from the progress
//! output, and the findings they give.

use std::process::Command;

use crate::common::{Env, dockerd_env, ok, output};
use crate::harness::{self, Dockerd, Engine};
use crate::on_both_engines;

/// `cachewarden wrap` of a build aimed at the test daemon, naming no progress mode.
fn wrap(
    env: &Env,
    dockerd: &Dockerd,
    pipeline: &str,
    run: &str,
    trust: &str,
    args: &[&str],
) -> Command {
    let mut cmd = env.cmd();
    cmd.env("DOCKER_HOST", dockerd.host())
        .env("DOCKER_CONFIG", dockerd.config_dir())
        .env("DOCKER_BUILDKIT", "1")
        .env_remove("BUILDKIT_PROGRESS")
        .args([
            "wrap",
            "--pipeline",
            pipeline,
            "--run",
            run,
            "--trust-level",
            trust,
            "--",
        ])
        .arg(harness::DOCKER)
        .args(args);
    cmd
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// The poisoning signature with no mount or ref between the runs: an untrusted pipeline
/// builds a step, a release pipeline's build of the same step is served from the record the
/// untrusted build created, and `audit builds` names both runs (CW006), exits 1, seeds an
/// incident from the finding, and writes hit rates; a clean trusted rebuild then raises
/// nothing new.
fn a_release_step_served_from_untrusted_work_is_found(engine: Engine) {
    let Some((dockerd, env)) = dockerd_env(engine) else {
        return;
    };
    let poisoned =
        "FROM base:1\nRUN echo poisoned > /a\nRUN --mount=type=cache,target=/c echo b > /b\n";
    let fork = env.write("fork/Dockerfile", poisoned);
    let release = env.write("release/Dockerfile", poisoned);
    let dir = |p: &std::path::Path| p.parent().unwrap().to_str().unwrap().to_owned();
    ok(&mut wrap(
        &env,
        &dockerd,
        "forks",
        "1",
        "untrusted",
        &["build", "--network=none", &dir(&fork)],
    ));
    let out = wrap(
        &env,
        &dockerd,
        "release",
        "1",
        "release",
        &["build", "--network=none", &dir(&release)],
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let passed = String::from_utf8_lossy(&out.stderr);
    assert!(
        passed.contains("RUN echo poisoned > /a") && passed.contains(" CACHED"),
        "the build's own progress reaches the user: {passed}"
    );

    let metrics = env.path().join("builds.prom");
    let mut audit = env.cmd();
    audit
        .args(["audit", "builds", "--format", "json", "--metrics-file"])
        .arg(&metrics);
    let out = audit.output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc = json(&String::from_utf8_lossy(&out.stdout));
    crate::schemas::assert_valid("audit-builds.schema.json", &doc);
    let findings = doc["findings"].as_array().unwrap();
    let poisoned_step = |f: &&serde_json::Value| {
        f["code"] == "CW006"
            && f["step"]
                .as_str()
                .unwrap()
                .ends_with("RUN echo poisoned > /a")
    };
    if engine == Engine::Docker20 {
        // BuildKit v0.8 touches the record of every cached step; v0.13 only that of the last
        // one the export needs, so an earlier step's hit is unattributed there.
        assert!(findings.iter().any(|f| poisoned_step(&f)), "{doc:#}");
    }
    let cw006 = findings
        .iter()
        .find(|f| f["code"] == "CW006")
        .unwrap_or_else(|| panic!("no CW006: {doc:#}"));
    assert_eq!(cw006["pipeline"], "release", "{doc:#}");
    assert_eq!(
        cw006["detail"]["creator"], "forks/1/fork%2FDockerfile",
        "{doc:#}"
    );
    assert_eq!(
        cw006["detail"]["run"], "release/1/release%2FDockerfile",
        "{doc:#}"
    );
    assert_eq!(
        cw006["detail"]["creator_trust_level"], "untrusted",
        "{doc:#}"
    );
    assert!(
        findings.iter().all(|f| f["code"] != "CW007"),
        "every record that served a hit was created by a recorded run: {doc:#}"
    );
    let prom = std::fs::read_to_string(&metrics).unwrap();
    assert!(
        prom.lines().any(|l| l
            .starts_with("cachewarden_build_step_hit_ratio{pipeline=\"release\"")
            && !l.ends_with(" 0")),
        "{prom}"
    );
    assert!(
        !prom.contains("cachewarden_audit_builds_findings{code=\"CW006\"} 0"),
        "{prom}"
    );

    // SARIF: the build rules, and the finding under its stable code and fingerprint.
    let sarif = env
        .cmd()
        .args(["audit", "builds", "--all", "--format", "sarif"])
        .output()
        .unwrap();
    assert_eq!(sarif.status.code(), Some(1));
    let sarif = json(&String::from_utf8_lossy(&sarif.stdout));
    let rules: Vec<&str> = sarif["runs"][0]["tool"]["driver"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(rules, ["CW005", "CW006", "CW007", "CW008"], "{sarif:#}");
    assert!(
        sarif["runs"][0]["results"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["ruleId"] == "CW006" && r["properties"]["findingId"] == cw006["id"]),
        "{sarif:#}"
    );

    // An incident from the finding seeds the untrusted run, and reaches the release run.
    let id = cw006["id"].to_string();
    let opened = json(&ok(env.cmd().args([
        "incident",
        "open",
        "--from-audit",
        &id,
        "--format",
        "json",
    ])));
    let incident = opened["incident"].to_string();
    let report = ok(env
        .cmd()
        .args(["incident", "report", &incident, "--format", "json"]));
    assert!(
        report.contains("release/1/release%2FDockerfile"),
        "{report}"
    );

    // A trusted pipeline rebuilding its own clean step raises nothing new.
    let clean = env.write("clean/Dockerfile", "FROM base:1\nRUN echo clean > /clean\n");
    for run in ["2", "3"] {
        ok(&mut wrap(
            &env,
            &dockerd,
            "release",
            run,
            "release",
            &["build", "--network=none", &dir(&clean)],
        ));
    }
    let again = output(&env, env.cmd().args(["audit", "builds"]));
    assert!(again.contains("no new findings"), "{again}");
    let all = env
        .cmd()
        .args([
            "audit", "builds", "--all", "--format", "json", "--since", "1h",
        ])
        .output()
        .unwrap();
    assert_eq!(
        all.status.code(),
        Some(1),
        "the earlier findings are current"
    );
    let all = json(&String::from_utf8_lossy(&all.stdout));
    assert!(
        all["findings"].as_array().unwrap().iter().all(|f| f["code"] != "CW006"
            || f["detail"]["run"] == "release/1/release%2FDockerfile"),
        "{all:#}"
    );
}

on_both_engines!(a_release_step_served_from_untrusted_work_is_found);

/// A build no hook recorded leaves a record a release build (buildx, read from its raw JSON
/// progress) is then served from: the hit is CW007, and once `collect` has read the builder's history, the build itself is CW005
/// (Docker 26: Docker 20.10 keeps no build history).
#[test]
fn an_unrecorded_build_and_the_hit_on_its_record_are_found() {
    if !harness::require_docker26() {
        return;
    }
    let Some((dockerd, env)) = dockerd_env(Engine::Docker26) else {
        return;
    };
    let rogue = env.write("rogue/Dockerfile", "FROM base:1\nRUN echo rogue > /r\n");
    let release = env.write("release/Dockerfile", "FROM base:1\nRUN echo rogue > /r\n");
    dockerd.run([
        "buildx",
        "build",
        "--network=none",
        rogue.parent().unwrap().to_str().unwrap(),
    ]);
    ok(&mut wrap(
        &env,
        &dockerd,
        "release",
        "1",
        "release",
        // buildx: its progress is read as raw JSON.
        &[
            "buildx",
            "build",
            "--network=none",
            release.parent().unwrap().to_str().unwrap(),
        ],
    ));
    let export = ok(env.cmd().arg("export"));
    let builder = export
        .lines()
        .map(json)
        .find(|l| l["type"] == "builder")
        .unwrap()["name"]
        .as_str()
        .unwrap()
        .to_owned();
    ok(env.cmd().args(["collect", "--builder", &builder]));
    // An audit whose output cannot be written reports nothing, so it leaves its findings new.
    let failed = output(
        &env,
        env.cmd().args([
            "audit",
            "builds",
            "--metrics-file",
            "/nonexistent/cachewarden/builds.prom",
        ]),
    );
    assert!(failed.starts_with("exit: 2\n"), "{failed}");
    let out = env
        .cmd()
        .args(["audit", "builds", "--format", "json"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc = json(&String::from_utf8_lossy(&out.stdout));
    crate::schemas::assert_valid("audit-builds.schema.json", &doc);
    let findings = doc["findings"].as_array().unwrap();
    let unrecorded = format!("unrecorded@{builder}");
    assert!(
        findings
            .iter()
            .any(|f| f["code"] == "CW005" && f["pipeline"] == unrecorded.as_str()),
        "{doc:#}"
    );
    let cw007 = findings
        .iter()
        .find(|f| f["code"] == "CW007")
        .unwrap_or_else(|| panic!("no CW007: {doc:#}"));
    assert_eq!(cw007["pipeline"], "release", "{doc:#}");
    assert!(
        cw007["step"]
            .as_str()
            .unwrap()
            .ends_with("RUN echo rogue > /r"),
        "{doc:#}"
    );
    // An incident from the hit seeds the run that was served.
    let opened = json(&ok(env.cmd().args([
        "incident",
        "open",
        "--from-audit",
        &cw007["id"].to_string(),
        "--format",
        "json",
    ])));
    assert!(opened["incident"].is_i64(), "{opened}");
    // CW005 seeds nothing: it is refused in one line.
    let cw005 = findings.iter().find(|f| f["code"] == "CW005").unwrap();
    let refused = output(
        &env,
        env.cmd()
            .args(["incident", "open", "--from-audit", &cw005["id"].to_string()]),
    );
    assert!(refused.contains("only CW006 and CW007"), "{refused}");
}

/// On Docker 26, whose `docker build` runs through buildx (plain progress there has no step
/// digests), `wrap` asks the client for raw JSON progress by itself, shows it to the user as
/// plain-style text, and records every step with its digest, the rebuild's from cache; the
/// hits whose serving record cannot be told are listed by `audit builds` (JSON, text, metrics).
#[test]
fn docker_build_through_buildx_records_step_digests() {
    let Some((dockerd, env)) = dockerd_env(Engine::Docker26) else {
        return;
    };
    let file = env.write(
        "app/Dockerfile",
        "FROM base:1\nRUN echo d > /d\nCOPY Dockerfile /f\n",
    );
    let ctx = file.parent().unwrap().to_str().unwrap().to_owned();
    let mut shown = Vec::new();
    for run in ["1", "2"] {
        let mut cmd = env.cmd();
        cmd.env("DOCKER_HOST", dockerd.host())
            .env("DOCKER_CONFIG", dockerd.config_dir())
            .env_remove("DOCKER_BUILDKIT")
            .env_remove("BUILDKIT_PROGRESS")
            .args(["wrap", "--pipeline", "app", "--run", run, "--"])
            .arg(harness::DOCKER26)
            .args(["build", "--network=none", &ctx]);
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        shown.push(stderr);
    }
    for stderr in &shown {
        assert!(
            !stderr.contains("\"vertexes\"") && stderr.contains("] RUN echo d > /d"),
            "the raw JSON reaches the user as text: {stderr}"
        );
    }
    assert!(
        shown[1]
            .lines()
            .any(|l| l.starts_with('#') && l.ends_with(" CACHED")),
        "{}",
        shown[1]
    );
    let conn = rusqlite::Connection::open(env.db()).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT r.run_key, s.name, s.digest, s.cached, s.source FROM step_events s
             JOIN runs r ON r.id = s.run_id ORDER BY r.run_key, s.id",
        )
        .unwrap();
    let rows: Vec<(String, String, String, bool, String)> = stmt
        .query_map([], |row| {
            Ok((
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
                row.get(4)?,
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows.len(), 4, "{rows:?}");
    for (run, name, digest, cached, source) in &rows {
        assert_eq!(source, "rawjson", "{rows:?}");
        assert!(
            digest.starts_with("sha256:") && digest.len() == 71,
            "{name} of run {run} has its digest: {rows:?}"
        );
        assert_eq!(*cached, run == "2", "{rows:?}");
    }
    // The RUN step's vertex is the same in both builds (a COPY's is not: its source is the
    // session's local context).
    let run_digests: Vec<&str> = rows
        .iter()
        .filter(|r| r.1.ends_with("RUN echo d > /d"))
        .map(|r| r.2.as_str())
        .collect();
    assert_eq!(run_digests.len(), 2, "{rows:?}");
    assert_eq!(run_digests[0], run_digests[1], "{rows:?}");

    // The hits whose serving record could not be told (BuildKit v0.13 touches only the record
    // of the last cached step an export needs) are shown, each with its digest.
    let mut stmt = conn
        .prepare(
            "SELECT s.name, s.digest FROM step_events s
             WHERE s.cached AND s.record_id IS NULL ORDER BY s.name",
        )
        .unwrap();
    let expected: Vec<(String, String)> = stmt
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(
        expected
            .iter()
            .any(|(name, _)| name.ends_with("RUN echo d > /d")),
        "{expected:?}"
    );
    let metrics = env.path().join("builds.prom");
    let out = env
        .cmd()
        .args(["audit", "builds", "--format", "json", "--metrics-file"])
        .arg(&metrics)
        .output()
        .unwrap();
    let doc = json(&String::from_utf8_lossy(&out.stdout));
    crate::schemas::assert_valid("audit-builds.schema.json", &doc);
    let mut listed: Vec<(String, String)> = doc["unattributed_hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            assert_eq!(h["run"], "app/2/app%2FDockerfile", "{doc:#}");
            (
                h["step"].as_str().unwrap().to_owned(),
                h["step_digest"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    listed.sort();
    assert_eq!(listed, expected, "{doc:#}");
    assert_eq!(
        doc["summary"]["unattributed_hits"],
        expected.len(),
        "{doc:#}"
    );
    assert_eq!(
        doc["hit_rates"][0]["unattributed"],
        expected.len(),
        "{doc:#}"
    );
    let prom = std::fs::read_to_string(&metrics).unwrap();
    let series = format!(
        "cachewarden_build_step_unattributed_hits{{pipeline=\"app\",builder=\"{}\"}} {}",
        doc["hit_rates"][0]["builder"].as_str().unwrap(),
        expected.len()
    );
    assert!(prom.lines().any(|l| l == series), "{series}\n{prom}");
    let text = output(&env, env.cmd().args(["audit", "builds", "--all"]));
    assert!(
        text.contains("unattributed cache hits")
            && text.contains(&format!(
                "pipeline app on builder {}: {} of 2 hits",
                doc["hit_rates"][0]["builder"].as_str().unwrap(),
                expected.len()
            ))
            && text.contains(&match expected.len() {
                1 => "1 cache hit unattributed".to_owned(),
                n => format!("{n} cache hits unattributed"),
            }),
        "{text}"
    );
}

/// Builds `collect` read from the builder's history count in the hit rates with BuildKit's own
/// step counts: a recorded build whose progress was not read (`--progress=quiet`) and an
/// unrecorded one each count their history, a build with step events counts only those
/// (Docker 26: Docker 20.10 keeps no build history).
#[test]
fn build_history_counts_in_hit_rates_once() {
    if !harness::require_docker26() {
        return;
    }
    let Some((dockerd, env)) = dockerd_env(Engine::Docker26) else {
        return;
    };
    let file = env.write("app/Dockerfile", "FROM base:1\nRUN echo h > /h\n");
    let ctx = file.parent().unwrap().to_str().unwrap().to_owned();
    let rogue = env.write("rogue/Dockerfile", "FROM base:1\nRUN echo r > /r\n");
    ok(&mut wrap(
        &env,
        &dockerd,
        "app",
        "1",
        "internal",
        &["buildx", "build", "--network=none", &ctx],
    ));
    ok(&mut wrap(
        &env,
        &dockerd,
        "app",
        "2",
        "internal",
        &[
            "buildx",
            "build",
            "--progress=quiet",
            "--network=none",
            &ctx,
        ],
    ));
    dockerd.run([
        "buildx",
        "build",
        "--network=none",
        rogue.parent().unwrap().to_str().unwrap(),
    ]);
    let export = ok(env.cmd().arg("export"));
    let builder = export
        .lines()
        .map(json)
        .find(|l| l["type"] == "builder")
        .unwrap()["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let collected = json(&ok(env.cmd().args([
        "collect",
        "--builder",
        &builder,
        "--format",
        "json",
    ])));
    let builds = collected["builds"].as_array().unwrap();
    let counts = |run: &str| {
        let b = builds
            .iter()
            .find(|b| b["run"].as_str().unwrap().starts_with(run))
            .unwrap_or_else(|| panic!("no build of {run}: {collected:#}"));
        (
            b["cached_steps"].as_u64().unwrap(),
            b["total_steps"].as_u64().unwrap(),
        )
    };
    let (app1_cached, app1_total) = counts("app/1/");
    let (app2_cached, app2_total) = counts("app/2/");
    let (rogue_cached, rogue_total) = counts("unrecorded@");
    assert!(
        app1_total > 0 && app2_total > 0 && rogue_total > 0,
        "{collected:#}"
    );
    assert!(
        app2_cached > 0,
        "the second build is served from cache: {collected:#}"
    );

    // The unrecorded build is a CW005: exit 1.
    let out = env
        .cmd()
        .args(["audit", "builds", "--format", "json"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc = json(&String::from_utf8_lossy(&out.stdout));
    crate::schemas::assert_valid("audit-builds.schema.json", &doc);
    let rate = |pipeline: &str| {
        doc["hit_rates"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["pipeline"].as_str().unwrap().starts_with(pipeline))
            .unwrap_or_else(|| panic!("no hit rate of {pipeline}: {doc:#}"))
            .clone()
    };
    // Run 1 counts its one step event (it ran), not its history; run 2 its history.
    let app = rate("app");
    assert_eq!(app["history_builds"], 1, "{doc:#}");
    assert_eq!(app["steps"], 1 + app2_total, "{app1_total} {doc:#}");
    assert_eq!(app["cached"], app2_cached, "{app1_cached} {doc:#}");
    let unrecorded = rate("unrecorded@");
    assert_eq!(unrecorded["history_builds"], 1, "{doc:#}");
    assert_eq!(unrecorded["steps"], rogue_total, "{doc:#}");
    assert_eq!(unrecorded["cached"], rogue_cached, "{doc:#}");
}

/// `audit builds --help` documents its flags.
#[test]
fn audit_builds_help() {
    let env = Env::new();
    insta::assert_snapshot!(output(&env, env.cmd().args(["audit", "builds", "--help"])));
}

/// A step that ran in every build so far, then comes from cache, has moved its hit rate
/// beyond `[audit] hit_rate_change` against its own history: CW008 names the pipeline and
/// the step.
#[test]
fn a_moved_hit_rate_is_found() {
    let Some((dockerd, env)) = dockerd_env(Engine::Docker20) else {
        return;
    };
    // The step's input changes in the first three builds, then stays: the fourth is served
    // from cache. (Docker 20.10 names a step with its build args expanded: a changed input
    // file keeps the name.)
    let file = env.write(
        "app/Dockerfile",
        "FROM base:1\nCOPY n /n\nRUN cat /n > /m\n",
    );
    let ctx = file.parent().unwrap().to_str().unwrap().to_owned();
    for (run, n) in [("1", "1"), ("2", "2"), ("3", "3"), ("4", "3")] {
        env.write("app/n", n);
        ok(&mut wrap(
            &env,
            &dockerd,
            "app",
            run,
            "internal",
            &["build", "--network=none", &ctx],
        ));
    }
    let out = env
        .cmd()
        .args(["audit", "builds", "--format", "json"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc = json(&String::from_utf8_lossy(&out.stdout));
    let moved = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == "CW008" && f["step"] == "RUN cat /n > /m")
        .unwrap_or_else(|| panic!("no CW008 for the RUN step: {doc:#}"));
    assert_eq!(moved["pipeline"], "app", "{doc:#}");
    assert_eq!(moved["detail"]["hit_rate_before"], "0.000", "{doc:#}");
    assert_eq!(moved["detail"]["hit_rate"], "1.000", "{doc:#}");
    assert_eq!(moved["detail"]["run"], "app/4/app%2FDockerfile", "{doc:#}");
}

/// `wrap` asks for a progress mode it can read only when none is named (plain for `docker
/// build`, rawjson for buildx; `--progress` or `BUILDKIT_PROGRESS` win), and passes the build's
/// output through byte for byte, including text that is not valid UTF-8.
#[test]
fn wrap_names_a_readable_progress_mode_and_passes_output_through() {
    let env = Env::new();
    let bin = env.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let args_file = env.path().join("args");
    let progress = "#5 [1/2] RUN echo a\n#5 sha256:f26026734877c2ef5bbe2ba80f7d7f12661dcda15fbd56834c449d2e59b2e9c3\n#5 CACHED\n\n#6 [2/2] RUN echo b\n#6 0.1 \\377\\033[2J\n#6 DONE 0.1s\n";
    // The fake client says the version `FAKE_DOCKER_VERSION` names, none by default.
    let script = format!(
        "#!/bin/sh\nif [ \"$1\" = --version ]; then echo \"$FAKE_DOCKER_VERSION\"; exit 0; fi\nprintf '%s\\n' \"$@\" > {}\nprintf '{progress}' >&2\n",
        args_file.display()
    );
    let docker = bin.join("docker");
    std::fs::write(&docker, script).unwrap();
    std::fs::set_permissions(&docker, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let ctx = env.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    let run = |run: &str, args: &[&str], progress_env: Option<&str>| {
        let mut cmd = env.cmd();
        cmd.env(
            "DOCKER_HOST",
            format!("unix://{}/none.sock", env.path().display()),
        )
        .env_remove("BUILDKIT_PROGRESS")
        .args(["wrap", "--pipeline", "p", "--run", run, "--"])
        .arg(&docker)
        .args(args)
        .arg(&ctx);
        if let Some(mode) = progress_env {
            cmd.env("BUILDKIT_PROGRESS", mode);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let args = std::fs::read_to_string(&args_file).unwrap();
        (args, out.stderr)
    };
    let (args, stderr) = run("1", &["build"], None);
    assert!(args.lines().any(|a| a == "--progress=plain"), "{args}");
    // What the fake client wrote, with printf's escapes as the bytes they are.
    let (head, tail) = progress.split_once("\\377\\033").unwrap();
    let expected = [head.as_bytes(), b"\xff\x1b", tail.as_bytes()].concat();
    assert!(
        stderr
            .windows(expected.len())
            .any(|w| w == expected.as_slice()),
        "the build's bytes reach stderr unchanged: {}",
        String::from_utf8_lossy(&stderr)
    );
    let (args, _) = run("2", &["buildx", "build"], None);
    assert!(args.lines().any(|a| a == "--progress=rawjson"), "{args}");
    let (args, _) = run("3", &["build", "--progress=tty"], None);
    assert!(!args.contains("--progress=plain"), "{args}");
    let (args, _) = run("4", &["build"], Some("plain"));
    assert!(!args.contains("--progress="), "{args}");
    // A Docker 23+ client runs `docker build` through buildx: raw JSON is asked for.
    let mut cmd = env.cmd();
    cmd.env(
        "FAKE_DOCKER_VERSION",
        "Docker version 26.1.5, build a72d7cd",
    )
    .env(
        "DOCKER_HOST",
        format!("unix://{}/none.sock", env.path().display()),
    )
    .env("DOCKER_CONFIG", env.path())
    .env_remove("BUILDKIT_PROGRESS")
    .args(["wrap", "--pipeline", "p", "--run", "5", "--"])
    .arg(&docker)
    .arg("build")
    .arg(&ctx);
    ok(&mut cmd);
    let args = std::fs::read_to_string(&args_file).unwrap();
    assert!(args.lines().any(|a| a == "--progress=rawjson"), "{args}");
    // Runs 1 and 4 were read as plain: two steps each, one of them cached.
    let doc = json(&ok(env.cmd().args(["audit", "builds", "--format", "json"])));
    assert_eq!(doc["summary"]["steps"], 4, "{doc:#}");
    assert_eq!(doc["hit_rates"][0]["cached"], 2, "{doc:#}");
}

/// A fleet runner's per-step cache hits reach the collector: `wrap --server` sends the
/// steps it read from a real build's progress output with the run, and the collector's
/// store holds them, the rebuild's step served from cache; the runner's store holds none.
#[test]
fn wrap_sends_its_steps_to_the_collector() {
    use crate::harness::oidc::{self, Collector, Issuer, Key};
    let Some((dockerd, runner)) = dockerd_env(Engine::Docker20) else {
        return;
    };
    let server = Env::new();
    let key = Key::rsa(server.path(), "rsa-1");
    let issuer = Issuer::start(&[&key]);
    let config = server.write("collector.toml", &oidc::config(&issuer, "github", ""));
    let mut serve = server.cmd();
    serve.arg("--config").arg(&config);
    let collector = Collector::start(serve, 0);
    let file = runner.write("app/Dockerfile", "FROM base:1\nRUN echo hi > /m\n");
    let ctx = file.parent().unwrap().to_str().unwrap().to_owned();
    for run in ["7", "8"] {
        let token = key.sign(&oidc::github_claims(&issuer.url, "acme/web", "build", run));
        let mut cmd = runner.cmd();
        cmd.env("DOCKER_HOST", dockerd.host())
            .env("DOCKER_CONFIG", dockerd.config_dir())
            .env("DOCKER_BUILDKIT", "1")
            .env("CACHEWARDEN_TOKEN", &token)
            .env_remove("BUILDKIT_PROGRESS")
            .args(["wrap", "--server", &collector.url(), "--"])
            .arg(harness::DOCKER)
            .args(["build", "--network=none", &ctx]);
        ok(&mut cmd);
    }
    let conn = rusqlite::Connection::open(server.db()).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT r.run_key, s.cached, s.source FROM step_events s JOIN runs r ON r.id = s.run_id
             WHERE s.name LIKE '%RUN echo hi > /m' ORDER BY r.run_key",
        )
        .unwrap();
    let rows: Vec<(String, bool, String)> = stmt
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        rows,
        [
            ("7-1".to_owned(), false, "plain".to_owned()),
            ("8-1".to_owned(), true, "plain".to_owned()),
        ]
    );
    assert!(!runner.db().exists(), "the runner wrote a local store");
}
