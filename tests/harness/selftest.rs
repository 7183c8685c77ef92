//! The harness's own tests: each service starts, serves, and leaves nothing behind.

use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;

use super::http::{Request, base64};
use super::{
    Dockerd, Engine, Registry, RegistryOpts, require_engine, require_or_skip, require_registry,
};
use crate::on_both_engines;

#[test]
fn base64_matches_the_standard_alphabet_and_padding() {
    assert_eq!(base64(b""), "");
    assert_eq!(base64(b"f"), "Zg==");
    assert_eq!(base64(b"fo"), "Zm8=");
    assert_eq!(base64(b"foo"), "Zm9v");
    assert_eq!(base64(b"user:p@ss"), "dXNlcjpwQHNz");
}

/// A registry serves what a dockerd pushes, and keeps it across a restart.
fn registry_serves_a_pushed_image_and_survives_a_restart(engine: Engine) {
    if !require_engine(engine) || !require_registry() {
        return;
    }
    let mut registry = Registry::start(RegistryOpts::default());
    assert_eq!(registry.get("/v2/").status, 200);
    let dockerd = Dockerd::start_engine(engine);
    dockerd.import_busybox("bb:latest");
    let reference = format!("{}/cw/bb:1", registry.host());
    dockerd.run(["tag", "bb:latest", &reference]);
    dockerd.run(["push", &reference]);
    assert_eq!(registry.tags("cw/bb"), ["1"]);
    assert!(registry.tags("cw/absent").is_empty());

    let host = registry.host();
    registry.restart();
    assert_eq!(registry.host(), host);
    assert_eq!(
        registry.tags("cw/bb"),
        ["1"],
        "storage is kept across a restart"
    );

    registry.stop();
    assert!(!registry.is_running());
    assert!(
        super::http::tcp(&host, &Request::get("/v2/")).is_err(),
        "stopped means stopped"
    );
}

on_both_engines!(registry_serves_a_pushed_image_and_survives_a_restart);

/// A registry with basic auth refuses anonymous clients and accepts `docker login`.
fn registry_with_auth_refuses_anonymous_clients_and_accepts_docker_login(engine: Engine) {
    if !require_engine(engine) || !require_registry() {
        return;
    }
    let registry = Registry::start(RegistryOpts::with_auth("ci", "s3cret pass"));
    let anonymous = super::http::tcp(&registry.host(), &Request::get("/v2/")).unwrap();
    assert_eq!(anonymous.status, 401);
    assert!(
        anonymous
            .header("www-authenticate")
            .is_some_and(|h| h.starts_with("Basic"))
    );
    assert_eq!(registry.get("/v2/").status, 200);

    let dockerd = Dockerd::start_engine(engine);
    dockerd.import_busybox("bb:latest");
    let mut login = dockerd.docker([
        "login",
        "--username",
        "ci",
        "--password-stdin",
        &registry.host(),
    ]);
    let mut child = login
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"s3cret pass")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let reference = format!("{}/private/bb:v1", registry.host());
    dockerd.run(["tag", "bb:latest", &reference]);
    dockerd.run(["push", &reference]);
    assert_eq!(registry.tags("private/bb"), ["v1"]);
}

on_both_engines!(registry_with_auth_refuses_anonymous_clients_and_accepts_docker_login);

#[test]
fn registry_refuses_deletes_when_they_are_disabled() {
    if !require_registry() {
        return;
    }
    let digest = format!("sha256:{}", "0".repeat(64));
    let path = format!("/v2/cw/x/manifests/{digest}");
    let off = Registry::start(RegistryOpts {
        delete_enabled: false,
        ..RegistryOpts::default()
    });
    assert_eq!(off.request(Request::new("DELETE", &path)).status, 405);
    let on = Registry::start(RegistryOpts::default());
    assert_ne!(on.host(), off.host());
    assert_eq!(on.request(Request::new("DELETE", &path)).status, 404);
}

/// Two dockerds start at once, build and run, and leave no process or mount behind.
fn dockerds_start_in_parallel_and_leave_nothing_behind(engine: Engine) {
    if !require_engine(engine) {
        return;
    }
    let threads: Vec<_> = (0..2)
        .map(|n| {
            std::thread::spawn(move || {
                let dockerd = Dockerd::start_engine(engine);
                let id = dockerd.import_busybox("bb:latest");
                assert!(id.starts_with("sha256:"), "{id}");
                let ctx = tempfile::tempdir().unwrap();
                std::fs::write(
                    ctx.path().join("Dockerfile"),
                    format!("FROM bb:latest\nRUN echo {n} > /n && sha256sum /bin/busybox > /sum\n"),
                )
                .unwrap();
                dockerd.build(ctx.path(), "built:1", &[]);
                let out = dockerd.run(["run", "--rm", "--network=none", "built:1", "cat", "/n"]);
                assert_eq!(out.trim(), n.to_string());
                let dir: PathBuf = dockerd.dir().to_path_buf();
                let exec_root = dockerd.exec_root().to_string_lossy().into_owned();
                drop(dockerd);
                (dir, exec_root)
            })
        })
        .collect();
    for thread in threads {
        let (dir, exec_root) = thread.join().expect("a dockerd thread failed");
        assert!(!dir.exists(), "{} is removed", dir.display());
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
        assert!(
            !mounts.contains(dir.to_str().unwrap()),
            "nothing stays mounted under {}",
            dir.display()
        );
        let leftover = std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
            .any(|c| String::from_utf8_lossy(&c).contains(&exec_root));
        assert!(!leftover, "no process mentions {exec_root}");
    }
}

on_both_engines!(dockerds_start_in_parallel_and_leave_nothing_behind);

/// A private dockerd runs containers on the containerd the harness started for it, never on
/// the system's: the tests run beside a system Docker without sharing its state.
fn dockerd_runs_containers_on_its_own_containerd(engine: Engine) {
    if !require_engine(engine) {
        return;
    }
    let dockerd = Dockerd::start_engine(engine);
    dockerd.import_busybox("bb:latest");
    let id = dockerd.run(["run", "-d", "--network=none", "bb:latest", "sleep", "60"]);
    let id = id.trim();
    let socket = dockerd.containerd_socket().to_string_lossy().into_owned();
    let shim = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .find(|c| c.contains("containerd-shim") && c.contains(id))
        .unwrap_or_else(|| panic!("no shim runs container {id}"));
    assert!(
        shim.contains(&format!("-address {socket} ")),
        "the shim of {id} answers to {socket}: {shim}"
    );
    let dir = dockerd.dir().to_string_lossy().into_owned();
    drop(dockerd);
    let leftover = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .any(|c| String::from_utf8_lossy(&c).contains(&dir));
    assert!(!leftover, "no process mentions {dir}");
}

on_both_engines!(dockerd_runs_containers_on_its_own_containerd);

/// With `CACHEWARDEN_SKIP_SERVICES=1`, a test whose service is missing is skipped.
#[test]
fn a_missing_service_is_skipped_when_allowed() {
    assert!(!require_or_skip(
        "a service",
        &["/nonexistent/cw-service"],
        false,
        true
    ));
    assert!(require_or_skip("a service", &["/bin/sh"], false, false));
}

/// Without `CACHEWARDEN_SKIP_SERVICES=1`, a missing service fails the test, naming it.
#[test]
#[should_panic(expected = "`/nonexistent/cw-service` is missing")]
fn a_missing_service_fails_the_test() {
    require_or_skip("a service", &["/nonexistent/cw-service"], false, false);
}
