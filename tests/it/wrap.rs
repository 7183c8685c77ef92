//! `wrap` around real builds and pushes on a private dockerd and a loopback registry.

use std::path::Path;
use std::process::{Command, Output};

use crate::build::ConfigBuilder;
use crate::common::{Env, dockerd_env, ok};
use crate::harness::forward::{Forwarder, Listen, Mode};
use crate::harness::{self, Dockerd, Engine, Registry, RegistryOpts};
use crate::on_both_engines;

/// A CI job's view: `cachewarden wrap` aimed at the test daemon, with a job identity.
fn wrap(env: &Env, dockerd: &Dockerd, pipeline: &str, run: &str, command: &[&str]) -> Command {
    wrap_client(
        env,
        dockerd,
        pipeline,
        run,
        Path::new(harness::DOCKER),
        command,
    )
}

/// [`wrap`] with another program named `docker` as the client.
fn wrap_client(
    env: &Env,
    dockerd: &Dockerd,
    pipeline: &str,
    run: &str,
    client: &Path,
    command: &[&str],
) -> Command {
    let mut cmd = env.cmd();
    cmd.env("DOCKER_HOST", dockerd.host())
        .env("DOCKER_CONFIG", dockerd.config_dir())
        .env("DOCKER_BUILDKIT", "1")
        .env("BUILDKIT_PROGRESS", "plain")
        .args(["wrap", "--pipeline", pipeline, "--run", run, "--"])
        .arg(client)
        .args(command);
    cmd
}

/// A loopback registry, a private dockerd of `engine`, an environment, and `REGISTRY/base:1` pushed to the
/// registry; `None` when the services are not installed here.
fn site(engine: Engine) -> Option<(Registry, Dockerd, Env, String)> {
    if !harness::require_engine(engine) || !harness::require_registry() {
        return None;
    }
    let registry = Registry::start(RegistryOpts::default());
    let dockerd = Dockerd::start_engine(engine);
    let base = format!("{}/base:1", registry.host());
    dockerd.import_busybox(&base);
    dockerd.run(["push", &base]);
    Some((registry, dockerd, Env::new(), base))
}

/// Writes `dir/Dockerfile` in the environment; returns the build context.
fn context(env: &Env, dir: &str, dockerfile: &str) -> String {
    let file = env.write(&format!("{dir}/Dockerfile"), dockerfile);
    file.parent().unwrap().to_str().unwrap().to_owned()
}

/// Runs a wrapped command, which must succeed; returns its output.
fn succeed(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub(crate) fn run_line(export: &str, pipeline: &str, run: &str) -> serde_json::Value {
    export
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["type"] == "run" && v["pipeline"] == pipeline && v["run"] == run)
        .unwrap_or_else(|| panic!("no run {pipeline}/{run} in\n{export}"))
}

/// The run of `to` that a trace from pipeline `from` reaches; panics when it reaches none.
pub(crate) fn traced(env: &Env, from: &str, to: &str) -> serde_json::Value {
    let trace: serde_json::Value = serde_json::from_str(&ok(env.cmd().args([
        "trace",
        "--pipeline",
        from,
        "--format",
        "json",
    ])))
    .unwrap();
    trace["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["pipeline"] == to)
        .cloned()
        .unwrap_or_else(|| panic!("the importer is traced: {trace}"))
}

/// Build, push and re-import with inline cache: every digest, mount and builder record lands
/// in the store, and a failed build is recorded as failed with the build's own exit code.
fn wrap_records_builds_pushes_and_failures(engine: Engine) {
    let Some((registry, dockerd, env, base)) = site(engine) else {
        return;
    };
    let reg = registry.host();
    let ctx = context(
        &env,
        "app",
        &format!(
            "FROM {base}\nRUN --mount=type=cache,target=/root/.cache/pip \\\n    echo dep > /root/.cache/pip/dep && cp /root/.cache/pip/dep /dep\n"
        ),
    );
    let cache = format!("{reg}/app:cache");

    succeed(&mut wrap(
        &env,
        &dockerd,
        "app",
        "1",
        &[
            "build",
            "--network=none",
            "--build-arg",
            "BUILDKIT_INLINE_CACHE=1",
            "-t",
            &cache,
            &ctx,
        ],
    ));
    let out = succeed(&mut wrap(&env, &dockerd, "app", "1", &["push", &cache]));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("digest: sha256:"),
        "push output is passed through"
    );

    let pushed = registry.manifest_digest("app", "cache");
    let base_digest = dockerd.run([
        "image",
        "inspect",
        "--format",
        "{{index .RepoDigests 0}}",
        &base,
    ]);
    let base_digest = base_digest.trim().split('@').nth(1).unwrap().to_owned();

    let export = ok(env.cmd().arg("export"));
    let first = run_line(&export, "app", "1");
    assert_eq!(first["status"], "succeeded");
    assert!(
        first["builder"].as_str().unwrap().starts_with("docker@"),
        "{first}"
    );
    let produced = first["produced"].to_string();
    let exported = first["exported"].to_string();
    assert!(
        produced.contains(&format!("{reg}/app:cache@{pushed}")),
        "{first}"
    );
    assert!(
        exported.contains(&format!("{reg}/app:cache@{pushed}")),
        "inline cache is an export: {first}"
    );
    assert!(
        first["base_images"]
            .to_string()
            .contains(&format!("{reg}/base:1@{base_digest}")),
        "{first}"
    );
    assert_eq!(first["mounts"][0]["id"], "/root/.cache/pip");
    let created = first["records"]["created"].as_array().unwrap();
    assert!(
        created
            .iter()
            .any(|r| r["type"] == "regular" && r["description"].as_str().unwrap().contains("/dep")),
        "the RUN layer is a created record: {first}"
    );

    // A second job imports the cache by tag: the import is pinned to the pushed digest and
    // the cached step shows up as a reused record.
    succeed(&mut wrap(
        &env,
        &dockerd,
        "victim",
        "9",
        &[
            "build",
            "--network=none",
            "--cache-from",
            &cache,
            "-t",
            "victim:1",
            &ctx,
        ],
    ));
    let export = ok(env.cmd().arg("export"));
    let victim = run_line(&export, "victim", "9");
    assert!(
        victim["imported"]
            .to_string()
            .contains(&format!("{reg}/app:cache@{pushed}")),
        "{victim}"
    );
    let reused = victim["records"]["reused"].as_array().unwrap();
    assert!(
        reused
            .iter()
            .any(|r| r["description"].as_str().unwrap_or("").contains("/dep")),
        "{victim}"
    );

    // A failing build: wrap exits with the build's code and records the failure.
    let bad = env.write("bad/Dockerfile", &format!("FROM {base}\nRUN exit 3\n"));
    let out = wrap(
        &env,
        &dockerd,
        "app",
        "2",
        &[
            "build",
            "--network=none",
            bad.parent().unwrap().to_str().unwrap(),
        ],
    )
    .output()
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let export = ok(env.cmd().arg("export"));
    assert_eq!(run_line(&export, "app", "2")["status"], "failed");
}

on_both_engines!(wrap_records_builds_pushes_and_failures);

/// `docker buildx build --push` on the docker driver: the pushed tags take the pushed manifest's
/// digest (20.10's metadata file names no image), and so does the inline cache inside it. A build that imports that cache is traced from the pushing pipeline.
fn wrap_records_a_buildx_push_with_inline_cache(engine: Engine) {
    if !harness::require_buildx() || !harness::require_engine(engine) {
        return;
    }
    let Some((registry, dockerd, env, base)) = site(engine) else {
        return;
    };
    let reg = registry.host();
    let ctx = context(
        &env,
        "app",
        &format!(
            "FROM {base}\nRUN --mount=type=cache,id=bx,target=/c echo bx >> /c/log && cp /c/log /log\n"
        ),
    );
    let image = format!("{reg}/app:bx");
    let out = succeed(&mut wrap(
        &env,
        &dockerd,
        "app",
        "1",
        &[
            "buildx",
            "build",
            "--network=none",
            "--build-arg",
            "BUILDKIT_INLINE_CACHE=1",
            "-t",
            &image,
            "--push",
            &ctx,
        ],
    ));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("warning:"), "{stderr}");
    // An image manifest from 20.10, an index (image and provenance) from 26.
    let pushed = registry.any_manifest_digest("app", "bx");
    let pinned = serde_json::json!(format!("{image}@{pushed}"));

    let export = ok(env.cmd().arg("export"));
    let run = run_line(&export, "app", "1");
    assert!(
        run["builder"].as_str().unwrap().starts_with("docker@"),
        "{run}"
    );
    let produced = run["produced"].as_array().unwrap();
    assert!(
        produced.contains(&pinned),
        "the pushed tag is pinned: {run}"
    );
    assert!(
        produced.iter().all(|p| p.as_str() != Some(image.as_str())),
        "and not also recorded by tag: {run}"
    );
    assert_eq!(
        run["exported"],
        serde_json::json!([pinned]),
        "the inline cache is the pushed image: {run}"
    );
    assert!(
        run["base_images"]
            .to_string()
            .contains(&format!("{base}@sha256:")),
        "{run}"
    );
    assert_eq!(run["mounts"][0]["id"], "bx", "{run}");
    assert!(
        run["records"]["created"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["type"] == "regular"
                && r["description"].as_str().unwrap().contains("echo bx")),
        "the RUN layer is a created record: {run}"
    );

    // Another pipeline imports the cache by tag with buildx: the import is pinned to the
    // pushed digest, and a trace from the pushing pipeline reaches it through that digest.
    ok(&mut wrap(
        &env,
        &dockerd,
        "victim",
        "1",
        &[
            "buildx",
            "build",
            "--network=none",
            "--cache-from",
            &image,
            "-t",
            "victim:1",
            "--load",
            &ctx,
        ],
    ));
    let export = ok(env.cmd().arg("export"));
    let victim = run_line(&export, "victim", "1");
    assert!(
        victim["imported"].as_array().unwrap().contains(&pinned),
        "{victim}"
    );
    let produced = victim["produced"].to_string();
    match engine {
        Engine::Docker20 => assert!(
            !produced.contains("victim:1@"),
            "a loaded image's id is not a registry digest: {victim}"
        ),
        // The containerd image store keeps an image by its manifest digest, which is what a
        // push of the tag publishes: the tag is pinned to it.
        Engine::Docker26 => {
            let local = victim["produced"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["backend"] == "local-image")
                .and_then(|p| p["digest"].as_str())
                .unwrap_or_else(|| panic!("no local image: {victim}"))
                .to_owned();
            assert!(produced.contains(&format!("victim:1@{local}")), "{victim}");
        }
    }
    let reached = traced(&env, "app", "victim");
    assert_eq!(reached["via"]["kind"], "imported-digest", "{reached}");
}

on_both_engines!(wrap_records_a_buildx_push_with_inline_cache);

/// buildx's `default` builder is the docker driver of the current context: a build on it,
/// named by `--builder default` or by `BUILDX_BUILDER=default`, runs on the same builder as a
/// plain `docker build`, and its records are captured.
fn the_default_buildx_builder_is_the_docker_engine(engine: Engine) {
    if !harness::require_buildx() || !harness::require_engine(engine) {
        return;
    }
    let Some((dockerd, env)) = dockerd_env(engine) else {
        return;
    };
    let ctx = context(&env, "c", "FROM base:1\nRUN echo default > /default\n");
    let builds: [(&str, &[&str], Option<&str>); 3] = [
        ("plain", &["build", "--network=none"], None),
        (
            "flag",
            &[
                "buildx",
                "build",
                "--builder",
                "default",
                "--network=none",
                "--load",
            ],
            None,
        ),
        (
            "env",
            &["buildx", "build", "--network=none", "--load"],
            Some("default"),
        ),
    ];
    for (run, args, buildx_builder) in builds {
        let mut args = args.to_vec();
        args.push(&ctx);
        let mut cmd = wrap(&env, &dockerd, "p", run, &args);
        if let Some(name) = buildx_builder {
            cmd.env("BUILDX_BUILDER", name);
        }
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(!stderr.contains("warning:"), "{run}: {stderr}");
    }
    let export = ok(env.cmd().arg("export"));
    let plain = run_line(&export, "p", "plain");
    for run in ["flag", "env"] {
        let line = run_line(&export, "p", run);
        assert_eq!(line["builder"], plain["builder"], "{line}");
        assert!(line["records"].is_object(), "{line}");
    }
}

on_both_engines!(the_default_buildx_builder_is_the_docker_engine);

/// A `--cache-to type=registry` export is pinned after the build: to the metadata file's
/// `cache.manifest` when buildx wrote one, even when the tag has moved since, else to what the
/// tag points at right after the build.
///
/// Docker 20.10's BuildKit cannot export registry cache, so the client stands in for a buildx
/// builder that can: it runs the build on the test daemon with real buildx, then pushes the
/// image with inline cache to the cache ref in the real registry as the export, and, in the
/// metadata mode, names that push in `cache.manifest` and lets another push move the tag.
/// 20.10 only for that reason: Docker 26 exports for real (`docker26`, `scenarios`).
#[test]
fn registry_cache_exports_are_pinned_after_the_build() {
    if !harness::require_buildx() {
        return;
    }
    let Some((registry, dockerd, env, base)) = site(Engine::Docker20) else {
        return;
    };
    let reg = registry.host();
    let cache = format!("{reg}/app:cache");
    let ctx = context(&env, "app", &format!("FROM {base}\nRUN echo app > /app\n"));
    let exported = env.path().join("exported");
    let client = env.write(
        "bin/docker",
        &format!(
            r#"#!/bin/bash
set -e
args=(); ref=; meta=
while [ $# -gt 0 ]; do
    case "$1" in
        --cache-to) ref=${{2#*ref=}}; shift 2 ;;
        --metadata-file=*) meta=${{1#--metadata-file=}}; args+=("$1"); shift ;;
        *) args+=("$1"); shift ;;
    esac
done
ctx=${{args[-1]}}
{docker} "${{args[@]}}"
{docker} buildx build --network=none --build-arg BUILDKIT_INLINE_CACHE=1 -t "$ref" --push \
    --metadata-file "{exported}.json" "$ctx" >/dev/null 2>&1
digest=$(sed -n 's/.*"containerimage.digest": "\(sha256:[0-9a-f]*\)".*/\1/p' "{exported}.json")
echo "$digest" >"{exported}"
if [ "$MODE" = metadata ]; then
    manifest='{{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"'"$digest"'\",\"size\":1}}'
    {{ echo "{{"; printf '  "cache.manifest": "%s",\n' "$manifest"; tail -n +2 "$meta"; }} >"$meta.new"
    mv "$meta.new" "$meta"
    {docker} tag {base} "$ref"
    {docker} push "$ref" >/dev/null
fi
"#,
            docker = harness::DOCKER,
            exported = exported.display(),
        ),
    );
    std::fs::set_permissions(&client, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let head = || registry.manifest_digest("app", "cache");
    let build = |run: &str, mode: &str| {
        let cache_to = format!("type=registry,ref={cache}");
        let out = wrap_client(
            &env,
            &dockerd,
            "app",
            run,
            &client,
            &[
                "buildx",
                "build",
                "--network=none",
                "--cache-to",
                &cache_to,
                "-t",
                "app:1",
                "--load",
                &ctx,
            ],
        )
        .env("MODE", mode)
        .output()
        .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        assert!(!stderr.contains("warning:"), "{stderr}");
        let pushed = std::fs::read_to_string(&exported)
            .unwrap()
            .trim()
            .to_owned();
        assert!(pushed.starts_with("sha256:"), "{pushed}");
        let run = run_line(&ok(env.cmd().arg("export")), "app", run);
        (pushed, run)
    };

    let (pushed, run) = build("1", "metadata");
    assert_ne!(head(), pushed, "the tag moved after the export");
    assert_eq!(
        run["exported"],
        serde_json::json!([format!("{cache}@{pushed}")]),
        "{run}"
    );

    let (pushed, run) = build("2", "resolve");
    assert_eq!(head(), pushed);
    assert_eq!(
        run["exported"],
        serde_json::json!([format!("{cache}@{pushed}")]),
        "{run}"
    );
}

/// Listing the builder's records sizes the cache mounts used since the last listing, and
/// BuildKit counts that as a use. A build that uses no cache mount, wrapped after an unwrapped
/// build that used one, must not be taken to have reused that mount's record.
fn a_listing_after_an_unwrapped_build_is_not_a_reuse(engine: Engine) {
    let Some((dockerd, env)) = dockerd_env(engine) else {
        return;
    };
    let mounting = |step: &str| {
        format!(
            "FROM base:1\nRUN --mount=type=cache,id=shared,target=/c echo {step} >> /c/log && cp /c/log /log\n"
        )
    };
    let first = env.write("first/Dockerfile", &mounting("first"));
    ok(&mut wrap(
        &env,
        &dockerd,
        "writer",
        "1",
        &[
            "build",
            "--network=none",
            first.parent().unwrap().to_str().unwrap(),
        ],
    ));
    let export = ok(env.cmd().arg("export"));
    let created = run_line(&export, "writer", "1")["records"]["created"].clone();
    let mount_record = created
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == "exec.cachemount")
        .unwrap_or_else(|| panic!("no cache-mount record created: {created}"))["id"]
        .clone();

    // An unwrapped build uses the mount; nothing lists the records after it.
    let unwrapped = env.write("unwrapped/Dockerfile", &mounting("unwrapped"));
    dockerd.build(unwrapped.parent().unwrap(), "unwrapped:1", &[]);

    let plain = env.write("plain/Dockerfile", "FROM base:1\nRUN echo plain > /plain\n");
    ok(&mut wrap(
        &env,
        &dockerd,
        "plain",
        "1",
        &[
            "build",
            "--network=none",
            plain.parent().unwrap().to_str().unwrap(),
        ],
    ));
    let export = ok(env.cmd().arg("export"));
    let plain = run_line(&export, "plain", "1");
    let reused = plain["records"]["reused"].as_array().unwrap();
    assert!(
        reused
            .iter()
            .all(|r| r["id"] != mount_record && r["type"] != "exec.cachemount"),
        "the plain build reused no cache mount: {plain}"
    );
    assert!(
        plain["records"]["created"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["description"]
                .as_str()
                .unwrap_or("")
                .contains("echo plain")),
        "its own step is a created record: {plain}"
    );
}

on_both_engines!(a_listing_after_an_unwrapped_build_is_not_a_reuse);

/// A store that cannot be written never fails the build: wrap warns and passes the status on.
/// (Containment fails open here; failing closed, the default, it refuses to build from an
/// input it cannot check: see `store_access`.)
fn recording_trouble_never_fails_the_build(engine: Engine) {
    let Some((dockerd, env)) = dockerd_env(engine) else {
        return;
    };
    let ctx = env.write("c/Dockerfile", "FROM base:1\nRUN echo ok\n");
    let config = ConfigBuilder::new().on_unavailable("fail-open").write(&env);
    std::fs::create_dir_all(env.db()).unwrap();
    let out = wrap(
        &env,
        &dockerd,
        "p",
        "1",
        &[
            "build",
            "--network=none",
            ctx.parent().unwrap().to_str().unwrap(),
        ],
    )
    .env("CACHEWARDEN_CONFIG", &config)
    .output()
    .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning: the build was not recorded"),
        "{stderr}"
    );
}

on_both_engines!(recording_trouble_never_fails_the_build);

/// A build whose `--cache-from` digest is tainted in an open incident is refused before it
/// runs (exit 5, naming the incident and digest); `--allow-tainted` builds and is recorded.
fn wrap_refuses_tainted_inputs_while_an_incident_is_open(engine: Engine) {
    let Some((registry, dockerd, env, base)) = site(engine) else {
        return;
    };
    let reg = registry.host();
    let ctx = context(
        &env,
        "app",
        &format!("FROM {base}\nRUN echo built > /built\n"),
    );
    let cache = format!("{reg}/app:cache");
    let build = |pipeline: &str, run: &str, extra: &[&str]| {
        let mut args = vec![
            "build",
            "--network=none",
            "--build-arg",
            "BUILDKIT_INLINE_CACHE=1",
            "-t",
            &cache,
        ];
        args.extend_from_slice(extra);
        args.push(&ctx);
        wrap(&env, &dockerd, pipeline, run, &args).output().unwrap()
    };
    let out = build("evil", "1", &[]);
    assert!(out.status.success());
    assert!(
        wrap(&env, &dockerd, "evil", "1", &["push", &cache])
            .output()
            .unwrap()
            .status
            .success()
    );
    ok(env.cmd().args(["incident", "open", "--pipeline", "evil"]));

    let out = build("victim", "1", &["--cache-from", &cache]);
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("tainted in open incident 1") && stderr.contains("sha256:"),
        "{stderr}"
    );
    assert!(
        !ok(env.cmd().arg("export")).contains("\"pipeline\":\"victim\""),
        "the refused build did not run"
    );

    let out = env
        .cmd()
        .env("DOCKER_HOST", dockerd.host())
        .env("DOCKER_CONFIG", dockerd.config_dir())
        .env("DOCKER_BUILDKIT", "1")
        .args([
            "wrap",
            "--pipeline",
            "victim",
            "--run",
            "2",
            "--allow-tainted",
            "--",
        ])
        .arg(harness::DOCKER)
        .args([
            "build",
            "--network=none",
            "--cache-from",
            &cache,
            "-t",
            "victim:2",
            &ctx,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = ok(env
        .cmd()
        .args(["incident", "report", "1", "--format", "json"]));
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert_eq!(report["overrides"][0]["pipeline"], "victim", "{report:#}");
    assert_eq!(report["overrides"][0]["run"], "2");
}

on_both_engines!(wrap_refuses_tainted_inputs_while_an_incident_is_open);

/// A `--cache-from` tag that another push moves while the build runs: wrap warns, naming the
/// digest before and after, and records the digest the build resolved before it started.
fn a_cache_tag_moved_during_the_build_is_warned_about(engine: Engine) {
    let Some((registry, dockerd, env, base)) = site(engine) else {
        return;
    };
    let reg = registry.host();
    let cache = format!("{reg}/app:cache");
    let app = env.write(
        "app/Dockerfile",
        &format!("FROM {base}\nRUN echo app > /app\n"),
    );
    let other = env.write(
        "other/Dockerfile",
        &format!("FROM {base}\nRUN echo other > /other\n"),
    );
    dockerd.build(
        app.parent().unwrap(),
        &cache,
        &["--build-arg", "BUILDKIT_INLINE_CACHE=1"],
    );
    dockerd.run(["push", &cache]);
    dockerd.build(other.parent().unwrap(), "other:1", &[]);
    let head = |tag: &str| registry.manifest_digest("app", tag);
    let before = head("cache");

    // The client the job runs: the real one, and right after the build someone else pushes
    // another image to the cache tag.
    let client = env.write(
        "bin/docker",
        &format!(
            "#!/bin/sh\n{docker} \"$@\" || exit $?\n{docker} tag other:1 {cache} >/dev/null\n{docker} push {cache} >/dev/null\n",
            docker = harness::DOCKER,
        ),
    );
    std::fs::set_permissions(&client, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let ctx = app.parent().unwrap().to_str().unwrap();
    let build = [
        "build",
        "--network=none",
        "--cache-from",
        &cache,
        "-t",
        "victim:1",
        ctx,
    ];
    let out = wrap_client(&env, &dockerd, "victim", "1", &client, &build)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let after = head("cache");
    assert_ne!(before, after, "the tag moved");
    assert!(
        stderr.contains(&format!(
            "`{cache}` moved during the build: {before} before, {after} after; recorded {before}"
        )),
        "{stderr}"
    );
    let victim = run_line(&ok(env.cmd().arg("export")), "victim", "1");
    let imported = victim["imported"].to_string();
    assert!(imported.contains(&before), "{victim}");
    assert!(!imported.contains(&after), "{victim}");
}

on_both_engines!(a_cache_tag_moved_during_the_build_is_warned_about);

/// A connection to the builder that drops during the build (a daemon restart, a network blip)
/// costs no evidence: wrap reads the records after the build on a new connection, even when
/// the first attempt to connect again fails.
fn builder_records_are_read_on_a_new_connection_when_the_first_dropped(engine: Engine) {
    let Some((_registry, dockerd, env, base)) = site(engine) else {
        return;
    };
    // wrap reaches the builder through a forwarder that can cut its connections; the build
    // itself talks to the daemon directly.
    let forwarder = Forwarder::start(&dockerd.socket(), Listen::Tcp, Mode::Raw);
    let app = env.write(
        "app/Dockerfile",
        &format!("FROM {base}\nRUN echo app > /app\n"),
    );
    let (built, resume) = (env.path().join("built"), env.path().join("resume"));
    let client = env.write(
        "bin/docker",
        &format!(
            "#!/bin/sh\nDOCKER_HOST={direct} {docker} \"$@\" || exit $?\ntouch {built}\nwhile [ ! -f {resume} ]; do sleep 0.05; done\n",
            direct = dockerd.host(),
            docker = harness::DOCKER,
            built = built.display(),
            resume = resume.display(),
        ),
    );
    std::fs::set_permissions(&client, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let ctx = app.parent().unwrap().to_str().unwrap();
    let mut wrap = wrap_client(
        &env,
        &dockerd,
        "app",
        "1",
        &client,
        &["build", "--network=none", "-t", "app:1", ctx],
    );
    let child = wrap
        .env("DOCKER_HOST", forwarder.endpoint())
        .env("CACHEWARDEN_BUILDER", "fwd")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !built.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the build did not finish"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let before_cut = forwarder.accepted();
    forwarder.refuse_next(1);
    forwarder.cut();
    std::fs::write(&resume, "").unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("not captured"), "{stderr}");
    assert!(forwarder.accepted() > before_cut, "wrap connected again");
    let run = run_line(&ok(env.cmd().arg("export")), "app", "1");
    let created = run["records"]["created"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        created.iter().any(|r| r["description"]
            .as_str()
            .is_some_and(|d| d.contains("echo app"))),
        "{run}"
    );
}

on_both_engines!(builder_records_are_read_on_a_new_connection_when_the_first_dropped);
