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
