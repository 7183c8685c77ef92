//! `record --dockerfile`: the automatic platform arguments, `--platform`, and what cannot be
//! resolved, through the real executable.

use insta::assert_snapshot;

use crate::common::{Env, ok, output};

/// The mount ids a `record --format json` run line holds.
fn mount_ids(json: &str) -> Vec<String> {
    let line: serde_json::Value = serde_json::from_str(json.trim()).expect("one JSON line");
    line["mounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

/// `record` of run `run` of pipeline `p` on builder `ci-1` with `dockerfile`, as JSON.
fn record(env: &Env, run: &str, dockerfile: &str, extra: &[&str]) -> std::process::Command {
    let path = env.write("Dockerfile", dockerfile);
    let mut cmd = env.cmd();
    cmd.args([
        "record",
        "--pipeline",
        "p",
        "--run",
        run,
        "--builder",
        "ci-1",
    ])
    .args(["--finished-at", "2026-03-01T10:00:00Z"])
    .arg("--dockerfile")
    .arg(path)
    .args(["--format", "json"])
    .args(extra);
    cmd
}

/// BuildKit's own Dockerfile ends with `FROM buildkit-$TARGETOS${BUILDKIT_DEBUG:+-debug}`:
/// with no build args its cache mounts are recorded, and a trace from one reaches the run.
#[test]
fn buildkit_dockerfile_without_build_args() {
    let env = Env::new();
    let text = include_str!("../fixtures/dockerfiles/buildkit/Dockerfile");
    let out = record(&env, "1", text, &[]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("is not known"), "{stderr}");
    let ids = mount_ids(&String::from_utf8_lossy(&out.stdout));
    for id in ["/root/.cache", "/go/pkg/mod"] {
        assert!(ids.iter().any(|i| i == id), "{id} missing from {ids:?}");
    }
    let trace = ok(env.cmd().args(["trace", "--mount", "ci-1:/go/pkg/mod"]));
    assert!(trace.contains("p/1"), "{trace}");
}

const PER_ARCH: &str = "FROM alpine AS base-amd64\n\
                        RUN --mount=type=cache,target=/amd true\n\
                        FROM alpine AS base-arm64\n\
                        RUN --mount=type=cache,target=/arm true\n\
                        FROM base-$TARGETARCH\n";

/// `--platform` picks the stages a `FROM` with `$TARGETARCH` names; several platforms
/// record the mounts of each; without it the platform is linux/amd64.
#[test]
fn platform_selects_stages() {
    let env = Env::new();
    let ids = |run: &str, extra: &[&str]| mount_ids(&ok(&mut record(&env, run, PER_ARCH, extra)));
    assert_eq!(ids("1", &[]), ["/amd"]);
    assert_eq!(ids("2", &["--platform", "linux/arm64"]), ["/arm"]);
    assert_eq!(
        ids("3", &["--platform", "linux/amd64,linux/arm64/v8"]),
        ["/amd", "/arm"]
    );
    assert_eq!(ids("4", &["--build-arg", "TARGETARCH=arm64"]), ["/arm"]);
}

/// A `--platform` that is not a platform is refused in one line naming it.
#[test]
fn bad_platform_is_refused() {
    let env = Env::new();
    assert_snapshot!(output(
        &env,
        &mut record(&env, "1", PER_ARCH, &["--platform", "linux/$ARCH"])
    ));
}

/// A target the file does not have is recorded, not refused: a warning names it and the run
/// records the mounts of every stage it could be.
#[test]
fn unknown_target_is_recorded_over_every_stage() {
    let env = Env::new();
    assert_snapshot!(output(
        &env,
        &mut record(&env, "1", PER_ARCH, &["--target", "release"])
    ));
}

/// `wrap -- docker build ctx` with a `docker` that builds nothing, for run `run` of pipeline
/// `p` on builder `ci-7`; `dockerfile` is written as bytes to `ctx/Dockerfile`.
fn wrap_fake_build(env: &Env, run: &str, dockerfile: &[u8]) -> std::process::Command {
    use std::os::unix::fs::PermissionsExt;

    let docker = env.write("bin/docker", "#!/bin/sh\nexit 0\n");
    std::fs::set_permissions(&docker, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = env.write("ctx/Dockerfile", "");
    std::fs::write(path, dockerfile).unwrap();
    let mut cmd = env.cmd();
    cmd.args(["wrap", "--pipeline", "p", "--run", run, "--builder", "ci-7"])
        .arg("--")
        .arg(&docker)
        .args(["build", "-t", "app", "ctx"]);
    cmd
}

/// The run line `export` writes for run `p/<run>`.
fn exported_run(env: &Env, run: &str) -> serde_json::Value {
    ok(env.cmd().arg("export"))
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|l| l["type"] == "run" && l["run"] == run)
        .unwrap_or_else(|| panic!("run {run} not exported"))
}

/// A Dockerfile with a byte that is not UTF-8 (a Latin-1 comment) is read as BuildKit reads
/// it: the run is recorded with its cache mounts, with a warning naming the file.
#[test]
fn wrap_records_a_build_whose_dockerfile_is_not_utf8() {
    let env = Env::new();
    let text = b"FROM scratch\n# caf\xe9\nRUN --mount=type=cache,target=/root/.cache/pip true\n";
    let out = wrap_fake_build(&env, "1", text).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: `ctx/Dockerfile` is not valid UTF-8"),
        "{stderr}"
    );
    assert!(!stderr.contains("not be recorded"), "{stderr}");
    let run = exported_run(&env, "1");
    assert_eq!(run["mounts"][0]["id"], "/root/.cache/pip", "{run}");
    assert!(run.get("truncated").is_none(), "{run}");
}

/// A Dockerfile that takes more than its work to read leaves the build recorded with what the
/// command line says, flagged truncated, with a warning; `record` refuses it (exit 2).
#[test]
fn wrap_records_a_build_whose_dockerfile_cannot_be_read_in_full() {
    let env = Env::new();
    let mut text = "FROM scratch\nARG A=x\n".to_owned();
    for _ in 0..40 {
        text.push_str("ARG A=${A}${A}\n");
    }
    text.push_str("RUN --mount=type=cache,target=/$A true\n");
    let out = wrap_fake_build(&env, "1", text.as_bytes())
        .args(["--cache-to", "type=local,dest=/tmp/cw-cache"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "warning: the Dockerfile's base images and cache mounts are not recorded, and the \
             run is flagged truncated: `ctx/Dockerfile` line "
        ),
        "{stderr}"
    );
    let run = exported_run(&env, "1");
    assert_eq!(run["truncated"], true, "{run}");
    assert_eq!(run["exported"][0]["key"], "/tmp/cw-cache", "{run}");

    let out = record(&env, "2", &text, &[]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("steps to read"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
