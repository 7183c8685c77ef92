//! Real services for integration tests: a private Docker Engine and a loopback registry.
//!
//! Each service lives in its own temporary directory and is stopped, unmounted and removed
//! when its handle is dropped, so tests can start as many as they need in parallel.

#![allow(dead_code)]

pub mod cut;
pub mod dockerd;
pub mod forward;
pub mod http;
pub mod postgres;
pub mod registry;

pub use dockerd::{Dockerd, Engine};
pub use postgres::{PgBouncer, PgCluster, PgDatabase, require_pgbouncer, require_postgres};
pub use registry::{Registry, RegistryOpts};

use std::path::Path;

/// The Docker Engine daemon the harness starts.
pub const DOCKERD: &str = "/usr/sbin/dockerd";
/// The containerd each private dockerd gets (Debian's `containerd`, a `docker.io` dependency).
pub const CONTAINERD: &str = "/usr/bin/containerd";
/// The Docker client with BuildKit support.
pub const DOCKER: &str = "/usr/bin/docker";
/// distribution's registry server.
pub const DOCKER_REGISTRY: &str = "/usr/bin/docker-registry";
/// The static busybox the test images are made of.
pub const BUSYBOX: &str = "/bin/busybox";
/// `htpasswd` (apache2-utils), for the password file of a registry with basic auth.
pub const HTPASSWD: &str = "/usr/bin/htpasswd";
/// skopeo, which the runbooks use to look at a registry.
pub const SKOPEO: &str = "/usr/bin/skopeo";
/// Set to `1` to skip the tests whose services are missing instead of failing them.
pub const SKIP_ENV: &str = "CACHEWARDEN_SKIP_SERVICES";

/// Checks that the Docker Engine tests can run: the binaries exist and we are root.
///
/// Returns `false` when they cannot and `CACHEWARDEN_SKIP_SERVICES=1` allows skipping; the
/// caller then returns early. Without that variable a missing service fails the test.
pub fn require_dockerd() -> bool {
    require(
        "a private Docker Engine",
        &[DOCKERD, CONTAINERD, DOCKER, BUSYBOX],
        true,
    )
}

/// The buildx CLI plugin, where Debian's `docker-buildx` installs it.
pub const BUILDX: &str = "/usr/libexec/docker/cli-plugins/docker-buildx";

/// Checks that `docker buildx build` can run against a private Docker Engine; see
/// [`require_dockerd`].
pub fn require_buildx() -> bool {
    require(
        "buildx and a private Docker Engine",
        &[DOCKERD, CONTAINERD, DOCKER, BUSYBOX, BUILDX],
        true,
    )
}

/// Where `scripts/install-docker26.sh` unpacks Debian 13's Docker Engine 26 and containerd 1.7.
pub const DOCKER26_PREFIX: &str = "/opt/cachewarden/docker26";

/// Docker 26's own client, whose `docker build` runs through buildx.
pub const DOCKER26: &str = "/opt/cachewarden/docker26/usr/bin/docker";

/// Checks that `docker buildx build` can run against a private Docker Engine 26; see
/// [`require_dockerd`].
pub fn require_docker26() -> bool {
    let dockerd = format!("{DOCKER26_PREFIX}/usr/sbin/dockerd");
    let containerd = format!("{DOCKER26_PREFIX}/usr/bin/containerd");
    require(
        "Docker Engine 26 (scripts/install-docker26.sh) and buildx",
        &[&dockerd, &containerd, DOCKER, DOCKER26, BUSYBOX, BUILDX],
        true,
    )
}

/// Checks that a private dockerd of `engine` can run; see [`require_dockerd`].
pub fn require_engine(engine: Engine) -> bool {
    match engine {
        Engine::Docker20 => require_dockerd(),
        Engine::Docker26 => require_docker26(),
    }
}

/// Checks that the registry tests can run, with basic or token auth too; see
/// [`require_dockerd`].
pub fn require_registry() -> bool {
    require(
        "a loopback registry",
        &[DOCKER_REGISTRY, HTPASSWD, token::OPENSSL],
        false,
    )
}

/// Checks that skopeo can run; see [`require_dockerd`].
pub fn require_skopeo() -> bool {
    require("skopeo", &[SKOPEO], false)
}

/// A loopback registry with default options, once [`require_registry`] allows it.
pub fn registry() -> Option<Registry> {
    require_registry().then(|| Registry::start(RegistryOpts::default()))
}

fn require(what: &str, binaries: &[&str], needs_root: bool) -> bool {
    let skip = std::env::var(SKIP_ENV).is_ok_and(|v| v == "1");
    require_or_skip(what, binaries, needs_root, skip)
}

/// What [`require`] decides, with `CACHEWARDEN_SKIP_SERVICES=1` given as `skip`: true when
/// everything is there, false (a line on stderr) when something is missing and `skip` allows
/// it, and a panic naming what is missing otherwise.
fn require_or_skip(what: &str, binaries: &[&str], needs_root: bool, skip: bool) -> bool {
    let mut missing: Vec<String> = binaries
        .iter()
        .filter(|b| !Path::new(b).exists())
        .map(|b| format!("`{b}` is missing"))
        .collect();
    if needs_root && unsafe { libc::geteuid() } != 0 {
        missing.push("the tests are not running as root".to_owned());
    }
    if missing.is_empty() {
        return true;
    }
    let reason = missing.join(", ");
    if skip {
        eprintln!("skipped: this test needs {what}, but {reason} ({SKIP_ENV}=1)");
        return false;
    }
    panic!(
        "this test needs {what}, but {reason}; install them with scripts/install-deps.sh and \
         run the tests as root, or set {SKIP_ENV}=1 to skip the tests that need them"
    );
}

/// Polls `ready` every 50 ms until it returns true or `timeout` passes.
pub fn wait_until(timeout: std::time::Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if ready() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The last `max` bytes of a log file, for failure messages.
pub fn log_tail(path: &Path, max: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let start = text.len().saturating_sub(max);
    String::from_utf8_lossy(&text[start..]).into_owned()
}

#[cfg(test)]
mod selftest;

pub mod oci;
pub mod oidc;
pub mod proxy;
pub mod serve;
pub mod token;
