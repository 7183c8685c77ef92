//! Docker Engine 26 (embedded BuildKit v0.13, containerd image store) beside 20.10: what its
//! docker driver can do that 20.10's cannot, for real.

use crate::common::{Env, ok};
use crate::harness::{self, Dockerd, Engine, Registry, RegistryOpts};
use crate::wrap::{run_line, traced};

/// `wrap` around `docker buildx build --cache-to type=registry,mode=max` on Docker 26 records
/// the export by the digest BuildKit returns, and a build that imports it with `--cache-from
/// type=registry` is reached by a trace from the exporter.
#[test]
fn registry_cache_export_is_recorded_and_traced_to_its_importer() {
    if !harness::require_docker26() || !harness::require_registry() {
        return;
    }
    let registry = Registry::start(RegistryOpts::default());
    let dockerd = Dockerd::start_engine(Engine::Docker26);
    let env = Env::new();
    let reg = registry.host();
    let base = format!("{reg}/base:1");
    dockerd.import_busybox(&base);
    dockerd.run(["push", &base]);
    let ctx = env.write(
        "app/Dockerfile",
        &format!("FROM {base}\nRUN --mount=type=cache,id=d26,target=/c echo d26 >> /c/log && cp /c/log /log\n"),
    );
    let ctx = ctx.parent().unwrap().to_str().unwrap().to_owned();
    let cache = format!("{reg}/app:cache");
    let wrap = |pipeline: &str, args: &[&str]| {
        let mut cmd = env.cmd();
        cmd.env("DOCKER_HOST", dockerd.host())
            .env("DOCKER_CONFIG", dockerd.config_dir())
            .env("DOCKER_BUILDKIT", "1")
            .env("BUILDKIT_PROGRESS", "plain")
            .args(["wrap", "--pipeline", pipeline, "--run", "1", "--"])
            .arg(harness::DOCKER)
            .args(["buildx", "build", "--network=none"])
            .args(args)
            .arg(&ctx);
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}\n{}", dockerd_log(&dockerd));
        stderr
    };

    let to = format!("type=registry,ref={cache},mode=max");
    let built = wrap("app", &["--cache-to", &to, "-t", "app:1"]);
    let exported = registry.any_manifest_digest("app", "cache");
    let said = format!("writing cache manifest {exported}");
    assert!(built.contains(&said), "BuildKit wrote {exported}:\n{built}");
    let export = ok(env.cmd().arg("export"));
    let app = run_line(&export, "app", "1");
    assert_eq!(
        app["exported"],
        serde_json::json!([format!("{cache}@{exported}")]),
        "the export is recorded by the digest BuildKit returned: {app}"
    );
    assert_eq!(app["mounts"][0]["id"], "d26", "{app}");

    let from = format!("type=registry,ref={cache}");
    wrap("victim", &["--cache-from", &from, "-t", "victim:1"]);
    let export = ok(env.cmd().arg("export"));
    let victim = run_line(&export, "victim", "1");
    assert_eq!(
        victim["imported"],
        serde_json::json!([format!("{cache}@{exported}")]),
        "{victim}"
    );
    let reached = traced(&env, "app", "victim");
    assert_eq!(reached["via"]["kind"], "imported-digest", "{reached}");
}

fn dockerd_log(dockerd: &Dockerd) -> String {
    std::fs::read_to_string(dockerd.log_path())
        .map(|log| log.lines().rev().take(30).collect::<Vec<_>>().join("\n"))
        .unwrap_or_default()
}
