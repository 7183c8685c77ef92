//! `record --resolve` against a real registry, and overlapping builds seen by `wrap`.

use crate::build::ConfigBuilder;
use crate::common::{Env, dockerd_env, ok, output};
use crate::harness;
use crate::harness::Engine;
use crate::harness::oci::Pusher;
use crate::on_both_engines;

/// Tags given to `record --resolve` are pinned to the digests the registry serves now; an
/// unknown tag is an error naming the reference and nothing is written.
#[test]
fn resolve_pins_tags_to_digests() {
    let Some(registry) = harness::registry() else {
        return;
    };
    let env = Env::new();
    let mut pusher = Pusher::new(&registry);
    let cache = pusher.cache_manifest("team/app", Some("cache"), "one");
    let base = pusher.image("team/base", Some("1"), "base", false);
    let host = registry.host();
    let out = ok(env.cmd().args([
        "record",
        "--pipeline",
        "p",
        "--run",
        "1",
        "--builder",
        "b",
        "--resolve",
        "--format",
        "json",
        "--cache-from",
        &format!("{host}/team/app:cache"),
        "--base-image",
        &format!("{host}/team/base:1"),
    ]));
    assert!(
        out.contains(&format!("{host}/team/app:cache@{}", cache.digest)),
        "{out}"
    );
    assert!(
        out.contains(&format!("{host}/team/base:1@{}", base.digest)),
        "{out}"
    );
    let bad = output(
        &env,
        env.cmd().args([
            "record",
            "--pipeline",
            "p",
            "--run",
            "2",
            "--resolve",
            "--cache-from",
            &format!("{host}/team/app:nope"),
        ]),
    );
    assert!(
        bad.starts_with("exit: 4\n") && bad.contains(&format!("{host}/team/app:nope")),
        "{bad}"
    );
    assert!(!ok(env.cmd().arg("export")).contains("\"run\":\"2\""));
}

/// Two builds at once on one builder: both are recorded with record-level evidence, and both
/// say their snapshots overlapped.
fn overlapping_builds_are_flagged(engine: Engine) {
    let Some((dockerd, env)) = dockerd_env(engine) else {
        return;
    };
    let config = ConfigBuilder::new()
        .builder("ci-1", &dockerd.host())
        .write(&env);
    let mut children = Vec::new();
    for i in 0..2 {
        let ctx = env.write(
            &format!("c{i}/Dockerfile"),
            &format!("FROM base:1\nRUN sleep 2 && echo {i} > /out\n"),
        );
        let child = env
            .cmd()
            .env("CACHEWARDEN_CONFIG", &config)
            .env("CACHEWARDEN_BUILDER", "ci-1")
            .env("DOCKER_HOST", dockerd.host())
            .env("DOCKER_CONFIG", dockerd.config_dir())
            .env("DOCKER_BUILDKIT", "1")
            .args(["wrap", "--pipeline", &format!("p{i}"), "--run", "1", "--"])
            .arg(harness::DOCKER)
            .args([
                "build",
                "--network=none",
                ctx.parent().unwrap().to_str().unwrap(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        children.push(child);
    }
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let export = ok(env.cmd().arg("export"));
    let runs: Vec<serde_json::Value> = export
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["type"] == "run")
        .collect();
    assert_eq!(runs.len(), 2);
    for run in &runs {
        assert_eq!(run["builder"], "ci-1");
        assert_eq!(run["records"]["overlapped"], true, "{run}");
    }
}

on_both_engines!(overlapping_builds_are_flagged);

/// An empty or blank `--pipeline`, `--run`, `--builder` or `--step` is refused by `record`
/// (exit 2, naming the flag) with nothing stored, as `import` refuses such a line; `wrap` still
/// runs the build and passes on its status, warning that it was not recorded.
#[test]
fn empty_names_are_refused_and_never_fail_a_build() {
    let env = Env::new();
    for (flag, says) in [
        ("--pipeline", "must not be empty"),
        ("--run", "must be non-empty and contain no `/`"),
        ("--builder", "must not be empty"),
        ("--step", "must not be empty"),
    ] {
        for value in ["", " \t"] {
            let mut cmd = env.cmd();
            cmd.arg("record");
            for (name, default) in [("--pipeline", "p"), ("--run", "1"), ("--builder", "b")] {
                if name != flag {
                    cmd.args([name, default]);
                }
            }
            let out = output(&env, cmd.args([flag, value]));
            let shown = value.replace('\t', "\\t");
            let error = format!("error: invalid {flag} `{shown}`: {says}");
            assert_eq!(
                out.lines().take(4).collect::<Vec<_>>(),
                ["exit: 2", "--- stdout", "--- stderr", error.as_str()],
                "{out}"
            );
        }
    }
    assert!(!env.db().exists());
    let bin = env.path().join("bin");
    env.write("bin/docker", "#!/bin/sh\necho built\nexit 3\n");
    std::fs::set_permissions(
        bin.join("docker"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    for flag in ["--builder", "--step"] {
        let out = env
            .cmd()
            .env("PATH", &path)
            .args(["wrap", "--pipeline", "p", "--run", "2", flag, ""])
            .args(["--", "docker", "build", "."])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{stderr}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "built\n");
        assert!(
            stderr.contains(&format!(
                "the build will not be recorded: invalid {flag} ``: must not be empty"
            )),
            "{stderr}"
        );
    }
    assert!(!env.db().exists());
}
