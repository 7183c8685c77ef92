//! Naming the builder a build ran on.
//!
//! The name comes from `--builder`, then `CACHEWARDEN_BUILDER`, then is derived from the
//! endpoint the docker client would use, host included, so that two machines never merge into
//! one builder called `default`:
//!
//! | source | name |
//! | --- | --- |
//! | `BUILDX_BUILDER=NAME` | `buildx:NAME@HOSTNAME` (driver `docker-container`); `default` is the engine below |
//! | `DOCKER_HOST=unix:///path` | `docker@HOSTNAME:/path` |
//! | `DOCKER_HOST=tcp://host:port` (or `ssh://`) | `docker@host:port` |
//! | `DOCKER_CONTEXT=NAME` (or `currentContext` in the docker config) | `context:NAME@HOSTNAME` |
//! | nothing set | `docker@HOSTNAME:/var/run/docker.sock` |

use crate::model::{BuilderInfo, Driver};

/// buildx's builder on the docker driver of the current context: the Docker Engine itself.
pub const DEFAULT_BUILDX_BUILDER: &str = "default";

/// The default Docker Engine socket.
pub const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";

/// Derives the builder from flags and environment. `var` reads environment variables;
/// `hostname` is this machine's name; `current_context` is the docker config's
/// `currentContext`, if any.
pub fn derive(
    flag: Option<&str>,
    var: &dyn Fn(&str) -> Option<String>,
    hostname: &str,
    current_context: Option<&str>,
) -> BuilderInfo {
    let var = |name: &str| var(name).filter(|v| !v.trim().is_empty());
    let endpoint = var("DOCKER_HOST");
    if let Some(name) = flag
        .map(str::to_owned)
        .or_else(|| var("CACHEWARDEN_BUILDER"))
    {
        return BuilderInfo {
            name,
            driver: None,
            endpoint,
        };
    }
    if let Some(buildx) = var("BUILDX_BUILDER").filter(|b| b != DEFAULT_BUILDX_BUILDER) {
        return BuilderInfo {
            name: format!("buildx:{buildx}@{hostname}"),
            driver: Some(Driver::DockerContainer),
            endpoint: None,
        };
    }
    if let Some(host) = &endpoint {
        // The default socket under another path (`/run/docker.sock` where `/var/run` links to
        // `/run`) is the same engine, and the same caches: it keeps the default's name.
        let named = if same_socket(host, DEFAULT_DOCKER_HOST) {
            DEFAULT_DOCKER_HOST
        } else {
            host
        };
        return BuilderInfo {
            name: name_for_endpoint(named, hostname),
            driver: Some(Driver::Docker),
            endpoint: Some(host.clone()),
        };
    }
    let context = var("DOCKER_CONTEXT").or_else(|| current_context.map(str::to_owned));
    if let Some(context) = context.filter(|c| c != "default") {
        return BuilderInfo {
            name: format!("context:{context}@{hostname}"),
            driver: Some(Driver::Docker),
            endpoint: None,
        };
    }
    BuilderInfo {
        name: name_for_endpoint(DEFAULT_DOCKER_HOST, hostname),
        driver: Some(Driver::Docker),
        endpoint: Some(DEFAULT_DOCKER_HOST.to_owned()),
    }
}

/// Whether two `unix://` endpoints name one socket file (through links, or spelled apart).
fn same_socket(a: &str, b: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    let file = |endpoint: &str| {
        let path = endpoint.strip_prefix("unix://")?;
        let meta = std::fs::metadata(path).ok()?;
        Some((meta.dev(), meta.ino()))
    };
    a != b && file(a).is_some() && file(a) == file(b)
}

/// `docker@HOST:/path` for a local socket, `docker@host:port` for a remote engine.
pub fn name_for_endpoint(endpoint: &str, hostname: &str) -> String {
    match endpoint.split_once("://") {
        Some(("unix" | "npipe", path)) => format!("docker@{hostname}:{path}"),
        Some((_, rest)) => format!("docker@{}", rest.trim_end_matches('/')),
        None => format!("docker@{hostname}:{endpoint}"),
    }
}

/// This machine's host name.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// The docker config's `currentContext`.
pub fn current_context() -> Option<String> {
    let dir = std::env::var_os("DOCKER_CONFIG")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".docker"))
        })?;
    let text = std::fs::read_to_string(dir.join("config.json")).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    value.get("currentContext")?.as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn one_socket_under_two_paths_is_one_socket() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("docker.sock");
        std::fs::write(&socket, "").unwrap();
        let link = dir.path().join("run");
        std::os::unix::fs::symlink(dir.path(), &link).unwrap();
        let other = dir.path().join("other.sock");
        std::fs::write(&other, "").unwrap();
        let unix = |path: &std::path::Path| format!("unix://{}", path.display());
        assert!(same_socket(
            &unix(&link.join("docker.sock")),
            &unix(&socket)
        ));
        assert!(same_socket(
            &format!("unix://{}//docker.sock", dir.path().display()),
            &unix(&socket)
        ));
        assert!(!same_socket(&unix(&other), &unix(&socket)));
        assert!(!same_socket(
            &unix(&dir.path().join("absent.sock")),
            &unix(&socket)
        ));
        assert!(!same_socket("tcp://127.0.0.1:2375", &unix(&socket)));
    }

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        move |k| map.get(k).cloned()
    }

    /// Two machines with the default socket never share a builder name.
    #[test]
    fn default_socket_includes_the_host() {
        let a = derive(None, &env(&[]), "runner-a", None);
        let b = derive(None, &env(&[]), "runner-b", None);
        assert_eq!(a.name, "docker@runner-a:/var/run/docker.sock");
        assert_ne!(a.name, b.name);
    }

    /// The flag wins over the environment, which wins over derivation.
    #[test]
    fn flag_then_env_then_endpoint() {
        let vars = env(&[
            ("CACHEWARDEN_BUILDER", "ci-7"),
            ("DOCKER_HOST", "tcp://10.0.0.5:2376"),
        ]);
        assert_eq!(derive(Some("mine"), &vars, "h", None).name, "mine");
        assert_eq!(derive(None, &vars, "h", None).name, "ci-7");
        let vars = env(&[("DOCKER_HOST", "tcp://10.0.0.5:2376")]);
        assert_eq!(derive(None, &vars, "h", None).name, "docker@10.0.0.5:2376");
        let vars = env(&[("BUILDX_BUILDER", "fleet")]);
        assert_eq!(derive(None, &vars, "h", None).name, "buildx:fleet@h");
        // buildx's `default` builder is the engine the client talks to.
        let vars = env(&[
            ("BUILDX_BUILDER", "default"),
            ("DOCKER_HOST", "tcp://10.0.0.5:2376"),
        ]);
        let default = derive(None, &vars, "h", None);
        assert_eq!(default.name, "docker@10.0.0.5:2376");
        assert_eq!(default.driver, Some(Driver::Docker));
        assert_eq!(
            derive(None, &env(&[]), "h", Some("remote")).name,
            "context:remote@h"
        );
    }
}
